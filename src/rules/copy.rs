//! A copy of every live task of one store into another, field for field:
//! for a service that moves its store (a file store to PostgreSQL when it
//! outgrows one host, and back), keeping its running tasks, their results
//! and their history.

use std::collections::HashMap;

use time::OffsetDateTime;

use crate::backend::{Backend, Insert, Position, Scan, Scope, Skipped, Swap, join_skipped};
use crate::error::{Error, Result};
use crate::events::TaskEventKind;
use crate::id::TaskId;
use crate::rules::Store;
use crate::store::Missed;
use crate::task::Task;

/// How many tasks one scan of the source reads: they are held whole (a
/// task may be as large as the payload cap), a batch at a time.
const BATCH: usize = 64;

/// What [`Store::copy_from`] did, task by task.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Copied {
    /// The tasks copied, in listing order.
    pub copied: Vec<TaskId>,
    /// How many tasks the destination held already, equal to the source's
    /// (`==`): left as they are (a copy run again).
    pub already_there: usize,
    /// How many tasks had expired (by the source's time or the
    /// destination's): left out, as every reader leaves them out.
    pub expired: usize,
    /// Tasks the destination holds under the same id, unexpired and not
    /// equal to the source's: left as they are, never overwritten.
    pub differ: Vec<TaskId>,
    /// Tasks the destination refused (its active-task cap:
    /// [`Error::TooManyActive`]; its payload cap:
    /// [`Error::PayloadTooLarge`]) or that could not be copied (an I/O or
    /// backend error), each with why. The copy went on without them.
    pub missed: Vec<Missed>,
    /// Stored entries of the source that could not be read (left out,
    /// reported as the source's scans report them).
    pub skipped: Vec<Skipped>,
    /// Tasks that changed in the source while the copy ran, found by a
    /// second pass over the source at its end: a task whose version
    /// (`createdAt`, `revision`) is not the one the copy read, one
    /// created after the copy's pass went by, and one deleted since
    /// (not expired). The destination holds what the copy read, or
    /// nothing; stop the source's writers and copy again.
    pub changed: Vec<TaskId>,
}

impl Copied {
    /// Whether the destination now holds every live task of the source as
    /// the source holds it: nothing differed, was missed, could not be
    /// read, or changed during the copy.
    pub fn is_complete(&self) -> bool {
        self.differ.is_empty()
            && self.missed.is_empty()
            && self.skipped.is_empty()
            && self.changed.is_empty()
    }
}

/// What became of one task of the source.
enum Placed {
    Copied,
    AlreadyThere,
    Differs,
}

/// The version of a task the copy read: whether the source still holds it
/// at the end, and when it expires.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Read {
    created_at: OffsetDateTime,
    revision: u64,
    expires_at: Option<OffsetDateTime>,
}

impl Read {
    fn of(task: &Task) -> Read {
        Read {
            created_at: task.created_at,
            revision: task.revision,
            expires_at: task.expires_at(),
        }
    }
}

impl<B: Backend> Store<B> {
    /// Copies every live task of `source` into this store, exactly as the
    /// source holds it: id, status, revision, every time (created, last
    /// updated, TTL, lease expiry), owner, owner token, epoch, resume state
    /// (kind, input, checkpoint, attempts), input requests, metadata,
    /// result or error. A copied task reads back `==` (and as the same
    /// JSON) through every read of this store, and this store's rules
    /// treat it as the source's would: a running task whose owner's lease
    /// lapses is reaped or claimed here, and its owner, writing to this
    /// store, keeps it by its identity and epoch.
    ///
    /// - Expired tasks (by the source's time or this store's) are left out
    ///   and counted.
    /// - A task this store already holds under the same id is never
    ///   overwritten: counted if it is equal (a copy run again skips every
    ///   task it copied), reported in [`Copied::differ`] if not. An expired
    ///   one makes way, as it does for a create.
    /// - A task this store's caps refuse is reported, with why, in
    ///   [`Copied::missed`], and the copy goes on: past `max_active`
    ///   running tasks (expired running tasks are deleted once to make
    ///   room, as a create does), or larger than the payload cap plus
    ///   [`OWN_HEADROOM`](crate::OWN_HEADROOM) (the most this store's own
    ///   changes take a task it accepted: an orphan reaped at the cap).
    ///   A PostgreSQL store keeps every instant in nanoseconds of a
    ///   `bigint`: a task made before 1677 or after 2262 (a file store on a
    ///   manual clock holds one) is reported there too, with the backend's
    ///   error naming the task and its time
    ///   (`copy::a_task_outside_the_years_postgres_keeps_is_named_and_the_copy_goes_on`).
    ///
    /// A copy is no transaction: stop the source's writers first. It reads
    /// the source in batches (listing order), then once more, without
    /// payloads, to report each task that changed, appeared or was deleted
    /// in between ([`Copied::changed`]); it holds one batch of tasks and
    /// the id and version of every task it read. A copy of 100,000 small
    /// finished tasks between two file stores took 24.9 s into an
    /// `Eventual` store and 625 s into an `Immediate` one (its fsyncs,
    /// about 6 ms a task), at a peak resident memory of 39.5 and 39.3 MiB,
    /// no more than a process that only pages through the same source in
    /// the same runs (39.4 and 39.2 MiB: the source's scan of `done/` in
    /// listing order), so the ids and versions kept do not raise the peak
    /// at that count (`cargo bench --bench copy`, and `-- 100000
    /// immediate`: `benches/copy.rs`; 2026-12-07, two shared cores, the
    /// root file system). It changes no task of the
    /// source (it deletes no expired task there, as a listing would); a
    /// file store's scans set a damaged entry aside (`quarantine/`), as
    /// every read of one does, and report it in [`Copied::skipped`].
    ///
    /// This store's sink hears no `task.created` for a copied task: the
    /// task was created once, in the source, whose sinks heard it, and a
    /// copy is no new task (a counter of creations summed over the hosts
    /// would count it twice). It hears `task.expired` for an expired task
    /// the copy deletes here to make way, as for any such deletion; the
    /// source's sink hears `task.unreadable` for the entries its scans
    /// skip.
    ///
    /// # Errors
    ///
    /// A scan of the source that fails (the copy stops there: what it
    /// copied stays, and a copy run again skips it).
    pub fn copy_from<A: Backend>(&self, source: &Store<A>) -> Result<Copied> {
        let mut copied = Copied::default();
        let mut read: HashMap<TaskId, Read> = HashMap::new();
        let mut freed = false;
        source.each_batch(Scan::new(Scope::All, BATCH), &mut copied.skipped, |batch| {
            // Once a batch: a database's clock may be measured again.
            let (theirs, ours) = (source.time(), self.time());
            for task in batch {
                read.insert(task.id.clone(), Read::of(&task));
                if task.is_expired_at(theirs) || task.is_expired_at(ours) {
                    copied.expired += 1;
                    continue;
                }
                let id = task.id.clone();
                match self.place_copy(task, ours, &mut freed) {
                    Ok(Placed::Copied) => copied.copied.push(id),
                    Ok(Placed::AlreadyThere) => copied.already_there += 1,
                    Ok(Placed::Differs) => copied.differ.push(id),
                    Err(error) => copied.missed.push(Missed { id, error }),
                }
            }
        })?;
        copied.changed = source.changed_since(read, &mut copied.skipped)?;
        Ok(copied)
    }

    /// Stores `task` here as it is, unless a task of its id is here (then
    /// says whether it is equal), or a cap refuses it.
    fn place_copy(&self, task: Task, now: OffsetDateTime, freed: &mut bool) -> Result<Placed> {
        let same = |current: &Task| {
            if *current == task {
                Placed::AlreadyThere
            } else {
                Placed::Differs
            }
        };
        let id = task.id.clone();
        let limits = self.settings.limits;
        let record = limits.record_copy(task.clone())?;
        loop {
            match self.backend.insert(&record, limits.max_active)? {
                Insert::Done => return Ok(Placed::Copied),
                Insert::Exists(current) if !current.is_expired_at(now) => {
                    return Ok(same(&current));
                }
                Insert::Exists(current) => {
                    // Gone for every reader: its record makes way, as for
                    // a create (unless it changed meanwhile: look again).
                    if self.backend.remove(&current)? == Swap::Done {
                        self.settings
                            .notifier
                            .task(TaskEventKind::Expired, &current);
                    }
                }
                // An id already taken is that, full or not (a backend may
                // count before it looks for the id).
                Insert::Full => match self.backend.load(&id)? {
                    Some(current) if !current.is_expired_at(now) => return Ok(same(&current)),
                    _ if !*freed => {
                        // Expired running tasks still count until deleted:
                        // deleted once, for the whole copy.
                        *freed = true;
                        self.free_expired_active(now)?;
                    }
                    _ => {
                        return Err(Error::TooManyActive {
                            op: "copy",
                            id,
                            limit: limits.max_active,
                        });
                    }
                },
            }
        }
    }

    /// Hands each batch `scan` finds, from its start, to `each`, in
    /// listing order, and adds the entries it could not read to `skipped`
    /// (reported to this store's sink, each once).
    fn each_batch(
        &self,
        mut scan: Scan,
        skipped: &mut Vec<Skipped>,
        mut each: impl FnMut(Vec<Task>),
    ) -> Result<()> {
        loop {
            let batch = self.backend.scan(&scan)?;
            let exhausted = batch.tasks.len() < scan.limit;
            self.notify_skipped(join_skipped(skipped, batch.skipped));
            let Some(last) = batch.tasks.last() else {
                return Ok(());
            };
            scan.after = Some(Position::of(last));
            each(batch.tasks);
            if exhausted {
                return Ok(());
            }
        }
    }

    /// The tasks of this store that are no longer the version `read` holds
    /// of them: changed, made after the read went by, or deleted (not
    /// expired), sorted by id. Reads every stored task once more, without
    /// payloads.
    fn changed_since(
        &self,
        mut read: HashMap<TaskId, Read>,
        skipped: &mut Vec<Skipped>,
    ) -> Result<Vec<TaskId>> {
        let mut changed = Vec::new();
        let mut scan = Scan::new(Scope::All, BATCH);
        scan.payloads = false;
        self.each_batch(scan, skipped, |batch| {
            let now = self.time();
            for task in batch {
                let was = read.remove(&task.id);
                if !task.is_expired_at(now) && was != Some(Read::of(&task)) {
                    changed.push(task.id);
                }
            }
        })?;
        let now = self.time();
        changed.extend(
            read.into_iter()
                .filter(|(_, was)| was.expires_at.is_none_or(|at| now < at))
                .map(|(id, _)| id),
        );
        changed.sort();
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::{MemoryStore, NewTask, TaskStore, TaskUpdate};

    /// A copy keeps the metadata keys reserved for the MCP task manager
    /// (`mcp.*`, `src/rules/reserved.rs`), which a host's create or update
    /// is refused: it stores every task as the source holds it, through no
    /// host write.
    #[test]
    fn a_copy_keeps_the_managers_metadata_keys() {
        let from = MemoryStore::builder().build().unwrap();
        let task = from
            .create(
                NewTask::new()
                    .metadata("tool", "x")
                    .reserved_metadata("mcp.principal", "alice"),
            )
            .unwrap();
        let cancel = TaskUpdate::new().reserved_metadata("mcp.cancelRequested", true);
        let task = from.update(&task.id, cancel).unwrap().task().clone();
        let to = MemoryStore::builder().build().unwrap();
        let copied = to.copy_from(&from).unwrap();
        assert!(copied.is_complete(), "{copied:?}");
        assert_eq!(copied.copied, std::slice::from_ref(&task.id));
        let read = to.get(&task.id).unwrap().expect("copied");
        assert_eq!(read.metadata["mcp.principal"], json!("alice"));
        assert_eq!(read.metadata["mcp.cancelRequested"], json!(true));
        assert_eq!(read, task);
    }
}
