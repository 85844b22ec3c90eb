//! The keys this build parses and validates but cannot act on yet.

use std::path::Path;

use super::model::LeaseBackend;
use super::raw::RawConfig;
use super::validate::Diags;
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
    for (name, lease) in raw.leases.iter().flat_map(|l| &l.0) {
        not_yet(
            lease.backend == Some(LeaseBackend::Peers),
            format!("leases.{name}.backend"),
            "the peers lease backend (`backend: peers`)",
        );
    }
    d.list
}
