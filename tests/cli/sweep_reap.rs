//! `sweep` and `reap`, and their dry runs: what each deletes and prints, what
//! a dry run leaves as it is, the lock file the checks make, a slow reader.

use super::*;

/// `sweep` counts the crashed writers' temp files its own open removed
/// (it said "cleaned 0 leftover(s)" with all of them gone: the open
/// cleans them before the sweep begins).
#[test]
fn sweep_counts_the_leftovers_its_open_cleaned() {
    let (_tmp, dir) = store_dir();
    let tasks = store_with_tasks(&dir);
    for (i, task) in tasks.iter().take(2).enumerate() {
        let temp = dir.join("tmp").join(format!("{}.999999.{i}.tmp", task.id));
        fs::write(&temp, b"{\"format\":1,\"task\":{").unwrap();
    }
    let out = run_expect(Some(&dir), &["sweep"], 0);
    assert!(
        stderr(&out).contains("cleaned 2 leftover(s) of crashed writers"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fs::read_dir(dir.join("tmp")).unwrap().count(), 0);
    let out = run_expect(Some(&dir), &["sweep"], 0);
    assert!(
        stderr(&out).contains("cleaned 0 leftover(s)"),
        "{}",
        stderr(&out)
    );
}

/// `sweep` counts the `expiring/` entries a killed sweep left among the
/// leftovers it cleaned: the sweep had removed their tasks' files from
/// `done/` and leaves the entries to its end, which it never reached. (It
/// said "cleaned 0 leftover(s)" with the entries removed: they go in the
/// sweep's scans, after the clean-up it counted.) A dry run before it
/// leaves them for it, as its help says.
#[test]
fn sweep_counts_the_index_entries_a_killed_sweep_left() {
    let (_tmp, dir) = store_dir();
    let old = gone_an_hour_ago(&dir);
    let ids = common::finished_with_ttl(&old, 2, Duration::from_secs(60));
    drop(old);
    // What the killed sweep left: the files gone, their entries not.
    for id in &ids {
        fs::remove_file(dir.join("done").join(format!("{id}.json"))).unwrap();
    }
    assert_eq!(fs::read_dir(dir.join("expiring")).unwrap().count(), 2);
    let before = snapshot(&dir);
    let out = run_expect(Some(&dir), &["sweep", "--dry-run"], 0);
    assert!(
        stderr(&out).contains("0 expired task(s) would be deleted"),
        "{}",
        stderr(&out)
    );
    assert_unchanged(&before, &snapshot(&dir), "the dry run");
    let help = stdout(&run_expect(None, &["sweep", "--help"], 0));
    assert!(help.contains("stale expiring/ entries"), "{help}");
    let out = run_expect(Some(&dir), &["sweep"], 0);
    assert!(
        stderr(&out)
            .contains("deleted 0 expired task(s); cleaned 2 leftover(s) of crashed writers"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fs::read_dir(dir.join("expiring")).unwrap().count(), 0);
    let out = run_expect(Some(&dir), &["sweep"], 0);
    assert!(
        stderr(&out).contains("cleaned 0 leftover(s)"),
        "{}",
        stderr(&out)
    );
}

/// `sweep --dry-run` counts the leftovers the sweep would clean, as the
/// sweep counts them: the `expiring/` entries of the tasks a killed sweep
/// removed (due now), and a finished task's move interrupted before its
/// file left `active/`. A stale entry not due yet is left out, as the
/// sweep leaves it; the temp files are said as there, their writers not
/// judged. (The dry run said nothing of them, and the sweep after it
/// "cleaned 4".)
#[test]
fn a_sweeps_dry_run_counts_the_leftovers_the_sweep_cleans() {
    let (_tmp, dir) = store_dir();
    let old = gone_an_hour_ago(&dir);
    let ids = common::finished_with_ttl(&old, 2, Duration::from_secs(60));
    let later = common::finished_with_ttl(&old, 1, Duration::from_secs(86_400));
    drop(old);
    let store = open(&dir);
    let unmoved = common::finished_with_ttl(&store, 1, Duration::from_secs(86_400));
    drop(store);
    // What a killed sweep left (the files gone, their entries due), and a
    // removal of a task not due yet cut short alike.
    for id in ids.iter().chain(&later) {
        fs::remove_file(task_path(&dir, "done", id)).unwrap();
    }
    // A terminal move cut short: the finished task still in `active/`
    // alone (its `expiring/` entry still its file).
    fs::rename(
        task_path(&dir, "done", &unmoved[0]),
        task_path(&dir, "active", &unmoved[0]),
    )
    .unwrap();
    assert_eq!(common::unmoved(&dir).len(), 1);
    // A dead writer's temp file: whose writer is gone takes its lock to
    // judge, and the dry run says the temp files there are.
    let temp = dir.join("tmp").join(format!("{}.999999.1.tmp", unmoved[0]));
    fs::write(&temp, b"{\"format\":1,\"task\":{").unwrap();
    chmod(&temp, 0o600);
    let before = snapshot(&dir);
    let out = run_expect(Some(&dir), &["sweep", "--dry-run"], 0);
    assert!(
        stderr(&out).contains(
            "dry run: 0 expired task(s) would be deleted; 3 leftover(s) of crashed writers \
             would be cleaned (2 stale expiring/ entries, 1 interrupted move), and those of \
             the 1 temp file(s) in tmp/ whose writer is gone; nothing was changed"
        ),
        "{}",
        stderr(&out)
    );
    assert_unchanged(&before, &snapshot(&dir), "the dry run");
    let out = run_expect(Some(&dir), &["sweep"], 0);
    assert!(
        stderr(&out)
            .contains("deleted 0 expired task(s); cleaned 4 leftover(s) of crashed writers"),
        "{}",
        stderr(&out)
    );
    assert_eq!(common::unmoved(&dir), Vec::<String>::new());
    assert_eq!(common::files_in(&dir, "tmp"), Vec::<String>::new());
    let out = run_expect(Some(&dir), &["sweep", "--dry-run"], 0);
    assert!(
        stderr(&out).contains("0 leftover(s) of crashed writers would be cleaned"),
        "{}",
        stderr(&out)
    );
}

/// A dry run changes nothing even where opening a handle would: a crashed
/// writer's temp file stays (a handle's open removes it), and so does an
/// unreadable task file (a listing sets it aside); the dry run reports it.
/// (Dry runs opened a handle and listed, and said "nothing was changed".)
#[test]
fn dry_runs_leave_what_a_handle_would_tidy_as_it_is() {
    let (_tmp, dir) = store_dir();
    let old = gone_an_hour_ago(&dir);
    let expired = old
        .create(NewTask::new().ttl(Duration::from_secs(60)))
        .unwrap();
    let orphan = old.create(NewTask::new()).unwrap();
    drop(old);
    let name = format!("{}.json", orphan.id);
    fs::copy(
        dir.join("active").join(&name),
        dir.join("tmp")
            .join(format!("{}.99999999.1.tmp", orphan.id)),
    )
    .unwrap();
    fs::write(dir.join("active").join("bad.json"), b"{\"format\":1,").unwrap();
    let before = snapshot(&dir);
    let out = run_expect(Some(&dir), &["sweep", "--dry-run"], 0);
    assert!(
        stdout(&out).contains(expired.id.as_str()),
        "{}",
        stdout(&out)
    );
    assert!(stderr(&out).contains("bad.json"), "{}", stderr(&out));
    let out = run_expect(Some(&dir), &["reap", "--dry-run"], 0);
    assert!(
        stdout(&out).contains(&format!("would reap {}", orphan.id)),
        "{}",
        stdout(&out)
    );
    assert!(stderr(&out).contains("bad.json"), "{}", stderr(&out));
    assert_unchanged(&before, &snapshot(&dir), "dry runs change nothing");
}

/// A check (`stats`, `verify`, `repair` without `--apply`) or a dry run
/// holds the handles lock shared, as a handle does, so that an open
/// meanwhile knows it is not alone: on a store that lacks the lock's file
/// it makes it, changes nothing else, and its help says so. (Their help
/// said they change nothing.)
#[test]
fn checks_and_dry_runs_make_the_lock_file_their_help_names_and_nothing_else() {
    let (_tmp, dir) = store_dir();
    store_with_tasks(&dir);
    let lock = dir.join("locks").join("handles.lock");
    for args in [
        &["stats"][..],
        &["verify"],
        &["repair"],
        &["sweep", "--dry-run"],
        &["reap", "--dry-run"],
    ] {
        fs::remove_file(&lock).unwrap();
        // Without the lock stripes' empty files, which any handle makes.
        let before = snapshot(&dir);
        run_expect(Some(&dir), args, 0);
        assert!(lock.exists(), "taskstore {args:?} made the lock file");
        assert_unchanged(&before, &snapshot(&dir), &format!("taskstore {args:?}"));
        let help = stdout(&run_expect(None, &[args[0], "--help"], 0));
        assert!(
            help.contains("locks/handles.lock"),
            "taskstore {} --help:\n{help}",
            args[0]
        );
    }
}

#[test]
fn sweep_and_reap_dry_runs_list_what_would_happen() {
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

    let before = snapshot(&dir);
    let out = run_expect(Some(&dir), &["sweep", "--dry-run"], 0);
    assert_eq!(stdout(&out).lines().count(), 1, "{}", stdout(&out));
    assert!(stdout(&out).contains(expired.id.as_str()));
    // The resumable orphan's lease lapsed an hour ago, but a service may
    // give it a longer claim grace: with 2 h it waits for a claim.
    let out = run_expect(Some(&dir), &["reap", "--dry-run", "--claim-grace", "2h"], 0);
    let text = stdout(&out);
    assert!(
        text.contains(&format!("would reap {}", orphan.id)),
        "{text}"
    );
    assert!(
        text.contains(&format!("would not reap {}", resumable.id)) && text.contains("claim grace"),
        "{text}"
    );
    assert!(!text.contains(live.id.as_str()), "{text}");
    assert_unchanged(&before, &snapshot(&dir), "dry runs change nothing");

    // Before the reap, which would delete the expired task it meets (its
    // lease lapsed too).
    let out = run_expect(Some(&dir), &["sweep"], 0);
    assert!(
        stderr(&out).contains("deleted 1 expired task(s)"),
        "{}",
        stderr(&out)
    );
    assert!(!task_path(&dir, "active", &expired.id).exists());
    let out = run_expect(Some(&dir), &["reap", "--claim-grace", "2h"], 0);
    assert!(
        stdout(&out).contains(orphan.id.as_str()),
        "{}",
        stdout(&out)
    );
    let api = open(&dir);
    assert_eq!(
        api.get(&orphan.id).unwrap().unwrap().status,
        TaskStatus::Failed
    );
    assert_eq!(
        api.get(&resumable.id).unwrap().unwrap().status,
        TaskStatus::Working
    );
    // With the default grace (one lease, 30 s) it is reaped too.
    run_expect(Some(&dir), &["reap"], 0);
    assert_eq!(
        api.get(&resumable.id).unwrap().unwrap().status,
        TaskStatus::Failed
    );
    assert_eq!(
        api.get(&live.id).unwrap().unwrap().status,
        TaskStatus::Working
    );
}

/// A real sweep lists each task it deletes, as its dry run lists each it
/// would and a reap each it reaps, running and finished alike, and none it
/// keeps. (It printed only a count.)
#[test]
fn a_sweep_lists_each_task_it_deletes() {
    let (_tmp, dir) = store_dir();
    let old = gone_an_hour_ago(&dir);
    let expiring = || NewTask::new().ttl(Duration::from_secs(60));
    let running = old.create(expiring()).unwrap();
    let waiting = old.create(expiring()).unwrap();
    let waiting = old
        .update(
            &waiting.id,
            TaskUpdate::new().status(TaskStatus::InputRequired),
        )
        .unwrap()
        .into_task();
    let finished = old.create(expiring()).unwrap();
    let finished = old.complete(&finished.id, json!(1)).unwrap().into_task();
    drop(old);
    let kept = open(&dir)
        .create(NewTask::new().ttl(Duration::from_secs(3_600)))
        .unwrap();
    let dry = run_expect(Some(&dir), &["sweep", "--dry-run"], 0);
    let out = run_expect(Some(&dir), &["sweep"], 0);
    let said = stdout(&out);
    // Each as its dry run says it, with how long ago it expired.
    let mut deleted: Vec<&str> = said
        .lines()
        .map(|line| {
            let (task, ago) = line.split_once("  expired ").unwrap_or((line, ""));
            assert!(ago.ends_with(" ago"), "{line}");
            task
        })
        .collect();
    deleted.sort_unstable();
    let mut expected: Vec<String> = [&running, &waiting, &finished]
        .iter()
        .map(|t| format!("deleted {}  {}", t.id, t.status))
        .collect();
    expected.sort_unstable();
    assert_eq!(deleted, expected, "{}", stderr(&out));
    assert!(!stdout(&out).contains(kept.id.as_str()));
    assert_eq!(
        stdout(&dry).lines().count(),
        3,
        "the dry run named as many: {}",
        stdout(&dry)
    );
    assert!(
        stderr(&out).contains("deleted 3 expired task(s)"),
        "{}",
        stderr(&out)
    );
    // Its reader gone after the first line (`sweep | head -1`), it goes on
    // to the end of its pass, and its status: more tasks than a sweep
    // removes before it reports them (1,024 at a time).
    let old = eventual(an_hour_ago(&dir));
    for _ in 0..1_100 {
        old.create(expiring()).unwrap();
    }
    drop(old);
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let status = taskstore(Some(&dir), &["sweep"])
        .stdout(writer)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        fs::read_dir(dir.join("active")).unwrap().count(),
        1,
        "only the task kept is left"
    );
}

/// A sweep whose reader takes none of its lines yet (`taskstore sweep |
/// less`, a pager not scrolled) still ends its pass: it deletes every
/// expired task and lets go of the store's batches lock, and its lines
/// wait for the reader. (Each line was written from inside the pass, which
/// holds the batches lock shared: with the pipe full, the sweep stopped in
/// the middle, and `verify` beside it waited for it and then judged its
/// half-done work.)
#[test]
fn a_sweep_whose_reader_is_slow_ends_its_pass_first() {
    let (_tmp, dir) = store_dir();
    let old = eventual(an_hour_ago(&dir));
    // More lines than a pipe holds (64 KiB), finished tasks with a TTL:
    // the sweep's batch path.
    let tasks = 3_000;
    for _ in 0..tasks {
        let task = old
            .create(NewTask::new().ttl(Duration::from_secs(60)))
            .unwrap();
        assert!(old.complete(&task.id, json!(1)).unwrap().is_applied());
    }
    drop(old);
    let mut sweep = taskstore(Some(&dir), &["sweep"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    common::wait_until("the pass to end while its reader takes nothing", || {
        fs::read_dir(dir.join("done")).unwrap().count() == 0
            && fs::read_dir(dir.join("expiring")).unwrap().count() == 0
    });
    // Read only now: what the pipe could not hold waited for the reader.
    let mut lines = String::new();
    std::io::Read::read_to_string(&mut sweep.stdout.take().unwrap(), &mut lines).unwrap();
    assert_eq!(sweep.wait().unwrap().code(), Some(0));
    assert_eq!(lines.lines().count(), tasks);
}

/// A sweep in a process that can start no thread (its user's limit of
/// processes reached: `prlimit --nproc=1`, as `nobody` when the tests run
/// as root, whom the limit does not hold) still lists each task it
/// deletes, writing the lines itself. (Starting the thread that writes
/// them panicked at each task, in the store's sink, which contained it: a
/// backtrace on stderr per task, no line on stdout, and exit status 0.)
#[test]
fn a_sweep_that_can_start_no_thread_still_lists_each_task_it_deletes() {
    require_prlimit();
    let (_tmp, dir) = store_dir();
    let old = gone_an_hour_ago(&dir);
    let mut expected: Vec<String> = (0..3)
        .map(|_| {
            let task = old
                .create(NewTask::new().ttl(Duration::from_secs(60)))
                .unwrap();
            format!("deleted {}  working", task.id)
        })
        .collect();
    expected.sort_unstable();
    drop(old);
    let out = run_as_owner_under(&dir, &["prlimit", "--nproc=1", "--"], &["sweep"]);
    let said = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(!said.contains("panicked"), "{said}");
    let listed = stdout(&out);
    let mut deleted: Vec<&str> = listed
        .lines()
        .map(|line| line.split_once("  expired ").map_or(line, |(task, _)| task))
        .collect();
    deleted.sort_unstable();
    assert_eq!(deleted, expected, "{said}");
}

/// A reap deletes the expired tasks it meets (running tasks whose lease
/// lapsed, as a sweep would): its dry run says which, and the reap says it
/// did. (Both were silent: the task was gone with no word.)
#[test]
fn reap_and_its_dry_run_tell_the_expired_tasks_it_deletes() {
    let (_tmp, dir) = store_dir();
    let old = gone_an_hour_ago(&dir);
    let expired = old
        .create(NewTask::new().ttl(Duration::from_secs(60)))
        .unwrap();
    let orphan = old.create(NewTask::new()).unwrap();
    drop(old);
    let preview = run_expect(Some(&dir), &["reap", "--dry-run"], 0);
    let said = stdout(&preview);
    assert!(
        said.contains(&format!("would reap {}", orphan.id)),
        "{said}"
    );
    assert!(
        said.contains(&format!("would delete {}", expired.id)),
        "{said}"
    );
    let reaped = run_expect(Some(&dir), &["reap"], 0);
    let said = stdout(&reaped);
    assert!(said.contains(&format!("reaped {}", orphan.id)), "{said}");
    assert!(said.contains(&format!("deleted {}", expired.id)), "{said}");
    assert!(open(&dir).get(&expired.id).unwrap().is_none());
}

/// `reap --dry-run` counts apart the orphans it would reap and those that
/// wait for a claim, as the real reap would treat them. (The summary
/// counted every orphan as one that would be reaped.)
#[test]
fn reap_dry_run_counts_what_would_be_reaped_apart_from_what_waits_for_a_claim() {
    let (_tmp, dir) = store_dir();
    let old = gone_an_hour_ago(&dir);
    old.create(NewTask::new()).unwrap();
    old.create(NewTask::new().resumable("report", json!({"q": 3})))
        .unwrap();
    drop(old);
    let out = run_expect(Some(&dir), &["reap", "--dry-run", "--claim-grace", "2h"], 0);
    assert!(
        stderr(&out).contains("2 orphan(s); 1 would be reaped, 1 left for a claim"),
        "{}",
        stderr(&out)
    );
}

/// A real sweep's `--json` line for each task it deletes is its dry run's
/// line, but for its outcome: the same fields (`status`, `expiredAt`), by
/// the same names. (The real sweep's lacked `expiredAt`: its task.expired
/// event carried no expiry.)
#[test]
fn a_sweep_prints_each_task_it_deletes_as_its_dry_run_does() {
    let (_tmp, dir) = store_dir();
    let old = gone_an_hour_ago(&dir);
    let running = old
        .create(NewTask::new().ttl(Duration::from_secs(60)))
        .unwrap();
    let finished = old
        .create(NewTask::new().ttl(Duration::from_secs(90)))
        .unwrap();
    assert!(old.complete(&finished.id, json!(1)).unwrap().is_applied());
    drop(old);
    let by_id = |out: &Output| -> BTreeMap<String, Value> {
        json_lines(out)
            .into_iter()
            .map(|line| (line["taskId"].as_str().unwrap().to_owned(), line))
            .collect()
    };
    let planned = by_id(&run_expect(
        Some(&dir),
        &["sweep", "--dry-run", "--json"],
        0,
    ));
    let deleted = by_id(&run_expect(Some(&dir), &["sweep", "--json"], 0));
    assert_eq!(planned.len(), 2, "{planned:#?}");
    let expected: BTreeMap<String, Value> = planned
        .into_iter()
        .map(|(id, line)| (id, done(line)))
        .collect();
    assert_eq!(deleted, expected);
    let expired_at = |task: &Task| {
        (task.created_at + task.ttl.unwrap())
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    assert_eq!(
        deleted[running.id.as_str()]["expiredAt"],
        expired_at(&running)
    );
    assert_eq!(
        deleted[finished.id.as_str()]["expiredAt"],
        expired_at(&finished)
    );
    assert_eq!(deleted[finished.id.as_str()]["status"], "completed");
}

/// A real reap's `--json` line for an expired task it deletes is its dry
/// run's line, but for its outcome: with its `status` and `expiredAt`.
/// (The real reap's said only `taskId`, `action` and `outcome`.)
#[test]
fn a_reap_prints_each_expired_task_it_deletes_as_its_dry_run_does() {
    let (_tmp, dir) = store_dir();
    let old = gone_an_hour_ago(&dir);
    let expired = old
        .create(NewTask::new().ttl(Duration::from_secs(60)))
        .unwrap();
    let orphan = old.create(NewTask::new()).unwrap();
    drop(old);
    let of = |out: &Output, id: &TaskId| -> Value {
        let lines: Vec<Value> = json_lines(out)
            .into_iter()
            .filter(|line| line["taskId"] == id.as_str())
            .collect();
        assert_eq!(lines.len(), 1, "{id}: {lines:#?}");
        lines[0].clone()
    };
    let planned = run_expect(Some(&dir), &["reap", "--dry-run", "--json"], 0);
    let reaped = run_expect(Some(&dir), &["reap", "--json"], 0);
    let line = of(&reaped, &expired.id);
    assert_eq!(line, done(of(&planned, &expired.id)));
    assert_eq!(
        (&line["action"], &line["status"]),
        (&json!("delete"), &json!("working"))
    );
    assert!(line["expiredAt"].is_string(), "{line}");
    assert_eq!(of(&reaped, &orphan.id)["action"], "reap");
}

/// A reap's dry run names an orphan's lease (`leaseExpiresAt`) as the
/// task itself writes it (`show --json`, `list --json`, the file), text
/// for text: nine fraction digits. A lease that lapsed at a whole second
/// was printed in `time`'s short form (`…:30Z`), which drops a fraction's
/// trailing zeros, and differed from the task's own `…:30.000000000Z`
/// (and so, by chance, whenever the lease's nanoseconds ended in a zero).
#[test]
fn a_reaps_dry_run_names_an_orphans_lease_as_the_task_writes_it() {
    let (_tmp, dir) = store_dir();
    let whole_second = (OffsetDateTime::now_utc() - time::Duration::hours(1))
        .replace_nanosecond(0)
        .unwrap();
    let old = FileStore::builder(&dir)
        .clock(Arc::new(ManualClock::new(whole_second)))
        .instance_id("gone")
        .open()
        .unwrap();
    let orphan = old.create(NewTask::new()).unwrap();
    drop(old);
    let own = serde_json::to_value(&orphan).unwrap()["leaseExpiresAt"].clone();
    assert!(
        own.as_str().is_some_and(|at| at.ends_with(".000000000Z")),
        "a lease at a whole second: {own}"
    );
    let out = run_expect(Some(&dir), &["reap", "--dry-run", "--json"], 0);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["taskId"], orphan.id.as_str());
    assert_eq!(
        lines[0]["leaseExpiresAt"], own,
        "the dry run's lease is not the task's own text"
    );
    let shown: Value = serde_json::from_str(&stdout(&run_expect(
        Some(&dir),
        &["show", orphan.id.as_str(), "--json"],
        0,
    )))
    .unwrap();
    assert_eq!(lines[0]["leaseExpiresAt"], shown["leaseExpiresAt"]);
}

/// A `reap` killed (`SIGKILL`) in the middle of its batch of terminal
/// moves leaves tasks whose failed version is written in `active/` (and
/// linked into `done/`) but not yet unlinked from `active/`: moves the
/// store finishes itself (its next sweep, or any write of the task), and
/// that every read already sees final. `verify` lists them as unfinished,
/// counts them, and passes (exit 0, as for a healthy store); nothing is
/// lost, and after a sweep the store is clean. (Each was a problem:
/// `verify` exited 1 until `repair --apply`.)
#[test]
fn a_killed_reap_leaves_moves_the_store_finishes_and_verify_passes() {
    let (_tmp, dir) = store_dir();
    let store = eventual(an_hour_ago(&dir).instance_id("gone"));
    let ids: Vec<TaskId> = (0..3_000)
        .map(|_| store.create(NewTask::new()).unwrap().id)
        .collect();
    drop(store);
    let mut reap = taskstore(Some(&dir), &["reap"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed once its batch has linked a few hundred tasks into done/: the
    // moves in flight are between their halves.
    let done = dir.join("done");
    wait_until("the reap's first moves", || {
        fs::read_dir(&done).unwrap().count() >= 300 || reap.try_wait().unwrap().is_some()
    });
    reap.kill().unwrap();
    reap.wait().unwrap();
    let out = run_expect(Some(&dir), &["verify", "--json"], 0);
    let findings = json_lines(&out);
    let unfinished: Vec<&Value> = findings
        .iter()
        .filter(|f| f["problem"] == "interrupted_move")
        .collect();
    assert!(!unfinished.is_empty(), "killed too late: {findings:#?}");
    assert!(
        unfinished.iter().all(|f| f["severity"] == "unfinished"),
        "{findings:#?}"
    );
    let out = run_expect(Some(&dir), &["verify"], 0);
    assert!(
        stderr(&out).contains(&format!("{} unfinished move(s)", unfinished.len())),
        "{}",
        stderr(&out)
    );
    // Nothing lost: every task reads, running or failed.
    let store = open(&dir);
    for id in &ids {
        let task = store.get(id).unwrap().expect("every task still there");
        assert!(
            matches!(task.status, TaskStatus::Working | TaskStatus::Failed),
            "{task:?}"
        );
    }
    drop(store);
    // The store's own pass finishes them.
    run_expect(Some(&dir), &["sweep"], 0);
    let out = run_expect(Some(&dir), &["verify"], 0);
    assert_eq!(stdout(&out), "", "{}", stderr(&out));
}
