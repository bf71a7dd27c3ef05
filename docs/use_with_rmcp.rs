use std::sync::Arc;

use rmcp::model::*;
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{ErrorData as McpError, ServerHandler, ServiceExt};
use taskstore::FileStore;
use taskstore::mcp::{DurableTaskManager, TaskExit, TaskOptions};

#[derive(Clone)]
struct Server {
    tasks: DurableTaskManager<FileStore>,
}

async fn slow_work() -> CallToolResult {
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    CallToolResult::success(vec![ContentBlock::text("done")])
}

impl ServerHandler for Server {
    async fn call_tool(
        &self,
        _request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        // Only a client that declared the tasks extension may get a task.
        if !context.client_capabilities().is_some_and(|c| c.supports_tasks()) {
            return Ok(slow_work().await.into());
        }
        let task = self
            .tasks
            .spawn(TaskOptions::new(), |ctx| {
                Box::pin(async move {
                    tokio::select! {
                        // A `tasks/cancel` sent to any instance lands here.
                        _ = ctx.cancelled() => Err(TaskExit::Cancelled),
                        result = slow_work() => Ok(result),
                    }
                })
            })
            .await?; // durably stored before the handle goes out
        Ok(CallToolResponse::Task(CreateTaskResult::new(task)))
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        _: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, McpError> {
        Ok(GetTaskResult::new(self.tasks.get_task(&request.task_id).await?))
    }

    async fn update_task(
        &self,
        request: UpdateTaskParams,
        _: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.tasks
            .update_task(&request.task_id, request.input_responses)
            .await
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        _: RequestContext<RoleServer>,
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

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Every instance (and every restart) over this directory shares the tasks.
    let store = Arc::new(FileStore::open("./mcp-tasks")?);
    let tasks = DurableTaskManager::new(store);
    let server = Server { tasks: tasks.clone() };
    server.serve(rmcp::transport::stdio()).await?.waiting().await?;
    tasks.shutdown().await;
    Ok(())
}
