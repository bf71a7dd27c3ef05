//! Freshness: a listing in one process sees every write another process
//! finished first.

use super::*;

// ---------------------------------------------------------------------------
// Freshness: a listing in one process sees every write another process
// finished before the listing started, though listings reuse what they read.

#[test]
fn a_listing_sees_every_write_another_process_finished_first() {
    const TEST: &str = "freshness::a_listing_sees_every_write_another_process_finished_first";
    if let Some((role, args)) = common::role() {
        assert_eq!(role, "fresh-writer");
        return fresh_writer(&args);
    }
    let tmp = tempfile::tempdir().unwrap();
    let (store, work) = (tmp.path().join("store"), tmp.path().to_owned());
    let setup = open_fast(&store, "parent");
    for i in 0..3 {
        setup.create(NewTask::new().id(id("fresh", i))).unwrap();
    }
    drop(setup);
    let reader = open_fast(&store, "reader");
    let watched = id("fresh", 1);
    let mut writer = [spawn(
        &work,
        TEST,
        "fresh-writer",
        &args(&store, &work, &[]),
    )];
    let written = || {
        fs::read_to_string(work.join("written"))
            .map_or(0, |s| s.trim().parse::<u64>().expect("a revision"))
    };
    let answered = std::cell::Cell::new(0u64);
    let list = |at_least: u64| {
        // First a get that waits for nothing (no notice drained since the
        // last listing): it answers as fresh as a listing, or not at all.
        if let Some(answer) = reader.try_get(&watched) {
            answered.set(answered.get() + 1);
            let at_once = answer.expect("a running task").revision;
            assert!(
                at_once >= at_least,
                "try_get answered revision {at_once} after the writer had finished revision {at_least}"
            );
        }
        let tasks = reader.list(&ListQuery::active()).unwrap().tasks;
        assert_eq!(tasks.len(), 3);
        let seen = tasks.iter().find(|t| t.id == watched).unwrap().revision;
        assert!(
            seen >= at_least,
            "listed revision {seen} after the writer had finished revision {at_least}"
        );
        // A get of the running task, served from the same snapshot.
        let got = reader.get(&watched).unwrap().unwrap().revision;
        assert!(
            got >= at_least,
            "got revision {got} after the writer had finished revision {at_least}"
        );
        seen
    };
    let (mut listings, mut handshakes) = (0u64, 0u64);
    loop {
        let done = work.join("done").exists();
        // Read before the listing starts: the listing must show at least it.
        let seen = list(written());
        listings += 1;
        if done {
            assert_eq!(seen, written(), "the last write is listed");
            break;
        }
        // The writer asks, now and then, for a burst the reader does not
        // list until the directory has settled again: the snapshot the
        // reader kept before the burst then looks trustworthy by age, and
        // must be refused because the directory's status changed.
        let ask = work.join(format!("ask-{handshakes}"));
        if ask.exists() {
            touch(&work.join(format!("paused-{handshakes}")));
            wait_for(&mut writer, "the writer's burst", || {
                work.join(format!("wrote-{handshakes}")).exists()
            });
            std::thread::sleep(std::time::Duration::from_millis(150));
            list(written());
            handshakes += 1;
        }
        writer.iter_mut().for_each(common::Running::check_alive);
    }
    let [writer] = writer;
    writer.finish();
    assert_eq!(handshakes, 6);
    assert!(answered.get() > 0, "try_get never answered");
    eprintln!(
        "{listings} listings, {handshakes} after a settled burst, {} answered by try_get",
        answered.get()
    );
}

/// Updates one task in bursts, pausing past the listing snapshot's settle
/// margin between them, and publishes each revision once its write
/// returned; every other burst waits until the reader has paused.
fn fresh_writer(args: &[String]) {
    let (store, work) = dirs(args);
    let s = open_fast(&store, "fresh-writer");
    let task = id("fresh", 1);
    for round in 0..12u64 {
        std::thread::sleep(std::time::Duration::from_millis(130 + round % 4 * 9));
        let handshake = round / 2;
        if round % 2 == 1 {
            touch(&work.join(format!("ask-{handshake}")));
            wait_until("the reader to pause", || {
                work.join(format!("paused-{handshake}")).exists()
            });
        }
        for _ in 0..1 + round % 3 {
            let t = s
                .update(&task, TaskUpdate::new().metadata("round", round))
                .unwrap()
                .into_task();
            write_atomic(&work.join("written"), t.revision.to_string().as_bytes());
        }
        if round % 2 == 1 {
            touch(&work.join(format!("wrote-{handshake}")));
        }
    }
    touch(&work.join("done"));
}
