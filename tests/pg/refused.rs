//! Batches and calls refused, or that found no connection: they report no
//! task another pass claimed or removed, and undo nothing that did not change.

use super::*;

/// Ends every connection named `application` (as an administrator or a
/// restart would) and lets them sit ended long enough for their pool to
/// look at them before it hands one out (`pool::LOOK_AFTER`): one ended
/// moments after its last use is met by the next statement, sent, whose
/// failure may then come after a commit for all the client can tell.
fn end_idle_connections(cluster: &Cluster, application: &str) {
    let mut client = cluster.client();
    client
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&application],
        )
        .unwrap();
    wait_until("the connections to end", || {
        connected(&mut client, application) == 0
    });
    std::thread::sleep(Duration::from_millis(200));
}

/// A claim batch that never reached the server (no connection: its pooled
/// one ended, and the connects that would replace it refused) changed
/// nothing, as one the server refused: the tasks another pass of the same
/// handle claimed meanwhile, at the same instant, are not this pass's too.
/// (Every failure but an `ERROR` reply was taken as a batch that may have
/// committed before its reply was lost: each task, written alone and
/// found stored exactly as the pass meant to write it, was reported
/// claimed by both passes, two runs of one task at one epoch.) Nor does
/// the failed pass leave them to lapse: its writes, each failed before it
/// was sent, are known to have changed nothing, so the handle renews the
/// other pass's claims. (Every failed claim was disowned: the other
/// pass's identical claims, reported, were never renewed.)
#[test]
fn a_batch_that_found_no_connection_reports_no_task_another_pass_claimed() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("never_sent");
    let clock = ManualClock::new(time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap());
    let lease = Duration::from_secs(30);
    let dead = on_clock(&cluster.conninfo(), &schema, "dead", &clock)
        .lease(lease)
        .open()
        .unwrap();
    let orphans: Vec<Task> = (1..=2)
        .map(|n| {
            dead.create(NewTask::new().resumable("k", json!(n)))
                .unwrap()
        })
        .collect();
    clock.advance(lease);
    let proxy = Arc::new(pg_cluster::LosesAReply::start(cluster));
    let application = "never_sent";
    let conninfo = format!("{} application_name={application}", proxy.conninfo());
    let inner = on_clock(&conninfo, &schema, "heir", &clock)
        .lease(lease)
        .pool_size(1)
        .change_notices(false)
        .open()
        .unwrap();
    let refusing = Arc::clone(&proxy);
    // The first pass, once it has scanned, waits for the second to run
    // whole; before its batch (the second), the connection is taken away.
    let (scanned, go) = (
        Arc::new(std::sync::Barrier::new(2)),
        Arc::new(std::sync::Barrier::new(2)),
    );
    let (scanned_first, go_first) = (Arc::clone(&scanned), Arc::clone(&go));
    let after_scan = move |before: usize| {
        if before == 0 {
            scanned_first.wait();
            go_first.wait();
        }
    };
    let before_batch = move |before: usize| {
        if before != 1 {
            return;
        }
        // The pooled connection ended (an administrator, a restart), and
        // the connect that replaces it refused, until the pass is over:
        // its writes of each task alone too.
        end_idle_connections(cluster, application);
        refusing.refuse(true);
    };
    let heir = taskstore::Store::with_backend(Hooked::new(inner, after_scan, before_batch))
        .clock(Arc::new(clock.clone()))
        .lease(lease)
        .instance_id("heir")
        .build()
        .unwrap();
    let claims = std::thread::scope(|s| {
        let first = s.spawn(|| heir.claim(&["k"]).unwrap());
        scanned.wait();
        // The other pass, judging the same versions, claims both first.
        let second = heir.claim(&["k"]).unwrap();
        go.wait();
        [first.join().unwrap(), second]
    });
    proxy.refuse(false);
    each_claimed_once(&orphans, &claims);
    assert_eq!(claims[0].missed.len(), 2, "{:?}", claims[0]);
    for orphan in &orphans {
        let renewed = heir.renew_lease(&orphan.id);
        assert!(matches!(renewed, Ok(Transition::Applied(_))), "{renewed:?}");
    }
}

/// The same for a claim of one task, one conditional write, which the
/// server refuses (an `ERROR` reply: here a trigger refusing an update
/// that wrote no task, as a statement or lock timeout would) after
/// another pass of the handle claimed the task: it is not this pass's
/// too. (A failed single write was read back and, found stored exactly as
/// it was to write it, taken as done after a lost reply, whatever the
/// failure.)
#[test]
fn a_refused_single_claim_reports_no_task_another_pass_of_its_handle_claimed() {
    let Some(cluster) = cluster() else { return };
    let application = "single_refused";
    let (orphan, _dead, heir) = passes_meet(cluster, application, application, |dead| {
        dead.create(NewTask::new().resumable("k", json!(1)))
            .unwrap()
    });
    let schema = heir.backend().store.schema().to_owned();
    cluster
        .client()
        .batch_execute(&format!(
            "CREATE FUNCTION {schema}.written() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF (SELECT count(*) FROM written) = 0 THEN
                     RAISE EXCEPTION 'the test refuses an update that wrote no task';
                 END IF;
                 RETURN NULL;
             END $$;
             CREATE TRIGGER written AFTER UPDATE ON {schema}.tasks
                 REFERENCING NEW TABLE AS written
                 FOR EACH STATEMENT EXECUTE FUNCTION {schema}.written();"
        ))
        .unwrap();
    let claims = std::thread::scope(|s| {
        let claims: Vec<_> = (0..2)
            .map(|_| s.spawn(|| heir.claim(&["k"]).unwrap()))
            .collect();
        claims
            .into_iter()
            .map(|c| c.join().unwrap())
            .collect::<Vec<_>>()
    });
    each_claimed_once(std::slice::from_ref(&orphan), &claims);
    // The refused pass took its write for one that changed nothing: the
    // task is the other pass's run's to renew, not left to lapse.
    let renewed = heir.renew_lease(&orphan.id);
    assert!(matches!(renewed, Ok(Transition::Applied(_))), "{renewed:?}");
}

/// A create that changed nothing, because the server refused it (an
/// `ERROR` reply: here a trigger refusing the insert, as a statement
/// timeout would) or because it was never sent (every connect refused),
/// is not undone: no removal follows it (which, with the pool busy, would
/// wait for a connection a second time), and its error names the task.
/// (A create whose reply was lost may have committed, and is undone:
/// `pg::a_create_whose_commit_reply_is_lost_in_an_outage_is_not_kept_alive`.)
#[test]
fn a_create_that_changed_nothing_is_not_undone() {
    use std::sync::atomic::Ordering::SeqCst;
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("create_unchanged");
    let proxy = pg_cluster::LosesAReply::start(cluster);
    let application = "create_unchanged";
    let store = PgStore::builder(format!(
        "{} application_name={application}",
        proxy.conninfo()
    ))
    .schema(&schema)
    .instance_id("a")
    .pool_size(1)
    .change_notices(false)
    .open()
    .unwrap();
    let store = taskstore::Store::with_backend(Hooked::new(store, |_| {}, |_| {}))
        .instance_id("a")
        .build()
        .unwrap();
    refuse_every(cluster, &schema, "INSERT");
    let id = TaskId::parse("refused-by-the-server").unwrap();
    let e = store.create(NewTask::new().id(id.clone())).unwrap_err();
    assert!(e.to_string().contains(id.as_str()), "{e}");
    assert!(e.to_string().contains("refuses every insert"), "{e}");
    assert_eq!(store.backend().removes.load(SeqCst), 0, "refused: {e}");
    cluster
        .client()
        .batch_execute(&format!("DROP TRIGGER refused ON {schema}.tasks"))
        .unwrap();
    // Never sent: the pooled connection ended, every connect refused.
    end_idle_connections(cluster, application);
    proxy.refuse(true);
    let id = TaskId::parse("never-sent").unwrap();
    let e = store.create(NewTask::new().id(id.clone())).unwrap_err();
    assert!(e.to_string().contains(id.as_str()), "{e}");
    assert_eq!(store.backend().removes.load(SeqCst), 0, "never sent: {e}");
    proxy.refuse(false);
    // Nothing of either stored; both made now.
    for id in ["refused-by-the-server", "never-sent"] {
        let id = TaskId::parse(id).unwrap();
        assert_eq!(store.get(&id).unwrap(), None);
        store.create(NewTask::new().id(id)).unwrap();
    }
}

/// The same for a claim whose batch the server refuses (as a statement
/// timeout would; here a trigger that refuses any statement writing more
/// than one task, once a lock the test holds is let go) while a later
/// claim of the handle, its batch leaving those rows out, waits to write
/// them alone: only the one whose write landed reports each task. (Both
/// reported them: a refused batch was taken as one that may have
/// committed before a lost reply, and a task then found stored as its
/// pass meant to write it as its own write.)
#[test]
fn a_refused_batch_reports_no_task_another_pass_of_its_handle_claimed() {
    let Some(cluster) = cluster() else { return };
    let application = "batch_refused";
    let gate = 4242;
    let (orphans, heir, _) = two_orphans_written_through(
        cluster,
        application,
        &format!(
            "IF (SELECT count(*) FROM written) > 1 THEN
                 PERFORM pg_advisory_xact_lock_shared({gate});
                 RAISE EXCEPTION 'the test refuses a statement writing more than one task';
             END IF;"
        ),
    );
    let (mut holder, holder_pid) =
        holding(cluster, &format!("SELECT pg_advisory_xact_lock({gate})"));
    // The passes in turn: the second judges the tasks once the first's
    // batch has written both rows and waits to be refused.
    let claims = std::thread::scope(|s| {
        let first = s.spawn(|| heir.claim(&["k"]).unwrap());
        let mut watcher = cluster.client();
        wait_until("the first batch to wait to be refused", || {
            blocked_by(&mut watcher, application, holder_pid) == 1
        });
        let second = s.spawn(|| heir.claim(&["k"]).unwrap());
        wait_until("the second pass to wait for the first's rows", || {
            lock_waits(&mut watcher, application) == 2
        });
        holder.batch_execute("ROLLBACK").unwrap();
        [first.join().unwrap(), second.join().unwrap()]
    });
    each_claimed_once(&orphans, &claims);
}

/// The same for sweeps: one sweep's removal batch the server refuses (a
/// trigger refusing any statement that deletes more than one task, once a
/// lock the test holds is let go) while another handle's sweep, its batch
/// leaving those rows out, waits to remove them alone: each expired task
/// is counted deleted once, by the sweep that removed it. (The refused
/// sweep counted them too: a task gone after its batch failed was counted
/// as its own removal, as after a batch whose reply was lost.)
#[test]
fn a_refused_removal_batch_counts_no_task_another_sweep_removed() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("sweep_refused");
    let clock = ManualClock::new(time::OffsetDateTime::now_utc());
    let application = "sweep_refused";
    let conninfo = format!("{} application_name={application}", cluster.conninfo());
    let open = |instance: &str| {
        on_clock(&conninfo, &schema, instance, &clock)
            .open()
            .unwrap()
    };
    let (first, second) = (open("first"), open("second"));
    let ttl = Duration::from_secs(60);
    for _ in 0..2 {
        let task = first.create(NewTask::new().ttl(ttl)).unwrap();
        assert!(first.complete(&task.id, json!(1)).unwrap().is_applied());
    }
    clock.advance(ttl);
    let gate = 4444;
    cluster
        .client()
        .batch_execute(&format!(
            "CREATE FUNCTION {schema}.removed() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF (SELECT count(*) FROM removed) > 1 THEN
                     PERFORM pg_advisory_xact_lock_shared({gate});
                     RAISE EXCEPTION 'the test refuses a statement removing more than one task';
                 END IF;
                 RETURN NULL;
             END $$;
             CREATE TRIGGER removed AFTER DELETE ON {schema}.tasks
                 REFERENCING OLD TABLE AS removed
                 FOR EACH STATEMENT EXECUTE FUNCTION {schema}.removed();"
        ))
        .unwrap();
    let (mut holder, holder_pid) =
        holding(cluster, &format!("SELECT pg_advisory_xact_lock({gate})"));
    let swept = std::thread::scope(|s| {
        let refused = s.spawn(|| first.sweep().unwrap());
        let mut watcher = cluster.client();
        wait_until("the first batch to wait to be refused", || {
            blocked_by(&mut watcher, application, holder_pid) == 1
        });
        let alone = s.spawn(|| second.sweep().unwrap());
        wait_until("the second sweep to wait for the first's rows", || {
            lock_waits(&mut watcher, application) == 2
        });
        holder.batch_execute("ROLLBACK").unwrap();
        [refused.join().unwrap(), alone.join().unwrap()]
    });
    // Once the refused batch is undone, each sweep may remove either task
    // alone: the second waits on the first task's row, and the refused
    // sweep's own removals may take the second task before it (1 and 1).
    let deleted: Vec<usize> = swept.iter().map(|s| s.deleted).collect();
    assert_eq!(deleted.iter().sum::<usize>(), 2, "{swept:?}");
    assert!(swept.iter().all(|s| s.missed.is_empty()), "{swept:?}");
}

/// A batch that failed with the server out of reach (a restart, a
/// failover: here its connections ended and new ones refused), whose
/// tasks are then written each on its own, connects once for them, not
/// once a task: once the first found no connection, the others fail with
/// its error, each naming its task, and nothing changed. (A batch of 40
/// made 41 connects, each failing as the first did; a sweep's batch of 300
/// made 301.)
#[test]
fn a_batch_that_failed_with_the_server_down_connects_once_more_not_once_a_task() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("down_batch");
    let application = "down_batch";
    let proxy = pg_cluster::LosesAReply::start(cluster);
    let store = PgStore::builder(format!(
        "{} application_name={application}",
        proxy.conninfo()
    ))
    .schema(&schema)
    .instance_id("a")
    .time_source(TimeSource::Clock)
    .change_notices(false)
    .open()
    .unwrap();
    let tasks: Vec<Task> = (0..40)
        .map(|_| store.create(NewTask::new()).unwrap())
        .collect();
    proxy.refuse(true);
    end_idle_connections(cluster, application);
    let before = proxy.accepted();
    let removed = store.backend().remove_all(&tasks);
    let connects = proxy.accepted() - before;
    assert_eq!(removed.len(), tasks.len());
    for (task, result) in tasks.iter().zip(&removed) {
        match result {
            Err(e @ Error::Backend { .. }) => {
                let said = e.to_string();
                assert!(
                    said.contains(task.id.as_str()) && said.contains("connect"),
                    "{said}"
                );
            }
            other => panic!("{}: {other:?}", task.id),
        }
    }
    // The batch's connect, and the first task's own.
    assert_eq!(connects, 2, "connects for a batch of {}", tasks.len());
    proxy.refuse(false);
    let stored = store.get_all(&tasks.iter().map(|t| t.id.clone()).collect::<Vec<_>>());
    for (task, stored) in tasks.iter().zip(stored) {
        assert_eq!(stored.unwrap().as_ref(), Some(task), "nothing changed");
    }
}
