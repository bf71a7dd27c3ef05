//! Leases in one process on a manual clock: one reading of the clock per
//! create and renewal pass, lapsing exactly at expiry, what a renewal bumps,
//! who renews (only the owner, and its writes), terminal tasks holding none,
//! and task times in UTC whatever the clock's offset.

use super::*;

// ---------------------------------------------------------------------------
// One process, manual clock.

/// On a clock that moves between any two readings (the system's), a
/// create's lease runs from the time it stamps on the task, and a renewal
/// pass gives every task it renews one expiry: each takes one reading of
/// the clock for all it decides. (The lease was read from a second reading
/// of its own, a few microseconds later; the concurrent histories of
/// `linearizable` met it.)
#[test]
fn a_create_and_a_renewal_pass_each_go_by_one_reading_of_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let file = FileStore::builder(dir.path())
        .durability(Durability::Eventual)
        .lease(LEASE)
        .open()
        .unwrap();
    let memory = MemoryStore::builder().lease(LEASE).build().unwrap();
    for store in [&file as &dyn TaskStore, &memory] {
        let made: Vec<Task> = (0..20)
            .map(|_| store.create(NewTask::new()).unwrap())
            .collect();
        for task in &made {
            assert_eq!(
                task.lease_expires_at,
                Some(task.created_at + LEASE),
                "{}",
                task.id
            );
        }
        assert_eq!(store.renew_leases().unwrap(), made.len());
        let ids: Vec<TaskId> = made.iter().map(|t| t.id.clone()).collect();
        let expiries: BTreeSet<Option<OffsetDateTime>> = store
            .get_all(&ids)
            .into_iter()
            .map(|t| t.unwrap().unwrap().lease_expires_at)
            .collect();
        assert_eq!(expiries.len(), 1, "one expiry for the pass: {expiries:?}");
    }
}

/// A wall clock stepped back and set right again, over and over, carries
/// a handle's leases no further than the time that went by (a step forward
/// takes back what a step back added: added up alone, the steps back would
/// carry them a step further each time); and a wall clock that runs slow
/// by a little (a virtual machine's), falling behind the monotonic clock
/// by under 1 ms and 1% of the time between two readings, carries them
/// not at all: they run from what it reads, as they would ahead of it bit
/// by bit.
#[test]
fn a_clock_stepped_back_and_forth_or_running_slow_carries_leases_no_further_than_time_went() {
    let clock = ManualClock::new(T0);
    for (s, _dir) in backends(&clock) {
        clock.set(T0);
        let t = s.create(NewTask::new()).unwrap();
        let mut real = T0;
        for _ in 0..100 {
            clock.set(real - Duration::from_secs(600));
            clock.advance(Duration::from_secs(1));
            real += Duration::from_secs(1);
            let renewed = s.renew_lease(&t.id).unwrap().into_task();
            assert_eq!(renewed.lease_expires_at, Some(real + LEASE), "behind");
            clock.set(real);
            clock.advance(Duration::from_secs(1));
            real += Duration::from_secs(1);
            let renewed = s.renew_lease(&t.id).unwrap().into_task();
            assert_eq!(renewed.lease_expires_at, Some(real + LEASE), "set right");
        }
        // Slow by 0.05%: half a millisecond behind each second.
        for _ in 0..100 {
            clock.advance(Duration::from_secs(1));
            clock.set(taskstore::Clock::now(&clock) - Duration::from_micros(500));
            let renewed = s.renew_lease(&t.id).unwrap().into_task();
            assert_eq!(
                renewed.lease_expires_at,
                Some(taskstore::Clock::now(&clock) + LEASE),
                "slow"
            );
        }
    }
}

/// A thread held up between its readings of the wall clock and of the
/// monotonic clock (preempted on a busy machine) makes no step: the
/// monotonic clock is read on both sides of the wall clock, and time that
/// went by between the readings carries no lease. (Read once, after the
/// wall clock, a reading held up 5 ms looked like the wall clock falling
/// 5 ms behind, and the renewal's lease ran 5 ms past what its time says;
/// `linearizable` met it on a loaded machine.)
#[test]
fn a_thread_held_up_between_its_clock_readings_carries_no_lease() {
    /// A manual clock whose next monotonic reading after a wall reading,
    /// once armed, comes 5 ms later (both clocks moved on meanwhile).
    #[derive(Debug)]
    struct HeldUp {
        manual: ManualClock,
        read_wall: std::sync::atomic::AtomicBool,
        armed: std::sync::atomic::AtomicBool,
    }
    impl taskstore::Clock for HeldUp {
        fn now(&self) -> OffsetDateTime {
            self.read_wall
                .store(true, std::sync::atomic::Ordering::SeqCst);
            taskstore::Clock::now(&self.manual)
        }
        fn monotonic(&self) -> Option<Duration> {
            let after_wall = self
                .read_wall
                .swap(false, std::sync::atomic::Ordering::SeqCst);
            if after_wall && self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
                self.manual.advance(Duration::from_millis(5));
            }
            taskstore::Clock::monotonic(&self.manual)
        }
    }
    let clock = Arc::new(HeldUp {
        manual: ManualClock::new(T0),
        read_wall: false.into(),
        armed: false.into(),
    });
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::builder(dir.path())
        .clock(clock.clone())
        .lease(LEASE)
        .open()
        .unwrap();
    let task = store.create(NewTask::new()).unwrap();
    clock.manual.advance(Duration::from_millis(100));
    let at = taskstore::Clock::now(&clock.manual);
    clock.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    let renewed = store.renew_lease(&task.id).unwrap().into_task();
    assert!(
        !clock.armed.load(std::sync::atomic::Ordering::SeqCst),
        "held up"
    );
    assert_eq!(
        renewed.lease_expires_at,
        Some(at + LEASE),
        "a lease carried"
    );
}

/// A host's clock without a monotonic reading (`Clock::monotonic` left at
/// its default) keeps the rule of before: while it reads behind a
/// handle's time, the leases the handle writes run on by the clock's net
/// progress since its first reading behind, so a clock stepped back and
/// set right again before it caught up finds them live.
#[test]
fn a_clock_without_a_monotonic_reading_runs_leases_on_by_its_net_progress() {
    #[derive(Debug)]
    struct WallOnly(ManualClock);
    impl taskstore::Clock for WallOnly {
        fn now(&self) -> OffsetDateTime {
            taskstore::Clock::now(&self.0)
        }
    }
    let clock = ManualClock::new(T0);
    let dir = tempfile::tempdir().unwrap();
    let open = |instance: &str| {
        FileStore::builder(dir.path())
            .clock(Arc::new(WallOnly(clock.clone())))
            .instance_id(instance)
            .lease(LEASE)
            .open()
            .unwrap()
    };
    let (owner, peer) = (open("owner"), open("peer"));
    let task = owner.create(NewTask::new()).unwrap();
    clock.set(T0 - LEASE * 20);
    // Its first reading behind.
    assert_eq!(owner.now(), T0);
    let mut gone = Duration::ZERO;
    for _ in 0..9 {
        // The monotonic clock, going on alone, is not read.
        clock.advance_monotonic(LEASE);
        clock.advance(LEASE / 3);
        gone += LEASE / 3;
        let renewed = owner.renew_lease(&task.id).unwrap().into_task();
        assert_eq!(renewed.lease_expires_at, Some(T0 + gone + LEASE));
    }
    assert_eq!(owner.now(), T0, "the owner's time stood still");
    clock.set(T0 + LEASE * 3);
    assert_eq!(peer.reap_orphans().unwrap(), vec![], "live work reaped");
}

#[test]
fn lease_lapses_exactly_at_its_expiry() {
    let clock = ManualClock::new(T0);
    for (s, _dir) in backends(&clock) {
        clock.set(T0);
        let t = s.create(NewTask::new()).unwrap();
        assert_eq!(t.owner.as_deref(), Some("owner"));
        assert_eq!(t.lease_expires_at, Some(T0 + LEASE));

        clock.set(T0 + LEASE - time::Duration::nanoseconds(1));
        assert_eq!(
            s.reap_orphans().unwrap(),
            vec![],
            "reaped before the lease lapsed"
        );
        assert_eq!(s.get(&t.id).unwrap(), Some(t.clone()));

        clock.set(T0 + LEASE);
        let reaped = s.reap_orphans().unwrap();
        assert_eq!(
            reaped.len(),
            1,
            "not reaped at the instant its lease lapsed"
        );
        let r = &reaped[0];
        assert_eq!(r.id, t.id);
        assert_eq!(r.status, TaskStatus::Failed);
        assert_eq!(r.revision, t.revision + 1);
        assert_eq!(r.last_updated_at, T0 + LEASE);
        assert_eq!(r.lease_expires_at, None, "a terminal task holds no lease");
        assert_eq!(
            r.owner.as_deref(),
            Some("owner"),
            "the lost owner stays on record"
        );
        let error = r.error.as_ref().unwrap();
        assert_eq!(error["code"], "orphaned");
        assert_eq!(error["owner"], "owner");
        assert_eq!(error["reapedBy"], "owner");
        // The lease lapsed at a whole second: the error names it as the
        // task itself wrote it, fraction and all.
        assert_eq!(
            error["leaseExpiredAt"],
            serde_json::to_value(&t).unwrap()["leaseExpiresAt"],
            "the lapsed lease is not written as the task wrote it"
        );
        assert_eq!(error["leaseExpiredAt"], "2030-01-01T00:00:10.000000000Z");
        assert_eq!(s.get(&t.id).unwrap().as_ref(), Some(r));
        assert_eq!(s.reap_orphans().unwrap(), vec![], "reaped twice");
        assert_eq!(
            s.renew_lease(&t.id).unwrap(),
            Transition::AlreadyTerminal(r.clone()),
            "a reaped task cannot be renewed back to life"
        );
    }
}

#[test]
fn renewal_bumps_revision_but_not_last_updated_at() {
    let clock = ManualClock::new(T0);
    for (s, _dir) in backends(&clock) {
        clock.set(T0);
        let t = s.create(NewTask::new()).unwrap();
        clock.set(T0 + Duration::from_secs(4));
        let Transition::Applied(r) = s.renew_lease(&t.id).unwrap() else {
            panic!("renewal not applied")
        };
        assert_eq!(r.revision, t.revision + 1);
        assert_eq!(
            r.last_updated_at, t.last_updated_at,
            "a client sees no change"
        );
        assert_eq!(
            r.lease_expires_at,
            Some(T0 + Duration::from_secs(4) + LEASE)
        );
        assert_eq!(s.get(&t.id).unwrap(), Some(r.clone()));

        // The old lapse time passes harmlessly; the new one counts.
        clock.set(T0 + LEASE);
        assert_eq!(s.reap_orphans().unwrap(), vec![]);
        clock.set(T0 + Duration::from_secs(4) + LEASE);
        assert_eq!(s.reap_orphans().unwrap().len(), 1);
    }
}

#[test]
fn renew_leases_renews_every_running_task_of_this_instance() {
    let clock = ManualClock::new(T0);
    for (s, _dir) in backends(&clock) {
        clock.set(T0);
        let a = s.create(NewTask::new()).unwrap();
        let b = s.create(NewTask::new()).unwrap();
        let done = s.create(NewTask::new()).unwrap();
        let done = s.complete(&done.id, json!(1)).unwrap().into_task();
        let _ = s
            .update(&b.id, TaskUpdate::new().status(TaskStatus::InputRequired))
            .unwrap();
        clock.set(T0 + Duration::from_secs(9));
        assert_eq!(s.renew_leases().unwrap(), 2);
        clock.set(T0 + Duration::from_secs(15));
        assert_eq!(
            s.reap_orphans().unwrap(),
            vec![],
            "renewed tasks were reaped"
        );
        assert_eq!(
            s.get(&done.id).unwrap(),
            Some(done.clone()),
            "a terminal task was touched"
        );
        for id in [&a.id, &b.id] {
            let t = s.get(id).unwrap().unwrap();
            assert_eq!(
                t.lease_expires_at,
                Some(T0 + Duration::from_secs(9) + LEASE)
            );
        }
    }
}

#[test]
fn terminal_tasks_hold_no_lease() {
    let clock = ManualClock::new(T0);
    for (s, _dir) in backends(&clock) {
        clock.set(T0);
        let finished = [
            s.create(NewTask::new()).unwrap(),
            s.create(NewTask::new()).unwrap(),
            s.create(NewTask::new()).unwrap(),
        ];
        let finished = [
            s.complete(&finished[0].id, json!("r")).unwrap(),
            s.fail(&finished[1].id, json!("e")).unwrap(),
            s.cancel(&finished[2].id, None).unwrap(),
        ]
        .map(Transition::into_task);
        clock.set(T0 + LEASE * 100);
        assert_eq!(s.reap_orphans().unwrap(), vec![]);
        for t in &finished {
            assert_eq!(t.lease_expires_at, None);
            assert_eq!(
                s.renew_lease(&t.id).unwrap(),
                Transition::AlreadyTerminal(t.clone())
            );
            assert_eq!(s.get(&t.id).unwrap().as_ref(), Some(t));
        }
        assert_eq!(s.renew_leases().unwrap(), 0);
    }
}

#[test]
fn only_the_owner_renews() {
    let clock = ManualClock::new(T0);
    let (_dir, a, b) = two_instances(&clock);
    let t = a.create(NewTask::new()).unwrap();
    clock.set(T0 + Duration::from_secs(3));
    match b.renew_lease(&t.id) {
        Err(Error::NotOwner { id, owner }) => {
            assert_eq!(id, t.id);
            assert_eq!(owner.as_deref(), Some("a"));
        }
        other => panic!("renewal by a non-owner: {other:?}"),
    }
    assert_eq!(b.renew_leases().unwrap(), 0, "b owns nothing");
    assert_eq!(
        a.get(&t.id).unwrap(),
        Some(t.clone()),
        "a refused renewal changed the task"
    );
    let missing = TaskId::parse("missing").unwrap();
    assert!(matches!(
        b.renew_lease(&missing),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        a.renew_lease(&missing),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn writes_by_the_owner_renew_its_lease_and_others_do_not() {
    let clock = ManualClock::new(T0);
    let (_dir, a, b) = two_instances(&clock);
    let t = a.create(NewTask::new()).unwrap();
    clock.set(T0 + Duration::from_secs(3));
    let by_b = b
        .update(&t.id, TaskUpdate::new().status_message("from b"))
        .unwrap()
        .into_task();
    assert_eq!(by_b.owner.as_deref(), Some("a"));
    assert_eq!(by_b.lease_expires_at, t.lease_expires_at);
    clock.set(T0 + Duration::from_secs(6));
    let by_a = a
        .update(&t.id, TaskUpdate::new().status_message("from a"))
        .unwrap()
        .into_task();
    assert_eq!(
        by_a.lease_expires_at,
        Some(T0 + Duration::from_secs(6) + LEASE)
    );
    // b reaps nothing while a's lease holds, and a's task once it lapses.
    clock.set(T0 + Duration::from_secs(6) + LEASE - time::Duration::nanoseconds(1));
    assert_eq!(b.reap_orphans().unwrap(), vec![]);
    clock.set(T0 + Duration::from_secs(6) + LEASE);
    let reaped = b.reap_orphans().unwrap();
    assert_eq!(reaped.len(), 1);
    assert_eq!(reaped[0].error.as_ref().unwrap()["owner"], "a");
    assert_eq!(reaped[0].error.as_ref().unwrap()["reapedBy"], "b");
    assert_eq!(a.get(&t.id).unwrap().as_ref(), Some(&reaped[0]));
}

/// A host's clock that reads in another offset than UTC.
#[derive(Debug)]
struct TwoHoursEast(ManualClock);

impl taskstore::Clock for TwoHoursEast {
    fn now(&self) -> OffsetDateTime {
        self.0.now().to_offset(time::macros::offset!(+2))
    }
}

/// A task's times are in UTC (the wire form's `Z`) whatever offset the
/// host's clock reads in. (They came out in the clock's, `+02:00`.)
#[test]
fn a_tasks_times_are_in_utc_whatever_the_clocks_offset() {
    let store = MemoryStore::builder()
        .clock(Arc::new(TwoHoursEast(ManualClock::new(T0))))
        .lease(LEASE)
        .build()
        .unwrap();
    let task = store.create(NewTask::new()).unwrap();
    let wire = serde_json::to_value(&task).unwrap();
    for field in ["createdAt", "lastUpdatedAt", "leaseExpiresAt"] {
        let at = wire[field].as_str().unwrap();
        assert!(at.ends_with('Z'), "{field}: {at}");
    }
    assert_eq!(task.created_at, T0);
    assert_eq!(store.now().offset(), time::UtcOffset::UTC);
    // A clock at the last instant of year 9999 in an offset west of UTC
    // reads past what UTC can hold: the store takes the last instant UTC
    // holds, a time it can write and read back (kept as it was, it made
    // tasks whose listing cursor the store then refused as out of the
    // range of dates, and `ManualClock` panicked on it).
    let west = time::macros::datetime!(9999-12-31 23:59:59.999_999_999 -01:00);
    let utc_end = time::PrimitiveDateTime::MAX.assume_utc();
    #[derive(Debug)]
    struct West;
    impl taskstore::Clock for West {
        fn now(&self) -> OffsetDateTime {
            time::macros::datetime!(9999-12-31 23:59:59.999_999_999 -01:00)
        }
    }
    let memory = MemoryStore::builder()
        .clock(Arc::new(West))
        .build()
        .unwrap();
    assert_eq!(memory.now(), utc_end);
    let dir = tempfile::tempdir().unwrap();
    let file = FileStore::builder(dir.path())
        .clock(Arc::new(West))
        .open()
        .unwrap();
    for store in [&memory as &dyn TaskStore, &file] {
        let mut made: Vec<TaskId> = (0..2)
            .map(|_| store.create(NewTask::new()).unwrap().id)
            .collect();
        made.sort();
        let first = store.list(&ListQuery::all().limit(1)).unwrap();
        let cursor = first.next_cursor.expect("a second page");
        let second = store
            .list(&ListQuery::all().limit(1).after(&cursor))
            .unwrap_or_else(|e| panic!("the cursor it handed out: {e}"));
        let mut listed: Vec<TaskId> = first
            .tasks
            .iter()
            .chain(&second.tasks)
            .map(|t| t.id.clone())
            .collect();
        listed.sort();
        assert_eq!(listed, made);
        assert_eq!(store.get(&made[0]).unwrap().unwrap().created_at, utc_end);
    }
    assert_eq!(taskstore::Clock::now(&ManualClock::new(west)), utc_end);
    let clock = ManualClock::new(T0);
    clock.set(west);
    assert_eq!(taskstore::Clock::now(&clock), utc_end);
}
