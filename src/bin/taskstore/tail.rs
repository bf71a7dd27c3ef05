//! `tail`: the events of a JSON-lines file written by `JsonLinesSink`, one
//! per line: `{"at", "pid", "kind", "layer_from", "layer_to", "data"}`.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde::Deserialize;
use taskstore::{Event, EventKind};

use crate::Failure;
use crate::text::{self, out};

/// How often `--follow` looks at the file again.
const POLL: Duration = Duration::from_millis(200);

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
    /// replaced or recreated file is read again from its start.
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
    file: File,
    ino: u64,
    /// Bytes consumed so far.
    pos: u64,
    /// The start of a line not yet ended by a newline.
    pending: Vec<u8>,
    line: usize,
    bad: usize,
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
        file,
        ino,
        pos: 0,
        pending: Vec::new(),
        line: 0,
        bad: 0,
    };
    loop {
        reader.read_new()?;
        if !args.follow {
            // A last line with no newline: a writer that died mid-line.
            if !reader.pending.is_empty() {
                let rest = std::mem::take(&mut reader.pending);
                reader.handle(&rest);
            }
            break;
        }
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
    /// Reads what was appended since the last read, and handles every
    /// whole line.
    fn read_new(&mut self) -> Result<(), Failure> {
        let path = &self.args.file;
        let mut chunk = Vec::new();
        self.file
            .seek(SeekFrom::Start(self.pos))
            .and_then(|_| self.file.read_to_end(&mut chunk))
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        self.pos += chunk.len() as u64;
        self.pending.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(end) = self.pending[start..].iter().position(|&b| b == b'\n') {
            let line = self.pending[start..start + end].to_vec();
            self.handle(&line);
            start += end + 1;
        }
        self.pending.drain(..start);
        Ok(())
    }

    /// With `--follow`: starts again from the top of a truncated file, and
    /// reads a replaced or recreated one from its start, once what was
    /// written to the old one (a rotation renames it, and writers holding
    /// it open append to it until they reopen) is read to its end.
    fn check_file(&mut self) -> Result<(), Failure> {
        let path = &self.args.file;
        match fs::metadata(path) {
            Ok(meta) if meta.ino() != self.ino => {
                self.read_new()?;
                if !self.pending.is_empty() {
                    // The old file's last line, never ended.
                    let rest = std::mem::take(&mut self.pending);
                    self.handle(&rest);
                }
                text::err(format!(
                    "taskstore: {} was replaced; reading the new file from its start",
                    path.display()
                ));
                self.file = open(path)?;
                self.ino = meta.ino();
                self.restart();
            }
            Ok(meta) if meta.len() < self.pos => {
                text::err(format!(
                    "taskstore: {} was truncated; reading it from its start",
                    path.display()
                ));
                self.restart();
            }
            Ok(_) => {}
            // Removed: wait for it to come back.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot stat {}: {e}", path.display()).into()),
        }
        Ok(())
    }

    fn restart(&mut self) {
        self.pos = 0;
        self.line = 0;
        self.pending.clear();
    }

    /// Prints one line's event, if it passes the filters.
    fn handle(&mut self, raw: &[u8]) {
        self.line += 1;
        if raw.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let line: Line = match serde_json::from_slice(raw) {
            Ok(line) => line,
            Err(e) => {
                self.bad += 1;
                text::err(format!(
                    "taskstore: {}:{}: not an event: {e}",
                    self.args.file.display(),
                    self.line
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
            out(String::from_utf8_lossy(raw));
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
        out(text::plain(&readable, text::Newlines::Escape));
    }
}
