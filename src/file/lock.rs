//! Striped inter-process locks: one `flock`ed file per stripe, plus an
//! in-process mutex per stripe (an `flock` belongs to the open file
//! description, so it cannot exclude threads that share this handle's file).
//!
//! For the same reason a process forked from the one that opened a lock
//! file must not lock through its copy of the descriptor: it would share the
//! lock with the process it was forked from instead of being excluded by it.
//! A stripe's file is opened again in each process that locks it.
//!
//! Beside the stripes, the batches lock ([`batches`]): held shared by a
//! batch between two states, taken exclusive by a check.

mod batches;
mod sweep;

use self::batches::BatchLock;
pub(crate) use self::batches::{BatchHold, Settled};

use std::ffi::OsString;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::file::fs::{Dir, Fs};
use crate::file::layout::{BATCHES_LOCK, STRIPES, lock_name};

pub(crate) struct StripeLocks {
    dir: Dir,
    stripes: Vec<Stripe>,
    batches: Arc<BatchLock>,
    /// How long a call waits for a stripe another handle holds
    /// ([`STRIPE_WAIT`] unless the builder says).
    wait: Duration,
    /// Whether every call of this handle is one pass ([`Pass`]): a check's
    /// own handle, whose one call is the check.
    one_pass: Option<Pass>,
    /// The pass of each sweep under way ([`sweep::Sweeps`]).
    sweeps: sweep::Sweeps,
}

/// A pass over many tasks (a batch of writes, a check, a sweep from its
/// first call to its last: [`StripeLocks::begin_sweep`], a taking of
/// several stripes at once: [`StripeLocks::lock_each`]), which waits for
/// the stripes it meets held the `stripe_wait` once in all, not once for
/// each: its first wait for a held stripe starts its deadline, the
/// `stripe_wait` later, and no wait of the pass lasts past it (a stripe
/// held then is tried once, without waiting). A stripe marked stuck (a
/// wait for it ran out, and no call took it since) is waited for
/// [`STUCK_WAIT`] at most, and once one wait of the pass ran out (its
/// deadline, or a stuck stripe's), not at all: tried once. So a pass
/// meeting many stripes a stopped process holds (one stopped under every
/// stripe, in a sweep's chunk) waits the `stripe_wait` once, or, once they
/// are stuck, [`STUCK_WAIT`] once; a stripe a write holds for a moment is
/// waited for until the deadline, however many waits of the pass ran out
/// before. Shared by the pass's workers.
#[derive(Debug, Default)]
pub(crate) struct Pass {
    /// When its waits end, from its first wait on (`None` inside: a
    /// deadline past what an `Instant` holds).
    deadline: std::sync::OnceLock<Option<Instant>>,
    gave_up: AtomicBool,
}

impl Pass {
    /// What is left of the pass's waits, `wait` (the `stripe_wait`) from
    /// its first: this call's, if none came before.
    fn left(&self, wait: Duration) -> Duration {
        let deadline = self
            .deadline
            .get_or_init(|| Instant::now().checked_add(wait));
        deadline.map_or(wait, |deadline| {
            deadline.saturating_duration_since(Instant::now())
        })
    }
}

/// How long a call waits for a stripe another handle or process holds, by
/// default, before it fails naming the lock: a stripe is held for one write
/// (and its fsyncs) or one chunk of a large pass, moments; a process
/// stopped while it holds one (`SIGSTOP`, a paused container) holds it
/// until it goes on or is gone, and nothing else may wait for it for ever
/// (a pass reports the tasks of that stripe missed and goes on with the
/// others).
pub(crate) const STRIPE_WAIT: Duration = Duration::from_secs(30);

/// How long a call tries a stripe whose last wait ran out (see
/// `Stripe::stuck`), polling, before it fails (a call of a [`Pass`] one of
/// whose waits ran out already: not at all).
const STUCK_WAIT: Duration = Duration::from_millis(100);

/// From which try on [`StripeLocks::lock_each`] waits for a stripe held
/// by another a moment ([`HOLDING_WAIT`]) holding those before it (before
/// that, it lets them go and waits for that one alone), so that writes
/// busy on many stripes cannot keep it from them for ever.
const ALL_TRIES: usize = 3;

/// How many tries [`StripeLocks::lock_each`] makes at most: a stripe it
/// finds held at the last (held past [`HOLDING_WAIT`] again and again, as
/// another process's passes over every stripe, back to back, hold it)
/// fails the call, holding none, and its callers go stripe by stripe, or
/// leave the work to the next pass.
const MOST_TRIES: usize = 5;

/// How long [`StripeLocks::lock_each`] waits for a stripe holding others:
/// well past any write's hold of a stripe (a write and its fsyncs), well
/// under the `stripe_wait` of a stripe a stopped process holds.
const HOLDING_WAIT: Duration = Duration::from_secs(1);

/// A wait for the lock file at `path` that ran out, `held` saying what held
/// it: an error naming the lock, and that only the holder's going on or
/// end frees it ([`ran_out`] tells it).
pub(crate) fn held_too_long(path: &std::path::Path, held: &str) -> Error {
    Error::io(
        "lock",
        path,
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "{held}: a process stopped while it holds it (SIGSTOP, a paused container) holds it until it goes on or is gone"
            ),
        ),
    )
}

/// Whether `e` is a wait for a lock that ran out ([`held_too_long`]: another
/// handle or process held it for the whole wait), rather than a failure to
/// take it.
pub(crate) fn ran_out(e: &Error) -> bool {
    matches!(e, Error::Io { op: "lock", source, .. } if source.kind() == std::io::ErrorKind::TimedOut)
}

impl std::fmt::Debug for StripeLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeLocks")
            .field("dir", &self.dir.path())
            .field("stripes", &self.stripes.len())
            .finish()
    }
}

struct Stripe {
    name: OsString,
    path: PathBuf,
    /// The in-process lock ([`Gate`]); `freed` wakes a call waiting to
    /// enter when it is let go. A call waits here for at most its own wait.
    gate: Mutex<Gate>,
    freed: Condvar,
    /// Whether a wait for it ran out since it was last taken: until it is
    /// taken again, a call tries it for [`STUCK_WAIT`] only (a pass that
    /// meets many tasks of a stripe a stopped process holds waits once).
    stuck: AtomicBool,
}

/// Whether a call of this handle holds a stripe, or waits for its file's
/// lock (it has entered: [`Stripe::enter`]), and the stripe's lock file.
/// Its mutex is held for moments only, never through a call's I/O: a
/// process forked while a thread of its parent holds the stripe has no such
/// thread to let it go, so a call entered counts in its own process only.
#[derive(Default)]
struct Gate {
    /// The process whose call has entered, if one has.
    entered: Option<u32>,
    /// The stripe's lock file once opened, shared by the calls that enter.
    file: Option<Arc<LockFile>>,
}

struct LockFile {
    pid: u32,
    file: File,
}

/// An exclusive hold on one stripe, in this process and across processes.
/// Dropping it releases both locks.
pub(crate) struct StripeGuard<'a> {
    /// The stripe's file, opened by this process.
    held: Arc<LockFile>,
    /// The stripe, let go for the next call of the handle when this is
    /// dropped.
    stripe: &'a Stripe,
    /// The descriptor a wait took the `flock` on, if it waited (closed,
    /// which lets the lock go, when this is dropped); else the `flock` is
    /// on `held`'s.
    own: Option<File>,
}

impl Drop for StripeGuard<'_> {
    fn drop(&mut self) {
        // Let go, not only closed: a process forked meanwhile holds the
        // descriptor too, and with it the lock.
        if let Some(own) = self.own.take() {
            let _ = own.unlock();
        } else {
            // Closing would release it too; the file stays open for reuse.
            let _ = self.held.file.unlock();
        }
        // The next call enters.
        self.stripe.leave();
    }
}

impl Stripe {
    /// Enters the stripe for a call of this handle, waiting at most `wait`
    /// for the call in it to let it go: the stripe's lock file, if this
    /// process has opened it, or `None` when the wait ran out. Woken as it
    /// is let go, never polling.
    fn enter(&self, wait: Duration) -> Option<Option<Arc<LockFile>>> {
        let pid = std::process::id();
        let deadline = Instant::now().checked_add(wait);
        let mut gate = self.gate();
        while gate.entered == Some(pid) {
            // Without a deadline (a wait past what an `Instant` holds),
            // woken once a day to look again.
            let left = deadline.map_or(Duration::from_secs(86_400), |deadline| {
                deadline.saturating_duration_since(Instant::now())
            });
            if left.is_zero() {
                return None;
            }
            gate = self
                .freed
                .wait_timeout(gate, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        // Entered by this process's call, or by none of its calls: a call
        // of the process this one was forked from is not in this one.
        gate.entered = Some(pid);
        Some(gate.file.clone().filter(|file| file.pid == pid))
    }

    /// Lets the stripe go for the next call of this handle.
    fn leave(&self) {
        self.gate().entered = None;
        self.freed.notify_one();
    }

    fn gate(&self) -> MutexGuard<'_, Gate> {
        self.gate.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A stripe entered ([`Stripe::enter`]) and not yet handed to a
/// [`StripeGuard`]: let go when dropped, on every way out of a wait that
/// ends without the stripe.
struct Entered<'a>(Option<&'a Stripe>);

impl<'a> Entered<'a> {
    /// The guard that holds the stripe from here, and lets it go.
    fn guard(mut self, held: Arc<LockFile>, own: Option<File>) -> StripeGuard<'a> {
        let stripe = self.0.take().expect("entered once");
        StripeGuard { held, stripe, own }
    }
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        if let Some(stripe) = self.0 {
            stripe.leave();
        }
    }
}

impl StripeLocks {
    /// The stripes whose lock files live in `dir` (`locks/`), each waited
    /// for at most `wait` ([`lock`](Self::lock)).
    pub fn new(dir: Dir, wait: Duration) -> StripeLocks {
        StripeLocks {
            batches: Arc::new(BatchLock::new(dir.join(BATCHES_LOCK))),
            stripes: (0..STRIPES)
                .map(|i| Stripe {
                    name: lock_name(i),
                    path: dir.join(lock_name(i)),
                    gate: Mutex::default(),
                    freed: Condvar::new(),
                    stuck: AtomicBool::new(false),
                })
                .collect(),
            dir,
            wait,
            one_pass: None,
            sweeps: sweep::Sweeps::default(),
        }
    }

    /// Makes these the locks of a check: every call one [`Pass`], each
    /// stripe waited for `wait` at most.
    pub fn for_a_check(&mut self, wait: Duration) {
        self.wait = wait;
        self.one_pass = Some(Pass::default());
    }

    /// Waits for the stripe, at most the wait the locks were made with
    /// ([`STUCK_WAIT`] while a wait for it ran out and no call has taken it
    /// since), its in-process lock included (another thread of this handle
    /// that holds the stripe, or waits for it holding that lock, is waited
    /// for no longer):
    /// past it, an error naming the lock file and why. A stripe another
    /// handle holds is waited for in `flock` on a descriptor of this wait's
    /// own, on a thread of its own: a wait given up leaves that thread
    /// waiting, and it lets the lock go as soon as it gets it.
    pub fn lock(&self, fs: &Fs, stripe: usize) -> Result<StripeGuard<'_>> {
        self.lock_in(fs, stripe, None)
    }

    /// [`lock`](Self::lock) for a task of `pass`: until the pass's
    /// deadline at most, a stuck stripe once one of its waits ran out not
    /// at all (see [`Pass`]).
    pub fn lock_in(&self, fs: &Fs, stripe: usize, pass: Option<&Pass>) -> Result<StripeGuard<'_>> {
        let guard = self.take(fs, stripe, None, pass.or(self.one_pass.as_ref()))?;
        Ok(guard.expect("a wait in full ends in the stripe or an error"))
    }

    /// How long a call may wait for `s`, all told, once it has to: with
    /// `moment`, that; else the wait the locks were made with, or in a
    /// `pass` what is left of its waits, and for a stripe marked stuck
    /// [`STUCK_WAIT`] at most (none in a pass one of whose waits ran out).
    fn allowance(&self, s: &Stripe, moment: Option<Duration>, pass: Option<&Pass>) -> Duration {
        if let Some(moment) = moment {
            return moment;
        }
        let stuck = s.stuck.load(Ordering::Acquire);
        let wait = match pass {
            Some(pass) if stuck && pass.gave_up.load(Ordering::Acquire) => Duration::ZERO,
            Some(pass) => pass.left(self.wait),
            None => self.wait,
        };
        if stuck { wait.min(STUCK_WAIT) } else { wait }
    }

    /// [`lock`](Self::lock), or with `moment` a wait of that long at most
    /// (none for zero), whose running out (`None`) marks nothing, and which
    /// does not wait for a stripe marked stuck.
    fn take(
        &self,
        fs: &Fs,
        stripe: usize,
        moment: Option<Duration>,
        pass: Option<&Pass>,
    ) -> Result<Option<StripeGuard<'_>>> {
        let s = &self.stripes[stripe];
        let started = Instant::now();
        // Asked once the call has to wait, and only then: a pass's first
        // wait starts its deadline.
        let allowed = std::cell::OnceCell::new();
        let allowance = || *allowed.get_or_init(|| self.allowance(s, moment, pass));
        let gave_up = || {
            if let Some(pass) = pass {
                pass.gave_up.store(true, Ordering::Release);
            }
        };
        // Another thread of this handle holds it: a write (over in moments),
        // or a wait for the file's lock, which may last its own whole wait.
        // Waited for (woken as it is let go) for as long as this call may
        // wait, never longer: a thread of this handle holds up no call
        // past its wait, as another process would not.
        let entered = s.enter(Duration::ZERO).or_else(|| {
            let wait = allowance().saturating_sub(started.elapsed());
            if wait.is_zero() { None } else { s.enter(wait) }
        });
        let Some(held) = entered else {
            if moment.is_some() {
                return Ok(None);
            }
            gave_up();
            return Err(held_too_long(
                &s.path,
                &format!(
                    "another call of this handle held it, or waited for it, for over {:?}",
                    allowance()
                ),
            ));
        };
        // Let go again on every way out but a guard's, which lets it go
        // when dropped.
        let entered = Entered(Some(s));
        let held = match held {
            Some(held) => held,
            None => self.opened(fs, s)?,
        };
        let lock = |e| Error::io("lock", &s.path, e);
        let file = &held.file;
        if fs.try_lock(file, &s.path).map_err(lock)? {
            s.stuck.store(false, Ordering::Release);
            return Ok(Some(entered.guard(held, None)));
        }
        let stuck = s.stuck.load(Ordering::Acquire);
        if moment.is_some_and(|moment| stuck || moment.is_zero()) {
            return Ok(None);
        }
        let timed_out = || {
            s.stuck.store(true, Ordering::Release);
            gave_up();
            held_too_long(
                &s.path,
                &if stuck {
                    format!(
                        "another handle or process held it, as it did through a wait of \
                         {:?} that ran out",
                        self.wait
                    )
                } else if pass.is_some() {
                    format!(
                        "another handle or process held it until the pass it was locked \
                         for had waited {:?}, the most a pass waits in all",
                        self.wait
                    )
                } else {
                    format!("another handle or process held it for over {:?}", self.wait)
                },
            )
        };
        // What is left of this call's wait for the file's lock: none once
        // a wait spent on the in-process lock, or a pass's, used it up (no
        // descriptor or thread is spent on a wait that cannot last).
        let wait = allowance().saturating_sub(started.elapsed());
        if wait.is_zero() {
            return match moment {
                Some(_) => Ok(None),
                None => Err(timed_out()),
            };
        }
        if stuck {
            // Tried for moments, leaving no thread behind: a stripe free
            // again is taken (and no longer stuck), one still held fails
            // (and is stuck).
            let mut polling = Polling::new(wait);
            while !polling.ran_out() {
                polling.pause();
                if fs.try_lock(file, &s.path).map_err(lock)? {
                    s.stuck.store(false, Ordering::Release);
                    return Ok(Some(entered.guard(held, None)));
                }
            }
            return Err(timed_out());
        }
        let own = fs
            .open_lock_file(&self.dir, &s.name)
            .map_err(|e| Error::io("open lock file", &s.path, e))?;
        // No buffer: a lock taken after the wait was given up is never
        // left in the channel, but handed back here and let go.
        let (taken, got) = std::sync::mpsc::sync_channel(0);
        std::thread::Builder::new()
            .name("taskstore-stripe".into())
            .spawn(move || {
                if let Err(std::sync::mpsc::SendError(Ok(own))) =
                    taken.send(own.lock().map(|()| own))
                {
                    let _ = own.unlock();
                }
            })
            .map_err(|e| Error::io("wait for lock", &s.path, e))?;
        match got.recv_timeout(wait) {
            Ok(Ok(own)) => {
                s.stuck.store(false, Ordering::Release);
                Ok(Some(entered.guard(held, Some(own))))
            }
            Ok(Err(e)) => Err(lock(e)),
            Err(_) if moment.is_some() => Ok(None),
            Err(_) => Err(timed_out()),
        }
    }

    /// Waits for every stripe ([`lock_each`](Self::lock_each)), its waits
    /// those of `pass` when given, else of a pass of its own.
    pub fn lock_all(&self, fs: &Fs, pass: Option<&Pass>) -> Result<Vec<StripeGuard<'_>>> {
        let all: Vec<usize> = (0..self.stripes.len()).collect();
        self.lock_each(fs, &all, pass)
    }

    /// Waits for each of `stripes` (in stripe order, each once), taking
    /// them in that order (whoever holds more than one stripe took them in
    /// this order, so it cannot deadlock), and holds up no write of another
    /// stripe while it waits for one held for long: a stripe found held is
    /// waited for ([`lock`](Self::lock)) holding none of the others, then
    /// let go, and the stripes are taken again from the first (the first
    /// itself, found held, is kept once that wait gets it: none comes
    /// before it in the lock order, so one stripe alone is taken by its
    /// wait). So a wait
    /// for a stripe another process holds (stopped while it holds it, say,
    /// then waited for the whole `stripe_wait`) fails this having held
    /// none. From the [`ALL_TRIES`]th try on (the stripes busy with
    /// writes), each is waited for holding those before it, for
    /// [`HOLDING_WAIT`] at most: a write is over by then, and one held
    /// longer is waited for holding none, as before. At the
    /// [`MOST_TRIES`]th try, a stripe found held fails this, naming its
    /// lock file, holding none: held past [`HOLDING_WAIT`] again and again,
    /// it is another's long holds (another process's passes over every
    /// stripe, back to back), which the callers go round (a removal batch
    /// stripe by stripe; a sweep's chunks and its removal of stale
    /// `expiring/` entries leave their work to the sweep's batches or its
    /// next pass). Every wait of it is one of a pass's
    /// ([`lock_in`](Self::lock_in)): `pass` (a removal batch's, which goes
    /// stripe by stripe in the same pass if this fails; a sweep's, for its
    /// chunks, its removals of stale entries and its batches), or else one
    /// of this call's own (a repair's removal of a stale entry): a wait
    /// for a stripe held lasts until the pass's deadline at most, and a
    /// wait holding others [`HOLDING_WAIT`] or what is left of the pass's
    /// waits, whichever is less; so the sweep, the batch, or the call,
    /// waits its `stripe_wait` once in all.
    pub fn lock_each(
        &self,
        fs: &Fs,
        stripes: &[usize],
        pass: Option<&Pass>,
    ) -> Result<Vec<StripeGuard<'_>>> {
        // The caller's pass, or one of this call's own: its waits for a
        // stripe alone and its waits holding others wait the `stripe_wait`
        // once in all.
        let own = Pass::default();
        let pass = pass.or(self.one_pass.as_ref()).unwrap_or(&own);
        let mut tries = 0;
        // The first stripe, once a wait for it alone got it.
        let mut first = None;
        loop {
            tries += 1;
            let wait = if tries < ALL_TRIES {
                Duration::ZERO
            } else {
                HOLDING_WAIT.min(pass.left(self.wait))
            };
            let mut guards = Vec::with_capacity(stripes.len());
            guards.extend(first.take());
            let mut held_up = None;
            for &stripe in &stripes[guards.len()..] {
                match self.take(fs, stripe, Some(wait), None)? {
                    Some(guard) => guards.push(guard),
                    None => {
                        held_up = Some(stripe);
                        break;
                    }
                }
            }
            let Some(stripe) = held_up else {
                return Ok(guards);
            };
            let at_first = guards.is_empty();
            drop(guards);
            if tries == MOST_TRIES {
                return Err(Error::io(
                    "lock",
                    &self.stripes[stripe].path,
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "another handle or process held it at each of {MOST_TRIES} tries to \
                             take it after the stripes before it, from the third through a \
                             wait of {HOLDING_WAIT:?} or what was left of the pass's"
                        ),
                    ),
                ));
            }
            let got = self.lock_in(fs, stripe, Some(pass))?;
            if at_first {
                first = Some(got);
            }
        }
    }

    /// The error of a call that did not wait for `stripe`, held ([`held_too_long`]
    /// naming its lock file): `held` says by what.
    pub fn held(&self, stripe: usize, held: &str) -> Error {
        held_too_long(&self.stripes[stripe].path, held)
    }

    /// Takes the stripe only if no one holds it (then it is no longer
    /// stuck: [`lock`](Self::lock) waits for it in full again).
    pub fn try_lock(&self, fs: &Fs, stripe: usize) -> Result<Option<StripeGuard<'_>>> {
        self.take(fs, stripe, Some(Duration::ZERO), None)
    }

    /// The stripe's file opened by this process, for a call that entered
    /// the stripe and found none: once per handle and process (see the
    /// module's doc).
    fn opened(&self, fs: &Fs, s: &Stripe) -> Result<Arc<LockFile>> {
        let file = fs
            .open_lock_file(&self.dir, &s.name)
            .map_err(|e| Error::io("open lock file", &s.path, e))?;
        let pid = std::process::id();
        let file = Arc::new(LockFile { pid, file });
        s.gate().file = Some(Arc::clone(&file));
        Ok(file)
    }
}

/// Tries again after pauses that grow from 1 ms to 50 ms, for up to a
/// wait: how a batch waits for a check, a check for the batches, and an
/// open for another that holds the store alone.
pub(crate) struct Polling {
    start: Instant,
    wait: Duration,
    pause: Duration,
}

impl Polling {
    const FIRST: Duration = Duration::from_millis(1);
    const LONGEST: Duration = Duration::from_millis(50);

    pub(crate) fn new(wait: Duration) -> Polling {
        Polling {
            start: Instant::now(),
            wait,
            pause: Polling::FIRST,
        }
    }

    /// Whether the wait has run out.
    pub(crate) fn ran_out(&self) -> bool {
        self.start.elapsed() >= self.wait
    }

    /// Whether no pause was taken yet.
    fn is_first(&self) -> bool {
        self.pause == Polling::FIRST
    }

    /// Sleeps the next pause, never past the end of the wait.
    pub(crate) fn pause(&mut self) {
        let left = self.wait.saturating_sub(self.start.elapsed());
        std::thread::sleep(self.pause.min(left));
        self.pause = (self.pause * 2).min(Polling::LONGEST);
    }
}

#[cfg(all(test, feature = "fault-injection"))]
mod tests;
