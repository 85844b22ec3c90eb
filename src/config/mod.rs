//! Configuration: YAML text → `raw` (serde, syntax and types) → `validate`
//! (meaning, defaults) → the typed `Config` in `model`.
//!
//! This is the only module that knows about serde_yaml. Every problem found
//! becomes a `Diagnostic` that names the file and either the line and column
//! (syntax, types, unknown keys, bad values) or the key's path (everything
//! that needs more than one value to judge). Semantic problems are all
//! collected in one pass, so a user fixes a file in one round.

mod coordination;
mod endpoints;
mod files;
mod matching;
pub mod model;
mod raw;
mod render;
mod resilience;
mod unsupported;
mod validate;
mod value;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};

pub use model::*;
pub use value::{format_duration, parse_duration};

/// Where `breakwater run` and `validate` look without `-c`.
pub const DEFAULT_PATH: &str = "config/breakwater.yaml";

/// The configuration used when no file is given: a single replica, no peers.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../config/breakwater.yaml");

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", Lines(diagnostics))]
    Invalid { diagnostics: Vec<Diagnostic> },
}

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub at: At,
    pub message: String,
}

/// Where in the file a problem is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum At {
    /// 1-based line and column.
    Position { line: usize, column: usize },
    /// A key path like `routes[2] (orders-write).upstream`.
    Key(String),
    /// The file as a whole.
    File,
}

impl fmt::Display for Diagnostic {
    /// `FILE:LINE:COL: message` or `FILE: PATH: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        match &self.at {
            At::Position { line, column } => write!(f, "{file}:{line}:{column}: {}", self.message),
            At::Key(path) => write!(f, "{file}: {path}: {}", self.message),
            At::File => write!(f, "{file}: {}", self.message),
        }
    }
}

/// Displays diagnostics one per line.
struct Lines<'a>(&'a [Diagnostic]);

impl fmt::Display for Lines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, diagnostic) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

/// Reads and parses the file at `path`.
pub fn load(path: &Path) -> Result<Config, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

/// Parses and validates `text`; `path_for_messages` only names the file in
/// diagnostics.
pub fn parse(path_for_messages: &Path, text: &str) -> Result<Config, Error> {
    let raw = parse_raw(path_for_messages, text)?;
    validate::validate(path_for_messages, raw).map_err(|diagnostics| Error::Invalid { diagnostics })
}

fn parse_raw(path_for_messages: &Path, text: &str) -> Result<raw::RawConfig, Error> {
    serde_yaml::from_str(text).map_err(|e| Error::Invalid {
        diagnostics: vec![syntax_diagnostic(path_for_messages, &e)],
    })
}

/// serde_yaml stops at its first error; it carries the position, which its
/// message also repeats, so the repetition is cut.
fn syntax_diagnostic(file: &Path, error: &serde_yaml::Error) -> Diagnostic {
    let mut message = error.to_string();
    let at = match error.location() {
        Some(location) => {
            let (line, column) = (location.line(), location.column());
            let suffix = format!(" at line {line} column {column}");
            if let Some(start) = message.find(&suffix) {
                message.replace_range(start..start + suffix.len(), "");
            }
            At::Position { line, column }
        }
        None => At::File,
    };
    Diagnostic {
        file: file.to_owned(),
        at,
        message,
    }
}
