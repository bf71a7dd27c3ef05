//! A small pool of connections: at most `size` open at once, broken ones
//! replaced, never a blocking connect while a healthy idle one waits.
//!
//! Why not `r2d2`: this pool is a mutex, a condition variable and a vector,
//! and it fails fast while the server is down (a checkout that must connect
//! and cannot returns the connection error at once, instead of retrying
//! until a timeout), which is what the store's callers want: an
//! `Error::Backend` now, and the same handle working again once the server
//! is back.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, Config, NoTls, Statement};

use super::connect::{Connecting, Failed};

/// How long the server lets one of the store's sessions sit in a
/// transaction without a word (see [`session`]).
const IDLE_IN_TRANSACTION: std::time::Duration = std::time::Duration::from_secs(10);

/// What is set on every connection as it is made.
///
/// The store's statements are written for READ COMMITTED: a write that
/// waited on a row lock checks its condition again on the row as committed
/// (first writer wins; a migration sees the version its advisory lock
/// guards). A database or role may default to another level, under which
/// the waiting write would fail with a serialization error instead.
///
/// A sweep's recount (`PgBackend::recount`) holds the row of the
/// active-task counter, which every create, terminal transition and reap
/// of every host writes, from its lock to its commit (every other write is
/// one statement, committed on its own). A process frozen between the two
/// (stopped, a paused VM, a network gone silent) would hold it until TCP
/// gave up on it, hours later; the server ends such a session after
/// [`IDLE_IN_TRANSACTION`] instead, unless the server or the role set a
/// timeout of their own.
///
/// Names are resolved in `pg_catalog` alone (`search_path`): the store
/// qualifies its tables, and a schema others may write to anywhere on a
/// role's or connection's path would let them plant a function the store's
/// statements call (`pg_notify`, `count`, `unnest`, an operator) in place
/// of the server's: an overload that matches the arguments better wins
/// wherever it stands on the path, and one placed before `pg_catalog`
/// wins even with the same argument types.
///
/// An error ends no session (`exit_on_error`, which a role or database may
/// set): the store fails statements on purpose (a create refused at the
/// cap), and tells a write the server refused, which changed nothing, from
/// one whose connection was lost, which may have committed, by the reply's
/// severity (`ERROR`, not `FATAL`).
///
/// Each of those holds for the connection's life only if the server keeps
/// its session for that long: the session is also given [`MARK`], a value
/// of this connection's alone, which [`kept`] reads back.
fn session(mark: &str) -> String {
    format!(
        "SET search_path = pg_catalog; \
         SET default_transaction_isolation = 'read committed'; \
         SET exit_on_error = off; \
         SELECT set_config('idle_in_transaction_session_timeout', '{}ms', false) \
         WHERE current_setting('idle_in_transaction_session_timeout') = '0'; \
         SET {MARK} = '{mark}'",
        IDLE_IN_TRANSACTION.as_millis()
    )
}

/// The setting (a placeholder, which any role may set) whose value in a
/// session tells which of the store's connections set it ([`session`]).
const MARK: &str = "taskstore.connection";

/// Whether `client`'s session still holds the value `mark` it was given on
/// connecting ([`session`]), read in a transaction of its own (one
/// statement, never a prepared one): a connection pooler in transaction or
/// statement mode (PgBouncer's) runs that transaction in whichever server
/// session it has free, where the value is another connection's, or none
/// (a session reset between clients, a new session). `when` says when it
/// was read, for the error.
///
/// A pooler that happens to give the connection back the session it set
/// the value in passes: see [`kept_beside`], which makes it share that
/// session with a second connection first.
fn kept(client: &mut Client, mark: &str, when: &str) -> Result<(), Failed> {
    let read = client
        .simple_query(&format!(
            "SELECT current_setting('{MARK}', true), pg_backend_pid()::text"
        ))
        .map_err(Failed::Driver)?;
    let row = read.iter().find_map(|message| match message {
        postgres::SimpleQueryMessage::Row(row) => Some(row),
        _ => None,
    });
    let (found, pid) = row.map_or((None, None), |row| (row.get(0), row.get(1)));
    if found == Some(mark) {
        return Ok(());
    }
    let found = match found {
        None | Some("") => "unset",
        Some(_) => "another connection's",
    };
    Err(Failed::SessionNotKept(format!(
        "the setting {MARK} this connection made on connecting was {found} {when} \
         (server process {})",
        pid.unwrap_or("unknown")
    )))
}

/// A new value of [`MARK`], unique to one connection.
fn new_mark() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Sets up `client`, a new connection, for the store ([`session`], which
/// gives its session `mark`) and finds it keeps its session ([`kept`]).
fn set_up(client: &mut Client, mark: &str) -> Result<(), Failed> {
    client
        .batch_execute(&session(mark))
        .map_err(Failed::Driver)?;
    kept(client, mark, "in its next transaction")
}

/// Refuses a server whose sessions do not last as long as the store's
/// connections (a connection pooler in transaction or statement mode),
/// given `first`, a connection set up with `mark` ([`set_up`]): `second`
/// makes a second connection, set up the same way (its own set-up
/// [`kept`] its session), then `first` must still read its own [`MARK`].
/// The second is closed again.
///
/// A pooler that puts the second connection's transactions in the session
/// `first`'s ran in fails it, as does one that gives either connection's
/// second transaction another session than its first's: so does PgBouncer
/// whenever one server session is idle for this database and user (always
/// with `default_pool_size = 1`, and with no other client's traffic, since
/// it hands out an idle session before it opens another). Only a pooler
/// that, through other clients' traffic, gives each of the two connections
/// its own session back passes.
fn kept_beside(
    first: &mut Client,
    mark: &str,
    second: impl FnOnce() -> Result<Client, Failed>,
) -> Result<(), Failed> {
    let second = second()?;
    let first_kept = kept(
        first,
        mark,
        "in its next transaction, once a second connection had connected",
    );
    close_client(second);
    first_kept
}

/// Sets up `client`, a new connection to `config` that no pool holds (a
/// change feed's), as a pool sets up each of its own ([`set_up`]), and
/// refuses it as an open refuses its pool's first ([`kept_beside`]), the
/// second connection made on this thread: the caller's is one of
/// [`Connecting`]'s, which bounds the whole for a waiter.
pub(crate) fn set_up_alone(config: &Config, client: &mut Client) -> Result<(), Failed> {
    let mark = new_mark();
    set_up(client, &mark)?;
    kept_beside(client, &mark, || {
        let mut second = config.connect(NoTls).map_err(Failed::Driver)?;
        set_up(&mut second, &new_mark())?;
        Ok(second)
    })
}

/// A connection and the statements prepared on it.
pub(crate) struct Connection {
    pub client: Client,
    /// The value of [`MARK`] this connection gave its session.
    mark: String,
    statements: HashMap<String, Statement>,
    /// When it was last given back to the pool (or made).
    idle_since: Instant,
    /// Whether a call on it failed in a way that may have ended it
    /// ([`Connection::failed`]): then it is closed when given back.
    broken: bool,
    /// Whether another connection of the pool was given back broken while
    /// this one sat idle: then it is looked at when taken, however briefly
    /// it sat ([`is_usable`](Connection::is_usable)).
    suspect: bool,
    /// Whether the server was heard from on it since it was taken from the
    /// pool (or made): the pool's look when it was taken, a statement
    /// prepared, or [`look`](Connection::look). Whatever the server sent
    /// before then (a `FATAL` reply ending the session) has been read.
    seen_alive: bool,
}

/// How long a connection sits idle before a checkout reads what the server
/// sent it meanwhile ([`Connection::is_usable`]): that read lets the
/// driver's runtime wait for events, up to a millisecond, which a
/// connection given back moments ago is spared.
const LOOK_AFTER: Duration = Duration::from_millis(100);

impl Connection {
    /// `sql`, prepared on this connection once and reused after.
    pub fn prepared(&mut self, sql: &str) -> Result<Statement, postgres::Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql).map_err(|e| self.failed(e))?;
        self.seen_alive = true;
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    /// Makes sure the server was heard from on this connection since it
    /// was taken ([`seen_alive`](Connection::seen_alive)), before a
    /// statement that must not be sent on a session the server already
    /// ended: if it was not, a `Sync` and its answer (one round trip, which
    /// runs and writes nothing). The driver reads what the server sent
    /// before it writes a request, so an ended session (a `FATAL` reply
    /// waiting unread on a connection given back under [`LOOK_AFTER`]
    /// before) fails this, and nothing else was sent.
    ///
    /// Why a statement's own failure cannot tell that: the driver reports
    /// a `FATAL` reply read while no request of its waited for an answer
    /// as the failure of the call under way, whether it came before that
    /// call's statement was written or after the statement's whole answer
    /// (its commit) was read, in the same read, and lost.
    pub fn look(&mut self) -> Result<(), postgres::Error> {
        if self.seen_alive {
            return Ok(());
        }
        self.client.check_connection().map_err(|e| self.failed(e))?;
        self.seen_alive = true;
        Ok(())
    }

    /// `e`, which a call on this connection returned. Unless it is the
    /// server's refusal of one statement (an `ERROR` reply, after which
    /// the session goes on), the connection is closed when given back,
    /// not kept: a `FATAL` reply (a backend terminated by an
    /// administrator, a restart, a session timeout) comes before the
    /// server closes the connection, and the driver sees it closed only
    /// once it reads on, which a connection given back moments ago is not
    /// made to do ([`is_usable`](Connection::is_usable)); any other
    /// failure (the link's) leaves the session in a state no one knows.
    pub fn failed(&mut self, e: postgres::Error) -> postgres::Error {
        self.broken |= may_end_session(&e);
        e
    }

    /// Closes the connection when given back: a call on it failed with an
    /// error [`may_end_session`] says may have ended it.
    pub fn fail(&mut self) {
        self.broken = true;
    }

    /// Whether the connection can still be used. One idle for
    /// [`LOOK_AFTER`] or more first has what the server sent meanwhile
    /// read, so that a termination (a restart, an administrator's
    /// `pg_terminate_backend`, the server's `idle_session_timeout`) is seen
    /// here, not by the next statement: a zero timeout, which still lets
    /// the driver's runtime take in the socket's events (waiting up to a
    /// millisecond for its timer); `notifications().iter()`, which the
    /// others get, polls without taking in new events, and saw none of
    /// those terminations.
    fn is_usable(&mut self) -> bool {
        if self.client.is_closed() {
            return false;
        }
        // One the server may have ended with the one given back broken (a
        // restart, a failover, an administrator ends them all at once) is
        // looked at too: a read made again after that one failed would
        // meet it ended.
        let long_idle =
            self.idle_since.elapsed() >= LOOK_AFTER || std::mem::take(&mut self.suspect);
        let polled = {
            let mut notifications = self.client.notifications();
            if long_idle {
                notifications.timeout_iter(Duration::ZERO).next().is_ok()
            } else {
                notifications.iter().next().is_ok()
            }
        };
        let usable = polled && !self.client.is_closed();
        self.seen_alive = long_idle && usable;
        usable
    }
}

/// Whether `e`, an error of a call on a connection, may have left the
/// connection unusable: anything but the server's refusal of one statement
/// (see [`Connection::failed`]).
pub(crate) fn may_end_session(e: &postgres::Error) -> bool {
    !e.as_db_error()
        .is_some_and(|db| db.parsed_severity() == Some(postgres::error::Severity::Error))
}

pub(crate) struct Pool {
    config: Config,
    size: usize,
    /// Connects under way, those callers stopped waiting for (past
    /// [`Connecting::wait_for`]) included until they end: at most `size`.
    hung: Arc<AtomicUsize>,
    /// How long [`get`](Pool::get) waits for a connection given back.
    wait: Duration,
    state: Mutex<State>,
    freed: Condvar,
}

struct State {
    idle: Vec<Connection>,
    /// Connections open or being opened, idle ones included.
    open: usize,
}

/// Why [`Pool::get`] handed out no connection.
#[derive(Debug)]
pub(crate) enum NoConnection {
    /// Connecting to the server described failed.
    Connect(Failed, String),
    /// Every connection stayed busy for the pool's wait.
    Busy { size: usize, waited: Duration },
}

/// The server `config` connects to, for an error: its hosts (or socket
/// directories) and the addresses given for them (`hostaddr`, which the
/// connection goes to when given), ports, database and user; never the
/// password. Made here from the fields an operator sets to say where, so a
/// new such field of the driver's must be added by hand.
pub(crate) fn server(config: &Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            postgres::config::Host::Tcp(name) => name.clone(),
            postgres::config::Host::Unix(dir) => dir.display().to_string(),
        })
        .collect();
    let addresses: Vec<String> = config
        .get_hostaddrs()
        .iter()
        .map(ToString::to_string)
        .collect();
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    let listed = |list: &[String]| {
        if list.is_empty() {
            "(default)".to_owned()
        } else {
            list.join(",")
        }
    };
    let mut host = format!("host {}", listed(&hosts));
    if !addresses.is_empty() {
        host = format!("{host} (hostaddr {})", listed(&addresses));
    }
    format!(
        "{host} port {} database {} user {}",
        listed(&ports),
        config.get_dbname().unwrap_or("(default)"),
        config.get_user().unwrap_or("(default)"),
    )
}

impl NoConnection {
    /// The store's error for `op`, which found no connection.
    pub fn into_error(self, op: String) -> crate::Error {
        match self {
            NoConnection::Connect(Failed::Driver(e), server) => {
                super::backend::failed(format!("{op} at {server}"), e)
            }
            NoConnection::Connect(e, server) => crate::Error::backend(
                super::backend::BACKEND,
                format!("{op} at {server}"),
                e.to_string(),
            ),
            NoConnection::Busy { size, waited } => crate::Error::backend(
                super::backend::BACKEND,
                op,
                format!(
                    "no free connection within {waited:?}: all {size} of the pool's \
                     connections stayed busy (a slow server or a lock held; see \
                     `pool_size` and `pool_wait`)"
                ),
            ),
        }
    }
}

/// A connection checked out of the pool; back in the pool when dropped,
/// unless it broke.
pub(crate) struct Lease<'a> {
    pool: &'a Pool,
    connection: Option<Connection>,
}

impl Pool {
    /// The server this pool connects to, for an error: never the password
    /// ([`server`]).
    pub fn server(&self) -> String {
        server(&self.config)
    }

    pub fn new(config: Config, size: usize, wait: Duration) -> Pool {
        Pool {
            config,
            size: size.max(1),
            hung: Arc::new(AtomicUsize::new(0)),
            wait,
            state: Mutex::new(State {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn size(&self) -> usize {
        self.size
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding this lock; recover regardless.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection: an idle one that still works, else a new one while
    /// fewer than `size` are open, else the next one given back within the
    /// pool's wait.
    pub fn get(&self) -> Result<Lease<'_>, NoConnection> {
        let deadline = Instant::now() + self.wait;
        let mut state = self.lock();
        loop {
            if let Some(connection) = self.take_idle(&mut state) {
                return Ok(self.lease(connection));
            }
            if state.open < self.size {
                state.open += 1;
                drop(state);
                return match self.connect() {
                    Ok(connection) => Ok(self.lease(connection)),
                    Err(e) => {
                        self.lock().open -= 1;
                        self.freed.notify_one();
                        Err(NoConnection::Connect(e, server(&self.config)))
                    }
                };
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(NoConnection::Busy {
                    size: self.size,
                    waited: self.wait,
                });
            }
            state = self
                .freed
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// An idle connection that still works, if there is one now; never
    /// connects and never waits.
    pub fn try_get(&self) -> Option<Lease<'_>> {
        let mut state = self.lock();
        let connection = self.take_idle(&mut state)?;
        Some(self.lease(connection))
    }

    fn take_idle(&self, state: &mut State) -> Option<Connection> {
        while let Some(mut connection) = state.idle.pop() {
            if connection.is_usable() {
                return Some(connection);
            }
            state.open -= 1;
            close(connection);
        }
        None
    }

    fn lease(&self, connection: Connection) -> Lease<'_> {
        Lease {
            pool: self,
            connection: Some(connection),
        }
    }

    /// Refuses a server whose sessions do not last as long as the store's
    /// connections (a connection pooler in transaction or statement mode),
    /// given `first`, a connection this pool just made, and a second one
    /// this pool makes ([`kept_beside`]). The second is closed again: the
    /// open leaves the pool holding `first` alone, as before.
    pub fn check_sessions(&self, first: &mut Connection) -> Result<(), NoConnection> {
        kept_beside(&mut first.client, &first.mark, || {
            self.connect().map(|second| second.client)
        })
        .map_err(|e| NoConnection::Connect(e, self.server()))
    }

    /// A new connection, set up for the store's statements ([`session`])
    /// and found to keep its session ([`kept`]), within
    /// [`Connecting::wait_for`] (the driver's `connect_timeout` bounds each
    /// host's socket connect alone; [`Connecting`] the whole).
    fn connect(&self) -> Result<Connection, Failed> {
        let timeout = Connecting::wait_for(&self.config, super::CONNECT_TIMEOUT);
        let mark = new_mark();
        let setup = {
            let mark = mark.clone();
            move |client: &mut Client| set_up(client, &mark)
        };
        let client = Connecting::within(&self.config, setup, timeout, &self.hung, self.size)?;
        Ok(Connection {
            client,
            mark,
            statements: HashMap::new(),
            idle_since: Instant::now(),
            broken: false,
            suspect: false,
            // Its set-up's statements were answered.
            seen_alive: true,
        })
    }

    fn give_back(&self, mut connection: Connection) {
        connection.idle_since = Instant::now();
        connection.seen_alive = false;
        let mut state = self.lock();
        if connection.broken || connection.client.is_closed() {
            state.open -= 1;
            for idle in &mut state.idle {
                idle.suspect = true;
            }
            drop(state);
            close(connection);
        } else {
            state.idle.push(connection);
            drop(state);
        }
        self.freed.notify_one();
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let idle = std::mem::take(&mut self.lock().idle);
        close_all(idle);
    }
}

/// Closes a connection. Each synchronous client runs a small runtime of its
/// own, which must not be dropped on a thread that drives an async runtime
/// (a handle dropped inside a Tokio task): the closing is done on a thread
/// of its own.
fn close(connection: Connection) {
    close_client(connection.client);
}

fn close_all(connections: Vec<Connection>) {
    if connections.is_empty() {
        return;
    }
    close_off_thread(Box::new(connections));
}

/// Closes `client` on a thread of its own (see [`close`]).
pub(crate) fn close_client(client: Client) {
    close_off_thread(Box::new(client));
}

fn close_off_thread(closing: Box<dyn Send>) {
    let spawned = std::thread::Builder::new()
        .name("taskstore-pg-close".to_owned())
        .spawn(move || drop(closing));
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start a thread to close connections; leaking them");
    }
}

impl Deref for Lease<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.connection.as_ref().expect("present until dropped")
    }
}

impl DerefMut for Lease<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        self.connection.as_mut().expect("present until dropped")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            self.pool.give_back(connection);
        }
    }
}
