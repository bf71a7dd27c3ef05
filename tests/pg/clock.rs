//! Time: reading it without I/O, hosts whose clocks disagree, a time the
//! server cannot store, an expiry past the column's range, a suspended host, a server clock stepped and set right,
//! a wall clock that parts from the monotonic one.

use super::*;

/// Reading a handle's time does no I/O, even once the server's clock is
/// due to be measured again: an async server (the MCP task manager) reads
/// it on its runtime's threads, where the synchronous client may not run
/// its own runtime (it panicked there, and dropping the connection while
/// unwinding aborted the process). The next operation measures instead.
/// A step of the local wall clock moves the handle's time not at all,
/// before or after the measurement that sees it (a forward step stuck
/// for its whole size: the time was the local clock plus an offset, and a
/// handle's time never goes back).
#[test]
fn reading_the_time_does_no_io_and_the_next_operation_measures_the_clock_again() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("clock_refresh");
    let local = Arc::new(ManualClock::new(time::OffsetDateTime::now_utc()));
    let store = PgStore::builder(cluster.conninfo())
        .schema(&schema)
        .clock(local.clone())
        .server_clock_refresh(Duration::from_millis(1))
        .open()
        .unwrap();
    let measured = store.server_time().unwrap().offset;
    let mut client = cluster.client();
    let near_the_server = |now: time::OffsetDateTime, client: &mut postgres::Client| {
        let off = (now.unix_timestamp_nanos() - server_nanos(client)).abs();
        let off = time::Duration::nanoseconds(off as i64);
        assert!(
            off < time::Duration::seconds(5),
            "{now} is {off} off the server"
        );
    };
    local.advance(Duration::from_secs(600));
    std::thread::sleep(Duration::from_millis(5));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let now = runtime.block_on(async { store.now() });
    assert_eq!(store.server_time().unwrap().offset, measured);
    near_the_server(now, &mut client);
    store.get(&TaskId::new()).unwrap();
    let stepped = store.server_time().unwrap().offset;
    let off = (stepped - (measured - time::Duration::seconds(600))).abs();
    assert!(
        off < time::Duration::seconds(5),
        "{measured} then {stepped}"
    );
    near_the_server(store.now(), &mut client);
}

// ---------------------------------------------------------------------------
// Hosts whose clocks disagree.

/// The system clock, offset: a host whose clock is wrong.
#[derive(Debug)]
struct OffsetClock(time::Duration);

impl taskstore::Clock for OffsetClock {
    fn now(&self) -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc() + self.0
    }
}

/// The server's time, in Unix nanoseconds.
fn server_nanos(client: &mut postgres::Client) -> i128 {
    let micros: i64 = client
        .query_one(
            "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::int8",
            &[],
        )
        .unwrap()
        .get(0);
    i128::from(micros) * 1_000
}

/// One reading of the server's clock against this host's monotonic clock,
/// both at the round trip's midpoint.
#[derive(Clone, Copy)]
struct Reading {
    server_nanos: i128,
    at: std::time::Instant,
    /// Half the round trip: the reading's error.
    half_nanos: i128,
}

impl Reading {
    fn take(client: &mut postgres::Client) -> Reading {
        let started = std::time::Instant::now();
        let server_nanos = server_nanos(client);
        let round_trip = started.elapsed();
        Reading {
            server_nanos,
            at: started + round_trip / 2,
            half_nanos: (round_trip / 2).as_nanos() as i128,
        }
    }

    /// How far the server's clock has moved from this host's monotonic
    /// clock since `reference`, at most: its drift (a clock NTP slews; the
    /// wall clock of the VM this runs on ran 0.5% ahead of its monotonic one
    /// for seconds at a time), plus both readings' errors.
    fn drift_since(&self, reference: &Reading) -> i128 {
        let server = self.server_nanos - reference.server_nanos;
        let monotonic = self.at.duration_since(reference.at).as_nanos() as i128;
        (server - monotonic).abs() + self.half_nanos + reference.half_nanos
    }
}

/// The skewed hosts' lease: far shorter than their clocks' skew (5
/// minutes either way: judged by a host's own clock, the other's leases
/// would have lapsed minutes ago or run minutes on), and far longer than a
/// loaded machine stalls a process (with 2 s, a host stopped for 3 s was
/// reaped by the other, rightly).
const SKEWED_LEASE: Duration = Duration::from_secs(60);

/// A skewed host: its own task, renewed, each renewal's lease checked
/// against the server's time read around it; reaps in a loop; polls the
/// shared TTL task until it is gone, checking each answer against the
/// server's time read around it. A handle goes by the server's clock as it
/// measured it at open, carried on by the monotonic clock: its error is
/// half that round trip plus how far the server's clock has drifted from
/// the monotonic one since, which the check measures.
fn skewed_host(args: &[String]) {
    let (name, offset_secs): (&str, i64) = (&args[3], args[4].parse().unwrap());
    let expiring = TaskId::parse(&args[5]).unwrap();
    let events = Arc::new(EventLog::with_capacity(10_000));
    let store = PgStore::builder(&args[0])
        .schema(&args[1])
        .instance_id(name)
        .lease(SKEWED_LEASE)
        .clock(Arc::new(OffsetClock(time::Duration::seconds(offset_secs))))
        .sink(events.clone())
        .open()
        .unwrap();
    let server = store
        .server_time()
        .expect("the store goes by the server's time");
    let offset_error = (server.offset + time::Duration::seconds(offset_secs)).abs();
    // Half the round trip, plus 1 ms for the drift between the clocks
    // until the reference below is read, plus the server's microsecond
    // rounding.
    let bound = server.round_trip / 2 + Duration::from_millis(1);
    assert!(
        offset_error <= bound,
        "measured offset {:?} is off by {offset_error} (bound {bound:?})",
        server.offset
    );
    let bound_ns = bound.as_nanos() as i128;
    let mut client = postgres::Client::connect(&args[0], postgres::NoTls).unwrap();
    let reference = Reading::take(&mut client);
    let mine = store.create(NewTask::new().metadata("host", name)).unwrap();
    let expires = {
        let t = store
            .get(&expiring)
            .unwrap()
            .expect("the parent created it");
        t.expires_at().unwrap().unix_timestamp_nanos()
    };
    let mut reaped = Vec::new();
    let mut rounds = 0;
    let mut gone_at = None;
    let renew_every = std::time::Instant::now();
    let mut last_renew = renew_every;
    // Until the TTL task is gone, and for at least 20 renewals.
    while gone_at.is_none() || renew_every.elapsed() < Duration::from_secs(6) {
        rounds += 1;
        if last_renew.elapsed() >= Duration::from_millis(300) {
            let before = Reading::take(&mut client);
            assert_eq!(store.renew_leases().unwrap(), 1, "{name} renews its task");
            let after = Reading::take(&mut client);
            // The lease it wrote runs from the server's time.
            let lease = store.get(&mine.id).unwrap().unwrap().lease_expires_at;
            let from = (lease.unwrap() - SKEWED_LEASE).unix_timestamp_nanos();
            let (early, late) = (
                before.drift_since(&reference),
                after.drift_since(&reference),
            );
            assert!(
                from >= before.server_nanos - bound_ns - early
                    && from <= after.server_nanos + bound_ns + late,
                "{name} renewed its lease from {from} ns, server time {} to {} ns \
                 (bound {bound_ns} ns, the clocks' drift {early} and {late} ns)",
                before.server_nanos,
                after.server_nanos
            );
            last_renew = std::time::Instant::now();
        }
        reaped.extend(store.reap_orphans().unwrap());
        if gone_at.is_none() {
            let before = Reading::take(&mut client);
            let seen = store.get(&expiring).unwrap();
            let after = Reading::take(&mut client);
            match seen {
                Some(_) => {
                    let drift = before.drift_since(&reference);
                    assert!(
                        before.server_nanos <= expires + bound_ns + drift,
                        "{name} still saw the task {} ns past its expiry, server time \
                         (bound {bound_ns} ns, the clocks' drift {drift} ns)",
                        before.server_nanos - expires
                    );
                }
                None => {
                    let drift = after.drift_since(&reference);
                    assert!(
                        after.server_nanos >= expires - bound_ns - drift,
                        "{name} saw the task expire {} ns early, server time \
                         (bound {bound_ns} ns, the clocks' drift {drift} ns)",
                        expires - after.server_nanos
                    );
                    gone_at = Some(after.server_nanos);
                }
            }
            let _ = store.sweep().unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(reaped.is_empty(), "{name} reaped live tasks: {reaped:?}");
    let mine = store.get(&mine.id).unwrap().unwrap();
    assert_eq!(mine.status, TaskStatus::Working, "{name}'s task lives");
    let expired = events
        .snapshot()
        .iter()
        .filter(|r| r.event.kind == TaskEventKind::Expired)
        .count();
    common::write_atomic(
        &std::path::Path::new(&args[2]).join(format!("expired-{name}")),
        format!("{expired} {rounds}").as_bytes(),
    );
}

#[test]
fn hosts_with_clocks_ten_minutes_apart_agree_on_leases_and_expiry() {
    let test = "clock::hosts_with_clocks_ten_minutes_apart_agree_on_leases_and_expiry";
    if let Some((_, args)) = role() {
        return skewed_host(&args);
    }
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("skew");
    let store = open(cluster, &schema, "parent");
    // Long enough to outlast both children's start on a loaded machine:
    // each reads it first.
    let expiring = store
        .create(NewTask::new().ttl(Duration::from_secs(8)))
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let hosts: Vec<_> = [("ahead", 300), ("behind", -300)]
        .into_iter()
        .map(|(name, offset)| {
            let rest = [name.to_owned(), offset.to_string(), expiring.id.to_string()];
            spawn(
                work.path(),
                test,
                name,
                &child_args(cluster, &schema, work.path(), &rest),
            )
        })
        .collect();
    hosts.into_iter().for_each(common::Running::finish);
    let expired: usize = ["ahead", "behind"]
        .iter()
        .map(|name| {
            let report =
                std::fs::read_to_string(work.path().join(format!("expired-{name}"))).unwrap();
            report.split(' ').next().unwrap().parse::<usize>().unwrap()
        })
        .sum();
    assert_eq!(expired, 1, "the task expired once, on one host");
    let tasks = store.list(&ListQuery::all()).unwrap().tasks;
    assert_eq!(
        tasks.len(),
        2,
        "both hosts' tasks live, the TTL task is gone"
    );
    assert!(tasks.iter().all(|t| t.status == TaskStatus::Working));
}

/// A create at a time the backend cannot store (a host's own clock past
/// 2262, `TimeSource::Clock`) is refused, naming the task and the range,
/// and leaves nothing to undo: no version at that time can be stored, so
/// its undo finds it "not there" at once. (The undo failed on the same
/// range check, and the task stayed in the handle's list of failed creates
/// to remove, tried again at every renewal pass.)
#[test]
fn a_create_at_a_time_it_cannot_store_is_refused_and_leaves_nothing_to_undo() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("far_future");
    let clock = Arc::new(ManualClock::new(
        time::macros::datetime!(2300-01-01 0:00 UTC),
    ));
    let store = PgStore::builder(cluster.conninfo())
        .schema(&schema)
        .clock(clock)
        .time_source(TimeSource::Clock)
        .open()
        .unwrap();
    let logged = common::Logged::default();
    let err = tracing::subscriber::with_default(logged.clone(), || {
        let err = store.create(NewTask::new()).unwrap_err();
        let _ = store.renew_leases().unwrap();
        err
    });
    let message = err.to_string();
    assert!(
        message.contains("insert task") && message.contains("outside the years 1677 to 2262"),
        "{message}"
    );
    assert_eq!(
        logged.warnings().len(),
        0,
        "nothing was left to undo: {:?}",
        logged.warnings()
    );
    assert!(store.list(&ListQuery::all()).unwrap().tasks.is_empty());
}

/// A task created before 2262 whose expiry falls after it: its row's
/// `expires_at_ns`, the sweep's index, holds Unix nanoseconds to
/// 2262-04-11T23:47:16.854775807Z and keeps that expiry clamped there,
/// earlier than the task's own. Neither a running task nor a finished one
/// is deleted by a sweep, nor read as expired (`get`, `list`), from the
/// clamped instant on (where the sweep's scan picks its row: every time
/// past the column's range is clamped too) until its own expiry, and both
/// go at it: the task's own expiry decides (the scan's `Scan::matches`,
/// and the sweep's own check of each task it deletes), the column only
/// picks the rows to look at. A handle going by a clock near 2262
/// (`TimeSource::Clock`), over a real server.
#[test]
fn a_task_expiring_past_2262_lives_until_its_own_expiry() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("past_2262");
    let clamped = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(i64::MAX)).unwrap();
    let clock = Arc::new(ManualClock::new(clamped - time::Duration::hours(1)));
    let store = PgStore::builder(cluster.conninfo())
        .schema(&schema)
        .clock(clock.clone())
        .time_source(TimeSource::Clock)
        .open()
        .unwrap();
    let ttl = Duration::from_secs(2 * 86_400);
    let running = store.create(NewTask::new().ttl(ttl)).unwrap();
    let finished = store.create(NewTask::new().ttl(ttl)).unwrap();
    let completed = store.complete(&finished.id, json!("done")).unwrap();
    assert!(matches!(completed, Transition::Applied(_)), "{completed:?}");
    let expires = running.expires_at().unwrap();
    assert!(expires > clamped + time::Duration::days(1), "{expires}");
    // Both rows keep the clamped expiry: the column's last instant.
    let mut client = cluster.client();
    let columns: Vec<i64> = client
        .query(
            &format!("SELECT expires_at_ns FROM {schema}.tasks ORDER BY id"),
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(columns, [i64::MAX, i64::MAX]);

    let live = |store: &PgStore| {
        let listed = store.list(&ListQuery::all()).unwrap().tasks.len();
        let read = [&running.id, &finished.id]
            .iter()
            .filter(|id| store.get(id).unwrap().is_some())
            .count();
        (listed, read)
    };
    // Past the clamped instant (the sweep's scan picks both rows), then a
    // nanosecond before their own expiry: each pass deletes nothing, and
    // both tasks read back.
    clock.advance(Duration::from_secs(2 * 3600));
    assert_eq!(store.sweep_expired().unwrap(), 0, "at {}", store.now());
    assert_eq!(live(&store), (2, 2), "at {}", store.now());
    let before = (expires - store.now()) - time::Duration::nanoseconds(1);
    clock.advance(before.unsigned_abs());
    assert_eq!(store.now(), expires - time::Duration::nanoseconds(1));
    assert_eq!(store.sweep_expired().unwrap(), 0, "at {}", store.now());
    assert_eq!(live(&store), (2, 2), "at {}", store.now());
    // At their expiry the sweep deletes both, and they are gone for
    // every reader.
    clock.advance(Duration::from_nanos(1));
    assert_eq!(store.sweep_expired().unwrap(), 2, "at {}", store.now());
    assert_eq!(live(&store), (0, 0), "at {}", store.now());
    let rows: i64 = client
        .query_one(&format!("SELECT count(*) FROM {schema}.tasks"), &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 0);
}

/// The system clock, moved on by hand: a host's wall clock after a resume
/// (or a step), which goes on ticking from there.
#[derive(Debug, Default)]
struct JumpingClock(std::sync::atomic::AtomicI64);

impl JumpingClock {
    fn jump(&self, by: Duration) {
        let nanos = i64::try_from(by.as_nanos()).unwrap();
        self.0.fetch_add(nanos, std::sync::atomic::Ordering::SeqCst);
    }
}

impl taskstore::Clock for JumpingClock {
    fn now(&self) -> time::OffsetDateTime {
        let jumped = self.0.load(std::sync::atomic::Ordering::SeqCst);
        time::OffsetDateTime::now_utc() + time::Duration::nanoseconds(jumped)
    }
}

/// A host suspended (or its VM paused) for an hour: its monotonic clock
/// stood still, while its wall clock and the server's went on. The first
/// operation after the resume goes by the server's time: a create with a
/// TTL of half an hour makes a task that reads back, a renewal writes a
/// lease that another host does not reap. (Both went by the time carried
/// on from before the suspend, an hour behind the server's: the create
/// made a task already expired, `get` then found none; the renewal was
/// `Applied` with a lease that had lapsed, and the other host reaped the
/// live task at once. The operations measured the server again only when
/// they took a connection, after they had read the time.)
#[test]
fn a_hosts_first_operations_after_a_suspend_go_by_the_servers_time() {
    let Some(cluster) = pg_cluster::private_faked() else {
        return;
    };
    let schema = fresh_schema("suspended");
    let local = Arc::new(JumpingClock::default());
    let store = PgStore::builder(cluster.conninfo())
        .schema(&schema)
        .instance_id("host-a")
        .clock(local.clone())
        .open()
        .unwrap();
    let running = store.create(NewTask::new()).unwrap();
    let mut client = cluster.client();
    let mut server_now =
        || time::OffsetDateTime::from_unix_timestamp_nanos(server_nanos(&mut client)).unwrap();
    let near = |what: &str, at: time::OffsetDateTime, server: time::OffsetDateTime| {
        assert!(
            (at - server).abs() < time::Duration::minutes(5),
            "{what} at {at}, the server's time {server}"
        );
    };

    // The suspend: the two wall clocks move on an hour, the monotonic one
    // does not.
    cluster.move_clock("+1h");
    local.jump(Duration::from_secs(3600));
    let made = store
        .create(NewTask::new().ttl(Duration::from_secs(1800)))
        .unwrap();
    near("the first create after it", made.created_at, server_now());
    assert!(
        store.get(&made.id).unwrap().is_some(),
        "a task the create made reads back"
    );

    // Another, and a renewal first.
    cluster.move_clock("+2h");
    local.jump(Duration::from_secs(3600));
    let renewed = store.renew_lease(&running.id).unwrap();
    assert!(renewed.is_applied());
    let lease = renewed.task().lease_expires_at.unwrap();
    let server = server_now();
    assert!(
        lease > server,
        "the renewal wrote a lease that lapsed already: {lease}, the server's time {server}"
    );
    let other = open(&cluster, &schema, "host-b");
    let reaped = other.reap().unwrap();
    assert!(
        reaped.tasks.is_empty(),
        "another host reaped a task its owner had just renewed: {:?}",
        reaped.tasks
    );
}

/// The database server's clock stepped forward ten minutes, then set
/// right (NTP): a host that measured the step keeps its time (it never
/// goes back), but judges other owners' leases by its clock's reading,
/// which follows the server's again once it has measured it set right, so
/// it reaps none of the live tasks their owner renewed since. (It reaped
/// them, for as long as the step: its time stayed ten minutes ahead until
/// the server's caught up.)
#[test]
fn a_host_that_measured_a_server_clock_step_reaps_no_live_task_once_it_is_set_right() {
    let Some(cluster) = pg_cluster::private_faked() else {
        return;
    };
    let schema = fresh_schema("server_step");
    let owner = open(&cluster, &schema, "owner");
    let running = owner.create(NewTask::new()).unwrap();
    let local = Arc::new(JumpingClock::default());
    let seer = PgStore::builder(cluster.conninfo())
        .schema(&schema)
        .instance_id("seer")
        .clock(local.clone())
        .open()
        .unwrap();

    // The step; the seer's local wall clock parts from its monotonic one,
    // so that its next operation measures the server's again.
    cluster.move_clock("+10m");
    local.jump(Duration::from_secs(2));
    seer.get(&TaskId::new()).unwrap();
    let ahead = seer.now();
    let lease = running.lease_expires_at.unwrap();
    assert!(
        ahead > lease + time::Duration::minutes(5),
        "the seer measured the step: its time {ahead}, the lease {lease}"
    );

    // Set right, and measured so; the owner renews from the right time.
    cluster.move_clock("+0");
    local.jump(Duration::from_secs(2));
    seer.get(&TaskId::new()).unwrap();
    assert!(seer.now() >= ahead, "the seer's time never goes back");
    assert!(owner.renew_lease(&running.id).unwrap().is_applied());

    let reaped = seer.reap().unwrap();
    assert!(reaped.tasks.is_empty(), "live work reaped: {reaped:?}");
    let stored = owner.get(&running.id).unwrap().unwrap();
    assert_eq!(stored.status, TaskStatus::Working);
}

/// The database server's clock stepped back ten minutes, then set right
/// again before it caught up, its owner renewing a task throughout, for
/// two leases: a peer that measured the server set right reaps none of it.
/// (The owner's time stood still while the server's clock read behind it,
/// and so did the leases it renewed from it: the peer reaped the live task
/// at its first reap.) The server's clock is set right stopped, two leases
/// past the step, and the peer measures it within its reap: the owner's
/// leases ran on from the step for two leases (its renewals took that long
/// at least) and outlast that time; leases that stood still lapsed a lease
/// before it. No stall of the test process moves the time the peer judges
/// by. (Set right running, the test process stopped 3 s before the reap
/// let the owner's last 2 s lease lapse, and the peer reaped the task,
/// rightly.)
#[test]
fn a_task_renewed_while_the_server_clock_was_stepped_back_lives_once_it_is_set_right() {
    let Some(cluster) = pg_cluster::private_faked() else {
        return;
    };
    let schema = fresh_schema("server_back");
    let lease = Duration::from_secs(2);
    let local = Arc::new(JumpingClock::default());
    let handle = |instance: &str| {
        PgStore::builder(cluster.conninfo())
            .schema(&schema)
            .instance_id(instance)
            .lease(lease)
            .clock(local.clone())
            .open()
            .unwrap()
    };
    let owner = handle("owner");
    let peer = handle("peer");
    let running = owner.create(NewTask::new()).unwrap();

    // The step back; the local wall clock parts from the monotonic one, so
    // that the next operation of each handle measures the server again.
    let stepped = owner.now();
    cluster.move_clock("-10m");
    local.jump(Duration::from_secs(2));
    for _ in 0..20 {
        assert!(owner.renew_lease(&running.id).unwrap().is_applied());
        std::thread::sleep(lease / 10);
    }
    let offset = owner.server_time().unwrap().offset;
    assert!(
        offset < time::Duration::minutes(-5),
        "the owner measured the step: {offset}"
    );

    // Set right, stopped two leases past the step (the owner's renewals
    // took that long at least), and measured so by the peer within its
    // reap (its local clock parted again), before the owner renews again.
    cluster.stop_clock_at(stepped + lease * 2);
    local.jump(Duration::from_secs(2));
    let reaped = peer.reap().unwrap();
    cluster.move_clock("+0");
    let offset = peer.server_time().unwrap().offset;
    assert!(
        offset > time::Duration::minutes(-5),
        "the peer measured the server set right: {offset}"
    );
    assert!(reaped.tasks.is_empty(), "live work reaped: {reaped:?}");
    let stored = owner.get(&running.id).unwrap().unwrap();
    assert_eq!(stored.status, TaskStatus::Working);
}

/// The time is carried on by the monotonic clock, which stands still while
/// the host is suspended (or its VM paused) while the wall clock does not:
/// once the two part by more than a second since the last measurement, the
/// next operation measures the server's clock again, at once, not at the
/// end of the refresh period (30 s, during which the handle's time lagged
/// by the whole suspend), and then not again: the measurement is the new
/// baseline. The local wall clock jumps a minute, as a resume shows it.
#[test]
fn a_wall_clock_that_parts_from_the_monotonic_one_is_measured_again_at_once() {
    let Some(cluster) = cluster() else { return };
    let schema = fresh_schema("clock_parted");
    let local = Arc::new(JumpingClock::default());
    let store = PgStore::builder(cluster.conninfo())
        .schema(&schema)
        .clock(local.clone())
        .open()
        .unwrap();
    let measured = store.server_time().unwrap().offset;
    local.jump(Duration::from_secs(60));
    store.get(&TaskId::new()).unwrap();
    let again = store.server_time().unwrap();
    let off = (again.offset - (measured - time::Duration::seconds(60))).abs();
    assert!(
        off < time::Duration::seconds(5),
        "measured {measured}, then {again:?} after the wall clock moved a minute"
    );
    // Measured once: the clocks agree with the new baseline (a measurement
    // reports a round trip and an offset of its own each time).
    for _ in 0..20 {
        store.get(&TaskId::new()).unwrap();
    }
    assert_eq!(
        store.server_time().unwrap(),
        again,
        "measured again and again"
    );
}
