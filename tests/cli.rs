//! The `taskstore` command, run as a user runs it: the built binary
//! (`CARGO_BIN_EXE_taskstore`) on real stores, checked against what the
//! library's API says, beside writer processes (this test binary re-run as
//! its children, see `common::spawn`).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{Rng, spawn, touch, wait_for, wait_until};
use serde_json::{Value, json};
use taskstore::{
    FileStore, JsonLinesSink, ListQuery, ManualClock, NewTask, Task, TaskId, TaskStatus, TaskStore,
    TaskUpdate,
};
use time::OffsetDateTime;

// ---------------------------------------------------------------------------
// Running the command.

/// `taskstore args...` with no store in its environment but `store`, to
/// run or spawn.
fn taskstore(store: Option<&Path>, args: &[&str]) -> Command {
    let mut command = common::without_store_variables(env!("CARGO_BIN_EXE_taskstore"));
    command.args(args);
    if let Some(store) = store {
        command.env("TASKSTORE_STORE", store);
    }
    command
}

/// Runs `taskstore args...` with no store in its environment but `store`.
fn run(store: Option<&Path>, args: &[&str]) -> Output {
    taskstore(store, args)
        .output()
        .expect("run the taskstore binary")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("utf-8 stdout")
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).expect("utf-8 stderr")
}

/// Runs the command and fails the test, with its output, unless it exits
/// with `code`.
/// A temporary directory, and the path of a store in it (not made yet).
fn store_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    (tmp, dir)
}

fn run_expect(store: Option<&Path>, args: &[&str], code: i32) -> Output {
    let out = run(store, args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "taskstore {args:?}\nstdout:\n{}\nstderr:\n{}",
        stdout(&out),
        stderr(&out)
    );
    out
}

/// The JSON objects of a `--json` output, one per line.
fn json_lines(out: &Output) -> Vec<Value> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

// ---------------------------------------------------------------------------
// Stores to run it on.

fn open(store: &Path) -> FileStore {
    FileStore::open(store).expect("open the store")
}

/// A store with a task in every status; returns them.
fn store_with_tasks(dir: &Path) -> Vec<Task> {
    let store = open(dir);
    let mut tasks = Vec::new();
    for i in 0..3 {
        tasks.push(
            store
                .create(NewTask::new().status_message(format!("running {i}")))
                .unwrap(),
        );
    }
    let waiting = store.create(NewTask::new()).unwrap();
    let waiting = store
        .update(
            &waiting.id,
            TaskUpdate::new()
                .status(TaskStatus::InputRequired)
                .input_requests(json!({"q": "?"})),
        )
        .unwrap()
        .into_task();
    tasks.push(waiting);
    for (i, outcome) in ["complete", "fail", "cancel"].into_iter().enumerate() {
        let t = store.create(NewTask::new().metadata("n", i)).unwrap();
        let t = match outcome {
            "complete" => store.complete(&t.id, json!({"ok": i})),
            "fail" => store.fail(&t.id, json!({"err": i})),
            _ => store.cancel(&t.id, Some("stop".into())),
        }
        .unwrap()
        .into_task();
        tasks.push(t);
    }
    tasks
}

fn task_path(store: &Path, area: &str, id: &TaskId) -> PathBuf {
    store.join(area).join(format!("{id}.json"))
}

fn first(tasks: &[Task], status: TaskStatus) -> Task {
    tasks
        .iter()
        .find(|t| t.status == status)
        .expect("a task in that status")
        .clone()
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Every file under `dir` with its bytes (a symlink's target) and mode,
/// but the lock stripes' empty files (any handle, and a check, makes one
/// when it first takes its stripe): what a test compares to tell that
/// nothing changed.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u32)> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    files.insert(
        dir.to_owned(),
        (Vec::new(), fs::metadata(dir).unwrap().permissions().mode()),
    );
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let meta = fs::symlink_metadata(entry.path()).unwrap();
            let mode = meta.permissions().mode();
            let content = if meta.is_dir() {
                stack.push(entry.path());
                Vec::new()
            } else if meta.is_symlink() {
                fs::read_link(entry.path())
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else if d.ends_with("locks") && meta.len() == 0 && mode & 0o777 == 0o600 {
                continue;
            } else if meta.len() > 1 << 20 {
                // A sparse giant: its size and times stand for its bytes.
                format!(
                    "{} bytes, modified {:?}",
                    meta.len(),
                    meta.modified().unwrap()
                )
                .into_bytes()
            } else {
                fs::read(entry.path()).unwrap()
            };
            files.insert(entry.path(), (content, mode));
        }
    }
    files
}

/// Fails with the paths that differ, unless nothing did.
fn assert_unchanged(
    before: &BTreeMap<PathBuf, (Vec<u8>, u32)>,
    after: &BTreeMap<PathBuf, (Vec<u8>, u32)>,
    what: &str,
) {
    let differ: Vec<&PathBuf> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    assert!(differ.is_empty(), "{what}: changed {differ:?}");
}

// ---------------------------------------------------------------------------
// verify

#[test]
fn verify_finds_nothing_in_a_clean_store() {
    let (_tmp, dir) = store_dir();
    store_with_tasks(&dir);
    let before = snapshot(&dir);
    let out = run_expect(Some(&dir), &["verify"], 0);
    assert_eq!(stdout(&out), "");
    assert!(stderr(&out).contains("clean"), "{}", stderr(&out));
    assert_unchanged(&before, &snapshot(&dir), "verify changes nothing");
}

/// A stripe that no task in the store at `dir` (a file in any of its
/// directories, a temp file's task, an index entry's task) maps to, nor
/// the ids other damage plants by name.
fn unused_stripe(dir: &Path) -> usize {
    let mut used: Vec<usize> = ["a-directory", "huge", "notes", "deep"]
        .iter()
        .map(|id| common::stripe(id))
        .collect();
    for sub in ["active", "done", "tmp", "expiring"] {
        for entry in fs::read_dir(dir.join(sub)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let id = match sub {
                "tmp" => name.split('.').next().unwrap().to_owned(),
                "expiring" => name.splitn(3, '.').nth(2).unwrap_or("").to_owned(),
                _ => name.trim_end_matches(".json").to_owned(),
            };
            used.push(common::stripe(&id));
        }
    }
    (0..64).find(|s| !used.contains(s)).expect("a free stripe")
}

/// One kind of damage: how to plant it, and what verify must report.
struct Damage {
    name: &'static str,
    plant: fn(&Path, &[Task]) -> PathBuf,
    problem: &'static str,
    /// `ProblemKind::severity`'s code: `problem`, or `leftover` (a crashed
    /// writer's, which the next open removes: verify lists it and passes).
    severity: &'static str,
}

/// Every kind of damage verify detects, each planted in a fresh store.
const DAMAGE: &[Damage] = &[
    Damage {
        name: "a corrupt task file",
        plant: |dir, tasks| {
            let path = task_path(dir, "done", &first(tasks, TaskStatus::Completed).id);
            fs::write(&path, b"{\"format\":1,\"task\":{\"taskId\":").unwrap();
            path
        },
        problem: "corrupt",
        severity: "problem",
    },
    Damage {
        name: "a file that holds another task",
        plant: |dir, tasks| {
            let done = first(tasks, TaskStatus::Completed);
            let failed = first(tasks, TaskStatus::Failed);
            let path = task_path(dir, "done", &failed.id);
            fs::copy(task_path(dir, "done", &done.id), &path).unwrap();
            path
        },
        problem: "wrong_id",
        severity: "problem",
    },
    Damage {
        name: "an interrupted move",
        plant: |dir, tasks| {
            let id = first(tasks, TaskStatus::Cancelled).id;
            let path = task_path(dir, "active", &id);
            fs::rename(task_path(dir, "done", &id), &path).unwrap();
            path
        },
        problem: "interrupted_move",
        severity: "problem",
    },
    Damage {
        name: "a stale running copy beside the terminal one",
        plant: |dir, _| {
            let store = open(dir);
            let task = store.create(NewTask::new()).unwrap();
            let running = fs::read(task_path(dir, "active", &task.id)).unwrap();
            assert!(store.complete(&task.id, json!(1)).unwrap().is_applied());
            let path = task_path(dir, "active", &task.id);
            fs::write(&path, running).unwrap();
            chmod(&path, 0o600);
            path
        },
        problem: "stale_copy",
        severity: "leftover",
    },
    Damage {
        name: "a damaged stale copy",
        plant: |dir, tasks| {
            let path = task_path(dir, "active", &first(tasks, TaskStatus::Failed).id);
            fs::write(&path, b"garbage").unwrap();
            chmod(&path, 0o600);
            path
        },
        problem: "stale_copy",
        severity: "problem",
    },
    Damage {
        name: "a stale index entry",
        plant: |dir, tasks| {
            // An expiring/ entry that is no task's file (a crash between a
            // delete's steps leaves one).
            let t = first(tasks, TaskStatus::Working);
            let name = format!("{}.60000.{}", t.created_at.unix_timestamp_nanos(), t.id);
            let path = dir.join("expiring").join(name);
            fs::write(&path, b"{}").unwrap();
            chmod(&path, 0o600);
            path
        },
        problem: "stale_index_entry",
        severity: "problem",
    },
    Damage {
        name: "a missing index entry",
        plant: |dir, _| {
            let store = open(dir);
            let t = store
                .create(NewTask::new().ttl(Duration::from_secs(3_600)))
                .unwrap();
            assert!(store.complete(&t.id, json!(1)).unwrap().is_applied());
            let index = fs::read_dir(dir.join("expiring"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.to_str().unwrap().ends_with(&format!(".{}", t.id)))
                .expect("the finished task's index entry");
            fs::remove_file(index).unwrap();
            task_path(dir, "done", &t.id)
        },
        problem: "missing_index_entry",
        severity: "problem",
    },
    Damage {
        name: "a corrupt finished task with a TTL",
        plant: |dir, _| {
            // Damaged in place: its expiring/ entry is a hard link to it
            // (FORMAT.md), so the entry holds the same damaged bytes.
            let store = open(dir);
            let t = store
                .create(NewTask::new().ttl(Duration::from_secs(3_600)))
                .unwrap();
            assert!(store.complete(&t.id, json!(1)).unwrap().is_applied());
            let path = task_path(dir, "done", &t.id);
            fs::write(&path, b"{\"format\":1,\"task\":{\"taskId\":").unwrap();
            assert_eq!(
                fs::metadata(&path).unwrap().nlink(),
                2,
                "linked from expiring/"
            );
            path
        },
        problem: "corrupt",
        severity: "problem",
    },
    Damage {
        name: "a dead writer's temp file",
        plant: |dir, tasks| {
            let id = first(tasks, TaskStatus::Working).id;
            let path = dir.join("tmp").join(format!("{id}.999999.3.tmp"));
            fs::write(&path, b"{\"format\":1,\"ta").unwrap();
            path
        },
        problem: "dead_temp",
        severity: "leftover",
    },
    Damage {
        name: "a temp file whose stripe lock cannot be opened",
        plant: |dir, tasks| {
            // A directory where the stripe's lock file belongs: the lock
            // cannot be taken, so whether the temp file's writer is alive
            // cannot be told (the directory itself is a not_a_file).
            let id = first(tasks, TaskStatus::Working).id;
            let path = dir.join("tmp").join(format!("{id}.999999.5.tmp"));
            fs::write(&path, b"{\"format\":1,\"ta").unwrap();
            chmod(&path, 0o600);
            let lock = common::stripe_lock(dir, id.as_str());
            let _ = fs::remove_file(&lock);
            fs::create_dir(&lock).unwrap();
            chmod(&lock, 0o700);
            path
        },
        problem: "unreadable",
        severity: "problem",
    },
    Damage {
        name: "a foreign file among the tasks",
        plant: |dir, _| {
            let path = dir.join("active").join("notes.txt");
            fs::write(&path, b"mine").unwrap();
            path
        },
        problem: "foreign",
        severity: "problem",
    },
    Damage {
        name: "a foreign file in tmp/",
        plant: |dir, _| {
            let path = dir.join("tmp").join("scratch");
            fs::write(&path, b"mine").unwrap();
            path
        },
        problem: "foreign",
        severity: "problem",
    },
    Damage {
        name: "a foreign file at the root",
        plant: |dir, _| {
            let path = dir.join("README.txt");
            fs::write(&path, b"mine").unwrap();
            path
        },
        problem: "foreign",
        severity: "problem",
    },
    Damage {
        name: "a task file readable by others",
        plant: |dir, tasks| {
            let path = task_path(dir, "active", &first(tasks, TaskStatus::Working).id);
            chmod(&path, 0o644);
            path
        },
        problem: "mode",
        severity: "problem",
    },
    Damage {
        name: "a directory readable by others",
        plant: |dir, _| {
            let path = dir.join("done");
            chmod(&path, 0o755);
            path
        },
        problem: "mode",
        severity: "problem",
    },
    Damage {
        name: "a marker readable by others",
        plant: |dir, _| {
            let path = dir.join("taskstore.json");
            chmod(&path, 0o644);
            path
        },
        problem: "mode",
        severity: "problem",
    },
    Damage {
        name: "a symlink for a task file",
        plant: |dir, tasks| {
            let path = task_path(dir, "active", &first(tasks, TaskStatus::InputRequired).id);
            fs::remove_file(&path).unwrap();
            std::os::unix::fs::symlink("/etc/hostname", &path).unwrap();
            path
        },
        problem: "symlink",
        severity: "problem",
    },
    Damage {
        name: "a symlink for a lock file",
        plant: |dir, _| {
            // A stripe no task planted so far or later uses: a task whose
            // lock cannot be taken cannot be checked, which is not what
            // this damage is about.
            let path = dir
                .join("locks")
                .join(format!("{:02}.lock", unused_stripe(dir)));
            let _ = fs::remove_file(&path);
            std::os::unix::fs::symlink("/tmp", &path).unwrap();
            path
        },
        problem: "symlink",
        severity: "problem",
    },
    Damage {
        name: "a symlink for one of the store's directories",
        plant: |dir, _| {
            let path = dir.join("quarantine");
            fs::remove_dir(&path).unwrap();
            std::os::unix::fs::symlink("/tmp", &path).unwrap();
            path
        },
        problem: "symlink",
        severity: "problem",
    },
    Damage {
        name: "a missing directory",
        plant: |dir, _| {
            let path = dir.join("quarantine");
            fs::remove_dir(&path).unwrap();
            path
        },
        problem: "missing",
        severity: "problem",
    },
    Damage {
        name: "a missing marker",
        plant: |dir, _| {
            let path = dir.join("taskstore.json");
            fs::remove_file(&path).unwrap();
            path
        },
        problem: "missing",
        severity: "problem",
    },
    Damage {
        name: "an unreadable marker",
        plant: |dir, _| {
            let path = dir.join("taskstore.json");
            fs::write(&path, b"{\"format\":").unwrap();
            path
        },
        problem: "bad_marker",
        severity: "problem",
    },
    Damage {
        name: "a marker of a newer format",
        plant: |dir, _| {
            let path = dir.join("taskstore.json");
            fs::write(&path, b"{\"format\":9,\"kind\":\"taskstore\"}\n").unwrap();
            path
        },
        problem: "newer_format",
        severity: "problem",
    },
    Damage {
        name: "a task file of a newer format",
        plant: |dir, tasks| {
            let path = task_path(dir, "done", &first(tasks, TaskStatus::Completed).id);
            let bytes = fs::read(&path).unwrap();
            let newer =
                String::from_utf8(bytes)
                    .unwrap()
                    .replacen("{\"format\":1,", "{\"format\":2,", 1);
            fs::write(&path, newer).unwrap();
            path
        },
        problem: "newer_format",
        severity: "problem",
    },
    Damage {
        name: "a running task in done/",
        plant: |dir, tasks| {
            let id = first(tasks, TaskStatus::Working).id;
            let path = task_path(dir, "done", &id);
            fs::rename(task_path(dir, "active", &id), &path).unwrap();
            path
        },
        problem: "misplaced",
        severity: "problem",
    },
    Damage {
        name: "a task file larger than any store writes",
        plant: |dir, _| {
            // Sparse: 1 GiB and 1 MiB of nothing, refused before it is read.
            let path = dir.join("done").join("huge.json");
            let file = fs::File::create(&path).unwrap();
            file.set_len((1 << 30) + (1 << 20)).unwrap();
            chmod(&path, 0o600);
            path
        },
        problem: "too_large",
        severity: "problem",
    },
    Damage {
        name: "a file for one of the store's directories",
        plant: |dir, _| {
            let path = dir.join("tmp");
            fs::remove_dir(&path).unwrap();
            fs::write(&path, b"").unwrap();
            path
        },
        problem: "not_a_directory",
        severity: "problem",
    },
    Damage {
        name: "a directory for a task file",
        plant: |dir, _| {
            let path = dir.join("done").join("a-directory.json");
            fs::create_dir(&path).unwrap();
            path
        },
        problem: "not_a_file",
        severity: "problem",
    },
];

/// Every code `ProblemKind::code` gives.
const PROBLEM_CODES: [&str; 18] = [
    "mode",
    "symlink",
    "not_a_file",
    "not_a_directory",
    "foreign",
    "missing",
    "bad_marker",
    "newer_format",
    "corrupt",
    "wrong_id",
    "too_large",
    "misplaced",
    "interrupted_move",
    "stale_copy",
    "dead_temp",
    "stale_index_entry",
    "missing_index_entry",
    "unreadable",
];

#[test]
fn verify_reports_every_kind_of_damage_with_its_path() {
    let planted: std::collections::BTreeSet<&str> = DAMAGE.iter().map(|d| d.problem).collect();
    let unplanted: Vec<&str> = PROBLEM_CODES
        .into_iter()
        .filter(|code| !planted.contains(code))
        .collect();
    assert!(unplanted.is_empty(), "no damage plants {unplanted:?}");
    for damage in DAMAGE {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let tasks = store_with_tasks(&dir);
        let path = (damage.plant)(&dir, &tasks);
        let before = snapshot(&dir);
        // A leftover alone passes.
        let code = if damage.severity == "leftover" { 0 } else { 1 };
        let out = run_expect(Some(&dir), &["verify", "--json"], code);
        let problems = json_lines(&out);
        assert!(
            problems.iter().any(|p| p["problem"] == damage.problem
                && p["severity"] == damage.severity
                && p["path"] == path.to_str().unwrap()),
            "{}: expected {} ({}) at {}, got {problems:#?}",
            damage.name,
            damage.problem,
            damage.severity,
            path.display()
        );
        // The text form names the path too.
        let text = run_expect(Some(&dir), &["verify"], code);
        assert!(
            stdout(&text).contains(&format!("{}: ", path.display())),
            "{}: {}",
            damage.name,
            stdout(&text)
        );
        assert_unchanged(&before, &snapshot(&dir), damage.name);
    }
}

/// A cancel that fails says which task it could not cancel: the store's
/// error named only the lock file it could not open.
#[test]
fn a_cancel_that_fails_names_its_task() {
    let (_tmp, dir) = store_dir();
    let tasks = store_with_tasks(&dir);
    let id = first(&tasks, TaskStatus::Working).id;
    let lock = common::stripe_lock(&dir, id.as_str());
    let _ = fs::remove_file(&lock);
    fs::create_dir(&lock).unwrap();
    let out = run_expect(Some(&dir), &["cancel", id.as_str()], 1);
    let said = stderr(&out);
    assert!(
        said.contains(&format!("could not cancel task {id}: ")) && said.contains("lock"),
        "{said}"
    );
}

/// `sweep` counts the crashed writers' temp files its own open removed
/// (it said "cleaned 0 leftover(s)" with all of them gone: the open
/// cleans them before the sweep begins).
#[test]
fn sweep_counts_the_leftovers_its_open_cleaned() {
    let (_tmp, dir) = store_dir();
    let tasks = store_with_tasks(&dir);
    for (i, task) in tasks.iter().take(2).enumerate() {
        let temp = dir.join("tmp").join(format!("{}.999999.{i}.tmp", task.id));
        fs::write(&temp, b"{\"format\":1,\"task\":{").unwrap();
    }
    let out = run_expect(Some(&dir), &["sweep"], 0);
    assert!(
        stderr(&out).contains("cleaned 2 leftover(s) of crashed writers"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fs::read_dir(dir.join("tmp")).unwrap().count(), 0);
    let out = run_expect(Some(&dir), &["sweep"], 0);
    assert!(
        stderr(&out).contains("cleaned 0 leftover(s)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn verify_leaves_a_live_writers_temp_file_alone() {
    let (_tmp, dir) = store_dir();
    let tasks = store_with_tasks(&dir);
    let id = first(&tasks, TaskStatus::Working).id;
    let temp = dir.join("tmp").join(format!("{id}.999999.1.tmp"));
    fs::write(&temp, b"{\"format\":1,\"task\":{").unwrap();
    // A writer holds its task's stripe from creating its temp file until the
    // rename: this process plays that writer (the command runs in another
    // process, so this flock excludes it).
    let lock = common::open_lock_file(&common::stripe_lock(&dir, id.as_str()));
    lock.lock().unwrap();
    let out = run_expect(Some(&dir), &["verify"], 0);
    assert_eq!(stdout(&out), "", "a live writer's temp file is no problem");
    let out = run_expect(Some(&dir), &["repair", "--apply"], 0);
    assert!(
        temp.exists(),
        "repair leaves a live writer's temp file: {}",
        stdout(&out)
    );
    lock.unlock().unwrap();
    // Its writer gone, it is a leftover (listed; the next open removes it).
    let out = run_expect(Some(&dir), &["verify", "--json"], 0);
    assert_eq!(json_lines(&out)[0]["problem"], "dead_temp");
    assert_eq!(json_lines(&out)[0]["severity"], "leftover");
}

/// A task of a new store at `dir` in the middle of a batch of another
/// process, as a reap leaves it between its halves: the terminal version
/// written over its file in `active/`, then its name in `done/`, with the
/// batches lock held shared (the file returned holds it). The batch's
/// second half removes the name in `active/` (the path returned), then
/// lets the lock go.
fn a_batch_between_its_halves(dir: &Path) -> (TaskId, PathBuf, fs::File) {
    let store = open(dir);
    let id = store.create(NewTask::new()).unwrap().id;
    let mut failed = store.get(&id).unwrap().unwrap();
    drop(store);
    failed.status = TaskStatus::Failed;
    failed.error = Some(json!({"code": -1, "message": "orphaned"}));
    failed.revision += 1;
    let active = task_path(dir, "active", &id);
    let file: Value = serde_json::from_slice(&fs::read(&active).unwrap()).unwrap();
    let mut file = file.as_object().unwrap().clone();
    file.insert("task".into(), serde_json::to_value(&failed).unwrap());
    fs::write(&active, serde_json::to_vec(&file).unwrap()).unwrap();
    fs::hard_link(&active, task_path(dir, "done", &id)).unwrap();
    let lock = common::open_lock_file(&common::batches_lock(dir));
    lock.lock_shared().unwrap();
    (id, active, lock)
}

/// A batch of another process between its halves (a reap's terminal move,
/// the task's names in both areas, held here by hand with the batches lock
/// held shared, as a batch holds it): `verify --wait 0s` reports the move,
/// says a batch was under way (of the move alone, not of a corrupt file
/// beside it), and exits 1; `repair --apply --wait 0s`
/// says so too, leaves the move to the batch, and exits 1 (it exited 0,
/// though the store might still need repair); once the batch has
/// ended, `verify` finds nothing. (The
/// waiting itself: `paused_races::verify_beside_a_batch_between_its_halves_waits_for_it`.)
#[test]
fn verify_says_when_batches_were_under_way() {
    let (_tmp, dir) = store_dir();
    let (id, active, lock) = a_batch_between_its_halves(&dir);

    let out = run_expect(Some(&dir), &["verify", "--wait", "0s"], 1);
    assert!(
        stdout(&out).contains("interrupted"),
        "the move is seen: {}",
        stdout(&out)
    );
    // A problem no batch makes is not said to be under way.
    let garbage = dir.join("done").join("garbage.json");
    fs::write(&garbage, b"{ not json").unwrap();
    chmod(&garbage, 0o600);
    let json = run_expect(Some(&dir), &["verify", "--json", "--wait", "0s"], 1);
    let under_way: Vec<(String, bool)> = json_lines(&json)
        .iter()
        .map(|p| {
            let problem = p["problem"].as_str().unwrap().to_owned();
            (problem, p["underWay"].as_bool().unwrap())
        })
        .collect();
    assert_eq!(
        under_way,
        [
            ("interrupted_move".to_owned(), true),
            ("corrupt".to_owned(), false)
        ],
        "{}",
        stdout(&json)
    );
    fs::remove_file(&garbage).unwrap();
    assert!(
        stderr(&out).contains("still under way"),
        "and said to be a batch's: {}",
        stderr(&out)
    );
    // It exits 1: the store may still need repair (`repair --apply &&
    // start` must not start).
    let out = run_expect(Some(&dir), &["repair", "--apply", "--wait", "0s"], 1);
    assert!(stderr(&out).contains("still under way"), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("skipped") && active.exists(),
        "a move a batch may be making is not finished for it: {}",
        stdout(&out)
    );
    // The batch's second half, then its end.
    fs::remove_file(&active).unwrap();
    lock.unlock().unwrap();
    let out = run_expect(Some(&dir), &["verify"], 0);
    assert_eq!(stdout(&out), "");
    assert!(!stderr(&out).contains("under way"), "{}", stderr(&out));
    // And with the batch over, `--json` says so of a problem.
    chmod(&task_path(&dir, "done", &id), 0o644);
    let json = run_expect(Some(&dir), &["verify", "--json"], 1);
    assert_eq!(json_lines(&json)[0]["underWay"], false);
}

/// `verify` and `repair`, meeting what may be a batch of another process
/// between its halves, say on stderr that they wait for the batches under
/// way when the wait starts, and how long they wait at most; once the
/// batch ends they judge what it left (nothing). (They were silent for up
/// to `--wait`, and said so only once it ran out.)
#[test]
fn verify_and_repair_say_when_they_start_waiting_for_batches() {
    for args in [
        &["verify", "--wait", "5m"][..],
        &["repair", "--apply", "--wait", "5m"],
    ] {
        let (_tmp, dir) = store_dir();
        let (_, active, lock) = a_batch_between_its_halves(&dir);
        let mut child = taskstore(Some(&dir), args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut said = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut first = String::new();
        std::io::BufRead::read_line(&mut said, &mut first).unwrap();
        assert!(
            first.starts_with(
                "taskstore: waiting up to 5m for another process's batches or check under way"
            ) && first.contains(&common::batches_lock(&dir).display().to_string()),
            "{args:?}: {first}"
        );
        // The batch's second half, then its end: the wait ends with it.
        fs::remove_file(&active).unwrap();
        lock.unlock().unwrap();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut said, &mut rest).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {first}{rest}");
        assert_eq!(stdout(&out), "", "{args:?}: nothing to report");
        assert!(!rest.contains("still under way"), "{args:?}: {rest}");
    }
}

// ---------------------------------------------------------------------------
// repair

#[test]
fn repair_is_a_dry_run_by_default_and_apply_leaves_a_clean_store() {
    let (_tmp, dir) = store_dir();
    let tasks = store_with_tasks(&dir);
    // Every kind of damage that repair fixes, at once (those planted through
    // an open store first: opening a store resolves some damage itself).
    let fixable = [
        "a missing index entry",
        "a corrupt finished task with a TTL",
        "a corrupt task file",
        "an interrupted move",
        "a stale running copy beside the terminal one",
        "a damaged stale copy",
        "a dead writer's temp file",
        "a stale index entry",
        "a foreign file among the tasks",
        "a foreign file in tmp/",
        "a task file readable by others",
        "a directory readable by others",
        "a marker readable by others",
        "a symlink for a task file",
        "a symlink for a lock file",
        "a directory for a task file",
    ];
    for name in fixable {
        let damage = DAMAGE.iter().find(|d| d.name == name).unwrap();
        (damage.plant)(&dir, &tasks);
    }
    let out = run_expect(Some(&dir), &["verify", "--json"], 1);
    let problems = json_lines(&out);
    assert!(
        problems.len() >= fixable.len(),
        "{problems:#?}\n{}",
        stderr(&out)
    );

    let before = snapshot(&dir);
    for args in [&["repair"][..], &["repair", "--dry-run"]] {
        let out = run_expect(Some(&dir), args, 0);
        assert!(stdout(&out).contains(": would "), "{}", stdout(&out));
        assert!(!stdout(&out).contains("left alone"), "{}", stdout(&out));
        assert!(
            stderr(&out).contains("nothing was changed"),
            "{}",
            stderr(&out)
        );
        assert_unchanged(&before, &snapshot(&dir), "a dry run changes nothing");
    }

    let out = run_expect(Some(&dir), &["repair", "--apply"], 0);
    assert!(!stdout(&out).contains("FAILED"), "{}", stdout(&out));
    let out = run_expect(Some(&dir), &["verify"], 0);
    assert_eq!(stdout(&out), "");

    // What readers saw is what they see: the repairs changed no readable
    // task (the corrupt, damaged and symlinked files are set aside).
    let store = open(&dir);
    let cancelled = first(&tasks, TaskStatus::Cancelled);
    assert_eq!(store.get(&cancelled.id).unwrap(), Some(cancelled.clone()));
    assert!(task_path(&dir, "done", &cancelled.id).exists());
    let failed = first(&tasks, TaskStatus::Failed);
    assert_eq!(store.get(&failed.id).unwrap(), Some(failed));
    assert_eq!(
        store.list(&ListQuery::active()).unwrap().tasks.len(),
        3,
        "the running tasks but the symlinked one"
    );
    assert!(
        fs::read_dir(dir.join("quarantine")).unwrap().count() >= 5,
        "unreadable and foreign files are set aside, not deleted"
    );
}

/// What only a person can decide is left as it is, said, and makes
/// `repair --apply` exit 1: the store still has a problem.
#[test]
fn repair_leaves_alone_what_only_a_person_can_decide() {
    for name in [
        "a task file of a newer format",
        "a task file larger than any store writes",
        "a running task in done/",
        "a foreign file at the root",
    ] {
        let damage = DAMAGE.iter().find(|d| d.name == name).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let tasks = store_with_tasks(&dir);
        let path = (damage.plant)(&dir, &tasks);
        let before = snapshot(&dir);
        // The dry run plans; the real run leaves the store with a problem,
        // and says so by its status (`repair --apply && start` must not
        // start: it exited 0).
        run_expect(Some(&dir), &["repair"], 0);
        // `verify` does not send the reader to a repair that can fix none
        // of it (it always ended "`taskstore repair` says what it can
        // fix").
        let out = run_expect(Some(&dir), &["verify"], 1);
        assert!(
            stderr(&out).contains("1 problem(s)")
                && stderr(&out).contains("none of them a repair can fix"),
            "{name}: {}",
            stderr(&out)
        );
        let out = run_expect(Some(&dir), &["repair", "--apply"], 1);
        assert!(
            stdout(&out).contains(&format!("{}: ", path.display()))
                && stdout(&out).contains("left alone"),
            "{name}: {}",
            stdout(&out)
        );
        assert_unchanged(&before, &snapshot(&dir), name);
    }
    // One it can fix beside one it cannot: it says how many (and a
    // leftover apart).
    let (_tmp, dir) = store_dir();
    let tasks = store_with_tasks(&dir);
    for name in [
        "a foreign file at the root",
        "a task file readable by others",
        "a dead writer's temp file",
    ] {
        let damage = DAMAGE.iter().find(|d| d.name == name).unwrap();
        (damage.plant)(&dir, &tasks);
    }
    let out = run_expect(Some(&dir), &["verify"], 1);
    assert!(
        stderr(&out).contains("2 problem(s)")
            && stderr(&out).contains("`taskstore repair --apply` fixes 1 of them")
            && stderr(&out).contains("1 leftover(s)"),
        "{}",
        stderr(&out)
    );
}

/// A repair skipped for a full `quarantine/` leaves the unreadable file in
/// place: `repair --apply` says so and exits 1, as `verify` still does.
/// (It exited 0: only what it left alone or failed counted.)
#[test]
fn repair_exits_1_while_a_full_quarantine_keeps_a_problem_in_place() {
    let (_tmp, dir) = store_dir();
    store_with_tasks(&dir);
    for i in 0..1_000 {
        fs::write(dir.join("quarantine").join(format!("old-{i}")), b"x").unwrap();
    }
    let bad = task_path(&dir, "active", &TaskId::new());
    fs::write(&bad, b"{").unwrap();
    let stray = dir.join("active").join("stray.txt");
    fs::write(&stray, b"x").unwrap();
    let out = run_expect(Some(&dir), &["repair", "--apply"], 1);
    assert!(
        stdout(&out).contains("skipped") && stderr(&out).contains("2 remain"),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    // Each says why (a foreign name said "gone, the quarantine is full, or
    // the store is read-only", whichever it was).
    assert!(
        stdout(&out).contains(&format!(
            "{}: not a name this store uses: set it aside into quarantine/: skipped (the quarantine is full (1000 entries))",
            stray.display()
        )),
        "{}",
        stdout(&out)
    );
    assert!(bad.exists() && stray.exists(), "left in place");
    run_expect(Some(&dir), &["verify"], 1);
}

/// A store marker that does not read (corrupt, a symlink, a directory)
/// is left alone by `repair`, which says how to fix it, and the advice
/// works: once it is removed, the next open (`show`) writes it again and
/// `verify` finds the store clean. (It said "the store's layout itself is
/// wrong; fix it by hand".)
#[test]
fn a_broken_marker_is_left_alone_with_how_to_fix_it() {
    let unreadable = DAMAGE
        .iter()
        .find(|d| d.name == "an unreadable marker")
        .unwrap();
    let broken = [
        Damage {
            name: "a corrupt marker",
            plant: unreadable.plant,
            problem: unreadable.problem,
            severity: "problem",
        },
        Damage {
            name: "a symlink for the marker",
            plant: |dir, _| {
                let path = dir.join("taskstore.json");
                fs::remove_file(&path).unwrap();
                std::os::unix::fs::symlink("/etc/hostname", &path).unwrap();
                path
            },
            problem: "symlink",
            severity: "problem",
        },
        Damage {
            name: "a directory for the marker",
            plant: |dir, _| {
                let path = dir.join("taskstore.json");
                fs::remove_file(&path).unwrap();
                fs::create_dir(&path).unwrap();
                path
            },
            problem: "not_a_file",
            severity: "problem",
        },
    ];
    for damage in &broken {
        let what = damage.name;
        let (_tmp, dir) = store_dir();
        let tasks = store_with_tasks(&dir);
        let marker = (damage.plant)(&dir, &tasks);
        let out = run_expect(Some(&dir), &["verify", "--json"], 1);
        assert_eq!(json_lines(&out)[0]["problem"], damage.problem, "{what}");
        let out = run_expect(Some(&dir), &["repair", "--apply"], 1);
        let said = stdout(&out);
        let line = said
            .lines()
            .find(|l| l.starts_with(&format!("{}: ", marker.display())))
            .unwrap_or_else(|| panic!("{what}: no line for the marker:\n{said}"));
        assert!(
            line.contains("left alone: remove it: the next open of the store")
                && !line.contains("by hand"),
            "{what}: {line}"
        );
        // The advice, followed.
        if marker.is_dir() && !marker.is_symlink() {
            fs::remove_dir(&marker).unwrap();
        } else {
            fs::remove_file(&marker).unwrap();
        }
        run_expect(Some(&dir), &["show", tasks[0].id.as_str()], 0);
        assert!(marker.is_file(), "{what}: the open wrote the marker again");
        run_expect(Some(&dir), &["verify"], 0);
    }
}

/// Setting a task file aside is one rule, whoever does it: a listing that
/// meets a corrupt finished task (the store's own quarantine) takes its
/// `expiring/` entry with it, as `repair` does, and `verify` then finds the
/// store clean. The listing says where it went, and the dry run before it
/// what the real run does. (The listing said "(setAside)", the dry run
/// "left in place".)
#[test]
fn a_listing_sets_a_corrupt_task_aside_with_its_index_entry() {
    let (_tmp, dir) = store_dir();
    let tasks = store_with_tasks(&dir);
    let damage = DAMAGE
        .iter()
        .find(|d| d.name == "a corrupt finished task with a TTL")
        .unwrap();
    let path = (damage.plant)(&dir, &tasks);
    let out = run_expect(Some(&dir), &["sweep", "--dry-run"], 0);
    assert!(
        stderr(&out).contains("the real run sets it aside into quarantine/"),
        "the dry run says what the real run does: {}",
        stderr(&out)
    );
    // A task the listing could not show: it says so, and exits 1 (it
    // exited 0: a script counting the lines read a short count as whole).
    let out = run_expect(Some(&dir), &["list", "--json"], 1);
    assert_eq!(json_lines(&out).len(), tasks.len(), "the others listed");
    let quarantine = dir.join("quarantine");
    assert!(
        stderr(&out).contains(&format!("skipped {}: ", path.display()))
            && stderr(&out).contains(&format!("(set aside into {}", quarantine.display())),
        "{}",
        stderr(&out)
    );
    assert!(!path.exists(), "set aside by the listing");
    let out = run_expect(Some(&dir), &["verify"], 0);
    assert_eq!(stdout(&out), "");
    // A name that is no task's is no task missed.
    fs::write(dir.join("active").join("notes.txt"), b"x").unwrap();
    let out = run_expect(Some(&dir), &["list", "--json"], 0);
    assert!(stderr(&out).contains("notes.txt"), "{}", stderr(&out));
}

/// A command that opens the store (a read: `show`) and so sets aside a
/// foreign entry of `tmp/` (the open's clean-up does) says so on stderr,
/// once, as a listing says so of a foreign name in `active/`: where, why
/// and where it went. No task was missed: it exits 0. (It set the entry
/// aside without a word.)
#[test]
fn a_read_reports_a_foreign_entry_of_tmp_it_sets_aside() {
    let (_tmp, dir) = store_dir();
    let tasks = store_with_tasks(&dir);
    let quarantine = dir.join("quarantine");
    let foreign = |name: &str| {
        let path = dir.join("tmp").join(name);
        fs::write(&path, b"mine").unwrap();
        path
    };
    let said = |out: &Output, path: &Path| {
        let text = stderr(out);
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(&path.display().to_string()))
            .collect();
        assert_eq!(lines.len(), 1, "said once: {text}");
        assert!(
            lines[0].starts_with(&format!("taskstore: skipped {}: ", path.display()))
                && lines[0].contains(&format!("(set aside into {}", quarantine.display())),
            "{text}"
        );
        assert!(!path.exists(), "set aside");
    };
    let scratch = foreign("scratch");
    let out = run_expect(Some(&dir), &["show", tasks[0].id.as_str()], 0);
    said(&out, &scratch);
    // As a listing says so of a foreign name in active/, and a sweep.
    let notes = dir.join("active").join("notes.txt");
    fs::write(&notes, b"mine").unwrap();
    let scratch = foreign("scratch");
    let out = run_expect(Some(&dir), &["list", "--json"], 0);
    said(&out, &scratch);
    said(&out, &notes);
    let scratch = foreign("scratch");
    said(&run_expect(Some(&dir), &["sweep"], 0), &scratch);
}

// ---------------------------------------------------------------------------
// stats, list, show: against the API

/// A store with a known history: finished tasks that took 1 s to 10 s (a
/// third of them with a day's TTL, so linked into `expiring/`), one expired
/// task, one orphan (its lease lapsed an hour ago), owners A and B.
fn store_with_history(dir: &Path) -> ManualClock {
    let start = OffsetDateTime::now_utc() - time::Duration::hours(2);
    let clock = ManualClock::new(start);
    let handle = |owner: &str| {
        FileStore::builder(dir)
            .instance_id(owner)
            .clock(Arc::new(clock.clone()))
            .open()
            .unwrap()
    };
    let (a, b) = (handle("A"), handle("B"));
    for i in 1..=10u64 {
        let store = if i.is_multiple_of(2) { &a } else { &b };
        let new = if i.is_multiple_of(3) {
            NewTask::new().ttl(Duration::from_secs(86_400))
        } else {
            NewTask::new()
        };
        let t = store.create(new).unwrap();
        clock.advance(Duration::from_secs(i));
        let finished = if i.is_multiple_of(4) {
            store.fail(&t.id, json!("no"))
        } else {
            store.complete(&t.id, json!(i))
        };
        assert!(finished.unwrap().is_applied());
    }
    // Expired by now (1 min TTL, two hours ago).
    a.create(NewTask::new().ttl(Duration::from_secs(60)))
        .unwrap();
    // An orphan: its 30 s lease lapsed long ago.
    b.create(NewTask::new().status_message("abandoned"))
        .unwrap();
    clock.advance(Duration::from_secs(30 * 60));
    a.create(NewTask::new().status_message("older")).unwrap();
    clock
}

#[test]
fn stats_agree_with_the_api() {
    let (_tmp, dir) = store_dir();
    store_with_history(&dir);
    // A live handle keeps renewing one task: running, not an orphan.
    let live = open(&dir);
    let fresh = live.create(NewTask::new()).unwrap();

    let before = snapshot(&dir);
    let out = run_expect(Some(&dir), &["stats", "--json"], 0);
    assert_unchanged(&before, &snapshot(&dir), "stats changes nothing");
    let stats: Value = serde_json::from_str(&stdout(&out)).unwrap();

    let api = open(&dir);
    let now = OffsetDateTime::now_utc();
    // What the store holds, as stats read it: a listing would delete the
    // expired task it met.
    let all: Vec<Task> = api
        .stored()
        .unwrap()
        .tasks
        .into_iter()
        .filter(|t| !t.is_expired_at(now))
        .collect();
    assert_eq!(stats["tasks"], all.len());
    for status in [
        "working",
        "input_required",
        "completed",
        "failed",
        "cancelled",
    ] {
        let n = all
            .iter()
            .filter(|t| t.status.to_string() == status)
            .count();
        assert_eq!(stats["byStatus"][status], n, "{status}");
    }
    assert_eq!(stats["expiredUnswept"], 1);
    assert_eq!(
        stats["active"],
        all.iter().filter(|t| !t.is_terminal()).count()
    );
    let orphans: Vec<&Task> = all.iter().filter(|t| t.is_orphan_at(now)).collect();
    assert_eq!(orphans.len(), 2, "the abandoned task and the older one");
    assert_eq!(stats["orphans"], orphans.len());
    let oldest = all
        .iter()
        .filter(|t| !t.is_terminal())
        .min_by_key(|t| t.created_at)
        .unwrap();
    assert_eq!(stats["oldestActive"]["taskId"], oldest.id.as_str());
    // Finished tasks took 1 s .. 10 s: nearest-rank p50 is 5 s, p95 10 s.
    assert_eq!(stats["finished"], 10);
    assert_eq!(
        stats["finishMs"],
        json!({"p50": 5_000, "p95": 10_000, "max": 10_000})
    );
    assert_eq!(stats["successRate"], json!(0.8));
    let files = fs::read_dir(dir.join("active")).unwrap().count()
        + fs::read_dir(dir.join("done")).unwrap().count();
    assert_eq!(stats["disk"]["taskFiles"], files);
    assert_eq!(stats["disk"]["quarantined"], 0);
    // On disk: the blocks allocated, each inode once, as du counts them
    // (the expiring/ entries are other names of task files)...
    let du = Command::new("du")
        .args(["-s", "--block-size=1"])
        .arg(&dir)
        .output()
        .expect("run du");
    assert!(du.status.success(), "{}", stderr(&du));
    let du: u64 = stdout(&du)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("du's first field");
    assert_eq!(fs::read_dir(dir.join("expiring")).unwrap().count(), 3);
    assert_eq!(stats["disk"]["allocatedBytes"], du, "{stats:#}");
    // ... and the files' sizes, which for small tasks are far less.
    let mut sizes = fs::metadata(dir.join("taskstore.json")).unwrap().len();
    for sub in ["active", "done", "tmp", "quarantine"] {
        for entry in fs::read_dir(dir.join(sub)).unwrap() {
            sizes += entry.unwrap().metadata().unwrap().len();
        }
    }
    assert_eq!(stats["disk"]["fileBytes"], sizes, "{stats:#}");
    assert!(du > sizes, "du {du}, sizes {sizes}");
    drop(fresh);

    let text = run_expect(Some(&dir), &["stats"], 0);
    assert!(
        stdout(&text).contains("success rate    80.0%"),
        "{}",
        stdout(&text)
    );
    let on_disk = stdout(&text)
        .lines()
        .find(|l| l.starts_with("on disk"))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(
        on_disk.contains(" allocated (") && on_disk.contains(" in files: "),
        "{}",
        stdout(&text)
    );
}

/// `stats` tells a name that is no task file's (a stray file, a
/// directory) from a task file it cannot read: the first are `foreign`,
/// outside the task files' count and bytes, the second `unreadable`.
/// (Every name in `active/` or `done/` counted as a task file, and a
/// foreign one as an unreadable task file.)
#[test]
fn stats_tell_foreign_names_from_unreadable_task_files() {
    let (_tmp, dir) = store_dir();
    let tasks = store_with_tasks(&dir);
    let corrupt = task_path(&dir, "active", &first(&tasks, TaskStatus::Working).id);
    fs::write(&corrupt, b"{ not json").unwrap();
    fs::write(dir.join("active").join("notes.txt"), b"twelve bytes").unwrap();
    fs::create_dir(dir.join("done").join("backup")).unwrap();
    let out = run_expect(Some(&dir), &["stats", "--json"], 0);
    let stats: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(stats["unreadable"], 1, "{stats:#}");
    assert_eq!(stats["foreign"], 2, "{stats:#}");
    let task_files = fs::read_dir(dir.join("active")).unwrap().count()
        + fs::read_dir(dir.join("done")).unwrap().count()
        - 2;
    assert_eq!(stats["disk"]["taskFiles"], task_files, "{stats:#}");
    let text = stdout(&run_expect(Some(&dir), &["stats"], 0));
    assert!(text.contains("unreadable      1 task files"), "{text}");
    assert!(text.contains("foreign         2 names"), "{text}");
    // The dry runs name both on stderr (and what the real passes do with
    // each).
    for command in ["sweep", "reap"] {
        let out = run_expect(Some(&dir), &[command, "--dry-run"], 0);
        for name in ["notes.txt", "backup"] {
            assert!(stderr(&out).contains(name), "{command}: {}", stderr(&out));
        }
    }
}

#[test]
fn list_json_is_the_api_listing() {
    let (_tmp, dir) = store_dir();
    store_with_history(&dir);
    let api = open(&dir);
    let parse = |out: &Output| -> Vec<Task> {
        json_lines(out)
            .into_iter()
            .map(|v| serde_json::from_value(v).unwrap())
            .collect()
    };
    let all = api.list(&ListQuery::all()).unwrap().tasks;
    assert_eq!(parse(&run_expect(Some(&dir), &["list", "--json"], 0)), all);
    assert_eq!(
        parse(&run_expect(Some(&dir), &["list", "--json", "--active"], 0)),
        api.list(&ListQuery::active()).unwrap().tasks
    );
    assert_eq!(
        parse(&run_expect(
            Some(&dir),
            &["list", "--json", "--status", "failed"],
            0
        )),
        api.list(&ListQuery::all().status(TaskStatus::Failed))
            .unwrap()
            .tasks
    );
    let owned_by_a: Vec<Task> = all
        .iter()
        .filter(|t| t.owner.as_deref() == Some("A"))
        .cloned()
        .collect();
    assert_eq!(
        parse(&run_expect(
            Some(&dir),
            &["list", "--json", "--owner", "A"],
            0
        )),
        owned_by_a
    );
    let old: Vec<Task> = all
        .iter()
        .filter(|t| OffsetDateTime::now_utc() - t.created_at >= time::Duration::minutes(100))
        .cloned()
        .collect();
    assert_eq!(
        parse(&run_expect(
            Some(&dir),
            &["list", "--json", "--older-than", "100m"],
            0
        )),
        old
    );
    assert!(old.len() < all.len(), "the youngest task is younger");

    // Pages: the cursor goes to stderr, and the pages join up.
    for filter in [&[][..], &["--owner", "B"]] {
        let mut joined = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut args = vec!["list", "--json", "--limit", "3"];
            args.extend_from_slice(filter);
            if let Some(a) = &after {
                args.extend_from_slice(&["--after", a]);
            }
            let out = run_expect(Some(&dir), &args, 0);
            let page = parse(&out);
            assert!(page.len() <= 3);
            joined.extend(page);
            after = stderr(&out)
                .lines()
                .find_map(|l| l.strip_prefix("next cursor: "))
                .map(str::to_owned);
            if after.is_none() {
                break;
            }
        }
        let expected: Vec<Task> = all
            .iter()
            .filter(|t| filter.is_empty() || t.owner.as_deref() == Some("B"))
            .cloned()
            .collect();
        assert_eq!(joined, expected, "{filter:?}");
    }

    // The table has a header and a row per task.
    let table = stdout(&run_expect(Some(&dir), &["list"], 0));
    assert!(table.starts_with("ID"), "{table}");
    assert_eq!(table.lines().count(), all.len() + 1);

    // show: the task as JSON.
    let task = &all[0];
    let shown: Task = serde_json::from_str(&stdout(&run_expect(
        Some(&dir),
        &["show", task.id.as_str()],
        0,
    )))
    .unwrap();
    assert_eq!(&shown, task);
    let missing = run_expect(Some(&dir), &["show", "no-such-task"], 1);
    assert!(
        stderr(&missing).contains("no-such-task"),
        "{}",
        stderr(&missing)
    );
}

// ---------------------------------------------------------------------------
// sweep, reap

/// A handle on `dir` of an instance whose clock reads an hour ago: the
/// tasks it makes, with a short TTL or lease, are expired or orphaned now.
fn gone_an_hour_ago(dir: &Path) -> FileStore {
    let past = OffsetDateTime::now_utc() - time::Duration::hours(1);
    FileStore::builder(dir)
        .instance_id("gone")
        .clock(Arc::new(ManualClock::new(past)))
        .open()
        .unwrap()
}

/// A dry run changes nothing even where opening a handle would: a crashed
/// writer's temp file stays (a handle's open removes it), and so does an
/// unreadable task file (a listing sets it aside); the dry run reports it.
/// (Dry runs opened a handle and listed, and said "nothing was changed".)
#[test]
fn dry_runs_leave_what_a_handle_would_tidy_as_it_is() {
    let (_tmp, dir) = store_dir();
    let old = gone_an_hour_ago(&dir);
    let expired = old
        .create(NewTask::new().ttl(Duration::from_secs(60)))
        .unwrap();
    let orphan = old.create(NewTask::new()).unwrap();
    drop(old);
    let name = format!("{}.json", orphan.id);
    fs::copy(
        dir.join("active").join(&name),
        dir.join("tmp")
            .join(format!("{}.99999999.1.tmp", orphan.id)),
    )
    .unwrap();
    fs::write(dir.join("active").join("bad.json"), b"{\"format\":1,").unwrap();
    let before = snapshot(&dir);
    let out = run_expect(Some(&dir), &["sweep", "--dry-run"], 0);
    assert!(
        stdout(&out).contains(expired.id.as_str()),
        "{}",
        stdout(&out)
    );
    assert!(stderr(&out).contains("bad.json"), "{}", stderr(&out));
    let out = run_expect(Some(&dir), &["reap", "--dry-run"], 0);
    assert!(
        stdout(&out).contains(&format!("would reap {}", orphan.id)),
        "{}",
        stdout(&out)
    );
    assert!(stderr(&out).contains("bad.json"), "{}", stderr(&out));
    assert_unchanged(&before, &snapshot(&dir), "dry runs change nothing");
}

/// A check (`stats`, `verify`, `repair` without `--apply`) or a dry run
/// holds the handles lock shared, as a handle does, so that an open
/// meanwhile knows it is not alone: on a store that lacks the lock's file
/// it makes it, changes nothing else, and its help says so. (Their help
/// said they change nothing.)
#[test]
fn checks_and_dry_runs_make_the_lock_file_their_help_names_and_nothing_else() {
    let (_tmp, dir) = store_dir();
    store_with_tasks(&dir);
    let lock = dir.join("locks").join("handles.lock");
    for args in [
        &["stats"][..],
        &["verify"],
        &["repair"],
        &["sweep", "--dry-run"],
        &["reap", "--dry-run"],
    ] {
        fs::remove_file(&lock).unwrap();
        // Without the lock stripes' empty files, which any handle makes.
        let before = snapshot(&dir);
        run_expect(Some(&dir), args, 0);
        assert!(lock.exists(), "taskstore {args:?} made the lock file");
        assert_unchanged(&before, &snapshot(&dir), &format!("taskstore {args:?}"));
        let help = stdout(&run_expect(None, &[args[0], "--help"], 0));
        assert!(
            help.contains("locks/handles.lock"),
            "taskstore {} --help:\n{help}",
            args[0]
        );
    }
}

/// Makes a task with `message` in a store at `dir`, and checks that
/// `list`, `list --json` and `show` print none of the characters `shown`
/// refuses (`shown(c)` true for a character that may be printed as it is)
/// and that the JSON ones read back `message`: the table, for the caller
/// to check further.
fn escaped_everywhere(dir: &Path, message: &str, shown: impl Fn(char) -> bool) -> String {
    let task = open(dir)
        .create(NewTask::new().status_message(message))
        .unwrap();
    let clean = |out: &Output| {
        let text = String::from_utf8(out.stdout.clone()).unwrap();
        assert!(text.chars().all(&shown), "{text:?}");
        text
    };
    let table = clean(&run_expect(Some(dir), &["list"], 0));
    let out = run_expect(Some(dir), &["list", "--json"], 0);
    clean(&out);
    assert_eq!(json_lines(&out)[0]["statusMessage"], message);
    let out = run_expect(Some(dir), &["show", task.id.as_str()], 0);
    let shown: Value = serde_json::from_str(&clean(&out)).unwrap();
    assert_eq!(shown["statusMessage"], message);
    table
}

/// Task data reaches a terminal as text: a status message or an owner
/// holding escape sequences, a bell, DEL, a C1 control or a newline is
/// printed with them escaped (`\u001b`), in the table and in JSON, which
/// still reads back the same value; a newline cannot forge a row. (They
/// were printed raw.)
#[test]
fn task_data_never_reaches_the_terminal_as_control_characters() {
    let (_tmp, dir) = store_dir();
    let message = "hi \u{1b}]0;pwned\u{7}\u{1b}[31mred\u{7f}\u{9b}2J\nforged row";
    let table = escaped_everywhere(&dir, message, |c| !c.is_control() || c == '\n');
    assert_eq!(table.lines().count(), 2, "a header and one row: {table}");
    assert!(table.contains("\\u001b]0;pwned"), "{table}");
}

/// Task data and names cannot reorder what a terminal shows: a Unicode
/// bidirectional control (U+202E RIGHT-TO-LEFT OVERRIDE, U+2066 to
/// U+2069 the isolates, the marks) in a status message or a file name is
/// printed escaped, in the table and in JSON, which still reads back the
/// same value. (They were printed as they are: an owner could make a row
/// read as another.)
#[test]
fn bidirectional_controls_are_escaped() {
    let (_tmp, dir) = store_dir();
    let bidi = [
        '\u{202e}', '\u{202c}', '\u{2066}', '\u{2069}', '\u{200f}', '\u{61c}',
    ];
    let message = "ok \u{202e}deliaf\u{202c} \u{2066}x\u{2069} \u{200f}\u{61c}";
    let table = escaped_everywhere(&dir, message, |c| !bidi.contains(&c));
    assert!(table.contains("\\u202edeliaf\\u202c"), "{table}");
    fs::write(dir.join("active").join("a\u{202e}nosj.x"), b"x").unwrap();
    let out = run_expect(Some(&dir), &["verify"], 1);
    let text = stdout(&out);
    assert!(!text.contains('\u{202e}'), "{text:?}");
    assert!(text.contains("a\\u202enosj.x"), "{text}");
}

/// A file name or a store path that is not UTF-8 is reported, lossily, as
/// JSON text must be: `verify --json` lists the problem and exits 1, and
/// `stats` works on such a store. (Both panicked: exit 101.)
#[test]
fn paths_that_are_not_utf8_are_reported_not_a_panic() {
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(std::ffi::OsStr::from_bytes(b"store-\xff"));
    open(&dir).create(NewTask::new()).unwrap();
    let stray = dir
        .join("active")
        .join(std::ffi::OsStr::from_bytes(b"\xff.json"));
    fs::write(&stray, b"{}").unwrap();
    let out = run_expect(Some(&dir), &["verify", "--json"], 1);
    let problems = json_lines(&out);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0]["path"]
            .as_str()
            .unwrap()
            .ends_with("\u{fffd}.json"),
        "{problems:?}"
    );
    fs::remove_file(&stray).unwrap();
    for args in [&["stats"][..], &["stats", "--json"][..]] {
        run_expect(Some(&dir), args, 0);
    }
}

/// A newline in a path (a foreign file's name, which is just what verify
/// reports, or the store's own path) never splits a line of the plain
/// output into one that reads as another problem or figure. (It forged a
/// `verify` and `repair` line, and split `stats`'s store line.)
#[test]
fn a_newline_in_a_path_forges_no_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store\nFORGED store line");
    open(&dir).create(NewTask::new()).unwrap();
    fs::write(
        dir.join("active")
            .join("x\nFORGED: mode 0644, expected 0600"),
        b"x",
    )
    .unwrap();
    for (args, code) in [
        (&["verify"][..], 1),
        (&["repair"][..], 0),
        (&["stats"][..], 0),
    ] {
        let out = run_expect(Some(&dir), args, code);
        let text = stdout(&out);
        assert!(
            !text.lines().any(|l| l.starts_with("FORGED")),
            "{args:?}:\n{text}"
        );
        assert!(
            text.contains("\\u000aFORGED"),
            "{args:?} shows the newline escaped:\n{text}"
        );
    }
}

#[test]
fn sweep_and_reap_dry_runs_list_what_would_happen() {
    let (_tmp, dir) = store_dir();
    let old = gone_an_hour_ago(&dir);
    let expired = old
        .create(NewTask::new().ttl(Duration::from_secs(60)))
        .unwrap();
    let orphan = old.create(NewTask::new()).unwrap();
    let resumable = old
        .create(NewTask::new().resumable("report", json!({"q": 3})))
        .unwrap();
    drop(old);
    let live = open(&dir).create(NewTask::new()).unwrap();

    let before = snapshot(&dir);
    let out = run_expect(Some(&dir), &["sweep", "--dry-run"], 0);
    assert_eq!(stdout(&out).lines().count(), 1, "{}", stdout(&out));
    assert!(stdout(&out).contains(expired.id.as_str()));
    // The resumable orphan's lease lapsed an hour ago, but a service may
    // give it a longer claim grace: with 2 h it waits for a claim.
    let out = run_expect(Some(&dir), &["reap", "--dry-run", "--claim-grace", "2h"], 0);
    let text = stdout(&out);
    assert!(
        text.contains(&format!("would reap {}", orphan.id)),
        "{text}"
    );
    assert!(
        text.contains(&format!("would not reap {}", resumable.id)) && text.contains("claim grace"),
        "{text}"
    );
    assert!(!text.contains(live.id.as_str()), "{text}");
    assert_unchanged(&before, &snapshot(&dir), "dry runs change nothing");

    // Before the reap, which would delete the expired task it meets (its
    // lease lapsed too).
    let out = run_expect(Some(&dir), &["sweep"], 0);
    assert!(
        stderr(&out).contains("deleted 1 expired task(s)"),
        "{}",
        stderr(&out)
    );
    assert!(!task_path(&dir, "active", &expired.id).exists());
    let out = run_expect(Some(&dir), &["reap", "--claim-grace", "2h"], 0);
    assert!(
        stdout(&out).contains(orphan.id.as_str()),
        "{}",
        stdout(&out)
    );
    let api = open(&dir);
    assert_eq!(
        api.get(&orphan.id).unwrap().unwrap().status,
        TaskStatus::Failed
    );
    assert_eq!(
        api.get(&resumable.id).unwrap().unwrap().status,
        TaskStatus::Working
    );
    // With the default grace (one lease, 30 s) it is reaped too.
    run_expect(Some(&dir), &["reap"], 0);
    assert_eq!(
        api.get(&resumable.id).unwrap().unwrap().status,
        TaskStatus::Failed
    );
    assert_eq!(
        api.get(&live.id).unwrap().unwrap().status,
        TaskStatus::Working
    );
}

/// A real sweep lists each task it deletes, as its dry run lists each it
/// would and a reap each it reaps, running and finished alike, and none it
/// keeps. (It printed only a count.)
#[test]
fn a_sweep_lists_each_task_it_deletes() {
    let (_tmp, dir) = store_dir();
    let old = gone_an_hour_ago(&dir);
    let expiring = || NewTask::new().ttl(Duration::from_secs(60));
    let running = old.create(expiring()).unwrap();
    let waiting = old.create(expiring()).unwrap();
    let waiting = old
        .update(
            &waiting.id,
            TaskUpdate::new().status(TaskStatus::InputRequired),
        )
        .unwrap()
        .into_task();
    let finished = old.create(expiring()).unwrap();
    let finished = old.complete(&finished.id, json!(1)).unwrap().into_task();
    drop(old);
    let kept = open(&dir)
        .create(NewTask::new().ttl(Duration::from_secs(3_600)))
        .unwrap();
    let dry = run_expect(Some(&dir), &["sweep", "--dry-run"], 0);
    let out = run_expect(Some(&dir), &["sweep"], 0);
    let said = stdout(&out);
    // Each as its dry run says it, with how long ago it expired.
    let mut deleted: Vec<&str> = said
        .lines()
        .map(|line| {
            let (task, ago) = line.split_once("  expired ").unwrap_or((line, ""));
            assert!(ago.ends_with(" ago"), "{line}");
            task
        })
        .collect();
    deleted.sort_unstable();
    let mut expected: Vec<String> = [&running, &waiting, &finished]
        .iter()
        .map(|t| format!("deleted {}  {}", t.id, t.status))
        .collect();
    expected.sort_unstable();
    assert_eq!(deleted, expected, "{}", stderr(&out));
    assert!(!stdout(&out).contains(kept.id.as_str()));
    assert_eq!(
        stdout(&dry).lines().count(),
        3,
        "the dry run named as many: {}",
        stdout(&dry)
    );
    assert!(
        stderr(&out).contains("deleted 3 expired task(s)"),
        "{}",
        stderr(&out)
    );
    // Its reader gone after the first line (`sweep | head -1`), it goes on
    // to the end of its pass, and its status: more tasks than a sweep
    // removes before it reports them (1,024 at a time).
    let past = OffsetDateTime::now_utc() - time::Duration::hours(1);
    let old = FileStore::builder(&dir)
        .clock(Arc::new(ManualClock::new(past)))
        .durability(taskstore::Durability::Eventual)
        .open()
        .unwrap();
    for _ in 0..1_100 {
        old.create(expiring()).unwrap();
    }
    drop(old);
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let status = taskstore(Some(&dir), &["sweep"])
        .stdout(writer)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        fs::read_dir(dir.join("active")).unwrap().count(),
        1,
        "only the task kept is left"
    );
}

/// A sweep whose reader takes none of its lines yet (`taskstore sweep |
/// less`, a pager not scrolled) still ends its pass: it deletes every
/// expired task and lets go of the store's batches lock, and its lines
/// wait for the reader. (Each line was written from inside the pass, which
/// holds the batches lock shared: with the pipe full, the sweep stopped in
/// the middle, and `verify` beside it waited for it and then judged its
/// half-done work.)
#[test]
fn a_sweep_whose_reader_is_slow_ends_its_pass_first() {
    let (_tmp, dir) = store_dir();
    let past = OffsetDateTime::now_utc() - time::Duration::hours(1);
    let old = FileStore::builder(&dir)
        .clock(Arc::new(ManualClock::new(past)))
        .durability(taskstore::Durability::Eventual)
        .open()
        .unwrap();
    // More lines than a pipe holds (64 KiB), finished tasks with a TTL:
    // the sweep's batch path.
    let tasks = 3_000;
    for _ in 0..tasks {
        let task = old
            .create(NewTask::new().ttl(Duration::from_secs(60)))
            .unwrap();
        assert!(old.complete(&task.id, json!(1)).unwrap().is_applied());
    }
    drop(old);
    let mut sweep = taskstore(Some(&dir), &["sweep"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    common::wait_until("the pass to end while its reader takes nothing", || {
        fs::read_dir(dir.join("done")).unwrap().count() == 0
            && fs::read_dir(dir.join("expiring")).unwrap().count() == 0
    });
    // Read only now: what the pipe could not hold waited for the reader.
    let mut lines = String::new();
    std::io::Read::read_to_string(&mut sweep.stdout.take().unwrap(), &mut lines).unwrap();
    assert_eq!(sweep.wait().unwrap().code(), Some(0));
    assert_eq!(lines.lines().count(), tasks);
}

/// `--json` on every command that prints results, in one shape: one
/// object per line where there may be many (`sweep`, `reap`, `repair`
/// and the dry runs, as `list` and `verify`), one document where there is
/// one (`show`, as `stats` and `cancel`); camelCase keys, each result's
/// `action` and `outcome` (`planned` in a dry run, `done`, `skipped`,
/// `failed`) as short codes. The summary stays on stderr. (`sweep`,
/// `reap`, `repair` and `show` had no `--json`: a usage error.)
#[test]
fn every_command_that_prints_results_has_json() {
    let (_tmp, dir) = store_dir();
    let old = gone_an_hour_ago(&dir);
    let expired = old
        .create(NewTask::new().ttl(Duration::from_secs(60)))
        .unwrap();
    let orphan = old.create(NewTask::new()).unwrap();
    let resumable = old
        .create(NewTask::new().resumable("report", json!({"q": 3})))
        .unwrap();
    drop(old);
    let live = open(&dir).create(NewTask::new()).unwrap();
    let json = |args: &[&str], code: i32| -> Vec<Value> {
        let out = run_expect(Some(&dir), args, code);
        assert!(!stderr(&out).is_empty(), "{args:?}: a summary on stderr");
        json_lines(&out)
    };
    let only = |lines: &[Value], id: &TaskId| -> Value {
        let of: Vec<&Value> = lines
            .iter()
            .filter(|l| l["taskId"] == id.as_str())
            .collect();
        assert_eq!(of.len(), 1, "{id}: {lines:#?}");
        of[0].clone()
    };

    // show: the task, as the API reads it, on one line.
    let out = run_expect(Some(&dir), &["show", live.id.as_str(), "--json"], 0);
    assert_eq!(stdout(&out).lines().count(), 1, "{}", stdout(&out));
    let shown: Task = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(shown, open(&dir).get(&live.id).unwrap().unwrap());
    // For repair (an open, such as show's, removes a dead temp file).
    let temp = dir.join("tmp").join(format!("{}.999999.3.tmp", live.id));
    fs::write(&temp, b"{\"format\":1,\"ta").unwrap();
    let stray = dir.join("README.txt");
    fs::write(&stray, b"mine").unwrap();

    // The dry runs (the resumable orphan waits for a claim for 2 h).
    let lines = json(&["sweep", "--dry-run", "--json"], 0);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let line = only(&lines, &expired.id);
    assert_eq!(
        (&line["action"], &line["outcome"], &line["status"]),
        (&json!("delete"), &json!("planned"), &json!("working"))
    );
    assert!(line["expiredAt"].is_string(), "{line}");
    let lines = json(&["reap", "--dry-run", "--json", "--claim-grace", "2h"], 0);
    let line = only(&lines, &orphan.id);
    assert_eq!(
        (&line["action"], &line["outcome"], &line["owner"]),
        (&json!("reap"), &json!("planned"), &json!("gone"))
    );
    assert!(line["leaseExpiresAt"].is_string(), "{line}");
    let line = only(&lines, &resumable.id);
    assert_eq!(
        (&line["action"], &line["kind"], &line["claimGraceMs"]),
        (&json!("await_claim"), &json!("report"), &json!(7_200_000))
    );
    let line = only(&lines, &expired.id);
    assert_eq!(
        (&line["action"], &line["outcome"]),
        (&json!("delete"), &json!("planned"))
    );
    let lines = json(&["repair", "--json"], 0);
    let by_path = |lines: &[Value], path: &Path| -> Value {
        lines
            .iter()
            .find(|l| l["path"] == path.display().to_string())
            .unwrap_or_else(|| panic!("{}: {lines:#?}", path.display()))
            .clone()
    };
    let line = by_path(&lines, &temp);
    assert_eq!(
        (
            &line["problem"],
            &line["action"],
            &line["outcome"],
            &line["taskId"]
        ),
        (
            &json!("dead_temp"),
            &json!("remove_temp"),
            &json!("planned"),
            &json!(live.id.as_str())
        )
    );
    let line = by_path(&lines, &stray);
    assert_eq!(
        (&line["action"], &line["outcome"]),
        (&json!("leave"), &json!("skipped"))
    );
    assert!(
        line["reason"].as_str().unwrap().contains("by hand"),
        "{line}"
    );

    // The real runs.
    let lines = json(&["repair", "--apply", "--json"], 1);
    let line = by_path(&lines, &temp);
    assert_eq!(line["outcome"], "done", "{line}");
    assert_eq!(line["underWay"], false, "{line}");
    let lines = json(&["sweep", "--json"], 0);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let line = only(&lines, &expired.id);
    assert_eq!(
        (&line["action"], &line["outcome"], &line["status"]),
        (&json!("delete"), &json!("done"), &json!("working"))
    );
    let lines = json(&["reap", "--json", "--claim-grace", "2h"], 0);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let line = only(&lines, &orphan.id);
    assert_eq!(
        (
            &line["action"],
            &line["outcome"],
            &line["status"],
            &line["owner"]
        ),
        (
            &json!("reap"),
            &json!("done"),
            &json!("failed"),
            &json!("gone")
        )
    );
}

/// One rule for every command: results (what a script reads) on stdout,
/// the summary of a pass or check (its counts) on stderr, with progress,
/// notes and errors; the help says so once. (A sweep printed its summary
/// on stdout, its dry run, a reap and a repair theirs on stderr.)
#[test]
fn every_summary_goes_to_stderr() {
    let (_tmp, dir) = store_dir();
    let old = gone_an_hour_ago(&dir);
    old.create(NewTask::new().ttl(Duration::from_secs(60)))
        .unwrap();
    old.create(NewTask::new()).unwrap();
    drop(old);
    for (args, summary) in [
        (
            &["sweep", "--dry-run"][..],
            "dry run: 1 expired task(s) would be deleted",
        ),
        (&["reap", "--dry-run"], "dry run: 1 orphan(s)"),
        (&["verify"], ": clean ("),
        (&["repair"], ": clean, nothing to repair"),
        (
            &["sweep"],
            "deleted 1 expired task(s); cleaned 0 leftover(s)",
        ),
        (&["reap"], "reaped 1 orphan(s)"),
    ] {
        let out = run_expect(Some(&dir), args, 0);
        assert!(
            stderr(&out).contains(summary) && !stdout(&out).contains(summary),
            "{args:?}\nstdout:\n{}\nstderr:\n{}",
            stdout(&out),
            stderr(&out)
        );
    }
    let help = stdout(&run_expect(None, &["--help"], 0));
    assert!(
        help.contains("Results (what a script reads) go to stdout"),
        "{help}"
    );
}

/// What a dry run says the real run does with an entry it cannot read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Said {
    /// Sets it aside into `quarantine/`.
    SetAside,
    /// Sets it aside if its `expiring/` entry says it has expired.
    SetAsideIfExpired,
    /// Leaves it as it is, for `repair` to set aside.
    LeftForRepair,
    /// Leaves it in place (it may read later, or with a newer version).
    LeftInPlace,
}

impl Said {
    /// Whether `line` says this, and nothing that contradicts it.
    fn in_line(self, line: &str) -> bool {
        match self {
            Said::SetAside => {
                line.contains("the real run sets it aside into quarantine/") && !line.contains("leaves")
            }
            Said::SetAsideIfExpired => line.contains(
                "the real run sets it aside into quarantine/ if its expiring/ entry says it has expired",
            ),
            Said::LeftForRepair => line
                .contains("the real run leaves it as it is; `taskstore repair` sets it aside"),
            Said::LeftInPlace => {
                line.contains("the real run leaves it in place") && !line.contains("sets it aside")
            }
        }
    }
}

/// A store with an entry of every kind a dry run cannot read, each with
/// what `sweep --dry-run` and `reap --dry-run` say of it, and whether the
/// real sweep and reap set it aside.
fn store_with_unreadable_entries(dir: &Path) -> Vec<(PathBuf, [(Said, bool); 2])> {
    let newer = |path: &Path| {
        let bytes = fs::read_to_string(path).unwrap();
        assert!(bytes.starts_with("{\"format\":1,"), "{bytes}");
        fs::write(path, bytes.replacen("{\"format\":1,", "{\"format\":2,", 1)).unwrap();
    };
    let old = gone_an_hour_ago(dir);
    let finished_expired = |old: &FileStore| {
        let task = old
            .create(NewTask::new().ttl(Duration::from_secs(60)))
            .unwrap();
        old.complete(&task.id, json!({})).unwrap().into_task();
        task_path(dir, "done", &task.id)
    };
    let damaged_expired = finished_expired(&old);
    let newer_expired = finished_expired(&old);
    drop(old);
    let store = open(dir);
    let damaged_kept = store.create(NewTask::new()).unwrap();
    store
        .complete(&damaged_kept.id, json!({}))
        .unwrap()
        .into_task();
    let damaged_kept = task_path(dir, "done", &damaged_kept.id);
    let damaged_running = task_path(dir, "active", &store.create(NewTask::new()).unwrap().id);
    let newer_running = task_path(dir, "active", &store.create(NewTask::new()).unwrap().id);
    drop(store);
    for damaged in [&damaged_expired, &damaged_kept, &damaged_running] {
        fs::write(damaged, b"{ not json").unwrap();
    }
    newer(&newer_expired);
    newer(&newer_running);
    let stray_active = dir.join("active").join("notes.txt");
    let stray_done = dir.join("done").join("notes.txt");
    fs::write(&stray_active, b"mine").unwrap();
    fs::write(&stray_done, b"mine").unwrap();
    // [(what the dry run of a sweep says, set aside by it), (reap's)]
    vec![
        (damaged_running, [(Said::SetAside, true); 2]),
        (stray_active, [(Said::SetAside, true); 2]),
        (newer_running, [(Said::LeftInPlace, false); 2]),
        (newer_expired, [(Said::LeftInPlace, false); 2]),
        (
            damaged_expired,
            [
                (Said::SetAsideIfExpired, true),
                (Said::LeftForRepair, false),
            ],
        ),
        (
            damaged_kept,
            [
                (Said::SetAsideIfExpired, false),
                (Said::LeftForRepair, false),
            ],
        ),
        (stray_done, [(Said::LeftForRepair, false); 2]),
    ]
}

/// The dry runs of `sweep` and `reap` say of each entry they cannot read
/// what the real run does with it, and the real run does it: each pass
/// sets aside what it reads of `active/` (a damaged task file, a foreign
/// name), a sweep of `done/` only the damaged files whose `expiring/`
/// entry has expired, and neither a newer-format file. (They said of
/// every entry "the real run sets it aside into quarantine/", and the real
/// runs left those of `done/` and the newer-format ones in place.)
#[test]
fn dry_runs_say_what_the_real_run_does_with_each_entry_it_cannot_read() {
    for (pass, command) in ["sweep", "reap"].into_iter().enumerate() {
        let (_tmp, dir) = store_dir();
        let entries = store_with_unreadable_entries(&dir);
        let out = run_expect(Some(&dir), &[command, "--dry-run"], 0);
        let said = stderr(&out);
        let wrong: Vec<String> = entries
            .iter()
            .filter_map(|(path, fates)| {
                let (want, _) = fates[pass];
                let name = format!("{}:", path.display());
                match said.lines().find(|line| line.contains(&name)) {
                    Some(line) if want.in_line(line) => None,
                    line => Some(format!("want {want:?}: {}", line.unwrap_or(&name))),
                }
            })
            .collect();
        assert!(
            wrong.is_empty(),
            "{command} --dry-run:\n{}",
            wrong.join("\n")
        );
        run_expect(Some(&dir), &[command], 0);
        for (path, fates) in &entries {
            let (_, set_aside) = fates[pass];
            assert_eq!(
                !path.exists(),
                set_aside,
                "{command}: {} set aside (the dry run said {:?})",
                path.display(),
                fates[pass].0
            );
        }
    }
}

// ---------------------------------------------------------------------------
// cancel, racing a writer process

#[test]
fn cancel_races_a_writer_process_and_says_who_won() {
    if let Some((role, args)) = common::role() {
        assert_eq!(role, "completer");
        return completer(&args);
    }
    const ROUNDS: usize = 16;
    let (tmp, dir) = store_dir();
    let work = tmp.path().to_owned();
    let store = open(&dir);
    let mut rng = Rng::from_entropy("cancel race");
    let (mut cli_won, mut writer_won) = (0, 0);
    for round in 0..ROUNDS {
        let task = store.create(NewTask::new()).unwrap();
        let go = work.join(format!("go-{round}"));
        let report = work.join(format!("completer-{round}"));
        let delay_us = rng.below(20_000);
        let mut child = spawn(
            &work,
            "cancel_races_a_writer_process_and_says_who_won",
            "completer",
            &[
                dir.display().to_string(),
                task.id.to_string(),
                go.display().to_string(),
                report.display().to_string(),
                delay_us.to_string(),
            ],
        );
        wait_for(
            std::slice::from_mut(&mut child),
            "the completer to be ready",
            || work.join(format!("go-{round}.ready")).exists(),
        );
        touch(&go);
        let out = run_expect(Some(&dir), &["cancel", task.id.as_str(), "--json"], 0);
        child.finish();
        let cli: Value = serde_json::from_str(&stdout(&out)).unwrap();
        let writer_applied = fs::read_to_string(&report).unwrap() == "applied";
        let final_status = store.get(&task.id).unwrap().unwrap().status;
        match cli["transition"].as_str() {
            Some("applied") => {
                assert!(!writer_applied, "round {round}: both won");
                assert_eq!(final_status, TaskStatus::Cancelled);
                assert_eq!(cli["status"], "cancelled");
                cli_won += 1;
            }
            Some("already_terminal") => {
                assert!(writer_applied, "round {round}: neither won");
                assert_eq!(final_status, TaskStatus::Completed);
                assert_eq!(cli["status"], "completed", "the CLI says who won");
                writer_won += 1;
            }
            other => panic!("round {round}: unexpected transition {other:?}"),
        }
    }
    eprintln!(
        "cancel race: the command won {cli_won}, the writer process {writer_won} of {ROUNDS}"
    );
    assert_eq!(cli_won + writer_won, ROUNDS);

    // The text form says it too.
    let task = store.create(NewTask::new()).unwrap();
    assert!(store.complete(&task.id, json!(1)).unwrap().is_applied());
    let out = run_expect(Some(&dir), &["cancel", task.id.as_str()], 0);
    assert!(
        stdout(&out).starts_with("already terminal:") && stdout(&out).contains("completed"),
        "{}",
        stdout(&out)
    );
    let task = store.create(NewTask::new()).unwrap();
    let out = run_expect(Some(&dir), &["cancel", task.id.as_str()], 0);
    assert!(stdout(&out).starts_with("applied:"), "{}", stdout(&out));
}

/// Completes one task once the go file appears (after a random delay, so
/// that either side may win), and reports whether it won.
fn completer(args: &[String]) {
    let (dir, id) = (Path::new(&args[0]), TaskId::parse(&args[1]).unwrap());
    let (go, report) = (Path::new(&args[2]), Path::new(&args[3]));
    let delay = Duration::from_micros(args[4].parse().unwrap());
    let store = open(dir);
    touch(&PathBuf::from(format!("{}.ready", go.display())));
    wait_until("the go file", || go.exists());
    std::thread::sleep(delay);
    let won = store.complete(&id, json!("done")).unwrap().is_applied();
    common::write_atomic(report, if won { b"applied" } else { b"lost" });
}

// ---------------------------------------------------------------------------
// Beside a writer process

/// The commands, each run many times while a writer process creates,
/// updates, finishes and deletes tasks, some with TTLs that lapse during the
/// test (the sweeps delete them) and some abandoned (the reaps fail them):
/// none reports a false problem, and no task the writer acknowledged is lost
/// or changed, which the end checks through the API against the writer's
/// journal.
#[test]
fn commands_run_beside_a_writer_process() {
    if let Some((role, args)) = common::role() {
        assert_eq!(role, "writer");
        return writer(&args);
    }
    let (tmp, dir) = store_dir();
    let work = tmp.path().to_owned();
    store_with_tasks(&dir);
    let stop = work.join("stop");
    let journal = work.join("journal");
    let mut child = spawn(
        &work,
        "commands_run_beside_a_writer_process",
        "writer",
        &[
            dir.display().to_string(),
            stop.display().to_string(),
            journal.display().to_string(),
        ],
    );
    let rounds = |work: &Path| -> u64 {
        fs::read_to_string(work.join("stop.progress"))
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    };
    wait_for(
        std::slice::from_mut(&mut child),
        "the writer's first rounds",
        || rounds(&work) > 0,
    );
    // The writer's long-running tasks: running until it stops.
    let running: Vec<String> = fs::read_to_string(work.join("stop.running"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(!running.is_empty());
    // Until the writer has made many rounds beside them, each command ran
    // several times, and the sweeps and reaps had something to do.
    let (mut passes, mut swept, mut reaped) = (0, 0, 0);
    while passes < 8 || rounds(&work) < 200 || swept == 0 || reaped == 0 {
        child.check_alive();
        assert!(passes < 10_000, "the writer makes no progress");
        let shown = running[passes % running.len()].as_str();
        for args in [
            &["list", "--json"][..],
            &["list", "--active"],
            &["show", shown],
            &["stats", "--json"],
            &["verify"],
            &["repair"],
            &["repair", "--apply"],
            &["sweep"],
            &["reap"],
        ] {
            let out = run_expect(Some(&dir), args, 0);
            assert!(
                !stderr(&out).contains("error") && !stderr(&out).contains("skipped"),
                "pass {passes}, {args:?}: {}",
                stderr(&out)
            );
            let text = stdout(&out);
            match args[0] {
                "verify" | "repair" => assert_eq!(text, "", "pass {passes}: a false problem"),
                "show" => {
                    let task: Task = serde_json::from_str(&text).unwrap();
                    assert_eq!(task.id.as_str(), shown);
                    assert_eq!(task.status, TaskStatus::Working, "pass {passes}");
                }
                "sweep" => {
                    // A live writer's temp files and moves are not a
                    // crashed writer's leftovers.
                    let text = stderr(&out);
                    let deleted: usize = text
                        .strip_prefix("deleted ")
                        .and_then(|t| t.split(' ').next())
                        .and_then(|n| n.parse().ok())
                        .unwrap_or_else(|| panic!("pass {passes}: {text}"));
                    assert!(
                        text.contains("; cleaned 0 leftover"),
                        "pass {passes}: {text}"
                    );
                    swept += deleted;
                }
                "reap" => {
                    for line in text.lines() {
                        let owner = line.rsplit("owner ").next().unwrap_or_default();
                        assert_ne!(owner, "writer", "pass {passes}: reaped a live task: {line}");
                        if owner == "abandoned" {
                            reaped += 1;
                        }
                    }
                }
                _ => {}
            }
        }
        passes += 1;
    }
    touch(&stop);
    child.finish();
    let out = run_expect(Some(&dir), &["verify"], 0);
    assert_eq!(stdout(&out), "");

    // Every task the writer acknowledged is as it left it: but those it
    // deleted, those whose TTL lapsed (gone for every reader), and the
    // abandoned ones, which a reap may have failed.
    let api = open(&dir);
    let (mut kept, mut expired, mut deleted, mut orphans) = (0, 0, 0, 0);
    for line in fs::read_to_string(&journal).unwrap().lines() {
        let entry: Value = serde_json::from_str(line).unwrap();
        let id = TaskId::parse(entry["id"].as_str().unwrap()).unwrap();
        if entry["task"].is_null() {
            assert_eq!(api.get(&id).unwrap(), None, "{id}: deleted by the writer");
            deleted += 1;
            continue;
        }
        let written: Task = serde_json::from_value(entry["task"].clone()).unwrap();
        let before = api.now();
        let got = api.get(&id).unwrap();
        let after = api.now();
        match written.expires_at() {
            Some(at) if at <= before => {
                assert_eq!(got, None, "{id}: expired");
                expired += 1;
            }
            // Expired while it was read: either is right.
            Some(at) if at <= after => {
                assert!(got.is_none() || got.as_ref() == Some(&written), "{id}")
            }
            _ if entry["orphan"] == true => {
                let got = got.unwrap_or_else(|| panic!("{id}: an abandoned task lost"));
                if got != written {
                    assert_eq!(got.status, TaskStatus::Failed, "{id}: {got:?}");
                    assert_eq!(got.error.as_ref().unwrap()["code"], "orphaned", "{id}");
                    assert_eq!(got.created_at, written.created_at, "{id}");
                }
                orphans += 1;
            }
            _ => {
                assert_eq!(got.as_ref(), Some(&written), "{id}: as the writer left it");
                kept += 1;
            }
        }
    }
    assert!(kept > 0 && expired > 0 && deleted > 0 && orphans > 0);
    eprintln!(
        "the writer made {} rounds beside {passes} passes of the commands, which swept \
         {swept} expired tasks and reaped {reaped} abandoned ones; of the tasks it \
         acknowledged, {kept} are as it left them, {expired} expired, {deleted} it \
         deleted, {orphans} abandoned",
        rounds(&work)
    );
}

/// Until the stop file appears, round after round: creates, updates,
/// completes, cancels, fails and deletes tasks; finishes tasks with a short
/// TTL (they expire during the test) and with a long one; leaves running
/// tasks with a short TTL to expire; abandons a task now and then (a handle
/// with a 1 ms lease that never writes it again); keeps its long-running
/// tasks' leases by updating them. Every write it makes must apply: a
/// command that swept, reaped or set aside a task of its too early would
/// fail it. Reports its rounds as it goes, and at the end journals every
/// task as it last acknowledged it (`null` once deleted). Every other round
/// skips fsync: what other processes see is the same, and it makes more
/// rounds; the rounds with fsync keep their temp files (and their locks)
/// longer.
fn writer(args: &[String]) {
    let (dir, stop) = (Path::new(&args[0]), Path::new(&args[1]));
    let journal = Path::new(&args[2]);
    let progress = PathBuf::from(format!("{}.progress", stop.display()));
    let fast = FileStore::builder(dir)
        .instance_id("writer")
        .durability(taskstore::Durability::Eventual)
        .open()
        .unwrap();
    let durable = FileStore::builder(dir)
        .instance_id("writer")
        .open()
        .unwrap();
    let abandoner = FileStore::builder(dir)
        .instance_id("abandoned")
        .lease(Duration::from_millis(1))
        .open()
        .unwrap();
    // id -> (the task as last acknowledged, or null once deleted; abandoned)
    let mut acknowledged: BTreeMap<TaskId, (Value, bool)> = BTreeMap::new();
    let mut deleted = Vec::new();
    let mut ack = |task: &Task| {
        acknowledged.insert(
            task.id.clone(),
            (serde_json::to_value(task).unwrap(), false),
        );
    };
    let applied = |t: taskstore::Result<taskstore::Transition>| -> Task {
        let t = t.unwrap();
        assert!(t.is_applied(), "{t:?}");
        t.into_task()
    };
    let running: Vec<Task> = (0..3)
        .map(|i| {
            durable
                .create(NewTask::new().status_message(format!("long-running {i}")))
                .unwrap()
        })
        .collect();
    let ids: Vec<String> = running.iter().map(|t| t.id.to_string()).collect();
    common::write_atomic(
        &PathBuf::from(format!("{}.running", stop.display())),
        ids.join("\n").as_bytes(),
    );
    let mut rounds = 0u64;
    let mut abandoned = Vec::new();
    while !stop.exists() {
        let store = if rounds.is_multiple_of(2) {
            &durable
        } else {
            &fast
        };
        let t = store
            .create(NewTask::new().metadata("round", rounds))
            .unwrap();
        let t = applied(store.update(&t.id, TaskUpdate::new().status_message("halfway")));
        ack(&t);
        let t2 = store.create(NewTask::new()).unwrap();
        ack(&t2);
        let t = if rounds.is_multiple_of(4) {
            applied(store.complete(&t.id, json!(rounds)))
        } else {
            applied(store.cancel(&t.id, None))
        };
        ack(&t);
        ack(&applied(store.fail(&t2.id, json!("x"))));
        if rounds.is_multiple_of(5) {
            assert!(store.delete(&t.id).unwrap());
            deleted.push(t.id.clone());
        }
        // Finished with a TTL that lapses within the test: linked into
        // expiring/, then swept. (One that lapsed before it could be
        // completed, on a busy machine, is gone as created.)
        let ttl = Duration::from_millis(200 + 100 * (rounds % 4));
        let short = store.create(NewTask::new().ttl(ttl)).unwrap();
        ack(&short);
        match store.complete(&short.id, json!("soon gone")) {
            Ok(t) => {
                assert!(t.is_applied(), "{t:?}");
                ack(t.task());
            }
            Err(taskstore::Error::NotFound { .. })
                if short.expires_at().is_some_and(|at| at <= store.now()) => {}
            Err(e) => panic!("complete {}: {e}", short.id),
        }
        // Running when its TTL lapses: gone, and swept from active/.
        if rounds.is_multiple_of(2) {
            ack(&store
                .create(NewTask::new().ttl(Duration::from_millis(300)))
                .unwrap());
        }
        // Finished with a TTL that outlives the test: kept, and indexed.
        if rounds.is_multiple_of(3) {
            let long = store
                .create(NewTask::new().ttl(Duration::from_secs(3_600)))
                .unwrap();
            ack(&applied(store.cancel(&long.id, Some("enough".into()))));
        }
        // Abandoned: its 1 ms lease lapses at once, and a reap fails it.
        if rounds.is_multiple_of(7) {
            abandoned.push(abandoner.create(NewTask::new()).unwrap());
        }
        // The long-running tasks' leases, renewed by their owner's writes.
        for task in &running {
            let message = format!("round {rounds}");
            ack(&applied(durable.update(
                &task.id,
                TaskUpdate::new().status_message(message),
            )));
        }
        rounds += 1;
        if rounds % 10 == 1 {
            common::write_atomic(&progress, rounds.to_string().as_bytes());
        }
    }
    for task in &running {
        ack(&applied(durable.complete(&task.id, json!("finished"))));
    }
    for id in deleted {
        acknowledged.insert(id, (Value::Null, false));
    }
    for task in abandoned {
        acknowledged.insert(
            task.id.clone(),
            (serde_json::to_value(&task).unwrap(), true),
        );
    }
    let lines: Vec<String> = acknowledged
        .into_iter()
        .map(|(id, (task, orphan))| json!({"id": id, "task": task, "orphan": orphan}).to_string())
        .collect();
    common::write_atomic(journal, lines.join("\n").as_bytes());
}

// ---------------------------------------------------------------------------
// tail

/// `tail --json` prints each event as JSON a parser reads back, also for
/// a line written with a tab between its tokens or a CRLF ending (a file
/// edited by hand, another writer). (Both were escaped as `\u0009` and
/// `\u000d` outside any string: invalid JSON.)
#[test]
fn tail_json_prints_valid_json_whatever_whitespace_a_line_has() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("events.jsonl");
    fs::write(
        &file,
        "{\"at\":\"2026-01-01T00:00:00Z\",\t\"kind\":\"task.created\",\"data\":{\"s\":\"a\\tb\"}}\r\n",
    )
    .unwrap();
    let out = run_expect(None, &["tail", file.to_str().unwrap(), "--json"], 0);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "{}", stdout(&out));
    assert_eq!(lines[0]["kind"], "task.created");
    assert_eq!(lines[0]["data"]["s"], "a\tb", "the value is the same");
}

/// `tail` reads a pipe (`zcat events.jsonl.1.gz | taskstore tail
/// /dev/stdin`), with and without `--follow` (which, at the pipe's end,
/// goes on looking), every event, and a bad line still fails it. (It set the file's offset before every read, which a
/// pipe refuses: "Illegal seek", exit 1, nothing read.)
#[test]
fn tail_reads_a_pipe() {
    use std::io::Write as _;
    let line = |kind: &str| {
        format!("{{\"at\":\"2026-01-01T00:00:00Z\",\"pid\":1,\"kind\":\"{kind}\",\"data\":null}}\n")
    };
    for (follow, bad) in [(false, false), (true, false), (false, true)] {
        let mut command = taskstore(None, &["tail", "/dev/stdin"]);
        if follow {
            command.arg("--follow");
        }
        let mut tail = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = tail.stdin.take().unwrap();
        let first = if follow { 2 } else { 3 };
        let mut text: String = (0..first).map(|n| line(&format!("k{n}"))).collect();
        if bad {
            text.push_str("not an event\n");
        }
        input.write_all(text.as_bytes()).unwrap();
        let out = if follow {
            // Following, it reads lines as they come.
            let mut reader = std::io::BufReader::new(tail.stdout.take().unwrap());
            let mut got = Vec::new();
            let mut read_lines = |n: usize, got: &mut Vec<String>| {
                for _ in 0..n {
                    let mut read = String::new();
                    std::io::BufRead::read_line(&mut reader, &mut read).unwrap();
                    got.push(read);
                }
            };
            read_lines(2, &mut got);
            input.write_all(line("k2").as_bytes()).unwrap();
            read_lines(1, &mut got);
            // At the pipe's end it looks at the path every 200 ms, and
            // follows on: a pipe is neither truncated nor replaced.
            drop(input);
            std::thread::sleep(Duration::from_millis(600));
            assert!(
                tail.try_wait().unwrap().is_none(),
                "tail --follow ended at the pipe's end"
            );
            tail.kill().unwrap();
            tail.wait().unwrap();
            got.concat()
        } else {
            drop(input);
            let out = tail.wait_with_output().unwrap();
            assert_eq!(
                out.status.code(),
                Some(if bad { 1 } else { 0 }),
                "{}",
                stderr(&out)
            );
            stdout(&out)
        };
        let kinds: Vec<&str> = out.lines().map(|l| l.split("  ").nth(2).unwrap()).collect();
        assert_eq!(kinds, ["k0", "k1", "k2"], "follow {follow}: {out}");
    }
}

/// The commands that only read a store, on one of an older format (with
/// its marker, and one that lost it): `stats` and the dry runs refuse it as
/// every command that opens it does (they said one of its directories was
/// missing, and to run `verify`); `verify` reports its format (it reported
/// `expiring/` missing, which format 1 never had, checked 0 entries, and
/// `repair` advised opening the store, which every command but `--upgrade`
/// refuses), and `repair --apply` leaves it alone. None changes it, nor
/// does a dry run given `--upgrade`. `stats --upgrade` moves it, then
/// counts its tasks (the flag was ignored).
#[test]
fn an_older_store_is_named_as_one_by_the_commands_that_only_read() {
    for marker in [true, false] {
        let (_tmp, dir) = store_dir();
        let tasks = store_with_tasks(&dir);
        common::make_format_1(&dir);
        if !marker {
            fs::remove_file(dir.join("taskstore.json")).unwrap();
        }
        let dir = &dir;
        let before = snapshot(dir);
        for args in [
            &["stats"][..],
            &["sweep", "--dry-run"],
            &["reap", "--dry-run"],
        ] {
            let out = run_expect(Some(dir), args, 1);
            assert!(
                stderr(&out).contains("format 1") && stderr(&out).contains("--upgrade"),
                "marker {marker}, {args:?}: {}",
                stderr(&out)
            );
        }
        // A dry run moves nothing, even told it may.
        for args in [
            &["sweep", "--dry-run", "--upgrade"][..],
            &["reap", "--dry-run", "--upgrade"],
        ] {
            let out = run_expect(Some(dir), args, 1);
            assert!(
                stderr(&out).contains("a dry run moves nothing"),
                "marker {marker}, {args:?}: {}",
                stderr(&out)
            );
        }
        let out = run_expect(Some(dir), &["verify", "--json"], 1);
        let codes: Vec<String> = json_lines(&out)
            .iter()
            .map(|p| format!("{} {}", p["path"].as_str().unwrap(), p["problem"]))
            .collect();
        let marker_path = dir.join("taskstore.json").display().to_string();
        let mut expected = vec![format!("{marker_path} \"older_format\"")];
        if !marker {
            expected.insert(0, format!("{marker_path} \"missing\""));
        }
        assert_eq!(codes, expected, "marker {marker}");
        let out = run_expect(Some(dir), &["repair", "--apply"], 1);
        assert!(
            stdout(&out).contains("older format") && !stdout(&out).contains("FAILED"),
            "marker {marker}: {}",
            stdout(&out)
        );
        assert_unchanged(&before, &snapshot(dir), "read, the store is as it was");

        let out = run_expect(Some(dir), &["stats", "--json", "--upgrade"], 0);
        let stats: Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(stats["tasks"], tasks.len(), "marker {marker}: {stats:#}");
        let written = fs::read_to_string(dir.join("taskstore.json")).unwrap();
        assert!(written.contains("\"format\":2"), "{written}");
        run_expect(Some(dir), &["verify"], 0);
    }
}

/// A command that opens a store of an older format refuses it unless
/// given `--upgrade`, and changes nothing: an older service may still run
/// on it, and would refuse the store once moved. With `--upgrade` it says,
/// before it waits, that it moves the store once no other process has it
/// open (here one still has: its handles lock held shared, as a handle
/// holds it), then moves it. (`list` and `show` moved the store without a
/// word, and waited for the other process in silence.)
#[test]
fn an_older_store_is_moved_only_with_upgrade_and_the_wait_is_said() {
    use std::io::BufRead as _;
    let (_tmp, dir) = store_dir();
    let tasks = store_with_tasks(&dir);
    common::make_format_1(&dir);
    let before = snapshot(&dir);
    for args in [&["list"][..], &["show", tasks[0].id.as_str()], &["sweep"]] {
        let out = run_expect(Some(&dir), args, 1);
        assert!(
            stderr(&out).contains("format 1") && stderr(&out).contains("--upgrade"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert_unchanged(&before, &snapshot(&dir), "refused, the store is as it was");

    let path = dir.join("locks").join("handles.lock");
    let held = fs::File::open(&path).unwrap();
    held.lock_shared().unwrap();
    let mut listing = taskstore(Some(&dir), &["list", "--json", "--upgrade"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = String::new();
    std::io::BufReader::new(listing.stderr.take().unwrap())
        .read_line(&mut said)
        .unwrap();
    assert!(
        said.contains("moving") && said.contains("waiting"),
        "{said}"
    );
    held.unlock().unwrap();
    let out = listing.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(json_lines(&out).len(), tasks.len());
    let marker = fs::read_to_string(dir.join("taskstore.json")).unwrap();
    assert!(marker.contains("\"format\":2"), "{marker}");
}

/// `tail --follow` over a file truncated and written again past where it
/// was reading, between two of its looks (copytruncate, then writers that
/// refill it at once): it reads the new file from its start, every line.
/// (It went on from its old offset, inside the new lines: the first were
/// lost, and a line cut in two was reported as no event.)
#[test]
fn tail_follows_a_file_truncated_and_refilled_between_two_looks() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("events.jsonl");
    let lines = |prefix: &str, n: usize| -> String {
        (0..n)
            .map(|i| {
                format!(
                    "{{\"at\":\"2026-01-0{}T00:00:00.{i:09}Z\",\"pid\":1,\"kind\":\"{prefix}{i}\",\"data\":null}}\n",
                    if prefix == "a" { 1 } else { 2 }
                )
            })
            .collect()
    };
    fs::write(&file, lines("a", 2)).unwrap();
    let mut follower = taskstore(
        None,
        &["tail", "--follow", "--json", file.to_str().unwrap()],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let next_line = following(follower.stdout.take().unwrap());
    let next = || -> String {
        let line: Value = serde_json::from_str(&next_line()).unwrap();
        line["kind"].as_str().unwrap().to_owned()
    };
    assert_eq!([next(), next()], ["a0", "a1"]);
    // Truncated and refilled with more than it held, in one go.
    fs::write(&file, lines("b", 4)).unwrap();
    let got: Vec<String> = (0..4).map(|_| next()).collect();
    follower.kill().unwrap();
    follower.wait().unwrap();
    assert_eq!(got, ["b0", "b1", "b2", "b3"]);
}

/// A command whose stdout is closed before it writes (a pipeline's reader
/// that quit: `taskstore verify | head`) ends with the status it earned:
/// `verify` of a damaged store fails, and `list` succeeds. (Both exited 0:
/// with `pipefail`, a damaged store read as a clean one.)
#[test]
fn a_closed_stdout_keeps_a_failure() {
    let (_tmp, dir) = store_dir();
    let tasks = store_with_tasks(&dir);
    let closed = |args: &[&str]| {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        taskstore(Some(&dir), args)
            .stdout(writer)
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .code()
    };
    assert_eq!(closed(&["list"]), Some(0));
    chmod(
        &task_path(&dir, "active", &first(&tasks, TaskStatus::Working).id),
        0o644,
    );
    assert_eq!(closed(&["verify"]), Some(1), "verify of a damaged store");
}

/// `list` of a store with a task file it cannot read sets the file aside
/// and exits 1 (the list is short of that task); with its stdout closed
/// (`taskstore list --json | head`, under `pipefail`) it ends with the same
/// 1, known once the first page is read, before it prints a line. (It
/// exited 0: the failure was earned only after the last line printed.)
#[test]
fn a_closed_stdout_keeps_the_failure_of_a_list_that_missed_a_task() {
    let (tmp, dir) = store_dir();
    let tasks = store_with_tasks(&dir);
    let damaged = first(&tasks, TaskStatus::Working);
    fs::write(task_path(&dir, "active", &damaged.id), b"{\"format\":1,").unwrap();
    // A fresh copy of the damaged store for each run: a listing sets the
    // damaged file aside.
    let copy = |name: &str| {
        let to = tmp.path().join(name);
        let copied = Command::new("cp")
            .arg("-a")
            .arg(&dir)
            .arg(&to)
            .status()
            .unwrap();
        assert!(copied.success());
        to
    };
    run_expect(Some(&copy("open")), &["list", "--json"], 1);
    for (n, args) in [&["list", "--json"][..], &["list"]].into_iter().enumerate() {
        let store = copy(&format!("closed-{n}"));
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let closed = taskstore(Some(&store), args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&closed.stderr).into_owned();
        assert!(
            said.contains("skipped"),
            "{args:?}: met the damaged file: {said}"
        );
        assert_eq!(
            closed.status.code(),
            Some(1),
            "taskstore {args:?} with its stdout closed, short of a task; stderr: {said}"
        );
    }
}

/// A stderr that takes no more (a closed pipe, a full disk) loses the
/// command's messages and nothing else: it exits with the status it earned,
/// 1 for an error or problems found, else 0. (A failed write to stderr
/// panicked: exit 101 for `verify 2>&1 | true`, `show nope 2>/dev/full`,
/// and a dry run naming an unreadable file.)
#[test]
fn a_stderr_that_takes_no_more_keeps_the_status_the_command_earned() {
    let (_tmp, dir) = store_dir();
    store_with_tasks(&dir);
    /// Where the command's stderr (and, if asked, stdout) goes.
    #[derive(Clone, Copy, Debug)]
    enum Sink {
        ClosedPipe,
        Full,
    }
    let code = |args: &[&str], sink: Sink, stdout_too: bool| {
        let (stderr, stdout): (Stdio, Stdio) = match sink {
            Sink::ClosedPipe => {
                let (reader, writer) = std::io::pipe().unwrap();
                drop(reader);
                let stdout = if stdout_too {
                    writer.try_clone().unwrap().into()
                } else {
                    Stdio::null()
                };
                (writer.into(), stdout)
            }
            Sink::Full => {
                let full = || {
                    fs::OpenOptions::new()
                        .write(true)
                        .open("/dev/full")
                        .unwrap()
                };
                let stdout = if stdout_too {
                    full().into()
                } else {
                    Stdio::null()
                };
                (full().into(), stdout)
            }
        };
        taskstore(Some(&dir), args)
            .stdout(stdout)
            .stderr(stderr)
            .status()
            .unwrap()
            .code()
    };
    for sink in [Sink::ClosedPipe, Sink::Full] {
        for stdout_too in [false, true] {
            let case = format!("{sink:?}, stdout too: {stdout_too}");
            assert_eq!(
                code(&["verify", "--wait", "0s"], sink, stdout_too),
                Some(0),
                "verify of a clean store, {case}"
            );
            assert_eq!(
                code(&["show", "nope"], sink, stdout_too),
                Some(1),
                "show of no task, {case}"
            );
        }
    }
    // A file the dry runs name on stderr before they print anything.
    fs::write(dir.join("active").join("bad.json"), b"{\"format\":1,").unwrap();
    for sink in [Sink::ClosedPipe, Sink::Full] {
        for args in [&["reap", "--dry-run"][..], &["sweep", "--dry-run"]] {
            assert_eq!(code(args, sink, true), Some(0), "{args:?}, {sink:?}");
        }
        assert_eq!(
            code(&["verify", "--wait", "0s"], sink, false),
            Some(1),
            "verify of a damaged store, {sink:?}"
        );
    }
}

/// `tail` reads a file, not a store: its help lists none of the store's
/// options (it listed `--store` and `--upgrade`, which it ignores), the
/// commands that open a store still do, and a store named anyway (a
/// script's shared prefix, `TASKSTORE_STORE` set) is still no error.
#[test]
fn tail_help_lists_only_its_own_options() {
    let help = stdout(&run_expect(None, &["tail", "--help"], 0));
    for option in ["--store", "--upgrade", "--pg", "TASKSTORE_"] {
        assert!(!help.contains(option), "{option}:\n{help}");
    }
    assert!(help.contains("--follow"), "{help}");
    let help = stdout(&run_expect(None, &["list", "--help"], 0));
    assert!(
        help.contains("--store") && help.contains("--upgrade"),
        "{help}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("events.jsonl");
    fs::write(
        &file,
        "{\"at\":\"2026-01-01T00:00:00Z\",\"kind\":\"k\",\"data\":null}\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    for args in [
        &["--store", "x", "tail", file][..],
        &["tail", file, "--store", "x"],
    ] {
        let out = run_expect(Some(tmp.path()), args, 0);
        assert_eq!(stdout(&out).lines().count(), 1, "{args:?}");
    }
}

/// `tail -n N` (`--lines`) shows the last N events of what the file holds,
/// of those its filters keep, like tail(1), then with `--follow` every new
/// one. It reads only as far back as those N: a bad line is reported if it
/// is among what it reads, by its number when it read from the file's
/// start (`tail_n_reads_back_from_the_end_only_as_far_as_its_events` has
/// the rest). (`tail` had no `-n`: a usage error.)
#[test]
fn tail_n_shows_the_last_events_then_follows() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("events.jsonl");
    let text = [
        event("k0"),
        "not an event\n".to_owned(),
        event("k1"),
        event("k2"),
        event("k3"),
    ];
    fs::write(&path, text.concat()).unwrap();
    let file = path.to_str().unwrap();
    let kinds = |out: &Output| -> Vec<String> {
        stdout(out)
            .lines()
            .map(|l| l.split("  ").nth(2).unwrap().to_owned())
            .collect()
    };
    // Whether the bad line, line 2, is among what it reads.
    for (args, shown, bad) in [
        (&["-n", "2"][..], &["k2", "k3"][..], false),
        (&["--lines", "2"], &["k2", "k3"], false),
        (&["-n", "3"], &["k1", "k2", "k3"], false),
        (&["-n", "4"], &["k0", "k1", "k2", "k3"], true),
        (&["-n", "10"], &["k0", "k1", "k2", "k3"], true),
        (&["-n", "1", "--kind", "k1"], &["k1"], false),
        (&["-n", "1", "--kind", "k0"], &["k0"], true),
        (&["-n", "0"], &[], false),
    ] {
        let mut all = vec!["tail", file];
        all.extend_from_slice(args);
        let out = run_expect(None, &all, i32::from(bad));
        assert_eq!(kinds(&out), shown, "{args:?}");
        assert_eq!(
            stderr(&out).contains(&format!("{file}:2: not an event")),
            bad,
            "{args:?}: {}",
            stderr(&out)
        );
    }
    // Following: the last one there, then each new one as it comes.
    follows(file, &path, "k3", "k4");
}

/// A string may hold DEL and the C1 controls as they are (JSON escapes only
/// those under U+0020, and serde_json writes the rest raw, as
/// `JsonLinesSink` does): `tail --json` writes them escaped, the same
/// value, where it wrote each as a space.
#[test]
fn tail_json_keeps_every_control_character_inside_a_string() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("events.jsonl");
    let note = "a\u{7f}b\u{9b}c\u{85}d";
    let line =
        json!({"at": "2026-01-01T00:00:00Z", "kind": "task.created", "data": {"note": note}});
    fs::write(&file, format!("{line}\n")).unwrap();
    assert!(
        fs::read_to_string(&file).unwrap().contains('\u{7f}'),
        "written raw"
    );
    let out = run_expect(None, &["tail", file.to_str().unwrap(), "--json"], 0);
    assert!(
        !stdout(&out).chars().any(|c| c.is_control() && c != '\n'),
        "no control character reaches the terminal: {:?}",
        stdout(&out)
    );
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "{}", stdout(&out));
    assert_eq!(lines[0]["data"]["note"], note, "the value is the same");
}

#[test]
fn tail_reads_filters_and_follows_a_file_through_truncation() {
    let (tmp, dir) = store_dir();
    let events = tmp.path().join("events.jsonl");
    // A writer that does not look at its path (until it reopens), as any
    // writer between its looks.
    let sink = Arc::new(
        JsonLinesSink::open(&events)
            .unwrap()
            .check_path_every(Duration::MAX),
    );
    let store = FileStore::builder(&dir).sink(sink.clone()).open().unwrap();
    let a = store.create(NewTask::new()).unwrap();
    let b = store.create(NewTask::new()).unwrap();
    assert!(store.complete(&a.id, json!(1)).unwrap().is_applied());
    assert!(store.cancel(&b.id, None).unwrap().is_applied());

    let all = stdout(&run_expect(None, &["tail", events.to_str().unwrap()], 0));
    assert_eq!(all.lines().count(), 4, "{all}");
    let completed = stdout(&run_expect(
        None,
        &["tail", events.to_str().unwrap(), "--kind", "task.completed"],
        0,
    ));
    assert_eq!(completed.lines().count(), 1, "{completed}");
    assert!(completed.contains(a.id.as_str()) && completed.contains("task.completed"));
    let about_b = run_expect(
        None,
        &[
            "tail",
            events.to_str().unwrap(),
            "--task",
            b.id.as_str(),
            "--json",
        ],
        0,
    );
    let lines = json_lines(&about_b);
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|l| l["data"]["taskId"] == b.id.as_str()));
    assert_eq!(lines[1]["kind"], "task.cancelled");

    // A line that is not an event is reported with its place, and the rest
    // is still read.
    let damaged = tmp.path().join("damaged.jsonl");
    fs::write(
        &damaged,
        format!("{}not json\n", fs::read_to_string(&events).unwrap()),
    )
    .unwrap();
    let out = run_expect(None, &["tail", damaged.to_str().unwrap()], 1);
    assert_eq!(stdout(&out).lines().count(), 4);
    assert!(
        stderr(&out).contains(&format!("{}:5:", damaged.display())),
        "{}",
        stderr(&out)
    );

    // --follow: new lines as they come, and the file again from its start
    // once it is truncated.
    let mut follower = taskstore(
        None,
        &["tail", "--follow", "--json", events.to_str().unwrap()],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let next = following(follower.stdout.take().unwrap());
    let existing: Vec<String> = (0..4).map(|_| next()).collect();
    assert!(existing[0].contains("task.created"));
    let c = store.create(NewTask::new()).unwrap();
    let line: Value = serde_json::from_str(&next()).unwrap();
    assert_eq!(line["data"]["taskId"], c.id.as_str());
    // Truncated, as log rotation with copytruncate does; the sink appends
    // after the cut.
    fs::OpenOptions::new()
        .write(true)
        .open(&events)
        .unwrap()
        .set_len(0)
        .unwrap();
    let d = store.create(NewTask::new()).unwrap();
    let line: Value = serde_json::from_str(&next()).unwrap();
    assert_eq!(line["data"]["taskId"], d.id.as_str());
    // Rotated by renaming, as logrotate does by default: the sink keeps
    // appending to the old file until it reopens, and a new file starts.
    // Every line of both is printed (those the old file got after the
    // rename were lost).
    fs::rename(&events, events.with_extension("jsonl.1")).unwrap();
    let e = store.create(NewTask::new()).unwrap();
    let first_line = fs::read_to_string(events.with_extension("jsonl.1"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_owned();
    fs::write(&events, format!("{first_line}\n")).unwrap();
    let line: Value = serde_json::from_str(&next()).unwrap();
    assert_eq!(
        line["data"]["taskId"],
        e.id.as_str(),
        "the old file's last line"
    );
    let line: Value = serde_json::from_str(&next()).unwrap();
    assert_eq!(line, serde_json::from_str::<Value>(&first_line).unwrap());
    // The writer goes on appending to the renamed file after the reader
    // moved to the new one: those lines are printed too. (They were lost.)
    let f = store.create(NewTask::new()).unwrap();
    let line: Value = serde_json::from_str(&next()).unwrap();
    assert_eq!(
        line["data"]["taskId"],
        f.id.as_str(),
        "a line the renamed file got after the switch"
    );
    follower.kill().unwrap();
    let out = follower.wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("truncated"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(sink);
}

// ---------------------------------------------------------------------------
// Progress on a terminal

/// Runs `taskstore args...` on `store` under a pseudo-terminal, with
/// `script` (util-linux): its exit status, and what it wrote to the
/// terminal (stdout and stderr both).
fn run_on_terminal(store: &Path, args: &[&str]) -> (Option<i32>, String) {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let line: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_taskstore"))
        .chain(args.iter().copied())
        .map(quote)
        .collect();
    let out = common::without_store_variables("script")
        .args(["--quiet", "--return", "--flush", "--command"])
        .arg(line.join(" "))
        .arg("/dev/null")
        .env("TASKSTORE_STORE", store)
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("run script (util-linux), which this test needs: {e}"));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The progress lines drawn (`"\r N/M"`), as (where, N, M).
fn progress_drawn(terminal: &str) -> Vec<(usize, usize, usize)> {
    terminal
        .match_indices('\r')
        .filter_map(|(at, _)| {
            let rest = terminal[at + 1..].strip_prefix(' ')?;
            let done: String = rest.chars().take_while(char::is_ascii_digit).collect();
            let rest = rest[done.len()..].strip_prefix('/')?;
            let total: String = rest.chars().take_while(char::is_ascii_digit).collect();
            Some((at, done.parse().ok()?, total.parse().ok()?))
        })
        .collect()
}

#[test]
fn long_commands_draw_progress_on_a_terminal_and_none_when_piped() {
    const TASKS: usize = 600;
    let (_tmp, dir) = store_dir();
    let store = FileStore::builder(&dir)
        .durability(taskstore::Durability::Eventual)
        .open()
        .unwrap();
    for i in 0..TASKS {
        let t = store.create(NewTask::new()).unwrap();
        if i % 2 == 0 {
            assert!(store.complete(&t.id, json!(i)).unwrap().is_applied());
        }
    }
    drop(store);
    for (args, last_words) in [
        (&["verify"][..], "clean ("),
        (&["stats"], "success rate"),
        (&["repair"], "clean, nothing to repair"),
    ] {
        let (code, terminal) = run_on_terminal(&dir, args);
        assert_eq!(code, Some(0), "{args:?}: {terminal:?}");
        let drawn = progress_drawn(&terminal);
        let Some(&(last, done, total)) = drawn.last() else {
            panic!("{args:?}: no progress drawn on the terminal: {terminal:?}");
        };
        assert!(
            done == total && total >= TASKS,
            "{args:?}: the last progress drawn is {done}/{total}: {terminal:?}"
        );
        // Cleared once done, before the command's last words.
        let cleared = terminal.rfind("\r\x1b[K");
        assert!(
            cleared.is_some_and(|at| at > last && terminal[at..].contains(last_words)),
            "{args:?}: the progress line is not cleared: {terminal:?}"
        );

        let piped = run_expect(Some(&dir), args, 0);
        for (name, text) in [("stdout", stdout(&piped)), ("stderr", stderr(&piped))] {
            assert!(
                !text.contains('\r') && !text.contains('\x1b') && progress_drawn(&text).is_empty(),
                "{args:?}: progress on a piped {name}: {text:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Usage

#[test]
fn usage_errors_exit_2_and_stores_are_never_made_by_mistake() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run_expect(None, &["list"], 2);
    assert!(stderr(&out).contains("--store"), "{}", stderr(&out));
    run_expect(None, &["frobnicate"], 2);
    let dir = tmp.path().join("store");
    store_with_tasks(&dir);
    let out = run_expect(Some(&dir), &["list", "--older-than", "10"], 2);
    assert!(stderr(&out).contains("unit"), "{}", stderr(&out));
    // Further back than dates go: a usage error, not a panic (exit 101),
    // said before any store is looked for, with the value as written.
    let out = run_expect(Some(&dir), &["list", "--older-than", "100000000d"], 2);
    assert!(stderr(&out).contains("--older-than"), "{}", stderr(&out));
    let nowhere = tmp.path().join("nowhere");
    let out = run_expect(Some(&nowhere), &["list", "--older-than", "4000000000w"], 2);
    assert!(
        stderr(&out).contains("'4000000000w'") && stderr(&out).contains("further back"),
        "{}",
        stderr(&out)
    );
    assert!(!nowhere.exists());
    run_expect(Some(&dir), &["list", "--status", "done"], 2);
    run_expect(Some(&dir), &["list", "--limit", "0"], 2);
    // Running tasks never have a terminal status: an empty table would
    // read as "none", where the question has no answer.
    for status in ["completed", "failed", "cancelled"] {
        // Said before any store is looked for.
        let nowhere = tmp.path().join("nowhere");
        let out = run_expect(Some(&nowhere), &["list", "--active", "--status", status], 2);
        // With `list`'s usage line (it printed the command's own).
        assert!(
            stderr(&out).contains("--active")
                && stderr(&out).contains(status)
                && stderr(&out).contains("Usage: taskstore list"),
            "{status}: {}",
            stderr(&out)
        );
    }
    run_expect(Some(&dir), &["list", "--active", "--status", "working"], 0);
    run_expect(Some(&dir), &["repair", "--apply", "--dry-run"], 2);
    run_expect(Some(&dir), &["show", "../etc"], 2);
    // A cursor no store handed out is a usage error, naming the cursor,
    // said before any store is looked for (so before an open cleans up).
    let nowhere = tmp.path().join("nowhere");
    for args in [
        &["list", "--after", "bogus"][..],
        &["list", "--json", "--limit", "2", "--after", "bogus"],
    ] {
        for at in [&dir, &nowhere] {
            let out = run_expect(Some(at), args, 2);
            assert!(
                stderr(&out).contains("'bogus'") && stderr(&out).contains("--after"),
                "{args:?}: {}",
                stderr(&out)
            );
            assert_eq!(stdout(&out), "", "{args:?}");
        }
    }

    // A mistyped directory is an error naming it, never a new store.
    let typo = tmp.path().join("stroe");
    let out = run_expect(Some(&typo), &["list"], 1);
    assert!(
        stderr(&out).contains(typo.to_str().unwrap()),
        "{}",
        stderr(&out)
    );
    assert!(!typo.exists());
    // Nor is a directory of other files.
    let mine = tmp.path().join("mine");
    fs::create_dir(&mine).unwrap();
    fs::write(mine.join("notes.txt"), "mine").unwrap();
    for args in [&["list"][..], &["verify"], &["stats"], &["sweep"]] {
        let out = run_expect(Some(&mine), args, 1);
        assert!(
            stderr(&out).contains(mine.to_str().unwrap()),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert_eq!(fs::read_dir(&mine).unwrap().count(), 1);
    // --store beats nothing: given on the command line it is used.
    let out = taskstore(None, &["--store", dir.to_str().unwrap(), "list", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(json_lines(&out).len(), 7);
}

/// An empty `TASKSTORE_STORE` counts as unset: the command says no store
/// was given, and a `--store` given beside it is used. (clap read it as an
/// empty `--store` and blamed the flag: "a value is required for '--store
/// <DIR>' but none was supplied".)
#[test]
fn an_empty_store_variable_counts_as_unset() {
    let (_tmp, dir) = store_dir();
    store_with_tasks(&dir);
    let run_with_empty = |args: &[&str]| {
        taskstore(None, args)
            .env("TASKSTORE_STORE", "")
            .output()
            .unwrap()
    };
    for command in ["list", "stats", "verify"] {
        let out = run_with_empty(&[command]);
        assert_eq!(out.status.code(), Some(2), "{command}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("no store: give --store DIR (or TASKSTORE_STORE)"),
            "{command}: {}",
            stderr(&out)
        );
    }
    let out = run_with_empty(&["list", "--json", "--store", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json_lines(&out).len(), 7);
}

#[cfg(feature = "postgres")]
#[path = "common/pg.rs"]
mod pg_cluster;

/// `stats` and the dry run of `sweep` over PostgreSQL read every row and
/// keep none of its payloads: run with its data segment held to 200 MB,
/// each reads a store of 300 MB of tasks. (`Store::stored` kept every task
/// whole: over 300 MB, and the command died for want of memory.)
#[cfg(feature = "postgres")]
#[test]
fn stats_and_dry_runs_over_postgres_hold_no_payloads_of_the_store() {
    let Some(cluster) = pg_cluster::shared() else {
        return; // skipped, said once (TASKSTORE_REQUIRE_PG=1 fails instead)
    };
    require_prlimit();
    let schema = pg_cluster::fresh_schema("cli");
    let conninfo = cluster.conninfo();
    let store = taskstore::PgStore::builder(conninfo.clone())
        .schema(schema.clone())
        .open()
        .unwrap();
    resumable_and_finished(&store, &"x".repeat(100 << 10), 1_500);
    drop(store);
    let target = ["--pg", &conninfo, "--pg-schema", &schema];
    let under_limit = |args: &[&str]| in_200_mb(args, &target);
    let stats: Value = serde_json::from_str(&stdout(&under_limit(&["stats", "--json"]))).unwrap();
    assert_eq!(
        (&stats["active"], &stats["finished"]),
        (&json!(1_500), &json!(1_500)),
        "{stats:#}"
    );
    let swept = under_limit(&["sweep", "--dry-run"]);
    assert!(
        stderr(&swept).contains("dry run: 0 expired task(s)"),
        "{}",
        stderr(&swept)
    );
}

/// The commands over a `PgStore`, checked against its API.
#[cfg(feature = "postgres")]
#[test]
fn commands_work_over_postgres() {
    let Some(cluster) = pg_cluster::shared() else {
        return; // skipped, said once (TASKSTORE_REQUIRE_PG=1 fails instead)
    };
    let schema = pg_cluster::fresh_schema("cli");
    let conninfo = cluster.conninfo();
    let store = taskstore::PgStore::builder(conninfo.clone())
        .schema(schema.clone())
        .open()
        .unwrap();
    let running = store.create(NewTask::new()).unwrap();
    let done = store.create(NewTask::new()).unwrap();
    assert!(store.complete(&done.id, json!(1)).unwrap().is_applied());
    let failed = store.create(NewTask::new()).unwrap();
    assert!(store.fail(&failed.id, json!("x")).unwrap().is_applied());
    let pg = |args: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.extend([
            "--pg".into(),
            conninfo.clone(),
            "--pg-schema".into(),
            schema.clone(),
        ]);
        all
    };
    let run_pg = |args: &[&str], code: i32| {
        let args = pg(args);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        run_expect(None, &refs, code)
    };
    let listed: Vec<Task> = json_lines(&run_pg(&["list", "--json"], 0))
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
    assert_eq!(listed, store.list(&ListQuery::all()).unwrap().tasks);
    // TASKSTORE_PG and TASKSTORE_PG_SCHEMA name the store as --pg and
    // --pg-schema do (the schema is this test's own: the default one holds
    // other tests' tasks, or none).
    let run_env = |args: &[&str], env: &[(&str, &str)], code: i32| {
        let mut command = taskstore(None, args);
        command.envs(env.iter().copied());
        let out = command.output().expect("run the taskstore binary");
        assert_eq!(
            out.status.code(),
            Some(code),
            "taskstore {args:?} with {env:?}\nstdout:\n{}\nstderr:\n{}",
            stdout(&out),
            stderr(&out)
        );
        out
    };
    let pg_env = [
        ("TASKSTORE_PG", conninfo.as_str()),
        ("TASKSTORE_PG_SCHEMA", schema.as_str()),
    ];
    let listed: Vec<Task> = json_lines(&run_env(&["list", "--json"], &pg_env, 0))
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
    assert_eq!(listed, store.list(&ListQuery::all()).unwrap().tasks);
    let stats: Value =
        serde_json::from_str(&stdout(&run_env(&["stats", "--json"], &pg_env, 0))).unwrap();
    assert_eq!(stats["store"]["backend"], "postgres");
    assert_eq!(stats["store"]["schema"], schema.as_str());
    assert_eq!(stats["tasks"], 3);
    // A file store named too is a usage error: which one was meant?
    let (_tmp, dir) = store_dir();
    store_with_tasks(&dir);
    let both = [
        pg_env[0],
        pg_env[1],
        ("TASKSTORE_STORE", dir.to_str().unwrap()),
    ];
    let out = run_env(&["list"], &both, 2);
    assert!(stderr(&out).contains("not both"), "{}", stderr(&out));
    // A flag names the store over the other's variable (it was a usage
    // error, "not both", though one was typed).
    let dir_text = dir.to_str().unwrap();
    let files = json_lines(&run_env(
        &["list", "--json", "--store", dir_text],
        &pg_env,
        0,
    ));
    assert_eq!(
        files.len(),
        open(&dir).list(&ListQuery::all()).unwrap().tasks.len()
    );
    let on_pg = pg(&["list", "--json"]);
    let on_pg: Vec<&str> = on_pg.iter().map(String::as_str).collect();
    let listed = json_lines(&run_env(&on_pg, &[("TASKSTORE_STORE", dir_text)], 0));
    assert_eq!(listed.len(), 3);
    let stats: Value = serde_json::from_str(&stdout(&run_pg(&["stats", "--json"], 0))).unwrap();
    assert_eq!(stats["store"]["backend"], "postgres");
    assert_eq!(stats["tasks"], 3);
    assert_eq!(stats["active"], 1);
    assert_eq!(stats["successRate"], json!(0.5));
    assert_eq!(stats["disk"], Value::Null);
    // An expired task not swept yet is counted as such (a listing leaves it
    // out: it was always 0).
    store
        .create(NewTask::new().ttl(Duration::from_millis(1)))
        .unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let stats: Value = serde_json::from_str(&stdout(&run_pg(&["stats", "--json"], 0))).unwrap();
    assert_eq!(
        (stats["tasks"].clone(), stats["expiredUnswept"].clone()),
        (json!(3), json!(1))
    );
    let shown: Task =
        serde_json::from_str(&stdout(&run_pg(&["show", running.id.as_str()], 0))).unwrap();
    assert_eq!(shown, store.get(&running.id).unwrap().unwrap());
    // A row that does not read is named on stderr by both dry runs, as a
    // file that does not is (it was left out without a word).
    let spoilt = store.create(NewTask::new()).unwrap();
    let changed = cluster
        .client()
        .execute(
            &format!("UPDATE \"{schema}\".tasks SET task = '{{}}' WHERE id = $1"),
            &[&spoilt.id.as_str()],
        )
        .unwrap();
    assert_eq!(changed, 1);
    for command in ["sweep", "reap"] {
        let out = run_pg(&[command, "--dry-run"], 0);
        assert!(
            stderr(&out).contains(spoilt.id.as_str()),
            "{command} --dry-run:\n{}",
            stderr(&out)
        );
    }
    let out = run_pg(&["cancel", running.id.as_str(), "--json"], 0);
    assert_eq!(json_lines(&out)[0]["transition"], "applied");
    assert_eq!(
        store.get(&running.id).unwrap().unwrap().status,
        TaskStatus::Cancelled
    );
    let out = run_pg(&["cancel", done.id.as_str(), "--json"], 0);
    assert_eq!(json_lines(&out)[0]["transition"], "already_terminal");
    assert_eq!(json_lines(&out)[0]["status"], "completed");
    // A mistyped schema is an error naming it, and makes no store there.
    let typo = format!("{schema}_typo");
    for command in ["list", "stats"] {
        let out = run_expect(None, &[command, "--pg", &conninfo, "--pg-schema", &typo], 1);
        assert!(
            stderr(&out).contains(&format!("no store in PostgreSQL schema {typo}")),
            "{}",
            stderr(&out)
        );
    }
    match taskstore::PgStore::builder(conninfo.clone())
        .schema(typo.clone())
        .create_if_missing(false)
        .open()
    {
        Err(taskstore::Error::NoStore { store }) => assert!(store.contains(&typo)),
        other => panic!(
            "the mistyped schema {typo} was created: {:?}",
            other.map(|_| ())
        ),
    }
    // A name no schema of a store can have is a usage error, as any
    // malformed argument (it exited 1, "invalid store setting").
    for command in ["list", "stats"] {
        let out = run_expect(
            None,
            &[command, "--pg", &conninfo, "--pg-schema", "Bad-Schema"],
            2,
        );
        assert!(
            stderr(&out).contains("invalid value \"Bad-Schema\" for '--pg-schema <SCHEMA>'"),
            "{}",
            stderr(&out)
        );
    }
}

/// `--pg-schema` typed beside a file store is a usage error: the schema
/// names nothing there, and a user who typed it meant a PostgreSQL store.
/// The same schema from TASKSTORE_PG_SCHEMA (set for other commands) is
/// not. (The flag was ignored without a word.)
#[cfg(feature = "postgres")]
#[test]
fn a_schema_typed_beside_a_file_store_is_refused() {
    let (_tmp, dir) = store_dir();
    let tasks = store_with_tasks(&dir);
    let store = dir.to_str().unwrap();
    for args in [
        &["list", "--store", store, "--pg-schema", "jobs"][..],
        &["--pg-schema", "jobs", "stats"],
        &["verify", "--pg-schema", "jobs"],
    ] {
        let out = if args.contains(&"--store") {
            run_expect(None, args, 2)
        } else {
            run_expect(Some(&dir), args, 2)
        };
        assert!(
            stderr(&out).contains("--pg-schema") && stderr(&out).contains("--pg"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let out = taskstore(None, &["list", "--json", "--store", store])
        .env("TASKSTORE_PG_SCHEMA", "jobs")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json_lines(&out).len(), tasks.len());
}

#[cfg(feature = "postgres")]
#[test]
fn verify_and_repair_say_they_are_for_file_stores() {
    for command in ["verify", "repair"] {
        let out = run_expect(None, &[command, "--pg", "host=/nonexistent"], 2);
        assert!(stderr(&out).contains("file store"), "{}", stderr(&out));
    }
}

/// A store that lost its marker (`taskstore.json`) but has its task areas
/// is opened by the commands, whose open writes the marker again, as
/// `repair` tells the operator; a directory with neither is still no
/// store, and a symlink to a store is refused by name by every command
/// that takes a store, and changes nothing there. (`list` refused the
/// store "holds no taskstore.json", so `repair`'s advice could not be
/// followed; a symlink was "not a directory", and still was for `stats`,
/// `verify` and `repair`, which read the store without a handle.)
#[test]
fn a_store_that_lost_its_marker_opens_and_a_symlink_is_named() {
    let (tmp, dir) = store_dir();
    let tasks = store_with_tasks(&dir);
    fs::remove_file(dir.join("taskstore.json")).unwrap();
    let out = run_expect(Some(&dir), &["repair"], 0);
    assert!(stdout(&out).contains("left alone"), "{}", stdout(&out));
    let out = run_expect(Some(&dir), &["list", "--json"], 0);
    assert_eq!(json_lines(&out).len(), tasks.len());
    assert!(dir.join("taskstore.json").exists(), "the marker is back");
    assert_eq!(stdout(&run_expect(Some(&dir), &["verify"], 0)), "");

    let other = tmp.path().join("project");
    fs::create_dir_all(other.join("tmp")).unwrap();
    fs::create_dir_all(other.join("locks")).unwrap();
    for command in ["list", "verify", "stats"] {
        let out = run_expect(Some(&other), &[command], 1);
        assert!(
            stderr(&out).contains("not a store"),
            "{command}: {}",
            stderr(&out)
        );
    }
    assert!(!other.join("active").exists(), "nothing made");
    assert!(
        !other.join("locks").join("handles.lock").exists(),
        "nothing made"
    );
    // Another program's directory with an `active/` and a `done/` of its
    // own is not a store either, nor a store of format 1 that lost its
    // marker (one has the `tmp/` and `locks/` every store has): it was
    // called one, and `--upgrade` made it a store and set its files aside.
    let app = tmp.path().join("app");
    fs::create_dir_all(app.join("active")).unwrap();
    fs::create_dir_all(app.join("done")).unwrap();
    fs::write(app.join("active").join("job1.json"), b"{\"id\":\"job1\"}").unwrap();
    fs::write(app.join("done").join("README"), b"notes").unwrap();
    let before = snapshot(&app);
    for args in [
        &["list"][..],
        &["--upgrade", "list"],
        &["verify"],
        &["stats"],
        &["repair", "--apply"],
    ] {
        let out = run_expect(Some(&app), args, 1);
        assert!(
            stderr(&out).contains("not a store"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert_eq!(snapshot(&app), before, "nothing made or moved");

    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&dir, &link).unwrap();
    let id = first(&tasks, TaskStatus::Working).id;
    let before = snapshot(&dir);
    for args in [
        &["list"][..],
        &["show", id.as_str()],
        &["stats"],
        &["verify"],
        &["repair"],
        &["repair", "--apply"],
        &["sweep"],
        &["sweep", "--dry-run"],
        &["reap"],
        &["reap", "--dry-run"],
        &["cancel", id.as_str()],
    ] {
        let out = run_expect(Some(&link), args, 1);
        assert!(
            stderr(&out).contains(&format!(
                "no store at {}: a symlink (a store is never opened through one",
                link.display()
            )),
            "taskstore {args:?}: {}",
            stderr(&out)
        );
    }
    assert_unchanged(&before, &snapshot(&dir), "nothing done through the link");
}

/// A store whose marker names a newer format is refused by what reads it
/// without a handle (the counts, the dry runs) as by `sweep` and `reap`
/// themselves: this version's rules may misread it. (`stats` and the dry
/// runs read it, and said what they would reap.)
#[test]
fn reads_without_a_handle_refuse_a_store_of_a_newer_format_as_the_real_runs_do() {
    let (_tmp, dir) = store_dir();
    let old = gone_an_hour_ago(&dir);
    old.create(NewTask::new()).unwrap();
    drop(old);
    fs::write(
        dir.join("taskstore.json"),
        b"{\"format\":9,\"kind\":\"taskstore\"}\n",
    )
    .unwrap();
    let before = snapshot(&dir);
    for args in [
        &["reap"][..],
        &["sweep"],
        &["stats"],
        &["reap", "--dry-run"],
        &["sweep", "--dry-run"],
    ] {
        let out = run_expect(Some(&dir), args, 1);
        assert!(
            stderr(&out).contains("format version 9"),
            "taskstore {args:?}: {}",
            stderr(&out)
        );
    }
    assert_unchanged(&before, &snapshot(&dir), "nothing read, nothing changed");
}

/// The command reads whatever a service stored, whatever payload cap the
/// service set (up to `MAX_MAX_PAYLOAD_BYTES`): a task past the default
/// cap is listed, shown and swept, as its dry run says. (The command read
/// with the default cap: `list` skipped the task, `show` failed, and
/// `sweep` deleted nothing and exited 0 where its dry run said it would
/// delete it.)
#[test]
fn the_command_reads_tasks_a_service_stored_under_a_larger_payload_cap() {
    let (_tmp, dir) = store_dir();
    let past = OffsetDateTime::now_utc() - time::Duration::hours(1);
    let service = FileStore::builder(&dir)
        .clock(Arc::new(ManualClock::new(past)))
        .max_payload_bytes(64 << 20)
        .open()
        .unwrap();
    let big = "x".repeat(20 << 20);
    let expired = service
        .create(
            NewTask::new()
                .ttl(Duration::from_secs(60))
                .metadata("big", big.clone()),
        )
        .unwrap();
    let task = service.create(NewTask::new().metadata("big", big)).unwrap();
    drop(service);
    let preview = run_expect(Some(&dir), &["sweep", "--dry-run"], 0);
    assert!(stdout(&preview).contains(&format!("would delete {}", expired.id)));
    let swept = run_expect(Some(&dir), &["sweep"], 0);
    assert!(
        stderr(&swept).contains("deleted 1 expired task(s)"),
        "{}\n{}",
        stdout(&swept),
        stderr(&swept)
    );
    let listed = run_expect(Some(&dir), &["list", "--json"], 0);
    let lines = json_lines(&listed);
    assert_eq!(lines.len(), 1, "{}", stderr(&listed));
    assert_eq!(lines[0]["taskId"], task.id.as_str());
    let shown = run_expect(Some(&dir), &["show", task.id.as_str()], 0);
    assert!(stdout(&shown).contains(task.id.as_str()));
}

/// `prlimit` (util-linux), which the tests that hold the command's memory
/// run it under: `.ci/run` installs it.
fn require_prlimit() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        panic!("prlimit (util-linux) is needed: .ci/run installs it");
    }
}

/// `list` without `--limit` asks the store page after page and keeps no
/// task it has printed: run with its data segment held to 200 MB, it
/// lists a store of 300 MB of tasks. (It asked for one page of every task
/// and kept each it printed: over 300 MB.)
#[test]
fn list_without_a_limit_holds_a_page_not_the_store() {
    require_prlimit();
    let (_tmp, dir) = store_dir();
    let store = FileStore::builder(&dir)
        .durability(taskstore::Durability::Eventual)
        .open()
        .unwrap();
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

/// Makes `count` resumable tasks through `store`, and as many finished
/// ones, each carrying `payload` (as its input, or its result).
fn resumable_and_finished(store: &dyn TaskStore, payload: &str, count: usize) {
    for _ in 0..count {
        store
            .create(NewTask::new().resumable("report", json!(payload)))
            .unwrap();
        let done = store.create(NewTask::new()).unwrap();
        assert!(
            store
                .complete(&done.id, json!(payload))
                .unwrap()
                .is_applied()
        );
    }
}

/// The built command run with `args` on the store `target` names, its data
/// segment held to 200 MB (`prlimit`); it must succeed.
fn in_200_mb(args: &[&str], target: &[&str]) -> std::process::Output {
    let out = common::without_store_variables("prlimit")
        .arg("--data=200000000")
        .arg(env!("CARGO_BIN_EXE_taskstore"))
        .args(args)
        .args(target)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "taskstore {args:?}: stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
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
    let past = OffsetDateTime::now_utc() - time::Duration::hours(1);
    let store = FileStore::builder(&dir)
        .instance_id("gone")
        .clock(Arc::new(ManualClock::new(past)))
        .durability(taskstore::Durability::Eventual)
        .open()
        .unwrap();
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

/// A sweep in a process that can start no thread (its user's limit of
/// processes reached: `prlimit --nproc=1`, as `nobody` when the tests run
/// as root, whom the limit does not hold) still lists each task it
/// deletes, writing the lines itself. (Starting the thread that writes
/// them panicked at each task, in the store's sink, which contained it: a
/// backtrace on stderr per task, no line on stdout, and exit status 0.)
#[test]
fn a_sweep_that_can_start_no_thread_still_lists_each_task_it_deletes() {
    require_prlimit();
    let (_tmp, dir) = store_dir();
    let old = gone_an_hour_ago(&dir);
    let mut expected: Vec<String> = (0..3)
        .map(|_| {
            let task = old
                .create(NewTask::new().ttl(Duration::from_secs(60)))
                .unwrap();
            format!("deleted {}  working", task.id)
        })
        .collect();
    expected.sort_unstable();
    drop(old);
    let out = run_as_owner_under(&dir, &["prlimit", "--nproc=1", "--"], &["sweep"]);
    let said = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(!said.contains("panicked"), "{said}");
    let listed = stdout(&out);
    let mut deleted: Vec<&str> = listed
        .lines()
        .map(|line| line.split_once("  expired ").map_or(line, |(task, _)| task))
        .collect();
    deleted.sort_unstable();
    assert_eq!(deleted, expected, "{said}");
}

/// A reap deletes the expired tasks it meets (running tasks whose lease
/// lapsed, as a sweep would): its dry run says which, and the reap says it
/// did. (Both were silent: the task was gone with no word.)
#[test]
fn reap_and_its_dry_run_tell_the_expired_tasks_it_deletes() {
    let (_tmp, dir) = store_dir();
    let old = gone_an_hour_ago(&dir);
    let expired = old
        .create(NewTask::new().ttl(Duration::from_secs(60)))
        .unwrap();
    let orphan = old.create(NewTask::new()).unwrap();
    drop(old);
    let preview = run_expect(Some(&dir), &["reap", "--dry-run"], 0);
    let said = stdout(&preview);
    assert!(
        said.contains(&format!("would reap {}", orphan.id)),
        "{said}"
    );
    assert!(
        said.contains(&format!("would delete {}", expired.id)),
        "{said}"
    );
    let reaped = run_expect(Some(&dir), &["reap"], 0);
    let said = stdout(&reaped);
    assert!(said.contains(&format!("reaped {}", orphan.id)), "{said}");
    assert!(said.contains(&format!("deleted {}", expired.id)), "{said}");
    assert!(open(&dir).get(&expired.id).unwrap().is_none());
}

/// `repair --apply`, run as the store's owner, sets the mode of a task
/// file its owner may not read (`0000`, `0200`: a file the service cannot
/// read any more) back to `0600`, and the tasks list again. (It opened the
/// file for reading to set its mode, which such a mode refuses its owner:
/// "set mode 0600: FAILED: ... Permission denied", and exit 1.)
#[test]
fn repair_sets_the_mode_of_a_task_file_its_owner_may_not_read() {
    let (_tmp, dir) = store_dir();
    let tasks = store_with_tasks(&dir);
    let running = task_path(&dir, "active", &first(&tasks, TaskStatus::Working).id);
    let done = task_path(&dir, "done", &first(&tasks, TaskStatus::Completed).id);
    chmod(&running, 0o000);
    chmod(&done, 0o200);
    let out = run_as_owner_bound_by_modes(&dir, &["repair", "--apply"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    for path in [&running, &done] {
        let mode = fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
    let listed = run_as_owner_bound_by_modes(&dir, &["list", "--json"]);
    assert_eq!(listed.status.code(), Some(0), "{}", stderr(&listed));
    assert_eq!(json_lines(&listed).len(), tasks.len());
}

/// Runs the command on the store at `dir` as a user whose permissions hold
/// there: this process's user, or, as root (whom they do not stop),
/// `nobody`, who is given the store first.
fn run_as_owner_bound_by_modes(dir: &Path, args: &[&str]) -> Output {
    run_as_owner_under(dir, &[], args)
}

/// [`run_as_owner_bound_by_modes`], the command started by `wrapper` (a
/// program and its arguments, before the command's: `prlimit`) if given.
fn run_as_owner_under(dir: &Path, wrapper: &[&str], args: &[&str]) -> Output {
    let command: Vec<&str> = wrapper
        .iter()
        .copied()
        .chain([env!("CARGO_BIN_EXE_taskstore")])
        .collect();
    let me = String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout).unwrap();
    if me.trim() != "0" {
        return common::without_store_variables(command[0])
            .args(&command[1..])
            .args(args)
            .env("TASKSTORE_STORE", dir)
            .output()
            .expect("run the taskstore binary");
    }
    let nobody = Command::new("id").args(["-u", "nobody"]).output().unwrap();
    let uid: u32 = String::from_utf8(nobody.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    for entry in walk(dir) {
        std::os::unix::fs::lchown(&entry, Some(uid), None).unwrap();
    }
    std::os::unix::fs::lchown(dir, Some(uid), None).unwrap();
    // Every directory above the store must let nobody through: opened for
    // the run, as they were after it.
    let mut opened = Vec::new();
    let mut parent = dir.parent();
    while let Some(p) = parent {
        let mode = fs::metadata(p).unwrap().permissions().mode();
        if mode & 0o001 == 0 {
            chmod(p, mode | 0o001);
            opened.push((p.to_owned(), mode));
        }
        parent = p.parent();
    }
    let out = common::without_store_variables("runuser")
        .args(["-u", "nobody", "--"])
        .args(&command)
        .args(args)
        .env("TASKSTORE_STORE", dir)
        .output()
        .expect("run the taskstore binary as nobody");
    for (path, mode) in opened {
        chmod(&path, mode);
    }
    out
}

/// Every path under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if fs::symlink_metadata(&path).unwrap().is_dir() {
            found.extend(walk(&path));
        }
        found.push(path);
    }
    found
}

/// `verify` and `repair` meeting an open that holds the store alone (one
/// stopped in the middle of compacting it) wait at most `--wait`, then
/// fail naming the lock file and why (they waited for ever, printing
/// nothing); once it is let go they check the store.
#[test]
fn a_check_waits_for_an_open_holding_the_store_alone_only_its_wait() {
    let (_tmp, dir) = store_dir();
    store_with_tasks(&dir);
    let lock = dir.join("locks").join("handles.lock");
    let held = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&lock)
        .unwrap();
    held.lock().unwrap();
    for args in [
        &["verify", "--wait", "100ms"][..],
        &["repair", "--wait", "100ms"],
    ] {
        let out = run_expect(Some(&dir), args, 1);
        let said = stderr(&out);
        assert!(
            said.contains(&lock.display().to_string()) && said.contains("holds it alone"),
            "{args:?}: {said}"
        );
    }
    held.unlock().unwrap();
    run_expect(Some(&dir), &["verify", "--wait", "100ms"], 0);
    // A command that waits says so when it starts (it waited in silence,
    // up to 30 s), and goes on once the store is let go: `list` over a
    // handle, `stats` over a check.
    for args in [&["list"][..], &["stats"]] {
        held.lock().unwrap();
        let mut waiting = taskstore(Some(&dir), args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let said = following_stderr(waiting.stderr.take().unwrap());
        let first = said();
        assert!(
            first.contains("waiting up to 30s") && first.contains(&lock.display().to_string()),
            "{args:?}: {first}"
        );
        held.unlock().unwrap();
        assert_eq!(waiting.wait().unwrap().code(), Some(0), "{args:?}");
    }
}

/// A store whose directory is missing is refused by the commands that
/// read it whole, naming the directory (they said only "one of the
/// store's directories is missing or not a directory"), and `verify`
/// says what is wrong.
#[test]
fn a_store_missing_a_directory_is_refused_naming_it() {
    let (_tmp, dir) = store_dir();
    store_with_tasks(&dir);
    fs::remove_dir_all(dir.join("tmp")).unwrap();
    for args in [&["stats"][..], &["sweep", "--dry-run"]] {
        let out = run_expect(Some(&dir), args, 1);
        assert!(
            stderr(&out).contains("its tmp/ is missing, not a directory, or a symlink: run verify"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let out = run_expect(Some(&dir), &["verify"], 1);
    assert!(stdout(&out).contains("tmp"), "{}", stdout(&out));
}

/// The command run as root on a store another user owns (the service's)
/// refuses it, naming both users and how to run it, and changes nothing:
/// every command, reading or writing. (A root `cancel` made lock files
/// and task files root's own, `0600`: the service could no longer lock
/// those stripes or read those tasks, and root's `verify` said "clean".)
#[test]
fn the_command_refuses_a_store_another_user_owns() {
    let me = String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout).unwrap();
    if me.trim() != "0" {
        eprintln!("cli: not root: cannot give a store to another user; skipped");
        return;
    }
    let (_tmp, dir) = store_dir();
    let tasks = store_with_tasks(&dir);
    let other = 4_242;
    std::os::unix::fs::lchown(&dir, Some(other), None).unwrap();
    for entry in walk(&dir) {
        std::os::unix::fs::lchown(&entry, Some(other), None).unwrap();
    }
    let before: Vec<(PathBuf, u32)> = walk(&dir)
        .into_iter()
        .map(|p| {
            let uid = std::os::unix::fs::MetadataExt::uid(&fs::symlink_metadata(&p).unwrap());
            (p, uid)
        })
        .collect();
    let id = tasks[0].id.to_string();
    for args in [
        &["cancel", id.as_str()][..],
        &["list"],
        &["verify"],
        &["stats"],
        &["sweep"],
        &["repair", "--apply"],
    ] {
        let out = run_expect(Some(&dir), args, 1);
        let said = stderr(&out);
        assert!(
            said.contains("belongs to uid 4242") && said.contains("run it as uid 4242"),
            "taskstore {args:?}: {said}"
        );
    }
    let after: Vec<(PathBuf, u32)> = walk(&dir)
        .into_iter()
        .map(|p| {
            let uid = std::os::unix::fs::MetadataExt::uid(&fs::symlink_metadata(&p).unwrap());
            (p, uid)
        })
        .collect();
    assert_eq!(after, before, "nothing made or changed");
}

/// A store directory the command may not open (its permissions) is an
/// error naming it and why, for `verify` as for the counts and dry runs:
/// never a clean store. (`verify` said "clean (0 entries checked)" and
/// exited 0; the others said a directory was missing, "run verify".)
#[test]
fn a_store_directory_that_cannot_be_opened_is_an_error_naming_it() {
    let (_tmp, dir) = store_dir();
    store_with_tasks(&dir);
    let active = dir.join("active");
    chmod(&active, 0o000);
    for args in [&["verify"][..], &["stats"], &["sweep", "--dry-run"]] {
        let out = run_as_owner_bound_by_modes(&dir, args);
        let said = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "taskstore {args:?}: {said}");
        assert!(
            said.contains(&active.display().to_string()) && said.contains("ermission denied"),
            "taskstore {args:?}: {said}"
        );
    }
    chmod(&active, 0o700);
    // A store whose marker cannot be looked at is said so, not "not a
    // store".
    chmod(&dir, 0o000);
    let out = run_as_owner_bound_by_modes(&dir, &["list"]);
    let said = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("cannot look at") && said.contains("ermission denied"),
        "{said}"
    );
    chmod(&dir, 0o700);
}

/// `tail` reads the file a chunk at a time and keeps at most one line, of
/// at most 16 MiB: run with its data segment held to 80 MB, it reads a
/// 150 MB file, and a line over the bound (one of 40 MB in the middle, one
/// of 30 MB never ended at the end) is reported by its number and skipped,
/// with the events after it still printed. (It read the whole file into
/// memory first, and a line that never ended grew without bound.)
#[test]
fn tail_holds_a_line_not_the_file() {
    use std::io::Write as _;
    require_prlimit();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("events.jsonl");
    let mut out = std::io::BufWriter::new(fs::File::create(&file).unwrap());
    let filler = "x".repeat(1_000);
    let mut completed = 0;
    let mut number = 0;
    let mut line = |out: &mut std::io::BufWriter<fs::File>, kind: &str, note: &str| {
        number += 1;
        let event = json!({"at": "2026-01-01T00:00:00Z", "kind": kind, "data": {"n": number, "note": note}});
        writeln!(out, "{event}").unwrap();
        number
    };
    let mut long_line = 0;
    for n in 0..150_000 {
        if n % 1_000 == 0 {
            line(&mut out, "task.completed", "");
            completed += 1;
        } else {
            line(&mut out, "task.created", &filler);
        }
        if n == 75_000 {
            long_line = line(&mut out, "task.created", &"y".repeat(40 << 20));
        }
    }
    write!(
        out,
        "{{\"at\":\"2026-01-01T00:00:00Z\",\"note\":\"{}",
        "z".repeat(30 << 20)
    )
    .unwrap();
    let last_line = number + 1;
    drop(out);
    let run = common::without_store_variables("prlimit")
        .arg("--data=80000000")
        .arg(env!("CARGO_BIN_EXE_taskstore"))
        .args(["tail", "--kind", "task.completed", "--json"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(json_lines(&run).len(), completed, "stderr: {stderr}");
    for number in [long_line, last_line] {
        assert!(
            stderr.contains(&format!(":{number}: a line of "))
                && stderr.contains("over the 16 MiB"),
            "line {number} is reported: {stderr}"
        );
    }
}

/// `reap --dry-run` counts apart the orphans it would reap and those that
/// wait for a claim, as the real reap would treat them. (The summary
/// counted every orphan as one that would be reaped.)
#[test]
fn reap_dry_run_counts_what_would_be_reaped_apart_from_what_waits_for_a_claim() {
    let (_tmp, dir) = store_dir();
    let old = gone_an_hour_ago(&dir);
    old.create(NewTask::new()).unwrap();
    old.create(NewTask::new().resumable("report", json!({"q": 3})))
        .unwrap();
    drop(old);
    let out = run_expect(Some(&dir), &["reap", "--dry-run", "--claim-grace", "2h"], 0);
    assert!(
        stderr(&out).contains("2 orphan(s); 1 would be reaped, 1 left for a claim"),
        "{}",
        stderr(&out)
    );
}

/// `stats` reads each task as a reader gets it: a stale running copy left
/// in `active/` beside the terminal one in `done/` counts as the finished
/// task the API returns, not as a running one. (With the read rule turned
/// round, the census kept the stale copy.)
#[test]
fn stats_count_a_task_with_a_stale_copy_as_the_api_reads_it() {
    let (_tmp, dir) = store_dir();
    let store = open(&dir);
    let task = store.create(NewTask::new()).unwrap();
    let running = fs::read(task_path(&dir, "active", &task.id)).unwrap();
    assert!(store.complete(&task.id, json!(1)).unwrap().is_applied());
    drop(store);
    let path = task_path(&dir, "active", &task.id);
    fs::write(&path, running).unwrap();
    chmod(&path, 0o600);
    let out = run_expect(Some(&dir), &["stats", "--json"], 0);
    let stats: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        (
            stats["active"].clone(),
            stats["byStatus"]["completed"].clone()
        ),
        (json!(0), json!(1)),
        "{stats:#}"
    );
}

/// A line of a `JsonLinesSink` file: an event of `kind`.
fn event(kind: &str) -> String {
    format!("{{\"at\":\"2026-01-01T00:00:00Z\",\"pid\":1,\"kind\":\"{kind}\",\"data\":null}}\n")
}

/// `tail FILE -n 1 --follow` (`path` its file) prints the event of kind
/// `last` there, then the one of kind `next` once it is appended.
fn follows(file: &str, path: &Path, last: &str, next: &str) {
    use std::io::Write as _;
    let mut tail = taskstore(None, &["tail", file, "-n", "1", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let next_line = following(tail.stdout.take().unwrap());
    let kind = || {
        next_line()
            .split("  ")
            .nth(2)
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(kind(), last);
    fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(event(next).as_bytes())
        .unwrap();
    assert_eq!(kind(), next);
    tail.kill().unwrap();
    tail.wait().unwrap();
}

/// The next line a following `tail` writes on `out`, each time it is
/// called: read on a thread of its own, so that a `tail` that stopped
/// printing fails the test after [`common::HANG`] rather than hang it.
fn following(out: std::process::ChildStdout) -> impl Fn() -> String {
    lines_of(out)
}

/// [`following`], for a child's stderr.
fn following_stderr(err: std::process::ChildStderr) -> impl Fn() -> String {
    lines_of(err)
}

/// The next line a child writes on `out`, each time it is called (see
/// [`following`]).
fn lines_of(out: impl std::io::Read + Send + 'static) -> impl Fn() -> String {
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    move || {
        rx.recv_timeout(common::HANG)
            .expect("the child printed nothing more")
    }
}

/// `line` as the real run prints it: its dry run's, done.
fn done(mut line: Value) -> Value {
    line["outcome"] = json!("done");
    line
}

/// A real sweep's `--json` line for each task it deletes is its dry run's
/// line, but for its outcome: the same fields (`status`, `expiredAt`), by
/// the same names. (The real sweep's lacked `expiredAt`: its task.expired
/// event carried no expiry.)
#[test]
fn a_sweep_prints_each_task_it_deletes_as_its_dry_run_does() {
    let (_tmp, dir) = store_dir();
    let old = gone_an_hour_ago(&dir);
    let running = old
        .create(NewTask::new().ttl(Duration::from_secs(60)))
        .unwrap();
    let finished = old
        .create(NewTask::new().ttl(Duration::from_secs(90)))
        .unwrap();
    assert!(old.complete(&finished.id, json!(1)).unwrap().is_applied());
    drop(old);
    let by_id = |out: &Output| -> BTreeMap<String, Value> {
        json_lines(out)
            .into_iter()
            .map(|line| (line["taskId"].as_str().unwrap().to_owned(), line))
            .collect()
    };
    let planned = by_id(&run_expect(
        Some(&dir),
        &["sweep", "--dry-run", "--json"],
        0,
    ));
    let deleted = by_id(&run_expect(Some(&dir), &["sweep", "--json"], 0));
    assert_eq!(planned.len(), 2, "{planned:#?}");
    let expected: BTreeMap<String, Value> = planned
        .into_iter()
        .map(|(id, line)| (id, done(line)))
        .collect();
    assert_eq!(deleted, expected);
    let expired_at = |task: &Task| {
        (task.created_at + task.ttl.unwrap())
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    assert_eq!(
        deleted[running.id.as_str()]["expiredAt"],
        expired_at(&running)
    );
    assert_eq!(
        deleted[finished.id.as_str()]["expiredAt"],
        expired_at(&finished)
    );
    assert_eq!(deleted[finished.id.as_str()]["status"], "completed");
}

/// A real reap's `--json` line for an expired task it deletes is its dry
/// run's line, but for its outcome: with its `status` and `expiredAt`.
/// (The real reap's said only `taskId`, `action` and `outcome`.)
#[test]
fn a_reap_prints_each_expired_task_it_deletes_as_its_dry_run_does() {
    let (_tmp, dir) = store_dir();
    let old = gone_an_hour_ago(&dir);
    let expired = old
        .create(NewTask::new().ttl(Duration::from_secs(60)))
        .unwrap();
    let orphan = old.create(NewTask::new()).unwrap();
    drop(old);
    let of = |out: &Output, id: &TaskId| -> Value {
        let lines: Vec<Value> = json_lines(out)
            .into_iter()
            .filter(|line| line["taskId"] == id.as_str())
            .collect();
        assert_eq!(lines.len(), 1, "{id}: {lines:#?}");
        lines[0].clone()
    };
    let planned = run_expect(Some(&dir), &["reap", "--dry-run", "--json"], 0);
    let reaped = run_expect(Some(&dir), &["reap", "--json"], 0);
    let line = of(&reaped, &expired.id);
    assert_eq!(line, done(of(&planned, &expired.id)));
    assert_eq!(
        (&line["action"], &line["status"]),
        (&json!("delete"), &json!("working"))
    );
    assert!(line["expiredAt"].is_string(), "{line}");
    assert_eq!(of(&reaped, &orphan.id)["action"], "reap");
}

/// `list --json --next-cursor` ends each page with a line of its own,
/// `{"nextCursor": …}`, which `--after` takes, or null after the last
/// page; every other line is a task. The cursor is still said on stderr,
/// for people. Without `--next-cursor` every line is a task, as scripts
/// that read them so expect (`list_json_is_the_api_listing`); without
/// `--json` it is a usage error. (The cursor was on stderr alone.)
#[test]
fn list_json_ends_a_page_with_its_next_cursor_when_asked() {
    let (_tmp, dir) = store_dir();
    let tasks = store_with_tasks(&dir);
    let mut listed: Vec<TaskId> = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut args = vec!["list", "--json", "--limit", "3", "--next-cursor"];
        if let Some(cursor) = &after {
            args.extend(["--after", cursor.as_str()]);
        }
        let out = run_expect(Some(&dir), &args, 0);
        pages += 1;
        let mut lines = json_lines(&out);
        let last = lines.pop().expect("a last line");
        assert_eq!(last.as_object().map(|o| o.len()), Some(1), "{last}");
        let cursor = match &last["nextCursor"] {
            Value::String(cursor) => Some(cursor.clone()),
            Value::Null => None,
            other => panic!("{other}"),
        };
        for line in lines {
            let task: Task = serde_json::from_value(line).unwrap();
            listed.push(task.id);
        }
        match &cursor {
            Some(cursor) => assert!(
                stderr(&out).contains(&format!("next cursor: {cursor}")),
                "{}",
                stderr(&out)
            ),
            None => assert!(!stderr(&out).contains("next cursor"), "{}", stderr(&out)),
        }
        after = cursor;
        if after.is_none() {
            break;
        }
        assert!(pages < 10, "the pages never end");
    }
    let api: Vec<TaskId> = open(&dir)
        .list(&ListQuery::all())
        .unwrap()
        .tasks
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(listed, api);
    assert_eq!(listed.len(), tasks.len());
    assert!(pages >= 3, "{pages} pages of 3 for {} tasks", tasks.len());
    // Without it, tasks alone; without --json, a usage error.
    let out = run_expect(Some(&dir), &["list", "--json", "--limit", "3"], 0);
    assert!(
        json_lines(&out)
            .iter()
            .all(|line| line.get("taskId").is_some())
    );
    assert!(stderr(&out).contains("next cursor: "), "{}", stderr(&out));
    run_expect(Some(&dir), &["list", "--limit", "3", "--next-cursor"], 2);
}

/// A crashed writer's leftovers that the next open removes (a dead
/// writer's temp file, a stale copy beside a finished task) are listed by
/// `verify`, text and JSON (`"severity": "leftover"`), but pass: it exits
/// 0, and can serve as a start-up check. A problem beside them fails it.
/// (Any leftover made it exit 1, after most crashes.)
#[test]
fn verify_lists_leftovers_of_crashed_writers_and_passes() {
    let (_tmp, dir) = store_dir();
    let tasks = store_with_tasks(&dir);
    let working = first(&tasks, TaskStatus::Working);
    let temp = dir.join("tmp").join(format!("{}.999999.1.tmp", working.id));
    fs::write(&temp, b"{\"format\":1,\"task\":{").unwrap();
    chmod(&temp, 0o600);
    let out = run_expect(Some(&dir), &["verify", "--json"], 0);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(
        (
            &lines[0]["problem"],
            &lines[0]["severity"],
            &lines[0]["path"]
        ),
        (
            &json!("dead_temp"),
            &json!("leftover"),
            &json!(temp.to_str().unwrap())
        )
    );
    let out = run_expect(Some(&dir), &["verify"], 0);
    assert!(
        stdout(&out).contains(&format!("{}: ", temp.display()))
            && stdout(&out).contains("leftover"),
        "{}",
        stdout(&out)
    );
    assert!(stderr(&out).contains("1 leftover"), "{}", stderr(&out));
    // A problem beside it fails the check.
    let finished = task_path(&dir, "done", &first(&tasks, TaskStatus::Completed).id);
    chmod(&finished, 0o644);
    let out = run_expect(Some(&dir), &["verify", "--json"], 1);
    let severity = |path: &Path| -> Value {
        json_lines(&out)
            .into_iter()
            .find(|line| line["path"] == path.to_str().unwrap())
            .unwrap_or_else(|| panic!("{}: {}", path.display(), stdout(&out)))["severity"]
            .clone()
    };
    assert_eq!(severity(&finished), "problem");
    assert_eq!(severity(&temp), "leftover");
    // The help says which exit status means what.
    let help = stdout(&run_expect(None, &["verify", "--help"], 0));
    assert!(
        help.contains("leftover") && help.contains("Exits 0"),
        "{help}"
    );
}

/// `tail -n N` reads the file back from its end, a block at a time, only
/// as far as its last N events: behind them a sparse hole of 4 GiB, which
/// read whole is one line of NULs past the 16 MiB a line may be, is never
/// read (so not reported), and a bad line among what it reads is reported
/// by its byte offset (its line number is not known). With `--follow` it
/// then reads on from the end. (It read every line of the file.)
#[test]
fn tail_n_reads_back_from_the_end_only_as_far_as_its_events() {
    use std::io::Write as _;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("events.jsonl");
    let hole: u64 = (4 << 30) + 3;
    let file = fs::File::create(&path).unwrap();
    file.set_len(hole).unwrap();
    drop(file);
    let tail_lines = [
        event("k0"),
        "not an event\n".to_owned(),
        event("k1"),
        event("k2"),
    ];
    let mut file = fs::OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(b"\n").unwrap();
    file.write_all(tail_lines.concat().as_bytes()).unwrap();
    drop(file);
    let bad_at = hole + 1 + tail_lines[0].len() as u64;
    let name = path.to_str().unwrap();
    let kinds = |out: &Output| -> Vec<String> {
        stdout(out)
            .lines()
            .map(|l| l.split("  ").nth(2).unwrap().to_owned())
            .collect()
    };
    let out = run_expect(None, &["tail", name, "-n", "2"], 0);
    assert_eq!(kinds(&out), ["k1", "k2"]);
    assert_eq!(stderr(&out), "");
    let out = run_expect(None, &["tail", name, "-n", "3"], 1);
    assert_eq!(kinds(&out), ["k0", "k1", "k2"]);
    assert!(
        stderr(&out).contains(&format!("{name}: the line at byte {bad_at}: not an event")),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("MiB"), "{}", stderr(&out));
    let out = run_expect(None, &["tail", name, "-n", "1", "--kind", "k1"], 0);
    assert_eq!(kinds(&out), ["k1"]);
    // Following: the last one there, then each new one.
    follows(name, &path, "k2", "k3");
}

/// `verify --wait` bounds its waits for task locks too, and waits it once
/// however many locks a stopped process holds: beside a process stopped
/// holding two stripes, each with a stale `expiring/` entry to judge (a
/// sweep stopped before its end leaves them), `verify --wait 1s` reports
/// both locks as problems having given up one wait (each wait given up
/// leaves its thread behind, counted while the command runs). (It waited
/// a fixed 30 s for each lock, whatever `--wait` said: a minute.)
#[cfg(target_os = "linux")]
#[test]
fn verify_beside_a_process_stopped_holding_two_stripes_waits_once() {
    let test = "verify_beside_a_process_stopped_holding_two_stripes_waits_once";
    common::hold_locks_if_the_holder();
    let (tmp, dir) = store_dir();
    let clock = ManualClock::new(OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap());
    let store = FileStore::builder(&dir)
        .clock(Arc::new(clock.clone()))
        .open()
        .unwrap();
    let ids = [common::id_in_stripe("x", 10), common::id_in_stripe("y", 50)];
    for id in &ids {
        store
            .create(NewTask::new().id(id.clone()).ttl(Duration::from_secs(3600)))
            .unwrap();
        assert!(store.complete(id, json!(1)).unwrap().is_applied());
        // Removed by a sweep stopped before it removed the entries.
        fs::remove_file(dir.join("done").join(format!("{id}.json"))).unwrap();
    }
    drop(store);
    let locks: Vec<PathBuf> = ids
        .iter()
        .map(|id| common::stripe_lock(&dir, id.as_str()))
        .collect();
    let holder = common::stopped_holder(test, tmp.path(), &locks);
    let mut verify = taskstore(Some(&dir), &["verify", "--wait", "1s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut waits = 0;
    wait_until("verify to end", || {
        waits = waits.max(common::stripe_waits_of(verify.id()));
        verify.try_wait().unwrap().is_some()
    });
    assert!(common::is_stopped(holder.child.id()));
    holder.kill();
    let out = verify.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    for lock in &locks {
        let lock = lock.file_name().unwrap().to_str().unwrap();
        assert!(stdout(&out).contains(lock), "{lock}: {}", stdout(&out));
    }
    assert_eq!(waits, 1, "stripe waits given up");
}
