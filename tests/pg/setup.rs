//! Opening a `PgStore`: the schema made once and a newer or foreign one
//! refused, bad settings, keyword names, roles that may not create schemas or
//! default to serializable, a planted function on the search path; the
//! conformance suite with two handles per schema, and what one handle decides
//! on what another wrote.

use super::*;
use pg_cluster::{VERSION_1_COLUMNS, version_1_schema, version_of};

#[test]
fn conformance_suite_with_two_handles_per_schema() {
    let Some(cluster) = cluster() else { return };
    conformance::run(|| {
        let schema = fresh_schema("conformance");
        move |setup: &Setup, instance_id: &str| {
            setup
                .configure(PgStore::builder(cluster.conninfo()), instance_id)
                .schema(&schema)
                // The suite drives a `ManualClock`: no correction to the server's.
                .time_source(TimeSource::Clock)
                .open()
                .unwrap()
        }
    });
}

/// A handle decides a change on the version it last wrote and writes only
/// if that is still the one stored (`pg::recent`): whatever another handle
/// did since (an update, a terminal transition, a delete, a new task under
/// the same id) is what the change is decided on.
#[test]
fn a_handle_decides_on_what_another_handle_wrote_since_its_own_last_write() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("guesses");
    let (a, b) = (open(cluster, &schema, "a"), open(cluster, &schema, "b"));

    // Updated by b since a created it: a's update lands on b's version.
    let t = a.create(NewTask::new()).unwrap();
    let _ = b
        .update(&t.id, TaskUpdate::new().metadata("by", "b"))
        .unwrap();
    let mine = a
        .update(&t.id, TaskUpdate::new().metadata("also", "a"))
        .unwrap()
        .into_task();
    assert_eq!(mine.revision, 3);
    assert_eq!(
        (mine.metadata["by"].clone(), mine.metadata["also"].clone()),
        (json!("b"), json!("a"))
    );
    // Finished by b: a's cancel finds it finished.
    let done = b.complete(&t.id, json!("b won")).unwrap().into_task();
    match a.cancel(&t.id, None).unwrap() {
        Transition::AlreadyTerminal(now) => assert_eq!(now, done),
        other => panic!("a cancel after b's complete: {other:?}"),
    }

    // a's last write finished the task; b deletes it and creates another
    // under its id: a's cancel is decided on the new one, not on what a
    // last wrote (which would keep it as finished).
    let u = a.create(NewTask::new()).unwrap();
    let _ = a.complete(&u.id, json!(1)).unwrap();
    assert!(b.delete(&u.id).unwrap());
    let again = b.create(NewTask::new().id(u.id.clone())).unwrap();
    match a.cancel(&u.id, None).unwrap() {
        Transition::Applied(cancelled) => {
            assert_eq!(cancelled.status, TaskStatus::Cancelled);
            assert_eq!(cancelled.created_at, again.created_at);
        }
        other => panic!("a cancel of the new task: {other:?}"),
    }

    // Deleted by b: a's update finds nothing.
    let v = a.create(NewTask::new()).unwrap();
    assert!(b.delete(&v.id).unwrap());
    assert!(matches!(
        a.update(&v.id, TaskUpdate::new().metadata("k", 1)),
        Err(Error::NotFound { .. })
    ));
    assert_eq!(a.get(&v.id).unwrap(), None);
}

#[test]
fn opening_creates_the_schema_once_and_refuses_a_newer_one() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("versions");
    // Eight opens at once on an absent schema: one migration, eight handles.
    let handles: Vec<PgStore> = std::thread::scope(|s| {
        let opens: Vec<_> = (0..8)
            .map(|i| {
                let schema = &schema;
                s.spawn(move || open(cluster, schema, &format!("opener-{i}")))
            })
            .collect();
        opens.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let task = handles[0].create(NewTask::new()).unwrap();
    for h in &handles {
        assert_eq!(h.get(&task.id).unwrap(), Some(task.clone()));
    }
    let mut client = cluster.client();
    let version: i32 = client
        .query_one(&format!("SELECT version FROM {schema}.schema_version"), &[])
        .unwrap()
        .get(0);
    assert_eq!(version, 2);
    client
        .execute(
            &format!("UPDATE {schema}.schema_version SET version = 3"),
            &[],
        )
        .unwrap();
    match PgStore::builder(cluster.conninfo()).schema(&schema).open() {
        Err(Error::UnsupportedFormat {
            path,
            found,
            supported,
        }) => {
            assert_eq!((found, supported), (3, 2));
            assert!(path.to_string_lossy().contains(&schema), "{path:?}");
        }
        other => panic!("a newer schema must be refused, got {other:?}"),
    }
}

/// A schema that holds another tool's tables under the store's names (an
/// application's own `schema_version`, as Flyway kept one, or a `tasks`
/// table) is refused with an error naming the schema and the table, and
/// where it was found (the server and database, never the password), as
/// a schema that holds no store, or one of another version, is; nothing
/// in it is changed. (The open panicked on the foreign `schema_version`'s
/// text `version` column; then the error named the schema alone.)
#[test]
fn a_schema_holding_another_tools_tables_is_refused_by_name() {
    let Some(cluster) = cluster() else { return };
    let mut client = cluster.client();
    let flyway = fresh_schema("foreign_version");
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {flyway};
             CREATE TABLE {flyway}.schema_version (
                 installed_rank integer PRIMARY KEY,
                 version        varchar(50),
                 description    varchar(200) NOT NULL);
             INSERT INTO {flyway}.schema_version VALUES (1, '1', 'init');"
        ))
        .unwrap();
    let tasks = fresh_schema("foreign_tasks");
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {tasks};
             CREATE TABLE {tasks}.tasks (id serial PRIMARY KEY, title text);
             INSERT INTO {tasks}.tasks (title) VALUES ('the application''s');"
        ))
        .unwrap();
    for (schema, table) in [(&flyway, "schema_version"), (&tasks, "tasks")] {
        let with_password = format!("{} password=s3cret-pw", cluster.conninfo());
        let opened =
            std::panic::catch_unwind(|| PgStore::builder(&with_password).schema(schema).open());
        match opened {
            Ok(Err(e @ Error::InvalidStore { .. })) => {
                let said = e.to_string();
                assert!(
                    said.contains(&format!("postgres schema {schema} at host "))
                        && said.contains("port 5432 database postgres user postgres")
                        && said.contains(table)
                        && !said.contains("s3cret-pw"),
                    "names the schema, where it was found and the table: {said}"
                );
            }
            Ok(other) => panic!("schema {schema}: expected InvalidStore, got {other:?}"),
            Err(_) => panic!("schema {schema}: the open panicked"),
        }
    }
    let rows: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM {flyway}.schema_version"),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(rows, 1, "left as it was");
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = $1",
            &[&tasks.as_str()],
        )
        .unwrap()
        .get(0);
    assert_eq!(tables, 1, "nothing made beside the application's table");
}

#[test]
fn bad_settings_are_refused_before_anything_is_written() {
    let Some(cluster) = cluster() else { return };
    for schema in ["", "Upper", "a;drop table x", "pg_x", &"s".repeat(49)] {
        match PgStore::builder(cluster.conninfo()).schema(schema).open() {
            Err(Error::InvalidConfig {
                field: "schema", ..
            }) => {}
            other => panic!("schema {schema:?} must be refused, got {other:?}"),
        }
    }
    match PgStore::builder("host=/tmp port=notaport").open() {
        Err(Error::InvalidConfig {
            field: "conninfo", ..
        }) => {}
        other => panic!("a bad connection string must be refused, got {other:?}"),
    }
    match PgStore::builder(cluster.conninfo()).pool_size(0).open() {
        Err(Error::InvalidConfig {
            field: "pool_size", ..
        }) => {}
        other => panic!("pool_size(0) must be refused, got {other:?}"),
    }
    match PgStore::builder(cluster.conninfo())
        .pool_wait(Duration::ZERO)
        .open()
    {
        Err(Error::InvalidConfig {
            field: "pool_wait", ..
        }) => {}
        other => panic!("pool_wait(0) must be refused, got {other:?}"),
    }
    let every = Duration::from_micros(999);
    match PgStore::builder(cluster.conninfo())
        .server_clock_refresh(every)
        .open()
    {
        Err(Error::InvalidConfig {
            field: "server_clock_refresh",
            ..
        }) => {}
        other => panic!("a refresh under 1 ms must be refused, got {other:?}"),
    }
    // A database that does not exist: a backend error naming postgres.
    let missing = format!("{} dbname=no_such_db", cluster.conninfo());
    match PgStore::builder(missing).open() {
        Err(
            e @ Error::Backend {
                backend: "postgres",
                ..
            },
        ) => {
            // What the server said, not the client's "db error" alone.
            let said = e.to_string();
            assert!(said.contains("connect"), "{said}");
            assert!(said.contains("\"no_such_db\" does not exist"), "{said}");
        }
        other => panic!("a missing database must be a backend error, got {other:?}"),
    }
    // The settings every store has are checked before anything is made:
    // no schema for a store that was refused.
    let schema = fresh_schema("refused");
    for (field, builder) in [
        (
            "instance_id",
            PgStore::builder(cluster.conninfo()).instance_id(""),
        ),
        (
            "lease",
            PgStore::builder(cluster.conninfo()).lease(Duration::ZERO),
        ),
    ] {
        match builder.schema(schema.clone()).open() {
            Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field} must be refused, got {other:?}"),
        }
    }
    let made: i64 = cluster
        .client()
        .query_one(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1",
            &[&schema],
        )
        .unwrap()
        .get(0);
    assert_eq!(made, 0, "a refused open made no schema");
}

/// A schema named like an SQL keyword (`user`, `order`) passes the name
/// check, so it must work: every statement quotes it. (It failed at open,
/// with a syntax error.)
/// A `tcp_user_timeout` written for libpq (milliseconds) is seconds to
/// this driver: `60000`, a minute there, is almost 17 hours here. The open
/// warns of a value past an hour, and of none within it (nor of the
/// default). No server is needed: the string is judged before any connect.
#[test]
fn a_tcp_user_timeout_of_hours_is_warned_of_at_open() {
    let opened = |timeout: Option<u32>| {
        let logged = common::Logged::default();
        let mut conninfo = "host=127.0.0.1 port=1 connect_timeout=1".to_owned();
        if let Some(timeout) = timeout {
            conninfo.push_str(&format!(" tcp_user_timeout={timeout}"));
        }
        let open = tracing::subscriber::with_default(logged.clone(), || {
            PgStore::builder(conninfo.as_str()).open()
        });
        assert!(open.is_err(), "nothing listens on port 1");
        logged.warnings_of("tcp_user_timeout")
    };
    let warned = opened(Some(60_000));
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert_eq!(warned[0].field("tcp_user_timeout_s"), Some("60000"));
    assert!(
        warned[0]
            .field("message")
            .is_some_and(|m| m.contains("libpq") && m.contains("seconds")),
        "{warned:?}"
    );
    for quiet in [None, Some(60), Some(3_600)] {
        assert_eq!(opened(quiet).len(), 0, "tcp_user_timeout {quiet:?}");
    }
}

#[test]
fn a_schema_named_like_a_keyword_works() {
    let Some(cluster) = cluster() else { return };
    for schema in ["user", "order", "left"] {
        let store = PgStore::builder(cluster.conninfo())
            .schema(schema)
            .open()
            .unwrap_or_else(|e| panic!("open schema {schema}: {e}"));
        let task = store.create(NewTask::new()).unwrap();
        assert!(store.complete(&task.id, json!(1)).unwrap().is_applied());
        assert_eq!(store.list(&ListQuery::all()).unwrap().tasks.len(), 1);
        assert!(store.delete(&task.id).unwrap());
        // Opened again: the schema is found current.
        drop(store);
        PgStore::builder(cluster.conninfo())
            .schema(schema)
            .open()
            .unwrap_or_else(|e| panic!("open schema {schema} again: {e}"));
    }
}

/// A role named `role` (a fresh name: the cluster may outlive a run) whose
/// transactions default to `level`, and `schema`, made for it. (No right
/// on the database is granted: tests running beside it would race on its
/// row, "tuple concurrently updated".)
fn role_defaulting_to(cluster: &Cluster, role: &str, level: &str, schema: &str) {
    cluster
        .client()
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; \
             ALTER ROLE {role} SET default_transaction_isolation = '{level}'; \
             CREATE SCHEMA {schema} AUTHORIZATION {role}"
        ))
        .unwrap();
}

/// A schema an administrator made for the store's role, which may not
/// create schemas itself, opens: the store creates its tables in it.
/// (`CREATE SCHEMA IF NOT EXISTS` asks for the right to create schemas
/// before it looks whether the schema exists: "permission denied for
/// database".)
#[test]
fn a_role_that_may_not_create_schemas_opens_a_schema_made_for_it() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("made_for");
    let role = format!("{schema}_role");
    cluster
        .client()
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; \
             CREATE SCHEMA {schema} AUTHORIZATION {role}"
        ))
        .unwrap();
    let store = PgStore::builder(format!("{} user={role}", cluster.conninfo()))
        .schema(&schema)
        .open()
        .unwrap_or_else(|e| panic!("open schema {schema} as {role}: {e}"));
    let task = store.create(NewTask::new()).unwrap();
    assert_eq!(store.get(&task.id).unwrap(), Some(task));
    // A second open finds it current.
    drop(store);
    PgStore::builder(format!("{} user={role}", cluster.conninfo()))
        .schema(&schema)
        .open()
        .unwrap();
}

/// The store's writes are written for READ COMMITTED: a write that waited
/// on a row lock checks its condition again on the row as committed, so
/// the second of two racing writers wins or loses by the rules, never by a
/// serialization failure. A database or role that defaults to another
/// level does not change that. (Under `serializable` the waiting write
/// failed: "could not serialize access due to concurrent update".)
#[test]
fn a_role_defaulting_to_serializable_still_decides_races_by_the_rules() {
    let Some(cluster) = cluster() else { return };
    for level in ["serializable", "repeatable read"] {
        let schema = fresh_schema("isolation");
        let role = format!("{schema}_role");
        role_defaulting_to(cluster, &role, level, &schema);
        let application = format!("isolation_{}", role);
        let store = PgStore::builder(format!(
            "{} user={role} application_name={application}",
            cluster.conninfo()
        ))
        .schema(&schema)
        .open()
        .unwrap();
        let task = store.create(NewTask::new()).unwrap();
        // Another writer holds the row, and changes it (a new version of
        // it, the same task) while the store's write waits.
        let mut other = cluster.client();
        let other_pid = backend_pid(&mut other);
        let mut holding = other.transaction().unwrap();
        holding
            .execute(
                &format!("UPDATE {schema}.tasks SET task = task WHERE id = $1"),
                &[&task.id.as_str()],
            )
            .unwrap();
        std::thread::scope(|scope| {
            let completing = scope.spawn(|| store.complete(&task.id, json!("done")));
            let mut watcher = cluster.client();
            wait_until("the complete to wait on the row's holder", || {
                blocked_by(&mut watcher, &application, other_pid) == 1
            });
            holding.commit().unwrap();
            let transition = completing.join().unwrap();
            assert!(
                matches!(transition, Ok(Transition::Applied(_))),
                "{level}: {transition:?}"
            );
        });
    }
}

/// A role or connection whose `search_path` puts a schema others may write
/// to before `pg_catalog` cannot have the
/// store's statements call that schema's functions in place of the
/// server's: every session of the store resolves names in `pg_catalog`
/// alone (its tables are qualified). (A `pg_notify` planted there was
/// called by every write, which failed.)
#[test]
fn a_planted_function_on_the_search_path_is_never_called() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("planted");
    let planted = fresh_schema("evil");
    let mut client = cluster.client();
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {planted};
             CREATE FUNCTION {planted}.pg_notify(text, text) RETURNS void
                 AS $$ BEGIN RAISE EXCEPTION 'the planted pg_notify ran'; END $$
                 LANGUAGE plpgsql;"
        ))
        .unwrap();
    let conninfo = format!(
        "{} options='-c search_path={planted},pg_catalog'",
        cluster.conninfo()
    );
    let store = PgStore::builder(conninfo).schema(&schema).open().unwrap();
    let task = store
        .create(NewTask::new())
        .unwrap_or_else(|e| panic!("a create on a planted search_path: {e}"));
    assert!(
        store
            .complete(&task.id, serde_json::json!(1))
            .unwrap()
            .is_applied()
    );
}

/// A handle's guess of a task (the version it last wrote, kept to save a
/// read) never stands for another task made under the same id at the same
/// instant (a clock that stands still): a late update goes onto the task
/// as stored, and a finished one stays finished. (The update was decided
/// on the guess and written over the new task, whose revision and creation
/// time were the guess's: the finished task ran again, its result gone,
/// and the active-task counter went below the active rows.)
#[test]
fn a_handles_guess_never_stands_for_a_task_made_again_at_the_same_instant() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("guess_aba");
    let clock = ManualClock::new(time::OffsetDateTime::now_utc());
    let handle = |instance: &str| {
        on_clock(&cluster.conninfo(), &schema, instance, &clock)
            .open()
            .unwrap()
    };
    let (a, b) = (handle("a"), handle("b"));
    let id = TaskId::parse("made-again").unwrap();
    // Updated: its version, made again by `b`.
    a.create(NewTask::new().id(id.clone())).unwrap();
    assert!(
        a.update(&id, TaskUpdate::new().metadata("first", 1))
            .unwrap()
            .is_applied()
    );
    assert!(b.delete(&id).unwrap());
    b.create(NewTask::new().id(id.clone())).unwrap();
    let theirs = b
        .update(&id, TaskUpdate::new().metadata("by", "b"))
        .unwrap()
        .into_task();
    assert_eq!(theirs.revision, 2, "the guess's revision and creation time");
    let late = a
        .update(&id, TaskUpdate::new().metadata("late", "a"))
        .unwrap()
        .into_task();
    assert_eq!(
        (
            late.metadata.get("by"),
            late.metadata.get("first"),
            late.owner.as_deref()
        ),
        (Some(&json!("b")), None, Some("b")),
        "the late update goes onto b's task: {late:?}"
    );
    // Finished: it stays as `b` finished it.
    assert!(b.delete(&id).unwrap());
    a.create(NewTask::new().id(id.clone())).unwrap();
    assert!(
        a.update(&id, TaskUpdate::new().metadata("first", 2))
            .unwrap()
            .is_applied()
    );
    assert!(b.delete(&id).unwrap());
    b.create(NewTask::new().id(id.clone())).unwrap();
    let done = b.complete(&id, json!("b's result")).unwrap().into_task();
    assert_eq!(done.revision, 2);
    assert_eq!(
        a.update(&id, TaskUpdate::new().metadata("late", "a"))
            .unwrap(),
        Transition::AlreadyTerminal(done.clone())
    );
    assert_eq!(b.get(&id).unwrap(), Some(done));
    let mut client = cluster.client();
    let (counter, active) = counter_and_active(&mut client, &schema);
    assert_eq!(counter, active, "the counter agrees with the active rows");
}

/// `tasks` of `owner`, in the order a listing gives them.
fn owned_by(tasks: &[Task], owner: &str) -> Vec<Task> {
    let mut owned: Vec<Task> = tasks
        .iter()
        .filter(|t| t.owner.as_deref() == Some(owner))
        .cloned()
        .collect();
    owned.sort_by(|x, y| (x.created_at, x.id.as_str()).cmp(&(y.created_at, y.id.as_str())));
    owned
}

/// A schema of version 1 with rows, opened by this build, is migrated, and
/// a listing by owner gives each owner's tasks as the rows hold them: one
/// whose metadata names another owner, one holding `\u0000` (which a cast
/// of its text to `jsonb` refuses), and one whose JSON a hand edit spaced
/// (`"owner": "a"`), which the search of each row's text for
/// `"owner":"a"` left out; and an owner holding `\u0000`, which no text
/// the server holds can: its task is listed as one the server could not
/// read, whatever the owner, and told by decoding it.
#[test]
fn a_version_1_schema_with_rows_is_migrated_on_open_and_lists_by_owner_the_same_tasks() {
    let Some(cluster) = cluster() else { return };
    let (source, schema) = (fresh_schema("v1_source"), fresh_schema("v1_rows"));
    let (a, b) = (open(cluster, &source, "a"), open(cluster, &source, "b"));
    let mut tasks = Vec::new();
    for _ in 0..3 {
        tasks.push(a.create(NewTask::new()).unwrap());
        tasks.push(b.create(NewTask::new()).unwrap());
    }
    tasks.push(a.create(NewTask::new().metadata("owner", "b")).unwrap());
    tasks.push(b.create(NewTask::new().metadata("nul", "x\u{0}y")).unwrap());
    let spaced = a.create(NewTask::new().metadata("owner", "b")).unwrap();
    tasks.push(spaced.clone());
    // An owner holding `\u0000` (a hand edit: no instance id holds one).
    let mut unread = b.create(NewTask::new()).unwrap();
    unread.owner = Some("x\u{0}y".to_owned());
    tasks.push(unread.clone());
    let mut client = cluster.client();
    version_1_schema(&mut client, &schema);
    client
        .batch_execute(&format!(
            "INSERT INTO {schema}.tasks ({VERSION_1_COLUMNS})
                 SELECT {VERSION_1_COLUMNS} FROM {source}.tasks;
             UPDATE {schema}.counters SET active = (SELECT count(*) FROM {schema}.tasks WHERE active);"
        ))
        .unwrap();
    let text: String = client
        .query_one(
            &format!("SELECT task FROM {schema}.tasks WHERE id = $1"),
            &[&spaced.id.as_str()],
        )
        .unwrap()
        .get(0);
    let compact = "\"owner\":\"a\"";
    let at = text.rfind(compact).unwrap();
    let respaced = format!(
        "{}\"owner\": \"a\"{}",
        &text[..at],
        &text[at + compact.len()..]
    );
    client
        .execute(
            &format!("UPDATE {schema}.tasks SET task = $2 WHERE id = $1"),
            &[&spaced.id.as_str(), &respaced],
        )
        .unwrap();

    client
        .execute(
            &format!("UPDATE {schema}.tasks SET task = $2 WHERE id = $1"),
            &[
                &unread.id.as_str(),
                &serde_json::to_string(&unread).unwrap(),
            ],
        )
        .unwrap();

    let reader = open(cluster, &schema, "reader");
    for owner in ["a", "b", "x\u{0}y"] {
        let listed = reader.list(&ListQuery::all().owner(owner)).unwrap();
        assert_eq!(listed.tasks, owned_by(&tasks, owner), "owner {owner}");
        assert!(listed.skipped.is_empty(), "{:?}", listed.skipped);
    }
    assert_eq!(version_of(&mut client, &schema), 2);
}

/// An open told not to migrate (`upgrade_format(false)`, as the command
/// opens a store unless given `--upgrade`) refuses a schema of version 1
/// with `Error::OlderFormat` naming it and its version, and leaves it as
/// it is: its version, its table without `owner_key`, its rows. An open
/// that may migrates it then. (The open migrated it whatever it was told:
/// a build of version 1, a service still running, refused the schema from
/// then on.)
#[test]
fn an_open_told_not_to_migrate_leaves_a_version_1_schema_as_it_is() {
    let Some(cluster) = cluster() else { return };
    let (source, schema) = (fresh_schema("v1_kept_src"), fresh_schema("v1_kept"));
    let task = open(cluster, &source, "a").create(NewTask::new()).unwrap();
    let mut client = cluster.client();
    version_1_schema(&mut client, &schema);
    client
        .batch_execute(&format!(
            "INSERT INTO {schema}.tasks ({VERSION_1_COLUMNS})
                 SELECT {VERSION_1_COLUMNS} FROM {source}.tasks;
             UPDATE {schema}.counters SET active = 1;"
        ))
        .unwrap();
    let refused = PgStore::builder(cluster.conninfo())
        .schema(&schema)
        .upgrade_format(false)
        .open()
        .map(|_| ())
        .unwrap_err();
    match &refused {
        Error::OlderFormat {
            path,
            found: 1,
            current: 2,
        } => assert!(path.to_string_lossy().contains(&schema), "{refused}"),
        other => panic!("refused as older, naming the schema: {other:?}"),
    }
    assert_eq!(version_of(&mut client, &schema), 1);
    let columns: i64 = client
        .query_one(
            "SELECT count(*) FROM information_schema.columns
             WHERE table_schema = $1 AND table_name = 'tasks' AND column_name = 'owner_key'",
            &[&schema],
        )
        .unwrap()
        .get(0);
    assert_eq!(columns, 0, "the table is as version 1 made it");
    let store = open(cluster, &schema, "b");
    assert_eq!(version_of(&mut client, &schema), 2);
    assert_eq!(store.get(&task.id).unwrap(), Some(task));
}

/// A build of version 1 still open when a newer build migrates the schema
/// writes on with its own statements, which name none of the columns
/// version 2 added: its inserts and its replacements (a claim, giving a
/// task another owner) are listed by owner all the same, the owner's
/// column computed by the server from the task.
#[test]
fn rows_a_version_1_writer_writes_after_the_migration_are_listed_by_owner() {
    let Some(cluster) = cluster() else { return };
    let (source, schema) = (fresh_schema("v1_writes"), fresh_schema("v1_writer"));
    let inserted = open(cluster, &source, "c").create(NewTask::new()).unwrap();
    let mut client = cluster.client();
    version_1_schema(&mut client, &schema);
    let a = open(cluster, &schema, "a");
    assert_eq!(version_of(&mut client, &schema), 2);
    let kept = a.create(NewTask::new()).unwrap();
    let claimed = a.create(NewTask::new()).unwrap();

    client
        .execute(
            &format!(
                "INSERT INTO {schema}.tasks ({VERSION_1_COLUMNS})
                 SELECT {VERSION_1_COLUMNS} FROM {source}.tasks WHERE id = $1"
            ),
            &[&inserted.id.as_str()],
        )
        .unwrap();
    let mut moved = claimed.clone();
    moved.owner = Some("c".to_owned());
    moved.revision += 1;
    let replaced = client
        .execute(
            &format!(
                "UPDATE {schema}.tasks SET revision = $2, task = $3
                 WHERE id = $1 AND revision = $4"
            ),
            &[
                &moved.id.as_str(),
                &i64::try_from(moved.revision).unwrap(),
                &serde_json::to_string(&moved).unwrap(),
                &i64::try_from(claimed.revision).unwrap(),
            ],
        )
        .unwrap();
    assert_eq!(replaced, 1);

    let c_tasks = a.list(&ListQuery::all().owner("c")).unwrap().tasks;
    assert_eq!(c_tasks, owned_by(&[inserted, moved], "c"));
    assert_eq!(a.list(&ListQuery::all().owner("a")).unwrap().tasks, [kept]);
}
