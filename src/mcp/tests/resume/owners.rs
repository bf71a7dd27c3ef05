//! A dead owner's task claimed and resumed from its checkpoint by another
//! instance: the old owner fenced, input required surviving its owner, the
//! answers replayed, a stored cancel known at once, a resume handler's
//! panic failing its task alone.

use std::sync::Arc;

use rmcp::model::{ErrorCode, TaskPayload, TaskStatus};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::{LEASE, clock, frozen, live, seen, stored};
use crate::mcp::tests::{elicitation, eventually, settled, text};
use crate::mcp::{INPUT_KEYS_KEY, TaskContext, TaskExit};
use crate::{TaskId, TaskStore};

#[tokio::test]
async fn a_dead_owners_task_is_claimed_and_resumed_from_its_checkpoint_and_the_old_owner_is_fenced()
{
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let a = frozen(dir.path(), &clock, "a");
    let (saved_tx, saved_rx) = oneshot::channel();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let (late_tx, mut late_rx) = mpsc::unbounded_channel();
    let seed = a
        .spawn_resumable(
            "count",
            json!({"to": 5}),
            crate::mcp::TaskOptions::new(),
            move |ctx| {
                Box::pin(async move {
                    assert_eq!(seen(&ctx)["attempt"], 1);
                    ctx.checkpoint(json!({"at": 2})).await?;
                    let _ = saved_tx.send(());
                    let _ = go_rx.await;
                    // Woken after another instance took the task over: this
                    // write is refused, and the outcome too.
                    let _ = late_tx.send(ctx.checkpoint(json!({"at": 99})).await);
                    Ok(text("from a"))
                })
            },
        )
        .await
        .unwrap();
    saved_rx.await.unwrap();
    assert_eq!(stored(&a, &seed.task_id).epoch, 1);

    let b = live(dir.path(), &clock, "b");
    let (resumed_tx, mut resumed_rx) = mpsc::unbounded_channel();
    let (finish_tx, finish_rx) = oneshot::channel::<()>();
    let finish_rx = Arc::new(tokio::sync::Mutex::new(Some(finish_rx)));
    b.register_resume("count", move |ctx| {
        let resumed_tx = resumed_tx.clone();
        let finish_rx = Arc::clone(&finish_rx);
        Box::pin(async move {
            let _ = resumed_tx.send(seen(&ctx));
            if let Some(rx) = finish_rx.lock().await.take() {
                let _ = rx.await;
            }
            Ok(text(&format!(
                "from b at {}",
                ctx.last_checkpoint().unwrap()["at"]
            )))
        })
    });
    clock.advance(LEASE);
    let resumed = resumed_rx.recv().await.unwrap();
    assert_eq!(
        resumed,
        json!({"epoch": 2, "attempt": 2, "resumed": true, "kind": "count",
               "input": {"to": 5}, "checkpoint": {"at": 2}})
    );
    let claimed = stored(&b, &seed.task_id);
    assert_eq!((claimed.epoch, claimed.owner.as_deref()), (2, Some("b")));
    assert_eq!(b.running_task_count(), 1);

    // The old owner wakes: its checkpoint and its outcome are refused, its
    // run is dropped without a trace.
    go_tx.send(()).unwrap();
    let late = late_rx.recv().await.unwrap().unwrap_err();
    assert_eq!(late.code, ErrorCode::INTERNAL_ERROR);
    assert_eq!(late.data.as_ref().unwrap()["code"], "fenced");
    eventually(|| async { (a.running_task_count() == 0).then_some(()) }).await;
    let now = stored(&b, &seed.task_id);
    assert_eq!(now.status, crate::TaskStatus::Working);
    assert_eq!(
        now.revision, claimed.revision,
        "nothing of the old run landed"
    );
    assert_eq!(
        now.resume.as_ref().unwrap().checkpoint,
        Some(json!({"at": 2}))
    );

    finish_tx.send(()).unwrap();
    let done = settled(&b, &seed.task_id).await;
    let TaskPayload::Completed { result } = done.payload else {
        panic!("{done:?}")
    };
    assert_eq!(result["content"][0]["text"], "from b at 2");
    assert_eq!(
        a.get_task(&seed.task_id).await.unwrap().payload,
        TaskPayload::Completed { result }
    );
}

#[tokio::test]
async fn an_old_owner_that_finishes_after_the_claim_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let a = frozen(dir.path(), &clock, "a");
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let seed = a
        .spawn_resumable(
            "k",
            json!(null),
            crate::mcp::TaskOptions::new(),
            move |_ctx| {
                Box::pin(async move {
                    let _ = go_rx.await;
                    Ok(text("from a"))
                })
            },
        )
        .await
        .unwrap();
    let b = live(dir.path(), &clock, "b");
    let (claimed_tx, mut claimed_rx) = mpsc::unbounded_channel();
    b.register_resume("k", move |ctx| {
        let claimed_tx = claimed_tx.clone();
        Box::pin(async move {
            let _ = claimed_tx.send(());
            ctx.cancelled().await;
            Err(TaskExit::Cancelled)
        })
    });
    clock.advance(LEASE);
    claimed_rx.recv().await.unwrap();
    // The old owner's operation ends with a result: its fenced outcome is
    // refused, so the task keeps running under its new owner.
    go_tx.send(()).unwrap();
    eventually(|| async { (a.running_task_count() == 0).then_some(()) }).await;
    let task = stored(&b, &seed.task_id);
    assert_eq!((task.status, task.epoch), (crate::TaskStatus::Working, 2));
    assert_eq!(task.result, None);
    // The new owner decides the outcome.
    a.cancel_task(&seed.task_id).await.unwrap();
    assert_eq!(
        settled(&b, &seed.task_id).await.status(),
        TaskStatus::Cancelled
    );
}

#[tokio::test]
async fn input_required_survives_its_owner_and_the_answer_reaches_the_resumed_work() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let a = frozen(dir.path(), &clock, "a");
    let ask = |ctx: TaskContext| -> crate::mcp::TaskFuture {
        Box::pin(async move {
            let name = ctx.request_input("name", elicitation("Your name?")).await?;
            // Asking again in the same run is a misuse, as in rmcp.
            assert!(
                ctx.request_input("name", elicitation("Your name?"))
                    .await
                    .is_err()
            );
            Ok(text(&format!(
                "hello {} (attempt {})",
                name["v"],
                ctx.attempt()
            )))
        })
    };
    let seed = a
        .spawn_resumable("ask", json!({}), crate::mcp::TaskOptions::new(), ask)
        .await
        .unwrap();
    let id = seed.task_id.clone();
    eventually(|| async {
        (stored(&a, &id).status == crate::TaskStatus::InputRequired).then_some(())
    })
    .await;
    clock.advance(LEASE);
    // No instance runs it now; a peer without a handler takes the answer.
    let peer = live(dir.path(), &clock, "peer");
    match peer.get_task(&id).await.unwrap().payload {
        TaskPayload::InputRequired { input_requests } => {
            assert_eq!(input_requests.keys().collect::<Vec<_>>(), ["name"]);
        }
        other => panic!("still waiting for input, got {other:?}"),
    }
    peer.update_task(&id, [("name".to_owned(), json!({"v": "Ada"}))])
        .await
        .unwrap();
    assert_eq!(
        stored(&peer, &id).metadata["mcp.inputResponse.name"],
        json!({"v": "Ada"})
    );

    // Resumed elsewhere, the work asks again under the same key and gets
    // the answer given while no one ran it; the client is never asked twice.
    let b = live(dir.path(), &clock, "b");
    b.register_resume("ask", ask);
    let done = settled(&b, &id).await;
    let TaskPayload::Completed { result } = done.payload else {
        panic!("{done:?}")
    };
    assert_eq!(result["content"][0]["text"], "hello \"Ada\" (attempt 2)");
    let task = stored(&b, &id);
    assert_eq!(
        task.metadata[INPUT_KEYS_KEY]["name"]["response"],
        json!({"v": "Ada"}),
        "the accepted answer is recorded with its key"
    );
}

#[tokio::test]
async fn a_resumed_run_replays_answers_and_refuses_a_different_request_under_a_used_key() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let a = frozen(dir.path(), &clock, "a");
    let seed = a
        .spawn_resumable("two", json!({}), crate::mcp::TaskOptions::new(), |ctx| {
            Box::pin(async move {
                ctx.request_input("first", elicitation("1?")).await?;
                ctx.request_input("second", elicitation("2?")).await?;
                Ok(text("unreachable: the owner dies before"))
            })
        })
        .await
        .unwrap();
    let id = seed.task_id.clone();
    let waits_for = |key: &'static str| {
        let a = a.clone();
        let id = id.clone();
        async move {
            eventually(|| async {
                let t = stored(&a, &id);
                t.input_requests
                    .as_ref()
                    .is_some_and(|r| r.get(key).is_some())
                    .then_some(())
            })
            .await
        }
    };
    waits_for("first").await;
    // Answered at the owner: recorded before the operation gets it.
    a.update_task(&id, [("first".to_owned(), json!({"v": 1}))])
        .await
        .unwrap();
    waits_for("second").await;
    clock.advance(LEASE);

    let b = live(dir.path(), &clock, "b");
    let (out_tx, mut out_rx) = mpsc::unbounded_channel();
    b.register_resume("two", move |ctx| {
        let out_tx = out_tx.clone();
        Box::pin(async move {
            // Replayed from the record, at once: not asked again.
            let first = ctx.request_input("first", elicitation("1?")).await?;
            let conflict = ctx
                .request_input("second", elicitation("something else?"))
                .await;
            let conflict = match conflict {
                Err(TaskExit::Error(e)) => Some(e.message.to_string()),
                _ => None,
            };
            let _ = out_tx.send((first, conflict));
            ctx.cancelled().await;
            Err(TaskExit::Cancelled)
        })
    });
    let (first, conflict) = out_rx.recv().await.unwrap();
    assert_eq!(first, json!({"v": 1}));
    let conflict = conflict.expect("a used key cannot name a different request");
    assert!(
        conflict.contains(&format!("task {id}")) && conflict.contains("\"second\""),
        "the error names the task and the key: {conflict}"
    );
    // The outstanding request stays as it was asked.
    let task = stored(&b, &id);
    assert_eq!(
        task.input_requests.as_ref().unwrap()["second"]["params"]["message"],
        "2?"
    );
    b.cancel_task(&id).await.unwrap();
    assert_eq!(settled(&b, &id).await.status(), TaskStatus::Cancelled);
}

/// What a resumed operation's first `request_input` came to, run before
/// the manager looked at the claimed task again.
#[derive(Debug, PartialEq)]
enum FirstAsk {
    /// It returned (with this error, if any).
    Returned(Result<Value, String>),
    /// It put its key back into the stored `inputRequests`.
    AskedAgain,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_run_knows_a_stored_cancel_at_once_and_never_asks_a_withdrawn_key_again() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let a = frozen(dir.path(), &clock, "a");
    let seed = a
        .spawn_resumable("ask", json!({}), crate::mcp::TaskOptions::new(), |ctx| {
            Box::pin(async move {
                ctx.request_input("go", elicitation("Proceed?")).await?;
                Ok(text("unreachable: the owner dies first"))
            })
        })
        .await
        .unwrap();
    let id = seed.task_id.clone();
    eventually(|| async {
        (stored(&a, &id).status == crate::TaskStatus::InputRequired).then_some(())
    })
    .await;

    // A peer cancels the task while its owner is gone: the request is
    // withdrawn (the task is `working` again), its key stays recorded
    // without an answer.
    let b = live(dir.path(), &clock, "b");
    b.cancel_task(&id).await.unwrap();
    let withdrawn = stored(&b, &id);
    assert_eq!(withdrawn.status, crate::TaskStatus::Working);
    assert!(withdrawn.metadata[INPUT_KEYS_KEY].get("go").is_some());
    clock.advance(LEASE);

    // B resumes it. The handler runs the operation's first step at once,
    // before the manager looks at the claimed task again (on a busy
    // multi-threaded runtime the operation may well run first): it must
    // already know of the cancel, and must not put "go" back before the
    // client, which already saw it asked once.
    let (first_tx, mut first_rx) = mpsc::unbounded_channel();
    let store = Arc::clone(b.store());
    let task_id = TaskId::parse(&id).unwrap();
    b.register_resume("ask", move |ctx| {
        let knew = ctx.is_cancel_requested();
        let (store, task_id) = (Arc::clone(&store), task_id.clone());
        let first = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                tokio::select! {
                    asked = ctx.request_input("go", elicitation("Proceed?")) => {
                        FirstAsk::Returned(asked.map_err(|e| format!("{e:?}")))
                    }
                    () = eventually(|| async {
                        let now = store.get(&task_id).unwrap().unwrap();
                        (now.status == crate::TaskStatus::InputRequired).then_some(())
                    }) => FirstAsk::AskedAgain,
                }
            })
        });
        let _ = first_tx.send((knew, first));
        Box::pin(async move {
            ctx.cancelled().await;
            Err(TaskExit::Cancelled)
        })
    });
    let (knew, first) = first_rx.recv().await.unwrap();
    assert_eq!(
        first,
        FirstAsk::Returned(Err("Cancelled".to_owned())),
        "a withdrawn key was asked again"
    );
    assert!(knew, "the resumed run started without the stored cancel");
    let done = settled(&b, &id).await;
    assert_eq!(done.status(), TaskStatus::Cancelled);
    let task = stored(&b, &id);
    assert_eq!(task.input_requests, None);
    assert_eq!(task.epoch, 2);
}

/// A resume handler that panics while it builds its future fails the
/// claimed task as a panicking operation does, and the background loop that
/// resumed it goes on: it claims and runs the next orphan. (The panic went
/// through the loop, which then renewed, claimed and reaped nothing more.)
#[tokio::test]
async fn a_resume_handler_that_panics_building_its_future_fails_its_task_and_the_loop_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let a = frozen(dir.path(), &clock, "a");
    let pending =
        |_ctx: TaskContext| -> crate::mcp::TaskFuture { Box::pin(std::future::pending()) };
    let options = crate::mcp::TaskOptions::new;
    let poison = a
        .spawn_resumable("poison", json!({}), options(), pending)
        .await
        .unwrap();
    let b = live(dir.path(), &clock, "b");
    b.register_resume("poison", |_ctx| -> crate::mcp::TaskFuture {
        panic!("cannot parse the input")
    });
    b.register_resume("fine", |_ctx| Box::pin(async { Ok(text("resumed")) }));
    clock.advance(LEASE);
    let TaskPayload::Failed { error } = settled(&b, &poison.task_id).await.payload else {
        panic!()
    };
    assert_eq!(
        error["message"],
        "task operation panicked: cannot parse the input"
    );
    // The loop is alive: the next orphan is claimed and run.
    let fine = a
        .spawn_resumable("fine", json!({}), options(), pending)
        .await
        .unwrap();
    clock.advance(LEASE);
    let TaskPayload::Completed { result } = settled(&b, &fine.task_id).await.payload else {
        panic!()
    };
    assert_eq!(result["content"][0]["text"], "resumed");
}
