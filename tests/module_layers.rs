//! The direction of the crate's dependencies: events and sinks know nothing
//! of the stores or the breakers (the vocabulary they need lives with the
//! events), so the stores and breakers depend on them and never the reverse.

use std::path::{Path, PathBuf};

/// The top-level modules that `events` and `sink` must not name.
const ABOVE: [&str; 13] = [
    "breaker",
    "store",
    "file",
    "memory",
    "mcp",
    "rules",
    "pg",
    "backend",
    "query",
    "lease",
    "limits",
    "changes",
    "conformance",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source of `file` without `//` comments (doc links are comments).
fn code(file: &Path) -> String {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first path segment of each item of a `crate::{a::b, c, ...}` group
/// that starts at `text` (just after the `{`).
fn group_heads(text: &str) -> Vec<String> {
    let mut heads = vec![];
    let (mut depth, mut item) = (1, String::new());
    for c in text.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth == 1 => break,
            '}' => depth -= 1,
            ',' if depth == 1 => {
                heads.push(std::mem::take(&mut item));
                continue;
            }
            _ => {}
        }
        if depth == 1 {
            item.push(c);
        }
    }
    heads.push(item);
    heads
        .iter()
        .map(|item| item.trim().split("::").next().unwrap_or("").to_owned())
        .collect()
}

/// Each path in the files under `src/<dir>` that reaches one of `ABOVE`:
/// `crate::breaker...`, an item of `crate::{breaker, ...}`, or anything
/// through `super::super`.
fn upward_references(dir: &str) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir);
    let mut files = vec![];
    rust_files(&root, &mut files);
    assert!(!files.is_empty(), "no sources under {}", root.display());
    let mut found = vec![];
    for file in files {
        let code = code(&file);
        let name = file.display();
        if code.contains("super::super") {
            found.push(format!("{name}: super::super"));
        }
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            let heads = match rest.strip_prefix('{') {
                Some(group) => group_heads(group),
                None => vec![
                    rest.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                        .next()
                        .unwrap_or("")
                        .to_owned(),
                ],
            };
            for head in heads {
                if ABOVE.contains(&head.as_str()) {
                    found.push(format!("{name}: crate::{head}"));
                }
            }
        }
    }
    found
}

#[test]
fn events_know_nothing_of_stores_or_breakers() {
    assert_eq!(upward_references("events"), Vec::<String>::new());
}

#[test]
fn sinks_know_nothing_of_stores_or_breakers() {
    assert_eq!(upward_references("sink"), Vec::<String>::new());
}

#[test]
fn the_check_finds_what_it_looks_for() {
    // The breakers name their own module, and a group is read item by item:
    // an empty answer above means something.
    let breaker = upward_references("breaker");
    assert!(
        breaker.iter().any(|r| r.ends_with("crate::breaker")),
        "{breaker:?}"
    );
    assert_eq!(
        group_heads("breaker::Breaker, events::{Event, EventKind}, store};"),
        ["breaker", "events", "store"]
    );
}
