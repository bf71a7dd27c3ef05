//! `FileStore` specifics: persistence across reopen, several handles as one
//! store, history never read by open or "list active", crash leftovers.

#[path = "../common/mod.rs"]
mod common;
mod index_entries;
mod listings;
mod moves;
mod opening;
mod renames;
mod sweeps;

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use taskstore::{
    Durability, FileStore, ListQuery, ManualClock, NewTask, TaskStatus, TaskStore, TaskUpdate,
    Transition,
};
use time::OffsetDateTime;

fn count(dir: &Path) -> usize {
    fs::read_dir(dir).unwrap().count()
}

/// How many running tasks [`under_renames`] keeps renaming over.
const RENAMED: usize = 200;

/// A store of [`RENAMED`] running tasks (on tmpfs when there is one, where
/// a `readdir` under renames misses and repeats names), each updated over
/// and over by two threads (a rename over its name in `active/`) while
/// `body` runs with the store's directory.
fn under_renames(body: impl FnOnce(&Path)) {
    let shm = Path::new("/dev/shm");
    let dir = match tempfile::Builder::new()
        .prefix("taskstore-dup")
        .tempdir_in(shm)
    {
        Ok(dir) => dir,
        Err(_) => tempfile::tempdir().unwrap(),
    };
    let writer = FileStore::builder(dir.path())
        .durability(Durability::Eventual)
        .open()
        .unwrap();
    let ids: Vec<_> = (0..RENAMED)
        .map(|_| writer.create(NewTask::new()).unwrap().id)
        .collect();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for half in ids.chunks(RENAMED / 2) {
            let (writer, stop) = (&writer, &stop);
            s.spawn(move || {
                for n in 0.. {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let id = &half[n % half.len()];
                    let updated = writer
                        .update(id, TaskUpdate::new().status_message(n.to_string()))
                        .unwrap();
                    assert!(updated.is_applied());
                }
            });
        }
        // Stops the writers however `body` ends (a failed assertion too),
        // so that the scope's threads end.
        struct Stop<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let _stop = Stop(&stop);
        body(dir.path());
    });
}
