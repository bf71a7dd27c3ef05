//! How a manager runs, and the bounds it holds tasks' options to.

use std::sync::Arc;
use std::time::Duration;

use rmcp::ErrorData as McpError;
use rmcp::service::{RequestContext, RoleServer};
use rmcp::task_manager::TaskOptions;
use serde_json::json;

use crate::task::{DEFAULT_MAX_ATTEMPTS, NewTask};

/// The shortest TTL a task gets, in milliseconds: a shorter `ttl_ms`
/// (`0` included) is raised to it, and the handle `spawn` returns says so
/// (SEP-2663 lets the receiver choose the TTL). A task that is gone before
/// the client's first `tasks/get` is of no use to anyone.
pub const MIN_TTL_MS: u64 = 1_000;

/// The shortest poll interval suggested to clients, in milliseconds: a
/// shorter `poll_interval_ms` (`0` included) is raised to it.
pub const MIN_POLL_INTERVAL_MS: u64 = 10;

/// The longest `ttl_ms` or `poll_interval_ms` accepted: 2^53 − 1 ms, the
/// largest integer a JavaScript client holds exactly. A longer one is
/// refused with `-32602` (use `ttl_ms: None` for an unlimited TTL).
pub const MAX_WIRE_MS: u64 = (1 << 53) - 1;

/// The shortest [`ManagerOptions::watch_interval`] a manager keeps: a
/// shorter one (`Duration::ZERO` included) is raised to it, so that no
/// setting makes the manager read every task it runs back to back.
pub const MIN_WATCH_INTERVAL: Duration = Duration::from_millis(10);

/// The default time running operations get to finish at
/// [`DurableTaskManager::shutdown`](super::DurableTaskManager::shutdown).
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The default time [`DurableTaskManager::shutdown`](super::DurableTaskManager::shutdown)
/// gives, after the grace, to the store writes that record the tasks it
/// stopped (and to operations to stop once aborted).
pub const DEFAULT_SHUTDOWN_WRITES: Duration = Duration::from_secs(2);

/// Where the manager runs the store reads behind `tasks/get`,
/// `tasks/update` and `tasks/cancel` (writes always run on Tokio's blocking
/// pool). Every choice reads the same store through the same `get`, with
/// the same freshness: only the thread differs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reads {
    /// On the calling async worker when the store can answer without
    /// waiting ([`TaskStore::try_get`](crate::TaskStore::try_get): any read
    /// of a `MemoryStore`; a `FileStore` read of a running task its
    /// snapshot holds, with no change notice pending — no file opened, no
    /// lock waited for), else on the blocking pool (a finished task's file,
    /// a change to read first, a `PgStore`). The default: a polled running
    /// task costs no hop between threads, and an async worker never waits
    /// for a disk or a network.
    #[default]
    Auto,
    /// Always on Tokio's blocking pool (`spawn_blocking`): a hop between
    /// threads on every read (tens of microseconds; `BENCHMARKS.md`).
    Blocking,
    /// Always on the calling async worker, with no hop: for a store whose
    /// `get` is quick and never waits on a network — a `MemoryStore`, or a
    /// `FileStore` on a local disk, whose reads of a finished task (one file
    /// read, from the page cache once warm; a cold read blocks the worker
    /// for one disk read) or of a task that changed then run on the worker
    /// too.
    Inline,
}

/// The longest principal a task is bound to, in bytes (UTF-8): a request
/// acting for a longer one is refused with `-32600`, `data.code =
/// "principalTooLong"`, naming the operation, rather than stored with
/// every task it makes (or refused by the store as if its params were
/// too large).
pub const MAX_PRINCIPAL_BYTES: usize = 1_024;

/// How a request maps to the principal it acts for: the host's own
/// authentication, read from `rmcp`'s [`RequestContext`] (on the
/// streamable HTTP transport its `extensions` hold the request's
/// `http::request::Parts`, so a bearer token's verified subject, or what
/// the host's middleware put there; over stdio, whatever the host put in
/// the transport's requests). `None`, an empty string, or one of
/// whitespace alone, is a request with no principal, which a manager with
/// this hook refuses; so is one with leading or trailing whitespace (see
/// [`ManagerOptions::principal_of`]).
///
/// Set with [`ManagerOptions::principal_of`]; see it for what the manager
/// does with the principal.
#[derive(Clone)]
pub struct PrincipalOf(Arc<PrincipalFn>);

/// The host's function behind a [`PrincipalOf`].
type PrincipalFn = dyn Fn(&RequestContext<RoleServer>) -> Option<String> + Send + Sync;

impl PrincipalOf {
    /// The principal `context`'s request acts for, if any ([`named`]).
    pub(super) fn of(&self, context: &RequestContext<RoleServer>) -> Option<String> {
        (self.0)(context).and_then(named)
    }
}

/// `principal` as the principal a request acts for: none if it names no
/// one, empty or whitespace alone (Unicode's, as [`char::is_whitespace`]
/// says: a space, a tab, a line break, a no-break or an ideographic
/// space). The one rule of the hook's answer and of
/// [`as_principal`](super::DurableTaskManager::as_principal)'s.
pub(super) fn named(principal: String) -> Option<String> {
    (!principal.trim().is_empty()).then_some(principal)
}

/// Whether `principal` has leading or trailing whitespace
/// ([`char::is_whitespace`]): a request acting for it is refused
/// (`unauthenticated`), as for none.
pub(super) fn padded(principal: &str) -> bool {
    principal.trim().len() != principal.len()
}

impl std::fmt::Debug for PrincipalOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrincipalOf(..)")
    }
}

/// Timing and policy of a [`DurableTaskManager`](super::DurableTaskManager).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ManagerOptions {
    /// How often the owner looks at its running tasks in the store, to see a
    /// `tasks/cancel` or `tasks/update` that arrived at another instance, or
    /// that another instance took a task over (default 250 ms). Leases are
    /// renewed on these ticks too: keep it well under the store's lease (a
    /// tick as long as the lease lets the lease lapse between renewals, and
    /// the manager warns of it when made; a test may set it so to hold an
    /// instance as if stopped). The loop of
    /// claims, reaps and sweeps looks whether one is due as often. At least
    /// [`MIN_WATCH_INTERVAL`] (10 ms), whatever this says: each tick reads
    /// every task the instance runs.
    pub watch_interval: Duration,
    /// How often a running task's lease is renewed; `None` (the default)
    /// renews after a third of the lease the store granted. At most that
    /// third, whatever this says (a longer period would let the lease lapse
    /// between renewals, and a peer reap or claim the live task); the
    /// renewals run on the watch ticks.
    pub renew_interval: Option<Duration>,
    /// How often resumable orphans are claimed (for the kinds this manager
    /// has resume handlers for) and lapsed leases reaped (default 5 s; a
    /// claim also runs at once when a handler is registered, and the first
    /// reap one interval after start: register handlers within it). Keep it
    /// below the store's claim grace (one lease by default), or orphans are
    /// failed before a claim.
    pub reap_interval: Duration,
    /// How often expired tasks are deleted from the store (default 5 min).
    pub sweep_interval: Duration,
    /// How long [`shutdown`](super::DurableTaskManager::shutdown) lets
    /// running operations finish before it stops them (default 5 s).
    pub shutdown_grace: Duration,
    /// How long [`shutdown`](super::DurableTaskManager::shutdown) waits,
    /// once the grace is over, for the store writes that record what it
    /// stopped (a release or a `shutdown` failure per task) and for aborted
    /// operations to end (default 2 s). Shutdown returns by
    /// `shutdown_grace + shutdown_writes` whatever the store or the
    /// operations do.
    pub shutdown_writes: Duration,
    /// How many owners a resumable task may have in all, the first included
    /// (default 3): once the last one dies, it is failed as orphaned.
    pub max_attempts: u32,
    /// Where store reads run (default [`Reads::Auto`]).
    pub reads: Reads,
    /// How a request maps to its principal (default `None`: tasks are bound
    /// to no one); set with [`ManagerOptions::principal_of`].
    pub principal_of: Option<PrincipalOf>,
}

impl Default for ManagerOptions {
    fn default() -> ManagerOptions {
        ManagerOptions {
            watch_interval: Duration::from_millis(250),
            renew_interval: None,
            reap_interval: Duration::from_secs(5),
            sweep_interval: Duration::from_secs(300),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            shutdown_writes: DEFAULT_SHUTDOWN_WRITES,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            reads: Reads::Auto,
            principal_of: None,
        }
    }
}

impl ManagerOptions {
    /// The pause between two watch ticks: the
    /// [`watch_interval`](ManagerOptions::watch_interval), at least
    /// [`MIN_WATCH_INTERVAL`].
    pub(super) fn watch_pause(&self) -> Duration {
        self.watch_interval.max(MIN_WATCH_INTERVAL)
    }

    /// The default timing.
    pub fn new() -> ManagerOptions {
        ManagerOptions::default()
    }

    /// Sets [`ManagerOptions::watch_interval`] (at least
    /// [`MIN_WATCH_INTERVAL`] is kept).
    pub fn watch_interval(mut self, interval: Duration) -> ManagerOptions {
        self.watch_interval = interval;
        self
    }

    /// Sets [`ManagerOptions::renew_interval`].
    pub fn renew_interval(mut self, interval: Duration) -> ManagerOptions {
        self.renew_interval = Some(interval);
        self
    }

    /// Sets [`ManagerOptions::reap_interval`].
    pub fn reap_interval(mut self, interval: Duration) -> ManagerOptions {
        self.reap_interval = interval;
        self
    }

    /// Sets [`ManagerOptions::sweep_interval`].
    pub fn sweep_interval(mut self, interval: Duration) -> ManagerOptions {
        self.sweep_interval = interval;
        self
    }

    /// Sets [`ManagerOptions::shutdown_grace`].
    pub fn shutdown_grace(mut self, grace: Duration) -> ManagerOptions {
        self.shutdown_grace = grace;
        self
    }

    /// Sets [`ManagerOptions::shutdown_writes`].
    pub fn shutdown_writes(mut self, allowance: Duration) -> ManagerOptions {
        self.shutdown_writes = allowance;
        self
    }

    /// Sets [`ManagerOptions::max_attempts`] (at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> ManagerOptions {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Sets [`ManagerOptions::reads`].
    pub fn reads(mut self, reads: Reads) -> ManagerOptions {
        self.reads = reads;
        self
    }

    /// Binds every task to the principal of the request that creates it,
    /// as `principal` maps a request to one (the host's authentication: a
    /// bearer token's subject, say), and checks it on every task request —
    /// the authorization the tasks extension requires of a server.
    ///
    /// The host passes each request's context through
    /// [`DurableTaskManager::for_request`](super::DurableTaskManager::for_request)
    /// (or names the principal with
    /// [`as_principal`](super::DurableTaskManager::as_principal)). Then:
    ///
    /// - `spawn` and `spawn_resumable` store the principal with the task,
    ///   in its metadata under [`PRINCIPAL_KEY`](super::PRINCIPAL_KEY)
    ///   (FORMAT.md), durably and with the task's create: every instance
    ///   sharing the store checks it, and an instance that claims the task
    ///   to resume it keeps it. It is stored as given, in plain text, where
    ///   the store's readers (its files or rows, the operator command) see
    ///   it (a client never does: metadata is not sent on the wire), so map
    ///   a request to a stable name for whom it acts (a verified token's
    ///   subject), never to a credential (the token itself). Principals
    ///   are compared byte for byte, with no case folding, trimming or
    ///   Unicode normalization (a name that differs from the task's only
    ///   so is another principal's), so map each principal to one
    ///   spelling;
    /// - `get_task`, `update_task` and `cancel_task` of a task bound to
    ///   another principal are answered exactly as for an unknown id
    ///   (`-32602`, `"unknown task: <id>"`), before anything is read out,
    ///   written or delivered, so a caller cannot tell another's task from
    ///   none;
    /// - a request with no principal (`principal` says `None`, an empty
    ///   string or whitespace alone, or a call on a manager handle that
    ///   names none) is refused with `-32600`, `data.code =
    ///   "unauthenticated"`, naming the operation (and the task id); so is
    ///   one whose principal has leading or trailing whitespace (Unicode's,
    ///   [`char::is_whitespace`]: a space, a tab, a line break, a no-break
    ///   space), which the manager neither trims (that would fold two
    ///   spellings into one) nor takes as a principal of its own (one that
    ///   prints as another's): map each request to its principal's one
    ///   spelling, trimmed; whitespace inside a principal is its own; one
    ///   whose principal is longer than
    ///   [`MAX_PRINCIPAL_BYTES`] likewise, `data.code = "principalTooLong"`;
    /// - a stored task that cannot be read (corrupt, too large, of a newer
    ///   format, or its own file failing to open or read, `EACCES` or
    ///   `EIO`, while the store reads other ids) names no principal anyone
    ///   can read: a request for it is answered as for an unknown id too
    ///   (not `-32603` with the cause, which would tell any caller the id
    ///   names a stored task), and the cause is logged at warn with the
    ///   task id; a failure of the store as a whole (its directory
    ///   unreadable, a database away) is still `-32603` with the cause;
    /// - a task made without a principal (before the hook was set, through
    ///   the store's API, or by an instance without it) belongs to no
    ///   principal: no request acting for one reaches it (unknown id); it
    ///   runs, finishes and expires as before, and the operator command
    ///   shows it.
    ///
    /// Without a hook (the default) a request acts for no principal: tasks
    /// are bound to no one and reach any request, as `rmcp`'s do, but a
    /// task bound to a principal (made by an instance with a hook) is an
    /// unknown id there too.
    pub fn principal_of<F>(mut self, principal: F) -> ManagerOptions
    where
        F: Fn(&RequestContext<RoleServer>) -> Option<String> + Send + Sync + 'static,
    {
        self.principal_of = Some(PrincipalOf(Arc::new(principal)));
        self
    }
}

/// The task `options` describe, within the bounds: a TTL or poll interval
/// below its minimum is raised to it, one over [`MAX_WIRE_MS`] is refused.
///
/// # Errors
///
/// `-32602` naming the option for a value over [`MAX_WIRE_MS`].
pub(super) fn new_task(options: &TaskOptions) -> Result<NewTask, McpError> {
    let mut new = NewTask::new();
    if let Some(ttl) = options.ttl_ms {
        new = new.ttl(Duration::from_millis(bounded("ttl_ms", ttl, MIN_TTL_MS)?));
    }
    if let Some(interval) = options.poll_interval_ms {
        new = new.poll_interval(Duration::from_millis(bounded(
            "poll_interval_ms",
            interval,
            MIN_POLL_INTERVAL_MS,
        )?));
    }
    if let Some(message) = &options.status_message {
        new = new.status_message(message.clone());
    }
    Ok(new)
}

fn bounded(name: &str, ms: u64, min: u64) -> Result<u64, McpError> {
    if ms > MAX_WIRE_MS {
        return Err(McpError::invalid_params(
            format!("{name} {ms} is over the largest accepted, {MAX_WIRE_MS} (2^53 - 1) ms"),
            Some(json!({ "option": name, "max": MAX_WIRE_MS })),
        ));
    }
    Ok(ms.max(min))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_raise_short_values_and_refuse_long_ones() {
        let task = |ttl, poll| {
            new_task(
                &TaskOptions::new()
                    .with_ttl_ms(ttl)
                    .with_poll_interval_ms(poll),
            )
        };
        let new = task(Some(0), 0).unwrap();
        assert_eq!(new.ttl, Some(Duration::from_millis(MIN_TTL_MS)));
        assert_eq!(
            new.poll_interval,
            Some(Duration::from_millis(MIN_POLL_INTERVAL_MS))
        );
        let new = task(Some(MAX_WIRE_MS), MAX_WIRE_MS).unwrap();
        assert_eq!(new.ttl, Some(Duration::from_millis(MAX_WIRE_MS)));
        assert_eq!(task(None, 1_000).unwrap().ttl, None, "unlimited stays");
        for (ttl, poll, name) in [
            (Some(MAX_WIRE_MS + 1), 1_000, "ttl_ms"),
            (Some(u64::MAX), 1_000, "ttl_ms"),
            (Some(1_000), u64::MAX, "poll_interval_ms"),
        ] {
            let err = task(ttl, poll).unwrap_err();
            assert_eq!(err.code, rmcp::model::ErrorCode::INVALID_PARAMS);
            assert!(err.message.starts_with(name), "{err:?}");
        }
    }
}
