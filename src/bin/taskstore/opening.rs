//! How a command opens a store: a handle ([`open`], or an [`Opening`] for
//! one that asks more of it), a check ([`check`]) or a census ([`census`])
//! of a file store, waiting for an open that holds the store alone and
//! saying so; what it does with a store of an older format ([`Older`]);
//! and what is no store at all ([`is_store`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use taskstore::{FileStore, StoreBuilder};

use crate::heard::Heard;
use crate::text;
use crate::{Failure, Handle, Target};

/// The instance id of the CLI's handles, recorded by what they write
/// (`reapedBy` of a reaped task, say).
fn instance_id() -> String {
    format!("taskstore-cli-{}", std::process::id())
}

/// How long an open waits for another that holds a file store alone
/// (compacting it, moving its format): moments, unless that process is
/// stopped in the middle; past it, the command fails naming the lock.
const OPEN_WAIT: Duration = Duration::from_secs(30);

/// What an open of a file store says when it starts waiting, up to `wait`,
/// for another open that holds the store alone (`lock`: its
/// `locks/handles.lock`): such a wait is silent until it ends otherwise.
pub fn say_open_wait(wait: Duration) -> impl Fn(&Path) + Send + Sync + 'static {
    move |lock| {
        text::err(format!(
            "taskstore: waiting up to {} for another open that holds the store alone ({}: \
             compacting its directories or moving its format)",
            text::duration(wait),
            lock.display()
        ));
    }
}

/// A check of the file store at `dir`, waiting up to [`OPEN_WAIT`] for an
/// open that holds it alone, and saying so.
fn check(dir: &Path) -> taskstore::Result<taskstore::FileCheck> {
    taskstore::FileCheck::open_within_noting(dir, OPEN_WAIT, say_open_wait(OPEN_WAIT))
}

/// Opens the store as a normal handle (with this claim grace, if given),
/// which says what `heard` asks as it goes. A
/// store must exist already (a file store's directory was looked at by
/// [`is_store`]): a mistyped path or schema is an error, never a new store.
/// A file store of an older format is moved to this version's only with
/// `upgrade`, and the wait for the other processes to close it is said on
/// stderr.
pub fn open(
    target: &Target,
    claim_grace: Option<Duration>,
    upgrade: bool,
    heard: Heard,
) -> Result<Box<dyn Handle>, Failure> {
    let mut opening = Opening::new(heard);
    opening.claim_grace = claim_grace;
    opening.older = Older::given(upgrade);
    Ok(opening.open(target)?.boxed())
}

/// How [`open`] opens a store, for a command that asks more of it
/// (`copy`: the store as its concrete type, its caps, a store made if
/// missing).
pub struct Opening {
    pub claim_grace: Option<Duration>,
    /// What the open does with a store of an older format.
    pub older: Older,
    pub heard: Arc<Heard>,
    /// The handle's active-task cap (default: the library's).
    pub max_active: Option<usize>,
    /// The handle's payload cap: by default the largest, so that the
    /// command's own writes (a cancel's message) are held to no smaller one
    /// than a service's.
    pub max_payload_bytes: usize,
    /// Makes a PostgreSQL store if it is missing (`copy --create`; a file
    /// store is made by any open, once its command let it through).
    pub create: bool,
    /// The flag (and variable) that names the schema, for its usage error.
    pub schema_flag: &'static str,
    /// The flag (and variable) that names the connection string, for its
    /// usage error.
    pub conninfo_flag: &'static str,
}

/// A store a command opened, as its concrete type.
// One or two at a time, each held for the whole command: a box would buy
// nothing.
#[allow(clippy::large_enum_variant)]
pub enum Opened {
    File(FileStore),
    #[cfg(feature = "postgres")]
    Pg(taskstore::PgStore),
}

impl Opened {
    pub fn boxed(self) -> Box<dyn Handle> {
        match self {
            Opened::File(store) => Box::new(store),
            #[cfg(feature = "postgres")]
            Opened::Pg(store) => Box::new(store),
        }
    }
}

impl Opening {
    pub fn new(heard: Heard) -> Opening {
        Opening {
            claim_grace: None,
            older: Older::Refuse,
            heard: Arc::new(heard),
            max_active: None,
            max_payload_bytes: taskstore::MAX_MAX_PAYLOAD_BYTES,
            create: false,
            schema_flag: "'--pg-schema <SCHEMA>' (or TASKSTORE_PG_SCHEMA)",
            conninfo_flag: "'--pg <CONNINFO>' (or TASKSTORE_PG)",
        }
    }

    /// `builder` with this opening's instance id, caps, claim grace and sink.
    fn configure<O>(&self, builder: StoreBuilder<O>) -> StoreBuilder<O> {
        let builder = builder
            .instance_id(instance_id())
            .max_payload_bytes(self.max_payload_bytes)
            .sink(self.heard.clone());
        let builder = match self.max_active {
            Some(max) => builder.max_active(max),
            None => builder,
        };
        match self.claim_grace {
            Some(grace) => builder.claim_grace(grace),
            None => builder,
        }
    }

    pub fn open(&self, target: &Target) -> Result<Opened, Failure> {
        match target {
            Target::File(dir) => {
                // One command, one listing at most: no inotify instance,
                // which the exit would wait for the kernel to free.
                let builder = || {
                    self.configure(FileStore::builder(dir))
                        .change_notices(false)
                        .lock_wait(OPEN_WAIT)
                        .on_lock_wait(say_open_wait(OPEN_WAIT))
                };
                let opened = match builder().upgrade_format(false).open() {
                    Err(taskstore::Error::OlderFormat { found, current, .. })
                        if self.older == Older::Move =>
                    {
                        text::err(format!(
                            "taskstore: moving {} from format {found} to {current} once no other \
                             process has it open (waiting for them to close it)",
                            dir.display()
                        ));
                        builder().open()
                    }
                    Err(e @ taskstore::Error::OlderFormat { .. }) => {
                        return Err(older_refused(e, self.older));
                    }
                    opened => opened,
                };
                Ok(Opened::File(opened.map_err(|e| denied_directory(dir, e))?))
            }
            #[cfg(feature = "postgres")]
            Target::Pg { conninfo, schema } => {
                // A schema of an older version is migrated only as a file
                // store is moved: given --upgrade, never by a dry run.
                let mut builder = self
                    .configure(taskstore::PgStore::builder(conninfo.clone()))
                    .create_if_missing(self.create)
                    .upgrade_format(self.older == Older::Move);
                if let Some(schema) = schema {
                    builder = builder.schema(schema.clone());
                }
                match builder.open() {
                    // A schema name no store can have is a usage error, as a
                    // malformed argument is.
                    Err(
                        e @ taskstore::Error::InvalidConfig {
                            field: "schema", ..
                        },
                    ) => crate::invalid_value(&format!(
                        "invalid value {:?} for {}: {e}",
                        schema.as_deref().unwrap_or_default(),
                        self.schema_flag
                    )),
                    // So is a connection string that does not parse; the
                    // string itself is not shown (it may hold a password).
                    Err(taskstore::Error::InvalidConfig {
                        field: "conninfo",
                        reason,
                    }) => crate::invalid_value(&format!(
                        "invalid value for {}: {reason} (the value is not shown: it may \
                         hold a password)",
                        self.conninfo_flag
                    )),
                    Err(e @ taskstore::Error::OlderFormat { .. }) => {
                        Err(older_refused(e, self.older))
                    }
                    opened => Ok(Opened::Pg(opened?)),
                }
            }
        }
    }
}

/// An open of the file store at `dir` that failed, said with what mends it
/// when a directory of the store would not open for its permissions (a
/// mode that denies its owner reading it: `repair --apply` sets it).
fn denied_directory(dir: &Path, e: taskstore::Error) -> Failure {
    match &e {
        taskstore::Error::Io { path, source, .. }
            if source.kind() == std::io::ErrorKind::PermissionDenied
                && path.parent() == Some(dir) =>
        {
            format!(
                "{e}: run verify (`taskstore repair --apply`, run as the store's owner, sets \
                 its mode back to 0700)"
            )
            .into()
        }
        _ => e.into(),
    }
}

/// A store of an older format refused (as `older` says), and what to do
/// about it.
fn older_refused(e: taskstore::Error, older: Older) -> Failure {
    match older {
        Older::DryRun => format!(
            "{e}; a dry run moves nothing: move it with another command given --upgrade \
             (`taskstore --upgrade stats`), or use the taskstore that wrote it"
        ),
        Older::Refuse | Older::Move => format!(
            "{e}; run the command with --upgrade to move it, or use the taskstore that wrote it"
        ),
    }
    .into()
}

/// What a command does with a store of an older format, whether it reads
/// a census of it or opens it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Older {
    /// Refuses it, saying `--upgrade` would move it.
    Refuse,
    /// Moves it first (`--upgrade`).
    Move,
    /// Refuses it: a dry run changes nothing, `--upgrade` or not.
    DryRun,
}

impl Older {
    pub fn given(upgrade: bool) -> Older {
        if upgrade { Older::Move } else { Older::Refuse }
    }
}

/// The census of the file store at `dir` (a dry run's); a store of an
/// older format is refused as [`open`] refuses it, or moved first by an
/// open (which waits for the other processes to close it), as every
/// command that opens it moves it, as `older` says.
pub fn census(
    dir: &Path,
    older: Older,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<taskstore::Census, Failure> {
    census_by(dir, older, &mut |check| check.census_with(progress))
}

/// [`census`], each task handed to `each` as it is read and none kept
/// ([`FileCheck::census_each`](taskstore::FileCheck::census_each): `stats`
/// counts them).
pub fn census_each(
    dir: &Path,
    older: Older,
    progress: &mut dyn FnMut(usize, usize),
    each: &mut dyn FnMut(taskstore::Task),
) -> Result<taskstore::Census, Failure> {
    census_by(dir, older, &mut |check| check.census_each(progress, each))
}

/// The census `read` reads through a check of the store at `dir`, as
/// [`census`] says (an older format is refused before any task is read).
fn census_by(
    dir: &Path,
    older: Older,
    read: &mut dyn FnMut(&taskstore::FileCheck) -> taskstore::Result<taskstore::Census>,
) -> Result<taskstore::Census, Failure> {
    // The check is dropped before a move: it holds the store open.
    let census = read(&check(dir)?);
    match census {
        Err(taskstore::Error::OlderFormat { .. }) if older == Older::Move => {
            drop(open(
                &Target::File(dir.to_owned()),
                None,
                true,
                Heard::nothing(),
            )?);
            Ok(read(&check(dir)?)?)
        }
        Err(e @ taskstore::Error::OlderFormat { .. }) => Err(older_refused(e, older)),
        census => Ok(census?),
    }
}

/// Refuses a directory that is not a store (FORMAT.md: a store holds
/// `taskstore.json`), so that no command makes one by mistake. A store
/// that lost its marker but has its directories is one (`FileCheck::open`
/// says which): opening it writes the marker again (as `repair` says).
pub fn is_store(dir: &Path) -> Result<(), Failure> {
    let marker = dir.join("taskstore.json");
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("no store at {}: {e}", dir.display()).into())
        }
        Err(e) => Err(format!("cannot look at {}: {e}", dir.display()).into()),
        Ok(meta) if meta.is_symlink() => Err(format!(
            "no store at {}: a symlink (a store is never opened through one: give the \
             directory it points to)",
            dir.display()
        )
        .into()),
        Ok(meta) if !meta.is_dir() => {
            Err(format!("no store at {}: not a directory", dir.display()).into())
        }
        Ok(_) => match std::fs::symlink_metadata(&marker) {
            Ok(_) => Ok(()),
            // A store that lost its marker, by the library's rule (its
            // directories, not only an `active/` and a `done/`).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match check(dir) {
                Ok(_) => Ok(()),
                Err(e) => Err(e.to_string().into()),
            },
            Err(e) => Err(format!("cannot look at {}: {e}", marker.display()).into()),
        },
    }
}
