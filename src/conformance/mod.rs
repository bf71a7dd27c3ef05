//! The shared conformance suite: every store, over every backend, runs it.
//!
//! Like `object_store`'s `integration` module, with one function per
//! property, races included. A backend's tests call [`run`] with a factory
//! of fresh, empty [`Storage`]s; the suite opens two handles on each (two
//! instances, as two processes or hosts would be) and checks every rule
//! through them, from one thread and from many, and with one call held
//! between its read of a task and its write while another runs
//! ([`Setup::configure`]). Each check panics with a message naming the
//! check and what broke.
//!
//! ```no_run
//! # #[cfg(feature = "conformance")] {
//! use std::sync::Arc;
//! use taskstore::conformance::{self, Setup};
//! use taskstore::{MemoryBackend, Store};
//!
//! conformance::run(|| {
//!     // One storage: every handle opened on it shares its tasks.
//!     let backend = MemoryBackend::new();
//!     move |setup: &Setup, instance_id: &str| {
//!         setup
//!             .configure(Store::with_backend(backend.clone()), instance_id)
//!             .build()
//!             .unwrap()
//!     }
//! });
//! # }
//! ```

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::{
    Clock, Error, Event, EventLog, ListQuery, MAX_DEPTH, ManualClock, NewTask, StoreBuilder, Task,
    TaskEventKind, TaskId, TaskStatus, TaskStore, TaskUpdate, Transition,
};

mod clocks;
mod listing;
mod owners;
mod races;
mod shared;
mod single;
mod values;
mod windows;

#[cfg(test)]
mod broken;

use self::clocks::*;
use self::listing::*;
use self::owners::*;
use self::races::*;
use self::shared::*;
use self::single::*;
use self::values::*;
use self::windows::*;

/// What a store under test must be configured with: the suite's clock,
/// caps, lease and event sink. [`Setup::configure`] applies them all.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Setup {
    /// The store's clock; the suite advances it.
    pub clock: ManualClock,
    /// The cap on active tasks.
    pub max_active: usize,
    /// The cap on one task's encoded size.
    pub max_payload_bytes: usize,
    /// The lease duration.
    pub lease: Duration,
    /// Where every handle sends its events; the suite counts them.
    pub events: Arc<EventLog<Event>>,
    /// Where a check holds a call between its read of a task and its
    /// write ([`windows`]).
    windows: Arc<Windows>,
}

impl Setup {
    fn new() -> Setup {
        Setup {
            // A fixed start, so failures reproduce.
            clock: ManualClock::new(
                OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("a valid timestamp"),
            ),
            max_active: 1_000,
            max_payload_bytes: 64 * 1024,
            lease: Duration::from_secs(30),
            events: Arc::new(EventLog::with_capacity(100_000)),
            windows: Arc::default(),
        }
    }

    /// `builder` with every setting the suite needs, for the handle of
    /// `instance_id`: among them the hook every decision of a write to one
    /// task calls first, between the backend's read and its write, where
    /// the suite holds one call while another runs (whatever the backend:
    /// see [`Backend::modify`](crate::backend::Backend::modify)).
    pub fn configure<O>(&self, builder: StoreBuilder<O>, instance_id: &str) -> StoreBuilder<O> {
        builder
            .before_deciding(self.windows.hook(instance_id))
            .clock(Arc::new(self.clock.clone()))
            .max_active(self.max_active)
            .max_payload_bytes(self.max_payload_bytes)
            .lease(self.lease)
            .instance_id(instance_id)
            .sink(self.events.clone())
    }
}

/// One fresh, empty storage (a directory, a database schema, a shared
/// in-memory map): every handle it opens shares the same tasks.
pub trait Storage {
    /// The store a handle is.
    type Store: TaskStore;

    /// Opens a handle with the suite's settings ([`Setup::configure`]) and
    /// this instance id.
    fn open(&self, setup: &Setup, instance_id: &str) -> Self::Store;
}

impl<S: TaskStore, F: Fn(&Setup, &str) -> S> Storage for F {
    type Store = S;

    fn open(&self, setup: &Setup, instance_id: &str) -> S {
        self(setup, instance_id)
    }
}

/// The instance ids of the two handles every check gets.
pub const INSTANCES: [&str; 2] = ["instance-a", "instance-b"];

/// Opens one more handle on the storage of a check, with an instance id.
type Reopen<'a> = &'a dyn Fn(&str) -> Box<dyn TaskStore>;

/// Opens one more handle on the storage of a check, with a payload cap of
/// its own and an instance id.
type OpenWithCap<'a> = &'a dyn Fn(usize, &str) -> Box<dyn TaskStore>;

/// One check of the suite: on one handle, on two handles on one storage, on
/// two with a way to open more, or on one with a way to open more with
/// another payload cap.
#[derive(Clone, Copy)]
enum Check {
    One(fn(&dyn TaskStore, &Setup)),
    Two(fn(&dyn TaskStore, &dyn TaskStore, &Setup)),
    More(fn(&dyn TaskStore, &dyn TaskStore, Reopen<'_>, &Setup)),
    Caps(fn(&dyn TaskStore, OpenWithCap<'_>, &Setup)),
}

/// Runs every check, each against two handles on a fresh storage from
/// `new_storage`.
pub fn run<St: Storage>(new_storage: impl Fn() -> St)
where
    St::Store: 'static,
{
    use Check::{Caps, More, One, Two};
    let checks: &[(&str, Check)] = &[
        ("create_and_get", One(create_and_get)),
        ("host_chosen_ids", One(host_chosen_ids)),
        (
            "update_merges_and_bumps_revision",
            One(update_merges_and_bumps_revision),
        ),
        (
            "terminal_status_in_update_is_an_error",
            One(terminal_status_in_update_is_an_error),
        ),
        ("first_writer_wins", One(first_writer_wins)),
        // The races held open come before the races left to the threads:
        // a backend that breaks the contract of `modify` fails the first
        // of them, every run.
        (
            "an_update_inside_anothers_window_is_not_lost",
            Two(an_update_inside_anothers_window_is_not_lost),
        ),
        (
            "a_completion_inside_a_cancels_window_finds_it_finished",
            Two(a_completion_inside_a_cancels_window_finds_it_finished),
        ),
        (
            "a_claim_inside_the_owners_renewal_window_takes_it_or_leaves_it",
            Two(a_claim_inside_the_owners_renewal_window_takes_it_or_leaves_it),
        ),
        (
            "a_claim_inside_a_reaps_window_takes_it_or_leaves_it",
            Two(a_claim_inside_a_reaps_window_takes_it_or_leaves_it),
        ),
        (
            "a_renewal_inside_a_claim_passs_window_takes_it_or_leaves_it",
            Two(a_renewal_inside_a_claim_passs_window_takes_it_or_leaves_it),
        ),
        (
            "a_claim_inside_a_renewal_passs_window_takes_it_or_leaves_it",
            Two(a_claim_inside_a_renewal_passs_window_takes_it_or_leaves_it),
        ),
        (
            "a_claim_inside_a_reap_passs_window_takes_it_or_leaves_it",
            Two(a_claim_inside_a_reap_passs_window_takes_it_or_leaves_it),
        ),
        (
            "missing_tasks_are_not_found",
            One(missing_tasks_are_not_found),
        ),
        (
            "getting_many_is_getting_each",
            One(getting_many_is_getting_each),
        ),
        ("ttl_counts_from_creation", One(ttl_counts_from_creation)),
        (
            "a_ttl_under_a_millisecond_is_refused",
            One(a_ttl_under_a_millisecond_is_refused),
        ),
        (
            "mcp_metadata_is_the_managers",
            Two(mcp_metadata_is_the_managers),
        ),
        (
            "a_checkpoint_of_a_task_that_is_not_resumable_is_refused",
            Two(a_checkpoint_of_a_task_that_is_not_resumable_is_refused),
        ),
        (
            "sweep_deletes_expired_tasks",
            One(sweep_deletes_expired_tasks),
        ),
        (
            "list_orders_filters_and_pages",
            One(list_orders_filters_and_pages),
        ),
        (
            "a_page_leaves_out_the_expired_tasks_it_meets",
            One(a_page_leaves_out_the_expired_tasks_it_meets),
        ),
        (
            "paging_is_stable_while_creating",
            One(paging_is_stable_while_creating),
        ),
        (
            "invalid_cursor_is_an_error",
            One(invalid_cursor_is_an_error),
        ),
        ("a_zero_limit_is_an_error", One(a_zero_limit_is_an_error)),
        ("delete_removes_the_task", One(delete_removes_the_task)),
        (
            "payload_cap_changes_nothing",
            One(payload_cap_changes_nothing),
        ),
        (
            "a_write_that_does_not_grow_a_task_at_the_cap_is_taken_at_any_instant",
            One(a_write_that_does_not_grow_a_task_at_the_cap_is_taken_at_any_instant),
        ),
        (
            "a_task_at_the_cap_can_always_be_failed_with_a_small_error",
            One(a_task_at_the_cap_can_always_be_failed_with_a_small_error),
        ),
        (
            "active_cap_changes_nothing",
            One(active_cap_changes_nothing),
        ),
        (
            "an_expired_id_is_free_again_at_the_cap",
            One(an_expired_id_is_free_again_at_the_cap),
        ),
        (
            "a_cancel_without_a_message_keeps_the_status_message",
            One(a_cancel_without_a_message_keeps_the_status_message),
        ),
        ("leases_and_orphans", One(leases_and_orphans)),
        (
            "every_accepted_value_reads_back",
            Two(every_accepted_value_reads_back),
        ),
        (
            "too_deep_values_are_refused",
            One(too_deep_values_are_refused),
        ),
        (
            "two_handles_share_one_store",
            Two(two_handles_share_one_store),
        ),
        (
            "try_get_answers_as_get_does",
            Two(try_get_answers_as_get_does),
        ),
        ("list_filters_by_owner", Two(list_filters_by_owner)),
        (
            "a_conditional_update_applies_only_at_its_revision",
            Two(a_conditional_update_applies_only_at_its_revision),
        ),
        (
            "a_conditional_update_reports_expired_terminal_and_fenced_before_changed",
            Two(a_conditional_update_reports_expired_terminal_and_fenced_before_changed),
        ),
        (
            "threads_race_terminal_transitions",
            One(threads_race_terminal_transitions),
        ),
        ("threads_race_updates", One(threads_race_updates)),
        (
            "handles_race_terminal_transitions",
            Two(handles_race_terminal_transitions),
        ),
        ("handles_race_updates", Two(handles_race_updates)),
        (
            "another_instance_renews_nothing_and_reaps",
            Two(another_instance_renews_nothing_and_reaps),
        ),
        (
            "a_near_cap_orphan_is_reaped",
            One(a_near_cap_orphan_is_reaped),
        ),
        (
            "a_reap_and_a_claim_tell_the_expired_tasks_they_delete",
            One(a_reap_and_a_claim_tell_the_expired_tasks_they_delete),
        ),
        (
            "every_orphan_is_reaped_in_one_pass",
            One(every_orphan_is_reaped_in_one_pass),
        ),
        (
            "reap_task_reaps_the_orphan_it_names",
            Two(reap_task_reaps_the_orphan_it_names),
        ),
        (
            "events_once_per_applied_transition",
            Two(events_once_per_applied_transition),
        ),
        (
            "a_claim_moves_the_owner_and_fences_the_old_one",
            Two(a_claim_moves_the_owner_and_fences_the_old_one),
        ),
        (
            "a_reopened_instance_is_not_the_owner",
            More(a_reopened_instance_is_not_the_owner),
        ),
        (
            "an_update_may_leave_the_lease_as_it_is",
            One(an_update_may_leave_the_lease_as_it_is),
        ),
        (
            "renewing_several_leases_is_renewing_each",
            Two(renewing_several_leases_is_renewing_each),
        ),
        (
            "a_task_seen_expired_stays_gone_for_every_handle",
            More(a_task_seen_expired_stays_gone_for_every_handle),
        ),
        (
            "a_clock_set_right_after_a_step_forward_reaps_and_claims_no_live_lease",
            More(a_clock_set_right_after_a_step_forward_reaps_and_claims_no_live_lease),
        ),
        (
            "a_clock_set_back_then_right_again_reaps_and_claims_no_live_lease",
            More(a_clock_set_back_then_right_again_reaps_and_claims_no_live_lease),
        ),
        (
            "a_clock_stepped_back_between_two_renewals_reaps_and_claims_no_live_lease",
            More(a_clock_stepped_back_between_two_renewals_reaps_and_claims_no_live_lease),
        ),
        (
            "a_clock_set_right_only_after_it_caught_up_reaps_and_claims_no_live_lease",
            More(a_clock_set_right_only_after_it_caught_up_reaps_and_claims_no_live_lease),
        ),
        (
            "a_clock_stepped_back_twice_reaps_and_claims_no_live_lease",
            More(a_clock_stepped_back_twice_reaps_and_claims_no_live_lease),
        ),
        (
            "a_task_made_again_under_its_id_by_another_instance_fences_the_old_owner",
            Two(a_task_made_again_under_its_id_by_another_instance_fences_the_old_owner),
        ),
        (
            "resumable_orphans_wait_for_a_claim_then_are_reaped",
            Two(resumable_orphans_wait_for_a_claim_then_are_reaped),
        ),
        ("claims_race", Two(claims_race)),
        ("reaps_race", Two(reaps_race)),
        (
            "a_claim_races_the_owners_renewal",
            Two(a_claim_races_the_owners_renewal),
        ),
        ("a_reap_races_a_claim", Two(a_reap_races_a_claim)),
        (
            "a_walk_across_pages_beside_writers_lists_every_standing_task_once",
            Two(a_walk_across_pages_beside_writers_lists_every_standing_task_once),
        ),
        (
            "a_release_hands_the_task_over_at_once",
            Two(a_release_hands_the_task_over_at_once),
        ),
        (
            "a_task_a_claim_took_past_the_cap_still_takes_its_owners_writes",
            More(a_task_a_claim_took_past_the_cap_still_takes_its_owners_writes),
        ),
        (
            "a_handle_with_a_smaller_cap_takes_over_a_larger_ones_tasks",
            Caps(a_handle_with_a_smaller_cap_takes_over_a_larger_ones_tasks),
        ),
    ];
    for (name, check) in checks {
        let setup = Setup::new();
        let storage = new_storage();
        let a = storage.open(&setup, INSTANCES[0]);
        let b = storage.open(&setup, INSTANCES[1]);
        let reopen = |instance_id: &str| -> Box<dyn TaskStore> {
            Box::new(storage.open(&setup, instance_id))
        };
        let with_cap = |cap: usize, instance_id: &str| -> Box<dyn TaskStore> {
            let setup = Setup {
                max_payload_bytes: cap,
                ..setup.clone()
            };
            Box::new(storage.open(&setup, instance_id))
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match check {
            One(check) => check(&a, &setup),
            Two(check) => check(&a, &b, &setup),
            More(check) => check(&a, &b, &reopen, &setup),
            Caps(check) => check(&a, &with_cap, &setup),
        }));
        if let Err(panic) = outcome {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("a panic without a message");
            panic!("conformance check `{name}` failed: {message}");
        }
    }
}

/// The `kind` events the handles sent for task `id`.
fn events_of(setup: &Setup, kind: TaskEventKind, id: &TaskId) -> usize {
    setup
        .events
        .snapshot()
        .iter()
        .filter(|r| r.event.kind == kind && r.event.data["taskId"] == id.as_str())
        .count()
}

fn applied(t: Transition) -> Task {
    assert!(t.is_applied(), "expected Applied, got {t:?}");
    t.into_task()
}
