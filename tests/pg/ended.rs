//! Creates on pooled connections the server ended a moment after their
//! last use (a restart, a failover, an administrator's
//! `pg_terminate_backend`), the insert already prepared on each.

use super::outages::{end_sessions, named_store};
use super::*;

/// How many connections the store pools, each ended at once.
const POOLED: usize = 3;

/// Every pooled connection, its insert prepared, ended by the server a
/// moment after its last use (given back under 100 ms before, the pool
/// does not look at it when taken): creates made at once, one on each,
/// all succeed, and each task reads back once. The insert is sent only on
/// a connection seen alive since it was taken (`Connection::seen_alive` in
/// `src/pg/pool.rs`): one that is not is looked at first, a `Sync` and its
/// answer, which writes nothing, and one found ended is left for another
/// before the insert is sent. (Each create that took an ended connection
/// failed, a `FATAL` `57P01`: the insert, sent, may have committed, and a
/// task not found after it may have been deleted since.)
#[test]
fn creates_on_connections_the_server_ended_a_moment_ago_all_succeed() {
    let Some(cluster) = cluster() else { return };
    let (store, application) = named_store(cluster, "create_ended", POOLED);
    let mut watcher = cluster.client();
    let schema = application.clone();
    // Creates held on the table's lock all at once: each on a connection of
    // its own, which prepares the insert there.
    let (mut holder, holder_pid) = holding(
        cluster,
        &format!("LOCK TABLE {schema}.tasks IN ACCESS EXCLUSIVE MODE"),
    );
    let mut created: Vec<Task> = std::thread::scope(|s| {
        let creates: Vec<_> = (0..POOLED)
            .map(|_| s.spawn(|| store.create(NewTask::new())))
            .collect();
        wait_until("every create to wait on the lock", || {
            blocked_by(&mut watcher, &application, holder_pid) == POOLED as i64
        });
        holder.batch_execute("ROLLBACK").unwrap();
        creates
            .into_iter()
            .map(|c| c.join().unwrap().unwrap())
            .collect()
    });
    assert_eq!(connected(&mut watcher, &application), POOLED as i64);
    end_sessions(&mut watcher, &application);
    let barrier = std::sync::Barrier::new(POOLED);
    let results: Vec<Result<Task, Error>> = std::thread::scope(|s| {
        let creates: Vec<_> = (0..POOLED)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    store.create(NewTask::new())
                })
            })
            .collect();
        creates.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(ToString::to_string))
        .collect();
    assert!(failed.is_empty(), "creates failed: {failed:#?}");
    created.extend(results.into_iter().map(Result::unwrap));
    let listed = store.list(&ListQuery::active()).unwrap();
    let mut counts: HashMap<&TaskId, usize> = HashMap::new();
    for task in &listed.tasks {
        *counts.entry(&task.id).or_default() += 1;
    }
    assert_eq!(counts.len(), created.len(), "{:?}", listed.tasks);
    for task in &created {
        assert_eq!(counts.get(&task.id), Some(&1), "task {}", task.id);
        assert_eq!(store.get(&task.id).unwrap().as_ref(), Some(task));
    }
}
