//! Breaker: acquire + success on the closed path (time window, count window,
//! owned permit, slow-call threshold), rejection on the open path.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use taskstore::{BreakerConfig, BreakerRegistry};

fn breaker(c: &mut Criterion) {
    let registry = BreakerRegistry::new(BreakerConfig::default()).unwrap();
    let mut group = c.benchmark_group("breaker");

    let closed = registry.breaker("closed").unwrap();
    group.bench_function("closed/acquire_success", |b| {
        b.iter(|| closed.try_acquire().unwrap().success())
    });

    // The last 100 calls: no clock read on the closed path.
    let counted = registry
        .breaker_with(
            "closed_count_window",
            BreakerConfig::default().window_calls(100),
        )
        .unwrap();
    group.bench_function("closed_count_window/acquire_success", |b| {
        b.iter(|| counted.try_acquire().unwrap().success())
    });
    group.bench_function("closed_count_window/acquire_owned_success", |b| {
        b.iter(|| counted.try_acquire_owned().unwrap().success())
    });

    let slow = registry
        .breaker_with(
            "closed_slow_calls",
            BreakerConfig::default().slow_call_threshold(std::time::Duration::from_secs(1)),
        )
        .unwrap();
    group.bench_function("closed_with_slow_call_threshold/acquire_success", |b| {
        b.iter(|| slow.try_acquire().unwrap().success())
    });

    let open = registry.breaker("open").unwrap();
    for _ in 0..10 {
        open.try_acquire().unwrap().failure();
    }
    assert!(open.try_acquire().is_err(), "the breaker is open");
    group.bench_function("open/rejection", |b| {
        b.iter(|| black_box(open.try_acquire().unwrap_err()))
    });
    group.finish();
}

criterion_group!(benches, breaker);
criterion_main!(benches);
