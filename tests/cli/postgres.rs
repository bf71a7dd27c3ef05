//! The command over PostgreSQL: the commands that work there, the ones for
//! file stores only, a schema beside a file store, payloads not held.

use super::*;

/// `stats` and the dry run of `sweep` over PostgreSQL read every row and
/// keep none of its payloads: run with its data segment held to 200 MB,
/// each reads a store of 300 MB of tasks. (`Store::stored` kept every task
/// whole: over 300 MB, and the command died for want of memory.)
#[test]
fn stats_and_dry_runs_over_postgres_hold_no_payloads_of_the_store() {
    let Some(cluster) = pg_cluster::shared() else {
        return; // skipped, said once (TASKSTORE_REQUIRE_PG=1 fails instead)
    };
    require_prlimit();
    let schema = pg_cluster::fresh_schema("cli");
    let conninfo = cluster.conninfo();
    let store = taskstore::PgStore::builder(conninfo.clone())
        .schema(schema.clone())
        .open()
        .unwrap();
    resumable_and_finished(&store, &"x".repeat(100 << 10), 1_500);
    drop(store);
    let target = ["--pg", &conninfo, "--pg-schema", &schema];
    let under_limit = |args: &[&str]| in_200_mb(args, &target);
    let stats: Value = serde_json::from_str(&stdout(&under_limit(&["stats", "--json"]))).unwrap();
    assert_eq!(
        (&stats["active"], &stats["finished"]),
        (&json!(1_500), &json!(1_500)),
        "{stats:#}"
    );
    let swept = under_limit(&["sweep", "--dry-run"]);
    assert!(
        stderr(&swept).contains("dry run: 0 expired task(s)"),
        "{}",
        stderr(&swept)
    );
}

/// The commands over a `PgStore`, checked against its API.
#[test]
fn commands_work_over_postgres() {
    let Some(cluster) = pg_cluster::shared() else {
        return; // skipped, said once (TASKSTORE_REQUIRE_PG=1 fails instead)
    };
    let schema = pg_cluster::fresh_schema("cli");
    let conninfo = cluster.conninfo();
    let store = taskstore::PgStore::builder(conninfo.clone())
        .schema(schema.clone())
        .open()
        .unwrap();
    let running = store.create(NewTask::new()).unwrap();
    let done = store.create(NewTask::new()).unwrap();
    assert!(store.complete(&done.id, json!(1)).unwrap().is_applied());
    let failed = store.create(NewTask::new()).unwrap();
    assert!(store.fail(&failed.id, json!("x")).unwrap().is_applied());
    let pg = |args: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.extend([
            "--pg".into(),
            conninfo.clone(),
            "--pg-schema".into(),
            schema.clone(),
        ]);
        all
    };
    let run_pg = |args: &[&str], code: i32| {
        let args = pg(args);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        run_expect(None, &refs, code)
    };
    let listed: Vec<Task> = json_lines(&run_pg(&["list", "--json"], 0))
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
    assert_eq!(listed, store.list(&ListQuery::all()).unwrap().tasks);
    // TASKSTORE_PG and TASKSTORE_PG_SCHEMA name the store as --pg and
    // --pg-schema do (the schema is this test's own: the default one holds
    // other tests' tasks, or none).
    let run_env = |args: &[&str], env: &[(&str, &str)], code: i32| {
        let mut command = taskstore(None, args);
        command.envs(env.iter().copied());
        let out = command.output().expect("run the taskstore binary");
        assert_eq!(
            out.status.code(),
            Some(code),
            "taskstore {args:?} with {env:?}\nstdout:\n{}\nstderr:\n{}",
            stdout(&out),
            stderr(&out)
        );
        out
    };
    let pg_env = [
        ("TASKSTORE_PG", conninfo.as_str()),
        ("TASKSTORE_PG_SCHEMA", schema.as_str()),
    ];
    let listed: Vec<Task> = json_lines(&run_env(&["list", "--json"], &pg_env, 0))
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
    assert_eq!(listed, store.list(&ListQuery::all()).unwrap().tasks);
    let stats: Value =
        serde_json::from_str(&stdout(&run_env(&["stats", "--json"], &pg_env, 0))).unwrap();
    assert_eq!(stats["store"]["backend"], "postgres");
    assert_eq!(stats["store"]["schema"], schema.as_str());
    assert_eq!(stats["tasks"], 3);
    // A file store named too is a usage error: which one was meant?
    let (_tmp, dir) = store_dir();
    store_with_tasks(&dir);
    let both = [
        pg_env[0],
        pg_env[1],
        ("TASKSTORE_STORE", dir.to_str().unwrap()),
    ];
    let out = run_env(&["list"], &both, 2);
    assert!(stderr(&out).contains("not both"), "{}", stderr(&out));
    // A flag names the store over the other's variable (it was a usage
    // error, "not both", though one was typed).
    let dir_text = dir.to_str().unwrap();
    let files = json_lines(&run_env(
        &["list", "--json", "--store", dir_text],
        &pg_env,
        0,
    ));
    assert_eq!(
        files.len(),
        open(&dir).list(&ListQuery::all()).unwrap().tasks.len()
    );
    let on_pg = pg(&["list", "--json"]);
    let on_pg: Vec<&str> = on_pg.iter().map(String::as_str).collect();
    let listed = json_lines(&run_env(&on_pg, &[("TASKSTORE_STORE", dir_text)], 0));
    assert_eq!(listed.len(), 3);
    let stats: Value = serde_json::from_str(&stdout(&run_pg(&["stats", "--json"], 0))).unwrap();
    assert_eq!(stats["store"]["backend"], "postgres");
    assert_eq!(stats["tasks"], 3);
    assert_eq!(stats["active"], 1);
    assert_eq!(stats["successRate"], json!(0.5));
    assert_eq!(stats["disk"], Value::Null);
    // An expired task not swept yet is counted as such (a listing leaves it
    // out: it was always 0).
    store
        .create(NewTask::new().ttl(Duration::from_millis(1)))
        .unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let stats: Value = serde_json::from_str(&stdout(&run_pg(&["stats", "--json"], 0))).unwrap();
    assert_eq!(
        (stats["tasks"].clone(), stats["expiredUnswept"].clone()),
        (json!(3), json!(1))
    );
    let shown: Task =
        serde_json::from_str(&stdout(&run_pg(&["show", running.id.as_str()], 0))).unwrap();
    assert_eq!(shown, store.get(&running.id).unwrap().unwrap());
    // A row that does not read is named on stderr by both dry runs, as a
    // file that does not is (it was left out without a word).
    let spoilt = store.create(NewTask::new()).unwrap();
    let changed = cluster
        .client()
        .execute(
            &format!("UPDATE \"{schema}\".tasks SET task = '{{}}' WHERE id = $1"),
            &[&spoilt.id.as_str()],
        )
        .unwrap();
    assert_eq!(changed, 1);
    for command in ["sweep", "reap"] {
        let out = run_pg(&[command, "--dry-run"], 0);
        assert!(
            stderr(&out).contains(spoilt.id.as_str()),
            "{command} --dry-run:\n{}",
            stderr(&out)
        );
    }
    let out = run_pg(&["cancel", running.id.as_str(), "--json"], 0);
    assert_eq!(json_lines(&out)[0]["transition"], "applied");
    assert_eq!(
        store.get(&running.id).unwrap().unwrap().status,
        TaskStatus::Cancelled
    );
    let out = run_pg(&["cancel", done.id.as_str(), "--json"], 0);
    assert_eq!(json_lines(&out)[0]["transition"], "already_terminal");
    assert_eq!(json_lines(&out)[0]["status"], "completed");
    // A mistyped schema is an error naming it and the server it was
    // looked for at (never the password), and makes no store there. (It
    // named the schema alone: which database of which server lacked it,
    // the operator could not tell.)
    let typo = format!("{schema}_typo");
    let with_password = format!("{conninfo} password=s3cret-pw");
    for command in ["list", "stats"] {
        let out = run_expect(
            None,
            &[command, "--pg", &with_password, "--pg-schema", &typo],
            1,
        );
        let said = stderr(&out);
        assert!(
            said.contains(&format!("no store in postgres schema {typo} at host "))
                && said.contains("port 5432 database postgres user postgres")
                && !said.contains("s3cret-pw"),
            "{said}"
        );
    }
    match taskstore::PgStore::builder(conninfo.clone())
        .schema(typo.clone())
        .create_if_missing(false)
        .open()
    {
        Err(taskstore::Error::NoStore { store }) => assert!(store.contains(&typo)),
        other => panic!(
            "the mistyped schema {typo} was created: {:?}",
            other.map(|_| ())
        ),
    }
    // A name no schema of a store can have is a usage error, as any
    // malformed argument (it exited 1, "invalid store setting").
    for command in ["list", "stats"] {
        let out = run_expect(
            None,
            &[command, "--pg", &conninfo, "--pg-schema", "Bad-Schema"],
            2,
        );
        assert!(
            stderr(&out).contains("invalid value \"Bad-Schema\" for '--pg-schema <SCHEMA>'"),
            "{}",
            stderr(&out)
        );
    }
}

/// `--pg-schema` typed beside a file store is a usage error: the schema
/// names nothing there, and a user who typed it meant a PostgreSQL store.
/// The same schema from TASKSTORE_PG_SCHEMA (set for other commands) is
/// not. (The flag was ignored without a word.)
#[test]
fn a_schema_typed_beside_a_file_store_is_refused() {
    let (_tmp, dir) = store_dir();
    let tasks = store_with_tasks(&dir);
    let store = dir.to_str().unwrap();
    for args in [
        &["list", "--store", store, "--pg-schema", "jobs"][..],
        &["--pg-schema", "jobs", "stats"],
        &["verify", "--pg-schema", "jobs"],
    ] {
        let out = if args.contains(&"--store") {
            run_expect(None, args, 2)
        } else {
            run_expect(Some(&dir), args, 2)
        };
        assert!(
            stderr(&out).contains("--pg-schema") && stderr(&out).contains("--pg"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let out = taskstore(None, &["list", "--json", "--store", store])
        .env("TASKSTORE_PG_SCHEMA", "jobs")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json_lines(&out).len(), tasks.len());
}

/// A connection string that does not parse is a usage error (exit 2), as
/// a malformed schema name is: it names the flag (or variable) it came
/// from and what is wrong with it, as the driver says, and never the
/// password it holds. No server is needed: nothing is connected to. (It
/// exited 1 with "invalid store setting: conninfo invalid connection
/// string", naming neither the flag nor the option at fault.)
#[test]
fn a_malformed_connection_string_is_a_usage_error_naming_its_flag_and_why() {
    let bad_port = "host=127.0.0.1 port=notaport user=app password=s3cret-pw";
    for command in ["list", "stats"] {
        let out = run_expect(None, &[command, "--pg", bad_port], 2);
        let said = stderr(&out);
        assert!(
            said.contains("'--pg <CONNINFO>'")
                && said.contains("invalid value for option `port`")
                && !said.contains("s3cret-pw"),
            "{command}: {said}"
        );
    }
    let out = taskstore(None, &["list"])
        .env("TASKSTORE_PG", "user=app password=s3cret-pw hots=db")
        .output()
        .unwrap();
    let said = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("TASKSTORE_PG") && said.contains("unknown option `hots`"),
        "{said}"
    );
    // Into a copy's destination: the flag named is --to-pg's, and nothing
    // was copied anywhere.
    let (_tmp, dir) = store_dir();
    store_with_tasks(&dir);
    let out = run_expect(
        Some(&dir),
        &["copy", "--to-pg", "port=x password=s3cret-pw", "--create"],
        2,
    );
    let said = stderr(&out);
    assert!(
        said.contains("'--to-pg <CONNINFO>'")
            && said.contains("invalid value for option `port`")
            && !said.contains("s3cret-pw"),
        "{said}"
    );
}

/// An empty connection string (`--pg ""`, `copy --to-pg ""`) is a usage
/// error (exit 2) naming its flag, as `--store ""` is, said before any
/// store is looked at: nothing is copied. (It was taken for a connection
/// string of defaults: exit 1, "both host and hostaddr are missing".)
#[test]
fn an_empty_connection_string_is_a_usage_error_naming_its_flag() {
    for command in ["list", "stats"] {
        let out = run_expect(None, &[command, "--pg", ""], 2);
        let said = stderr(&out);
        assert!(
            said.contains("a value is required for '--pg <CONNINFO>'"),
            "{command}: {said}"
        );
    }
    let (_tmp, dir) = store_dir();
    store_with_tasks(&dir);
    let out = run_expect(Some(&dir), &["copy", "--to-pg", "", "--create"], 2);
    let said = stderr(&out);
    assert!(
        said.contains("a value is required for '--to-pg <CONNINFO>'"),
        "{said}"
    );
    assert_eq!(stdout(&out), "");
}

#[test]
fn verify_and_repair_say_they_are_for_file_stores() {
    for command in ["verify", "repair"] {
        let out = run_expect(None, &[command, "--pg", "host=/nonexistent"], 2);
        assert!(stderr(&out).contains("file store"), "{}", stderr(&out));
    }
}

/// A schema of version 1 (a service of that build still running on it) is
/// left as it is by every command not given `--upgrade`, as an older file
/// store is: `list`, `stats`, `sweep --dry-run` and `copy --to-pg` into it
/// each refuse it, saying so (naming the server and database) and exit 1, and its version stays 1; the dry
/// run says that a dry run moves nothing. Given `--upgrade`, `list`
/// migrates it and lists its task. (Every command migrated it, the dry run
/// too, which then said "nothing was changed": the table rewritten, and the
/// running build refused the schema at its next open.)
#[test]
fn commands_leave_a_version_1_schema_as_it_is_unless_given_upgrade() {
    let Some(cluster) = pg_cluster::shared() else {
        return; // skipped, said once (TASKSTORE_REQUIRE_PG=1 fails instead)
    };
    let (source, schema) = (
        pg_cluster::fresh_schema("cli_v1_src"),
        pg_cluster::fresh_schema("cli_v1"),
    );
    let conninfo = cluster.conninfo();
    let task = taskstore::PgStore::builder(conninfo.clone())
        .schema(source.clone())
        .open()
        .unwrap()
        .create(NewTask::new())
        .unwrap();
    let mut client = cluster.client();
    pg_cluster::version_1_schema(&mut client, &schema);
    let columns = pg_cluster::VERSION_1_COLUMNS;
    client
        .batch_execute(&format!(
            "INSERT INTO {schema}.tasks ({columns}) SELECT {columns} FROM {source}.tasks;
             UPDATE {schema}.counters SET active = 1;"
        ))
        .unwrap();
    let target = ["--pg", conninfo.as_str(), "--pg-schema", schema.as_str()];
    let with = |args: &[&str]| -> Vec<String> {
        target.iter().chain(args).map(|a| a.to_string()).collect()
    };
    let tmp = tempfile::tempdir().unwrap();
    let from = tmp.path().join("from");
    open(&from);
    let from_arg = from.to_str().unwrap();
    let copy = [
        "--store",
        from_arg,
        "copy",
        "--to-pg",
        &conninfo,
        "--to-pg-schema",
        &schema,
    ];
    let commands: [Vec<String>; 4] = [
        with(&["list"]),
        with(&["stats"]),
        with(&["sweep", "--dry-run"]),
        copy.iter().map(|a| a.to_string()).collect(),
    ];
    for args in &commands {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run_expect(None, &args, 1);
        let said = stderr(&out);
        // Naming the server and database it was found at, as a schema that
        // holds no store is named (it named the schema alone).
        assert!(
            said.contains(&format!("postgres schema {schema} at host "))
                && said.contains("port 5432 database postgres user postgres is of format 1"),
            "{args:?}: {said}"
        );
        let hint = if args.contains(&"--dry-run") {
            "a dry run moves nothing"
        } else {
            "run the command with --upgrade"
        };
        assert!(said.contains(hint), "{args:?}: {said}");
        assert_eq!(
            pg_cluster::version_of(&mut client, &schema),
            1,
            "{args:?} left the schema as it is"
        );
    }
    let out = run_expect(
        None,
        &with(&["--upgrade", "list", "--json"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        0,
    );
    assert_eq!(json_lines(&out).len(), 1, "{}", stdout(&out));
    assert_eq!(json_lines(&out)[0]["taskId"], task.id.as_str());
    assert_eq!(pg_cluster::version_of(&mut client, &schema), 2);
}

/// A schema written by a newer version (3) is refused by every command,
/// `--upgrade` or not, naming the schema and the server and database it
/// was found at (never the password), and left as it is. (It named the
/// schema alone: which of an operator's databases held the newer store
/// was left to guess.)
#[test]
fn a_schema_of_a_newer_version_is_refused_naming_where_it_was_found() {
    let Some(cluster) = pg_cluster::shared() else {
        return; // skipped, said once (TASKSTORE_REQUIRE_PG=1 fails instead)
    };
    let schema = pg_cluster::fresh_schema("cli_v3");
    let conninfo = cluster.conninfo();
    drop(
        taskstore::PgStore::builder(conninfo.clone())
            .schema(schema.clone())
            .open()
            .unwrap(),
    );
    let mut client = cluster.client();
    client
        .batch_execute(&format!("UPDATE {schema}.schema_version SET version = 3"))
        .unwrap();
    let with_password = format!("{conninfo} password=s3cret-pw");
    for command in [&["list"][..], &["stats"], &["--upgrade", "list"]] {
        let mut args = vec!["--pg", &with_password, "--pg-schema", &schema];
        args.extend(command);
        let out = run_expect(None, &args, 1);
        let said = stderr(&out);
        assert!(
            said.contains(&format!("postgres schema {schema} at host "))
                && said.contains("port 5432 database postgres user postgres has format version 3")
                && !said.contains("s3cret-pw"),
            "{command:?}: {said}"
        );
        assert_eq!(
            pg_cluster::version_of(&mut client, &schema),
            3,
            "{command:?}"
        );
    }
}
