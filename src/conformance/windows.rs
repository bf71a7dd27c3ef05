//! Races held open: one call held between its read of a task and its
//! write, while another call runs in that window, every time (threads left
//! to race meet in it only now and then: `races.rs`).
//!
//! A store of the suite calls [`Windows::reached`] before each decision of
//! a write to one task ([`Setup::configure`] installs it), between the
//! backend's read of the task and its write, whatever the backend: a
//! backend's [`modify`](crate::backend::Backend::modify), its own or the
//! default, calls the decision there; and before a pass's batch of
//! conditional writes ([`replace_all`](crate::backend::Backend::replace_all):
//! a claim's, a renewal's, a reap's), with each task the batch was decided
//! on, between the pass's scan and its writes. A check arms the window for one
//! handle and one task; that handle's next decision on it waits there
//! until the other call has returned. A backend that holds a lock of its
//! own across the decision (as `MemoryBackend` and the file store do)
//! holds the other call up instead: the window then waits for it no longer
//! than [`LONGEST_HOLD`], and the other call runs after. Either way each
//! check holds: a backend that keeps its contract decides again on what
//! the other call wrote, or makes it wait; one that decides outside its
//! lock writes over it, and fails.

use std::sync::{Condvar, Mutex, PoisonError};

use super::*;

/// How long a call is held in its window at most while the other call
/// has not returned (held up, by a lock the held call holds). A backend
/// that holds no lock across its decisions never lets it run out: the
/// other call returns first.
const LONGEST_HOLD: Duration = Duration::from_secs(1);

/// The window a check holds open, shared by the handles of one storage.
#[derive(Debug, Default)]
pub(crate) struct Windows {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// The handle (its instance id) and the task whose next decision is
    /// held.
    armed: Option<(String, TaskId)>,
    /// Whether that decision is held now.
    held: bool,
    /// Whether the held call may go on.
    open: bool,
    /// Whether the held call, and the other, returned.
    first_done: bool,
    second_done: bool,
}

impl Windows {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The hook of the handle `instance_id`: called before each of its
    /// decisions, with the task read.
    pub(crate) fn hook(self: &Arc<Self>, instance_id: &str) -> Arc<dyn Fn(&Task) + Send + Sync> {
        let (windows, instance_id) = (Arc::clone(self), instance_id.to_owned());
        Arc::new(move |task: &Task| windows.reached(&instance_id, task))
    }

    /// Holds the decision if it is the one armed, until the check lets it
    /// go on.
    fn reached(&self, instance_id: &str, task: &Task) {
        let mut state = self.state();
        let armed = state
            .armed
            .as_ref()
            .is_some_and(|(instance, id)| instance == instance_id && *id == task.id);
        if !armed {
            return;
        }
        state.armed = None;
        state.held = true;
        self.changed.notify_all();
        while !state.open {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn wait_until(&self, mut until: impl FnMut(&State) -> bool, at_most: Option<Duration>) {
        let deadline = at_most.map(|d| std::time::Instant::now() + d);
        let mut state = self.state();
        while !until(&state) {
            state = match deadline {
                None => self
                    .changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return;
                    }
                    self.changed
                        .wait_timeout(state, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }

    fn mark(&self, change: impl FnOnce(&mut State)) {
        change(&mut self.state());
        self.changed.notify_all();
    }
}

/// Lets a held call go on when dropped, a check's panic included.
struct Opened<'a>(&'a Windows);

impl Drop for Opened<'_> {
    fn drop(&mut self) {
        self.0.mark(|state| {
            state.armed = None;
            state.open = true;
        });
    }
}

/// `first` through the handle `holder`, held in its window on task `id`
/// (its first decision on it) while `second` runs: what each returned.
/// `second` starts once `first` is held (or has returned without a
/// decision on `id`), and `first` goes on once `second` has returned, or
/// after [`LONGEST_HOLD`] if `second` is held up.
pub(super) fn inside_the_window<A: Send, B: Send>(
    setup: &Setup,
    holder: &dyn TaskStore,
    id: &TaskId,
    first: impl FnOnce() -> A + Send,
    second: impl FnOnce() -> B + Send,
) -> (A, B) {
    let windows = &*setup.windows;
    *windows.state() = State {
        armed: Some((holder.instance_id().to_owned(), id.clone())),
        ..State::default()
    };
    std::thread::scope(|s| {
        let opened = Opened(windows);
        let first = s.spawn(move || {
            let got = first();
            windows.mark(|state| state.first_done = true);
            got
        });
        windows.wait_until(|state| state.held || state.first_done, None);
        let second = s.spawn(move || {
            let got = second();
            windows.mark(|state| state.second_done = true);
            got
        });
        windows.wait_until(|state| state.second_done, Some(LONGEST_HOLD));
        drop(opened);
        (first.join().unwrap(), second.join().unwrap())
    })
}

/// An update held in its window while another handle's update of the same
/// task lands: both are applied, one after the other (the revision up by
/// two, both changes kept); neither is lost.
pub(super) fn an_update_inside_anothers_window_is_not_lost(
    a: &dyn TaskStore,
    b: &dyn TaskStore,
    setup: &Setup,
) {
    let task = a.create(NewTask::new()).unwrap();
    let (held, inside) = inside_the_window(
        setup,
        a,
        &task.id,
        || a.update(&task.id, TaskUpdate::new().metadata("held", 1)),
        || b.update(&task.id, TaskUpdate::new().metadata("inside", 1)),
    );
    let (held, inside) = (applied(held.unwrap()), applied(inside.unwrap()));
    let now = b.get(&task.id).unwrap().expect("the task is there");
    assert_eq!(
        now.revision,
        task.revision + 2,
        "two updates, each applied: {now:?}"
    );
    assert_eq!(
        (now.metadata.get("held"), now.metadata.get("inside")),
        (Some(&json!(1)), Some(&json!(1))),
        "an update lost: {now:?}"
    );
    let last = if held.revision > inside.revision {
        held
    } else {
        inside
    };
    assert_eq!(now, last, "the task reads back as the last update left it");
}

/// A completion held in its window while another handle cancels the same
/// task: exactly one is applied, the other finds it finished by the first
/// (first writer wins), and it reads back as the one applied.
pub(super) fn a_completion_inside_a_cancels_window_finds_it_finished(
    a: &dyn TaskStore,
    b: &dyn TaskStore,
    setup: &Setup,
) {
    let task = a.create(NewTask::new()).unwrap();
    let (held, inside) = inside_the_window(
        setup,
        a,
        &task.id,
        || a.complete(&task.id, json!("held")),
        || b.cancel(&task.id, None),
    );
    let now = b.get(&task.id).unwrap().expect("the task is there");
    match (held.unwrap(), inside.unwrap()) {
        (Transition::Applied(won), Transition::AlreadyTerminal(found))
        | (Transition::AlreadyTerminal(found), Transition::Applied(won)) => {
            assert_eq!(found, won, "the loser finds the winner's task");
            assert_eq!(now, won, "the task reads back as the winner left it");
        }
        (held, inside) => panic!(
            "a completion {held:?} and a cancel {inside:?} of one task (now {now:?}): \
             exactly one is applied"
        ),
    }
}

/// The owner's renewal of a lapsed lease held in its window while another
/// handle claims the task: it goes to one of them, renewed (and not
/// claimed) or claimed (and the renewal refused), and reads back so.
pub(super) fn a_claim_inside_the_owners_renewal_window_takes_it_or_leaves_it(
    a: &dyn TaskStore,
    b: &dyn TaskStore,
    setup: &Setup,
) {
    a_renewal_and_a_claim(a, b, setup, Held::Renewal);
}

/// A claim pass held between its scan and its batch of writes while the
/// owner renews the lease the pass found lapsed: the task goes to one of
/// them, as in [`a_claim_inside_the_owners_renewal_window_takes_it_or_leaves_it`].
/// (A backend whose batches write over what changed since the scan gives
/// it to both.)
pub(super) fn a_renewal_inside_a_claim_passs_window_takes_it_or_leaves_it(
    a: &dyn TaskStore,
    b: &dyn TaskStore,
    setup: &Setup,
) {
    a_renewal_and_a_claim(a, b, setup, Held::Claim);
}

/// Which of a renewal and a claim pass is held in its window.
enum Held {
    Renewal,
    Claim,
}

/// The owner's renewal of a lapsed lease (through `a`) and a claim pass
/// (through `b`), one held in its window while the other runs.
fn a_renewal_and_a_claim(a: &dyn TaskStore, b: &dyn TaskStore, setup: &Setup, held: Held) {
    let task = orphan(a, setup, setup.lease);
    let renew = || a.renew_lease(&task.id);
    let claim = || b.claim(&["held"]).unwrap();
    let (renewal, claimed) = match held {
        Held::Renewal => inside_the_window(setup, a, &task.id, renew, claim),
        Held::Claim => {
            let (claimed, renewal) = inside_the_window(setup, b, &task.id, claim, renew);
            (renewal, claimed)
        }
    };
    let renewed = match renewal {
        Ok(Transition::Applied(renewed)) => Some(renewed),
        Err(Error::NotOwner { .. }) | Ok(Transition::Fenced(_)) => None,
        other => panic!("a renewal of a lapsed lease: {other:?}"),
    };
    renewed_or_claimed(a, b, &task.id, renewed.as_ref(), &claimed);
}

/// A resumable task `a` made, whose lease has lapsed by `by` (its claim
/// grace too, for twice the lease).
fn orphan(a: &dyn TaskStore, setup: &Setup, by: Duration) -> Task {
    let task = a
        .create(NewTask::new().resumable("held", json!(1)).max_attempts(5))
        .unwrap();
    setup.clock.advance(by);
    task
}

/// The owner's renewal pass held between its scan and its batch of writes
/// while another handle claims a task whose lease it found lapsed: the
/// task goes to one of them.
pub(super) fn a_claim_inside_a_renewal_passs_window_takes_it_or_leaves_it(
    a: &dyn TaskStore,
    b: &dyn TaskStore,
    setup: &Setup,
) {
    let task = orphan(a, setup, setup.lease);
    let (renewals, claimed) = inside_the_window(
        setup,
        a,
        &task.id,
        || a.renew().unwrap(),
        || b.claim(&["held"]).unwrap(),
    );
    assert!(renewals.missed.is_empty(), "missed: {:?}", renewals.missed);
    let renewed = renewals.tasks.iter().find(|t| t.id == task.id);
    renewed_or_claimed(a, b, &task.id, renewed, &claimed);
}

/// Task `id` of `a`'s went to exactly one of `a`'s renewal (`renewed`) and
/// `b`'s claim pass (`claimed`), and reads back as that one left it.
fn renewed_or_claimed(
    a: &dyn TaskStore,
    b: &dyn TaskStore,
    id: &TaskId,
    renewed: Option<&Task>,
    claimed: &crate::Claimed,
) {
    assert!(claimed.missed.is_empty(), "missed: {:?}", claimed.missed);
    let now = b.get(id).unwrap().expect("the task is there");
    match (renewed, claimed.tasks.as_slice()) {
        (Some(renewed), []) => {
            assert_eq!(&now, renewed, "a renewed task reads back as renewed");
            assert_eq!(
                (now.owner.as_deref(), now.epoch),
                (Some(a.instance_id()), 1)
            );
        }
        (None, [taken]) => {
            assert_eq!(&now, taken, "a claimed task reads back as claimed");
            assert_eq!(
                (now.owner.as_deref(), now.epoch),
                (Some(b.instance_id()), 2)
            );
        }
        (renewed, taken) => panic!(
            "renewed {renewed:?} and claimed {taken:?} (now {now:?}): it must go to exactly one"
        ),
    }
}

/// A reap of an orphan held in its window while another handle claims it:
/// it is failed by the reap (and not claimed) or claimed (and the reap
/// finds nothing to reap), and reads back so.
pub(super) fn a_claim_inside_a_reaps_window_takes_it_or_leaves_it(
    a: &dyn TaskStore,
    b: &dyn TaskStore,
    setup: &Setup,
) {
    // Past the lease and the claim grace: reapable, and claimable until
    // reaped.
    let task = orphan(a, setup, setup.lease * 2);
    let (reaped, claimed) = inside_the_window(
        setup,
        a,
        &task.id,
        || a.reap_task(&task.id).unwrap(),
        || b.claim(&["held"]).unwrap(),
    );
    reaped_or_claimed(b, &task.id, reaped.as_ref(), &claimed);
}

/// A reap pass held between its scan and its batch of writes while another
/// handle claims an orphan it found: it is failed by the pass or claimed,
/// as in [`a_claim_inside_a_reaps_window_takes_it_or_leaves_it`].
pub(super) fn a_claim_inside_a_reap_passs_window_takes_it_or_leaves_it(
    a: &dyn TaskStore,
    b: &dyn TaskStore,
    setup: &Setup,
) {
    let task = orphan(a, setup, setup.lease * 2);
    let (reaps, claimed) = inside_the_window(
        setup,
        a,
        &task.id,
        || a.reap().unwrap(),
        || b.claim(&["held"]).unwrap(),
    );
    assert!(reaps.missed.is_empty(), "missed: {:?}", reaps.missed);
    let reaped = reaps.tasks.iter().find(|t| t.id == task.id);
    reaped_or_claimed(b, &task.id, reaped, &claimed);
}

/// Orphan `id` was failed by a reap (`reaped`) or taken by `b`'s claim
/// pass (`claimed`), exactly one, and reads back as that one left it.
fn reaped_or_claimed(
    b: &dyn TaskStore,
    id: &TaskId,
    reaped: Option<&Task>,
    claimed: &crate::Claimed,
) {
    assert!(claimed.missed.is_empty(), "missed: {:?}", claimed.missed);
    let now = b.get(id).unwrap().expect("the task is there");
    match (reaped, claimed.tasks.as_slice()) {
        (Some(failed), []) => {
            assert_eq!(&now, failed, "a reaped task reads back as reaped");
            assert_eq!(now.status, TaskStatus::Failed);
        }
        (None, [taken]) => {
            assert_eq!(&now, taken, "a claimed task reads back as claimed");
            assert_eq!(
                (now.status, now.owner.as_deref(), now.epoch),
                (TaskStatus::Working, Some(b.instance_id()), 2)
            );
        }
        (failed, taken) => {
            panic!("reaped {failed:?} and claimed {taken:?} (now {now:?}): it must go one way")
        }
    }
}
