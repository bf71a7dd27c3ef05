//! What `Store::copy_from` costs between two file stores: the time and the
//! peak resident memory of a process that copies every task of a store of
//! small finished tasks into a new store, beside those of a process that
//! only pages through the same source, 64 tasks a page, as the copy's scan
//! reads it. Each runs in a child process (this program run again), so
//! that its peak (`VmHWM`) is its own. Stores in the system's temporary
//! directory.
//!
//! `cargo bench --bench copy` (100,000 tasks, the destination `Eventual`);
//! `cargo bench --bench copy -- 10000 immediate` for another count, or the
//! destination `Immediate`.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use serde_json::json;
use taskstore::{Durability, FileStore, ListQuery, NewTask, TaskStore};

/// Selects the child's part: `copy` or `list`.
const PART: &str = "TASKSTORE_COPY_BENCH_PART";

fn main() {
    // `cargo bench` adds `--bench`.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if let Ok(part) = std::env::var(PART) {
        return child(&part, Path::new(&args[0]), &args[1]);
    }
    let tasks: usize = args
        .first()
        .map_or(100_000, |n| n.parse().expect("a count"));
    let durability = args.get(1).map_or("eventual", String::as_str).to_owned();
    let tmp = tempfile::tempdir().unwrap();
    let made = Instant::now();
    let source = FileStore::builder(tmp.path().join("from"))
        .durability(Durability::Eventual)
        .open()
        .unwrap();
    for n in 0..tasks {
        let task = source.create(NewTask::new()).unwrap();
        assert!(source.complete(&task.id, json!(n)).unwrap().is_applied());
    }
    drop(source);
    println!(
        "{tasks} finished tasks made in {:.1} s",
        made.elapsed().as_secs_f64()
    );
    for part in ["list", "copy"] {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([&tmp.path().display().to_string(), &durability])
            .env(PART, part)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
}

/// One part, in a child: `list` pages through the source; `copy` copies
/// it into a new store of `durability`.
fn child(part: &str, dir: &Path, durability: &str) {
    let from = FileStore::open(dir.join("from")).unwrap();
    let opened = peak_kib();
    let start = Instant::now();
    let what = match part {
        "list" => {
            let mut query = ListQuery::all().limit(64);
            let mut listed = 0;
            loop {
                let page = from.list(&query).unwrap();
                listed += page.tasks.len();
                match page.next_cursor {
                    Some(cursor) => query = ListQuery::all().limit(64).after(&cursor),
                    None => break,
                }
            }
            format!("listed {listed} (pages of 64)")
        }
        _ => {
            let durability = match durability {
                "immediate" => Durability::Immediate,
                _ => Durability::Eventual,
            };
            let to = FileStore::builder(dir.join(format!("to-{}", std::process::id())))
                .durability(durability)
                .open()
                .unwrap();
            let copied = to.copy_from(&from).unwrap();
            assert!(copied.is_complete(), "{copied:?}");
            format!("copied {} ({durability:?})", copied.copied.len())
        }
    };
    println!(
        "{what} in {:.1} s; peak RSS {:.1} MiB ({:.1} MiB after the open)",
        start.elapsed().as_secs_f64(),
        peak_kib() as f64 / 1024.0,
        opened as f64 / 1024.0
    );
}

/// This process's peak resident memory so far (`VmHWM`), in KiB.
fn peak_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM in /proc/self/status")
}
