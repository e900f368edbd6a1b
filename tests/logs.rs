//! Logs carry values as `tracing` fields: a span per decision at `debug`,
//! bans with `client`, `duration_ms` and `reason`.
#![cfg(feature = "tower")]

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use floodguard::http::{Guard, PeerAddr, Rule};
use tracing_subscriber::fmt::format::FmtSpan;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn captured(f: impl FnOnce()) -> String {
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_span_events(FmtSpan::CLOSE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let bytes = out.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

fn request(from: &str) -> http::request::Parts {
    let (mut parts, ()) = http::Request::get("/").body(()).unwrap().into_parts();
    let peer: SocketAddr = format!("{from}:40000").parse().unwrap();
    parts.extensions.insert(PeerAddr(peer));
    parts
}

#[test]
fn each_decision_is_a_span_with_its_client_reason_and_rule() {
    let guard = Guard::builder()
        .rule(Rule::per_ip("per-ip").sliding_window(1, Duration::from_secs(60)))
        .build()
        .unwrap();
    let logs = captured(|| {
        let _ = guard.check(&request("192.0.2.7"));
        let _ = guard.check(&request("192.0.2.7"));
    });
    let spans: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("floodguard_decision"))
        .collect();
    assert_eq!(spans.len(), 2, "{logs}");
    assert!(spans[0].contains("client=192.0.2.7"), "{logs}");
    assert!(spans[0].contains("reason=\"admitted\""), "{logs}");
    assert!(spans[1].contains("reason=\"rate_limited\""), "{logs}");
    assert!(spans[1].contains("rule=\"per-ip\""), "{logs}");
}

#[test]
fn a_ban_is_logged_with_fields() {
    let guard = Guard::builder().default_rules().build().unwrap();
    let logs = captured(|| {
        guard.ban("203.0.113.0/24".parse().unwrap(), Duration::from_secs(90));
    });
    let line = logs
        .lines()
        .find(|l| l.contains("floodguard: banned"))
        .expect("a ban line");
    assert!(line.contains("client=203.0.113.0/24"), "{line}");
    assert!(line.contains("duration_ms=90000"), "{line}");
    assert!(line.contains("reason=\"manual\""), "{line}");
}
