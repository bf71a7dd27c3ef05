//! A `PgStore` at the largest task PostgreSQL holds: a test of its own,
//! on a cluster of its own (`tests/common/pg.rs`), as it moves a GiB each
//! way and holds some 8 GB of memory while it runs; the other PostgreSQL
//! tests (`tests/pg/`) share theirs.

#![cfg(all(feature = "postgres", unix))]

mod common;
#[path = "common/pg.rs"]
mod pg_cluster;

use std::sync::Arc;
use std::time::Duration;

use pg_cluster::fresh_schema;
use taskstore::backend::Backend;
use taskstore::{ManualClock, NewTask, PgStore, TaskId, TaskStore, TimeSource};

/// A `PgStore` lowers its payload cap to leave the store's headroom under
/// the largest task PostgreSQL holds (one value, and one message, of under
/// 1 GiB), however large the cap asked for: a task at the lowered cap is
/// stored, and once its owner is gone it is reaped by an instance with the
/// longest id whose characters JSON escapes, and reads back (the rules
/// refuse a task over a lowered cap as over any other:
/// `outside_backend::a_backend_that_holds_smaller_tasks_lowers_the_cap_so_its_orphans_can_be_reaped`). (The cap stayed at 1 GiB: a create near it
/// lost its connection, "connection reset by peer", and an orphan near it
/// could never be reaped, each reap's write losing the connection again.)
#[test]
fn a_task_at_the_largest_cap_postgresql_holds_is_stored_and_reaped() {
    let Some(cluster) = pg_cluster::shared() else {
        return;
    };
    let schema = fresh_schema("largest");
    let clock = ManualClock::new(time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap());
    let lease = Duration::from_secs(30);
    let open = |instance: &str| {
        PgStore::builder(cluster.conninfo())
            .schema(&schema)
            .instance_id(instance)
            .time_source(TimeSource::Clock)
            .clock(Arc::new(clock.clone()))
            .lease(lease)
            .max_payload_bytes(taskstore::MAX_MAX_PAYLOAD_BYTES)
            .open()
            .unwrap()
    };
    let owner = open(&"\"".repeat(taskstore::MAX_INSTANCE_ID_LEN));
    let cap = owner.backend().largest_task() - taskstore::OWN_HEADROOM;
    assert!(cap < taskstore::MAX_MAX_PAYLOAD_BYTES, "{cap}");
    let new = || NewTask::new().status_message("s");
    // Fill the metadata to the byte where one more is refused.
    let probe = owner.create(new().metadata("m", "")).unwrap();
    let room = cap - serde_json::to_vec(&probe).unwrap().len();
    assert!(owner.delete(&probe.id).unwrap());
    let task = owner.create(new().metadata("m", "y".repeat(room))).unwrap();
    assert_eq!(serde_json::to_vec(&task).unwrap().len(), cap);
    drop(owner);
    clock.advance(lease * 3);
    let reaper = open(&"\\".repeat(taskstore::MAX_INSTANCE_ID_LEN));
    let reaped = reaper.reap().unwrap();
    assert!(reaped.missed.is_empty(), "{:?}", reaped.missed);
    let ids: Vec<&TaskId> = reaped.tasks.iter().map(|t| &t.id).collect();
    assert_eq!(ids, [&task.id]);
    let stored = reaper.get(&task.id).unwrap().unwrap();
    assert!(stored == reaped.tasks[0], "reads back as reaped");
    assert_eq!(stored.status, taskstore::TaskStatus::Failed);
    assert!(stored.metadata == task.metadata, "keeps its metadata");
}

/// A reap of orphans larger together than the 1 GiB PostgreSQL takes in
/// one message writes them in several statements on the connection it
/// has: 70 orphans at the default 16 MiB cap (1.1 GB), every one reaped,
/// no connection lost. (Written in one statement, the batch failed whole,
/// the server dropping its connection, and each orphan was then written
/// alone on a new one.) The connections are counted by a proxy in front
/// of the server, through which the reaper, with one connection in its
/// pool, is the only client.
#[test]
fn a_reap_of_orphans_larger_than_a_message_together_keeps_its_connection() {
    let Some(cluster) = pg_cluster::shared() else {
        return;
    };
    let schema = fresh_schema("larger_than_a_message");
    let clock = ManualClock::new(time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap());
    let lease = Duration::from_secs(30);
    let proxy = pg_cluster::LosesAReply::start(cluster);
    let open = |conninfo: String, instance: &str| {
        PgStore::builder(conninfo)
            .schema(&schema)
            .instance_id(instance)
            .time_source(TimeSource::Clock)
            .clock(Arc::new(clock.clone()))
            .lease(lease)
            .pool_size(1)
            .change_notices(false)
            .open()
            .unwrap()
    };
    let owner = open(cluster.conninfo(), "owner");
    let cap = taskstore::DEFAULT_MAX_PAYLOAD_BYTES;
    let new = || NewTask::new().status_message("s");
    let probe = owner.create(new().metadata("m", "")).unwrap();
    let room = cap - serde_json::to_vec(&probe).unwrap().len() - 64;
    assert!(owner.delete(&probe.id).unwrap());
    let orphans = 70;
    let mut ids: Vec<TaskId> = (0..orphans)
        .map(|_| {
            owner
                .create(new().metadata("m", "y".repeat(room)))
                .unwrap()
                .id
        })
        .collect();
    assert!(orphans * room > 1 << 30, "together larger than a message");
    drop(owner);
    clock.advance(lease * 3);
    let reaper = open(proxy.conninfo(), "reaper");
    let connections = proxy.accepted();
    let reaped = reaper.reap().unwrap();
    assert!(reaped.missed.is_empty(), "{:?}", reaped.missed);
    let connected = proxy.accepted() - connections;
    let mut got: Vec<TaskId> = reaped.tasks.iter().map(|t| t.id.clone()).collect();
    got.sort();
    ids.sort();
    assert_eq!(got, ids, "every orphan reaped");
    assert!(
        reaped
            .tasks
            .iter()
            .all(|t| t.status == taskstore::TaskStatus::Failed),
        "reaped as failed"
    );
    assert_eq!(
        connected, 0,
        "the reap connected {connected} more times: its batch lost its connection"
    );
    let stored = reaper.get(&ids[0]).unwrap().unwrap();
    assert_eq!(stored.status, taskstore::TaskStatus::Failed);
}
