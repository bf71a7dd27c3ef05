//! Checks of leases and expiry across handles when a clock steps: a task
//! seen expired stays gone, and no step makes a handle reap or claim a
//! live lease.

use super::*;

/// What a clock-step scenario starts from: the time, the owner's two live
/// tasks, `plain` and `resumable` (of kind `k`), and another handle opened
/// after them.
struct Live {
    start: time::OffsetDateTime,
    plain: Task,
    resumable: Task,
    other: Box<dyn TaskStore>,
}

impl Live {
    /// `owner`'s two tasks made now, and a handle of instance `other`.
    fn made(owner: &dyn TaskStore, reopen: Reopen<'_>, other: &str, setup: &Setup) -> Live {
        let start = setup.clock.now();
        let plain = owner.create(NewTask::new()).unwrap();
        let resumable = owner
            .create(NewTask::new().resumable("k", json!(1)))
            .unwrap();
        Live {
            start,
            plain,
            resumable,
            other: reopen(other),
        }
    }
    /// The other handle neither reaps nor claims `owner`'s live tasks,
    /// whichever way it asks: both stay working, `owner`'s.
    fn left_alone(&self, owner: &dyn TaskStore) {
        let other = self.other.as_ref();
        let reaped = other.reap().unwrap();
        assert!(reaped.tasks.is_empty(), "live work reaped: {reaped:?}");
        assert_eq!(
            other.reap_task(&self.plain.id).unwrap(),
            None,
            "live work reaped"
        );
        let claimed = other.claim(&["k"]).unwrap();
        assert!(claimed.tasks.is_empty(), "live work claimed: {claimed:?}");
        for task in [&self.plain, &self.resumable] {
            let stored = owner.get(&task.id).unwrap().unwrap();
            assert_eq!(
                (stored.status, stored.owner.as_deref()),
                (TaskStatus::Working, Some(owner.instance_id())),
                "{}",
                task.id
            );
        }
    }

    /// Once their leases lapsed, the other handle claims `resumable` and
    /// reaps `plain`, and no other task.
    fn taken(&self) {
        let other = self.other.as_ref();
        let claimed = other.claim(&["k"]).unwrap();
        let claimed: Vec<&TaskId> = claimed.tasks.iter().map(|t| &t.id).collect();
        assert_eq!(claimed, [&self.resumable.id]);
        let reaped = other.reap().unwrap();
        let reaped: Vec<&TaskId> = reaped.tasks.iter().map(|t| &t.id).collect();
        assert_eq!(reaped, [&self.plain.id]);
    }
}

/// Every call that meets a task expired deletes it (as `get` does), so that
/// no handle sees it again when a clock is stepped back: the handle that
/// met it keeps its time, but another, or one opened later, does not.
pub(super) fn a_task_seen_expired_stays_gone_for_every_handle(
    a: &dyn TaskStore,
    _: &dyn TaskStore,
    reopen: Reopen<'_>,
    setup: &Setup,
) {
    type Meets = fn(&dyn TaskStore, &Task);
    let cases: [(&str, Meets); 7] = [
        ("list", |s, _| {
            assert!(s.list(&ListQuery::all()).unwrap().tasks.is_empty());
        }),
        ("list active", |s, _| {
            assert!(s.list(&ListQuery::active()).unwrap().tasks.is_empty());
        }),
        ("renew_lease", |s, t| {
            assert!(matches!(s.renew_lease(&t.id), Err(Error::NotFound { .. })));
        }),
        ("release", |s, t| {
            assert!(matches!(
                s.release(&t.id, t.epoch),
                Err(Error::NotFound { .. })
            ));
        }),
        ("reap", |s, _| assert!(s.reap().unwrap().tasks.is_empty())),
        ("claim", |s, _| {
            assert!(s.claim(&["k"]).unwrap().tasks.is_empty())
        }),
        ("renew_leases", |s, _| {
            assert_eq!(s.renew_leases().unwrap(), 0)
        }),
    ];
    let _ = a;
    for (call, meets) in cases {
        let start = setup.clock.now();
        // A handle of its own for each case: its time is its own.
        let seer = reopen(a.instance_id());
        let task = seer
            .create(
                NewTask::new()
                    .ttl(Duration::from_secs(10))
                    .resumable("k", json!(1)),
            )
            .unwrap();
        // Past its expiry, and its lease (the passes skip a live one).
        setup.clock.advance(setup.lease + Duration::from_secs(10));
        meets(&*seer, &task);
        // The clock stepped back, before the expiry.
        setup.clock.set(start);
        let other = reopen("another-instance");
        assert_eq!(
            other.get(&task.id).unwrap(),
            None,
            "{call}: a task one handle saw expired is gone for every handle"
        );
        // Time moves on past the step for the next case.
        setup
            .clock
            .set(start + setup.lease + Duration::from_secs(10));
    }
}

/// A clock stepped back, then set right again before it caught up (a
/// manual change undone): the owner's time stands still meanwhile (it
/// never goes back), but the leases it renews run on by the clock's
/// progress since it first read behind, so once the clock is set right no
/// handle reaps or claims its live tasks; once their leases lapse by the
/// clock, they are. (Renewed from its standing time, the leases stood
/// still too: after more than a lease behind, live work was reaped and
/// claimed at once.)
pub(super) fn a_clock_set_back_then_right_again_reaps_and_claims_no_live_lease(
    owner: &dyn TaskStore,
    _: &dyn TaskStore,
    reopen: Reopen<'_>,
    setup: &Setup,
) {
    let live = Live::made(owner, reopen, "peer", setup);
    let start = live.start;
    setup.clock.set(start - setup.lease * 20);
    // Three leases go by with the clock behind, the owner renewing every
    // third of one.
    renew_every_third(owner, setup, 9);
    assert_eq!(owner.now(), start, "the owner's time stood still");
    let right = start + setup.lease * 3;
    setup.clock.set(right);

    live.left_alone(owner);

    // Their leases lapse by the clock, a lease after the last renewal:
    // claimed and reaped as ever.
    setup.clock.set(right + setup.lease);
    live.taken();
}

/// `owners`'s two live tasks renewed `times` times, a third of a lease
/// going by before each renewal.
fn renew_every_third(owner: &dyn TaskStore, setup: &Setup, times: u32) {
    for _ in 0..times {
        setup.clock.advance(setup.lease / 3);
        assert_eq!(owner.renew_leases().unwrap(), 2, "renewed");
    }
}

/// A clock stepped back while its owner read nothing (between two
/// renewals), then set right before it caught up: the owner's next
/// renewal, its first reading behind, runs its leases on by all the time
/// that went by since its last reading (by the monotonic clock), so once
/// the clock is set right no handle reaps or claims its live tasks.
/// (The leases ran on from the first reading behind: the time between the
/// owner's last reading and it was lost, and work renewed half a lease
/// before the clock was set right was reaped and claimed.)
pub(super) fn a_clock_stepped_back_between_two_renewals_reaps_and_claims_no_live_lease(
    owner: &dyn TaskStore,
    _: &dyn TaskStore,
    reopen: Reopen<'_>,
    setup: &Setup,
) {
    let live = Live::made(owner, reopen, "peer", setup);
    let start = live.start;
    // Two thirds of a lease go by before the owner renews, the clock
    // stepped back twenty leases meanwhile.
    setup.clock.advance(setup.lease * 2 / 3);
    setup.clock.set(start - setup.lease * 20);
    assert_eq!(owner.renew_leases().unwrap(), 2, "renewed");
    let renewed = start + setup.lease * 2 / 3;
    // Half a lease later, the clock is set right.
    setup.clock.advance(setup.lease / 2);
    setup.clock.set(renewed + setup.lease / 2);

    live.left_alone(owner);

    // Their leases lapse a lease after the renewal: claimed and reaped.
    setup.clock.set(renewed + setup.lease);
    live.taken();
}

/// A clock stepped back, and set right only after it caught up with the
/// owner's time (which stood still meanwhile): the leases the owner
/// renews run on by the monotonic clock while the clock reads behind the
/// time that went by, not only behind the owner's time, so once the clock
/// is set right no handle reaps or claims its live tasks. (Renewed from
/// the clock once it caught up, the leases fell behind by the step, and
/// live work was reaped and claimed when the clock was set right.)
pub(super) fn a_clock_set_right_only_after_it_caught_up_reaps_and_claims_no_live_lease(
    owner: &dyn TaskStore,
    _: &dyn TaskStore,
    reopen: Reopen<'_>,
    setup: &Setup,
) {
    let live = Live::made(owner, reopen, "peer", setup);
    let start = live.start;
    setup.clock.set(start - setup.lease * 2);
    // Four leases go by, the owner renewing every third of one: the clock
    // catches up with its time after two.
    renew_every_third(owner, setup, 12);
    assert_eq!(setup.clock.now(), start + setup.lease * 2, "caught up");
    let right = start + setup.lease * 4;
    setup.clock.set(right);

    live.left_alone(owner);

    setup.clock.set(right + setup.lease);
    live.taken();
}

/// A clock stepped back, then back again further, then set right: the
/// leases the owner renews run on by the monotonic clock through both
/// steps, so once the clock is set right no handle reaps or claims its
/// live tasks. (They ran on by the clock's net progress since its first
/// reading behind, which the second step took below the owner's time:
/// they stood at it until the clock was set right, and live work was
/// reaped and claimed then.)
pub(super) fn a_clock_stepped_back_twice_reaps_and_claims_no_live_lease(
    owner: &dyn TaskStore,
    _: &dyn TaskStore,
    reopen: Reopen<'_>,
    setup: &Setup,
) {
    let live = Live::made(owner, reopen, "peer", setup);
    let start = live.start;
    setup.clock.set(start - setup.lease * 20);
    renew_every_third(owner, setup, 3);
    setup.clock.set(setup.clock.now() - setup.lease * 20);
    renew_every_third(owner, setup, 6);
    let right = start + setup.lease * 3;
    setup.clock.set(right);

    live.left_alone(owner);

    setup.clock.set(right + setup.lease);
    live.taken();
}

/// A clock stepped forward, then set right again (NTP, a manual change):
/// a handle that read the step keeps its time (it never goes back), but
/// judges other owners' leases by what the clock reads, so the live tasks
/// of an owner whose handle never read the step, renewed from the right
/// time, are neither reaped nor claimed by it; once their leases lapse by
/// the clock, they are. A task it releases lapses by the clock too: an
/// orphan at once for every handle.
pub(super) fn a_clock_set_right_after_a_step_forward_reaps_and_claims_no_live_lease(
    owner: &dyn TaskStore,
    _: &dyn TaskStore,
    reopen: Reopen<'_>,
    setup: &Setup,
) {
    let live = Live::made(owner, reopen, "seer", setup);
    let (start, seer) = (live.start, live.other.as_ref());
    let step = setup.lease * 20;
    setup.clock.set(start + step);
    let ahead = seer.now();
    assert_eq!(ahead, start + step, "the seer read the step");
    setup.clock.set(start + Duration::from_secs(1));
    assert_eq!(
        owner.renew_leases().unwrap(),
        2,
        "renewed from the right time"
    );
    assert_eq!(seer.now(), ahead, "the seer's time never goes back");

    live.left_alone(owner);

    // Their leases lapse by the clock: claimed and reaped as ever.
    setup
        .clock
        .set(start + Duration::from_secs(2) + setup.lease);
    live.taken();

    // A task the seer releases, its time still ahead, lapses by the clock:
    // an orphan at once for every handle, the seer's own claims included.
    // (It lapsed at the seer's time: an orphan to no one for the step.)
    let seer_now = seer.now();
    assert!(seer_now > setup.clock.now(), "the seer is still ahead");
    let mine = seer
        .create(NewTask::new().resumable("k", json!(2)))
        .unwrap();
    let released = applied(seer.release(&mine.id, mine.epoch).unwrap());
    assert_eq!(released.lease_expires_at, Some(setup.clock.now()));
    let claimed = seer.claim(&["k"]).unwrap();
    let claimed: Vec<&TaskId> = claimed.tasks.iter().map(|t| &t.id).collect();
    assert_eq!(
        claimed,
        [&mine.id],
        "claimed back by the handle that released it"
    );
    let again = seer
        .create(NewTask::new().resumable("k", json!(3)))
        .unwrap();
    applied(seer.release(&again.id, again.epoch).unwrap());
    let claimed = owner.claim(&["k"]).unwrap();
    let claimed: Vec<&TaskId> = claimed.tasks.iter().map(|t| &t.id).collect();
    assert_eq!(claimed, [&again.id], "claimed by another instance at once");
}
