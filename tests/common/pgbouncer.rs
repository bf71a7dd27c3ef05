//! A real PgBouncer in front of a test cluster ([`Cluster`]): its own ini
//! and directory, a free TCP port on 127.0.0.1 (another, if something
//! took the one it picked before PgBouncer bound it), trust authentication (as
//! the cluster's own), and the pool mode the test chooses.
//!
//! It runs as the cluster's user (PgBouncer refuses to run as root) under a
//! guard shell that holds the read end of a pipe whose write end only this
//! process holds: when this process exits, however it exits, the pipe
//! closes and the guard stops PgBouncer; dropping the [`PgBouncer`] does
//! the same and waits for it.
//!
//! Without `pgbouncer` the tests that need it print one line saying they
//! were skipped; `TASKSTORE_REQUIRE_PG=1` makes that an error (CI installs
//! it beside PostgreSQL and sets that variable).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin};

use super::{Cluster, REQUIRE_VAR, skip};

/// Where Debian's package puts it.
const BINARY: &str = "/usr/sbin/pgbouncer";

/// PgBouncer's `pool_mode`: how long a client connection keeps one server
/// connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolMode {
    /// For the client connection's life.
    Session,
    /// For one transaction.
    Transaction,
    /// For one statement (a transaction of several is refused).
    Statement,
}

impl PoolMode {
    fn ini(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
            PoolMode::Statement => "statement",
        }
    }
}

/// How many ports [`PgBouncer::start_on`] tries.
pub const ATTEMPTS: usize = 10;

/// A port no listener holds now: the kernel's choice for one, closed again.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Whether PgBouncer listens on the port it was given, or its log saying
/// another socket holds it.
enum Listening {
    Yes(PgBouncer),
    Taken(String),
}

/// A running PgBouncer.
pub struct PgBouncer {
    dir: tempfile::TempDir,
    port: u16,
    guard: Option<(Child, ChildStdin)>,
}

impl PgBouncer {
    /// PgBouncer in `mode` in front of `cluster`, with at most
    /// `server_connections` server connections per database and user
    /// (`default_pool_size`), accepting connections; or `None` if it is not
    /// installed (said once, or a failure under `TASKSTORE_REQUIRE_PG=1`).
    pub fn start(
        cluster: &Cluster,
        mode: PoolMode,
        server_connections: usize,
    ) -> Option<PgBouncer> {
        PgBouncer::start_with(cluster, mode, server_connections, "")
    }

    /// [`start`](PgBouncer::start), with `settings` (lines of the ini's
    /// `[pgbouncer]` section) after its own.
    pub fn start_with(
        cluster: &Cluster,
        mode: PoolMode,
        server_connections: usize,
        settings: &str,
    ) -> Option<PgBouncer> {
        PgBouncer::start_on(cluster, mode, server_connections, settings, free_port)
    }

    /// [`start_with`](PgBouncer::start_with), on the ports `pick` names,
    /// one an attempt. A port is free when it is picked (the kernel's
    /// choice for a listener, closed again) but not held until PgBouncer
    /// binds it: another socket may take it in between. PgBouncer then
    /// logs that it cannot listen there and exits, and the next attempt
    /// tries the next port (at most [`ATTEMPTS`]). Its clients connect
    /// only once its own log says it listens on the port, never to
    /// whatever else holds it.
    pub fn start_on(
        cluster: &Cluster,
        mode: PoolMode,
        server_connections: usize,
        settings: &str,
        mut pick: impl FnMut() -> u16,
    ) -> Option<PgBouncer> {
        if !Path::new(BINARY).exists() {
            let what = format!("no {BINARY} (apt-get install pgbouncer)");
            if skip::is_failure(REQUIRE_VAR) {
                panic!("{REQUIRE_VAR}=1 but {what}");
            }
            skip::say(&format!("PgBouncer tests SKIPPED: {what}"), REQUIRE_VAR);
            return None;
        }
        let mut taken = Vec::new();
        for _ in 0..ATTEMPTS {
            let port = pick();
            match PgBouncer::spawn(cluster, mode, server_connections, settings, port) {
                Listening::Yes(bouncer) => {
                    bouncer.wait_for_clients();
                    return Some(bouncer);
                }
                Listening::Taken(log) => taken.push((port, log)),
            }
        }
        panic!("PgBouncer could not listen on any port it tried: {taken:?}")
    }

    /// PgBouncer started on `port`, once its log says whether it listens
    /// there.
    fn spawn(
        cluster: &Cluster,
        mode: PoolMode,
        server_connections: usize,
        settings: &str,
        port: u16,
    ) -> Listening {
        let dir = tempfile::tempdir().expect("a temp dir for PgBouncer");
        let ini = dir.path().join("pgbouncer.ini");
        let users = dir.path().join("userlist.txt");
        std::fs::write(&users, "\"postgres\" \"\"\n").expect("write the user list");
        std::fs::write(
            &ini,
            format!(
                "[databases]\n\
                 * = host={host} port=5432\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = trust\n\
                 auth_file = {users}\n\
                 admin_users = postgres\n\
                 pool_mode = {mode}\n\
                 default_pool_size = {server_connections}\n\
                 max_client_conn = 100\n\
                 logfile = {log}\n\
                 {settings}\n",
                host = cluster.host(),
                users = users.display(),
                mode = mode.ini(),
                log = dir.path().join("log").display(),
            ),
        )
        .expect("write the ini");
        if let Some(user) = &cluster.as_user {
            let status = std::process::Command::new("chown")
                .args(["-R", &format!("{user}:")])
                .arg(dir.path())
                .status()
                .expect("run chown");
            assert!(status.success(), "chown {user} {}", dir.path().display());
        }
        let script = format!(
            "'{BINARY}' '{ini}' & pid=$!; read _ignored; kill $pid; wait $pid",
            ini = ini.display()
        );
        let guard = cluster.shell_on_a_pipe(&script).expect("start PgBouncer");
        let bouncer = PgBouncer {
            dir,
            port,
            guard: Some(guard),
        };
        // PgBouncer 1.18's words, logged at its start.
        let listening = format!("listening on 127.0.0.1:{port}");
        let refused = format!("cannot listen on 127.0.0.1:{port}");
        let started = std::time::Instant::now();
        loop {
            let log = bouncer.log();
            if log.contains(&listening) {
                return Listening::Yes(bouncer);
            }
            if log.contains(&refused) {
                // Dropped: the guard stops it, if it has not exited.
                return Listening::Taken(log);
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(60),
                "PgBouncer never said whether it listens on port {port}; its log:\n{log}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Waits until PgBouncer, listening on its port, accepts a client.
    fn wait_for_clients(&self) {
        let started = std::time::Instant::now();
        while postgres::Client::connect(&self.conninfo(), postgres::NoTls).is_err() {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(60),
                "PgBouncer never answered on port {}; its log:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// The connection string of database `postgres` through PgBouncer.
    pub fn conninfo(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    /// Runs PgBouncer in `mode` from now on: its ini rewritten, then
    /// `RELOAD` on its admin console (database `pgbouncer`, user
    /// `postgres`). A client already holding a server connection keeps it
    /// until that connection is next released, as the new mode says.
    pub fn reload_in(&self, mode: PoolMode) {
        let ini = self.dir.path().join("pgbouncer.ini");
        let old = std::fs::read_to_string(&ini).expect("read the ini");
        let new: Vec<String> = old
            .lines()
            .map(|line| {
                if line.starts_with("pool_mode = ") {
                    format!("pool_mode = {}", mode.ini())
                } else {
                    line.to_owned()
                }
            })
            .collect();
        // Written in place: the file keeps its owner, PgBouncer's user.
        std::fs::write(&ini, new.join("\n") + "\n").expect("write the ini");
        let mut admin = postgres::Client::connect(
            &format!(
                "host=127.0.0.1 port={} user=postgres dbname=pgbouncer",
                self.port
            ),
            postgres::NoTls,
        )
        .unwrap_or_else(|e| panic!("connect to PgBouncer's admin console: {e}"));
        admin
            .simple_query("RELOAD")
            .unwrap_or_else(|e| panic!("RELOAD PgBouncer: {e}; its log:\n{}", self.log()));
        let mut shown = admin.simple_query("SHOW CONFIG").expect("SHOW CONFIG");
        let now = shown.drain(..).find_map(|message| match message {
            postgres::SimpleQueryMessage::Row(row) if row.get(0) == Some("pool_mode") => {
                row.get(1).map(str::to_owned)
            }
            _ => None,
        });
        assert_eq!(
            now.as_deref(),
            Some(mode.ini()),
            "PgBouncer's pool_mode once reloaded"
        );
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What PgBouncer logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("log")
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        if let Some((mut guard, mut stdin)) = self.guard.take() {
            let _ = stdin.write_all(b"\n");
            drop(stdin);
            let _ = guard.wait();
        }
    }
}
