//! Loading the sets in force: the bans in pages (those ending last first,
//! each page resuming after the last entry of the one before), then the
//! classes; and, after a whole and clean load, lifting the bans this guard
//! learned from the set that it no longer holds.

use std::time::Duration;

use redis::Value;

use super::format::{Page, decode_page, parse_hex16, parse_prefix};
use super::task::{CONNECT_TIMEOUT, Core, MAX_CLASSES, bump};
use crate::IpPrefix;
use crate::http::{BanTarget, GuardHandle};

/// Time for each page of the bans in force (and for the classes).
const LOAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Bans read per round trip when loading the set: a reply stays small (a
/// few tens of kilobytes) however many bans the fleet holds, so that a
/// fleet reconnecting at once does not make Redis build one huge reply per
/// instance.
const LOAD_PAGE: usize = 1_000;

/// Asks for the page of `key` after `cursor` (from the start without one),
/// of at most `count` members.
async fn read_page(
    script: &redis::Script,
    con: &mut redis::aio::MultiplexedConnection,
    key: &str,
    count: usize,
    cursor: Option<(i64, &[u8])>,
) -> Result<Value, String> {
    let mut call = script.key(key);
    call.arg(count);
    match cursor {
        Some((score, member)) => call.arg(score).arg(member),
        None => call.arg("").arg(""),
    };
    call.invoke_async(con).await.map_err(|e| e.to_string())
}

impl Core {
    /// A page's entries; a malformed reply is rejected.
    fn page<'a>(&self, reply: &'a Value) -> Option<Page<'a>> {
        let page = decode_page(reply);
        if page.is_none() {
            self.reject("set", format!("{reply:?}").as_bytes());
        }
        page
    }

    /// Applies a page of bans to `target`, adding those it holds to
    /// `in_set`; false if an entry did not parse.
    fn apply_bans(
        &self,
        target: &dyn BanTarget,
        entries: &[Option<(&str, u64)>],
        in_set: &mut ahash::HashSet<IpPrefix>,
    ) -> bool {
        let mut clean = true;
        for entry in entries {
            match *entry {
                Some((member, ms)) => match parse_prefix(member) {
                    Some(prefix) => {
                        in_set.insert(prefix);
                        self.learn(prefix, ms, || {
                            target.apply_ban(prefix, Duration::from_millis(ms), true)
                        });
                        bump(&self.counters.loaded);
                    }
                    None => {
                        clean = false;
                        self.reject("set member", member.as_bytes());
                    }
                },
                None => {
                    clean = false;
                    self.reject("set member", b"(not a member and a time)");
                }
            }
        }
        clean
    }

    /// Loads the bans in force into `target` in pages of [`LOAD_PAGE`],
    /// those that end last first and at most `max_bans` of them, applying
    /// each page as it comes. Then lifts the bans recorded as in the set
    /// before the first page was asked for that no page held, unless the
    /// pages may have left some out.
    ///
    /// A change made while the pages are read reaches the guard whatever
    /// page it falls in: the subscriber listens already, and applies the
    /// change's message once the load is done. A ban lifted, or added
    /// again with a new end, between pages may be missing from them: it
    /// is lifted here (when recorded before), then its message is applied.
    async fn load_bans(
        &self,
        con: &mut redis::aio::MultiplexedConnection,
        target: &GuardHandle,
    ) -> Result<(), String> {
        let asked = self.tracked.lock().changes();
        let mut in_set: ahash::HashSet<IpPrefix> = Default::default();
        // Every entry parsed, and the pages held the whole set.
        let (mut clean, mut whole) = (true, true);
        let (mut read, mut cursor) = (0usize, None::<(i64, Vec<u8>)>);
        loop {
            let count = LOAD_PAGE.min(self.max_bans - read);
            let at = cursor.as_ref().map(|(s, m)| (*s, m.as_slice()));
            let reply = read_page(&self.load_page, con, &self.bans_key, count, at).await?;
            bump(&self.counters.load_pages);
            let Some(page) = self.page(&reply) else {
                return Ok(());
            };
            let Some(target) = target.upgrade() else {
                return Ok(());
            };
            clean &= self.apply_bans(&*target, &page.entries, &mut in_set);
            drop(target);
            #[cfg(test)]
            if let Some(hook) = self.after_page.get() {
                hook(
                    self.counters
                        .load_pages
                        .load(std::sync::atomic::Ordering::Relaxed),
                );
            }
            // A full page always holds `count` entries: `read` grows.
            read += page.entries.len();
            match page.next {
                None => break,
                // Cut at `max_bans`: the rest end sooner.
                Some(_) if read >= self.max_bans => {
                    whole = false;
                    break;
                }
                Some((score, member)) => cursor = Some((score, member.to_vec())),
            }
        }
        // A load cut at `max_bans` leaves bans out, and an entry that did
        // not parse may be any of them: absence proves a lift only in a
        // whole, clean set.
        if !(clean && whole) {
            return Ok(());
        }
        let Some(target) = target.upgrade() else {
            return Ok(());
        };
        self.tracked.lock().missing(&in_set, asked, |prefix| {
            // Lifting a ban that has ended here too is harmless, not counted.
            if target.apply_lift(prefix) {
                bump(&self.counters.reconciled_lifts);
                tracing::debug!(%prefix, "floodguard: shared ban lifted on reconnecting");
            }
        });
        Ok(())
    }

    /// Loads the bans and classes in force into `target`.
    pub(super) async fn load(&self, target: &GuardHandle) -> Result<(), String> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(LOAD_TIMEOUT));
        let mut con = self
            .store
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| e.to_string())?;
        self.load_bans(&mut con, target).await?;
        let reply = read_page(
            &self.load_page,
            &mut con,
            &self.classes_key,
            MAX_CLASSES,
            None,
        )
        .await?;
        let Some(target) = target.upgrade() else {
            return Ok(());
        };
        let entries = self.page(&reply).map(|p| p.entries);
        for entry in entries.into_iter().flatten() {
            match entry {
                Some((member, ms)) => match parse_hex16(member) {
                    Some(class) => {
                        target.apply_class(class, Duration::from_millis(ms));
                        bump(&self.counters.loaded);
                    }
                    None => self.reject("set member", member.as_bytes()),
                },
                None => self.reject("set member", b"(not a member and a time)"),
            }
        }
        Ok(())
    }
}

/// Against a real redis-server: the paged load.
#[cfg(test)]
mod tests {
    use super::super::format::{Change, encode};
    use super::super::scripts::{LIFT_SCRIPT, LOAD_PAGE_SCRIPT, RECORD_SCRIPT};
    use super::super::seam::Setup;
    use super::*;
    use crate::http::FleetLink;
    use crate::redis::RedisStore;
    use crate::redis::redis_server::RedisServer;
    use parking_lot::Mutex;
    use std::collections::HashMap;
    use std::sync::{Arc, Weak};

    fn prefix(s: &str) -> IpPrefix {
        s.parse().unwrap()
    }

    /// A guard's bans, as the subscriber sees them.
    #[derive(Default)]
    struct Bans(Mutex<HashMap<IpPrefix, Duration>>);

    impl BanTarget for Bans {
        fn apply_ban(&self, prefix: IpPrefix, remaining: Duration, extend_only: bool) -> bool {
            let mut bans = self.0.lock();
            let ban = bans.entry(prefix).or_insert(remaining);
            if !extend_only || remaining > *ban {
                *ban = remaining;
            }
            true
        }

        fn apply_lift(&self, prefix: &IpPrefix) -> bool {
            self.0.lock().remove(prefix).is_some()
        }

        fn apply_class(&self, _: u64, _: Duration) -> bool {
            false
        }
    }

    const KEY: &str = "shop:{bans}";
    /// Another guard's id in messages.
    const OTHER: u64 = 0xaa;

    /// The `i`th of the test's bans.
    fn member(i: u32) -> String {
        let [_, a, b, c] = i.to_be_bytes();
        format!("10.{a}.{b}.{c}/32")
    }

    /// The server's clock in ms.
    fn server_now(con: &mut redis::Connection) -> u64 {
        let (secs, micros): (u64, u64) = redis::cmd("TIME").query(con).unwrap();
        secs * 1_000 + micros / 1_000
    }

    /// Adds `(score, member)` pairs to the set as they are.
    fn zadd(con: &mut redis::Connection, entries: &[(u64, String)]) {
        for chunk in entries.chunks(500) {
            let mut cmd = redis::cmd("ZADD");
            cmd.arg(KEY);
            for (score, member) in chunk {
                cmd.arg(*score).arg(member);
            }
            let _: i64 = cmd.query(con).unwrap();
        }
    }

    /// The member at `rank` (those ending last first).
    fn at_rank(con: &mut redis::Connection, rank: usize) -> String {
        let r: Vec<String> = redis::cmd("ZREVRANGE")
            .arg(KEY)
            .arg(rank)
            .arg(rank)
            .query(con)
            .unwrap();
        r[0].clone()
    }

    /// What another guard does: writes (or lifts) and publishes.
    fn record(con: &mut redis::Connection, change: Change) {
        let message = encode(OTHER, &change);
        let _: i64 = match change {
            Change::Ban { prefix, ttl_ms } => redis::Script::new(RECORD_SCRIPT)
                .key(KEY)
                .arg(prefix.to_string())
                .arg(ttl_ms)
                .arg(100_000)
                .arg(KEY)
                .arg(message)
                .invoke(con)
                .unwrap(),
            Change::Lift { prefix } => redis::Script::new(LIFT_SCRIPT)
                .key(KEY)
                .arg(prefix.to_string())
                .arg(KEY)
                .arg(message)
                .invoke(con)
                .unwrap(),
            Change::Class { .. } => unreachable!(),
        };
    }

    /// 2,500 bans, ending in groups of five together, load in three
    /// pages; between the first two, another guard lifts the first
    /// page's last ban (the cursor), bans one address for longer than
    /// all (behind the cursor) and one for less (ahead of it), and
    /// bans ahead of the cursor end or are removed. Nothing is lost,
    /// and nothing ended is applied.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_load_in_pages_misses_no_change_made_between_pages() {
        let server = RedisServer::start();
        let client = redis::Client::open(server.url()).unwrap();
        let mut con = client.get_connection().unwrap();
        let now = server_now(&mut con);
        let bans: Vec<(u64, String)> = (0..2_500u32)
            .map(|i| (now + 600_000 - u64::from(i / 5) * 10, member(i)))
            .collect();
        zadd(&mut con, &bans);

        let store = RedisStore::builder(server.url())
            .namespace("shop")
            .build()
            .unwrap();
        let (sink, starter) = Setup::new(&store).open(100_000).unwrap();
        let cursor = prefix(&at_rank(&mut con, LOAD_PAGE - 1));
        let removed = prefix(&at_rank(&mut con, 2_200));
        let url = server.url();
        let hook = move |pages: u64| {
            if pages != 1 {
                return;
            }
            let mut con = redis::Client::open(url.as_str())
                .unwrap()
                .get_connection()
                .unwrap();
            record(&mut con, Change::Lift { prefix: cursor });
            for (net, ttl_ms) in [("192.0.2.1/32", 3_600_000), ("192.0.2.2/32", 30_000)] {
                let prefix = prefix(net);
                record(&mut con, Change::Ban { prefix, ttl_ms });
            }
            let _: i64 = redis::cmd("ZREM")
                .arg(KEY)
                .arg(removed.to_string())
                .query(&mut con)
                .unwrap();
            // Ended ones, after the recording dropped those it found.
            let now = server_now(&mut con);
            let ended: Vec<(u64, String)> = (0..20)
                .map(|i| (now - 1_000 - i, format!("10.99.0.{i}/32")))
                .collect();
            zadd(&mut con, &ended);
        };
        assert!(starter.core().after_page.set(Box::new(hook)).is_ok());
        let target: Arc<Bans> = Arc::default();
        let weak: Weak<dyn BanTarget> = Arc::downgrade(&target) as Weak<dyn BanTarget>;
        starter.start(GuardHandle::new(weak), Duration::from_secs(60));

        let start = std::time::Instant::now();
        while sink.stats().received < 3 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{:?}",
                sink.stats()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let s = sink.stats();
        assert_eq!(
            (s.load_pages, s.loaded, s.received, s.rejected),
            (3, 2_500, 3, 0),
            "{s:?}"
        );
        assert_eq!(s.reconciled_lifts, 0);
        let held = target.0.lock().clone();
        let mut want: Vec<IpPrefix> = bans.iter().map(|(_, m)| prefix(m)).collect();
        want.retain(|p| *p != cursor && *p != removed);
        want.extend([prefix("192.0.2.1/32"), prefix("192.0.2.2/32")]);
        let mut got: Vec<IpPrefix> = held.keys().copied().collect();
        got.sort_by_key(ToString::to_string);
        want.sort_by_key(ToString::to_string);
        assert_eq!(got.len(), 2_500);
        assert_eq!(got, want);
        assert!(held[&prefix("192.0.2.1/32")] > Duration::from_secs(3_500));
    }

    /// The pages of a set whose members mostly end together, read 3 at
    /// a time while each page's last member is removed or ends anew
    /// before the next is asked for: together they are the whole set,
    /// in order, each member once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pages_resume_after_their_cursor_even_when_it_is_gone() {
        let server = RedisServer::start();
        let client = redis::Client::open(server.url()).unwrap();
        let mut sync = client.get_connection().unwrap();
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        let now = server_now(&mut sync);
        // Four groups of ten ending together, and names that sort
        // differently as bytes and as numbers (10.0.0.10 < 10.0.0.9).
        let entries: Vec<(u64, String)> = (0..40u32)
            .map(|i| (now + 60_000 + u64::from(i % 4) * 1_000, member(i)))
            .collect();
        zadd(&mut sync, &entries);
        let order: Vec<String> = redis::cmd("ZREVRANGE")
            .arg(KEY)
            .arg(0)
            .arg(-1)
            .query(&mut sync)
            .unwrap();
        let script = redis::Script::new(LOAD_PAGE_SCRIPT);
        let (mut seen, mut cursor, mut pages) = (Vec::new(), None::<(i64, Vec<u8>)>, 0);
        loop {
            let at = cursor.as_ref().map(|(s, m)| (*s, m.as_slice()));
            let reply = read_page(&script, &mut con, KEY, 3, at).await.unwrap();
            let page = decode_page(&reply).unwrap();
            pages += 1;
            seen.extend(page.entries.iter().map(|e| e.unwrap().0.to_owned()));
            let Some((score, member)) = page.next else {
                break;
            };
            assert_eq!(member, seen.last().unwrap().as_bytes());
            // Gone, or ending later (behind the cursor), in turn.
            let mut cmd = if pages % 2 == 0 {
                redis::cmd("ZREM")
            } else {
                let mut c = redis::cmd("ZADD");
                c.arg(KEY).arg(now + 120_000);
                c
            };
            if pages % 2 == 0 {
                cmd.arg(KEY);
            }
            let _: i64 = cmd.arg(member).query(&mut sync).unwrap();
            cursor = Some((score, member.to_vec()));
            assert!(pages < 20);
        }
        assert_eq!(seen, order);
        assert_eq!(pages, 14);
    }
}
