//! Every breaker rule, driven by a `ManualClock`: no test sleeps.

#[path = "../common/mod.rs"]
mod common;

mod clock_reads;
mod config;
mod count_window;
mod registry;
mod states;
mod trips;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use taskstore::{
    BreakerConfig, BreakerEventKind, BreakerRegistry, BreakerState, CallError, CallOutcome, Error,
    Event, EventKind, EventLog, EventSink, ManualClock, Record, TripReason,
};
use time::OffsetDateTime;

const START: OffsetDateTime = time::macros::datetime!(2026-01-01 00:00:00 UTC);

struct Rig {
    registry: BreakerRegistry,
    clock: ManualClock,
    log: Arc<EventLog>,
}

fn rig(config: BreakerConfig) -> Rig {
    let clock = ManualClock::new(START);
    let log = Arc::new(EventLog::new());
    let registry = BreakerRegistry::new(config)
        .unwrap()
        .with_clock(Arc::new(clock.clone()))
        .with_sink(log.clone());
    Rig {
        registry,
        clock,
        log,
    }
}

impl Rig {
    /// The breakers' transitions logged: every event but the making of a
    /// breaker (`breaker.created`, see
    /// `a_new_breaker_says_it_was_made_closed`).
    fn events(&self) -> Vec<Event> {
        self.log
            .snapshot()
            .into_iter()
            .map(|r: Record| r.event)
            .filter(|e| e.kind != BreakerEventKind::Created)
            .collect()
    }

    fn kinds(&self) -> Vec<EventKind> {
        self.events().into_iter().map(|e| e.kind).collect()
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn fail(b: &taskstore::Breaker) {
    b.try_acquire().expect("permit").failure();
}

fn succeed(b: &taskstore::Breaker) {
    b.try_acquire().expect("permit").success();
}

impl Rig {
    fn clock_now(&self, _: &taskstore::Breaker) -> OffsetDateTime {
        use taskstore::Clock;
        self.clock.now()
    }
}
