//! A burst of requests from a few clients, and what floodguard decides.
//!
//! ```text
//! cargo run --release --example quickstart
//! ```
//!
//! Three rules guard one imaginary service, the way a web server would
//! stack them: a sliding window per client address, a sliding window per
//! network prefix (/24 for IPv4, /64 for IPv6: the unit one ISP customer
//! gets) and a GCRA rule with a small burst on the login route. Every
//! request is checked against all rules that apply and charged on all or
//! none. A manual clock makes the run reproducible.

use floodguard::ip::PrefixLengths;
use floodguard::{Clock, ConfigError, IpPrefix, KeyedLimiter, ManualClock, check_all};
use std::net::IpAddr;
use std::time::Duration;

struct Client {
    name: &'static str,
    ip: IpAddr,
    /// Milliseconds between two requests.
    every_ms: u64,
    login: bool,
}

fn main() -> Result<(), ConfigError> {
    let clock = ManualClock::new();
    let per_ip = KeyedLimiter::<IpAddr>::builder()
        .sliding_window(10, Duration::from_secs(1))
        .capacity(100_000)
        .clock(clock.clone())
        .build()?;
    let per_prefix = KeyedLimiter::<IpPrefix>::builder()
        .sliding_window(25, Duration::from_secs(1))
        .capacity(100_000)
        .clock(clock.clone())
        .build()?;
    let login = KeyedLimiter::<IpAddr>::builder()
        .gcra(1, Duration::from_secs(1))
        .burst(3)
        .clock(clock.clone())
        .build()?;
    let prefixes = PrefixLengths::SUBNET;

    let ip = |s: &str| s.parse::<IpAddr>().expect("literal address");
    let clients = [
        Client {
            name: "browser",
            ip: ip("198.51.100.20"),
            every_ms: 250,
            login: false,
        },
        Client {
            name: "scraper",
            ip: ip("203.0.113.9"),
            every_ms: 20,
            login: false,
        },
        Client {
            name: "guesser",
            ip: ip("192.0.2.77"),
            every_ms: 100,
            login: true,
        },
        // Three hosts of one IPv6 /64, each polite, together too many.
        Client {
            name: "v6 host a",
            ip: ip("2001:db8:5::a"),
            every_ms: 100,
            login: false,
        },
        Client {
            name: "v6 host b",
            ip: ip("2001:db8:5::b"),
            every_ms: 100,
            login: false,
        },
        Client {
            name: "v6 host c",
            ip: ip("2001:db8:5::c"),
            every_ms: 100,
            login: false,
        },
    ];

    println!("2 seconds of traffic; rules: 10/s per IP, 25/s per /24 or /64, login 1/s burst 3\n");
    let mut rows: Vec<(usize, usize, Vec<&str>)> = vec![(0, 0, Vec::new()); clients.len()];
    for ms in 0..2_000u64 {
        let now = clock.now();
        for (c, row) in clients.iter().zip(rows.iter_mut()) {
            if ms % c.every_ms != 0 {
                continue;
            }
            let net = IpPrefix::of(c.ip, prefixes);
            let mut checks = vec![per_ip.pending(&c.ip), per_prefix.pending(&net)];
            if c.login {
                checks.push(login.pending(&c.ip));
            }
            let verdict = check_all(now, &checks);
            if verdict.is_allowed() {
                row.0 += 1;
            } else {
                row.1 += 1;
                let rule = match verdict.index {
                    Some(0) => "per-ip",
                    Some(1) => "per-prefix",
                    _ => "login",
                };
                if !row.2.contains(&rule) {
                    row.2.push(rule);
                }
            }
            if ms == 1_000 && c.name == "scraper" {
                let d = verdict.decision;
                println!(
                    "at t=1s the scraper hears: allowed={} remaining={} retry-after={}s",
                    d.is_allowed(),
                    d.remaining(),
                    d.retry_after_secs()
                );
            }
        }
        clock.advance(Duration::from_millis(1));
    }

    println!(
        "\n{:<10} {:>8} {:>8}  refused by",
        "client", "allowed", "refused"
    );
    for (c, (allowed, refused, rules)) in clients.iter().zip(&rows) {
        println!(
            "{:<10} {allowed:>8} {refused:>8}  {}",
            c.name,
            rules.join(", ")
        );
    }
    for (name, s) in [
        ("per-ip", per_ip.stats()),
        ("per-prefix", per_prefix.stats()),
        ("login", login.stats()),
    ] {
        println!(
            "{name:<10} stats: admitted {} denied {} keys {}/{}",
            s.admitted, s.denied, s.occupancy, s.capacity
        );
    }
    Ok(())
}
