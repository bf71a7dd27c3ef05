//! The task file format: `{"format":1,"task":{...}}` (see FORMAT.md).

use std::path::Path;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::file::layout::FORMAT_VERSION;
use crate::id::TaskId;
use crate::task::Task;

const PREFIX: &[u8] = b"{\"format\":1,\"task\":";
const SUFFIX: &[u8] = b"}\n";

/// How many bytes the envelope adds to a task's JSON.
pub(crate) const OVERHEAD: usize = PREFIX.len() + SUFFIX.len();

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
    if bytes.is_empty() {
        return Err(Error::corrupt(path, "empty file"));
    }
    let envelope: Envelope<'_> = serde_json::from_slice(bytes)
        .map_err(|e| Error::corrupt(path, format!("not a task file: {e}")))?;
    let format = envelope
        .format
        .ok_or_else(|| Error::corrupt(path, "no format version"))?;
    if format > FORMAT_VERSION {
        return Err(Error::UnsupportedFormat {
            path: path.to_owned(),
            found: format,
            supported: FORMAT_VERSION,
        });
    }
    if format == 0 {
        return Err(Error::corrupt(path, "format version 0"));
    }
    let raw = envelope
        .task
        .ok_or_else(|| Error::corrupt(path, "no task"))?;
    let task: Task = serde_json::from_str(raw.get())
        .map_err(|e| Error::corrupt(path, format!("invalid task: {e}")))?;
    if &task.id != expected {
        return Err(Error::corrupt(
            path,
            format!("holds task {} instead of {expected}", task.id),
        ));
    }
    Ok(task)
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
