//! The one description of the families. The family code (`guard`,
//! `gate`, `scoring`, `overload`) says each family and sample once, to a
//! [`Sink`]; the text format is one sink, the `metrics` facade bridge
//! (feature `metrics`) another, so the two cannot list different names.

/// A metric family's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A sample's value, as the stats hold it: a sink decides the spelling
/// (the text) or the type (the facade).
#[derive(Clone, Copy, Debug)]
pub(super) enum Number {
    Int(u64),
    F64(f64),
    /// Kept apart from `F64`: its shortest decimal is the f32's, not
    /// the longer one of its widening (87.79362, not 87.79361724853516).
    F32(f32),
}

impl From<u64> for Number {
    fn from(v: u64) -> Self {
        Number::Int(v)
    }
}

impl From<u32> for Number {
    fn from(v: u32) -> Self {
        Number::Int(u64::from(v))
    }
}

impl From<usize> for Number {
    fn from(v: usize) -> Self {
        Number::Int(v as u64)
    }
}

impl From<f64> for Number {
    fn from(v: f64) -> Self {
        Number::F64(v)
    }
}

impl From<f32> for Number {
    fn from(v: f32) -> Self {
        Number::F32(v)
    }
}

/// Where families go. A family's `family` call comes before its
/// samples, and its samples come together; a histogram family's samples
/// are named `<family>_bucket`, `_sum` and `_count`.
pub(super) trait Sink {
    fn family(&mut self, name: &'static str, kind: Kind, help: &'static str);
    fn sample(&mut self, name: &'static str, labels: &[(&'static str, &str)], value: Number);
}

/// What the family code writes to: a sink, with shorthands.
pub(super) struct Out<'a> {
    sink: &'a mut dyn Sink,
}

impl<'a> Out<'a> {
    pub(super) fn new(sink: &'a mut dyn Sink) -> Self {
        Out { sink }
    }

    /// A family's name, type and help.
    pub(super) fn family(&mut self, name: &'static str, kind: Kind, help: &'static str) {
        self.sink.family(name, kind, help);
    }

    /// One sample of the current family.
    pub(super) fn sample(
        &mut self,
        name: &'static str,
        labels: &[(&'static str, &str)],
        value: impl Into<Number>,
    ) {
        self.sink.sample(name, labels, value.into());
    }

    /// A counter family of one unlabelled sample.
    pub(super) fn counter(
        &mut self,
        name: &'static str,
        help: &'static str,
        value: impl Into<Number>,
    ) {
        self.family(name, Kind::Counter, help);
        self.sample(name, &[], value);
    }

    /// A gauge family of one unlabelled sample.
    pub(super) fn gauge(
        &mut self,
        name: &'static str,
        help: &'static str,
        value: impl Into<Number>,
    ) {
        self.family(name, Kind::Gauge, help);
        self.sample(name, &[], value);
    }
}
