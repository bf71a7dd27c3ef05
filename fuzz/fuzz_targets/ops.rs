//! The `ops` target: random operation sequences against a plain model
//! (`ops_model.rs`, which says what is checked; `tests/fuzz_seeds.rs` runs
//! the checked-in seeds through it with the rest of the test suite).

#![no_main]

mod common;
mod ops_input;
mod ops_model;

use libfuzzer_sys::fuzz_target;

// Typed input: `cargo fuzz fmt ops <file>` prints the operations.
fuzz_target!(|input: ops_input::Input| ops_model::check_input(&input));
