//! Every operation with each of its I/O calls failed in turn (`faults_in_*`):
//! on a fixture store, with the invariants checked after each failure and the
//! store reopened clean.

use super::*;

/// Leftovers of a crashed writer: a temp file, and a terminal move stopped
/// between its two steps (the terminal task still in `active/`).
fn plant_leftovers(store: &Path) {
    fs::write(store.join("tmp/target.999999.7.tmp"), b"{\"format\":1,\"ta").unwrap();
    fs::rename(
        store.join("done/other-done.json"),
        store.join("active/other-done.json"),
    )
    .unwrap();
}

/// The fixture as format 1 left it: no `expiring/`, a marker of format 1.
fn plant_format_1(store: &Path) {
    common::make_format_1(store);
}

/// The same without its marker (known by its `done/` without `expiring/`).
fn plant_format_1_without_marker(store: &Path) {
    common::make_format_1(store);
    fs::remove_file(store.join("taskstore.json")).unwrap();
}

/// Two files that are not readable tasks, for `list` to set aside.
const PLANTED_CORRUPT: usize = 2;
fn plant_corrupt(store: &Path) {
    fs::write(store.join("active/garbage.json"), b"{ not json").unwrap();
    fs::write(store.join("done/empty.json"), b"").unwrap();
}

#[test]
fn faults_in_open_of_a_new_store() {
    sweep(
        "open (new store)",
        Scenario {
            fixture: false,
            call: None,
            ..Scenario::op(|_| unreachable!())
        },
    );
}

#[test]
fn faults_in_open_with_crash_leftovers() {
    sweep(
        "open (leftovers)",
        Scenario {
            plant: plant_leftovers,
            call: None,
            ..Scenario::op(|_| unreachable!())
        },
    );
}

#[test]
fn faults_in_open_of_a_store_of_format_1() {
    sweep(
        "open (format 1)",
        Scenario {
            plant: plant_format_1,
            call: None,
            ..Scenario::op(|_| unreachable!())
        },
    );
}

/// An open that stopped after making `expiring/` had the next open take
/// the store for one of format 2, its finished tasks never indexed (so
/// never swept).
#[test]
fn faults_in_open_of_a_store_of_format_1_that_lost_its_marker() {
    sweep(
        "open (format 1, no marker)",
        Scenario {
            plant: plant_format_1_without_marker,
            call: None,
            ..Scenario::op(|_| unreachable!())
        },
    );
}

#[test]
fn faults_in_create() {
    sweep(
        "create",
        Scenario::op(|s| debug(s.create(NewTask::new().id(tid("new-task")).metadata("k", "v")))),
    );
}

#[test]
fn faults_in_update() {
    sweep(
        "update",
        Scenario::op(|s| {
            debug(s.update(
                &tid("target"),
                TaskUpdate::new().status_message("changed").metadata("b", 2),
            ))
        }),
    );
}

#[test]
fn faults_in_complete() {
    sweep(
        "complete",
        Scenario::op(|s| debug(s.complete(&tid("target"), json!({"answer": 42})))),
    );
}

#[test]
fn faults_in_fail() {
    sweep(
        "fail",
        Scenario::op(|s| debug(s.fail(&tid("target"), json!({"code": "x"})))),
    );
}

#[test]
fn faults_in_cancel() {
    sweep(
        "cancel",
        Scenario::op(|s| debug(s.cancel(&tid("target"), Some("stop".into())))),
    );
}

#[test]
fn faults_in_delete() {
    sweep("delete", Scenario::op(|s| debug(s.delete(&tid("target")))));
    sweep(
        "delete (done)",
        Scenario::op(|s| debug(s.delete(&tid("other-done")))),
    );
}

#[test]
fn faults_in_sweep_expired() {
    sweep(
        "sweep_expired",
        Scenario {
            plant: plant_leftovers,
            ..Scenario::op(|s| {
                s.sweep()
                    .map(|r| (format!("{}", r.deleted), r.missed.len() + r.skipped.len()))
            })
        },
    );
}

#[test]
fn faults_in_renew_lease() {
    // Only the handle that created a task owns it: each case's handle
    // creates the one it renews.
    let own = |s: &FileStore| {
        s.create(NewTask::new().id(tid("new-task"))).unwrap();
    };
    sweep(
        "renew_lease",
        Scenario {
            prepare: own,
            ..Scenario::op(|s| debug(s.renew_lease(&tid("new-task"))))
        },
    );
    sweep(
        "renew_leases",
        Scenario {
            prepare: own,
            ..Scenario::op(|s| debug(s.renew_leases()))
        },
    );
}

#[test]
fn faults_in_reap_orphans() {
    sweep(
        "reap_orphans",
        Scenario {
            instance: "reaper",
            ..Scenario::op(|s| {
                s.reap()
                    .map(|r| (format!("{:?}", r.tasks), r.missed.len() + r.skipped.len()))
            })
        },
    );
}

#[test]
fn faults_in_list_with_quarantine() {
    sweep(
        "list (quarantine)",
        Scenario {
            plant: plant_corrupt,
            quarantined: PLANTED_CORRUPT,
            ..Scenario::op(|s| {
                s.list(&ListQuery::all())
                    .map(|p| (format!("{:?}", p.tasks), p.skipped.len()))
            })
        },
    );
}
