//! The task file format: `{"format":1,"task":{...}}` (see FORMAT.md).

use std::path::Path;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::file::layout::TASK_FORMAT;
use crate::id::TaskId;
use crate::task::{Task, TaskStatus, expiry};
use time::OffsetDateTime;

const PREFIX: &[u8] = b"{\"format\":1,\"task\":";
const SUFFIX: &[u8] = b"}\n";

/// How many bytes the envelope adds to a task's JSON.
pub(crate) const OVERHEAD: usize = PREFIX.len() + SUFFIX.len();

/// The largest task file any handle writes, whatever its payload cap (the
/// largest task, [`LARGEST_TASK`](crate::LARGEST_TASK), in its envelope),
/// so the largest every handle reads: a task one handle wrote reads back
/// through any other.
pub(crate) const LARGEST_FILE: u64 = (crate::limits::LARGEST_TASK + OVERHEAD) as u64;

/// Wraps a task's JSON (as produced by `Limits::encode`) into a task file.
pub(crate) fn wrap(task_json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PREFIX.len() + task_json.len() + SUFFIX.len());
    out.extend_from_slice(PREFIX);
    out.extend_from_slice(task_json);
    out.extend_from_slice(SUFFIX);
    out
}

#[derive(Deserialize)]
struct Envelope<'a> {
    format: Option<u64>,
    #[serde(borrow)]
    task: Option<&'a RawValue>,
}

/// Reads a task file's bytes, checking the format and that the task inside
/// is the one the file is named for.
pub(crate) fn unwrap(bytes: &[u8], path: &Path, expected: &TaskId) -> Result<Task> {
    let task: Task = match inner(bytes).and_then(|json| serde_json::from_str(json).ok()) {
        Some(task) => task,
        None => serde_json::from_str(envelope(bytes, path)?.get())
            .map_err(|e| Error::corrupt(path, format!("invalid task: {e}")))?,
    };
    if &task.id != expected {
        return Err(Error::corrupt(
            path,
            format!("holds task {} instead of {expected}", task.id),
        ));
    }
    Ok(task)
}

/// What a listing needs of a task to order, count and filter it, without
/// decoding the task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Keys {
    pub created_at: OffsetDateTime,
    pub status: TaskStatus,
    pub revision: u64,
    pub expires_at: Option<OffsetDateTime>,
    pub lease_expires_at: Option<OffsetDateTime>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyFields {
    #[serde(rename = "taskId")]
    id: TaskId,
    status: TaskStatus,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(default)]
    ttl_ms: Option<u64>,
    revision: u64,
    #[serde(default, with = "time::serde::rfc3339::option")]
    lease_expires_at: Option<OffsetDateTime>,
}

/// The [`Keys`] of a task file's bytes, checking the format and the id as
/// [`unwrap`] does, but decoding only the fields a listing orders and
/// filters by (the JSON is still checked whole).
pub(crate) fn keys(bytes: &[u8], path: &Path, expected: &TaskId) -> Result<Keys> {
    let fields: KeyFields = match inner(bytes).and_then(|json| serde_json::from_str(json).ok()) {
        Some(fields) => fields,
        None => serde_json::from_str(envelope(bytes, path)?.get())
            .map_err(|e| Error::corrupt(path, format!("invalid task: {e}")))?,
    };
    if &fields.id != expected {
        return Err(Error::corrupt(
            path,
            format!("holds task {} instead of {expected}", fields.id),
        ));
    }
    let expires_at = expiry(
        fields.created_at,
        fields.ttl_ms.map(std::time::Duration::from_millis),
    );
    Ok(Keys {
        created_at: fields.created_at,
        status: fields.status,
        revision: fields.revision,
        expires_at,
        lease_expires_at: fields.lease_expires_at,
    })
}

/// The task's JSON in a file exactly as [`wrap`] writes it (format 1):
/// decoded alone, it saves reading the whole file twice (once for the
/// envelope, once for the task). Any other file, or one whose task does not
/// decode alone, goes through [`envelope`], which judges it.
/// (Its UTF-8 is checked at once, which is cheaper than string by string.)
fn inner(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?).ok()
}

/// The task inside a task file's envelope, once the format is checked.
fn envelope<'a>(bytes: &'a [u8], path: &Path) -> Result<&'a RawValue> {
    if bytes.is_empty() {
        return Err(Error::corrupt(path, "empty file"));
    }
    // An object, not whatever else `serde` reads a struct from (an array).
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Error::corrupt(path, "not a task file: not a JSON object"));
    }
    let envelope: Envelope<'a> = serde_json::from_slice(bytes)
        .map_err(|e| Error::corrupt(path, format!("not a task file: {e}")))?;
    let format = envelope
        .format
        .ok_or_else(|| Error::corrupt(path, "no format version"))?;
    if format > TASK_FORMAT {
        return Err(Error::UnsupportedFormat {
            path: path.to_owned(),
            found: format,
            supported: TASK_FORMAT,
        });
    }
    if format == 0 {
        return Err(Error::corrupt(path, "format version 0"));
    }
    envelope.task.ok_or_else(|| Error::corrupt(path, "no task"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::NewTask;

    #[test]
    fn round_trip_and_rejections() {
        let id = TaskId::parse("t").unwrap();
        let task = NewTask::new().into_task(id.clone(), time::OffsetDateTime::UNIX_EPOCH);
        let bytes = wrap(&serde_json::to_vec(&task).unwrap());
        let p = Path::new("x");
        assert_eq!(unwrap(&bytes, p, &id).unwrap(), task);
        let keys = keys(&bytes, p, &id).unwrap();
        assert_eq!(
            (keys.created_at, keys.status, keys.expires_at),
            (task.created_at, task.status, task.expires_at())
        );
        let other = TaskId::parse("u").unwrap();
        assert!(matches!(
            unwrap(&bytes, p, &other),
            Err(Error::Corrupt { .. })
        ));
        assert!(matches!(
            unwrap(&bytes[..bytes.len() - 3], p, &id),
            Err(Error::Corrupt { .. })
        ));
        assert!(matches!(unwrap(b"", p, &id), Err(Error::Corrupt { .. })));
        assert!(matches!(
            unwrap(b"{\"a\":1}", p, &id),
            Err(Error::Corrupt { .. })
        ));
        assert!(matches!(
            unwrap(b"{\"format\":2,\"task\":{\"whatever\":true}}", p, &id),
            Err(Error::UnsupportedFormat { found: 2, .. })
        ));
    }
}
