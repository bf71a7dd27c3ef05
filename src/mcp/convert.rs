//! Conversions between [`crate::Task`] and `rmcp`'s `Task` / `DetailedTask`.
//!
//! Every field of the MCP shape survives both ways: `taskId`, `status`,
//! `statusMessage`, `createdAt`, `lastUpdatedAt`, `ttlMs`, `pollIntervalMs`
//! and the status payload (`result`, `error`, `inputRequests`). Timestamps
//! keep their instant and offset; a UTC offset written `+00:00` comes back as
//! `Z`, the form the store itself writes. `inputRequests` pass through
//! `rmcp`'s typed `InputRequest`, so they come back in its canonical form (an
//! elicitation gains its default `"mode": "form"`); the manager only ever
//! stores that form. The store's own fields (`revision`, `metadata`, `owner`,
//! `leaseExpiresAt`) have no place in the MCP shape:
//! they are dropped on the way out and start fresh (revision 1, no metadata,
//! no owner) on the way in.

use std::time::Duration;

use rmcp::model::{DetailedTask, JsonObject, TaskPayload};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::id::TaskId;
use crate::task::{Task, TaskStatus};

/// A task that cannot be carried across the `taskstore` / `rmcp` boundary.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConversionError {
    /// The `taskId` is not a valid [`TaskId`].
    #[error("task id {id:?} is not valid here: {source}")]
    InvalidId {
        /// The id as given.
        id: String,
        /// Why it was rejected.
        #[source]
        source: crate::Error,
    },
    /// A timestamp is not RFC 3339.
    #[error("task {id}: {field} {value:?} is not an RFC 3339 timestamp")]
    Timestamp {
        /// The task.
        id: String,
        /// `createdAt` or `lastUpdatedAt`.
        field: &'static str,
        /// The value as given.
        value: String,
    },
    /// The status payload does not fit the status (for example a `completed`
    /// task whose `result` is missing or not a JSON object).
    #[error("task {id}: {reason}")]
    Payload {
        /// The task.
        id: String,
        /// What does not fit.
        reason: String,
    },
    /// `rmcp` knows a status this version of `taskstore` does not.
    #[error("task {id}: unsupported status {status:?}")]
    UnknownStatus {
        /// The task.
        id: String,
        /// The status, as `rmcp` prints it.
        status: String,
    },
}

/// The store status as an `rmcp` status.
pub fn status_to_rmcp(status: TaskStatus) -> rmcp::model::TaskStatus {
    use rmcp::model::TaskStatus as R;
    match status {
        TaskStatus::Working => R::Working,
        TaskStatus::InputRequired => R::InputRequired,
        TaskStatus::Completed => R::Completed,
        TaskStatus::Failed => R::Failed,
        TaskStatus::Cancelled => R::Cancelled,
    }
}

/// The `rmcp` status as a store status; `None` for a status added to `rmcp`
/// after this version.
pub fn status_from_rmcp(status: rmcp::model::TaskStatus) -> Option<TaskStatus> {
    use rmcp::model::TaskStatus as R;
    Some(match status {
        R::Working => TaskStatus::Working,
        R::InputRequired => TaskStatus::InputRequired,
        R::Completed => TaskStatus::Completed,
        R::Failed => TaskStatus::Failed,
        R::Cancelled => TaskStatus::Cancelled,
        _ => return None,
    })
}

/// The base `rmcp` [`Task`](rmcp::model::Task) (no payload): what a
/// `CreateTaskResult` carries.
pub fn to_rmcp_task(task: &Task) -> rmcp::model::Task {
    let mut out = rmcp::model::Task::new(
        task.id.as_str(),
        status_to_rmcp(task.status),
        format_ts(task.created_at),
        format_ts(task.last_updated_at),
    );
    out.status_message = task.status_message.clone();
    out.ttl_ms = task.ttl.map(millis);
    out.poll_interval_ms = task.poll_interval.map(millis);
    out
}

/// The `rmcp` [`DetailedTask`]: what `tasks/get` answers.
///
/// # Errors
///
/// [`ConversionError::Payload`] if the payload does not fit the status: a
/// `completed` task without an object `result`, a `failed` one without an
/// object `error`, an `input_required` one whose `inputRequests` is not a map
/// of MCP input requests.
pub fn to_detailed(task: &Task) -> Result<DetailedTask, ConversionError> {
    let bad = |reason: &str| ConversionError::Payload {
        id: task.id.to_string(),
        reason: reason.to_owned(),
    };
    let payload = match task.status {
        TaskStatus::Working => TaskPayload::Working,
        TaskStatus::Cancelled => TaskPayload::Cancelled,
        TaskStatus::Completed => TaskPayload::Completed {
            result: object(task.result.as_ref())
                .ok_or_else(|| bad("completed task has no JSON object `result`"))?,
        },
        TaskStatus::Failed => TaskPayload::Failed {
            error: object(task.error.as_ref())
                .ok_or_else(|| bad("failed task has no JSON object `error`"))?,
        },
        TaskStatus::InputRequired => TaskPayload::InputRequired {
            input_requests: serde_json::from_value(
                task.input_requests
                    .clone()
                    .unwrap_or(Value::Object(Map::new())),
            )
            .map_err(|e| bad(&format!("invalid `inputRequests`: {e}")))?,
        },
    };
    Ok(DetailedTask::new(to_rmcp_task(task), payload))
}

/// A store [`Task`] from an `rmcp` [`DetailedTask`]; the store's own fields
/// start fresh (revision 1, no metadata, no owner, no lease).
///
/// # Errors
///
/// [`ConversionError`] for an id the store does not accept, a timestamp that
/// is not RFC 3339, or a status this version does not know.
pub fn from_detailed(detailed: &DetailedTask) -> Result<Task, ConversionError> {
    let base = &detailed.task;
    let mut task = from_rmcp_task(base)?;
    // The payload decides the status (`DetailedTask::new` forces them equal).
    task.status = status_from_rmcp(detailed.payload.status()).ok_or_else(|| {
        ConversionError::UnknownStatus {
            id: base.task_id.clone(),
            status: format!("{:?}", detailed.payload.status()),
        }
    })?;
    match &detailed.payload {
        TaskPayload::Completed { result } => task.result = Some(Value::Object(result.clone())),
        TaskPayload::Failed { error } => task.error = Some(Value::Object(error.clone())),
        TaskPayload::InputRequired { input_requests } => {
            task.input_requests = Some(serde_json::to_value(input_requests).map_err(|e| {
                ConversionError::Payload {
                    id: base.task_id.clone(),
                    reason: format!("unencodable `inputRequests`: {e}"),
                }
            })?);
        }
        _ => {}
    }
    Ok(task)
}

/// A store [`Task`] from a base `rmcp` [`Task`](rmcp::model::Task) (no
/// payload); the store's own fields start fresh.
///
/// # Errors
///
/// As [`from_detailed`].
pub fn from_rmcp_task(task: &rmcp::model::Task) -> Result<Task, ConversionError> {
    let id = TaskId::parse(&task.task_id).map_err(|source| ConversionError::InvalidId {
        id: task.task_id.clone(),
        source: source.into(),
    })?;
    let status = status_from_rmcp(task.status).ok_or_else(|| ConversionError::UnknownStatus {
        id: task.task_id.clone(),
        status: format!("{:?}", task.status),
    })?;
    let ts = |field: &'static str, value: &str| {
        OffsetDateTime::parse(value, &Rfc3339).map_err(|_| ConversionError::Timestamp {
            id: task.task_id.clone(),
            field,
            value: value.to_owned(),
        })
    };
    Ok(Task {
        id,
        status,
        status_message: task.status_message.clone(),
        created_at: ts("createdAt", &task.created_at)?,
        last_updated_at: ts("lastUpdatedAt", &task.last_updated_at)?,
        ttl: task.ttl_ms.map(Duration::from_millis),
        poll_interval: task.poll_interval_ms.map(Duration::from_millis),
        result: None,
        error: None,
        input_requests: None,
        metadata: Map::new(),
        revision: 1,
        owner: None,
        lease_expires_at: None,
        owner_token: None,
        epoch: 1,
        resume: None,
    })
}

/// A JSON-RPC error object for the wire: a stored error that already is one
/// (an integer `code` a client reads, 32 bits, as `rmcp`'s `ErrorCode` is;
/// a string `message`) passes unchanged; anything else (such as the
/// store's `{"code": "orphaned", ..}`, a code past 32 bits, or a value of
/// another shape a host that is not an MCP server stored) becomes an
/// internal error (`-32603`) whose `data` is the stored error, whole.
pub(crate) fn jsonrpc_error(error: Value) -> JsonObject {
    let is_jsonrpc = error
        .get("code")
        .and_then(Value::as_i64)
        .is_some_and(|code| i32::try_from(code).is_ok())
        && error.get("message").is_some_and(Value::is_string);
    if is_jsonrpc && let Value::Object(error) = error {
        return error;
    }
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("task failed")
        .to_owned();
    let mut out = JsonObject::new();
    out.insert("code".into(), Value::from(-32603));
    out.insert("message".into(), Value::from(message));
    out.insert("data".into(), error);
    out
}

/// A tool result for the wire: a stored result that is a JSON object passes
/// unchanged; a value of another shape (a host that is not an MCP server
/// stored it) becomes a tool result whose one text content is its JSON.
pub(crate) fn tool_result(result: Value) -> JsonObject {
    match result {
        Value::Object(result) => result,
        other => {
            let text = Value::from(other.to_string());
            let mut content = JsonObject::new();
            content.insert("type".into(), Value::from("text"));
            content.insert("text".into(), text);
            let mut out = JsonObject::new();
            out.insert("content".into(), Value::Array(vec![Value::Object(content)]));
            out
        }
    }
}

fn object(value: Option<&Value>) -> Option<JsonObject> {
    match value {
        Some(Value::Object(map)) => Some(map.clone()),
        _ => None,
    }
}

fn format_ts(at: OffsetDateTime) -> String {
    // RFC 3339 formatting fails only for years outside 0..=9999, which the
    // store never writes; fall back to the debug form rather than panic.
    at.format(&Rfc3339).unwrap_or_else(|_| at.to_string())
}

/// `d` in milliseconds for the wire, at most [`MAX_WIRE_MS`](super::MAX_WIRE_MS): a longer TTL
/// or poll interval (a task made through the store's API takes any) is
/// served as the longest a JavaScript client holds exactly, some 285,000
/// years, not as a number such a client would read as another.
fn millis(d: Duration) -> u64 {
    crate::clock::whole_millis(d).min(super::MAX_WIRE_MS)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::task::NewTask;

    fn at() -> OffsetDateTime {
        time::macros::datetime!(2026-01-02 03:04:05.123456789 UTC)
    }

    fn stored(status: TaskStatus) -> Task {
        let mut task = NewTask::new()
            .ttl(Duration::from_millis(60_500))
            .poll_interval(Duration::from_millis(250))
            .status_message("busy")
            .into_task(TaskId::parse("t-1").unwrap(), at());
        task.status = status;
        task.last_updated_at = at() + time::Duration::seconds(3);
        match status {
            TaskStatus::Completed => {
                task.result =
                    Some(json!({"content": [{"type": "text", "text": "42"}], "isError": false}));
            }
            TaskStatus::Failed => {
                task.error = Some(json!({"code": -32603, "message": "boom", "data": {"x": 1}}));
            }
            TaskStatus::InputRequired => {
                task.input_requests = Some(json!({
                    "name-1": {
                        "method": "elicitation/create",
                        "params": {
                            "mode": "form",
                            "message": "What is your name?",
                            "requestedSchema": {"type": "object", "properties": {}}
                        }
                    }
                }));
            }
            _ => {}
        }
        task
    }

    const ALL: [TaskStatus; 5] = [
        TaskStatus::Working,
        TaskStatus::InputRequired,
        TaskStatus::Completed,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ];

    #[test]
    fn store_to_rmcp_and_back_is_lossless() {
        for status in ALL {
            let task = stored(status);
            let detailed = to_detailed(&task).unwrap();
            assert_eq!(status_from_rmcp(detailed.status()), Some(status));
            assert_eq!(from_detailed(&detailed).unwrap(), task, "{status}");
        }
    }

    #[test]
    fn rmcp_wire_json_equals_the_store_json_minus_store_fields() {
        for status in ALL {
            let mut task = stored(status);
            task.metadata.insert("k".into(), json!(1));
            task.owner = Some("me".into());
            task.lease_expires_at = Some(at());
            let mut store_json = serde_json::to_value(&task).unwrap();
            for field in ["revision", "metadata", "owner", "leaseExpiresAt"] {
                store_json.as_object_mut().unwrap().remove(field);
            }
            let wire = serde_json::to_value(to_detailed(&task).unwrap()).unwrap();
            assert_eq!(wire, store_json, "{status}");
        }
    }

    #[test]
    fn rmcp_to_store_and_back_is_lossless() {
        for status in ALL {
            let wire = serde_json::to_value(to_detailed(&stored(status)).unwrap()).unwrap();
            let detailed: DetailedTask = serde_json::from_value(wire).unwrap();
            let back = to_detailed(&from_detailed(&detailed).unwrap()).unwrap();
            assert_eq!(back, detailed, "{status}");
        }
        // Unlimited TTL, no poll interval, no message.
        let mut base = rmcp::model::Task::new(
            "abc",
            rmcp::model::TaskStatus::Working,
            "2026-01-02T03:04:05Z",
            "2026-01-02T03:04:06.5Z",
        );
        base.ttl_ms = None;
        let detailed = DetailedTask::new(base, TaskPayload::Working);
        assert_eq!(
            to_detailed(&from_detailed(&detailed).unwrap()).unwrap(),
            detailed
        );
    }

    #[test]
    fn timestamps_keep_their_instant_and_offset() {
        // chrono's `to_rfc3339` (what rmcp writes) says `+00:00`.
        let base = rmcp::model::Task::new(
            "abc",
            rmcp::model::TaskStatus::Working,
            "2026-01-02T03:04:05.123456+00:00",
            "2026-01-02T05:04:05+02:00",
        );
        let task = from_rmcp_task(&base).unwrap();
        assert_eq!(
            task.created_at,
            time::macros::datetime!(2026-01-02 03:04:05.123456 UTC)
        );
        let back = to_rmcp_task(&task);
        assert_eq!(back.created_at, "2026-01-02T03:04:05.123456Z");
        assert_eq!(back.last_updated_at, "2026-01-02T05:04:05+02:00");
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let base = |id: &str, created: &str| {
            rmcp::model::Task::new(id, rmcp::model::TaskStatus::Working, created, created)
        };
        assert!(matches!(
            from_rmcp_task(&base("../x", "2026-01-02T03:04:05Z")),
            Err(ConversionError::InvalidId { .. })
        ));
        assert!(matches!(
            from_rmcp_task(&base("x", "yesterday")),
            Err(ConversionError::Timestamp { .. })
        ));
        let mut task = stored(TaskStatus::Completed);
        task.result = Some(json!("not an object"));
        assert!(matches!(
            to_detailed(&task),
            Err(ConversionError::Payload { .. })
        ));
        let mut task = stored(TaskStatus::InputRequired);
        task.input_requests = Some(json!({"k": {"method": "ping"}}));
        assert!(matches!(
            to_detailed(&task),
            Err(ConversionError::Payload { .. })
        ));
    }

    /// A TTL or poll interval past what a JavaScript client holds exactly
    /// (a task made through the store's API) is served as the longest it
    /// does. (`u64::MAX` and `2^53` went out as they were.)
    #[test]
    fn durations_past_the_wire_are_served_as_its_longest() {
        let max = crate::mcp::MAX_WIRE_MS;
        let mut task = stored(TaskStatus::Working);
        task.ttl = Some(Duration::MAX);
        task.poll_interval = Some(Duration::from_millis(max + 1));
        let wire = to_rmcp_task(&task);
        assert_eq!((wire.ttl_ms, wire.poll_interval_ms), (Some(max), Some(max)));
        task.ttl = Some(Duration::from_millis(max));
        assert_eq!(to_rmcp_task(&task).ttl_ms, Some(max));
    }

    #[test]
    fn non_jsonrpc_errors_are_wrapped_whole() {
        let rpc = json!({"code": -32603, "message": "boom"});
        assert_eq!(Value::Object(jsonrpc_error(rpc.clone())), rpc);
        let orphan = json!({"code": "orphaned", "message": "abandoned"});
        let wrapped = jsonrpc_error(orphan);
        assert_eq!(
            Value::Object(wrapped),
            json!({"code": -32603, "message": "abandoned", "data": {"code": "orphaned", "message": "abandoned"}})
        );
        assert_eq!(
            Value::Object(jsonrpc_error(json!("boom"))),
            json!({"code": -32603, "message": "task failed", "data": "boom"})
        );
        // A code no client reads as a JSON-RPC error's (32 bits).
        for code in [i64::from(i32::MAX) + 1, i64::from(i32::MIN) - 1] {
            let wide = json!({"code": code, "message": "wide"});
            assert_eq!(
                Value::Object(jsonrpc_error(wide.clone())),
                json!({"code": -32603, "message": "wide", "data": wide})
            );
        }
        let edge = json!({"code": i32::MIN, "message": "edge"});
        assert_eq!(Value::Object(jsonrpc_error(edge.clone())), edge);
    }

    #[test]
    fn results_that_are_not_objects_become_text_content() {
        let result = json!({"content": [], "isError": false});
        assert_eq!(Value::Object(tool_result(result.clone())), result);
        assert_eq!(
            Value::Object(tool_result(json!([1, "two"]))),
            json!({"content": [{"type": "text", "text": "[1,\"two\"]"}]})
        );
        assert_eq!(
            Value::Object(tool_result(Value::Null)),
            json!({"content": [{"type": "text", "text": "null"}]})
        );
    }
}
