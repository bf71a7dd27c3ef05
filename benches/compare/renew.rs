//! The renewal row: one handle renewing the leases of the tasks it runs,
//! as a server's lease watch does each tick. Each peer renews the same
//! 2,000 running tasks as one batch made durable once (`taskstore`:
//! `renew_leases_of`, one fsync of each task's new file and one of
//! `active/`; SQLite: one transaction; redb: one write transaction). The
//! tasks are made once, untimed; each sample renews them all again, so the
//! store does not grow between samples.

use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode};
use taskstore::{Durability, TaskId};

use crate::{peers, record};

/// The tasks each peer renews per sample.
const N: usize = 2_000;

/// The workload of [`renew`].
pub const WORKLOAD: &str = "renew_2000/immediate";

pub fn renew(c: &mut Criterion) {
    let mut group = c.benchmark_group(WORKLOAD);
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    let dir = tempfile::tempdir().unwrap();
    for peer in peers(dir.path(), Durability::Immediate) {
        let name = peer.name();
        let ids: Vec<TaskId> = (0..N).map(|_| peer.create(None)).collect();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    assert_eq!(peer.renew_all(&ids), N, "{name}");
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
