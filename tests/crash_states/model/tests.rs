//! The model's own checks: each rule of what a power loss may leave, on
//! hand-written seam calls.

use super::*;

fn disk() -> Disk {
    Disk::new(Path::new("/b"))
}

fn p(s: &str) -> PathBuf {
    Path::new("/b").join(s)
}

fn trees(d: &Disk) -> BTreeSet<Vec<(String, Option<String>)>> {
    d.crash_states()
        .into_iter()
        .map(|s| {
            s.tree
                .0
                .into_iter()
                .map(|(p, b)| {
                    (
                        p.display().to_string(),
                        b.map(|b| String::from_utf8(b).unwrap()),
                    )
                })
                .collect()
        })
        .collect()
}

fn entry(path: &str, bytes: Option<&str>) -> (String, Option<String>) {
    (path.to_owned(), bytes.map(str::to_owned))
}

fn ev(events: &[FsEvent]) -> Disk {
    let mut d = disk();
    for e in events {
        d.apply(e);
    }
    d
}

fn mkdir(s: &str) -> FsEvent {
    FsEvent::CreateDir { path: p(s) }
}
fn sync_dir(s: &str) -> FsEvent {
    FsEvent::SyncDir { path: p(s) }
}
fn create(s: &str) -> FsEvent {
    FsEvent::Create { path: p(s) }
}
fn write(s: &str, b: &str) -> FsEvent {
    FsEvent::Write {
        path: p(s),
        bytes: b.as_bytes().to_vec(),
    }
}
fn sync_file(s: &str) -> FsEvent {
    FsEvent::SyncFile { path: p(s) }
}
fn rename(a: &str, b: &str) -> FsEvent {
    FsEvent::Rename {
        from: p(a),
        to: p(b),
    }
}

/// Two directories, durable in the base.
fn two_dirs() -> Vec<FsEvent> {
    vec![mkdir("a"), mkdir("b"), sync_dir("")]
}

#[test]
fn a_file_is_durable_only_after_its_fsync_and_its_directory_fsync() {
    let mut events = two_dirs();
    events.extend([create("a/f"), write("a/f", "abcd")]);
    // Unsynced: the name may be missing, or name an empty, cut or whole file.
    assert_eq!(
        trees(&ev(&events)),
        [
            vec![entry("a", None), entry("b", None)],
            vec![entry("a", None), entry("a/f", Some("")), entry("b", None)],
            vec![entry("a", None), entry("a/f", Some("ab")), entry("b", None)],
            vec![
                entry("a", None),
                entry("a/f", Some("abcd")),
                entry("b", None)
            ],
        ]
        .into()
    );
    events.push(sync_file("a/f"));
    assert_eq!(trees(&ev(&events)).len(), 2, "content durable, name not");
    events.push(sync_dir("b"));
    assert_eq!(trees(&ev(&events)).len(), 2, "another directory's fsync");
    events.push(sync_dir("a"));
    assert_eq!(
        trees(&ev(&events)),
        [vec![
            entry("a", None),
            entry("a/f", Some("abcd")),
            entry("b", None)
        ]]
        .into()
    );
}

#[test]
fn a_rename_across_directories_is_two_independent_halves() {
    let mut events = two_dirs();
    events.extend([
        create("a/f"),
        write("a/f", "x"),
        sync_file("a/f"),
        sync_dir("a"),
        rename("a/f", "b/g"),
    ]);
    let f = entry("a/f", Some("x"));
    let g = entry("b/g", Some("x"));
    let (a, b) = (entry("a", None), entry("b", None));
    let all = [
        vec![a.clone(), f.clone(), b.clone()],
        vec![a.clone(), f.clone(), b.clone(), g.clone()],
        vec![a.clone(), b.clone()],
        vec![a.clone(), b.clone(), g.clone()],
    ];
    assert_eq!(trees(&ev(&events)), all.clone().into());
    // The target's fsync makes the new name durable, not the removal of
    // the old one.
    events.push(sync_dir("b"));
    assert_eq!(trees(&ev(&events)), [all[1].clone(), all[3].clone()].into());
    events.push(sync_dir("a"));
    assert_eq!(trees(&ev(&events)), [all[3].clone()].into());
}

#[test]
fn a_directory_exists_after_a_crash_only_once_its_parent_is_fsynced() {
    let events = vec![mkdir("a"), mkdir("a/c"), sync_dir("a")];
    let states = trees(&ev(&events));
    assert!(states.contains(&vec![]), "a itself may be lost");
    assert!(states.contains(&vec![entry("a", None), entry("a/c", None)]));
    assert_eq!(states.len(), 2, "a/c is durable in a once a is");
}

/// `a/x` replaced twice: the second time with the old inode given a
/// second name in `b` first when `park` is set.
fn replaced_x(park: bool) -> Disk {
    let mut events = two_dirs();
    for (temp, bytes) in [("b/t1", "old"), ("b/t2", "new")] {
        events.extend([create(temp), write(temp, bytes), sync_file(temp)]);
        if bytes == "new" && park {
            events.push(FsEvent::Link {
                from: p("a/x"),
                to: p("b/park"),
            });
        }
        events.push(rename(temp, "a/x"));
        if bytes == "old" {
            events.push(sync_dir("a"));
        }
    }
    ev(&events)
}

fn values_of_x(d: &Disk) -> BTreeSet<Option<String>> {
    trees(d)
        .into_iter()
        .map(|t| t.into_iter().find(|(p, _)| p == "a/x").and_then(|e| e.1))
        .collect()
}

#[test]
fn a_name_replaced_without_its_directory_fsync_may_be_cleared_with_its_freed_inode() {
    let d = replaced_x(false);
    assert_eq!(
        values_of_x(&d),
        [None, Some("old".to_owned()), Some("new".to_owned())].into(),
        "the old inode is freed: a repair may clear the durable name"
    );
    // `b` was never fsynced: both temp files' creations and removals.
    assert_eq!(d.pending_changes(), 5);
}

#[test]
fn a_replaced_inode_with_a_second_name_is_never_freed() {
    let d = replaced_x(true);
    assert_eq!(
        values_of_x(&d),
        [Some("old".to_owned()), Some("new".to_owned())].into()
    );
}

fn exchange(a: &str, b: &str) -> FsEvent {
    FsEvent::Exchange { a: p(a), b: p(b) }
}

fn remove(s: &str) -> FsEvent {
    FsEvent::Remove { path: p(s) }
}

/// A compaction's steps, told apart by their contents: `a` holds `f` and
/// `g`; a new directory `n` gets a second name of `f` alone and is made
/// durable; the two are exchanged.
fn compaction() -> Vec<FsEvent> {
    let mut events = two_dirs();
    for (name, bytes) in [("a/f", "x"), ("a/g", "y")] {
        events.extend([create(name), write(name, bytes), sync_file(name)]);
    }
    events.extend([
        sync_dir("a"),
        mkdir("n"),
        FsEvent::Link {
            from: p("a/f"),
            to: p("n/f"),
        },
        sync_dir("n"),
        exchange("a", "n"),
    ]);
    events
}

/// An exchange of two directories moves their contents with their names,
/// and is one change: a power loss keeps both halves or neither, never
/// both names on one directory, nor one name on neither (whatever the
/// earlier `mkdir` of one of them left).
#[test]
fn an_exchange_of_two_directories_is_durable_whole_or_not_at_all() {
    let events = compaction();
    let b = entry("b", None);
    let (a, af, ag) = (
        entry("a", None),
        entry("a/f", Some("x")),
        entry("a/g", Some("y")),
    );
    let (n, nf, ng) = (
        entry("n", None),
        entry("n/f", Some("x")),
        entry("n/g", Some("y")),
    );
    let swapped = vec![
        a.clone(),
        af.clone(),
        b.clone(),
        n.clone(),
        nf.clone(),
        ng.clone(),
    ];
    assert_eq!(
        trees(&ev(&events)),
        [
            // Neither: `n` made or not.
            vec![a.clone(), af.clone(), ag.clone(), b.clone()],
            vec![
                a.clone(),
                af.clone(),
                ag.clone(),
                b.clone(),
                n.clone(),
                nf.clone()
            ],
            // Both: `a` names the new directory, `n` the old.
            swapped.clone(),
        ]
        .into()
    );
    let mut synced = events.clone();
    synced.push(sync_dir(""));
    assert_eq!(trees(&ev(&synced)), [swapped].into());
}

/// After the exchange is durable, the old directory's names go and then
/// the directory itself: each a change to its own directory.
#[test]
fn a_directory_emptied_and_removed_goes_with_its_parents_fsync() {
    let mut events = compaction();
    events.extend([sync_dir(""), remove("n/f"), remove("n/g"), remove("n")]);
    let (a, af, b) = (entry("a", None), entry("a/f", Some("x")), entry("b", None));
    let (n, nf, ng) = (
        entry("n", None),
        entry("n/f", Some("x")),
        entry("n/g", Some("y")),
    );
    let kept = vec![a.clone(), af.clone(), b.clone()];
    let states = trees(&ev(&events));
    // `n` is gone, or still there with any of its names.
    assert!(states.contains(&kept), "{states:#?}");
    assert!(
        states.contains(&[kept.clone(), vec![n.clone(), nf, ng]].concat()),
        "{states:#?}"
    );
    assert!(states.iter().all(|t| t.starts_with(&kept)), "{states:#?}");
    events.push(sync_dir(""));
    assert_eq!(trees(&ev(&events)), [kept].into());
}

/// The old directory's names and the directory itself removed before an
/// fsync of the base made the exchange durable: each removal is a change
/// of its own, which a power loss may keep with or without the exchange,
/// and a name ends at its last applied change (the removal of `n`, where
/// it is applied, stands whether the exchange is or not). So the removals
/// of `a`'s old names may survive while the exchange does not, and `a`
/// then names the old directory without them: what the base's fsync
/// between the exchange and the removals rules out. (The new directory
/// holds a file of its own, `h`, to tell the two apart.)
#[test]
fn a_change_to_a_name_after_its_pending_exchange_stands_with_or_without_it() {
    let mut events = two_dirs();
    for (name, bytes) in [("a/f", "x"), ("a/g", "y")] {
        events.extend([create(name), write(name, bytes), sync_file(name)]);
    }
    events.extend([sync_dir("a"), mkdir("n")]);
    events.extend([create("n/h"), write("n/h", "z"), sync_file("n/h")]);
    events.extend([sync_dir("n"), exchange("a", "n")]);
    events.extend([remove("n/f"), remove("n/g"), remove("n")]);
    let (a, af, ag, ah, b) = (
        entry("a", None),
        entry("a/f", Some("x")),
        entry("a/g", Some("y")),
        entry("a/h", Some("z")),
        entry("b", None),
    );
    let (n, nf, ng, nh) = (
        entry("n", None),
        entry("n/f", Some("x")),
        entry("n/g", Some("y")),
        entry("n/h", Some("z")),
    );
    let states = trees(&ev(&events));
    for (tree, what) in [
        // Everything applied: the new directory alone, as `a`.
        (vec![a.clone(), ah.clone(), b.clone()], "all applied"),
        // The exchange applied, the removal of `n` not: `n` names the old
        // directory, with what its removals left.
        (
            vec![
                a.clone(),
                ah.clone(),
                b.clone(),
                n.clone(),
                nf.clone(),
                ng.clone(),
            ],
            "the exchange alone",
        ),
        (
            vec![a.clone(), ah.clone(), b.clone(), n.clone()],
            "the exchange and the names' removals",
        ),
        // The exchange not applied: `a` the old directory still, its
        // names removed or not, `n` made and removed, or made only.
        (vec![a.clone(), af.clone(), ag.clone(), b.clone()], "none"),
        (
            vec![a.clone(), af.clone(), ag.clone(), b.clone(), n.clone(), nh],
            "the new directory's mkdir alone",
        ),
        (
            vec![a.clone(), b.clone()],
            "the removals without the exchange",
        ),
    ] {
        assert!(
            states.contains(&tree),
            "{what}: {tree:?} not in {states:#?}"
        );
    }
    // Whatever applied, `a` is there: the exchange never leaves it on no
    // directory.
    assert!(states.iter().all(|t| t.contains(&a)), "{states:#?}");
    events.push(sync_dir(""));
    let synced = trees(&ev(&events));
    assert!(
        synced.iter().all(|t| !t.contains(&n) && t.contains(&ah)),
        "{synced:#?}"
    );
}
