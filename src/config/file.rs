//! Reading and writing a [`GuardConfig`] as TOML, with errors that name
//! the bad field by its path (`rules[2].window`) and its line.

use std::path::Path;

use crate::config::GuardConfig;

/// Why a configuration file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("cannot read {file}: {reason}")]
    Read {
        /// The file's path.
        file: String,
        /// What the system said.
        reason: String,
    },
    /// The text is not valid TOML, or a field is wrong.
    #[error("{}{}: {message}", if path.is_empty() { "configuration" } else { path }, line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    Field {
        /// The field's path, such as `rules[2].window`; empty for the
        /// whole file (a TOML syntax error).
        path: String,
        /// The 1-based line of the error, when known.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// The configuration holds something a file cannot: a hook (code) or a
    /// rule shared through a store.
    #[error("cannot write the configuration: {0}")]
    Write(String),
}

impl GuardConfig {
    /// Reads a configuration from TOML text; fields left out keep their
    /// defaults, unknown fields are refused (a typo is an error, not a
    /// silently ignored setting). See `examples/floodguard.toml`.
    ///
    /// ```
    /// use floodguard::config::{ConfigFileError, GuardConfig};
    ///
    /// let config = GuardConfig::from_toml(r#"
    ///     [[rules]]
    ///     name = "per-ip"
    ///     key = "ip"
    ///     rate = 20
    ///     period = "1s"
    ///     burst = 40
    /// "#)?;
    /// assert_eq!(config.rules[0].name(), "per-ip");
    ///
    /// let err = GuardConfig::from_toml("[[rules]]\nname = \"x\"\nkey = \"ip\"\nlimit = 5\nwindow = \"5 parsecs\"\n")
    ///     .unwrap_err();
    /// assert!(matches!(&err, ConfigFileError::Field { path, line: Some(5), .. } if path == "rules[0].window"), "{err}");
    /// # Ok::<(), ConfigFileError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ConfigFileError::Field`] with the bad field's path and line.
    /// A file that reads may still not build: [`GuardBuilder::build`](crate::http::GuardBuilder::build)
    /// and [`Guard::reload`](crate::http::Guard::reload) check the values.
    pub fn from_toml(text: &str) -> Result<Self, ConfigFileError> {
        let line_of = |span: Option<std::ops::Range<usize>>| {
            span.map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
        };
        let de = toml::Deserializer::parse(text).map_err(|e| ConfigFileError::Field {
            path: String::new(),
            line: line_of(e.span()),
            message: e.message().trim().to_owned(),
        })?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            ConfigFileError::Field {
                path: if path == "." { String::new() } else { path },
                line: line_of(inner.span()),
                message: inner.message().trim().to_owned(),
            }
        })
    }

    /// Reads a configuration from a TOML file; see
    /// [`from_toml`](Self::from_toml).
    ///
    /// # Errors
    ///
    /// [`ConfigFileError::Read`] when the file cannot be read, else as
    /// [`from_toml`](Self::from_toml).
    pub fn load(file: impl AsRef<Path>) -> Result<Self, ConfigFileError> {
        let file = file.as_ref();
        let text = std::fs::read_to_string(file).map_err(|e| ConfigFileError::Read {
            file: file.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::from_toml(&text)
    }

    /// Writes the configuration as TOML, every field spelled out.
    ///
    /// # Errors
    ///
    /// [`ConfigFileError::Write`] when the configuration holds a hook (a
    /// rule keyed or scoped by a closure, a challenge or criticality hook)
    /// or a rule shared through a store.
    pub fn to_toml(&self) -> Result<String, ConfigFileError> {
        toml::to_string(self).map_err(|e| ConfigFileError::Write(e.to_string()))
    }
}
