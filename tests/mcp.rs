//! `examples/mcp_server.rs`, run as child processes over stdio and driven by
//! `rmcp`'s own client: tasks that survive a restart, and several instances
//! over one store directory that answer for each other.
#![cfg(unix)]

#[path = "mcp_client/mod.rs"]
mod mcp_client;

use std::time::Duration;

use mcp_client::{Launch, result_json, store_dir, stored, stored_until};
use rmcp::model::{
    CallToolResponse, CallToolResult, ClientRequest, CustomRequest, ErrorCode, ProtocolVersion,
    TaskPayload, TaskStatus,
};
use rmcp::{ServerHandler, ServiceError, ServiceExt};
use serde_json::{Value, json};

async fn start(
    dir: &std::path::Path,
    instance: &str,
    lease_ms: Option<u64>,
    tasks: bool,
) -> mcp_client::Server {
    let mut launch = Launch::new(dir, instance);
    if let Some(ms) = lease_ms {
        launch = launch.lease_ms(ms);
    }
    if !tasks {
        launch = launch.without_tasks();
    }
    launch.start().await
}

#[tokio::test]
async fn tool_call_as_a_task_completes_with_the_same_result_as_a_plain_call() {
    let (_root, dir) = store_dir();
    let with_tasks = start(&dir, "a", None, true).await;
    let plain = start(&dir, "b", None, false).await;
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

/// A tool that runs only as a task (the example's `ask`, which waits for
/// the client's answer) refuses a client that did not declare the tasks
/// extension with `-32021`, Missing Required Client Capability, naming the
/// extension in `data`, as the extension says a server MUST (and as
/// `rmcp` answers `tasks/*` from such a client). It answered `-32602`,
/// which a client cannot tell from bad arguments.
#[tokio::test]
async fn a_tool_that_needs_tasks_refuses_a_client_without_them_as_a_missing_capability() {
    let (_root, dir) = store_dir();
    let plain = start(&dir, "plain", None, false).await;
    let refused = plain.call_tool("ask", json!({"question": "?"})).await;
    let Err(rmcp::service::ServiceError::McpError(error)) = refused else {
        panic!("expected an MCP error, got {refused:?}")
    };
    assert_eq!(error.code, ErrorCode::MISSING_REQUIRED_CLIENT_CAPABILITY);
    let required = &error.data.expect("data names what is required")["requiredCapabilities"];
    assert!(
        required["extensions"]
            .get(rmcp::model::TASKS_EXTENSION_ID)
            .is_some(),
        "{required}"
    );
    plain.stop().await;
}

/// The tasks extension is not defined under protocol revision 2025-11-25:
/// SEP-2663's compatibility table says servers "MUST NOT treat this
/// capability as enabling tasks under that protocol version; requests
/// proceed as if the client had declared no task capability at all". A
/// client that negotiated 2025-11-25 and declared the extension gets the
/// tool's result, not a task, and `-32021` from `tasks/get` and
/// `tasks/cancel`; one that negotiated the extension's revision gets a
/// task.
#[tokio::test]
async fn a_client_on_protocol_2025_11_25_gets_no_task_whatever_it_declares() {
    let (_root, dir) = store_dir();
    let old = mcp_client::Launch::new(&dir, "old")
        .protocol(ProtocolVersion::V_2025_11_25)
        .start()
        .await;
    let negotiated = old
        .client()
        .peer()
        .peer_info()
        .map(|i| i.protocol_version.clone());
    assert_eq!(negotiated, Some(ProtocolVersion::V_2025_11_25));
    let answer = old.call(json!({"ms": 10, "text": "old"})).await;
    let CallToolResponse::Complete(direct) = answer else {
        panic!("a 2025-11-25 client got {answer:?}, not the tool's result")
    };
    assert_eq!(direct.content[0].as_text().unwrap().text, "slow: old");
    let refused = old.call_tool("ask", json!({"question": "?"})).await;
    let Err(ServiceError::McpError(error)) = refused else {
        panic!("expected an MCP error, got {refused:?}")
    };
    assert_eq!(error.code, ErrorCode::MISSING_REQUIRED_CLIENT_CAPABILITY);

    let new = start(&dir, "new", None, true).await;
    let negotiated = new
        .client()
        .peer()
        .peer_info()
        .map(|i| i.protocol_version.clone());
    assert_ne!(negotiated, Some(ProtocolVersion::V_2025_11_25));
    let created = new.call_as_task(json!({"ms": 300})).await;
    let id = &created.task.task_id;
    // Nor may it read or cancel one: "requests proceed as if the client
    // had declared no task capability at all", and the extension says
    // servers "MUST return this error for non-declaring clients issuing
    // `tasks/get`, `tasks/update`, and `tasks/cancel` requests".
    for refused in [old.get(id).await.map(drop), old.cancel(id).await] {
        let error = refused.expect_err("a 2025-11-25 client reached a task");
        assert_eq!(error.code, ErrorCode::MISSING_REQUIRED_CLIENT_CAPABILITY);
    }
    assert_eq!(new.settled(id).await.status(), TaskStatus::Completed);
    old.stop().await;
    new.stop().await;
}

#[tokio::test]
async fn restart_keeps_finished_tasks_and_reports_interrupted_ones_orphaned() {
    let (_root, dir) = store_dir();
    let lease = Some(1_000);
    let first = start(&dir, "first", lease, true).await;
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

    let second = start(&dir, "second", lease, true).await;
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
    // Its status message says why it failed (the tasks extension: a failed
    // task's `statusMessage` SHOULD carry the diagnostic), not what it was
    // doing when its instance died ("computing for 600000 ms …").
    let why = orphan.task.status_message.as_deref().unwrap_or_default();
    assert!(why.contains("was abandoned"), "{why:?}");
    assert_eq!(Some(why), error["data"]["message"].as_str());
    second.stop().await;
}

#[tokio::test]
async fn two_instances_answer_for_each_other_and_cancel_crosses_them() {
    let (_root, dir) = store_dir();
    let a = start(&dir, "A", None, true).await;
    let b = start(&dir, "B", None, true).await;
    let created = a.call_as_task(json!({"ms": 600_000})).await;
    let id = created.task.task_id.as_str();
    // Created through A, answered by B at once.
    assert_eq!(b.get(id).await.unwrap().status(), TaskStatus::Working);

    b.cancel(id).await.expect("tasks/cancel");
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

/// The thread-safe build of `libfaketime`, which moves a process's wall
/// clock by what a file says (its monotonic clock runs on).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// Two instances on one host, whose wall clock (one `libfaketime` file for
/// both) is stepped back ten minutes while they run, for longer than a
/// lease (five renewals of a task), then set right. The owner renewed
/// throughout: neither its plain task nor its resumable one is reaped or
/// claimed, by the peer's polls or its passes; both finish at the owner,
/// at epoch 1. (A handle's time stands still while its clock reads behind
/// it, and the leases renewed from it stood still too: lapsed in real
/// time, and reaped or claimed by the first poll once the clock was set
/// right.) Without `libfaketime` the test says it was skipped;
/// `TASKSTORE_REQUIRE_FAKETIME=1` makes that a failure.
#[tokio::test]
async fn a_clock_set_back_then_right_again_reaps_and_claims_no_live_task() {
    if !std::path::Path::new(LIBFAKETIME).exists() {
        assert!(
            std::env::var("TASKSTORE_REQUIRE_FAKETIME").as_deref() != Ok("1"),
            "TASKSTORE_REQUIRE_FAKETIME=1 but no {LIBFAKETIME}"
        );
        eprintln!("skipped: no {LIBFAKETIME} (apt-get install libfaketime)");
        return;
    }
    let (root, dir) = store_dir();
    let offset = root.path().join("faketime");
    std::fs::write(&offset, "+0s").unwrap();
    let launch = |name: &str| {
        Launch::new(&dir, name)
            .lease_ms(3_000)
            .env("LD_PRELOAD", LIBFAKETIME)
            .env("FAKETIME_TIMESTAMP_FILE", offset.display())
            .env("FAKETIME_NO_CACHE", "1")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
    };
    let a = launch("A").start().await;
    let b = launch("B").start().await;
    // Long enough to outlast the step; both resumable by B.
    let args =
        |resumable| json!({"ms": 60_000, "step_ms": 100, "text": "t", "resumable": resumable});
    let plain = a.call_as_task(args(false)).await.task.task_id;
    let resumable = a.call_as_task(args(true)).await.task.task_id;
    let revision = stored(&dir, &plain).unwrap()["revision"].as_u64().unwrap();
    std::fs::write(&offset, "-600s").unwrap();
    // Five renewals (a third of a lease apart, by the monotonic clock)
    // while the clock is behind: more than a lease has passed.
    stored_until(&dir, &plain, |t| {
        t["revision"].as_u64() >= Some(revision + 5)
    })
    .await;
    std::fs::write(&offset, "+0s").unwrap();
    for _ in 0..20 {
        for id in [&plain, &resumable] {
            let task = b.get(id).await.expect("tasks/get");
            assert_eq!(
                task.status(),
                TaskStatus::Working,
                "live work reaped: {task:?}"
            );
        }
    }
    for id in [&plain, &resumable] {
        // Cut short: the owner ends it (and so it finishes where it ran).
        b.cancel(id).await.expect("tasks/cancel");
        let done = b.settled(id).await;
        assert_eq!(done.status(), TaskStatus::Cancelled, "{done:?}");
        assert_eq!(
            done.task.status_message.as_deref(),
            Some("cancel observed by instance A")
        );
        let task = stored(&dir, id).unwrap();
        // Epoch 1 is left out of the file (FORMAT.md).
        assert_eq!(
            (task["epoch"].as_u64().unwrap_or(1), task["owner"].as_str()),
            (1, Some("A")),
            "claimed"
        );
    }
    assert!(!b.stderr().contains("resumed task"), "{}", b.stderr());
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_task_is_gone_after_its_ttl() {
    let (_root, dir) = store_dir();
    let server = start(&dir, "ttl", None, true).await;
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

#[tokio::test]
async fn a_huge_task_id_is_refused_with_a_short_message() {
    let (_root, dir) = store_dir();
    let server = start(&dir, "huge", None, true).await;
    let huge = "x".repeat(1_000_000);
    for err in [
        server.get(&huge).await.unwrap_err(),
        server.cancel(&huge).await.unwrap_err(),
    ] {
        assert_eq!(err.code, ErrorCode::INVALID_PARAMS);
        assert!(err.message.len() < 300, "{} characters", err.message.len());
    }
    server.stop().await;
}

#[tokio::test]
async fn ttl_bounds_hold_on_the_wire() {
    let (_root, dir) = store_dir();
    let server = start(&dir, "ttl-bounds", None, true).await;
    // 0 is raised to the minimum, and the next tasks/get finds the task
    // (unless the machine stalled past the minimum between the two: then
    // it is gone, rightly, as the clock the server and this test share
    // says).
    let created = server.call_as_task(json!({"ms": 0, "ttl_ms": 0})).await;
    assert_eq!(created.task.ttl_ms, Some(1_000));
    if let Err(e) = server.get(&created.task.task_id).await {
        let born = time::OffsetDateTime::parse(
            &created.task.created_at,
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert_eq!(e.code, ErrorCode::INVALID_PARAMS, "{e:?}");
        assert!(
            time::OffsetDateTime::now_utc() >= born + Duration::from_secs(1),
            "tasks/get did not find it within its TTL: {e:?}"
        );
    }
    // 2^53 - 1 is the largest a JavaScript client holds; 2^64 - 1 is refused.
    let created = server
        .call_as_task(json!({"ms": 0, "ttl_ms": (1u64 << 53) - 1}))
        .await;
    assert_eq!(created.task.ttl_ms, Some((1u64 << 53) - 1));
    match server
        .call_tool("slow", json!({"ms": 0, "ttl_ms": u64::MAX}))
        .await
    {
        Err(ServiceError::McpError(e)) => {
            assert_eq!(e.code, ErrorCode::INVALID_PARAMS, "{e:?}");
            assert!(e.message.contains("ttl_ms"), "{e:?}");
        }
        other => panic!("expected -32602, got {other:?}"),
    }
    server.stop().await;
}

/// Sends `method` with raw `params`, as a client whose `taskId` is of the
/// wrong type would.
async fn raw(client: &mcp_client::Client, method: &str, params: Value) -> rmcp::ErrorData {
    let params = (!params.is_null()).then_some(params);
    match client
        .peer()
        .send_request(ClientRequest::CustomRequest(CustomRequest::new(
            method, params,
        )))
        .await
    {
        Err(ServiceError::McpError(e)) => e,
        other => panic!("{method}: expected an error, got {other:?}"),
    }
}

const MALFORMED: [(&str, &str); 4] = [
    ("tasks/get", r#"{"taskId": 5}"#),
    ("tasks/get", r#"{"taskId": null}"#),
    ("tasks/cancel", "{}"),
    ("tasks/update", r#"{"taskId": ["a"], "inputResponses": {}}"#),
];

/// A server with nothing but rmcp's defaults (and tasks enabled).
#[derive(Clone)]
struct Plain;

impl ServerHandler for Plain {
    fn get_info(&self) -> rmcp::model::ServerConfig {
        rmcp::model::ServerConfig::new(
            rmcp::model::ServerCapabilities::builder()
                .enable_tasks()
                .build(),
        )
    }
}

#[tokio::test]
async fn wrongly_typed_task_params_what_rmcp_answers_and_what_the_example_answers() {
    // rmcp alone: the params do not parse, so the request is handed to
    // `on_custom_request`, whose default is -32601 with the method name.
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(async move {
        let running = Plain.serve(server_io).await.expect("serve");
        running.waiting().await
    });
    let client = rmcp::model::ClientConfig::new(
        rmcp::model::ClientCapabilities::builder()
            .enable_tasks()
            .build(),
        rmcp::model::Implementation::new("taskstore-test", "0"),
    )
    .serve(client_io)
    .await
    .expect("initialize");
    for (method, params) in MALFORMED {
        let err = raw(&client, method, serde_json::from_str(params).unwrap()).await;
        assert_eq!(
            (err.code, err.message.as_ref()),
            (ErrorCode::METHOD_NOT_FOUND, method),
            "{method} {params}"
        );
    }
    let _ = client.cancel().await;
    let _ = server.await;

    // The example calls `invalid_task_request` there: -32602.
    let (_root, dir) = store_dir();
    let server = start(&dir, "malformed", None, true).await;
    for (method, params) in MALFORMED {
        let err = raw(
            server.client(),
            method,
            serde_json::from_str(params).unwrap(),
        )
        .await;
        assert_eq!(
            err.code,
            ErrorCode::INVALID_PARAMS,
            "{method} {params}: {err:?}"
        );
        assert!(err.message.contains(method), "{err:?}");
    }
    server.stop().await;
}

/// A store shared with hosts that are not MCP servers holds results and
/// errors of any JSON shape. `tasks/get` answers every such task: a result
/// that is not a JSON object as a tool result whose one text content is its
/// JSON, an error that is not one as `-32603` carrying it as `data`. (Both
/// were refused with `-32603`, for good: the task could never be read over
/// MCP.) So is an error shaped as a JSON-RPC error whose code a client
/// cannot read as one (past 32 bits): it was passed on as it was, and
/// `rmcp`'s client could not read it as an `ErrorData`.
#[tokio::test]
async fn a_result_or_error_that_is_not_an_object_is_still_answered() {
    use taskstore::{FileStore, NewTask, TaskStore};
    let (_root, dir) = store_dir();
    let server = start(&dir, "any-shape", None, true).await;
    let host = FileStore::open(&dir).unwrap();
    let completed = host.create(NewTask::new()).unwrap();
    assert!(
        host.complete(&completed.id, json!(42))
            .unwrap()
            .is_applied()
    );
    let failed = host.create(NewTask::new()).unwrap();
    assert!(
        host.fail(&failed.id, json!(["boom", 1]))
            .unwrap()
            .is_applied()
    );

    let done = server
        .get(completed.id.as_str())
        .await
        .expect("tasks/get answers");
    let TaskPayload::Completed { result } = done.payload else {
        panic!("expected completed, got {done:?}")
    };
    let result: CallToolResult = serde_json::from_value(Value::Object(result)).unwrap();
    assert_eq!(result.content.len(), 1);
    assert_eq!(result.content[0].as_text().unwrap().text, "42");

    // The error of failed task `id`, as `tasks/get` answers it, and the
    // task's status message.
    let failure = async |id: &taskstore::TaskId| {
        let done = server.get(id.as_str()).await.expect("tasks/get answers");
        let TaskPayload::Failed { error } = done.payload else {
            panic!("expected failed, got {done:?}")
        };
        (error, done.task.status_message)
    };
    let (error, status_message) = failure(&failed.id).await;
    assert_eq!(error["code"], ErrorCode::INTERNAL_ERROR.0);
    assert_eq!(error["data"], json!(["boom", 1]));
    assert!(error["message"].is_string(), "{error:?}");
    // An error without a message of its own leaves the status message as
    // stored (none here), not the wrapping's "task failed".
    assert_eq!(status_message, None);

    let wide = json!({"code": 1_i64 << 40, "message": "wide"});
    let failed = host.create(NewTask::new()).unwrap();
    assert!(host.fail(&failed.id, wide.clone()).unwrap().is_applied());
    let (error, _) = failure(&failed.id).await;
    let read: rmcp::model::ErrorData = serde_json::from_value(Value::Object(error))
        .unwrap_or_else(|e| panic!("a client reads the error: {e}"));
    assert_eq!(read.code, ErrorCode::INTERNAL_ERROR);
    assert_eq!(read.message, "wide");
    assert_eq!(read.data, Some(wide));
    server.stop().await;
}
