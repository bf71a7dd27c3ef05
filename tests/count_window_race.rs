//! Threads racing successes and failures through a breaker with a count
//! window: successes that change nothing are settled without the lock,
//! every other verdict under it, and no failure is lost between the two.

use std::sync::{Arc, Barrier};

use taskstore::{BreakerConfig, BreakerRegistry, BreakerState};

const WINDOW: u32 = 8;
const THREADS: usize = 4;
const CALLS: usize = 20_000;

#[test]
fn racing_verdicts_leave_a_window_that_successes_empty() {
    // Trips only on a window of failures alone, which these threads never
    // make: each thread's failures are 31 of its own successes apart, and a
    // run of eight failures would need two from one thread.
    let config = BreakerConfig::default()
        .window_calls(WINDOW)
        .minimum_calls(WINDOW)
        .failure_rate_threshold(1.0);
    let registry = BreakerRegistry::new(config).unwrap();
    let breaker = registry.breaker("upstream").unwrap();
    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (breaker, barrier) = (breaker.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..CALLS {
                    let permit = breaker.try_acquire().expect("never trips");
                    // Long runs of successes (the window is often full of
                    // them) broken by a failure, at a different phase per thread.
                    if (i + t * 8) % 32 == 31 {
                        permit.failure();
                    } else {
                        permit.success();
                    }
                    if i % 1_000 == 0 {
                        let h = breaker.health();
                        assert!(h.failures <= h.calls && h.calls <= u64::from(WINDOW));
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(breaker.state(), BreakerState::Closed);

    // A window's worth of successes pushes every failure out, whatever the
    // race left.
    for _ in 0..WINDOW {
        breaker.try_acquire().unwrap().success();
    }
    let h = breaker.health();
    assert_eq!(
        (h.calls, h.failures, h.slow_calls),
        (u64::from(WINDOW), 0, 0)
    );

    // The window is full of successes now: a failure still counts, and
    // stays counted until a window's worth of calls pushed it out.
    breaker.try_acquire().unwrap().failure();
    assert_eq!(breaker.health().failures, 1);
    for _ in 0..WINDOW - 1 {
        breaker.try_acquire().unwrap().success();
    }
    assert_eq!(breaker.health().failures, 1);
    breaker.try_acquire().unwrap().success();
    assert_eq!(breaker.health().failures, 0);
}
