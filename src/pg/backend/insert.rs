//! The insert of a task under the active-task cap, and the counter the
//! cap is kept in, counted again when a change made outside the store put
//! it out.

use crate::backend::{Insert, Record};
use crate::error::{Error, Result};

use super::super::sql;
use super::row::Columns;
use super::statement::{db_error, failed};
use super::{BACKEND, PgBackend};

impl PgBackend {
    /// [`Backend::insert`](crate::backend::Backend::insert)'s one try: tried again for as long as the task
    /// in its place is removed between the insert and the read of it, and
    /// once after making the active-task counter's row again if the insert
    /// was refused because the row is gone (deleted by hand): with the
    /// count of the active rows, the sweep's [`recount`](Self::recount).
    pub(super) fn try_insert(&self, record: &Record, max_active: usize) -> Result<Insert> {
        let mut recounted = false;
        loop {
            match self.try_insert_once(record, max_active)? {
                Some(Insert::Full) if !recounted && !self.has_counter()? => {
                    self.recount()?;
                    recounted = true;
                }
                Some(inserted) => return Ok(inserted),
                None => {}
            }
        }
    }

    /// Whether the active-task counter's row is there: an insert the
    /// counter did not count was refused by the cap, or found no row.
    fn has_counter(&self) -> Result<bool> {
        let op = || {
            format!(
                "look for the active-task counter of schema {}",
                self.sql.schema
            )
        };
        Ok(!self.read(&op, &self.sql.counter, &[])?.is_empty())
    }

    /// Whether the active-task counter's row is there and counts the
    /// active rows, in one snapshot, taking no lock
    /// (`sql.counter_and_active`).
    pub(super) fn counter_agrees(&self) -> Result<bool> {
        let op = || format!("count the active tasks of schema {}", self.sql.schema);
        let rows = self.read(&op, &self.sql.counter_and_active, &[])?;
        let Some(row) = rows.first() else {
            return Ok(false);
        };
        let counter: Option<i64> = self.column(row, 0, "counters", &op)?;
        Ok(counter == Some(row.get::<_, i64>(1)))
    }

    /// One insert: `None` if a task was in its place and gone by the time
    /// it was read.
    fn try_insert_once(&self, record: &Record, max_active: usize) -> Result<Option<Insert>> {
        let task = record.task();
        let op = || format!("insert task {}", task.id);
        let columns = Columns::of(record, "insert")?;
        let cap = i64::try_from(max_active).unwrap_or(i64::MAX);
        // One statement, committed on its own: a refusal by the cap fails
        // it (`sql::UNCOUNTED`), and nothing of it commits.
        let rows = self.insert_query(
            &op,
            &self.sql.insert,
            &[
                &columns.id,
                &columns.created_at_ns,
                &columns.revision,
                &columns.status,
                &columns.active,
                &columns.expires_at_ns,
                &columns.json,
                &cap,
                &self.sql.channel,
            ],
        );
        let inserted: i64 = match rows {
            Ok(rows) => match rows.first() {
                Some(row) => self.column(row, 0, "tasks", &op)?,
                None => return Err(Error::backend(BACKEND, op(), "the insert returned no row")),
            },
            Err(e) if db_error(&e).is_some_and(sql::uncounted) => return Ok(Some(Insert::Full)),
            Err(e) => return Err(e),
        };
        if inserted == 0 {
            // Removed since (`None`): tried again.
            return Ok(self.current(&task.id, "insert")?.map(Insert::Exists));
        }
        self.recent.remember(record);
        Ok(Some(Insert::Done))
    }

    /// Counts the active rows again into the counter, if a change made
    /// outside the store put it out (rows deleted by hand, a table
    /// restored from a dump, the counter's own row deleted), for a sweep
    /// that found it out ([`counter_agrees`](Self::counter_agrees)) and
    /// for a create that finds the row gone: the counter's
    /// row lock first (the row made again at 0 if it is gone), then the
    /// count in a statement of its own, whose snapshot sees every write
    /// that changed the counter before (each write changes the row and the
    /// counter in one statement). Returns the counts before (`None`: no
    /// row) and after if it was out.
    pub(crate) fn recount(&self) -> Result<Option<(Option<i64>, i64)>> {
        let op = || format!("count the active tasks of schema {}", self.sql.schema);
        let mut conn = self.connection(op)?;
        // A failure that may have ended the connection closes it when
        // given back (`Connection::failed`).
        let broken = std::cell::Cell::new(false);
        let counted = self.recount_on(&mut conn.client, &|e| {
            broken.set(broken.get() || super::super::pool::may_end_session(&e));
            failed(op(), e)
        });
        if broken.get() {
            conn.fail();
        }
        counted
    }

    /// [`recount`](Self::recount) on `client`, each of the driver's errors
    /// made the store's by `failed`.
    fn recount_on(
        &self,
        client: &mut postgres::Client,
        failed: &dyn Fn(postgres::Error) -> Error,
    ) -> Result<Option<(Option<i64>, i64)>> {
        let op = || format!("count the active tasks of schema {}", self.sql.schema);
        let mut tx = client.transaction().map_err(failed)?;
        let lock = |tx: &mut postgres::Transaction<'_>| {
            tx.query_opt(&self.sql.lock_counter, &[])
                .map_err(failed)?
                .map(|row| self.column::<i64>(&row, 0, "counters", &op))
                .transpose()
        };
        let was = match lock(&mut tx)? {
            Some(was) => Some(was),
            None => {
                let made = tx.execute(&self.sql.make_counter, &[]).map_err(failed)?;
                // Made here (`None`), or by another sweep meanwhile: then
                // counted as ever.
                let now = lock(&mut tx)?;
                if made == 1 { None } else { now }
            }
        };
        let now = match tx.query_opt(&self.sql.recount, &[]).map_err(failed)? {
            Some(row) => Some(row.get::<_, i64>(0)),
            // Made again at 0, and 0 is right.
            None if was.is_none() => Some(0),
            None => None,
        };
        tx.commit().map_err(failed)?;
        if let Some(now) = now {
            match was {
                Some(was) => {
                    tracing::warn!(schema = %self.sql.schema, was, now, "the active-task counter was out (a change made outside the store); counted again")
                }
                None => {
                    tracing::warn!(schema = %self.sql.schema, now, "the active-task counter's row was gone (deleted outside the store); made again")
                }
            }
        }
        Ok(now.map(|now| (was, now)))
    }
}
