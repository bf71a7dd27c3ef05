//! The `task_file` target: its checks are in `task_file_check.rs`, which says what they
//! are (`tests/fuzz_seeds.rs` runs the checked-in seeds through them with
//! the rest of the test suite).

#![no_main]

mod common;
mod task_file_check;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| task_file_check::check_input(data));
