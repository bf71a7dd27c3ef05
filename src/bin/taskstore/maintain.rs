//! `sweep` and `reap`: the store's passes over many tasks, or their dry
//! runs, judged by the store's own rules ([`Task::is_expired_at`],
//! [`Orphan::judge`]) over what a census read, which changes nothing.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::{Value, json};
use taskstore::{Missed, Orphan, OrphanFate, Task};
use time::OffsetDateTime;

use crate::text::{self, out};
use crate::{Failure, Handle};

#[derive(Debug, Args)]
pub struct SweepArgs {
    /// Lists the expired tasks a sweep would delete, and changes nothing
    /// (but makes the store's lock file, locks/handles.lock, if it is
    /// missing: it holds that lock shared, as the service's processes do).
    /// Leftovers of crashed writers (temp files, stale expiring/ entries,
    /// interrupted moves) stay for the sweep, which cleans and counts them;
    /// the dry run counts the stale entries and moves it would clean, and
    /// the temp files there are (whether a temp file's writer is gone is
    /// not judged: that takes its lock).
    #[arg(long)]
    pub dry_run: bool,
    /// One JSON object per task: {"taskId", "status", "expiredAt",
    /// "action": "delete", "outcome": "done", or "planned" in a dry run}.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReapArgs {
    /// Lists the orphans and what a reap would do with each, and changes
    /// nothing (but makes the store's lock file, locks/handles.lock, if it
    /// is missing: it holds that lock shared, as the service's processes
    /// do).
    #[arg(long)]
    pub dry_run: bool,
    /// How long a resumable orphan may wait for an instance to claim it
    /// before it is reaped, after its lease lapsed (default: one lease,
    /// 30s). Give your service's setting.
    #[arg(long, value_name = "DURATION", value_parser = text::parse_duration)]
    pub claim_grace: Option<Duration>,
    /// One JSON object per task: {"taskId", "action": "reap" (with
    /// "status", "owner"; in a dry run "leaseExpiresAt"), "await_claim" (a
    /// dry run's: with "kind" and "claimGraceMs" too) or "delete" (an
    /// expired task the reap meets, with "status" and "expiredAt"),
    /// "outcome": "done", or "planned" in a dry run}.
    #[arg(long)]
    pub json: bool,
}

/// One task's result in a pass, as `--json` prints it: `taskId`, `action`
/// (what the pass does with it), `outcome` (`planned` in a dry run, else
/// `done`), and the fields of `more`.
pub fn result_json(id: &str, action: &str, dry_run: bool, more: Value) -> String {
    // The words `repair --json` uses for the same outcomes.
    let outcome = if dry_run {
        taskstore::RepairOutcome::Planned
    } else {
        taskstore::RepairOutcome::Done
    }
    .code();
    let mut line = json!({"taskId": id, "action": action, "outcome": outcome});
    if let (Some(line), Value::Object(more)) = (line.as_object_mut(), more) {
        line.extend(more);
    }
    line.to_string()
}

fn report_missed(missed: &[Missed], what: &str) {
    for m in missed {
        text::err(format!(
            "taskstore: error: could not {what} task {}: {}",
            m.id, m.error
        ));
    }
}

/// What a dry run judges: the store's tasks as they stand, read without
/// changing anything.
pub struct Preview {
    pub now: OffsetDateTime,
    /// What a sweep would delete, in listing order.
    pub expired: Vec<Task>,
    /// What a reap would judge, in listing order.
    pub orphans: Vec<Orphan>,
    /// Entries that could not be read, or are no task file (left as they
    /// are), and what the real run would do with each.
    pub unreadable: Vec<Unread>,
    /// Whether `taskstore verify` can say why an entry did not read (a file
    /// store's).
    pub verify_says_why: bool,
    /// The leftovers of crashed writers a sweep would clean, by the
    /// census's rules (a file store's; a temp file's writer is not judged,
    /// as that takes its lock).
    pub leftovers: Option<Leftovers>,
}

/// The leftovers of crashed writers a sweep now would clean, and count in
/// its "cleaned" (`Swept::cleaned`).
pub struct Leftovers {
    /// Stale `expiring/` entries due now (`Census::stale_entries`).
    pub stale_entries: usize,
    /// Terminal moves interrupted between their halves
    /// (`Census::interrupted_moves`).
    pub interrupted_moves: usize,
    /// Files in `tmp/` (`Usage::temp_files`): a sweep removes and counts
    /// those whose writer is gone, which is not judged here.
    pub temp_files: usize,
}

/// An entry a dry run could not read: where, and what the real run does
/// with it.
pub struct Unread {
    pub place: String,
    /// A name that is no task file's, rather than a task file that does
    /// not read.
    pub foreign: bool,
    pub fate: Fate,
}

/// What the real sweep or reap does with an entry it cannot read: it sets
/// aside only what it reads and finds damaged for good.
pub enum Fate {
    /// In `active/`, which both passes read whole: set aside into
    /// `quarantine/`.
    SetAside,
    /// A damaged file in `done/`: a sweep reads it, and sets it aside, only
    /// if its `expiring/` entry says it has expired; a reap never reads it.
    SetAsideIfExpired,
    /// A foreign name in `done/`, which no pass reads: left as it is,
    /// for `repair` to set aside.
    LeftForRepair,
    /// Unreadable for now or by this version (an I/O error, a newer
    /// format, a file past the read cap; a row over PostgreSQL): left in
    /// place by every read.
    LeftInPlace,
}

/// Which real run a dry run stands for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    Sweep,
    Reap,
}

impl Preview {
    fn report_unreadable(&self, pass: Pass) {
        const REPAIR: &str = "the real run leaves it as it is; `taskstore repair` sets it aside";
        for entry in &self.unreadable {
            let what = if entry.foreign {
                "no task file"
            } else {
                "cannot be read"
            };
            let done = match (&entry.fate, pass) {
                (Fate::SetAside, _) => "the real run sets it aside into quarantine/",
                (Fate::SetAsideIfExpired, Pass::Sweep) => {
                    "the real run sets it aside into quarantine/ if its expiring/ entry says \
                     it has expired, and else leaves it as it is; `taskstore repair` sets it aside"
                }
                (Fate::SetAsideIfExpired, Pass::Reap) | (Fate::LeftForRepair, _) => REPAIR,
                (Fate::LeftInPlace, _) => "the real run leaves it in place",
            };
            let why = if self.verify_says_why && !entry.foreign {
                "; `taskstore verify` says why"
            } else {
                ""
            };
            text::err(format!("taskstore: {}: {what}; {done}{why}", entry.place));
        }
    }
}

/// The line of an expired task a pass deletes, or would (`dry_run`),
/// whether the task was read (a dry run) or its `task.expired` event heard
/// (a real pass, [`Heard`](crate::heard::Heard)): as JSON, its status and
/// when it expired; as text, the `line` made of how long before `now` it
/// expired.
pub fn deletion(
    id: &str,
    status: Option<&str>,
    expired_at: Option<OffsetDateTime>,
    now: OffsetDateTime,
    dry_run: bool,
    json: bool,
    line: impl Fn(String) -> String,
) -> String {
    if json {
        let more = json!({"status": status, "expiredAt": expired_at.map(text::rfc3339)});
        result_json(id, "delete", dry_run, more)
    } else {
        line(expired_at.map_or("?".to_owned(), |at| text::duration(text::since(now, at))))
    }
}

/// A dry run's line for the expired `task` it would delete ([`deletion`]).
fn would_delete(
    task: &Task,
    now: OffsetDateTime,
    json: bool,
    line: impl Fn(String) -> String,
) -> String {
    let status = Some(task.status.as_str());
    deletion(
        task.id.as_str(),
        status,
        task.expires_at(),
        now,
        true,
        json,
        line,
    )
}

/// `sweep --dry-run`.
pub fn sweep_preview(preview: &Preview, json: bool) -> Result<ExitCode, Failure> {
    preview.report_unreadable(Pass::Sweep);
    let now = preview.now;
    for task in &preview.expired {
        out(would_delete(task, now, json, |ago| {
            format!(
                "would delete {}  {}  expired {ago} ago",
                task.id, task.status
            )
        }));
    }
    let leftovers = preview.leftovers.as_ref().map_or(String::new(), |l| {
        format!(
            "; {} leftover(s) of crashed writers would be cleaned ({} stale expiring/ {}, {} \
             interrupted move{})",
            l.stale_entries + l.interrupted_moves,
            l.stale_entries,
            if l.stale_entries == 1 {
                "entry"
            } else {
                "entries"
            },
            l.interrupted_moves,
            if l.interrupted_moves == 1 { "" } else { "s" },
        ) + &if l.temp_files > 0 {
            format!(
                ", and those of the {} temp file(s) in tmp/ whose writer is gone",
                l.temp_files
            )
        } else {
            String::new()
        }
    });
    text::err(format!(
        "dry run: {} expired task(s) would be deleted{leftovers}; nothing was changed",
        preview.expired.len()
    ));
    Ok(ExitCode::SUCCESS)
}

pub fn sweep(store: &dyn Handle) -> Result<ExitCode, Failure> {
    // Each task deleted is listed as the sweep goes, and each entry it
    // could not read said (`Heard::sweep`).
    let swept = store.sweep()?;
    // First: it joins the thread that writes the deletions.
    let stdout_failed = text::stdout_failed();
    let failed = !swept.missed.is_empty() || !swept.errors.is_empty();
    let code = text::earned(failed || stdout_failed);
    report_missed(&swept.missed, "delete");
    // A failure of the pass beside what it deleted (`Swept::errors`).
    for e in &swept.errors {
        text::err(format!("taskstore: error: {e}"));
    }
    text::err(format!(
        "deleted {} expired task(s); cleaned {} leftover(s) of crashed writers",
        swept.deleted, swept.cleaned
    ));
    Ok(code)
}

/// `reap --dry-run`.
pub fn reap_preview(preview: &Preview, json: bool) -> Result<ExitCode, Failure> {
    preview.report_unreadable(Pass::Reap);
    let now = preview.now;
    let orphans = &preview.orphans;
    let mut waiting = 0;
    for orphan in orphans {
        let task = &orphan.task;
        let id = task.id.as_str();
        let owner = task.owner.as_deref().unwrap_or("(none)");
        let lapsed = task
            .lease_expires_at
            .map_or("?".to_owned(), |at| text::duration(text::since(now, at)));
        // The lease as the task itself writes it (`show --json`, the file):
        // its stamps have a fraction of nine digits, which `text::rfc3339`
        // drops the trailing zeros of.
        let own = serde_json::to_value(task).unwrap_or_default();
        let leased = json!({
            "status": task.status,
            "owner": task.owner,
            "leaseExpiresAt": own.get("leaseExpiresAt"),
        });
        match orphan.fate {
            OrphanFate::Reap if json => out(result_json(id, "reap", true, leased)),
            OrphanFate::Reap => out(format!(
                "would reap {id}  owner {owner}, lease lapsed {lapsed} ago"
            )),
            OrphanFate::AwaitingClaim { grace } => {
                waiting += 1;
                let kind = task.resume.as_ref().map_or("?", |r| r.kind.as_str());
                out(if json {
                    let mut more = leased;
                    more["kind"] = json!(kind);
                    more["claimGraceMs"] = json!(text::millis(grace));
                    result_json(id, "await_claim", true, more)
                } else {
                    format!(
                        "would not reap {id}  resumable (kind {kind}), within its claim grace: \
                         lease lapsed {lapsed} ago, an instance may claim it for {} after that; \
                         owner {owner}",
                        text::duration(grace)
                    )
                });
            }
            other if json => out(result_json(
                id,
                "unknown",
                true,
                json!({"fate": format!("{other:?}")}),
            )),
            other => out(format!("{id}: {other:?}")),
        }
    }
    // A reap reads the running tasks whose lease lapsed, and deletes the
    // expired ones among them, as a sweep would.
    let met = preview.expired.iter().filter(|task| task.is_orphan_at(now));
    let mut deleted = 0;
    for task in met {
        deleted += 1;
        out(would_delete(task, now, json, |ago| {
            format!(
                "would delete {}  {}  expired {ago} ago{MET_BY_THE_REAP}",
                task.id, task.status
            )
        }));
    }
    text::err(format!(
        "dry run: {} orphan(s); {} would be reaped, {waiting} left for a claim; \
         {deleted} expired task(s) would be deleted; nothing was changed",
        orphans.len(),
        orphans.len() - waiting
    ));
    Ok(ExitCode::SUCCESS)
}

/// What the text line of an expired task a reap deletes adds.
pub const MET_BY_THE_REAP: &str = " (met by the reap, as a sweep would)";

pub fn reap(store: &dyn Handle, json: bool) -> Result<ExitCode, Failure> {
    // Each expired task it deletes is listed as it goes, with its status
    // and expiry, which the reap does not return, and each entry it could
    // not read said (`Heard::deletions`). They are all written before the
    // tasks it reaped.
    let reaped = store.reap()?;
    // First: it joins the thread that writes the deletions.
    let stdout_failed = text::stdout_failed();
    let code = text::earned(!reaped.missed.is_empty() || stdout_failed);
    report_missed(&reaped.missed, "reap");
    for task in &reaped.tasks {
        out(if json {
            let more = json!({"status": task.status, "owner": task.owner});
            result_json(task.id.as_str(), "reap", false, more)
        } else {
            format!(
                "reaped {}  owner {}",
                task.id,
                task.owner.as_deref().unwrap_or("(none)")
            )
        });
    }
    text::err(format!(
        "reaped {} orphan(s); deleted {} expired task(s)",
        reaped.tasks.len(),
        reaped.expired.len()
    ));
    Ok(code)
}
