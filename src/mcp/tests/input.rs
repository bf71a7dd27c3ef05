//! Input requests and their answers, within one instance and across
//! instances: the first of two peers' answers stands, an answer is stored
//! once, and what the store cannot carry or refuses is said so.

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{ErrorCode, TaskPayload, TaskStatus};
use serde_json::json;

use super::{capped, elicitation, eventually, fast, instance, settled, text, until_input_required};
use crate::mcp::*;
use crate::{FileStore, MemoryStore, TaskStore};

/// Two peers answer the same input key before the owner looks, and then
/// the owner itself: the first answer stands, as `rmcp` keeps the first it
/// delivers, and the later ones are acknowledged and ignored. (The second
/// peer's replaced the first in the store, though both were acknowledged;
/// and once that was fixed, the owner's own answer still replaced a peer's
/// that it had not yet taken, and the operation got the owner's.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_of_two_peers_answers_to_one_key_stands() {
    let dir = tempfile::tempdir().unwrap();
    // The owner looks only at its run's start and then once an hour: the
    // answers wait in the store.
    let hour = Duration::from_secs(3_600);
    let store = FileStore::builder(dir.path())
        .instance_id("a")
        .lease(3 * hour)
        .open()
        .unwrap();
    let a = DurableTaskManager::with_options(
        Arc::new(store),
        ManagerOptions::new()
            .watch_interval(hour)
            .reap_interval(hour),
    );
    let (b, c) = (instance(dir.path(), "b"), instance(dir.path(), "c"));
    let seed = a
        .spawn(TaskOptions::new(), move |ctx| {
            Box::pin(async move {
                let answer = ctx.request_input("k", elicitation("?")).await?;
                Ok(text(&answer.to_string()))
            })
        })
        .await
        .unwrap();
    until_input_required(&b, &seed.task_id).await;
    for (peer, answer) in [(&b, "first"), (&c, "second")] {
        peer.update_task(&seed.task_id, [("k".to_owned(), json!(answer))])
            .await
            .unwrap();
    }
    let id = crate::TaskId::parse(&seed.task_id).unwrap();
    let stored = b.store().get(&id).unwrap().unwrap();
    assert_eq!(
        stored
            .metadata
            .get(&format!("{INPUT_RESPONSE_KEY_PREFIX}k")),
        Some(&json!("first")),
        "{:?}",
        stored.metadata
    );
    // The owner, which has not looked since: it takes the stored answer.
    a.update_task(&seed.task_id, [("k".to_owned(), json!("third"))])
        .await
        .unwrap();
    let TaskPayload::Completed { result } = settled(&a, &seed.task_id).await.payload else {
        panic!("not completed")
    };
    assert_eq!(result["content"][0]["text"], "\"first\"");
}

/// A one-byte answer to a task whose input request filled it to the
/// payload cap, given to another instance, cannot be carried to the owner
/// there (a peer's copy of it grows the task), while the owner takes it:
/// the peer's refusal says so as the server's limit (`-32603`, naming the
/// task's size), not as the client's bad input (`-32602`, "the task store
/// refuses it", which it was). The owner then takes the same answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_cannot_carry_a_small_answer_says_it_is_the_servers_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (capped(dir.path(), "a"), capped(dir.path(), "b"));
    let seed = a
        .spawn(TaskOptions::new(), move |ctx| {
            Box::pin(async move {
                // The largest request the store takes.
                let mut len = crate::MIN_MAX_PAYLOAD_BYTES;
                loop {
                    match ctx.request_input("k", elicitation(&"q".repeat(len))).await {
                        Ok(answer) => return Ok(text(&answer.to_string())),
                        Err(TaskExit::Error(_)) => len -= 1,
                        Err(e) => return Err(e),
                    }
                }
            })
        })
        .await
        .unwrap();
    until_input_required(&a, &seed.task_id).await;
    let refused = b
        .update_task(&seed.task_id, [("k".to_owned(), json!("y"))])
        .await
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::INTERNAL_ERROR, "{refused:?}");
    assert!(
        refused.message.contains("payload") && refused.message.contains(&seed.task_id),
        "{refused:?}"
    );
    a.update_task(&seed.task_id, [("k".to_owned(), json!("y"))])
        .await
        .unwrap();
    assert_eq!(
        settled(&a, &seed.task_id).await.status(),
        TaskStatus::Completed
    );
}

/// An answer sent to a peer is stored once the owner has taken it: its
/// copy under `mcp.inputResponse.<key>` is cleared by the owner's write
/// that records it, so an answer over half the payload cap is taken and
/// delivered. One nested deeper than the owner's record can hold is
/// refused by the peer with `-32602`, not acknowledged. (The copy stayed
/// for the task's life: an answer that fit once but not twice was
/// acknowledged to the client and never delivered, the task left
/// `input_required`; so was one 99 or 100 levels deep.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_through_a_peer_is_stored_once_and_one_too_deep_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cap = 64 * 1024;
    let open = |name: &str| {
        let store = FileStore::builder(dir.path())
            .instance_id(name)
            .max_payload_bytes(cap)
            .open()
            .unwrap();
        DurableTaskManager::with_options(Arc::new(store), fast())
    };
    let (owner, peer) = (open("owner"), open("peer"));
    let seed = owner
        .spawn(TaskOptions::new(), |ctx| {
            Box::pin(async move {
                let answer = ctx.request_input("k", elicitation("big?")).await?;
                let len = answer["blob"].as_str().map_or(0, str::len);
                Ok(text(&len.to_string()))
            })
        })
        .await
        .unwrap();
    until_input_required(&peer, &seed.task_id).await;
    let mut deep = json!("bottom");
    for _ in 0..crate::MAX_DEPTH - 1 {
        deep = json!([deep]);
    }
    let refused = peer
        .update_task(&seed.task_id, [("k".to_owned(), deep)])
        .await
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::INVALID_PARAMS, "{refused:?}");
    // One larger than the store takes is the client's to fix too: invalid
    // params, naming the task, not an internal error.
    let too_big = json!({"blob": "x".repeat(cap + 1)});
    let refused = peer
        .update_task(&seed.task_id, [("k".to_owned(), too_big)])
        .await
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::INVALID_PARAMS, "{refused:?}");
    assert_eq!(
        refused.data.as_ref().unwrap()["taskId"],
        seed.task_id.as_str()
    );
    let blob = "x".repeat(cap * 3 / 5);
    peer.update_task(&seed.task_id, [("k".to_owned(), json!({"blob": blob}))])
        .await
        .unwrap();
    let TaskPayload::Completed { result } = settled(&peer, &seed.task_id).await.payload else {
        panic!("not completed")
    };
    assert_eq!(result["content"][0]["text"], blob.len().to_string());
}

/// What the store refuses of a client's input is the client's to fix,
/// `-32602`, on every path that stores it: a tool call's task too large
/// to store (no task is made), and an answer too large, sent to the
/// instance that runs the task (naming it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_the_store_refuses_is_invalid_params_at_a_spawn_and_at_the_owner() {
    let cap = 4 * 1024;
    let store = MemoryStore::builder()
        .max_payload_bytes(cap)
        .build()
        .unwrap();
    let m = DurableTaskManager::with_options(Arc::new(store), fast());
    let big = json!({"blob": "x".repeat(cap + 1)});
    let refused = m
        .spawn_resumable("k", big.clone(), TaskOptions::new(), |_ctx| {
            Box::pin(std::future::pending())
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::INVALID_PARAMS, "{refused:?}");
    let seed = m
        .spawn(TaskOptions::new(), |ctx| {
            Box::pin(async move {
                ctx.request_input("k", elicitation("big?")).await?;
                Ok(text("answered"))
            })
        })
        .await
        .unwrap();
    until_input_required(&m, &seed.task_id).await;
    let refused = m
        .update_task(&seed.task_id, [("k".to_owned(), big)])
        .await
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::INVALID_PARAMS, "{refused:?}");
    assert_eq!(
        refused.data.as_ref().unwrap()["taskId"],
        seed.task_id.as_str()
    );
}

/// The owner's write recording an answer takes no more room than the
/// peer's write that stored its copy: it clears the copy to `null`, the
/// key's record held `null` for it, and it sheds the key's outstanding
/// request. So the largest answer a peer's copy holds is delivered, also
/// while another request stays outstanding (a write that leaves none
/// sheds them all), and no answer a peer acknowledged is refused by the
/// owner's record and tried again for ever. (With the cleared copy made
/// 512 bytes instead of `null`, the answer is never recorded, and this
/// fails.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_answer_a_peer_stores_is_delivered() {
    let cap = 8 * 1024;
    let backend = Arc::new(crate::MemoryBackend::new());
    let open = |name: &str| {
        let store = crate::Store::with_backend(Arc::clone(&backend))
            .instance_id(name)
            .max_payload_bytes(cap)
            .build()
            .unwrap();
        DurableTaskManager::with_options(Arc::new(store), fast())
    };
    let (owner, peer) = (open("owner"), open("peer"));
    let seed = owner
        .spawn(TaskOptions::new(), |ctx| {
            Box::pin(async move {
                let (k, other) = tokio::join!(
                    ctx.request_input("k", elicitation("big?")),
                    ctx.request_input("other", elicitation("and?")),
                );
                let blob = k?["blob"].as_str().map_or(0, str::len);
                Ok(text(&format!("{blob} {}", other?["v"])))
            })
        })
        .await
        .unwrap();
    let outstanding = |n: usize| {
        let peer = peer.clone();
        let id = seed.task_id.clone();
        async move {
            eventually(|| async {
                match peer.get_task(&id).await.unwrap().payload {
                    TaskPayload::InputRequired { input_requests } => {
                        (input_requests.len() == n).then_some(())
                    }
                    _ => None,
                }
            })
            .await;
        }
    };
    outstanding(2).await;
    // The largest answer the peer's copy holds: each larger one is refused
    // and stores nothing.
    let mut size = cap;
    loop {
        let answer = json!({"blob": "x".repeat(size)});
        match peer
            .update_task(&seed.task_id, [("k".to_owned(), answer)])
            .await
        {
            Ok(()) => break,
            // Too large for the task, or (within a request's size of
            // fitting) for the peer's copy alone.
            Err(e) => {
                let full = e.data.as_ref().is_some_and(|d| d["code"] == "taskFull");
                assert!(e.code == ErrorCode::INVALID_PARAMS || full, "{e:?}");
                size -= 1;
            }
        }
    }
    // Recorded by the owner: one request left.
    outstanding(1).await;
    peer.update_task(&seed.task_id, [("other".to_owned(), json!({"v": 1}))])
        .await
        .unwrap();
    let TaskPayload::Completed { result } = settled(&owner, &seed.task_id).await.payload else {
        panic!("not completed")
    };
    assert_eq!(result["content"][0]["text"], format!("{size} 1"));
}

#[tokio::test]
async fn input_round_trip_in_the_same_instance_and_across_instances() {
    let dir = tempfile::tempdir().unwrap();
    let a = instance(dir.path(), "a");
    let b = instance(dir.path(), "b");
    let seed = a
        .spawn(TaskOptions::new(), |ctx| {
            Box::pin(async move {
                let first = ctx.request_input("k1", elicitation("first?")).await?;
                let second = ctx.request_input("k2", elicitation("second?")).await?;
                Ok(text(&format!("{} {}", first["v"], second["v"])))
            })
        })
        .await
        .unwrap();
    for (key, via) in [("k1", &a), ("k2", &b)] {
        // Both instances see the outstanding request.
        eventually(|| async {
            match b.get_task(&seed.task_id).await.unwrap().payload {
                TaskPayload::InputRequired { input_requests } => {
                    input_requests.contains_key(key).then_some(())
                }
                _ => None,
            }
        })
        .await;
        via.update_task(
            &seed.task_id,
            [
                (key.to_owned(), json!({"v": key})),
                ("unknown".to_owned(), json!(0)),
            ],
        )
        .await
        .unwrap();
    }
    let TaskPayload::Completed { result } = settled(&b, &seed.task_id).await.payload else {
        panic!()
    };
    assert_eq!(result["content"][0]["text"], "\"k1\" \"k2\"");
}
