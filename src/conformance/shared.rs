//! Checks on two handles on one storage, and threads racing through one:
//! first writer wins, no lost update, renewal and reaping across instances.

use super::*;

/// `try_get` (a `get` that waits for nothing) answers what `get` answers,
/// or nothing: never an older version, never an expired or deleted task,
/// whichever handle wrote last.
pub(super) fn try_get_answers_as_get_does(a: &dyn TaskStore, b: &dyn TaskStore, setup: &Setup) {
    let same = |latest: Option<&Task>, id: &TaskId, after: &str| {
        for (name, store) in [("a", a), ("b", b)] {
            if let Some(answer) = store.try_get(id) {
                assert_eq!(
                    answer.as_ref(),
                    latest,
                    "handle {name}: try_get after {after} answered other than the last write"
                );
            }
            assert_eq!(
                store.get(id).unwrap().as_ref(),
                latest,
                "handle {name}: get after {after}"
            );
            // Once `get` has taken every write in, an answer is still the same.
            if let Some(answer) = store.try_get(id) {
                assert_eq!(
                    answer.as_ref(),
                    latest,
                    "handle {name}: try_get after get, after {after}"
                );
            }
        }
    };
    let task = a
        .create(NewTask::new().ttl(Duration::from_secs(60)))
        .unwrap();
    same(Some(&task), &task.id, "create");
    for round in 0..10u64 {
        let writer = if round % 2 == 0 { b } else { a };
        let latest = applied(
            writer
                .update(&task.id, TaskUpdate::new().metadata("round", round))
                .unwrap(),
        );
        same(Some(&latest), &task.id, &format!("update {round}"));
    }
    let done = applied(b.complete(&task.id, json!(1)).unwrap());
    same(Some(&done), &task.id, "complete");
    assert!(a.delete(&task.id).unwrap());
    same(None, &task.id, "delete");
    let again = b.create(NewTask::new().id(task.id.clone())).unwrap();
    same(Some(&again), &task.id, "create again under the id");
    let short = a
        .create(NewTask::new().ttl(Duration::from_secs(1)))
        .unwrap();
    same(Some(&short), &short.id, "create with a short TTL");
    setup.clock.advance(Duration::from_secs(1));
    same(None, &short.id, "expiry");
    let missing = TaskId::parse("never-created").unwrap();
    same(None, &missing, "nothing");
}

pub(super) fn two_handles_share_one_store(a: &dyn TaskStore, b: &dyn TaskStore, setup: &Setup) {
    assert_ne!(a.instance_id(), b.instance_id());
    let task = a.create(NewTask::new().metadata("from", "a")).unwrap();
    assert_eq!(b.get(&task.id).unwrap(), Some(task.clone()));
    setup.clock.advance(Duration::from_secs(1));
    let updated = applied(
        b.update(&task.id, TaskUpdate::new().metadata("from", "b"))
            .unwrap(),
    );
    assert_eq!(updated.revision, 2);
    assert_eq!(
        updated.owner.as_deref(),
        Some(a.instance_id()),
        "another instance's write keeps the owner"
    );
    assert_eq!(
        updated.lease_expires_at, task.lease_expires_at,
        "another instance's write does not renew the owner's lease"
    );
    assert_eq!(a.get(&task.id).unwrap(), Some(updated));
    let done = applied(a.complete(&task.id, json!("a")).unwrap());
    assert_eq!(
        b.fail(&task.id, json!("b")).unwrap(),
        Transition::AlreadyTerminal(done.clone())
    );
    assert_eq!(listed_ids(b, &ListQuery::all()), vec![task.id.clone()]);
    assert!(b.list(&ListQuery::active()).unwrap().tasks.is_empty());
    assert!(b.delete(&task.id).unwrap());
    assert_eq!(a.get(&task.id).unwrap(), None);
}

/// Threads race `complete`, `fail` and `cancel` on 20 tasks, through the
/// handles given (one each, in turn): exactly one applied transition per
/// task, and every loser sees the winner untouched.
pub(super) fn race_terminal_transitions(handles: &[&dyn TaskStore]) {
    const THREADS: usize = 6;
    let ids: Vec<TaskId> = (0..20)
        .map(|_| handles[0].create(NewTask::new()).unwrap().id)
        .collect();
    let results: Vec<Vec<(TaskId, Transition)>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let store = handles[t % handles.len()];
                let ids = &ids;
                s.spawn(move || {
                    ids.iter()
                        .map(|id| {
                            let outcome = match t % 3 {
                                0 => store.complete(id, json!({ "thread": t })),
                                1 => store.fail(id, json!({ "thread": t })),
                                _ => store.cancel(id, Some(format!("thread {t}"))),
                            };
                            (id.clone(), outcome.unwrap())
                        })
                        .collect()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let mut by_task: BTreeMap<TaskId, Vec<Transition>> = BTreeMap::new();
    for (id, transition) in results.into_iter().flatten() {
        by_task.entry(id).or_default().push(transition);
    }
    for (id, transitions) in by_task {
        let winners: Vec<&Task> = transitions
            .iter()
            .filter(|t| t.is_applied())
            .map(Transition::task)
            .collect();
        assert_eq!(winners.len(), 1, "task {id}: exactly one winner");
        let winner = winners[0];
        assert!(winner.is_terminal());
        assert_eq!(winner.revision, 2);
        for t in &transitions {
            assert_eq!(t.task(), winner, "task {id}: every loser sees the winner");
        }
        for store in handles {
            assert_eq!(store.get(&id).unwrap().as_ref(), Some(winner));
        }
    }
}

pub(super) fn threads_race_terminal_transitions(store: &dyn TaskStore, _: &Setup) {
    race_terminal_transitions(&[store]);
}

pub(super) fn handles_race_terminal_transitions(a: &dyn TaskStore, b: &dyn TaskStore, _: &Setup) {
    race_terminal_transitions(&[a, b]);
}

/// Threads update one task 25 times each, through the handles given, each
/// merging its own metadata key: none is lost, the revision rises by one
/// per update, and each thread was handed distinct revisions.
pub(super) fn race_updates(handles: &[&dyn TaskStore]) {
    const THREADS: usize = 4;
    const EACH: u64 = 25;
    let task = handles[0].create(NewTask::new()).unwrap();
    let revisions: Vec<u64> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let store = handles[t % handles.len()];
                let id = &task.id;
                s.spawn(move || {
                    (0..EACH)
                        .map(|i| {
                            let update = TaskUpdate::new().metadata(format!("t{t}"), i);
                            applied(store.update(id, update).unwrap()).revision
                        })
                        .collect::<Vec<u64>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let distinct: HashSet<u64> = revisions.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        revisions.len(),
        "each revision handed out once"
    );
    let last = 1 + THREADS as u64 * EACH;
    assert_eq!(distinct, (2..=last).collect(), "revision +1 per update");
    for store in handles {
        let read = store.get(&task.id).unwrap().unwrap();
        assert_eq!(read.revision, last);
        for t in 0..THREADS {
            assert_eq!(read.metadata[&format!("t{t}")], EACH - 1, "no update lost");
        }
    }
}

pub(super) fn threads_race_updates(store: &dyn TaskStore, _: &Setup) {
    race_updates(&[store]);
}

pub(super) fn handles_race_updates(a: &dyn TaskStore, b: &dyn TaskStore, _: &Setup) {
    race_updates(&[a, b]);
}

pub(super) fn another_instance_renews_nothing_and_reaps(
    a: &dyn TaskStore,
    b: &dyn TaskStore,
    setup: &Setup,
) {
    let task = a.create(NewTask::new()).unwrap();
    match b.renew_lease(&task.id) {
        Err(Error::NotOwner { id, owner }) => {
            assert_eq!(id, task.id);
            assert_eq!(owner.as_deref(), Some(a.instance_id()));
        }
        other => panic!("another instance's renewal must be NotOwner, got {other:?}"),
    }
    assert_eq!(b.renew_leases().unwrap(), 0, "b owns nothing");
    assert_eq!(
        a.get(&task.id).unwrap(),
        Some(task.clone()),
        "nothing changed"
    );
    setup.clock.advance(setup.lease / 2);
    let renewed = applied(a.renew_lease(&task.id).unwrap());
    assert!(
        b.reap().unwrap().tasks.is_empty(),
        "a renewed lease is not lapsed"
    );
    setup.clock.set(renewed.lease_expires_at.unwrap());
    let reaped = b.reap().unwrap();
    assert!(reaped.missed.is_empty() && reaped.skipped.is_empty());
    assert_eq!(reaped.tasks.len(), 1);
    let orphan = &reaped.tasks[0];
    assert_eq!(orphan.status, TaskStatus::Failed);
    let error = orphan.error.as_ref().unwrap();
    assert_eq!(error["owner"], a.instance_id());
    assert_eq!(error["reapedBy"], b.instance_id());
    assert_eq!(a.get(&task.id).unwrap().as_ref(), Some(orphan));
    assert_eq!(
        a.renew_lease(&task.id).unwrap(),
        Transition::AlreadyTerminal(orphan.clone())
    );
    assert!(!a.complete(&task.id, json!(1)).unwrap().is_applied());
}

/// A task whose metadata leaves less room than an orphan error takes.
pub(super) fn near_cap(store: &dyn TaskStore, setup: &Setup) -> Task {
    let probe = NewTask::new()
        .metadata("blob", "")
        .status_message("almost full");
    let bare = store.create(probe).unwrap();
    let size = serde_json::to_vec(&bare).unwrap().len();
    assert!(store.delete(&bare.id).unwrap());
    let blob = "x".repeat(setup.max_payload_bytes - size - 16);
    let task = store
        .create(
            NewTask::new()
                .metadata("blob", blob)
                .status_message("almost full"),
        )
        .unwrap_or_else(|e| panic!("a task just under the cap is accepted: {e}"));
    assert!(serde_json::to_vec(&task).unwrap().len() <= setup.max_payload_bytes);
    task
}

pub(super) fn a_near_cap_orphan_is_reaped(store: &dyn TaskStore, setup: &Setup) {
    let task = near_cap(store, setup);
    setup.clock.advance(setup.lease);
    let reaped = store.reap().unwrap();
    assert!(reaped.missed.is_empty(), "{:?}", reaped.missed);
    assert_eq!(reaped.tasks.len(), 1);
    let orphan = &reaped.tasks[0];
    assert_eq!((&orphan.id, orphan.status), (&task.id, TaskStatus::Failed));
    assert_eq!(orphan.error.as_ref().unwrap()["code"], "orphaned");
    // The orphan keeps all it had: the store's own write may go past the
    // payload cap by its headroom, which an orphan error always fits.
    assert_eq!(orphan.metadata, task.metadata);
    assert_eq!(orphan.status_message, task.status_message);
    let size = serde_json::to_vec(orphan).unwrap().len();
    assert!(size > setup.max_payload_bytes, "{size}: past the cap");
    assert!(
        size <= setup.max_payload_bytes + crate::OWN_HEADROOM,
        "{size}"
    );
    assert_eq!(store.get(&task.id).unwrap().as_ref(), Some(orphan));
}

pub(super) fn every_orphan_is_reaped_in_one_pass(store: &dyn TaskStore, setup: &Setup) {
    let mut expected = Vec::new();
    for i in 0..5 {
        setup.clock.advance(Duration::from_millis(1));
        let task = if i == 2 {
            near_cap(store, setup)
        } else {
            store.create(NewTask::new()).unwrap()
        };
        expected.push(task.id);
    }
    setup.clock.advance(setup.lease);
    let reaped = store.reap().unwrap();
    assert!(reaped.missed.is_empty(), "{:?}", reaped.missed);
    let ids: Vec<TaskId> = reaped.tasks.iter().map(|t| t.id.clone()).collect();
    assert_eq!(ids, expected, "every orphan, in listing order");
    assert!(store.list(&ListQuery::active()).unwrap().tasks.is_empty());
}

/// `reap_task` fails the orphan it names, by `reap`'s rule and with its
/// error; a task that is not an orphan to reap (a live lease, a resumable
/// one waiting for a claim, a finished or missing one) is left as it is.
/// (The stores of this crate leave every other task alone too; the
/// trait's default, a whole `reap`, may fail the other orphans with it.)
pub(super) fn reap_task_reaps_the_orphan_it_names(
    a: &dyn TaskStore,
    b: &dyn TaskStore,
    setup: &Setup,
) {
    let first = a.create(NewTask::new()).unwrap();
    let other = a.create(NewTask::new()).unwrap();
    let resumable = a.create(NewTask::new().resumable("k", json!({}))).unwrap();
    let expiring = a
        .create(NewTask::new().ttl(Duration::from_secs(1)))
        .unwrap();
    assert_eq!(b.reap_task(&first.id).unwrap(), None, "a live lease");
    setup.clock.advance(setup.lease);
    let reaped = b
        .reap_task(&first.id)
        .unwrap()
        .unwrap_or_else(|| panic!("task {} was not reaped", first.id));
    assert_eq!(reaped.status, TaskStatus::Failed);
    let error = reaped.error.as_ref().unwrap();
    assert_eq!(error["code"], "orphaned");
    assert_eq!(error["owner"], a.instance_id());
    assert_eq!(error["reapedBy"], b.instance_id());
    assert_eq!(a.get(&first.id).unwrap().as_ref(), Some(&reaped));
    assert_eq!(b.reap_task(&first.id).unwrap(), None, "finished");
    assert_eq!(
        b.reap_task(&expiring.id).unwrap(),
        None,
        "an expired orphan is no orphan to fail"
    );
    assert_eq!(a.get(&expiring.id).unwrap(), None);
    assert_eq!(
        b.reap_task(&resumable.id).unwrap(),
        None,
        "a resumable orphan waits for a claim through the claim grace"
    );
    assert_eq!(b.reap_task(&TaskId::new()).unwrap(), None, "missing");
    b.reap().unwrap();
    assert_eq!(
        a.get(&other.id).unwrap().unwrap().status,
        TaskStatus::Failed,
        "the other orphan, by now"
    );
    assert_eq!(
        a.get(&resumable.id).unwrap().unwrap().status,
        TaskStatus::Working,
        "still waiting for a claim"
    );
}

/// An update on condition of a revision ([`TaskUpdate::if_revision`]) is
/// applied only while the task is still at it: after another handle's write
/// it is refused as [`Transition::Changed`] with the task as it stands, and
/// writes nothing; a terminal task is reported as such first.
pub(super) fn a_conditional_update_applies_only_at_its_revision(
    a: &dyn TaskStore,
    b: &dyn TaskStore,
    _setup: &Setup,
) {
    let task = a.create(NewTask::new()).unwrap();
    let read = a.get(&task.id).unwrap().unwrap();
    let landed = b
        .update(&task.id, TaskUpdate::new().metadata("peer", true))
        .unwrap()
        .into_task();
    let refused = a
        .update(
            &task.id,
            TaskUpdate::new()
                .metadata("stale", true)
                .if_revision(read.revision),
        )
        .unwrap();
    assert_eq!(refused, Transition::Changed(landed.clone()));
    assert_eq!(a.get(&task.id).unwrap().unwrap(), landed, "nothing written");
    let applied = a
        .update(
            &task.id,
            TaskUpdate::new()
                .metadata("fresh", true)
                .if_revision(landed.revision),
        )
        .unwrap();
    assert!(applied.is_applied(), "{applied:?}");
    assert_eq!(applied.task().revision, landed.revision + 1);
    assert_eq!(applied.task().metadata["peer"], json!(true));
    let done = b
        .finish(&task.id, crate::Outcome::Completed(json!(1)))
        .unwrap();
    assert!(matches!(
        a.update(&task.id, TaskUpdate::new().if_revision(0)).unwrap(),
        Transition::AlreadyTerminal(t) if t == *done.task()
    ));
}

/// A conditional update at a revision the task has left is reported for
/// what keeps it from any write first: an expired task is not found, a
/// terminal one is [`Transition::AlreadyTerminal`], one whose fence it
/// fails is [`Transition::Fenced`]; only a task any write could change is
/// [`Transition::Changed`]. Each leaves the task as it was.
pub(super) fn a_conditional_update_reports_expired_terminal_and_fenced_before_changed(
    a: &dyn TaskStore,
    b: &dyn TaskStore,
    setup: &Setup,
) {
    let stale = |task: &crate::Task| {
        let landed = b
            .update(&task.id, TaskUpdate::new().metadata("peer", true))
            .unwrap()
            .into_task();
        assert_eq!(landed.revision, task.revision + 1);
        (task.revision, landed)
    };
    // Fenced: a's task, written by b since; b's fenced write at a's epoch
    // is not b's to make, and says so before the revision.
    let owned = a.create(NewTask::new()).unwrap();
    let (old, landed) = stale(&owned);
    let update = TaskUpdate::new()
        .metadata("stale", true)
        .fenced(owned.epoch)
        .if_revision(old);
    assert_eq!(
        b.update(&owned.id, update).unwrap(),
        Transition::Fenced(landed.clone()),
        "fenced before changed"
    );
    assert_eq!(
        a.get(&owned.id).unwrap().unwrap(),
        landed,
        "nothing written"
    );
    // Terminal, at a revision it has left.
    let finished = a.create(NewTask::new()).unwrap();
    let (old_finished, _) = stale(&finished);
    let done = a
        .finish(&finished.id, crate::Outcome::Completed(json!(1)))
        .unwrap()
        .into_task();
    assert_eq!(
        b.update(&finished.id, TaskUpdate::new().if_revision(old_finished))
            .unwrap(),
        Transition::AlreadyTerminal(done.clone()),
        "terminal before changed"
    );
    // Expired, at a revision it has left: not found, and deleted.
    let ttl = setup.lease;
    let expiring = a.create(NewTask::new().ttl(ttl)).unwrap();
    let (old, _) = stale(&expiring);
    setup.clock.advance(ttl);
    assert!(
        matches!(
            b.update(&expiring.id, TaskUpdate::new().if_revision(old)),
            Err(Error::NotFound { id }) if id == expiring.id
        ),
        "expired before changed"
    );
    // Before any `get`, which deletes an expired task it meets too.
    assert_eq!(
        a.sweep().unwrap().deleted,
        0,
        "the refused update deleted the expired task"
    );
    assert!(a.get(&expiring.id).unwrap().is_none());
    assert_eq!(a.get(&finished.id).unwrap().unwrap(), done);
}

/// A reap and a claim delete the expired tasks they meet (running, their
/// lease lapsed), as a sweep would, and say which they deleted.
pub(super) fn a_reap_and_a_claim_tell_the_expired_tasks_they_delete(
    store: &dyn TaskStore,
    setup: &Setup,
) {
    let ttl = setup.lease * 2;
    let reaped_one = store.create(NewTask::new().ttl(ttl)).unwrap();
    let claimed_one = store
        .create(NewTask::new().ttl(ttl).resumable("k", json!(1)))
        .unwrap();
    setup.clock.advance(ttl);
    let claimed = store.claim(&["k"]).unwrap();
    assert!(claimed.tasks.is_empty(), "{:?}", claimed.tasks);
    let mut expired = claimed.expired.clone();
    expired.sort();
    let mut both = vec![reaped_one.id.clone(), claimed_one.id.clone()];
    both.sort();
    assert_eq!(expired, both, "the claim met both and deleted them");
    let reaped = store.reap().unwrap();
    assert!(reaped.expired.is_empty() && reaped.tasks.is_empty());
    assert!(store.get(&reaped_one.id).unwrap().is_none());
    let later = store.create(NewTask::new().ttl(ttl)).unwrap();
    setup.clock.advance(ttl);
    let reaped = store.reap().unwrap();
    assert_eq!(
        reaped.expired,
        vec![later.id],
        "the reap met it and deleted it"
    );
    assert!(reaped.tasks.is_empty());
}

/// `ListQuery::owner` lists the tasks of one instance alone, in listing
/// order, with `status` too, and pages through them a task at a time with
/// cursors that join up (the last page has none); an owner of no task lists
/// nothing.
pub(super) fn list_filters_by_owner(a: &dyn TaskStore, b: &dyn TaskStore, setup: &Setup) {
    let mut ids = Vec::new();
    for store in [a, b, a, b, a] {
        ids.push(store.create(NewTask::new()).unwrap().id);
        setup.clock.advance(Duration::from_secs(1));
    }
    let of_b = vec![ids[1].clone(), ids[3].clone()];
    let by_b = ListQuery::all().owner(b.instance_id());
    assert_eq!(listing::listed_ids(a, &by_b), of_b);
    let mut paged = Vec::new();
    let mut query = by_b.clone().limit(1);
    loop {
        let page = a.list(&query).unwrap();
        assert!(page.tasks.len() <= 1);
        paged.extend(page.tasks.into_iter().map(|t| t.id));
        match page.next_cursor {
            Some(cursor) => query = by_b.clone().limit(1).after(&cursor),
            None => break,
        }
    }
    assert_eq!(paged, of_b, "the pages join up");
    applied(b.complete(&ids[3], json!(1)).unwrap());
    assert_eq!(
        listing::listed_ids(a, &by_b.clone().status(TaskStatus::Completed)),
        vec![ids[3].clone()]
    );
    assert!(
        a.list(&ListQuery::all().owner("no-such-instance"))
            .unwrap()
            .tasks
            .is_empty()
    );
}
