//! Resumable tasks across real server processes (`examples/mcp_server.rs`,
//! driven by `rmcp`'s client): a `SIGKILL`ed server's task resumed from its
//! checkpoint, once; a `SIGSTOP`ped owner that wakes after a claim; a
//! restarted server reusing the dead one's instance id; `input_required`
//! answered after a restart; an orphan past its claim grace read failed
//! before any reap; and the tests' raw read of a task that moves to
//! `done/` meanwhile. Short leases (1 s) for the instances killed or
//! stopped, long ones for those that live on; bounded polls, no timed
//! assertion.
#![cfg(unix)]

#[path = "mcp_client/mod.rs"]
mod mcp_client;

use mcp_client::{
    Launch, assert_resumed_once, checkpoint, result_text, store_dir, stored, stored_until,
};
use rmcp::model::{ErrorCode, TaskPayload, TaskStatus};
use serde_json::json;
use time::format_description::well_known::Rfc3339;

/// The lease of an instance the test kills or stops: short, so that its
/// tasks are orphaned soon.
const LEASE_MS: u64 = 1_000;
/// The lease of an instance that lives on: long, so that a stalled machine
/// (a loaded 2-core VM can stall a process for most of a second) cannot
/// let the lease of a task it claimed lapse, and another instance claim it
/// again, while it runs. Claims still come at once: a poll of a resumable
/// orphan wakes the claim pass of an instance that resumes its kind.
const SURVIVOR_LEASE_MS: u64 = 10_000;

#[tokio::test]
async fn a_killed_servers_task_is_resumed_from_its_checkpoint_exactly_once() {
    let (_root, dir) = store_dir();
    let a = Launch::new(&dir, "A").lease_ms(LEASE_MS).start().await;
    let created = a
        .call_as_task(json!({"ms": 3_000, "step_ms": 100, "text": "kept", "resumable": true}))
        .await;
    let id = created.task.task_id.clone();
    stored_until(&dir, &id, |t| checkpoint(t).is_some_and(|at| at >= 500)).await;
    a.kill_and_wait().await;
    let at_kill = checkpoint(&stored(&dir, &id).unwrap()).unwrap();

    // The same instance id restarted, and another instance: both resume
    // "slow", exactly one of them claims the task.
    let again = Launch::new(&dir, "A")
        .lease_ms(SURVIVOR_LEASE_MS)
        .start()
        .await;
    let b = Launch::new(&dir, "B")
        .lease_ms(SURVIVOR_LEASE_MS)
        .start()
        .await;
    assert_resumed_once(again, b, &id, at_kill, || stored(&dir, &id).unwrap()).await;
}

#[tokio::test]
async fn a_stopped_owner_that_wakes_after_its_task_was_claimed_changes_nothing() {
    let (_root, dir) = store_dir();
    let a = Launch::new(&dir, "A").lease_ms(LEASE_MS).start().await;
    // One step: when A wakes, its next move is to finish the task.
    let created = a
        .call_as_task(json!({"ms": 1_500, "step_ms": 1_500, "text": "once", "resumable": true}))
        .await;
    let id = created.task.task_id.clone();
    a.signal("STOP");
    let b = Launch::new(&dir, "B")
        .lease_ms(SURVIVOR_LEASE_MS)
        .start()
        .await;
    stored_until(&dir, &id, |t| t["epoch"] == 2 && t["owner"] == "B").await;
    a.signal("CONT");
    // A sees it lost the task (its renewal or its outcome is refused) and
    // stops its operation; B finishes it.
    a.wait_for_log("another instance took the task over").await;
    let done = b.settled(&id).await;
    assert_eq!(
        result_text(&done),
        "slow: once (finished by instance B, attempt 2)"
    );
    // A is alive and reports B's outcome; nothing of A's run landed.
    assert_eq!(a.get(&id).await.unwrap(), done);
    let task = stored(&dir, &id).unwrap();
    assert_eq!(
        (task["epoch"].as_u64(), task["owner"].as_str()),
        (Some(2), Some("B"))
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_stopped_owner_that_wakes_to_finish_a_claimed_task_has_its_outcome_refused() {
    let (_root, dir) = store_dir();
    // A looks at its tasks only once a minute: when it wakes, the first
    // thing it does is finish the task (no renewal comes first), and it
    // cannot renew the lease it loses while stopped.
    let a = Launch::new(&dir, "A")
        .lease_ms(LEASE_MS)
        .env("TASKSTORE_MCP_WATCH_MS", 60_000)
        .start()
        .await;
    let ms = 1_500;
    let created_at = std::time::Instant::now();
    let created = a
        .call_as_task(json!({"ms": ms, "step_ms": ms, "text": "once", "resumable": true}))
        .await;
    let id = created.task.task_id.clone();
    a.signal("STOP");
    let b = Launch::new(&dir, "B")
        .lease_ms(SURVIVOR_LEASE_MS)
        .start()
        .await;
    stored_until(&dir, &id, |t| t["epoch"] == 2 && t["owner"] == "B").await;
    // Let A's operation be due the moment it wakes.
    tokio::time::sleep(std::time::Duration::from_millis(ms).saturating_sub(created_at.elapsed()))
        .await;
    a.signal("CONT");
    let done = b.settled(&id).await;
    assert_eq!(
        result_text(&done),
        "slow: once (finished by instance B, attempt 2)"
    );
    // A's outcome, written for epoch 1, was refused: the store showed
    // epoch 2, and A dropped its run.
    a.wait_for_log("now_epoch=2").await;
    assert_eq!(a.get(&id).await.unwrap(), done);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_restarted_server_with_the_same_instance_id_cannot_keep_a_dead_task_alive() {
    let (_root, dir) = store_dir();
    let first = Launch::new(&dir, "same").lease_ms(LEASE_MS).start().await;
    let plain = first
        .call_as_task(json!({"ms": 600_000}))
        .await
        .task
        .task_id;
    let resumable = first
        // Long enough not to finish before the kill below, whatever the
        // machine's stalls: resumed, it runs again whole.
        .call_as_task(json!({"ms": 3_000, "text": "back", "resumable": true}))
        .await
        .task
        .task_id;
    first.get(&plain).await.unwrap();
    first.kill_and_wait().await;
    let lapses_at = stored(&dir, &plain).unwrap()["leaseExpiresAt"].clone();

    let again = Launch::new(&dir, "same")
        .lease_ms(SURVIVOR_LEASE_MS)
        .start()
        .await;
    // Cancels retried while the task is dead: the first writes the flag,
    // the rest find it stored; none renews the lease (the restarted
    // process is a new owner, not the old one).
    let failed = loop {
        again.cancel(&plain).await.expect("tasks/cancel");
        let now = stored(&dir, &plain).unwrap();
        if now["status"] == "working" {
            assert_eq!(
                now["leaseExpiresAt"], lapses_at,
                "a cancel renewed the lease"
            );
        }
        let task = again.get(&plain).await.expect("tasks/get");
        if task.status().is_terminal() {
            break task;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let TaskPayload::Failed { error } = &failed.payload else {
        panic!("expected failed, got {failed:?}")
    };
    assert_eq!(error["code"], ErrorCode::INTERNAL_ERROR.0);
    assert_eq!(error["data"]["code"], "orphaned");
    assert_eq!(error["data"]["owner"], "same");
    assert_eq!(
        error["data"]["leaseExpiredAt"], lapses_at,
        "the dead owner's lease never moved"
    );
    assert!(
        stored(&dir, &plain).unwrap()["metadata"]["mcp.cancelRequested"] == true,
        "the cancels were written"
    );

    // The resumable one is claimed by the restarted process, as a new owner.
    let done = again.settled(&resumable).await;
    assert_eq!(
        result_text(&done),
        "slow: back (finished by instance same, attempt 2)"
    );
    again.stop().await;
}

#[tokio::test]
async fn an_input_required_task_is_answered_after_its_server_died() {
    let (_root, dir) = store_dir();
    let a = Launch::new(&dir, "A").lease_ms(LEASE_MS).start().await;
    let id = a
        .task("ask", json!({"question": "Your name?", "resumable": true}))
        .await
        .task
        .task_id;
    a.poll_until(&id, |t| t.status() == TaskStatus::InputRequired)
        .await;
    a.kill_and_wait().await;

    // No instance runs it: B resumes nothing, and the claim grace keeps the
    // task waiting for one that does.
    let b = Launch::new(&dir, "B")
        .lease_ms(SURVIVOR_LEASE_MS)
        .env("TASKSTORE_MCP_RESUME", 0)
        .env("TASKSTORE_MCP_CLAIM_GRACE_MS", 600_000)
        .start()
        .await;
    let waiting = b.get(&id).await.unwrap();
    let TaskPayload::InputRequired { input_requests } = &waiting.payload else {
        panic!("expected input_required, got {waiting:?}")
    };
    assert_eq!(input_requests.keys().collect::<Vec<_>>(), ["answer"]);
    let answer = json!({"action": "accept", "content": {"name": "Ada"}});
    b.answer(&id, "answer", answer.clone()).await;
    let task = stored(&dir, &id).unwrap();
    assert_eq!(task["metadata"]["mcp.inputResponse.answer"], answer);
    assert_eq!(
        (task["status"].as_str(), task["owner"].as_str()),
        (Some("input_required"), Some("A"))
    );

    // C resumes it: the work asks again under the same key and gets the
    // answer given while no one ran it.
    let c = Launch::new(&dir, "C")
        .lease_ms(SURVIVOR_LEASE_MS)
        .env("TASKSTORE_MCP_CLAIM_GRACE_MS", 600_000)
        .start()
        .await;
    let done = b.settled(&id).await;
    assert_eq!(result_text(&done), format!("ask: {answer}"));
    assert!(c.stderr().contains(&format!("resumed task {id}")));
    let task = stored(&dir, &id).unwrap();
    assert_eq!(
        task["metadata"]["mcp.inputKeys"]["answer"]["response"],
        answer
    );
    b.stop().await;
    c.stop().await;
}

/// A resumable task whose server was killed, and which no instance
/// claimed within its claim grace, reads `failed` (orphaned) at the first
/// `tasks/get` past that grace, at an instance that reaps nothing of its
/// own in the test, by the rule the reap fails it by; an instance whose
/// grace (its store's setting) has not passed still reads it `working`,
/// waiting for a claim, until it is failed. Neither resumes any kind.
/// (It read `working` at both until the next reap, up to its interval.)
#[tokio::test]
async fn a_resumable_orphan_past_its_claim_grace_reads_failed_before_any_reap() {
    let (_root, dir) = store_dir();
    let a = Launch::new(&dir, "A").lease_ms(LEASE_MS).start().await;
    let id = a
        .call_as_task(json!({"ms": 600_000, "resumable": true}))
        .await
        .task
        .task_id;
    a.get(&id).await.unwrap();
    a.kill_and_wait().await;
    // Readers that resume nothing and reap nothing of their own for an
    // hour: what their reads answer is decided by the reads.
    let reader = |name: &'static str, grace_ms: u64| {
        Launch::new(&dir, name)
            .lease_ms(SURVIVOR_LEASE_MS)
            .env("TASKSTORE_MCP_RESUME", 0)
            .env("TASKSTORE_MCP_REAP_MS", 3_600_000)
            .env("TASKSTORE_MCP_CLAIM_GRACE_MS", grace_ms)
            .start()
    };
    let patient = reader("patient", 3_600_000).await;
    let prompt = reader("prompt", 200).await;
    // Lapsed (A's lease), by this host's clock, which the stores read.
    let lapses_at = stored(&dir, &id).unwrap()["leaseExpiresAt"]
        .as_str()
        .map(|at| time::OffsetDateTime::parse(at, &Rfc3339).unwrap())
        .unwrap();
    mcp_client::poll("A's lease lapsed", || {
        (time::OffsetDateTime::now_utc() > lapses_at).then_some(())
    })
    .await;
    let waiting = patient.get(&id).await.unwrap();
    assert_eq!(waiting.status(), TaskStatus::Working, "{waiting:?}");
    let failed = prompt.poll_until(&id, |t| t.status().is_terminal()).await;
    let TaskPayload::Failed { error } = &failed.payload else {
        panic!("expected failed, got {failed:?}")
    };
    assert_eq!(error["data"]["code"], "orphaned", "{error:?}");
    assert_eq!(error["data"]["reapedBy"], "prompt", "{error:?}");
    assert_eq!(error["data"]["owner"], "A", "{error:?}");
    // Stored so: every instance reads it failed now.
    assert_eq!(patient.get(&id).await.unwrap(), failed);
    patient.stop().await;
    prompt.stop().await;
}

/// The tests' raw read of a stored task ([`stored`]) finds a task that a
/// store finishes meanwhile, in one area or the other, every time, as the
/// store's own reads do: `active/` first, since a terminal move gives the
/// task its name in `done/` before it takes the one in `active/` away
/// (`src/file/read.rs`, `find`). It read `done/` first: a move between
/// its two reads hid the task from both, and a test reading a task that
/// another instance reaped meanwhile (the restarted server's above)
/// failed on `None`.
#[test]
fn the_raw_read_of_a_task_finds_it_while_it_moves_to_done() {
    use taskstore::{Durability, FileStore, NewTask, TaskStore};
    let (_root, dir) = store_dir();
    // Without fsyncs, a move's steps follow one another as closely as the
    // reads do.
    let store = std::sync::Arc::new(
        FileStore::builder(&dir)
            .durability(Durability::Eventual)
            .open()
            .unwrap(),
    );
    let (mut reads, mut missed) = (0u64, 0u64);
    for _ in 0..200 {
        let task = store.create(NewTask::new()).unwrap();
        let id = task.id.as_str().to_owned();
        let finishing = std::thread::spawn({
            let store = std::sync::Arc::clone(&store);
            move || assert!(store.complete(&task.id, json!(1)).unwrap().is_applied())
        });
        loop {
            reads += 1;
            match stored(&dir, &id) {
                Some(task) if task["status"] == "completed" => break,
                Some(_) => {}
                None => missed += 1,
            }
            // A completion that failed ends the thread without the task
            // completed: its panic is reported below, not waited for.
            if finishing.is_finished()
                && stored(&dir, &id).is_none_or(|t| t["status"] != "completed")
            {
                break;
            }
        }
        finishing.join().unwrap();
    }
    assert_eq!(
        missed, 0,
        "{missed} of {reads} reads found the task nowhere"
    );
}
