//! The bridge to the `metrics` facade (feature `metrics`): the families
//! of the Prometheus text, published as the facade's counters and
//! gauges, so that they land in whatever recorder the application
//! installed (its Prometheus exporter, OpenTelemetry, StatsD, ...).
//!
//! The guard's values are read at scrape time (striped atomics summed by
//! `snapshot`), the facade is told values: so a publish reads the same
//! description of the families the text is written from (`sink`) and
//! sets each sample's current value.

use std::time::Duration;

use ::metrics::{Key, KeyName, Label, Level, Metadata, Recorder, SharedString};

use super::sink::{Kind, Number, Out, Sink};
use crate::http::{Gate, Guard};
use crate::{Clock, CoarseClock, ConfigError};

/// Where the facade's metadata says the samples come from.
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// Publishes a [`Guard`]'s (and optionally a [`Gate`]'s) counters
/// through the [`metrics`](https://docs.rs/metrics) facade: the same
/// families, names, labels and values as [`Guard::prometheus`], in the
/// application's own recorder.
///
/// The guard's counters live in its own atomics and are read when asked
/// for; the facade is push-based. So [`publish`](Self::publish) reads
/// them once and sets each sample through the facade, and
/// [`spawn`](Self::spawn) does so every few seconds on Tokio. Each
/// sample becomes:
///
/// * in a counter family: a counter, set with `Counter::absolute` (the
///   facade's recorders keep the larger of the old and new value, so a
///   counter never goes back);
/// * in a gauge family: a gauge, set with `Gauge::set`;
/// * in the histogram family (`floodguard_service_latency_seconds`,
///   with [overload protection](crate::http::GuardBuilder::overload)):
///   `_bucket` (cumulative, label `le` as in the text, `+Inf` included)
///   and `_count` are counters, and `_sum` (seconds, a fraction) is a
///   gauge, since the facade's counters are integers. They are not a
///   facade histogram: that takes single observations, and the guard
///   keeps only the buckets.
///
/// Labels are the text's, in the same order. Each metric is described
/// with its family's help text (`describe_counter`, `describe_gauge`),
/// without a unit: the names carry it, as in the text. Series appear
/// and stay as the text's do (a rule's, a flagged class's, an
/// offender's); the bridge never removes one from the recorder, so an
/// offender who left the top 32 keeps its last score there until the
/// recorder forgets idle series (the Prometheus exporter's
/// `idle_timeout`, for one).
///
/// ```
/// use floodguard::http::{Guard, MetricsBridge, PeerAddr, Rule};
/// use metrics_util::debugging::{DebugValue, DebuggingRecorder};
/// use std::time::Duration;
///
/// let guard = Guard::builder()
///     .rule(Rule::per_ip("per-ip").sliding_window(1, Duration::from_secs(60)))
///     .build()?;
/// let (mut parts, ()) = http::Request::get("/").body(()).unwrap().into_parts();
/// parts.extensions.insert(PeerAddr("192.0.2.1:4000".parse().unwrap()));
/// let _ = guard.check(&parts);
/// let _ = guard.check(&parts);
///
/// let bridge = MetricsBridge::new(guard.clone());
/// // An application installs its recorder once, with
/// // `metrics::set_global_recorder`; here one for this thread only.
/// let recorder = DebuggingRecorder::new();
/// let snapshotter = recorder.snapshotter();
/// metrics::with_local_recorder(&recorder, || bridge.publish());
///
/// let refused = snapshotter.snapshot().into_vec().into_iter().find(|(k, ..)| {
///     let key = k.key();
///     key.name() == "floodguard_refused_total"
///         && key.labels().any(|l| l.key() == "reason" && l.value() == "rate_limit")
/// });
/// assert!(matches!(refused, Some((.., DebugValue::Counter(1)))));
/// # Ok::<(), floodguard::ConfigError>(())
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
#[derive(Clone, Debug)]
pub struct MetricsBridge<C = CoarseClock> {
    guard: Guard<C>,
    gate: Option<Gate>,
}

impl<C: Clock> MetricsBridge<C> {
    /// A bridge for `guard`'s families.
    pub fn new(guard: Guard<C>) -> Self {
        MetricsBridge { guard, gate: None }
    }

    /// Also the gate's families, after the guard's (as
    /// [`metrics_handler_with_gate`](crate::http::metrics_handler_with_gate)
    /// serves them).
    #[must_use]
    pub fn with_gate(mut self, gate: Gate) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Sets every sample's current value in the recorder the facade
    /// hands out on this thread: the one of
    /// `metrics::with_local_recorder` if inside it, else the global one
    /// (none installed: the values go nowhere).
    pub fn publish(&self) {
        ::metrics::with_recorder(|recorder| self.publish_to(recorder));
    }

    /// Sets every sample's current value in `recorder`.
    pub fn publish_to(&self, recorder: &dyn Recorder) {
        let mut sink = Publisher {
            recorder,
            kind: Kind::Gauge,
            help: "",
            described: Vec::with_capacity(96),
        };
        let mut out = Out::new(&mut sink);
        self.guard.families(&mut out);
        if let Some(gate) = &self.gate {
            gate.families(&mut out);
        }
    }
}

impl<C: Clock + Send + Sync + 'static> MetricsBridge<C> {
    /// Publishes now and then every `every` on a Tokio task, to the global
    /// recorder (`metrics::set_global_recorder`; a thread's local
    /// recorder is not seen from the task). The task stops when the
    /// returned [`PublishTask`] is dropped. A tick that comes late is
    /// delayed, not caught up on.
    ///
    /// A zero `every` is a [`ConfigError::ZeroDuration`].
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime, as `tokio::spawn` does.
    ///
    /// ```
    /// use std::time::Duration;
    /// use floodguard::http::{Guard, MetricsBridge};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), floodguard::ConfigError> {
    /// let guard = Guard::builder().default_rules().build()?;
    /// let gate = guard.gate().build()?;
    /// let publishing = MetricsBridge::new(guard.clone())
    ///     .with_gate(gate.clone())
    ///     .spawn(Duration::from_secs(10))?;
    /// // ... serve; dropping `publishing` stops it.
    /// drop(publishing);
    /// # Ok(())
    /// # }
    /// ```
    pub fn spawn(self, every: Duration) -> Result<PublishTask, ConfigError> {
        if every.is_zero() {
            return Err(ConfigError::ZeroDuration { field: "every" });
        }
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                self.publish();
            }
        });
        Ok(PublishTask { task })
    }
}

/// The task of [`MetricsBridge::spawn`]; dropping it stops the
/// publishing.
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
#[derive(Debug)]
#[must_use = "dropping the task stops the publishing at once"]
pub struct PublishTask {
    task: tokio::task::JoinHandle<()>,
}

impl PublishTask {
    /// Whether the task has ended (it ends only when stopped, or if a
    /// publish panicked, which a recorder of the application's may do).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for PublishTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A sink that sets each sample in a recorder.
struct Publisher<'r> {
    recorder: &'r dyn Recorder,
    /// The current family's type and help.
    kind: Kind,
    help: &'static str,
    /// Names described in this publish: each once.
    described: Vec<&'static str>,
}

impl Sink for Publisher<'_> {
    fn family(&mut self, _name: &'static str, kind: Kind, help: &'static str) {
        self.kind = kind;
        self.help = help;
    }

    fn sample(&mut self, name: &'static str, labels: &[(&'static str, &str)], value: Number) {
        let labels: Vec<Label> = labels
            .iter()
            .map(|(k, v)| Label::new(*k, (*v).to_owned()))
            .collect();
        let key = Key::from_parts(KeyName::from_const_str(name), labels);
        let describe = !self.described.contains(&name);
        if describe {
            self.described.push(name);
        }
        let help = SharedString::const_str(self.help);
        match (self.kind, value) {
            // Counters, and a histogram's bucket counts and count.
            (Kind::Counter | Kind::Histogram, Number::Int(n)) => {
                if describe {
                    self.recorder
                        .describe_counter(KeyName::from_const_str(name), None, help);
                }
                self.recorder.register_counter(&key, &METADATA).absolute(n);
            }
            // Gauges, and a histogram's sum (a fraction of seconds).
            (_, value) => {
                if describe {
                    self.recorder
                        .describe_gauge(KeyName::from_const_str(name), None, help);
                }
                self.recorder
                    .register_gauge(&key, &METADATA)
                    .set(to_f64(value));
            }
        }
    }
}

/// The value the text shows, as an `f64`: an `f32` through its shortest
/// decimal (the text's 87.79362, not its widening 87.79361724853516).
fn to_f64(value: Number) -> f64 {
    match value {
        Number::Int(n) => n as f64,
        Number::F64(v) => v,
        Number::F32(v) if v.is_finite() => v.to_string().parse().unwrap_or(f64::from(v)),
        Number::F32(v) => f64::from(v),
    }
}
