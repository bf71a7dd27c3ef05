//! `taskstore`: see, check and repair a live store without writing code.
//!
//! Every command opens the store as any process of the service would (its
//! locks, its atomic writes), so it is safe beside live writers in other
//! processes. `verify` and `repair` look at a file store's files with
//! [`taskstore::FileCheck`]; everything else goes through the store's own
//! API.

#![forbid(unsafe_code)]

mod check;
mod copy;
mod heard;
mod maintain;
mod opening;
mod stats;
mod tail;
mod tasks;
mod text;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use heard::Heard;
use opening::{Older, census, is_store, open};
use taskstore::backend::Backend;
use taskstore::{Orphan, Store, Task, TaskStore};
use time::OffsetDateTime;

/// See, check and repair a taskstore store.
///
/// The store is a directory (`--store DIR`, or TASKSTORE_STORE), or with
/// PostgreSQL support a database (`--pg CONNINFO`, or TASKSTORE_PG). Every
/// command works beside the service's own processes: it takes the store's
/// locks and writes as they do.
///
/// Results (what a script reads) go to stdout: the tasks, problems and
/// repairs found, what a pass did or would do with each task, one a line,
/// or one document (show, stats, cancel); with --json, as JSON. The rest
/// goes to stderr: a pass's or a check's summary (its counts), the next
/// cursor (with list --next-cursor, on stdout too), progress, notes (a
/// wait) and errors, which name the path or task, and what the command
/// was doing.
///
/// Exit status: 0 success; 1 a failure, problems found (verify: leftovers
/// of crashed writers alone, which the next open removes, moves and
/// removals they left unfinished, which the store's sweep finishes, and an
/// older format, which the next open moves, are listed but pass), or
/// problems left in the store (repair --apply); 2 a
/// usage error.
#[derive(Debug, Parser)]
#[command(name = "taskstore", version, about, long_about)]
struct Cli {
    /// The store's directory (it must be a store already: nothing is
    /// created). An empty TASKSTORE_STORE counts as unset.
    #[arg(long, global = true, env = "TASKSTORE_STORE", value_name = "DIR")]
    store: Option<PathBuf>,

    /// A PostgreSQL store: a libpq-style connection string or a
    /// postgresql:// URL. An empty TASKSTORE_PG counts as unset.
    #[cfg(feature = "postgres")]
    #[arg(
        long,
        global = true,
        env = "TASKSTORE_PG",
        value_name = "CONNINFO",
        value_parser = conninfo()
    )]
    pg: Option<String>,

    /// The PostgreSQL schema of the store (with --pg).
    #[cfg(feature = "postgres")]
    #[arg(
        long,
        global = true,
        env = "TASKSTORE_PG_SCHEMA",
        value_name = "SCHEMA"
    )]
    pg_schema: Option<String>,

    /// Where `store`, `pg` and `pg_schema` came from (set after parsing).
    #[cfg(feature = "postgres")]
    #[arg(skip)]
    from_env: FromEnv,

    /// Moves a file store of an older format to this version's when a
    /// command opens it, or `stats` reads it (waiting until no other
    /// process has it open), and migrates a PostgreSQL schema of an older
    /// version (rewriting its table); versions that read only the older
    /// format refuse it after. Without it, such a store is refused and left
    /// as it is; a dry run never moves it.
    #[arg(long, global = true)]
    upgrade: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Lists tasks, oldest first: a table, or one JSON object per line with
    /// --json (the table is printed whether or not stdout is a terminal;
    /// scripts pass --json). The next page's cursor, if there is one, goes
    /// to stderr (with --json --next-cursor, to stdout too, as a last line
    /// {"nextCursor": CURSOR}).
    List(tasks::ListArgs),
    /// Prints one task as JSON (on one line with --json). An expired task
    /// is not found, and is deleted (as any read of it through the store
    /// deletes it; a sweep would).
    Show(tasks::ShowArgs),
    /// Counts tasks by status, active tasks and orphans now, the oldest
    /// active task's age, how long finished tasks took (createdAt to
    /// lastUpdatedAt), the success rate and, for a file store, what its
    /// files take on disk (allocated blocks, as du counts them; and their
    /// sizes) and the files in quarantine. Changes nothing, but makes the
    /// store's lock file (locks/handles.lock) if it is missing: it holds
    /// that lock shared, as the service's processes do.
    Stats(stats::StatsArgs),
    /// Checks a file store's files as fsck does; changes nothing, but makes
    /// the empty lock files it takes if they are missing (locks/handles.lock,
    /// a stripe's, the batches lock's). Prints each finding with its path:
    /// a problem, or a leftover of a crashed writer that the next open
    /// removes (a dead writer's temp file, a stale copy of a finished
    /// task), or work left unfinished that the store's sweep finishes: a
    /// terminal move, which the next sweep (or a write of the task)
    /// finishes and every read already sees final (a killed reap's), or a
    /// stale expiring/ entry, which a sweep removes once it is due (a
    /// killed delete's or sweep's; the summary says how many are due now).
    /// A store of an older format is no damage either: it reports the
    /// format, which the next open that may upgrade the store moves (a
    /// service's; the command's with --upgrade), and checks its entries
    /// once it is moved. Exits 0 if there are none or only those (the
    /// store may be opened as it is: a start-up check), 1 if there is a
    /// problem.
    Verify(check::VerifyArgs),
    /// Repairs what verify finds that can be repaired safely. Prints what
    /// it would do unless --apply is given (changing nothing but the lock
    /// files it takes, as verify: locks/handles.lock and others, made if
    /// missing); with it, checks the store again
    /// when done and exits 1 if any problem remains (what only a person can
    /// decide, a failed or skipped repair, batches still under way). A
    /// directory of the store whose mode denies its owner reading it
    /// (done/ at 0000), which keeps its entries from being checked, has its
    /// mode set first; the store is then checked and repaired again, whole.
    Repair(check::RepairArgs),
    /// Deletes expired tasks (and crashed writers' leftovers), listing each
    /// task it deleted; --dry-run lists what would go.
    Sweep(maintain::SweepArgs),
    /// Fails orphans: running tasks whose owner stopped renewing its lease;
    /// --dry-run lists them and what would happen to each.
    Reap(maintain::ReapArgs),
    /// Cancels a task; the first writer wins, and the output says whether
    /// this cancel did or the task had already finished.
    Cancel(tasks::CancelArgs),
    /// Prints the events of a JSON-lines event file (written by
    /// JsonLinesSink); --follow keeps reading as it grows.
    Tail(tail::TailArgs),
    /// Copies every live task of the store into another (--to-store DIR,
    /// or --to-pg CONNINFO), exactly as it is: id, status, revision, every
    /// time, owner, lease, epoch, owner token, attempts, checkpoint, input
    /// requests, metadata, result or error. For a service that moves its
    /// store (a file store to PostgreSQL, and back).
    ///
    /// Stop the service's writers first: a copy is no transaction. At its
    /// end it reads the source once more and lists each task that changed,
    /// appeared or was deleted there meanwhile ("changed"). Expired tasks
    /// are left out (counted). A task the destination already holds, equal,
    /// is skipped and counted (a copy run again copies nothing); one that
    /// differs is listed and left as it is, never overwritten. A task the
    /// destination's caps refuse (--max-active, --max-payload-bytes: give
    /// the service's) is listed with why, and the copy goes on. The
    /// destination's event sinks hear no task.created: the copy makes no
    /// new task. No task of the source is changed.
    ///
    /// Prints a line per task copied, differing, not copied or changed
    /// (with --json, {"taskId", "action": "copy" or "check", "outcome":
    /// "done" or "failed", and "error"}) and the counts on stderr.
    /// Exits 1 if any task differed, was not copied, could not be read or
    /// changed. An error of the destination's (no store there, one that
    /// cannot be made or reached) says so: "destination (--to-store): …";
    /// one of the source's (no store there, one that cannot be reached or
    /// read) too: "source (--store): …".
    Copy(copy::CopyArgs),
}

/// Whether each way of naming a store came from its environment variable
/// rather than a flag: a flag names the store over the other's variable, and
/// a schema typed beside a file store is a mistake where one from
/// TASKSTORE_PG_SCHEMA (set for other commands) is not.
#[cfg(feature = "postgres")]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct FromEnv {
    store: bool,
    pg: bool,
    schema: bool,
}

/// The store a command works on.
enum Target {
    File(PathBuf),
    #[cfg(feature = "postgres")]
    Pg {
        conninfo: String,
        schema: Option<String>,
    },
}

/// What the commands ask of a store, whatever its backend: the trait hosts
/// hold, and the store's clock and dry runs.
trait Handle: TaskStore {
    /// [`Store::now`].
    fn time(&self) -> OffsetDateTime;
    /// [`Store::stored`] (`stats` and the dry runs over PostgreSQL: a
    /// listing would delete the expired tasks it meets).
    #[cfg(feature = "postgres")]
    fn stored_list(&self) -> taskstore::Result<taskstore::Page>;
}

impl<B: Backend> Handle for Store<B> {
    fn time(&self) -> OffsetDateTime {
        self.now()
    }
    #[cfg(feature = "postgres")]
    fn stored_list(&self) -> taskstore::Result<taskstore::Page> {
        self.stored()
    }
}

/// A command's failure: its message goes to stderr.
type Failure = Box<dyn std::error::Error>;

fn main() -> ExitCode {
    let matches = command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    #[cfg(feature = "postgres")]
    let cli = {
        let env = |id| matches.value_source(id) == Some(clap::parser::ValueSource::EnvVariable);
        Cli {
            from_env: FromEnv {
                store: env("store"),
                pg: env("pg"),
                schema: env("pg_schema"),
            },
            ..cli
        }
    };
    if let Command::List(args) = &cli.command {
        args.check();
    }
    let result = match &cli.command {
        Command::Tail(args) => tail::run(args),
        command => target(&cli).and_then(|target| run(command, &target, cli.upgrade)),
    };
    // The lines a store call printed as it went are all written (or their
    // reader gone) before the command's last word, whatever ended it.
    let stdout_failed = text::stdout_failed();
    match result {
        Ok(_) if stdout_failed => ExitCode::FAILURE,
        Ok(code) => code,
        Err(e) => {
            text::err(format!("taskstore: error: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// The command line, with each variable that names a store taken as unset
/// when it is set but empty (`TASKSTORE_STORE= taskstore list`): clap would
/// read it as an empty `--store`, and its error blames a flag the user
/// never typed. Without one, the command says that no store was given.
fn command() -> clap::Command {
    let variables = [
        ("store", "TASKSTORE_STORE"),
        #[cfg(feature = "postgres")]
        ("pg", "TASKSTORE_PG"),
        #[cfg(feature = "postgres")]
        ("pg_schema", "TASKSTORE_PG_SCHEMA"),
    ];
    let mut command = Cli::command();
    for (arg, variable) in variables {
        if std::env::var_os(variable).is_some_and(|value| value.is_empty()) {
            command = command.mut_arg(arg, |arg| arg.env(None::<&'static str>));
        }
    }
    // `tail` reads a file, not a store: the store's options (global, so
    // that they may come before or after any command) are accepted there,
    // and ignored, but not listed in its help. A subcommand given its own
    // copy of a global argument keeps it.
    let hidden: Vec<clap::Arg> = command
        .get_arguments()
        .filter(|arg| arg.is_global_set())
        .map(|arg| arg.clone().hide(true))
        .collect();
    command.mut_subcommand("tail", |tail| tail.args(hidden))
}

fn run(command: &Command, target: &Target, upgrade: bool) -> Result<ExitCode, Failure> {
    perform(command, target, upgrade).map_err(|e| doing(command, e))
}

/// A failure of `command` said with what the command was doing, where the
/// store's error says only what failed on which file (an `Error::Io`: a
/// lock file that would not open, a directory that would not read). A
/// cancel names its task whatever of the store's failed (an error may name
/// only a file), but a task not found names itself, once. Other errors say
/// what they are about already (the task, the store, the server), or were
/// said by the command (a copy's).
fn doing(command: &Command, e: Failure) -> Failure {
    let Some(error) = e.downcast_ref::<taskstore::Error>() else {
        return e;
    };
    let what = match command {
        Command::Cancel(args) => {
            return match error {
                taskstore::Error::NotFound { id } if *id == args.id => {
                    format!("could not cancel: {e}")
                }
                _ => format!("could not cancel task {}: {e}", args.id),
            }
            .into();
        }
        _ if !matches!(error, taskstore::Error::Io { .. }) => return e,
        Command::List(_) => "list tasks".to_owned(),
        Command::Show(args) => format!("show task {}", args.id),
        Command::Stats(_) => "count the store's tasks".to_owned(),
        Command::Verify(_) => "verify the store".to_owned(),
        Command::Repair(_) => "repair the store".to_owned(),
        Command::Sweep(args) if args.dry_run => "judge what a sweep would do".to_owned(),
        Command::Sweep(_) => "sweep".to_owned(),
        Command::Reap(args) if args.dry_run => "judge what a reap would do".to_owned(),
        Command::Reap(_) => "reap".to_owned(),
        Command::Copy(_) | Command::Tail(_) => return e,
    };
    format!("could not {what}: {e}").into()
}

/// `command` on `target` ([`run`]).
fn perform(command: &Command, target: &Target, upgrade: bool) -> Result<ExitCode, Failure> {
    // Every command, whatever reads the store (a handle, a check, a census),
    // refuses what is not one alike: a symlink by name, not as "not a
    // directory". (`copy` says its refusal as the source's.)
    match (target, command) {
        (_, Command::Copy(args)) => return copy::run(args, target, upgrade),
        (Target::File(dir), _) => is_store(dir)?,
        #[cfg(feature = "postgres")]
        (Target::Pg { .. }, _) => {}
    }
    match command {
        Command::Copy(_) => unreachable!("handled above"),
        Command::Verify(args) => check::verify(args, file_only(target, "verify")?),
        Command::Repair(args) => check::repair(args, file_only(target, "repair")?),
        Command::Stats(args) => stats::run(args, target, upgrade),
        Command::Reap(args) if args.dry_run => {
            maintain::reap_preview(&preview(target, args.claim_grace)?, args.json)
        }
        Command::Sweep(args) if args.dry_run => {
            maintain::sweep_preview(&preview(target, None)?, args.json)
        }
        Command::Reap(args) => {
            let heard = Heard::deletions(args.json, maintain::MET_BY_THE_REAP);
            maintain::reap(&*open(target, args.claim_grace, upgrade, heard)?, args.json)
        }
        Command::Sweep(args) => maintain::sweep(&*open(
            target,
            None,
            upgrade,
            Heard::deletions(args.json, ""),
        )?),
        command => {
            let store = open(target, None, upgrade, Heard::unreadable())?;
            match command {
                Command::List(args) => tasks::list(args, &*store),
                Command::Show(args) => tasks::show(args, &*store),
                Command::Cancel(args) => tasks::cancel(args, &*store),
                _ => unreachable!("handled above"),
            }
        }
    }
}

/// The store named on the command line or in the environment; a usage
/// error (exit 2) if there is none, or two.
fn target(cli: &Cli) -> Result<Target, Failure> {
    #[cfg(feature = "postgres")]
    match (&cli.store, &cli.pg) {
        // `--store` over TASKSTORE_PG: the file store, below.
        (Some(_), Some(_)) if !cli.from_env.store && cli.from_env.pg => {}
        (Some(_), Some(conninfo)) if cli.from_env.store && !cli.from_env.pg => {
            return Ok(Target::Pg {
                conninfo: conninfo.clone(),
                schema: cli.pg_schema.clone(),
            });
        }
        (Some(_), Some(_)) => usage(
            "give --store DIR or --pg CONNINFO, not both \
             (TASKSTORE_STORE and TASKSTORE_PG name them too)",
        ),
        (None, Some(conninfo)) => {
            return Ok(Target::Pg {
                conninfo: conninfo.clone(),
                schema: cli.pg_schema.clone(),
            });
        }
        _ => {}
    }
    #[cfg(feature = "postgres")]
    if cli.pg_schema.is_some() && !cli.from_env.schema && cli.store.is_some() {
        usage(
            "--pg-schema names a PostgreSQL schema, and the store is a directory: \
             give --pg CONNINFO with it, or drop it",
        );
    }
    match &cli.store {
        Some(dir) => Ok(Target::File(dir.clone())),
        #[cfg(feature = "postgres")]
        None => usage("no store: give --store DIR (or TASKSTORE_STORE), or --pg CONNINFO"),
        #[cfg(not(feature = "postgres"))]
        None => usage("no store: give --store DIR (or TASKSTORE_STORE)"),
    }
}

/// The parser of a connection string (`--pg`, `copy --to-pg`): an empty
/// one is a usage error naming the flag, as an empty `--store` is (the
/// driver would take it for a string of defaults, and fail to connect).
#[cfg(feature = "postgres")]
fn conninfo() -> clap::builder::NonEmptyStringValueParser {
    clap::builder::NonEmptyStringValueParser::new()
}

/// Exits with clap's usage error (status 2) for flags of `subcommand`
/// that conflict in a way only the command can tell, with that
/// subcommand's usage line.
fn conflict_in(subcommand: &str, message: &str) -> ! {
    let mut cli = Cli::command();
    cli.build();
    match cli.find_subcommand_mut(subcommand) {
        Some(sub) => sub
            .error(clap::error::ErrorKind::ArgumentConflict, message)
            .exit(),
        None => usage(message),
    }
}

/// Exits with clap's usage error (status 2).
fn usage(message: &str) -> ! {
    Cli::command()
        .error(clap::error::ErrorKind::MissingRequiredArgument, message)
        .exit()
}

/// Exits with clap's usage error (status 2) for a value that only the store
/// could judge (a list cursor, say).
fn invalid_value(message: &str) -> ! {
    Cli::command()
        .error(clap::error::ErrorKind::InvalidValue, message)
        .exit()
}

/// The directory of a file store, for commands that only a file store has.
fn file_only<'a>(target: &'a Target, command: &str) -> Result<&'a Path, Failure> {
    let _ = command; // named only in the PostgreSQL case
    match target {
        Target::File(dir) => Ok(dir),
        #[cfg(feature = "postgres")]
        Target::Pg { .. } => usage(&format!(
            "{command} checks a file store's files; a PostgreSQL store has none \
             (the database checks its own): use --store DIR"
        )),
    }
}

/// What a dry run judges, read without changing anything: every stored
/// task, and the entries that could not be read. A file store is read with
/// a census ([`FileCheck::census`]), which changes nothing (it holds the
/// handles lock shared, as a handle does, and so makes its file if it is
/// missing: an open meanwhile must know it is not alone): opening a handle
/// would finish
/// crashed writers' work, and a listing set unreadable files aside. Over
/// PostgreSQL a handle reads with `Store::stored`, which changes nothing.
///
/// [`FileCheck::census`]: taskstore::FileCheck::census
fn preview(target: &Target, claim_grace: Option<Duration>) -> Result<maintain::Preview, Failure> {
    let grace = claim_grace.unwrap_or(taskstore::DEFAULT_LEASE);
    match target {
        Target::File(dir) => {
            let census = census(dir, Older::DryRun, &mut |_, _| {})?;
            let unreadable = unread(&census);
            let now = OffsetDateTime::now_utc();
            let leftovers = maintain::Leftovers {
                stale_entries: census
                    .stale_entries
                    .iter()
                    .filter(|entry| entry.is_due_at(now))
                    .count(),
                interrupted_moves: census.interrupted_moves.len(),
                temp_files: census.usage.temp_files,
            };
            let mut preview = judge(census.tasks, now, grace, unreadable);
            preview.leftovers = Some(leftovers);
            Ok(preview)
        }
        #[cfg(feature = "postgres")]
        Target::Pg { .. } => {
            let mut opening = opening::Opening::new(Heard::nothing());
            opening.claim_grace = claim_grace;
            opening.older = Older::DryRun;
            let store = opening.open(target)?.boxed();
            let page = store.stored_list()?;
            let unreadable = page
                .skipped
                .into_iter()
                .map(|s| maintain::Unread {
                    place: s.location,
                    foreign: false,
                    fate: maintain::Fate::LeftInPlace,
                })
                .collect();
            let mut preview = judge(page.tasks, store.time(), grace, unreadable);
            preview.verify_says_why = false;
            Ok(preview)
        }
    }
}

/// The entries of a census that did not read, and what a real sweep or
/// reap does with each: it reads every entry of `active/` (setting aside
/// a foreign name, and a task file damaged for good), and of `done/` only
/// the files whose `expiring/` entry says they expired (a sweep). Nothing
/// it reads for now, or by a newer version, is set aside.
fn unread(census: &taskstore::Census) -> Vec<maintain::Unread> {
    use maintain::{Fate, Unread};
    let in_active =
        |path: &Path| path.parent().and_then(Path::file_name) == Some("active".as_ref());
    let place = |path: &PathBuf| path.display().to_string();
    let files = census.unreadable.iter().map(|path| {
        let fate = match (census.corrupt.contains(path), in_active(path)) {
            (false, _) => Fate::LeftInPlace,
            (true, true) => Fate::SetAside,
            (true, false) => Fate::SetAsideIfExpired,
        };
        Unread {
            place: place(path),
            foreign: false,
            fate,
        }
    });
    let foreign = census.foreign.iter().map(|path| Unread {
        place: place(path),
        foreign: true,
        fate: if in_active(path) {
            Fate::SetAside
        } else {
            Fate::LeftForRepair
        },
    });
    files.chain(foreign).collect()
}

/// What a sweep and a reap by a claim grace of `grace` would do at `now`
/// with `tasks`, by the store's rules ([`Task::is_expired_at`],
/// [`Orphan::judge`]): one pass, each task judged once (an expired task is
/// no orphan).
fn judge(
    tasks: Vec<Task>,
    now: OffsetDateTime,
    grace: Duration,
    unreadable: Vec<maintain::Unread>,
) -> maintain::Preview {
    let (mut expired, mut orphans) = (Vec::new(), Vec::new());
    for task in tasks {
        if task.is_expired_at(now) {
            expired.push(task);
        } else if let Some(orphan) = Orphan::judge(task, now, grace) {
            orphans.push(orphan);
        }
    }
    maintain::Preview {
        now,
        expired,
        orphans,
        unreadable,
        verify_says_why: true,
        leftovers: None,
    }
}
