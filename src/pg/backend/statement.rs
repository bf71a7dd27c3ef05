//! Statements run on a pooled connection ([`PgBackend::run_each`]),
//! made again or not ([`Again`]), and the rules their errors follow: what
//! the server said ([`failed`]), whether a failure changed nothing
//! ([`refused`]) and whether the server ended the session
//! ([`ended_by_server`]).

use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;

use crate::error::{Error, Known, Result};

use super::super::pool::Lease;
use super::{BACKEND, PgBackend};

pub(crate) fn failed(op: impl Into<String>, source: postgres::Error) -> Error {
    Error::backend(BACKEND, op, Described(source))
}

/// A client error that says what the server said: `postgres::Error` alone
/// displays as "db error" and leaves the server's message to its source.
/// Its own source is the client's error. A connection string that does
/// not parse is said so too: "invalid connection string" alone names no
/// option (`PgStore`'s open).
#[derive(Debug)]
pub(crate) struct Described(pub(crate) postgres::Error);

impl std::fmt::Display for Described {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_db_error() {
            // The server names the statement its session refused, and the
            // store's writes are `SELECT`s around their `INSERT` or
            // `UPDATE`: "cannot execute SELECT in a read-only transaction"
            // says nothing of why a write failed.
            Some(db) if *db.code() == postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION => {
                write!(
                    f,
                    "the database is read-only (SQLSTATE {}: a standby, or \
                     `default_transaction_read_only` set for the database, role or server): \
                     its sessions take no writes, and nothing was written",
                    db.code().code()
                )
            }
            Some(db) => {
                write!(
                    f,
                    "{} {}: {}",
                    db.severity(),
                    db.code().code(),
                    db.message()
                )?;
                if let Some(detail) = db.detail() {
                    write!(f, " ({detail})")?;
                }
                Ok(())
            }
            None => match std::error::Error::source(&self.0) {
                Some(cause) => write!(f, "{}: {cause}", self.0),
                None => write!(f, "{}", self.0),
            },
        }
    }
}

impl std::error::Error for Described {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Whether a statement that failed with its connection is made again.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Again {
    /// Never, once sent: it may have written (a write whose reply was
    /// lost is recovered by reading what is stored instead, and made again
    /// only if that shows it changed nothing: [`Found::Untouched`](super::write::Found::Untouched)). One
    /// whose preparation failed with its connection was never sent, and is
    /// made again as a read is.
    Never,
    /// Once, on another connection, if it failed with its connection (not
    /// the server's refusal: [`may_end_session`](super::super::pool::may_end_session))
    /// before any row came: it writes nothing, so making it again changes
    /// nothing. A connection the server ended moments after its last use
    /// (a restart, a failover, an administrator's `pg_terminate_backend`)
    /// is not seen closed when taken from the pool, and the statement the
    /// next call sends on it fails: a read then fails no caller.
    Read,
    /// Never, once sent, as [`Again::Never`]; and sent only on a connection
    /// the server was heard from on since it was taken from the pool
    /// ([`Connection::look`](super::super::pool::Connection::look) first,
    /// if not): a write that nothing read back tells unsent once it failed
    /// sent, an insert (a task not found after it may have been written
    /// and deleted since). A look that fails, as a preparation that fails,
    /// sent nothing, and the statement goes to another connection once. A
    /// connection the server ended moments after its last use (a restart,
    /// a failover, an administrator's `pg_terminate_backend`) is not seen
    /// closed when taken from the pool (`pool::LOOK_AFTER`): the look finds
    /// it ended before the insert is sent
    /// (`pg::creates_on_connections_the_server_ended_a_moment_ago_all_succeed`).
    Looked,
}

/// `e`, known to have come before its statement was sent
/// ([`Known::Unsent`]: no connection, none free within the wait, or the
/// connect failed, a `FATAL` at start-up among them: `max_connections`
/// reached, the server starting up; or the statement's preparation, or
/// the look at its connection before it ([`Again::Looked`]), failed), which
/// therefore changed nothing.
fn unsent(e: Error) -> Error {
    e.known(Known::Unsent)
}

/// `result` of a write that no earlier statement of its call may have
/// applied: a failure that changed nothing ([`refused`]) is the call's too
/// ([`Error::known_to_have_changed_nothing`]), so that the store's rules
/// neither leave a claim to lapse nor undo a create for it.
pub(super) fn known_unchanged<T>(result: Result<T>) -> Result<T> {
    result.map_err(|e| {
        if refused(&e) {
            e.known_to_have_changed_nothing()
        } else {
            e
        }
    })
}

impl PgBackend {
    pub(super) fn connection(&self, op: impl FnOnce() -> String) -> Result<Lease<'_>> {
        if let Some(clock) = &self.clock {
            clock.refresh_if_due();
        }
        // Whether no connect worked or none came free within the pool's
        // wait, the statement was never sent, and the next would meet the
        // same (`Known::Unconnected`).
        self.pool.get().map_err(|e| {
            unsent(e.into_error(format!("connect to {}", op()))).known(Known::Unconnected)
        })
    }

    /// Runs `sql` with `params` on a pooled connection.
    pub(super) fn query(
        &self,
        op: &dyn Fn() -> String,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<postgres::Row>> {
        self.rows(op, sql, params, Again::Never)
    }

    /// [`query`](Self::query) of an insert ([`Again::Looked`]).
    pub(super) fn insert_query(
        &self,
        op: &dyn Fn() -> String,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<postgres::Row>> {
        self.rows(op, sql, params, Again::Looked)
    }

    /// [`query`](Self::query) of a statement that writes nothing
    /// ([`Again::Read`]).
    pub(super) fn read(
        &self,
        op: &dyn Fn() -> String,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<postgres::Row>> {
        self.rows(op, sql, params, Again::Read)
    }

    /// The rows of `sql` run with `params` ([`run_each`](Self::run_each)).
    fn rows(
        &self,
        op: &dyn Fn() -> String,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        again: Again,
    ) -> Result<Vec<postgres::Row>> {
        let mut rows = Vec::new();
        self.run_each(op, sql, params, again, |row| {
            rows.push(row);
            Ok(())
        })?;
        Ok(rows)
    }

    /// Runs `sql` with `params` on a pooled connection, handing each row to
    /// `each` as the server sends it (the first error `each` returns ends
    /// the query): the client reads no further ahead than the row taken, so
    /// a caller that keeps less than each row holds one row at a time, not
    /// the result. Made again as `again` says.
    pub(super) fn run_each(
        &self,
        op: &dyn Fn() -> String,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        again: Again,
        mut each: impl FnMut(postgres::Row) -> Result<()>,
    ) -> Result<()> {
        let mut tried = false;
        loop {
            let mut conn = self.connection(op)?;
            // Whether a row reached `each`: then the statement is not made
            // again, whatever it is.
            let mut handed = false;
            // The driver's error (`Err`), or what `each` made of the rows.
            let run = (|| {
                let statement = conn.prepared(sql).map_err(|e| (e, true))?;
                if again == Again::Looked {
                    // A look that fails sent nothing, as a preparation.
                    conn.look().map_err(|e| (e, true))?;
                }
                let mut rows = conn
                    .client
                    .query_raw(&statement, params.iter().copied())
                    .map_err(|e| (e, false))?;
                while let Some(row) = rows.next().map_err(|e| (e, false))? {
                    handed = true;
                    if let Err(e) = each(row) {
                        return Ok(Err(e));
                    }
                }
                Ok(Ok(()))
            })();
            let (e, preparing) = match run {
                Ok(done) => return done,
                Err(failure) => failure,
            };
            let e = conn.failed(e);
            // A statement whose preparation (or look) failed was never
            // sent, and is made again as a read is, whatever it writes.
            let unsent_or_read = preparing || (again == Again::Read && !handed);
            if unsent_or_read && !tried && super::super::pool::may_end_session(&e) {
                // Closed as it goes back; the next is another.
                drop(conn);
                tried = true;
                continue;
            }
            let e = failed(op(), e);
            return Err(if preparing { unsent(e) } else { e });
        }
    }
}

/// Whether `e` is the server's word that it ended the session (a `FATAL`
/// reply: an administrator's `pg_terminate_backend`, a restart, a session
/// timeout): the server process that sent it commits nothing after, so a
/// write it had not committed by then never will be. Not a link's failure
/// (a reset, a timeout), after which the server may still be running the
/// statement, and commit it later.
pub(super) fn ended_by_server(e: &Error) -> bool {
    db_error(e).is_some_and(|db| {
        matches!(
            db.parsed_severity(),
            Some(postgres::error::Severity::Fatal | postgres::error::Severity::Panic)
        )
    })
}

/// Whether `e` says its statement changed nothing: it was never sent
/// ([`Known::Unsent`]), or the server refused it (an `ERROR` reply: a statement
/// of its own transaction is rolled back whole). Any other failure may
/// have come after the commit.
pub(super) fn refused(e: &Error) -> bool {
    e.is_known(Known::Unsent)
        || db_error(e)
            .is_some_and(|db| db.parsed_severity() == Some(postgres::error::Severity::Error))
}

/// The server's error reply `e` carries, if it carries one.
pub(super) fn db_error(e: &Error) -> Option<&postgres::error::DbError> {
    e.backend_source()?
        .downcast_ref::<Described>()
        .and_then(|described| described.0.as_db_error())
}
