//! The store behind a real connection pooler, PgBouncer
//! (`tests/common/pgbouncer.rs`): in session mode it works as it does
//! connected straight to the server.

use super::*;
use pg_cluster::pgbouncer::{PgBouncer, PoolMode};

#[test]
fn a_store_through_pgbouncer_in_session_mode_works() {
    let Some(cluster) = cluster() else { return };
    // Enough server connections for both handles' pools and feed.
    let Some(bouncer) = PgBouncer::start(cluster, PoolMode::Session, 40) else {
        return;
    };
    let schema = fresh_schema("pooler_session");
    let clock = ManualClock::new(time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap());
    let lease = Duration::from_secs(30);
    let open = |instance: &str| {
        on_clock(&bouncer.conninfo(), &schema, instance, &clock)
            .lease(lease)
            .open()
            .unwrap_or_else(|e| panic!("open {instance} through PgBouncer: {e}"))
    };
    let (a, b) = (open("a"), open("b"));
    let mut feed = a.changes().expect("a PgStore has a change feed");
    // The feed listens once a wait times out naming nothing (a wait
    // whose connect is under way, or that has just connected, reports
    // `Missed`).
    wait_until("a's feed to listen", || {
        feed.wait(Duration::from_millis(100)) == taskstore::Changes::Tasks(Vec::new())
    });

    let orphan = b.create(NewTask::new().resumable("k", json!(1))).unwrap();
    let plain = b.create(NewTask::new()).unwrap();
    let mut heard = Vec::new();
    wait_until("a's feed to name b's two tasks", || {
        if let taskstore::Changes::Tasks(ids) = feed.wait(Duration::from_millis(100)) {
            heard.extend(ids);
        }
        heard.contains(&orphan.id) && heard.contains(&plain.id)
    });

    assert!(b.complete(&plain.id, json!("done")).unwrap().is_applied());
    clock.advance(lease);
    let claimed = a.claim(&["k"]).unwrap();
    assert!(claimed.missed.is_empty(), "{:?}", claimed.missed);
    let taken: Vec<&TaskId> = claimed.tasks.iter().map(|t| &t.id).collect();
    assert_eq!(taken, vec![&orphan.id], "a claims b's orphan");
    assert!(
        a.complete(&orphan.id, json!("resumed"))
            .unwrap()
            .is_applied()
    );

    let mut listed: Vec<(TaskId, TaskStatus)> = b
        .list(&ListQuery::all())
        .unwrap()
        .tasks
        .into_iter()
        .map(|t| (t.id, t.status))
        .collect();
    listed.sort_by(|x, y| x.0.cmp(&y.0));
    let mut want = vec![
        (orphan.id.clone(), TaskStatus::Completed),
        (plain.id.clone(), TaskStatus::Completed),
    ];
    want.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(listed, want);
    let stored = b.get(&orphan.id).unwrap().unwrap();
    assert_eq!(
        (stored.owner.as_deref(), stored.result),
        (Some("a"), Some(json!("resumed")))
    );
}
