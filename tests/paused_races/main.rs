//! Races made on purpose: one handle's call held at the file-system seam
//! ([`FaultInjector::pause_at`]) at the point a race would hurt, while
//! another handle acts. What each test checks is the state both leave, not
//! how long anything took. The held call is let on once the racer is seen
//! blocked on the task's stripe lock (`/proc/locks`), or has finished: a
//! racer that does not wait (a broken store) has then acted.

#![cfg(feature = "fault-injection")]

mod batches;
#[path = "../common/mod.rs"]
mod common;
mod forks;
mod fsyncs;
mod opens;
mod removals;
mod scans;
mod stripes;
mod sweeps;

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::json;
use taskstore::{
    FaultInjector, FileStore, FsOp, ListQuery, ManualClock, NewTask, Task, TaskId, TaskStatus,
    TaskStore,
};
use time::macros::datetime;

fn open(dir: &Path, clock: &ManualClock, faults: Option<&FaultInjector>) -> FileStore {
    let mut builder = FileStore::builder(dir).clock(Arc::new(clock.clone()));
    if let Some(faults) = faults {
        builder = builder.fault_injector(faults.clone());
    }
    builder.open().unwrap()
}

/// A store through `faults` whose passes wait for a held stripe 300 ms in
/// all: a stuck one runs their wait out soon.
fn waiting_briefly(
    root: &Path,
    clock: &ManualClock,
    faults: &FaultInjector,
) -> taskstore::FileStoreBuilder {
    FileStore::builder(root)
        .clock(Arc::new(clock.clone()))
        .fault_injector(faults.clone())
        .stripe_wait(Duration::from_millis(300))
}
