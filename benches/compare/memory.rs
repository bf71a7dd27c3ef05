//! Resident memory of a handle that has listed many active tasks, measured
//! in a child process (the bench binary re-executing itself), so that
//! criterion's own allocations and the parent's fixtures do not count.

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use taskstore::{Durability, ListQuery, TaskStore};

use crate::peers::{Peer, Redb, Sqlite, Taskstore};

/// The environment variable that makes the bench binary a memory child.
pub const RSS_CHILD: &str = "TASKSTORE_COMPARE_RSS";

/// What a memory child saw, in KiB (`VmRSS`, and `VmHWM` for the peaks).
#[derive(Clone, Copy, Debug)]
pub struct Rss {
    pub start: u64,
    pub opened: u64,
    pub after_page: u64,
    /// The peak by the end of the first page (its first pass's passing
    /// vectors included).
    pub page_peak: u64,
    pub after_all: u64,
    pub peak: u64,
}

/// (workload, peer, figures), in the order measured.
pub static MEMORY: Mutex<Vec<(String, &'static str, Rss)>> = Mutex::new(Vec::new());

/// The memory child's name for `taskstore` listing every task, history
/// too (`ListQuery::all()`), not only the running ones.
const HISTORY: &str = "taskstore-history";

/// Measures `peer` ("taskstore", "sqlite" or "redb") over the store in
/// `dir` holding `active` active tasks, in a child, and keeps the figures
/// for the table.
pub fn measure(workload: &str, peer: &'static str, dir: &Path, active: usize) {
    keep(workload, peer, run_child(peer, dir, active));
}

/// Measures `taskstore` over the store in `dir` holding `tasks` tasks in
/// all, listing history too (its first page, then every task), in a child,
/// and keeps the figures for the table.
pub fn measure_history(workload: &str, dir: &Path, tasks: usize) {
    keep(workload, "taskstore", run_child(HISTORY, dir, tasks));
}

/// Keeps `peer`'s figures for `workload` for the table.
fn keep(workload: &str, peer: &'static str, rss: Rss) {
    MEMORY
        .lock()
        .unwrap()
        .push((workload.to_owned(), peer, rss));
}

/// What the memory child `peer` saw over the store in `dir` holding
/// `count` tasks it lists.
fn run_child(peer: &str, dir: &Path, count: usize) -> Rss {
    let out = Command::new(std::env::current_exe().unwrap())
        .env(RSS_CHILD, format!("{peer}|{count}|{}", dir.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "memory child for {peer} failed");
    let line = String::from_utf8(out.stdout).unwrap();
    let n: Vec<u64> = line
        .trim()
        .strip_prefix("rss ")
        .unwrap_or_else(|| panic!("the memory child printed {line:?}"))
        .split(' ')
        .map(|n| n.parse().unwrap())
        .collect();
    Rss {
        start: n[0],
        opened: n[1],
        after_page: n[2],
        page_peak: n[3],
        after_all: n[4],
        peak: n[5],
    }
}

/// `VmRSS` and `VmHWM` of this process, in KiB.
fn status() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .map(|v| v.trim().parse::<u64>().unwrap())
            .unwrap_or_else(|| panic!("no {name} in /proc/self/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The memory child: opens the store, lists a page of 100 and then every
/// active task (for `HISTORY`, every task), each answer dropped at once,
/// and prints `VmRSS` at each step, with `VmHWM` after the page and at the
/// end.
pub fn child(spec: &str) {
    let [peer, count, dir] = spec.splitn(3, '|').collect::<Vec<_>>()[..] else {
        panic!("bad memory spec {spec:?}");
    };
    let (count, dir): (usize, &Path) = (count.parse().unwrap(), Path::new(dir));
    if peer == HISTORY {
        // History first, as it is older.
        return steps(
            || Taskstore::open(dir, Durability::Eventual).0,
            |store| {
                let page = store.list(&ListQuery::all().limit(100)).unwrap();
                assert_eq!(page.tasks.len(), 100.min(count));
                assert!(page.skipped.is_empty(), "{:?}", page.skipped);
            },
            |store| assert_eq!(store.list(&ListQuery::all()).unwrap().tasks.len(), count),
        );
    }
    steps(
        || -> Box<dyn Peer> {
            match peer {
                "taskstore" => Box::new(Taskstore::open(dir, Durability::Eventual)),
                "sqlite" => Box::new(Sqlite::connect(dir, Durability::Eventual)),
                "redb" => Box::new(Redb::open_existing(dir, Durability::Eventual)),
                other => panic!("no memory peer {other:?}"),
            }
        },
        |handle| assert_eq!(handle.page(100, None).tasks.len(), 100.min(count)),
        |handle| assert_eq!(handle.list_active().len(), count),
    );
}

/// Opens a handle, reads a first page, then lists everything, printing
/// `VmRSS` before and after each step, and `VmHWM` after the page and at
/// the end.
fn steps<H>(open: impl FnOnce() -> H, page: impl FnOnce(&H), all: impl FnOnce(&H)) {
    let (start, _) = status();
    let handle = open();
    let (opened, _) = status();
    page(&handle);
    let (after_page, page_peak) = status();
    all(&handle);
    let (after_all, peak) = status();
    println!("rss {start} {opened} {after_page} {page_peak} {after_all} {peak}");
}
