//! Event log: push (1 and 2 threads) against a `Mutex<VecDeque>` baseline,
//! and a snapshot of a full log.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use mutex_ring::MutexRing;
use taskstore::{Clock, Event, EventLog, SystemClock};

#[path = "common/mutex_ring.rs"]
mod mutex_ring;

const CAPACITY: usize = 1_000;

fn event() -> Event {
    Event::new("bench.push")
}

/// Wall time of `iters` pushes split over `threads` threads.
fn parallel(threads: u64, iters: u64, push: Arc<dyn Fn() + Send + Sync>) -> Duration {
    let barrier = Arc::new(Barrier::new(threads as usize + 1));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (barrier, push) = (barrier.clone(), push.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for _ in 0..iters / threads {
                    push();
                }
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for handle in handles {
        handle.join().unwrap();
    }
    start.elapsed()
}

fn push(c: &mut Criterion) {
    let mut group = c.benchmark_group("event_log_push");
    let log = Arc::new(EventLog::<Event>::new());
    group.bench_function("ring/1_thread", |b| b.iter(|| black_box(log.push(event()))));
    let baseline = Arc::new(MutexRing::new(CAPACITY));
    group.bench_function("mutex_vecdeque/1_thread", |b| {
        b.iter(|| black_box(baseline.push(event())))
    });

    let log = Arc::new(EventLog::<Event>::new());
    group.bench_function("ring/2_threads", |b| {
        let log = log.clone();
        b.iter_custom(|iters| {
            let log = log.clone();
            parallel(
                2,
                iters,
                Arc::new(move || {
                    black_box(log.push(event()));
                }),
            )
        })
    });
    let baseline = Arc::new(MutexRing::new(CAPACITY));
    group.bench_function("mutex_vecdeque/2_threads", |b| {
        let baseline = baseline.clone();
        b.iter_custom(|iters| {
            let baseline = baseline.clone();
            parallel(
                2,
                iters,
                Arc::new(move || {
                    black_box(baseline.push(event()));
                }),
            )
        })
    });
    group.finish();

    let mut group = c.benchmark_group("clock");
    group.bench_function("system_now", |b| b.iter(|| black_box(SystemClock.now())));
    group.bench_function("system_now_unix_nanos", |b| {
        b.iter(|| black_box(SystemClock.now_unix_nanos()))
    });
    group.finish();
}

fn snapshot(c: &mut Criterion) {
    let mut group = c.benchmark_group("event_log_snapshot_full_1000");
    let log = EventLog::<Event>::new();
    let baseline = MutexRing::new(CAPACITY);
    for i in 0..CAPACITY as u64 * 2 {
        let e = Event::new("bench.snapshot").field("i", i);
        log.push(e.clone());
        baseline.push(e);
    }
    group.bench_function("ring", |b| b.iter(|| black_box(log.snapshot())));
    group.bench_function("mutex_vecdeque", |b| {
        b.iter(|| black_box(baseline.snapshot()))
    });
    group.finish();
}

criterion_group!(benches, push, snapshot);
criterion_main!(benches);
