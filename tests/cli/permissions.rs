//! Modes and owners: a task file its owner may not read, a store another user
//! owns, a directory that cannot be opened or is missing.

use super::*;

/// `repair --apply`, run as the store's owner, sets the mode of a task
/// file its owner may not read (`0000`, `0200`: a file the service cannot
/// read any more) back to `0600`, and the tasks list again. (It opened the
/// file for reading to set its mode, which such a mode refuses its owner:
/// "set mode 0600: FAILED: ... Permission denied", and exit 1.)
#[test]
fn repair_sets_the_mode_of_a_task_file_its_owner_may_not_read() {
    let (_tmp, dir) = store_dir();
    let tasks = store_with_tasks(&dir);
    let running = task_path(&dir, "active", &first(&tasks, TaskStatus::Working).id);
    let done = task_path(&dir, "done", &first(&tasks, TaskStatus::Completed).id);
    chmod(&running, 0o000);
    chmod(&done, 0o200);
    let out = run_as_owner_bound_by_modes(&dir, &["repair", "--apply"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    for path in [&running, &done] {
        let mode = fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
    let listed = run_as_owner_bound_by_modes(&dir, &["list", "--json"]);
    assert_eq!(listed.status.code(), Some(0), "{}", stderr(&listed));
    assert_eq!(json_lines(&listed).len(), tasks.len());
}

/// A store whose directory is missing is refused by the commands that
/// read it whole, naming the directory (they said only "one of the
/// store's directories is missing or not a directory"), and `verify`
/// says what is wrong.
#[test]
fn a_store_missing_a_directory_is_refused_naming_it() {
    let (_tmp, dir) = store_dir();
    store_with_tasks(&dir);
    fs::remove_dir_all(dir.join("tmp")).unwrap();
    for args in [&["stats"][..], &["sweep", "--dry-run"]] {
        let out = run_expect(Some(&dir), args, 1);
        assert!(
            stderr(&out).contains("its tmp/ is missing, not a directory, or a symlink: run verify"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let out = run_expect(Some(&dir), &["verify"], 1);
    assert!(stdout(&out).contains("tmp"), "{}", stdout(&out));
}

/// The command run as root on a store another user owns (the service's)
/// refuses it, naming both users and how to run it, and changes nothing:
/// every command, reading or writing. (A root `cancel` made lock files
/// and task files root's own, `0600`: the service could no longer lock
/// those stripes or read those tasks, and root's `verify` said "clean".)
/// So is a store of the overflow uid (`nobody`, a service's user) on a
/// local file system: only over NFS is that uid root's own files, squashed.
/// (Root's `cancel` there made `locks/NN.lock` root's, and the service,
/// run as `nobody`, could no longer cancel or finish a task of that
/// stripe: "unable to open lock file …: Permission denied".)
#[test]
fn the_command_refuses_a_store_another_user_owns() {
    let me = String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout).unwrap();
    if me.trim() != "0" {
        eprintln!("cli: not root: cannot give a store to another user; skipped");
        return;
    }
    let overflow: u32 = fs::read_to_string("/proc/sys/fs/overflowuid")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    for other in [4_242, overflow] {
        refused_to_root(other);
    }
}

/// A store given to uid `other` is refused to every command run as root,
/// and nothing in it is made or changed.
fn refused_to_root(other: u32) {
    let (_tmp, dir) = store_dir();
    let tasks = store_with_tasks(&dir);
    std::os::unix::fs::lchown(&dir, Some(other), None).unwrap();
    for entry in walk(&dir) {
        std::os::unix::fs::lchown(&entry, Some(other), None).unwrap();
    }
    let before: Vec<(PathBuf, u32)> = walk(&dir)
        .into_iter()
        .map(|p| {
            let uid = std::os::unix::fs::MetadataExt::uid(&fs::symlink_metadata(&p).unwrap());
            (p, uid)
        })
        .collect();
    let id = tasks[0].id.to_string();
    for args in [
        &["cancel", id.as_str()][..],
        &["list"],
        &["verify"],
        &["stats"],
        &["sweep"],
        &["repair", "--apply"],
    ] {
        let out = run_expect(Some(&dir), args, 1);
        let said = stderr(&out);
        assert!(
            said.contains(&format!("belongs to uid {other}"))
                && said.contains(&format!("run it as uid {other}")),
            "taskstore {args:?} on uid {other}'s store: {said}"
        );
    }
    let after: Vec<(PathBuf, u32)> = walk(&dir)
        .into_iter()
        .map(|p| {
            let uid = std::os::unix::fs::MetadataExt::uid(&fs::symlink_metadata(&p).unwrap());
            (p, uid)
        })
        .collect();
    assert_eq!(
        after, before,
        "nothing made or changed in uid {other}'s store"
    );
}

/// A lock file of the store its owner cannot open (root's, `0600`: left by
/// a root process before root was refused another user's store) is a
/// problem `verify`, run as the owner, reports naming it and why (exit 1),
/// and `repair --apply` leaves it, saying so: every write of a task of
/// that stripe fails for the service ("unable to open lock file …:
/// Permission denied"). (`verify` said "clean" and exited 0, so
/// `verify && start` started a service that could not write those tasks.)
#[test]
fn verify_reports_a_lock_file_the_stores_owner_cannot_open() {
    let me = String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout).unwrap();
    if me.trim() != "0" {
        eprintln!("cli: not root: cannot make a file the store's owner may not open; skipped");
        return;
    }
    let (_tmp, dir) = store_dir();
    store_with_tasks(&dir);
    let binary = [env!("CARGO_BIN_EXE_taskstore")];
    give_to_nobody(&dir);
    let out = run_as_nobody(&dir, &binary, &["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Root's own, as its open made them before it was refused.
    let lock = dir.join("locks").join("07.lock");
    let _ = fs::remove_file(&lock);
    fs::File::create(&lock).unwrap();
    chmod(&lock, 0o600);
    let out = run_as_nobody(&dir, &binary, &["verify"]);
    let said = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{said}{}", stderr(&out));
    assert!(
        said.contains(&lock.display().to_string()) && said.contains("ermission denied"),
        "{said}"
    );
    let out = run_as_nobody(&dir, &binary, &["verify", "--json"]);
    let found = json_lines(&out);
    assert!(
        found.iter().any(|f| f["path"] == lock.display().to_string()
            && f["severity"] == "problem"
            && f["problem"] == "unreadable"),
        "{found:?}"
    );
    let out = run_as_nobody(&dir, &binary, &["repair", "--apply"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("chown --reference="),
        "{}",
        stdout(&out)
    );
    assert!(lock.exists(), "a lock file is never set aside");
    // Given to the store's owner, as the repair says: verify passes.
    give_to_nobody(&dir);
    let out = run_as_nobody(&dir, &binary, &["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

/// A store directory the command may not open (its permissions) is a
/// problem `verify` reports naming it, and an error naming it and why for
/// the counts and dry runs: never a clean store. (`verify` said "clean (0 entries checked)" and
/// exited 0; the others said a directory was missing, "run verify".)
#[test]
fn a_store_directory_that_cannot_be_opened_is_an_error_naming_it() {
    let (_tmp, dir) = store_dir();
    store_with_tasks(&dir);
    let active = dir.join("active");
    chmod(&active, 0o000);
    // `verify` reports it as a problem, its mode
    // (`cli::repair_sets_the_mode_of_an_area_its_owner_may_not_read`).
    let out = run_as_owner_bound_by_modes(&dir, &["verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("{}: mode 0000", active.display())),
        "{}",
        stdout(&out)
    );
    for args in [&["stats"][..], &["sweep", "--dry-run"]] {
        let out = run_as_owner_bound_by_modes(&dir, args);
        let said = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "taskstore {args:?}: {said}");
        assert!(
            said.contains(&active.display().to_string()) && said.contains("ermission denied"),
            "taskstore {args:?}: {said}"
        );
    }
    chmod(&active, 0o700);
    // A store whose marker cannot be looked at is said so, not "not a
    // store".
    chmod(&dir, 0o000);
    let out = run_as_owner_bound_by_modes(&dir, &["list"]);
    let said = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("cannot look at") && said.contains("ermission denied"),
        "{said}"
    );
    chmod(&dir, 0o700);
}

/// A store's own area directory its owner may not read (`done/` at mode
/// `0000`) is a problem `verify` reports naming it (exit 1), not an error
/// that ends the check; `repair --apply`, run as the store's owner, sets
/// its mode back to `0700` (as it does a task file's) and checks the
/// store again (exit 0), after which every task lists. Before the repair
/// the commands that read the store whole (`list`, `stats`) fail naming
/// the directory and saying how to mend it: a count or a listing short of
/// a directory's tasks would be wrong. (Every command failed with
/// "open directory .../done: Permission denied", `repair` included.)
#[test]
fn repair_sets_the_mode_of_an_area_its_owner_may_not_read() {
    let (_tmp, dir) = store_dir();
    let tasks = store_with_tasks(&dir);
    let done = dir.join("done");
    chmod(&done, 0o000);
    let verified = run_as_owner_bound_by_modes(&dir, &["verify", "--json"]);
    assert_eq!(verified.status.code(), Some(1), "{}", stderr(&verified));
    let findings = json_lines(&verified);
    assert!(
        findings
            .iter()
            .any(|f| f["path"] == done.to_str().unwrap() && f["problem"] == "mode"),
        "{findings:#?}"
    );
    for args in [&["list"][..], &["stats"]] {
        let out = run_as_owner_bound_by_modes(&dir, args);
        let said = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "taskstore {args:?}: {said}");
        assert!(
            said.contains(&done.display().to_string()) && said.contains("repair --apply"),
            "taskstore {args:?}: {said}"
        );
    }
    let repaired = run_as_owner_bound_by_modes(&dir, &["repair", "--apply"]);
    assert_eq!(
        repaired.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&repaired),
        stderr(&repaired)
    );
    let mode = fs::metadata(&done).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let listed = run_as_owner_bound_by_modes(&dir, &["list", "--json"]);
    assert_eq!(listed.status.code(), Some(0), "{}", stderr(&listed));
    assert_eq!(json_lines(&listed).len(), tasks.len());
}
