//! What an open does when it holds the handles lock exclusive, so that no
//! other handle can see it half done: compacting directories, and moving a
//! store of an older format to this one.

use std::ffi::{OsStr, OsString};
use std::io;

use crate::error::{Error, Result};
use crate::file::fs::{Dir, Fs};
use crate::file::layout::{self, Area};
use crate::file::{FileBackend, open};

/// The directories that are compacted when they grew large and emptied out.
const COMPACTED: [&str; 2] = ["active", "expiring"];

/// The name of the directory a compaction of `area` builds, and leaves if
/// cut short: `<area>.compact`.
fn leftover_name(area: &str) -> OsString {
    format!("{area}.compact").into()
}

/// Whether `name`, in a store's root, is the leftover of a compaction cut
/// short.
pub(super) fn is_leftover(name: &OsStr) -> bool {
    COMPACTED.iter().any(|area| name == leftover_name(area))
}

/// Compacts every directory of [`COMPACTED`] that holds far fewer entries
/// than its size once held: ext4 directories never shrink, and listing one
/// reads every block it ever had.
///
/// The new directory gets every entry as a hard link, is made durable, and
/// is swapped with the old one in one `rename(RENAME_EXCHANGE)`; only then
/// are the old links removed. A crash at any point leaves a whole directory
/// under the area's name (old or new) and a leftover `<area>.compact` that
/// holds only second names of the same files, which the next compaction
/// removes once an fsync of the root made the swap, if it was made,
/// durable.
pub(super) fn compact(fs: &Fs, root: &Dir) -> Result<()> {
    'areas: for name in COMPACTED {
        let leftover = leftover_name(name);
        // A compaction cut short after its swap left the old directory
        // here: the swap is made durable before its names go, or a power
        // loss could leave the area's name on the emptied old directory.
        match fs.stat(root, &leftover) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            _ => sync(fs, root)?,
        }
        remove_tree(fs, root, &leftover)?;
        let dir = fs
            .open_dir(root, OsStr::new(name))
            .map_err(|e| Error::io("open directory", root.join(name), e))?;
        let size = fs
            .stat_dir(&dir)
            .map_err(|e| Error::io("stat", dir.path(), e))?
            .size;
        // A small directory is never worth compacting: its names are read
        // only when its size says it may be.
        if size < MIN_COMPACTED {
            continue;
        }
        // Read only as far as it takes to see it is not bloated: a large
        // directory that is full (`expiring/` of a long history) costs an
        // open an eighth of the names its size could hold (about a sixth
        // of a full `expiring/`'s), not all of them.
        let enough = fewest_kept(size);
        let names = fs
            .read_dir_at_most(&dir, enough)
            .map_err(|e| Error::io("read directory", dir.path(), e))?;
        if names.len() == enough || !bloated(size, names.len()) {
            continue;
        }
        fs.create_dir(root, &leftover)
            .map_err(|e| Error::io("create directory", root.join(&leftover), e))?;
        let new = fs
            .open_dir(root, &leftover)
            .map_err(|e| Error::io("open directory", root.join(&leftover), e))?;
        for entry in &names {
            if let Err(e) = fs.link(&dir, entry, &new, entry) {
                // A directory where a file belongs, say: leave this one
                // be, and go on to the next.
                tracing::warn!(dir = %dir.path().display(), entry = ?entry, error = %e, "not compacting a directory");
                drop(new);
                remove_tree(fs, root, &leftover)?;
                continue 'areas;
            }
        }
        fs.sync_dir(&new)
            .map_err(|e| Error::io("fsync directory", new.path(), e))?;
        fs.exchange(root, OsStr::new(name), &leftover)
            .map_err(|e| Error::io("swap in", root.join(name), e))?;
        sync(fs, root)?;
        remove_tree(fs, root, &leftover)?;
        sync(fs, root)?;
        tracing::info!(dir = %root.join(name).display(), bytes_before = size, entries = names.len(), "compacted a directory that had grown and emptied");
    }
    Ok(())
}

/// Whether a directory of `size` bytes holding `entries` names is worth
/// compacting: at least 64 KiB, and eight times what its names need.
fn bloated(size: u64, entries: usize) -> bool {
    size >= MIN_COMPACTED && size > 8 * (entries as u64 * 64 + 4096)
}

/// The fewest entries that make a directory of `size` bytes not
/// [`bloated`]: it holds them, or all it has is fewer (and then it is).
fn fewest_kept(size: u64) -> usize {
    usize::try_from(size.saturating_sub(8 * 4096).div_ceil(8 * 64)).unwrap_or(usize::MAX)
}

/// The smallest directory worth compacting.
const MIN_COMPACTED: u64 = 64 * 1024;

/// Removes the directory `name` in `root` and the names in it (second
/// names of files that live on elsewhere), if it exists.
fn remove_tree(fs: &Fs, root: &Dir, name: &OsStr) -> Result<()> {
    let dir = match fs.open_dir(root, name) {
        Ok(dir) => dir,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("open directory", root.join(name), e)),
    };
    let names = fs
        .read_dir(&dir)
        .map_err(|e| Error::io("read directory", dir.path(), e))?;
    for entry in names {
        fs.remove_if_there(&dir, &entry)
            .map_err(|e| Error::io("remove", dir.join(&entry), e))?;
    }
    drop(dir);
    fs.remove_dir(root, name)
        .map_err(|e| Error::io("remove directory", root.join(name), e))
}

fn sync(fs: &Fs, dir: &Dir) -> Result<()> {
    fs.sync_dir(dir)
        .map_err(|e| Error::io("fsync directory", dir.path(), e))
}

/// Moves a store of format 1 to this format: every finished task with a TTL
/// gets its entry in `expiring/` (read once, here, so the sweep never needs
/// to read a task that has not expired), then the marker says format 2.
/// The caller holds the handles lock exclusive.
pub(super) fn migrate(store: &FileBackend, from: u64) -> Result<()> {
    let before = store.expiring.before();
    let done = store.dir(Area::Done);
    let names = store
        .fs
        .read_dir(done)
        .map_err(|e| Error::io("read directory", done.path(), e))?;
    let mut indexed = 0;
    for name in names {
        let Some(id) = layout::task_file_id(&name) else {
            continue;
        };
        let task = match store.read_task(done, &name, &id) {
            Ok(Some(task)) => task,
            Ok(None) => continue,
            // Not moved: the device may answer at the next open, which
            // tries again (the error names the file).
            Err(e @ Error::Io { .. }) => return Err(e),
            // No task this version will read from it (damaged, of a newer
            // format, past any cap): moving on keeps the store usable, and
            // should it ever read, `verify` finds its index entry missing,
            // which `repair` restores.
            Err(e) => {
                tracing::warn!(task = %id, error = %e, "not indexed while moving the store to the new format");
                continue;
            }
        };
        if let Some(index) = layout::expiring_name(&task) {
            store.link_over(&id, (done, &name), (store.expiring.dir(), &index))?;
            indexed += 1;
        }
    }
    let expiring = &store.expiring;
    expiring
        .sync(&store.fs, before)
        .map_err(|e| Error::io("fsync directory", expiring.dir().path(), e))?;
    open::write_marker(store, &open::marker_id())?;
    tracing::info!(store = %store.root.display(), from, indexed, "moved the store to the current format");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{MIN_COMPACTED, bloated, fewest_kept};

    #[test]
    fn a_directory_holding_the_fewest_kept_entries_is_not_bloated_and_one_fewer_is() {
        for size in [
            MIN_COMPACTED,
            MIN_COMPACTED + 1,
            100_000,
            1 << 20,
            1 << 20 | 511,
            1 << 30,
        ] {
            let kept = fewest_kept(size);
            assert!(!bloated(size, kept), "{size}: {kept}");
            assert!(bloated(size, kept - 1), "{size}: {kept}");
        }
    }
}
