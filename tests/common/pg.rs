//! A throwaway PostgreSQL cluster for the tests and the benchmarks, started
//! from the system's binaries (`initdb`, `pg_ctl`) in a temp dir, reached
//! over a Unix socket in that dir only.
//!
//! As root (initdb refuses root) the cluster runs as `nobody`. A guard
//! process holds the read end of a pipe whose write end only this process
//! holds: when this process exits, however it exits (a panic, `SIGKILL`),
//! the pipe closes and the guard stops the cluster (`pg_ctl stop -m
//! immediate`) and removes its dir. A private cluster is also stopped when
//! dropped.
//!
//! Without PostgreSQL the tests print one line saying they were skipped;
//! `TASKSTORE_REQUIRE_PG=1` makes that an error (CI sets it): the rule of
//! `skip.rs`, which the root-only tests follow too.

#![allow(dead_code)] // the tests and the benchmarks use different parts

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

// A test crate that has `tests/common` too loads this file twice; the
// benchmarks include this file alone, without `tests/common`.
#[allow(clippy::duplicate_mod)]
#[path = "skip.rs"]
mod skip;

#[path = "pgbouncer.rs"]
pub mod pgbouncer;

/// Set to `1` to fail, not skip, when PostgreSQL is missing.
pub const REQUIRE_VAR: &str = "TASKSTORE_REQUIRE_PG";

/// A running cluster.
pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    /// `runuser -u nobody --` when running as root.
    as_user: Option<String>,
    guard: Mutex<Option<(Child, ChildStdin)>>,
    /// The file libfaketime reads the server's clock offset from, if the
    /// server runs under it ([`private_faked`]).
    faketime: Option<PathBuf>,
}

/// libfaketime, which moves a process's wall clock by what a file says.
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// Set to `1` to fail, not skip, when libfaketime is missing.
pub const REQUIRE_FAKETIME_VAR: &str = "TASKSTORE_REQUIRE_FAKETIME";

/// The cluster every test of this binary shares (started on first use), or
/// `None` if PostgreSQL is not installed (then one line says so).
pub fn shared() -> Option<&'static Cluster> {
    static SHARED: OnceLock<Option<Cluster>> = OnceLock::new();
    SHARED
        .get_or_init(|| match binaries() {
            Some(bin) => Some(Cluster::start_in(bin).unwrap_or_else(|e| panic!("{e}"))),
            None => {
                skipped();
                None
            }
        })
        .as_ref()
}

/// A cluster of its own (for a test that restarts it), or `None` if
/// PostgreSQL is not installed.
pub fn private() -> Option<Cluster> {
    let Some(bin) = binaries() else {
        skipped();
        return None;
    };
    Some(Cluster::start_in(bin).unwrap_or_else(|e| panic!("{e}")))
}

/// A cluster of its own whose server runs under libfaketime (its wall
/// clock moved by [`Cluster::move_clock`], its monotonic clock left
/// alone), or `None` if PostgreSQL or libfaketime is missing (said once,
/// or a failure under its variable).
pub fn private_faked() -> Option<Cluster> {
    if !Path::new(LIBFAKETIME).exists() {
        if skip::is_failure(REQUIRE_FAKETIME_VAR) {
            panic!("{REQUIRE_FAKETIME_VAR}=1 but no {LIBFAKETIME}");
        }
        skip::say(
            &format!("skipped: no {LIBFAKETIME} (apt-get install libfaketime)"),
            REQUIRE_FAKETIME_VAR,
        );
        return None;
    }
    let Some(bin) = binaries() else {
        skipped();
        return None;
    };
    Some(Cluster::start_faked(bin).unwrap_or_else(|e| panic!("{e}")))
}

/// `SELECT active FROM counters` and the number of active rows, behind the
/// store's back.
pub fn counter_and_active(client: &mut postgres::Client, schema: &str) -> (i64, i64) {
    let counter: i64 = client
        .query_one(&format!("SELECT active FROM {schema}.counters"), &[])
        .unwrap()
        .get(0);
    let active: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM {schema}.tasks WHERE active"),
            &[],
        )
        .unwrap()
        .get(0);
    (counter, active)
}

/// Makes `schema` as a build of schema version 1 made it: the first
/// migration of `src/pg/schema.rs`, then its version, holding no task.
pub fn version_1_schema(client: &mut postgres::Client, schema: &str) {
    client
        .batch_execute(&format!(
            r#"CREATE SCHEMA {schema};
CREATE TABLE {schema}.schema_version (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version   integer NOT NULL
);
CREATE TABLE {schema}.tasks (
    id            text COLLATE "C" PRIMARY KEY,
    created_at_ns bigint  NOT NULL,
    revision      bigint  NOT NULL,
    status        text    NOT NULL,
    active        boolean NOT NULL,
    expires_at_ns bigint,
    task          text    NOT NULL,
    CHECK (active = (status IN ('working', 'input_required')))
);
CREATE INDEX tasks_active_order ON {schema}.tasks (created_at_ns, id) WHERE active;
CREATE INDEX tasks_order ON {schema}.tasks (created_at_ns, id);
CREATE INDEX tasks_expiry ON {schema}.tasks (expires_at_ns) WHERE expires_at_ns IS NOT NULL;
CREATE TABLE {schema}.counters (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    active    bigint  NOT NULL CHECK (active >= 0)
);
INSERT INTO {schema}.counters (active) SELECT count(*) FROM {schema}.tasks WHERE active;
INSERT INTO {schema}.schema_version (version) VALUES (1);"#
        ))
        .unwrap();
}

/// The columns a build of schema version 1 writes, in its statements' order.
pub const VERSION_1_COLUMNS: &str =
    "id, created_at_ns, revision, status, active, expires_at_ns, task";

/// `schema`'s version, as recorded.
pub fn version_of(client: &mut postgres::Client, schema: &str) -> i32 {
    client
        .query_one(&format!("SELECT version FROM {schema}.schema_version"), &[])
        .unwrap()
        .get(0)
}

/// A fresh, unique schema name starting with `prefix`.
pub fn fresh_schema(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}_{}_{n}", std::process::id())
}

fn skipped() {
    const WHAT: &str =
        "no PostgreSQL binaries (initdb, pg_ctl) in PATH or /usr/lib/postgresql/*/bin";
    if skip::is_failure(REQUIRE_VAR) {
        panic!("{REQUIRE_VAR}=1 but {WHAT}");
    }
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        skip::say(
            &format!("PostgreSQL tests SKIPPED: {WHAT}; install PostgreSQL (apt-get install postgresql) to run them"),
            REQUIRE_VAR,
        );
    });
}

/// The directory of `initdb` and `pg_ctl`: from PATH, else the newest
/// `/usr/lib/postgresql/<version>/bin`. A PATH entry holding links to them
/// (`/usr/local/bin`) gives the directory they link to, where the other
/// tools of the same installation are (`pg_basebackup`).
fn binaries() -> Option<PathBuf> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if has_both(&dir) {
                let linked = std::fs::canonicalize(dir.join("initdb"))
                    .ok()
                    .and_then(|initdb| initdb.parent().map(Path::to_path_buf))
                    .filter(|linked| has_both(linked));
                return Some(linked.unwrap_or(dir));
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| has_both(bin))
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// Whether this process runs as root: a file it creates is owned by uid 0.
fn is_root(dir: &Path) -> bool {
    let probe = dir.join(".owner-probe");
    std::fs::write(&probe, b"").expect("write a probe file");
    let uid = std::fs::metadata(&probe).expect("stat a probe file").uid();
    let _ = std::fs::remove_file(&probe);
    uid == 0
}

impl Cluster {
    fn start_in(bin: PathBuf) -> Result<Cluster, String> {
        Cluster::start(bin, false)
    }

    fn start_faked(bin: PathBuf) -> Result<Cluster, String> {
        Cluster::start(bin, true)
    }

    fn start(bin: PathBuf, faked: bool) -> Result<Cluster, String> {
        let mut cluster = Cluster::unstarted(bin, faked)?;
        if cluster.faketime.is_some() {
            cluster.move_clock("+0");
        }
        cluster.init()?;
        cluster.arm_guard()?;
        cluster.pg_ctl(&["start", "-w", "-t", "60"])?;
        Ok(cluster)
    }

    /// A cluster's directory, made and owned by the cluster's user, with no
    /// data directory yet and no server.
    fn unstarted(bin: PathBuf, faked: bool) -> Result<Cluster, String> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "taskstore-pg-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let as_user = if is_root(&dir) {
            let status = Command::new("chown")
                .args(["nobody:", dir.to_str().expect("a UTF-8 temp dir")])
                .status()
                .map_err(|e| format!("run chown: {e}"))?;
            if !status.success() {
                return Err(format!("chown nobody {} failed", dir.display()));
            }
            Some("nobody".to_owned())
        } else {
            None
        };
        // In the cluster's directory, which its user may read.
        let faketime = faked.then(|| dir.join("faketime"));
        Ok(Cluster {
            dir,
            bin,
            as_user,
            guard: Mutex::new(None),
            faketime,
        })
    }

    /// A streaming standby of this cluster (a base backup of its data
    /// directory, `pg_basebackup -R`), started, with its own socket
    /// directory, and made this cluster's synchronous standby: from its
    /// return on, every commit this cluster acknowledges is flushed on the
    /// standby too (`synchronous_standby_names = '*'`, `synchronous_commit`
    /// at its default, `on`). [`Cluster::host`] of the two, in one
    /// connection string, is a primary and its failover.
    pub fn synchronous_standby(&self) -> Result<Cluster, String> {
        let mut standby = Cluster::unstarted(self.bin.clone(), false)?;
        let output = standby
            .command(&self.bin.join("pg_basebackup"))
            .arg("-D")
            .arg(standby.data())
            .arg("-h")
            .arg(&self.dir)
            .args(["-p", "5432", "-U", "postgres", "-R", "-X", "stream", "-N"])
            .output()
            .map_err(|e| format!("run pg_basebackup: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "pg_basebackup failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        standby.arm_guard()?;
        standby.pg_ctl(&["start", "-w", "-t", "60"])?;
        let mut client = self.client();
        // Two statements: `ALTER SYSTEM` runs outside a transaction alone.
        for sql in [
            "ALTER SYSTEM SET synchronous_standby_names = '*'",
            "SELECT pg_reload_conf()",
        ] {
            client
                .batch_execute(sql)
                .map_err(|e| format!("make the standby synchronous ({sql}): {e:?}"))?;
        }
        let since = std::time::Instant::now();
        loop {
            let sync: i64 = client
                .query_one(
                    "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'",
                    &[],
                )
                .map_err(|e| format!("look at the replication: {e}"))?
                .get(0);
            if sync == 1 {
                return Ok(standby);
            }
            if since.elapsed() > std::time::Duration::from_secs(60) {
                return Err("the standby never became synchronous within 60 s".to_owned());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// The directory of this cluster's socket: its `host` in a connection
    /// string.
    pub fn host(&self) -> String {
        self.dir.display().to_string()
    }

    /// A command run as the cluster's user.
    fn command(&self, program: &Path) -> Command {
        match &self.as_user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn init(&mut self) -> Result<(), String> {
        let output = self
            .command(&self.bin.join("initdb"))
            .arg("-D")
            .arg(self.data())
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .output()
            .map_err(|e| format!("run initdb: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(())
    }

    /// The guard that stops the cluster and removes its dir once this
    /// process is gone (or the cluster dropped).
    fn arm_guard(&mut self) -> Result<(), String> {
        let script = format!(
            "read _ignored; '{pg_ctl}' -D '{data}' stop -m immediate >/dev/null 2>&1; rm -rf '{dir}'",
            pg_ctl = self.bin.join("pg_ctl").display(),
            data = self.data().display(),
            dir = self.dir.display(),
        );
        let guard = self
            .shell_on_a_pipe(&script)
            .map_err(|e| format!("start the cluster guard: {e}"))?;
        *self.guard.lock().unwrap() = Some(guard);
        Ok(())
    }

    /// `script` run by `sh` as the cluster's user, its stdin a pipe this
    /// process holds (its `read` returns once this process is gone, or the
    /// pipe is dropped), its output dropped.
    pub fn shell_on_a_pipe(
        &self,
        script: &str,
    ) -> std::io::Result<(std::process::Child, std::process::ChildStdin)> {
        let mut child = self
            .command(Path::new("/bin/sh"))
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let stdin = child.stdin.take().expect("a piped stdin");
        Ok((child, stdin))
    }

    /// Sets the server's wall clock `offset` from the real one, in
    /// libfaketime's words (`+0`, `+1h`, `-30s`): read by every later
    /// reading of the server's clock. Only for a [`private_faked`] cluster.
    pub fn move_clock(&self, offset: &str) {
        let file = self.faketime.as_ref().expect("a cluster under libfaketime");
        let tmp = file.with_extension("tmp");
        std::fs::write(&tmp, format!("{offset}\n")).expect("write the clock offset");
        std::fs::rename(&tmp, file).expect("put the clock offset in place");
    }

    /// Stops the server's wall clock at `at` (to the second, truncated):
    /// every later reading of it reads that time until the next
    /// [`move_clock`](Cluster::move_clock) or stop. A time that no stall of
    /// the test process moves on. Only for a [`private_faked`] cluster.
    pub fn stop_clock_at(&self, at: time::OffsetDateTime) {
        let at = at.to_offset(time::UtcOffset::UTC);
        // libfaketime's absolute time, read in the server's time zone (UTC,
        // see `pg_ctl`): a stopped clock.
        let stopped = format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second()
        );
        self.move_clock(&stopped);
    }

    /// Runs `pg_ctl <args>` on this cluster.
    pub fn pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        let options = format!(
            "-k {} -c listen_addresses= -c max_connections=300",
            self.dir.display()
        );
        let mut command = self.command(&self.bin.join("pg_ctl"));
        if let Some(file) = &self.faketime {
            command
                .env("LD_PRELOAD", LIBFAKETIME)
                .env("FAKETIME_TIMESTAMP_FILE", file)
                .env("FAKETIME_NO_CACHE", "1")
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
                // The zone `stop_clock_at`'s absolute times are read in.
                .env("TZ", "UTC");
        }
        let output = command
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.join("log"))
            .args(["-o", &options])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run pg_ctl: {e}"))?;
        if !output.status.success() {
            let log = self.log();
            return Err(format!(
                "pg_ctl {args:?} failed: {}{}\nserver log:\n{log}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(())
    }

    /// The server's log so far (empty if it cannot be read).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// The lines of the server's log that the backend `pid` wrote (each
    /// line starts with the time and `[pid]`), continuation lines with them.
    #[allow(dead_code)] // Not every test binary that has `common` asks.
    pub fn log_of(&self, pid: i32) -> String {
        let mark = format!("[{pid}]");
        let mut theirs = false;
        let mut kept = String::new();
        for line in self.log().lines() {
            if !line.starts_with(char::is_whitespace) {
                theirs = line.contains(&mark);
            }
            if theirs {
                kept.push_str(line);
                kept.push('\n');
            }
        }
        kept
    }

    /// The connection string of database `postgres`.
    pub fn conninfo(&self) -> String {
        format!(
            "host={} port=5432 user=postgres dbname=postgres",
            self.host()
        )
    }

    /// A plain client, for what the tests check behind the store's back.
    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.conninfo(), postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect to the test cluster: {e}"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some((mut guard, stdin)) = self.guard.lock().unwrap().take() {
            drop(stdin);
            let _ = guard.wait();
        }
    }
}

/// A proxy on a Unix socket of its own in front of a cluster, that loses one
/// reply after the server committed: once [armed](LosesAReply::arm), the
/// first statement whose bytes name every marker goes through to the server,
/// the server's whole answer to it (up to its `ReadyForQuery`, sent after
/// the commit) is swallowed, and that connection is cut. Every other byte
/// goes through as it came. It can also [refuse](LosesAReply::refuse) new
/// connections for a while, from the cut on: the server is then out of
/// reach just after it committed; and [hold](LosesAReply::hold) a
/// statement on its way to the server, as a slow link would.
pub struct LosesAReply {
    dir: tempfile::TempDir,
    /// The markers a statement must name to be the one, and which arming
    /// this is (a connection matches bytes sent since the latest only).
    armed: std::sync::Arc<Mutex<Armed>>,
    cuts: std::sync::Arc<AtomicUsize>,
    /// The connections it accepted, those it refused or held included.
    accepted: std::sync::Arc<AtomicUsize>,
    /// The bytes the server sent through it to its clients.
    answered: std::sync::Arc<AtomicUsize>,
    /// Whether new connections are refused (closed at once).
    refusing: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Whether the next cut starts refusing new connections.
    refuse_from_cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Whether the next new connection is refused (closed at once).
    refuse_once: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Whether a cut answers with a `FATAL` reply before it closes.
    fatal: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Whether new connections are held, accepted and never answered, as
    /// a stopped server's are (until [`hang(false)`](LosesAReply::hang)).
    hanging: std::sync::Arc<std::sync::atomic::AtomicBool>,
    held: std::sync::Arc<Mutex<Vec<std::os::unix::net::UnixStream>>>,
    /// The statement to hold on its way to the server.
    holding: std::sync::Arc<Holding>,
    upstream: PathBuf,
}

/// A statement held on its way to the server.
#[derive(Default)]
struct Holding {
    state: Mutex<Hold>,
    changed: std::sync::Condvar,
}

#[derive(Default)]
struct Hold {
    /// Which call of [`hold`](LosesAReply::hold) this is.
    call: u64,
    /// The markers the statement must name (none once met).
    markers: Option<Vec<Vec<u8>>>,
    /// Whether its bytes are held now.
    held: bool,
}

/// Which arming this is, and the markers the statement must name (none
/// once it was met).
type Armed = (u64, Option<Vec<Vec<u8>>>);

impl LosesAReply {
    /// Listens in a fresh directory, passing connections on to `cluster`.
    pub fn start(cluster: &Cluster) -> LosesAReply {
        use std::os::unix::net::UnixListener;
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(dir.path().join(".s.PGSQL.5432")).unwrap();
        let upstream = cluster.dir.join(".s.PGSQL.5432");
        let proxy = LosesAReply {
            dir,
            armed: Default::default(),
            cuts: Default::default(),
            accepted: Default::default(),
            answered: Default::default(),
            refusing: Default::default(),
            refuse_from_cut: Default::default(),
            refuse_once: Default::default(),
            fatal: Default::default(),
            hanging: Default::default(),
            held: Default::default(),
            holding: Default::default(),
            upstream: upstream.clone(),
        };
        let (hanging, held, holding) = (
            proxy.hanging.clone(),
            proxy.held.clone(),
            proxy.holding.clone(),
        );
        let (armed, cuts) = (proxy.armed.clone(), proxy.cuts.clone());
        let (refusing, from_cut) = (proxy.refusing.clone(), proxy.refuse_from_cut.clone());
        let refuse_once = proxy.refuse_once.clone();
        let fatal = proxy.fatal.clone();
        let (accepted, answered) = (proxy.accepted.clone(), proxy.answered.clone());
        std::thread::spawn(move || {
            // Ends with the test process.
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                accepted.fetch_add(1, Ordering::SeqCst);
                if refusing.load(Ordering::SeqCst) || refuse_once.swap(false, Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                {
                    let mut held = held.lock().unwrap();
                    if hanging.load(Ordering::SeqCst) {
                        held.push(client);
                        continue;
                    }
                }
                let Ok(server) = std::os::unix::net::UnixStream::connect(&upstream) else {
                    continue;
                };
                let cut = Cut {
                    count: cuts.clone(),
                    refusing: refusing.clone(),
                    from_cut: from_cut.clone(),
                    fatal: fatal.clone(),
                    answered: answered.clone(),
                };
                relay(client, server, armed.clone(), holding.clone(), cut);
            }
        });
        proxy
    }

    /// From the next cut on, refuses new connections until
    /// [`refuse(false)`](LosesAReply::refuse).
    pub fn refuse_from_the_cut(&self) {
        self.refuse_from_cut.store(true, Ordering::SeqCst);
    }

    /// Refuses new connections (closes them at once), or lets them through
    /// again.
    pub fn refuse(&self, refusing: bool) {
        self.refusing.store(refusing, Ordering::SeqCst);
        if !refusing {
            self.refuse_from_cut.store(false, Ordering::SeqCst);
        }
    }

    /// Makes every later cut answer the statement with a `FATAL` reply
    /// (`57P01`, as a backend an administrator ended says) in place of the
    /// server's answer, before it closes the connection: a session ended
    /// after its commit.
    pub fn fatal_on_cut(&self) {
        self.fatal.store(true, Ordering::SeqCst);
    }

    /// Refuses the next new connection (closes it at once).
    pub fn refuse_next(&self) {
        self.refuse_once.store(true, Ordering::SeqCst);
    }

    /// Holds new connections, accepted and never answered (a stopped
    /// server's), or, with `false`, passes them on again, those held first.
    pub fn hang(&self, hanging: bool) {
        let held = {
            let mut held = self.held.lock().unwrap();
            self.hanging.store(hanging, Ordering::SeqCst);
            std::mem::take(&mut *held)
        };
        for client in held {
            let server = std::os::unix::net::UnixStream::connect(&self.upstream).unwrap();
            let cut = Cut {
                count: self.cuts.clone(),
                refusing: self.refusing.clone(),
                from_cut: self.refuse_from_cut.clone(),
                fatal: self.fatal.clone(),
                answered: self.answered.clone(),
            };
            relay(
                client,
                server,
                self.armed.clone(),
                self.holding.clone(),
                cut,
            );
        }
    }

    /// How many connections it accepted so far (each connect through it,
    /// refused, held or passed on).
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// How many bytes the server sent through it so far.
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }

    /// A connection string through the proxy.
    pub fn conninfo(&self) -> String {
        format!(
            "host={} port=5432 user=postgres dbname=postgres",
            self.dir.path().display()
        )
    }

    /// Loses the reply to the next statement that names every one of
    /// `markers` (on any connection).
    pub fn arm(&self, markers: &[&str]) {
        let mut armed = self.armed.lock().unwrap();
        armed.0 += 1;
        armed.1 = Some(markers.iter().map(|m| m.as_bytes().to_vec()).collect());
    }

    /// How many replies it lost.
    pub fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }

    /// Holds the next statement that names every one of `markers` (on any
    /// connection) on its way to the server, the bytes that name them and
    /// every byte after them on that connection, until
    /// [`release`](LosesAReply::release): a slow link.
    pub fn hold(&self, markers: &[&str]) {
        let mut state = self.holding.state.lock().unwrap();
        state.call += 1;
        state.markers = Some(markers.iter().map(|m| m.as_bytes().to_vec()).collect());
    }

    /// Waits until the statement [`hold`](LosesAReply::hold) named is held.
    pub fn wait_until_held(&self) {
        let state = self.holding.state.lock().unwrap();
        let (_state, timeout) = self
            .holding
            .changed
            .wait_timeout_while(state, std::time::Duration::from_secs(60), |s| !s.held)
            .unwrap();
        assert!(!timeout.timed_out(), "no statement named the markers");
    }

    /// Lets the held statement go on to the server.
    pub fn release(&self) {
        self.holding.state.lock().unwrap().held = false;
        self.holding.changed.notify_all();
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// What a cut counts, whether it starts refusing connections, and whether
/// it answers with a `FATAL` reply.
struct Cut {
    count: std::sync::Arc<AtomicUsize>,
    refusing: std::sync::Arc<std::sync::atomic::AtomicBool>,
    from_cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    fatal: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The bytes the server sent through (`LosesAReply::answered`).
    answered: std::sync::Arc<AtomicUsize>,
}

/// An `ErrorResponse` of severity `FATAL`, code `57P01`.
fn fatal_reply() -> Vec<u8> {
    let mut fields = Vec::new();
    for (kind, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', "57P01"),
        (b'M', "terminating connection due to administrator command"),
    ] {
        fields.push(kind);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut message = vec![b'E'];
    message.extend_from_slice(&(u32::try_from(fields.len() + 4).unwrap()).to_be_bytes());
    message.extend_from_slice(&fields);
    message
}

/// Relays one connection both ways on two threads.
fn relay(
    mut client: std::os::unix::net::UnixStream,
    mut server: std::os::unix::net::UnixStream,
    armed: std::sync::Arc<Mutex<Armed>>,
    holding: std::sync::Arc<Holding>,
    cut: Cut,
) {
    use std::io::{Read, Write};
    use std::net::Shutdown;
    use std::sync::atomic::AtomicBool;
    let doomed = std::sync::Arc::new(AtomicBool::new(false));
    let (mut to_server, mut from_client) =
        (server.try_clone().unwrap(), client.try_clone().unwrap());
    let doomed_up = doomed.clone();
    std::thread::spawn(move || {
        // The bytes this connection sent since the arming it last saw, and
        // since the hold it last saw.
        let (mut seen, mut window) = (0, Vec::new());
        let (mut seen_hold, mut hold_window) = (0, Vec::new());
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = match from_client.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = to_server.shutdown(Shutdown::Write);
                    return;
                }
                Ok(n) => n,
            };
            {
                let mut armed = armed.lock().unwrap();
                if armed.0 != seen {
                    (seen, window) = (armed.0, Vec::new());
                }
                if let Some(markers) = &armed.1 {
                    window.extend_from_slice(&buf[..n]);
                    if markers.iter().all(|m| contains(&window, m)) {
                        armed.1 = None;
                        doomed_up.store(true, Ordering::SeqCst);
                    }
                }
            }
            {
                let mut state = holding.state.lock().unwrap();
                if state.call != seen_hold {
                    (seen_hold, hold_window) = (state.call, Vec::new());
                }
                if let Some(markers) = &state.markers {
                    hold_window.extend_from_slice(&buf[..n]);
                    if markers.iter().all(|m| contains(&hold_window, m)) {
                        state.markers = None;
                        state.held = true;
                        holding.changed.notify_all();
                        while state.held {
                            state = holding.changed.wait(state).unwrap();
                        }
                    }
                }
            }
            if to_server.write_all(&buf[..n]).is_err() {
                return;
            }
        }
    });
    std::thread::spawn(move || {
        let mut swallowed = Vec::new();
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = match server.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = client.shutdown(Shutdown::Both);
                    return;
                }
                Ok(n) => n,
            };
            if doomed.load(Ordering::SeqCst) {
                // ReadyForQuery: type 'Z', length 5. The statement is
                // committed by now; its answer never reaches the client.
                swallowed.extend_from_slice(&buf[..n]);
                if contains(&swallowed, b"Z\0\0\0\x05") {
                    // Counted (and refusing) before the client can see the
                    // cut: a caller that returns on it reads the count.
                    if cut.from_cut.load(Ordering::SeqCst) {
                        cut.refusing.store(true, Ordering::SeqCst);
                    }
                    cut.count.fetch_add(1, Ordering::SeqCst);
                    if cut.fatal.load(Ordering::SeqCst) {
                        let _ = client.write_all(&fatal_reply());
                        // A moment before the close: the driver that reads
                        // the reply and the close together reports the
                        // connection closed, not the reply.
                        std::thread::sleep(std::time::Duration::from_millis(50));
                    }
                    let _ = client.shutdown(Shutdown::Both);
                    let _ = server.shutdown(Shutdown::Both);
                    return;
                }
                continue;
            }
            cut.answered.fetch_add(n, Ordering::SeqCst);
            if client.write_all(&buf[..n]).is_err() {
                let _ = server.shutdown(Shutdown::Both);
                return;
            }
        }
    });
}
