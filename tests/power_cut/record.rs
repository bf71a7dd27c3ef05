//! Recording: the store opened as the test uses it, the script of every kind
//! of mutating call, and an image of the device copied after every
//! acknowledgement (twice: calls in quick succession, and on a synced file
//! system).

use super::*;

/// The second handle's lease: lapses when the clock moves on, so its task
/// can be reaped.
const GHOST_LEASE: Duration = Duration::from_secs(10);
/// The TTL of the tasks that `sweep_expired` removes.
const SWEPT_TTL: Duration = Duration::from_secs(60);
/// How many finished tasks the round's last sweep removes: a batch that
/// takes every stripe.
const BATCH: usize = 300;

// --- The store's API: every builder setting the test uses is here. ---

/// Opens the store at `dir` with the default durability (`Immediate`), time
/// from `clock`, this instance id and lease, and set-aside reports to
/// `sink` if given.
pub(crate) fn open_store(
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
pub(crate) struct SetAside(pub(crate) Mutex<Vec<String>>);

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
pub(crate) enum Op {
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
    pub(crate) fn name(self) -> &'static str {
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
pub(crate) struct Ack {
    pub(crate) op: Op,
    /// The task as the call returned it; `None` once deleted or swept.
    pub(crate) task: Option<Task>,
}

/// One device image, copied right after an acknowledgement.
pub(crate) struct Image {
    /// The call after which it was copied, and on which task.
    pub(crate) op: Op,
    pub(crate) target: String,
    pub(crate) path: PathBuf,
    /// Every acknowledgement made before the copy.
    pub(crate) acks: BTreeMap<TaskId, Ack>,
    /// After the first open: the directories and non-empty files it wrote.
    pub(crate) opened: Option<BTreeMap<PathBuf, Option<Vec<u8>>>>,
}

impl Image {
    pub(crate) fn label(&self) -> String {
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
pub(crate) fn record(
    machine: &Machine,
    fs: FileSystem,
    scratch: &Path,
) -> Result<Vec<Image>, String> {
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
pub(crate) const STORE: &str = "srv/tasks/store";

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
pub(crate) fn tree(dir: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
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
