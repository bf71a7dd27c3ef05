//! Opening a store: its directories, its marker, and the recovery that
//! opening owes to crashes and power losses.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io;
use std::path::Path;

use crate::error::{Error, Result};
use crate::file::fs::{Dir, Fs, is_read_only, is_symlink_refusal, without_trailing_slashes};
use crate::file::group::DirSync;
use crate::file::layout::{
    self, Area, DIRS, HANDLES_LOCK, INDEX_DIR, MARKER, RootName, STORE_FORMAT, stripe,
};
use crate::file::lock::{Polling, STRIPE_WAIT, StripeLocks};
use crate::file::proof::Proofs;
use crate::file::read::Unresolved;
use crate::file::recovery::{self, Quarantine};
use crate::file::snapshot::ActiveSnapshot;
use crate::file::write::{self, Put};
use crate::file::{Durability, FileBackend, FileOptions, maintenance};
use crate::id::TaskId;

/// The largest marker file read.
const MAX_MARKER_BYTES: u64 = 4_096;

/// Opens (or creates) the store `options` name.
///
/// Every handle holds `locks/handles.lock` shared for its life. An open
/// that can take it exclusive knows no other handle has the store open,
/// and does what no other handle may see half done: moves a store of an
/// older format to this one, and compacts directories that grew large and
/// emptied (ext4 directories never shrink by themselves).
pub(super) fn open(options: &FileOptions) -> Result<FileBackend> {
    #[cfg(feature = "fault-injection")]
    let fs = Fs::with_faults(options.faults.clone()).recording(options.recorder.clone());
    #[cfg(not(feature = "fault-injection"))]
    let fs = Fs::default();
    let root = &options.root;
    let (root_dir, named) = open_root(&fs, root)?;
    let names = fs
        .read_dir(&root_dir)
        .map_err(|e| Error::io("read directory", root, e))?;
    let has = |name: &str| names.iter().any(|n| n == name);
    // A store without its marker may be one another open is making, which
    // may die before its fsyncs: the names of the store's directory and of
    // its areas are made durable here too, before anything is written
    // through this open. A marker proves them durable: the open that wrote
    // it had made them so first.
    let unproven = !has(MARKER);
    if unproven && !named {
        // Every ancestor's name too: the other open may have made them.
        sync_names_up(&fs, root)?;
    }
    // Given its marker back before anything is made, then moved as a store
    // that kept it.
    let lost_format_1 = is_lost_format_1(&names);
    if !has(MARKER) {
        check_adoptable(&fs, &root_dir, &names, options.adopt_non_empty)?;
    }
    check_owner(&fs, &root_dir)?;
    let mut format = format_of(&fs, &root_dir, &names)?;
    if !options.upgrade_format
        && let Some(found) = format.filter(|f| *f < STORE_FORMAT)
    {
        // Before anything is made (format 1 has no `expiring/`).
        return Err(Error::OlderFormat {
            path: root.clone(),
            found,
            current: STORE_FORMAT,
        });
    }
    if names.iter().any(|n| maintenance::is_leftover(n)) {
        // A compaction cut short after its swap: the swap is made durable
        // before anything is written into the area, whether or not this
        // open is alone (one alone removes the leftover, one that is not
        // leaves it). Else a power loss could put the area's name back on
        // the old directory, and every write made since go with the new.
        sync_writable(&fs, &root_dir)?;
    }
    let mut created = false;
    for dir in DIRS {
        if dir == INDEX_DIR && lost_format_1 {
            // Before `expiring/`, whose making would have the next open take
            // this store for one of format 2 (its finished tasks never
            // indexed) if this one stopped before moving it.
            restore_marker_of_format_1(&fs, &root_dir)?;
            format = read_marker(&fs, &root_dir)?;
        }
        created |= ensure_dir(&fs, &root_dir, OsStr::new(dir))?;
    }
    if created || unproven {
        // New directories are part of the store's layout: durable whatever
        // the durability of task writes (they are made once).
        sync_writable(&fs, &root_dir)?;
    }
    let open_dir = |name: &str| open_area(&fs, &root_dir, name);
    let locks = open_dir("locks")?;
    let (handles, writable) = match handles_lock(&fs, &locks)? {
        Some((file, path, writable)) => (Some((file, path)), writable),
        None => (None, false),
    };
    refuse_newer(&root_dir, format)?;
    let stale_format = format.is_some_and(|f| f < STORE_FORMAT);
    let alone = match &handles {
        // An older store is moved to this format before anyone uses it:
        // wait until no other handle has it open, or another open has
        // moved it; then see which.
        Some((file, path)) if stale_format => {
            let alone = wait_to_move(&fs, &root_dir, file, path)?;
            // Of this format if another open moved it.
            format = read_marker(&fs, &root_dir)?;
            refuse_newer(&root_dir, format)?;
            alone
        }
        Some((file, path)) => {
            let alone = fs
                .try_lock(file, path)
                .map_err(|e| Error::io("lock", path, e))?;
            if !alone {
                // Shared before the areas are opened: an open alone (one
                // that compacts an area into a new directory) cannot come
                // between, once the handles open now are gone.
                lock_shared_within(&fs, file, path, options.lock_wait, &|path| {
                    if let Some(waiting) = &options.on_lock_wait.0 {
                        waiting(path);
                    }
                })?;
            }
            alone
        }
        None => false,
    };
    if alone && writable {
        // Before the areas are opened: a compacted area is a new directory.
        // A store that cannot be written opens as it is.
        maintenance::compact(&fs, &root_dir)?;
    }
    let mut backend = FileBackend {
        active: DirSync::new(open_dir("active")?),
        done: DirSync::new(open_dir("done")?),
        tmp: std::sync::Arc::new(open_dir("tmp")?),
        expiring: DirSync::new(open_dir("expiring")?),
        quarantine: Quarantine::new(&fs, open_dir("quarantine")?),
        locks: StripeLocks::new(locks, options.stripe_wait),
        root: root.clone(),
        root_dir,
        fs,
        durability: options.durability,
        snapshot: ActiveSnapshot::default(),
        proofs: Proofs::default(),
        history_keys: Default::default(),
        due: Default::default(),
        reclaimer: Default::default(),
        pending_removals: Default::default(),
        moves_settled_at: Default::default(),
        handles,
        unresolved: Default::default(),
        large_pass: options.large_pass,
        cleaned_at_open: Default::default(),
        kept_durable: Default::default(),
        set_aside: Default::default(),
    };
    backend
        .snapshot
        .watch
        .store(options.change_notices, std::sync::atomic::Ordering::Relaxed);
    if alone && let Some(from) = format.filter(|f| *f < STORE_FORMAT) {
        maintenance::migrate(&backend, from)?;
    }
    if alone && let Some((file, path)) = &backend.handles {
        // Shared from now on (the exclusive hold converted).
        backend
            .fs
            .lock_shared(file, path)
            .map_err(|e| Error::io("lock", path, e))?;
    }
    ensure_marker(&backend)?;
    // Crash leftovers: dead writers' temp files. Best effort: a store that
    // cannot be written (read-only) still opens, and odd entries never
    // block it.
    match recovery::clean_temp_files(&backend) {
        Ok(cleaned) => *backend.cleaned_at_open.get_mut() = cleaned,
        Err(e) => {
            tracing::warn!(store = %root.display(), error = %e, "could not clean up temp files at open")
        }
    }
    let mut resolved = 0;
    backend.unresolved = Unresolved::Only(resolve_stale_copies(&backend, &mut resolved)?);
    *backend.cleaned_at_open.get_mut() += resolved;
    Ok(backend)
}

/// Whether a directory holding `names` is a store: its marker, or, if it
/// lost that (an open writes it again), the directories every store has
/// had since format 1 (`active/`, `done/`, `tmp/` and `locks/`), not only
/// an `active/` and a `done/`, which another program's directory may
/// hold.
pub(crate) fn is_a_store(names: &[std::ffi::OsString]) -> bool {
    let has = |name: &str| names.iter().any(|n| n == name);
    has(MARKER) || ["active", "done", "tmp", "locks"].into_iter().all(has)
}

/// Whether a store root holding `names` is one of format 1 that lost its
/// marker: a store without the `expiring/` format 2 added.
pub(super) fn is_lost_format_1(names: &[std::ffi::OsString]) -> bool {
    let has = |name: &str| names.iter().any(|n| n == name);
    !has(MARKER) && is_a_store(names) && !has(INDEX_DIR)
}

/// The format of the store at `root` (holding `names`): its marker's, or 1
/// for a store of format 1 that lost it; `None` for a new store.
fn format_of(fs: &Fs, root: &Dir, names: &[std::ffi::OsString]) -> Result<Option<u64>> {
    Ok(read_marker(fs, root)?.or(is_lost_format_1(names).then_some(1)))
}

/// [`format_of`], if older than this one. A marker that cannot be read
/// says nothing here (`verify` reports it).
pub(super) fn older_format(fs: &Fs, root: &Dir, names: &[std::ffi::OsString]) -> Option<u64> {
    format_of(fs, root, names)
        .ok()
        .flatten()
        .filter(|f| *f < STORE_FORMAT)
}

/// How long an open waiting to move a store of an older format waits
/// between looks.
const MOVE_POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// Takes the handles lock `file` (at `path`) shared, waiting at most
/// `wait` (`None`: for ever) for an open that holds it alone (compacting
/// the store's directories or moving its format); past it, an error
/// naming the lock file and why.
pub(super) fn lock_shared_within(
    fs: &Fs,
    file: &std::fs::File,
    path: &Path,
    wait: Option<std::time::Duration>,
    waiting: &dyn Fn(&Path),
) -> Result<()> {
    let lock = |e| Error::io("lock", path, e);
    if fs.try_lock_shared(file, path).map_err(lock)? {
        return Ok(());
    }
    // Another open holds it alone: said once, as the wait starts.
    waiting(path);
    let Some(wait) = wait else {
        return fs.lock_shared(file, path).map_err(lock);
    };
    let mut polling = Polling::new(wait);
    while !fs.try_lock_shared(file, path).map_err(lock)? {
        if polling.ran_out() {
            return Err(crate::file::lock::held_too_long(
                path,
                &format!(
                    "another open holds it alone (compacting the store's directories or \
                     moving its format), still after {wait:?}"
                ),
            ));
        }
        polling.pause();
    }
    Ok(())
}

/// Waits until this open may move a store of an older format to this one,
/// no other handle having it open (`true`: the handles lock is held
/// exclusive), or until another open has moved it (`false`: held shared).
/// That open holds the lock shared for its life: waiting for it exclusive
/// would wait for it to close.
fn wait_to_move(fs: &Fs, root: &Dir, file: &std::fs::File, path: &Path) -> Result<bool> {
    loop {
        if fs
            .try_lock(file, path)
            .map_err(|e| Error::io("lock", path, e))?
        {
            return Ok(true);
        }
        if read_marker(fs, root)?.is_none_or(|f| f >= STORE_FORMAT) {
            // Waits while the open that moved it holds it exclusive.
            fs.lock_shared(file, path)
                .map_err(|e| Error::io("lock", path, e))?;
            return Ok(false);
        }
        std::thread::sleep(MOVE_POLL);
    }
}

/// Refuses a store whose marker names a format newer than this one.
pub(super) fn refuse_newer(root: &Dir, format: Option<u64>) -> Result<()> {
    match format.filter(|f| *f > STORE_FORMAT) {
        Some(found) => Err(Error::UnsupportedFormat {
            path: root.join(MARKER),
            found,
            supported: STORE_FORMAT,
        }),
        None => Ok(()),
    }
}

/// The handles lock, opened (created if missing), and whether the store
/// can be written (the lock file opened for writing); `None` on a store
/// that cannot be written where it is missing.
pub(super) fn handles_lock(
    fs: &Fs,
    locks: &Dir,
) -> Result<Option<(std::fs::File, std::path::PathBuf, bool)>> {
    let name = OsStr::new(HANDLES_LOCK);
    let path = locks.join(name);
    match fs.open_lock_file(locks, name) {
        Ok(file) => Ok(Some((file, path, true))),
        Err(e) if is_read_only(&e) => match fs.open_read(locks, name) {
            Ok(file) => Ok(Some((file, path, false))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("open lock file", path, e)),
        },
        Err(e) => Err(Error::io("open lock file", path, e)),
    }
}

/// The store's root directory, created (with its parents) if missing, and
/// whether its name was made durable here (it was made). Its last
/// component must not be a symlink.
fn open_root(fs: &Fs, root: &Path) -> Result<(Dir, bool)> {
    match fs.open_root(root) {
        Ok(dir) => return Ok((dir, false)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(root_error(root, e)),
    }
    let parent = parent_of(root);
    // The ancestors missing now, made below: each one's name must be
    // durable in its own parent too, or a power cut could take the store
    // with it (only the store's own parent was made durable).
    let made: Vec<&Path> = parent
        .into_iter()
        .flat_map(Path::ancestors)
        .filter(|p| !p.as_os_str().is_empty())
        .take_while(|p| {
            matches!(std::fs::symlink_metadata(p), Err(e) if e.kind() == io::ErrorKind::NotFound)
        })
        .collect();
    if let Some(parent) = parent {
        std::fs::create_dir_all(parent).map_err(|e| Error::io("create directory", parent, e))?;
    }
    match fs.create_root(root) {
        Ok(()) => {}
        // Another process created it first.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io("create directory", root, e)),
    }
    let dir = fs.open_root(root).map_err(|e| root_error(root, e))?;
    // The store's parent, then the parent of each ancestor made.
    sync_name(fs, root)?;
    for made in &made {
        sync_name(fs, made)?;
    }
    Ok((dir, true))
}

/// Makes the name of the directory `path` durable: an fsync of its parent
/// (nothing on a read-only file system, where nothing is written). A
/// parent this process may not read (a home directory of mode `0711`) is
/// not fsynced, and said: its name then waits for the system's writeback.
fn sync_name(fs: &Fs, path: &Path) -> Result<()> {
    let Some(parent) = parent_of(path) else {
        return Ok(());
    };
    let parent = match fs.open_ancestor(parent) {
        Ok(parent) => parent,
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            tracing::warn!(directory = %parent.display(), error = %e, "cannot fsync a directory above the store (no read permission): a power loss soon after may take the names made in it");
            return Ok(());
        }
        Err(e) => return Err(Error::io("open directory", parent, e)),
    };
    sync_writable(fs, &parent)
}

/// [`sync_name`] of `root` and of each directory above it, up to the file
/// system's root: for a store whose directories another open may have
/// made and not made durable (it may have made those above the store
/// too). Once per store: an open that finds the marker skips it.
fn sync_names_up(fs: &Fs, root: &Path) -> Result<()> {
    let absolute =
        std::path::absolute(root).map_err(|e| Error::io("make absolute the path", root, e))?;
    for path in absolute.ancestors() {
        if path.parent().is_some() {
            sync_name(fs, path)?;
        }
    }
    Ok(())
}

/// Fsyncs the directory `dir`, but for nothing on a read-only file system
/// (where nothing is written through the store).
fn sync_writable(fs: &Fs, dir: &Dir) -> Result<()> {
    match fs.sync_dir(dir) {
        Err(e) if is_read_only(&e) => Ok(()),
        synced => synced.map_err(|e| Error::io("fsync directory", dir.path(), e)),
    }
}

/// Refuses root a store that belongs to another user, unless it is mounted
/// read-only: what root wrote there (a lock file, a task file, a temp
/// file) would be root's and `0600`, and the store's owner could then
/// neither lock nor read it (root alone passes the store's `0700`: the
/// command run with `sudo` beside a service). The store's owner is the
/// owner of its marker (or, without one, of `active/`), which the first
/// open made: the root directory may be a volume's mount point another
/// user owns, and a new store has no owner yet. Another user than root
/// gets as far only where ownership is not the creator's (a group-shared
/// volume, an NFS or CIFS mount that maps owners), and is let through as
/// before; so is root on an NFS mount whose files show the overflow uid
/// (`/proc/sys/fs/overflowuid`: an NFS server squashing root, whose own
/// files root's are). On a local file system that uid is a user's
/// (`nobody`, a service's), refused as any other.
pub(super) fn check_owner(fs: &Fs, root: &Dir) -> Result<()> {
    let me = rustix::process::geteuid().as_raw();
    if me != 0 {
        return Ok(());
    }
    let owned =
        [MARKER, "active"]
            .into_iter()
            .find_map(|name| match fs.stat(root, OsStr::new(name)) {
                Ok(status) => Some(Ok((name, status.uid))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => Some(Err(Error::io("stat", root.join(name), e))),
            });
    let Some((name, owner)) = owned.transpose()? else {
        return Ok(());
    };
    let squashed = || -> Result<bool> {
        Ok(Some(owner) == overflow_uid()
            && fs
                .is_nfs_mount(root)
                .map_err(|e| Error::io("statfs", root.path(), e))?)
    };
    if owner == me
        || squashed()?
        || fs
            .is_read_only_mount(root)
            .map_err(|e| Error::io("statvfs", root.path(), e))?
    {
        return Ok(());
    }
    Err(invalid(
        root.path(),
        &format!(
            "it belongs to uid {owner} (its {name}) and this process runs as root: the \
             files it would write (locks, tasks) would be root's, and the store's owner \
             could not lock or read them; run it as uid {owner} (e.g. `runuser -u <that \
             user> -- ...`)"
        ),
    ))
}

/// The uid a file system shows for an owner it cannot map (an NFS
/// server's squashed root), if the kernel says.
fn overflow_uid() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/fs/overflowuid")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The directory `path` is named in: the working directory for a relative
/// path of one component (whose `parent` is empty).
fn parent_of(path: &Path) -> Option<&Path> {
    path.parent().map(|p| {
        if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        }
    })
}

pub(super) fn root_error(root: &Path, e: io::Error) -> Error {
    not_opened(root, e)
}

/// Why the directory at `path` did not open as one (`e`): a symlink (never
/// followed: one to a directory is refused as not being one), not a
/// directory, or an I/O error.
fn not_opened(path: &Path, e: io::Error) -> Error {
    let not_a_directory = e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error());
    let is_link = || {
        std::fs::symlink_metadata(without_trailing_slashes(path))
            .is_ok_and(|meta| meta.file_type().is_symlink())
    };
    if is_symlink_refusal(&e) || (not_a_directory && is_link()) {
        invalid(path, "is a symlink; the store follows none")
    } else if not_a_directory {
        invalid(path, "not a directory")
    } else {
        Error::io("open directory", path, e)
    }
}

/// The store's directory `name`, open.
fn open_area(fs: &Fs, root: &Dir, name: &str) -> Result<Dir> {
    fs.open_dir(root, OsStr::new(name))
        .map_err(|e| dir_error(root, name, e))
}

/// The marker's name as a task id: its temp file is named like a task's,
/// so that the temp-file cleanup takes the stripe lock its writer holds.
pub(super) fn marker_id() -> TaskId {
    TaskId::parse(MARKER).expect("the marker name is a valid id")
}

fn dir_error(root: &Dir, name: &str, e: io::Error) -> Error {
    not_opened(&root.join(name), e)
}

/// Refuses to make a store in a directory that holds files of its own,
/// unless told to: only an empty directory, a store that lost its marker
/// ([`is_a_store`]), or one a first open left half made (only the store's
/// own directories, its task areas empty) becomes a store unasked.
fn check_adoptable(fs: &Fs, root: &Dir, names: &[std::ffi::OsString], allowed: bool) -> Result<()> {
    if allowed {
        return Ok(());
    }
    let refuse = |count: usize, example: &OsStr| {
        Err(invalid(
            root.path(),
            &format!(
                "holds {count} other entries (such as {example:?}) and no {MARKER}: not a \
                 store; open an empty or new directory, or allow it with \
                 FileStoreBuilder::create_in_non_empty_dir(true)"
            ),
        ))
    };
    let foreign: Vec<_> = names
        .iter()
        .filter(|n| !matches!(RootName::of(n), RootName::Dir | RootName::Harmless))
        .collect();
    if let Some(first) = foreign.first() {
        return refuse(foreign.len(), first);
    }
    if is_a_store(names) {
        return Ok(());
    }
    // Directories of the store's names alone: a store another open is
    // making has nothing in them yet (no task is written before the
    // marker); another program's `active/` or `done/` has files.
    for area in ["active", "done"] {
        if !names.iter().any(|n| n == area) {
            continue;
        }
        let dir = open_area(fs, root, area)?;
        let held = fs
            .read_dir(&dir)
            .map_err(|e| Error::io("read directory", dir.path(), e))?;
        // Unless another open finished the store since the names were
        // read (and a task came in): then its marker is there.
        if let Some(first) = held.first()
            && fs.stat(root, OsStr::new(MARKER)).is_err()
        {
            return refuse(held.len(), &dir.path().join(first).into_os_string());
        }
    }
    Ok(())
}

/// Creates the directory `name` in `root` if it is missing; `true` if it
/// was created.
fn ensure_dir(fs: &Fs, root: &Dir, name: &OsStr) -> Result<bool> {
    match fs.create_dir(root, name) {
        Ok(()) => Ok(true),
        // There already (a symlink or a file there is refused when opened).
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        // A read-only store that has it already.
        Err(e) if fs.stat(root, name).is_ok() => {
            tracing::debug!(dir = %root.join(name).display(), error = %e, "not created: already there");
            Ok(false)
        }
        Err(e) => Err(Error::io("create directory", root.join(name), e)),
    }
}

fn sync_dir(fs: &Fs, dir: &Dir) -> Result<()> {
    fs.sync_dir(dir)
        .map_err(|e| Error::io("fsync directory", dir.path(), e))
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

/// Checks the store's format marker, writing it on first open (durably,
/// whatever the durability of task writes: it is written once).
fn ensure_marker(store: &FileBackend) -> Result<()> {
    if let Some(format) = read_marker(&store.fs, &store.root_dir)? {
        return check_format(store, format);
    }
    let id = marker_id();
    let _guard = store.locks.lock(&store.fs, stripe(&id))?;
    if let Some(format) = read_marker(&store.fs, &store.root_dir)? {
        return check_format(store, format);
    }
    write_marker(store, &id)
}

/// Writes the marker of this format, durably.
pub(super) fn write_marker(store: &FileBackend, id: &TaskId) -> Result<()> {
    store.replace_file(
        id,
        &store.root_dir,
        OsStr::new(MARKER),
        marker_bytes(STORE_FORMAT).as_bytes(),
        Durability::Immediate,
    )?;
    sync_dir(&store.fs, &store.root_dir)
}

fn marker_bytes(format: u64) -> String {
    format!("{{\"format\":{format},\"kind\":\"taskstore\"}}\n")
}

/// Gives a store of format 1 that lost its marker one again, durably,
/// unless another open has given it one meanwhile (left as it is: that
/// open's format 1, or its format 2 once it moved the store). The marker
/// then says what the store is whatever this open makes next.
fn restore_marker_of_format_1(fs: &Fs, root: &Dir) -> Result<()> {
    let (locks, tmp) = (
        StripeLocks::new(open_area(fs, root, "locks")?, STRIPE_WAIT),
        open_area(fs, root, "tmp")?,
    );
    let id = marker_id();
    // The stripe the cleanup of its temp file takes, as `ensure_marker`'s.
    let _guard = locks.lock(fs, stripe(&id))?;
    let marker = (root, OsStr::new(MARKER));
    let bytes = marker_bytes(1);
    write::put_file(
        fs,
        &tmp,
        &id,
        marker,
        bytes.as_bytes(),
        Durability::Immediate,
        Put::New,
    )?;
    sync_dir(fs, root)
}

pub(super) fn read_marker(fs: &Fs, root: &Dir) -> Result<Option<u64>> {
    let name = OsStr::new(MARKER);
    let path = root.join(name);
    let mut file = match fs.open_read(root, name) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if is_symlink_refusal(&e) => {
            return Err(invalid(
                &path,
                &format!("the store marker is a symlink; the store follows none ({REMOVE_MARKER})"),
            ));
        }
        Err(e) => return Err(Error::io("open", &path, e)),
    };
    let bytes = match fs.read_to_end(&mut file, &path, MAX_MARKER_BYTES) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::IsADirectory => {
            return Err(invalid(
                &path,
                &format!("the store marker is a directory ({REMOVE_MARKER})"),
            ));
        }
        Err(e) => return Err(Error::io("read", &path, e)),
    };
    let marker: Marker = serde_json::from_slice(&bytes).map_err(|e| {
        invalid(
            &path,
            &format!("unreadable store marker: {e} ({REMOVE_MARKER})"),
        )
    })?;
    Ok(Some(marker.format))
}

/// How a marker that does not read is fixed: an open writes a missing one
/// (with the store's directories there, it is still a store).
const REMOVE_MARKER: &str = "remove it: the next open writes it again";

fn check_format(store: &FileBackend, found: u64) -> Result<()> {
    if found > STORE_FORMAT {
        return Err(Error::UnsupportedFormat {
            path: store.root_dir.join(MARKER),
            found,
            supported: STORE_FORMAT,
        });
    }
    if found < STORE_FORMAT {
        // An older store this handle could not move (it was not alone).
        return Err(invalid(
            &store.root_dir.join(MARKER),
            &format!("format {found} was not moved to format {STORE_FORMAT}"),
        ));
    }
    Ok(())
}

/// Resolves every task that has a copy in both `active/` and `done/` (a
/// power loss in the middle of a terminal move), keeping the copy the read
/// rule picks: one `stat` in `done/` per name in `active/`, no read unless
/// there are two copies. Listings can then trust `active/` alone.
///
/// Best effort on a store that cannot be written: returns the tasks it
/// could not resolve, which every read, `get` and listings alike, then
/// resolves by the same rule (see `FileBackend::unresolved`). Adds each
/// task it resolved to `resolved`: leftovers of crashed writers, which
/// the handle's first sweep counts among those it cleaned, as a census
/// counts the interrupted moves among them before the open.
fn resolve_stale_copies(store: &FileBackend, resolved: &mut usize) -> Result<BTreeSet<TaskId>> {
    let mut unresolved = BTreeSet::new();
    let pass = crate::file::lock::Pass::default();
    let active = store.dir(Area::Active);
    let done = store.dir(Area::Done);
    let names = store
        .fs
        .read_dir(active)
        .map_err(|e| Error::io("read directory", active.path(), e))?;
    for name in names {
        let Some(id) = layout::task_file_id(&name) else {
            continue;
        };
        match store.fs.stat(done, &name) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("stat", done.join(&name), e)),
            Ok(_) => {}
        }
        let tidied = store
            .locks
            .lock_in(&store.fs, stripe(&id), Some(&pass))
            .and_then(|_guard| match store.find(&id)? {
                // Resolved meanwhile by another handle: nothing to count.
                Some(found) if found.stale.is_some() || found.is_interrupted_move() => {
                    store.tidy(&found).map(|()| true)
                }
                _ => Ok(false),
            });
        match tidied {
            Ok(false) => {}
            Ok(true) => {
                *resolved += 1;
                tracing::info!(task = %id, "resolved a task left in both active/ and done/");
            }
            Err(e) => {
                tracing::warn!(task = %id, error = %e, "could not resolve a task left in both active/ and done/");
                unresolved.insert(id);
            }
        }
    }
    Ok(unresolved)
}
