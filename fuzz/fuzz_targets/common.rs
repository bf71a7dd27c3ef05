//! Shared by the fuzz targets: scratch directories, and the one place
//! where stores are constructed.

#![allow(dead_code)] // each target uses a different part

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use taskstore::{
    DEFAULT_LEASE, DEFAULT_MAX_ACTIVE, DEFAULT_MAX_PAYLOAD_BYTES, Durability, FileStore,
    ManualClock, MemoryBackend, MemoryStore, Result, Store,
};

/// How a target wants its store: everything the targets vary.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub clock: ManualClock,
    pub instance_id: String,
    pub lease: Duration,
    pub max_active: usize,
    pub max_payload_bytes: usize,
    /// Where a file store's large passes start (`None`: its own 256).
    pub large_pass: Option<usize>,
}

impl StoreConfig {
    /// The store's defaults, on `clock`.
    pub fn new(clock: &ManualClock, instance_id: &str) -> StoreConfig {
        StoreConfig {
            clock: clock.clone(),
            instance_id: instance_id.to_owned(),
            lease: DEFAULT_LEASE,
            max_active: DEFAULT_MAX_ACTIVE,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            large_pass: None,
        }
    }
}

/// Opens a `FileStore` at `dir` (`Durability::Eventual`: no fsync, for
/// speed; the fuzzers never cut power). The only place a target builds one.
pub fn file_store(dir: &Path, config: &StoreConfig) -> Result<FileStore> {
    let builder = FileStore::builder(dir);
    let builder = match config.large_pass {
        Some(tasks) => builder.large_passes_from(tasks),
        None => builder,
    };
    builder
        .durability(Durability::Eventual)
        .clock(Arc::new(config.clock.clone()))
        .instance_id(config.instance_id.clone())
        .lease(config.lease)
        .max_active(config.max_active)
        .max_payload_bytes(config.max_payload_bytes)
        .open()
}

/// A new `MemoryStore` with tasks of its own.
pub fn memory_store(config: &StoreConfig) -> MemoryStore {
    memory_store_on(&MemoryBackend::new(), config)
}

/// A `MemoryStore` handle on `backend`'s tasks (shared with every other
/// handle on a clone of it), with an identity of its own. The only place a
/// target builds one.
pub fn memory_store_on(backend: &MemoryBackend, config: &StoreConfig) -> MemoryStore {
    Store::with_backend(backend.clone())
        .clock(Arc::new(config.clock.clone()))
        .instance_id(config.instance_id.clone())
        .lease(config.lease)
        .max_active(config.max_active)
        .max_payload_bytes(config.max_payload_bytes)
        .build()
        .expect("the fuzz targets' settings are valid")
}

/// A new, empty scratch directory for this process: under
/// `$TASKSTORE_FUZZ_SCRATCH` if set, else on tmpfs (`/dev/shm`) when there
/// is one. Directories left by earlier fuzzer processes that are gone
/// (libFuzzer exits without running destructors) are removed first.
pub fn scratch_dir(target: &str) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let base = match std::env::var_os("TASKSTORE_FUZZ_SCRATCH") {
        Some(dir) => PathBuf::from(dir),
        None if shm.is_dir() => shm.to_owned(),
        None => std::env::temp_dir(),
    };
    let prefix = format!("taskstore-fuzz-{target}-");
    if let Ok(entries) = std::fs::read_dir(&base) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix(&prefix) else {
                continue;
            };
            if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = base.join(format!("{prefix}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the fuzzer's scratch directory");
    dir
}

/// Removes everything inside `dir` (not `dir` itself); a missing `dir` is
/// fine.
pub fn empty_dir(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.expect("read a scratch directory").path();
        let removed = if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.unwrap_or_else(|e| panic!("remove {}: {e}", path.display()));
    }
}

/// The number of entries in `dir` (0 if it is missing).
pub fn count_entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| entries.count())
}

/// How deep a JSON value nests, counted as `MAX_DEPTH` is: a scalar is 0,
/// each array or object one level. Written here, not taken from the crate.
pub fn depth(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}
