//! Every store passes the shared suite: over the in-memory backend, the file
//! backend under both durabilities, and a backend written outside the crate
//! (`tests/outside_backend.rs`).

use taskstore::conformance::{self, Setup};
use taskstore::{Durability, FileStore, MemoryBackend, Store};

#[test]
fn memory_store() {
    conformance::run(|| {
        let backend = MemoryBackend::new();
        move |setup: &Setup, instance_id: &str| {
            setup
                .configure(Store::with_backend(backend.clone()), instance_id)
                .build()
                .unwrap()
        }
    });
}

fn file_store(durability: Durability) {
    conformance::run(|| {
        let dir = tempfile::tempdir().unwrap();
        move |setup: &Setup, instance_id: &str| {
            setup
                .configure(FileStore::builder(dir.path()), instance_id)
                .durability(durability)
                .open()
                .unwrap()
        }
    });
}

#[test]
fn file_store_immediate() {
    file_store(Durability::Immediate);
}

#[test]
fn file_store_eventual() {
    file_store(Durability::Eventual);
}
