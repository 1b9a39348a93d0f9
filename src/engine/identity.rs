//! Node ids that survive restarts.
//!
//! An ip:port must never change its id: libtorrent evicts a confirmed node
//! whose id changes, so a crawler that picks a fresh id at every start
//! throws away the reputation it built in other nodes' tables. Ids are kept
//! in `STATE_DIR/identities`, one line per configured bind address:
//! `ADDR HEX40`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::config::IdentityMode;
use crate::id::{bep42_exempt, bep42_id, Id};
use crate::rng::Rng;

/// Why identities could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The file could not be read or written.
    #[error("identities file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not `ADDR HEX40`.
    #[error("identities file {path}, line {line}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The spread mode needs one port per shard, which the runtime does not
    /// bind yet.
    #[error("identity mode 'spread' is not supported yet; use bep42")]
    SpreadUnsupported,
}

/// The file name inside the state directory.
pub const FILE: &str = "identities";

/// Loads the ids of `binds` from `dir`, creating (and saving) the missing
/// ones.
pub fn load_or_create_identities(
    dir: &Path,
    binds: &[SocketAddr],
    mode: IdentityMode,
) -> Result<Vec<Id>, IdentityError> {
    if mode == IdentityMode::Spread {
        return Err(IdentityError::SpreadUnsupported);
    }
    let path = dir.join(FILE);
    let mut known: Vec<(SocketAddr, Id)> = Vec::new();
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let err = |message: String| IdentityError::Parse {
                    path: path.clone(),
                    line: i + 1,
                    message,
                };
                let (a, h) = line
                    .split_once(' ')
                    .ok_or_else(|| err("expected ADDR HEX40".into()))?;
                let addr: SocketAddr = a.parse().map_err(|e| err(format!("{a:?}: {e}")))?;
                let id: Id = h.trim().parse().map_err(|e| err(format!("{e}")))?;
                known.push((addr, id));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(IdentityError::Io { path, source }),
    }
    let mut rng = Rng::from_entropy();
    let mut changed = false;
    let mut out = Vec::with_capacity(binds.len());
    for b in binds {
        if let Some((_, id)) = known.iter().find(|(a, _)| a == b) {
            out.push(*id);
            continue;
        }
        let id = fresh_id(b.ip(), &mut rng);
        known.push((*b, id));
        out.push(id);
        changed = true;
    }
    if changed {
        let mut text = String::from("# DHT-Hunter node ids: ADDR HEX40. Keep them stable.\n");
        for (a, id) in &known {
            text.push_str(&format!("{a} {id}\n"));
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|source| IdentityError::Io {
                path: path.clone(),
                source,
            })?;
    }
    Ok(out)
}

/// A BEP 42 id when the bind address is a specific public one; otherwise a
/// random id (the external address is not known yet, and local addresses
/// are exempt from BEP 42).
fn fresh_id(ip: IpAddr, rng: &mut Rng) -> Id {
    if ip.is_unspecified() || bep42_exempt(ip) {
        Id::random(rng)
    } else {
        let r = rng.next_u64() as u8;
        bep42_id(ip, r, rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_persist_and_new_binds_are_added() {
        let dir = std::env::temp_dir().join(format!("dh-ids-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a: SocketAddr = "127.0.0.1:6881".parse().unwrap();
        let b: SocketAddr = "[::1]:6881".parse().unwrap();
        let first = load_or_create_identities(&dir, &[a], IdentityMode::Bep42).unwrap();
        let again = load_or_create_identities(&dir, &[a, b], IdentityMode::Bep42).unwrap();
        assert_eq!(first[0], again[0]);
        let third = load_or_create_identities(&dir, &[b, a], IdentityMode::Bep42).unwrap();
        assert_eq!(third, vec![again[1], again[0]]);
        std::fs::write(dir.join(FILE), "garbage\n").unwrap();
        let e = load_or_create_identities(&dir, &[a], IdentityMode::Bep42).unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
        assert!(load_or_create_identities(&dir, &[a], IdentityMode::Spread).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn public_binds_get_bep42_ids() {
        let mut rng = Rng::seed_from_u64(1);
        let ip: IpAddr = "124.31.75.21".parse().unwrap();
        let id = fresh_id(ip, &mut rng);
        assert!(crate::id::bep42_verify(&id, ip));
    }
}
