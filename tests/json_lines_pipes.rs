//! The JSON-lines sink writing to a pipe or a FIFO: whole lines, and never
//! a caller held up by a reader that stopped reading.

mod common;

use std::io::{BufRead, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::time::Duration;

use taskstore::{
    Error, Event, EventSink, JsonLinesSink, ManualClock, MemoryStore, NewTask, TaskStore,
};

/// Runs `call` on a thread of its own and gives its result, or `None` if it
/// has not returned after [`common::HANG`]: a call blocked for good (an
/// `open` of a FIFO that no process reads blocks until one does).
fn unless_blocked<T: Send + 'static>(call: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || drop(tx.send(call())));
    rx.recv_timeout(common::HANG).ok()
}

/// A FIFO that no process reads, at the sink's path, is refused with an
/// error naming the path: by `open`, by `reopen`, and by a write's look at
/// the path after a rotation (which goes on with the file it has). None
/// blocks its caller; an `open` of such a FIFO for writing waited for a
/// reader, for ever, in the middle of whatever emitted the event.
#[test]
fn a_fifo_nobody_reads_at_the_sinks_path_blocks_no_caller() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = fifo_in(dir.path());
    let opened = unless_blocked({
        let fifo = fifo.clone();
        move || JsonLinesSink::open(&fifo).map(drop)
    })
    .expect("open returned");
    match opened {
        Err(Error::Io { path, .. }) => assert_eq!(path, fifo),
        other => panic!("expected an I/O error naming the FIFO, got {other:?}"),
    }
    let path = dir.path().join("events.jsonl");
    let sink = Arc::new(
        JsonLinesSink::open(&path)
            .unwrap()
            .check_path_every(std::time::Duration::ZERO),
    );
    let rotated = dir.path().join("events.jsonl.1");
    std::fs::rename(&path, &rotated).unwrap();
    std::fs::rename(&fifo, &path).unwrap();
    let reopened = unless_blocked({
        let sink = Arc::clone(&sink);
        move || sink.reopen()
    })
    .expect("reopen returned");
    assert!(matches!(reopened, Err(Error::Io { .. })), "{reopened:?}");
    let emitted = unless_blocked({
        let sink = Arc::clone(&sink);
        move || sink.emit(&Event::new("kept"))
    });
    assert!(emitted.is_some(), "a write's look at the path blocked");
    assert_eq!(common::kinds_in(&rotated), ["kept"], "the file it had");
}

/// A FIFO that a process reads gets every line, whole, however far the
/// writer runs ahead of the reader: a line that finds the pipe full waits
/// for room while the reader keeps up (at most the sink's `pipe_wait`,
/// set long here so that a slow machine drops nothing; see
/// [`a_fifo_whose_reader_stopped_holds_up_no_store_call`] for a reader
/// that stops). (Written without waiting, 145 lines of 5,000 were
/// dropped.)
#[test]
fn a_fifo_a_process_reads_gets_every_line() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = fifo_in(dir.path());
    let reader = std::thread::spawn({
        let fifo = fifo.clone();
        move || {
            let lines = std::io::BufReader::new(std::fs::File::open(&fifo).unwrap());
            lines.lines().map(Result::unwrap).collect::<Vec<String>>()
        }
    });
    // Until the reader has it open, an open for writing finds none.
    let sink = loop {
        match JsonLinesSink::open(&fifo) {
            Ok(sink) => break sink.pipe_wait(common::HANG),
            Err(_) => std::thread::yield_now(),
        }
    };
    // Far more than a pipe holds (64 KiB).
    let lines = 5_000;
    for i in 0..lines {
        sink.emit(
            &Event::new("line")
                .field("i", i)
                .field("pad", "x".repeat(100)),
        );
    }
    assert_eq!(
        (sink.written(), sink.dropped(), sink.errors()),
        (lines, 0, 0),
        "(written, dropped, failed)"
    );
    drop(sink);
    let read = reader.join().unwrap();
    assert_eq!(read.len() as u64, lines);
    assert!(read.iter().all(|line| line.contains("\"pad\"")));
}

/// Threads of one sink writing to a pipe (`/dev/stdout` read by a log
/// collector, a FIFO) never interleave their lines: a pipe takes a write
/// of more than `PIPE_BUF` (4 KiB) in pieces as far as it has room, and
/// lets another writer's pieces in between, so the sink writes one line at
/// a time to anything but a regular file, its pieces waiting for room (its
/// `pipe_wait`, set long here so that a slow machine drops nothing). Every
/// line is read whole, one thread's. (Most of the lines of four threads,
/// each of 200 KB written waiting for room, read back broken, another
/// thread's bytes inside them; written without waiting, lines went in
/// part and were cut short.) Lines of 20 KB, read 512 bytes at a time, so
/// that many find room for part of them.
#[test]
fn threads_writing_long_lines_to_a_fifo_never_interleave() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = fifo_in(dir.path());
    let reader = std::thread::spawn({
        let fifo = fifo.clone();
        move || {
            let mut file = std::fs::File::open(&fifo).unwrap();
            let (mut read, mut buf) = (Vec::new(), [0; 512]);
            loop {
                match file.read(&mut buf).unwrap() {
                    0 => return read,
                    n => read.extend_from_slice(&buf[..n]),
                }
            }
        }
    });
    let sink = Arc::new(loop {
        match JsonLinesSink::open(&fifo) {
            Ok(sink) => break sink.pipe_wait(common::HANG),
            Err(_) => std::thread::yield_now(),
        }
    });
    // Each thread pads with a letter of its own, found nowhere else in a
    // line (keys are lowercase, times have only `T` and `Z`).
    let pads = ['P', 'Q', 'R', 'S'];
    let lines = 50;
    let writers: Vec<_> = pads
        .into_iter()
        .map(|pad| {
            let sink = Arc::clone(&sink);
            std::thread::spawn(move || {
                for i in 0..lines {
                    sink.emit(
                        &Event::new("long")
                            .field("i", i)
                            .field("pad", pad.to_string().repeat(20_000)),
                    );
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    let all = pads.len() as u64 * lines;
    assert_eq!(
        (sink.written(), sink.dropped(), sink.errors()),
        (all, 0, 0),
        "(written, dropped, failed)"
    );
    drop(sink);
    let read = reader.join().unwrap();
    let read = String::from_utf8(read).unwrap();
    for line in read.lines() {
        let threads = pads.iter().filter(|&&pad| line.contains(pad)).count();
        assert!(
            line.starts_with("{\"at\":") && line.matches("{\"at\":").count() == 1 && threads == 1,
            "a line of one thread: {}...",
            &line[..line.len().min(200)]
        );
    }
    let whole = read
        .lines()
        .filter(|line| serde_json::from_str::<serde_json::Value>(line).is_ok())
        .count() as u64;
    assert_eq!(
        (whole, read.lines().count() as u64),
        (all, all),
        "every line read, whole"
    );
}

/// A FIFO (`0600`) in `dir`, named `fifo.jsonl`.
fn fifo_in(dir: &std::path::Path) -> std::path::PathBuf {
    let fifo = dir.join("fifo.jsonl");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
    )
    .unwrap();
    fifo
}

/// A line going to a FIFO whose reader stopped taking lines holds up no
/// line of the sink to the FIFO a rotation put at the path (`reopen`): the
/// threads of a sink take turns at one pipe, not at every pipe it ever
/// wrote to. (The turn was the sink's: once the path was another FIFO,
/// every line waited behind the one stuck in the old, for as long as its
/// reader did not read. No line waits for room now, and this keeps it so
/// for the turns too.)
#[test]
fn a_line_stuck_in_a_rotated_fifo_holds_up_no_line_to_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = fifo_in(dir.path());
    // Read by no one until the end.
    let mut stalled = stalled_reader(&fifo);
    let sink = Arc::new(JsonLinesSink::open(&fifo).unwrap());
    // A line longer than the pipe holds.
    let stuck = std::thread::spawn({
        let sink = Arc::clone(&sink);
        move || sink.emit(&Event::new("long").field("pad", "x".repeat(1 << 20)))
    });
    common::wait_until("the long line's first bytes in the pipe", || {
        rustix::io::ioctl_fionread(&stalled).unwrap() > 0
    });
    // Rotated: another FIFO at the path, read line by line.
    std::fs::remove_file(&fifo).unwrap();
    let fifo = fifo_in(dir.path());
    let (lines, read) = std::sync::mpsc::channel();
    let reader = std::thread::spawn({
        let fifo = fifo.clone();
        move || {
            let file = std::io::BufReader::new(std::fs::File::open(&fifo).unwrap());
            for line in file.lines() {
                if lines.send(line.unwrap()).is_err() {
                    return;
                }
            }
        }
    });
    loop {
        match sink.reopen() {
            Ok(()) => break,
            // Until the reader has it open.
            Err(_) => std::thread::yield_now(),
        }
    }
    let short = std::thread::spawn({
        let sink = Arc::clone(&sink);
        move || sink.emit(&Event::new("short"))
    });
    let line = read.recv_timeout(common::HANG);
    // The stuck line's reader reads at last: it ends.
    let flags = rustix::fs::fcntl_getfl(&stalled).unwrap();
    rustix::fs::fcntl_setfl(&stalled, flags - rustix::fs::OFlags::NONBLOCK).unwrap();
    stalled.read_to_end(&mut Vec::new()).unwrap();
    stuck.join().unwrap();
    short.join().unwrap();
    drop(sink);
    reader.join().unwrap();
    let line = line.expect("the line to the new FIFO, while the old one's reader reads nothing");
    assert!(line.contains("\"short\""), "{line}");
}

/// The read end of `fifo`, opened without waiting for a writer, that reads
/// nothing until the test says: a log collector that stopped reading.
fn stalled_reader(fifo: &std::path::Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(fifo)
        .unwrap()
}

/// Everything in the pipe now, without waiting for more.
fn drain(reader: &mut std::fs::File) -> String {
    let mut read = Vec::new();
    let mut buf = [0; 4096];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => read.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("reading the FIFO: {e}"),
        }
    }
    String::from_utf8(read).unwrap()
}

/// The warnings of dropped lines: for each, the path, the lines dropped so
/// far and since the warning before (`-` where a warning has no such
/// field).
fn dropped_warnings(logged: &common::Logged) -> Vec<[String; 3]> {
    logged
        .warnings_of("event pipe")
        .iter()
        .map(|w| {
            ["path", "dropped", "since_last_warning"]
                .map(|field| w.field(field).unwrap_or("-").to_owned())
        })
        .collect()
}

/// A store whose sink writes to a FIFO whose reader stopped reading goes on
/// creating tasks: events never hold up the store for long. The first line
/// that finds no room in the pipe waits for it the sink's `pipe_wait` (a
/// second) in vain; the lines after it that find none are dropped at once
/// (2,000 lines waiting a second each would outlast the test's bound). The
/// lines dropped are counted ([`JsonLinesSink::dropped`]) and said: a
/// warning naming the path at the first, then at most once a minute by the
/// sink's clock, with the count; the rest reach the reader whole, and once
/// it reads again lines go through again. (Each line waited for room
/// without bound: once the pipe was full, 64 KiB of lines, the store's
/// `create` blocked inside its sink for as long as the reader did not
/// read.)
#[test]
fn a_fifo_whose_reader_stopped_holds_up_no_store_call() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = fifo_in(dir.path());
    let mut reader = stalled_reader(&fifo);
    let clock = ManualClock::new(time::macros::datetime!(2026-01-01 00:00:00 UTC));
    let sink = Arc::new(
        JsonLinesSink::open(&fifo)
            .unwrap()
            .with_clock(Arc::new(clock.clone())),
    );
    let store = Arc::new(MemoryStore::builder().sink(sink.clone()).build().unwrap());
    let logged = common::Logged::default();
    // Far more lines than a pipe holds (64 KiB).
    let creates = 2_000;
    let created = unless_blocked({
        let (store, logged) = (Arc::clone(&store), logged.clone());
        move || {
            tracing::subscriber::with_default(logged, || {
                for _ in 0..creates {
                    store.create(NewTask::new()).unwrap();
                }
            })
        }
    });
    assert!(
        created.is_some(),
        "a store's create blocked behind the FIFO's stalled reader"
    );
    let (written, dropped) = (sink.written(), sink.dropped());
    assert_eq!((written + dropped, sink.errors()), (creates, 0));
    assert!(dropped > 0, "a pipe holds fewer lines than that");
    let path = fifo.display().to_string();
    let said = |dropped: u64, since: &str| [path.clone(), dropped.to_string(), since.to_owned()];
    assert_eq!(
        dropped_warnings(&logged),
        [said(1, "-")],
        "the first, at once"
    );
    // A minute later, the next line dropped is said with the count.
    clock.advance(Duration::from_secs(60));
    tracing::subscriber::with_default(logged.clone(), || {
        store.create(NewTask::new()).unwrap();
    });
    assert_eq!(
        dropped_warnings(&logged),
        [said(1, "-"), said(dropped + 1, &dropped.to_string())]
    );
    let read = drain(&mut reader);
    assert!(
        read.lines()
            .all(|line| serde_json::from_str::<serde_json::Value>(line).is_ok()),
        "whole lines"
    );
    assert_eq!(read.lines().count() as u64, written);
    // The reader reads again: lines go through again.
    store.create(NewTask::new()).unwrap();
    assert_eq!(sink.written(), written + 1);
    assert_eq!(drain(&mut reader).lines().count(), 1);
}
