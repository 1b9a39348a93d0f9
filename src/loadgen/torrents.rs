//! Synthetic torrents with real, varied info dictionaries: single-file and
//! multi-file, metadata from one piece up to several MiB, names in several
//! scripts.

use crate::bencode::Encoder;
use crate::id::Id;
use crate::rng::Rng;
use crate::wire::sha1_infohash;

/// One synthetic torrent.
#[derive(Debug, Clone)]
pub struct SynthTorrent {
    /// The bencoded info dictionary.
    pub info: Vec<u8>,
    /// SHA-1 of `info`.
    pub infohash: Id,
    /// `name`.
    pub name: String,
    /// Sum of file sizes.
    pub total_size: u64,
    /// `(path, size)`; the name for a single-file torrent.
    pub files: Vec<(String, u64)>,
}

const NAMES: [&str; 8] = [
    "Debian {} netinst",
    "日本語のトレント {}",
    "Café Müller — Pina Bausch {}",
    "Съешь же ещё этих мягких французских булок {}",
    "🎉 party mix {} 🎶",
    "Ελληνικά αρχεία {}",
    "数据集 {} 训练",
    "plain-ascii-dataset-{}",
];

/// Piece length as torrent makers choose it: a power of two giving about
/// 1500 pieces, between 16 KiB and 16 MiB.
fn piece_length(total: u64) -> u64 {
    (total / 1500)
        .max(1)
        .next_power_of_two()
        .clamp(16 << 10, 16 << 20)
}

/// Builds torrent number `i`. `large` makes a multi-file torrent whose info
/// dictionary is about `large` bytes (many files with long paths).
pub fn synth(i: usize, rng: &mut Rng, large: Option<usize>) -> SynthTorrent {
    let name = NAMES[i % NAMES.len()].replace("{}", &i.to_string());
    let mut files: Vec<(String, u64)> = Vec::new();
    let multi = large.is_some() || i % 3 == 1;
    if let Some(target) = large {
        // ~80 bytes of path and length per entry.
        let n = (target / 80).max(2);
        for f in 0..n {
            files.push((
                format!("disc-{:03}/track-{f:06}-{}.flac", f / 1000, "x".repeat(20)),
                1 + rng.below(4 << 20),
            ));
        }
    } else if multi {
        // Kinds of content, so that the crawler's categories (and the web
        // UI's) have something to tell apart: opaque parts, a series with
        // episode marks, a film, an album, a book.
        let kind = (i / 3) % 5;
        let n = 2 + rng.below(40) as usize;
        for f in 0..n {
            let dir = if f % 4 == 0 { "extras" } else { "main" };
            let file = match kind {
                1 => format!("part {f:03} S01E{:02}.mkv", f + 1),
                2 => format!("part {f:03} — ünïcödé.mkv"),
                3 => format!("track {f:03} — ünïcödé.mp3"),
                4 => format!("volume {f:03} — ünïcödé.epub"),
                _ => format!("part {f:03} — ünïcödé.bin"),
            };
            files.push((format!("{dir}/{file}"), 1 + rng.below(64 << 20)));
        }
    } else {
        files.push((name.clone(), 1 + rng.below(4 << 30)));
    }
    let total_size: u64 = files.iter().map(|(_, s)| *s).sum();
    let plen = piece_length(total_size);
    let pieces = total_size.div_ceil(plen) as usize;
    let mut piece_hashes = vec![0u8; pieces * 20];
    rng.fill(&mut piece_hashes);

    let mut info = Vec::new();
    let mut e = Encoder::new(&mut info);
    e.dict();
    if multi {
        e.bytes(b"files").list();
        for (path, size) in &files {
            e.dict()
                .kv_int(b"length", *size as i64)
                .bytes(b"path")
                .list();
            for part in path.split('/') {
                e.bytes(part.as_bytes());
            }
            e.end().end();
        }
        e.end();
    } else {
        e.kv_int(b"length", total_size as i64);
    }
    e.kv_bytes(b"name", name.as_bytes())
        .kv_int(b"piece length", plen as i64)
        .kv_bytes(b"pieces", &piece_hashes)
        .end();
    let infohash = sha1_infohash(&info);
    SynthTorrent {
        info,
        infohash,
        name,
        total_size,
        files,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_torrents_parse_and_hash() {
        let mut rng = Rng::seed_from_u64(1);
        for i in 0..24 {
            let large = (i == 5).then_some(200_000);
            let t = synth(i, &mut rng, large);
            let parsed = crate::metainfo::parse_info(&t.info).unwrap();
            assert_eq!(parsed.name.display(), t.name);
            assert_eq!(parsed.total_size, t.total_size);
            assert_eq!(parsed.files.len(), t.files.len());
            assert_eq!(
                crate::metainfo::infohash_matches(&t.info, &t.infohash),
                Some(crate::metainfo::HashKind::Sha1)
            );
            if large.is_some() {
                assert!(t.info.len() > 150_000, "{}", t.info.len());
            }
        }
    }

    /// The swarm's torrents give the crawler's categories something to
    /// tell apart (the demo and the web UI show them).
    #[test]
    fn synthetic_torrents_span_the_categories() {
        use crate::category::Category;
        let mut rng = Rng::seed_from_u64(2);
        let kinds: std::collections::BTreeSet<Category> = (0..60)
            .map(|i| {
                let t = synth(i, &mut rng, None);
                Category::of_torrent(&crate::metainfo::parse_info(&t.info).unwrap())
            })
            .collect();
        assert_eq!(
            kinds.into_iter().collect::<Vec<_>>(),
            [
                Category::Movies,
                Category::Audio,
                Category::Tv,
                Category::Books,
                Category::Other
            ]
        );
    }
}
