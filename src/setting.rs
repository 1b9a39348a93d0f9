//! What every setting's check shares, whichever subsystem owns the
//! setting: the error that names the key at fault, and secrets read from
//! files. A leaf module, so that the configuration (which builds every
//! subsystem's settings) and the subsystems that check their own (the web
//! server's credentials) both use it without depending on each other.

use std::path::{Path, PathBuf};

/// A configuration problem, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (unknown key, wrong type).
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, which names the key and line.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid {key}: {message}")]
    Invalid {
        /// The key or flag.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Reads a secret (a URL with a password, an API key, `user:password`)
/// from the first line of `path`, trimmed; `key` names the setting in
/// errors and `what` the secret in the warning given when others than the
/// file's owner may read it. The contents never appear in an error.
pub fn read_secret_file(path: &Path, key: &'static str, what: &str) -> Result<String, ConfigError> {
    let read_err = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(read_err)?;
    let secret = text.lines().next().unwrap_or("").trim().to_string();
    if secret.is_empty() {
        return Err(ConfigError::Invalid {
            key,
            message: format!("{} is empty", path.display()),
        });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                log::warn!(
                    "{} holds {what} but others than its owner may read it (chmod 600)",
                    path.display()
                );
            }
        }
    }
    Ok(secret)
}
