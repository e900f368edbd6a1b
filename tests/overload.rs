//! Overload protection against a slow service, on Tokio's paused clock:
//! the service serves a fixed number of requests at once, each taking a
//! fixed time, and queues the rest, as a CPU-bound handler does.
#![cfg(feature = "tower")]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use floodguard::http::{Criticality, Guard, Overload, PeerAddr, TokioClock};
use http::{Request, Response, StatusCode};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

/// A service with `workers` places, each request taking `work.load()`
/// microseconds once it has one.
#[derive(Clone)]
struct SlowService {
    workers: Arc<Semaphore>,
    work_micros: Arc<AtomicU64>,
}

impl SlowService {
    fn new(workers: usize, work: Duration) -> Self {
        SlowService {
            workers: Arc::new(Semaphore::new(workers)),
            work_micros: Arc::new(AtomicU64::new(work.as_micros() as u64)),
        }
    }

    fn set_work(&self, work: Duration) {
        self.work_micros
            .store(work.as_micros() as u64, Ordering::Relaxed);
    }
}

impl Service<Request<String>> for SlowService {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response<String>, Infallible>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<String>) -> Self::Future {
        let me = self.clone();
        Box::pin(async move {
            let _place = me.workers.acquire().await.expect("open");
            let work = Duration::from_micros(me.work_micros.load(Ordering::Relaxed));
            tokio::time::sleep(work).await;
            Ok(Response::new(String::new()))
        })
    }
}

fn request(path: &str, client: u32) -> Request<String> {
    let mut req = Request::get(path).body(String::new()).unwrap();
    let peer = SocketAddr::from((
        [10, (client >> 16) as u8, (client >> 8) as u8, client as u8],
        1,
    ));
    req.extensions_mut().insert(PeerAddr(peer));
    req
}

/// A guard on Tokio's (paused) clock.
fn guard(overload: Overload) -> Guard<TokioClock> {
    Guard::builder()
        .overload(overload)
        .clock(TokioClock::new())
        .build()
        .unwrap()
}

/// What `clients` closed-loop clients saw over `run`: each sends a
/// request, waits for the answer, and on a refusal waits `backoff`.
#[derive(Default, Debug)]
struct Seen {
    ok: u64,
    shed: u64,
    /// Longest wait for an answer, and for a refusal.
    slowest_ok: Duration,
    slowest_shed: Duration,
}

async fn load(
    guard: &Guard<TokioClock>,
    svc: &SlowService,
    clients: u32,
    path: &'static str,
    run: Duration,
) -> Seen {
    let seen = Arc::new(parking_lot::Mutex::new(Seen::default()));
    let end = Instant::now() + run;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut layered = guard.layer().layer(svc.clone());
        let seen = Arc::clone(&seen);
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                let began = Instant::now();
                let res = layered
                    .ready()
                    .await
                    .unwrap()
                    .call(request(path, c))
                    .await
                    .unwrap();
                let took = began.elapsed();
                let ok = res.status() == StatusCode::OK;
                {
                    let mut s = seen.lock();
                    if ok {
                        s.ok += 1;
                        s.slowest_ok = s.slowest_ok.max(took);
                    } else {
                        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
                        assert_eq!(res.headers()["retry-after"], "1");
                        s.shed += 1;
                        s.slowest_shed = s.slowest_shed.max(took);
                    }
                }
                if !ok {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    Arc::try_unwrap(seen).ok().unwrap().into_inner()
}

fn service_limit(guard: &Guard<TokioClock>) -> u32 {
    guard.stats().overload[0].limit
}

#[tokio::test(start_paused = true)]
async fn the_limit_converges_near_what_the_service_can_serve() {
    // 20 workers, 10 ms each: 2,000 a second at 20 in flight.
    let svc = SlowService::new(20, Duration::from_millis(10));
    for overload in [Overload::gradient2(), Overload::aimd()] {
        let g = guard(overload.limits(100, 2, 1_000));
        let seen = load(&g, &svc, 200, "/", Duration::from_secs(20)).await;
        let limit = service_limit(&g);
        assert!((18..=60).contains(&limit), "limit {limit}, {seen:?}");
        // Goodput: at least 90% of the service's capacity.
        let capacity = 2_000.0 * 20.0;
        assert!(seen.ok as f64 >= 0.9 * capacity, "{seen:?}");
        // Refusals are immediate; answers wait at most a few service times.
        assert_eq!(seen.slowest_shed, Duration::ZERO);
        assert!(seen.slowest_ok <= Duration::from_millis(100), "{seen:?}");
        let stats = &g.stats().overload[0];
        assert_eq!(stats.in_flight, 0);
        assert!(stats.p99.unwrap() <= Duration::from_millis(60), "{stats:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_limit_falls_when_the_service_slows_and_recovers() {
    let svc = SlowService::new(20, Duration::from_millis(10));
    let g = guard(Overload::gradient2().limits(100, 2, 1_000));
    load(&g, &svc, 200, "/", Duration::from_secs(10)).await;
    let normal = service_limit(&g);
    // Half the workers gone: the same work queues twice as long, and the
    // limit follows the capacity down.
    let half = SlowService::new(10, Duration::from_millis(10));
    let seen = load(&g, &half, 200, "/", Duration::from_secs(10)).await;
    let halved = service_limit(&g);
    assert!(halved * 3 < normal * 2, "{normal} -> {halved}");
    assert!(seen.slowest_ok <= Duration::from_millis(100), "{seen:?}");
    // Back to full strength: it recovers.
    load(&g, &svc, 200, "/", Duration::from_secs(10)).await;
    let recovered = service_limit(&g);
    assert!(recovered * 3 > normal * 2, "{halved} -> {recovered}");
    // Every request five times heavier (the same 20 workers): the norm is
    // measured again, and the limit stays near the same concurrency
    // instead of falling to its floor.
    svc.set_work(Duration::from_millis(50));
    let seen = load(&g, &svc, 200, "/", Duration::from_secs(20)).await;
    let heavy = service_limit(&g);
    assert!(heavy * 2 > normal, "{normal} -> {heavy}");
    assert!(seen.ok as f64 >= 0.8 * 400.0 * 20.0, "{seen:?}");
}

#[tokio::test(start_paused = true)]
async fn critical_requests_pass_while_sheddable_ones_are_shed() {
    let svc = SlowService::new(10, Duration::from_millis(10));
    let g = guard(
        Overload::gradient2()
            .limits(20, 2, 1_000)
            .criticality(|p| match p.uri.path() {
                "/checkout" => Criticality::Critical,
                _ => Criticality::Sheddable,
            }),
    );
    let g2 = g.clone();
    let svc2 = svc.clone();
    let crowd =
        tokio::spawn(
            async move { load(&g2, &svc2, 300, "/search", Duration::from_secs(10)).await },
        );
    // A few shoppers checking out, one request at a time each.
    let buyers = load(&g, &svc, 5, "/checkout", Duration::from_secs(10)).await;
    let crowd = crowd.await.unwrap();
    assert!(crowd.shed > crowd.ok, "{crowd:?}");
    assert_eq!(buyers.shed, 0, "{buyers:?}");
    assert!(buyers.ok > 100, "{buyers:?}");
    let stats = &g.stats().overload[0];
    let by = |name: &str| stats.shed.iter().find(|(p, _)| p.name() == name).unwrap().1;
    assert!(by("low") > 0 && by("highest") == 0, "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn a_route_of_its_own_keeps_a_slow_route_from_starving_the_rest() {
    let fast = SlowService::new(50, Duration::from_millis(1));
    let g = guard(Overload::gradient2().limits(20, 2, 1_000).route("/search"));
    let slow = SlowService::new(5, Duration::from_millis(50));
    let (g1, s1) = (g.clone(), slow.clone());
    let searches =
        tokio::spawn(async move { load(&g1, &s1, 200, "/search", Duration::from_secs(5)).await });
    let pages = load(&g, &fast, 20, "/", Duration::from_secs(5)).await;
    let searches = searches.await.unwrap();
    assert!(searches.shed > 0, "{searches:?}");
    assert_eq!(pages.shed, 0, "{pages:?}");
    let stats = g.stats().overload;
    assert_eq!(stats[1].route.as_deref(), Some("/search"));
    assert!(stats[1].shed_total() > 0 && stats[0].shed_total() == 0);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_request_gives_its_place_back() {
    let svc = SlowService::new(1, Duration::from_secs(3600));
    let g = guard(Overload::gradient2().limits(4, 4, 4));
    let mut layered = g.layer().layer(svc.clone());
    for c in 0..4 {
        let fut = layered.ready().await.unwrap().call(request("/", c));
        // Started, then abandoned (a client that hung up).
        let _ = tokio::time::timeout(Duration::from_millis(1), fut).await;
    }
    assert_eq!(g.stats().overload[0].in_flight, 0);
    let fut = layered.ready().await.unwrap().call(request("/", 9));
    assert!(
        tokio::time::timeout(Duration::from_millis(1), fut)
            .await
            .is_err(),
        "admitted, waiting on the service"
    );
}

#[tokio::test(start_paused = true)]
async fn limits_and_latencies_are_in_the_prometheus_output() {
    let svc = SlowService::new(4, Duration::from_millis(10));
    let g = guard(Overload::gradient2().limits(4, 2, 100).route("/search"));
    load(&g, &svc, 20, "/search", Duration::from_secs(1)).await;
    let text = g.prometheus();
    let stats = &g.stats().overload[1];
    assert!(stats.answers > 0 && stats.shed_total() > 0, "{stats:?}");
    for line in [
        format!(
            "floodguard_concurrency_limit{{route=\"/search\"}} {}\n",
            stats.limit
        ),
        "floodguard_in_flight{route=\"/search\"} 0\n".to_owned(),
        format!(
            "floodguard_service_latency_seconds_count{{route=\"/search\"}} {}\n",
            stats.answers
        ),
        format!(
            "floodguard_service_latency_seconds_bucket{{route=\"/search\",le=\"+Inf\"}} {}\n",
            stats.answers
        ),
        "# TYPE floodguard_service_latency_seconds histogram\n".to_owned(),
        format!(
            "floodguard_refused_total{{reason=\"overload\"}} {}\n",
            stats.shed_total()
        ),
    ] {
        assert!(text.contains(&line), "{line} missing from\n{text}");
    }
    let shed: u64 = text
        .lines()
        .filter(|l| l.starts_with("floodguard_shed_total{route=\"/search\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(shed, stats.shed_total());
}

#[tokio::test(start_paused = true)]
async fn with_scoring_heavy_users_are_shed_before_light_ones() {
    use floodguard::http::Scoring;
    let svc = SlowService::new(4, Duration::from_millis(10));
    let g = Guard::builder()
        .scoring(Scoring::default())
        .overload(Overload::gradient2().limits(8, 2, 100))
        .clock(TokioClock::new())
        .build()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    let mut tasks = Vec::new();
    // Client 1 floods with 40 requests at a time; clients 100.. browse,
    // one page a second each.
    for (client, pause) in (0..40)
        .map(|_| (1, Duration::ZERO))
        .chain((100..140).map(|c| (c, Duration::from_millis(1_000))))
    {
        let mut layered = g.layer().layer(svc.clone());
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut shed) = (0u64, 0u64);
            // The flood starts once the browsers are known; the browsers
            // are spread over the second, as people are.
            let start = if client == 1 {
                Duration::from_secs(2)
            } else {
                Duration::from_millis(25 * u64::from(client - 100))
            };
            tokio::time::sleep(start).await;
            while Instant::now() < end {
                // Both look like the same browser: only volume tells them
                // apart.
                let req = browser("/", client);
                let res = layered.ready().await.unwrap().call(req).await.unwrap();
                if res.status() == StatusCode::OK {
                    ok += 1;
                } else {
                    shed += 1;
                }
                tokio::time::sleep(pause.max(Duration::from_millis(1))).await;
            }
            (client, ok, shed)
        }));
    }
    let (mut heavy, mut light) = ((0, 0), (0, 0));
    for t in tasks {
        let (client, ok, shed) = t.await.unwrap();
        let tally = if client == 1 { &mut heavy } else { &mut light };
        tally.0 += ok;
        tally.1 += shed;
    }
    assert!(heavy.1 > heavy.0, "heavy {heavy:?}");
    assert!(
        light.1 * 100 <= light.0,
        "light {light:?}, heavy {heavy:?} {:?}",
        g.stats()
    );
}

/// A browser's headers: shoppers and the crowd look the same.
fn browser(path: &str, client: u32) -> Request<String> {
    let mut req = request(path, client);
    for (k, v) in [
        ("host", "shop.test"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
        ),
        ("accept", "text/html"),
        ("accept-language", "en"),
        ("accept-encoding", "gzip"),
        ("sec-fetch-mode", "navigate"),
    ] {
        req.headers_mut().insert(k, v.parse().unwrap());
    }
    req
}

/// Uniform in `lo..hi` milliseconds.
fn millis(rng: &mut fastrand::Rng, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(rng.u64(lo..hi))
}

/// What one side of `crowd_of_new_clients_at_five_times_capacity` saw.
#[derive(Default, Debug)]
struct Side {
    ok: u64,
    shed: u64,
}

#[tokio::test(start_paused = true)]
async fn shoppers_seen_before_a_crowd_of_look_alikes_are_not_shed() {
    use floodguard::http::Scoring;
    // One worker, 1 ms a request: 1,000 a second.
    let svc = SlowService::new(1, Duration::from_millis(1));
    let g = Guard::builder()
        .scoring(Scoring::default())
        .overload(Overload::default())
        .clock(TokioClock::new())
        .build()
        .unwrap();
    const SHOPPERS: u32 = 200;
    let start = Instant::now();
    let attack_at = start + Duration::from_secs(2);
    let end = attack_at + Duration::from_secs(3);
    let shoppers = Arc::new(parking_lot::Mutex::new(Side::default()));
    let crowd = Arc::new(parking_lot::Mutex::new(Side::default()));
    let mut tasks = Vec::new();
    // 200 shoppers browse from the start, a page every 0.3 to 1.5 s (one
    // to three pages before the crowd comes: seen, few known good); 500
    // new clients with the same browser arrive at 2 s, each a page every
    // 50 to 150 ms: five times what the service can serve.
    for c in 0..SHOPPERS + 500 {
        let shopper = c < SHOPPERS;
        let mut layered = g.layer().layer(svc.clone());
        let side = Arc::clone(if shopper { &shoppers } else { &crowd });
        tasks.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(u64::from(c) + 1);
            let (from, think) = if shopper {
                (start + millis(&mut rng, 0, 500), (300, 1_500))
            } else {
                (attack_at + millis(&mut rng, 0, 200), (50, 150))
            };
            tokio::time::sleep_until(from).await;
            while Instant::now() < end {
                let res = layered
                    .ready()
                    .await
                    .unwrap()
                    .call(browser("/", 1_000 + c))
                    .await
                    .unwrap();
                if Instant::now() >= attack_at {
                    let mut s = side.lock();
                    if res.status() == StatusCode::OK {
                        s.ok += 1;
                    } else {
                        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
                        s.shed += 1;
                    }
                }
                tokio::time::sleep(millis(&mut rng, think.0, think.1)).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (shoppers, crowd) = (shoppers.lock(), crowd.lock());
    let stats = &g.stats().overload[0];
    // Every shopper's page is served, from the crowd's first moments on.
    assert_eq!(
        shoppers.shed, 0,
        "shoppers {shoppers:?}, crowd {crowd:?}, {stats:?}"
    );
    assert!(shoppers.ok > 600, "{shoppers:?}");
    // The service stays busy: at least 90% of its 3,000 in the attack.
    assert!(
        shoppers.ok + crowd.ok >= 2_700,
        "shoppers {shoppers:?}, crowd {crowd:?}, {stats:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_crowd_arriving_while_calm_does_not_take_the_places_of_clients_seen_before() {
    use floodguard::http::Scoring;
    let svc = SlowService::new(100, Duration::from_millis(1));
    // A fixed limit of 4: the priorities may fill 2, 3, 4, 5 and 6 places.
    let g = Guard::builder()
        .scoring(Scoring::default())
        .overload(Overload::default().limits(4, 4, 4))
        .clock(TokioClock::new())
        .build()
        .unwrap();
    let mut layered = g.layer().layer(svc.clone());
    let mut call = |client: u32| layered.call(browser("/", client));
    // A shopper is served once while all is calm.
    assert_eq!(call(1).await.unwrap().status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Then the service slows down and new clients arrive, still calm:
    // they look like clean browsers at a person's pace, but nothing is
    // known of them, so they fill Normal's four places, not High's five.
    svc.set_work(Duration::from_secs(3600));
    let crowd: Vec<_> = (100..110).map(|c| tokio::spawn(call(c))).collect();
    tokio::task::yield_now().await;
    let stats = &g.stats().overload[0];
    assert_eq!(stats.in_flight, 4, "{stats:?}");
    // The shopper seen before still finds a place.
    let shopper = tokio::spawn(call(1));
    tokio::task::yield_now().await;
    let stats = &g.stats().overload[0];
    assert_eq!(stats.in_flight, 5, "{stats:?}");
    assert!(!shopper.is_finished(), "the shopper was shed: {stats:?}");
    for t in crowd.into_iter().chain([shopper]) {
        t.abort();
    }
}

/// Sends `path` as client `client` through `layered` in the background;
/// the answer's status and when it came.
fn send(
    layered: &tower::util::BoxCloneSyncService<Request<String>, Response<String>, Infallible>,
    path: &'static str,
    client: u32,
) -> tokio::task::JoinHandle<(StatusCode, Instant)> {
    let mut layered = layered.clone();
    tokio::spawn(async move {
        let res = layered
            .ready()
            .await
            .unwrap()
            .call(request(path, client))
            .await
            .unwrap();
        (res.status(), Instant::now())
    })
}

/// A guard whose one limit is pinned at `limit`, with a waiting room, in
/// front of `svc`; requests to `/checkout` are critical, to `/crawl`
/// sheddable.
fn waiting_room(
    limit: u32,
    capacity: usize,
    timeout: Duration,
    svc: &SlowService,
) -> (
    Guard<TokioClock>,
    tower::util::BoxCloneSyncService<Request<String>, Response<String>, Infallible>,
) {
    let g = guard(
        Overload::gradient2()
            .limits(limit, limit, limit)
            .queue(capacity, timeout)
            .criticality(|p| match p.uri.path() {
                "/checkout" => Criticality::Critical,
                "/crawl" => Criticality::Sheddable,
                _ => Criticality::Default,
            }),
    );
    let layered = tower::util::BoxCloneSyncService::new(g.layer().layer(svc.clone()));
    (g, layered)
}

/// Lets every spawned task run as far as it can without time passing.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn with_a_waiting_room_a_full_limit_makes_requests_wait_instead_of_failing() {
    let svc = SlowService::new(10, Duration::from_millis(10));
    let (g, layered) = waiting_room(1, 4, Duration::from_millis(100), &svc);
    let start = Instant::now();
    let answers: Vec<_> = (0..3).map(|c| send(&layered, "/", c)).collect();
    settle().await;
    // One in the service (its worker taken), two waiting, not started.
    let s = &g.stats().overload[0];
    assert_eq!(
        (s.in_flight, s.waiting_room.as_ref().unwrap().waiting),
        (1, 2)
    );
    assert_eq!(svc.workers.available_permits(), 9);
    let mut done = Vec::new();
    for a in answers {
        let (status, at) = a.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        done.push(at - start);
    }
    done.sort();
    // One after another: each waited for the one before.
    assert_eq!(
        done,
        [10, 20, 30].map(Duration::from_millis),
        "answered at {done:?}"
    );
    let s = &g.stats().overload[0];
    let room = s.waiting_room.as_ref().unwrap();
    assert_eq!((room.waited, room.timed_out, room.waiting), (2, 0, 0));
    assert_eq!((s.admitted, s.shed_total(), s.in_flight), (3, 0, 0));
    let gs = g.stats();
    assert_eq!((gs.admitted, gs.refused_overload), (3, 0));
}

#[tokio::test(start_paused = true)]
async fn a_wait_that_runs_out_is_shed_with_a_503() {
    let svc = SlowService::new(10, Duration::from_millis(50));
    let (g, layered) = waiting_room(1, 4, Duration::from_millis(5), &svc);
    let start = Instant::now();
    let first = send(&layered, "/", 1);
    settle().await;
    let second = send(&layered, "/", 2);
    let (status, at) = second.await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(at - start, Duration::from_millis(5));
    assert_eq!(first.await.unwrap().0, StatusCode::OK);
    let s = &g.stats().overload[0];
    let room = s.waiting_room.as_ref().unwrap();
    assert_eq!((room.waited, room.timed_out), (0, 1));
    assert_eq!((s.admitted, s.shed_total()), (1, 1));
    let gs = g.stats();
    assert_eq!((gs.admitted, gs.refused_overload), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn the_next_place_goes_to_the_highest_priority_waiting() {
    // At a limit of 1, critical requests may have 2 in flight (a place
    // above the limit), sheddable ones 1.
    let svc = SlowService::new(10, Duration::from_millis(10));
    let (g, layered) = waiting_room(1, 8, Duration::from_secs(1), &svc);
    let start = Instant::now();
    let busy: Vec<_> = (0..2).map(|c| send(&layered, "/checkout", c)).collect();
    settle().await;
    let crawls: Vec<_> = (1..=3).map(|c| send(&layered, "/crawl", 10 + c)).collect();
    settle().await;
    let checkout = send(&layered, "/checkout", 9);
    settle().await;
    let s = &g.stats().overload[0];
    assert_eq!(
        (s.in_flight, s.waiting_room.as_ref().unwrap().waiting),
        (2, 4)
    );
    for b in busy {
        assert_eq!(
            b.await.unwrap(),
            (StatusCode::OK, start + Duration::from_millis(10))
        );
    }
    // Came last, served first of the waiters, as soon as a place freed;
    // the sheddable ones one at a time after the critical ones are gone.
    let (status, at) = checkout.await.unwrap();
    assert_eq!(
        (status, at - start),
        (StatusCode::OK, Duration::from_millis(20))
    );
    let mut done = Vec::new();
    for c in crawls {
        let (status, at) = c.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        done.push(at - start);
    }
    done.sort();
    assert_eq!(done, [30, 40, 50].map(Duration::from_millis), "{done:?}");
    assert_eq!(
        g.stats().overload[0].waiting_room.as_ref().unwrap().waited,
        4
    );
}

#[tokio::test(start_paused = true)]
async fn a_full_room_turns_away_its_lowest_for_a_higher_priority() {
    let svc = SlowService::new(10, Duration::from_millis(10));
    let (g, layered) = waiting_room(1, 2, Duration::from_secs(1), &svc);
    let start = Instant::now();
    let busy = send(&layered, "/", 0);
    settle().await;
    let crawls: Vec<_> = (1..=2).map(|c| send(&layered, "/crawl", c)).collect();
    settle().await;
    // Full of sheddable requests: another is shed at once...
    let (status, at) = send(&layered, "/crawl", 3).await.unwrap();
    assert_eq!(
        (status, at - start),
        (StatusCode::SERVICE_UNAVAILABLE, Duration::ZERO)
    );
    // ... and a default one takes the oldest's place, which is shed.
    let page = send(&layered, "/", 9);
    let mut crawls = crawls.into_iter();
    let (status, at) = crawls.next().unwrap().await.unwrap();
    assert_eq!(
        (status, at - start),
        (StatusCode::SERVICE_UNAVAILABLE, Duration::ZERO)
    );
    assert_eq!(busy.await.unwrap().0, StatusCode::OK);
    assert_eq!(
        page.await.unwrap(),
        (StatusCode::OK, start + Duration::from_millis(20))
    );
    assert_eq!(crawls.next().unwrap().await.unwrap().0, StatusCode::OK);
    let s = &g.stats().overload[0];
    let room = s.waiting_room.as_ref().unwrap();
    assert_eq!((room.turned_away, room.waited, room.timed_out), (1, 2, 0));
    let shed = |name: &str| s.shed.iter().find(|(p, _)| p.name() == name).unwrap().1;
    assert_eq!(shed("low"), 2, "{s:?}");
    assert_eq!(g.stats().refused_overload, 2);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_leaves_while_waiting_gives_way_to_the_next() {
    let svc = SlowService::new(10, Duration::from_millis(10));
    let (g, layered) = waiting_room(1, 4, Duration::from_secs(1), &svc);
    let busy = send(&layered, "/", 0);
    settle().await;
    let leaves = send(&layered, "/", 1);
    settle().await;
    let stays = send(&layered, "/", 2);
    settle().await;
    leaves.abort();
    assert_eq!(busy.await.unwrap().0, StatusCode::OK);
    assert_eq!(stays.await.unwrap().0, StatusCode::OK);
    let s = &g.stats().overload[0];
    assert_eq!((s.in_flight, s.admitted), (0, 2), "{s:?}");
}

#[tokio::test(start_paused = true)]
async fn with_a_waiting_room_a_crowd_keeps_the_service_busy_and_nobody_waits_long() {
    // 10 workers of 10 ms: 1,000 a second. A crowd of 300 closed-loop
    // clients, with the limit pinned at the workers and a short room.
    let svc = SlowService::new(10, Duration::from_millis(10));
    let g = guard(
        Overload::gradient2()
            .limits(10, 10, 10)
            .queue(20, Duration::from_millis(5)),
    );
    let seen = load(&g, &svc, 300, "/", Duration::from_secs(5)).await;
    // Goodput: the service never idles while requests wait.
    assert!(seen.ok as f64 >= 0.98 * 5_000.0, "{seen:?}");
    // In the service alone, 10 ms; with the wait at most 5 ms more.
    assert!(seen.slowest_ok <= Duration::from_millis(15), "{seen:?}");
    assert!(seen.slowest_shed <= Duration::from_millis(5), "{seen:?}");
    let s = &g.stats().overload[0];
    let room = s.waiting_room.as_ref().unwrap();
    assert!(room.waited > 0 && room.timed_out > 0, "{room:?}");
    assert_eq!((s.in_flight, room.waiting), (0, 0), "{s:?}");
    let text = g.prometheus();
    for line in [
        format!("floodguard_waited_total{{route=\"\"}} {}\n", room.waited),
        format!(
            "floodguard_wait_timeouts_total{{route=\"\"}} {}\n",
            room.timed_out
        ),
        "floodguard_turned_away_total{route=\"\"} 0\n".to_owned(),
        "floodguard_waiting{route=\"\"} 0\n".to_owned(),
    ] {
        assert!(text.contains(&line), "{line} missing from\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_on_two_threads_all_get_a_place_and_every_place_comes_back() {
    // Real time, two worker threads: 64 clients race for 2 places with a
    // room for all of them and a wait far longer than the work. A place
    // lost between a release and a request entering the room would leave
    // the room or the limit unbalanced at the end.
    let svc = SlowService::new(64, Duration::ZERO);
    let g = Guard::builder()
        .overload(
            Overload::gradient2()
                .limits(2, 2, 2)
                .queue(64, Duration::from_secs(2)),
        )
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for c in 0..64u32 {
        let mut layered = g.layer().layer(svc.clone());
        tasks.push(tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            for _ in 0..50 {
                let began = Instant::now();
                let res = layered
                    .ready()
                    .await
                    .unwrap()
                    .call(request("/", c))
                    .await
                    .unwrap();
                assert_eq!(res.status(), StatusCode::OK);
                slowest = slowest.max(began.elapsed());
            }
            slowest
        }));
    }
    let mut slowest = Duration::ZERO;
    for t in tasks {
        slowest = slowest.max(t.await.unwrap());
    }

    let s = &g.stats().overload[0];
    let room = s.waiting_room.as_ref().unwrap();
    assert_eq!(
        (s.admitted, s.shed_total(), s.in_flight),
        (3_200, 0, 0),
        "{s:?}"
    );
    assert_eq!((room.timed_out, room.waiting), (0, 0), "{room:?}");
    assert!(room.waited > 0, "{room:?}");
    // Oldest first while the room moves: nobody waits anywhere near the
    // half of the timeout after which the newest would go first.
    assert!(slowest < Duration::from_millis(500), "{slowest:?}");
}

#[tokio::test(start_paused = true)]
async fn a_grpc_call_whose_wait_runs_out_gets_unavailable() {
    let svc = SlowService::new(10, Duration::from_millis(50));
    let (_g, layered) = waiting_room(1, 4, Duration::from_millis(5), &svc);
    let busy = send(&layered, "/", 1);
    settle().await;
    let mut call = request("/shop.Shop/Search", 2);
    call.headers_mut()
        .insert("content-type", "application/grpc".parse().unwrap());
    *call.version_mut() = http::Version::HTTP_2;
    let res = layered.clone().oneshot(call).await.unwrap();
    // A trailers-only gRPC answer, in the call's content type.
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["grpc-status"], "14");
    assert_eq!(res.headers()["content-type"], "application/grpc");
    assert_eq!(busy.await.unwrap().0, StatusCode::OK);
}

/// Per-route limits go to the application's routes only: junk paths (404s,
/// whatever the client asks for) share the service's limit and never name
/// a limit or a metric.
#[cfg(feature = "axum")]
#[tokio::test(start_paused = true)]
async fn route_limits_go_to_real_routes_only() {
    use axum::routing::get;
    let g = guard(Overload::default().per_route());
    let app = axum::Router::new()
        .route("/search", get(|| async { "results" }))
        .route("/product/{id}", get(|| async { "product" }))
        .layer(g.layer());
    let send = |path: String| {
        let mut req = Request::get(path).body(axum::body::Body::empty()).unwrap();
        req.extensions_mut()
            .insert(PeerAddr(SocketAddr::from(([10, 0, 0, 1], 1))));
        app.clone().oneshot(req)
    };
    for i in 0..80 {
        let res = send(format!("/junk{i}")).await.unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
    }
    for path in ["/search", "/product/7", "/product/9"] {
        assert_eq!(send(path.into()).await.unwrap().status(), StatusCode::OK);
    }
    let routes: Vec<Option<String>> = g.stats().overload.into_iter().map(|l| l.route).collect();
    assert_eq!(
        routes,
        [None, Some("/search".into()), Some("/product/{id}".into())]
    );
    let text = g.prometheus();
    assert!(!text.contains("junk"), "{text}");
}

/// Once every place for a route's limit is taken, a new route shares the
/// service's limit until a route has gone five minutes without requests;
/// then the new route takes that route's place, in the stats and in the
/// metrics, which never name more than `MAX_ROUTE_LIMITS` routes.
#[cfg(feature = "axum")]
#[tokio::test(start_paused = true)]
async fn a_route_idle_for_five_minutes_gives_its_limit_to_a_new_route() {
    use axum::routing::get;
    use floodguard::http::MAX_ROUTE_LIMITS;
    let g = guard(Overload::default().per_route());
    let mut app = axum::Router::new();
    for i in 0..=MAX_ROUTE_LIMITS {
        app = app.route(&format!("/r{i}"), get(|| async { "ok" }));
    }
    let app = app.layer(g.layer());
    let send = |path: String| {
        let mut req = Request::get(path).body(axum::body::Body::empty()).unwrap();
        req.extensions_mut()
            .insert(PeerAddr(SocketAddr::from(([10, 0, 0, 1], 1))));
        app.clone().oneshot(req)
    };
    let routes = || -> Vec<String> {
        g.stats()
            .overload
            .into_iter()
            .filter_map(|l| l.route)
            .collect()
    };
    for i in 0..MAX_ROUTE_LIMITS {
        assert_eq!(
            send(format!("/r{i}")).await.unwrap().status(),
            StatusCode::OK
        );
    }
    let last = format!("/r{MAX_ROUTE_LIMITS}");
    // Every place taken, every route used a moment ago.
    assert_eq!(send(last.clone()).await.unwrap().status(), StatusCode::OK);
    assert_eq!(routes().len(), MAX_ROUTE_LIMITS);
    assert!(!routes().contains(&last));
    assert_eq!(
        g.stats().overload[0].admitted,
        1,
        "counted in the service's"
    );

    // All but /r0 used again a minute later; five minutes after the start
    // /r0 has been idle for five minutes and gives its place.
    tokio::time::advance(Duration::from_secs(60)).await;
    for i in 1..MAX_ROUTE_LIMITS {
        assert_eq!(
            send(format!("/r{i}")).await.unwrap().status(),
            StatusCode::OK
        );
    }
    tokio::time::advance(Duration::from_secs(240)).await;
    assert_eq!(send(last.clone()).await.unwrap().status(), StatusCode::OK);
    let now = routes();
    assert_eq!(now.len(), MAX_ROUTE_LIMITS);
    assert!(now.contains(&last) && !now.contains(&"/r0".to_owned()));
    let text = g.prometheus();
    assert!(
        text.contains(&format!("floodguard_in_flight{{route=\"{last}\"}} 0\n")),
        "{text}"
    );
    assert!(!text.contains("route=\"/r0\""), "{text}");
    let named = text
        .lines()
        .filter(|l| l.starts_with("floodguard_in_flight{"))
        .count();
    assert_eq!(named, MAX_ROUTE_LIMITS + 1, "the service's and the routes'");
}
