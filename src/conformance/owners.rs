//! Checks of events, claims, epochs, fences and releases across handles.

use super::*;
use crate::Outcome;

pub(super) fn events_once_per_applied_transition(
    a: &dyn TaskStore,
    b: &dyn TaskStore,
    setup: &Setup,
) {
    let count = |kind: TaskEventKind, id: &TaskId| events_of(setup, kind, id);
    let task = a
        .create(NewTask::new().ttl(Duration::from_secs(3_600)))
        .unwrap();
    assert_eq!(count(TaskEventKind::Created, &task.id), 1);
    applied(
        b.update(&task.id, TaskUpdate::new().metadata("k", 1))
            .unwrap(),
    );
    assert_eq!(count(TaskEventKind::Updated, &task.id), 1);
    // A write refused by its condition is no event either: at a revision
    // the task has left, or fenced to an epoch it is not at.
    let stale = TaskUpdate::new()
        .metadata("k", 2)
        .if_revision(task.revision);
    assert!(matches!(
        b.update(&task.id, stale).unwrap(),
        Transition::Changed(_)
    ));
    let fenced = TaskUpdate::new().metadata("k", 3).fenced(task.epoch + 1);
    assert!(matches!(
        a.update(&task.id, fenced).unwrap(),
        Transition::Fenced(_)
    ));
    assert_eq!(
        count(TaskEventKind::Updated, &task.id),
        1,
        "no event for either"
    );
    let big = "x".repeat(setup.max_payload_bytes);
    assert!(a.complete(&task.id, json!(big)).is_err());
    assert_eq!(
        count(TaskEventKind::Completed, &task.id),
        0,
        "a refused write is no event"
    );
    applied(a.complete(&task.id, json!(1)).unwrap());
    assert!(!b.cancel(&task.id, None).unwrap().is_applied());
    assert!(!a.update(&task.id, TaskUpdate::new()).unwrap().is_applied());
    assert_eq!(count(TaskEventKind::Completed, &task.id), 1);
    assert_eq!(count(TaskEventKind::Cancelled, &task.id), 0);
    assert_eq!(count(TaskEventKind::Updated, &task.id), 1);
    assert!(a.update(&TaskId::new(), TaskUpdate::new()).is_err());

    // A race across both handles: one terminal event.
    let raced = a.create(NewTask::new()).unwrap();
    let terminal = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..4 {
            let store = [a, b][t % 2];
            let (raced, terminal) = (&raced, &terminal);
            s.spawn(move || {
                let won = match t % 3 {
                    0 => store.complete(&raced.id, json!(t)),
                    1 => store.fail(&raced.id, json!(t)),
                    _ => store.cancel(&raced.id, None),
                };
                if won.unwrap().is_applied() {
                    terminal.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    let events: usize = [
        TaskEventKind::Completed,
        TaskEventKind::Failed,
        TaskEventKind::Cancelled,
    ]
    .into_iter()
    .map(|k| count(k, &raced.id))
    .sum();
    assert_eq!((terminal.into_inner(), events), (1, 1));

    assert!(b.delete(&raced.id).unwrap());
    assert!(!a.delete(&raced.id).unwrap());
    assert_eq!(count(TaskEventKind::Deleted, &raced.id), 1);

    let orphan = a.create(NewTask::new()).unwrap();
    setup.clock.advance(setup.lease);
    assert_eq!(b.reap().unwrap().tasks.len(), 1);
    assert!(a.reap().unwrap().tasks.is_empty());
    assert_eq!(count(TaskEventKind::Reaped, &orphan.id), 1);
    assert_eq!(
        count(TaskEventKind::Failed, &orphan.id),
        0,
        "a reap is its own event"
    );

    setup.clock.advance(Duration::from_secs(3_600));
    assert_eq!(a.sweep().unwrap().deleted, 1);
    assert_eq!(b.sweep().unwrap().deleted, 0);
    assert_eq!(count(TaskEventKind::Expired, &task.id), 1);
}

pub(super) fn fenced(t: Transition) -> Task {
    match t {
        Transition::Fenced(task) => task,
        other => panic!("expected Fenced, got {other:?}"),
    }
}

pub(super) fn a_claim_moves_the_owner_and_fences_the_old_one(
    a: &dyn TaskStore,
    b: &dyn TaskStore,
    setup: &Setup,
) {
    let task = a
        .create(NewTask::new().resumable("convert", json!({"file": "x.pdf"})))
        .unwrap();
    assert_eq!(task.epoch, 1);
    let resume = task
        .resume
        .clone()
        .expect("a resumable task keeps its resume state");
    assert_eq!((resume.kind.as_str(), resume.attempts), ("convert", 1));
    let saved = applied(
        a.update(
            &task.id,
            TaskUpdate::new().checkpoint(json!({"page": 7})).fenced(1),
        )
        .unwrap(),
    );
    assert_eq!(
        saved.resume.as_ref().unwrap().checkpoint,
        Some(json!({"page": 7}))
    );
    // Not an orphan yet: nothing to claim.
    assert!(b.claim(&["convert"]).unwrap().tasks.is_empty());
    setup.clock.advance(setup.lease);
    assert!(
        b.claim(&["other-kind"]).unwrap().tasks.is_empty(),
        "only a handler for its kind claims it"
    );
    let claimed = b.claim(&["convert"]).unwrap();
    assert!(claimed.missed.is_empty());
    assert_eq!(claimed.tasks.len(), 1);
    let taken = &claimed.tasks[0];
    assert_eq!(taken.epoch, 2);
    assert_eq!(taken.owner.as_deref(), Some(b.instance_id()));
    assert_eq!(taken.status, TaskStatus::Working);
    assert_eq!(taken.revision, saved.revision + 1);
    let resume = taken.resume.as_ref().unwrap();
    assert_eq!(resume.attempts, 2);
    assert_eq!(resume.input, json!({"file": "x.pdf"}));
    assert_eq!(
        resume.checkpoint,
        Some(json!({"page": 7})),
        "resumed from its checkpoint"
    );
    assert_eq!(
        taken.lease_expires_at,
        Some(setup.clock.now() + setup.lease)
    );
    assert!(
        a.claim(&["convert"]).unwrap().tasks.is_empty(),
        "claimed once"
    );
    assert!(
        b.reap().unwrap().tasks.is_empty(),
        "a claimed task is not an orphan"
    );

    // Every write of the old epoch is refused and changes nothing.
    let old = [
        a.update(&task.id, TaskUpdate::new().status_message("late").fenced(1)),
        a.update(
            &task.id,
            TaskUpdate::new().checkpoint(json!({"page": 1})).fenced(1),
        ),
        a.update(
            &task.id,
            TaskUpdate::new()
                .status(TaskStatus::InputRequired)
                .input_requests(json!({"q": 1}))
                .fenced(1),
        ),
        a.finish_fenced(&task.id, crate::Outcome::Completed(json!("old")), 1),
        a.finish_fenced(&task.id, crate::Outcome::Failed(json!("old")), 1),
    ];
    for write in old {
        assert_eq!(&fenced(write.unwrap()), taken);
    }
    match a.renew_lease(&task.id) {
        Err(Error::NotOwner { owner, .. }) => assert_eq!(owner.as_deref(), Some(b.instance_id())),
        other => panic!("the old owner cannot renew, got {other:?}"),
    }
    assert_eq!(b.get(&task.id).unwrap().as_ref(), Some(taken));
    // The new epoch works, and finishes the task once.
    applied(b.renew_lease(&task.id).unwrap());
    applied(
        b.update(
            &task.id,
            TaskUpdate::new().checkpoint(json!({"page": 9})).fenced(2),
        )
        .unwrap(),
    );
    let done = applied(
        b.finish_fenced(&task.id, crate::Outcome::Completed(json!("new")), 2)
            .unwrap(),
    );
    assert_eq!(done.result, Some(json!("new")));
    assert_eq!(done.resume, None, "a finished task keeps no resume state");
    assert_eq!(
        a.finish_fenced(&task.id, crate::Outcome::Completed(json!("old")), 1)
            .unwrap(),
        Transition::AlreadyTerminal(done)
    );
    let claimed_events = setup
        .events
        .snapshot()
        .iter()
        .filter(|r| r.event.kind == TaskEventKind::Claimed)
        .count();
    assert_eq!(claimed_events, 1);
}

/// A task deleted and made again under its id (a host's own id) by another
/// instance is a new task at epoch 1, owned by that instance: the old
/// owner's fenced writes at epoch 1 are refused, not applied to it. (The
/// fence compared epochs alone, and the old run's stale outcome finished
/// the new task.)
pub(super) fn a_task_made_again_under_its_id_by_another_instance_fences_the_old_owner(
    a: &dyn TaskStore,
    b: &dyn TaskStore,
    setup: &Setup,
) {
    let id = crate::TaskId::parse("made-again").unwrap();
    let old = a.create(NewTask::new().id(id.clone())).unwrap();
    assert_eq!(old.epoch, 1);
    assert!(b.delete(&id).unwrap());
    // Made a moment later: a version is known by its id, creation time and
    // revision, and one made at the same instant is the same version to a
    // backend's conditional write.
    setup.clock.advance(Duration::from_millis(1));
    let again = b.create(NewTask::new().id(id.clone())).unwrap();
    assert_eq!(
        (again.epoch, again.owner.as_deref()),
        (1, Some(b.instance_id()))
    );
    let stale = [
        a.update(&id, TaskUpdate::new().status_message("late").fenced(1)),
        a.finish_fenced(&id, crate::Outcome::Completed(json!("stale")), 1),
    ];
    for write in stale {
        assert_eq!(fenced(write.unwrap()), again);
    }
    assert_eq!(b.get(&id).unwrap(), Some(again.clone()));
    applied(
        b.finish_fenced(&id, crate::Outcome::Completed(json!("new")), 1)
            .unwrap(),
    );
}

pub(super) fn a_reopened_instance_is_not_the_owner(
    a: &dyn TaskStore,
    _: &dyn TaskStore,
    reopen: Reopen<'_>,
    setup: &Setup,
) {
    let task = a.create(NewTask::new()).unwrap();
    // The same instance id, opened again (a restarted process).
    let again = reopen(a.instance_id());
    assert_eq!(again.instance_id(), a.instance_id());
    assert!(
        matches!(again.renew_lease(&task.id), Err(Error::NotOwner { .. })),
        "a new open is not the owner"
    );
    assert_eq!(again.renew_leases().unwrap(), 0);
    // Its writes fenced to the task's epoch are another owner's too.
    let late = again
        .finish_fenced(&task.id, Outcome::Completed(json!(1)), task.epoch)
        .unwrap();
    assert_eq!(&fenced(late), &task, "a new open's fenced write is refused");
    setup.clock.advance(setup.lease / 2);
    let written = applied(
        again
            .update(&task.id, TaskUpdate::new().metadata("cancel", true))
            .unwrap(),
    );
    assert_eq!(
        written.lease_expires_at, task.lease_expires_at,
        "its writes do not renew the lease"
    );
    setup.clock.advance(setup.lease / 2);
    let reaped = again.reap().unwrap();
    assert_eq!(reaped.tasks.len(), 1, "the dead open's task is reaped");
    assert_eq!(
        applied_or_terminal(a.renew_lease(&task.id)),
        TaskStatus::Failed
    );
}

pub(super) fn applied_or_terminal(t: crate::Result<Transition>) -> TaskStatus {
    t.unwrap().task().status
}

pub(super) fn resumable_orphans_wait_for_a_claim_then_are_reaped(
    a: &dyn TaskStore,
    b: &dyn TaskStore,
    setup: &Setup,
) {
    let waits = a.create(NewTask::new().resumable("k", json!(1))).unwrap();
    let last = a
        .create(NewTask::new().resumable("k", json!(2)).max_attempts(1))
        .unwrap();
    let plain = a.create(NewTask::new()).unwrap();
    setup.clock.advance(setup.lease);
    // At the lapse: the plain orphan and the one out of attempts are failed;
    // the resumable one waits for a claim.
    let reaped: Vec<TaskId> = b.reap().unwrap().tasks.into_iter().map(|t| t.id).collect();
    assert_eq!(reaped.len(), 2);
    assert!(reaped.contains(&last.id) && reaped.contains(&plain.id));
    let out_of_attempts = a.get(&last.id).unwrap().unwrap();
    assert_eq!(out_of_attempts.error.as_ref().unwrap()["attempts"], 1);
    assert!(
        b.claim(&["k"])
            .unwrap()
            .tasks
            .iter()
            .all(|t| t.id == waits.id)
    );
    // Claimed, it runs again; when that owner dies too and no one claims it
    // within the grace (one lease), it is failed.
    setup.clock.advance(setup.lease);
    assert!(a.reap().unwrap().tasks.is_empty(), "within the grace");
    setup.clock.advance(setup.lease);
    let reaped = a.reap().unwrap();
    assert_eq!(reaped.tasks.len(), 1);
    let failed = &reaped.tasks[0];
    assert_eq!(failed.id, waits.id);
    let error = failed.error.as_ref().unwrap();
    assert_eq!(
        (error["code"].as_str(), error["kind"].as_str()),
        (Some("orphaned"), Some("k"))
    );
    assert_eq!(error["attempts"], 2);
}

pub(super) fn a_release_hands_the_task_over_at_once(
    a: &dyn TaskStore,
    b: &dyn TaskStore,
    setup: &Setup,
) {
    let task = a
        .create(NewTask::new().resumable("k", json!({"n": 1})))
        .unwrap();
    let plain = a.create(NewTask::new()).unwrap();
    // Only the owner, at the task's epoch, may release it.
    assert_eq!(&fenced(a.release(&task.id, 2).unwrap()), &task);
    match b.release(&task.id, 1) {
        Err(Error::NotOwner { owner, .. }) => assert_eq!(owner.as_deref(), Some(a.instance_id())),
        other => panic!("another instance cannot release it, got {other:?}"),
    }
    assert!(matches!(
        a.release(&TaskId::parse("missing").unwrap(), 1),
        Err(Error::NotFound { .. })
    ));
    assert_eq!(
        a.get(&task.id).unwrap().as_ref(),
        Some(&task),
        "nothing changed"
    );

    setup.clock.advance(setup.lease / 4);
    let released = applied(a.release(&task.id, 1).unwrap());
    assert_eq!(released.lease_expires_at, Some(setup.clock.now()));
    assert_eq!(released.revision, task.revision + 1);
    assert_eq!(released.last_updated_at, task.last_updated_at);
    assert_eq!((released.epoch, released.status), (1, TaskStatus::Working));
    // Given up for good: the handle's renewals pass it by, and it cannot
    // renew it one by one either.
    a.renew_leases().unwrap();
    assert_eq!(a.get(&task.id).unwrap().as_ref(), Some(&released));
    assert!(matches!(
        a.renew_lease(&task.id),
        Err(Error::NotOwner { .. })
    ));
    // Nor do its fenced writes land at the epoch it gave up: the task is
    // for a claimer now (a run's write just after its host released it).
    let late = TaskUpdate::new().fenced(1).status_message("late");
    assert_eq!(&fenced(a.update(&task.id, late).unwrap()), &released);
    let outcome = Outcome::Completed(json!("late"));
    assert_eq!(
        &fenced(a.finish_fenced(&task.id, outcome, 1).unwrap()),
        &released
    );
    // Claimable at once, with no time passing: the new owner's epoch fences
    // the old one's writes and releases.
    let claimed = b.claim(&["k"]).unwrap();
    assert_eq!(claimed.tasks.len(), 1, "claimed at once");
    let taken = &claimed.tasks[0];
    assert_eq!(
        (taken.epoch, taken.owner.as_deref()),
        (2, Some(b.instance_id()))
    );
    assert_eq!(&fenced(a.release(&task.id, 1).unwrap()), taken);
    assert!(matches!(
        a.release(&task.id, 2),
        Err(Error::NotOwner { .. })
    ));
    assert!(b.reap().unwrap().tasks.is_empty(), "the claimed task runs");

    // A released task that is not resumable is reaped at once.
    applied(a.release(&plain.id, 1).unwrap());
    let reaped = b.reap().unwrap();
    assert_eq!(reaped.tasks.len(), 1);
    assert_eq!(reaped.tasks[0].id, plain.id);
    assert_eq!(reaped.tasks[0].error.as_ref().unwrap()["code"], "orphaned");
    // A terminal task is left as it is.
    let done = applied(
        b.finish_fenced(&task.id, crate::Outcome::Completed(json!(1)), 2)
            .unwrap(),
    );
    assert_eq!(
        b.release(&task.id, 2).unwrap(),
        Transition::AlreadyTerminal(done)
    );
}

/// A write by the owning handle renews a running task's lease, unless it
/// asks to leave it (`TaskUpdate::leave_lease`: a write on someone else's
/// behalf).
pub(super) fn an_update_may_leave_the_lease_as_it_is(store: &dyn TaskStore, setup: &Setup) {
    let task = store.create(NewTask::new()).unwrap();
    setup.clock.advance(Duration::from_secs(5));
    let left = applied(
        store
            .update(&task.id, TaskUpdate::new().metadata("k", 1).leave_lease())
            .unwrap(),
    );
    assert_eq!(
        left.lease_expires_at, task.lease_expires_at,
        "left as it was"
    );
    assert_eq!(left.metadata["k"], json!(1), "the rest applied");
    setup.clock.advance(Duration::from_secs(5));
    let renewed = applied(
        store
            .update(&task.id, TaskUpdate::new().metadata("k", 2))
            .unwrap(),
    );
    assert_eq!(
        renewed.lease_expires_at,
        Some(setup.clock.now() + setup.lease),
        "a plain write by the owner renews"
    );
}

/// Renewing several leases at once is renewing each: one result per id, in
/// order, each what `renew_lease` of it says (another instance's task
/// refused as not its own, a finished one untouched, an expired or missing
/// one not found), and each lease renewed moves as one renewal's would.
pub(super) fn renewing_several_leases_is_renewing_each(
    a: &dyn TaskStore,
    b: &dyn TaskStore,
    setup: &Setup,
) {
    let mine = a.create(NewTask::new()).unwrap();
    let also = a.create(NewTask::new()).unwrap();
    let finished = a.create(NewTask::new()).unwrap();
    applied(a.complete(&finished.id, json!(1)).unwrap());
    let theirs = b.create(NewTask::new()).unwrap();
    let short = a
        .create(NewTask::new().ttl(Duration::from_secs(1)))
        .unwrap();
    setup.clock.advance(Duration::from_secs(2));
    let ids = [
        mine.id.clone(),
        finished.id.clone(),
        theirs.id.clone(),
        short.id.clone(),
        TaskId::new(),
        also.id.clone(),
    ];
    let mut results = a.renew_leases_of(&ids);
    assert_eq!(results.len(), ids.len());
    for slot in [0, 5] {
        let result = std::mem::replace(
            &mut results[slot],
            Err(Error::NotFound {
                id: ids[slot].clone(),
            }),
        );
        let renewed = applied(result.unwrap());
        assert_eq!(
            renewed.lease_expires_at,
            Some(setup.clock.now() + setup.lease),
            "{}",
            ids[slot]
        );
        assert_eq!(a.get(&ids[slot]).unwrap(), Some(renewed));
    }
    assert!(
        matches!(results[1], Ok(Transition::AlreadyTerminal(_))),
        "{:?}",
        results[1]
    );
    assert!(
        matches!(results[2], Err(Error::NotOwner { .. })),
        "{:?}",
        results[2]
    );
    assert!(
        matches!(results[3], Err(Error::NotFound { .. })),
        "{:?}",
        results[3]
    );
    assert!(
        matches!(results[4], Err(Error::NotFound { .. })),
        "{:?}",
        results[4]
    );
    assert!(a.renew_leases_of(&[]).is_empty());
    // An id given twice is renewed twice, each an applied write of its
    // own: one revision each, the last one stored.
    let before = a.get(&mine.id).unwrap().unwrap();
    let twice = a.renew_leases_of(&[mine.id.clone(), mine.id.clone()]);
    let revisions: Vec<u64> = twice
        .into_iter()
        .map(|result| applied(result.unwrap()).revision)
        .collect();
    assert_eq!(
        revisions,
        [before.revision + 1, before.revision + 2],
        "two renewals, two revisions"
    );
    assert_eq!(
        a.get(&mine.id).unwrap().unwrap().revision,
        before.revision + 2
    );
}

/// A claim is the store's own write, which may take a task past the
/// payload cap by `OWN_HEADROOM` (a long instance id as its owner). The
/// new owner's writes that do not make it larger still land, and so does
/// its outcome; a running write that would make it larger is refused, so
/// the room left stays the store's (a reap of it still lands). (Every host
/// write was refused as too large: the task could only be reaped, deleted
/// or left to expire.)
pub(super) fn a_task_a_claim_took_past_the_cap_still_takes_its_owners_writes(
    a: &dyn TaskStore,
    _: &dyn TaskStore,
    reopen: Reopen<'_>,
    setup: &Setup,
) {
    let new = |blob: String| {
        NewTask::new()
            .resumable("k", json!({"n": 1}))
            .metadata("blob", blob)
    };
    let bare = a.create(new(String::new())).unwrap();
    let size = serde_json::to_vec(&bare).unwrap().len();
    assert!(a.delete(&bare.id).unwrap());
    let blob = "x".repeat(setup.max_payload_bytes - size - 16);
    let (first, second) = (
        a.create(new(blob.clone())).unwrap(),
        a.create(new(blob.clone())).unwrap(),
    );
    setup.clock.advance(setup.lease);
    let long = "c".repeat(200);
    let claimer = reopen(&long);
    let claimed = claimer.claim(&["k"]).unwrap();
    assert_eq!(claimed.tasks.len(), 2, "{:?}", claimed.missed);
    let taken = &claimed.tasks[0];
    let taken_size = serde_json::to_vec(taken).unwrap().len();
    assert!(
        taken_size > setup.max_payload_bytes,
        "{taken_size}: past the cap"
    );
    let fenced = || TaskUpdate::new().fenced(taken.epoch);
    let grown = fenced().status_message("x".repeat(64));
    assert!(
        matches!(
            claimer.update(&first.id, grown),
            Err(Error::PayloadTooLarge { .. })
        ),
        "a running write that makes it larger is refused"
    );
    let smaller = fenced()
        .metadata("blob", "x".repeat(blob.len() - 64))
        .checkpoint(json!({"n": 2}));
    let saved = applied(claimer.update(&first.id, smaller).unwrap());
    assert_eq!(
        saved.resume.as_ref().unwrap().checkpoint,
        Some(json!({"n": 2}))
    );
    let finished = claimer
        .finish_fenced(
            &second.id,
            Outcome::Completed(json!({"done": true})),
            taken.epoch,
        )
        .unwrap();
    assert_eq!(applied(finished).status, TaskStatus::Completed);
    // Left to lapse, the first is still reaped: its room was kept.
    setup.clock.advance(setup.lease * 2);
    let reaped = a.reap().unwrap();
    assert!(reaped.missed.is_empty(), "{:?}", reaped.missed);
    assert_eq!(reaped.tasks.len(), 1);
    assert_eq!(reaped.tasks[0].id, first.id);
}

/// Handles of one store with different payload caps (a deploy that lowers
/// it): a handle reads every task the store accepted, whatever cap let it
/// in, and its own changes to one (a renewal, a claim, a reap) are not
/// refused for the size another handle's cap allowed; the writes it makes
/// for its host are held to its own cap, as over a task a claim took past
/// it. (A handle with a smaller cap could renew, claim or reap no such
/// task, and on a file store not even read it: a dead server's work was
/// stuck until a handle with its cap came.)
pub(super) fn a_handle_with_a_smaller_cap_takes_over_a_larger_ones_tasks(
    a: &dyn TaskStore,
    with_cap: OpenWithCap<'_>,
    setup: &Setup,
) {
    let cap = crate::MIN_MAX_PAYLOAD_BYTES;
    assert!(
        setup.max_payload_bytes >= 8 * cap,
        "the suite's cap is larger"
    );
    let blob = "x".repeat(4 * cap);
    let resumable = |n: u64| {
        NewTask::new()
            .resumable("k", json!({"n": n}))
            .metadata("blob", blob.clone())
    };
    let plain = a
        .create(NewTask::new().metadata("blob", blob.clone()))
        .unwrap();
    let first = a.create(resumable(1)).unwrap();
    let second = a.create(resumable(2)).unwrap();
    let small = with_cap(cap, "instance-small");
    assert_eq!(
        small.get(&first.id).unwrap().as_ref(),
        Some(&first),
        "a task a larger cap let in reads back"
    );
    let page = small.list(&ListQuery::active()).unwrap();
    assert!(page.skipped.is_empty(), "{:?}", page.skipped);
    assert_eq!(page.tasks.len(), 3);
    // Held to the task's own size, past the handle's cap, and the error
    // names that limit (it named the handle's cap, which the write may
    // well pass).
    let had = serde_json::to_vec(&plain).unwrap().len();
    assert!(had > cap, "the task is past the small handle's cap");
    match small.update(&plain.id, TaskUpdate::new().status_message("grown")) {
        Err(Error::PayloadTooLarge { id, size, limit }) => {
            assert_eq!((id, limit), (plain.id.clone(), had));
            assert!(size > had, "{size} against {had}");
        }
        other => panic!("a host's write that makes it larger is refused, got {other:?}"),
    }
    setup.clock.advance(setup.lease);
    let reaped = small.reap().unwrap();
    assert!(reaped.missed.is_empty(), "{:?}", reaped.missed);
    let reaped: Vec<&TaskId> = reaped.tasks.iter().map(|t| &t.id).collect();
    assert_eq!(reaped, [&plain.id], "the plain orphan is reaped");
    let claimed = small.claim(&["k"]).unwrap();
    assert!(claimed.missed.is_empty(), "{:?}", claimed.missed);
    assert_eq!(claimed.tasks.len(), 2, "both resumable orphans are claimed");
    let epoch = claimed.tasks[0].epoch;
    setup.clock.advance(setup.lease / 2);
    let renewed = applied(small.renew_lease(&first.id).unwrap());
    assert_eq!(renewed.owner.as_deref(), Some("instance-small"));
    let done = small
        .finish_fenced(&first.id, Outcome::Completed(json!({"ok": true})), epoch)
        .unwrap();
    assert_eq!(applied(done).status, TaskStatus::Completed);
    // Left to lapse, the second is failed by the smaller handle's reap.
    setup.clock.advance(setup.lease * 3);
    let reaped = small.reap().unwrap();
    assert!(reaped.missed.is_empty(), "{:?}", reaped.missed);
    let reaped: Vec<&TaskId> = reaped.tasks.iter().map(|t| &t.id).collect();
    assert_eq!(
        reaped,
        [&second.id],
        "the claimed task left to lapse is reaped"
    );
    for id in [&plain.id, &first.id, &second.id] {
        let task = a.get(id).unwrap().unwrap();
        assert!(task.is_terminal(), "{id}: {task:?}");
        assert_eq!(task.metadata["blob"], json!(blob), "{id}: kept whole");
    }
}
