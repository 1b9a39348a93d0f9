//! Known nodes across restarts: `STATE_DIR/nodes`, compact node entries
//! (26 bytes for IPv4, 38 for IPv6) each behind a one-byte length.

use std::path::Path;

use crate::id::Id;
use crate::krpc::compact::{read_peer, write_node, NodeInfo};

/// The file name inside the state directory.
pub const FILE: &str = "nodes";

/// Most nodes saved.
pub const MAX_SAVED: usize = 100_000;

/// Saves `nodes` (at most [`MAX_SAVED`]) atomically.
pub fn save(dir: &Path, nodes: &[NodeInfo]) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(nodes.len().min(MAX_SAVED) * 39);
    let mut entry = Vec::with_capacity(38);
    for n in nodes.iter().take(MAX_SAVED) {
        entry.clear();
        write_node(&mut entry, n);
        buf.push(entry.len() as u8);
        buf.extend_from_slice(&entry);
    }
    let path = dir.join(FILE);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &buf)?;
    std::fs::rename(&tmp, &path)
}

/// Loads saved nodes; a missing file is no nodes, a damaged tail is cut.
pub fn load(dir: &Path) -> std::io::Result<Vec<NodeInfo>> {
    let data = match std::fs::read(dir.join(FILE)) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    let mut rest = &data[..];
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len);
        if (len != 26 && len != 38) || tail.len() < len {
            break;
        }
        let (e, next) = tail.split_at(len);
        if let (Some(id), Some(addr)) = (Id::from_slice(&e[..20]), read_peer(&e[20..])) {
            out.push(NodeInfo { id, addr });
        }
        rest = next;
        if out.len() >= MAX_SAVED {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let dir = std::env::temp_dir().join(format!("dh-nodes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let nodes = vec![
            NodeInfo {
                id: Id([1; 20]),
                addr: "127.0.0.1:6881".parse().unwrap(),
            },
            NodeInfo {
                id: Id([2; 20]),
                addr: "[::1]:7000".parse().unwrap(),
            },
        ];
        save(&dir, &nodes).unwrap();
        assert_eq!(load(&dir).unwrap(), nodes);
        let mut data = std::fs::read(dir.join(FILE)).unwrap();
        data.truncate(data.len() - 3);
        std::fs::write(dir.join(FILE), &data).unwrap();
        assert_eq!(load(&dir).unwrap(), nodes[..1]);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(load(&dir).unwrap().is_empty());
    }
}
