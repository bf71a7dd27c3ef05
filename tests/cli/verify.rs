//! `verify`: a clean store, every kind of damage reported with its path,
//! a live writer's temp file left alone, crashed writers' leftovers listed.

use super::*;

// ---------------------------------------------------------------------------
// verify

#[test]
fn verify_finds_nothing_in_a_clean_store() {
    let (_tmp, dir) = store_dir();
    store_with_tasks(&dir);
    let before = snapshot(&dir);
    let out = run_expect(Some(&dir), &["verify"], 0);
    assert_eq!(stdout(&out), "");
    assert!(stderr(&out).contains("clean"), "{}", stderr(&out));
    assert_unchanged(&before, &snapshot(&dir), "verify changes nothing");
}

/// Every code `ProblemKind::code` gives.
const PROBLEM_CODES: [&str; 18] = [
    "mode",
    "symlink",
    "not_a_file",
    "not_a_directory",
    "foreign",
    "missing",
    "bad_marker",
    "newer_format",
    "corrupt",
    "wrong_id",
    "too_large",
    "misplaced",
    "interrupted_move",
    "stale_copy",
    "dead_temp",
    "stale_index_entry",
    "missing_index_entry",
    "unreadable",
];

#[test]
fn verify_reports_every_kind_of_damage_with_its_path() {
    let planted: std::collections::BTreeSet<&str> = DAMAGE.iter().map(|d| d.problem).collect();
    let unplanted: Vec<&str> = PROBLEM_CODES
        .into_iter()
        .filter(|code| !planted.contains(code))
        .collect();
    assert!(unplanted.is_empty(), "no damage plants {unplanted:?}");
    for damage in DAMAGE {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let tasks = store_with_tasks(&dir);
        let path = (damage.plant)(&dir, &tasks);
        let before = snapshot(&dir);
        // A leftover or an unfinished move alone passes.
        let code = if damage.severity == "problem" { 1 } else { 0 };
        let out = run_expect(Some(&dir), &["verify", "--json"], code);
        let problems = json_lines(&out);
        assert!(
            problems.iter().any(|p| p["problem"] == damage.problem
                && p["severity"] == damage.severity
                && p["path"] == path.to_str().unwrap()),
            "{}: expected {} ({}) at {}, got {problems:#?}",
            damage.name,
            damage.problem,
            damage.severity,
            path.display()
        );
        // The text form names the path too.
        let text = run_expect(Some(&dir), &["verify"], code);
        assert!(
            stdout(&text).contains(&format!("{}: ", path.display())),
            "{}: {}",
            damage.name,
            stdout(&text)
        );
        assert_unchanged(&before, &snapshot(&dir), damage.name);
    }
}

#[test]
fn verify_leaves_a_live_writers_temp_file_alone() {
    let (_tmp, dir) = store_dir();
    let tasks = store_with_tasks(&dir);
    let id = first(&tasks, TaskStatus::Working).id;
    let temp = dir.join("tmp").join(format!("{id}.999999.1.tmp"));
    fs::write(&temp, b"{\"format\":1,\"task\":{").unwrap();
    // A writer holds its task's stripe from creating its temp file until the
    // rename: this process plays that writer (the command runs in another
    // process, so this flock excludes it).
    let lock = common::open_lock_file(&common::stripe_lock(&dir, id.as_str()));
    lock.lock().unwrap();
    let out = run_expect(Some(&dir), &["verify"], 0);
    assert_eq!(stdout(&out), "", "a live writer's temp file is no problem");
    let out = run_expect(Some(&dir), &["repair", "--apply"], 0);
    assert!(
        temp.exists(),
        "repair leaves a live writer's temp file: {}",
        stdout(&out)
    );
    lock.unlock().unwrap();
    // Its writer gone, it is a leftover (listed; the next open removes it).
    let out = run_expect(Some(&dir), &["verify", "--json"], 0);
    assert_eq!(json_lines(&out)[0]["problem"], "dead_temp");
    assert_eq!(json_lines(&out)[0]["severity"], "leftover");
}

/// A crashed writer's leftovers that the next open removes (a dead
/// writer's temp file, a stale copy beside a finished task) are listed by
/// `verify`, text and JSON (`"severity": "leftover"`), but pass: it exits
/// 0, and can serve as a start-up check. A problem beside them fails it.
/// (Any leftover made it exit 1, after most crashes.)
#[test]
fn verify_lists_leftovers_of_crashed_writers_and_passes() {
    let (_tmp, dir) = store_dir();
    let tasks = store_with_tasks(&dir);
    let working = first(&tasks, TaskStatus::Working);
    let temp = dir.join("tmp").join(format!("{}.999999.1.tmp", working.id));
    fs::write(&temp, b"{\"format\":1,\"task\":{").unwrap();
    chmod(&temp, 0o600);
    let out = run_expect(Some(&dir), &["verify", "--json"], 0);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(
        (
            &lines[0]["problem"],
            &lines[0]["severity"],
            &lines[0]["path"]
        ),
        (
            &json!("dead_temp"),
            &json!("leftover"),
            &json!(temp.to_str().unwrap())
        )
    );
    let out = run_expect(Some(&dir), &["verify"], 0);
    assert!(
        stdout(&out).contains(&format!("{}: ", temp.display()))
            && stdout(&out).contains("leftover"),
        "{}",
        stdout(&out)
    );
    assert!(stderr(&out).contains("1 leftover"), "{}", stderr(&out));
    // A problem beside it fails the check.
    let finished = task_path(&dir, "done", &first(&tasks, TaskStatus::Completed).id);
    chmod(&finished, 0o644);
    let out = run_expect(Some(&dir), &["verify", "--json"], 1);
    let severity = |path: &Path| -> Value {
        json_lines(&out)
            .into_iter()
            .find(|line| line["path"] == path.to_str().unwrap())
            .unwrap_or_else(|| panic!("{}: {}", path.display(), stdout(&out)))["severity"]
            .clone()
    };
    assert_eq!(severity(&finished), "problem");
    assert_eq!(severity(&temp), "leftover");
    // The help says which exit status means what.
    let help = stdout(&run_expect(None, &["verify", "--help"], 0));
    assert!(
        help.contains("leftover") && help.contains("Exits 0"),
        "{help}"
    );
}

/// What a crash in the middle of a delete or of a terminal move leaves, for
/// real: a process (this test binary again) holds its own call at the seam
/// (`FaultInjector::pause_at`) and is killed there (`SIGKILL`). A delete
/// killed between the removal of the task's file from `done/` and that of
/// its `expiring/` entry leaves a stale entry; a completion killed between
/// the link into `done/` and the unlink from `active/` leaves the finished
/// task in both areas (an interrupted move). Neither is damage: no read
/// uses the entry, every read sees the task final, and a sweep removes the
/// entry once due (`StaleEntry::is_due_at`) and finishes the move.
/// `verify` lists them as `unfinished`, says how many and that a sweep
/// cleans them (how many of the entries now), and exits 0; `sweep
/// --dry-run` counts the entry due and the move by the same rules, and
/// the sweep cleans and counts them both; `repair` would remove the
/// entries and finish the move; a problem beside them still fails. (A
/// stale entry was a problem: `verify` exited 1 until a sweep or `repair
/// --apply`. The dry run counted 0 interrupted moves, and the sweep
/// cleaned 1 leftover: the census left out a task in both areas, and the
/// open that resolved it counted nothing.)
#[cfg(feature = "fault-injection")]
#[test]
fn verify_passes_what_a_killed_delete_or_move_leaves_for_the_sweep() {
    const TEST: &str = "verify::verify_passes_what_a_killed_delete_or_move_leaves_for_the_sweep";
    if let Some((role, args)) = common::role() {
        assert_eq!(role, "held");
        return held_and_killed(&args);
    }
    let (tmp, dir) = store_dir();
    let old = gone_an_hour_ago(&dir);
    // Expired now (its entry due), and not for a day (its entry not due).
    let due = common::finished_with_ttl(&old, 1, Duration::from_secs(60)).remove(0);
    let later = common::finished_with_ttl(&old, 1, Duration::from_secs(86_400)).remove(0);
    let moving = old
        .create(NewTask::new().ttl(Duration::from_secs(86_400)))
        .unwrap()
        .id;
    let sound = common::finished_with_ttl(&old, 1, Duration::from_secs(86_400)).remove(0);
    drop(old);
    let entry = |id: &TaskId| {
        let name = common::files_in(&dir, "expiring")
            .into_iter()
            .find(|name| name.ends_with(&format!(".{id}")))
            .unwrap_or_else(|| panic!("the expiring/ entry of {id}"));
        dir.join("expiring").join(name)
    };
    let (due_entry, later_entry) = (entry(&due), entry(&later));
    for (op, id, held) in [
        ("delete", &due, due_entry.clone()),
        ("delete", &later, later_entry.clone()),
        ("complete", &moving, task_path(&dir, "active", &moving)),
    ] {
        let ready = tmp.path().join(format!("{op}-{id}.ready"));
        let args = [&dir, &held, &ready].map(|p| p.display().to_string());
        let args = [
            args[0].clone(),
            op.to_owned(),
            id.to_string(),
            args[1].clone(),
            args[2].clone(),
        ];
        let mut child = [spawn(tmp.path(), TEST, "held", &args)];
        wait_for(&mut child, "the call to be held", || ready.exists());
        let [child] = child;
        child.kill();
    }
    // What the kills left: the entries of deleted tasks, a finished task in
    // both areas.
    assert!(due_entry.exists() && !task_path(&dir, "done", &due).exists());
    assert!(later_entry.exists() && !task_path(&dir, "done", &later).exists());
    assert!(task_path(&dir, "active", &moving).exists());
    assert!(task_path(&dir, "done", &moving).exists());

    let before = snapshot(&dir);
    let out = run_expect(Some(&dir), &["verify", "--json"], 0);
    let findings = json_lines(&out);
    let found = |path: &Path| -> (Value, Value) {
        let line = findings
            .iter()
            .find(|f| f["path"] == path.to_str().unwrap())
            .unwrap_or_else(|| panic!("{}: {findings:#?}", path.display()));
        (line["problem"].clone(), line["severity"].clone())
    };
    assert_eq!(findings.len(), 3, "{findings:#?}");
    for stale in [&due_entry, &later_entry] {
        assert_eq!(
            found(stale),
            (json!("stale_index_entry"), json!("unfinished"))
        );
    }
    assert_eq!(
        found(&task_path(&dir, "active", &moving)),
        (json!("interrupted_move"), json!("unfinished"))
    );
    let out = run_expect(Some(&dir), &["verify"], 0);
    let (text, summary) = (stdout(&out), stderr(&out));
    assert!(
        text.contains(&format!(
            "{}: an expiring/ entry that is not its task's file any more (unfinished: the \
             store's next sweep removes it",
            due_entry.display()
        )) && text.contains(&format!(
            "{}: an expiring/ entry that is not its task's file any more (unfinished: a sweep \
             removes it once it is due",
            later_entry.display()
        )),
        "{text}"
    );
    assert!(
        summary.contains("1 unfinished move(s) of crashed writers")
            && summary.contains(
                "2 stale expiring/ entries of crashed writers, which a sweep removes once due \
                 (1 due now)"
            ),
        "{summary}"
    );
    // The sweep's dry run counts the one due, and the move, as verify
    // does.
    let out = run_expect(Some(&dir), &["sweep", "--dry-run"], 0);
    assert!(
        stderr(&out).contains(
            "2 leftover(s) of crashed writers would be cleaned (1 stale expiring/ entry, 1 \
             interrupted move)"
        ),
        "{}",
        stderr(&out)
    );
    // `repair` agrees: it would remove both entries and finish the move.
    let out = run_expect(Some(&dir), &["repair"], 0);
    for (path, would) in [
        (&due_entry, "remove the stale index entry"),
        (&later_entry, "remove the stale index entry"),
        (
            &task_path(&dir, "active", &moving),
            "finish the move into done/",
        ),
    ] {
        assert!(
            stdout(&out).contains(&format!("{}: ", path.display()))
                && stdout(&out)
                    .lines()
                    .any(|line| line.starts_with(&format!("{}: ", path.display()))
                        && line.ends_with(&format!("would {would}"))),
            "{}",
            stdout(&out)
        );
    }
    assert_unchanged(&before, &snapshot(&dir), "verify and repair's dry run");
    // A problem beside them fails the check, and the summary still says
    // what the sweep cleans.
    // (One mode, reported for both names of the file: its expiring/ entry
    // is a link to it.)
    let damaged = task_path(&dir, "done", &sound);
    chmod(&damaged, 0o644);
    let out = run_expect(Some(&dir), &["verify"], 1);
    assert!(
        stderr(&out).contains(": 2 problem(s) in ")
            && stderr(&out).contains("2 stale expiring/ entries"),
        "{}",
        stderr(&out)
    );
    chmod(&damaged, 0o600);
    // The sweep removes the entry due and finishes the move, and counts
    // both, as its dry run did; the other entry waits for its time, and
    // still passes.
    let out = run_expect(Some(&dir), &["sweep"], 0);
    assert!(
        stderr(&out).contains("cleaned 2 leftover(s) of crashed writers"),
        "{}",
        stderr(&out)
    );
    assert!(!due_entry.exists() && !task_path(&dir, "active", &moving).exists());
    let out = run_expect(Some(&dir), &["verify", "--json"], 0);
    assert_eq!(
        json_lines(&out)
            .iter()
            .map(|f| (f["path"].clone(), f["severity"].clone()))
            .collect::<Vec<_>>(),
        [(json!(later_entry.to_str().unwrap()), json!("unfinished"))]
    );
    run_expect(Some(&dir), &["repair", "--apply"], 0);
    let out = run_expect(Some(&dir), &["verify"], 0);
    assert!(stderr(&out).contains("clean"), "{}", stderr(&out));
    let store = open(&dir);
    assert_eq!(
        store.get(&moving).unwrap().map(|t| t.status),
        Some(TaskStatus::Completed)
    );
    assert_eq!(store.get(&later).unwrap(), None);
}

/// The child of [`verify_passes_what_a_killed_delete_or_move_leaves_for_the_sweep`]:
/// opens the store (its clock an hour ago, as the tasks' maker's), holds the
/// unlink of `held` at the seam, runs `op` (`delete` or `complete`) on task
/// `id` until it is held there, says so by making `ready`, and waits to be
/// killed.
#[cfg(feature = "fault-injection")]
fn held_and_killed(args: &[String]) {
    let [dir, op, id, held, ready] = args else {
        panic!("expected five arguments, got {args:?}");
    };
    let faults = taskstore::FaultInjector::new();
    let store = an_hour_ago(Path::new(dir))
        .fault_injector(faults.clone())
        .open()
        .unwrap();
    let id = TaskId::parse(id).unwrap();
    let pause = faults.pause_at(taskstore::FsOp::Remove, held);
    let op = op.clone();
    let call = std::thread::spawn(move || match op.as_str() {
        "delete" => assert!(store.delete(&id).unwrap()),
        "complete" => assert!(store.complete(&id, json!("done")).unwrap().is_applied()),
        other => panic!("unknown op {other}"),
    });
    assert!(
        pause.wait_reached(|| !call.is_finished()),
        "the call never unlinked {held}"
    );
    touch(Path::new(ready));
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}
