//! `PgStore` against a real PostgreSQL: a throwaway cluster started from the
//! system's binaries (`tests/common/pg.rs`), a fresh schema per test. The
//! store's rules through the shared conformance suite, then what only
//! several processes and a real server show: races between processes, a
//! writer killed mid-transaction, a server restart, clocks that disagree.

#![cfg(all(feature = "postgres", feature = "conformance", unix))]

mod common;
#[path = "common/pg.rs"]
mod pg_cluster;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use taskstore::conformance::{self, Setup};
use taskstore::{
    Error, EventLog, ListQuery, NewTask, PgStore, TaskId, TaskStatus, TaskStore, TaskUpdate,
    TimeSource, Transition,
};

use common::{Rng, role, spawn, wait_until};
use pg_cluster::{Cluster, fresh_schema};

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

/// `SELECT active FROM counters` and the number of active rows, behind the
/// store's back.
fn counter_and_active(client: &mut postgres::Client, schema: &str) -> (i64, i64) {
    let counter: i64 = client
        .query_one(&format!("SELECT active FROM {schema}.counters"), &[])
        .unwrap()
        .get(0);
    let active: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM {schema}.tasks WHERE active"),
            &[],
        )
        .unwrap()
        .get(0);
    (counter, active)
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
        .execute(&format!("UPDATE {schema}.schema_version SET version = 2"), &[])
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
    // A database that does not exist: a backend error naming postgres.
    let missing = format!("{} dbname=no_such_db", cluster.conninfo());
    match PgStore::builder(missing).open() {
        Err(e @ Error::Backend {
            backend: "postgres",
            ..
        }) => assert!(e.to_string().contains("connect"), "{e}"),
        other => panic!("a missing database must be a backend error, got {other:?}"),
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
