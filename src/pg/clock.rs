//! Time from the database server, so that hosts whose clocks disagree agree
//! on TTLs and leases.
//!
//! [`ServerClock`] gives the server's `clock_timestamp()`, carried on by the
//! monotonic clock between measurements, made at open and again every
//! [`REFRESH`] (or the period the builder sets), and as soon as the
//! configured wall clock has parted from the monotonic one by more than
//! [`PARTED`] since the last (a host suspended or a VM paused, whose
//! monotonic clock stood still while the wall clocks went on; a wall clock
//! stepped): by the first operation past the deadline, before it reads the
//! time it decides by
//! ([`Backend::refresh_clock`](crate::backend::Backend::refresh_clock),
//! which the rules call first; and again before each connection is taken), on an idle pooled
//! one, one round trip; never by waiting for a connection (if no
//! connection is idle, or the measurement fails, say on a connection the
//! suspend left dead, it is tried again a second later, and the operations
//! meanwhile go by the time carried on; `try_get`, which does no I/O,
//! never measures). Reading the time does
//! no I/O: an async server reads it on its runtime's threads, where the
//! synchronous client may not run (its own runtime would panic there).
//!
//! **Bound.** A measurement takes the server's reading to be at the
//! midpoint of one round trip, so its error is at most half the round trip
//! (plus the server's microsecond rounding). Between measurements the
//! monotonic clock may drift from the server's: at most `drift × REFRESH`
//! more (a few milliseconds for a clock off by 100 ppm; 15 ms for a server
//! clock NTP slews at 500 ppm; a server clock stepped moves by its step
//! until the next measurement; a handle that measured a forward step keeps
//! its time when the server's clock is set right again, as a handle's time
//! never goes back, until the server's clock catches up). `tests/pg/` checks the bound with the
//! drift measured, as it must be: the wall clock of the VM it runs on ran
//! 0.5% ahead of the monotonic clock for seconds at a time. A step of the
//! configured wall clock (by NTP or by hand) changes nothing but the
//! offset [`ServerTime`] reports: it is not what the time is carried on by
//! (it was, and a forward step stuck for its whole size: a handle's time
//! never goes back), and the measurement it sets off reads the server
//! again. The configured clock is read for that offset and to see the two
//! clocks part.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::clock::{Clock, whole_millis};

use super::pool::{Connection, Pool};

/// How often the offset is measured again.
pub(crate) const REFRESH: Duration = Duration::from_secs(30);
/// How soon a failed or skipped measurement is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// How far the configured wall clock may part from the monotonic clock
/// since the last measurement before the next operation measures again at
/// once: a suspended host (or a paused VM) whose monotonic clock stood
/// still while the wall clock went on, or a wall clock stepped. Well over
/// what the two drift apart in a refresh period: 15 ms for a clock NTP
/// slews at 500 ppm, 150 ms at the 0.5% the wall clock of the VM this
/// crate is tested on ran ahead of its monotonic one.
const PARTED: Duration = Duration::from_secs(1);

const NOW_SQL: &str = "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::int8";

/// The offset of the server's clock, as last measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerTime {
    /// The server's time minus the configured clock's, at the last
    /// measurement (what a host's clock is off by; the time itself is
    /// carried on by the monotonic clock).
    pub offset: time::Duration,
    /// The round trip of the measurement; half of it bounds its error.
    pub round_trip: Duration,
}

/// The server's clock, as last measured, carried on by the monotonic clock.
pub(crate) struct ServerClock {
    local: Arc<dyn Clock>,
    pool: Arc<Pool>,
    base: Instant,
    /// How often to measure again.
    refresh: Duration,
    /// The server's time minus the configured clock's, as last measured
    /// (reported by [`server_time`](Self::server_time)).
    offset_nanos: AtomicI64,
    /// The server's time, in nanoseconds since the epoch, minus the
    /// nanoseconds since `base`, as last measured: what [`Clock::now`]
    /// adds to the monotonic clock.
    since_base_nanos: AtomicI64,
    /// The configured clock's time, in nanoseconds since the epoch, minus
    /// the nanoseconds since `base`, at the last measurement: what
    /// [`parted`](Self::parted) compares with.
    local_base_nanos: AtomicI64,
    round_trip_nanos: AtomicU64,
    /// When to measure again, in milliseconds since `base`.
    next_ms: AtomicU64,
    /// Whether the last measurement failed or was skipped: then only the
    /// retry at `next_ms` measures again, parted clocks or not.
    retrying: AtomicBool,
    measuring: AtomicBool,
}

impl std::fmt::Debug for ServerClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerClock")
            .field("local", &self.local)
            .field("server_time", &self.server_time())
            .finish_non_exhaustive()
    }
}

impl ServerClock {
    /// A clock over `local`, measured once now on `conn`.
    pub fn start(
        local: Arc<dyn Clock>,
        refresh: Duration,
        pool: Arc<Pool>,
        conn: &mut Connection,
    ) -> Result<ServerClock, postgres::Error> {
        let base = Instant::now();
        let measured = measure(conn, local.as_ref(), base)?;
        let clock = ServerClock {
            local,
            pool,
            base,
            refresh,
            offset_nanos: AtomicI64::new(measured.offset),
            since_base_nanos: AtomicI64::new(measured.since_base),
            local_base_nanos: AtomicI64::new(measured.local_base),
            round_trip_nanos: AtomicU64::new(measured.round_trip),
            next_ms: AtomicU64::new(0),
            retrying: AtomicBool::new(false),
            measuring: AtomicBool::new(false),
        };
        clock.schedule(refresh);
        Ok(clock)
    }

    /// The offset as last measured.
    pub fn server_time(&self) -> ServerTime {
        ServerTime {
            offset: time::Duration::nanoseconds(self.offset_nanos.load(Ordering::Relaxed)),
            round_trip: Duration::from_nanos(self.round_trip_nanos.load(Ordering::Relaxed)),
        }
    }

    fn schedule(&self, after: Duration) {
        let at = whole_millis(self.base.elapsed()).saturating_add(whole_millis(after));
        self.next_ms.store(at, Ordering::Relaxed);
    }

    /// Whether the configured wall clock has parted from the monotonic one
    /// (`elapsed` since `base`) by more than [`PARTED`] since the last
    /// measurement.
    fn parted(&self, elapsed: Duration) -> bool {
        let then = i128::from(self.local_base_nanos.load(Ordering::Relaxed));
        let since_base = i128::try_from(elapsed.as_nanos()).unwrap_or(i128::MAX);
        let now = clamp(self.local.now_unix_nanos().saturating_sub(since_base));
        i128::from(now).abs_diff(then) > PARTED.as_nanos()
    }

    /// Measures again if it is time (the refresh period has passed, or the
    /// wall clock parted from the monotonic one), on an idle connection, if
    /// one is idle. Blocking I/O: called by operations, never by
    /// [`Clock::now`].
    pub fn refresh_if_due(&self) {
        let elapsed = self.base.elapsed();
        let due = whole_millis(elapsed) >= self.next_ms.load(Ordering::Relaxed)
            || (!self.retrying.load(Ordering::Relaxed) && self.parted(elapsed));
        if !due || self.measuring.swap(true, Ordering::Acquire) {
            return;
        }
        let measured = self
            .pool
            .try_get()
            .map(|mut conn| measure(&mut conn, self.local.as_ref(), self.base));
        match measured {
            Some(Ok(measured)) => {
                self.offset_nanos.store(measured.offset, Ordering::Relaxed);
                self.since_base_nanos
                    .store(measured.since_base, Ordering::Relaxed);
                self.local_base_nanos
                    .store(measured.local_base, Ordering::Relaxed);
                self.round_trip_nanos
                    .store(measured.round_trip, Ordering::Relaxed);
                self.schedule(self.refresh);
                self.retrying.store(false, Ordering::Relaxed);
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "could not measure the server's clock; keeping the last offset");
                self.schedule(RETRY);
                self.retrying.store(true, Ordering::Relaxed);
            }
            // Every connection busy (or none open): soon, not now.
            None => {
                self.schedule(RETRY);
                self.retrying.store(true, Ordering::Relaxed);
            }
        }
        self.measuring.store(false, Ordering::Release);
    }
}

impl Clock for ServerClock {
    /// The server's time as last measured, carried on by the monotonic
    /// clock: a step of the configured clock (by NTP, by hand) changes
    /// nothing until it is measured again, and then only the reported
    /// offset.
    fn now(&self) -> OffsetDateTime {
        let since_base = i64::try_from(self.base.elapsed().as_nanos()).unwrap_or(i64::MAX);
        let nanos = since_base.saturating_add(self.since_base_nanos.load(Ordering::Relaxed));
        OffsetDateTime::UNIX_EPOCH.saturating_add(time::Duration::nanoseconds(nanos))
    }

    /// The monotonic clock the server's time is carried on by: a step of
    /// the server's clock, once measured, moves it not at all.
    fn monotonic(&self) -> Option<Duration> {
        Some(self.base.elapsed())
    }
}

/// One measurement of the server's clock.
struct Measured {
    /// The server's clock minus the configured one, in nanoseconds.
    offset: i64,
    /// The server's time in nanoseconds since the epoch minus the
    /// nanoseconds since `base`, both at the round trip's midpoint.
    since_base: i64,
    /// The configured clock's time minus the nanoseconds since `base`, at
    /// the midpoint.
    local_base: i64,
    /// The round trip it was measured over, in nanoseconds.
    round_trip: u64,
}

/// Measures the server's clock against `local` and the monotonic clock
/// (from `base`), over one round trip on `conn`.
fn measure(
    conn: &mut Connection,
    local: &dyn Clock,
    base: Instant,
) -> Result<Measured, postgres::Error> {
    let statement = conn.prepared(NOW_SQL)?;
    // The wall clock's readings inside the monotonic ones: the round trip
    // reported spans both, so half of it bounds the offset's error too (a
    // thread preempted between the readings widens it, not the error).
    let started = Instant::now();
    let before = local.now_unix_nanos();
    let row = conn
        .client
        .query_one(&statement, &[])
        .map_err(|e| conn.failed(e))?;
    let after = local.now_unix_nanos();
    let round_trip = started.elapsed();
    let server = i128::from(row.try_get::<_, i64>(0)?) * 1_000;
    let midpoint = before + (after - before) / 2;
    let mono_midpoint = (started + round_trip / 2).duration_since(base).as_nanos();
    let mono_midpoint = i128::try_from(mono_midpoint).unwrap_or(i128::MAX);
    Ok(Measured {
        offset: clamp(server - midpoint),
        since_base: clamp(server - mono_midpoint),
        local_base: clamp(midpoint - mono_midpoint),
        round_trip: u64::try_from(round_trip.as_nanos()).unwrap_or(u64::MAX),
    })
}

/// `n` as an `i64`, saturated.
fn clamp(n: i128) -> i64 {
    i64::try_from(n).unwrap_or(if n < 0 { i64::MIN } else { i64::MAX })
}
