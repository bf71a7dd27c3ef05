//! The sweep row: deleting 10,000 expired tasks (and nothing else), against
//! SQLite's `DELETE ... WHERE expires_at <= ?` on its expiry index and
//! redb's range removal from its expiry table.

use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode};
use taskstore::Durability;

use crate::{peers, record};

/// The workload of [`sweep`].
pub const WORKLOAD: &str = "sweep_10000";

/// Deleting 10,000 expired tasks: each sample fills every store with them
/// (untimed; `taskstore` through a handle without fsync, SQLite and redb in
/// one transaction each), waits for them to expire, and times one sweep by a
/// durable handle.
pub fn sweep(c: &mut Criterion) {
    const N: usize = 10_000;
    let mut group = c.benchmark_group(WORKLOAD);
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    let dir = tempfile::tempdir().unwrap();
    let peers = peers(dir.path(), Durability::Immediate);
    for peer in &peers {
        let name = peer.name();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    peer.fill(N, Some(Duration::from_millis(1)));
                    std::thread::sleep(Duration::from_millis(2));
                    let start = Instant::now();
                    assert_eq!(peer.sweep_expired(), N);
                    let elapsed = start.elapsed();
                    record(WORKLOAD, name, elapsed, 1);
                    total += elapsed;
                }
                total
            })
        });
    }
    group.finish();
}
