//! The SIGKILL loop: a child process creates, updates, completes and deletes
//! tasks, acknowledging each call after it returns; the parent kills it at a
//! random moment, reopens the store and checks that every acknowledged
//! operation is visible, nothing is torn, and the killed writer's leftovers
//! are gone: temp files at the next open, unfinished terminal moves (a
//! terminal task still in `active/`) at the next sweep.
//!
//! `TASKSTORE_CRASH_KILLS` sets the number of kills (default 50).

mod common;

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Rng, spawn, wait_for};
use serde_json::json;
use taskstore::{
    Durability, FileStore, ListQuery, NewTask, Task, TaskId, TaskStatus, TaskStore, TaskUpdate,
    Transition,
};

const TEST: &str = "sigkill_loop_keeps_every_acknowledged_operation";
const DEFAULT_KILLS: usize = 50;
/// Keeps the number of running tasks (and so each round's work) bounded.
const MAX_ACTIVE: usize = 40;

/// What the parent knows about one task from the acknowledgement log.
#[derive(Clone, Debug)]
enum Expect {
    /// The last acknowledged state (`None`: deleted).
    Known(Option<Task>),
    /// An operation began after that state and was never acknowledged: either
    /// state is allowed, nothing in between.
    InFlight { before: Option<Task>, op: String },
}

#[test]
fn sigkill_loop_keeps_every_acknowledged_operation() {
    if let Some((role, args)) = common::role() {
        assert_eq!(role, "worker");
        return worker(&args);
    }
    let kills: usize = std::env::var("TASKSTORE_CRASH_KILLS")
        .ok()
        .map(|v| v.parse().expect("TASKSTORE_CRASH_KILLS is a number"))
        .unwrap_or(DEFAULT_KILLS);
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let ack_log = tmp.path().join("acks.log");
    let mut rng = Rng::from_entropy("crash loop");
    let mut model: BTreeMap<TaskId, Expect> = BTreeMap::new();
    let mut read_upto = 0usize;
    let (mut acked, mut in_flight, mut temp_leftovers, mut half_moves) = (0, 0, 0, 0);
    let start = Instant::now();

    for round in 0..kills {
        let durability = if round % 2 == 0 {
            "immediate"
        } else {
            "eventual"
        };
        let before = fs::metadata(&ack_log).map(|m| m.len()).unwrap_or(0);
        let mut child = spawn(
            tmp.path(),
            TEST,
            "worker",
            &[
                store.display().to_string(),
                ack_log.display().to_string(),
                round.to_string(),
                durability.to_owned(),
            ],
        );
        if round % 4 != 3 {
            // Usually let it get going first; every fourth round may kill it
            // while it starts up, opens or recovers the store.
            let mut worker = [child];
            wait_for(&mut worker, "the worker's first operation", || {
                fs::metadata(&ack_log).map(|m| m.len()).unwrap_or(0) > before
            });
            [child] = worker;
        }
        std::thread::sleep(Duration::from_millis(rng.below(40)));
        if let Some(status) = child.child.try_wait().unwrap() {
            let stderr = fs::read_to_string(&child.stderr_path).unwrap_or_default();
            panic!("round {round}: the worker exited by itself ({status}):\n{stderr}");
        }
        child.kill();

        // Replay this round's acknowledgements into the model.
        let text = fs::read_to_string(&ack_log).unwrap_or_default();
        let complete = text.rfind('\n').map_or(0, |i| i + 1);
        let mut pending: Option<(String, TaskId)> = None;
        for line in text[read_upto..complete].lines() {
            let mut parts = line.splitn(4, ' ');
            let (kind, op, tid) = (parts.next(), parts.next(), parts.next());
            let (kind, op) = (kind.unwrap(), op.unwrap().to_owned());
            let tid = TaskId::parse(tid.unwrap()).unwrap();
            match kind {
                "begin" => pending = Some((op, tid)),
                "ack" => {
                    assert_eq!(pending.take(), Some((op.clone(), tid.clone())));
                    let task: Option<Task> = serde_json::from_str(parts.next().unwrap()).unwrap();
                    model.insert(tid, Expect::Known(task));
                    acked += 1;
                }
                other => panic!("bad ack line kind {other}"),
            }
        }
        // A torn last line (killed mid-append) is ignored: never acknowledged.
        fs::OpenOptions::new()
            .write(true)
            .open(&ack_log)
            .and_then(|f| f.set_len(complete as u64))
            .ok();
        read_upto = complete;
        if let Some((op, tid)) = pending {
            in_flight += 1;
            let before = match model.get(&tid) {
                Some(Expect::Known(t)) => t.clone(),
                None => None,
                Some(e @ Expect::InFlight { .. }) => panic!("still unresolved: {e:?}"),
            };
            model.insert(tid, Expect::InFlight { before, op });
        }

        // What the killed writer left behind: temp files, and terminal moves
        // stopped between their steps (the terminal task still in active/,
        // or linked into done/ too). Never two versions of one task.
        temp_leftovers += common::files_in(&store, "tmp").len();
        half_moves += common::unmoved(&store).len();
        assert_eq!(
            common::two_versions(&store),
            Vec::<String>::new(),
            "round {round}: two versions of a task in active/ and done/"
        );

        // The next open removes the temp files...
        let s = FileStore::builder(&store)
            .instance_id("verifier")
            .open()
            .unwrap_or_else(|e| panic!("round {round}: the store does not open: {e}"));
        assert_eq!(
            common::files_in(&store, "tmp"),
            Vec::<String>::new(),
            "round {round}: temp files left"
        );
        assert_eq!(
            common::half_moved(&store),
            Vec::<String>::new(),
            "round {round}: a task left in both active/ and done/ after the open"
        );
        // ...every acknowledged operation is visible, nothing is torn...
        for (tid, expect) in model.iter_mut() {
            let got = s
                .get(tid)
                .unwrap_or_else(|e| panic!("round {round}: task {tid} unreadable: {e}"));
            match expect {
                Expect::Known(want) => assert_eq!(&got, want, "round {round}: task {tid}"),
                Expect::InFlight { before, op } => {
                    check_in_flight(tid, before.as_ref(), op, got.as_ref());
                    *expect = Expect::Known(got);
                }
            }
        }
        // ...and the store holds nothing else and nothing unreadable.
        let listed = s.list(&ListQuery::all()).unwrap().tasks;
        let live = model
            .values()
            .filter(|e| matches!(e, Expect::Known(Some(_))))
            .count();
        assert_eq!(listed.len(), live, "round {round}: unexpected tasks listed");
        for t in &listed {
            assert!(matches!(model.get(&t.id), Some(Expect::Known(Some(w))) if w == t));
        }
        assert_eq!(
            common::files_in(&store, "quarantine"),
            Vec::<String>::new(),
            "round {round}: corrupt files"
        );
        // ...and the next sweep finishes the interrupted terminal moves.
        assert_eq!(s.sweep_expired().unwrap(), 0);
        assert_eq!(
            common::unmoved(&store),
            Vec::<String>::new(),
            "round {round}: unfinished terminal moves after a sweep"
        );
        assert_eq!(common::half_moved(&store), Vec::<String>::new());
    }
    let line = format!(
        "{kills} kills in {:.1?}: {acked} acknowledged operations verified, {in_flight} \
         killed mid-operation, {temp_leftovers} temp files and {half_moves} unfinished terminal \
         moves cleaned up, {} tasks in the store",
        start.elapsed(),
        model.len()
    );
    eprintln!("{line}");
    if let Ok(path) = std::env::var("TASKSTORE_CRASH_REPORT") {
        fs::write(path, line).unwrap();
    }
    assert!(acked > 0, "the workers never got to acknowledge anything");
}

/// An operation that was in flight at the kill: the task is as before it, or
/// as that one operation made it — never anything in between.
fn check_in_flight(tid: &TaskId, before: Option<&Task>, op: &str, got: Option<&Task>) {
    if got == before {
        return;
    }
    let ok = match (op, before, got) {
        ("create", None, Some(t)) => t.status == TaskStatus::Working && t.revision == 1,
        ("update", Some(b), Some(t)) => {
            !t.is_terminal()
                && t.revision == b.revision + 1
                && t.created_at == b.created_at
                && b.metadata.iter().all(|(k, v)| t.metadata.get(k) == Some(v))
        }
        ("finish", Some(b), Some(t)) => {
            t.is_terminal() && t.revision == b.revision + 1 && t.metadata == b.metadata
        }
        ("delete", Some(_), None) => true,
        _ => false,
    };
    assert!(
        ok,
        "task {tid}: {op} was in flight; before {before:?}, found {got:?}"
    );
}

/// The child: works on the store until it is killed, logging `begin` before
/// and `ack` (with the task as returned) after every call.
fn worker(args: &[String]) {
    let (store, ack_log) = (PathBuf::from(&args[0]), Path::new(&args[1]));
    let round: usize = args[2].parse().unwrap();
    let durability = match args[3].as_str() {
        "immediate" => Durability::Immediate,
        _ => Durability::Eventual,
    };
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(ack_log)
        .unwrap();
    // One `write` per line, straight to the kernel: a kill loses no acknowledged line.
    let mut note = |line: String| log.write_all(format!("{line}\n").as_bytes()).unwrap();
    let s = FileStore::builder(&store)
        .instance_id(format!("worker-{round}"))
        .durability(durability)
        .open()
        .unwrap();
    let mut rng = Rng::from_entropy(&format!("worker {round}"));
    let mut active: Vec<TaskId> = s
        .list(&ListQuery::active())
        .unwrap()
        .tasks
        .into_iter()
        .map(|t| t.id)
        .collect();
    let mut finished: Vec<TaskId> = Vec::new();
    let ack = |t: &Option<Task>| serde_json::to_string(t).unwrap();
    for n in 0.. {
        let dice = rng.below(100);
        if active.is_empty() || (dice < 35 && active.len() < MAX_ACTIVE) {
            let tid = TaskId::parse(&format!("r{round}-{n}")).unwrap();
            note(format!("begin create {tid}"));
            let t = s
                .create(
                    NewTask::new()
                        .id(tid.clone())
                        .metadata("round", round)
                        .metadata("pad", "p".repeat(rng.below(4096) as usize)),
                )
                .unwrap();
            note(format!("ack create {tid} {}", ack(&Some(t))));
            active.push(tid);
        } else if dice < 65 {
            let tid = active[rng.below(active.len() as u64) as usize].clone();
            note(format!("begin update {tid}"));
            let t = s
                .update(
                    &tid,
                    TaskUpdate::new()
                        .status_message(format!("step {n} of round {round}"))
                        .metadata(format!("u{round}-{n}"), n),
                )
                .unwrap();
            let Transition::Applied(t) = t else {
                panic!("update of {tid} not applied: {t:?}")
            };
            note(format!("ack update {tid} {}", ack(&Some(t))));
        } else if dice < 90 || finished.is_empty() {
            let tid = active.swap_remove(rng.below(active.len() as u64) as usize);
            note(format!("begin finish {tid}"));
            let t = match rng.below(3) {
                0 => s.complete(&tid, json!({ "round": round, "n": n })),
                1 => s.fail(&tid, json!({ "code": "boom", "n": n })),
                _ => s.cancel(&tid, Some(format!("cancelled at {n}"))),
            }
            .unwrap();
            let Transition::Applied(t) = t else {
                panic!("finish of {tid} not applied: {t:?}")
            };
            note(format!("ack finish {tid} {}", ack(&Some(t))));
            finished.push(tid);
        } else {
            let tid = finished.swap_remove(rng.below(finished.len() as u64) as usize);
            note(format!("begin delete {tid}"));
            assert!(s.delete(&tid).unwrap(), "{tid} was live");
            note(format!("ack delete {tid} {}", ack(&None)));
        }
    }
}
