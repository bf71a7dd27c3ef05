//! A `tracing` subscriber for tests: the integration tests' (through
//! `tests/common`) and the crate's own unit tests (`src/mcp/tests`, by
//! path), so that one copy serves both.

/// A `tracing` subscriber that keeps every event it is given, in order:
/// its level and fields, each value as `Debug` shows it (a `%` field
/// without quotes). Clones share what they keep.
///
/// Made with `default()`, which first makes sure [`KEEPER`] is alive, so
/// that what a capture keeps does not depend on which thread met a call
/// site first: `tracing` caches a call site's interest when it is first
/// met, and while at most one subscriber is alive it asks the meeting
/// thread's alone. A thread without one (another test of the binary) then
/// fixes "never" for every capture after it. With two alive, it asks each
/// of them.
#[derive(Clone)]
pub struct Logged(std::sync::Arc<std::sync::Mutex<Vec<LogEvent>>>);

impl Default for Logged {
    fn default() -> Self {
        KEEPER.get_or_init(|| tracing::Dispatch::new(Keeper));
        Logged(Default::default())
    }
}

/// A subscriber alive for the whole test process (see [`Logged`]), never
/// installed: it keeps nothing and leaves each event to the thread's own.
static KEEPER: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();

struct Keeper;

impl tracing::Subscriber for Keeper {
    fn register_callsite(
        &self,
        _: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::sometimes()
    }

    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        false
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, _: &tracing::Event<'_>) {}

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

/// One event [`Logged`] kept.
#[derive(Clone, Debug)]
pub struct LogEvent {
    pub level: tracing::Level,
    pub fields: Vec<(&'static str, String)>,
}

impl LogEvent {
    /// The value of the field `name`, if the event has one.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(field, _)| *field == name)
            .map(|(_, value)| value.as_str())
    }
}

impl Logged {
    /// The events kept so far.
    pub fn events(&self) -> Vec<LogEvent> {
        self.0.lock().unwrap().clone()
    }

    /// The warnings kept so far.
    pub fn warnings(&self) -> Vec<LogEvent> {
        let mut events = self.events();
        events.retain(|e| e.level == tracing::Level::WARN);
        events
    }

    /// The warnings kept so far whose message contains `text`.
    #[allow(dead_code)] // Not every test binary that has `common` asks.
    pub fn warnings_of(&self, text: &str) -> Vec<LogEvent> {
        let mut warnings = self.warnings();
        warnings.retain(|e| e.field("message").is_some_and(|m| m.contains(text)));
        warnings
    }
}

impl tracing::field::Visit for LogEvent {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.fields.push((field.name(), format!("{value:?}")));
    }
}

impl tracing::Subscriber for Logged {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut kept = LogEvent {
            level: *event.metadata().level(),
            fields: Vec::new(),
        };
        event.record(&mut kept);
        self.0.lock().unwrap().push(kept);
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}
