//! The checks of a store's entries, one directory at a time: `tmp/`, the
//! two areas, each task's copies under its lock, `expiring/`, `locks/`.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::io;

use crate::error::{Error, Result};
use crate::file::FileBackend;
use crate::file::fs::{Dir, Kind};
use crate::file::layout::{
    self, Area, BATCHES_LOCK, HANDLES_LOCK, STRIPES, lock_name, stripe, task_name,
};
use crate::file::park::writer_is_running;
use crate::file::problem::{
    FILE_MODE, Place, Problem, ProblemKind, Sub, mode, problem, unreadable, unreadable_lock,
};
use crate::id::TaskId;

use super::{FileCheck, FileState, Peek};

impl FileCheck {
    /// `tmp/`: foreign names, and temp files whose writer is gone (their
    /// stripe lock is free, they are still there under it, and the process
    /// that wrote them is not running: a live handle removes its parks
    /// after letting the lock go, see `park`).
    pub(super) fn check_tmp(
        &self,
        store: &FileBackend,
        names: &[OsString],
        problems: &mut Vec<Problem>,
        tick: &mut dyn FnMut(),
    ) -> Result<()> {
        let dir = &store.tmp;
        for name in names {
            tick();
            let place = Place::In(Sub::Tmp, name.clone());
            let Some((id, pid)) = layout::temp_file_writer(name) else {
                problems.push(problem(dir.join(name), None, ProblemKind::Foreign, place));
                continue;
            };
            let _guard = match store.locks.try_lock(&store.fs, stripe(&id)) {
                Ok(Some(guard)) => guard,
                Ok(None) => continue, // its writer is alive
                Err(e) => {
                    // Its lock file is itself a problem, reported with it.
                    problems.push(problem(
                        dir.join(name),
                        Some(id),
                        unreadable_lock(&e),
                        place,
                    ));
                    continue;
                }
            };
            match self.fs.stat(dir, name) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {} // renamed into place
                Err(e) => problems.push(problem(dir.join(name), Some(id), unreadable(e), place)),
                // A park its live writer has not removed yet.
                Ok(_) if writer_is_running(pid) => {}
                Ok(_) => problems.push(problem(
                    dir.join(name),
                    Some(id),
                    ProblemKind::DeadTemp,
                    place,
                )),
            }
        }
        Ok(())
    }

    /// The entries of `area`, read without locks: problems of a file alone
    /// (foreign names, modes, newer formats) are reported; what may be a
    /// writer's work in progress (an unreadable file, a terminal task in
    /// `active/`, a running one in `done/`, a task in both areas) makes the
    /// task a suspect, judged again under its lock (and, for a terminal
    /// task in `active/`, which a batch leaves between its halves, once
    /// the batches under way have ended).
    pub(super) fn check_area(
        &self,
        store: &FileBackend,
        area: Area,
        names: Vec<OsString>,
        suspects: &mut Suspects,
        problems: &mut Vec<Problem>,
        tick: &mut dyn FnMut(),
    ) {
        let dir = store.dir(area);
        let sub = Sub::area(area);
        for name in names {
            tick();
            let path = dir.join(&name);
            let place = Place::In(sub, name.clone());
            let Some(id) = layout::task_file_id(&name) else {
                problems.push(problem(path, None, ProblemKind::Foreign, place));
                continue;
            };
            match self.fs.stat(dir, &name) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    problems.push(problem(path, Some(id), unreadable(e), place));
                    continue;
                }
                Ok(status) if status.kind != Kind::File => {
                    suspects.ids.insert(id);
                    continue;
                }
                Ok(status) if status.mode != FILE_MODE => problems.push(problem(
                    path.clone(),
                    Some(id.clone()),
                    mode(status.mode, FILE_MODE),
                    place.clone(),
                )),
                Ok(_) => {}
            }
            match judge_file(store, area, &id) {
                FileState::Missing => {}
                // In its place (and, finished with a TTL, in the index).
                FileState::Task(task) if task.is_terminal() == (area == Area::Done) => {
                    // An entry that cannot be looked at now is judged again
                    // under the lock too.
                    if area == Area::Done && !matches!(store.index_is_missing(&task), Ok(false)) {
                        suspects.ids.insert(id);
                    }
                }
                FileState::Task(_) => {
                    suspects.of_batches |= area == Area::Active;
                    suspects.ids.insert(id);
                }
                FileState::Bad(
                    kind @ (ProblemKind::NewerFormat { .. } | ProblemKind::TooLarge { .. }),
                ) => {
                    problems.push(problem(path, Some(id), kind, place));
                }
                FileState::Bad(_) => {
                    suspects.ids.insert(id);
                }
            }
        }
    }

    /// Judges task `id` under its stripe lock: each copy's own problems, and
    /// the copies together by the read rule (`find`).
    pub(super) fn check_task(
        &self,
        store: &FileBackend,
        id: &TaskId,
        problems: &mut Vec<Problem>,
    ) -> Result<()> {
        let _guard = match store.locks.lock(&store.fs, stripe(id)) {
            Ok(guard) => guard,
            Err(e) => {
                // Its lock file is itself a problem, reported with it.
                let name = task_name(id);
                problems.push(problem(
                    store.dir(Area::Active).join(&name),
                    Some(id.clone()),
                    unreadable_lock(&e),
                    Place::In(Sub::Active, name),
                ));
                return Ok(());
            }
        };
        let found = store.find(id).ok().flatten();
        let stale = found.as_ref().and_then(|f| f.stale);
        for area in [Area::Active, Area::Done] {
            let name = task_name(id);
            let path = store.dir(area).join(&name);
            let place = Place::In(Sub::area(area), name);
            match judge_file(store, area, id) {
                FileState::Bad(_) if stale.is_some_and(|s| s.area == area) => {
                    problems.push(problem(
                        path,
                        Some(id.clone()),
                        ProblemKind::StaleCopy { readable: false },
                        place,
                    ))
                }
                FileState::Bad(kind) => problems.push(problem(path, Some(id.clone()), kind, place)),
                FileState::Task(_) if stale.is_some_and(|s| s.area == area) => {
                    problems.push(problem(
                        path,
                        Some(id.clone()),
                        ProblemKind::StaleCopy { readable: true },
                        place,
                    ))
                }
                FileState::Task(_) | FileState::Missing => {}
            }
        }
        if let Some(found) = found {
            let kind = match (found.area, found.task.is_terminal()) {
                _ if found.is_interrupted_move() => Some(ProblemKind::InterruptedMove),
                (Area::Done, false) => Some(ProblemKind::Misplaced),
                (Area::Done, true) => match store.index_is_missing(&found.task) {
                    Ok(missing) => missing.then_some(ProblemKind::MissingIndexEntry),
                    // Not known missing: the entry (or the file) that could
                    // not be looked at is reported, as what it is.
                    Err(e) => {
                        problems.push(unlooked(store, id, e));
                        None
                    }
                },
                _ => None,
            };
            if let Some(kind) = kind {
                let name = task_name(id);
                problems.push(problem(
                    store.dir(found.area).join(&name),
                    Some(id.clone()),
                    kind,
                    Place::In(Sub::area(found.area), name),
                ));
            }
        }
        Ok(())
    }

    /// `expiring/`: names the index uses, regular files of mode `0600`;
    /// an entry that is not its task's file is a suspect, judged again
    /// under the task's lock.
    pub(super) fn check_expiring(
        &self,
        store: &FileBackend,
        names: &[OsString],
        stale: &mut Vec<(TaskId, OsString)>,
        problems: &mut Vec<Problem>,
        tick: &mut dyn FnMut(),
    ) {
        let dir = store.expiring.dir();
        for name in names {
            tick();
            let path = dir.join(name);
            let place = Place::In(Sub::Expiring, name.clone());
            let Some((position, _)) = layout::expiring_entry(name) else {
                problems.push(problem(path, None, ProblemKind::Foreign, place));
                continue;
            };
            let id = position.id;
            match self.plain_file(dir, name) {
                Ok(None) => {}
                Ok(Some(kind)) => {
                    problems.push(problem(path, Some(id), kind, place));
                    continue;
                }
                Err(Gone) => continue,
            }
            if store.index_is_stale(&id, name) {
                stale.push((id, name.clone()));
            }
        }
    }

    /// Judges the `expiring/` entry `name` of task `id` under the task's
    /// lock: stale if it is still not the task's file.
    pub(super) fn check_index(
        &self,
        store: &FileBackend,
        id: &TaskId,
        name: &OsStr,
        problems: &mut Vec<Problem>,
    ) -> Result<()> {
        let path = store.expiring.dir().join(name);
        let place = Place::In(Sub::Expiring, name.to_owned());
        let _guard = match store.locks.lock(&store.fs, stripe(id)) {
            Ok(guard) => guard,
            Err(e) => {
                problems.push(problem(path, Some(id.clone()), unreadable_lock(&e), place));
                return Ok(());
            }
        };
        if store.index_is_stale(id, name) {
            problems.push(problem(
                path,
                Some(id.clone()),
                ProblemKind::StaleIndexEntry,
                place,
            ));
        }
        Ok(())
    }

    /// `locks/`: only `NN.lock` files and `handles.lock`, regular, mode
    /// `0600`, and each one this process can open to lock (one another
    /// user made, root's, fails every lock of its stripe for the store's
    /// owner, whatever its mode).
    pub(super) fn check_locks(
        &self,
        dir: &Dir,
        names: &[OsString],
        problems: &mut Vec<Problem>,
        tick: &mut dyn FnMut(),
    ) {
        for name in names {
            tick();
            let path = dir.join(name);
            let place = Place::In(Sub::Locks, name.clone());
            if !(0..STRIPES).any(|i| lock_name(i) == *name)
                && name != HANDLES_LOCK
                && name != BATCHES_LOCK
            {
                problems.push(problem(path, None, ProblemKind::Foreign, place));
                continue;
            }
            match self.plain_file(dir, name) {
                Ok(Some(kind)) => problems.push(problem(path, None, kind, place)),
                Ok(None) => match self.fs.open_lock_file(dir, name) {
                    // A store on a read-only mount: nothing takes its locks
                    // to write.
                    Err(e) if e.kind() != io::ErrorKind::ReadOnlyFilesystem => {
                        let kind = ProblemKind::Unreadable {
                            error: format!("cannot be opened to take the lock: {e}"),
                        };
                        problems.push(problem(path, None, kind, place));
                    }
                    _ => {}
                },
                Err(Gone) => {}
            }
        }
    }

    /// What is wrong with `name` in `dir`, which should be a regular file
    /// of mode `0600` (a lock file, an index entry); `Err(Gone)` if it is
    /// gone.
    fn plain_file(
        &self,
        dir: &Dir,
        name: &OsStr,
    ) -> std::result::Result<Option<ProblemKind>, Gone> {
        Ok(match self.fs.stat(dir, name) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Gone),
            Err(e) => Some(unreadable(e)),
            Ok(s) if s.kind == Kind::Symlink => Some(ProblemKind::Symlink),
            Ok(s) if s.kind != Kind::File => Some(ProblemKind::NotAFile),
            Ok(s) if s.mode != FILE_MODE => Some(mode(s.mode, FILE_MODE)),
            Ok(_) => None,
        })
    }
}

/// An entry that went while it was being checked (a writer removed it).
struct Gone;

/// The problem of task `id`'s `expiring/` entry or `done/` file that could
/// not be looked at (`error`, from
/// [`index_is_missing`](FileBackend::index_is_missing), names which): as
/// the entry's own check reports it.
fn unlooked(store: &FileBackend, id: &TaskId, error: Error) -> Problem {
    let (path, kind) = match error {
        Error::Io { path, source, .. } => (path, unreadable(source)),
        other => (
            store.dir(Area::Done).join(task_name(id)),
            ProblemKind::Unreadable {
                error: other.to_string(),
            },
        ),
    };
    let name = path.file_name().unwrap_or_default().to_owned();
    let sub = if path.parent() == Some(store.expiring.dir().path()) {
        Sub::Expiring
    } else {
        Sub::Done
    };
    problem(path, Some(id.clone()), kind, Place::In(sub, name))
}

/// The names in the store's directories, read once at the start.
pub(super) struct Listing {
    pub(super) active: Vec<OsString>,
    pub(super) done: Vec<OsString>,
    pub(super) tmp: Vec<OsString>,
    pub(super) expiring: Vec<OsString>,
    pub(super) locks: Vec<OsString>,
}

impl Listing {
    pub(super) fn read(store: &FileBackend, locks: &Dir) -> Result<Listing> {
        let read = |dir: &Dir| {
            store
                .fs
                .read_dir(dir)
                .map_err(|e| Error::io("read directory", dir.path(), e))
        };
        // tmp/ first: a writer's temp file is renamed into an area, so one
        // read after the areas could miss it in both.
        let tmp = read(&store.tmp)?;
        Ok(Listing {
            tmp,
            active: store.active_names_whole()?,
            done: read(store.dir(Area::Done))?,
            expiring: read(store.expiring.dir())?,
            locks: read(locks)?,
        })
    }

    pub(super) fn total(&self) -> usize {
        self.active.len()
            + self.done.len()
            + self.tmp.len()
            + self.expiring.len()
            + self.locks.len()
    }

    pub(super) fn area(&mut self, area: Area) -> &mut Vec<OsString> {
        match area {
            Area::Active => &mut self.active,
            Area::Done => &mut self.done,
        }
    }
}

/// What task `id`'s file in `area` is: missing, a task, or a problem.
pub(crate) fn judge_file(store: &FileBackend, area: Area, id: &TaskId) -> FileState {
    let dir = store.dir(area);
    let name = task_name(id);
    match store.fs.stat(dir, &name) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return FileState::Missing,
        Err(e) => return FileState::Bad(unreadable(e)),
        Ok(s) if s.kind == Kind::Symlink => return FileState::Bad(ProblemKind::Symlink),
        Ok(s) if s.kind != Kind::File => return FileState::Bad(ProblemKind::NotAFile),
        Ok(_) => {}
    }
    match store.read_task(dir, &name, id) {
        Ok(None) => FileState::Missing,
        Ok(Some(task)) => FileState::Task(task),
        Err(Error::Corrupt { reason, .. }) => {
            FileState::Bad(classify_corrupt(store, dir, &name, id, reason))
        }
        Err(Error::UnsupportedFormat {
            found, supported, ..
        }) => FileState::Bad(ProblemKind::NewerFormat { found, supported }),
        Err(Error::FileTooLarge { size, limit, .. }) => {
            FileState::Bad(ProblemKind::TooLarge { size, limit })
        }
        Err(e) => FileState::Bad(ProblemKind::Unreadable {
            error: e.to_string(),
        }),
    }
}

/// A file `read_task` found corrupt: [`ProblemKind::WrongId`] if it is a
/// task file of another task (the rule that refused it is the codec's),
/// else [`ProblemKind::Corrupt`].
fn classify_corrupt(
    store: &FileBackend,
    dir: &Dir,
    name: &OsStr,
    id: &TaskId,
    reason: String,
) -> ProblemKind {
    let other = store
        .read_bytes(dir, name)
        .ok()
        .flatten()
        .and_then(|bytes| serde_json::from_slice::<Peek>(&bytes).ok())
        .map(|peek| peek.task.id)
        .filter(|found| found != id.as_str());
    match other {
        Some(found) => ProblemKind::WrongId { found },
        None => ProblemKind::Corrupt { reason },
    }
}

/// The tasks a check judges again under their locks.
#[derive(Default)]
pub(super) struct Suspects {
    pub ids: BTreeSet<TaskId>,
    /// Whether one may be a batch's between its halves (a terminal move's
    /// names in both areas, or its terminal version still in `active/`):
    /// then they are judged once the batches under way have ended.
    pub of_batches: bool,
}
