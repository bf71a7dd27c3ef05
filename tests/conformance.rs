//! Every backend passes the shared suite.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use taskstore::conformance::{self, Setup};
use taskstore::{Durability, FileStore, MemoryStore};

#[test]
fn memory_store() {
    conformance::run(|setup: &Setup| {
        MemoryStore::with_clock(Arc::new(setup.clock.clone()))
            .with_max_active(setup.max_active)
            .with_max_payload_bytes(setup.max_payload_bytes)
            .with_lease(setup.lease)
    });
}

fn file_store(durability: Durability) {
    let root = tempfile::tempdir().unwrap();
    let n = AtomicUsize::new(0);
    conformance::run(|setup: &Setup| {
        let dir = root
            .path()
            .join(n.fetch_add(1, Ordering::Relaxed).to_string());
        FileStore::builder(dir)
            .durability(durability)
            .clock(Arc::new(setup.clock.clone()))
            .max_active(setup.max_active)
            .max_payload_bytes(setup.max_payload_bytes)
            .lease(setup.lease)
            .open()
            .unwrap()
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
