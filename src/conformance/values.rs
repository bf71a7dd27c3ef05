//! Checks of the values a store takes on one handle: every accepted value
//! reads back, too deep ones are refused, and the payload cap changes
//! nothing it refuses.

use super::*;

pub(super) fn payload_cap_changes_nothing(store: &dyn TaskStore, setup: &Setup) {
    let big = "x".repeat(setup.max_payload_bytes);
    let task = store.create(NewTask::new()).unwrap();
    let too_large = |r: crate::Result<Transition>| match r {
        Err(Error::PayloadTooLarge { id, size, limit }) => {
            assert_eq!(id, task.id);
            assert!(size > limit);
            assert_eq!(limit, setup.max_payload_bytes);
        }
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    };
    too_large(store.complete(&task.id, json!(big)));
    too_large(store.fail(&task.id, json!(big)));
    too_large(store.update(&task.id, TaskUpdate::new().metadata("k", big.clone())));
    assert_eq!(
        store.get(&task.id).unwrap(),
        Some(task.clone()),
        "nothing changed"
    );
    match store.create(NewTask::new().metadata("k", big)) {
        Err(Error::PayloadTooLarge { .. }) => {}
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    assert_eq!(
        store.list(&ListQuery::all()).unwrap().tasks.len(),
        1,
        "nothing created"
    );
    // The limit is on the task as a whole, not an approximation.
    let room = setup.max_payload_bytes - serde_json::to_vec(&task).unwrap().len() - 30;
    applied(store.complete(&task.id, json!("y".repeat(room))).unwrap());
    // To the byte: a task of exactly the cap is made, one a byte larger is
    // refused, saying its size. (Ids of one length, on a clock that stands
    // still: only the value's length differs.)
    let (room, _) = exactly_at_the_cap(store, setup, "cap");
    let id = TaskId::parse("cap-2").unwrap();
    match store.create(NewTask::new().id(id).metadata("k", "z".repeat(room + 1))) {
        Err(Error::PayloadTooLarge { size, limit, .. }) => {
            assert_eq!((size, limit), (limit + 1, setup.max_payload_bytes));
        }
        other => panic!(
            "expected PayloadTooLarge a byte past the cap, got {:?}",
            other.map(|t| t.id)
        ),
    }
}

/// A task of exactly the cap, `<prefix>-1`, its metadata `k` of `room`
/// bytes, made after a probe `<prefix>-0` with `k` empty: ids of one
/// length, on a clock that stands still, so only the value's length
/// differs. `room` and the task.
fn exactly_at_the_cap(store: &dyn TaskStore, setup: &Setup, prefix: &str) -> (usize, Task) {
    let id = |n: u8| TaskId::parse(&format!("{prefix}-{n}")).unwrap();
    let probe = store
        .create(NewTask::new().id(id(0)).metadata("k", ""))
        .unwrap();
    let room = setup.max_payload_bytes - serde_json::to_vec(&probe).unwrap().len();
    let exact = store
        .create(NewTask::new().id(id(1)).metadata("k", "z".repeat(room)))
        .unwrap();
    assert_eq!(
        serde_json::to_vec(&exact).unwrap().len(),
        setup.max_payload_bytes
    );
    (room, exact)
}

/// A task the store accepted at exactly the cap takes a write that does not
/// grow what the host gave it, whatever the instant of either: the
/// store's own stamps (`createdAt`, `lastUpdatedAt`) are written at one
/// width, so a create at a whole second (no fraction to write) and an
/// update a fraction later measure the same.
pub(super) fn a_write_that_does_not_grow_a_task_at_the_cap_is_taken_at_any_instant(
    store: &dyn TaskStore,
    setup: &Setup,
) {
    // Created at a whole second (the suite's clock starts on one and moves
    // by whole seconds elsewhere; it is set on one here).
    let now = setup.clock.now();
    setup
        .clock
        .set(now.replace_nanosecond(0).unwrap() + Duration::from_secs(1));
    let (room, exact) = exactly_at_the_cap(store, setup, "stamp");
    // A fraction of a second later, a value of the same length.
    setup.clock.advance(Duration::from_nanos(123_456_789));
    let updated = store
        .update(&exact.id, TaskUpdate::new().metadata("k", "y".repeat(room)))
        .unwrap_or_else(|e| panic!("an update that grows nothing the host gave: {e}"));
    let updated = applied(updated);
    assert_eq!(
        serde_json::to_vec(&updated).unwrap().len(),
        setup.max_payload_bytes,
        "the same size: the stamps are written at one width"
    );
    assert_eq!(store.get(&exact.id).unwrap().as_ref(), Some(&updated));
}

/// A task filled to the payload cap (its metadata, here) can always be
/// failed with a small error (`SMALL_ERROR_BYTES`), which may take it
/// `OWN_HEADROOM` past the cap as an orphan's error does: a host whose
/// outcome the store refused can always record why. A larger error, and
/// any other outcome, must fit the cap.
pub(super) fn a_task_at_the_cap_can_always_be_failed_with_a_small_error(
    store: &dyn TaskStore,
    setup: &Setup,
) {
    let task = near_cap(store, setup);
    let refused = |r: crate::Result<Transition>| match r {
        Err(Error::PayloadTooLarge { id, .. }) => assert_eq!(id, task.id),
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    };
    refused(store.complete(&task.id, json!("r".repeat(100))));
    // A JSON string is its characters and two quotes.
    refused(store.fail(&task.id, json!("e".repeat(crate::SMALL_ERROR_BYTES - 1))));
    let small = json!("e".repeat(crate::SMALL_ERROR_BYTES - 2));
    let failed = applied(store.fail(&task.id, small.clone()).unwrap());
    assert_eq!(failed.error.as_ref(), Some(&small));
    assert_eq!(failed.metadata, task.metadata, "it keeps all it had");
    let size = serde_json::to_vec(&failed).unwrap().len();
    assert!(size > setup.max_payload_bytes, "{size}: past the cap");
    assert!(
        size <= setup.max_payload_bytes + crate::OWN_HEADROOM,
        "{size}"
    );
    assert_eq!(store.get(&task.id).unwrap().as_ref(), Some(&failed));
}

/// A value nested `levels` deep (arrays and objects in turn).
pub(super) fn nested(levels: usize) -> Value {
    let mut v = json!("leaf");
    for i in 0..levels {
        v = if i % 2 == 0 {
            json!([v])
        } else {
            json!({ "k": v })
        };
    }
    v
}

/// Floats that need every digit to round-trip, from a fixed sequence.
pub(super) fn awkward_floats() -> Vec<Value> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut floats = vec![
        json!(0.1),
        json!(0.300_000_000_000_000_04),
        json!(f64::MAX),
        json!(f64::MIN_POSITIVE),
        json!(5e-324),
        json!(-1.797_693_134_862_315_7e308),
        json!(123_456_789.123_456_78),
    ];
    while floats.len() < 200 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let f = f64::from_bits(state);
        if f.is_finite() {
            floats.push(json!(f));
        }
    }
    floats
}

pub(super) fn every_accepted_value_reads_back(a: &dyn TaskStore, b: &dyn TaskStore, _: &Setup) {
    let values = [
        json!(null),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(""),
        json!("\u{0}\u{1f}\"\\\u{2028}\u{fffd}\u{10ffff} é 字 🦀"),
        json!({"": null, "\u{0}": [true, false, {}, []]}),
        Value::Array(awkward_floats()),
        nested(MAX_DEPTH),
    ];
    for value in values {
        let task = a
            .create(NewTask::new().metadata("v", value.clone()))
            .unwrap();
        let waiting = applied(
            a.update(
                &task.id,
                TaskUpdate::new()
                    .status(TaskStatus::InputRequired)
                    .input_requests(value.clone())
                    .status_message("\u{0}\n\u{7f}"),
            )
            .unwrap(),
        );
        assert_eq!(
            b.get(&task.id).unwrap(),
            Some(waiting),
            "input requests read back"
        );
        let done = applied(a.complete(&task.id, value.clone()).unwrap());
        let read = b.get(&task.id).unwrap().expect("the task reads back");
        assert_eq!(read, done, "an accepted value reads back exactly");
        assert_eq!(read.result.as_ref(), Some(&value));
        assert_eq!(read.metadata["v"], value);
        let failed = a.create(NewTask::new()).unwrap();
        let failed = applied(a.fail(&failed.id, value.clone()).unwrap());
        assert_eq!(b.get(&failed.id).unwrap(), Some(failed));
    }
}

pub(super) fn too_deep_values_are_refused(store: &dyn TaskStore, _: &Setup) {
    let deep = nested(MAX_DEPTH + 1);
    let too_deep = |r: crate::Result<Transition>, id: &TaskId| match r {
        Err(Error::TooDeep {
            id: got,
            depth,
            limit,
        }) => {
            assert_eq!(&got, id);
            assert_eq!((depth, limit), (MAX_DEPTH + 1, MAX_DEPTH));
        }
        other => panic!("expected TooDeep, got {other:?}"),
    };
    match store.create(NewTask::new().metadata("deep", deep.clone())) {
        Err(Error::TooDeep { .. }) => {}
        other => panic!("expected TooDeep, got {other:?}"),
    }
    let task = store.create(NewTask::new()).unwrap();
    too_deep(store.complete(&task.id, deep.clone()), &task.id);
    too_deep(store.fail(&task.id, deep.clone()), &task.id);
    too_deep(
        store.update(&task.id, TaskUpdate::new().input_requests(deep.clone())),
        &task.id,
    );
    too_deep(
        store.update(&task.id, TaskUpdate::new().metadata("deep", deep)),
        &task.id,
    );
    assert_eq!(store.get(&task.id).unwrap(), Some(task), "nothing changed");
    assert_eq!(store.list(&ListQuery::all()).unwrap().tasks.len(), 1);
}
