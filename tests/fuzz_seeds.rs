//! The fuzz targets' checked-in seeds (`fuzz/seeds/<target>`), each run
//! through its target's own checks (`fuzz/fuzz_targets/ops_model.rs`,
//! `task_file_check.rs`, `task_id_check.rs`, compiled in here as they are),
//! so that a change breaking one fails the test suite, not only the fuzz
//! step that `.ci/fuzz` runs. An `ops` seed is decoded as libFuzzer's
//! typed input decodes it (`arbitrary`'s `arbitrary_take_rest`), and must
//! decode: a seed that no longer does tests nothing.
//!
//! Each seed's name is printed before it runs, so a failure names it; run
//! it under the fuzzer with `cargo fuzz run --sanitizer none <target>
//! fuzz/seeds/<target>/<name>`.

// The targets' code, as the fuzz crate builds it: what this test does not
// call of it is the fuzzer's alone.
#[path = "../fuzz/fuzz_targets/common.rs"]
mod common;
#[path = "../fuzz/fuzz_targets/ops_input.rs"]
mod ops_input;
#[path = "../fuzz/fuzz_targets/ops_model.rs"]
mod ops_model;
#[path = "../fuzz/fuzz_targets/task_file_check.rs"]
mod task_file_check;
#[path = "../fuzz/fuzz_targets/task_id_check.rs"]
mod task_id_check;

use std::path::PathBuf;

use arbitrary::{Arbitrary, Unstructured};

/// Every seed of `target`, by name, with its bytes.
fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("a seed's entry").path();
            let bytes =
                std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            (
                path.file_name()
                    .expect("a name")
                    .to_string_lossy()
                    .into_owned(),
                bytes,
            )
        })
        .collect();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds.sort();
    seeds
}

#[test]
fn every_seed_of_the_ops_target_passes_its_model() {
    for (name, bytes) in seeds("ops") {
        eprintln!("ops seed {name}");
        assert!(
            bytes.len() >= ops_input::Input::size_hint(0).0,
            "seed {name} is shorter than any input: libFuzzer would not run it"
        );
        let input = ops_input::Input::arbitrary_take_rest(Unstructured::new(&bytes))
            .unwrap_or_else(|e| panic!("seed {name} does not decode: {e}"));
        ops_model::check_input(&input);
    }
}

#[test]
fn every_seed_of_the_task_file_target_passes_its_checks() {
    for (name, bytes) in seeds("task_file") {
        eprintln!("task_file seed {name}");
        task_file_check::check_input(&bytes);
    }
}

#[test]
fn every_seed_of_the_task_id_target_passes_its_checks() {
    for (name, bytes) in seeds("task_id") {
        eprintln!("task_id seed {name}");
        task_id_check::check_input(&bytes);
    }
}
