//! The summary: per file system and kind of call, how many cuts broke one of
//! its acknowledgements.

use super::check::Checked;
use super::record::{Image, Op};
use super::*;

// --- The summary: per file system and call, how many cuts broke it. ---

#[derive(Default)]
pub(crate) struct Tally {
    by_fs: BTreeMap<FileSystem, FsTally>,
}

#[derive(Default)]
struct FsTally {
    cuts: usize,
    /// By call: (cuts after which its acknowledgements were checked, cuts
    /// that found one broken).
    by_op: BTreeMap<Op, (usize, usize)>,
    /// Cuts with damage that is no one call's: torn files, unreadable stores.
    other: usize,
    /// Cuts after which repair did more than the routine.
    repaired: usize,
}

impl Tally {
    pub(crate) fn add(&mut self, fs: FileSystem, image: &Image, checked: &Checked) {
        let t = self.by_fs.entry(fs).or_default();
        t.cuts += 1;
        let mut ops: Vec<Op> = image.acks.values().map(|a| a.op).collect();
        if image.opened.is_some() {
            ops.push(Op::Open);
        }
        ops.sort();
        ops.dedup();
        for op in ops {
            let broken = checked.findings.iter().any(|f| f.broken == Some(op));
            let entry = t.by_op.entry(op).or_default();
            entry.0 += 1;
            entry.1 += usize::from(broken);
        }
        t.other += usize::from(checked.findings.iter().any(|f| f.broken.is_none()));
        t.repaired += usize::from(!checked.repairs.is_empty());
    }

    /// One line per file system.
    pub(crate) fn print(&self) {
        for (fs, t) in &self.by_fs {
            let ops: Vec<String> = t
                .by_op
                .iter()
                .map(|(op, (checked, broken))| format!("{} {broken}/{checked}", op.name()))
                .collect();
            say(&format!(
                "[{}] {} cuts. Cuts that broke an acknowledgement, by call: {}. \
                 Cuts with other damage: {}. Cuts needing more than routine repair: {}.",
                fs.name(),
                t.cuts,
                ops.join(", "),
                t.other,
                t.repaired
            ));
        }
    }
}
