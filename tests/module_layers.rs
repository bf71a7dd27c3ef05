//! The direction of the crate's dependencies: events and sinks know nothing
//! of the stores or the breakers (the vocabulary they need lives with the
//! events), so the stores and breakers depend on them and never the reverse;
//! and no two of the crate's top-level modules depend on each other, however
//! indirectly (the module graph has no cycle).

use std::collections::{BTreeMap, BTreeSet};
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

/// `code` without its `#[cfg(test)]` items (a unit test may use any module:
/// it is not part of the crate's graph).
fn without_tests(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let item = &rest[at..];
        let (brace, semicolon) = (item.find('{'), item.find(';'));
        let end = match (brace, semicolon) {
            // `#[cfg(test)] mod tests;`: its file is skipped by name.
            (_, Some(semi)) if brace.is_none_or(|b| semi < b) => semi + 1,
            (Some(open), _) => {
                let mut depth = 0;
                let mut end = item.len();
                for (i, c) in item[open..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = open + i + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            _ => item.len(),
        };
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

/// The first segment of each path that starts at `rest` (just after
/// `crate::`): one name, or each item's of a `{...}` group.
fn heads(rest: &str) -> Vec<String> {
    match rest.strip_prefix('{') {
        Some(group) => group_heads(group),
        None => vec![
            rest.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .next()
                .unwrap_or("")
                .to_owned(),
        ],
    }
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
/// `crate::breaker...`, an item of `crate::{breaker, ...}`, a name the
/// crate root re-exports from one (`crate::Breaker`), or anything through
/// `super::super`.
fn upward_references(dir: &str) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir);
    let mut files = vec![];
    rust_files(&root, &mut files);
    assert!(!files.is_empty(), "no sources under {}", root.display());
    let (_, reexports) = modules_and_reexports();
    let mut found = vec![];
    for file in files {
        let code = code(&file);
        let name = file.display();
        if code.contains("super::super") {
            found.push(format!("{name}: super::super"));
        }
        for (i, _) in code.match_indices("crate::") {
            for head in heads(&code[i + "crate::".len()..]) {
                // A name the root re-exports counts as its module.
                let module = reexports.get(&head).unwrap_or(&head);
                if ABOVE.contains(&module.as_str()) {
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

/// The crate's top-level modules (`mod x;` in `src/lib.rs`), and the module
/// each name the crate root re-exports comes from (`pub use crate::x::{A, B}`),
/// so that `crate::A` counts as a use of `x`.
fn modules_and_reexports() -> (BTreeSet<String>, BTreeMap<String, String>) {
    let lib = code(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"));
    let mut modules = BTreeSet::new();
    let mut names = BTreeMap::new();
    for line in lib.lines() {
        let line = line.trim();
        let line = line.strip_prefix("pub ").unwrap_or(line);
        if let Some(name) = line.strip_prefix("mod ").and_then(|n| n.strip_suffix(';')) {
            modules.insert(name.trim().to_owned());
        }
    }
    for statement in lib.split(';') {
        if let Some(at) = statement.find("pub use crate::") {
            let path = &statement[at + "pub use crate::".len()..];
            let (module, items) = path.split_once("::").unwrap_or((path, ""));
            let items = items.trim();
            let items = items
                .strip_prefix('{')
                .and_then(|i| i.strip_suffix('}'))
                .unwrap_or(items);
            for item in items.split(',') {
                let name = item.split("::").last().unwrap_or("").trim();
                if !name.is_empty() {
                    names.insert(name.to_owned(), module.trim().to_owned());
                }
            }
        }
    }
    (modules, names)
}

/// Each top-level module's uses of the others, outside unit tests, with
/// where each was found.
fn module_graph() -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let (modules, reexports) = modules_and_reexports();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = BTreeMap::new();
    for module in &modules {
        let mut files = vec![];
        let dir = src.join(module);
        if dir.is_dir() {
            rust_files(&dir, &mut files);
        }
        let file = src.join(format!("{module}.rs"));
        if file.is_file() {
            files.push(file);
        }
        assert!(!files.is_empty(), "no sources for module {module}");
        let uses: &mut BTreeMap<String, Vec<String>> = graph.entry(module.clone()).or_default();
        for file in files {
            let test_only = file.components().any(|c| c.as_os_str() == "tests")
                || file.file_name().is_some_and(|n| {
                    n.to_str()
                        .is_some_and(|n| n == "tests.rs" || n.ends_with("_tests.rs"))
                });
            if test_only {
                continue;
            }
            let code = without_tests(&code(&file));
            for (i, _) in code.match_indices("crate::") {
                for head in heads(&code[i + "crate::".len()..]) {
                    let target = if modules.contains(&head) {
                        Some(head.clone())
                    } else {
                        reexports.get(&head).cloned()
                    };
                    if let Some(target) = target.filter(|t| t != module) {
                        uses.entry(target)
                            .or_default()
                            .push(format!("{}: crate::{head}", file.display()));
                    }
                }
            }
        }
    }
    graph
}

/// Every cycle of `graph`, each as the modules along it (first = last), at
/// most one per module that starts one.
fn cycles(graph: &BTreeMap<String, BTreeMap<String, Vec<String>>>) -> Vec<Vec<String>> {
    fn walk(
        graph: &BTreeMap<String, BTreeMap<String, Vec<String>>>,
        at: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        for next in graph.get(at).into_iter().flat_map(|uses| uses.keys()) {
            if next == &path[0] {
                let mut cycle = path.clone();
                cycle.push(next.clone());
                return Some(cycle);
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if let Some(cycle) = walk(graph, next, path, seen) {
                    return Some(cycle);
                }
                path.pop();
            }
        }
        None
    }
    graph
        .keys()
        .filter_map(|start| walk(graph, start, &mut vec![start.clone()], &mut BTreeSet::new()))
        .collect()
}

#[test]
fn the_module_graph_has_no_cycle() {
    let graph = module_graph();
    let found: Vec<String> = cycles(&graph)
        .iter()
        .map(|cycle| {
            let first = &graph[&cycle[0]][&cycle[1]][0];
            format!("{} (first: {first})", cycle.join(" -> "))
        })
        .collect();
    assert_eq!(found, Vec::<String>::new());
}

#[test]
fn the_graph_check_finds_what_it_looks_for() {
    let graph = module_graph();
    // Uses through a path, a group and a root re-export are all found.
    assert!(
        graph["rules"].contains_key("backend"),
        "{:?}",
        graph["rules"]
    );
    assert!(graph["error"].contains_key("id"), "{:?}", graph["error"]);
    let (modules, reexports) = modules_and_reexports();
    assert!(modules.contains("events") && modules.contains("conformance"));
    assert_eq!(reexports["TaskStore"], "store");
    assert_eq!(reexports["FileStore"], "file");
    // A unit test's uses are not the module's.
    assert_eq!(
        without_tests("use crate::a;\n#[cfg(test)]\nmod tests { use crate::b; }\nuse crate::c;"),
        "use crate::a;\n\nuse crate::c;"
    );
    // A cycle, however long, is found; a graph without one gives none.
    let mut toy: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for (from, to) in [("a", "b"), ("b", "c"), ("c", "d")] {
        toy.entry(from.into())
            .or_default()
            .insert(to.into(), vec![]);
    }
    assert!(cycles(&toy).is_empty());
    toy.entry("d".into())
        .or_default()
        .insert("b".into(), vec![]);
    assert_eq!(cycles(&toy)[0], ["b", "c", "d", "b"]);
}
