//! Two processes append to one JSON-lines file: every line is whole; a
//! process killed in the middle of a line costs that line alone.
//!
//! The test binary runs itself as the children (`std::env::current_exe()`),
//! with an environment variable choosing the child's role, as `sled`'s crash
//! tests do.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};

use taskstore::{Event, EventSink, JsonLinesSink};

const PER_PROCESS: u64 = 5_000;
const CHILD_PATH: &str = "TASKSTORE_TEST_JSONL_PATH";
const CHILD_WRITER: &str = "TASKSTORE_TEST_JSONL_WRITER";
const TEST_NAME: &str = "two_processes_append_whole_lines";

/// Every 10th record carries 8 KiB to 24 KiB of payload.
fn payload(i: u64) -> String {
    let len = if i.is_multiple_of(10) {
        8 * 1024 + (i as usize * 37) % (16 * 1024)
    } else {
        16
    };
    "x".repeat(len)
}

fn child(path: &str, writer: &str) {
    let sink = JsonLinesSink::open(path).unwrap();
    for i in 0..PER_PROCESS {
        sink.emit(
            &Event::new("test.append")
                .field("writer", writer)
                .field("i", i)
                .field("payload", payload(i)),
        );
    }
    assert_eq!(sink.errors(), 0);
    assert_eq!(sink.written(), PER_PROCESS);
}

#[test]
fn two_processes_append_whole_lines() {
    if let (Ok(path), Ok(writer)) = (std::env::var(CHILD_PATH), std::env::var(CHILD_WRITER)) {
        return child(&path, &writer);
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|writer| {
            // The child's own harness output ("running 1 test", "test
            // result") stays out of the parent's, so that the lines of a
            // `cargo test` run count the tests once; its stderr is kept to
            // explain a failure.
            Command::new(&exe)
                .args([TEST_NAME, "--exact", "--test-threads=1"])
                .env(CHILD_PATH, &path)
                .env(CHILD_WRITER, writer)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "a writer process failed with {}; its stderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.ends_with('\n'));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len() as u64, 2 * PER_PROCESS);
    let mut seen: HashMap<String, Vec<u64>> = HashMap::new();
    let mut pids = std::collections::HashSet::new();
    let mut long = 0;
    for (n, line) in lines.iter().enumerate() {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("line {n} does not parse: {e}"));
        assert_eq!(value["kind"], "test.append");
        let i = value["data"]["i"].as_u64().unwrap();
        assert_eq!(
            value["data"]["payload"].as_str().unwrap(),
            payload(i),
            "line {n} lost bytes"
        );
        long += usize::from(line.len() > 8 * 1024);
        pids.insert(value["pid"].as_u64().unwrap());
        seen.entry(value["data"]["writer"].as_str().unwrap().to_owned())
            .or_default()
            .push(i);
    }
    assert_eq!(pids.len(), 2, "both processes wrote");
    assert_eq!(
        long as u64,
        2 * PER_PROCESS / 10,
        "the long lines are there, whole"
    );
    for writer in ["a", "b"] {
        assert_eq!(
            seen[writer],
            (0..PER_PROCESS).collect::<Vec<_>>(),
            "writer {writer}'s lines in order"
        );
    }

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

/// A writer killed (`SIGKILL`) in the middle of a line leaves a fragment:
/// the kernel stops an appending write between pages when the process
/// gets a fatal signal, so even one `write(2)` of a whole line ends part
/// way. A sink opened on the file afterwards (the killed process started
/// again, another one) ends the fragment with its first line's first
/// byte: a reader meets one broken line, the killed writer's, and the
/// lines after it whole. (The new sink's first line joined the fragment,
/// and both read as one broken line.) The child writes lines of 64 MiB, so
/// that the kill, sent once the file has grown, lands inside a write;
/// a kill that lands between two writes is tried again.
#[cfg(target_os = "linux")]
#[test]
fn a_line_a_killed_writer_left_cut_short_is_ended_by_the_next_sink() {
    let test = "a_line_a_killed_writer_left_cut_short_is_ended_by_the_next_sink";
    if let Some((_, args)) = common::role() {
        let sink = JsonLinesSink::open(&args[0]).unwrap();
        let event = Event::new("huge").field("payload", "x".repeat(64 << 20));
        loop {
            sink.emit(&event);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let mut tries = 0;
    let cut = loop {
        tries += 1;
        assert!(tries <= 20, "no kill of 20 landed inside a write");
        let _ = std::fs::remove_file(&path);
        let args = [path.display().to_string()];
        let mut writer = vec![common::spawn(dir.path(), test, "writer", &args)];
        common::wait_for(&mut writer, "the writer's first bytes", || {
            std::fs::metadata(&path).is_ok_and(|m| m.len() > 0)
        });
        writer.pop().unwrap().kill();
        let text = std::fs::read(&path).unwrap();
        if text.last() != Some(&b'\n') {
            // Lines the writer ended before the one cut.
            break text.iter().filter(|&&b| b == b'\n').count();
        }
    };
    let sink = JsonLinesSink::open(&path).unwrap();
    sink.emit(&Event::new("after"));
    sink.emit(&Event::new("next"));
    assert_eq!((sink.written(), sink.errors()), (2, 0));
    let text = std::fs::read(&path).unwrap();
    let lines: Vec<&[u8]> = text.split_inclusive(|&b| b == b'\n').collect();
    let kind =
        |line: &[u8]| serde_json::from_slice::<serde_json::Value>(line).map(|v| v["kind"].clone());
    let tail: Vec<String> = lines
        .iter()
        .rev()
        .take(2)
        .map(|line| String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned())
        .collect();
    assert_eq!(
        lines.len(),
        cut + 3,
        "the writer's lines, its fragment and two lines: {tail:?}"
    );
    assert!(
        kind(lines[cut]).is_err(),
        "the fragment reads as one broken line"
    );
    assert_eq!(kind(lines[cut + 1]).unwrap(), "after", "{tail:?}");
    assert_eq!(kind(lines[cut + 2]).unwrap(), "next", "{tail:?}");
}
