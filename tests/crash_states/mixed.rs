//! Handles of one store with different durabilities: what an `Eventual`
//! handle does to a task must not undo what an `Immediate` one
//! acknowledged, across a power loss.

use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use taskstore::{
    Durability, FaultInjector, FileStore, FsOp, NewTask, TaskId, TaskStatus, TaskStore, Transition,
};

use crate::reopen::{every_state, nothing};
use crate::workload::{self, id_in_stripe, stripe_of};
use crate::{crash_states_from, recorded, recorded_store};

/// When the `Eventual` handle finishes the move an `Immediate` reap left.
#[derive(Clone, Copy, Debug)]
enum Finished {
    /// Between the reap's fsync of `done/` and its fsync of `active/`.
    InTheReap,
    /// After the reap returned, before another write's fsync of `active/`.
    After,
}

/// An `Immediate` reap of two orphans whose second half cannot take one
/// task's stripe again (another process holds it) leaves that task's
/// terminal move as a crash between the halves would: its failed version
/// durably in `active/` with its durable `expiring/` entry, reported
/// reaped. An `Eventual` handle that then finishes the move (a `complete`
/// of the task, answered `AlreadyTerminal`) gives it its name in `done/`
/// and removes its name in `active/`: the task must be in `done/` once
/// that removal can be durable, which the next fsync of `active/` by any
/// handle makes it, the reap's own included. So in every crash state from
/// the reap's answer on, the task reads as the reap returned it, whether
/// the move was finished inside the reap (between its fsyncs of `done/`
/// and `active/`) or after it (before another handle's write).
#[test]
fn an_eventual_handle_finishing_a_move_an_immediate_reap_left_never_loses_it() {
    let broken: Vec<String> = [Finished::InTheReap, Finished::After]
        .into_iter()
        .filter_map(|when| {
            let (lost, states) = reap_finished_by_an_eventual_handle(when);
            (!lost.is_empty()).then(|| {
                format!(
                    "{when:?}: {} of {states} states, the first: {:#?}",
                    lost.len(),
                    &lost[..lost.len().min(3)]
                )
            })
        })
        .collect();
    assert!(broken.is_empty(), "{broken:#?}");
}

/// The crash states, from the reap's answer on, in which the task whose
/// move was left does not read as the reap returned it (finished by an
/// `Eventual` handle `when`); and how many states there are.
fn reap_finished_by_an_eventual_handle(when: Finished) -> (Vec<String>, usize) {
    let (dir, root, recorder, clock) = recorded_store("taskstore-mixed-reap");
    let faults = FaultInjector::new();
    let open = |instance: &str, durability: Durability, lease: Duration| {
        recorded(&root, &clock, &recorder)
            .instance_id(instance)
            .durability(durability)
            .lease(lease)
            .fault_injector(faults.clone())
            .stripe_wait(Duration::from_millis(200))
            .open()
            .unwrap()
    };
    // Two orphans in two stripes: the one whose stripe is taken (a TTL:
    // its name in `done/` waits for its `expiring/` entry) and another.
    let held = stripe_of("other");
    let left = id_in_stripe("left", (held + 1) % 64);
    let other = TaskId::parse("other").unwrap();
    let gone = open("gone", Durability::Immediate, Duration::from_secs(5));
    gone.create(
        NewTask::new()
            .id(left.clone())
            .ttl(Duration::from_secs(86_400)),
    )
    .unwrap();
    gone.create(NewTask::new().id(other.clone())).unwrap();
    drop(gone);
    clock.advance(Duration::from_secs(10));
    let owner = open("owner", Durability::Immediate, Duration::from_secs(3600));
    let eventual = open("eventual", Durability::Eventual, Duration::from_secs(3600));
    let lock_file = root
        .join("locks")
        .join(format!("{:02}.lock", stripe_of(left.as_str())));
    let finish = |holder: std::fs::File| {
        // The other process lets go; the `Eventual` handle finishes the move.
        drop(holder);
        let answer = eventual
            .complete(&left, serde_json::json!("too late"))
            .unwrap();
        assert!(
            matches!(&answer, Transition::AlreadyTerminal(t) if t.status == TaskStatus::Failed),
            "{answer:?}"
        );
    };
    let at_expiring = faults.pause_at(FsOp::SyncDir, root.join("expiring"));
    let reaped = std::thread::scope(|s| {
        let reaping = s.spawn(|| owner.reap_orphans().unwrap());
        assert!(at_expiring.wait_reached(|| !reaping.is_finished()));
        let holder = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&lock_file)
            .unwrap();
        holder.try_lock().expect("the stripe is free at the pause");
        let at_active = matches!(when, Finished::InTheReap)
            .then(|| faults.pause_at(FsOp::SyncDir, root.join("active")));
        at_expiring.resume();
        match at_active {
            Some(at_active) => {
                assert!(at_active.wait_reached(|| !reaping.is_finished()));
                finish(holder);
                at_active.resume();
                reaping.join().unwrap()
            }
            None => {
                let reaped = reaping.join().unwrap();
                finish(holder);
                reaped
            }
        }
    });
    let from = recorder.len() + 1;
    let reaped = reaped
        .into_iter()
        .find(|t| t.id == left)
        .expect("the reap reports the task whose move it left");
    assert_eq!(reaped.status, TaskStatus::Failed);
    // Another write of the `Immediate` handle: an fsync of `active/`.
    owner
        .create(NewTask::new().id(TaskId::parse("next").unwrap()))
        .unwrap();
    drop((eventual, owner));
    let scratch = workload::scratch_dir("taskstore-mixed-reap-states");
    let states = crash_states_from(dir.path(), &recorder.events(), from, scratch.path());
    assert!(!states.is_empty());
    let open = |root: &Path| {
        FileStore::builder(root)
            .clock(Arc::new(clock.clone()))
            .open()
    };
    let broken = every_state(states, open, nothing, |store| match store.get(&left) {
        Ok(Some(task)) if task == reaped => Vec::new(),
        got => vec![format!("{got:?}")],
    });
    (broken.lines, broken.states)
}

/// A sweep that removes finished tasks through every stripe at once makes
/// `active/` durable first unless its handle's change notices show no name
/// changed there since it last did (`settle_moves_once`). Moves made by
/// another handle count too: its unlinks in `active/` reach this handle's
/// watch like its own. Here a first large sweep leaves the handle knowing
/// `active/` settled; a second handle then completes three tasks with a
/// TTL (their names in `active/` removed, no fsync there); the first
/// handle's second large sweep removes them once due. In no crash state
/// from that sweep on does any of them read as running.
#[test]
fn a_sweep_makes_another_handles_moves_durable_before_removing_them() {
    let (dir, root, recorder, clock) = recorded_store("taskstore-mixed-sweep");
    let open = |instance: &str| {
        recorded(&root, &clock, &recorder)
            .instance_id(instance)
            .lease(Duration::from_secs(3600))
            .large_passes_from(3)
            .open()
            .unwrap()
    };
    let sweeper = open("sweeper");
    let mover = open("mover");
    let ttl = Duration::from_secs(5);
    let ids = |prefix: &str| -> Vec<TaskId> {
        (0..3)
            .map(|i| TaskId::parse(&format!("{prefix}{i}")).unwrap())
            .collect()
    };
    for id in ids("early") {
        sweeper
            .create(NewTask::new().id(id.clone()).ttl(ttl))
            .unwrap();
        assert!(
            sweeper
                .complete(&id, serde_json::json!(0))
                .unwrap()
                .is_applied()
        );
    }
    sweeper.list(&taskstore::ListQuery::active()).unwrap();
    clock.advance(Duration::from_secs(10));
    assert_eq!(sweeper.sweep_expired().unwrap(), 3, "the first large sweep");
    let moved = ids("moved");
    for id in &moved {
        mover
            .create(NewTask::new().id(id.clone()).ttl(ttl))
            .unwrap();
        assert!(
            mover
                .complete(id, serde_json::json!(1))
                .unwrap()
                .is_applied()
        );
    }
    // Read before they expire (an expired task reads as gone, whatever
    // its files).
    let reading = taskstore::ManualClock::new(taskstore::Clock::now(&clock));
    clock.advance(Duration::from_secs(10));
    let from = recorder.len() + 1;
    assert_eq!(
        sweeper.sweep_expired().unwrap(),
        3,
        "the second large sweep"
    );
    drop((sweeper, mover));
    let scratch = workload::scratch_dir("taskstore-mixed-sweep-states");
    let states = crash_states_from(dir.path(), &recorder.events(), from, scratch.path());
    assert!(!states.is_empty());
    let open = |root: &Path| {
        FileStore::builder(root)
            .clock(Arc::new(reading.clone()))
            .open()
    };
    every_state(states, open, nothing, |store| {
        let mut running = Vec::new();
        for id in &moved {
            match store.get(id) {
                Ok(None) => {}
                Ok(Some(task)) if task.status == TaskStatus::Completed => {}
                got => running.push(format!("{id}: {got:?}")),
            }
        }
        running
    })
    .assert_none("another handle's moves swept");
}

/// A task an `Immediate` handle acknowledged gone (or its file damaged)
/// after an `Eventual` handle's own terminal write of it: documented.
const LOST: &str = "lost after an Eventual move";
/// A task an `Immediate` handle acknowledged finished running again after
/// an `Eventual` handle removed it: documented.
const BACK: &str = "back running after an Eventual removal";

/// CONSISTENCY.md ("Handles of one store with different durabilities"):
/// an `Eventual` handle's own terminal write of a task makes neither its
/// new file nor its names durable, and its removal of a finished one
/// leaves the name the task's move left in `active/` to a later fsync, so
/// a power loss can lose a task an `Immediate` handle acknowledged, or
/// bring it back running. Here an `Immediate` handle creates four tasks and
/// finishes two; an `Eventual` handle then completes one still running
/// (`moved`) and deletes one finished (`removed`); the `Immediate` handle
/// then writes again (an fsync of `active/`). In every crash state from
/// the `Immediate` handle's last answer on, the two tasks no `Eventual`
/// handle touched read as acknowledged, and every state that breaks an
/// acknowledgement does so in the documented way: `moved` gone or damaged,
/// `removed` running; and each of those is found (the document's claim is
/// not empty).
#[test]
fn under_mixed_durabilities_only_the_documented_eventual_moves_undo_immediate_answers() {
    let (dir, root, recorder, clock) = recorded_store("taskstore-mixed-loss");
    let open = |instance: &str, durability: Durability| {
        recorded(&root, &clock, &recorder)
            .instance_id(instance)
            .durability(durability)
            .open()
            .unwrap()
    };
    let immediate = open("immediate", Durability::Immediate);
    let id = |s: &str| TaskId::parse(s).unwrap();
    let create = |s: &str| immediate.create(NewTask::new().id(id(s))).unwrap();
    let (kept, moved) = (create("kept"), create("moved"));
    let (finished, removed) = (create("finished"), create("removed"));
    let complete = |s: &str| {
        let done = immediate.complete(&id(s), serde_json::json!(s)).unwrap();
        assert!(done.is_applied(), "{done:?}");
        done.into_task()
    };
    let (finished, removed) = (
        (finished.id.clone(), complete(finished.id.as_str())),
        complete(removed.id.as_str()),
    );
    let from = recorder.len() + 1;
    let eventual = open("eventual", Durability::Eventual);
    let moved_by_eventual = eventual
        .complete(&moved.id, serde_json::json!("eventual"))
        .unwrap()
        .into_task();
    assert!(eventual.delete(&removed.id).unwrap());
    immediate.create(NewTask::new().id(id("after"))).unwrap();
    drop((eventual, immediate));
    let scratch = workload::scratch_dir("taskstore-mixed-loss-states");
    let states = crash_states_from(dir.path(), &recorder.events(), from, scratch.path());
    let open = |root: &Path| {
        FileStore::builder(root)
            .clock(Arc::new(clock.clone()))
            .open()
    };
    let found = every_state(states, open, nothing, |store| {
        let get = |task: &TaskId| store.get(task);
        let mut out = Vec::new();
        for (task, want) in [(&kept.id, &kept), (&finished.0, &finished.1)] {
            match get(task) {
                Ok(Some(got)) if &got == want => {}
                got => out.push(format!("{task}: {got:?}")),
            }
        }
        match get(&moved.id) {
            Ok(Some(got)) if got == moved || got == moved_by_eventual => {}
            Ok(None) | Err(taskstore::Error::Corrupt { .. }) => out.push(LOST.to_owned()),
            got => out.push(format!("moved: {got:?}")),
        }
        match get(&removed.id) {
            Ok(None) => {}
            Ok(Some(got)) if got == removed => {}
            Ok(Some(got)) if !got.is_terminal() => out.push(BACK.to_owned()),
            got => out.push(format!("removed: {got:?}")),
        }
        out
    });
    let count = |kind: &str| {
        let kind = format!(": {kind}");
        found.lines.iter().filter(|l| l.ends_with(&kind)).count()
    };
    eprintln!(
        "mixed durabilities: {} crash states; lost after an Eventual move: {}, back \
         after an Eventual removal: {}, in all {} broken",
        found.states,
        count(LOST),
        count(BACK),
        found.lines.len()
    );
    let undocumented: Vec<&String> = found
        .lines
        .iter()
        .filter(|line| {
            !line.ends_with(&format!(": {LOST}")) && !line.ends_with(&format!(": {BACK}"))
        })
        .collect();
    assert!(
        undocumented.is_empty(),
        "{} of {} crash states broke an acknowledgement otherwise than documented: {:#?}",
        undocumented.len(),
        found.states,
        &undocumented[..undocumented.len().min(4)]
    );
    for kind in [LOST, BACK] {
        assert!(
            count(kind) > 0,
            "no crash state shows a task {kind}: the document's claim is not shown"
        );
    }
}
