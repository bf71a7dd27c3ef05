//! `tail`: the events of a JSON-lines file written by `JsonLinesSink`, one
//! per line: `{"at", "pid", "kind", "layer_from", "layer_to", "data"}`.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
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
    /// Every line is still read, and a bad one reported wherever it is.
    /// Without it, every event.
    #[arg(short = 'n', long, value_name = "N")]
    lines: Option<usize>,
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
    /// Lines read so far.
    line: usize,
}

/// A line read.
enum Got {
    Line(Vec<u8>),
    /// A line past [`MAX_LINE`], skipped: its length.
    TooLong(u64),
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
            line: 0,
        }
    }

    /// Reads the next chunk appended since the last read: its whole lines,
    /// with their numbers; `None` once there is nothing more to read.
    fn read_chunk(&mut self, path: &Path) -> Result<Option<Vec<(usize, Got)>>, Failure> {
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
        self.pos += read as u64;
        let mut lines = Vec::new();
        let mut rest = &buf[..read];
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            self.take_in(&rest[..end]);
            rest = &rest[end + 1..];
            self.line += 1;
            lines.push((self.line, self.ended()));
        }
        self.take_in(rest);
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

    /// A last line never ended (a writer that died mid-line), with its
    /// number.
    fn rest(&mut self) -> Option<(usize, Got)> {
        (!self.pending.is_empty() || self.skipping.is_some()).then(|| {
            self.line += 1;
            (self.line, self.ended())
        })
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
        self.line = 0;
        self.pending.clear();
        self.skipping = None;
    }
}

pub fn run(args: &TailArgs) -> Result<ExitCode, Failure> {
    let path = &args.file;
    let file = open(path)?;
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
    loop {
        reader.read_rotated()?;
        reader.read_new()?;
        if !args.follow {
            if let Some((number, rest)) = reader.current.rest() {
                reader.handle(number, rest);
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

fn open(path: &Path) -> Result<File, Failure> {
    File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()).into())
}

impl Reader<'_> {
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
            for (number, line) in lines {
                self.handle(number, line);
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
                let old = std::mem::replace(&mut self.current, Source::new(open(path)?));
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
            for (number, line) in lines {
                self.handle(number, line);
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
            && let Some((number, rest)) = rotated.rest()
        {
            self.handle(number, rest);
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

    /// Prints the event of line `number`, if it passes the filters; a line
    /// too long to keep is reported.
    fn handle(&mut self, number: usize, got: Got) {
        let raw = match got {
            Got::Line(raw) => raw,
            Got::TooLong(length) => {
                self.bad += 1;
                text::failing();
                text::err(format!(
                    "taskstore: {}:{number}: a line of {length} bytes, over the {} MiB a line \
                     may be; skipped",
                    self.args.file.display(),
                    MAX_LINE >> 20
                ));
                return;
            }
        };
        let raw = raw.as_slice();
        if raw.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let line: Line = match serde_json::from_slice(raw) {
            Ok(line) => line,
            Err(e) => {
                self.bad += 1;
                text::failing();
                text::err(format!(
                    "taskstore: {}:{}: not an event: {e}",
                    self.args.file.display(),
                    number
                ));
                return;
            }
        };
        let event = &line.event;
        if self
            .args
            .kind
            .as_ref()
            .is_some_and(|kind| event.kind != *kind)
        {
            return;
        }
        if self
            .args
            .task
            .as_deref()
            .is_some_and(|id| event.data.get("taskId").and_then(|v| v.as_str()) != Some(id))
        {
            return;
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
            self.show(line);
            return;
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
        self.show(text::plain(&readable, text::Newlines::Escape).into_owned());
    }
}
