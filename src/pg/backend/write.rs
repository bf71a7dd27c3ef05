//! One task's conditional write or removal, on the version read (and,
//! for a guess, its JSON), and what a failed one finds when its task is
//! read back ([`Found`]): written, untouched and made again once, or
//! neither.

use crate::backend::{Record, Swap, is_current};
use crate::error::{Error, Known, Result};
use crate::task::Task;

use super::row::{Columns, nanos, revision, stored_json};
use super::statement::{ended_by_server, refused};
use super::{BACKEND, PgBackend};

impl PgBackend {
    /// What a conditional write of `current` did, from the one-row count
    /// it returned: done, or missed (then the stored version, read again).
    fn swapped(
        &self,
        rows: &[postgres::Row],
        current: &Task,
        stored: Option<&str>,
        op: &str,
    ) -> Result<Swap> {
        let written: i64 = rows.first().map_or(0, |row| row.get(0));
        if written == 1 {
            return Ok(Swap::Done);
        }
        let now = self.current(&current.id, op)?;
        if let Some(now) = &now
            && stored.is_none()
            && (now.created_at, now.revision) == (current.created_at, current.revision)
        {
            // Missed, yet the task reads as the version the write was
            // conditioned on: the row's columns say another. A write would
            // miss again, for ever. (A write conditioned on a guess's JSON
            // too misses another version that shares its creation time and
            // revision: it is decided again on the version stored.)
            return Err(Error::backend(
                BACKEND,
                format!("{op} task {}", current.id),
                format!(
                    "the row's task (revision {}) disagrees with the row's own columns: \
                     the row was changed outside the store",
                    now.revision
                ),
            ));
        }
        Ok(Swap::Changed(now))
    }

    fn delta(current: &Task, next: &Task) -> i64 {
        i64::from(!next.is_terminal()) - i64::from(!current.is_terminal())
    }

    /// Whether `stored` is `record`'s task exactly, as a write of it would
    /// have left it (then remembered, as any version this handle wrote).
    pub(super) fn written(&self, stored: &Task, record: &Record) -> bool {
        let done = *stored == *record.task();
        if done {
            self.recent.remember(record);
        }
        done
    }

    /// Writes `next` over `current` if that is still the stored version
    /// (and, with `stored`, its JSON exactly that: a guess's). A write
    /// whose reply was lost after the commit (the connection dropped) finds
    /// the task stored exactly as it was to write it, and is done.
    ///
    /// A write that failed with the server's `FATAL` reply, and finds the
    /// task stored as the version it was conditioned on, changed nothing
    /// (a commit would have moved the revision on) and never will: it is
    /// made again once, on another connection ([`Found::Untouched`]).
    pub(super) fn replace_at(
        &self,
        current: &Task,
        stored: Option<&[u8]>,
        next: &Record,
    ) -> Result<Swap> {
        let mut again = true;
        loop {
            let e = match self.try_replace_at(current, stored, next) {
                Err(e) => e,
                // Made again, it missed the first try, which committed
                // after all: done.
                Ok(Swap::Changed(Some(now))) if !again && self.written(&now, next) => {
                    return Ok(Swap::Done);
                }
                other => return other,
            };
            if refused(&e) {
                // Changed nothing; if the task moved on meanwhile (a write
                // a lock or statement timeout ended while it waited on
                // another's row), that is the answer, as a write that
                // found it changed: not a failure, which a claim would
                // take for one that may stand, and disown (the other's
                // claim, if it was this handle's). Not after a connect
                // that failed: the read would connect again, in vain.
                if e.is_known(Known::Unconnected) {
                    return Err(e);
                }
                return match self.current(&current.id, "replace") {
                    Ok(now) if !now.as_ref().is_some_and(|now| is_current(now, current)) => {
                        Ok(Swap::Changed(now))
                    }
                    _ => Err(e),
                };
            }
            match self.found(&e, next, "replace", Some(current)) {
                Found::Written => return Ok(Swap::Done),
                Found::Untouched if std::mem::take(&mut again) => {}
                Found::Untouched | Found::Neither => return Err(e),
            }
        }
    }

    fn try_replace_at(&self, current: &Task, stored: Option<&[u8]>, next: &Record) -> Result<Swap> {
        let op = || format!("replace task {}", current.id);
        let columns = Columns::of(next, "replace")?;
        let stored = stored_json(stored, "replace", &current.id)?;
        let rows = self.query(
            &op,
            &self.sql.replace,
            &[
                &current.id.as_str(),
                &nanos(current.created_at, "replace", &current.id)?,
                &revision(current, "replace")?,
                &columns.created_at_ns,
                &columns.revision,
                &columns.status,
                &columns.active,
                &columns.expires_at_ns,
                &columns.json,
                &Self::delta(current, next.task()),
                &self.sql.channel,
                &stored,
            ],
        )?;
        let swap = self.swapped(&rows, current, stored, "replace")?;
        match &swap {
            Swap::Done => self.recent.remember(next),
            Swap::Changed(_) => self.recent.forget(&current.id),
        }
        Ok(swap)
    }

    /// Removes `current` if that is still the stored version (and, with
    /// `stored`, its JSON exactly that: a guess's). A removal that failed
    /// with the server's `FATAL` reply, and finds the task stored as that
    /// version, changed nothing and never will, and is made again once, as
    /// a conditional write is ([`Found::Untouched`]; one that finds the
    /// task gone may have committed, or another removed it: it fails,
    /// since only one removal may say it removed the task).
    pub(super) fn remove_at(&self, current: &Task, stored: Option<&[u8]>) -> Result<Swap> {
        match self.try_remove_at(current, stored) {
            Err(e) if !refused(&e) && ended_by_server(&e) => {
                match self.current(&current.id, "remove") {
                    Ok(now) if ended_untouched(&e, now.as_ref(), current) => {
                        self.try_remove_at(current, stored)
                    }
                    _ => Err(e),
                }
            }
            removed => removed,
        }
    }

    fn try_remove_at(&self, current: &Task, stored: Option<&[u8]>) -> Result<Swap> {
        let op = || format!("remove task {}", current.id);
        let Ok(created_at_ns) = nanos(current.created_at, "remove", &current.id) else {
            // No row holds a version made at a time no row can store (a
            // failed create's, undone): whatever is stored differs.
            return Ok(Swap::Changed(self.current(&current.id, "remove")?));
        };
        let stored = stored_json(stored, "remove", &current.id)?;
        let rows = self.query(
            &op,
            &self.sql.remove,
            &[
                &current.id.as_str(),
                &created_at_ns,
                &revision(current, "remove")?,
                &self.sql.channel,
                &stored,
            ],
        )?;
        // Removed, or changed since: no guess either way.
        self.recent.forget(&current.id);
        self.swapped(&rows, current, stored, "remove")
    }

    /// After a write of `record` failed (`op`) with `e`: what its task,
    /// read back, says of it, if it may have committed (`e` is not one
    /// that changed nothing: [`refused`]). `conditioned_on` is the
    /// version the write was conditioned on (none for an insert, which is
    /// never made again so). A failure that changed nothing is not read
    /// back ([`Found::Neither`]).
    pub(super) fn found(
        &self,
        e: &Error,
        record: &Record,
        op: &str,
        conditioned_on: Option<&Task>,
    ) -> Found {
        if refused(e) {
            return Found::Neither;
        }
        match self.current(&record.task().id, op) {
            Ok(Some(stored)) if self.written(&stored, record) => Found::Written,
            Ok(stored)
                if conditioned_on.is_some_and(|at| ended_untouched(e, stored.as_ref(), at)) =>
            {
                Found::Untouched
            }
            _ => Found::Neither,
        }
    }

    /// [`found`](Self::found) for the removal of `task`:
    /// whether it may have committed and the task is gone.
    pub(super) fn found_removed(&self, e: &Error, task: &Task) -> bool {
        !refused(e) && matches!(self.current(&task.id, "remove"), Ok(None))
    }
}

/// What a task read back after a write of it failed says of the write
/// ([`PgBackend::found`]).
pub(super) enum Found {
    /// Stored exactly as the write was to leave it: the write is done (its
    /// reply was lost after the commit).
    Written,
    /// Stored as the version the write was conditioned on, and the write
    /// failed with the server's `FATAL` reply ([`ended_by_server`]): it
    /// changed nothing and never will, and is made again once (a
    /// conditional write alone: an insert that finds no task may have
    /// been deleted since). A connection the server ended a
    /// moment after its last use (a restart, a failover, an
    /// administrator's `pg_terminate_backend`) is not seen closed when
    /// taken from the pool (`pool::LOOK_AFTER`), and the write sent on it
    /// fails: made again on another connection, it fails no caller
    /// (`pg::a_write_on_a_connection_the_server_ended_a_moment_ago_succeeds`).
    Untouched,
    /// Anything else: another's write, or the read failed.
    Neither,
}

/// Whether a write conditioned on `current` that failed with `e`, its task
/// read back as `stored`, changed nothing and never will: the server ended
/// the session ([`ended_by_server`]), and the task is still that version
/// (a commit would have moved its revision on). Such a write is made again
/// once ([`Found::Untouched`]; a removal alike).
fn ended_untouched(e: &Error, stored: Option<&Task>, current: &Task) -> bool {
    ended_by_server(e) && stored.is_some_and(|now| is_current(now, current))
}
