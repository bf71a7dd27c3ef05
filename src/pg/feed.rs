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

use std::collections::HashSet;
use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, Config, NoTls};

use crate::changes::{ChangeSource, Changes};
use crate::id::TaskId;

use super::pool::close_client;

/// How long a wait pauses after a failed reconnect before trying again.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);

pub(crate) struct Listener {
    config: Config,
    channel: String,
    client: Option<Client>,
    /// Whether notices may have been missed since the last wait: set by
    /// every `LISTEN`, the first included (notices sent before it reached
    /// no one), and by every lost connection.
    missed: bool,
}

impl Listener {
    /// A feed on `channel`; connects on the first wait (never on the
    /// caller's thread, which may be driving an async runtime).
    pub fn new(config: Config, channel: String) -> Listener {
        Listener {
            config,
            channel,
            client: None,
            missed: false,
        }
    }

    fn connect(&mut self) -> Result<(), postgres::Error> {
        let mut client = self.config.connect(NoTls)?;
        let quoted = self.channel.replace('"', "\"\"");
        client.batch_execute(&format!("LISTEN \"{quoted}\""))?;
        self.client = Some(client);
        self.missed = true;
        Ok(())
    }

    fn drop_client(&mut self) {
        if let Some(client) = self.client.take() {
            close_client(client);
        }
    }
}

impl ChangeSource for Listener {
    fn wait(&mut self, timeout: Duration) -> Changes {
        let start = Instant::now();
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.drop_client();
            if let Err(e) = self.connect() {
                tracing::debug!(channel = %self.channel, error = %e, "change feed cannot connect");
                std::thread::sleep(RECONNECT_PAUSE.min(timeout));
                return Changes::Missed;
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
            let left = timeout.saturating_sub(start.elapsed());
            let first = notifications.timeout_iter(left).next();
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
