//! A stdio MCP server whose slow tool runs as a durable task.
//!
//! ```text
//! cargo run --example mcp_server --features mcp -- [STORE_DIR]
//! ```
//!
//! Tasks live in a `FileStore` in `STORE_DIR`, or `$TASKSTORE_MCP_DIR`, or
//! `./mcp-tasks`. Restart it, or run several instances over one directory:
//! every instance answers `tasks/get`, `tasks/update` and `tasks/cancel` for
//! every task, and a task whose instance died is reported `failed`
//! (orphaned) once its lease lapses.
//!
//! Environment:
//! - `TASKSTORE_MCP_DIR`: the store directory, if no argument is given;
//! - `TASKSTORE_MCP_LEASE_MS`: the lease of running tasks (default 30 s);
//! - `TASKSTORE_MCP_INSTANCE`: this instance's id (default: random); the
//!   tool reports it in its results and status messages;
//! - `TASKSTORE_MCP_PG`: a PostgreSQL connection string (built with the
//!   `postgres` feature): tasks live in a `PgStore` there instead, shared by
//!   instances on every host that connects to it;
//!   `TASKSTORE_MCP_PG_SCHEMA` names its schema (default `taskstore`).
//!
//! The tool `slow` takes `{"ms": 2000, "text": "hi", "ttl_ms": 300000}` (all
//! optional): it waits `ms`, then answers `"slow: <text>"`. A client that
//! declared the tasks extension gets a task (`ttl_ms` is its TTL); any other
//! client waits for the result. A `tasks/cancel`, sent to any instance, stops
//! the wait: the task ends `cancelled`, with a status message that names the
//! instance that ran it.

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams, ContentBlock,
    CreateTaskResult, GetTaskParams, GetTaskResult, ListToolsResult, PaginatedRequestParams,
    ServerCapabilities, ServerConfig, Tool, UpdateTaskParams,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{ErrorData as McpError, ServerHandler, ServiceExt};
use serde_json::{Value, json};
use taskstore::mcp::{DurableTaskManager, ManagerOptions, TaskExit, TaskOptions};
use taskstore::{FileStore, StoreBuilder, TaskStore};

/// The store: a `FileStore`, or a `PgStore` with `TASKSTORE_MCP_PG`.
type AnyStore = Box<dyn TaskStore>;

#[derive(Clone)]
struct Server {
    tasks: DurableTaskManager<AnyStore>,
    instance: String,
}

/// The tool's arguments.
struct Slow {
    ms: u64,
    text: String,
    ttl_ms: Option<u64>,
}

impl Slow {
    fn parse(request: &CallToolRequestParams) -> Result<Slow, McpError> {
        let args = request.arguments.clone().unwrap_or_default();
        let int = |key: &str| match args.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                McpError::invalid_params(format!("`{key}` must be a non-negative integer"), None)
            }),
        };
        Ok(Slow {
            ms: int("ms")?.unwrap_or(2_000),
            text: match args.get("text") {
                None => "hi".to_owned(),
                Some(Value::String(s)) => s.clone(),
                Some(_) => return Err(McpError::invalid_params("`text` must be a string", None)),
            },
            ttl_ms: int("ttl_ms")?,
        })
    }

    async fn run(&self) -> CallToolResult {
        tokio::time::sleep(Duration::from_millis(self.ms)).await;
        CallToolResult::success(vec![ContentBlock::text(format!("slow: {}", self.text))])
    }
}

impl ServerHandler for Server {
    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let schema = json!({
            "type": "object",
            "properties": {
                "ms": {"type": "integer", "minimum": 0},
                "text": {"type": "string"},
                "ttl_ms": {"type": "integer", "minimum": 0}
            }
        });
        let Value::Object(schema) = schema else {
            unreachable!("a JSON object literal")
        };
        Ok(ListToolsResult::with_all_items(vec![Tool::new(
            "slow",
            "Waits `ms` milliseconds, then echoes `text`; runs as a task for clients that support tasks",
            schema,
        )]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        if request.name != "slow" {
            return Err(McpError::invalid_params(
                format!("unknown tool: {}", request.name),
                None,
            ));
        }
        let slow = Slow::parse(&request)?;
        if !context
            .client_capabilities()
            .is_some_and(|c| c.supports_tasks())
        {
            return Ok(slow.run().await.into());
        }
        let options = TaskOptions::new()
            .with_ttl_ms(slow.ttl_ms.unwrap_or(300_000))
            .with_poll_interval_ms(50);
        let instance = self.instance.clone();
        let task = self
            .tasks
            .spawn(options, move |ctx| {
                Box::pin(async move {
                    tokio::select! {
                        _ = ctx.cancelled() => {
                            ctx.set_status_message(format!("cancel observed by instance {instance}")).await?;
                            Err(TaskExit::Cancelled)
                        }
                        result = slow.run() => Ok(result),
                    }
                })
            })
            .await?;
        Ok(CallToolResponse::Task(CreateTaskResult::new(task)))
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, McpError> {
        Ok(GetTaskResult::new(
            self.tasks.get_task(&request.task_id).await?,
        ))
    }

    async fn update_task(
        &self,
        request: UpdateTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.tasks
            .update_task(&request.task_id, request.input_responses)
            .await
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.tasks.cancel_task(&request.task_id).await
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

/// The settings every store shares, from the environment.
fn configure<O>(
    mut builder: StoreBuilder<O>,
    options: &mut ManagerOptions,
) -> Result<StoreBuilder<O>, Box<dyn std::error::Error>> {
    if let Ok(instance) = std::env::var("TASKSTORE_MCP_INSTANCE") {
        builder = builder.instance_id(instance);
    }
    if let Ok(ms) = std::env::var("TASKSTORE_MCP_LEASE_MS") {
        let lease = Duration::from_millis(ms.parse()?);
        builder = builder.lease(lease);
        // Report orphans within about one more lease.
        let reap = lease.min(options.reap_interval);
        *options = options.clone().reap_interval(reap);
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
    let dir = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("TASKSTORE_MCP_DIR").ok())
        .unwrap_or_else(|| "./mcp-tasks".to_owned());
    let store = configure(FileStore::builder(&dir), options)?.open()?;
    Ok((Box::new(store), dir))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut options = ManagerOptions::new();
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
    eprintln!("mcp_server: instance {instance}, tasks in {place}");
    let server = Server {
        tasks: tasks.clone(),
        instance,
    };
    server
        .serve(rmcp::transport::stdio())
        .await?
        .waiting()
        .await?;
    tasks.shutdown().await;
    Ok(())
}
