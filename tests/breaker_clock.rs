//! A breaker's timing goes by a clock that the wall clock's steps do not
//! move: the test binary runs itself again as a child under `libfaketime`,
//! which steps the child's wall clock (`SystemTime`, `clock_gettime` of
//! `CLOCK_REALTIME`) while its monotonic clock runs on.
//!
//! Without `libfaketime` (`apt-get install libfaketime`) the test says it
//! was skipped; `TASKSTORE_REQUIRE_FAKETIME=1` (set by `.ci/run`) makes
//! that a failure.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use taskstore::{BreakerConfig, BreakerRegistry, BreakerState};
use time::OffsetDateTime;

const TEST: &str =
    "an_open_breaker_lets_a_probe_through_after_its_open_duration_whatever_the_wall_clock_does";
const CHILD: &str = "TASKSTORE_TEST_FAKETIME_FILE";
/// The thread-safe build of the library.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// A breaker opened, then the wall clock stepped back an hour (NTP, by
/// hand): after its open duration by the monotonic clock, it lets a probe
/// through; and a call under way while the wall clock steps forward an
/// hour is not judged slow. (On the wall clock it stayed open for the open
/// duration plus the step, an hour of rejected calls to an upstream that
/// was back; and a fast call was judged slow, and opened the breaker.)
#[test]
fn an_open_breaker_lets_a_probe_through_after_its_open_duration_whatever_the_wall_clock_does() {
    if let Ok(file) = std::env::var(CHILD) {
        return child(Path::new(&file));
    }
    if !Path::new(LIBFAKETIME).exists() {
        assert!(
            std::env::var_os("TASKSTORE_REQUIRE_FAKETIME").is_none(),
            "{LIBFAKETIME} is required (apt-get install libfaketime)"
        );
        eprintln!("skipped: no {LIBFAKETIME} (apt-get install libfaketime)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("faketime");
    // No offset yet: the child's wall clock is the real one.
    std::fs::write(&file, "+0").unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([TEST, "--exact", "--test-threads=1", "--nocapture"])
        .env(CHILD, &file)
        .env("LD_PRELOAD", LIBFAKETIME)
        .env("FAKETIME_TIMESTAMP_FILE", &file)
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the child failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn child(file: &Path) {
    let open_for = Duration::from_millis(200);
    let registry = BreakerRegistry::new(
        BreakerConfig::default()
            .minimum_calls(1)
            .open_duration(open_for),
    )
    .unwrap();
    let breaker = registry.breaker("upstream").unwrap();
    breaker.try_acquire().expect("a permit").failure();
    assert_eq!(breaker.state(), BreakerState::Open);
    let before = OffsetDateTime::now_utc();
    std::fs::write(file, "-3600").unwrap();
    let after = OffsetDateTime::now_utc();
    assert!(
        after < before - time::Duration::minutes(30),
        "the wall clock did not step back: {before} then {after}"
    );
    std::thread::sleep(open_for * 2);
    let probe = breaker.try_acquire();
    assert!(
        probe.is_ok(),
        "still open {open_for:?} after its open duration: {:?}",
        probe.err()
    );
    // A call under way while the wall clock steps forward an hour is not
    // judged slow: it took no time.
    std::fs::write(file, "+0").unwrap();
    let slow = BreakerRegistry::new(
        BreakerConfig::default()
            .minimum_calls(1)
            .slow_call_threshold(Duration::from_secs(10)),
    )
    .unwrap()
    .breaker("timed")
    .unwrap();
    let call = slow.try_acquire().expect("a permit");
    std::fs::write(file, "+3600").unwrap();
    call.success();
    assert_eq!(
        slow.state(),
        BreakerState::Closed,
        "a fast call judged slow"
    );
}
