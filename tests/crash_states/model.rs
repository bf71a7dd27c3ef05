//! The persistence model: replays the seam calls a store made and says which
//! on-disk states a power loss could leave behind at each point.
//!
//! What is on disk is a set of directories holding names that point at
//! inodes and at other directories (each directory an identity of its own,
//! so that an exchange of two, a compaction's swap, moves their contents
//! with their names). Two copies of that namespace are kept: the *live* one (what the running process sees)
//! and the *durable* one (what survives a power loss for sure). A change to a
//! name (create, rename in, rename out, unlink, mkdir) goes to the live
//! namespace at once and into the pending list; it reaches the durable
//! namespace only when its own directory is fsynced after it. An inode's
//! bytes likewise: every write goes to its live content, and only an fsync of
//! the file makes that content durable (a never-fsynced file is durably
//! empty). A rename is two changes, one per name, so across directories its
//! halves become durable independently. An exchange of two names
//! (`RENAME_EXCHANGE`) is one change: a power loss keeps both halves or
//! neither. A later change to one of its names (say the removal of the old
//! directory a compaction swapped out) is a change of its own: each name
//! ends at the value of its last applied change, so where it is applied it
//! stands whether the exchange is or not. A directory removed (empty) is a
//! change to its parent's name.
//!
//! An inode whose last live name goes (an unlink, or a rename over it) is
//! *freed*: a file system without a journal may write the freeing before the
//! directory change that dropped the name, and its repair then clears every
//! name still pointing at the inode. So while a durable or pending name can
//! still point at a freed inode, a power loss may leave that name cleared
//! (or, as ever, holding the inode's durable content). Reuse of the freed
//! inode by another file is not modelled: the repair outcome is.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use taskstore::FsEvent;

/// All combinations are tried while there are at most this many; beyond it,
/// the structured sample (see [`Disk::crash_states`]).
const EXHAUSTIVE: usize = 256;

type Ino = usize;
/// A directory's identity: the base's own is 0.
type DirId = usize;

/// What a name points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Node {
    File(Ino),
    Dir(DirId),
}

type Entries = BTreeMap<OsString, Node>;

/// A change to one name, made in the live namespace, not yet durable.
#[derive(Clone, Debug)]
struct Change {
    dir: DirId,
    name: OsString,
    to: Option<Node>,
    /// The exchange it is half of: both halves become durable together.
    exchange: Option<usize>,
}

#[derive(Clone, Debug, Default)]
struct Inode {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// Live names pointing at it.
    links: usize,
    /// Its last live name went: a repair may clear names still pointing at it.
    freed: bool,
}

/// The modelled disk under one base directory.
#[derive(Clone, Debug)]
pub struct Disk {
    base: PathBuf,
    live: BTreeMap<DirId, Entries>,
    durable: BTreeMap<DirId, Entries>,
    pending: Vec<Change>,
    inodes: Vec<Inode>,
    /// Directories made so far (the base included): the next one's id.
    dirs: DirId,
    /// Exchanges made so far.
    exchanges: usize,
}

/// One thing a power loss decides: the value of one name, or the content of
/// one inode. Choice 0 is "nothing since the last fsync survived".
#[derive(Clone, Debug)]
enum Item {
    Entry {
        dir: DirId,
        name: OsString,
        /// The durable value first, then each value a pending change gave
        /// the name (deduplicated), each with whether that change came
        /// after a pending exchange of the name (then it stands whether the
        /// exchange is applied or not).
        values: Vec<(Option<Node>, bool)>,
        /// The live value's index.
        applied: usize,
    },
    Content {
        ino: Ino,
        /// Durable content, a prefix of the live content (if it is another
        /// value), the live content.
        values: Vec<Vec<u8>>,
    },
    /// A freed inode some durable or pending name still points at: choice 0
    /// keeps those names, choice 1 (the freeing written) clears them.
    Freed { ino: Ino },
    /// A pending exchange of two names of `dir`: choice 0 leaves each as
    /// its own changes before it left it, choice 1 gives both the values
    /// the exchange gave them.
    Exchange {
        dir: DirId,
        halves: [(OsString, Option<Node>); 2],
    },
}

impl Item {
    fn len(&self) -> usize {
        match self {
            Item::Entry { values, .. } => values.len(),
            Item::Content { values, .. } => values.len(),
            Item::Freed { .. } | Item::Exchange { .. } => 2,
        }
    }

    fn applied(&self) -> usize {
        match self {
            Item::Entry { applied, .. } => *applied,
            Item::Content { values, .. } => values.len() - 1,
            Item::Freed { .. } | Item::Exchange { .. } => 1,
        }
    }
}

/// A directory tree as a power loss could leave it: paths relative to the
/// base, parents first; `None` is a directory. A file with several names
/// (a finished task's `done/` file and its `expiring/` entry) is one file:
/// the second field maps each later name's index to its first name's.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tree(Vec<(PathBuf, Option<Vec<u8>>)>, BTreeMap<usize, usize>);

impl Tree {
    /// A digest of the whole tree, names and bytes.
    pub fn digest(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.hash(&mut h);
        h.finish()
    }

    /// Writes the tree under `at`, which must exist and be empty: a file
    /// with several names gets them as hard links of one file.
    pub fn materialize(&self, at: &Path) {
        for (i, (rel, kind)) in self.0.iter().enumerate() {
            let path = at.join(rel);
            match (kind, self.1.get(&i)) {
                (None, _) => fs::create_dir(&path),
                (Some(_), Some(&first)) => fs::hard_link(at.join(&self.0[first].0), &path),
                (Some(bytes), None) => fs::write(&path, bytes),
            }
            .unwrap_or_else(|e| panic!("materialize {}: {e}", path.display()));
        }
    }
}

/// One state a power loss could leave: the tree, and how it was chosen.
#[derive(Clone, Debug)]
pub struct CrashState {
    pub tree: Tree,
    pub label: String,
}

impl Disk {
    /// An empty disk under `base` (which exists, durably, and is empty).
    pub fn new(base: &Path) -> Disk {
        let root: BTreeMap<DirId, Entries> = [(0, Entries::new())].into();
        Disk {
            base: base.to_owned(),
            live: root.clone(),
            durable: root,
            pending: Vec::new(),
            inodes: Vec::new(),
            dirs: 1,
            exchanges: 0,
        }
    }

    /// Replays one recorded call.
    pub fn apply(&mut self, event: &FsEvent) {
        match event {
            FsEvent::Create { path } => {
                let (dir, name) = self.split(path);
                assert!(
                    !self.entries(dir).contains_key(&name),
                    "create of {} over an existing name",
                    path.display()
                );
                self.inodes.push(Inode::default());
                self.change(dir, name, Some(Node::File(self.inodes.len() - 1)));
            }
            FsEvent::Write { path, bytes } => {
                let ino = self.file_at(path);
                self.inodes[ino].live.extend_from_slice(bytes);
            }
            FsEvent::SyncFile { path } => {
                let ino = self.file_at(path);
                let inode = &mut self.inodes[ino];
                inode.durable = inode.live.clone();
            }
            FsEvent::Rename { from, to } => {
                let (from_dir, from_name) = self.split(from);
                let node = *self
                    .entries(from_dir)
                    .get(&from_name)
                    .unwrap_or_else(|| panic!("rename of missing {}", from.display()));
                assert!(
                    matches!(node, Node::File(_)),
                    "the model renames files only: {}",
                    from.display()
                );
                let (to_dir, to_name) = self.split(to);
                self.change(to_dir, to_name, Some(node));
                self.change(from_dir, from_name, None);
            }
            FsEvent::Link { from, to } => {
                let (from_dir, from_name) = self.split(from);
                let node = *self
                    .entries(from_dir)
                    .get(&from_name)
                    .unwrap_or_else(|| panic!("link of missing {}", from.display()));
                assert!(
                    matches!(node, Node::File(_)),
                    "the model links files only: {}",
                    from.display()
                );
                let (to_dir, to_name) = self.split(to);
                assert!(
                    !self.entries(to_dir).contains_key(&to_name),
                    "link over an existing name {}",
                    to.display()
                );
                // A second name for the same inode: a change to the target
                // directory only, durable when that directory is fsynced.
                self.change(to_dir, to_name, Some(node));
            }
            FsEvent::Remove { path } => {
                let (dir, name) = self.split(path);
                let node = self.entries(dir).get(&name).copied();
                match node {
                    Some(Node::File(_)) => {}
                    Some(Node::Dir(id)) => assert!(
                        self.entries(id).is_empty(),
                        "removal of {}, a directory not empty",
                        path.display()
                    ),
                    None => panic!("unlink of missing {}", path.display()),
                }
                self.change(dir, name, None);
            }
            FsEvent::Exchange { a, b } => {
                let ((dir, a), (b_dir, b)) = (self.split(a), self.split(b));
                assert_eq!(dir, b_dir, "an exchange within one directory");
                let node = |name: &OsString| {
                    self.entries(dir)
                        .get(name)
                        .copied()
                        .unwrap_or_else(|| panic!("exchange of missing {name:?}"))
                };
                let (to_a, to_b) = (node(&b), node(&a));
                let exchange = Some(self.exchanges);
                self.exchanges += 1;
                for (name, to) in [(a, to_a), (b, to_b)] {
                    assert!(
                        !self
                            .pending
                            .iter()
                            .any(|c| c.exchange.is_some() && c.dir == dir && c.name == name),
                        "the model does not order two pending exchanges of {name:?}"
                    );
                    apply_change(&mut self.live, dir, &name, Some(to));
                    self.pending.push(Change {
                        dir,
                        name,
                        to: Some(to),
                        exchange,
                    });
                }
            }
            // A directory above the modelled one (an open makes the names
            // of the store's ancestors durable): nothing modelled changes.
            FsEvent::SyncDir { path } if !path.starts_with(&self.base) => {}
            FsEvent::SyncDir { path } => {
                let dir = self.dir_id(&self.rel(path));
                let (now, later) = std::mem::take(&mut self.pending)
                    .into_iter()
                    .partition(|c| c.dir == dir);
                self.pending = later;
                for c in now {
                    apply_change(&mut self.durable, c.dir, &c.name, c.to);
                }
            }
            FsEvent::CreateDir { path } => {
                let (dir, name) = self.split(path);
                assert!(!self.entries(dir).contains_key(&name));
                let id = self.dirs;
                self.dirs += 1;
                self.live.insert(id, Entries::new());
                self.durable.insert(id, Entries::new());
                self.change(dir, name, Some(Node::Dir(id)));
            }
            other => panic!("the model does not know the seam call {other:?}"),
        }
    }

    /// How many changes to names are pending (not yet durable).
    pub fn pending_changes(&self) -> usize {
        self.pending.len()
    }

    /// The states a power loss now could leave, deterministically ordered.
    ///
    /// The items a power loss decides are each pending name (its durable
    /// value, or the value any one of its pending changes gave it: applying
    /// a subset of changes in order leaves each name at the value of its
    /// last applied change) and each inode whose content is not durable
    /// (durable, a prefix, or all of it). While the combinations number at
    /// most [`EXHAUSTIVE`], every one is tried; beyond, these: nothing
    /// pending survived; everything did; everything with every pending
    /// content lost, or cut to its prefix; and each item set to each of its
    /// other values against both "nothing" and "everything".
    pub fn crash_states(&self) -> Vec<CrashState> {
        let items = self.items();
        let dropped = vec![0; items.len()];
        let applied: Vec<usize> = items.iter().map(Item::applied).collect();
        // Each combination, with a name for the sample's special ones.
        let mut combos: BTreeMap<Vec<usize>, Option<&'static str>> = BTreeMap::new();
        let product = items
            .iter()
            .try_fold(1usize, |acc, i| acc.checked_mul(i.len()))
            .unwrap_or(usize::MAX);
        if product <= EXHAUSTIVE {
            let mut c = dropped.clone();
            loop {
                combos.insert(c.clone(), None);
                // Mixed-radix increment.
                let mut i = 0;
                while i < c.len() {
                    c[i] += 1;
                    if c[i] < items[i].len() {
                        break;
                    }
                    c[i] = 0;
                    i += 1;
                }
                if i == c.len() {
                    break;
                }
            }
        } else {
            combos.insert(dropped.clone(), Some("none applied"));
            combos.insert(applied.clone(), Some("all applied"));
            for (content, name) in [
                (0, "every name change applied, every pending content lost"),
                (
                    1,
                    "every name change applied, every pending content cut to a prefix",
                ),
            ] {
                let mut c = applied.clone();
                for (i, item) in items.iter().enumerate() {
                    if let Item::Content { .. } = item {
                        c[i] = content.min(item.len() - 1);
                    }
                }
                combos.entry(c).or_insert(Some(name));
            }
            for (i, item) in items.iter().enumerate() {
                for v in 0..item.len() {
                    for base in [&dropped, &applied] {
                        let mut c = base.clone();
                        c[i] = v;
                        combos.entry(c).or_insert(None);
                    }
                }
            }
        }
        combos
            .into_iter()
            .map(|(c, name)| CrashState {
                tree: self.tree(&items, &c),
                label: name
                    .map_or_else(|| self.label(&items, &c, &dropped, &applied), str::to_owned),
            })
            .collect()
    }

    /// A seeded sample of the states a power loss now could leave, for a
    /// disk with too many pending changes to try each alone: nothing
    /// pending survived, everything did, and `random` states in which each
    /// name and content takes one of its values at random (the same for
    /// the same `seed`).
    pub fn sampled_crash_states(&self, seed: u64, random: usize) -> Vec<CrashState> {
        let items = self.items();
        let none = vec![0; items.len()];
        let all: Vec<usize> = items.iter().map(Item::applied).collect();
        let mut rng = seed;
        let mut states = vec![
            (none, "none applied".to_owned()),
            (all, "all applied".to_owned()),
        ];
        for n in 0..random {
            let choice = items
                .iter()
                .map(|item| (splitmix(&mut rng) % item.len() as u64) as usize)
                .collect();
            states.push((choice, format!("sample {n} of seed {seed:#x}")));
        }
        states
            .into_iter()
            .map(|(choice, label)| CrashState {
                tree: self.tree(&items, &choice),
                label,
            })
            .collect()
    }

    fn items(&self) -> Vec<Item> {
        type Value = (Option<Node>, bool);
        let mut names: BTreeMap<(DirId, OsString), (Vec<Value>, Value)> = BTreeMap::new();
        let mut exchanges: BTreeMap<usize, Vec<&Change>> = BTreeMap::new();
        // The names a pending exchange has changed so far.
        let mut exchanged: BTreeSet<(DirId, &OsString)> = BTreeSet::new();
        for c in &self.pending {
            if let Some(exchange) = c.exchange {
                exchanges.entry(exchange).or_default().push(c);
                exchanged.insert((c.dir, &c.name));
                continue;
            }
            let (values, last) = names.entry((c.dir, c.name.clone())).or_insert_with(|| {
                let durable = self.durable.get(&c.dir).and_then(|e| e.get(&c.name));
                let durable = (durable.copied(), false);
                (vec![durable], durable)
            });
            let value = (c.to, exchanged.contains(&(c.dir, &c.name)));
            if !values.contains(&value) {
                values.push(value);
            }
            *last = value;
        }
        let mut items = Vec::new();
        for ((dir, name), (values, last)) in names {
            if values.len() < 2 {
                continue;
            }
            // Live, the name holds its last change's value: its own last
            // change's, or, where a pending exchange changed it last, what
            // the exchange gave it, and then its own changes decide it only
            // where the exchange is not applied, its last value applied.
            let applied = values
                .iter()
                .position(|v| *v == last)
                .expect("the last value is one of the values");
            items.push(Item::Entry {
                dir,
                name,
                values,
                applied,
            });
        }
        for (ino, inode) in self.inodes.iter().enumerate() {
            if inode.live == inode.durable {
                continue;
            }
            let mut values = vec![inode.durable.clone()];
            let prefix = inode.live[..inode.live.len() / 2].to_vec();
            if prefix != inode.durable {
                values.push(prefix);
            }
            values.push(inode.live.clone());
            items.push(Item::Content { ino, values });
        }
        for halves in exchanges.into_values() {
            let [a, b] = halves[..] else {
                panic!("an exchange of two halves: {halves:?}")
            };
            items.push(Item::Exchange {
                dir: a.dir,
                halves: [(a.name.clone(), a.to), (b.name.clone(), b.to)],
            });
        }
        // Freed inodes a crash state could still name.
        let named = |ino: Ino| {
            let node = Some(Node::File(ino));
            self.pending.iter().any(|c| c.to == node)
                || self
                    .durable
                    .values()
                    .any(|entries| entries.values().any(|n| Some(*n) == node))
        };
        for (ino, inode) in self.inodes.iter().enumerate() {
            if inode.freed && inode.links == 0 && named(ino) {
                items.push(Item::Freed { ino });
            }
        }
        items
    }

    fn tree(&self, items: &[Item], choice: &[usize]) -> Tree {
        let mut dirs = self.durable.clone();
        let mut contents: BTreeMap<Ino, &[u8]> = BTreeMap::new();
        let mut cleared: BTreeSet<Ino> = BTreeSet::new();
        // The names whose value a change after a pending exchange of them
        // gave: the exchange, applied or not, leaves them so.
        let mut after: BTreeSet<(DirId, &OsString)> = BTreeSet::new();
        for (item, &c) in items.iter().zip(choice) {
            match item {
                Item::Entry {
                    dir, name, values, ..
                } => {
                    let (to, after_exchange) = values[c];
                    apply_change(&mut dirs, *dir, name, to);
                    if after_exchange {
                        after.insert((*dir, name));
                    }
                }
                Item::Content { ino, values } => {
                    contents.insert(*ino, &values[c]);
                }
                Item::Freed { ino } => {
                    if c == 1 {
                        cleared.insert(*ino);
                    }
                }
                Item::Exchange { .. } => {}
            }
        }
        // An exchange applied overrules the changes before it of its names
        // (a name ends at the value of its last applied change).
        for (item, &c) in items.iter().zip(choice) {
            if let (Item::Exchange { dir, halves }, 1) = (item, c) {
                for (name, to) in halves {
                    if !after.contains(&(*dir, name)) {
                        apply_change(&mut dirs, *dir, name, *to);
                    }
                }
            }
        }
        for entries in dirs.values_mut() {
            entries.retain(|_, node| !matches!(node, Node::File(ino) if cleared.contains(ino)));
        }
        let mut out = Vec::new();
        let mut stack = vec![(0, PathBuf::new())];
        while let Some((id, dir)) = stack.pop() {
            let Some(entries) = dirs.get(&id) else {
                continue;
            };
            for (name, node) in entries.iter().rev() {
                let path = dir.join(name);
                match *node {
                    Node::Dir(id) => {
                        out.push((path.clone(), None));
                        stack.push((id, path));
                    }
                    Node::File(ino) => {
                        let bytes = contents
                            .get(&ino)
                            .copied()
                            .unwrap_or(&self.inodes[ino].durable);
                        out.push((path, Some((ino, bytes.to_vec()))));
                    }
                }
            }
        }
        // Parents before children, whatever the walk order was.
        out.sort_by(|a, b| a.0.cmp(&b.0));
        let mut first: BTreeMap<Ino, usize> = BTreeMap::new();
        let mut links = BTreeMap::new();
        for (i, (_, file)) in out.iter().enumerate() {
            if let Some((ino, _)) = file {
                if let Some(&j) = first.get(ino) {
                    links.insert(i, j);
                } else {
                    first.insert(*ino, i);
                }
            }
        }
        let names = out
            .into_iter()
            .map(|(path, file)| (path, file.map(|(_, bytes)| bytes)))
            .collect();
        Tree(names, links)
    }

    /// "applied" or "dropped" (whichever the state is nearer), and the
    /// items that differ from it.
    fn label(&self, items: &[Item], c: &[usize], dropped: &[usize], applied: &[usize]) -> String {
        let diff = |base: &[usize]| {
            (0..c.len())
                .filter(|&i| c[i] != base[i])
                .collect::<Vec<_>>()
        };
        let (d, a) = (diff(dropped), diff(applied));
        let (name, diffs) = if a.len() <= d.len() {
            ("all applied", a)
        } else {
            ("none applied", d)
        };
        if diffs.is_empty() {
            return name.to_owned();
        }
        let parts: Vec<String> = diffs
            .iter()
            .map(|&i| match &items[i] {
                Item::Entry {
                    dir, name, values, ..
                } => format!(
                    "{}={}",
                    self.path_of(*dir).join(name).display(),
                    self.describe(values[c[i]].0)
                ),
                Item::Exchange { dir, halves } => format!(
                    "exchange of {} and {} {}",
                    self.path_of(*dir).join(&halves[0].0).display(),
                    halves[1].0.display(),
                    if c[i] == 1 { "applied" } else { "not applied" }
                ),
                Item::Content { ino, values } => {
                    let what = match c[i] {
                        0 if values[0].is_empty() => "lost".to_owned(),
                        0 => "old".to_owned(),
                        v if v + 1 == values.len() => "whole".to_owned(),
                        _ => format!("cut to {} bytes", values[c[i]].len()),
                    };
                    format!("content of {}: {what}", self.name_of(*ino))
                }
                Item::Freed { ino } => match c[i] {
                    0 => format!("freed inode {ino} still named"),
                    _ => format!("names of freed inode {ino} cleared"),
                },
            })
            .collect();
        format!("{name} except {}", parts.join(", "))
    }

    /// A node for a report: a file by the task it holds when it holds one.
    fn describe(&self, node: Option<Node>) -> String {
        match node {
            None => "absent".to_owned(),
            Some(Node::Dir(_)) => "dir".to_owned(),
            Some(Node::File(ino)) => format!("file({})", summarize(&self.inodes[ino].live)),
        }
    }

    /// A live name of `ino` (the last one it had), for reports.
    fn name_of(&self, ino: Ino) -> String {
        let mut last = None;
        for c in &self.pending {
            if c.to == Some(Node::File(ino)) {
                last = Some(self.path_of(c.dir).join(&c.name));
            }
        }
        for (dir, entries) in &self.live {
            for (name, node) in entries {
                if *node == Node::File(ino) {
                    last = Some(self.path_of(*dir).join(name));
                }
            }
        }
        last.map(|p| p.display().to_string())
            .unwrap_or_else(|| format!("inode {ino}"))
    }

    fn rel(&self, path: &Path) -> PathBuf {
        path.strip_prefix(&self.base)
            .unwrap_or_else(|_| {
                panic!(
                    "{} is outside the modelled base {}",
                    path.display(),
                    self.base.display()
                )
            })
            .to_owned()
    }

    fn split(&self, path: &Path) -> (DirId, OsString) {
        let rel = self.rel(path);
        let name = rel.file_name().expect("a path with a name").to_owned();
        let dir = self.dir_id(rel.parent().unwrap_or(Path::new("")));
        (dir, name)
    }

    /// The directory the live namespace names `rel` (relative to the base).
    fn dir_id(&self, rel: &Path) -> DirId {
        rel.components().fold(0, |dir, part| {
            match self.entries(dir).get(part.as_os_str()) {
                Some(Node::Dir(id)) => *id,
                other => panic!("{} is {other:?}, not a directory", rel.display()),
            }
        })
    }

    /// A live path of directory `id`, for reports.
    fn path_of(&self, id: DirId) -> PathBuf {
        let mut stack = vec![(0, PathBuf::new())];
        while let Some((dir, path)) = stack.pop() {
            if dir == id {
                return path;
            }
            for (name, node) in self.live.get(&dir).into_iter().flatten() {
                if let Node::Dir(sub) = node {
                    stack.push((*sub, path.join(name)));
                }
            }
        }
        PathBuf::from(format!("<removed directory {id}>"))
    }

    fn entries(&self, dir: DirId) -> &Entries {
        self.live
            .get(&dir)
            .unwrap_or_else(|| panic!("directory {dir} is not known"))
    }

    fn file_at(&self, path: &Path) -> Ino {
        let (dir, name) = self.split(path);
        match self.entries(dir).get(&name) {
            Some(Node::File(ino)) => *ino,
            other => panic!("{} is {other:?}, not a file", path.display()),
        }
    }

    /// Changes one live name, counting the links of the inodes it stops
    /// and starts naming.
    fn change(&mut self, dir: DirId, name: OsString, to: Option<Node>) {
        let from = self.live.get(&dir).and_then(|e| e.get(&name)).copied();
        if let Some(Node::File(ino)) = to {
            self.inodes[ino].links += 1;
        }
        if let Some(Node::File(ino)) = from {
            let inode = &mut self.inodes[ino];
            inode.links -= 1;
            if inode.links == 0 {
                inode.freed = true;
            }
        }
        apply_change(&mut self.live, dir, &name, to);
        self.pending.push(Change {
            dir,
            name,
            to,
            exchange: None,
        });
    }
}

/// The next number of a SplitMix64 sequence whose state is `state`.
pub fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn apply_change(
    dirs: &mut BTreeMap<DirId, Entries>,
    dir: DirId,
    name: &OsString,
    to: Option<Node>,
) {
    let entries = dirs.entry(dir).or_default();
    match to {
        Some(node) => {
            entries.insert(name.clone(), node);
        }
        None => {
            entries.remove(name);
        }
    }
}

/// A task file's bytes for a report: `working r2`, or what else they are.
pub fn summarize(bytes: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return format!("{} bytes, not JSON", bytes.len());
    };
    match (v["task"]["status"].as_str(), v["task"]["revision"].as_u64()) {
        (Some(status), Some(rev)) => format!("{status} r{rev}"),
        _ => format!("{} bytes", bytes.len()),
    }
}

#[cfg(test)]
mod tests;
