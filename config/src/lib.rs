//! Routing config for the failover gateway: YAML in, validated [`GatewayConfig`] out.
//!
//! Loading is two layers: raw serde types (private to this crate) and validated model types
//! (public). Every problem found is reported with file, line, column, field path and a fix;
//! validation collects all problems instead of stopping at the first one.
//!
//! ```no_run
//! let config = gateway_config::load(std::path::Path::new("gateway.yaml"));
//! match config {
//!     Ok(c) => println!("{} routes", c.routes.len()),
//!     Err(e) => eprintln!("{e}"),
//! }
//! ```

pub mod diff;
mod error;
pub mod model;
mod raw;
mod source_map;
mod validate;
pub mod values;

use std::path::Path;

use sha2::{Digest, Sha256};

pub use diff::{diff, ConfigDiff};
pub use error::{ConfigError, ConfigIssue};
pub use model::*;
pub use source_map::Position;
pub use validate::DEFAULT_ADMIN_BIND;

use source_map::SourceMap;
use validate::Validator;

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<GatewayConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Validates config `text` as if read from `file` (relative paths in it start at `file`'s
/// directory).
pub fn parse(text: &str, file: &Path) -> Result<GatewayConfig, ConfigError> {
    let map = SourceMap::build(text);
    let mut validator = Validator::new(file, &map);

    let mut unknown = Vec::new();
    let deserializer = serde_yaml::Deserializer::from_str(text);
    let parsed: Result<raw::RawConfig, _> =
        serde_ignored::deserialize(deserializer, |path| unknown.push(ignored_path(&path)));
    for path in &unknown {
        validator.err_key(
            path,
            format!(
                "unknown field `{}`",
                path.rsplit('.').next().unwrap_or(path)
            ),
            "remove it or correct its spelling (`gateway schema` lists every field)",
        );
    }
    let raw = match parsed {
        Ok(raw) => raw,
        Err(e) => {
            validator.issues.push(serde_issue(file, &e));
            return Err(ConfigError::Invalid(validator.issues));
        }
    };
    let hash = hex_prefix(&Sha256::digest(text.as_bytes()), 8);
    let config = validator.config(raw, file.to_path_buf(), hash);
    if validator.issues.is_empty() {
        Ok(config)
    } else {
        validator.issues.sort_by_key(|i| (i.line, i.column));
        Err(ConfigError::Invalid(validator.issues))
    }
}

/// The JSON Schema of the config file format.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(raw::RawConfig)).unwrap_or_default()
}

fn hex_prefix(bytes: &[u8], n: usize) -> String {
    bytes.iter().take(n).map(|b| format!("{b:02x}")).collect()
}

/// Renders a serde_ignored path in the validator's format: `routes[0].match.host`.
fn ignored_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path as P;
    match path {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        P::Map { parent, key } => {
            let parent = ignored_path(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            ignored_path(parent)
        }
    }
}

/// A syntax or type error from serde_yaml, which stops parsing.
fn serde_issue(file: &Path, e: &serde_yaml::Error) -> ConfigIssue {
    let (line, column) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((1, 1));
    let full = e.to_string();
    // serde_yaml renders "path: message at line L column C"; position is reported separately.
    let message = match full.rfind(" at line ") {
        Some(cut) => full[..cut].to_string(),
        None => full,
    };
    let (path, message) = match message.split_once(": ") {
        Some((p, m)) if !p.contains(' ') => (p.to_string(), m.to_string()),
        _ => (String::new(), message),
    };
    ConfigIssue {
        file: file.to_path_buf(),
        line,
        column,
        path,
        message,
        fix: "fix the YAML syntax or the value's type (`gateway schema` gives every field's type)"
            .into(),
    }
}

#[cfg(test)]
mod tests;
