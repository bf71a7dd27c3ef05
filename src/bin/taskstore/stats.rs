//! `stats`: what a store holds, now.
//!
//! A file store is read with
//! [`FileCheck::census_each`](taskstore::FileCheck::census_each): every
//! task file read once, nothing changed, each task counted as it is read
//! and none kept (but a finished task's time to finish, for the quantiles). The check holds the handles lock shared, as a
//! handle does, and takes no other. (A listing through the store would set
//! unreadable files aside, and opening it would clean up after crashed
//! writers.) A PostgreSQL store is read through its API with
//! `Store::stored`, which changes nothing (a listing would delete the
//! expired tasks it meets).

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::{Value, json};
use taskstore::{Task, TaskStatus, Usage};
use time::OffsetDateTime;

use crate::opening::{self, Older};
use crate::text::{self, Progress, out};
use crate::{Failure, Target};

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// The statuses, in the order they are shown.
const STATUSES: [TaskStatus; 5] = [
    TaskStatus::Working,
    TaskStatus::InputRequired,
    TaskStatus::Completed,
    TaskStatus::Failed,
    TaskStatus::Cancelled,
];

/// What `stats` reports, computed from the stored tasks at `now`.
struct Stats {
    now: OffsetDateTime,
    /// Live (unexpired) tasks by status, in [`STATUSES`] order.
    by_status: [usize; 5],
    /// Stored tasks that have expired but are not swept yet.
    expired: usize,
    orphans: usize,
    oldest_active: Option<(String, Duration)>,
    /// createdAt → lastUpdatedAt of live terminal tasks, sorted.
    finished: Vec<Duration>,
    usage: Option<Usage>,
    unreadable: usize,
    foreign: usize,
}

impl Stats {
    /// Nothing counted yet, at `now`.
    fn new(now: OffsetDateTime) -> Stats {
        Stats {
            now,
            by_status: [0; 5],
            expired: 0,
            orphans: 0,
            oldest_active: None,
            finished: Vec::new(),
            usage: None,
            unreadable: 0,
            foreign: 0,
        }
    }

    /// Counts `task`; kept of it: its time to finish, if it finished, and
    /// its id, if it is the oldest running task so far.
    fn add(&mut self, task: &Task) {
        let now = self.now;
        if task.is_expired_at(now) {
            self.expired += 1;
            return;
        }
        let slot = STATUSES.iter().position(|s| *s == task.status).unwrap_or(0);
        self.by_status[slot] += 1;
        if task.is_orphan_at(now) {
            self.orphans += 1;
        }
        if task.is_terminal() {
            self.finished
                .push(text::since(task.last_updated_at, task.created_at));
        } else {
            let age = text::since(now, task.created_at);
            if self.oldest_active.as_ref().is_none_or(|(_, a)| age > *a) {
                self.oldest_active = Some((task.id.to_string(), age));
            }
        }
    }

    /// Done counting: the durations sorted, for their quantiles.
    fn finish(mut self) -> Stats {
        self.finished.sort_unstable();
        self
    }

    fn count(&self, status: TaskStatus) -> usize {
        self.by_status[STATUSES.iter().position(|s| *s == status).unwrap_or(0)]
    }

    fn live(&self) -> usize {
        self.by_status.iter().sum()
    }

    fn active(&self) -> usize {
        self.count(TaskStatus::Working) + self.count(TaskStatus::InputRequired)
    }

    /// The `q`-quantile of the finished tasks' durations, by nearest rank:
    /// the smallest duration that at least `q` of them do not exceed.
    fn quantile(&self, q: f64) -> Option<Duration> {
        let n = self.finished.len();
        if n == 0 {
            return None;
        }
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        Some(self.finished[rank - 1])
    }

    /// Completed among finished tasks.
    fn success_rate(&self) -> Option<f64> {
        let finished = self.finished.len();
        (finished > 0).then(|| self.count(TaskStatus::Completed) as f64 / finished as f64)
    }
}

pub fn run(args: &StatsArgs, target: &Target, upgrade: bool) -> Result<ExitCode, Failure> {
    let (stats, store) = match target {
        Target::File(dir) => {
            let mut progress = Progress::new();
            let older = Older::given(upgrade);
            // Counted as they are read: a store's history need not fit
            // in memory.
            let mut stats = Stats::new(OffsetDateTime::now_utc());
            let census = opening::census_each(
                dir,
                older,
                &mut |done, total| progress.update(done, total),
                &mut |task| stats.add(&task),
            )?;
            progress.finish();
            let mut stats = stats.finish();
            stats.usage = Some(census.usage);
            stats.unreadable = census.unreadable.len();
            stats.foreign = census.foreign.len();
            // Lossy: a path need not be UTF-8, and JSON text must be.
            (
                stats,
                json!({"backend": "file", "path": dir.to_string_lossy()}),
            )
        }
        #[cfg(feature = "postgres")]
        Target::Pg { schema, .. } => {
            let store = opening::open(target, None, upgrade, crate::Heard::nothing())?;
            let now = store.time();
            // Every stored task, expired ones too, changing nothing (a
            // listing leaves them out, and deletes them).
            let page = store.stored_list()?;
            let mut stats = Stats::new(now);
            page.tasks.iter().for_each(|task| stats.add(task));
            let mut stats = stats.finish();
            stats.unreadable = page.skipped.len();
            (
                stats,
                json!({"backend": "postgres", "schema": schema.as_deref().unwrap_or(taskstore::DEFAULT_SCHEMA)}),
            )
        }
    };
    if args.json {
        out(as_json(&stats, store).to_string());
    } else {
        print_text(&stats, &store);
    }
    Ok(ExitCode::SUCCESS)
}

fn ms(d: Duration) -> Value {
    json!(text::millis(d))
}

fn as_json(stats: &Stats, store: Value) -> Value {
    let by_status: serde_json::Map<String, Value> = STATUSES
        .iter()
        .map(|s| (s.as_str().to_owned(), json!(stats.count(*s))))
        .collect();
    json!({
        "store": store,
        "now": text::rfc3339(stats.now),
        "tasks": stats.live(),
        "byStatus": by_status,
        "expiredUnswept": stats.expired,
        "active": stats.active(),
        "orphans": stats.orphans,
        "oldestActive": stats.oldest_active.as_ref().map(|(id, age)| json!({"taskId": id, "ageMs": ms(*age)})),
        "finished": stats.finished.len(),
        "finishMs": (!stats.finished.is_empty()).then(|| json!({
            "p50": stats.quantile(0.50).map(ms),
            "p95": stats.quantile(0.95).map(ms),
            "max": stats.finished.last().copied().map(ms),
        })),
        "successRate": stats.success_rate(),
        "disk": stats.usage.map(|u| json!({
            "allocatedBytes": u.allocated_bytes,
            "fileBytes": u.file_bytes,
            "taskFiles": u.task_files,
            "taskBytes": u.task_bytes,
            "tempFiles": u.temp_files,
            "quarantined": u.quarantined,
            "quarantinedBytes": u.quarantined_bytes,
        })),
        "unreadable": stats.unreadable,
        "foreign": stats.foreign,
    })
}

fn print_text(stats: &Stats, store: &Value) {
    let place = match store["backend"].as_str() {
        Some("file") => format!("{} (files)", store["path"].as_str().unwrap_or("?")),
        _ => format!(
            "PostgreSQL, schema {}",
            store["schema"].as_str().unwrap_or("?")
        ),
    };
    out(format!("store           {place}"));
    out(format!("now             {}", text::rfc3339(stats.now)));
    out(format!(
        "tasks           {} (and {} expired, not swept yet)",
        stats.live(),
        stats.expired
    ));
    for status in STATUSES {
        out(format!(
            "  {:<14}{:>6}",
            status.as_str(),
            stats.count(status)
        ));
    }
    out(format!("active now      {}", stats.active()));
    out(format!(
        "orphans now     {} (running, lease lapsed)",
        stats.orphans
    ));
    match &stats.oldest_active {
        Some((id, age)) => out(format!("oldest active   {} ({id})", text::duration(*age))),
        None => out("oldest active   -"),
    }
    match (
        stats.quantile(0.5),
        stats.quantile(0.95),
        stats.finished.last(),
    ) {
        (Some(p50), Some(p95), Some(max)) => out(format!(
            "finished        {} (created to finished: p50 {}, p95 {}, max {})",
            stats.finished.len(),
            text::duration(p50),
            text::duration(p95),
            text::duration(*max)
        )),
        _ => out("finished        0"),
    }
    match stats.success_rate() {
        Some(rate) => out(format!(
            "success rate    {:.1}% ({} completed of {} finished)",
            rate * 100.0,
            stats.count(TaskStatus::Completed),
            stats.finished.len()
        )),
        None => out("success rate    -"),
    }
    if let Some(u) = stats.usage {
        out(format!(
            "on disk         {} allocated ({} in files: {} task files, {}; {} temp files)",
            text::bytes(u.allocated_bytes),
            text::bytes(u.file_bytes),
            u.task_files,
            text::bytes(u.task_bytes),
            u.temp_files
        ));
        out(format!(
            "quarantine      {} files ({})",
            u.quarantined,
            text::bytes(u.quarantined_bytes)
        ));
    }
    if stats.unreadable > 0 {
        out(format!(
            "unreadable      {} task files (taskstore verify says why)",
            stats.unreadable
        ));
    }
    if stats.foreign > 0 {
        out(format!(
            "foreign         {} names in active/ or done/ that are no task file's (taskstore repair sets them aside)",
            stats.foreign
        ));
    }
}
