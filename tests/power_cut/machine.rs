//! The machine side of the tests on real file systems (`tests/power_cut/`,
//! `tests/full_disk.rs`): file systems on loop devices, device images,
//! repair, and the kernel's background writeback. Knows nothing of the
//! store.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::Skips;

/// How a test on real file systems starts: its skips (`test` names it in
/// them), a scratch directory and the machine, if the test can run here
/// (see [`Machine::probe`]); else the whole test (`what`) is skipped:
/// `None`, or a panic when skips are errors.
pub fn start(test: &'static str, what: &str) -> Option<(Skips, tempfile::TempDir, Machine)> {
    let mut skips = Skips::from_env(test);
    let scratch = scratch_dir();
    match Machine::probe(scratch.path()) {
        Ok(machine) => Some((skips, scratch, machine)),
        Err(why) => {
            skips.skip_all(what, &why);
            None
        }
    }
}

/// Prints a line that shows even when the test passes.
pub fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "power_cut: {line}");
}

/// The machine's tools, once it is known that the test can run here.
pub struct Machine {
    losetup: PathBuf,
    mount: PathBuf,
    umount: PathBuf,
    cp: PathBuf,
    sync: PathBuf,
}

impl Machine {
    /// Whether loop devices can be attached and file systems mounted here;
    /// `Err` says why not.
    pub fn probe(scratch: &Path) -> Result<Machine, String> {
        if !cfg!(target_os = "linux") {
            return Err("needs Linux (loop devices)".into());
        }
        if !is_root()? {
            return Err("not running as root (loop devices and mount need it)".into());
        }
        let tool = |name: &str| {
            find_tool(name)
                .ok_or_else(|| format!("`{name}` not found on PATH or in /usr/sbin, /sbin"))
        };
        let machine = Machine {
            losetup: tool("losetup")?,
            mount: tool("mount")?,
            umount: tool("umount")?,
            cp: tool("cp")?,
            sync: tool("sync")?,
        };
        if !Path::new("/dev/loop-control").exists() {
            return Err("no loop devices (/dev/loop-control is missing)".into());
        }
        let probe = scratch.join("probe.img");
        File::create(&probe)
            .and_then(|f| f.set_len(1 << 20))
            .map_err(|e| format!("cannot create {}: {e}", probe.display()))?;
        let attached = machine
            .attach(&probe)
            .map_err(|e| format!("cannot attach a loop device: {e}"))?;
        drop(attached);
        let _ = fs::remove_file(&probe);
        Ok(machine)
    }

    /// Attaches `image` to a free loop device.
    pub fn attach(&self, image: &Path) -> Result<LoopDevice<'_>, String> {
        let out = run(Command::new(&self.losetup)
            .args(["--find", "--show"])
            .arg(image))?;
        Ok(LoopDevice {
            machine: self,
            path: PathBuf::from(out.trim()),
        })
    }

    /// Mounts `device` (of type `fs`) on `dir`, creating `dir`.
    pub fn mount<'a>(
        &'a self,
        device: &LoopDevice<'_>,
        fs: FileSystem,
        options: &str,
        dir: &Path,
    ) -> Result<Mount<'a>, String> {
        fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let mut cmd = Command::new(&self.mount);
        cmd.args(["-t", fs.kernel_type()]);
        if !options.is_empty() {
            cmd.args(["-o", options]);
        }
        run(cmd.arg(&device.path).arg(dir))?;
        Ok(Mount {
            machine: self,
            dir: dir.to_owned(),
            mounted: true,
        })
    }

    /// Writes everything the file system at `dir` holds in memory to its
    /// device and commits its journal or transaction (`syncfs`): what the
    /// kernel does by itself within half a minute.
    pub fn settle(&self, dir: &Path) -> Result<(), String> {
        run(Command::new(&self.sync).arg("-f").arg(dir)).map(drop)
    }

    /// Copies the device image `from` (the live loop device's backing file)
    /// to `to`, keeping holes: what the device holds at this instant.
    pub fn copy_image(&self, from: &Path, to: &Path) -> Result<(), String> {
        run(Command::new(&self.cp)
            .arg("--sparse=always")
            .arg(from)
            .arg(to))
        .map(drop)
    }
}

/// A loop device, detached when dropped.
pub struct LoopDevice<'a> {
    machine: &'a Machine,
    path: PathBuf,
}

impl LoopDevice<'_> {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LoopDevice<'_> {
    fn drop(&mut self) {
        if let Err(e) = run(Command::new(&self.machine.losetup)
            .arg("--detach")
            .arg(&self.path))
        {
            say(&format!("could not detach {}: {e}", self.path.display()));
        }
    }
}

/// A mounted file system, unmounted when dropped (lazily if it is busy, so
/// that its loop device is freed once the last user lets go).
pub struct Mount<'a> {
    machine: &'a Machine,
    dir: PathBuf,
    mounted: bool,
}

impl Mount<'_> {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Unmounts the file system now, an error if it is busy: all it held in
    /// memory is written back and its cached pages dropped.
    pub fn unmount(mut self) -> Result<(), String> {
        run(Command::new(&self.machine.umount).arg(&self.dir))?;
        self.mounted = false;
        Ok(())
    }
}

impl Drop for Mount<'_> {
    fn drop(&mut self) {
        if !self.mounted {
            return;
        }
        if run(Command::new(&self.machine.umount).arg(&self.dir)).is_ok() {
            return;
        }
        if let Err(e) = run(Command::new(&self.machine.umount).arg("-l").arg(&self.dir)) {
            say(&format!("could not unmount {}: {e}", self.dir.display()));
        }
    }
}

/// A file system under test, with how it is made, mounted and repaired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FileSystem {
    Ext4,
    Ext4NoJournal,
    Ext2,
    Xfs,
    Btrfs,
}

impl FileSystem {
    pub const ALL: [FileSystem; 5] = [
        FileSystem::Ext4,
        FileSystem::Ext4NoJournal,
        FileSystem::Ext2,
        FileSystem::Xfs,
        FileSystem::Btrfs,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FileSystem::Ext4 => "ext4",
            FileSystem::Ext4NoJournal => "ext4-nojournal",
            FileSystem::Ext2 => "ext2",
            FileSystem::Xfs => "xfs",
            FileSystem::Btrfs => "btrfs",
        }
    }

    fn kernel_type(self) -> &'static str {
        match self {
            FileSystem::Ext4 | FileSystem::Ext4NoJournal => "ext4",
            FileSystem::Ext2 => "ext2",
            FileSystem::Xfs => "xfs",
            FileSystem::Btrfs => "btrfs",
        }
    }

    /// The device size: small, and sparse, so it costs little. Current
    /// xfsprogs refuse file systems under 300 MiB; btrfs wants room for
    /// its duplicated metadata.
    pub fn size_bytes(self) -> u64 {
        let mib = match self {
            FileSystem::Ext4 | FileSystem::Ext4NoJournal | FileSystem::Ext2 => 64,
            FileSystem::Xfs => 320,
            FileSystem::Btrfs => 256,
        };
        mib << 20
    }

    /// The tools needed to make and repair it, and their package.
    fn tools(self) -> (&'static [&'static str], &'static str) {
        match self {
            FileSystem::Ext4 | FileSystem::Ext4NoJournal => (&["mkfs.ext4", "e2fsck"], "e2fsprogs"),
            FileSystem::Ext2 => (&["mkfs.ext2", "e2fsck"], "e2fsprogs"),
            FileSystem::Xfs => (&["mkfs.xfs", "xfs_repair"], "xfsprogs"),
            FileSystem::Btrfs => (&["mkfs.btrfs", "btrfs"], "btrfs-progs"),
        }
    }

    /// `Some(why)` if a tool it needs is not installed.
    pub fn missing_tools(self) -> Option<String> {
        let (tools, package) = self.tools();
        let missing: Vec<&str> = tools
            .iter()
            .copied()
            .filter(|t| find_tool(t).is_none())
            .collect();
        (!missing.is_empty()).then(|| {
            format!(
                "`{}` not found on PATH or in /usr/sbin, /sbin (package {package})",
                missing.join("`, `")
            )
        })
    }

    /// Makes a fresh file system in the image file `image` of
    /// [`size_bytes`](Self::size_bytes) (sparse).
    pub fn make(self, image: &Path) -> Result<(), String> {
        self.make_sized(image, self.size_bytes(), &[])
    }

    /// [`make`](Self::make) of `bytes`, with `extra` arguments for `mkfs`
    /// (ext4's `-N` to make it with few inodes, say).
    pub fn make_sized(self, image: &Path, bytes: u64, extra: &[&str]) -> Result<(), String> {
        File::create(image)
            .and_then(|f| f.set_len(bytes))
            .map_err(|e| format!("create {}: {e}", image.display()))?;
        // ext2 and ext4: inode tables and journal written now, not by a
        // kernel thread after mounting that would write to the device while
        // the test runs; one block group (4 KiB blocks) and a fixed
        // directory hash seed, or the kernel puts the store's directory in
        // a block group picked by a hash seeded at random, and which inodes
        // are reused (and so what a lost directory update exposes) varies
        // from run to run.
        const EXT: [&str; 4] = [
            "-b",
            "4096",
            "-E",
            "lazy_itable_init=0,lazy_journal_init=0,hash_seed=6f1ee0b5-3c0e-4f3c-9d55-8d2a2a1c7e01",
        ];
        let mut args = vec!["-q"];
        let tool = match self {
            FileSystem::Ext4 | FileSystem::Ext4NoJournal | FileSystem::Ext2 => {
                args.push("-F");
                args.extend(EXT);
                if self == FileSystem::Ext4NoJournal {
                    args.extend(["-O", "^has_journal"]);
                }
                if self == FileSystem::Ext2 {
                    "mkfs.ext2"
                } else {
                    "mkfs.ext4"
                }
            }
            FileSystem::Xfs | FileSystem::Btrfs => {
                args.push("-f");
                if self == FileSystem::Xfs {
                    "mkfs.xfs"
                } else {
                    "mkfs.btrfs"
                }
            }
        };
        args.extend(extra);
        run(Command::new(tool_path(tool)).args(&args).arg(image)).map(drop)
    }

    /// Mount options for the live file system. The periodic journal or
    /// transaction commit (ext4: every 5 s, btrfs: every 30 s) is pushed
    /// out to 300 s, so that it cannot make a change durable by luck in the
    /// moment between an acknowledgement and the image: a power cut can
    /// always fall just before a commit.
    pub fn live_options(self) -> &'static str {
        match self {
            FileSystem::Ext4 | FileSystem::Btrfs => "commit=300",
            FileSystem::Ext4NoJournal | FileSystem::Ext2 | FileSystem::Xfs => "",
        }
    }

    /// What a reboot does before the file system is used again: `e2fsck`
    /// for ext2 and ext4 (replaying the journal, if there is one); xfs and
    /// btrfs replay their logs when mounted, and are repaired only if that
    /// mount fails. Returns the mounted file system and notes on what
    /// repair did.
    pub fn repair_and_mount<'a>(
        self,
        machine: &'a Machine,
        device: &LoopDevice<'_>,
        dir: &Path,
    ) -> Result<(Mount<'a>, Vec<String>), String> {
        let mut notes = Vec::new();
        match self {
            FileSystem::Ext4 | FileSystem::Ext4NoJournal | FileSystem::Ext2 => {
                let out = Command::new(tool_path("e2fsck"))
                    .arg("-fy")
                    .arg(device.path())
                    .output()
                    .map_err(|e| format!("run e2fsck: {e}"))?;
                // 0: clean, 1: errors corrected, 2: corrected, reboot.
                match out.status.code() {
                    Some(0) => {}
                    Some(1 | 2) => {
                        if let Some(repairs) = notable_repairs(&out.stdout) {
                            notes.push(format!("e2fsck repaired: {repairs}"));
                        }
                    }
                    _ => {
                        return Err(format!(
                            "e2fsck left the file system broken ({}): {}{}",
                            out.status,
                            summary(&out.stdout),
                            summary(&out.stderr)
                        ));
                    }
                }
                machine.mount(device, self, "", dir).map(|m| (m, notes))
            }
            FileSystem::Xfs => match machine.mount(device, self, "", dir) {
                Ok(m) => Ok((m, notes)),
                Err(first) => {
                    notes.push(format!("mount failed ({first}); ran xfs_repair"));
                    let repaired = run(Command::new(tool_path("xfs_repair")).arg(device.path()));
                    if let Err(e) = repaired {
                        notes.push(format!(
                            "xfs_repair failed ({e}); ran xfs_repair -L (log zeroed)"
                        ));
                        run(Command::new(tool_path("xfs_repair"))
                            .arg("-L")
                            .arg(device.path()))?;
                    }
                    machine.mount(device, self, "", dir).map(|m| (m, notes))
                }
            },
            FileSystem::Btrfs => match machine.mount(device, self, "", dir) {
                Ok(m) => Ok((m, notes)),
                Err(first) => {
                    notes.push(format!("mount failed ({first}); ran btrfs rescue zero-log"));
                    run(Command::new(tool_path("btrfs"))
                        .args(["rescue", "zero-log"])
                        .arg(device.path()))?;
                    machine.mount(device, self, "", dir).map(|m| (m, notes))
                }
            },
        }
    }
}

/// Holds the kernel's background writeback off while the test runs, and
/// restores it when dropped.
///
/// The image copied right after an acknowledgement must hold only what the
/// store made durable. Periodic writeback (every 5 s, of data dirty for
/// 30 s) would put other changes on the device now and then, so a missing
/// fsync would show in some runs and not in others: the bug would be hidden
/// by luck. `dirty_writeback_centisecs = 0` turns periodic writeback off;
/// a long `dirty_expire_centisecs` keeps any other flush from writing
/// recent changes early. Memory pressure or a `sync` by another process can
/// still write them; the test is deterministic on a quiet machine.
pub struct WritebackPaused {
    saved: Vec<(&'static str, String)>,
}

const WRITEBACK: [(&str, &str); 2] = [
    ("/proc/sys/vm/dirty_writeback_centisecs", "0"),
    ("/proc/sys/vm/dirty_expire_centisecs", "360000"),
];

impl WritebackPaused {
    pub fn start() -> WritebackPaused {
        let mut saved = Vec::new();
        for (knob, value) in WRITEBACK {
            match fs::read_to_string(knob) {
                Ok(old) => match fs::write(knob, value) {
                    Ok(()) => saved.push((knob, old.trim().to_owned())),
                    Err(e) => say(&format!(
                        "cannot set {knob} ({e}): background writeback may hide a missing fsync in some runs"
                    )),
                },
                Err(e) => say(&format!("cannot read {knob}: {e}")),
            }
        }
        WritebackPaused { saved }
    }
}

impl Drop for WritebackPaused {
    fn drop(&mut self) {
        for (knob, old) in &self.saved {
            if let Err(e) = fs::write(knob, old) {
                say(&format!("could not restore {knob} to {old}: {e}"));
            }
        }
    }
}

/// Serializes runs of this test across processes: the writeback settings
/// are global, and two runs saving and restoring them at once could leave
/// them changed.
pub fn one_run_at_a_time() -> File {
    let path = std::env::temp_dir().join("taskstore-power-cut.lock");
    let file = File::create(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    file.lock()
        .unwrap_or_else(|e| panic!("lock {}: {e}", path.display()));
    file
}

/// Where device images go: memory (`/dev/shm`) if it has room, so that
/// copying an image is cheap; else the temp directory. The images are
/// sparse: a run holds a few hundred MiB at most.
pub fn scratch_dir() -> tempfile::TempDir {
    const ROOM: u64 = 1 << 30;
    let shm = Path::new("/dev/shm");
    let room = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(shm)
        .output()
        .ok()
        .and_then(|out| {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.lines().nth(1)?.trim().parse::<u64>().ok()
        });
    if room.is_some_and(|r| r >= ROOM)
        && let Ok(dir) = tempfile::Builder::new()
            .prefix("taskstore-power-cut.")
            .tempdir_in(shm)
    {
        return dir;
    }
    tempfile::Builder::new()
        .prefix("taskstore-power-cut.")
        .tempdir()
        .expect("create a scratch directory")
}

fn is_root() -> Result<bool, String> {
    let status = fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .ok_or("no effective uid in /proc/self/status")?;
    Ok(uid == "0")
}

/// A tool on `PATH`, or in the sbin directories a login shell would add.
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Where the tool `name` is, or `name` alone for `PATH` to find.
pub fn tool_path(name: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|| PathBuf::from(name))
}

/// Runs a command; its stdout, or an error naming it with its stderr.
pub fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            summary(&out.stderr)
        ))
    }
}

/// What `e2fsck` repaired beyond the routine after an unclean stop
/// (journal replay, free counts, bitmaps), on one line and cut short.
fn notable_repairs(stdout: &[u8]) -> Option<String> {
    const ROUTINE: [&str; 7] = [
        "Pass ",
        "count wrong",
        "bitmap differences",
        "FILE SYSTEM WAS MODIFIED",
        "recovering journal",
        "non-contiguous",
        "Restarting e2fsck",
    ];
    // A bare answer ("Fix? yes", "Salvage? yes") follows its question.
    let answer = |l: &str| l.ends_with("? yes") && l.split_whitespace().count() == 2;
    let text = String::from_utf8_lossy(stdout);
    let notable: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !answer(l) && !ROUTINE.iter().any(|r| l.contains(r)))
        .collect();
    if notable.is_empty() {
        return None;
    }
    let line = notable.join(" ");
    Some(match line.char_indices().nth(240) {
        Some((cut, _)) => format!("{}... ({} items)", &line[..cut], notable.len()),
        None => line,
    })
}

/// A command's output on one line.
fn summary(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}
