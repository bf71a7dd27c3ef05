//! The input of the `ops` target: operations and the values they carry,
//! decoded from the fuzzer's bytes with `arbitrary`.

use std::time::Duration;

use arbitrary::Arbitrary;
use serde_json::{Map, Value, json};
use taskstore::{MAX_DEPTH, TaskStatus};

#[derive(Arbitrary, Debug)]
pub struct Input {
    pub start_ms: u32,
    pub ops: Vec<Op>,
}

/// Which handle makes a call: the main handle (the one `Reopen` replaces),
/// a second instance (the one that claims orphans), or a third instance
/// with a larger payload cap (whose tasks may be over the other handles'
/// cap).
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    Main,
    Claimer,
    Big,
}

#[derive(Arbitrary, Debug)]
pub enum Op {
    Create {
        by: Who,
        create: Create,
    },
    Update {
        by: Who,
        update: Update,
    },
    Complete {
        by: Who,
        slot: u8,
        result: Json,
    },
    Fail {
        by: Who,
        slot: u8,
        error: Json,
    },
    Cancel {
        by: Who,
        slot: u8,
        message: Option<Text>,
    },
    /// `finish_fenced`: an outcome only while the task is at `epoch`.
    FinishFenced {
        by: Who,
        slot: u8,
        outcome: Finish,
        epoch: Epoch,
    },
    /// An update that saves a checkpoint, fenced to `epoch` (or not).
    Checkpoint {
        by: Who,
        slot: u8,
        checkpoint: Json,
        epoch: Option<Epoch>,
    },
    Delete {
        by: Who,
        slot: u8,
    },
    Get {
        by: Who,
        slot: u8,
    },
    /// Every page of a listing (`limit` of them at a time, `Some(0)`
    /// included), following the cursors.
    List {
        by: Who,
        active: bool,
        status: Option<Status>,
        limit: Option<u8>,
    },
    ListWithCursor(ListWithCursor),
    Sweep {
        by: Who,
    },
    Advance {
        ms: u16,
    },
    AdvanceLong {
        s: u16,
    },
    /// Sets the clock back: the handles' time must not follow it.
    StepBack {
        ms: u32,
    },
    RenewLease {
        by: Who,
        slot: u8,
    },
    /// `renew_leases`: every lease the handle holds.
    RenewLeases {
        by: Who,
    },
    ReapOrphans {
        by: Who,
    },
    Claim {
        by: Who,
        kinds: Vec<Kind>,
    },
    /// Moves the clock past one lease, then the second instance claims.
    ClaimAfterLease {
        kinds: Vec<Kind>,
    },
    /// Drops the main handle and opens it again: as the same instance id
    /// (which then owns none of the earlier handle's tasks) or a new one.
    Reopen {
        new_instance: bool,
    },
}

#[derive(Arbitrary, Debug)]
pub struct Create {
    pub random_id: bool,
    pub slot: u8,
    pub ttl: Option<Ttl>,
    pub poll: Option<Millis>,
    pub message: Option<Text>,
    pub metadata: Vec<(Text, Json)>,
    pub resumable: Option<Resumable>,
    /// Pads the metadata so the task is this many bytes under the
    /// creating handle's payload cap: the edge no random payload finds.
    pub below_cap: Option<u8>,
}

/// `NewTask::resumable(kind, input)`, with `max_attempts(n)` called after
/// it, or before it (to the same effect).
#[derive(Arbitrary, Debug)]
pub struct Resumable {
    pub kind: Kind,
    pub input: Json,
    pub max_attempts: Option<u8>,
    pub max_attempts_first: bool,
}

#[derive(Arbitrary, Debug)]
pub struct Update {
    pub slot: u8,
    pub status: Option<Status>,
    pub message: Option<Text>,
    pub input: Option<Json>,
    pub poll: Option<Millis>,
    pub metadata: Vec<(Text, Json)>,
    pub checkpoint: Option<Json>,
    pub fence: Option<Epoch>,
}

#[derive(Arbitrary, Debug)]
pub struct ListWithCursor {
    pub by: Who,
    pub active: bool,
    pub cursor: Cursor,
    pub limit: Option<u8>,
}

/// The outcome of a `finish_fenced`.
#[derive(Arbitrary, Debug)]
pub enum Finish {
    Completed(Json),
    Failed(Json),
    Cancelled(Option<Text>),
}

/// The epoch a fenced write names, relative to the task's as the model
/// has it: the current one, an older one (the epoch before a claim), a
/// later one, or any.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Epoch {
    Current,
    Previous,
    Next,
    Raw(u64),
}

impl Epoch {
    pub fn resolve(self, current: u64) -> u64 {
        match self {
            Epoch::Current => current,
            Epoch::Previous => current.saturating_sub(1),
            Epoch::Next => current.saturating_add(1),
            Epoch::Raw(epoch) => epoch,
        }
    }
}

/// The kind of a resumable task, and what a claim resumes.
#[derive(Arbitrary, Clone, Debug)]
pub enum Kind {
    Alpha,
    Beta,
    Other(Text),
}

impl Kind {
    pub fn string(&self) -> String {
        match self {
            Kind::Alpha => "alpha".to_owned(),
            Kind::Beta => "beta".to_owned(),
            Kind::Other(text) => text.string(),
        }
    }
}

#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Status {
    Working,
    InputRequired,
    Completed,
    Failed,
    Cancelled,
}

impl Status {
    pub fn to_status(self) -> TaskStatus {
        match self {
            Status::Working => TaskStatus::Working,
            Status::InputRequired => TaskStatus::InputRequired,
            Status::Completed => TaskStatus::Completed,
            Status::Failed => TaskStatus::Failed,
            Status::Cancelled => TaskStatus::Cancelled,
        }
    }
}

/// A TTL: short, long (with a sub-millisecond part the store drops), or
/// the longest a `Duration` holds.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Ttl {
    Millis(u16),
    Seconds(u16, u32),
    Max,
}

impl Ttl {
    pub fn duration(self) -> Duration {
        match self {
            Ttl::Millis(ms) => Duration::from_millis(ms.into()),
            Ttl::Seconds(s, ns) => Duration::new(s.into(), ns % 1_000_000_000),
            Ttl::Max => Duration::MAX,
        }
    }
}

/// A poll interval, possibly with a sub-millisecond part.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub struct Millis(pub u32, pub u16);

impl Millis {
    pub fn duration(self) -> Duration {
        Duration::from_millis(self.0.into()) + Duration::from_nanos(self.1.into())
    }
}

/// What the store keeps of a duration: whole milliseconds, at most
/// `u64::MAX` of them.
pub fn whole_millis(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A string: anything, or one of the odd ones.
#[derive(Arbitrary, Clone, Debug)]
pub enum Text {
    Any(String),
    Odd(u8),
    Long { len: u16, ch: char },
}

const ODD_STRINGS: &[&str] = &[
    "",
    "\0",
    "\u{2028}\u{2029}",
    "\"\\/\n\r\t\u{8}\u{c}",
    "\u{7f}\u{1b}[0m",
    "\u{feff}",
    "é",
    "😀",
    "\u{10ffff}",
    "\u{fffd}",
    "{\"format\":2}",
    "null",
    "..",
    "../../etc/passwd",
    "-0",
    "1e999",
    "alpha",
];

impl Text {
    pub fn string(&self) -> String {
        match self {
            Text::Any(s) => s.clone(),
            Text::Odd(i) => ODD_STRINGS[usize::from(*i) % ODD_STRINGS.len()].to_owned(),
            // Long enough to reach the payload cap.
            Text::Long { len, ch } => std::iter::repeat_n(*ch, usize::from(*len) % 2_500).collect(),
        }
    }
}

/// A cursor no listing handed out: any text, or text of the shape the
/// store's own cursors have (`c1.<nanoseconds>.<id>`), with any parts.
#[derive(Arbitrary, Clone, Debug)]
pub enum Cursor {
    Text(Text),
    Shaped { nanos: i64, offset: i64, id: Text },
}

impl Cursor {
    pub fn string(&self) -> String {
        match self {
            Cursor::Text(text) => text.string(),
            Cursor::Shaped { nanos, offset, id } => {
                let base = 1_780_000_000_000_000_000_i128 + i128::from(*offset);
                let nanos = if *nanos == 0 {
                    base
                } else {
                    i128::from(*nanos)
                };
                format!("c1.{nanos}.{}", id.string())
            }
        }
    }
}

/// A JSON payload.
#[derive(Arbitrary, Clone, Debug)]
pub enum Json {
    Null,
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Str(Text),
    Array(Vec<Json>),
    Object(Vec<(Text, Json)>),
    /// `leaf` inside `depth` arrays or objects.
    Nested {
        depth: u8,
        objects: bool,
        leaf: Box<Json>,
    },
    Repeat {
        times: u8,
        item: Box<Json>,
    },
}

/// Keeps generated payloads small enough to build fast: one unit per
/// value or level of nesting, and one per 16 bytes of string; one budget
/// for a payload, one for all the metadata of a call.
const NODE_BUDGET: usize = 512;

/// How deep a generated value may nest: a little past what the store
/// accepts (`MAX_DEPTH`), so that both sides of the limit are reached.
/// Bounded all the same: the harness and serde_json recurse over payloads.
pub const GENERATED_DEPTH: usize = MAX_DEPTH + 8;

impl Json {
    /// The value, at most `GENERATED_DEPTH` deep (a scalar is 0 deep).
    pub fn value(&self) -> Value {
        let mut budget = NODE_BUDGET;
        self.build(GENERATED_DEPTH, &mut budget)
    }

    fn build(&self, max_depth: usize, budget: &mut usize) -> Value {
        if *budget == 0 {
            return Value::Null;
        }
        *budget -= 1;
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::I64(n) => Value::from(*n),
            Json::U64(n) => Value::from(*n),
            // Not finite: `Value::from` makes it null.
            Json::F64(x) => Value::from(*x),
            Json::Str(s) => {
                let s = s.string();
                let cost = s.len() / 16;
                if cost > *budget {
                    *budget = 0;
                    return Value::Null;
                }
                *budget -= cost;
                Value::String(s)
            }
            Json::Array(_) | Json::Object(_) | Json::Nested { .. } | Json::Repeat { .. }
                if max_depth == 0 =>
            {
                Value::Null
            }
            Json::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|j| j.build(max_depth - 1, budget))
                    .collect(),
            ),
            Json::Object(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, j)| (k.string(), j.build(max_depth - 1, budget)))
                    .collect(),
            ),
            Json::Nested {
                depth,
                objects,
                leaf,
            } => {
                // Spread over 0..=GENERATED_DEPTH, so that most nested
                // values are accepted and some are one or a few levels
                // too deep.
                let depth = (usize::from(*depth) % (GENERATED_DEPTH + 1))
                    .min(max_depth)
                    .min(*budget);
                *budget -= depth;
                let mut value = leaf.build(max_depth - depth, budget);
                for _ in 0..depth {
                    value = if *objects {
                        json!({ "a": value })
                    } else {
                        json!([value])
                    };
                }
                value
            }
            Json::Repeat { times, item } => {
                let before = *budget;
                let item = item.build(max_depth - 1, budget);
                let cost = (before - *budget).max(1);
                let times = usize::from(*times).min(1 + *budget / cost);
                *budget -= times.saturating_sub(1) * cost;
                Value::Array(vec![item; times])
            }
        }
    }
}

/// A `result`, `error`, `inputRequests`, resumable input or checkpoint
/// payload (JSON `null` included: it reads back as `Some(Null)`).
pub fn payload(json: &Json) -> Value {
    json.value()
}

/// Host metadata: the first few entries (a later one with an earlier key
/// replaces it).
pub fn metadata(entries: &[(Text, Json)]) -> Map<String, Value> {
    let mut budget = NODE_BUDGET;
    let mut map = Map::new();
    for (k, v) in entries.iter().take(8) {
        map.insert(k.string(), v.build(GENERATED_DEPTH, &mut budget));
    }
    map
}
