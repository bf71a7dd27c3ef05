//! The damage the checks are tried on: each kind a store can suffer, how it is
//! planted and the problem `verify` reports for it (used by `verify` and `repair`).

use super::*;

/// A stripe that no task in the store at `dir` (a file in any of its
/// directories, a temp file's task, an index entry's task) maps to, nor
/// the ids other damage plants by name.
fn unused_stripe(dir: &Path) -> usize {
    let mut used: Vec<usize> = ["a-directory", "huge", "notes", "deep"]
        .iter()
        .map(|id| common::stripe(id))
        .collect();
    for sub in ["active", "done", "tmp", "expiring"] {
        for entry in fs::read_dir(dir.join(sub)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let id = match sub {
                "tmp" => name.split('.').next().unwrap().to_owned(),
                "expiring" => name.splitn(3, '.').nth(2).unwrap_or("").to_owned(),
                _ => name.trim_end_matches(".json").to_owned(),
            };
            used.push(common::stripe(&id));
        }
    }
    (0..64).find(|s| !used.contains(s)).expect("a free stripe")
}

/// One kind of damage: how to plant it, and what verify must report.
pub(crate) struct Damage {
    pub(crate) name: &'static str,
    pub(crate) plant: fn(&Path, &[Task]) -> PathBuf,
    pub(crate) problem: &'static str,
    /// `ProblemKind::severity`'s code: `problem`, or `leftover` (a crashed
    /// writer's, which the next open removes: verify lists it and passes).
    pub(crate) severity: &'static str,
}

/// Every kind of damage verify detects, each planted in a fresh store.
pub(crate) const DAMAGE: &[Damage] = &[
    Damage {
        name: "a corrupt task file",
        plant: |dir, tasks| {
            let path = task_path(dir, "done", &first(tasks, TaskStatus::Completed).id);
            fs::write(&path, b"{\"format\":1,\"task\":{\"taskId\":").unwrap();
            path
        },
        problem: "corrupt",
        severity: "problem",
    },
    Damage {
        name: "a file that holds another task",
        plant: |dir, tasks| {
            let done = first(tasks, TaskStatus::Completed);
            let failed = first(tasks, TaskStatus::Failed);
            let path = task_path(dir, "done", &failed.id);
            fs::copy(task_path(dir, "done", &done.id), &path).unwrap();
            path
        },
        problem: "wrong_id",
        severity: "problem",
    },
    Damage {
        name: "an interrupted move",
        plant: |dir, tasks| {
            let id = first(tasks, TaskStatus::Cancelled).id;
            let path = task_path(dir, "active", &id);
            fs::rename(task_path(dir, "done", &id), &path).unwrap();
            path
        },
        problem: "interrupted_move",
        severity: "unfinished",
    },
    Damage {
        name: "a stale running copy beside the terminal one",
        plant: |dir, _| {
            let store = open(dir);
            let task = store.create(NewTask::new()).unwrap();
            let running = fs::read(task_path(dir, "active", &task.id)).unwrap();
            assert!(store.complete(&task.id, json!(1)).unwrap().is_applied());
            let path = task_path(dir, "active", &task.id);
            fs::write(&path, running).unwrap();
            chmod(&path, 0o600);
            path
        },
        problem: "stale_copy",
        severity: "leftover",
    },
    Damage {
        name: "a damaged stale copy",
        plant: |dir, tasks| {
            let path = task_path(dir, "active", &first(tasks, TaskStatus::Failed).id);
            fs::write(&path, b"garbage").unwrap();
            chmod(&path, 0o600);
            path
        },
        problem: "stale_copy",
        severity: "problem",
    },
    Damage {
        name: "a stale index entry",
        plant: |dir, tasks| {
            // An expiring/ entry that is no task's file (a crash between a
            // delete's steps leaves one): a sweep removes it once due.
            let t = first(tasks, TaskStatus::Working);
            let name = format!("{}.60000.{}", t.created_at.unix_timestamp_nanos(), t.id);
            let path = dir.join("expiring").join(name);
            fs::write(&path, b"{}").unwrap();
            chmod(&path, 0o600);
            path
        },
        problem: "stale_index_entry",
        severity: "unfinished",
    },
    Damage {
        name: "a missing index entry",
        plant: |dir, _| {
            let store = open(dir);
            let t = store
                .create(NewTask::new().ttl(Duration::from_secs(3_600)))
                .unwrap();
            assert!(store.complete(&t.id, json!(1)).unwrap().is_applied());
            let index = fs::read_dir(dir.join("expiring"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.to_str().unwrap().ends_with(&format!(".{}", t.id)))
                .expect("the finished task's index entry");
            fs::remove_file(index).unwrap();
            task_path(dir, "done", &t.id)
        },
        problem: "missing_index_entry",
        severity: "problem",
    },
    Damage {
        name: "a corrupt finished task with a TTL",
        plant: |dir, _| {
            // Damaged in place: its expiring/ entry is a hard link to it
            // (FORMAT.md), so the entry holds the same damaged bytes.
            let store = open(dir);
            let t = store
                .create(NewTask::new().ttl(Duration::from_secs(3_600)))
                .unwrap();
            assert!(store.complete(&t.id, json!(1)).unwrap().is_applied());
            let path = task_path(dir, "done", &t.id);
            fs::write(&path, b"{\"format\":1,\"task\":{\"taskId\":").unwrap();
            assert_eq!(
                fs::metadata(&path).unwrap().nlink(),
                2,
                "linked from expiring/"
            );
            path
        },
        problem: "corrupt",
        severity: "problem",
    },
    Damage {
        name: "a dead writer's temp file",
        plant: |dir, tasks| {
            let id = first(tasks, TaskStatus::Working).id;
            let path = dir.join("tmp").join(format!("{id}.999999.3.tmp"));
            fs::write(&path, b"{\"format\":1,\"ta").unwrap();
            path
        },
        problem: "dead_temp",
        severity: "leftover",
    },
    Damage {
        name: "a temp file whose stripe lock cannot be opened",
        plant: |dir, tasks| {
            // A directory where the stripe's lock file belongs: the lock
            // cannot be taken, so whether the temp file's writer is alive
            // cannot be told (the directory itself is a not_a_file).
            let id = first(tasks, TaskStatus::Working).id;
            let path = dir.join("tmp").join(format!("{id}.999999.5.tmp"));
            fs::write(&path, b"{\"format\":1,\"ta").unwrap();
            chmod(&path, 0o600);
            let lock = common::stripe_lock(dir, id.as_str());
            let _ = fs::remove_file(&lock);
            fs::create_dir(&lock).unwrap();
            chmod(&lock, 0o700);
            path
        },
        problem: "unreadable",
        severity: "problem",
    },
    Damage {
        name: "a foreign file among the tasks",
        plant: |dir, _| {
            let path = dir.join("active").join("notes.txt");
            fs::write(&path, b"mine").unwrap();
            path
        },
        problem: "foreign",
        severity: "problem",
    },
    Damage {
        name: "a foreign file in tmp/",
        plant: |dir, _| {
            let path = dir.join("tmp").join("scratch");
            fs::write(&path, b"mine").unwrap();
            path
        },
        problem: "foreign",
        severity: "problem",
    },
    Damage {
        name: "a foreign file at the root",
        plant: |dir, _| {
            let path = dir.join("README.txt");
            fs::write(&path, b"mine").unwrap();
            path
        },
        problem: "foreign",
        severity: "problem",
    },
    Damage {
        name: "a task file readable by others",
        plant: |dir, tasks| {
            let path = task_path(dir, "active", &first(tasks, TaskStatus::Working).id);
            chmod(&path, 0o644);
            path
        },
        problem: "mode",
        severity: "problem",
    },
    Damage {
        name: "a directory readable by others",
        plant: |dir, _| {
            let path = dir.join("done");
            chmod(&path, 0o755);
            path
        },
        problem: "mode",
        severity: "problem",
    },
    Damage {
        name: "a marker readable by others",
        plant: |dir, _| {
            let path = dir.join("taskstore.json");
            chmod(&path, 0o644);
            path
        },
        problem: "mode",
        severity: "problem",
    },
    Damage {
        name: "a symlink for a task file",
        plant: |dir, tasks| {
            let path = task_path(dir, "active", &first(tasks, TaskStatus::InputRequired).id);
            fs::remove_file(&path).unwrap();
            std::os::unix::fs::symlink("/etc/hostname", &path).unwrap();
            path
        },
        problem: "symlink",
        severity: "problem",
    },
    Damage {
        name: "a symlink for a lock file",
        plant: |dir, _| {
            // A stripe no task planted so far or later uses: a task whose
            // lock cannot be taken cannot be checked, which is not what
            // this damage is about.
            let path = dir
                .join("locks")
                .join(format!("{:02}.lock", unused_stripe(dir)));
            let _ = fs::remove_file(&path);
            std::os::unix::fs::symlink("/tmp", &path).unwrap();
            path
        },
        problem: "symlink",
        severity: "problem",
    },
    Damage {
        name: "a symlink for one of the store's directories",
        plant: |dir, _| {
            let path = dir.join("quarantine");
            fs::remove_dir(&path).unwrap();
            std::os::unix::fs::symlink("/tmp", &path).unwrap();
            path
        },
        problem: "symlink",
        severity: "problem",
    },
    Damage {
        name: "a missing directory",
        plant: |dir, _| {
            let path = dir.join("quarantine");
            fs::remove_dir(&path).unwrap();
            path
        },
        problem: "missing",
        severity: "problem",
    },
    Damage {
        name: "a missing marker",
        plant: |dir, _| {
            let path = dir.join("taskstore.json");
            fs::remove_file(&path).unwrap();
            path
        },
        problem: "missing",
        severity: "problem",
    },
    Damage {
        name: "an unreadable marker",
        plant: |dir, _| {
            let path = dir.join("taskstore.json");
            fs::write(&path, b"{\"format\":").unwrap();
            path
        },
        problem: "bad_marker",
        severity: "problem",
    },
    Damage {
        name: "a marker of a newer format",
        plant: |dir, _| {
            let path = dir.join("taskstore.json");
            fs::write(&path, b"{\"format\":9,\"kind\":\"taskstore\"}\n").unwrap();
            path
        },
        problem: "newer_format",
        severity: "problem",
    },
    Damage {
        name: "a task file of a newer format",
        plant: |dir, tasks| {
            let path = task_path(dir, "done", &first(tasks, TaskStatus::Completed).id);
            let bytes = fs::read(&path).unwrap();
            let newer =
                String::from_utf8(bytes)
                    .unwrap()
                    .replacen("{\"format\":1,", "{\"format\":2,", 1);
            fs::write(&path, newer).unwrap();
            path
        },
        problem: "newer_format",
        severity: "problem",
    },
    Damage {
        name: "a running task in done/",
        plant: |dir, tasks| {
            let id = first(tasks, TaskStatus::Working).id;
            let path = task_path(dir, "done", &id);
            fs::rename(task_path(dir, "active", &id), &path).unwrap();
            path
        },
        problem: "misplaced",
        severity: "problem",
    },
    Damage {
        name: "a task file larger than any store writes",
        plant: |dir, _| {
            // Sparse: 1 GiB and 1 MiB of nothing, refused before it is read.
            let path = dir.join("done").join("huge.json");
            let file = fs::File::create(&path).unwrap();
            file.set_len((1 << 30) + (1 << 20)).unwrap();
            chmod(&path, 0o600);
            path
        },
        problem: "too_large",
        severity: "problem",
    },
    Damage {
        name: "a file for one of the store's directories",
        plant: |dir, _| {
            let path = dir.join("tmp");
            fs::remove_dir(&path).unwrap();
            fs::write(&path, b"").unwrap();
            path
        },
        problem: "not_a_directory",
        severity: "problem",
    },
    Damage {
        name: "a directory for a task file",
        plant: |dir, _| {
            let path = dir.join("done").join("a-directory.json");
            fs::create_dir(&path).unwrap();
            path
        },
        problem: "not_a_file",
        severity: "problem",
    },
];
