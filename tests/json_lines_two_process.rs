//! Two processes append to one JSON-lines file: every line is whole.
//!
//! The test binary runs itself as the children (`std::env::current_exe()`),
//! with an environment variable choosing the child's role, as `sled`'s crash
//! tests do.

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
