//! Power cuts on real file systems: every call that returned `Ok` under
//! `Durability::Immediate` must still be there after the power goes.
//!
//! # Method
//!
//! For each of ext4, ext4 without a journal, ext2, xfs and btrfs (those
//! whose tools are installed), a fresh file system is made in a sparse image
//! file (in `/dev/shm` if it has room), attached to a loop device and
//! mounted, and a `FileStore` is opened on it. A fixed script runs the first
//! open and then every kind of mutating call — create, update, complete,
//! complete of a task with a TTL (which links it into `expiring/` too),
//! fail, cancel, delete, renew_lease, renew_leases, claim (a second
//! handle's resumable task, its short lease lapsed on a `ManualClock`),
//! release, reap_orphans (that handle's plain task), sweep_expired (a
//! running task and a finished one, both expired), then 300 completions of
//! tasks with a TTL and a sweep of them (a batch under every stripe) —
//! twice: once in quick
//! succession, once with the file system synced before each call (tasks
//! whose last write was long committed, the common case, and a different
//! one: btrfs logs a rename out of a directory only if that directory was
//! logged since its last commit). The moment each call returns `Ok`, the
//! loop device's backing file is copied: nothing in between, no sync, no
//! unmount. Each copy is the device as a power cut at that instant leaves
//! it.
//!
//! Then each copy goes through what a reboot does — `e2fsck -fy` for ext2
//! and ext4 (replaying the journal, if any), a mount that replays the log
//! for xfs and btrfs (`xfs_repair`, `btrfs rescue zero-log` only if that
//! mount fails) — is mounted, and the store is reopened and checked against
//! every acknowledgement made before the cut:
//!
//! - each task exists with exactly the status, revision and payload the last
//!   call on it returned, or is gone if that call deleted or swept it (the
//!   check runs on a clock before any expiry, so a swept task still on disk
//!   would show);
//! - a task acknowledged terminal is terminal, and a later `cancel` returns
//!   `Transition::AlreadyTerminal` with the acknowledged task (first writer
//!   wins survives the cut);
//! - `get` and `list(ListQuery::all())` agree, and list no other task;
//! - nothing is torn: no file is set aside as corrupt;
//! - the first open's directories and files are all there;
//! - `verify` finds the reopened store whole (an `expiring/` entry whose
//!   task is gone aside, which the next sweep removes): above all, every
//!   finished task with a TTL still has its `expiring/` entry, without
//!   which no sweep would delete it.
//!
//! Lease renewals, claims and releases are held to the same promise as
//! every other write: they follow the whole protocol (FORMAT.md), so the
//! renewed, claimed or released lease survives.
//!
//! The failure message lists every broken acknowledgement, by file system
//! and cut, not just the first; a summary line per file system counts, for
//! each kind of call, the cuts that broke one of its acknowledgements.
//!
//! # Making it repeatable
//!
//! A change the store did not make durable still reaches the device if the
//! kernel writes it back before the copy, and then a missing fsync shows in
//! some runs only. So for the duration periodic writeback is turned off
//! (`vm.dirty_writeback_centisecs`, restored after), the live ext4 and
//! btrfs are mounted with a 300 s commit interval (default 5 s and 30 s),
//! `mkfs` writes ext4's inode tables (no kernel thread writes them while
//! the script runs), and ext2/ext4 get one block group and a fixed
//! directory hash seed (otherwise the store's directory lands in a block
//! group picked at random, and which freed inodes are reused changes from
//! run to run). Without a journal, ext4 reuses a freed inode only within
//! the wall-clock second it was freed in, so the calls whose freed inodes
//! the next call may reuse start just after a second begins. With that,
//! every missing fsync the script reaches shows in every run; only a
//! `sync` by another process at the wrong instant, or a call that takes
//! most of a second, can still hide one.
//!
//! # Limits
//!
//! Copying the image right after the acknowledgement simulates losing
//! everything the kernel has not yet sent to the device. It cannot show what
//! a real disk's own volatile cache does: reordering or dropping writes the
//! kernel has sent but the device has not yet made stable (a loop device
//! over a file in memory has no such cache, and its flushes are no-ops).
//! Nor does it cut in the middle of a call: the copies fall between calls.
//! It needs root, loop devices and the file systems' tools; without them it
//! prints why it skipped and passes, unless `TASKSTORE_REQUIRE_ROOT_TESTS=1`
//! (as CI sets), which makes any skip a failure.

mod check;
#[path = "../common/mod.rs"]
mod common;
mod machine;
mod record;
mod tally;

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use taskstore::{
    Durability, Event, EventSink, FileCheck, FileStore, ListQuery, ManualClock, NewTask,
    ProblemKind, Task, TaskEventKind, TaskId, TaskStatus, TaskStore, TaskUpdate, Transition,
};
use time::OffsetDateTime;
use time::macros::datetime;

use check::{Finding, check};
use machine::{FileSystem, Machine, WritebackPaused, say};
use record::record;
use tally::Tally;

/// Where the shared clock stands when the script starts.
const T0: OffsetDateTime = datetime!(2030-01-01 00:00 UTC);
/// The main handle's lease: never lapses during the script.
const OWNER_LEASE: Duration = Duration::from_secs(24 * 3600);

#[test]
fn acknowledged_calls_survive_a_power_cut() {
    let Some((mut skips, scratch, machine)) = machine::start("power_cut", "the power-cut test")
    else {
        return;
    };
    let _one_run = machine::one_run_at_a_time();
    let _writeback = WritebackPaused::start();

    let mut findings = Vec::new();
    let mut report = Vec::new();
    let mut tally = Tally::default();
    for fs in FileSystem::ALL {
        if let Some(why) = fs.missing_tools() {
            skips.skip(fs.name(), &why);
            continue;
        }
        let images = match record(&machine, fs, scratch.path()) {
            Ok(images) => images,
            Err(why) => {
                skips.skip(fs.name(), &why);
                continue;
            }
        };
        for image in &images {
            let checked = check(&machine, fs, image, scratch.path());
            tally.add(fs, image, &checked);
            report.extend(checked.findings.iter().map(Finding::to_string));
            if !checked.findings.is_empty() && !checked.repairs.is_empty() {
                report.push(format!(
                    "    (before reopening: {})",
                    checked.repairs.join("; ")
                ));
            }
            findings.extend(checked.findings);
            let _ = fs::remove_file(&image.path);
        }
    }
    tally.print();
    let mut failures: Vec<String> = skips.failure().into_iter().collect();
    if !findings.is_empty() {
        failures.push(format!(
            "{} acknowledged results broken by a power cut (or the store unreadable after one):\n{}",
            findings.len(),
            report.join("\n")
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
