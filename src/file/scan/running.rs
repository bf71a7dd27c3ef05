//! A `get` of a running task answered from the snapshot, without opening
//! its file, when change notices keep the snapshot current.

use crate::error::Result;
use crate::file::layout::{Area, task_name};
use crate::file::snapshot::State;
use crate::file::{FileBackend, codec};
use crate::id::TaskId;
use crate::task::Task;

impl FileBackend {
    /// Running task `id` as the snapshot holds it, if the snapshot is kept
    /// current by change notices and holds the task's bytes: a `get` that
    /// opens no file. The notices of every write that returned before this
    /// call are queued by then (the kernel queues them inside the write's
    /// own system call), so this sees each such write as a file read would.
    /// `None` means: read the files (the task is terminal, elsewhere, or
    /// the snapshot cannot vouch for it, or `open` could not resolve its
    /// copies in both areas).
    pub(in crate::file) fn load_running(&self, id: &TaskId) -> Result<Option<Task>> {
        if self.unresolved.may_have_two(id) {
            return Ok(None);
        }
        let held = {
            let mut state = self.snapshot.lock();
            if !state.complete || state.watch.is_none() {
                return Ok(None);
            }
            self.refresh(&mut state)?;
            if state.watch.is_none() {
                return Ok(None);
            }
            match held(&state, id) {
                Some(held) => held,
                None => return Ok(None),
            }
        };
        Ok(self.decode_held(id, held))
    }

    /// [`load_running`](FileBackend::load_running), only if it needs no
    /// file read and no wait: the snapshot is free (no other thread is
    /// listing or refreshing it), kept current by change notices, and no
    /// notice is pending (so nothing was written since it was last brought
    /// up to date: the same proof a drain that finds nothing gives).
    /// `None` means: call `load_running` (or read the files).
    pub(in crate::file) fn load_running_at_once(&self, id: &TaskId) -> Option<Task> {
        if self.unresolved.may_have_two(id) {
            return None;
        }
        let held = {
            let state = self.snapshot.try_lock()?;
            if !state.complete || !state.watch.as_ref()?.is_quiet() {
                return None;
            }
            held(&state, id)?
        };
        self.decode_held(id, held)
    }

    /// A task the snapshot held, decoded.
    fn decode_held(&self, id: &TaskId, held: Held) -> Option<Task> {
        let task = match held {
            Held::Decoded(task) => Some(task),
            Held::Bytes(bytes) => {
                let path = self.dir(Area::Active).join(task_name(id));
                codec::unwrap(&bytes, &path, id).ok()
            }
        };
        #[cfg(test)]
        if task.is_some() {
            self.snapshot.lock().gets += 1;
        }
        task
    }
}

/// What the snapshot holds of a running task.
// Made once per `get` and taken apart at once: a box would add an
// allocation to the path it exists to keep short.
#[allow(clippy::large_enum_variant)]
enum Held {
    /// Decoded already.
    Decoded(Task),
    /// Its file's bytes.
    Bytes(Vec<u8>),
}

/// Running task `id` as `state` holds it, if it holds it whole.
fn held(state: &State, id: &TaskId) -> Option<Held> {
    match state.get(id) {
        Some((slot, entry)) if !entry.status.is_terminal() => {
            match (state.decoded(slot), slot.bytes()) {
                (Some(task), _) => Some(Held::Decoded(Task::clone(task))),
                (None, Some(bytes)) => Some(Held::Bytes(bytes.to_vec())),
                (None, None) => None,
            }
        }
        _ => None,
    }
}
