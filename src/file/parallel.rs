//! Spreading a pass's file-system calls over the machine's cores.
//!
//! A pass over thousands of files (a sweep's unlinks, the first reading of
//! thousands of task files) spends its time in system calls that do not
//! wait on each other: unlinks in one directory share only its lock, and
//! the freeing of each inode happens outside it. On two cores, two workers
//! delete 10,000 files in 0.55 to 0.6 of one worker's time. Small passes
//! (every single-task call, and every workload of the crash-state explorer)
//! stay on the calling thread, in order.
//!
//! A worker the system cannot start (its threads used up: `RLIMIT_NPROC`, a
//! cgroup's `pids.max`, memory) is no failure: the calling thread does its
//! part, as it does a small pass's ([`spawn`]).

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

/// The fewest items worth a second worker: below it, starting a thread
/// costs more than it saves.
pub(super) const MIN_SHARED: usize = 256;

/// The most workers a pass uses.
const MAX_WORKERS: usize = 4;

/// How many items a worker of [`map`] takes at a time.
const BLOCK: usize = 16;

/// How many workers a pass of `items` items uses: one per core, up to
/// [`MAX_WORKERS`].
fn workers(items: usize) -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    let cores = *CORES.get_or_init(|| {
        std::thread::available_parallelism()
            .map(NonZeroUsize::get)
            .unwrap_or(1)
    });
    workers_of(cores.clamp(1, MAX_WORKERS), items)
}

/// How many workers a pass of `items` items that waits on the device more
/// than it uses a core (an fsync per item) uses: as many as
/// [`MAX_WORKERS`], whatever the cores, so that the device has several
/// fsyncs to work on at once (2,000 renewals on 2 cores: about 0.45 s with
/// four workers, 0.6 s with two, 0.9 s with one).
fn io_workers(items: usize) -> usize {
    workers_of(MAX_WORKERS, items)
}

/// Up to `most` workers for a pass of `items` items: one for a pass too
/// small to share, and never fewer than half a share's items each.
fn workers_of(most: usize, items: usize) -> usize {
    if items < MIN_SHARED {
        return 1;
    }
    most.min(items / (MIN_SHARED / 2))
}

/// Runs `work` on contiguous shares of `items`, one per worker, and returns
/// its results in the order of the shares. A share never ends between two
/// neighbours `together` keeps together (the tasks of one lock stripe, say),
/// so a share may be longer than its part. With one worker, `work` runs
/// once, on all of `items`, on the calling thread.
pub(super) fn shares<T, R>(
    items: &[T],
    together: impl Fn(&T, &T) -> bool,
    work: impl Fn(&[T]) -> R + Sync,
) -> Vec<R>
where
    T: Sync,
    R: Send,
{
    let workers = workers(items.len());
    if workers == 1 {
        return vec![work(items)];
    }
    let part = items.len().div_ceil(workers);
    let mut bounds = Vec::with_capacity(workers);
    let mut start = 0;
    while start < items.len() {
        let mut end = (start + part).min(items.len());
        while end < items.len() && together(&items[end - 1], &items[end]) {
            end += 1;
        }
        bounds.push((start, end));
        start = end;
    }
    let work = &work;
    std::thread::scope(|scope| {
        let mut rest = bounds.iter();
        let (first_start, first_end) = *rest.next().expect("items is not empty");
        // A share no worker could be started for is the calling thread's,
        // after its own (and so is every share after it: the system has no
        // thread to give).
        let mut starting = true;
        let handles: Vec<_> = rest
            .map(|&(start, end)| {
                let handle = starting
                    .then(|| spawn(scope, move || work(&items[start..end])))
                    .flatten();
                starting = handle.is_some();
                (start, end, handle)
            })
            .collect();
        let mut results = Vec::with_capacity(bounds.len());
        results.push(work(&items[first_start..first_end]));
        for (start, end, handle) in handles {
            match handle.map(std::thread::ScopedJoinHandle::join) {
                Some(Ok(result)) => results.push(result),
                Some(Err(panic)) => std::panic::resume_unwind(panic),
                None => results.push(work(&items[start..end])),
            }
        }
        results
    })
}

/// Starts a worker of a pass on `scope`; `None` if the system cannot start
/// a thread (`Scope::spawn` would panic), which is said once per process:
/// the caller does the worker's part itself.
fn spawn<'scope, R: Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    work: impl FnOnce() -> R + Send + 'scope,
) -> Option<std::thread::ScopedJoinHandle<'scope, R>> {
    static SAID: AtomicBool = AtomicBool::new(false);
    match std::thread::Builder::new().spawn_scoped(scope, work) {
        Ok(handle) => Some(handle),
        Err(e) => {
            if !SAID.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    error = %e,
                    "cannot start a thread to share a pass over many task files; the calling \
                     thread does its part (said once)"
                );
            }
            None
        }
    }
}

/// `work` applied to each of `items`, spread over the workers; the results
/// in the order of `items`.
///
/// Each worker takes the next [`BLOCK`] items as it finishes the last, so
/// the workers end together even when some items cost far more than others
/// (a file whose inode is cold, an unlink that waits on the directory's
/// lock): fixed halves left one worker idle for up to a tenth of each
/// chunk of a sweep.
pub(super) fn map<T, R>(items: &[T], work: impl Fn(&T) -> R + Sync) -> Vec<R>
where
    T: Sync,
    R: Send,
{
    map_on(workers(items.len()), items, work)
}

/// [`map`] for work that waits on the device more than it uses a core (an
/// fsync per item): on up to [`MAX_WORKERS`] workers whatever the cores
/// ([`io_workers`]).
pub(super) fn map_io<T, R>(items: &[T], work: impl Fn(&T) -> R + Sync) -> Vec<R>
where
    T: Sync,
    R: Send,
{
    map_on(io_workers(items.len()), items, work)
}

/// [`map`] on `workers` workers.
fn map_on<T, R>(workers: usize, items: &[T], work: impl Fn(&T) -> R + Sync) -> Vec<R>
where
    T: Sync,
    R: Send,
{
    if workers == 1 {
        return items.iter().map(work).collect();
    }
    // Every result has its slot from the start, in one allocation made
    // before any work: a worker's results go straight into their slots, so
    // the long-lived values they own (a task file's bytes, kept by the
    // snapshot) are allocated one after the other, with no short-lived
    // vector between them to leave a hole in the heap once freed (blocks
    // gathered in vectors of their own cost a handle at 10,000 running
    // tasks 1.6 MiB of resident memory).
    let slots: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let pull = || {
        loop {
            let start = next.fetch_add(BLOCK, Ordering::Relaxed);
            if start >= items.len() {
                return;
            }
            let end = (start + BLOCK).min(items.len());
            for (item, slot) in items[start..end].iter().zip(&slots[start..end]) {
                let result = work(item);
                *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(result);
            }
        }
    };
    std::thread::scope(|scope| {
        // Every item is pulled by whichever worker is free, the calling
        // thread included: the workers that could be started are enough.
        let handles: Vec<_> = (1..workers).map_while(|_| spawn(scope, pull)).collect();
        pull();
        for handle in handles {
            if let Err(panic) = handle.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });
    slots
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .unwrap_or_else(PoisonError::into_inner)
                .expect("every item was worked on")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_pass_runs_once_on_the_calling_thread() {
        let caller = std::thread::current().id();
        let items: Vec<u32> = (0..MIN_SHARED as u32 - 1).collect();
        let runs = shares(
            &items,
            |_, _| false,
            |share| (share.len(), std::thread::current().id()),
        );
        assert_eq!(runs, vec![(items.len(), caller)]);
    }

    #[test]
    fn shares_keep_order_cover_everything_and_never_split_a_group() {
        // Groups of 7 equal values; a share may end only where they change.
        let items: Vec<u32> = (0..5_000u32).map(|i| i / 7).collect();
        let results = shares(&items, |a, b| a == b, <[u32]>::to_vec);
        assert_eq!(results.concat(), items, "in order, each item once");
        for pair in results.windows(2) {
            assert_ne!(pair[0].last(), pair[1].first(), "a group was split");
        }
        let mapped = map(&items, |i| i * 2);
        assert_eq!(mapped, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        // Waiting work (a batch's fsyncs) on four workers whatever the
        // cores, its results in order all the same.
        let distinct: Vec<u32> = (0..5_000).collect();
        assert_eq!(io_workers(distinct.len()), MAX_WORKERS);
        let mapped = map_io(&distinct, |i| i * 2);
        assert_eq!(mapped, distinct.iter().map(|i| i * 2).collect::<Vec<_>>());
    }

    /// A worker held up by one item never holds up the rest: the others
    /// take every item outside its block meanwhile (fixed halves would
    /// leave the held worker's half waiting).
    #[test]
    fn a_slow_item_never_holds_up_the_others() {
        use std::sync::{Condvar, Mutex};
        use std::time::Duration;

        let items: Vec<usize> = (0..2_000).collect();
        if workers(items.len()) < 2 {
            return; // one core: nothing to spread
        }
        let done = Mutex::new(0usize);
        let more = Condvar::new();
        let others_done_first = map(&items, |&i| {
            let mut done = done.lock().unwrap();
            if i != 0 {
                *done += 1;
                more.notify_all();
                return true;
            }
            // Waits for every item outside its block (the timeout only
            // turns a hang into a failure).
            let others = items.len() - BLOCK;
            let (done, _) = more
                .wait_timeout_while(done, Duration::from_secs(60), |done| *done < others)
                .unwrap();
            *done >= others
        });
        assert!(
            others_done_first[0],
            "the other items waited for the held worker"
        );
        assert_eq!(others_done_first.len(), items.len());
    }
}
