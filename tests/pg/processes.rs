//! Processes racing on one schema (each child is this test binary, see
//! `common::spawn`): terminal transitions, no lost updates, and a writer killed
//! or frozen in the middle of its transaction.

use super::*;

// ---------------------------------------------------------------------------
// Processes racing: each child is this test binary (`common::spawn`), with
// the connection string and the schema as its arguments.

/// Tasks in the race test.
const TASKS: usize = 1_000;
/// Processes that race.
const RACERS: usize = 4;
/// Updates per process in the lost-update test.
const UPDATES_PER_PROCESS: usize = 250;

fn child_open(args: &[String], instance: &str) -> PgStore {
    PgStore::builder(&args[0])
        .schema(&args[1])
        .instance_id(instance)
        .pool_size(2)
        .open()
        .expect("a child opens the store")
}

#[test]
fn four_processes_race_terminal_transitions() {
    let test = "processes::four_processes_race_terminal_transitions";
    if let Some((_, args)) = role() {
        let racer: usize = args[3].parse().unwrap();
        let store = child_open(&args, &format!("racer-{racer}"));
        let mut rng = Rng::new(args[4].parse().unwrap());
        let mut order: Vec<usize> = (0..TASKS).collect();
        rng.shuffle(&mut order);
        let mut won = Vec::new();
        for n in order {
            let id = common::id("race", n);
            let transition = match rng.below(3) {
                0 => store.complete(&id, json!({"by": racer})),
                1 => store.fail(&id, json!({"by": racer})),
                _ => store.cancel(&id, Some(format!("by {racer}"))),
            }
            .unwrap();
            match transition {
                Transition::Applied(t) => won.push(t),
                Transition::AlreadyTerminal(t) => {
                    // The winner's task, untouched: a terminal revision 2.
                    assert!(t.is_terminal() && t.revision == 2, "{t:?}");
                }
                other => panic!("unfenced, never {other:?}"),
            }
        }
        common::write_tasks(
            &std::path::Path::new(&args[2]).join(format!("won-{racer}")),
            &won,
        );
        return;
    }
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("race");
    let store = open(cluster, &schema, "parent");
    for n in 0..TASKS {
        store
            .create(NewTask::new().id(common::id("race", n)))
            .unwrap();
    }
    let work = tempfile::tempdir().unwrap();
    let seed = Rng::from_entropy(test).next();
    let children: Vec<_> = (0..RACERS)
        .map(|r| {
            let rest = [r.to_string(), (seed + r as u64).to_string()];
            spawn(
                work.path(),
                test,
                "racer",
                &child_args(cluster, &schema, work.path(), &rest),
            )
        })
        .collect();
    children.into_iter().for_each(common::Running::finish);
    let mut winners: HashMap<TaskId, taskstore::Task> = HashMap::new();
    for r in 0..RACERS {
        for t in common::read_tasks(&work.path().join(format!("won-{r}"))) {
            let id = t.id.clone();
            assert!(
                winners.insert(id.clone(), t).is_none(),
                "two winners for {id}"
            );
        }
    }
    assert_eq!(winners.len(), TASKS, "exactly one winner per task");
    for (id, won) in &winners {
        assert_eq!(
            store.get(id).unwrap().as_ref(),
            Some(won),
            "the winner's write stands"
        );
    }
    assert!(store.list(&ListQuery::active()).unwrap().tasks.is_empty());
    assert_eq!(counter_and_active(&mut cluster.client(), &schema), (0, 0));
}

#[test]
fn no_lost_updates_across_four_processes() {
    let test = "processes::no_lost_updates_across_four_processes";
    let shared = TaskId::parse("shared").unwrap();
    if let Some((_, args)) = role() {
        let writer: usize = args[3].parse().unwrap();
        let store = child_open(&args, &format!("writer-{writer}"));
        let mut revisions = Vec::new();
        for i in 0..UPDATES_PER_PROCESS {
            let update = TaskUpdate::new().metadata(format!("w{writer}-{i}"), i);
            match store.update(&shared, update).unwrap() {
                Transition::Applied(t) => revisions.push(t.revision.to_string()),
                other => panic!("update not applied: {other:?}"),
            }
        }
        common::write_atomic(
            &std::path::Path::new(&args[2]).join(format!("revisions-{writer}")),
            revisions.join("\n").as_bytes(),
        );
        return;
    }
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("updates");
    let store = open(cluster, &schema, "parent");
    store.create(NewTask::new().id(shared.clone())).unwrap();
    let work = tempfile::tempdir().unwrap();
    let children: Vec<_> = (0..RACERS)
        .map(|w| {
            spawn(
                work.path(),
                test,
                "writer",
                &child_args(cluster, &schema, work.path(), &[w.to_string()]),
            )
        })
        .collect();
    children.into_iter().for_each(common::Running::finish);
    let total = RACERS * UPDATES_PER_PROCESS;
    let task = store.get(&shared).unwrap().unwrap();
    assert_eq!(task.revision, 1 + total as u64, "+1 per applied update");
    assert_eq!(task.metadata.len(), total, "every update's key is there");
    let mut seen: Vec<u64> = (0..RACERS)
        .flat_map(|w| {
            std::fs::read_to_string(work.path().join(format!("revisions-{w}")))
                .unwrap()
                .lines()
                .map(|l| l.parse().unwrap())
                .collect::<Vec<u64>>()
        })
        .collect();
    seen.sort_unstable();
    let expected: Vec<u64> = (2..=1 + total as u64).collect();
    assert_eq!(seen, expected, "each revision handed out exactly once");
}

/// A child's handle on the parent's schema with one connection, named
/// `name` in `pg_stat_activity`.
fn victim(args: &[String], name: &str) -> PgStore {
    // Every statement its sessions run goes to the server's log, for a
    // failing test to show (`Cluster::log_of`).
    PgStore::builder(format!(
        "{} application_name={name} options='-c log_statement=all'",
        args[0]
    ))
    .schema(&args[1])
    .instance_id(name)
    .pool_size(1)
    .open()
    .unwrap()
}

/// A client holding `held` (a statement that takes a lock) in a
/// transaction, and the child `(test, role, args)`, seen blocked on that
/// lock inside a statement of its own (as `application`). The caller ends
/// the holder's transaction (`ROLLBACK`).
fn blocked_on(
    cluster: &Cluster,
    held: &str,
    work: &std::path::Path,
    (test, role, args): (&str, &str, &[String]),
    application: &str,
) -> (postgres::Client, common::Running) {
    let (holder, holder_pid) = holding(cluster, held);
    let mut child = spawn(work, test, role, args);
    let mut client = cluster.client();
    wait_until("the child to block on the holder's lock", || {
        child.check_alive();
        blocked_by(&mut client, application, holder_pid) == 1
    });
    (holder, child)
}

#[test]
fn a_writer_killed_mid_transaction_leaves_nothing_partial() {
    let test = "processes::a_writer_killed_mid_transaction_leaves_nothing_partial";
    if let Some((what, args)) = role() {
        let store = victim(&args, "victim");
        let id = TaskId::parse(&args[3]).unwrap();
        // Blocks on the counter row the parent holds, mid-statement; killed there.
        match what.as_str() {
            "create" => drop(store.create(NewTask::new().id(id))),
            "complete" => drop(store.complete(&id, json!("victim"))),
            other => panic!("unknown role {other}"),
        }
        panic!("the parent should have killed this child first");
    }
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("killed");
    let store = open(cluster, &schema, "parent");
    let running = store
        .create(NewTask::new().id(TaskId::parse("running").unwrap()))
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut client = cluster.client();
    for (what, id) in [("create", "never"), ("complete", "running")] {
        let args = child_args(cluster, &schema, work.path(), &[id.to_owned()]);
        let counter = format!("SELECT active FROM {schema}.counters FOR UPDATE");
        let (mut holder, child) = blocked_on(
            cluster,
            &counter,
            work.path(),
            (test, what, &args),
            "victim",
        );
        child.kill();
        holder.batch_execute("ROLLBACK").unwrap();
        wait_until("the killed child's backend to end", || {
            connected(&mut client, "victim") == 0
        });
        let (counter, active) = counter_and_active(&mut client, &schema);
        assert_eq!(
            counter, active,
            "the cap counter matches the active tasks after {what}"
        );
        match what {
            // One statement: either all of it (the task stored and
            // counted) or none of it.
            "create" => {
                let made = store.get(&TaskId::parse(id).unwrap()).unwrap();
                assert_eq!(active, 1 + i64::from(made.is_some()));
            }
            // One statement: either all of it (the task completed and
            // uncounted, revision 2) or none of it.
            _ => {
                let now = store.get(&running.id).unwrap().unwrap();
                assert!(
                    now == running || (now.status == TaskStatus::Completed && now.revision == 2),
                    "{now:?}"
                );
                // The create of the round before, if it went through.
                let never = store.get(&TaskId::parse("never").unwrap()).unwrap();
                assert_eq!(
                    active,
                    i64::from(!now.is_terminal()) + i64::from(never.is_some())
                );
            }
        }
    }
}

/// A writer frozen in the middle of a transaction (stopped by a debugger,
/// a paused VM, a network that went silent) that holds the row of the
/// active-task counter, which every create, terminal transition and reap
/// of every host writes, holds the others up for the store's
/// idle-in-transaction timeout (10 s) at most, not until TCP gives up on
/// the frozen peer (hours): the server ends its session. The one such
/// transaction is a sweep's recount of a counter put out by a hand edit
/// (the row locked, then the count written); the child is frozen between
/// its count and its commit. Every other write is one statement,
/// committed on its own
/// (`a_write_whose_task_is_slow_to_reach_the_server_is_stored`). The store
/// sets the timeout on its connections unless the server or the role
/// already has one.
#[test]
fn a_writer_frozen_mid_transaction_holds_the_others_up_only_for_a_while() {
    let test = "processes::a_writer_frozen_mid_transaction_holds_the_others_up_only_for_a_while";
    if let Some((_, args)) = role() {
        let store = victim(&args, "frozen");
        // Its recount blocks on the table lock the parent holds; stopped
        // there, and then killed.
        let _ = store.sweep();
        panic!("the parent should have killed this child first");
    }
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("frozen");
    let store = open(cluster, &schema, "parent");
    let running = store.create(NewTask::new()).unwrap();
    let mut client = cluster.client();
    client
        .execute(&format!("UPDATE {schema}.counters SET active = 5"), &[])
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let args = child_args(cluster, &schema, work.path(), &[]);
    // A `SHARE` lock on the counters lets the recount lock the counter's
    // row, and holds up its write of the count.
    let (mut holder, child) = blocked_on(
        cluster,
        &format!("LOCK TABLE {schema}.counters IN SHARE MODE"),
        work.path(),
        (test, "frozen", &args),
        "frozen",
    );
    let backend: i32 = client
        .query_one(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'frozen'",
            &[],
        )
        .unwrap()
        .get(0);
    // Every thread of it stopped before the lock goes, so that none can
    // take the reply and commit: `kill` returns before the stop lands, and
    // the signal wakes the child's main thread, not the test thread that
    // runs its sweep (with the stop not waited for, 1 run in 40 under
    // load committed the recount).
    common::stop(child.child.id());
    // The child's count goes through; its commit never comes. Its session
    // then sits idle in its transaction (or, should this process stall
    // past the timeout, is already ended by the server).
    holder.batch_execute("ROLLBACK").unwrap();
    wait_until("the frozen child's statement to be done", || {
        client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE application_name = 'frozen' AND state = 'active'",
                &[],
            )
            .unwrap()
            .get::<_, i64>(0)
            == 0
    });
    // A terminal transition needs the counter: it waits for the server to
    // end the frozen session, then lands.
    let store = Arc::new(store);
    let completing = std::thread::spawn({
        let (store, id) = (Arc::clone(&store), running.id.clone());
        move || store.complete(&id, json!("done"))
    });
    let waited = std::time::Instant::now();
    while !completing.is_finished() && waited.elapsed() < common::HANG {
        std::thread::sleep(Duration::from_millis(5));
    }
    let landed = completing.is_finished();
    // Killed either way: a failing run ends here too, not in a hang.
    child.kill();
    let done = completing.join().unwrap();
    assert!(
        landed,
        "the complete waited until the frozen writer was killed"
    );
    assert!(matches!(done, Ok(Transition::Applied(_))), "{done:?}");
    let counted = counter_and_active(&mut client, &schema);
    if counted != (4, 0) {
        // Which transaction wrote the counter last, and what the frozen
        // session ran and how it ended.
        let xmin: String = client
            .query_one(&format!("SELECT xmin::text FROM {schema}.counters"), &[])
            .unwrap()
            .get(0);
        panic!(
            "the frozen recount wrote the counter: {counted:?} where (4, 0) was due; \
             the counter's xmin {xmin}; the frozen session's log:\n{}",
            cluster.log_of(backend)
        );
    }
    store.sweep().unwrap();
    assert_eq!(counter_and_active(&mut client, &schema), (0, 0));
}
