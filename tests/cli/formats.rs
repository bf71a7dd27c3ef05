//! Stores of other formats and shapes: an older store named as one and moved
//! only by `upgrade`, a newer one refused, a lost marker, a larger payload cap.

use super::*;

/// The commands that only read a store, on one of an older format (with
/// its marker, and one that lost it): `stats` and the dry runs refuse it as
/// every command that opens it does (they said one of its directories was
/// missing, and to run `verify`); `verify` reports its format (it reported
/// `expiring/` missing, which format 1 never had, checked 0 entries, and
/// `repair` advised opening the store, which every command but `--upgrade`
/// refuses), which alone passes (a lost marker beside it fails), and
/// `repair --apply` leaves it alone. None changes it, nor
/// does a dry run given `--upgrade`. `stats --upgrade` moves it, then
/// counts its tasks (the flag was ignored).
#[test]
fn an_older_store_is_named_as_one_by_the_commands_that_only_read() {
    for marker in [true, false] {
        let (_tmp, dir) = store_dir();
        let tasks = store_with_tasks(&dir);
        common::make_format_1(&dir);
        if !marker {
            fs::remove_file(dir.join("taskstore.json")).unwrap();
        }
        let dir = &dir;
        let before = snapshot(dir);
        for args in [
            &["stats"][..],
            &["sweep", "--dry-run"],
            &["reap", "--dry-run"],
        ] {
            let out = run_expect(Some(dir), args, 1);
            assert!(
                stderr(&out).contains("format 1") && stderr(&out).contains("--upgrade"),
                "marker {marker}, {args:?}: {}",
                stderr(&out)
            );
        }
        // A dry run moves nothing, even told it may.
        for args in [
            &["sweep", "--dry-run", "--upgrade"][..],
            &["reap", "--dry-run", "--upgrade"],
        ] {
            let out = run_expect(Some(dir), args, 1);
            assert!(
                stderr(&out).contains("a dry run moves nothing"),
                "marker {marker}, {args:?}: {}",
                stderr(&out)
            );
        }
        // An older format alone passes (the next open moves it); a lost
        // marker beside it is a problem.
        let code = if marker { 0 } else { 1 };
        let out = run_expect(Some(dir), &["verify", "--json"], code);
        let codes: Vec<String> = json_lines(&out)
            .iter()
            .map(|p| format!("{} {}", p["path"].as_str().unwrap(), p["problem"]))
            .collect();
        let marker_path = dir.join("taskstore.json").display().to_string();
        let mut expected = vec![format!("{marker_path} \"older_format\"")];
        if !marker {
            expected.insert(0, format!("{marker_path} \"missing\""));
        }
        assert_eq!(codes, expected, "marker {marker}");
        let out = run_expect(Some(dir), &["repair", "--apply"], code);
        assert!(
            stdout(&out).contains("older format") && !stdout(&out).contains("FAILED"),
            "marker {marker}: {}",
            stdout(&out)
        );
        assert_unchanged(&before, &snapshot(dir), "read, the store is as it was");

        let out = run_expect(Some(dir), &["stats", "--json", "--upgrade"], 0);
        let stats: Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(stats["tasks"], tasks.len(), "marker {marker}: {stats:#}");
        let written = fs::read_to_string(dir.join("taskstore.json")).unwrap();
        assert!(written.contains("\"format\":2"), "{written}");
        run_expect(Some(dir), &["verify"], 0);
    }
}

/// A store of an older format (with its marker) is no damage: the next
/// open of a service (which may upgrade it, the default) moves it. `verify`
/// reports its format as an `upgrade` finding, says in its summary that
/// its entries were not checked, and why (they are checked once an open
/// has moved it), that the next open moves it (and that `--upgrade` does
/// it now), and exits 0; `repair --apply` leaves it alone and exits 0
/// too. Nothing changes; a service's open then moves it, and `verify`
/// finds it clean. (`verify` exited 1, "1 problem(s) in 0 entries
/// checked", sending an operator after damage that is none; then it said
/// "sound (0 entries checked)", as though the store had been checked and
/// found whole.)
#[test]
fn verify_passes_a_store_of_an_older_format_that_the_next_open_moves() {
    let (_tmp, dir) = store_dir();
    let tasks = store_with_tasks(&dir);
    common::make_format_1(&dir);
    let before = snapshot(&dir);
    let marker = dir.join("taskstore.json");
    let out = run_expect(Some(&dir), &["verify", "--json"], 0);
    let findings = json_lines(&out);
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert_eq!(findings[0]["path"], marker.to_str().unwrap());
    assert_eq!(findings[0]["problem"], "older_format");
    assert_eq!(findings[0]["severity"], "upgrade");
    let out = run_expect(Some(&dir), &["verify"], 0);
    assert!(
        stdout(&out).starts_with(&format!("{}: format 1, older", marker.display())),
        "{}",
        stdout(&out)
    );
    let summary = stderr(&out);
    assert!(
        summary.contains("format 1, which the next open moves to format 2")
            && summary.contains("--upgrade")
            && !summary.contains("problem"),
        "{summary}"
    );
    assert!(
        summary.contains(
            "its entries not checked: a store of format 1 has them checked once an open has \
             moved it to format 2"
        ) && !summary.contains("sound")
            && !summary.contains("entries checked"),
        "{summary}"
    );
    let out = run_expect(Some(&dir), &["repair", "--apply"], 0);
    assert!(
        stdout(&out).contains("left alone") && stderr(&out).contains("0 remain"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_unchanged(&before, &snapshot(&dir), "verify and repair");
    // A service's open moves it.
    drop(open(&dir));
    let out = run_expect(Some(&dir), &["verify"], 0);
    assert!(stderr(&out).contains("clean"), "{}", stderr(&out));
    let out = run_expect(Some(&dir), &["list", "--json"], 0);
    assert_eq!(json_lines(&out).len(), tasks.len());
}

/// A command that opens a store of an older format refuses it unless
/// given `--upgrade`, and changes nothing: an older service may still run
/// on it, and would refuse the store once moved. With `--upgrade` it says,
/// before it waits, that it moves the store once no other process has it
/// open (here one still has: its handles lock held shared, as a handle
/// holds it), then moves it. (`list` and `show` moved the store without a
/// word, and waited for the other process in silence.)
#[test]
fn an_older_store_is_moved_only_with_upgrade_and_the_wait_is_said() {
    use std::io::BufRead as _;
    let (_tmp, dir) = store_dir();
    let tasks = store_with_tasks(&dir);
    common::make_format_1(&dir);
    let before = snapshot(&dir);
    for args in [&["list"][..], &["show", tasks[0].id.as_str()], &["sweep"]] {
        let out = run_expect(Some(&dir), args, 1);
        assert!(
            stderr(&out).contains("format 1") && stderr(&out).contains("--upgrade"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert_unchanged(&before, &snapshot(&dir), "refused, the store is as it was");

    let path = dir.join("locks").join("handles.lock");
    let held = fs::File::open(&path).unwrap();
    held.lock_shared().unwrap();
    let mut listing = taskstore(Some(&dir), &["list", "--json", "--upgrade"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = String::new();
    std::io::BufReader::new(listing.stderr.take().unwrap())
        .read_line(&mut said)
        .unwrap();
    assert!(
        said.contains("moving") && said.contains("waiting"),
        "{said}"
    );
    held.unlock().unwrap();
    let out = listing.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(json_lines(&out).len(), tasks.len());
    let marker = fs::read_to_string(dir.join("taskstore.json")).unwrap();
    assert!(marker.contains("\"format\":2"), "{marker}");
}

/// A store that lost its marker (`taskstore.json`) but has its task areas
/// is opened by the commands, whose open writes the marker again, as
/// `repair` tells the operator; a directory with neither is still no
/// store, and a symlink to a store is refused by name by every command
/// that takes a store, and changes nothing there. (`list` refused the
/// store "holds no taskstore.json", so `repair`'s advice could not be
/// followed; a symlink was "not a directory", and still was for `stats`,
/// `verify` and `repair`, which read the store without a handle.)
#[test]
fn a_store_that_lost_its_marker_opens_and_a_symlink_is_named() {
    let (tmp, dir) = store_dir();
    let tasks = store_with_tasks(&dir);
    fs::remove_file(dir.join("taskstore.json")).unwrap();
    let out = run_expect(Some(&dir), &["repair"], 0);
    assert!(stdout(&out).contains("left alone"), "{}", stdout(&out));
    let out = run_expect(Some(&dir), &["list", "--json"], 0);
    assert_eq!(json_lines(&out).len(), tasks.len());
    assert!(dir.join("taskstore.json").exists(), "the marker is back");
    assert_eq!(stdout(&run_expect(Some(&dir), &["verify"], 0)), "");

    let other = tmp.path().join("project");
    fs::create_dir_all(other.join("tmp")).unwrap();
    fs::create_dir_all(other.join("locks")).unwrap();
    for command in ["list", "verify", "stats"] {
        let out = run_expect(Some(&other), &[command], 1);
        assert!(
            stderr(&out).contains("not a store"),
            "{command}: {}",
            stderr(&out)
        );
    }
    assert!(!other.join("active").exists(), "nothing made");
    assert!(
        !other.join("locks").join("handles.lock").exists(),
        "nothing made"
    );
    // Another program's directory with an `active/` and a `done/` of its
    // own is not a store either, nor a store of format 1 that lost its
    // marker (one has the `tmp/` and `locks/` every store has): it was
    // called one, and `--upgrade` made it a store and set its files aside.
    let app = tmp.path().join("app");
    fs::create_dir_all(app.join("active")).unwrap();
    fs::create_dir_all(app.join("done")).unwrap();
    fs::write(app.join("active").join("job1.json"), b"{\"id\":\"job1\"}").unwrap();
    fs::write(app.join("done").join("README"), b"notes").unwrap();
    let before = snapshot(&app);
    for args in [
        &["list"][..],
        &["--upgrade", "list"],
        &["verify"],
        &["stats"],
        &["repair", "--apply"],
    ] {
        let out = run_expect(Some(&app), args, 1);
        assert!(
            stderr(&out).contains("not a store"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert_eq!(snapshot(&app), before, "nothing made or moved");

    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&dir, &link).unwrap();
    let id = first(&tasks, TaskStatus::Working).id;
    let before = snapshot(&dir);
    for args in [
        &["list"][..],
        &["show", id.as_str()],
        &["stats"],
        &["verify"],
        &["repair"],
        &["repair", "--apply"],
        &["sweep"],
        &["sweep", "--dry-run"],
        &["reap"],
        &["reap", "--dry-run"],
        &["cancel", id.as_str()],
    ] {
        let out = run_expect(Some(&link), args, 1);
        assert!(
            stderr(&out).contains(&format!(
                "no store at {}: a symlink (a store is never opened through one",
                link.display()
            )),
            "taskstore {args:?}: {}",
            stderr(&out)
        );
    }
    assert_unchanged(&before, &snapshot(&dir), "nothing done through the link");
}

/// A store whose marker names a newer format is refused by what reads it
/// without a handle (the counts, the dry runs) as by `sweep` and `reap`
/// themselves: this version's rules may misread it. (`stats` and the dry
/// runs read it, and said what they would reap.)
#[test]
fn reads_without_a_handle_refuse_a_store_of_a_newer_format_as_the_real_runs_do() {
    let (_tmp, dir) = store_dir();
    let old = gone_an_hour_ago(&dir);
    old.create(NewTask::new()).unwrap();
    drop(old);
    fs::write(
        dir.join("taskstore.json"),
        b"{\"format\":9,\"kind\":\"taskstore\"}\n",
    )
    .unwrap();
    let before = snapshot(&dir);
    for args in [
        &["reap"][..],
        &["sweep"],
        &["stats"],
        &["reap", "--dry-run"],
        &["sweep", "--dry-run"],
    ] {
        let out = run_expect(Some(&dir), args, 1);
        assert!(
            stderr(&out).contains("format version 9"),
            "taskstore {args:?}: {}",
            stderr(&out)
        );
    }
    assert_unchanged(&before, &snapshot(&dir), "nothing read, nothing changed");
}

/// The command reads whatever a service stored, whatever payload cap the
/// service set (up to `MAX_MAX_PAYLOAD_BYTES`): a task past the default
/// cap is listed, shown and swept, as its dry run says. (The command read
/// with the default cap: `list` skipped the task, `show` failed, and
/// `sweep` deleted nothing and exited 0 where its dry run said it would
/// delete it.)
#[test]
fn the_command_reads_tasks_a_service_stored_under_a_larger_payload_cap() {
    let (_tmp, dir) = store_dir();
    let service = an_hour_ago(&dir)
        .max_payload_bytes(64 << 20)
        .open()
        .unwrap();
    let big = "x".repeat(20 << 20);
    let expired = service
        .create(
            NewTask::new()
                .ttl(Duration::from_secs(60))
                .metadata("big", big.clone()),
        )
        .unwrap();
    let task = service.create(NewTask::new().metadata("big", big)).unwrap();
    drop(service);
    let preview = run_expect(Some(&dir), &["sweep", "--dry-run"], 0);
    assert!(stdout(&preview).contains(&format!("would delete {}", expired.id)));
    let swept = run_expect(Some(&dir), &["sweep"], 0);
    assert!(
        stderr(&swept).contains("deleted 1 expired task(s)"),
        "{}\n{}",
        stdout(&swept),
        stderr(&swept)
    );
    let listed = run_expect(Some(&dir), &["list", "--json"], 0);
    let lines = json_lines(&listed);
    assert_eq!(lines.len(), 1, "{}", stderr(&listed));
    assert_eq!(lines[0]["taskId"], task.id.as_str());
    let shown = run_expect(Some(&dir), &["show", task.id.as_str()], 0);
    assert!(stdout(&shown).contains(task.id.as_str()));
}
