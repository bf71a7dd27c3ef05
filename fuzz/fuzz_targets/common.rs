//! Shared by the fuzz targets: scratch directories, the one place where
//! stores are constructed, and the switch for the known bugs.

#![allow(dead_code)] // each target uses a different part

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::Value;
use taskstore::{
    DEFAULT_LEASE, DEFAULT_MAX_ACTIVE, DEFAULT_MAX_PAYLOAD_BYTES, Durability, FileStore,
    ManualClock, MemoryStore, Result,
};

/// How a target wants its store: everything the targets vary.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub clock: ManualClock,
    pub instance_id: String,
    pub lease: Duration,
    pub max_active: usize,
    pub max_payload_bytes: usize,
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
        }
    }
}

/// Opens a `FileStore` at `dir` (`Durability::Eventual`: no fsync, for
/// speed; the fuzzers never cut power). The only place a target builds one.
pub fn file_store(dir: &Path, config: &StoreConfig) -> Result<FileStore> {
    FileStore::builder(dir)
        .durability(Durability::Eventual)
        .clock(Arc::new(config.clock.clone()))
        .instance_id(config.instance_id.clone())
        .lease(config.lease)
        .max_active(config.max_active)
        .max_payload_bytes(config.max_payload_bytes)
        .open()
}

/// A new `MemoryStore`. The only place a target builds one.
pub fn memory_store(config: &StoreConfig) -> MemoryStore {
    MemoryStore::builder()
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

/// Bugs the fuzzers found that are not fixed yet, each pinned by a failing
/// test in `tests/fuzz_regressions.rs`.
///
/// By default the targets check every property and so stop at these bugs
/// at once. `TASKSTORE_FUZZ_AVOID_KNOWN` steers around some of them, to
/// look for others: `1` or `all` for every one, or a comma-separated list
/// of the names below. Once `tests/fuzz_regressions.rs` passes, this module
/// goes.
pub mod known {
    use super::*;

    /// A known bug, by the name `TASKSTORE_FUZZ_AVOID_KNOWN` uses.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Bug {
        /// `deep-payload`: a payload nested past the readable depth is
        /// accepted and then cannot be read back.
        /// `a_deeply_nested_payload_that_was_accepted_reads_back`,
        /// `deeply_nested_input_requests_and_metadata_that_were_accepted_read_back`.
        DeepPayload,
        /// `float-drift`: some floats read back as a neighbouring float.
        /// `every_finite_float_reads_back_exactly`.
        FloatDrift,
        /// `null-payload`: a null result, error or input requests is
        /// returned as `Some(null)` and read back as `None`.
        /// `a_null_payload_reads_back_as_written`.
        NullPayload,
        /// `max-revision`: an update of a task at revision `u64::MAX`
        /// overflows. `an_update_at_the_highest_revision_neither_panics_nor_wraps`.
        MaxRevision,
        /// `array-envelope`: a JSON array is read as a task file.
        /// `a_json_array_is_not_a_task_file`.
        ArrayEnvelope,
        /// `cap-on-store-writes`: the payload cap refuses what the store
        /// itself adds (a longer lease timestamp, the orphan error):
        /// `renew_lease` and `reap_orphans` fail with `PayloadTooLarge`.
        /// `a_task_near_the_payload_cap_can_renew_its_lease`,
        /// `an_orphan_near_the_payload_cap_does_not_stop_the_reaper`.
        CapOnStoreWrites,
    }

    impl Bug {
        const ALL: [Bug; 6] = [
            Bug::DeepPayload,
            Bug::FloatDrift,
            Bug::NullPayload,
            Bug::MaxRevision,
            Bug::ArrayEnvelope,
            Bug::CapOnStoreWrites,
        ];

        fn name(self) -> &'static str {
            match self {
                Bug::DeepPayload => "deep-payload",
                Bug::FloatDrift => "float-drift",
                Bug::NullPayload => "null-payload",
                Bug::MaxRevision => "max-revision",
                Bug::ArrayEnvelope => "array-envelope",
                Bug::CapOnStoreWrites => "cap-on-store-writes",
            }
        }
    }

    /// Whether to steer around `bug`.
    pub fn avoid(bug: Bug) -> bool {
        static AVOID: OnceLock<Vec<Bug>> = OnceLock::new();
        AVOID
            .get_or_init(|| {
                let setting = std::env::var("TASKSTORE_FUZZ_AVOID_KNOWN").unwrap_or_default();
                let names: Vec<&str> = setting.split(',').map(str::trim).collect();
                if names.iter().any(|n| *n == "1" || *n == "all") {
                    return Bug::ALL.to_vec();
                }
                for name in names.iter().filter(|n| !n.is_empty() && **n != "0") {
                    assert!(
                        Bug::ALL.iter().any(|b| b.name() == *name),
                        "TASKSTORE_FUZZ_AVOID_KNOWN: no known bug {name:?}"
                    );
                }
                Bug::ALL
                    .into_iter()
                    .filter(|b| names.contains(&b.name()))
                    .collect()
            })
            .contains(&bug)
    }

    /// The deepest nesting (arrays and objects; a scalar is 0) of a `result`,
    /// `error` or `inputRequests` payload that still reads back: the store
    /// accepts deeper ones, then cannot decode its own file (serde_json's
    /// recursion limit of 128, counted from the task object).
    pub const READABLE_PAYLOAD_DEPTH: usize = 126;

    /// The nesting depth of `value` (a scalar is 0).
    pub fn depth(value: &Value) -> usize {
        match value {
            Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
            Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    /// `x` written and read back by serde_json, as the store does. Without
    /// serde_json's `float_roundtrip` feature this is not always `x`.
    pub fn text_round_trip(x: f64) -> f64 {
        let text = serde_json::to_string(&x).expect("a finite float serializes");
        serde_json::from_str(&text).expect("serde_json reads what it wrote")
    }

    /// A float near `x` that survives the round trip (`x` itself if it
    /// does).
    pub fn stable_float(x: f64) -> f64 {
        if !x.is_finite() {
            return x; // `Value::from` makes it null
        }
        let mut y = x;
        for _ in 0..16 {
            let next = text_round_trip(y);
            if next.to_bits() == y.to_bits() || next == y {
                return y;
            }
            y = next;
        }
        0.0
    }

    /// Whether `value` holds a float that does not survive the round trip.
    pub fn has_drifting_float(value: &Value) -> bool {
        match value {
            Value::Number(n) => n
                .as_f64()
                .is_some_and(|x| n.is_f64() && text_round_trip(x) != x),
            Value::Array(items) => items.iter().any(has_drifting_float),
            Value::Object(map) => map.values().any(has_drifting_float),
            _ => false,
        }
    }
}
