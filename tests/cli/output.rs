//! Where results and summaries go: JSON for every command that prints results,
//! summaries on stderr, what the dry runs say of unreadable entries, errors that
//! name their task, and a closed stdout or stderr that keeps the failure.

use super::*;

/// A cancel that fails says which task it could not cancel: the store's
/// error named only the lock file it could not open.
#[test]
fn a_cancel_that_fails_names_its_task() {
    let (_tmp, dir) = store_dir();
    let tasks = store_with_tasks(&dir);
    let id = first(&tasks, TaskStatus::Working).id;
    let lock = common::stripe_lock(&dir, id.as_str());
    let _ = fs::remove_file(&lock);
    fs::create_dir(&lock).unwrap();
    let out = run_expect(Some(&dir), &["cancel", id.as_str()], 1);
    let said = stderr(&out);
    assert!(
        said.contains(&format!("could not cancel task {id}: ")) && said.contains("lock"),
        "{said}"
    );
}

/// A command that fails on a lock file says what it was doing, beside the
/// lock file and why, as a cancel names its task: the store's error names
/// the file alone ("unable to open lock file …/handles.lock: Is a
/// directory"), and which command's work failed was left to guess.
#[test]
fn a_command_that_fails_on_a_lock_file_says_what_it_was_doing() {
    let (_tmp, dir) = store_dir();
    let tasks = store_with_tasks(&dir);
    let id = first(&tasks, TaskStatus::Working).id;
    let lock = dir.join("locks").join("handles.lock");
    let _ = fs::remove_file(&lock);
    fs::create_dir(&lock).unwrap();
    for (args, doing) in [
        (&["list"][..], "list tasks".to_owned()),
        (&["show", id.as_str()], format!("show task {id}")),
        (&["stats"], "count the store's tasks".to_owned()),
        (&["sweep"], "sweep".to_owned()),
        (
            &["sweep", "--dry-run"],
            "judge what a sweep would do".to_owned(),
        ),
        (&["reap"], "reap".to_owned()),
        (
            &["reap", "--dry-run"],
            "judge what a reap would do".to_owned(),
        ),
        (&["verify"], "verify the store".to_owned()),
        (&["repair", "--apply"], "repair the store".to_owned()),
    ] {
        let out = run_expect(Some(&dir), args, 1);
        let said = stderr(&out);
        assert!(
            said.contains(&format!(
                "taskstore: error: could not {doing}: unable to open lock file {}",
                lock.display()
            )),
            "{args:?}: {said}"
        );
    }
    // A cancel names its task once, as before.
    let out = run_expect(Some(&dir), &["cancel", id.as_str()], 1);
    assert!(
        stderr(&out).contains(&format!(
            "taskstore: error: could not cancel task {id}: unable to open lock file {}",
            lock.display()
        )),
        "{}",
        stderr(&out)
    );
}

/// A cancel of an id the store does not hold names the task once: the
/// store's error names it already. (It said "could not cancel task X:
/// task X not found (missing or expired)".) A `show` of it says the
/// store's error alone.
#[test]
fn a_cancel_of_an_unknown_task_names_it_once() {
    let (_tmp, dir) = store_dir();
    store_with_tasks(&dir);
    let id = "no-such-task";
    let out = run_expect(Some(&dir), &["cancel", id], 1);
    let said = stderr(&out);
    assert_eq!(
        said,
        format!("taskstore: error: could not cancel: task {id} not found (missing or expired)\n")
    );
    assert_eq!(stdout(&out), "");
    // `show` says it as the store's error says it.
    let out = run_expect(Some(&dir), &["show", id], 1);
    assert_eq!(
        stderr(&out),
        format!("taskstore: error: task {id} not found (missing or expired)\n")
    );
    assert_eq!(stdout(&out), "");
}

/// `--json` on every command that prints results, in one shape: one
/// object per line where there may be many (`sweep`, `reap`, `repair`
/// and the dry runs, as `list` and `verify`), one document where there is
/// one (`show`, as `stats` and `cancel`); camelCase keys, each result's
/// `action` and `outcome` (`planned` in a dry run, `done`, `skipped`,
/// `failed`) as short codes. The summary stays on stderr. (`sweep`,
/// `reap`, `repair` and `show` had no `--json`: a usage error.)
#[test]
fn every_command_that_prints_results_has_json() {
    let (_tmp, dir) = store_dir();
    let old = gone_an_hour_ago(&dir);
    let expired = old
        .create(NewTask::new().ttl(Duration::from_secs(60)))
        .unwrap();
    let orphan = old.create(NewTask::new()).unwrap();
    let resumable = old
        .create(NewTask::new().resumable("report", json!({"q": 3})))
        .unwrap();
    drop(old);
    let live = open(&dir).create(NewTask::new()).unwrap();
    let json = |args: &[&str], code: i32| -> Vec<Value> {
        let out = run_expect(Some(&dir), args, code);
        assert!(!stderr(&out).is_empty(), "{args:?}: a summary on stderr");
        json_lines(&out)
    };
    let only = |lines: &[Value], id: &TaskId| -> Value {
        let of: Vec<&Value> = lines
            .iter()
            .filter(|l| l["taskId"] == id.as_str())
            .collect();
        assert_eq!(of.len(), 1, "{id}: {lines:#?}");
        of[0].clone()
    };

    // show: the task, as the API reads it, on one line.
    let out = run_expect(Some(&dir), &["show", live.id.as_str(), "--json"], 0);
    assert_eq!(stdout(&out).lines().count(), 1, "{}", stdout(&out));
    let shown: Task = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(shown, open(&dir).get(&live.id).unwrap().unwrap());
    // For repair (an open, such as show's, removes a dead temp file).
    let temp = dir.join("tmp").join(format!("{}.999999.3.tmp", live.id));
    fs::write(&temp, b"{\"format\":1,\"ta").unwrap();
    let stray = dir.join("README.txt");
    fs::write(&stray, b"mine").unwrap();

    // The dry runs (the resumable orphan waits for a claim for 2 h).
    let lines = json(&["sweep", "--dry-run", "--json"], 0);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let line = only(&lines, &expired.id);
    assert_eq!(
        (&line["action"], &line["outcome"], &line["status"]),
        (&json!("delete"), &json!("planned"), &json!("working"))
    );
    assert!(line["expiredAt"].is_string(), "{line}");
    let lines = json(&["reap", "--dry-run", "--json", "--claim-grace", "2h"], 0);
    let line = only(&lines, &orphan.id);
    assert_eq!(
        (&line["action"], &line["outcome"], &line["owner"]),
        (&json!("reap"), &json!("planned"), &json!("gone"))
    );
    assert!(line["leaseExpiresAt"].is_string(), "{line}");
    let line = only(&lines, &resumable.id);
    assert_eq!(
        (&line["action"], &line["kind"], &line["claimGraceMs"]),
        (&json!("await_claim"), &json!("report"), &json!(7_200_000))
    );
    let line = only(&lines, &expired.id);
    assert_eq!(
        (&line["action"], &line["outcome"]),
        (&json!("delete"), &json!("planned"))
    );
    let lines = json(&["repair", "--json"], 0);
    let by_path = |lines: &[Value], path: &Path| -> Value {
        lines
            .iter()
            .find(|l| l["path"] == path.display().to_string())
            .unwrap_or_else(|| panic!("{}: {lines:#?}", path.display()))
            .clone()
    };
    let line = by_path(&lines, &temp);
    assert_eq!(
        (
            &line["problem"],
            &line["action"],
            &line["outcome"],
            &line["taskId"]
        ),
        (
            &json!("dead_temp"),
            &json!("remove_temp"),
            &json!("planned"),
            &json!(live.id.as_str())
        )
    );
    let line = by_path(&lines, &stray);
    assert_eq!(
        (&line["action"], &line["outcome"]),
        (&json!("leave"), &json!("skipped"))
    );
    assert!(
        line["reason"].as_str().unwrap().contains("by hand"),
        "{line}"
    );

    // The real runs.
    let lines = json(&["repair", "--apply", "--json"], 1);
    let line = by_path(&lines, &temp);
    assert_eq!(line["outcome"], "done", "{line}");
    assert_eq!(line["underWay"], false, "{line}");
    let lines = json(&["sweep", "--json"], 0);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let line = only(&lines, &expired.id);
    assert_eq!(
        (&line["action"], &line["outcome"], &line["status"]),
        (&json!("delete"), &json!("done"), &json!("working"))
    );
    let lines = json(&["reap", "--json", "--claim-grace", "2h"], 0);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let line = only(&lines, &orphan.id);
    assert_eq!(
        (
            &line["action"],
            &line["outcome"],
            &line["status"],
            &line["owner"]
        ),
        (
            &json!("reap"),
            &json!("done"),
            &json!("failed"),
            &json!("gone")
        )
    );
}

/// One rule for every command: results (what a script reads) on stdout,
/// the summary of a pass or check (its counts) on stderr, with progress,
/// notes and errors; the help says so once. (A sweep printed its summary
/// on stdout, its dry run, a reap and a repair theirs on stderr.)
#[test]
fn every_summary_goes_to_stderr() {
    let (_tmp, dir) = store_dir();
    let old = gone_an_hour_ago(&dir);
    old.create(NewTask::new().ttl(Duration::from_secs(60)))
        .unwrap();
    old.create(NewTask::new()).unwrap();
    drop(old);
    for (args, summary) in [
        (
            &["sweep", "--dry-run"][..],
            "dry run: 1 expired task(s) would be deleted",
        ),
        (&["reap", "--dry-run"], "dry run: 1 orphan(s)"),
        (&["verify"], ": clean ("),
        (&["repair"], ": clean, nothing to repair"),
        (
            &["sweep"],
            "deleted 1 expired task(s); cleaned 0 leftover(s)",
        ),
        (&["reap"], "reaped 1 orphan(s)"),
    ] {
        let out = run_expect(Some(&dir), args, 0);
        assert!(
            stderr(&out).contains(summary) && !stdout(&out).contains(summary),
            "{args:?}\nstdout:\n{}\nstderr:\n{}",
            stdout(&out),
            stderr(&out)
        );
    }
    let help = stdout(&run_expect(None, &["--help"], 0));
    assert!(
        help.contains("Results (what a script reads) go to stdout"),
        "{help}"
    );
}

/// A store with an entry of every kind a dry run cannot read, each with
/// what `sweep --dry-run` and `reap --dry-run` say of it, and whether the
/// real sweep and reap set it aside.
fn store_with_unreadable_entries(dir: &Path) -> Vec<(PathBuf, [(Said, bool); 2])> {
    let newer = |path: &Path| {
        let bytes = fs::read_to_string(path).unwrap();
        assert!(bytes.starts_with("{\"format\":1,"), "{bytes}");
        fs::write(path, bytes.replacen("{\"format\":1,", "{\"format\":2,", 1)).unwrap();
    };
    let old = gone_an_hour_ago(dir);
    let finished_expired = |old: &FileStore| {
        let task = old
            .create(NewTask::new().ttl(Duration::from_secs(60)))
            .unwrap();
        old.complete(&task.id, json!({})).unwrap().into_task();
        task_path(dir, "done", &task.id)
    };
    let damaged_expired = finished_expired(&old);
    let newer_expired = finished_expired(&old);
    drop(old);
    let store = open(dir);
    let damaged_kept = store.create(NewTask::new()).unwrap();
    store
        .complete(&damaged_kept.id, json!({}))
        .unwrap()
        .into_task();
    let damaged_kept = task_path(dir, "done", &damaged_kept.id);
    let damaged_running = task_path(dir, "active", &store.create(NewTask::new()).unwrap().id);
    let newer_running = task_path(dir, "active", &store.create(NewTask::new()).unwrap().id);
    drop(store);
    for damaged in [&damaged_expired, &damaged_kept, &damaged_running] {
        fs::write(damaged, b"{ not json").unwrap();
    }
    newer(&newer_expired);
    newer(&newer_running);
    let stray_active = dir.join("active").join("notes.txt");
    let stray_done = dir.join("done").join("notes.txt");
    fs::write(&stray_active, b"mine").unwrap();
    fs::write(&stray_done, b"mine").unwrap();
    // [(what the dry run of a sweep says, set aside by it), (reap's)]
    vec![
        (damaged_running, [(Said::SetAside, true); 2]),
        (stray_active, [(Said::SetAside, true); 2]),
        (newer_running, [(Said::LeftInPlace, false); 2]),
        (newer_expired, [(Said::LeftInPlace, false); 2]),
        (
            damaged_expired,
            [
                (Said::SetAsideIfExpired, true),
                (Said::LeftForRepair, false),
            ],
        ),
        (
            damaged_kept,
            [
                (Said::SetAsideIfExpired, false),
                (Said::LeftForRepair, false),
            ],
        ),
        (stray_done, [(Said::LeftForRepair, false); 2]),
    ]
}

/// The dry runs of `sweep` and `reap` say of each entry they cannot read
/// what the real run does with it, and the real run does it: each pass
/// sets aside what it reads of `active/` (a damaged task file, a foreign
/// name), a sweep of `done/` only the damaged files whose `expiring/`
/// entry has expired, and neither a newer-format file. (They said of
/// every entry "the real run sets it aside into quarantine/", and the real
/// runs left those of `done/` and the newer-format ones in place.)
#[test]
fn dry_runs_say_what_the_real_run_does_with_each_entry_it_cannot_read() {
    for (pass, command) in ["sweep", "reap"].into_iter().enumerate() {
        let (_tmp, dir) = store_dir();
        let entries = store_with_unreadable_entries(&dir);
        let out = run_expect(Some(&dir), &[command, "--dry-run"], 0);
        let said = stderr(&out);
        let wrong: Vec<String> = entries
            .iter()
            .filter_map(|(path, fates)| {
                let (want, _) = fates[pass];
                let name = format!("{}:", path.display());
                match said.lines().find(|line| line.contains(&name)) {
                    Some(line) if want.in_line(line) => None,
                    line => Some(format!("want {want:?}: {}", line.unwrap_or(&name))),
                }
            })
            .collect();
        assert!(
            wrong.is_empty(),
            "{command} --dry-run:\n{}",
            wrong.join("\n")
        );
        run_expect(Some(&dir), &[command], 0);
        for (path, fates) in &entries {
            let (_, set_aside) = fates[pass];
            assert_eq!(
                !path.exists(),
                set_aside,
                "{command}: {} set aside (the dry run said {:?})",
                path.display(),
                fates[pass].0
            );
        }
    }
}

/// A command whose stdout is closed before it writes (a pipeline's reader
/// that quit: `taskstore verify | head`) ends with the status it earned:
/// `verify` of a damaged store fails, and `list` succeeds. (Both exited 0:
/// with `pipefail`, a damaged store read as a clean one.)
#[test]
fn a_closed_stdout_keeps_a_failure() {
    let (_tmp, dir) = store_dir();
    let tasks = store_with_tasks(&dir);
    let closed = |args: &[&str]| {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        taskstore(Some(&dir), args)
            .stdout(writer)
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .code()
    };
    assert_eq!(closed(&["list"]), Some(0));
    chmod(
        &task_path(&dir, "active", &first(&tasks, TaskStatus::Working).id),
        0o644,
    );
    assert_eq!(closed(&["verify"]), Some(1), "verify of a damaged store");
}

/// `list` of a store with a task file it cannot read sets the file aside
/// and exits 1 (the list is short of that task); with its stdout closed
/// (`taskstore list --json | head`, under `pipefail`) it ends with the same
/// 1, known once the first page is read, before it prints a line. (It
/// exited 0: the failure was earned only after the last line printed.)
#[test]
fn a_closed_stdout_keeps_the_failure_of_a_list_that_missed_a_task() {
    let (tmp, dir) = store_dir();
    let tasks = store_with_tasks(&dir);
    let damaged = first(&tasks, TaskStatus::Working);
    fs::write(task_path(&dir, "active", &damaged.id), b"{\"format\":1,").unwrap();
    // A fresh copy of the damaged store for each run: a listing sets the
    // damaged file aside.
    let copy = |name: &str| {
        let to = tmp.path().join(name);
        let copied = Command::new("cp")
            .arg("-a")
            .arg(&dir)
            .arg(&to)
            .status()
            .unwrap();
        assert!(copied.success());
        to
    };
    run_expect(Some(&copy("open")), &["list", "--json"], 1);
    for (n, args) in [&["list", "--json"][..], &["list"]].into_iter().enumerate() {
        let store = copy(&format!("closed-{n}"));
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let closed = taskstore(Some(&store), args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&closed.stderr).into_owned();
        assert!(
            said.contains("skipped"),
            "{args:?}: met the damaged file: {said}"
        );
        assert_eq!(
            closed.status.code(),
            Some(1),
            "taskstore {args:?} with its stdout closed, short of a task; stderr: {said}"
        );
    }
}

/// A stderr that takes no more (a closed pipe, a full disk) loses the
/// command's messages and nothing else: it exits with the status it earned,
/// 1 for an error or problems found, else 0. (A failed write to stderr
/// panicked: exit 101 for `verify 2>&1 | true`, `show nope 2>/dev/full`,
/// and a dry run naming an unreadable file.)
#[test]
fn a_stderr_that_takes_no_more_keeps_the_status_the_command_earned() {
    let (_tmp, dir) = store_dir();
    store_with_tasks(&dir);
    /// Where the command's stderr (and, if asked, stdout) goes.
    #[derive(Clone, Copy, Debug)]
    enum Sink {
        ClosedPipe,
        Full,
    }
    let code = |args: &[&str], sink: Sink, stdout_too: bool| {
        let (stderr, stdout): (Stdio, Stdio) = match sink {
            Sink::ClosedPipe => {
                let (reader, writer) = std::io::pipe().unwrap();
                drop(reader);
                let stdout = if stdout_too {
                    writer.try_clone().unwrap().into()
                } else {
                    Stdio::null()
                };
                (writer.into(), stdout)
            }
            Sink::Full => {
                let full = || {
                    fs::OpenOptions::new()
                        .write(true)
                        .open("/dev/full")
                        .unwrap()
                };
                let stdout = if stdout_too {
                    full().into()
                } else {
                    Stdio::null()
                };
                (full().into(), stdout)
            }
        };
        taskstore(Some(&dir), args)
            .stdout(stdout)
            .stderr(stderr)
            .status()
            .unwrap()
            .code()
    };
    for sink in [Sink::ClosedPipe, Sink::Full] {
        for stdout_too in [false, true] {
            let case = format!("{sink:?}, stdout too: {stdout_too}");
            assert_eq!(
                code(&["verify", "--wait", "0s"], sink, stdout_too),
                Some(0),
                "verify of a clean store, {case}"
            );
            assert_eq!(
                code(&["show", "nope"], sink, stdout_too),
                Some(1),
                "show of no task, {case}"
            );
        }
    }
    // A file the dry runs name on stderr before they print anything.
    fs::write(dir.join("active").join("bad.json"), b"{\"format\":1,").unwrap();
    for sink in [Sink::ClosedPipe, Sink::Full] {
        for args in [&["reap", "--dry-run"][..], &["sweep", "--dry-run"]] {
            assert_eq!(code(args, sink, true), Some(0), "{args:?}, {sink:?}");
        }
        assert_eq!(
            code(&["verify", "--wait", "0s"], sink, false),
            Some(1),
            "verify of a damaged store, {sink:?}"
        );
    }
}
