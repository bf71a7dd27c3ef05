//! A process out of a resource the kernel rations: threads, open files,
//! inotify instances and watches. Each test runs its store in a child (this
//! test binary again, see `common::spawn`) that lowers a limit for itself
//! alone: its own `setrlimit` once the store is made, or the inotify limits
//! of a user namespace of its own. Whatever runs out, a call fails with an
//! error naming what failed, or does its work another way; none panics,
//! and once the resource is back the same handle does everything again.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use taskstore::{
    Durability, FileStore, ListQuery, ManualClock, NewTask, TaskId, TaskStatus, TaskStore,
    TaskUpdate,
};
use time::macros::datetime;

use common::{lowest_free_descriptor, set_soft_limit};

/// Running tasks, and as many finished ones: a pass over either is large
/// enough to be shared among threads (256 items and up).
const TASKS: usize = 300;

/// The user a child that starts as root becomes, so that `RLIMIT_NPROC`
/// holds it (root is not held by it): `nobody`.
const NOBODY: libc::uid_t = 65534;

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
    let test = "passes_over_many_tasks_go_on_when_no_thread_can_be_started";
    in_a_child_held_by_nproc(test, "no_threads");
}

/// Runs `test` as `role` in a child, on a store of its own (its path the
/// child's one argument), which the child may write once it becomes
/// `nobody` ([`become_held_by_nproc`]).
fn in_a_child_held_by_nproc(test: &str, role: &str) {
    in_a_child(test, role, true);
}

/// Runs `test` as `role` in a child, on a store of its own (`store` in the
/// temp dir returned, its path the child's one argument), given to
/// `nobody` first if `for_nobody`.
fn in_a_child(test: &str, role: &str, for_nobody: bool) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    if for_nobody && is_root() {
        // The child becomes `nobody`: the store's parent is given to it.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(&store).unwrap();
        std::os::unix::fs::chown(&store, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    common::spawn(tmp.path(), test, role, &[store.display().to_string()]).finish();
    (tmp, store)
}

/// Makes this process one `RLIMIT_NPROC` holds: `nobody`, if it runs as
/// root (root is not held by it).
fn become_held_by_nproc() {
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
}

/// The child of [`passes_over_many_tasks_go_on_when_no_thread_can_be_started`].
fn no_threads(store: &Path) {
    become_held_by_nproc();
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

/// An MCP server whose process can start no thread (`RLIMIT_NPROC`
/// reached) while Tokio's blocking pool has none still makes, runs,
/// renews and records its tasks: the manager's store calls run on the
/// calling task's thread instead, and say so once. (`spawn_blocking`
/// panicked, "OS can't spawn worker thread": a spawn failed, and a renewal
/// or a look that panicked so left its run marked as under way, never
/// renewed or looked at again.) Once threads can be had again, calls go
/// back to the pool.
#[cfg(feature = "mcp")]
#[test]
fn an_mcp_server_that_can_start_no_thread_still_runs_its_tasks() {
    let test = "an_mcp_server_that_can_start_no_thread_still_runs_its_tasks";
    if let Some((role, args)) = common::role() {
        assert_eq!(role, "mcp_no_threads");
        return mcp_no_threads(Path::new(&args[0]));
    }
    in_a_child_held_by_nproc(test, "mcp_no_threads");
}

#[cfg(feature = "mcp")]
fn mcp_no_threads(store: &Path) {
    use rmcp::model::{CallToolResult, ContentBlock, TaskPayload};
    use taskstore::mcp::{DurableTaskManager, ManagerOptions, TaskOptions};

    become_held_by_nproc();
    let handle = Arc::new(
        FileStore::builder(store)
            .instance_id("server")
            .open()
            .unwrap(),
    );
    let logged = common::Logged::default();
    let had = set_soft_limit(libc::RLIMIT_NPROC, 1);
    assert!(
        std::thread::Builder::new().spawn(|| ()).is_err(),
        "the child can still start threads: it tests nothing"
    );
    // A runtime of no thread but this one: its blocking pool has none.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::subscriber::with_default(logged.clone(), || {
        runtime.block_on(async {
            let options = ManagerOptions::new()
                .watch_interval(Duration::from_millis(10))
                .renew_interval(Duration::from_millis(10));
            let manager = DurableTaskManager::with_options(Arc::clone(&handle), options);
            let (go, gone) = tokio::sync::oneshot::channel::<()>();
            let task = manager
                .spawn(TaskOptions::new(), move |_| {
                    Box::pin(async move {
                        let _ = gone.await;
                        Ok(CallToolResult::success(vec![ContentBlock::text("done")]))
                    })
                })
                .await
                .expect("the task is made");
            let id = TaskId::parse(&task.task_id).unwrap();
            // Renewed by the manager's loop (each renewal moves the lease).
            let first = handle.get(&id).unwrap().unwrap().lease_expires_at;
            for _ in 0..3_000 {
                if handle.get(&id).unwrap().unwrap().lease_expires_at > first {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let renewed = handle.get(&id).unwrap().unwrap().lease_expires_at;
            assert!(renewed > first, "the lease was never renewed");
            go.send(()).unwrap();
            for _ in 0..3_000 {
                let got = manager.get_task(&task.task_id).await.unwrap();
                if let TaskPayload::Completed { .. } = got.payload {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let got = manager.get_task(&task.task_id).await.unwrap();
            assert!(
                matches!(got.payload, TaskPayload::Completed { .. }),
                "{got:?}"
            );
            let said = logged.warnings_of("cannot start a thread");
            assert_eq!(said.len(), 1, "said once: {:?}", logged.warnings());
            // Threads again: a finished task's read goes to the pool.
            set_soft_limit(libc::RLIMIT_NPROC, had);
            let back = || {
                let mut events = logged.events();
                events.retain(|e| {
                    e.field("message")
                        .is_some_and(|m| m.contains("threads can be started again"))
                });
                events
            };
            for _ in 0..3_000 {
                if !back().is_empty() {
                    break;
                }
                manager.get_task(&task.task_id).await.unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(back().len(), 1, "said once, back on the pool");
            manager.shutdown().await;
        });
    });
}

// ---------------------------------------------------------------------------
// Open files.

/// Running tasks in the open-files test.
const HELD: usize = 20;

/// A process out of file descriptors (`RLIMIT_NOFILE` reached) cannot read
/// the task files its listing must read again: the listing fails with an
/// I/O error naming the file and `EMFILE`, and so does a renewal, rather
/// than answering without those tasks (they were reported as unreadable
/// files, and `renew_leases` returned `Ok(0)`, renewing none of the
/// handle's tasks in silence: a host took its leases as renewed while they
/// lapsed). Nothing is set aside, and once descriptors are free again the
/// same handle lists and renews every task.
#[test]
fn a_listing_and_a_renewal_out_of_descriptors_fail_naming_the_file() {
    if let Some((role, args)) = common::role() {
        assert_eq!(role, "no_descriptors");
        return no_descriptors(Path::new(&args[0]));
    }
    let test = "a_listing_and_a_renewal_out_of_descriptors_fail_naming_the_file";
    let (_tmp, store) = in_a_child(test, "no_descriptors", false);
    assert!(common::files_in(&store, "quarantine").is_empty());
    assert!(common::files_in(&store, "tmp").is_empty());
}

/// The child of [`a_listing_and_a_renewal_out_of_descriptors_fail_naming_the_file`].
fn no_descriptors(store: &Path) {
    let owner = FileStore::builder(store)
        .instance_id("owner")
        .open()
        .unwrap();
    let other = FileStore::builder(store)
        .instance_id("other")
        .change_notices(false)
        .open()
        .unwrap();
    let mut running: Vec<TaskId> = (0..HELD)
        .map(|_| owner.create(NewTask::new()).unwrap().id)
        .collect();
    running.sort();
    assert_eq!(common::ids_of(&owner, &ListQuery::active()).len(), HELD);
    // Changed by another handle: the owner's next listing reads them again.
    for id in &running {
        let update = TaskUpdate::new().status_message("changed elsewhere");
        assert!(other.update(id, update).unwrap().is_applied());
    }
    drop(other);

    let had = set_soft_limit(libc::RLIMIT_NOFILE, lowest_free_descriptor());
    let listed = owner.list(&ListQuery::active());
    let renewed = owner.renew_leases();
    set_soft_limit(libc::RLIMIT_NOFILE, had);

    let active = store.join("active");
    let wrong: Vec<String> = [
        (
            "a listing",
            listed.map(|page| {
                let first = page.skipped.first().map(|s| s.reason.clone());
                format!(
                    "{} tasks, {} files skipped (the first: {first:?})",
                    page.tasks.len(),
                    page.skipped.len()
                )
            }),
        ),
        ("a renewal", renewed.map(|n| format!("{n} leases renewed"))),
    ]
    .into_iter()
    .filter_map(|(call, outcome)| match outcome {
        Err(taskstore::Error::Io { path, source, .. })
            if source.raw_os_error() == Some(libc::EMFILE) && path.starts_with(&active) =>
        {
            None
        }
        Err(e) => Some(format!("{call} failed otherwise: {e}")),
        Ok(answer) => Some(format!("{call} answered Ok: {answer}")),
    })
    .collect();
    assert!(
        wrong.is_empty(),
        "out of descriptors:\n{}",
        wrong.join("\n")
    );
    let mut listed = common::ids_of(&owner, &ListQuery::active());
    listed.sort();
    assert_eq!(listed, running);
    assert_eq!(owner.renew_leases().unwrap(), HELD);
}

/// Running tasks past the snapshot's budget: more than the 64 it keeps
/// decoded, so that each listing reads their files.
const PAST_BUDGET: usize = 65;

/// The tasks whose files a handle's snapshot has no room for (past its 64
/// MiB of file bytes) are read by every listing that returns them: out of
/// descriptors, such a listing fails naming the file and `EMFILE` too
/// (it answered without them, each reported as an unreadable file). Once
/// descriptors are free again, the next listing has them all.
#[test]
fn a_listing_out_of_descriptors_fails_for_tasks_past_the_snapshots_budget_too() {
    if let Some((role, args)) = common::role() {
        assert_eq!(role, "past_the_budget");
        return past_the_budget(Path::new(&args[0]));
    }
    let test = "a_listing_out_of_descriptors_fails_for_tasks_past_the_snapshots_budget_too";
    in_a_child(test, "past_the_budget", false);
}

/// The child of
/// [`a_listing_out_of_descriptors_fails_for_tasks_past_the_snapshots_budget_too`].
fn past_the_budget(store: &Path) {
    let open = || {
        FileStore::builder(store)
            .durability(Durability::Eventual)
            .max_payload_bytes(40 << 20)
            .open()
            .unwrap()
    };
    let (writer, reader) = (open(), open());
    common::fill_the_snapshot_budget(&writer, store, || {});
    assert_eq!(common::ids_of(&reader, &ListQuery::active()).len(), 2);
    for _ in 0..PAST_BUDGET {
        writer.create(NewTask::new()).unwrap();
    }
    let mut all = common::ids_of(&writer, &ListQuery::active());
    all.sort();
    assert_eq!(
        common::ids_of(&reader, &ListQuery::active()).len(),
        all.len()
    );

    let had = set_soft_limit(libc::RLIMIT_NOFILE, lowest_free_descriptor());
    let listed = reader.list(&ListQuery::active());
    set_soft_limit(libc::RLIMIT_NOFILE, had);

    match listed {
        Err(taskstore::Error::Io { path, source, .. }) => {
            assert_eq!(source.raw_os_error(), Some(libc::EMFILE), "{source}");
            assert!(path.starts_with(store.join("active")), "{}", path.display());
        }
        Err(e) => panic!("a listing out of descriptors failed otherwise: {e}"),
        Ok(page) => panic!(
            "a listing out of descriptors answered Ok: {} of {} tasks, {} files skipped \
             (the first: {:?})",
            page.tasks.len(),
            all.len(),
            page.skipped.len(),
            page.skipped.first().map(|s| &s.reason)
        ),
    }
    let mut listed = common::ids_of(&reader, &ListQuery::active());
    listed.sort();
    assert_eq!(listed, all);
}

/// Finished tasks in the history test.
const FINISHED: usize = 10;

/// A listing of every task reads the files of the tasks finished since the
/// handle last looked, and of the finished tasks it returns: out of
/// descriptors, either read fails the listing, naming the file and
/// `EMFILE` (it answered with the running tasks alone, each finished one
/// reported as an unreadable file). Once descriptors are free again, the
/// next listing has them all. The same for a listing of one finished
/// status (`completed`), which reads history's files to filter them, in a
/// child of its own.
#[test]
fn a_listing_of_history_out_of_descriptors_fails_naming_the_file() {
    if let Some((role, args)) = common::role() {
        let status = match role.as_str() {
            "history" => None,
            "completed" => Some(TaskStatus::Completed),
            other => panic!("no role {other}"),
        };
        return history(Path::new(&args[0]), status);
    }
    let test = "a_listing_of_history_out_of_descriptors_fails_naming_the_file";
    in_a_child(test, "history", false);
    in_a_child(test, "completed", false);
}

/// The child of [`a_listing_of_history_out_of_descriptors_fails_naming_the_file`]:
/// its listings are of every task, or of those with `status`.
fn history(store: &Path, status: Option<TaskStatus>) {
    let query = || match status {
        Some(status) => ListQuery::all().status(status),
        None => ListQuery::all(),
    };
    let reader = FileStore::open(store).unwrap();
    let writer = FileStore::builder(store)
        .change_notices(false)
        .open()
        .unwrap();
    let all: Vec<TaskId> = (0..2 * FINISHED)
        .map(|_| writer.create(NewTask::new()).unwrap().id)
        .collect();
    assert_eq!(common::ids_of(&reader, &ListQuery::all()).len(), all.len());
    for id in &all[..FINISHED] {
        assert!(
            writer
                .complete(id, serde_json::json!(1))
                .unwrap()
                .is_applied()
        );
    }
    // The running tasks' part of a listing reads no file now: only
    // history's does.
    assert_eq!(
        common::ids_of(&reader, &ListQuery::active()).len(),
        FINISHED
    );
    let mut expected: Vec<TaskId> = match status {
        Some(_) => all[..FINISHED].to_vec(),
        None => all.clone(),
    };
    expected.sort();
    let done = store.join("done");
    // First the files finished since the last listing; then, nothing
    // changed since, the files of the finished tasks the page returns.
    for read in ["the tasks finished since", "the page's finished tasks"] {
        let had = set_soft_limit(libc::RLIMIT_NOFILE, lowest_free_descriptor());
        let listed = reader.list(&query());
        set_soft_limit(libc::RLIMIT_NOFILE, had);
        match listed {
            Err(taskstore::Error::Io { path, source, .. })
                if source.raw_os_error() == Some(libc::EMFILE) && path.starts_with(&done) => {}
            Err(e) => panic!("reading {read} out of descriptors, a listing failed otherwise: {e}"),
            Ok(page) => panic!(
                "reading {read} out of descriptors, a listing answered Ok: {} of {} tasks, {} \
                 files skipped (the first: {:?})",
                page.tasks.len(),
                expected.len(),
                page.skipped.len(),
                page.skipped.first().map(|s| &s.reason)
            ),
        }
        let page = reader.list(&query()).unwrap();
        assert!(page.skipped.is_empty(), "{:?}", page.skipped);
        let mut listed: Vec<TaskId> = page.tasks.into_iter().map(|t| t.id).collect();
        listed.sort();
        assert_eq!(listed, expected);
    }
}

// ---------------------------------------------------------------------------
// Change notices.

/// Rounds of writes another process makes in the change-notice test.
const ROUNDS: usize = 4;

/// A process the kernel refuses inotify (its user's limit of instances
/// reached, `EMFILE`, or of watches, `ENOSPC`) lists by file status: every
/// listing has every write another process made before it, and the handle
/// says so once, naming the directory and the error, however many
/// listings try again. The limits are set to 0 for the child alone: it
/// runs in a user namespace of its own (`unshare --user`), whose
/// `/proc/sys/user/max_inotify_*` hold it and no other process of the
/// machine.
#[test]
fn a_process_refused_change_notices_by_the_kernel_lists_every_write() {
    if let Some((role, args)) = common::role() {
        let store = Path::new(&args[0]);
        return match role.as_str() {
            "writer" => write_a_round(store),
            limit => refused_change_notices(store, limit),
        };
    }
    let test = "a_process_refused_change_notices_by_the_kernel_lists_every_write";
    for (limit, error) in [
        ("max_inotify_instances", "Too many open files"),
        ("max_inotify_watches", "No space left on device"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("store");
        let stderr = tmp.path().join("child.stderr");
        let ran = std::process::Command::new("unshare")
            .args(["--user", "--map-root-user", "--"])
            .arg(std::env::current_exe().unwrap())
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(common::ROLE_VAR, limit)
            .env(common::ARGS_VAR, store.display().to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .status();
        let said = std::fs::read_to_string(&stderr).unwrap_or_default();
        match ran {
            Ok(status) if status.success() => {
                assert!(said.contains(error), "{limit}: the child said {said}");
            }
            // `unshare` missing, or no user namespaces here.
            Ok(_) if !said.contains(test) => {
                common::Skips::from_env("resource_limits")
                    .skip_all("the change-notice limits test", said.trim());
                return;
            }
            Err(e) => {
                common::Skips::from_env("resource_limits")
                    .skip_all("the change-notice limits test", &format!("unshare: {e}"));
                return;
            }
            Ok(status) => panic!("{limit}: the child failed with {status}:\n{said}"),
        }
    }
}

/// The child of [`a_process_refused_change_notices_by_the_kernel_lists_every_write`],
/// in a user namespace of its own whose inotify `limit` it sets to 0.
fn refused_change_notices(store: &Path, limit: &str) {
    std::fs::write(format!("/proc/sys/user/{limit}"), "0").unwrap();
    let logged = common::Logged::default();
    tracing::subscriber::with_default(logged.clone(), || {
        let reader = FileStore::open(store).unwrap();
        let truth = FileStore::builder(store)
            .change_notices(false)
            .open()
            .unwrap();
        let test = "a_process_refused_change_notices_by_the_kernel_lists_every_write";
        let work = store.parent().unwrap();
        for _ in 0..ROUNDS {
            common::spawn(work, test, "writer", &[store.display().to_string()]).finish();
            for query in [ListQuery::active(), ListQuery::all()] {
                let listed = |store: &FileStore| {
                    let mut tasks = store.list(&query).unwrap().tasks;
                    tasks.sort_by(|a, b| a.id.cmp(&b.id));
                    tasks
                };
                assert_eq!(listed(&reader), listed(&truth), "{query:?}");
            }
        }
    });
    let said = logged.warnings_of("change notices");
    assert_eq!(said.len(), 1, "said once: {:?}", logged.warnings());
    let error = said[0].field("error").unwrap_or_default();
    assert_eq!(
        said[0].field("dir"),
        Some(&*store.join("active").display().to_string()),
        "{:?}",
        said[0]
    );
    // For the parent to check which error the kernel gave.
    eprintln!("refused: {error}");
}

/// A round of writes by another process: three tasks made, the oldest
/// running one finished, the next one updated.
fn write_a_round(store: &Path) {
    let writer = FileStore::builder(store)
        .change_notices(false)
        .open()
        .unwrap();
    let running = common::ids_of(&writer, &ListQuery::active());
    for _ in 0..3 {
        writer.create(NewTask::new()).unwrap();
    }
    if let Some(id) = running.first() {
        assert!(
            writer
                .complete(id, serde_json::json!(1))
                .unwrap()
                .is_applied()
        );
    }
    if let Some(id) = running.get(1) {
        let update = TaskUpdate::new().status_message("changed elsewhere");
        assert!(writer.update(id, update).unwrap().is_applied());
    }
}
