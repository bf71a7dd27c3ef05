//! Repairing what [`FileCheck::verify`] finds, with the store's own
//! operations and under its locks: interrupted moves finished and stale
//! copies removed (`tidy`, as any write of the task would), dead writers'
//! temp files removed (under their free stripe lock, as `open` would),
//! unreadable files and foreign names set aside into `quarantine/` (as a
//! listing would), modes set. What only a person can decide is left alone,
//! and said so.

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::file::FileBackend;
use crate::file::fs::Dir;
use crate::file::layout::{Area, RootName, stripe};
use crate::file::problem::{DIR_MODE, FILE_MODE, Place, Problem, ProblemKind, Sub};
use crate::file::recovery::{self, Moved};
use crate::file::verify::{FileCheck, FileState, judge_file};
use crate::id::TaskId;

/// What [`FileCheck::repair`] did, or would do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Repairs {
    /// Whether this was a dry run (nothing was changed).
    pub dry_run: bool,
    /// One per problem found, in the order they were (or would be) acted on.
    pub repairs: Vec<Repair>,
    /// Whether batches of other handles were still under way when the
    /// check stopped waiting for them
    /// ([`Report::under_way`](crate::Report::under_way)), or when a repair
    /// that may meet a batch's work in progress did (that repair is then
    /// skipped): the store may still need repair, and a later run judges
    /// it again.
    pub under_way: bool,
}

impl Repairs {
    /// How many problems were (or, in a dry run, would be) fixed.
    pub fn fixed(&self) -> usize {
        self.repairs
            .iter()
            .filter(|r| matches!(r.outcome, RepairOutcome::Done | RepairOutcome::Planned))
            .count()
    }
}

/// One problem and what the repair does with it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Repair {
    /// The problem, as verify found it.
    pub problem: Problem,
    /// What the repair does with it.
    pub action: RepairAction,
    /// How it went.
    pub outcome: RepairOutcome,
}

impl fmt::Display for Repair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.problem, self.action)?;
        match &self.outcome {
            RepairOutcome::Planned | RepairOutcome::Done => Ok(()),
            RepairOutcome::Skipped { reason } => write!(f, " (skipped: {reason})"),
            RepairOutcome::Failed { error } => write!(f, " (failed: {error})"),
        }
    }
}

/// What a repair does with one problem.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RepairAction {
    /// Finishes an interrupted terminal move into `done/`.
    FinishMove,
    /// Removes a readable copy that the read rule overrules.
    RemoveStaleCopy,
    /// Removes a dead writer's temp file.
    RemoveTemp,
    /// Removes an `expiring/` entry that is not its task's file.
    RemoveStaleIndexEntry,
    /// Gives a finished task its missing `expiring/` entry.
    RestoreIndexEntry,
    /// Moves the entry into `quarantine/`, where a person can look at it.
    SetAside,
    /// Sets the permission bits.
    SetMode {
        /// The mode set.
        mode: u32,
    },
    /// Leaves it alone: no repair is safe without a person.
    Leave {
        /// Why, and what a person may do.
        reason: &'static str,
    },
}

impl RepairAction {
    /// A short machine name: `finish_move`, `remove_stale_copy`,
    /// `remove_temp`, `remove_stale_index_entry`, `restore_index_entry`,
    /// `set_aside`, `set_mode`, `leave`.
    pub fn code(&self) -> &'static str {
        match self {
            RepairAction::FinishMove => "finish_move",
            RepairAction::RemoveStaleCopy => "remove_stale_copy",
            RepairAction::RemoveTemp => "remove_temp",
            RepairAction::RemoveStaleIndexEntry => "remove_stale_index_entry",
            RepairAction::RestoreIndexEntry => "restore_index_entry",
            RepairAction::SetAside => "set_aside",
            RepairAction::SetMode { .. } => "set_mode",
            RepairAction::Leave { .. } => "leave",
        }
    }
}

impl fmt::Display for RepairAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepairAction::FinishMove => f.write_str("finish the move into done/"),
            RepairAction::RemoveStaleCopy => f.write_str("remove the stale copy"),
            RepairAction::RemoveTemp => f.write_str("remove the temp file"),
            RepairAction::RemoveStaleIndexEntry => f.write_str("remove the stale index entry"),
            RepairAction::RestoreIndexEntry => f.write_str("link the task into expiring/"),
            RepairAction::SetAside => f.write_str("set it aside into quarantine/"),
            RepairAction::SetMode { mode } => write!(f, "set mode {mode:04o}"),
            RepairAction::Leave { reason } => write!(f, "left alone: {reason}"),
        }
    }
}

/// How the repair of one problem went.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RepairOutcome {
    /// A dry run: this is what an applied repair would do.
    Planned,
    /// Done.
    Done,
    /// Not done: nothing to do any more (a writer resolved it meanwhile),
    /// or the action is to leave it.
    Skipped {
        /// Why.
        reason: String,
    },
    /// It failed; the other repairs went on.
    Failed {
        /// The error.
        error: String,
    },
}

impl RepairOutcome {
    /// A short machine name: `planned`, `done`, `skipped`, `failed`.
    pub fn code(&self) -> &'static str {
        match self {
            RepairOutcome::Planned => "planned",
            RepairOutcome::Done => "done",
            RepairOutcome::Skipped { .. } => "skipped",
            RepairOutcome::Failed { .. } => "failed",
        }
    }
}

impl FileCheck {
    /// Repairs what [`verify`](FileCheck::verify) finds that can be
    /// repaired safely; with `dry_run`, changes nothing and says what it
    /// would do. See [`repair_with`](FileCheck::repair_with).
    pub fn repair(&self, dry_run: bool) -> Result<Repairs> {
        self.repair_with(dry_run, &mut |_, _| {})
    }

    /// Verifies the store (calling `progress(done, total)` as
    /// [`verify_with`](FileCheck::verify_with) does), then repairs each
    /// problem that can be repaired safely, with the store's own operations
    /// and under its locks:
    ///
    /// - an interrupted terminal move is finished, a stale copy removed (a
    ///   damaged one set aside), under the task's stripe lock, as any write
    ///   of the task would;
    /// - a dead writer's temp file is removed under its stripe lock, taken
    ///   only if it is free;
    /// - an unreadable task file (corrupt, of another task, a symlink, not
    ///   a file) is set aside into `quarantine/` under its lock, if it is
    ///   still unreadable there, with its `expiring/` entries (as the
    ///   store's own listings set one aside), so that none is left stale; a
    ///   foreign name in `active/`, `done/`, `tmp/` or `locks/` is set
    ///   aside;
    /// - a mode is set to `0600` (files) or `0700` (directories).
    ///
    /// A newer-format or oversized task file, a running task in `done/`, a
    /// missing or unreadable marker or directory, and foreign names at the
    /// store's root are left alone (see [`RepairAction::Leave`]); so is
    /// every problem of a store whose marker names a newer format, which
    /// this version does not open either. Each
    /// problem is judged again when it is acted on: one resolved meanwhile
    /// is skipped. One repair failing never stops the others.
    ///
    /// # Errors
    ///
    /// Those of [`verify_with`](FileCheck::verify_with).
    pub fn repair_with(
        &self,
        dry_run: bool,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Repairs> {
        // Judged with the batches lock held (verify), which is let go
        // before the repairs: an action that may meet a batch's work in
        // progress takes it again for itself, so that a long repair never
        // holds the service's batches up.
        let report = self.verify_with(progress)?;
        let mut under_way = report.under_way;
        // A store of a newer format is read by this version's rules no
        // more than `open` reads it: its files may all be right for it.
        let newer = report
            .problems
            .iter()
            .any(|p| matches!(p.kind, ProblemKind::NewerFormat { .. }) && is_marker(&p.place));
        // Nor is one of an older format, until an open has moved it.
        let older = self.refuse_older().is_err();
        let mut repairs: Vec<Repair> = report
            .problems
            .into_iter()
            .map(|problem| {
                let action = if newer {
                    RepairAction::Leave {
                        reason: "the store is of a newer format (its marker says so): \
                                 repair it with the taskstore that wrote it",
                    }
                } else if older {
                    RepairAction::Leave {
                        reason: "the store is of an older format: move it first (an open \
                                 that may upgrade it, the command's --upgrade), then repair it",
                    }
                } else {
                    plan(&problem)
                };
                Repair {
                    problem,
                    action,
                    outcome: RepairOutcome::Planned,
                }
            })
            .collect();
        // Unreadable copies go first: finishing a move would remove a
        // damaged copy in done/ instead of setting it aside.
        repairs.sort_by_key(|r| order(&r.action));
        for group in repairs.chunk_by_mut(|a, b| order(&a.action) == order(&b.action)) {
            // The dead writers' temp files go together, after one settle
            // for all of them (`remove_temps`).
            if !dry_run && group[0].action == RepairAction::RemoveTemp {
                let problems: Vec<&Problem> = group.iter().map(|r| &r.problem).collect();
                let done = self.remove_temps(&problems);
                for (repair, done) in group.iter_mut().zip(done) {
                    repair.outcome = outcome(done);
                }
                continue;
            }
            for repair in group {
                repair.outcome = match (&repair.action, dry_run) {
                    (RepairAction::Leave { .. }, _) => RepairOutcome::Skipped {
                        reason: "left alone".to_owned(),
                    },
                    (_, true) => RepairOutcome::Planned,
                    (action, false) => outcome(if repair.problem.kind.may_be_under_way() {
                        self.apply_settled(&repair.problem, action, &mut under_way)
                    } else {
                        self.apply(&repair.problem, action)
                    }),
                };
            }
        }
        Ok(Repairs {
            dry_run,
            repairs,
            under_way,
        })
    }

    /// [`apply`](Self::apply) with the batches lock held exclusive: no
    /// batch of another handle is between its halves meanwhile. A batch
    /// that outlasts the wait may be making this very move or removal: it
    /// is not repaired for it, and `under_way` is set; once it is set (by
    /// the check before the repairs too), none is tried.
    fn apply_settled(
        &self,
        problem: &Problem,
        action: &RepairAction,
        under_way: &mut bool,
    ) -> Result<Option<String>> {
        const UNDER_WAY: &str = "batches or a check of another process were still under \
                                 way, and this may be a batch's work in progress: run repair \
                                 again";
        // Once a wait ran out, the batch that outlasted it is taken as
        // still under way: no repair waits the whole wait again.
        if *under_way {
            return Ok(Some(UNDER_WAY.to_owned()));
        }
        let store = self.backend()?;
        let settled = self.settle(store)?;
        if settled.under_way {
            *under_way = true;
            return Ok(Some(UNDER_WAY.to_owned()));
        }
        self.apply(problem, action)
    }

    /// Does `action` about `problem`; `Ok(Some(why))` if there was nothing
    /// to do any more.
    fn apply(&self, problem: &Problem, action: &RepairAction) -> Result<Option<String>> {
        // A mode is set by name, in the root or in a directory of the store
        // that is open: also in a store whose directories did not all open
        // (one whose mode denies its owner reading it).
        let store = || self.backend();
        match action {
            RepairAction::FinishMove | RepairAction::RemoveStaleCopy => tidy(store()?, problem),
            RepairAction::RemoveTemp => self.remove_temps(&[problem]).remove(0),
            RepairAction::RemoveStaleIndexEntry => remove_stale_index(store()?, problem),
            RepairAction::RestoreIndexEntry => restore_index(store()?, problem),
            RepairAction::SetAside => self.set_aside(store()?, problem),
            RepairAction::SetMode { mode } => {
                let Some((dir, name)) = self.locate(&problem.place) else {
                    return Ok(Some("its directory is not open".to_owned()));
                };
                match self.fs().set_mode(dir, name, *mode) {
                    Ok(()) => Ok(None),
                    // Set aside by an earlier repair, or removed meanwhile.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Some("gone".to_owned())),
                    Err(e) => Err(Error::io("set the mode of", &problem.path, e)),
                }
            }
            RepairAction::Leave { .. } => Ok(Some("left alone".to_owned())),
        }
    }

    /// Removes the dead writers' temp files of `problems`, each under its
    /// stripe lock seen free (else its writer is alive: it is not dead
    /// after all), after one settle for all of them made once every lock
    /// was seen free ([`recovery::writers_gone`]): a temp file may be a
    /// park, removed only once the directory whose name it kept is
    /// durable. What each came to, as [`apply`](Self::apply) says it.
    fn remove_temps(&self, problems: &[&Problem]) -> Vec<Result<Option<String>>> {
        let store = match self.backend() {
            Ok(store) => store,
            Err(e) => {
                return problems
                    .iter()
                    .map(|p| Err(e.for_each_of("remove", &p.path)))
                    .collect();
            }
        };
        let temps: Vec<Option<(&TaskId, &OsStr)>> = problems
            .iter()
            .map(|p| match (&p.id, &p.place) {
                (Some(id), Place::In(Sub::Tmp, name)) => Some((id, name.as_os_str())),
                _ => None,
            })
            .collect();
        let (gone, settled) = recovery::writers_gone(store, temps.iter().flatten().map(|t| t.0));
        let mut gone = gone.into_iter();
        problems
            .iter()
            .zip(&temps)
            .map(|(problem, temp)| {
                let Some((_, name)) = temp else {
                    return Ok(Some("not a temp file".to_owned()));
                };
                match gone.next().expect("one answer per temp file") {
                    Ok(true) => {}
                    Ok(false) => return Ok(Some("its writer is alive".to_owned())),
                    Err(e) => return Err(e),
                }
                match &settled {
                    Ok(()) => remove_dead_temp(store, problem, name),
                    Err(e) => Err(e.for_each_of("fsync directory", &problem.path)),
                }
            })
            .collect()
    }

    fn set_aside(&self, store: &FileBackend, problem: &Problem) -> Result<Option<String>> {
        let Place::In(sub, name) = &problem.place else {
            return Ok(Some("not an entry of the store's directories".to_owned()));
        };
        let Some(dir) = self.sub_dir(*sub) else {
            return Ok(Some("its directory is not open".to_owned()));
        };
        let area = match sub {
            Sub::Active => Some(Area::Active),
            Sub::Done => Some(Area::Done),
            Sub::Tmp | Sub::Expiring | Sub::Locks | Sub::Quarantine => None,
        };
        if let (Some(area), Some(id)) = (area, &problem.id) {
            // A task file: set aside only if it is still unreadable under
            // its lock.
            let _guard = store.locks.lock(&store.fs, stripe(id))?;
            return match judge_file(store, area, id) {
                FileState::Missing => Ok(Some("gone".to_owned())),
                FileState::Task(_) => Ok(Some("readable now".to_owned())),
                FileState::Bad(kind) => {
                    let moved = recovery::set_aside_locked(store, area, id, &kind.to_string())?;
                    Ok(moved.why_not())
                }
            };
        }
        let label = match sub {
            Sub::Active => "active",
            Sub::Done => "done",
            Sub::Tmp => "tmp",
            Sub::Expiring => "expiring",
            Sub::Locks => "locks",
            Sub::Quarantine => return Ok(Some("already in quarantine/".to_owned())),
        };
        set_aside_name(store, dir, name, label, &problem.kind.to_string())
    }
}

/// Sets the entry `name` of `dir` aside into the quarantine (its name
/// there starting with `label`), for `why`: `None` once done, or why it
/// was not (gone, or the quarantine full); an I/O error fails the repair,
/// naming the path.
fn set_aside_name(
    store: &FileBackend,
    dir: &Dir,
    name: &OsStr,
    label: &str,
    why: &str,
) -> Result<Option<String>> {
    let moved = recovery::move_aside(store, dir, name, label)?;
    if let Moved::Aside(target) = &moved {
        tracing::warn!(file = %dir.join(name).display(), reason = why, to = %target.display(), "set aside");
    }
    Ok(moved.why_not())
}

impl Problem {
    /// What [`FileCheck::repair`] does about it
    /// ([`RepairAction::Leave`]: nothing, and why).
    pub fn repair_action(&self) -> RepairAction {
        plan(self)
    }
}

/// What to do about `problem`.
fn plan(problem: &Problem) -> RepairAction {
    let dir = is_store_dir(&problem.place);
    match (&problem.kind, &problem.place) {
        (ProblemKind::InterruptedMove, _) => RepairAction::FinishMove,
        (ProblemKind::StaleCopy { readable: true }, _) => RepairAction::RemoveStaleCopy,
        (ProblemKind::StaleCopy { readable: false }, _) => RepairAction::SetAside,
        (ProblemKind::DeadTemp, _) => RepairAction::RemoveTemp,
        (ProblemKind::StaleIndexEntry, _) => RepairAction::RemoveStaleIndexEntry,
        (ProblemKind::MissingIndexEntry, _) => RepairAction::RestoreIndexEntry,
        (ProblemKind::Mode { .. }, _) => RepairAction::SetMode {
            mode: if dir { DIR_MODE } else { FILE_MODE },
        },
        (
            ProblemKind::Corrupt { .. }
            | ProblemKind::WrongId { .. }
            | ProblemKind::Symlink
            | ProblemKind::NotAFile
            | ProblemKind::Foreign,
            Place::In(..),
        ) => RepairAction::SetAside,
        (ProblemKind::NewerFormat { .. }, Place::In(..)) => RepairAction::Leave {
            reason: "written by a newer taskstore, which reads it",
        },
        (ProblemKind::TooLarge { .. }, _) => RepairAction::Leave {
            reason: "larger than any task a store writes; inspect it, and move it into quarantine/ by hand",
        },
        (ProblemKind::Misplaced, _) => RepairAction::Leave {
            reason: "no writer puts a running task in done/; inspect it",
        },
        (ProblemKind::Foreign, _) => RepairAction::Leave {
            reason: "not the store's file; move it out of the store by hand",
        },
        (ProblemKind::Missing, _) => RepairAction::Leave {
            reason: "opening the store (`FileStore::open`; the command's list, show, cancel, \
                     sweep and reap) makes a missing directory or marker (a marker once no \
                     foreign name is left at the store's root); tasks that were in a missing \
                     directory are lost",
        },
        // `open` refuses a marker it cannot read (or follow), and writes
        // a missing one again: a store without one but with its
        // directories is one.
        (ProblemKind::BadMarker { .. } | ProblemKind::Symlink | ProblemKind::NotAFile, place)
            if is_marker(place) =>
        {
            RepairAction::Leave {
                reason: "remove it: the next open of the store (`FileStore::open`; the command's \
                     list, show, cancel, sweep and reap) writes it again, once no foreign \
                     name is left at the store's root",
            }
        }
        // A lock file this process cannot open (another user's, root's):
        // a repair run as the store's owner cannot change its owner, and
        // removing it would let a process that holds the old one and one
        // that makes a new one lock the stripe at once.
        (ProblemKind::Unreadable { .. }, Place::In(Sub::Locks, _)) => RepairAction::Leave {
            reason: "a lock file the store's owner may not open: as root, give it to the \
                     store's owner (`chown --reference=<store>/taskstore.json <lock file>`); \
                     never remove it while a process may hold it",
        },
        (ProblemKind::Unreadable { .. }, _) => RepairAction::Leave {
            reason: "could not be checked; check it again",
        },
        _ => RepairAction::Leave {
            reason: "the store's layout itself is wrong; fix it by hand",
        },
    }
}

/// Whether `place` is the store's marker.
fn is_marker(place: &Place) -> bool {
    matches!(place, Place::Top(name) if RootName::of(name) == RootName::Marker)
}

/// Whether `place` is one of the store's directories.
fn is_store_dir(place: &Place) -> bool {
    matches!(place, Place::Top(name) if RootName::of(name) == RootName::Dir)
}

/// The order repairs are applied in.
fn order(action: &RepairAction) -> u8 {
    match action {
        RepairAction::SetAside => 0,
        RepairAction::RemoveTemp => 1,
        RepairAction::FinishMove | RepairAction::RemoveStaleCopy => 2,
        RepairAction::RemoveStaleIndexEntry | RepairAction::RestoreIndexEntry => 2,
        RepairAction::SetMode { .. } => 3,
        RepairAction::Leave { .. } => 4,
    }
}

/// Finishes an interrupted move or removes a stale copy, under the task's
/// lock, with the backend's own `tidy` (what any write of the task does).
fn tidy(store: &FileBackend, problem: &Problem) -> Result<Option<String>> {
    let Some(id) = &problem.id else {
        return Ok(Some("no task id".to_owned()));
    };
    let _guard = store.locks.lock(&store.fs, stripe(id))?;
    let Some(found) = store.find(id)? else {
        return Ok(Some("the task is gone".to_owned()));
    };
    let unmoved = found.area == Area::Active && found.task.is_terminal();
    if found.stale.is_none() && !unmoved {
        return Ok(Some("resolved meanwhile".to_owned()));
    }
    store.tidy(&found)?;
    Ok(None)
}

/// Removes an `expiring/` entry that is not its task's file, under the
/// task's lock (as a sweep does).
fn remove_stale_index(store: &FileBackend, problem: &Problem) -> Result<Option<String>> {
    let (Some(id), Place::In(Sub::Expiring, name)) = (&problem.id, &problem.place) else {
        return Ok(Some("not an index entry".to_owned()));
    };
    if !store.index_is_stale(id, name) {
        return Ok(Some("resolved meanwhile".to_owned()));
    }
    store
        .drop_stale_indexes(&[(id.clone(), name.clone())], None)
        .1?;
    Ok(None)
}

/// Gives a finished task its missing `expiring/` entry, under its lock.
fn restore_index(store: &FileBackend, problem: &Problem) -> Result<Option<String>> {
    let Some(id) = &problem.id else {
        return Ok(Some("no task id".to_owned()));
    };
    let restored = store.restore_missing_indexes(std::slice::from_ref(id));
    if let Some((_, e)) = restored.failed.into_iter().next() {
        return Err(e);
    }
    restored.synced?;
    match restored.restored {
        0 => Ok(Some("resolved meanwhile".to_owned())),
        _ => Ok(None),
    }
}

/// How a repair that came to `done` went.
fn outcome(done: Result<Option<String>>) -> RepairOutcome {
    match done {
        Ok(None) => RepairOutcome::Done,
        Ok(Some(reason)) => RepairOutcome::Skipped { reason },
        Err(e) => RepairOutcome::Failed {
            error: e.to_string(),
        },
    }
}

/// Removes the dead writer's temp file `name` of `problem`, its writer seen
/// gone and the store settled since ([`FileCheck::remove_temps`]); one
/// that is a directory, or that the file system refuses to unlink, is set
/// aside.
fn remove_dead_temp(
    store: &FileBackend,
    problem: &Problem,
    name: &OsStr,
) -> Result<Option<String>> {
    match store.fs.remove_if_there(&store.tmp, name) {
        Ok(true) => Ok(None),
        Ok(false) => Ok(Some("gone".to_owned())),
        Err(e)
            if e.kind() == io::ErrorKind::IsADirectory
                || e.raw_os_error() == Some(rustix::io::Errno::PERM.raw_os_error()) =>
        {
            set_aside_name(
                store,
                &store.tmp,
                name,
                "tmp",
                "not a temp file of this store",
            )
        }
        Err(e) => Err(Error::io("remove", PathBuf::from(&problem.path), e)),
    }
}
