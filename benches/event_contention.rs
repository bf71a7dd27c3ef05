//! `EventLog::push` against the `Mutex<VecDeque>` baseline with two threads
//! that really run at the same time: each pinned to its own core (through
//! `/usr/bin/taskset` on the thread's id), released together by a spinning
//! barrier, each timing its own pushes. Every round also reports how much
//! the two threads' runs overlapped and how often they were preempted, so a
//! round on a machine too busy to run both at once shows as such. Only the
//! clean rounds count: neither thread preempted (its
//! `nonvoluntary_ctxt_switches` unchanged), both pushing for at least 90% of
//! the round. Rounds are short (20,000 pushes per thread by default, a few
//! milliseconds) so that many are clean even on a shared machine.
//!
//! ```text
//! cargo bench --bench event_contention
//! cargo bench --bench event_contention -- --rounds 400 --pushes 20000
//! ```
//!
//! The two structures take turns round by round (which goes first
//! alternates), so drifting load weighs on both alike; the figures are the
//! medians over the rounds. Both logs are full before the first round, so
//! every push evicts, as in a long-running process.

use std::hint::black_box;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use mutex_ring::MutexRing;
use taskstore::{Event, EventLog};

#[path = "common/mutex_ring.rs"]
mod mutex_ring;

const CAPACITY: usize = 1_000;

/// The least share of a round both threads must have pushed in for the
/// round to count.
const MIN_OVERLAP: f64 = 0.9;

/// What one thread saw in one round.
#[derive(Clone, Copy, Debug)]
struct Run {
    start: Instant,
    end: Instant,
    /// Times the scheduler took the core away from the thread.
    preempted: u64,
}

/// One round of one structure: both threads' runs.
#[derive(Clone, Copy, Debug)]
struct Round {
    runs: [Run; 2],
    pushes: u64,
}

impl Round {
    /// Each thread's time per push, averaged over the two threads.
    fn per_push(&self) -> f64 {
        self.runs
            .iter()
            .map(|r| (r.end - r.start).as_nanos() as f64 / self.pushes as f64)
            .sum::<f64>()
            / 2.0
    }

    /// The share of the round during which both threads were pushing.
    fn overlap(&self) -> f64 {
        let [a, b] = self.runs;
        let both = a
            .end
            .min(b.end)
            .saturating_duration_since(a.start.max(b.start));
        let either = a.end.max(b.end) - a.start.min(b.start);
        both.as_secs_f64() / either.as_secs_f64()
    }

    fn preempted(&self) -> u64 {
        self.runs.iter().map(|r| r.preempted).sum()
    }
}

/// A field of this thread's `/proc/thread-self/status`.
fn thread_status(field: &str) -> Option<String> {
    let status = std::fs::read_to_string("/proc/thread-self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| v.trim().to_owned())
}

fn preemptions() -> u64 {
    thread_status("nonvoluntary_ctxt_switches:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Pins the calling thread to `cpu` with `taskset -p` on its thread id;
/// `Err` says why not.
fn pin_to(cpu: usize) -> Result<(), String> {
    let link = std::fs::read_link("/proc/thread-self").map_err(|e| e.to_string())?;
    let tid = link
        .file_name()
        .and_then(|t| t.to_str())
        .ok_or("no thread id in /proc/thread-self")?
        .to_owned();
    let status = Command::new("/usr/bin/taskset")
        .args(["-p", "-c", &cpu.to_string(), &tid])
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("/usr/bin/taskset: {e}"))?;
    if !status.success() {
        return Err(format!("taskset -p -c {cpu} {tid}: {status}"));
    }
    match thread_status("Cpus_allowed_list:") {
        Some(list) if list == cpu.to_string() => Ok(()),
        other => Err(format!("thread {tid} allowed on {other:?}, not {cpu}")),
    }
}

/// Runs `push` `pushes` times on each of two threads pinned to cores 0 and
/// 1, released together.
fn round(pushes: u64, pinned: bool, push: &(dyn Fn() + Sync)) -> Round {
    let ready = AtomicUsize::new(0);
    let runs = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|cpu| {
                let ready = &ready;
                s.spawn(move || {
                    if pinned {
                        pin_to(cpu).unwrap();
                    }
                    // Spin, not sleep: both must be on their cores when released.
                    ready.fetch_add(1, Ordering::AcqRel);
                    while ready.load(Ordering::Acquire) < 2 {
                        std::hint::spin_loop();
                    }
                    let before = preemptions();
                    let start = Instant::now();
                    for _ in 0..pushes {
                        push();
                    }
                    let end = Instant::now();
                    Run {
                        start,
                        end,
                        preempted: preemptions() - before,
                    }
                })
            })
            .collect();
        let runs: Vec<Run> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        [runs[0], runs[1]]
    });
    Round { runs, pushes }
}

fn quartiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.25), at(0.5), at(0.75))
}

fn event() -> Event {
    Event::new("bench.push")
}

/// The two structures, `rounds` rounds each, taking turns.
fn compare(
    label: &str,
    rounds: usize,
    pushes: u64,
    pinned: bool,
    ring: &(dyn Fn() + Sync),
    baseline: &(dyn Fn() + Sync),
) {
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        if r % 2 == 0 {
            ours.push(round(pushes, pinned, ring));
            theirs.push(round(pushes, pinned, baseline));
        } else {
            theirs.push(round(pushes, pinned, baseline));
            ours.push(round(pushes, pinned, ring));
        }
    }
    // Only rounds in which both threads pushed side by side for nearly all
    // of it, and neither was preempted, measure contention between the two.
    let clean = |rounds: &[Round]| -> Vec<Round> {
        rounds
            .iter()
            .filter(|r| r.preempted() == 0 && r.overlap() >= MIN_OVERLAP)
            .copied()
            .collect()
    };
    let (ours_clean, theirs_clean) = (clean(&ours), clean(&theirs));
    if ours_clean.is_empty() || theirs_clean.is_empty() {
        println!(
            "| {label} | no clean round ({} / {} of {rounds}): the machine is too busy | | | |",
            ours_clean.len(),
            theirs_clean.len()
        );
        return;
    }
    let per = |rounds: &[Round]| quartiles(rounds.iter().map(Round::per_push).collect());
    let (o, t) = (per(&ours_clean), per(&theirs_clean));
    let overlap = |rounds: &[Round]| quartiles(rounds.iter().map(Round::overlap).collect()).1;
    let q = |(low, mid, high): (f64, f64, f64)| format!("{mid:.1} ns [{low:.1}, {high:.1}]");
    println!(
        "| {label} | {} | {} | {:.2} | {} / {} of {rounds} | {:.0}% / {:.0}% |",
        q(o),
        q(t),
        o.1 / t.1,
        ours_clean.len(),
        theirs_clean.len(),
        overlap(&ours_clean) * 100.0,
        overlap(&theirs_clean) * 100.0,
    );
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().expect("a number"))
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it once, small.
    let quick = !std::env::args().any(|a| a == "--bench");
    let rounds = arg("--rounds", if quick { 2 } else { 200 }) as usize;
    let pushes = arg("--pushes", if quick { 1_000 } else { 20_000 });
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pinned = match (cpus >= 2, Path::new("/usr/bin/taskset").exists()) {
        (true, true) => {
            let probe = std::thread::spawn(|| pin_to(1)).join().unwrap();
            match probe {
                Ok(()) => true,
                Err(e) => {
                    println!("not pinned: {e}");
                    false
                }
            }
        }
        _ => {
            println!(
                "not pinned: {cpus} cpu(s), taskset present: {}",
                Path::new("/usr/bin/taskset").exists()
            );
            false
        }
    };
    println!(
        "{rounds} rounds of {pushes} pushes per thread, two threads{}; each thread's time per push, median [25th, 75th percentile] over the clean rounds (neither thread preempted, both pushing for at least {:.0}% of the round)\n",
        if pinned {
            " pinned to cores 0 and 1"
        } else {
            ""
        },
        MIN_OVERLAP * 100.0
    );
    println!(
        "| payload | ring (`EventLog`) | `Mutex<VecDeque>` + counter | ring / baseline | clean rounds (ring / baseline) | both pushing (ring / baseline) |"
    );
    println!("|---|---|---|---|---|---|");

    let log = EventLog::<Event>::with_capacity(CAPACITY);
    let ring = MutexRing::<Event>::new(CAPACITY);
    for _ in 0..CAPACITY {
        log.push(event());
        ring.push(event());
    }
    compare(
        "`Event` (a kind, no allocation)",
        rounds,
        pushes,
        pinned,
        &|| {
            black_box(log.push(event()));
        },
        &|| {
            black_box(ring.push(event()));
        },
    );
    let with_fields =
        || Event::new("task.updated").field("taskId", "0b8f3c1e-2d4a-4c55-9d1e-7f00c0ffee00");
    compare(
        "`Event` with a field (three allocations)",
        rounds,
        pushes,
        pinned,
        &|| {
            black_box(log.push(with_fields()));
        },
        &|| {
            black_box(ring.push(with_fields()));
        },
    );
    // Both full, of the last pushes.
    assert_eq!(log.snapshot().len(), CAPACITY);
    assert_eq!(ring.snapshot().len(), CAPACITY);
    let log = EventLog::<u64>::with_capacity(CAPACITY);
    let ring = MutexRing::<u64>::new(CAPACITY);
    for i in 0..CAPACITY as u64 {
        log.push(i);
        ring.push(i);
    }
    compare(
        "`u64` (the structure alone)",
        rounds,
        pushes,
        pinned,
        &|| {
            black_box(log.push(black_box(7)));
        },
        &|| {
            black_box(ring.push(black_box(7)));
        },
    );
}
