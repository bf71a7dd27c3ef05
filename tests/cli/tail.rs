//! `tail`: JSON lines, pipes, files truncated and refilled, `-n`, filters,
//! following, and the memory a line takes.

use super::*;

// ---------------------------------------------------------------------------
// tail

/// `tail --json` prints each event as JSON a parser reads back, also for
/// a line written with a tab between its tokens or a CRLF ending (a file
/// edited by hand, another writer). (Both were escaped as `\u0009` and
/// `\u000d` outside any string: invalid JSON.)
#[test]
fn tail_json_prints_valid_json_whatever_whitespace_a_line_has() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("events.jsonl");
    fs::write(
        &file,
        "{\"at\":\"2026-01-01T00:00:00Z\",\t\"kind\":\"task.created\",\"data\":{\"s\":\"a\\tb\"}}\r\n",
    )
    .unwrap();
    let out = run_expect(None, &["tail", file.to_str().unwrap(), "--json"], 0);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "{}", stdout(&out));
    assert_eq!(lines[0]["kind"], "task.created");
    assert_eq!(lines[0]["data"]["s"], "a\tb", "the value is the same");
}

/// `tail` reads a pipe (`zcat events.jsonl.1.gz | taskstore tail
/// /dev/stdin`), with and without `--follow` (which, at the pipe's end,
/// goes on looking), every event, and a bad line still fails it. (It set the file's offset before every read, which a
/// pipe refuses: "Illegal seek", exit 1, nothing read.)
#[test]
fn tail_reads_a_pipe() {
    use std::io::Write as _;
    let line = |kind: &str| {
        format!("{{\"at\":\"2026-01-01T00:00:00Z\",\"pid\":1,\"kind\":\"{kind}\",\"data\":null}}\n")
    };
    for (follow, bad) in [(false, false), (true, false), (false, true)] {
        let mut command = taskstore(None, &["tail", "/dev/stdin"]);
        if follow {
            command.arg("--follow");
        }
        let mut tail = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = tail.stdin.take().unwrap();
        let first = if follow { 2 } else { 3 };
        let mut text: String = (0..first).map(|n| line(&format!("k{n}"))).collect();
        if bad {
            text.push_str("not an event\n");
        }
        input.write_all(text.as_bytes()).unwrap();
        let out = if follow {
            // Following, it reads lines as they come.
            let mut reader = std::io::BufReader::new(tail.stdout.take().unwrap());
            let mut got = Vec::new();
            let mut read_lines = |n: usize, got: &mut Vec<String>| {
                for _ in 0..n {
                    let mut read = String::new();
                    std::io::BufRead::read_line(&mut reader, &mut read).unwrap();
                    got.push(read);
                }
            };
            read_lines(2, &mut got);
            input.write_all(line("k2").as_bytes()).unwrap();
            read_lines(1, &mut got);
            // At the pipe's end it looks at the path every 200 ms, and
            // follows on: a pipe is neither truncated nor replaced.
            drop(input);
            std::thread::sleep(Duration::from_millis(600));
            assert!(
                tail.try_wait().unwrap().is_none(),
                "tail --follow ended at the pipe's end"
            );
            tail.kill().unwrap();
            tail.wait().unwrap();
            got.concat()
        } else {
            drop(input);
            let out = tail.wait_with_output().unwrap();
            assert_eq!(
                out.status.code(),
                Some(if bad { 1 } else { 0 }),
                "{}",
                stderr(&out)
            );
            stdout(&out)
        };
        let kinds: Vec<&str> = out.lines().map(|l| l.split("  ").nth(2).unwrap()).collect();
        assert_eq!(kinds, ["k0", "k1", "k2"], "follow {follow}: {out}");
    }
}

/// `tail --follow` over a file truncated and written again past where it
/// was reading, between two of its looks (copytruncate, then writers that
/// refill it at once): it reads the new file from its start, every line.
/// (It went on from its old offset, inside the new lines: the first were
/// lost, and a line cut in two was reported as no event.)
#[test]
fn tail_follows_a_file_truncated_and_refilled_between_two_looks() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("events.jsonl");
    let lines = |prefix: &str, n: usize| -> String {
        (0..n)
            .map(|i| {
                format!(
                    "{{\"at\":\"2026-01-0{}T00:00:00.{i:09}Z\",\"pid\":1,\"kind\":\"{prefix}{i}\",\"data\":null}}\n",
                    if prefix == "a" { 1 } else { 2 }
                )
            })
            .collect()
    };
    fs::write(&file, lines("a", 2)).unwrap();
    let mut follower = taskstore(
        None,
        &["tail", "--follow", "--json", file.to_str().unwrap()],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let next_line = following(follower.stdout.take().unwrap());
    let next = || -> String {
        let line: Value = serde_json::from_str(&next_line()).unwrap();
        line["kind"].as_str().unwrap().to_owned()
    };
    assert_eq!([next(), next()], ["a0", "a1"]);
    // Truncated and refilled with more than it held, in one go.
    fs::write(&file, lines("b", 4)).unwrap();
    let got: Vec<String> = (0..4).map(|_| next()).collect();
    follower.kill().unwrap();
    follower.wait().unwrap();
    assert_eq!(got, ["b0", "b1", "b2", "b3"]);
}

/// `tail` reads a file, not a store: its help lists none of the store's
/// options (it listed `--store` and `--upgrade`, which it ignores), the
/// commands that open a store still do, and a store named anyway (a
/// script's shared prefix, `TASKSTORE_STORE` set) is still no error.
#[test]
fn tail_help_lists_only_its_own_options() {
    let help = stdout(&run_expect(None, &["tail", "--help"], 0));
    for option in ["--store", "--upgrade", "--pg", "TASKSTORE_"] {
        assert!(!help.contains(option), "{option}:\n{help}");
    }
    assert!(help.contains("--follow"), "{help}");
    let help = stdout(&run_expect(None, &["list", "--help"], 0));
    assert!(
        help.contains("--store") && help.contains("--upgrade"),
        "{help}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("events.jsonl");
    fs::write(
        &file,
        "{\"at\":\"2026-01-01T00:00:00Z\",\"kind\":\"k\",\"data\":null}\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    for args in [
        &["--store", "x", "tail", file][..],
        &["tail", file, "--store", "x"],
    ] {
        let out = run_expect(Some(tmp.path()), args, 0);
        assert_eq!(stdout(&out).lines().count(), 1, "{args:?}");
    }
}

/// `tail -n N` (`--lines`) shows the last N events of what the file holds,
/// of those its filters keep, like tail(1), then with `--follow` every new
/// one. It reads only as far back as those N: a bad line is reported if it
/// is among what it reads, by its number when it read from the file's
/// start (`tail_n_reads_back_from_the_end_only_as_far_as_its_events` has
/// the rest). (`tail` had no `-n`: a usage error.)
#[test]
fn tail_n_shows_the_last_events_then_follows() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("events.jsonl");
    let text = [
        event("k0"),
        "not an event\n".to_owned(),
        event("k1"),
        event("k2"),
        event("k3"),
    ];
    fs::write(&path, text.concat()).unwrap();
    let file = path.to_str().unwrap();
    let kinds = |out: &Output| -> Vec<String> {
        stdout(out)
            .lines()
            .map(|l| l.split("  ").nth(2).unwrap().to_owned())
            .collect()
    };
    // Whether the bad line, line 2, is among what it reads.
    for (args, shown, bad) in [
        (&["-n", "2"][..], &["k2", "k3"][..], false),
        (&["--lines", "2"], &["k2", "k3"], false),
        (&["-n", "3"], &["k1", "k2", "k3"], false),
        (&["-n", "4"], &["k0", "k1", "k2", "k3"], true),
        (&["-n", "10"], &["k0", "k1", "k2", "k3"], true),
        (&["-n", "1", "--kind", "k1"], &["k1"], false),
        (&["-n", "1", "--kind", "k0"], &["k0"], true),
        (&["-n", "0"], &[], false),
    ] {
        let mut all = vec!["tail", file];
        all.extend_from_slice(args);
        let out = run_expect(None, &all, i32::from(bad));
        assert_eq!(kinds(&out), shown, "{args:?}");
        assert_eq!(
            stderr(&out).contains(&format!("{file}:2: not an event")),
            bad,
            "{args:?}: {}",
            stderr(&out)
        );
    }
    // Following: the last one there, then each new one as it comes.
    follows(file, &path, "k3", "k4");
}

/// A string may hold DEL and the C1 controls as they are (JSON escapes only
/// those under U+0020, and serde_json writes the rest raw, as
/// `JsonLinesSink` does): `tail --json` writes them escaped, the same
/// value, where it wrote each as a space.
#[test]
fn tail_json_keeps_every_control_character_inside_a_string() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("events.jsonl");
    let note = "a\u{7f}b\u{9b}c\u{85}d";
    let line =
        json!({"at": "2026-01-01T00:00:00Z", "kind": "task.created", "data": {"note": note}});
    fs::write(&file, format!("{line}\n")).unwrap();
    assert!(
        fs::read_to_string(&file).unwrap().contains('\u{7f}'),
        "written raw"
    );
    let out = run_expect(None, &["tail", file.to_str().unwrap(), "--json"], 0);
    assert!(
        !stdout(&out).chars().any(|c| c.is_control() && c != '\n'),
        "no control character reaches the terminal: {:?}",
        stdout(&out)
    );
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "{}", stdout(&out));
    assert_eq!(lines[0]["data"]["note"], note, "the value is the same");
}

#[test]
fn tail_reads_filters_and_follows_a_file_through_truncation() {
    let (tmp, dir) = store_dir();
    let events = tmp.path().join("events.jsonl");
    // A writer that does not look at its path (until it reopens), as any
    // writer between its looks.
    let sink = Arc::new(
        JsonLinesSink::open(&events)
            .unwrap()
            .check_path_every(Duration::MAX),
    );
    let store = FileStore::builder(&dir).sink(sink.clone()).open().unwrap();
    let a = store.create(NewTask::new()).unwrap();
    let b = store.create(NewTask::new()).unwrap();
    assert!(store.complete(&a.id, json!(1)).unwrap().is_applied());
    assert!(store.cancel(&b.id, None).unwrap().is_applied());

    let all = stdout(&run_expect(None, &["tail", events.to_str().unwrap()], 0));
    assert_eq!(all.lines().count(), 4, "{all}");
    let completed = stdout(&run_expect(
        None,
        &["tail", events.to_str().unwrap(), "--kind", "task.completed"],
        0,
    ));
    assert_eq!(completed.lines().count(), 1, "{completed}");
    assert!(completed.contains(a.id.as_str()) && completed.contains("task.completed"));
    let about_b = run_expect(
        None,
        &[
            "tail",
            events.to_str().unwrap(),
            "--task",
            b.id.as_str(),
            "--json",
        ],
        0,
    );
    let lines = json_lines(&about_b);
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|l| l["data"]["taskId"] == b.id.as_str()));
    assert_eq!(lines[1]["kind"], "task.cancelled");

    // A line that is not an event is reported with its place, and the rest
    // is still read.
    let damaged = tmp.path().join("damaged.jsonl");
    fs::write(
        &damaged,
        format!("{}not json\n", fs::read_to_string(&events).unwrap()),
    )
    .unwrap();
    let out = run_expect(None, &["tail", damaged.to_str().unwrap()], 1);
    assert_eq!(stdout(&out).lines().count(), 4);
    assert!(
        stderr(&out).contains(&format!("{}:5:", damaged.display())),
        "{}",
        stderr(&out)
    );

    // --follow: new lines as they come, and the file again from its start
    // once it is truncated.
    let mut follower = taskstore(
        None,
        &["tail", "--follow", "--json", events.to_str().unwrap()],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let next = following(follower.stdout.take().unwrap());
    let existing: Vec<String> = (0..4).map(|_| next()).collect();
    assert!(existing[0].contains("task.created"));
    let c = store.create(NewTask::new()).unwrap();
    let line: Value = serde_json::from_str(&next()).unwrap();
    assert_eq!(line["data"]["taskId"], c.id.as_str());
    // Truncated, as log rotation with copytruncate does; the sink appends
    // after the cut.
    fs::OpenOptions::new()
        .write(true)
        .open(&events)
        .unwrap()
        .set_len(0)
        .unwrap();
    let d = store.create(NewTask::new()).unwrap();
    let line: Value = serde_json::from_str(&next()).unwrap();
    assert_eq!(line["data"]["taskId"], d.id.as_str());
    // Rotated by renaming, as logrotate does by default: the sink keeps
    // appending to the old file until it reopens, and a new file starts.
    // Every line of both is printed (those the old file got after the
    // rename were lost).
    fs::rename(&events, events.with_extension("jsonl.1")).unwrap();
    let e = store.create(NewTask::new()).unwrap();
    let first_line = fs::read_to_string(events.with_extension("jsonl.1"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_owned();
    fs::write(&events, format!("{first_line}\n")).unwrap();
    let line: Value = serde_json::from_str(&next()).unwrap();
    assert_eq!(
        line["data"]["taskId"],
        e.id.as_str(),
        "the old file's last line"
    );
    let line: Value = serde_json::from_str(&next()).unwrap();
    assert_eq!(line, serde_json::from_str::<Value>(&first_line).unwrap());
    // The writer goes on appending to the renamed file after the reader
    // moved to the new one: those lines are printed too. (They were lost.)
    let f = store.create(NewTask::new()).unwrap();
    let line: Value = serde_json::from_str(&next()).unwrap();
    assert_eq!(
        line["data"]["taskId"],
        f.id.as_str(),
        "a line the renamed file got after the switch"
    );
    follower.kill().unwrap();
    let out = follower.wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("truncated"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(sink);
}

/// `tail` reads the file a chunk at a time and keeps at most one line, of
/// at most 16 MiB: run with its data segment held to 80 MB, it reads a
/// 150 MB file, and a line over the bound (one of 40 MB in the middle, one
/// of 30 MB never ended at the end) is reported by its number and skipped,
/// with the events after it still printed. (It read the whole file into
/// memory first, and a line that never ended grew without bound.)
#[test]
fn tail_holds_a_line_not_the_file() {
    use std::io::Write as _;
    require_prlimit();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("events.jsonl");
    let mut out = std::io::BufWriter::new(fs::File::create(&file).unwrap());
    let filler = "x".repeat(1_000);
    let mut completed = 0;
    let mut number = 0;
    let mut line = |out: &mut std::io::BufWriter<fs::File>, kind: &str, note: &str| {
        number += 1;
        let event = json!({"at": "2026-01-01T00:00:00Z", "kind": kind, "data": {"n": number, "note": note}});
        writeln!(out, "{event}").unwrap();
        number
    };
    let mut long_line = 0;
    for n in 0..150_000 {
        if n % 1_000 == 0 {
            line(&mut out, "task.completed", "");
            completed += 1;
        } else {
            line(&mut out, "task.created", &filler);
        }
        if n == 75_000 {
            long_line = line(&mut out, "task.created", &"y".repeat(40 << 20));
        }
    }
    write!(
        out,
        "{{\"at\":\"2026-01-01T00:00:00Z\",\"note\":\"{}",
        "z".repeat(30 << 20)
    )
    .unwrap();
    let last_line = number + 1;
    drop(out);
    let run = common::without_store_variables("prlimit")
        .arg("--data=80000000")
        .arg(env!("CARGO_BIN_EXE_taskstore"))
        .args(["tail", "--kind", "task.completed", "--json"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(json_lines(&run).len(), completed, "stderr: {stderr}");
    for number in [long_line, last_line] {
        assert!(
            stderr.contains(&format!(":{number}: a line of "))
                && stderr.contains("over the 16 MiB"),
            "line {number} is reported: {stderr}"
        );
    }
}

/// A line of a `JsonLinesSink` file: an event of `kind`.
fn event(kind: &str) -> String {
    format!("{{\"at\":\"2026-01-01T00:00:00Z\",\"pid\":1,\"kind\":\"{kind}\",\"data\":null}}\n")
}

/// `tail FILE -n 1 --follow` (`path` its file) prints the event of kind
/// `last` there, then the one of kind `next` once it is appended.
fn follows(file: &str, path: &Path, last: &str, next: &str) {
    use std::io::Write as _;
    let mut tail = taskstore(None, &["tail", file, "-n", "1", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let next_line = following(tail.stdout.take().unwrap());
    let kind = || {
        next_line()
            .split("  ")
            .nth(2)
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(kind(), last);
    fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(event(next).as_bytes())
        .unwrap();
    assert_eq!(kind(), next);
    tail.kill().unwrap();
    tail.wait().unwrap();
}

/// `tail -n N` reads the file back from its end, a block at a time, only
/// as far as its last N events: behind them a sparse hole of 4 GiB, which
/// read whole is one line of NULs past the 16 MiB a line may be, is never
/// read (so not reported), and a bad line among what it reads is reported
/// by its byte offset (its line number is not known). With `--follow` it
/// then reads on from the end. (It read every line of the file.)
#[test]
fn tail_n_reads_back_from_the_end_only_as_far_as_its_events() {
    use std::io::Write as _;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("events.jsonl");
    let hole: u64 = (4 << 30) + 3;
    let file = fs::File::create(&path).unwrap();
    file.set_len(hole).unwrap();
    drop(file);
    let tail_lines = [
        event("k0"),
        "not an event\n".to_owned(),
        event("k1"),
        event("k2"),
    ];
    let mut file = fs::OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(b"\n").unwrap();
    file.write_all(tail_lines.concat().as_bytes()).unwrap();
    drop(file);
    let bad_at = hole + 1 + tail_lines[0].len() as u64;
    let name = path.to_str().unwrap();
    let kinds = |out: &Output| -> Vec<String> {
        stdout(out)
            .lines()
            .map(|l| l.split("  ").nth(2).unwrap().to_owned())
            .collect()
    };
    let out = run_expect(None, &["tail", name, "-n", "2"], 0);
    assert_eq!(kinds(&out), ["k1", "k2"]);
    assert_eq!(stderr(&out), "");
    let out = run_expect(None, &["tail", name, "-n", "3"], 1);
    assert_eq!(kinds(&out), ["k0", "k1", "k2"]);
    assert!(
        stderr(&out).contains(&format!("{name}: the line at byte {bad_at}: not an event")),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("MiB"), "{}", stderr(&out));
    let out = run_expect(None, &["tail", name, "-n", "1", "--kind", "k1"], 0);
    assert_eq!(kinds(&out), ["k1"]);
    // Following: the last one there, then each new one.
    follows(name, &path, "k2", "k3");
}

/// Bytes the process `pid` has read so far (`rchar` of `/proc/PID/io`:
/// every `read` and `pread`, whatever they read from).
fn bytes_read(pid: u32) -> u64 {
    let io = fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    io.lines()
        .find_map(|line| line.strip_prefix("rchar: "))
        .unwrap_or_else(|| panic!("no rchar in /proc/{pid}/io: {io}"))
        .parse()
        .unwrap()
}

/// `tail -n N` reads the last N events once: reading back from the file's
/// end, it keeps what it prints, and follows on from the end. Two events
/// of 4 MiB each, the last two of the file, cost it about 8 MiB of reads
/// (`/proc/PID/io`, read once it has printed them and follows, waiting).
/// (It read them back to find where they start, then again from there:
/// about 16 MiB.)
#[test]
fn tail_n_reads_its_last_lines_once() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("events.jsonl");
    let big = |kind: &str| {
        let event = json!({"at": "2026-01-01T00:00:00Z", "kind": kind, "data": {"note": "x".repeat(4 << 20)}});
        format!("{event}\n")
    };
    let text = [event("k0"), event("k1"), big("k2"), big("k3")].concat();
    let last_two = (text.len() - 2 * event("k0").len()) as u64;
    fs::write(&path, &text).unwrap();
    let mut tail = taskstore(
        None,
        &["tail", path.to_str().unwrap(), "-n", "2", "--follow"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let next_line = following(tail.stdout.take().unwrap());
    for kind in ["k2", "k3"] {
        assert_eq!(next_line().split("  ").nth(2), Some(kind));
    }
    let read = bytes_read(tail.id());
    assert!(
        read >= last_two && read < last_two + last_two / 2,
        "read {read} bytes for the last two events' {last_two}"
    );
    tail.kill().unwrap();
    tail.wait().unwrap();
}

/// `tail -n N --follow` on a pipe (a FIFO, `/dev/stdin`) prints the last N
/// events the pipe holds once it has nothing more to give for now, then
/// each new one as it comes, while its writer goes on. (It held them until
/// the pipe closed: with a writer still there, it printed nothing.)
#[test]
fn tail_n_follows_a_fifo_as_its_lines_come() {
    use std::io::Write as _;
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("events.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    // Opened for reading and writing, it opens at once, and holds the
    // lines for the reader to come: a writer that stays.
    let mut writer = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .unwrap();
    writer
        .write_all([event("k0"), event("k1"), event("k2")].concat().as_bytes())
        .unwrap();
    let mut tail = taskstore(
        None,
        &["tail", fifo.to_str().unwrap(), "-n", "2", "--follow"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let next_line = following(tail.stdout.take().unwrap());
    let kind = || {
        next_line()
            .split("  ")
            .nth(2)
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(kind(), "k1");
    assert_eq!(kind(), "k2");
    writer.write_all(event("k3").as_bytes()).unwrap();
    assert_eq!(kind(), "k3");
    tail.kill().unwrap();
    tail.wait().unwrap();
}
