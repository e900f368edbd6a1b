//! Per-client scores that decay, in bounded memory.
//!
//! A [`ScoreTable`] keeps, for each key (a client address, a network), a
//! score from 0 to 100 that halves every half-life without news, how many
//! good exchanges the key has had, and how many times it has been punished.
//! It lives in the same set-associative [`AtomicTable`] as the rate
//! limiters: one 64-bit word per key, updated by a compare-exchange, so a
//! flood of new keys cannot grow memory and the keys with the most to say
//! (high scores, known-good history, past offences) are the last evicted.
//!
//! Layout of the word: score in hundredths of a point (14 bits), time of
//! the last update in 10 ms ticks (32 bits, 497 days before it wraps:
//! decay is worked out from the ticks elapsed modulo 2^32, so an entry
//! left untouched, and not evicted, for 497 days or more decays only as
//! far as the time past the last multiple of 497 days says), good
//! exchanges (8 bits, saturating), offences (8 bits, saturating) and a
//! 2-bit tag naming what last added points. The score never has all its
//! bits set, so no record is the table's reserved word.

use std::hash::Hash;
use std::time::Duration;

use crate::error::ConfigError;
use crate::table::{AtomicTable, Transition};
use crate::{Store, Timestamp};

/// Nanoseconds per stored tick.
const TICK_NANOS: u64 = 10_000_000;
/// Score resolution: hundredths of a point.
const SCALE: f32 = 100.0;
const MAX_SCORE: u64 = 10_000;
const SCORE_BITS: u32 = 14;
const TICK_SHIFT: u32 = SCORE_BITS;
const GOOD_SHIFT: u32 = TICK_SHIFT + 32;
const OFFENCE_SHIFT: u32 = GOOD_SHIFT + 8;
const TAG_SHIFT: u32 = OFFENCE_SHIFT + 8;
const MAX_TAG: u8 = ScoreChange::MAX_TAG;

/// What a [`ScoreTable`] knows about one key, decayed to the time asked.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ScoreRecord {
    /// The decayed score, 0 to 100.
    pub score: f32,
    /// Good exchanges recorded (saturates at 255).
    pub good: u8,
    /// Offences recorded (saturates at 255); they do not decay.
    pub offences: u8,
    /// The tag of the last change that added points (0 if none had one).
    pub tag: u8,
}

/// A change to one key's record.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ScoreChange {
    /// Points to add (negative to take away); the score stays in 0..=100.
    pub points: f32,
    /// Count one good exchange.
    pub good: bool,
    /// Count one offence.
    pub offence: bool,
    /// With positive `points`: a label from 1 to [`MAX_TAG`](Self::MAX_TAG) for what
    /// added them (such as the kind of misbehaviour), kept in the record;
    /// 0 leaves the record's tag as it is.
    pub tag: u8,
}

impl ScoreChange {
    /// Largest [`tag`](Self::tag).
    pub const MAX_TAG: u8 = 3;

    /// Adds `points`.
    pub fn points(points: f32) -> Self {
        ScoreChange {
            points,
            ..Self::default()
        }
    }
}

/// Keyed scores from 0 to 100 with exponential decay, in a table of fixed
/// capacity (16 bytes per key).
///
/// ```
/// use std::time::Duration;
/// use floodguard::{ScoreChange, ScoreTable, Timestamp};
///
/// let scores = ScoreTable::new(1_000, Duration::from_secs(10))?;
/// let t0 = Timestamp::ZERO;
/// scores.update(&"203.0.113.9", t0, ScoreChange::points(80.0));
/// let later = t0.saturating_add(Duration::from_secs(10));
/// let r = scores.get(&"203.0.113.9", later).unwrap();
/// assert!((r.score - 40.0).abs() < 0.5); // one half-life: halved
/// # Ok::<(), floodguard::ConfigError>(())
/// ```
pub struct ScoreTable {
    table: AtomicTable,
    hasher: ahash::RandomState,
    half_life_ticks: f32,
}

impl std::fmt::Debug for ScoreTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScoreTable")
            .field("capacity", &self.table.capacity())
            .field("half_life_ticks", &self.half_life_ticks)
            .finish()
    }
}

impl ScoreTable {
    /// A table for `capacity` keys whose scores halve every `half_life`
    /// (at least 10 ms).
    pub fn new(capacity: usize, half_life: Duration) -> Result<Self, ConfigError> {
        let ticks = half_life.as_nanos() / u128::from(TICK_NANOS);
        if ticks == 0 {
            return Err(ConfigError::Zero { field: "half_life" });
        }
        Ok(ScoreTable {
            table: AtomicTable::with_capacity(capacity)?,
            hasher: ahash::RandomState::new(),
            half_life_ticks: ticks as f32,
        })
    }

    /// Applies `change` to `key`'s record at `now` and returns the record
    /// after it.
    pub fn update<K: Hash + ?Sized>(
        &self,
        key: &K,
        now: Timestamp,
        change: ScoreChange,
    ) -> ScoreRecord {
        self.update_hashed(self.hash(key), now, change)
    }

    /// Like [`update`](Self::update), for a key hashed with
    /// [`hash`](Self::hash).
    pub fn update_hashed(&self, key: u64, now: Timestamp, change: ScoreChange) -> ScoreRecord {
        let step = ScoreStep {
            change,
            now: tick_of(now),
            half_life: self.half_life_ticks,
        };
        self.table.run(key, now.as_nanos(), step)
    }

    /// `key`'s record at `now`, if the table holds one.
    pub fn get<K: Hash + ?Sized>(&self, key: &K, now: Timestamp) -> Option<ScoreRecord> {
        self.get_hashed(self.hash(key), now)
    }

    /// Like [`get`](Self::get), for a key hashed with [`hash`](Self::hash).
    pub fn get_hashed(&self, key: u64, now: Timestamp) -> Option<ScoreRecord> {
        let step = ReadStep {
            now: tick_of(now),
            half_life: self.half_life_ticks,
        };
        self.table.run(key, now.as_nanos(), step)
    }

    /// The table's hash of `key` (random per table).
    pub fn hash<K: Hash + ?Sized>(&self, key: &K) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Keys the table can hold.
    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }

    /// Keys held now.
    pub fn occupancy(&self) -> usize {
        self.table.occupancy()
    }

    /// Live records dropped to make room for new keys.
    pub fn evictions(&self) -> u64 {
        self.table.evictions()
    }
}

fn tick_of(now: Timestamp) -> u32 {
    // Wraps after 497 days; differences are taken modulo 2^32.
    (now.as_nanos() / TICK_NANOS) as u32
}

/// A record's fields as stored.
#[derive(Clone, Copy)]
struct Fields {
    score: u64,
    tick: u32,
    good: u8,
    offences: u8,
    tag: u8,
}

fn unpack(state: u64) -> Fields {
    Fields {
        score: state & ((1 << SCORE_BITS) - 1),
        tick: (state >> TICK_SHIFT) as u32,
        good: (state >> GOOD_SHIFT) as u8,
        offences: (state >> OFFENCE_SHIFT) as u8,
        tag: (state >> TAG_SHIFT) as u8 & MAX_TAG,
    }
}

fn pack(f: Fields) -> u64 {
    f.score.min(MAX_SCORE)
        | u64::from(f.tick) << TICK_SHIFT
        | u64::from(f.good) << GOOD_SHIFT
        | u64::from(f.offences) << OFFENCE_SHIFT
        | u64::from(f.tag & MAX_TAG) << TAG_SHIFT
}

/// `score` (hundredths) decayed over `elapsed` ticks.
fn decayed(score: u64, elapsed: u32, half_life: f32) -> f32 {
    if elapsed == 0 || score == 0 {
        return score as f32;
    }
    score as f32 * (-(elapsed as f32) / half_life).exp2()
}

#[derive(Clone, Copy)]
struct ScoreStep {
    change: ScoreChange,
    now: u32,
    half_life: f32,
}

impl Transition for ScoreStep {
    type Output = ScoreRecord;

    fn step(&self, state: Option<u64>, _now: u64) -> (ScoreRecord, Option<u64>) {
        let old = state.map_or(
            Fields {
                score: 0,
                tick: self.now,
                good: 0,
                offences: 0,
                tag: 0,
            },
            unpack,
        );
        let elapsed = self.now.wrapping_sub(old.tick);
        let c = self.change;
        let f = Fields {
            score: (decayed(old.score, elapsed, self.half_life) + c.points * SCALE)
                .clamp(0.0, MAX_SCORE as f32)
                .round() as u64,
            tick: self.now,
            good: old.good.saturating_add(u8::from(c.good)),
            offences: old.offences.saturating_add(u8::from(c.offence)),
            tag: if c.points > 0.0 && c.tag != 0 {
                c.tag.min(MAX_TAG)
            } else {
                old.tag
            },
        };
        (record(f, f.score as f32), Some(pack(f)))
    }

    fn inserts(&self) -> bool {
        self.change.points > 0.0 || self.change.good || self.change.offence
    }

    fn heat(&self, state: u64, _now: u64) -> u64 {
        heat(state, self.now, self.half_life)
    }
}

#[derive(Clone, Copy)]
struct ReadStep {
    now: u32,
    half_life: f32,
}

impl Transition for ReadStep {
    type Output = Option<ScoreRecord>;

    fn step(&self, state: Option<u64>, _now: u64) -> (Option<ScoreRecord>, Option<u64>) {
        let out = state.map(|s| {
            let f = unpack(s);
            record(
                f,
                decayed(f.score, self.now.wrapping_sub(f.tick), self.half_life),
            )
        });
        (out, None)
    }

    fn inserts(&self) -> bool {
        false
    }

    fn heat(&self, state: u64, _now: u64) -> u64 {
        heat(state, self.now, self.half_life)
    }
}

/// The record of `f` with its score (hundredths) decayed to `hundredths`.
fn record(f: Fields, hundredths: f32) -> ScoreRecord {
    ScoreRecord {
        score: (hundredths / SCALE).clamp(0.0, 100.0),
        good: f.good,
        offences: f.offences,
        tag: f.tag,
    }
}

/// What evicting a record would forget: its decayed score, and more for
/// the history a new key cannot have (good exchanges, offences).
fn heat(state: u64, now: u32, half_life: f32) -> u64 {
    let f = unpack(state);
    let score = decayed(f.score, now.wrapping_sub(f.tick), half_life) as u64;
    score + 200 * u64::from(f.good) + 2_000 * u64::from(f.offences)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_nanos(ms * 1_000_000)
    }

    /// The tick is 32 bits of 10 ms (497 days) and differences wrap: a
    /// score decays right at any process age, across the tick's wrap too.
    #[test]
    fn decay_is_right_at_any_process_age() {
        let wrap_ms = (1u64 << 32) * 10;
        for start in [0, 1 << 32, 1 << 40, wrap_ms - 5_000, 3 * wrap_ms - 1] {
            let t = ScoreTable::new(64, Duration::from_secs(10)).unwrap();
            t.update(
                &7u32,
                at(start),
                ScoreChange {
                    points: 80.0,
                    good: true,
                    ..ScoreChange::default()
                },
            );
            let r = t.get(&7u32, at(start + 10_000)).unwrap();
            assert!((r.score - 40.0).abs() < 0.5, "at {start} ms: {r:?}");
            assert_eq!(r.good, 1);
            let r = t.get(&7u32, at(start + 20_000)).unwrap();
            assert!((r.score - 20.0).abs() < 0.5, "at {start} ms: {r:?}");
        }
    }

    fn table() -> ScoreTable {
        ScoreTable::new(1024, Duration::from_secs(10)).unwrap()
    }

    #[test]
    fn adds_clamps_and_decays() {
        let t = table();
        assert_eq!(t.update(&1, at(0), ScoreChange::points(30.0)).score, 30.0);
        assert_eq!(t.update(&1, at(0), ScoreChange::points(90.0)).score, 100.0);
        let r = t.get(&1, at(10_000)).unwrap();
        assert!((r.score - 50.0).abs() < 0.01, "{r:?}");
        let r = t.get(&1, at(20_000)).unwrap();
        assert!((r.score - 25.0).abs() < 0.01, "{r:?}");
        assert_eq!(
            t.update(&1, at(20_000), ScoreChange::points(-40.0)).score,
            0.0
        );
    }

    #[test]
    fn reads_and_noops_do_not_insert() {
        let t = table();
        assert_eq!(t.get(&7, at(0)), None);
        t.update(&7, at(0), ScoreChange::default());
        t.update(&7, at(0), ScoreChange::points(-5.0));
        assert_eq!(t.occupancy(), 0);
        t.update(
            &7,
            at(0),
            ScoreChange {
                good: true,
                ..Default::default()
            },
        );
        assert_eq!(t.occupancy(), 1);
    }

    #[test]
    fn counts_good_and_offences_without_decay() {
        let t = table();
        for _ in 0..300 {
            t.update(
                &"a",
                at(0),
                ScoreChange {
                    good: true,
                    offence: true,
                    ..Default::default()
                },
            );
        }
        let r = t.get(&"a", at(3_600_000)).unwrap();
        assert_eq!((r.good, r.offences), (255, 255));
    }

    #[test]
    fn tag_names_the_last_addition() {
        let t = table();
        let add = |points, tag| ScoreChange {
            points,
            tag,
            ..Default::default()
        };
        assert_eq!(t.update(&1, at(0), add(10.0, 2)).tag, 2);
        assert_eq!(t.update(&1, at(0), add(-5.0, 3)).tag, 2);
        assert_eq!(t.update(&1, at(0), add(5.0, 0)).tag, 2);
        assert_eq!(t.update(&1, at(0), add(5.0, 3)).tag, 3);
        assert_eq!(t.update(&1, at(0), add(5.0, 200)).tag, MAX_TAG);
    }

    #[test]
    fn zero_half_life_is_refused() {
        assert!(ScoreTable::new(10, Duration::from_millis(5)).is_err());
        assert!(ScoreTable::new(0, Duration::from_secs(1)).is_err());
    }

    #[test]
    fn known_clients_outlive_new_noise_when_full() {
        // Four slots in one bucket: a client with history survives a stream
        // of one-off keys with small scores.
        let t = ScoreTable::new(4, Duration::from_secs(60)).unwrap();
        for _ in 0..5 {
            t.update(
                &"shopper",
                at(0),
                ScoreChange {
                    good: true,
                    ..Default::default()
                },
            );
        }
        for k in 0..1000u32 {
            t.update(&k, at(1), ScoreChange::points(5.0));
        }
        assert_eq!(t.get(&"shopper", at(2)).unwrap().good, 5);
    }

    proptest! {
        #[test]
        fn score_stays_in_range_and_only_decays_without_news(
            changes in proptest::collection::vec((-200.0f32..200.0, 0u64..100_000), 1..50),
        ) {
            let t = table();
            let mut now = 0;
            let mut last = 0.0;
            for (points, gap) in changes {
                now += gap;
                let before = t.get(&0, at(now)).map_or(0.0, |r| r.score);
                prop_assert!(before <= last + 0.01, "grew without news: {last} -> {before}");
                let r = t.update(&0, at(now), ScoreChange::points(points));
                prop_assert!((0.0..=100.0).contains(&r.score));
                last = r.score;
            }
        }
    }
}
