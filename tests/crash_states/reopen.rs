//! Every crash state opens and reads back what was acknowledged: the one
//! loop of the targeted crash tests (compaction, set-aside, mixed
//! durabilities), each of which says what it looks for on the disk of a
//! state before the open and through the store opened on it.

use std::path::Path;

use taskstore::{Error, FileStore};

use crate::workload::STORE;

/// What the crash states of a test broke: how many states were checked,
/// and each broken promise as `<state's label>: <what>`.
#[derive(Debug, Default)]
pub struct Broken {
    pub states: usize,
    pub lines: Vec<String>,
}

impl Broken {
    /// Adds what `other` found.
    pub fn add(&mut self, other: Broken) {
        self.states += other.states;
        self.lines.extend(other.lines);
    }

    /// Fails, naming `what` and the first few broken promises, unless some
    /// state was checked and none broke anything.
    pub fn assert_none(&self, what: &str) {
        assert!(self.states > 0, "{what}: no crash state was checked");
        assert!(
            self.lines.is_empty(),
            "{what}: {} broken in {} crash states, the first: {:#?}",
            self.lines.len(),
            self.states,
            &self.lines[..self.lines.len().min(4)]
        );
    }
}

/// For each crash state of `states` (a label, and the directory the state
/// was written to, the store being [`STORE`] in it): `on_disk` looks at the
/// store's directory before anything opens it (what an open or a read
/// would repair), then `open` opens a store there, which must succeed, and
/// `reads` looks through it. Each gives what it found broken; the lines
/// come back prefixed with the state's label.
pub fn every_state(
    states: Vec<(String, std::path::PathBuf)>,
    open: impl Fn(&Path) -> Result<FileStore, Error>,
    mut on_disk: impl FnMut(&Path) -> Vec<String>,
    mut reads: impl FnMut(&FileStore) -> Vec<String>,
) -> Broken {
    let mut broken = Broken {
        states: states.len(),
        lines: Vec::new(),
    };
    for (label, at) in states {
        let root = at.join(STORE);
        let mut found = on_disk(&root);
        match open(&root) {
            Ok(store) => found.extend(reads(&store)),
            Err(e) => found.push(format!("open: {e}")),
        }
        broken
            .lines
            .extend(found.into_iter().map(|line| format!("{label}: {line}")));
    }
    broken
}

/// Nothing to look at on the disk before the open.
pub fn nothing(_: &Path) -> Vec<String> {
    Vec::new()
}
