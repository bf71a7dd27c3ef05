//! `FileStore` specifics: persistence across reopen, several handles as one
//! store, history never read by open or "list active", crash leftovers.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use taskstore::{
    FileStore, ListQuery, ManualClock, NewTask, TaskStatus, TaskStore, TaskUpdate, Transition,
};
use time::OffsetDateTime;

fn count(dir: &Path) -> usize {
    fs::read_dir(dir).unwrap().count()
}

#[test]
fn tasks_survive_reopen_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (running, done) = {
        let store = FileStore::open(dir.path()).unwrap();
        let running = store
            .create(
                NewTask::new()
                    .ttl(Duration::from_secs(3600))
                    .metadata("k", json!({"nested": [1, 2]})),
            )
            .unwrap();
        let running = store
            .update(
                &running.id,
                TaskUpdate::new()
                    .status(TaskStatus::InputRequired)
                    .input_requests(json!({"q": "?"})),
            )
            .unwrap()
            .into_task();
        let done = store.create(NewTask::new()).unwrap();
        let done = store
            .complete(&done.id, json!({"big": "x".repeat(100_000)}))
            .unwrap()
            .into_task();
        (running, done)
    };
    let store = FileStore::open(dir.path()).unwrap();
    assert_eq!(store.get(&running.id).unwrap(), Some(running));
    assert_eq!(store.get(&done.id).unwrap(), Some(done));
}

#[test]
fn several_handles_are_one_store() {
    let dir = tempfile::tempdir().unwrap();
    let a = FileStore::open(dir.path()).unwrap();
    let b = FileStore::open(dir.path()).unwrap();
    let task = a.create(NewTask::new()).unwrap();
    let updated = b
        .update(&task.id, TaskUpdate::new().metadata("b", 1))
        .unwrap()
        .into_task();
    assert_eq!(a.get(&task.id).unwrap(), Some(updated.clone()));
    let won = a.cancel(&task.id, None).unwrap();
    assert!(won.is_applied());
    assert_eq!(
        b.complete(&task.id, json!(1)).unwrap(),
        Transition::AlreadyTerminal(won.into_task())
    );
    assert_eq!(b.list(&ListQuery::all()).unwrap().tasks.len(), 1);
}

#[test]
fn open_and_list_active_never_read_history() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let running = store.create(NewTask::new()).unwrap();
    // History that would be set aside if anything read it.
    for i in 0..50 {
        fs::write(
            dir.path().join("done").join(format!("old-{i}.json")),
            b"not json",
        )
        .unwrap();
    }
    drop(store);
    let store = FileStore::open(dir.path()).unwrap();
    let active = store.list(&ListQuery::active()).unwrap();
    assert_eq!(active.tasks, vec![running.clone()]);
    let working = store
        .list(&ListQuery::all().status(TaskStatus::Working))
        .unwrap();
    assert_eq!(working.tasks, vec![running]);
    assert_eq!(
        count(&dir.path().join("quarantine")),
        0,
        "no finished task file was read"
    );
    assert_eq!(count(&dir.path().join("done")), 50);
    // Listing everything does read history, and sets those files aside.
    assert_eq!(store.list(&ListQuery::all()).unwrap().tasks.len(), 1);
    assert_eq!(count(&dir.path().join("quarantine")), 50);
}

#[test]
fn an_interrupted_terminal_move_is_final_and_finished_later() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let task = store.create(NewTask::new()).unwrap();
    let active_file = dir.path().join("active").join(format!("{}.json", task.id));
    let done_file = dir.path().join("done").join(format!("{}.json", task.id));
    let done = store
        .complete(&task.id, json!("result"))
        .unwrap()
        .into_task();
    assert!(!active_file.exists() && done_file.exists());
    // A writer killed between its two steps leaves the terminal task in active/.
    let interrupt = || fs::rename(&done_file, &active_file).unwrap();
    interrupt();
    assert_eq!(
        store.get(&task.id).unwrap(),
        Some(done.clone()),
        "final at once"
    );
    assert!(store.list(&ListQuery::active()).unwrap().tasks.is_empty());
    assert_eq!(
        store.list(&ListQuery::all()).unwrap().tasks,
        vec![done.clone()]
    );
    // Any write of the task finishes the move (and changes nothing else).
    assert_eq!(
        store.fail(&task.id, json!("late")).unwrap(),
        Transition::AlreadyTerminal(done.clone())
    );
    assert!(!active_file.exists() && done_file.exists());
    // So does a sweep.
    interrupt();
    assert_eq!(store.sweep_expired().unwrap(), 0);
    assert!(!active_file.exists() && done_file.exists());
    // And reopening reads it right all along.
    interrupt();
    drop(store);
    let store = FileStore::open(dir.path()).unwrap();
    assert_eq!(store.get(&task.id).unwrap(), Some(done));
}

#[test]
fn temp_files_of_dead_writers_are_removed_at_open_and_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let task = store.create(NewTask::new()).unwrap();
    let tmp = dir.path().join("tmp");
    fs::write(
        tmp.join(format!("{}.999999.1.tmp", task.id)),
        b"{\"format\":1,\"ta",
    )
    .unwrap();
    drop(store);
    let store = FileStore::open(dir.path()).unwrap();
    assert_eq!(count(&tmp), 0);
    fs::write(tmp.join("other-task.4242.7.tmp"), b"").unwrap();
    store.sweep_expired().unwrap();
    assert_eq!(count(&tmp), 0);
    assert_eq!(store.get(&task.id).unwrap(), Some(task));
}

#[test]
fn expiry_is_shared_by_every_handle_and_sweep_deletes_files() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap());
    let open = || {
        FileStore::builder(dir.path())
            .clock(Arc::new(clock.clone()))
            .open()
            .unwrap()
    };
    let (a, b) = (open(), open());
    let short = a
        .create(NewTask::new().ttl(Duration::from_secs(10)))
        .unwrap();
    let done = a
        .create(NewTask::new().ttl(Duration::from_secs(10)))
        .unwrap();
    let unseen = a
        .create(NewTask::new().ttl(Duration::from_secs(10)))
        .unwrap();
    assert!(a.complete(&done.id, json!(1)).unwrap().is_applied());
    clock.advance(Duration::from_secs(10));
    assert_eq!(
        count(&dir.path().join("active")),
        2,
        "expiry is lazy: nothing is deleted when the time passes"
    );
    // Every handle agrees at once; a handle that meets an expired task
    // deletes it, so it stays gone even if a clock is stepped back.
    assert_eq!(a.get(&short.id).unwrap(), None);
    assert_eq!(b.get(&done.id).unwrap(), None);
    assert_eq!(count(&dir.path().join("active")), 1);
    assert_eq!(count(&dir.path().join("done")), 0);
    // The sweep deletes the rest.
    assert_eq!(b.sweep_expired().unwrap(), 1);
    assert_eq!(a.get(&unseen.id).unwrap(), None);
    assert_eq!(count(&dir.path().join("active")), 0);
    assert_eq!(count(&dir.path().join("done")), 0);
}
