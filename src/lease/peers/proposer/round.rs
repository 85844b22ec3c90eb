//! One round's bookkeeping (§3.4.3-4): which replies count, and whether a
//! majority said yes, may still, or cannot.

use std::collections::BTreeMap;

use crate::lease::peers::ballot::Ballot;
use crate::lease::peers::faults::Faults;
use crate::lease::peers::members::Members;
use crate::lease::peers::messages::{GrantInfo, Message};
use crate::lease::peers::Millis;

/// This node's tenure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Tenure {
    pub(super) token: u64,
    pub(super) valid_until: Millis,
    /// `t0` of the last successful round, which the next renewal counts from.
    pub(super) last_t0: Millis,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Phase {
    Prepare,
    Propose,
}

/// One node's answer in the current phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Vote {
    /// An open promise, or an acceptance.
    Yes,
    /// Refused, or not open, because of a grant that lasts this much more.
    Blocked(Millis),
    /// Refused for a higher ballot.
    No,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Round {
    pub(super) ballot: Ballot,
    /// Read before the Prepare was sent; the tenure's `D` counts from here.
    pub(super) t0: Millis,
    pub(super) deadline: Millis,
    pub(super) renewing: bool,
    pub(super) token: u64,
    pub(super) phase: Phase,
    /// The first answer of each node in this phase.
    pub(super) votes: BTreeMap<String, Vote>,
    /// The proposer's deliberate bugs (model checking only).
    pub(super) faults: Faults,
}

/// Where a round's current phase stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Not decided yet.
    Pending,
    /// A majority said yes.
    Won,
    /// A majority of yes is out of reach; retry after this long if waiting
    /// for reported grants to run out would help.
    Lost { wait: Option<Millis> },
}

impl Round {
    /// Counts `reply` from `from`: only for this ballot and phase, and only
    /// the first from each node. Whether it counted.
    pub(super) fn count(
        &mut self,
        from: &str,
        reply: &Message,
        me: &str,
        tenure: Option<Tenure>,
        at: Millis,
    ) -> bool {
        let (ballot, phase, vote) = match reply {
            Message::Promise { ballot, grant } => {
                (*ballot, Phase::Prepare, open(self, tenure, me, at, grant))
            }
            Message::Accepted { ballot } => (*ballot, Phase::Propose, Vote::Yes),
            // A refusal counts in whichever phase the round is: an acceptor
            // that refused the Prepare refuses the Propose of that ballot too.
            Message::Nack { ballot, held, .. } => {
                let vote = held
                    .as_ref()
                    .map_or(Vote::No, |h| Vote::Blocked(h.remaining_ms));
                (*ballot, self.phase, vote)
            }
            _ => return false,
        };
        if ballot != self.ballot || phase != self.phase {
            return false;
        }
        // One vote per distinct node id. The `count_messages_not_nodes`
        // fault counts a repeated answer again, under a key of its own.
        if self.votes.contains_key(from) {
            if !self.faults.count_messages_not_nodes {
                return false;
            }
            let key = format!("{from}#{}", self.votes.len());
            self.votes.insert(key, vote);
            return true;
        }
        self.votes.insert(from.to_owned(), vote);
        true
    }

    /// Won once a majority of all members said yes; lost once too many
    /// refused or are blocked for that to happen. A loss waits, if it can,
    /// until just enough of the blocking grants will have run out (§3.4.4).
    pub(super) fn outcome(&self, members: &Members) -> Outcome {
        let majority = members.majority();
        let yes = self.votes.values().filter(|v| **v == Vote::Yes).count();
        if yes >= majority {
            return Outcome::Won;
        }
        let mut blocked: Vec<Millis> = self
            .votes
            .values()
            .filter_map(|v| match v {
                Vote::Blocked(ms) => Some(*ms),
                _ => None,
            })
            .collect();
        let no = self.votes.values().filter(|v| **v == Vote::No).count();
        let possible = members.len().saturating_sub(blocked.len() + no);
        if possible >= majority {
            return Outcome::Pending;
        }
        blocked.sort_unstable();
        // Waiting helps once `need` of the blocking grants are gone.
        let need = majority - possible;
        Outcome::Lost {
            wait: blocked.get(need.saturating_sub(1)).copied(),
        }
    }

    /// Moves to phase 2; the phase-1 answers no longer count.
    pub(super) fn start_proposing(&mut self) {
        self.phase = Phase::Propose;
        self.votes.clear();
    }
}

/// §3.4.4: a Promise is open if it reports no grant, or this very tenure
/// while renewing it and still valid. Anything else blocks for as long as
/// the acceptor will keep the grant. (The model checker's
/// `ignore_open_filter` takes every Promise as open: safety must not need
/// this filter, §3.7.)
pub(super) fn open(
    round: &Round,
    tenure: Option<Tenure>,
    me: &str,
    at: Millis,
    grant: &Option<GrantInfo>,
) -> Vote {
    match grant {
        None => Vote::Yes,
        Some(_) if round.faults.ignore_open_filter => Vote::Yes,
        Some(g)
            if round.renewing
                && g.owner == me
                && g.token == round.token
                && tenure.is_some_and(|t| t.token == round.token && at < t.valid_until) =>
        {
            Vote::Yes
        }
        Some(g) => Vote::Blocked(g.remaining_ms),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::lease::peers::messages::Held;

    fn round() -> Round {
        Round {
            ballot: Ballot::new(9, 0).unwrap(),
            t0: 0,
            deadline: 2_000,
            renewing: false,
            token: 9 << 16,
            phase: Phase::Propose,
            votes: BTreeMap::new(),
            faults: Faults::default(),
        }
    }

    fn nack(held_ms: Option<Millis>) -> Message {
        Message::Nack {
            ballot: Ballot::new(9, 0).unwrap(),
            promised: Ballot::new(9, 0).unwrap(),
            held: held_ms.map(|remaining_ms| Held {
                owner: "x".into(),
                token: 1,
                remaining_ms,
            }),
        }
    }

    #[test]
    fn a_loss_waits_for_the_first_blocking_grant_to_go() {
        let five = Members::new("a", ["b", "c", "d", "e"]).unwrap();
        let mut r = round();
        for (from, held) in [("b", Some(3_000)), ("c", None)] {
            assert!(r.count(from, &nack(held), "a", None, 0));
            assert_eq!(r.outcome(&five), Outcome::Pending);
        }
        // Checked after every answer, so a loss is always one short.
        assert!(r.count("d", &nack(Some(2_000)), "a", None, 0));
        assert_eq!(r.outcome(&five), Outcome::Lost { wait: Some(2_000) });
    }

    #[test]
    fn a_loss_by_several_waits_for_just_enough_blocking_grants() {
        let five = Members::new("a", ["b", "c", "d", "e"]).unwrap();
        let mut r = round();
        for (from, vote) in [
            ("b", Vote::Blocked(3_000)),
            ("c", Vote::Blocked(1_000)),
            ("d", Vote::No),
            ("e", Vote::Blocked(2_000)),
        ] {
            r.votes.insert(from.into(), vote);
        }
        // 5 − 3 blocked − 1 refused = 1 possible of 3 needed: two of the
        // three grants must go, the second shortest after 2 s.
        assert_eq!(r.outcome(&five), Outcome::Lost { wait: Some(2_000) });
    }

    #[test]
    fn a_loss_to_higher_ballots_alone_cannot_wait() {
        let three = Members::new("a", ["b", "c"]).unwrap();
        let mut r = round();
        r.count("b", &nack(None), "a", None, 0);
        r.count("c", &nack(None), "a", None, 0);
        assert_eq!(r.outcome(&three), Outcome::Lost { wait: None });
    }

    #[test]
    fn only_the_first_answer_of_a_node_in_a_phase_counts() {
        let three = Members::new("a", ["b", "c"]).unwrap();
        let mut r = round();
        let accepted = Message::Accepted {
            ballot: Ballot::new(9, 0).unwrap(),
        };
        assert!(r.count("b", &accepted, "a", None, 0));
        assert!(!r.count("b", &accepted, "a", None, 0));
        assert!(!r.count("b", &nack(None), "a", None, 0));
        assert_eq!(r.outcome(&three), Outcome::Pending);
        assert!(r.count("a", &accepted, "a", None, 0));
        assert_eq!(r.outcome(&three), Outcome::Won);
    }
}
