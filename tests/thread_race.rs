//! Eight threads, each with its own `FileStore` handle, race to finish the
//! same tasks: exactly one terminal transition applies per task.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use serde_json::json;
use taskstore::{FileStore, ListQuery, NewTask, TaskStatus, TaskStore, TaskUpdate, Transition};

const THREADS: usize = 8;
const TASKS: usize = 500;

#[test]
fn eight_handles_race_on_five_hundred_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let setup = FileStore::open(dir.path()).unwrap();
    let ids: Arc<Vec<_>> = Arc::new(
        (0..TASKS)
            .map(|_| setup.create(NewTask::new()).unwrap().id)
            .collect(),
    );
    let applied: Arc<Vec<AtomicUsize>> =
        Arc::new((0..TASKS).map(|_| AtomicUsize::new(0)).collect());
    let barrier = Arc::new(Barrier::new(THREADS));
    let winners: Vec<_> = (0..THREADS)
        .map(|t| {
            let (ids, applied, barrier) = (ids.clone(), applied.clone(), barrier.clone());
            let root = dir.path().to_owned();
            std::thread::spawn(move || {
                // Past the barrier before a failed open panics: else the
                // other threads would wait at it for ever.
                let store = FileStore::open(root);
                barrier.wait();
                let store = store.unwrap();
                let mut won = Vec::new();
                for k in 0..TASKS {
                    // Each thread walks the tasks in its own order.
                    let i = (k * 7 + t * 61) % TASKS;
                    let id = &ids[i];
                    let _ = store
                        .update(id, TaskUpdate::new().metadata(format!("t{t}"), k))
                        .unwrap();
                    let outcome = match (i + t) % 3 {
                        0 => store.complete(id, json!({"by": t})),
                        1 => store.fail(id, json!({"by": t})),
                        _ => store.cancel(id, Some(format!("by {t}"))),
                    }
                    .unwrap();
                    if let Transition::Applied(task) = outcome {
                        applied[i].fetch_add(1, Ordering::SeqCst);
                        won.push(task);
                    }
                }
                (store, won)
            })
        })
        .collect();
    let results: Vec<_> = winners.into_iter().map(|h| h.join().unwrap()).collect();

    for (i, n) in applied.iter().enumerate() {
        assert_eq!(
            n.load(Ordering::SeqCst),
            1,
            "task {} must have exactly one winner",
            ids[i]
        );
    }
    // Every handle reads exactly the winner's task: status, payload, time, revision.
    for (_, won) in &results {
        for winner in won {
            assert!(winner.status.is_terminal());
            for (store, _) in &results {
                assert_eq!(store.get(&winner.id).unwrap().as_ref(), Some(winner));
            }
            match winner.status {
                TaskStatus::Completed => assert!(winner.result.is_some() && winner.error.is_none()),
                TaskStatus::Failed => assert!(winner.error.is_some() && winner.result.is_none()),
                _ => assert!(winner.result.is_none() && winner.error.is_none()),
            }
        }
    }
    let total: usize = results.iter().map(|(_, won)| won.len()).sum();
    assert_eq!(total, TASKS);
}

/// The file store's active-task cap is approximate, as `FileBackend`'s docs
/// say: eight handles (standing for eight processes) create until refused,
/// all at once; the store ends holding at least the cap and at most the cap
/// plus the eight racing creators, and every refusal is `TooManyActive`.
#[test]
fn racing_creators_overshoot_the_cap_by_at_most_their_number() {
    const CAP: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let barrier = Arc::new(Barrier::new(THREADS));
    let created: Vec<usize> = (0..THREADS)
        .map(|_| {
            let (barrier, root) = (barrier.clone(), dir.path().to_owned());
            std::thread::spawn(move || {
                // Eight opens of a new store at once (see
                // `paused_races::two_opens_of_a_new_store_at_once_both_open_it`);
                // past the barrier before a failed one panics, or the
                // others would wait at it for ever.
                let store = FileStore::builder(root)
                    .max_active(CAP)
                    .durability(taskstore::Durability::Eventual)
                    .open();
                barrier.wait();
                let store = store.unwrap();
                let mut created = 0;
                loop {
                    match store.create(NewTask::new()) {
                        Ok(_) => created += 1,
                        Err(taskstore::Error::TooManyActive { .. }) => return created,
                        Err(e) => panic!("create: {e}"),
                    }
                }
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let total: usize = created.iter().sum();
    let store = FileStore::open(dir.path()).unwrap();
    let running = store.list(&ListQuery::active()).unwrap().tasks.len();
    assert_eq!(running, total);
    assert!(
        (CAP..=CAP + THREADS).contains(&running),
        "{running} running tasks under a cap of {CAP} with {THREADS} creators ({created:?})"
    );
}
