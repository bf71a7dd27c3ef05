use std::sync::Arc;
use std::time::Duration;

use rmcp::model::*;
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{ErrorData as McpError, ServerHandler, ServiceExt, object};
use serde_json::json;
use taskstore::FileStore;
use taskstore::mcp::{
    DurableTaskManager, TaskContext, TaskExit, TaskFuture, TaskOptions, require_tasks,
};

#[derive(Clone)]
struct Server {
    tasks: DurableTaskManager<FileStore>,
}

/// Ten slow steps; after each one a checkpoint, the point another instance
/// resumes from if this one dies.
fn convert(ctx: TaskContext) -> TaskFuture {
    Box::pin(async move {
        let mut step = ctx.last_checkpoint().and_then(|c| c["step"].as_u64()).unwrap_or(0);
        while step < 10 {
            tokio::select! {
                // A `tasks/cancel` sent to any instance lands here.
                _ = ctx.cancelled() => return Err(TaskExit::Cancelled),
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            step += 1;
            ctx.checkpoint(json!({ "step": step })).await?;
        }
        let file = ctx.input()["file"].as_str().unwrap_or_default().to_owned();
        Ok(CallToolResult::success(vec![ContentBlock::text(format!("converted {file}"))]))
    })
}

impl ServerHandler for Server {
    async fn list_tools(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let input = object!({ "type": "object", "properties": { "file": { "type": "string" } } });
        let convert = Tool::new("convert", "Converts a file in ten slow steps, as a task", input);
        Ok(ListToolsResult::with_all_items(vec![convert]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        // Only a client that declared the tasks extension, on a protocol
        // revision that defines it, may get a task (`-32021` for any other),
        // or ask for one (`rmcp`'s own gate lets a 2025-11-25 client in).
        require_tasks(&context)?;
        let input = json!({ "file": request.arguments.unwrap_or_default().get("file") });
        // `for_request`: the task is bound to the request's principal, if
        // the manager maps requests to principals (`principal_of`).
        let task = self
            .tasks
            .for_request(&context)
            .spawn_resumable("convert", input, TaskOptions::new(), convert)
            .await?; // durably stored before the handle goes out
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
        self.tasks.for_request(&context).cancel_task(&request.task_id).await
    }

    async fn on_custom_request(
        &self,
        request: CustomRequest,
        _: RequestContext<RoleServer>,
    ) -> Result<CustomResult, McpError> {
        // rmcp hands a tasks/* request whose params do not parse (a taskId
        // that is a number) here: `-32602`, as the extension says.
        if let Some(error) = taskstore::mcp::invalid_task_request(&request) {
            return Err(error);
        }
        Err(McpError::new(ErrorCode::METHOD_NOT_FOUND, request.method, None))
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

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigterm = signal(SignalKind::terminate())?;
    // Every instance (and every restart) over this directory shares the tasks.
    let store = Arc::new(FileStore::open("./mcp-tasks")?);
    // Over stdio the client is whoever started the server. A server on the
    // streamable HTTP transport binds each task to its creator instead:
    // `DurableTaskManager::with_options(store, ManagerOptions::new()
    // .principal_of(..))`, mapping a request's context (its extensions hold
    // the `http::request::Parts`) to the verified token's subject.
    let tasks = DurableTaskManager::new(store);
    // This instance resumes "convert" tasks whose server died.
    tasks.register_resume("convert", convert);
    let server = Server { tasks: tasks.clone() };
    let service = server.serve(rmcp::transport::stdio()).await?;
    let stop_serving = service.cancellation_token();
    tokio::select! {
        _ = service.waiting() => {}          // the client closed stdin
        _ = sigterm.recv() => {}
    }
    // No new task; running ones get 5 s; then resumable ones with attempts
    // left are released to another instance at once, the others fail as
    // "shutdown".
    tasks.shutdown().await;
    stop_serving.cancel();
    // Tokio's stdin read cannot be cancelled: exit rather than wait for it.
    std::process::exit(0)
}
