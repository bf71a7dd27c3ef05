//! The documents speak of the repository as it is: every test that
//! CONSISTENCY.md, ARCHITECTURE.md, FORMAT.md or CHANGELOG.md cites exists, no document sends the
//! reader to a document outside the repository, and the README reads as
//! plain Markdown while its examples compile (each `rust` block is a doc
//! test with no hidden lines; an `rs` block, which rustdoc does not test,
//! is a program under `examples/` or `docs/`, compiled there, word for
//! word).

use std::fs;
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The Rust sources under `dir`, recursively.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// Whether a function named `name` (or, for `prefix*`, one whose name
/// starts so) is defined in one of `files`.
fn defines(files: &[PathBuf], name: &str) -> bool {
    let needle = match name.strip_suffix('*') {
        Some(prefix) => format!("fn {prefix}"),
        None => format!("fn {name}("),
    };
    files
        .iter()
        .any(|f| fs::read_to_string(f).is_ok_and(|s| s.contains(&needle)))
}

/// The `a::b::c` names in backticks in `text` that look like test paths.
fn cited(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            s.contains("::")
                && s.split("::").all(|part| {
                    !part.is_empty()
                        && part.chars().all(|c| {
                            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '*'
                        })
                })
        })
        .map(str::to_owned)
        .collect()
}

/// Where a cited name must be defined: its test file, the conformance
/// suite, or the crate's sources (a unit test, `module::tests::function`).
fn files_for(first: &str) -> Option<Vec<PathBuf>> {
    let root = Path::new(ROOT);
    if first == "conformance" {
        return Some(sources(&root.join("src/conformance")));
    }
    let file = root.join("tests").join(format!("{first}.rs"));
    let dir = root.join("tests").join(first);
    if file.exists() || dir.is_dir() {
        let mut files = sources(&dir);
        if file.exists() {
            files.push(file);
        }
        return Some(files);
    }
    root.join("src")
        .join(first)
        .exists()
        .then(|| sources(&root.join("src")))
        .or_else(|| {
            root.join("src")
                .join(format!("{first}.rs"))
                .exists()
                .then(|| sources(&root.join("src")))
        })
}

#[test]
fn every_test_the_documents_cite_exists() {
    let mut missing = Vec::new();
    let mut checked = 0;
    for doc in [
        "CONSISTENCY.md",
        "ARCHITECTURE.md",
        "FORMAT.md",
        "CHANGELOG.md",
    ] {
        let text = fs::read_to_string(Path::new(ROOT).join(doc)).unwrap();
        for name in cited(&text) {
            let parts: Vec<&str> = name.split("::").collect();
            let last = parts[parts.len() - 1];
            if last == "function" {
                // The naming scheme itself, explained.
                continue;
            }
            let Some(files) = files_for(parts[0]) else {
                // Not a test path (a crate path such as `taskstore::mcp`).
                continue;
            };
            if last == "*" {
                assert!(!files.is_empty(), "{doc}: {name}: no such test file");
                continue;
            }
            checked += 1;
            if !defines(&files, last) {
                missing.push(format!("{doc}: {name}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "cited tests that do not exist:\n{}",
        missing.join("\n")
    );
    assert!(
        checked > 50,
        "only {checked} cited tests found: is the parser right?"
    );
}

/// The `path/to/file.rs::function` names in backticks in `text`: a test
/// cited by its file (the unit tests under `src/`).
fn cited_in_files(text: &str) -> Vec<(String, String)> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|s| {
            let (file, name) = s.split_once(".rs::")?;
            let plain = |t: &str, extra: &[char]| {
                !t.is_empty()
                    && t.chars().all(|c| {
                        c.is_ascii_lowercase()
                            || c.is_ascii_digit()
                            || c == '_'
                            || extra.contains(&c)
                    })
            };
            (plain(file, &['/', '-']) && plain(name, &[]))
                .then(|| (format!("{file}.rs"), name.to_owned()))
        })
        .collect()
}

#[test]
fn every_test_the_documents_cite_by_file_exists() {
    let mut missing = Vec::new();
    let mut checked = 0;
    for doc in ["CONSISTENCY.md", "ARCHITECTURE.md", "FORMAT.md"] {
        let text = fs::read_to_string(Path::new(ROOT).join(doc)).unwrap();
        for (file, name) in cited_in_files(&text) {
            if name == "function" {
                // The naming scheme itself, explained.
                continue;
            }
            checked += 1;
            let path = Path::new(ROOT).join(&file);
            if !defines(&[path], &name) {
                missing.push(format!("{doc}: {file}::{name}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "cited tests that do not exist:\n{}",
        missing.join("\n")
    );
    assert!(
        checked > 5,
        "only {checked} tests cited by file: is the parser right?"
    );
}

#[test]
fn no_document_sends_the_reader_outside_the_repository() {
    let mut found = Vec::new();
    for doc in [
        "README.md",
        "ARCHITECTURE.md",
        "CONSISTENCY.md",
        "FORMAT.md",
        "BENCHMARKS.md",
        "CHANGELOG.md",
    ] {
        let text = fs::read_to_string(Path::new(ROOT).join(doc)).unwrap();
        for (n, line) in text.lines().enumerate() {
            let lower = line.to_lowercase();
            if lower.contains("design.md")
                || lower.contains("../shared")
                || lower.contains("issue #")
                || lower.contains("issue 1")
                || lower.contains("issue 2")
                || lower.contains("issue 3")
                || lower.contains("issue 4")
                || lower.contains("issue 5")
                || lower.contains("issue 6")
                || lower.contains("issue 7")
                || lower.contains("issue 8")
                || lower.contains("issue 9")
            {
                found.push(format!("{doc}:{}: {line}", n + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "references outside the repository:\n{}",
        found.join("\n")
    );
}

/// The README's code blocks of `lang`, in order.
fn readme_blocks(lang: &str) -> Vec<String> {
    let readme = fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let mut blocks = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        if line == format!("```{lang}") {
            let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
            blocks.push(body.join("\n") + "\n");
        }
    }
    blocks
}

#[test]
fn the_readme_reads_as_plain_markdown_and_its_examples_compile() {
    let doc_tests = readme_blocks("rust");
    assert!(!doc_tests.is_empty(), "the README has doc-tested examples");
    for block in &doc_tests {
        for line in block.lines() {
            assert!(
                !(line == "#" || line.starts_with("# ")),
                "a rustdoc-hidden line shows in the README: {line:?}"
            );
        }
    }
    let ignored = readme_blocks("rs");
    // Example programs, and docs/use_with_rmcp.rs (the doc example of
    // `taskstore::mcp`).
    let examples: Vec<String> = ["examples", "docs"]
        .iter()
        .flat_map(|dir| sources(&Path::new(ROOT).join(dir)))
        .map(|p| fs::read_to_string(p).unwrap())
        .collect();
    for block in ignored {
        assert!(
            examples.contains(&block),
            "a README block rustdoc does not test is no program under examples/ or docs/:\n{block}"
        );
    }
}
