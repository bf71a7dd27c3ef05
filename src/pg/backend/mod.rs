//! [`PgBackend`]: whole tasks in one table, each write one statement.
//!
//! This module holds the backend and its [`Backend`] implementation; its
//! submodules hold what that is made of: [`row`] (a task's columns and the
//! checks of a row read back), [`statement`] (statements run on a pooled
//! connection, made again or not, and the rules of their errors),
//! [`write`](mod@write) (one task's conditional write or removal, and what a failed
//! one finds), [`insert`] (the insert under the active-task cap, and the
//! counter counted again) and [`batch`] (many tasks in one statement, and
//! each alone where not).

mod batch;
mod insert;
mod row;
mod statement;
mod write;

pub(crate) use self::row::saturating_nanos;
pub(crate) use self::statement::{Described, failed};

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use postgres::types::ToSql;

use crate::backend::{
    Backend, Change, Decide, Insert, Modified, Record, Scan, Scanned, Skipped, Swap,
    UnreadableAction, modify_from,
};
use crate::changes::ChangeFeed;
use crate::error::{Error, Result};
use crate::id::TaskId;
use crate::task::Task;

use self::batch::Alone;
use self::row::{decode, listed_in_place, picked_as_its_columns};
use self::statement::{Again, known_unchanged};
use self::write::Found;
use super::clock::{ServerClock, ServerTime};
use super::feed::Listener;
use super::pool::Pool;
use super::recent::Recent;
use super::sql::{self, Sql};

/// The storage of a [`PgStore`](crate::PgStore): one table in a PostgreSQL
/// schema, shared by every handle on every host that connects to it.
///
/// Each write is one statement, committed before it returns (PostgreSQL's
/// durability: with `synchronous_commit = on`, the default, a returned write
/// is in the server's flushed WAL). Replacing and removing match the
/// version read (`id`, `created_at_ns`, `revision`) in the statement's
/// `WHERE`: the row lock decides races between hosts, and nothing is held
/// between statements.
///
/// The active-task cap is exact across hosts: a counter row, raised only
/// while below the cap in the insert's statement (which fails, so that
/// nothing of it commits, when the counter did not count its row), lowered
/// in the same statement as the terminal write or the removal of an active
/// task.
pub struct PgBackend {
    pool: Arc<Pool>,
    sql: Arc<Sql>,
    clock: Option<Arc<ServerClock>>,
    /// The versions this handle last wrote: `modify` decides on them and
    /// writes conditionally, without loading first.
    recent: Recent,
}

impl fmt::Debug for PgBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgBackend")
            .field("schema", &self.sql.schema)
            .field("pool_size", &self.pool.size())
            .finish_non_exhaustive()
    }
}

/// The largest task (its JSON, in bytes) this backend stores: 1 MiB under
/// 1 GiB. PostgreSQL holds at most 1 GiB less one byte in one value, and
/// takes no message of a client's larger than that; a task's JSON goes as
/// one value of one statement, beside its few other parameters (its id,
/// times, status, the notify channel: well under the 1 MiB left). A batch
/// of tasks larger than that together would fail as one (the server drops
/// its connection), so batches are cut by size ([`batch::BATCH_BYTES`]).
const PG_LARGEST_TASK: usize = (1 << 30) - (1 << 20);

/// The name every error of this backend carries.
pub(crate) const BACKEND: &str = "postgres";

impl PgBackend {
    pub(crate) fn new(
        pool: Arc<Pool>,
        sql: Arc<Sql>,
        clock: Option<Arc<ServerClock>>,
    ) -> PgBackend {
        PgBackend {
            pool,
            sql,
            clock,
            recent: Recent::default(),
        }
    }

    /// The offset to the server's clock as last measured, if the store goes
    /// by it ([`TimeSource::Server`](crate::TimeSource::Server)).
    pub fn server_time(&self) -> Option<ServerTime> {
        self.clock.as_ref().map(|c| c.server_time())
    }

    /// The schema this backend's table lives in.
    pub fn schema(&self) -> &str {
        &self.sql.schema
    }

    /// The notification channel every write of this schema notifies
    /// (`taskstore:<schema>`, the task id as payload), unless the handle
    /// was opened without change notices.
    pub fn channel(&self) -> &str {
        &self.sql.channel
    }
}

impl Backend for PgBackend {
    fn load(&self, id: &TaskId) -> Result<Option<Task>> {
        self.current(id, "load")
    }

    /// One statement for them all (`load_all`). A row that does not decode
    /// is its task's `Error::Corrupt` alone; a statement that fails (the
    /// server out of reach, say) is each task's error, naming the task:
    /// loading each on its own then would try the server once a task.
    fn load_all(&self, ids: &[TaskId]) -> Vec<Result<Option<Task>>> {
        if ids.len() < 2 {
            return ids.iter().map(|id| self.load(id)).collect();
        }
        let names: Vec<&str> = ids.iter().map(TaskId::as_str).collect();
        let mut found = match self.current_all(&names, "load") {
            Ok(found) => found,
            Err(e) => {
                let why = match &e {
                    Error::Backend { source, .. } => source.to_string(),
                    other => other.to_string(),
                };
                let others = ids.len() - 1;
                return ids
                    .iter()
                    .map(|id| {
                        let op = format!("load task {id} (in one statement with {others} others)");
                        Err(Error::backend(BACKEND, op, why.clone()))
                    })
                    .collect();
            }
        };
        let mut seen = HashSet::new();
        ids.iter()
            .map(|id| {
                let first = seen.insert(id);
                match found.remove(id.as_str()) {
                    Some(Ok(task)) => Ok(Some(task)),
                    None if first => Ok(None),
                    // A row that does not decode, or an id given again (its
                    // row taken by the first): its own load answers.
                    _ => self.load(id),
                }
            })
            .collect()
    }

    /// An insert whose reply was lost after the commit (the connection
    /// dropped) finds the task stored exactly as it was to write it, and
    /// is done. Its failure, the server's refusal or one before sending, is
    /// known to have changed nothing (`known_unchanged`). One sent that
    /// finds no task is not made again: another may have deleted what it
    /// wrote (`pg_linearizable` caught a create made twice so). So it is
    /// sent only on a connection the server was heard from on since it
    /// was taken from the pool (`Again::Looked` in `statement.rs`).
    fn insert(&self, record: &Record, max_active: usize) -> Result<Insert> {
        match self.try_insert(record, max_active) {
            Err(e) if matches!(self.found(&e, record, "insert", None), Found::Written) => {
                Ok(Insert::Done)
            }
            inserted => known_unchanged(inserted),
        }
    }

    /// A write whose reply was lost after the commit (the connection
    /// dropped) finds the task stored exactly as it was to write it, and is
    /// done.
    fn replace(&self, current: &Task, next: &Record) -> Result<Swap> {
        self.replace_at(current, None, next)
    }

    fn remove(&self, current: &Task) -> Result<Swap> {
        self.remove_at(current, None)
    }

    /// Decides on the version this handle last wrote, if it kept it, and
    /// writes only if that is still the stored version, to its stored JSON
    /// (one round trip); otherwise, or to keep the task or refuse the
    /// change, as the default: on the version loaded (see `pg::recent`).
    fn modify(&self, id: &TaskId, decide: &mut Decide<'_>) -> Result<Modified> {
        let Some(guess) = self.recent.get(id) else {
            return modify_from(self, self.load(id)?, decide);
        };
        let (task, json) = (guess.task(), Some(guess.json()));
        let stored = match decide(task) {
            Ok(Change::Replace(next)) => match self.replace_at(task, json, &next)? {
                Swap::Done => return Ok(Modified::Replaced(next.into_task())),
                Swap::Changed(now) => now,
            },
            Ok(Change::Remove) => match self.remove_at(task, json)? {
                Swap::Done => return Ok(Modified::Removed(task.clone())),
                Swap::Changed(now) => now,
            },
            Ok(Change::Keep) | Err(_) => self.load(id)?,
        };
        modify_from(self, stored, decide)
    }

    fn scan(&self, scan: &Scan) -> Result<Scanned> {
        let op = || format!("scan schema {}", self.sql.schema);
        let status = scan.status.map(|s| s.as_str());
        // Past the column's range every stored expiry is at or before it;
        // the rows are checked exactly below.
        let expired_at = scan.expired_at.map(saturating_nanos);
        let owned = scan.owner.as_deref().map(sql::owner_param);
        // The position rows are taken after: the scan's, then the last row
        // taken, as stored (an unreadable row has no position of its own).
        let mut after: Option<(i64, String)> = scan
            .after
            .as_ref()
            .map(|p| (saturating_nanos(p.created_at), p.id.as_str().to_owned()));
        let (mut tasks, mut skipped) = (Vec::new(), Vec::new());
        // `LIMIT` counts rows, and a row may be left out (unreadable, or
        // outside the scan by its exact keys): a batch is short only where
        // the rows end, so the rows left out are made up by more.
        loop {
            let want = scan.limit - tasks.len();
            let limit = i64::try_from(want).unwrap_or(i64::MAX);
            let mut params: Vec<&(dyn ToSql + Sync)> = vec![&limit];
            if let Some(status) = &status {
                params.push(status);
            }
            if let Some(at) = &expired_at {
                params.push(at);
            }
            if let Some(owned) = &owned {
                params.push(owned);
            }
            if let Some((at, id)) = &after {
                params.push(at);
                params.push(id);
            }
            let (mut rows, mut last) = (0, None);
            // Each row shaped before the next is taken: a scan without
            // payloads holds one whole row at a time, not the batch.
            let sql = self.sql.scan(scan, after.is_some());
            self.run_each(&op, &sql, &params, Again::Read, |row| {
                rows += 1;
                let id: &str = self.column(&row, 0, "tasks", &op)?;
                let of_task = || format!("{} (task {id})", op());
                let at: i64 = self.column(&row, 2, "tasks", &of_task)?;
                let task = decode(id, self.column(&row, 1, "tasks", &of_task)?)
                    .and_then(|task| listed_in_place(task, at))
                    .and_then(|task| picked_as_its_columns(task, scan));
                match task {
                    Ok(task) if scan.matches(&task) && scan.owns(&task) => {
                        tasks.push(scan.shape(task));
                    }
                    Ok(_) => {}
                    Err(reason) => skipped.push(Skipped::new(
                        TaskId::parse(id).ok(),
                        self.row_of(id),
                        reason,
                        UnreadableAction::LeftInPlace,
                    )),
                }
                last = Some((at, id.to_owned()));
                Ok(())
            })?;
            if rows < want || tasks.len() == scan.limit {
                return Ok(Scanned::new(tasks, skipped));
            }
            after = last;
        }
    }

    /// In one statement where it can, and task by task where not (see
    /// `batch`); after a batch that may have committed unanswered,
    /// `replace_found` tells what it wrote. A task left out of a batch
    /// that committed, of one the server refused, or written alone, is a
    /// write of its own: a task found stored as it was to write it was
    /// written by another call (of this handle, at the same instant), not
    /// by this one (`replace` itself tells a lost reply of its own). Its
    /// failure, the server's refusal or one before sending, is known to
    /// have changed nothing (`known_unchanged`); after a batch that may
    /// have committed, no failure is.
    /// Cut into batches of at most `BATCH_BYTES` of
    /// JSON: a statement over PostgreSQL's 1 GiB message failed whole,
    /// its connection lost, and every task was then written alone (a reap
    /// of 70 orphans at the default 16 MiB cap did so:
    /// `pg_largest::a_reap_of_orphans_larger_than_a_message_together_keeps_its_connection`).
    fn replace_all(&self, swaps: &[(Task, Record)]) -> Vec<Result<Swap>> {
        let mut results = Vec::with_capacity(swaps.len());
        for swaps in batch::by_size(swaps, |(_, next)| next.json().len()) {
            results.extend(self.batch(
                "replace",
                swaps,
                |(current, _)| current,
                || self.try_replace_all(swaps),
                |(current, next), why| match why {
                    Alone::Unanswered => self.replace_found(current, next),
                    Alone::Unbatched | Alone::Refused | Alone::LeftOut => {
                        known_unchanged(self.replace(current, next))
                    }
                },
            ));
        }
        results
    }

    /// The rules pass expired tasks alone, and an expired task is gone
    /// whoever removed it: after a removal that may have committed though
    /// it failed (its reply lost), a task no longer stored counts as
    /// removed by this call (two passes may then both count it), not as
    /// removed by another. A sweep's removals
    /// ([`remove_expired`](Backend::remove_expired)) are these.
    fn remove_all(&self, tasks: &[Task]) -> Vec<Result<Swap>> {
        self.remove_batch(tasks)
    }

    /// Counts the active rows again into the counter, if it was out: a
    /// corrected counter counts as one leftover cleaned. A read that takes
    /// no lock tells first whether it is out: a counter that is right (the
    /// rule) costs a sweep no wait for a writer holding the counter's row
    /// and no commit of its own.
    fn clean_up(&self, cleaned: &mut usize) -> Result<()> {
        if !self.counter_agrees()? && self.recount()?.is_some() {
            *cleaned += 1;
        }
        Ok(())
    }

    fn changes(&self) -> Option<ChangeFeed> {
        if !self.sql.notifies {
            // Its own writes would not show there.
            return None;
        }
        Some(ChangeFeed::new(Listener::new(
            self.pool.config().clone(),
            self.sql.channel.clone(),
        )))
    }

    fn refresh_clock(&self) {
        if let Some(clock) = &self.clock {
            clock.refresh_if_due();
        }
    }

    fn largest_task(&self) -> usize {
        PG_LARGEST_TASK
    }
}
