//! Config errors: each names the file, line, column, field path and a fix.

use std::fmt;
use std::path::PathBuf;

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Field path such as `routes[0].regions[1]`.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// What would fix it.
    pub fix: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}\n    fix: {}",
            self.file.display(),
            self.line,
            self.column,
            if self.path.is_empty() {
                "(document)"
            } else {
                &self.path
            },
            self.message,
            self.fix
        )
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read config file: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is invalid; every problem found is listed.
    #[error("{}", render_issues(.0))]
    Invalid(Vec<ConfigIssue>),
}

impl ConfigError {
    /// The issues, if the config was invalid.
    pub fn issues(&self) -> &[ConfigIssue] {
        match self {
            Self::Invalid(issues) => issues,
            Self::Read { .. } => &[],
        }
    }
}

fn render_issues(issues: &[ConfigIssue]) -> String {
    let mut out = String::new();
    for (i, issue) in issues.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&issue.to_string());
    }
    out.push_str(&format!(
        "\n{} error{} in config",
        issues.len(),
        if issues.len() == 1 { "" } else { "s" }
    ));
    out
}
