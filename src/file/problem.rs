//! What [`FileCheck::verify`](crate::FileCheck::verify) reports: a
//! [`Report`] of [`Problem`]s, each with its path and its [`ProblemKind`],
//! and where the repair finds it again.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::error::Error;
use crate::file::census::StaleEntry;
use crate::file::layout::Area;
use crate::id::TaskId;

/// The mode of every file of a store.
pub(crate) const FILE_MODE: u32 = 0o600;
/// The mode of every directory of a store.
pub(crate) const DIR_MODE: u32 = 0o700;

/// What [`FileCheck::verify`](crate::FileCheck::verify) found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// Every problem, ordered by path.
    pub problems: Vec<Problem>,
    /// How many entries of the store's directories were checked.
    pub checked: usize,
    /// Whether batches of other handles were still under way when the
    /// check stopped waiting for them
    /// ([`FileCheck::wait_for_batches`](crate::FileCheck::wait_for_batches)):
    /// interrupted moves and stale `expiring/` entries it reports may then
    /// be their work in progress.
    pub under_way: bool,
}

impl Report {
    /// Whether nothing was found, not even a [leftover](Severity::Leftover).
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// Whether every finding is a [leftover](Severity::Leftover) that the
    /// next open removes, [unfinished](Severity::Unfinished) work the
    /// store finishes itself (an interrupted move, a stale `expiring/`
    /// entry) or an older format the next open that may upgrade the store
    /// moves ([`Severity::Upgrade`]): the store may be opened as it is
    /// (what `taskstore verify` exits 0 on).
    pub fn passes(&self) -> bool {
        self.problems
            .iter()
            .all(|p| p.kind.severity() != Severity::Problem)
    }
}

/// How much a finding of [`FileCheck::verify`](crate::FileCheck::verify)
/// matters ([`ProblemKind::severity`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Severity {
    /// Damage, or a state no operation of the store mends by itself:
    /// `repair` or a person must.
    Problem,
    /// What a crashed writer leaves and the next open of the store removes
    /// (a dead writer's temp file, a stale copy beside a finished task),
    /// and no read sees meanwhile: worth listing, not failing a check for.
    Leftover,
    /// What a crashed or killed writer left between the steps of a move
    /// or a removal, which the store's sweep finishes, and no read is the
    /// worse for: nothing is lost, and the store may be opened as it is.
    /// Not failing a check either. Two kinds:
    ///
    /// - a terminal move left between its steps (an interrupted move: the
    ///   terminal version written in `active/`, maybe linked into `done/`
    ///   too, not yet unlinked from `active/`), which the store's next
    ///   sweep, or any write of the task, finishes; every read already
    ///   sees the task final;
    /// - a stale `expiring/` entry (a delete or a sweep killed after the
    ///   task's file went and before its entry did), which the sweep that
    ///   meets it removes: the next one once it is due
    ///   ([`Problem::stale_entry`], [`StaleEntry::is_due_at`], as
    ///   [`Census::stale_entries`] counts it); no read uses it.
    ///
    /// [`StaleEntry::is_due_at`]: crate::StaleEntry::is_due_at
    /// [`Census::stale_entries`]: crate::Census::stale_entries
    Unfinished,
    /// A store of an older format ([`ProblemKind::OlderFormat`]), which the
    /// next open that may upgrade it (a service's, by default) moves to
    /// this format: no damage, and nothing to do by hand. Its entries are
    /// checked once it is moved. Not failing a check either.
    Upgrade,
}

impl Severity {
    /// A short machine name: `problem`, `leftover`, `unfinished`,
    /// `upgrade`.
    pub fn code(self) -> &'static str {
        match self {
            Severity::Problem => "problem",
            Severity::Leftover => "leftover",
            Severity::Unfinished => "unfinished",
            Severity::Upgrade => "upgrade",
        }
    }
}

/// One problem: where, and what.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Problem {
    /// The file or directory.
    pub path: PathBuf,
    /// The task it belongs to, if its name says.
    pub id: Option<TaskId>,
    /// What is wrong with it.
    pub kind: ProblemKind,
    pub(crate) place: Place,
}

impl Problem {
    /// The stale `expiring/` entry this finding is (a
    /// [`ProblemKind::StaleIndexEntry`]), as a census counts it
    /// ([`Census::stale_entries`](crate::Census::stale_entries)): with when
    /// a sweep meets it, and so removes it
    /// ([`StaleEntry::is_due_at`]). `None` for any other finding.
    pub fn stale_entry(&self) -> Option<StaleEntry> {
        match (&self.kind, &self.place) {
            (ProblemKind::StaleIndexEntry, Place::In(Sub::Expiring, name)) => {
                StaleEntry::named(self.path.clone(), name)
            }
            _ => None,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.kind)
    }
}

/// What is wrong with a file or directory of a store.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProblemKind {
    /// Its permission bits are not the store's (`0600` files, `0700`
    /// directories).
    Mode {
        /// The mode found.
        found: u32,
        /// The mode it should have.
        expected: u32,
    },
    /// A symlink, where the store has none.
    Symlink,
    /// Something other than a regular file where a file belongs.
    NotAFile,
    /// Something other than a directory where one of the store's
    /// directories belongs.
    NotADirectory,
    /// A name the store does not use, in one of its directories.
    Foreign,
    /// One of the store's directories, or its marker, is missing.
    Missing,
    /// The marker (`taskstore.json`) cannot be read as one.
    BadMarker {
        /// Why.
        reason: String,
    },
    /// The marker or a task file has a newer format than this `taskstore`
    /// reads.
    NewerFormat {
        /// The format found.
        found: u64,
        /// The newest format this build reads.
        supported: u64,
    },
    /// The store is of an older format than this `taskstore` checks (its
    /// marker says so, or it is a store of format 1 that lost its marker):
    /// an open that may move it (`FileStoreBuilder::upgrade_format`, the
    /// default) moves it first. Its entries are not checked until then.
    /// No damage: an [upgrade](Severity::Upgrade).
    OlderFormat {
        /// The format found.
        found: u64,
        /// This `taskstore`'s format.
        current: u64,
    },
    /// A task file that does not decode as one.
    Corrupt {
        /// What is wrong with it.
        reason: String,
    },
    /// A task file that holds another task than its name says.
    WrongId {
        /// The id inside.
        found: String,
    },
    /// A task file larger than any task a store writes.
    TooLarge {
        /// Its size.
        size: u64,
        /// The largest task file a store can write.
        limit: u64,
    },
    /// A running task in `done/` (and none in `active/`): no writer puts
    /// one there.
    Misplaced,
    /// A terminal task still in `active/`: a terminal move interrupted
    /// between its two steps. Final for every reader all the same.
    InterruptedMove,
    /// A copy of a task that the read rule overrules, beside the copy that
    /// is the task (left by a terminal move that a power loss interrupted).
    StaleCopy {
        /// Whether it reads as a task (else it is damaged).
        readable: bool,
    },
    /// A temp file whose writer is gone (its stripe lock is free).
    DeadTemp,
    /// An `expiring/` entry that is not the file of its task (left by a
    /// crash between a delete's steps, or a sweep's; a sweep removes it
    /// once it is due): [unfinished](Severity::Unfinished).
    StaleIndexEntry,
    /// A finished task with a TTL whose `expiring/` entry is missing: no
    /// sweep would ever delete it.
    MissingIndexEntry,
    /// It could not be checked.
    Unreadable {
        /// The error.
        error: String,
    },
}

impl ProblemKind {
    /// How much a finding of this kind matters: a
    /// [leftover](Severity::Leftover) is a dead writer's temp file (the next
    /// open removes it) or a readable stale copy (the next open removes it,
    /// and every read already takes the task's other copy); an
    /// interrupted move is [unfinished](Severity::Unfinished) (the store's
    /// next sweep, or a write of the task, finishes it, and every read
    /// already sees the task final), and so is a stale `expiring/` entry
    /// (the sweep that meets it once it is due removes it, and no read
    /// uses it); a store of an older format is an
    /// [upgrade](Severity::Upgrade) (the next open that may upgrade it
    /// moves it); everything else is a
    /// [problem](Severity::Problem), a damaged stale copy included (the
    /// damage may be more than a crash's) and a marker missing beside an
    /// older format.
    pub fn severity(&self) -> Severity {
        match self {
            ProblemKind::DeadTemp | ProblemKind::StaleCopy { readable: true } => Severity::Leftover,
            ProblemKind::InterruptedMove | ProblemKind::StaleIndexEntry => Severity::Unfinished,
            ProblemKind::OlderFormat { .. } => Severity::Upgrade,
            _ => Severity::Problem,
        }
    }

    /// Whether a problem of this kind may be a batch's state between its
    /// halves rather than damage: an interrupted move (a terminal move's
    /// names in both areas) or a stale `expiring/` entry (a removed task's).
    /// When [`Report::under_way`] is set, those are what the batches still
    /// under way may have been making; no other problem is.
    pub fn may_be_under_way(&self) -> bool {
        matches!(
            self,
            ProblemKind::InterruptedMove | ProblemKind::StaleIndexEntry
        )
    }

    /// A short machine name: `mode`, `symlink`, `not_a_file`,
    /// `not_a_directory`, `foreign`, `missing`, `bad_marker`,
    /// `newer_format`, `older_format`, `corrupt`, `wrong_id`, `too_large`, `misplaced`,
    /// `interrupted_move`, `stale_copy`, `dead_temp`, `stale_index_entry`,
    /// `missing_index_entry`, `unreadable`.
    pub fn code(&self) -> &'static str {
        match self {
            ProblemKind::Mode { .. } => "mode",
            ProblemKind::Symlink => "symlink",
            ProblemKind::NotAFile => "not_a_file",
            ProblemKind::NotADirectory => "not_a_directory",
            ProblemKind::Foreign => "foreign",
            ProblemKind::Missing => "missing",
            ProblemKind::BadMarker { .. } => "bad_marker",
            ProblemKind::NewerFormat { .. } => "newer_format",
            ProblemKind::OlderFormat { .. } => "older_format",
            ProblemKind::Corrupt { .. } => "corrupt",
            ProblemKind::WrongId { .. } => "wrong_id",
            ProblemKind::TooLarge { .. } => "too_large",
            ProblemKind::Misplaced => "misplaced",
            ProblemKind::InterruptedMove => "interrupted_move",
            ProblemKind::StaleCopy { .. } => "stale_copy",
            ProblemKind::DeadTemp => "dead_temp",
            ProblemKind::StaleIndexEntry => "stale_index_entry",
            ProblemKind::MissingIndexEntry => "missing_index_entry",
            ProblemKind::Unreadable { .. } => "unreadable",
        }
    }
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProblemKind::Mode { found, expected } => {
                write!(f, "mode {found:04o}, expected {expected:04o}")
            }
            ProblemKind::Symlink => f.write_str("a symlink, where the store has none"),
            ProblemKind::NotAFile => f.write_str("not a regular file"),
            ProblemKind::NotADirectory => f.write_str("not a directory"),
            ProblemKind::Foreign => f.write_str("not a name this store uses"),
            ProblemKind::Missing => f.write_str("missing"),
            ProblemKind::BadMarker { reason } => write!(f, "unreadable store marker: {reason}"),
            ProblemKind::NewerFormat { found, supported } => write!(
                f,
                "format {found}, newer than the {supported} this taskstore reads"
            ),
            ProblemKind::OlderFormat { found, current } => write!(
                f,
                "format {found}, older than this taskstore's {current}: an open that may \
                 upgrade it moves it, and its entries are checked once it is moved"
            ),
            ProblemKind::Corrupt { reason } => write!(f, "corrupt task file: {reason}"),
            ProblemKind::WrongId { found } => {
                write!(f, "holds task {found}, not the task its name says")
            }
            ProblemKind::TooLarge { size, limit } => write!(
                f,
                "{size} bytes, over the {limit} bytes of the largest task file a store writes"
            ),
            ProblemKind::Misplaced => f.write_str("a running task in done/"),
            ProblemKind::InterruptedMove => {
                f.write_str("a terminal task still in active/ (an interrupted move)")
            }
            ProblemKind::StaleCopy { readable: true } => {
                f.write_str("a stale copy: the task's other copy overrules it")
            }
            ProblemKind::StaleCopy { readable: false } => f.write_str(
                "a damaged stale copy: the task's other copy is readable and overrules it",
            ),
            ProblemKind::DeadTemp => f.write_str("a temp file of a writer that is gone"),
            ProblemKind::StaleIndexEntry => {
                f.write_str("an expiring/ entry that is not its task's file any more")
            }
            ProblemKind::MissingIndexEntry => {
                f.write_str("a finished task with a TTL and no expiring/ entry: never swept")
            }
            ProblemKind::Unreadable { error } => write!(f, "cannot be checked: {error}"),
        }
    }
}

/// Where a problem is, as the repair finds it again: an entry of the root,
/// or an entry of one of the store's directories.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Place {
    Top(OsString),
    In(Sub, OsString),
}

/// The directories whose entries are checked (or counted) one by one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Sub {
    Active,
    Done,
    Tmp,
    Expiring,
    Locks,
    Quarantine,
}

impl Sub {
    pub(crate) fn area(area: Area) -> Sub {
        match area {
            Area::Active => Sub::Active,
            Area::Done => Sub::Done,
        }
    }
}

pub(crate) fn problem(
    path: PathBuf,
    id: Option<TaskId>,
    kind: ProblemKind,
    place: Place,
) -> Problem {
    Problem {
        path,
        id,
        kind,
        place,
    }
}

pub(crate) fn mode(found: u32, expected: u32) -> ProblemKind {
    ProblemKind::Mode { found, expected }
}

pub(crate) fn unreadable_lock(e: &Error) -> ProblemKind {
    ProblemKind::Unreadable {
        error: format!("its stripe lock cannot be taken: {e}"),
    }
}

pub(crate) fn unreadable(e: io::Error) -> ProblemKind {
    ProblemKind::Unreadable {
        error: e.to_string(),
    }
}
