//! The shipped sinks, and what happens when a sink misbehaves.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use taskstore::{
    BreakerConfig, BreakerRegistry, BreakerState, CallOutcome, Error, Event, EventLog, EventSink,
    FanOut, JsonLinesSink, ManualClock, MemoryStore, NewTask, TaskEventKind, TaskStore,
    TracingSink, UnreadableAction, emit_contained,
};

struct Panicking;

impl EventSink for Panicking {
    fn emit(&self, _: &Event) {
        panic!("this sink always panics (expected in this test)");
    }

    fn breaker_call(&self, _: &str, _: CallOutcome) {
        panic!("this sink always panics (expected in this test)");
    }
}

#[derive(Default)]
struct Counting {
    events: AtomicUsize,
    calls: AtomicUsize,
}

impl EventSink for Counting {
    fn emit(&self, _: &Event) {
        self.events.fetch_add(1, Ordering::Relaxed);
    }

    fn breaker_call(&self, _: &str, _: CallOutcome) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
}

/// A sink of a fan-out that panics is contained, counted by the fan-out
/// (the store or registry above it sees no panic), and logged as a warning
/// naming the sink's place, as the store logs its own sink's: at the first
/// panic, then at most once a minute by the fan-out's clock, with the
/// panics counted so far and since the warning before. (Nothing was
/// logged at first: a sink that panicked at every event looked healthy;
/// then every panic was a warning.)
#[test]
fn a_panicking_sink_in_a_fan_out_is_contained_and_counted() {
    let clock = ManualClock::new(time::macros::datetime!(2026-01-01 00:00:00 UTC));
    let log = Arc::new(EventLog::new());
    let sink = FanOut::new()
        .with_clock(Arc::new(clock.clone()))
        .with_shared(log.clone())
        .with(Panicking)
        .with(TracingSink::new());
    let logged = common::Logged::default();
    tracing::subscriber::with_default(logged.clone(), || {
        for _ in 0..50 {
            sink.emit(&Event::new("one"));
        }
        clock.advance(std::time::Duration::from_secs(60));
        sink.emit(&Event::new("two"));
    });
    let warnings: Vec<[String; 3]> = logged
        .warnings()
        .iter()
        .map(|w| {
            ["sink", "panics", "since_last_warning"].map(|f| w.field(f).unwrap_or("-").to_owned())
        })
        .collect();
    assert_eq!(
        warnings,
        [["1", "1", "-"], ["1", "51", "50"]].map(|w| w.map(str::to_owned))
    );
    assert_eq!(sink.panics(), 51);
    assert_eq!(
        log.len(),
        51,
        "the sinks after the panicking one still got every event"
    );
    sink.breaker_call("db", CallOutcome::Success);
    assert_eq!(sink.panics(), 52);
    assert!(
        emit_contained(&sink, &Event::new("x")),
        "the fan-out itself never panics"
    );
    assert_eq!(sink.panics(), 53);
}

#[test]
fn a_panicking_sink_never_breaks_a_breaker() {
    let registry = BreakerRegistry::new(BreakerConfig::default().minimum_calls(1))
        .unwrap()
        .with_sink(Arc::new(Panicking));
    let breaker = registry.breaker("db").unwrap(); // its making
    breaker.try_acquire().unwrap().failure(); // one verdict, one transition
    assert_eq!(breaker.state(), BreakerState::Open);
    assert!(breaker.try_acquire().is_err()); // one rejection
    assert_eq!(registry.sink_panics(), 4);
    assert_eq!(registry.snapshot().sink_panics, 4);
}

/// The warnings a store's or registry's sink panics were said in: for
/// each, the panics counted so far and since the warning before (`-`
/// where a warning has no such field).
fn sink_panic_warnings(logged: &common::Logged) -> Vec<(String, String)> {
    let warnings = logged.warnings_of("event sink");
    assert!(warnings.len() <= 3, "{} warnings", warnings.len());
    warnings
        .iter()
        .map(|w| {
            let field = |name| w.field(name).unwrap_or("-").to_owned();
            (field("panics"), field("since_last_warning"))
        })
        .collect()
}

/// A sink that panics at every event is said at its first panic, then at
/// most once a minute by the store's (or registry's) clock, each warning
/// with the panics counted so far and since the warning before: the log
/// is not flooded, and no panic goes uncounted. (Every panic was a
/// warning: a store telling such a sink of 100 creates logged 100.)
#[test]
fn a_sink_panicking_at_every_event_is_said_at_most_once_a_minute_with_the_count() {
    let start = time::macros::datetime!(2026-01-01 00:00:00 UTC);
    let minute = std::time::Duration::from_secs(60);
    let clock = ManualClock::new(start);
    let store = MemoryStore::builder()
        .sink(Arc::new(Panicking))
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    let logged = common::Logged::default();
    tracing::subscriber::with_default(logged.clone(), || {
        for _ in 0..100 {
            store.create(NewTask::new()).unwrap();
        }
        clock.advance(minute - std::time::Duration::from_millis(1));
        store.create(NewTask::new()).unwrap(); // 101: within the minute
        clock.advance(std::time::Duration::from_millis(1));
        store.create(NewTask::new()).unwrap(); // 102: a minute after the first
        store.create(NewTask::new()).unwrap();
    });
    assert_eq!(store.sink_panics(), 103);
    assert_eq!(
        sink_panic_warnings(&logged),
        [("1", "-"), ("102", "101")].map(|(a, b)| (a.to_owned(), b.to_owned()))
    );

    // A registry, by its clock, for transitions and call verdicts alike.
    let clock = ManualClock::new(start);
    let registry = BreakerRegistry::new(BreakerConfig::default())
        .unwrap()
        .with_clock(Arc::new(clock.clone()))
        .with_sink(Arc::new(Panicking));
    let logged = common::Logged::default();
    tracing::subscriber::with_default(logged.clone(), || {
        let breaker = registry.breaker("db").unwrap(); // its making: 1
        for _ in 0..1_000 {
            breaker.try_acquire().unwrap().success();
        }
        clock.advance(minute);
        breaker.try_acquire().unwrap().success();
        // A clock stepped back by more than the minute says the next at once.
        clock.set(start - minute);
        breaker.try_acquire().unwrap().success();
    });
    assert_eq!(registry.sink_panics(), 1_003);
    assert_eq!(
        sink_panic_warnings(&logged),
        [("1", "-"), ("1002", "1001"), ("1003", "1")].map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
}

/// A panic whose payload panics again when dropped (`panic_any` of such a
/// value). The payload was dropped outside the containment, so its drop
/// unwound into the caller: a store's create panicked after writing its
/// task, the caller never learning its id.
struct Bomb;

impl Drop for Bomb {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("this payload panics when dropped (expected in this test)");
        }
    }
}

struct PanicsWithABomb;

impl EventSink for PanicsWithABomb {
    fn emit(&self, _: &Event) {
        std::panic::panic_any(Bomb);
    }

    fn breaker_call(&self, _: &str, _: CallOutcome) {
        std::panic::panic_any(Bomb);
    }
}

#[test]
fn a_sink_whose_panic_panics_again_when_dropped_is_contained_too() {
    let caught = |what: &str, call: &dyn Fn()| {
        let escaped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)).is_err();
        assert!(!escaped, "the sink's panic escaped {what}");
    };
    caught("emit_contained", &|| {
        assert!(!emit_contained(&PanicsWithABomb, &Event::new("x")));
    });
    let fan_out = FanOut::new().with(PanicsWithABomb);
    caught("a fan-out", &|| fan_out.emit(&Event::new("x")));
    assert_eq!(fan_out.panics(), 1);
    let store = MemoryStore::builder()
        .sink(Arc::new(PanicsWithABomb))
        .build()
        .unwrap();
    caught("a store's create", &|| {
        store.create(NewTask::new()).unwrap();
    });
    let registry = BreakerRegistry::new(BreakerConfig::default())
        .unwrap()
        .with_sink(Arc::new(PanicsWithABomb));
    let made = std::cell::RefCell::new(None);
    caught("a breaker's making", &|| {
        *made.borrow_mut() = Some(registry.breaker("db").unwrap());
    });
    let breaker = made.into_inner().unwrap();
    caught("a breaker's call", &|| {
        breaker.try_acquire().unwrap().success();
    });
    assert_eq!(registry.sink_panics(), 2);
}

#[test]
fn a_breaker_reports_every_verdict_and_rejection_to_its_sink() {
    let sink = Arc::new(Counting::default());
    let registry = BreakerRegistry::new(BreakerConfig::default().minimum_calls(3))
        .unwrap()
        .with_sink(sink.clone());
    let breaker = registry.breaker("db").unwrap();
    breaker.try_acquire().unwrap().success();
    breaker.try_acquire().unwrap().failure();
    breaker.try_acquire().unwrap().failure();
    let _ = breaker.try_acquire();
    assert_eq!(sink.calls.load(Ordering::Relaxed), 4);
    assert_eq!(
        sink.events.load(Ordering::Relaxed),
        2,
        "made closed, closed -> open"
    );
}

#[test]
fn task_events_carry_the_task_id_status_and_revision() {
    let store = MemoryStore::new();
    let task = store.create(NewTask::new()).unwrap();
    for &kind in TaskEventKind::all() {
        let event = Event::task(kind, &task);
        assert_eq!(event.kind, kind);
        assert_eq!(event.data["taskId"], task.id.as_str());
        assert_eq!(event.data["status"], "working");
        assert_eq!(event.data["revision"], 1);
    }
}

#[test]
fn an_unreadable_task_event_says_where_why_and_what_was_done() {
    let aside = Event::unreadable(
        "/store/active/x.json",
        "truncated",
        UnreadableAction::SetAside,
    );
    assert_eq!(aside.kind, TaskEventKind::Unreadable);
    assert_eq!(
        aside.data,
        serde_json::json!({
            "location": "/store/active/x.json",
            "reason": "truncated",
            "action": "setAside",
        })
    );
    let left = Event::unreadable("tasks/42", "i/o error", UnreadableAction::LeftInPlace);
    assert_eq!(left.data["action"], "leftInPlace");
}

#[test]
fn the_json_lines_sink_refuses_an_unopenable_path_with_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    match JsonLinesSink::open(dir.path()) {
        Err(Error::Io { op, path, .. }) => {
            assert_eq!(op, "open for appending");
            assert_eq!(path, dir.path());
        }
        other => panic!("expected Error::Io, got {other:?}"),
    }
}

#[cfg(target_os = "linux")]
/// A failing write is counted, not raised, and says why once: a warning
/// naming the file and the error when writes start failing, none for each
/// failure after it. (Nothing said why: only the count moved.)
#[test]
fn a_failing_write_is_counted_not_raised() {
    let logged = common::Logged::default();
    tracing::subscriber::with_default(logged.clone(), || {
        // Every write to /dev/full fails with ENOSPC.
        let sink = JsonLinesSink::open("/dev/full").unwrap();
        sink.emit(&Event::new("lost"));
        sink.emit(&Event::new("lost"));
        assert_eq!((sink.written(), sink.errors()), (0, 2));
    });
    let warnings = logged.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let said = format!("{:?}", warnings[0]);
    assert!(
        said.contains("/dev/full") && said.contains("No space left"),
        "{said}"
    );
}

/// A line cut short (the file-size limit, a disk that filled) leaves a
/// fragment in the file; the next line, once there is room, starts on a
/// line of its own, whole, and the lines after it as usual (no blank line
/// between): only the lost event is lost. (It was appended
/// to the fragment, and both read as one broken line.) So too when the
/// sink opens the same file again in between (`reopen` with nothing
/// rotated: the fragment is still the file's; it was forgotten). The child
/// sets its own file-size limit so that only the fragment fits.
#[cfg(target_os = "linux")]
#[test]
fn a_line_cut_short_leaves_the_next_line_whole() {
    let test = "a_line_cut_short_leaves_the_next_line_whole";
    if let Some((_, args)) = common::role() {
        let path = std::path::PathBuf::from(&args[0]);
        let sink = JsonLinesSink::open(&path).unwrap();
        sink.emit(&Event::new("first"));
        let len = std::fs::metadata(&path).unwrap().len();
        limit_file_size(len + 40);
        sink.emit(&Event::new("cut").field("pad", "x".repeat(200)));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), len + 40);
        limit_file_size(libc::RLIM_INFINITY);
        if args[1] == "reopen" {
            sink.reopen().unwrap();
        }
        sink.emit(&Event::new("next"));
        // The fragment is ended once: the lines after it start as usual.
        sink.emit(&Event::new("after"));
        assert_eq!((sink.written(), sink.errors()), (3, 1));
        return;
    }
    for how in ["plain", "reopen"] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        let args = [path.display().to_string(), how.to_owned()];
        common::spawn(dir.path(), test, "writer", &args).finish();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{how}: {text}");
        let kind =
            |line: &str| serde_json::from_str::<serde_json::Value>(line).map(|v| v["kind"].clone());
        assert_eq!(kind(lines[0]).unwrap(), "first");
        assert!(kind(lines[1]).is_err(), "the fragment: {}", lines[1]);
        assert_eq!(kind(lines[2]).unwrap(), "next", "{how}: {text}");
        assert_eq!(kind(lines[3]).unwrap(), "after", "{how}: {text}");
    }
}

/// Sets this process's file-size limit (soft) to `soft` bytes: past it a
/// write fails with `EFBIG` instead of killing the process; below it, one
/// that crosses it is cut short there. For a child process alone: the
/// limit is the whole process's.
#[cfg(target_os = "linux")]
fn limit_file_size(soft: u64) {
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut current) },
        0
    );
    current.rlim_cur = soft;
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &current) }, 0);
}

/// Writes to a regular file that fail (here at the file-size limit,
/// `EFBIG`, as a full disk fails them with `ENOSPC`) are counted in
/// `errors`, and said as lines dropped for want of room in a pipe are: a
/// warning naming the file and the error at the first, then at most once
/// a minute by the sink's clock while they go on, with the count so far
/// and since the warning before; a write that goes through in between
/// does not make the next failure a warning of its own. Every event given
/// the sink is in exactly one of `written`, `dropped` and `errors`. (The
/// warning had no count, and came again at the first failure after each
/// success: a file failing every other write said every other line.) The
/// child sets its own file-size limit.
#[cfg(target_os = "linux")]
#[test]
fn failing_writes_to_a_file_are_said_at_most_once_a_minute_with_the_count() {
    let test = "failing_writes_to_a_file_are_said_at_most_once_a_minute_with_the_count";
    let Some((_, args)) = common::role() else {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        let args = [path.display().to_string()];
        common::spawn(dir.path(), test, "writer", &args).finish();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3, "the lines written: {text}");
        return;
    };
    let path = std::path::PathBuf::from(&args[0]);
    let start = time::macros::datetime!(2026-01-01 00:00:00 UTC);
    let clock = ManualClock::new(start);
    let sink = JsonLinesSink::open(&path)
        .unwrap()
        .with_clock(Arc::new(clock.clone()));
    let logged = common::Logged::default();
    let mut given = 0;
    let mut emit = || {
        sink.emit(&Event::new("line"));
        given += 1;
    };
    tracing::subscriber::with_default(logged.clone(), || {
        emit();
        let full = std::fs::metadata(&path).unwrap().len();
        limit_file_size(full);
        for _ in 0..100 {
            emit();
        }
        clock.advance(std::time::Duration::from_secs(59));
        emit(); // 101: within the minute
        limit_file_size(libc::RLIM_INFINITY);
        emit(); // through
        limit_file_size(std::fs::metadata(&path).unwrap().len());
        emit(); // 102: failing again, within the minute
        clock.advance(std::time::Duration::from_secs(1));
        emit(); // 103: a minute after the first
        limit_file_size(libc::RLIM_INFINITY);
        emit(); // through
    });
    assert_eq!((sink.written(), sink.dropped(), sink.errors()), (3, 0, 103));
    assert_eq!(sink.written() + sink.dropped() + sink.errors(), given);
    let said: Vec<[String; 3]> = logged
        .warnings()
        .iter()
        .map(|w| {
            ["errors", "since_last_warning", "error"].map(|f| w.field(f).unwrap_or("-").to_owned())
        })
        .collect();
    assert_eq!(said.len(), 2, "{:?}", logged.warnings());
    assert_eq!([&said[0][0], &said[0][1]], ["1", "-"], "{said:?}");
    assert_eq!([&said[1][0], &said[1][1]], ["103", "102"], "{said:?}");
    for warning in logged.warnings() {
        let text = format!("{warning:?}");
        assert!(
            text.contains(&args[0]) && text.contains("too large"),
            "{text}"
        );
    }
}

/// A sink opened at a relative path keeps writing to that file after the
/// process changes its working directory (as daemons do), and a process
/// forked from its owner writes its own pid on its lines. (After a
/// `chdir`, the sink's look at its path found no file there and made a new
/// one in the new directory; a forked child's lines carried its parent's
/// pid.) The child process does both: the test binary must not change its
/// own working directory, nor fork with other tests' threads running.
#[cfg(target_os = "linux")]
#[test]
fn a_sink_keeps_its_file_across_a_chdir_and_a_fork_writes_its_own_pid() {
    let test = "a_sink_keeps_its_file_across_a_chdir_and_a_fork_writes_its_own_pid";
    if let Some((_, args)) = common::role() {
        std::env::set_current_dir(&args[0]).unwrap();
        let sink = JsonLinesSink::open("events.jsonl")
            .unwrap()
            .check_path_every(std::time::Duration::ZERO);
        sink.emit(&Event::new("before"));
        std::env::set_current_dir(&args[1]).unwrap();
        sink.emit(&Event::new("after"));
        let child = common::fork(|| {
            sink.emit(&Event::new("forked").field("real_pid", std::process::id()));
            sink.errors() == 0
        });
        child.finish();
        assert_eq!(sink.errors(), 0);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (home, elsewhere) = (dir.path().join("home"), dir.path().join("elsewhere"));
    std::fs::create_dir(&home).unwrap();
    std::fs::create_dir(&elsewhere).unwrap();
    let args = [home.display().to_string(), elsewhere.display().to_string()];
    common::spawn(dir.path(), test, "writer", &args).finish();
    let path = home.join("events.jsonl");
    assert_eq!(common::kinds_in(&path), ["before", "after", "forked"]);
    assert!(!elsewhere.join("events.jsonl").exists());
    let text = std::fs::read_to_string(&path).unwrap();
    let forked: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(forked["pid"], forked["data"]["real_pid"], "{forked}");
}

#[test]
fn the_json_lines_sink_appends_after_existing_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.jsonl");
    std::fs::write(&path, "{\"kind\":\"old\"}\n").unwrap();
    let sink = JsonLinesSink::open(&path).unwrap();
    sink.emit(&Event::new("new").from_layer("a").to_layer("b"));
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["kind"], "new");
    assert_eq!(lines[1]["layer_from"], "a");
    assert_eq!(lines[1]["pid"], std::process::id());
    assert!(lines[1]["at"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn the_json_lines_sink_follows_its_path_through_a_rotation() {
    // logrotate's default: the file is renamed, and a new one is made (or
    // not) at the path. A sink that kept writing to the renamed file would
    // fill it until the process restarted, and the path would stay empty.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let rotated = dir.path().join("events.jsonl.1");
    let sink = JsonLinesSink::open(&path)
        .unwrap()
        .check_path_every(std::time::Duration::ZERO);
    sink.emit(&Event::new("before"));
    std::fs::rename(&path, &rotated).unwrap();
    sink.emit(&Event::new("after-rename"));
    // A rotation that makes the new file itself: the sink appends to it.
    std::fs::rename(&path, dir.path().join("events.jsonl.2")).unwrap();
    std::fs::write(&path, "{\"kind\":\"made-by-the-rotation\"}\n").unwrap();
    sink.emit(&Event::new("after-create"));
    assert_eq!(common::kinds_in(&rotated), ["before"]);
    assert_eq!(
        common::kinds_in(&dir.path().join("events.jsonl.2")),
        ["after-rename"]
    );
    assert_eq!(
        common::kinds_in(&path),
        ["made-by-the-rotation", "after-create"]
    );
    assert_eq!((sink.written(), sink.errors()), (3, 0));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("events.jsonl.2"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "a file the sink makes again is its own"
        );
    }
}

/// A rotation whose new path the sink cannot open (here a directory made
/// there; a file the sink may not write, for a process that is not
/// root): lines go on to the file it has, as the docs say, and the
/// operator is told once, with the path and why, then once more when the
/// path opens again. (Nothing was said: the path stayed empty while the
/// sink counted every line as written.)
#[test]
fn a_rotation_whose_path_cannot_be_opened_is_said_once_and_its_end_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let rotated = dir.path().join("events.jsonl.1");
    let sink = JsonLinesSink::open(&path)
        .unwrap()
        .check_path_every(std::time::Duration::ZERO);
    std::fs::rename(&path, &rotated).unwrap();
    std::fs::create_dir(&path).unwrap();
    let logged = common::Logged::default();
    tracing::subscriber::with_default(logged.clone(), || {
        for kind in ["kept-0", "kept-1", "kept-2"] {
            sink.emit(&Event::new(kind));
        }
    });
    assert_eq!(common::kinds_in(&rotated), ["kept-0", "kept-1", "kept-2"]);
    let warnings = logged.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let said = format!("{:?}", warnings[0]);
    assert!(said.contains("events.jsonl"), "{said}");
    std::fs::remove_dir(&path).unwrap();
    let logged = common::Logged::default();
    tracing::subscriber::with_default(logged.clone(), || {
        sink.emit(&Event::new("moved"));
    });
    assert_eq!(common::kinds_in(&path), ["moved"]);
    let infos: Vec<_> = logged
        .events()
        .into_iter()
        .filter(|e| e.level == tracing::Level::INFO)
        .collect();
    assert_eq!(infos.len(), 1, "{infos:?}");
    // Failing again after the host's own `reopen` put it right is said
    // again too.
    let second = dir.path().join("events.jsonl.2");
    std::fs::rename(&path, &rotated).unwrap();
    std::fs::create_dir(&path).unwrap();
    let logged = common::Logged::default();
    tracing::subscriber::with_default(logged.clone(), || {
        sink.emit(&Event::new("kept-3"));
        std::fs::remove_dir(&path).unwrap();
        sink.reopen().unwrap();
        sink.emit(&Event::new("moved-again"));
        std::fs::rename(&path, &second).unwrap();
        std::fs::create_dir(&path).unwrap();
        sink.emit(&Event::new("kept-4"));
    });
    assert_eq!(common::kinds_in(&second), ["moved-again", "kept-4"]);
    assert_eq!(logged.warnings().len(), 2, "{:?}", logged.events());
}

#[test]
fn between_checks_the_sink_keeps_its_file_and_reopen_moves_it_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let rotated = dir.path().join("events.jsonl.1");
    // Checks an hour apart: the first was made when it opened.
    let sink = JsonLinesSink::open(&path)
        .unwrap()
        .check_path_every(std::time::Duration::from_secs(3600));
    std::fs::rename(&path, &rotated).unwrap();
    sink.emit(&Event::new("kept"));
    assert_eq!(common::kinds_in(&rotated), ["kept"], "no check was due");
    assert!(!path.exists());
    // A host that rotates on a signal says so.
    sink.reopen().unwrap();
    sink.emit(&Event::new("moved"));
    assert_eq!(common::kinds_in(&path), ["moved"]);
    assert_eq!(common::kinds_in(&rotated), ["kept"]);
    // A file removed between checks takes the lines written to it until
    // the next check with it, counted as written all the same (the docs
    // say so; logrotate's `delaycompress` keeps a rotated file a cycle).
    std::fs::remove_file(&rotated).unwrap();
    std::fs::remove_file(&path).unwrap();
    sink.emit(&Event::new("lost"));
    assert!(
        !path.exists(),
        "no check was due: written to the removed file"
    );
    assert_eq!((sink.written(), sink.errors()), (3, 0));
    sink.reopen().unwrap();
    sink.emit(&Event::new("after"));
    assert_eq!(common::kinds_in(&path), ["after"]);
    // A path that can no longer be opened is an error naming it, and the
    // sink goes on with the file it has.
    let blocked = dir.path().join("blocked");
    std::fs::create_dir(&blocked).unwrap();
    let inside = blocked.join("events.jsonl");
    let sink = JsonLinesSink::open(&inside).unwrap();
    std::fs::remove_file(&inside).unwrap();
    std::fs::create_dir(&inside).unwrap();
    match sink.reopen() {
        Err(Error::Io { path, .. }) => assert_eq!(path, inside),
        other => panic!("expected an I/O error naming the path, got {other:?}"),
    }
    sink.emit(&Event::new("still-written"));
    assert_eq!((sink.written(), sink.errors()), (1, 0));
}

#[test]
fn the_tracing_sink_tells_host_events_from_ours_by_type() {
    let logged = common::Logged::default();
    let registry = BreakerRegistry::new(BreakerConfig::default().minimum_calls(1))
        .unwrap()
        .with_sink(Arc::new(TracingSink::new()));
    let breaker = registry.breaker("db").unwrap();
    tracing::subscriber::with_default(logged.clone(), || {
        let sink = TracingSink::new();
        // Named like ours, with the layers of an opening breaker: a host's.
        sink.emit(&Event::new("task.foo").to_layer("open"));
        sink.emit(
            &Event::new("breaker.foo")
                .from_layer("closed")
                .to_layer("open"),
        );
        breaker.try_acquire().unwrap().failure(); // opens: ours
        breaker.force_open();
        breaker.reset();
    });
    let seen: Vec<_> = logged
        .events()
        .iter()
        .filter_map(|e| Some((e.level, e.field("kind")?.to_owned())))
        .collect();
    use tracing::Level;
    assert_eq!(
        seen,
        [
            (Level::INFO, "task.foo".to_owned()),
            (Level::INFO, "breaker.foo".to_owned()),
            (Level::WARN, "breaker.opened".to_owned()),
            (Level::WARN, "breaker.forced_open".to_owned()),
            (Level::INFO, "breaker.reset".to_owned()),
        ]
    );
}

/// What `common::Logged` keeps does not depend on what other threads met
/// first: a warning this thread logs under its capture is kept even when
/// another thread, with no subscriber of its own, met the same call site
/// before (as another test of the binary does when it reaches a warning
/// first). `tracing` caches a call site's interest when it is first met;
/// while at most one subscriber is alive it asks only the meeting thread's,
/// which for a thread without one is "never", and the capture then kept
/// nothing (`faults::a_task_a_reap_could_not_handle_is_said_with_its_id`
/// once captured no warning so).
#[test]
fn a_capture_keeps_a_warning_another_thread_met_first() {
    fn warn(n: u32) {
        tracing::warn!(n, "met on a thread");
    }
    let logged = common::Logged::default();
    let (installed, on_installed) = std::sync::mpsc::channel();
    let (met, on_met) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(move || {
            on_installed.recv().unwrap();
            warn(0);
            met.send(()).unwrap();
        });
        tracing::subscriber::with_default(logged.clone(), || {
            installed.send(()).unwrap();
            on_met.recv().unwrap();
            warn(1);
        });
    });
    let kept: Vec<_> = logged
        .warnings_of("met on a thread")
        .iter()
        .map(|e| e.field("n").map(str::to_owned))
        .collect();
    assert_eq!(kept, [Some("1".to_owned())]);
}
