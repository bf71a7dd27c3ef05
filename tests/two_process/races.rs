//! Processes racing on one store: a lifecycle split across instances, four
//! processes racing terminal transitions on the same tasks, and no lost updates
//! when four processes update one task.

use super::*;

/// Processes that race.
const RACERS: usize = 4;
/// Updates per process in the lost-update test.
const UPDATES_PER_PROCESS: usize = 250;

// ---------------------------------------------------------------------------
// A lifecycle split across instances.

#[test]
fn lifecycle_split_across_instances() {
    if let Some((role, args)) = common::role() {
        return lifecycle_child(&role, &args);
    }
    let tmp = tempfile::tempdir().unwrap();
    let (store, work) = (tmp.path().join("store"), tmp.path().to_owned());
    let test = "races::lifecycle_split_across_instances";
    for role in ["create_in_a", "update_in_b", "complete_in_a", "fail_in_b"] {
        spawn(&work, test, role, &args(&store, &work, &[])).finish();
    }
    let completed = read_tasks(&work.join("completed.jsonl")).remove(0);
    let s = open(&store, "parent");
    assert_eq!(s.get(&completed.id).unwrap().as_ref(), Some(&completed));
    assert_eq!(s.list(&ListQuery::all()).unwrap().tasks, vec![completed]);
    assert!(s.list(&ListQuery::active()).unwrap().tasks.is_empty());
}

fn lifecycle_child(role: &str, args: &[String]) {
    let (store, work) = dirs(args);
    let life = TaskId::parse("life").unwrap();
    match role {
        "create_in_a" => {
            let a = open(&store, "A");
            let t = a
                .create(NewTask::new().id(life).metadata("step", "created in A"))
                .unwrap();
            assert_eq!(t.owner.as_deref(), Some("A"));
            write_tasks(&work.join("created.jsonl"), &[t]);
        }
        "update_in_b" => {
            let created = read_tasks(&work.join("created.jsonl")).remove(0);
            let b = open(&store, "B");
            assert_eq!(b.get(&life).unwrap(), Some(created.clone()));
            let t = b
                .update(
                    &life,
                    TaskUpdate::new()
                        .status_message("updated in B")
                        .metadata("b", 1),
                )
                .unwrap();
            let Transition::Applied(t) = t else {
                panic!("update in B not applied: {t:?}")
            };
            assert_eq!(t.revision, created.revision + 1);
            assert_eq!(
                t.owner.as_deref(),
                Some("A"),
                "an update does not change the owner"
            );
            assert_eq!(t.metadata["step"], "created in A");
            write_tasks(&work.join("updated.jsonl"), &[t]);
        }
        "complete_in_a" => {
            let updated = read_tasks(&work.join("updated.jsonl")).remove(0);
            let a = open(&store, "A");
            assert_eq!(a.get(&life).unwrap(), Some(updated.clone()));
            let t = a.complete(&life, json!({"answer": 42})).unwrap();
            let Transition::Applied(t) = t else {
                panic!("complete in A not applied: {t:?}")
            };
            assert_eq!(t.status, TaskStatus::Completed);
            assert_eq!(t.revision, updated.revision + 1);
            assert_eq!(t.lease_expires_at, None, "a terminal task holds no lease");
            write_tasks(&work.join("completed.jsonl"), &[t]);
        }
        "fail_in_b" => {
            let completed = read_tasks(&work.join("completed.jsonl")).remove(0);
            let b = open(&store, "B");
            assert_eq!(b.get(&life).unwrap(), Some(completed.clone()));
            let t = b.fail(&life, json!({"code": "too late"})).unwrap();
            assert_eq!(t, Transition::AlreadyTerminal(completed.clone()));
            let t = b
                .update(&life, TaskUpdate::new().status_message("too late"))
                .unwrap();
            assert_eq!(t, Transition::AlreadyTerminal(completed.clone()));
            assert_eq!(b.get(&life).unwrap(), Some(completed));
        }
        other => panic!("unknown role {other}"),
    }
}

// ---------------------------------------------------------------------------
// Four processes race complete / fail / cancel on the same tasks.

#[test]
fn four_processes_race_terminal_transitions() {
    if let Some((role, args)) = common::role() {
        assert_eq!(role, "racer");
        return racer(&args);
    }
    let tmp = tempfile::tempdir().unwrap();
    let (store, work) = (tmp.path().join("store"), tmp.path().to_owned());
    let setup = open_fast(&store, "parent");
    for i in 0..TASKS {
        setup.create(NewTask::new().id(id("race", i))).unwrap();
    }
    drop(setup);
    let mut children: Vec<_> = (0..RACERS)
        .map(|k| {
            spawn(
                &work,
                "races::four_processes_race_terminal_transitions",
                "racer",
                &args(&store, &work, &[k.to_string()]),
            )
        })
        .collect();
    wait_for(&mut children, "every racer to be ready", || {
        (0..RACERS).all(|k| work.join(format!("ready-{k}")).exists())
    });
    touch(&work.join("go"));
    for c in children {
        c.finish();
    }

    let s = open(&store, "parent");
    let finals: BTreeMap<TaskId, Task> = (0..TASKS)
        .map(|i| {
            let t = s.get(&id("race", i)).unwrap().expect("raced task exists");
            (t.id.clone(), t)
        })
        .collect();
    let mut applied_by: BTreeMap<TaskId, usize> = BTreeMap::new();
    for k in 0..RACERS {
        for t in read_tasks(&work.join(format!("applied-{k}.jsonl"))) {
            assert_eq!(
                &t, &finals[&t.id],
                "the applied transition is the final one"
            );
            assert_eq!(t.revision, 2, "one write after creation");
            if let Some(other) = applied_by.insert(t.id.clone(), k) {
                panic!("task {} applied by racers {other} and {k}", t.id);
            }
        }
        for t in read_tasks(&work.join(format!("already-{k}.jsonl"))) {
            assert_eq!(
                &t, &finals[&t.id],
                "AlreadyTerminal returns the winner untouched"
            );
        }
        // Every process then reads the same status, payload and lastUpdatedAt.
        let seen = read_tasks(&work.join(format!("final-{k}.jsonl")));
        assert_eq!(seen.len(), TASKS);
        for t in seen {
            assert_eq!(&t, &finals[&t.id], "racer {k} reads what everyone reads");
        }
    }
    assert_eq!(
        applied_by.len(),
        TASKS,
        "exactly one applied transition per task"
    );
    for (id, t) in &finals {
        let k = applied_by[id];
        assert!(t.is_terminal());
        let by = match t.status {
            TaskStatus::Completed => &t.result.as_ref().unwrap()["by"],
            TaskStatus::Failed => &t.error.as_ref().unwrap()["by"],
            _ => &json!(
                t.status_message
                    .as_deref()
                    .unwrap()
                    .trim_start_matches("by ")
            ),
        };
        assert_eq!(
            by,
            &json!(k.to_string()),
            "task {id} carries its winner's payload"
        );
    }
    assert!(s.list(&ListQuery::active()).unwrap().tasks.is_empty());
}

fn racer(args: &[String]) {
    let (store, work) = dirs(args);
    let k: usize = args[2].parse().unwrap();
    let s = open(&store, &format!("racer-{k}"));
    let mut order: Vec<usize> = (0..TASKS).collect();
    let mut rng = Rng::from_entropy(&format!("racer {k}"));
    // Half of the racers go in the same order as another, to collide often.
    if k % 2 == 1 {
        rng.shuffle(&mut order);
    }
    touch(&work.join(format!("ready-{k}")));
    wait_until("go", || work.join("go").exists());
    let (mut applied, mut already) = (Vec::new(), Vec::new());
    for i in order {
        let tid = id("race", i);
        let by = k.to_string();
        let t = match rng.below(3) {
            0 => s.complete(&tid, json!({ "by": by })),
            1 => s.fail(&tid, json!({ "by": by })),
            _ => s.cancel(&tid, Some(format!("by {by}"))),
        }
        .unwrap();
        match t {
            Transition::Applied(t) => applied.push(t),
            Transition::AlreadyTerminal(t) => already.push(t),
            other => panic!("unfenced, never {other:?}"),
        }
    }
    write_tasks(&work.join(format!("applied-{k}.jsonl")), &applied);
    write_tasks(&work.join(format!("already-{k}.jsonl")), &already);
    touch(&work.join(format!("raced-{k}")));
    wait_until("every racer to finish", || {
        (0..RACERS).all(|j| work.join(format!("raced-{j}")).exists())
    });
    let seen: Vec<Task> = (0..TASKS)
        .map(|i| s.get(&id("race", i)).unwrap().expect("raced task exists"))
        .collect();
    write_tasks(&work.join(format!("final-{k}.jsonl")), &seen);
}

// ---------------------------------------------------------------------------
// No lost updates: four processes update one task.

#[test]
fn no_lost_updates_across_four_processes() {
    if let Some((role, args)) = common::role() {
        assert_eq!(role, "updater");
        return updater(&args);
    }
    let tmp = tempfile::tempdir().unwrap();
    let (store, work) = (tmp.path().join("store"), tmp.path().to_owned());
    let s = open(&store, "parent");
    let created = s
        .create(NewTask::new().id(TaskId::parse("counter").unwrap()))
        .unwrap();
    let mut children: Vec<_> = (0..RACERS)
        .map(|k| {
            spawn(
                &work,
                "races::no_lost_updates_across_four_processes",
                "updater",
                &args(&store, &work, &[k.to_string()]),
            )
        })
        .collect();
    wait_for(&mut children, "every updater to be ready", || {
        (0..RACERS).all(|k| work.join(format!("ready-{k}")).exists())
    });
    touch(&work.join("go"));
    for c in children {
        c.finish();
    }

    let t = s.get(&created.id).unwrap().unwrap();
    let total = (RACERS * UPDATES_PER_PROCESS) as u64;
    assert_eq!(t.revision, created.revision + total);
    assert_eq!(t.metadata.len(), RACERS * UPDATES_PER_PROCESS);
    for k in 0..RACERS {
        for n in 0..UPDATES_PER_PROCESS {
            assert_eq!(
                t.metadata[&format!("p{k}-{n:03}")],
                json!(n),
                "key p{k}-{n}"
            );
        }
    }
    // Every applied write got its own revision: together they are exactly
    // created+1 ..= created+1000, each once.
    let mut revisions = BTreeSet::new();
    for k in 0..RACERS {
        let text = fs::read_to_string(work.join(format!("revisions-{k}"))).unwrap();
        for r in text.lines() {
            assert!(
                revisions.insert(r.parse::<u64>().unwrap()),
                "revision {r} twice"
            );
        }
    }
    let expected: BTreeSet<u64> = (created.revision + 1..=created.revision + total).collect();
    assert_eq!(revisions, expected);
}

fn updater(args: &[String]) {
    let (store, work) = dirs(args);
    let k: usize = args[2].parse().unwrap();
    let s = open(&store, &format!("updater-{k}"));
    let counter = TaskId::parse("counter").unwrap();
    touch(&work.join(format!("ready-{k}")));
    wait_until("go", || work.join("go").exists());
    let mut revisions = Vec::new();
    for n in 0..UPDATES_PER_PROCESS {
        let t = s
            .update(
                &counter,
                TaskUpdate::new().metadata(format!("p{k}-{n:03}"), n),
            )
            .unwrap();
        let Transition::Applied(t) = t else {
            panic!("update not applied: {t:?}")
        };
        assert!(
            revisions.last().is_none_or(|&last| t.revision > last),
            "revisions rise within one process"
        );
        // The task as written holds this process's earlier keys: none lost.
        for m in 0..=n {
            assert!(t.metadata.contains_key(&format!("p{k}-{m:03}")));
        }
        revisions.push(t.revision);
    }
    let text: String = revisions.iter().map(|r| format!("{r}\n")).collect();
    write_atomic(&work.join(format!("revisions-{k}")), text.as_bytes());
}
