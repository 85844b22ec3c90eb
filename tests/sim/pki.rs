//! The members' certificates for the simulation: the shared test PKI
//! (`tests/common/pki.rs`), one certificate per member (DNS SAN = its id),
//! made once per test function (key generation is the slow part).

use std::collections::HashMap;

use breakwater::config::PeerTls;

use super::IDS;

// Not every helper of the shared PKI is used here.
#[allow(dead_code)]
#[path = "../common/pki.rs"]
mod shared;

/// The CA and each member's `cluster.tls`.
pub struct Pki {
    /// Keeps the files alive.
    _ca: shared::Pki,
    tls: HashMap<&'static str, PeerTls>,
}

impl Pki {
    pub fn new() -> Self {
        let ca = shared::Pki::new("sim-ca");
        let tls = IDS.iter().map(|id| (*id, ca.node(id))).collect();
        Self { _ca: ca, tls }
    }

    /// Member `id`'s `cluster.tls`.
    pub fn tls(&self, id: &str) -> PeerTls {
        self.tls
            .get(id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} is not a member"))
    }
}
