//! Calls beside a row another transaction holds: the lock timeout, and the
//! renewal, removal, sweep and reap batches that wait on one locked row without
//! holding any other.

use super::*;

/// A call whose statement waits on a lock another session holds (an
/// operator's `LOCK TABLE`) fails once the connection's `lock_timeout`
/// runs out, with the server's error, as README says; and works again
/// once the lock is let go.
#[test]
fn a_call_waiting_on_a_lock_fails_after_the_connections_lock_timeout() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("lock_timeout");
    let conninfo = format!("{} options='-c lock_timeout=200ms'", cluster.conninfo());
    let s = PgStore::builder(conninfo).schema(&schema).open().unwrap();
    let task = s.create(NewTask::new()).unwrap();
    let mut client = cluster.client();
    let mut tx = client.transaction().unwrap();
    tx.batch_execute(&format!(
        "LOCK TABLE {schema}.tasks IN ACCESS EXCLUSIVE MODE"
    ))
    .unwrap();
    let e = s
        .list(&ListQuery::all())
        .expect_err("a listing behind a table lock");
    assert!(e.to_string().contains("lock timeout"), "{e}");
    tx.rollback().unwrap();
    assert_eq!(s.list(&ListQuery::all()).unwrap().tasks, vec![task]);
}

/// Runs `batch` on a thread of its own while another session holds the
/// row lock of task `locked` in an open transaction (an operator's, a
/// frozen writer's): once a connection named `application` waits on the
/// holder, `meanwhile` looks from a third connection; then `release` ends
/// the holder's transaction (its last statements, `COMMIT` among them),
/// and the batch's result is returned. A failing check drops the holder's
/// connection, which ends the batch's wait.
fn while_a_row_is_held<R: Send>(
    cluster: &Cluster,
    schema: &str,
    locked: &TaskId,
    application: &str,
    batch: impl FnOnce() -> R + Send,
    meanwhile: impl FnOnce(&mut postgres::Client),
    release: impl FnOnce(&mut postgres::Client),
) -> R {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let (mut holder, holder_pid) = holding(
            cluster,
            &format!("SELECT FROM {schema}.tasks WHERE id = '{locked}' FOR UPDATE"),
        );
        s.spawn(move || {
            let _ = tx.send(batch());
        });
        let mut client = cluster.client();
        wait_until("the batch to wait on the locked row", || {
            blocked_by(&mut client, application, holder_pid) == 1
        });
        meanwhile(&mut client);
        release(&mut holder);
        rx.recv_timeout(common::HANG)
            .expect("the batch never returned")
    })
}

/// A renewal batch that meets a task's row locked by another session (an
/// operator's open transaction, a frozen writer) renews and commits every
/// other task of the batch at once, holding none of their rows: only the
/// locked task's renewal waits, alone, and is applied once the lock goes
/// (its owner has not lost it). (The batch was one statement that waited
/// on the locked row holding the rows it had renewed before it: their
/// renewals were not committed, and every write to them waited too.)
#[test]
fn a_renewal_batch_waiting_on_one_locked_row_holds_no_other_row() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("renew_locked");
    let clock = ManualClock::new(time::OffsetDateTime::now_utc());
    let renewer = format!("{} application_name=renew_locked", cluster.conninfo());
    let owner = on_clock(&renewer, &schema, "owner", &clock).open().unwrap();
    let reader = on_clock(&cluster.conninfo(), &schema, "reader", &clock)
        .open()
        .unwrap();
    // The locked task last, in the batch and in the table alike (made a
    // millisecond apart: at one instant, the table orders them by id): a
    // batch that goes in either order meets the others first.
    let tasks: Vec<Task> = (0..3)
        .map(|_| {
            clock.advance(Duration::from_millis(1));
            owner.create(NewTask::new()).unwrap()
        })
        .collect();
    let locked = &tasks[2];
    clock.advance(Duration::from_secs(10));
    let ids: Vec<TaskId> = tasks.iter().map(|t| t.id.clone()).collect();
    let renewed = while_a_row_is_held(
        cluster,
        &schema,
        &locked.id,
        "renew_locked",
        || owner.renew_leases_of(&ids),
        |client| {
            for task in &tasks[..2] {
                let now = reader.get(&task.id).unwrap().unwrap();
                assert!(
                    now.lease_expires_at > task.lease_expires_at,
                    "task {} not renewed while the batch waits on another row",
                    task.id
                );
                let free = client
                    .batch_execute(&format!(
                        "BEGIN; SELECT FROM {schema}.tasks WHERE id = '{}' FOR UPDATE NOWAIT; ROLLBACK",
                        task.id
                    ))
                    .map_err(|e| e.to_string());
                let _ = client.batch_execute("ROLLBACK");
                assert!(
                    free.is_ok(),
                    "the row of task {} is held: {free:?}",
                    task.id
                );
            }
            assert_eq!(
                reader.get(&locked.id).unwrap().unwrap(),
                *locked,
                "not renewed while locked"
            );
        },
        |holder| holder.batch_execute("COMMIT").unwrap(),
    );
    for (task, result) in tasks.iter().zip(renewed) {
        match result {
            Ok(Transition::Applied(now)) => {
                assert!(now.lease_expires_at > task.lease_expires_at, "{}", task.id);
                assert_eq!(reader.get(&task.id).unwrap(), Some(now));
            }
            other => panic!("task {}: {other:?}", task.id),
        }
    }
}

/// The task JSON of row `id`, read from another connection: `None` if the
/// row is gone (or its removal is committed).
fn stored_json(client: &mut postgres::Client, schema: &str, id: &TaskId) -> Option<String> {
    client
        .query_opt(
            &format!("SELECT task FROM {schema}.tasks WHERE id = $1"),
            &[&id.as_str()],
        )
        .unwrap()
        .map(|row| row.get(0))
}

/// While the locked one of `tasks` waits, the others are gone for every
/// connection (their removals committed) and the counter counts what is
/// left; the locked one is stored as read.
fn removed_all_but_the_locked(
    client: &mut postgres::Client,
    schema: &str,
    tasks: &[Task],
    locked: &Task,
) {
    for task in tasks.iter().filter(|t| t.id != locked.id) {
        assert_eq!(
            stored_json(client, schema, &task.id),
            None,
            "task {} not removed while the batch waits on another row",
            task.id
        );
    }
    assert_eq!(
        stored_json(client, schema, &locked.id),
        Some(serde_json::to_string(locked).unwrap()),
        "the locked task changed while locked"
    );
    let (counter, active) = counter_and_active(client, schema);
    assert_eq!(counter, active, "the counter while the batch waits");
}

/// A batch of removals (`remove_all`: the expired tasks a read or a pass
/// meets) that meets a task's row locked by another session removes and
/// commits every other task at once, holding none of their rows, the
/// counter counting what is left: only the locked task's removal waits,
/// alone. Once the lock goes it removes the task if that is still the
/// version read (`Swap::Done`), and leaves the version the lock holder
/// wrote meanwhile (a finish: `Swap::Changed`); the counter is exact
/// either way. (The batch was one statement that waited on the locked row
/// holding the rows it had deleted before it, their removals uncommitted.)
#[test]
fn a_removal_batch_waiting_on_one_locked_row_holds_no_other_row() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("remove_locked");
    let remover = format!("{} application_name=remove_locked", cluster.conninfo());
    let store = PgStore::builder(remover).schema(&schema).open().unwrap();
    let mut client = cluster.client();
    for holder_finishes in [false, true] {
        // The locked task last, in the batch and in the table alike.
        let tasks: Vec<Task> = (0..3)
            .map(|_| store.create(NewTask::new()).unwrap())
            .collect();
        let locked = &tasks[2];
        let mut finished = locked.clone();
        finished.status = TaskStatus::Completed;
        finished.result = Some(json!("by the lock holder"));
        finished.revision += 1;
        let removed = while_a_row_is_held(
            cluster,
            &schema,
            &locked.id,
            "remove_locked",
            || store.backend().remove_all(&tasks),
            |client| removed_all_but_the_locked(client, &schema, &tasks, locked),
            |holder| {
                if holder_finishes {
                    let finish = format!(
                        "UPDATE {schema}.tasks SET revision = $1, status = 'completed', \
                         active = false, task = $2 WHERE id = $3"
                    );
                    let revision = i64::try_from(finished.revision).unwrap();
                    let json = serde_json::to_string(&finished).unwrap();
                    let id = finished.id.as_str();
                    assert_eq!(
                        holder.execute(&finish, &[&revision, &json, &id]).unwrap(),
                        1
                    );
                    holder
                        .batch_execute(&format!("UPDATE {schema}.counters SET active = active - 1"))
                        .unwrap();
                }
                holder.batch_execute("COMMIT").unwrap();
            },
        );
        let fate = if holder_finishes {
            Swap::Changed(Some(finished.clone()))
        } else {
            Swap::Done
        };
        let expected: Vec<Swap> = vec![Swap::Done, Swap::Done, fate];
        let removed: Vec<Swap> = removed.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            removed, expected,
            "finished by the lock holder: {holder_finishes}"
        );
        let left = stored_json(&mut client, &schema, &locked.id);
        let json = holder_finishes.then(|| serde_json::to_string(&finished).unwrap());
        assert_eq!(left, json, "finished by the lock holder: {holder_finishes}");
        let (counter, active) = counter_and_active(&mut client, &schema);
        assert_eq!((counter, active), (0, 0));
    }
}

/// A sweep whose batch meets an expired task's row locked by another
/// session deletes and commits every other expired task at once, holding
/// none of their rows, the counter counting what is left: only the
/// locked task's removal waits, alone. Once the lock goes it deletes the
/// task, counted as swept, if that is still the version read; a task the
/// lock holder made again under its id meanwhile (live: not expired) is
/// kept, and not counted. The counter is exact either way. (The batch was
/// one statement that waited on the locked row holding the rows it had
/// deleted before it, their removals uncommitted.)
#[test]
fn a_sweep_waiting_on_one_locked_row_holds_no_other_row() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("sweep_locked");
    let clock = ManualClock::new(time::OffsetDateTime::now_utc());
    let sweeper = format!("{} application_name=sweep_locked", cluster.conninfo());
    let store = on_clock(&sweeper, &schema, "sweeper", &clock)
        .open()
        .unwrap();
    let mut client = cluster.client();
    let ttl = Duration::from_secs(60);
    for holder_makes_it_again in [false, true] {
        // The locked task last, in the table's order (the sweep's): made a
        // millisecond apart (at one instant, the table orders them by id).
        let mut tasks: Vec<Task> = (0..3)
            .map(|_| {
                clock.advance(Duration::from_millis(1));
                store.create(NewTask::new().ttl(ttl)).unwrap()
            })
            .collect();
        tasks[0] = store.complete(&tasks[0].id, json!(0)).unwrap().into_task();
        clock.advance(ttl);
        let locked = &tasks[2];
        // Made again under its id, at the sweep's now: live.
        let mut again = locked.clone();
        again.created_at = clock.now();
        again.last_updated_at = clock.now();
        again.revision = 1;
        let swept = while_a_row_is_held(
            cluster,
            &schema,
            &locked.id,
            "sweep_locked",
            || store.sweep(),
            |client| removed_all_but_the_locked(client, &schema, &tasks, locked),
            |holder| {
                if holder_makes_it_again {
                    let nanos = |at: time::OffsetDateTime| {
                        i64::try_from(at.unix_timestamp_nanos()).unwrap()
                    };
                    let json = serde_json::to_string(&again).unwrap();
                    let (id, created, expires) = (
                        again.id.as_str(),
                        nanos(again.created_at),
                        nanos(again.expires_at().unwrap()),
                    );
                    holder
                        .execute(&format!("DELETE FROM {schema}.tasks WHERE id = $1"), &[&id])
                        .unwrap();
                    let insert = format!(
                        "INSERT INTO {schema}.tasks \
                         (id, created_at_ns, revision, status, active, expires_at_ns, task) \
                         VALUES ($1, $2, 1, 'working', true, $3, $4)"
                    );
                    holder
                        .execute(&insert, &[&id, &created, &expires, &json])
                        .unwrap();
                }
                holder.batch_execute("COMMIT").unwrap();
            },
        )
        .unwrap();
        let what = format!("made again by the lock holder: {holder_makes_it_again}");
        assert!(swept.missed.is_empty(), "{what}: {:?}", swept.missed);
        assert_eq!(
            swept.deleted,
            if holder_makes_it_again { 2 } else { 3 },
            "{what}"
        );
        let left = stored_json(&mut client, &schema, &locked.id);
        let json = holder_makes_it_again.then(|| serde_json::to_string(&again).unwrap());
        assert_eq!(left, json, "{what}");
        let (counter, active) = counter_and_active(&mut client, &schema);
        assert_eq!(counter, active, "{what}");
        if holder_makes_it_again {
            assert_eq!(
                store.get(&locked.id).unwrap(),
                Some(again.clone()),
                "{what}"
            );
        }
    }
}

/// A reap (and so a claim: the same batch of replacements, `replace_all`)
/// that meets an orphan's row another session holds locked fails and
/// commits every other orphan at once, holding none of their rows, the
/// counter counting what is left: only the locked orphan's write waits,
/// alone, and fails it once the lock goes.
#[test]
fn a_reap_waiting_on_one_locked_row_holds_no_other_row() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("reap_locked");
    let clock = ManualClock::new(time::OffsetDateTime::now_utc());
    let handle = |conninfo: &str, instance: &str| {
        on_clock(conninfo, &schema, instance, &clock)
            .lease(Duration::from_secs(1))
            .open()
            .unwrap()
    };
    let dead = handle(&cluster.conninfo(), "dead");
    let reaper = handle(
        &format!("{} application_name=reap_locked", cluster.conninfo()),
        "reaper",
    );
    // The locked orphan last, in the table's order (the reap's): made a
    // millisecond apart (at one instant, the table orders them by id).
    let tasks: Vec<Task> = (0..3)
        .map(|_| {
            clock.advance(Duration::from_millis(1));
            dead.create(NewTask::new()).unwrap()
        })
        .collect();
    let locked = &tasks[2];
    clock.advance(Duration::from_secs(5));
    let reaped = while_a_row_is_held(
        cluster,
        &schema,
        &locked.id,
        "reap_locked",
        || reaper.reap_orphans(),
        |client| {
            for task in &tasks[..2] {
                let json = stored_json(client, &schema, &task.id).unwrap();
                let now: Task = serde_json::from_str(&json).unwrap();
                assert_eq!(
                    now.status,
                    TaskStatus::Failed,
                    "task {} not reaped while the batch waits on another row",
                    task.id
                );
            }
            assert_eq!(
                stored_json(client, &schema, &locked.id),
                Some(serde_json::to_string(locked).unwrap()),
                "the locked task changed while locked"
            );
            let (counter, active) = counter_and_active(client, &schema);
            assert_eq!(
                (counter, active),
                (1, 1),
                "the counter while the batch waits"
            );
        },
        |holder| holder.batch_execute("COMMIT").unwrap(),
    )
    .unwrap();
    let ids: Vec<&TaskId> = reaped.iter().map(|t| &t.id).collect();
    assert_eq!(ids, tasks.iter().map(|t| &t.id).collect::<Vec<_>>());
    assert!(reaped.iter().all(|t| t.status == TaskStatus::Failed));
    let mut client = cluster.client();
    assert_eq!(counter_and_active(&mut client, &schema), (0, 0));
}
