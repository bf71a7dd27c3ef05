//! Helpers shared by the integration tests: child processes, polling, ids.
//!
//! Multi-process tests spawn this very test binary as their children, the way
//! `sled`'s crash tests do: the child runs the same test function (`--exact`),
//! which sees [`ROLE_VAR`] in its environment and plays the role it names
//! instead of the parent's part.

#![allow(dead_code)] // every test binary uses a different subset

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use taskstore::{Task, TaskId};

mod skip;

/// The environment variable that turns a test run into a child's role.
pub const ROLE_VAR: &str = "TASKSTORE_TEST_ROLE";
/// The child's arguments, one per line.
pub const ARGS_VAR: &str = "TASKSTORE_TEST_ARGS";

/// How long a poll may wait before the test counts as hung. Generous on
/// purpose: it only ever fails a test that would otherwise never end.
pub const HANG: Duration = Duration::from_secs(180);

mod logged;
#[allow(unused_imports)]
pub use logged::{LogEvent, Logged};

// The benchmarks include this file alone.
mod tree;
#[allow(unused_imports)]
pub use tree::copy_dir;

mod command;
#[allow(unused_imports)]
pub use command::without_store_variables;

#[cfg(target_os = "linux")]
mod limits;
#[cfg(target_os = "linux")]
#[allow(unused_imports)]
pub use limits::{lowest_free_descriptor, set_soft_limit};

/// The role this process plays, if it is a child: its name and arguments.
pub fn role() -> Option<(String, Vec<String>)> {
    let name = std::env::var(ROLE_VAR).ok()?;
    let args = std::env::var(ARGS_VAR)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    Some((name, args))
}

/// Starts this test binary as a child running only `test` in `role`.
/// Its stderr goes to `<dir>/<role>-<n>.stderr` so a failing child's panic
/// message can be shown by [`finish`].
pub fn spawn(dir: &Path, test: &str, role: &str, args: &[String]) -> Running {
    let exe = std::env::current_exe().expect("the test binary's path");
    let stderr_path = unique_path(dir, &format!("{role}.stderr"));
    let stderr = File::create(&stderr_path).expect("child stderr file");
    let child = Command::new(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(ROLE_VAR, role)
        .env(ARGS_VAR, args.join("\n"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn a child test process");
    Running {
        child,
        stderr_path,
        role: role.to_owned(),
    }
}

/// A child process and where its stderr goes.
pub struct Running {
    pub child: Child,
    pub stderr_path: PathBuf,
    pub role: String,
}

impl Running {
    /// Waits for the child and fails the test, with its stderr, unless it
    /// exited successfully.
    pub fn finish(mut self) {
        let status = self.child.wait().expect("wait for a child");
        if !status.success() {
            let stderr = fs::read_to_string(&self.stderr_path).unwrap_or_default();
            panic!(
                "child {} failed with {status}; its stderr:\n{stderr}",
                self.role
            );
        }
    }

    /// Panics with the child's stderr if it has already exited unsuccessfully
    /// (so a parent waiting on it fails at once, with the reason).
    pub fn check_alive(&mut self) {
        if let Some(status) = self.child.try_wait().expect("poll a child")
            && !status.success()
        {
            let stderr = fs::read_to_string(&self.stderr_path).unwrap_or_default();
            panic!(
                "child {} failed with {status}; its stderr:\n{stderr}",
                self.role
            );
        }
    }

    /// Kills the child with `SIGKILL` (what `Child::kill` sends on Unix) and
    /// reaps it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        self.child.wait().expect("reap a killed child");
    }
}

/// A child killed (`SIGKILL`) and reaped when this is dropped, a test that
/// fails included: a process stopped while it holds a store's locks must
/// not outlive its test, nor keep the test's threads waiting for them as
/// the test unwinds.
pub struct KilledOnDrop(Option<Running>);

impl KilledOnDrop {
    pub fn new(child: Running) -> KilledOnDrop {
        KilledOnDrop(Some(child))
    }

    /// Kills the child now (once).
    pub fn kill(&mut self) {
        if let Some(child) = self.0.take() {
            child.kill();
        }
    }

    /// Whether the child is alive and stopped (`SIGSTOP`).
    pub fn is_stopped(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|child| is_stopped(child.child.id()))
    }
}

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}

fn unique_path(dir: &Path, name: &str) -> PathBuf {
    for n in 0.. {
        let p = dir.join(format!("{n}-{name}"));
        if !p.exists() {
            return p;
        }
    }
    unreachable!()
}

/// A process forked from this one, waiting to run a closure (see [`fork`]).
#[cfg(target_os = "linux")]
pub struct Forked {
    pid: libc::pid_t,
    /// The pipe the child waits on: a byte lets it run, its closing ends
    /// it.
    go: Option<std::io::PipeWriter>,
}

/// Forks this process. The child waits until [`Forked::go`] (or
/// [`Forked::finish`]), runs `child`, and ends with `_exit`: status 0 if it
/// returned `true`, 1 if it returned `false` or panicked, or if this
/// process let go of it without `go`. It runs nothing else of this
/// process's. Call it only from a process that runs one test alone (a child
/// [`spawn`] started): a lock another thread held at the fork would stay
/// held in the child for ever.
#[cfg(target_os = "linux")]
pub fn fork(child: impl FnOnce() -> bool) -> Forked {
    use std::io::Read;

    let (mut go_read, go_write) = std::io::pipe().expect("a pipe");
    // SAFETY: the child runs `child` and `_exit`s; see above for the locks.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        drop(go_write);
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            go_read.read_exact(&mut [0]).is_ok() && child()
        }));
        // SAFETY: ends the child without running this process's exit (its
        // atexit handlers, its destructors).
        unsafe { libc::_exit(i32::from(ok.ok() != Some(true))) }
    }
    Forked {
        pid,
        go: Some(go_write),
    }
}

#[cfg(target_os = "linux")]
impl Forked {
    /// Lets the child run its closure (once).
    pub fn go(&mut self) {
        use std::io::Write;

        if let Some(mut go) = self.go.take() {
            go.write_all(b"!").expect("tell the forked child to go");
        }
    }

    /// Whether the child has ended (it stays a zombie until
    /// [`finish`](Self::finish) reaps it).
    pub fn has_ended(&self) -> bool {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        // The state follows the command name, in parentheses.
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
    }

    /// Lets the child run if it has not yet, waits for it, and fails the
    /// test unless its closure returned `true`.
    pub fn finish(mut self) {
        self.go();
        let mut status = 0;
        // SAFETY: waits for the child this process forked.
        assert_eq!(unsafe { libc::waitpid(self.pid, &mut status, 0) }, self.pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the forked child failed (wait status {status})"
        );
    }
}

/// Polls `cond` every few milliseconds until it holds. Panics only after
/// [`HANG`], i.e. when the test would otherwise hang.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < HANG, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// [`wait_until`], failing early with a child's stderr if one of `children`
/// fails meanwhile.
pub fn wait_for(children: &mut [Running], what: &str, mut cond: impl FnMut() -> bool) {
    wait_until(what, || {
        children.iter_mut().for_each(Running::check_alive);
        cond()
    });
}

/// Creates the file `path` (a flag other processes poll for).
pub fn touch(path: &Path) {
    File::create(path).expect("create a flag file");
}

/// Writes `contents` to `path` atomically (temp file + rename), so that a
/// process polling for `path` never reads it half-written.
pub fn write_atomic(path: &Path, contents: &[u8]) {
    let temp = path.with_extension("partial");
    let mut f = File::create(&temp).expect("create a result file");
    f.write_all(contents).expect("write a result file");
    drop(f);
    fs::rename(&temp, path).expect("publish a result file");
}

/// Writes tasks as JSON lines to `path`, atomically.
pub fn write_tasks(path: &Path, tasks: &[Task]) {
    let mut out = Vec::new();
    for t in tasks {
        serde_json::to_writer(&mut out, t).expect("encode a task");
        out.push(b'\n');
    }
    write_atomic(path, &out);
}

/// Reads tasks written by [`write_tasks`].
pub fn read_tasks(path: &Path) -> Vec<Task> {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).expect("decode a task line"))
        .collect()
}

/// A task id from a prefix and a number (`race-0042`).
pub fn id(prefix: &str, n: usize) -> TaskId {
    TaskId::parse(&format!("{prefix}-{n:04}")).expect("a valid test id")
}

/// A small deterministic random number generator (xorshift64*), so that tests
/// need no extra dependency and a failing seed can be replayed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// A seed from the time and the process id, printed so it can be replayed.
    pub fn from_entropy(what: &str) -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let seed = nanos ^ (u64::from(std::process::id()) << 32);
        eprintln!("{what}: seed {seed}");
        Rng::new(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// A store at `root` whose `active/` grew to 6,000 running tasks and then
/// kept only the last one (made through a handle gone since): that task,
/// and `active/`'s size once grown; `None` where directories shrink by
/// themselves (under 64 KiB grown: nothing for an open to compact).
pub fn grown_and_emptied(root: &Path) -> Option<(taskstore::Task, u64)> {
    use std::os::unix::fs::MetadataExt;
    use taskstore::{FileStore, NewTask, TaskStore};
    let store = FileStore::builder(root)
        .durability(taskstore::Durability::Eventual)
        .max_active(100_000)
        .open()
        .unwrap();
    let mut tasks: Vec<taskstore::Task> = (0..6_000)
        .map(|_| store.create(NewTask::new()).unwrap())
        .collect();
    let grown = fs::metadata(root.join("active")).unwrap().size();
    let kept = tasks.pop().unwrap();
    for task in &tasks {
        assert!(store.delete(&task.id).unwrap());
    }
    if grown < 64 * 1024 {
        eprintln!("this file system shrinks directories: nothing to compact");
        return None;
    }
    Some((kept, grown))
}

/// Makes the (closed) store at `root` what a store of format 1 was: no
/// `expiring/` index, marker 1.
pub fn make_format_1(root: &Path) {
    fs::remove_dir_all(root.join("expiring")).unwrap();
    fs::write(
        root.join("taskstore.json"),
        b"{\"format\":1,\"kind\":\"taskstore\"}\n",
    )
    .unwrap();
}

/// Every path under `root` (symlinks not followed), sorted.
pub fn tree(root: &Path) -> Vec<std::path::PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            out.push(path.clone());
            if path.is_dir() && !path.is_symlink() {
                walk(&path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, &mut out);
    out.sort();
    out
}

/// [`tree`] with each file's bytes (`None` for a directory or symlink).
pub fn tree_of(root: &Path) -> Vec<(std::path::PathBuf, Option<Vec<u8>>)> {
    tree(root)
        .into_iter()
        .map(|path| {
            let bytes = (path.is_file() && !path.is_symlink()).then(|| fs::read(&path).unwrap());
            (path, bytes)
        })
        .collect()
}

/// The files in one of the store's directories (empty if it is missing).
pub fn files_in(store: &Path, dir: &str) -> Vec<String> {
    match fs::read_dir(store.join(dir)) {
        Ok(entries) => {
            let mut names: Vec<String> = entries
                .map(|e| e.expect("read a directory entry").file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }
        Err(_) => Vec::new(),
    }
}

/// Terminal tasks still in `active/`: terminal moves interrupted between
/// their two steps (write the terminal task in place, rename it into
/// `done/`). The next sweep, or the next locked access, finishes them.
/// Reads the files raw (FORMAT.md: `{"format":1,"task":{..}}`).
pub fn unmoved(store: &Path) -> Vec<String> {
    files_in(store, "active")
        .into_iter()
        .filter(|name| {
            let Ok(bytes) = fs::read(store.join("active").join(name)) else {
                return false; // moved or removed since it was listed
            };
            let file: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            matches!(
                file["task"]["status"].as_str(),
                Some("completed" | "failed" | "cancelled")
            )
        })
        .collect()
}

/// Ids with a name in both `active/` and `done/`: a terminal move between
/// its two steps (the task's file linked into `done/`, its name in
/// `active/` not yet removed). The next open or write of the task resolves
/// it.
pub fn half_moved(store: &Path) -> Vec<String> {
    let done = files_in(store, "done");
    files_in(store, "active")
        .into_iter()
        .filter(|n| done.contains(n))
        .collect()
}

/// Ids whose names in `active/` and `done/` are two different files: two
/// versions of one task, a state no writer leaves (only a power loss can),
/// checked as an invariant.
pub fn two_versions(store: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    half_moved(store)
        .into_iter()
        .filter(|n| {
            let ino = |area: &str| fs::metadata(store.join(area).join(n)).map(|m| m.ino()).ok();
            match (ino("active"), ino("done")) {
                (Some(a), Some(d)) => a != d,
                _ => false, // moved on since it was listed
            }
        })
        .collect()
}

/// The lock stripe of task `id`, as FORMAT.md defines it (written from the
/// format, not taken from the store): FNV-1a-64 of the id's bytes, mod 64.
pub fn stripe(id: &str) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % 64) as usize
}

/// The ids a listing of `store` gives, in listing order.
pub fn ids_of(store: &impl taskstore::TaskStore, query: &taskstore::ListQuery) -> Vec<TaskId> {
    store
        .list(query)
        .unwrap()
        .tasks
        .into_iter()
        .map(|t| t.id)
        .collect()
}

/// Whether a thread of this process is named `name` (its `comm`, which the
/// kernel cuts to 15 bytes).
pub fn thread_named(name: &str) -> bool {
    let name = &name[..name.len().min(15)];
    fs::read_dir("/proc/self/task")
        .expect("list /proc/self/task")
        .filter_map(|t| fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .any(|comm| comm.trim_end() == name)
}

/// Set to `1` to make every skip of a test that needs root (the power-cut,
/// full-disk and read-only-store tests: loop devices, mounts) a failure:
/// CI sets it, so a machine that cannot run them is noticed.
pub const REQUIRE_ROOT_VAR: &str = "TASKSTORE_REQUIRE_ROOT_TESTS";

/// What a test that needs root skipped and why; printed as it happens, a
/// failure when [`REQUIRE_ROOT_VAR`] is set (the rule of `skip.rs`).
pub struct Skips {
    test: &'static str,
    required: bool,
    skipped: Vec<String>,
}

impl Skips {
    /// The skips of `test` (its file's name, for the messages).
    pub fn from_env(test: &'static str) -> Skips {
        Skips {
            test,
            required: skip::is_failure(REQUIRE_ROOT_VAR),
            skipped: Vec::new(),
        }
    }

    /// Prints one line saying what was skipped and why (straight to stderr,
    /// so it shows even when the test passes and its output is captured).
    pub fn skip(&mut self, what: &str, why: &str) {
        let line = format!("{}: skipped {what}: {why}", self.test);
        skip::say(&line, REQUIRE_ROOT_VAR);
        self.skipped.push(line);
    }

    /// Skips the whole test (`what`, for `why`): a panic at once when skips
    /// are errors.
    pub fn skip_all(&mut self, what: &str, why: &str) {
        self.skip(what, why);
        if let Some(failure) = self.failure() {
            panic!("{failure}");
        }
    }

    /// Why the test fails for what it skipped: `Some` if anything was
    /// skipped while skips are errors.
    pub fn failure(&self) -> Option<String> {
        (self.required && !self.skipped.is_empty()).then(|| {
            format!(
                "{REQUIRE_ROOT_VAR}=1 but {} skipped:\n{}",
                self.test,
                self.skipped.join("\n")
            )
        })
    }
}

/// Waits until a thread or process is blocked taking the `flock` of the
/// file at `lock` (a `->` line of `/proc/locks` for its inode), or until
/// `done()`. A racer that must wait for a lock held elsewhere is then known
/// to be waiting for it, and one that does not (a broken store) has
/// finished; either way the test goes on and checks what the two leave.
/// Only when the racer waits for something else instead does this give up,
/// after [`HANG`].
#[cfg(target_os = "linux")]
pub fn wait_for_lock_waiter(lock: &Path, what: &str, mut done: impl FnMut() -> bool) {
    use std::os::unix::fs::MetadataExt;

    let meta = fs::metadata(lock).unwrap_or_else(|e| panic!("stat {}: {e}", lock.display()));
    let (dev, ino) = (meta.dev(), meta.ino());
    // As `/proc/locks` prints the device: major and minor, in hex.
    let (major, minor) = (rustix::fs::major(dev), rustix::fs::minor(dev));
    let file = format!(" {major:02x}:{minor:02x}:{ino} ");
    wait_until(what, || {
        done()
            || fs::read_to_string("/proc/locks")
                .expect("read /proc/locks")
                .lines()
                .any(|line| line.contains(" -> ") && line.contains(&file))
    });
}

/// Where there is no `/proc/locks`: waits until `done()`, for half a second
/// at most (a racer that waits is still waiting then; one that does not has
/// most likely finished).
#[cfg(not(target_os = "linux"))]
pub fn wait_for_lock_waiter(_lock: &Path, _what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() && start.elapsed() < Duration::from_millis(500) {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The lock file of task `id`'s stripe in the store at `store`.
pub fn stripe_lock(store: &Path, id: &str) -> PathBuf {
    store.join("locks").join(format!("{:02}.lock", stripe(id)))
}

/// The batches lock's file in the store at `store` (FORMAT.md, "Locks").
#[allow(dead_code)] // not every test binary uses every helper
pub fn batches_lock(store: &Path) -> PathBuf {
    store.join("locks").join("batches.lock")
}

/// The lock file at `path`, opened as a handle opens one (made `0600` if
/// missing): for a test that plays another process holding it.
#[allow(dead_code)] // not every test binary uses every helper
pub fn open_lock_file(path: &Path) -> fs::File {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// A handle on the store at `root` for the snapshot-budget tests: writes
/// without fsync, a payload cap (40 MiB) that lets two tasks fill the
/// budget ([`fill_the_snapshot_budget`]), on `clock` and with `faults` if
/// given.
#[cfg(feature = "fault-injection")]
#[allow(dead_code)] // not every test binary uses every helper
pub fn budget_store(
    root: &Path,
    clock: Option<&taskstore::ManualClock>,
    faults: Option<&taskstore::FaultInjector>,
) -> taskstore::FileStore {
    let mut builder = taskstore::FileStore::builder(root)
        .durability(taskstore::Durability::Eventual)
        .max_payload_bytes(40 << 20);
    if let Some(clock) = clock {
        builder = builder.clock(std::sync::Arc::new(clock.clone()));
    }
    if let Some(faults) = faults {
        builder = builder.fault_injector(faults.clone());
    }
    builder.open().unwrap()
}

/// Makes, through `store` (at `root`, with a payload cap of 40 MiB or more),
/// two running tasks whose files take a handle's whole snapshot budget
/// (64 MiB) but 100 bytes, calling `before_each` before each create: a
/// handle that lists them in a full pass keeps the bytes of no task it
/// reads in after them.
#[allow(dead_code)] // not every test binary uses every helper
pub fn fill_the_snapshot_budget(
    store: &dyn taskstore::TaskStore,
    root: &Path,
    before_each: impl Fn(),
) {
    use taskstore::NewTask;
    let file = |id: &TaskId| root.join("active").join(format!("{id}.json"));
    let probe = store
        .create(NewTask::new().metadata("pad", serde_json::json!("x")))
        .unwrap();
    let overhead = fs::metadata(file(&probe.id)).unwrap().len() as usize - 1;
    assert!(store.delete(&probe.id).unwrap());
    let pad = "x".repeat((32 << 20) - 50 - overhead);
    for _ in 0..2 {
        before_each();
        let big = NewTask::new().metadata("pad", serde_json::json!(pad.clone()));
        store.create(big).unwrap();
    }
}

/// Makes `count` tasks with `ttl` through `store` and completes each (its
/// result: its number): their ids.
pub fn finished_with_ttl(
    store: &impl taskstore::TaskStore,
    count: usize,
    ttl: Duration,
) -> Vec<TaskId> {
    (0..count)
        .map(|n| {
            let task = store.create(taskstore::NewTask::new().ttl(ttl)).unwrap();
            let done = store.complete(&task.id, serde_json::json!(n)).unwrap();
            assert!(done.is_applied());
            task.id
        })
        .collect()
}

/// Sends `signal` (`kill`'s spelling: `-STOP`, `-CONT`) to process `pid`.
#[allow(dead_code)] // not every test binary uses every helper
pub fn signal(pid: u32, signal: &str) {
    let sent = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill {signal} {pid}");
}

/// Whether process `pid` is stopped (`SIGSTOP`): every one of its threads,
/// from `/proc/<pid>/task/<tid>/stat` (each thread stops as it next meets
/// the signal, so the process's first thread may read stopped while
/// another still runs on).
#[allow(dead_code)] // not every test binary uses every helper
pub fn is_stopped(pid: u32) -> bool {
    let stopped = |stat: &str| {
        stat.rsplit(')')
            .next()
            .unwrap_or_default()
            .trim_start()
            .starts_with('T')
    };
    let Ok(threads) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    let mut any = false;
    for thread in threads {
        let Ok(thread) = thread else { return false };
        match fs::read_to_string(thread.path().join("stat")) {
            Ok(stat) if stopped(&stat) => any = true,
            _ => return false,
        }
    }
    any
}

/// Stops process `pid` (`SIGSTOP`), and waits until it is.
#[allow(dead_code)] // not every test binary uses every helper
pub fn stop(pid: u32) {
    signal(pid, "-STOP");
    wait_until("the process to stop", || is_stopped(pid));
}

/// The inodes of the files process `pid` holds an exclusive `flock` on
/// (not waiting for), from `/proc/locks`.
#[cfg(target_os = "linux")]
#[allow(dead_code)] // not every test binary uses every helper
pub fn flocks_held_by(pid: u32) -> std::collections::BTreeSet<u64> {
    fs::read_to_string("/proc/locks")
        .expect("read /proc/locks")
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() > 5 && f[1] == "FLOCK" && f[3] == "WRITE" && f[4] == pid.to_string())
                .then(|| f[5].rsplit(':').next()?.parse().ok())?
        })
        .collect()
}

/// How many threads of process `pid` are stripe waits it gave up: a wait
/// for a stripe lock that ran out leaves its thread (`taskstore-stripe`,
/// cut to 15 bytes) blocked in `flock` until the holder lets go.
#[cfg(target_os = "linux")]
#[allow(dead_code)] // not every test binary uses every helper
pub fn stripe_waits_of(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |threads| {
        threads
            .filter_map(|t| fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|comm| comm.trim_end() == "taskstore-strip")
            .count()
    })
}

/// A task id in lock stripe `stripe`: the first of `<prefix>-<n>` there.
#[allow(dead_code)] // not every test binary uses every helper
pub fn id_in_stripe(prefix: &str, stripe: usize) -> TaskId {
    (0..)
        .map(|n| format!("{prefix}-{n}"))
        .find(|id| self::stripe(id) == stripe)
        .map(|id| TaskId::parse(&id).expect("a valid id"))
        .expect("some id falls in every stripe")
}

/// In a child that [`stopped_holder`] started, holds its locks and never
/// returns; in any other process, returns at once.
#[allow(dead_code)] // not every test binary uses every helper
pub fn hold_locks_if_the_holder() {
    if let Some((role, args)) = role()
        && role == "hold"
    {
        hold_locks(&args);
    }
}

/// The child role of [`stopped_holder`]: takes each lock file of `args[1..]`
/// exclusive, says so by making the file `args[0]`, then sleeps until
/// killed.
#[allow(dead_code)] // not every test binary uses every helper
pub fn hold_locks(args: &[String]) -> ! {
    let held: Vec<File> = args[1..]
        .iter()
        .map(|path| {
            let file = open_lock_file(Path::new(path));
            file.lock().expect("take a lock file");
            file
        })
        .collect();
    touch(Path::new(&args[0]));
    loop {
        std::thread::sleep(Duration::from_secs(3600));
        let _ = &held;
    }
}

/// [`stopped_holder`] of one stripe's `lock`, killed when dropped
/// ([`KilledOnDrop`]).
#[cfg(target_os = "linux")]
#[allow(dead_code)] // not every test binary uses every helper
pub fn stopped_holding(test: &str, work: &Path, lock: &Path) -> KilledOnDrop {
    KilledOnDrop::new(stopped_holder(test, work, &[lock.to_owned()]))
}

/// A child of `test` (re-run in role `hold`, which calls [`hold_locks`])
/// that holds each of `locks` exclusive, stopped (`SIGSTOP`) while it does,
/// as a process stopped in the middle of its writes.
#[cfg(target_os = "linux")]
#[allow(dead_code)] // not every test binary uses every helper
pub fn stopped_holder(test: &str, work: &Path, locks: &[PathBuf]) -> Running {
    use std::os::unix::fs::MetadataExt;

    let ready = unique_path(work, "holding");
    let mut args = vec![ready.display().to_string()];
    args.extend(locks.iter().map(|path| path.display().to_string()));
    let mut holder = spawn(work, test, "hold", &args);
    wait_until("the holder to hold its locks", || {
        holder.check_alive();
        ready.exists()
    });
    let pid = holder.child.id();
    stop(pid);
    // `/proc/locks` is read in pieces, and the locks other processes take
    // and let go meanwhile move its lines between them: a read may miss a
    // line of the holder's, which a later read shows.
    let inodes: Vec<u64> = locks
        .iter()
        .map(|lock| fs::metadata(lock).expect("stat a lock file").ino())
        .collect();
    wait_until("the stopped holder to show every lock it holds", || {
        let held = flocks_held_by(pid);
        inodes.iter().all(|inode| held.contains(inode))
    });
    holder
}

/// The kinds of the events in a JSON-lines file, in order.
pub fn kinds_in(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let line: serde_json::Value = serde_json::from_str(l).unwrap();
            line["kind"].as_str().unwrap().to_owned()
        })
        .collect()
}
