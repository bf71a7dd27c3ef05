//! The tour: create, update, race two handles to finish the same tasks, list
//! what is running, expire a task by TTL, reopen and find the rest.
//!
//! ```text
//! cargo run -p taskstore-demo [STORE_DIR]        # default: ./taskstore-demo
//! cargo run --example quickstart [STORE_DIR]     # the same, built with every dev-dependency
//! ```

use std::sync::{Arc, Barrier};
use std::time::Duration;

use serde_json::json;
use taskstore::{FileStore, ListQuery, NewTask, Task, TaskId, TaskStatus, TaskStore, TaskUpdate};

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

    // 2. Two handles (as two processes would) race to finish the same tasks:
    // for each task, a barrier releases both at once, and the first writer
    // wins. Which one that is, is up to the scheduler.
    const RACES: usize = 100;
    let race = (0..RACES)
        .map(|_| {
            store
                .create(
                    NewTask::new()
                        .ttl(Duration::from_secs(3600))
                        .metadata("tool", "race"),
                )
                .map(|t| t.id)
        })
        .collect::<taskstore::Result<Vec<TaskId>>>()?;
    let barrier = Arc::new(Barrier::new(2));
    let racers: Vec<_> = [true, false]
        .into_iter()
        .map(|complete| {
            let (dir, ids, barrier) = (dir.clone(), race.clone(), barrier.clone());
            std::thread::spawn(move || -> taskstore::Result<usize> {
                let handle = FileStore::open(&dir)?;
                let (mut won, mut failed) = (0, None);
                for id in &ids {
                    // Both wait here for every task, even after an error, so
                    // that the other is never left waiting alone.
                    barrier.wait();
                    let outcome = if complete {
                        handle.complete(id, json!({"rows": 42}))
                    } else {
                        handle.cancel(id, Some("no longer needed".into()))
                    };
                    match outcome {
                        Ok(t) => won += usize::from(t.is_applied()),
                        Err(e) => {
                            failed.get_or_insert(e);
                        }
                    }
                }
                failed.map_or(Ok(won), Err)
            })
        })
        .collect();
    let mut wins = Vec::new();
    for racer in racers {
        wins.push(racer.join().expect("racer panicked")?);
    }
    let (mut completed, mut cancelled) = (0, 0);
    for id in &race {
        match store.get(id)?.map(|t| t.status) {
            Some(TaskStatus::Completed) => completed += 1,
            Some(TaskStatus::Cancelled) => cancelled += 1,
            other => return Err(format!("race task {id} ended {other:?}").into()),
        }
    }
    assert_eq!(
        (wins[0], wins[1]),
        (completed, cancelled),
        "one winner per task"
    );
    println!("\nrace: {RACES} tasks, each finished at once by two handles (first writer wins):");
    println!(
        "  completer won {completed}, canceller won {cancelled}: every task has exactly one winner"
    );
    for id in &race {
        store.delete(id)?;
    }
    println!("  (the race's tasks are deleted)");

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
    // The `get` above met the task expired and deleted it already (a handle
    // that sees a task expire removes it); the sweep deletes any others.
    println!(
        "sweep_expired deleted {} more expired task(s) (get deleted the one it met)",
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
    println!(
        "\nreopened: {} live task(s) in the store, this run's and earlier runs' (each lives 1 h from its creation); this run's:",
        all.len()
    );
    let t = store
        .get(&report.id)?
        .expect("a finished task survives reopening");
    println!("  {}  {:<9}  revision={}", t.id, t.status, t.revision);
    println!("\nrun it again: the tasks stay until their TTL runs out ({dir}/ on disk)");
    Ok(())
}

/// One line per step: what happened, to which task, and where it stands.
fn show(what: &str, task: &Task) {
    println!(
        "{what:<8} {}  status={} revision={}",
        task.id, task.status, task.revision
    );
}
