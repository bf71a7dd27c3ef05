//! A failover: a primary and its synchronous standby named in one
//! connection string, the primary killed and the standby promoted.

use super::*;

/// A primary and its synchronous standby in one connection string
/// (`host=primary,standby`), the primary killed (an immediate stop: to its
/// clients, a crash) and the standby promoted: every task the store
/// acknowledged before the kill reads back from the promoted standby as it
/// was acknowledged (the last create and complete among them written while
/// the standby was cut off: with the store's sessions set to
/// `synchronous_commit = local` on purpose, the complete returned at once
/// and read back `working`), through the handle that wrote it (not reopened),
/// which writes on there once the standby takes writes; and another
/// instance claims the running tasks the first one left, once their leases
/// lapsed, as it would have on the primary. Before the failover, a handle
/// given the standby alone opens there and reads, and its create fails
/// saying the database is read-only, naming the task.
#[test]
fn a_failover_to_a_synchronous_standby_keeps_every_acknowledged_task() {
    let Some(primary) = pg_cluster::private() else {
        return;
    };
    let standby = primary
        .synchronous_standby()
        .unwrap_or_else(|e| panic!("{e}"));
    let schema = fresh_schema("failover");
    let conninfo = format!(
        "host={},{} port=5432,5432 user=postgres dbname=postgres",
        primary.host(),
        standby.host()
    );
    let open = |instance: &str| {
        PgStore::builder(conninfo.clone())
            .schema(&schema)
            .instance_id(instance)
            .lease(Duration::from_millis(300))
            .open()
            .unwrap_or_else(|e| panic!("open {instance}: {e}"))
    };
    let first = open("first");
    let acknowledged: Vec<Task> = (0..30)
        .map(|i| {
            let task = first
                .create(NewTask::new().resumable("k", json!(i)))
                .unwrap();
            match i % 3 {
                0 => task,
                1 => first
                    .complete(&task.id, json!({ "n": i }))
                    .unwrap()
                    .into_task(),
                _ => first
                    .update(
                        &task.id,
                        TaskUpdate::new()
                            .status_message(format!("step {i}"))
                            .checkpoint(json!({ "at": i })),
                    )
                    .unwrap()
                    .into_task(),
            }
        })
        .collect();
    // The standby alone, as a service given the wrong host would name it:
    // it opens and reads what the primary acknowledged, and a write fails
    // saying the database is read-only, naming the task.
    let on_standby = PgStore::builder(standby.conninfo())
        .schema(&schema)
        .instance_id("misplaced")
        .open()
        .unwrap_or_else(|e| panic!("open on the standby: {e}"));
    // Flushed there at its commit, replayed a moment later.
    wait_until("the standby to show what the primary acknowledged", || {
        on_standby.get(&acknowledged[1].id).unwrap().as_ref() == Some(&acknowledged[1])
    });
    let refused = on_standby
        .create(NewTask::new().id(TaskId::parse("made-on-the-standby").unwrap()))
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("the database is read-only") && refused.contains("made-on-the-standby"),
        "{refused}"
    );
    drop(on_standby);
    // The last writes, made while the standby cannot take what the primary
    // sends (its WAL receiver stopped and cut off): acknowledged only once
    // it has them,
    // they survive the failover. A store that took a commit for done
    // before the standby had it (`synchronous_commit = local`) would
    // return them at once, and lose them with the primary, killed then.
    let receiver: i32 = standby
        .client()
        .query_one("SELECT pid FROM pg_stat_wal_receiver", &[])
        .unwrap()
        .get(0);
    let receiver = u32::try_from(receiver).unwrap();
    let mut watcher = primary.client();
    let (acknowledged_last, stopped) = std::thread::scope(|s| {
        // Stopped, and its connection ended at the primary, so that nothing
        // sent from now on waits for it in a socket's buffer: it takes the
        // WAL again only from the primary, once it runs again.
        common::stop(receiver);
        watcher
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_replication",
                &[],
            )
            .unwrap();
        wait_until("the primary to have no standby", || {
            watcher
                .query_one("SELECT count(*) FROM pg_stat_replication", &[])
                .unwrap()
                .get::<_, i64>(0)
                == 0
        });
        let last = s.spawn(|| {
            let made = first
                .create(NewTask::new().resumable("k", json!("last")))
                .unwrap();
            let finished = first
                .complete(&acknowledged[0].id, json!("finished last"))
                .unwrap()
                .into_task();
            vec![made, finished]
        });
        wait_until("the last writes to wait for the standby, or return", || {
            last.is_finished()
                || watcher
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'",
                        &[],
                    )
                    .unwrap()
                    .get::<_, i64>(0)
                    > 0
        });
        // Returned with the standby behind: the primary goes now.
        let stopped = last.is_finished();
        if stopped {
            primary.pg_ctl(&["stop", "-m", "immediate"]).unwrap();
        }
        common::signal(receiver, "-CONT");
        (last.join().unwrap(), stopped)
    });
    let acknowledged: Vec<Task> = acknowledged
        .iter()
        .map(|task| {
            acknowledged_last
                .iter()
                .find(|last| last.id == task.id)
                .unwrap_or(task)
                .clone()
        })
        .chain(std::iter::once(acknowledged_last[0].clone()))
        .collect();
    if !stopped {
        primary.pg_ctl(&["stop", "-m", "immediate"]).unwrap();
    }
    standby.pg_ctl(&["promote", "-w", "-t", "60"]).unwrap();
    let ids: Vec<TaskId> = acknowledged.iter().map(|t| t.id.clone()).collect();
    // Until a connection is made again, calls fail (the primary is gone,
    // and a standby takes no session that asks for writes).
    wait_until("the handle to reach the promoted standby", || {
        first.get_all(&ids).iter().all(Result::is_ok)
    });
    for (task, stored) in acknowledged.iter().zip(first.get_all(&ids)) {
        assert_eq!(
            stored.unwrap().as_ref(),
            Some(task),
            "task {} as acknowledged before the failover",
            task.id
        );
    }
    let made_after = first.create(NewTask::new()).unwrap();
    assert_eq!(
        first.get(&made_after.id).unwrap().as_ref(),
        Some(&made_after)
    );
    let heir = open("heir");
    let lapsed = acknowledged.iter().filter_map(|t| t.lease_expires_at).max();
    wait_until("the first instance's leases to lapse", || {
        Some(heir.now()) > lapsed
    });
    let claimed = heir.claim(&["k"]).unwrap();
    assert!(claimed.missed.is_empty(), "{:?}", claimed.missed);
    let mut taken: Vec<&TaskId> = claimed.tasks.iter().map(|t| &t.id).collect();
    taken.sort();
    let mut running: Vec<&TaskId> = acknowledged
        .iter()
        .filter(|t| !t.is_terminal())
        .map(|t| &t.id)
        .collect();
    running.sort();
    assert_eq!(taken, running, "the heir claims every running task left");
    for task in &claimed.tasks {
        let before = acknowledged.iter().find(|t| t.id == task.id).unwrap();
        assert_eq!(
            (task.owner.as_deref(), task.epoch, task.revision),
            (Some("heir"), before.epoch + 1, before.revision + 1),
            "{}",
            task.id
        );
    }
}
