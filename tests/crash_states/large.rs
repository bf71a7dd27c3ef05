//! A sweep of more expired tasks than one chunk of its large paths takes,
//! explored at a seeded sample of crash points and states: the workload
//! makes too many calls, and leaves too many changes pending at once, for
//! every state to be tried.

use std::collections::BTreeSet;

use taskstore::{Durability, FsEvent};

use crate::assert_passes;
use crate::explore::{Scope, explore_in};
use crate::model::splitmix;
use crate::workload::{self, Run};

/// The seed of the sample: the same crash points and states every run.
const SEED: u64 = 0x5eed_1a26;
/// Random crash points inside the sweep, besides those around its fsyncs.
const RANDOM_POINTS: usize = 2;
/// Random states at each crash point, besides none and all applied.
const RANDOM_STATES: usize = 2;

/// The crash points checked: just before and just after each fsync of a
/// directory the sweep makes (a chunk's removals made durable, or not
/// yet), [`RANDOM_POINTS`] seeded ones inside it, and the end of the
/// workload (the sweep acknowledged).
fn sampled(run: &Run) -> Scope {
    let sweep = run.steps.last().expect("the sweep is the last step");
    let (start, end) = (sweep.start, sweep.end);
    let mut points: BTreeSet<usize> = BTreeSet::new();
    for (i, event) in run.events.iter().enumerate().take(end).skip(start) {
        if matches!(event, FsEvent::SyncDir { .. }) {
            // Crash point `i` is before call `i + 1` (the fsync), `i + 1`
            // after it.
            points.extend([i, i + 1]);
        }
    }
    let mut rng = SEED;
    for _ in 0..RANDOM_POINTS {
        points.insert(start + 1 + (splitmix(&mut rng) % (end - start) as u64) as usize);
    }
    points.insert(run.events.len());
    points.retain(|&p| p > start);
    Scope::Sampled {
        points,
        seed: SEED,
        random: RANDOM_STATES,
    }
}

/// Under `Durability::Immediate`, a sweep of 1,030 due finished tasks and
/// 1,030 running ones it had not read (two chunks of each large path)
/// keeps every promise in each sampled crash state: every task it had not
/// removed yet reads back as acknowledged, the removed ones are gone once
/// it answered, none comes back running or torn.
#[test]
fn a_sweep_past_one_chunk_survives_sampled_crash_states() {
    let run = workload::large_sweep(Durability::Immediate);
    assert_passes(&explore_in(&run, &sampled(&run)));
}

/// The same sweep under `Durability::Eventual`: containment only.
#[test]
fn an_eventual_sweep_past_one_chunk_is_contained_in_sampled_crash_states() {
    let run = workload::large_sweep(Durability::Eventual);
    assert_passes(&explore_in(&run, &sampled(&run)));
}
