//! The PostgreSQL backend: several hosts, one store.
//!
//! Tasks live in one table of a schema (FORMAT.md, "PostgreSQL schema"),
//! as the JSON the rules handed over (`text`, never `jsonb`, which would
//! refuse `\u0000` and renormalize numbers) beside the columns the
//! statements filter and order by. Every write is one conditional
//! statement; time comes from the database server's clock
//! ([`TimeSource::Server`]), so hosts whose clocks disagree still agree on
//! TTLs and leases.

mod backend;
mod clock;
mod connect;
mod feed;
mod pool;
mod recent;
mod schema;
mod sql;

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::rules::{Store, StoreBuilder};

pub use self::backend::PgBackend;
pub use self::clock::ServerTime;

/// The SQL `PgStore` issues over `schema` for a create, a conditional
/// write, a batch of them, a batch of removals, a load, a page of active
/// tasks and a sweep's page of expired ones, and its notification channel: for `benches/pg.rs`, whose floor runs the same
/// statements without the store around them. Not part of the API; it
/// changes with the store.
#[doc(hidden)]
#[derive(Debug)]
pub struct PgStatements {
    pub insert: String,
    pub replace: String,
    /// The batch of conditional writes (a renewal pass's, a reap's).
    pub replace_all: String,
    /// The same batch without its locking step: it waits for the rows
    /// another session holds, where the store's leaves them out (the
    /// bench times what that step costs).
    pub replace_all_waiting: String,
    pub load: String,
    /// The batch of conditional removals (a sweep's).
    pub remove_all: String,
    /// The load of several tasks at once, by id.
    pub load_all: String,
    /// A page of active tasks (`$1` the limit): a listing's, a reap's.
    pub list_active: String,
    /// A sweep's page of the tasks expired by `$2` (`$1` the limit).
    pub scan_expired: String,
    /// A page of owner `$2`'s tasks (`$1` the limit): a listing's by
    /// owner (`ListQuery::owner`).
    pub list_owned: String,
    pub channel: String,
}

/// [`PgStatements`] over `schema`.
#[doc(hidden)]
pub fn pg_statements(schema: &str) -> PgStatements {
    let sql = sql::Sql::new(schema, true);
    let list_active = sql.scan(
        &crate::backend::Scan::new(crate::backend::Scope::Active, 1),
        false,
    );
    let mut expired = crate::backend::Scan::new(crate::backend::Scope::All, 1);
    expired.expired_at = Some(time::OffsetDateTime::UNIX_EPOCH);
    let scan_expired = sql.scan(&expired, false);
    let mut owned = crate::backend::Scan::new(crate::backend::Scope::All, 1);
    owned.owner = Some(String::new());
    let list_owned = sql.scan(&owned, false);
    PgStatements {
        list_active,
        scan_expired,
        list_owned,
        replace_all_waiting: sql.replace_all_waiting(),
        replace_all: sql.replace_all,
        insert: sql.insert,
        replace: sql.replace,
        remove_all: sql.remove_all,
        load: sql.load,
        load_all: sql.load_all,
        channel: sql.channel,
    }
}

use self::backend::failed;
use self::clock::ServerClock;
use self::pool::Pool;
use self::sql::Sql;

/// A task store in a PostgreSQL schema, shared by every handle on every host
/// that connects to it: the store's rules over a [`PgBackend`].
///
/// ```no_run
/// # fn main() -> taskstore::Result<()> {
/// let store = taskstore::PgStore::connect("host=/var/run/postgresql user=app dbname=app")?;
/// # Ok(())
/// # }
/// ```
pub type PgStore = Store<PgBackend>;

/// Configures and opens a [`PgStore`]: the settings of every store
/// ([`StoreBuilder`]) and those of the PostgreSQL backend.
pub type PgStoreBuilder = StoreBuilder<PgOptions>;

/// The default schema.
pub const DEFAULT_SCHEMA: &str = "taskstore";
/// The default number of connections a handle holds at most.
pub const DEFAULT_POOL_SIZE: usize = 8;
/// How long a call waits for a free connection by default
/// ([`pool_wait`](StoreBuilder::pool_wait)).
pub const DEFAULT_POOL_WAIT: Duration = Duration::from_secs(30);
/// How long opening a connection may take, its start-up included, unless
/// the connection string says (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Over TCP, unless the connection string says: how long a connection may
/// be idle before the kernel probes its peer (the driver's default is 2 h,
/// past the idle timeout of most load balancers and NATs, which then drop
/// the flow without a word), how often it probes, and how many probes go
/// unanswered before the connection is dead.
const KEEPALIVES_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVES_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVES_RETRIES: u32 = 3;
/// Over TCP, unless the connection string says: how long data sent may go
/// unacknowledged before the connection is dead (else a call to a peer gone
/// silent waits for the kernel's retransmissions, about 15 minutes).
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(60);
/// A `tcp_user_timeout` longer than this, said in a connection string, is
/// warned of: the driver reads it in seconds where libpq reads
/// milliseconds, so a string written for libpq (`tcp_user_timeout=60000`,
/// a minute there) leaves a peer gone silent unnoticed for hours here.
const TCP_USER_TIMEOUT_WARNED: Duration = Duration::from_secs(60 * 60);

/// What the PostgreSQL backend needs to open: where, which schema, how many
/// connections, and where time comes from.
#[derive(Debug)]
pub struct PgOptions {
    conninfo: String,
    schema: String,
    pool_size: usize,
    pool_wait: Duration,
    time: TimeSource,
    clock_refresh: Duration,
    create: bool,
    upgrade: bool,
    change_notices: bool,
}

/// Where a [`PgStore`] takes the time its rules go by (TTLs, leases,
/// `createdAt`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimeSource {
    /// The default: the database server's `clock_timestamp()`, measured at
    /// open and every 30 s
    /// ([`server_clock_refresh`](StoreBuilder::server_clock_refresh)) and
    /// carried on between measurements by the monotonic clock. Every host
    /// then goes by the server's time, within half a round trip plus the
    /// monotonic clock's drift over the period; a step of a host's wall
    /// clock changes nothing.
    #[default]
    Server,
    /// The configured clock as it is. For tests that drive a
    /// [`ManualClock`](crate::ManualClock); hosts must then agree on the
    /// time by themselves.
    Clock,
}

impl StoreBuilder<PgOptions> {
    /// The schema the store's tables live in (default `taskstore`): 1 to 48
    /// bytes of lowercase letters, digits and `_`, not starting with a digit
    /// or `pg_`. Created on first use.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.options.schema = schema.into();
        self
    }

    /// How many connections this handle holds at most (default 8); calls
    /// beyond it wait for one, for [`pool_wait`](Self::pool_wait) at most.
    pub fn pool_size(mut self, pool_size: usize) -> Self {
        self.options.pool_size = pool_size;
        self
    }

    /// How long a call waits for a free connection when all
    /// [`pool_size`](Self::pool_size) are busy (default 30 s; more than
    /// zero): past it the call fails with [`Error::Backend`] naming the
    /// wait, so that a server slowed down (a lock held, a stall) does not
    /// pile up callers for ever.
    pub fn pool_wait(mut self, wait: Duration) -> Self {
        self.options.pool_wait = wait;
        self
    }

    /// Where the rules take the time (default [`TimeSource::Server`]).
    pub fn time_source(mut self, time: TimeSource) -> Self {
        self.options.time = time;
        self
    }

    /// How often, with [`TimeSource::Server`], the server's clock is
    /// measured again (default 30 s; at least 1 ms): by the first
    /// operation past it, before it takes its connection. A shorter period
    /// bounds the monotonic clock's drift from the server's, at one round
    /// trip each time.
    pub fn server_clock_refresh(mut self, every: Duration) -> Self {
        self.options.clock_refresh = every;
        self
    }

    /// Whether [`open`](Self::open) may create the schema when it holds no
    /// store (default `true`). With `false`, a schema without a store (say,
    /// a mistyped name) is an error and nothing is created: what a tool
    /// that inspects stores wants.
    pub fn create_if_missing(mut self, create: bool) -> Self {
        self.options.create = create;
        self
    }

    /// Whether [`open`](Self::open) migrates a schema of an older version
    /// to this version's (default `true`), as
    /// [`FileStoreBuilder::upgrade_format`](crate::FileStoreBuilder::upgrade_format)
    /// moves a file store: the migration rewrites the table, holding its
    /// lock, and builds of the older version refuse the schema after it
    /// (FORMAT.md, "PostgreSQL schema"). With `false`, such a schema is
    /// refused with [`Error::OlderFormat`] and left as it is: for a tool
    /// that must not change a store a service of an older version still
    /// runs on (the command-line tool asks for `--upgrade`).
    pub fn upgrade_format(mut self, on: bool) -> Self {
        self.options.upgrade = on;
        self
    }

    /// Whether this handle's writes notify the schema's channel, and its
    /// [`changes`](crate::TaskStore::changes) follow it (default `true`).
    ///
    /// A notifying transaction holds PostgreSQL's commit-time lock for
    /// `NOTIFY` until its commit is flushed, so the notifying writes of
    /// every host on the cluster commit one at a time. With `false` this
    /// handle's writes notify nothing, and it has no change feed: what
    /// follows changes (the MCP manager's watch) polls instead, one watch
    /// tick behind. Set it alike on every handle of a store: one that does
    /// not notify leaves the others' feeds blind to its writes, which they
    /// then see only when they poll. `benches/pg.rs` measures both
    /// (BENCHMARKS.md, "Change notices").
    pub fn change_notices(mut self, notify: bool) -> Self {
        self.options.change_notices = notify;
        self
    }

    /// Connects, creates or migrates the schema, measures the server's
    /// clock, and opens the store.
    ///
    /// Concurrent opens (on any host) serialize their migrations on an
    /// advisory lock; an open that finds the schema current runs no DDL.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a connection string that does not parse,
    /// a bad schema name, a zero pool size or invalid common settings;
    /// [`Error::UnsupportedFormat`] for a schema written by a newer version;
    /// [`Error::NoStore`] for a schema that holds no store, with
    /// [`create_if_missing(false)`](Self::create_if_missing);
    /// [`Error::OlderFormat`] for a schema of an older version, with
    /// [`upgrade_format(false)`](Self::upgrade_format);
    /// [`Error::Backend`] (backend `"postgres"`) if the server cannot be
    /// reached, refuses, or its database is not UTF-8.
    pub fn open(mut self) -> Result<PgStore> {
        self.check()?;
        let options = &self.options;
        schema::check_name(&options.schema)?;
        if options.clock_refresh < Duration::from_millis(1) {
            return Err(Error::InvalidConfig {
                field: "server_clock_refresh",
                reason: format!("{:?} is under the least, 1 ms", options.clock_refresh),
            });
        }
        if options.pool_size == 0 {
            return Err(Error::InvalidConfig {
                field: "pool_size",
                reason: "must be at least 1".to_owned(),
            });
        }
        if options.pool_wait.is_zero() {
            return Err(Error::InvalidConfig {
                field: "pool_wait",
                reason: "must be longer than zero".to_owned(),
            });
        }
        let mut config: postgres::Config =
            options
                .conninfo
                .parse()
                .map_err(|e: postgres::Error| Error::InvalidConfig {
                    field: "conninfo",
                    // The driver's reason (the option at fault) is its
                    // error's source: its display alone names none.
                    reason: backend::Described(e).to_string(),
                })?;
        with_defaults(&mut config, &options.conninfo);
        let schema = options.schema.clone();
        let op = |what: &str| format!("{what} (opening schema {schema})");
        let pool = Arc::new(Pool::new(config, options.pool_size, options.pool_wait));
        let clock = {
            let mut conn = pool.get().map_err(|e| e.into_error(op("connect")))?;
            pool.check_sessions(&mut conn).map_err(|e| {
                e.into_error(op("check that the server keeps each connection's session"))
            })?;
            check_encoding(&mut conn.client).map_err(|e| match e {
                Encoding::Query(e) => failed(op("read the server encoding"), e),
                Encoding::Not(found) => Error::backend(
                    backend::BACKEND,
                    op("check the server encoding"),
                    format!("the database encoding is {found}; the store needs UTF8"),
                ),
            })?;
            schema::prepare(
                &mut conn.client,
                &schema,
                &pool.server(),
                options.create,
                options.upgrade,
            )?;
            match options.time {
                TimeSource::Server => Some(Arc::new(
                    ServerClock::start(
                        self.settings.clock.clone(),
                        options.clock_refresh,
                        pool.clone(),
                        &mut conn,
                    )
                    .map_err(|e| failed(op("read the server's clock"), e))?,
                )),
                TimeSource::Clock => None,
            }
        };
        if let Some(clock) = &clock {
            self.settings.clock = clock.clone();
        }
        let sql = Sql::new(&schema, options.change_notices);
        let backend = PgBackend::new(pool, Arc::new(sql), clock);
        self.finish(backend)
    }
}

/// The settings a connection string (`conninfo`, parsed into `config`)
/// leaves unset: the connect timeout, TCP keepalives and the TCP user
/// timeout (which a Unix socket ignores), the application name, and for
/// several hosts `target_session_attrs=read-write`.
fn with_defaults(config: &mut postgres::Config, conninfo: &str) {
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    // The driver's own idle is 2 h: unset, or set to what it is by default.
    if config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
        config.keepalives_idle(KEEPALIVES_IDLE);
    }
    if config.get_keepalives_interval().is_none() {
        config.keepalives_interval(KEEPALIVES_INTERVAL);
    }
    if config.get_keepalives_retries().is_none() {
        config.keepalives_retries(KEEPALIVES_RETRIES);
    }
    match config.get_tcp_user_timeout() {
        None => {
            config.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        Some(&said) if said > TCP_USER_TIMEOUT_WARNED => tracing::warn!(
            tcp_user_timeout_s = said.as_secs(),
            "the connection string's tcp_user_timeout is read in seconds here, where libpq \
             reads milliseconds: data a silent peer leaves unacknowledged fails its \
             connection only after that many seconds (for libpq's meaning, give the value \
             divided by 1,000)"
        ),
        Some(_) => {}
    }
    if config.get_application_name().is_none() {
        config.application_name("taskstore");
    }
    // Several hosts (a primary and its standbys): a connection lands on
    // one that takes writes, not on the first that answers, unless the
    // string says which. The driver keeps no trace of a default it was
    // told, so the string is parsed again with `read-write` before
    // anything it says: the driver's own parse (where a key's last value
    // wins) then tells.
    let hosts = config.get_hosts().len().max(config.get_hostaddrs().len());
    if hosts > 1
        && let Ok(defaulted) = read_write_first(conninfo).parse::<postgres::Config>()
    {
        config.target_session_attrs(defaulted.get_target_session_attrs());
    }
}

/// `conninfo` with `target_session_attrs=read-write` before every setting
/// it makes itself, in its own form: first of a key-value string, first of
/// a URL's query (which starts at the first `?` after the credentials, up
/// to the first `@`, as the driver reads them).
fn read_write_first(conninfo: &str) -> String {
    const SETTING: &str = "target_session_attrs=read-write";
    let Some(rest) = ["postgres://", "postgresql://"]
        .iter()
        .find_map(|prefix| conninfo.strip_prefix(prefix))
    else {
        return format!("{SETTING} {conninfo}");
    };
    let after_credentials = rest.find('@').map_or(0, |at| at + 1);
    let start = conninfo.len() - rest.len() + after_credentials;
    match conninfo[start..].find('?') {
        Some(query) => {
            let (head, tail) = conninfo.split_at(start + query + 1);
            format!("{head}{SETTING}&{tail}")
        }
        None => format!("{conninfo}?{SETTING}"),
    }
}

enum Encoding {
    Query(postgres::Error),
    Not(String),
}

fn check_encoding(client: &mut postgres::Client) -> std::result::Result<(), Encoding> {
    let row = client
        .query_one("SELECT current_setting('server_encoding')", &[])
        .map_err(Encoding::Query)?;
    let found: String = row.get(0);
    if found.eq_ignore_ascii_case("UTF8") {
        Ok(())
    } else {
        Err(Encoding::Not(found))
    }
}

impl Store<PgBackend> {
    /// Opens (creating or migrating its schema) the store in the default
    /// schema of the database `conninfo` names, a libpq-style connection
    /// string (`host=/var/run/postgresql user=app dbname=app`) or URL
    /// (`postgresql://app@db/app`), with the defaults.
    ///
    /// # Errors
    ///
    /// As [`StoreBuilder::<PgOptions>::open`](PgStoreBuilder::open).
    pub fn connect(conninfo: impl Into<String>) -> Result<PgStore> {
        PgStore::builder(conninfo).open()
    }

    /// A builder for the store of the database `conninfo` names.
    pub fn builder(conninfo: impl Into<String>) -> PgStoreBuilder {
        StoreBuilder::with_options(PgOptions {
            conninfo: conninfo.into(),
            schema: DEFAULT_SCHEMA.to_owned(),
            pool_size: DEFAULT_POOL_SIZE,
            pool_wait: DEFAULT_POOL_WAIT,
            time: TimeSource::default(),
            clock_refresh: clock::REFRESH,
            create: true,
            upgrade: true,
            change_notices: true,
        })
    }

    /// The schema the store lives in.
    pub fn schema(&self) -> &str {
        self.backend().schema()
    }

    /// The offset to the server's clock as last measured, if this handle
    /// goes by it ([`TimeSource::Server`]).
    pub fn server_time(&self) -> Option<ServerTime> {
        self.backend().server_time()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection string that says nothing of them gets a connect
    /// timeout, TCP keepalives that probe after 30 s idle, and a TCP user
    /// timeout; one that says keeps what it says. (Keepalives probed after
    /// the driver's 2 h: a connection a load balancer dropped without a
    /// word failed the next call, and a call to a peer gone silent waited
    /// for the kernel's retransmissions.) What they do to a dead TCP peer
    /// is the kernel's; this checks that they are set.
    #[test]
    fn a_connection_string_gets_keepalives_and_timeouts_unless_it_says() {
        let mut plain: postgres::Config = "host=db user=app".parse().unwrap();
        with_defaults(&mut plain, "host=db user=app");
        assert!(plain.get_keepalives());
        assert_eq!(plain.get_keepalives_idle(), KEEPALIVES_IDLE);
        assert_eq!(plain.get_keepalives_interval(), Some(KEEPALIVES_INTERVAL));
        assert_eq!(plain.get_keepalives_retries(), Some(KEEPALIVES_RETRIES));
        assert_eq!(plain.get_tcp_user_timeout(), Some(&TCP_USER_TIMEOUT));
        assert_eq!(plain.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        assert_eq!(plain.get_application_name(), Some("taskstore"));
        let said = "host=db user=app keepalives=0 keepalives_idle=600 keepalives_interval=5 \
                    keepalives_retries=9 tcp_user_timeout=7 connect_timeout=3 application_name=svc";
        let mut said_config: postgres::Config = said.parse().unwrap();
        with_defaults(&mut said_config, said);
        let said = said_config;
        assert!(!said.get_keepalives());
        assert_eq!(said.get_keepalives_idle(), Duration::from_secs(600));
        assert_eq!(said.get_keepalives_interval(), Some(Duration::from_secs(5)));
        assert_eq!(said.get_keepalives_retries(), Some(9));
        assert_eq!(said.get_tcp_user_timeout(), Some(&Duration::from_secs(7)));
        assert_eq!(said.get_connect_timeout(), Some(&Duration::from_secs(3)));
        assert_eq!(said.get_application_name(), Some("svc"));
    }

    /// A string of several hosts gets `target_session_attrs=read-write`
    /// (`pg::a_connection_string_of_several_hosts_lands_on_one_that_takes_writes`
    /// runs it), in either form; one host, or a string that says, keeps the
    /// driver's `any`, and the key's name anywhere but as a key says
    /// nothing.
    #[test]
    fn several_hosts_get_read_write_unless_the_string_says() {
        use postgres::config::TargetSessionAttrs::{Any, ReadWrite};
        for (conninfo, want) in [
            ("host=a,b user=app", ReadWrite),
            ("hostaddr=10.0.0.1,10.0.0.2 user=app", ReadWrite),
            ("postgresql://app@a:5432,b:5432/app", ReadWrite),
            ("host=a user=app", Any),
            ("host=a,b user=app target_session_attrs=any", Any),
            ("host=a,b user=app target_session_attrs = 'any'", Any),
            ("postgresql://app@a,b/app?target_session_attrs=any", Any),
            (
                "postgresql://app@a,b/app?sslmode=disable&target_session_attrs=any",
                Any,
            ),
            ("postgresql://a,b", ReadWrite),
            ("postgresql://a,b/app", ReadWrite),
            ("postgresql://a,b?sslmode=disable", ReadWrite),
            // The key's name elsewhere (a password, an application name)
            // is not the key.
            ("host=a,b password=target_session_attrs user=app", ReadWrite),
            (
                "host=a,b application_name='target_session_attrs=any'",
                ReadWrite,
            ),
            ("postgresql://app:target_session_attrs@a,b/app", ReadWrite),
            (
                "postgresql://app:x?target_session_attrs=any@a,b/app",
                ReadWrite,
            ),
            (
                "postgresql://app@a,b/app?application_name=target_session_attrs",
                ReadWrite,
            ),
        ] {
            let mut config: postgres::Config = conninfo.parse().unwrap();
            with_defaults(&mut config, conninfo);
            assert_eq!(config.get_target_session_attrs(), want, "{conninfo}");
        }
    }
}
