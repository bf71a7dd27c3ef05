//! A backend written outside the crate, through the public API only: task
//! JSON in a map behind a mutex, implementing just the five required methods
//! (so the rules run on the default compare-and-swap `modify`). It passes
//! the whole conformance suite, races included.

#![cfg(feature = "conformance")]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use taskstore::backend::{
    Backend, Insert, Position, Record, Scan, Scanned, Scope, Swap, is_current,
};
use taskstore::conformance::{self, Setup};
use taskstore::{Error, Result, Store, Task, TaskId};

/// Tasks as the JSON the rules handed over, keyed in listing order.
#[derive(Clone, Default)]
struct JsonMap {
    tasks: Arc<Mutex<BTreeMap<TaskId, Vec<u8>>>>,
}

fn decode(id: &TaskId, json: &[u8]) -> Result<Task> {
    serde_json::from_slice(json).map_err(|e| Error::backend("json-map", format!("decode {id}"), e))
}

impl JsonMap {
    fn stored(&self, id: &TaskId) -> Result<Option<Task>> {
        let tasks = self.tasks.lock().unwrap();
        tasks.get(id).map(|json| decode(id, json)).transpose()
    }
}

impl Backend for JsonMap {
    fn load(&self, id: &TaskId) -> Result<Option<Task>> {
        self.stored(id)
    }

    fn insert(&self, record: &Record, max_active: usize) -> Result<Insert> {
        let mut tasks = self.tasks.lock().unwrap();
        let id = &record.task().id;
        if let Some(json) = tasks.get(id) {
            return Ok(Insert::Exists(decode(id, json)?));
        }
        let active = tasks
            .iter()
            .map(|(id, json)| decode(id, json))
            .filter(|t| t.as_ref().map_or(true, |t| !t.is_terminal()))
            .count();
        if active >= max_active {
            return Ok(Insert::Full);
        }
        tasks.insert(id.clone(), record.json().to_vec());
        Ok(Insert::Done)
    }

    fn replace(&self, current: &Task, next: &Record) -> Result<Swap> {
        let mut tasks = self.tasks.lock().unwrap();
        let stored = match tasks.get(&current.id) {
            Some(json) => Some(decode(&current.id, json)?),
            None => None,
        };
        match stored {
            Some(stored) if is_current(&stored, current) => {
                tasks.insert(current.id.clone(), next.json().to_vec());
                Ok(Swap::Done)
            }
            stored => Ok(Swap::Changed(stored)),
        }
    }

    fn remove(&self, current: &Task) -> Result<Swap> {
        let mut tasks = self.tasks.lock().unwrap();
        let stored = match tasks.get(&current.id) {
            Some(json) => Some(decode(&current.id, json)?),
            None => None,
        };
        match stored {
            Some(stored) if is_current(&stored, current) => {
                tasks.remove(&current.id);
                Ok(Swap::Done)
            }
            stored => Ok(Swap::Changed(stored)),
        }
    }

    fn scan(&self, scan: &Scan) -> Result<Scanned> {
        let tasks = self.tasks.lock().unwrap();
        let mut found: Vec<Task> = tasks
            .iter()
            .map(|(id, json)| decode(id, json))
            .collect::<Result<_>>()?;
        found.retain(|t| {
            (scan.scope == Scope::All || !t.is_terminal()) && scan.matches(t) && scan.is_after(t)
        });
        found.sort_by(|a, b| Position::of(a).cmp(&Position::of(b)));
        found.truncate(scan.limit);
        Ok(Scanned::new(found, Vec::new()))
    }
}

#[test]
fn a_backend_written_outside_the_crate_passes_the_suite() {
    conformance::run(|| {
        let backend = JsonMap::default();
        move |setup: &Setup, instance_id: &str| {
            setup
                .configure(Store::with_backend(backend.clone()), instance_id)
                .build()
                .unwrap()
        }
    });
}

#[test]
fn a_backend_error_names_the_backend_and_the_operation() {
    let err = decode(&TaskId::parse("t1").unwrap(), b"{").unwrap_err();
    assert!(matches!(
        err,
        Error::Backend {
            backend: "json-map",
            ..
        }
    ));
    let text = err.to_string();
    assert!(
        text.contains("json-map") && text.contains("decode t1"),
        "{text}"
    );
    assert!(std::error::Error::source(&err).is_some());
}

/// A host's own `TaskStore` that implements only the required methods
/// (forwarding to a store of this crate), so every provided method runs
/// as the trait's default: the defaults keep the rules too. (The default
/// `renew_leases` stopped at the first task of another open of the same
/// instance id with `NotOwner`.) With a task id, its `renew_lease` of
/// that task fails, as a host's store may for one task.
struct OnlyRequired(taskstore::MemoryStore, Option<TaskId>);

impl taskstore::TaskStore for OnlyRequired {
    fn create(&self, new: taskstore::NewTask) -> Result<Task> {
        self.0.create(new)
    }
    fn get(&self, id: &TaskId) -> Result<Option<Task>> {
        self.0.get(id)
    }
    fn update(&self, id: &TaskId, update: taskstore::TaskUpdate) -> Result<taskstore::Transition> {
        self.0.update(id, update)
    }
    fn finish(&self, id: &TaskId, outcome: taskstore::Outcome) -> Result<taskstore::Transition> {
        self.0.finish(id, outcome)
    }
    fn finish_fenced(
        &self,
        id: &TaskId,
        outcome: taskstore::Outcome,
        epoch: u64,
    ) -> Result<taskstore::Transition> {
        self.0.finish_fenced(id, outcome, epoch)
    }
    fn list(&self, query: &taskstore::ListQuery) -> Result<taskstore::Page> {
        self.0.list(query)
    }
    fn delete(&self, id: &TaskId) -> Result<bool> {
        self.0.delete(id)
    }
    fn sweep(&self) -> Result<taskstore::Swept> {
        self.0.sweep()
    }
    fn instance_id(&self) -> &str {
        self.0.instance_id()
    }
    // The suite's clock and lease: a store says them (the defaults are the
    // system clock and none).
    fn lease(&self) -> Option<std::time::Duration> {
        self.0.lease()
    }
    fn now(&self) -> time::OffsetDateTime {
        self.0.now()
    }
    fn renew_lease(&self, id: &TaskId) -> Result<taskstore::Transition> {
        if self.1.as_ref() == Some(id) {
            let op = format!("renew the lease of task {id}");
            return Err(Error::backend("only-required", op, "refused by the test"));
        }
        self.0.renew_lease(id)
    }
    fn release(&self, id: &TaskId, epoch: u64) -> Result<taskstore::Transition> {
        self.0.release(id, epoch)
    }
    fn reap(&self) -> Result<taskstore::Reaped> {
        self.0.reap()
    }
    fn claim(&self, kinds: &[&str]) -> Result<taskstore::Claimed> {
        self.0.claim(kinds)
    }
}

#[test]
fn a_task_store_with_only_the_required_methods_passes_the_suite() {
    conformance::run(|| {
        let backend = taskstore::MemoryBackend::default();
        move |setup: &Setup, instance_id: &str| {
            OnlyRequired(
                setup
                    .configure(Store::with_backend(backend.clone()), instance_id)
                    .build()
                    .unwrap(),
                None,
            )
        }
    });
}

/// The default renewal pass renews every task it can and reports the
/// first it could not after them, as the stores of this crate do. (It
/// stopped at that task: the ones after it in listing order kept their
/// old leases, to lapse while their owner ran them.) The default `renew`
/// returns the tasks it renewed beside the one it could not, in
/// `missed`.
#[test]
fn the_default_renewal_pass_renews_past_a_task_it_cannot_renew() {
    use taskstore::TaskStore;
    let start = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
    let clock = taskstore::ManualClock::new(start);
    let lease = std::time::Duration::from_secs(30);
    let store = Store::with_backend(taskstore::MemoryBackend::default())
        .clock(Arc::new(clock.clone()))
        .instance_id("owner")
        .lease(lease)
        .build()
        .unwrap();
    // The one that fails first in listing order.
    let stuck = store.create(taskstore::NewTask::new()).unwrap();
    let fine = store.create(taskstore::NewTask::new()).unwrap();
    let host = OnlyRequired(store, Some(stuck.id.clone()));
    clock.advance(std::time::Duration::from_secs(5));
    match host.renew_leases() {
        Err(e) => assert!(e.to_string().contains(stuck.id.as_str()), "{e}"),
        Ok(renewed) => panic!("the failure is reported, got Ok({renewed})"),
    }
    let renewed = host.get(&fine.id).unwrap().unwrap();
    assert_eq!(
        renewed.lease_expires_at,
        Some(start + std::time::Duration::from_secs(5) + lease),
        "the other task is renewed"
    );
    clock.advance(std::time::Duration::from_secs(5));
    let pass = host.renew().unwrap();
    let renewed = host.get(&fine.id).unwrap().unwrap();
    assert_eq!(pass.tasks, std::slice::from_ref(&renewed), "{pass:?}");
    assert_eq!(
        renewed.lease_expires_at,
        Some(start + std::time::Duration::from_secs(10) + lease)
    );
    assert_eq!(pass.missed.len(), 1, "{pass:?}");
    assert_eq!(pass.missed[0].id, stuck.id);
    let error = pass.missed[0].error.to_string();
    assert!(error.contains(stuck.id.as_str()), "{error}");
}

/// A backend that counts its loads, one at a time and together.
#[derive(Clone, Default)]
struct Counted {
    inner: JsonMap,
    loads: Arc<Mutex<(usize, usize)>>,
}

impl Backend for Counted {
    fn load(&self, id: &TaskId) -> Result<Option<Task>> {
        self.loads.lock().unwrap().0 += 1;
        self.inner.load(id)
    }
    fn load_all(&self, ids: &[TaskId]) -> Vec<Result<Option<Task>>> {
        self.loads.lock().unwrap().1 += 1;
        ids.iter().map(|id| self.inner.load(id)).collect()
    }
    fn insert(&self, record: &Record, max_active: usize) -> Result<Insert> {
        self.inner.insert(record, max_active)
    }
    fn replace(&self, current: &Task, next: &Record) -> Result<Swap> {
        self.inner.replace(current, next)
    }
    fn remove(&self, current: &Task) -> Result<Swap> {
        self.inner.remove(current)
    }
    fn scan(&self, scan: &Scan) -> Result<Scanned> {
        self.inner.scan(scan)
    }
}

/// A renewal pass asks its backend for the tasks it renews once, with
/// `Backend::load_all`, not once per task, and so does `get_all`: over
/// PostgreSQL each load is a round trip, and a manager renews or reads
/// every run it has at every tick.
#[test]
fn a_renewal_pass_and_get_all_load_their_tasks_together() {
    use taskstore::TaskStore;
    let backend = Counted::default();
    let store = Store::with_backend(backend.clone())
        .instance_id("renewer")
        .build()
        .unwrap();
    let ids: Vec<TaskId> = (0..8)
        .map(|_| store.create(taskstore::NewTask::new()).unwrap().id)
        .collect();
    *backend.loads.lock().unwrap() = (0, 0);
    for renewed in store.renew_leases_of(&ids) {
        assert!(renewed.unwrap().is_applied());
    }
    assert_eq!(
        *backend.loads.lock().unwrap(),
        (0, 1),
        "(one by one, together)"
    );
    *backend.loads.lock().unwrap() = (0, 0);
    for got in store.get_all(&ids) {
        assert!(got.unwrap().is_some());
    }
    assert_eq!(
        *backend.loads.lock().unwrap(),
        (0, 1),
        "(one by one, together)"
    );
}

/// A backend that stores no task larger than `largest` bytes (as a
/// database limits one value), and says it holds `says` (as `PgBackend`
/// says a little less than PostgreSQL holds).
#[derive(Clone, Default)]
struct Bounded {
    inner: JsonMap,
    largest: usize,
    says: usize,
}

impl Bounded {
    fn fits(&self, record: &Record) -> Result<()> {
        let size = record.json().len();
        if size > self.largest {
            return Err(Error::backend(
                "bounded",
                format!("store task {} of {size} bytes", record.task().id),
                "over the largest task this backend holds",
            ));
        }
        Ok(())
    }
}

impl Backend for Bounded {
    fn load(&self, id: &TaskId) -> Result<Option<Task>> {
        self.inner.load(id)
    }
    fn insert(&self, record: &Record, max_active: usize) -> Result<Insert> {
        self.fits(record)?;
        self.inner.insert(record, max_active)
    }
    fn replace(&self, current: &Task, next: &Record) -> Result<Swap> {
        self.fits(next)?;
        self.inner.replace(current, next)
    }
    fn remove(&self, current: &Task) -> Result<Swap> {
        self.inner.remove(current)
    }
    fn scan(&self, scan: &Scan) -> Result<Scanned> {
        self.inner.scan(scan)
    }
    fn largest_task(&self) -> usize {
        self.says
    }
}

/// The lease of the stores [`on_bounded`] makes.
const BOUNDED_LEASE: std::time::Duration = std::time::Duration::from_secs(30);

/// A store over `backend` as `instance`, on `clock`, asking for a 1 MiB cap.
fn on_bounded(backend: Bounded, clock: &taskstore::ManualClock, instance: &str) -> Store<Bounded> {
    Store::with_backend(backend)
        .clock(Arc::new(clock.clone()))
        .instance_id(instance)
        .lease(BOUNDED_LEASE)
        .max_payload_bytes(1 << 20)
        .build()
        .unwrap()
}

/// A store over a backend that holds smaller tasks than the cap asked for
/// lowers its cap to leave the store's headroom under the backend's
/// largest: a task over the lowered cap is refused by the rules
/// (`PayloadTooLarge`, not the backend's error), and a task at it, left by
/// a dead owner, is reaped by a handle with the longest instance id whose
/// characters JSON escapes. (The cap asked for stood: the backend refused
/// the create, and would have refused the reap of a task near it, leaving
/// an orphan no reaper could end.)
#[test]
fn a_backend_that_holds_smaller_tasks_lowers_the_cap_so_its_orphans_can_be_reaped() {
    use taskstore::{ManualClock, NewTask, TaskStatus, TaskStore};
    let largest = 32 * 1024;
    let cap = largest - taskstore::OWN_HEADROOM;
    let backend = Bounded {
        inner: JsonMap::default(),
        largest,
        says: largest,
    };
    let clock = ManualClock::new(time::macros::datetime!(2030-01-01 00:00:00.123456789 UTC));
    let open = |instance: &str| on_bounded(backend.clone(), &clock, instance);
    let owner = open(&"\"".repeat(taskstore::MAX_INSTANCE_ID_LEN));
    let new = || NewTask::new().status_message("s");
    let over = owner.create(new().metadata("m", "y".repeat(cap)));
    assert!(
        matches!(over, Err(Error::PayloadTooLarge { limit, .. }) if limit == cap),
        "refused by the rules at the lowered cap: {:?}",
        over.as_ref().map(|task| &task.id)
    );
    // Fill the metadata to the byte where one more is refused.
    let probe = owner.create(new().metadata("m", "")).unwrap();
    let room = cap - serde_json::to_vec(&probe).unwrap().len();
    assert!(owner.delete(&probe.id).unwrap());
    let task = owner.create(new().metadata("m", "y".repeat(room))).unwrap();
    assert_eq!(serde_json::to_vec(&task).unwrap().len(), cap);
    clock.advance(BOUNDED_LEASE * 3);
    let reaper = open(&"\\".repeat(taskstore::MAX_INSTANCE_ID_LEN));
    let reaped = reaper.reap().unwrap();
    assert!(reaped.missed.is_empty(), "{:?}", reaped.missed);
    assert_eq!(reaped.tasks.len(), 1);
    let stored = reaper.get(&task.id).unwrap().unwrap();
    assert_eq!(stored.status, TaskStatus::Failed);
    assert_eq!(stored.metadata, task.metadata);
}

/// A task stored past what its backend says it holds (under a larger cap,
/// by a handle of an earlier version) is taken as it is: a reaper whose
/// cap the backend lowered still reaps it, the store's own change going
/// past the lowered cap and what the backend says, as far as the backend
/// holds. (The store's own changes were held to what the backend says: the
/// orphan was missed by every reap, `PayloadTooLarge`.)
#[test]
fn a_task_stored_past_what_the_backend_says_it_holds_is_still_reaped() {
    use taskstore::{ManualClock, NewTask, TaskStatus, TaskStore};
    let says = 32 * 1024;
    let holds = 64 * 1024;
    let inner = JsonMap::default();
    let clock = ManualClock::new(time::macros::datetime!(2030-01-01 00:00:00.123456789 UTC));
    let open = |says: usize, instance: &str| {
        let backend = Bounded {
            inner: inner.clone(),
            largest: holds,
            says,
        };
        on_bounded(backend, &clock, instance)
    };
    // A handle of an earlier version, whose backend said nothing less.
    let earlier = open(holds, "earlier");
    let probe = earlier.create(NewTask::new().metadata("m", "")).unwrap();
    let room = says - serde_json::to_vec(&probe).unwrap().len();
    let task = earlier
        .create(NewTask::new().metadata("m", "y".repeat(room)))
        .unwrap();
    assert_eq!(serde_json::to_vec(&task).unwrap().len(), says);
    clock.advance(BOUNDED_LEASE * 3);
    let reaper = open(says, &"\\".repeat(taskstore::MAX_INSTANCE_ID_LEN));
    let reaped = reaper.reap().unwrap();
    assert!(reaped.missed.is_empty(), "{:?}", reaped.missed);
    let ids: Vec<&TaskId> = reaped.tasks.iter().map(|t| &t.id).collect();
    assert!(ids.contains(&&task.id), "{ids:?}");
    let stored = reaper.get(&task.id).unwrap().unwrap();
    assert_eq!(stored.status, TaskStatus::Failed);
    assert!(serde_json::to_vec(&stored).unwrap().len() > says);
}

/// A backend that holds less than the smallest cap and the store's
/// headroom (8 KiB) has no store made over it: the build is refused,
/// naming the backend's `largest_task`, not a store that accepts tasks
/// the backend cannot hold. (It was raised to 8 KiB, and the backend
/// refused a create the rules let through.)
#[test]
fn a_backend_that_holds_less_than_a_store_needs_is_refused() {
    let least = taskstore::MIN_MAX_PAYLOAD_BYTES + taskstore::OWN_HEADROOM;
    for says in [0, 2048, least - 1] {
        let backend = Bounded {
            inner: JsonMap::default(),
            largest: says,
            says,
        };
        match Store::with_backend(backend).build() {
            Err(Error::InvalidConfig { field, reason }) => {
                assert_eq!(field, "largest_task");
                assert!(reason.contains(&says.to_string()), "{reason}");
            }
            other => panic!("a backend of {says} bytes: {:?}", other.map(|_| ())),
        }
    }
    let backend = Bounded {
        inner: JsonMap::default(),
        largest: least,
        says: least,
    };
    assert!(Store::with_backend(backend).build().is_ok());
}

/// [`JsonMap`] that runs a hook once, after the first scan its store makes
/// (a claim's).
struct AfterFirstScan {
    map: JsonMap,
    hook: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl Backend for AfterFirstScan {
    fn load(&self, id: &TaskId) -> Result<Option<Task>> {
        self.map.load(id)
    }
    fn insert(&self, record: &Record, max_active: usize) -> Result<Insert> {
        self.map.insert(record, max_active)
    }
    fn replace(&self, current: &Task, next: &Record) -> Result<Swap> {
        self.map.replace(current, next)
    }
    fn remove(&self, current: &Task) -> Result<Swap> {
        self.map.remove(current)
    }
    fn scan(&self, scan: &Scan) -> Result<Scanned> {
        let scanned = self.map.scan(scan);
        let hook = self.hook.lock().unwrap().take();
        if let Some(hook) = hook {
            hook();
        }
        scanned
    }
}

/// A write of another instance's (a client's answer, a note) that lands on
/// an orphan between a claim's scan and its write leaves the orphan to be
/// claimed: the claim judges it again, as a reap does, and claims it with
/// what that write left. (The claim skipped it for the pass, taken for a
/// task renewed or claimed by another, so that a reap after the claim
/// grace could fail it before the next claim.)
#[test]
fn an_orphan_written_between_a_claims_scan_and_its_write_is_still_claimed() {
    use taskstore::TaskStore;
    let clock = taskstore::ManualClock::new(
        time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
    );
    let lease = std::time::Duration::from_secs(30);
    let map = JsonMap::default();
    fn on<B: Backend>(
        backend: B,
        clock: &taskstore::ManualClock,
        lease: std::time::Duration,
        instance: &str,
    ) -> Store<B> {
        Store::with_backend(backend)
            .clock(Arc::new(clock.clone()))
            .lease(lease)
            .instance_id(instance)
            .build()
            .unwrap()
    }
    let dead = on(map.clone(), &clock, lease, "dead");
    let orphan = dead
        .create(taskstore::NewTask::new().resumable("k", serde_json::json!(1)))
        .unwrap();
    clock.advance(lease);
    let peer = on(map.clone(), &clock, lease, "peer");
    let id = orphan.id.clone();
    let heir = on(
        AfterFirstScan {
            map: map.clone(),
            hook: Mutex::new(Some(Box::new(move || {
                let noted = peer
                    .update(
                        &id,
                        taskstore::TaskUpdate::new().metadata("note", "meanwhile"),
                    )
                    .unwrap();
                assert!(noted.is_applied(), "{noted:?}");
            }))),
        },
        &clock,
        lease,
        "heir",
    );
    let claimed = heir.claim(&["k"]).unwrap();
    assert_eq!(claimed.tasks.len(), 1, "{claimed:?}");
    let task = &claimed.tasks[0];
    assert_eq!(
        (task.owner.as_deref(), task.epoch),
        (Some("heir"), orphan.epoch + 1)
    );
    assert_eq!(
        task.metadata.get("note"),
        Some(&serde_json::json!("meanwhile"))
    );
    assert_eq!(heir.get(&orphan.id).unwrap().as_ref(), Some(task));
}

/// [`JsonMap`] whose first insert fails having stored nothing, and whose
/// first claim's write fails having been applied all the same (as the
/// identical claim another pass of the same handle made and reported at
/// that instant would leave it): each failure marked as known to have
/// changed nothing when `marked`. It counts the removals the store asks
/// of it.
struct FailsOnce {
    map: JsonMap,
    marked: bool,
    insert_failed: Mutex<bool>,
    claim_failed: Mutex<bool>,
    removals: Mutex<usize>,
}

impl FailsOnce {
    fn new(map: JsonMap, marked: bool) -> Self {
        FailsOnce {
            map,
            marked,
            insert_failed: Mutex::new(false),
            claim_failed: Mutex::new(false),
            removals: Mutex::new(0),
        }
    }

    fn failure(&self, op: &str) -> Error {
        let error = Error::backend("fails-once", op, "refused");
        if self.marked {
            error.known_to_have_changed_nothing()
        } else {
            error
        }
    }
}

impl Backend for FailsOnce {
    fn load(&self, id: &TaskId) -> Result<Option<Task>> {
        self.map.load(id)
    }
    fn insert(&self, record: &Record, max_active: usize) -> Result<Insert> {
        if !std::mem::replace(&mut *self.insert_failed.lock().unwrap(), true) {
            return Err(self.failure(&format!("insert task {}", record.task().id)));
        }
        self.map.insert(record, max_active)
    }
    fn replace(&self, current: &Task, next: &Record) -> Result<Swap> {
        let swapped = self.map.replace(current, next);
        let claim = next.task().epoch > current.epoch;
        if claim && !std::mem::replace(&mut *self.claim_failed.lock().unwrap(), true) {
            assert!(matches!(swapped, Ok(Swap::Done)), "{swapped:?}");
            return Err(self.failure(&format!("replace task {}", current.id)));
        }
        swapped
    }
    fn remove(&self, current: &Task) -> Result<Swap> {
        *self.removals.lock().unwrap() += 1;
        self.map.remove(current)
    }
    fn scan(&self, scan: &Scan) -> Result<Scanned> {
        self.map.scan(scan)
    }
}

/// A backend outside the crate says a failure changed nothing
/// (`Error::known_to_have_changed_nothing`), and the rules take it so: a
/// create that failed so is not undone (no removal follows it), and a claim
/// that failed so is not left to lapse (the task another pass of the handle
/// claimed is renewed by it). Unmarked, the same failures may have been
/// applied: the create is undone, the claim disowned (its renewal finds no
/// task of this handle's).
#[test]
fn a_failure_an_outside_backend_marks_as_changing_nothing_is_taken_so() {
    use taskstore::{TaskStore, Transition};
    for marked in [false, true] {
        let clock = taskstore::ManualClock::new(
            time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
        );
        let lease = std::time::Duration::from_secs(30);
        let on = |map: &JsonMap, instance: &str| {
            Store::with_backend(FailsOnce::new(map.clone(), marked))
                .clock(Arc::new(clock.clone()))
                .lease(lease)
                .instance_id(instance)
                .build()
                .unwrap()
        };
        let map = JsonMap::default();
        let dead = on(&map, "dead");
        let failed = dead.create(taskstore::NewTask::new()).unwrap_err();
        assert_eq!(failed.changed_nothing(), marked, "{failed}");
        assert!(failed.to_string().contains("insert task"), "{failed}");
        assert_eq!(
            *dead.backend().removals.lock().unwrap(),
            usize::from(!marked),
            "removals after a create that failed (marked: {marked})"
        );
        let orphan = dead
            .create(taskstore::NewTask::new().resumable("k", serde_json::json!(1)))
            .unwrap();
        clock.advance(lease);

        let heir = on(&map, "heir");
        let claimed = heir.claim(&["k"]).unwrap();
        assert!(claimed.tasks.is_empty(), "{claimed:?}");
        assert_eq!(claimed.missed.len(), 1, "{claimed:?}");
        let stored = heir.get(&orphan.id).unwrap().unwrap();
        assert_eq!(
            (stored.owner.as_deref(), stored.epoch),
            (Some("heir"), orphan.epoch + 1)
        );
        let renewed = heir.renew_leases_of(std::slice::from_ref(&orphan.id));
        if marked {
            assert!(
                matches!(renewed[0], Ok(Transition::Applied(_))),
                "{renewed:?}"
            );
        } else {
            assert!(
                matches!(renewed[0], Err(Error::NotFound { .. })),
                "{renewed:?}"
            );
        }
    }
}

/// A backend whose scans ask nothing of expiry: it returns every task
/// the scan's other filters let through, expired or not (the contract says
/// it should not; an outside store may still). The rules judge what a
/// scan returns by the scan itself ([`Scan::matches`]).
#[derive(Clone, Default)]
struct BlindToExpiry {
    inner: JsonMap,
}

impl Backend for BlindToExpiry {
    fn load(&self, id: &TaskId) -> Result<Option<Task>> {
        self.inner.load(id)
    }
    fn insert(&self, record: &Record, max_active: usize) -> Result<Insert> {
        self.inner.insert(record, max_active)
    }
    fn replace(&self, current: &Task, next: &Record) -> Result<Swap> {
        self.inner.replace(current, next)
    }
    fn remove(&self, current: &Task) -> Result<Swap> {
        self.inner.remove(current)
    }
    fn scan(&self, scan: &Scan) -> Result<Scanned> {
        let mut blind = scan.clone();
        blind.expired_at = None;
        self.inner.scan(&blind)
    }
}

/// A sweep over a backend whose scans return live tasks beside the expired
/// ones deletes the expired ones alone, and its preview (`Store::expired`)
/// names them alone: a running and a finished task whose TTL passed go, a
/// running and a finished task with a TTL to come and one without stay,
/// each reading back as it was.
#[test]
fn a_sweep_over_a_backend_blind_to_expiry_deletes_the_expired_tasks_alone() {
    use std::time::Duration;
    use taskstore::{ManualClock, NewTask, TaskStore};
    let clock = ManualClock::new(time::OffsetDateTime::now_utc());
    let store = Store::with_backend(BlindToExpiry::default())
        .clock(Arc::new(clock.clone()))
        .instance_id("sweeper")
        .build()
        .unwrap();
    let make = |ttl: Option<u64>, finish: bool| {
        let mut new = NewTask::new();
        if let Some(secs) = ttl {
            new = new.ttl(Duration::from_secs(secs));
        }
        let task = store.create(new).unwrap();
        if finish {
            let done = store.complete(&task.id, serde_json::json!("done")).unwrap();
            assert!(done.is_applied());
        }
        task.id
    };
    let expiring = [make(Some(1), false), make(Some(1), true)];
    let live = [
        make(Some(3_600), false),
        make(Some(3_600), true),
        make(None, false),
    ];
    let before: Vec<Task> = live
        .iter()
        .map(|id| store.get(id).unwrap().unwrap())
        .collect();
    clock.advance(Duration::from_secs(2));
    let mut previewed: Vec<TaskId> = store.expired().unwrap().into_iter().map(|t| t.id).collect();
    previewed.sort();
    let mut wanted = expiring.to_vec();
    wanted.sort();
    assert_eq!(previewed, wanted, "the sweep's preview");
    let swept = store.sweep().unwrap();
    assert_eq!(swept.deleted, 2, "{swept:?}");
    for (id, was) in live.iter().zip(&before) {
        assert_eq!(store.get(id).unwrap().as_ref(), Some(was), "{id}");
    }
    for id in &expiring {
        assert_eq!(store.get(id).unwrap(), None);
    }
}
