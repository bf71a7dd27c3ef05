//! The ids of an area's task files, read from its directory in one pass;
//! names that are no task file's set aside as they are met.

use std::ffi::{OsStr, OsString};

use super::{NOT_A_TASK_FILE, set_aside_names};
use crate::backend::Skipped;
use crate::error::{Error, Result};
use crate::file::FileBackend;
use crate::file::layout::{self, Area};
use crate::id::TaskId;

/// The ids of an area's task files, their text in one buffer: a pass over
/// thousands of names makes two allocations, not a string or two per name.
/// Strings of their own, freed after the pass, would leave holes between
/// the task files' bytes a snapshot keeps from it (1.1 MiB of resident
/// memory at 10,000 running tasks), or between the ids history keeps (1.2
/// MiB at 20,000 finished tasks).
#[derive(Default)]
pub(in crate::file) struct Ids {
    text: String,
    spans: Vec<(usize, usize)>,
}

impl Ids {
    fn push(&mut self, id: &str) {
        let start = self.text.len();
        self.text.push_str(id);
        self.spans.push((start, self.text.len()));
    }

    /// Where each id lies in the buffer, in the order the directory gave.
    pub(in crate::file) fn spans(&self) -> &[(usize, usize)] {
        &self.spans
    }

    /// Keeps the first `count` ids, and gives back the room of the others.
    pub(in crate::file) fn keep_first(&mut self, count: usize) {
        self.spans.truncate(count);
        self.text
            .truncate(self.spans.last().map_or(0, |&(_, end)| end));
        self.spans.shrink_to_fit();
        self.text.shrink_to_fit();
    }

    /// The id at `span`, one of [`spans`](Self::spans).
    pub(in crate::file) fn at(&self, (start, end): (usize, usize)) -> &str {
        &self.text[start..end]
    }

    pub(in crate::file) fn iter(&self) -> impl Iterator<Item = &str> {
        self.spans.iter().map(|&span| self.at(span))
    }

    /// Keeps the first place of each id named more than once: a `readdir`
    /// under way while a file is renamed over its name may name it twice
    /// (tmpfs gives the new entry a new place, after the old one).
    pub(in crate::file) fn dedup(&mut self) {
        let text = &self.text;
        let mut seen = std::collections::HashSet::with_capacity(self.spans.len());
        self.spans
            .retain(|&(start, end)| seen.insert(&text[start..end]));
    }

    /// Adds each id of `more` that is not here yet.
    pub(in crate::file) fn join(&mut self, more: &Ids) {
        let new: Vec<&str> = {
            let seen: std::collections::HashSet<&str> = self.iter().collect();
            more.iter().filter(|id| !seen.contains(id)).collect()
        };
        for id in new {
            self.push(id);
        }
    }
}

/// The ids of the task files in `area`, read in one call if `whole` asks
/// and the directory fits (see [`Fs::each_entry_whole`]), and whether it
/// was read so. Names that are not task file names are set aside and
/// reported.
///
/// [`Fs::each_entry_whole`]: crate::file::fs::Fs::each_entry_whole
pub(in crate::file) fn task_ids(
    store: &FileBackend,
    area: Area,
    whole: bool,
) -> Result<(Ids, bool, Vec<Foreign>)> {
    let mut ids = Ids::default();
    let (skipped, whole) =
        each_task_file_read(store, area, whole, &mut |id, _| ids.push(id.as_str()))?;
    Ok((ids, whole, skipped))
}

/// The ids of the task files in `area`, each with the inode number its
/// directory holds for it (in the order of [`Ids::spans`]). Names that are
/// not task file names are set aside and reported.
pub(in crate::file) fn task_ids_with_inodes(
    store: &FileBackend,
    area: Area,
) -> Result<(Ids, Vec<u64>, Vec<Skipped>)> {
    let (mut ids, mut inodes) = (Ids::default(), Vec::new());
    let skipped = each_task_file(store, area, |id, ino| {
        ids.push(id.as_str());
        inodes.push(ino);
    })?;
    Ok((ids, inodes, skipped))
}

/// Hands `each` every task file of `area` (its id and inode number) as
/// the directory gives them, name by name. Names that are not task file
/// names are set aside once the directory is read, and reported.
fn each_task_file(
    store: &FileBackend,
    area: Area,
    mut each: impl FnMut(TaskId, u64),
) -> Result<Vec<Skipped>> {
    each_task_file_read(store, area, false, &mut each)
        .map(|(foreign, _)| foreign.into_iter().map(|(_, report)| report).collect())
}

/// [`each_task_file`], read `whole` if asked ([`Fs::each_entry_whole`]);
/// also whether it was read so. Each report comes with its name.
///
/// [`Fs::each_entry_whole`]: crate::file::fs::Fs::each_entry_whole
fn each_task_file_read(
    store: &FileBackend,
    area: Area,
    whole: bool,
    each: &mut dyn FnMut(TaskId, u64),
) -> Result<(Vec<Foreign>, bool)> {
    let dir = store.dir(area);
    let mut foreign = Vec::new();
    let mut entry = |name: OsString, ino: u64| match layout::task_file_id(&name) {
        Some(id) => each(id, ino),
        None => foreign.push(name),
    };
    let read = if whole {
        store.fs.each_entry_whole(dir, entry)
    } else {
        store
            .fs
            .each_entry(dir, |name, ino| {
                entry(name, ino);
                true
            })
            .map(|()| false)
    };
    let whole = read.map_err(|e| Error::io("read directory", dir.path(), e))?;
    let names: Vec<&OsStr> = foreign.iter().map(OsString::as_os_str).collect();
    let reports = set_aside_names(store, dir, &names, area.name(), NOT_A_TASK_FILE);
    let skipped = foreign.iter().cloned().zip(reports).collect();
    Ok((skipped, whole))
}

/// A name that is not a task file's, with what became of it.
pub(in crate::file) type Foreign = (OsString, Skipped);

#[cfg(test)]
mod tests {
    use super::Ids;

    fn ids(list: &[&str]) -> Ids {
        let mut ids = Ids::default();
        for id in list {
            ids.push(id);
        }
        ids
    }

    /// A directory read again while it changed: the second reading's new
    /// ids are added once each, after the first's, and each id reads back
    /// whole from its span.
    #[test]
    fn joining_a_second_reading_adds_only_its_new_ids() {
        let mut first = ids(&["a", "task-2", "b.c"]);
        first.join(&ids(&["task-2", "d", "a", "e_f"]));
        assert_eq!(
            first.iter().collect::<Vec<_>>(),
            ["a", "task-2", "b.c", "d", "e_f"]
        );
        let spans: Vec<&str> = first.spans().iter().map(|&s| first.at(s)).collect();
        assert_eq!(spans, ["a", "task-2", "b.c", "d", "e_f"]);
    }
}
