//! Deliberate bugs for the model checker (LEASES.md §6b): each field breaks
//! one rule of §3 at the very spot where the correct rule lives, so
//! `tests/model_check.rs` can show that the checker finds a counterexample
//! to G1 or G2 for every rule the safety argument (§3.7) leans on. A checker
//! that cannot fail proves nothing.
//!
//! Production never sets them: [`Faults::default`] is the correct protocol,
//! and only [`Acceptor::set_faults`](super::acceptor::Acceptor::set_faults)
//! and [`Proposer::set_faults`](super::proposer::Proposer::set_faults)
//! change it.

/// Which rules to break. All `false` (the default) is the real protocol.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Faults {
    /// Acceptor, §3.3.3: accept a `Propose` over another tenure's live
    /// grant (the PaxosLease paper's overwrite; audit rule A2 forbids it).
    pub overwrite_live_grant: bool,
    /// Proposer, §3.4.6: count `D` from the instant the `Accepted` quorum
    /// completes instead of from `t0`, read before the `Prepare` went out.
    pub deadline_from_accept_quorum: bool,
    /// Acceptor, §3.3.4: a `Release` clears any live grant of its owner,
    /// whatever the token.
    pub owner_only_release: bool,
    /// Proposer, §3.4.3: count every reply message, so a duplicated answer
    /// counts twice, instead of one vote per distinct node id.
    pub count_messages_not_nodes: bool,
    /// §3.6: a restart keeps `max_ttl` but forgets `promised`. Carried out
    /// by whoever restarts the acceptor (the model's restart action), since
    /// a restart is a new [`Acceptor`](super::acceptor::Acceptor).
    pub forget_promise_on_restart: bool,
    /// §3.6: quarantine after a restart for less than `D·(1+ρ)/(1−ρ)`.
    /// Carried out by whoever restarts the acceptor, like
    /// `forget_promise_on_restart`; only the restarter knows `ρ`.
    pub short_quarantine: bool,
    /// Proposer, §1: use the whole `T` as `D`, ignoring clock drift.
    pub d_equals_t: bool,
    /// Not a bug: the proposer goes on with any majority of `Promise`s,
    /// open or not. §3.4.4 is a liveness filter and §3.7 does not rely on
    /// it, so the model checks the protocol without it; with it, the filter
    /// would hide the overwrite and per-message-counting bugs.
    pub ignore_open_filter: bool,
}
