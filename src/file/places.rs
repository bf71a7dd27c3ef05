//! Where each task is in a map ordered by creation time and id, found from
//! its id by a hash of the id, not by a second copy of it.
//!
//! The snapshot of `active/` and history's keys of `done/` each keep their
//! tasks in one ordered map whose key holds the id (listing order is
//! creation time, then id). To find a task from its id, each keeps
//! [`Places`]: a task's creation time by the low 32 bits of its id's hash,
//! 16 bytes a task where a map by id would hold a second copy of each id
//! (a 36-byte id takes a 48-byte block of its own). An id whose hash
//! another id holds already is kept in full, in `collided`; at 10,000 tasks
//! about one chance in 90 that any is.

use std::collections::HashMap;
use std::collections::hash_map::{self, RandomState};
use std::hash::BuildHasher;

use crate::file::moment::Moment;
use crate::id::TaskId;

/// Each task's creation time, by its id: where the task is in its owner's
/// ordered map. The owner's map is the truth: a place found by a hash may
/// be another id's, so the owner looks the task up at the place it gets,
/// and tells [`remove`](Places::remove) whether it holds the task there.
#[derive(Debug, Default)]
pub(crate) struct Places {
    by_hash: HashMap<u32, Moment>,
    collided: HashMap<TaskId, Moment>,
    hasher: RandomState,
    /// Every id hashes alike (for the tests of the collision path).
    #[cfg(test)]
    collide: bool,
}

impl Places {
    /// The hash `by_hash` knows task `id` by: truncated to its low 32 bits,
    /// which makes each slot 16 bytes, not 24.
    fn hash(&self, id: &TaskId) -> u32 {
        #[cfg(test)]
        if self.collide {
            return 0;
        }
        self.hasher.hash_one(id) as u32
    }

    /// Where task `id` is, if the owner holds it: the owner's map, looked up
    /// at the place given, says whether it does (the hash may be another
    /// id's).
    pub fn get(&self, id: &TaskId) -> Option<Moment> {
        match self.collided.get(id) {
            Some(at) => Some(*at),
            None => self.by_hash.get(&self.hash(id)).copied(),
        }
    }

    /// Places task `id` at `at`. Any place it had must have been removed.
    pub fn insert(&mut self, id: &TaskId, at: Moment) {
        match self.by_hash.entry(self.hash(id)) {
            hash_map::Entry::Vacant(place) => {
                place.insert(at);
            }
            // Another id's (this one's was removed).
            hash_map::Entry::Occupied(_) => {
                self.collided.insert(id.clone(), at);
            }
        }
    }

    /// Forgets where task `id` is, and returns it; `holds(at)` says
    /// whether the owner holds the task at `at` (the place its hash finds
    /// may be another id's, which stays).
    pub fn remove(&mut self, id: &TaskId, holds: impl FnOnce(Moment) -> bool) -> Option<Moment> {
        if let Some(at) = self.collided.remove(id) {
            return Some(at);
        }
        let hash = self.hash(id);
        let at = *self.by_hash.get(&hash)?;
        if !holds(at) {
            return None;
        }
        self.by_hash.remove(&hash);
        Some(at)
    }

    /// Forgets every place (the hashing kept).
    pub fn clear(&mut self) {
        self.by_hash.clear();
        self.collided.clear();
    }

    /// Places where every id hashes alike (`collide`), or not.
    #[cfg(test)]
    pub fn colliding(collide: bool) -> Places {
        Places {
            collide,
            ..Places::default()
        }
    }

    /// How many tasks are placed.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_hash.len() + self.collided.len()
    }

    /// How many tasks are placed by their id in full (their hash another's).
    #[cfg(test)]
    pub fn collided(&self) -> usize {
        self.collided.len()
    }
}

/// A repeatable stream of numbers below the `n` each call asks for, from
/// `seed` (a linear congruential generator): the random order of the model
/// tests of `Places` and of the snapshot.
#[cfg(test)]
pub(crate) fn pseudo_random(mut seed: u64) -> impl FnMut(u64) -> u64 {
    move |n| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use time::OffsetDateTime;

    use super::Places;
    use crate::file::moment::Moment;
    use crate::id::TaskId;

    /// Places and removes tasks in a random order, with an ordered map as
    /// the owner, checking every lookup against a plain map by id: with
    /// real hashes, and with every id hashing alike.
    #[test]
    fn places_find_what_a_plain_map_by_id_finds() {
        for collide in [false, true] {
            let mut places = Places::colliding(collide);
            let mut owner: BTreeMap<(Moment, TaskId), ()> = BTreeMap::new();
            let mut model: BTreeMap<TaskId, Moment> = BTreeMap::new();
            let ids: Vec<TaskId> = (0..30)
                .map(|i| TaskId::parse(&format!("t{i:02}")).unwrap())
                .collect();
            let mut next = super::pseudo_random(11);
            for _ in 0..3_000 {
                let id = &ids[next(ids.len() as u64) as usize];
                if next(3) == 0 {
                    let was = places.remove(id, |at| owner.contains_key(&(at, id.clone())));
                    assert_eq!(was, model.remove(id), "{id} removed");
                    if let Some(at) = was {
                        owner.remove(&(at, id.clone()));
                    }
                } else {
                    if let Some(at) = places.remove(id, |at| owner.contains_key(&(at, id.clone())))
                    {
                        owner.remove(&(at, id.clone()));
                    }
                    let at: Moment = OffsetDateTime::from_unix_timestamp(next(5) as i64)
                        .unwrap()
                        .into();
                    places.insert(id, at);
                    owner.insert((at, id.clone()), ());
                    model.insert(id.clone(), at);
                }
                for id in &ids {
                    let found = places
                        .get(id)
                        .filter(|at| owner.contains_key(&(*at, id.clone())));
                    assert_eq!(found, model.get(id).copied(), "{id} found");
                }
                assert_eq!(places.len(), model.len());
            }
        }
    }
}
