//! Graceful shutdown of `examples/mcp_server.rs` on a real `SIGTERM`,
//! `SIGINT`, and the end of stdin: running tasks get the grace period (a
//! task answered in it completes), then a resumable task is released —
//! another instance claims it at once although its lease would hold for
//! ten minutes — and the others fail with `{"code": "shutdown"}`; the
//! process exits 0, even while a tool that cannot be stopped runs; a
//! second signal ends the shutdown at once.
#![cfg(unix)]

#[path = "mcp_client/mod.rs"]
mod mcp_client;

use mcp_client::{Launch, store_dir, stored, stored_until};
use rmcp::model::TaskStatus;
use serde_json::json;

/// Longer than any test: only a release lets another instance claim early.
const LEASE_MS: u64 = 600_000;

#[derive(Clone, Copy, PartialEq)]
enum Stop {
    Signal(&'static str),
    StdinClosed,
}

async fn shuts_down_gracefully(stop: Stop) {
    let (_root, dir) = store_dir();
    // Long enough to answer a question in it on a stalled machine (the
    // test reads the log, answers, and polls until it is recorded); short
    // enough to wait out.
    let grace_ms = 8_000;
    let mut a = Launch::new(&dir, "A")
        .lease_ms(LEASE_MS)
        .env("TASKSTORE_MCP_SHUTDOWN_GRACE_MS", grace_ms)
        .start()
        .await;
    let resumable = a
        .call_as_task(json!({"ms": 600_000, "step_ms": 50, "resumable": true}))
        .await
        .task
        .task_id;
    let plain = a.call_as_task(json!({"ms": 600_000})).await.task.task_id;
    let question = a
        .task("ask", json!({"question": "Still there?"}))
        .await
        .task
        .task_id;
    a.poll_until(&question, |t| t.status() == TaskStatus::InputRequired)
        .await;
    stored_until(&dir, &resumable, |t| {
        t["resume"]["checkpoint"]["elapsedMs"].as_u64().is_some()
    })
    .await;

    match stop {
        Stop::Signal(signal) => {
            a.signal(signal);
            a.wait_for_log(&format!("SIG{signal}, shutting down")).await;
            // Still serving in the grace: the answer completes the task.
            a.answer(&question, "answer", json!({"action": "accept"}))
                .await;
            let done = a.settled(&question).await;
            assert_eq!(done.status(), TaskStatus::Completed);
        }
        Stop::StdinClosed => a.close_stdin().await,
    }
    let status = a.exited().await;
    assert!(status.success(), "exited with {status}");
    let why = match stop {
        Stop::Signal(signal) => format!("SIG{signal}"),
        Stop::StdinClosed => "stdin closed".to_owned(),
    };
    let failed = if stop == Stop::StdinClosed { 2 } else { 1 };
    let log = a.stderr();
    assert!(
        log.contains(&format!(
            "instance A shut down ({why}): 3 running, 1 released, {failed} failed, 0 not stopped, 0 unrecorded"
        )),
        "{log}"
    );

    // The plain task failed with the shutdown error (the question too, when
    // no client was left to answer it).
    let plain_task = stored(&dir, &plain).unwrap();
    assert_eq!(plain_task["status"], "failed");
    assert_eq!(plain_task["error"]["code"], "shutdown");
    assert_eq!(plain_task["error"]["instance"], "A");
    assert_eq!(plain_task["error"]["graceMs"], grace_ms);
    let question_task = stored(&dir, &question).unwrap();
    if stop == Stop::StdinClosed {
        assert_eq!(question_task["error"]["code"], "shutdown");
    } else {
        assert_eq!(question_task["status"], "completed");
    }
    // The resumable one was released: still working, its lease lapsed
    // long before its ten minutes.
    let released = stored(&dir, &resumable).unwrap();
    assert_eq!(released["status"], "working");
    let at = released["resume"]["checkpoint"]["elapsedMs"]
        .as_u64()
        .unwrap();

    // Another instance claims it at once and resumes it from its checkpoint.
    let b = Launch::new(&dir, "B").lease_ms(LEASE_MS).start().await;
    let resumed = b
        .poll_until(&resumable, |t| t.task.status_message.is_some())
        .await;
    assert_eq!(
        resumed.task.status_message.as_deref(),
        Some(format!("resumed by instance B at {at} ms (attempt 2)").as_str())
    );
    b.stop().await;
}

#[tokio::test]
async fn sigterm_shuts_down_gracefully() {
    shuts_down_gracefully(Stop::Signal("TERM")).await;
}

#[tokio::test]
async fn sigint_shuts_down_gracefully() {
    shuts_down_gracefully(Stop::Signal("INT")).await;
}

#[tokio::test]
async fn the_end_of_stdin_shuts_down_gracefully() {
    shuts_down_gracefully(Stop::StdinClosed).await;
}

#[tokio::test]
async fn a_tool_that_cannot_be_stopped_does_not_keep_the_server_from_exiting() {
    let (_root, dir) = store_dir();
    let mut a = Launch::new(&dir, "A")
        .lease_ms(LEASE_MS)
        .env("TASKSTORE_MCP_SHUTDOWN_GRACE_MS", 200)
        // Ample for the failure's write (an fsync on a busy disk): what
        // the test asks is that the tool that runs on keeps nothing waiting.
        .env("TASKSTORE_MCP_SHUTDOWN_WRITES_MS", 10_000)
        .start()
        .await;
    // Blocks its thread for ten minutes, longer than the test may take, and
    // checks for nothing: neither a cancel nor an abort stops it.
    let id = a.task("compute", json!({"ms": 600_000})).await.task.task_id;
    a.poll_until(&id, |t| t.task.status_message.is_some()).await;
    a.cancel(&id).await.expect("tasks/cancel");
    a.signal("TERM");
    let status = a.exited().await;
    assert!(status.success(), "exited with {status}");
    let log = a.stderr();
    assert!(
        log.contains(
            "instance A shut down (SIGTERM): 1 running, 0 released, 1 failed, 1 not stopped, 0 unrecorded"
        ),
        "{log}"
    );
    // Recorded while it still computed.
    let task = stored(&dir, &id).unwrap();
    assert_eq!(task["status"], "failed");
    assert_eq!(task["error"]["code"], "shutdown");
    assert_eq!(task["error"]["instance"], "A");
}

/// A second signal while the server waits out a long grace.
async fn a_second_signal_exits_at_once(second: &str, code: i32) {
    let (_root, dir) = store_dir();
    // Longer than any test: only the second signal can end it in time.
    let mut a = Launch::new(&dir, "A")
        .lease_ms(LEASE_MS)
        .env("TASKSTORE_MCP_SHUTDOWN_GRACE_MS", 600_000)
        .start()
        .await;
    let id = a.call_as_task(json!({"ms": 600_000})).await.task.task_id;
    a.signal("TERM");
    a.wait_for_log("SIGTERM, shutting down").await;
    a.signal(second);
    let status = a.exited().await;
    assert_eq!(status.code(), Some(code), "exited with {status}");
    let log = a.stderr();
    assert!(
        log.contains(&format!(
            "instance A: SIG{second} while shutting down, exiting at once"
        )),
        "{log}"
    );
    assert!(!log.contains("shut down ("), "{log}");
    // Nothing more was recorded: the task is as it was, for the reaper.
    assert_eq!(stored(&dir, &id).unwrap()["status"], "working");
}

#[tokio::test]
async fn a_second_sigterm_exits_at_once() {
    a_second_signal_exits_at_once("TERM", 128 + 15).await;
}

#[tokio::test]
async fn a_sigint_during_shutdown_exits_at_once() {
    a_second_signal_exits_at_once("INT", 128 + 2).await;
}
