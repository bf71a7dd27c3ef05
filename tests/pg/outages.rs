//! Connections and servers: the pool's wait, a server restart mid-workload,
//! several hosts in a connection string, sessions ended on error or when idle,
//! a server that never answers, a load cut off in an outage, and errors that
//! name the server tried.

use super::*;

/// A call that finds every pooled connection busy waits for a free one for
/// the handle's `pool_wait` at most, then fails naming the operation, the
/// task and the wait: a server slowed down (here a lock held on the
/// table) does not pile callers up for ever. The busy call itself goes on
/// once the lock goes. (The second call waited with no limit.)
#[test]
fn a_call_waits_for_a_free_connection_for_the_pool_wait_at_most() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("pool_wait");
    let store = Arc::new(
        PgStore::builder(format!("{} application_name=pool_wait", cluster.conninfo()))
            .schema(&schema)
            .instance_id("waiter")
            .pool_size(1)
            .pool_wait(Duration::from_millis(300))
            .open()
            .unwrap(),
    );
    let task = store.create(NewTask::new()).unwrap();
    let (mut holder, holder_pid) = holding(
        cluster,
        &format!("LOCK TABLE {schema}.tasks IN ACCESS EXCLUSIVE MODE"),
    );
    let busy = std::thread::spawn({
        let (store, id) = (Arc::clone(&store), task.id.clone());
        move || store.get(&id)
    });
    let mut client = cluster.client();
    wait_until("the first call to wait on the table's holder", || {
        blocked_by(&mut client, "pool_wait", holder_pid) == 1
    });
    let second = std::thread::spawn({
        let (store, id) = (Arc::clone(&store), task.id.clone());
        move || store.get(&id)
    });
    let waited = std::time::Instant::now();
    while !second.is_finished() && waited.elapsed() < common::HANG {
        std::thread::sleep(Duration::from_millis(5));
    }
    let gave_up = second.is_finished();
    holder.batch_execute("ROLLBACK").unwrap();
    assert!(
        gave_up,
        "the second call waited for a connection with no limit"
    );
    match second.join().unwrap() {
        Err(e @ Error::Backend { .. }) => {
            let said = e.to_string();
            assert!(
                said.contains("no free connection") && said.contains(task.id.as_str()),
                "{said}"
            );
        }
        other => panic!("the second call fails, naming the wait: {other:?}"),
    }
    assert_eq!(
        busy.join().unwrap().unwrap(),
        Some(task),
        "the busy call goes on"
    );
}

/// A batch that finds every pooled connection busy waits the pool's wait
/// once for its own statement and once for its first task's, not once a
/// task: once one task found no connection free, the rest of the batch
/// fail at once, each naming its own task and the one that waited. A
/// renewal pass of 40 tasks behind a held lock waited 40 times the wait,
/// long enough for every lease it was renewing to lapse.
#[test]
fn a_batch_that_found_the_pool_busy_waits_for_one_task_not_for_each() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("busy_batch");
    let application = "busy_batch";
    let store = Arc::new(
        PgStore::builder(format!(
            "{} application_name={application}",
            cluster.conninfo()
        ))
        .schema(&schema)
        .instance_id("a")
        .pool_size(1)
        .pool_wait(Duration::from_millis(200))
        .change_notices(false)
        .open()
        .unwrap(),
    );
    let tasks: Vec<Task> = (0..10)
        .map(|_| store.create(NewTask::new()).unwrap())
        .collect();
    let (mut holder, holder_pid) = holding(
        cluster,
        &format!("LOCK TABLE {schema}.tasks IN ACCESS EXCLUSIVE MODE"),
    );
    let busy = std::thread::spawn({
        let (store, id) = (Arc::clone(&store), tasks[0].id.clone());
        move || store.get(&id)
    });
    let mut client = cluster.client();
    wait_until("the busy call to wait on the table's holder", || {
        blocked_by(&mut client, application, holder_pid) == 1
    });
    let removed = store.backend().remove_all(&tasks);
    holder.batch_execute("ROLLBACK").unwrap();
    busy.join().unwrap().unwrap();
    assert_eq!(removed.len(), tasks.len());
    let said: Vec<String> = removed
        .iter()
        .zip(&tasks)
        .map(|(result, task)| match result {
            Err(e @ Error::Backend { .. }) => {
                let said = e.to_string();
                assert!(said.contains(task.id.as_str()), "{said}");
                said
            }
            other => panic!("{}: {other:?}", task.id),
        })
        .collect();
    assert!(said[0].contains("no free connection"), "{}", said[0]);
    for said in &said[1..] {
        assert!(
            said.contains("not tried") && said.contains(tasks[0].id.as_str()),
            "each task of the batch waited for a connection of its own: {said}"
        );
    }
    let stored = store.get_all(&tasks.iter().map(|t| t.id.clone()).collect::<Vec<_>>());
    for (task, stored) in tasks.iter().zip(stored) {
        assert_eq!(stored.unwrap().as_ref(), Some(task), "nothing changed");
    }
}

// ---------------------------------------------------------------------------
// A server restart in the middle of a workload.

fn is_postgres_error(e: &Error) -> bool {
    matches!(
        e,
        Error::Backend {
            backend: "postgres",
            ..
        }
    )
}

#[test]
fn a_server_restart_loses_no_acknowledged_write_and_the_same_handles_recover() {
    // A cluster of its own: the others' tests must not see the restart.
    let Some(cluster) = pg_cluster::private() else {
        return;
    };
    let schema = fresh_schema("restart");
    let a = open(&cluster, &schema, "a");
    let b = open(&cluster, &schema, "b");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (acked, errors) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let (mut acked, mut errors) = (Vec::new(), Vec::new());
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = common::id("w", n);
                n += 1;
                match a.create(NewTask::new().id(id.clone()).metadata("n", n)) {
                    Ok(t) => match a.complete(&t.id, json!(n)) {
                        Ok(done) => acked.push(done.into_task()),
                        Err(e) => {
                            acked.push(t);
                            errors.push(e);
                        }
                    },
                    Err(e) => errors.push(e),
                }
            }
            (acked, errors)
        });
        wait_until("a few acknowledged writes", || {
            b.list(&ListQuery::all()).unwrap().tasks.len() >= 20
        });
        cluster.pg_ctl(&["restart", "-m", "fast", "-w"]).unwrap();
        wait_until("writes after the restart", || {
            b.list(&ListQuery::all()).is_ok_and(|p| p.tasks.len() >= 60)
        });
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().unwrap()
    });
    for e in &errors {
        assert!(
            is_postgres_error(e),
            "every failure is a backend error: {e:?}"
        );
    }
    // Every acknowledged write survived the restart, exactly as returned
    // (a write whose answer was lost may or may not have landed).
    for task in &acked {
        let stored = b
            .get(&task.id)
            .unwrap()
            .expect("an acknowledged task survives");
        if task.is_terminal() {
            assert_eq!(&stored, task);
        } else {
            assert!(stored.revision >= task.revision, "{stored:?}");
        }
    }
    // While the server is down every call is a backend error naming what failed.
    let kept = acked.last().expect("writes were acknowledged").id.clone();
    cluster.pg_ctl(&["stop", "-m", "fast", "-w"]).unwrap();
    for (what, result) in [
        ("get", a.get(&kept).map(drop)),
        ("create", a.create(NewTask::new()).map(drop)),
        ("update", b.update(&kept, TaskUpdate::new()).map(drop)),
        ("list", b.list(&ListQuery::active()).map(drop)),
        ("sweep", b.sweep().map(drop)),
    ] {
        match result {
            Err(e) if is_postgres_error(&e) => {
                if what == "get" || what == "update" {
                    assert!(e.to_string().contains(kept.as_str()), "{e}");
                }
            }
            other => panic!("{what} while the server is down: {other:?}"),
        }
    }
    cluster.pg_ctl(&["start", "-w"]).unwrap();
    // The same handles, not reopened: the first call after works.
    assert_eq!(a.get(&kept).unwrap().unwrap().id, kept);
    let fresh = b.create(NewTask::new()).unwrap();
    assert!(a.complete(&fresh.id, json!("after")).unwrap().is_applied());
    let (counter, active) = counter_and_active(&mut cluster.client(), &schema);
    assert_eq!(counter, active, "the cap counter matches the active tasks");
    eprintln!(
        "restart: {} writes acknowledged, {} failed during the restart",
        acked.len(),
        errors.len()
    );
}

/// A connection string that names several hosts (a primary and its
/// standbys, for failover) puts every connection on a host that takes
/// writes: the store defaults `target_session_attrs` to `read-write`, so
/// none lands on a host whose sessions are read-only (here a server whose
/// sessions default to read-only, first in the list, as a standby's are),
/// which would fail every write until the connection ended. (The driver's
/// default, `any`, took the first host that answered: the open failed,
/// the schema not creatable there.) A string that sets it keeps it.
#[test]
fn a_connection_string_of_several_hosts_lands_on_one_that_takes_writes() {
    let Some(primary) = cluster() else { return };
    let Some(read_only) = pg_cluster::private() else {
        return;
    };
    let mut admin = read_only.client();
    admin
        .batch_execute("ALTER SYSTEM SET default_transaction_read_only = on")
        .unwrap();
    admin.batch_execute("SELECT pg_reload_conf()").unwrap();
    wait_until("the read-only setting to take", || {
        read_only
            .client()
            .query_one("SHOW transaction_read_only", &[])
            .unwrap()
            .get::<_, String>(0)
            == "on"
    });
    let host = |cluster: &Cluster| {
        let conninfo = cluster.conninfo();
        let host = conninfo.strip_prefix("host=").unwrap();
        host[..host.find(' ').unwrap()].to_owned()
    };
    let conninfo = format!(
        "host={},{} port=5432 user=postgres dbname=postgres",
        host(&read_only),
        host(primary)
    );
    let schema = fresh_schema("several_hosts");
    let store = PgStore::builder(&conninfo)
        .schema(&schema)
        .instance_id("a")
        .open()
        .unwrap();
    let task = store.create(NewTask::new()).unwrap();
    let on_primary: i64 = primary
        .client()
        .query_one(&format!("SELECT count(*) FROM {schema}.tasks"), &[])
        .unwrap()
        .get(0);
    assert_eq!(on_primary, 1, "{task:?} is on the primary");
    let said = PgStore::builder(format!("{conninfo} target_session_attrs=any"))
        .schema(fresh_schema("several_hosts_any"))
        .instance_id("a")
        .open();
    let e = said.expect_err("told any, it lands on the first host, read-only");
    assert!(e.to_string().contains("read-only"), "{e}");
}

/// A write to a database whose sessions are read-only (a standby, a
/// database or role set `default_transaction_read_only`) fails saying so
/// plainly, naming the operation and the task: a create, an update, a
/// completion. (Each said "cannot execute SELECT in a read-only
/// transaction": the store's writes are `SELECT`s around their `INSERT`
/// or `UPDATE`.) Reads go on.
#[test]
fn a_write_to_a_read_only_database_says_the_database_is_read_only() {
    let Some(cluster) = cluster() else { return };
    let database = fresh_schema("read_only_db");
    let mut admin = cluster.client();
    admin
        .batch_execute(&format!("CREATE DATABASE {database}"))
        .unwrap();
    let conninfo = cluster
        .conninfo()
        .replace("dbname=postgres", &format!("dbname={database}"));
    let task = PgStore::builder(&conninfo)
        .instance_id("a")
        .open()
        .unwrap()
        .create(NewTask::new())
        .unwrap();
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {database} SET default_transaction_read_only = on"
        ))
        .unwrap();
    let store = PgStore::builder(&conninfo).instance_id("a").open().unwrap();
    let plainly = |what: &str, said: taskstore::Result<String>, op: &str, id: &str| {
        let e = said.expect_err(what);
        let said = e.to_string();
        assert!(
            said.contains("the database is read-only")
                && said.contains("SQLSTATE 25006")
                && said.contains(op)
                && said.contains(id)
                && !said.contains("cannot execute SELECT"),
            "{what}: {said}"
        );
    };
    let new_id = TaskId::parse("made-on-a-read-only-database").unwrap();
    plainly(
        "create",
        store
            .create(NewTask::new().id(new_id.clone()))
            .map(|t| t.id.to_string()),
        "insert task",
        new_id.as_str(),
    );
    plainly(
        "update",
        store
            .update(&task.id, TaskUpdate::new().status_message("x"))
            .map(|t| format!("{t:?}")),
        "replace task",
        task.id.as_str(),
    );
    plainly(
        "complete",
        store.complete(&task.id, json!(1)).map(|t| format!("{t:?}")),
        "replace task",
        task.id.as_str(),
    );
    assert_eq!(store.get(&task.id).unwrap(), Some(task));
}

/// A server that ends a session on any error (`exit_on_error`, set here
/// by the connection string, as a role or database setting would) ends
/// none of the store's: a create refused at the cap (a statement the store
/// fails on purpose) and a write the server refused leave the connection
/// as it was. (Each refusal was a `FATAL`: the session ended, the next
/// call made a new connection, and a refused write was taken for one whose
/// reply was lost.)
#[test]
fn a_server_that_ends_a_session_on_any_error_ends_none_of_the_stores() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("exit_on_error");
    let application = "exit_on_error";
    let store = PgStore::builder(format!(
        "{} application_name={application} options='-c exit_on_error=on'",
        cluster.conninfo()
    ))
    .schema(&schema)
    .instance_id("a")
    .pool_size(1)
    .change_notices(false)
    .max_active(1)
    .open()
    .unwrap();
    let pid = || -> i32 {
        cluster
            .client()
            .query_one(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
                &[&application],
            )
            .unwrap()
            .get(0)
    };
    let first = store.create(NewTask::new()).unwrap();
    let before = pid();
    let refused = store.create(NewTask::new());
    assert!(
        matches!(refused, Err(Error::TooManyActive { .. })),
        "{refused:?}"
    );
    assert_eq!(store.get(&first.id).unwrap(), Some(first.clone()));
    assert_eq!(pid(), before, "the refused create ended the session");
    refuse_every(cluster, &schema, "UPDATE");
    let e = store.complete(&first.id, json!(1)).unwrap_err();
    assert!(
        e.to_string().contains("ERROR") && e.to_string().contains(first.id.as_str()),
        "{e}"
    );
    assert_eq!(pid(), before, "the refused write ended the session");
    assert_eq!(store.get(&first.id).unwrap(), Some(first));
}

/// A pooled connection the server ended while it sat idle (its
/// `idle_session_timeout`, a role's or database's setting, here the
/// connection string's; an administrator's `pg_terminate_backend`) is seen
/// ended before a call takes it, and replaced: the call succeeds (for a
/// connection idle 100 ms or more, `pool::LOOK_AFTER`). (It was
/// not: the pool's check polled the connection without reading from it,
/// and the call failed, "terminating connection due to idle-session
/// timeout", once per pooled connection.)
#[test]
fn a_call_after_the_server_ended_an_idle_connection_succeeds() {
    let Some(cluster) = cluster() else { return };
    for timeout in [true, false] {
        let schema = fresh_schema("ended_idle");
        let application = schema.clone();
        let mut conninfo = format!("{} application_name={application}", cluster.conninfo());
        if timeout {
            conninfo.push_str(" options='-c idle_session_timeout=300ms'");
        }
        let store = PgStore::builder(conninfo)
            .schema(&schema)
            .time_source(TimeSource::Clock)
            .change_notices(false)
            .open()
            .unwrap();
        let task = store.create(NewTask::new()).unwrap();
        let mut watcher = cluster.client();
        if timeout {
            wait_until("the server to end the store's idle sessions", || {
                connected(&mut watcher, &application) == 0
            });
        } else {
            // Idle a while, as a restart or an administrator meets them (a
            // connection given back moments before is not looked at).
            std::thread::sleep(Duration::from_millis(200));
            end_sessions(&mut watcher, &application);
        }
        let read = store.get(&task.id);
        assert!(
            matches!(&read, Ok(Some(read)) if *read == task),
            "timeout {timeout}: {read:?}"
        );
    }
}

/// A store on the fresh schema `name` whose connections give the schema
/// as their application name (what [`end_sessions`] ends), with `pool`
/// connections and no change feed; and that name.
pub(super) fn named_store(cluster: &Cluster, name: &str, pool: usize) -> (PgStore, String) {
    let schema = fresh_schema(name);
    let store = PgStore::builder(format!("{} application_name={schema}", cluster.conninfo()))
        .schema(&schema)
        .time_source(TimeSource::Clock)
        .change_notices(false)
        .pool_size(pool)
        .open()
        .unwrap();
    (store, schema)
}

/// Ends every session of `application` (`pg_terminate_backend`, as an
/// administrator or a restart would), and waits until the server has.
pub(super) fn end_sessions(watcher: &mut postgres::Client, application: &str) {
    watcher
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = $1",
            &[&application],
        )
        .unwrap();
    wait_until("the server to end the store's sessions", || {
        connected(watcher, application) == 0
    });
}

/// A read on a pooled connection the server ended a moment after its last
/// use (a restart, a failover, an administrator's `pg_terminate_backend`:
/// given back under 100 ms before, it is not looked at when taken) is made
/// again on another connection: a `get`, a `get_all` and a listing each
/// answer. (Each failed, "connection closed", once per pooled connection,
/// and an MCP client's `tasks/get` in a database's failover answered
/// `-32603`.) Writes: `a_write_on_a_connection_the_server_ended_a_moment_ago_succeeds`.
#[test]
fn a_read_on_a_connection_the_server_ended_a_moment_ago_is_made_again() {
    let Some(cluster) = cluster() else { return };
    let (store, application) = named_store(cluster, "ended_moment_ago", 1);
    let task = store.create(NewTask::new()).unwrap();
    let mut watcher = cluster.client();
    end_sessions(&mut watcher, &application);
    let read = store.get(&task.id);
    assert!(matches!(&read, Ok(Some(t)) if *t == task), "get: {read:?}");
    end_sessions(&mut watcher, &application);
    let all = store.get_all(std::slice::from_ref(&task.id));
    assert!(
        matches!(all.as_slice(), [Ok(Some(t))] if *t == task),
        "get_all: {all:?}"
    );
    end_sessions(&mut watcher, &application);
    let listed = store.list(&ListQuery::active());
    assert!(
        matches!(&listed, Ok(page) if page.tasks == [task.clone()]),
        "list: {listed:?}"
    );
}

/// A write on a pooled connection the server ended a moment after its
/// last use (a restart, a failover, an administrator's
/// `pg_terminate_backend`: given back under 100 ms before, it is not
/// looked at when taken) succeeds: an update, a completion, a
/// cancellation, a create and a delete each answer, and are stored once.
/// A statement whose preparation failed so (the first of its kind on the
/// connection: the update, the create) was never sent, and is made again
/// on another connection; a conditional write sent (the completion, the
/// cancellation, the second delete) that failed with the server's `FATAL`
/// reply, and reads its task back as the version it was conditioned on,
/// changed nothing and never will, and is made again once. (Each failed, a `FATAL` `57P01`,
/// once per pooled connection: an MCP client's `tasks/cancel` in a
/// database's failover answered `-32603`.)
#[test]
fn a_write_on_a_connection_the_server_ended_a_moment_ago_succeeds() {
    let Some(cluster) = cluster() else { return };
    let (store, application) = named_store(cluster, "write_ended_moment_ago", 1);
    let mut watcher = cluster.client();
    let mut end_the_connection = || end_sessions(&mut watcher, &application);
    let task = store.create(NewTask::new()).unwrap();
    let other = store.create(NewTask::new()).unwrap();
    end_the_connection();
    let updated = store.update(&task.id, TaskUpdate::new().status_message("half way"));
    let Ok(Transition::Applied(updated)) = updated else {
        panic!("update: {updated:?}");
    };
    assert_eq!(updated.revision, task.revision + 1, "written once");
    end_the_connection();
    let completed = store.complete(&task.id, json!("done"));
    assert!(
        matches!(&completed, Ok(Transition::Applied(t)) if t.revision == task.revision + 2),
        "complete: {completed:?}"
    );
    end_the_connection();
    let cancelled = store.cancel(&other.id, None);
    assert!(
        matches!(&cancelled, Ok(Transition::Applied(t)) if t.status == TaskStatus::Cancelled),
        "cancel: {cancelled:?}"
    );
    end_the_connection();
    let created = store.create(NewTask::new());
    assert!(created.is_ok(), "create: {created:?}");
    let created = created.unwrap();
    assert_eq!(store.get(&created.id).unwrap(), Some(created.clone()));
    // A delete, its statement prepared on the connection (by a first
    // delete), so sent on the ended one.
    assert!(store.delete(&other.id).unwrap());
    end_the_connection();
    let deleted = store.delete(&created.id);
    assert!(matches!(deleted, Ok(true)), "delete: {deleted:?}");
    assert_eq!(store.get(&created.id).unwrap(), None);
    assert_eq!(
        store.get(&task.id).unwrap().map(|t| (t.status, t.revision)),
        Some((TaskStatus::Completed, task.revision + 2))
    );
}

/// The same with two pooled connections the server ended at once (a
/// restart ends them all): the read made again does not take the other
/// ended one, since a connection given back broken has the pool look at
/// every idle one when next taken, however briefly it sat. (Made again on
/// it, the read failed as well.)
#[test]
fn a_read_made_again_meets_no_other_connection_the_server_ended() {
    let Some(cluster) = cluster() else { return };
    let (store, schema) = named_store(cluster, "ended_both", 2);
    let application = schema.clone();
    let task = store.create(NewTask::new()).unwrap();
    let mut watcher = cluster.client();
    // Two reads at once, held on a lock, leave two connections idle.
    let (mut holder, holder_pid) = holding(
        cluster,
        &format!("LOCK TABLE {schema}.tasks IN ACCESS EXCLUSIVE MODE"),
    );
    std::thread::scope(|s| {
        let reads: Vec<_> = (0..2).map(|_| s.spawn(|| store.get(&task.id))).collect();
        wait_until("both reads to wait on the lock", || {
            blocked_by(&mut watcher, &application, holder_pid) == 2
        });
        holder.batch_execute("ROLLBACK").unwrap();
        for read in reads {
            assert_eq!(read.join().unwrap().unwrap().as_ref(), Some(&task));
        }
    });
    assert_eq!(connected(&mut watcher, &application), 2, "two connections");
    end_sessions(&mut watcher, &application);
    let read = store.get(&task.id);
    assert!(matches!(&read, Ok(Some(t)) if *t == task), "get: {read:?}");
}

/// A server that takes connections and never answers them (stopped, a
/// paused VM): the driver's `connect_timeout` bounds only the socket's
/// connect, so a feed's wait that reconnected, and an open, waited for as
/// long as it hung (a probe's wait of 100 ms took 30 s, until the server
/// went on). A feed's wait now returns `Missed` within its timeout and
/// goes on with the connect under way at the next, and a connect of the
/// pool gives up after `connect_timeout`, saying why; both work again
/// once the server answers.
#[test]
fn a_server_that_takes_connections_and_never_answers_holds_no_wait_past_its_time() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("hung_server");
    let writer = open(cluster, &schema, "writer");
    let proxy = pg_cluster::LosesAReply::start(cluster);
    let conninfo = format!("{} connect_timeout=1", proxy.conninfo());
    let store = PgStore::builder(&conninfo)
        .schema(&schema)
        .instance_id("reader")
        .open()
        .unwrap();
    let mut feed = store.changes().expect("a PgStore has a change feed");
    proxy.hang(true);
    let (feed, waited) = returns("a feed's wait on a hung server", move || {
        let waited = feed.wait(Duration::from_millis(100));
        (feed, waited)
    });
    assert!(matches!(waited, taskstore::Changes::Missed), "{waited:?}");
    let opened = returns("an open on a hung server", move || {
        PgStore::builder(&conninfo)
            .schema(&schema)
            .instance_id("late")
            .open()
            .map(drop)
    });
    let message = opened.expect_err("the server never answered").to_string();
    assert!(message.contains("start-up"), "{message}");
    proxy.hang(false);
    // The feed's connect, held until now, goes on: it listens, says what
    // it may have missed, then names what is written.
    let mut feed = feed;
    let mut named = false;
    for _ in 0..200 {
        let task = writer.create(NewTask::new()).unwrap();
        if let taskstore::Changes::Tasks(ids) = feed.wait(Duration::from_millis(100)) {
            named = ids.contains(&task.id);
            if named {
                break;
            }
        }
    }
    assert!(
        named,
        "the feed never named a task once the server answered"
    );
}

/// A connection string that lists a standby host first: the driver tries
/// each host for `connect_timeout`, so a first host that never answers the
/// socket's connect (its listen queue full: the SYN is dropped) is passed
/// over for the second. The store gave the whole connect one
/// `connect_timeout`, and failed over to nothing (the review's probe).
#[test]
fn a_connect_goes_on_to_the_next_host_when_the_first_never_answers() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("failover");
    drop(open(cluster, &schema, "maker"));
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    // Its queue filled, never accepted: later connects get no answer.
    let mut queued = Vec::new();
    let full = loop {
        match std::net::TcpStream::connect_timeout(
            &silent.local_addr().unwrap(),
            Duration::from_millis(200),
        ) {
            Ok(stream) => queued.push(stream),
            Err(_) => break true,
        }
        if queued.len() > 4_096 {
            break false;
        }
    };
    assert!(full, "the listen queue never filled");
    let socket_dir = cluster
        .conninfo()
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("host=").map(str::to_owned))
        .unwrap();
    let conninfo = format!(
        "host=127.0.0.1,{socket_dir} port={port},5432 user=postgres dbname=postgres connect_timeout=1"
    );
    let store = returns("an open with a silent first host", move || {
        PgStore::builder(&conninfo)
            .schema(&schema)
            .instance_id("standby")
            .open()
    })
    .unwrap_or_else(|e| panic!("the second host was not tried: {e}"));
    store.create(NewTask::new()).unwrap();
    drop(queued);
}

/// A load of several tasks in one statement (`PgBackend::load_all`: a
/// `get_all`, a renewal pass) whose connection is cut before its reply,
/// the server out of reach from then on, answers every id, in order, with
/// an error naming the load and that task (a load that fails is its
/// task's error, as `Backend::load_all` says: not "no such task", which
/// a renewal pass would take for a task gone), panics nowhere, changes
/// nothing stored, and once the server answers again the same calls on
/// the same handle answer every id.
#[test]
fn a_load_of_many_tasks_cut_off_in_an_outage_fails_each_and_the_next_succeeds() {
    let Some(cluster) = cluster() else { return };
    let (schema, proxy, s) = behind_a_proxy(cluster, "load_all_outage");
    let tasks: Vec<Task> = (0..3).map(|_| s.create(NewTask::new()).unwrap()).collect();
    let missing = TaskId::new();
    let ids = [
        tasks[0].id.clone(),
        missing.clone(),
        tasks[1].id.clone(),
        tasks[2].id.clone(),
    ];
    let other = open(cluster, &schema, "other");
    for (n, call) in ["get_all", "renew_leases_of"].into_iter().enumerate() {
        // The one statement that names two of the tasks is the load.
        proxy.arm(&[ids[0].as_str(), ids[2].as_str()]);
        proxy.refuse_from_the_cut();
        let answers: Vec<Result<String, Error>> = match call {
            "get_all" => s
                .get_all(&ids)
                .into_iter()
                .map(|a| a.map(|t| format!("{t:?}")))
                .collect(),
            _ => s
                .renew_leases_of(&ids)
                .into_iter()
                .map(|a| a.map(|t| format!("{t:?}")))
                .collect(),
        };
        assert_eq!(proxy.cuts(), n + 1, "{call}: the load's reply was lost");
        assert_eq!(answers.len(), ids.len(), "{call}");
        for (id, answer) in ids.iter().zip(&answers) {
            match answer {
                Err(e @ Error::Backend { op, .. }) => assert!(
                    op.starts_with(&format!("load task {id} ")),
                    "{call}, task {id}: the error names another operation or task: {e}"
                ),
                other => panic!("{call}, task {id}: {other:?} while the server is out of reach"),
            }
        }
        proxy.refuse(false);
        for task in &tasks {
            assert_eq!(
                other.get(&task.id).unwrap().as_ref(),
                Some(task),
                "{call}: task {} changed by a call that failed",
                task.id
            );
        }
    }
    let got: Vec<Option<Task>> = s
        .get_all(&ids)
        .into_iter()
        .map(|a| a.unwrap_or_else(|e| panic!("get_all once the server answers: {e}")))
        .collect();
    let want = [Some(&tasks[0]), None, Some(&tasks[1]), Some(&tasks[2])];
    assert_eq!(got.iter().map(Option::as_ref).collect::<Vec<_>>(), want);
    let renewed = s.renew_leases_of(&ids);
    for (id, answer) in ids.iter().zip(renewed) {
        match answer {
            Ok(Transition::Applied(task)) if *id != missing => assert_eq!(task.revision, 2),
            Err(Error::NotFound { id: gone }) if *id == missing => assert_eq!(gone, missing),
            other => panic!("renewal of {id} once the server answers: {other:?}"),
        }
    }
}

/// A store that cannot reach its server says where it tried: the host (a
/// socket directory here), the port, the database and the user, never the
/// password. (It said "connect (opening schema taskstore): error
/// connecting to server: No such file or directory", naming none of
/// them.)
#[test]
fn a_connection_that_fails_names_the_server_it_tried() {
    let dir = tempfile::tempdir().unwrap();
    let socket_dir = dir.path().join("no-server-here");
    let Err(refused) = PgStore::builder(format!(
        "host={} port=5999 user=someone dbname=somedb password=secret connect_timeout=5",
        socket_dir.display()
    ))
    .open() else {
        panic!("no server there, yet it opened");
    };
    let message = refused.to_string();
    for named in [
        &*socket_dir.display().to_string(),
        "5999",
        "somedb",
        "someone",
    ] {
        assert!(message.contains(named), "{named} in {message}");
    }
    assert!(!message.contains("secret"), "{message}");
    // An address given for the host is where the connection goes: named.
    let Err(refused) = PgStore::builder(
        "host=db.invalid hostaddr=127.0.0.1 port=1 user=someone dbname=somedb connect_timeout=5",
    )
    .open() else {
        panic!("nothing listens on port 1, yet it opened");
    };
    let message = refused.to_string();
    assert!(
        message.contains("db.invalid") && message.contains("127.0.0.1"),
        "{message}"
    );
}

/// A claim whose batch statement the server ended while it ran (an
/// administrator's `pg_terminate_backend`: a `FATAL` reply, the
/// connection closed after it), then wrote each orphan on its own, claims
/// every one of them: the connection the server ended is not handed out
/// again. (It went back to the pool, not yet seen closed, and the next
/// write took it: one orphan of the batch failed, "connection reset by
/// peer", with the server up, its claim disowned and left to lapse.)
#[test]
fn a_connection_the_server_ended_mid_statement_is_not_used_again() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("ended_mid_batch");
    let application = schema.clone();
    let dead = PgStore::builder(cluster.conninfo())
        .schema(&schema)
        .instance_id("dead")
        .lease(Duration::from_millis(100))
        .open()
        .unwrap();
    let orphans: Vec<Task> = (0..20)
        .map(|n| {
            dead.create(NewTask::new().resumable("k", json!(n)))
                .unwrap()
        })
        .collect();
    let heir = PgStore::builder(format!(
        "{} application_name={application}",
        cluster.conninfo()
    ))
    .schema(&schema)
    .instance_id("heir")
    .open()
    .unwrap();
    let lapsed = orphans.iter().filter_map(|t| t.lease_expires_at).max();
    wait_until("the dead owner's leases to lapse", || {
        Some(heir.now()) > lapsed
    });
    // The batch waits on the table's lock until the server ends it.
    let (mut holder, holder_pid) =
        holding(cluster, &format!("LOCK TABLE {schema}.tasks IN SHARE MODE"));
    let claimed = std::thread::scope(|s| {
        let claim = s.spawn(|| heir.claim(&["k"]));
        let mut client = cluster.client();
        wait_until("the claim's batch to wait on the lock", || {
            blocked_by(&mut client, &application, holder_pid) == 1
        });
        client
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE application_name = $1 AND cardinality(pg_blocking_pids(pid)) > 0",
                &[&application],
            )
            .unwrap();
        holder.batch_execute("ROLLBACK").unwrap();
        claim.join().unwrap()
    })
    .unwrap();
    assert!(claimed.missed.is_empty(), "{:?}", claimed.missed);
    let mut ids: Vec<&TaskId> = claimed.tasks.iter().map(|t| &t.id).collect();
    ids.sort();
    let mut want: Vec<&TaskId> = orphans.iter().map(|t| &t.id).collect();
    want.sort();
    assert_eq!(ids, want, "every orphan claimed, each once");
    for task in &orphans {
        let stored = dead.get(&task.id).unwrap().unwrap();
        assert_eq!(
            (stored.owner.as_deref(), stored.epoch),
            (Some("heir"), 2),
            "{}",
            task.id
        );
    }
}
