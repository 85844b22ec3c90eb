//! The static member list of the `peers` backend (LEASES.md §3.8): this node
//! and its peers. It fixes each node's ballot ordinal (its index in the
//! sorted list), the majority every quorum needs, and the digest that the
//! state file and `Hello` carry so that a changed list is noticed.

use super::messages::MAX_STRING;
use super::state::members_digest;

/// Why a member list cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembersError {
    /// An empty node id.
    #[error("a member id is empty")]
    Empty,
    /// A node id longer than a message field may be.
    #[error("member id {id:?}… is longer than {MAX_STRING} bytes")]
    TooLong { id: String },
    /// The same id twice (this node's id counts too).
    #[error("member id {id:?} is listed twice")]
    Duplicate { id: String },
    /// More members than a 16-bit ordinal can number.
    #[error("{count} members: at most 65536 are supported")]
    TooMany { count: usize },
}

/// This node and its peers, sorted by id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Members {
    ids: Vec<String>,
    me: u16,
}

impl Members {
    /// The members `me` and `peers` (`cluster.node_id` and the ids of
    /// `cluster.peers`).
    pub fn new<I, S>(me: &str, peers: I) -> Result<Members, MembersError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut ids: Vec<String> = std::iter::once(me.to_owned())
            .chain(peers.into_iter().map(Into::into))
            .collect();
        for id in &ids {
            if id.is_empty() {
                return Err(MembersError::Empty);
            }
            if id.len() > MAX_STRING {
                let id = id.chars().take(32).collect();
                return Err(MembersError::TooLong { id });
            }
        }
        ids.sort();
        if let Some(pair) = ids.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(MembersError::Duplicate {
                id: pair[0].clone(),
            });
        }
        let count = ids.len();
        let me = ids
            .iter()
            .position(|id| id == me)
            .and_then(|i| u16::try_from(i).ok());
        match me {
            Some(me) if count <= 1 << 16 => Ok(Members { ids, me }),
            _ => Err(MembersError::TooMany { count }),
        }
    }

    /// This node's id.
    pub fn me(&self) -> &str {
        self.ids
            .get(usize::from(self.me))
            .map_or("", String::as_str)
    }

    /// This node's ordinal, the low part of its ballots.
    pub fn my_ordinal(&self) -> u16 {
        self.me
    }

    /// The ordinal of `id`, if it is a member.
    pub fn ordinal(&self, id: &str) -> Option<u16> {
        self.ids
            .binary_search_by(|m| m.as_str().cmp(id))
            .ok()
            .and_then(|i| u16::try_from(i).ok())
    }

    /// Whether `id` is a member (this node included).
    pub fn contains(&self, id: &str) -> bool {
        self.ordinal(id).is_some()
    }

    /// Whether `id` is this node.
    pub fn is_me(&self, id: &str) -> bool {
        self.me() == id
    }

    /// How many members there are, this node included (`n`).
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Never true: this node is always a member. (For clippy's sake.)
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// `⌊n/2⌋ + 1`: the size of every quorum, and of the set of other
    /// members an amnesiac acceptor must hear from (§3.6).
    pub fn majority(&self) -> usize {
        self.ids.len() / 2 + 1
    }

    /// Every member id, sorted.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// Every member but this node.
    pub fn others(&self) -> impl Iterator<Item = &str> {
        let me = self.me();
        self.ids
            .iter()
            .map(String::as_str)
            .filter(move |id| *id != me)
    }

    /// The digest of the sorted id list ([`members_digest`]).
    pub fn digest(&self) -> u64 {
        members_digest(&self.ids)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn ordinals_are_indexes_in_the_sorted_list() {
        let m = Members::new("orders-1", ["orders-2", "orders-0"]).unwrap();
        assert_eq!(m.ids(), ["orders-0", "orders-1", "orders-2"]);
        assert_eq!(m.me(), "orders-1");
        assert_eq!(m.my_ordinal(), 1);
        assert_eq!(m.ordinal("orders-0"), Some(0));
        assert_eq!(m.ordinal("orders-2"), Some(2));
        assert_eq!(m.ordinal("orders-3"), None);
        assert_eq!(m.others().collect::<Vec<_>>(), ["orders-0", "orders-2"]);
    }

    #[test]
    fn every_node_computes_the_same_ordinals() {
        let a = Members::new("a", ["b", "c"]).unwrap();
        let c = Members::new("c", ["a", "b"]).unwrap();
        assert_eq!(a.ids(), c.ids());
        assert_eq!(a.digest(), c.digest());
        assert_eq!(c.my_ordinal(), 2);
    }

    #[test]
    fn majority_is_half_plus_one_of_all_members() {
        let sizes: Vec<usize> = (1..=6)
            .map(|n| {
                let peers: Vec<String> = (1..n).map(|i| format!("p{i}")).collect();
                Members::new("me", peers).unwrap().majority()
            })
            .collect();
        assert_eq!(sizes, [1, 2, 2, 3, 3, 4]);
    }

    #[test]
    fn bad_lists_are_refused() {
        assert_eq!(
            Members::new("a", ["b", "a"]),
            Err(MembersError::Duplicate { id: "a".into() })
        );
        assert_eq!(Members::new("", ["b"]), Err(MembersError::Empty));
        assert!(matches!(
            Members::new("a", ["x".repeat(MAX_STRING + 1)]),
            Err(MembersError::TooLong { .. })
        ));
        assert!(Members::new("a", ["x".repeat(MAX_STRING)]).is_ok());
    }
}
