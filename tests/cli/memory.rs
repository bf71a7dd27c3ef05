//! The command's memory: listings, stats and dry runs held to a page under
//! `prlimit`.

use super::*;

/// `list` without `--limit` asks the store page after page and keeps no
/// task it has printed: run with its data segment held to 200 MB, it
/// lists a store of 300 MB of tasks. (It asked for one page of every task
/// and kept each it printed: over 300 MB.)
#[test]
fn list_without_a_limit_holds_a_page_not_the_store() {
    require_prlimit();
    let (_tmp, dir) = store_dir();
    let store = eventual(FileStore::builder(&dir));
    let payload = "x".repeat(100 << 10);
    for _ in 0..3_000 {
        store
            .create(NewTask::new().metadata("payload", payload.clone()))
            .unwrap();
    }
    drop(store);
    let out = common::without_store_variables("prlimit")
        .arg("--data=200000000")
        .arg(env!("CARGO_BIN_EXE_taskstore"))
        .args(["list", "--json"])
        .env("TASKSTORE_STORE", &dir)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json_lines(&out).len(), 3_000);
}

/// `stats` and the dry runs of `sweep` and `reap` read every task once and
/// keep none of its payloads: run with its data segment held to 200 MB,
/// each reads a store of 300 MB of tasks (expired, orphaned resumable,
/// finished), and still judges each as the store does. (The census they
/// read kept every task whole, payloads and all: over 300 MB, and the
/// command died for want of memory.)
#[test]
fn stats_and_dry_runs_hold_no_payloads_of_the_store() {
    require_prlimit();
    let (_tmp, dir) = store_dir();
    let store = eventual(an_hour_ago(&dir).instance_id("gone"));
    let payload = "x".repeat(100 << 10);
    for _ in 0..1_000 {
        store
            .create(
                NewTask::new()
                    .ttl(Duration::from_secs(60))
                    .metadata("payload", payload.clone()),
            )
            .unwrap();
    }
    resumable_and_finished(&store, &payload, 1_000);
    drop(store);
    let target = ["--store", dir.to_str().unwrap()];
    let under_limit = |args: &[&str]| in_200_mb(args, &target);
    let stats: Value = serde_json::from_str(&stdout(&under_limit(&["stats", "--json"]))).unwrap();
    assert_eq!(
        (
            &stats["expiredUnswept"],
            &stats["orphans"],
            &stats["finished"]
        ),
        (&json!(1_000), &json!(1_000), &json!(1_000)),
        "{stats:#}"
    );
    let swept = under_limit(&["sweep", "--dry-run", "--json"]);
    assert_eq!(json_lines(&swept).len(), 1_000);
    let reaped = under_limit(&["reap", "--dry-run", "--claim-grace", "2h"]);
    assert!(
        stderr(&reaped).contains("1000 orphan(s); 0 would be reaped, 1000 left for a claim"),
        "{}",
        stderr(&reaped)
    );
}

/// `list` without `--json` prints its table as the pages come, holding at
/// most its first page (which chooses the columns' widths): run with its
/// data segment held to 70 MB, it lists 60,000 finished tasks whose rows
/// (ids of 128 characters, status messages of control characters, which
/// the table escapes) take some 50 MB; it needs 40 to 50 MB for the rest.
/// (It kept every row until the last page: it needed 90 to 110 MB, and
/// died for want of memory.)
#[test]
fn list_as_a_table_holds_a_page_not_the_store() {
    require_prlimit();
    let (_tmp, dir) = store_dir();
    let store = eventual(FileStore::builder(&dir));
    let message = "\u{1b}".repeat(64);
    for i in 0..60_000 {
        let id = TaskId::parse(&format!("{i:0>128}")).unwrap();
        store
            .create(
                NewTask::new()
                    .id(id.clone())
                    .status_message(message.clone()),
            )
            .unwrap();
        assert!(store.complete(&id, json!(i)).unwrap().is_applied());
    }
    drop(store);
    let out = common::without_store_variables("prlimit")
        .arg("--data=70000000")
        .arg(env!("CARGO_BIN_EXE_taskstore"))
        .arg("list")
        .env("TASKSTORE_STORE", &dir)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = stdout(&out);
    let mut lines = table.lines();
    assert!(lines.next().unwrap().starts_with("ID "), "the header first");
    assert_eq!(lines.count(), 60_000);
}
