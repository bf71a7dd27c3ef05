//! Clocks: one stepped back never brings an expired task back, and a handle's
//! time never goes back from times past what nanoseconds hold.

use super::*;

#[test]
fn a_clock_stepped_back_never_brings_an_expired_task_back() {
    let dir = tempfile::tempdir().unwrap();
    let start = OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap();
    let clock = ManualClock::new(start);
    let open = || {
        FileStore::builder(dir.path())
            .clock(Arc::new(clock.clone()))
            .open()
            .unwrap()
    };
    let (a, b) = (open(), open());
    let task = a
        .create(NewTask::new().ttl(Duration::from_secs(10)))
        .unwrap();
    clock.advance(Duration::from_secs(10));
    assert_eq!(a.get(&task.id).unwrap(), None, "expired");
    // The clock is stepped back, before the expiry.
    clock.set(start);
    assert_eq!(
        a.get(&task.id).unwrap(),
        None,
        "this handle's time never goes back"
    );
    assert_eq!(
        b.get(&task.id).unwrap(),
        None,
        "another handle: it was deleted when seen expired"
    );
    assert_eq!(open().get(&task.id).unwrap(), None, "a new handle too");
    assert!(a.list(&ListQuery::all()).unwrap().tasks.is_empty());
}

/// A handle's time never goes back from any time a clock reads: past
/// 2262 and before 1677 too (Unix nanoseconds in an `i64`, where the
/// high-water mark was kept, hold neither, so a clock read there and then
/// stepped back moved the handle's time back with it).
#[test]
fn a_handles_time_never_goes_back_from_times_past_what_nanoseconds_hold() {
    use time::macros::datetime;
    let clock = ManualClock::new(datetime!(1500-01-01 0:00 UTC));
    let store = taskstore::MemoryStore::builder()
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    let mut seen = store.now();
    for at in [
        datetime!(1600-01-01 0:00 UTC),
        datetime!(2026-12-01 0:00 UTC),
        datetime!(3000-01-01 0:00 UTC),
        datetime!(2026-12-01 0:00 UTC),
        datetime!(9999-12-31 23:59:59.999_999_999 UTC),
        datetime!(1500-01-01 0:00 UTC),
    ] {
        clock.set(at);
        let now = store.now();
        assert!(now >= seen, "read {now} after {seen} (the clock at {at})");
        assert_eq!(now, at.max(seen), "the clock at {at}");
        seen = now;
    }
}
