//! Random operation sequences against a plain in-memory model, on a
//! `FileStore` (tmpfs, `Durability::Eventual`) and on a `MemoryStore`.
//!
//! The input decodes (with `arbitrary`) into a clock start and a list of
//! operations, each made by one of three handles on the same store: the
//! main one, a second instance (`claimer`) and a third with a larger
//! payload cap (`big`, whose tasks may be over the others' cap, which
//! read, renew, claim and reap them all the same). Operations:
//! create (host-chosen or random id, TTL, poll interval, message, metadata,
//! resumable with a kind, input and attempts), update (status, message,
//! input requests, poll interval, metadata, checkpoint, fence),
//! complete/fail/cancel with JSON payloads (nested arrays and objects, odd
//! strings and numbers, long strings), `finish_fenced` and fenced
//! checkpoints at the current, an older or a later epoch (by the owner's
//! instance, or another, which is refused as `Fenced`), delete, get (and
//! `get_all` of the id twice and of one never made), list (status filter,
//! page size, `limit(0)`, following cursors, or a made-up cursor), sweep,
//! advance the `ManualClock` or set it back, renew one lease (every other
//! time through `renew_leases_of`) or all, reap orphans, claim resumable orphans (also after moving
//! the clock past a lease, by the second instance), and drop and reopen
//! the main handle (as the same instance id or a new one).
//!
//! Properties, for both stores:
//! - every result is exactly the model's: every task returned (all fields,
//!   payloads, owner, token, epoch and resume state included), every
//!   transition (`Applied`, `AlreadyTerminal`, `Fenced`), every count of a
//!   sweep or of renewals, every page and whether it has a next one, every
//!   task a reap or a claim returns and every one it missed;
//! - every `Err` is the documented typed error the model predicts for that
//!   call (`NotFound`, `AlreadyExists`, `TooManyActive`, `PayloadTooLarge`
//!   with the exact size, `TooDeep` with the depth, `TerminalStatusInUpdate`,
//!   `NotOwner`, `InvalidQuery`, `InvalidCursor`, `InvalidTask`,
//!   `ReservedMetadata` with the operation and the key), naming the task;
//! - a handle's identity is its instance id and its open: a reopened handle
//!   owns none of the tasks the earlier one created, and its writes fenced
//!   to their epoch are refused;
//! - the time a handle goes by never goes back, even when the clock does,
//!   and a handle that meets an expired task deletes it (a `get`, a write,
//!   a lease renewal, a listing, a reap, a claim, `renew_leases`); a reap
//!   or a claim judges other owners' leases by what the clock reads;
//! - every write reads back equal from another handle at once, and from a
//!   reopened one;
//! - nothing is ever reported unreadable or set aside; file store: the
//!   files in `active/`, `done/` and `expiring/` are exactly the model's
//!   running tasks, finished tasks and finished tasks with a TTL, and no
//!   temp file is left behind.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Map, Value, json};
use taskstore::{
    Clock, DEFAULT_MAX_ATTEMPTS, Error, LARGEST_TASK, ListQuery, MAX_DEPTH, MIN_MAX_PAYLOAD_BYTES,
    ManualClock, MemoryBackend, Missed, NewTask, OWN_HEADROOM, Outcome, Resume, SMALL_ERROR_BYTES,
    Task, TaskId, TaskStatus, TaskStore, TaskUpdate, Transition,
};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::common::{StoreConfig, count_entries, depth, empty_dir, file_store, memory_store_on};
use crate::ops_input::{
    Create, Finish, Input, Kind, ListWithCursor, Op, Status, Text, Update, Who, metadata, payload,
    whole_millis,
};

/// The active-task cap of the stores under test: small, so that the
/// fuzzer reaches it.
const MAX_ACTIVE: usize = 6;
const LEASE: Duration = Duration::from_secs(20);
/// Host-chosen ids come from a few slots, so operations meet.
const SLOTS: u8 = 8;
/// The payload cap of every handle but `big`: the smallest a store takes,
/// so that the fuzzer reaches it.
const CAP: usize = MIN_MAX_PAYLOAD_BYTES;
/// The payload cap of `big`: its tasks can be as large as the store's own
/// changes may make the others' (a file any handle still reads).
const BIG_CAP: usize = CAP + OWN_HEADROOM;

/// The handles, by index into `Run::handles`.
const MAIN: usize = 0;
const CLAIMER: usize = 1;
const BIG: usize = 2;
/// Reads every write back; makes no other call.
const READER: usize = 3;

/// What a token looks like until the handle's first task shows it: the
/// length of the real one (a simple UUID), for the sizes of its tasks.
const TOKEN_PLACEHOLDER: &str = "00000000000000000000000000000000";
/// What a store-chosen id looks like until the store chooses it.
const ID_PLACEHOLDER: &str = "00000000-0000-4000-8000-000000000000";

/// Runs one input against both stores, panicking at the first result that
/// is not the model's.
pub fn check_input(input: &Input) {
    let start = OffsetDateTime::from_unix_timestamp(1_780_000_000).expect("a valid time")
        + Duration::from_millis(input.start_ms.into());
    // A file store's large passes (every stripe at once, a sweep reading
    // and removing in one go) start at 256 tasks, which these sequences
    // never hold: three inputs in four start them at one to three.
    let large_pass = match input.start_ms % 4 {
        0 => None,
        tasks => Some(tasks as usize),
    };
    run(Backend::Memory, start, large_pass, &input.ops);
    run(Backend::File, start, large_pass, &input.ops);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    File,
    Memory,
}

/// The file store's directory: one per process, emptied for every input.
fn store_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| crate::common::scratch_dir("ops").join("store"))
}

/// One handle on the store under test, and what the model knows of it.
struct Handle {
    instance_id: String,
    cap: usize,
    /// The token of this open, once a task it owns has shown it.
    token: Option<String>,
    /// The latest time this handle has read: the time it goes by never
    /// goes back.
    high_water: Option<OffsetDateTime>,
    /// The last reading of the clock and of its monotonic clock (`advance`
    /// moves both, a step back the wall clock alone), and how far the
    /// clock then read behind the time that went by, by the monotonic
    /// clock.
    steady: Option<(OffsetDateTime, Duration, time::Duration)>,
    /// What the leases this handle writes run from, as of its last
    /// reading: the clock's reading carried forward by how far it read
    /// behind the time that went by (`steady`), never below its time.
    lease_from: OffsetDateTime,
    store: Box<dyn TaskStore>,
}

/// Why the model says a call fails: the error's kind and what it carries
/// besides the task id (which every one of them but the query errors names).
#[derive(Clone, Debug, PartialEq)]
enum Refusal {
    NotFound,
    AlreadyExists,
    TooManyActive,
    PayloadTooLarge {
        size: usize,
        limit: usize,
    },
    TooDeep {
        depth: usize,
    },
    NotOwner {
        owner: Option<String>,
    },
    TerminalStatusInUpdate {
        status: TaskStatus,
    },
    InvalidQuery,
    InvalidCursor {
        shown: String,
    },
    InvalidTask,
    /// `ReservedMetadata`: the operation and the key.
    Reserved(&'static str, String),
}

type Want<T> = Result<T, Refusal>;

/// A host's `operation` that sets a metadata key reserved for the MCP
/// task manager (beginning with `mcp.`) is refused, naming the first (its
/// first 160 bytes, marked `...` where cut).
fn reserved(operation: &'static str, metadata: &Map<String, Value>) -> Want<()> {
    let Some(key) = metadata.keys().find(|key| key.starts_with("mcp.")) else {
        return Ok(());
    };
    let mut end = key.len().min(160);
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    let key = if end < key.len() {
        format!("{}...", &key[..end])
    } else {
        key.clone()
    };
    Err(Refusal::Reserved(operation, key))
}

/// The refusal an error is, and the task it names (checking what the
/// model does not predict: the limits every error carries).
fn observed(error: Error) -> (Refusal, Option<TaskId>) {
    match error {
        Error::NotFound { id } => (Refusal::NotFound, Some(id)),
        Error::AlreadyExists { id } => (Refusal::AlreadyExists, Some(id)),
        Error::TooManyActive { id, limit, .. } => {
            assert_eq!(limit, MAX_ACTIVE, "TooManyActive names the cap");
            (Refusal::TooManyActive, Some(id))
        }
        Error::PayloadTooLarge { id, size, limit } => {
            (Refusal::PayloadTooLarge { size, limit }, Some(id))
        }
        Error::TooDeep { id, depth, limit } => {
            assert_eq!(limit, MAX_DEPTH, "TooDeep names the limit");
            (Refusal::TooDeep { depth }, Some(id))
        }
        Error::NotOwner { id, owner } => (Refusal::NotOwner { owner }, Some(id)),
        Error::TerminalStatusInUpdate { id, status } => {
            (Refusal::TerminalStatusInUpdate { status }, Some(id))
        }
        Error::InvalidQuery { reason } => {
            assert!(!reason.is_empty(), "InvalidQuery says why");
            (Refusal::InvalidQuery, None)
        }
        Error::InvalidCursor { cursor, .. } => (Refusal::InvalidCursor { shown: cursor }, None),
        Error::InvalidTask { id, reason } => {
            assert!(
                reason.contains("ttl") || reason.contains("checkpoint"),
                "InvalidTask says why: {reason}"
            );
            (Refusal::InvalidTask, Some(id))
        }
        Error::ReservedMetadata { op, id, key } => (Refusal::Reserved(op, key), Some(id)),
        other => panic!("an error the model never predicts: {other:?}"),
    }
}

/// Checks a call's result against the model's; an error must name `id`.
fn check<T: PartialEq + Debug>(
    what: &str,
    id: Option<&TaskId>,
    got: taskstore::Result<T>,
    want: &Want<T>,
) {
    match (got, want) {
        (Ok(got), Ok(want)) => assert_eq!(&got, want, "{what}"),
        (Err(error), Err(want)) => {
            let (refusal, named) = observed(error);
            assert_eq!(&refusal, want, "{what}");
            if named.is_some() {
                assert_eq!(named.as_ref(), id, "{what}: the error names the task");
            }
        }
        (got, want) => panic!("{what}: got {got:?}, the model says {want:?}"),
    }
}

struct Run {
    backend: Backend,
    clock: ManualClock,
    /// The memory store's tasks, shared by its handles.
    memory: MemoryBackend,
    handles: Vec<Handle>,
    /// How many instance ids the main handle has had.
    main_instances: u32,
    /// Every task the store holds, expired ones included (until deleted).
    tasks: BTreeMap<TaskId, Task>,
    /// Every token a handle has shown: each open has its own.
    tokens: BTreeSet<String>,
    /// Where a file store's large passes start.
    large_pass: Option<usize>,
    /// How many single renewals were made: every other one goes through
    /// `renew_leases_of`, which must answer as `renew_lease`.
    renewals: u64,
}

fn run(backend: Backend, start: OffsetDateTime, large_pass: Option<usize>, ops: &[Op]) {
    if backend == Backend::File {
        // A new store for every input.
        empty_dir(store_dir());
    }
    let mut run = Run {
        backend,
        clock: ManualClock::new(start),
        memory: MemoryBackend::new(),
        handles: Vec::new(),
        main_instances: 0,
        tasks: BTreeMap::new(),
        tokens: BTreeSet::new(),
        large_pass,
        renewals: 0,
    };
    for (instance_id, cap) in [
        ("instance-0", CAP),
        ("claimer", CAP),
        ("big", BIG_CAP),
        ("reader", CAP),
    ] {
        let handle = run.open(instance_id, cap);
        run.handles.push(handle);
    }
    for op in ops {
        run.apply(op);
        run.files_agree();
    }
    run.reopen(false);
    run.files_agree();
}

/// `createdAt + ttl <= now`, in plain nanoseconds (expiry is inclusive).
fn expired(task: &Task, now: OffsetDateTime) -> bool {
    task.ttl.is_some_and(|ttl| {
        task.created_at.unix_timestamp_nanos() + ttl.as_nanos() as i128
            <= now.unix_timestamp_nanos()
    })
}

/// When a lease taken at `now` lapses.
fn lease_until(now: OffsetDateTime) -> OffsetDateTime {
    now + LEASE
}

fn encoded_size(task: &Task) -> usize {
    serde_json::to_vec(task).expect("a task encodes").len()
}

fn listing_order(a: &Task, b: &Task) -> std::cmp::Ordering {
    (a.created_at, &a.id).cmp(&(b.created_at, &b.id))
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

/// A token: as long as the placeholder, lowercase hex.
fn is_token(token: &str) -> bool {
    token.len() == TOKEN_PLACEHOLDER.len()
        && token
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether `task` is an orphan at `now`: running, its lease lapsed.
fn orphan(task: &Task, now: OffsetDateTime) -> bool {
    !task.is_terminal() && task.lease_expires_at.is_some_and(|at| now >= at)
}

/// Whether a reap at `now` fails the orphan `task`: at once if it cannot
/// be resumed; a resumable one once it is out of attempts, or has waited
/// one lease (the default claim grace) for a claim.
fn reapable(task: &Task, now: OffsetDateTime) -> bool {
    orphan(task, now)
        && task.resume.as_ref().is_none_or(|resume| {
            let lapsed = task.lease_expires_at.expect("an orphan had a lease");
            resume.attempts >= resume.max_attempts || now >= lapsed + LEASE
        })
}

/// Whether a claim of `kinds` at `now` takes the orphan `task`.
fn claimable(task: &Task, now: OffsetDateTime, kinds: &[String]) -> bool {
    orphan(task, now)
        && task.resume.as_ref().is_some_and(|resume| {
            resume.attempts < resume.max_attempts && kinds.contains(&resume.kind)
        })
}

/// The error a reaper records on an orphan.
fn orphan_error(task: &Task, reaper: &str) -> Value {
    let owner = task.owner.as_deref().expect("every task has an owner here");
    // As the store writes its stamps (FORMAT.md): RFC 3339 in UTC with a
    // fraction of nine digits, whatever the instant.
    let lapsed = task.lease_expires_at.expect("an orphan had a lease");
    let whole = lapsed
        .replace_nanosecond(0)
        .expect("zero nanoseconds")
        .format(&Rfc3339)
        .expect("formats");
    let lapsed = format!(
        "{}.{:09}Z",
        whole.strip_suffix('Z').expect("in UTC"),
        lapsed.nanosecond()
    );
    let mut error = json!({
        "code": "orphaned",
        "message": format!(
            "task {} was abandoned: its owner {owner} stopped renewing its lease",
            task.id
        ),
        "owner": owner,
        "leaseExpiredAt": lapsed,
        "reapedBy": reaper,
    });
    if let Some(resume) = &task.resume {
        error["kind"] = json!(resume.kind);
        error["attempts"] = json!(resume.attempts);
        error["maxAttempts"] = json!(resume.max_attempts);
    }
    error
}

/// What `complete`, `fail` and `cancel` make of a running task (the
/// revision and lease are the caller's).
/// Saves `checkpoint` (if any) in `task`'s resume state: a task that is
/// not resumable has no place for it, and the write is refused.
fn checkpoint_into(task: &mut Task, checkpoint: Option<Value>) -> Want<()> {
    let Some(checkpoint) = checkpoint else {
        return Ok(());
    };
    let resume = task.resume.as_mut().ok_or(Refusal::InvalidTask)?;
    resume.checkpoint = Some(checkpoint);
    Ok(())
}

fn finish(task: &mut Task, now: OffsetDateTime, outcome: Outcome) {
    task.status = outcome.status();
    task.input_requests = None;
    task.resume = None;
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

/// A cursor as the store hands them out, `c1.<createdAt nanos>.<id>`,
/// read back into the listing position it stands for.
fn decode_cursor(raw: &str) -> Want<(OffsetDateTime, TaskId)> {
    let invalid = || Refusal::InvalidCursor {
        // The first 200 bytes (cut on a character boundary), marked.
        shown: if raw.len() <= 200 {
            raw.to_owned()
        } else {
            let end = (0..=200)
                .rev()
                .find(|&i| raw.is_char_boundary(i))
                .unwrap_or(0);
            format!("{}...", &raw[..end])
        },
    };
    let rest = raw.strip_prefix("c1.").ok_or_else(invalid)?;
    let (nanos, id) = rest.split_once('.').ok_or_else(invalid)?;
    let nanos: i128 = nanos.parse().map_err(|_| invalid())?;
    let at = OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| invalid())?;
    let id = TaskId::parse(id).map_err(|_| invalid())?;
    Ok((at, id))
}

impl Run {
    fn open(&self, instance_id: &str, cap: usize) -> Handle {
        let mut config = StoreConfig::new(&self.clock, instance_id);
        config.lease = LEASE;
        config.max_active = MAX_ACTIVE;
        config.max_payload_bytes = cap;
        config.large_pass = self.large_pass;
        let store: Box<dyn TaskStore> = match self.backend {
            Backend::File => Box::new(file_store(store_dir(), &config).expect("open the store")),
            Backend::Memory => Box::new(memory_store_on(&self.memory, &config)),
        };
        assert_eq!(store.instance_id(), instance_id);
        Handle {
            instance_id: instance_id.to_owned(),
            cap,
            token: None,
            high_water: None,
            steady: None,
            lease_from: OffsetDateTime::UNIX_EPOCH,
            store,
        }
    }

    fn store(&self, h: usize) -> &dyn TaskStore {
        &*self.handles[h].store
    }

    /// The handle `who` names. (`big` made host writes only while a task
    /// its own change took past the others' cap was a file they would not
    /// read; every handle reads every task the store accepted now.)
    fn who(who: Who) -> usize {
        match who {
            Who::Main => MAIN,
            Who::Claimer => CLAIMER,
            Who::Big => BIG,
        }
    }

    /// The time handle `h` goes by, read as the store reads it: the clock,
    /// never earlier than a time the handle has read before.
    fn now(&mut self, h: usize) -> OffsetDateTime {
        self.reading(h).0
    }

    /// [`now`](Self::now), and what the clock itself read: a reap or a
    /// claim judges other owners' leases by the second alone (after the
    /// clock is set back, the handle's time stays ahead, and an owner's
    /// leases renewed from the clock's time are live).
    fn reading(&mut self, h: usize) -> (OffsetDateTime, OffsetDateTime) {
        let clock = self.clock.now();
        let monotonic = self
            .clock
            .monotonic()
            .expect("a manual clock's monotonic reading");
        let handle = &mut self.handles[h];
        let now = handle.high_water.map_or(clock, |seen| seen.max(clock));
        // How far the clock reads behind the time that went by: what it
        // read behind last, plus how far it fell behind the monotonic
        // clock since if further than 1 ms and 1% of the time that went by
        // (no step), less how far it went ahead (a step forward), never
        // below zero.
        let behind = handle
            .steady
            .map_or(time::Duration::ZERO, |(wall, since, behind)| {
                let went = monotonic - since;
                let fell = time::Duration::try_from(went).expect("a span") - (clock - wall);
                let no_step = time::Duration::try_from(Duration::from_millis(1) + went / 100)
                    .expect("a span");
                if fell < time::Duration::ZERO || fell > no_step {
                    (behind + fell).max(time::Duration::ZERO)
                } else {
                    behind
                }
            });
        handle.steady = Some((clock, monotonic, behind));
        let lease_from = clock.saturating_add(behind);
        handle.high_water = Some(now);
        handle.lease_from = lease_from.max(now);
        (now, clock)
    }

    /// Handle `h`'s token, or a placeholder as long as one.
    fn token(&self, h: usize) -> String {
        self.handles[h]
            .token
            .clone()
            .unwrap_or_else(|| TOKEN_PLACEHOLDER.to_owned())
    }

    /// Learns handle `h`'s token from a task it owns; returns it.
    fn learn_token(&mut self, h: usize, task: &Task) -> String {
        let got = task.owner_token.clone().expect("an owned task has a token");
        if let Some(token) = &self.handles[h].token {
            assert_eq!(&got, token, "a handle keeps its token");
            return got;
        }
        assert!(is_token(&got), "token {got:?}");
        assert!(
            self.tokens.insert(got.clone()),
            "two opens share token {got}"
        );
        self.handles[h].token = Some(got.clone());
        got
    }

    /// Whether handle `h` owns `task`: its instance id and its open.
    fn owns(&self, h: usize, task: &Task) -> bool {
        let handle = &self.handles[h];
        task.owner.as_deref() == Some(handle.instance_id.as_str())
            && handle.token.is_some()
            && task.owner_token == handle.token
    }

    /// What a write by handle `h` does to the lease: a terminal task holds
    /// none; the owner's writes renew it; anyone else's leave it.
    fn after_write(&self, h: usize, task: &mut Task) {
        if task.is_terminal() {
            task.lease_expires_at = None;
        } else if self.owns(h, task) {
            task.lease_expires_at = Some(lease_until(self.handles[h].lease_from));
        }
    }

    /// Whether a handle may write `task`: no value deeper than
    /// `MAX_DEPTH` (the error names the deepest), and no larger than
    /// `limit` (the handle's payload cap, or past it: see `own_limit` and
    /// `host_write`).
    fn recorded(&self, task: &Task, limit: usize) -> Want<()> {
        let resume = task.resume.as_ref();
        let deepest = [&task.result, &task.error, &task.input_requests]
            .into_iter()
            .flatten()
            .chain(resume.map(|r| &r.input))
            .chain(resume.and_then(|r| r.checkpoint.as_ref()))
            .chain(task.metadata.values())
            .map(depth)
            .max()
            .unwrap_or(0);
        if deepest > MAX_DEPTH {
            return Err(Refusal::TooDeep { depth: deepest });
        }
        let size = encoded_size(task);
        if size > limit {
            return Err(Refusal::PayloadTooLarge { size, limit });
        }
        Ok(())
    }

    /// How large the store's own change (a renewal, a claim, a reap) by
    /// handle `h` may make a task of `had` bytes: past the cap by
    /// `OWN_HEADROOM`, or past the task's own size by as much (a task
    /// another handle's larger cap let in), never past `LARGEST_TASK`.
    fn own_limit(&self, h: usize, had: usize) -> usize {
        let limit = self.handles[h].cap + OWN_HEADROOM;
        (had + OWN_HEADROOM).clamp(limit, LARGEST_TASK)
    }

    /// The model's tasks in listing order (`createdAt`, then id).
    fn in_order(&self) -> Vec<Task> {
        let mut tasks: Vec<Task> = self.tasks.values().cloned().collect();
        tasks.sort_by(listing_order);
        tasks
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

    /// The epoch the model has for `id` (1, the first, for a task it does
    /// not know).
    fn epoch(&self, id: &TaskId) -> u64 {
        self.tasks.get(id).map_or(1, |t| t.epoch)
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Create { by, create } => self.create(Run::who(*by), create),
            Op::Update { by, update } => self.update(Run::who(*by), update),
            Op::Complete { by, slot, result } => {
                let h = Run::who(*by);
                let id = self.target(*slot);
                let result = payload(result);
                let got = self.store(h).complete(&id, result.clone());
                self.written(h, &id, None, got, Outcome::Completed(result));
            }
            Op::Fail { by, slot, error } => {
                let h = Run::who(*by);
                let id = self.target(*slot);
                let error = payload(error);
                let got = self.store(h).fail(&id, error.clone());
                self.written(h, &id, None, got, Outcome::Failed(error));
            }
            Op::Cancel { by, slot, message } => {
                let h = Run::who(*by);
                let id = self.target(*slot);
                let message = message.as_ref().map(Text::string);
                let got = self.store(h).cancel(&id, message.clone());
                self.written(h, &id, None, got, Outcome::Cancelled(message));
            }
            Op::FinishFenced {
                by,
                slot,
                outcome,
                epoch,
            } => {
                let h = Run::who(*by);
                let id = self.target(*slot);
                let epoch = epoch.resolve(self.epoch(&id));
                let outcome = match outcome {
                    Finish::Completed(result) => Outcome::Completed(payload(result)),
                    Finish::Failed(error) => Outcome::Failed(payload(error)),
                    Finish::Cancelled(message) => {
                        Outcome::Cancelled(message.as_ref().map(Text::string))
                    }
                };
                let got = self.store(h).finish_fenced(&id, outcome.clone(), epoch);
                self.written(h, &id, Some(epoch), got, outcome);
            }
            Op::Checkpoint {
                by,
                slot,
                checkpoint,
                epoch,
            } => {
                let h = Run::who(*by);
                let id = self.target(*slot);
                let checkpoint = payload(checkpoint);
                let fence = epoch.map(|e| e.resolve(self.epoch(&id)));
                let mut update = TaskUpdate::new().checkpoint(checkpoint.clone());
                if let Some(fence) = fence {
                    update = update.fenced(fence);
                }
                let got = self.store(h).update(&id, update);
                let want = self.model_write(h, &id, fence, |task, now| {
                    checkpoint_into(task, Some(checkpoint))?;
                    task.last_updated_at = now;
                    Ok(())
                });
                check(
                    &format!("checkpoint {id} at {fence:?}"),
                    Some(&id),
                    got,
                    &want,
                );
                self.reads_back(&id);
            }
            Op::Delete { by, slot } => {
                let h = Run::who(*by);
                let id = self.target(*slot);
                let got = self.store(h).delete(&id);
                let want = match self.tasks.remove(&id) {
                    None => false,
                    Some(task) => !expired(&task, self.now(h)),
                };
                check(&format!("delete {id}"), Some(&id), got, &Ok(want));
                self.reads_back(&id);
            }
            Op::Get { by, slot } => {
                let h = Run::who(*by);
                let id = self.target(*slot);
                let got = self.store(h).get(&id);
                let want = self.model_get(h, &id);
                check(&format!("get {id}"), Some(&id), got, &Ok(want));
                // `get_all` answers each id as `get` does, an id given
                // twice and one never made included.
                let never = TaskId::parse("never-made-by-the-fuzzer").unwrap();
                let ids = [id.clone(), never, id.clone()];
                let all = self.store(h).get_all(&ids);
                assert_eq!(all.len(), ids.len(), "get_all: one answer per id");
                for (id, got) in ids.iter().zip(all) {
                    let want = self.model_get(h, id);
                    check(&format!("get_all {id}"), Some(id), got, &Ok(want));
                }
            }
            Op::List {
                by,
                active,
                status,
                limit,
            } => {
                let limit = limit.map(|l| usize::from(l % 9));
                self.list_all(Run::who(*by), *active, status.map(Status::to_status), limit);
            }
            Op::ListWithCursor(op) => self.list_with_cursor(op),
            Op::Sweep { by } => self.sweep(Run::who(*by)),
            Op::Advance { ms } => self.clock.advance(Duration::from_millis((*ms).into())),
            Op::AdvanceLong { s } => self.clock.advance(Duration::from_secs((*s).into())),
            Op::StepBack { ms } => {
                let back = self.clock.now() - Duration::from_millis((*ms).into());
                self.clock.set(back);
            }
            Op::RenewLease { by, slot } => {
                let id = self.target(*slot);
                self.renew(Run::who(*by), &id);
            }
            Op::RenewLeases { by } => self.renew_all(Run::who(*by)),
            Op::ReapOrphans { by } => self.reap(Run::who(*by)),
            Op::Claim { by, kinds } => self.claim(Run::who(*by), kinds),
            Op::ClaimAfterLease { kinds } => {
                // Past every lease granted so far, as any handle saw the
                // time, or ran its leases from (ahead of its time while the
                // clock read behind the time that went by).
                let latest = self
                    .handles
                    .iter()
                    .filter_map(|h| h.high_water.map(|seen| seen.max(h.lease_from)))
                    .fold(self.clock.now(), OffsetDateTime::max);
                self.clock.set(latest + LEASE + Duration::from_millis(1));
                self.claim(CLAIMER, kinds);
            }
            Op::Reopen { new_instance } => self.reopen(*new_instance),
        }
    }

    /// What `get` by handle `h` finds: an expired task it meets, it deletes.
    fn model_get(&mut self, h: usize, id: &TaskId) -> Option<Task> {
        let task = self.tasks.get(id)?.clone();
        if expired(&task, self.now(h)) {
            self.tasks.remove(id);
            return None;
        }
        Some(task)
    }

    /// The reader handle reads `id` back as the model has it.
    fn reads_back(&mut self, id: &TaskId) {
        let got = self.store(READER).get(id);
        let want = self.model_get(READER, id);
        check(&format!("read back {id}"), Some(id), got, &Ok(want));
    }

    fn create(&mut self, h: usize, op: &Create) {
        let Create {
            random_id,
            slot,
            ttl,
            poll,
            message,
            metadata: entries,
            resumable,
            below_cap,
        } = op;
        let host_id = (!random_id).then(|| slot_id(*slot));
        let entries = metadata(entries);
        let input = resumable.as_ref().map(|r| payload(&r.input));
        // The store reads the time first thing, whatever comes of the call.
        let now = self.now(h);
        let mut want = new_task(
            host_id
                .clone()
                .unwrap_or_else(|| TaskId::parse(ID_PLACEHOLDER).expect("a valid id")),
            now,
            ttl.map(|t| whole_millis(t.duration())),
            poll.map(|p| whole_millis(p.duration())),
            message.as_ref().map(Text::string),
            entries,
            self.handles[h].lease_from,
            &self.handles[h].instance_id,
            &self.token(h),
        );
        let mut new = NewTask::new();
        if let (Some(resumable), Some(input)) = (resumable, input) {
            let kind = resumable.kind.string();
            assert_eq!(DEFAULT_MAX_ATTEMPTS, 3);
            let mut max_attempts = DEFAULT_MAX_ATTEMPTS;
            match resumable.max_attempts {
                // Before `resumable` or after it, alike.
                Some(n) if resumable.max_attempts_first => {
                    new = new
                        .max_attempts(n.into())
                        .resumable(kind.clone(), input.clone());
                    max_attempts = u32::from(n).max(1);
                }
                Some(n) => {
                    new = new
                        .resumable(kind.clone(), input.clone())
                        .max_attempts(n.into());
                    max_attempts = u32::from(n).max(1);
                }
                None => new = new.resumable(kind.clone(), input.clone()),
            }
            want.resume = Some(resume(kind, input, max_attempts));
        }
        if let Some(below) = below_cap {
            want.metadata.insert("~pad".into(), Value::from(""));
            let room = self.handles[h].cap.saturating_sub(usize::from(*below));
            let pad = room.saturating_sub(encoded_size(&want));
            want.metadata
                .insert("~pad".into(), Value::from("x".repeat(pad)));
        }
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
        let got = self.store(h).create(new);
        let model = self.model_create(h, &want, host_id.as_ref(), now);
        match (got, model) {
            (Ok(task), Ok(())) => {
                match &host_id {
                    Some(id) => assert_eq!(&task.id, id),
                    None => {
                        assert!(is_generated_id(&task.id), "generated id {}", task.id);
                        assert!(!self.tasks.contains_key(&task.id), "id reused");
                        want.id = task.id.clone();
                    }
                }
                want.owner_token = Some(self.learn_token(h, &task));
                assert_eq!(task, want, "create");
                self.tasks.insert(task.id.clone(), task.clone());
                self.reads_back(&task.id);
            }
            (Err(error), Err(refusal)) => {
                let (got, named) = observed(error);
                assert_eq!(got, refusal, "create {host_id:?}");
                let named = named.expect("a refused create names the task");
                match &host_id {
                    Some(id) => assert_eq!(&named, id),
                    None => assert!(is_generated_id(&named), "generated id {named}"),
                }
                if let Some(id) = &host_id {
                    self.reads_back(id);
                }
            }
            (got, model) => panic!("create {host_id:?}: got {got:?}, the model says {model:?}"),
        }
    }

    /// What a create of `want` by handle `h` at `now` does to the model.
    ///
    /// A taken, live id is `AlreadyExists` on every backend, at the
    /// active-task cap too (the rules look for it there). The two backends
    /// check a taken id and the cap in opposite orders, though: the file
    /// backend counts first, the memory backend looks for the id first. So
    /// at the cap an expired task under the id makes way at once on a
    /// `MemoryStore`, and on a `FileStore` only once deleting the expired
    /// running tasks made room (else `TooManyActive`, and it stays).
    fn model_create(
        &mut self,
        h: usize,
        want: &Task,
        host_id: Option<&TaskId>,
        now: OffsetDateTime,
    ) -> Want<()> {
        // A metadata key reserved for the MCP task manager: refused before
        // anything else is looked at.
        reserved("create", &want.metadata)?;
        // A TTL under a millisecond (kept as zero) would have the task
        // expired when made: refused before the task is looked for.
        if want.ttl.is_some_and(|ttl| ttl.is_zero()) {
            return Err(Refusal::InvalidTask);
        }
        self.recorded(want, self.handles[h].cap)?;
        let mut freed = false;
        loop {
            let running = self.tasks.values().filter(|t| !t.is_terminal()).count();
            let full = running >= MAX_ACTIVE;
            let existing = host_id.and_then(|id| self.tasks.get(id)).cloned();
            if existing.as_ref().is_some_and(|t| !expired(t, now)) {
                return Err(Refusal::AlreadyExists);
            }
            let existing = match self.backend {
                Backend::File if full => None,
                _ => existing,
            };
            if let Some(existing) = existing {
                // An expired task makes way.
                self.tasks.remove(&existing.id);
                continue;
            }
            if !full {
                return Ok(());
            }
            if freed {
                return Err(Refusal::TooManyActive);
            }
            // Expired running tasks still count until deleted: they are
            // deleted, and the create tried once more.
            freed = true;
            self.tasks
                .retain(|_, t| t.is_terminal() || !expired(t, now));
        }
    }

    fn update(&mut self, h: usize, op: &Update) {
        let Update {
            slot,
            status,
            message,
            input,
            poll,
            metadata: entries,
            checkpoint,
            fence,
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
        let metadata = metadata(entries);
        let checkpoint = checkpoint.as_ref().map(payload);
        if let Some(input) = &input {
            update = update.input_requests(input.clone());
        }
        let poll = poll.map(|p| p.duration());
        if let Some(poll) = poll {
            update = update.poll_interval(poll);
        }
        for (k, v) in &metadata {
            update = update.metadata(k.clone(), v.clone());
        }
        if let Some(checkpoint) = &checkpoint {
            update = update.checkpoint(checkpoint.clone());
        }
        let fence = fence.map(|e| e.resolve(self.epoch(&id)));
        if let Some(fence) = fence {
            update = update.fenced(fence);
        }
        let got = self.store(h).update(&id, update);
        let want = match (
            status.filter(|s| s.is_terminal()),
            reserved("update", &metadata),
        ) {
            // Refused before the task is read.
            (Some(terminal), _) => Err(Refusal::TerminalStatusInUpdate { status: terminal }),
            (None, Err(refused)) => Err(refused),
            (None, Ok(())) => self.model_write(h, &id, fence, |task, now| {
                checkpoint_into(task, checkpoint)?;
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
                Ok(())
            }),
        };
        check(&format!("update {id}"), Some(&id), got, &want);
        self.reads_back(&id);
    }

    /// Checks a `complete`, `fail`, `cancel` or `finish_fenced` by handle `h`.
    fn written(
        &mut self,
        h: usize,
        id: &TaskId,
        fence: Option<u64>,
        got: taskstore::Result<Transition>,
        outcome: Outcome,
    ) {
        let what = format!("{:?} {id} at {fence:?}", outcome.status());
        let want = self.model_write(h, id, fence, |task, now| {
            finish(task, now, outcome);
            Ok(())
        });
        check(&what, Some(id), got, &want);
        self.reads_back(id);
    }

    /// What a write by handle `h` of task `id` (fenced to an epoch, or
    /// not) does: `change` is what it asks for, or its refusal of what the
    /// task cannot keep (after the task is found live, unfinished and not
    /// fenced, as the store refuses it).
    fn model_write(
        &mut self,
        h: usize,
        id: &TaskId,
        fence: Option<u64>,
        change: impl FnOnce(&mut Task, OffsetDateTime) -> Want<()>,
    ) -> Want<Transition> {
        let Some(current) = self.tasks.get(id).cloned() else {
            return Err(Refusal::NotFound);
        };
        let now = self.now(h);
        if expired(&current, now) {
            // The handle met an expired task: it deletes it.
            self.tasks.remove(id);
            return Err(Refusal::NotFound);
        }
        if current.is_terminal() {
            return Ok(Transition::AlreadyTerminal(current));
        }
        // A fenced write is the owner's: at its epoch, and by its handle
        // (instance id and open).
        if fence.is_some_and(|epoch| epoch != current.epoch || !self.owns(h, &current)) {
            return Ok(Transition::Fenced(current));
        }
        // Over a task past the cap (the store's own change took it there,
        // or another handle's larger cap let it in), a host's running
        // write may not make it larger, and its outcome has the store's
        // headroom over it; a failure with a small error has the headroom
        // over any task.
        let had = encoded_size(&current);
        let cap = self.handles[h].cap;
        let mut next = current;
        change(&mut next, now)?;
        next.revision += 1;
        self.after_write(h, &mut next);
        let small_failure = next.status == TaskStatus::Failed
            && next
                .error
                .as_ref()
                .is_some_and(|e| serde_json::to_vec(e).unwrap().len() <= SMALL_ERROR_BYTES);
        let limit = match (had > cap, next.is_terminal()) {
            (true, false) => had,
            (true, true) => (had + OWN_HEADROOM).min(LARGEST_TASK),
            (false, _) if small_failure => cap + OWN_HEADROOM,
            (false, _) => cap,
        };
        self.recorded(&next, limit)?;
        self.tasks.insert(id.clone(), next.clone());
        Ok(Transition::Applied(next))
    }

    /// Every page of a listing by handle `h`, `limit` tasks at a time,
    /// following the cursors.
    fn list_all(
        &mut self,
        h: usize,
        active: bool,
        status: Option<TaskStatus>,
        limit: Option<usize>,
    ) {
        let mut query = if active {
            ListQuery::active()
        } else {
            ListQuery::all()
        };
        if let Some(status) = status {
            query = query.status(status);
        }
        if let Some(limit) = limit {
            query = query.limit(limit);
        }
        let mut q = query.clone();
        let mut after = None;
        for _ in 0..=self.tasks.len() + 1 {
            let got = self.store(h).list(&q);
            let want = self.model_list(h, active, status, limit, Ok(after.clone()));
            let what = format!("list {q:?}");
            match (got, want) {
                (Ok(page), Ok((tasks, more))) => {
                    assert_eq!(page.tasks, tasks, "{what}");
                    assert!(
                        page.skipped.is_empty(),
                        "{what}: skipped {:?}",
                        page.skipped
                    );
                    assert_eq!(page.next_cursor.is_some(), more, "{what}: a next page");
                    let Some(cursor) = page.next_cursor else {
                        self.nothing_set_aside();
                        return;
                    };
                    let last = tasks.last().expect("a page with a cursor has tasks");
                    after = Some((last.created_at, last.id.clone()));
                    q = query.clone().after(&cursor);
                }
                (got, want) => {
                    check(
                        &what,
                        None,
                        got.map(|p| (p.tasks, p.next_cursor.is_some())),
                        &want,
                    );
                    return;
                }
            }
        }
        panic!("the listing never ended");
    }

    /// One page of a listing by handle `h` of the live tasks after
    /// position `after` (or the refusal of its cursor): the tasks, and
    /// whether more follow.
    fn model_list(
        &mut self,
        h: usize,
        active: bool,
        status: Option<TaskStatus>,
        limit: Option<usize>,
        after: Want<Option<(OffsetDateTime, TaskId)>>,
    ) -> Want<(Vec<Task>, bool)> {
        let now = self.now(h);
        if limit == Some(0) {
            return Err(Refusal::InvalidQuery);
        }
        let after = after?;
        let candidates: Vec<Task> = self
            .in_order()
            .into_iter()
            .filter(|t| !active || !t.is_terminal())
            .filter(|t| status.is_none_or(|s| s == t.status))
            .filter(|t| {
                after
                    .as_ref()
                    .is_none_or(|(at, id)| (&t.created_at, &t.id) > (at, id))
            })
            .collect();
        // The listing reads batches of one more than the page until the
        // page is full or the tasks run out; every expired task it meets
        // on the way, it deletes.
        let batch = limit.map_or(usize::MAX, |l| l + 1);
        let mut tasks = Vec::new();
        for chunk in candidates.chunks(batch) {
            for task in chunk {
                if expired(task, now) {
                    self.tasks.remove(&task.id);
                } else {
                    tasks.push(task.clone());
                }
            }
            if limit.is_some_and(|limit| tasks.len() > limit) || chunk.len() < batch {
                break;
            }
        }
        let more = limit.is_some_and(|limit| tasks.len() > limit);
        if let Some(limit) = limit {
            tasks.truncate(limit);
        }
        Ok((tasks, more))
    }

    fn list_with_cursor(&mut self, op: &ListWithCursor) {
        let ListWithCursor {
            by,
            active,
            cursor,
            limit,
        } = op;
        let h = Run::who(*by);
        let cursor = cursor.string();
        let mut query = if *active {
            ListQuery::active()
        } else {
            ListQuery::all()
        };
        query = query.after(&cursor);
        let limit = limit.map(|l| usize::from(l % 9));
        if let Some(limit) = limit {
            query = query.limit(limit);
        }
        let got = self.store(h).list(&query).map(|page| {
            assert!(page.skipped.is_empty(), "skipped {:?}", page.skipped);
            (page.tasks, page.next_cursor.is_some())
        });
        let want = self.model_list(h, *active, None, limit, decode_cursor(&cursor).map(Some));
        check(&format!("list {query:?}"), None, got, &want);
    }

    fn sweep(&mut self, h: usize) {
        let got = self.store(h).sweep().expect("sweep");
        let now = self.now(h);
        let before = self.tasks.len();
        self.tasks.retain(|_, t| !expired(t, now));
        assert_eq!(got.deleted, before - self.tasks.len(), "sweep: deleted");
        assert_eq!(got.cleaned, 0, "sweep: nothing to clean up");
        assert!(got.skipped.is_empty(), "sweep: skipped {:?}", got.skipped);
        assert!(got.missed.is_empty(), "sweep: missed {:?}", got.missed);
        self.nothing_set_aside();
    }

    fn renew(&mut self, h: usize, id: &TaskId) {
        self.renewals += 1;
        let got = if self.renewals.is_multiple_of(2) {
            let mut got = self.store(h).renew_leases_of(std::slice::from_ref(id));
            assert_eq!(got.len(), 1, "renew_leases_of: one answer per id");
            got.remove(0)
        } else {
            self.store(h).renew_lease(id)
        };
        let want = self.model_renew(h, id);
        check(&format!("renew {id} by {h}"), Some(id), got, &want);
        self.reads_back(id);
    }

    fn model_renew(&mut self, h: usize, id: &TaskId) -> Want<Transition> {
        let Some(task) = self.tasks.get(id).cloned() else {
            return Err(Refusal::NotFound);
        };
        let now = self.now(h);
        if expired(&task, now) {
            // The handle met an expired task: it deletes it.
            self.tasks.remove(id);
            return Err(Refusal::NotFound);
        }
        if task.is_terminal() {
            return Ok(Transition::AlreadyTerminal(task));
        }
        if !self.owns(h, &task) {
            return Err(Refusal::NotOwner { owner: task.owner });
        }
        let limit = self.own_limit(h, encoded_size(&task));
        let mut next = task;
        next.revision += 1;
        next.lease_expires_at = Some(lease_until(self.handles[h].lease_from));
        self.recorded(&next, limit)?;
        self.tasks.insert(id.clone(), next.clone());
        Ok(Transition::Applied(next))
    }

    /// `renew_leases`: every running task handle `h` owns, and the first
    /// refusal if one was refused (the rest renewed all the same).
    fn renew_all(&mut self, h: usize) {
        let got = self.store(h).renew_leases();
        let now = self.now(h);
        // Every expired running task the pass meets, it deletes, whatever
        // comes of the renewals.
        self.tasks
            .retain(|_, t| t.is_terminal() || !expired(t, now));
        let mut renewed = Vec::new();
        let mut refused = None;
        for task in self.in_order() {
            if task.is_terminal() || expired(&task, now) || !self.owns(h, &task) {
                continue;
            }
            let limit = self.own_limit(h, encoded_size(&task));
            let mut next = task;
            next.revision += 1;
            next.lease_expires_at = Some(lease_until(self.handles[h].lease_from));
            match self.recorded(&next, limit) {
                Ok(()) => renewed.push(next),
                Err(refusal) => {
                    refused.get_or_insert((next.id, refusal));
                }
            }
        }
        match refused {
            Some((id, refusal)) => check("renew_leases", Some(&id), got, &Err(refusal)),
            None => check("renew_leases", None, got, &Ok(renewed.len())),
        }
        for task in renewed {
            let id = task.id.clone();
            self.tasks.insert(id.clone(), task);
            self.reads_back(&id);
        }
    }

    fn reap(&mut self, h: usize) {
        let got = self.store(h).reap().expect("reap");
        let (now, clock) = self.reading(h);
        self.forget_lapsed_and_expired(now, clock);
        let mut reaped = Vec::new();
        let mut missed = Vec::new();
        for task in self.in_order() {
            if expired(&task, now) || !reapable(&task, clock) {
                continue;
            }
            match self.orphan_failed(h, &task, now) {
                Ok(next) => reaped.push(next),
                Err(refusal) => missed.push((task.id, refusal)),
            }
        }
        assert!(got.skipped.is_empty(), "reap: skipped {:?}", got.skipped);
        assert_eq!(got.tasks, reaped, "reap at {now}");
        check_missed("reap", got.missed, &missed);
        for task in reaped {
            let id = task.id.clone();
            self.tasks.insert(id.clone(), task);
            self.reads_back(&id);
        }
    }

    /// What a reap or a claim at `now` (the clock reading `clock`) deletes:
    /// the expired tasks among those it looks at, the running ones whose
    /// lease has lapsed by the clock's reading.
    fn forget_lapsed_and_expired(&mut self, now: OffsetDateTime, clock: OffsetDateTime) {
        self.tasks.retain(|_, t| {
            let lapsed = !t.is_terminal() && t.lease_expires_at.is_some_and(|at| at <= clock);
            !(lapsed && expired(t, now))
        });
    }

    /// The failed version of an orphan a reap by handle `h` writes: always
    /// whole (the store's own headroom holds any orphan error).
    fn orphan_failed(&self, h: usize, task: &Task, now: OffsetDateTime) -> Want<Task> {
        let error = orphan_error(task, &self.handles[h].instance_id);
        let mut next = task.clone();
        finish(&mut next, now, Outcome::Failed(error));
        next.revision += 1;
        next.lease_expires_at = None;
        let limit = self.own_limit(h, encoded_size(task));
        self.recorded(&next, limit).map(|()| next)
    }

    fn claim(&mut self, h: usize, kinds: &[Kind]) {
        let kinds: Vec<String> = kinds.iter().take(4).map(Kind::string).collect();
        let refs: Vec<&str> = kinds.iter().map(String::as_str).collect();
        let got = self.store(h).claim(&refs).expect("claim");
        let (now, clock) = self.reading(h);
        self.forget_lapsed_and_expired(now, clock);
        let token = self.token(h);
        let mut claimed = Vec::new();
        let mut missed = Vec::new();
        for task in self.in_order() {
            if expired(&task, now) || !claimable(&task, clock, &kinds) {
                continue;
            }
            let limit = self.own_limit(h, encoded_size(&task));
            let mut next = task;
            next.revision += 1;
            next.owner = Some(self.handles[h].instance_id.clone());
            next.owner_token = Some(token.clone());
            next.lease_expires_at = Some(lease_until(self.handles[h].lease_from));
            next.epoch += 1;
            let resume = next.resume.as_mut().expect("a claimable task is resumable");
            resume.attempts += 1;
            match self.recorded(&next, limit) {
                Ok(()) => claimed.push(next),
                Err(refusal) => missed.push((next.id, refusal)),
            }
        }
        assert!(got.skipped.is_empty(), "claim: skipped {:?}", got.skipped);
        if let (Some(first), false) = (got.tasks.first(), claimed.is_empty()) {
            let token = self.learn_token(h, first);
            for task in &mut claimed {
                task.owner_token = Some(token.clone());
            }
        }
        assert_eq!(got.tasks, claimed, "claim {kinds:?} by {h} at {now}");
        check_missed("claim", got.missed, &missed);
        for task in claimed {
            let id = task.id.clone();
            self.tasks.insert(id.clone(), task);
            self.reads_back(&id);
        }
    }

    /// Drops the main handle and opens it again; the new handle holds
    /// exactly the model's tasks and owns none of them.
    fn reopen(&mut self, new_instance: bool) {
        if new_instance {
            self.main_instances += 1;
        }
        let handle = self.open(&format!("instance-{}", self.main_instances), CAP);
        drop(std::mem::replace(&mut self.handles[MAIN], handle));
        self.list_all(MAIN, false, None, None);
        let ids: Vec<TaskId> = self.tasks.keys().cloned().collect();
        for id in &ids {
            let got = self.store(MAIN).get(id);
            let want = self.model_get(MAIN, id);
            check(
                &format!("get {id} after reopening"),
                Some(id),
                got,
                &Ok(want),
            );
        }
        // A new open owns nothing, whatever its instance id.
        for id in &ids {
            let got = self.store(MAIN).renew_lease(id);
            assert!(
                !got.as_ref().is_ok_and(Transition::is_applied),
                "a reopened handle renewed {id}"
            );
            let want = self.model_renew(MAIN, id);
            check(&format!("renew {id} after reopening"), Some(id), got, &want);
        }
        self.nothing_set_aside();
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

    /// File store: running tasks are the files in `active/`, finished ones
    /// those in `done/`, finished ones with a TTL also have a name in
    /// `expiring/`; no temp file is left and nothing is set aside.
    fn files_agree(&self) {
        if self.backend != Backend::File {
            return;
        }
        let dir = store_dir();
        let running = self.tasks.values().filter(|t| !t.is_terminal()).count();
        let finished = self.tasks.len() - running;
        let expiring = self
            .tasks
            .values()
            .filter(|t| t.is_terminal() && t.ttl.is_some())
            .count();
        assert_eq!(
            count_entries(&dir.join("active")),
            running,
            "files in active/"
        );
        assert_eq!(count_entries(&dir.join("done")), finished, "files in done/");
        assert_eq!(
            count_entries(&dir.join("expiring")),
            expiring,
            "entries in expiring/"
        );
        assert_eq!(count_entries(&dir.join("tmp")), 0, "temp files left behind");
        self.nothing_set_aside();
    }
}

/// A reap's or a claim's `missed` against the model's.
fn check_missed(what: &str, got: Vec<Missed>, want: &[(TaskId, Refusal)]) {
    let got: Vec<(TaskId, Refusal)> = got
        .into_iter()
        .map(|missed| {
            let (refusal, named) = observed(missed.error);
            assert_eq!(
                named.as_ref(),
                Some(&missed.id),
                "{what}: the error names the task"
            );
            (missed.id, refusal)
        })
        .collect();
    assert_eq!(got, want, "{what}: missed");
}

/// A resumable task's state at creation.
fn resume(kind: String, input: Value, max_attempts: u32) -> Resume {
    let mut resume: Resume = serde_json::from_value(json!({
        "kind": kind,
        "attempts": 1,
        "maxAttempts": max_attempts,
    }))
    .expect("resume state from its JSON form");
    // Set directly: kept exactly, at any depth.
    resume.input = input;
    resume
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
    lease_from: OffsetDateTime,
    owner: &str,
    token: &str,
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
        "ownerToken": token,
        "leaseExpiresAt": at(lease_until(lease_from)),
    });
    if let Some(poll) = poll {
        task["pollIntervalMs"] = json!(poll.as_millis() as u64);
    }
    if let Some(message) = message {
        task["statusMessage"] = json!(message);
    }
    let mut task: Task = serde_json::from_value(task).expect("a task from its JSON form");
    assert_eq!(task.epoch, 1, "a new task is at the first epoch");
    // Set directly: values are kept exactly, at any depth.
    task.metadata = metadata;
    task
}
