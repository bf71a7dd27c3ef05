//! A stdio MCP server whose tools run as durable, resumable tasks.
//!
//! ```text
//! cargo run --example mcp_server --features mcp -- [STORE_DIR]
//! ```
//!
//! Tasks live in a `FileStore` in `STORE_DIR`, or `$TASKSTORE_MCP_DIR`, or
//! `./mcp-tasks`. Restart it, or run several instances over one directory:
//! every instance answers `tasks/get`, `tasks/update` and `tasks/cancel` for
//! every task; a resumable task whose instance died is resumed by another
//! instance (or the restarted one) from its last checkpoint; any other task
//! whose instance died is reported `failed` (orphaned) once its lease
//! lapses.
//!
//! On SIGTERM, SIGINT or the end of stdin it shuts down gracefully: no new
//! task; running ones get the grace period (the server still answers while
//! they do, unless stdin ended); then resumable tasks are released for
//! another instance to claim at once, and the others fail with
//! `{"code": "shutdown"}`; it exits within the grace plus the allowance for
//! those final writes, even while a tool that cannot be stopped runs. A
//! second SIGTERM or SIGINT during the shutdown exits at once (status 128 +
//! the signal's number), recording nothing more.
//!
//! Environment:
//! - `TASKSTORE_MCP_DIR`: the store directory, if no argument is given;
//! - `TASKSTORE_MCP_LEASE_MS`: the lease of running tasks (default 30 s);
//!   orphans are claimed and reaped every lease (at most every 5 s);
//! - `TASKSTORE_MCP_CLAIM_GRACE_MS`: how long a resumable orphan waits for a
//!   claim before it is failed (default one lease);
//! - `TASKSTORE_MCP_REAP_MS`: how often orphans are claimed and reaped, if
//!   not every lease;
//! - `TASKSTORE_MCP_SHUTDOWN_GRACE_MS`: the shutdown grace (default 5 s);
//! - `TASKSTORE_MCP_SHUTDOWN_WRITES_MS`: how long shutdown then waits for
//!   the writes that record the stopped tasks (default 2 s);
//! - `TASKSTORE_MCP_WATCH_MS`: how often the instance looks at its running
//!   tasks and renews their leases (default 250 ms; a lease shorter than
//!   three of these lapses under a live owner);
//! - `TASKSTORE_MCP_RESUME=0`: register no resume handlers (this instance
//!   resumes nothing; it still answers for every task);
//! - `TASKSTORE_MCP_INSTANCE`: this instance's id (default: random); the
//!   tools report it in their status messages;
//! - `TASKSTORE_MCP_PG`: a PostgreSQL connection string (built with the
//!   `postgres` feature): tasks live in a `PgStore` there instead, shared by
//!   instances on every host that connects to it;
//!   `TASKSTORE_MCP_PG_SCHEMA` names its schema (default `taskstore`);
//! - `TASKSTORE_MCP_SOCKET`: a Unix socket path on which the instance also
//!   serves MCP sessions, and then binds every task to the principal of the
//!   request that created it (`ManagerOptions::principal_of`): a session's
//!   connection sends one line first, `Authorization: Bearer <token>`, and
//!   the token is the principal of its every request (a real server
//!   verifies the token and takes its subject; this demo takes it as it
//!   is). Another principal's task is an unknown id; a session that sent
//!   no token, and the stdio client, act for none and are refused.
//!
//! Tools (a client that declared the tasks extension, on a protocol
//! revision after 2025-11-25, gets a task; `ttl_ms` is its TTL):
//! - `slow` `{"ms": 2000, "text": "hi", "ttl_ms": 300000, "resumable": false,
//!   "step_ms": 100}`: waits `ms` in steps of `step_ms`, then answers
//!   `"slow: <text>"`. A resumable one saves `{"elapsedMs": n}` after each
//!   step but the last and resumes from there; its answer also names the
//!   instance that finished it and the attempt. A `tasks/cancel`, sent to any instance,
//!   stops it: the task ends `cancelled`, with a status message that names
//!   the instance that ran it. A client without tasks waits for the result.
//! - `ask` `{"question": "…", "resumable": false, "ttl_ms": 300000}`: asks the
//!   client (an elicitation under the key `answer`, answered by
//!   `tasks/update` at any instance) and answers `"ask: <response>"`
//!   (`"ask: <response> (for <principal>)"` for a task bound to a
//!   principal). Tasks only.
//! - `compute` `{"ms": 2000, "resumable": false, "ttl_ms": 300000}`: a
//!   careless tool, to show what shutdown does with one: it computes for
//!   `ms` on its thread (blocking, in `block_in_place`) and checks for
//!   nothing, so it ignores `tasks/cancel` and, never yielding, cannot be
//!   aborted. A shutdown does not wait for it past its bound: its task is
//!   failed (or released, if resumable) while it still runs, and what it
//!   returns afterwards is not recorded; then the process exits.

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams, ContentBlock,
    CreateTaskResult, CustomRequest, CustomResult, ErrorCode, GetTaskParams, GetTaskResult,
    InputRequest, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    UpdateTaskParams,
};
use rmcp::model::{GetExtensions, JsonRpcMessage};
use rmcp::service::{RequestContext, RoleServer, RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use rmcp::transport::async_rw::AsyncRwTransport;
use rmcp::{ErrorData as McpError, ServerHandler, ServiceExt};
use serde_json::{Value, json};
use taskstore::mcp::{
    DurableTaskManager, ManagerOptions, TaskContext, TaskExit, TaskFuture, TaskOptions,
    client_takes_tasks, invalid_task_request, require_tasks,
};
use taskstore::{FileStore, StoreBuilder, TaskStore};

/// The store: a `FileStore`, or a `PgStore` with `TASKSTORE_MCP_PG`.
type AnyStore = Box<dyn TaskStore>;

#[derive(Clone)]
struct Server {
    tasks: DurableTaskManager<AnyStore>,
    instance: String,
}

/// The principal a socket session's connection named: put in each of its
/// requests' extensions, as the streamable HTTP transport puts the
/// request's `http::request::Parts` there, and read back by the manager's
/// `principal_of` hook.
#[derive(Clone, Debug)]
struct Bearer(String);

/// A transport whose every request carries its connection's [`Bearer`].
struct Authenticated<T> {
    inner: T,
    bearer: Option<Bearer>,
}

impl<T: Transport<RoleServer>> Transport<RoleServer> for Authenticated<T> {
    type Error = T::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        self.inner.send(item)
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        let mut message = self.inner.receive().await?;
        if let (JsonRpcMessage::Request(request), Some(bearer)) = (&mut message, &self.bearer) {
            request.request.extensions_mut().insert(bearer.clone());
        }
        Some(message)
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.inner.close()
    }
}

/// Serves MCP sessions on `listener`, each as its connection's first line
/// (`Authorization: Bearer <token>`, at most 4 KiB) names its principal.
async fn serve_socket(listener: tokio::net::UnixListener, server: Server) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                eprintln!("mcp_server: instance {}: accept: {e}", server.instance);
                continue;
            }
        };
        let server = server.clone();
        tokio::spawn(async move {
            let (read, write) = stream.into_split();
            let mut read = tokio::io::BufReader::new(read);
            let mut line = String::new();
            if (&mut read).take(4_096).read_line(&mut line).await.is_err() {
                return;
            }
            let bearer = line
                .trim_end()
                .strip_prefix("Authorization: Bearer ")
                .map(|token| Bearer(token.to_owned()));
            let transport = Authenticated {
                inner: AsyncRwTransport::new_server(read, write),
                bearer,
            };
            if let Ok(service) = server.serve(transport).await {
                let _ = service.waiting().await;
            }
        });
    }
}

/// What a client passed: the arguments of one tool, as an object.
type Args = serde_json::Map<String, Value>;

fn int(args: &Args, key: &str) -> Result<Option<u64>, McpError> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            McpError::invalid_params(format!("`{key}` must be a non-negative integer"), None)
        }),
    }
}

fn string(args: &Args, key: &str, default: &str) -> Result<String, McpError> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(default.to_owned()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(McpError::invalid_params(
            format!("`{key}` must be a string"),
            None,
        )),
    }
}

fn flag(args: &Args, key: &str) -> Result<bool, McpError> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(McpError::invalid_params(
            format!("`{key}` must be a boolean"),
            None,
        )),
    }
}

fn text(s: String) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(s)])
}

/// The `slow` tool's work, for `input` `{"ms", "text", "step_ms"}`; a
/// resumable one resumes from its checkpoint `{"elapsedMs"}`.
async fn run_slow(
    ctx: TaskContext,
    instance: String,
    input: Value,
) -> Result<CallToolResult, TaskExit> {
    let ms = input["ms"].as_u64().unwrap_or(2_000);
    let step_ms = input["step_ms"].as_u64().unwrap_or(100).max(1);
    let mut at = ctx
        .last_checkpoint()
        .and_then(|c| c["elapsedMs"].as_u64())
        .unwrap_or(0);
    if ctx.is_resumed() {
        eprintln!(
            "mcp_server: instance {instance} resumed task {} at {at} ms (attempt {})",
            ctx.task_id(),
            ctx.attempt()
        );
        let said = ctx
            .set_status_message(format!(
                "resumed by instance {instance} at {at} ms (attempt {})",
                ctx.attempt()
            ))
            .await;
        going_on(said, &ctx, &instance, "status message")?;
    }
    while at < ms {
        let step = step_ms.min(ms - at);
        tokio::select! {
            _ = ctx.cancelled() => {
                let said = ctx
                    .set_status_message(format!("cancel observed by instance {instance}"))
                    .await;
                going_on(said, &ctx, &instance, "status message")?;
                return Err(TaskExit::Cancelled);
            }
            _ = tokio::time::sleep(Duration::from_millis(step)) => {}
        }
        at += step;
        if at == ms {
            break;
        }
        // Does nothing for a task that is not resumable. One the store
        // could not save is skipped, not the work: a run resumed meanwhile
        // starts from the one before.
        let saved = ctx.checkpoint(json!({ "elapsedMs": at })).await;
        going_on(saved, &ctx, &instance, "checkpoint")?;
    }
    let done = format!("slow: {}", input["text"].as_str().unwrap_or("hi"));
    if ctx.kind().is_none() {
        return Ok(text(done));
    }
    Ok(text(format!(
        "{done} (finished by instance {instance}, attempt {})",
        ctx.attempt()
    )))
}

/// What a `TaskContext` write (`what`: a checkpoint, a status message)
/// that failed with `written`'s error means for the run: over if the error
/// says so ([`ends_the_run`]); else the store could not make it (the
/// database out of reach a moment: a restart, a connection it ended), and
/// the run goes on without it, as it would have had the write been lost.
fn going_on(
    written: Result<(), McpError>,
    ctx: &TaskContext,
    instance: &str,
    what: &str,
) -> Result<(), TaskExit> {
    let Err(e) = written else { return Ok(()) };
    let task = ctx.task_id();
    if ends_the_run(&e) {
        eprintln!(
            "mcp_server: instance {instance}: {what} of task {task} refused: {}",
            e.message
        );
        return Err(e.into());
    }
    eprintln!(
        "mcp_server: instance {instance}: {what} of task {task} not saved, going on: {}",
        e.message
    );
    Ok(())
}

/// Whether `e`, the error of a `TaskContext` write, says this run is over
/// (`data.code`): another instance claimed the task (`fenced`), or
/// shutdown stopped the run (`shutdown`). Any other is the store's (out of
/// reach, a value over its cap): the write did not happen, and the run
/// may go on.
fn ends_the_run(e: &McpError) -> bool {
    let code = e.data.as_ref().and_then(|data| data.get("code"));
    matches!(code.and_then(Value::as_str), Some("fenced" | "shutdown"))
}

/// The `ask` tool's work, for `input` `{"question"}`.
async fn run_ask(
    ctx: TaskContext,
    instance: String,
    input: Value,
) -> Result<CallToolResult, TaskExit> {
    let question = input["question"].as_str().unwrap_or("What is your name?");
    if ctx.is_resumed() {
        eprintln!(
            "mcp_server: instance {instance} resumed task {} (attempt {})",
            ctx.task_id(),
            ctx.attempt()
        );
    }
    let request: InputRequest = serde_json::from_value(json!({
        "method": "elicitation/create",
        "params": {
            "message": question,
            "requestedSchema": {"type": "object", "properties": {}}
        }
    }))
    .map_err(|e| McpError::internal_error(e.to_string(), None))?;
    // A resumed run asks under the same key and with the same request: it
    // gets the answer given meanwhile, or waits on for it.
    let answer = ctx.request_input("answer", request).await?;
    // The principal the task is bound to, if any: the one who answered.
    Ok(text(match ctx.principal() {
        Some(principal) => format!("ask: {answer} (for {principal})"),
        None => format!("ask: {answer}"),
    }))
}

/// Computes for `ms` milliseconds, blocking the thread (a stand-in for a
/// long CPU-bound or blocking library call).
fn compute(ms: u64) {
    let end = std::time::Instant::now() + Duration::from_millis(ms);
    while let Some(left) = end.checked_duration_since(std::time::Instant::now()) {
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// The `compute` tool's work, for `input` `{"ms"}`: says so in its status
/// message, then computes blocking, in `block_in_place` (so the runtime
/// moves its other tasks off this thread), and checks for nothing: it
/// ignores `tasks/cancel` and cannot be aborted while it computes.
async fn run_compute(
    ctx: TaskContext,
    instance: String,
    input: Value,
) -> Result<CallToolResult, TaskExit> {
    let ms = input["ms"].as_u64().unwrap_or(2_000);
    let said = ctx
        .set_status_message(format!("computing for {ms} ms on instance {instance}"))
        .await;
    going_on(said, &ctx, &instance, "status message")?;
    tokio::task::block_in_place(|| compute(ms));
    Ok(text(format!("compute: {ms} ms")))
}

/// The work of `tool` for `input`.
fn work(tool: &str, ctx: TaskContext, instance: String, input: Value) -> TaskFuture {
    match tool {
        "slow" => Box::pin(run_slow(ctx, instance, input)),
        "compute" => Box::pin(run_compute(ctx, instance, input)),
        _ => Box::pin(run_ask(ctx, instance, input)),
    }
}

/// The resume handler of `tool`: the same work, with the stored input.
fn resume(
    tool: &'static str,
    instance: String,
) -> impl Fn(TaskContext) -> TaskFuture + Send + Sync + 'static {
    move |ctx| {
        let input = ctx.input().clone();
        work(tool, ctx, instance.clone(), input)
    }
}

impl ServerHandler for Server {
    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let schema = |value: Value| match value {
            Value::Object(map) => map,
            _ => unreachable!("a JSON object literal"),
        };
        Ok(ListToolsResult::with_all_items(vec![
            Tool::new(
                "slow",
                "Waits `ms` milliseconds, then echoes `text`; runs as a (resumable) task for clients that support tasks",
                schema(json!({
                    "type": "object",
                    "properties": {
                        "ms": {"type": "integer", "minimum": 0},
                        "text": {"type": "string"},
                        "ttl_ms": {"type": "integer", "minimum": 0},
                        "resumable": {"type": "boolean"},
                        "step_ms": {"type": "integer", "minimum": 1}
                    }
                })),
            ),
            Tool::new(
                "compute",
                "Computes for `ms` milliseconds, blocking its thread; ignores cancellation (a demo of a tool shutdown cannot stop)",
                schema(json!({
                    "type": "object",
                    "properties": {
                        "ms": {"type": "integer", "minimum": 0},
                        "ttl_ms": {"type": "integer", "minimum": 0},
                        "resumable": {"type": "boolean"}
                    }
                })),
            ),
            Tool::new(
                "ask",
                "Asks the client `question` and echoes the answer; tasks only",
                schema(json!({
                    "type": "object",
                    "properties": {
                        "question": {"type": "string"},
                        "ttl_ms": {"type": "integer", "minimum": 0},
                        "resumable": {"type": "boolean"}
                    }
                })),
            ),
        ]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let args = request.arguments.clone().unwrap_or_default();
        // A client that declared the tasks extension, on a protocol
        // revision that defines it.
        let tasks = client_takes_tasks(&context);
        let (tool, input) = match request.name.as_ref() {
            "slow" => {
                let input = json!({
                    "ms": int(&args, "ms")?.unwrap_or(2_000),
                    "text": string(&args, "text", "hi")?,
                    "step_ms": int(&args, "step_ms")?.unwrap_or(100),
                });
                if !tasks {
                    let ms = input["ms"].as_u64().unwrap_or(0);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    let done = format!("slow: {}", input["text"].as_str().unwrap_or(""));
                    return Ok(text(done).into());
                }
                ("slow", input)
            }
            "compute" => {
                let input = json!({ "ms": int(&args, "ms")?.unwrap_or(2_000) });
                if !tasks {
                    let ms = input["ms"].as_u64().unwrap_or(0);
                    tokio::task::block_in_place(|| compute(ms));
                    return Ok(text(format!("compute: {ms} ms")).into());
                }
                ("compute", input)
            }
            // It waits for the client's answer: only a client that takes
            // tasks can give one (`-32021` for any other, as for its
            // `tasks/*`).
            "ask" => {
                require_tasks(&context)?;
                (
                    "ask",
                    json!({ "question": string(&args, "question", "What is your name?")? }),
                )
            }
            other => {
                return Err(McpError::invalid_params(
                    format!("unknown tool: {other}"),
                    None,
                ));
            }
        };
        let options = TaskOptions::new()
            .with_ttl_ms(int(&args, "ttl_ms")?.unwrap_or(300_000))
            .with_poll_interval_ms(50);
        let instance = self.instance.clone();
        let tasks = self.tasks.for_request(&context);
        let task = if flag(&args, "resumable")? {
            let run_input = input.clone();
            tasks
                .spawn_resumable(tool, input, options, move |ctx| {
                    work(tool, ctx, instance, run_input)
                })
                .await?
        } else {
            tasks
                .spawn(options, move |ctx| work(tool, ctx, instance, input))
                .await?
        };
        Ok(CallToolResponse::Task(CreateTaskResult::new(task)))
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, McpError> {
        require_tasks(&context)?;
        let tasks = self.tasks.for_request(&context);
        Ok(GetTaskResult::new(tasks.get_task(&request.task_id).await?))
    }

    async fn update_task(
        &self,
        request: UpdateTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        require_tasks(&context)?;
        self.tasks
            .for_request(&context)
            .update_task(&request.task_id, request.input_responses)
            .await
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        require_tasks(&context)?;
        self.tasks
            .for_request(&context)
            .cancel_task(&request.task_id)
            .await
    }

    async fn on_custom_request(
        &self,
        request: CustomRequest,
        _context: RequestContext<RoleServer>,
    ) -> Result<CustomResult, McpError> {
        // rmcp routes a tasks/* request whose params do not parse here.
        if let Some(error) = invalid_task_request(&request) {
            return Err(error);
        }
        Err(McpError::new(
            ErrorCode::METHOD_NOT_FOUND,
            request.method,
            None,
        ))
    }

    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tasks()
                .build(),
        )
    }
}

/// Prints the store's and the manager's log lines (info and above) to
/// stderr: a stand-in for `tracing-subscriber`, to keep the example's
/// dependencies few.
struct Stderr;

impl tracing::Subscriber for Stderr {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() <= tracing::Level::INFO && metadata.target().starts_with("taskstore")
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Line(String);
        impl tracing::field::Visit for Line {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                use std::fmt::Write;
                let _ = match field.name() {
                    "message" => write!(self.0, " {value:?}"),
                    name => write!(self.0, " {name}={value:?}"),
                };
            }
        }
        let mut line = Line(String::new());
        event.record(&mut line);
        eprintln!("mcp_server: {}{}", event.metadata().level(), line.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

fn env_ms(name: &str) -> Result<Option<Duration>, Box<dyn std::error::Error>> {
    match std::env::var(name) {
        Ok(ms) => Ok(Some(Duration::from_millis(ms.parse().map_err(|e| {
            format!("{name}={ms:?} is not a number of milliseconds: {e}")
        })?))),
        Err(_) => Ok(None),
    }
}

/// The settings every store shares, from the environment.
fn configure<O>(
    mut builder: StoreBuilder<O>,
    options: &mut ManagerOptions,
) -> Result<StoreBuilder<O>, Box<dyn std::error::Error>> {
    if let Ok(instance) = std::env::var("TASKSTORE_MCP_INSTANCE") {
        builder = builder.instance_id(instance);
    }
    if let Some(lease) = env_ms("TASKSTORE_MCP_LEASE_MS")? {
        builder = builder.lease(lease);
        // Claim and report orphans within about one more lease.
        let reap = lease.min(options.reap_interval);
        *options = options.clone().reap_interval(reap);
    }
    if let Some(grace) = env_ms("TASKSTORE_MCP_CLAIM_GRACE_MS")? {
        builder = builder.claim_grace(grace);
    }
    if let Some(every) = env_ms("TASKSTORE_MCP_REAP_MS")? {
        *options = options.clone().reap_interval(every);
    }
    if let Some(every) = env_ms("TASKSTORE_MCP_WATCH_MS")? {
        *options = options.clone().watch_interval(every);
    }
    if let Some(grace) = env_ms("TASKSTORE_MCP_SHUTDOWN_GRACE_MS")? {
        *options = options.clone().shutdown_grace(grace);
    }
    if let Some(allowance) = env_ms("TASKSTORE_MCP_SHUTDOWN_WRITES_MS")? {
        *options = options.clone().shutdown_writes(allowance);
    }
    Ok(builder)
}

/// Opens the store the environment names.
fn open_store(
    options: &mut ManagerOptions,
) -> Result<(AnyStore, String), Box<dyn std::error::Error>> {
    #[cfg(feature = "postgres")]
    if let Ok(conninfo) = std::env::var("TASKSTORE_MCP_PG") {
        let mut builder = configure(taskstore::PgStore::builder(conninfo), options)?;
        if let Ok(schema) = std::env::var("TASKSTORE_MCP_PG_SCHEMA") {
            builder = builder.schema(schema);
        }
        let store = builder.open()?;
        let place = format!("postgres schema {}", store.schema());
        return Ok((Box::new(store), place));
    }
    #[cfg(not(feature = "postgres"))]
    if std::env::var_os("TASKSTORE_MCP_PG").is_some() {
        // Not a directory of its own in silence, where the others share a
        // database.
        return Err(
            "TASKSTORE_MCP_PG is set, but this build has no PostgreSQL: \
                    build it with --features mcp,postgres"
                .into(),
        );
    }
    let dir = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("TASKSTORE_MCP_DIR").ok())
        .unwrap_or_else(|| "./mcp-tasks".to_owned());
    let store = configure(FileStore::builder(&dir), options)?.open()?;
    Ok((Box::new(store), dir))
}

/// Exits at once on a signal received while shutting down: what is not
/// recorded yet stays as the store has it (claimed or reaped once its
/// lease lapses).
fn at_once(instance: &str, signal: &str, number: i32) -> ! {
    eprintln!("mcp_server: instance {instance}: {signal} while shutting down, exiting at once");
    std::process::exit(128 + number)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    use tokio::signal::unix::{SignalKind, signal};
    let _ = tracing::subscriber::set_global_default(Stderr);
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut options = ManagerOptions::new();
    let socket = std::env::var_os("TASKSTORE_MCP_SOCKET");
    if socket.is_some() {
        // A request's principal: what its session's connection named.
        options = options.principal_of(|context| {
            let bearer = context.extensions.get::<Bearer>()?;
            Some(bearer.0.clone())
        });
    }
    // Opening may block on the network (PostgreSQL): off the async workers.
    let (store, place, options) = tokio::task::spawn_blocking(move || {
        open_store(&mut options)
            .map(|(store, place)| (store, place, options))
            .map_err(|e| e.to_string())
    })
    .await??;
    let store = Arc::new(store);
    let instance = store.instance_id().to_owned();
    let tasks = DurableTaskManager::with_options(store, options);
    if std::env::var("TASKSTORE_MCP_RESUME").as_deref() != Ok("0") {
        tasks.register_resume("slow", resume("slow", instance.clone()));
        tasks.register_resume("ask", resume("ask", instance.clone()));
        tasks.register_resume("compute", resume("compute", instance.clone()));
    }
    eprintln!("mcp_server: instance {instance}, tasks in {place}");
    let server = Server {
        tasks: tasks.clone(),
        instance: instance.clone(),
    };
    if let Some(path) = socket {
        let listener = tokio::net::UnixListener::bind(&path)?;
        eprintln!(
            "mcp_server: instance {instance}: sessions on {}",
            std::path::Path::new(&path).display()
        );
        tokio::spawn(serve_socket(listener, server.clone()));
    }
    let service = server.serve(rmcp::transport::stdio()).await?;
    let stop_serving = service.cancellation_token();
    let mut serving = tokio::spawn(service.waiting());
    let why = tokio::select! {
        _ = &mut serving => "stdin closed",
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
    };
    eprintln!("mcp_server: instance {instance}: {why}, shutting down");
    // After a signal the server still answers while the tasks finish; a
    // (second) signal meanwhile ends it at once.
    let report = tokio::select! {
        report = tasks.shutdown() => report,
        _ = sigterm.recv() => at_once(&instance, "SIGTERM", 15),
        _ = sigint.recv() => at_once(&instance, "SIGINT", 2),
    };
    eprintln!(
        "mcp_server: instance {instance} shut down ({why}): {} running, {} released, {} failed, {} not stopped, {} unrecorded",
        report.running, report.released, report.failed, report.not_stopped, report.unrecorded
    );
    stop_serving.cancel();
    // Tokio's stdin is a blocking read that cannot be cancelled: leave
    // without waiting for it.
    std::process::exit(0)
}
