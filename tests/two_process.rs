//! Several processes on one store directory, for real: each test spawns this
//! test binary as its children (see `common::spawn`), and checks the
//! cross-process invariants (CONSISTENCY.md) — first writer wins, no lost
//! updates, no torn reads — on what the children report and on the store.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use common::{Rng, id, read_tasks, spawn, touch, wait_for, wait_until, write_atomic, write_tasks};
use serde_json::json;
use taskstore::{
    Durability, Error, FileStore, ListQuery, NewTask, Task, TaskId, TaskStatus, TaskStore,
    TaskUpdate, Transition,
};

/// Tasks in the race and torn-read tests.
const TASKS: usize = 1_000;
/// Processes that race.
const RACERS: usize = 4;
/// Updates per process in the lost-update test.
const UPDATES_PER_PROCESS: usize = 250;

fn open(store: &Path, instance: &str) -> FileStore {
    FileStore::builder(store)
        .instance_id(instance)
        .open()
        .expect("open the store")
}

/// A handle that skips fsync: for bulk setup, and for tests whose subject
/// (what other processes read) fsync cannot change.
fn open_fast(store: &Path, instance: &str) -> FileStore {
    FileStore::builder(store)
        .instance_id(instance)
        .durability(Durability::Eventual)
        .open()
        .expect("open the store")
}

/// `(store dir, work dir for flags and reports)` from a child's arguments.
fn dirs(args: &[String]) -> (PathBuf, PathBuf) {
    (PathBuf::from(&args[0]), PathBuf::from(&args[1]))
}

fn args(store: &Path, work: &Path, rest: &[String]) -> Vec<String> {
    let mut v = vec![store.display().to_string(), work.display().to_string()];
    v.extend_from_slice(rest);
    v
}

// ---------------------------------------------------------------------------
// A lifecycle split across instances.

#[test]
fn lifecycle_split_across_instances() {
    if let Some((role, args)) = common::role() {
        return lifecycle_child(&role, &args);
    }
    let tmp = tempfile::tempdir().unwrap();
    let (store, work) = (tmp.path().join("store"), tmp.path().to_owned());
    let test = "lifecycle_split_across_instances";
    for role in ["create_in_a", "update_in_b", "complete_in_a", "fail_in_b"] {
        spawn(&work, test, role, &args(&store, &work, &[])).finish();
    }
    let completed = read_tasks(&work.join("completed.jsonl")).remove(0);
    let s = open(&store, "parent");
    assert_eq!(s.get(&completed.id).unwrap().as_ref(), Some(&completed));
    assert_eq!(s.list(&ListQuery::all()).unwrap().tasks, vec![completed]);
    assert!(s.list(&ListQuery::active()).unwrap().tasks.is_empty());
}

fn lifecycle_child(role: &str, args: &[String]) {
    let (store, work) = dirs(args);
    let life = TaskId::parse("life").unwrap();
    match role {
        "create_in_a" => {
            let a = open(&store, "A");
            let t = a
                .create(NewTask::new().id(life).metadata("step", "created in A"))
                .unwrap();
            assert_eq!(t.owner.as_deref(), Some("A"));
            write_tasks(&work.join("created.jsonl"), &[t]);
        }
        "update_in_b" => {
            let created = read_tasks(&work.join("created.jsonl")).remove(0);
            let b = open(&store, "B");
            assert_eq!(b.get(&life).unwrap(), Some(created.clone()));
            let t = b
                .update(
                    &life,
                    TaskUpdate::new()
                        .status_message("updated in B")
                        .metadata("b", 1),
                )
                .unwrap();
            let Transition::Applied(t) = t else {
                panic!("update in B not applied: {t:?}")
            };
            assert_eq!(t.revision, created.revision + 1);
            assert_eq!(
                t.owner.as_deref(),
                Some("A"),
                "an update does not change the owner"
            );
            assert_eq!(t.metadata["step"], "created in A");
            write_tasks(&work.join("updated.jsonl"), &[t]);
        }
        "complete_in_a" => {
            let updated = read_tasks(&work.join("updated.jsonl")).remove(0);
            let a = open(&store, "A");
            assert_eq!(a.get(&life).unwrap(), Some(updated.clone()));
            let t = a.complete(&life, json!({"answer": 42})).unwrap();
            let Transition::Applied(t) = t else {
                panic!("complete in A not applied: {t:?}")
            };
            assert_eq!(t.status, TaskStatus::Completed);
            assert_eq!(t.revision, updated.revision + 1);
            assert_eq!(t.lease_expires_at, None, "a terminal task holds no lease");
            write_tasks(&work.join("completed.jsonl"), &[t]);
        }
        "fail_in_b" => {
            let completed = read_tasks(&work.join("completed.jsonl")).remove(0);
            let b = open(&store, "B");
            assert_eq!(b.get(&life).unwrap(), Some(completed.clone()));
            let t = b.fail(&life, json!({"code": "too late"})).unwrap();
            assert_eq!(t, Transition::AlreadyTerminal(completed.clone()));
            let t = b
                .update(&life, TaskUpdate::new().status_message("too late"))
                .unwrap();
            assert_eq!(t, Transition::AlreadyTerminal(completed.clone()));
            assert_eq!(b.get(&life).unwrap(), Some(completed));
        }
        other => panic!("unknown role {other}"),
    }
}

// ---------------------------------------------------------------------------
// Four processes race complete / fail / cancel on the same tasks.

#[test]
fn four_processes_race_terminal_transitions() {
    if let Some((role, args)) = common::role() {
        assert_eq!(role, "racer");
        return racer(&args);
    }
    let tmp = tempfile::tempdir().unwrap();
    let (store, work) = (tmp.path().join("store"), tmp.path().to_owned());
    let setup = open_fast(&store, "parent");
    for i in 0..TASKS {
        setup.create(NewTask::new().id(id("race", i))).unwrap();
    }
    drop(setup);
    let mut children: Vec<_> = (0..RACERS)
        .map(|k| {
            spawn(
                &work,
                "four_processes_race_terminal_transitions",
                "racer",
                &args(&store, &work, &[k.to_string()]),
            )
        })
        .collect();
    wait_for(&mut children, "every racer to be ready", || {
        (0..RACERS).all(|k| work.join(format!("ready-{k}")).exists())
    });
    touch(&work.join("go"));
    for c in children {
        c.finish();
    }

    let s = open(&store, "parent");
    let finals: BTreeMap<TaskId, Task> = (0..TASKS)
        .map(|i| {
            let t = s.get(&id("race", i)).unwrap().expect("raced task exists");
            (t.id.clone(), t)
        })
        .collect();
    let mut applied_by: BTreeMap<TaskId, usize> = BTreeMap::new();
    for k in 0..RACERS {
        for t in read_tasks(&work.join(format!("applied-{k}.jsonl"))) {
            assert_eq!(
                &t, &finals[&t.id],
                "the applied transition is the final one"
            );
            assert_eq!(t.revision, 2, "one write after creation");
            if let Some(other) = applied_by.insert(t.id.clone(), k) {
                panic!("task {} applied by racers {other} and {k}", t.id);
            }
        }
        for t in read_tasks(&work.join(format!("already-{k}.jsonl"))) {
            assert_eq!(
                &t, &finals[&t.id],
                "AlreadyTerminal returns the winner untouched"
            );
        }
        // Every process then reads the same status, payload and lastUpdatedAt.
        let seen = read_tasks(&work.join(format!("final-{k}.jsonl")));
        assert_eq!(seen.len(), TASKS);
        for t in seen {
            assert_eq!(&t, &finals[&t.id], "racer {k} reads what everyone reads");
        }
    }
    assert_eq!(
        applied_by.len(),
        TASKS,
        "exactly one applied transition per task"
    );
    for (id, t) in &finals {
        let k = applied_by[id];
        assert!(t.is_terminal());
        let by = match t.status {
            TaskStatus::Completed => &t.result.as_ref().unwrap()["by"],
            TaskStatus::Failed => &t.error.as_ref().unwrap()["by"],
            _ => &json!(
                t.status_message
                    .as_deref()
                    .unwrap()
                    .trim_start_matches("by ")
            ),
        };
        assert_eq!(
            by,
            &json!(k.to_string()),
            "task {id} carries its winner's payload"
        );
    }
    assert!(s.list(&ListQuery::active()).unwrap().tasks.is_empty());
}

fn racer(args: &[String]) {
    let (store, work) = dirs(args);
    let k: usize = args[2].parse().unwrap();
    let s = open(&store, &format!("racer-{k}"));
    let mut order: Vec<usize> = (0..TASKS).collect();
    let mut rng = Rng::from_entropy(&format!("racer {k}"));
    // Half of the racers go in the same order as another, to collide often.
    if k % 2 == 1 {
        rng.shuffle(&mut order);
    }
    touch(&work.join(format!("ready-{k}")));
    wait_until("go", || work.join("go").exists());
    let (mut applied, mut already) = (Vec::new(), Vec::new());
    for i in order {
        let tid = id("race", i);
        let by = k.to_string();
        let t = match rng.below(3) {
            0 => s.complete(&tid, json!({ "by": by })),
            1 => s.fail(&tid, json!({ "by": by })),
            _ => s.cancel(&tid, Some(format!("by {by}"))),
        }
        .unwrap();
        match t {
            Transition::Applied(t) => applied.push(t),
            Transition::AlreadyTerminal(t) => already.push(t),
            other => panic!("unfenced, never {other:?}"),
        }
    }
    write_tasks(&work.join(format!("applied-{k}.jsonl")), &applied);
    write_tasks(&work.join(format!("already-{k}.jsonl")), &already);
    touch(&work.join(format!("raced-{k}")));
    wait_until("every racer to finish", || {
        (0..RACERS).all(|j| work.join(format!("raced-{j}")).exists())
    });
    let seen: Vec<Task> = (0..TASKS)
        .map(|i| s.get(&id("race", i)).unwrap().expect("raced task exists"))
        .collect();
    write_tasks(&work.join(format!("final-{k}.jsonl")), &seen);
}

// ---------------------------------------------------------------------------
// No lost updates: four processes update one task.

#[test]
fn no_lost_updates_across_four_processes() {
    if let Some((role, args)) = common::role() {
        assert_eq!(role, "updater");
        return updater(&args);
    }
    let tmp = tempfile::tempdir().unwrap();
    let (store, work) = (tmp.path().join("store"), tmp.path().to_owned());
    let s = open(&store, "parent");
    let created = s
        .create(NewTask::new().id(TaskId::parse("counter").unwrap()))
        .unwrap();
    let mut children: Vec<_> = (0..RACERS)
        .map(|k| {
            spawn(
                &work,
                "no_lost_updates_across_four_processes",
                "updater",
                &args(&store, &work, &[k.to_string()]),
            )
        })
        .collect();
    wait_for(&mut children, "every updater to be ready", || {
        (0..RACERS).all(|k| work.join(format!("ready-{k}")).exists())
    });
    touch(&work.join("go"));
    for c in children {
        c.finish();
    }

    let t = s.get(&created.id).unwrap().unwrap();
    let total = (RACERS * UPDATES_PER_PROCESS) as u64;
    assert_eq!(t.revision, created.revision + total);
    assert_eq!(t.metadata.len(), RACERS * UPDATES_PER_PROCESS);
    for k in 0..RACERS {
        for n in 0..UPDATES_PER_PROCESS {
            assert_eq!(
                t.metadata[&format!("p{k}-{n:03}")],
                json!(n),
                "key p{k}-{n}"
            );
        }
    }
    // Every applied write got its own revision: together they are exactly
    // created+1 ..= created+1000, each once.
    let mut revisions = BTreeSet::new();
    for k in 0..RACERS {
        let text = fs::read_to_string(work.join(format!("revisions-{k}"))).unwrap();
        for r in text.lines() {
            assert!(
                revisions.insert(r.parse::<u64>().unwrap()),
                "revision {r} twice"
            );
        }
    }
    let expected: BTreeSet<u64> = (created.revision + 1..=created.revision + total).collect();
    assert_eq!(revisions, expected);
}

fn updater(args: &[String]) {
    let (store, work) = dirs(args);
    let k: usize = args[2].parse().unwrap();
    let s = open(&store, &format!("updater-{k}"));
    let counter = TaskId::parse("counter").unwrap();
    touch(&work.join(format!("ready-{k}")));
    wait_until("go", || work.join("go").exists());
    let mut revisions = Vec::new();
    for n in 0..UPDATES_PER_PROCESS {
        let t = s
            .update(
                &counter,
                TaskUpdate::new().metadata(format!("p{k}-{n:03}"), n),
            )
            .unwrap();
        let Transition::Applied(t) = t else {
            panic!("update not applied: {t:?}")
        };
        assert!(
            revisions.last().is_none_or(|&last| t.revision > last),
            "revisions rise within one process"
        );
        // The task as written holds this process's earlier keys: none lost.
        for m in 0..=n {
            assert!(t.metadata.contains_key(&format!("p{k}-{m:03}")));
        }
        revisions.push(t.revision);
    }
    let text: String = revisions.iter().map(|r| format!("{r}\n")).collect();
    write_atomic(&work.join(format!("revisions-{k}")), text.as_bytes());
}

// ---------------------------------------------------------------------------
// Freshness: a listing in one process sees every write another process
// finished before the listing started, though listings reuse what they read.

#[test]
fn a_listing_sees_every_write_another_process_finished_first() {
    const TEST: &str = "a_listing_sees_every_write_another_process_finished_first";
    if let Some((role, args)) = common::role() {
        assert_eq!(role, "fresh-writer");
        return fresh_writer(&args);
    }
    let tmp = tempfile::tempdir().unwrap();
    let (store, work) = (tmp.path().join("store"), tmp.path().to_owned());
    let setup = open_fast(&store, "parent");
    for i in 0..3 {
        setup.create(NewTask::new().id(id("fresh", i))).unwrap();
    }
    drop(setup);
    let reader = open_fast(&store, "reader");
    let watched = id("fresh", 1);
    let mut writer = [spawn(
        &work,
        TEST,
        "fresh-writer",
        &args(&store, &work, &[]),
    )];
    let written = || {
        fs::read_to_string(work.join("written"))
            .map_or(0, |s| s.trim().parse::<u64>().expect("a revision"))
    };
    let answered = std::cell::Cell::new(0u64);
    let list = |at_least: u64| {
        // First a get that waits for nothing (no notice drained since the
        // last listing): it answers as fresh as a listing, or not at all.
        if let Some(answer) = reader.try_get(&watched) {
            answered.set(answered.get() + 1);
            let at_once = answer.expect("a running task").revision;
            assert!(
                at_once >= at_least,
                "try_get answered revision {at_once} after the writer had finished revision {at_least}"
            );
        }
        let tasks = reader.list(&ListQuery::active()).unwrap().tasks;
        assert_eq!(tasks.len(), 3);
        let seen = tasks.iter().find(|t| t.id == watched).unwrap().revision;
        assert!(
            seen >= at_least,
            "listed revision {seen} after the writer had finished revision {at_least}"
        );
        // A get of the running task, served from the same snapshot.
        let got = reader.get(&watched).unwrap().unwrap().revision;
        assert!(
            got >= at_least,
            "got revision {got} after the writer had finished revision {at_least}"
        );
        seen
    };
    let (mut listings, mut handshakes) = (0u64, 0u64);
    loop {
        let done = work.join("done").exists();
        // Read before the listing starts: the listing must show at least it.
        let seen = list(written());
        listings += 1;
        if done {
            assert_eq!(seen, written(), "the last write is listed");
            break;
        }
        // The writer asks, now and then, for a burst the reader does not
        // list until the directory has settled again: the snapshot the
        // reader kept before the burst then looks trustworthy by age, and
        // must be refused because the directory's status changed.
        let ask = work.join(format!("ask-{handshakes}"));
        if ask.exists() {
            touch(&work.join(format!("paused-{handshakes}")));
            wait_for(&mut writer, "the writer's burst", || {
                work.join(format!("wrote-{handshakes}")).exists()
            });
            std::thread::sleep(std::time::Duration::from_millis(150));
            list(written());
            handshakes += 1;
        }
        writer.iter_mut().for_each(common::Running::check_alive);
    }
    let [writer] = writer;
    writer.finish();
    assert_eq!(handshakes, 6);
    assert!(answered.get() > 0, "try_get never answered");
    eprintln!(
        "{listings} listings, {handshakes} after a settled burst, {} answered by try_get",
        answered.get()
    );
}

/// Updates one task in bursts, pausing past the listing snapshot's settle
/// margin between them, and publishes each revision once its write
/// returned; every other burst waits until the reader has paused.
fn fresh_writer(args: &[String]) {
    let (store, work) = dirs(args);
    let s = open_fast(&store, "fresh-writer");
    let task = id("fresh", 1);
    for round in 0..12u64 {
        std::thread::sleep(std::time::Duration::from_millis(130 + round % 4 * 9));
        let handshake = round / 2;
        if round % 2 == 1 {
            touch(&work.join(format!("ask-{handshake}")));
            wait_until("the reader to pause", || {
                work.join(format!("paused-{handshake}")).exists()
            });
        }
        for _ in 0..1 + round % 3 {
            let t = s
                .update(&task, TaskUpdate::new().metadata("round", round))
                .unwrap()
                .into_task();
            write_atomic(&work.join("written"), t.revision.to_string().as_bytes());
        }
        if round % 2 == 1 {
            touch(&work.join(format!("wrote-{handshake}")));
        }
    }
    touch(&work.join("done"));
}

// ---------------------------------------------------------------------------
// Processes forked from one that had handles.

/// A process forked from one that had a handle on the store, and the
/// process it was forked from, each list through a handle; then the forked
/// child makes a task and lists again: the parent's next listing has the
/// task. Twice: with a handle each opened after the fork, the parent's
/// first one dropped before it (its inotify instance is kept for the next
/// watch, and the child has a copy of its descriptor); and with the one
/// handle opened before the fork, used in both (the child has a copy of
/// its watch's descriptor). Were both processes to watch through one
/// instance, the child's listing would read, and so take away, the change
/// notice the parent's handle looks for, and the parent would list from
/// memory without the task. The forking runs in a child process of its own
/// (this test binary run again for it alone), where no other test's thread
/// can hold a lock at the fork.
#[cfg(target_os = "linux")]
#[test]
fn a_forked_process_takes_none_of_its_parents_change_notices() {
    const TEST: &str = "a_forked_process_takes_none_of_its_parents_change_notices";
    if let Some((role, args)) = common::role() {
        return forker(&role, &args);
    }
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().to_owned();
    for role in ["handles-after-a-drop", "one-handle-for-both"] {
        let store = work.join(role);
        drop(open(&store, "setup"));
        spawn(&work, TEST, role, &args(&store, &work, &[])).finish();
    }
}

#[cfg(target_os = "linux")]
fn forker(role: &str, args: &[String]) {
    let (store, _) = dirs(args);
    let listed = |s: &FileStore| s.list(&ListQuery::active()).unwrap().tasks;
    let before = open(&store, "before");
    assert!(listed(&before).is_empty());
    let shared = match role {
        "handles-after-a-drop" => {
            drop(before);
            None
        }
        "one-handle-for-both" => Some(before),
        _ => panic!("unknown role {role}"),
    };
    // The handle each process lists through: the shared one, or one of
    // its own.
    let own = || shared.is_none().then(|| open(&store, "own"));
    let mut child = common::fork(|| {
        let own = own();
        let s = own.as_ref().or(shared.as_ref()).unwrap();
        assert!(listed(s).is_empty());
        s.create(NewTask::new().id(id("forked", 0))).unwrap();
        assert_eq!(listed(s).len(), 1);
        // Kept open until the child ends, as in a process still running.
        std::mem::forget(own);
        true
    });
    let own = own();
    let s = own.as_ref().or(shared.as_ref()).unwrap();
    assert!(listed(s).is_empty());
    child.go();
    child.finish();
    let tasks = listed(s);
    assert_eq!(
        tasks.iter().map(|task| &task.id).collect::<Vec<_>>(),
        [&id("forked", 0)],
        "{role}: the parent's listing after the forked child made a task"
    );
}

/// A process forked from one whose handle had replaced a task's file (so
/// a thread of the parent's frees the old versions) writes through that
/// handle: it frees its own replaced files, and dropping the handle there
/// ends cleanly. (The child handed them to the parent's thread, which does
/// not run in it: they stayed in `tmp/`; and its drop, waiting for that
/// thread, panicked.) The forking runs in a child process of its own.
#[cfg(target_os = "linux")]
#[test]
fn a_forked_process_frees_its_own_replaced_files_and_drops_its_handle_cleanly() {
    const TEST: &str = "a_forked_process_frees_its_own_replaced_files_and_drops_its_handle_cleanly";
    if common::role().is_some() {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("store");
        let handle = open(&store, "parent");
        let task = handle.create(NewTask::new()).unwrap();
        // A replacing write: the parent's reclaiming thread starts.
        let update = TaskUpdate::new().status_message("parent");
        assert!(handle.update(&task.id, update).unwrap().is_applied());
        let child = common::fork(|| {
            let update = TaskUpdate::new().status_message("child");
            let applied = handle.update(&task.id, update).unwrap().is_applied();
            drop(handle);
            // The child's parks carry its pid.
            let pid = format!(".{}.", std::process::id());
            let left: Vec<String> = std::fs::read_dir(store.join("tmp"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| name.contains(&pid))
                .collect();
            assert_eq!(left, Vec::<String>::new(), "the child's replaced files");
            applied
        });
        child.finish();
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    spawn(tmp.path(), TEST, "forker", &[]).finish();
}

// ---------------------------------------------------------------------------
// Torn-read guard: readers loop while writers update and complete.

#[test]
fn readers_never_see_torn_or_older_tasks() {
    torn_reads("readers_never_see_torn_or_older_tasks", || {
        tempfile::tempdir().unwrap()
    });
}

/// The same on tmpfs, which gives a file renamed over a new place in its
/// directory: a `readdir` under way can pass it by (listings read `active/`
/// again while it changes).
#[cfg(target_os = "linux")]
#[test]
fn readers_never_see_torn_or_older_tasks_on_tmpfs() {
    torn_reads("readers_never_see_torn_or_older_tasks_on_tmpfs", || {
        tempfile::tempdir_in("/dev/shm").expect("this test needs /dev/shm (tmpfs)")
    });
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

/// Updates every task twice, then completes half of them (the other writer
/// the other half); the two writers go in opposite directions.
fn writer(args: &[String]) {
    let (store, _) = dirs(args);
    let w: usize = args[2].parse().unwrap();
    // No fsync: what another process reads does not depend on it.
    let s = open_fast(&store, &format!("writer-{w}"));
    let mut order: Vec<usize> = (0..TASKS).collect();
    if w == 1 {
        order.reverse();
    }
    for i in order {
        let tid = id("torn", i);
        for n in 0..2 {
            let t = s
                .update(
                    &tid,
                    TaskUpdate::new()
                        .status_message(format!("writer {w} pass {n}"))
                        .metadata(format!("w{w}-{n}"), "x".repeat(64 * (i % 32))),
                )
                .unwrap();
            assert!(t.is_applied() || i % 2 != w, "{t:?}");
        }
        if i % 2 == w {
            let t = s.complete(&tid, json!({ "writer": w })).unwrap();
            assert!(t.is_applied(), "only this writer completes task {i}");
        }
    }
    // Never a torn task for the writer either.
    match s.get(&id("torn", 0)) {
        Ok(Some(_)) => {}
        Ok(None) => panic!("task vanished"),
        Err(e @ Error::Corrupt { .. }) => panic!("{e}"),
        Err(e) => panic!("{e}"),
    }
}

// ---------------------------------------------------------------------------
// A large sweep (every stripe's lock at once, its deletions spread over the
// cores) beside writers in other processes.

/// Expired tasks the sweep deletes: several batches of it.
const EXPIRED: usize = 2_500;
/// Running tasks without a TTL that the writers update during the sweep.
const LIVE: usize = 200;
/// Running tasks the sweeper knows before the sweep, which the writers
/// delete during it.
const DOOMED: usize = 100;
/// Writer processes.
const SWEEP_WRITERS: usize = 2;

#[test]
fn a_large_sweep_beside_writers_in_other_processes_deletes_exactly_the_expired() {
    if let Some((role, args)) = common::role() {
        assert_eq!(role, "sweep-writer");
        return sweep_writer(&args);
    }
    large_sweep_beside_writers(
        "a_large_sweep_beside_writers_in_other_processes_deletes_exactly_the_expired",
        false,
    );
}

/// The same, by a sweeper whose snapshot is complete before the expired
/// tasks are made: it meets them as new files, which the sweep reads once
/// each under its lock and removes at once if expired
/// (`src/file/unread.rs`).
#[test]
fn a_large_sweep_of_files_the_sweeper_has_not_read_deletes_exactly_the_expired() {
    if let Some((role, args)) = common::role() {
        assert_eq!(role, "sweep-writer");
        return sweep_writer(&args);
    }
    large_sweep_beside_writers(
        "a_large_sweep_of_files_the_sweeper_has_not_read_deletes_exactly_the_expired",
        true,
    );
}

/// The same with the expired tasks finished (each with its `expiring/`
/// entry), which the sweep reads once each under every stripe and removes
/// as it meets them (`Backend::remove_due`) while the writers make new
/// tasks under their ids.
#[test]
fn a_large_sweep_of_finished_tasks_beside_writers_in_other_processes_deletes_exactly_the_expired() {
    if let Some((role, args)) = common::role() {
        assert_eq!(role, "sweep-writer");
        return sweep_writer(&args);
    }
    large_sweep_of(
        "a_large_sweep_of_finished_tasks_beside_writers_in_other_processes_deletes_exactly_the_expired",
        false,
        true,
    );
}

/// The body of the large-sweep tests of running tasks (see
/// [`large_sweep_of`]).
fn large_sweep_beside_writers(test: &str, listed_first: bool) {
    large_sweep_of(test, listed_first, false);
}

/// The body of the large-sweep tests, run as test `test`; with
/// `listed_first`, the sweeper lists the store (its live and doomed tasks)
/// before the expired ones are made; with `finished`, each expired task is
/// completed before it expires.
fn large_sweep_of(test: &str, listed_first: bool, finished: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let (store, work) = (tmp.path().join("store"), tmp.path().to_owned());
    let sweeper = open(&store, "sweeper");
    let fast = open_fast(&store, "setup");
    for n in 0..LIVE {
        fast.create(NewTask::new().id(id("live", n))).unwrap();
    }
    for n in 0..DOOMED {
        fast.create(NewTask::new().id(id("doomed", n))).unwrap();
    }
    if listed_first {
        let known = sweeper.list(&ListQuery::active()).unwrap().tasks;
        assert_eq!(known.len(), LIVE + DOOMED);
    }
    // Finished tasks are made an hour in the past with a minute's TTL,
    // by a handle whose clock stays there: expired for everyone else.
    let past = finished.then(|| {
        FileStore::builder(&store)
            .instance_id("setup-past")
            .durability(Durability::Eventual)
            .clock(std::sync::Arc::new(taskstore::ManualClock::new(
                time::OffsetDateTime::now_utc() - std::time::Duration::from_secs(3_600),
            )))
            .open()
            .unwrap()
    });
    let expired: BTreeSet<TaskId> = (0..EXPIRED)
        .map(|n| match &past {
            Some(past) => {
                let task = past
                    .create(NewTask::new().ttl(std::time::Duration::from_secs(60)))
                    .unwrap();
                assert!(past.complete(&task.id, json!(n)).unwrap().is_applied());
                task.id
            }
            None => {
                fast.create(NewTask::new().ttl(std::time::Duration::from_millis(1)))
                    .unwrap()
                    .id
            }
        })
        .collect();
    drop(past);
    drop(fast);
    // The writers also create tasks under expired tasks' ids (the last
    // first, which the sweep reaches last): those must survive it.
    let names: String = expired.iter().map(|t| format!("{t}\n")).collect();
    write_atomic(&work.join("expired"), names.as_bytes());
    let mut children: Vec<_> = (0..SWEEP_WRITERS)
        .map(|k| {
            spawn(
                &work,
                test,
                "sweep-writer",
                &args(&store, &work, &[k.to_string()]),
            )
        })
        .collect();
    wait_for(&mut children, "every writer to be ready", || {
        (0..SWEEP_WRITERS).all(|k| work.join(format!("ready-{k}")).exists())
    });
    touch(&work.join("go"));
    // Each writer has written before the sweep starts, and writes on
    // through it.
    wait_for(&mut children, "every writer to write", || {
        (0..SWEEP_WRITERS).all(|k| work.join(format!("writing-{k}")).exists())
    });
    let swept = sweeper.sweep().unwrap();
    touch(&work.join("stop"));
    for c in children {
        c.finish();
    }
    assert!(
        swept.missed.is_empty() && swept.skipped.is_empty(),
        "{swept:?}"
    );

    // Every write of the writers stands: each live task's revision counts
    // every update, and every task they created is there, under an expired
    // task's id too; every other expired task is gone.
    let reader = open(&store, "reader");
    let mut updates = BTreeMap::<TaskId, u64>::new();
    let (mut created, mut deleted) = (BTreeSet::new(), BTreeSet::new());
    for k in 0..SWEEP_WRITERS {
        let report = fs::read_to_string(work.join(format!("report-{k}"))).unwrap();
        for line in report.lines() {
            match line.split_once(' ') {
                Some(("updated", task)) => *updates.entry(parse(task)).or_default() += 1,
                Some(("created", task)) => assert!(created.insert(parse(task))),
                Some(("deleted", task)) => assert!(deleted.insert(parse(task))),
                _ => panic!("a report line: {line}"),
            }
        }
    }
    assert!(!updates.is_empty() && !created.is_empty() && !deleted.is_empty());
    for task in &deleted {
        assert_eq!(reader.get(task).unwrap(), None, "{task} was deleted");
    }
    let recreated = created.intersection(&expired).count();
    assert!(recreated > 0);
    assert!(
        swept.deleted <= EXPIRED && swept.deleted >= EXPIRED - recreated,
        "{} deleted, {recreated} recreated",
        swept.deleted
    );
    for task in expired.difference(&created) {
        assert_eq!(reader.get(task).unwrap(), None, "{task}");
        for area in ["active", "done"] {
            assert!(!store.join(area).join(format!("{task}.json")).exists());
        }
    }
    assert!(
        common::files_in(&store, "expiring").is_empty(),
        "no entry of a swept task is left"
    );
    let listed: BTreeMap<TaskId, Task> = reader
        .list(&ListQuery::active())
        .unwrap()
        .tasks
        .into_iter()
        .map(|t| (t.id.clone(), t))
        .collect();
    assert_eq!(listed.len(), LIVE + DOOMED - deleted.len() + created.len());
    for n in 0..LIVE {
        let task = &listed[&id("live", n)];
        assert_eq!(
            task.revision,
            1 + updates.get(&task.id).copied().unwrap_or(0)
        );
    }
    for task in &created {
        assert_eq!(listed[task].revision, 1);
    }
    // The sweeper's own snapshot, kept by its change notices through the
    // sweep (which stops noticing its own unlinks while it holds every
    // stripe), agrees with the fresh handle's: every write and unlink of
    // the writers seen, no removed file kept.
    let seen: BTreeMap<TaskId, u64> = sweeper
        .list(&ListQuery::active())
        .unwrap()
        .tasks
        .into_iter()
        .map(|t| (t.id, t.revision))
        .collect();
    let want: BTreeMap<TaskId, u64> = listed
        .iter()
        .map(|(id, t)| (id.clone(), t.revision))
        .collect();
    assert!(
        seen == want,
        "the sweeper's listing differs from a fresh handle's: {} tasks against {}",
        seen.len(),
        want.len()
    );
}

/// Updates the live tasks, creates tasks and deletes its share of the
/// doomed ones until told to stop, and reports
/// every write applied.
fn sweep_writer(args: &[String]) {
    let (store, work) = dirs(args);
    let k: usize = args[2].parse().unwrap();
    let s = open(&store, &format!("sweep-writer-{k}"));
    touch(&work.join(format!("ready-{k}")));
    wait_until("go", || work.join("go").exists());
    let mut report = String::new();
    let mut rng = Rng::new(k as u64 + 1);
    let expired = fs::read_to_string(work.join("expired")).unwrap();
    let mut mine: Vec<TaskId> = expired
        .lines()
        .skip(k)
        .step_by(SWEEP_WRITERS)
        .map(parse)
        .collect();
    let mut n = 0;
    while !work.join("stop").exists() || n < 20 {
        let live = id("live", (rng.next() % LIVE as u64) as usize);
        let updated = s
            .update(&live, TaskUpdate::new().metadata(format!("w{k}"), n))
            .unwrap();
        assert!(updated.is_applied(), "{updated:?}");
        report.push_str(&format!("updated {live}\n"));
        let new = s
            .create(NewTask::new().id(parse(&format!("new-{k}-{n:05}"))))
            .unwrap();
        report.push_str(&format!("created {}\n", new.id));
        // An unlink from `active/` of a task the sweeper knew before.
        let doomed = k + n * SWEEP_WRITERS;
        if doomed < DOOMED {
            assert!(s.delete(&id("doomed", doomed)).unwrap());
            report.push_str(&format!("deleted {}\n", id("doomed", doomed)));
        }
        if let Some(old) = mine.pop() {
            let again = s.create(NewTask::new().id(old)).unwrap();
            report.push_str(&format!("created {}\n", again.id));
        }
        n += 1;
        if n == 10 {
            touch(&work.join(format!("writing-{k}")));
        }
    }
    write_atomic(&work.join(format!("report-{k}")), report.as_bytes());
}

// ---------------------------------------------------------------------------
// Two large sweeps at once.

/// Expired tasks of each kind (running, finished) two sweepers race for.
const RACED: usize = 1_200;
/// Tasks that are not expired: running, and finished without a TTL.
const KEPT: usize = 100;
/// Sweeping processes.
const SWEEPERS: usize = 2;

/// Two processes sweep one store at once, each in batches that take every
/// stripe, both meeting the expired tasks as new files (each listed the
/// store before they were made, as a server's handle has): every expired task,
/// running or finished, is deleted exactly once between them (one
/// `task.expired` event, in one process), nothing else is touched, neither
/// misses or skips anything, and the store they leave is whole: no
/// `expiring/` entry left behind (an entry one sweeper's removal made stale
/// goes, after an fsync of `done/`, in whichever meets it), nothing for
/// `verify` to report.
#[test]
fn two_large_sweeps_in_two_processes_delete_each_expired_task_once() {
    if let Some((role, args)) = common::role() {
        assert_eq!(role, "racing-sweeper");
        return racing_sweeper(&args);
    }
    let test = "two_large_sweeps_in_two_processes_delete_each_expired_task_once";
    let tmp = tempfile::tempdir().unwrap();
    let (store, work) = (tmp.path().join("store"), tmp.path().to_owned());
    let fast = open_fast(&store, "setup");
    for n in 0..KEPT {
        fast.create(NewTask::new().id(id("running", n))).unwrap();
        let kept = fast.create(NewTask::new().id(id("finished", n))).unwrap();
        assert!(fast.complete(&kept.id, json!(n)).unwrap().is_applied());
    }
    let mut children: Vec<_> = (0..SWEEPERS)
        .map(|k| {
            let k = k.to_string();
            spawn(&work, test, "racing-sweeper", &args(&store, &work, &[k]))
        })
        .collect();
    wait_for(&mut children, "every sweeper to be ready", || {
        (0..SWEEPERS).all(|k| work.join(format!("ready-{k}")).exists())
    });
    // Made after the sweepers listed the store: expired once their TTL is
    // past.
    let ttl = std::time::Duration::from_secs(1);
    let mut expired = BTreeSet::new();
    let mut last_expiry = None;
    for n in 0..RACED {
        let running = fast.create(NewTask::new().ttl(ttl)).unwrap();
        let done = fast.create(NewTask::new().ttl(ttl)).unwrap();
        assert!(fast.complete(&done.id, json!(n)).unwrap().is_applied());
        last_expiry = last_expiry.max(done.expires_at());
        expired.insert(running.id);
        expired.insert(done.id);
    }
    drop(fast);
    // Past every TTL by the clock the sweepers go by, the wall clock (a
    // sleep of the TTL need not be: the wall clock may run slower than the
    // monotonic one while it is slewed back).
    let last_expiry = last_expiry.unwrap();
    while time::OffsetDateTime::now_utc() <= last_expiry {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    touch(&work.join("go"));
    for child in children {
        child.finish();
    }

    let mut deleted = BTreeMap::<TaskId, usize>::new();
    let mut counted = 0;
    for k in 0..SWEEPERS {
        let report = fs::read_to_string(work.join(format!("report-{k}"))).unwrap();
        let mut lines = report.lines();
        let head = lines.next().unwrap();
        assert_eq!(head, "missed 0 skipped 0", "sweeper {k}");
        counted += lines
            .next()
            .and_then(|line| line.strip_prefix("deleted "))
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap();
        for task in lines {
            *deleted.entry(parse(task)).or_default() += 1;
        }
    }
    assert_eq!(counted, expired.len(), "the sweeps' counts add up");
    let twice: Vec<_> = deleted.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "deleted more than once: {twice:?}");
    let keys: BTreeSet<TaskId> = deleted.into_keys().collect();
    assert!(keys == expired, "every expired task deleted, nothing else");

    let reader = open(&store, "reader");
    let all = reader.list(&ListQuery::all()).unwrap();
    assert!(all.skipped.is_empty(), "{:?}", all.skipped);
    assert_eq!(all.tasks.len(), 2 * KEPT, "the kept tasks, all of them");
    assert!(all.tasks.iter().all(|t| !expired.contains(&t.id)));
    assert_eq!(fs::read_dir(store.join("expiring")).unwrap().count(), 0);
    let report = taskstore::FileCheck::open(&store)
        .and_then(|check| check.verify())
        .unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// Opens a durable handle with an event log, lists the store, says it is
/// ready, sweeps on `go`, and reports what its
/// sweep missed and skipped, how many it deleted, and the id of each
/// `task.expired` event.
fn racing_sweeper(args: &[String]) {
    use std::sync::Arc;
    use taskstore::{EventLog, TaskEventKind};

    let (store, work) = dirs(args);
    let k: usize = args[2].parse().unwrap();
    let events = Arc::new(EventLog::with_capacity(4 * RACED));
    let s = FileStore::builder(&store)
        .instance_id(format!("sweeper-{k}"))
        .sink(events.clone())
        .open()
        .expect("open the store");
    let known = s.list(&ListQuery::active()).unwrap().tasks;
    assert_eq!(known.len(), KEPT);
    touch(&work.join(format!("ready-{k}")));
    wait_until("go", || work.join("go").exists());
    let swept = s.sweep().unwrap();
    let mut report = format!(
        "missed {} skipped {}\ndeleted {}\n",
        swept.missed.len(),
        swept.skipped.len(),
        swept.deleted
    );
    for record in events.snapshot() {
        if record.event.kind == TaskEventKind::Expired {
            let task = record.event.data["taskId"].as_str().unwrap();
            report.push_str(&format!("{task}\n"));
        }
    }
    write_atomic(&work.join(format!("report-{k}")), report.as_bytes());
}

fn parse(task: &str) -> TaskId {
    TaskId::parse(task).expect("a valid test id")
}
