//! What keeps a slow or dead peer from holding anyone up: a bounded queue
//! per peer that drops its oldest frame when full (a newer lease message
//! supersedes an older one far more often than the reverse) and frames that
//! waited too long, and the reconnect backoff with jitter.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

/// A frame waiting for its peer's connection.
#[derive(Debug, Clone)]
pub(super) struct Queued {
    pub frame: Bytes,
    /// Its message type, for the counters.
    pub kind: &'static str,
    pub since: Instant,
}

/// A bounded FIFO of frames for one peer. `push` never waits; `pop` waits
/// for a frame.
#[derive(Debug)]
pub(super) struct Outbox {
    frames: Mutex<VecDeque<Queued>>,
    capacity: usize,
    ready: Notify,
    /// Frames pushed and not yet finished: queued, or taken and still
    /// being written (see [`Outbox::finished`]).
    unfinished: AtomicUsize,
}

impl Outbox {
    /// A queue of at most `capacity` frames (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            frames: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity,
            ready: Notify::new(),
            unfinished: AtomicUsize::new(0),
        }
    }

    /// Queues a frame; when the queue is full, the oldest frame makes room
    /// and is returned, for the caller to count.
    pub fn push(&self, item: Queued) -> Option<Queued> {
        let mut frames = self.frames.lock().unwrap_or_else(|p| p.into_inner());
        let evicted = if frames.len() >= self.capacity {
            frames.pop_front()
        } else {
            None
        };
        frames.push_back(item);
        if evicted.is_none() {
            self.unfinished.fetch_add(1, Ordering::AcqRel);
        }
        drop(frames);
        self.ready.notify_one();
        evicted
    }

    /// The oldest frame, waiting for one. Cancel-safe: a frame is taken
    /// only in the poll that returns it.
    pub async fn pop(&self) -> Queued {
        loop {
            if let Some(item) = self.try_pop() {
                return item;
            }
            // A push between `try_pop` and here leaves a permit, so the
            // wake-up is not lost.
            self.ready.notified().await;
        }
    }

    fn try_pop(&self) -> Option<Queued> {
        self.frames
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }

    /// Frames waiting.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.frames.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// A frame taken with [`Outbox::pop`] was written, or given up on.
    pub fn finished(&self) {
        let _ = self
            .unfinished
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Frames waiting or being written: zero once everything pushed so far
    /// has left (or was dropped).
    pub fn unfinished(&self) -> usize {
        self.unfinished.load(Ordering::Acquire)
    }
}

/// Exponential reconnect delays with "equal jitter": attempt `n` waits a
/// random time in `[d/2, d]` where `d = min(first · 2ⁿ, cap)`, so peers
/// that lost each other at the same moment do not retry in lockstep.
#[derive(Debug, Clone)]
pub(super) struct Backoff {
    first: Duration,
    cap: Duration,
    next: Duration,
    rng: u64,
}

impl Backoff {
    /// Delays from `first` doubling up to `cap`; `seed` drives the jitter.
    pub fn new(first: Duration, cap: Duration, seed: u64) -> Self {
        Self {
            first,
            cap: cap.max(first),
            next: first,
            // xorshift must not start at zero.
            rng: seed | 1,
        }
    }

    /// After a success: the next failure waits `first` again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// The delay before the next attempt.
    pub fn delay(&mut self) -> Duration {
        let d = self.next;
        self.next = d.saturating_mul(2).min(self.cap);
        let half = d / 2;
        let span = u64::try_from((d - half).as_nanos()).unwrap_or(u64::MAX);
        let extra = if span == 0 {
            0
        } else {
            self.random() % (span + 1)
        };
        half + Duration::from_nanos(extra)
    }

    /// xorshift64*: plenty for jitter, and seedable for simulations.
    fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn item(n: u8) -> Queued {
        Queued {
            frame: Bytes::from(vec![n]),
            kind: "test",
            since: Instant::now(),
        }
    }

    #[tokio::test]
    async fn frames_come_out_in_order() {
        let outbox = Outbox::new(4);
        for n in 1..=3 {
            assert!(outbox.push(item(n)).is_none());
        }
        for n in 1..=3 {
            assert_eq!(outbox.pop().await.frame[0], n);
        }
        assert_eq!(outbox.len(), 0);
    }

    #[tokio::test]
    async fn a_full_outbox_drops_its_oldest_frame() {
        let outbox = Outbox::new(2);
        outbox.push(item(1));
        outbox.push(item(2));
        let evicted = outbox.push(item(3)).unwrap();
        assert_eq!(evicted.frame[0], 1);
        assert_eq!(outbox.len(), 2);
        assert_eq!(outbox.pop().await.frame[0], 2);
        assert_eq!(outbox.pop().await.frame[0], 3);
    }

    #[tokio::test]
    async fn a_frame_is_unfinished_until_written_or_dropped() {
        let outbox = Outbox::new(2);
        outbox.push(item(1));
        outbox.push(item(2));
        assert_eq!(outbox.unfinished(), 2);
        // An eviction finishes the oldest frame.
        outbox.push(item(3));
        assert_eq!(outbox.unfinished(), 2);
        let taken = outbox.pop().await;
        assert_eq!((outbox.len(), outbox.unfinished()), (1, 2), "{taken:?}");
        outbox.finished();
        assert_eq!(outbox.unfinished(), 1);
        let _ = outbox.pop().await;
        outbox.finished();
        outbox.finished();
        assert_eq!(outbox.unfinished(), 0, "never below zero");
    }

    #[tokio::test(start_paused = true)]
    async fn pop_waits_for_a_push() {
        let outbox = std::sync::Arc::new(Outbox::new(2));
        let waiting = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.pop().await.frame[0] }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiting.is_finished());
        outbox.push(item(9));
        assert_eq!(waiting.await.unwrap(), 9);
    }

    #[test]
    fn a_zero_capacity_still_holds_one_frame() {
        let outbox = Outbox::new(0);
        assert!(outbox.push(item(1)).is_none());
        assert_eq!(outbox.push(item(2)).unwrap().frame[0], 1);
    }

    #[test]
    fn backoff_doubles_within_jitter_up_to_the_cap_and_resets() {
        let (first, cap) = (Duration::from_millis(50), Duration::from_secs(2));
        let mut backoff = Backoff::new(first, cap, 42);
        let mut d = first;
        for _ in 0..12 {
            let got = backoff.delay();
            assert!(
                got >= d / 2 && got <= d,
                "{got:?} outside [{:?}, {d:?}]",
                d / 2
            );
            d = (d * 2).min(cap);
        }
        backoff.reset();
        assert!(backoff.delay() <= first);
    }

    #[test]
    fn backoff_jitter_differs_by_seed_and_repeats_with_the_same_seed() {
        let delays = |seed| {
            let mut b = Backoff::new(Duration::from_millis(50), Duration::from_secs(2), seed);
            (0..8).map(|_| b.delay()).collect::<Vec<_>>()
        };
        assert_eq!(delays(7), delays(7));
        assert_ne!(delays(7), delays(8));
        assert_eq!(delays(0).len(), 8);
    }
}
