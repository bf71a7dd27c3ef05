//! The input of the `ops` target: operations and the values they carry,
//! decoded from the fuzzer's bytes with `arbitrary`.

use std::time::Duration;

use arbitrary::Arbitrary;
use serde_json::{Map, Value, json};
use taskstore::TaskStatus;

use crate::common::known::{self, Bug};

/// The payload cap of the stores under test: small, so that the fuzzer
/// reaches it.
pub const MAX_PAYLOAD_BYTES: usize = 2 * 1024;

#[derive(Arbitrary, Debug)]
pub struct Input {
    pub start_ms: u32,
    pub ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
pub enum Op {
    Create(Create),
    Update(Update),
    Complete {
        slot: u8,
        result: Json,
    },
    Fail {
        slot: u8,
        error: Json,
    },
    Cancel {
        slot: u8,
        message: Option<Text>,
    },
    Delete {
        slot: u8,
    },
    Get {
        slot: u8,
    },
    List {
        active: bool,
        status: Option<Status>,
        limit: u8,
    },
    ListWithCursor(ListWithCursor),
    Sweep,
    Advance {
        ms: u16,
    },
    AdvanceLong {
        s: u16,
    },
    RenewLease {
        slot: u8,
    },
    ReapOrphans,
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
    /// Pads the metadata so the task is this many bytes under the
    /// payload cap: the edge no random payload finds.
    pub below_cap: Option<u8>,
}

#[derive(Arbitrary, Debug)]
pub struct Update {
    pub slot: u8,
    pub status: Option<Status>,
    pub message: Option<Text>,
    pub input: Option<Json>,
    pub poll: Option<Millis>,
    pub metadata: Vec<(Text, Json)>,
}

#[derive(Arbitrary, Debug)]
pub struct ListWithCursor {
    pub active: bool,
    pub cursor: Cursor,
    pub limit: u8,
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

impl Json {
    /// The value, at most `max_depth` deep (a scalar is 0 deep).
    pub fn value(&self, max_depth: usize) -> Value {
        let mut budget = NODE_BUDGET;
        self.build(max_depth, &mut budget)
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
            // Not finite: `Value::Null`.
            Json::F64(x) => Value::from(if known::avoid(Bug::FloatDrift) {
                known::stable_float(*x)
            } else {
                *x
            }),
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
                let depth = usize::from(*depth).min(max_depth).min(*budget);
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

/// How deep a payload may be: past the depth the store reads back, unless
/// steering around that known bug. Bounded all the same: the harness and
/// serde_json recurse over payloads, and a caller that builds a payload
/// deep enough to overflow a stack overflows its own.
pub fn payload_depth() -> usize {
    if known::avoid(Bug::DeepPayload) {
        known::READABLE_PAYLOAD_DEPTH
    } else {
        512
    }
}

/// A `result`, `error` or `inputRequests` payload.
pub fn payload(json: &Json) -> Value {
    let value = json.value(payload_depth());
    if known::avoid(Bug::NullPayload) && value.is_null() {
        return json!({});
    }
    value
}

/// A metadata value sits one level deeper than a payload.
pub fn metadata_depth() -> usize {
    payload_depth().saturating_sub(1)
}

/// Host metadata: the first few entries (a later one with an earlier key
/// replaces it).
pub fn metadata(entries: &[(Text, Json)]) -> Map<String, Value> {
    let mut budget = NODE_BUDGET;
    let mut map = Map::new();
    for (k, v) in entries.iter().take(8) {
        map.insert(k.string(), v.build(metadata_depth(), &mut budget));
    }
    map
}
