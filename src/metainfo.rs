//! Torrent info dictionaries: turning a `ut_metadata` payload into a [`Torrent`].
//!
//! The input is the raw bencoded *info dictionary* that peers hand out over
//! BEP 9 (not a `.torrent` file, which wraps the info dictionary together with
//! trackers and comments). This is the cold path — it runs once per harvested
//! torrent — so it uses `serde_bencode` rather than the hand-written hot-path
//! decoder in [`crate::bencode`].
//!
//! The input comes from arbitrary peers on the Internet, so before handing it
//! to `serde_bencode` a small allocation-free scanner checks that the bytes are
//! exactly one well-formed dictionary, that every byte-string length fits in
//! what is left of the input, and that nesting is at most [`MAX_DEPTH`] deep.
//! That keeps the (recursive) serde decoder from overflowing the stack on
//! `llllll…` bombs and means no allocation is ever sized by a length field
//! larger than the input itself.
//!
//! Supported layouts:
//! * BEP 3 single-file (`length`) and multi-file (`files`) dictionaries,
//!   including the common `name.utf-8` / `path.utf-8` extensions (preferred
//!   when they are valid UTF-8);
//! * BEP 52 v2-only dictionaries (`meta version` 2 with a `file tree` and no
//!   `length`/`files`): the file list and total size are computed by walking
//!   the file tree. Hybrid v1+v2 dictionaries use their v1 file list.
//!
//! Names and path components that are not valid UTF-8 are kept losslessly as
//! bytes ([`TorrentName::Raw`]) and rendered lossily by
//! [`TorrentName::display`].

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde_bencode::value::Value;
use serde_bytes::ByteBuf;
use sha1::{Digest, Sha1};
use sha2::Sha256;

/// Deepest container nesting accepted. Real info dictionaries need about 4
/// levels (v1) or directory depth + 3 (v2 file trees); 64 leaves plenty of room
/// for deep v2 directory trees while bounding serde's recursion.
pub const MAX_DEPTH: usize = 64;

/// Why an info dictionary was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetainfoError {
    /// The bytes are not a single well-formed bencoded dictionary.
    #[error("malformed bencode at byte {offset}: {reason}")]
    Malformed {
        /// Byte offset where the scanner gave up.
        offset: usize,
        /// What was wrong there.
        reason: &'static str,
    },
    /// Containers nested deeper than [`MAX_DEPTH`].
    #[error("bencode nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// Well-formed bencode, but a known key has the wrong type.
    #[error("unexpected info dictionary layout: {0}")]
    Layout(String),
    /// Neither `name` nor `name.utf-8` is present.
    #[error("info dictionary has no name")]
    MissingName,
    /// `piece length` is missing or not positive.
    #[error("missing or non-positive `piece length`")]
    BadPieceLength,
    /// Both `length` (single-file) and `files` (multi-file) are present.
    #[error("info dictionary has both `length` and `files`")]
    BothLengthAndFiles,
    /// None of `length`, `files` or a v2 `file tree` is present.
    #[error("info dictionary has neither `length`, `files` nor `file tree`")]
    NoFiles,
    /// A multi-file dictionary with an empty `files` list (or an empty v2 tree).
    #[error("torrent lists no files")]
    EmptyFileList,
    /// A file length is negative.
    #[error("negative file length {0}")]
    NegativeLength(i64),
    /// A file entry has no `length`.
    #[error("file {0} has no length")]
    MissingLength(usize),
    /// The sum of file lengths does not fit in an `i64` (the storage type).
    #[error("total size overflows")]
    SizeOverflow,
    /// A file entry has a missing or empty path list.
    #[error("file {0} has an empty path")]
    EmptyPath(usize),
    /// A path component (or the name) is empty, `.`, `..` or contains `/`.
    #[error("unsafe path component {0:?}")]
    UnsafeComponent(String),
    /// A v2 `file tree` that does not follow BEP 52.
    #[error("malformed v2 file tree: {0}")]
    BadFileTree(&'static str),
}

/// A torrent or file name: UTF-8 when it is, raw bytes otherwise.
///
/// Names come from untrusted peers and are frequently in legacy encodings
/// (GBK, Shift-JIS, CP1251). Keeping the bytes means nothing is lost and a
/// later pass can try to guess the encoding; [`TorrentName::display`] gives a
/// lossy string for search and display.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TorrentName {
    /// Valid UTF-8.
    Utf8(String),
    /// Not valid UTF-8; the exact bytes from the info dictionary.
    Raw(Vec<u8>),
}

impl TorrentName {
    /// Classifies `bytes` as UTF-8 or raw, without copying.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        match String::from_utf8(bytes) {
            Ok(s) => TorrentName::Utf8(s),
            Err(e) => TorrentName::Raw(e.into_bytes()),
        }
    }

    /// The exact bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            TorrentName::Utf8(s) => s.as_bytes(),
            TorrentName::Raw(b) => b,
        }
    }

    /// The name as `str`, when it is valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            TorrentName::Utf8(s) => Some(s),
            TorrentName::Raw(_) => None,
        }
    }

    /// Whether the name is valid UTF-8.
    pub fn is_utf8(&self) -> bool {
        matches!(self, TorrentName::Utf8(_))
    }

    /// The name for humans: invalid sequences become U+FFFD.
    pub fn display(&self) -> Cow<'_, str> {
        match self {
            TorrentName::Utf8(s) => Cow::Borrowed(s),
            TorrentName::Raw(b) => String::from_utf8_lossy(b),
        }
    }
}

impl fmt::Display for TorrentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display())
    }
}

impl From<&str> for TorrentName {
    fn from(s: &str) -> Self {
        TorrentName::Utf8(s.to_owned())
    }
}

impl From<String> for TorrentName {
    fn from(s: String) -> Self {
        TorrentName::Utf8(s)
    }
}

/// One file of a torrent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TorrentFile {
    /// Path components relative to the torrent's root directory. For a
    /// single-file torrent this is just the torrent name. Never empty; no
    /// component is empty, `.`, `..` or contains `/`.
    pub path: Vec<TorrentName>,
    /// Size in bytes.
    pub size: u64,
}

impl TorrentFile {
    /// The path joined with `/`, lossily decoded (what search and export use).
    pub fn display_path(&self) -> String {
        let mut out = String::new();
        for (i, c) in self.path.iter().enumerate() {
            if i > 0 {
                out.push('/');
            }
            out.push_str(&c.display());
        }
        out
    }

    /// The exact path bytes joined with `/`. Lossless, because components
    /// never contain `/`.
    pub fn raw_path(&self) -> Vec<u8> {
        self.path
            .iter()
            .map(TorrentName::as_bytes)
            .collect::<Vec<_>>()
            .join(&b'/')
    }

    /// Whether every component is valid UTF-8.
    pub fn is_utf8(&self) -> bool {
        self.path.iter().all(TorrentName::is_utf8)
    }
}

/// What the crawler keeps from an info dictionary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Torrent {
    /// Suggested name (file name for single-file torrents, directory otherwise).
    pub name: TorrentName,
    /// Sum of all file sizes; always fits in an `i64`.
    pub total_size: u64,
    /// Bytes per piece.
    pub piece_length: u64,
    /// BEP 27 private flag (`private` = 1).
    pub private: bool,
    /// Files in dictionary order. Single-file torrents have one entry whose
    /// path is the name, so consumers never need to special-case them.
    pub files: Vec<TorrentFile>,
}

/// Which hash of the info dictionary matched an infohash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashMatch {
    /// SHA-1 of the dictionary (BEP 3, v1 and hybrid torrents).
    Sha1,
    /// SHA-256 truncated to 20 bytes (BEP 52: how v2 torrents appear in the
    /// 20-byte-keyed DHT).
    Sha256Truncated,
    /// Neither: the peer sent the wrong (or a forged) dictionary.
    None,
}

/// Checks the exact bytes of `info` against `infohash`.
pub fn info_hash_matches(info: &[u8], infohash: &[u8; 20]) -> HashMatch {
    if Sha1::digest(info).as_slice() == infohash {
        return HashMatch::Sha1;
    }
    if &Sha256::digest(info)[..20] == infohash {
        return HashMatch::Sha256Truncated;
    }
    HashMatch::None
}

#[derive(Deserialize)]
struct RawInfo {
    #[serde(default, with = "serde_bytes")]
    name: Option<Vec<u8>>,
    #[serde(rename = "name.utf-8", default, with = "serde_bytes")]
    name_utf8: Option<Vec<u8>>,
    #[serde(rename = "piece length")]
    piece_length: Option<i64>,
    length: Option<i64>,
    files: Option<Vec<RawFile>>,
    // A Value rather than an integer: a few clients write `private` as a
    // string, and that should not make the whole torrent unreadable.
    private: Option<Value>,
    #[serde(rename = "file tree")]
    file_tree: Option<Value>,
}

#[derive(Deserialize)]
struct RawFile {
    length: Option<i64>,
    path: Option<Vec<ByteBuf>>,
    #[serde(rename = "path.utf-8")]
    path_utf8: Option<Vec<ByteBuf>>,
}

/// Parses a raw bencoded info dictionary.
pub fn parse_info(info: &[u8]) -> Result<Torrent, MetainfoError> {
    scan(info)?;
    let raw: RawInfo =
        serde_bencode::from_bytes(info).map_err(|e| MetainfoError::Layout(e.to_string()))?;

    let name = pick_utf8(raw.name_utf8, raw.name).ok_or(MetainfoError::MissingName)?;
    check_component(&name)?;

    let piece_length = match raw.piece_length {
        Some(n) if n > 0 => n as u64,
        _ => return Err(MetainfoError::BadPieceLength),
    };
    let private = matches!(raw.private, Some(Value::Int(1)));

    let files = match (raw.length, raw.files) {
        (Some(_), Some(_)) => return Err(MetainfoError::BothLengthAndFiles),
        (Some(len), None) => vec![TorrentFile {
            path: vec![name.clone()],
            size: non_negative(len)?,
        }],
        (None, Some(list)) => v1_files(list)?,
        (None, None) => match raw.file_tree {
            Some(tree) => v2_files(tree)?,
            None => return Err(MetainfoError::NoFiles),
        },
    };
    if files.is_empty() {
        return Err(MetainfoError::EmptyFileList);
    }
    let mut total: i64 = 0;
    for f in &files {
        let size = i64::try_from(f.size).map_err(|_| MetainfoError::SizeOverflow)?;
        total = total.checked_add(size).ok_or(MetainfoError::SizeOverflow)?;
    }
    Ok(Torrent {
        name,
        total_size: total as u64,
        piece_length,
        private,
        files,
    })
}

/// Prefers the `.utf-8` variant when present and valid, else the plain one.
fn pick_utf8(utf8: Option<Vec<u8>>, plain: Option<Vec<u8>>) -> Option<TorrentName> {
    if let Some(bytes) = utf8 {
        if let Ok(s) = String::from_utf8(bytes) {
            return Some(TorrentName::Utf8(s));
        }
    }
    plain.map(TorrentName::from_bytes)
}

fn non_negative(n: i64) -> Result<u64, MetainfoError> {
    u64::try_from(n).map_err(|_| MetainfoError::NegativeLength(n))
}

/// Rejects components that would escape or confuse a download directory.
pub fn check_component(c: &TorrentName) -> Result<(), MetainfoError> {
    let b = c.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') {
        return Err(MetainfoError::UnsafeComponent(c.display().into_owned()));
    }
    Ok(())
}

fn v1_files(list: Vec<RawFile>) -> Result<Vec<TorrentFile>, MetainfoError> {
    // `list` was decoded from the input, so its length is bounded by it.
    let mut files = Vec::with_capacity(list.len());
    for (index, raw) in list.into_iter().enumerate() {
        let size = non_negative(raw.length.ok_or(MetainfoError::MissingLength(index))?)?;
        let utf8 = raw.path_utf8.and_then(|p| {
            p.into_iter()
                .map(|c| String::from_utf8(c.into_vec()).ok().map(TorrentName::Utf8))
                .collect::<Option<Vec<_>>>()
                .filter(|p| !p.is_empty())
        });
        let path = match utf8 {
            Some(p) => p,
            None => raw
                .path
                .unwrap_or_default()
                .into_iter()
                .map(|c| TorrentName::from_bytes(c.into_vec()))
                .collect(),
        };
        if path.is_empty() {
            return Err(MetainfoError::EmptyPath(index));
        }
        for c in &path {
            check_component(c)?;
        }
        files.push(TorrentFile { path, size });
    }
    Ok(files)
}

/// Flattens a BEP 52 `file tree`: directories are dictionaries keyed by path
/// component; a file is a dictionary whose only key is the empty string,
/// mapping to `{length, pieces root}`. Keys are visited in sorted order (the
/// order bencode requires), so the file order is deterministic.
fn v2_files(tree: Value) -> Result<Vec<TorrentFile>, MetainfoError> {
    let mut files = Vec::new();
    let mut prefix = Vec::new();
    walk_tree(tree, &mut prefix, &mut files)?;
    Ok(files)
}

fn walk_tree(
    node: Value,
    prefix: &mut Vec<TorrentName>,
    out: &mut Vec<TorrentFile>,
) -> Result<(), MetainfoError> {
    // Recursion depth is bounded by MAX_DEPTH: `scan` already checked nesting.
    let Value::Dict(entries) = node else {
        return Err(MetainfoError::BadFileTree("directory is not a dictionary"));
    };
    let mut entries: Vec<(Vec<u8>, Value)> = entries.into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, child) in entries {
        if key.is_empty() {
            return Err(MetainfoError::BadFileTree("file entry outside a file"));
        }
        let component = TorrentName::from_bytes(key);
        check_component(&component)?;
        prefix.push(component);
        match leaf_length(&child)? {
            Some(len) => out.push(TorrentFile {
                path: prefix.clone(),
                size: non_negative(len)?,
            }),
            None => walk_tree(child, prefix, out)?,
        }
        prefix.pop();
    }
    Ok(())
}

/// `Some(length)` when `node` is a file (`{"": {"length": n, ...}}`).
fn leaf_length(node: &Value) -> Result<Option<i64>, MetainfoError> {
    let Value::Dict(d) = node else {
        return Err(MetainfoError::BadFileTree("entry is not a dictionary"));
    };
    let Some(leaf) = d.get(b"".as_slice()) else {
        return Ok(None);
    };
    if d.len() != 1 {
        return Err(MetainfoError::BadFileTree(
            "file entry mixed with directory",
        ));
    }
    let Value::Dict(props) = leaf else {
        return Err(MetainfoError::BadFileTree(
            "file properties not a dictionary",
        ));
    };
    match props.get(b"length".as_slice()) {
        Some(Value::Int(n)) => Ok(Some(*n)),
        _ => Err(MetainfoError::BadFileTree("file without integer length")),
    }
}

/// Validates that `input` is exactly one bencoded dictionary, with sane
/// lengths and nesting, without allocating anything sized by the input.
fn scan(input: &[u8]) -> Result<(), MetainfoError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Frame {
        List,
        DictKey,
        DictValue,
    }
    let bad = |offset: usize, reason: &'static str| MetainfoError::Malformed { offset, reason };
    if input.first() != Some(&b'd') {
        return Err(bad(0, "not a dictionary"));
    }
    let mut stack: Vec<Frame> = Vec::with_capacity(MAX_DEPTH);
    let mut pos = 0;
    loop {
        let Some(&c) = input.get(pos) else {
            return Err(bad(pos, "truncated"));
        };
        let top = stack.last().copied();
        if c == b'e' {
            match top {
                None => return Err(bad(pos, "unexpected end marker")),
                Some(Frame::DictValue) => return Err(bad(pos, "dictionary key without value")),
                Some(_) => {}
            }
            stack.pop();
            pos += 1;
            match stack.last_mut() {
                None => {
                    return if pos == input.len() {
                        Ok(())
                    } else {
                        Err(bad(pos, "trailing data after dictionary"))
                    };
                }
                Some(f) => value_done(f),
            }
            continue;
        }
        if top == Some(Frame::DictKey) && !c.is_ascii_digit() {
            return Err(bad(pos, "dictionary key is not a byte string"));
        }
        match c {
            b'i' => {
                let start = pos + 1;
                let end = input[start..]
                    .iter()
                    .position(|&b| b == b'e')
                    .map(|i| start + i)
                    .ok_or(bad(pos, "unterminated integer"))?;
                let digits = &input[start..end];
                let digits = digits.strip_prefix(b"-").unwrap_or(digits);
                if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit)
                {
                    return Err(bad(pos, "bad integer"));
                }
                pos = end + 1;
            }
            b'0'..=b'9' => {
                let colon = input[pos..]
                    .iter()
                    .take(21)
                    .position(|&b| b == b':')
                    .map(|i| pos + i)
                    .ok_or(bad(pos, "bad string length"))?;
                let mut len: usize = 0;
                for &d in &input[pos..colon] {
                    if !d.is_ascii_digit() {
                        return Err(bad(pos, "bad string length"));
                    }
                    len = len
                        .checked_mul(10)
                        .and_then(|l| l.checked_add(usize::from(d - b'0')))
                        .ok_or(bad(pos, "string length overflows"))?;
                }
                let start = colon + 1;
                if len > input.len() - start {
                    return Err(bad(pos, "string longer than the input"));
                }
                pos = start + len;
            }
            b'l' | b'd' => {
                if stack.len() == MAX_DEPTH {
                    return Err(MetainfoError::TooDeep);
                }
                stack.push(if c == b'l' {
                    Frame::List
                } else {
                    Frame::DictKey
                });
                pos += 1;
                continue;
            }
            _ => return Err(bad(pos, "unexpected byte")),
        }
        // A scalar finished; `stack` is non-empty here because the first byte
        // was `d` and the loop returns as soon as the outer dict closes.
        if let Some(f) = stack.last_mut() {
            value_done(f);
        }
    }

    fn value_done(f: &mut Frame) {
        *f = match *f {
            Frame::List => Frame::List,
            Frame::DictKey => Frame::DictValue,
            Frame::DictValue => Frame::DictKey,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Minimal bencode writer for building test dictionaries.
    enum B<'a> {
        I(i64),
        S(&'a [u8]),
        L(Vec<B<'a>>),
        D(Vec<(&'a [u8], B<'a>)>),
    }

    fn enc(b: &B<'_>, out: &mut Vec<u8>) {
        match b {
            B::I(n) => out.extend_from_slice(format!("i{n}e").as_bytes()),
            B::S(s) => {
                out.extend_from_slice(format!("{}:", s.len()).as_bytes());
                out.extend_from_slice(s);
            }
            B::L(l) => {
                out.push(b'l');
                for x in l {
                    enc(x, out);
                }
                out.push(b'e');
            }
            B::D(d) => {
                let mut d: Vec<_> = d.iter().collect();
                d.sort_by(|a, b| a.0.cmp(b.0));
                out.push(b'd');
                for (k, v) in d {
                    enc(&B::S(k), out);
                    enc(v, out);
                }
                out.push(b'e');
            }
        }
    }

    fn bytes(b: B<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        enc(&b, &mut out);
        out
    }

    fn file<'a>(len: i64, path: &[&'a [u8]]) -> B<'a> {
        B::D(vec![
            (b"length", B::I(len)),
            (b"path", B::L(path.iter().map(|p| B::S(p)).collect())),
        ])
    }

    fn multi<'a>(name: &'a [u8], files: Vec<B<'a>>) -> Vec<u8> {
        bytes(B::D(vec![
            (b"name", B::S(name)),
            (b"piece length", B::I(16384)),
            (b"pieces", B::S(&[0u8; 20])),
            (b"files", B::L(files)),
        ]))
    }

    #[test]
    fn single_file() {
        let info = bytes(B::D(vec![
            (b"name", B::S(b"ubuntu.iso")),
            (b"length", B::I(1_000_000)),
            (b"piece length", B::I(262_144)),
            (b"pieces", B::S(&[7u8; 80])),
            (b"private", B::I(1)),
        ]));
        let t = parse_info(&info).unwrap();
        assert_eq!(t.name, TorrentName::from("ubuntu.iso"));
        assert_eq!(t.total_size, 1_000_000);
        assert_eq!(t.piece_length, 262_144);
        assert!(t.private);
        assert_eq!(t.files.len(), 1);
        assert_eq!(t.files[0].display_path(), "ubuntu.iso");
        assert_eq!(t.files[0].size, 1_000_000);
    }

    #[test]
    fn multi_file_and_private_flag_values() {
        let info = multi(
            b"album",
            vec![file(10, &[b"cd1", b"01.flac"]), file(20, &[b"cover.jpg"])],
        );
        let t = parse_info(&info).unwrap();
        assert!(!t.private);
        assert_eq!(t.total_size, 30);
        let paths: Vec<_> = t.files.iter().map(TorrentFile::display_path).collect();
        assert_eq!(paths, ["cd1/01.flac", "cover.jpg"]);
        assert_eq!(t.files[0].raw_path(), b"cd1/01.flac");

        // private = 0 and private as a string are "not private", not errors.
        for p in [B::I(0), B::S(b"1")] {
            let info = bytes(B::D(vec![
                (b"name", B::S(b"x")),
                (b"length", B::I(1)),
                (b"piece length", B::I(1)),
                (b"private", p),
            ]));
            assert!(!parse_info(&info).unwrap().private);
        }
    }

    #[test]
    fn prefers_valid_name_utf8_and_keeps_raw_bytes() {
        // CP1251 "Привет" is not valid UTF-8.
        let cp1251: &[u8] = &[0xCF, 0xF0, 0xE8, 0xE2, 0xE5, 0xF2];
        let info = bytes(B::D(vec![
            (b"name", B::S(cp1251)),
            (b"name.utf-8", B::S("Привет".as_bytes())),
            (b"length", B::I(5)),
            (b"piece length", B::I(16384)),
        ]));
        assert_eq!(parse_info(&info).unwrap().name.as_str(), Some("Привет"));

        // Without a usable name.utf-8 the raw bytes are kept exactly.
        let info = bytes(B::D(vec![
            (b"name", B::S(cp1251)),
            (b"name.utf-8", B::S(&[0xFF, 0xFE])),
            (b"length", B::I(5)),
            (b"piece length", B::I(16384)),
        ]));
        let t = parse_info(&info).unwrap();
        assert_eq!(t.name, TorrentName::Raw(cp1251.to_vec()));
        assert_eq!(t.name.as_bytes(), cp1251);
        assert!(t.name.as_str().is_none());
        assert_eq!(t.name.display(), "\u{FFFD}".repeat(6));
    }

    #[test]
    fn prefers_path_utf8() {
        let info = bytes(B::D(vec![
            (b"name", B::S(b"d")),
            (b"piece length", B::I(16384)),
            (
                b"files",
                B::L(vec![B::D(vec![
                    (b"length", B::I(3)),
                    (b"path", B::L(vec![B::S(&[0x93, 0xFA])])),
                    (b"path.utf-8", B::L(vec![B::S("日本".as_bytes())])),
                ])]),
            ),
        ]));
        let t = parse_info(&info).unwrap();
        assert_eq!(t.files[0].display_path(), "日本");

        let info = multi(b"d", vec![file(3, &[&[0x93, 0xFA], b"a.txt"])]);
        let t = parse_info(&info).unwrap();
        assert!(!t.files[0].is_utf8());
        assert_eq!(
            t.files[0].raw_path(),
            [0x93, 0xFA, b'/', b'a', b'.', b't', b'x', b't']
        );
    }

    #[test]
    fn rejects_bad_dictionaries() {
        let no_name = bytes(B::D(vec![(b"length", B::I(1)), (b"piece length", B::I(1))]));
        assert_eq!(parse_info(&no_name), Err(MetainfoError::MissingName));

        let both = bytes(B::D(vec![
            (b"name", B::S(b"x")),
            (b"piece length", B::I(1)),
            (b"length", B::I(1)),
            (b"files", B::L(vec![file(1, &[b"a"])])),
        ]));
        assert_eq!(parse_info(&both), Err(MetainfoError::BothLengthAndFiles));

        let neither = bytes(B::D(vec![
            (b"name", B::S(b"x")),
            (b"piece length", B::I(1)),
        ]));
        assert_eq!(parse_info(&neither), Err(MetainfoError::NoFiles));

        let negative = multi(b"x", vec![file(-1, &[b"a"])]);
        assert_eq!(
            parse_info(&negative),
            Err(MetainfoError::NegativeLength(-1))
        );

        let overflow = multi(b"x", vec![file(i64::MAX, &[b"a"]), file(1, &[b"b"])]);
        assert_eq!(parse_info(&overflow), Err(MetainfoError::SizeOverflow));

        let empty_path = multi(b"x", vec![file(1, &[])]);
        assert_eq!(parse_info(&empty_path), Err(MetainfoError::EmptyPath(0)));

        assert_eq!(
            parse_info(&multi(b"x", vec![])),
            Err(MetainfoError::EmptyFileList)
        );

        for bad in [&b".."[..], b".", b"a/b", b""] {
            let info = multi(b"x", vec![file(1, &[b"ok", bad])]);
            assert!(
                matches!(parse_info(&info), Err(MetainfoError::UnsafeComponent(_))),
                "{bad:?}"
            );
        }
        let dotdot_name = multi(b"..", vec![file(1, &[b"a"])]);
        assert!(matches!(
            parse_info(&dotdot_name),
            Err(MetainfoError::UnsafeComponent(_))
        ));

        let no_piece_length = bytes(B::D(vec![(b"name", B::S(b"x")), (b"length", B::I(1))]));
        assert_eq!(
            parse_info(&no_piece_length),
            Err(MetainfoError::BadPieceLength)
        );

        let name_is_int = bytes(B::D(vec![
            (b"name", B::I(3)),
            (b"length", B::I(1)),
            (b"piece length", B::I(1)),
        ]));
        assert!(matches!(
            parse_info(&name_is_int),
            Err(MetainfoError::Layout(_))
        ));
    }

    #[test]
    fn rejects_malformed_bencode_without_allocating_from_lengths() {
        // A length field claiming 4 GiB in a 30-byte input.
        let huge = b"d4:name4294967296:xe";
        assert!(matches!(
            parse_info(huge),
            Err(MetainfoError::Malformed { .. })
        ));
        let overflow = b"d4:name99999999999999999999999:xe";
        assert!(matches!(
            parse_info(overflow),
            Err(MetainfoError::Malformed { .. })
        ));
        for bad in [
            &b""[..],
            b"le",
            b"i1e",
            b"d",
            b"d4:name",
            b"di1ei2ee",
            b"d1:ae",
            b"d1:ai1ee trailing",
            b"d1:ai1x1ee",
            b"d1:ai-e1:bi1ee",
        ] {
            assert!(
                matches!(parse_info(bad), Err(MetainfoError::Malformed { .. })),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // A nesting bomb is refused before serde can recurse into it.
        let mut bomb = b"d1:a".to_vec();
        bomb.extend(std::iter::repeat_n(b'l', 100_000));
        bomb.extend(std::iter::repeat_n(b'e', 100_000));
        bomb.push(b'e');
        assert_eq!(parse_info(&bomb), Err(MetainfoError::TooDeep));
    }

    #[test]
    fn many_files_are_fine() {
        let files: Vec<B<'_>> = (0..5000).map(|_| file(2, &[b"f"])).collect();
        let t = parse_info(&multi(b"many", files)).unwrap();
        assert_eq!(t.files.len(), 5000);
        assert_eq!(t.total_size, 10_000);
    }

    fn v2_leaf(len: i64) -> B<'static> {
        B::D(vec![(
            b"",
            B::D(vec![
                (b"length", B::I(len)),
                (b"pieces root", B::S(&[1u8; 32])),
            ]),
        )])
    }

    #[test]
    fn v2_only_file_tree() {
        let info = bytes(B::D(vec![
            (b"name", B::S(b"v2dir")),
            (b"meta version", B::I(2)),
            (b"piece length", B::I(65536)),
            (
                b"file tree",
                B::D(vec![
                    (b"b.txt", v2_leaf(7)),
                    (
                        b"a",
                        B::D(vec![(b"x.bin", v2_leaf(100)), (b"y.bin", v2_leaf(0))]),
                    ),
                ]),
            ),
        ]));
        let t = parse_info(&info).unwrap();
        assert_eq!(t.total_size, 107);
        let paths: Vec<_> = t.files.iter().map(TorrentFile::display_path).collect();
        assert_eq!(paths, ["a/x.bin", "a/y.bin", "b.txt"]);
        assert_eq!(t.files[0].size, 100);

        let bad = bytes(B::D(vec![
            (b"name", B::S(b"v2")),
            (b"piece length", B::I(65536)),
            (b"file tree", B::D(vec![(b"..", v2_leaf(1))])),
        ]));
        assert!(matches!(
            parse_info(&bad),
            Err(MetainfoError::UnsafeComponent(_))
        ));
        let no_len = bytes(B::D(vec![
            (b"name", B::S(b"v2")),
            (b"piece length", B::I(65536)),
            (
                b"file tree",
                B::D(vec![(b"f", B::D(vec![(b"", B::D(vec![]))]))]),
            ),
        ]));
        assert!(matches!(
            parse_info(&no_len),
            Err(MetainfoError::BadFileTree(_))
        ));
        let empty = bytes(B::D(vec![
            (b"name", B::S(b"v2")),
            (b"piece length", B::I(65536)),
            (b"file tree", B::D(vec![])),
        ]));
        assert_eq!(parse_info(&empty), Err(MetainfoError::EmptyFileList));
    }

    #[test]
    fn hybrid_uses_v1_file_list() {
        let info = bytes(B::D(vec![
            (b"name", B::S(b"h")),
            (b"meta version", B::I(2)),
            (b"piece length", B::I(65536)),
            (b"files", B::L(vec![file(5, &[b"v1.txt"])])),
            (b"file tree", B::D(vec![(b"v2.txt", v2_leaf(5))])),
        ]));
        let t = parse_info(&info).unwrap();
        assert_eq!(t.files[0].display_path(), "v1.txt");
    }

    #[test]
    fn hash_matching() {
        let info = multi(b"x", vec![file(1, &[b"a"])]);
        let sha1: [u8; 20] = Sha1::digest(&info).into();
        let sha256 = Sha256::digest(&info);
        let mut truncated = [0u8; 20];
        truncated.copy_from_slice(&sha256[..20]);
        assert_eq!(info_hash_matches(&info, &sha1), HashMatch::Sha1);
        assert_eq!(
            info_hash_matches(&info, &truncated),
            HashMatch::Sha256Truncated
        );
        assert_eq!(info_hash_matches(&info, &[0u8; 20]), HashMatch::None);
        // One flipped byte in the payload no longer matches.
        let mut tampered = info.clone();
        tampered[5] ^= 1;
        assert_eq!(info_hash_matches(&tampered, &sha1), HashMatch::None);
        // Known answer: SHA-1 of "de" (an empty dictionary).
        let empty: [u8; 20] = [
            0x60, 0x0c, 0xcd, 0x1b, 0x71, 0x56, 0x92, 0x32, 0xd0, 0x1d, 0x11, 0x0b, 0xc6, 0x3e,
            0x90, 0x6b, 0xea, 0xb0, 0x4d, 0x8c,
        ];
        assert_eq!(info_hash_matches(b"de", &empty), HashMatch::Sha1);
    }
}
