//! `tail`: the events of a JSON-lines file written by `JsonLinesSink`, one
//! per line: `{"at", "pid", "kind", "layer_from", "layer_to", "data"}`.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Deserialize;
use taskstore::{Event, EventKind};

use crate::Failure;
use crate::text::{self, out};

/// How often `--follow` looks at the file again.
const POLL: Duration = Duration::from_millis(200);

/// How long `--follow` keeps reading a file rotated by renaming after it
/// last grew: its writers append to it until they reopen the path
/// (`JsonLinesSink` looks once a second).
const ROTATED_QUIET: Duration = Duration::from_secs(5);

/// How much of the file is read at a time.
const CHUNK: usize = 64 << 10;

/// How many of a file's first bytes `--follow` compares at each look, to
/// see it truncated and written again past where the reading was (a line's
/// time, to the nanosecond, is among them).
const HEAD: usize = 64;

/// The longest line kept: a longer one is reported by its number and
/// skipped, and one never ended grows no further in memory.
const MAX_LINE: usize = 16 << 20;

/// The kind a `--kind` names: one of the crate's own if the name is one of
/// theirs, else a host's own (so events are compared as kinds, not names).
fn kind_named(name: &str) -> Result<EventKind, std::convert::Infallible> {
    Ok(EventKind::from(name.to_owned()))
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// The JSON-lines file (as `JsonLinesSink::open` was given).
    file: PathBuf,
    /// Keeps reading as the file grows (until interrupted); a truncated,
    /// replaced or recreated file is read again from its start, and one
    /// rotated by renaming is read on as it grows, until quiet for 5 s.
    #[arg(long, short)]
    follow: bool,
    /// Only events of this kind, by its exact name ("task.completed",
    /// "breaker.opened", or a host's own).
    #[arg(long, value_parser = kind_named)]
    kind: Option<EventKind>,
    /// Only events about this task (their data's taskId).
    #[arg(long, value_name = "ID")]
    task: Option<String>,
    /// Prints each event's line as written, instead of a readable line.
    #[arg(long)]
    json: bool,
    /// Shows only the last N events the file holds (of those --kind and
    /// --task keep), as tail(1) does, then with --follow every new one.
    /// A file is read back from its end, a block at a time, only as far as
    /// those N, and read on from its end (a pipe is read whole; followed,
    /// as far as it holds for now): a bad line among what is read is
    /// reported, by its byte offset unless its line number is known.
    /// Without it, every event.
    #[arg(short = 'n', long, value_name = "N")]
    lines: Option<usize>,
}

/// Where a line of the file is, as a report names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum At {
    /// Its number, counted from the file's start.
    Line(usize),
    /// The offset of its first byte: a reading that started in the middle
    /// of the file (`--lines`) does not know the numbers.
    Byte(u64),
}

/// One line of the file.
#[derive(Deserialize)]
struct Line {
    at: String,
    #[serde(default)]
    pid: Option<u32>,
    #[serde(flatten)]
    event: Event,
}

/// Where the reading is.
struct Reader<'a> {
    args: &'a TailArgs,
    /// The file at the path, and its inode.
    current: Source,
    ino: u64,
    bad: usize,
    /// A file rotated by renaming, still read as its writers go on
    /// appending to it, and when it last grew.
    rotated: Option<(Source, Instant)>,
    /// With `--lines N`, until the file has been read to its end once: the
    /// last N events' lines, to print then.
    held: Option<(usize, VecDeque<String>)>,
}

/// A file being read.
struct Source {
    file: File,
    /// Bytes consumed so far.
    pos: u64,
    /// Whether the file's offset must be set to `pos` before the next read
    /// (after a restart; reads move it on by themselves, and a pipe, which
    /// cannot seek, never restarts).
    seek: bool,
    /// What each read reads into.
    buf: Vec<u8>,
    /// The file's first bytes as read (up to [`HEAD`]): a file truncated
    /// and written again past where the reading was, between two looks,
    /// no longer starts with them.
    head: Vec<u8>,
    /// The start of a line not yet ended by a newline.
    pending: Vec<u8>,
    /// The length so far of a line past [`MAX_LINE`] not yet ended (its
    /// bytes are not kept).
    skipping: Option<u64>,
    /// Lines read so far, if the reading started at the file's start.
    line: Option<usize>,
    /// Where the line not yet ended starts.
    line_start: u64,
}

/// A line read.
enum Got {
    Line(Vec<u8>),
    /// A line past [`MAX_LINE`], skipped: its length.
    TooLong(u64),
}

/// A line read, judged ([`Reader::judged`]) once.
enum Judged {
    /// An event the filters keep: its line as printed.
    Shown(String),
    /// An event the filters leave out, or a blank line.
    Left,
    /// No event: why.
    Bad(String),
    /// A line past [`MAX_LINE`]: its length.
    TooLong(u64),
}

/// At most this many lines that are no event are held while a file is
/// read back ([`read_back`]); past them, the lines are read again from
/// where the last N start, as they come, rather than held.
const HELD_BAD: usize = 1_024;

/// What reading a file back from its end found ([`read_back`]).
struct ReadBack {
    /// Where the earliest of the last N lines the filters keep starts (or
    /// 0, if there are fewer).
    start: u64,
    /// Where the reading goes on: after the last line judged (the end, or,
    /// following, the start of a last line not yet ended).
    resume: u64,
    /// How many lines are before `resume`, if the reading went back to the
    /// file's start.
    lines_before: Option<usize>,
    /// The lines from `start` to `resume` the reading holds, judged, in the
    /// file's order (those the filters leave out are not held): where each
    /// starts, how many lines from `resume` back it is (1: the last), and
    /// what it is. `None` if more than [`HELD_BAD`] are no event: they are
    /// then read again from `start`.
    held: Option<Vec<(u64, usize, Judged)>>,
}

impl Source {
    fn new(file: File) -> Source {
        Source {
            file,
            pos: 0,
            seek: false,
            buf: vec![0; CHUNK],
            head: Vec::new(),
            pending: Vec::new(),
            skipping: None,
            line: Some(0),
            line_start: 0,
        }
    }

    /// Makes the next read start at `from`, the start of a line, after
    /// `lines_before` lines if they are known (numbering the lines from
    /// there), or without numbering them; keeps the file's first bytes, as
    /// reading them would have.
    fn start_at(&mut self, from: u64, lines_before: Option<usize>) -> io::Result<()> {
        let mut head = vec![0; usize::try_from(from).map_or(HEAD, |from| from.min(HEAD))];
        self.file.read_exact_at(&mut head, 0)?;
        self.head = head;
        self.pos = from;
        self.seek = true;
        self.line = if from == 0 { Some(0) } else { lines_before };
        self.line_start = from;
        Ok(())
    }

    /// Where the line not yet ended is, counted as ended.
    fn next_line(&mut self) -> At {
        match &mut self.line {
            Some(number) => {
                *number += 1;
                At::Line(*number)
            }
            None => At::Byte(self.line_start),
        }
    }

    /// Reads the next chunk appended since the last read: its whole lines,
    /// with where they are; `None` once there is nothing more to read.
    fn read_chunk(&mut self, path: &Path) -> Result<Option<Vec<(At, Got)>>, Failure> {
        let cannot = |e: io::Error| format!("cannot read {}: {e}", path.display());
        if self.seek {
            self.file.seek(SeekFrom::Start(self.pos)).map_err(cannot)?;
            self.seek = false;
        }
        let mut buf = std::mem::take(&mut self.buf);
        let read = loop {
            match self.file.read(&mut buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                read => break read,
            }
        };
        let read = match read {
            Ok(read) => read,
            // A pipe followed, read without blocking: nothing more for now.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => {
                self.buf = buf;
                return Err(cannot(e).into());
            }
        };
        if read == 0 {
            self.buf = buf;
            return Ok(None);
        }
        if let Some(room) = usize::try_from(self.pos)
            .ok()
            .and_then(|pos| HEAD.checked_sub(pos))
        {
            self.head.extend_from_slice(&buf[..read.min(room)]);
        }
        let base = self.pos;
        self.pos += read as u64;
        let mut lines = Vec::new();
        let mut from = 0;
        while let Some(length) = buf[from..read].iter().position(|&b| b == b'\n') {
            let end = from + length;
            self.take_in(&buf[from..end]);
            let at = self.next_line();
            lines.push((at, self.ended()));
            from = end + 1;
            self.line_start = base + from as u64;
        }
        self.take_in(&buf[from..read]);
        self.buf = buf;
        Ok(Some(lines))
    }

    /// Adds `bytes` to the line not yet ended, or only counts them once it
    /// is past [`MAX_LINE`].
    fn take_in(&mut self, bytes: &[u8]) {
        if let Some(skipped) = &mut self.skipping {
            *skipped += bytes.len() as u64;
            return;
        }
        self.pending.extend_from_slice(bytes);
        if self.pending.len() > MAX_LINE {
            self.skipping = Some(self.pending.len() as u64);
            self.pending = Vec::new();
        }
    }

    /// The line not yet ended, taken as ended.
    fn ended(&mut self) -> Got {
        match self.skipping.take() {
            Some(length) => Got::TooLong(length),
            None => Got::Line(std::mem::take(&mut self.pending)),
        }
    }

    /// A last line never ended (a writer that died mid-line), with where
    /// it is.
    fn rest(&mut self) -> Option<(At, Got)> {
        (!self.pending.is_empty() || self.skipping.is_some())
            .then(|| (self.next_line(), self.ended()))
    }

    /// Whether the file no longer starts with the bytes read from its
    /// start (truncated and written again); a failed read says nothing.
    fn rewritten(&self) -> bool {
        use std::os::unix::fs::FileExt;
        if self.head.is_empty() {
            return false;
        }
        let mut now = vec![0; self.head.len()];
        match self.file.read_exact_at(&mut now, 0) {
            Ok(()) => now != self.head,
            Err(_) => false,
        }
    }

    fn restart(&mut self) {
        self.pos = 0;
        self.seek = true;
        self.head.clear();
        self.line = Some(0);
        self.line_start = 0;
        self.pending.clear();
        self.skipping = None;
    }
}

pub fn run(args: &TailArgs) -> Result<ExitCode, Failure> {
    let path = &args.file;
    let file = open(path, args.follow)?;
    let ino = file
        .metadata()
        .map_err(|e| format!("cannot stat {}: {e}", path.display()))?
        .ino();
    let mut reader = Reader {
        args,
        current: Source::new(file),
        ino,
        bad: 0,
        rotated: None,
        held: args.lines.map(|n| (n, VecDeque::new())),
    };
    if let Some(n) = args.lines {
        reader.start_at_last(n)?;
    }
    loop {
        reader.read_rotated()?;
        reader.read_new()?;
        if !args.follow {
            if let Some((at, rest)) = reader.current.rest() {
                reader.handle(at, rest);
            }
            reader.show_held();
            break;
        }
        reader.show_held();
        std::thread::sleep(POLL);
        reader.check_file()?;
    }
    Ok(if reader.bad > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The file at `path`, opened to read it; one that is a pipe (a FIFO,
/// `/dev/stdin`), to `follow` it, is read without blocking: what it holds
/// is what it gives until it has nothing more for now, and the lines held
/// for `--lines` are printed then, not once it closes. (Its own open file
/// description: its writer's, and another reader's, read as they did.)
fn open(path: &Path, follow: bool) -> Result<File, Failure> {
    let file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let pipe = file.metadata().is_ok_and(|meta| meta.file_type().is_fifo());
    if follow && pipe {
        use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};
        fcntl_getfl(&file)
            .and_then(|flags| fcntl_setfl(&file, flags | OFlags::NONBLOCK))
            .map_err(|e| format!("cannot read {} without blocking: {e}", path.display()))?;
    }
    Ok(file)
}

/// Reads the first `len` bytes of `file` back from `len`, a block at a time
/// (one line of at most [`MAX_LINE`] held at a time), judging each line
/// once (`judge`), as far as the start of the earliest of the last `n`
/// lines `judge` shows, or to the file's start if there are fewer; holds
/// what it judged from there on, so that nothing is read twice. A last line
/// no newline ends counts only if `unended` (as a reading to the end takes
/// it); else the reading resumes at its start, to read it whole once it is
/// ended.
fn read_back(
    file: &File,
    len: u64,
    n: usize,
    unended: bool,
    judge: impl Fn(Got) -> Judged,
) -> io::Result<ReadBack> {
    let mut back = ReadBack {
        start: len,
        resume: len,
        lines_before: None,
        held: Some(Vec::new()),
    };
    if n == 0 && unended {
        return Ok(back);
    }
    let mut buf = vec![0; CHUNK];
    // The line being read back: its pieces, the last first, kept only while
    // it is no longer than a line may be, and its length.
    let mut pieces: Vec<Vec<u8>> = Vec::new();
    let mut length: u64 = 0;
    // Whether it is the one after the last newline.
    let mut last = true;
    // Lines judged, and those `judge` showed.
    let mut counted = 0;
    let mut found = 0;
    let mut bad = 0;
    let mut pos = len;
    // Judges the line read back, which starts at `at`; whether it was the
    // earliest of the last `n`.
    let mut line_done =
        |at: u64, pieces: &mut Vec<Vec<u8>>, length: u64, last: bool, back: &mut ReadBack| {
            if last && (length == 0 || !unended) {
                // After the last newline: nothing, or a line not yet ended,
                // read once it is.
                back.resume = at;
            } else {
                counted += 1;
                let got = if length <= MAX_LINE as u64 {
                    Got::Line(pieces.iter().rev().flatten().copied().collect())
                } else {
                    Got::TooLong(length)
                };
                match judge(got) {
                    Judged::Left => {}
                    judged => {
                        if matches!(judged, Judged::Shown(_)) {
                            found += 1;
                        } else {
                            bad += 1;
                        }
                        if bad > HELD_BAD {
                            back.held = None;
                        }
                        if let Some(held) = &mut back.held {
                            held.push((at, counted, judged));
                        }
                    }
                }
            }
            pieces.clear();
            found == n
        };
    while pos > 0 {
        let start = pos.saturating_sub(CHUNK as u64);
        let block = &mut buf[..usize::try_from(pos - start).unwrap_or(CHUNK)];
        file.read_exact_at(block, start)?;
        let mut end = block.len();
        loop {
            let newline = block[..end].iter().rposition(|&b| b == b'\n');
            let from = newline.map_or(0, |i| i + 1);
            length += (end - from) as u64;
            if length <= MAX_LINE as u64 {
                pieces.push(block[from..end].to_vec());
            } else {
                pieces.clear();
            }
            let Some(newline) = newline else { break };
            // The line read back starts after this newline.
            let at = start + from as u64;
            if line_done(at, &mut pieces, length, last, &mut back) {
                back.start = at;
                return Ok(back.in_order());
            }
            length = 0;
            last = false;
            end = newline;
        }
        pos = start;
    }
    // The file's first line.
    if len > 0 {
        line_done(0, &mut pieces, length, last, &mut back);
    }
    back.start = 0;
    back.lines_before = Some(counted);
    Ok(back.in_order())
}

impl ReadBack {
    /// The lines held in the file's order (they were read back).
    fn in_order(mut self) -> ReadBack {
        if let Some(held) = &mut self.held {
            held.reverse();
        }
        self
    }
}

impl Reader<'_> {
    /// With `--lines N`: makes a file's reading start at the first of its
    /// last N events the filters keep, found reading back from its end, so
    /// that what is before them is never read. A pipe, which cannot be
    /// read back, is read whole (holding the last N).
    fn start_at_last(&mut self, n: usize) -> Result<(), Failure> {
        let path = &self.args.file;
        let meta = self
            .current
            .file
            .metadata()
            .map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
        if !meta.is_file() {
            return Ok(());
        }
        let unended = !self.args.follow;
        let back = read_back(&self.current.file, meta.len(), n, unended, |got| {
            self.judged(got)
        });
        let started = back.and_then(|back| match back.held {
            Some(held) => {
                self.current.start_at(back.resume, back.lines_before)?;
                for (start, from_end, judged) in held {
                    let at = match back.lines_before {
                        Some(lines) => At::Line(lines + 1 - from_end),
                        None => At::Byte(start),
                    };
                    self.take(at, judged);
                }
                Ok(())
            }
            // Too many bad lines to hold: read again from the start of the
            // last N.
            None => self.current.start_at(back.start, None),
        });
        match started {
            Ok(()) => Ok(()),
            // Truncated meanwhile: read what it holds from its start.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                self.current.restart();
                Ok(())
            }
            Err(e) => Err(format!("cannot read {}: {e}", path.display()).into()),
        }
    }

    /// Reads what the file at the path got since the last read, and
    /// handles every whole line.
    ///
    /// Following, each chunk is kept only if the file still starts as it
    /// did after the chunk was read: a file truncated and refilled between
    /// the last look and this read would give lines from the middle of the
    /// new one. It is then read from its start.
    fn read_new(&mut self) -> Result<(), Failure> {
        while let Some(lines) = self.current.read_chunk(&self.args.file)? {
            if self.args.follow && self.current.rewritten() {
                self.truncated();
                continue;
            }
            for (at, line) in lines {
                self.handle(at, line);
            }
        }
        Ok(())
    }

    /// Says the file was truncated, and reads it again from its start.
    fn truncated(&mut self) {
        text::err(format!(
            "taskstore: {} was truncated; reading it from its start",
            self.args.file.display()
        ));
        self.current.restart();
    }

    /// With `--follow`: starts again from the top of a truncated file, and
    /// reads a replaced or recreated one from its start, going on reading
    /// the old one (a rotation renames it, and writers holding it open
    /// append to it until they reopen) in [`read_rotated`](Self::read_rotated).
    fn check_file(&mut self) -> Result<(), Failure> {
        let path = &self.args.file;
        match fs::metadata(path) {
            // A pipe (`tail /dev/stdin`) is neither truncated nor replaced:
            // it is read on as it comes.
            Ok(meta) if !meta.is_file() && meta.ino() == self.ino => {}
            Ok(meta) if meta.ino() != self.ino => {
                self.read_new()?;
                text::err(format!(
                    "taskstore: {} was replaced; reading the new file from its start",
                    path.display()
                ));
                let old = std::mem::replace(&mut self.current, Source::new(open(path, true)?));
                self.ino = meta.ino();
                // An older rotated file is done with.
                self.end_rotated();
                self.rotated = Some((old, Instant::now()));
            }
            Ok(meta) if meta.len() < self.current.pos || self.current.rewritten() => {
                self.truncated();
            }
            Ok(_) => {}
            // Removed: wait for it to come back.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot stat {}: {e}", path.display()).into()),
        }
        Ok(())
    }

    /// Reads what a file rotated by renaming got since the last look, until
    /// it has been quiet for [`ROTATED_QUIET`].
    fn read_rotated(&mut self) -> Result<(), Failure> {
        let Some((mut rotated, grew)) = self.rotated.take() else {
            return Ok(());
        };
        let before = rotated.pos;
        while let Some(lines) = rotated.read_chunk(&self.args.file)? {
            for (at, line) in lines {
                self.handle(at, line);
            }
        }
        let grew = if rotated.pos > before {
            Instant::now()
        } else {
            grew
        };
        self.rotated = Some((rotated, grew));
        if grew.elapsed() >= ROTATED_QUIET {
            self.end_rotated();
        }
        Ok(())
    }

    /// Ends the reading of a rotated file: its last line, if never ended,
    /// is handled as it is.
    fn end_rotated(&mut self) {
        if let Some((mut rotated, _)) = self.rotated.take()
            && let Some((at, rest)) = rotated.rest()
        {
            self.handle(at, rest);
        }
    }

    /// Prints `line`, the one of an event, or holds it among the last N
    /// (`--lines N`) until the file has been read to its end once.
    fn show(&mut self, line: String) {
        match &mut self.held {
            Some((n, held)) => {
                held.push_back(line);
                if held.len() > *n {
                    held.pop_front();
                }
            }
            None => out(line),
        }
    }

    /// Prints the events held (`--lines N`), once the file has been read
    /// to its end: from then on, each is printed as it is read.
    fn show_held(&mut self) {
        if let Some((_, held)) = self.held.take() {
            held.into_iter().for_each(out);
        }
    }

    /// Where line `at` of the file is, as a report names it.
    fn place(&self, at: At) -> String {
        let path = self.args.file.display();
        match at {
            At::Line(number) => format!("{path}:{number}"),
            At::Byte(offset) => format!("{path}: the line at byte {offset}"),
        }
    }

    /// Prints the event of the line at `at`, if it passes the filters; a
    /// line too long to keep, or that is no event, is reported.
    fn handle(&mut self, at: At, got: Got) {
        let judged = self.judged(got);
        self.take(at, judged);
    }

    /// What line `got` is: the event printed, one the filters leave out, or
    /// why it is none.
    fn judged(&self, got: Got) -> Judged {
        match got {
            Got::TooLong(length) => Judged::TooLong(length),
            Got::Line(raw) => match self.judge(&raw) {
                Ok(Some(line)) => Judged::Shown(line),
                Ok(None) => Judged::Left,
                Err(e) => Judged::Bad(e.to_string()),
            },
        }
    }

    /// Prints (or holds) the event of the line at `at`, judged; reports a
    /// line too long to keep, or that is no event.
    fn take(&mut self, at: At, judged: Judged) {
        match judged {
            Judged::Shown(line) => self.show(line),
            Judged::Left => {}
            Judged::TooLong(length) => {
                self.bad += 1;
                text::failing();
                text::err(format!(
                    "taskstore: {}: a line of {length} bytes, over the {} MiB a line \
                     may be; skipped",
                    self.place(at),
                    MAX_LINE >> 20
                ));
            }
            Judged::Bad(e) => {
                self.bad += 1;
                text::failing();
                text::err(format!("taskstore: {}: not an event: {e}", self.place(at)));
            }
        }
    }

    /// The line `raw` as it is printed, if it is an event the filters keep
    /// (`None` for one they leave out, and for a blank line); why not, if
    /// it is no event.
    fn judge(&self, raw: &[u8]) -> Result<Option<String>, serde_json::Error> {
        if raw.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        let line: Line = serde_json::from_slice(raw)?;
        let event = &line.event;
        if self
            .args
            .kind
            .as_ref()
            .is_some_and(|kind| event.kind != *kind)
        {
            return Ok(None);
        }
        if self
            .args
            .task
            .as_deref()
            .is_some_and(|id| event.data.get("taskId").and_then(|v| v.as_str()) != Some(id))
        {
            return Ok(None);
        }
        if self.args.json {
            // It parsed, so a tab, line feed or carriage return in it can
            // only be the whitespace between its tokens (inside a string
            // JSON escapes them): a space, so that the line stays JSON. Any
            // other control character (DEL, the C1 set) is inside a string,
            // where `out` escapes it as the same character.
            let line: String = String::from_utf8_lossy(raw)
                .trim_end_matches('\r')
                .chars()
                .map(|c| {
                    if matches!(c, '\t' | '\n' | '\r') {
                        ' '
                    } else {
                        c
                    }
                })
                .collect();
            return Ok(Some(line));
        }
        let layers = match (&event.layer_from, &event.layer_to) {
            (Some(from), Some(to)) => format!("{from} -> {to}"),
            (None, Some(to)) => format!("-> {to}"),
            (Some(from), None) => format!("{from} ->"),
            (None, None) => "-".to_owned(),
        };
        let pid = line.pid.map_or("-".to_owned(), |p| p.to_string());
        let readable = format!(
            "{}  {pid}  {}  {layers}  {}",
            line.at, event.kind, event.data
        );
        Ok(Some(
            text::plain(&readable, text::Newlines::Escape).into_owned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file holding `text`.
    fn file_of(text: &[u8]) -> File {
        use std::io::Write as _;
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(text).unwrap();
        file
    }

    /// Reads `text` back as far as the last `n` lines that start with `x`.
    fn back(text: &[u8], n: usize, unended: bool) -> ReadBack {
        let judge = |got: Got| match got {
            Got::Line(line) if line.first() == Some(&b'x') => {
                Judged::Shown(String::from_utf8(line).unwrap())
            }
            Got::Line(line) if line.first() == Some(&b'!') => Judged::Bad("bad".to_owned()),
            Got::Line(_) => Judged::Left,
            Got::TooLong(length) => Judged::TooLong(length),
        };
        read_back(&file_of(text), text.len() as u64, n, unended, judge).unwrap()
    }

    /// Where the reading of the last `n` lines that start with `x` starts.
    fn start(text: &[u8], n: usize, unended: bool) -> u64 {
        back(text, n, unended).start
    }

    /// What the reading back holds: each line shown or bad, where it
    /// starts and how far from the end it is; and where it resumes, after
    /// how many lines.
    #[test]
    fn a_reading_back_holds_what_it_judged_once() {
        let text = b"x0\n!1\ny2\nx3\nx4";
        let held = |back: &ReadBack| -> Vec<(u64, usize, String)> {
            back.held
                .as_ref()
                .unwrap()
                .iter()
                .map(|(at, from_end, judged)| {
                    let what = match judged {
                        Judged::Shown(line) => line.clone(),
                        Judged::Bad(why) => why.clone(),
                        _ => "?".to_owned(),
                    };
                    (*at, *from_end, what)
                })
                .collect()
        };
        // Following: the last line, not ended, is left for later.
        let one = back(text, 1, false);
        assert_eq!((one.start, one.resume, one.lines_before), (9, 12, None));
        assert_eq!(held(&one), [(9, 1, "x3".to_owned())]);
        let two = back(text, 2, false);
        assert_eq!((two.start, two.resume, two.lines_before), (0, 12, Some(4)));
        assert_eq!(
            held(&two),
            [
                (0, 4, "x0".to_owned()),
                (3, 3, "bad".to_owned()),
                (9, 1, "x3".to_owned())
            ],
            "a line the filters leave out is not held"
        );
        let all = back(text, 9, true);
        assert_eq!((all.start, all.resume, all.lines_before), (0, 14, Some(5)));
        assert_eq!(
            held(&all),
            [
                (0, 5, "x0".to_owned()),
                (3, 4, "bad".to_owned()),
                (9, 2, "x3".to_owned()),
                (12, 1, "x4".to_owned()),
            ]
        );
        // Past `HELD_BAD` lines that are no event, nothing is held.
        let many = "!\n".repeat(HELD_BAD + 1) + "x\n";
        let many = back(many.as_bytes(), 2, true);
        assert_eq!((many.start, many.held.is_none()), (0, true));
    }

    /// Lines are found back from the end across blocks: one longer than a
    /// block, one split by a block's edge.
    #[test]
    fn the_last_lines_are_found_across_blocks() {
        let long = format!("x{}\n", "a".repeat(CHUNK + 10));
        let text = [
            "x0\n".to_owned(),
            "skip\n".to_owned(),
            long.clone(),
            "y\n".to_owned(),
            "x3\n".to_owned(),
        ]
        .concat();
        let text = text.as_bytes();
        let at_long = 3 + 5;
        let at_x3 = text.len() as u64 - 3;
        assert_eq!(start(text, 1, true), at_x3);
        assert_eq!(start(text, 2, true), at_long);
        assert_eq!(start(text, 3, true), 0);
        assert_eq!(start(text, 4, true), 0);
        assert_eq!(start(text, 0, true), text.len() as u64);
        assert_eq!(start(text, 0, false), text.len() as u64);
    }

    /// A last line no newline ends counts when the reading goes to the end
    /// (as it takes it), and else is read from its start once ended.
    #[test]
    fn a_last_line_not_ended_counts_only_when_asked() {
        let text = b"x0\nx1\nx2";
        assert_eq!(start(text, 1, true), 6);
        assert_eq!(start(text, 1, false), 3);
        assert_eq!(start(text, 0, false), 6);
        assert_eq!(start(b"", 1, true), 0);
        assert_eq!(start(b"no newline", 1, false), 0);
    }

    /// A line past `MAX_LINE` is not held, and never counts.
    #[test]
    fn a_line_too_long_is_not_held() {
        let mut text = b"x0\n".to_vec();
        text.push(b'x');
        text.extend(std::iter::repeat_n(b'a', MAX_LINE + 1));
        text.extend(b"\nx2\n");
        assert_eq!(start(&text, 1, true), text.len() as u64 - 3);
        assert_eq!(start(&text, 2, true), 0);
    }
}
