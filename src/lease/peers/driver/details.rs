//! What `GET /leases/NAME` shows of a `peers` lease besides the view
//! (`"details"`): ballots, the own acceptor's state, and how each peer
//! looks from here. For people diagnosing a cluster; nothing reads it back.

use serde_json::{json, Value};

use super::LastRound;
use crate::lease::peers::acceptor::Acceptor;
use crate::lease::peers::proposer::Proposer;
use crate::lease::peers::transport::PeerStatus;
use crate::lease::peers::Millis;

/// What the details are made of, read at `now`.
pub(super) struct Snapshot<'a> {
    pub now: Millis,
    pub acceptor: &'a Acceptor,
    pub proposer: &'a Proposer,
    /// The last round this node started, and who answered it.
    pub last_round: Option<&'a LastRound>,
    pub peers: Vec<PeerStatus>,
    pub state_file: String,
}

/// The JSON object; durations in milliseconds from `now`.
pub(super) fn to_json(s: &Snapshot<'_>) -> Value {
    let members = s.acceptor.members();
    let durable = s.acceptor.durable();
    let after = |at: Millis| at.saturating_sub(s.now);
    let grant = s.acceptor.grant(s.now).map(|g| {
        json!({
            "owner": g.owner,
            "token": g.token,
            "remaining_ms": after(g.expires_at),
        })
    });
    let quarantine = s
        .acceptor
        .quarantine_until()
        .filter(|_| s.acceptor.is_quarantined(s.now));
    let peers: Vec<Value> = s
        .peers
        .iter()
        .map(|p| {
            json!({
                "id": p.id,
                "address": p.address,
                "connected": p.connected,
                "inbound": p.inbound,
                "rtt_ms": p.last_rtt.map(|d| d.as_secs_f64() * 1000.0),
                "queued": p.queued,
            })
        })
        .collect();
    json!({
        "members": members.ids(),
        "majority": members.majority(),
        "ballot": s.last_round.map(|r| r.ballot.as_u64()),
        "promised_by": s.last_round.map(|r| &r.promised),
        "accepted_by": s.last_round.map(|r| &r.accepted),
        "round_running": s.proposer.round_ballot().is_some(),
        "highest_seen": s.proposer.highest_seen().as_u64(),
        "next_attempt_in_ms": s.proposer.next_attempt().map(after),
        "promised": durable.promised.as_u64(),
        "max_ttl_ms": durable.max_ttl_ms,
        "grant": grant,
        "amnesiac": s.acceptor.is_amnesiac(),
        "quarantined": s.acceptor.is_quarantined(s.now),
        "quarantine_remaining_ms": quarantine.map(after),
        "state_file": s.state_file,
        "peers": peers,
    })
}
