//! What the commands print: lines on stdout (a closed pipe ends the command
//! quietly, with the status it has earned so far) and on stderr (a write
//! that fails there is dropped), durations read and written the short way
//! ("10m", "2h13m"), tables, sizes, and progress on a terminal.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, PoisonError, mpsc};
use std::time::Duration;

use taskstore::UnreadableAction;
use taskstore::backend::Skipped;
use time::OffsetDateTime;

/// Prints one line on stdout, every control character escaped
/// ([`plain`]): a newline in a path or in task data never splits it into a
/// line that reads as another. A reader that went away (`taskstore list |
/// head`) ends the command with the status it has earned so far: success,
/// unless it said it is failing ([`failing`]: `verify` that found problems,
/// a sweep that missed tasks), so that a pipeline never reads a failure as
/// a success. Any other write error fails it.
pub fn out(line: impl AsRef<str>) {
    write_out(&plain(line.as_ref(), Newlines::Escape));
}

/// Prints text of several lines on stdout (pretty JSON), every control
/// character but the newline escaped, as [`out`] does.
pub fn out_lines(text: impl AsRef<str>) {
    write_out(&plain(text.as_ref(), Newlines::Keep));
}

/// The status a closed stdout ends the command with ([`failing`]).
static EARNED: AtomicU8 = AtomicU8::new(0);

/// Says the command will exit with a failure whatever it prints: a closed
/// stdout ends it with status 1, not success.
pub fn failing() {
    EARNED.store(1, Ordering::Relaxed);
}

/// The status of a command that knows, before it prints, whether it
/// `failed` ([`failing`] if so): decided once, for its end and for a closed
/// stdout alike.
pub fn earned(failed: bool) -> ExitCode {
    if failed {
        failing();
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// What became of stdout for the lines printed as a store call goes
/// ([`out_as_it_goes`]): [`FINE`], [`GONE`] or [`FAILED`].
static STDOUT: AtomicU8 = AtomicU8::new(FINE);
const FINE: u8 = 0;
/// Its reader went away.
const GONE: u8 = 1;
/// A write failed otherwise (said on stderr).
const FAILED: u8 = 2;

/// Prints one line on stdout from inside a store call that reports as it
/// goes (each task a sweep deletes), every control character escaped, as
/// [`out`] does; but a stdout that takes no more does not end the command
/// there, in the middle of the pass, which goes on to its end and its
/// status, and the lines after are dropped. A reader that went away is
/// quiet; any other error is said once on stderr, and fails the command
/// ([`stdout_failed`]).
///
/// The line is written by a thread of its own, never by the store call: a
/// reader slow to take its lines (a pager, a full pipe) must not hold the
/// call up with it (a store tells its sink with no lock held, but for a
/// sweep's deletions past 10,000, which it tells under its pass's lock: the
/// thread keeps another process from waiting on the reader then too).
/// Lines wait in memory for such a reader; [`stdout_failed`] waits for
/// them all to be written. A process that can start no thread (its limit
/// of processes reached) writes each line here, as the call goes.
pub fn out_as_it_goes(line: impl AsRef<str>) {
    if STDOUT.load(Ordering::Relaxed) != FINE {
        return;
    }
    let line = plain(line.as_ref(), Newlines::Escape).into_owned();
    let mut writer = AS_IT_GOES.lock().unwrap_or_else(PoisonError::into_inner);
    if writer.is_none() {
        let (lines, waiting) = mpsc::channel::<String>();
        let started = std::thread::Builder::new().spawn(move || {
            for line in waiting {
                write_as_it_goes(&line);
            }
        });
        match started {
            Ok(written) => *writer = Some((lines, written)),
            Err(_) => {
                drop(writer);
                write_as_it_goes(&line);
                return;
            }
        }
    }
    let (lines, _) = writer.as_ref().expect("started above");
    // The thread ends only once the sender is dropped.
    let _ = lines.send(line);
}

/// Writes a line of [`out_as_it_goes`], unless stdout took no more.
fn write_as_it_goes(line: &str) {
    if STDOUT.load(Ordering::Relaxed) != FINE {
        return;
    }
    match try_write_out(line) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
            STDOUT.store(GONE, Ordering::Relaxed);
        }
        Err(e) => {
            write_err(&format!("taskstore: error: cannot write to stdout: {e}\n"));
            STDOUT.store(FAILED, Ordering::Relaxed);
        }
    }
}

/// The thread writing [`out_as_it_goes`]'s lines, and where they go to it.
type AsItGoes = (mpsc::Sender<String>, std::thread::JoinHandle<()>);
static AS_IT_GOES: Mutex<Option<AsItGoes>> = Mutex::new(None);

/// Whether a line printed as a store call went ([`out_as_it_goes`]) could
/// not be written, its reader not gone: the command fails. Waits until
/// every such line is written (or dropped, its reader gone).
pub fn stdout_failed() -> bool {
    let writer = AS_IT_GOES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    if let Some((lines, written)) = writer {
        drop(lines);
        let _ = written.join();
    }
    STDOUT.load(Ordering::Relaxed) == FAILED
}

fn try_write_out(line: &str) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(line.as_bytes())
        .and_then(|()| stdout.write_all(b"\n"))
}

fn write_out(line: &str) {
    match try_write_out(line) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
            std::process::exit(EARNED.load(Ordering::Relaxed).into())
        }
        Err(e) => {
            write_err(&format!("taskstore: error: cannot write to stdout: {e}\n"));
            std::process::exit(1);
        }
    }
}

/// The line that says a stored entry was skipped: where, why, and what
/// was done with it (set aside, and where to; or left in place).
pub fn skipped(skipped: &Skipped) -> String {
    let done = match (skipped.action, &skipped.moved_to) {
        (UnreadableAction::SetAside, Some(to)) => format!("set aside into {to}"),
        (UnreadableAction::SetAside, None) => "set aside".to_owned(),
        (UnreadableAction::LeftInPlace, _) => "left in place".to_owned(),
        (other, _) => other.to_string(),
    };
    format!(
        "taskstore: skipped {}: {} ({done})",
        skipped.location, skipped.reason
    )
}

/// Prints one line on stderr, every control character escaped.
pub fn err(line: impl AsRef<str>) {
    write_err(&format!("{}\n", plain(line.as_ref(), Newlines::Escape)));
}

/// Writes `text` on stderr, and drops it if the write fails (a closed pipe,
/// a full disk): there is nowhere left to say so, and the command goes on
/// to the status it earns, as it would have with the message read.
/// (`eprint!` panics instead, exit 101, which a caller would read as a
/// crash, and a failing command's 1 as lost.)
fn write_err(text: &str) {
    let _ = io::stderr().lock().write_all(text.as_bytes());
}

/// Whether [`plain`] keeps newlines.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Newlines {
    /// Kept: text of several lines (pretty JSON).
    Keep,
    /// Escaped: what must stay one line (a table's cell, an event's line).
    Escape,
}

/// `text` with its control characters (ESC, DEL, the C1 set; and the
/// newline, unless kept) and Unicode's bidirectional controls written as
/// `\uXXXX`: task data, file names and event lines reach a terminal as
/// text, never as commands to it, nor as a line that forges another or
/// shows its characters in another order. Inside a JSON string the escape
/// means the same character, so a JSON line stays the same value.
pub fn plain(text: &str, newlines: Newlines) -> Cow<'_, str> {
    let escape = |c: char| {
        (c.is_control() && !(c == '\n' && newlines == Newlines::Keep)) || is_bidi_control(c)
    };
    if !text.chars().any(escape) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if escape(c) {
            let _ = write!(escaped, "\\u{:04x}", u32::from(c));
        } else {
            escaped.push(c);
        }
    }
    Cow::Owned(escaped)
}

/// Unicode's bidirectional controls: the arabic letter mark, the
/// left-to-right and right-to-left marks, the embeddings and overrides
/// (U+202A to U+202E) and the isolates (U+2066 to U+2069). A terminal that
/// follows them shows the text around them in another order.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Reads a duration written the short way: one or more `<number><unit>`
/// with units `ms`, `s`, `m`, `h`, `d`, `w` (`"10m"`, `"2h"`, `"1h30m"`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad =
        |why: &str| format!("invalid duration {text:?}: {why} (for example 30s, 10m, 2h, 1d)");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad("empty"));
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad("expected a number"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| bad("number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3_600),
            "d" => Duration::from_secs(86_400),
            "w" => Duration::from_secs(7 * 86_400),
            "" => return Err(bad("a number needs a unit")),
            _ => return Err(bad("unknown unit")),
        };
        rest = &rest[unit_len..];
        let part = u32::try_from(number)
            .ok()
            .and_then(|n| unit.checked_mul(n))
            .ok_or_else(|| bad("too long"))?;
        total = total.checked_add(part).ok_or_else(|| bad("too long"))?;
    }
    Ok(total)
}

/// A duration the short way, to two units: `850ms`, `42s`, `3m12s`,
/// `2h13m`, `4d2h`.
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1_000 {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    let units = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    let first = units.iter().position(|(size, _)| s >= *size).unwrap_or(3);
    let (size, name) = units[first];
    let mut out = format!("{}{name}", s / size);
    if let Some((next, next_name)) = units.get(first + 1) {
        let rest = (s % size) / next;
        if rest > 0 {
            let _ = write!(out, "{rest}{next_name}");
        }
    }
    out
}

/// A duration in whole milliseconds, as `--json` writes it (`u64::MAX` past
/// what a `u64` holds).
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// How long before `now` the instant `at` was (zero if it is later).
pub fn since(now: OffsetDateTime, at: OffsetDateTime) -> Duration {
    Duration::try_from(now - at).unwrap_or(Duration::ZERO)
}

/// RFC 3339 as `time` writes it (a fraction without its trailing zeros,
/// none at a whole second): for instants the CLI reports (`now`, when a
/// task expired). A task's own stamps are written as the task writes
/// them, nine fraction digits (its serialization), not by this.
pub fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.to_string())
}

/// A size in bytes, the short way: `512 B`, `1.2 KiB`, `3.4 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1_024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1_024.0;
    for unit in UNITS {
        if value < 1_024.0 || unit == "TiB" {
            return format!("{value:.1} {unit}");
        }
        value /= 1_024.0;
    }
    unreachable!("the last unit returns")
}

/// A table printed as its rows come: each column as wide as its widest
/// cell among the header and the first `look_ahead` rows, which it holds
/// until it has them all (or [`finish`](Table::finish)); a later row wider
/// than those is printed as it is, pushing its own row's next cells on. The
/// last column is not padded. Each cell is one line ([`plain`]). So it
/// holds `look_ahead` rows at most, however many it prints.
pub struct Table {
    header: Vec<String>,
    look_ahead: usize,
    /// The rows held until the widths are chosen; `None` once they are.
    held: Option<Vec<Vec<String>>>,
    widths: Vec<usize>,
}

impl Table {
    pub fn new(header: &[&str], look_ahead: usize) -> Table {
        Table {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            look_ahead: look_ahead.max(1),
            held: Some(Vec::new()),
            widths: header.iter().map(|h| h.chars().count()).collect(),
        }
    }

    /// Prints `row`, or holds it while the widths are still being chosen.
    pub fn row(&mut self, row: Vec<String>) {
        let row: Vec<String> = row
            .iter()
            .map(|c| plain(c, Newlines::Escape).into_owned())
            .collect();
        match &mut self.held {
            Some(held) => {
                for (w, cell) in self.widths.iter_mut().zip(&row) {
                    *w = (*w).max(cell.chars().count());
                }
                held.push(row);
                if held.len() >= self.look_ahead {
                    self.flush();
                }
            }
            None => out(self.line(&row)),
        }
    }

    /// Prints the header and the rows held, if not yet printed: a table
    /// with no rows is its header.
    pub fn finish(mut self) {
        self.flush();
    }

    fn flush(&mut self) {
        if let Some(held) = self.held.take() {
            out(self.line(&self.header));
            for row in &held {
                out(self.line(row));
            }
        }
    }

    fn line(&self, cells: &[String]) -> String {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(&self.widths).enumerate() {
            if i + 1 == self.widths.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<width$}  ");
            }
        }
        text.trim_end().to_owned()
    }
}

/// Cuts `text` to `max` characters, marking the cut.
pub fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// `"\r N/M"` on stderr while long work goes on, only when stderr is a
/// terminal; quiet when it is piped.
pub struct Progress {
    on: bool,
    shown: bool,
    last: std::time::Instant,
}

impl Progress {
    pub fn new() -> Progress {
        Progress {
            on: io::stderr().is_terminal(),
            shown: false,
            last: std::time::Instant::now(),
        }
    }

    /// `done` of `total` entries.
    pub fn update(&mut self, done: usize, total: usize) {
        if !self.on || (done < total && self.last.elapsed() < Duration::from_millis(100)) {
            return;
        }
        self.last = std::time::Instant::now();
        self.shown = true;
        write_err(&format!("\r {done}/{total}"));
    }

    /// Clears the progress line, if one was shown.
    pub fn finish(&mut self) {
        if self.shown {
            write_err("\r\x1b[K");
            self.shown = false;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_and_write_the_short_way() {
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7_200)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1w1d"), Ok(Duration::from_secs(8 * 86_400)));
        for bad in [
            "",
            "10",
            "m",
            "10x",
            "1h 5m",
            "-1s",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(duration(Duration::from_millis(850)), "850ms");
        assert_eq!(duration(Duration::from_secs(42)), "42s");
        assert_eq!(duration(Duration::from_secs(192)), "3m12s");
        assert_eq!(duration(Duration::from_secs(7_980)), "2h13m");
        assert_eq!(duration(Duration::from_secs(7_200)), "2h");
        assert_eq!(duration(Duration::from_secs(86_400 * 4 + 7_200)), "4d2h");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1_536), "1.5 KiB");
    }
}
