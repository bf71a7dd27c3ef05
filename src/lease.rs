//! Ownership and leases: telling a task whose process died from one that runs.
//!
//! Every store handle has an identity: the instance id its host gave it and
//! a token unique to this open of the store. A task is owned by the handle
//! that created it (or last claimed it) and carries a lease; the owner
//! renews it while it works (every write by the owner renews it too). A
//! process restarted with the same instance id opens anew, gets a new token,
//! and is not the owner: it can neither renew nor keep alive work it is not
//! running. A non-terminal task whose lease has lapsed is an orphan:
//! [`TaskStore::reap`](crate::TaskStore::reap) fails it with a structured
//! `"orphaned"` error, unless it is resumable and an instance claims it
//! ([`TaskStore::claim`](crate::TaskStore::claim)).

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
    /// Unique to this open of the store.
    pub token: String,
    pub duration: Duration,
}

impl Default for Lease {
    fn default() -> Lease {
        Lease {
            instance_id: uuid::Uuid::new_v4().hyphenated().to_string(),
            token: uuid::Uuid::new_v4().simple().to_string(),
            duration: DEFAULT_LEASE,
        }
    }
}

impl Lease {
    fn until(&self, now: OffsetDateTime) -> OffsetDateTime {
        now.saturating_add(time::Duration::try_from(self.duration).unwrap_or(time::Duration::MAX))
    }

    /// Makes a new task this handle's, with a fresh lease.
    pub fn own(&self, task: &mut Task, now: OffsetDateTime) {
        task.owner = Some(self.instance_id.clone());
        task.owner_token = Some(self.token.clone());
        task.lease_expires_at = Some(self.until(now));
    }

    /// Makes an orphan this handle's, to resume it: a new owner epoch and
    /// a fresh lease (bumps the revision, leaves `last_updated_at` alone).
    pub fn take_over(&self, task: &mut Task, now: OffsetDateTime) -> crate::Result<()> {
        task.next_revision()?;
        self.own(task, now);
        // `is_claimable` never passes a task at the highest epoch.
        task.epoch = task.epoch.saturating_add(1);
        if let Some(resume) = &mut task.resume {
            resume.attempts = resume.attempts.saturating_add(1);
        }
        Ok(())
    }

    /// Whether this handle owns `task`: the same instance id and the same
    /// open of the store.
    pub fn owns(&self, task: &Task) -> bool {
        task.owner.as_deref() == Some(self.instance_id.as_str())
            && task.owner_token.as_deref() == Some(self.token.as_str())
    }

    /// After a write by this handle: a terminal task holds no lease; a
    /// running one owned by this handle gets a fresh one.
    pub fn after_write(&self, task: &mut Task, now: OffsetDateTime) {
        if task.is_terminal() {
            task.lease_expires_at = None;
        } else if self.owns(task) {
            task.lease_expires_at = Some(self.until(now));
        }
    }

    /// Renews the lease of a task this instance owns (bumps the revision,
    /// leaves `last_updated_at` alone: nothing a client sees has changed).
    pub fn renew(&self, task: &mut Task, now: OffsetDateTime) -> crate::Result<()> {
        task.next_revision()?;
        task.lease_expires_at = Some(self.until(now));
        Ok(())
    }

    /// Gives up the lease of a task this instance owns: it lapses at `now`,
    /// so the task is an orphan at once and another instance may claim it,
    /// and it is no longer this handle's (its open's token goes; the
    /// instance id stays, to say who ran it): no renewal of this handle's
    /// leases brings it back. Bumps the revision, leaves `last_updated_at`
    /// alone.
    pub fn release(&self, task: &mut Task, now: OffsetDateTime) -> crate::Result<()> {
        task.next_revision()?;
        task.lease_expires_at = Some(now);
        task.owner_token = None;
        Ok(())
    }
}

/// Whether the orphan `task` is to be failed at `now`, by a reaper whose
/// claim grace is `grace`: at once if it cannot be resumed; a resumable one
/// only once it has stayed unclaimed for `grace` after its lease lapsed (no
/// instance with a handler for its kind came), or once it has had all its
/// attempts.
pub(crate) fn is_reapable(task: &Task, now: OffsetDateTime, grace: Duration) -> bool {
    if !task.is_orphan_at(now) {
        return false;
    }
    if !task.has_attempts_left() {
        return true;
    }
    let lapsed = task.lease_expires_at.unwrap_or(now);
    now >= lapsed.saturating_add(time::Duration::try_from(grace).unwrap_or(time::Duration::MAX))
}

/// Whether the orphan `task` may be claimed at `now` by an instance that
/// resumes `kinds`. One whose owner epoch is at its highest (written
/// outside the crate) cannot get a new one, so no claim fences its old
/// owner: it is left to the reaper.
pub(crate) fn is_claimable(task: &Task, now: OffsetDateTime, kinds: &[&str]) -> bool {
    task.is_orphan_at(now)
        && task.epoch < u64::MAX
        && task.has_attempts_left()
        && task
            .resume
            .as_ref()
            .is_some_and(|r| kinds.iter().any(|k| *k == r.kind))
}

/// Whether the owner of the running `task` released it
/// ([`Lease::release`]): it names an owner but no open of the store. (Every
/// other write of a store of this crate that gives a task an owner gives
/// it the owner's token too.)
fn was_released(task: &Task) -> bool {
    task.owner.is_some() && task.owner_token.is_none()
}

/// The error recorded on a reaped orphan: its message says whether its
/// owner released it or stopped renewing its lease.
pub(crate) fn orphan_error(task: &Task, reaper: &str) -> Value {
    // Written as the task's own `leaseExpiresAt` is, so the two compare
    // as text.
    let lapsed = task
        .lease_expires_at
        .and_then(|at| crate::clock::stamp::format(at).ok());
    let owner = task.owner.as_deref().unwrap_or("(unknown)");
    let why = if was_released(task) {
        "released it, and no instance resumed it"
    } else {
        "stopped renewing its lease"
    };
    let mut error = json!({
        "code": "orphaned",
        "message": format!("task {} was abandoned: its owner {owner} {why}", task.id),
        "owner": task.owner,
        "leaseExpiredAt": lapsed,
        "reapedBy": reaper,
    });
    if let Some(resume) = &task.resume {
        // A resumable task that no instance resumed, or that ran out of
        // attempts.
        error["kind"] = json!(resume.kind);
        error["attempts"] = json!(resume.attempts);
        error["maxAttempts"] = json!(resume.max_attempts);
    }
    error
}
