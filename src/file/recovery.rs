//! Opening, cleaning up after crashed writers, quarantine and sweeping.

use std::ffi::OsString;
use std::fs::DirEntry;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::events::{Event, TaskEventKind, UnreadableAction};
use crate::file::fs::{self, Fs};
use crate::file::layout::{self, Area, FORMAT_VERSION, Layout, stripe};
use crate::file::{Durability, FileStore};
use crate::id::TaskId;

/// Creates the store directory and its areas (mode `0700`), refusing
/// symlinks and files where a directory belongs. A newly created store
/// directory is made durable in its parent under `Durability::Immediate`
/// (the areas are, by the fsync that follows the marker's creation).
pub(super) fn prepare_dirs(fs: &Fs, layout: &Layout, durability: Durability) -> Result<()> {
    let root = &layout.root;
    match std::fs::metadata(root) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(invalid(root, "not a directory")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .map_err(|e| Error::io("create directory", parent, e))?;
            }
            create_dir(fs, root)?;
            if durability == Durability::Immediate
                && let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty())
            {
                sync_dir_at(fs, parent)?;
            }
        }
        Err(e) => return Err(Error::io("stat", root, e)),
    }
    for dir in layout.dirs() {
        match std::fs::symlink_metadata(dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(invalid(dir, "is a symlink; the store follows none"));
            }
            Ok(_) => return Err(invalid(dir, "not a directory")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => create_dir(fs, dir)?,
            Err(e) => return Err(Error::io("stat", dir, e)),
        }
    }
    Ok(())
}

fn create_dir(fs: &Fs, dir: &Path) -> Result<()> {
    match fs.create_dir(dir) {
        Ok(()) => Ok(()),
        // Another process created it first.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(Error::io("create directory", dir, e)),
    }
}

fn invalid(path: &Path, reason: &str) -> Error {
    Error::InvalidStore {
        path: path.to_owned(),
        reason: reason.to_owned(),
    }
}

#[derive(serde::Deserialize)]
struct Marker {
    format: u64,
}

/// Checks the store's format marker, writing it on first open.
pub(super) fn ensure_marker(store: &FileStore) -> Result<()> {
    let path = store.layout.marker();
    if let Some(format) = read_marker(&path)? {
        return check_format(&path, format);
    }
    // The marker's temp file is named like a task's, for the id below, so
    // the temp-file cleanup takes the same stripe lock this write holds.
    let id = TaskId::parse(layout::MARKER).expect("the marker name is a valid id");
    let _guard = store.locks.lock(&store.fs, stripe(&id))?;
    if let Some(format) = read_marker(&path)? {
        return check_format(&path, format);
    }
    let bytes = format!("{{\"format\":{FORMAT_VERSION},\"kind\":\"taskstore\"}}\n");
    store.replace(&id, &path, bytes.as_bytes())?;
    if store.durability == Durability::Immediate {
        sync_dir_at(&store.fs, &store.layout.root)?;
    }
    Ok(())
}

/// Fsyncs the directory at `dir` (one not kept open by the store).
fn sync_dir_at(fs: &Fs, dir: &Path) -> Result<()> {
    let handle = fs::open_read(dir).map_err(|e| Error::io("open directory", dir, e))?;
    fs.sync_dir(&handle, dir)
        .map_err(|e| Error::io("fsync directory", dir, e))
}

fn read_marker(path: &Path) -> Result<Option<u64>> {
    let mut bytes = Vec::new();
    match fs::open_read(path).and_then(|mut f| io::Read::read_to_end(&mut f, &mut bytes)) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if fs::is_symlink_refusal(&e) => {
            return Err(invalid(
                path,
                "the store marker is a symlink; the store follows none",
            ));
        }
        Err(e) => return Err(Error::io("read", path, e)),
    }
    let marker: Marker = serde_json::from_slice(&bytes)
        .map_err(|e| invalid(path, &format!("unreadable store marker: {e}")))?;
    Ok(Some(marker.format))
}

fn check_format(path: &Path, found: u64) -> Result<()> {
    if found > FORMAT_VERSION {
        return Err(Error::UnsupportedFormat {
            path: path.to_owned(),
            found,
            supported: FORMAT_VERSION,
        });
    }
    Ok(())
}

/// Removes temp files whose writer is gone. A writer holds its task's stripe
/// lock from creating its temp file until the rename, so a temp file whose
/// stripe is free belongs to no one.
pub(super) fn clean_temp_files(store: &FileStore) -> Result<usize> {
    let dir = &store.layout.tmp;
    let mut removed = 0;
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))? {
        let entry = entry.map_err(|e| Error::io("read directory", dir, e))?;
        let name = entry.file_name();
        let Some(id) = layout::temp_file_id(&name) else {
            set_aside(
                store,
                "tmp",
                &entry.path(),
                &name,
                "not a temp file of this store",
            )?;
            continue;
        };
        let Some(_guard) = store.locks.try_lock(&store.fs, stripe(&id))? else {
            continue;
        };
        let path = entry.path();
        match store.fs.remove_file(&path) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", &path, e)),
        }
    }
    if removed > 0 {
        tracing::info!(store = %store.layout.root.display(), removed, "removed temp files left by crashed writers");
    }
    Ok(removed)
}

/// The task files in `area` by id; foreign names are set aside.
pub(super) fn entries(store: &FileStore, area: Area) -> Result<Vec<(TaskId, DirEntry)>> {
    let dir = store.layout.area(area);
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))? {
        let entry = entry.map_err(|e| Error::io("read directory", dir, e))?;
        let name = entry.file_name();
        match layout::task_file_id(&name) {
            Some(id) => out.push((id, entry)),
            None => set_aside(
                store,
                area.name(),
                &entry.path(),
                &name,
                "not a task file name",
            )?,
        }
    }
    Ok(out)
}

/// Sets aside a task file that failed to read as `err`, if it still fails
/// under its lock. I/O errors are reported and skipped: they may pass.
pub(super) fn set_aside_task(store: &FileStore, area: Area, id: &TaskId, err: Error) -> Result<()> {
    match err {
        Error::Corrupt { .. } | Error::UnsupportedFormat { .. } => {}
        Error::Io { .. } => {
            tracing::warn!(task = %id, error = %err, "skipping a task file that cannot be read");
            return Ok(());
        }
        other => return Err(other),
    }
    let path = store.layout.task(area, id);
    let set_aside = {
        let _guard = store.locks.lock(&store.fs, stripe(id))?;
        match super::read_task_file(&path, id) {
            Err(e @ (Error::Corrupt { .. } | Error::UnsupportedFormat { .. })) => {
                let name = path.file_name().map(OsString::from).unwrap_or_default();
                move_aside(store, area.name(), &path, &name, &e.to_string())?
            }
            _ => None, // repaired or removed meanwhile
        }
    };
    if let Some((target, why)) = set_aside {
        notify_set_aside(store, &path, &target, &why);
    }
    Ok(())
}

/// Moves `path` into the quarantine area, never deleting it, and reports it.
/// The caller holds no lock.
fn set_aside(store: &FileStore, area: &str, path: &Path, name: &OsString, why: &str) -> Result<()> {
    if let Some((target, why)) = move_aside(store, area, path, name, why)? {
        notify_set_aside(store, path, &target, &why);
    }
    Ok(())
}

fn notify_set_aside(store: &FileStore, path: &Path, target: &Path, why: &str) {
    tracing::warn!(file = %path.display(), quarantined_as = %target.display(), reason = why, "set aside a file that is not a readable task");
    store.notifier.emit(|| {
        Event::unreadable(path.display(), why, UnreadableAction::SetAside)
            .field("quarantinedAs", target.display().to_string())
    });
}

/// Moves `path` into the quarantine area; `None` if it was gone already.
fn move_aside(
    store: &FileStore,
    area: &str,
    path: &Path,
    name: &OsString,
    why: &str,
) -> Result<Option<(PathBuf, String)>> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let mut target = OsString::from(format!(
        "{area}.{}.{}.{}.",
        OffsetDateTime::now_utc().unix_timestamp_nanos(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    target.push(name);
    let target = store.layout.quarantine.join(target);
    match store.fs.rename(path, &target) {
        Ok(()) => Ok(Some((target, why.to_owned()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("set aside", path, e)),
    }
}

/// Deletes the expired tasks in `area`, finishes interrupted terminal
/// moves and sets corrupt files aside. Returns the tasks deleted.
pub(super) fn sweep_area(store: &FileStore, area: Area, now: OffsetDateTime) -> Result<usize> {
    let mut deleted = 0;
    let mut touched = [false; 2];
    for (id, entry) in entries(store, area)? {
        let candidate = match super::read_task_file(&entry.path(), &id) {
            Ok(Some(task)) => {
                task.is_expired_at(now) || (area == Area::Active && task.is_terminal())
            }
            Ok(None) => false,
            Err(e) => {
                set_aside_task(store, area, &id, e)?;
                false
            }
        };
        if !candidate {
            continue;
        }
        let guard = store.locks.lock(&store.fs, stripe(&id))?;
        let found = match store.find(&id) {
            Ok(Some(found)) => found,
            Ok(None) => continue,
            Err(e) => {
                drop(guard);
                set_aside_task(store, area, &id, e)?;
                continue;
            }
        };
        if found.task.is_expired_at(now) {
            if store.remove_if_present(found.area, &id)? {
                touched[found.area as usize] = true;
                deleted += 1;
                drop(guard);
                store.notifier.task(TaskEventKind::Expired, &found.task);
            }
        } else if found.unmoved() {
            store.move_to_done(&id)?;
        }
    }
    for a in [Area::Active, Area::Done] {
        if touched[a as usize] {
            store.sync_area(a)?;
        }
    }
    Ok(deleted)
}
