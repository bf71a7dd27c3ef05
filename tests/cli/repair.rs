//! `repair`: a dry run by default, `--apply` leaving a clean store, what only
//! a person can decide left alone, a full quarantine, a broken marker, and the
//! reads that set a corrupt task or foreign entry aside.

use super::*;

// ---------------------------------------------------------------------------
// repair

#[test]
fn repair_is_a_dry_run_by_default_and_apply_leaves_a_clean_store() {
    let (_tmp, dir) = store_dir();
    let tasks = store_with_tasks(&dir);
    // Every kind of damage that repair fixes, at once (those planted through
    // an open store first: opening a store resolves some damage itself).
    let fixable = [
        "a missing index entry",
        "a corrupt finished task with a TTL",
        "a corrupt task file",
        "an interrupted move",
        "a stale running copy beside the terminal one",
        "a damaged stale copy",
        "a dead writer's temp file",
        "a stale index entry",
        "a foreign file among the tasks",
        "a foreign file in tmp/",
        "a task file readable by others",
        "a directory readable by others",
        "a marker readable by others",
        "a symlink for a task file",
        "a symlink for a lock file",
        "a directory for a task file",
    ];
    for name in fixable {
        let damage = DAMAGE.iter().find(|d| d.name == name).unwrap();
        (damage.plant)(&dir, &tasks);
    }
    let out = run_expect(Some(&dir), &["verify", "--json"], 1);
    let problems = json_lines(&out);
    assert!(
        problems.len() >= fixable.len(),
        "{problems:#?}\n{}",
        stderr(&out)
    );

    let before = snapshot(&dir);
    for args in [&["repair"][..], &["repair", "--dry-run"]] {
        let out = run_expect(Some(&dir), args, 0);
        assert!(stdout(&out).contains(": would "), "{}", stdout(&out));
        assert!(!stdout(&out).contains("left alone"), "{}", stdout(&out));
        assert!(
            stderr(&out).contains("nothing was changed"),
            "{}",
            stderr(&out)
        );
        assert_unchanged(&before, &snapshot(&dir), "a dry run changes nothing");
    }

    let out = run_expect(Some(&dir), &["repair", "--apply"], 0);
    assert!(!stdout(&out).contains("FAILED"), "{}", stdout(&out));
    let out = run_expect(Some(&dir), &["verify"], 0);
    assert_eq!(stdout(&out), "");

    // What readers saw is what they see: the repairs changed no readable
    // task (the corrupt, damaged and symlinked files are set aside).
    let store = open(&dir);
    let cancelled = first(&tasks, TaskStatus::Cancelled);
    assert_eq!(store.get(&cancelled.id).unwrap(), Some(cancelled.clone()));
    assert!(task_path(&dir, "done", &cancelled.id).exists());
    let failed = first(&tasks, TaskStatus::Failed);
    assert_eq!(store.get(&failed.id).unwrap(), Some(failed));
    assert_eq!(
        store.list(&ListQuery::active()).unwrap().tasks.len(),
        3,
        "the running tasks but the symlinked one"
    );
    assert!(
        fs::read_dir(dir.join("quarantine")).unwrap().count() >= 5,
        "unreadable and foreign files are set aside, not deleted"
    );
}

/// What only a person can decide is left as it is, said, and makes
/// `repair --apply` exit 1: the store still has a problem.
#[test]
fn repair_leaves_alone_what_only_a_person_can_decide() {
    for name in [
        "a task file of a newer format",
        "a task file larger than any store writes",
        "a running task in done/",
        "a foreign file at the root",
    ] {
        let damage = DAMAGE.iter().find(|d| d.name == name).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let tasks = store_with_tasks(&dir);
        let path = (damage.plant)(&dir, &tasks);
        let before = snapshot(&dir);
        // The dry run plans; the real run leaves the store with a problem,
        // and says so by its status (`repair --apply && start` must not
        // start: it exited 0).
        run_expect(Some(&dir), &["repair"], 0);
        // `verify` does not send the reader to a repair that can fix none
        // of it (it always ended "`taskstore repair` says what it can
        // fix").
        let out = run_expect(Some(&dir), &["verify"], 1);
        assert!(
            stderr(&out).contains("1 problem(s)")
                && stderr(&out).contains("none of them a repair can fix"),
            "{name}: {}",
            stderr(&out)
        );
        let out = run_expect(Some(&dir), &["repair", "--apply"], 1);
        assert!(
            stdout(&out).contains(&format!("{}: ", path.display()))
                && stdout(&out).contains("left alone"),
            "{name}: {}",
            stdout(&out)
        );
        assert_unchanged(&before, &snapshot(&dir), name);
    }
    // One it can fix beside one it cannot: it says how many (and a
    // leftover apart).
    let (_tmp, dir) = store_dir();
    let tasks = store_with_tasks(&dir);
    for name in [
        "a foreign file at the root",
        "a task file readable by others",
        "a dead writer's temp file",
    ] {
        let damage = DAMAGE.iter().find(|d| d.name == name).unwrap();
        (damage.plant)(&dir, &tasks);
    }
    let out = run_expect(Some(&dir), &["verify"], 1);
    assert!(
        stderr(&out).contains("2 problem(s)")
            && stderr(&out).contains("`taskstore repair --apply` fixes 1 of them")
            && stderr(&out).contains("1 leftover(s)"),
        "{}",
        stderr(&out)
    );
}

/// A repair skipped for a full `quarantine/` leaves the unreadable file in
/// place: `repair --apply` says so and exits 1, as `verify` still does.
/// (It exited 0: only what it left alone or failed counted.)
#[test]
fn repair_exits_1_while_a_full_quarantine_keeps_a_problem_in_place() {
    let (_tmp, dir) = store_dir();
    store_with_tasks(&dir);
    for i in 0..1_000 {
        fs::write(dir.join("quarantine").join(format!("old-{i}")), b"x").unwrap();
    }
    let bad = task_path(&dir, "active", &TaskId::new());
    fs::write(&bad, b"{").unwrap();
    let stray = dir.join("active").join("stray.txt");
    fs::write(&stray, b"x").unwrap();
    let out = run_expect(Some(&dir), &["repair", "--apply"], 1);
    assert!(
        stdout(&out).contains("skipped") && stderr(&out).contains("2 remain"),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    // Each says why (a foreign name said "gone, the quarantine is full, or
    // the store is read-only", whichever it was).
    assert!(
        stdout(&out).contains(&format!(
            "{}: not a name this store uses: set it aside into quarantine/: skipped (the quarantine is full (1000 entries))",
            stray.display()
        )),
        "{}",
        stdout(&out)
    );
    assert!(bad.exists() && stray.exists(), "left in place");
    run_expect(Some(&dir), &["verify"], 1);
}

/// A store marker that does not read (corrupt, a symlink, a directory)
/// is left alone by `repair`, which says how to fix it, and the advice
/// works: once it is removed, the next open (`show`) writes it again and
/// `verify` finds the store clean. (It said "the store's layout itself is
/// wrong; fix it by hand".)
#[test]
fn a_broken_marker_is_left_alone_with_how_to_fix_it() {
    let unreadable = DAMAGE
        .iter()
        .find(|d| d.name == "an unreadable marker")
        .unwrap();
    let broken = [
        Damage {
            name: "a corrupt marker",
            plant: unreadable.plant,
            problem: unreadable.problem,
            severity: "problem",
        },
        Damage {
            name: "a symlink for the marker",
            plant: |dir, _| {
                let path = dir.join("taskstore.json");
                fs::remove_file(&path).unwrap();
                std::os::unix::fs::symlink("/etc/hostname", &path).unwrap();
                path
            },
            problem: "symlink",
            severity: "problem",
        },
        Damage {
            name: "a directory for the marker",
            plant: |dir, _| {
                let path = dir.join("taskstore.json");
                fs::remove_file(&path).unwrap();
                fs::create_dir(&path).unwrap();
                path
            },
            problem: "not_a_file",
            severity: "problem",
        },
    ];
    for damage in &broken {
        let what = damage.name;
        let (_tmp, dir) = store_dir();
        let tasks = store_with_tasks(&dir);
        let marker = (damage.plant)(&dir, &tasks);
        let out = run_expect(Some(&dir), &["verify", "--json"], 1);
        assert_eq!(json_lines(&out)[0]["problem"], damage.problem, "{what}");
        let out = run_expect(Some(&dir), &["repair", "--apply"], 1);
        let said = stdout(&out);
        let line = said
            .lines()
            .find(|l| l.starts_with(&format!("{}: ", marker.display())))
            .unwrap_or_else(|| panic!("{what}: no line for the marker:\n{said}"));
        assert!(
            line.contains("left alone: remove it: the next open of the store")
                && !line.contains("by hand"),
            "{what}: {line}"
        );
        // The advice, followed.
        if marker.is_dir() && !marker.is_symlink() {
            fs::remove_dir(&marker).unwrap();
        } else {
            fs::remove_file(&marker).unwrap();
        }
        run_expect(Some(&dir), &["show", tasks[0].id.as_str()], 0);
        assert!(marker.is_file(), "{what}: the open wrote the marker again");
        run_expect(Some(&dir), &["verify"], 0);
    }
}

/// Setting a task file aside is one rule, whoever does it: a listing that
/// meets a corrupt finished task (the store's own quarantine) takes its
/// `expiring/` entry with it, as `repair` does, and `verify` then finds the
/// store clean. The listing says where it went, and the dry run before it
/// what the real run does. (The listing said "(setAside)", the dry run
/// "left in place".)
#[test]
fn a_listing_sets_a_corrupt_task_aside_with_its_index_entry() {
    let (_tmp, dir) = store_dir();
    let tasks = store_with_tasks(&dir);
    let damage = DAMAGE
        .iter()
        .find(|d| d.name == "a corrupt finished task with a TTL")
        .unwrap();
    let path = (damage.plant)(&dir, &tasks);
    let out = run_expect(Some(&dir), &["sweep", "--dry-run"], 0);
    assert!(
        stderr(&out).contains("the real run sets it aside into quarantine/"),
        "the dry run says what the real run does: {}",
        stderr(&out)
    );
    // A task the listing could not show: it says so, and exits 1 (it
    // exited 0: a script counting the lines read a short count as whole).
    let out = run_expect(Some(&dir), &["list", "--json"], 1);
    assert_eq!(json_lines(&out).len(), tasks.len(), "the others listed");
    let quarantine = dir.join("quarantine");
    assert!(
        stderr(&out).contains(&format!("skipped {}: ", path.display()))
            && stderr(&out).contains(&format!("(set aside into {}", quarantine.display())),
        "{}",
        stderr(&out)
    );
    assert!(!path.exists(), "set aside by the listing");
    let out = run_expect(Some(&dir), &["verify"], 0);
    assert_eq!(stdout(&out), "");
    // A name that is no task's is no task missed.
    fs::write(dir.join("active").join("notes.txt"), b"x").unwrap();
    let out = run_expect(Some(&dir), &["list", "--json"], 0);
    assert!(stderr(&out).contains("notes.txt"), "{}", stderr(&out));
}

/// A command that opens the store (a read: `show`) and so sets aside a
/// foreign entry of `tmp/` (the open's clean-up does) says so on stderr,
/// once, as a listing says so of a foreign name in `active/`: where, why
/// and where it went. No task was missed: it exits 0. (It set the entry
/// aside without a word.)
#[test]
fn a_read_reports_a_foreign_entry_of_tmp_it_sets_aside() {
    let (_tmp, dir) = store_dir();
    let tasks = store_with_tasks(&dir);
    let quarantine = dir.join("quarantine");
    let foreign = |name: &str| {
        let path = dir.join("tmp").join(name);
        fs::write(&path, b"mine").unwrap();
        path
    };
    let said = |out: &Output, path: &Path| {
        let text = stderr(out);
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(&path.display().to_string()))
            .collect();
        assert_eq!(lines.len(), 1, "said once: {text}");
        assert!(
            lines[0].starts_with(&format!("taskstore: skipped {}: ", path.display()))
                && lines[0].contains(&format!("(set aside into {}", quarantine.display())),
            "{text}"
        );
        assert!(!path.exists(), "set aside");
    };
    let scratch = foreign("scratch");
    let out = run_expect(Some(&dir), &["show", tasks[0].id.as_str()], 0);
    said(&out, &scratch);
    // As a listing says so of a foreign name in active/, and a sweep.
    let notes = dir.join("active").join("notes.txt");
    fs::write(&notes, b"mine").unwrap();
    let scratch = foreign("scratch");
    let out = run_expect(Some(&dir), &["list", "--json"], 0);
    said(&out, &scratch);
    said(&out, &notes);
    let scratch = foreign("scratch");
    said(&run_expect(Some(&dir), &["sweep"], 0), &scratch);
}
