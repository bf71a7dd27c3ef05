//! `taskstore` against the peers a user would pick instead, side by side in
//! one run, and against the physical floor. Prints a table of ratios at the
//! end (also written to `target/compare-table.md`), the scaling of the rows
//! run at 100 and 10,000 active tasks, and the memory figures.
//!
//! ```text
//! cargo bench --features compare --bench compare
//! cargo bench --features compare --bench compare -- 'breaker_closed|event_push'
//! cargo bench --features compare --bench compare -- 'complete/immediate/1w-paired|reap/immediate/1w-paired'
//! ```
//!
//! A filter (criterion's regex, or `--exact`) also skips the setup of the
//! workloads it leaves out (the history of `list_active` takes minutes).
//!
//! Peers named `taskstore-…` are other configurations of `taskstore` (for
//! example `taskstore-processes`, `taskstore-time-window`): in the table each
//! gets its own rows, marked with its name, against the peers run the same
//! way (`sqlite-processes`) or, if there are none, against the others.
//!
//! Every write row times each operation alone, in the writer that made it:
//! what an operation needs and what it leaves (a task to complete, the task
//! a create made) is made and removed around it, untimed (`harness.rs`).

mod active;
#[path = "../common/children.rs"]
mod children;
mod counted;
mod floor;
mod harness;
mod history;
mod memory;
#[path = "../common/mutex_ring.rs"]
mod mutex_ring;
mod peers;
mod reads;
mod reap;
mod renew;
mod resilience;
mod sweep;
mod table;
mod writes;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use criterion::Criterion;
use taskstore::Durability;

use harness::threads;
use peers::{Peer, Redb, Sqlite, Taskstore, check};

/// Per-op times (ns) of every sample, by workload then peer.
static RESULTS: Mutex<BTreeMap<String, BTreeMap<&'static str, Vec<f64>>>> =
    Mutex::new(BTreeMap::new());

fn record(workload: &str, peer: &'static str, elapsed: Duration, ops: u64) {
    let per_op = elapsed.as_nanos() as f64 / ops.max(1) as f64;
    RESULTS
        .lock()
        .unwrap()
        .entry(workload.to_owned())
        .or_default()
        .entry(peer)
        .or_default()
        .push(per_op);
}

/// The three stores in `dir`, each checked.
fn peers(dir: &Path, durability: Durability) -> Vec<Arc<dyn Peer>> {
    let make = |sub: &str| {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let peers: Vec<Arc<dyn Peer>> = vec![
        Arc::new(Taskstore::open(&make("taskstore"), durability)),
        Arc::new(Sqlite::open(&make("sqlite"), durability)),
        Arc::new(Redb::open(&make("redb"), durability)),
    ];
    for p in &peers {
        check(p.as_ref());
    }
    peers
}

/// Every peer name the workloads record, for matching the filter against
/// whole benchmark ids (`workload/peer`).
const PEER_NAMES: &[&str] = &[
    "taskstore",
    "taskstore-processes",
    "taskstore-time-window",
    "taskstore-warm",
    "sqlite",
    "sqlite-processes",
    "redb",
    "floor",
    "bound",
    "taskstore+floor",
    "in-turns",
    "failsafe",
    "recloser",
    "tower-resilience",
    "mutex-vecdeque",
];

/// Criterion's benchmark filter, read from the same arguments, so that a
/// filtered run skips the setup of the workloads it would not time.
pub enum Filter {
    All,
    Regex(regex::Regex),
    Exact(String),
    None,
}

impl Filter {
    fn from_args() -> Filter {
        // Criterion's options that take a value (see `configure_from_args`).
        const WITH_VALUE: &[&str] = &[
            "-c",
            "--color",
            "--colour",
            "-s",
            "--save-baseline",
            "-b",
            "--baseline",
            "--baseline-lenient",
            "--format",
            "--profile-time",
            "--load-baseline",
            "--sample-size",
            "--warm-up-time",
            "--measurement-time",
            "--nresamples",
            "--noise-threshold",
            "--confidence-level",
            "--significance-level",
            "--plotting-backend",
            "--output-format",
        ];
        let mut args = std::env::args().skip(1);
        let (mut pattern, mut exact, mut ignored) = (None, false, false);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--exact" => exact = true,
                "--ignored" => ignored = true,
                a if WITH_VALUE.contains(&a) => {
                    args.next();
                }
                a if a.starts_with('-') => {}
                _ if pattern.is_none() => pattern = Some(arg),
                _ => {}
            }
        }
        match (pattern, exact, ignored) {
            (_, _, true) => Filter::None,
            (None, _, _) => Filter::All,
            (Some(p), true, _) => Filter::Exact(p),
            // An invalid regex: let criterion report it.
            (Some(p), false, _) => regex::Regex::new(&p).map_or(Filter::All, Filter::Regex),
        }
    }

    /// Whether any benchmark of these workloads is to run.
    pub fn wants(&self, workloads: &[impl AsRef<str>]) -> bool {
        workloads.iter().any(|w| {
            PEER_NAMES.iter().any(|p| {
                let id = format!("{}/{p}", w.as_ref());
                match self {
                    Filter::All => true,
                    Filter::Regex(r) => r.is_match(&id),
                    Filter::Exact(e) => *e == id,
                    Filter::None => false,
                }
            })
        })
    }
}

fn main() {
    if let Ok(spec) = std::env::var(harness::CHILD) {
        harness::child(&spec);
        return;
    }
    if let Ok(spec) = std::env::var(memory::RSS_CHILD) {
        memory::child(&spec);
        return;
    }
    if let Ok(calls) = std::env::var(counted::COUNT) {
        counted::run(calls.parse().expect("a number of calls"));
        return;
    }
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let filter = Filter::from_args();
    if filter.wants(&writes::workloads()) {
        writes::writes(&mut c);
    }
    if filter.wants(&reap::workloads()) {
        reap::reap(&mut c);
    }
    if filter.wants(&[renew::WORKLOAD]) {
        renew::renew(&mut c);
    }
    if filter.wants(&["get/1r", "get/2r"]) {
        reads::reads(&mut c);
    }
    // These two build their fixtures only up to what the filter asks for.
    reads::list_active(&mut c, &filter);
    active::active(&mut c, &filter);
    if filter.wants(&sweep::workloads()) {
        sweep::sweep(&mut c);
    }
    if filter.wants(&history::workloads()) {
        history::history(&mut c, &filter);
    }
    if filter.wants(&[
        "breaker_closed/1t",
        "breaker_closed/2t",
        "breaker_closed_1pct_failures/1t",
        "breaker_open_rejection",
    ]) {
        resilience::breakers(&mut c);
    }
    if filter.wants(&[
        "event_push/1t",
        "event_push/2t",
        "event_push_u64/1t",
        "event_push_u64/2t",
        "event_snapshot_1000",
    ]) {
        resilience::event_log(&mut c);
    }
    c.final_summary();
    table::print();
}
