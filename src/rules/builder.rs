//! The settings every store has, whatever its backend, and the one builder
//! that sets them.

use std::sync::Arc;
use std::time::Duration;

use crate::backend::Backend;
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::lease::Lease;
use crate::limits::Limits;
use crate::rules::Store;
use crate::sink::{EventSink, Notifier};

/// The longest instance id a store accepts, in bytes.
pub const MAX_INSTANCE_ID_LEN: usize = 256;

/// What the rules need besides the backend: time, caps, identity, events.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub clock: Arc<dyn Clock>,
    pub limits: Limits,
    pub lease: Lease,
    /// How long a resumable orphan waits for a claim before this handle's
    /// reaper fails it; `None`: one lease.
    pub claim_grace: Option<Duration>,
    pub notifier: Notifier,
    /// What every decision of a write to one task calls first, with the
    /// task read: the conformance suite's windows
    /// ([`Setup::configure`](crate::conformance::Setup::configure)).
    #[cfg(feature = "conformance")]
    pub before_deciding: BeforeDeciding,
}

/// What [`Settings::before_deciding`] holds: nothing, but in the
/// conformance suite's stores.
#[cfg(feature = "conformance")]
#[derive(Clone, Default)]
pub(crate) struct BeforeDeciding(pub Option<Arc<Hook>>);

/// A hook [`BeforeDeciding`] holds: called with the task read.
#[cfg(feature = "conformance")]
pub(crate) type Hook = dyn Fn(&crate::task::Task) + Send + Sync;

#[cfg(feature = "conformance")]
impl std::fmt::Debug for BeforeDeciding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Some(..)" } else { "None" })
    }
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            clock: Arc::new(SystemClock),
            limits: Limits::default(),
            lease: Lease::default(),
            claim_grace: None,
            notifier: Notifier::default(),
            #[cfg(feature = "conformance")]
            before_deciding: BeforeDeciding::default(),
        }
    }
}

impl Settings {
    /// How long a resumable orphan waits for a claim before it is reaped.
    pub fn claim_grace(&self) -> Duration {
        self.claim_grace.unwrap_or(self.lease.duration)
    }
}

impl Settings {
    fn validate(&self) -> Result<()> {
        let id = &self.lease.instance_id;
        if id.is_empty() || id.len() > MAX_INSTANCE_ID_LEN {
            return Err(Error::InvalidConfig {
                field: "instance_id",
                reason: format!(
                    "must be 1 to {MAX_INSTANCE_ID_LEN} bytes long, not {}",
                    id.len()
                ),
            });
        }
        if id.chars().any(char::is_control) {
            return Err(Error::InvalidConfig {
                field: "instance_id",
                reason: "must not contain control characters".to_owned(),
            });
        }
        if self.lease.duration.is_zero() {
            return Err(Error::InvalidConfig {
                field: "lease",
                reason: "must be longer than zero".to_owned(),
            });
        }
        if self.limits.max_active == 0 {
            return Err(Error::InvalidConfig {
                field: "max_active",
                reason: "must be at least 1 (a store of no active task would refuse every create)"
                    .to_owned(),
            });
        }
        Ok(())
    }
}

/// Configures a store: the settings every backend shares, plus `O`, what
/// one backend needs to open (a directory, a connection string), or the
/// backend itself.
///
/// [`FileStoreBuilder`](crate::FileStoreBuilder) and the builders of the
/// other stores are this type; a backend written outside this crate gets one
/// from [`Store::with_backend`].
#[derive(Debug)]
#[must_use]
pub struct StoreBuilder<O> {
    pub(crate) settings: Settings,
    pub(crate) options: O,
}

impl<O> StoreBuilder<O> {
    pub(crate) fn with_options(options: O) -> StoreBuilder<O> {
        StoreBuilder {
            settings: Settings::default(),
            options,
        }
    }

    /// Where time comes from (default [`SystemClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.settings.clock = clock;
        self
    }

    /// The cap on active (non-terminal) tasks, default 10,000
    /// ([`DEFAULT_MAX_ACTIVE`](crate::DEFAULT_MAX_ACTIVE)), at least 1. How
    /// exactly it holds across processes or hosts is up to the backend,
    /// which documents it.
    pub fn max_active(mut self, max_active: usize) -> Self {
        self.settings.limits.max_active = max_active;
        self
    }

    /// The cap on one task's encoded JSON size, default 16 MiB; kept within
    /// [`MIN_MAX_PAYLOAD_BYTES`](crate::MIN_MAX_PAYLOAD_BYTES) (4 KiB) and
    /// [`MAX_MAX_PAYLOAD_BYTES`](crate::MAX_MAX_PAYLOAD_BYTES) (1 GiB), and
    /// lowered, when the store is made, to leave
    /// [`OWN_HEADROOM`](crate::OWN_HEADROOM) under the largest task its
    /// backend stores ([`Backend::largest_task`]: PostgreSQL's is 1 MiB
    /// under 1 GiB).
    pub fn max_payload_bytes(mut self, max_payload_bytes: usize) -> Self {
        self.settings
            .limits
            .set_max_payload_bytes(max_payload_bytes);
        self
    }

    /// This handle's instance id, recorded as the owner of the tasks it
    /// creates or claims (default: a random UUID, new for every handle); 1
    /// to 256 bytes, no control characters.
    ///
    /// The id names the instance; it does not make it the owner. A task is
    /// owned by the handle that created or last claimed it: its instance id
    /// and a token unique to that open of the store. A process restarted
    /// with the same id is a new owner, not the old one: it cannot renew the
    /// leases of the tasks its predecessor left, and its writes to them
    /// (a cancel, say) do not renew them, so they lapse on time and are
    /// reaped, or claimed if resumable (by the restarted process too, under
    /// a new owner epoch). Reusing an id across restarts is therefore safe;
    /// it keeps `owner` fields and logs readable.
    pub fn instance_id(mut self, instance_id: impl Into<String>) -> Self {
        self.settings.lease.instance_id = instance_id.into();
        self
    }

    /// How long a lease lasts before its task counts as orphaned, default
    /// 30 s ([`DEFAULT_LEASE`](crate::DEFAULT_LEASE)), measured on the
    /// store's [`Clock`].
    pub fn lease(mut self, lease: Duration) -> Self {
        self.settings.lease.duration = lease;
        self
    }

    /// How long a resumable task whose owner died waits for an instance to
    /// claim it ([`TaskStore::claim`](crate::TaskStore::claim)) before this
    /// handle's reaper fails it as orphaned: by default one lease. (No
    /// instance with a resume handler for its kind may be running.)
    pub fn claim_grace(mut self, grace: Duration) -> Self {
        self.settings.claim_grace = Some(grace);
        self
    }

    /// Sends every task event (created, updated, completed, failed,
    /// cancelled, expired, deleted, reaped, claimed, and entries that could
    /// not be read) to `sink`, after the task's own lock is released (so
    /// two threads' writes to one task may be told in the other order:
    /// [`Event::task_revision`](crate::Event::task_revision) orders them); a panicking
    /// sink is contained and counted ([`Store::sink_panics`]), and logged
    /// (`tracing`, a warning) at its first panic, then at most once a
    /// minute by the store's [`clock`](Self::clock), with the panics
    /// counted so far and since the warning before. A pass over
    /// many tasks (a sweep, a reap) reports each as it goes, while it may
    /// still hold a file store's batches lock (shared), which `verify` and
    /// `repair` wait on: a sink should not block (hand slow work to a
    /// thread of its own, as `JsonLinesSink` writes a line and returns).
    pub fn sink(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.settings.notifier = Notifier::new(sink);
        self
    }

    /// Calls `hook` with the task read before every decision of a write
    /// to one task (between the backend's read and its write): how the
    /// conformance suite holds a call in that window.
    #[cfg(feature = "conformance")]
    pub(crate) fn before_deciding(mut self, hook: Arc<Hook>) -> Self {
        self.settings.before_deciding = BeforeDeciding(Some(hook));
        self
    }

    /// Checks the settings every store has: a backend's `open` calls it
    /// before it makes anything, so that a refused open leaves nothing.
    pub(crate) fn check(&self) -> Result<()> {
        self.settings.validate()
    }

    /// The store over `backend` with these settings, once they are checked,
    /// the payload cap fitted to the largest task it stores.
    pub(crate) fn finish<B: Backend>(mut self, backend: B) -> Result<Store<B>> {
        self.settings.validate()?;
        // The sink's panics are said by the store's clock, whichever of the
        // two was set first.
        self.settings.notifier = self
            .settings
            .notifier
            .with_clock(self.settings.clock.clone());
        self.settings.limits.fit(backend.largest_task())?;
        Ok(Store::from_parts(backend, self.settings))
    }
}

impl<B: Backend> StoreBuilder<B> {
    /// The store over this builder's backend.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for an instance id that is empty, longer
    /// than 256 bytes or holds control characters, a zero lease, a cap of
    /// no active task, or a backend that holds tasks of less than 8 KiB
    /// ([`Backend::largest_task`]).
    pub fn build(self) -> Result<Store<B>> {
        let StoreBuilder { settings, options } = self;
        StoreBuilder {
            settings,
            options: (),
        }
        .finish(options)
    }
}
