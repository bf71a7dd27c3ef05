//! The cross-instance protocol: what instances tell each other through a
//! task's stored fields and metadata keys, and who may write what.
//!
//! Instances share nothing but the store. The *owner* of a running task is
//! the store handle that created it or last claimed it
//! ([`TaskStore::claim`](crate::TaskStore::claim)); the manager over that
//! handle runs its operation, as one *run* at the task's owner *epoch*.
//! Every other instance is a *peer*: it answers clients' `tasks/get`,
//! `tasks/update` and `tasks/cancel` for the task.
//!
//! | field or key | written by | holds |
//! |---|---|---|
//! | `status`, `statusMessage`, `inputRequests`, `result`/`error`, the resume checkpoint | the owner, fenced (and `tasks/cancel` at any instance, unfenced, for a task too near the payload cap to take [`CANCEL_REQUESTED_KEY`]: `cancelled`, with a status message if it fits) | the run's state |
//! | [`INPUT_KEYS_KEY`] | the owner, fenced | every input-request key ever issued, with its request's fingerprint and, once accepted, its response |
//! | [`CANCEL_REQUESTED_KEY`] | any instance | `true` once `tasks/cancel` arrived |
//! | [`INPUT_RESPONSE_KEY_PREFIX`]`<key>` | a peer; cleared (`null`) by the owner | a client's response to an outstanding request, for the owner to accept; `null` once the owner recorded it under [`INPUT_KEYS_KEY`] |
//! | [`PRINCIPAL_KEY`] | the instance that creates the task, once | the principal of the request that created it, when it had one; every instance answers a request for another principal as for an unknown task ([`bound_to`]) |
//!
//! # Invariants
//!
//! **Invariant:** every write an instance makes for a run — status, status
//! message, checkpoint, input state, outcome, release — is fenced to the
//! run's epoch (`TaskUpdate::fenced`, `TaskStore::finish_fenced`,
//! `TaskStore::release`). A write refused as `Transition::Fenced` (or a
//! renewal refused as `Error::NotOwner`, or a read that shows another
//! epoch) means another instance claimed the task: the run is *lost*, its
//! operation is stopped, and nothing more of it is written.
//! **Rationale:** exactly one epoch can change a task's state; a stopped or
//! partitioned owner that wakes up cannot overwrite its successor's work.
//!
//! **Invariant:** a peer's writes are unfenced, never renew the lease (the
//! store's rule: only the owner's writes do), and only ever add a request
//! for the owner: [`CANCEL_REQUESTED_KEY`] (with `input_required` moved
//! back to `working`) and [`INPUT_RESPONSE_KEY_PREFIX`]`<key>` for a key
//! outstanding in the stored `inputRequests`, and not answered yet, when
//! the peer read it (written only at that revision: the first answer to a
//! key stands). One exception: a task too near the payload cap to take the
//! cancel flag is finished `cancelled` (first writer wins), since no
//! instance could carry the request to its operation.
//! **Rationale:** a peer, or a restarted process reusing the owner's
//! instance id, cannot keep a dead owner's task alive by retrying requests.
//!
//! **Invariant:** an input-request key names one request for the task's
//! whole life (SEP-2663): [`INPUT_KEYS_KEY`] only grows, and is written in
//! the same fenced write as the `inputRequests` it explains, on condition
//! of the revision it was computed from: a write that landed first (a
//! peer's cancel withdrawing the requests) makes the run decide again
//! from the task as it stands, and is never undone. A run that
//! asks with a recorded key and the same request (a resumed operation
//! replaying from its checkpoint) gets the recorded response, or waits
//! again for the outstanding request; a different request under a recorded
//! key is refused; a recorded key that was withdrawn unanswered (a cancel)
//! is never put back into `inputRequests`: the run is cancelled.
//! **Rationale:** a client never sees one key asked twice, and a resumed
//! operation never asks the client again what it already answered.
//!
//! **Invariant:** the owner accepts a response only for a key outstanding
//! in its run, records it in [`INPUT_KEYS_KEY`] in the same fenced write
//! that withdraws the request from `inputRequests`, and delivers it to the
//! operation (and acknowledges a `tasks/update` it received itself) only
//! once that write is applied. Responses for a key no longer outstanding
//! are ignored, and an answer a peer stored for a key first is taken
//! before one the owner received itself.
//! **Rationale:** the first accepted response is the only one any run ever
//! sees, and it survives the owner: a resumed run gets the same answer.
//!
//! **Invariant:** a run starts from the stored task: its outstanding
//! requests, recorded keys and responses, the cancel request, the resume
//! input and checkpoint. Its operation sees a stored cancel request from
//! its first step, before the manager looks at the task again. A response
//! a peer persisted while no instance ran the task is accepted by the run
//! that resumes it.
//! **Rationale:** `input_required` survives a restart; the answer reaches
//! whichever instance resumes the work.
//!
//! **Invariant:** a task's principal ([`PRINCIPAL_KEY`]) is written with
//! the task by the create, and by no later write (every store refuses a
//! host's write of any `mcp.` key, `Error::ReservedMetadata`; the
//! manager's own writes carry theirs apart, with
//! `NewTask::reserved_metadata` and `TaskUpdate::reserved_metadata`); every `tasks/get`,
//! `tasks/update` and `tasks/cancel`, at any instance, the owner's path
//! included, reaches the task only if [`bound_to`] holds for the principal
//! it acts for, and is otherwise answered exactly as for an unknown id,
//! before anything of the task is read out, written or delivered.
//! **Rationale:** the binding lives in the store, so every instance sharing
//! it, and every owner that claims the task, keeps it; a client cannot tell
//! another principal's task from no task.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::oneshot;

use crate::task::{Task, TaskStatus, TaskUpdate};

/// Metadata key under which `tasks/cancel` persists the cancellation request.
pub const CANCEL_REQUESTED_KEY: &str = "mcp.cancelRequested";

/// Metadata key prefix under which `tasks/update` persists an input response
/// that arrived at an instance other than the task's owner; the key of the
/// input request follows the prefix.
pub const INPUT_RESPONSE_KEY_PREFIX: &str = "mcp.inputResponse.";

/// Metadata key under which the owner records every input-request key the
/// task has used: `{"<key>": {"fingerprint": "fnv1a64:…", "response": …}}`
/// (`response` once one was accepted).
pub const INPUT_KEYS_KEY: &str = "mcp.inputKeys";

/// Metadata key under which the manager binds a task to the principal of
/// the request that created it (a JSON string), when it has one: set once,
/// at creation, and never written again (a host's write of it, as of every
/// `mcp.` key, is refused by the store:
/// [`Error::ReservedMetadata`](crate::Error::ReservedMetadata)). A request reaches the task only
/// if it acts for the same principal; see
/// [`ManagerOptions::principal_of`](super::ManagerOptions::principal_of).
pub const PRINCIPAL_KEY: &str = "mcp.principal";

/// One used input-request key, as recorded under [`INPUT_KEYS_KEY`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct KeyRecord {
    /// [`fingerprint`] of the request asked under the key.
    pub fingerprint: String,
    /// The response accepted for it, once one was (`null` too: a present
    /// field is a response).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::task::present"
    )]
    pub response: Option<Value>,
}

/// The input state the owner persists: what [`INPUT_KEYS_KEY`] and
/// `inputRequests` hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Book {
    /// Every key used over the task's life.
    pub keys: BTreeMap<String, KeyRecord>,
    /// The requests outstanding (the stored `inputRequests`): key → request.
    pub outstanding: BTreeMap<String, Value>,
}

impl Book {
    /// The input state stored with `task`.
    pub fn of(task: &Task) -> Book {
        let keys = task
            .metadata
            .get(INPUT_KEYS_KEY)
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        let outstanding: BTreeMap<String, Value> = match &task.input_requests {
            Some(Value::Object(requests)) if task.status == TaskStatus::InputRequired => requests
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            _ => BTreeMap::new(),
        };
        Book { keys, outstanding }
    }

    /// The write that stores this state (the caller fences it).
    pub fn update(&self) -> TaskUpdate {
        let keys = serde_json::to_value(&self.keys).unwrap_or(Value::Object(Map::new()));
        let update = TaskUpdate::new().reserved_metadata(INPUT_KEYS_KEY, keys);
        if self.outstanding.is_empty() {
            update.status(TaskStatus::Working)
        } else {
            let requests: Map<String, Value> = self
                .outstanding
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            update
                .status(TaskStatus::InputRequired)
                .input_requests(Value::Object(requests))
        }
    }

    /// Accepts `responses` for outstanding keys: records each and withdraws
    /// its request. Returns the ones accepted (others are ignored).
    pub fn accept(&mut self, responses: Vec<(String, Value)>) -> Vec<(String, Value)> {
        let mut accepted = Vec::new();
        for (key, value) in responses {
            let Some(request) = self.outstanding.remove(&key) else {
                continue;
            };
            let record = self.keys.entry(key.clone()).or_insert_with(|| KeyRecord {
                fingerprint: fingerprint(&request),
                response: None,
            });
            record.response = Some(value.clone());
            accepted.push((key, value));
        }
        accepted
    }
}

/// What a run asking under a key should do, by the recorded state.
#[derive(Debug, PartialEq)]
pub(super) enum Ask {
    /// A new key: record it and ask.
    New,
    /// The same request was asked under this key before and is still
    /// outstanding: wait for it again.
    Rejoin,
    /// Asked before and withdrawn without an answer (only a cancel
    /// withdraws a request): never asked again, since the client already
    /// saw the key once; the run is cancelled.
    Withdrawn,
    /// Answered before: this is the response.
    Answered(Value),
    /// The key was used for a different request.
    Conflict,
}

impl Book {
    /// How a run asking `request` (with fingerprint `print`) under `key`
    /// proceeds.
    pub fn ask(&self, key: &str, print: &str) -> Ask {
        match self.keys.get(key) {
            None => Ask::New,
            Some(record) if record.fingerprint != print => Ask::Conflict,
            Some(KeyRecord {
                response: Some(response),
                ..
            }) => Ask::Answered(response.clone()),
            Some(_) if self.outstanding.contains_key(key) => Ask::Rejoin,
            Some(_) => Ask::Withdrawn,
        }
    }
}

/// A run's input state: the persisted [`Book`], and who waits in this run.
#[derive(Debug, Default)]
pub(super) struct Inputs {
    pub book: Book,
    /// The revision of the stored task `book` was read from or written as:
    /// every write of the book asks for it
    /// ([`TaskUpdate::if_revision`]), so that a peer's write landing in
    /// between (a cancel withdrawing the requests) is never undone.
    pub revision: u64,
    /// Keys this run has asked under (each once).
    pub asked: HashSet<String>,
    /// The run's operations waiting for a response, by key.
    pub waiters: HashMap<String, oneshot::Sender<Value>>,
}

impl Inputs {
    /// Hands each waiting operation the response `stored` records for its
    /// key. The write that recorded it may have landed without its caller
    /// hearing of it (a `tasks/update` whose future was dropped midway, an
    /// error after the commit), so every look at the stored state delivers.
    pub fn deliver_recorded(&mut self, stored: &Book) {
        for (key, record) in &stored.keys {
            if let Some(response) = &record.response
                && let Some(waiter) = self.waiters.remove(key)
            {
                // The receiver is gone if the operation moved on.
                let _ = waiter.send(response.clone());
            }
        }
    }
}

/// Responses peers persisted for the keys outstanding in `book`.
pub(super) fn stored_responses(task: &Task, book: &Book) -> Vec<(String, Value)> {
    book.outstanding
        .keys()
        .filter_map(|key| {
            task.metadata
                .get(&format!("{INPUT_RESPONSE_KEY_PREFIX}{key}"))
                .map(|value| (key.clone(), value.clone()))
        })
        .collect()
}

/// Whether a request acting for `caller` (`None`: a request with no
/// principal, from a manager with no [`PrincipalOf`](super::PrincipalOf))
/// may reach a task whose [`PRINCIPAL_KEY`] holds `stored`: only if both
/// name the same principal, or neither names one. The same principal is
/// the same string, byte for byte: no case folding, trimming or Unicode
/// normalization, which would let whoever holds one spelling reach the
/// tasks of another (the host's hook is the one judge of who a request
/// acts for, and a token's subject is compared as issued). A task bound
/// to a principal is no task to a request without one, nor to another
/// principal's; a task bound to none (made without a principal) is no task
/// to a request acting for one; a stored value that is not a string names
/// no principal any request acts for. The one rule every task request
/// keeps, at every instance.
pub(super) fn bound_to(stored: Option<&Value>, caller: Option<&str>) -> bool {
    match (stored, caller) {
        (None, None) => true,
        (Some(Value::String(stored)), Some(caller)) => stored == caller,
        _ => false,
    }
}

/// Whether a request acting for `caller` may reach `task` ([`bound_to`]).
pub(super) fn reaches(task: &Task, caller: Option<&str>) -> bool {
    bound_to(task.metadata.get(PRINCIPAL_KEY), caller)
}

/// Whether `tasks/cancel` was received for `task`, at any instance.
pub(super) fn cancel_requested(task: &Task) -> bool {
    task.metadata.get(CANCEL_REQUESTED_KEY) == Some(&Value::Bool(true))
}

/// The update a peer makes for `tasks/cancel`.
pub(super) fn cancel_update(task: &Task) -> TaskUpdate {
    // On a client's behalf, at whichever instance: never a renewal, even
    // through the owner's handle (a task it no longer runs must lapse).
    let update = TaskUpdate::new()
        .reserved_metadata(CANCEL_REQUESTED_KEY, true)
        .leave_lease();
    if task.status == TaskStatus::InputRequired {
        update.status(TaskStatus::Working)
    } else {
        update
    }
}

/// The update a peer makes for `tasks/update`: the responses for keys
/// outstanding in the stored task and not answered yet, or `None` if there
/// are none. The first answer to a key stands, as `rmcp` delivers the first
/// and ignores later ones; the peer writes it only if the task is still the
/// version read (`if_revision`), so two peers cannot both take a key.
pub(super) fn responses_update(task: &Task, responses: &[(String, Value)]) -> Option<TaskUpdate> {
    // On a client's behalf: never a renewal (see `cancel_update`).
    let mut update = TaskUpdate::new().leave_lease().if_revision(task.revision);
    let mut any = false;
    for (key, value, _) in unanswered(task, responses) {
        update =
            update.reserved_metadata(format!("{INPUT_RESPONSE_KEY_PREFIX}{key}"), value.clone());
        any = true;
    }
    any.then_some(update)
}

/// The responses a peer takes for `task`: those whose key is outstanding
/// in the stored `inputRequests` and holds no answer yet, each with its
/// request.
pub(super) fn unanswered<'a>(
    task: &'a Task,
    responses: &'a [(String, Value)],
) -> impl Iterator<Item = (&'a str, &'a Value, &'a Value)> {
    let outstanding = match (&task.input_requests, task.status) {
        (Some(Value::Object(o)), TaskStatus::InputRequired) => Some(o),
        _ => None,
    };
    responses.iter().filter_map(move |(key, value)| {
        let request = outstanding?.get(key)?;
        let copy = task
            .metadata
            .get(&format!("{INPUT_RESPONSE_KEY_PREFIX}{key}"));
        // Any value, `null` included: the owner's clearing `null` goes
        // with the key's withdrawal from `inputRequests`, so a copy of a
        // key still outstanding is a client's answer.
        copy.is_none().then_some((key.as_str(), value, request))
    })
}

/// How deep a response may nest: the owner records it two levels down,
/// under [`INPUT_KEYS_KEY`] (`{"<key>": {"response": …}}`), and the store
/// takes no value deeper than [`MAX_DEPTH`](crate::MAX_DEPTH).
pub(super) const MAX_RESPONSE_DEPTH: usize = crate::MAX_DEPTH - 2;

/// The key of the first of `responses` nested deeper than the owner's
/// record of it can hold ([`MAX_RESPONSE_DEPTH`]), with its depth.
pub(super) fn too_deep(responses: &[(String, Value)]) -> Option<(&str, usize)> {
    responses.iter().find_map(|(key, value)| {
        let depth = crate::limits::depth(value);
        (depth > MAX_RESPONSE_DEPTH).then_some((key.as_str(), depth))
    })
}

/// `update` (the owner's write recording `accepted`), which also clears the
/// copies peers stored of them (`mcp.inputResponse.<key>`, set to `null`:
/// only a key still outstanding is ever read there): a response is then
/// stored once, in its key's record.
pub(super) fn clearing_peer_copies(update: TaskUpdate, accepted: &[(String, Value)]) -> TaskUpdate {
    accepted.iter().fold(update, |update, (key, _)| {
        update.reserved_metadata(format!("{INPUT_RESPONSE_KEY_PREFIX}{key}"), Value::Null)
    })
}

/// A stable fingerprint of an input request: FNV-1a (64 bits) of its JSON
/// (object keys sorted). It tells one request from another under a reused
/// key; it is not a security measure.
pub(super) fn fingerprint(request: &Value) -> String {
    let bytes = serde_json::to_vec(request).unwrap_or_default();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("fnv1a64:{hash:016x}")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::id::TaskId;
    use crate::task::NewTask;

    impl Book {
        /// Records `request` asked under `key`, outstanding.
        fn asks(&mut self, key: &str, request: &Value) {
            let record = KeyRecord {
                fingerprint: fingerprint(request),
                response: None,
            };
            self.keys.insert(key.into(), record);
            self.outstanding.insert(key.into(), request.clone());
        }
    }

    /// A task whose run asked `request` under `key`, outstanding (as
    /// stored), and the time it was made at.
    fn asked(key: &str, request: &Value) -> (Task, time::OffsetDateTime) {
        let now = time::OffsetDateTime::now_utc();
        let mut task = NewTask::new().into_task(TaskId::parse("t").unwrap(), now);
        let mut book = Book::default();
        book.asks(key, request);
        book.update().apply(&mut task, now).unwrap();
        (task, now)
    }

    #[test]
    fn a_book_survives_the_store_and_a_key_names_one_request() {
        let q1 = json!({"method": "elicitation/create", "params": {"message": "1?"}});
        let q2 = json!({"method": "elicitation/create", "params": {"message": "2?"}});
        let mut book = Book::default();
        assert_eq!(book.ask("a", &fingerprint(&q1)), Ask::New);
        book.asks("a", &q1);

        let now = time::OffsetDateTime::now_utc();
        let mut task = NewTask::new().into_task(TaskId::parse("t").unwrap(), now);
        book.update().apply(&mut task, now).unwrap();
        assert_eq!(task.status, TaskStatus::InputRequired);
        let read = Book::of(&task);
        assert_eq!(read, book);
        assert_eq!(read.ask("a", &fingerprint(&q1)), Ask::Rejoin);
        assert_eq!(read.ask("a", &fingerprint(&q2)), Ask::Conflict);

        // A peer's response for an outstanding key is accepted once.
        responses_update(&task, &[("a".into(), json!(1)), ("zz".into(), json!(0))])
            .unwrap()
            .apply(&mut task, now)
            .unwrap();
        let mut book = Book::of(&task);
        let stored = stored_responses(&task, &book);
        assert_eq!(stored, vec![("a".to_owned(), json!(1))]);
        assert_eq!(book.accept(stored.clone()), stored);
        assert!(book.accept(vec![("a".into(), json!(2))]).is_empty());
        assert_eq!(book.ask("a", &fingerprint(&q1)), Ask::Answered(json!(1)));
        book.update().apply(&mut task, now).unwrap();
        assert_eq!(task.status, TaskStatus::Working);
        assert_eq!(task.input_requests, None);
        assert_eq!(Book::of(&task), book);
    }

    /// A `null` answer reads back as that answer, not as none. (Stored as
    /// `"response": null`, it read back as a key never answered: a resumed
    /// run asking under it was told it was withdrawn.)
    #[test]
    fn a_null_answer_reads_back_as_an_answer() {
        let q = json!({"method": "elicitation/create", "params": {"message": "?"}});
        let now = time::OffsetDateTime::now_utc();
        let mut task = NewTask::new().into_task(TaskId::parse("t").unwrap(), now);
        let mut book = Book::default();
        book.asks("k", &q);
        assert_eq!(
            book.accept(vec![("k".into(), Value::Null)]),
            [("k".to_owned(), Value::Null)]
        );
        assert_eq!(book.ask("k", &fingerprint(&q)), Ask::Answered(Value::Null));
        book.update().apply(&mut task, now).unwrap();
        // Through the store's encoding, as a fresh handle reads it.
        let stored: Task = serde_json::from_str(&serde_json::to_string(&task).unwrap()).unwrap();
        let read = Book::of(&stored);
        assert_eq!(read.ask("k", &fingerprint(&q)), Ask::Answered(Value::Null));
        assert_eq!(read, book);
    }

    /// A client's `null` answer a peer stored stands: another peer's later
    /// answer to the key writes nothing, and the owner takes the `null`.
    /// (A stored `null` read as no answer to a peer, so a later answer
    /// replaced it before the owner took either, though the first client
    /// was told its answer was taken.)
    #[test]
    fn a_null_answer_a_peer_stored_stands() {
        let q = json!({"method": "elicitation/create", "params": {"message": "?"}});
        let (mut task, now) = asked("k", &q);
        responses_update(&task, &[("k".into(), Value::Null)])
            .expect("the first answer is written")
            .apply(&mut task, now)
            .unwrap();
        assert!(
            responses_update(&task, &[("k".into(), json!("later"))]).is_none(),
            "a later answer to the key writes nothing"
        );
        let book = Book::of(&task);
        assert_eq!(
            stored_responses(&task, &book),
            [("k".to_owned(), Value::Null)]
        );
    }

    #[test]
    fn a_key_a_cancel_withdrew_is_never_asked_again() {
        let q = json!({"method": "elicitation/create", "params": {"message": "go?"}});
        let (mut task, now) = asked("go", &q);
        // A peer's cancel: the task is `working` again, the key recorded
        // without an answer.
        cancel_update(&task).apply(&mut task, now).unwrap();
        assert!(cancel_requested(&task));
        let book = Book::of(&task);
        assert!(book.outstanding.is_empty());
        assert_eq!(book.ask("go", &fingerprint(&q)), Ask::Withdrawn);
    }

    #[test]
    fn fingerprints_tell_requests_apart_and_ignore_key_order() {
        let a = json!({"x": 1, "y": [1, 2]});
        let b: Value = serde_json::from_str(r#"{"y": [1, 2], "x": 1}"#).unwrap();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&json!({"x": 2, "y": [1, 2]})));
    }
}
