//! Checks of calls racing each other over the same tasks: claims, and
//! reaps, of the same orphans (two passes of one handle among them), a
//! claim against the owner's renewal, a reap against a claim, and a walk
//! across pages beside another handle's writes. Each holds whatever the interleaving:
//! every task goes one way, reported by exactly the call that took it, and
//! reads back as that call left it; a walk lists every task that stood
//! throughout it once.

use super::*;

/// Rounds of each race, each over fresh tasks: the threads interleave
/// differently from round to round.
const ROUNDS: usize = 8;

/// Tasks each round races over.
const TASKS: usize = 16;

/// The most writes the other handle makes beside one walk.
const WRITES_BESIDE_A_WALK: u64 = 60;

/// `TASKS` tasks `store` makes: resumable of `kind` (with attempts to
/// spare), or plain for `None`. Each round's resumable tasks are of a kind
/// of their own, so that no claim takes an earlier round's.
fn made(store: &dyn TaskStore, kind: Option<&str>) -> Vec<TaskId> {
    (0..TASKS)
        .map(|i| {
            let new = if let Some(kind) = kind {
                NewTask::new().resumable(kind, json!(i)).max_attempts(5)
            } else {
                NewTask::new()
            };
            store.create(new).unwrap().id
        })
        .collect()
}

/// What `pass` returned through each of four threads at once, two through
/// each handle (two passes of one handle at once among them).
fn four_at_once(
    a: &dyn TaskStore,
    b: &dyn TaskStore,
    pass: impl Fn(&dyn TaskStore) -> Vec<Task> + Sync,
) -> Vec<Vec<Task>> {
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|t| {
                let (store, pass) = ([a, b][t % 2], &pass);
                s.spawn(move || pass(store))
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    })
}

/// Each of `ids`, and no other, in `passes`, exactly once.
fn each_once(passes: &[Vec<Task>], ids: &[TaskId], what: &str) {
    let mut got: Vec<&TaskId> = passes.iter().flatten().map(|t| &t.id).collect();
    got.sort();
    let mut want: Vec<&TaskId> = ids.iter().collect();
    want.sort();
    assert_eq!(got, want, "every orphan {what} by exactly one pass");
}

/// Four claims at once, two through each handle, of 20 orphans: each is
/// claimed exactly once, at the next epoch.
pub(super) fn claims_race(a: &dyn TaskStore, b: &dyn TaskStore, setup: &Setup) {
    let ids: Vec<TaskId> = (0..20)
        .map(|i| {
            a.create(NewTask::new().resumable("k", json!(i)).max_attempts(5))
                .unwrap()
                .id
        })
        .collect();
    setup.clock.advance(setup.lease);
    let claims = four_at_once(a, b, |store| store.claim(&["k"]).unwrap().tasks);
    each_once(&claims, &ids, "claimed");
    for task in claims.iter().flatten() {
        assert_eq!(task.epoch, 2);
    }
}

/// Four reaps at once, two through each handle, of the same orphans: each
/// orphan is failed once, reported by one pass alone (with the version it
/// wrote, which is what reads back), and told once as `task.reaped`.
pub(super) fn reaps_race(a: &dyn TaskStore, b: &dyn TaskStore, setup: &Setup) {
    for _ in 0..ROUNDS {
        let ids = made(a, None);
        setup.clock.advance(setup.lease);
        let passes = four_at_once(a, b, |store| {
            let pass = store.reap().unwrap();
            assert!(pass.missed.is_empty(), "missed: {:?}", pass.missed);
            pass.tasks
        });
        each_once(&passes, &ids, "reaped");
        for task in passes.iter().flatten() {
            assert_eq!(task.status, TaskStatus::Failed, "{task:?}");
            assert_eq!(
                b.get(&task.id).unwrap().as_ref(),
                Some(task),
                "a reaped task reads back as its pass reported it"
            );
            assert_eq!(events_of(setup, TaskEventKind::Reaped, &task.id), 1);
        }
    }
}

/// The owner renews its lapsed leases while another instance claims the
/// same tasks: a task goes to one of them. No task is both renewed for
/// its owner and claimed from it (either would have had to come first,
/// and each rules the other out: a renewed lease is live, so not
/// claimable, and a claimed task is no longer the owner's); a claimed
/// task reads back as claimed, a renewed one as its owner's.
pub(super) fn a_claim_races_the_owners_renewal(
    a: &dyn TaskStore,
    b: &dyn TaskStore,
    setup: &Setup,
) {
    for round in 0..ROUNDS {
        let kind = format!("k{round}");
        let ids = made(a, Some(&kind));
        setup.clock.advance(setup.lease);
        let (renewals, claimed) = std::thread::scope(|s| {
            let renewing = s.spawn(|| a.renew_leases_of(&ids));
            let claiming = s.spawn(|| b.claim(&[&kind]).unwrap());
            (renewing.join().unwrap(), claiming.join().unwrap())
        });
        assert!(claimed.missed.is_empty(), "missed: {:?}", claimed.missed);
        let claimed: BTreeMap<&TaskId, &Task> =
            claimed.tasks.iter().map(|task| (&task.id, task)).collect();
        assert!(
            claimed.keys().all(|id| ids.contains(id)),
            "a claim of this round's kind took another task"
        );
        for (id, renewal) in ids.iter().zip(renewals) {
            let now = b.get(id).unwrap().expect("every task is there");
            match (renewal, claimed.get(id)) {
                (Ok(Transition::Applied(renewed)), None) => {
                    assert_eq!(now, renewed, "a renewed task reads back as renewed");
                    assert_eq!(now.owner.as_deref(), Some(a.instance_id()));
                    assert_eq!(now.epoch, 1);
                }
                (Err(Error::NotOwner { .. }) | Ok(Transition::Fenced(_)), Some(&taken)) => {
                    assert_eq!(&now, taken, "a claimed task reads back as claimed");
                    assert_eq!(now.owner.as_deref(), Some(b.instance_id()));
                    assert_eq!(now.epoch, 2);
                }
                (renewal, taken) => panic!(
                    "task {id}: renewed {renewal:?} and claimed {taken:?} (now {now:?}): \
                     it must go to exactly one"
                ),
            }
        }
        let mut told = 0;
        for id in &ids {
            told += events_of(setup, TaskEventKind::Claimed, id);
        }
        assert_eq!(told, claimed.len(), "one task.claimed a task claimed");
    }
}

/// A reap and a claim of the same resumable orphans, past their claim
/// grace, at once: each task is either failed by the reap or claimed,
/// reported by that call alone, and reads back so; none is both, and none
/// neither (each call judges a task again when the other wrote it first).
pub(super) fn a_reap_races_a_claim(a: &dyn TaskStore, b: &dyn TaskStore, setup: &Setup) {
    for round in 0..ROUNDS {
        let kind = format!("k{round}");
        let ids = made(a, Some(&kind));
        // Past the lease and the claim grace (one lease): reapable, and
        // still claimable until reaped.
        setup.clock.advance(setup.lease * 2);
        let (reaped, claimed) = std::thread::scope(|s| {
            let reaping = s.spawn(|| a.reap().unwrap());
            let claiming = s.spawn(|| b.claim(&[&kind]).unwrap());
            (reaping.join().unwrap(), claiming.join().unwrap())
        });
        assert!(reaped.missed.is_empty(), "missed: {:?}", reaped.missed);
        assert!(claimed.missed.is_empty(), "missed: {:?}", claimed.missed);
        let by_id = |pass: &[Task]| -> BTreeMap<TaskId, Task> {
            pass.iter().map(|t| (t.id.clone(), t.clone())).collect()
        };
        let (reaped, claimed) = (by_id(&reaped.tasks), by_id(&claimed.tasks));
        assert!(
            claimed.keys().all(|id| ids.contains(id)),
            "a claim of this round's kind took another task"
        );
        for id in &ids {
            let now = b.get(id).unwrap().expect("every task is there");
            match (reaped.get(id), claimed.get(id)) {
                (Some(failed), None) => {
                    assert_eq!(&now, failed, "a reaped task reads back as reaped");
                    assert_eq!(now.status, TaskStatus::Failed);
                }
                (None, Some(taken)) => {
                    assert_eq!(&now, taken, "a claimed task reads back as claimed");
                    assert_eq!(
                        (now.status, now.owner.as_deref(), now.epoch),
                        (TaskStatus::Working, Some(b.instance_id()), 2)
                    );
                }
                (failed, taken) => panic!(
                    "task {id}: reaped {failed:?} and claimed {taken:?} (now {now:?}): \
                     it must go one way"
                ),
            }
            let told = (
                events_of(setup, TaskEventKind::Reaped, id),
                events_of(setup, TaskEventKind::Claimed, id),
            );
            let want = if reaped.contains_key(id) {
                (1, 0)
            } else {
                (0, 1)
            };
            assert_eq!(told, want, "the events of task {id}");
        }
    }
}

/// Walks of every listing, a few tasks a page, while another handle
/// writes beside them (creates, updates of the walked tasks, completions,
/// deletions and cancels of its own): every task that stood throughout a
/// walk, running or finished, is listed exactly once, in listing order;
/// no task is listed twice. (A page of a task judged by itself cannot show
/// a task a walk skipped: the linearizability tests judge each listed
/// task alone.)
pub(super) fn a_walk_across_pages_beside_writers_lists_every_standing_task_once(
    a: &dyn TaskStore,
    b: &dyn TaskStore,
    setup: &Setup,
) {
    use std::sync::atomic::{AtomicBool, AtomicU64};
    let mut standing: Vec<Task> = (0..40)
        .map(|i| {
            setup.clock.advance(Duration::from_millis(1));
            a.create(NewTask::new().metadata("n", i)).unwrap()
        })
        .collect();
    // A fifth of them finished: a walk of every task meets both areas.
    for task in standing.iter_mut().step_by(5) {
        *task = applied(a.complete(&task.id, json!("done")).unwrap());
    }
    for (query, finished_too, label) in [
        (ListQuery::all(), true, "every task"),
        (ListQuery::active(), false, "running tasks"),
    ] {
        let wanted: Vec<&TaskId> = standing
            .iter()
            .filter(|t| finished_too || !t.is_terminal())
            .map(|t| &t.id)
            .collect();
        for limit in [1, 3, 7] {
            let done = AtomicBool::new(false);
            // The writes made so far; `u64::MAX` once the writer stopped.
            let wrote = AtomicU64::new(0);
            let start = std::sync::Barrier::new(2);
            let walked = std::thread::scope(|s| {
                let writer = s.spawn(|| {
                    start.wait();
                    // Bounded: tasks it makes at the walk's instant list
                    // after the standing ones, and a writer faster than
                    // the walk would keep it going.
                    let mut n = 0u64;
                    while !done.load(Ordering::SeqCst) && n < WRITES_BESIDE_A_WALK {
                        n += 1;
                        wrote.store(n, Ordering::SeqCst);
                        let own = b.create(NewTask::new()).unwrap();
                        let walked = &standing[(n as usize * 7) % standing.len()];
                        if !walked.is_terminal() {
                            let note = TaskUpdate::new().metadata("seen", n);
                            applied(b.update(&walked.id, note).unwrap());
                        }
                        match n % 3 {
                            0 => assert!(b.delete(&own.id).unwrap()),
                            1 => drop(applied(b.complete(&own.id, json!(n)).unwrap())),
                            _ => drop(applied(b.cancel(&own.id, None).unwrap())),
                        }
                    }
                    wrote.store(u64::MAX, Ordering::SeqCst);
                });
                start.wait();
                let mut walked: Vec<TaskId> = Vec::new();
                let mut page = query.clone().limit(limit);
                loop {
                    let got = a.list(&page).unwrap();
                    assert!(got.skipped.is_empty(), "{:?}", got.skipped);
                    walked.extend(got.tasks.into_iter().map(|t| t.id));
                    // At least one write between two pages, while the
                    // writer writes, whatever the two threads' speeds.
                    let before = wrote.load(Ordering::SeqCst);
                    while before != u64::MAX && wrote.load(Ordering::SeqCst) == before {
                        std::thread::yield_now();
                    }
                    match got.next_cursor {
                        Some(cursor) => page = query.clone().limit(limit).after(&cursor),
                        None => break,
                    }
                }
                done.store(true, Ordering::SeqCst);
                writer.join().unwrap();
                walked
            });
            let listed: Vec<&TaskId> = walked.iter().filter(|id| wanted.contains(id)).collect();
            assert_eq!(
                listed, wanted,
                "{label}, {limit} a page: every standing task once, in order"
            );
            let distinct: HashSet<&TaskId> = walked.iter().collect();
            assert_eq!(
                distinct.len(),
                walked.len(),
                "{label}, {limit} a page: a task listed twice"
            );
        }
    }
}
