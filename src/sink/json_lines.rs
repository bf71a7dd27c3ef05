//! [`JsonLinesSink`]: an append-only JSON-lines file that several processes
//! may share.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::Serialize;
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::events::Event;
use crate::sink::EventSink;

/// Appends every event to a file as one JSON object per line:
///
/// ```json
/// {"at":"2026-01-02T03:04:05.123Z","pid":4242,"kind":"task.created","layer_to":"working","data":{"taskId":"…","status":"working","revision":1}}
/// ```
///
/// # Guarantees
///
/// - The file is opened with `O_APPEND` and created with mode `0600`.
/// - Each line is written by exactly one `write(2)` call of the whole line,
///   so lines from several threads or processes appending to the same file
///   never interleave, whatever their length (on a local file system, where
///   an appending write of a regular file is atomic).
/// - Nothing panics: a line that cannot be encoded, a failed write or a
///   short write is counted in [`errors`](JsonLinesSink::errors) and dropped.
///   A write interrupted before it wrote anything is retried.
/// - A line cut short (a full disk, the file-size limit) leaves a fragment;
///   it is ended with a newline at once, or, if that cannot be written
///   either, the next line written starts with one: the lines after it stay
///   whole, and a reader meets one broken line, the lost event's.
///
/// # Limitations
///
/// Lines are not fsynced: the file survives a process crash, not a power
/// loss. On network file systems appends are not atomic.
#[derive(Debug)]
pub struct JsonLinesSink {
    file: File,
    path: PathBuf,
    pid: u32,
    written: AtomicU64,
    errors: AtomicU64,
    /// Whether this sink's last write left a fragment of a line it could
    /// not end: the next line starts with a newline.
    torn: AtomicBool,
}

#[derive(Serialize)]
struct Line<'a> {
    #[serde(with = "time::serde::rfc3339")]
    at: OffsetDateTime,
    pid: u32,
    #[serde(flatten)]
    event: &'a Event,
}

impl JsonLinesSink {
    /// Opens (creating with mode `0600` if needed) `path` for appending.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the file cannot be opened.
    pub fn open(path: impl AsRef<Path>) -> Result<JsonLinesSink> {
        let path = path.as_ref();
        let mut options = OpenOptions::new();
        options.append(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options
            .open(path)
            .map_err(|e| Error::io("open for appending", path, e))?;
        Ok(JsonLinesSink {
            file,
            path: path.to_owned(),
            pid: std::process::id(),
            written: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            torn: AtomicBool::new(false),
        })
    }

    /// The file it appends to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many lines it wrote.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// How many lines it failed to encode or write whole.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    fn append(&self, event: &Event) -> io::Result<()> {
        let line = Line {
            at: OffsetDateTime::now_utc(),
            pid: self.pid,
            event,
        };
        let torn = self.torn.load(Ordering::Acquire);
        let mut buf = Vec::with_capacity(256);
        if torn {
            buf.push(b'\n');
        }
        serde_json::to_writer(&mut buf, &line)?;
        buf.push(b'\n');
        loop {
            // One write call for the whole line: a second call could let
            // another process's line in between.
            match (&self.file).write(&buf) {
                Ok(n) if n == buf.len() => {
                    if torn {
                        self.torn.store(false, Ordering::Release);
                    }
                    return Ok(());
                }
                Ok(n) => {
                    // A fragment (its first byte ended any earlier one):
                    // ended now if there is room for a newline, else by
                    // the next line's first byte. Nothing written leaves
                    // things as they were.
                    if n > 0 {
                        let ended = matches!((&self.file).write(b"\n"), Ok(1));
                        self.torn.store(!ended, Ordering::Release);
                    }
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("short write: {n} of {} bytes", buf.len()),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl EventSink for JsonLinesSink {
    fn emit(&self, event: &Event) {
        match self.append(event) {
            Ok(()) => self.written.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.errors.fetch_add(1, Ordering::Relaxed),
        };
    }
}
