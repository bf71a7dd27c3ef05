//! The workloads: a fixed sequence of store calls, each one a [`Step`] that
//! knows which recorded seam calls it made and what it promised.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use taskstore::{
    Clock, Durability, FaultInjector, FileStore, FsEvent, FsOp, ListQuery, ManualClock, NewTask,
    Recorder, Task, TaskId, TaskStatus, TaskStore, TaskUpdate, Transition,
};
use time::OffsetDateTime;
use time::macros::datetime;

mod large;
mod newer;

pub use large::large_sweep;
pub use newer::{id_in_stripe, newer_paths, stripe_of};

const T0: OffsetDateTime = datetime!(2030-01-01 0:00 UTC);
/// The owner's lease: no task of the owner's lapses in a workload.
const LONG_LEASE: Duration = Duration::from_secs(3600);
/// The dead instance's lease, and the TTL of the tasks meant to expire: both
/// lapse when the clock moves by [`LATER`].
const SHORT: Duration = Duration::from_secs(5);
const LATER: Duration = Duration::from_secs(10);
/// A step of the clock that lapses nothing: a renewal then writes a new
/// lease.
const TICK: Duration = Duration::from_secs(1);

/// What a store call promised once it returned `Ok`.
#[derive(Clone, Debug)]
pub enum Effect {
    /// Nothing about any task (opening).
    Nothing,
    /// These versions are the tasks now (lease renewals, claims and
    /// releases included: they follow the whole write protocol, and a
    /// power loss may not undo them either).
    Put(Vec<Task>),
    /// These tasks are gone.
    Remove(Vec<TaskId>),
}

/// One store call of a workload.
#[derive(Clone, Debug)]
pub struct Step {
    pub label: String,
    /// Its seam calls are `events[start..end]`.
    pub start: usize,
    pub end: usize,
    /// The store clock while it ran.
    pub now: OffsetDateTime,
    pub effect: Effect,
}

/// A workload that ran: its recorded seam calls and its steps.
pub struct Run {
    pub name: &'static str,
    pub durability: Durability,
    /// The directory the model's paths are relative to; the store is
    /// [`STORE`] inside it.
    pub base: PathBuf,
    pub events: Vec<FsEvent>,
    pub steps: Vec<Step>,
    /// Every task id a step touched.
    pub ids: Vec<TaskId>,
    _dir: tempfile::TempDir,
}

/// The store's directory inside the base.
pub const STORE: &str = "store";

pub fn tid(s: &str) -> TaskId {
    TaskId::parse(s).expect("a valid test id")
}

/// Every operation of the store, in the order that exercises its crash
/// windows: open, create (random and host ids), update, complete, fail,
/// cancel, delete, renew_lease, renew_leases, complete of a task with a
/// TTL (its `expiring/` link), claim (a second instance's resumable task
/// whose lease lapsed) and release, reap_orphans (that instance's plain
/// task), create reusing an expired (terminal) task's id, sweep_expired (an
/// expired running task, and an expired finished one through its
/// `expiring/` link), and deleting a finished task.
pub fn every_operation(durability: Durability) -> Run {
    let mut d = Driver::new(durability);
    let owner = d.open("open (first)", "owner", LONG_LEASE);
    d.step(
        "create (random id)",
        || owner.create(NewTask::new()).unwrap(),
        put,
    );
    for id in [
        "t-update",
        "t-complete",
        "t-fail",
        "t-cancel",
        "t-delete",
        "t-renew",
    ] {
        create(&mut d, &owner, NewTask::new().id(tid(id)));
    }
    d.act(
        "update t-update",
        || {
            owner
                .update(
                    &tid("t-update"),
                    TaskUpdate::new().status_message("half way"),
                )
                .unwrap()
        },
        applied,
    );
    d.act(
        "complete t-complete",
        || {
            owner
                .complete(&tid("t-complete"), json!({"answer": 42}))
                .unwrap()
        },
        applied,
    );
    d.act(
        "fail t-fail",
        || owner.fail(&tid("t-fail"), json!({"code": "boom"})).unwrap(),
        applied,
    );
    d.act(
        "cancel t-cancel",
        || {
            owner
                .cancel(&tid("t-cancel"), Some("no longer needed".into()))
                .unwrap()
        },
        applied,
    );
    delete(&mut d, &owner, "t-delete", "delete t-delete");
    d.act(
        "renew_lease t-renew",
        || owner.renew_lease(&tid("t-renew")).unwrap(),
        applied,
    );
    d.clock.advance(TICK);
    d.step(
        "renew_leases",
        || {
            let renewed = owner.renew_leases().unwrap();
            let running = owner.list(&ListQuery::active()).unwrap().tasks;
            assert_eq!(renewed, running.len(), "every running task is the owner's");
            running
        },
        |running: &Vec<Task>| Effect::Put(running.clone()),
    );
    create(&mut d, &owner, NewTask::new().id(tid("t-reuse")).ttl(SHORT));
    d.act(
        "complete t-reuse",
        || {
            owner
                .complete(&tid("t-reuse"), json!("first life"))
                .unwrap()
        },
        applied,
    );
    create(&mut d, &owner, NewTask::new().id(tid("t-sweep")).ttl(SHORT));
    create(&mut d, &owner, NewTask::new().id(tid("t-swept")).ttl(SHORT));
    d.act(
        "complete t-swept (a TTL: linked into expiring/)",
        || {
            owner
                .complete(&tid("t-swept"), json!("short-lived"))
                .unwrap()
        },
        applied,
    );
    let gone = d.open("open (second instance)", "gone", SHORT);
    d.step(
        "create t-orphan (second instance)",
        || gone.create(NewTask::new().id(tid("t-orphan"))).unwrap(),
        put,
    );
    d.step(
        "create t-claim (second instance, resumable)",
        || {
            gone.create(
                NewTask::new()
                    .id(tid("t-claim"))
                    .resumable("convert", json!({"file": "x.pdf"})),
            )
            .unwrap()
        },
        put,
    );
    drop(gone);
    d.clock.advance(LATER);
    // Within the claim grace (the owner's long lease): claimed, not reaped.
    let claimed = d.step(
        "claim t-claim",
        || owner.claim(&["convert"]).unwrap().tasks,
        |claimed: &Vec<Task>| {
            let ids: Vec<&str> = claimed.iter().map(|t| t.id.as_str()).collect();
            assert_eq!(ids, ["t-claim"], "the workload claims exactly one task");
            Effect::Put(claimed.clone())
        },
    );
    let epoch = claimed[0].epoch;
    d.act(
        "release t-claim",
        || owner.release(&tid("t-claim"), epoch).unwrap(),
        applied,
    );
    d.step(
        "reap_orphans",
        || owner.reap_orphans().unwrap(),
        |reaped: &Vec<Task>| {
            let ids: Vec<&str> = reaped.iter().map(|t| t.id.as_str()).collect();
            assert_eq!(ids, ["t-orphan"], "the workload reaps exactly one task");
            Effect::Put(reaped.clone())
        },
    );
    d.step(
        "create t-reuse (reusing an expired id)",
        || owner.create(NewTask::new().id(tid("t-reuse"))).unwrap(),
        put,
    );
    d.step(
        "sweep_expired",
        || owner.sweep_expired().unwrap(),
        |n: &usize| {
            assert_eq!(*n, 2, "the workload sweeps exactly t-sweep and t-swept");
            Effect::Remove(vec![tid("t-sweep"), tid("t-swept")])
        },
    );
    d.act(
        "update t-update (input_required)",
        || {
            owner
                .update(
                    &tid("t-update"),
                    TaskUpdate::new()
                        .status(TaskStatus::InputRequired)
                        .input_requests(json!({"confirm": "?"})),
                )
                .unwrap()
        },
        applied,
    );
    d.act(
        "complete t-update",
        || owner.complete(&tid("t-update"), json!("done")).unwrap(),
        applied,
    );
    delete(&mut d, &owner, "t-update", "delete t-update (finished)");
    drop(owner);
    d.finish("every operation")
}

/// The positive control: only the write paths that change one directory,
/// `active/`, and make that change durable there (create, update,
/// renew_lease, delete, sweep of running tasks, create over an expired
/// running task). Every crash state must pass.
pub fn durable_paths() -> Run {
    let mut d = Driver::new(Durability::Immediate);
    let store = d.open("open (first)", "owner", LONG_LEASE);
    let random = d.step(
        "create (random id)",
        || store.create(NewTask::new()).unwrap(),
        put,
    );
    for id in ["t-a", "t-b"] {
        create(&mut d, &store, NewTask::new().id(tid(id)));
    }
    for id in ["t-exp", "t-exp2"] {
        create(&mut d, &store, NewTask::new().id(tid(id)).ttl(SHORT));
    }
    d.act(
        "update t-a",
        || {
            store
                .update(&tid("t-a"), TaskUpdate::new().metadata("k", 1))
                .unwrap()
        },
        applied,
    );
    d.act(
        "update t-a (input_required)",
        || {
            store
                .update(
                    &tid("t-a"),
                    TaskUpdate::new()
                        .status(TaskStatus::InputRequired)
                        .input_requests(json!({"confirm": "?"})),
                )
                .unwrap()
        },
        applied,
    );
    delete(&mut d, &store, "t-b", "delete t-b");
    d.act(
        "renew_lease t-a",
        || store.renew_lease(&tid("t-a")).unwrap(),
        applied,
    );
    d.clock.advance(LATER);
    d.step(
        "create t-exp (reusing an expired running task's id)",
        || store.create(NewTask::new().id(tid("t-exp"))).unwrap(),
        put,
    );
    d.step(
        "sweep_expired",
        || store.sweep_expired().unwrap(),
        |n: &usize| {
            assert_eq!(*n, 1, "the control sweeps exactly t-exp2");
            Effect::Remove(vec![tid("t-exp2")])
        },
    );
    let id = random.id.clone();
    delete(&mut d, &store, id.as_str(), "delete (random id)");
    drop(store);
    d.finish("durable paths (positive control)")
}

fn put(task: &Task) -> Effect {
    Effect::Put(vec![task.clone()])
}

fn applied(t: &Transition) -> Effect {
    assert!(
        t.is_applied(),
        "the workload's transitions all apply: {t:?}"
    );
    Effect::Put(vec![t.task().clone()])
}

fn create(d: &mut Driver, store: &FileStore, new: NewTask) {
    let task = d.step("create", || store.create(new).unwrap(), put);
    d.steps.last_mut().expect("a step").label = format!("create {}", task.id);
}

fn delete(d: &mut Driver, store: &FileStore, id: &str, label: &str) {
    let id = tid(id);
    d.step(
        label,
        || assert!(store.delete(&id).unwrap(), "{id} was there to delete"),
        |()| Effect::Remove(vec![id.clone()]),
    );
}

/// The batch paths the other workloads do not reach, with the large paths
/// taken from three tasks: a reap of four orphans (terminal moves that let
/// each task's lock go between their halves, two with a TTL), a sweep's
/// large paths (`remove_due` for finished tasks, `remove_unread` for
/// running ones, removals under every stripe) and a listing that removes
/// four expired finished tasks at once.
pub fn batch_paths(durability: Durability) -> Run {
    let mut d = Driver::new(durability);
    d.large = 3;
    let owner = d.open("open (owner)", "owner", LONG_LEASE);
    for i in 0..4 {
        let id = format!("fin{i}");
        create(&mut d, &owner, NewTask::new().id(tid(&id)).ttl(SHORT));
        d.act(
            &format!("complete {id}"),
            || owner.complete(&tid(&id), json!(i)).unwrap(),
            applied,
        );
    }
    d.act(
        "list active (the snapshot whole)",
        || owner.list(&ListQuery::active()).unwrap(),
        |_| Effect::Nothing,
    );
    let gone = d.open("open (gone)", "gone", SHORT);
    for i in 0..4 {
        let id = format!("o{i}");
        let new = NewTask::new().id(tid(&id));
        let new = if i < 2 {
            new.ttl(Duration::from_secs(3600))
        } else {
            new
        };
        d.step(
            &format!("create {id} (gone)"),
            || gone.create(new).unwrap(),
            put,
        );
    }
    drop(gone);
    d.clock.advance(LATER);
    d.step(
        "reap_orphans (four)",
        || owner.reap_orphans().unwrap(),
        |reaped: &Vec<Task>| {
            assert_eq!(reaped.len(), 4, "reaps o0..o3");
            Effect::Put(reaped.clone())
        },
    );
    let other = d.open("open (other)", "other", LONG_LEASE);
    for i in 0..4 {
        create(
            &mut d,
            &other,
            NewTask::new().id(tid(&format!("run{i}"))).ttl(TICK),
        );
    }
    drop(other);
    d.clock.advance(TICK * 2);
    d.step(
        "sweep_expired (large paths)",
        || owner.sweep_expired().unwrap(),
        |n: &usize| {
            assert_eq!(*n, 8, "fin0..3 and run0..3");
            let ids = (0..4)
                .map(|i| tid(&format!("fin{i}")))
                .chain((0..4).map(|i| tid(&format!("run{i}"))))
                .collect();
            Effect::Remove(ids)
        },
    );
    for i in 0..4 {
        let id = format!("g{i}");
        create(&mut d, &owner, NewTask::new().id(tid(&id)).ttl(SHORT));
        d.act(
            &format!("complete {id}"),
            || owner.complete(&tid(&id), json!(i)).unwrap(),
            applied,
        );
    }
    d.clock.advance(LATER);
    d.act(
        "list all (meets four expired finished tasks)",
        || owner.list(&ListQuery::all()).unwrap(),
        |_| Effect::Nothing,
    );
    drop(owner);
    d.finish("batch paths")
}

/// Runs steps against one store directory, recording the seam calls.
struct Driver {
    recorder: Recorder,
    clock: ManualClock,
    durability: Durability,
    /// From how many tasks a pass takes its large path
    /// (`FileStoreBuilder::large_passes_from`).
    large: usize,
    dir: tempfile::TempDir,
    steps: Vec<Step>,
    /// The run's calls: the store's, as recorded, and changes made beside
    /// it ([`outside`](Self::outside)), in order.
    events: Vec<FsEvent>,
    /// How many of the recorder's calls are in `events`.
    seen: usize,
    /// Given to the handles it opens, to hold a call where a workload plays
    /// another process.
    faults: FaultInjector,
}

impl Driver {
    fn new(durability: Durability) -> Driver {
        Driver {
            recorder: Recorder::new(),
            clock: ManualClock::new(T0),
            durability,
            large: 256,
            dir: scratch_dir("taskstore-workload"),
            steps: Vec::new(),
            events: Vec::new(),
            seen: 0,
            faults: FaultInjector::new(),
        }
    }

    /// Moves the calls recorded since the last look into `events`.
    fn flush(&mut self) {
        let all = self.recorder.events();
        self.events.extend_from_slice(&all[self.seen..]);
        self.seen = all.len();
    }

    /// A change made beside the store (no store call: what a power loss
    /// under `Eventual`, or a copy of the store, leaves), made by `change`
    /// on the store's directory, which returns the calls it made, durable
    /// before the next step.
    fn outside(&mut self, change: impl FnOnce(&Path) -> Vec<FsEvent>) {
        self.flush();
        let made = change(&self.dir.path().join(STORE));
        self.events.extend(made);
    }

    fn open(&mut self, label: &str, instance: &str, lease: Duration) -> FileStore {
        let builder = FileStore::builder(self.dir.path().join(STORE))
            .clock(Arc::new(self.clock.clone()))
            .instance_id(instance)
            .lease(lease)
            .durability(self.durability)
            .large_passes_from(self.large)
            .fault_injector(self.faults.clone())
            // A stripe another process holds (played by the workload) is
            // given up on soon.
            .stripe_wait(Duration::from_millis(200))
            .recorder(self.recorder.clone());
        self.step(label, || builder.open().unwrap(), |_| Effect::Nothing)
    }

    /// A step whose result the workload does not need.
    fn act<T>(&mut self, label: &str, call: impl FnOnce() -> T, effect: impl FnOnce(&T) -> Effect) {
        let _ = self.step(label, call, effect);
    }

    fn step<T>(
        &mut self,
        label: &str,
        call: impl FnOnce() -> T,
        effect: impl FnOnce(&T) -> Effect,
    ) -> T {
        self.flush();
        let (start, now) = (self.events.len(), self.clock.now());
        let out = call();
        self.flush();
        let end = self.events.len();
        self.steps.push(Step {
            label: label.to_owned(),
            start,
            end,
            now,
            effect: effect(&out),
        });
        out
    }

    fn finish(mut self, name: &'static str) -> Run {
        self.flush();
        let mut ids = BTreeSet::new();
        for step in &self.steps {
            match &step.effect {
                Effect::Nothing => {}
                Effect::Put(tasks) => ids.extend(tasks.iter().map(|t| t.id.clone())),
                Effect::Remove(gone) => ids.extend(gone.iter().cloned()),
            }
        }
        Run {
            name,
            durability: self.durability,
            base: self.dir.path().to_owned(),
            events: self.events,
            steps: self.steps,
            ids: ids.into_iter().collect(),
            _dir: self.dir,
        }
    }
}

/// A temporary directory on tmpfs when there is one: the materialized crash
/// states are many and small, and no disk needs to be waited for.
pub fn scratch_dir(prefix: &str) -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::Builder::new().prefix(prefix).tempdir_in(shm)
    {
        return dir;
    }
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("a temporary directory")
}
