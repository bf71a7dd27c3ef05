//! Reading a directory whole, in one call (`Fs::each_entry_whole`).

use super::*;

/// A directory of 2,000 task files with ids of the longest length is
/// read in one call (on tmpfs, where there is one: its directory size
/// counts 20 bytes an entry, and a buffer four times that was too
/// small for such names past a few hundred), every name once.
#[test]
fn a_directory_of_the_longest_ids_is_read_in_one_call() {
    let shm = Path::new("/dev/shm");
    let tmp = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let id = |n: usize| format!("{n:0>128}.json");
    for n in 0..2_000 {
        std::fs::write(tmp.path().join(id(n)), b"").unwrap();
    }
    let fs = Fs::default();
    let dir = fs.open_root(tmp.path()).unwrap();
    let mut names = Vec::new();
    let whole = fs
        .each_entry_whole(&dir, |name, _| names.push(name))
        .unwrap();
    assert!(whole, "read in one call");
    names.sort();
    let want: Vec<OsString> = (0..2_000).map(|n| id(n).into()).collect();
    assert_eq!(names, want);
}
