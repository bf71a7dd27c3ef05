//! `verify` and `repair`: a file store's files, checked as fsck does, with
//! [`FileCheck`].

use std::path::Path;
use std::process::ExitCode;

use clap::Args;
use serde_json::json;
use taskstore::{FileCheck, Problem, RepairAction, RepairOutcome};

use crate::Failure;
use crate::text::{self, Progress, out};

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// One JSON object per problem: {"path", "problem" (a short code),
    /// "taskId", "message"}.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct RepairArgs {
    /// Repairs (without it, prints what it would do and changes nothing).
    #[arg(long, conflicts_with = "dry_run")]
    apply: bool,
    /// Prints what it would do and changes nothing (the default).
    #[arg(long)]
    dry_run: bool,
}

fn problem_json(problem: &Problem) -> serde_json::Value {
    json!({
        // Lossy: a path need not be UTF-8, and JSON text must be.
        "path": problem.path.to_string_lossy(),
        "problem": problem.kind.code(),
        "taskId": problem.id,
        "message": problem.kind.to_string(),
    })
}

pub fn verify(args: &VerifyArgs, dir: &Path) -> Result<ExitCode, Failure> {
    let check = FileCheck::open(dir)?;
    let mut progress = Progress::new();
    let report = check.verify_with(&mut |done, total| progress.update(done, total))?;
    progress.finish();
    for problem in &report.problems {
        if args.json {
            out(problem_json(problem).to_string());
        } else {
            out(problem.to_string());
        }
    }
    if report.is_clean() {
        text::err(format!(
            "{}: clean ({} entries checked)",
            dir.display(),
            report.checked
        ));
        Ok(ExitCode::SUCCESS)
    } else {
        text::err(format!(
            "{}: {} problem(s) in {} entries checked; `taskstore repair` says what it can fix",
            dir.display(),
            report.problems.len(),
            report.checked
        ));
        Ok(ExitCode::FAILURE)
    }
}

pub fn repair(args: &RepairArgs, dir: &Path) -> Result<ExitCode, Failure> {
    let check = FileCheck::open(dir)?;
    let mut progress = Progress::new();
    let dry_run = !args.apply;
    let repairs = check.repair_with(dry_run, &mut |done, total| progress.update(done, total))?;
    progress.finish();
    let mut failed = 0;
    let mut left = 0;
    for repair in &repairs.repairs {
        let what = &repair.action;
        let line = match (&repair.outcome, what) {
            (_, RepairAction::Leave { reason }) => {
                left += 1;
                format!("{}: left alone: {reason}", repair.problem)
            }
            (RepairOutcome::Planned, _) => format!("{}: would {what}", repair.problem),
            (RepairOutcome::Done, _) => format!("{}: {what}: done", repair.problem),
            (RepairOutcome::Skipped { reason }, _) => {
                format!("{}: {what}: skipped ({reason})", repair.problem)
            }
            (RepairOutcome::Failed { error }, _) => {
                failed += 1;
                format!("{}: {what}: FAILED: {error}", repair.problem)
            }
            (other, _) => format!("{}: {what}: {other:?}", repair.problem),
        };
        out(line);
    }
    let total = repairs.repairs.len();
    let fixed = repairs.fixed();
    if total == 0 {
        text::err(format!("{}: clean, nothing to repair", dir.display()));
    } else if dry_run {
        text::err(format!(
            "dry run: {fixed} of {total} problem(s) would be repaired, {left} left alone; \
             nothing was changed (run with --apply)"
        ));
    } else {
        text::err(format!(
            "repaired {fixed} of {total} problem(s); {left} left alone, {failed} failed"
        ));
    }
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
