//! Time from the database server, so that hosts whose clocks disagree agree
//! on TTLs and leases.
//!
//! [`ServerClock`] reads the configured clock and adds its offset to the
//! server's `clock_timestamp()`, measured at open and again every
//! [`REFRESH`] (or the period the builder sets): by the first operation past
//! the deadline, before it takes its own connection, on an idle pooled one,
//! one round trip; never by waiting for a connection. Reading the time does
//! no I/O: an async server reads it on its runtime's threads, where the
//! synchronous client may not run (its own runtime would panic there).
//!
//! **Bound.** A measurement reads the local clock before and after one
//! round trip and takes the server's reading to be at the midpoint, so its
//! error is at most half the round trip (plus the server's microsecond
//! rounding). Between measurements the local clock may drift from the
//! server's: at most `drift × REFRESH` more (a few milliseconds for a clock
//! off by 100 ppm). A local clock *stepped* (by NTP or by hand) is off by
//! the step until the next measurement, at most [`REFRESH`] later.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::clock::Clock;

use super::pool::{Connection, Pool};

/// How often the offset is measured again.
pub(crate) const REFRESH: Duration = Duration::from_secs(30);
/// How soon a failed or skipped measurement is tried again.
const RETRY: Duration = Duration::from_secs(1);

const NOW_SQL: &str = "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::int8";

/// The offset of the server's clock, as last measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerTime {
    /// What is added to the configured clock: the server's time minus the
    /// local time.
    pub offset: time::Duration,
    /// The round trip of the measurement; half of it bounds its error.
    pub round_trip: Duration,
}

/// The configured clock, corrected to the server's.
pub(crate) struct ServerClock {
    local: Arc<dyn Clock>,
    pool: Arc<Pool>,
    base: Instant,
    /// How often to measure again.
    refresh: Duration,
    offset_nanos: AtomicI64,
    round_trip_nanos: AtomicU64,
    /// When to measure again, in milliseconds since `base`.
    next_ms: AtomicU64,
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
        let (offset, round_trip) = measure(conn, local.as_ref())?;
        let clock = ServerClock {
            local,
            pool,
            base: Instant::now(),
            refresh,
            offset_nanos: AtomicI64::new(offset),
            round_trip_nanos: AtomicU64::new(round_trip),
            next_ms: AtomicU64::new(0),
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

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn schedule(&self, after: Duration) {
        let at = self
            .elapsed_ms()
            .saturating_add(u64::try_from(after.as_millis()).unwrap_or(u64::MAX));
        self.next_ms.store(at, Ordering::Relaxed);
    }

    /// Measures again if it is time, on an idle connection, if one is idle.
    /// Blocking I/O: called by operations, never by [`Clock::now`].
    pub fn refresh_if_due(&self) {
        if self.elapsed_ms() < self.next_ms.load(Ordering::Relaxed)
            || self.measuring.swap(true, Ordering::Acquire)
        {
            return;
        }
        let measured = self
            .pool
            .try_get()
            .map(|mut conn| measure(&mut conn, self.local.as_ref()));
        match measured {
            Some(Ok((offset, round_trip))) => {
                self.offset_nanos.store(offset, Ordering::Relaxed);
                self.round_trip_nanos.store(round_trip, Ordering::Relaxed);
                self.schedule(self.refresh);
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "could not measure the server's clock; keeping the last offset");
                self.schedule(RETRY);
            }
            // Every connection busy (or none open): soon, not now.
            None => self.schedule(RETRY),
        }
        self.measuring.store(false, Ordering::Release);
    }
}

impl Clock for ServerClock {
    fn now(&self) -> OffsetDateTime {
        let offset = time::Duration::nanoseconds(self.offset_nanos.load(Ordering::Relaxed));
        self.local.now().saturating_add(offset)
    }
}

/// The server's clock minus `local`'s, in nanoseconds, and the round trip
/// it was measured over, in nanoseconds.
fn measure(conn: &mut Connection, local: &dyn Clock) -> Result<(i64, u64), postgres::Error> {
    let statement = conn.prepared(NOW_SQL)?;
    let before = local.now_unix_nanos();
    let started = Instant::now();
    let row = conn.client.query_one(&statement, &[])?;
    let round_trip = started.elapsed();
    let after = local.now_unix_nanos();
    let server_micros: i64 = row.get(0);
    let midpoint = before + (after - before) / 2;
    let offset = i128::from(server_micros) * 1_000 - midpoint;
    let offset = i64::try_from(offset).unwrap_or(if offset < 0 { i64::MIN } else { i64::MAX });
    Ok((
        offset,
        u64::try_from(round_trip.as_nanos()).unwrap_or(u64::MAX),
    ))
}
