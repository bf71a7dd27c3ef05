//! The renewal, sweep and reap rows of `benches/pg.rs`: `PgStore`'s
//! passes over many tasks against the floor's statements for the same
//! batch, and `FileStore`'s renewals.

use super::*;

/// Per-renewal times (ns) of renewal passes over `size` running tasks:
/// the floor with the store's batch statement stripped of its locking step
/// (it waits for rows another session holds, where the store's leaves them
/// out), the floor (one load of the batch's rows, decoded, then the
/// store's batch statement), `PgStore::renew_leases_of`, and
/// `FileStore`'s; the four take turns within each round, which goes first
/// rotating.
pub(crate) fn renew_rows(cluster: &pg_cluster::Cluster, size: usize) -> [f64; 4] {
    let (schema, store, _dir, file) = peers(cluster);
    let sql = pg_statements(&schema);
    let mut client = Client::connect(&cluster.conninfo(), NoTls).unwrap();
    let load_all = client.prepare(&sql.load_all).unwrap();
    let batches = [
        client.prepare(&sql.replace_all_waiting).unwrap(),
        client.prepare(&sql.replace_all).unwrap(),
    ];
    // The floors renew the store's own tasks (running, leased to it).
    let made = |s: &dyn TaskStore| -> Vec<TaskId> {
        (0..size)
            .map(|_| s.create(NewTask::new()).unwrap().id)
            .collect()
    };
    let floors = [made(&store), made(&store)];
    let (pg_ids, file_ids) = (made(&store), made(&file));
    let passes = RENEWALS_PER_ROUND / size;
    let per = (passes * size) as f64;
    let mut times = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    for round in 0..ROUNDS {
        for turn in 0..4 {
            let slot = (round + turn) % 4;
            let started = Instant::now();
            for _ in 0..passes {
                match slot {
                    0 | 1 => renew_directly(
                        &mut client,
                        &load_all,
                        &batches[slot],
                        &sql.channel,
                        &floors[slot],
                    ),
                    _ => {
                        let (s, ids) = if slot == 2 {
                            (&store as &dyn TaskStore, &pg_ids)
                        } else {
                            (&file as &dyn TaskStore, &file_ids)
                        };
                        for renewed in s.renew_leases_of(ids) {
                            assert!(renewed.unwrap().is_applied());
                        }
                    }
                }
            }
            times[slot].push(started.elapsed().as_nanos() as f64 / per);
        }
    }
    times.map(median)
}

/// One renewal pass over `ids` as a host would write it by hand: one load
/// of their rows (decoded), then `batch` over the versions read, each
/// with its lease moved on and its revision raised.
fn renew_directly(
    client: &mut Client,
    load_all: &Statement,
    batch: &Statement,
    channel: &str,
    ids: &[TaskId],
) {
    let ids: Vec<&str> = ids.iter().map(TaskId::as_str).collect();
    let rows = client.query(load_all, &[&ids]).unwrap();
    assert_eq!(rows.len(), ids.len());
    let lease = time::OffsetDateTime::now_utc() + Duration::from_secs(30);
    replace_rows(client, batch, channel, &rows, "working", |task| {
        task.lease_expires_at = Some(lease);
    });
}

/// `batch` (the store's replacement batch) over the versions of `rows`
/// (`id, task`), each changed by `change` to a task of `status`, with its
/// revision raised.
fn replace_rows(
    client: &mut Client,
    batch: &Statement,
    channel: &str,
    rows: &[postgres::Row],
    status: &str,
    change: impl Fn(&mut Task),
) {
    let (mut id, mut created, mut revision, mut next_revision, mut json) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for row in rows {
        let mut task: Task = serde_json::from_str(row.get(1)).unwrap();
        id.push(task.id.to_string());
        created.push(task.created_at.unix_timestamp_nanos() as i64);
        revision.push(task.revision as i64);
        change(&mut task);
        task.revision += 1;
        next_revision.push(task.revision as i64);
        json.push(serde_json::to_string(&task).unwrap());
    }
    let n = id.len();
    let active = status == "working";
    let written = client
        .query(
            batch,
            &[
                &id,
                &created,
                &revision,
                &vec![true; n],
                &created,
                &next_revision,
                &vec![status; n],
                &vec![active; n],
                &vec![None::<i64>; n],
                &json,
                &channel,
            ],
        )
        .unwrap();
    assert_eq!(written.len(), n);
}

/// A pass over many tasks that removes or replaces them in one batch.
#[derive(Clone, Copy)]
pub(crate) enum Pass {
    /// `sweep`: expired finished tasks, removed (`remove_all`).
    Sweep,
    /// `reap`: running tasks whose owner's lease lapsed, failed
    /// (`replace_all`).
    Reap,
}

impl Pass {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Pass::Sweep => "sweep",
            Pass::Reap => "reap",
        }
    }
}

/// Times (ns) of one pass over [`PASS_TASKS`] tasks: the floor (the
/// store's own statements issued directly: the page of candidates,
/// decoded, then one batch), and `PgStore::sweep` or `PgStore::reap`. Each
/// sample's tasks are made untimed just before it, on a `ManualClock`
/// moved past their TTL (or their lease and its grace), and the pass
/// leaves the table as it found it (the reaped tasks, finished, are
/// deleted untimed), so every sample meets the same table. The two take
/// turns within each round, which goes first alternating.
pub(crate) fn pass_rows(cluster: &pg_cluster::Cluster, pass: Pass) -> [f64; 2] {
    let schema = pg_cluster::fresh_schema("bench");
    let clock = ManualClock::new(time::OffsetDateTime::now_utc());
    let handle = |instance: &str| {
        PgStore::builder(cluster.conninfo())
            .schema(&schema)
            .instance_id(instance)
            .time_source(TimeSource::Clock)
            .clock(Arc::new(clock.clone()))
            .lease(Duration::from_secs(1))
            .open()
            .unwrap()
    };
    let (store, dead) = (handle("bench"), handle("dead"));
    let sql = pg_statements(&schema);
    let mut client = Client::connect(&cluster.conninfo(), NoTls).unwrap();
    let (page, batch) = match pass {
        Pass::Sweep => (&sql.scan_expired, &sql.remove_all),
        Pass::Reap => (&sql.list_active, &sql.replace_all),
    };
    let page = client.prepare(page).unwrap();
    let batch = client.prepare(batch).unwrap();
    let ttl = Duration::from_secs(60);
    let mut times = [Vec::new(), Vec::new()];
    for round in 0..PASS_ROUNDS {
        for turn in 0..2 {
            let slot = (round + turn) % 2;
            match pass {
                Pass::Sweep => {
                    for _ in 0..PASS_TASKS {
                        let task = store.create(NewTask::new().ttl(ttl)).unwrap();
                        assert!(
                            store
                                .complete(&task.id, result_payload())
                                .unwrap()
                                .is_applied()
                        );
                    }
                    clock.advance(ttl + Duration::from_secs(1));
                }
                Pass::Reap => {
                    for _ in 0..PASS_TASKS {
                        dead.create(NewTask::new()).unwrap();
                    }
                    // Past the lease (1 s) and the claim grace (the lease).
                    clock.advance(Duration::from_secs(5));
                }
            }
            let now = clock.now();
            let started = Instant::now();
            match (slot, pass) {
                (0, Pass::Sweep) => {
                    sweep_directly(&mut client, &page, &batch, &sql.channel, now);
                }
                (0, Pass::Reap) => reap_directly(&mut client, &page, &batch, &sql.channel, now),
                (_, Pass::Sweep) => {
                    let swept = store.sweep().unwrap();
                    assert_eq!((swept.deleted, swept.missed.len()), (PASS_TASKS, 0));
                }
                (_, Pass::Reap) => {
                    let reaped = store.reap().unwrap();
                    assert_eq!((reaped.tasks.len(), reaped.missed.len()), (PASS_TASKS, 0));
                }
            }
            times[slot].push(started.elapsed().as_nanos() as f64);
            if let Pass::Reap = pass {
                let gone = client
                    .execute(&format!("DELETE FROM {schema}.tasks WHERE NOT active"), &[])
                    .unwrap();
                assert_eq!(gone, PASS_TASKS as u64);
            }
        }
    }
    times.map(median)
}

/// A sweep as a host would write it by hand: the page of tasks expired by
/// `now` (decoded), then `batch`, the store's removal batch, over the
/// versions read.
fn sweep_directly(
    client: &mut Client,
    page: &Statement,
    batch: &Statement,
    channel: &str,
    now: time::OffsetDateTime,
) {
    let now = now.unix_timestamp_nanos() as i64;
    let rows = client.query(page, &[&SWEEP_PAGE, &now]).unwrap();
    assert_eq!(rows.len(), PASS_TASKS);
    let (mut id, mut created, mut revision) = (Vec::new(), Vec::new(), Vec::new());
    for row in &rows {
        let task: Task = serde_json::from_str(row.get(1)).unwrap();
        id.push(task.id.to_string());
        created.push(task.created_at.unix_timestamp_nanos() as i64);
        revision.push(task.revision as i64);
    }
    let removed = client
        .query(batch, &[&id, &created, &revision, &channel])
        .unwrap();
    assert_eq!(removed.len(), PASS_TASKS);
}

/// A reap as a host would write it by hand: the page of running tasks
/// (decoded), each failed as the store fails an orphan, then `batch`, the
/// store's replacement batch, over the versions read.
fn reap_directly(
    client: &mut Client,
    page: &Statement,
    batch: &Statement,
    channel: &str,
    now: time::OffsetDateTime,
) {
    let rows = client.query(page, &[&i64::MAX]).unwrap();
    assert_eq!(rows.len(), PASS_TASKS);
    replace_rows(client, batch, channel, &rows, "failed", |task| {
        assert!(task.lease_expires_at.is_some_and(|at| at < now));
        task.error = Some(json!({
            "code": "orphaned",
            "message": format!("task {} was abandoned: its owner {} stopped renewing its lease",
                task.id, task.owner.as_deref().unwrap_or("(unknown)")),
            "owner": task.owner,
            "leaseExpiredAt": task.lease_expires_at.map(rfc3339),
            "reapedBy": "direct",
        }));
        task.status = taskstore::TaskStatus::Failed;
        task.input_requests = None;
        task.resume = None;
        task.last_updated_at = now;
        task.lease_expires_at = None;
    });
}
