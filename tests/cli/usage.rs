//! How the command is invoked: usage errors (exit 2, no store made by mistake),
//! an empty store variable, progress drawn on a terminal and not when piped.

use super::*;

// ---------------------------------------------------------------------------
// Progress on a terminal

/// Runs `taskstore args...` on `store` under a pseudo-terminal, with
/// `script` (util-linux): its exit status, and what it wrote to the
/// terminal (stdout and stderr both).
fn run_on_terminal(store: &Path, args: &[&str]) -> (Option<i32>, String) {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let line: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_taskstore"))
        .chain(args.iter().copied())
        .map(quote)
        .collect();
    let out = common::without_store_variables("script")
        .args(["--quiet", "--return", "--flush", "--command"])
        .arg(line.join(" "))
        .arg("/dev/null")
        .env("TASKSTORE_STORE", store)
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("run script (util-linux), which this test needs: {e}"));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The progress lines drawn (`"\r N/M"`), as (where, N, M).
fn progress_drawn(terminal: &str) -> Vec<(usize, usize, usize)> {
    terminal
        .match_indices('\r')
        .filter_map(|(at, _)| {
            let rest = terminal[at + 1..].strip_prefix(' ')?;
            let done: String = rest.chars().take_while(char::is_ascii_digit).collect();
            let rest = rest[done.len()..].strip_prefix('/')?;
            let total: String = rest.chars().take_while(char::is_ascii_digit).collect();
            Some((at, done.parse().ok()?, total.parse().ok()?))
        })
        .collect()
}

#[test]
fn long_commands_draw_progress_on_a_terminal_and_none_when_piped() {
    const TASKS: usize = 600;
    let (_tmp, dir) = store_dir();
    let store = FileStore::builder(&dir)
        .durability(taskstore::Durability::Eventual)
        .open()
        .unwrap();
    for i in 0..TASKS {
        let t = store.create(NewTask::new()).unwrap();
        if i % 2 == 0 {
            assert!(store.complete(&t.id, json!(i)).unwrap().is_applied());
        }
    }
    drop(store);
    for (args, last_words) in [
        (&["verify"][..], "clean ("),
        (&["stats"], "success rate"),
        (&["repair"], "clean, nothing to repair"),
    ] {
        let (code, terminal) = run_on_terminal(&dir, args);
        assert_eq!(code, Some(0), "{args:?}: {terminal:?}");
        let drawn = progress_drawn(&terminal);
        let Some(&(last, done, total)) = drawn.last() else {
            panic!("{args:?}: no progress drawn on the terminal: {terminal:?}");
        };
        assert!(
            done == total && total >= TASKS,
            "{args:?}: the last progress drawn is {done}/{total}: {terminal:?}"
        );
        // Cleared once done, before the command's last words.
        let cleared = terminal.rfind("\r\x1b[K");
        assert!(
            cleared.is_some_and(|at| at > last && terminal[at..].contains(last_words)),
            "{args:?}: the progress line is not cleared: {terminal:?}"
        );

        let piped = run_expect(Some(&dir), args, 0);
        for (name, text) in [("stdout", stdout(&piped)), ("stderr", stderr(&piped))] {
            assert!(
                !text.contains('\r') && !text.contains('\x1b') && progress_drawn(&text).is_empty(),
                "{args:?}: progress on a piped {name}: {text:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Usage

#[test]
fn usage_errors_exit_2_and_stores_are_never_made_by_mistake() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run_expect(None, &["list"], 2);
    assert!(stderr(&out).contains("--store"), "{}", stderr(&out));
    run_expect(None, &["frobnicate"], 2);
    let dir = tmp.path().join("store");
    store_with_tasks(&dir);
    let out = run_expect(Some(&dir), &["list", "--older-than", "10"], 2);
    assert!(stderr(&out).contains("unit"), "{}", stderr(&out));
    // Further back than dates go: a usage error, not a panic (exit 101),
    // said before any store is looked for, with the value as written.
    let out = run_expect(Some(&dir), &["list", "--older-than", "100000000d"], 2);
    assert!(stderr(&out).contains("--older-than"), "{}", stderr(&out));
    let nowhere = tmp.path().join("nowhere");
    let out = run_expect(Some(&nowhere), &["list", "--older-than", "4000000000w"], 2);
    assert!(
        stderr(&out).contains("'4000000000w'") && stderr(&out).contains("further back"),
        "{}",
        stderr(&out)
    );
    assert!(!nowhere.exists());
    run_expect(Some(&dir), &["list", "--status", "done"], 2);
    run_expect(Some(&dir), &["list", "--limit", "0"], 2);
    // Running tasks never have a terminal status: an empty table would
    // read as "none", where the question has no answer.
    for status in ["completed", "failed", "cancelled"] {
        // Said before any store is looked for.
        let nowhere = tmp.path().join("nowhere");
        let out = run_expect(Some(&nowhere), &["list", "--active", "--status", status], 2);
        // With `list`'s usage line (it printed the command's own).
        assert!(
            stderr(&out).contains("--active")
                && stderr(&out).contains(status)
                && stderr(&out).contains("Usage: taskstore list"),
            "{status}: {}",
            stderr(&out)
        );
    }
    run_expect(Some(&dir), &["list", "--active", "--status", "working"], 0);
    run_expect(Some(&dir), &["repair", "--apply", "--dry-run"], 2);
    run_expect(Some(&dir), &["show", "../etc"], 2);
    // A cursor no store handed out is a usage error, naming the cursor,
    // said before any store is looked for (so before an open cleans up).
    let nowhere = tmp.path().join("nowhere");
    for args in [
        &["list", "--after", "bogus"][..],
        &["list", "--json", "--limit", "2", "--after", "bogus"],
    ] {
        for at in [&dir, &nowhere] {
            let out = run_expect(Some(at), args, 2);
            assert!(
                stderr(&out).contains("'bogus'") && stderr(&out).contains("--after"),
                "{args:?}: {}",
                stderr(&out)
            );
            assert_eq!(stdout(&out), "", "{args:?}");
        }
    }

    // A mistyped directory is an error naming it, never a new store.
    let typo = tmp.path().join("stroe");
    let out = run_expect(Some(&typo), &["list"], 1);
    assert!(
        stderr(&out).contains(typo.to_str().unwrap()),
        "{}",
        stderr(&out)
    );
    assert!(!typo.exists());
    // Nor is a directory of other files.
    let mine = tmp.path().join("mine");
    fs::create_dir(&mine).unwrap();
    fs::write(mine.join("notes.txt"), "mine").unwrap();
    for args in [&["list"][..], &["verify"], &["stats"], &["sweep"]] {
        let out = run_expect(Some(&mine), args, 1);
        assert!(
            stderr(&out).contains(mine.to_str().unwrap()),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert_eq!(fs::read_dir(&mine).unwrap().count(), 1);
    // --store beats nothing: given on the command line it is used.
    let out = taskstore(None, &["--store", dir.to_str().unwrap(), "list", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(json_lines(&out).len(), 7);
}

/// An empty `TASKSTORE_STORE` counts as unset: the command says no store
/// was given, and a `--store` given beside it is used. (clap read it as an
/// empty `--store` and blamed the flag: "a value is required for '--store
/// <DIR>' but none was supplied".)
#[test]
fn an_empty_store_variable_counts_as_unset() {
    let (_tmp, dir) = store_dir();
    store_with_tasks(&dir);
    let run_with_empty = |args: &[&str]| {
        taskstore(None, args)
            .env("TASKSTORE_STORE", "")
            .output()
            .unwrap()
    };
    for command in ["list", "stats", "verify"] {
        let out = run_with_empty(&[command]);
        assert_eq!(out.status.code(), Some(2), "{command}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("no store: give --store DIR (or TASKSTORE_STORE)"),
            "{command}: {}",
            stderr(&out)
        );
    }
    let out = run_with_empty(&["list", "--json", "--store", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json_lines(&out).len(), 7);
}
