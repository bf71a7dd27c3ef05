//! `copy`: every live task of the store into another, exactly as it is
//! ([`Store::copy_from`]), and what became of each.
//!
//! [`Store::copy_from`]: taskstore::Store::copy_from

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::json;
use taskstore::Copied;

use crate::heard::Heard;
use crate::maintain::result_json;
use crate::opening::{Older, Opened, Opening, is_store};
use crate::text::{self, out};
use crate::{Failure, Target};

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The file store to copy into (a directory). It must be a store
    /// already, unless --create is given.
    #[arg(long, value_name = "DIR")]
    pub to_store: Option<PathBuf>,

    /// The PostgreSQL store to copy into: a libpq-style connection string
    /// or a postgresql:// URL. Its schema must hold a store already, unless
    /// --create is given.
    #[cfg(feature = "postgres")]
    #[arg(long, value_name = "CONNINFO", value_parser = crate::conninfo())]
    pub to_pg: Option<String>,

    /// The PostgreSQL schema to copy into (with --to-pg; default
    /// `taskstore`).
    #[cfg(feature = "postgres")]
    #[arg(long, value_name = "SCHEMA")]
    pub to_pg_schema: Option<String>,

    /// Makes the destination store if it does not exist (a directory, or a
    /// schema).
    #[arg(long)]
    pub create: bool,

    /// The destination's cap on running tasks (default 10000): give the
    /// service's. A running task past it is not copied, and listed.
    #[arg(long, value_name = "N")]
    pub max_active: Option<usize>,

    /// The destination's payload cap in bytes (default 16 MiB): give the
    /// service's. A task larger than it and the store's own headroom (4
    /// KiB) is not copied, and listed.
    #[arg(long, value_name = "BYTES")]
    pub max_payload_bytes: Option<usize>,

    /// One JSON object per task: {"taskId", "action": "copy", "outcome":
    /// "done", or "failed" with "error"}; a task changed in
    /// the source during the copy: {"taskId", "action": "check",
    /// "outcome": "failed", "error"}.
    #[arg(long)]
    pub json: bool,
}

impl CopyArgs {
    /// The destination named, or a usage error (none, or two).
    fn destination(&self) -> Target {
        #[cfg(feature = "postgres")]
        match (&self.to_store, &self.to_pg) {
            (Some(_), Some(_)) => {
                crate::conflict_in("copy", "give --to-store DIR or --to-pg CONNINFO, not both")
            }
            (None, Some(conninfo)) => {
                return Target::Pg {
                    conninfo: conninfo.clone(),
                    schema: self.to_pg_schema.clone(),
                };
            }
            (Some(_), None) if self.to_pg_schema.is_some() => crate::conflict_in(
                "copy",
                "--to-pg-schema names a PostgreSQL schema, and the destination is a \
                 directory: give --to-pg CONNINFO with it, or drop it",
            ),
            _ => {}
        }
        match &self.to_store {
            Some(dir) => Target::File(dir.clone()),
            #[cfg(feature = "postgres")]
            None => crate::usage("copy: no destination: give --to-store DIR or --to-pg CONNINFO"),
            #[cfg(not(feature = "postgres"))]
            None => crate::usage("copy: no destination: give --to-store DIR"),
        }
    }
}

pub fn run(args: &CopyArgs, source: &Target, upgrade: bool) -> Result<ExitCode, Failure> {
    let destination = args.destination();
    let ours = said_as(Side::Source, source);
    let theirs = said_as(Side::Destination, &destination);
    // The source must be a store, as for every command.
    match source {
        Target::File(dir) => is_store(dir).map_err(&ours)?,
        #[cfg(feature = "postgres")]
        Target::Pg { .. } => {}
    }
    match &destination {
        // A mistyped path is an error, never a new store, unless asked for.
        Target::File(dir) if !(args.create && std::fs::symlink_metadata(dir).is_err()) => {
            is_store(dir).map_err(&theirs)?
        }
        _ => {}
    }
    let mut reading = Opening::new(Heard::unreadable());
    reading.older = Older::given(upgrade);
    let from = reading.open(source).map_err(&ours)?;
    let mut writing = Opening::new(Heard::unreadable());
    writing.older = Older::given(upgrade);
    writing.create = args.create;
    writing.max_active = args.max_active;
    writing.max_payload_bytes = args
        .max_payload_bytes
        .unwrap_or(taskstore::DEFAULT_MAX_PAYLOAD_BYTES);
    writing.schema_flag = "'--to-pg-schema <SCHEMA>'";
    writing.conninfo_flag = "'--to-pg <CONNINFO>'";
    let to = writing.open(&destination).map_err(&theirs)?;
    // A copy fails as a whole only when a scan of the source does.
    let copied = copy(&from, &to).map_err(|e| ours(e.into()))?;
    Ok(report(&copied, args.json))
}

/// The two stores of a copy.
#[derive(Clone, Copy)]
enum Side {
    Source,
    Destination,
}

/// An error of one store of the copy as a whole (opening it, finding it no
/// store; reading the source), said as that store's, with the flag that
/// names it ("source (--store): …", "destination (--to-pg): …"):
/// otherwise each names a path or a server alone, and which side failed is
/// left to guess. (A task the destination refused is said as "not
/// copied", with the task.)
fn said_as(side: Side, target: &Target) -> impl Fn(Failure) -> Failure {
    let (side, flag) = match (side, target) {
        (Side::Source, Target::File(_)) => ("source", "--store"),
        (Side::Destination, Target::File(_)) => ("destination", "--to-store"),
        #[cfg(feature = "postgres")]
        (Side::Source, Target::Pg { .. }) => ("source", "--pg"),
        #[cfg(feature = "postgres")]
        (Side::Destination, Target::Pg { .. }) => ("destination", "--to-pg"),
    };
    move |e| format!("{side} ({flag}): {e}").into()
}

/// [`Store::copy_from`](taskstore::Store::copy_from) between two stores,
/// whatever their backends.
fn copy(from: &Opened, to: &Opened) -> taskstore::Result<Copied> {
    match (from, to) {
        (Opened::File(from), Opened::File(to)) => to.copy_from(from),
        #[cfg(feature = "postgres")]
        (Opened::File(from), Opened::Pg(to)) => to.copy_from(from),
        #[cfg(feature = "postgres")]
        (Opened::Pg(from), Opened::File(to)) => to.copy_from(from),
        #[cfg(feature = "postgres")]
        (Opened::Pg(from), Opened::Pg(to)) => to.copy_from(from),
    }
}

/// Prints what became of each task, and the counts; the status: failure
/// unless the copy is complete.
fn report(copied: &Copied, json: bool) -> ExitCode {
    let code = text::earned(!copied.is_complete());
    for id in &copied.copied {
        out(if json {
            result_json(id.as_str(), "copy", false, json!({}))
        } else {
            format!("copied {id}")
        });
    }
    let failed = |id: &str, action: &str, error: String| {
        out(if json {
            let more = json!({"outcome": "failed", "error": error});
            result_json(id, action, false, more)
        } else {
            format!("not copied {id}: {error}")
        });
    };
    for id in &copied.differ {
        failed(
            id.as_str(),
            "copy",
            "the destination holds a different task under this id; left as it is".to_owned(),
        );
    }
    for missed in &copied.missed {
        failed(missed.id.as_str(), "copy", missed.error.to_string());
    }
    for id in &copied.changed {
        let why = "changed in the source during the copy (its version, or made or deleted \
                   since it was read): the destination holds what was read, or nothing; stop \
                   the source's writers and copy again";
        out(if json {
            result_json(
                id.as_str(),
                "check",
                false,
                json!({"outcome": "failed", "error": why}),
            )
        } else {
            format!("changed {id}: {why}")
        });
    }
    text::err(format!(
        "copied {} task(s); {} already there (equal, skipped); {} expired (left out); \
         {} differ (left as they are); {} not copied; {} unreadable in the source; \
         {} changed in the source during the copy",
        copied.copied.len(),
        copied.already_there,
        copied.expired,
        copied.differ.len(),
        copied.missed.len(),
        copied.skipped.len(),
        copied.changed.len()
    ));
    code
}
