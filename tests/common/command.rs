//! The `taskstore` command as the tests run it: with no store named in its
//! environment but the one a test names.

use std::ffi::OsStr;
use std::process::{Command, Stdio};

/// The variables that name a store to the command (`--store`, `--pg`,
/// `--pg-schema`): a test's own environment must not reach it.
pub const STORE_VARIABLES: [&str; 3] = ["TASKSTORE_STORE", "TASKSTORE_PG", "TASKSTORE_PG_SCHEMA"];

/// `program` — the command (`env!("CARGO_BIN_EXE_taskstore")`, which only
/// a test built with the `cli` feature has), or a program that runs it
/// (`prlimit`, `runuser`, `script`) — with none of [`STORE_VARIABLES`] in
/// its environment and stdin from `/dev/null`, for the test to add the
/// store it means.
pub fn without_store_variables(program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new(program);
    for variable in STORE_VARIABLES {
        command.env_remove(variable);
    }
    command.stdin(Stdio::null());
    command
}
