//! Drives `examples/mcp_server.rs` as child processes over stdio with
//! `rmcp`'s own client, and reads the store it writes, raw (FORMAT.md:
//! `{"format":1,"task":{..}}` in `active/` or `done/`), without opening a
//! handle of its own.

#![allow(dead_code)] // every test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams, ClientCapabilities,
    ClientConfig, CreateTaskResult, DetailedTask, GetTaskParams, Implementation, ProtocolVersion,
    TaskPayload, UpdateTaskParams,
};
use rmcp::service::RunningService;
use rmcp::{ClientLifecycleMode, ClientServiceExt, RoleClient, ServiceError};
use serde_json::Value;

/// How long a poll may wait before the test counts as hung: it only ever
/// fails a test that would otherwise never end.
pub const HANG: Duration = Duration::from_secs(180);

#[path = "../common/example.rs"]
mod example;

/// The compiled example server (see `tests/common/example.rs`).
pub fn server_binary() -> &'static Path {
    example::mcp_server()
}

pub type Client = RunningService<RoleClient, ClientConfig>;

/// How to start one server instance.
pub struct Launch<'a> {
    dir: &'a Path,
    instance: String,
    lease_ms: Option<u64>,
    tasks: bool,
    env: Vec<(String, String)>,
    protocol: Option<ProtocolVersion>,
    socket: Option<PathBuf>,
    user: Option<u32>,
}

/// One client connected to a server, over the server's stdio or its
/// socket.
pub struct Session {
    pub client: Client,
}

/// One server process and the client connected to it over its stdio (its
/// [`Session`], which the server's methods reach).
pub struct Server {
    pub session: Option<Session>,
    pub child: tokio::process::Child,
    pub pid: u32,
    pub instance: String,
    pub stderr_path: PathBuf,
    /// The socket it serves sessions on too (`TASKSTORE_MCP_SOCKET`), if
    /// any.
    pub socket: Option<PathBuf>,
}

impl std::ops::Deref for Server {
    type Target = Session;

    fn deref(&self) -> &Session {
        self.session.as_ref().expect("a connected client")
    }
}

/// The client's configuration: declaring the tasks extension or not; the
/// tasks extension is defined from the revision after 2025-11-25 on,
/// which has no `initialize` (`server/discover`, and the client's
/// capabilities on every request); a pinned older revision `initialize`s.
fn client_config(
    tasks: bool,
    protocol: Option<ProtocolVersion>,
) -> (ClientConfig, ClientLifecycleMode) {
    let capabilities = if tasks {
        ClientCapabilities::builder().enable_tasks().build()
    } else {
        ClientCapabilities::default()
    };
    let config = ClientConfig::new(capabilities, Implementation::new("taskstore-test", "0"));
    match protocol {
        Some(version) => (
            config.with_protocol_version(version),
            ClientLifecycleMode::Initialize,
        ),
        None => (
            config,
            ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::LATEST],
            },
        ),
    }
}

impl<'a> Launch<'a> {
    /// An instance over the store in `dir`, whose client declares the tasks
    /// extension.
    pub fn new(dir: &'a Path, instance: &str) -> Launch<'a> {
        Launch {
            dir,
            instance: instance.to_owned(),
            lease_ms: None,
            tasks: true,
            env: Vec::new(),
            protocol: None,
            socket: None,
            user: None,
        }
    }

    /// A server that runs as the user `uid` (this process running as
    /// root), whose permissions then hold where root's would not.
    #[allow(dead_code)] // Not every test binary that has `mcp_client` asks.
    pub fn run_as(mut self, uid: u32) -> Self {
        self.user = Some(uid);
        self
    }

    /// An instance that also serves sessions on a Unix socket at `path`
    /// (`TASKSTORE_MCP_SOCKET`), each naming its principal
    /// ([`Server::connect`]), and binds tasks to principals.
    pub fn socket(mut self, path: &Path) -> Self {
        self.socket = Some(path.to_owned());
        self.env("TASKSTORE_MCP_SOCKET", path.display())
    }

    pub fn lease_ms(mut self, ms: u64) -> Self {
        self.lease_ms = Some(ms);
        self
    }

    /// A client without the tasks extension.
    pub fn without_tasks(mut self) -> Self {
        self.tasks = false;
        self
    }

    /// A client that `initialize`s asking for protocol revision `version`
    /// (by default it negotiates `rmcp`'s latest through
    /// `server/discover`).
    pub fn protocol(mut self, version: ProtocolVersion) -> Self {
        self.protocol = Some(version);
        self
    }

    pub fn env(mut self, key: &str, value: impl ToString) -> Self {
        self.env.push((key.to_owned(), value.to_string()));
        self
    }

    /// Over the `PgStore` in `schema` of the database at `conninfo`
    /// (`TASKSTORE_MCP_PG`) instead of a file store: the directory then
    /// holds only the servers' logs.
    pub fn pg(self, conninfo: &str, schema: &str) -> Self {
        self.env("TASKSTORE_MCP_PG", conninfo)
            .env("TASKSTORE_MCP_PG_SCHEMA", schema)
    }

    /// Starts the server and connects a client to it; the server's stderr
    /// goes to a file beside the store (`../logs/<instance>-<n>.stderr`).
    pub async fn start(self) -> Server {
        let logs = self
            .dir
            .parent()
            .expect("the store in a directory of the test's")
            .join("logs");
        std::fs::create_dir_all(&logs).expect("a log directory");
        let stderr_path = (0..)
            .map(|n| logs.join(format!("{}-{n}.stderr", self.instance)))
            .find(|p| !p.exists())
            .expect("a free log name");
        let stderr = std::fs::File::create(&stderr_path).expect("a stderr file");
        let mut command = tokio::process::Command::new(server_binary());
        command
            .arg(self.dir)
            .env("TASKSTORE_MCP_INSTANCE", &self.instance)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true);
        if let Some(ms) = self.lease_ms {
            command.env("TASKSTORE_MCP_LEASE_MS", ms.to_string());
        }
        for (key, value) in &self.env {
            command.env(key, value);
        }
        if let Some(uid) = self.user {
            command.uid(uid).gid(uid_group(uid));
        }
        let mut child = command.spawn().expect("spawn the server");
        let pid = child.id().expect("a running child");
        let transport = (
            child.stdout.take().expect("piped stdout"),
            child.stdin.take().expect("piped stdin"),
        );
        let (config, lifecycle) = client_config(self.tasks, self.protocol);
        let client = config
            .serve_with_lifecycle(transport, lifecycle)
            .await
            .expect("initialize");
        Server {
            session: Some(Session { client }),
            child,
            pid,
            instance: self.instance,
            stderr_path,
            socket: self.socket,
        }
    }
}

impl Server {
    /// A new session over the server's socket ([`Launch::socket`]), whose
    /// connection says `Authorization: Bearer <token>` first (nothing with
    /// `None`): the server takes the token as the session's principal.
    /// Its client declares the tasks extension.
    pub async fn connect(&self, token: Option<&str>) -> Session {
        use tokio::io::AsyncWriteExt;
        let path = self.socket.as_ref().expect("a server with a socket");
        let stream = tokio::net::UnixStream::connect(path)
            .await
            .expect("connect to the server's socket");
        let (read, mut write) = stream.into_split();
        let line = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}"));
        write
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("send the authorization line");
        let (config, lifecycle) = client_config(true, None);
        let client = config
            .serve_with_lifecycle((read, write), lifecycle)
            .await
            .expect("discover");
        Session { client }
    }

    pub async fn stop(mut self) {
        self.close_stdin().await;
    }
}

impl Session {
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub async fn call_tool(
        &self,
        tool: &str,
        args: Value,
    ) -> Result<CallToolResponse, ServiceError> {
        let Value::Object(args) = args else {
            panic!("arguments must be an object")
        };
        self.client()
            .call_tool_once(CallToolRequestParams::new(tool.to_owned()).with_arguments(args))
            .await
    }

    pub async fn call(&self, args: Value) -> CallToolResponse {
        self.call_tool("slow", args).await.expect("tools/call")
    }

    pub async fn task(&self, tool: &str, args: Value) -> CreateTaskResult {
        match self.call_tool(tool, args).await.expect("tools/call") {
            CallToolResponse::Task(created) => created,
            other => panic!("expected a task, got {other:?}"),
        }
    }

    pub async fn call_as_task(&self, args: Value) -> CreateTaskResult {
        self.task("slow", args).await
    }

    pub async fn get(&self, id: &str) -> Result<DetailedTask, rmcp::ErrorData> {
        match self.client().peer().get_task(GetTaskParams::new(id)).await {
            Ok(result) => Ok(result.task),
            Err(ServiceError::McpError(e)) => Err(e),
            Err(e) => panic!("tasks/get transport failure: {e}"),
        }
    }

    pub async fn cancel(&self, id: &str) -> Result<(), rmcp::ErrorData> {
        match self
            .client()
            .peer()
            .cancel_task(CancelTaskParams::new(id))
            .await
        {
            Ok(_) => Ok(()),
            Err(ServiceError::McpError(e)) => Err(e),
            Err(e) => panic!("tasks/cancel transport failure: {e}"),
        }
    }

    pub async fn answer(&self, id: &str, key: &str, value: Value) {
        self.update(id, key, value).await.expect("tasks/update");
    }

    /// Polls `tasks/get` until `done` holds; every answer must be a task
    /// (never `-32602`). The bound only guards against a hang.
    pub async fn poll_until(&self, id: &str, done: impl Fn(&DetailedTask) -> bool) -> DetailedTask {
        let start = std::time::Instant::now();
        loop {
            let task = self.get(id).await.expect("tasks/get answers");
            if done(&task) {
                return task;
            }
            assert!(
                start.elapsed() < HANG,
                "task {id} never reached the expected state: {task:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn settled(&self, id: &str) -> DetailedTask {
        self.poll_until(id, |t| t.status().is_terminal()).await
    }

    /// `tasks/update` answering `key` with `value`: the server's answer.
    pub async fn update(&self, id: &str, key: &str, value: Value) -> Result<(), rmcp::ErrorData> {
        let params = UpdateTaskParams::new(id, [(key.to_owned(), value)].into_iter().collect());
        match self.client().peer().update_task(params).await {
            Ok(_) => Ok(()),
            Err(ServiceError::McpError(e)) => Err(e),
            Err(e) => panic!("tasks/update transport failure: {e}"),
        }
    }

    /// Closes the session.
    pub async fn close(self) {
        let _ = self.client.cancel().await;
    }
}

impl Server {
    /// Sends `signal` (`KILL`, `TERM`, `INT`, `STOP`, `CONT`).
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {}", self.pid);
    }

    pub fn kill(&self) {
        self.signal("KILL");
    }

    /// `SIGKILL`, and waits until the process is gone: no write of it can
    /// land after this returns.
    pub async fn kill_and_wait(mut self) {
        self.kill();
        self.exited().await;
    }

    /// Waits for the process to exit (bounded only against a hang).
    pub async fn exited(&mut self) -> ExitStatus {
        tokio::time::timeout(HANG, self.child.wait())
            .await
            .expect("the server never exited")
            .expect("wait for the server")
    }

    /// Closes the client's side: the server reads the end of stdin.
    pub async fn close_stdin(&mut self) {
        if let Some(session) = self.session.take() {
            session.close().await;
        }
    }

    /// The server's stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Polls the server's stderr until it holds `needle`.
    pub async fn wait_for_log(&self, needle: &str) -> String {
        let start = std::time::Instant::now();
        loop {
            let log = self.stderr();
            if log.contains(needle) {
                return log;
            }
            assert!(
                start.elapsed() < HANG,
                "{} never logged {needle:?}:\n{log}",
                self.instance
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A fresh directory for a test: the store goes in `store/`, the servers'
/// logs in `logs/`.
/// The primary group of the user `uid`, from `id -g`.
fn uid_group(uid: u32) -> u32 {
    let out = std::process::Command::new("id")
        .args(["-g", &uid.to_string()])
        .output()
        .expect("run id");
    String::from_utf8(out.stdout)
        .expect("id's output")
        .trim()
        .parse()
        .expect("a group id")
}

pub fn store_dir() -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().expect("a temp dir");
    let store = root.path().join("store");
    (root, store)
}

/// A task as stored in `dir`, read raw: `None` if it is in neither area.
/// `active/` is read first, as the store reads (`src/file/read.rs`,
/// `find`): a terminal move gives the task its name in `done/` before it
/// takes the one in `active/` away, so a task moving meanwhile is found in
/// one or the other.
pub fn stored(dir: &Path, id: &str) -> Option<Value> {
    for area in ["active", "done"] {
        if let Ok(bytes) = std::fs::read(dir.join(area).join(format!("{id}.json"))) {
            let file: Value = serde_json::from_slice(&bytes).expect("a task file");
            return Some(file["task"].clone());
        }
    }
    None
}

/// Polls `check` until it yields a value; fails, naming `what`, only
/// after [`HANG`].
pub async fn poll<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(start.elapsed() < HANG, "{what}: never happened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls the stored task until `check` holds for it.
pub async fn stored_until(dir: &Path, id: &str, check: impl Fn(&Value) -> bool) -> Value {
    let start = std::time::Instant::now();
    loop {
        if let Some(task) = stored(dir, id)
            && check(&task)
        {
            return task;
        }
        assert!(
            start.elapsed() < HANG,
            "stored task {id} never matched: {:?}",
            stored(dir, id)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `elapsedMs` of the example's `slow` tool's last checkpoint, in a
/// task as stored.
pub fn checkpoint(task: &Value) -> Option<u64> {
    task["resume"]["checkpoint"]["elapsedMs"].as_u64()
}

/// After the server running the resumable `slow` task `id` was killed at
/// checkpoint `at_kill`: `again` (instance A, restarted) and `b` (instance
/// B) both resume `slow`, and exactly one of them claims the task, resumes
/// it from that checkpoint and completes it, at epoch 2. `stored` reads the
/// task as stored. Stops both servers.
pub async fn assert_resumed_once(
    again: Server,
    b: Server,
    id: &str,
    at_kill: u64,
    stored: impl Fn() -> Value,
) {
    let done = b.settled(id).await;
    let text = result_text(&done);
    let by = if text.contains("instance A,") {
        "A"
    } else {
        "B"
    };
    assert_eq!(
        text,
        format!("slow: kept (finished by instance {by}, attempt 2)")
    );
    assert_eq!(
        done.task.status_message.as_deref(),
        Some(format!("resumed by instance {by} at {at_kill} ms (attempt 2)").as_str()),
        "resumed from the last checkpoint"
    );
    let resumed = |log: String| log.matches(&format!("resumed task {id}")).count();
    assert_eq!(
        resumed(again.stderr()) + resumed(b.stderr()),
        1,
        "claimed and resumed once"
    );
    let task = stored();
    assert_eq!(
        (task["epoch"].as_u64(), task["status"].as_str()),
        (Some(2), Some("completed"))
    );
    assert_eq!(again.get(id).await.unwrap(), done);
    again.stop().await;
    b.stop().await;
}

/// The text of a completed task's first content block.
pub fn result_text(task: &DetailedTask) -> String {
    let TaskPayload::Completed { result } = &task.payload else {
        panic!("expected completed, got {task:?}")
    };
    result["content"][0]["text"]
        .as_str()
        .expect("a text result")
        .to_owned()
}

/// A `CallToolResult` as JSON, without the protocol's `resultType` marker
/// (present or not depending on the response path, not on the result).
pub fn result_json(result: &CallToolResult) -> Value {
    let mut value = serde_json::to_value(result).unwrap();
    value.as_object_mut().unwrap().remove("resultType");
    value
}

/// An id that names no task.
pub const NOBODY: &str = "00000000-0000-4000-8000-000000000000";

/// Asserts that `answered`, a request for task `id`, was refused exactly
/// as the same request for an id that names no task (`unknown`): the same
/// code, data and message but for the id.
fn as_unknown(
    answered: Result<(), rmcp::ErrorData>,
    unknown: Result<(), rmcp::ErrorData>,
    id: &str,
) {
    let error = answered.expect_err("another principal's task answered");
    let unknown = unknown.expect_err("an unknown task answered");
    assert_eq!(
        error.code,
        rmcp::model::ErrorCode::INVALID_PARAMS,
        "{error:?}"
    );
    assert_eq!(
        (error.code, error.message.replace(id, "<id>"), error.data),
        (
            unknown.code,
            unknown.message.replace(NOBODY, "<id>"),
            unknown.data
        )
    );
}

/// Asserts that the `tasks/get`, `tasks/update` and `tasks/cancel` of task
/// `id` by `bob`, a session acting for another principal than the task's,
/// are each answered as for an unknown id.
pub async fn none_reach(bob: &Session, id: &str) {
    as_unknown(
        bob.get(id).await.map(drop),
        bob.get(NOBODY).await.map(drop),
        id,
    );
    let answer = || serde_json::json!({"action": "accept", "content": {}});
    as_unknown(
        bob.update(id, "answer", answer()).await,
        bob.update(NOBODY, "answer", answer()).await,
        id,
    );
    as_unknown(bob.cancel(id).await, bob.cancel(NOBODY).await, id);
}
