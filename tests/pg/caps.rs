//! The cap on active tasks across handles, and its counter: put out or deleted
//! by a hand edit and counted again, untouched by a sweep that finds it right,
//! freed by reaps and not by sweeps of finished tasks.

use super::*;

#[test]
fn the_active_cap_holds_exactly_across_handles() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("cap");
    let cap = 25;
    let handles: Vec<PgStore> = (0..4)
        .map(|i| {
            PgStore::builder(cluster.conninfo())
                .schema(&schema)
                .instance_id(format!("cap-{i}"))
                .max_active(cap)
                .open()
                .unwrap()
        })
        .collect();
    // 4 handles × 4 threads × 10 creates race for 25 places.
    let created: usize = std::thread::scope(|s| {
        let workers: Vec<_> = handles
            .iter()
            .flat_map(|h| (0..4).map(move |_| h))
            .map(|h| {
                s.spawn(move || {
                    (0..10)
                        .filter(|_| match h.create(NewTask::new()) {
                            Ok(_) => true,
                            Err(Error::TooManyActive { limit, .. }) => {
                                assert_eq!(limit, cap);
                                false
                            }
                            Err(e) => panic!("create: {e}"),
                        })
                        .count()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    assert_eq!(created, cap, "exactly the cap, never more");
    let mut client = cluster.client();
    assert_eq!(counter_and_active(&mut client, &schema), (25, 25));
    // Finishing one frees one place, for any handle.
    let one = handles[0].list(&ListQuery::active()).unwrap().tasks[0].clone();
    assert!(handles[1].complete(&one.id, json!(1)).unwrap().is_applied());
    assert_eq!(counter_and_active(&mut client, &schema), (24, 24));
    handles[2].create(NewTask::new()).unwrap();
    assert!(matches!(
        handles[3].create(NewTask::new()),
        Err(Error::TooManyActive { .. })
    ));
    // Deleting a running task frees its place; deleting a finished one does not count.
    let two = handles[0].list(&ListQuery::active()).unwrap().tasks[0].clone();
    assert!(handles[3].delete(&two.id).unwrap());
    assert!(handles[3].delete(&one.id).unwrap());
    assert_eq!(counter_and_active(&mut client, &schema), (24, 24));
}

/// The active-task counter put out by a change made outside the store (an
/// operator deleting stuck rows, a table restored from a dump) is counted
/// again by every sweep (an open changes nothing: a dry run of the command
/// opens a store, and a role that may only read can open one). (Nothing
/// counted it again: too high, every create was refused in a store that
/// held no task; too low, every terminal transition of a running task
/// failed the table's check, for good.)
#[test]
fn a_counter_put_out_by_a_hand_edit_is_counted_again() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("recount");
    let s = PgStore::builder(cluster.conninfo())
        .schema(&schema)
        .max_active(3)
        .open()
        .unwrap();
    let mut client = cluster.client();
    // Too high: three running tasks deleted behind the store's back.
    for _ in 0..3 {
        s.create(NewTask::new()).unwrap();
    }
    client
        .execute(&format!("DELETE FROM {schema}.tasks"), &[])
        .unwrap();
    assert_eq!(counter_and_active(&mut client, &schema), (3, 0));
    s.sweep().unwrap();
    assert_eq!(counter_and_active(&mut client, &schema), (0, 0));
    let task = s.create(NewTask::new()).unwrap();
    // Too low: the counter set to 0 beside a running task (a restore).
    client
        .execute(&format!("UPDATE {schema}.counters SET active = 0"), &[])
        .unwrap();
    let reopened = PgStore::builder(cluster.conninfo())
        .schema(&schema)
        .max_active(3)
        .open()
        .unwrap();
    assert_eq!(
        counter_and_active(&mut client, &schema),
        (0, 1),
        "an open writes nothing"
    );
    assert_eq!(reopened.sweep().unwrap().cleaned, 1, "the count corrected");
    assert_eq!(counter_and_active(&mut client, &schema), (1, 1));
    assert!(reopened.complete(&task.id, json!(1)).unwrap().is_applied());
    assert_eq!(counter_and_active(&mut client, &schema), (0, 0));
}

/// A sweep whose counter is right (the rule: only the store wrote the
/// tables) takes no lock on the counter's row: a session holding it (a
/// writer mid-create, or frozen there) holds no sweep up, and the sweep
/// still removes what expired. (Every sweep counted again in a transaction
/// of its own that took the row lock: it waited for any writer holding
/// it, a frozen one for the idle-in-transaction timeout, and its commit
/// waited for a WAL flush: `BENCHMARKS.md`, "Sweeps and reaps".)
#[test]
fn a_sweep_takes_no_lock_on_a_counter_that_is_right() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("sweep_counter");
    let clock = ManualClock::new(time::OffsetDateTime::now_utc());
    let application = "sweep_counter";
    let conninfo = format!("{} application_name={application}", cluster.conninfo());
    let store = Arc::new(
        on_clock(&conninfo, &schema, "sweeper", &clock)
            .open()
            .unwrap(),
    );
    let ttl = Duration::from_secs(60);
    let finished = store.create(NewTask::new().ttl(ttl)).unwrap();
    assert!(store.complete(&finished.id, json!(1)).unwrap().is_applied());
    let running = store.create(NewTask::new()).unwrap();
    clock.advance(ttl);
    let (mut holder, holder_pid) = holding(
        cluster,
        &format!("SELECT active FROM {schema}.counters FOR UPDATE"),
    );
    let sweeping = std::thread::spawn({
        let store = Arc::clone(&store);
        move || store.sweep()
    });
    let mut client = cluster.client();
    let mut blocked = false;
    wait_until("the sweep to return or to wait for the counter", || {
        blocked = blocked_by(&mut client, application, holder_pid) > 0;
        blocked || sweeping.is_finished()
    });
    // Let go either way: a failing run ends here too, not in a hang.
    holder.batch_execute("ROLLBACK").unwrap();
    let swept = sweeping.join().unwrap();
    assert!(!blocked, "the sweep waited for the counter's row lock");
    let swept = swept.unwrap_or_else(|e| panic!("sweep with the counter held: {e}"));
    assert_eq!((swept.deleted, swept.cleaned), (1, 0), "{swept:?}");
    assert_eq!(store.get(&finished.id).unwrap(), None);
    assert_eq!(store.get(&running.id).unwrap(), Some(running));
    assert_eq!(counter_and_active(&mut client, &schema), (1, 1));
}

/// A sweep whose check of the counter fails (the counter put out by a
/// hand edit, its row held by another session past the connection's
/// `lock_timeout`) still deletes what expired, and says so: the count
/// with the check's failure beside it (`Swept::errors`), not the failure
/// alone; `sweep_expired`, a count alone, fails with it. The next sweep,
/// the row let go, counts again. (The sweep
/// returned the check's error, and the count of the tasks it had deleted
/// was lost.)
#[test]
fn a_sweep_whose_counter_check_fails_reports_what_it_deleted() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("sweep_check");
    let clock = ManualClock::new(time::OffsetDateTime::now_utc());
    let conninfo = format!("{} options='-c lock_timeout=200ms'", cluster.conninfo());
    let store = on_clock(&conninfo, &schema, "sweeper", &clock)
        .open()
        .unwrap();
    let ttl = Duration::from_secs(60);
    let finished = common::finished_with_ttl(&store, 3, ttl);
    let running = store.create(NewTask::new()).unwrap();
    clock.advance(ttl * 2);
    let mut client = cluster.client();
    client
        .execute(
            &format!("UPDATE {schema}.counters SET active = active + 1"),
            &[],
        )
        .unwrap();
    let (mut holder, _) = holding(
        cluster,
        &format!("SELECT active FROM {schema}.counters FOR UPDATE"),
    );
    let swept = store.sweep();
    holder.batch_execute("ROLLBACK").unwrap();
    let swept = swept.unwrap_or_else(|e| panic!("a sweep that deleted 3 tasks failed: {e}"));
    assert_eq!((swept.deleted, swept.cleaned), (3, 0), "{swept:?}");
    let [error] = swept.errors.as_slice() else {
        panic!("one error, the check's: {:?}", swept.errors);
    };
    let said = error.to_string();
    assert!(
        said.contains("count the active tasks") && said.contains("lock timeout"),
        "{said}"
    );
    for id in &finished {
        assert_eq!(store.get(id).unwrap(), None);
    }
    // A count alone cannot carry the failure: `sweep_expired` fails with
    // it, its deletions made all the same.
    let more = common::finished_with_ttl(&store, 1, ttl);
    clock.advance(ttl * 2);
    let (mut holder, _) = holding(
        cluster,
        &format!("SELECT active FROM {schema}.counters FOR UPDATE"),
    );
    let counted = store.sweep_expired();
    holder.batch_execute("ROLLBACK").unwrap();
    let e = counted.expect_err("a count beside a failed check");
    assert!(e.to_string().contains("lock timeout"), "{e}");
    assert_eq!(store.get(&more[0]).unwrap(), None);
    let again = store.sweep().unwrap();
    assert_eq!((again.deleted, again.cleaned), (0, 1), "{again:?}");
    assert!(again.errors.is_empty(), "{:?}", again.errors);
    assert_eq!(counter_and_active(&mut client, &schema), (1, 1));
    assert_eq!(store.get(&running.id).unwrap(), Some(running));
}

/// The counter's row itself deleted by hand is made again by the next
/// sweep, with the count of the running tasks, and nothing else fails
/// meanwhile. (Every sweep failed, "query returned an unexpected number of
/// rows", and the counter was never made again.)
#[test]
fn a_counter_row_deleted_by_hand_is_made_again_by_the_next_sweep() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("recount_row");
    let s = PgStore::builder(cluster.conninfo())
        .schema(&schema)
        .max_active(3)
        .open()
        .unwrap();
    let mut client = cluster.client();
    let tasks: Vec<Task> = (0..2).map(|_| s.create(NewTask::new()).unwrap()).collect();
    client
        .execute(&format!("DELETE FROM {schema}.counters"), &[])
        .unwrap();
    assert!(
        s.update(&tasks[1].id, TaskUpdate::new().metadata("k", 1))
            .unwrap()
            .is_applied()
    );
    assert_eq!(s.sweep().unwrap().cleaned, 1, "the counter made again");
    assert_eq!(counter_and_active(&mut client, &schema), (2, 2));
    s.create(NewTask::new()).unwrap();
    assert!(matches!(
        s.create(NewTask::new()),
        Err(Error::TooManyActive { .. })
    ));
    assert!(s.complete(&tasks[0].id, json!(1)).unwrap().is_applied());
    assert_eq!(counter_and_active(&mut client, &schema), (2, 2));
    assert_eq!(s.sweep().unwrap().cleaned, 0, "nothing to correct");
}

/// A create that finds the counter's row deleted by hand makes it again at
/// once, with the count of the running tasks (the sweep's recount), and is
/// decided on it: created under the cap, refused over it. (Every create
/// was refused as `TooManyActive` until the next sweep made the row again.)
#[test]
fn a_create_that_finds_the_counter_row_deleted_by_hand_makes_it_again() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("recount_create");
    let s = PgStore::builder(cluster.conninfo())
        .schema(&schema)
        .max_active(3)
        .open()
        .unwrap();
    let mut client = cluster.client();
    for _ in 0..2 {
        s.create(NewTask::new()).unwrap();
    }
    client
        .execute(&format!("DELETE FROM {schema}.counters"), &[])
        .unwrap();
    let logged = common::Logged::default();
    let third = tracing::subscriber::with_default(logged.clone(), || s.create(NewTask::new()));
    third.unwrap_or_else(|e| panic!("a create with the counter's row gone: {e}"));
    assert_eq!(counter_and_active(&mut client, &schema), (3, 3));
    assert_eq!(logged.warnings().len(), 1, "{:?}", logged.warnings());
    assert!(matches!(
        s.create(NewTask::new()),
        Err(Error::TooManyActive { .. })
    ));
    // Gone again with the store full: the count says so, and the create
    // is refused.
    client
        .execute(&format!("DELETE FROM {schema}.counters"), &[])
        .unwrap();
    assert!(matches!(
        s.create(NewTask::new()),
        Err(Error::TooManyActive { .. })
    ));
    assert_eq!(counter_and_active(&mut client, &schema), (3, 3));
    assert_eq!(s.sweep().unwrap().cleaned, 0, "nothing left to correct");
}

/// A sweep's batch removal lowers the active-task counter only by the
/// running tasks it removes: finished tasks held no place. (Lowered by
/// every row removed, a batch of one running and two finished tasks took
/// three places off the counter, which fell below the running tasks, and
/// the cap let more running tasks in than it allows.)
#[test]
fn a_sweep_of_finished_tasks_frees_no_place_under_the_cap() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("sweep_cap");
    let clock = ManualClock::new(time::OffsetDateTime::now_utc());
    let s = on_clock(&cluster.conninfo(), &schema, "sweeper", &clock)
        .max_active(4)
        .open()
        .unwrap();
    // Two finished tasks and one running task that will expire, and three
    // running tasks that will not: four places taken.
    for _ in 0..2 {
        let task = s
            .create(NewTask::new().ttl(Duration::from_secs(1)))
            .unwrap();
        assert!(s.complete(&task.id, json!("done")).unwrap().is_applied());
    }
    s.create(NewTask::new().ttl(Duration::from_secs(1)))
        .unwrap();
    for _ in 0..3 {
        s.create(NewTask::new()).unwrap();
    }
    let mut client = cluster.client();
    assert_eq!(counter_and_active(&mut client, &schema), (4, 4));
    clock.advance(Duration::from_secs(2));
    // Three expired tasks: one statement removes them.
    assert_eq!(s.sweep_expired().unwrap(), 3);
    assert_eq!(
        counter_and_active(&mut client, &schema),
        (3, 3),
        "only the running task swept frees a place"
    );
    s.create(NewTask::new()).unwrap();
    assert!(
        matches!(s.create(NewTask::new()), Err(Error::TooManyActive { .. })),
        "four running tasks hold the four places"
    );
}

/// A reap's batch write lowers the active-task counter by every orphan it
/// fails: their places are free again. (With the change in active tasks
/// taken the wrong way round, reaping two orphans raised the counter by
/// two, and the cap refused creates with no task running.)
#[test]
fn a_reap_of_several_orphans_frees_their_places_under_the_cap() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("reap_cap");
    let clock = ManualClock::new(time::OffsetDateTime::now_utc());
    let handle = |instance: &str| {
        on_clock(&cluster.conninfo(), &schema, instance, &clock)
            .max_active(2)
            .lease(Duration::from_secs(1))
            .open()
            .unwrap()
    };
    let (dead, reaper) = (handle("dead"), handle("reaper"));
    for _ in 0..2 {
        dead.create(NewTask::new()).unwrap();
    }
    let mut client = cluster.client();
    assert_eq!(counter_and_active(&mut client, &schema), (2, 2));
    // The dead instance renews nothing: both leases lapse, and one
    // statement fails both orphans.
    clock.advance(Duration::from_secs(5));
    let reaped = reaper.reap_orphans().unwrap();
    assert_eq!(reaped.len(), 2, "{reaped:?}");
    assert!(reaped.iter().all(|t| t.status == TaskStatus::Failed));
    assert_eq!(
        counter_and_active(&mut client, &schema),
        (0, 0),
        "the reaped orphans hold no place"
    );
    for _ in 0..2 {
        reaper.create(NewTask::new()).unwrap();
    }
}
