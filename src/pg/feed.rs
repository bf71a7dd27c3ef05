//! The change feed of a PostgreSQL schema: `LISTEN` on its channel, on a
//! connection of its own.
//!
//! Every write notifies `taskstore:<schema>` with the task id, in its own
//! transaction (so a notice arrives only for a committed write, after it),
//! unless its handle was opened without change notices (which has no feed).
//! A lost connection is reopened on the next wait, and the wait that
//! reopens it reports [`Changes::Missed`]: notices sent meanwhile are gone.
//! The first connection is made on the first wait too, and reports the
//! same: writes between [`changes`](crate::TaskStore::changes) and that
//! wait sent notices to no one.
//!
//! Each connection is set up and checked as a pool's are before it
//! listens (`pool::set_up_alone`): one whose transactions do not all run in
//! one server session of its own (a connection pooler in transaction or
//! statement mode, set so after the store opened, PgBouncer's `RELOAD`)
//! would `LISTEN` in a session it then leaves, and hear nothing. It is
//! refused as a failed connect is: the wait reports [`Changes::Missed`],
//! the first refusal is a warning naming the server (never the password),
//! and a later wait tries again.
//!
//! A failed connect is tried again after a pause that doubles with each
//! failure, from [`RECONNECT_PAUSE`] to [`RECONNECT_PAUSE_MOST`], and starts
//! over once a connect succeeds ([`next_pause`]); waits within the pause
//! report [`Changes::Missed`] and connect nowhere. Each try opens two
//! connections (the second for the session check): behind a pooler with
//! a small pool (PgBouncer in session mode, a few server sessions), a feed
//! that tried at every wait would take server sessions from other clients
//! at the rate of its waits for as long as it is refused.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, Config};

use crate::changes::{ChangeSource, Changes};
use crate::id::TaskId;

use super::connect::{Connecting, Failed};
use super::pool::{close_client, server, set_up_alone};

/// How long a feed waits after its first failed connect before trying
/// again; doubled after each failure that follows ([`next_pause`]).
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);

/// The longest pause between two tries of a feed that cannot connect: a
/// server back up, or a pooler set right, is listened to again within it.
const RECONNECT_PAUSE_MOST: Duration = Duration::from_secs(4);

/// The pause after a failed connect that followed a pause of `pause`:
/// twice it, at most [`RECONNECT_PAUSE_MOST`].
fn next_pause(pause: Duration) -> Duration {
    pause.saturating_mul(2).min(RECONNECT_PAUSE_MOST)
}

/// The longest the driver is asked to wait for a notice at once (it adds
/// its timeout to an `Instant`, which a `Duration::MAX` overflows): a
/// longer wait waits again.
const LONGEST_WAIT: Duration = Duration::from_secs(3600);

pub(crate) struct Listener {
    config: Config,
    channel: String,
    client: Option<Client>,
    /// A connect still under way when the wait that started it ended: the
    /// next wait waits for it, so no wait outlasts its timeout for a server
    /// that accepts and then hangs, and no second connect starts.
    connecting: Option<Connecting>,
    /// Whether notices may have been missed since the last wait: set by
    /// every `LISTEN`, the first included (notices sent before it reached
    /// no one), and by every lost connection.
    missed: bool,
    /// Whether the last connect failed: the first failure is a warning,
    /// those after it debug lines, until a connect succeeds.
    failing: bool,
    /// When the next connect may start, after a failed one: waits before
    /// then connect nowhere.
    retry_at: Option<Instant>,
    /// The pause the next failed connect sets before the next try.
    pause: Duration,
}

/// What a wait's connect came to.
enum Connected {
    Made,
    UnderWay,
    Failed,
}

impl Listener {
    /// A feed on `channel`; connects on the first wait (never on the
    /// caller's thread, which may be driving an async runtime).
    pub fn new(config: Config, channel: String) -> Listener {
        Listener {
            config,
            channel,
            client: None,
            connecting: None,
            missed: false,
            failing: false,
            retry_at: None,
            pause: RECONNECT_PAUSE,
        }
    }

    /// Connects and listens, waiting at most `within` (a connect under way
    /// is kept for the next wait).
    fn connect(&mut self, within: Duration) -> Connected {
        let connecting = match self.connecting.take() {
            Some(connecting) => connecting,
            None => {
                let quoted = self.channel.replace('"', "\"\"");
                let config = self.config.clone();
                let listen = move |client: &mut Client| {
                    set_up_alone(&config, client)?;
                    client
                        .batch_execute(&format!("LISTEN \"{quoted}\""))
                        .map_err(Failed::Driver)
                };
                match Connecting::start(&self.config, listen) {
                    Ok(connecting) => connecting,
                    Err(e) => return self.failed(&e),
                }
            }
        };
        match connecting.wait(within) {
            None => {
                self.connecting = Some(connecting);
                Connected::UnderWay
            }
            Some(Ok(client)) => {
                self.client = Some(client);
                self.missed = true;
                self.retry_at = None;
                self.pause = RECONNECT_PAUSE;
                if std::mem::take(&mut self.failing) {
                    tracing::info!(channel = %self.channel, "change feed connected again");
                }
                Connected::Made
            }
            Some(Err(e)) => self.failed(&e),
        }
    }

    /// A connect that failed, or whose connection was refused: said (the
    /// server named, never the password), the next try put off by the
    /// pause, which doubles for the one after ([`next_pause`]), and
    /// [`Connected::Failed`].
    fn failed(&mut self, e: &dyn std::fmt::Display) -> Connected {
        let server = server(&self.config);
        let retry_in = self.pause;
        self.retry_at = Instant::now().checked_add(retry_in);
        self.pause = next_pause(retry_in);
        if std::mem::replace(&mut self.failing, true) {
            tracing::debug!(channel = %self.channel, %server, error = %e, ?retry_in, "change feed cannot connect");
        } else {
            tracing::warn!(channel = %self.channel, %server, error = %e, ?retry_in, "change feed cannot connect; its waits report missed changes until it can");
        }
        Connected::Failed
    }

    /// Sleeps until the next connect may start ([`retry_at`](Listener::retry_at))
    /// or for `most`, whichever comes first: whether it may start now.
    fn pause_for_retry(&self, most: Duration) -> bool {
        let Some(at) = self.retry_at else {
            return true;
        };
        let until = at.saturating_duration_since(Instant::now());
        if !until.is_zero() {
            std::thread::sleep(until.min(most));
        }
        Instant::now() >= at
    }

    fn drop_client(&mut self) {
        if let Some(client) = self.client.take() {
            close_client(client);
        }
    }
}

impl ChangeSource for Listener {
    fn wait(&mut self, timeout: Duration) -> Changes {
        // `None`: no deadline (a timeout past what an `Instant` holds).
        let deadline = Instant::now().checked_add(timeout);
        let left = || {
            deadline.map_or(LONGEST_WAIT, |deadline| {
                deadline
                    .saturating_duration_since(Instant::now())
                    .min(LONGEST_WAIT)
            })
        };
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.drop_client();
            if !self.pause_for_retry(left()) {
                return Changes::Missed;
            }
            match self.connect(left()) {
                Connected::Made => {}
                Connected::UnderWay => return Changes::Missed,
                Connected::Failed => {
                    self.pause_for_retry(left());
                    return Changes::Missed;
                }
            }
        }
        if std::mem::take(&mut self.missed) {
            return Changes::Missed;
        }
        let Some(client) = self.client.as_mut() else {
            return Changes::Missed;
        };
        let mut ids = Ids::default();
        let mut broken = {
            let mut notifications = client.notifications();
            let first = loop {
                let first = notifications.timeout_iter(left()).next();
                let more_time = deadline.is_none_or(|deadline| Instant::now() < deadline);
                if !(matches!(first, Ok(None)) && more_time) {
                    break first;
                }
            };
            let mut broken = first.is_err();
            if let Ok(Some(notice)) = first {
                ids.push(notice.payload());
                let mut more = notifications.iter();
                loop {
                    match more.next() {
                        Ok(Some(notice)) => ids.push(notice.payload()),
                        Ok(None) => break,
                        Err(_) => {
                            broken = true;
                            break;
                        }
                    }
                }
            }
            broken
        };
        broken |= client.is_closed();
        if broken {
            // Reopened on the next wait, which reports the gap.
            self.drop_client();
            self.missed = true;
            if ids.list.is_empty() {
                return Changes::Missed;
            }
        }
        Changes::Tasks(ids.list)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.drop_client();
    }
}

/// The ids of one wait, each once, in the order first notified.
#[derive(Default)]
struct Ids {
    list: Vec<TaskId>,
    seen: HashSet<TaskId>,
}

impl Ids {
    fn push(&mut self, payload: &str) {
        if let Ok(id) = TaskId::parse(payload)
            && self.seen.insert(id.clone())
        {
            self.list.push(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pauses between the tries of a feed that cannot connect: 0.5 s,
    /// doubled after each failure, at most 4 s.
    #[test]
    fn a_feed_that_cannot_connect_tries_again_after_pauses_doubling_to_four_seconds() {
        let mut pauses = vec![RECONNECT_PAUSE];
        for _ in 0..5 {
            pauses.push(next_pause(*pauses.last().unwrap()));
        }
        let millis: Vec<u128> = pauses.iter().map(Duration::as_millis).collect();
        assert_eq!(millis, [500, 1000, 2000, 4000, 4000, 4000]);
    }
}
