//! Walks every crash point of a run, opens every crash state the model
//! allows, and checks what the reopened store shows against what the
//! workload's steps promised.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use taskstore::{
    Durability, Error, FileStore, FsEvent, ListQuery, ManualClock, Task, TaskId, TaskStore,
    Transition,
};
use time::OffsetDateTime;

use crate::model::{CrashState, Disk, Tree};
use crate::workload::{Effect, Run, STORE, scratch_dir};

/// At most this many violations are listed (the counts cover all of them).
const LISTED: usize = 40;
/// At most this many listed per operation and invariant, so that every
/// failing operation and every broken invariant shows up in the listing.
const LISTED_PER_KIND: usize = 2;

/// Under `Durability::Eventual` these are reported but not failed: the
/// containment the mode promises does not include that two reads of a
/// state a power loss left agree. (That expired tasks are swept is
/// checked: a finished task's file may come back without the index entry
/// the sweep finds it by, and the listing of all tasks before the sweep
/// gives it back.)
const EVENTUAL_ADVISORY: &[&str] = &[
    "list agrees with get",
    "list(active) agrees with get",
    "cancel agrees with get",
];

/// What the explorer found in one run.
pub struct Report {
    pub run: &'static str,
    pub durability: Durability,
    pub crash_points: usize,
    /// Crash states checked: distinct trees at each crash point (a tree
    /// reached at two crash points counts twice).
    pub states: usize,
    /// Distinct trees materialized and opened.
    pub opened: usize,
    /// The most pending name changes seen at one crash point.
    pub max_pending: usize,
    pub violations: Vec<Violation>,
    /// Found but not failed (see [`EVENTUAL_ADVISORY`]).
    pub advisories: Vec<Violation>,
    pub elapsed: Duration,
    steps: Vec<String>,
}

/// One broken promise in one crash state.
#[derive(Clone, Debug)]
pub struct Violation {
    /// The step whose promise broke: the acknowledged step that last
    /// changed the task, or the step in flight.
    pub step: usize,
    /// The crash point: after this many seam calls.
    pub crash: usize,
    /// Whether the step was still in flight at the crash.
    pub in_flight: bool,
    /// What happened just before the crash.
    pub last_call: String,
    pub state: String,
    pub invariant: &'static str,
    pub detail: String,
}

/// Which crash points of a run, and which states at each, are checked.
pub enum Scope {
    /// Every crash point, every state the model gives at it.
    Every,
    /// These crash points (counted from 1), each with the model's seeded
    /// sample of `random` states besides none and all applied
    /// (`Disk::sampled_crash_states`, seeded with `seed` and the point).
    Sampled {
        points: BTreeSet<usize>,
        seed: u64,
        random: usize,
    },
}

/// Explores every crash point of `run`.
pub fn explore(run: &Run) -> Report {
    explore_in(run, &Scope::Every)
}

/// Explores the crash points of `run` that `scope` picks.
pub fn explore_in(run: &Run, scope: &Scope) -> Report {
    let started = Instant::now();
    let scratch = scratch_dir("taskstore-crash-states");
    let mut disk = Disk::new(&run.base);
    let mut cache: HashMap<(u64, i128, BTreeSet<TaskId>), Arc<Observation>> = HashMap::new();
    let mut report = Report {
        run: run.name,
        durability: run.durability,
        crash_points: match scope {
            Scope::Every => run.events.len(),
            Scope::Sampled { points, .. } => points.len(),
        },
        states: 0,
        opened: 0,
        max_pending: 0,
        violations: Vec::new(),
        advisories: Vec::new(),
        elapsed: Duration::ZERO,
        steps: run.steps.iter().map(|s| s.label.clone()).collect(),
    };
    for crash in 1..=run.events.len() {
        disk.apply(&run.events[crash - 1]);
        report.max_pending = report.max_pending.max(disk.pending_changes());
        let states = match scope {
            Scope::Every => disk.crash_states(),
            Scope::Sampled {
                points,
                seed,
                random,
            } if points.contains(&crash) => disk.sampled_crash_states(seed ^ crash as u64, *random),
            Scope::Sampled { .. } => continue,
        };
        let expect = Expectation::at(run, crash);
        let last_call = describe_call(&run.events[crash - 1], &run.base);
        let terminal = expect.acked_terminal();
        for state in distinct(states) {
            report.states += 1;
            let key = (
                state.tree.digest(),
                expect.now.unix_timestamp_nanos(),
                terminal.clone(),
            );
            let observation = cache
                .entry(key)
                .or_insert_with(|| {
                    report.opened += 1;
                    let at = scratch.path().join(report.opened.to_string());
                    Arc::new(observe(&state.tree, &at, expect.now, &run.ids, &terminal))
                })
                .clone();
            for (id, invariant, detail) in check(&observation, &expect, run.durability) {
                let advisory = run.durability == Durability::Eventual
                    && EVENTUAL_ADVISORY.contains(&invariant);
                let into = if advisory {
                    &mut report.advisories
                } else {
                    &mut report.violations
                };
                let step = expect.blame(id.as_ref());
                into.push(Violation {
                    step,
                    crash,
                    in_flight: expect.in_flight == Some(step),
                    last_call: last_call.clone(),
                    state: state.label.clone(),
                    invariant,
                    detail,
                });
            }
        }
    }
    report.elapsed = started.elapsed();
    report
}

/// The distinct trees among `states`, each under its shortest label, in the
/// order they first appear.
fn distinct(states: Vec<CrashState>) -> Vec<CrashState> {
    let mut out: Vec<CrashState> = Vec::new();
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for state in states {
        match seen.get(&state.tree.digest()) {
            Some(&i) => {
                if state.label.len() < out[i].label.len() {
                    out[i].label = state.label;
                }
            }
            None => {
                seen.insert(state.tree.digest(), out.len());
                out.push(state);
            }
        }
    }
    out
}

impl Report {
    /// The labels of the steps with a failing crash state.
    pub fn failing_steps(&self) -> Vec<&str> {
        let steps: BTreeSet<usize> = self.violations.iter().map(|v| v.step).collect();
        steps.into_iter().map(|s| self.steps[s].as_str()).collect()
    }

    /// One line of figures.
    pub fn summary(&self) -> String {
        let mut line = format!(
            "crash-state explorer, {} ({:?}): {} crash points, {} crash states checked, \
             {} distinct trees opened, at most {} pending name changes, {:.1} s",
            self.run,
            self.durability,
            self.crash_points,
            self.states,
            self.opened,
            self.max_pending,
            self.elapsed.as_secs_f64()
        );
        if !self.advisories.is_empty() {
            let _ = write!(
                line,
                "; advisory (not failed): {} crash states ({})",
                distinct_states(&self.advisories),
                by_invariant(&self.advisories)
            );
        }
        line
    }

    /// The failure report: per operation, how many crash states break which
    /// invariant; per invariant, how many and where first; then a capped
    /// listing of (operation, crash point, state, invariant).
    pub fn failure(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}", self.summary());
        let _ = writeln!(
            out,
            "{} of {} crash states break an invariant ({} violations).",
            distinct_states(&self.violations),
            self.states,
            self.violations.len()
        );
        let _ = writeln!(
            out,
            "By operation (the acknowledged call whose promise broke, or the call in flight):"
        );
        let mut by_step: BTreeMap<usize, Vec<Violation>> = BTreeMap::new();
        for v in &self.violations {
            by_step.entry(v.step).or_default().push(v.clone());
        }
        for (step, vs) in &by_step {
            let during: Vec<Violation> = vs.iter().filter(|v| v.in_flight).cloned().collect();
            let _ = writeln!(
                out,
                "  {:<40} {:>4} crash states, {:>3} of them in flight ({})",
                self.steps[*step],
                distinct_states(vs),
                distinct_states(&during),
                by_invariant(vs)
            );
        }
        let _ = writeln!(out, "By invariant (and the first crash point breaking it):");
        let mut by_kind: BTreeMap<&str, Vec<Violation>> = BTreeMap::new();
        for v in &self.violations {
            by_kind.entry(v.invariant).or_default().push(v.clone());
        }
        for (kind, vs) in &by_kind {
            let first = &vs[0];
            let _ = writeln!(
                out,
                "  {:<40} {:>4} crash states, first at crash {} after {}",
                kind,
                distinct_states(vs),
                first.crash,
                first.last_call
            );
        }
        let _ = writeln!(
            out,
            "Listing (at most {LISTED_PER_KIND} per operation and invariant, {LISTED} in all):"
        );
        let mut listed = 0;
        let mut per_kind: BTreeMap<(usize, &str), usize> = BTreeMap::new();
        for v in &self.violations {
            let n = per_kind.entry((v.step, v.invariant)).or_default();
            if *n >= LISTED_PER_KIND || listed >= LISTED {
                continue;
            }
            *n += 1;
            listed += 1;
            let _ = writeln!(
                out,
                "  [{}] crash {}/{} after {} | state: {} | {}: {}",
                self.steps[v.step],
                v.crash,
                self.crash_points,
                v.last_call,
                v.state,
                v.invariant,
                v.detail
            );
        }
        if listed < self.violations.len() {
            let _ = writeln!(out, "  ... and {} more", self.violations.len() - listed);
        }
        out
    }
}

/// How many distinct (crash point, state) pairs `vs` fall in.
fn distinct_states(vs: &[Violation]) -> usize {
    vs.iter()
        .map(|v| (v.crash, v.state.as_str()))
        .collect::<BTreeSet<_>>()
        .len()
}

/// "invariant: n crash states, ..." for `vs`.
fn by_invariant(vs: &[Violation]) -> String {
    let mut kinds: BTreeMap<&str, BTreeSet<(usize, &str)>> = BTreeMap::new();
    for v in vs {
        kinds
            .entry(v.invariant)
            .or_default()
            .insert((v.crash, v.state.as_str()));
    }
    kinds
        .iter()
        .map(|(k, s)| format!("{k}: {}", s.len()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the steps promised at one crash point.
struct Expectation {
    durability: Durability,
    /// The store clock at the crash.
    now: OffsetDateTime,
    /// The step in flight, or the last one that returned.
    current: usize,
    /// The step in flight, if any.
    in_flight: Option<usize>,
    /// `Immediate`: the versions each task may have (`None`: absent), expiry
    /// applied.
    allowed: BTreeMap<TaskId, Vec<Option<Task>>>,
    /// `Eventual`: every version written of each task by a step that started.
    written: BTreeMap<TaskId, Vec<Task>>,
    /// The last acknowledged step that changed each task.
    acked_by: BTreeMap<TaskId, usize>,
    /// The tasks the step in flight changes.
    in_flight_ids: BTreeSet<TaskId>,
}

impl Expectation {
    fn at(run: &Run, crash: usize) -> Expectation {
        let mut e = Expectation {
            durability: run.durability,
            now: run.steps[0].now,
            current: 0,
            in_flight: None,
            allowed: run.ids.iter().map(|id| (id.clone(), vec![None])).collect(),
            written: BTreeMap::new(),
            acked_by: BTreeMap::new(),
            in_flight_ids: BTreeSet::new(),
        };
        for (i, step) in run.steps.iter().enumerate() {
            if step.start >= crash {
                break;
            }
            e.now = step.now;
            e.current = i;
            let acked = step.end <= crash;
            if !acked {
                e.in_flight = Some(i);
            }
            let mut touch = |id: &TaskId, version: Option<&Task>| {
                let allowed = e.allowed.get_mut(id).expect("a known id");
                if acked {
                    allowed.clear();
                }
                allowed.push(version.cloned());
                if let Some(t) = version {
                    e.written.entry(id.clone()).or_default().push(t.clone());
                }
                if acked {
                    e.acked_by.insert(id.clone(), i);
                } else {
                    e.in_flight_ids.insert(id.clone());
                }
            };
            match &step.effect {
                Effect::Nothing => {}
                Effect::Put(tasks) => tasks.iter().for_each(|t| touch(&t.id, Some(t))),
                Effect::Remove(ids) => ids.iter().for_each(|id| touch(id, None)),
            }
        }
        let now = e.now;
        for versions in e.allowed.values_mut() {
            for v in versions.iter_mut() {
                if v.as_ref().is_some_and(|t| t.is_expired_at(now)) {
                    *v = None;
                }
            }
            let mut unique: Vec<Option<Task>> = Vec::new();
            for v in versions.drain(..) {
                if !unique.contains(&v) {
                    unique.push(v);
                }
            }
            *versions = unique;
        }
        e
    }

    /// The step a violation about `id` is charged to.
    fn blame(&self, id: Option<&TaskId>) -> usize {
        match id {
            Some(id) if self.in_flight_ids.contains(id) => self.in_flight.unwrap_or(self.current),
            Some(id) => self.acked_by.get(id).copied().unwrap_or(self.current),
            None => self.current,
        }
    }

    /// Under `Immediate`, the tasks every allowed version of which is
    /// terminal (none under `Eventual`, which may lose any of them).
    fn acked_terminal(&self) -> BTreeSet<TaskId> {
        if self.durability != Durability::Immediate {
            return BTreeSet::new();
        }
        self.allowed
            .iter()
            .filter(|(_, vs)| vs.iter().all(|v| v.as_ref().is_some_and(Task::is_terminal)))
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn allows(&self, id: &TaskId, got: &Option<Task>) -> bool {
        self.allowed[id].contains(got)
    }

    /// Whether `got` is a version some started step wrote (or absent).
    fn was_written(&self, id: &TaskId, got: &Option<Task>) -> bool {
        match got {
            None => true,
            Some(t) => self.written.get(id).is_some_and(|w| w.contains(t)),
        }
    }
}

/// An error, as much of it as the checks need.
#[derive(Clone, Debug)]
struct Failed {
    corrupt: bool,
    not_found: bool,
    message: String,
}

impl Failed {
    /// `e`, its message naming paths inside the state directory `at` as
    /// `<state>/...` (so that reports are short and the same every run).
    fn new(e: Error, at: &Path) -> Failed {
        Failed {
            corrupt: matches!(e, Error::Corrupt { .. }),
            not_found: matches!(e, Error::NotFound { .. }),
            message: e.to_string().replace(&at.display().to_string(), "<state>"),
        }
    }
}

type Got<T> = Result<T, Failed>;

/// What a store opened on one crash state showed, in this order: open, `get`
/// of every task, `list` of all tasks, `list` of active ones, the files set
/// aside meanwhile, `get` again, then `cancel` of every task that read
/// terminal or whose terminal state was acknowledged.
#[derive(Debug, Default)]
struct Observation {
    panic: Option<String>,
    opened: Option<Got<()>>,
    first: BTreeMap<TaskId, Got<Option<Task>>>,
    listed: Option<Got<BTreeMap<TaskId, Task>>>,
    active: Option<Got<BTreeSet<TaskId>>>,
    set_aside: usize,
    second: BTreeMap<TaskId, Got<Option<Task>>>,
    cancels: BTreeMap<TaskId, Got<Transition>>,
    /// What a sweep a week later left of the tasks with a TTL: their files
    /// and index entries.
    swept: Option<Got<Vec<String>>>,
}

/// Materializes `tree` at `at`, opens the store in it and looks; `terminal`
/// are the tasks whose terminal state was acknowledged.
fn observe(
    tree: &Tree,
    at: &Path,
    now: OffsetDateTime,
    ids: &[TaskId],
    terminal: &BTreeSet<TaskId>,
) -> Observation {
    fs::create_dir(at).expect("a fresh state directory");
    tree.materialize(at);
    let root = at.join(STORE);
    let mut obs = Observation::default();
    let failed = |e: Error| Failed::new(e, at);
    let looked = catch_unwind(AssertUnwindSafe(|| {
        let clock = Arc::new(ManualClock::new(now));
        let store = match FileStore::builder(&root)
            .clock(clock.clone())
            .instance_id("checker")
            .open()
        {
            Ok(store) => {
                obs.opened = Some(Ok(()));
                store
            }
            Err(e) => {
                obs.opened = Some(Err(failed(e)));
                return;
            }
        };
        for id in ids {
            obs.first.insert(id.clone(), store.get(id).map_err(failed));
        }
        obs.listed = Some(
            store
                .list(&ListQuery::all())
                .map(|p| p.tasks.into_iter().map(|t| (t.id.clone(), t)).collect())
                .map_err(failed),
        );
        obs.active = Some(
            store
                .list(&ListQuery::active())
                .map(|p| p.tasks.into_iter().map(|t| t.id).collect())
                .map_err(failed),
        );
        obs.set_aside = fs::read_dir(root.join("quarantine"))
            .map(|d| d.count())
            .unwrap_or(0);
        for id in ids {
            obs.second.insert(id.clone(), store.get(id).map_err(failed));
        }
        // Only tasks that read terminal, or whose terminal state was
        // acknowledged, are cancelled: for them it must change nothing (a
        // running task's cancel would apply, as `get` already says).
        for (id, got) in &obs.second {
            if terminal.contains(id) || matches!(got, Ok(Some(t)) if t.is_terminal()) {
                obs.cancels.insert(
                    id.clone(),
                    store.cancel(id, Some("checker".into())).map_err(failed),
                );
            }
        }
        // Every TTL of the workload has run out a week later: a sweep then
        // leaves no task that has one, and no index entry.
        clock.advance(Duration::from_secs(7 * 24 * 3600));
        obs.swept = Some(
            store
                .sweep_expired()
                .map(|_| with_a_ttl(&root))
                .map_err(failed),
        );
    }));
    if let Err(panic) = looked {
        obs.panic = Some(
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic".to_owned()),
        );
    }
    fs::remove_dir_all(at).expect("remove a state directory");
    obs
}

/// The files of `active/` and `done/` whose task has a TTL (or that do not
/// decode), and every entry of `expiring/`, as `area/name`.
fn with_a_ttl(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for area in ["active", "done", "expiring"] {
        let Ok(entries) = fs::read_dir(root.join(area)) else {
            continue;
        };
        for entry in entries {
            let entry = entry.expect("read a state's directory");
            let name = entry.file_name().to_string_lossy().into_owned();
            let has_ttl = area == "expiring"
                || fs::read(entry.path())
                    .ok()
                    .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
                    .is_none_or(|file| !file["task"]["ttlMs"].is_null());
            if has_ttl {
                out.push(format!("{area}/{name}"));
            }
        }
    }
    out.sort();
    out
}

type Found = (Option<TaskId>, &'static str, String);

/// The promises `obs` breaks.
fn check(obs: &Observation, e: &Expectation, durability: Durability) -> Vec<Found> {
    let mut out: Vec<Found> = Vec::new();
    let terminal = e.acked_terminal();
    if let Some(panic) = &obs.panic {
        out.push((None, "no panic", panic.clone()));
    }
    match &obs.opened {
        Some(Ok(())) => {}
        Some(Err(f)) => {
            out.push((None, "the store opens", f.message.clone()));
            return out;
        }
        None => return out,
    }
    let immediate = durability == Durability::Immediate;
    if immediate && obs.set_aside > 0 {
        out.push((
            None,
            "nothing torn",
            format!("{} file(s) set aside as unreadable", obs.set_aside),
        ));
    }
    let listed = match &obs.listed {
        Some(Ok(listed)) => Some(listed),
        Some(Err(f)) => {
            out.push((None, "list works", f.message.clone()));
            None
        }
        None => None,
    };
    let active = match &obs.active {
        Some(Ok(active)) => Some(active),
        Some(Err(f)) => {
            out.push((None, "list works", format!("active: {}", f.message)));
            None
        }
        None => None,
    };
    for (id, first) in &obs.first {
        let some = Some(id.clone());
        let got = match first {
            Ok(got) => got.clone(),
            Err(f) if !immediate && f.corrupt => {
                // Eventual: a damaged file is allowed, once; the listing
                // sets it aside and the second look must read.
                match obs.second.get(id) {
                    Some(Ok(got)) => got.clone(),
                    Some(Err(f)) => {
                        out.push((some, "damaged files are set aside", f.message.clone()));
                        continue;
                    }
                    None => continue,
                }
            }
            Err(f) => {
                out.push((some, "nothing torn", format!("get: {}", f.message)));
                continue;
            }
        };
        if immediate && !e.allows(id, &got) {
            out.push((
                some.clone(),
                "acknowledged state kept",
                format!("get: {}; allowed: {}", show(&got), show_all(&e.allowed[id])),
            ));
        }
        if !e.was_written(id, &got) {
            out.push((
                some.clone(),
                "only written versions",
                format!("get: {}", show(&got)),
            ));
        }
        if let Some(listed) = listed {
            let in_list = listed.get(id).cloned();
            if in_list != got {
                out.push((
                    some.clone(),
                    "list agrees with get",
                    format!("list: {}; get: {}", show(&in_list), show(&got)),
                ));
            }
        }
        if let Some(active) = active {
            let running = got.as_ref().is_some_and(|t| !t.is_terminal());
            if active.contains(id) != running {
                out.push((
                    some.clone(),
                    "list(active) agrees with get",
                    format!(
                        "{} by list(active); get: {}",
                        if active.contains(id) {
                            "listed"
                        } else {
                            "not listed"
                        },
                        show(&got)
                    ),
                ));
            }
        }
        // Under Immediate, once every version the task may have is
        // terminal, it must read terminal and stay so.
        if terminal.contains(id) {
            let cancel = obs.cancels.get(id);
            let cancel_final = matches!(cancel, Some(Ok(Transition::AlreadyTerminal(t))) if e.allows(id, &Some(t.clone())));
            if !got.as_ref().is_some_and(Task::is_terminal) || !cancel_final {
                out.push((
                    some.clone(),
                    "first terminal state final",
                    format!(
                        "acknowledged {}; get: {}; cancel: {}",
                        show_all(&e.allowed[id]),
                        show(&got),
                        cancel.map_or_else(|| "not tried".to_owned(), show_cancel)
                    ),
                ));
            }
        }
        let cancel_agrees = match (obs.cancels.get(id), &got) {
            (None, _) => true,
            (Some(Ok(Transition::AlreadyTerminal(t))), Some(g)) => g.is_terminal() && t == g,
            (Some(Ok(Transition::Applied(_))), Some(g)) => !g.is_terminal(),
            (Some(Err(f)), None) => f.not_found,
            _ => false,
        };
        if !cancel_agrees {
            out.push((
                some.clone(),
                "cancel agrees with get",
                format!(
                    "cancel after get {}: {}",
                    show(&got),
                    show_cancel(&obs.cancels[id])
                ),
            ));
        }
    }
    match &obs.swept {
        Some(Ok(left)) if !left.is_empty() => out.push((
            None,
            "expired tasks swept",
            format!("left by a sweep a week later: {}", left.join(", ")),
        )),
        Some(Err(f)) => out.push((None, "sweep works", f.message.clone())),
        _ => {}
    }
    if let Some(listed) = listed {
        for (id, t) in listed {
            if !e.allowed.contains_key(id) {
                out.push((
                    None,
                    "only written versions",
                    format!("list shows unknown task {id} ({})", show_task(t)),
                ));
            }
        }
    }
    out
}

fn show_task(t: &Task) -> String {
    format!("{} r{}", t.status, t.revision)
}

fn show(v: &Option<Task>) -> String {
    v.as_ref().map_or_else(|| "absent".to_owned(), show_task)
}

fn show_cancel(result: &Got<Transition>) -> String {
    match result {
        Ok(Transition::Applied(t)) => format!("applied ({})", show_task(t)),
        Ok(Transition::AlreadyTerminal(t)) => format!("already terminal ({})", show_task(t)),
        Ok(other) => format!("{other:?}"),
        Err(f) => f.message.clone(),
    }
}

fn show_all(vs: &[Option<Task>]) -> String {
    vs.iter().map(show).collect::<Vec<_>>().join(" or ")
}

/// A seam call for a report, paths relative to the base.
fn describe_call(event: &FsEvent, base: &Path) -> String {
    let p = |path: &Path| {
        path.strip_prefix(base)
            .unwrap_or(path)
            .display()
            .to_string()
    };
    match event {
        FsEvent::Create { path } => format!("create {}", p(path)),
        FsEvent::Write { path, bytes } => format!("write {} ({} bytes)", p(path), bytes.len()),
        FsEvent::SyncFile { path } => format!("fsync {}", p(path)),
        FsEvent::Rename { from, to } => format!("rename {} -> {}", p(from), p(to)),
        FsEvent::Link { from, to } => format!("link {} -> {}", p(from), p(to)),
        FsEvent::Remove { path } => format!("unlink {}", p(path)),
        FsEvent::SyncDir { path } => format!("fsync dir {}/", p(path)),
        FsEvent::CreateDir { path } => format!("mkdir {}", p(path)),
        other => format!("{other:?}"),
    }
}
