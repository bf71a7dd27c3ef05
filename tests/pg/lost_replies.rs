//! Replies lost after the commit (behind a proxy that drops them): claims,
//! renewals, reaps, creates, single writes, deletes and sweeps report what the
//! server did, and a write slow to reach the server is stored.

use super::*;

/// The tasks `make` creates as instance `dead` of `schema`, with leases of
/// 100 ms, once they lapsed as seen by a handle opened through a proxy
/// that can lose a reply (set up by `taker`): the tasks, the proxy, that
/// handle.
fn lapsed_behind_a_proxy(
    cluster: &Cluster,
    schema: &str,
    make: impl FnOnce(&PgStore) -> Vec<Task>,
    taker: impl FnOnce(taskstore::PgStoreBuilder) -> taskstore::PgStoreBuilder,
) -> (Vec<Task>, pg_cluster::LosesAReply, PgStore) {
    let dead = PgStore::builder(cluster.conninfo())
        .schema(schema)
        .instance_id("dead")
        .lease(Duration::from_millis(100))
        .open()
        .unwrap();
    let tasks = make(&dead);
    let proxy = pg_cluster::LosesAReply::start(cluster);
    let store = taker(PgStore::builder(proxy.conninfo()).schema(schema))
        .open()
        .unwrap();
    let lapsed = tasks.iter().filter_map(|t| t.lease_expires_at).max();
    wait_until("the dead owner's leases to lapse", || {
        Some(store.now()) > lapsed
    });
    (tasks, proxy, store)
}

/// `n` resumable orphans of a dead instance, claimed by an heir whose
/// connection loses the reply to its write after the server committed it
/// (the write that names the first two, or the one): the claim must report
/// every task it took, each stored as the heir's at epoch 2.
fn a_claim_losing_its_reply(cluster: &Cluster, n: usize) {
    let schema = fresh_schema("lost_reply");
    let tasks = |dead: &PgStore| -> Vec<Task> {
        (0..n)
            .map(|i| {
                dead.create(NewTask::new().resumable("k", json!(i)))
                    .unwrap()
            })
            .collect()
    };
    let (tasks, proxy, heir) =
        lapsed_behind_a_proxy(cluster, &schema, tasks, |b| b.instance_id("heir"));
    // A batch is the one statement that names two of the tasks; one task
    // is claimed by the one statement that names it.
    let markers: Vec<&str> = tasks.iter().take(2).map(|t| t.id.as_str()).collect();
    proxy.arm(&markers);
    let claimed = heir.claim(&["k"]).unwrap();
    assert_eq!(proxy.cuts(), 1, "the write's reply was lost");
    assert!(claimed.missed.is_empty(), "{:?}", claimed.missed);
    let mut ids: Vec<&TaskId> = claimed.tasks.iter().map(|t| &t.id).collect();
    ids.sort();
    let mut want: Vec<&TaskId> = tasks.iter().map(|t| &t.id).collect();
    want.sort();
    assert_eq!(ids, want, "every task the claim took is reported claimed");
    let reader = open(cluster, &schema, "reader");
    for task in &tasks {
        let stored = reader.get(&task.id).unwrap().unwrap();
        assert_eq!(
            (stored.owner.as_deref(), stored.epoch),
            (Some("heir"), 2),
            "{}",
            task.id
        );
    }
}

/// A batch whose connection drops after the server committed it: the
/// per-task writes tried after it find every task moved on (by the batch
/// itself). Taken for "changed by another", the claim reported nothing,
/// and the tasks stayed owned by this handle with no run.
#[test]
fn a_claim_whose_reply_is_lost_after_the_commit_reports_what_it_claimed() {
    let Some(cluster) = cluster() else { return };
    a_claim_losing_its_reply(cluster, 3);
}

/// The same for a claim of one orphan, which is one conditional write, not
/// a batch. (It reported an error, and left the task claimed with no run
/// until its lease lapsed, one attempt spent.)
#[test]
fn a_claim_of_one_task_whose_reply_is_lost_after_the_commit_reports_it() {
    let Some(cluster) = cluster() else { return };
    a_claim_losing_its_reply(cluster, 1);
}

/// A renewal batch whose reply is lost after the commit, and one of whose
/// tasks another instance writes before the renewal reads it back (an
/// unfenced update): that task holds the batch's renewal and more, so
/// neither the batch's write nor another's is what is stored. The renewal
/// must not be made again: the call renews each task once at most (its
/// answer for that task may be an error, the batch's outcome unknown), so
/// the task's revision went up by two, the renewal's and the update's.
/// (Taken for "changed by another", the task was renewed a second time:
/// one call, two writes, and a revision three above the one read.)
#[test]
fn a_lost_renewal_batch_reply_with_a_task_written_over_since_renews_it_once() {
    let Some(cluster) = cluster() else { return };
    let (renewed, x, other) = a_lost_renewal_batch_reply(cluster, "written", |other, x| {
        let updated = other
            .update(&x.id, TaskUpdate::new().metadata("by", "other"))
            .unwrap();
        assert_eq!(updated.task().revision, 3, "on the batch's renewal");
    });
    let stored = other.get(&x.id).unwrap().unwrap();
    assert_eq!(
        stored.revision, 3,
        "renewed once (the batch) and updated once: {renewed:?}"
    );
    match &renewed[0] {
        Ok(Transition::Applied(t)) => assert_eq!(t.revision, 2, "{renewed:?}"),
        Ok(other) => panic!("{other:?}"),
        Err(_) => {}
    }
    assert!(
        matches!(&renewed[1], Ok(Transition::Applied(t)) if t.revision == 2),
        "{renewed:?}"
    );
}

/// The same renewal batch, one of whose tasks another instance deletes
/// before the renewal reads it back: the batch may have renewed it first
/// (and a reader seen that), so its answer is an error, not `NotFound`.
/// (Judged again, it was `NotFound`: a renewal no call reported.)
#[test]
fn a_lost_renewal_batch_reply_with_a_task_deleted_since_is_an_error() {
    let Some(cluster) = cluster() else { return };
    let (renewed, ..) = a_lost_renewal_batch_reply(cluster, "deleted", |other, x| {
        let seen = other.get(&x.id).unwrap().unwrap();
        assert_eq!(seen.revision, 2, "renewed by the batch");
        assert!(other.delete(&x.id).unwrap());
    });
    assert!(
        !matches!(&renewed[0], Err(Error::NotFound { .. })),
        "a renewal seen made is not NotFound: {renewed:?}"
    );
}

/// A renewal batch of two tasks whose reply is lost after the commit, with
/// `meanwhile` run by another instance on the first task while the
/// renewal's write of it alone is held on its way: the renewal's answers,
/// that task, and the other instance.
fn a_lost_renewal_batch_reply(
    cluster: &Cluster,
    name: &str,
    meanwhile: impl FnOnce(&PgStore, &Task),
) -> (Vec<taskstore::Result<Transition>>, Task, PgStore) {
    let schema = fresh_schema(&format!("lost_renewal_{name}"));
    let proxy = pg_cluster::LosesAReply::start(cluster);
    let owner = PgStore::builder(proxy.conninfo())
        .schema(&schema)
        .instance_id("owner")
        .time_source(TimeSource::Clock)
        .pool_size(1)
        .open()
        .unwrap();
    let other = open(cluster, &schema, "other");
    let (x, y) = (
        owner.create(NewTask::new()).unwrap(),
        owner.create(NewTask::new()).unwrap(),
    );
    // The batch is the one statement that carries both tasks' JSON; the
    // write of `x` alone that follows it is prepared on a new connection
    // (the batch's was cut), and held on its way there.
    let json = |t: &Task| format!("\"taskId\":\"{}\"", t.id);
    proxy.arm(&[&json(&x), &json(&y)]);
    proxy.hold(&["$12::text IS NULL"]);
    let ids = [x.id.clone(), y.id.clone()];
    let renewed = std::thread::scope(|s| {
        let renewing = s.spawn(|| owner.renew_leases_of(&ids));
        proxy.wait_until_held();
        assert_eq!(proxy.cuts(), 1, "the batch's reply was lost");
        meanwhile(&other, &x);
        proxy.release();
        renewing.join().unwrap()
    });
    (renewed, x, other)
}

/// A reap whose batch loses its reply after the commit, and one of whose
/// tasks, reaped, another instance reads and deletes before the reap reads
/// it back: the reap made it, and a reader saw it made, so the reap may
/// not say it left the task alone: it reports it reaped, or missed (whether
/// its write made it cannot be told). (Taken for "changed by another", the
/// task was judged again, found gone, and left out of the report: a failed
/// version with the reaper's orphan error that no reap reported, and no
/// `task.reaped` event.)
#[test]
fn a_lost_reap_reply_with_a_task_deleted_since_is_reported() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("lost_reap_deleted");
    let two = |dead: &PgStore| -> Vec<Task> {
        (0..2)
            .map(|_| dead.create(NewTask::new()).unwrap())
            .collect()
    };
    let (tasks, proxy, reaper) = lapsed_behind_a_proxy(cluster, &schema, two, |b| {
        b.instance_id("reaper").pool_size(1)
    });
    let (x, y) = (&tasks[0], &tasks[1]);
    let other = open(cluster, &schema, "other");
    // As in the renewal's case above: the batch carries both tasks' JSON,
    // and the write of `x` alone after it is held on its new connection.
    let json = |t: &Task| format!("\"taskId\":\"{}\"", t.id);
    proxy.arm(&[&json(x), &json(y)]);
    proxy.hold(&["$12::text IS NULL"]);
    let reaped = std::thread::scope(|s| {
        let reaping = s.spawn(|| reaper.reap().unwrap());
        proxy.wait_until_held();
        assert_eq!(proxy.cuts(), 1, "the batch's reply was lost");
        let seen = other.get(&x.id).unwrap().unwrap();
        assert_eq!(seen.status, TaskStatus::Failed, "reaped by the batch");
        assert!(other.delete(&x.id).unwrap());
        proxy.release();
        reaping.join().unwrap()
    });
    let reported =
        reaped.tasks.iter().any(|t| t.id == x.id) || reaped.missed.iter().any(|m| m.id == x.id);
    assert!(reported, "the reap made it and says nothing: {reaped:?}");
}

/// A claim whose batch loses its reply after the commit, and one of whose
/// tasks another instance writes before the claim reads it back (an
/// unfenced update, which keeps the owner): that task holds the heir's
/// claim and more, so neither the batch's write nor another's is what is
/// stored. The claim reports it missed, and its handle never renews it:
/// left to lapse, as any claim that failed though its version may stand.
/// (Taken for "changed by another", it was neither reported nor disowned,
/// and the heir's renewal pass kept it alive, with no run, for ever.)
#[test]
fn a_lost_claim_reply_with_a_task_written_over_since_leaves_it_to_lapse() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("lost_reply_written");
    let three = |dead: &PgStore| -> Vec<Task> {
        (0..3)
            .map(|i| {
                dead.create(NewTask::new().resumable("k", json!(i)))
                    .unwrap()
            })
            .collect()
    };
    let (tasks, proxy, heir) =
        lapsed_behind_a_proxy(cluster, &schema, three, |b| b.instance_id("heir"));
    let heir = Arc::new(heir);
    let peer = open(cluster, &schema, "peer");
    let first = tasks[0].id.clone();
    // The batch names the first two; the write of the first alone after
    // it (its statement names "WITH u AS") is held while the peer writes.
    proxy.arm(&[tasks[0].id.as_str(), tasks[1].id.as_str()]);
    proxy.hold(&["WITH u AS", first.as_str()]);
    let claiming = {
        let heir = Arc::clone(&heir);
        std::thread::spawn(move || heir.claim(&["k"]).unwrap())
    };
    proxy.wait_until_held();
    let cancel = TaskUpdate::new().metadata("cancel", true).leave_lease();
    assert!(peer.update(&first, cancel).unwrap().is_applied());
    proxy.release();
    let claimed = claiming.join().unwrap();
    assert_eq!(proxy.cuts(), 1, "the batch's reply was lost");
    let stored = peer.get(&first).unwrap().unwrap();
    assert_eq!((stored.owner.as_deref(), stored.epoch), (Some("heir"), 2));
    let reported: Vec<&TaskId> = claimed.tasks.iter().map(|t| &t.id).collect();
    let missed: Vec<&TaskId> = claimed.missed.iter().map(|m| &m.id).collect();
    assert_eq!(missed, [&first], "reported {reported:?}");
    assert_eq!(reported.len(), 2);
    assert_eq!(heir.renew_leases().unwrap(), 2, "the other two alone");
    assert_eq!(
        peer.get(&first).unwrap().unwrap().lease_expires_at,
        stored.lease_expires_at,
        "never renewed"
    );
}

/// A write whose task takes long to reach the server (a large task, a slow
/// link) is stored: no write holds a transaction open while its task is
/// on the way, so the server's `idle_in_transaction_session_timeout` (the
/// connection's own here, 50 ms) ends none of them. A create and a
/// completion are each held by a proxy for ten times the timeout. (A
/// create was `BEGIN`, then its statement: held, it lost its session,
/// "terminating connection due to idle-in-transaction timeout", as a
/// create at the largest cap did in `tests/pg_largest.rs` on a loaded
/// machine, against the store's own 10 s.)
#[test]
fn a_write_whose_task_is_slow_to_reach_the_server_is_stored() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("slow_link");
    let proxy = pg_cluster::LosesAReply::start(cluster);
    let conninfo = format!(
        "{} options='-c idle_in_transaction_session_timeout=50'",
        proxy.conninfo()
    );
    let store = Arc::new(
        PgStore::builder(conninfo)
            .schema(&schema)
            .instance_id("slow")
            .open()
            .unwrap(),
    );
    let held = |marker: &str, write: Box<dyn FnOnce() -> taskstore::Result<Task> + Send>| {
        proxy.hold(&[marker]);
        let writing = std::thread::spawn(write);
        proxy.wait_until_held();
        std::thread::sleep(Duration::from_millis(500));
        proxy.release();
        writing.join().unwrap().unwrap()
    };
    let s = store.clone();
    let made = held(
        "slow-to-create",
        Box::new(move || s.create(NewTask::new().metadata("m", "slow-to-create"))),
    );
    let s = store.clone();
    let id = made.id.clone();
    let done = held(
        "slow-to-complete",
        Box::new(move || match s.complete(&id, json!("slow-to-complete"))? {
            Transition::Applied(done) => Ok(done),
            other => panic!("the completion: {other:?}"),
        }),
    );
    assert_eq!(done.status, TaskStatus::Completed);
    let other = open(cluster, &schema, "other");
    assert_eq!(other.get(&made.id).unwrap(), Some(done));
}

/// A create whose reply is lost after its commit (the insert is one
/// statement, committed on its own, and the server's answer to it is
/// swallowed) reports the task made: the handle reads it back, stored as
/// it was to write it. (It reported an error, and removed the task it had
/// made.)
#[test]
fn a_create_whose_commit_reply_is_lost_reports_the_task_made() {
    let Some(cluster) = cluster() else { return };
    let (schema, proxy, s) = behind_a_proxy(cluster, "lost_commit");
    let id = TaskId::parse("lost-reply").unwrap();
    proxy.arm(&[id.as_str()]);
    let task = s.create(NewTask::new().id(id)).unwrap();
    assert_eq!(proxy.cuts(), 1, "the commit's reply was lost");
    let other = open(cluster, &schema, "other");
    assert_eq!(other.get(&task.id).unwrap(), Some(task));
}

/// A create whose reply is lost after its commit while the server is out
/// of reach (it committed, and nothing can read it back) reports an error;
/// its handle, which owns the task, never renews it, and removes it once
/// the server answers again, before it renews anything, through either
/// renewal pass. (The task stayed: owned by the handle told the create
/// failed, renewed by its every pass, and a create retried under its id
/// was "already exists".)
#[test]
fn a_create_whose_commit_reply_is_lost_in_an_outage_is_not_kept_alive() {
    let Some(cluster) = cluster() else { return };
    // Through either renewal pass: of every task the handle owns, or of the
    // tasks a host runs (the MCP manager's).
    for every_task in [true, false] {
        let name = format!("lost_commit_outage_{every_task}");
        let (schema, proxy, s) = behind_a_proxy(cluster, &name);
        let id = TaskId::parse("lost-in-an-outage").unwrap();
        let renew = |s: &PgStore| -> taskstore::Result<usize> {
            if every_task {
                return s.renew_leases();
            }
            let mut renewed = 0;
            for result in s.renew_leases_of(std::slice::from_ref(&id)) {
                match result {
                    Ok(t) => renewed += usize::from(t.is_applied()),
                    Err(Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(renewed)
        };
        proxy.refuse_from_the_cut();
        proxy.arm(&[id.as_str()]);
        s.create(NewTask::new().id(id.clone()))
            .expect_err("nothing can tell the create landed");
        assert_eq!(proxy.cuts(), 1);
        let other = open(cluster, &schema, "other");
        assert!(other.get(&id).unwrap().is_some(), "the server committed it");
        assert!(renew(&s).is_err(), "the server is out of reach");
        proxy.refuse(false);
        assert_eq!(renew(&s).unwrap(), 0, "nothing of its own to renew");
        assert_eq!(other.get(&id).unwrap(), None, "every task: {every_task}");
        s.create(NewTask::new().id(id.clone())).unwrap();
    }
}

/// A single write (an update, a completion) whose reply is lost after the
/// server committed it reports it applied: the handle finds the task stored
/// as it was to write it. (It reported an error: a retried completion then
/// read "already terminal", the caller's own result shown as another's,
/// and no completion event was sent.)
#[test]
fn a_single_write_whose_reply_is_lost_after_the_commit_reports_it_applied() {
    let Some(cluster) = cluster() else { return };
    let (schema, proxy, s) = behind_a_proxy(cluster, "lost_replace");
    let other = open(cluster, &schema, "other");
    let task = s.create(NewTask::new()).unwrap();
    proxy.arm(&[task.id.as_str(), "half way"]);
    let updated = s
        .update(&task.id, TaskUpdate::new().status_message("half way"))
        .unwrap_or_else(|e| panic!("an update whose reply was lost: {e}"));
    assert_eq!(proxy.cuts(), 1, "the update's reply was lost");
    assert_eq!(other.get(&task.id).unwrap().as_ref(), Some(updated.task()));
    assert_eq!(updated.task().revision, 2, "applied once");
    proxy.arm(&[task.id.as_str(), "the answer"]);
    let done = s
        .complete(&task.id, json!("the answer"))
        .unwrap_or_else(|e| panic!("a completion whose reply was lost: {e}"));
    assert_eq!(proxy.cuts(), 2, "the completion's reply was lost");
    assert!(done.is_applied(), "{done:?}");
    assert_eq!(other.get(&task.id).unwrap().as_ref(), Some(done.task()));
}

/// A `delete` whose reply is lost after the server committed it stays an
/// error, naming the task: the task gone afterwards may be another host's
/// delete, which a second `true` would contradict. It is gone, and a delete
/// tried again says so (`false`).
#[test]
fn a_delete_whose_reply_is_lost_after_the_commit_stays_an_error() {
    let Some(cluster) = cluster() else { return };
    let (schema, proxy, s) = behind_a_proxy(cluster, "lost_delete");
    let other = open(cluster, &schema, "other");
    let task = s.create(NewTask::new()).unwrap();
    proxy.arm(&[task.id.as_str()]);
    let e = s
        .delete(&task.id)
        .expect_err("a delete whose reply was lost is not reported done");
    assert_eq!(proxy.cuts(), 1, "the delete's reply was lost");
    assert!(e.to_string().contains(task.id.as_str()), "{e}");
    assert_eq!(
        other.get(&task.id).unwrap(),
        None,
        "the delete was committed"
    );
    assert!(!s.delete(&task.id).unwrap(), "nothing left to delete");
}

/// A sweep whose batch removal loses its reply after the commit counts the
/// tasks it removed. (It said 0 deleted, and sent no expiry events, with
/// the tasks gone.)
#[test]
fn a_sweep_whose_reply_is_lost_after_the_commit_counts_what_it_removed() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("lost_sweep");
    let proxy = pg_cluster::LosesAReply::start(cluster);
    let clock = ManualClock::new(time::OffsetDateTime::now_utc());
    let s = on_clock(&proxy.conninfo(), &schema, "sweeper", &clock)
        .open()
        .unwrap();
    let tasks: Vec<Task> = (0..2)
        .map(|_| {
            s.create(NewTask::new().ttl(Duration::from_secs(1)))
                .unwrap()
        })
        .collect();
    clock.advance(Duration::from_secs(2));
    proxy.arm(&[tasks[0].id.as_str(), tasks[1].id.as_str()]);
    let swept = s.sweep_expired().unwrap();
    assert_eq!(proxy.cuts(), 1, "the batch's reply was lost");
    let other = open(cluster, &schema, "other");
    for task in &tasks {
        assert_eq!(other.get(&task.id).unwrap(), None);
    }
    assert_eq!(swept, 2, "both tasks were removed by this sweep");
}

/// A pass that meets expired tasks deletes them as a sweep would, and
/// when that removal loses its reply after the commit, it counts them as
/// its own, as a sweep does: a renewal pass names both among the expired
/// tasks it met, and the sink hears one `task.expired` event of each. (It
/// named none and sent no event: the tasks gone, no sweep could meet them
/// again, and nothing ever said they expired.)
#[test]
fn a_pass_whose_removal_of_expired_tasks_loses_its_reply_counts_them() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("lost_forget");
    let proxy = pg_cluster::LosesAReply::start(cluster);
    let clock = ManualClock::new(time::OffsetDateTime::now_utc());
    let events = Arc::new(EventLog::with_capacity(100));
    let s = on_clock(&proxy.conninfo(), &schema, "owner", &clock)
        .sink(events.clone())
        .open()
        .unwrap();
    let mut tasks: Vec<TaskId> = (0..2)
        .map(|_| {
            s.create(NewTask::new().ttl(Duration::from_secs(1)))
                .unwrap()
                .id
        })
        .collect();
    clock.advance(Duration::from_secs(2));
    proxy.arm(&[tasks[0].as_str(), tasks[1].as_str()]);
    let renewed = s.renew().unwrap();
    assert_eq!(proxy.cuts(), 1, "the removal's reply was lost");
    let (_, active) = counter_and_active(&mut cluster.client(), &schema);
    assert_eq!(active, 0, "the removal was committed");
    let mut expired = renewed.expired.clone();
    expired.sort();
    tasks.sort();
    assert_eq!(expired, tasks, "{renewed:?}");
    let expiry = taskstore::EventKind::Task(TaskEventKind::Expired);
    let mut told: Vec<String> = events
        .snapshot()
        .into_iter()
        .filter(|r| r.event.kind == expiry)
        .map(|r| r.event.data["taskId"].as_str().unwrap().to_owned())
        .collect();
    told.sort();
    let tasks: Vec<&str> = tasks.iter().map(TaskId::as_str).collect();
    assert_eq!(told, tasks);
}

/// A write whose session the server ended after its commit, a `FATAL`
/// reply (`57P01`, as an administrator's `pg_terminate_backend` gives)
/// in place of its answer, is taken as one that may have committed, as a
/// lost reply is: a create, an update and a claim of three orphans (one
/// batch) each report what they wrote, once. Only an `ERROR` reply says
/// its statement changed nothing; a `FATAL` one taken so would report the
/// create and the update failed, each stored all the same, and the claim
/// would report none of the orphans it took, each left with no run.
#[test]
fn a_write_whose_session_ends_with_a_fatal_reply_after_the_commit_reports_it() {
    let Some(cluster) = cluster() else { return };
    let (schema, proxy, s) = behind_a_proxy(cluster, "fatal_after_commit");
    proxy.fatal_on_cut();
    let other = open(cluster, &schema, "other");
    let id = TaskId::parse("fatal-after-commit").unwrap();
    proxy.arm(&[id.as_str()]);
    let created = s
        .create(NewTask::new().id(id.clone()))
        .unwrap_or_else(|e| panic!("a create answered FATAL after its commit: {e}"));
    assert_eq!(proxy.cuts(), 1, "the create was answered FATAL");
    assert_eq!(other.get(&id).unwrap().as_ref(), Some(&created));
    proxy.arm(&[id.as_str(), "half way"]);
    let updated = s
        .update(&id, TaskUpdate::new().status_message("half way"))
        .unwrap_or_else(|e| panic!("an update answered FATAL after its commit: {e}"));
    assert_eq!(proxy.cuts(), 2, "the update was answered FATAL");
    assert_eq!(other.get(&id).unwrap().as_ref(), Some(updated.task()));
    assert_eq!(updated.task().revision, 2, "applied once");

    let schema = fresh_schema("fatal_after_claim");
    let orphans = |dead: &PgStore| -> Vec<Task> {
        (0..3)
            .map(|n| {
                dead.create(NewTask::new().resumable("k", json!(n)))
                    .unwrap()
            })
            .collect()
    };
    let (orphans, proxy, heir) =
        lapsed_behind_a_proxy(cluster, &schema, orphans, |b| b.instance_id("heir"));
    proxy.fatal_on_cut();
    let markers: Vec<&str> = orphans.iter().take(2).map(|t| t.id.as_str()).collect();
    proxy.arm(&markers);
    let claimed = heir.claim(&["k"]).unwrap();
    assert_eq!(proxy.cuts(), 1, "the claim's batch was answered FATAL");
    assert!(claimed.missed.is_empty(), "{:?}", claimed.missed);
    let mut ids: Vec<&TaskId> = claimed.tasks.iter().map(|t| &t.id).collect();
    ids.sort();
    let mut want: Vec<&TaskId> = orphans.iter().map(|t| &t.id).collect();
    want.sort();
    assert_eq!(ids, want, "every orphan the claim took is reported, once");
}
