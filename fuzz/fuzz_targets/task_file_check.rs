//! The task-file decoder, through the public API only.
//!
//! Each input is written as `active/<id>.json` (and then, alone, as
//! `done/<id>.json`) of a store created once per process, and read back with
//! `get`, `list(ListQuery::all())` and an `update`.
//!
//! Properties:
//! - nothing panics;
//! - `get` returns `Ok(Some(task))` with `task.id` the file's id, or
//!   `Err(Corrupt | UnsupportedFormat | Io)` naming the file's path, nothing
//!   else (its clock stands before any date a file can hold, so nothing is
//!   expired); a task it returns is what the file says (an independent
//!   reading through `serde_json::Value`), and `UnsupportedFormat` names
//!   the file's format;
//! - a task that decodes encodes and decodes to the same task;
//! - a listing never fails on a bad file: it returns the task, or nothing
//!   and the file is set aside in `quarantine/` (a newer-format file is
//!   reported and left in place);
//! - a handle whose clock stands at the end of time sees every task without
//!   a TTL and none whose `createdAt + ttl` lies before that instant;
//! - an `update` fails as `get` did, or applies to the task as read: the
//!   revision up by one, the rest unchanged (a terminal task is returned
//!   untouched, an expired one is not found), and what it wrote reads back.
//!
//! Memory stays bounded: run with `-rss_limit_mb`.

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value;
use taskstore::{
    Error, FileStore, ListQuery, ManualClock, Task, TaskId, TaskStore, TaskUpdate, Transition,
    UnreadableAction,
};
use time::{OffsetDateTime, PrimitiveDateTime};

use crate::common::{StoreConfig, count_entries, empty_dir, file_store};

/// The id every input is stored under (the seeds use it).
const ID: &str = "fuzz-task";

struct Ctx {
    /// Beside the store: where an input is written before it is renamed in.
    incoming: PathBuf,
    root: PathBuf,
    id: TaskId,
    /// Clock at the earliest time `time` knows: no file's task is expired.
    early: FileStore,
    /// Clock at the latest time: every task with a TTL is expired.
    late: FileStore,
    /// Clock in the present, for the `update`.
    writer: FileStore,
    writer_now: OffsetDateTime,
}

fn ctx() -> &'static Ctx {
    static CTX: OnceLock<Ctx> = OnceLock::new();
    CTX.get_or_init(|| {
        let scratch = crate::common::scratch_dir("task_file");
        let root = scratch.join("store");
        let open = |at: OffsetDateTime, instance: &str| {
            let clock = ManualClock::new(at);
            file_store(&root, &StoreConfig::new(&clock, instance)).expect("open the store")
        };
        let writer_now = OffsetDateTime::from_unix_timestamp_nanos(1_780_000_000_123_456_789)
            .expect("a valid time");
        Ctx {
            incoming: scratch.join("incoming.json"),
            id: TaskId::parse(ID).expect("a valid id"),
            early: open(PrimitiveDateTime::MIN.assume_utc(), "early"),
            late: open(PrimitiveDateTime::MAX.assume_utc(), "late"),
            writer: open(writer_now, "writer"),
            writer_now,
            root,
        }
    })
}

#[derive(Clone, Copy, Debug)]
enum Area {
    Active,
    Done,
}

impl Area {
    fn dir(self) -> &'static str {
        match self {
            Area::Active => "active",
            Area::Done => "done",
        }
    }
}

/// Checks one input, panicking at the first property it breaks.
pub fn check_input(data: &[u8]) {
    let ctx = ctx();
    check(ctx, Area::Active, data);
    check(ctx, Area::Done, data);
}

fn check(ctx: &Ctx, area: Area, data: &[u8]) {
    let path = ctx.root.join(area.dir()).join(format!("{ID}.json"));
    // A new file renamed into place, as every writer of a store does.
    std::fs::write(&ctx.incoming, data).expect("write the input");
    std::fs::rename(&ctx.incoming, &path).expect("rename the input into the store");

    let got = ctx.early.get(&ctx.id);
    let task = match &got {
        Ok(Some(task)) => {
            assert_eq!(task.id, ctx.id, "get returned another task");
            Some(task.clone())
        }
        Ok(None) => panic!("get found no task in {}", path.display()),
        Err(Error::Corrupt { path: p, reason }) => {
            assert_eq!(p, &path, "Corrupt names the file");
            assert!(!reason.is_empty());
            None
        }
        Err(Error::UnsupportedFormat {
            path: p,
            found,
            supported,
        }) => {
            assert_eq!(p, &path, "UnsupportedFormat names the file");
            assert!(
                found > supported,
                "format {found} is not newer than {supported}"
            );
            if let Some(format) = format_field(data) {
                assert_eq!(format, Some(*found), "the format found is the file's");
            }
            None
        }
        Err(Error::Io { path: p, .. }) => {
            assert_eq!(p, &path, "Io names the file");
            None
        }
        Err(other) => panic!("get: unexpected error {other:?}"),
    };

    match (&task, &got) {
        (Some(task), _) => {
            independent_reading_agrees(data, task);
            round_trips(task);
        }
        // A write of an unreadable task reports what a read reports.
        (None, Err(read)) => {
            let write = ctx
                .writer
                .update(&ctx.id, TaskUpdate::new())
                .expect_err("an unreadable task was updated");
            assert_eq!(
                std::mem::discriminant(&write),
                std::mem::discriminant(read),
                "update: {write:?}, get: {read:?}"
            );
            assert_eq!(write.to_string(), read.to_string());
        }
        (None, Ok(_)) => unreachable!(),
    }

    // A listing never fails: it shows the task, or sets the file aside.
    let page = ctx
        .early
        .list(&ListQuery::all())
        .expect("a bad file never fails a listing");
    let quarantine = ctx.root.join("quarantine");
    match &task {
        Some(task) => {
            assert_eq!(page.tasks, vec![task.clone()], "the listing shows the task");
            assert_eq!(count_entries(&quarantine), 0, "a readable file is kept");
        }
        // A file of a newer format is another version's to read: reported
        // and left in place.
        None if matches!(got, Err(Error::UnsupportedFormat { .. })) => {
            assert!(page.tasks.is_empty(), "an unreadable file lists nothing");
            assert!(path.exists(), "a newer-format file is left in place");
            assert_eq!(count_entries(&quarantine), 0, "nothing set aside");
            assert_eq!(page.skipped.len(), 1, "and reported: {:?}", page.skipped);
            assert_eq!(page.skipped[0].action, UnreadableAction::LeftInPlace);
        }
        None => {
            assert!(page.tasks.is_empty(), "an unreadable file lists nothing");
            assert!(!path.exists(), "an unreadable file is set aside");
            assert_eq!(count_entries(&quarantine), 1, "set aside in quarantine/");
            empty_dir(&quarantine);
        }
    }
    assert_eq!(page.next_cursor, None);

    // The update first: a handle that saw the task expire deletes it, so
    // the handle at the end of time goes last.
    if let Some(task) = &task
        && let Some(now) = update(ctx, task)
    {
        at_the_end_of_time(ctx, &now);
    }

    // Whatever is left (the file may have moved to done/) goes.
    for dir in ["active", "done", "quarantine"] {
        empty_dir(&ctx.root.join(dir));
    }
}

/// The `format` of the envelope, read as a plain JSON value; `None` if the
/// file cannot be read whole (see `independent_reading_agrees`).
fn format_field(data: &[u8]) -> Option<Option<u64>> {
    let value = read_whole(data).ok()?;
    Some(value.get("format").and_then(Value::as_u64))
}

/// The file as one JSON value. Bytes that are not UTF-8 read as U+FFFD:
/// serde_json does not check the strings of the fields it skips, so the
/// store reads a file with such bytes in a field it ignores.
fn read_whole(data: &[u8]) -> serde_json::Result<Value> {
    serde_json::from_slice(data).or_else(|e| {
        let lossy = String::from_utf8_lossy(data);
        if lossy.len() == data.len() && lossy.as_bytes() == data {
            return Err(e);
        }
        serde_json::from_str(&lossy)
    })
}

/// What the store read is what the file says: a `{"format":1,"task":…}`
/// object whose `task`, read on its own, is the same task.
fn independent_reading_agrees(data: &[u8], task: &Task) {
    // Read whole, the file nests one level deeper than the task the store
    // reads on its own (at the limit only the store can read it), and the
    // store skips unknown fields unread (a number out of range there is no
    // error to it): then there is no independent reading.
    let Ok(value) = read_whole(data) else {
        return;
    };
    assert_eq!(
        value.get("format").and_then(Value::as_u64),
        Some(1),
        "format 1"
    );
    let inner: Task = serde_json::from_value(value["task"].clone())
        .expect("the store read a task the file does not hold");
    assert_eq!(&inner, task, "the store misread the task");
}

/// A decoded task encodes and decodes to itself.
fn round_trips(task: &Task) {
    let text = serde_json::to_string(task).expect("a decoded task encodes");
    let back: Task = serde_json::from_str(&text).expect("an encoded task decodes");
    assert_eq!(&back, task, "the task changed in a round trip: {text}");
}

/// A handle at the last instant `time` knows sees a task unless it has a
/// TTL and `createdAt + ttl` lies before that instant (computed here in
/// plain nanoseconds); past the end of time the store may saturate.
fn at_the_end_of_time(ctx: &Ctx, task: &Task) {
    let got = ctx.late.get(&ctx.id).expect("a readable file reads again");
    let now = PrimitiveDateTime::MAX.assume_utc().unix_timestamp_nanos();
    match task.ttl {
        None => assert_eq!(got.as_ref(), Some(task), "no TTL: never expired"),
        Some(ttl) => {
            let expires = task.created_at.unix_timestamp_nanos() + ttl.as_nanos() as i128;
            if expires <= now {
                assert_eq!(got, None, "expired at {expires} ns, now is {now} ns");
            } else if let Some(got) = got {
                assert_eq!(&got, task);
            }
        }
    }
}

/// An update applies to the task as read (or reports it terminal or
/// expired), and what it wrote reads back; the task as it is now, unless
/// it expired.
fn update(ctx: &Ctx, task: &Task) -> Option<Task> {
    let now = ctx.writer_now;
    let expired = task.ttl.is_some_and(|ttl| {
        task.created_at.unix_timestamp_nanos() + ttl.as_nanos() as i128
            <= now.unix_timestamp_nanos()
    });
    let got = ctx
        .writer
        .update(&ctx.id, TaskUpdate::new().metadata("fuzzed", true));
    match got {
        Err(Error::NotFound { id }) => {
            assert!(expired, "a live task was not found");
            assert_eq!(id, ctx.id);
            None
        }
        Ok(Transition::AlreadyTerminal(t)) => {
            assert!(!expired && task.is_terminal(), "{t:?}");
            assert_eq!(&t, task, "a terminal task is returned untouched");
            Some(t)
        }
        Ok(Transition::Applied(t)) => {
            assert!(!expired && !task.is_terminal(), "{t:?}");
            let mut want = task.clone();
            want.metadata.insert("fuzzed".into(), Value::Bool(true));
            want.last_updated_at = now;
            want.revision = task.revision + 1;
            // No lease is renewed: only the owner's writes renew it, and an
            // owner is an instance id and the token of one open, random, which
            // no file written here carries.
            assert_eq!(t, want, "the update changed more than it said");
            let back = ctx.early.get(&ctx.id).expect("an updated task reads back");
            assert_eq!(back.as_ref(), Some(&t), "the written task reads back");
            Some(t)
        }
        Err(Error::RevisionOverflow { id }) => {
            assert!(!expired && !task.is_terminal() && task.revision == u64::MAX);
            assert_eq!(id, ctx.id);
            Some(task.clone())
        }
        Ok(other) => panic!("update of a readable task: {other:?}"),
        Err(other) => panic!("update of a readable task: {other:?}"),
    }
}
