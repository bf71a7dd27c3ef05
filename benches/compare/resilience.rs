//! Breakers against `failsafe`, `recloser` and `tower-resilience-circuitbreaker`;
//! the event log against a `Mutex<VecDeque>` with a separate counter.
//!
//! On the closed path `taskstore` is our breaker with a count window of the
//! last 100 calls, judged once all 100 are in: `recloser`'s default, with
//! the same semantics. `taskstore-time-window` is our default breaker (a 60 s
//! window of 10 buckets, which reads the clock on every verdict).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use failsafe::CircuitBreaker as _;
use taskstore::{BreakerConfig, BreakerRegistry, Event, EventLog};
use tower::{Service, ServiceExt};

use crate::mutex_ring::MutexRing;

use crate::{record, threads};

pub fn taskstore_breaker(config: BreakerConfig) -> taskstore::Breaker {
    BreakerRegistry::new(config)
        .unwrap()
        .breaker("upstream")
        .unwrap()
}

/// `recloser`'s default: the failure rate over the last 100 calls, once
/// there are 100.
pub fn count_window() -> BreakerConfig {
    BreakerConfig::default()
        .window_calls(100)
        .minimum_calls(100)
}

pub fn failsafe_breaker() -> impl failsafe::CircuitBreaker + Send + Sync {
    failsafe::Config::new().build()
}

pub fn recloser_breaker() -> recloser::Recloser {
    recloser::Recloser::custom().build()
}

/// The wrapped service: answers at once.
type Upstream = tower::util::ServiceFn<fn(()) -> std::future::Ready<Result<(), ()>>>;

type Tower = tower_resilience_circuitbreaker::CircuitBreaker<
    Upstream,
    tower_resilience_circuitbreaker::DefaultClassifier,
>;

fn tower_breaker() -> Tower {
    let layer = tower_resilience_circuitbreaker::CircuitBreakerLayer::builder()
        .minimum_number_of_calls(10)
        .build()
        .unwrap();
    let ok: fn(()) -> std::future::Ready<Result<(), ()>> = |_| std::future::ready(Ok(()));
    tower::Layer::layer(&layer, tower::service_fn(ok))
}

fn failing() -> Upstream {
    let f: fn(()) -> std::future::Ready<Result<(), ()>> = |_| std::future::ready(Err(()));
    tower::service_fn(f)
}

/// Times `iters` calls of `op` on `writers` threads; records per-call time.
fn timed(
    workload: &str,
    peer: &'static str,
    writers: usize,
    iters: u64,
    op: &(dyn Fn() + Sync),
) -> Duration {
    let per = iters.div_ceil(writers as u64);
    let elapsed = threads(writers, per, &|_, n| {
        for _ in 0..n {
            op();
        }
    });
    record(workload, peer, elapsed, per * writers as u64);
    elapsed.mul_f64(iters as f64 / (per * writers as u64) as f64)
}

pub fn breakers(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for threads in [1usize, 2] {
        let workload = format!("breaker_closed/{threads}t");
        let mut group = c.benchmark_group(&workload);
        let ours = taskstore_breaker(count_window());
        group.bench_function("taskstore", |b| {
            b.iter_custom(|iters| {
                timed(&workload, "taskstore", threads, iters, &|| {
                    ours.try_acquire().unwrap().success();
                })
            })
        });
        let ours_timed = taskstore_breaker(BreakerConfig::default());
        group.bench_function("taskstore-time-window", |b| {
            b.iter_custom(|iters| {
                timed(&workload, "taskstore-time-window", threads, iters, &|| {
                    ours_timed.try_acquire().unwrap().success();
                })
            })
        });
        let fs = failsafe_breaker();
        group.bench_function("failsafe", |b| {
            b.iter_custom(|iters| {
                timed(&workload, "failsafe", threads, iters, &|| {
                    assert!(fs.call(|| Ok::<(), ()>(())).is_ok());
                })
            })
        });
        let rc = recloser_breaker();
        group.bench_function("recloser", |b| {
            b.iter_custom(|iters| {
                timed(&workload, "recloser", threads, iters, &|| {
                    assert!(rc.call(|| Ok::<(), ()>(())).is_ok());
                })
            })
        });
        if threads == 1 {
            // A tower `Service` is called through `&mut`: one caller at a time.
            let mut tw = tower_breaker();
            group.bench_function("tower-resilience", |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    rt.block_on(async {
                        for _ in 0..iters {
                            tw.ready().await.unwrap().call(()).await.unwrap();
                        }
                    });
                    let elapsed = start.elapsed();
                    record(&workload, "tower-resilience", elapsed, iters);
                    elapsed
                })
            });
        }
        group.finish();
    }

    // Every 100th call fails: the count window is never full of successes
    // (a failure stays in it for the next 100 calls), so every verdict takes
    // the breaker's lock. Far below any peer's threshold: none trips.
    let workload = "breaker_closed_1pct_failures/1t";
    let mut group = c.benchmark_group(workload);
    let ours = taskstore_breaker(count_window());
    group.bench_function("taskstore", |b| {
        b.iter_custom(|iters| {
            timed(workload, "taskstore", 1, iters, &|| {
                let permit = ours.try_acquire().unwrap();
                if every_100th() {
                    permit.failure();
                } else {
                    permit.success();
                }
            })
        })
    });
    let fs = failsafe_breaker();
    group.bench_function("failsafe", |b| {
        b.iter_custom(|iters| {
            timed(workload, "failsafe", 1, iters, &|| {
                let fail = every_100th();
                let r = fs.call(|| if fail { Err(()) } else { Ok(()) });
                assert!(!matches!(r, Err(failsafe::Error::Rejected)));
            })
        })
    });
    let rc = recloser_breaker();
    group.bench_function("recloser", |b| {
        b.iter_custom(|iters| {
            timed(workload, "recloser", 1, iters, &|| {
                let fail = every_100th();
                let r = rc.call(|| if fail { Err(()) } else { Ok(()) });
                assert!(!matches!(r, Err(recloser::Error::Rejected)));
            })
        })
    });
    group.finish();

    let workload = "breaker_open_rejection";
    let mut group = c.benchmark_group(workload);
    // Tripped by failures, as the peers below are (not forced open): a
    // rejection then checks whether the open duration has passed.
    let ours = taskstore_breaker(BreakerConfig::default().open_duration(Duration::from_secs(300)));
    while !matches!(
        ours.call(|| Err::<(), ()>(())),
        Err(taskstore::CallError::Rejected(_))
    ) {}
    group.bench_function("taskstore", |b| {
        b.iter_custom(|iters| {
            timed(workload, "taskstore", 1, iters, &|| {
                assert!(ours.try_acquire().is_err());
            })
        })
    });
    let fs = failsafe_breaker();
    while fs.is_call_permitted() {
        let _ = fs.call(|| Err::<(), ()>(()));
    }
    group.bench_function("failsafe", |b| {
        b.iter_custom(|iters| {
            timed(workload, "failsafe", 1, iters, &|| {
                assert!(matches!(
                    fs.call(|| Ok::<(), ()>(())),
                    Err(failsafe::Error::Rejected)
                ));
            })
        })
    });
    let rc = recloser_breaker();
    while !matches!(
        rc.call(|| Err::<(), ()>(())),
        Err(recloser::Error::Rejected)
    ) {}
    group.bench_function("recloser", |b| {
        b.iter_custom(|iters| {
            timed(workload, "recloser", 1, iters, &|| {
                assert!(matches!(
                    rc.call(|| Ok::<(), ()>(())),
                    Err(recloser::Error::Rejected)
                ));
            })
        })
    });
    let layer = tower_resilience_circuitbreaker::CircuitBreakerLayer::builder()
        .minimum_number_of_calls(10)
        .build()
        .unwrap();
    let mut tw = tower::Layer::layer(&layer, failing());
    rt.block_on(async {
        while !tw.is_open() {
            let _ = tw.ready().await.unwrap().call(()).await;
        }
    });
    group.bench_function("tower-resilience", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            rt.block_on(async {
                for _ in 0..iters {
                    let rejected = match tw.ready().await {
                        Ok(svc) => svc.call(()).await.is_err(),
                        Err(_) => true,
                    };
                    assert!(rejected);
                }
            });
            let elapsed = start.elapsed();
            record(workload, "tower-resilience", elapsed, iters);
            elapsed
        })
    });
    group.finish();
}

/// `true` on every 100th call of this thread.
fn every_100th() -> bool {
    thread_local!(static CALLS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) });
    CALLS.with(|calls| {
        calls.set(calls.get() + 1);
        calls.get() % 100 == 0
    })
}

fn event() -> Event {
    Event::new("task.updated").field("taskId", "0b8f3c1e-2d4a-4c55-9d1e-7f00c0ffee00")
}

pub fn event_log(c: &mut Criterion) {
    for threads in [1usize, 2] {
        let workload = format!("event_push/{threads}t");
        let mut group = c.benchmark_group(&workload);
        let log = EventLog::new();
        group.bench_function("taskstore", |b| {
            b.iter_custom(|iters| {
                timed(&workload, "taskstore", threads, iters, &|| {
                    black_box(log.push(event()));
                })
            })
        });
        let ring = MutexRing::new(1_000);
        group.bench_function("mutex-vecdeque", |b| {
            b.iter_custom(|iters| {
                timed(&workload, "mutex-vecdeque", threads, iters, &|| {
                    black_box(ring.push(event()));
                })
            })
        });
        group.finish();
    }
    // The structures alone: a `u64` payload, so no allocation on either side.
    for threads in [1usize, 2] {
        let workload = format!("event_push_u64/{threads}t");
        let mut group = c.benchmark_group(&workload);
        let log = EventLog::<u64>::new();
        group.bench_function("taskstore", |b| {
            b.iter_custom(|iters| {
                timed(&workload, "taskstore", threads, iters, &|| {
                    black_box(log.push(black_box(7)));
                })
            })
        });
        let ring = MutexRing::<u64>::new(1_000);
        group.bench_function("mutex-vecdeque", |b| {
            b.iter_custom(|iters| {
                timed(&workload, "mutex-vecdeque", threads, iters, &|| {
                    black_box(ring.push(black_box(7)));
                })
            })
        });
        group.finish();
    }
    let workload = "event_snapshot_1000";
    let mut group = c.benchmark_group(workload);
    let log = EventLog::new();
    let ring = MutexRing::new(1_000);
    for _ in 0..1_000 {
        log.push(event());
        ring.push(event());
    }
    group.bench_function("taskstore", |b| {
        b.iter_custom(|iters| {
            timed(workload, "taskstore", 1, iters, &|| {
                assert_eq!(black_box(log.snapshot()).len(), 1_000);
            })
        })
    });
    group.bench_function("mutex-vecdeque", |b| {
        b.iter_custom(|iters| {
            timed(workload, "mutex-vecdeque", 1, iters, &|| {
                assert_eq!(black_box(ring.snapshot()).len(), 1_000);
            })
        })
    });
    group.finish();
}
