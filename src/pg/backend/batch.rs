//! Many tasks written or removed in one statement where they can be, and
//! each on its own where not ([`Alone`] says why); what a batch did, task
//! by task.

use std::collections::{HashMap, HashSet};

use crate::backend::{Backend, Record, Swap, is_current};
use crate::error::{Error, Known, Result};
use crate::id::TaskId;
use crate::task::Task;

use super::row::{Columns, nanos, revision};
use super::statement::refused;
use super::{BACKEND, PgBackend};

impl PgBackend {
    /// The outcome of one task of a batch: done, or what is stored now.
    fn settle(
        id: &TaskId,
        done: &HashSet<String>,
        now: &mut HashMap<String, Result<Task>>,
    ) -> Result<Swap> {
        if done.contains(id.as_str()) {
            return Ok(Swap::Done);
        }
        match now.remove(id.as_str()) {
            Some(Ok(task)) => Ok(Swap::Changed(Some(task))),
            Some(Err(e)) => Err(e),
            None => Ok(Swap::Changed(None)),
        }
    }

    /// `replace` for a pass's write (a claim, a reap, renewals), which
    /// must say what became of the task: a write whose reply was lost (the
    /// connection dropped after the commit), or that an earlier batch's
    /// lost reply made already, finds the task stored exactly as it was to
    /// write it, and is done.
    pub(super) fn replace_found(&self, current: &Task, next: &Record) -> Result<Swap> {
        match self.replace(current, next) {
            Ok(Swap::Changed(Some(stored))) if self.written(&stored, next) => Ok(Swap::Done),
            // A running version of this owner's (a claim: a new epoch and
            // owner; or a renewal of the owner's lease) that stands,
            // written over since by another: this batch's write, or
            // another's over the version read (for a claim, by another
            // pass of this handle), which cannot be told apart. Not
            // "changed by another": its caller would neither report nor
            // disown a task its handle then renews as its own, and a
            // renewal would be made again, two writes for one. A failed
            // write, whose caller leaves a claim to lapse.
            Ok(Swap::Changed(Some(stored)))
                if !next.task().is_terminal() && stored.is_claim_of(next.task()) =>
            {
                Err(Error::backend(
                    BACKEND,
                    format!("replace task {}", current.id),
                    format!(
                        "the batch's reply was lost, and the task holds the epoch ({}) and \
                         owner this write gave it or kept, written over since: whether this \
                         write made it cannot be told",
                        stored.epoch
                    ),
                ))
            }
            // A task gone since, or made again under its id: this batch's
            // write (a claim, a reap, a renewal) may have landed before,
            // and been seen, so the task was not "left alone", nor "not
            // found", either.
            Ok(Swap::Changed(stored))
                if stored
                    .as_ref()
                    .is_none_or(|s| s.created_at != current.created_at) =>
            {
                Err(Error::backend(
                    BACKEND,
                    format!("replace task {}", current.id),
                    "the batch's reply was lost, and the task is gone since (or made again \
                     under its id): whether this write made it before cannot be told",
                ))
            }
            other => other,
        }
    }

    /// Conditional writes, one per item (on the version `read` names), as
    /// [`Backend::replace_all`] makes them: in one statement, `batch`,
    /// where it can, and each on its own, `alone`, where not (told why).
    /// A batch keeps no guesses. A batch the server refused (a deadlock, a
    /// statement timeout: its error reply), or never sent (a task out of
    /// range, no connection), changed nothing; one that failed otherwise (its connection
    /// lost) may have committed before its reply: `alone` is told which
    /// ([`sent`]). A task the
    /// batch left out, its row locked by another session
    /// (`sql::unlocked`), is stored as it was read: written on its own
    /// now, after the batch committed, so that only its own write waits
    /// for the lock.
    pub(super) fn batch<T>(
        &self,
        op: &str,
        items: &[T],
        read: impl Fn(&T) -> &Task,
        batch: impl FnOnce() -> std::result::Result<Vec<Result<Swap>>, Alone>,
        alone: impl Fn(&T, Alone) -> Result<Swap>,
    ) -> Vec<Result<Swap>> {
        for item in items {
            self.recent.forget(&read(item).id);
        }
        if items.len() < 2 || has_duplicates(items.iter().map(|item| &read(item).id)) {
            return Self::each_alone(op, items, read, |item| alone(item, Alone::Unbatched));
        }
        let results = match batch() {
            Ok(results) => results,
            Err(why) => return Self::each_alone(op, items, read, |item| alone(item, why)),
        };
        results
            .into_iter()
            .zip(items)
            .map(|(result, item)| match result {
                Ok(Swap::Changed(Some(now))) if is_current(&now, read(item)) => {
                    alone(item, Alone::LeftOut)
                }
                other => other,
            })
            .collect()
    }

    /// `alone` for each of `items` in turn (writes of `op`, each of its
    /// own, after their batch failed or when there is none). Once one
    /// found no connection (a connect failed: the server down or out of
    /// reach; or none came free within the pool's wait), the rest fail
    /// with its error, each naming its own task, without asking for one
    /// each: a batch of 300 tasks made 300 connects, each failing as the
    /// first did
    /// (`pg::a_batch_that_failed_with_the_server_down_connects_once_more_not_once_a_task`),
    /// and behind a held lock waited the pool's wait once a task
    /// (`pg::a_batch_that_found_the_pool_busy_waits_for_one_task_not_for_each`).
    fn each_alone<T>(
        op: &str,
        items: &[T],
        read: impl Fn(&T) -> &Task,
        alone: impl Fn(&T) -> Result<Swap>,
    ) -> Vec<Result<Swap>> {
        // The first task that found no connection: its id, its error as
        // said, and whether it is known to have changed nothing.
        let mut unconnected: Option<(TaskId, String, bool)> = None;
        let mut results = Vec::with_capacity(items.len());
        for item in items {
            let id = &read(item).id;
            if let Some((first, said, changed_nothing)) = &unconnected {
                let e = Error::backend(
                    BACKEND,
                    format!("{op} task {id}"),
                    format!(
                        "not tried: no connection, as task {first} of the same batch found \
                         just before ({said})"
                    ),
                )
                .known(Known::Unsent)
                .known(Known::Unconnected);
                results.push(Err(if *changed_nothing {
                    e.known_to_have_changed_nothing()
                } else {
                    e
                }));
                continue;
            }
            let result = alone(item);
            if let Err(e) = &result
                && e.is_known(Known::Unconnected)
            {
                unconnected = Some((id.clone(), e.to_string(), e.changed_nothing()));
            }
            results.push(result);
        }
        results
    }

    /// [`Backend::remove_all`] as a [`batch`](Self::batch), for expired
    /// tasks: one no longer stored after a removal that may have committed
    /// is removed by this call.
    pub(super) fn remove_batch(&self, tasks: &[Task]) -> Vec<Result<Swap>> {
        let alone = |task: &Task, why: Alone| match self.remove(task) {
            Ok(Swap::Changed(None)) if why == Alone::Unanswered => Ok(Swap::Done),
            Err(e) if self.found_removed(&e, task) => Ok(Swap::Done),
            other => other,
        };
        self.batch(
            "remove",
            tasks,
            |task| task,
            || self.try_remove_all(tasks),
            alone,
        )
    }

    /// The batch of [`replace_all`](Backend::replace_all); why it failed, if
    /// it did ([`sent`]).
    pub(super) fn try_replace_all(
        &self,
        swaps: &[(Task, Record)],
    ) -> std::result::Result<Vec<Result<Swap>>, Alone> {
        let op = "replace";
        let mut ids = Vec::new();
        let mut created = Vec::new();
        let mut revisions = Vec::new();
        let mut was_active = Vec::new();
        let mut next_created = Vec::new();
        let mut next_revisions = Vec::new();
        let mut statuses = Vec::new();
        let mut active = Vec::new();
        let mut expires = Vec::new();
        let mut json = Vec::new();
        // A task that cannot go in the batch: nothing is sent.
        for (current, next) in swaps {
            let columns = Columns::of(next, op).map_err(|_| Alone::Refused)?;
            ids.push(current.id.as_str());
            created.push(nanos(current.created_at, op, &current.id).map_err(|_| Alone::Refused)?);
            revisions.push(revision(current, op).map_err(|_| Alone::Refused)?);
            was_active.push(!current.is_terminal());
            next_created.push(columns.created_at_ns);
            next_revisions.push(columns.revision);
            statuses.push(columns.status);
            active.push(columns.active);
            expires.push(columns.expires_at_ns);
            json.push(columns.json);
        }
        let rows = self.query(
            &|| format!("{op} {} tasks in one statement", swaps.len()),
            &self.sql.replace_all,
            &[
                &ids,
                &created,
                &revisions,
                &was_active,
                &next_created,
                &next_revisions,
                &statuses,
                &active,
                &expires,
                &json,
                &self.sql.channel,
            ],
        );
        sent(rows, |rows| {
            self.batch_outcome(op, &ids, rows, swaps.iter().map(|(current, _)| &current.id))
        })
    }

    /// The batch of [`remove_all`](Backend::remove_all); why it failed, if
    /// it did ([`sent`]).
    fn try_remove_all(&self, tasks: &[Task]) -> std::result::Result<Vec<Result<Swap>>, Alone> {
        let op = "remove";
        let ids: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
        // A task that cannot go in the batch: nothing is sent.
        let created = tasks
            .iter()
            .map(|t| nanos(t.created_at, op, &t.id))
            .collect::<Result<Vec<_>>>()
            .map_err(|_| Alone::Refused)?;
        let revisions = tasks
            .iter()
            .map(|t| revision(t, op))
            .collect::<Result<Vec<_>>>()
            .map_err(|_| Alone::Refused)?;
        let rows = self.query(
            &|| format!("{op} {} tasks in one statement", tasks.len()),
            &self.sql.remove_all,
            &[&ids, &created, &revisions, &self.sql.channel],
        );
        sent(rows, |rows| {
            self.batch_outcome(op, &ids, rows, tasks.iter().map(|t| &t.id))
        })
    }

    /// One result per task of a batch, from the ids the statement wrote.
    fn batch_outcome<'a>(
        &self,
        op: &str,
        ids: &[&str],
        rows: Vec<postgres::Row>,
        order: impl Iterator<Item = &'a TaskId>,
    ) -> Result<Vec<Result<Swap>>> {
        let written = || format!("{op} {} tasks in one statement", ids.len());
        let done = rows
            .iter()
            .map(|row| self.column(row, 0, "tasks", &written))
            .collect::<Result<HashSet<String>>>()?;
        let missed: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| !done.contains(*id))
            .collect();
        let mut now = if missed.is_empty() {
            HashMap::new()
        } else {
            self.current_all(&missed, op)?
        };
        Ok(order.map(|id| Self::settle(id, &done, &mut now)).collect())
    }
}

/// Why a task of a batch is written on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Alone {
    /// There is no batch: one task, or a task named twice.
    Unbatched,
    /// The batch changed nothing: the server refused its statement (an
    /// error reply), or it was never sent (a task it could not hold, no
    /// connection: [`Known::Unsent`]).
    Refused,
    /// The batch may have committed: its statement failed without the
    /// server's refusal (its connection lost before its reply), or it
    /// committed and what it wrote could not be read after.
    Unanswered,
    /// The batch committed without it: another session held its row
    /// locked, and it is stored as read.
    LeftOut,
}

/// The outcome of a batch statement, `rows` its reply: what `read` makes
/// of the rows, or why it failed. Only a failure before it was sent (no
/// connection, [`Known::Unsent`]) or the server's refusal of the statement itself
/// (an `ERROR` reply) says it changed nothing ([`refused`]); any other
/// failure may have come after the commit: a connection lost, a `FATAL`
/// reply (a backend terminated, which may be after its commit), or a read
/// after the statement (`read`) that failed.
fn sent(
    rows: Result<Vec<postgres::Row>>,
    read: impl FnOnce(Vec<postgres::Row>) -> Result<Vec<Result<Swap>>>,
) -> std::result::Result<Vec<Result<Swap>>, Alone> {
    match rows {
        Ok(rows) => read(rows).map_err(|_| Alone::Unanswered),
        Err(e) if refused(&e) => Err(Alone::Refused),
        Err(_) => Err(Alone::Unanswered),
    }
}

/// The most JSON one batch statement carries, in bytes: a quarter of the
/// 1 GiB PostgreSQL takes in one message (and in one value: the batch's
/// tasks go as one array), far from either, and from what the server
/// holds while it takes the array apart, while a batch of tasks at the
/// default 16 MiB cap still holds sixteen.
pub(super) const BATCH_BYTES: usize = 256 << 20;

/// `items` cut, in order, into runs whose `size` adds up to at most
/// [`BATCH_BYTES`]; an item larger than that alone is a run of its own
/// (it goes alone).
pub(super) fn by_size<T>(items: &[T], size: impl Fn(&T) -> usize) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut total = 0usize;
        let end = rest
            .iter()
            .position(|item| {
                total = total.saturating_add(size(item));
                total > BATCH_BYTES
            })
            .unwrap_or(rest.len())
            .max(1);
        let (run, after) = rest.split_at(end);
        rest = after;
        Some(run)
    })
}

/// Whether a batch names one task twice (then it goes one by one: one
/// statement cannot write a row twice).
fn has_duplicates<'a>(mut ids: impl Iterator<Item = &'a TaskId>) -> bool {
    let mut seen = HashSet::new();
    ids.any(|id| !seen.insert(id))
}

#[cfg(test)]
mod tests {
    use super::{BATCH_BYTES, by_size};

    fn runs(sizes: &[usize]) -> Vec<Vec<usize>> {
        by_size(sizes, |&size| size)
            .map(<[usize]>::to_vec)
            .collect()
    }

    /// Runs keep the order, hold at most `BATCH_BYTES` between them, and
    /// an item larger than that goes alone, never dropped.
    #[test]
    fn batches_are_cut_by_size_in_order() {
        let quarter = BATCH_BYTES / 4;
        assert_eq!(runs(&[]), Vec::<Vec<usize>>::new());
        assert_eq!(runs(&[1, 2, 3]), [vec![1, 2, 3]]);
        assert_eq!(
            runs(&[quarter; 9]),
            [vec![quarter; 4], vec![quarter; 4], vec![quarter]]
        );
        assert_eq!(
            runs(&[1, BATCH_BYTES + 1, 2, BATCH_BYTES, 3]),
            [
                vec![1],
                vec![BATCH_BYTES + 1],
                vec![2],
                vec![BATCH_BYTES],
                vec![3]
            ]
        );
        assert_eq!(
            runs(&[usize::MAX, usize::MAX]),
            [vec![usize::MAX], vec![usize::MAX]]
        );
    }
}
