//! Opening a connection that a caller waits for a bounded time.
//!
//! The driver's `connect_timeout` bounds the socket's connect alone, not
//! the start-up after it: a server that accepts the connection and then
//! says nothing (stopped with `SIGSTOP`, a paused VM, a proxy whose backend
//! hangs) holds a connect until the kernel gives up on the socket (the
//! keepalives and `tcp_user_timeout` the store sets, or never while the
//! peer's kernel still acknowledges). So the connect runs on a thread of
//! its own, which a caller that stops waiting leaves behind: that thread
//! closes the connection it makes, if it ever makes one.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Duration;

use postgres::{Client, Config, NoTls};

/// Why no connection was made.
#[derive(Debug)]
pub(crate) enum Failed {
    /// The driver's error (the socket, the start-up, authentication, or
    /// the set-up statements run on the new connection).
    Driver(postgres::Error),
    /// Still under way when the caller stopped waiting.
    Hung(Duration),
    /// As many earlier connects as `limit` still hang: no other is started
    /// until one of them ends.
    TooManyHung(usize),
    /// No thread could be started, or it panicked.
    Thread(String),
    /// The connection's transactions do not all run in one server session
    /// of its own (a connection pooler in transaction or statement mode):
    /// what was found, from `pool::kept`.
    SessionNotKept(String),
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failed::Driver(e) => write!(f, "{e}"),
            Failed::Hung(waited) => write!(
                f,
                "no connection within {waited:?} (`connect_timeout` for each host, and once \
                 more for the server's start-up): no host answered, or the server took the \
                 connection and did not finish its start-up (stopped or overloaded?)"
            ),
            Failed::TooManyHung(limit) => write!(
                f,
                "{limit} connects to the server are under way or still hang after their \
                 time; none is started until one of them ends"
            ),
            Failed::Thread(why) => write!(f, "connecting: {why}"),
            Failed::SessionNotKept(found) => write!(
                f,
                "{found}: the connection's transactions ran in server sessions it does not \
                 keep, as they do behind a connection pooler in transaction or statement \
                 mode; the store needs each connection to keep one server session for its life \
                 (its prepared statements, its settings, a change feed's LISTEN): run the \
                 pooler in session mode for the store (PgBouncer's `pool_mode = session`), or \
                 connect to the server directly"
            ),
        }
    }
}

/// A connect under way on a thread of its own.
pub(crate) struct Connecting {
    made: Receiver<Result<Client, Failed>>,
}

impl Connecting {
    /// Starts connecting with `config`, then runs `setup` on the new
    /// connection.
    pub fn start(
        config: &Config,
        setup: impl FnOnce(&mut Client) -> Result<(), Failed> + Send + 'static,
    ) -> Result<Connecting, Failed> {
        let (send, made) = mpsc::sync_channel(1);
        let config = config.clone();
        let spawned = std::thread::Builder::new()
            .name("taskstore-pg-connect".to_owned())
            .spawn(move || {
                let result =
                    config
                        .connect(NoTls)
                        .map_err(Failed::Driver)
                        .and_then(|mut client| {
                            // Dropped here, on this thread (no async runtime's), if
                            // the set-up fails.
                            setup(&mut client).map(|()| client)
                        });
                // A caller that stopped waiting dropped the receiver: the
                // connection, if made, is dropped (closed) with the
                // message.
                drop(send.send(result));
            });
        match spawned {
            Ok(_) => Ok(Connecting { made }),
            Err(e) => Err(Failed::Thread(format!("cannot start a thread: {e}"))),
        }
    }

    /// The connection or why not, if the connect ends within `timeout`;
    /// `None` if it is still under way (wait again, or drop this to leave
    /// it behind).
    pub fn wait(&self, timeout: Duration) -> Option<Result<Client, Failed>> {
        match self.made.recv_timeout(timeout) {
            Ok(result) => Some(result),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => Some(Err(Failed::Thread(
                "the connecting thread panicked".to_owned(),
            ))),
        }
    }

    /// Leaves the connect behind, still counted in `hung` (as
    /// [`within`](Connecting::within) counted it) until it ends.
    fn abandon(self, hung: &Arc<AtomicUsize>) {
        let hung = Arc::clone(hung);
        let made = self.made;
        let spawned = std::thread::Builder::new()
            .name("taskstore-pg-connect-hung".to_owned())
            .spawn(move || {
                // Whatever it ends with, dropped (closed) here.
                drop(made.recv());
                hung.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            // Counted for good: a thread we cannot start is not worth more
            // connects either.
            tracing::warn!("could not start a thread to wait for a hung connect");
        }
    }

    /// Connects within `timeout`, or says why not, leaving a connect still
    /// under way behind. `hung` counts the connects under way, those left
    /// behind included (until they end): while it is at `limit`, none is
    /// started.
    pub fn within(
        config: &Config,
        setup: impl FnOnce(&mut Client) -> Result<(), Failed> + Send + 'static,
        timeout: Duration,
        hung: &Arc<AtomicUsize>,
        limit: usize,
    ) -> Result<Client, Failed> {
        if hung.fetch_add(1, Ordering::SeqCst) >= limit {
            hung.fetch_sub(1, Ordering::SeqCst);
            return Err(Failed::TooManyHung(limit));
        }
        let connecting = match Connecting::start(config, setup) {
            Ok(connecting) => connecting,
            Err(e) => {
                hung.fetch_sub(1, Ordering::SeqCst);
                return Err(e);
            }
        };
        match connecting.wait(timeout) {
            Some(result) => {
                hung.fetch_sub(1, Ordering::SeqCst);
                result
            }
            None => {
                connecting.abandon(hung);
                Err(Failed::Hung(timeout))
            }
        }
    }

    /// How long a caller waits for a connect with `config`: its
    /// `connect_timeout` (else `default`) for each host it lists (the
    /// driver tries them in turn, each for that long), and once more for
    /// the start-up of the one that answers, which the driver does not
    /// bound.
    pub fn wait_for(config: &Config, default: Duration) -> Duration {
        let each = config.get_connect_timeout().copied().unwrap_or(default);
        let hosts = config
            .get_hosts()
            .len()
            .max(config.get_hostaddrs().len())
            .max(1);
        each.saturating_mul(u32::try_from(hosts + 1).unwrap_or(u32::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The driver tries the hosts in turn, each for `connect_timeout`, and
    /// does not bound the start-up: a caller waits that long for each
    /// host, and once more.
    #[test]
    fn a_connect_waits_connect_timeout_for_each_host_and_once_more() {
        let wait = |conninfo: &str| {
            let config: Config = conninfo.parse().unwrap();
            Connecting::wait_for(&config, Duration::from_secs(10))
        };
        assert_eq!(wait("host=a connect_timeout=3"), Duration::from_secs(6));
        assert_eq!(
            wait("host=a,b,c connect_timeout=3"),
            Duration::from_secs(12)
        );
        assert_eq!(
            wait("hostaddr=10.0.0.1,10.0.0.2 connect_timeout=2"),
            Duration::from_secs(6)
        );
        assert_eq!(wait("host=a"), Duration::from_secs(20));
    }
}
