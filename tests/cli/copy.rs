//! `copy`: every live task of a store into another, run as a user runs
//! it, checked against what the library reads in both stores.

use super::*;

/// A file store at `dir` with every kind of task: those of
/// [`store_with_tasks`] (running, waiting for input, completed, failed,
/// cancelled, owned by a live handle), and, by an instance gone an hour
/// ago, a resumable task with a checkpoint and a plain one (orphans now),
/// and a task expired since. Returns the live tasks, and the expired one.
fn every_kind(dir: &Path) -> (Vec<Task>, Task) {
    let mut tasks = store_with_tasks(dir);
    let gone = gone_an_hour_ago(dir);
    let resumable = gone
        .create(NewTask::new().resumable("convert", json!({"file": "a.pdf"})))
        .unwrap();
    let checkpointed = gone
        .update(
            &resumable.id,
            TaskUpdate::new().checkpoint(json!({"page": 3})),
        )
        .unwrap();
    tasks.push(checkpointed.into_task());
    tasks.push(gone.create(NewTask::new().metadata("n", 9)).unwrap());
    let expired = gone
        .create(NewTask::new().ttl(Duration::from_secs(60)))
        .unwrap();
    (tasks, expired)
}

/// Each of `tasks` reads back from `store` exactly (`==`), by `get` and in
/// the listing, and the listing holds nothing else.
fn holds_exactly(store: &dyn TaskStore, tasks: &[Task]) {
    for task in tasks {
        assert_eq!(store.get(&task.id).unwrap().as_ref(), Some(task));
    }
    let mut listed = store.list(&ListQuery::all()).unwrap().tasks;
    listed.sort_by(|a, b| a.id.cmp(&b.id));
    let mut expected = tasks.to_vec();
    expected.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(listed, expected);
}

/// The ids of the lines of a `--json` output that say `action` was done,
/// sorted.
fn ids_done(out: &Output, action: &str) -> Vec<String> {
    let mut ids: Vec<String> = json_lines(out)
        .into_iter()
        .filter(|line| line["action"] == action && line["outcome"] == "done")
        .map(|line| line["taskId"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn sorted_ids(tasks: &[Task]) -> Vec<String> {
    let mut ids: Vec<String> = tasks.iter().map(|t| t.id.to_string()).collect();
    ids.sort();
    ids
}

/// `copy` from a file store into a new one copies every live task exactly
/// and leaves the expired one out; run again it copies nothing and passes;
/// the destination checks clean; and a reap of the destination fails the
/// orphans the source's reap fails.
#[test]
fn copy_moves_every_live_task_into_another_file_store_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (from, to) = (tmp.path().join("from"), tmp.path().join("to"));
    let (tasks, expired) = every_kind(&from);
    let to_arg = to.to_str().unwrap();
    let args = ["copy", "--to-store", to_arg, "--create", "--json"];
    let out = run_expect(Some(&from), &args, 0);
    assert_eq!(
        ids_done(&out, "copy"),
        sorted_ids(&tasks),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("1 expired (left out)"),
        "{}",
        stderr(&out)
    );
    holds_exactly(&open(&to), &tasks);
    assert_eq!(open(&to).get(&expired.id).unwrap(), None);
    run_expect(Some(&to), &["verify"], 0);
    // Run again: nothing to copy, every task counted as there.
    let again = run_expect(Some(&from), &args, 0);
    assert_eq!(stdout(&again), "");
    let there = format!("copied 0 task(s); {} already there", tasks.len());
    assert!(stderr(&again).contains(&there), "{}", stderr(&again));
    // The orphans of the instance gone an hour ago are reaped here as in
    // the source (the resumable one too: its claim grace is long past).
    let reaped = |store: &Path| ids_done(&run_expect(Some(store), &["reap", "--json"], 0), "reap");
    let here = reaped(&to);
    for gone in tasks.iter().filter(|t| t.owner.as_deref() == Some("gone")) {
        assert!(here.contains(&gone.id.to_string()), "{here:?}");
    }
    assert_eq!(here, reaped(&from));
}

/// A task the destination holds under the same id, different, is named
/// and left as it is, and the command fails; a destination whose cap on
/// running tasks is reached names each running task it refused, copies
/// the rest, and fails.
#[test]
fn copy_names_what_differs_or_is_refused_and_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let (from, to) = (tmp.path().join("from"), tmp.path().join("to"));
    let (tasks, _) = every_kind(&from);
    let id = tasks[0].id.clone();
    let theirs = open(&to)
        .create(
            NewTask::new()
                .id(id.clone())
                .metadata("side", "destination"),
        )
        .unwrap();
    let to_arg = to.to_str().unwrap();
    let out = run_expect(Some(&from), &["copy", "--to-store", to_arg], 1);
    let line = format!(
        "not copied {id}: the destination holds a different task under this id; left as it is"
    );
    assert!(stdout(&out).lines().any(|l| l == line), "{}", stdout(&out));
    assert!(stderr(&out).contains("1 differ"), "{}", stderr(&out));
    assert_eq!(open(&to).get(&id).unwrap(), Some(theirs));
    // At most one running task in a new destination: every other is named.
    let capped = tmp.path().join("capped");
    let capped_arg = capped.to_str().unwrap();
    let args = [
        "copy",
        "--to-store",
        capped_arg,
        "--create",
        "--max-active",
        "1",
        "--json",
    ];
    let out = run_expect(Some(&from), &args, 1);
    let refused = json_lines(&out)
        .into_iter()
        .filter(|line| line["outcome"] == "failed")
        .inspect(|line| {
            let error = line["error"].as_str().unwrap();
            let id = line["taskId"].as_str().unwrap();
            assert_eq!(
                error,
                format!("cannot copy task {id}: 1 active tasks is the configured maximum"),
                "{line}"
            );
        })
        .count();
    let running = tasks.iter().filter(|t| !t.is_terminal()).count();
    assert_eq!(refused, running - 1, "{}", stdout(&out));
    let finished: Vec<Task> = tasks.iter().filter(|t| t.is_terminal()).cloned().collect();
    let held = open(&capped).list(&ListQuery::all()).unwrap().tasks;
    assert_eq!(held.len(), finished.len() + 1);
    for task in &finished {
        assert_eq!(open(&capped).get(&task.id).unwrap().as_ref(), Some(task));
    }
}

/// A destination that is no store is refused unless `--create`; no
/// destination, or two, is a usage error.
#[test]
fn copy_needs_one_destination_that_is_a_store() {
    let tmp = tempfile::tempdir().unwrap();
    let from = tmp.path().join("from");
    store_with_tasks(&from);
    let missing = tmp.path().join("missing");
    let out = run_expect(
        Some(&from),
        &["copy", "--to-store", missing.to_str().unwrap()],
        1,
    );
    assert!(stderr(&out).contains("no store at"), "{}", stderr(&out));
    assert!(!missing.exists());
    let out = run_expect(Some(&from), &["copy"], 2);
    assert!(stderr(&out).contains("no destination"), "{}", stderr(&out));
}

/// An error of the destination's (it is no store, it cannot be made, its
/// server cannot be reached or has no store in the schema) says it is the
/// destination's, naming its flag; one of the source's does not. (Each
/// named a path or a server alone, and the operator could not tell which
/// side failed.)
#[test]
fn copy_says_when_the_destination_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let from = tmp.path().join("from");
    store_with_tasks(&from);
    let to = tmp.path().join("to");
    open(&to);
    let missing = tmp.path().join("missing");
    let a_file = tmp.path().join("a-file");
    fs::write(&a_file, "x").unwrap();
    let under_a_file = a_file.join("store");
    for (args, path) in [
        (vec!["--to-store", missing.to_str().unwrap()], &missing),
        (
            vec!["--to-store", under_a_file.to_str().unwrap(), "--create"],
            &under_a_file,
        ),
    ] {
        let mut all = vec!["copy"];
        all.extend(&args);
        let out = run_expect(Some(&from), &all, 1);
        let said = stderr(&out);
        assert!(
            said.contains("taskstore: error: destination (--to-store): ")
                && said.contains(path.to_str().unwrap()),
            "{args:?}: {said}"
        );
        assert_eq!(stdout(&out), "", "{args:?}");
    }
    // The source's own error is not the destination's.
    let out = run_expect(
        Some(&missing),
        &["copy", "--to-store", to.to_str().unwrap()],
        1,
    );
    let said = stderr(&out);
    assert!(
        said.contains(&format!("no store at {}", missing.display()))
            && !said.contains("destination"),
        "{said}"
    );
    #[cfg(feature = "postgres")]
    {
        let nowhere = "host=/nonexistent user=app password=s3cret-pw";
        let out = run_expect(Some(&from), &["copy", "--to-pg", nowhere], 1);
        let said = stderr(&out);
        assert!(
            said.contains("destination (--to-pg): postgres backend failed to connect")
                && said.contains("host /nonexistent")
                && !said.contains("s3cret-pw"),
            "{said}"
        );
        let out = run_expect(
            None,
            &["--pg", nowhere, "copy", "--to-store", to.to_str().unwrap()],
            1,
        );
        let said = stderr(&out);
        assert!(
            said.contains("postgres backend failed to connect") && !said.contains("destination"),
            "{said}"
        );
    }
}

/// Over PostgreSQL: a destination schema that holds no store (copied into
/// without `--create`) is the destination's error, naming its flag.
#[cfg(feature = "postgres")]
#[test]
fn copy_says_when_the_destination_schema_holds_no_store() {
    let Some(cluster) = pg_cluster::shared() else {
        return; // skipped, said once (TASKSTORE_REQUIRE_PG=1 fails instead)
    };
    let tmp = tempfile::tempdir().unwrap();
    let from = tmp.path().join("from");
    store_with_tasks(&from);
    let schema = pg_cluster::fresh_schema("copy_none");
    let conninfo = cluster.conninfo();
    let out = run_expect(
        Some(&from),
        &["copy", "--to-pg", &conninfo, "--to-pg-schema", &schema],
        1,
    );
    let said = stderr(&out);
    assert!(
        said.contains(&format!(
            "destination (--to-pg): no store in postgres schema {schema} at host "
        )),
        "{said}"
    );
    assert_eq!(stdout(&out), "");
}

/// An error of the source's as a whole (it is no store, its server cannot
/// be reached or has no store in the schema) says it is the source's,
/// naming its flag, as the destination's say theirs; the destination is
/// left as it was. (Each named a path or a server alone.)
#[test]
fn copy_says_when_the_source_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let to = tmp.path().join("to");
    drop(open(&to));
    let before = snapshot(&to);
    let missing = tmp.path().join("missing");
    let a_file = tmp.path().join("a-file");
    fs::write(&a_file, "x").unwrap();
    for (from, why) in [(&missing, "no store at"), (&a_file, "not a directory")] {
        let out = run_expect(Some(from), &["copy", "--to-store", to.to_str().unwrap()], 1);
        let said = stderr(&out);
        assert!(
            said.contains("taskstore: error: source (--store): ")
                && said.contains(from.to_str().unwrap())
                && said.contains(why)
                && !said.contains("destination"),
            "{from:?}: {said}"
        );
        assert_eq!(stdout(&out), "", "{from:?}");
    }
    assert_unchanged(&before, &snapshot(&to), "the destination");
    #[cfg(feature = "postgres")]
    {
        let nowhere = "host=/nonexistent user=app password=s3cret-pw";
        let out = run_expect(
            None,
            &["--pg", nowhere, "copy", "--to-store", to.to_str().unwrap()],
            1,
        );
        let said = stderr(&out);
        assert!(
            said.contains("taskstore: error: source (--pg): postgres backend failed to connect")
                && said.contains("host /nonexistent")
                && !said.contains("s3cret-pw")
                && !said.contains("destination"),
            "{said}"
        );
        if let Some(cluster) = pg_cluster::shared() {
            let schema = pg_cluster::fresh_schema("copy_from_none");
            let conninfo = cluster.conninfo();
            let out = run_expect(
                None,
                &[
                    "--pg",
                    &conninfo,
                    "--pg-schema",
                    &schema,
                    "copy",
                    "--to-store",
                    to.to_str().unwrap(),
                ],
                1,
            );
            let said = stderr(&out);
            assert!(
                said.contains(&format!(
                    "taskstore: error: source (--pg): no store in postgres schema {schema} at host "
                )),
                "{said}"
            );
        }
    }
    assert_unchanged(&before, &snapshot(&to), "the destination");
}

/// `copy` from a file store into PostgreSQL, and from there into a new
/// file store: every live task exactly, in both; each run again copies
/// nothing; a reap of PostgreSQL fails the orphans a reap of the source
/// fails.
#[cfg(feature = "postgres")]
#[test]
fn copy_moves_every_live_task_to_postgres_and_back() {
    let Some(cluster) = pg_cluster::shared() else {
        return; // skipped, said once (TASKSTORE_REQUIRE_PG=1 fails instead)
    };
    let tmp = tempfile::tempdir().unwrap();
    let (from, back) = (tmp.path().join("from"), tmp.path().join("back"));
    let (tasks, expired) = every_kind(&from);
    let schema = pg_cluster::fresh_schema("copy");
    let conninfo = cluster.conninfo();
    let to_pg = copy_to_new_schema(&conninfo, &schema);
    let out = run_expect(Some(&from), &to_pg, 0);
    assert_eq!(
        ids_done(&out, "copy"),
        sorted_ids(&tasks),
        "{}",
        stderr(&out)
    );
    let pg = taskstore::PgStore::builder(conninfo.clone())
        .schema(schema.clone())
        .create_if_missing(false)
        .open()
        .unwrap();
    holds_exactly(&pg, &tasks);
    assert_eq!(pg.get(&expired.id).unwrap(), None);
    let again = run_expect(Some(&from), &to_pg, 0);
    assert_eq!(stdout(&again), "");
    // And back, from PostgreSQL into a new file store.
    let back_arg = back.to_str().unwrap();
    let from_pg = [
        "--pg",
        &conninfo,
        "--pg-schema",
        &schema,
        "copy",
        "--to-store",
        back_arg,
        "--create",
        "--json",
    ];
    let out = run_expect(None, &from_pg, 0);
    assert_eq!(
        ids_done(&out, "copy"),
        sorted_ids(&tasks),
        "{}",
        stderr(&out)
    );
    holds_exactly(&open(&back), &tasks);
    run_expect(Some(&back), &["verify"], 0);
    assert_eq!(stdout(&run_expect(None, &from_pg, 0)), "");
    let reap_pg = ["--pg", &conninfo, "--pg-schema", &schema, "reap", "--json"];
    let in_pg = ids_done(&run_expect(None, &reap_pg, 0), "reap");
    for gone in tasks.iter().filter(|t| t.owner.as_deref() == Some("gone")) {
        assert!(in_pg.contains(&gone.id.to_string()), "{in_pg:?}");
    }
    assert_eq!(
        in_pg,
        ids_done(&run_expect(Some(&from), &["reap", "--json"], 0), "reap")
    );
}

/// A task a file store on a manual clock made after 2262, which
/// PostgreSQL cannot hold (every instant a `bigint` of nanoseconds), is
/// named with why and not copied; every other task is; the command fails;
/// the source is left exactly as it was.
#[cfg(feature = "postgres")]
#[test]
fn copy_to_postgres_names_a_task_outside_its_years_and_fails() {
    let Some(cluster) = pg_cluster::shared() else {
        return; // skipped, said once (TASKSTORE_REQUIRE_PG=1 fails instead)
    };
    let tmp = tempfile::tempdir().unwrap();
    let from = tmp.path().join("from");
    let year_2300 = time::Date::from_calendar_date(2300, time::Month::June, 1)
        .unwrap()
        .midnight()
        .assume_utc();
    let future = FileStore::builder(&from)
        .clock(Arc::new(ManualClock::new(year_2300)))
        .open()
        .unwrap()
        .create(NewTask::new())
        .unwrap();
    let now = open(&from).create(NewTask::new()).unwrap();
    let before = snapshot(&from);
    let schema = pg_cluster::fresh_schema("copy");
    let conninfo = cluster.conninfo();
    let args = copy_to_new_schema(&conninfo, &schema);
    let out = run_expect(Some(&from), &args, 1);
    assert_eq!(ids_done(&out, "copy"), vec![now.id.to_string()]);
    let failed: Vec<Value> = json_lines(&out)
        .into_iter()
        .filter(|line| line["outcome"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{}", stdout(&out));
    let error = failed[0]["error"].as_str().unwrap();
    assert_eq!(failed[0]["taskId"], future.id.as_str());
    assert!(
        error.contains(&format!("task {}", future.id))
            && error.contains("2300-06-01")
            && error.contains("outside the years 1677 to 2262"),
        "{error}"
    );
    assert!(stderr(&out).contains("1 not copied"), "{}", stderr(&out));
    assert_unchanged(&before, &snapshot(&from), "the source");
    let pg = taskstore::PgStore::builder(conninfo)
        .schema(schema)
        .create_if_missing(false)
        .open()
        .unwrap();
    assert_eq!(pg.get(&future.id).unwrap(), None);
    assert_eq!(pg.get(&now.id).unwrap(), Some(now));
}

/// The arguments of a `copy --json` into `schema` at `conninfo`, made there
/// (`--create`).
#[cfg(feature = "postgres")]
fn copy_to_new_schema<'a>(conninfo: &'a str, schema: &'a str) -> [&'a str; 7] {
    [
        "copy",
        "--to-pg",
        conninfo,
        "--to-pg-schema",
        schema,
        "--create",
        "--json",
    ]
}
