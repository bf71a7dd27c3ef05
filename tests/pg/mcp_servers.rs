//! `examples/mcp_server.rs` instances over one database, driven by `rmcp`'s
//! client through the helpers `tests/mcp.rs` and `tests/mcp_resume.rs` use
//! over one directory (`tests/mcp_client/`).

use rmcp::model::{ErrorCode, TaskPayload, TaskStatus};
use serde_json::{Value, json};
use taskstore::{PgStore, TaskId, TaskStore};

use super::mcp_client::{Launch, assert_resumed_once, checkpoint, none_reach, poll, store_dir};
use super::{Cluster, cluster, fresh_schema, open};

/// The lease of an instance the test kills: short, so that its tasks
/// are orphaned soon.
const LEASE_MS: u64 = 1_000;
/// The lease of an instance that lives on: long, so that a stalled
/// machine cannot let a task it runs lapse and another instance reap or
/// claim it meanwhile (`mcp_resume.rs` says more).
const SURVIVOR_LEASE_MS: u64 = 10_000;

/// The task as stored, read through a handle of the test's own (it
/// owns no task), in the JSON shape of a task file's `task`. (A
/// `PgStore` call blocks: off the async worker.)
fn stored(observer: &PgStore, id: &str) -> Option<Value> {
    let task = tokio::task::block_in_place(|| {
        observer
            .get(&TaskId::parse(id).expect("a task id"))
            .expect("read the task")
    });
    task.map(|task| serde_json::to_value(task).expect("a task as JSON"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_over_one_database_answer_cancel_and_reap_for_each_other() {
    let Some(cluster) = cluster() else { return };
    let (conninfo, schema) = (cluster.conninfo(), fresh_schema("mcp"));
    let (_root, dir) = store_dir();
    let launch = |name: &str, lease_ms: u64| {
        Launch::new(&dir, name)
            .lease_ms(lease_ms)
            .pg(&conninfo, &schema)
    };
    // A keeps the task B cancels until it sees the cancel, then is
    // killed: a lease of 3 s, renewed every 50 ms tick past a third of
    // it, leaves 2 s of stall before B's polls could reap it.
    let a = launch("A", 3_000)
        .env("TASKSTORE_MCP_WATCH_MS", 50)
        .start()
        .await;
    let b = launch("B", SURVIVOR_LEASE_MS).start().await;
    let cancelled = a.call_as_task(json!({"ms": 600_000})).await;
    let orphaned = a.call_as_task(json!({"ms": 600_000})).await;
    let (cancelled, orphaned) = (cancelled.task.task_id, orphaned.task.task_id);
    // Created on A, answered by B at once.
    assert_eq!(
        b.get(&cancelled).await.unwrap().status(),
        TaskStatus::Working
    );
    b.cancel(&cancelled).await.expect("tasks/cancel");
    let from_b = b.settled(&cancelled).await;
    assert_eq!(from_b.status(), TaskStatus::Cancelled);
    // Only the operation writes `cancelled`: it saw the cancel, in A.
    assert_eq!(
        from_b.task.status_message.as_deref(),
        Some("cancel observed by instance A")
    );
    assert_eq!(a.get(&cancelled).await.unwrap(), from_b);
    // A dies; B reports its running task failed, orphaned, never unknown.
    a.kill_and_wait().await;
    let orphan = b.settled(&orphaned).await;
    let TaskPayload::Failed { error } = &orphan.payload else {
        panic!("expected failed, got {orphan:?}")
    };
    assert_eq!(error["code"], ErrorCode::INTERNAL_ERROR.0);
    assert_eq!(error["data"]["code"], "orphaned");
    assert_eq!(error["data"]["owner"], "A");
    b.stop().await;
}

/// `mcp_resume::a_killed_servers_task_is_resumed_from_its_checkpoint_exactly_once`,
/// over PostgreSQL: every server is a process of its own with its own
/// connections to the database (all on this one host).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_servers_task_is_resumed_from_its_checkpoint_exactly_once() {
    let Some(cluster) = cluster() else { return };
    let (conninfo, schema) = (cluster.conninfo(), fresh_schema("resume"));
    let (_root, dir) = store_dir();
    let launch = |name: &str, lease_ms: u64| {
        Launch::new(&dir, name)
            .lease_ms(lease_ms)
            .pg(&conninfo, &schema)
    };
    let a = launch("A", LEASE_MS).start().await;
    let observer = tokio::task::block_in_place(|| open(cluster, &schema, "observer"));
    let created = a
        .call_as_task(json!({"ms": 3_000, "step_ms": 100, "text": "kept", "resumable": true}))
        .await;
    let id = created.task.task_id.clone();
    poll("a checkpoint at 500 ms or more", || {
        stored(&observer, &id)
            .and_then(|t| checkpoint(&t))
            .filter(|at| *at >= 500)
    })
    .await;
    a.kill_and_wait().await;
    let at_kill = checkpoint(&stored(&observer, &id).unwrap()).unwrap();

    // The same instance id restarted, and another instance: both resume
    // "slow", exactly one of them claims the task.
    let again = launch("A", SURVIVOR_LEASE_MS).start().await;
    let b = launch("B", SURVIVOR_LEASE_MS).start().await;
    assert_resumed_once(again, b, &id, at_kill, || stored(&observer, &id).unwrap()).await;
}

/// A database of the test's own on the cluster (so that what the test
/// does to it, read-only sessions or connections refused, touches no other
/// test), its connection string, and a superuser's client to change it.
struct OwnDatabase {
    name: String,
    conninfo: String,
    admin: Option<postgres::Client>,
}

impl OwnDatabase {
    /// A new database named from `prefix` (made off the async workers).
    fn new(cluster: &Cluster, prefix: &str) -> OwnDatabase {
        let name = fresh_schema(prefix);
        let mut own = OwnDatabase {
            conninfo: cluster
                .conninfo()
                .replace("dbname=postgres", &format!("dbname={name}")),
            admin: Some(tokio::task::block_in_place(|| cluster.client())),
            name,
        };
        own.says(&format!("CREATE DATABASE {}", own.name));
        own
    }

    /// Runs `sql` as the superuser (a synchronous client, off the async
    /// workers).
    fn says(&mut self, sql: &str) {
        let admin = self.admin.as_mut().expect("the client");
        tokio::task::block_in_place(|| admin.batch_execute(sql).unwrap());
    }
}

impl Drop for OwnDatabase {
    /// A synchronous client is dropped off the async workers.
    fn drop(&mut self) {
        let admin = self.admin.take();
        tokio::task::block_in_place(move || drop(admin));
    }
}

/// A checkpoint the database could not save (its sessions ended and new
/// ones read-only a moment: an administrator, a failover to a standby)
/// skips that checkpoint, not the work: the task goes on and completes.
/// (The example failed the task at the first checkpoint that failed: a
/// moment's outage of the database failed every resumable task running.)
/// The database is the test's own, so that making it read-only touches no
/// other test; ending the sessions alone no longer fails a checkpoint,
/// which is made again on another connection
/// (`pg::a_write_on_a_connection_the_server_ended_a_moment_ago_succeeds`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_the_database_could_not_save_fails_no_task() {
    let Some(cluster) = cluster() else { return };
    let mut own = OwnDatabase::new(cluster, "checkpoint_lost");
    let (database, conninfo) = (own.name.clone(), own.conninfo.clone());
    let (_root, dir) = store_dir();
    let a = Launch::new(&dir, "A")
        .lease_ms(SURVIVOR_LEASE_MS)
        .pg(&conninfo, "taskstore")
        .start()
        .await;
    let created = a
        .call_as_task(json!({"ms": 4_000, "step_ms": 50, "text": "kept", "resumable": true}))
        .await;
    let id = created.task.task_id.clone();
    // New sessions read-only, and the instance's ended until a checkpoint
    // is refused on one; then writable again, and ended once more.
    let read_only =
        |on: &str| format!("ALTER DATABASE {database} SET default_transaction_read_only = {on}");
    let end_sessions = format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = '{database}' AND pid <> pg_backend_pid()"
    );
    own.says(&read_only("on"));
    let said = poll("a checkpoint refused by a read-only session", || {
        own.says(&end_sessions);
        let log = a.stderr();
        log.contains(&format!("checkpoint of task {id}"))
            .then_some(log)
    })
    .await;
    own.says(&read_only("off"));
    own.says(&end_sessions);
    drop(own);
    let done = a.settled(&id).await;
    assert_eq!(done.status(), TaskStatus::Completed, "{said}");
    a.stop().await;
}

/// Two servers over one database, each serving sessions that name their
/// principal (`TASKSTORE_MCP_SOCKET`): Alice's task, made at A, is unknown
/// to Bob at A and at B, reached by Alice at B, and stored bound to her
/// (`mcp.principal`), as over one directory
/// (`mcp_principals::a_task_stays_its_principals_at_every_instance_and_through_a_resume`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_is_its_principals_alone_at_every_server_over_one_database() {
    let Some(cluster) = cluster() else { return };
    let (conninfo, schema) = (cluster.conninfo(), fresh_schema("mcp"));
    let (root, dir) = store_dir();
    let launch = |name: &str| {
        Launch::new(&dir, name)
            .lease_ms(SURVIVOR_LEASE_MS)
            .socket(&root.path().join(format!("{name}.sock")))
            .pg(&conninfo, &schema)
    };
    let (a, b) = (launch("A").start().await, launch("B").start().await);
    let alice_at_a = a.connect(Some("alice")).await;
    let (alice, bob) = (b.connect(Some("alice")).await, b.connect(Some("bob")).await);
    let bob_at_a = a.connect(Some("bob")).await;
    let created = alice_at_a.call_as_task(json!({"ms": 600_000})).await;
    let id = created.task.task_id.as_str();
    assert_eq!(alice.get(id).await.unwrap().status(), TaskStatus::Working);
    none_reach(&bob, id).await;
    none_reach(&bob_at_a, id).await;
    let observer = tokio::task::block_in_place(|| open(cluster, &schema, "observer"));
    let task = stored(&observer, id).expect("stored");
    assert_eq!(task["metadata"]["mcp.principal"], "alice");
    assert_eq!(task["metadata"].get("mcp.cancelRequested"), None);
    alice.cancel(id).await.expect("Alice cancels her task at B");
    assert_eq!(alice.settled(id).await.status(), TaskStatus::Cancelled);
    for session in [alice_at_a, alice, bob, bob_at_a] {
        session.close().await;
    }
    a.stop().await;
    b.stop().await;
}

/// Where tasks are bound to principals, a database that cannot be reached
/// (the server's own database refusing connections, its sessions ended:
/// a server down, as the instance sees it) is a failure of the store as a
/// whole, not of one task: Alice's `tasks/get` of her task, Bob's of it,
/// and Alice's of an id that names no task are each answered `-32603`
/// with the cause, never as an unknown id; once the database takes
/// connections again Alice reads her task. (Only a stored task's own
/// failure is answered as an unknown id:
/// `mcp_principals::a_task_whose_file_is_no_task_file_is_answered_as_an_unknown_task`.)
/// The database is the test's own, so that refusing connections touches
/// no other test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_cannot_be_reached_is_an_internal_error_where_tasks_are_bound() {
    let Some(cluster) = cluster() else { return };
    let mut own = OwnDatabase::new(cluster, "bound_outage");
    let (database, conninfo) = (own.name.clone(), own.conninfo.clone());
    let (root, dir) = store_dir();
    let a = Launch::new(&dir, "A")
        .lease_ms(SURVIVOR_LEASE_MS)
        .socket(&root.path().join("a.sock"))
        .pg(&conninfo, "taskstore")
        .start()
        .await;
    let (alice, bob) = (a.connect(Some("alice")).await, a.connect(Some("bob")).await);
    let created = alice.call_as_task(json!({"ms": 600_000})).await;
    let id = created.task.task_id.as_str();
    assert_eq!(alice.get(id).await.unwrap().status(), TaskStatus::Working);

    own.says(&format!(
        "ALTER DATABASE {database} ALLOW_CONNECTIONS false"
    ));
    own.says(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = '{database}' AND pid <> pg_backend_pid()"
    ));
    let nobody = TaskId::new().to_string();
    let mut answers = Vec::new();
    for (session, asked) in [(&alice, id), (&bob, id), (&alice, nobody.as_str())] {
        answers.push((asked.to_owned(), session.get(asked).await));
    }
    // Connections taken again before anything is asserted: a failed
    // assertion leaves no database refusing them.
    own.says(&format!("ALTER DATABASE {database} ALLOW_CONNECTIONS true"));
    drop(own);
    for (asked, answer) in answers {
        let error = answer.expect_err("no database to read");
        assert_eq!(error.code, ErrorCode::INTERNAL_ERROR, "{asked}: {error:?}");
        let cause = error.data.expect("data")["cause"].clone();
        assert!(
            cause
                .as_str()
                .is_some_and(|c| c.starts_with("postgres backend failed to ")),
            "{asked}: {cause}"
        );
    }
    // Read again once a connection is made (the pool's next connect).
    let start = std::time::Instant::now();
    let read = loop {
        match alice.get(id).await {
            Ok(task) => break task,
            Err(error) => assert!(
                start.elapsed() < super::mcp_client::HANG,
                "never read again: {error:?}"
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(read.status(), TaskStatus::Working);
    for session in [alice, bob] {
        session.close().await;
    }
    a.stop().await;
}
