//! One bad file, one odd entry, one hostile swap never fails the whole store,
//! is never silently skipped, and never loses a task: every case of the
//! containment rules, on real files.

mod clock;
#[path = "../common/mod.rs"]
mod common;
mod foreign_entries;
mod places;
mod read_only;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::json;
use taskstore::backend::UnreadableAction;
use taskstore::{
    Error, EventLog, FileCheck, FileStore, ListQuery, ManualClock, NewTask, Task, TaskEventKind,
    TaskId, TaskStatus, TaskStore,
};
use time::OffsetDateTime;

fn count(dir: &Path) -> usize {
    fs::read_dir(dir).map_or(0, |d| d.count())
}

fn task_path(root: &Path, area: &str, id: &TaskId) -> std::path::PathBuf {
    root.join(area).join(format!("{id}.json"))
}

/// Held by a test while it has a tmpfs mounted, and by every other process
/// spawn of this binary: a remount read-only fails ("mount point is busy")
/// while any process holds a file of it open for writing, and a child
/// another test forks holds copies of this process's descriptors until it
/// execs.
static SPAWNS: Mutex<()> = Mutex::new(());

fn spawns() -> MutexGuard<'static, ()> {
    SPAWNS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A file system mounted at `dir` (a tmpfs, or `dir` bound onto itself, on
/// the file system it is on), remounted read-only on demand, unmounted on
/// drop; no other test of this binary spawns a process meanwhile.
struct Mounted<'a> {
    dir: &'a Path,
    /// Bound onto itself, rather than a tmpfs.
    bind: bool,
    _alone: MutexGuard<'static, ()>,
}

impl Mounted<'_> {
    /// Mounts one, or says why it cannot (not root, no `mount`).
    fn mount(dir: &Path, bind: bool) -> Result<Mounted<'_>, String> {
        let alone = spawns();
        let uid = Command::new("id")
            .arg("-u")
            .output()
            .map_err(|e| format!("cannot run id: {e}"))?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Err("not running as root".into());
        }
        let mut mount = Command::new("mount");
        if bind {
            mount.arg("--bind").arg(dir);
        } else {
            mount.args(["-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs"]);
        }
        let status = mount
            .arg(dir)
            .status()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !status.success() {
            return Err(format!("mount failed: {status}"));
        }
        Ok(Mounted {
            dir,
            bind,
            _alone: alone,
        })
    }

    /// [`mount`](Self::mount), or `None` after saying why the test skips
    /// (a failure instead with `TASKSTORE_REQUIRE_ROOT_TESTS=1`).
    fn mount_or_skip(dir: &Path, bind: bool) -> Option<Mounted<'_>> {
        match Mounted::mount(dir, bind) {
            Ok(mount) => Some(mount),
            Err(why) => {
                common::Skips::from_env("containment")
                    .skip_all("a read-only store test (it mounts a file system)", &why);
                None
            }
        }
    }

    fn read_only(&self) {
        let options = if self.bind {
            "remount,bind,ro"
        } else {
            "remount,ro"
        };
        let status = Command::new("mount")
            .args(["-o", options])
            .arg(self.dir)
            .status()
            .unwrap();
        assert!(status.success(), "remount read-only");
    }
}

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir).status();
    }
}
