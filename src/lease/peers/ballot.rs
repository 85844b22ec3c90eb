//! Ballots (LEASES.md §3.1): `(counter, ordinal)`, ordered lexicographically,
//! unique per node because the ordinal is the node's index in the sorted
//! member list. The ballot of the round that starts a tenure is that tenure's
//! fencing token, so a ballot also has a number form: `counter << 16 |
//! ordinal`, kept below 2^53 so tokens survive JSON (JavaScript numbers).

use std::fmt;
use std::time::Duration;

/// Bits of the counter. LEASES.md calls the counter `u48`, but a 48-bit
/// counter shifted by 16 does not fit the promised 2^53; 37 bits do, and
/// still leave 2^37 / [`FLOOR_PER_SEC`] s (272 years from 1970) of
/// wall-clock floor.
pub const COUNTER_BITS: u32 = 37;

/// Steps of the wall-clock floor of new ballots per second (§3.1).
///
/// LEASES.md floors the counter at Unix *seconds*; but every round, renewals
/// included, takes a fresh ballot, and a holder renewing more than once a
/// second drives the counter ahead of a seconds floor for good. After every
/// member lost its state file, new tokens rest on the floor alone (§3.6), so
/// it must outrun the rounds: 16 steps a second do unless the whole cluster
/// runs more than 16 rounds a second for long (a `renew_every` of 3 s uses
/// one every 3 s), and a burst of contention is caught up within the `ttl`
/// a bootstrapping node stays quiet.
pub const FLOOR_PER_SEC: u64 = 16;

/// The largest counter a ballot can carry.
pub const MAX_COUNTER: u64 = (1 << COUNTER_BITS) - 1;

/// One past the largest ballot number: 2^53.
pub const NUMBER_LIMIT: u64 = 1 << (COUNTER_BITS + 16);

/// A proposal number. The derived order compares `counter`, then
/// `ordinal`: exactly the lexicographic order of §3.1, and the order of
/// [`Ballot::as_u64`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ballot {
    counter: u64,
    ordinal: u16,
}

impl Ballot {
    /// The ballot below every real one: nothing promised yet.
    pub const ZERO: Ballot = Ballot {
        counter: 0,
        ordinal: 0,
    };

    /// `(counter, ordinal)`, or `None` if the counter exceeds
    /// [`MAX_COUNTER`].
    pub fn new(counter: u64, ordinal: u16) -> Option<Ballot> {
        (counter <= MAX_COUNTER).then_some(Ballot { counter, ordinal })
    }

    /// The counter part.
    pub fn counter(self) -> u64 {
        self.counter
    }

    /// The proposing node's index in the sorted member list.
    pub fn ordinal(self) -> u16 {
        self.ordinal
    }

    /// The number form, `counter << 16 | ordinal`, always below
    /// [`NUMBER_LIMIT`] (2^53).
    pub fn as_u64(self) -> u64 {
        (self.counter << 16) | u64::from(self.ordinal)
    }

    /// The ballot whose number form is `number`, or `None` from 2^53 on.
    pub fn from_u64(number: u64) -> Option<Ballot> {
        if number >= NUMBER_LIMIT {
            return None;
        }
        Some(Ballot {
            counter: number >> 16,
            // The low 16 bits, which the mask makes fit.
            ordinal: (number & 0xffff) as u16,
        })
    }

    /// The ballot a node with `ordinal` proposes next (§3.1): counter
    /// `max(own promised, highest seen, wall_floor) + 1`, `wall_floor` from
    /// [`wall_floor`]. `None` once the counter space is exhausted (not
    /// before the year 2242 by the wall clock, sooner only if a member
    /// reports absurd ballots).
    ///
    /// The wall-clock floor costs nothing (ballots need only order) and
    /// keeps tokens growing after every node lost its state file.
    pub fn next(
        own_promised: Ballot,
        highest_seen: Ballot,
        wall_floor: u64,
        ordinal: u16,
    ) -> Option<Ballot> {
        let counter = own_promised
            .counter
            .max(highest_seen.counter)
            .max(wall_floor)
            .checked_add(1)?;
        Ballot::new(counter, ordinal)
    }
}

/// The wall-clock floor of ballot counters for `since_epoch` (the wall
/// clock's time since the Unix epoch): [`FLOOR_PER_SEC`] steps a second,
/// rounded down.
pub fn wall_floor(since_epoch: Duration) -> u64 {
    let steps = since_epoch.as_millis() * u128::from(FLOOR_PER_SEC) / 1_000;
    u64::try_from(steps).unwrap_or(u64::MAX)
}

impl fmt::Display for Ballot {
    /// `counter.ordinal`, e.g. `1700000001.2`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.counter, self.ordinal)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn order_is_counter_then_ordinal() {
        let a = Ballot::new(5, 9).unwrap();
        let b = Ballot::new(6, 0).unwrap();
        let c = Ballot::new(6, 1).unwrap();
        assert!(a < b && b < c);
        assert!(Ballot::ZERO < a);
        assert!(a.as_u64() < b.as_u64() && b.as_u64() < c.as_u64());
    }

    #[test]
    fn number_form_is_counter_shifted_by_16_or_ordinal() {
        let b = Ballot::new(0x1234, 0xabcd).unwrap();
        assert_eq!(b.as_u64(), 0x1234_abcd);
        assert_eq!(Ballot::from_u64(0x1234_abcd), Some(b));
        assert_eq!(Ballot::ZERO.as_u64(), 0);
    }

    #[test]
    fn the_largest_ballot_is_below_two_to_the_53() {
        let max = Ballot::new(MAX_COUNTER, u16::MAX).unwrap();
        assert_eq!(max.as_u64(), NUMBER_LIMIT - 1);
        assert_eq!(NUMBER_LIMIT, 1 << 53);
        assert_eq!(Ballot::from_u64(NUMBER_LIMIT - 1), Some(max));
        assert_eq!(Ballot::from_u64(NUMBER_LIMIT), None);
        assert_eq!(Ballot::from_u64(u64::MAX), None);
        assert_eq!(Ballot::new(MAX_COUNTER + 1, 0), None);
        // Exactly representable as an f64, as JSON readers parse it.
        assert_eq!((max.as_u64() as f64) as u64, max.as_u64());
    }

    #[test]
    fn number_form_round_trips() {
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let n = x % NUMBER_LIMIT;
            assert_eq!(Ballot::from_u64(n).unwrap().as_u64(), n);
        }
    }

    #[test]
    fn next_is_one_above_the_largest_of_promised_seen_and_wall_clock() {
        let b = |c| Ballot::new(c, 7).unwrap();
        assert_eq!(Ballot::next(b(10), b(3), 5, 2), Ballot::new(11, 2));
        assert_eq!(Ballot::next(b(10), b(30), 5, 2), Ballot::new(31, 2));
        assert_eq!(
            Ballot::next(b(10), b(30), 1_700_000_000, 2),
            Ballot::new(1_700_000_001, 2)
        );
        assert_eq!(
            Ballot::next(Ballot::ZERO, Ballot::ZERO, 0, 0),
            Ballot::new(1, 0)
        );
    }

    #[test]
    fn the_wall_floor_steps_sixteen_times_a_second_and_lasts_past_2200() {
        assert_eq!(wall_floor(Duration::from_millis(62)), 0);
        assert_eq!(wall_floor(Duration::from_millis(63)), 1);
        assert_eq!(wall_floor(Duration::from_secs(10)), 160);
        // 2200-01-01 still fits the counter; renewals twice a second for a
        // day stay below one day of floor.
        let year_2200 = Duration::from_secs(7_258_118_400);
        assert!(wall_floor(year_2200) < MAX_COUNTER);
        assert!(2 * 86_400 < wall_floor(Duration::from_secs(86_400)));
        assert_eq!(wall_floor(Duration::MAX), u64::MAX);
    }

    #[test]
    fn next_is_above_both_inputs_whatever_their_ordinals() {
        let promised = Ballot::new(10, u16::MAX).unwrap();
        let next = Ballot::next(promised, Ballot::ZERO, 0, 0).unwrap();
        assert!(next > promised);
    }

    #[test]
    fn next_refuses_to_overflow_the_counter() {
        let max = Ballot::new(MAX_COUNTER, 0).unwrap();
        assert_eq!(Ballot::next(max, Ballot::ZERO, 0, 1), None);
        assert_eq!(Ballot::next(Ballot::ZERO, Ballot::ZERO, u64::MAX, 1), None);
        assert_eq!(
            Ballot::next(Ballot::ZERO, Ballot::ZERO, MAX_COUNTER - 1, 1),
            Ballot::new(MAX_COUNTER, 1)
        );
    }

    #[test]
    fn displays_as_counter_dot_ordinal() {
        assert_eq!(Ballot::new(42, 3).unwrap().to_string(), "42.3");
    }
}
