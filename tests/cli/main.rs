//! The `taskstore` command, run as a user runs it: the built binary
//! (`CARGO_BIN_EXE_taskstore`) on real stores, checked against what the
//! library's API says, beside writer processes (this test binary re-run as
//! its children, see `common::spawn`).

#[path = "../common/mod.rs"]
mod common;
#[cfg(feature = "postgres")]
#[path = "../common/pg.rs"]
mod pg_cluster;

mod copy;
mod damage;
mod escaping;
mod formats;
mod memory;
mod output;
mod permissions;
#[cfg(feature = "postgres")]
mod postgres;
mod reads;
mod repair;
mod sweep_reap;
mod tail;
mod usage;
mod verify;
mod waits;
mod writer_process;

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

use damage::{DAMAGE, Damage};

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
// sweep, reap

/// A handle on `dir` of an instance whose clock reads an hour ago: the
/// tasks it makes, with a short TTL or lease, are expired or orphaned now.
fn gone_an_hour_ago(dir: &Path) -> FileStore {
    an_hour_ago(dir).instance_id("gone").open().unwrap()
}

/// `builder`'s store opened with `Eventual` durability: a test's many
/// tasks made fast, their fsyncs beside the point.
fn eventual(builder: taskstore::FileStoreBuilder) -> FileStore {
    builder
        .durability(taskstore::Durability::Eventual)
        .open()
        .unwrap()
}

/// A builder of a store on `dir` whose clock reads an hour ago.
fn an_hour_ago(dir: &Path) -> taskstore::FileStoreBuilder {
    let past = OffsetDateTime::now_utc() - time::Duration::hours(1);
    FileStore::builder(dir).clock(Arc::new(ManualClock::new(past)))
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
    let fast = eventual(FileStore::builder(dir).instance_id("writer"));
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

/// `prlimit` (util-linux), which the tests that hold the command's memory
/// run it under: `.ci/run` installs it.
fn require_prlimit() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        panic!("prlimit (util-linux) is needed: .ci/run installs it");
    }
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
    give_to_nobody(dir);
    run_as_nobody(dir, &command, args)
}

/// Gives the store at `dir`, and everything in it, to `nobody`.
fn give_to_nobody(dir: &Path) {
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
}

/// Runs `command` (a program and its arguments) and `args` on the store at
/// `dir` as `nobody` (this process runs as root), the store as it is.
fn run_as_nobody(dir: &Path, command: &[&str], args: &[&str]) -> Output {
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
        .args(command)
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

/// The next line a following `tail` writes on `out`, each time it is
/// called: read on a thread of its own, so that a `tail` that stopped
/// printing fails the test after [`common::HANG`] rather than hang it.
fn following(out: std::process::ChildStdout) -> impl Fn() -> String {
    lines_of(out)
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
