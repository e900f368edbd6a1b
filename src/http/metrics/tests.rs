//! The exposition checked against a parser of the format and the stats.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use http::request::Parts;

use super::sink::{Kind, Number, Sink};
use super::text::{Text, write_number};
use crate::ManualClock;
use crate::http::{Detection, Gate, Guard, PeerAddr, Rule, Scoring, SessionCookie};

/// One parsed sample line.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    fn label(&self, k: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

fn valid_name(s: &str, colon: bool) -> bool {
    let mut b = s.bytes();
    let ok = |c: u8| c.is_ascii_alphabetic() || c == b'_' || (colon && c == b':');
    b.next().is_some_and(ok) && b.all(|c| ok(c) || c.is_ascii_digit())
}

/// Parses `{k="v",...} value`, undoing the escapes.
fn parse_labels(rest: &str) -> (Vec<(String, String)>, &str) {
    let Some(mut s) = rest.strip_prefix('{') else {
        return (Vec::new(), rest);
    };
    let mut labels = Vec::new();
    loop {
        if let Some(r) = s.strip_prefix('}') {
            return (labels, r);
        }
        let eq = s.find("=\"").expect("label name then =\"");
        let key = &s[..eq];
        assert!(valid_name(key, false), "bad label name {key:?}");
        let mut value = String::new();
        let mut chars = s[eq + 2..].char_indices();
        let end = loop {
            let (i, c) = chars.next().expect("unterminated label value");
            match c {
                '"' => break eq + 2 + i + 1,
                '\\' => match chars.next().expect("dangling escape").1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    c => panic!("bad escape \\{c}"),
                },
                '\n' => panic!("raw newline in a label value"),
                c => value.push(c),
            }
        };
        labels.push((key.to_owned(), value));
        s = &s[end..];
        s = s.strip_prefix(',').unwrap_or(s);
    }
}

/// Checks the text line by line against the format and returns its
/// samples: names and label names valid, HELP and TYPE once per family
/// and before its samples, a family's samples together, counters
/// ending in `_total`, values that parse, no repeated series.
fn parse(text: &str) -> Vec<Sample> {
    assert!(text.is_empty() || text.ends_with('\n'));
    let mut help = HashSet::new();
    let mut types: HashMap<String, String> = HashMap::new();
    let mut closed = HashSet::new();
    let mut current: Option<String> = None;
    let mut series = HashSet::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, doc) = rest.split_once(' ').expect("HELP name text");
            assert!(valid_name(name, true), "{line}");
            assert!(!doc.is_empty(), "{line}");
            assert!(help.insert(name.to_owned()), "HELP twice: {name}");
            assert!(!types.contains_key(name), "HELP after TYPE: {name}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(help.contains(name), "TYPE without HELP: {name}");
            assert!(matches!(kind, "counter" | "gauge"), "{line}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counter {name}");
            } else {
                assert!(!name.ends_with("_total"), "gauge {name}");
            }
            assert!(types.insert(name.into(), kind.into()).is_none(), "{line}");
            if let Some(prev) = current.replace(name.to_owned()) {
                closed.insert(prev);
            }
        } else {
            assert!(!line.starts_with('#'), "stray comment {line}");
            let end = line.find(['{', ' ']).expect("name then labels or value");
            let name = &line[..end];
            assert!(valid_name(name, true), "{line}");
            assert_eq!(current.as_deref(), Some(name), "sample outside its family");
            assert!(!closed.contains(name));
            let (labels, rest) = parse_labels(&line[end..]);
            let value = rest.strip_prefix(' ').expect("space before value");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("value {line}"));
            let key = format!("{name}{labels:?}");
            assert!(series.insert(key), "series twice: {line}");
            samples.push(Sample {
                name: name.to_owned(),
                labels,
                value,
            });
        }
    }
    assert_eq!(help.len(), types.len(), "every family has HELP and TYPE");
    samples
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<_> = samples
        .iter()
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(*v)))
        .collect();
    assert_eq!(found.len(), 1, "{name}{labels:?}: {found:?}");
    found[0].value
}

fn parts(ip: IpAddr, user_agent: &str) -> Parts {
    let (mut parts, ()) = http::Request::get("/")
        .header("host", "shop.test")
        .header("user-agent", user_agent)
        .header("accept", "*/*")
        .header("accept-language", "en")
        .header("accept-encoding", "gzip")
        .body(())
        .unwrap()
        .into_parts();
    parts
        .extensions
        .insert(PeerAddr(SocketAddr::new(ip, 40_000)));
    parts
}

fn v4(a: u8, b: u8, c: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, a, b, c))
}

const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";

/// A guard with enforced and shadow rules and scoring, calm traffic
/// for three seconds, then a flood from a scripting tool.
pub(super) fn flooded() -> (ManualClock, Guard<ManualClock>) {
    let clock = ManualClock::new();
    let detection = Detection::default();
    let guard = Guard::builder()
        .rule(Rule::per_ip("per-ip").sliding_window(5, Duration::from_secs(1)))
        .rule(Rule::global("ceiling").gcra(100_000, Duration::from_secs(1)))
        .rule(
            Rule::per_ip("would-be")
                .sliding_window(2, Duration::from_secs(1))
                .shadow(),
        )
        .scoring(Scoring::new().detection(detection))
        .session(SessionCookie::new([3; 16]))
        .clock(clock.clone())
        .build()
        .unwrap();
    let step = Duration::from_millis(100);
    for i in 0..30u32 {
        // Calm: 60 browsers, 200 requests a second in all (detection
        // arms once it has seen 500).
        for k in 0..20 {
            let b = ((i * 20 + k) % 60) as u8;
            let _ = guard.check(&parts(v4(1, 1, b), BROWSER));
        }
        clock.advance(step);
    }
    for i in 0..40u8 {
        let _ = guard.check(&parts(v4(1, 1, i % 4), BROWSER));
        for k in 0..20u8 {
            let bot = v4(2, k, 9);
            let _ = guard.check(&parts(bot, "python-requests/2.32.3"));
        }
        clock.advance(step);
    }
    (clock, guard)
}

#[test]
fn exposition_is_well_formed_and_matches_the_stats() {
    let (_, guard) = flooded();
    let mut forged = parts(v4(1, 1, 1), BROWSER);
    forged
        .headers
        .insert(http::header::COOKIE, "__fg=0123".parse().unwrap());
    let _ = guard.check(&forged);
    let text = guard.prometheus();
    let samples = parse(&text);
    let s = guard.stats();
    let v = |name, labels: &[(&str, &str)]| value(&samples, name, labels);
    assert_eq!(v("floodguard_requests_total", &[]), s.requests as f64);
    assert_eq!(v("floodguard_admitted_total", &[]), s.admitted as f64);
    for (reason, n) in [
        ("rate_limit", s.refused_rate_limit),
        ("blocked", s.refused_blocked),
        ("score", s.refused_score),
        ("challenge", s.refused_challenge),
        ("no_peer_address", s.no_peer_address),
    ] {
        assert_eq!(
            v("floodguard_refused_total", &[("reason", reason)]),
            n as f64
        );
    }
    assert!(s.refused_rate_limit > 0 && s.refused_blocked + s.refused_score > 0);
    assert_eq!(v("floodguard_bans", &[]), guard.bans().len() as f64);
    assert!(!guard.bans().is_empty());
    let t = s.tarpit;
    assert_eq!(v("floodguard_tarpit_held_total", &[]), t.held as f64);
    assert_eq!(v("floodguard_tarpit_full_total", &[]), t.full as f64);
    assert_eq!(v("floodguard_tarpit_holding", &[]), t.holding as f64);
    for r in &s.rules {
        let shadow = if r.shadow { "true" } else { "false" };
        let l = [("rule", r.name.as_str()), ("shadow", shadow)];
        assert_eq!(
            v("floodguard_rule_admitted_total", &l),
            r.limiter.admitted as f64
        );
        assert_eq!(
            v("floodguard_rule_denied_total", &l),
            r.limiter.denied as f64
        );
        assert_eq!(v("floodguard_rule_keys", &l), r.limiter.occupancy as f64);
        assert_eq!(
            v("floodguard_rule_key_capacity", &l),
            r.limiter.capacity as f64
        );
    }
    assert!(
        v(
            "floodguard_rule_denied_total",
            &[("rule", "would-be"), ("shadow", "true")]
        ) > 0.0
    );
    let se = s.session.unwrap();
    assert_eq!(se.invalid, 1);
    for (outcome, n) in [
        ("valid", se.valid),
        ("invalid", se.invalid),
        ("issued", se.issued),
        ("not_returned", se.not_returned),
    ] {
        assert_eq!(
            v("floodguard_session_cookies_total", &[("outcome", outcome)]),
            n as f64
        );
    }
    let sc = s.scoring.unwrap();
    let actions = |a, shadow| {
        v(
            "floodguard_score_actions_total",
            &[("action", a), ("shadow", shadow)],
        )
    };
    assert_eq!(actions("throttle", "false"), sc.throttled as f64);
    assert_eq!(actions("challenge", "false"), sc.challenged as f64);
    assert_eq!(actions("ban", "false"), sc.banned as f64);
    assert_eq!(actions("ban", "true"), sc.shadow_bans as f64);
    assert!(sc.banned > 0);
    assert_eq!(
        v("floodguard_under_attack_requests_total", &[]),
        sc.under_attack_requests as f64
    );
    assert_eq!(v("floodguard_scored_clients", &[]), sc.clients as f64);
    // The flood was detected; its class flagged with its share.
    let snap = guard.snapshot();
    let d = snap.detection.unwrap();
    assert!(d.under_attack);
    assert_eq!(v("floodguard_under_attack", &[]), 1.0);
    assert_eq!(v("floodguard_request_rate", &[]), d.rate);
    assert_eq!(
        v("floodguard_flagged_classes", &[]),
        d.flagged_classes.len() as f64
    );
    assert!(v("floodguard_attack_duration_seconds", &[]) > 0.0);
    let flagged = d.flagged_classes.first().expect("a flagged class");
    let class = flagged.key.to_string();
    assert_eq!(
        v("floodguard_flagged_class_share", &[("class", &class)]),
        flagged.share
    );
    // Offenders: one series each, highest score first.
    let offenders: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == "floodguard_offender_score")
        .collect();
    assert_eq!(offenders.len(), snap.offenders.len());
    assert!(!offenders.is_empty() && offenders.len() <= 32);
    for (o, sample) in snap.offenders.iter().zip(&offenders) {
        assert_eq!(sample.label("client"), Some(o.client.to_string().as_str()));
        assert_eq!(sample.value as f32, o.report.score());
        let signal = o.report.top_signal().map_or("none", |s| s.name());
        assert_eq!(sample.label("signal"), Some(signal));
    }
}

#[test]
fn output_is_deterministic() {
    let (_, guard) = flooded();
    assert_eq!(guard.prometheus(), guard.prometheus());
    let mut both = String::from("# a line of my own\n");
    guard.write_prometheus(&mut both);
    assert_eq!(both, format!("# a line of my own\n{}", guard.prometheus()));
}

#[test]
fn scoring_families_only_when_scoring_is_on() {
    let guard = Guard::builder().build().unwrap();
    let text = guard.prometheus();
    let samples = parse(&text);
    assert_eq!(value(&samples, "floodguard_requests_total", &[]), 0.0);
    for absent in [
        "floodguard_rule_",
        "floodguard_score_",
        "floodguard_under_attack",
        "floodguard_offender_score",
    ] {
        assert!(!text.contains(absent), "{absent} in {text}");
    }
    // The attack goes, the gauges stay, at 0.
    let (clock, guard) = flooded();
    clock.advance(Duration::from_secs(120));
    for i in 0..100u8 {
        let _ = guard.check(&parts(v4(1, 1, i % 4), BROWSER));
        clock.advance(Duration::from_millis(250));
    }
    let samples = parse(&guard.prometheus());
    assert_eq!(value(&samples, "floodguard_under_attack", &[]), 0.0);
    assert_eq!(
        value(&samples, "floodguard_attack_duration_seconds", &[]),
        0.0
    );
}

#[test]
fn requests_without_a_peer_are_counted_as_such() {
    let guard = Guard::builder().build().unwrap();
    let (parts, ()) = http::Request::get("/").body(()).unwrap().into_parts();
    assert!(guard.check(&parts).is_err());
    let samples = parse(&guard.prometheus());
    let reason = [("reason", "no_peer_address")];
    assert_eq!(value(&samples, "floodguard_refused_total", &reason), 1.0);
}

#[test]
fn label_values_are_escaped() {
    let mut out = String::new();
    let mut t = Text { out: &mut out };
    t.family("x_total", Kind::Counter, "Back\\slash and\nnewline.");
    let nasty = "a\"b\\c\nd} e=\"f\",";
    t.sample("x_total", &[("k", nasty), ("other", "")], Number::Int(3));
    assert_eq!(
        out,
        "# HELP x_total Back\\\\slash and\\nnewline.\n# TYPE x_total counter\n\
         x_total{k=\"a\\\"b\\\\c\\nd} e=\\\"f\\\",\",other=\"\"} 3\n"
    );
    let samples = parse(&out);
    assert_eq!(samples[0].label("k"), Some(nasty));
    assert_eq!(samples[0].label("other"), Some(""));
}

#[test]
fn special_floats_use_the_formats_spelling() {
    let mut out = String::new();
    for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.25, 1e-9, 3.0] {
        write_number(&mut out, Number::F64(v));
        out.push(' ');
    }
    for v in [f32::NAN, f32::INFINITY, 87.79362f32] {
        write_number(&mut out, Number::F32(v));
        out.push(' ');
    }
    assert_eq!(out, "NaN +Inf -Inf 0.25 0.000000001 3 NaN +Inf 87.79362 ");
}

#[test]
fn gate_counters() {
    let gate = Gate::builder().build().unwrap();
    let text = gate.prometheus();
    let samples = parse(&text);
    assert_eq!(value(&samples, "floodguard_gate_accepted_total", &[]), 0.0);
    for reason in ["blocked", "per_ip", "per_prefix", "rate"] {
        let l = [("reason", reason)];
        assert_eq!(value(&samples, "floodguard_gate_refused_total", &l), 0.0);
    }
    assert_eq!(
        value(&samples, "floodguard_gate_open_connections", &[]),
        0.0
    );
    for name in [
        "floodguard_gate_tarpit_held_total",
        "floodguard_gate_tarpit_full_total",
        "floodguard_gate_tarpit_holding",
    ] {
        assert_eq!(value(&samples, name, &[]), 0.0, "{name}");
    }
    // Guard and gate share one buffer without clashing.
    let guard = Guard::builder().build().unwrap();
    let mut both = guard.prometheus();
    gate.write_prometheus(&mut both);
    parse(&both);
}
