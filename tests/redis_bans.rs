//! Shared bans end to end: guards on separate stores (separate instances of
//! a fleet) sharing bans and flagged classes through a real redis-server
//! that each test starts for itself.
#![cfg(all(feature = "redis", feature = "tower"))]

#[path = "common/redis_server.rs"]
mod redis_server;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use floodguard::http::{
    Cluster, Event, Guard, GuardDecision, PeerAddr, Scoring, SharedBanStats, Signal,
};
use floodguard::redis::{RedisStore, RedisStoreBuilder};
use floodguard::{Clock, IpPrefix, ManualClock};
use http::request::Parts;
use parking_lot::Mutex;
use redis_server::RedisServer;

/// What the issue promises: every instance refuses a banned client within
/// a second.
const PROPAGATION: Duration = Duration::from_secs(1);
/// Bound on waits that include reconnecting to a restarted Redis.
const RECONNECT: Duration = Duration::from_secs(10);
const BAN: Duration = Duration::from_secs(60);

fn store(server: &RedisServer, namespace: &str) -> RedisStore {
    RedisStore::builder(server.url())
        .namespace(namespace)
        // Generous for loaded CI machines; the default is 50 ms.
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap()
}

fn sharing_guard(store: &RedisStore) -> Guard {
    Guard::builder().share_bans(store).build().unwrap()
}

fn shared(guard: &Guard<impl Clock>) -> SharedBanStats {
    guard.stats().shared_bans.expect("shared bans are on")
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn prefix(s: &str) -> IpPrefix {
    s.parse().unwrap()
}

/// Polls `done` every 2 ms until it holds; panics with `what` after
/// `within`. Returns how long it took.
async fn within(within: Duration, what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if done() {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn subscribed(guards: &[&Guard]) {
    for g in guards {
        within(RECONNECT, "subscribed", || shared(g).subscribed).await;
    }
}

/// A raw connection for looking at (and tampering with) what is in Redis.
async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Publishes `message` on the `shop` namespace's ban channel, as anyone
/// with write access to Redis could.
async fn publish(con: &mut redis::aio::MultiplexedConnection, message: &str) {
    let _: i64 = redis::cmd("PUBLISH")
        .arg("shop:{bans}")
        .arg(message)
        .query_async(con)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_reaches_the_other_instance_within_a_second_and_unban_lifts_it() {
    let server = RedisServer::start();
    let (a, b) = (
        sharing_guard(&store(&server, "shop")),
        sharing_guard(&store(&server, "shop")),
    );
    subscribed(&[&a, &b]).await;

    // An address, then an IPv6 /64, banned on A: B refuses them.
    for (client, net) in [
        ("198.51.100.7", "198.51.100.7/32"),
        ("2001:db8:7:7::99", "2001:db8:7:7::/64"),
    ] {
        assert!(!b.is_banned(ip(client)));
        assert!(a.ban(prefix(net), BAN));
        let took = within(PROPAGATION, "ban reaches B", || b.is_banned(ip(client))).await;
        eprintln!("{net}: banned on B {took:?} after A banned it");
        let (p, left) = b
            .bans()
            .into_iter()
            .find(|(p, _)| *p == prefix(net))
            .unwrap();
        assert_eq!(p, prefix(net));
        assert!(
            left > BAN - Duration::from_secs(2) && left <= BAN,
            "{left:?}"
        );
    }

    // Lifted on A: B serves it again.
    assert!(a.unban(&prefix("198.51.100.7/32")));
    let took = within(PROPAGATION, "lift reaches B", || {
        !b.is_banned(ip("198.51.100.7"))
    })
    .await;
    eprintln!("lifted on B {took:?} after A lifted it");
    assert!(b.is_banned(ip("2001:db8:7:7::1")));

    // And the other way round.
    assert!(b.ban(prefix("203.0.113.9/32"), BAN));
    within(PROPAGATION, "ban reaches A", || {
        a.is_banned(ip("203.0.113.9"))
    })
    .await;

    // A counts a publication once Redis answers, maybe after B applied it.
    within(PROPAGATION, "counted", || {
        (shared(&a).published, shared(&b).published) == (3, 1)
    })
    .await;
    let (sa, sb) = (shared(&a), shared(&b));
    assert_eq!((sa.received, sb.received), (1, 3), "{sa:?} {sb:?}");
    let text = b.prometheus();
    assert!(
        text.contains("floodguard_shared_bans_total{event=\"received\"} 3\n"),
        "{text}"
    );
    assert!(
        text.contains("floodguard_shared_bans_subscribed 1\n"),
        "{text}"
    );
    // Nobody applies its own messages, nothing was dropped or malformed.
    for s in [sa, sb] {
        assert_eq!((s.dropped, s.rejected, s.errors), (0, 0, 0), "{s:?}");
    }
    // Another namespace is another fleet.
    let other = sharing_guard(&store(&server, "other"));
    subscribed(&[&other]).await;
    a.ban(prefix("192.0.2.50/32"), BAN);
    within(PROPAGATION, "ban reaches B", || {
        b.is_banned(ip("192.0.2.50"))
    })
    .await;
    assert!(!other.is_banned(ip("192.0.2.50")));
    assert!(other.bans().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_built_later_starts_with_the_bans_in_force() {
    let server = RedisServer::start();
    let a = sharing_guard(&store(&server, "shop"));
    a.ban(prefix("198.51.100.7/32"), BAN);
    a.ban(prefix("2001:db8:1:2::/64"), BAN);
    a.ban(prefix("198.51.100.8/32"), Duration::from_millis(200));
    a.ban(prefix("198.51.100.9/32"), BAN);
    a.unban(&prefix("198.51.100.9/32"));
    within(RECONNECT, "published", || shared(&a).published == 5).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let c = sharing_guard(&store(&server, "shop"));
    subscribed(&[&c]).await;
    // In force as soon as it listens: loaded before it subscribed.
    assert!(c.is_banned(ip("198.51.100.7")));
    assert!(c.is_banned(ip("2001:db8:1:2::1")));
    // Expired and lifted bans are not.
    assert!(!c.is_banned(ip("198.51.100.8")));
    assert!(!c.is_banned(ip("198.51.100.9")));
    let mut bans = c.bans();
    bans.sort();
    assert_eq!(
        bans.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        [prefix("198.51.100.7/32"), prefix("2001:db8:1:2::/64")]
    );
    // With the time left on Redis's clock.
    assert!(
        bans.iter()
            .all(|(_, left)| *left > BAN - Duration::from_secs(2))
    );
    let s = shared(&c);
    assert_eq!((s.loaded, s.received, s.rejected), (2, 0, 0), "{s:?}");
}

/// A tool-like request from `from`, as `Guard::check` sees it.
fn tool_request(from: IpAddr) -> Parts {
    let (mut parts, ()) = http::Request::get("/")
        .header("host", "shop.test")
        .header("user-agent", "python-requests/2.32.3")
        .header("accept", "*/*")
        .header("accept-encoding", "gzip, deflate")
        .body(())
        .unwrap()
        .into_parts();
    parts
        .extensions
        .insert(PeerAddr(SocketAddr::new(from, 40_000)));
    parts
}

fn browser_request(from: IpAddr) -> Parts {
    let (mut parts, ()) = http::Request::get("/")
        .header("host", "shop.test")
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        )
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .header("accept-language", "en-GB,en;q=0.9")
        .header("accept-encoding", "gzip, deflate, br, zstd")
        .body(())
        .unwrap()
        .into_parts();
    parts
        .extensions
        .insert(PeerAddr(SocketAddr::new(from, 40_000)));
    parts
}

fn class_surge(d: &GuardDecision) -> bool {
    d.score()
        .is_some_and(|r| r.signals().any(|(s, _)| s == Signal::ClassSurge))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flagged_class_reaches_the_other_guards_detector() {
    let server = RedisServer::start();
    // A sees the attack, on a manual clock so that it is quick to stage.
    let clock = ManualClock::new();
    let flagged = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&flagged);
    let a = Guard::builder()
        .scoring(Scoring::new())
        .on_event(move |e| {
            if let Event::ClassFlagged(s) = e {
                seen.lock().push(s.key);
            }
        })
        .clock(clock.clone())
        .share_bans(&store(&server, "shop"))
        .build()
        .unwrap();
    let b = Guard::builder()
        .scoring(Scoring::new())
        .share_bans(&store(&server, "shop"))
        .build()
        .unwrap();
    subscribed(&[&b]).await;
    within(RECONNECT, "A subscribed", || shared(&a).subscribed).await;

    // Before: B scores the tool class without a surge.
    let d = b.check(&tool_request(ip("192.0.2.1"))).unwrap();
    assert!(!class_surge(&d), "{:?}", d.score());
    let bots = *d.cluster().expect("scored");
    let bots_clusters = bots.ids();

    // Calm browsing at 100 requests a second for 3 s, then tools from many
    // addresses at 900 a second join.
    let step = Duration::from_millis(10);
    for i in 0..300u32 {
        let _ = a.check(&browser_request(IpAddr::from([10, 0, 0, (i % 50) as u8])));
        clock.advance(step);
    }
    let mut n = 0u32;
    while flagged.lock().is_empty() && n < 100 {
        let _ = a.check(&browser_request(IpAddr::from([10, 0, 0, (n % 50) as u8])));
        for k in 0..9 {
            let bot = 9 * n + k;
            let _ = a.check(&tool_request(IpAddr::from([
                10,
                1,
                (bot >> 8) as u8,
                bot as u8,
            ])));
        }
        clock.advance(step);
        n += 1;
    }
    let flagged: Vec<Cluster> = flagged.lock().clone();
    assert!(
        !flagged.is_empty() && flagged.iter().all(|c| bots_clusters.contains(&c.id())),
        "A flags the tools' cluster: {flagged:?}"
    );

    // B, which saw no attack, now scores that class as surging.
    let mut probe = 0u8;
    let took = within(PROPAGATION, "flag reaches B", || {
        probe = probe.wrapping_add(1);
        let d = b.check(&tool_request(IpAddr::from([192, 0, 2, probe])));
        d.is_ok_and(|d| class_surge(&d))
    })
    .await;
    eprintln!("class flagged on B {took:?} after A flagged it");
    assert!(!b.under_attack());
    let d = b.check(&browser_request(ip("192.0.2.200"))).unwrap();
    assert!(!class_surge(&d), "only that class");
    // It is in Redis for guards started later too.
    let c = Guard::builder()
        .scoring(Scoring::new())
        .share_bans(&store(&server, "shop"))
        .build()
        .unwrap();
    subscribed(&[&c]).await;
    assert!(shared(&c).loaded >= 1);
    let d = c.check(&tool_request(ip("192.0.2.250"))).unwrap();
    assert!(class_surge(&d), "{:?}", d.score());
    assert_eq!(shared(&b).rejected, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_and_back_loses_no_ban_and_sharing_resumes() {
    let mut server = RedisServer::start();
    let (a, b) = (
        sharing_guard(&store(&server, "shop")),
        sharing_guard(&store(&server, "shop")),
    );
    subscribed(&[&a, &b]).await;

    server.kill();
    within(RECONNECT, "B notices", || !shared(&b).subscribed).await;
    // Banning while Redis is down neither blocks nor panics; the ban holds
    // locally and waits in the queue.
    let start = Instant::now();
    assert!(a.ban(prefix("198.51.100.7/32"), BAN));
    assert!(start.elapsed() < Duration::from_millis(50));
    assert!(a.is_banned(ip("198.51.100.7")));
    // Let both tasks fail and retry a few times: they must not spin.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (ea, eb) = (shared(&a).errors, shared(&b).errors);
    assert!(ea >= 1 && eb >= 1, "{ea} {eb}");
    assert!(
        ea <= 16 && eb <= 16,
        "retries about every second: {ea} {eb}"
    );

    server.restart();
    subscribed(&[&a, &b]).await;
    // The ban made during the outage was retried and reaches B.
    within(RECONNECT, "queued ban reaches B", || {
        b.is_banned(ip("198.51.100.7"))
    })
    .await;
    // New bans propagate as before.
    a.ban(prefix("198.51.100.8/32"), BAN);
    let took = within(PROPAGATION, "ban after restart reaches B", || {
        b.is_banned(ip("198.51.100.8"))
    })
    .await;
    eprintln!("after the restart, banned on B {took:?} after A banned it");
    b.unban(&prefix("198.51.100.7/32"));
    within(PROPAGATION, "lift reaches A", || {
        !a.is_banned(ip("198.51.100.7"))
    })
    .await;
    assert_eq!(shared(&b).rejected, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_and_counts_without_blocking() {
    let mut server = RedisServer::start();
    let a = sharing_guard(&store(&server, "shop"));
    subscribed(&[&a]).await;
    server.kill();
    let start = Instant::now();
    for i in 0..6_000u32 {
        let [_, _, x, y] = i.to_be_bytes();
        assert!(a.ban(IpPrefix::from(IpAddr::from([10, 9, x, y])), BAN));
    }
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    let s = shared(&a);
    // 4096 wait in the queue, one with the publisher; the rest are dropped.
    assert!((1_900..=1_904).contains(&s.dropped), "{s:?}");
    assert_eq!(a.stats().bans, 6_000);
}

/// With a store secret, ban messages are signed: two guards sharing the
/// secret share bans; a message anyone else publishes on the channel,
/// unsigned or signed with another key, bans nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_secret_only_signed_messages_ban() {
    let server = RedisServer::start();
    let secret_store = || {
        RedisStore::builder(server.url())
            .namespace("shop")
            .secret(*b"fleet secret key")
            .timeout(Duration::from_millis(500))
            .build()
            .unwrap()
    };
    let (a, b) = (
        sharing_guard(&secret_store()),
        sharing_guard(&secret_store()),
    );
    subscribed(&[&a, &b]).await;
    assert!(a.ban(prefix("198.51.100.7/32"), BAN));
    within(PROPAGATION, "a signed ban reaches B", || {
        b.is_banned(ip("198.51.100.7"))
    })
    .await;
    let mut con = raw(&server).await;
    let sender = "00000000000000aa";
    for forged in [
        format!("1 ban {sender} 198.51.100.9/32 60000"),
        format!("1 ban {sender} 198.51.100.9/32 60000 {}", "0".repeat(32)),
        format!("1 ban {sender} 10.0.0.0/8 60000 {}", "f".repeat(32)),
    ] {
        publish(&mut con, &forged).await;
    }
    within(PROPAGATION, "forged messages rejected", || {
        shared(&b).rejected == 3
    })
    .await;
    assert!(!b.is_banned(ip("198.51.100.9")));
    assert!(!b.is_banned(ip("10.1.2.3")));
    assert_eq!(shared(&b).received, 1);
}

/// The README's locked-down user: keys and channels of its namespace only,
/// no dangerous commands. Bans are shared, and limits too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_runs_as_a_user_locked_to_its_namespace() {
    let server = RedisServer::start();
    let mut con = raw(&server).await;
    acl(
        &mut con,
        &[
            "fleet",
            "on",
            ">secret",
            "~shop:*",
            "&shop:*",
            "+@read",
            "+@write",
            "+@scripting",
            "+@pubsub",
            "-@dangerous",
            "+time",
        ],
    )
    .await;
    let (a, b) = (
        sharing_guard(&store_as(&server, "fleet").build().unwrap()),
        sharing_guard(&store_as(&server, "fleet").build().unwrap()),
    );
    subscribed(&[&a, &b]).await;
    assert!(a.ban(prefix("198.51.100.7/32"), BAN));
    within(PROPAGATION, "the ban reaches B", || {
        b.is_banned(ip("198.51.100.7"))
    })
    .await;
    let limiter = floodguard::redis::SharedLimiter::builder("logins")
        .sliding_window(2, Duration::from_secs(60))
        .mode(floodguard::redis::Mode::Strict)
        .build(&store_as(&server, "fleet").build().unwrap())
        .unwrap();
    assert!(limiter.check("alice").await.is_allowed());
    assert!(limiter.check("alice").await.is_allowed());
    assert!(limiter.check("alice").await.is_denied());
    assert_eq!(shared(&a).errors + shared(&b).errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_and_entries_are_counted_and_ignored() {
    let server = RedisServer::start();
    let b = sharing_guard(&store(&server, "shop"));
    subscribed(&[&b]).await;
    let mut con = raw(&server).await;
    let sender = "00000000000000aa";
    for bad in [
        "garbage".to_owned(),
        format!("1 ban {sender} 0.0.0.0/0 60000"),
        format!("1 ban {sender} 198.51.100.7 60000"),
        format!("1 ban {sender} 198.51.100.7/32 -1"),
        format!("1 class {sender} 0123456789abcdef 60000"), // wrong channel
        "\u{0}\u{ff}".to_owned(),
    ] {
        publish(&mut con, &bad).await;
    }
    // A well-formed message from another instance is applied.
    let good = format!("1 ban {sender} 198.51.100.9/32 60000");
    publish(&mut con, &good).await;
    within(PROPAGATION, "good message applied", || {
        b.is_banned(ip("198.51.100.9"))
    })
    .await;
    let s = shared(&b);
    assert_eq!((s.rejected, s.received), (6, 1), "{s:?}");
    assert_eq!(b.bans().len(), 1);

    // Tampered entries in the set are ignored at load; good ones load.
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut con).await.unwrap();
    let soon = secs * 1_000 + micros / 1_000 + 60_000;
    let far = soon + 400 * 24 * 3600 * 1000;
    let _: i64 = redis::cmd("ZADD")
        .arg("shop:{bans}")
        .arg(soon)
        .arg("not a prefix")
        .arg(soon)
        .arg("10.0.0.0/7")
        .arg(soon)
        .arg("192.0.2.76/24")
        .arg(far)
        .arg("192.0.2.77/32")
        .arg(soon)
        .arg("192.0.2.78/32")
        .query_async(&mut con)
        .await
        .unwrap();
    let c = sharing_guard(&store(&server, "shop"));
    subscribed(&[&c]).await;
    let s = shared(&c);
    // 192.0.2.77 lasts longer than a year and a day: out of bounds too.
    assert_eq!((s.loaded, s.rejected), (1, 4), "{s:?}");
    assert_eq!(
        c.bans().into_iter().map(|(p, _)| p).collect::<Vec<_>>(),
        [prefix("192.0.2.78/32")]
    );
}

/// A store of namespace `shop` that logs in to Redis as `user` (see
/// [`add_user`]).
fn store_as(server: &RedisServer, user: &str) -> RedisStoreBuilder {
    let url = format!("redis://{user}:secret@127.0.0.1:{}/", server.port());
    RedisStore::builder(url)
        .namespace("shop")
        .timeout(Duration::from_millis(500))
}

async fn acl(con: &mut redis::aio::MultiplexedConnection, args: &[&str]) {
    let () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(args)
        .query_async(con)
        .await
        .unwrap();
}

/// A Redis user allowed everything, with password `secret`.
async fn add_user(con: &mut redis::aio::MultiplexedConnection, user: &str) {
    acl(con, &[user, "on", ">secret", "~*", "&*", "+@all"]).await;
}

/// Cuts `user`'s connections and keeps it from connecting again, while
/// every other client goes on as before.
async fn shut_out(con: &mut redis::aio::MultiplexedConnection, user: &str) {
    acl(con, &[user, "off"]).await;
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("USER")
        .arg(user)
        .query_async(con)
        .await
        .unwrap();
}

async fn let_in(con: &mut redis::aio::MultiplexedConnection, user: &str) {
    acl(con, &[user, "on"]).await;
}

/// Whether `member` is in namespace `shop`'s set of bans.
async fn in_set(con: &mut redis::aio::MultiplexedConnection, member: &str) -> bool {
    let score: Option<f64> = redis::cmd("ZSCORE")
        .arg("shop:{bans}")
        .arg(member)
        .query_async(con)
        .await
        .unwrap();
    score.is_some()
}

/// Cuts B (user `b`) off, and waits until B knows it.
async fn cut_off_b(con: &mut redis::aio::MultiplexedConnection, b: &Guard) {
    shut_out(con, "b").await;
    within(RECONNECT, "B notices", || !shared(b).subscribed).await;
}

/// Lets B (user `b`) back in, and waits until it has subscribed (and so
/// reloaded the set) again.
async fn reconnect_b(con: &mut redis::aio::MultiplexedConnection, b: &Guard) {
    let_in(con, "b").await;
    subscribed(&[b]).await;
}

/// A raw connection, and two subscribed guards sharing bans in namespace
/// `shop`: A as the default user, B as user `b` (see [`shut_out`]).
async fn a_and_b(server: &RedisServer) -> (redis::aio::MultiplexedConnection, Guard, Guard) {
    let mut con = raw(server).await;
    add_user(&mut con, "b").await;
    let a = sharing_guard(&store(server, "shop"));
    let b = sharing_guard(&store_as(server, "b").build().unwrap());
    subscribed(&[&a, &b]).await;
    (con, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lift_made_while_an_instance_was_cut_off_reaches_it_on_reconnecting() {
    let server = RedisServer::start();
    let (mut con, a, b) = a_and_b(&server).await;
    // Three bans reach B: one to be lifted, one that ends on its own, one
    // that stays.
    a.ban(prefix("198.51.100.7/32"), BAN);
    a.ban(prefix("198.51.100.8/32"), Duration::from_secs(1));
    a.ban(prefix("198.51.100.9/32"), BAN);
    within(PROPAGATION, "bans reach B", || shared(&b).received == 3).await;

    // B's subscriber is cut off and cannot reconnect; A goes on.
    cut_off_b(&mut con, &b).await;
    assert!(a.unban(&prefix("198.51.100.7/32")));
    within(PROPAGATION, "lift published", || shared(&a).published == 4).await;
    assert!(!in_set(&mut con, "198.51.100.7/32").await);
    within(RECONNECT, "short ban ends on B", || {
        !b.is_banned(ip("198.51.100.8"))
    })
    .await;
    // B never heard of the lift.
    assert!(b.is_banned(ip("198.51.100.7")));

    // Back, B lifts it when it reloads: only the ban in force counts.
    reconnect_b(&mut con, &b).await;
    assert!(!b.is_banned(ip("198.51.100.7")));
    assert!(b.is_banned(ip("198.51.100.9")));
    let s = shared(&b);
    assert_eq!(
        (s.reconciled_lifts, s.received, s.rejected),
        (1, 3, 0),
        "{s:?}"
    );
    let text = b.prometheus();
    assert!(
        text.contains("floodguard_shared_bans_total{event=\"reconciled_lifts\"} 1\n"),
        "{text}"
    );
    // Sharing goes on: a later lift arrives as a message, as before.
    assert!(a.unban(&prefix("198.51.100.9/32")));
    within(PROPAGATION, "lift reaches B", || {
        !b.is_banned(ip("198.51.100.9"))
    })
    .await;
    assert_eq!(shared(&a).reconciled_lifts, 0);
}

/// A bans 198.51.100.7 and .8; once B (user `b`) has both, B's
/// subscriber is cut off, and B knows it.
async fn learn_two_then_cut_off(con: &mut redis::aio::MultiplexedConnection, a: &Guard, b: &Guard) {
    a.ban(prefix("198.51.100.7/32"), BAN);
    a.ban(prefix("198.51.100.8/32"), BAN);
    within(PROPAGATION, "bans reach B", || shared(b).received == 2).await;
    cut_off_b(con, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_an_instance_imposed_itself_but_could_not_publish_is_not_lifted_on_reconnecting() {
    let server = RedisServer::start();
    let mut con = raw(&server).await;
    add_user(&mut con, "b").await;
    let a = sharing_guard(&store(&server, "shop"));
    // B's breaker, once open, stays open for the whole test: what B bans
    // while cut off is not published before B has reloaded.
    let b_store = store_as(&server, "b")
        .trip_after(1)
        .retry_every(Duration::from_secs(120))
        .build()
        .unwrap();
    let b = sharing_guard(&b_store);
    subscribed(&[&a, &b]).await;
    learn_two_then_cut_off(&mut con, &a, &b).await;
    // A lifts both; B, which learned them from A, bans .8 again itself (as
    // its scorer might) and cannot publish it.
    a.unban(&prefix("198.51.100.7/32"));
    a.unban(&prefix("198.51.100.8/32"));
    within(PROPAGATION, "lifts published", || shared(&a).published == 4).await;
    assert!(b.ban(prefix("198.51.100.8/32"), BAN));
    within(RECONNECT, "B's publication fails", || {
        b_store.stats().breaker_opened >= 1
    })
    .await;

    reconnect_b(&mut con, &b).await;
    // Still unpublished, so absent from the set: B keeps its own ban and
    // lifts only the one it learned from Redis.
    assert!(!in_set(&mut con, "198.51.100.8/32").await);
    assert!(b.is_banned(ip("198.51.100.8")));
    assert!(!b.is_banned(ip("198.51.100.7")));
    let s = shared(&b);
    assert_eq!((s.reconciled_lifts, s.published), (1, 0), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_an_instance_published_itself_and_another_lifted_while_it_was_cut_off_is_lifted_on_reconnecting()
 {
    let server = RedisServer::start();
    let (mut con, a, b) = a_and_b(&server).await;
    // B bans two addresses itself (as its scorer would); both are written
    // and reach A.
    assert!(b.ban(prefix("198.51.100.7/32"), BAN));
    assert!(b.ban(prefix("198.51.100.8/32"), BAN));
    within(PROPAGATION, "bans reach A", || shared(&a).received == 2).await;
    assert!(in_set(&mut con, "198.51.100.7/32").await);

    // While B is cut off, an operator lifts one of them through A.
    cut_off_b(&mut con, &b).await;
    assert!(a.unban(&prefix("198.51.100.7/32")));
    within(PROPAGATION, "lift published", || shared(&a).published == 1).await;
    assert!(b.is_banned(ip("198.51.100.7")));

    reconnect_b(&mut con, &b).await;
    assert!(!b.is_banned(ip("198.51.100.7")));
    assert!(b.is_banned(ip("198.51.100.8")));
    let s = shared(&b);
    assert_eq!((s.reconciled_lifts, s.published), (1, 2), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_cut_at_max_bans_lifts_nothing() {
    let server = RedisServer::start();
    let mut con = raw(&server).await;
    add_user(&mut con, "b").await;
    let a = sharing_guard(&store(&server, "shop"));
    let b = Guard::builder()
        .max_bans(2)
        .share_bans(&store_as(&server, "b").build().unwrap())
        .build()
        .unwrap();
    subscribed(&[&a, &b]).await;
    learn_two_then_cut_off(&mut con, &a, &b).await;
    a.unban(&prefix("198.51.100.7/32"));
    a.ban(prefix("198.51.100.10/32"), BAN + Duration::from_secs(1));
    a.ban(prefix("198.51.100.11/32"), BAN + Duration::from_secs(2));
    within(PROPAGATION, "published", || shared(&a).published == 5).await;

    // B loads the 2 bans ending last: .8 is missing from that reply but
    // still in force, so reconciling lifts nothing (not even .7); the two
    // loaded take the places of .7 and .8, which end sooner, as a full
    // list makes room.
    reconnect_b(&mut con, &b).await;
    assert!(b.is_banned(ip("198.51.100.10")));
    assert!(b.is_banned(ip("198.51.100.11")));
    let s = shared(&b);
    assert_eq!((s.reconciled_lifts, s.loaded), (0, 2), "{s:?}");
    assert_eq!(b.stats().bans_evicted, 2);
}

/// Connections subscribed to the bans channel of namespace `shop`.
async fn subscribers(con: &mut redis::aio::MultiplexedConnection) -> i64 {
    let counts: Vec<(String, i64)> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg("shop:{bans}")
        .query_async(con)
        .await
        .unwrap();
    counts[0].1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tasks_end_with_the_guard() {
    let server = RedisServer::start();
    let mut con = raw(&server).await;
    let a = sharing_guard(&store(&server, "shop"));
    subscribed(&[&a]).await;
    assert_eq!(subscribers(&mut con).await, 1);
    drop(a);
    let start = Instant::now();
    while subscribers(&mut con).await != 0 {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "subscriber still there"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn share_bans_and_clock_go_in_either_order() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _enter = rt.enter();
    // Nothing listens there: the store connects lazily.
    let store = RedisStore::builder("redis://127.0.0.1:1/").build().unwrap();
    let before = Guard::builder()
        .share_bans(&store)
        .clock(ManualClock::new())
        .build()
        .unwrap();
    let after = Guard::builder()
        .clock(ManualClock::new())
        .share_bans(&store)
        .build()
        .unwrap();
    for g in [&before, &after] {
        assert_eq!(shared(g).published, 0);
    }
}

/// `share_bans` before `clock` and `max_bans`: the guard joins the fleet
/// as built, and applies the fleet's bans on the clock it ended with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bans_are_shared_when_share_bans_comes_before_the_clock() {
    let server = RedisServer::start();
    let clock = ManualClock::new();
    let a = Guard::builder()
        .share_bans(&store(&server, "shop"))
        .clock(clock.clone())
        .max_bans(1_000)
        .build()
        .unwrap();
    let b = sharing_guard(&store(&server, "shop"));
    subscribed(&[&b]).await;
    within(RECONNECT, "A subscribed", || shared(&a).subscribed).await;

    assert!(a.ban(prefix("198.51.100.7/32"), BAN));
    within(PROPAGATION, "ban reaches B", || {
        b.is_banned(ip("198.51.100.7"))
    })
    .await;
    assert!(b.ban(prefix("203.0.113.9/32"), BAN));
    within(PROPAGATION, "ban reaches A", || {
        a.is_banned(ip("203.0.113.9"))
    })
    .await;

    // On A's manual clock: the ban ends when that clock passes its end.
    let left = a
        .bans()
        .into_iter()
        .find(|(p, _)| *p == prefix("203.0.113.9/32"))
        .map(|(_, left)| left)
        .unwrap();
    assert!(
        left > BAN - Duration::from_secs(2) && left <= BAN,
        "{left:?}"
    );
    clock.advance(BAN);
    assert!(!a.is_banned(ip("203.0.113.9")));
    assert!(b.is_banned(ip("203.0.113.9")));

    within(PROPAGATION, "counted", || {
        (shared(&a).published, shared(&b).published) == (1, 1)
    })
    .await;
    let (sa, sb) = (shared(&a), shared(&b));
    assert_eq!((sa.received, sb.received), (1, 1), "{sa:?} {sb:?}");
    for s in [sa, sb] {
        assert_eq!((s.dropped, s.rejected, s.errors), (0, 0, 0), "{s:?}");
    }
}

/// The `i`th of a large set of bans: `10.0.x.y/32`.
fn many(i: u32) -> IpPrefix {
    let [_, _, x, y] = i.to_be_bytes();
    IpPrefix::from(IpAddr::from([10, 0, x, y]))
}

/// Writes bans `0..n` of [`many`] straight into namespace `shop`'s set
/// (no messages), ban `i` ending `i` × 10 ms after ten minutes from now on
/// Redis's clock.
async fn fill(con: &mut redis::aio::MultiplexedConnection, n: u32) {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(con).await.unwrap();
    let end = secs * 1_000 + micros / 1_000 + 600_000;
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let mut cmd = redis::cmd("ZADD");
        cmd.arg("shop:{bans}");
        for &i in chunk {
            cmd.arg(end + u64::from(i) * 10).arg(many(i).to_string());
        }
        let _: i64 = cmd.query_async(con).await.unwrap();
    }
}

/// 2,500 bans load in three pages of at most 1,000, and a reload after
/// two were lifted while the instance was cut off (one that the first
/// page would hold, one the last) lifts exactly those two: a load in
/// several pages still reconciles, and only what no page held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_ban_set_loads_in_pages_and_reconciles_over_all_of_them() {
    let server = RedisServer::start();
    fill(&mut raw(&server).await, 2_500).await;
    let (mut con, a, b) = a_and_b(&server).await;
    let s = shared(&b);
    assert_eq!((s.loaded, s.load_pages, s.rejected), (2_500, 3, 0), "{s:?}");
    assert_eq!(b.bans().len(), 2_500);
    assert!(b.is_banned(ip("10.0.0.0")) && b.is_banned(ip("10.0.9.195")));
    let text = b.prometheus();
    assert!(
        text.contains("floodguard_shared_bans_total{event=\"load_pages\"} 3\n"),
        "{text}"
    );

    // Ban 2,400 ends among the last to (first page), ban 10 among the
    // first (last page).
    cut_off_b(&mut con, &b).await;
    for i in [2_400, 10] {
        a.unban(&many(i));
    }
    within(PROPAGATION, "lifts published", || shared(&a).published == 2).await;
    reconnect_b(&mut con, &b).await;
    let s = shared(&b);
    assert_eq!(
        (s.reconciled_lifts, s.loaded, s.load_pages),
        (2, 4_998, 6),
        "{s:?}"
    );
    assert_eq!(b.bans().len(), 2_498);
    assert!(!b.is_banned(ip("10.0.9.96")) && !b.is_banned(ip("10.0.0.10")));
    assert!(b.is_banned(ip("10.0.9.95")) && b.is_banned(ip("10.0.0.11")));
}

/// A guard holding at most 1,500 bans reads 1,500 of 2,500 in two pages:
/// those that end last, and no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_cut_at_max_bans_reads_only_the_pages_it_needs() {
    let server = RedisServer::start();
    fill(&mut raw(&server).await, 2_500).await;
    let c = Guard::builder()
        .max_bans(1_500)
        .share_bans(&store(&server, "shop"))
        .build()
        .unwrap();
    subscribed(&[&c]).await;
    let s = shared(&c);
    assert_eq!((s.loaded, s.load_pages), (1_500, 2), "{s:?}");
    let mut held: Vec<IpPrefix> = c.bans().into_iter().map(|(p, _)| p).collect();
    held.sort();
    let want: Vec<IpPrefix> = (1_000..2_500).map(many).collect();
    assert_eq!(held, want);
}
