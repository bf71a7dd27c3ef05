//! What the command prints of task data and paths: control and bidirectional
//! characters escaped, paths that are not UTF-8, no forged lines.

use super::*;

/// Makes a task with `message` in a store at `dir`, and checks that
/// `list`, `list --json` and `show` print none of the characters `shown`
/// refuses (`shown(c)` true for a character that may be printed as it is)
/// and that the JSON ones read back `message`: the table, for the caller
/// to check further.
fn escaped_everywhere(dir: &Path, message: &str, shown: impl Fn(char) -> bool) -> String {
    let task = open(dir)
        .create(NewTask::new().status_message(message))
        .unwrap();
    let clean = |out: &Output| {
        let text = String::from_utf8(out.stdout.clone()).unwrap();
        assert!(text.chars().all(&shown), "{text:?}");
        text
    };
    let table = clean(&run_expect(Some(dir), &["list"], 0));
    let out = run_expect(Some(dir), &["list", "--json"], 0);
    clean(&out);
    assert_eq!(json_lines(&out)[0]["statusMessage"], message);
    let out = run_expect(Some(dir), &["show", task.id.as_str()], 0);
    let shown: Value = serde_json::from_str(&clean(&out)).unwrap();
    assert_eq!(shown["statusMessage"], message);
    table
}

/// Task data reaches a terminal as text: a status message or an owner
/// holding escape sequences, a bell, DEL, a C1 control or a newline is
/// printed with them escaped (`\u001b`), in the table and in JSON, which
/// still reads back the same value; a newline cannot forge a row. (They
/// were printed raw.)
#[test]
fn task_data_never_reaches_the_terminal_as_control_characters() {
    let (_tmp, dir) = store_dir();
    let message = "hi \u{1b}]0;pwned\u{7}\u{1b}[31mred\u{7f}\u{9b}2J\nforged row";
    let table = escaped_everywhere(&dir, message, |c| !c.is_control() || c == '\n');
    assert_eq!(table.lines().count(), 2, "a header and one row: {table}");
    assert!(table.contains("\\u001b]0;pwned"), "{table}");
}

/// Task data and names cannot reorder what a terminal shows: a Unicode
/// bidirectional control (U+202E RIGHT-TO-LEFT OVERRIDE, U+2066 to
/// U+2069 the isolates, the marks) in a status message or a file name is
/// printed escaped, in the table and in JSON, which still reads back the
/// same value. (They were printed as they are: an owner could make a row
/// read as another.)
#[test]
fn bidirectional_controls_are_escaped() {
    let (_tmp, dir) = store_dir();
    let bidi = [
        '\u{202e}', '\u{202c}', '\u{2066}', '\u{2069}', '\u{200f}', '\u{61c}',
    ];
    let message = "ok \u{202e}deliaf\u{202c} \u{2066}x\u{2069} \u{200f}\u{61c}";
    let table = escaped_everywhere(&dir, message, |c| !bidi.contains(&c));
    assert!(table.contains("\\u202edeliaf\\u202c"), "{table}");
    fs::write(dir.join("active").join("a\u{202e}nosj.x"), b"x").unwrap();
    let out = run_expect(Some(&dir), &["verify"], 1);
    let text = stdout(&out);
    assert!(!text.contains('\u{202e}'), "{text:?}");
    assert!(text.contains("a\\u202enosj.x"), "{text}");
}

/// A file name or a store path that is not UTF-8 is reported, lossily, as
/// JSON text must be: `verify --json` lists the problem and exits 1, and
/// `stats` works on such a store. (Both panicked: exit 101.)
#[test]
fn paths_that_are_not_utf8_are_reported_not_a_panic() {
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(std::ffi::OsStr::from_bytes(b"store-\xff"));
    open(&dir).create(NewTask::new()).unwrap();
    let stray = dir
        .join("active")
        .join(std::ffi::OsStr::from_bytes(b"\xff.json"));
    fs::write(&stray, b"{}").unwrap();
    let out = run_expect(Some(&dir), &["verify", "--json"], 1);
    let problems = json_lines(&out);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0]["path"]
            .as_str()
            .unwrap()
            .ends_with("\u{fffd}.json"),
        "{problems:?}"
    );
    fs::remove_file(&stray).unwrap();
    for args in [&["stats"][..], &["stats", "--json"][..]] {
        run_expect(Some(&dir), args, 0);
    }
}

/// A newline in a path (a foreign file's name, which is just what verify
/// reports, or the store's own path) never splits a line of the plain
/// output into one that reads as another problem or figure. (It forged a
/// `verify` and `repair` line, and split `stats`'s store line.)
#[test]
fn a_newline_in_a_path_forges_no_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store\nFORGED store line");
    open(&dir).create(NewTask::new()).unwrap();
    fs::write(
        dir.join("active")
            .join("x\nFORGED: mode 0644, expected 0600"),
        b"x",
    )
    .unwrap();
    for (args, code) in [
        (&["verify"][..], 1),
        (&["repair"][..], 0),
        (&["stats"][..], 0),
    ] {
        let out = run_expect(Some(&dir), args, code);
        let text = stdout(&out);
        assert!(
            !text.lines().any(|l| l.starts_with("FORGED")),
            "{args:?}:\n{text}"
        );
        assert!(
            text.contains("\\u000aFORGED"),
            "{args:?} shows the newline escaped:\n{text}"
        );
    }
}
