//! Random operation sequences against a plain in-memory model, on a
//! `FileStore` (tmpfs, `Durability::Eventual`) and on a `MemoryStore`.
//!
//! The input decodes (with `arbitrary`) into a clock start and a list of
//! operations: create (host-chosen or random id, TTL, poll interval,
//! message, metadata), update (status, message, input requests, poll
//! interval, metadata), complete/fail/cancel with JSON payloads (nested
//! arrays and objects, odd strings and numbers, long strings), delete, get,
//! list (status filter, page size, following cursors, or a made-up cursor),
//! sweep, advance the `ManualClock`, renew a lease, reap orphans, and drop
//! and reopen the file store (as the same instance or a new one).
//!
//! Properties, for both stores:
//! - every `Ok` result is exactly the model's task (all fields, payloads
//!   included); the revision rises by exactly one per applied write; a
//!   terminal task never changes (`AlreadyTerminal` returns it untouched);
//! - every `Err` is the documented typed error the model predicts for that
//!   call (`NotFound`, `AlreadyExists`, `TooManyActive`, `PayloadTooLarge`
//!   with the exact size, `TerminalStatusInUpdate`, `NotOwner`,
//!   `InvalidCursor`), naming the task;
//! - listings page through exactly the model's live tasks in
//!   (`createdAt`, id) order;
//! - file store: every write it acknowledged reads back equal from another
//!   handle at once and from a reopened one; nothing is ever set aside as
//!   corrupt and no temp file is left behind.

#![no_main]

mod common;
mod ops_input;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};
use taskstore::{
    Clock, Error, FileStore, ListQuery, ManualClock, NewTask, Outcome, Task, TaskId, TaskStatus,
    TaskStore, TaskUpdate, Transition,
};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use common::known::{self, Bug};
use common::{StoreConfig, count_entries, empty_dir, file_store, memory_store};
use ops_input::{
    Create, Input, ListWithCursor, MAX_PAYLOAD_BYTES, Op, Status, Text, Update, metadata, payload,
    whole_millis,
};

/// The active-task cap of the stores under test: small, so that the
/// fuzzer reaches it.
const MAX_ACTIVE: usize = 6;
const LEASE: Duration = Duration::from_secs(20);
/// Host-chosen ids come from a few slots, so operations meet.
const SLOTS: u8 = 8;

// Typed input: `cargo fuzz fmt ops <file>` prints the operations.
fuzz_target!(|input: Input| {
    let start = OffsetDateTime::from_unix_timestamp(1_780_000_000).expect("a valid time")
        + Duration::from_millis(input.start_ms.into());
    run(Backend::Memory, start, &input.ops);
    run(Backend::File, start, &input.ops);
});

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    File,
    Memory,
}

/// The file store's directory: one per process, emptied for every input.
fn store_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| common::scratch_dir("ops").join("store"))
}

/// Whose content a write adds (see `Run::written`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cap {
    Host,
    Store,
}

/// The stores under test.
#[allow(clippy::large_enum_variant)] // one per run
enum Stores {
    File {
        store: FileStore,
        /// Another handle on the same directory: reads back every write.
        reader: FileStore,
    },
    Memory(taskstore::MemoryStore),
}

struct Run {
    backend: Backend,
    clock: ManualClock,
    config: StoreConfig,
    stores: Stores,
    instances: u32,
    /// Every task the store holds, expired ones included (until swept).
    tasks: BTreeMap<TaskId, Task>,
    /// Expired tasks that a create at the active cap may have swept.
    maybe_swept: BTreeSet<TaskId>,
}

fn run(backend: Backend, start: OffsetDateTime, ops: &[Op]) {
    let clock = ManualClock::new(start);
    let mut config = StoreConfig::new(&clock, "instance-0");
    config.lease = LEASE;
    config.max_active = MAX_ACTIVE;
    config.max_payload_bytes = MAX_PAYLOAD_BYTES;
    let stores = match backend {
        Backend::File => {
            let dir = store_dir();
            for area in ["active", "done", "tmp", "quarantine"] {
                empty_dir(&dir.join(area));
            }
            Stores::File {
                store: file_store(dir, &config).expect("open the store"),
                reader: open_reader(&config),
            }
        }
        Backend::Memory => Stores::Memory(memory_store(&config)),
    };
    let mut run = Run {
        backend,
        clock,
        config,
        stores,
        instances: 0,
        tasks: BTreeMap::new(),
        maybe_swept: BTreeSet::new(),
    };
    for op in ops {
        run.apply(op);
    }
    if backend == Backend::File {
        run.reopen(false);
        let dir = store_dir();
        assert_eq!(count_entries(&dir.join("tmp")), 0, "temp files left behind");
    }
}

fn open_reader(config: &StoreConfig) -> FileStore {
    let mut reader = config.clone();
    reader.instance_id = "reader".into();
    file_store(store_dir(), &reader).expect("open the reader")
}

/// `createdAt + ttl <= now`, in plain nanoseconds (expiry is inclusive).
fn expired(task: &Task, now: OffsetDateTime) -> bool {
    task.ttl.is_some_and(|ttl| {
        task.created_at.unix_timestamp_nanos() + ttl.as_nanos() as i128
            <= now.unix_timestamp_nanos()
    })
}

fn encoded_size(task: &Task) -> usize {
    serde_json::to_vec(task).expect("a task encodes").len()
}

fn slot_id(slot: u8) -> TaskId {
    TaskId::parse(&format!("slot-{}", slot % SLOTS)).expect("a valid id")
}

/// A store-generated id: a lowercase hyphenated UUID v4.
fn is_generated_id(id: &TaskId) -> bool {
    let s = id.as_str().as_bytes();
    s.len() == 36
        && s.iter().enumerate().all(|(i, &b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            14 => b == b'4',
            19 => matches!(b, b'8' | b'9' | b'a' | b'b'),
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        })
}

impl Run {
    fn store(&self) -> &dyn TaskStore {
        match &self.stores {
            Stores::File { store, .. } => store,
            Stores::Memory(store) => store,
        }
    }

    fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// The task a slot names: one of the fixed slots, or (for high slot
    /// numbers) one of the tasks the model knows, random ids included.
    fn target(&self, slot: u8) -> TaskId {
        if slot >= 128 && !self.tasks.is_empty() {
            let i = usize::from(slot - 128) % self.tasks.len();
            return self.tasks.keys().nth(i).expect("in range").clone();
        }
        slot_id(slot)
    }

    fn live(&self, id: &TaskId) -> Option<&Task> {
        let now = self.now();
        self.tasks.get(id).filter(|t| !expired(t, now))
    }

    fn live_active(&self) -> usize {
        let now = self.now();
        self.tasks
            .values()
            .filter(|t| !expired(t, now) && !t.is_terminal())
            .count()
    }

    fn lease_until(&self, now: OffsetDateTime) -> OffsetDateTime {
        now + LEASE
    }

    /// Another handle reads `id` back as the model has it.
    fn reads_back(&self, id: &TaskId) {
        if let Stores::File { reader, .. } = &self.stores {
            let got = reader
                .get(id)
                .unwrap_or_else(|e| panic!("read back {id}: {e}"));
            assert_eq!(
                got.as_ref(),
                self.live(id),
                "another handle reads {id} back"
            );
        }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Create(op) => self.create(op),
            Op::Update(op) => self.update(op),
            Op::Complete { slot, result } => {
                let id = self.target(*slot);
                let result = payload(result);
                let got = self.store().complete(&id, result.clone());
                self.mutation(&id, got, |task, now| {
                    finish(task, now, Outcome::Completed(result));
                });
            }
            Op::Fail { slot, error } => {
                let id = self.target(*slot);
                let error = payload(error);
                let got = self.store().fail(&id, error.clone());
                self.mutation(&id, got, |task, now| {
                    finish(task, now, Outcome::Failed(error));
                });
            }
            Op::Cancel { slot, message } => {
                let id = self.target(*slot);
                let message = message.as_ref().map(Text::string);
                let got = self.store().cancel(&id, message.clone());
                self.mutation(&id, got, |task, now| {
                    finish(task, now, Outcome::Cancelled(message));
                });
            }
            Op::Delete { slot } => {
                let id = self.target(*slot);
                let live = self.live(&id).is_some();
                let got = self.store().delete(&id);
                assert_eq!(got.expect("delete"), live, "delete {id}");
                self.tasks.remove(&id);
                self.maybe_swept.remove(&id);
                self.reads_back(&id);
            }
            Op::Get { slot } => {
                let id = self.target(*slot);
                let got = self.store().get(&id).expect("get");
                assert_eq!(got.as_ref(), self.live(&id), "get {id}");
            }
            Op::List {
                active,
                status,
                limit,
            } => {
                let mut query = if *active {
                    ListQuery::active()
                } else {
                    ListQuery::all()
                };
                if let Some(status) = status {
                    query = query.status(status.to_status());
                }
                let limit = (*limit != 0).then_some(usize::from(*limit % 8) + 1);
                let got = self.list_all(&query, limit);
                let want = self.listing(*active, status.map(Status::to_status));
                assert_eq!(got, want, "list {query:?} by {limit:?}");
                self.nothing_set_aside();
            }
            Op::ListWithCursor(op) => self.list_with_cursor(op),
            Op::Sweep => self.sweep(),
            Op::Advance { ms } => self.clock.advance(Duration::from_millis((*ms).into())),
            Op::AdvanceLong { s } => self.clock.advance(Duration::from_secs((*s).into())),
            Op::RenewLease { slot } => self.renew(*slot),
            Op::ReapOrphans => self.reap(),
            Op::Reopen { new_instance } => {
                if self.backend == Backend::File {
                    self.reopen(*new_instance);
                }
            }
        }
    }

    fn create(&mut self, op: &Create) {
        let Create {
            random_id,
            slot,
            ttl,
            poll,
            message,
            metadata: entries,
            below_cap,
        } = op;
        let host_id = (!random_id).then(|| slot_id(*slot));
        let now = self.now();
        let placeholder = TaskId::parse("00000000-0000-4000-8000-000000000000").unwrap();
        let mut want = new_task(
            host_id.clone().unwrap_or(placeholder),
            now,
            ttl.map(|t| whole_millis(t.duration())),
            poll.map(|p| whole_millis(p.duration())),
            message.as_ref().map(Text::string),
            metadata(entries),
            &self.config.instance_id,
            self.lease_until(now),
        );
        if let Some(below) = below_cap {
            want.metadata.insert("~pad".into(), Value::from(""));
            let room = MAX_PAYLOAD_BYTES.saturating_sub(usize::from(*below));
            let pad = room.saturating_sub(encoded_size(&want));
            want.metadata
                .insert("~pad".into(), Value::from("x".repeat(pad)));
        }
        let mut new = NewTask::new();
        if let Some(id) = &host_id {
            new = new.id(id.clone());
        }
        if let Some(ttl) = ttl {
            new = new.ttl(ttl.duration());
        }
        if let Some(poll) = poll {
            new = new.poll_interval(poll.duration());
        }
        if let Some(message) = message {
            new = new.status_message(message.string());
        }
        for (k, v) in &want.metadata {
            new = new.metadata(k.clone(), v.clone());
        }
        let size = encoded_size(&want);
        let too_large = size > MAX_PAYLOAD_BYTES;
        let taken = host_id.as_ref().is_some_and(|id| self.live(id).is_some());
        let full = self.live_active() >= MAX_ACTIVE;
        if !too_large && self.backend == Backend::File {
            // A create at the cap sweeps expired active files first.
            let files = self.tasks.values().filter(|t| !t.is_terminal()).count();
            if files >= MAX_ACTIVE {
                let expired_active: Vec<TaskId> = self
                    .tasks
                    .values()
                    .filter(|t| !t.is_terminal() && expired(t, now))
                    .map(|t| t.id.clone())
                    .collect();
                self.maybe_swept.extend(expired_active);
            }
        }
        let got = self.store().create(new);
        match got {
            Ok(task) => {
                assert!(!too_large && !taken && !full, "create: {task:?}");
                match &host_id {
                    Some(id) => assert_eq!(&task.id, id),
                    None => {
                        assert!(is_generated_id(&task.id), "generated id {}", task.id);
                        assert!(!self.tasks.contains_key(&task.id), "id reused");
                        want.id = task.id.clone();
                    }
                }
                assert_eq!(task, want, "create");
                self.maybe_swept.remove(&task.id);
                self.tasks.insert(task.id.clone(), task.clone());
                self.reads_back(&task.id);
            }
            Err(Error::PayloadTooLarge {
                id,
                size: got_size,
                limit,
            }) => {
                assert!(too_large, "create refused as too large at {got_size}");
                assert_eq!((got_size, limit), (size, MAX_PAYLOAD_BYTES));
                if let Some(host) = &host_id {
                    assert_eq!(&id, host);
                }
            }
            Err(Error::AlreadyExists { id }) => {
                assert!(!too_large && taken, "create: AlreadyExists {id}");
                assert_eq!(Some(id), host_id);
            }
            Err(Error::TooManyActive { id, limit }) => {
                assert!(!too_large && full, "create: TooManyActive");
                assert_eq!(limit, MAX_ACTIVE);
                if let Some(host) = &host_id {
                    assert_eq!(&id, host);
                }
            }
            Err(other) => panic!("create: unexpected {other:?}"),
        }
    }

    fn update(&mut self, op: &Update) {
        let Update {
            slot,
            status,
            message,
            input,
            poll,
            metadata: entries,
        } = op;
        let id = self.target(*slot);
        let mut update = TaskUpdate::new();
        let status = status.map(Status::to_status);
        if let Some(status) = status {
            update = update.status(status);
        }
        let message = message.as_ref().map(Text::string);
        if let Some(message) = &message {
            update = update.status_message(message.clone());
        }
        let input = input.as_ref().map(payload);
        if let Some(input) = &input {
            update = update.input_requests(input.clone());
        }
        let poll = poll.map(|p| p.duration());
        if let Some(poll) = poll {
            update = update.poll_interval(poll);
        }
        let metadata = metadata(entries);
        for (k, v) in &metadata {
            update = update.metadata(k.clone(), v.clone());
        }
        let got = self.store().update(&id, update);
        if let Some(terminal) = status.filter(|s| s.is_terminal()) {
            match got {
                Err(Error::TerminalStatusInUpdate { id: got_id, status }) => {
                    assert_eq!((got_id, status), (id, terminal));
                }
                other => panic!("update to {terminal}: {other:?}"),
            }
            return;
        }
        self.mutation(&id, got, |task, now| {
            if let Some(status) = status {
                if status == TaskStatus::Working && input.is_none() {
                    task.input_requests = None;
                }
                task.status = status;
            }
            if let Some(message) = message {
                task.status_message = Some(message);
            }
            if let Some(input) = input {
                task.input_requests = Some(input);
            }
            if let Some(poll) = poll {
                task.poll_interval = Some(whole_millis(poll));
            }
            task.metadata.extend(metadata);
            task.last_updated_at = now;
        });
    }

    fn list_with_cursor(&mut self, op: &ListWithCursor) {
        let ListWithCursor {
            active,
            cursor,
            limit,
        } = op;
        let cursor = cursor.string();
        let mut query = if *active {
            ListQuery::active()
        } else {
            ListQuery::all()
        };
        query = query.after(&cursor);
        let query_limit = (*limit != 0).then_some(usize::from(*limit));
        if let Some(limit) = query_limit {
            query = query.limit(limit);
        }
        match self.store().list(&query) {
            Err(Error::InvalidCursor { cursor: shown }) => {
                let kept: String = cursor.chars().take(200).collect();
                assert_eq!(shown, kept, "InvalidCursor shows the cursor");
            }
            Ok(page) => {
                // Only a cursor of the store's own shape is taken;
                // the page is then a run of the listing.
                assert!(cursor.starts_with("c1."), "cursor {cursor:?} taken");
                let all = self.listing(*active, None);
                let run = match page.tasks.first() {
                    None => 0..0,
                    Some(first) => {
                        let at = all.iter().position(|t| t == first).expect("listed");
                        at..at + page.tasks.len()
                    }
                };
                assert_eq!(page.tasks, all[run.clone()], "a run of the listing");
                match &page.next_cursor {
                    None if !page.tasks.is_empty() => {
                        assert_eq!(run.end, all.len(), "a last page reaches the end");
                    }
                    None => {}
                    Some(_) => {
                        assert_eq!(Some(page.tasks.len()), query_limit, "a full page");
                        assert!(run.end < all.len(), "a cursor with nothing after it");
                    }
                }
            }
            Err(other) => panic!("list after {cursor:?}: {other:?}"),
        }
    }

    fn sweep(&mut self) {
        let now = self.now();
        let expired_ids: Vec<TaskId> = self
            .tasks
            .values()
            .filter(|t| expired(t, now))
            .map(|t| t.id.clone())
            .collect();
        let maybe = expired_ids
            .iter()
            .filter(|id| self.maybe_swept.contains(id))
            .count();
        let certain = expired_ids.len() - maybe;
        let got = self.store().sweep_expired().expect("sweep");
        assert!(
            (certain..=certain + maybe).contains(&got),
            "sweep deleted {got}, expected {certain} (+{maybe} maybe)"
        );
        for id in expired_ids {
            self.tasks.remove(&id);
        }
        self.maybe_swept.clear();
        self.nothing_set_aside();
    }

    fn renew(&mut self, slot: u8) {
        let id = self.target(slot);
        let got = self.store().renew_lease(&id);
        let now = self.now();
        let Some(task) = self.live(&id).cloned() else {
            match got {
                Err(Error::NotFound { id: got_id }) => assert_eq!(got_id, id),
                other => panic!("renew {id}, not live: {other:?}"),
            }
            return;
        };
        if task.is_terminal() {
            assert_eq!(got.expect("renew"), Transition::AlreadyTerminal(task));
            return;
        }
        if task.owner.as_deref() != Some(&self.config.instance_id) {
            match got {
                Err(Error::NotOwner { id: got_id, owner }) => {
                    assert_eq!((got_id, owner), (id, task.owner));
                }
                other => panic!("renew {id} by a non-owner: {other:?}"),
            }
            return;
        }
        let mut want = task;
        want.lease_expires_at = Some(self.lease_until(now));
        want.revision += 1;
        self.written(&id, got, want, Cap::Store);
    }

    /// Checks a non-terminal write of `id` (update, complete, fail, cancel)
    /// against the model, which `change` brings along.
    fn mutation(
        &mut self,
        id: &TaskId,
        got: taskstore::Result<Transition>,
        change: impl FnOnce(&mut Task, OffsetDateTime),
    ) {
        let now = self.now();
        let Some(task) = self.live(id).cloned() else {
            match got {
                Err(Error::NotFound { id: got_id }) => assert_eq!(&got_id, id),
                other => panic!("write of {id}, not live: {other:?}"),
            }
            return;
        };
        if task.is_terminal() {
            match got {
                Ok(Transition::AlreadyTerminal(t)) => assert_eq!(t, task, "terminal {id}"),
                other => panic!("write of terminal {id}: {other:?}"),
            }
            self.reads_back(id);
            return;
        }
        let mut want = task;
        change(&mut want, now);
        want.revision += 1;
        if want.is_terminal() {
            want.lease_expires_at = None;
        } else if want.owner.as_deref() == Some(&self.config.instance_id) {
            want.lease_expires_at = Some(self.lease_until(now));
        }
        self.written(id, got, want, Cap::Host);
    }

    /// Checks an applied write (or its refusal as too large). `Cap::Host`:
    /// the write adds the host's content, which the payload cap bounds;
    /// `Cap::Store`: only the store's own (a lease renewal), which may not
    /// fail for it (`renew_lease` documents no `PayloadTooLarge`).
    fn written(&mut self, id: &TaskId, got: taskstore::Result<Transition>, want: Task, cap: Cap) {
        let size = encoded_size(&want);
        let refusable = match cap {
            Cap::Host => size > MAX_PAYLOAD_BYTES,
            Cap::Store => known::avoid(Bug::CapOnStoreWrites) && size > MAX_PAYLOAD_BYTES,
        };
        match got {
            Ok(Transition::Applied(t)) => {
                assert!(
                    cap == Cap::Store || size <= MAX_PAYLOAD_BYTES,
                    "{size} bytes accepted: {t:?}"
                );
                assert_eq!(t, want, "write of {id}");
                self.tasks.insert(id.clone(), t);
            }
            Err(Error::PayloadTooLarge {
                id: got_id,
                size: got_size,
                limit,
            }) => {
                assert!(refusable, "refused as too large: {got_size}");
                assert_eq!((&got_id, got_size, limit), (id, size, MAX_PAYLOAD_BYTES));
            }
            other => panic!("write of {id}: {other:?}, expected {want:?}"),
        }
        self.reads_back(id);
    }

    fn reap(&mut self) {
        let now = self.now();
        let candidates: Vec<Task> = self
            .tasks
            .values()
            .filter(|t| {
                !expired(t, now)
                    && !t.is_terminal()
                    && t.lease_expires_at.is_some_and(|at| at <= now)
            })
            .cloned()
            .collect();
        let got = self.store().reap_orphans();
        let reaped = match got {
            Ok(reaped) => reaped,
            Err(Error::PayloadTooLarge { id, size, limit })
                if known::avoid(Bug::CapOnStoreWrites) =>
            {
                // A task near the cap, with the orphan error added. Some
                // candidates may have been reaped before: read them back.
                assert_eq!(limit, MAX_PAYLOAD_BYTES);
                assert!(size > limit);
                assert!(candidates.iter().any(|t| t.id == id), "{id} was no orphan");
                let mut reaped = Vec::new();
                for candidate in &candidates {
                    let now_task = self
                        .store()
                        .get(&candidate.id)
                        .expect("get")
                        .expect("a candidate is live");
                    if &now_task != candidate {
                        reaped.push(now_task);
                    }
                }
                reaped.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
                assert!(reaped.iter().all(|t| t.id != id));
                self.check_reaped(&candidates, &reaped, now, true);
                return;
            }
            Err(other) => panic!("reap: {other:?}"),
        };
        self.check_reaped(&candidates, &reaped, now, false);
    }

    fn check_reaped(
        &mut self,
        candidates: &[Task],
        reaped: &[Task],
        now: OffsetDateTime,
        some: bool,
    ) {
        let mut order: Vec<&Task> = candidates.iter().collect();
        order.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        let ids: Vec<&TaskId> = reaped.iter().map(|t| &t.id).collect();
        let want_ids: Vec<&TaskId> = order.iter().map(|t| &t.id).collect();
        if some {
            assert!(ids.iter().all(|id| want_ids.contains(id)), "reaped {ids:?}");
        } else {
            assert_eq!(
                ids, want_ids,
                "reaped exactly the orphans, in listing order"
            );
        }
        for t in reaped {
            let before = &self.tasks[&t.id];
            let error = t.error.clone().expect("a reaped task has an error");
            assert_eq!(error["code"], "orphaned");
            assert_eq!(error["owner"], json!(before.owner));
            assert_eq!(error["reapedBy"], json!(self.config.instance_id));
            let lapsed = before
                .lease_expires_at
                .expect("an orphan had a lease")
                .format(&Rfc3339)
                .expect("formats");
            assert_eq!(error["leaseExpiredAt"], json!(lapsed));
            let mut want = before.clone();
            finish(&mut want, now, Outcome::Failed(error));
            want.revision += 1;
            want.lease_expires_at = None;
            assert_eq!(t, &want, "reaped {}", t.id);
            self.tasks.insert(t.id.clone(), t.clone());
            self.reads_back(&t.id);
        }
    }

    /// Every page of `query`, `limit` tasks at a time, following cursors.
    fn list_all(&self, query: &ListQuery, limit: Option<usize>) -> Vec<Task> {
        let mut tasks = Vec::new();
        let mut q = query.clone();
        if let Some(limit) = limit {
            q = q.limit(limit);
        }
        for _ in 0..=self.tasks.len() + 1 {
            let page = self.store().list(&q).expect("list");
            if let Some(limit) = limit {
                assert!(page.tasks.len() <= limit);
            }
            let last = page.tasks.is_empty();
            tasks.extend(page.tasks);
            match page.next_cursor {
                Some(cursor) => {
                    assert!(!last, "an empty page with a cursor");
                    q = query.clone().after(&cursor);
                    if let Some(limit) = limit {
                        q = q.limit(limit);
                    }
                }
                None => return tasks,
            }
        }
        panic!("the listing never ended");
    }

    /// The model's live tasks a listing shows, in listing order.
    fn listing(&self, active: bool, status: Option<TaskStatus>) -> Vec<Task> {
        let now = self.now();
        let mut want: Vec<Task> = self
            .tasks
            .values()
            .filter(|t| !expired(t, now))
            .filter(|t| !active || !t.is_terminal())
            .filter(|t| status.is_none_or(|s| s == t.status))
            .cloned()
            .collect();
        want.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        want
    }

    /// The file store never sets aside a file it wrote itself.
    fn nothing_set_aside(&self) {
        if self.backend == Backend::File {
            let quarantine = store_dir().join("quarantine");
            assert_eq!(
                count_entries(&quarantine),
                0,
                "the store set aside its own file"
            );
        }
    }

    /// Drops the file store and opens it again; it holds exactly the
    /// model's live tasks.
    fn reopen(&mut self, new_instance: bool) {
        if new_instance {
            self.instances += 1;
            self.config.instance_id = format!("instance-{}", self.instances);
        }
        let Stores::File { store, .. } = &mut self.stores else {
            return;
        };
        let reopened = file_store(store_dir(), &self.config).expect("reopen the store");
        drop(std::mem::replace(store, reopened));
        let all = self.list_all(&ListQuery::all(), None);
        assert_eq!(all, self.listing(false, None), "the reopened store");
        for id in self.tasks.keys() {
            let got = self.store().get(id).expect("get after reopen");
            assert_eq!(got.as_ref(), self.live(id), "{id} after reopen");
        }
        self.nothing_set_aside();
    }
}

/// What `complete`, `fail` and `cancel` make of a running task (the
/// revision and lease are the caller's).
fn finish(task: &mut Task, now: OffsetDateTime, outcome: Outcome) {
    task.status = outcome.status();
    task.input_requests = None;
    match outcome {
        Outcome::Completed(result) => task.result = Some(result),
        Outcome::Failed(error) => task.error = Some(error),
        Outcome::Cancelled(message) => {
            if message.is_some() {
                task.status_message = message;
            }
        }
        _ => unreachable!("no other outcome"),
    }
    task.last_updated_at = now;
}

/// The task a create should make, built from its documented JSON form.
#[allow(clippy::too_many_arguments)]
fn new_task(
    id: TaskId,
    now: OffsetDateTime,
    ttl: Option<Duration>,
    poll: Option<Duration>,
    message: Option<String>,
    metadata: Map<String, Value>,
    owner: &str,
    lease_until: OffsetDateTime,
) -> Task {
    let at = |t: OffsetDateTime| t.format(&Rfc3339).expect("formats");
    let mut task = json!({
        "taskId": id,
        "status": "working",
        "createdAt": at(now),
        "lastUpdatedAt": at(now),
        "ttlMs": ttl.map(|d| d.as_millis() as u64),
        "metadata": {},
        "revision": 1,
        "owner": owner,
        "leaseExpiresAt": at(lease_until),
    });
    if let Some(poll) = poll {
        task["pollIntervalMs"] = json!(poll.as_millis() as u64);
    }
    if let Some(message) = message {
        task["statusMessage"] = json!(message);
    }
    let mut task: Task = serde_json::from_value(task).expect("a task from its JSON form");
    // Set directly: values are kept exactly, without a text round trip.
    task.metadata = metadata;
    task
}
