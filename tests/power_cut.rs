//! Power cuts on real file systems: every call that returned `Ok` under
//! `Durability::Immediate` must still be there after the power goes.
//!
//! # Method
//!
//! For each of ext4, ext4 without a journal, ext2, xfs and btrfs (those
//! whose tools are installed), a fresh file system is made in a sparse image
//! file (in `/dev/shm` if it has room), attached to a loop device and
//! mounted, and a `FileStore` is opened on it. A fixed script runs the first
//! open and then every kind of mutating call — create, update, complete,
//! complete of a task with a TTL (which links it into `expiring/` too),
//! fail, cancel, delete, renew_lease, renew_leases, claim (a second
//! handle's resumable task, its short lease lapsed on a `ManualClock`),
//! release, reap_orphans (that handle's plain task), sweep_expired (a
//! running task and a finished one, both expired), then 300 completions of
//! tasks with a TTL and a sweep of them (a batch under every stripe) —
//! twice: once in quick
//! succession, once with the file system synced before each call (tasks
//! whose last write was long committed, the common case, and a different
//! one: btrfs logs a rename out of a directory only if that directory was
//! logged since its last commit). The moment each call returns `Ok`, the
//! loop device's backing file is copied: nothing in between, no sync, no
//! unmount. Each copy is the device as a power cut at that instant leaves
//! it.
//!
//! Then each copy goes through what a reboot does — `e2fsck -fy` for ext2
//! and ext4 (replaying the journal, if any), a mount that replays the log
//! for xfs and btrfs (`xfs_repair`, `btrfs rescue zero-log` only if that
//! mount fails) — is mounted, and the store is reopened and checked against
//! every acknowledgement made before the cut:
//!
//! - each task exists with exactly the status, revision and payload the last
//!   call on it returned, or is gone if that call deleted or swept it (the
//!   check runs on a clock before any expiry, so a swept task still on disk
//!   would show);
//! - a task acknowledged terminal is terminal, and a later `cancel` returns
//!   `Transition::AlreadyTerminal` with the acknowledged task (first writer
//!   wins survives the cut);
//! - `get` and `list(ListQuery::all())` agree, and list no other task;
//! - nothing is torn: no file is set aside as corrupt;
//! - the first open's directories and files are all there;
//! - `verify` finds the reopened store whole (an `expiring/` entry whose
//!   task is gone aside, which the next sweep removes): above all, every
//!   finished task with a TTL still has its `expiring/` entry, without
//!   which no sweep would delete it.
//!
//! Lease renewals, claims and releases are held to the same promise as
//! every other write: they follow the whole protocol (FORMAT.md), so the
//! renewed, claimed or released lease survives.
//!
//! The failure message lists every broken acknowledgement, by file system
//! and cut, not just the first; a summary line per file system counts, for
//! each kind of call, the cuts that broke one of its acknowledgements.
//!
//! # Making it repeatable
//!
//! A change the store did not make durable still reaches the device if the
//! kernel writes it back before the copy, and then a missing fsync shows in
//! some runs only. So for the duration periodic writeback is turned off
//! (`vm.dirty_writeback_centisecs`, restored after), the live ext4 and
//! btrfs are mounted with a 300 s commit interval (default 5 s and 30 s),
//! `mkfs` writes ext4's inode tables (no kernel thread writes them while
//! the script runs), and ext2/ext4 get one block group and a fixed
//! directory hash seed (otherwise the store's directory lands in a block
//! group picked at random, and which freed inodes are reused changes from
//! run to run). Without a journal, ext4 reuses a freed inode only within
//! the wall-clock second it was freed in, so the calls whose freed inodes
//! the next call may reuse start just after a second begins. With that,
//! every missing fsync the script reaches shows in every run; only a
//! `sync` by another process at the wrong instant, or a call that takes
//! most of a second, can still hide one.
//!
//! # Limits
//!
//! Copying the image right after the acknowledgement simulates losing
//! everything the kernel has not yet sent to the device. It cannot show what
//! a real disk's own volatile cache does: reordering or dropping writes the
//! kernel has sent but the device has not yet made stable (a loop device
//! over a file in memory has no such cache, and its flushes are no-ops).
//! Nor does it cut in the middle of a call: the copies fall between calls.
//! It needs root, loop devices and the file systems' tools; without them it
//! prints why it skipped and passes, unless `TASKSTORE_REQUIRE_ROOT_TESTS=1`
//! (as CI sets), which makes any skip a failure.

mod common;
#[path = "power_cut/machine.rs"]
mod machine;

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use taskstore::{
    Durability, Event, EventSink, FileCheck, FileStore, ListQuery, ManualClock, NewTask,
    ProblemKind, Task, TaskEventKind, TaskId, TaskStatus, TaskStore, TaskUpdate, Transition,
};
use time::OffsetDateTime;
use time::macros::datetime;

use machine::{FileSystem, Machine, WritebackPaused, say};

/// Where the shared clock stands when the script starts.
const T0: OffsetDateTime = datetime!(2030-01-01 00:00 UTC);
/// The main handle's lease: never lapses during the script.
const OWNER_LEASE: Duration = Duration::from_secs(24 * 3600);
/// The second handle's lease: lapses when the clock moves on, so its task
/// can be reaped.
const GHOST_LEASE: Duration = Duration::from_secs(10);
/// The TTL of the tasks that `sweep_expired` removes.
const SWEPT_TTL: Duration = Duration::from_secs(60);
/// How many finished tasks the round's last sweep removes: a batch that
/// takes every stripe.
const BATCH: usize = 300;

#[test]
fn acknowledged_calls_survive_a_power_cut() {
    let Some((mut skips, scratch, machine)) = machine::start("power_cut", "the power-cut test")
    else {
        return;
    };
    let _one_run = machine::one_run_at_a_time();
    let _writeback = WritebackPaused::start();

    let mut findings = Vec::new();
    let mut report = Vec::new();
    let mut tally = Tally::default();
    for fs in FileSystem::ALL {
        if let Some(why) = fs.missing_tools() {
            skips.skip(fs.name(), &why);
            continue;
        }
        let images = match record(&machine, fs, scratch.path()) {
            Ok(images) => images,
            Err(why) => {
                skips.skip(fs.name(), &why);
                continue;
            }
        };
        for image in &images {
            let checked = check(&machine, fs, image, scratch.path());
            tally.add(fs, image, &checked);
            report.extend(checked.findings.iter().map(Finding::to_string));
            if !checked.findings.is_empty() && !checked.repairs.is_empty() {
                report.push(format!(
                    "    (before reopening: {})",
                    checked.repairs.join("; ")
                ));
            }
            findings.extend(checked.findings);
            let _ = fs::remove_file(&image.path);
        }
    }
    tally.print();
    let mut failures: Vec<String> = skips.failure().into_iter().collect();
    if !findings.is_empty() {
        failures.push(format!(
            "{} acknowledged results broken by a power cut (or the store unreadable after one):\n{}",
            findings.len(),
            report.join("\n")
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

// --- The store's API: every builder setting the test uses is here. ---

/// Opens the store at `dir` with the default durability (`Immediate`), time
/// from `clock`, this instance id and lease, and set-aside reports to
/// `sink` if given.
fn open_store(
    dir: &Path,
    clock: &ManualClock,
    instance: &str,
    lease: Duration,
    sink: Option<Arc<SetAside>>,
) -> taskstore::Result<FileStore> {
    let mut builder = FileStore::builder(dir)
        .clock(Arc::new(clock.clone()))
        .lease(lease)
        .instance_id(instance);
    if let Some(sink) = sink {
        builder = builder.sink(sink);
    }
    builder.open()
}

/// Collects the files the store sets aside as corrupt (a torn write).
#[derive(Default)]
struct SetAside(Mutex<Vec<String>>);

impl EventSink for SetAside {
    fn emit(&self, event: &Event) {
        if event.kind == TaskEventKind::Unreadable {
            let mut files = self.0.lock().unwrap_or_else(|e| e.into_inner());
            files.push(event.data.to_string());
        }
    }
}

// --- Recording: the script, and an image after every acknowledgement. ---

/// A call the script makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Open,
    Create,
    Update,
    Complete,
    /// A complete of a task with a TTL: a second name in `expiring/`.
    CompleteWithTtl,
    Fail,
    Cancel,
    Delete,
    RenewLease,
    RenewLeases,
    Claim,
    Release,
    ReapOrphans,
    SweepExpired,
    /// A sweep of a batch that takes every stripe (at least 256 tasks).
    SweepBatch,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Open => "open",
            Op::Create => "create",
            Op::Update => "update",
            Op::Complete => "complete",
            Op::CompleteWithTtl => "complete (ttl)",
            Op::Fail => "fail",
            Op::Cancel => "cancel",
            Op::Delete => "delete",
            Op::RenewLease => "renew_lease",
            Op::RenewLeases => "renew_leases",
            Op::Claim => "claim",
            Op::Release => "release",
            Op::ReapOrphans => "reap_orphans",
            Op::SweepExpired => "sweep_expired",
            Op::SweepBatch => "sweep_expired (batch)",
        }
    }
}

/// What the last acknowledged call on a task said about it.
#[derive(Clone, Debug)]
struct Ack {
    op: Op,
    /// The task as the call returned it; `None` once deleted or swept.
    task: Option<Task>,
}

/// One device image, copied right after an acknowledgement.
struct Image {
    /// The call after which it was copied, and on which task.
    op: Op,
    target: String,
    path: PathBuf,
    /// Every acknowledgement made before the copy.
    acks: BTreeMap<TaskId, Ack>,
    /// After the first open: the directories and non-empty files it wrote.
    opened: Option<BTreeMap<PathBuf, Option<Vec<u8>>>>,
}

impl Image {
    fn label(&self) -> String {
        if self.target.is_empty() {
            self.op.name().to_owned()
        } else {
            format!("{} {}", self.op.name(), self.target)
        }
    }
}

/// Copies the device after every call, then records the call's
/// acknowledgement.
struct Recorder<'a> {
    machine: &'a Machine,
    device_file: PathBuf,
    images_dir: PathBuf,
    acks: BTreeMap<TaskId, Ack>,
    images: Vec<Image>,
}

impl Recorder<'_> {
    /// Copies the device now, then lets `ack` record what the call that
    /// just returned acknowledged.
    fn cut(&mut self, op: Op, target: &str, ack: impl FnOnce(&mut BTreeMap<TaskId, Ack>)) {
        let path = self
            .images_dir
            .join(format!("{:02}-{}.img", self.images.len(), op.name()));
        if let Err(e) = self.machine.copy_image(&self.device_file, &path) {
            panic!("copy the device after {}: {e}", op.name());
        }
        ack(&mut self.acks);
        self.images.push(Image {
            op,
            target: target.to_owned(),
            path,
            acks: self.acks.clone(),
            opened: None,
        });
    }

    /// [`cut`](Self::cut) after a call that returned one task.
    fn cut_task(&mut self, op: Op, task: &Task) {
        let (id, task) = (task.id.clone(), task.clone());
        let target = id.to_string();
        self.cut(op, &target, |acks| {
            acks.insert(
                id,
                Ack {
                    op,
                    task: Some(task),
                },
            );
        });
    }

    /// [`cut`](Self::cut) after a call that returned these tasks.
    fn cut_tasks(&mut self, op: Op, tasks: &[Task]) {
        let target = tasks
            .iter()
            .map(|t| t.id.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        self.cut(op, &target, |acks| {
            for task in tasks {
                let task = task.clone();
                acks.insert(
                    task.id.clone(),
                    Ack {
                        op,
                        task: Some(task),
                    },
                );
            }
        });
    }

    /// [`cut`](Self::cut) after a call that removed these tasks.
    fn cut_gone(&mut self, op: Op, ids: &[TaskId]) {
        let target = ids
            .iter()
            .map(TaskId::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        self.cut(op, &target, |acks| {
            for id in ids {
                acks.insert(id.clone(), Ack { op, task: None });
            }
        });
    }
}

fn tid(id: &str) -> TaskId {
    TaskId::parse(id).expect("a valid task id")
}

fn applied(op: Op, t: taskstore::Result<Transition>) -> Task {
    match t {
        Ok(Transition::Applied(task)) => task,
        other => panic!("{} on the live file system: {other:?}", op.name()),
    }
}

/// Makes a fresh `fs`, runs the script on it and returns an image per
/// acknowledgement. `Err` if the file system cannot be made or mounted
/// here (the caller skips it).
fn record(machine: &Machine, fs: FileSystem, scratch: &Path) -> Result<Vec<Image>, String> {
    let device_file = scratch.join(format!("{}.img", fs.name()));
    let images_dir = scratch.join(format!("{}.images", fs.name()));
    fs::create_dir_all(&images_dir).map_err(|e| format!("create {}: {e}", images_dir.display()))?;
    fs.make(&device_file)
        .map_err(|e| format!("mkfs failed: {e}"))?;
    let images = {
        let device = machine
            .attach(&device_file)
            .map_err(|e| format!("cannot attach a loop device: {e}"))?;
        let mount = machine
            .mount(
                &device,
                fs,
                fs.live_options(),
                &scratch.join(format!("{}.live", fs.name())),
            )
            .map_err(|e| format!("mount refused: {e}"))?;
        let mut rec = Recorder {
            machine,
            device_file: device_file.clone(),
            images_dir,
            acks: BTreeMap::new(),
            images: Vec::new(),
        };
        script(&mut rec, mount.dir());
        // The stores are closed: nothing of theirs may keep the file
        // system busy (a descriptor kept past a handle's drop would). A
        // failure of the store's, not of the machine: no skip.
        if let Err(e) = mount.unmount() {
            panic!(
                "{}: busy after the script closed its stores: {e}",
                fs.name()
            );
        }
        rec.images
        // `device` is let go here.
    };
    let _ = fs::remove_file(&device_file);
    Ok(images)
}

/// Where the store is, under the file system's root: directories the
/// first open makes, each of whose names must be durable before it returns
/// (a store whose parent's name is lost is lost whole).
const STORE: &str = "srv/tasks/store";

/// The calls, each followed by a cut: the first open, then two rounds of
/// every kind of mutating call.
fn script(rec: &mut Recorder<'_>, mount: &Path) {
    let dir = mount.join(STORE);
    let clock = ManualClock::new(T0);
    let main = open_store(&dir, &clock, "main", OWNER_LEASE, None).expect("first open");
    rec.cut(Op::Open, "", |_| {});
    rec.images.last_mut().expect("the open's image").opened = Some(tree(&dir));
    assert_eq!(main.durability(), Durability::Immediate);
    let ghost = open_store(&dir, &clock, "ghost", GHOST_LEASE, None).expect("second open");
    let handles = Handles {
        main: &main,
        ghost: &ghost,
        clock: &clock,
    };
    round(rec, &handles, Pace::Fresh);
    round(rec, &handles, Pace::Settled(mount));
}

/// How the calls of a round follow each other.
#[derive(Clone, Copy)]
enum Pace<'a> {
    /// In quick succession: each cut also holds whatever the calls before
    /// it left unsynced.
    Fresh,
    /// Before every call, the file system at this mount commits everything
    /// so far (as it does by itself within 30 s): each call starts from a
    /// settled device, the common case for tasks that run a while. It is
    /// also a different case: btrfs, for one, logs a rename out of a
    /// directory only if that directory was logged since its last commit.
    Settled(&'a Path),
}

impl Pace<'_> {
    fn name(self) -> &'static str {
        match self {
            Pace::Fresh => "fresh",
            Pace::Settled(_) => "settled",
        }
    }

    /// Runs before every call.
    fn settle(self, machine: &Machine) {
        if let Pace::Settled(mount) = self
            && let Err(e) = machine.settle(mount)
        {
            panic!("sync the live file system: {e}");
        }
    }
}

/// The stores the script writes with, and their clock.
struct Handles<'a> {
    /// Owns most tasks; its lease never lapses.
    main: &'a FileStore,
    /// Owns the task that is reaped; its lease lapses.
    ghost: &'a FileStore,
    clock: &'a ManualClock,
}

/// One round: creates the round's tasks (`<round>-a` ...) and makes every
/// kind of change to them, at `pace`, cutting after each call.
fn round(rec: &mut Recorder<'_>, h: &Handles<'_>, pace: Pace<'_>) {
    let name = pace.name();
    let machine = rec.machine;
    let settle = || pace.settle(machine);
    let id = |task: &str| tid(&format!("{name}-{task}"));
    let new = |task: &str| NewTask::new().id(id(task)).metadata("round", name);
    // The kind of work of the round's resumable task: a claim of this
    // round's kind never takes an earlier round's task.
    let kind = format!("convert-{name}");
    for (store, task) in [
        (h.main, new("a").status_message("queued")),
        (h.main, new("b")),
        (h.main, new("c")),
        (h.main, new("d")),
        (h.main, new("e")),
        (h.main, new("f")),
        (h.main, new("x").ttl(SWEPT_TTL)),
        (h.main, new("y").ttl(SWEPT_TTL)),
        (h.ghost, new("g")),
        (h.ghost, new("r").resumable(&kind, json!({"file": "x.pdf"}))),
    ] {
        settle();
        let task = store.create(task).expect("create on the live file system");
        rec.cut_task(Op::Create, &task);
    }

    settle();
    let update = TaskUpdate::new()
        .status(TaskStatus::InputRequired)
        .input_requests(json!({"question": "go on?"}))
        .metadata("step", "asked");
    let task = applied(Op::Update, h.main.update(&id("a"), update));
    rec.cut_task(Op::Update, &task);

    settle();
    // A result over several blocks: a torn write would show.
    let result = json!({"answer": 42, "log": "x".repeat(20_000)});
    let task = applied(Op::Complete, h.main.complete(&id("b"), result));
    rec.cut_task(Op::Complete, &task);

    settle();
    let done = json!({"answer": "short-lived"});
    let task = applied(Op::CompleteWithTtl, h.main.complete(&id("y"), done));
    rec.cut_task(Op::CompleteWithTtl, &task);

    settle();
    let task = applied(Op::Fail, h.main.fail(&id("c"), json!({"code": "boom"})));
    rec.cut_task(Op::Fail, &task);

    settle();
    let stop = Some("stopped by the user".to_owned());
    let task = applied(Op::Cancel, h.main.cancel(&id("a"), stop));
    rec.cut_task(Op::Cancel, &task);

    settle();
    assert!(
        h.main.delete(&id("d")).expect("delete"),
        "delete found its task"
    );
    rec.cut_gone(Op::Delete, &[id("d")]);

    // Two renewals in a row, then the reaper: each may reuse the inode the
    // call before it freed. ext4 without a journal reuses a freed inode only
    // within the wall-clock second it was freed in, so they start just after
    // a second begins, to fall in one second run after run. (Once settled,
    // a freed inode's directory entry is gone from the disk already.)
    if let Pace::Fresh = pace {
        start_of_next_second();
    }
    for task in ["e", "f"] {
        settle();
        let task = applied(Op::RenewLease, h.main.renew_lease(&id(task)));
        rec.cut_task(Op::RenewLease, &task);
    }

    // Every running task of the main handle: this round's and what is
    // left of the rounds before.
    h.clock.advance(Duration::from_secs(1));
    settle();
    let renewed = h.main.renew_leases().expect("renew_leases");
    let running: Vec<Task> = h
        .main
        .list(&ListQuery::active())
        .expect("list on the live file system")
        .tasks
        .into_iter()
        // This handle's: its instance id and its open's token (a task it
        // released keeps the id, not the token, and is not renewed).
        .filter(|t| t.owner.as_deref() == Some(h.main.instance_id()) && t.owner_token.is_some())
        .collect();
    assert_eq!(renewed, running.len(), "renew_leases renewed {running:?}");
    rec.cut_tasks(Op::RenewLeases, &running);

    // The ghost's leases lapse: its resumable task is claimed (within the
    // claim grace, the main handle's lease, so no reap fails it), then
    // released (its lease lapses at once; still within the grace), and its
    // plain task is reaped.
    h.clock.advance(GHOST_LEASE * 2);
    settle();
    let claimed = h.main.claim(&[kind.as_str()]).expect("claim").tasks;
    let [task] = claimed.as_slice() else {
        panic!("claim claimed exactly {}, not {claimed:?}", id("r"));
    };
    assert_eq!(task.id, id("r"));
    rec.cut_tasks(Op::Claim, &claimed);

    settle();
    let task = applied(Op::Release, h.main.release(&id("r"), claimed[0].epoch));
    rec.cut_task(Op::Release, &task);

    settle();
    let reaped = h.main.reap_orphans().expect("reap_orphans");
    let [task] = reaped.as_slice() else {
        panic!("reap_orphans reaped exactly {}, not {reaped:?}", id("g"));
    };
    assert_eq!(task.id, id("g"));
    rec.cut_task(Op::ReapOrphans, task);

    h.clock.advance(SWEPT_TTL);
    settle();
    let swept = h.main.sweep_expired().expect("sweep_expired");
    assert_eq!(swept, 2, "swept x (running) and y (finished)");
    rec.cut_gone(Op::SweepExpired, &[id("x"), id("y")]);

    // A batch that takes every stripe: tasks that finished a moment before
    // (in the fresh round, their moves' last unlinks in `active/` not yet
    // durable: the batch must make `active/` durable before it removes
    // their files from `done/`, or a cut brings them back), one cut after
    // their completions, one after the sweep.
    let bulk: Vec<Task> = (0..BATCH)
        .map(|i| {
            let task = new(&format!("bulk-{i}")).ttl(SWEPT_TTL);
            let task = h.main.create(task).expect("create on the live file system");
            applied(Op::CompleteWithTtl, h.main.complete(&task.id, json!(i)))
        })
        .collect();
    rec.cut_tasks(Op::CompleteWithTtl, &bulk);
    h.clock.advance(SWEPT_TTL);
    settle();
    let swept = h.main.sweep_expired().expect("sweep_expired");
    assert_eq!(swept, BATCH, "swept the batch");
    let ids: Vec<TaskId> = bulk.into_iter().map(|task| task.id).collect();
    rec.cut_gone(Op::SweepBatch, &ids);
}

/// Sleeps until just after the wall clock's next whole second.
fn start_of_next_second() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let rest = Duration::from_secs(1) - Duration::from_nanos(u64::from(now.subsec_nanos()));
    std::thread::sleep(rest + Duration::from_millis(2));
}

/// The directories and non-empty files under `dir` (lock files are empty,
/// hold nothing, and are made again on use).
fn tree(dir: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Option<Vec<u8>>>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap_or(&path).to_owned();
            match entry.file_type() {
                Ok(t) if t.is_dir() => {
                    out.insert(rel, None);
                    walk(root, &path, out);
                }
                Ok(t) if t.is_file() => {
                    if let Ok(bytes) = fs::read(&path)
                        && !bytes.is_empty()
                    {
                        out.insert(rel, Some(bytes));
                    }
                }
                _ => {}
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

// --- Checking: each image repaired, mounted, and held to every ack. ---

/// One acknowledged result a power cut broke (or an image the store cannot
/// be read from).
struct Finding {
    fs: FileSystem,
    image: String,
    /// The call whose acknowledgement was broken, if it is one.
    broken: Option<Op>,
    what: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] cut after `{}`: {}",
            self.fs.name(),
            self.image,
            self.what
        )
    }
}

fn describe(task: Option<&Task>) -> String {
    match task {
        None => "gone".to_owned(),
        Some(t) => format!("{} rev {}", t.status, t.revision),
    }
}

/// What one cut showed.
#[derive(Default)]
struct Checked {
    findings: Vec<Finding>,
    /// What repair did before the store was reopened, beyond the routine.
    repairs: Vec<String>,
}

/// Repairs and mounts one image and holds the store on it to every
/// acknowledgement made before the cut.
fn check(machine: &Machine, fs: FileSystem, image: &Image, scratch: &Path) -> Checked {
    let mut checked = Checked::default();
    let mut findings = Vec::new();
    let mut finding = |broken: Option<Op>, what: String| {
        findings.push(Finding {
            fs,
            image: image.label(),
            broken,
            what,
        });
    };
    let device = match machine.attach(&image.path) {
        Ok(d) => d,
        Err(e) => {
            finding(None, format!("cannot attach the image: {e}"));
            checked.findings = findings;
            return checked;
        }
    };
    let mount_dir = scratch.join(format!("{}.check", fs.name()));
    let mount = match fs.repair_and_mount(machine, &device, &mount_dir) {
        Ok((mount, repairs)) => {
            checked.repairs = repairs;
            mount
        }
        Err(e) => {
            finding(None, format!("does not mount after repair: {e}"));
            checked.findings = findings;
            return checked;
        }
    };
    let dir = mount.dir().join(STORE);

    // Where each task's files are, before the store is opened (and may
    // tidy up): shown with a broken acknowledgement.
    let files = task_files(&dir);
    let files_of = |id: &TaskId| {
        files
            .get(id.as_str())
            .map(|paths| format!(" [files: {}]", paths.join(", ")))
            .unwrap_or_default()
    };

    if let Some(opened) = &image.opened {
        let now = tree(&dir);
        for (path, contents) in opened {
            match now.get(path) {
                Some(c) if c == contents => {}
                Some(_) => finding(
                    Some(Op::Open),
                    format!("the first open's {} changed", path.display()),
                ),
                None => finding(
                    Some(Op::Open),
                    format!("the first open's {} is missing", path.display()),
                ),
            }
        }
    }

    let set_aside = Arc::new(SetAside::default());
    // At T0 no task has expired: a swept task still on disk would show.
    let clock = ManualClock::new(T0);
    let store = match open_store(
        &dir,
        &clock,
        "checker",
        OWNER_LEASE,
        Some(set_aside.clone()),
    ) {
        Ok(s) => s,
        Err(e) => {
            finding(None, format!("the store does not open: {e}"));
            checked.findings = findings;
            return checked;
        }
    };
    let mut listed: BTreeMap<TaskId, Task> = match store.list(&ListQuery::all()) {
        Ok(page) => page.tasks.into_iter().map(|t| (t.id.clone(), t)).collect(),
        Err(e) => {
            finding(None, format!("list fails: {e}"));
            BTreeMap::new()
        }
    };
    for (id, ack) in &image.acks {
        let got = match store.get(id) {
            Ok(got) => got,
            Err(e) => {
                finding(Some(ack.op), format!("get {id} fails: {e}"));
                continue;
            }
        };
        let in_list = listed.remove(id);
        if in_list != got {
            finding(
                None,
                format!(
                    "get and list disagree on {id}: get {}, list {}",
                    describe(got.as_ref()),
                    describe(in_list.as_ref())
                ),
            );
        }
        if got == ack.task {
            continue;
        }
        let how = match (&ack.task, &got) {
            (Some(want), Some(have))
                if want.status == have.status && want.revision == have.revision =>
            {
                format!(
                    "same status and revision, other contents: acknowledged {}, found {}",
                    json!(want),
                    json!(have)
                )
            }
            _ => format!("found {}", describe(got.as_ref())),
        };
        finding(
            Some(ack.op),
            format!(
                "`{}` of {id} acknowledged {}; after the cut: {how}{}",
                ack.op.name(),
                describe(ack.task.as_ref()),
                files_of(id)
            ),
        );
    }
    for (id, task) in listed {
        finding(
            None,
            format!(
                "list shows {id} ({}), which no acknowledged call left there",
                describe(Some(&task))
            ),
        );
    }
    let mut torn = std::mem::take(&mut *set_aside.0.lock().unwrap_or_else(|e| e.into_inner()));
    torn.sort();
    for file in torn {
        finding(None, format!("a torn file was set aside: {file}"));
    }

    // First writer wins: every task acknowledged terminal stays so.
    for (id, ack) in &image.acks {
        let Some(want) = ack.task.as_ref().filter(|t| t.status.is_terminal()) else {
            continue;
        };
        match store.cancel(id, Some("after the power cut".into())) {
            Ok(Transition::AlreadyTerminal(t)) if &t == want => {}
            Ok(Transition::AlreadyTerminal(t)) => finding(
                Some(ack.op),
                format!(
                    "a later cancel of {id} found {} instead of the acknowledged {}",
                    describe(Some(&t)),
                    describe(Some(want))
                ),
            ),
            Ok(Transition::Applied(t)) => finding(
                Some(ack.op),
                format!(
                    "a later cancel of {id} was applied ({} after `{}` acknowledged {}): first writer wins broken",
                    describe(Some(&t)),
                    ack.op.name(),
                    describe(Some(want))
                ),
            ),
            Ok(other) => finding(Some(ack.op), format!("a later cancel of {id}: {other:?}")),
            Err(e) => finding(Some(ack.op), format!("a later cancel of {id} fails: {e}")),
        }
    }

    // What a reopened store leaves is a store `verify` finds whole: above
    // all, no finished task with a TTL lacks its `expiring/` entry (no
    // sweep would ever delete it). An entry whose task is gone is harmless
    // by design (the sweep that meets it removes it).
    match FileCheck::open(&dir).and_then(|check| check.verify()) {
        Ok(report) => {
            for problem in report.problems {
                if problem.kind == ProblemKind::StaleIndexEntry {
                    continue;
                }
                let op = problem
                    .id
                    .as_ref()
                    .and_then(|id| image.acks.get(id))
                    .map(|ack| ack.op);
                finding(op, format!("verify after reopening: {problem}"));
            }
        }
        Err(e) => finding(None, format!("verify fails: {e}")),
    }
    // Unmounted strictly: a descriptor the store kept past its handle's
    // drop leaves the file system busy, and is a finding.
    drop(store);
    if let Err(e) = mount.unmount() {
        finding(
            None,
            format!("busy after the checker's store was dropped: {e}"),
        );
    }
    drop(device);
    checked.findings = findings;
    checked
}

/// Every file named `<id>.json` under `dir`, by id, as paths relative to
/// `dir`.
fn task_files(dir: &Path) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for path in tree_files(dir) {
        let rel = path.strip_prefix(dir).unwrap_or(&path);
        if let Some(id) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
        {
            out.entry(id.to_owned())
                .or_default()
                .push(rel.display().to_string());
        }
    }
    out
}

fn tree_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in fs::read_dir(&d).into_iter().flatten().flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => todo.push(entry.path()),
                Ok(_) => out.push(entry.path()),
                Err(_) => {}
            }
        }
    }
    out.sort();
    out
}

// --- The summary: per file system and call, how many cuts broke it. ---

#[derive(Default)]
struct Tally {
    by_fs: BTreeMap<FileSystem, FsTally>,
}

#[derive(Default)]
struct FsTally {
    cuts: usize,
    /// By call: (cuts after which its acknowledgements were checked, cuts
    /// that found one broken).
    by_op: BTreeMap<Op, (usize, usize)>,
    /// Cuts with damage that is no one call's: torn files, unreadable stores.
    other: usize,
    /// Cuts after which repair did more than the routine.
    repaired: usize,
}

impl Tally {
    fn add(&mut self, fs: FileSystem, image: &Image, checked: &Checked) {
        let t = self.by_fs.entry(fs).or_default();
        t.cuts += 1;
        let mut ops: Vec<Op> = image.acks.values().map(|a| a.op).collect();
        if image.opened.is_some() {
            ops.push(Op::Open);
        }
        ops.sort();
        ops.dedup();
        for op in ops {
            let broken = checked.findings.iter().any(|f| f.broken == Some(op));
            let entry = t.by_op.entry(op).or_default();
            entry.0 += 1;
            entry.1 += usize::from(broken);
        }
        t.other += usize::from(checked.findings.iter().any(|f| f.broken.is_none()));
        t.repaired += usize::from(!checked.repairs.is_empty());
    }

    /// One line per file system.
    fn print(&self) {
        for (fs, t) in &self.by_fs {
            let ops: Vec<String> = t
                .by_op
                .iter()
                .map(|(op, (checked, broken))| format!("{} {broken}/{checked}", op.name()))
                .collect();
            say(&format!(
                "[{}] {} cuts. Cuts that broke an acknowledgement, by call: {}. \
                 Cuts with other damage: {}. Cuts needing more than routine repair: {}.",
                fs.name(),
                t.cuts,
                ops.join(", "),
                t.other,
                t.repaired
            ));
        }
    }
}
