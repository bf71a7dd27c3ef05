//! Several processes on one store directory, for real: each test spawns this
//! test binary as its children (see `common::spawn`), and checks the
//! cross-process invariants (CONSISTENCY.md) — first writer wins, no lost
//! updates, no torn reads — on what the children report and on the store.

#[path = "../common/mod.rs"]
mod common;
mod forks;
mod freshness;
mod large_sweeps;
mod races;
mod torn_reads;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use common::{Rng, id, read_tasks, spawn, touch, wait_for, wait_until, write_atomic, write_tasks};
use serde_json::json;
use taskstore::{
    Durability, Error, FileStore, ListQuery, NewTask, Task, TaskId, TaskStatus, TaskStore,
    TaskUpdate, Transition,
};

/// Tasks in the race and torn-read tests.
const TASKS: usize = 1_000;

fn open(store: &Path, instance: &str) -> FileStore {
    FileStore::builder(store)
        .instance_id(instance)
        .open()
        .expect("open the store")
}

/// A handle that skips fsync: for bulk setup, and for tests whose subject
/// (what other processes read) fsync cannot change.
fn open_fast(store: &Path, instance: &str) -> FileStore {
    FileStore::builder(store)
        .instance_id(instance)
        .durability(Durability::Eventual)
        .open()
        .expect("open the store")
}

/// `(store dir, work dir for flags and reports)` from a child's arguments.
fn dirs(args: &[String]) -> (PathBuf, PathBuf) {
    (PathBuf::from(&args[0]), PathBuf::from(&args[1]))
}

fn args(store: &Path, work: &Path, rest: &[String]) -> Vec<String> {
    let mut v = vec![store.display().to_string(), work.display().to_string()];
    v.extend_from_slice(rest);
    v
}

/// Updates every task twice, then completes half of them (the other writer
/// the other half); the two writers go in opposite directions.
fn writer(args: &[String]) {
    let (store, _) = dirs(args);
    let w: usize = args[2].parse().unwrap();
    // No fsync: what another process reads does not depend on it.
    let s = open_fast(&store, &format!("writer-{w}"));
    let mut order: Vec<usize> = (0..TASKS).collect();
    if w == 1 {
        order.reverse();
    }
    for i in order {
        let tid = id("torn", i);
        for n in 0..2 {
            let t = s
                .update(
                    &tid,
                    TaskUpdate::new()
                        .status_message(format!("writer {w} pass {n}"))
                        .metadata(format!("w{w}-{n}"), "x".repeat(64 * (i % 32))),
                )
                .unwrap();
            assert!(t.is_applied() || i % 2 != w, "{t:?}");
        }
        if i % 2 == w {
            let t = s.complete(&tid, json!({ "writer": w })).unwrap();
            assert!(t.is_applied(), "only this writer completes task {i}");
        }
    }
    // Never a torn task for the writer either.
    match s.get(&id("torn", 0)) {
        Ok(Some(_)) => {}
        Ok(None) => panic!("task vanished"),
        Err(e @ Error::Corrupt { .. }) => panic!("{e}"),
        Err(e) => panic!("{e}"),
    }
}

fn parse(task: &str) -> TaskId {
    TaskId::parse(task).expect("a valid test id")
}
