//! A breaker guarding a flaky upstream, driven by a manual clock so the
//! story runs instantly: it trips, rejects, probes and closes again.
//!
//! Run with `cargo run --example breaker`.

use std::sync::Arc;
use std::time::Duration;

use taskstore::{BreakerConfig, BreakerRegistry, CallError, EventLog, ManualClock};
use time::OffsetDateTime;

fn main() -> Result<(), taskstore::Error> {
    let clock = ManualClock::new(OffsetDateTime::now_utc());
    let events = Arc::new(EventLog::new());
    let registry = BreakerRegistry::new(
        BreakerConfig::default()
            .minimum_calls(4)
            .failure_rate_threshold(0.5)
            .open_duration(Duration::from_secs(10)),
    )?
    .with_clock(Arc::new(clock.clone()))
    .with_sink(events.clone());
    let upstream = registry.breaker("payments-api")?;

    let flaky = |i: u32| {
        if i.is_multiple_of(3) {
            Ok(i)
        } else {
            Err(format!("timeout on call {i}"))
        }
    };
    for i in 0..6 {
        match upstream.call(|| flaky(i)) {
            Ok(v) => println!("call {i}: ok ({v})"),
            Err(CallError::Failed { error, .. }) => println!("call {i}: failed: {error}"),
            Err(CallError::Rejected(r)) => println!("call {i}: rejected: {r}"),
        }
    }
    println!("state: {}", upstream.state());

    clock.advance(Duration::from_secs(10));
    println!("10 s later, state: {}", upstream.state());
    match upstream.call(|| Ok::<_, String>("probe answered")) {
        Ok(v) => println!("probe: {v}"),
        Err(e) => println!("probe: {e}"),
    }
    println!("state: {}", upstream.state());

    println!("\ntransitions:");
    for record in events.snapshot() {
        let e = &record.event;
        println!(
            "  #{} {:<20} {} -> {}  {}",
            record.seq,
            e.kind,
            e.layer_from.as_deref().unwrap_or("-"),
            e.layer_to.as_deref().unwrap_or("-"),
            e.data
        );
    }
    println!(
        "\nhealth report:\n{}",
        serde_json::to_string_pretty(&registry.snapshot()).unwrap()
    );
    Ok(())
}
