//! A task as its row holds it: the columns written beside its JSON
//! ([`Columns`], instants in nanoseconds), a column read as the store
//! wrote it, and the checks of a row read back (its task decoded, listed in
//! its place, what its columns say).

use std::collections::HashMap;

use postgres::types::FromSql;
use time::OffsetDateTime;

use crate::backend::{Record, Scan, Scope};
use crate::error::{Error, Result};
use crate::id::TaskId;
use crate::task::Task;

use super::statement::Described;
use super::{BACKEND, PgBackend};

/// The columns a task is stored with beside its JSON.
pub(super) struct Columns<'a> {
    pub(super) id: &'a str,
    pub(super) created_at_ns: i64,
    pub(super) revision: i64,
    pub(super) status: &'static str,
    pub(super) active: bool,
    pub(super) expires_at_ns: Option<i64>,
    pub(super) json: &'a str,
}

impl<'a> Columns<'a> {
    pub(super) fn of(record: &'a Record, op: &str) -> Result<Columns<'a>> {
        let task = record.task();
        let json = text(record.json(), op, &task.id)?;
        Ok(Columns {
            id: task.id.as_str(),
            created_at_ns: nanos(task.created_at, op, &task.id)?,
            revision: revision(task, op)?,
            status: task.status.as_str(),
            active: !task.is_terminal(),
            expires_at_ns: task.expires_at().map(saturating_nanos),
            json,
        })
    }
}

/// A task's JSON as the text column holds it.
fn text<'a>(json: &'a [u8], op: &str, id: &TaskId) -> Result<&'a str> {
    std::str::from_utf8(json).map_err(|e| Error::backend(BACKEND, format!("{op} task {id}"), e))
}

/// A version's stored JSON as the text column holds it, if known.
pub(super) fn stored_json<'a>(
    json: Option<&'a [u8]>,
    op: &str,
    id: &TaskId,
) -> Result<Option<&'a str>> {
    json.map(|json| text(json, op, id)).transpose()
}

/// `at` in Unix nanoseconds, the column type of every instant: exact to
/// the nanosecond (a `timestamptz` keeps microseconds only), from 1677 to
/// 2262.
pub(super) fn nanos(at: OffsetDateTime, op: &str, id: &TaskId) -> Result<i64> {
    i64::try_from(at.unix_timestamp_nanos()).map_err(|_| {
        Error::backend(
            BACKEND,
            format!("{op} task {id}"),
            format!("its time {at} is outside the years 1677 to 2262 this backend stores"),
        )
    })
}

/// `at` in Unix nanoseconds, clamped to the column's range.
pub(crate) fn saturating_nanos(at: OffsetDateTime) -> i64 {
    let nanos = at.unix_timestamp_nanos();
    i64::try_from(nanos).unwrap_or(if nanos < 0 { i64::MIN } else { i64::MAX })
}

pub(super) fn revision(task: &Task, op: &str) -> Result<i64> {
    i64::try_from(task.revision).map_err(|_| {
        Error::backend(
            BACKEND,
            format!("{op} task {}", task.id),
            format!("revision {} is over the column's range", task.revision),
        )
    })
}

pub(super) fn decode(id: &str, json: &str) -> std::result::Result<Task, String> {
    let task: Task = serde_json::from_str(json).map_err(|e| e.to_string())?;
    if task.id.as_str() != id {
        return Err(format!("the row holds task {}", task.id));
    }
    Ok(task)
}

/// `task`, read from a row listed at `created_at_ns`, if it lists there:
/// a task whose creation time is another (a hand edit of its `createdAt`)
/// is unreadable for a scan, which would return it out of order, and whose
/// caller pages on from the task's position, not the row's, past every row
/// between (`pg::a_row_listed_out_of_its_place_is_reported_and_hides_no_task_after_it`).
pub(super) fn listed_in_place(task: Task, created_at_ns: i64) -> std::result::Result<Task, String> {
    if task.created_at.unix_timestamp_nanos() == i128::from(created_at_ns) {
        return Ok(task);
    }
    Err(format!(
        "its task was created at {}, but its row lists it at {created_at_ns} ns since the epoch",
        task.created_at
    ))
}

/// `task`, read from a row `scan` picked by its columns (`active`,
/// `status`), if it is what they say: a task of another status (a hand
/// edit of its `status`) is unreadable for the scan, which would drop it
/// from the page unsaid
/// (`pg::a_row_whose_status_is_not_its_columns_is_reported_not_left_out_unsaid`).
pub(super) fn picked_as_its_columns(task: Task, scan: &Scan) -> std::result::Result<Task, String> {
    let picked = (scan.scope != Scope::Active || !task.status.is_terminal())
        && scan.status.is_none_or(|s| s == task.status);
    if picked {
        return Ok(task);
    }
    Err(format!(
        "its task is {}, which is not what its row's columns say",
        task.status.as_str()
    ))
}

impl PgBackend {
    /// Column `index` of `row`, selected from the store's `table` for
    /// `op`. A column whose type a hand edit changed (`ALTER TABLE … TYPE`),
    /// or that holds a NULL the store never writes, is an error naming the
    /// operation, the column and the type found, not a panic: checked here,
    /// where the row is read, it is caught whenever the change was made
    /// (and costs what `Row::get` does, which checks the same and panics).
    /// The counts the statements compute themselves are read with `get`:
    /// their type is the statement's, which no edit of a table changes.
    pub(super) fn column<'a, T: FromSql<'a>>(
        &self,
        row: &'a postgres::Row,
        index: usize,
        table: &str,
        op: &dyn Fn() -> String,
    ) -> Result<T> {
        row.try_get(index).map_err(|e| {
            let (name, kind) = row
                .columns()
                .get(index)
                .map_or(("?", "?".to_owned()), |c| (c.name(), c.type_().to_string()));
            Error::backend(
                BACKEND,
                op(),
                format!(
                    "column {}.{table}.{name} (of type {kind}) cannot be read: {}; was the \
                     table changed outside the store?",
                    self.sql.schema,
                    Described(e)
                ),
            )
        })
    }

    /// Where task `id` is stored, as an error or a report names it:
    /// `<schema>.tasks row "<id>"`.
    pub(super) fn row_of(&self, id: &str) -> String {
        format!("{}.tasks row {id:?}", self.sql.schema)
    }

    /// The row of task `id`, whose task cannot be decoded (`reason`): as
    /// the file store's undecodable task file, [`Error::Corrupt`] naming it.
    fn corrupt(&self, id: &str, reason: String) -> Error {
        Error::corrupt(self.row_of(id), reason)
    }

    /// The stored version of `id`, read after a conditional write missed.
    pub(super) fn current(&self, id: &TaskId, op: &str) -> Result<Option<Task>> {
        let op = || format!("{op} task {id}");
        let rows = self.read(&op, &self.sql.load, &[&id.as_str()])?;
        rows.first()
            .map(|row| {
                decode(id.as_str(), self.column(row, 0, "tasks", &op)?)
                    .map_err(|reason| self.corrupt(id.as_str(), reason))
            })
            .transpose()
    }

    /// The stored versions of `ids`, by id, read after a batch missed them.
    pub(super) fn current_all(
        &self,
        ids: &[&str],
        op: &str,
    ) -> Result<HashMap<String, Result<Task>>> {
        let op = || format!("{op} {} tasks", ids.len());
        let rows = self.read(&op, &self.sql.load_all, &[&ids])?;
        rows.iter()
            .map(|row| {
                let id: String = self.column(row, 0, "tasks", &op)?;
                let task = self.column(row, 1, "tasks", &|| format!("{} (task {id})", op()))?;
                let task = decode(&id, task).map_err(|reason| self.corrupt(&id, reason));
                Ok((id, task))
            })
            .collect()
    }
}
