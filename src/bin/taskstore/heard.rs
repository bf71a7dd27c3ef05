//! What a command hears from its handle as the handle works: the store's
//! events ([`EventSink`]), said the moment the store tells them rather
//! than held until the call returns. A sweep returns only how many tasks
//! it deleted; its events name each one (told once its removals are
//! durable, at the end of its pass; past 10,000, as it goes), so the
//! command lists them (and a
//! reap's, as it goes, with the status and expiry a reap returns none of),
//! however many there are (written by a thread of their own,
//! `text::out_as_it_goes`, so that a slow reader never holds the call
//! up). And every entry the handle could
//! not read or set aside is said on stderr: those of a listing or a pass,
//! and those its open set aside (foreign entries of `tmp/`), which no call
//! returns.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use serde_json::Value;
use taskstore::backend::Skipped;
use taskstore::{Event, EventSink, TaskEventKind};
use time::OffsetDateTime;

use crate::text;

/// What a command's handle says as it goes.
#[derive(Debug, Default)]
pub struct Heard {
    /// Each task a sweep or a reap deletes, on stdout (`task.expired`: the
    /// handle of a pass deletes no expired task but the pass's), as text or
    /// JSON, and what the text adds.
    deleted: Option<(Shape, &'static str)>,
    /// Each entry it could not read or set aside, on stderr, once
    /// (`task.unreadable`): `None` for a command that says them itself.
    unreadable: Option<Mutex<HashSet<String>>>,
}

impl Heard {
    /// Says nothing: the command says what it reads itself (a dry run
    /// over PostgreSQL, `stats`).
    pub fn nothing() -> Heard {
        Heard::default()
    }

    /// Says each entry the handle could not read or set aside.
    pub fn unreadable() -> Heard {
        Heard {
            unreadable: Some(Mutex::default()),
            ..Heard::default()
        }
    }

    /// [`unreadable`](Heard::unreadable), and each expired task a pass
    /// deletes (as JSON, with `json`; else as text, with `note` after).
    pub fn deletions(json: bool, note: &'static str) -> Heard {
        let shape = if json { Shape::Json } else { Shape::Text };
        Heard {
            deleted: Some((shape, note)),
            ..Heard::unreadable()
        }
    }
}

/// How a result is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Text,
    Json,
}

impl EventSink for Heard {
    fn emit(&self, event: &Event) {
        let field = |name: &str| event.data.get(name).and_then(Value::as_str);
        if let Some((shape, note)) = self.deleted
            && event.kind == TaskEventKind::Expired
        {
            let (id, status) = (field("taskId").unwrap_or("?"), field("status"));
            let line = crate::maintain::deletion(
                id,
                status,
                event.expired_at(),
                OffsetDateTime::now_utc(),
                false,
                shape == Shape::Json,
                |ago| {
                    format!(
                        "deleted {id}  {}  expired {ago} ago{note}",
                        status.unwrap_or("?")
                    )
                },
            );
            text::out_as_it_goes(line);
        } else if let Some(said) = &self.unreadable
            && let Some(skipped) = Skipped::from_event(event)
        {
            // A listing of several pages meets an entry it left in place
            // on each.
            let new = said
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(skipped.location.clone());
            if !new {
                return;
            }
            text::err(text::skipped(&skipped));
        }
    }
}
