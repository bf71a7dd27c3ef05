//! The torn-read guard: readers in other processes loop while writers update
//! and complete, and never see a torn or older task (on disk and on tmpfs).

use super::*;

// ---------------------------------------------------------------------------
// Torn-read guard: readers loop while writers update and complete.

#[test]
fn readers_never_see_torn_or_older_tasks() {
    torn_reads("torn_reads::readers_never_see_torn_or_older_tasks", || {
        tempfile::tempdir().unwrap()
    });
}

/// The same on tmpfs, which gives a file renamed over a new place in its
/// directory: a `readdir` under way can pass it by (listings read `active/`
/// again while it changes).
#[cfg(target_os = "linux")]
#[test]
fn readers_never_see_torn_or_older_tasks_on_tmpfs() {
    torn_reads(
        "torn_reads::readers_never_see_torn_or_older_tasks_on_tmpfs",
        || tempfile::tempdir_in("/dev/shm").expect("this test needs /dev/shm (tmpfs)"),
    );
}

fn torn_reads(test: &str, tmp: impl FnOnce() -> tempfile::TempDir) {
    if let Some((role, args)) = common::role() {
        return match role.as_str() {
            "reader" => reader(&args),
            "writer" => writer(&args),
            other => panic!("unknown role {other}"),
        };
    }
    let tmp = tmp();
    let (store, work) = (tmp.path().join("store"), tmp.path().to_owned());
    let setup = open_fast(&store, "parent");
    for i in 0..TASKS {
        setup.create(NewTask::new().id(id("torn", i))).unwrap();
    }
    drop(setup);
    let mut readers: Vec<_> = (0..2)
        .map(|r| {
            spawn(
                &work,
                test,
                "reader",
                &args(&store, &work, &[r.to_string()]),
            )
        })
        .collect();
    wait_for(&mut readers, "both readers to have read once", || {
        (0..2).all(|r| work.join(format!("ready-{r}")).exists())
    });
    let writers: Vec<_> = (0..2)
        .map(|w| {
            spawn(
                &work,
                test,
                "writer",
                &args(&store, &work, &[w.to_string()]),
            )
        })
        .collect();
    for w in writers {
        w.finish();
    }
    touch(&work.join("writers-done"));
    for r in readers {
        r.finish();
    }

    let s = open(&store, "parent");
    let all = s.list(&ListQuery::all()).unwrap().tasks;
    assert_eq!(all.len(), TASKS);
    assert!(all.iter().all(Task::is_terminal));
    assert!(common::files_in(&store, "quarantine").is_empty());
    for r in 0..2 {
        let stats = fs::read_to_string(work.join(format!("reader-{r}"))).unwrap();
        eprintln!("reader {r}: {stats}");
    }
}

/// Reads every task in a loop, by `list` and by `get`, until the writers are
/// done (and once more after): every read must succeed, decode and never go
/// back in revision; a terminal task must never change again.
fn reader(args: &[String]) {
    let (store, work) = dirs(args);
    let r: usize = args[2].parse().unwrap();
    let s = open(&store, &format!("reader-{r}"));
    let mut seen: BTreeMap<TaskId, Task> = BTreeMap::new();
    let (mut passes, mut reads, mut changes) = (0u64, 0u64, 0u64);
    let mut observe = |t: Task, seen: &mut BTreeMap<TaskId, Task>| {
        if let Some(last) = seen.get(&t.id) {
            assert!(
                t.revision >= last.revision,
                "task {} went back from revision {} to {}",
                t.id,
                last.revision,
                t.revision
            );
            if last.is_terminal() {
                assert_eq!(&t, last, "a terminal task changed");
            }
            if t.revision > last.revision {
                changes += 1;
            }
        }
        seen.insert(t.id.clone(), t);
    };
    loop {
        let last_pass = work.join("writers-done").exists();
        let listed = s
            .list(&ListQuery::all())
            .unwrap_or_else(|e| panic!("list failed: {e}"));
        // A task moves `active/` -> `done/` by writing the new file first, so
        // a listing never misses one. (This also needs `readdir` to return a
        // name that a rename replaces during the listing: ext4 does, tmpfs on
        // recent kernels does not; see CONSISTENCY.md.)
        if listed.tasks.len() != TASKS {
            let listed: BTreeSet<&TaskId> = listed.tasks.iter().map(|t| &t.id).collect();
            let missed: Vec<String> = (0..TASKS)
                .map(|i| id("torn", i))
                .filter(|id| !listed.contains(id))
                .map(|id| format!("{id}: now {:?}", s.get(&id).map(|t| t.map(|t| t.status))))
                .collect();
            panic!("list missed {} live tasks: {missed:?}", missed.len());
        }
        for t in listed.tasks {
            observe(t, &mut seen);
        }
        for i in 0..TASKS {
            let t = s
                .get(&id("torn", i))
                .unwrap_or_else(|e| panic!("get failed: {e}"))
                .unwrap_or_else(|| panic!("task {i} missing"));
            observe(t, &mut seen);
        }
        reads += 2 * TASKS as u64;
        passes += 1;
        if passes == 1 {
            touch(&work.join(format!("ready-{r}")));
        }
        if last_pass {
            break;
        }
    }
    assert!(
        common::files_in(&store, "quarantine").is_empty(),
        "a reader set a file aside as corrupt"
    );
    let stats = format!("{passes} passes, {reads} reads, {changes} revision changes seen");
    write_atomic(&work.join(format!("reader-{r}")), stats.as_bytes());
}
