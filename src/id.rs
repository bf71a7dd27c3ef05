//! Task identifiers: validated before they ever reach the file system.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest id accepted, in bytes (every accepted character is ASCII).
pub const MAX_ID_LEN: usize = 128;

/// A task identifier.
///
/// Either store-generated ([`TaskId::new`], a random UUID v4) or chosen by the
/// host and validated by [`TaskId::parse`]: 1 to 128 characters of
/// `[A-Za-z0-9_.-]`, not starting with `.`. Such an id is always a single,
/// harmless file name: no separators, no `..`, no NUL, nothing hidden.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId(Box<str>);

impl TaskId {
    /// A new random id: a UUID v4, lowercase and hyphenated.
    #[allow(clippy::new_without_default)]
    pub fn new() -> TaskId {
        TaskId(
            uuid::Uuid::new_v4()
                .hyphenated()
                .to_string()
                .into_boxed_str(),
        )
    }

    /// Validates a host-chosen id.
    ///
    /// # Errors
    ///
    /// [`InvalidId`] for an empty or over-long id, a leading `.`, or any
    /// character outside `[A-Za-z0-9_.-]`. It converts into
    /// [`Error::InvalidId`](crate::Error::InvalidId), so `?` in a function
    /// returning the crate's [`Result`](crate::Result) passes it on.
    pub fn parse(id: &str) -> Result<TaskId, InvalidId> {
        validate(id).map_err(|reason| InvalidId {
            id: shorten(id),
            reason,
        })?;
        Ok(TaskId(id.into()))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// An id already found valid: the text of a `TaskId`, kept apart from
    /// it (a pass's ids packed in one buffer, say).
    pub(crate) fn trusted(id: &str) -> TaskId {
        debug_assert!(validate(id).is_ok(), "{id:?} was never a valid id");
        TaskId(id.into())
    }
}

/// A host-chosen id that [`TaskId::parse`] rejected. Its own type (not the
/// crate's [`Error`](crate::Error), which it converts into) so that ids sit
/// below the error type that names them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid task id {id:?}: {reason}")]
#[non_exhaustive]
pub struct InvalidId {
    /// The rejected input (truncated to 160 bytes and `...` if longer).
    pub id: String,
    /// Why it was rejected.
    pub reason: &'static str,
}

/// Whether each byte may be in an id: `[A-Za-z0-9_.-]`. A table, because
/// every id read from a file or a file name is checked byte by byte (a
/// listing's page checks a hundred).
const ALLOWED: [bool; 256] = {
    let mut allowed = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        allowed[b] = c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-');
        b += 1;
    }
    allowed
};

fn validate(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        return Err("empty");
    }
    if id.len() > MAX_ID_LEN {
        return Err("longer than 128 characters");
    }
    if id.starts_with('.') {
        return Err("starts with '.'");
    }
    if !id.bytes().all(|b| ALLOWED[usize::from(b)]) {
        return Err("only A-Z, a-z, 0-9, '_', '.' and '-' are allowed");
    }
    Ok(())
}

/// Keeps error messages bounded when the rejected input is huge.
pub(crate) fn shorten(id: &str) -> String {
    bounded(id, 160)
}

/// `text`, cut to at most `keep` bytes (on a character boundary) and marked
/// `...` where it was cut.
pub(crate) fn bounded(text: &str, keep: usize) -> String {
    if text.len() <= keep {
        return text.to_owned();
    }
    let mut end = keep;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskId({:?})", &*self.0)
    }
}

impl FromStr for TaskId {
    type Err = InvalidId;

    fn from_str(s: &str) -> Result<TaskId, InvalidId> {
        TaskId::parse(s)
    }
}

impl AsRef<str> for TaskId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for TaskId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TaskId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<TaskId, D::Error> {
        let raw = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        TaskId::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_lowercase_uuid_v4() {
        let id = TaskId::new();
        let parsed = uuid::Uuid::parse_str(id.as_str()).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(id.as_str(), id.as_str().to_lowercase());
        assert_eq!(id.as_str().len(), 36);
        assert!(TaskId::parse(id.as_str()).is_ok());
    }

    #[test]
    fn invalid_ids_are_rejected() {
        let long = "a".repeat(129);
        for bad in [
            "", "..", ".", ".hidden", "a/b", "a\\b", "a\0b", "ü", "a b", "a:b", &long,
        ] {
            match TaskId::parse(bad) {
                Err(InvalidId { .. }) => {}
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        assert!(TaskId::parse(&"a".repeat(128)).is_ok());
        assert!(TaskId::parse("a..b").is_ok());
        assert!(TaskId::parse("Job_1.2-x").is_ok());
    }

    #[test]
    fn serde_validates() {
        let id: TaskId = serde_json::from_str("\"abc\"").unwrap();
        assert_eq!(id.as_str(), "abc");
        assert!(serde_json::from_str::<TaskId>("\"../x\"").is_err());
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"abc\"");
    }
}
