//! The command's memory: listings, stats and dry runs held to a page under
//! `prlimit`, and the peak resident memory a finished task costs them.

use super::*;

/// Finished tasks the tests of the peak a finished task costs make.
const FINISHED: u64 = 20_000;

/// `stats` counts a store's history as it reads it, keeping no finished
/// task: over 20,000 finished tasks with ids of 128 characters, its peak
/// resident memory is under 600 bytes a task above its peak on an empty
/// store (it keeps their names in `done/`, read once, and each one's time
/// to finish). (Its census kept every task, without payloads, in a map by
/// id and then in a list, until it counted them: about 1,700 bytes a
/// task; about 230 now.)
#[test]
fn stats_counts_history_without_keeping_it() {
    if measure_if_child() {
        return;
    }
    let test = "memory::stats_counts_history_without_keeping_it";
    let (_empty_tmp, empty) = store_dir();
    drop(eventual(FileStore::builder(&empty)));
    let (_tmp, dir) = store_dir();
    finished_with_long_ids(&dir, FINISHED);
    let (_, base) = peak_kib(test, &empty, &["stats", "--json"]);
    let (out, peak) = peak_kib(test, &dir, &["stats", "--json"]);
    let stats: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(stats["finished"], json!(FINISHED), "{stats:#}");
    let per_task = peak.saturating_sub(base) * 1024 / FINISHED;
    eprintln!("stats: {per_task} bytes a finished task ({peak} KiB; {base} KiB empty)");
    assert!(
        per_task < 600,
        "stats took {per_task} bytes a finished task at its peak ({peak} KiB; {base} KiB on an \
         empty store)"
    );
}

/// `list` without `--limit` asks the store page after page and keeps no
/// task it has printed: run with its data segment held to 200 MB, it
/// lists a store of 300 MB of tasks. (It asked for one page of every task
/// and kept each it printed: over 300 MB.)
#[test]
fn list_without_a_limit_holds_a_page_not_the_store() {
    require_prlimit();
    let (_tmp, dir) = store_dir();
    let store = eventual(FileStore::builder(&dir));
    let payload = "x".repeat(100 << 10);
    for _ in 0..3_000 {
        store
            .create(NewTask::new().metadata("payload", payload.clone()))
            .unwrap();
    }
    drop(store);
    let out = common::without_store_variables("prlimit")
        .arg("--data=200000000")
        .arg(env!("CARGO_BIN_EXE_taskstore"))
        .args(["list", "--json"])
        .env("TASKSTORE_STORE", &dir)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json_lines(&out).len(), 3_000);
}

/// `stats` and the dry runs of `sweep` and `reap` read every task once and
/// keep none of its payloads: run with its data segment held to 200 MB,
/// each reads a store of 300 MB of tasks (expired, orphaned resumable,
/// finished), and still judges each as the store does. (The census they
/// read kept every task whole, payloads and all: over 300 MB, and the
/// command died for want of memory.)
#[test]
fn stats_and_dry_runs_hold_no_payloads_of_the_store() {
    require_prlimit();
    let (_tmp, dir) = store_dir();
    let store = eventual(an_hour_ago(&dir).instance_id("gone"));
    let payload = "x".repeat(100 << 10);
    for _ in 0..1_000 {
        store
            .create(
                NewTask::new()
                    .ttl(Duration::from_secs(60))
                    .metadata("payload", payload.clone()),
            )
            .unwrap();
    }
    resumable_and_finished(&store, &payload, 1_000);
    drop(store);
    let target = ["--store", dir.to_str().unwrap()];
    let under_limit = |args: &[&str]| in_200_mb(args, &target);
    let stats: Value = serde_json::from_str(&stdout(&under_limit(&["stats", "--json"]))).unwrap();
    assert_eq!(
        (
            &stats["expiredUnswept"],
            &stats["orphans"],
            &stats["finished"]
        ),
        (&json!(1_000), &json!(1_000), &json!(1_000)),
        "{stats:#}"
    );
    let swept = under_limit(&["sweep", "--dry-run", "--json"]);
    assert_eq!(json_lines(&swept).len(), 1_000);
    let reaped = under_limit(&["reap", "--dry-run", "--claim-grace", "2h"]);
    assert!(
        stderr(&reaped).contains("1000 orphan(s); 0 would be reaped, 1000 left for a claim"),
        "{}",
        stderr(&reaped)
    );
}

/// `list` without `--json` prints its table as the pages come, holding at
/// most its first page (which chooses the columns' widths): run with its
/// data segment held to 70 MB, it lists 60,000 finished tasks whose rows
/// (ids of 128 characters, status messages of control characters, which
/// the table escapes) take some 50 MB; it needs 40 to 50 MB for the rest.
/// (It kept every row until the last page: it needed 90 to 110 MB, and
/// died for want of memory.)
#[test]
fn list_as_a_table_holds_a_page_not_the_store() {
    require_prlimit();
    let (_tmp, dir) = store_dir();
    finished_with_long_ids(&dir, 60_000);
    let out = common::without_store_variables("prlimit")
        .arg("--data=70000000")
        .arg(env!("CARGO_BIN_EXE_taskstore"))
        .arg("list")
        .env("TASKSTORE_STORE", &dir)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = stdout(&out);
    let mut lines = table.lines();
    assert!(lines.next().unwrap().starts_with("ID "), "the header first");
    assert_eq!(lines.count(), 60_000);
}

/// `list --json` keeps each finished task's keys from its first page on
/// (`src/file/history.rs`), and the pass that reads them does not hold
/// what it found whole beside the keys whole: over 20,000 finished tasks
/// with ids of 128 characters, its peak resident memory is under 560 bytes
/// a task above its peak on an empty store (about 475). (The pass kept
/// its ids and what it found of each file until every entry was made, and
/// the entries were copied once more to build the ordered map: about 645
/// bytes a task.)
#[test]
fn listing_history_peaks_below_560_bytes_a_finished_task() {
    if measure_if_child() {
        return;
    }
    let test = "memory::listing_history_peaks_below_560_bytes_a_finished_task";
    let (_empty_tmp, empty) = store_dir();
    drop(eventual(FileStore::builder(&empty)));
    let (_tmp, dir) = store_dir();
    finished_with_long_ids(&dir, FINISHED);
    let (_, base) = peak_kib(test, &empty, &["list", "--json"]);
    let (out, peak) = peak_kib(test, &dir, &["list", "--json"]);
    assert_eq!(out.lines().count() as u64, FINISHED);
    let per_task = peak.saturating_sub(base) * 1024 / FINISHED;
    eprintln!("list: {per_task} bytes a finished task ({peak} KiB; {base} KiB empty)");
    assert!(
        per_task < 560,
        "list took {per_task} bytes a finished task at its peak ({peak} KiB; {base} KiB on an \
         empty store)"
    );
}

/// `list --json` beside a writer finishing a task every few milliseconds
/// passes over `done/` again at each page (`done/` changed, and its newest
/// files have not settled), and revises the keys it holds in place: over
/// 20,000 finished tasks with ids of 128 characters, and up to 2,000 the
/// writer adds, its peak resident memory is under 740 bytes a task above
/// its peak on an empty store (about 660). (Each pass built a second copy
/// of the keys beside the first, and what it found of each file it knew
/// held a copy of that file's status and keys: about 820 bytes a task.
/// With the first pass giving back nothing of what it turned into entries
/// until its end, about 840: glibc then keeps room the later passes do not
/// reuse.)
#[test]
fn listing_history_beside_a_writer_peaks_below_740_bytes_a_finished_task() {
    if measure_if_child() {
        return;
    }
    let test = "memory::listing_history_beside_a_writer_peaks_below_740_bytes_a_finished_task";
    let (_empty_tmp, empty) = store_dir();
    drop(eventual(FileStore::builder(&empty)));
    let (_tmp, dir) = store_dir();
    finished_with_long_ids(&dir, FINISHED);
    let (_, base) = peak_kib(test, &empty, &["list", "--json"]);
    let listed = std::sync::atomic::AtomicBool::new(false);
    let (out, peak, written) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let store = eventual(FileStore::builder(&dir));
            let mut written = 0;
            // At most a tenth more (the listing of a slow machine outlasts
            // it, its later pages then quiet).
            while !listed.load(std::sync::atomic::Ordering::Relaxed) && written < FINISHED / 10 {
                finish_with_long_id(&store, &format!("w{written:0>127}"), written);
                written += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            written
        });
        // The command starts beside the writer's first files.
        wait_until("the writer's first finished task", || {
            fs::read_dir(dir.join("done")).unwrap().count() as u64 > FINISHED
        });
        let (out, peak) = peak_kib(test, &dir, &["list", "--json"]);
        listed.store(true, std::sync::atomic::Ordering::Relaxed);
        (out, peak, writer.join().unwrap())
    });
    assert!(out.lines().count() as u64 >= FINISHED);
    let finished = FINISHED + written;
    let per_task = peak.saturating_sub(base) * 1024 / finished;
    eprintln!(
        "list beside a writer: {per_task} bytes a finished task ({peak} KiB; {base} KiB empty; \
         {written} written beside it)"
    );
    assert!(
        per_task < 740,
        "list beside a writer took {per_task} bytes a finished task at its peak ({peak} KiB; \
         {base} KiB on an empty store; {finished} finished tasks, {written} of them written \
         beside it)"
    );
}

/// Makes `count` finished tasks in the store at `dir`, with ids of 128
/// characters (the longest) and status messages of 64 control characters.
fn finished_with_long_ids(dir: &Path, count: u64) {
    let store = eventual(FileStore::builder(dir));
    for i in 0..count {
        finish_with_long_id(&store, &format!("{i:0>128}"), i);
    }
    // Every file settled (the store trusts a file's status once it is 100
    // ms old): the command, which follows `done/` by file status, passes
    // over it once, not again at each page while its newest files settle.
    std::thread::sleep(Duration::from_millis(300));
}

/// Makes finished task `id` (128 characters) in `store`, with a status
/// message of 64 control characters and result `i`.
fn finish_with_long_id(store: &FileStore, id: &str, i: u64) {
    let id = TaskId::parse(id).unwrap();
    let message = "\u{1b}".repeat(64);
    store
        .create(NewTask::new().id(id.clone()).status_message(message))
        .unwrap();
    assert!(store.complete(&id, json!(i)).unwrap().is_applied());
}

/// The role of the child that runs the built command and takes its peak.
const MEASURE: &str = "measure";

/// The built command run with `args` on the store at `dir`, which must
/// succeed: its stdout, and its peak resident memory in KiB (`ru_maxrss`,
/// from `wait4`). Taken by a child, this test binary run again as `test`
/// (which calls [`measure_if_child`] first): a process's `ru_maxrss`
/// starts at the peak of the memory it was spawned from, so the command is
/// spawned from a process that has done nothing else, not from this one,
/// which other tests raise (a peak taken so read 96 MB on an empty store).
/// Its allocator keeps one heap (`MALLOC_ARENA_MAX=1`): glibc's heaps of
/// the listing's worker threads, each keeping what it freed, made one
/// run's peak differ from another's by up to 250 bytes a task.
fn peak_kib(test: &str, dir: &Path, args: &[&str]) -> (String, u64) {
    let tmp = tempfile::tempdir().unwrap();
    let mut child_args = vec![
        dir.to_str().unwrap().to_owned(),
        tmp.path().to_str().unwrap().to_owned(),
    ];
    child_args.extend(args.iter().map(|arg| (*arg).to_owned()));
    common::spawn(tmp.path(), test, MEASURE, &child_args).finish();
    let read = |name: &str| fs::read_to_string(tmp.path().join(name)).unwrap();
    let peak = read("peak");
    let peak = peak
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("the measured peak {peak:?}: {e}"));
    (read("stdout"), peak)
}

/// In the child [`peak_kib`] starts, runs the command and writes its
/// stdout and peak to the files the parent reads, and says so: the test
/// then returns at once.
fn measure_if_child() -> bool {
    let Some((role, args)) = common::role() else {
        return false;
    };
    assert_eq!(role, MEASURE);
    let [dir, out, args @ ..] = &args[..] else {
        panic!("measure: {args:?}")
    };
    let out = Path::new(out);
    #[allow(clippy::zombie_processes)] // reaped by `wait4` below, for its usage
    let child = common::without_store_variables(env!("CARGO_BIN_EXE_taskstore"))
        .args(args)
        .env("TASKSTORE_STORE", dir)
        .env("MALLOC_ARENA_MAX", "1")
        .stdout(fs::File::create(out.join("stdout")).unwrap())
        .stderr(fs::File::create(out.join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let (mut status, mut usage) = (0, unsafe { std::mem::zeroed::<libc::rusage>() });
    // SAFETY: waits for the child just spawned, which nothing else waits
    // for; `status` and `usage` are ours to write.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(
        pid,
        child.id() as libc::pid_t,
        "wait4: {}",
        std::io::Error::last_os_error()
    );
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "taskstore {args:?} ended with status {status:#x}: {}",
        fs::read_to_string(out.join("stderr")).unwrap_or_default()
    );
    // Linux gives `ru_maxrss` in KiB.
    fs::write(out.join("peak"), usage.ru_maxrss.to_string()).unwrap();
    true
}
