//! Fixed loops of the closed-path breaker calls and event pushes, for
//! instruction counts, which stay put on a loaded machine where times do
//! not:
//!
//! ```text
//! cargo bench --features compare --bench compare --no-run
//! TASKSTORE_COMPARE_COUNT=1000000 valgrind --tool=callgrind \
//!     --callgrind-out-file=callgrind.out target/release/deps/compare-<hash>
//! callgrind_annotate --inclusive=yes callgrind.out | grep counted::
//! ```
//!
//! Each loop is its own function, never inlined: its inclusive count divided
//! by the number of calls is the instructions per call (the loop itself adds
//! two or three).

use std::hint::black_box;

use failsafe::CircuitBreaker as _;
use taskstore::{BreakerConfig, Event, EventLog};

use crate::mutex_ring::MutexRing;
use crate::resilience::{count_window, failsafe_breaker, recloser_breaker, taskstore_breaker};

/// The environment variable that makes the bench binary run the loops (its
/// value: the calls per loop).
pub const COUNT: &str = "TASKSTORE_COMPARE_COUNT";

pub fn run(calls: u64) {
    let ours = taskstore_breaker(count_window());
    let time_window = taskstore_breaker(BreakerConfig::default());
    let rc = recloser_breaker();
    let fs = failsafe_breaker();
    // Fill every window first, as the timed rows' warm-up does (here, so
    // that the loops below count only their own calls).
    for _ in 0..1_000 {
        ours.try_acquire().unwrap().success();
        time_window.try_acquire().unwrap().success();
        assert!(rc.call(|| Ok::<(), ()>(())).is_ok());
        assert!(fs.call(|| Ok::<(), ()>(())).is_ok());
    }
    taskstore_closed(&ours, calls);
    taskstore_time_window_closed(&time_window, calls);
    recloser_closed(&rc, calls);
    failsafe_closed(&fs, calls);
    taskstore_closed_1pct_failures(&ours, calls);
    recloser_closed_1pct_failures(&rc, calls);
    let log = EventLog::new();
    let ring = MutexRing::new(1_000);
    event_push_taskstore(&log, calls);
    event_push_mutex_vecdeque(&ring, calls);
    println!("ran {calls} calls per loop");
}

#[inline(never)]
fn taskstore_closed(b: &taskstore::Breaker, calls: u64) {
    for _ in 0..calls {
        b.try_acquire().unwrap().success();
    }
}

#[inline(never)]
fn taskstore_time_window_closed(b: &taskstore::Breaker, calls: u64) {
    for _ in 0..calls {
        b.try_acquire().unwrap().success();
    }
}

#[inline(never)]
fn recloser_closed(b: &recloser::Recloser, calls: u64) {
    for _ in 0..calls {
        assert!(b.call(|| Ok::<(), ()>(())).is_ok());
    }
}

#[inline(never)]
fn failsafe_closed(b: &impl failsafe::CircuitBreaker, calls: u64) {
    for _ in 0..calls {
        assert!(b.call(|| Ok::<(), ()>(())).is_ok());
    }
}

#[inline(never)]
fn taskstore_closed_1pct_failures(b: &taskstore::Breaker, calls: u64) {
    for i in 0..calls {
        let permit = b.try_acquire().unwrap();
        if i % 100 == 99 {
            permit.failure();
        } else {
            permit.success();
        }
    }
}

#[inline(never)]
fn recloser_closed_1pct_failures(b: &recloser::Recloser, calls: u64) {
    for i in 0..calls {
        let fail = i % 100 == 99;
        let r = b.call(|| if fail { Err(()) } else { Ok(()) });
        assert!(!matches!(r, Err(recloser::Error::Rejected)));
    }
}

#[inline(never)]
fn event_push_taskstore(log: &EventLog, calls: u64) {
    for _ in 0..calls {
        black_box(log.push(Event::new("bench.push")));
    }
}

#[inline(never)]
fn event_push_mutex_vecdeque(ring: &MutexRing<Event>, calls: u64) {
    for _ in 0..calls {
        black_box(ring.push(Event::new("bench.push")));
    }
}
