//! The JSON view checked against the snapshot it writes: every value where
//! the snapshot has it, durations and timestamps in seconds.

use std::time::Duration;

use serde_json::{Value, json};

use super::tests::flooded;
use crate::http::{AttackCause, Event, Guard, Overload, ScoreReport, Share, Signal};
use crate::{IpPrefix, Timestamp};

fn secs(d: Duration) -> Value {
    json!(d.as_secs_f64())
}

#[test]
fn the_snapshot_serialises_with_its_values() {
    let (_, guard) = flooded();
    let snap = guard.snapshot();
    let v = serde_json::to_value(&snap).unwrap();
    assert_eq!(v["now"], json!(snap.now.as_nanos() as f64 / 1e9));
    let s = &snap.stats;
    let vs = &v["stats"];
    assert_eq!(vs["requests"], s.requests);
    assert_eq!(vs["admitted"], s.admitted);
    assert_eq!(vs["refused_rate_limit"], s.refused_rate_limit);
    assert_eq!(vs["refused_score"], s.refused_score);
    assert_eq!(vs["bans"], s.bans);
    assert_eq!(vs["tarpit"]["held"], s.tarpit.held);
    assert_eq!(vs["session"]["issued"], s.session.unwrap().issued);
    assert_eq!(vs["scoring"]["banned"], s.scoring.as_ref().unwrap().banned);
    assert!(vs["overload"].as_array().unwrap().is_empty());
    assert!(vs["shared_bans"].is_null());
    for (r, vr) in s.rules.iter().zip(vs["rules"].as_array().unwrap()) {
        assert_eq!(vr["name"], r.name.as_str());
        assert_eq!(vr["shadow"], r.shadow);
        assert_eq!(vr["limiter"]["denied"], r.limiter.denied);
        assert_eq!(vr["shadow_refusals"], r.shadow_refusals);
    }
    assert_eq!(vs["rules"].as_array().unwrap().len(), s.rules.len());

    let d = snap.detection.as_ref().unwrap();
    let vd = &v["detection"];
    assert_eq!(vd["under_attack"], true);
    assert_eq!(vd["rate"], d.rate);
    assert_eq!(vd["latency"], secs(d.latency));
    assert_eq!(
        vd["attack_since"],
        json!(d.attack_since.unwrap().as_nanos() as f64 / 1e9)
    );
    let flagged = &d.flagged_classes[0];
    let vf = &vd["flagged_classes"][0];
    assert_eq!(vf["share"], flagged.share);
    assert_eq!(vf["baseline_share"], flagged.baseline_share);
    assert_eq!(vf["requests"], flagged.requests);
    assert_eq!(vf["key"]["description"], flagged.key.describe());
    assert_eq!(vf["key"]["text"], flagged.key.to_string());
    // The flood came from python-requests: its cluster is said in words.
    let words: Vec<String> = d
        .flagged_classes
        .iter()
        .chain(&d.top_classes)
        .map(|c| c.key.describe())
        .collect();
    assert!(
        words
            .iter()
            .any(|w| w.starts_with("python-requests 2: a scripting tool")),
        "{words:?}"
    );
    for (p, vp) in d
        .top_prefixes
        .iter()
        .zip(vd["top_prefixes"].as_array().unwrap())
    {
        assert_eq!(vp["key"], p.key.to_string());
    }

    assert!(!snap.offenders.is_empty());
    for (o, vo) in snap
        .offenders
        .iter()
        .zip(v["offenders"].as_array().unwrap())
    {
        assert_eq!(vo["client"], o.client.to_string());
        assert_eq!(vo["action"], o.action.name());
        assert_eq!(vo["report"]["score"], json!(o.report.score()));
        let signals: Vec<(Signal, f32)> = o.report.signals().collect();
        let vsig = vo["report"]["signals"].as_array().unwrap();
        assert_eq!(vsig.len(), signals.len());
        for ((sig, pts), vs) in signals.iter().zip(vsig) {
            assert_eq!(vs["signal"], sig.name());
            assert_eq!(vs["points"], json!(pts));
            assert_eq!(vs["about"], sig.describe());
        }
        assert_eq!(vo["at"], json!(o.at.as_nanos() as f64 / 1e9));
    }

    assert!(!snap.bans.is_empty());
    for ((p, left), vb) in snap.bans.iter().zip(v["bans"].as_array().unwrap()) {
        assert_eq!(vb["prefix"], p.to_string());
        assert_eq!(vb["remaining"], secs(*left));
    }
}

#[test]
fn adaptive_limits_serialise_priorities_as_names_and_latencies_in_seconds() {
    let guard = Guard::builder().overload(Overload::aimd()).build().unwrap();
    let v = serde_json::to_value(guard.stats()).unwrap();
    let l = &v["overload"][0];
    let stats = &guard.stats().overload[0];
    assert!(l["route"].is_null());
    assert_eq!(l["limit"], stats.limit);
    assert_eq!(
        l["in_flight_by"],
        json!({"lowest": 0, "low": 0, "normal": 0, "high": 0, "highest": 0})
    );
    assert_eq!(l["shed"]["highest"], 0);
    assert_eq!(l["latency_sum"], json!(0.0));
    assert!(l["p50"].is_null());
    assert!(l["buckets"].as_array().unwrap().is_empty());
}

#[test]
fn events_are_tagged_by_type() {
    let mut report = ScoreReport::default();
    report.add(Signal::RatePressure, 70.0);
    report.add(Signal::AutomatedClient, 15.0);
    let banned = Event::ClientBanned {
        client: "192.0.2.7/32".parse::<IpPrefix>().unwrap(),
        duration: Duration::from_millis(60_500),
        report: report.finish(),
        offences: 1,
        shadow: false,
    };
    assert_eq!(
        serde_json::to_value(&banned).unwrap(),
        json!({
            "type": "client_banned",
            "client": "192.0.2.7/32",
            "duration": 60.5,
            "report": {"score": 85.0, "signals": [
                {"signal": "rate_pressure", "points": 70.0, "about": "refused by the rate rules"},
                {"signal": "automated_client", "points": 15.0,
                 "about": "a scripting tool, or no user agent"},
            ]},
            "offences": 1,
            "shadow": false,
        })
    );
    let started = Event::AttackStarted {
        cause: AttackCause::SuspectSurge,
        rate: 900.0,
        baseline_rate: 100.0,
        latency: Duration::from_millis(250),
        baseline_latency: Duration::from_millis(5),
        suspect_share: (0.8, 0.1),
        refused_share: (0.5, 0.0),
    };
    let v = serde_json::to_value(&started).unwrap();
    assert_eq!(v["type"], "attack_started");
    assert_eq!(v["cause"], "suspect_surge");
    assert_eq!(v["latency"], json!(0.25));
    assert_eq!(v["suspect_share"], json!([0.8, 0.1]));
    let ended = Event::AttackEnded {
        lasted: Duration::from_secs(90),
    };
    assert_eq!(
        serde_json::to_value(&ended).unwrap(),
        json!({"type": "attack_ended", "lasted": 90.0})
    );
    let net = Event::PrefixFlagged(Share {
        key: "198.51.100.0/24".parse::<IpPrefix>().unwrap(),
        requests: 40,
        new_clients: 0,
        share: 0.25,
        baseline_share: 0.0,
    });
    let v = serde_json::to_value(&net).unwrap();
    assert_eq!(v["type"], "prefix_flagged");
    assert_eq!(v["key"], "198.51.100.0/24");
    assert_eq!(v["share"], json!(0.25));
    assert_eq!(
        serde_json::to_value(Timestamp::from_nanos(1_500_000_000)).unwrap(),
        json!(1.5)
    );
}
