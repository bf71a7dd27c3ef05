//! Eight threads hammering a half-open breaker never hold more permits at
//! once than the probe limit.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use taskstore::{BreakerConfig, BreakerRegistry, BreakerState, ManualClock};
use time::OffsetDateTime;

const PROBES: u32 = 3;
const THREADS: usize = 8;
const ROUNDS: usize = 2_000;

#[test]
fn eight_threads_never_hold_more_than_the_probe_limit() {
    let clock = ManualClock::new(OffsetDateTime::UNIX_EPOCH);
    let config = BreakerConfig::default()
        .minimum_calls(1)
        .half_open_probes(PROBES)
        // Successes never close it: the breaker stays half-open throughout.
        .probe_successes_to_close(u32::MAX);
    let registry = BreakerRegistry::new(config)
        .unwrap()
        .with_clock(Arc::new(clock.clone()));
    let breaker = registry.breaker("upstream").unwrap();
    breaker.try_acquire().unwrap().failure();
    clock.advance(Duration::from_secs(30));
    assert_eq!(breaker.state(), BreakerState::HalfOpen);

    let held = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let granted = Arc::new(AtomicUsize::new(0));
    let rejected = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (breaker, held, most, granted, rejected, barrier) = (
                breaker.clone(),
                held.clone(),
                most.clone(),
                granted.clone(),
                rejected.clone(),
                barrier.clone(),
            );
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..ROUNDS {
                    match breaker.try_acquire() {
                        Ok(permit) => {
                            let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            granted.fetch_add(1, Ordering::Relaxed);
                            std::thread::yield_now();
                            held.fetch_sub(1, Ordering::SeqCst);
                            // Give the slot back either way: a verdict or a drop.
                            if (i + t) % 2 == 0 {
                                permit.success();
                            } else {
                                drop(permit);
                            }
                        }
                        Err(_) => {
                            rejected.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }

    let most = most.load(Ordering::SeqCst);
    assert!(
        most <= PROBES as usize,
        "{most} permits held at once, limit {PROBES}"
    );
    assert!(most >= 1);
    assert!(granted.load(Ordering::Relaxed) > 0);
    assert_eq!(
        granted.load(Ordering::Relaxed) + rejected.load(Ordering::Relaxed),
        THREADS * ROUNDS
    );
    let health = breaker.health();
    assert_eq!(health.state, BreakerState::HalfOpen);
    assert_eq!(health.probes_in_flight, 0, "every slot was given back");
}
