//! One task or a page of them: `list`, `show`, `cancel`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use taskstore::{ListQuery, Page, Task, TaskId, TaskStatus, Transition};

use crate::text::{self, Table, out};
use crate::{Failure, Handle};

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only tasks with this status: working, input_required, completed,
    /// failed or cancelled.
    #[arg(long, value_parser = parse_status)]
    status: Option<TaskStatus>,
    /// Only running tasks (working, input_required); reads no history.
    #[arg(long)]
    active: bool,
    /// Only tasks owned by this instance id.
    #[arg(long, value_name = "INSTANCE")]
    owner: Option<String>,
    /// Only tasks created at least this long ago ("10m", "2h", "1d").
    #[arg(long, value_name = "DURATION", value_parser = parse_age)]
    older_than: Option<Duration>,
    /// At most this many tasks; the cursor of the next page goes to stderr
    /// (and with --next-cursor, to stdout).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    limit: Option<u64>,
    /// Continues after a cursor printed by an earlier `list --limit`.
    #[arg(long, value_name = "CURSOR", value_parser = parse_cursor)]
    after: Option<String>,
    /// One JSON object per line (each task as `show --json` prints it).
    #[arg(long)]
    json: bool,
    /// Ends the JSON lines with one more, the one without a "taskId":
    /// {"nextCursor": CURSOR}, which --after takes, or null when there is
    /// no next page. For a script that pages; the cursor goes to stderr as
    /// well.
    #[arg(long, requires = "json")]
    next_cursor: bool,
}

impl ListArgs {
    /// Exits with a usage error for flags that ask what has no answer,
    /// before any store is opened.
    pub fn check(&self) {
        if let Some(status) = self.status.filter(|s| s.is_terminal())
            && self.active
        {
            crate::conflict_in(
                "list",
                &format!(
                    "--active lists running tasks, which are never {}: drop --active \
                     to list finished ones",
                    status.as_str()
                ),
            );
        }
    }
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The task's id.
    #[arg(value_parser = parse_id)]
    pub id: TaskId,
    /// The task's JSON on one line (as `list --json` prints each), instead
    /// of indented over several.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The task's id.
    #[arg(value_parser = parse_id)]
    pub id: TaskId,
    /// The status message the cancelled task gets.
    #[arg(long)]
    message: Option<String>,
    /// One JSON object: {"taskId", "transition": "applied",
    /// "already_terminal", "fenced" or "not_applied" (another outcome the
    /// store may report), "status"}.
    #[arg(long)]
    json: bool,
}

pub fn parse_status(text: &str) -> Result<TaskStatus, String> {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).map_err(|_| {
        format!("unknown status {text:?}: working, input_required, completed, failed or cancelled")
    })
}

pub fn parse_id(text: &str) -> Result<TaskId, String> {
    TaskId::parse(text).map_err(|e| e.to_string())
}

/// A cursor for `--after`, checked as the store checks it, before any
/// store is looked for (so before an open cleans up after crashed writers).
fn parse_cursor(text: &str) -> Result<String, String> {
    ListQuery::all()
        .after(text)
        .check()
        .map(|()| text.to_owned())
        .map_err(|e| match e {
            taskstore::Error::InvalidCursor { reason, .. } => format!(
                "not a list cursor ({reason}; `list --limit` prints the next page's on stderr)"
            ),
            other => other.to_string(),
        })
}

/// An age for `--older-than`: a duration that reaches back no further than
/// dates go, checked before any store is looked for.
fn parse_age(text: &str) -> Result<Duration, String> {
    let age = text::parse_duration(text)?;
    before(time::OffsetDateTime::now_utc(), age)?;
    Ok(age)
}

/// The time `age` before `now`, if dates go back that far.
fn before(now: time::OffsetDateTime, age: Duration) -> Result<time::OffsetDateTime, String> {
    time::Duration::try_from(age)
        .ok()
        .and_then(|age| now.checked_sub(age))
        .ok_or_else(|| "further back than dates go".to_owned())
}

/// Tasks asked of the store at a time: what `list` holds, whatever the
/// store's size.
const PAGE: u64 = 256;

/// The table's columns.
const COLUMNS: [&str; 6] = ["ID", "STATUS", "AGE", "UPDATED", "OWNER", "MESSAGE"];

/// Lists page after page (of at most [`PAGE`] tasks) until `--limit` tasks
/// matched or the store has no more. `--status` and `--owner` are the
/// store's query's ([`ListQuery::owner`]), so pages are asked for as many
/// tasks as are still wanted, and the cursor printed is the store's own,
/// after the last task printed. `--older-than` stops at the first task too
/// young: listings are ordered by creation time. The table is printed as
/// the pages come, its widths chosen by its first page ([`Table`]).
pub fn list(args: &ListArgs, store: &dyn Handle) -> Result<ExitCode, Failure> {
    let now = store.time();
    // Checked against the clock when parsed; the store's time may differ.
    let born_before = args.older_than.map(|age| {
        before(now, age).unwrap_or_else(|why| {
            crate::invalid_value(&format!(
                "invalid value '{}' for '--older-than <DURATION>': {why}",
                text::duration(age)
            ))
        })
    });
    let mut query = if args.active {
        ListQuery::active()
    } else {
        ListQuery::all()
    };
    if let Some(status) = args.status {
        query = query.status(status);
    }
    if let Some(owner) = &args.owner {
        query = query.owner(owner.clone());
    }
    let mut cursor = args.after.clone();
    // How many were printed: a page at a time, none kept (but the table's
    // first page, which chooses its widths).
    let mut shown: u64 = 0;
    let mut table = (!args.json).then(|| Table::new(&COLUMNS, PAGE as usize));
    // A task's file the listing could not read (or set aside): the list is
    // short of it, and the command fails for it.
    let mut missed = false;
    loop {
        let mut page_query = query.clone();
        let wanted = args.limit.map_or(PAGE, |limit| (limit - shown).min(PAGE));
        page_query = page_query.limit(usize::try_from(wanted).unwrap_or(usize::MAX));
        if let Some(after) = &cursor {
            page_query = page_query.after(after);
        }
        // The cursor given was checked as it was parsed; the others are
        // the store's.
        let page: Page = store.list(&page_query)?;
        // Each said on stderr by the handle as it met it (`Heard`).
        missed |= page.skipped.iter().any(|skipped| skipped.id.is_some());
        if missed {
            // Known before this page prints: a stdout closed from here on
            // ends the command with the failure too.
            text::failing();
        }
        cursor = page.next_cursor;
        let mut young = false;
        for task in page.tasks {
            if born_before.is_some_and(|before| task.created_at > before) {
                young = true;
                break;
            }
            match &mut table {
                Some(table) => table.row(row(&task, now)),
                None => out(serde_json::to_string(&task)?),
            }
            shown += 1;
        }
        if young {
            cursor = None;
        }
        let full = args.limit.is_some_and(|l| shown >= l);
        if cursor.is_none() || full {
            break;
        }
    }
    if let Some(table) = table {
        table.finish();
    }
    if args.next_cursor {
        out(serde_json::json!({ "nextCursor": cursor }).to_string());
    }
    if let Some(cursor) = cursor {
        text::err(format!("next cursor: {cursor}"));
    }
    Ok(text::earned(missed))
}

fn row(task: &Task, now: time::OffsetDateTime) -> Vec<String> {
    vec![
        task.id.to_string(),
        task.status.to_string(),
        text::duration(text::since(now, task.created_at)),
        format!(
            "{} ago",
            text::duration(text::since(now, task.last_updated_at))
        ),
        task.owner
            .as_deref()
            .map_or("-".to_owned(), |o| text::cut(o, 24)),
        text::cut(task.status_message.as_deref().unwrap_or(""), 48),
    ]
}

pub fn show(args: &ShowArgs, store: &dyn Handle) -> Result<ExitCode, Failure> {
    match store.get(&args.id)? {
        Some(task) if args.json => {
            out(serde_json::to_string(&task)?);
            Ok(ExitCode::SUCCESS)
        }
        Some(task) => {
            text::out_lines(serde_json::to_string_pretty(&task)?);
            Ok(ExitCode::SUCCESS)
        }
        // Said as the store says it (`taskstore::Error::NotFound`).
        None => Err(taskstore::Error::NotFound {
            id: args.id.clone(),
        }
        .into()),
    }
}

pub fn cancel(args: &CancelArgs, store: &dyn Handle) -> Result<ExitCode, Failure> {
    // Its errors are said naming the task (`doing`).
    let transition = store.cancel(&args.id, args.message.clone())?;
    let (name, line) = outcome(&transition);
    let task = transition.task();
    if args.json {
        out(serde_json::json!({
            "taskId": task.id,
            "transition": name,
            "status": task.status,
        })
        .to_string());
    } else {
        out(line);
    }
    Ok(ExitCode::SUCCESS)
}

/// What a cancel's transition says: its name (`--json`) and the line
/// printed, each saying what happened.
fn outcome(transition: &Transition) -> (&'static str, String) {
    match transition {
        Transition::Applied(task) => (
            "applied",
            format!(
                "applied: task {} is cancelled (this cancel was the first writer)",
                task.id
            ),
        ),
        Transition::AlreadyTerminal(task) => (
            "already_terminal",
            format!(
                "already terminal: task {} is {}; the cancel changed nothing (an earlier writer won)",
                task.id, task.status
            ),
        ),
        // Only a write fenced to an owner epoch is refused so; a cancel
        // from here is not, but the line says it all the same.
        Transition::Fenced(task) => (
            "fenced",
            format!(
                "fenced: task {} has moved on to owner epoch {} (another instance claimed it) \
                 and is {}; the cancel changed nothing",
                task.id, task.epoch, task.status
            ),
        ),
        other => {
            let task = other.task();
            (
                "not_applied",
                format!(
                    "not applied: task {} is {}; the cancel changed nothing ({other:?})",
                    task.id, task.status
                ),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(status: &str, epoch: u64) -> Task {
        serde_json::from_value(serde_json::json!({
            "taskId": "t-1",
            "status": status,
            "createdAt": "2026-05-01T09:00:00Z",
            "lastUpdatedAt": "2026-05-01T09:00:00Z",
            "ttlMs": null,
            "revision": 1,
            "epoch": epoch,
        }))
        .unwrap()
    }

    /// Each transition is printed as what happened: a fenced cancel is not
    /// called terminal (its task is still running under another owner).
    #[test]
    fn a_cancel_says_what_happened() {
        let (name, line) = outcome(&Transition::Applied(task("cancelled", 1)));
        assert_eq!(name, "applied");
        assert!(line.starts_with("applied: task t-1 is cancelled"), "{line}");
        let (name, line) = outcome(&Transition::AlreadyTerminal(task("completed", 1)));
        assert_eq!(name, "already_terminal");
        assert!(
            line.starts_with("already terminal: task t-1 is completed"),
            "{line}"
        );
        let (name, line) = outcome(&Transition::Fenced(task("working", 3)));
        assert_eq!(name, "fenced");
        assert!(
            line.starts_with("fenced: task t-1 has moved on to owner epoch 3")
                && line.contains("is working")
                && !line.contains("terminal"),
            "{line}"
        );
    }
}
