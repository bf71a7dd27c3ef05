//! The Wing–Gong search for a linearization of one task's history, with
//! Porcupine's cache of the states met: calls are taken in an order that
//! respects real time (a call may come next only if it was made before
//! every call not yet taken was answered), each at an instant within its
//! span no earlier than the previous one's, while the model accepts them.
//! It knows no task: the model gives each call's possible effects.

use std::collections::HashSet;

/// A call as the search sees it.
pub struct Span {
    /// When it was made and answered, by the monotonic clock.
    pub start: u64,
    pub end: u64,
    /// It may be left out of the order (and then says nothing).
    pub optional: bool,
}

/// What a search found.
pub enum Found<S> {
    /// An order the model accepts.
    Order,
    /// None within the budget of steps.
    Undecided,
    /// None: the longest order tried (the calls' indexes) and the state it
    /// leaves, to show where the history goes wrong.
    Not { order: Vec<usize>, state: S },
}

/// What the search asks of the model.
pub trait Model {
    type State: Clone;
    /// Each way call `i` may take effect from `state` when the previous
    /// one took effect at `floor`: the state after it and the instant it
    /// took effect.
    fn steps(&self, state: &Self::State, i: usize, floor: u64) -> Vec<(Self::State, u64)>;
    /// The state as a key of the cache, and whether the instant still
    /// matters in it (the task can still expire or lapse): if not, the
    /// floor is dropped.
    fn key(&self, state: &Self::State) -> (String, bool);
}

/// Searches `spans` from `init`, giving up after `budget` steps, if any.
pub fn search<M: Model>(
    model: &M,
    spans: &[Span],
    init: M::State,
    budget: Option<u64>,
) -> Found<M::State> {
    let mut s = Search {
        model,
        spans,
        required: spans.iter().filter(|s| !s.optional).count(),
        seen: HashSet::new(),
        order: Vec::new(),
        best: (Vec::new(), init.clone()),
        budget,
    };
    let mut done = vec![0u64; spans.len().div_ceil(64).max(1)];
    if s.go(&mut done, 0, &init, 0) {
        if s.budget == Some(0) {
            Found::Undecided
        } else {
            Found::Order
        }
    } else {
        let (order, state) = s.best;
        Found::Not { order, state }
    }
}

struct Search<'a, M: Model> {
    model: &'a M,
    spans: &'a [Span],
    required: usize,
    seen: HashSet<(Vec<u64>, String, u64)>,
    /// The order being tried, and the longest tried.
    order: Vec<usize>,
    best: (Vec<usize>, M::State),
    budget: Option<u64>,
}

impl<M: Model> Search<'_, M> {
    fn go(&mut self, done: &mut Vec<u64>, taken: usize, state: &M::State, floor: u64) -> bool {
        if taken == self.required {
            return true;
        }
        if let Some(budget) = &mut self.budget {
            if *budget == 0 {
                // Undecided: said, never a failure.
                return true;
            }
            *budget -= 1;
        }
        if self.order.len() > self.best.0.len() {
            self.best = (self.order.clone(), state.clone());
        }
        let is_done = |done: &[u64], i: usize| done[i / 64] & (1 << (i % 64)) != 0;
        let spans = self.spans;
        // The earliest answer among required calls not taken: only calls
        // made before it may come next.
        let horizon = (0..spans.len())
            .filter(|&i| !spans[i].optional && !is_done(done, i))
            .map(|i| spans[i].end)
            .min()
            .unwrap_or(u64::MAX);
        for i in 0..spans.len() {
            if is_done(done, i) || spans[i].start > horizon {
                continue;
            }
            for (next, at) in self.model.steps(state, i, floor) {
                let (key, timed) = self.model.key(&next);
                let at = if timed { at } else { 0 };
                done[i / 64] |= 1 << (i % 64);
                if self.seen.insert((done.clone(), key, at)) {
                    self.order.push(i);
                    let taken = taken + usize::from(!spans[i].optional);
                    if self.go(done, taken, &next, at) {
                        return true;
                    }
                    self.order.pop();
                }
                done[i / 64] &= !(1 << (i % 64));
            }
        }
        false
    }
}
