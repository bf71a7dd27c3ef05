//! The tables printed at the end of a run (and written to
//! `target/compare-table.md`): ratios to the peers, the scaling of the rows
//! run at 100 and 10,000 active tasks, and the memory figures.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::RESULTS;
use crate::memory::MEMORY;

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn human(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// Whether `peer` is `taskstore` or another configuration of it.
fn is_ours(peer: &str) -> bool {
    peer == "taskstore" || peer.starts_with("taskstore-")
}

/// The peers a configuration of ours is compared with: for a variant
/// `taskstore-X`, the peers run the same way (`*-X`) if there are any
/// (`taskstore-processes` against `sqlite-processes`); otherwise, and for
/// `taskstore`, every peer that is not such a variant of another peer.
fn compared<'a>(ours: &str, others: &[(&'a str, f64)]) -> Vec<(&'a str, f64)> {
    let variants = ["-processes"];
    if let Some(mode) = ours.strip_prefix("taskstore") {
        let alike: Vec<_> = others
            .iter()
            .filter(|(p, _)| !mode.is_empty() && p.ends_with(mode))
            .copied()
            .collect();
        if !alike.is_empty() {
            return alike;
        }
    }
    others
        .iter()
        .filter(|(p, _)| !variants.iter().any(|v| p.ends_with(v)))
        .copied()
        .collect()
}

/// Prints every table and writes them to `target/compare-table.md`.
pub fn print() {
    let results = RESULTS.lock().unwrap();
    let mut out = String::new();
    if !results.is_empty() {
        ratios(&results, &mut out);
        scaling(&results, &mut out);
    }
    memory(&mut out);
    if out.is_empty() {
        return;
    }
    println!("\n{out}");
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let _ = std::fs::write(Path::new(&target).join("compare-table.md"), &out);
}

type Results = BTreeMap<String, BTreeMap<&'static str, Vec<f64>>>;

/// One row per (configuration of ours, peer compared): `taskstore` first,
/// then each `taskstore-…` variant, whose rows name it beside the workload.
fn ratios(results: &Results, out: &mut String) {
    out.push_str("| workload | taskstore | against | its time | taskstore / it |\n");
    out.push_str("|---|---|---|---|---|\n");
    for (workload, peers) in results.iter() {
        let mut ours: Vec<(&str, f64)> = peers
            .iter()
            .filter(|(p, _)| is_ours(p))
            .map(|(p, v)| (*p, median(v)))
            .collect();
        // `taskstore` first, then its variants by name.
        ours.sort_by_key(|(p, _)| *p != "taskstore");
        let others: Vec<(&str, f64)> = peers
            .iter()
            .filter(|(p, _)| !is_ours(p))
            .map(|(p, v)| (*p, median(v)))
            .collect();
        if ours.is_empty() {
            // A filtered run that left `taskstore` out: the peers alone.
            for (peer, theirs) in &others {
                let _ = writeln!(out, "| {workload} | | {peer} | {} | |", human(*theirs));
            }
        }
        for (name, time) in &ours {
            let label = if *name == "taskstore" {
                workload.clone()
            } else {
                format!("{workload} [{name}]")
            };
            let against = compared(name, &others);
            if against.is_empty() {
                let _ = writeln!(out, "| {label} | {} | | | |", human(*time));
            }
            for (i, (peer, theirs)) in against.iter().enumerate() {
                let first = if i == 0 {
                    (label.as_str(), human(*time))
                } else {
                    ("", String::new())
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {peer} | {} | {:.2} |",
                    first.0,
                    first.1,
                    human(*theirs),
                    time / theirs
                );
            }
        }
    }
}

/// For every workload run at 100 and at 10,000 active tasks (`…/100`,
/// `…/10000`, and `…/1000` when it ran): each peer's times and the ratio
/// 10,000 / 100 (100 times the tasks; 1.00 is flat, 100 linear).
fn scaling(results: &Results, out: &mut String) {
    let mut rows = String::new();
    for (workload, large) in results.iter() {
        let Some(stem) = workload.strip_suffix("/10000") else {
            continue;
        };
        let Some(small) = results.get(&format!("{stem}/100")) else {
            continue;
        };
        let middle = results.get(&format!("{stem}/1000"));
        for (peer, at_large) in large {
            let Some(at_small) = small.get(peer) else {
                continue;
            };
            let (s, l) = (median(at_small), median(at_large));
            let m = middle
                .and_then(|m| m.get(peer))
                .map_or(String::new(), |v| human(median(v)));
            let _ = writeln!(
                rows,
                "| {stem} | {peer} | {} | {m} | {} | {:.2} |",
                human(s),
                human(l),
                l / s
            );
        }
    }
    if !rows.is_empty() {
        out.push_str(
            "\n| workload | peer | at 100 active | at 1,000 | at 10,000 | 10,000 / 100 |\n",
        );
        out.push_str("|---|---|---|---|---|---|\n");
        out.push_str(&rows);
    }
}

/// Resident memory of a handle that listed the active tasks (measured in a
/// child process; see `memory.rs`), in MiB.
fn memory(out: &mut String) {
    let memory = MEMORY.lock().unwrap();
    if memory.is_empty() {
        return;
    }
    let mib = |kib: u64| format!("{:.1}", kib as f64 / 1024.0);
    out.push_str(
        "\n| workload | peer | RSS at start | after open | after a page of 100 | peak by then (VmHWM) | after listing all | all - start | peak (VmHWM) |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for (workload, peer, r) in memory.iter() {
        let _ = writeln!(
            out,
            "| {workload} | {peer} | {} | {} | {} | {} | {} | {} | {} |",
            mib(r.start),
            mib(r.opened),
            mib(r.after_page),
            mib(r.page_peak),
            mib(r.after_all),
            mib(r.after_all.saturating_sub(r.start)),
            mib(r.peak)
        );
    }
}
