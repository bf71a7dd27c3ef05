//! A process out of a resource the kernel rations: threads, open files.
//! Each test runs its store in a child (this test binary again, see
//! `common::spawn`) that lowers its own limit with `setrlimit` once the
//! store is made, so that the limit holds that process alone. Whatever runs
//! out, a call fails with an error naming what failed, or does its work
//! another way; none panics, and once the resource is back the same handle
//! does everything again.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use taskstore::{Durability, FileStore, ListQuery, ManualClock, NewTask, TaskId, TaskStore};
use time::macros::datetime;

/// Running tasks, and as many finished ones: a pass over either is large
/// enough to be shared among threads (256 items and up).
const TASKS: usize = 300;

/// The user a child that starts as root becomes, so that `RLIMIT_NPROC`
/// holds it (root is not held by it): `nobody`.
const NOBODY: libc::uid_t = 65534;

/// Sets the soft limit `resource` to `soft` (the hard one stays); returns
/// the soft limit it had.
fn set_soft_limit(resource: libc::__rlimit_resource_t, soft: libc::rlim_t) -> libc::rlim_t {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid `rlimit` for the call to fill and read.
    assert_eq!(unsafe { libc::getrlimit(resource, &mut limit) }, 0);
    let had = limit.rlim_cur;
    limit.rlim_cur = soft;
    // SAFETY: as above.
    let set = unsafe { libc::setrlimit(resource, &limit) };
    assert_eq!(set, 0, "setrlimit: {}", std::io::Error::last_os_error());
    had
}

/// Whether this process runs as root.
fn is_root() -> bool {
    // SAFETY: `geteuid` has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

// ---------------------------------------------------------------------------
// Threads.

/// A process that can start no more threads (`RLIMIT_NPROC` reached, as a
/// cgroup's `pids.max` or a busy host does it) still lists, renews and
/// sweeps hundreds of tasks: the passes large enough to be shared among
/// threads run on the calling thread instead (they panicked in
/// `Scope::spawn`: "failed to spawn thread"), and say so once. Once threads
/// can be had again, the same handles go on.
#[test]
fn passes_over_many_tasks_go_on_when_no_thread_can_be_started() {
    if let Some((role, args)) = common::role() {
        assert_eq!(role, "no_threads");
        return no_threads(Path::new(&args[0]));
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    if is_root() {
        // The child becomes `nobody`: the store's parent is given to it.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(&store).unwrap();
        std::os::unix::fs::chown(&store, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let test = "passes_over_many_tasks_go_on_when_no_thread_can_be_started";
    common::spawn(
        tmp.path(),
        test,
        "no_threads",
        &[store.display().to_string()],
    )
    .finish();
}

/// The child of [`passes_over_many_tasks_go_on_when_no_thread_can_be_started`].
fn no_threads(store: &Path) {
    if is_root() {
        // SAFETY: plain system calls; glibc applies them to every thread.
        unsafe {
            assert_eq!(libc::setgroups(0, std::ptr::null()), 0);
            assert_eq!(
                libc::setgid(NOBODY),
                0,
                "{}",
                std::io::Error::last_os_error()
            );
            assert_eq!(
                libc::setuid(NOBODY),
                0,
                "{}",
                std::io::Error::last_os_error()
            );
        }
    }
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let open = || {
        FileStore::builder(store)
            .instance_id("owner")
            .clock(Arc::new(clock.clone()))
            .durability(Durability::Eventual)
            .open()
            .unwrap()
    };
    let owner = open();
    let mut running: Vec<TaskId> = (0..TASKS)
        .map(|_| owner.create(NewTask::new()).unwrap().id)
        .collect();
    running.sort();
    let ttl = Duration::from_secs(60);
    let finished = common::finished_with_ttl(&owner, TASKS, ttl);

    let logged = common::Logged::default();
    let had = set_soft_limit(libc::RLIMIT_NPROC, 1);
    assert!(
        std::thread::Builder::new().spawn(|| ()).is_err(),
        "the child can still start threads: it tests nothing"
    );
    tracing::subscriber::with_default(logged.clone(), || {
        // A handle's first listing reads every running task's file.
        let fresh = open();
        assert_eq!(common::ids_of(&fresh, &ListQuery::active()).len(), TASKS);
        assert_eq!(common::ids_of(&fresh, &ListQuery::all()).len(), 2 * TASKS);
        // A renewal writes every lease in one batch.
        assert_eq!(owner.renew_leases().unwrap(), TASKS);
        clock.advance(ttl * 2);
        assert_eq!(owner.sweep_expired().unwrap(), TASKS);
    });
    let said = logged.warnings_of("cannot start a thread");
    assert_eq!(said.len(), 1, "said once: {:?}", logged.warnings());
    assert!(
        said[0]
            .field("error")
            .is_some_and(|e| e.contains("Resource temporarily unavailable")),
        "{:?}",
        said[0]
    );

    set_soft_limit(libc::RLIMIT_NPROC, had);
    let mut listed = common::ids_of(&owner, &ListQuery::active());
    listed.sort();
    assert_eq!(listed, running);
    assert!(finished.iter().all(|id| owner.get(id).unwrap().is_none()));
    assert_eq!(owner.renew_leases().unwrap(), TASKS);
}
