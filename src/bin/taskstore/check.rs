//! `verify` and `repair`: a file store's files, checked as fsck does, with
//! [`FileCheck`].

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::json;
use taskstore::{
    FileCheck, Problem, ProblemKind, Repair, RepairAction, RepairOutcome, Severity, StaleEntry,
};
use time::OffsetDateTime;

use crate::Failure;
use crate::opening::say_open_wait;
use crate::text::{self, Progress, out};

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// One JSON object per finding: {"path", "problem" (a short code),
    /// "severity" ("problem"; "leftover": a crashed writer's, which the
    /// next open removes; or "unfinished": an interrupted move, which the
    /// store's next sweep finishes, or a stale expiring/ entry, which a
    /// sweep removes once it is due; or "upgrade": a store of an older
    /// format, which the next open that may upgrade it moves), "taskId",
    /// "message", "underWay"}.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    wait: WaitArgs,
}

#[derive(Debug, Args)]
pub struct RepairArgs {
    /// Repairs (without it, prints what it would do and changes nothing but
    /// the lock files it takes, as verify).
    #[arg(long, conflicts_with = "dry_run")]
    apply: bool,
    /// Prints what it would do and changes nothing but the lock files it
    /// takes, as verify (the default).
    #[arg(long)]
    dry_run: bool,
    /// One JSON object per problem, as `verify --json` prints it, with
    /// what the repair does: "action" (a short code: finish_move,
    /// remove_stale_copy, remove_temp, remove_stale_index_entry,
    /// restore_index_entry, set_aside, set_mode with "mode", leave),
    /// "outcome" (planned, done, skipped, failed) and "reason" (why it is
    /// left alone, or was skipped) or "error".
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    wait: WaitArgs,
}

#[derive(Debug, Args)]
struct WaitArgs {
    /// How long to wait for batches other processes have under way (a
    /// reap, a sweep) before judging what may be their work in progress,
    /// and for an open that holds the store alone (compacting it, moving
    /// its format) before failing (`0s`: do not wait).
    #[arg(long, value_name = "DURATION", value_parser = text::parse_duration, default_value = "30s")]
    wait: Duration,
}

impl WaitArgs {
    /// The store at `dir`, opened to check it with this wait, which it
    /// says on stderr when it starts.
    fn open(&self, dir: &Path) -> Result<FileCheck, Failure> {
        Ok(
            FileCheck::open_within_noting(dir, self.wait, say_open_wait(self.wait))?
                .wait_for_batches(self.wait)
                .on_batch_wait(|lock, wait| {
                    text::err(format!(
                        "taskstore: waiting up to {} for another process's batches or check \
                     under way (they hold {}) to end, before judging what may be their work in \
                     progress",
                        text::duration(wait),
                        lock.display()
                    ));
                }),
        )
    }
}

/// Says that batches were still under way when the wait ran out.
fn under_way(wait: &WaitArgs) {
    text::err(format!(
        "note: another process's batches or check were still under way after {}: interrupted moves \
         and stale expiring/ entries above may be their work in progress (run again, or \
         with a longer --wait)",
        text::duration(wait.wait)
    ));
}

/// A problem as `verify --json` prints it; `underWay`: batches of another
/// process were still under way when the check stopped waiting for them,
/// and the problem is of a kind they may have been making
/// (`ProblemKind::may_be_under_way`).
fn problem_json(problem: &Problem, under_way: bool) -> serde_json::Value {
    let under_way = under_way && problem.kind.may_be_under_way();
    json!({
        // Lossy: a path need not be UTF-8, and JSON text must be.
        "path": problem.path.to_string_lossy(),
        "problem": problem.kind.code(),
        "severity": problem.kind.severity().code(),
        "taskId": problem.id,
        "message": problem.kind.to_string(),
        "underWay": under_way,
    })
}

/// A repair as `repair --json` prints it: its problem as `verify --json`
/// prints it, and what the repair does and how it went.
fn repair_json(repair: &Repair, under_way: bool) -> serde_json::Value {
    let mut line = problem_json(&repair.problem, under_way);
    line["action"] = json!(repair.action.code());
    line["outcome"] = json!(repair.outcome.code());
    if let RepairAction::SetMode { mode } = repair.action {
        line["mode"] = json!(format!("{mode:04o}"));
    }
    match (&repair.action, &repair.outcome) {
        (RepairAction::Leave { reason }, _) => line["reason"] = json!(reason),
        (_, RepairOutcome::Skipped { reason }) => line["reason"] = json!(reason),
        (_, RepairOutcome::Failed { error }) => line["error"] = json!(error),
        _ => {}
    }
    line
}

pub fn verify(args: &VerifyArgs, dir: &Path) -> Result<ExitCode, Failure> {
    let check = args.wait.open(dir)?;
    let mut progress = Progress::new();
    let report = check.verify_with(&mut |done, total| progress.update(done, total))?;
    progress.finish();
    if report.under_way {
        under_way(&args.wait);
    }
    let code = text::earned(!report.passes());
    // When a sweep meets a stale entry, as `sweep --dry-run` judges it.
    let now = OffsetDateTime::now_utc();
    for problem in &report.problems {
        if args.json {
            out(problem_json(problem, report.under_way).to_string());
        } else {
            match (problem.kind.severity(), problem.stale_entry()) {
                (Severity::Leftover, _) => {
                    out(format!("{problem} (a leftover: the next open removes it)"))
                }
                (Severity::Unfinished, Some(entry)) if entry.is_due_at(now) => out(format!(
                    "{problem} (unfinished: the store's next sweep removes it; no read uses it)"
                )),
                (Severity::Unfinished, Some(entry)) => out(format!(
                    "{problem} (unfinished: a sweep removes it once it is due{}; no read uses \
                     it)",
                    entry
                        .expires_at
                        .map_or(String::new(), |at| format!(", at {}", text::rfc3339(at)))
                )),
                (Severity::Unfinished, None) => out(format!(
                    "{problem} (unfinished: the store's next sweep, or a write of the task, \
                     finishes it; every read sees it final)"
                )),
                (Severity::Upgrade, _) => out(format!("{problem} (no damage)")),
                _ => out(problem.to_string()),
            }
        }
    }
    let count = |severity| {
        report
            .problems
            .iter()
            .filter(|p| p.kind.severity() == severity)
            .count()
    };
    let (leftovers, unfinished) = (count(Severity::Leftover), count(Severity::Unfinished));
    let problems = count(Severity::Problem);
    // The unfinished work: stale `expiring/` entries (those a sweep now
    // removes, as `Census::stale_entries` counts them), and moves.
    let entries: Vec<StaleEntry> = report
        .problems
        .iter()
        .filter(|p| p.kind.severity() == Severity::Unfinished)
        .filter_map(Problem::stale_entry)
        .collect();
    let due = entries.iter().filter(|entry| entry.is_due_at(now)).count();
    let moves = unfinished - entries.len();
    let dir = dir.display();
    let older = report.problems.iter().find_map(|p| match p.kind {
        ProblemKind::OlderFormat { found, current } => Some((found, current)),
        _ => None,
    });
    // How many entries were checked: none of a store of an older format,
    // which is checked by the rules of its format once an open moves it.
    let checked = match older {
        Some((found, current)) => format!(
            "its entries not checked: a store of format {found} has them checked once an \
             open has moved it to format {current}"
        ),
        None => format!("{} entries checked", report.checked),
    };
    // What the store mends by itself, and what removes it now.
    let own = [
        older.map(|(found, current)| {
            format!(
                "format {found}, which the next open moves to format {current} (a service's \
                 open does; `taskstore --upgrade` with any command that opens the store does \
                 it now; processes of the older version must be stopped first)"
            )
        }),
        (leftovers > 0).then(|| {
            format!("{leftovers} leftover(s) of crashed writers, which the next open removes")
        }),
        (moves > 0).then(|| {
            format!(
                "{moves} unfinished move(s) of crashed writers, which the store's next sweep \
                 finishes (as does a write of the task)"
            )
        }),
        (!entries.is_empty()).then(|| {
            format!(
                "{} stale expiring/ {} of crashed writers, which a sweep removes once due \
                 ({due} due now)",
                entries.len(),
                if entries.len() == 1 {
                    "entry"
                } else {
                    "entries"
                }
            )
        }),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(", and ");
    if report.is_clean() {
        text::err(format!("{dir}: clean ({checked})"));
    } else if problems == 0 {
        // An older format is moved by an open, not by a repair.
        let repair = if leftovers + unfinished > 0 {
            " (or `taskstore repair --apply`)"
        } else {
            ""
        };
        // An older format's entries were not checked: nothing says the
        // store is sound.
        let verdict = match older {
            Some(_) => "no damage found",
            None => "sound",
        };
        text::err(format!("{dir}: {verdict} ({checked}): {own}{repair}"));
    } else {
        let fixable = report
            .problems
            .iter()
            .filter(|p| p.kind.severity() == Severity::Problem)
            .filter(|p| !matches!(p.repair_action(), taskstore::RepairAction::Leave { .. }))
            .count();
        let advice = match fixable {
            0 => "none of them a repair can fix (`taskstore repair` says why)".to_owned(),
            n => format!(
                "`taskstore repair --apply` fixes {n} of them (`taskstore repair` says how)"
            ),
        };
        let own = if own.is_empty() {
            own
        } else {
            format!("; and {own}")
        };
        text::err(format!(
            "{dir}: {problems} problem(s){}{checked}; {advice}{own}",
            if older.is_some() { ", " } else { " in " }
        ));
    }
    Ok(code)
}

pub fn repair(args: &RepairArgs, dir: &Path) -> Result<ExitCode, Failure> {
    repair_round(args, dir, 1)
}

/// One repair of the store at `dir`; `round` 1, or 2 once the first has
/// set the mode of a directory of the store that its owner could not read
/// (the check could not open it, so its entries were not judged): the
/// store is checked and repaired again, whole, and the exit status is the
/// second round's.
fn repair_round(args: &RepairArgs, dir: &Path, round: u8) -> Result<ExitCode, Failure> {
    let check = args.wait.open(dir)?;
    let mut progress = Progress::new();
    let dry_run = !args.apply;
    let repairs = check.repair_with(dry_run, &mut |done, total| progress.update(done, total))?;
    progress.finish();
    if repairs.under_way {
        under_way(&args.wait);
    }
    let failed = repairs
        .repairs
        .iter()
        .filter(|r| matches!(r.outcome, RepairOutcome::Failed { .. }))
        .count();
    let left = repairs
        .repairs
        .iter()
        .filter(|r| matches!(r.action, RepairAction::Leave { .. }))
        .count();
    // What the store still holds: a repair that failed leaves its problem
    // in place; a skipped one or one left alone may or may not (gone
    // meanwhile, or the quarantine full, batches still under way; a file
    // that could not be checked for its mode, which a repair set), which
    // only a check again, as `verify` judges, tells.
    let skipped = repairs.repairs.iter().any(|r| {
        matches!(r.outcome, RepairOutcome::Skipped { .. })
            && !matches!(r.action, RepairAction::Leave { .. })
    });
    // What fails `verify`: a leftover whose removal was skipped does not.
    let remaining = if dry_run {
        0
    } else if skipped || left > 0 {
        let report = check.verify()?;
        let failing = |p: &&Problem| p.kind.severity() == Severity::Problem;
        report.problems.iter().filter(failing).count()
    } else {
        failed
    };
    let code = text::earned(remaining > 0 || failed > 0);
    for repair in &repairs.repairs {
        if args.json {
            out(repair_json(repair, repairs.under_way).to_string());
            continue;
        }
        let what = &repair.action;
        let line = match (&repair.outcome, what) {
            (_, RepairAction::Leave { reason }) => {
                format!("{}: left alone: {reason}", repair.problem)
            }
            (RepairOutcome::Planned, _) => format!("{}: would {what}", repair.problem),
            (RepairOutcome::Done, _) => format!("{}: {what}: done", repair.problem),
            (RepairOutcome::Skipped { reason }, _) => {
                format!("{}: {what}: skipped ({reason})", repair.problem)
            }
            (RepairOutcome::Failed { error }, _) => {
                format!("{}: {what}: FAILED: {error}", repair.problem)
            }
            (other, _) => format!("{}: {what}: {other:?}", repair.problem),
        };
        out(line);
    }
    let total = repairs.repairs.len();
    let fixed = repairs.fixed();
    // A directory whose mode denied its owner reading or entering it: the
    // check could not open it, so its entries are judged only now.
    let opened_a_directory = repairs.repairs.iter().any(|r| {
        matches!(r.problem.kind, ProblemKind::Mode { found, .. } if found & 0o500 != 0o500)
            && matches!(r.action, RepairAction::SetMode { .. })
            && matches!(r.outcome, RepairOutcome::Done)
            && std::fs::symlink_metadata(&r.problem.path).is_ok_and(|m| m.is_dir())
    });
    if total == 0 {
        text::err(format!("{}: clean, nothing to repair", dir.display()));
    } else if dry_run {
        text::err(format!(
            "dry run: {fixed} of {total} problem(s) would be repaired, {left} left alone; \
             nothing was changed (run with --apply)"
        ));
    } else {
        text::err(format!(
            "repaired {fixed} of {total} problem(s); {left} left alone, {failed} failed; \
             {remaining} remain (`taskstore verify` lists them)"
        ));
    }
    if !dry_run && opened_a_directory && round == 1 {
        text::err(format!(
            "{}: the store's directories open now: checking and repairing it again, whole",
            dir.display()
        ));
        drop(check);
        return repair_round(args, dir, 2);
    }
    Ok(code)
}
