//! [`BreakerRegistry`]: the named breakers of one process.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::breaker::circuit::Breaker;
use crate::breaker::config::BreakerConfig;
use crate::breaker::health::BreakerHealth;
use crate::breaker::machine::Env;
use crate::clock::{Clock, SteadyClock};
use crate::error::{Error, Result};
use crate::sink::{EventSink, Notifier};

/// The default cap on the number of breakers in a registry.
pub const DEFAULT_MAX_BREAKERS: usize = 1_000;

/// The longest breaker name a registry takes, in bytes.
pub const MAX_BREAKER_NAME: usize = 256;

/// Hands out named [`Breaker`]s, one per upstream: asking twice for the same
/// name gives the same breaker.
///
/// The registry is per process by design: each instance protects itself with
/// its own failure window. Set the clock and the sink before asking for
/// breakers; breakers keep the ones they were created with.
///
/// ```
/// use taskstore::{BreakerConfig, BreakerRegistry};
///
/// let registry = BreakerRegistry::new(BreakerConfig::default())?.with_max_breakers(100);
/// let db = registry.breaker("db")?;
/// let answer: Result<u32, std::io::Error> = Ok(42);
/// assert_eq!(db.call(|| answer).unwrap(), 42);
/// assert_eq!(registry.snapshot().breakers[0].calls, 1);
/// # Ok::<(), taskstore::Error>(())
/// ```
pub struct BreakerRegistry {
    default_config: BreakerConfig,
    env: Arc<Env>,
    max_breakers: usize,
    breakers: RwLock<BTreeMap<Arc<str>, Breaker>>,
}

/// The health of every breaker, for a health endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RegistryHealth {
    /// When the report was taken (written as RFC 3339: a time before year
    /// 0 as its first instant).
    #[serde(with = "crate::clock::held_rfc3339")]
    pub at: OffsetDateTime,
    /// Every breaker, by name.
    pub breakers: Vec<BreakerHealth>,
    /// How many times the registry's sink panicked (and was contained).
    pub sink_panics: u64,
}

impl BreakerRegistry {
    /// An empty registry whose breakers follow `default_config`, timed by the
    /// [`SteadyClock`] (the wall clock's steps move no open period), with
    /// no sink and at most [`DEFAULT_MAX_BREAKERS`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidBreakerConfig`] if `default_config` is invalid.
    pub fn new(default_config: BreakerConfig) -> Result<BreakerRegistry> {
        default_config.validate()?;
        Ok(BreakerRegistry {
            default_config,
            env: Arc::new(Env {
                clock: Arc::new(SteadyClock::new()),
                notifier: Notifier::default(),
            }),
            max_breakers: DEFAULT_MAX_BREAKERS,
            breakers: RwLock::new(BTreeMap::new()),
        })
    }

    /// Reads time from `clock` (for example a [`ManualClock`](crate::ManualClock) in tests).
    /// Set it before the first breaker is made: a breaker keeps the clock
    /// and sink of the registry as it was when the breaker was made.
    #[must_use]
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> BreakerRegistry {
        let sink = self.env.notifier.sink().cloned();
        self.with_env(clock, sink)
    }

    /// Sends the making of each breaker
    /// ([`BreakerEventKind::Created`](crate::BreakerEventKind::Created)),
    /// every transition and every call verdict to `sink`. Set it before the
    /// first breaker is made: a breaker keeps the clock and sink of the
    /// registry as it was when the breaker was made.
    #[must_use]
    pub fn with_sink(self, sink: Arc<dyn EventSink>) -> BreakerRegistry {
        let clock = self.env.clock.clone();
        self.with_env(clock, Some(sink))
    }

    /// Caps the number of breakers.
    #[must_use]
    pub fn with_max_breakers(mut self, max: usize) -> BreakerRegistry {
        self.max_breakers = max;
        self
    }

    /// The breaker named `name`, created with the default config if new.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidBreakerName`] if `name` is empty, longer than
    /// [`MAX_BREAKER_NAME`], or has a control character or line break,
    /// [`Error::TooManyBreakers`] if creating it would pass the cap.
    pub fn breaker(&self, name: &str) -> Result<Breaker> {
        if let Some(breaker) = self.read().get(name) {
            return Ok(breaker.clone());
        }
        self.insert(name, &self.default_config)
    }

    /// The breaker named `name`, created with `config` if new.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidBreakerConfig`] if `config` is invalid,
    /// [`Error::BreakerConfigConflict`] if the breaker exists with another
    /// config, [`Error::InvalidBreakerName`] if `name` is empty, longer
    /// than [`MAX_BREAKER_NAME`], or has a control character or line break,
    /// [`Error::TooManyBreakers`] if creating it would pass the cap.
    pub fn breaker_with(&self, name: &str, config: BreakerConfig) -> Result<Breaker> {
        // The name first: a config error names the breaker.
        check_name(name)?;
        config.validate_for(Some(name))?;
        if let Some(breaker) = self.read().get(name) {
            return Self::same_config(breaker, &config);
        }
        self.insert(name, &config)
    }

    /// How many breakers it holds.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether it holds no breaker.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// How many times the sink panicked (and was contained). Each panic
    /// is counted; they are logged (`tracing`, a warning) at the first,
    /// then at most once a minute by the registry's clock, with the count.
    pub fn sink_panics(&self) -> u64 {
        self.env.notifier.panics()
    }

    /// The health of every breaker, sorted by name. Open breakers whose open
    /// duration has passed become half-open first, as in [`Breaker::state`].
    pub fn snapshot(&self) -> RegistryHealth {
        let breakers: Vec<Breaker> = self.read().values().cloned().collect();
        RegistryHealth {
            at: self.env.clock.now(),
            breakers: breakers.iter().map(Breaker::health).collect(),
            sink_panics: self.sink_panics(),
        }
    }

    fn insert(&self, name: &str, config: &BreakerConfig) -> Result<Breaker> {
        check_name(name)?;
        let mut breakers = self.breakers.write().unwrap_or_else(|e| e.into_inner());
        if let Some(breaker) = breakers.get(name) {
            return Self::same_config(breaker, config);
        }
        if breakers.len() >= self.max_breakers {
            return Err(Error::TooManyBreakers {
                name: name.to_owned(),
                limit: self.max_breakers,
            });
        }
        let name: Arc<str> = Arc::from(name);
        let (breaker, created) = Breaker::new(name.clone(), config.clone(), self.env.clone());
        breakers.insert(name, breaker.clone());
        drop(breakers);
        // Outside the lock, as every event; its generation orders it before
        // the breaker's transitions, whatever order they reach the sink in.
        self.env.emit(Some(created));
        Ok(breaker)
    }

    fn same_config(breaker: &Breaker, config: &BreakerConfig) -> Result<Breaker> {
        match breaker.config().first_difference(config) {
            None => Ok(breaker.clone()),
            Some(field) => Err(Error::BreakerConfigConflict {
                name: breaker.name().to_owned(),
                field,
            }),
        }
    }

    fn with_env(self, clock: Arc<dyn Clock>, sink: Option<Arc<dyn EventSink>>) -> BreakerRegistry {
        // The sink's panics are said by the registry's clock too.
        let notifier = self
            .env
            .notifier
            .replacing_sink(sink)
            .with_clock(clock.clone());
        BreakerRegistry {
            env: Arc::new(Env { clock, notifier }),
            ..self
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<Arc<str>, Breaker>> {
        // Inserting a breaker cannot leave the map half-changed.
        self.breakers.read().unwrap_or_else(|e| e.into_inner())
    }
}

impl fmt::Debug for BreakerRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerRegistry")
            .field("default_config", &self.default_config)
            .field("breakers", &self.len())
            .field("max_breakers", &self.max_breakers)
            .finish_non_exhaustive()
    }
}

/// Whether a breaker name may not hold `c`: a control character (Unicode
/// `Cc`: C0, DEL, C1) or a line or paragraph separator. A name goes as it
/// is into every event, metric label and `tracing` field of its breaker.
fn forbidden(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// Refuses a name a registry does not take (see
/// [`Error::InvalidBreakerName`]).
fn check_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "empty".to_owned()
    } else if name.len() > MAX_BREAKER_NAME {
        format!("longer than {MAX_BREAKER_NAME} bytes")
    } else if let Some((at, c)) = name.char_indices().find(|&(_, c)| forbidden(c)) {
        format!(
            "has a control character or line break (U+{:04X}) at byte {at}",
            u32::from(c)
        )
    } else {
        return Ok(());
    };
    Err(Error::InvalidBreakerName {
        name: crate::id::bounded(name, 61),
        len: name.len(),
        reason,
    })
}
