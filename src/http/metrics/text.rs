//! The Prometheus text format 0.0.4: families with `# HELP` and `# TYPE`,
//! samples with escaped labels, values in the format's spelling.

use std::fmt::Write as _;

use super::sink::{Kind, Number, Sink};

/// The `Content-Type` of the Prometheus text format this module writes:
/// `text/plain; version=0.0.4; charset=utf-8`.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Writes a value in the format's spelling.
pub(super) fn write_number(out: &mut String, value: Number) {
    // Writing to a `String` cannot fail.
    match value {
        Number::Int(v) => {
            let _ = write!(out, "{v}");
        }
        // The shortest decimal that reads back as the same `f32`.
        Number::F32(v) if v.is_finite() => {
            let _ = write!(out, "{v}");
        }
        Number::F32(v) => write_number(out, Number::F64(f64::from(v))),
        Number::F64(v) if v.is_nan() => out.push_str("NaN"),
        Number::F64(v) if v.is_infinite() => {
            out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
        }
        Number::F64(v) => {
            let _ = write!(out, "{v}");
        }
    }
}

/// A writer of the text format into a borrowed buffer.
pub(super) struct Text<'a> {
    pub(super) out: &'a mut String,
}

impl Sink for Text<'_> {
    /// A family's `# HELP` and `# TYPE` lines.
    fn family(&mut self, name: &'static str, kind: Kind, help: &'static str) {
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        for c in help.chars() {
            match c {
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                c => self.out.push(c),
            }
        }
        self.out.push_str("\n# TYPE ");
        self.out.push_str(name);
        self.out.push_str(match kind {
            Kind::Counter => " counter\n",
            Kind::Gauge => " gauge\n",
            Kind::Histogram => " histogram\n",
        });
    }

    /// One sample line.
    fn sample(&mut self, name: &'static str, labels: &[(&'static str, &str)], value: Number) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape_label(self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        write_number(self.out, value);
        self.out.push('\n');
    }
}

/// Escapes a label value: backslash, double quote and newline.
pub(super) fn escape_label(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}
