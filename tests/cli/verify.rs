//! `verify`: a clean store, every kind of damage reported with its path,
//! a live writer's temp file left alone, crashed writers' leftovers listed.

use super::*;

// ---------------------------------------------------------------------------
// verify

#[test]
fn verify_finds_nothing_in_a_clean_store() {
    let (_tmp, dir) = store_dir();
    store_with_tasks(&dir);
    let before = snapshot(&dir);
    let out = run_expect(Some(&dir), &["verify"], 0);
    assert_eq!(stdout(&out), "");
    assert!(stderr(&out).contains("clean"), "{}", stderr(&out));
    assert_unchanged(&before, &snapshot(&dir), "verify changes nothing");
}

/// Every code `ProblemKind::code` gives.
const PROBLEM_CODES: [&str; 18] = [
    "mode",
    "symlink",
    "not_a_file",
    "not_a_directory",
    "foreign",
    "missing",
    "bad_marker",
    "newer_format",
    "corrupt",
    "wrong_id",
    "too_large",
    "misplaced",
    "interrupted_move",
    "stale_copy",
    "dead_temp",
    "stale_index_entry",
    "missing_index_entry",
    "unreadable",
];

#[test]
fn verify_reports_every_kind_of_damage_with_its_path() {
    let planted: std::collections::BTreeSet<&str> = DAMAGE.iter().map(|d| d.problem).collect();
    let unplanted: Vec<&str> = PROBLEM_CODES
        .into_iter()
        .filter(|code| !planted.contains(code))
        .collect();
    assert!(unplanted.is_empty(), "no damage plants {unplanted:?}");
    for damage in DAMAGE {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let tasks = store_with_tasks(&dir);
        let path = (damage.plant)(&dir, &tasks);
        let before = snapshot(&dir);
        // A leftover or an unfinished move alone passes.
        let code = if damage.severity == "problem" { 1 } else { 0 };
        let out = run_expect(Some(&dir), &["verify", "--json"], code);
        let problems = json_lines(&out);
        assert!(
            problems.iter().any(|p| p["problem"] == damage.problem
                && p["severity"] == damage.severity
                && p["path"] == path.to_str().unwrap()),
            "{}: expected {} ({}) at {}, got {problems:#?}",
            damage.name,
            damage.problem,
            damage.severity,
            path.display()
        );
        // The text form names the path too.
        let text = run_expect(Some(&dir), &["verify"], code);
        assert!(
            stdout(&text).contains(&format!("{}: ", path.display())),
            "{}: {}",
            damage.name,
            stdout(&text)
        );
        assert_unchanged(&before, &snapshot(&dir), damage.name);
    }
}

#[test]
fn verify_leaves_a_live_writers_temp_file_alone() {
    let (_tmp, dir) = store_dir();
    let tasks = store_with_tasks(&dir);
    let id = first(&tasks, TaskStatus::Working).id;
    let temp = dir.join("tmp").join(format!("{id}.999999.1.tmp"));
    fs::write(&temp, b"{\"format\":1,\"task\":{").unwrap();
    // A writer holds its task's stripe from creating its temp file until the
    // rename: this process plays that writer (the command runs in another
    // process, so this flock excludes it).
    let lock = common::open_lock_file(&common::stripe_lock(&dir, id.as_str()));
    lock.lock().unwrap();
    let out = run_expect(Some(&dir), &["verify"], 0);
    assert_eq!(stdout(&out), "", "a live writer's temp file is no problem");
    let out = run_expect(Some(&dir), &["repair", "--apply"], 0);
    assert!(
        temp.exists(),
        "repair leaves a live writer's temp file: {}",
        stdout(&out)
    );
    lock.unlock().unwrap();
    // Its writer gone, it is a leftover (listed; the next open removes it).
    let out = run_expect(Some(&dir), &["verify", "--json"], 0);
    assert_eq!(json_lines(&out)[0]["problem"], "dead_temp");
    assert_eq!(json_lines(&out)[0]["severity"], "leftover");
}

/// A crashed writer's leftovers that the next open removes (a dead
/// writer's temp file, a stale copy beside a finished task) are listed by
/// `verify`, text and JSON (`"severity": "leftover"`), but pass: it exits
/// 0, and can serve as a start-up check. A problem beside them fails it.
/// (Any leftover made it exit 1, after most crashes.)
#[test]
fn verify_lists_leftovers_of_crashed_writers_and_passes() {
    let (_tmp, dir) = store_dir();
    let tasks = store_with_tasks(&dir);
    let working = first(&tasks, TaskStatus::Working);
    let temp = dir.join("tmp").join(format!("{}.999999.1.tmp", working.id));
    fs::write(&temp, b"{\"format\":1,\"task\":{").unwrap();
    chmod(&temp, 0o600);
    let out = run_expect(Some(&dir), &["verify", "--json"], 0);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(
        (
            &lines[0]["problem"],
            &lines[0]["severity"],
            &lines[0]["path"]
        ),
        (
            &json!("dead_temp"),
            &json!("leftover"),
            &json!(temp.to_str().unwrap())
        )
    );
    let out = run_expect(Some(&dir), &["verify"], 0);
    assert!(
        stdout(&out).contains(&format!("{}: ", temp.display()))
            && stdout(&out).contains("leftover"),
        "{}",
        stdout(&out)
    );
    assert!(stderr(&out).contains("1 leftover"), "{}", stderr(&out));
    // A problem beside it fails the check.
    let finished = task_path(&dir, "done", &first(&tasks, TaskStatus::Completed).id);
    chmod(&finished, 0o644);
    let out = run_expect(Some(&dir), &["verify", "--json"], 1);
    let severity = |path: &Path| -> Value {
        json_lines(&out)
            .into_iter()
            .find(|line| line["path"] == path.to_str().unwrap())
            .unwrap_or_else(|| panic!("{}: {}", path.display(), stdout(&out)))["severity"]
            .clone()
    };
    assert_eq!(severity(&finished), "problem");
    assert_eq!(severity(&temp), "leftover");
    // The help says which exit status means what.
    let help = stdout(&run_expect(None, &["verify", "--help"], 0));
    assert!(
        help.contains("leftover") && help.contains("Exits 0"),
        "{help}"
    );
}
