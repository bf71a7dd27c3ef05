//! The event log as a debugging window, a JSON-lines file for the record,
//! and a fan-out that survives a broken sink.
//!
//! Run with `cargo run --example events`.

use std::sync::Arc;

use taskstore::{
    Event, EventLog, EventSink, FanOut, JsonLinesSink, MemoryStore, NewTask, Outcome, TaskStore,
};

struct Broken;

impl EventSink for Broken {
    fn emit(&self, _: &Event) {
        panic!("this sink is broken on purpose");
    }
}

fn main() -> Result<(), taskstore::Error> {
    let log = Arc::new(EventLog::with_capacity(4));
    let dir = std::env::temp_dir().join(format!("taskstore-events-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| taskstore::Error::Io {
        op: "create directory",
        path: dir.clone(),
        source: e,
    })?;
    let file = Arc::new(JsonLinesSink::open(dir.join("events.jsonl"))?);
    // The default panic hook would print the broken sink's message; keep the output readable.
    std::panic::set_hook(Box::new(|_| {}));
    let sink = Arc::new(
        FanOut::new()
            .with_shared(log.clone())
            .with_shared(file.clone())
            .with(Broken),
    );

    // The store emits its own task events (created, completed, ...) to the
    // sink; the host pushes what it likes through the same sink.
    let store = MemoryStore::builder().sink(sink.clone()).build()?;
    let task = store.create(NewTask::new())?;
    for step in 1..=3 {
        sink.emit(
            &Event::new("host.progress")
                .field("taskId", task.id.as_str())
                .field("step", step),
        );
    }
    let _transition = store.finish(
        &task.id,
        Outcome::Completed(serde_json::json!({"answer": 42})),
    )?;

    println!(
        "log (capacity {}, {} evicted):",
        log.capacity(),
        log.evicted()
    );
    for record in log.snapshot() {
        println!(
            "  #{} {} {} {}",
            record.seq, record.at, record.event.kind, record.event.data
        );
    }
    let since = log.since(1);
    println!(
        "since #1: {} records, {} missed, next cursor {}",
        since.records.len(),
        since.missed,
        since.cursor
    );
    println!(
        "broken sink panicked {} times; the others never noticed",
        sink.panics()
    );
    println!(
        "{} lines appended to {}",
        file.written(),
        file.path().display()
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
