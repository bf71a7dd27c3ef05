//! Every `Ok` reads back: arbitrary JSON payloads (nulls, booleans, big
//! integers, floats that need every digit, unicode and the characters JSON
//! escapes, values nested near and over `MAX_DEPTH`, values near and over
//! the payload cap) go through each way a host hands the store a value —
//! metadata at creation and in an update, input requests, a result, an
//! error, a resumable task's input and checkpoint, a status message. Each write is either refused with a typed error that says why
//! (`TooDeep`, `PayloadTooLarge`) and leaves the stored task as it was, or
//! accepted, and then a fresh handle reads back exactly the task the call
//! returned: a new `FileStore::open` of the same directory, a new `Store`
//! over the same `MemoryBackend`, and (with the `postgres` feature) a
//! `PgStore` of the same schema that writes nothing (it reads every task
//! from the database: a handle keeps no copy to read from).
//!
//! `PROPTEST_CASES` sets the number of cases (default 256).

use std::path::Path;
use std::sync::Arc;

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{Map, Number, Value, json};
use taskstore::{
    Error, FileStore, ListQuery, MAX_DEPTH, MIN_MAX_PAYLOAD_BYTES, MemoryBackend, NewTask, Store,
    Task, TaskId, TaskStatus, TaskStore, TaskUpdate, Transition,
};

#[cfg(feature = "postgres")]
mod common;
#[cfg(feature = "postgres")]
#[path = "common/pg.rs"]
mod pg_cluster;

/// The payload cap of the handle under test: the smallest a store takes, so
/// that a generated value is over it often enough.
const CAP: usize = MIN_MAX_PAYLOAD_BYTES;

/// Strings with what JSON escapes (quotes, backslashes, control
/// characters, U+2028/9), NUL, replacement and astral characters, or any
/// characters at all.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[\\x00-\\x1f\"\\\\/\u{7f}\u{2028}\u{2029}\u{fffd}\u{10ffff}a-zé字🦀 ]{0,12}",
        any::<String>(),
    ]
}

/// A number: integers at and near the ends of `u64` and `i64`, and every
/// finite float (its bits drawn at random, so most need all 17 digits).
fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        prop_oneof![
            Just(u64::MAX),
            Just(u64::MAX - 1),
            Just(1 << 53),
            Just((1 << 53) + 1)
        ]
        .prop_map(Value::from),
        Just(Value::from(i64::MIN)),
        any::<u64>().prop_filter_map("a finite float", |bits| {
            Number::from_f64(f64::from_bits(bits)).map(Value::Number)
        }),
        prop_oneof![
            Just(0.1),
            Just(-0.0),
            Just(f64::MAX),
            Just(f64::MIN_POSITIVE),
            Just(5e-324),
            Just(1e300),
        ]
        .prop_map(|f| json!(f)),
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        text().prop_map(Value::String),
    ]
}

/// Any value, a few levels deep and a few items wide.
fn shallow() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(6, 48, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::Array),
            btree_map(text(), inner, 0..5).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A value nested `depth` levels (arrays and objects as `kinds` says, its
/// bits read from the lowest), with `beside` next to the chain at every
/// eighth level and `leaf` at the bottom: small enough to fit the payload
/// cap at any depth tried, so that depth alone decides.
fn chain(depth: usize, kinds: u128, beside: Value, leaf: Value) -> Value {
    let mut value = leaf;
    for level in 0..depth {
        let with = level % 8 == 0;
        value = if kinds >> (level % 128) & 1 == 0 {
            let mut items = vec![value];
            if with {
                items.push(beside.clone());
            }
            Value::Array(items)
        } else {
            let mut map = Map::new();
            if with {
                map.insert("\u{0}\"".to_owned(), beside.clone());
            }
            map.insert("k".to_owned(), value);
            Value::Object(map)
        };
    }
    value
}

/// A small scalar: what sits beside a deep chain.
fn small() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        "[a-z\"\\\x00\u{2028}🦀]{0,4}".prop_map(Value::String),
    ]
}

/// Values nested near and over [`MAX_DEPTH`], and some around the JSON
/// decoder's recursion limit (128 levels, the task file's own included),
/// which a store without its depth check would accept and not read back.
fn deep() -> impl Strategy<Value = Value> {
    let depth = prop_oneof![4 => MAX_DEPTH - 3..=MAX_DEPTH + 3, 1 => 120..=135usize];
    (depth, any::<u128>(), small(), small())
        .prop_map(|(depth, kinds, beside, leaf)| chain(depth, kinds, beside, leaf))
}

/// Values near and over the payload cap.
fn large() -> impl Strategy<Value = Value> {
    prop_oneof![
        (CAP - 1_500..CAP + 500).prop_map(|n| Value::String("x".repeat(n))),
        (CAP / 12..CAP / 4).prop_map(|n| Value::String("\u{1}".repeat(n))),
        vec(number(), 100..260).prop_map(Value::Array),
    ]
}

fn payload() -> impl Strategy<Value = Value> {
    prop_oneof![6 => shallow(), 2 => deep(), 1 => large()]
}

/// How deep `value` nests: 0 for a scalar, 1 for a flat array or object.
fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// The size of `value`'s JSON (a task's, too: the payload cap is on it).
fn size(value: &impl serde::Serialize) -> usize {
    serde_json::to_vec(value).expect("a value encodes").len()
}

/// What a task takes in its encoding beyond its payloads and what it held
/// before, at most (ids, times, revision, owner, lease, the keys).
const TASK_OVERHEAD: usize = 1_000;

/// A store under test: the handle that writes, and fresh handles on the
/// same store to read back what it accepted.
struct Under<'a> {
    writer: &'a dyn TaskStore,
    fresh: &'a dyn Fn() -> taskstore::Result<Arc<dyn TaskStore>>,
    /// Put before this case's task ids (cases may share a store).
    prefix: String,
}

impl Under<'_> {
    fn id(&self, name: &str) -> TaskId {
        TaskId::parse(&format!("{}{name}", self.prefix)).expect("an id")
    }
}

/// One write of `value` to task `id`, whose stored version is `before`
/// (`None`: the write creates it): checks the outcome against the value
/// and what a fresh handle reads. Returns the task as stored after it.
fn check_write(
    under: &Under,
    id: &TaskId,
    what: &str,
    value: &Value,
    before: Option<&Task>,
    outcome: taskstore::Result<Task>,
) -> Result<Option<Task>, TestCaseError> {
    let deep = depth(value) > MAX_DEPTH;
    let fresh = (under.fresh)()
        .map_err(|e| TestCaseError::fail(format!("{what}: a fresh handle does not open: {e}")))?;
    let read = fresh.get(id).map_err(|e| {
        TestCaseError::fail(format!("{what}: a fresh handle cannot read {id}: {e}"))
    })?;
    match outcome {
        Ok(task) => {
            prop_assert!(!deep, "{what}: a value {} deep was accepted", depth(value));
            prop_assert!(
                size(&task) <= CAP,
                "{what}: a task of {} bytes was accepted under a cap of {CAP}",
                size(&task)
            );
            prop_assert_eq!(
                read.as_ref(),
                Some(&task),
                "{}: accepted, but a fresh handle reads another task",
                what
            );
            Ok(Some(task))
        }
        Err(Error::TooDeep {
            id: got,
            depth: d,
            limit,
        }) => {
            prop_assert_eq!(&got, id);
            prop_assert_eq!((d, limit), (depth(value), MAX_DEPTH), "{}", what);
            prop_assert_eq!(read.as_ref(), before, "{}: refused, yet stored", what);
            Ok(read)
        }
        Err(Error::PayloadTooLarge {
            id: got,
            size: s,
            limit,
        }) => {
            prop_assert_eq!(&got, id);
            prop_assert!(!deep, "{}: too deep, yet refused as too large", what);
            prop_assert_eq!(limit, CAP);
            prop_assert!(s > CAP, "{what}: refused at {s} bytes");
            let most = size(value) + before.map_or(0, size) + TASK_OVERHEAD;
            prop_assert!(
                most > CAP,
                "{what}: refused as too large, though it takes at most {most} bytes"
            );
            prop_assert_eq!(read.as_ref(), before, "{}: refused, yet stored", what);
            Ok(read)
        }
        Err(e) => Err(TestCaseError::fail(format!(
            "{what}: neither accepted nor refused with a typed error: {e:?}"
        ))),
    }
}

fn transition(t: taskstore::Result<Transition>) -> taskstore::Result<Task> {
    t.map(|t| {
        assert!(t.is_applied(), "every write here applies: {t:?}");
        t.into_task()
    })
}

/// Runs `value` through every way in: a create with it as metadata, an
/// update with it as metadata, an update with it as input requests, a
/// complete with it as result, a fail with it as error.
fn round_trip(under: &Under, value: &Value) -> Result<(), TestCaseError> {
    let store = under.writer;
    let id = |s: &str| under.id(s);

    let created = id("created");
    let outcome = store.create(
        NewTask::new()
            .id(created.clone())
            .metadata("v\u{0}\"", value.clone()),
    );
    check_write(under, &created, "create (metadata)", value, None, outcome)?;

    let task = id("task");
    let mut stored = Some(
        store
            .create(NewTask::new().id(task.clone()))
            .expect("create"),
    );
    let outcome = transition(store.update(&task, TaskUpdate::new().metadata("v", value.clone())));
    stored = check_write(
        under,
        &task,
        "update (metadata)",
        value,
        stored.as_ref(),
        outcome,
    )?;
    let outcome = transition(
        store.update(
            &task,
            TaskUpdate::new()
                .status(TaskStatus::InputRequired)
                .input_requests(value.clone()),
        ),
    );
    stored = check_write(
        under,
        &task,
        "update (input requests)",
        value,
        stored.as_ref(),
        outcome,
    )?;
    let outcome = transition(store.complete(&task, value.clone()));
    check_write(
        under,
        &task,
        "complete (result)",
        value,
        stored.as_ref(),
        outcome,
    )?;

    let failed = id("failed");
    let stored = store
        .create(NewTask::new().id(failed.clone()))
        .expect("create");
    let outcome = transition(store.fail(&failed, value.clone()));
    check_write(
        under,
        &failed,
        "fail (error)",
        value,
        Some(&stored),
        outcome,
    )?;

    // Resume state: the input a resumable task is made with, a checkpoint
    // it records, and a status message (the value's text).
    let resumable = id("resumable");
    let outcome = store.create(
        NewTask::new()
            .id(resumable.clone())
            .resumable("kind", value.clone()),
    );
    let stored = check_write(
        under,
        &resumable,
        "create (resume input)",
        value,
        None,
        outcome,
    )?;
    if let Some(stored) = stored {
        let outcome =
            transition(store.update(&resumable, TaskUpdate::new().checkpoint(value.clone())));
        let stored = check_write(
            under,
            &resumable,
            "update (checkpoint)",
            value,
            Some(&stored),
            outcome,
        )?;
        let message = match value {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        let outcome =
            transition(store.update(&resumable, TaskUpdate::new().status_message(message)));
        check_write(
            under,
            &resumable,
            "update (status message)",
            value,
            stored.as_ref(),
            outcome,
        )?;
    }
    Ok(())
}

/// [`round_trip`] on a file store at `root`, and then nothing was set aside
/// or left half written on the way.
fn round_trip_in_files(root: &Path, value: &Value) -> Result<(), TestCaseError> {
    let open = || {
        FileStore::builder(root)
            .max_payload_bytes(CAP)
            .open()
            .map(|store| Arc::new(store) as Arc<dyn TaskStore>)
    };
    let writer = open().expect("open");
    let under = Under {
        writer: &*writer,
        fresh: &open,
        prefix: String::new(),
    };
    round_trip(&under, value)?;
    let fresh = FileStore::open(root).expect("open");
    let page = fresh.list(&ListQuery::all()).expect("list");
    prop_assert!(page.skipped.is_empty(), "{:?}", page.skipped);
    for dir in ["tmp", "quarantine"] {
        let left = std::fs::read_dir(root.join(dir))
            .expect("a store directory")
            .count();
        prop_assert_eq!(left, 0, "{} files in {}/", left, dir);
    }
    Ok(())
}

/// Temp directories on tmpfs when there is one: the reads are the point,
/// not the disk.
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::Builder::new()
            .prefix("taskstore-reads-back")
            .tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().expect("a temporary directory")
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .map(|v| v.parse().expect("PROPTEST_CASES is a number"))
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn every_accepted_payload_reads_back_from_a_fresh_handle(value in payload()) {
        let dir = scratch();
        round_trip_in_files(&dir.path().join("store"), &value)?;
    }

    #[test]
    fn every_accepted_payload_reads_back_from_a_fresh_memory_handle(value in payload()) {
        let backend = MemoryBackend::new();
        let open = || {
            Store::with_backend(backend.clone())
                .max_payload_bytes(CAP)
                .build()
                .map(|store| Arc::new(store) as Arc<dyn TaskStore>)
        };
        let writer = open().expect("build");
        round_trip(&Under { writer: &*writer, fresh: &open, prefix: String::new() }, &value)?;
    }
}

/// Over PostgreSQL: one schema for every case (each case's ids are its
/// own), written by one handle and read back by another that writes
/// nothing, as another instance of the service would.
#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use taskstore::PgStore;

    /// The writer and the reader.
    type Pair = (Arc<dyn TaskStore>, Arc<dyn TaskStore>);

    /// The writer and the reader, on a schema of their own.
    fn handles() -> Option<&'static Pair> {
        static HANDLES: OnceLock<Option<Pair>> = OnceLock::new();
        HANDLES
            .get_or_init(|| {
                let cluster = super::pg_cluster::shared()?;
                let schema = super::pg_cluster::fresh_schema("reads_back");
                let open = |instance: &str| {
                    Arc::new(
                        PgStore::builder(cluster.conninfo())
                            .schema(&schema)
                            .instance_id(instance)
                            .max_payload_bytes(CAP)
                            .open()
                            .unwrap_or_else(|e| panic!("open schema {schema}: {e}")),
                    ) as Arc<dyn TaskStore>
                };
                Some((open("writer"), open("reader")))
            })
            .as_ref()
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: cases(),
            ..ProptestConfig::default()
        })]

        #[test]
        fn every_accepted_payload_reads_back_from_another_postgres_handle(value in payload()) {
            // Skipped, said once, without PostgreSQL (an error where it is required).
            let Some((writer, reader)) = handles() else { return Ok(()) };
            static CASE: AtomicUsize = AtomicUsize::new(0);
            let case = CASE.fetch_add(1, Ordering::Relaxed);
            let fresh = || Ok(Arc::clone(reader));
            round_trip(&Under { writer: &**writer, fresh: &fresh, prefix: format!("c{case}-") }, &value)?;
        }
    }
}

/// The generator reaches every outcome the property distinguishes: values
/// accepted, refused as too deep, refused as too large; deep values on
/// both sides of the limit.
#[test]
fn the_payloads_cover_every_outcome() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let (mut at_limit, mut too_deep, mut too_large, mut fits) = (0, 0, 0, 0);
    for _ in 0..500 {
        let value = payload().new_tree(&mut runner).expect("a value").current();
        let d = depth(&value);
        if d == MAX_DEPTH {
            at_limit += 1;
        } else if d > MAX_DEPTH {
            too_deep += 1;
        } else if size(&value) > CAP {
            too_large += 1;
        } else {
            fits += 1;
        }
    }
    assert!(
        at_limit > 0 && too_deep > 0 && too_large > 0 && fits > 0,
        "at the depth limit {at_limit}, over it {too_deep}, over the cap {too_large}, fits {fits}"
    );
}

/// A resumable task's settings read back as the host gave them, whichever
/// builder call came first: `max_attempts` before `resumable` is not
/// dropped for the default (a host that asks for one attempt, for work
/// that must not run twice, must not get three). Read back from a fresh
/// file store handle, as every payload above.
#[test]
fn max_attempts_reads_back_whether_given_before_or_after_resumable() {
    let dir = scratch();
    let root = dir.path().join("store");
    let store = FileStore::open(&root).expect("open");
    for attempts in [1, 7, u32::MAX] {
        let before = store
            .create(
                NewTask::new()
                    .max_attempts(attempts)
                    .resumable("kind", json!({"n": attempts})),
            )
            .expect("create");
        let after = store
            .create(
                NewTask::new()
                    .resumable("kind", json!({"n": attempts}))
                    .max_attempts(attempts),
            )
            .expect("create");
        let fresh = FileStore::open(&root).expect("open");
        for (order, task) in [("before", before), ("after", after)] {
            let read = fresh.get(&task.id).expect("get").expect("the task");
            assert_eq!(read, task, "max_attempts {order} resumable: read back");
            let resume = read.resume.expect("a resumable task");
            assert_eq!(
                (resume.max_attempts, resume.attempts),
                (attempts, 1),
                "max_attempts({attempts}) {order} resumable"
            );
        }
    }
    // Still of no effect on a task that is not resumable.
    let plain = store
        .create(NewTask::new().max_attempts(5))
        .expect("create");
    assert_eq!(plain.resume, None);
}
