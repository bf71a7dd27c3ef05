//! Model-based test: random operation sequences against a plain model,
//! through several handles on one store (as several processes hold them):
//! two kept open, one following the store by change notices and one by file
//! status alone (`change_notices(false)`), and fresh ones opened for a
//! single operation and dropped after it (a process that just started).
//! Operations include dropping and reopening a handle, advancing the clock,
//! letting the files settle (what the file-status proofs wait for), and
//! listing pages of everything, of the running tasks, or of one status.

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

/// The handle an operation goes through.
#[derive(Clone, Copy, Debug)]
enum By {
    /// Kept open, following the store by change notices.
    Notices,
    /// Kept open, following the store by file status.
    Status,
    /// Opened for the operation and dropped after it, by change notices or
    /// not.
    Fresh { notices: bool },
}

#[derive(Clone, Debug)]
enum Op {
    Create {
        by: By,
        slot: u8,
        ttl_s: Option<u8>,
    },
    Update {
        by: By,
        slot: u8,
        key: u8,
        value: i64,
        input: bool,
    },
    Finish {
        by: By,
        slot: u8,
        how: u8,
    },
    Delete {
        by: By,
        slot: u8,
    },
    Get {
        by: By,
        slot: u8,
    },
    List {
        by: By,
        active: bool,
        /// Only tasks of this status (of every area).
        status: Option<TaskStatus>,
        limit: u8,
        /// Stops after this many pages (a client that reads the first
        /// ones), or reads them all (`None`).
        pages: Option<u8>,
    },
    Sweep {
        by: By,
    },
    Advance {
        ms: u32,
    },
    /// Waits until every file written so far has settled: its status then
    /// proves it unchanged to a handle without change notices.
    Settle,
    /// Drops the handle and opens it again (a fresh handle has nothing to
    /// reopen: nothing happens), and lists a first page of everything of
    /// this size, as a restarted server answers its first listing.
    Reopen {
        by: By,
        first_page: Option<u8>,
    },
}

impl Op {
    /// The handle the operation goes through, if it goes through one.
    fn by(&self) -> Option<By> {
        match *self {
            Op::Create { by, .. }
            | Op::Update { by, .. }
            | Op::Finish { by, .. }
            | Op::Delete { by, .. }
            | Op::Get { by, .. }
            | Op::List { by, .. }
            | Op::Sweep { by }
            | Op::Reopen { by, .. } => Some(by),
            Op::Advance { .. } | Op::Settle => None,
        }
    }
}

/// How many task ids the operations share: enough for pages of history
/// longer than a page, few enough that ids are deleted and made again.
const SLOTS: u8 = 10;

fn by() -> impl Strategy<Value = By> {
    prop_oneof![
        3 => Just(By::Notices),
        3 => Just(By::Status),
        1 => any::<bool>().prop_map(|notices| By::Fresh { notices }),
    ]
}

fn status() -> impl Strategy<Value = Option<TaskStatus>> {
    prop_oneof![
        2 => Just(None),
        1 => proptest::sample::select(vec![
            TaskStatus::Working,
            TaskStatus::InputRequired,
            TaskStatus::Completed,
            TaskStatus::Failed,
            TaskStatus::Cancelled,
        ])
        .prop_map(Some),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let slot = 0u8..SLOTS;
    prop_oneof![
        4 => (by(), slot.clone(), proptest::option::of(1u8..60)).prop_map(|(by, slot, ttl_s)| Op::Create { by, slot, ttl_s }),
        3 => (by(), slot.clone(), 0u8..4, any::<i64>(), any::<bool>()).prop_map(|(by, slot, key, value, input)| Op::Update { by, slot, key, value, input }),
        3 => (by(), slot.clone(), 0u8..3).prop_map(|(by, slot, how)| Op::Finish { by, slot, how }),
        1 => (by(), slot.clone()).prop_map(|(by, slot)| Op::Delete { by, slot }),
        2 => (by(), slot).prop_map(|(by, slot)| Op::Get { by, slot }),
        4 => (by(), any::<bool>(), status(), 1u8..5, proptest::option::of(1u8..3)).prop_map(|(by, active, status, limit, pages)| Op::List { by, active, status, limit, pages }),
        1 => by().prop_map(|by| Op::Sweep { by }),
        2 => (0u32..5_000).prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::Settle),
        2 => (by(), proptest::option::of(1u8..4)).prop_map(|(by, first_page)| Op::Reopen { by, first_page }),
    ]
}

/// Operations that make tasks expire, finished and running, several at a
/// time, and sweep them: short TTLs, tasks finished as soon as they are
/// made, steps of the clock of seconds, more ids than the mix above (a
/// finished task stays until it expires, not until its id is made again).
/// With a handle taking the paths of large passes from one to three tasks
/// on, these sequences go through them (a sweep reading and removing due
/// finished tasks and new running files at once, removal batches under
/// every stripe), which the mix above rarely reaches.
fn sweep_ops() -> impl Strategy<Value = Vec<Op>> {
    let slot = 0u8..4 * SLOTS;
    let ttl = proptest::option::weighted(0.8, 1u8..12);
    let step = prop_oneof![
        // A task made and finished at once.
        5 => (by(), by(), slot.clone(), ttl.clone(), 0u8..3).prop_map(|(made, done, slot, ttl_s, how)| vec![
            Op::Create { by: made, slot, ttl_s },
            Op::Finish { by: done, slot, how },
        ]),
        3 => (by(), slot.clone(), ttl).prop_map(|(by, slot, ttl_s)| vec![Op::Create { by, slot, ttl_s }]),
        1 => (by(), slot.clone(), 0u8..4, any::<i64>(), any::<bool>()).prop_map(|(by, slot, key, value, input)| vec![Op::Update { by, slot, key, value, input }]),
        1 => (by(), slot.clone()).prop_map(|(by, slot)| vec![Op::Delete { by, slot }]),
        1 => (by(), slot).prop_map(|(by, slot)| vec![Op::Get { by, slot }]),
        2 => (by(), any::<bool>(), status(), 1u8..5, proptest::option::of(1u8..3)).prop_map(|(by, active, status, limit, pages)| vec![Op::List { by, active, status, limit, pages }]),
        3 => by().prop_map(|by| vec![Op::Sweep { by }]),
        3 => (1_000u32..5_000).prop_map(|ms| vec![Op::Advance { ms }]),
        1 => Just(vec![Op::Settle]),
        1 => (by(), proptest::option::of(1u8..4)).prop_map(|(by, first_page)| vec![Op::Reopen { by, first_page }]),
    ];
    proptest::collection::vec(step, 1..45).prop_map(|steps| steps.concat())
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

/// The task ids with a name in the store's areas, and the areas where
/// (an `expiring/` entry is named by the id after its times).
fn on_disk(store: &std::path::Path) -> BTreeMap<String, Vec<&'static str>> {
    let mut names: BTreeMap<String, Vec<&'static str>> = BTreeMap::new();
    for area in ["active", "done", "expiring"] {
        for entry in std::fs::read_dir(store.join(area)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let id = match area {
                "expiring" => name.splitn(3, '.').nth(2).unwrap().to_owned(),
                _ => name.strip_suffix(".json").unwrap().to_owned(),
            };
            names.entry(id).or_default().push(area);
        }
    }
    names
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

/// How long a file's status takes to prove it unchanged, past its last
/// change (`src/file/stamp.rs`: 100 ms on a file system with fine
/// timestamps), with a margin.
const SETTLE: Duration = Duration::from_millis(120);

/// Runs `ops` on a store whose handles write with `durability` and take
/// the paths of large passes (every stripe at once, a sweep reading and
/// removing in one go) from `large_pass` tasks on, where the tests can set
/// it (`None`: the store's own threshold, which these short sequences
/// never reach).
fn run(ops: Vec<Op>, durability: Durability, large_pass: Option<usize>) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap());
    let open = |notices: bool| {
        let builder = FileStore::builder(dir.path())
            .durability(durability)
            .clock(Arc::new(clock.clone()))
            .change_notices(notices);
        #[cfg(feature = "fault-injection")]
        let builder = match large_pass {
            Some(tasks) => builder.large_passes_from(tasks),
            None => builder,
        };
        #[cfg(not(feature = "fault-injection"))]
        let _ = large_pass;
        builder.open().unwrap()
    };
    // The two handles kept open: by change notices, and by file status.
    let mut kept = [open(true), open(false)];
    let mut model: BTreeMap<TaskId, M> = BTreeMap::new();
    for op in ops {
        let now = taskstore::Clock::now(&clock);
        // Expired tasks are gone for every reader: the model forgets them lazily too.
        model.retain(|_, m| m.live(now));
        // The handle the operation goes through.
        let fresh = match op.by() {
            Some(By::Fresh { notices }) => Some(open(notices)),
            _ => None,
        };
        let through = |by: By| match by {
            By::Notices => &kept[0],
            By::Status => &kept[1],
            By::Fresh { .. } => fresh.as_ref().expect("opened for the operation"),
        };
        match op {
            Op::Create { by, slot, ttl_s } => {
                let mut new = NewTask::new().id(id(slot));
                if let Some(s) = ttl_s {
                    new = new.ttl(Duration::from_secs(s.into()));
                }
                let got = through(by).create(new);
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
                by,
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
                let got = through(by).update(&id(slot), update);
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
            Op::Finish { by, slot, how } => {
                let payload = json!({"how": how, "at": now.unix_timestamp()});
                let store = through(by);
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
            Op::Delete { by, slot } => {
                assert_eq!(
                    through(by).delete(&id(slot)).unwrap(),
                    model.remove(&id(slot)).is_some()
                );
            }
            Op::Get { by, slot } => {
                match (through(by).get(&id(slot)).unwrap(), model.get(&id(slot))) {
                    (Some(t), Some(m)) => same(m, &t),
                    (None, None) => {}
                    (got, want) => panic!("get {slot} by {by:?}: store {got:?}, model {want:?}"),
                }
            }
            Op::List {
                by,
                active,
                status,
                limit,
                pages,
            } => check_pages(through(by), &model, (active, status), limit, pages),
            Op::Sweep { by } => {
                // No fault, no crash, no one else: a sweep leaves exactly
                // the live tasks' files, and counts every one it removed.
                let before = on_disk(dir.path());
                let swept = through(by).sweep().unwrap();
                assert!(
                    swept.missed.is_empty() && swept.skipped.is_empty(),
                    "{swept:?}"
                );
                let after = on_disk(dir.path());
                let live: BTreeMap<String, Vec<&str>> = model
                    .iter()
                    .map(|(id, m)| {
                        let mut areas = vec![if m.status.is_terminal() {
                            "done"
                        } else {
                            "active"
                        }];
                        if m.status.is_terminal() && m.ttl.is_some() {
                            areas.push("expiring");
                        }
                        (id.to_string(), areas)
                    })
                    .collect();
                assert_eq!(after, live, "what a sweep left");
                // Counted by task: one removed, whatever names it had.
                assert_eq!(swept.deleted, before.len() - after.len(), "{swept:?}");
            }
            Op::Advance { ms } => clock.advance(Duration::from_millis(ms.into())),
            Op::Settle => std::thread::sleep(SETTLE),
            Op::Reopen { by, first_page } => {
                let at = match by {
                    By::Notices => 0,
                    By::Status => 1,
                    By::Fresh { .. } => continue,
                };
                kept[at] = open(at == 0);
                if let Some(limit) = first_page {
                    check_pages(&kept[at], &model, (false, None), limit, Some(1));
                }
            }
        }
    }
    // Whatever happened, a reopened store agrees with the model.
    drop(kept);
    let store = open(true);
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

/// Checks the first `pages` pages of `limit` tasks that `store` lists
/// (every page if `None`) against `model`: the same tasks, in listing
/// order. `filter`: the running tasks alone or not, and one status or any.
fn check_pages(
    store: &FileStore,
    model: &BTreeMap<TaskId, M>,
    filter: (bool, Option<TaskStatus>),
    limit: u8,
    pages: Option<u8>,
) {
    let (active, status) = filter;
    let mut query = if active {
        ListQuery::active()
    } else {
        ListQuery::all()
    };
    if let Some(status) = status {
        query = query.status(status);
    }
    let mut got = Vec::new();
    let mut q = query.clone().limit(limit.into());
    for _ in 0..pages.map_or(usize::MAX, usize::from) {
        let page = store.list(&q).unwrap();
        assert!(page.skipped.is_empty(), "{:?}", page.skipped);
        got.extend(page.tasks);
        match page.next_cursor {
            Some(c) => q = query.clone().limit(limit.into()).after(&c),
            None => break,
        }
    }
    let mut want: Vec<(&TaskId, &M)> = model
        .iter()
        .filter(|(_, m)| !active || !m.status.is_terminal())
        .filter(|(_, m)| status.is_none_or(|s| m.status == s))
        .collect();
    want.sort_by_key(|(id, m)| (m.created, (*id).clone()));
    if let Some(pages) = pages {
        want.truncate(usize::from(pages) * usize::from(limit));
    }
    let ids = |tasks: Vec<&TaskId>| tasks.into_iter().cloned().collect::<Vec<_>>();
    assert_eq!(
        ids(got.iter().map(|t| &t.id).collect()),
        ids(want.iter().map(|(id, _)| *id).collect()),
        "{query:?}, {pages:?} pages of {limit}"
    );
    for (t, (_, m)) in got.iter().zip(want) {
        same(m, t);
    }
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
    fn file_store_matches_the_model(
        ops in proptest::collection::vec(op(), 1..60),
        immediate in any::<bool>(),
        large_pass in proptest::option::of(1..4usize),
    ) {
        run(ops, if immediate { Durability::Immediate } else { Durability::Eventual }, large_pass);
    }

    #[test]
    fn large_passes_match_the_model(
        ops in sweep_ops(),
        immediate in any::<bool>(),
        large_pass in 1..4usize,
    ) {
        run(ops, if immediate { Durability::Immediate } else { Durability::Eventual }, Some(large_pass));
    }
}

/// The sequence a random one rarely makes whole: finished tasks with a TTL
/// (each with its `expiring/` entry), a restarted handle's first page
/// (which places them by those entries, their status unknown), then a
/// listing of one status by the same handle, in both modes.
#[test]
fn a_restarted_handle_lists_by_status_the_history_its_first_page_placed() {
    for by in [By::Notices, By::Status] {
        let mut ops = Vec::new();
        for slot in 0..4 {
            ops.push(Op::Create {
                by,
                slot,
                ttl_s: Some(50),
            });
            ops.push(Op::Finish {
                by,
                slot,
                how: slot % 2,
            });
        }
        ops.push(Op::Settle);
        ops.push(Op::Reopen {
            by,
            first_page: Some(1),
        });
        for status in [TaskStatus::Completed, TaskStatus::Failed] {
            ops.push(Op::List {
                by,
                active: false,
                status: Some(status),
                limit: 4,
                pages: None,
            });
        }
        run(ops, Durability::Eventual, None);
    }
}
