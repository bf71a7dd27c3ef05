//! The tour: create, update, race two handles to finish one task, list what
//! is running, expire a task by TTL, reopen and find the rest.
//!
//! ```text
//! cargo run --example quickstart [STORE_DIR]     # default: ./taskstore-demo
//! ```

use std::sync::{Arc, Barrier};
use std::time::Duration;

use serde_json::json;
use taskstore::{
    FileStore, ListQuery, NewTask, Task, TaskStatus, TaskStore, TaskUpdate, Transition,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "taskstore-demo".into());
    let store = FileStore::open(&dir)?;
    println!("opened store at {dir}/ (durable: fsync before every rename)");
    let earlier = store.list(&ListQuery::all())?.tasks.len();
    if earlier > 0 {
        println!("  {earlier} task(s) from earlier runs are still here");
    }

    // 1. Create a task and move it along.
    let report = store.create(
        NewTask::new()
            .ttl(Duration::from_secs(3600))
            .poll_interval(Duration::from_millis(500))
            .metadata("tool", "build-report"),
    )?;
    println!();
    show("created", &report);
    let report = store
        .update(
            &report.id,
            TaskUpdate::new()
                .status(TaskStatus::InputRequired)
                .input_requests(json!({"question": "which quarter?"})),
        )?
        .into_task();
    show("updated", &report);
    let report = store
        .update(
            &report.id,
            TaskUpdate::new()
                .status(TaskStatus::Working)
                .metadata("quarter", "Q3"),
        )?
        .into_task();
    show("updated", &report);

    // 2. Two handles (as two processes would) race to finish the same task.
    let race = store.create(
        NewTask::new()
            .ttl(Duration::from_secs(3600))
            .metadata("tool", "race"),
    )?;
    let barrier = Arc::new(Barrier::new(2));
    let racers: Vec<_> = [("completer", true), ("canceller", false)]
        .into_iter()
        .map(|(name, complete)| {
            let (dir, id, barrier) = (dir.clone(), race.id.clone(), barrier.clone());
            std::thread::spawn(move || -> taskstore::Result<(&str, Transition)> {
                let handle = FileStore::open(&dir)?;
                barrier.wait();
                let outcome = if complete {
                    handle.complete(&id, json!({"rows": 42}))?
                } else {
                    handle.cancel(&id, Some("no longer needed".into()))?
                };
                Ok((name, outcome))
            })
        })
        .collect();
    println!("\nrace on {}:", race.id);
    for racer in racers {
        let (name, outcome) = racer.join().expect("racer panicked")?;
        let verdict = if outcome.is_applied() {
            "won"
        } else {
            "lost (already terminal)"
        };
        println!(
            "  {name:<9} {verdict:<24} -> task is {}",
            outcome.task().status
        );
    }

    // 3. What is still running? (reads active tasks only, never history)
    let active = store.list(&ListQuery::active())?;
    println!("\nactive tasks: {}", active.tasks.len());
    for t in &active.tasks {
        println!(
            "  {}  {}  tool={}",
            t.id,
            t.status,
            t.metadata.get("tool").unwrap_or(&json!("-"))
        );
    }

    // 4. A task with a short TTL vanishes for every reader once it lapses.
    let brief = store.create(NewTask::new().ttl(Duration::from_millis(300)))?;
    println!("\ncreated  {}  ttl=300ms", brief.id);
    std::thread::sleep(Duration::from_millis(350));
    println!(
        "after 350ms: get -> {:?}",
        store.get(&brief.id)?.map(|t| t.status)
    );
    println!(
        "sweep_expired deleted {} expired task(s)",
        store.sweep_expired()?
    );

    let report = store
        .complete(&report.id, json!({"summary": "Q3 revenue up"}))?
        .into_task();
    println!(
        "\ncompleted {}  result={}",
        report.id,
        report.result.as_ref().unwrap()
    );

    // 5. Drop every handle, reopen, and everything is still there.
    drop(store);
    let store = FileStore::open(&dir)?;
    let all = store.list(&ListQuery::all())?.tasks;
    println!("\nreopened: {} task(s) in the store", all.len());
    for id in [&report.id, &race.id] {
        let t = store.get(id)?.expect("a finished task survives reopening");
        println!("  {}  {:<9}  revision={}", t.id, t.status, t.revision);
    }
    println!("\nrun it again: the tasks above stay until their TTL runs out ({dir}/ on disk)");
    Ok(())
}

/// One line per step: what happened, to which task, and where it stands.
fn show(what: &str, task: &Task) {
    println!(
        "{what:<8} {}  status={} revision={}",
        task.id, task.status, task.revision
    );
}
