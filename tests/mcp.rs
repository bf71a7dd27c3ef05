//! `examples/mcp_server.rs`, run as child processes over stdio and driven by
//! `rmcp`'s own client: tasks that survive a restart, and several instances
//! over one store directory that answer for each other.
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams, ClientCapabilities,
    ClientConfig, CreateTaskResult, DetailedTask, ErrorCode, GetTaskParams, Implementation,
    TaskPayload, TaskStatus,
};
use rmcp::service::RunningService;
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceError, ServiceExt};
use serde_json::{Value, json};

/// The compiled example server. `cargo test` builds examples before it runs
/// tests; a focused run (`--test mcp`) builds it here, with the same profile
/// and target directory.
fn server_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let exe = std::env::current_exe().expect("test binary path");
        // target/<profile>/deps/mcp-<hash>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>");
        let binary = profile_dir.join("examples").join("mcp_server");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = std::process::Command::new(cargo);
        build
            .args([
                "build",
                "--quiet",
                "--example",
                "mcp_server",
                "--features",
                "mcp",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if let Some(target_dir) = profile_dir.parent() {
            build.arg("--target-dir").arg(target_dir);
        }
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "building examples/mcp_server.rs failed");
        assert!(binary.exists(), "no server binary at {}", binary.display());
        binary
    })
}

type Client = RunningService<RoleClient, ClientConfig>;

struct Server {
    client: Client,
    pid: u32,
}

/// Starts one server instance over `dir` and connects a client to it; the
/// client declares the tasks extension unless `tasks` is false.
async fn start(dir: &Path, instance: &str, lease_ms: Option<u64>, tasks: bool) -> Server {
    let mut command = tokio::process::Command::new(server_binary());
    command.arg(dir).env("TASKSTORE_MCP_INSTANCE", instance);
    if let Some(ms) = lease_ms {
        command.env("TASKSTORE_MCP_LEASE_MS", ms.to_string());
    }
    let (transport, _) = TokioChildProcess::builder(command)
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the server");
    let pid = transport.id().expect("a running child");
    let capabilities = if tasks {
        ClientCapabilities::builder().enable_tasks().build()
    } else {
        ClientCapabilities::default()
    };
    let client = ClientConfig::new(capabilities, Implementation::new("taskstore-test", "0"))
        .serve(transport)
        .await
        .expect("initialize");
    Server { client, pid }
}

impl Server {
    async fn call(&self, args: Value) -> CallToolResponse {
        let Value::Object(args) = args else {
            panic!("arguments must be an object")
        };
        self.client
            .call_tool_once(CallToolRequestParams::new("slow").with_arguments(args))
            .await
            .expect("tools/call")
    }

    async fn call_as_task(&self, args: Value) -> CreateTaskResult {
        match self.call(args).await {
            CallToolResponse::Task(created) => created,
            other => panic!("expected a task, got {other:?}"),
        }
    }

    async fn get(&self, id: &str) -> Result<DetailedTask, rmcp::ErrorData> {
        match self.client.peer().get_task(GetTaskParams::new(id)).await {
            Ok(result) => Ok(result.task),
            Err(ServiceError::McpError(e)) => Err(e),
            Err(e) => panic!("tasks/get transport failure: {e}"),
        }
    }

    /// Polls `tasks/get` until `done` holds; every answer must be a task
    /// (never `-32602`). The bound only guards against a hang.
    async fn poll_until(&self, id: &str, done: impl Fn(&DetailedTask) -> bool) -> DetailedTask {
        for _ in 0..3_000 {
            let task = self.get(id).await.expect("tasks/get answers");
            if done(&task) {
                return task;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("task {id} never reached the expected state");
    }

    async fn settled(&self, id: &str) -> DetailedTask {
        self.poll_until(id, |t| t.status().is_terminal()).await
    }

    fn kill(&self) {
        let status = std::process::Command::new("kill")
            .args(["-KILL", &self.pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    async fn stop(self) {
        let _ = self.client.cancel().await;
    }
}

/// A `CallToolResult` as JSON, without the protocol's `resultType` marker
/// (present or not depending on the response path, not on the result).
fn result_json(result: &CallToolResult) -> Value {
    let mut value = serde_json::to_value(result).unwrap();
    value.as_object_mut().unwrap().remove("resultType");
    value
}

#[tokio::test]
async fn tool_call_as_a_task_completes_with_the_same_result_as_a_plain_call() {
    let dir = tempfile::tempdir().unwrap();
    let with_tasks = start(dir.path(), "a", None, true).await;
    let plain = start(dir.path(), "b", None, false).await;
    let args = json!({"ms": 100, "text": "same either way"});

    let created = with_tasks.call_as_task(args.clone()).await;
    assert_eq!(created.task.status, TaskStatus::Working);
    let done = with_tasks.settled(&created.task.task_id).await;
    let TaskPayload::Completed { result } = done.payload else {
        panic!("expected completed, got {done:?}")
    };
    let from_task: CallToolResult = serde_json::from_value(Value::Object(result)).unwrap();

    let CallToolResponse::Complete(direct) = plain.call(args).await else {
        panic!("a client without the tasks extension gets the result directly")
    };
    assert_eq!(result_json(&from_task), result_json(&direct));
    assert_eq!(
        from_task.content[0].as_text().unwrap().text,
        "slow: same either way"
    );

    with_tasks.stop().await;
    plain.stop().await;
}

#[tokio::test]
async fn restart_keeps_finished_tasks_and_reports_interrupted_ones_orphaned() {
    let dir = tempfile::tempdir().unwrap();
    let lease = Some(1_000);
    let first = start(dir.path(), "first", lease, true).await;
    let finished = first.call_as_task(json!({"ms": 0, "text": "kept"})).await;
    let finished_before = first.settled(&finished.task.task_id).await;
    assert_eq!(finished_before.status(), TaskStatus::Completed);
    let running = first.call_as_task(json!({"ms": 600_000})).await;
    assert_eq!(
        first.get(&running.task.task_id).await.unwrap().status(),
        TaskStatus::Working
    );
    first.kill();
    drop(first);

    let second = start(dir.path(), "second", lease, true).await;
    // The finished task comes back whole.
    assert_eq!(
        second.get(&finished.task.task_id).await.unwrap(),
        finished_before
    );
    // The interrupted one is reported failed once the lease lapses, and is
    // never unknown in between.
    let orphan = second.settled(&running.task.task_id).await;
    let TaskPayload::Failed { error } = &orphan.payload else {
        panic!("expected failed, got {orphan:?}")
    };
    assert_eq!(error["code"], ErrorCode::INTERNAL_ERROR.0);
    assert_eq!(error["data"]["code"], "orphaned");
    assert_eq!(error["data"]["owner"], "first");
    second.stop().await;
}

#[tokio::test]
async fn two_instances_answer_for_each_other_and_cancel_crosses_them() {
    let dir = tempfile::tempdir().unwrap();
    let a = start(dir.path(), "A", None, true).await;
    let b = start(dir.path(), "B", None, true).await;
    let created = a.call_as_task(json!({"ms": 600_000})).await;
    let id = created.task.task_id.as_str();
    // Created through A, answered by B at once.
    assert_eq!(b.get(id).await.unwrap().status(), TaskStatus::Working);

    b.client
        .peer()
        .cancel_task(CancelTaskParams::new(id))
        .await
        .expect("tasks/cancel");
    let from_b = b.settled(id).await;
    let from_a = a.get(id).await.unwrap();
    assert_eq!(from_b.status(), TaskStatus::Cancelled);
    // Only the operation writes `cancelled`: it saw the cancel, in A.
    assert_eq!(
        from_b.task.status_message.as_deref(),
        Some("cancel observed by instance A")
    );
    assert_eq!(from_a, from_b);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_task_is_gone_after_its_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "ttl", None, true).await;
    let created = server.call_as_task(json!({"ms": 0, "ttl_ms": 1_500})).await;
    assert_eq!(created.task.ttl_ms, Some(1_500));
    let id = created.task.task_id.as_str();
    let mut gone = None;
    for _ in 0..3_000 {
        match server.get(id).await {
            Ok(task) => assert_eq!(task.task.task_id, id),
            Err(e) => {
                gone = Some(e);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let err = gone.expect("the task never expired");
    assert_eq!(err.code, ErrorCode::INVALID_PARAMS, "{err:?}");
    server.stop().await;
}
