//! Tasks bound to the principal that created them, across real server
//! processes (`examples/mcp_server.rs` with `TASKSTORE_MCP_SOCKET`: each
//! session's connection names its principal, which the server puts in its
//! requests' extensions for the manager's `principal_of` hook), driven by
//! `rmcp`'s own client: another principal's `tasks/get`, `tasks/update`
//! and `tasks/cancel` are answered as for an unknown id, at the instance
//! that runs the task, at another sharing its store, and after a `SIGKILL`
//! and a resume; a request with no principal is refused, and so is one
//! whose principal has leading whitespace; a principal spelled otherwise
//! (case, Unicode form) is another; a task whose own file the server
//! cannot open is answered as an unknown id too. Bounded polls, no
//! timed assertion.
#![cfg(unix)]

#[path = "mcp_client/mod.rs"]
mod mcp_client;

use mcp_client::{Launch, Server, Session, none_reach, result_text, store_dir, stored};
use rmcp::ErrorData as McpError;
use rmcp::model::{ErrorCode, TaskStatus};
use serde_json::{Value, json};

/// A server over a new store (the temp directory holding both, and the
/// store's), and Alice's and Bob's sessions with it.
async fn alice_and_bob_at_one_server() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    Server,
    Session,
    Session,
) {
    alice_and_bob_at_one_server_as(None).await
}

/// [`alice_and_bob_at_one_server`], the server run as the user `uid` if
/// given (this process running as root), who is given the temp directory.
async fn alice_and_bob_at_one_server_as(
    uid: Option<u32>,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    Server,
    Session,
    Session,
) {
    let (root, dir) = store_dir();
    let mut launch = Launch::new(&dir, "A").socket(&root.path().join("a.sock"));
    if let Some(uid) = uid {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&dir).unwrap();
        for path in [root.path(), &dir] {
            std::os::unix::fs::chown(path, Some(uid), None).unwrap();
        }
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        launch = launch.run_as(uid);
    }
    let a = launch.start().await;
    let (alice, bob) = (a.connect(Some("alice")).await, a.connect(Some("bob")).await);
    (root, dir, a, alice, bob)
}

/// A task of `session`'s that asks for input, once it does: its id.
async fn asking(session: &Session) -> String {
    let created = session.task("ask", json!({"question": "name?"})).await;
    let id = created.task.task_id.to_string();
    session
        .poll_until(&id, |t| t.status() == TaskStatus::InputRequired)
        .await;
    id
}

/// Asserts that `refused` is the refusal of a request with no principal.
fn unauthenticated(refused: Result<(), McpError>, operation: &str, id: &str) {
    let error = refused.expect_err("a request with no principal answered");
    assert_eq!(error.code, ErrorCode::INVALID_REQUEST, "{error:?}");
    assert!(
        error
            .message
            .starts_with(&format!("{operation} of task {id} refused: ")),
        "{error:?}"
    );
    assert_eq!(error.data.expect("data")["code"], "unauthenticated");
}

/// One server, two principals' sessions: Bob cannot read, answer or
/// cancel Alice's task, which runs in that server (its owner's path), and
/// is told exactly what an unknown id is told; a session that named no
/// principal, and the server's stdio client, are refused; Alice reads,
/// answers and finishes it.
#[tokio::test]
async fn one_server_answers_another_principals_requests_as_for_an_unknown_task() {
    let (_root, dir, a, alice, bob) = alice_and_bob_at_one_server().await;
    let id = &asking(&alice).await;

    none_reach(&bob, id).await;
    let task = stored(&dir, id).expect("stored");
    assert_eq!(task["metadata"]["mcp.principal"], "alice");
    assert_eq!(task["status"], "input_required");
    assert_eq!(task["metadata"].get("mcp.cancelRequested"), None);
    assert_eq!(task["metadata"].get("mcp.inputResponse.answer"), None);

    let anonymous = a.connect(None).await;
    for session in [&anonymous, &a] {
        unauthenticated(session.get(id).await.map(drop), "tasks/get", id);
        unauthenticated(session.cancel(id).await, "tasks/cancel", id);
        let answer = session.update(id, "answer", json!("?")).await;
        unauthenticated(answer, "tasks/update", id);
    }

    let answer = json!({"action": "accept", "content": {"name": "Alice"}});
    alice.answer(id, "answer", answer.clone()).await;
    let done = alice.settled(id).await;
    assert_eq!(result_text(&done), format!("ask: {answer} (for alice)"));
    none_reach(&bob, id).await;
    alice
        .cancel(id)
        .await
        .expect("Alice cancels her finished task");
    for session in [alice, bob, anonymous] {
        session.close().await;
    }
    a.stop().await;
}

/// Two instances over one store: Alice's task, made at A, is unknown to
/// Bob at B, and Alice reaches it at B; A is killed, B claims and resumes
/// the task, which is still Alice's alone at its new owner: Bob's answer
/// there is answered as for an unknown id, Alice's finishes it.
#[tokio::test]
async fn a_task_stays_its_principals_at_every_instance_and_through_a_resume() {
    let (root, dir) = store_dir();
    let a = Launch::new(&dir, "A")
        .socket(&root.path().join("a.sock"))
        .lease_ms(1_000)
        .start()
        .await;
    let b = Launch::new(&dir, "B")
        .socket(&root.path().join("b.sock"))
        .lease_ms(10_000)
        .start()
        .await;
    let alice_at_a = a.connect(Some("alice")).await;
    let (alice, bob) = (b.connect(Some("alice")).await, b.connect(Some("bob")).await);
    let args = json!({"question": "name?", "resumable": true});
    let created = alice_at_a.task("ask", args).await;
    let id = created.task.task_id.as_str();
    alice
        .poll_until(id, |t| t.status() == TaskStatus::InputRequired)
        .await;
    none_reach(&bob, id).await;

    alice_at_a.close().await;
    a.kill_and_wait().await;
    // B claims the task (its poll by Alice wakes B's claim) and runs it
    // again; it asks again under the same key.
    let resumed = |t: &Value| t["epoch"] == 2 && t["status"] == "input_required";
    let claimed = poll_stored(&alice, &dir, id, resumed).await;
    assert_eq!(
        (&claimed["owner"], &claimed["metadata"]["mcp.principal"]),
        (&json!("B"), &Value::from("alice"))
    );
    none_reach(&bob, id).await;
    let answer = json!({"action": "accept", "content": {"name": "Alice"}});
    alice.answer(id, "answer", answer.clone()).await;
    let done = alice.settled(id).await;
    // The resumed run knows whom it acts for (`TaskContext::principal`).
    assert_eq!(result_text(&done), format!("ask: {answer} (for alice)"));
    assert!(b.stderr().contains(&format!("resumed task {id}")));
    none_reach(&bob, id).await;
    alice.close().await;
    bob.close().await;
    b.stop().await;
}

/// Principals are compared byte for byte, from the session's token
/// through the manager's hook to the task's binding: sessions naming
/// "Alice", "ALICE" or a fullwidth "ａlice" are not Alice's ("alice"), nor
/// is one naming a decomposed "é" a composed one's; each is answered as
/// for an unknown id, and the task stays as it was. (With
/// `protocol::bound_to` comparing case-blind, "Alice" read it.)
#[tokio::test]
async fn a_principal_spelled_otherwise_is_another_principal() {
    let (root, dir) = store_dir();
    let a = Launch::new(&dir, "A")
        .socket(&root.path().join("a.sock"))
        .start()
        .await;
    for (owner, others) in [
        ("alice", &["Alice", "ALICE", "\u{ff41}lice"][..]),
        ("ren\u{e9}", &["rene\u{301}"][..]),
    ] {
        let session = a.connect(Some(owner)).await;
        let created = session.task("ask", json!({"question": "name?"})).await;
        let id = created.task.task_id.as_str();
        session
            .poll_until(id, |t| t.status() == TaskStatus::InputRequired)
            .await;
        for other in others {
            let other = a.connect(Some(other)).await;
            none_reach(&other, id).await;
            other.close().await;
        }
        let task = stored(&dir, id).expect("stored");
        assert_eq!(task["metadata"]["mcp.principal"], owner);
        assert_eq!(task["status"], "input_required");
        assert_eq!(task["metadata"].get("mcp.cancelRequested"), None);
        session.get(id).await.expect("the owner's own task");
        session.close().await;
    }
    a.stop().await;
}

/// A session whose token has leading whitespace (" alice": the example
/// trims the line's end, so only leading whitespace reaches its hook) acts
/// for no principal the manager takes: its `tools/call` is refused and
/// makes no task, and its `tasks/get`, `tasks/update` and `tasks/cancel`
/// of Alice's task are refused, each `-32600`, `unauthenticated`, through
/// the server's real `principal_of` hook; Alice's task is as it was. (" alice"
/// was a principal of its own: its task was made, and Alice's was an
/// unknown id to it.)
#[tokio::test]
async fn a_principal_with_leading_whitespace_is_refused() {
    let (root, dir) = store_dir();
    let a = Launch::new(&dir, "A")
        .socket(&root.path().join("a.sock"))
        .start()
        .await;
    let alice = a.connect(Some("alice")).await;
    let created = alice.task("ask", json!({"question": "name?"})).await;
    let id = created.task.task_id.as_str();
    alice
        .poll_until(id, |t| t.status() == TaskStatus::InputRequired)
        .await;
    let padded = a.connect(Some(" alice")).await;
    let made = padded.call_tool("ask", json!({"question": "name?"})).await;
    match made {
        Err(rmcp::ServiceError::McpError(error)) => {
            assert_eq!(error.code, ErrorCode::INVALID_REQUEST, "{error:?}");
            assert!(error.message.starts_with("spawn refused: "), "{error:?}");
            assert_eq!(error.data.expect("data")["code"], "unauthenticated");
        }
        other => panic!("a tools/call for \" alice\": {other:?}"),
    }
    unauthenticated(padded.get(id).await.map(drop), "tasks/get", id);
    unauthenticated(padded.cancel(id).await, "tasks/cancel", id);
    let answer = padded.update(id, "answer", json!("?")).await;
    unauthenticated(answer, "tasks/update", id);
    let tasks = std::fs::read_dir(dir.join("active")).unwrap().count();
    assert_eq!(tasks, 1, "Alice's task alone");
    let task = stored(&dir, id).expect("stored");
    assert_eq!(task["status"], "input_required");
    assert_eq!(task["metadata"].get("mcp.cancelRequested"), None);
    for session in [alice, padded] {
        session.close().await;
    }
    a.stop().await;
}

/// A finished task of Alice's whose file the server cannot read as one: a
/// socket where the file was (`open` refuses it, `ENXIO`), which the store
/// takes for a file that is no task file, as it takes a FIFO. Through
/// `rmcp`'s client, Bob's and Alice's `tasks/get`, `tasks/update` and
/// `tasks/cancel` of it are each answered exactly as for an unknown id,
/// and the server logs the cause at warn with the task id; Alice's other
/// task reads as before. (Each was answered `-32603` with the cause,
/// "unable to open …/done/<id>.json", where an unknown id gets `-32602`:
/// any caller learned that the id names a stored task. An I/O error of a
/// task's own file is answered so too:
/// `a_task_whose_own_file_the_server_may_not_open_is_answered_as_an_unknown_task`.)
#[tokio::test]
async fn a_task_whose_file_is_no_task_file_is_answered_as_an_unknown_task() {
    answered_as_unknown_once_spoiled(None, &["is not a regular file"], |file| {
        std::fs::remove_file(file).unwrap();
        // The socket's file stays when its listener closes.
        drop(std::os::unix::net::UnixListener::bind(file).unwrap());
    })
    .await;
}

/// A finished task of Alice's whose own file the server may not open: its
/// mode made 000 under a server running as a user (as `nobody` when the
/// tests run as root, whom modes do not stop), an I/O error (`EACCES`) of
/// that file alone while the store reads every other id. Through
/// `rmcp`'s client, Bob's and Alice's `tasks/get`, `tasks/update` and
/// `tasks/cancel` of it are each answered exactly as for an unknown id,
/// and the server logs the cause at warn with the task id; Alice's other
/// task reads as before. (Each was answered `-32603` with the cause,
/// "unable to open …/done/<id>.json: Permission denied", where an unknown
/// id gets `-32602`.)
#[tokio::test]
async fn a_task_whose_own_file_the_server_may_not_open_is_answered_as_an_unknown_task() {
    let id_of = |args: &[&str]| -> u32 {
        let out = std::process::Command::new("id")
            .args(args)
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let nobody = (id_of(&["-u"]) == 0).then(|| id_of(&["-u", "nobody"]));
    answered_as_unknown_once_spoiled(nobody, &["unable to open ", "Permission denied"], |file| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o000)).unwrap();
    })
    .await;
}

/// Alice's two finished tasks at a server (run as `uid` if given), the
/// first's file in `done/` then spoiled by `spoil`: Bob's and Alice's
/// `tasks/get`, `tasks/update` and `tasks/cancel` of it are each answered
/// exactly as for an unknown id, the server logs each at warn with the
/// task id and a cause that says each of `cause`, and Alice's other task
/// reads as before.
async fn answered_as_unknown_once_spoiled(
    uid: Option<u32>,
    cause: &[&str],
    spoil: impl FnOnce(&std::path::Path),
) {
    let (_root, dir, a, alice, bob) = alice_and_bob_at_one_server_as(uid).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let id = asking(&alice).await;
        alice.answer(&id, "answer", json!("?")).await;
        alice.settled(&id).await;
        ids.push(id);
    }
    let (id, other) = (ids[0].as_str(), ids[1].as_str());
    // Its terminal move done: its one file is in done/.
    let file = dir.join("done").join(format!("{id}.json"));
    mcp_client::poll("the task's move into done/", || {
        let moved = file.is_file() && !dir.join("active").join(format!("{id}.json")).exists();
        moved.then_some(())
    })
    .await;
    spoil(&file);

    for session in [&bob, &alice] {
        none_reach(session, id).await;
    }
    let log = a.wait_for_log("cannot be read").await;
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("cannot be read"))
        .collect();
    assert_eq!(warned.len(), 6, "{log}");
    for line in warned {
        assert!(line.starts_with("mcp_server: WARN"), "{line}");
        assert!(line.contains(&format!("task={id}")), "{line}");
        for said in cause {
            assert!(line.contains(said), "{line}");
        }
    }
    let read = alice.get(other).await.expect("Alice's other task");
    assert_eq!(read.status(), TaskStatus::Completed);
    for session in [alice, bob] {
        session.close().await;
    }
    a.stop().await;
}

/// Polls `tasks/get` of task `id` as `session` (which wakes the claim of
/// an orphan at an instance that resumes its kind) until the task as stored
/// in `dir` holds `check`; the stored task.
async fn poll_stored(
    session: &Session,
    dir: &std::path::Path,
    id: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let start = std::time::Instant::now();
    loop {
        session.get(id).await.expect("tasks/get answers");
        if let Some(task) = stored(dir, id).filter(|t| check(t)) {
            return task;
        }
        assert!(
            start.elapsed() < mcp_client::HANG,
            "stored task {id} never matched: {:?}",
            stored(dir, id)
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
