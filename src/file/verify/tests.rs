//! Checks through a file-system seam that fails calls on purpose.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use super::FileCheck;
use crate::file::fs::{Fs, FsOp};
use crate::file::problem::ProblemKind;
use crate::file::{Fault, FaultInjector, FileStore};
use crate::store::TaskStore;
use crate::task::NewTask;

/// A finished task's `expiring/` entry that is there but cannot be looked
/// at (`EIO` on its `stat`) is reported as the unreadable entry it is,
/// naming it, never as a finished task missing its entry (which a repair
/// would set out to give back). Before `index_is_missing` told `NotFound`
/// from other errors, the check reported `MissingIndexEntry` for it.
#[test]
fn an_index_entry_that_cannot_be_looked_at_is_unreadable_not_missing() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let task = store
        .create(NewTask::new().ttl(Duration::from_secs(3_600)))
        .unwrap();
    assert!(store.complete(&task.id, json!(1)).unwrap().is_applied());
    drop(store);
    let entries: Vec<PathBuf> = std::fs::read_dir(dir.path().join("expiring"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let [entry] = &entries[..] else {
        panic!("one entry: {entries:?}");
    };
    let faults = FaultInjector::new();
    faults.fail_at(FsOp::Stat, entry, Fault::Eio);
    let check = FileCheck::open_on(
        Fs::with_faults(Some(faults.clone())),
        dir.path(),
        Duration::from_secs(30),
        &|_| {},
    )
    .unwrap();
    let report = check.verify().unwrap();
    assert!(
        faults
            .fired()
            .iter()
            .any(|(op, path)| *op == FsOp::Stat && path == entry),
        "the fault fired"
    );
    let problems: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    assert!(
        !report
            .problems
            .iter()
            .any(|p| matches!(p.kind, ProblemKind::MissingIndexEntry)),
        "an entry that cannot be looked at is not missing: {problems:#?}"
    );
    assert!(
        report.problems.iter().any(|p| &p.path == entry
            && p.id.as_ref() == Some(&task.id)
            && matches!(&p.kind, ProblemKind::Unreadable { error } if error.contains("os error 5"))),
        "the entry is reported unreadable, with its error: {problems:#?}"
    );
}
