//! List queries, pages, cursors, and the one paging function every backend
//! is listed through.

use time::OffsetDateTime;

use crate::backend::{self, Backend, Position, Scan, Scope, Skipped};
use crate::error::{Error, Result};
use crate::id::TaskId;
use crate::task::{Task, TaskStatus};

/// Which tasks [`TaskStore::list`](crate::TaskStore::list) returns.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct ListQuery {
    active_only: bool,
    status: Option<TaskStatus>,
    owner: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

impl ListQuery {
    /// Every live task, terminal ones included (reads history).
    pub fn all() -> ListQuery {
        ListQuery {
            active_only: false,
            status: None,
            owner: None,
            limit: None,
            after: None,
        }
    }

    /// Non-terminal tasks only: its cost follows the number of active tasks,
    /// never history.
    pub fn active() -> ListQuery {
        ListQuery {
            active_only: true,
            ..ListQuery::all()
        }
    }

    /// Only tasks with this status.
    pub fn status(mut self, status: TaskStatus) -> ListQuery {
        self.status = Some(status);
        self
    }

    /// Only tasks owned by this instance id ([`Task::owner`]). Over
    /// PostgreSQL the server filters the rows, and the listing reads the
    /// owner's tasks alone. Over a backend that reads others too (the file
    /// store, memory), the listing reads a page's worth first, then
    /// batches of at least 256 tasks while it looks for the owner's,
    /// however small the page: a page of one task owned by an instance
    /// that owns few is not read one task at a time.
    pub fn owner(mut self, owner: impl Into<String>) -> ListQuery {
        self.owner = Some(owner.into());
        self
    }

    /// At most `limit` tasks per page (unlimited by default). A limit of 0
    /// is refused by `list` with [`Error::InvalidQuery`]: a page that can
    /// hold nothing would be indistinguishable from the end.
    pub fn limit(mut self, limit: usize) -> ListQuery {
        self.limit = Some(limit);
        self
    }

    /// Continues after a [`Page::next_cursor`]: after its position in the
    /// listing order (creation time, then id), which stays valid when the
    /// task it names is finished or deleted. A cursor from a listing of
    /// another filter, or another store, is taken as that position too.
    pub fn after(mut self, cursor: &str) -> ListQuery {
        self.after = Some(cursor.to_owned());
        self
    }

    /// Checks the query as [`TaskStore::list`](crate::TaskStore::list)
    /// does before it does any work: for a host (or a command) that takes a
    /// client's cursor and would refuse a bad one before it opens or
    /// touches a store.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidQuery`] for a page of zero tasks,
    /// [`Error::InvalidCursor`] for a cursor that does not decode as one.
    /// A cursor is a position (creation time, id): a well-formed one is
    /// accepted whichever store or filter handed it out, and continues
    /// after its position, whether or not a task is there.
    pub fn check(&self) -> Result<()> {
        self.checked().map(drop)
    }

    /// The decoded cursor, once the query is checked ([`check`](Self::check)).
    fn checked(&self) -> Result<Option<Position>> {
        if self.limit == Some(0) {
            return Err(Error::InvalidQuery {
                reason: "limit(0): a page holds at least one task",
            });
        }
        self.cursor()
    }

    /// Whether the query can only match non-terminal tasks: then history is
    /// never read.
    fn scope(&self) -> Scope {
        if self.active_only || self.status.is_some_and(|s| !s.is_terminal()) {
            Scope::Active
        } else {
            Scope::All
        }
    }

    /// The decoded cursor, checked before any work is done.
    fn cursor(&self) -> Result<Option<Position>> {
        self.after
            .as_deref()
            .map(|raw| Cursor::decode(raw).map(|c| c.0))
            .transpose()
    }
}

/// The fewest tasks a listing filtered by owner ([`ListQuery::owner`])
/// reads from its backend at a time.
const OWNED_BATCH: usize = 256;

/// One page of a listing.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Page {
    /// The tasks, ordered by `created_at`, then id.
    pub tasks: Vec<Task>,
    /// Pass to [`ListQuery::after`] for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
    /// Stored entries the listing could not read: left out of `tasks`,
    /// reported here (and as events), never silently dropped.
    pub skipped: Vec<Skipped>,
}

/// Lists one page of `query` from `backend` at `now`: the only way any
/// backend is listed. Expired tasks are left out here, so every backend pages
/// identically; those it met go to `expired`, for the caller to delete.
pub(crate) fn list<B: Backend + ?Sized>(
    backend: &B,
    query: &ListQuery,
    now: OffsetDateTime,
    expired: &mut Vec<Task>,
) -> Result<Page> {
    let after = query.checked()?;
    // One more than the page, to know whether a next page exists.
    let more = query.limit.map_or(usize::MAX, |l| l.saturating_add(1));
    let mut scan = Scan::new(query.scope(), more);
    scan.status = query.status;
    scan.owner.clone_from(&query.owner);
    scan.after = after;
    let mut page = Page {
        tasks: Vec::new(),
        next_cursor: None,
        skipped: Vec::new(),
    };
    loop {
        let batch = backend.scan(&scan)?;
        let exhausted = batch.tasks.len() < scan.limit;
        backend::join_skipped(&mut page.skipped, batch.skipped);
        if let Some(last) = batch.tasks.last() {
            scan.after = Some(Position::of(last));
        }
        for task in batch.tasks {
            if task.is_expired_at(now) {
                expired.push(task);
            } else if scan.matches(&task) && scan.owns(&task) {
                page.tasks.push(task);
            }
        }
        // With an owner a backend may not filter by, whose tasks may be few
        // among the others: after the first batch, batches large enough
        // that a small page is not looked for a task or two at a time.
        if scan.owner.is_some() {
            scan.limit = scan.limit.max(OWNED_BATCH);
        }
        if let Some(limit) = query.limit
            && page.tasks.len() > limit
        {
            page.tasks.truncate(limit);
            page.next_cursor = page.tasks.last().map(|t| Cursor(Position::of(t)).encode());
            return Ok(page);
        }
        if exhausted {
            return Ok(page);
        }
    }
}

/// A position in the (`created_at`, id) order, as handed out to callers.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Cursor(Position);

impl Cursor {
    const PREFIX: &'static str = "c1.";

    fn encode(&self) -> String {
        format!(
            "{}{}.{}",
            Cursor::PREFIX,
            self.0.created_at.unix_timestamp_nanos(),
            self.0.id
        )
    }

    fn decode(raw: &str) -> Result<Cursor> {
        let invalid = |reason: String| Error::InvalidCursor {
            cursor: crate::id::bounded(raw, 200),
            reason,
        };
        let rest = raw.strip_prefix(Cursor::PREFIX).ok_or_else(|| {
            invalid(format!(
                "it does not start with {}, as the cursors this store hands out do",
                Cursor::PREFIX
            ))
        })?;
        let (nanos, id) = rest
            .split_once('.')
            .ok_or_else(|| invalid("no '.' between its time and its task id".to_owned()))?;
        let nanos: i128 = nanos
            .parse()
            .map_err(|e| invalid(format!("its time is not a number: {e}")))?;
        let created_at = OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .map_err(|e| invalid(format!("its time is out of the range of dates: {e}")))?;
        let id = TaskId::parse(id).map_err(|e| invalid(format!("its task id: {e}")))?;
        Ok(Cursor(Position { created_at, id }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let c = Cursor(Position {
            created_at: OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789)
                .unwrap(),
            id: TaskId::parse("a.b.c").unwrap(),
        });
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        // Each refused with why, in the error's text.
        for (bad, why) in [
            ("", "does not start with c1."),
            ("c2.1.abc", "does not start with c1."),
            ("c1.", "no '.' between"),
            ("c1.12", "no '.' between"),
            ("c1.x.abc", "its time is not a number"),
            ("c1.99999999999999999999999999999.a", "out of the range"),
            ("c1.1./x", "its task id"),
        ] {
            match Cursor::decode(bad) {
                Err(e @ Error::InvalidCursor { .. }) => {
                    assert!(e.to_string().contains(why), "{bad:?}: {e}");
                }
                other => panic!("{bad:?}: {other:?}"),
            }
            // As a query's check says, before any store is listed.
            let checked = ListQuery::all().after(bad).check();
            assert!(
                matches!(checked, Err(Error::InvalidCursor { .. })),
                "{bad:?}"
            );
        }
        ListQuery::all().after(&c.encode()).check().unwrap();
        let zero = ListQuery::all().limit(0).check();
        assert!(matches!(zero, Err(Error::InvalidQuery { .. })), "{zero:?}");
    }

    /// A cursor is a position (creation time, id), not a token of one
    /// store or one filter: a well-formed cursor that no store handed out
    /// (naming no task), or one from a listing of another filter, continues
    /// after its position; only one that does not decode is refused.
    #[test]
    fn a_well_formed_cursor_is_a_position_whatever_handed_it_out() {
        use std::sync::Arc;

        use crate::{ManualClock, MemoryStore, NewTask, TaskStore};

        let clock = ManualClock::new(OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap());
        let store = MemoryStore::builder()
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap();
        let make = |id: &str| {
            store
                .create(NewTask::new().id(TaskId::parse(id).unwrap()))
                .unwrap()
        };
        let (a, b) = (make("a"), make("b"));
        clock.advance(std::time::Duration::from_millis(1));
        let c = make("c");
        assert!(
            store
                .complete(&b.id, serde_json::json!(1))
                .unwrap()
                .is_applied()
        );
        let ids = |query: &ListQuery| -> Vec<String> {
            let page = store.list(query).unwrap();
            page.tasks.iter().map(|t| t.id.to_string()).collect()
        };
        // Between `a` and `b`, which share a creation time: no task is `a0`.
        let forged = Cursor(Position {
            created_at: a.created_at,
            id: TaskId::parse("a0").unwrap(),
        })
        .encode();
        assert_eq!(ids(&ListQuery::all().after(&forged)), ["b", "c"]);
        assert_eq!(ids(&ListQuery::active().after(&forged)), ["c"]);
        // A cursor of the running tasks' listing, used for all of them.
        let first = store.list(&ListQuery::active().limit(1)).unwrap();
        let cursor = first.next_cursor.expect("a next page");
        assert_eq!(ids(&ListQuery::all().after(&cursor)), ["b", "c"]);
        // Past the last task: an empty last page.
        let past = Cursor(Position::of(&c)).encode();
        let page = store.list(&ListQuery::all().after(&past)).unwrap();
        assert!(page.tasks.is_empty() && page.next_cursor.is_none());
    }

    #[test]
    fn query_scopes() {
        assert_eq!(ListQuery::active().scope(), Scope::Active);
        assert_eq!(ListQuery::all().scope(), Scope::All);
        assert_eq!(
            ListQuery::all().status(TaskStatus::Working).scope(),
            Scope::Active
        );
        assert_eq!(
            ListQuery::all().status(TaskStatus::Failed).scope(),
            Scope::All
        );
    }
}
