//! [`JsonLinesSink`]: an append-only JSON-lines file that several processes
//! may share.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use time::OffsetDateTime;

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::events::Event;
use crate::occurrences::Occurrences;
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
/// - To a pipe, a FIFO or a device, a line waits for room at most
///   [`pipe_wait`](JsonLinesSink::pipe_wait) (a second unless set), and
///   only while the reader keeps up: events never hold up whoever emitted
///   them (a store's `create`, a breaker's call) for longer, however long
///   the reader (a log collector) stops reading. A reader that reads gets
///   every line, in bursts larger than the pipe holds too; a line that
///   found no room within the wait is dropped, and so is every line after
///   it that finds the pipe full, at once, without waiting, until a line
///   goes through whole again (the reader is back): a stopped reader costs
///   its writers one wait, not one a line. Dropped lines are counted in
///   [`dropped`](JsonLinesSink::dropped) and said: a warning naming the
///   file at the first, then at most once a minute by its
///   [clock](JsonLinesSink::with_clock) while lines go on being dropped,
///   with the count so far and since the warning before (as a store says
///   its sink's panics). A line longer than `PIPE_BUF` bytes (4 KiB) goes
///   in pieces as the reader makes room; one dropped part way leaves a
///   fragment, ended as a line cut short is (below).
/// - The threads of one sink write one line at a time to each pipe or
///   device it opened: their lines (and fragments) never interleave. Lines
///   of several processes (or sinks) sharing one pipe may, past 4 KiB, and
///   so may a line still going to the descriptor a `reopen` of the same
///   pipe replaced.
/// - Nothing panics: a line that cannot be encoded, a failed write or a
///   short write to a regular file is counted in
///   [`errors`](JsonLinesSink::errors) and dropped, and said as dropped
///   lines are: a warning naming the file and the error at the first,
///   then at most once a minute by its clock while lines go on failing,
///   with the count so far and since the warning before (a write that
///   goes through in between makes no warning of the next failure). Every
///   event is counted in exactly one of
///   [`written`](JsonLinesSink::written), `dropped` and `errors`.
///   A write interrupted before it wrote anything is retried.
/// - A line cut short (a full disk, the file-size limit) leaves a fragment;
///   it is ended with a newline at once, or, if that cannot be written
///   either, the next line this sink writes starts with one: the lines
///   after it stay whole, and a reader meets one broken line, the lost
///   event's. Another sink or process appending to the file meanwhile
///   knows of no fragment: its next line joins it, and is lost too; so
///   may a line another thread of this sink writes at that very moment
///   (between the cut write and its ending newline), though it counts in
///   [`written`](JsonLinesSink::written). Writes to a regular file take no
///   lock, so that threads never queue behind each other's appends.
/// - A process killed part way through a line (`SIGKILL`: the kernel ends
///   an appending write between pages at a fatal signal) leaves a fragment
///   too, which no sink knows of: a sink opened on the file afterwards
///   (the process started again, another one, `reopen`) finds it at the
///   file's end and starts its first line with a newline, and a reader
///   meets one broken line, the killed writer's. A sink that already had
///   the file open appends to it as above (its next line joins the
///   fragment); and one opened at the very moment another writer is part
///   way through a line takes that line for a fragment, so its first line
///   follows an empty one.
/// - The path is made absolute when the sink opens it: a process that
///   changes its working directory afterwards (as daemons do) goes on
///   writing to the same file.
/// - Each line carries the pid of the process that wrote it (a process
///   forked from the sink's owner writes its own).
/// - It follows its path through a rotation: at most once a second (see
///   [`check_path_every`](JsonLinesSink::check_path_every)) a write first
///   looks at the path, and if the file there is no longer the one it has
///   open (renamed away, or removed), it opens the path again, making the
///   file if none is there. Lines from the moment of the rotation to the
///   next check go to the renamed file, none is lost while that file is
///   kept; a file removed (by hand, or a rotation that compresses or
///   deletes the renamed file at once) takes the lines written to it until
///   the next check with it, and they are counted in
///   [`written`](JsonLinesSink::written) all the same (logrotate's
///   `delaycompress` keeps the renamed file for a cycle). A path it cannot
///   open then (made unwritable to it, or not a file) leaves the lines
///   going to the file it has, tried again at each check: the first such
///   check logs a warning naming the path, and the one that opens it again
///   says so. A host that
///   rotates on a signal calls [`reopen`](JsonLinesSink::reopen). A
///   `copytruncate` rotation needs neither: appends go to the end of the
///   truncated file.
///
/// # Limitations
///
/// Lines are not fsynced: the file survives a process crash, not a power
/// loss. On network file systems appends are not atomic.
#[derive(Debug)]
pub struct JsonLinesSink {
    /// The file lines go to, swapped by a reopen. Writers share it: each
    /// line is one appending `write`, whoever else writes.
    file: RwLock<Arc<Opened>>,
    path: PathBuf,
    /// How often a write looks at the path for a rotation.
    check_every: Duration,
    /// When this sink was opened: the origin of `next_check`.
    opened: Instant,
    /// Nanoseconds after `opened` at which the next write looks at the path.
    next_check: AtomicU64,
    written: AtomicU64,
    /// Lines it failed to encode or write whole, and when they were last
    /// said.
    errors: Occurrences,
    /// Whether this sink's last write left a fragment of a line it could
    /// not end: the next line starts with a newline.
    torn: AtomicBool,
    /// Whether its last look at the path found another file (or none) that
    /// it could not open: the first such look is logged, and the look
    /// that opens the path again.
    reopen_failing: AtomicBool,
    /// Lines dropped for want of room in a pipe, and when they were last
    /// said.
    dropped: Occurrences,
    /// What the warnings of dropped and failed lines are spaced by.
    clock: Arc<dyn Clock>,
    /// The longest a line waits for room in a pipe.
    pipe_wait: Duration,
}

/// A file the sink opened, and how its lines are written.
#[derive(Debug)]
struct Opened {
    file: File,
    /// Taken by each line written to it, for anything but a regular file
    /// (written without blocking, waiting for room at most the sink's
    /// `pipe_wait`): one thread at a time writes its lines there. A pipe
    /// takes a write of more than `PIPE_BUF` bytes (4 KiB) in pieces as
    /// the reader makes room, and lets another writer's pieces in between;
    /// a regular file opened to append takes each write whole. Held
    /// through the line's pieces and the newline that ends a part of it.
    one_at_a_time: Option<Mutex<()>>,
    /// Whether a line waited for room here in vain and none went through
    /// whole since: the reader stopped, and lines that find no room are
    /// dropped without waiting.
    stalled: AtomicBool,
}

impl Opened {
    fn new(file: File) -> Opened {
        let one_at_a_time = file
            .metadata()
            .map_or(true, |m| !m.is_file())
            .then(|| Mutex::new(()));
        Opened {
            file,
            one_at_a_time,
            stalled: AtomicBool::new(false),
        }
    }

    /// Waits until this pipe has room or `deadline` (set at the first wait
    /// of a line, `wait` from then) passes; whether to write again. Never
    /// waits while the pipe is stalled.
    fn wait_for_room(&self, deadline: &mut Option<Instant>, wait: Duration) -> bool {
        if self.stalled.load(Ordering::Relaxed) {
            return false;
        }
        let deadline = *deadline.get_or_insert_with(|| Instant::now() + wait);
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            self.stalled.store(true, Ordering::Relaxed);
            return false;
        }
        #[cfg(unix)]
        {
            use rustix::event::{PollFd, PollFlags, Timespec, poll};
            let timeout = Timespec {
                tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
                tv_nsec: i64::from(left.subsec_nanos()),
            };
            // Room, the time up (the next write says which), or a signal:
            // write again. A reader gone makes the write fail (`EPIPE`).
            let mut fds = [PollFd::new(&self.file, PollFlags::OUT)];
            poll(&mut fds, Some(&timeout)).is_ok() || {
                self.stalled.store(true, Ordering::Relaxed);
                false
            }
        }
        #[cfg(not(unix))]
        {
            self.stalled.store(true, Ordering::Relaxed);
            false
        }
    }
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
    /// Opens (creating with mode `0600` if needed) `path` for appending; a
    /// relative path is made absolute against the working directory now.
    /// A FIFO or pipe is written one line at a time, a line waiting for
    /// room at most [`pipe_wait`](JsonLinesSink::pipe_wait) and dropped
    /// past it ([`dropped`](JsonLinesSink::dropped)), but only one that a
    /// process reads: opening never waits for a reader.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the file cannot be opened, or is a FIFO that no
    /// process reads (`reopen` and a rotation's look at the path say the
    /// same, and go on with the file they have).
    pub fn open(path: impl AsRef<Path>) -> Result<JsonLinesSink> {
        let given = path.as_ref();
        let path = std::path::absolute(given)
            .map_err(|e| Error::io("make absolute the path", given, e))?;
        let file = open_appending(&path)?;
        let torn = ends_mid_line(&file, &path);
        let check_every = DEFAULT_CHECK_EVERY;
        Ok(JsonLinesSink {
            file: RwLock::new(Arc::new(Opened::new(file))),
            path,
            check_every,
            opened: Instant::now(),
            next_check: AtomicU64::new(nanos(check_every)),
            written: AtomicU64::new(0),
            errors: Occurrences::default(),
            torn: AtomicBool::new(torn),
            reopen_failing: AtomicBool::new(false),
            dropped: Occurrences::default(),
            clock: Arc::new(SystemClock),
            pipe_wait: DEFAULT_PIPE_WAIT,
        })
    }

    /// Sets the longest a line waits for room in a pipe, a FIFO or a
    /// device whose reader has not caught up (a second unless set;
    /// `Duration::ZERO` never waits): the most an emitting call is held
    /// up by a reader that stopped, once, before lines are dropped without
    /// waiting until the reader is back. A regular file never waits.
    #[must_use]
    pub fn pipe_wait(mut self, wait: Duration) -> JsonLinesSink {
        self.pipe_wait = wait;
        self
    }

    /// Spaces the warnings of dropped and failed lines by `clock` (the system clock
    /// unless set): a test's [`ManualClock`](crate::ManualClock), or the
    /// clock the store or registry it serves goes by.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> JsonLinesSink {
        self.clock = clock;
        self
    }

    /// Sets how often a write looks at the path for a rotation (every
    /// second unless set; `Duration::ZERO` looks before every line, each
    /// writer for itself, at the cost of a `stat` each; `Duration::MAX`
    /// never looks). Between looks, of two writers that find one due, one
    /// looks and the other writes where lines went.
    #[must_use]
    pub fn check_path_every(mut self, every: Duration) -> JsonLinesSink {
        self.check_every = every;
        let since_open = nanos(self.opened.elapsed());
        self.next_check
            .store(since_open.saturating_add(nanos(every)), Ordering::Relaxed);
        self
    }

    /// Opens the path again at once (making the file if none is there), and
    /// writes every later line there: for a host that rotates the file and
    /// then signals the process.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] naming the path if it cannot be opened; the sink then
    /// goes on writing to the file it had.
    pub fn reopen(&self) -> Result<()> {
        let file = open_appending(&self.path)?;
        // A fragment at its end, this sink's own (the same file opened
        // again, nothing rotated) or another writer's, is still to be
        // ended; one left in the file it had is that file's.
        let torn = ends_mid_line(&file, &self.path);
        // A later look that cannot open the path is said again.
        if self.reopen_failing.swap(false, Ordering::Relaxed) {
            tracing::info!(path = %self.path.display(), "opened the event file's path again after a rotation; lines go there");
        }
        let mut current = self.file.write().unwrap_or_else(PoisonError::into_inner);
        self.torn.store(torn, Ordering::Release);
        *current = Arc::new(Opened::new(file));
        Ok(())
    }

    /// The file to write the next line to: the open one, unless a look at
    /// the path is due and finds another file there (or none).
    fn current(&self) -> Arc<Opened> {
        let file = Arc::clone(&self.file.read().unwrap_or_else(PoisonError::into_inner));
        let due = self.next_check.load(Ordering::Relaxed);
        let now = nanos(self.opened.elapsed());
        #[cfg(test)]
        tests::before_claiming_the_look();
        // With no time between looks every writer looks: none is left to
        // another writer's look, which may come before the file is gone.
        if !self.check_every.is_zero()
            && (now < due
                || self
                    .next_check
                    .compare_exchange(
                        due,
                        now.saturating_add(nanos(self.check_every)),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    )
                    .is_err())
        {
            // Not due, or another writer is looking.
            return file;
        }
        if still_at(&file.file, &self.path) {
            return file;
        }
        match self.reopen() {
            Ok(()) => {}
            Err(e) => {
                // Looked at again at the next check; until then lines go
                // where they went.
                if !self.reopen_failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot open the event file's path after a rotation; lines go on to the file it had until it can");
                }
                return file;
            }
        }
        Arc::clone(&self.file.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The file it appends to (absolute).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many lines it wrote.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// How many lines it lost to an error: it failed to encode them, or to
    /// write them whole (a full disk, the file-size limit, a reader of a
    /// pipe gone). Lost lines are counted here or in
    /// [`dropped`](JsonLinesSink::dropped), never in both: every event the
    /// sink was given is counted in exactly one of
    /// [`written`](JsonLinesSink::written), `dropped` and `errors`.
    pub fn errors(&self) -> u64 {
        self.errors.count()
    }

    /// How many lines it dropped because a pipe, a FIFO or a device had no
    /// room for them (its reader not keeping up, or stopped): lines it
    /// did not wait to write. Lines lost to a failed write are counted in
    /// [`errors`](JsonLinesSink::errors).
    pub fn dropped(&self) -> u64 {
        self.dropped.count()
    }

    /// Counts a line dropped for want of room, and says it: the first at
    /// once, then at most once a minute by the clock.
    #[cold]
    fn no_room(&self) {
        let path = self.path.display();
        self.dropped.count_one(self.clock.as_ref(), |said| match said.since_last_warning {
            None => tracing::warn!(
                path = %path,
                dropped = said.count,
                "the reader of the event pipe is not keeping up; a line that finds it full is dropped (counted, and said at most once a minute)"
            ),
            Some(since) => tracing::warn!(
                path = %path,
                dropped = said.count,
                since_last_warning = since,
                "the reader of the event pipe is still not keeping up; lines were dropped"
            ),
        });
    }

    /// Counts a line lost to `error` (not encoded, or not written whole),
    /// and says it: the first at once, then at most once a minute by the
    /// clock while lines go on being lost, each warning with the error of
    /// the line it is said at.
    #[cold]
    fn failed(&self, error: &io::Error) {
        let path = self.path.display();
        self.errors.count_one(self.clock.as_ref(), |said| match said.since_last_warning {
            None => tracing::warn!(
                path = %path,
                error = %error,
                errors = said.count,
                "cannot write events to the file; lines that fail are dropped (counted, and said at most once a minute)"
            ),
            Some(since) => tracing::warn!(
                path = %path,
                error = %error,
                errors = said.count,
                since_last_warning = since,
                "writes of events to the file still fail; lines were dropped"
            ),
        });
    }

    fn append(&self, event: &Event) -> io::Result<Appended> {
        let line = Line {
            at: OffsetDateTime::now_utc(),
            // Asked each time: a forked child writes its own.
            pid: std::process::id(),
            event,
        };
        let opened = self.current();
        // Held through the line and the newline that ends a fragment of it.
        let _one = opened
            .one_at_a_time
            .as_ref()
            .map(|one| one.lock().unwrap_or_else(PoisonError::into_inner));
        let file = &opened.file;
        let torn = self.torn.load(Ordering::Acquire);
        let mut buf = Vec::with_capacity(256);
        if torn {
            buf.push(b'\n');
        }
        serde_json::to_writer(&mut buf, &line)?;
        buf.push(b'\n');
        // What of the line went out: a pipe takes it in pieces.
        let mut sent = 0;
        // When this line stops waiting for room in a pipe.
        let mut deadline = None;
        let pipe = opened.one_at_a_time.is_some();
        // A fragment (its first byte ended any earlier one): ended now if
        // there is room for a newline, else by the next line's first byte.
        // Nothing written leaves things as they were.
        let cut_short = |sent: usize| {
            if sent > 0 {
                let ended = matches!((&*file).write(b"\n"), Ok(1));
                self.torn.store(!ended, Ordering::Release);
            }
        };
        loop {
            // One write call for the whole line, to a regular file: a
            // second call could let another process's line in between.
            match (&*file).write(&buf[sent..]) {
                Ok(n) if sent + n == buf.len() => {
                    if torn || sent > 0 {
                        self.torn.store(false, Ordering::Release);
                    }
                    if pipe {
                        opened.stalled.store(false, Ordering::Relaxed);
                    }
                    return Ok(Appended::Written);
                }
                // A pipe with room for part of the line: the rest waits
                // for room, if the reader keeps up.
                Ok(n) if pipe => {
                    sent += n;
                    self.torn.store(true, Ordering::Release);
                    if !opened.wait_for_room(&mut deadline, self.pipe_wait) {
                        cut_short(sent);
                        return Ok(Appended::NoRoom);
                    }
                }
                Ok(n) => {
                    cut_short(n);
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("short write: {n} of {} bytes", buf.len()),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !opened.wait_for_room(&mut deadline, self.pipe_wait) {
                        cut_short(sent);
                        return Ok(Appended::NoRoom);
                    }
                }
                Err(e) => {
                    cut_short(sent);
                    return Err(e);
                }
            }
        }
    }
}

/// What became of a line.
enum Appended {
    /// Written whole.
    Written,
    /// Dropped: the pipe it went to had no room for it (or for all of it).
    NoRoom,
}

/// How often a write looks at the path unless set.
const DEFAULT_CHECK_EVERY: Duration = Duration::from_secs(1);

/// The longest a line waits for room in a pipe unless set.
const DEFAULT_PIPE_WAIT: Duration = Duration::from_secs(1);

/// Opens `path` for appending, making it (`0600`) if it is not there.
/// Never waits for a reader: a FIFO that no process reads is refused
/// (`ENXIO`), where a plain open would block its caller (whoever emitted
/// the event, for a rotation's reopen) until one came. Nor does it write
/// waiting for room: a write to a full pipe (a FIFO, `/dev/stdout` read by
/// a collector) fails at once (`EAGAIN`), where it would block its caller
/// until the reader read: the sink waits for room itself, for a bounded
/// time (`Opened::wait_for_room`). A regular file is written as ever
/// (non-blocking writes do not apply to it).
fn open_appending(path: &Path) -> Result<File> {
    let mut options = OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32);
    }
    options
        .open(path)
        .map_err(|e| Error::io("open for appending", path, e))
}

/// Whether the file at `path` is `file` (or cannot be told: a failed look
/// that is not "not found" keeps the file it has).
fn still_at(file: &File, path: &Path) -> bool {
    match std::fs::metadata(path) {
        Ok(there) => same(&file.metadata(), &there),
        Err(e) => e.kind() != io::ErrorKind::NotFound,
    }
}

/// Whether `file`, just opened at `path`, ends part way through a line: a
/// regular file whose last byte is not a newline, the fragment of a line
/// cut short (a writer killed in the middle of it, a full disk). The next
/// line starts with a newline then, so as not to join it. The sink's own
/// descriptor only appends: the byte is read through one of its own, opened
/// for a regular file alone (a FIFO has nothing to read back). A file that
/// cannot be read, or that is no longer the one at the path, is taken to
/// end a line.
#[cfg(unix)]
fn ends_mid_line(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let Ok(open) = file.metadata() else {
        return false;
    };
    if !open.is_file() || open.len() == 0 {
        return false;
    }
    // Never waits: a FIFO put at the path since is opened without a writer.
    let reader = OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path);
    let Ok(reader) = reader else {
        return false;
    };
    let mut last = [0];
    same(&reader.metadata(), &open)
        && matches!(reader.read_at(&mut last, open.len() - 1), Ok(1))
        && last[0] != b'\n'
}

/// Without file identities the file at the path cannot be told from the
/// one open: no fragment is looked for.
#[cfg(not(unix))]
fn ends_mid_line(_: &File, _: &Path) -> bool {
    false
}

/// Whether the file `open` stands for is `there` (or cannot be told).
fn same(open: &io::Result<std::fs::Metadata>, there: &std::fs::Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match open {
            Ok(open) => open.dev() == there.dev() && open.ino() == there.ino(),
            Err(_) => true,
        }
    }
    #[cfg(not(unix))]
    {
        // No stable file identity: only a removed file is seen.
        let _ = (open, there);
        true
    }
}

/// `d` in nanoseconds, saturating (`Duration::MAX` is "never").
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl EventSink for JsonLinesSink {
    fn emit(&self, event: &Event) {
        match self.append(event) {
            Ok(Appended::Written) => {
                self.written.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Appended::NoRoom) => self.no_room(),
            Err(e) => self.failed(&e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    thread_local! {
        /// Run once by this thread's next write, between reading whether a
        /// look at the path is due and claiming it: where another writer's
        /// whole line can come in between.
        static BEFORE_CLAIMING: Cell<Option<Box<dyn FnOnce()>>> = const { Cell::new(None) };
    }

    pub(super) fn before_claiming_the_look() {
        if let Some(hook) = BEFORE_CLAIMING.take() {
            hook();
        }
    }

    fn kinds_in(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                let line: serde_json::Value = serde_json::from_str(l).unwrap();
                line["kind"].as_str().unwrap().to_owned()
            })
            .collect()
    }

    /// `check_path_every(Duration::ZERO)` looks before every line: a
    /// writer whose look another writer's came in before (here, a whole
    /// line of the other's, after the file was removed) looks all the
    /// same. It skipped its look, and wrote its line to the removed file,
    /// counted as written.
    #[test]
    fn with_checks_zero_apart_a_writer_that_loses_the_race_to_look_still_looks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let sink = Arc::new(
            JsonLinesSink::open(&path)
                .unwrap()
                .check_path_every(Duration::ZERO),
        );
        std::fs::remove_file(&path).unwrap();
        let other = Arc::clone(&sink);
        BEFORE_CLAIMING.set(Some(Box::new(move || {
            other.emit(&Event::new("the-other-writer"));
        })));
        sink.emit(&Event::new("this-writer"));
        assert_eq!(sink.written(), 2);
        assert_eq!(
            kinds_in(&path),
            ["the-other-writer", "this-writer"],
            "every line counted as written is in the file at the path"
        );
    }
}
