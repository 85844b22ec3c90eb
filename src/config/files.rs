//! The files a valid configuration names: certificates, keys and CA bundles
//! must exist, parse, match and be current, so `validate` catches what would
//! otherwise fail at start or at reload.

use std::path::Path;

use super::model::Config;
use super::validate::Diags;
use super::Diagnostic;
use crate::tls::{self, Which};

pub(super) fn check(file: &Path, config: &Config) -> Vec<Diagnostic> {
    let mut d = Diags::new(file);
    for (i, l) in config.listeners.iter().enumerate() {
        let Some(t) = &l.tls else { continue };
        let key = format!("listeners[{i}] ({}).tls", l.name);
        for (j, c) in t.certificates.iter().enumerate() {
            if let Err(e) = tls::check_certificate(&c.cert, &c.key) {
                d.error(format_args!("{key}.certificates[{j}].{}", e.which.key()), e);
            }
        }
        if let Some(ca) = &t.client_ca {
            if let Err(e) = tls::check_ca(Which::Ca, ca) {
                d.error(format_args!("{key}.client_ca"), e);
            }
        }
    }
    for u in &config.upstreams {
        let Some(t) = &u.tls else { continue };
        let key = format!("upstreams.{}.tls", u.name);
        if let Some(ca) = &t.ca {
            if let Err(e) = tls::check_ca(Which::Ca, ca) {
                d.error(format_args!("{key}.ca"), e);
            }
        }
        if let (Some(cert), Some(k)) = (&t.cert, &t.key) {
            if let Err(e) = tls::check_certificate(cert, k) {
                d.error(format_args!("{key}.{}", e.which.key()), e);
            }
        }
    }
    if let Some(c) = config.cluster.as_ref().filter(|_| config.uses_peers()) {
        if let Some(t) = &c.tls {
            // Loaded as the transport will: the own certificate must chain
            // to the CA and name this node, in both TLS roles.
            let peers: Vec<String> = c.peers.iter().map(|p| p.id.clone()).collect();
            if let Err(e) = tls::PeerTlsConfig::load(t, &c.node_id, &peers) {
                d.error(format_args!("cluster.tls.{}", e.which.key()), e);
            }
        }
    }
    d.list
}
