//! What a command hears from its handle as the handle works: the store's
//! events ([`EventSink`]), said the moment they happen rather than held
//! until the call returns. A sweep returns only how many tasks it deleted;
//! its events name each one, so the command lists them as they go,
//! however many there are, holding none.

use serde_json::Value;
use taskstore::{Event, EventSink, TaskEventKind};

use crate::text;

/// What a command's handle says as it goes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Heard {
    /// Each task a sweep deletes, on stdout (`task.expired`: the handle of
    /// a sweep deletes no expired task but the sweep's).
    pub deleted: bool,
}

impl EventSink for Heard {
    fn emit(&self, event: &Event) {
        if self.deleted && event.kind == TaskEventKind::Expired {
            let field = |name: &str| event.data.get(name).and_then(Value::as_str).unwrap_or("?");
            text::out_as_it_goes(format!(
                "deleted {}  {}  expired",
                field("taskId"),
                field("status")
            ));
        }
    }
}
