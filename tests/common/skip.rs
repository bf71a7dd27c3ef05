//! The rule every test that cannot run on some machines follows (one that
//! needs root, one that needs PostgreSQL): it says on stderr what it
//! skipped and passes, unless its variable is set to `1`, which makes the
//! skip a failure. CI sets each variable, so a machine that cannot run a
//! test is noticed there.
//!
//! Included by `#[path]` from `tests/common/mod.rs` and from
//! `tests/common/pg.rs`, which the benchmarks include alone.

/// Whether `var` makes a skip a failure: it is set to `1`.
pub fn is_failure(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v == "1")
}

/// Says that `line` was skipped, and what `var` does about it: straight to
/// stderr, so it shows even when the test passes and its output is
/// captured.
pub fn say(line: &str, var: &str) {
    use std::io::Write;
    let consequence = if is_failure(var) {
        format!("an error, as {var}=1")
    } else {
        format!("set {var}=1 to make this an error")
    };
    let _ = writeln!(std::io::stderr(), "{line} ({consequence})");
}
