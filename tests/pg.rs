//! `PgStore` against a real PostgreSQL: a throwaway cluster started from the
//! system's binaries (`tests/common/pg.rs`), a fresh schema per test. The
//! store's rules through the shared conformance suite, then what only
//! several processes and a real server show: races between processes, a
//! writer killed mid-transaction, a server restart, clocks that disagree,
//! and MCP servers (`examples/mcp_server.rs`) answering for, and resuming,
//! each other's tasks.

#![cfg(all(feature = "postgres", feature = "conformance", unix))]

mod common;
#[path = "common/pg.rs"]
mod pg_cluster;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use taskstore::backend::{Backend, Decide, Insert, Modified, Record, Scan, Scanned, Swap};
use taskstore::conformance::{self, Setup};
use taskstore::{
    Clock, Error, EventLog, ListQuery, ManualClock, NewTask, PgStore, Task, TaskEventKind, TaskId,
    TaskStatus, TaskStore, TaskUpdate, TimeSource, Transition,
};

use common::{Rng, role, spawn, wait_until};
use pg_cluster::{Cluster, counter_and_active, fresh_schema};

/// The shared cluster, or `None` (the test is skipped, said once).
fn cluster() -> Option<&'static Cluster> {
    pg_cluster::shared()
}

/// A handle on `schema` with the defaults and `instance`.
fn open(cluster: &Cluster, schema: &str, instance: &str) -> PgStore {
    PgStore::builder(cluster.conninfo())
        .schema(schema)
        .instance_id(instance)
        .open()
        .unwrap_or_else(|e| panic!("open schema {schema}: {e}"))
}

/// A handle's builder on `schema` through `conninfo`, as `instance`, going
/// by `clock` (`TimeSource::Clock`): the caller adds what else it needs.
fn on_clock(
    conninfo: &str,
    schema: &str,
    instance: &str,
    clock: &ManualClock,
) -> taskstore::PgStoreBuilder {
    PgStore::builder(conninfo)
        .schema(schema)
        .instance_id(instance)
        .time_source(TimeSource::Clock)
        .clock(Arc::new(clock.clone()))
}

#[test]
fn conformance_suite_with_two_handles_per_schema() {
    let Some(cluster) = cluster() else { return };
    conformance::run(|| {
        let schema = fresh_schema("conformance");
        move |setup: &Setup, instance_id: &str| {
            setup
                .configure(PgStore::builder(cluster.conninfo()), instance_id)
                .schema(&schema)
                // The suite drives a `ManualClock`: no correction to the server's.
                .time_source(TimeSource::Clock)
                .open()
                .unwrap()
        }
    });
}

/// A handle decides a change on the version it last wrote and writes only
/// if that is still the one stored (`pg::recent`): whatever another handle
/// did since (an update, a terminal transition, a delete, a new task under
/// the same id) is what the change is decided on.
#[test]
fn a_handle_decides_on_what_another_handle_wrote_since_its_own_last_write() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("guesses");
    let (a, b) = (open(cluster, &schema, "a"), open(cluster, &schema, "b"));

    // Updated by b since a created it: a's update lands on b's version.
    let t = a.create(NewTask::new()).unwrap();
    let _ = b
        .update(&t.id, TaskUpdate::new().metadata("by", "b"))
        .unwrap();
    let mine = a
        .update(&t.id, TaskUpdate::new().metadata("also", "a"))
        .unwrap()
        .into_task();
    assert_eq!(mine.revision, 3);
    assert_eq!(
        (mine.metadata["by"].clone(), mine.metadata["also"].clone()),
        (json!("b"), json!("a"))
    );
    // Finished by b: a's cancel finds it finished.
    let done = b.complete(&t.id, json!("b won")).unwrap().into_task();
    match a.cancel(&t.id, None).unwrap() {
        Transition::AlreadyTerminal(now) => assert_eq!(now, done),
        other => panic!("a cancel after b's complete: {other:?}"),
    }

    // a's last write finished the task; b deletes it and creates another
    // under its id: a's cancel is decided on the new one, not on what a
    // last wrote (which would keep it as finished).
    let u = a.create(NewTask::new()).unwrap();
    let _ = a.complete(&u.id, json!(1)).unwrap();
    assert!(b.delete(&u.id).unwrap());
    let again = b.create(NewTask::new().id(u.id.clone())).unwrap();
    match a.cancel(&u.id, None).unwrap() {
        Transition::Applied(cancelled) => {
            assert_eq!(cancelled.status, TaskStatus::Cancelled);
            assert_eq!(cancelled.created_at, again.created_at);
        }
        other => panic!("a cancel of the new task: {other:?}"),
    }

    // Deleted by b: a's update finds nothing.
    let v = a.create(NewTask::new()).unwrap();
    assert!(b.delete(&v.id).unwrap());
    assert!(matches!(
        a.update(&v.id, TaskUpdate::new().metadata("k", 1)),
        Err(Error::NotFound { .. })
    ));
    assert_eq!(a.get(&v.id).unwrap(), None);
}

#[test]
fn opening_creates_the_schema_once_and_refuses_a_newer_one() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("versions");
    // Eight opens at once on an absent schema: one migration, eight handles.
    let handles: Vec<PgStore> = std::thread::scope(|s| {
        let opens: Vec<_> = (0..8)
            .map(|i| {
                let schema = &schema;
                s.spawn(move || open(cluster, schema, &format!("opener-{i}")))
            })
            .collect();
        opens.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let task = handles[0].create(NewTask::new()).unwrap();
    for h in &handles {
        assert_eq!(h.get(&task.id).unwrap(), Some(task.clone()));
    }
    let mut client = cluster.client();
    let version: i32 = client
        .query_one(&format!("SELECT version FROM {schema}.schema_version"), &[])
        .unwrap()
        .get(0);
    assert_eq!(version, 1);
    client
        .execute(
            &format!("UPDATE {schema}.schema_version SET version = 2"),
            &[],
        )
        .unwrap();
    match PgStore::builder(cluster.conninfo()).schema(&schema).open() {
        Err(Error::UnsupportedFormat {
            path,
            found,
            supported,
        }) => {
            assert_eq!((found, supported), (2, 1));
            assert!(path.to_string_lossy().contains(&schema), "{path:?}");
        }
        other => panic!("a newer schema must be refused, got {other:?}"),
    }
}

/// A schema that holds another tool's tables under the store's names (an
/// application's own `schema_version`, as Flyway kept one, or a `tasks`
/// table) is refused with an error naming the schema and the table, and
/// nothing in it is changed. (The open panicked on the foreign
/// `schema_version`'s text `version` column.)
#[test]
fn a_schema_holding_another_tools_tables_is_refused_by_name() {
    let Some(cluster) = cluster() else { return };
    let mut client = cluster.client();
    let flyway = fresh_schema("foreign_version");
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {flyway};
             CREATE TABLE {flyway}.schema_version (
                 installed_rank integer PRIMARY KEY,
                 version        varchar(50),
                 description    varchar(200) NOT NULL);
             INSERT INTO {flyway}.schema_version VALUES (1, '1', 'init');"
        ))
        .unwrap();
    let tasks = fresh_schema("foreign_tasks");
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {tasks};
             CREATE TABLE {tasks}.tasks (id serial PRIMARY KEY, title text);
             INSERT INTO {tasks}.tasks (title) VALUES ('the application''s');"
        ))
        .unwrap();
    for (schema, table) in [(&flyway, "schema_version"), (&tasks, "tasks")] {
        let opened =
            std::panic::catch_unwind(|| PgStore::builder(cluster.conninfo()).schema(schema).open());
        match opened {
            Ok(Err(e @ Error::InvalidStore { .. })) => {
                let said = e.to_string();
                assert!(
                    said.contains(schema.as_str()) && said.contains(table),
                    "names the schema and the table: {said}"
                );
            }
            Ok(other) => panic!("schema {schema}: expected InvalidStore, got {other:?}"),
            Err(_) => panic!("schema {schema}: the open panicked"),
        }
    }
    let rows: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM {flyway}.schema_version"),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(rows, 1, "left as it was");
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = $1",
            &[&tasks.as_str()],
        )
        .unwrap()
        .get(0);
    assert_eq!(tables, 1, "nothing made beside the application's table");
}

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

#[test]
fn bad_settings_are_refused_before_anything_is_written() {
    let Some(cluster) = cluster() else { return };
    for schema in ["", "Upper", "a;drop table x", "pg_x", &"s".repeat(49)] {
        match PgStore::builder(cluster.conninfo()).schema(schema).open() {
            Err(Error::InvalidConfig {
                field: "schema", ..
            }) => {}
            other => panic!("schema {schema:?} must be refused, got {other:?}"),
        }
    }
    match PgStore::builder("host=/tmp port=notaport").open() {
        Err(Error::InvalidConfig {
            field: "conninfo", ..
        }) => {}
        other => panic!("a bad connection string must be refused, got {other:?}"),
    }
    match PgStore::builder(cluster.conninfo()).pool_size(0).open() {
        Err(Error::InvalidConfig {
            field: "pool_size", ..
        }) => {}
        other => panic!("pool_size(0) must be refused, got {other:?}"),
    }
    match PgStore::builder(cluster.conninfo())
        .pool_wait(Duration::ZERO)
        .open()
    {
        Err(Error::InvalidConfig {
            field: "pool_wait", ..
        }) => {}
        other => panic!("pool_wait(0) must be refused, got {other:?}"),
    }
    let every = Duration::from_micros(999);
    match PgStore::builder(cluster.conninfo())
        .server_clock_refresh(every)
        .open()
    {
        Err(Error::InvalidConfig {
            field: "server_clock_refresh",
            ..
        }) => {}
        other => panic!("a refresh under 1 ms must be refused, got {other:?}"),
    }
    // A database that does not exist: a backend error naming postgres.
    let missing = format!("{} dbname=no_such_db", cluster.conninfo());
    match PgStore::builder(missing).open() {
        Err(
            e @ Error::Backend {
                backend: "postgres",
                ..
            },
        ) => {
            // What the server said, not the client's "db error" alone.
            let said = e.to_string();
            assert!(said.contains("connect"), "{said}");
            assert!(said.contains("\"no_such_db\" does not exist"), "{said}");
        }
        other => panic!("a missing database must be a backend error, got {other:?}"),
    }
    // The settings every store has are checked before anything is made:
    // no schema for a store that was refused.
    let schema = fresh_schema("refused");
    for (field, builder) in [
        (
            "instance_id",
            PgStore::builder(cluster.conninfo()).instance_id(""),
        ),
        (
            "lease",
            PgStore::builder(cluster.conninfo()).lease(Duration::ZERO),
        ),
    ] {
        match builder.schema(schema.clone()).open() {
            Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field} must be refused, got {other:?}"),
        }
    }
    let made: i64 = cluster
        .client()
        .query_one(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1",
            &[&schema],
        )
        .unwrap()
        .get(0);
    assert_eq!(made, 0, "a refused open made no schema");
}

/// A schema named like an SQL keyword (`user`, `order`) passes the name
/// check, so it must work: every statement quotes it. (It failed at open,
/// with a syntax error.)
#[test]
fn a_schema_named_like_a_keyword_works() {
    let Some(cluster) = cluster() else { return };
    for schema in ["user", "order", "left"] {
        let store = PgStore::builder(cluster.conninfo())
            .schema(schema)
            .open()
            .unwrap_or_else(|e| panic!("open schema {schema}: {e}"));
        let task = store.create(NewTask::new()).unwrap();
        assert!(store.complete(&task.id, json!(1)).unwrap().is_applied());
        assert_eq!(store.list(&ListQuery::all()).unwrap().tasks.len(), 1);
        assert!(store.delete(&task.id).unwrap());
        // Opened again: the schema is found current.
        drop(store);
        PgStore::builder(cluster.conninfo())
            .schema(schema)
            .open()
            .unwrap_or_else(|e| panic!("open schema {schema} again: {e}"));
    }
}

#[test]
fn json_is_stored_exactly_as_the_rules_encoded_it() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("exact");
    let store = open(cluster, &schema, "exact");
    let value = json!({"nul": "\u{0}", "big": u64::MAX, "float": 0.300_000_000_000_000_04, "order": {"z": 1, "a": 2}});
    let task = store
        .create(NewTask::new().metadata("v", value.clone()))
        .unwrap();
    let stored: String = cluster
        .client()
        .query_one(
            &format!("SELECT task FROM {schema}.tasks WHERE id = $1"),
            &[&task.id.as_str()],
        )
        .unwrap()
        .get(0);
    assert_eq!(stored, serde_json::to_string(&task).unwrap());
    assert_eq!(store.get(&task.id).unwrap().unwrap().metadata["v"], value);
}

/// Makes the stored rows of `ids` unreadable behind the store's back (a
/// hand edit, or another tool's write).
fn spoil(cluster: &Cluster, schema: &str, ids: &[&TaskId]) {
    for id in ids {
        let spoilt = cluster
            .client()
            .execute(
                &format!("UPDATE {schema}.tasks SET task = '{{}}' WHERE id = $1"),
                &[&id.as_str()],
            )
            .unwrap();
        assert_eq!(spoilt, 1, "{id}");
    }
}

/// `PgBackend::load_all` (one statement for a renewal pass's loads)
/// answers each id as its own `load` does, in order: a task, none for an
/// id no row has, the same task again for an id given twice, and
/// `Error::Corrupt` for an unreadable row, which leaves the others'
/// answers alone.
#[test]
fn loading_many_tasks_at_once_answers_each_as_its_own_load() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("load_all");
    let store = open(cluster, &schema, "load_all");
    let [a, b, bad] = [(); 3].map(|()| store.create(NewTask::new()).unwrap());
    assert!(store.complete(&b.id, json!(1)).unwrap().is_applied());
    spoil(cluster, &schema, &[&bad.id]);
    let ids = [
        a.id.clone(),
        TaskId::new(),
        bad.id.clone(),
        a.id.clone(),
        b.id.clone(),
        bad.id.clone(),
    ];
    let backend = store.backend();
    let answers = backend.load_all(&ids);
    assert_eq!(answers.len(), ids.len());
    for (id, answer) in ids.iter().zip(answers) {
        match (answer, backend.load(id)) {
            (Ok(got), Ok(alone)) => assert_eq!(got, alone, "{id}"),
            (Err(Error::Corrupt { path: got, .. }), Err(Error::Corrupt { path, .. })) => {
                assert_eq!(got, path, "{id}");
            }
            (got, alone) => panic!("{id}: {got:?} loaded together, {alone:?} alone"),
        }
    }
    assert!(backend.load_all(&[]).is_empty());
}

/// A row whose task cannot be decoded is `Error::Corrupt` naming the task
/// (as the file store's undecodable task file is), for a read, a write
/// and a create under its id alike; the other tasks are untouched. (It was
/// `Error::Backend`, "decode task …", which the MCP manager takes for an
/// outage and retries.)
#[test]
fn an_unreadable_row_is_corrupt_naming_the_task_whatever_the_call() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("corrupt_row");
    let store = open(cluster, &schema, "corrupt_row");
    let (bad, good) = (
        store.create(NewTask::new()).unwrap(),
        store.create(NewTask::new()).unwrap(),
    );
    spoil(cluster, &schema, &[&bad.id]);
    let corrupt = |what: &str, got: Result<(), Error>| match got {
        Err(Error::Corrupt { path, reason }) => {
            let path = path.to_string_lossy();
            assert!(
                path.contains(&schema) && path.contains(bad.id.as_str()),
                "{what}: names the schema and the task: {path}"
            );
            assert!(!reason.is_empty(), "{what}");
        }
        other => panic!("{what}: expected Corrupt naming the task, got {other:?}"),
    };
    corrupt("get", store.get(&bad.id).map(drop));
    corrupt("complete", store.complete(&bad.id, json!(1)).map(drop));
    corrupt(
        "update",
        store
            .update(&bad.id, TaskUpdate::new().metadata("k", 1))
            .map(drop),
    );
    // The file store's create under the id of an undecodable file says
    // the same (`bad_input::*`): the id is neither free nor a task.
    corrupt(
        "create under its id",
        store.create(NewTask::new().id(bad.id.clone())).map(drop),
    );
    // Another handle, which holds no guess of the task, reads the same.
    let other = open(cluster, &schema, "corrupt_row_2");
    corrupt("another handle's get", other.get(&bad.id).map(drop));
    assert_eq!(store.get(&good.id).unwrap(), Some(good.clone()));
    assert!(store.complete(&good.id, json!(1)).unwrap().is_applied());
}

/// A create under the id of an unreadable row fails `Corrupt` and leaves
/// nothing to undo: nothing of it was written, so nothing warns that it may
/// have left its task, and no renewal pass tries to remove it. (The undo's
/// removal failed on the same row, and the handle warned and kept the task,
/// read the row again at every renewal pass: one rule with the file store,
/// `faults::a_create_over_an_unreadable_file_leaves_nothing_to_undo`.)
#[test]
fn a_create_over_an_unreadable_row_leaves_nothing_to_undo() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("undo_corrupt");
    let store = open(cluster, &schema, "undo_corrupt");
    let bad = store.create(NewTask::new()).unwrap();
    spoil(cluster, &schema, &[&bad.id]);
    let logged = common::Logged::default();
    let err = tracing::subscriber::with_default(logged.clone(), || {
        let err = store.create(NewTask::new().id(bad.id.clone())).unwrap_err();
        let _ = store.renew_leases();
        err
    });
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    let undo = logged.warnings_of("failed create");
    assert!(undo.is_empty(), "{undo:?}");
}

/// A row whose task still decodes but disagrees with the row's own columns
/// (a hand edit of its revision): a write to it is an error naming the
/// task, not a loop. (The conditional write matched on the columns and
/// retried from the task, which never matched them: an `update` spun for
/// ever, committing thousands of transactions a second.)
#[test]
fn a_row_at_odds_with_its_columns_is_an_error_not_a_loop() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("odds");
    let (a, b) = (open(cluster, &schema, "a"), open(cluster, &schema, "b"));
    let task = a.create(NewTask::new()).unwrap();
    let edited = cluster
        .client()
        .execute(
            &format!(
                "UPDATE {schema}.tasks SET task = replace(task, '\"revision\":1', '\"revision\":5') WHERE id = $1"
            ),
            &[&task.id.as_str()],
        )
        .unwrap();
    assert_eq!(edited, 1);
    let (tx, rx) = std::sync::mpsc::channel();
    let id = task.id.clone();
    std::thread::spawn(move || {
        let _ = tx.send(b.update(&id, TaskUpdate::new().metadata("k", 1)));
    });
    match rx
        .recv_timeout(common::HANG)
        .expect("the update never returned")
    {
        Err(e @ Error::Backend { .. }) => {
            assert!(e.to_string().contains(task.id.as_str()), "{e}")
        }
        other => panic!("expected an error naming the task, got {other:?}"),
    }
}

/// A column whose type a hand edit changed (`ALTER TABLE … ALTER COLUMN …
/// TYPE`) is an error naming the operation, the column and its type, and
/// the task, not a panic: the store reads every column it selects from its
/// tables fallibly. Each change is made before a handle of its own opens,
/// so its statements are prepared over the changed table. (`row.get`
/// panicked in the listing, in `get` and in the sweep's recount.)
#[test]
fn a_column_whose_type_a_hand_edit_changed_is_an_error_not_a_panic() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("retyped");
    // A handle opened before the changes, its `load` prepared.
    let before = open(cluster, &schema, "retyped");
    let task = before.create(NewTask::new()).unwrap();
    assert_eq!(before.get(&task.id).unwrap(), Some(task.clone()));
    let mut client = cluster.client();
    let alter = |client: &mut postgres::Client, table: &str, column: &str, to: &str| {
        client
            .batch_execute(&format!(
                "ALTER TABLE {schema}.{table} ALTER COLUMN {column} TYPE {to} USING {column}::{to}"
            ))
            .unwrap();
    };
    // Each call on a fresh handle, its outcome caught if it panics.
    let call = |what: &str, op: &dyn Fn(&PgStore) -> Result<(), Error>| -> Error {
        let store = open(cluster, &schema, "retyped");
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| op(&store))) {
            Ok(Err(e)) => e,
            Ok(Ok(())) => panic!("{what}: read a column of the wrong type"),
            Err(_) => panic!("{what}: panicked"),
        }
    };
    let says = |e: &Error, parts: &[&str]| {
        assert!(matches!(e, Error::Backend { .. }), "{e:?}");
        let said = e.to_string();
        for part in parts {
            assert!(said.contains(part), "{said:?} does not name {part:?}");
        }
    };

    alter(&mut client, "tasks", "created_at_ns", "text");
    let e = call("a listing", &|s| s.list(&ListQuery::all()).map(drop));
    says(
        &e,
        &[&format!("{schema}.tasks.created_at_ns"), "text", "scan"],
    );
    alter(&mut client, "tasks", "created_at_ns", "bigint");

    alter(&mut client, "tasks", "task", "jsonb");
    let e = call("a get", &|s| s.get(&task.id).map(drop));
    says(
        &e,
        &[&format!("{schema}.tasks.task"), "jsonb", task.id.as_str()],
    );
    let old = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| before.get(&task.id)))
        .expect("a get by a handle opened before the change panicked");
    match old {
        // The server refuses the statement it prepared over the column's
        // old type ("cached plan must not change result type").
        Err(e) => says(&e, &[task.id.as_str()]),
        Ok(read) => panic!("read a column of the wrong type: {read:?}"),
    }
    alter(&mut client, "tasks", "task", "text");

    // (Its check, `active >= 0`, takes a number.)
    alter(&mut client, "counters", "active", "numeric");
    let e = call("a sweep", &|s| s.sweep().map(drop));
    says(
        &e,
        &[&format!("{schema}.counters.active"), "numeric", "count"],
    );
    alter(&mut client, "counters", "active", "bigint");

    // Put back, the store reads as before.
    let store = open(cluster, &schema, "retyped");
    assert_eq!(store.get(&task.id).unwrap(), Some(task.clone()));
    assert_eq!(store.sweep().unwrap().cleaned, 0);
}

/// A row that cannot be read is reported and left out, and the listing goes
/// on past it: a page is short only at the end. (Rows were cut by `LIMIT`
/// before they were read, so a batch that left one out looked like the last,
/// and every task after it went unlisted.)
#[test]
fn unreadable_rows_are_reported_and_every_task_after_them_is_still_listed() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("unreadable");
    let store = open(cluster, &schema, "unreadable");
    for _ in 0..6 {
        store.create(NewTask::new()).unwrap();
    }
    let order: Vec<TaskId> = store
        .list(&ListQuery::all())
        .unwrap()
        .tasks
        .into_iter()
        .map(|t| t.id)
        .collect();
    spoil(cluster, &schema, &[&order[1], &order[2]]);
    let (mut listed, mut skipped) = (Vec::new(), Vec::new());
    let mut cursor: Option<String> = None;
    loop {
        let mut query = ListQuery::all().limit(2);
        if let Some(cursor) = &cursor {
            query = query.after(cursor);
        }
        let page = store.list(&query).unwrap();
        listed.extend(page.tasks.into_iter().map(|t| t.id));
        skipped.extend(page.skipped.into_iter().filter_map(|s| s.id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(
        listed,
        [&order[0], &order[3], &order[4], &order[5]].map(Clone::clone)
    );
    assert_eq!(skipped, [order[1].clone(), order[2].clone()]);
}

/// A sweep's batch that met an unreadable row is not its last: every
/// expired task after it is deleted too, and the row is reported.
#[test]
fn a_sweep_goes_on_past_an_unreadable_row() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("sweep_unreadable");
    let store = open(cluster, &schema, "sweep_unreadable");
    // More than a sweep's batch (1,024), one of the first spoilt.
    let ids: Vec<TaskId> = (0..1_100)
        .map(|_| {
            let task = NewTask::new().ttl(Duration::from_millis(1));
            store.create(task).unwrap().id
        })
        .collect();
    spoil(cluster, &schema, &[&ids[10]]);
    std::thread::sleep(Duration::from_millis(5));
    let swept = store.sweep().unwrap();
    assert_eq!(swept.deleted, ids.len() - 1);
    assert_eq!(
        swept
            .skipped
            .iter()
            .map(|s| s.id.clone())
            .collect::<Vec<_>>(),
        [Some(ids[10].clone())]
    );
    let left: i64 = cluster
        .client()
        .query_one(&format!("SELECT count(*) FROM {schema}.tasks"), &[])
        .unwrap()
        .get(0);
    assert_eq!(left, 1);
}

/// Reading a handle's time does no I/O, even once the server's clock is
/// due to be measured again: an async server (the MCP task manager) reads
/// it on its runtime's threads, where the synchronous client may not run
/// its own runtime (it panicked there, and dropping the connection while
/// unwinding aborted the process). The next operation measures instead.
/// A step of the local wall clock moves the handle's time not at all,
/// before or after the measurement that sees it (a forward step stuck
/// for its whole size: the time was the local clock plus an offset, and a
/// handle's time never goes back).
#[test]
fn reading_the_time_does_no_io_and_the_next_operation_measures_the_clock_again() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("clock_refresh");
    let local = Arc::new(ManualClock::new(time::OffsetDateTime::now_utc()));
    let store = PgStore::builder(cluster.conninfo())
        .schema(&schema)
        .clock(local.clone())
        .server_clock_refresh(Duration::from_millis(1))
        .open()
        .unwrap();
    let measured = store.server_time().unwrap().offset;
    let mut client = cluster.client();
    let near_the_server = |now: time::OffsetDateTime, client: &mut postgres::Client| {
        let off = (now.unix_timestamp_nanos() - server_nanos(client)).abs();
        let off = time::Duration::nanoseconds(off as i64);
        assert!(
            off < time::Duration::seconds(5),
            "{now} is {off} off the server"
        );
    };
    local.advance(Duration::from_secs(600));
    std::thread::sleep(Duration::from_millis(5));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let now = runtime.block_on(async { store.now() });
    assert_eq!(store.server_time().unwrap().offset, measured);
    near_the_server(now, &mut client);
    store.get(&TaskId::new()).unwrap();
    let stepped = store.server_time().unwrap().offset;
    let off = (stepped - (measured - time::Duration::seconds(600))).abs();
    assert!(
        off < time::Duration::seconds(5),
        "{measured} then {stepped}"
    );
    near_the_server(store.now(), &mut client);
}

/// A role named `role` (a fresh name: the cluster may outlive a run) whose
/// transactions default to `level`, and `schema`, made for it. (No right
/// on the database is granted: tests running beside it would race on its
/// row, "tuple concurrently updated".)
fn role_defaulting_to(cluster: &Cluster, role: &str, level: &str, schema: &str) {
    cluster
        .client()
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; \
             ALTER ROLE {role} SET default_transaction_isolation = '{level}'; \
             CREATE SCHEMA {schema} AUTHORIZATION {role}"
        ))
        .unwrap();
}

/// A schema an administrator made for the store's role, which may not
/// create schemas itself, opens: the store creates its tables in it.
/// (`CREATE SCHEMA IF NOT EXISTS` asks for the right to create schemas
/// before it looks whether the schema exists: "permission denied for
/// database".)
#[test]
fn a_role_that_may_not_create_schemas_opens_a_schema_made_for_it() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("made_for");
    let role = format!("{schema}_role");
    cluster
        .client()
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; \
             CREATE SCHEMA {schema} AUTHORIZATION {role}"
        ))
        .unwrap();
    let store = PgStore::builder(format!("{} user={role}", cluster.conninfo()))
        .schema(&schema)
        .open()
        .unwrap_or_else(|e| panic!("open schema {schema} as {role}: {e}"));
    let task = store.create(NewTask::new()).unwrap();
    assert_eq!(store.get(&task.id).unwrap(), Some(task));
    // A second open finds it current.
    drop(store);
    PgStore::builder(format!("{} user={role}", cluster.conninfo()))
        .schema(&schema)
        .open()
        .unwrap();
}

/// The store's writes are written for READ COMMITTED: a write that waited
/// on a row lock checks its condition again on the row as committed, so
/// the second of two racing writers wins or loses by the rules, never by a
/// serialization failure. A database or role that defaults to another
/// level does not change that. (Under `serializable` the waiting write
/// failed: "could not serialize access due to concurrent update".)
#[test]
fn a_role_defaulting_to_serializable_still_decides_races_by_the_rules() {
    let Some(cluster) = cluster() else { return };
    for level in ["serializable", "repeatable read"] {
        let schema = fresh_schema("isolation");
        let role = format!("{schema}_role");
        role_defaulting_to(cluster, &role, level, &schema);
        let application = format!("isolation_{}", role);
        let store = PgStore::builder(format!(
            "{} user={role} application_name={application}",
            cluster.conninfo()
        ))
        .schema(&schema)
        .open()
        .unwrap();
        let task = store.create(NewTask::new()).unwrap();
        // Another writer holds the row, and changes it (a new version of
        // it, the same task) while the store's write waits.
        let mut other = cluster.client();
        let other_pid = backend_pid(&mut other);
        let mut holding = other.transaction().unwrap();
        holding
            .execute(
                &format!("UPDATE {schema}.tasks SET task = task WHERE id = $1"),
                &[&task.id.as_str()],
            )
            .unwrap();
        std::thread::scope(|scope| {
            let completing = scope.spawn(|| store.complete(&task.id, json!("done")));
            let mut watcher = cluster.client();
            wait_until("the complete to wait on the row's holder", || {
                blocked_by(&mut watcher, &application, other_pid) == 1
            });
            holding.commit().unwrap();
            let transition = completing.join().unwrap();
            assert!(
                matches!(transition, Ok(Transition::Applied(_))),
                "{level}: {transition:?}"
            );
        });
    }
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

// ---------------------------------------------------------------------------
// Processes racing: each child is this test binary (`common::spawn`), with
// the connection string and the schema as its arguments.

/// Tasks in the race test.
const TASKS: usize = 1_000;
/// Processes that race.
const RACERS: usize = 4;
/// Updates per process in the lost-update test.
const UPDATES_PER_PROCESS: usize = 250;

fn child_args(
    cluster: &Cluster,
    schema: &str,
    work: &std::path::Path,
    rest: &[String],
) -> Vec<String> {
    let mut args = vec![
        cluster.conninfo(),
        schema.to_owned(),
        work.display().to_string(),
    ];
    args.extend_from_slice(rest);
    args
}

fn child_open(args: &[String], instance: &str) -> PgStore {
    PgStore::builder(&args[0])
        .schema(&args[1])
        .instance_id(instance)
        .pool_size(2)
        .open()
        .expect("a child opens the store")
}

#[test]
fn four_processes_race_terminal_transitions() {
    let test = "four_processes_race_terminal_transitions";
    if let Some((_, args)) = role() {
        let racer: usize = args[3].parse().unwrap();
        let store = child_open(&args, &format!("racer-{racer}"));
        let mut rng = Rng::new(args[4].parse().unwrap());
        let mut order: Vec<usize> = (0..TASKS).collect();
        rng.shuffle(&mut order);
        let mut won = Vec::new();
        for n in order {
            let id = common::id("race", n);
            let transition = match rng.below(3) {
                0 => store.complete(&id, json!({"by": racer})),
                1 => store.fail(&id, json!({"by": racer})),
                _ => store.cancel(&id, Some(format!("by {racer}"))),
            }
            .unwrap();
            match transition {
                Transition::Applied(t) => won.push(t),
                Transition::AlreadyTerminal(t) => {
                    // The winner's task, untouched: a terminal revision 2.
                    assert!(t.is_terminal() && t.revision == 2, "{t:?}");
                }
                other => panic!("unfenced, never {other:?}"),
            }
        }
        common::write_tasks(
            &std::path::Path::new(&args[2]).join(format!("won-{racer}")),
            &won,
        );
        return;
    }
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("race");
    let store = open(cluster, &schema, "parent");
    for n in 0..TASKS {
        store
            .create(NewTask::new().id(common::id("race", n)))
            .unwrap();
    }
    let work = tempfile::tempdir().unwrap();
    let seed = Rng::from_entropy(test).next();
    let children: Vec<_> = (0..RACERS)
        .map(|r| {
            let rest = [r.to_string(), (seed + r as u64).to_string()];
            spawn(
                work.path(),
                test,
                "racer",
                &child_args(cluster, &schema, work.path(), &rest),
            )
        })
        .collect();
    children.into_iter().for_each(common::Running::finish);
    let mut winners: HashMap<TaskId, taskstore::Task> = HashMap::new();
    for r in 0..RACERS {
        for t in common::read_tasks(&work.path().join(format!("won-{r}"))) {
            let id = t.id.clone();
            assert!(
                winners.insert(id.clone(), t).is_none(),
                "two winners for {id}"
            );
        }
    }
    assert_eq!(winners.len(), TASKS, "exactly one winner per task");
    for (id, won) in &winners {
        assert_eq!(
            store.get(id).unwrap().as_ref(),
            Some(won),
            "the winner's write stands"
        );
    }
    assert!(store.list(&ListQuery::active()).unwrap().tasks.is_empty());
    assert_eq!(counter_and_active(&mut cluster.client(), &schema), (0, 0));
}

#[test]
fn no_lost_updates_across_four_processes() {
    let test = "no_lost_updates_across_four_processes";
    let shared = TaskId::parse("shared").unwrap();
    if let Some((_, args)) = role() {
        let writer: usize = args[3].parse().unwrap();
        let store = child_open(&args, &format!("writer-{writer}"));
        let mut revisions = Vec::new();
        for i in 0..UPDATES_PER_PROCESS {
            let update = TaskUpdate::new().metadata(format!("w{writer}-{i}"), i);
            match store.update(&shared, update).unwrap() {
                Transition::Applied(t) => revisions.push(t.revision.to_string()),
                other => panic!("update not applied: {other:?}"),
            }
        }
        common::write_atomic(
            &std::path::Path::new(&args[2]).join(format!("revisions-{writer}")),
            revisions.join("\n").as_bytes(),
        );
        return;
    }
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("updates");
    let store = open(cluster, &schema, "parent");
    store.create(NewTask::new().id(shared.clone())).unwrap();
    let work = tempfile::tempdir().unwrap();
    let children: Vec<_> = (0..RACERS)
        .map(|w| {
            spawn(
                work.path(),
                test,
                "writer",
                &child_args(cluster, &schema, work.path(), &[w.to_string()]),
            )
        })
        .collect();
    children.into_iter().for_each(common::Running::finish);
    let total = RACERS * UPDATES_PER_PROCESS;
    let task = store.get(&shared).unwrap().unwrap();
    assert_eq!(task.revision, 1 + total as u64, "+1 per applied update");
    assert_eq!(task.metadata.len(), total, "every update's key is there");
    let mut seen: Vec<u64> = (0..RACERS)
        .flat_map(|w| {
            std::fs::read_to_string(work.path().join(format!("revisions-{w}")))
                .unwrap()
                .lines()
                .map(|l| l.parse().unwrap())
                .collect::<Vec<u64>>()
        })
        .collect();
    seen.sort_unstable();
    let expected: Vec<u64> = (2..=1 + total as u64).collect();
    assert_eq!(seen, expected, "each revision handed out exactly once");
}

// ---------------------------------------------------------------------------
// A writer killed in the middle of its transaction.

/// The server process of `client`'s session, for [`blocked_by`].
/// A connection that began a transaction and ran `sql` in it (a lock
/// taken, held until the connection commits or goes), and its backend's
/// pid, for `blocked_by`.
fn holding(cluster: &Cluster, sql: &str) -> (postgres::Client, i32) {
    let mut holder = cluster.client();
    let pid = backend_pid(&mut holder);
    holder.batch_execute(&format!("BEGIN; {sql}")).unwrap();
    (holder, pid)
}

/// How many backends of `application` wait for a lock, whoever holds it.
fn lock_waits(client: &mut postgres::Client, application: &str) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND cardinality(pg_blocking_pids(pid)) > 0",
            &[&application],
        )
        .unwrap()
        .get(0)
}

fn backend_pid(client: &mut postgres::Client) -> i32 {
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0)
}

/// How many backends of `application` wait for a lock that backend `pid`
/// holds (or waits for first): not for another's, as a commit waits for
/// the notification queue's while another commit writes to it.
fn blocked_by(client: &mut postgres::Client, application: &str, pid: i32) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND $2 = ANY(pg_blocking_pids(pid))",
            &[&application, &pid],
        )
        .unwrap()
        .get(0)
}

/// How many backends of `application` are connected.
fn connected(client: &mut postgres::Client, application: &str) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&application],
        )
        .unwrap()
        .get(0)
}

/// A child's handle on the parent's schema with one connection, named
/// `name` in `pg_stat_activity`.
fn victim(args: &[String], name: &str) -> PgStore {
    PgStore::builder(format!("{} application_name={name}", args[0]))
        .schema(&args[1])
        .instance_id(name)
        .pool_size(1)
        .open()
        .unwrap()
}

/// A client holding `held` (a statement that takes a lock) in a
/// transaction, and the child `(test, role, args)`, seen blocked on that
/// lock inside a statement of its own (as `application`). The caller ends
/// the holder's transaction (`ROLLBACK`).
fn blocked_on(
    cluster: &Cluster,
    held: &str,
    work: &std::path::Path,
    (test, role, args): (&str, &str, &[String]),
    application: &str,
) -> (postgres::Client, common::Running) {
    let (holder, holder_pid) = holding(cluster, held);
    let mut child = spawn(work, test, role, args);
    let mut client = cluster.client();
    wait_until("the child to block on the holder's lock", || {
        child.check_alive();
        blocked_by(&mut client, application, holder_pid) == 1
    });
    (holder, child)
}

#[test]
fn a_writer_killed_mid_transaction_leaves_nothing_partial() {
    let test = "a_writer_killed_mid_transaction_leaves_nothing_partial";
    if let Some((what, args)) = role() {
        let store = victim(&args, "victim");
        let id = TaskId::parse(&args[3]).unwrap();
        // Blocks on the counter row the parent holds, mid-statement; killed there.
        match what.as_str() {
            "create" => drop(store.create(NewTask::new().id(id))),
            "complete" => drop(store.complete(&id, json!("victim"))),
            other => panic!("unknown role {other}"),
        }
        panic!("the parent should have killed this child first");
    }
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("killed");
    let store = open(cluster, &schema, "parent");
    let running = store
        .create(NewTask::new().id(TaskId::parse("running").unwrap()))
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut client = cluster.client();
    for (what, id) in [("create", "never"), ("complete", "running")] {
        let args = child_args(cluster, &schema, work.path(), &[id.to_owned()]);
        let counter = format!("SELECT active FROM {schema}.counters FOR UPDATE");
        let (mut holder, child) = blocked_on(
            cluster,
            &counter,
            work.path(),
            (test, what, &args),
            "victim",
        );
        child.kill();
        holder.batch_execute("ROLLBACK").unwrap();
        wait_until("the killed child's backend to end", || {
            connected(&mut client, "victim") == 0
        });
        let (counter, active) = counter_and_active(&mut client, &schema);
        assert_eq!(
            counter, active,
            "the cap counter matches the active tasks after {what}"
        );
        match what {
            // One statement: either all of it (the task stored and
            // counted) or none of it.
            "create" => {
                let made = store.get(&TaskId::parse(id).unwrap()).unwrap();
                assert_eq!(active, 1 + i64::from(made.is_some()));
            }
            // One statement: either all of it (the task completed and
            // uncounted, revision 2) or none of it.
            _ => {
                let now = store.get(&running.id).unwrap().unwrap();
                assert!(
                    now == running || (now.status == TaskStatus::Completed && now.revision == 2),
                    "{now:?}"
                );
                // The create of the round before, if it went through.
                let never = store.get(&TaskId::parse("never").unwrap()).unwrap();
                assert_eq!(
                    active,
                    i64::from(!now.is_terminal()) + i64::from(never.is_some())
                );
            }
        }
    }
}

/// A writer frozen in the middle of a transaction (stopped by a debugger,
/// a paused VM, a network that went silent) that holds the row of the
/// active-task counter, which every create, terminal transition and reap
/// of every host writes, holds the others up for the store's
/// idle-in-transaction timeout (10 s) at most, not until TCP gives up on
/// the frozen peer (hours): the server ends its session. The one such
/// transaction is a sweep's recount of a counter put out by a hand edit
/// (the row locked, then the count written); the child is frozen between
/// its count and its commit. Every other write is one statement,
/// committed on its own
/// (`a_write_whose_task_is_slow_to_reach_the_server_is_stored`). The store
/// sets the timeout on its connections unless the server or the role
/// already has one.
#[test]
fn a_writer_frozen_mid_transaction_holds_the_others_up_only_for_a_while() {
    let test = "a_writer_frozen_mid_transaction_holds_the_others_up_only_for_a_while";
    if let Some((_, args)) = role() {
        let store = victim(&args, "frozen");
        // Its recount blocks on the table lock the parent holds; stopped
        // there, and then killed.
        let _ = store.sweep();
        panic!("the parent should have killed this child first");
    }
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("frozen");
    let store = open(cluster, &schema, "parent");
    let running = store.create(NewTask::new()).unwrap();
    let mut client = cluster.client();
    client
        .execute(&format!("UPDATE {schema}.counters SET active = 5"), &[])
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let args = child_args(cluster, &schema, work.path(), &[]);
    // A `SHARE` lock on the counters lets the recount lock the counter's
    // row, and holds up its write of the count.
    let (mut holder, child) = blocked_on(
        cluster,
        &format!("LOCK TABLE {schema}.counters IN SHARE MODE"),
        work.path(),
        (test, "frozen", &args),
        "frozen",
    );
    let pid = child.child.id().to_string();
    let stopped = std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap();
    assert!(stopped.success());
    // The child's count goes through; its commit never comes. Its session
    // then sits idle in its transaction (or, should this process stall
    // past the timeout, is already ended by the server).
    holder.batch_execute("ROLLBACK").unwrap();
    wait_until("the frozen child's statement to be done", || {
        client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE application_name = 'frozen' AND state = 'active'",
                &[],
            )
            .unwrap()
            .get::<_, i64>(0)
            == 0
    });
    // A terminal transition needs the counter: it waits for the server to
    // end the frozen session, then lands.
    let store = Arc::new(store);
    let completing = std::thread::spawn({
        let (store, id) = (Arc::clone(&store), running.id.clone());
        move || store.complete(&id, json!("done"))
    });
    let waited = std::time::Instant::now();
    while !completing.is_finished() && waited.elapsed() < common::HANG {
        std::thread::sleep(Duration::from_millis(5));
    }
    let landed = completing.is_finished();
    // Killed either way: a failing run ends here too, not in a hang.
    child.kill();
    let done = completing.join().unwrap();
    assert!(
        landed,
        "the complete waited until the frozen writer was killed"
    );
    assert!(matches!(done, Ok(Transition::Applied(_))), "{done:?}");
    assert_eq!(
        counter_and_active(&mut client, &schema),
        (4, 0),
        "the frozen recount wrote nothing"
    );
    store.sweep().unwrap();
    assert_eq!(counter_and_active(&mut client, &schema), (0, 0));
}

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

// ---------------------------------------------------------------------------
// Hosts whose clocks disagree.

/// The system clock, offset: a host whose clock is wrong.
#[derive(Debug)]
struct OffsetClock(time::Duration);

impl taskstore::Clock for OffsetClock {
    fn now(&self) -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc() + self.0
    }
}

/// The server's time, in Unix nanoseconds.
fn server_nanos(client: &mut postgres::Client) -> i128 {
    let micros: i64 = client
        .query_one(
            "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::int8",
            &[],
        )
        .unwrap()
        .get(0);
    i128::from(micros) * 1_000
}

/// One reading of the server's clock against this host's monotonic clock,
/// both at the round trip's midpoint.
#[derive(Clone, Copy)]
struct Reading {
    server_nanos: i128,
    at: std::time::Instant,
    /// Half the round trip: the reading's error.
    half_nanos: i128,
}

impl Reading {
    fn take(client: &mut postgres::Client) -> Reading {
        let started = std::time::Instant::now();
        let server_nanos = server_nanos(client);
        let round_trip = started.elapsed();
        Reading {
            server_nanos,
            at: started + round_trip / 2,
            half_nanos: (round_trip / 2).as_nanos() as i128,
        }
    }

    /// How far the server's clock has moved from this host's monotonic
    /// clock since `reference`, at most: its drift (a clock NTP slews; the
    /// wall clock of the VM this runs on ran 0.5% ahead of its monotonic one
    /// for seconds at a time), plus both readings' errors.
    fn drift_since(&self, reference: &Reading) -> i128 {
        let server = self.server_nanos - reference.server_nanos;
        let monotonic = self.at.duration_since(reference.at).as_nanos() as i128;
        (server - monotonic).abs() + self.half_nanos + reference.half_nanos
    }
}

/// A skewed host: its own task, renewed; reaps in a loop; polls the shared
/// TTL task until it is gone, checking each answer against the server's
/// time read around it. A handle goes by the server's clock as it measured
/// it at open, carried on by the monotonic clock: its error is half that
/// round trip plus how far the server's clock has drifted from the
/// monotonic one since, which the check measures.
fn skewed_host(args: &[String]) {
    let (name, offset_secs): (&str, i64) = (&args[3], args[4].parse().unwrap());
    let expiring = TaskId::parse(&args[5]).unwrap();
    let events = Arc::new(EventLog::with_capacity(10_000));
    let store = PgStore::builder(&args[0])
        .schema(&args[1])
        .instance_id(name)
        .lease(Duration::from_secs(2))
        .clock(Arc::new(OffsetClock(time::Duration::seconds(offset_secs))))
        .sink(events.clone())
        .open()
        .unwrap();
    let server = store
        .server_time()
        .expect("the store goes by the server's time");
    let offset_error = (server.offset + time::Duration::seconds(offset_secs)).abs();
    // Half the round trip, plus 1 ms for the drift between the clocks
    // until the reference below is read, plus the server's microsecond
    // rounding.
    let bound = server.round_trip / 2 + Duration::from_millis(1);
    assert!(
        offset_error <= bound,
        "measured offset {:?} is off by {offset_error} (bound {bound:?})",
        server.offset
    );
    let bound_ns = bound.as_nanos() as i128;
    let mut client = postgres::Client::connect(&args[0], postgres::NoTls).unwrap();
    let reference = Reading::take(&mut client);
    let mine = store.create(NewTask::new().metadata("host", name)).unwrap();
    let expires = {
        let t = store
            .get(&expiring)
            .unwrap()
            .expect("the parent created it");
        t.expires_at().unwrap().unix_timestamp_nanos()
    };
    let mut reaped = Vec::new();
    let mut rounds = 0;
    let mut gone_at = None;
    let renew_every = std::time::Instant::now();
    let mut last_renew = renew_every;
    // Until the TTL task is gone, and for at least 3 leases.
    while gone_at.is_none() || renew_every.elapsed() < Duration::from_secs(6) {
        rounds += 1;
        if last_renew.elapsed() >= Duration::from_millis(300) {
            assert_eq!(store.renew_leases().unwrap(), 1, "{name} renews its task");
            last_renew = std::time::Instant::now();
        }
        reaped.extend(store.reap_orphans().unwrap());
        if gone_at.is_none() {
            let before = Reading::take(&mut client);
            let seen = store.get(&expiring).unwrap();
            let after = Reading::take(&mut client);
            match seen {
                Some(_) => {
                    let drift = before.drift_since(&reference);
                    assert!(
                        before.server_nanos <= expires + bound_ns + drift,
                        "{name} still saw the task {} ns past its expiry, server time \
                         (bound {bound_ns} ns, the clocks' drift {drift} ns)",
                        before.server_nanos - expires
                    );
                }
                None => {
                    let drift = after.drift_since(&reference);
                    assert!(
                        after.server_nanos >= expires - bound_ns - drift,
                        "{name} saw the task expire {} ns early, server time \
                         (bound {bound_ns} ns, the clocks' drift {drift} ns)",
                        expires - after.server_nanos
                    );
                    gone_at = Some(after.server_nanos);
                }
            }
            let _ = store.sweep().unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(reaped.is_empty(), "{name} reaped live tasks: {reaped:?}");
    let mine = store.get(&mine.id).unwrap().unwrap();
    assert_eq!(mine.status, TaskStatus::Working, "{name}'s task lives");
    let expired = events
        .snapshot()
        .iter()
        .filter(|r| r.event.kind == TaskEventKind::Expired)
        .count();
    common::write_atomic(
        &std::path::Path::new(&args[2]).join(format!("expired-{name}")),
        format!("{expired} {rounds}").as_bytes(),
    );
}

#[test]
fn hosts_with_clocks_ten_minutes_apart_agree_on_leases_and_expiry() {
    let test = "hosts_with_clocks_ten_minutes_apart_agree_on_leases_and_expiry";
    if let Some((_, args)) = role() {
        return skewed_host(&args);
    }
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("skew");
    let store = open(cluster, &schema, "parent");
    // Long enough to outlast both children's start on a loaded machine:
    // each reads it first.
    let expiring = store
        .create(NewTask::new().ttl(Duration::from_secs(8)))
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let hosts: Vec<_> = [("ahead", 300), ("behind", -300)]
        .into_iter()
        .map(|(name, offset)| {
            let rest = [name.to_owned(), offset.to_string(), expiring.id.to_string()];
            spawn(
                work.path(),
                test,
                name,
                &child_args(cluster, &schema, work.path(), &rest),
            )
        })
        .collect();
    hosts.into_iter().for_each(common::Running::finish);
    let expired: usize = ["ahead", "behind"]
        .iter()
        .map(|name| {
            let report =
                std::fs::read_to_string(work.path().join(format!("expired-{name}"))).unwrap();
            report.split(' ').next().unwrap().parse::<usize>().unwrap()
        })
        .sum();
    assert_eq!(expired, 1, "the task expired once, on one host");
    let tasks = store.list(&ListQuery::all()).unwrap().tasks;
    assert_eq!(
        tasks.len(),
        2,
        "both hosts' tasks live, the TTL task is gone"
    );
    assert!(tasks.iter().all(|t| t.status == TaskStatus::Working));
}

// ---------------------------------------------------------------------------
// `examples/mcp_server.rs` instances over one database, driven by `rmcp`'s
// client through the helpers `tests/mcp.rs` and `tests/mcp_resume.rs` use
// over one directory (`tests/mcp_client/`).

#[cfg(feature = "mcp")]
#[path = "mcp_client/mod.rs"]
mod mcp_client;

#[cfg(feature = "mcp")]
mod mcp_servers {
    use rmcp::model::{ErrorCode, TaskPayload, TaskStatus};
    use serde_json::{Value, json};
    use taskstore::{PgStore, TaskId, TaskStore};

    use super::mcp_client::{Launch, assert_resumed_once, checkpoint, poll, store_dir};
    use super::{cluster, fresh_schema, open};

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
}

/// The tasks `make` creates as instance `dead` of `schema`, with leases of
/// 100 ms, once they lapsed as seen by a handle opened through a proxy
/// that can lose a reply (set up by `taker`): the tasks, the proxy, that
/// handle.
fn lapsed_behind_a_proxy(
    cluster: &Cluster,
    schema: &str,
    make: impl FnOnce(&PgStore) -> Vec<Task>,
    taker: impl FnOnce(taskstore::PgStoreBuilder) -> taskstore::PgStoreBuilder,
) -> (Vec<Task>, pg_cluster::LosesAReply, PgStore) {
    let dead = PgStore::builder(cluster.conninfo())
        .schema(schema)
        .instance_id("dead")
        .lease(Duration::from_millis(100))
        .open()
        .unwrap();
    let tasks = make(&dead);
    let proxy = pg_cluster::LosesAReply::start(cluster);
    let store = taker(PgStore::builder(proxy.conninfo()).schema(schema))
        .open()
        .unwrap();
    let lapsed = tasks.iter().filter_map(|t| t.lease_expires_at).max();
    wait_until("the dead owner's leases to lapse", || {
        Some(store.now()) > lapsed
    });
    (tasks, proxy, store)
}

/// `n` resumable orphans of a dead instance, claimed by an heir whose
/// connection loses the reply to its write after the server committed it
/// (the write that names the first two, or the one): the claim must report
/// every task it took, each stored as the heir's at epoch 2.
fn a_claim_losing_its_reply(cluster: &Cluster, n: usize) {
    let schema = fresh_schema("lost_reply");
    let tasks = |dead: &PgStore| -> Vec<Task> {
        (0..n)
            .map(|i| {
                dead.create(NewTask::new().resumable("k", json!(i)))
                    .unwrap()
            })
            .collect()
    };
    let (tasks, proxy, heir) =
        lapsed_behind_a_proxy(cluster, &schema, tasks, |b| b.instance_id("heir"));
    // A batch is the one statement that names two of the tasks; one task
    // is claimed by the one statement that names it.
    let markers: Vec<&str> = tasks.iter().take(2).map(|t| t.id.as_str()).collect();
    proxy.arm(&markers);
    let claimed = heir.claim(&["k"]).unwrap();
    assert_eq!(proxy.cuts(), 1, "the write's reply was lost");
    assert!(claimed.missed.is_empty(), "{:?}", claimed.missed);
    let mut ids: Vec<&TaskId> = claimed.tasks.iter().map(|t| &t.id).collect();
    ids.sort();
    let mut want: Vec<&TaskId> = tasks.iter().map(|t| &t.id).collect();
    want.sort();
    assert_eq!(ids, want, "every task the claim took is reported claimed");
    let reader = open(cluster, &schema, "reader");
    for task in &tasks {
        let stored = reader.get(&task.id).unwrap().unwrap();
        assert_eq!(
            (stored.owner.as_deref(), stored.epoch),
            (Some("heir"), 2),
            "{}",
            task.id
        );
    }
}

/// A batch whose connection drops after the server committed it: the
/// per-task writes tried after it find every task moved on (by the batch
/// itself). Taken for "changed by another", the claim reported nothing,
/// and the tasks stayed owned by this handle with no run.
#[test]
fn a_claim_whose_reply_is_lost_after_the_commit_reports_what_it_claimed() {
    let Some(cluster) = cluster() else { return };
    a_claim_losing_its_reply(cluster, 3);
}

/// The same for a claim of one orphan, which is one conditional write, not
/// a batch. (It reported an error, and left the task claimed with no run
/// until its lease lapsed, one attempt spent.)
#[test]
fn a_claim_of_one_task_whose_reply_is_lost_after_the_commit_reports_it() {
    let Some(cluster) = cluster() else { return };
    a_claim_losing_its_reply(cluster, 1);
}

/// A renewal batch whose reply is lost after the commit, and one of whose
/// tasks another instance writes before the renewal reads it back (an
/// unfenced update): that task holds the batch's renewal and more, so
/// neither the batch's write nor another's is what is stored. The renewal
/// must not be made again: the call renews each task once at most (its
/// answer for that task may be an error, the batch's outcome unknown), so
/// the task's revision went up by two, the renewal's and the update's.
/// (Taken for "changed by another", the task was renewed a second time:
/// one call, two writes, and a revision three above the one read.)
#[test]
fn a_lost_renewal_batch_reply_with_a_task_written_over_since_renews_it_once() {
    let Some(cluster) = cluster() else { return };
    let (renewed, x, other) = a_lost_renewal_batch_reply(cluster, "written", |other, x| {
        let updated = other
            .update(&x.id, TaskUpdate::new().metadata("by", "other"))
            .unwrap();
        assert_eq!(updated.task().revision, 3, "on the batch's renewal");
    });
    let stored = other.get(&x.id).unwrap().unwrap();
    assert_eq!(
        stored.revision, 3,
        "renewed once (the batch) and updated once: {renewed:?}"
    );
    match &renewed[0] {
        Ok(Transition::Applied(t)) => assert_eq!(t.revision, 2, "{renewed:?}"),
        Ok(other) => panic!("{other:?}"),
        Err(_) => {}
    }
    assert!(
        matches!(&renewed[1], Ok(Transition::Applied(t)) if t.revision == 2),
        "{renewed:?}"
    );
}

/// The same renewal batch, one of whose tasks another instance deletes
/// before the renewal reads it back: the batch may have renewed it first
/// (and a reader seen that), so its answer is an error, not `NotFound`.
/// (Judged again, it was `NotFound`: a renewal no call reported.)
#[test]
fn a_lost_renewal_batch_reply_with_a_task_deleted_since_is_an_error() {
    let Some(cluster) = cluster() else { return };
    let (renewed, ..) = a_lost_renewal_batch_reply(cluster, "deleted", |other, x| {
        let seen = other.get(&x.id).unwrap().unwrap();
        assert_eq!(seen.revision, 2, "renewed by the batch");
        assert!(other.delete(&x.id).unwrap());
    });
    assert!(
        !matches!(&renewed[0], Err(Error::NotFound { .. })),
        "a renewal seen made is not NotFound: {renewed:?}"
    );
}

/// A renewal batch of two tasks whose reply is lost after the commit, with
/// `meanwhile` run by another instance on the first task while the
/// renewal's write of it alone is held on its way: the renewal's answers,
/// that task, and the other instance.
fn a_lost_renewal_batch_reply(
    cluster: &Cluster,
    name: &str,
    meanwhile: impl FnOnce(&PgStore, &Task),
) -> (Vec<taskstore::Result<Transition>>, Task, PgStore) {
    let schema = fresh_schema(&format!("lost_renewal_{name}"));
    let proxy = pg_cluster::LosesAReply::start(cluster);
    let owner = PgStore::builder(proxy.conninfo())
        .schema(&schema)
        .instance_id("owner")
        .time_source(TimeSource::Clock)
        .pool_size(1)
        .open()
        .unwrap();
    let other = open(cluster, &schema, "other");
    let (x, y) = (
        owner.create(NewTask::new()).unwrap(),
        owner.create(NewTask::new()).unwrap(),
    );
    // The batch is the one statement that carries both tasks' JSON; the
    // write of `x` alone that follows it is prepared on a new connection
    // (the batch's was cut), and held on its way there.
    let json = |t: &Task| format!("\"taskId\":\"{}\"", t.id);
    proxy.arm(&[&json(&x), &json(&y)]);
    proxy.hold(&["$12::text IS NULL"]);
    let ids = [x.id.clone(), y.id.clone()];
    let renewed = std::thread::scope(|s| {
        let renewing = s.spawn(|| owner.renew_leases_of(&ids));
        proxy.wait_until_held();
        assert_eq!(proxy.cuts(), 1, "the batch's reply was lost");
        meanwhile(&other, &x);
        proxy.release();
        renewing.join().unwrap()
    });
    (renewed, x, other)
}

/// A reap whose batch loses its reply after the commit, and one of whose
/// tasks, reaped, another instance reads and deletes before the reap reads
/// it back: the reap made it, and a reader saw it made, so the reap may
/// not say it left the task alone: it reports it reaped, or missed (whether
/// its write made it cannot be told). (Taken for "changed by another", the
/// task was judged again, found gone, and left out of the report: a failed
/// version with the reaper's orphan error that no reap reported, and no
/// `task.reaped` event.)
#[test]
fn a_lost_reap_reply_with_a_task_deleted_since_is_reported() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("lost_reap_deleted");
    let two = |dead: &PgStore| -> Vec<Task> {
        (0..2)
            .map(|_| dead.create(NewTask::new()).unwrap())
            .collect()
    };
    let (tasks, proxy, reaper) = lapsed_behind_a_proxy(cluster, &schema, two, |b| {
        b.instance_id("reaper").pool_size(1)
    });
    let (x, y) = (&tasks[0], &tasks[1]);
    let other = open(cluster, &schema, "other");
    // As in the renewal's case above: the batch carries both tasks' JSON,
    // and the write of `x` alone after it is held on its new connection.
    let json = |t: &Task| format!("\"taskId\":\"{}\"", t.id);
    proxy.arm(&[&json(x), &json(y)]);
    proxy.hold(&["$12::text IS NULL"]);
    let reaped = std::thread::scope(|s| {
        let reaping = s.spawn(|| reaper.reap().unwrap());
        proxy.wait_until_held();
        assert_eq!(proxy.cuts(), 1, "the batch's reply was lost");
        let seen = other.get(&x.id).unwrap().unwrap();
        assert_eq!(seen.status, TaskStatus::Failed, "reaped by the batch");
        assert!(other.delete(&x.id).unwrap());
        proxy.release();
        reaping.join().unwrap()
    });
    let reported =
        reaped.tasks.iter().any(|t| t.id == x.id) || reaped.missed.iter().any(|m| m.id == x.id);
    assert!(reported, "the reap made it and says nothing: {reaped:?}");
}

/// A claim whose batch loses its reply after the commit, and one of whose
/// tasks another instance writes before the claim reads it back (an
/// unfenced update, which keeps the owner): that task holds the heir's
/// claim and more, so neither the batch's write nor another's is what is
/// stored. The claim reports it missed, and its handle never renews it:
/// left to lapse, as any claim that failed though its version may stand.
/// (Taken for "changed by another", it was neither reported nor disowned,
/// and the heir's renewal pass kept it alive, with no run, for ever.)
#[test]
fn a_lost_claim_reply_with_a_task_written_over_since_leaves_it_to_lapse() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("lost_reply_written");
    let three = |dead: &PgStore| -> Vec<Task> {
        (0..3)
            .map(|i| {
                dead.create(NewTask::new().resumable("k", json!(i)))
                    .unwrap()
            })
            .collect()
    };
    let (tasks, proxy, heir) =
        lapsed_behind_a_proxy(cluster, &schema, three, |b| b.instance_id("heir"));
    let heir = Arc::new(heir);
    let peer = open(cluster, &schema, "peer");
    let first = tasks[0].id.clone();
    // The batch names the first two; the write of the first alone after
    // it (its statement names "WITH u AS") is held while the peer writes.
    proxy.arm(&[tasks[0].id.as_str(), tasks[1].id.as_str()]);
    proxy.hold(&["WITH u AS", first.as_str()]);
    let claiming = {
        let heir = Arc::clone(&heir);
        std::thread::spawn(move || heir.claim(&["k"]).unwrap())
    };
    proxy.wait_until_held();
    let cancel = TaskUpdate::new()
        .metadata("mcp.cancelRequested", true)
        .leave_lease();
    assert!(peer.update(&first, cancel).unwrap().is_applied());
    proxy.release();
    let claimed = claiming.join().unwrap();
    assert_eq!(proxy.cuts(), 1, "the batch's reply was lost");
    let stored = peer.get(&first).unwrap().unwrap();
    assert_eq!((stored.owner.as_deref(), stored.epoch), (Some("heir"), 2));
    let reported: Vec<&TaskId> = claimed.tasks.iter().map(|t| &t.id).collect();
    let missed: Vec<&TaskId> = claimed.missed.iter().map(|m| &m.id).collect();
    assert_eq!(missed, [&first], "reported {reported:?}");
    assert_eq!(reported.len(), 2);
    assert_eq!(heir.renew_leases().unwrap(), 2, "the other two alone");
    assert_eq!(
        peer.get(&first).unwrap().unwrap().lease_expires_at,
        stored.lease_expires_at,
        "never renewed"
    );
}

/// A handle's backend that, while armed, runs `after_scan` after each
/// `scan` and `before_batch` before each `replace_all`, each told how many
/// came before it (`passes_meet`: the two passes' scans meet; the test of
/// a batch that found no connection: one pass waits for the other).
struct Hooked {
    store: PgStore,
    armed: std::sync::atomic::AtomicBool,
    scans: std::sync::atomic::AtomicUsize,
    batches: std::sync::atomic::AtomicUsize,
    after_scan: Box<dyn Fn(usize) + Send + Sync>,
    before_batch: Box<dyn Fn(usize) + Send + Sync>,
    /// Every `remove` called, armed or not.
    removes: std::sync::atomic::AtomicUsize,
}

impl Hooked {
    fn new(
        store: PgStore,
        after_scan: impl Fn(usize) + Send + Sync + 'static,
        before_batch: impl Fn(usize) + Send + Sync + 'static,
    ) -> Hooked {
        Hooked {
            store,
            armed: true.into(),
            scans: Default::default(),
            batches: Default::default(),
            after_scan: Box::new(after_scan),
            before_batch: Box::new(before_batch),
            removes: Default::default(),
        }
    }

    /// The count `counter` was at, and one more, if armed.
    fn count(&self, counter: &std::sync::atomic::AtomicUsize) -> Option<usize> {
        use std::sync::atomic::Ordering::SeqCst;
        self.armed
            .load(SeqCst)
            .then(|| counter.fetch_add(1, SeqCst))
    }
}

impl Backend for Hooked {
    fn load(&self, id: &TaskId) -> taskstore::Result<Option<Task>> {
        self.store.backend().load(id)
    }
    fn load_all(&self, ids: &[TaskId]) -> Vec<taskstore::Result<Option<Task>>> {
        self.store.backend().load_all(ids)
    }
    fn insert(&self, record: &Record, max_active: usize) -> taskstore::Result<Insert> {
        self.store.backend().insert(record, max_active)
    }
    fn replace(&self, current: &Task, next: &Record) -> taskstore::Result<Swap> {
        self.store.backend().replace(current, next)
    }
    fn remove(&self, current: &Task) -> taskstore::Result<Swap> {
        self.removes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.store.backend().remove(current)
    }
    fn scan(&self, scan: &Scan) -> taskstore::Result<Scanned> {
        let scanned = self.store.backend().scan(scan);
        if let Some(before) = self.count(&self.scans) {
            (self.after_scan)(before);
        }
        scanned
    }
    fn modify(&self, id: &TaskId, decide: &mut Decide<'_>) -> taskstore::Result<Modified> {
        self.store.backend().modify(id, decide)
    }
    fn replace_all(&self, swaps: &[(Task, Record)]) -> Vec<taskstore::Result<Swap>> {
        if let Some(before) = self.count(&self.batches) {
            (self.before_batch)(before);
        }
        self.store.backend().replace_all(swaps)
    }
    fn remove_all(&self, tasks: &[Task]) -> Vec<taskstore::Result<Swap>> {
        self.store.backend().remove_all(tasks)
    }
    fn refresh_clock(&self) {
        self.store.backend().refresh_clock()
    }
}

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

/// Makes the server refuse every `statement` (`INSERT`, `UPDATE`) of
/// `schema`'s tasks with an `ERROR` reply, as a statement or lock timeout
/// would refuse one: "the test refuses every insert" (or update).
fn refuse_every(cluster: &Cluster, schema: &str, statement: &str) {
    let what = statement.to_lowercase();
    cluster
        .client()
        .batch_execute(&format!(
            "CREATE FUNCTION {schema}.refused() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 RAISE EXCEPTION 'the test refuses every {what}';
             END $$;
             CREATE TRIGGER refused BEFORE {statement} ON {schema}.tasks
                 FOR EACH ROW EXECUTE FUNCTION {schema}.refused();"
        ))
        .unwrap();
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

/// A dead instance's handle on a fresh schema named after `name` (the
/// connections named `application`), on a `ManualClock` its leases have
/// lapsed by once `made` has made its tasks, and an heir (one handle)
/// whose two passes at a time meet after their scans.
fn passes_meet<T>(
    cluster: &Cluster,
    name: &str,
    application: &str,
    made: impl FnOnce(&PgStore) -> T,
) -> (T, PgStore, taskstore::Store<Hooked>) {
    let schema = fresh_schema(name);
    let conninfo = format!("{} application_name={application}", cluster.conninfo());
    let clock = ManualClock::new(time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap());
    let lease = Duration::from_secs(30);
    let open = |instance_id: &str| {
        PgStore::builder(&conninfo)
            .schema(&schema)
            .instance_id(instance_id)
            .time_source(TimeSource::Clock)
            .clock(Arc::new(clock.clone()))
            .lease(lease)
            .open()
            .unwrap()
    };
    let dead = open("dead");
    let tasks = made(&dead);
    clock.advance(lease);
    let meet = std::sync::Barrier::new(2);
    let backend = Hooked::new(
        open("heir"),
        move |_| {
            meet.wait();
        },
        |_| {},
    );
    let heir = taskstore::Store::with_backend(backend)
        .clock(Arc::new(clock.clone()))
        .lease(lease)
        .instance_id("heir")
        .build()
        .unwrap();
    (tasks, dead, heir)
}

/// The ids of the tasks `passes` reported, sorted.
fn reported<'a, P: 'a>(passes: &'a [P], tasks: impl Fn(&'a P) -> &'a [Task]) -> Vec<&'a TaskId> {
    let mut ids: Vec<&TaskId> = passes.iter().flat_map(tasks).map(|t| &t.id).collect();
    ids.sort();
    ids
}

/// Two claims, then two reaps, of one handle at one instant, each pair
/// judging the same versions: each orphan is reported once, by the pass
/// whose write landed. (Over PostgreSQL both reported it: the loser's
/// write, tried alone, found the task stored as it meant to write it, the
/// same owner, token, epoch and lease, and took it for its own; both
/// callers then ran the task at one epoch, and a reap sent two events.)
#[test]
fn two_passes_of_one_handle_report_each_orphan_once() {
    let Some(cluster) = cluster() else { return };
    let ((resumable, plain), dead, heir) =
        passes_meet(cluster, "passes_meet", "passes_meet", |dead| {
            let resumable = dead
                .create(NewTask::new().resumable("k", json!(1)))
                .unwrap();
            (resumable, dead.create(NewTask::new()).unwrap())
        });
    let (claims, reaps) = std::thread::scope(|s| {
        let claims: Vec<_> = (0..2)
            .map(|_| s.spawn(|| heir.claim(&["k"]).unwrap()))
            .collect();
        let claims: Vec<_> = claims.into_iter().map(|c| c.join().unwrap()).collect();
        let reaps: Vec<_> = (0..2).map(|_| s.spawn(|| heir.reap().unwrap())).collect();
        let reaps: Vec<_> = reaps.into_iter().map(|r| r.join().unwrap()).collect();
        (claims, reaps)
    });
    let claimed = reported(&claims, |c| &c.tasks);
    assert_eq!(claimed, [&resumable.id], "claimed once: {claims:?}");
    let reaped = reported(&reaps, |r| &r.tasks);
    assert_eq!(reaped, [&plain.id], "reaped once: {reaps:?}");
    let stored = dead.get(&resumable.id).unwrap().unwrap();
    assert_eq!((stored.owner.as_deref(), stored.epoch), (Some("heir"), 2));
}

/// The same for two claim batches that another session's lock on one row
/// makes leave it out: each writes it alone once the lock goes, and only
/// the one whose write landed reports it. (With tasks left out of a batch
/// taken as written by this call when found as it meant to write them,
/// both reported the held task.)
#[test]
fn two_batches_of_one_handle_that_leave_a_held_task_out_report_it_once() {
    let Some(cluster) = cluster() else { return };
    let application = "batches_meet";
    let ((held, free), _dead, heir) = passes_meet(cluster, application, application, |dead| {
        let resumable = |n: u32| NewTask::new().resumable("k", json!(n));
        (
            dead.create(resumable(1)).unwrap(),
            dead.create(resumable(2)).unwrap(),
        )
    });
    let schema = heir.backend().store.schema().to_owned();
    let lock = format!(
        "SELECT FROM {schema}.tasks WHERE id = '{}' FOR UPDATE",
        held.id
    );
    let (mut holder, holder_pid) = holding(cluster, &lock);
    let claims = std::thread::scope(|s| {
        let claims: Vec<_> = (0..2)
            .map(|_| s.spawn(|| heir.claim(&["k"]).unwrap()))
            .collect();
        // The first waits for the holder, the second behind the first.
        let mut watcher = cluster.client();
        wait_until("both passes to wait for the held row alone", || {
            blocked_by(&mut watcher, application, holder_pid) == 1
                && lock_waits(&mut watcher, application) == 2
        });
        holder.batch_execute("ROLLBACK").unwrap();
        claims
            .into_iter()
            .map(|c| c.join().unwrap())
            .collect::<Vec<_>>()
    });
    each_claimed_once(&[held, free], &claims);
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

/// A dead instance's two resumable orphans on a fresh schema named after
/// `application` (the connections named so too), the heir whose passes
/// then claim them (one at a time: `passes_meet` disarmed), and the
/// schema; every statement that writes tasks runs `body` (PL/pgSQL, the
/// rows it wrote in `written`) before it ends.
fn two_orphans_written_through(
    cluster: &Cluster,
    application: &str,
    body: &str,
) -> (Vec<Task>, taskstore::Store<Hooked>, String) {
    let (orphans, _dead, heir) = passes_meet(cluster, application, application, |dead| {
        (1..=2)
            .map(|n| {
                dead.create(NewTask::new().resumable("k", json!(n)))
                    .unwrap()
            })
            .collect::<Vec<_>>()
    });
    heir.backend()
        .armed
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let schema = heir.backend().store.schema().to_owned();
    cluster
        .client()
        .batch_execute(&format!(
            "CREATE FUNCTION {schema}.written() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 {body}
                 RETURN NULL;
             END $$;
             CREATE TRIGGER written AFTER UPDATE ON {schema}.tasks
                 REFERENCING NEW TABLE AS written
                 FOR EACH STATEMENT EXECUTE FUNCTION {schema}.written();"
        ))
        .unwrap();
    (orphans, heir, schema)
}

/// Asserts that `passes` reported each of `orphans` once.
fn each_claimed_once(orphans: &[Task], passes: &[taskstore::Claimed]) {
    let mut want: Vec<&TaskId> = orphans.iter().map(|t| &t.id).collect();
    want.sort();
    assert_eq!(
        reported(passes, |c| &c.tasks),
        want,
        "each claimed once: {passes:?}"
    );
}

/// A claim batch that committed, whose read after it (of the task it
/// left out, another session holding its row) failed with the server's
/// error reply (here a cancel, while a table lock held the read up), is
/// taken as one that may have committed: each task it claimed is
/// reported. (Taken as refused, the task it wrote, written alone after
/// and found stored as the pass meant to write it, was not reported:
/// claimed, and never run.)
#[test]
fn a_batch_whose_read_after_its_commit_fails_reports_what_it_claimed() {
    let Some(cluster) = cluster() else { return };
    let application = "batch_read_fails";
    let gate = 4343;
    let (orphans, heir, schema) = two_orphans_written_through(
        cluster,
        application,
        &format!("PERFORM pg_advisory_xact_lock_shared({gate});"),
    );
    let (row_holder, _) = holding(
        cluster,
        &format!(
            "SELECT FROM {schema}.tasks WHERE id = '{}' FOR UPDATE",
            orphans[1].id
        ),
    );
    let (mut gate_holder, gate_pid) =
        holding(cluster, &format!("SELECT pg_advisory_xact_lock({gate})"));
    // The session of the pass reading tasks while the table lock holds it up.
    let reading = |watcher: &mut postgres::Client, locker: i32| -> Option<i32> {
        watcher
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1 \
                 AND query LIKE 'SELECT id, task FROM%' AND $2 = ANY(pg_blocking_pids(pid))",
                &[&application, &locker],
            )
            .unwrap()
            .map(|row| row.get(0))
    };
    let claimed = std::thread::scope(|s| {
        let claim = s.spawn(|| heir.claim(&["k"]).unwrap());
        let mut watcher = cluster.client();
        wait_until(
            "the batch, the held row left out, to wait at the gate",
            || blocked_by(&mut watcher, application, gate_pid) == 1,
        );
        drop(row_holder);
        let mut locker = cluster.client();
        let locker_pid = backend_pid(&mut locker);
        let (unlock, unlocked) = std::sync::mpsc::channel::<()>();
        let table = format!("{schema}.tasks");
        let lock = s.spawn(move || {
            locker
                .batch_execute(&format!(
                    "BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"
                ))
                .unwrap();
            unlocked.recv().unwrap();
            locker.batch_execute("COMMIT").unwrap();
        });
        wait_until("the table lock to wait for the batch", || {
            watcher
                .query_one(
                    "SELECT cardinality(pg_blocking_pids($1)) > 0",
                    &[&locker_pid],
                )
                .unwrap()
                .get::<_, bool>(0)
        });
        // The batch commits; its read of the task it left out waits for the
        // table lock, and is cancelled there.
        gate_holder.batch_execute("ROLLBACK").unwrap();
        let mut reader = None;
        wait_until(
            "the read after the batch to wait for the table lock",
            || {
                reader = reading(&mut watcher, locker_pid);
                reader.is_some()
            },
        );
        watcher
            .execute("SELECT pg_cancel_backend($1)", &[&reader])
            .unwrap();
        wait_until("the read to be cancelled", || {
            reading(&mut watcher, locker_pid).is_none()
        });
        unlock.send(()).unwrap();
        lock.join().unwrap();
        claim.join().unwrap()
    });
    each_claimed_once(&orphans, std::slice::from_ref(&claimed));
}

/// A fresh schema named after `name`, a proxy that loses a reply, and a
/// handle (instance `creator`) through the proxy.
fn behind_a_proxy(cluster: &Cluster, name: &str) -> (String, pg_cluster::LosesAReply, PgStore) {
    let schema = fresh_schema(name);
    let proxy = pg_cluster::LosesAReply::start(cluster);
    let store = PgStore::builder(proxy.conninfo())
        .schema(&schema)
        .instance_id("creator")
        .open()
        .unwrap();
    (schema, proxy, store)
}

/// A write whose task takes long to reach the server (a large task, a slow
/// link) is stored: no write holds a transaction open while its task is
/// on the way, so the server's `idle_in_transaction_session_timeout` (the
/// connection's own here, 50 ms) ends none of them. A create and a
/// completion are each held by a proxy for ten times the timeout. (A
/// create was `BEGIN`, then its statement: held, it lost its session,
/// "terminating connection due to idle-in-transaction timeout", as a
/// create at the largest cap did in `tests/pg_largest.rs` on a loaded
/// machine, against the store's own 10 s.)
#[test]
fn a_write_whose_task_is_slow_to_reach_the_server_is_stored() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("slow_link");
    let proxy = pg_cluster::LosesAReply::start(cluster);
    let conninfo = format!(
        "{} options='-c idle_in_transaction_session_timeout=50'",
        proxy.conninfo()
    );
    let store = Arc::new(
        PgStore::builder(conninfo)
            .schema(&schema)
            .instance_id("slow")
            .open()
            .unwrap(),
    );
    let held = |marker: &str, write: Box<dyn FnOnce() -> taskstore::Result<Task> + Send>| {
        proxy.hold(&[marker]);
        let writing = std::thread::spawn(write);
        proxy.wait_until_held();
        std::thread::sleep(Duration::from_millis(500));
        proxy.release();
        writing.join().unwrap().unwrap()
    };
    let s = store.clone();
    let made = held(
        "slow-to-create",
        Box::new(move || s.create(NewTask::new().metadata("m", "slow-to-create"))),
    );
    let s = store.clone();
    let id = made.id.clone();
    let done = held(
        "slow-to-complete",
        Box::new(move || match s.complete(&id, json!("slow-to-complete"))? {
            Transition::Applied(done) => Ok(done),
            other => panic!("the completion: {other:?}"),
        }),
    );
    assert_eq!(done.status, TaskStatus::Completed);
    let other = open(cluster, &schema, "other");
    assert_eq!(other.get(&made.id).unwrap(), Some(done));
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
        if !timeout {
            // Idle a while, as a restart or an administrator meets them (a
            // connection given back moments before is not looked at).
            std::thread::sleep(Duration::from_millis(200));
            watcher
                .execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE application_name = $1",
                    &[&application],
                )
                .unwrap();
        }
        wait_until("the server to end the store's idle sessions", || {
            connected(&mut watcher, &application) == 0
        });
        let read = store.get(&task.id);
        assert!(
            matches!(&read, Ok(Some(read)) if *read == task),
            "timeout {timeout}: {read:?}"
        );
    }
}

/// A create whose reply is lost after its commit (the insert is one
/// statement, committed on its own, and the server's answer to it is
/// swallowed) reports the task made: the handle reads it back, stored as
/// it was to write it. (It reported an error, and removed the task it had
/// made.)
#[test]
fn a_create_whose_commit_reply_is_lost_reports_the_task_made() {
    let Some(cluster) = cluster() else { return };
    let (schema, proxy, s) = behind_a_proxy(cluster, "lost_commit");
    let id = TaskId::parse("lost-reply").unwrap();
    proxy.arm(&[id.as_str()]);
    let task = s.create(NewTask::new().id(id)).unwrap();
    assert_eq!(proxy.cuts(), 1, "the commit's reply was lost");
    let other = open(cluster, &schema, "other");
    assert_eq!(other.get(&task.id).unwrap(), Some(task));
}

/// A create whose reply is lost after its commit while the server is out
/// of reach (it committed, and nothing can read it back) reports an error;
/// its handle, which owns the task, never renews it, and removes it once
/// the server answers again, before it renews anything, through either
/// renewal pass. (The task stayed: owned by the handle told the create
/// failed, renewed by its every pass, and a create retried under its id
/// was "already exists".)
#[test]
fn a_create_whose_commit_reply_is_lost_in_an_outage_is_not_kept_alive() {
    let Some(cluster) = cluster() else { return };
    // Through either renewal pass: of every task the handle owns, or of the
    // tasks a host runs (the MCP manager's).
    for every_task in [true, false] {
        let name = format!("lost_commit_outage_{every_task}");
        let (schema, proxy, s) = behind_a_proxy(cluster, &name);
        let id = TaskId::parse("lost-in-an-outage").unwrap();
        let renew = |s: &PgStore| -> taskstore::Result<usize> {
            if every_task {
                return s.renew_leases();
            }
            let mut renewed = 0;
            for result in s.renew_leases_of(std::slice::from_ref(&id)) {
                match result {
                    Ok(t) => renewed += usize::from(t.is_applied()),
                    Err(Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(renewed)
        };
        proxy.refuse_from_the_cut();
        proxy.arm(&[id.as_str()]);
        s.create(NewTask::new().id(id.clone()))
            .expect_err("nothing can tell the create landed");
        assert_eq!(proxy.cuts(), 1);
        let other = open(cluster, &schema, "other");
        assert!(other.get(&id).unwrap().is_some(), "the server committed it");
        assert!(renew(&s).is_err(), "the server is out of reach");
        proxy.refuse(false);
        assert_eq!(renew(&s).unwrap(), 0, "nothing of its own to renew");
        assert_eq!(other.get(&id).unwrap(), None, "every task: {every_task}");
        s.create(NewTask::new().id(id.clone())).unwrap();
    }
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

#[test]
fn a_write_between_subscribing_and_the_first_wait_is_never_lost_silently() {
    // The feed connects on its first wait (never on the subscriber's
    // thread, which may drive an async runtime): a write made before that
    // is named by no notice, so that wait must say changes may be missed.
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("feed_first");
    let (a, b) = (open(cluster, &schema, "a"), open(cluster, &schema, "b"));
    let mut feed = a.changes().expect("a PgStore has a change feed");
    let early = b.create(NewTask::new()).unwrap();
    match feed.wait(Duration::from_millis(100)) {
        taskstore::Changes::Missed => {}
        taskstore::Changes::Tasks(ids) => assert!(
            ids.contains(&early.id),
            "the first wait named {ids:?}, not the task written before it"
        ),
        other => panic!("unexpected {other:?}"),
    }
}

/// Runs `f` on a thread of its own and returns what it returns, or fails
/// the test if it never does (within `common::HANG`).
fn returns<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (send, got) = std::sync::mpsc::channel();
    std::thread::spawn(move || drop(send.send(f())));
    got.recv_timeout(common::HANG)
        .unwrap_or_else(|_| panic!("{what} never returned"))
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

/// A wait of `Duration::MAX` (a host's "for ever") waits for a notice: the
/// driver adds its timeout to an `Instant`, which panicked with an
/// overflow as soon as a notice came.
#[test]
fn a_feed_waits_for_ever_when_told_to() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("feed_forever");
    let (a, b) = (open(cluster, &schema, "a"), open(cluster, &schema, "b"));
    let mut feed = a.changes().expect("a PgStore has a change feed");
    while !matches!(
        feed.wait(Duration::from_millis(100)),
        taskstore::Changes::Missed
    ) {}
    let task = b.create(NewTask::new()).unwrap();
    let got = returns("a wait for ever", move || feed.wait(Duration::MAX));
    assert_eq!(got, taskstore::Changes::Tasks(vec![task.id]));
}

#[test]
fn the_change_feed_names_every_task_another_handle_writes() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("feed");
    let (a, b) = (open(cluster, &schema, "a"), open(cluster, &schema, "b"));
    let mut feed = a.changes().expect("a PgStore has a change feed");
    // The first wait connects and listens, and cannot know what was written
    // before it did.
    assert_eq!(
        feed.wait(Duration::from_millis(10)),
        taskstore::Changes::Missed
    );
    let one = b.create(NewTask::new()).unwrap();
    let two = b.create(NewTask::new()).unwrap();
    assert!(b.complete(&one.id, json!(1)).unwrap().is_applied());
    let mut seen = Vec::new();
    wait_until("the feed to name both tasks", || {
        if let taskstore::Changes::Tasks(ids) = feed.wait(Duration::from_millis(100)) {
            seen.extend(ids);
        }
        seen.contains(&one.id) && seen.contains(&two.id)
    });
    let mut other = cluster.client();
    other
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%' AND datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .unwrap();
    // A lost connection is reported as possibly missed changes, then the
    // feed listens again.
    let mut missed = false;
    wait_until("the feed to report the gap", || {
        missed |= feed.wait(Duration::from_millis(100)) == taskstore::Changes::Missed;
        missed
    });
    wait_until("the feed to listen again", || {
        matches!(
            feed.wait(Duration::from_millis(100)),
            taskstore::Changes::Tasks(_)
        )
    });
    let three = b.create(NewTask::new()).unwrap();
    let mut seen = Vec::new();
    wait_until(
        "the feed to name a task written after it reconnected",
        || {
            if let taskstore::Changes::Tasks(ids) = feed.wait(Duration::from_millis(100)) {
                seen.extend(ids);
            }
            seen.contains(&three.id)
        },
    );
}

/// A handle opened without change notices makes every kind of write
/// (insert, replace, the batch replace of a renewal, remove, the batch
/// remove of a sweep) without notifying, and has no feed of its own:
/// another handle's feed, which names a marker task written after them,
/// names none of its tasks (notifications arrive in commit order, so any
/// of them would have come first).
#[test]
fn a_handle_without_change_notices_notifies_nothing() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("quiet");
    let clock = ManualClock::new(time::OffsetDateTime::now_utc());
    let quiet = on_clock(&cluster.conninfo(), &schema, "quiet", &clock)
        .change_notices(false)
        .open()
        .unwrap();
    let loud = open(cluster, &schema, "loud");
    assert!(quiet.changes().is_none(), "it would not see its own writes");
    let mut feed = loud.changes().expect("a PgStore has a change feed");
    assert_eq!(
        feed.wait(Duration::from_millis(10)),
        taskstore::Changes::Missed
    );
    let kept = quiet.create(NewTask::new()).unwrap();
    let update = TaskUpdate::new().status_message("on it");
    assert!(quiet.update(&kept.id, update).unwrap().is_applied());
    assert_eq!(quiet.renew_leases().unwrap(), 1);
    let done = quiet.create(NewTask::new()).unwrap();
    assert!(quiet.complete(&done.id, json!(1)).unwrap().is_applied());
    let deleted = quiet.create(NewTask::new()).unwrap();
    assert!(quiet.delete(&deleted.id).unwrap());
    let expiring = quiet
        .create(NewTask::new().ttl(Duration::from_secs(1)))
        .unwrap();
    clock.advance(Duration::from_secs(2));
    assert_eq!(quiet.sweep().unwrap().deleted, 1);
    let marker = loud.create(NewTask::new()).unwrap();
    let mut seen = Vec::new();
    wait_until("the feed to name the marker", || {
        if let taskstore::Changes::Tasks(ids) = feed.wait(Duration::from_millis(100)) {
            seen.extend(ids);
        }
        seen.contains(&marker.id)
    });
    let quiet_ids = [&kept.id, &done.id, &deleted.id, &expiring.id];
    assert!(
        seen.iter().all(|id| !quiet_ids.contains(&id)),
        "notified by the quiet handle: {seen:?}"
    );
    // Its writes are there all the same.
    let stored = loud.get(&kept.id).unwrap().unwrap();
    assert_eq!(stored.status_message.as_deref(), Some("on it"));
    assert!(loud.get(&done.id).unwrap().unwrap().is_terminal());
}

/// A create at a time the backend cannot store (a host's own clock past
/// 2262, `TimeSource::Clock`) is refused, naming the task and the range,
/// and leaves nothing to undo: no version at that time can be stored, so
/// its undo finds it "not there" at once. (The undo failed on the same
/// range check, and the task stayed in the handle's list of failed creates
/// to remove, tried again at every renewal pass.)
#[test]
fn a_create_at_a_time_it_cannot_store_is_refused_and_leaves_nothing_to_undo() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("far_future");
    let clock = Arc::new(ManualClock::new(
        time::macros::datetime!(2300-01-01 0:00 UTC),
    ));
    let store = PgStore::builder(cluster.conninfo())
        .schema(&schema)
        .clock(clock)
        .time_source(TimeSource::Clock)
        .open()
        .unwrap();
    let logged = common::Logged::default();
    let err = tracing::subscriber::with_default(logged.clone(), || {
        let err = store.create(NewTask::new()).unwrap_err();
        let _ = store.renew_leases().unwrap();
        err
    });
    let message = err.to_string();
    assert!(
        message.contains("insert task") && message.contains("outside the years 1677 to 2262"),
        "{message}"
    );
    assert_eq!(
        logged.warnings().len(),
        0,
        "nothing was left to undo: {:?}",
        logged.warnings()
    );
    assert!(store.list(&ListQuery::all()).unwrap().tasks.is_empty());
}

/// The system clock, moved on by hand: a host's wall clock after a resume
/// (or a step), which goes on ticking from there.
#[derive(Debug, Default)]
struct JumpingClock(std::sync::atomic::AtomicI64);

impl JumpingClock {
    fn jump(&self, by: Duration) {
        let nanos = i64::try_from(by.as_nanos()).unwrap();
        self.0.fetch_add(nanos, std::sync::atomic::Ordering::SeqCst);
    }
}

impl taskstore::Clock for JumpingClock {
    fn now(&self) -> time::OffsetDateTime {
        let jumped = self.0.load(std::sync::atomic::Ordering::SeqCst);
        time::OffsetDateTime::now_utc() + time::Duration::nanoseconds(jumped)
    }
}

/// A role or connection whose `search_path` puts a schema others may write
/// to before `pg_catalog` cannot have the
/// store's statements call that schema's functions in place of the
/// server's: every session of the store resolves names in `pg_catalog`
/// alone (its tables are qualified). (A `pg_notify` planted there was
/// called by every write, which failed.)
#[test]
fn a_planted_function_on_the_search_path_is_never_called() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("planted");
    let planted = fresh_schema("evil");
    let mut client = cluster.client();
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {planted};
             CREATE FUNCTION {planted}.pg_notify(text, text) RETURNS void
                 AS $$ BEGIN RAISE EXCEPTION 'the planted pg_notify ran'; END $$
                 LANGUAGE plpgsql;"
        ))
        .unwrap();
    let conninfo = format!(
        "{} options='-c search_path={planted},pg_catalog'",
        cluster.conninfo()
    );
    let store = PgStore::builder(conninfo).schema(&schema).open().unwrap();
    let task = store
        .create(NewTask::new())
        .unwrap_or_else(|e| panic!("a create on a planted search_path: {e}"));
    assert!(
        store
            .complete(&task.id, serde_json::json!(1))
            .unwrap()
            .is_applied()
    );
}

/// A host suspended (or its VM paused) for an hour: its monotonic clock
/// stood still, while its wall clock and the server's went on. The first
/// operation after the resume goes by the server's time: a create with a
/// TTL of half an hour makes a task that reads back, a renewal writes a
/// lease that another host does not reap. (Both went by the time carried
/// on from before the suspend, an hour behind the server's: the create
/// made a task already expired, `get` then found none; the renewal was
/// `Applied` with a lease that had lapsed, and the other host reaped the
/// live task at once. The operations measured the server again only when
/// they took a connection, after they had read the time.)
#[test]
fn a_hosts_first_operations_after_a_suspend_go_by_the_servers_time() {
    let Some(cluster) = pg_cluster::private_faked() else {
        return;
    };
    let schema = fresh_schema("suspended");
    let local = Arc::new(JumpingClock::default());
    let store = PgStore::builder(cluster.conninfo())
        .schema(&schema)
        .instance_id("host-a")
        .clock(local.clone())
        .open()
        .unwrap();
    let running = store.create(NewTask::new()).unwrap();
    let mut client = cluster.client();
    let mut server_now =
        || time::OffsetDateTime::from_unix_timestamp_nanos(server_nanos(&mut client)).unwrap();
    let near = |what: &str, at: time::OffsetDateTime, server: time::OffsetDateTime| {
        assert!(
            (at - server).abs() < time::Duration::minutes(5),
            "{what} at {at}, the server's time {server}"
        );
    };

    // The suspend: the two wall clocks move on an hour, the monotonic one
    // does not.
    cluster.move_clock("+1h");
    local.jump(Duration::from_secs(3600));
    let made = store
        .create(NewTask::new().ttl(Duration::from_secs(1800)))
        .unwrap();
    near("the first create after it", made.created_at, server_now());
    assert!(
        store.get(&made.id).unwrap().is_some(),
        "a task the create made reads back"
    );

    // Another, and a renewal first.
    cluster.move_clock("+2h");
    local.jump(Duration::from_secs(3600));
    let renewed = store.renew_lease(&running.id).unwrap();
    assert!(renewed.is_applied());
    let lease = renewed.task().lease_expires_at.unwrap();
    let server = server_now();
    assert!(
        lease > server,
        "the renewal wrote a lease that lapsed already: {lease}, the server's time {server}"
    );
    let other = open(&cluster, &schema, "host-b");
    let reaped = other.reap().unwrap();
    assert!(
        reaped.tasks.is_empty(),
        "another host reaped a task its owner had just renewed: {:?}",
        reaped.tasks
    );
}

/// The database server's clock stepped forward ten minutes, then set
/// right (NTP): a host that measured the step keeps its time (it never
/// goes back), but judges other owners' leases by its clock's reading,
/// which follows the server's again once it has measured it set right, so
/// it reaps none of the live tasks their owner renewed since. (It reaped
/// them, for as long as the step: its time stayed ten minutes ahead until
/// the server's caught up.)
#[test]
fn a_host_that_measured_a_server_clock_step_reaps_no_live_task_once_it_is_set_right() {
    let Some(cluster) = pg_cluster::private_faked() else {
        return;
    };
    let schema = fresh_schema("server_step");
    let owner = open(&cluster, &schema, "owner");
    let running = owner.create(NewTask::new()).unwrap();
    let local = Arc::new(JumpingClock::default());
    let seer = PgStore::builder(cluster.conninfo())
        .schema(&schema)
        .instance_id("seer")
        .clock(local.clone())
        .open()
        .unwrap();

    // The step; the seer's local wall clock parts from its monotonic one,
    // so that its next operation measures the server's again.
    cluster.move_clock("+10m");
    local.jump(Duration::from_secs(2));
    seer.get(&TaskId::new()).unwrap();
    let ahead = seer.now();
    let lease = running.lease_expires_at.unwrap();
    assert!(
        ahead > lease + time::Duration::minutes(5),
        "the seer measured the step: its time {ahead}, the lease {lease}"
    );

    // Set right, and measured so; the owner renews from the right time.
    cluster.move_clock("+0");
    local.jump(Duration::from_secs(2));
    seer.get(&TaskId::new()).unwrap();
    assert!(seer.now() >= ahead, "the seer's time never goes back");
    assert!(owner.renew_lease(&running.id).unwrap().is_applied());

    let reaped = seer.reap().unwrap();
    assert!(reaped.tasks.is_empty(), "live work reaped: {reaped:?}");
    let stored = owner.get(&running.id).unwrap().unwrap();
    assert_eq!(stored.status, TaskStatus::Working);
}

/// The database server's clock stepped back ten minutes, then set right
/// again before it caught up, its owner renewing a task throughout, for
/// two leases: a peer that measured the server set right reaps none of it.
/// (The owner's time stood still while the server's clock read behind it,
/// and so did the leases it renewed from it: the peer reaped the live task
/// at its first reap.)
#[test]
fn a_task_renewed_while_the_server_clock_was_stepped_back_lives_once_it_is_set_right() {
    let Some(cluster) = pg_cluster::private_faked() else {
        return;
    };
    let schema = fresh_schema("server_back");
    let lease = Duration::from_secs(2);
    let local = Arc::new(JumpingClock::default());
    let handle = |instance: &str| {
        PgStore::builder(cluster.conninfo())
            .schema(&schema)
            .instance_id(instance)
            .lease(lease)
            .clock(local.clone())
            .open()
            .unwrap()
    };
    let owner = handle("owner");
    let peer = handle("peer");
    let running = owner.create(NewTask::new()).unwrap();

    // The step back; the local wall clock parts from the monotonic one, so
    // that the next operation of each handle measures the server again.
    cluster.move_clock("-10m");
    local.jump(Duration::from_secs(2));
    for _ in 0..20 {
        assert!(owner.renew_lease(&running.id).unwrap().is_applied());
        std::thread::sleep(lease / 10);
    }
    let offset = owner.server_time().unwrap().offset;
    assert!(
        offset < time::Duration::minutes(-5),
        "the owner measured the step: {offset}"
    );

    // Set right, measured so by the peer before the owner renews again.
    cluster.move_clock("+0");
    local.jump(Duration::from_secs(2));
    peer.get(&TaskId::new()).unwrap();
    let offset = peer.server_time().unwrap().offset;
    assert!(
        offset > time::Duration::minutes(-5),
        "the peer measured the server set right: {offset}"
    );
    let reaped = peer.reap().unwrap();
    assert!(reaped.tasks.is_empty(), "live work reaped: {reaped:?}");
    let stored = owner.get(&running.id).unwrap().unwrap();
    assert_eq!(stored.status, TaskStatus::Working);
}

/// The time is carried on by the monotonic clock, which stands still while
/// the host is suspended (or its VM paused) while the wall clock does not:
/// once the two part by more than a second since the last measurement, the
/// next operation measures the server's clock again, at once, not at the
/// end of the refresh period (30 s, during which the handle's time lagged
/// by the whole suspend), and then not again: the measurement is the new
/// baseline. The local wall clock jumps a minute, as a resume shows it.
#[test]
fn a_wall_clock_that_parts_from_the_monotonic_one_is_measured_again_at_once() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("clock_parted");
    let local = Arc::new(JumpingClock::default());
    let store = PgStore::builder(cluster.conninfo())
        .schema(&schema)
        .clock(local.clone())
        .open()
        .unwrap();
    let measured = store.server_time().unwrap().offset;
    local.jump(Duration::from_secs(60));
    store.get(&TaskId::new()).unwrap();
    let again = store.server_time().unwrap();
    let off = (again.offset - (measured - time::Duration::seconds(60))).abs();
    assert!(
        off < time::Duration::seconds(5),
        "measured {measured}, then {again:?} after the wall clock moved a minute"
    );
    // Measured once: the clocks agree with the new baseline (a measurement
    // reports a round trip and an offset of its own each time).
    for _ in 0..20 {
        store.get(&TaskId::new()).unwrap();
    }
    assert_eq!(
        store.server_time().unwrap(),
        again,
        "measured again and again"
    );
}

/// A single write (an update, a completion) whose reply is lost after the
/// server committed it reports it applied: the handle finds the task stored
/// as it was to write it. (It reported an error: a retried completion then
/// read "already terminal", the caller's own result shown as another's,
/// and no completion event was sent.)
#[test]
fn a_single_write_whose_reply_is_lost_after_the_commit_reports_it_applied() {
    let Some(cluster) = cluster() else { return };
    let (schema, proxy, s) = behind_a_proxy(cluster, "lost_replace");
    let other = open(cluster, &schema, "other");
    let task = s.create(NewTask::new()).unwrap();
    proxy.arm(&[task.id.as_str(), "half way"]);
    let updated = s
        .update(&task.id, TaskUpdate::new().status_message("half way"))
        .unwrap_or_else(|e| panic!("an update whose reply was lost: {e}"));
    assert_eq!(proxy.cuts(), 1, "the update's reply was lost");
    assert_eq!(other.get(&task.id).unwrap().as_ref(), Some(updated.task()));
    assert_eq!(updated.task().revision, 2, "applied once");
    proxy.arm(&[task.id.as_str(), "the answer"]);
    let done = s
        .complete(&task.id, json!("the answer"))
        .unwrap_or_else(|e| panic!("a completion whose reply was lost: {e}"));
    assert_eq!(proxy.cuts(), 2, "the completion's reply was lost");
    assert!(done.is_applied(), "{done:?}");
    assert_eq!(other.get(&task.id).unwrap().as_ref(), Some(done.task()));
}

/// A `delete` whose reply is lost after the server committed it stays an
/// error, naming the task: the task gone afterwards may be another host's
/// delete, which a second `true` would contradict. It is gone, and a delete
/// tried again says so (`false`).
#[test]
fn a_delete_whose_reply_is_lost_after_the_commit_stays_an_error() {
    let Some(cluster) = cluster() else { return };
    let (schema, proxy, s) = behind_a_proxy(cluster, "lost_delete");
    let other = open(cluster, &schema, "other");
    let task = s.create(NewTask::new()).unwrap();
    proxy.arm(&[task.id.as_str()]);
    let e = s
        .delete(&task.id)
        .expect_err("a delete whose reply was lost is not reported done");
    assert_eq!(proxy.cuts(), 1, "the delete's reply was lost");
    assert!(e.to_string().contains(task.id.as_str()), "{e}");
    assert_eq!(
        other.get(&task.id).unwrap(),
        None,
        "the delete was committed"
    );
    assert!(!s.delete(&task.id).unwrap(), "nothing left to delete");
}

/// A sweep whose batch removal loses its reply after the commit counts the
/// tasks it removed. (It said 0 deleted, and sent no expiry events, with
/// the tasks gone.)
#[test]
fn a_sweep_whose_reply_is_lost_after_the_commit_counts_what_it_removed() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("lost_sweep");
    let proxy = pg_cluster::LosesAReply::start(cluster);
    let clock = ManualClock::new(time::OffsetDateTime::now_utc());
    let s = on_clock(&proxy.conninfo(), &schema, "sweeper", &clock)
        .open()
        .unwrap();
    let tasks: Vec<Task> = (0..2)
        .map(|_| {
            s.create(NewTask::new().ttl(Duration::from_secs(1)))
                .unwrap()
        })
        .collect();
    clock.advance(Duration::from_secs(2));
    proxy.arm(&[tasks[0].id.as_str(), tasks[1].id.as_str()]);
    let swept = s.sweep_expired().unwrap();
    assert_eq!(proxy.cuts(), 1, "the batch's reply was lost");
    let other = open(cluster, &schema, "other");
    for task in &tasks {
        assert_eq!(other.get(&task.id).unwrap(), None);
    }
    assert_eq!(swept, 2, "both tasks were removed by this sweep");
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

/// A handle's guess of a task (the version it last wrote, kept to save a
/// read) never stands for another task made under the same id at the same
/// instant (a clock that stands still): a late update goes onto the task
/// as stored, and a finished one stays finished. (The update was decided
/// on the guess and written over the new task, whose revision and creation
/// time were the guess's: the finished task ran again, its result gone,
/// and the active-task counter went below the active rows.)
#[test]
fn a_handles_guess_never_stands_for_a_task_made_again_at_the_same_instant() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("guess_aba");
    let clock = ManualClock::new(time::OffsetDateTime::now_utc());
    let handle = |instance: &str| {
        on_clock(&cluster.conninfo(), &schema, instance, &clock)
            .open()
            .unwrap()
    };
    let (a, b) = (handle("a"), handle("b"));
    let id = TaskId::parse("made-again").unwrap();
    // Updated: its version, made again by `b`.
    a.create(NewTask::new().id(id.clone())).unwrap();
    assert!(
        a.update(&id, TaskUpdate::new().metadata("first", 1))
            .unwrap()
            .is_applied()
    );
    assert!(b.delete(&id).unwrap());
    b.create(NewTask::new().id(id.clone())).unwrap();
    let theirs = b
        .update(&id, TaskUpdate::new().metadata("by", "b"))
        .unwrap()
        .into_task();
    assert_eq!(theirs.revision, 2, "the guess's revision and creation time");
    let late = a
        .update(&id, TaskUpdate::new().metadata("late", "a"))
        .unwrap()
        .into_task();
    assert_eq!(
        (
            late.metadata.get("by"),
            late.metadata.get("first"),
            late.owner.as_deref()
        ),
        (Some(&json!("b")), None, Some("b")),
        "the late update goes onto b's task: {late:?}"
    );
    // Finished: it stays as `b` finished it.
    assert!(b.delete(&id).unwrap());
    a.create(NewTask::new().id(id.clone())).unwrap();
    assert!(
        a.update(&id, TaskUpdate::new().metadata("first", 2))
            .unwrap()
            .is_applied()
    );
    assert!(b.delete(&id).unwrap());
    b.create(NewTask::new().id(id.clone())).unwrap();
    let done = b.complete(&id, json!("b's result")).unwrap().into_task();
    assert_eq!(done.revision, 2);
    assert_eq!(
        a.update(&id, TaskUpdate::new().metadata("late", "a"))
            .unwrap(),
        Transition::AlreadyTerminal(done.clone())
    );
    assert_eq!(b.get(&id).unwrap(), Some(done));
    let mut client = cluster.client();
    let (counter, active) = counter_and_active(&mut client, &schema);
    assert_eq!(counter, active, "the counter agrees with the active rows");
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
