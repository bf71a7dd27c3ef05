//! The JSON-lines wire form of events: what `JsonLinesSink` writes for each
//! family of events is pinned here, and lines written by earlier versions
//! still parse back into typed events.

use std::sync::Arc;

use serde_json::{Value, json};
use taskstore::{
    BreakerConfig, BreakerEventKind, BreakerRegistry, Event, EventKind, EventSink, FileStore,
    JsonLinesSink, ListQuery, ManualClock, NewTask, TaskEventKind, TaskId, TaskStore,
};
use time::OffsetDateTime;

/// Lines as `JsonLinesSink` wrote them before event kinds became types (a
/// store, a breaker and a host writing to one file).
const WRITTEN_BEFORE: [&str; 8] = [
    r#"{"at":"2026-12-01T08:58:02.156223492Z","pid":21020,"kind":"task.created","layer_to":"working","data":{"revision":1,"status":"working","taskId":"t-1"}}"#,
    r#"{"at":"2026-12-01T08:58:02.157470441Z","pid":21020,"kind":"task.completed","layer_to":"completed","data":{"revision":2,"status":"completed","taskId":"t-1"}}"#,
    r#"{"at":"2026-12-01T08:58:02.157812623Z","pid":21020,"kind":"task.corrupt_set_aside","data":{"path":"/tmp/.tmpQa25lK/store/active/broken.json","quarantinedAs":"/tmp/.tmpQa25lK/store/quarantine/active.1796115482157768761.21020.0.broken.json","reason":"corrupt task file /tmp/.tmpQa25lK/store/active/broken.json: not a task file: EOF while parsing an object at line 1 column 1"}}"#,
    r#"{"at":"2026-12-01T08:58:02.158025663Z","pid":21020,"kind":"breaker.opened","layer_from":"closed","layer_to":"open","data":{"breaker":"db","calls":2,"consecutive_failures":2,"failure_rate":1.0,"failure_rate_threshold":0.5,"failures":2,"minimum_calls":2,"open_for_ms":30000,"reason":"failure_rate","retry_at":"2026-01-01T00:00:30Z","slow_calls":0,"trips":1}}"#,
    r#"{"at":"2026-12-01T08:58:02.15809923Z","pid":21020,"kind":"breaker.half_opened","layer_from":"open","layer_to":"half_open","data":{"breaker":"db","open_for_ms":30000,"opened_at":"2026-01-01T00:00:00Z","probes":1,"trips":1}}"#,
    r#"{"at":"2026-12-01T08:58:02.158130689Z","pid":21020,"kind":"breaker.forced_open","layer_from":"half_open","layer_to":"forced_open","data":{"breaker":"db","trips":1}}"#,
    r#"{"at":"2026-12-01T08:58:02.158153793Z","pid":21020,"kind":"breaker.reset","layer_from":"forced_open","layer_to":"closed","data":{"breaker":"db"}}"#,
    r#"{"at":"2026-12-01T08:58:02.158174101Z","pid":21020,"kind":"cache.miss","layer_from":"memory","layer_to":"disk","data":{"key":"user:42"}}"#,
];

/// A line without the sink's own `at` and `pid`: the event as written.
fn event_part(line: &str) -> Value {
    let mut value: Value = serde_json::from_str(line).unwrap();
    let object = value.as_object_mut().unwrap();
    assert!(
        object
            .remove("at")
            .unwrap()
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert_eq!(object.remove("pid").unwrap(), json!(std::process::id()));
    value
}

/// A file store at `<dir>/store` on a manual clock (2026-01-01), whose
/// events a `JsonLinesSink` writes to `<dir>/events.jsonl`.
fn store_writing_events() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    Arc<JsonLinesSink>,
    ManualClock,
    FileStore,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let sink = Arc::new(JsonLinesSink::open(&path).unwrap());
    let clock = ManualClock::new(OffsetDateTime::from_unix_timestamp(1_767_225_600).unwrap());
    let store = FileStore::builder(dir.path().join("store"))
        .clock(Arc::new(clock.clone()))
        .sink(sink.clone())
        .open()
        .unwrap();
    (dir, path, sink, clock, store)
}

#[test]
fn lines_written_before_parse_back_into_typed_events() {
    let events: Vec<Event> = WRITTEN_BEFORE
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let kinds: Vec<&EventKind> = events.iter().map(|e| &e.kind).collect();
    assert_eq!(*kinds[0], TaskEventKind::Created);
    assert_eq!(*kinds[1], TaskEventKind::Completed);
    // The one kind that was renamed (now `task.unreadable`): an old line
    // reads as a host event of that name, not as an error.
    assert!(matches!(kinds[2], EventKind::Host(name) if name.as_str() == "task.corrupt_set_aside"));
    assert_eq!(*kinds[3], BreakerEventKind::Opened);
    assert_eq!(*kinds[4], BreakerEventKind::HalfOpened);
    assert_eq!(*kinds[5], BreakerEventKind::ForcedOpen);
    assert_eq!(*kinds[6], BreakerEventKind::Reset);
    assert!(matches!(kinds[7], EventKind::Host(name) if name.as_str() == "cache.miss"));
    assert_eq!(events[3].breaker_name(), Some("db"));
    assert_eq!(events[3].data["reason"], "failure_rate");

    // Written again, each is the same JSON (less the sink's `at` and `pid`).
    for (line, event) in WRITTEN_BEFORE.iter().zip(&events) {
        let mut before: Value = serde_json::from_str(line).unwrap();
        let before = before.as_object_mut().unwrap();
        before.remove("at");
        before.remove("pid");
        assert_eq!(
            serde_json::to_value(event).unwrap(),
            Value::Object(before.clone())
        );
    }
}

#[test]
fn the_wire_form_of_each_family_is_pinned() {
    let (dir, path, sink, clock, store) = store_writing_events();
    store
        .create(NewTask::new().id(TaskId::parse("t-1").unwrap()))
        .unwrap();
    std::fs::write(dir.path().join("store/active/broken.json"), b"{").unwrap();
    store.list(&ListQuery::all()).unwrap();
    let registry = BreakerRegistry::new(BreakerConfig::default().minimum_calls(2))
        .unwrap()
        .with_clock(Arc::new(clock.clone()))
        .with_sink(sink.clone());
    let db = registry.breaker("db").unwrap();
    db.try_acquire().unwrap().failure();
    db.try_acquire().unwrap().failure();
    sink.emit(
        &Event::new("cache.miss")
            .from_layer("memory")
            .to_layer("disk")
            .field("key", "user:42"),
    );

    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<Value> = text.lines().map(event_part).collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert_eq!(
        lines[0],
        json!({
            "kind": "task.created",
            "layer_to": "working",
            "data": {"taskId": "t-1", "status": "working", "revision": 1},
        })
    );
    let unreadable = &lines[1];
    assert_eq!(unreadable["kind"], "task.unreadable");
    let location = dir.path().join("store/active/broken.json");
    assert_eq!(
        unreadable["data"]["location"],
        location.display().to_string()
    );
    assert_eq!(unreadable["data"]["action"], "setAside");
    assert!(
        unreadable["data"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("corrupt task file")
    );
    let data = unreadable["data"].as_object().unwrap();
    let mut keys: Vec<&str> = data.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["action", "location", "movedTo", "reason", "taskId"]);
    // The generation numbers every breaker transition (and making) of the
    // process, so its value depends on what other tests' breakers did
    // first.
    let without_generation = |line: &Value| {
        let mut line = line.clone();
        let generation = line["data"]
            .as_object_mut()
            .unwrap()
            .remove("generation")
            .expect("a breaker's event carries its generation");
        (line, generation.as_u64().expect("a number"))
    };
    let (created, made_in) = without_generation(&lines[2]);
    assert!(made_in >= 1, "{made_in}");
    assert_eq!(
        created,
        json!({
            "kind": "breaker.created",
            "layer_to": "closed",
            "data": {"breaker": "db"},
        })
    );
    let (opened, generation) = without_generation(&lines[3]);
    assert!(generation > made_in, "{generation}");
    assert_eq!(
        opened,
        json!({
            "kind": "breaker.opened",
            "layer_from": "closed",
            "layer_to": "open",
            "data": {
                "breaker": "db",
                "reason": "failure_rate",
                "calls": 2,
                "failures": 2,
                "slow_calls": 0,
                "failure_rate": 1.0,
                "failure_rate_threshold": 0.5,
                "minimum_calls": 2,
                "consecutive_failures": 2,
                "trips": 1,
                "open_for_ms": 30_000,
                "retry_at": "2026-01-01T00:00:30Z",
            },
        })
    );
    assert_eq!(
        lines[4],
        json!({
            "kind": "cache.miss",
            "layer_from": "memory",
            "layer_to": "disk",
            "data": {"key": "user:42"},
        })
    );

    // And each line parses back into the event's type.
    let kinds: Vec<EventKind> = text
        .lines()
        .map(|line| serde_json::from_str::<Event>(line).unwrap().kind)
        .collect();
    assert_eq!(kinds[0], TaskEventKind::Created);
    assert_eq!(kinds[1], TaskEventKind::Unreadable);
    assert_eq!(kinds[2], BreakerEventKind::Created);
    assert_eq!(kinds[3], BreakerEventKind::Opened);
    assert_eq!(kinds[4], EventKind::from("cache.miss"));
}

/// A `task.unreadable` event carries its entry whole: `Skipped::from_event`
/// reads back what `Skipped::to_event` wrote (the command prints the
/// entries a handle reports from these events), and any other event is
/// none.
#[test]
fn an_unreadable_event_reads_back_as_its_entry() {
    use taskstore::UnreadableAction;
    use taskstore::backend::Skipped;
    let entries = [
        Skipped::new(
            None,
            "/s/active/x.txt",
            "not a task file name",
            UnreadableAction::LeftInPlace,
        ),
        Skipped::new(
            Some(taskstore::TaskId::parse("t-1").unwrap()),
            "/s/active/t-1.json",
            "corrupt task file",
            UnreadableAction::SetAside,
        )
        .moved_to("/s/quarantine/active.1.2.3.t-1.json"),
    ];
    for entry in entries {
        assert_eq!(Skipped::from_event(&entry.to_event()), Some(entry));
    }
    assert_eq!(Skipped::from_event(&taskstore::Event::new("other")), None);
}

/// A `task.expired` event carries when its task expired (`expiredAt`:
/// `createdAt` plus `ttlMs`) beside the fields of every task event, and
/// `Event::expired_at` reads it back: the command prints it for each task
/// a sweep deletes, as its dry run does from the task. (The event carried
/// `taskId`, `status` and `revision` alone.)
#[test]
fn an_expired_event_carries_when_its_task_expired() {
    let (_dir, path, _sink, clock, store) = store_writing_events();
    let task = store
        .create(
            NewTask::new()
                .id(TaskId::parse("t-1").unwrap())
                .ttl(std::time::Duration::from_secs(60)),
        )
        .unwrap();
    clock.advance(std::time::Duration::from_secs(61));
    assert_eq!(store.sweep().unwrap().deleted, 1);

    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<Value> = text.lines().map(event_part).collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(
        lines[0],
        json!({
            "kind": "task.created",
            "layer_to": "working",
            "data": {"taskId": "t-1", "status": "working", "revision": 1},
        })
    );
    assert_eq!(
        lines[1],
        json!({
            "kind": "task.expired",
            "layer_to": "working",
            "data": {
                "taskId": "t-1",
                "status": "working",
                "revision": 1,
                "expiredAt": "2026-01-01T00:01:00Z",
            },
        })
    );
    let events: Vec<Event> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(events[1].kind, TaskEventKind::Expired);
    assert_eq!(events[1].expired_at(), task.expires_at());
    assert_eq!(events[0].expired_at(), None);
}
