//! The `task_id` target: its checks are in `task_id_check.rs`, which says what they
//! are (`tests/fuzz_seeds.rs` runs the checked-in seeds through them with
//! the rest of the test suite).

#![no_main]

mod task_id_check;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| task_id_check::check_input(data));
