//! Ownership and leases: telling a task whose process died from one that runs.
//!
//! Every store handle has an instance id. A task is owned by the instance
//! that created it and carries a lease; the owner renews it while it works
//! (every write by the owner renews it too). A non-terminal task whose lease
//! has lapsed is an orphan: [`TaskStore::reap_orphans`](crate::TaskStore::reap_orphans)
//! fails it with a structured `"orphaned"` error.

use std::time::Duration;

use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::task::Task;

/// The default lease: 30 seconds.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// Who this handle is, and how long its leases last.
#[derive(Clone, Debug)]
pub(crate) struct Lease {
    pub instance_id: String,
    pub duration: Duration,
}

impl Default for Lease {
    fn default() -> Lease {
        Lease {
            instance_id: uuid::Uuid::new_v4().hyphenated().to_string(),
            duration: DEFAULT_LEASE,
        }
    }
}

impl Lease {
    fn until(&self, now: OffsetDateTime) -> OffsetDateTime {
        now.saturating_add(time::Duration::try_from(self.duration).unwrap_or(time::Duration::MAX))
    }

    /// Makes a new task this instance's, with a fresh lease.
    pub fn claim(&self, task: &mut Task, now: OffsetDateTime) {
        task.owner = Some(self.instance_id.clone());
        task.lease_expires_at = Some(self.until(now));
    }

    /// Whether this instance owns `task`.
    pub fn owns(&self, task: &Task) -> bool {
        task.owner.as_deref() == Some(self.instance_id.as_str())
    }

    /// After a write by this instance: a terminal task holds no lease; a
    /// running one owned by this instance gets a fresh one.
    pub fn after_write(&self, task: &mut Task, now: OffsetDateTime) {
        if task.is_terminal() {
            task.lease_expires_at = None;
        } else if self.owns(task) {
            task.lease_expires_at = Some(self.until(now));
        }
    }

    /// Renews the lease of a task this instance owns (bumps the revision,
    /// leaves `last_updated_at` alone: nothing a client sees has changed).
    pub fn renew(&self, task: &mut Task, now: OffsetDateTime) {
        task.lease_expires_at = Some(self.until(now));
        task.revision += 1;
    }
}

/// Whether `task` is an orphan at `now`: running, and its lease has lapsed.
pub(crate) fn is_orphan(task: &Task, now: OffsetDateTime) -> bool {
    !task.is_terminal() && task.lease_expires_at.is_some_and(|at| now >= at)
}

/// The error recorded on a reaped orphan.
pub(crate) fn orphan_error(task: &Task, reaper: &str) -> Value {
    let lapsed = task.lease_expires_at.and_then(|at| {
        at.format(&time::format_description::well_known::Rfc3339)
            .ok()
    });
    json!({
        "code": "orphaned",
        "message": format!(
            "task {} was abandoned: its owner {} stopped renewing its lease",
            task.id,
            task.owner.as_deref().unwrap_or("(unknown)")
        ),
        "owner": task.owner,
        "leaseExpiredAt": lapsed,
        "reapedBy": reaper,
    })
}
