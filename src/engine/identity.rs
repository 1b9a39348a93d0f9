//! Node ids that survive restarts.
//!
//! An ip:port must not change its id without cause: libtorrent evicts a
//! confirmed node whose id changes, so a crawler that picks a fresh id at
//! every start throws away the reputation it built in other nodes' tables.
//! Ids are kept in `STATE_DIR/identities`, one line per ip:port:
//! `ADDR HEX40`.
//!
//! * `bep42`: one id per configured bind address, shared by every shard.
//!   A bind with port 0 is kept under port 0 (as configured). A bind on a
//!   specific public address gets a BEP 42 id for it at once; a wildcard
//!   or private bind starts with a random id until the nodes that answer us
//!   have voted on our external address (`crate::dht::vote`), and the
//!   node then moves to a BEP 42 id for that address, which
//!   [`save_id`] writes over the bind's line: the one cause for an id to
//!   change, as in libtorrent (BEP 42 ties the id to the address). A
//!   restart begins with it, and keeps it as long as the vote finds the
//!   same address.
//! * `spread`: one id per shard and bind address, drawn uniformly inside
//!   the shard's slice of the keyspace and kept under the address that
//!   shard binds, port + shard (see `shards::udp::spread_addr`). A bind
//!   with port 0 gets a fresh id in the slice at every start and nothing
//!   is saved for it: its ports change at every start anyway, so there is
//!   no ip:port to keep an id for. An id already saved for an ip:port is
//!   kept even when it lies outside the shard's slice (saved by a `bep42`
//!   run, or with another shard count or keyspace): an ip:port never
//!   changes its id; a warning says which line to delete to draw a new one.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::config::IdentityMode;
use crate::id::{bep42_exempt, bep42_id, Id};
use crate::keyspace::Slice;
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
    /// The spread mode's ports (port + shard) do not fit.
    #[error("identity mode spread: {0}")]
    Ports(#[from] shards::udp::UdpBindError),
}

/// The file name inside the state directory.
pub const FILE: &str = "identities";

/// Loads the ids of `binds` from `dir`, creating (and saving) the missing
/// ones, for `shards` shards of `slice` (this machine's keyspace slice).
/// Returns one list per shard, each with one id per bind address in
/// `binds` order: the same list for every shard in `bep42` mode, each
/// shard's own ids (inside `slice.part(shard, shards)`) in `spread` mode.
pub fn load_or_create_identities(
    dir: &Path,
    binds: &[SocketAddr],
    mode: IdentityMode,
    slice: Slice,
    shards: usize,
) -> Result<Vec<Vec<Id>>, IdentityError> {
    let path = dir.join(FILE);
    let mut known = read_known(&path)?;
    let mut rng = Rng::from_entropy();
    let mut changed = false;
    let mut lookup = |addr: SocketAddr, fresh: &mut dyn FnMut(&mut Rng) -> Id| {
        if let Some((_, id)) = known.iter().find(|(a, _)| *a == addr) {
            return *id;
        }
        let id = fresh(&mut rng);
        known.push((addr, id));
        changed = true;
        id
    };
    let out = match mode {
        IdentityMode::Bep42 => {
            let row: Vec<Id> = binds
                .iter()
                .map(|b| lookup(*b, &mut |rng: &mut Rng| fresh_id(b.ip(), rng)))
                .collect();
            vec![row; shards]
        }
        IdentityMode::Spread => {
            let mut out = Vec::with_capacity(shards);
            for shard in 0..shards {
                let part = slice.part(shard, shards);
                let mut row = Vec::with_capacity(binds.len());
                for b in binds {
                    if b.port() == 0 {
                        // Not saved: the port changes at every start.
                        let mut r = Rng::from_entropy();
                        row.push(part.random_id(&mut r));
                        continue;
                    }
                    let addr = shards::udp::spread_addr(*b, shard, shards)?;
                    let id = lookup(addr, &mut |rng: &mut Rng| part.random_id(rng));
                    if !part.contains(&id) {
                        log::warn!(
                            "{}: the id of {addr} ({id}) is outside shard {shard}'s slice; \
                             kept, since an ip:port must not change its id (delete its line \
                             to draw a new one inside the slice)",
                            path.display()
                        );
                    }
                    row.push(id);
                }
                out.push(row);
            }
            out
        }
    };
    if changed {
        write_known(&path, &known)?;
    }
    Ok(out)
}

/// Saves `id` as the id of bind address `addr` (as configured), replacing
/// the line it had: the node moved to a BEP 42 id for its voted external
/// address. Other lines are kept as they are.
pub fn save_id(dir: &Path, addr: SocketAddr, id: Id) -> Result<(), IdentityError> {
    let path = dir.join(FILE);
    let mut known = read_known(&path)?;
    match known.iter_mut().find(|(a, _)| *a == addr) {
        Some((_, old)) if *old == id => return Ok(()),
        Some((_, old)) => *old = id,
        None => known.push((addr, id)),
    }
    write_known(&path, &known)
}

/// Writes the `(ADDR, id)` pairs atomically (a temporary file renamed).
fn write_known(path: &Path, known: &[(SocketAddr, Id)]) -> Result<(), IdentityError> {
    let mut text = String::from("# DHT-Hunter node ids: ADDR HEX40. Keep them stable.\n");
    for (a, id) in known {
        text.push_str(&format!("{a} {id}\n"));
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| IdentityError::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// The saved `(ADDR, id)` pairs, in file order (none when there is no file).
fn read_known(path: &Path) -> Result<Vec<(SocketAddr, Id)>, IdentityError> {
    let mut known: Vec<(SocketAddr, Id)> = Vec::new();
    match std::fs::read_to_string(path) {
        Ok(text) => {
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let err = |message: String| IdentityError::Parse {
                    path: path.to_path_buf(),
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
        Err(source) => {
            return Err(IdentityError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    }
    Ok(known)
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

    fn load(dir: &Path, binds: &[SocketAddr], mode: IdentityMode, n: usize) -> Vec<Vec<Id>> {
        load_or_create_identities(dir, binds, mode, Slice::full(), n).unwrap()
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dh-ids-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn ids_persist_and_new_binds_are_added() {
        let dir = temp_dir("bep42");
        let a: SocketAddr = "127.0.0.1:6881".parse().unwrap();
        let b: SocketAddr = "[::1]:6881".parse().unwrap();
        let first = load(&dir, &[a], IdentityMode::Bep42, 1);
        let again = load(&dir, &[a, b], IdentityMode::Bep42, 3);
        assert_eq!(again.len(), 3, "one list per shard");
        assert!(again.iter().all(|r| *r == again[0]), "shared by all shards");
        assert_eq!(first[0][0], again[0][0]);
        let third = load(&dir, &[b, a], IdentityMode::Bep42, 1);
        assert_eq!(third[0], vec![again[0][1], again[0][0]]);
        std::fs::write(dir.join(FILE), "garbage\n").unwrap();
        let e = load_or_create_identities(&dir, &[a], IdentityMode::Bep42, Slice::full(), 1)
            .unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn spread_ids_lie_in_their_shards_slices_and_stay() {
        let dir = temp_dir("spread");
        let machine = Slice::parse_spec("1/2").unwrap();
        let a: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let b: SocketAddr = "[::1]:7100".parse().unwrap();
        let ids =
            load_or_create_identities(&dir, &[a, b], IdentityMode::Spread, machine, 4).unwrap();
        assert_eq!(ids.len(), 4);
        for (s, row) in ids.iter().enumerate() {
            assert_eq!(row.len(), 2);
            for id in row {
                assert!(machine.part(s, 4).contains(id), "shard {s}: {id}");
            }
        }
        // Saved under port + shard, one line each.
        let text = std::fs::read_to_string(dir.join(FILE)).unwrap();
        for s in 0..4u16 {
            let i = usize::from(s);
            assert!(
                text.contains(&format!("127.0.0.1:{} {}", 7000 + s, ids[i][0])),
                "{text}"
            );
            assert!(
                text.contains(&format!("[::1]:{} {}", 7100 + s, ids[i][1])),
                "{text}"
            );
        }
        assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), 8);
        // Stable across reloads, and a bep42 run on port + 1 sees shard 1's id.
        let again =
            load_or_create_identities(&dir, &[a, b], IdentityMode::Spread, machine, 4).unwrap();
        assert_eq!(again, ids);
        let a1: SocketAddr = "127.0.0.1:7001".parse().unwrap();
        assert_eq!(load(&dir, &[a1], IdentityMode::Bep42, 1)[0][0], ids[1][0]);
        // With fewer shards, saved ids are kept even where the slices moved.
        let two = load_or_create_identities(&dir, &[a], IdentityMode::Spread, machine, 2).unwrap();
        assert_eq!(two, vec![vec![ids[0][0]], vec![ids[1][0]]]);
        assert_eq!(std::fs::read_to_string(dir.join(FILE)).unwrap(), text);
        // Ports past 65535 are an error.
        let top: SocketAddr = "127.0.0.1:65535".parse().unwrap();
        let e =
            load_or_create_identities(&dir, &[top], IdentityMode::Spread, machine, 2).unwrap_err();
        assert!(e.to_string().contains("65535"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn spread_port_zero_ids_are_fresh_and_not_saved() {
        let dir = temp_dir("spread0");
        let z: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let ids = load(&dir, &[z], IdentityMode::Spread, 3);
        for (s, row) in ids.iter().enumerate() {
            assert!(Slice::full().part(s, 3).contains(&row[0]));
        }
        assert!(!dir.join(FILE).exists(), "nothing saved for port 0");
        let again = load(&dir, &[z], IdentityMode::Spread, 3);
        assert_ne!(again, ids, "fresh at every start");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_voted_bep42_id_is_saved_and_survives_a_restart() {
        let dir = temp_dir("rekey");
        let wild: SocketAddr = "0.0.0.0:6881".parse().unwrap();
        let six: SocketAddr = "[::]:6881".parse().unwrap();
        let first = load(&dir, &[wild, six], IdentityMode::Bep42, 2);
        let external: IpAddr = "11.22.33.7".parse().unwrap();
        assert!(
            !crate::id::bep42_verify(&first[0][0], external),
            "a wildcard bind starts with a random id"
        );
        // The vote settled; the node moved to a BEP 42 id and saved it.
        let mut rng = Rng::seed_from_u64(5);
        let id = bep42_id(external, 3, &mut rng);
        save_id(&dir, wild, id).unwrap();
        // A restart begins with it, for every shard; the other line stays.
        let again = load(&dir, &[wild, six], IdentityMode::Bep42, 2);
        assert_eq!(again[0], vec![id, first[0][1]]);
        assert_eq!(again[1], again[0]);
        assert!(crate::id::bep42_verify(&again[0][0], external));
        // Saving the same id again changes nothing; an unknown bind is added.
        let before = std::fs::read_to_string(dir.join(FILE)).unwrap();
        save_id(&dir, wild, id).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join(FILE)).unwrap(), before);
        let other: SocketAddr = "0.0.0.0:7000".parse().unwrap();
        save_id(&dir, other, id).unwrap();
        assert_eq!(load(&dir, &[other], IdentityMode::Bep42, 1)[0][0], id);
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
