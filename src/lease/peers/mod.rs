//! The `peers` backend (LEASES.md §3): PaxosLease among the sidecars
//! themselves, with promises persisted so fencing tokens grow across
//! restarts.
//!
//! The protocol lives in pure state machines that read no clock and do no
//! I/O, so every rule can be tested at its boundary and a model checker can
//! drive them:
//!
//! - [`ballot`]: ballots `(counter, ordinal)` and how the next one is picked.
//! - [`members`]: the static member list, ordinals and the majority.
//! - [`messages`]: the protocol messages and their versioned binary codec.
//! - [`state`]: the acceptor's state file (`peers-NAME.state`), checksummed
//!   and written atomically; the one part that touches the disk.
//! - [`acceptor`]: one lease's acceptor (§3.3, §3.6).
//! - [`proposer`]: one lease's proposer and this node's view of the lease
//!   (§3.4, §3.5).
//! - [`transport`]: mutual-TLS frames between the members (§3.8).
//! - [`driver`]: the backend task around the machines (clock, state file,
//!   transport, view), and the one transport a process shares.
//!
//! Time inside the machines is [`Millis`]: milliseconds on this node's lease
//! clock since an origin the driver picks (its start). A plain integer keeps
//! the machines `Hash + Eq` for model checking and makes every comparison
//! exact; the driver converts `tokio::time::Instant`s (rounding `now` down,
//! which shortens rather than lengthens what the holder may use; the one
//! millisecond this can take off an acceptor's memory of a grant is inside
//! the 5 ms slack `ε` of [`crate::lease::validity`]).

pub mod acceptor;
pub mod ballot;
pub mod driver;
pub mod faults;
pub mod members;
pub mod messages;
pub mod proposer;
pub mod state;
#[cfg(test)]
mod tests;
pub mod transport;

/// A lease-clock reading or a span of it, in milliseconds (see the module
/// documentation for why not `Instant`).
pub type Millis = u64;
