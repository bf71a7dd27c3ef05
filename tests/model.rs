//! Model-based test: random operation sequences (including dropping and
//! reopening the store and advancing the clock) against a plain model.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::json;
use taskstore::{
    Durability, Error, FileStore, ListQuery, ManualClock, NewTask, TaskId, TaskStatus, TaskStore,
    TaskUpdate, Transition,
};
use time::OffsetDateTime;

#[derive(Clone, Debug)]
enum Op {
    Create {
        slot: u8,
        ttl_s: Option<u8>,
    },
    Update {
        slot: u8,
        key: u8,
        value: i64,
        input: bool,
    },
    Finish {
        slot: u8,
        how: u8,
    },
    Delete {
        slot: u8,
    },
    Get {
        slot: u8,
    },
    List {
        active: bool,
        limit: u8,
    },
    Sweep,
    Advance {
        ms: u32,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let slot = 0u8..6;
    prop_oneof![
        3 => (slot.clone(), proptest::option::of(1u8..20)).prop_map(|(slot, ttl_s)| Op::Create { slot, ttl_s }),
        3 => (slot.clone(), 0u8..4, any::<i64>(), any::<bool>()).prop_map(|(slot, key, value, input)| Op::Update { slot, key, value, input }),
        2 => (slot.clone(), 0u8..3).prop_map(|(slot, how)| Op::Finish { slot, how }),
        1 => slot.clone().prop_map(|slot| Op::Delete { slot }),
        2 => slot.prop_map(|slot| Op::Get { slot }),
        1 => (any::<bool>(), 1u8..5).prop_map(|(active, limit)| Op::List { active, limit }),
        1 => Just(Op::Sweep),
        2 => (0u32..8_000).prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::Reopen),
    ]
}

/// What the model knows of a task.
#[derive(Clone, Debug, PartialEq)]
struct M {
    status: TaskStatus,
    created: OffsetDateTime,
    updated: OffsetDateTime,
    ttl: Option<Duration>,
    revision: u64,
    metadata: BTreeMap<String, i64>,
    payload: Option<serde_json::Value>,
}

impl M {
    fn live(&self, now: OffsetDateTime) -> bool {
        self.ttl.is_none_or(|ttl| now < self.created + ttl)
    }
}

fn id(slot: u8) -> TaskId {
    TaskId::parse(&format!("slot-{slot}")).unwrap()
}

fn same(m: &M, t: &taskstore::Task) {
    assert_eq!(t.status, m.status);
    assert_eq!(t.created_at, m.created);
    assert_eq!(t.last_updated_at, m.updated);
    assert_eq!(t.ttl, m.ttl);
    assert_eq!(t.revision, m.revision);
    let meta: BTreeMap<String, i64> = t
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.as_i64().unwrap()))
        .collect();
    assert_eq!(meta, m.metadata);
    let payload = match m.status {
        TaskStatus::Completed => t.result.clone(),
        TaskStatus::Failed => t.error.clone(),
        TaskStatus::InputRequired => t.input_requests.clone(),
        _ => None,
    };
    assert_eq!(payload, m.payload);
}

fn run(ops: Vec<Op>, durability: Durability) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap());
    let open = || {
        FileStore::builder(dir.path())
            .durability(durability)
            .clock(Arc::new(clock.clone()))
            .open()
            .unwrap()
    };
    let mut store = open();
    let mut model: BTreeMap<TaskId, M> = BTreeMap::new();
    for op in ops {
        let now = taskstore::Clock::now(&clock);
        // Expired tasks are gone for every reader: the model forgets them lazily too.
        model.retain(|_, m| m.live(now));
        match op {
            Op::Create { slot, ttl_s } => {
                let mut new = NewTask::new().id(id(slot));
                if let Some(s) = ttl_s {
                    new = new.ttl(Duration::from_secs(s.into()));
                }
                let got = store.create(new);
                if let std::collections::btree_map::Entry::Vacant(slot_entry) =
                    model.entry(id(slot))
                {
                    let m = M {
                        status: TaskStatus::Working,
                        created: now,
                        updated: now,
                        ttl: ttl_s.map(|s| Duration::from_secs(s.into())),
                        revision: 1,
                        metadata: BTreeMap::new(),
                        payload: None,
                    };
                    same(&m, &got.unwrap());
                    slot_entry.insert(m);
                } else {
                    assert!(matches!(got, Err(Error::AlreadyExists { .. })), "{got:?}");
                }
            }
            Op::Update {
                slot,
                key,
                value,
                input,
            } => {
                let mut update = TaskUpdate::new().metadata(format!("k{key}"), value);
                update = if input {
                    update
                        .status(TaskStatus::InputRequired)
                        .input_requests(json!({"ask": value}))
                } else {
                    update.status(TaskStatus::Working)
                };
                let got = store.update(&id(slot), update);
                check_mutation(&mut model, slot, got, now, |m| {
                    m.metadata.insert(format!("k{key}"), value);
                    m.status = if input {
                        TaskStatus::InputRequired
                    } else {
                        TaskStatus::Working
                    };
                    m.payload = input.then(|| json!({"ask": value}));
                });
            }
            Op::Finish { slot, how } => {
                let payload = json!({"how": how, "at": now.unix_timestamp()});
                let got = match how {
                    0 => store.complete(&id(slot), payload.clone()),
                    1 => store.fail(&id(slot), payload.clone()),
                    _ => store.cancel(&id(slot), None),
                };
                check_mutation(&mut model, slot, got, now, |m| {
                    m.status = [
                        TaskStatus::Completed,
                        TaskStatus::Failed,
                        TaskStatus::Cancelled,
                    ][how as usize];
                    m.payload = (how < 2).then_some(payload);
                });
            }
            Op::Delete { slot } => {
                assert_eq!(
                    store.delete(&id(slot)).unwrap(),
                    model.remove(&id(slot)).is_some()
                );
            }
            Op::Get { slot } => match (store.get(&id(slot)).unwrap(), model.get(&id(slot))) {
                (Some(t), Some(m)) => same(m, &t),
                (None, None) => {}
                (got, want) => panic!("get {slot}: store {got:?}, model {want:?}"),
            },
            Op::List { active, limit } => {
                let query = if active {
                    ListQuery::active()
                } else {
                    ListQuery::all()
                };
                let mut got = Vec::new();
                let mut q = query.clone().limit(limit.into());
                loop {
                    let page = store.list(&q).unwrap();
                    got.extend(page.tasks);
                    match page.next_cursor {
                        Some(c) => q = query.clone().limit(limit.into()).after(&c),
                        None => break,
                    }
                }
                let mut want: Vec<(&TaskId, &M)> = model
                    .iter()
                    .filter(|(_, m)| !active || !m.status.is_terminal())
                    .collect();
                want.sort_by_key(|(id, m)| (m.created, (*id).clone()));
                assert_eq!(got.len(), want.len());
                for (t, (id, m)) in got.iter().zip(want) {
                    assert_eq!(&t.id, id);
                    same(m, t);
                }
            }
            Op::Sweep => {
                store.sweep_expired().unwrap();
            }
            Op::Advance { ms } => clock.advance(Duration::from_millis(ms.into())),
            Op::Reopen => {
                drop(store);
                store = open();
            }
        }
    }
    // Whatever happened, a reopened store agrees with the model.
    drop(store);
    let store = open();
    let now = taskstore::Clock::now(&clock);
    model.retain(|_, m| m.live(now));
    let all = store.list(&ListQuery::all()).unwrap().tasks;
    assert_eq!(all.len(), model.len());
    for t in all {
        same(&model[&t.id], &t);
    }
    let tmp = std::fs::read_dir(dir.path().join("tmp")).unwrap().count();
    assert_eq!(tmp, 0, "no temp files left behind");
}

fn check_mutation(
    model: &mut BTreeMap<TaskId, M>,
    slot: u8,
    got: taskstore::Result<Transition>,
    now: OffsetDateTime,
    change: impl FnOnce(&mut M),
) {
    match model.get_mut(&id(slot)) {
        None => assert!(matches!(got, Err(Error::NotFound { .. })), "{got:?}"),
        Some(m) if m.status.is_terminal() => match got.unwrap() {
            Transition::AlreadyTerminal(t) => same(m, &t),
            other => panic!("terminal task changed: {other:?}"),
        },
        Some(m) => {
            change(m);
            m.revision += 1;
            m.updated = now;
            match got.unwrap() {
                Transition::Applied(t) => same(m, &t),
                other => panic!("expected Applied: {other:?}"),
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn file_store_matches_the_model(ops in proptest::collection::vec(op(), 1..60), immediate in any::<bool>()) {
        run(ops, if immediate { Durability::Immediate } else { Durability::Eventual });
    }
}
