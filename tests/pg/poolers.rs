//! The store behind a real connection pooler, PgBouncer
//! (`tests/common/pgbouncer.rs`): in session mode it works as it does
//! connected straight to the server; in transaction or statement mode,
//! whose connections do not keep a server session, the open is refused,
//! and so is a change feed's connection remade after a reload into it.
//! A port taken before PgBouncer binds it is traded for another.

use super::*;
use pg_cluster::pgbouncer::{PgBouncer, PoolMode};

#[test]
fn a_store_through_pgbouncer_in_session_mode_works() {
    let Some(cluster) = cluster() else { return };
    // Enough server connections for both handles' pools and feed.
    let Some(bouncer) = PgBouncer::start(cluster, PoolMode::Session, 40) else {
        return;
    };
    let schema = fresh_schema("pooler_session");
    let clock = ManualClock::new(time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap());
    let lease = Duration::from_secs(30);
    let open = |instance: &str| {
        on_clock(&bouncer.conninfo(), &schema, instance, &clock)
            .lease(lease)
            .open()
            .unwrap_or_else(|e| panic!("open {instance} through PgBouncer: {e}"))
    };
    let (a, b) = (open("a"), open("b"));
    let mut feed = a.changes().expect("a PgStore has a change feed");
    // The feed listens once a wait times out naming nothing (a wait
    // whose connect is under way, or that has just connected, reports
    // `Missed`).
    wait_until("a's feed to listen", || {
        feed.wait(Duration::from_millis(100)) == taskstore::Changes::Tasks(Vec::new())
    });

    let orphan = b.create(NewTask::new().resumable("k", json!(1))).unwrap();
    let plain = b.create(NewTask::new()).unwrap();
    let mut heard = Vec::new();
    wait_until("a's feed to name b's two tasks", || {
        if let taskstore::Changes::Tasks(ids) = feed.wait(Duration::from_millis(100)) {
            heard.extend(ids);
        }
        heard.contains(&orphan.id) && heard.contains(&plain.id)
    });

    assert!(b.complete(&plain.id, json!("done")).unwrap().is_applied());
    clock.advance(lease);
    let claimed = a.claim(&["k"]).unwrap();
    assert!(claimed.missed.is_empty(), "{:?}", claimed.missed);
    let taken: Vec<&TaskId> = claimed.tasks.iter().map(|t| &t.id).collect();
    assert_eq!(taken, vec![&orphan.id], "a claims b's orphan");
    assert!(
        a.complete(&orphan.id, json!("resumed"))
            .unwrap()
            .is_applied()
    );

    let mut listed: Vec<(TaskId, TaskStatus)> = b
        .list(&ListQuery::all())
        .unwrap()
        .tasks
        .into_iter()
        .map(|t| (t.id, t.status))
        .collect();
    listed.sort_by(|x, y| x.0.cmp(&y.0));
    let mut want = vec![
        (orphan.id.clone(), TaskStatus::Completed),
        (plain.id.clone(), TaskStatus::Completed),
    ];
    want.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(listed, want);
    let stored = b.get(&orphan.id).unwrap().unwrap();
    assert_eq!(
        (stored.owner.as_deref(), stored.result),
        (Some("a"), Some(json!("resumed")))
    );
}

/// The port PgBouncer was given is taken by another listener before it
/// binds it (its pick is free only when picked): it tries another, and
/// its clients reach it there, none of them the other listener. (With one
/// attempt PgBouncer exited, its clients met the other listener, and the
/// start failed after 60 s.)
#[test]
fn a_pgbouncer_whose_port_was_taken_listens_on_another() {
    let Some(cluster) = cluster() else { return };
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held = other.local_addr().unwrap().port();
    // The other listener refuses whatever connects: accepted, then closed.
    let met = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = met.clone();
    let acceptor = other.try_clone().unwrap();
    std::thread::spawn(move || {
        for connection in acceptor.incoming() {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(connection);
        }
    });
    let mut ports =
        std::iter::once(held).chain(std::iter::repeat_with(pg_cluster::pgbouncer::free_port));
    let Some(bouncer) =
        PgBouncer::start_on(cluster, PoolMode::Session, 2, "", || ports.next().unwrap())
    else {
        return;
    };
    assert_ne!(bouncer.port(), held, "PgBouncer listens on the taken port");
    assert!(
        bouncer
            .log()
            .contains(&format!("listening on 127.0.0.1:{}", bouncer.port())),
        "{}",
        bouncer.log()
    );
    let mut client = postgres::Client::connect(&bouncer.conninfo(), postgres::NoTls)
        .unwrap_or_else(|e| panic!("connect through PgBouncer: {e}"));
    let one: i32 = client.query_one("SELECT 1", &[]).unwrap().get(0);
    assert_eq!(one, 1);
    assert_eq!(
        met.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a client met the other listener"
    );
}

/// An open through PgBouncer in `mode` with `server_connections` server
/// connections: refused, with an error that says why and names PgBouncer
/// (its port), never opened.
fn refused_through(mode: PoolMode, server_connections: usize) {
    refused_through_with(mode, server_connections, "", |_| {});
}

/// [`refused_through`], PgBouncer given `settings`, and `before` run
/// before the open.
fn refused_through_with(
    mode: PoolMode,
    server_connections: usize,
    settings: &str,
    before: impl FnOnce(&PgBouncer),
) {
    let Some(cluster) = cluster() else { return };
    let Some(bouncer) = PgBouncer::start_with(cluster, mode, server_connections, settings) else {
        return;
    };
    before(&bouncer);
    let schema = fresh_schema("pooler_refused");
    let opened = PgStore::builder(bouncer.conninfo())
        .schema(&schema)
        .instance_id("a")
        .open();
    let e = match opened {
        Ok(_) => panic!(
            "a store opened through PgBouncer in {mode:?} mode with {server_connections} \
             server connection(s)"
        ),
        Err(e) => e,
    };
    let Error::Backend { backend, op, .. } = &e else {
        panic!("{e:?}")
    };
    let said = e.to_string();
    assert_eq!(*backend, "postgres", "{said}");
    assert!(op.contains(&schema), "{said}");
    assert!(
        said.contains(&format!("host 127.0.0.1 port {}", bouncer.port())),
        "the error names the server it connected to: {said}"
    );
    assert!(
        said.contains("pool_mode = session"),
        "the error says what to do: {said}"
    );
    // Nothing was made.
    let made: bool = cluster
        .client()
        .query_one("SELECT to_regnamespace($1) IS NOT NULL", &[&schema])
        .unwrap()
        .get(0);
    assert!(!made, "the refused open made schema {schema}");
}

/// With one server connection, every transaction of every client runs in
/// the one session: the second connection the open makes shows in the
/// first's.
#[test]
fn an_open_through_pgbouncer_in_transaction_mode_with_one_server_connection_is_refused() {
    refused_through(PoolMode::Transaction, 1);
}

/// With several, PgBouncer hands a client the idle one it has before it
/// opens another: with no other client, the open's two connections run in
/// one session too.
#[test]
fn an_open_through_pgbouncer_in_transaction_mode_with_several_server_connections_is_refused() {
    refused_through(PoolMode::Transaction, 4);
}

#[test]
fn an_open_through_pgbouncer_in_statement_mode_is_refused() {
    refused_through(PoolMode::Statement, 1);
}

/// With `server_round_robin`, PgBouncer hands out its idle server sessions
/// in turn: with two idle, a connection's second transaction runs in the
/// other one. (Were only the first connection's mark read again after the
/// second connection's set-up, the two connections would each have got
/// their own session back, and the open would pass.)
#[test]
fn an_open_through_pgbouncer_in_transaction_mode_handing_out_sessions_in_turn_is_refused() {
    refused_through_with(
        PoolMode::Transaction,
        2,
        "server_round_robin = 1",
        |bouncer| {
            // Two transactions at once make PgBouncer open its second server
            // session; both are idle once they end.
            let mut clients: Vec<postgres::Client> = (0..2)
                .map(|_| postgres::Client::connect(&bouncer.conninfo(), postgres::NoTls).unwrap())
                .collect();
            for client in &mut clients {
                client.batch_execute("BEGIN; SELECT 1").unwrap();
            }
            let mut pids: Vec<i32> = clients.iter_mut().map(backend_pid).collect();
            pids.dedup();
            assert_eq!(pids.len(), 2, "two server sessions");
            for client in &mut clients {
                client.batch_execute("COMMIT").unwrap();
            }
        },
    );
}

/// A change feed's connection lost while PgBouncer, reloaded, runs in
/// transaction mode: the feed's new connection is refused as a pool's is
/// (its waits report `Missed`, with a warning naming PgBouncer and never
/// the password), rather than listening on a server session it does not
/// keep, where it heard nothing and reported every wait as quiet. Back in
/// session mode, the feed listens and hears again.
#[test]
fn a_change_feed_reconnecting_through_pgbouncer_in_transaction_mode_is_refused() {
    let Some(cluster) = cluster() else { return };
    let Some(bouncer) = PgBouncer::start(cluster, PoolMode::Session, 20) else {
        return;
    };
    let schema = fresh_schema("pooler_feed");
    // Trust authentication: the password is never asked for, only kept
    // out of what is logged.
    let password = "feed-secret-4711";
    let a = PgStore::builder(format!("{} password={password}", bouncer.conninfo()))
        .schema(&schema)
        .instance_id("a")
        .open()
        .unwrap_or_else(|e| panic!("open a through PgBouncer in session mode: {e}"));
    // b writes to the server directly: its notices reach the session a's
    // feed listens in, whatever PgBouncer's mode.
    let b = open(cluster, &schema, "b");
    let mut feed = a.changes().expect("a PgStore has a change feed");
    let heard = |feed: &mut taskstore::ChangeFeed, what: &str, id: &TaskId| {
        let mut seen = Vec::new();
        wait_until(what, || {
            if let taskstore::Changes::Tasks(ids) = feed.wait(Duration::from_millis(100)) {
                seen.extend(ids);
            }
            seen.contains(id)
        });
    };
    wait_until("a's feed to listen", || {
        feed.wait(Duration::from_millis(100)) == taskstore::Changes::Tasks(Vec::new())
    });
    let first = b.create(NewTask::new()).unwrap();
    heard(
        &mut feed,
        "a's feed to name b's task, in session mode",
        &first.id,
    );

    bouncer.reload_in(PoolMode::Transaction);
    // The feed's server session ends: PgBouncer closes the feed's
    // connection with it.
    super::feed::end_feed_session(&mut cluster.client(), &schema);
    wait_until("a's feed to report its lost connection", || {
        feed.wait(Duration::from_millis(100)) == taskstore::Changes::Missed
    });
    let unheard = b.create(NewTask::new()).unwrap();
    let logged = common::Logged::default();
    let refusal = || logged.warnings_of("change feed");
    tracing::subscriber::with_default(logged.clone(), || {
        wait_until("a's feed to refuse its connection", || {
            match feed.wait(Duration::from_millis(100)) {
                taskstore::Changes::Missed => !refusal().is_empty(),
                other => panic!(
                    "a's feed, connected again through PgBouncer in transaction mode, \
                     reported {other:?} (b's task {} unnamed), not Missed",
                    unheard.id
                ),
            }
        });
        // And goes on refusing, wait after wait.
        for _ in 0..3 {
            assert_eq!(
                feed.wait(Duration::from_millis(100)),
                taskstore::Changes::Missed
            );
        }
    });
    let warnings = refusal();
    let said = format!("{:?}", warnings[0].fields);
    assert!(
        said.contains(&format!("host 127.0.0.1 port {}", bouncer.port())),
        "the warning names PgBouncer: {said}"
    );
    assert!(
        said.contains("pool_mode = session"),
        "the warning says what to do: {said}"
    );
    assert!(
        !said.contains(password),
        "the warning shows the password: {said}"
    );
    assert_eq!(
        warnings.len(),
        1,
        "warned once, then debug lines: {warnings:?}"
    );

    bouncer.reload_in(PoolMode::Session);
    wait_until("a's feed to listen again, in session mode", || {
        feed.wait(Duration::from_millis(100)) == taskstore::Changes::Tasks(Vec::new())
    });
    let last = b.create(NewTask::new()).unwrap();
    heard(
        &mut feed,
        "a's feed to name b's task, in session mode again",
        &last.id,
    );
}
