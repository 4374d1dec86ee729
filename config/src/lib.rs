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

pub mod defaults;
pub mod diff;
mod error;
pub mod model;
mod raw;
mod source_map;
mod validate;
pub mod values;

use std::net::SocketAddr;
use std::path::Path;

use sha2::{Digest, Sha256};

pub use diff::{diff, Change, ConfigDiff};
pub use error::{ConfigError, ConfigIssue};
pub use model::*;
pub use source_map::Position;
pub use validate::DEFAULT_ADMIN_BIND;
/// The workspace's one duration parser (`250ms`, `2s`, `1m30s`): config values, the admin API's
/// `?for=`, and the command lines of `loadtest` and the test bed.
pub use values::parse_duration;

use source_map::SourceMap;
use validate::Validator;

/// Sockets a running gateway bound at start. A reload cannot move them, so validating a reload
/// must judge the new config against them (see [`load_for_reload`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundSockets {
    /// The address the admin API listens on.
    pub admin: SocketAddr,
}

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<GatewayConfig, ConfigError> {
    let text = read(path)?;
    parse(&text, path)
}

/// Reads and validates the config file at `path` for a running gateway whose sockets are
/// `bound`: on top of [`load`]'s checks, a config that would leave the admin API that is
/// actually listening on a non-loopback address without a token is invalid (the error names
/// `admin.token_file`), even if its own `admin.bind` is loopback.
pub fn load_for_reload(path: &Path, bound: BoundSockets) -> Result<GatewayConfig, ConfigError> {
    let text = read(path)?;
    parse_with(&text, path, Some(bound))
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Validates config `text` as if read from `file` (relative paths in it start at `file`'s
/// directory).
pub fn parse(text: &str, file: &Path) -> Result<GatewayConfig, ConfigError> {
    parse_with(text, file, None)
}

fn parse_with(
    text: &str,
    file: &Path,
    bound: Option<BoundSockets>,
) -> Result<GatewayConfig, ConfigError> {
    let map = SourceMap::build(text);
    let mut validator = Validator::new(file, &map, bound);

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
    let mut config = validator.config(raw, file.to_path_buf(), String::new());
    config.files = std::mem::take(&mut validator.files);
    config.hash = config_hash(text, &config.files);
    config.warnings = std::mem::take(&mut validator.warnings);
    config.warnings.sort_by_key(|i| (i.line, i.column));
    if validator.issues.is_empty() {
        Ok(config)
    } else {
        validator.issues.sort_by_key(|i| (i.line, i.column));
        Err(ConfigError::Invalid(validator.issues))
    }
}

/// The JSON Schema of the config file format. Every field with a default states it; fields
/// whose absence means "none" (no TLS, no token, ...) have no `default`.
pub fn json_schema() -> serde_json::Value {
    let mut schema =
        serde_json::to_value(schemars::schema_for!(raw::RawConfig)).unwrap_or_default();
    drop_null_defaults(&mut schema);
    schema
}

/// Removes `"default": null` everywhere: serde's default of an `Option`, which means "absent".
fn drop_null_defaults(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            if map.get("default").is_some_and(serde_json::Value::is_null) {
                map.remove("default");
            }
            map.values_mut().for_each(drop_null_defaults);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_null_defaults),
        _ => {}
    }
}

/// The config hash: the YAML text and, for every referenced file, which field names it, its
/// path and its contents' digest.
fn config_hash(text: &str, files: &[ReferencedFile]) -> String {
    let mut h = Sha256::new();
    h.update(text.as_bytes());
    for f in files {
        h.update(b"\0file\0");
        h.update(f.field.as_bytes());
        h.update(b"\0");
        h.update(f.path.to_string_lossy().as_bytes());
        h.update(b"\0");
        h.update(f.sha256.as_bytes());
    }
    hex_prefix(&h.finalize(), 8)
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
