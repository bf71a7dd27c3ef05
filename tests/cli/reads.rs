//! `stats`, `list` and `show` against the API: the same counts and listings,
//! foreign names told from unreadable task files, pages and cursors, stale copies.

use super::*;

// ---------------------------------------------------------------------------
// stats, list, show: against the API

/// A store with a known history: finished tasks that took 1 s to 10 s (a
/// third of them with a day's TTL, so linked into `expiring/`), one expired
/// task, one orphan (its lease lapsed an hour ago), owners A and B.
fn store_with_history(dir: &Path) -> ManualClock {
    let start = OffsetDateTime::now_utc() - time::Duration::hours(2);
    let clock = ManualClock::new(start);
    let handle = |owner: &str| {
        FileStore::builder(dir)
            .instance_id(owner)
            .clock(Arc::new(clock.clone()))
            .open()
            .unwrap()
    };
    let (a, b) = (handle("A"), handle("B"));
    for i in 1..=10u64 {
        let store = if i.is_multiple_of(2) { &a } else { &b };
        let new = if i.is_multiple_of(3) {
            NewTask::new().ttl(Duration::from_secs(86_400))
        } else {
            NewTask::new()
        };
        let t = store.create(new).unwrap();
        clock.advance(Duration::from_secs(i));
        let finished = if i.is_multiple_of(4) {
            store.fail(&t.id, json!("no"))
        } else {
            store.complete(&t.id, json!(i))
        };
        assert!(finished.unwrap().is_applied());
    }
    // Expired by now (1 min TTL, two hours ago).
    a.create(NewTask::new().ttl(Duration::from_secs(60)))
        .unwrap();
    // An orphan: its 30 s lease lapsed long ago.
    b.create(NewTask::new().status_message("abandoned"))
        .unwrap();
    clock.advance(Duration::from_secs(30 * 60));
    a.create(NewTask::new().status_message("older")).unwrap();
    clock
}

#[test]
fn stats_agree_with_the_api() {
    let (_tmp, dir) = store_dir();
    store_with_history(&dir);
    // A live handle keeps renewing one task: running, not an orphan.
    let live = open(&dir);
    let fresh = live.create(NewTask::new()).unwrap();

    let before = snapshot(&dir);
    let out = run_expect(Some(&dir), &["stats", "--json"], 0);
    assert_unchanged(&before, &snapshot(&dir), "stats changes nothing");
    let stats: Value = serde_json::from_str(&stdout(&out)).unwrap();

    let api = open(&dir);
    let now = OffsetDateTime::now_utc();
    // What the store holds, as stats read it: a listing would delete the
    // expired task it met.
    let all: Vec<Task> = api
        .stored()
        .unwrap()
        .tasks
        .into_iter()
        .filter(|t| !t.is_expired_at(now))
        .collect();
    assert_eq!(stats["tasks"], all.len());
    for status in [
        "working",
        "input_required",
        "completed",
        "failed",
        "cancelled",
    ] {
        let n = all
            .iter()
            .filter(|t| t.status.to_string() == status)
            .count();
        assert_eq!(stats["byStatus"][status], n, "{status}");
    }
    assert_eq!(stats["expiredUnswept"], 1);
    assert_eq!(
        stats["active"],
        all.iter().filter(|t| !t.is_terminal()).count()
    );
    let orphans: Vec<&Task> = all.iter().filter(|t| t.is_orphan_at(now)).collect();
    assert_eq!(orphans.len(), 2, "the abandoned task and the older one");
    assert_eq!(stats["orphans"], orphans.len());
    let oldest = all
        .iter()
        .filter(|t| !t.is_terminal())
        .min_by_key(|t| t.created_at)
        .unwrap();
    assert_eq!(stats["oldestActive"]["taskId"], oldest.id.as_str());
    // Finished tasks took 1 s .. 10 s: nearest-rank p50 is 5 s, p95 10 s.
    assert_eq!(stats["finished"], 10);
    assert_eq!(
        stats["finishMs"],
        json!({"p50": 5_000, "p95": 10_000, "max": 10_000})
    );
    assert_eq!(stats["successRate"], json!(0.8));
    let files = fs::read_dir(dir.join("active")).unwrap().count()
        + fs::read_dir(dir.join("done")).unwrap().count();
    assert_eq!(stats["disk"]["taskFiles"], files);
    assert_eq!(stats["disk"]["quarantined"], 0);
    // On disk: the blocks allocated, each inode once, as du counts them
    // (the expiring/ entries are other names of task files)...
    let du = Command::new("du")
        .args(["-s", "--block-size=1"])
        .arg(&dir)
        .output()
        .expect("run du");
    assert!(du.status.success(), "{}", stderr(&du));
    let du: u64 = stdout(&du)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("du's first field");
    assert_eq!(fs::read_dir(dir.join("expiring")).unwrap().count(), 3);
    assert_eq!(stats["disk"]["allocatedBytes"], du, "{stats:#}");
    // ... and the files' sizes, which for small tasks are far less.
    let mut sizes = fs::metadata(dir.join("taskstore.json")).unwrap().len();
    for sub in ["active", "done", "tmp", "quarantine"] {
        for entry in fs::read_dir(dir.join(sub)).unwrap() {
            sizes += entry.unwrap().metadata().unwrap().len();
        }
    }
    assert_eq!(stats["disk"]["fileBytes"], sizes, "{stats:#}");
    assert!(du > sizes, "du {du}, sizes {sizes}");
    drop(fresh);

    let text = run_expect(Some(&dir), &["stats"], 0);
    assert!(
        stdout(&text).contains("success rate    80.0%"),
        "{}",
        stdout(&text)
    );
    let on_disk = stdout(&text)
        .lines()
        .find(|l| l.starts_with("on disk"))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(
        on_disk.contains(" allocated (") && on_disk.contains(" in files: "),
        "{}",
        stdout(&text)
    );
}

/// `stats` tells a name that is no task file's (a stray file, a
/// directory) from a task file it cannot read: the first are `foreign`,
/// outside the task files' count and bytes, the second `unreadable`.
/// (Every name in `active/` or `done/` counted as a task file, and a
/// foreign one as an unreadable task file.)
#[test]
fn stats_tell_foreign_names_from_unreadable_task_files() {
    let (_tmp, dir) = store_dir();
    let tasks = store_with_tasks(&dir);
    let corrupt = task_path(&dir, "active", &first(&tasks, TaskStatus::Working).id);
    fs::write(&corrupt, b"{ not json").unwrap();
    fs::write(dir.join("active").join("notes.txt"), b"twelve bytes").unwrap();
    fs::create_dir(dir.join("done").join("backup")).unwrap();
    let out = run_expect(Some(&dir), &["stats", "--json"], 0);
    let stats: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(stats["unreadable"], 1, "{stats:#}");
    assert_eq!(stats["foreign"], 2, "{stats:#}");
    let task_files = fs::read_dir(dir.join("active")).unwrap().count()
        + fs::read_dir(dir.join("done")).unwrap().count()
        - 2;
    assert_eq!(stats["disk"]["taskFiles"], task_files, "{stats:#}");
    let text = stdout(&run_expect(Some(&dir), &["stats"], 0));
    assert!(text.contains("unreadable      1 task files"), "{text}");
    assert!(text.contains("foreign         2 names"), "{text}");
    // The dry runs name both on stderr (and what the real passes do with
    // each).
    for command in ["sweep", "reap"] {
        let out = run_expect(Some(&dir), &[command, "--dry-run"], 0);
        for name in ["notes.txt", "backup"] {
            assert!(stderr(&out).contains(name), "{command}: {}", stderr(&out));
        }
    }
}

#[test]
fn list_json_is_the_api_listing() {
    let (_tmp, dir) = store_dir();
    store_with_history(&dir);
    let api = open(&dir);
    let parse = |out: &Output| -> Vec<Task> {
        json_lines(out)
            .into_iter()
            .map(|v| serde_json::from_value(v).unwrap())
            .collect()
    };
    let all = api.list(&ListQuery::all()).unwrap().tasks;
    assert_eq!(parse(&run_expect(Some(&dir), &["list", "--json"], 0)), all);
    assert_eq!(
        parse(&run_expect(Some(&dir), &["list", "--json", "--active"], 0)),
        api.list(&ListQuery::active()).unwrap().tasks
    );
    assert_eq!(
        parse(&run_expect(
            Some(&dir),
            &["list", "--json", "--status", "failed"],
            0
        )),
        api.list(&ListQuery::all().status(TaskStatus::Failed))
            .unwrap()
            .tasks
    );
    let owned_by_a: Vec<Task> = all
        .iter()
        .filter(|t| t.owner.as_deref() == Some("A"))
        .cloned()
        .collect();
    assert_eq!(
        parse(&run_expect(
            Some(&dir),
            &["list", "--json", "--owner", "A"],
            0
        )),
        owned_by_a
    );
    let old: Vec<Task> = all
        .iter()
        .filter(|t| OffsetDateTime::now_utc() - t.created_at >= time::Duration::minutes(100))
        .cloned()
        .collect();
    assert_eq!(
        parse(&run_expect(
            Some(&dir),
            &["list", "--json", "--older-than", "100m"],
            0
        )),
        old
    );
    assert!(old.len() < all.len(), "the youngest task is younger");

    // Pages: the cursor goes to stderr, and the pages join up.
    for filter in [&[][..], &["--owner", "B"]] {
        let mut joined = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut args = vec!["list", "--json", "--limit", "3"];
            args.extend_from_slice(filter);
            if let Some(a) = &after {
                args.extend_from_slice(&["--after", a]);
            }
            let out = run_expect(Some(&dir), &args, 0);
            let page = parse(&out);
            assert!(page.len() <= 3);
            joined.extend(page);
            after = stderr(&out)
                .lines()
                .find_map(|l| l.strip_prefix("next cursor: "))
                .map(str::to_owned);
            if after.is_none() {
                break;
            }
        }
        let expected: Vec<Task> = all
            .iter()
            .filter(|t| filter.is_empty() || t.owner.as_deref() == Some("B"))
            .cloned()
            .collect();
        assert_eq!(joined, expected, "{filter:?}");
    }

    // The table has a header and a row per task.
    let table = stdout(&run_expect(Some(&dir), &["list"], 0));
    assert!(table.starts_with("ID"), "{table}");
    assert_eq!(table.lines().count(), all.len() + 1);

    // show: the task as JSON.
    let task = &all[0];
    let shown: Task = serde_json::from_str(&stdout(&run_expect(
        Some(&dir),
        &["show", task.id.as_str()],
        0,
    )))
    .unwrap();
    assert_eq!(&shown, task);
    let missing = run_expect(Some(&dir), &["show", "no-such-task"], 1);
    assert!(
        stderr(&missing).contains("no-such-task"),
        "{}",
        stderr(&missing)
    );
}

/// `stats` reads each task as a reader gets it: a stale running copy left
/// in `active/` beside the terminal one in `done/` counts as the finished
/// task the API returns, not as a running one. (With the read rule turned
/// round, the census kept the stale copy.)
#[test]
fn stats_count_a_task_with_a_stale_copy_as_the_api_reads_it() {
    let (_tmp, dir) = store_dir();
    let store = open(&dir);
    let task = store.create(NewTask::new()).unwrap();
    let running = fs::read(task_path(&dir, "active", &task.id)).unwrap();
    assert!(store.complete(&task.id, json!(1)).unwrap().is_applied());
    drop(store);
    let path = task_path(&dir, "active", &task.id);
    fs::write(&path, running).unwrap();
    chmod(&path, 0o600);
    let out = run_expect(Some(&dir), &["stats", "--json"], 0);
    let stats: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        (
            stats["active"].clone(),
            stats["byStatus"]["completed"].clone()
        ),
        (json!(0), json!(1)),
        "{stats:#}"
    );
}

/// `list --json --next-cursor` ends each page with a line of its own,
/// `{"nextCursor": …}`, which `--after` takes, or null after the last
/// page; every other line is a task. The cursor is still said on stderr,
/// for people. Without `--next-cursor` every line is a task, as scripts
/// that read them so expect (`list_json_is_the_api_listing`); without
/// `--json` it is a usage error. (The cursor was on stderr alone.)
#[test]
fn list_json_ends_a_page_with_its_next_cursor_when_asked() {
    let (_tmp, dir) = store_dir();
    let tasks = store_with_tasks(&dir);
    let mut listed: Vec<TaskId> = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut args = vec!["list", "--json", "--limit", "3", "--next-cursor"];
        if let Some(cursor) = &after {
            args.extend(["--after", cursor.as_str()]);
        }
        let out = run_expect(Some(&dir), &args, 0);
        pages += 1;
        let mut lines = json_lines(&out);
        let last = lines.pop().expect("a last line");
        assert_eq!(last.as_object().map(|o| o.len()), Some(1), "{last}");
        let cursor = match &last["nextCursor"] {
            Value::String(cursor) => Some(cursor.clone()),
            Value::Null => None,
            other => panic!("{other}"),
        };
        for line in lines {
            let task: Task = serde_json::from_value(line).unwrap();
            listed.push(task.id);
        }
        match &cursor {
            Some(cursor) => assert!(
                stderr(&out).contains(&format!("next cursor: {cursor}")),
                "{}",
                stderr(&out)
            ),
            None => assert!(!stderr(&out).contains("next cursor"), "{}", stderr(&out)),
        }
        after = cursor;
        if after.is_none() {
            break;
        }
        assert!(pages < 10, "the pages never end");
    }
    let api: Vec<TaskId> = open(&dir)
        .list(&ListQuery::all())
        .unwrap()
        .tasks
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(listed, api);
    assert_eq!(listed.len(), tasks.len());
    assert!(pages >= 3, "{pages} pages of 3 for {} tasks", tasks.len());
    // Without it, tasks alone; without --json, a usage error.
    let out = run_expect(Some(&dir), &["list", "--json", "--limit", "3"], 0);
    assert!(
        json_lines(&out)
            .iter()
            .all(|line| line.get("taskId").is_some())
    );
    assert!(stderr(&out).contains("next cursor: "), "{}", stderr(&out));
    run_expect(Some(&dir), &["list", "--limit", "3", "--next-cursor"], 2);
}
