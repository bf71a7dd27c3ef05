//! Checking: each image repaired as a reboot would, mounted, and the reopened
//! store held to every acknowledgement made before the cut.

use super::record::{Image, Op, STORE, SetAside, open_store, tree};
use super::*;

// --- Checking: each image repaired, mounted, and held to every ack. ---

/// One acknowledged result a power cut broke (or an image the store cannot
/// be read from).
pub(crate) struct Finding {
    fs: FileSystem,
    image: String,
    /// The call whose acknowledgement was broken, if it is one.
    pub(crate) broken: Option<Op>,
    what: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] cut after `{}`: {}",
            self.fs.name(),
            self.image,
            self.what
        )
    }
}

fn describe(task: Option<&Task>) -> String {
    match task {
        None => "gone".to_owned(),
        Some(t) => format!("{} rev {}", t.status, t.revision),
    }
}

/// What one cut showed.
#[derive(Default)]
pub(crate) struct Checked {
    pub(crate) findings: Vec<Finding>,
    /// What repair did before the store was reopened, beyond the routine.
    pub(crate) repairs: Vec<String>,
}

/// Repairs and mounts one image and holds the store on it to every
/// acknowledgement made before the cut.
pub(crate) fn check(machine: &Machine, fs: FileSystem, image: &Image, scratch: &Path) -> Checked {
    let mut checked = Checked::default();
    let mut findings = Vec::new();
    let mut finding = |broken: Option<Op>, what: String| {
        findings.push(Finding {
            fs,
            image: image.label(),
            broken,
            what,
        });
    };
    let device = match machine.attach(&image.path) {
        Ok(d) => d,
        Err(e) => {
            finding(None, format!("cannot attach the image: {e}"));
            checked.findings = findings;
            return checked;
        }
    };
    let mount_dir = scratch.join(format!("{}.check", fs.name()));
    let mount = match fs.repair_and_mount(machine, &device, &mount_dir) {
        Ok((mount, repairs)) => {
            checked.repairs = repairs;
            mount
        }
        Err(e) => {
            finding(None, format!("does not mount after repair: {e}"));
            checked.findings = findings;
            return checked;
        }
    };
    let dir = mount.dir().join(STORE);

    // Where each task's files are, before the store is opened (and may
    // tidy up): shown with a broken acknowledgement.
    let files = task_files(&dir);
    let files_of = |id: &TaskId| {
        files
            .get(id.as_str())
            .map(|paths| format!(" [files: {}]", paths.join(", ")))
            .unwrap_or_default()
    };

    if let Some(opened) = &image.opened {
        let now = tree(&dir);
        for (path, contents) in opened {
            match now.get(path) {
                Some(c) if c == contents => {}
                Some(_) => finding(
                    Some(Op::Open),
                    format!("the first open's {} changed", path.display()),
                ),
                None => finding(
                    Some(Op::Open),
                    format!("the first open's {} is missing", path.display()),
                ),
            }
        }
    }

    let set_aside = Arc::new(SetAside::default());
    // At T0 no task has expired: a swept task still on disk would show.
    let clock = ManualClock::new(T0);
    let store = match open_store(
        &dir,
        &clock,
        "checker",
        OWNER_LEASE,
        Some(set_aside.clone()),
    ) {
        Ok(s) => s,
        Err(e) => {
            finding(None, format!("the store does not open: {e}"));
            checked.findings = findings;
            return checked;
        }
    };
    let mut listed: BTreeMap<TaskId, Task> = match store.list(&ListQuery::all()) {
        Ok(page) => page.tasks.into_iter().map(|t| (t.id.clone(), t)).collect(),
        Err(e) => {
            finding(None, format!("list fails: {e}"));
            BTreeMap::new()
        }
    };
    for (id, ack) in &image.acks {
        let got = match store.get(id) {
            Ok(got) => got,
            Err(e) => {
                finding(Some(ack.op), format!("get {id} fails: {e}"));
                continue;
            }
        };
        let in_list = listed.remove(id);
        if in_list != got {
            finding(
                None,
                format!(
                    "get and list disagree on {id}: get {}, list {}",
                    describe(got.as_ref()),
                    describe(in_list.as_ref())
                ),
            );
        }
        if got == ack.task {
            continue;
        }
        let how = match (&ack.task, &got) {
            (Some(want), Some(have))
                if want.status == have.status && want.revision == have.revision =>
            {
                format!(
                    "same status and revision, other contents: acknowledged {}, found {}",
                    json!(want),
                    json!(have)
                )
            }
            _ => format!("found {}", describe(got.as_ref())),
        };
        finding(
            Some(ack.op),
            format!(
                "`{}` of {id} acknowledged {}; after the cut: {how}{}",
                ack.op.name(),
                describe(ack.task.as_ref()),
                files_of(id)
            ),
        );
    }
    for (id, task) in listed {
        finding(
            None,
            format!(
                "list shows {id} ({}), which no acknowledged call left there",
                describe(Some(&task))
            ),
        );
    }
    let mut torn = std::mem::take(&mut *set_aside.0.lock().unwrap_or_else(|e| e.into_inner()));
    torn.sort();
    for file in torn {
        finding(None, format!("a torn file was set aside: {file}"));
    }

    // First writer wins: every task acknowledged terminal stays so.
    for (id, ack) in &image.acks {
        let Some(want) = ack.task.as_ref().filter(|t| t.status.is_terminal()) else {
            continue;
        };
        match store.cancel(id, Some("after the power cut".into())) {
            Ok(Transition::AlreadyTerminal(t)) if &t == want => {}
            Ok(Transition::AlreadyTerminal(t)) => finding(
                Some(ack.op),
                format!(
                    "a later cancel of {id} found {} instead of the acknowledged {}",
                    describe(Some(&t)),
                    describe(Some(want))
                ),
            ),
            Ok(Transition::Applied(t)) => finding(
                Some(ack.op),
                format!(
                    "a later cancel of {id} was applied ({} after `{}` acknowledged {}): first writer wins broken",
                    describe(Some(&t)),
                    ack.op.name(),
                    describe(Some(want))
                ),
            ),
            Ok(other) => finding(Some(ack.op), format!("a later cancel of {id}: {other:?}")),
            Err(e) => finding(Some(ack.op), format!("a later cancel of {id} fails: {e}")),
        }
    }

    // What a reopened store leaves is a store `verify` finds whole: above
    // all, no finished task with a TTL lacks its `expiring/` entry (no
    // sweep would ever delete it). An entry whose task is gone is harmless
    // by design (the sweep that meets it removes it).
    match FileCheck::open(&dir).and_then(|check| check.verify()) {
        Ok(report) => {
            for problem in report.problems {
                if problem.kind == ProblemKind::StaleIndexEntry {
                    continue;
                }
                let op = problem
                    .id
                    .as_ref()
                    .and_then(|id| image.acks.get(id))
                    .map(|ack| ack.op);
                finding(op, format!("verify after reopening: {problem}"));
            }
        }
        Err(e) => finding(None, format!("verify fails: {e}")),
    }
    // Unmounted strictly: a descriptor the store kept past its handle's
    // drop leaves the file system busy, and is a finding.
    drop(store);
    if let Err(e) = mount.unmount() {
        finding(
            None,
            format!("busy after the checker's store was dropped: {e}"),
        );
    }
    drop(device);
    checked.findings = findings;
    checked
}

/// Every file named `<id>.json` under `dir`, by id, as paths relative to
/// `dir`.
fn task_files(dir: &Path) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for path in tree_files(dir) {
        let rel = path.strip_prefix(dir).unwrap_or(&path);
        if let Some(id) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
        {
            out.entry(id.to_owned())
                .or_default()
                .push(rel.display().to_string());
        }
    }
    out
}

fn tree_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in fs::read_dir(&d).into_iter().flatten().flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => todo.push(entry.path()),
                Ok(_) => out.push(entry.path()),
                Err(_) => {}
            }
        }
    }
    out.sort();
    out
}
