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

    /// A new task, or a write to one, was refused before anything was
    /// written: what it asked for cannot be kept (a TTL under a
    /// millisecond, which would have it expired the instant it was made; a
    /// checkpoint of a task that is not resumable, which has no place for
    /// it).
    #[error("task {id} refused: {reason}")]
    InvalidTask {
        /// The task (or the id it would have had).
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

    /// A host's create or update set a metadata key reserved for the MCP
    /// task manager (a key beginning with `mcp.`: the cancel request, input
    /// responses and keys, and the principal a task is bound to, FORMAT.md);
    /// nothing was written. Only the manager writes them; a host's write
    /// keeps those a task holds (metadata keys merge).
    #[error(
        "{op} of task {id} refused: metadata key {key:?} is reserved for the MCP task \
         manager (keys beginning with \"mcp.\"); nothing was written"
    )]
    ReservedMetadata {
        /// The operation: `"create"` or `"update"`.
        op: &'static str,
        /// The task (or the id it would have had).
        id: TaskId,
        /// The reserved key (its first 160 bytes, marked `...` where cut).
        key: String,
    },

    /// A [`ListQuery`](crate::ListQuery) that cannot be answered, such as a
    /// page of zero tasks.
    #[error("invalid list query: {reason}")]
    InvalidQuery {
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A list cursor does not decode as one a store hands out (a
    /// well-formed cursor is a position, accepted whoever handed it out).
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
        /// The most this write may take: the configured cap
        /// (`max_payload_bytes`), or more where the store lets a write past
        /// it (its own changes, a small failure, a write over a task
        /// another handle's larger cap let in: see `OWN_HEADROOM`).
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

    /// Creating the task, or copying it in
    /// ([`Store::copy_from`](crate::Store::copy_from)), would exceed the cap
    /// on active (non-terminal) tasks.
    #[error("cannot {op} task {id}: {limit} active tasks is the configured maximum")]
    TooManyActive {
        /// The operation refused: `"create"`, or `"copy"`.
        op: &'static str,
        /// The task that was not created, or not copied.
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
        /// The file that carries the newer format (`postgres schema <name>
        /// at <server>` for PostgreSQL: never the password).
        path: PathBuf,
        /// The format version found.
        found: u64,
        /// The newest format this build reads.
        supported: u64,
    },

    /// A store of an older format than this version's, which an open moves
    /// to this version's format (after which older versions refuse it),
    /// opened by a handle told not to move it
    /// (`FileStoreBuilder::upgrade_format(false)`; a PostgreSQL schema of an
    /// older version, `PgStoreBuilder::upgrade_format(false)`); nothing was
    /// changed.
    #[error(
        "store at {} is of format {found}, older than this taskstore's {current}: opening it \
         moves it to format {current}, after which older versions refuse it, and this open \
         was told not to",
        path.display()
    )]
    OlderFormat {
        /// The store's directory (`postgres schema <name> at <server>` for
        /// PostgreSQL: the server and database, never the password).
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

    /// A breaker name the registry does not take: empty, longer than
    /// [`MAX_BREAKER_NAME`](crate::MAX_BREAKER_NAME) bytes, or with a
    /// control character (Unicode `Cc`, a newline among them) or a line or
    /// paragraph separator (U+2028, U+2029), which the reason names with
    /// its byte offset (a name goes as it is into every event, metric
    /// label and `tracing` field of its breaker); nothing was created.
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

/// What a backend knows of one of its failures beyond the failure itself,
/// carried with it ([`Error::known`]) for the code that must not take the
/// failure for one that may have changed the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Known {
    /// The statement it was about to run was never sent (no connection:
    /// none free, a connect refused; or its preparation, or the look at
    /// its connection before it, failed): that statement changed nothing.
    /// Not the call as a whole, which may have sent another before.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))] // marked by `PgBackend` alone
    Unsent,
    /// No connection could be had for the statement: a connect failed
    /// (the server down or out of reach), or every pooled connection
    /// stayed busy for the pool's wait. Beside [`Known::Unsent`]; the
    /// writes of a failed batch, each made alone, stop asking for one once
    /// one is so marked.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))] // marked by `PgBackend` alone
    Unconnected,
    /// The call as a whole changed nothing in the store: nothing it sent
    /// was applied (every statement refused, or never sent). A failed claim
    /// so marked is not left to lapse, and a failed create so marked is not
    /// undone ([`Error::known_to_have_changed_nothing`], the public way to
    /// mark it).
    ChangedNothing,
}

/// A backend's own error under what the backend knows of it ([`Known`]).
/// It shows as the error it wraps, and its source is that error's, so a
/// mark changes nothing a caller reads.
#[derive(Debug)]
struct Marked {
    known: Known,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl std::fmt::Display for Marked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.source.fmt(f)
    }
}

impl std::error::Error for Marked {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.source()
    }
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

    /// The file (or directory) this error names, if it names one: what a
    /// report of a file that failed to read points at.
    pub(crate) fn path(&self) -> Option<&std::path::Path> {
        match self {
            Error::Corrupt { path, .. }
            | Error::FileTooLarge { path, .. }
            | Error::UnsupportedFormat { path, .. }
            | Error::OlderFormat { path, .. }
            | Error::InvalidStore { path, .. }
            | Error::Io { path, .. } => Some(path),
            _ => None,
        }
    }

    /// This error, marked with what its backend knows of it ([`Known`]).
    /// Only a [`Error::Backend`] carries a mark; any other is kept as it is.
    pub(crate) fn known(self, known: Known) -> Self {
        match self {
            Error::Backend {
                backend,
                op,
                source,
            } => Error::Backend {
                backend,
                op,
                source: Box::new(Marked { known, source }),
            },
            other => other,
        }
    }

    /// Whether this error's backend marked it with `known` ([`Error::known`]).
    pub(crate) fn is_known(&self, known: Known) -> bool {
        let mut found = false;
        self.unmarked(|mark| found |= mark == known);
        found
    }

    /// This error, marked as known to have changed nothing in the store:
    /// for a [`Backend`](crate::backend::Backend) whose call failed having
    /// applied nothing (its one statement refused, or never sent). The
    /// store's rules then neither leave a failed claim to lapse (the same
    /// claim, made and reported by another pass of the handle, stays that
    /// pass's to renew) nor undo a failed create with a removal. Mark only
    /// what is certain: a failure that may have come after the change was
    /// made (a reply lost) must stay unmarked, and is then handled as one
    /// that may stand. Only an [`Error::Backend`] carries the mark (it shows
    /// and chains as the error it wraps); any other error is returned as it
    /// is.
    pub fn known_to_have_changed_nothing(self) -> Self {
        self.known(Known::ChangedNothing)
    }

    /// Whether the call that failed so is known to have changed nothing in
    /// the store ([`Error::known_to_have_changed_nothing`]): an error that
    /// is not so marked may have come after the change was made (a reply
    /// lost).
    pub fn changed_nothing(&self) -> bool {
        self.is_known(Known::ChangedNothing)
    }

    /// A backend failure's own error, under any mark ([`Error::known`]).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))] // read by `PgBackend` alone
    pub(crate) fn backend_source(
        &self,
    ) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.unmarked(|_| {})
    }

    /// A backend failure's own error, each of its marks handed to `mark`
    /// on the way to it.
    fn unmarked(
        &self,
        mut mark: impl FnMut(Known),
    ) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        let Error::Backend { source, .. } = self else {
            return None;
        };
        let mut source: &(dyn std::error::Error + Send + Sync + 'static) = source.as_ref();
        while let Some(marked) = source.downcast_ref::<Marked>() {
            mark(marked.known);
            source = marked.source.as_ref();
        }
        Some(source)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A mark changes nothing a caller reads (the message, the source
    /// chain), is found under another, and only a backend failure carries
    /// one.
    #[test]
    fn a_mark_is_found_and_changes_nothing_a_caller_reads() {
        let inner = io::Error::other("connection refused");
        let plain = Error::backend("postgres", "insert task a", inner);
        let shown = plain.to_string();
        let marked = Error::backend(
            "postgres",
            "insert task a",
            io::Error::other("connection refused"),
        )
        .known(Known::Unsent)
        .known(Known::ChangedNothing);
        assert_eq!(marked.to_string(), shown);
        assert!(marked.is_known(Known::Unsent) && marked.changed_nothing());
        assert!(!plain.is_known(Known::Unsent) && !plain.changed_nothing());
        assert_eq!(
            marked.backend_source().map(ToString::to_string),
            Some("connection refused".to_owned())
        );
        let sources = |e: &Error| {
            let mut chain = Vec::new();
            let mut at = std::error::Error::source(e);
            while let Some(source) = at {
                chain.push(source.to_string());
                at = source.source();
            }
            chain
        };
        assert_eq!(sources(&marked), sources(&plain));
        let only_unsent = Error::backend("postgres", "op", "x").known(Known::Unsent);
        assert!(!only_unsent.changed_nothing());
        let io = Error::io("fsync", "/x", io::Error::other("x")).known(Known::ChangedNothing);
        assert!(
            !io.changed_nothing(),
            "only a backend failure carries a mark"
        );
    }
}
