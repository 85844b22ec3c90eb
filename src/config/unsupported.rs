//! The keys this build parses and validates but cannot act on yet.

use std::path::Path;

use super::raw::RawConfig;
use super::Diagnostic;

/// Keys that parse and validate but whose feature this build lacks. Each is
/// refused when the user sets it, with `"FEATURE is not available in this
/// build yet; remove this key"`; delete its check here when the feature
/// lands. Every feature of SPEC §7 is available now, so nothing is refused.
pub(super) fn unsupported(_raw: &RawConfig, _file: &Path) -> Vec<Diagnostic> {
    Vec::new()
}
