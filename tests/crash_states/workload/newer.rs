//! The newer batch paths' workload (large sweeps through the index, lease
//! batches, terminal moves settled stripe by stripe, a stripe another
//! process takes mid-batch).

use super::*;

/// The newer batch paths the other workloads reach with one task or not
/// at all, with the large paths taken from three tasks:
///
/// - a first large sweep, of due finished tasks (`remove_due`), after
///   which the handle knows `active/` settled (`settle_moves_once`);
/// - a claim of three orphans and a renewal of their leases by id (lease
///   batches of running tasks);
/// - terminal moves whose names in `active/` go without an fsync there:
///   two single completes and a reap of three orphans (a batch settled
///   stripe by stripe), all with TTLs that lapse later;
/// - under `Immediate`, three more orphans of that reap, h (a TTL past the
///   workload) and k (none), whose stripe another process (played by the
///   workload: a lock of the stripe's file taken while the batch is held at
///   its fsync of `expiring/`) takes between the halves of their moves, and
///   g (a TTL), whose stripe it takes at the batch's fsync of `done/`: the
///   batch settles the rest and leaves those three as a crash between the
///   halves would (h in `active/` alone, durably; k and g in both areas),
///   reported reaped; k and g are then deleted, and h's move finished by
///   the second sweep's clean-up before it is deleted too;
/// - a listing of history that gives two finished tasks their lost
///   `expiring/` entries back (`restore_missing_indexes`);
/// - a second large sweep that removes five of those through the index at
///   once (`remove_due`), which must make `active/` durable first: its
///   handle moved tasks since it last did (`settle_moves_once`).
pub fn newer_paths(durability: Durability) -> Run {
    let mut d = Driver::new(durability);
    d.large = 3;
    let owner = d.open("open (owner)", "owner", LONG_LEASE);
    for i in 0..3 {
        let id = format!("early{i}");
        create(&mut d, &owner, NewTask::new().id(tid(&id)).ttl(SHORT));
        d.act(
            &format!("complete {id}"),
            || owner.complete(&tid(&id), json!(i)).unwrap(),
            applied,
        );
    }
    d.act(
        "list active (the snapshot whole)",
        || owner.list(&ListQuery::active()).unwrap(),
        |_| Effect::Nothing,
    );
    d.clock.advance(LATER);
    d.step(
        "sweep_expired (three due)",
        || owner.sweep_expired().unwrap(),
        |n: &usize| {
            assert_eq!(*n, 3, "early0..2");
            Effect::Remove((0..3).map(|i| tid(&format!("early{i}"))).collect())
        },
    );
    let gone = d.open("open (gone)", "gone", SHORT);
    for i in 0..3 {
        let id = format!("c{i}");
        d.step(
            &format!("create {id} (gone, resumable)"),
            || {
                gone.create(
                    NewTask::new()
                        .id(tid(&id))
                        .resumable("convert", json!({"part": i})),
                )
                .unwrap()
            },
            put,
        );
    }
    for i in 0..3 {
        let id = format!("r{i}");
        d.step(
            &format!("create {id} (gone, a TTL past its reap)"),
            || {
                gone.create(NewTask::new().id(tid(&id)).ttl(LATER * 3))
                    .unwrap()
            },
            put,
        );
    }
    // Two more orphans in one stripe no other task of the workload is in,
    // one with a TTL past the workload (its name in `done/` waits for its
    // `expiring/` entry), one without (given its name in `done/` as it is
    // staged); and a third with a TTL, in a stripe of its own.
    let used: Vec<usize> = ["r0", "r1", "r2", "c0", "c1", "c2", "x0", "x1"]
        .iter()
        .map(|id| stripe_of(id))
        .collect();
    let mut free = (0..64).filter(|s| !used.contains(s));
    let (held, held_late) = (
        free.next().expect("a free stripe"),
        free.next().expect("another"),
    );
    let (h, k) = (id_in_stripe("h", held), id_in_stripe("k", held));
    let g = id_in_stripe("g", held_late);
    let day = Some(Duration::from_secs(86_400));
    for (id, ttl) in [(&h, day), (&k, None), (&g, day)] {
        let new = NewTask::new().id(id.clone());
        let new = match ttl {
            Some(ttl) => new.ttl(ttl),
            None => new,
        };
        d.step(
            &format!("create {id} (gone)"),
            || gone.create(new).unwrap(),
            put,
        );
    }
    drop(gone);
    for i in 0..2 {
        let id = format!("x{i}");
        create(&mut d, &owner, NewTask::new().id(tid(&id)).ttl(LATER * 3));
    }
    d.clock.advance(LATER);
    d.step(
        "claim (three)",
        || owner.claim(&["convert"]).unwrap().tasks,
        |claimed: &Vec<Task>| {
            assert_eq!(claimed.len(), 3, "claims c0..c2");
            Effect::Put(claimed.clone())
        },
    );
    d.clock.advance(TICK);
    d.step(
        "renew_leases_of (three)",
        || {
            let ids: Vec<TaskId> = (0..3).map(|i| tid(&format!("c{i}"))).collect();
            owner
                .renew_leases_of(&ids)
                .into_iter()
                .map(|t| {
                    let t = t.unwrap();
                    assert!(t.is_applied(), "{t:?}");
                    t.task().clone()
                })
                .collect::<Vec<Task>>()
        },
        |renewed: &Vec<Task>| Effect::Put(renewed.clone()),
    );
    // From here to the deletion of k nothing makes `active/` durable.
    for i in 0..2 {
        let id = format!("x{i}");
        d.act(
            &format!("complete {id}"),
            || owner.complete(&tid(&id), json!(i)).unwrap(),
            applied,
        );
    }
    // Under `Immediate`, another process takes h's and k's stripe between
    // the halves of their moves, before the batch's first fsync (of
    // `expiring/`), and g's after it, before the batch's fsync of `done/`
    // (and holds them past the batch's wait): the batch settles the
    // others, and leaves those three as a crash between the halves would,
    // reported reaped.
    let store = d.dir.path().join(STORE);
    let lock_of = |stripe: usize| store.join("locks").join(format!("{stripe:02}.lock"));
    let holds = (durability == Durability::Immediate).then(|| {
        [("expiring", held), ("done", held_late)]
            .map(|(area, stripe)| (d.faults.pause_at(FsOp::SyncDir, store.join(area)), stripe))
    });
    let mut holders = Vec::new();
    d.step(
        "reap_orphans (six, h, k and g's stripes taken meanwhile)",
        || {
            std::thread::scope(|s| {
                let reaping = s.spawn(|| owner.reap_orphans().unwrap());
                for (hold, stripe) in holds.into_iter().flatten() {
                    assert!(
                        hold.wait_reached(|| !reaping.is_finished()),
                        "the reap never reached its fsync before taking stripe {stripe}"
                    );
                    let file = std::fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .open(lock_of(stripe))
                        .expect("the stripe's lock file");
                    file.try_lock().expect("the stripe is free at the pause");
                    holders.push(file);
                    hold.resume();
                }
                reaping.join().unwrap()
            })
        },
        |reaped: &Vec<Task>| {
            assert_eq!(reaped.len(), 6, "reaps r0..r2, h, k, g: {reaped:?}");
            Effect::Put(reaped.clone())
        },
    );
    if durability == Durability::Immediate {
        let file = |area: &str, id: &TaskId| store.join(area).join(format!("{id}.json"));
        assert!(file("active", &h).exists() && !file("done", &h).exists());
        for id in [&k, &g] {
            assert!(file("active", id).exists() && file("done", id).exists());
        }
        assert!(!file("active", &tid("r1")).exists());
    }
    // The other process lets go.
    drop(holders);
    for id in [&k, &g] {
        delete(
            &mut d,
            &owner,
            id.as_str(),
            &format!("delete {id} (its move left unfinished)"),
        );
    }
    // The `expiring/` entries of x0 and x1 lost (a power loss of an `Eventual`
    // handle, a copy of the store), given back by a listing of history.
    d.outside(|store| {
        let expiring = store.join("expiring");
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&expiring)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (0..2).any(|i| name.ends_with(&format!(".x{i}")))
            })
            .collect();
        entries.sort();
        assert_eq!(entries.len(), 2, "{entries:?}");
        let mut events = Vec::new();
        for entry in entries {
            std::fs::remove_file(&entry).unwrap();
            events.push(FsEvent::Remove { path: entry });
        }
        events.push(FsEvent::SyncDir { path: expiring });
        events
    });
    d.step(
        "list all (gives two expiring/ entries back)",
        || owner.list(&ListQuery::all()).unwrap(),
        |_| Effect::Nothing,
    );
    let linked = d.steps.last().map(|s| {
        d.events[s.start..s.end]
            .iter()
            .filter(|e| matches!(e, FsEvent::Link { .. }))
            .count()
    });
    assert_eq!(linked, Some(2), "the listing links the two entries back");
    d.clock.advance(LATER * 3);
    d.step(
        "sweep_expired (reaped, completed, given back)",
        || owner.sweep_expired().unwrap(),
        |n: &usize| {
            let ids: Vec<TaskId> = (0..3)
                .map(|i| tid(&format!("r{i}")))
                .chain((0..2).map(|i| tid(&format!("x{i}"))))
                .collect();
            assert_eq!(*n, ids.len(), "r0..2, x0..1");
            Effect::Remove(ids)
        },
    );
    delete(
        &mut d,
        &owner,
        h.as_str(),
        "delete h (its move finished by now)",
    );
    drop(owner);
    d.finish("newer paths")
}

/// The stripe of task `id` (FORMAT.md, "Locks": FNV-1a of the id, modulo
/// 64).
pub fn stripe_of(id: &str) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % 64) as usize
}

/// The first id `<prefix>-<n>` in stripe `stripe`.
pub fn id_in_stripe(prefix: &str, stripe: usize) -> TaskId {
    (0..)
        .map(|n| format!("{prefix}-{n}"))
        .find(|id| stripe_of(id) == stripe)
        .map(|id| tid(&id))
        .expect("some id falls in every stripe")
}
