//! Passes of one handle meeting each other: each orphan reported once, a held
//! task left out once, and a batch whose read after its commit fails.

use super::*;

/// Two claims, then two reaps, of one handle at one instant, each pair
/// judging the same versions: each orphan is reported once, by the pass
/// whose write landed. (Over PostgreSQL both reported it: the loser's
/// write, tried alone, found the task stored as it meant to write it, the
/// same owner, token, epoch and lease, and took it for its own; both
/// callers then ran the task at one epoch, and a reap sent two events.)
#[test]
fn two_passes_of_one_handle_report_each_orphan_once() {
    let Some(cluster) = cluster() else { return };
    let ((resumable, plain), dead, heir) =
        passes_meet(cluster, "passes_meet", "passes_meet", |dead| {
            let resumable = dead
                .create(NewTask::new().resumable("k", json!(1)))
                .unwrap();
            (resumable, dead.create(NewTask::new()).unwrap())
        });
    let (claims, reaps) = std::thread::scope(|s| {
        let claims: Vec<_> = (0..2)
            .map(|_| s.spawn(|| heir.claim(&["k"]).unwrap()))
            .collect();
        let claims: Vec<_> = claims.into_iter().map(|c| c.join().unwrap()).collect();
        let reaps: Vec<_> = (0..2).map(|_| s.spawn(|| heir.reap().unwrap())).collect();
        let reaps: Vec<_> = reaps.into_iter().map(|r| r.join().unwrap()).collect();
        (claims, reaps)
    });
    let claimed = reported(&claims, |c| &c.tasks);
    assert_eq!(claimed, [&resumable.id], "claimed once: {claims:?}");
    let reaped = reported(&reaps, |r| &r.tasks);
    assert_eq!(reaped, [&plain.id], "reaped once: {reaps:?}");
    let stored = dead.get(&resumable.id).unwrap().unwrap();
    assert_eq!((stored.owner.as_deref(), stored.epoch), (Some("heir"), 2));
}

/// The same for two claim batches that another session's lock on one row
/// makes leave it out: each writes it alone once the lock goes, and only
/// the one whose write landed reports it. (With tasks left out of a batch
/// taken as written by this call when found as it meant to write them,
/// both reported the held task.)
#[test]
fn two_batches_of_one_handle_that_leave_a_held_task_out_report_it_once() {
    let Some(cluster) = cluster() else { return };
    let application = "batches_meet";
    let ((held, free), _dead, heir) = passes_meet(cluster, application, application, |dead| {
        let resumable = |n: u32| NewTask::new().resumable("k", json!(n));
        (
            dead.create(resumable(1)).unwrap(),
            dead.create(resumable(2)).unwrap(),
        )
    });
    let schema = heir.backend().store.schema().to_owned();
    let lock = format!(
        "SELECT FROM {schema}.tasks WHERE id = '{}' FOR UPDATE",
        held.id
    );
    let (mut holder, holder_pid) = holding(cluster, &lock);
    let claims = std::thread::scope(|s| {
        let claims: Vec<_> = (0..2)
            .map(|_| s.spawn(|| heir.claim(&["k"]).unwrap()))
            .collect();
        // The first waits for the holder, the second behind the first.
        let mut watcher = cluster.client();
        wait_until("both passes to wait for the held row alone", || {
            blocked_by(&mut watcher, application, holder_pid) == 1
                && lock_waits(&mut watcher, application) == 2
        });
        holder.batch_execute("ROLLBACK").unwrap();
        claims
            .into_iter()
            .map(|c| c.join().unwrap())
            .collect::<Vec<_>>()
    });
    each_claimed_once(&[held, free], &claims);
}

/// A claim batch that committed, whose read after it (of the task it
/// left out, another session holding its row) failed with the server's
/// error reply (here a cancel, while a table lock held the read up), is
/// taken as one that may have committed: each task it claimed is
/// reported. (Taken as refused, the task it wrote, written alone after
/// and found stored as the pass meant to write it, was not reported:
/// claimed, and never run.)
#[test]
fn a_batch_whose_read_after_its_commit_fails_reports_what_it_claimed() {
    let Some(cluster) = cluster() else { return };
    let application = "batch_read_fails";
    let gate = 4343;
    let (orphans, heir, schema) = two_orphans_written_through(
        cluster,
        application,
        &format!("PERFORM pg_advisory_xact_lock_shared({gate});"),
    );
    let (row_holder, _) = holding(
        cluster,
        &format!(
            "SELECT FROM {schema}.tasks WHERE id = '{}' FOR UPDATE",
            orphans[1].id
        ),
    );
    let (mut gate_holder, gate_pid) =
        holding(cluster, &format!("SELECT pg_advisory_xact_lock({gate})"));
    // The session of the pass reading tasks while the table lock holds it up.
    let reading = |watcher: &mut postgres::Client, locker: i32| -> Option<i32> {
        watcher
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1 \
                 AND query LIKE 'SELECT id, task FROM%' AND $2 = ANY(pg_blocking_pids(pid))",
                &[&application, &locker],
            )
            .unwrap()
            .map(|row| row.get(0))
    };
    let claimed = std::thread::scope(|s| {
        let claim = s.spawn(|| heir.claim(&["k"]).unwrap());
        let mut watcher = cluster.client();
        wait_until(
            "the batch, the held row left out, to wait at the gate",
            || blocked_by(&mut watcher, application, gate_pid) == 1,
        );
        drop(row_holder);
        let mut locker = cluster.client();
        let locker_pid = backend_pid(&mut locker);
        let (unlock, unlocked) = std::sync::mpsc::channel::<()>();
        let table = format!("{schema}.tasks");
        let lock = s.spawn(move || {
            locker
                .batch_execute(&format!(
                    "BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"
                ))
                .unwrap();
            unlocked.recv().unwrap();
            locker.batch_execute("COMMIT").unwrap();
        });
        wait_until("the table lock to wait for the batch", || {
            watcher
                .query_one(
                    "SELECT cardinality(pg_blocking_pids($1)) > 0",
                    &[&locker_pid],
                )
                .unwrap()
                .get::<_, bool>(0)
        });
        // The batch commits; its read of the task it left out waits for the
        // table lock, and is cancelled there.
        gate_holder.batch_execute("ROLLBACK").unwrap();
        let mut reader = None;
        wait_until(
            "the read after the batch to wait for the table lock",
            || {
                reader = reading(&mut watcher, locker_pid);
                reader.is_some()
            },
        );
        watcher
            .execute("SELECT pg_cancel_backend($1)", &[&reader])
            .unwrap();
        wait_until("the read to be cancelled", || {
            reading(&mut watcher, locker_pid).is_none()
        });
        unlock.send(()).unwrap();
        lock.join().unwrap();
        claim.join().unwrap()
    });
    each_claimed_once(&orphans, std::slice::from_ref(&claimed));
}
