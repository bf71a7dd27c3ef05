//! Copying a store's tree, for the tests and `benches/reap.rs`.

use std::path::Path;

/// Copies the tree `from` to `to` file by file, as `cp -r` does: a file
/// with two names (a task file and its `expiring/` entry) becomes two
/// files.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
