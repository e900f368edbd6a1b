//! Scoring's values as serde writes them: signals and actions by their
//! snake_case names, a score report as its score and its signals.

use serde::ser::{Serialize, SerializeStruct, Serializer};

use super::ladder::{Action, ScoreReport, Signal};

/// Its [name](Signal::name): `"rate_pressure"`.
impl Serialize for Signal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// Its [name](Action::name): `"ban"`.
impl Serialize for Action {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// `{"score": 85.0, "signals": [{"signal": "rate_pressure", "points":
/// 40.0, "about": "refused by the rate rules"}, ...]}`, largest signal
/// first.
impl Serialize for ScoreReport {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct Part {
            signal: Signal,
            points: f32,
            about: &'static str,
        }
        let parts: Vec<Part> = self
            .signals()
            .map(|(signal, points)| Part {
                signal,
                points,
                about: signal.describe(),
            })
            .collect();
        let mut st = s.serialize_struct("ScoreReport", 2)?;
        st.serialize_field("score", &self.score())?;
        st.serialize_field("signals", &parts)?;
        st.end()
    }
}
