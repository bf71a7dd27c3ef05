//! What the fuzz targets (`fuzz/`) found, each as a plain test through the
//! public API, so that none of it comes back.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use taskstore::{
    DEFAULT_LEASE, Error, FileStore, ListQuery, ManualClock, NewTask, Task, TaskId, TaskStatus,
    TaskStore, TaskUpdate, Transition, UnreadableAction,
};
use time::OffsetDateTime;

/// A valid format-1 task file for `id`, with `revision`.
fn task_file(id: &str, revision: u64) -> String {
    format!(
        r#"{{"format":1,"task":{{"taskId":"{id}","status":"working","createdAt":"2026-05-01T09:00:00Z","lastUpdatedAt":"2026-05-01T09:00:00Z","ttlMs":null,"revision":{revision}}}}}"#
    )
}

/// `leaf` inside `depth` arrays.
fn nested(depth: usize) -> Value {
    let mut value = json!(1);
    for _ in 0..depth {
        value = json!([value]);
    }
    value
}

fn quarantined(root: &Path) -> usize {
    fs::read_dir(root.join("quarantine")).map_or(0, |e| e.count())
}

/// The store accepts a payload of any depth, but reads task files with
/// serde_json's recursion limit (128 levels, the task object included): a
/// `complete` with a result nested 127 deep returns `Ok`, and then no
/// handle can read the task back (`Corrupt`), and a listing sets the
/// store's own file aside. A payload must read back whenever its write was
/// acknowledged (or be refused with a typed error before anything is
/// written).
#[test]
fn a_deeply_nested_payload_that_was_accepted_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let mut unreadable = Vec::new();
    for depth in [1, 64, 125, 126, 127, 128, 200, 1_000] {
        let task = store.create(NewTask::new()).unwrap();
        let result = nested(depth);
        if store.complete(&task.id, result.clone()).is_err() {
            // Refused before anything was written: allowed.
            continue;
        }
        let fresh = FileStore::open(dir.path()).unwrap();
        match fresh.get(&task.id) {
            Ok(Some(back)) => assert_eq!(back.result, Some(result), "depth {depth}"),
            other => unreadable.push((depth, format!("{other:?}"))),
        }
    }
    let listed = FileStore::open(dir.path())
        .unwrap()
        .list(&ListQuery::all())
        .unwrap();
    assert!(
        unreadable.is_empty(),
        "accepted but unreadable: {unreadable:#?}; the listing shows {} of 8 tasks and set aside {}",
        listed.tasks.len(),
        quarantined(dir.path())
    );
    assert_eq!(quarantined(dir.path()), 0);
}

/// A task with several values too deep is refused with the depth of the
/// deepest, as `Error::TooDeep` says (it gave the first one's), and nothing
/// is written.
#[test]
fn too_deep_names_the_deepest_of_several_values() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let limit = taskstore::MAX_DEPTH;
    let new = NewTask::new()
        .id(TaskId::parse("deep").unwrap())
        .metadata("a", nested(limit + 1))
        .metadata("b", nested(limit + 7))
        .metadata("c", nested(limit + 2));
    match store.create(new) {
        Err(Error::TooDeep { id, depth, .. }) => {
            assert_eq!(id.as_str(), "deep");
            assert_eq!(depth, limit + 7);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(store.get(&TaskId::parse("deep").unwrap()).unwrap(), None);
}

/// The same through `update` (input requests) and `create` (metadata): every
/// payload the store takes, it reads back.
#[test]
fn deeply_nested_input_requests_and_metadata_that_were_accepted_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let mut unreadable = Vec::new();
    for depth in [126, 127, 200] {
        let created = store.create(NewTask::new().metadata("deep", nested(depth)));
        if let Ok(task) = &created
            && !matches!(store.get(&task.id), Ok(Some(_)))
        {
            unreadable.push(format!("metadata {depth} deep"));
        }
        let task = store.create(NewTask::new()).unwrap();
        let update = TaskUpdate::new()
            .status(TaskStatus::InputRequired)
            .input_requests(nested(depth));
        if store.update(&task.id, update).is_ok() && !matches!(store.get(&task.id), Ok(Some(_))) {
            unreadable.push(format!("input requests {depth} deep"));
        }
    }
    assert!(
        unreadable.is_empty(),
        "accepted but unreadable: {unreadable:?}"
    );
}

/// Finite floats, as the ops fuzz target builds them (`Value::from(f64)`),
/// do not all read back exactly: serde_json without its `float_roundtrip`
/// feature parses some 17-digit decimals to a neighbouring float. A task
/// read back from its file then differs from the task the write returned.
#[test]
fn every_finite_float_reads_back_exactly() {
    // A fixed pseudo-random sample of bit patterns (xorshift64), plus
    // values found by the fuzzer.
    let mut floats: Vec<f64> = vec![
        // Found by the ops fuzz target (as a metadata value): reads back
        // as 8.900286939743844e-308.
        8.900286939743845e-308,
    ];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    while floats.len() < 20_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let x = f64::from_bits(state);
        if x.is_finite() {
            floats.push(x);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let task = store.create(NewTask::new()).unwrap();
    let result = Value::from(floats.clone());
    let done = store.complete(&task.id, result.clone()).unwrap();
    assert_eq!(done.task().result.as_ref(), Some(&result));
    let back = FileStore::open(dir.path())
        .unwrap()
        .get(&task.id)
        .unwrap()
        .unwrap()
        .result
        .unwrap();
    let back: Vec<f64> = back
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let changed: Vec<String> = floats
        .iter()
        .zip(&back)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .map(|(a, b)| {
            format!(
                "{a:e} ({:#x}) read back as {b:e} ({:#x})",
                a.to_bits(),
                b.to_bits()
            )
        })
        .collect();
    assert!(
        changed.is_empty(),
        "{} of {} floats changed, for example {:#?}",
        changed.len(),
        floats.len(),
        &changed[..changed.len().min(5)]
    );
}

/// A task file holding the highest revision (a file another program wrote:
/// the store's own writes never get there) makes `update` overflow: a panic
/// with debug assertions, a revision wrapped to 0 without. The update must
/// be refused with an error instead, and the task left as it was.
#[test]
fn an_update_at_the_highest_revision_neither_panics_nor_wraps() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let id = TaskId::parse("max-revision").unwrap();
    fs::write(
        dir.path().join("active/max-revision.json"),
        task_file(id.as_str(), u64::MAX),
    )
    .unwrap();
    assert_eq!(store.get(&id).unwrap().unwrap().revision, u64::MAX);
    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        store.update(&id, TaskUpdate::new().status_message("one more"))
    }));
    let got = got.expect("update panicked");
    assert!(got.is_err(), "update at revision u64::MAX returned {got:?}");
    assert_eq!(store.get(&id).unwrap().unwrap().revision, u64::MAX);
}

/// The task-file envelope is an object, `{"format":1,"task":{...}}`
/// (FORMAT.md), but the decoder also reads a JSON array `[1, {...}]` as
/// one (serde reads a struct from a sequence), and `[2]` as a newer format.
/// Such a file is corrupt.
#[test]
fn a_json_array_is_not_a_task_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let id = TaskId::parse("array").unwrap();
    let object: Value = serde_json::from_str(&task_file("array", 1)).unwrap();
    let array = json!([1, object["task"]]);
    let path = dir.path().join("active/array.json");
    fs::write(&path, array.to_string()).unwrap();
    match store.get(&id) {
        Err(Error::Corrupt { path: p, .. }) => assert_eq!(p, path),
        other => panic!("an array read as {other:?}"),
    }
    fs::write(&path, "[2]").unwrap();
    match store.get(&id) {
        Err(Error::Corrupt { path: p, .. }) => assert_eq!(p, path),
        other => panic!("[2] read as {other:?}"),
    }
}

/// `complete(id, null)` returns the task with `result: Some(Null)`, the file
/// says `"result":null`, and every read gives `result: None`: the task read
/// back is not the task the write returned (and a `MemoryStore` keeps
/// `Some(Null)`). The same for `fail` (`error`) and `update`'s input
/// requests. A write's returned task and every later read must agree.
#[test]
fn a_null_payload_reads_back_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let mut differ = Vec::new();
    let completed = store.create(NewTask::new()).unwrap();
    let written = store.complete(&completed.id, Value::Null).unwrap();
    let failed = store.create(NewTask::new()).unwrap();
    let written_failed = store.fail(&failed.id, Value::Null).unwrap();
    let waiting = store.create(NewTask::new()).unwrap();
    let written_waiting = store
        .update(
            &waiting.id,
            TaskUpdate::new()
                .status(TaskStatus::InputRequired)
                .input_requests(Value::Null),
        )
        .unwrap();
    let fresh = FileStore::open(dir.path()).unwrap();
    for (what, written) in [
        ("complete", written),
        ("fail", written_failed),
        ("update", written_waiting),
    ] {
        let read = fresh.get(&written.task().id).unwrap().unwrap();
        if &read != written.task() {
            differ.push(format!(
                "{what}: wrote result {:?} error {:?} input {:?}, read result {:?} error {:?} input {:?}",
                written.task().result,
                written.task().error,
                written.task().input_requests,
                read.result,
                read.error,
                read.input_requests
            ));
        }
    }
    assert!(differ.is_empty(), "{differ:#?}");
}

/// A store whose clock reads `at` and whose tasks may be `cap` bytes.
fn capped_store(dir: &Path, clock: &ManualClock, cap: usize) -> FileStore {
    FileStore::builder(dir)
        .clock(Arc::new(clock.clone()))
        .instance_id("owner")
        .max_payload_bytes(cap)
        .open()
        .unwrap()
}

/// The payload cap also applies to what the store itself adds to a task it
/// already accepted: a lease renewal whose timestamp is a few characters
/// longer (`…:05Z` becomes `…:05.001Z`), or the orphan error a reaper
/// records. `renew_lease` documents `NotFound` and `NotOwner` only, yet
/// returns `PayloadTooLarge`: the owner of a task near the cap cannot keep
/// it alive. (`MemoryStore` checks neither, so the backends disagree.)
#[test]
fn a_task_near_the_payload_cap_can_renew_its_lease() {
    let clock = ManualClock::new(OffsetDateTime::from_unix_timestamp(1_780_000_000).unwrap());
    let new = || {
        NewTask::new()
            .id(TaskId::parse("near-cap").unwrap())
            .metadata("pad", "x".repeat(5_000))
    };
    // The size of exactly this task, measured in a store of its own.
    let probe_dir = tempfile::tempdir().unwrap();
    let probe = capped_store(probe_dir.path(), &clock, 1 << 20);
    let cap = serde_json::to_vec(&probe.create(new()).unwrap())
        .unwrap()
        .len();
    // The owner's store, whose cap is exactly the size it accepted.
    let dir = tempfile::tempdir().unwrap();
    let store = capped_store(dir.path(), &clock, cap);
    let task = store.create(new()).unwrap();
    assert_eq!(serde_json::to_vec(&task).unwrap().len(), cap);
    clock.advance(Duration::from_millis(1));
    let renewed = store.renew_lease(&task.id);
    assert!(
        matches!(renewed, Ok(Transition::Applied(_))),
        "renewal of a task the store accepted at {cap} bytes: {renewed:?}"
    );
    // And what it renewed reads back, from another handle too.
    let fresh = capped_store(dir.path(), &clock, cap);
    assert_eq!(
        fresh.get(&task.id).unwrap().as_ref(),
        Some(renewed.unwrap().task())
    );
}

/// One orphan near the cap makes `reap_orphans` fail (`PayloadTooLarge`,
/// undocumented for it) every time it is called, whatever the other
/// orphans: the reaper stops at it. Every lapsed task must be reaped.
#[test]
fn an_orphan_near_the_payload_cap_does_not_stop_the_reaper() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(OffsetDateTime::from_unix_timestamp(1_780_000_000).unwrap());
    let roomy = capped_store(dir.path(), &clock, 1 << 20);
    let big = roomy
        .create(NewTask::new().metadata("pad", "x".repeat(500)))
        .unwrap();
    let small: Vec<Task> = (0..4)
        .map(|_| roomy.create(NewTask::new()).unwrap())
        .collect();
    let cap = serde_json::to_vec(&big).unwrap().len() + 16;
    clock.advance(DEFAULT_LEASE + Duration::from_secs(1));
    let reaper = capped_store(dir.path(), &clock, cap);
    let first = reaper.reap_orphans();
    let second = reaper.reap_orphans();
    let failed: Vec<&TaskId> = std::iter::once(&big)
        .chain(&small)
        .filter(|t| {
            roomy
                .get(&t.id)
                .unwrap()
                .is_none_or(|t| t.status != TaskStatus::Failed)
        })
        .map(|t| &t.id)
        .collect();
    assert!(
        failed.is_empty() && first.is_ok() && second.is_ok(),
        "not reaped: {failed:?}; first reap: {:?}; second reap: {:?}",
        first.map(|r| r.len()),
        second.map(|r| r.len())
    );
}

/// A file in `active/` whose listing keys read but whose task does not
/// decode (its result nests past the decoder's limit) was reported by the
/// listing that met it as left in place, and set aside only by the next
/// one. It is set aside by the listing that meets it, as a file that does
/// not read at all is.
#[test]
fn a_task_whose_keys_read_but_whose_body_does_not_is_set_aside_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let good = store.create(NewTask::new()).unwrap();
    let body = format!(
        r#"{{"format":1,"task":{{"taskId":"deep","status":"completed","createdAt":"2026-05-01T09:00:00Z","lastUpdatedAt":"2026-05-01T09:00:00Z","ttlMs":null,"revision":1,"result":{}}}}}"#,
        nested(200)
    );
    let path = dir.path().join("active").join("deep.json");
    fs::write(&path, body).unwrap();
    let page = store.list(&ListQuery::all()).unwrap();
    assert_eq!(page.tasks, vec![good]);
    assert_eq!(page.skipped.len(), 1, "{:?}", page.skipped);
    assert_eq!(page.skipped[0].action, UnreadableAction::SetAside);
    assert!(!path.exists(), "set aside by this listing");
    assert_eq!(quarantined(dir.path()), 1);
    let again = store.list(&ListQuery::all()).unwrap();
    assert!(
        again.skipped.is_empty(),
        "reported once: {:?}",
        again.skipped
    );
}
