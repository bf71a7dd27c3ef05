//! The large sweep's workload: more expired tasks than one chunk of the
//! sweep's large paths takes under every stripe (1,024), so that a power
//! loss can come between two chunks.

use super::*;

/// How many finished, and how many running, tasks expire together: past
/// one chunk of each large path (`CHUNK` in `src/file/unread.rs`).
pub const LARGE: usize = 1_030;
/// How many running, and how many finished, tasks the sweep keeps.
const KEPT: usize = 5;

/// A sweep of [`LARGE`] finished tasks due by their `expiring/` entries
/// (`remove_due`, in two chunks) and [`LARGE`] running ones another handle
/// created, which the sweeping handle has not read (`remove_unread`, in
/// two chunks), the large paths taken from three tasks; among them tasks
/// it keeps, running and finished, that every crash state must keep too.
pub fn large_sweep(durability: Durability) -> Run {
    let mut d = Driver::new(durability);
    d.large = 3;
    let owner = d.open("open (owner)", "owner", LONG_LEASE);
    d.act(
        "list active (the snapshot whole)",
        || owner.list(&ListQuery::active()).unwrap(),
        |_| Effect::Nothing,
    );
    // Each a single step: its crash points are not explored (the sample
    // is the sweep's), and a step per call would record the log again
    // for each of thousands.
    let other = d.open("open (other)", "other", LONG_LEASE);
    d.step(
        "create run0.. (other)",
        || {
            (0..LARGE)
                .map(|i| {
                    let id = tid(&format!("run{i}"));
                    other.create(NewTask::new().id(id).ttl(SHORT)).unwrap()
                })
                .collect::<Vec<Task>>()
        },
        |created: &Vec<Task>| Effect::Put(created.clone()),
    );
    // Tasks the sweep keeps, which it meets among those it removes: running
    // ones without a TTL, unread like the rest, and finished ones whose TTL
    // runs a day.
    d.step(
        "create and complete keep0.. (other)",
        || {
            let mut versions = Vec::new();
            for i in 0..KEPT {
                let id = tid(&format!("keep{i}"));
                versions.push(other.create(NewTask::new().id(id)).unwrap());
                let id = tid(&format!("keepfin{i}"));
                let ttl = Duration::from_secs(86_400);
                versions.push(
                    other
                        .create(NewTask::new().id(id.clone()).ttl(ttl))
                        .unwrap(),
                );
                let done = other.complete(&id, json!(i)).unwrap();
                assert!(done.is_applied(), "{done:?}");
                versions.push(done.into_task());
            }
            versions
        },
        |versions: &Vec<Task>| Effect::Put(versions.clone()),
    );
    // The terminal moves last, after every create (each of which makes
    // `active/` durable): their names in `active/` go without an fsync
    // there, which the sweep must make before it removes their files from
    // `done/`. All by the other handle: the sweeping one has read none of
    // these tasks.
    d.step(
        "create fin0.. (other)",
        || {
            (0..LARGE)
                .map(|i| {
                    let id = tid(&format!("fin{i}"));
                    other.create(NewTask::new().id(id).ttl(SHORT)).unwrap()
                })
                .collect::<Vec<Task>>()
        },
        |created: &Vec<Task>| Effect::Put(created.clone()),
    );
    d.step(
        "complete fin0.. (other)",
        || {
            (0..LARGE)
                .map(|i| {
                    let done = other.complete(&tid(&format!("fin{i}")), json!(i)).unwrap();
                    assert!(done.is_applied(), "{done:?}");
                    done.into_task()
                })
                .collect::<Vec<Task>>()
        },
        |done: &Vec<Task>| Effect::Put(done.clone()),
    );
    drop(other);
    d.clock.advance(LATER);
    d.step(
        "sweep_expired (large: two chunks of each path)",
        || owner.sweep_expired().unwrap(),
        |n: &usize| {
            assert_eq!(*n, 2 * LARGE, "fin* and run*");
            let ids = (0..LARGE)
                .map(|i| tid(&format!("fin{i}")))
                .chain((0..LARGE).map(|i| tid(&format!("run{i}"))))
                .collect();
            Effect::Remove(ids)
        },
    );
    drop(owner);
    d.finish("large sweep")
}
