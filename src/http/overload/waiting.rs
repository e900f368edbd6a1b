//! The waiting room of an overload limit: requests that find the limit
//! full wait a short while for a place instead of being shed at once. The
//! next place goes to the highest priority waiting; within a priority to
//! the oldest while the room moves, and to the newest once the oldest has
//! waited `congested_after` (adaptive LIFO: under a standing queue the
//! oldest time out rather than every request waiting out the timeout). A
//! full room makes room for a higher priority by turning away its lowest,
//! oldest waiter.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::time::{Duration, Instant};

use crate::http::overload::priority::Priority;

/// The waiters of one limit, by priority.
pub(crate) struct WaitingRoom {
    capacity: usize,
    congested_after: Duration,
    /// Waiters in the room (some may have left without a place); read
    /// without the lock so that a release with nobody waiting costs one
    /// load.
    len: AtomicUsize,
    queues: Mutex<[VecDeque<Waiter>; 5]>,
}

/// A waiting request: how to tell it it has a place, and since when it
/// waits.
struct Waiter {
    tx: oneshot::Sender<()>,
    since: Instant,
}

/// Why a request could not wait.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Full;

impl WaitingRoom {
    pub(crate) fn new(capacity: usize, congested_after: Duration) -> Self {
        WaitingRoom {
            capacity,
            congested_after,
            len: AtomicUsize::new(0),
            queues: Mutex::new(Default::default()),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Waiters now.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// A place in the room for a request of `priority`: the receiver hears
    /// `()` when the request is given a place in the limit, and an error
    /// when it is turned away for a higher priority. `Err(Full)` when the
    /// room holds `capacity` waiters, none of them below `priority`.
    /// Returns how many lower waiters were turned away (0 or 1).
    pub(crate) fn enter(&self, priority: Priority) -> Result<(oneshot::Receiver<()>, u64), Full> {
        let mut queues = self.queues.lock();
        let mut turned_away = 0;
        if self.len.load(Ordering::Relaxed) >= self.capacity {
            // Waiters that left (timed out, or their client went away)
            // still hold a place until someone looks.
            for q in queues.iter_mut() {
                q.retain(|w| !w.tx.is_closed());
            }
            let left: usize = queues.iter().map(VecDeque::len).sum();
            self.len.store(left, Ordering::Relaxed);
            if left >= self.capacity {
                let lower = queues[..priority as usize]
                    .iter_mut()
                    .find(|q| !q.is_empty())
                    .ok_or(Full)?;
                // Dropping the sender tells the waiter it was turned away.
                drop(lower.pop_front());
                self.len.fetch_sub(1, Ordering::Relaxed);
                turned_away = 1;
            }
        }
        let (tx, rx) = oneshot::channel();
        queues[priority as usize].push_back(Waiter {
            tx,
            since: Instant::now(),
        });
        self.len.fetch_add(1, Ordering::SeqCst);
        Ok((rx, turned_away))
    }

    /// Gives places to waiters while `take` finds one for the best waiter's
    /// priority; `untake` gives back a place taken for a waiter that left
    /// meanwhile. Neither may call back into the room. Returns the places
    /// given.
    pub(crate) fn hand_over(
        &self,
        take: impl Fn(Priority) -> bool,
        untake: impl Fn(Priority),
    ) -> u64 {
        // SeqCst with the limit's count: see `ConcurrencyLimit::untake`.
        if self.len.load(Ordering::SeqCst) == 0 {
            return 0;
        }
        let mut given = 0;
        let now = Instant::now();
        let mut queues = self.queues.lock();
        while let Some(i) = (0..queues.len()).rev().find(|&i| !queues[i].is_empty()) {
            let priority = Priority::ALL[i];
            if !take(priority) {
                break;
            }
            let q = &mut queues[i];
            let congested = q
                .front()
                .is_some_and(|w| now.saturating_duration_since(w.since) >= self.congested_after);
            let waiter = if congested {
                q.pop_back()
            } else {
                q.pop_front()
            };
            self.len.fetch_sub(1, Ordering::Relaxed);
            match waiter.expect("a waiter").tx.send(()) {
                Ok(()) => given += 1,
                Err(()) => untake(priority),
            }
        }
        given
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// A limit of `free` places, as `hand_over` sees it.
    fn places(free: u32) -> (Cell<u32>, Cell<u32>) {
        (Cell::new(free), Cell::new(0))
    }

    fn hand_over(room: &WaitingRoom, free: &Cell<u32>, untaken: &Cell<u32>) -> u64 {
        room.hand_over(
            |_| {
                let n = free.get();
                free.set(n.saturating_sub(1));
                n > 0
            },
            |_| {
                free.set(free.get() + 1);
                untaken.set(untaken.get() + 1);
            },
        )
    }

    /// Always congested (newest first), or never (oldest first).
    const LIFO: Duration = Duration::ZERO;
    const FIFO: Duration = Duration::from_secs(3600);

    #[test]
    fn places_go_to_the_highest_priority_then_the_oldest() {
        let room = WaitingRoom::new(8, FIFO);
        let (mut low_old, _) = room.enter(Priority::Low).unwrap();
        let (mut low_new, _) = room.enter(Priority::Low).unwrap();
        let (mut high, _) = room.enter(Priority::High).unwrap();
        let (free, untaken) = places(2);
        assert_eq!(hand_over(&room, &free, &untaken), 2);
        assert_eq!(high.try_recv(), Ok(()));
        assert_eq!(low_old.try_recv(), Ok(()));
        assert!(low_new.try_recv().is_err());
        assert_eq!(room.len(), 1);
    }

    #[test]
    fn a_congested_room_serves_the_newest_first() {
        let room = WaitingRoom::new(8, LIFO);
        let (mut low_old, _) = room.enter(Priority::Low).unwrap();
        let (mut low_new, _) = room.enter(Priority::Low).unwrap();
        let (mut high, _) = room.enter(Priority::High).unwrap();
        let (free, untaken) = places(1);
        assert_eq!(hand_over(&room, &free, &untaken), 1);
        assert_eq!(high.try_recv(), Ok(()));
        assert!(low_new.try_recv().is_err() && low_old.try_recv().is_err());
        free.set(1);
        assert_eq!(hand_over(&room, &free, &untaken), 1);
        assert_eq!(low_new.try_recv(), Ok(()));
        assert!(low_old.try_recv().is_err());
        assert_eq!(room.len(), 1);
    }

    #[test]
    fn a_waiter_that_left_gives_its_place_to_the_next() {
        let room = WaitingRoom::new(8, FIFO);
        let (left, _) = room.enter(Priority::Normal).unwrap();
        let (mut stays, _) = room.enter(Priority::Normal).unwrap();
        drop(left);
        let (free, untaken) = places(1);
        assert_eq!(hand_over(&room, &free, &untaken), 1);
        assert_eq!(untaken.get(), 1);
        assert_eq!(stays.try_recv(), Ok(()));
        assert_eq!((free.get(), room.len()), (0, 0));
    }

    #[test]
    fn nobody_waiting_or_no_place_hands_nothing() {
        let room = WaitingRoom::new(2, FIFO);
        let (free, untaken) = places(3);
        assert_eq!(hand_over(&room, &free, &untaken), 0);
        assert_eq!(free.get(), 3);
        let (mut rx, _) = room.enter(Priority::Lowest).unwrap();
        free.set(0);
        assert_eq!(hand_over(&room, &free, &untaken), 0);
        assert!(rx.try_recv().is_err());
        assert_eq!(room.len(), 1);
    }

    #[test]
    fn a_full_room_turns_away_its_lowest_oldest_for_a_higher_priority() {
        let room = WaitingRoom::new(3, FIFO);
        let (mut lowest_old, _) = room.enter(Priority::Lowest).unwrap();
        let (mut lowest_new, _) = room.enter(Priority::Lowest).unwrap();
        let (_normal, _) = room.enter(Priority::Normal).unwrap();
        // Full: no one below Lowest to turn away.
        assert_eq!(room.enter(Priority::Lowest).unwrap_err(), Full);
        let (_high, turned_away) = room.enter(Priority::High).unwrap();
        assert_eq!(turned_away, 1);
        assert_eq!(
            lowest_old.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        );
        assert_eq!(
            lowest_new.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        );
        assert_eq!(room.len(), 3);
        // Highest turns away the last Lowest before any Normal.
        let (_highest, turned_away) = room.enter(Priority::Highest).unwrap();
        assert_eq!(turned_away, 1);
        assert!(lowest_new.try_recv().is_err());
        assert_eq!(room.len(), 3);
    }

    #[test]
    fn a_full_room_first_forgets_waiters_that_left() {
        let room = WaitingRoom::new(2, FIFO);
        let (a, _) = room.enter(Priority::Low).unwrap();
        let (_b, _) = room.enter(Priority::Low).unwrap();
        drop(a);
        let (_c, turned_away) = room.enter(Priority::Low).unwrap();
        assert_eq!((turned_away, room.len()), (0, 2));
    }
}
