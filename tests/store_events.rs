//! Both stores emit every task event to their sink, after their locks are
//! released, and survive a sink that panics.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use taskstore::{
    Event, EventKind, EventLog, EventSink, FileStore, ManualClock, MemoryStore, NewTask,
    TaskEventKind, TaskStore, TaskUpdate,
};
use time::OffsetDateTime;

fn kinds(log: &EventLog) -> Vec<EventKind> {
    log.snapshot().into_iter().map(|r| r.event.kind).collect()
}

/// The same lifecycle on any store; returns the kinds it should have emitted.
fn lifecycle(store: &dyn TaskStore, clock: &ManualClock) -> Vec<TaskEventKind> {
    let a = store.create(NewTask::new()).unwrap();
    let _ = store
        .update(&a.id, TaskUpdate::new().metadata("k", 1))
        .unwrap();
    assert!(store.complete(&a.id, json!(1)).unwrap().is_applied());
    // A lost race changes nothing and emits nothing.
    assert!(!store.fail(&a.id, json!(2)).unwrap().is_applied());
    let b = store.create(NewTask::new()).unwrap();
    assert!(store.fail(&b.id, json!("boom")).unwrap().is_applied());
    let c = store.create(NewTask::new()).unwrap();
    assert!(store.cancel(&c.id, None).unwrap().is_applied());
    assert!(store.delete(&c.id).unwrap());
    let d = store
        .create(NewTask::new().ttl(Duration::from_secs(5)))
        .unwrap();
    clock.advance(Duration::from_secs(5));
    assert_eq!(store.sweep_expired().unwrap(), 1);
    let _ = d;
    let e = store.create(NewTask::new()).unwrap();
    clock.advance(Duration::from_secs(31));
    assert_eq!(store.reap_orphans().unwrap().len(), 1);
    let _ = e;
    use TaskEventKind::*;
    vec![
        Created, Updated, Completed, Created, Failed, Created, Cancelled, Deleted, Created,
        Expired, Created, Reaped,
    ]
}

fn clock() -> ManualClock {
    ManualClock::new(OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap())
}

#[test]
fn memory_store_emits_every_task_event() {
    let (clock, log) = (clock(), Arc::new(EventLog::new()));
    let store = MemoryStore::builder()
        .clock(Arc::new(clock.clone()))
        .sink(log.clone())
        .build()
        .unwrap();
    let want = lifecycle(&store, &clock);
    assert_eq!(kinds(&log), want);
}

#[test]
fn file_store_emits_every_task_event_and_corrupt_files() {
    let (clock, log) = (clock(), Arc::new(EventLog::new()));
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::builder(dir.path())
        .clock(Arc::new(clock.clone()))
        .sink(log.clone())
        .open()
        .unwrap();
    let want = lifecycle(&store, &clock);
    assert_eq!(kinds(&log), want);
    let first = &log.snapshot()[0].event;
    assert_eq!(first.data["status"], "working");
    assert_eq!(first.data["revision"], 1);

    std::fs::write(dir.path().join("active").join("broken.json"), b"{").unwrap();
    store.list(&taskstore::ListQuery::all()).unwrap();
    let last = log.snapshot().pop().unwrap().event;
    assert_eq!(last.kind, TaskEventKind::Unreadable);
    assert!(
        last.data["location"]
            .as_str()
            .unwrap()
            .ends_with("broken.json"),
        "{last:?}"
    );
    assert_eq!(last.data["action"], "setAside");
    assert!(
        last.data["movedTo"]
            .as_str()
            .unwrap()
            .contains("quarantine"),
        "{last:?}"
    );
}

struct Panicking;

impl EventSink for Panicking {
    fn emit(&self, _: &Event) {
        panic!("this sink always panics");
    }
}

#[test]
fn a_panicking_sink_never_breaks_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::builder(dir.path())
        .sink(Arc::new(Panicking))
        .open()
        .unwrap();
    let task = store.create(NewTask::new()).unwrap();
    assert!(store.complete(&task.id, json!(1)).unwrap().is_applied());
    assert_eq!(
        store.get(&task.id).unwrap().unwrap().status,
        taskstore::TaskStatus::Completed
    );
    assert_eq!(store.sink_panics(), 2);
    // The lock was released before the sink ran: another handle can write.
    let other = FileStore::open(dir.path()).unwrap();
    other
        .create(NewTask::new().id(task.id.clone()))
        .unwrap_err();
    let t2 = other.create(NewTask::new()).unwrap();
    assert!(store.cancel(&t2.id, None).unwrap().is_applied());

    let memory = MemoryStore::builder()
        .sink(Arc::new(Panicking))
        .build()
        .unwrap();
    memory.create(NewTask::new()).unwrap();
    assert_eq!(memory.sink_panics(), 1);
}

/// A sink that writes to the task it hears about, through its own store
/// handle: if the store called it while holding the task's lock, this would
/// deadlock.
struct WritesBack(std::sync::OnceLock<Arc<dyn TaskStore>>);

impl EventSink for WritesBack {
    fn emit(&self, event: &Event) {
        if event.kind == TaskEventKind::Created {
            let id = taskstore::TaskId::parse(event.data["taskId"].as_str().unwrap()).unwrap();
            let store = self.0.get().unwrap();
            let _ = store
                .update(&id, TaskUpdate::new().metadata("seen", true))
                .unwrap();
        }
    }
}

#[test]
fn sinks_run_outside_the_store_locks() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(WritesBack(std::sync::OnceLock::new()));
    let _ = sink.0.set(Arc::new(FileStore::open(dir.path()).unwrap()));
    let store = FileStore::builder(dir.path())
        .sink(sink.clone())
        .open()
        .unwrap();
    let task = store.create(NewTask::new()).unwrap();
    assert_eq!(store.get(&task.id).unwrap().unwrap().metadata["seen"], true);

    // The memory store's sink may even call back into the same store.
    let sink = Arc::new(WritesBack(std::sync::OnceLock::new()));
    let memory = Arc::new(MemoryStore::builder().sink(sink.clone()).build().unwrap());
    let _ = sink.0.set(memory.clone());
    let task = memory.create(NewTask::new()).unwrap();
    assert_eq!(
        memory.get(&task.id).unwrap().unwrap().metadata["seen"],
        true
    );
}

/// A create under the id of an expired task deletes that task first (it is
/// gone for every reader) and reports it as a sweep does: `task.expired`,
/// "a task was found expired (its TTL from creation passed) and deleted",
/// never `task.deleted`, before `task.created` for the new task.
#[test]
fn a_create_over_an_expired_id_reports_the_old_task_expired() {
    let clock = clock();
    let dir = tempfile::tempdir().unwrap();
    let (memory_log, file_log) = (Arc::new(EventLog::new()), Arc::new(EventLog::new()));
    let memory = MemoryStore::builder()
        .clock(Arc::new(clock.clone()))
        .sink(memory_log.clone())
        .build()
        .unwrap();
    let file = FileStore::builder(dir.path())
        .clock(Arc::new(clock.clone()))
        .sink(file_log.clone())
        .open()
        .unwrap();
    let stores: [(&dyn TaskStore, &EventLog); 2] = [(&memory, &memory_log), (&file, &file_log)];
    for (store, log) in stores {
        let old = store
            .create(NewTask::new().ttl(Duration::from_secs(5)))
            .unwrap();
        clock.advance(Duration::from_secs(5));
        let new = store.create(NewTask::new().id(old.id.clone())).unwrap();
        assert_eq!(new.revision, 1);
        use TaskEventKind::*;
        let want = vec![Created, Expired, Created];
        assert_eq!(kinds(log), want);
    }
}

/// A sink that holds the first `task.updated` it is told until the test
/// lets it go (a sink slow once: a log shipper, a lock), recording every
/// event in a log.
struct SlowOnce {
    log: EventLog,
    held: std::sync::Mutex<bool>,
    reached: std::sync::mpsc::SyncSender<()>,
    release: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl EventSink for SlowOnce {
    fn emit(&self, event: &Event) {
        let first_update = event.kind == TaskEventKind::Updated
            && !std::mem::replace(&mut *self.held.lock().unwrap(), true);
        if first_update {
            self.reached.send(()).unwrap();
            self.release.lock().unwrap().recv().unwrap();
        }
        self.log.push(event.clone());
    }
}

/// Sinks are told outside the task's lock, so an update's event held up in
/// a slow sink reaches it after the completion another thread made next:
/// the revisions the events carry (`Event::task_revision`) put them back
/// in the task's order, and the highest is the completion. (Nothing said
/// so: a sink keeping each task's latest event kept it `working`.)
#[test]
fn a_tasks_events_told_out_of_order_are_ordered_by_their_revisions() {
    let (reached, on_its_way) = std::sync::mpsc::sync_channel(1);
    let (release, released) = std::sync::mpsc::sync_channel(1);
    let sink = Arc::new(SlowOnce {
        log: EventLog::new(),
        held: std::sync::Mutex::new(false),
        reached,
        release: std::sync::Mutex::new(released),
    });
    let store = Arc::new(MemoryStore::builder().sink(sink.clone()).build().unwrap());
    let task = store.create(NewTask::new()).unwrap();
    let updater = {
        let (store, id) = (Arc::clone(&store), task.id.clone());
        std::thread::spawn(move || {
            store
                .update(&id, TaskUpdate::new().metadata("k", 1))
                .unwrap()
        })
    };
    // The update is applied (revision 2); its event is on its way.
    on_its_way.recv().unwrap();
    assert!(
        store
            .complete(&task.id, json!("done"))
            .unwrap()
            .is_applied()
    );
    release.send(()).unwrap();
    assert!(updater.join().unwrap().is_applied());
    let told: Vec<(TaskEventKind, Option<u64>)> = sink
        .log
        .snapshot()
        .into_iter()
        .map(|record| match record.event.kind {
            EventKind::Task(kind) => (kind, record.event.task_revision()),
            other => panic!("not a task event: {other:?}"),
        })
        .collect();
    assert_eq!(
        told,
        [
            (TaskEventKind::Created, Some(1)),
            (TaskEventKind::Completed, Some(3)),
            (TaskEventKind::Updated, Some(2)),
        ],
        "told in the order the sink was reached"
    );
    let latest = told.iter().max_by_key(|(_, revision)| *revision).unwrap();
    assert_eq!(latest.0, TaskEventKind::Completed);
}

/// A sink that, at every event, tries each lock file of a store exclusive
/// through a descriptor of its own, as a check or a write of another
/// process would (`flock` excludes another descriptor of this very process
/// too): a lock it cannot take is one the store held while it told the
/// sink. (`handles.lock` is held shared by every open handle for its life,
/// and taken by no operation: it is not tried.)
struct TriesTheLocks {
    locks: std::path::PathBuf,
    /// Every event's kind, and the lock files held while it was told.
    told: std::sync::Mutex<Vec<(EventKind, Vec<String>)>>,
}

impl EventSink for TriesTheLocks {
    fn emit(&self, event: &Event) {
        let mut held = Vec::new();
        for entry in std::fs::read_dir(&self.locks).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().unwrap() == "handles.lock" {
                continue;
            }
            let file = std::fs::File::open(&path).unwrap();
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    held.push(path.file_name().unwrap().to_string_lossy().into_owned());
                }
                Err(e) => panic!("cannot try {}: {e:?}", path.display()),
            }
        }
        self.told.lock().unwrap().push((event.kind.clone(), held));
    }
}

/// A file store tells its sink of every change with none of its locks
/// held, a sweep's deletions of finished tasks too: a sink that waits (a
/// log shipper, a sink that runs a check) holds up no other writer and no
/// check of the store. (A sweep told the sink of each finished task it
/// deleted while it held the batches lock, shared, until its removals were
/// made durable at its end, so a check (`verify`) of another process,
/// which takes that lock exclusive, waited on the sink; the other changes
/// were told with no lock held.)
#[test]
fn a_file_store_tells_its_sink_with_no_lock_held() {
    let clock = clock();
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(TriesTheLocks {
        locks: dir.path().join("locks"),
        told: std::sync::Mutex::new(Vec::new()),
    });
    let store = FileStore::builder(dir.path())
        .clock(Arc::new(clock.clone()))
        .durability(taskstore::Durability::Eventual)
        .sink(sink.clone())
        .open()
        .unwrap();
    let ttl = Duration::from_secs(5);
    let a = store.create(NewTask::new().ttl(ttl)).unwrap();
    assert!(store.complete(&a.id, json!(1)).unwrap().is_applied());
    let b = store.create(NewTask::new().ttl(ttl)).unwrap();
    assert!(store.cancel(&b.id, None).unwrap().is_applied());
    clock.advance(ttl);
    assert_eq!(store.sweep_expired().unwrap(), 2);
    // Found expired by a read, and deleted then.
    let d = store.create(NewTask::new().ttl(ttl)).unwrap();
    assert!(store.complete(&d.id, json!(1)).unwrap().is_applied());
    clock.advance(ttl);
    assert_eq!(store.get(&d.id).unwrap(), None);
    let c = store.create(NewTask::new()).unwrap();
    clock.advance(Duration::from_secs(31));
    assert_eq!(store.reap_orphans().unwrap().len(), 1);
    assert!(store.delete(&c.id).unwrap());
    let told = sink.told.lock().unwrap().clone();
    use TaskEventKind::*;
    let kinds: Vec<EventKind> = told.iter().map(|(kind, _)| kind.clone()).collect();
    let want: Vec<EventKind> = [
        Created, Completed, Created, Cancelled, Expired, Expired, Created, Completed, Expired,
        Created, Reaped, Deleted,
    ]
    .into_iter()
    .map(EventKind::from)
    .collect();
    assert_eq!(kinds, want);
    // A sweep of finished tasks the size of a large pass (256 or more):
    // the backend reads and removes those its index says are due, chunk by
    // chunk under every stripe, before its batches.
    sink.told.lock().unwrap().clear();
    for _ in 0..300 {
        let task = store.create(NewTask::new().ttl(ttl)).unwrap();
        assert!(store.complete(&task.id, json!(1)).unwrap().is_applied());
    }
    clock.advance(ttl);
    assert_eq!(store.sweep_expired().unwrap(), 300);
    let told: Vec<_> = told
        .into_iter()
        .chain(sink.told.lock().unwrap().drain(..))
        .collect();
    assert_eq!(told.len(), want.len() + 900);
    let under_a_lock: Vec<_> = told.iter().filter(|(_, held)| !held.is_empty()).collect();
    assert!(
        under_a_lock.is_empty(),
        "{} of {} events told while the store held a lock, the first: {:?}",
        under_a_lock.len(),
        told.len(),
        under_a_lock.first()
    );
}

/// A sweep of more tasks than it keeps to tell its sink once its pass is
/// through (10,000, without payloads; past them it tells the rest as it
/// goes, so that a sweep of any backlog keeps bounded memory) tells the
/// sink of every task it deleted, once each.
#[test]
fn a_sweep_past_the_tasks_it_keeps_to_tell_tells_of_each_once() {
    const TASKS: usize = 10_024;
    let (clock, log) = (clock(), Arc::new(EventLog::with_capacity(2 * TASKS)));
    let store = MemoryStore::builder()
        .clock(Arc::new(clock.clone()))
        .sink(log.clone())
        .max_active(2 * TASKS)
        .build()
        .unwrap();
    for _ in 0..TASKS {
        store
            .create(NewTask::new().ttl(Duration::from_secs(1)))
            .unwrap();
    }
    clock.advance(Duration::from_secs(1));
    assert_eq!(store.sweep_expired().unwrap(), TASKS);
    let mut told: Vec<String> = log
        .snapshot()
        .into_iter()
        .filter(|r| r.event.kind == EventKind::Task(TaskEventKind::Expired))
        .map(|r| r.event.data["taskId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(told.len(), TASKS);
    told.sort();
    told.dedup();
    assert_eq!(told.len(), TASKS, "each told once");
}
