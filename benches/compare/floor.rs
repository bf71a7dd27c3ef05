//! The physical floor: the same bytes written with write + fsync + rename +
//! directory fsync (or write + rename for `Eventual`), and nothing else.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub struct Floor {
    tmp: PathBuf,
    dest: PathBuf,
    dest_dir: File,
    sync: bool,
    seq: AtomicU64,
}

impl Floor {
    pub fn new(dir: &Path, sync: bool) -> Floor {
        let (tmp, dest) = (dir.join("tmp"), dir.join("dest"));
        std::fs::create_dir_all(&tmp).unwrap();
        std::fs::create_dir_all(&dest).unwrap();
        Floor {
            dest_dir: File::open(&dest).unwrap(),
            tmp,
            dest,
            sync,
            seq: AtomicU64::new(0),
        }
    }

    /// Writes `bytes` as a new file named `name` in the destination.
    pub fn write(&self, name: &str, bytes: &[u8]) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let temp = self.tmp.join(format!("{name}.{seq}.tmp"));
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .unwrap();
        f.write_all(bytes).unwrap();
        if self.sync {
            f.sync_all().unwrap();
        }
        drop(f);
        std::fs::rename(&temp, self.dest.join(name)).unwrap();
        if self.sync {
            self.dest_dir.sync_all().unwrap();
        }
    }

    /// Removes the file `write` made as `name` (teardown, untimed).
    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.dest.join(name)).unwrap();
    }

    /// Fixture, untimed: `n` more files of `bytes` in the destination,
    /// written without fsync.
    pub fn fill(&self, n: usize, bytes: &[u8]) {
        for _ in 0..n {
            let seq = self.seq.fetch_add(1, Ordering::Relaxed);
            std::fs::write(self.dest.join(format!("fill-{seq}.json")), bytes).unwrap();
        }
    }

    /// Removes every file in the destination (`fill`'s and `write`'s), with
    /// one fsync of the directory after them when durable: what deleting
    /// that many files costs the file system, the names already known.
    pub fn remove_all(&self, names: &[PathBuf]) {
        for name in names {
            std::fs::remove_file(name).unwrap();
        }
        if self.sync {
            self.sync_dest();
        }
    }

    /// Fsyncs the destination directory.
    pub fn sync_dest(&self) {
        self.dest_dir.sync_all().unwrap();
    }

    /// The destination directory.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// The paths of every file in the destination, as `readdir` gives them.
    pub fn files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.dest)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }
}
