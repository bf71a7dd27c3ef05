//! Leases and orphan reaping.
//!
//! In one process, under a `ManualClock`, both backends: the edges of a lease
//! (just before and at its lapse), renewal, ownership, terminal tasks.
//! Across processes, on the system clock with short leases: a killed owner's
//! tasks are reaped by another process, exactly those; a live owner that
//! renews is never reaped; two reapers at once make one transition per task.
//! The cross-process tests never assert on timing: they wait for conditions
//! by polling, with a bound that only fails a hung test.

#[path = "../common/mod.rs"]
mod common;
mod processes;
mod reaps;
mod renewals;
mod stopped;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{id, read_tasks, spawn, touch, wait_for, wait_until, write_atomic, write_tasks};
use serde_json::json;
use taskstore::{
    Durability, Error, FileStore, ListQuery, ManualClock, MemoryStore, NewTask, Task, TaskId,
    TaskStatus, TaskStore, TaskUpdate, Transition,
};
use time::OffsetDateTime;
use time::macros::datetime;

const T0: OffsetDateTime = datetime!(2030-01-01 0:00 UTC);
const LEASE: Duration = Duration::from_secs(10);

/// The same scenario on both backends, each owned by instance `owner` with a
/// 10 s lease on `clock`. The temp dir keeps the file store's directory alive.
fn backends(clock: &ManualClock) -> Vec<(Box<dyn TaskStore>, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let file = FileStore::builder(dir.path())
        .clock(Arc::new(clock.clone()))
        .instance_id("owner")
        .lease(LEASE)
        .open()
        .unwrap();
    let memory = MemoryStore::builder()
        .clock(Arc::new(clock.clone()))
        .instance_id("owner")
        .lease(LEASE)
        .build()
        .unwrap();
    vec![(Box::new(file), Some(dir)), (Box::new(memory), None)]
}

/// Two handles on one store directory: instances `a` and `b`.
fn two_instances(clock: &ManualClock) -> (tempfile::TempDir, FileStore, FileStore) {
    let dir = tempfile::tempdir().unwrap();
    let open = |instance: &str| {
        FileStore::builder(dir.path())
            .clock(Arc::new(clock.clone()))
            .instance_id(instance)
            .lease(LEASE)
            .open()
            .unwrap()
    };
    let (a, b) = (open("a"), open("b"));
    (dir, a, b)
}

// ---------------------------------------------------------------------------
// Several processes, system clock, short leases.

/// A lease short enough to lapse quickly in a test.
const SHORT_LEASE: Duration = Duration::from_millis(300);

fn open(store: &Path, instance: &str, lease: Duration) -> FileStore {
    FileStore::builder(store)
        .instance_id(instance)
        .lease(lease)
        .open()
        .expect("open the store")
}

fn child_args(store: &Path, work: &Path, rest: &[&str]) -> Vec<String> {
    let mut v = vec![store.display().to_string(), work.display().to_string()];
    v.extend(rest.iter().map(|s| s.to_string()));
    v
}

fn dirs(args: &[String]) -> (PathBuf, PathBuf) {
    (PathBuf::from(&args[0]), PathBuf::from(&args[1]))
}
