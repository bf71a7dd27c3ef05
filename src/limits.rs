//! The bounds the rules enforce on every backend.

use serde_json::Value;

use crate::backend::Record;
use crate::error::{Error, Result};
use crate::task::Task;

/// Default cap on active (non-terminal) tasks.
pub const DEFAULT_MAX_ACTIVE: usize = 10_000;
/// Default cap on one task's encoded size: 16 MiB.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 16 * 1024 * 1024;
/// The smallest payload cap a store accepts (smaller settings are raised to
/// it).
pub const MIN_MAX_PAYLOAD_BYTES: usize = 4 * 1024;
/// The largest payload cap a store accepts (larger settings are lowered to it).
pub const MAX_MAX_PAYLOAD_BYTES: usize = 1 << 30;
/// How far past the payload cap the store's own changes to a task it
/// accepted may take it: a renewed lease's longer timestamp, a new owner's
/// identity, an orphan's error. A host's writes get none of it while a task
/// runs (over a task the store's own change took past the cap, a running
/// write may not make it larger), and all of it for the outcome, so a task
/// the store accepted can always be renewed, claimed, reaped, and finished
/// by the owner that claimed it. Over a task past the cap (another
/// handle's larger cap let it in), both count from the task's size
/// instead, up to [`LARGEST_TASK`].
///
/// The largest of these, an orphan error naming a 128-character task id and
/// two 256-byte instance ids made of characters JSON escapes, is under
/// 2 KiB; `tests/leases/` (`a_reaped_orphan_at_the_cap_keeps_everything`)
/// builds it.
///
/// A failure with an error of at most [`SMALL_ERROR_BYTES`] gets it too,
/// whoever writes it: as the reaper can always fail an orphan, a host can
/// always fail a task it runs, with why, when the store refused its
/// outcome (a task filled to the cap by its status message or metadata).
pub const OWN_HEADROOM: usize = 4 * 1024;

/// The largest task (its JSON, in bytes) any handle writes, whatever its
/// cap: [`MAX_MAX_PAYLOAD_BYTES`] plus [`OWN_HEADROOM`]. Every handle reads
/// tasks up to it, so a task one handle wrote reads back through any other,
/// whatever their caps.
pub const LARGEST_TASK: usize = MAX_MAX_PAYLOAD_BYTES + OWN_HEADROOM;

/// The largest error (its JSON, in bytes: 1 KiB) that fails any running
/// task, however near the payload cap: the failed task may go
/// [`OWN_HEADROOM`] past the cap, as an orphan's may. A larger error, and
/// any other outcome, must fit the cap.
pub const SMALL_ERROR_BYTES: usize = 1024;

/// How deep a JSON value in a task (a result, error, input request, one
/// metadata value, a resumable task's input or checkpoint) may nest: each
/// array or object is one level.
///
/// Deeper values are refused with [`Error::TooDeep`] when written, because a
/// task must always read back, and JSON decoders (this crate's included)
/// stop at a recursion limit.
pub const MAX_DEPTH: usize = 100;

/// The caps the rules enforce; hitting one is a typed error that changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    pub max_active: usize,
    pub max_payload_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_active: DEFAULT_MAX_ACTIVE,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
        }
    }
}

impl Limits {
    /// Sets the payload cap, within [`MIN_MAX_PAYLOAD_BYTES`] and
    /// [`MAX_MAX_PAYLOAD_BYTES`].
    pub fn set_max_payload_bytes(&mut self, bytes: usize) {
        self.max_payload_bytes = bytes.clamp(MIN_MAX_PAYLOAD_BYTES, MAX_MAX_PAYLOAD_BYTES);
    }

    /// Fits the payload cap to a backend that holds tasks of up to
    /// `largest` bytes: lowered, if need be, to leave [`OWN_HEADROOM`]
    /// under it, so that every task the store accepts can be renewed,
    /// claimed, reaped and finished there. A backend that holds less than
    /// the smallest cap and the headroom is refused.
    pub fn fit(&mut self, largest: usize) -> Result<()> {
        let least = MIN_MAX_PAYLOAD_BYTES + OWN_HEADROOM;
        if largest < least {
            return Err(Error::InvalidConfig {
                field: "largest_task",
                reason: format!(
                    "the backend holds tasks of at most {largest} bytes, under the least a \
                     store needs ({least} bytes: MIN_MAX_PAYLOAD_BYTES and OWN_HEADROOM)"
                ),
            });
        }
        self.max_payload_bytes = self.max_payload_bytes.min(largest - OWN_HEADROOM);
        Ok(())
    }

    /// `task` as a backend stores it, if it is within the caps: no value
    /// nested over [`MAX_DEPTH`], and its JSON no larger than the payload cap.
    pub fn record(&self, task: Task) -> Result<Record> {
        self.record_within(task, self.max_payload_bytes)
    }

    /// `task` as a backend stores it, copied whole from another store
    /// ([`Store::copy_from`](crate::Store::copy_from)): within the cap plus
    /// [`OWN_HEADROOM`], the most the store's own changes take a task it
    /// accepted (an orphan reaped at the cap, a lease renewed under a long
    /// instance id), so that a task a store with this cap holds is taken,
    /// and no larger one.
    pub fn record_copy(&self, task: Task) -> Result<Record> {
        self.record_within(task, self.max_payload_bytes + OWN_HEADROOM)
    }

    /// `task` as a backend stores it, after a change the store made itself
    /// to `current` (see [`OWN_HEADROOM`]): within the cap plus the
    /// headroom, or, over a task another handle's larger cap let in, within
    /// that task's size plus the headroom (a renewal, claim or reap of a
    /// task the store accepted is never refused for a size the store gave
    /// it). Never past [`LARGEST_TASK`], which every handle reads.
    pub fn record_own(&self, task: Task, current: &Task) -> Result<Record> {
        check_depth(&task)?;
        let json = encode(&task)?;
        let limit = self.max_payload_bytes + OWN_HEADROOM;
        if json.len() > limit {
            let had = encode(current).map_or(0, |had| had.len());
            let limit = had.saturating_add(OWN_HEADROOM).clamp(limit, LARGEST_TASK);
            if json.len() > limit {
                return Err(too_large(&task, json.len(), limit));
            }
        }
        Ok(Record::new(task, json))
    }

    /// `task` as a backend stores it, written by a host over `current`:
    /// within the cap, or, where `current` is past it (the store's own
    /// change, a claim naming a long instance id, took it there, or another
    /// handle's larger cap let it in), no larger than `current` while it
    /// runs (the room left past it is the store's own, for the renewals,
    /// claims and reap still to come), and within the store's headroom over
    /// it once it ends (nothing of the store's comes after): its new
    /// owner's checkpoints that do not grow it, and its outcome, are not
    /// refused for a size the store gave the task. A failure with a small
    /// error ([`SMALL_ERROR_BYTES`]) gets the headroom over any task.
    pub fn record_over(&self, task: Task, current: &Task) -> Result<Record> {
        check_depth(&task)?;
        let json = encode(&task)?;
        let cap = self.max_payload_bytes;
        if json.len() > cap {
            let had = encode(current).map_or(0, |had| had.len());
            let limit = match (had > cap, task.is_terminal()) {
                (true, false) => had,
                (true, true) => had.saturating_add(OWN_HEADROOM).min(LARGEST_TASK),
                (false, _) if is_small_failure(&task) => cap + OWN_HEADROOM,
                (false, _) => cap,
            };
            if json.len() > limit {
                return Err(too_large(&task, json.len(), limit));
            }
        }
        Ok(Record::new(task, json))
    }

    fn record_within(&self, task: Task, limit: usize) -> Result<Record> {
        check_depth(&task)?;
        let json = encode(&task)?;
        if json.len() > limit {
            return Err(too_large(&task, json.len(), limit));
        }
        Ok(Record::new(task, json))
    }
}

/// `task`, encoded in `size` bytes, refused for a write held to `limit`.
fn too_large(task: &Task, size: usize, limit: usize) -> Error {
    Error::PayloadTooLarge {
        id: task.id.clone(),
        size,
        limit,
    }
}

/// Whether `task` is failed with an error of at most [`SMALL_ERROR_BYTES`]:
/// a failure that fits over any task the store accepted, within the cap
/// plus [`OWN_HEADROOM`] (ending a task drops its lease, resume state and
/// input requests, and adds no more than the error and a longer
/// timestamp).
fn is_small_failure(task: &Task) -> bool {
    task.status == crate::status::TaskStatus::Failed
        && task.error.as_ref().is_some_and(is_small_error)
}

/// Whether `error` encodes in at most [`SMALL_ERROR_BYTES`]: the error of a
/// failure the store takes over any task.
pub(crate) fn is_small_error(error: &serde_json::Value) -> bool {
    serde_json::to_vec(error).is_ok_and(|json| json.len() <= SMALL_ERROR_BYTES)
}

/// `task`'s JSON, as stored.
fn encode(task: &Task) -> Result<Vec<u8>> {
    serde_json::to_vec(task).map_err(|source| Error::Encode {
        id: task.id.clone(),
        source,
    })
}

/// Refuses a task with a value nested deeper than [`MAX_DEPTH`].
fn check_depth(task: &Task) -> Result<()> {
    let resume = task.resume.as_ref();
    let values = [&task.result, &task.error, &task.input_requests]
        .into_iter()
        .flatten()
        .chain(resume.map(|r| &r.input))
        .chain(resume.and_then(|r| r.checkpoint.as_ref()))
        .chain(task.metadata.values());
    // The deepest of them all, as the error says (not the first too deep).
    let deepest = values.map(depth).max().unwrap_or(0);
    if deepest > MAX_DEPTH {
        return Err(Error::TooDeep {
            id: task.id.clone(),
            depth: deepest,
            limit: MAX_DEPTH,
        });
    }
    Ok(())
}

/// How deep `value` nests: 0 for a scalar, 1 for a flat array or object.
/// Iterative, so a value of any depth is measured without recursion.
pub(crate) fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((value, above)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        let level = above + 1;
        deepest = deepest.max(level);
        stack.extend(children.map(|child| (child, level)));
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nested(levels: usize) -> Value {
        let mut v = json!(1);
        for i in 0..levels {
            v = if i % 2 == 0 {
                json!([v])
            } else {
                json!({ "k": v })
            };
        }
        v
    }

    #[test]
    fn depth_counts_arrays_and_objects() {
        assert_eq!(depth(&json!(1)), 0);
        assert_eq!(depth(&json!([])), 1);
        assert_eq!(depth(&json!({"a": [1, {"b": 2}]})), 3);
        assert_eq!(depth(&nested(7)), 7);
        // Measured without recursion (building and dropping one recurse, so not deeper).
        assert_eq!(depth(&nested(500)), 500);
    }

    #[test]
    fn too_deep_names_the_deepest_value_not_the_first() {
        let mut task: Task = serde_json::from_value(json!({
            "taskId": "deep", "status": "working",
            "createdAt": "2026-01-01T00:00:00Z", "lastUpdatedAt": "2026-01-01T00:00:00Z",
            "ttlMs": null, "revision": 1,
        }))
        .unwrap();
        task.metadata.insert("a".into(), nested(MAX_DEPTH + 1));
        task.metadata.insert("b".into(), nested(MAX_DEPTH + 9));
        task.result = Some(nested(MAX_DEPTH + 3));
        match check_depth(&task) {
            Err(Error::TooDeep { depth, limit, .. }) => {
                assert_eq!((depth, limit), (MAX_DEPTH + 9, MAX_DEPTH));
            }
            other => panic!("{other:?}"),
        }
    }
}
