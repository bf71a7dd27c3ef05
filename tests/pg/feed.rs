//! The change feed: a write between subscribing and the first wait is never
//! lost silently, waiting for ever when told to, every task another handle
//! writes named, and a handle without change notices.

use super::*;

#[test]
fn a_write_between_subscribing_and_the_first_wait_is_never_lost_silently() {
    // The feed connects on its first wait (never on the subscriber's
    // thread, which may drive an async runtime): a write made before that
    // is named by no notice, so that wait must say changes may be missed.
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("feed_first");
    let (a, b) = (open(cluster, &schema, "a"), open(cluster, &schema, "b"));
    let mut feed = a.changes().expect("a PgStore has a change feed");
    let early = b.create(NewTask::new()).unwrap();
    match feed.wait(Duration::from_millis(100)) {
        taskstore::Changes::Missed => {}
        taskstore::Changes::Tasks(ids) => assert!(
            ids.contains(&early.id),
            "the first wait named {ids:?}, not the task written before it"
        ),
        other => panic!("unexpected {other:?}"),
    }
}

/// A wait of `Duration::MAX` (a host's "for ever") waits for a notice: the
/// driver adds its timeout to an `Instant`, which panicked with an
/// overflow as soon as a notice came.
#[test]
fn a_feed_waits_for_ever_when_told_to() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("feed_forever");
    let (a, b) = (open(cluster, &schema, "a"), open(cluster, &schema, "b"));
    let mut feed = a.changes().expect("a PgStore has a change feed");
    while !matches!(
        feed.wait(Duration::from_millis(100)),
        taskstore::Changes::Missed
    ) {}
    let task = b.create(NewTask::new()).unwrap();
    let got = returns("a wait for ever", move || feed.wait(Duration::MAX));
    assert_eq!(got, taskstore::Changes::Tasks(vec![task.id]));
}

/// Waits until `feed`, new, listens: its first wait cannot know what was
/// written before it did (`Missed`), nor can a wait while its connect is
/// still under way; a wait that names tasks (none) comes from a listening
/// connection. (Writes made before its `LISTEN` are never named: a loaded
/// machine's connect outlasted the first wait, and a test waited for
/// notices that were never sent.)
fn listening(feed: &mut taskstore::ChangeFeed) {
    assert_eq!(
        feed.wait(Duration::from_millis(10)),
        taskstore::Changes::Missed
    );
    wait_until("the feed to listen", || {
        matches!(
            feed.wait(Duration::from_millis(100)),
            taskstore::Changes::Tasks(_)
        )
    });
}

#[test]
fn the_change_feed_names_every_task_another_handle_writes() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("feed");
    let (a, b) = (open(cluster, &schema, "a"), open(cluster, &schema, "b"));
    let mut feed = a.changes().expect("a PgStore has a change feed");
    // The first wait connects and listens, and cannot know what was written
    // before it did.
    listening(&mut feed);
    let one = b.create(NewTask::new()).unwrap();
    let two = b.create(NewTask::new()).unwrap();
    assert!(b.complete(&one.id, json!(1)).unwrap().is_applied());
    let mut seen = Vec::new();
    wait_until("the feed to name both tasks", || {
        if let taskstore::Changes::Tasks(ids) = feed.wait(Duration::from_millis(100)) {
            seen.extend(ids);
        }
        seen.contains(&one.id) && seen.contains(&two.id)
    });
    let mut other = cluster.client();
    other
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%' AND datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .unwrap();
    // A lost connection is reported as possibly missed changes, then the
    // feed listens again.
    let mut missed = false;
    wait_until("the feed to report the gap", || {
        missed |= feed.wait(Duration::from_millis(100)) == taskstore::Changes::Missed;
        missed
    });
    wait_until("the feed to listen again", || {
        matches!(
            feed.wait(Duration::from_millis(100)),
            taskstore::Changes::Tasks(_)
        )
    });
    let three = b.create(NewTask::new()).unwrap();
    let mut seen = Vec::new();
    wait_until(
        "the feed to name a task written after it reconnected",
        || {
            if let taskstore::Changes::Tasks(ids) = feed.wait(Duration::from_millis(100)) {
                seen.extend(ids);
            }
            seen.contains(&three.id)
        },
    );
}

/// A handle opened without change notices makes every kind of write
/// (insert, replace, the batch replace of a renewal, remove, the batch
/// remove of a sweep) without notifying, and has no feed of its own:
/// another handle's feed, which names a marker task written after them,
/// names none of its tasks (notifications arrive in commit order, so any
/// of them would have come first).
#[test]
fn a_handle_without_change_notices_notifies_nothing() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("quiet");
    let clock = ManualClock::new(time::OffsetDateTime::now_utc());
    let quiet = on_clock(&cluster.conninfo(), &schema, "quiet", &clock)
        .change_notices(false)
        .open()
        .unwrap();
    let loud = open(cluster, &schema, "loud");
    assert!(quiet.changes().is_none(), "it would not see its own writes");
    let mut feed = loud.changes().expect("a PgStore has a change feed");
    listening(&mut feed);
    let kept = quiet.create(NewTask::new()).unwrap();
    let update = TaskUpdate::new().status_message("on it");
    assert!(quiet.update(&kept.id, update).unwrap().is_applied());
    assert_eq!(quiet.renew_leases().unwrap(), 1);
    let done = quiet.create(NewTask::new()).unwrap();
    assert!(quiet.complete(&done.id, json!(1)).unwrap().is_applied());
    let deleted = quiet.create(NewTask::new()).unwrap();
    assert!(quiet.delete(&deleted.id).unwrap());
    let expiring = quiet
        .create(NewTask::new().ttl(Duration::from_secs(1)))
        .unwrap();
    clock.advance(Duration::from_secs(2));
    assert_eq!(quiet.sweep().unwrap().deleted, 1);
    let marker = loud.create(NewTask::new()).unwrap();
    let mut seen = Vec::new();
    wait_until("the feed to name the marker", || {
        if let taskstore::Changes::Tasks(ids) = feed.wait(Duration::from_millis(100)) {
            seen.extend(ids);
        }
        seen.contains(&marker.id)
    });
    let quiet_ids = [&kept.id, &done.id, &deleted.id, &expiring.id];
    assert!(
        seen.iter().all(|id| !quiet_ids.contains(&id)),
        "notified by the quiet handle: {seen:?}"
    );
    // Its writes are there all the same.
    let stored = loud.get(&kept.id).unwrap().unwrap();
    assert_eq!(stored.status_message.as_deref(), Some("on it"));
    assert!(loud.get(&done.id).unwrap().unwrap().is_terminal());
}

/// The pauses a feed that cannot connect keeps between its tries
/// (`feed::next_pause` in `src/pg/feed.rs`): 0.5 s after the first failure,
/// doubled after each, at most 4 s; and how many tries they allow from the
/// first within `elapsed`.
fn tries_within(elapsed: Duration) -> usize {
    let (mut tries, mut at, mut pause) = (0, Duration::ZERO, Duration::from_millis(500));
    while at <= elapsed {
        tries += 1;
        at += pause;
        pause = (pause * 2).min(Duration::from_secs(4));
    }
    tries
}

/// A feed whose connection is lost while the server cannot be reached
/// (a proxy refusing every connection) tries again after pauses that
/// double, from 0.5 s to 4 s, not at every wait, and once it listens again
/// the pauses start over. Counted by the proxy over 29 waits of 100 ms
/// (2.9 s at least: each of them waits its whole timeout), the tries are
/// at most as many as the pauses allow in the time the waits took, and at
/// least three (0.5 s and 1 s after the first); after a connect that
/// succeeded, at least three again. (Every wait tried once: 29 tries,
/// each a connection through a pooler's small pool and a second one for
/// the session check.)
#[test]
fn a_feed_that_cannot_connect_tries_again_after_pauses_that_double() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("feed_backoff");
    let proxy = pg_cluster::LosesAReply::start(cluster);
    let a = PgStore::builder(proxy.conninfo())
        .schema(&schema)
        .time_source(TimeSource::Clock)
        .open()
        .unwrap();
    let mut feed = a.changes().expect("a PgStore has a change feed");
    let mut watcher = cluster.client();
    for round in ["after the first loss", "after listening again"] {
        wait_until("the feed to listen", || {
            feed.wait(Duration::from_millis(100)) == taskstore::Changes::Tasks(Vec::new())
        });
        proxy.refuse(true);
        let before = proxy.accepted();
        end_feed_session(&mut watcher, &schema);
        wait_until("the feed to report its lost connection", || {
            feed.wait(Duration::from_millis(100)) == taskstore::Changes::Missed
        });
        let started = std::time::Instant::now();
        for _ in 0..29 {
            assert_eq!(
                feed.wait(Duration::from_millis(100)),
                taskstore::Changes::Missed
            );
        }
        let (tries, elapsed) = (proxy.accepted() - before, started.elapsed());
        assert!(
            tries <= tries_within(elapsed),
            "{round}: {tries} tries in {elapsed:?}, more than the pauses allow ({})",
            tries_within(elapsed)
        );
        assert!(tries >= 3, "{round}: {tries} tries in {elapsed:?}");
        proxy.refuse(false);
    }
}

/// Ends the server session of the one change feed listening on `schema`
/// (its last statement, its `LISTEN`, names the schema).
pub(super) fn end_feed_session(client: &mut postgres::Client, schema: &str) {
    let ended: i64 = client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE query LIKE 'LISTEN%' AND query LIKE '%' || $1 || '%'",
            &[&schema],
        )
        .unwrap()
        .get(0);
    assert_eq!(ended, 1, "the feed's server session");
}
