//! The keys this build parses and validates but cannot act on yet.

use std::path::Path;

use super::raw::RawConfig;
use super::validate::{item, Diags};
use super::Diagnostic;

/// Keys that parse and validate but whose feature this build lacks. Each is
/// refused when the user sets it; delete its line here when the feature lands.
pub(super) fn unsupported(raw: &RawConfig, file: &Path) -> Vec<Diagnostic> {
    let mut d = Diags::new(file);
    let mut not_yet = |set: bool, key: String, feature: &str| {
        if set {
            let why = "is not available in this build yet; remove this key";
            d.error(key, format_args!("{feature} {why}"));
        }
    };
    for (i, r) in raw.routes.iter().flatten().enumerate() {
        let key = item("routes", i, r.name.as_deref());
        not_yet(
            r.lease.is_some(),
            format!("{key}.lease"),
            "single-writer leasing",
        );
    }
    not_yet(
        raw.leases.is_some(),
        "leases".into(),
        "single-writer leasing",
    );
    not_yet(raw.cluster.is_some(), "cluster".into(), "peer coordination");
    not_yet(raw.etcd.is_some(), "etcd".into(), "the etcd lease backend");
    d.list
}
