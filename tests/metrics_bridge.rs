//! The `metrics` facade bridge publishes what the Prometheus text shows:
//! every sample of the text, parsed, is in the recorder under the same
//! name and labels with the same value, and the recorder holds nothing
//! else.
#![cfg(feature = "metrics")]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use floodguard::http::{
    Detection, Gate, Guard, MetricsBridge, Overload, PeerAddr, Rule, Scoring, SessionCookie,
    TokioClock,
};
use http::{Request, Response};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tokio::sync::Semaphore;
use tower::{Layer, Service, ServiceExt};

const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";

/// One sample line of the text, its family's type and help.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: String,
    kind: String,
    help: String,
}

/// Undoes the text's escapes (`\\`, `\n`, and in label values `\"`).
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some(c @ ('\\' | '"')) => out.push(c),
            other => panic!("bad escape {other:?} in {s:?}"),
        }
    }
    out
}

/// `{k="v",...}` at the start of `s`: the labels and the rest.
fn parse_labels(s: &str) -> (Vec<(String, String)>, &str) {
    let Some(mut s) = s.strip_prefix('{') else {
        return (Vec::new(), s);
    };
    let mut labels = Vec::new();
    loop {
        if let Some(rest) = s.strip_prefix('}') {
            return (labels, rest);
        }
        let (key, rest) = s.split_once("=\"").expect("label name then =\"");
        // The value ends at the first quote not escaped.
        let mut end = None;
        let mut escaped = false;
        for (i, c) in rest.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let end = end.expect("unterminated label value");
        labels.push((key.to_owned(), unescape(&rest[..end])));
        s = &rest[end + 1..];
        s = s.strip_prefix(',').unwrap_or(s);
    }
}

/// Every sample of `text`, with its family's `# TYPE` and `# HELP`.
fn parse(text: &str) -> Vec<Sample> {
    let mut help: HashMap<&str, String> = HashMap::new();
    let mut family: Option<(&str, &str)> = None;
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, doc) = rest.split_once(' ').unwrap();
            help.insert(name, unescape(doc));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            family = Some(rest.split_once(' ').unwrap());
        } else {
            let (fam, kind) = family.expect("a sample before any # TYPE");
            let end = line.find(['{', ' ']).unwrap();
            let (labels, rest) = parse_labels(&line[end..]);
            samples.push(Sample {
                name: line[..end].to_owned(),
                labels,
                value: rest.strip_prefix(' ').unwrap().to_owned(),
                kind: kind.to_owned(),
                help: help[fam].clone(),
            });
        }
    }
    samples
}

/// What the recorder holds: by name and labels (in their order), the
/// value and the description.
type Held = HashMap<(String, Vec<(String, String)>), (DebugValue, Option<String>)>;

fn held(snapshotter: &Snapshotter) -> Held {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(ck, unit, description, value)| {
            assert!(unit.is_none(), "{ck:?} has a unit");
            let key = ck.key();
            let labels = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            (
                (key.name().to_owned(), labels),
                (value, description.map(|d| d.to_string())),
            )
        })
        .collect()
}

/// Checks every sample of `text` against the recorder: same name,
/// labels and value, a counter where the text has a count, the family's
/// help as description. Returns how many samples there were.
fn assert_published(text: &str, held: &Held) -> usize {
    let samples = parse(text);
    for s in &samples {
        let (value, description) = held
            .get(&(s.name.clone(), s.labels.clone()))
            .unwrap_or_else(|| panic!("{} {:?} not published", s.name, s.labels));
        assert_eq!(description.as_deref(), Some(s.help.as_str()), "{s:?}");
        // A histogram's sum is a fraction: a gauge; its counts counters.
        let counter = s.kind == "counter" || (s.kind == "histogram" && !s.name.ends_with("_sum"));
        match value {
            DebugValue::Counter(n) if counter => {
                assert_eq!(s.value.parse::<u64>().ok(), Some(*n), "{s:?}");
            }
            DebugValue::Gauge(v) if !counter => {
                let text_value: f64 = match s.value.as_str() {
                    "+Inf" => f64::INFINITY,
                    "-Inf" => f64::NEG_INFINITY,
                    v => v.parse().unwrap(),
                };
                let v = v.into_inner();
                assert!(
                    v == text_value || (v.is_nan() && text_value.is_nan()),
                    "{s:?}: published {v}"
                );
            }
            other => panic!("{s:?} published as {other:?}"),
        }
    }
    samples.len()
}

fn value(text: &str, series: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.strip_prefix(series).is_some_and(|r| r.starts_with(' ')))
        .unwrap_or_else(|| panic!("{series} missing from\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

fn request(path: &str, ip: IpAddr, user_agent: &str) -> Request<String> {
    let mut req = Request::get(path)
        .header("host", "shop.test")
        .header("user-agent", user_agent)
        .header("accept", "*/*")
        .header("accept-language", "en")
        .header("accept-encoding", "gzip")
        .body(String::new())
        .unwrap();
    req.extensions_mut()
        .insert(PeerAddr(SocketAddr::new(ip, 40_000)));
    req
}

fn v4(a: u8, b: u8, c: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, a, b, c))
}

/// A guard with enforced and shadow rules, scoring with detection, the
/// session cookie and overload protection with a route and a waiting
/// room, on Tokio's (paused) clock.
fn guard() -> Guard<TokioClock> {
    Guard::builder()
        .rule(Rule::per_ip("per-ip").sliding_window(5, Duration::from_secs(1)))
        .rule(
            Rule::per_ip("would-be")
                .sliding_window(2, Duration::from_secs(1))
                .shadow(),
        )
        .scoring(Scoring::new().detection(Detection::default()))
        .session(SessionCookie::new([3; 16]))
        .overload(
            Overload::gradient2()
                .limits(4, 2, 100)
                .route("/search")
                .queue(2, Duration::from_millis(5)),
        )
        .clock(TokioClock::new())
        .build()
        .unwrap()
}

/// Overload: 16 clients through the layer at a service of 2 places
/// taking 10 ms each, every request from an address of its own (no
/// rule refuses them); some are answered, some shed.
async fn overload_traffic(guard: &Guard<TokioClock>) {
    let places = Arc::new(Semaphore::new(2));
    let svc = tower::service_fn(move |_: Request<String>| {
        let places = Arc::clone(&places);
        async move {
            let _place = places.acquire().await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok::<_, Infallible>(Response::new(String::new()))
        }
    });
    let mut tasks = Vec::new();
    for c in 0..16u8 {
        let mut layered = guard.layer().layer(svc.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..20u8 {
                let path = if c % 2 == 0 { "/search" } else { "/" };
                let req = request(path, v4(3, c, i), BROWSER);
                let res = layered.ready().await.unwrap().call(req).await.unwrap();
                if !res.status().is_success() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Calm browser traffic for three seconds, then a flood from a
/// scripting tool: rate refusals, scores, an attack, bans.
async fn flood(guard: &Guard<TokioClock>) {
    let step = Duration::from_millis(100);
    let check = |req: Request<String>| {
        let (parts, _) = req.into_parts();
        let _ = guard.check(&parts);
    };
    for i in 0..30u32 {
        for k in 0..20 {
            let b = ((i * 20 + k) % 60) as u8;
            check(request("/", v4(1, 1, b), BROWSER));
        }
        tokio::time::advance(step).await;
    }
    for i in 0..40u8 {
        check(request("/", v4(1, 1, i % 4), BROWSER));
        for k in 0..20u8 {
            check(request("/", v4(2, k, 9), "python-requests/2.32.3"));
        }
        tokio::time::advance(step).await;
    }
    // A forged session cookie.
    let mut forged = request("/", v4(1, 1, 1), BROWSER);
    forged
        .headers_mut()
        .insert(http::header::COOKIE, "__fg=0123".parse().unwrap());
    check(forged);
}

#[tokio::test(start_paused = true)]
async fn every_sample_of_the_text_is_published_with_its_value() {
    let guard = guard();
    let gate = guard.gate().build().unwrap();
    overload_traffic(&guard).await;
    flood(&guard).await;

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let bridge = MetricsBridge::new(guard.clone()).with_gate(gate.clone());
    // Twice: a publish sets values, it does not add to them.
    metrics::with_local_recorder(&recorder, || {
        bridge.publish();
        bridge.publish();
    });
    // No await since: the paused clock has not moved, the values are
    // the ones published.
    let mut text = guard.prometheus();
    gate.write_prometheus(&mut text);

    // The traffic reached the families that matter.
    for series in [
        "floodguard_refused_total{reason=\"rate_limit\"}",
        "floodguard_refused_total{reason=\"overload\"}",
        "floodguard_bans",
        "floodguard_score_actions_total{action=\"ban\",shadow=\"false\"}",
        "floodguard_rule_denied_total{rule=\"would-be\",shadow=\"true\"}",
        "floodguard_session_cookies_total{outcome=\"invalid\"}",
        "floodguard_under_attack",
        "floodguard_service_latency_seconds_count{route=\"/search\"}",
        "floodguard_service_latency_seconds_count{route=\"\"}",
    ] {
        assert!(value(&text, series) > 0.0, "{series} is 0 in\n{text}");
    }
    for family in [
        "floodguard_offender_score{",
        "floodguard_flagged_class_share{",
        "floodguard_shed_total{",
        "floodguard_waited_total{",
        "floodguard_service_latency_seconds_sum{",
        "floodguard_gate_refused_total{",
    ] {
        assert!(text.contains(family), "{family} missing from\n{text}");
    }
    // An offender's score is an f32: published as the text spells it.
    let score = text
        .lines()
        .find(|l| l.starts_with("floodguard_offender_score{"))
        .unwrap();
    assert!(score.rsplit(' ').next().unwrap().contains('.'), "{score}");

    let published = held(&snapshotter);
    let samples = assert_published(&text, &published);
    assert_eq!(
        published.len(),
        samples,
        "the recorder holds series the text lacks"
    );
    assert!(samples > 100, "{samples} samples");

    // More traffic, published again into the same recorder: the values
    // follow (counters up, gauges to their new value).
    let before = value(&text, "floodguard_requests_total");
    overload_traffic(&guard).await;
    tokio::time::advance(Duration::from_secs(120)).await;
    flood(&guard).await;
    metrics::with_local_recorder(&recorder, || bridge.publish());
    let mut text = guard.prometheus();
    gate.write_prometheus(&mut text);
    assert!(value(&text, "floodguard_requests_total") > before);
    // Series that left the text (an offender gone) stay in the recorder;
    // every series the text has is there with its new value.
    assert_published(&text, &held(&snapshotter));
}

/// The gate's families over a real socket: one connection admitted,
/// the second from the same address refused.
#[tokio::test]
async fn the_gates_counters_are_published_after_the_guards() {
    let guard = Guard::builder().default_rules().build().unwrap();
    let gate: Gate = guard.gate().max_connections_per_ip(1).build().unwrap();
    let mut listener = gate.listen(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    let first = tokio::net::TcpStream::connect(addr).await.unwrap();
    // Refused at accept: reset, which the connect itself may report.
    let second = tokio::net::TcpStream::connect(addr).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while gate.stats().accepted < 1 || gate.stats().refused_per_ip < 1 {
        assert!(tokio::time::Instant::now() < deadline, "{:?}", gate.stats());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let bridge = MetricsBridge::new(guard.clone()).with_gate(gate.clone());
    metrics::with_local_recorder(&recorder, || bridge.publish());
    let mut text = guard.prometheus();
    gate.write_prometheus(&mut text);
    assert_eq!(value(&text, "floodguard_gate_accepted_total"), 1.0);
    assert_eq!(
        value(&text, "floodguard_gate_refused_total{reason=\"per_ip\"}"),
        1.0
    );
    let published = held(&snapshotter);
    assert_eq!(assert_published(&text, &published), published.len());
    drop((first, second));
    server.abort();
}

/// The spawned task publishes to the global recorder on its period,
/// and not after its handle is dropped.
#[tokio::test(start_paused = true)]
async fn the_spawned_task_publishes_until_dropped() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // The only test of this file that uses the global recorder: the
    // others use local ones, which take precedence on their thread.
    metrics::set_global_recorder(recorder).unwrap();
    // A snapshot of the debugging recorder hands out each counter and
    // resets it to 0; a publish sets it again (`absolute`). So each
    // snapshot shows what was published since the one before.
    let requests = || {
        held(&snapshotter)
            .get(&("floodguard_requests_total".to_owned(), Vec::new()))
            .map(|(v, _)| match v {
                DebugValue::Counter(n) => *n,
                other => panic!("{other:?}"),
            })
    };
    let guard = Guard::builder().default_rules().build().unwrap();
    let bridge = MetricsBridge::new(guard.clone());
    assert!(bridge.clone().spawn(Duration::ZERO).is_err());

    let task = bridge.spawn(Duration::from_secs(10)).unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(requests(), Some(0), "published at once");
    let (mut parts, ()) = Request::get("/").body(()).unwrap().into_parts();
    parts
        .extensions
        .insert(PeerAddr("192.0.2.1:4000".parse().unwrap()));
    let _ = guard.check(&parts);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(requests(), Some(0), "not before its tick");
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(requests(), Some(1), "published again");
    assert!(!task.is_finished());

    drop(task);
    let _ = guard.check(&parts);
    tokio::time::sleep(Duration::from_secs(30)).await;
    // Running, it would have published 2 three times.
    assert_eq!(requests(), Some(0), "stopped");
}
