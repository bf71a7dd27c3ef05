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
//! and the next wait tries again.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, Config};

use crate::changes::{ChangeSource, Changes};
use crate::id::TaskId;

use super::connect::{Connecting, Failed};
use super::pool::{close_client, server, set_up_alone};

/// How long a wait pauses after a failed reconnect before trying again.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);

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
    /// those after it (one a wait) debug lines, until a connect succeeds.
    failing: bool,
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
                if std::mem::take(&mut self.failing) {
                    tracing::info!(channel = %self.channel, "change feed connected again");
                }
                Connected::Made
            }
            Some(Err(e)) => self.failed(&e),
        }
    }

    /// A connect that failed, or whose connection was refused: said (the
    /// server named, never the password) and [`Connected::Failed`].
    fn failed(&mut self, e: &dyn std::fmt::Display) -> Connected {
        let server = server(&self.config);
        if std::mem::replace(&mut self.failing, true) {
            tracing::debug!(channel = %self.channel, %server, error = %e, "change feed cannot connect");
        } else {
            tracing::warn!(channel = %self.channel, %server, error = %e, "change feed cannot connect; its waits report missed changes until it can");
        }
        Connected::Failed
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
            match self.connect(left()) {
                Connected::Made => {}
                Connected::UnderWay => return Changes::Missed,
                Connected::Failed => {
                    std::thread::sleep(RECONNECT_PAUSE.min(left()));
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
