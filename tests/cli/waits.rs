//! The command beside work under way: batches between their halves, an open
//! holding the store alone, a process stopped holding stripes; what it says
//! while it waits and how long it waits.

use super::*;

/// A task of a new store at `dir` in the middle of a batch of another
/// process, as a reap leaves it between its halves: the terminal version
/// written over its file in `active/`, then its name in `done/`, with the
/// batches lock held shared (the file returned holds it). The batch's
/// second half removes the name in `active/` (the path returned), then
/// lets the lock go.
fn a_batch_between_its_halves(dir: &Path) -> (TaskId, PathBuf, fs::File) {
    let store = open(dir);
    let id = store.create(NewTask::new()).unwrap().id;
    let mut failed = store.get(&id).unwrap().unwrap();
    drop(store);
    failed.status = TaskStatus::Failed;
    failed.error = Some(json!({"code": -1, "message": "orphaned"}));
    failed.revision += 1;
    let active = task_path(dir, "active", &id);
    let file: Value = serde_json::from_slice(&fs::read(&active).unwrap()).unwrap();
    let mut file = file.as_object().unwrap().clone();
    file.insert("task".into(), serde_json::to_value(&failed).unwrap());
    fs::write(&active, serde_json::to_vec(&file).unwrap()).unwrap();
    fs::hard_link(&active, task_path(dir, "done", &id)).unwrap();
    let lock = common::open_lock_file(&common::batches_lock(dir));
    lock.lock_shared().unwrap();
    (id, active, lock)
}

/// A batch of another process between its halves (a reap's terminal move,
/// the task's names in both areas, held here by hand with the batches lock
/// held shared, as a batch holds it): `verify --wait 0s` reports the move,
/// says a batch was under way (of the move alone, not of a corrupt file
/// beside it), and exits 0 (the move is one the store finishes itself:
/// `unfinished`); `repair --apply --wait 0s` says so too, leaves the move
/// to the batch, and exits 0 as well; once the batch has ended, `verify`
/// finds nothing. (The
/// waiting itself: `paused_races::verify_beside_a_batch_between_its_halves_waits_for_it`.)
#[test]
fn verify_says_when_batches_were_under_way() {
    let (_tmp, dir) = store_dir();
    let (id, active, lock) = a_batch_between_its_halves(&dir);

    // A move the store finishes itself: listed, and passing.
    let out = run_expect(Some(&dir), &["verify", "--wait", "0s"], 0);
    assert!(
        stdout(&out).contains("interrupted"),
        "the move is seen: {}",
        stdout(&out)
    );
    // A problem no batch makes is not said to be under way.
    let garbage = dir.join("done").join("garbage.json");
    fs::write(&garbage, b"{ not json").unwrap();
    chmod(&garbage, 0o600);
    let json = run_expect(Some(&dir), &["verify", "--json", "--wait", "0s"], 1);
    let under_way: Vec<(String, bool)> = json_lines(&json)
        .iter()
        .map(|p| {
            let problem = p["problem"].as_str().unwrap().to_owned();
            (problem, p["underWay"].as_bool().unwrap())
        })
        .collect();
    assert_eq!(
        under_way,
        [
            ("interrupted_move".to_owned(), true),
            ("corrupt".to_owned(), false)
        ],
        "{}",
        stdout(&json)
    );
    fs::remove_file(&garbage).unwrap();
    assert!(
        stderr(&out).contains("still under way"),
        "and said to be a batch's: {}",
        stderr(&out)
    );
    // It exits 0: what it left for the batch is a move the store finishes
    // itself (`repair --apply && start` may start).
    let out = run_expect(Some(&dir), &["repair", "--apply", "--wait", "0s"], 0);
    assert!(stderr(&out).contains("still under way"), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("skipped") && active.exists(),
        "a move a batch may be making is not finished for it: {}",
        stdout(&out)
    );
    // The batch's second half, then its end.
    fs::remove_file(&active).unwrap();
    lock.unlock().unwrap();
    let out = run_expect(Some(&dir), &["verify"], 0);
    assert_eq!(stdout(&out), "");
    assert!(!stderr(&out).contains("under way"), "{}", stderr(&out));
    // And with the batch over, `--json` says so of a problem.
    chmod(&task_path(&dir, "done", &id), 0o644);
    let json = run_expect(Some(&dir), &["verify", "--json"], 1);
    assert_eq!(json_lines(&json)[0]["underWay"], false);
}

/// `verify` and `repair`, meeting what may be a batch of another process
/// between its halves, say on stderr that they wait for the batches under
/// way when the wait starts, and how long they wait at most; once the
/// batch ends they judge what it left (nothing). (They were silent for up
/// to `--wait`, and said so only once it ran out.)
#[test]
fn verify_and_repair_say_when_they_start_waiting_for_batches() {
    for args in [
        &["verify", "--wait", "5m"][..],
        &["repair", "--apply", "--wait", "5m"],
    ] {
        let (_tmp, dir) = store_dir();
        let (_, active, lock) = a_batch_between_its_halves(&dir);
        let mut child = taskstore(Some(&dir), args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut said = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut first = String::new();
        std::io::BufRead::read_line(&mut said, &mut first).unwrap();
        assert!(
            first.starts_with(
                "taskstore: waiting up to 5m for another process's batches or check under way"
            ) && first.contains(&common::batches_lock(&dir).display().to_string()),
            "{args:?}: {first}"
        );
        // The batch's second half, then its end: the wait ends with it.
        fs::remove_file(&active).unwrap();
        lock.unlock().unwrap();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut said, &mut rest).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {first}{rest}");
        assert_eq!(stdout(&out), "", "{args:?}: nothing to report");
        assert!(!rest.contains("still under way"), "{args:?}: {rest}");
    }
}

/// `verify` and `repair` meeting an open that holds the store alone (one
/// stopped in the middle of compacting it) wait at most `--wait`, then
/// fail naming the lock file and why (they waited for ever, printing
/// nothing); once it is let go they check the store.
#[test]
fn a_check_waits_for_an_open_holding_the_store_alone_only_its_wait() {
    let (_tmp, dir) = store_dir();
    store_with_tasks(&dir);
    let lock = dir.join("locks").join("handles.lock");
    let held = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&lock)
        .unwrap();
    held.lock().unwrap();
    for args in [
        &["verify", "--wait", "100ms"][..],
        &["repair", "--wait", "100ms"],
    ] {
        let out = run_expect(Some(&dir), args, 1);
        let said = stderr(&out);
        assert!(
            said.contains(&lock.display().to_string()) && said.contains("holds it alone"),
            "{args:?}: {said}"
        );
    }
    held.unlock().unwrap();
    run_expect(Some(&dir), &["verify", "--wait", "100ms"], 0);
    // A command that waits says so when it starts (it waited in silence,
    // up to 30 s), and goes on once the store is let go: `list` over a
    // handle, `stats` over a check.
    for args in [&["list"][..], &["stats"]] {
        held.lock().unwrap();
        let mut waiting = taskstore(Some(&dir), args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let said = following_stderr(waiting.stderr.take().unwrap());
        let first = said();
        assert!(
            first.contains("waiting up to 30s") && first.contains(&lock.display().to_string()),
            "{args:?}: {first}"
        );
        held.unlock().unwrap();
        assert_eq!(waiting.wait().unwrap().code(), Some(0), "{args:?}");
    }
}

/// [`following`], for a child's stderr.
fn following_stderr(err: std::process::ChildStderr) -> impl Fn() -> String {
    lines_of(err)
}

/// `verify --wait` bounds its waits for task locks too, and waits it once
/// however many locks a stopped process holds: beside a process stopped
/// holding two stripes, each with a stale `expiring/` entry to judge (a
/// sweep stopped before its end leaves them), `verify --wait 1s` reports
/// both locks as problems having given up one wait (each wait given up
/// leaves its thread behind, counted while the command runs). (It waited
/// a fixed 30 s for each lock, whatever `--wait` said: a minute.)
#[cfg(target_os = "linux")]
#[test]
fn verify_beside_a_process_stopped_holding_two_stripes_waits_once() {
    let test = "waits::verify_beside_a_process_stopped_holding_two_stripes_waits_once";
    common::hold_locks_if_the_holder();
    let (tmp, dir) = store_dir();
    let clock = ManualClock::new(OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap());
    let store = FileStore::builder(&dir)
        .clock(Arc::new(clock.clone()))
        .open()
        .unwrap();
    let ids = [common::id_in_stripe("x", 10), common::id_in_stripe("y", 50)];
    for id in &ids {
        store
            .create(NewTask::new().id(id.clone()).ttl(Duration::from_secs(3600)))
            .unwrap();
        assert!(store.complete(id, json!(1)).unwrap().is_applied());
        // Removed by a sweep stopped before it removed the entries.
        fs::remove_file(dir.join("done").join(format!("{id}.json"))).unwrap();
    }
    drop(store);
    let locks: Vec<PathBuf> = ids
        .iter()
        .map(|id| common::stripe_lock(&dir, id.as_str()))
        .collect();
    let holder = common::stopped_holder(test, tmp.path(), &locks);
    let mut verify = taskstore(Some(&dir), &["verify", "--wait", "1s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut waits = 0;
    wait_until("verify to end", || {
        waits = waits.max(common::stripe_waits_of(verify.id()));
        verify.try_wait().unwrap().is_some()
    });
    assert!(common::is_stopped(holder.child.id()));
    holder.kill();
    let out = verify.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    for lock in &locks {
        let lock = lock.file_name().unwrap().to_str().unwrap();
        assert!(stdout(&out).contains(lock), "{lock}: {}", stdout(&out));
    }
    assert_eq!(waits, 1, "stripe waits given up");
}
