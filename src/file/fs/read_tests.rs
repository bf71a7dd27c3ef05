//! Reading a file through the seam: its size, its cap, its type.

use std::fs::{self, File};
use std::io;
use std::path::Path;

use super::{Fs, TooLarge};

/// The file at `path` opened and read as the store reads a task file
/// (`Fs::open_read`, then `Fs::read_to_end` with `limit`).
fn read(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let fs = Fs::default();
    let dir = fs.open_root(path.parent().expect("a file in a directory"))?;
    let mut file = fs.open_read(&dir, path.file_name().expect("a file name"))?;
    fs.read_to_end(&mut file, path, limit)
}

/// Files of every size around a page, and far past one, read back
/// whole, with a limit at their size; one byte under it, they are
/// refused with their size.
#[test]
fn files_of_every_size_read_back_whole_up_to_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    for size in [0, 1, 300, 4_095, 4_096, 4_097, 8_192, 100_000] {
        let bytes: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        fs::write(&path, &bytes).unwrap();
        assert_eq!(read(&path, 1 << 20).unwrap(), bytes, "{size} bytes");
        // A limit at the file's size is enough, one byte less is not.
        assert_eq!(read(&path, size as u64).unwrap(), bytes, "{size} bytes");
        if size > 0 {
            let e = read(&path, size as u64 - 1).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::FileTooLarge, "{size} bytes");
            let t = e.get_ref().unwrap().downcast_ref::<TooLarge>().unwrap();
            assert_eq!((t.size, t.limit), (size as u64, size as u64 - 1));
        }
    }
}

/// A file far past the limit is refused by its size, before it is read
/// (a terabyte, sparse).
#[test]
fn a_huge_sparse_file_is_refused_by_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge");
    File::create(&path).unwrap().set_len(1 << 40).unwrap();
    let e = read(&path, 64 * 1024).unwrap_err();
    let t = e.get_ref().unwrap().downcast_ref::<TooLarge>().unwrap();
    assert_eq!((t.size, t.limit), (1 << 40, 64 * 1024));
}

/// A directory and a FIFO are refused as what they are, not read as
/// empty files.
#[test]
fn a_directory_and_a_fifo_are_refused_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("sub");
    fs::create_dir(&sub).unwrap();
    let e = read(&sub, 1 << 20).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::IsADirectory);
    let fifo = dir.path().join("fifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let e = read(&fifo, 1 << 20).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(e.to_string(), "not a regular file");
}
