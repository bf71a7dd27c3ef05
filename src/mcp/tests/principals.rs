//! Tasks bound to principals (`ManagerOptions::principal_of`): a task is
//! reached only by requests acting for the principal that created it, at
//! every instance, the owner's included, and anyone else is answered
//! exactly as for an unknown id.

use rmcp::ErrorData as McpError;
use rmcp::model::{ErrorCode, TaskPayload, TaskStatus};
use serde_json::json;

use super::{elicitation, eventually, fast, settled, settled_and_forgotten, text};
use crate::mcp::*;
use crate::{FileStore, TaskId, TaskStore};

/// An instance over the store in `dir` that binds tasks to principals (the
/// tests name them with `as_principal`; the hook maps no request).
fn bound(dir: &std::path::Path, name: &str) -> DurableTaskManager<FileStore> {
    let store = FileStore::builder(dir).instance_id(name).open().unwrap();
    DurableTaskManager::with_options(std::sync::Arc::new(store), fast().principal_of(|_| None))
}

/// Asserts that `error`, for task `id`, is the error `unknown` is for the
/// id `unknown_id`, which names no task: the same code, message (but for
/// the id) and data.
fn as_unknown(error: &McpError, id: &str, unknown: &McpError, unknown_id: &str) {
    assert_eq!(error.code, unknown.code, "{error:?}");
    assert_eq!(
        error.message.replace(id, "<id>"),
        unknown.message.replace(unknown_id, "<id>"),
    );
    assert_eq!(error.data, unknown.data);
}

/// Asserts that `m`'s `tasks/get`, `tasks/cancel` and `tasks/update` of
/// task `id` are each answered as for an id that names no task
/// ([`as_unknown`]); the update answers key `k` with `answer`.
async fn each_answered_as_unknown(m: &DurableTaskManager<FileStore>, id: &str, answer: &str) {
    let nobody = TaskId::new().to_string();
    let unknown = m.get_task(&nobody).await.unwrap_err();
    as_unknown(&m.get_task(id).await.unwrap_err(), id, &unknown, &nobody);
    let unknown = m.cancel_task(&nobody).await.unwrap_err();
    as_unknown(&m.cancel_task(id).await.unwrap_err(), id, &unknown, &nobody);
    let answer = || [("k".to_owned(), json!(answer))];
    let unknown = m.update_task(&nobody, answer()).await.unwrap_err();
    let error = m.update_task(id, answer()).await.unwrap_err();
    as_unknown(&error, id, &unknown, &nobody);
}

/// A task spawned by `m` that completes at once, once its run is over
/// here ([`settled_and_forgotten`]): its id.
async fn finished(m: &DurableTaskManager<FileStore>) -> String {
    let id = m
        .spawn(TaskOptions::new(), |_| Box::pin(async { Ok(text("done")) }))
        .await
        .unwrap()
        .task_id;
    settled_and_forgotten(m, &id).await;
    id
}

/// A task that asks for input under key `k`, then completes with the
/// answer, spawned by `m`.
async fn asking(m: &DurableTaskManager<FileStore>) -> String {
    m.spawn(TaskOptions::new(), |ctx| {
        Box::pin(async move {
            let answer = ctx.request_input("k", elicitation("?")).await?;
            Ok(text(&answer.to_string()))
        })
    })
    .await
    .unwrap()
    .task_id
}

/// Alice's task, asked at its owner and at a peer by Bob: `tasks/get`,
/// `tasks/update` and `tasks/cancel` are each answered as for an id that
/// names no task, and change nothing; Alice then reads, answers and
/// finishes it from either instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_principals_requests_are_answered_as_for_an_unknown_task() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (bound(dir.path(), "a"), bound(dir.path(), "b"));
    let id = asking(&a.as_principal("alice")).await;
    eventually(|| async {
        let task = b.as_principal("alice").get_task(&id).await.unwrap();
        (task.status() == TaskStatus::InputRequired).then_some(())
    })
    .await;
    for instance in [&a, &b] {
        each_answered_as_unknown(&instance.as_principal("bob"), &id, "bob's").await;
    }
    // Nothing of Bob's reached the task.
    let stored = a
        .store()
        .get(&TaskId::parse(&id).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, crate::TaskStatus::InputRequired);
    assert_eq!(stored.metadata.get(CANCEL_REQUESTED_KEY), None);
    assert_eq!(
        stored
            .metadata
            .get(&format!("{INPUT_RESPONSE_KEY_PREFIX}k")),
        None
    );
    assert_eq!(stored.metadata.get(PRINCIPAL_KEY), Some(&json!("alice")));
    // Alice answers at the peer, and reads the result at either.
    b.as_principal("alice")
        .update_task(&id, [("k".to_owned(), json!("alice's"))])
        .await
        .unwrap();
    let done = settled(&a.as_principal("alice"), &id).await;
    let TaskPayload::Completed { result } = &done.payload else {
        panic!("not completed: {done:?}")
    };
    assert_eq!(result["content"][0]["text"], "\"alice's\"");
    assert_eq!(b.as_principal("alice").get_task(&id).await.unwrap(), done);
}

/// A manager that binds tasks to principals refuses a request that acts
/// for none, naming the operation and the task, with `-32600` and
/// `data.code = "unauthenticated"`; it makes no task for one either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_no_principal_is_refused_where_tasks_are_bound() {
    let dir = tempfile::tempdir().unwrap();
    let a = bound(dir.path(), "a");
    let id = asking(&a.as_principal("alice")).await;
    let refusals: [(&str, Result<(), McpError>); 3] = [
        ("tasks/get", a.get_task(&id).await.map(drop)),
        ("tasks/cancel", a.as_principal("").cancel_task(&id).await),
        (
            "tasks/update",
            a.update_task(&id, [("k".to_owned(), json!(1))]).await,
        ),
    ];
    for (operation, refused) in refusals {
        let error = refused.expect_err(operation);
        assert_eq!(error.code, ErrorCode::INVALID_REQUEST, "{error:?}");
        assert!(
            error
                .message
                .starts_with(&format!("{operation} of task {id} refused: ")),
            "{error:?}"
        );
        let data = error.data.expect("data");
        assert_eq!(
            (&data["code"], &data["operation"], &data["taskId"]),
            (&json!("unauthenticated"), &json!(operation), &json!(id))
        );
    }
    let spawned = a
        .spawn(TaskOptions::new(), |_| Box::pin(async { Ok(text("no")) }))
        .await;
    let error = spawned.expect_err("a task made for no principal");
    assert_eq!(error.code, ErrorCode::INVALID_REQUEST);
    assert_eq!(error.data.expect("data")["operation"], "spawn");
    let active = a.store().list(&crate::ListQuery::active()).unwrap();
    assert_eq!(active.tasks.len(), 1, "only Alice's");
}

/// A task made without a principal (by an instance without the hook) is no
/// task to a principal's request; a task bound to a principal is no task to
/// an instance without the hook, whose requests act for none. Each is
/// answered as for an unknown id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bound_and_unbound_tasks_never_reach_each_others_requests() {
    let dir = tempfile::tempdir().unwrap();
    let hooked = bound(dir.path(), "hooked");
    let plain = super::instance(dir.path(), "plain");
    let unbound = asking(&plain).await;
    let alices = asking(&hooked.as_principal("alice")).await;
    let nobody = TaskId::new().to_string();

    let alice = hooked.as_principal("alice");
    let unknown = alice.get_task(&nobody).await.unwrap_err();
    let error = alice.get_task(&unbound).await.unwrap_err();
    as_unknown(&error, &unbound, &unknown, &nobody);
    let unknown = plain.cancel_task(&nobody).await.unwrap_err();
    let error = plain.cancel_task(&alices).await.unwrap_err();
    as_unknown(&error, &alices, &unknown, &nobody);

    // Each reaches its own.
    assert!(plain.get_task(&unbound).await.is_ok());
    assert!(alice.get_task(&alices).await.is_ok());
}

/// A principal over `MAX_PRINCIPAL_BYTES` is refused with `-32600`,
/// naming the operation and the limit, and no task is made for it; one at
/// the limit binds its task. (Without the bound, a task was made bound to
/// the whole principal, whatever its length, or, past the payload cap,
/// refused by the store as if the tool call's params were too large.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_over_the_bound_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let a = bound(dir.path(), "a");
    let long = a.as_principal("p".repeat(MAX_PRINCIPAL_BYTES + 1));
    let spawned = long
        .spawn(TaskOptions::new(), |_| Box::pin(async { Ok(text("no")) }))
        .await;
    let error = spawned.expect_err("a task bound to an over-long principal");
    assert_eq!(error.code, ErrorCode::INVALID_REQUEST, "{error:?}");
    let over = MAX_PRINCIPAL_BYTES + 1;
    assert_eq!(
        error.message,
        format!(
            "spawn refused: the request's principal is {over} bytes, over the \
             {MAX_PRINCIPAL_BYTES} a task is bound to"
        )
    );
    assert_eq!(error.data.expect("data")["code"], "principalTooLong");
    let active = a.store().list(&crate::ListQuery::active()).unwrap();
    assert!(active.tasks.is_empty(), "{:?}", active.tasks);

    let at_bound = a.as_principal("p".repeat(MAX_PRINCIPAL_BYTES));
    let id = asking(&at_bound).await;
    assert!(at_bound.get_task(&id).await.is_ok());
    let error = long
        .get_task(&id)
        .await
        .expect_err("an over-long principal");
    assert_eq!(error.data.expect("data")["code"], "principalTooLong");
}

/// A principal is compared byte for byte: one that differs from the
/// task's only by case, or by its Unicode form (decomposed for composed,
/// fullwidth for ASCII) is another principal, answered as for an unknown
/// id (one with a leading or trailing space is refused:
/// `a_principal_of_or_with_surrounding_whitespace_is_refused`). The manager folds, trims and
/// normalizes nothing: the host's hook is the one judge of who a request
/// acts for, and a token's subject is compared as issued, with no
/// transformation; a manager that folded two
/// spellings together would let whoever holds the second reach the
/// first's tasks. (With `bound_to` comparing case-blind and trimmed,
/// "Alice" read the task of "alice".)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principals_are_compared_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let a = bound(dir.path(), "a");
    let nobody = TaskId::new().to_string();
    let spellings: [(&str, &[&str]); 2] = [
        ("alice", &["Alice", "ALICE", "al ice", "\u{ff41}lice"]),
        // "é" composed (NFC) and decomposed (NFD).
        ("ren\u{e9}", &["rene\u{301}", "REN\u{c9}"]),
    ];
    for (owner, others) in spellings {
        let id = asking(&a.as_principal(owner)).await;
        for other in others {
            let other = a.as_principal(*other);
            let unknown = other.get_task(&nobody).await.unwrap_err();
            let error = other.get_task(&id).await.unwrap_err();
            as_unknown(&error, &id, &unknown, &nobody);
            let unknown = other.cancel_task(&nobody).await.unwrap_err();
            let error = other.cancel_task(&id).await.unwrap_err();
            as_unknown(&error, &id, &unknown, &nobody);
        }
        a.as_principal(owner)
            .get_task(&id)
            .await
            .expect("its own task");
        let stored = a.store().get(&TaskId::parse(&id).unwrap()).unwrap();
        let stored = stored.expect("stored");
        assert_eq!(stored.metadata.get(PRINCIPAL_KEY), Some(&json!(owner)));
        assert_eq!(stored.metadata.get(CANCEL_REQUESTED_KEY), None);
    }
}

/// A host's own write through the store the manager uses cannot rebind
/// Alice's task to Bob, unbind it (`null`), nor forge a task bound to
/// her: the store refuses every host write of an `mcp.` key
/// (`Error::ReservedMetadata`, naming the operation, the task and the
/// key), and the task stays Alice's alone. The manager's own writes of its
/// keys (the binding at create, the cancel request) go on. (The host's
/// update was applied: Bob then read and cancelled Alice's task, and a
/// task unbound by `null` reached no principal's request.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosts_write_through_the_store_cannot_rebind_a_task() {
    let dir = tempfile::tempdir().unwrap();
    let a = bound(dir.path(), "a");
    let id = asking(&a.as_principal("alice")).await;
    let task_id = TaskId::parse(&id).unwrap();
    let store = a.store();
    let refused = |result: crate::Result<()>, operation: &str, named: &TaskId| match result {
        Err(crate::Error::ReservedMetadata { op, id, key }) => {
            assert_eq!((op, &id, key.as_str()), (operation, named, PRINCIPAL_KEY))
        }
        other => panic!("a host's {operation} of {PRINCIPAL_KEY}: {other:?}"),
    };
    for value in [json!("bob"), serde_json::Value::Null] {
        let rebind = crate::TaskUpdate::new().metadata(PRINCIPAL_KEY, value);
        refused(store.update(&task_id, rebind).map(drop), "update", &task_id);
    }
    let forged = TaskId::new();
    let forge = crate::NewTask::new()
        .id(forged.clone())
        .metadata(PRINCIPAL_KEY, "alice");
    refused(store.create(forge).map(drop), "create", &forged);
    assert_eq!(store.get(&forged).unwrap(), None);

    let nobody = TaskId::new().to_string();
    let bob = a.as_principal("bob");
    let unknown = bob.get_task(&nobody).await.unwrap_err();
    as_unknown(
        &bob.get_task(&id).await.unwrap_err(),
        &id,
        &unknown,
        &nobody,
    );
    let stored = store.get(&task_id).unwrap().expect("stored");
    assert_eq!(stored.metadata.get(PRINCIPAL_KEY), Some(&json!("alice")));
    // The manager's own write of its key, through the same store.
    let alice = a.as_principal("alice");
    alice.cancel_task(&id).await.unwrap();
    let done = settled(&alice, &id).await;
    assert_eq!(done.status(), TaskStatus::Cancelled);
    let stored = store.get(&task_id).unwrap().expect("stored");
    assert_eq!(
        stored.metadata.get(CANCEL_REQUESTED_KEY),
        Some(&json!(true))
    );
    assert_eq!(stored.metadata.get(PRINCIPAL_KEY), Some(&json!("alice")));
}

/// A stored task that cannot be read (its file spoiled) names no
/// principal anyone can read: where tasks are bound to principals, a
/// request for its id is answered exactly as for an unknown id, whoever
/// asks (its own principal too: whose it is cannot be read), and the cause
/// is logged at warn with the task id, for the operator. (It was answered
/// `-32603` with the cause, "corrupt task file …", before the binding was
/// checked: any caller learned that the id names a stored task.)
#[tokio::test]
async fn a_task_that_cannot_be_read_is_answered_as_an_unknown_task() {
    let logged = super::logged::Logged::default();
    let _log = tracing::subscriber::set_default(logged.clone());
    let dir = tempfile::tempdir().unwrap();
    let a = bound(dir.path(), "a");
    let alice = a.as_principal("alice");
    let id = finished(&alice).await;
    let file = dir.path().join("done").join(format!("{id}.json"));
    assert!(file.is_file(), "{}", file.display());
    std::fs::write(&file, b"{\"format\": 1, \"task\": ").unwrap();
    for principal in ["bob", "alice"] {
        each_answered_as_unknown(&a.as_principal(principal), &id, "?").await;
    }
    let warned = logged.warnings_of("cannot be read");
    assert_eq!(warned.len(), 6, "{:?}", logged.warnings());
    for warning in warned {
        assert_eq!(warning.field("task"), Some(id.as_str()), "{warning:?}");
        let error = warning.field("error").expect("the cause");
        assert!(error.starts_with("corrupt task file "), "{warning:?}");
    }
    // The file is as it was: nothing was written over it.
    assert_eq!(std::fs::read(&file).unwrap(), b"{\"format\": 1, \"task\": ");
}

/// A stored task whose own file the store cannot read (an I/O error,
/// `EIO`, where its file is opened or read: a bad block under that file
/// alone) is answered, where tasks are bound to principals, exactly as for
/// an unknown id, whoever asks, and the cause is logged at warn with the
/// task id: the store reads an id that names no task, so only a stored
/// task answers so. A failure of the store as a whole (every call through
/// the file system failing, the task's file among them) still reaches the
/// client as `-32603` with its cause, for a stored task's id and an unknown
/// one alike. (The task's own failure was answered `-32603` with the cause,
/// "unable to open …/done/<id>.json", where an unknown id gets `-32602`:
/// any caller learned that the id names a stored task.)
#[tokio::test]
async fn a_task_whose_own_file_fails_to_read_is_answered_as_an_unknown_task() {
    use crate::{Fault, FaultInjector, FaultMode, FsOp};
    let logged = super::logged::Logged::default();
    let _log = tracing::subscriber::set_default(logged.clone());
    let dir = tempfile::tempdir().unwrap();
    let faults = FaultInjector::new();
    let store = FileStore::builder(dir.path())
        .instance_id("a")
        .fault_injector(faults.clone())
        .open()
        .unwrap();
    let a =
        DurableTaskManager::with_options(std::sync::Arc::new(store), fast().principal_of(|_| None));
    let alice = a.as_principal("alice");
    let id = finished(&alice).await;
    // Its terminal move done: its one file is in done/ (a terminal copy
    // still in active/ would be read first).
    let file = dir.path().join("done").join(format!("{id}.json"));
    let running = dir.path().join("active").join(format!("{id}.json"));
    eventually(|| async { (file.is_file() && !running.exists()).then_some(()) }).await;
    for (op, failed) in [
        (FsOp::Open, "unable to open "),
        (FsOp::Read, "unable to read "),
    ] {
        faults.fail_at(op, &file, Fault::Eio);
        for principal in ["bob", "alice"] {
            each_answered_as_unknown(&a.as_principal(principal), &id, "?").await;
        }
        faults.disarm();
        // Six warnings for this fault, each naming the task and its cause.
        let warned: Vec<_> = logged
            .warnings_of("cannot be read")
            .into_iter()
            .filter(|w| w.field("error").is_some_and(|e| e.starts_with(failed)))
            .collect();
        assert_eq!(warned.len(), 6, "{op:?}: {:?}", logged.warnings());
        for warning in warned {
            assert_eq!(warning.field("task"), Some(id.as_str()), "{warning:?}");
            let error = warning.field("error").expect("the cause");
            assert!(error.contains(&format!("{id}.json")), "{warning:?}");
        }
        // The task is as it was, and Alice reads it again.
        assert_eq!(
            alice.get_task(&id).await.unwrap().status(),
            TaskStatus::Completed
        );
    }
    // The store as a whole fails: every request hears of it, for a stored
    // task's id and for an unknown one.
    faults.fail_nth(1, Fault::Eio, FaultMode::Sticky);
    let nobody = TaskId::new().to_string();
    for asked in [&id, &nobody] {
        let error = alice.get_task(asked).await.unwrap_err();
        assert_eq!(error.code, ErrorCode::INTERNAL_ERROR, "{asked}: {error:?}");
        let cause = &error.data.expect("data")["cause"];
        assert!(
            cause
                .as_str()
                .is_some_and(|c| c.contains("Input/output error")),
            "{cause}"
        );
    }
    faults.disarm();
}

/// A principal of whitespace alone names no one, as an empty one: a
/// request acting for it is refused with `-32600`, `data.code =
/// "unauthenticated"`, naming the operation (and the task). So is one
/// with leading or trailing whitespace (Unicode's: a space, a tab, a line
/// break, a no-break or an ideographic space), which the hook gave
/// unspelled: the manager compares principals byte for byte and trims
/// nothing, so "alice " would be a principal of its own that prints as
/// Alice's. Whitespace inside a principal is its own. No task is made for
/// any of them. (Each was a principal: "   " bound tasks that every
/// request mapped to blanks reached, and " alice" tasks of its own.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_of_or_with_surrounding_whitespace_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = bound(dir.path(), "a");
    let id = asking(&a.as_principal("alice")).await;
    let refused = |result: Result<(), McpError>, operation: &str, task: Option<&str>, why: &str| {
        let error = result.expect_err(operation);
        assert!(error.message.contains(why), "{error:?}");
        assert_eq!(error.code, ErrorCode::INVALID_REQUEST, "{error:?}");
        let what = match task {
            Some(id) => format!("{operation} of task {id}"),
            None => operation.to_owned(),
        };
        assert!(
            error.message.starts_with(&format!("{what} refused: ")),
            "{error:?}"
        );
        let data = error.data.expect("data");
        assert_eq!(
            (&data["code"], &data["operation"]),
            (&json!("unauthenticated"), &json!(operation)),
            "{data}"
        );
    };
    for principal in [
        " ",
        "   ",
        "\t",
        "\n",
        "\u{a0}",
        "\u{3000}",
        " \u{2003}\r\n",
        " alice",
        "alice ",
        "alice\n",
        "\talice",
        "alice\u{a0}",
        "\u{3000}alice",
    ] {
        // Whitespace alone is no principal; around one, a refusal that
        // says so.
        let why = if principal.trim().is_empty() {
            "the request acts for no principal"
        } else {
            "leading or trailing whitespace"
        };
        let m = a.as_principal(principal);
        let spawned = m
            .spawn(TaskOptions::new(), |_| Box::pin(async { Ok(text("no")) }))
            .await;
        refused(spawned.map(drop), "spawn", None, why);
        refused(m.get_task(&id).await.map(drop), "tasks/get", Some(&id), why);
        refused(m.cancel_task(&id).await, "tasks/cancel", Some(&id), why);
        let answer = [("k".to_owned(), json!("?"))];
        let updated = m.update_task(&id, answer).await;
        refused(updated, "tasks/update", Some(&id), why);
    }
    let active = a.store().list(&crate::ListQuery::active()).unwrap();
    assert_eq!(active.tasks.len(), 1, "only Alice's: {:?}", active.tasks);
    // Whitespace inside is the principal's own.
    let inner = a.as_principal("alice smith");
    let theirs = asking(&inner).await;
    assert!(inner.get_task(&theirs).await.is_ok());
    let stored = a.store().get(&TaskId::parse(&theirs).unwrap()).unwrap();
    let stored = stored.expect("stored");
    assert_eq!(
        stored.metadata.get(PRINCIPAL_KEY),
        Some(&json!("alice smith"))
    );
    // Without the hook, whitespace alone is none, as an empty principal:
    // a task made so is bound to no one, and reaches a request for none.
    let plain = super::instance(dir.path(), "plain");
    let blank = asking(&plain.as_principal(" \t")).await;
    let stored = a.store().get(&TaskId::parse(&blank).unwrap()).unwrap();
    assert_eq!(stored.expect("stored").metadata.get(PRINCIPAL_KEY), None);
    assert!(plain.get_task(&blank).await.is_ok());
}
