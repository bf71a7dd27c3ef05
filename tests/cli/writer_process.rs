//! The command beside a writer process: `cancel` racing it and saying who won,
//! and each command run while it writes.

use super::*;

// ---------------------------------------------------------------------------
// cancel, racing a writer process

#[test]
fn cancel_races_a_writer_process_and_says_who_won() {
    if let Some((role, args)) = common::role() {
        assert_eq!(role, "completer");
        return completer(&args);
    }
    const ROUNDS: usize = 16;
    let (tmp, dir) = store_dir();
    let work = tmp.path().to_owned();
    let store = open(&dir);
    let mut rng = Rng::from_entropy("cancel race");
    let (mut cli_won, mut writer_won) = (0, 0);
    for round in 0..ROUNDS {
        let task = store.create(NewTask::new()).unwrap();
        let go = work.join(format!("go-{round}"));
        let report = work.join(format!("completer-{round}"));
        let delay_us = rng.below(20_000);
        let mut child = spawn(
            &work,
            "writer_process::cancel_races_a_writer_process_and_says_who_won",
            "completer",
            &[
                dir.display().to_string(),
                task.id.to_string(),
                go.display().to_string(),
                report.display().to_string(),
                delay_us.to_string(),
            ],
        );
        wait_for(
            std::slice::from_mut(&mut child),
            "the completer to be ready",
            || work.join(format!("go-{round}.ready")).exists(),
        );
        touch(&go);
        let out = run_expect(Some(&dir), &["cancel", task.id.as_str(), "--json"], 0);
        child.finish();
        let cli: Value = serde_json::from_str(&stdout(&out)).unwrap();
        let writer_applied = fs::read_to_string(&report).unwrap() == "applied";
        let final_status = store.get(&task.id).unwrap().unwrap().status;
        match cli["transition"].as_str() {
            Some("applied") => {
                assert!(!writer_applied, "round {round}: both won");
                assert_eq!(final_status, TaskStatus::Cancelled);
                assert_eq!(cli["status"], "cancelled");
                cli_won += 1;
            }
            Some("already_terminal") => {
                assert!(writer_applied, "round {round}: neither won");
                assert_eq!(final_status, TaskStatus::Completed);
                assert_eq!(cli["status"], "completed", "the CLI says who won");
                writer_won += 1;
            }
            other => panic!("round {round}: unexpected transition {other:?}"),
        }
    }
    eprintln!(
        "cancel race: the command won {cli_won}, the writer process {writer_won} of {ROUNDS}"
    );
    assert_eq!(cli_won + writer_won, ROUNDS);

    // The text form says it too.
    let task = store.create(NewTask::new()).unwrap();
    assert!(store.complete(&task.id, json!(1)).unwrap().is_applied());
    let out = run_expect(Some(&dir), &["cancel", task.id.as_str()], 0);
    assert!(
        stdout(&out).starts_with("already terminal:") && stdout(&out).contains("completed"),
        "{}",
        stdout(&out)
    );
    let task = store.create(NewTask::new()).unwrap();
    let out = run_expect(Some(&dir), &["cancel", task.id.as_str()], 0);
    assert!(stdout(&out).starts_with("applied:"), "{}", stdout(&out));
}

/// Completes one task once the go file appears (after a random delay, so
/// that either side may win), and reports whether it won.
fn completer(args: &[String]) {
    let (dir, id) = (Path::new(&args[0]), TaskId::parse(&args[1]).unwrap());
    let (go, report) = (Path::new(&args[2]), Path::new(&args[3]));
    let delay = Duration::from_micros(args[4].parse().unwrap());
    let store = open(dir);
    touch(&PathBuf::from(format!("{}.ready", go.display())));
    wait_until("the go file", || go.exists());
    std::thread::sleep(delay);
    let won = store.complete(&id, json!("done")).unwrap().is_applied();
    common::write_atomic(report, if won { b"applied" } else { b"lost" });
}

// ---------------------------------------------------------------------------
// Beside a writer process

/// The commands, each run many times while a writer process creates,
/// updates, finishes and deletes tasks, some with TTLs that lapse during the
/// test (the sweeps delete them) and some abandoned (the reaps fail them):
/// none reports a false problem, and no task the writer acknowledged is lost
/// or changed, which the end checks through the API against the writer's
/// journal.
#[test]
fn commands_run_beside_a_writer_process() {
    if let Some((role, args)) = common::role() {
        assert_eq!(role, "writer");
        return writer(&args);
    }
    let (tmp, dir) = store_dir();
    let work = tmp.path().to_owned();
    store_with_tasks(&dir);
    let stop = work.join("stop");
    let journal = work.join("journal");
    let mut child = spawn(
        &work,
        "writer_process::commands_run_beside_a_writer_process",
        "writer",
        &[
            dir.display().to_string(),
            stop.display().to_string(),
            journal.display().to_string(),
        ],
    );
    let rounds = |work: &Path| -> u64 {
        fs::read_to_string(work.join("stop.progress"))
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    };
    wait_for(
        std::slice::from_mut(&mut child),
        "the writer's first rounds",
        || rounds(&work) > 0,
    );
    // The writer's long-running tasks: running until it stops.
    let running: Vec<String> = fs::read_to_string(work.join("stop.running"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(!running.is_empty());
    // Until the writer has made many rounds beside them, each command ran
    // several times, and the sweeps and reaps had something to do.
    let (mut passes, mut swept, mut reaped) = (0, 0, 0);
    while passes < 8 || rounds(&work) < 200 || swept == 0 || reaped == 0 {
        child.check_alive();
        assert!(passes < 10_000, "the writer makes no progress");
        let shown = running[passes % running.len()].as_str();
        for args in [
            &["list", "--json"][..],
            &["list", "--active"],
            &["show", shown],
            &["stats", "--json"],
            &["verify"],
            &["repair"],
            &["repair", "--apply"],
            &["sweep"],
            &["reap"],
        ] {
            let out = run_expect(Some(&dir), args, 0);
            assert!(
                !stderr(&out).contains("error") && !stderr(&out).contains("skipped"),
                "pass {passes}, {args:?}: {}",
                stderr(&out)
            );
            let text = stdout(&out);
            match args[0] {
                "verify" | "repair" => assert_eq!(text, "", "pass {passes}: a false problem"),
                "show" => {
                    let task: Task = serde_json::from_str(&text).unwrap();
                    assert_eq!(task.id.as_str(), shown);
                    assert_eq!(task.status, TaskStatus::Working, "pass {passes}");
                }
                "sweep" => {
                    // A live writer's temp files and moves are not a
                    // crashed writer's leftovers.
                    let text = stderr(&out);
                    let deleted: usize = text
                        .strip_prefix("deleted ")
                        .and_then(|t| t.split(' ').next())
                        .and_then(|n| n.parse().ok())
                        .unwrap_or_else(|| panic!("pass {passes}: {text}"));
                    assert!(
                        text.contains("; cleaned 0 leftover"),
                        "pass {passes}: {text}"
                    );
                    swept += deleted;
                }
                "reap" => {
                    for line in text.lines() {
                        let owner = line.rsplit("owner ").next().unwrap_or_default();
                        assert_ne!(owner, "writer", "pass {passes}: reaped a live task: {line}");
                        if owner == "abandoned" {
                            reaped += 1;
                        }
                    }
                }
                _ => {}
            }
        }
        passes += 1;
    }
    touch(&stop);
    child.finish();
    let out = run_expect(Some(&dir), &["verify"], 0);
    assert_eq!(stdout(&out), "");

    // Every task the writer acknowledged is as it left it: but those it
    // deleted, those whose TTL lapsed (gone for every reader), and the
    // abandoned ones, which a reap may have failed.
    let api = open(&dir);
    let (mut kept, mut expired, mut deleted, mut orphans) = (0, 0, 0, 0);
    for line in fs::read_to_string(&journal).unwrap().lines() {
        let entry: Value = serde_json::from_str(line).unwrap();
        let id = TaskId::parse(entry["id"].as_str().unwrap()).unwrap();
        if entry["task"].is_null() {
            assert_eq!(api.get(&id).unwrap(), None, "{id}: deleted by the writer");
            deleted += 1;
            continue;
        }
        let written: Task = serde_json::from_value(entry["task"].clone()).unwrap();
        let before = api.now();
        let got = api.get(&id).unwrap();
        let after = api.now();
        match written.expires_at() {
            Some(at) if at <= before => {
                assert_eq!(got, None, "{id}: expired");
                expired += 1;
            }
            // Expired while it was read: either is right.
            Some(at) if at <= after => {
                assert!(got.is_none() || got.as_ref() == Some(&written), "{id}")
            }
            _ if entry["orphan"] == true => {
                let got = got.unwrap_or_else(|| panic!("{id}: an abandoned task lost"));
                if got != written {
                    assert_eq!(got.status, TaskStatus::Failed, "{id}: {got:?}");
                    assert_eq!(got.error.as_ref().unwrap()["code"], "orphaned", "{id}");
                    assert_eq!(got.created_at, written.created_at, "{id}");
                }
                orphans += 1;
            }
            _ => {
                assert_eq!(got.as_ref(), Some(&written), "{id}: as the writer left it");
                kept += 1;
            }
        }
    }
    assert!(kept > 0 && expired > 0 && deleted > 0 && orphans > 0);
    eprintln!(
        "the writer made {} rounds beside {passes} passes of the commands, which swept \
         {swept} expired tasks and reaped {reaped} abandoned ones; of the tasks it \
         acknowledged, {kept} are as it left them, {expired} expired, {deleted} it \
         deleted, {orphans} abandoned",
        rounds(&work)
    );
}
