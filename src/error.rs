//! The crate's one error type.

use std::io;
use std::path::PathBuf;

use crate::id::{InvalidId, TaskId};
use crate::status::TaskStatus;

/// A specialised `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `taskstore`.
///
/// Every variant names what failed: the task id, the file, or the operation.
/// A race that a caller can lose (completing a task someone else already
/// cancelled) is not an error: it is [`Transition::AlreadyTerminal`](crate::Transition).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A task id was rejected before it touched the file system.
    #[error("invalid task id {id:?}: {reason}")]
    InvalidId {
        /// The rejected input (possibly truncated for display if very long).
        id: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// A new task was refused before anything was written: what it asked
    /// for cannot be kept (a TTL under a millisecond, which would have it
    /// expired the instant it was made).
    #[error("task {id} refused: {reason}")]
    InvalidTask {
        /// The id it would have had.
        id: TaskId,
        /// Why.
        reason: &'static str,
    },

    /// The task does not exist, or has expired.
    #[error("task {id} not found (missing or expired)")]
    NotFound {
        /// The task that was asked for.
        id: TaskId,
    },

    /// A task with this id already exists (host-chosen ids must be unique).
    #[error("task {id} already exists")]
    AlreadyExists {
        /// The id that is taken.
        id: TaskId,
    },

    /// Only the task's owner (its instance id and open) may renew its lease.
    #[error("task {id} is owned by {}, not by this handle (another instance, another open of the same one, or released)", owner.as_deref().unwrap_or("no instance"))]
    NotOwner {
        /// The task.
        id: TaskId,
        /// Its owner's instance id.
        owner: Option<String>,
    },

    /// A [`TaskUpdate`](crate::TaskUpdate) asked for a terminal status; terminal
    /// states are reached only through `complete`, `fail` and `cancel`.
    #[error("update of task {id} asks for terminal status {status}: use complete, fail or cancel")]
    TerminalStatusInUpdate {
        /// The task the update was meant for.
        id: TaskId,
        /// The terminal status that was asked for.
        status: TaskStatus,
    },

    /// A [`ListQuery`](crate::ListQuery) that cannot be answered, such as a
    /// page of zero tasks.
    #[error("invalid list query: {reason}")]
    InvalidQuery {
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A list cursor was not one this store handed out.
    #[error("invalid list cursor {cursor:?}: {reason}")]
    InvalidCursor {
        /// The cursor as given (its first 200 characters).
        cursor: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The encoded task would exceed the store's payload cap; nothing was changed.
    #[error("task {id} would be {size} bytes, over the payload limit of {limit} bytes")]
    PayloadTooLarge {
        /// The task being written.
        id: TaskId,
        /// Its encoded size in bytes.
        size: usize,
        /// The configured cap (`max_payload_bytes`).
        limit: usize,
    },

    /// A JSON value in the task is nested deeper than the store reads back;
    /// nothing was changed.
    #[error("task {id} nests JSON {depth} levels deep, over the limit of {limit}")]
    TooDeep {
        /// The task being written.
        id: TaskId,
        /// How deep its deepest value nests (an array or object is one level).
        depth: usize,
        /// The limit ([`MAX_DEPTH`](crate::MAX_DEPTH)).
        limit: usize,
    },

    /// The task is at the highest revision there is: no further write can
    /// be counted. Only a file another program wrote can get there; nothing
    /// was changed.
    #[error("task {id} is at the highest revision; no further write can be applied")]
    RevisionOverflow {
        /// The task.
        id: TaskId,
    },

    /// Creating the task would exceed the cap on active (non-terminal) tasks.
    #[error("cannot create task {id}: {limit} active tasks is the configured maximum")]
    TooManyActive {
        /// The task that was not created.
        id: TaskId,
        /// The configured cap (`max_active`).
        limit: usize,
    },

    /// A file in the store is not a readable task file of this format: corrupt,
    /// truncated, empty, foreign, a directory or a symlink. In a `PgStore`,
    /// a row of the `tasks` table whose task cannot be decoded; `path` then
    /// names the row, as `<schema>.tasks row "<id>"`.
    ///
    /// `list` and `sweep_expired` set such files aside in the store's quarantine
    /// area (a `PgStore` leaves the row where it is, and reports it); `get`,
    /// mutations of that task and a create under its id report this error.
    #[error("corrupt task file {}: {reason}", path.display())]
    Corrupt {
        /// The offending file (or row).
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A file in the store is larger than any task a handle writes,
    /// whatever its payload cap ([`LARGEST_TASK`](crate::LARGEST_TASK) and
    /// the file's envelope): it is refused before it is read, and left where
    /// it is (a newer version may read it).
    #[error("task file {} is {size} bytes, over the {limit} bytes a task file may take", path.display())]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The largest task file any handle writes, so reads.
        limit: u64,
    },

    /// A file or store was written by a newer format than this version reads.
    #[error("{} has format version {found}; this taskstore reads up to {supported}: upgrade taskstore", path.display())]
    UnsupportedFormat {
        /// The file that carries the newer format.
        path: PathBuf,
        /// The format version found.
        found: u64,
        /// The newest format this build reads.
        supported: u64,
    },

    /// A store of an older format than this version's, which an open moves
    /// to this version's format (after which older versions refuse it),
    /// opened by a handle told not to move it
    /// (`FileStoreBuilder::upgrade_format(false)`); nothing was changed.
    #[error(
        "store at {} is of format {found}, older than this taskstore's {current}: opening it \
         moves it to format {current}, after which older versions refuse it, and this open \
         was told not to",
        path.display()
    )]
    OlderFormat {
        /// The store's directory.
        path: PathBuf,
        /// The format version its marker names.
        found: u64,
        /// This version's format.
        current: u64,
    },

    /// The store directory is not usable (for example a symlink or a file
    /// where one of the store's directories belongs).
    #[error("store at {} is not usable: {reason}", path.display())]
    InvalidStore {
        /// The offending path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// There is no store where one was to be opened, and the open was told
    /// not to create one; nothing was created.
    #[error("no store in {store} (and this open creates none)")]
    NoStore {
        /// Where the store was looked for.
        store: String,
    },

    /// An I/O operation failed.
    #[error("unable to {op} {}: {source}", path.display())]
    Io {
        /// The operation, for example `"fsync"` or `"rename into"`.
        op: &'static str,
        /// The path it was applied to.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// A storage backend failed: its name, the operation, and its own error.
    ///
    /// Backends other than the file store (a database, or one written
    /// outside this crate) report their failures with this variant.
    #[error("{backend} backend failed to {op}: {source}")]
    Backend {
        /// The backend, for example `"postgres"`.
        backend: &'static str,
        /// What it was doing, for example `"replace task 1234"`.
        op: String,
        /// The backend's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },

    /// A store setting is out of range; nothing was opened.
    #[error("invalid store setting: {field} {reason}")]
    InvalidConfig {
        /// The setting, for example `"instance_id"`.
        field: &'static str,
        /// What is wrong with its value.
        reason: String,
    },

    /// A task could not be encoded as JSON (a payload that JSON cannot carry).
    #[error("unable to encode task {id}: {source}")]
    Encode {
        /// The task being written.
        id: TaskId,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },

    /// A breaker config breaks one of the rules of
    /// [`BreakerConfig`](crate::BreakerConfig); nothing was created.
    #[error("invalid breaker config{}: {field} {reason}", for_breaker(.breaker.as_deref()))]
    InvalidBreakerConfig {
        /// The breaker it was given for, if it was given for one
        /// ([`BreakerRegistry::breaker_with`](crate::BreakerRegistry::breaker_with));
        /// `None` for a config checked alone or a registry's default.
        breaker: Option<String>,
        /// The offending field, for example `"failure_rate_threshold"`.
        field: &'static str,
        /// What is wrong with its value.
        reason: String,
    },

    /// A breaker name the registry does not take: empty, or longer than
    /// [`MAX_BREAKER_NAME`](crate::MAX_BREAKER_NAME) bytes (a name goes
    /// into every event and metric label of its breaker); nothing was
    /// created.
    #[error("invalid breaker name {name:?} ({len} bytes): {reason}")]
    InvalidBreakerName {
        /// The name, or its first bytes marked `...` where it was cut (64
        /// bytes at most).
        name: String,
        /// The name's whole length, in bytes.
        len: usize,
        /// What is wrong with it.
        reason: String,
    },

    /// Creating the breaker would exceed the registry's cap on breakers.
    #[error("cannot create breaker {name:?}: {limit} breakers is the configured maximum")]
    TooManyBreakers {
        /// The breaker that was not created.
        name: String,
        /// The configured cap (`max_breakers`).
        limit: usize,
    },

    /// A breaker of this name already exists with a different config.
    #[error("breaker {name:?} already exists with a different config ({field} differs)")]
    BreakerConfigConflict {
        /// The breaker's name.
        name: String,
        /// The first field of the config that differs, for example
        /// `"open_duration"`.
        field: &'static str,
    },
}

/// ` for breaker "name"`, or nothing.
fn for_breaker(breaker: Option<&str>) -> String {
    breaker.map_or_else(String::new, |name| format!(" for breaker {name:?}"))
}

impl From<InvalidId> for Error {
    fn from(invalid: InvalidId) -> Error {
        Error::InvalidId {
            id: invalid.id,
            reason: invalid.reason,
        }
    }
}

impl Error {
    /// A backend's failure to do `op`, with its own error as the source.
    pub fn backend(
        backend: &'static str,
        op: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Error::Backend {
            backend,
            op: op.into(),
            source: source.into(),
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// This error again, for each of several operations one failure ended
    /// (a batch whose shared fsync failed): an I/O error keeps its
    /// operation, path, kind and OS error code; any other becomes an
    /// [`Error::Io`] of `op` on `path` carrying its message.
    pub(crate) fn for_each_of(&self, op: &'static str, path: &std::path::Path) -> Self {
        match self {
            Error::Io { op, path, source } => Error::Io {
                op,
                path: path.clone(),
                source: match source.raw_os_error() {
                    Some(code) => io::Error::from_raw_os_error(code),
                    None => io::Error::new(source.kind(), source.to_string()),
                },
            },
            other => Error::io(op, path, io::Error::other(other.to_string())),
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
