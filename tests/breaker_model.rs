//! Property test: a breaker behaves like a plain reference model of the state
//! machine over random sequences of calls, verdicts, drops and clock moves,
//! with the time window and with the count window.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use taskstore::{
    BreakerConfig, BreakerEventKind, BreakerRegistry, BreakerState, Clock, EventKind, EventLog,
    ManualClock, Permit,
};
use time::OffsetDateTime;

/// A whole number of minutes, so every bucket length below divides it.
const START: OffsetDateTime = time::macros::datetime!(2026-01-01 00:00:00 UTC);
const WINDOW_MS: u64 = 10_000;

#[derive(Clone, Debug)]
enum Op {
    Acquire,
    Success(usize),
    Failure(usize),
    Drop(usize),
    Advance(u64),
    ForceOpen,
    Reset,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => Just(Op::Acquire),
        4 => any::<usize>().prop_map(Op::Success),
        4 => any::<usize>().prop_map(Op::Failure),
        1 => any::<usize>().prop_map(Op::Drop),
        4 => prop_oneof![0..3_000u64, 0..40_000u64].prop_map(Op::Advance),
        1 => Just(Op::ForceOpen),
        1 => Just(Op::Reset),
    ]
}

#[derive(Clone, Debug)]
struct Cfg {
    threshold: f64,
    buckets: u32,
    minimum_calls: u32,
    consecutive: Option<u32>,
    slow_ms: Option<u64>,
    open_ms: u64,
    multiplier: u64,
    max_open_ms: u64,
    probes: u32,
    to_close: u32,
    probe_timeout_ms: u64,
    /// The count window, if set (the time window otherwise).
    window_calls: Option<u32>,
}

fn cfg() -> impl Strategy<Value = Cfg> {
    (
        prop::sample::select(vec![0.01, 0.25, 0.5, 0.75, 1.0]),
        prop::sample::select(vec![1u32, 2, 5, 10]),
        1..6u32,
        prop::option::of(1..5u32),
        prop::option::of(1..3_000u64),
        1_000..20_000u64,
        1..3u64,
        1..4u64,
        1..4u32,
        1..4u32,
        5_000..70_000u64,
    )
        .prop_map(
            |(
                threshold,
                buckets,
                minimum_calls,
                consecutive,
                slow_ms,
                open_ms,
                multiplier,
                cap,
                probes,
                to_close,
                probe_timeout_ms,
            )| Cfg {
                threshold,
                buckets,
                minimum_calls,
                consecutive,
                slow_ms,
                open_ms,
                multiplier,
                max_open_ms: open_ms * cap,
                probes,
                to_close,
                probe_timeout_ms,
                window_calls: None,
            },
        )
}

/// A config with a count window of 1 to 8 calls (and `minimum_calls` no
/// more than it).
fn count_cfg() -> impl Strategy<Value = Cfg> {
    (cfg(), 1..9u32).prop_map(|(cfg, calls)| Cfg {
        minimum_calls: cfg.minimum_calls.min(calls),
        window_calls: Some(calls),
        ..cfg
    })
}

impl Cfg {
    fn config(&self) -> BreakerConfig {
        let mut c = BreakerConfig::default()
            .failure_rate_threshold(self.threshold)
            .window(Duration::from_millis(WINDOW_MS))
            .window_buckets(self.buckets)
            .minimum_calls(self.minimum_calls)
            .open_duration(Duration::from_millis(self.open_ms))
            .open_duration_multiplier(self.multiplier as f64)
            .max_open_duration(Duration::from_millis(self.max_open_ms))
            .half_open_probes(self.probes)
            .probe_successes_to_close(self.to_close)
            .probe_timeout(Duration::from_millis(self.probe_timeout_ms));
        if let Some(n) = self.consecutive {
            c = c.consecutive_failures(n);
        }
        if let Some(ms) = self.slow_ms {
            c = c.slow_call_threshold(Duration::from_millis(ms));
        }
        if let Some(calls) = self.window_calls {
            c = c.window_calls(calls);
        }
        c
    }
}

// ---- the reference model: plain data, every call kept, times in ms ----

#[derive(Clone, Copy, Debug, PartialEq)]
enum MState {
    Closed,
    Open {
        until: u64,
    },
    /// The probes in flight are `Model::probes`.
    HalfOpen {
        successes: u32,
    },
    Forced,
}

#[derive(Clone, Copy, Debug)]
struct MPermit {
    generation: u64,
    probe: bool,
    started: u64,
}

struct Model {
    cfg: Cfg,
    now: u64,
    state: MState,
    generation: u64,
    /// (time, failed) of every counted call since the window was last cleared.
    calls: Vec<(u64, bool)>,
    consecutive: u32,
    trips: u32,
    /// (calls, failures) the health gives while open or forced open: the
    /// trip's, or as they were when forced.
    shown: (u64, u64),
    /// When each probe in flight was handed out.
    probes: Vec<u64>,
    events: Vec<BreakerEventKind>,
}

impl Model {
    fn new(cfg: Cfg) -> Model {
        Model {
            cfg,
            now: 0,
            state: MState::Closed,
            generation: 0,
            calls: vec![],
            consecutive: 0,
            trips: 0,
            shown: (0, 0),
            probes: vec![],
            // A breaker's first event is its making.
            events: vec![BreakerEventKind::Created],
        }
    }

    fn set(&mut self, state: MState) {
        self.probes.clear();
        self.state = state;
        self.generation += 1;
    }

    /// (calls, failures) in the window. With the time window a call counts
    /// while its bucket is the current one or one of the `buckets - 1` before
    /// it; with the count window, the last `window_calls` calls count.
    fn window(&self) -> (u64, u64) {
        let counted: Vec<&(u64, bool)> = match self.cfg.window_calls {
            Some(n) => self.calls.iter().rev().take(n as usize).collect(),
            None => {
                let bucket_ms = WINDOW_MS / u64::from(self.cfg.buckets);
                let current = self.now / bucket_ms;
                let oldest = (current + 1).saturating_sub(u64::from(self.cfg.buckets));
                self.calls
                    .iter()
                    .filter(|(t, _)| t / bucket_ms >= oldest)
                    .collect()
            }
        };
        let (mut calls, mut failures) = (0, 0);
        for (_, failed) in counted {
            calls += 1;
            failures += u64::from(*failed);
        }
        (calls, failures)
    }

    /// Any probe that held its slot past the timeout unreported: reopened,
    /// each such probe a failed call beside the successes so far.
    fn expire_probes(&mut self) {
        let MState::HalfOpen { successes } = self.state else {
            return;
        };
        let late = self
            .probes
            .iter()
            .filter(|&&at| self.now - at >= self.cfg.probe_timeout_ms)
            .count() as u64;
        if late > 0 {
            self.trip(
                BreakerEventKind::Reopened,
                (u64::from(successes) + late, late),
            );
        }
    }

    /// (calls, failures) of the state it is in, as its health gives them:
    /// closed, the window's; half-open, its probes' successes; open or
    /// forced open, those it was left with.
    fn numbers(&self) -> (u64, u64) {
        match self.state {
            MState::Closed => self.window(),
            MState::HalfOpen { successes } => (u64::from(successes), 0),
            MState::Open { .. } | MState::Forced => self.shown,
        }
    }

    /// Gives back the slot of probe `p`, of this generation.
    fn release_probe(&mut self, p: MPermit) {
        let slot = self.probes.iter().position(|&at| at == p.started).unwrap();
        self.probes.remove(slot);
    }

    fn advance(&mut self) {
        if matches!(self.state, MState::HalfOpen { .. }) {
            self.expire_probes();
        } else if let MState::Open { until } = self.state
            && self.now >= until
        {
            self.set(MState::HalfOpen { successes: 0 });
            self.events.push(BreakerEventKind::HalfOpened);
        }
    }

    fn trip(&mut self, kind: BreakerEventKind, numbers: (u64, u64)) {
        self.shown = numbers;
        self.trips += 1;
        let mut open = self.cfg.open_ms;
        for _ in 1..self.trips {
            open = (open * self.cfg.multiplier).min(self.cfg.max_open_ms);
        }
        self.set(MState::Open {
            until: self.now + open,
        });
        self.events.push(kind);
    }

    fn acquire(&mut self) -> Result<MPermit, Option<u64>> {
        self.advance();
        let permit = |probe, m: &Model| MPermit {
            generation: m.generation,
            probe,
            started: m.now,
        };
        match self.state {
            MState::Closed => Ok(permit(false, self)),
            MState::HalfOpen { .. } if self.probes.len() < self.cfg.probes as usize => {
                self.probes.push(self.now);
                Ok(permit(true, self))
            }
            MState::HalfOpen { .. } | MState::Forced => Err(None),
            MState::Open { until } => Err(Some(until)),
        }
    }

    fn verdict(&mut self, p: MPermit, ok: bool) {
        if p.probe {
            self.expire_probes();
        }
        if p.generation != self.generation {
            return;
        }
        if p.probe {
            self.release_probe(p);
        }
        let slow = self.cfg.slow_ms.is_some_and(|ms| self.now - p.started > ms);
        let failed = !ok || slow;
        match self.state {
            MState::Closed => {
                self.calls.push((self.now, failed));
                self.consecutive = if failed { self.consecutive + 1 } else { 0 };
                let (calls, failures) = self.window();
                let by_streak = self.cfg.consecutive.is_some_and(|n| self.consecutive >= n);
                let by_rate = calls >= u64::from(self.cfg.minimum_calls)
                    && failures as f64 / calls as f64 >= self.cfg.threshold;
                if by_streak || by_rate {
                    self.trip(BreakerEventKind::Opened, (calls, failures));
                }
            }
            MState::HalfOpen { successes } => {
                if failed {
                    self.trip(BreakerEventKind::Reopened, (u64::from(successes) + 1, 1));
                } else if successes + 1 >= self.cfg.to_close {
                    self.calls.clear();
                    self.consecutive = 0;
                    self.trips = 0;
                    self.set(MState::Closed);
                    self.events.push(BreakerEventKind::Closed);
                } else {
                    self.state = MState::HalfOpen {
                        successes: successes + 1,
                    };
                }
            }
            MState::Open { .. } | MState::Forced => {}
        }
    }

    fn drop_permit(&mut self, p: MPermit) {
        if p.probe {
            self.expire_probes();
            if p.generation == self.generation {
                self.release_probe(p);
            }
        }
    }

    fn force_open(&mut self) {
        if self.state != MState::Forced {
            self.shown = self.numbers();
            self.set(MState::Forced);
            self.events.push(BreakerEventKind::ForcedOpen);
        }
    }

    fn reset(&mut self) {
        self.calls.clear();
        self.consecutive = 0;
        self.trips = 0;
        self.set(MState::Closed);
        self.events.push(BreakerEventKind::Reset);
    }

    fn public(&self) -> BreakerState {
        match self.state {
            MState::Closed => BreakerState::Closed,
            MState::Open { .. } => BreakerState::Open,
            MState::HalfOpen { .. } => BreakerState::HalfOpen,
            MState::Forced => BreakerState::ForcedOpen,
        }
    }
}

fn ms_since_start(at: OffsetDateTime) -> u64 {
    u64::try_from((at - START).whole_milliseconds()).unwrap()
}

/// Runs `ops` on a breaker configured by `cfg` and on the model, comparing
/// them after every step.
fn run(cfg: Cfg, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let clock = ManualClock::new(START);
    let log = Arc::new(EventLog::new());
    let registry = BreakerRegistry::new(cfg.config())
        .unwrap()
        .with_clock(Arc::new(clock.clone()))
        .with_sink(log.clone());
    let breaker = registry.breaker("b").unwrap();
    let mut model = Model::new(cfg);
    // Declared after the breaker: the permits borrow it, and are dropped first.
    let mut held: Vec<(Permit<'_>, MPermit)> = vec![];

    for op in ops {
        match op {
            Op::Acquire => match (breaker.try_acquire(), model.acquire()) {
                (Ok(permit), Ok(m)) => {
                    prop_assert_eq!(permit.is_probe(), m.probe);
                    held.push((permit, m));
                }
                (Err(rejected), Err(retry)) => {
                    prop_assert_eq!(rejected.retry_at.map(ms_since_start), retry);
                }
                (real, model) => prop_assert!(
                    false,
                    "acquire: breaker {:?}, model {:?}",
                    real.map(|_| ()),
                    model
                ),
            },
            Op::Success(i) | Op::Failure(i) | Op::Drop(i) if held.is_empty() => {
                let _ = i;
            }
            Op::Success(i) => {
                let (permit, m) = held.remove(i % held.len());
                permit.success();
                model.verdict(m, true);
            }
            Op::Failure(i) => {
                let (permit, m) = held.remove(i % held.len());
                permit.failure();
                model.verdict(m, false);
            }
            Op::Drop(i) => {
                let (permit, m) = held.remove(i % held.len());
                drop(permit);
                model.drop_permit(m);
            }
            Op::Advance(ms) => {
                clock.advance(Duration::from_millis(ms));
                model.now += ms;
            }
            Op::ForceOpen => {
                breaker.force_open();
                model.force_open();
            }
            Op::Reset => {
                breaker.reset();
                model.reset();
            }
        }
        prop_assert_eq!(ms_since_start(clock.now()), model.now);
        let health = breaker.health();
        model.advance();
        prop_assert_eq!(health.state, model.public());
        prop_assert_eq!((health.calls, health.failures), model.numbers());
        if health.state == BreakerState::Closed {
            prop_assert_eq!(health.consecutive_failures, model.consecutive);
        }
        prop_assert_eq!(health.trips, model.trips);
        if let MState::HalfOpen { successes } = model.state {
            prop_assert_eq!(
                (health.probes_in_flight, health.probe_successes),
                (model.probes.len() as u32, successes)
            );
        }
        if let MState::Open { until } = model.state {
            prop_assert_eq!(health.next_probe_at.map(ms_since_start), Some(until));
        }
        let kinds: Vec<EventKind> = log.snapshot().into_iter().map(|r| r.event.kind).collect();
        let want: Vec<EventKind> = model.events.iter().map(|&k| k.into()).collect();
        prop_assert_eq!(kinds, want);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn breaker_matches_the_reference_model(cfg in cfg(), ops in prop::collection::vec(op(), 1..80)) {
        run(cfg, ops)?;
    }

    #[test]
    fn breaker_with_a_count_window_matches_the_reference_model(
        cfg in count_cfg(),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        run(cfg, ops)?;
    }
}
