//! Torrent info dictionaries: turning a `ut_metadata` payload into a [`Torrent`].
//!
//! The input is the raw bencoded *info dictionary* that peers hand out over
//! BEP 9 (not a `.torrent` file, which wraps the info dictionary together with
//! trackers and comments). It runs once per harvested torrent, on the shard
//! that fetched it, so it must neither stall that shard nor let a peer make
//! it build far more than it was sent.
//!
//! # One pass, no tree
//!
//! The dictionary is read with the project's pull parser
//! ([`crate::bencode::Parser`], the same one that decodes KRPC) straight into
//! the [`Torrent`]: no intermediate tree of maps is ever built, so a hostile
//! 10 MiB `file tree` costs what its files cost and nothing more (a generic
//! tree decoder spent about 30 bytes of heap per input byte on one). The
//! parser checks every length against what is left of the input before
//! slicing, and limits nesting and the number of values
//! ([`Limits::METADATA`], libtorrent's 100 and three million).
//!
//! # Bounded output
//!
//! What is built is bounded too, before it is allocated:
//! [`MAX_FILES`] files, [`MAX_PATH_DEPTH`] components per path,
//! [`MAX_COMPONENT_LEN`] bytes per component, and at most
//! [`MEMORY_PER_INPUT_BYTE`] bytes of file list per input byte. The last one
//! is what stops a v2 `file tree` from multiplying: every file's path repeats
//! its directories, so a long chain of directories over many small files
//! would otherwise cost depth × files. Past a bound the dictionary is
//! refused with an error that names it; `tuning/README.md` gives the reasons
//! for each value.
//!
//! # Not holding the shard
//!
//! [`parse_info_pausing`] calls back every [`PAUSE_EVERY`] values, so an
//! async caller can let its executor run other work (the fetch pool passes
//! `shards::timers::reactor_turn`, so the shard's UDP sockets are served
//! during the parse); [`parse_info`] is the same parse without pauses.
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
//!
//! The infohash check ([`infohash_matches`]) lives here too: the fetcher
//! uses it to accept metadata, the load generator to label what it serves.
//!
//! This file is about 770 lines of code: the one metadata parser (with its
//! limits and path rules) and the one infohash check, used by the fetcher,
//! the store and the load generator alike.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;

use sha1::{Digest, Sha1};
use sha2::Sha256;

use crate::bencode::{DecodeError, DecodeErrorKind, Limits, Parser, SkipState};
use crate::id::Id;

/// Most files one torrent may list. libtorrent has no separate file cap
/// (its three million decode tokens allow about 500,000 v1 entries); the
/// largest real torrents hold about 100,000 files (one LibGen scimag
/// batch), and 10 MiB of the tersest v1 entries holds about 440,000.
pub const MAX_FILES: usize = 500_000;

/// Most components in one file's path (v1 `path` lists, v2 directory depth
/// plus the file). Real torrents stay well under 20; libtorrent refuses v2
/// trees deeper than 100 directories.
pub const MAX_PATH_DEPTH: usize = 64;

/// Longest path component (and torrent name) in bytes: `PATH_MAX`, so no
/// component that any file system could hold is refused (`NAME_MAX` is 255
/// bytes on Linux, 255 UTF-16 units on Windows). libtorrent truncates at
/// 240 bytes when it writes files; we keep names exactly, so we only refuse
/// what cannot be a name.
pub const MAX_COMPONENT_LEN: usize = 4096;

/// Bytes of file list (each file's `TorrentFile`, each component's
/// `TorrentName` and bytes) allowed per byte of input. A v1 dictionary
/// stays under 8 whatever it holds (with paths at most [`MAX_PATH_DEPTH`]
/// deep); real v2 trees need about 4 to 8 (each file repeats its
/// directories); 16 leaves room for deep real trees and bounds a 10 MiB
/// dictionary at 160 MiB.
pub const MEMORY_PER_INPUT_BYTE: usize = 16;

/// Values read (path components included) between two calls of
/// [`parse_info_pausing`]'s pause: on average 0.5–2.5 ms of parsing on a
/// slow shared VM, so a pause that goes through the shard's reactor costs
/// nothing measurable (every 1,024 values doubled the parse) and the
/// shard's sockets wait about that long.
pub const PAUSE_EVERY: usize = 16_384;

/// Why an info dictionary was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetainfoError {
    /// The bytes are not a single well-formed bencoded dictionary.
    #[error("malformed bencode: {0}")]
    Malformed(DecodeError),
    /// Containers nested deeper than [`Limits::METADATA`] allows.
    #[error("bencode nested deeper than {0} levels")]
    TooDeep(usize),
    /// Well-formed bencode, but a known key has the wrong type or appears twice.
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
    /// More than [`MAX_FILES`] files.
    #[error("more than {MAX_FILES} files")]
    TooManyFiles,
    /// A path of more than [`MAX_PATH_DEPTH`] components.
    #[error("a path deeper than {MAX_PATH_DEPTH} components")]
    PathTooDeep,
    /// A path component (or the name) longer than [`MAX_COMPONENT_LEN`].
    #[error("a path component of {0} bytes (limit {MAX_COMPONENT_LEN})")]
    ComponentTooLong(usize),
    /// The file list would take more than [`MEMORY_PER_INPUT_BYTE`] bytes
    /// per input byte.
    #[error("the file list would take more than {0} bytes")]
    FileListTooLarge(usize),
}

/// A decode error in a context where a wrong type means a wrong layout.
fn decode_err(e: DecodeError) -> MetainfoError {
    match e.kind {
        DecodeErrorKind::WrongType { .. } => MetainfoError::Layout(e.to_string()),
        DecodeErrorKind::DepthLimit(n) => MetainfoError::TooDeep(n),
        _ => MetainfoError::Malformed(e),
    }
}

/// A decode error inside a v2 `file tree`: a wrong type breaks BEP 52.
fn tree_err(what: &'static str) -> impl Fn(DecodeError) -> MetainfoError {
    move |e| match e.kind {
        DecodeErrorKind::WrongType { .. } => MetainfoError::BadFileTree(what),
        _ => decode_err(e),
    }
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashKind {
    /// SHA-1 of the dictionary (BEP 3, v1 and hybrid torrents).
    Sha1,
    /// SHA-256 truncated to 20 bytes (BEP 52: how v2 torrents appear in the
    /// 20-byte-keyed DHT).
    Sha256Truncated,
}

/// The v1 infohash of an info dictionary: its SHA-1.
pub fn sha1_infohash(info: &[u8]) -> Id {
    Id(Sha1::digest(info).into())
}

/// The v2 infohash as announced on the DHT: SHA-256 truncated to 20 bytes.
pub fn sha256_truncated_infohash(info: &[u8]) -> Id {
    let mut id = [0u8; 20];
    if let Some(h) = Sha256::digest(info).get(..20) {
        id.copy_from_slice(h);
    }
    Id(id)
}

/// Checks the exact bytes of `info` against `infohash`: which hash matched,
/// or `None` when the peer sent the wrong (or a forged) dictionary. SHA-256
/// is computed only when SHA-1 did not match.
pub fn infohash_matches(info: &[u8], infohash: &Id) -> Option<HashKind> {
    if sha1_infohash(info) == *infohash {
        Some(HashKind::Sha1)
    } else if sha256_truncated_infohash(info) == *infohash {
        Some(HashKind::Sha256Truncated)
    } else {
        None
    }
}

/// Parses a raw bencoded info dictionary.
pub fn parse_info(info: &[u8]) -> Result<Torrent, MetainfoError> {
    // The pause is always ready, so the future completes on its first poll.
    futures_lite::future::block_on(parse_info_pausing(info, || std::future::ready(())))
}

/// [`parse_info`], awaiting `pause()` every [`PAUSE_EVERY`] values read, so
/// that a large dictionary does not hold an executor's thread for the whole
/// parse.
pub async fn parse_info_pausing<P, F>(info: &[u8], pause: P) -> Result<Torrent, MetainfoError>
where
    P: FnMut() -> F,
    F: Future<Output = ()>,
{
    let mut r = Reader {
        p: Parser::new(info, Limits::METADATA),
        pause,
        work: 0,
    };
    let mut out = FileList::new(info.len());
    r.p.dict().map_err(|e| match e.kind {
        DecodeErrorKind::WrongType { .. } => MetainfoError::Malformed(e),
        _ => decode_err(e),
    })?;

    let mut name: Option<&[u8]> = None;
    let mut name_utf8: Option<&[u8]> = None;
    let mut piece_length: Option<i64> = None;
    let mut length: Option<i64> = None;
    let mut private: Option<bool> = None;
    let mut files: Option<Vec<TorrentFile>> = None;
    let mut file_tree: Option<&[u8]> = None;
    while let Some(key) = r.p.next_key().map_err(decode_err)? {
        match key {
            b"name" => {
                once(&name, "name")?;
                name = Some(r.p.bytes().map_err(decode_err)?);
            }
            b"name.utf-8" => {
                once(&name_utf8, "name.utf-8")?;
                name_utf8 = Some(r.p.bytes().map_err(decode_err)?);
            }
            b"piece length" => {
                once(&piece_length, "piece length")?;
                piece_length = Some(r.p.int().map_err(decode_err)?);
            }
            b"length" => {
                once(&length, "length")?;
                length = Some(r.p.int().map_err(decode_err)?);
            }
            b"private" => {
                // Any type: a few clients write `private` as a string, and
                // that should not make the whole torrent unreadable.
                once(&private, "private")?;
                if r.p.input().get(r.p.offset()) == Some(&b'i') {
                    private = Some(r.p.int().map_err(decode_err)? == 1);
                } else {
                    r.skip().await?;
                    private = Some(false);
                }
            }
            b"files" => {
                once(&files, "files")?;
                files = Some(r.v1_files(&mut out).await?);
            }
            b"file tree" => {
                // Walked only if there is no v1 file list; validated now.
                once(&file_tree, "file tree")?;
                file_tree = Some(r.skip().await?);
            }
            _ => {
                r.skip().await?;
            }
        }
        r.tick(1).await;
    }
    r.p.finish().map_err(decode_err)?;

    let name = pick_utf8(name_utf8, name).ok_or(MetainfoError::MissingName)?;
    check_component(name.as_bytes())?;
    let piece_length = match piece_length {
        Some(n) if n > 0 => n as u64,
        _ => return Err(MetainfoError::BadPieceLength),
    };
    let files = match (length, files) {
        (Some(_), Some(_)) => return Err(MetainfoError::BothLengthAndFiles),
        (Some(len), None) => {
            out.admit(1, name.as_bytes().len())?;
            vec![TorrentFile {
                path: vec![name.clone()],
                size: non_negative(len)?,
            }]
        }
        (None, Some(list)) => list,
        (None, None) => match file_tree {
            Some(tree) => {
                // Counted first, built only if within the bounds: a tree
                // that would multiply is refused before anything is built,
                // and the file list is allocated once at its final size.
                let mut count = FileList::new(info.len());
                r.p = Parser::new(tree, Limits::METADATA);
                r.v2_files(&mut count, None).await?;
                if count.files == 0 {
                    return Err(MetainfoError::EmptyFileList);
                }
                r.p = Parser::new(tree, Limits::METADATA);
                r.v2_files(&mut out, Some(count.files)).await?
            }
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
        private: private.unwrap_or(false),
        files,
    })
}

/// A key seen a second time is a layout error (as serde's `duplicate
/// field`).
fn once<T>(slot: &Option<T>, key: &str) -> Result<(), MetainfoError> {
    if slot.is_some() {
        return Err(MetainfoError::Layout(format!("duplicate key `{key}`")));
    }
    Ok(())
}

/// Prefers the `.utf-8` variant when present and valid, else the plain one.
fn pick_utf8(utf8: Option<&[u8]>, plain: Option<&[u8]>) -> Option<TorrentName> {
    if let Some(s) = utf8.and_then(|b| std::str::from_utf8(b).ok()) {
        return Some(TorrentName::Utf8(s.to_owned()));
    }
    plain.map(|b| TorrentName::from_bytes(b.to_vec()))
}

fn non_negative(n: i64) -> Result<u64, MetainfoError> {
    u64::try_from(n).map_err(|_| MetainfoError::NegativeLength(n))
}

/// Rejects components that would escape or confuse a download directory,
/// and ones longer than any file system allows (also used by import).
pub fn check_component(b: &[u8]) -> Result<(), MetainfoError> {
    if b.len() > MAX_COMPONENT_LEN {
        return Err(MetainfoError::ComponentTooLong(b.len()));
    }
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') {
        return Err(MetainfoError::UnsafeComponent(
            String::from_utf8_lossy(b).into_owned(),
        ));
    }
    Ok(())
}

/// Turns checked components into an owned path.
fn owned_path<'a>(components: impl Iterator<Item = &'a [u8]>) -> Vec<TorrentName> {
    components
        .map(|c| TorrentName::from_bytes(c.to_vec()))
        .collect()
}

/// The bounds on what a parse builds ([`MAX_FILES`],
/// [`MEMORY_PER_INPUT_BYTE`]), checked before each file is allocated.
struct FileList {
    files: usize,
    cost: usize,
    budget: usize,
}

impl FileList {
    fn new(input_len: usize) -> Self {
        FileList {
            files: 0,
            cost: 0,
            budget: input_len.saturating_mul(MEMORY_PER_INPUT_BYTE),
        }
    }

    /// Admits one more file of `components` components and `bytes` bytes of
    /// names, or says which bound it would cross.
    fn admit(&mut self, components: usize, bytes: usize) -> Result<(), MetainfoError> {
        if self.files == MAX_FILES {
            return Err(MetainfoError::TooManyFiles);
        }
        self.files += 1;
        self.cost = self
            .cost
            .saturating_add(std::mem::size_of::<TorrentFile>())
            .saturating_add(components.saturating_mul(std::mem::size_of::<TorrentName>()))
            .saturating_add(bytes);
        if self.cost > self.budget {
            return Err(MetainfoError::FileListTooLarge(self.budget));
        }
        Ok(())
    }
}

/// The parser, plus the pause hook and the work done since the last pause.
struct Reader<'a, P> {
    p: Parser<'a>,
    pause: P,
    work: usize,
}

impl<'a, P, F> Reader<'a, P>
where
    P: FnMut() -> F,
    F: Future<Output = ()>,
{
    /// Counts `units` values read; pauses every [`PAUSE_EVERY`].
    async fn tick(&mut self, units: usize) {
        self.work += units;
        if self.work >= PAUSE_EVERY {
            self.work = 0;
            (self.pause)().await;
        }
    }

    /// Skips (and validates) one value, pausing inside large ones.
    async fn skip(&mut self) -> Result<&'a [u8], MetainfoError> {
        let mut state = SkipState::default();
        loop {
            if let Some(raw) = self
                .p
                .skip_step(&mut state, PAUSE_EVERY)
                .map_err(decode_err)?
            {
                return Ok(raw);
            }
            self.tick(PAUSE_EVERY).await;
        }
    }

    /// Reads a list of byte strings into `out` (at most [`MAX_PATH_DEPTH`]).
    fn path_list(&mut self, out: &mut Vec<&'a [u8]>) -> Result<(), MetainfoError> {
        self.p.list().map_err(decode_err)?;
        while self.p.list_has_next().map_err(decode_err)? {
            let c = self.p.bytes().map_err(decode_err)?;
            if out.len() == MAX_PATH_DEPTH {
                return Err(MetainfoError::PathTooDeep);
            }
            out.push(c);
        }
        Ok(())
    }

    /// A BEP 3 `files` list, read in place.
    async fn v1_files(&mut self, out: &mut FileList) -> Result<Vec<TorrentFile>, MetainfoError> {
        self.p.list().map_err(decode_err)?;
        let mut files = Vec::new();
        let mut path: Vec<&'a [u8]> = Vec::new();
        let mut path_utf8: Vec<&'a [u8]> = Vec::new();
        let mut index = 0;
        while self.p.list_has_next().map_err(decode_err)? {
            self.p.dict().map_err(decode_err)?;
            let mut length: Option<i64> = None;
            let (mut have_path, mut have_utf8) = (false, false);
            path.clear();
            path_utf8.clear();
            while let Some(key) = self.p.next_key().map_err(decode_err)? {
                match key {
                    b"length" => {
                        once(&length, "length")?;
                        length = Some(self.p.int().map_err(decode_err)?);
                    }
                    b"path" => {
                        if std::mem::replace(&mut have_path, true) {
                            return Err(MetainfoError::Layout("duplicate key `path`".into()));
                        }
                        self.path_list(&mut path)?;
                    }
                    b"path.utf-8" => {
                        if std::mem::replace(&mut have_utf8, true) {
                            return Err(MetainfoError::Layout("duplicate key `path.utf-8`".into()));
                        }
                        self.path_list(&mut path_utf8)?;
                    }
                    _ => {
                        self.skip().await?;
                    }
                }
            }
            let size = non_negative(length.ok_or(MetainfoError::MissingLength(index))?)?;
            let use_utf8 =
                !path_utf8.is_empty() && path_utf8.iter().all(|c| std::str::from_utf8(c).is_ok());
            let chosen = if use_utf8 { &path_utf8 } else { &path };
            if chosen.is_empty() {
                return Err(MetainfoError::EmptyPath(index));
            }
            for c in chosen {
                check_component(c)?;
            }
            out.admit(chosen.len(), chosen.iter().map(|c| c.len()).sum())?;
            files.push(TorrentFile {
                path: owned_path(chosen.iter().copied()),
                size,
            });
            index += 1;
            self.tick(1 + chosen.len()).await;
        }
        Ok(files)
    }

    /// Flattens a BEP 52 `file tree`: directories are dictionaries keyed by
    /// path component; a file is a dictionary whose only key is the empty
    /// string, mapping to `{length, pieces root}`. Walked with an explicit
    /// stack of borrowed components, so nothing is built but the files.
    /// Files come out in key order; keys out of order (which BEP 52 forbids)
    /// are sorted afterwards, so the order is always that of the sorted
    /// tree.
    ///
    /// With `build` `None` the files are only counted into `out` (nothing
    /// is allocated); with `Some(n)` they are built, `n` being the count.
    async fn v2_files(
        &mut self,
        out: &mut FileList,
        build: Option<usize>,
    ) -> Result<Vec<TorrentFile>, MetainfoError> {
        self.p
            .dict()
            .map_err(tree_err("directory is not a dictionary"))?;
        let mut files = Vec::with_capacity(build.unwrap_or(0));
        // The open directories' names, and the last key seen in each open
        // directory (one more: the root).
        let mut prefix: Vec<&'a [u8]> = Vec::new();
        let mut last: Vec<Option<&'a [u8]>> = vec![None];
        let mut unsorted = false;
        let mut pending: Option<&'a [u8]> = None;
        loop {
            let key = match pending.take() {
                Some(k) => Some(k),
                None => self.p.next_key().map_err(decode_err)?,
            };
            let Some(key) = key else {
                // A directory ended.
                last.pop();
                if prefix.pop().is_none() {
                    break;
                }
                continue;
            };
            // Every entry counts, files or not: a tree of empty directories
            // must not hold the thread either.
            self.tick(1).await;
            if key.is_empty() {
                return Err(MetainfoError::BadFileTree("file entry outside a file"));
            }
            check_component(key)?;
            if let Some(prev) = last.last_mut() {
                match *prev {
                    Some(p) if p == key => {
                        return Err(MetainfoError::BadFileTree("duplicate entry"));
                    }
                    Some(p) if p > key => unsorted = true,
                    _ => {}
                }
                *prev = Some(key);
            }
            self.p
                .dict()
                .map_err(tree_err("entry is not a dictionary"))?;
            match self.p.next_key().map_err(decode_err)? {
                // An empty directory.
                None => {}
                Some(b"") => {
                    let size = self.v2_file_length().await?;
                    if self.p.next_key().map_err(decode_err)?.is_some() {
                        return Err(MetainfoError::BadFileTree(
                            "file entry mixed with directory",
                        ));
                    }
                    if prefix.len() + 1 > MAX_PATH_DEPTH {
                        return Err(MetainfoError::PathTooDeep);
                    }
                    let bytes = prefix.iter().map(|c| c.len()).sum::<usize>() + key.len();
                    out.admit(prefix.len() + 1, bytes)?;
                    if build.is_some() {
                        files.push(TorrentFile {
                            path: owned_path(prefix.iter().copied().chain([key])),
                            size,
                        });
                    }
                    self.tick(prefix.len()).await;
                }
                Some(first) => {
                    // A directory: `first` is its first entry's name.
                    prefix.push(key);
                    last.push(None);
                    pending = Some(first);
                }
            }
        }
        if unsorted {
            files.sort_by(|a, b| {
                let a = a.path.iter().map(TorrentName::as_bytes);
                a.cmp(b.path.iter().map(TorrentName::as_bytes))
            });
            if files.windows(2).any(|w| w[0].path == w[1].path) {
                return Err(MetainfoError::BadFileTree("duplicate entry"));
            }
        }
        Ok(files)
    }

    /// A v2 file's properties (`{length, pieces root, …}`): its length.
    async fn v2_file_length(&mut self) -> Result<u64, MetainfoError> {
        self.p
            .dict()
            .map_err(tree_err("file properties not a dictionary"))?;
        let mut length = None;
        while let Some(key) = self.p.next_key().map_err(decode_err)? {
            if key == b"length" && self.p.input().get(self.p.offset()) == Some(&b'i') {
                length = Some(self.p.int().map_err(decode_err)?);
            } else {
                if key == b"length" {
                    length = None;
                }
                self.skip().await?;
            }
        }
        non_negative(length.ok_or(MetainfoError::BadFileTree("file without integer length"))?)
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
        // A nesting bomb is refused at the parser's depth limit.
        let mut bomb = b"d1:a".to_vec();
        bomb.extend(std::iter::repeat_n(b'l', 100_000));
        bomb.extend(std::iter::repeat_n(b'e', 100_000));
        bomb.push(b'e');
        assert_eq!(
            parse_info(&bomb),
            Err(MetainfoError::TooDeep(Limits::METADATA.max_depth))
        );
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

    fn v2_info(tree: B<'_>) -> Vec<u8> {
        bytes(B::D(vec![
            (b"name", B::S(b"v2")),
            (b"meta version", B::I(2)),
            (b"piece length", B::I(65536)),
            (b"file tree", tree),
        ]))
    }

    #[test]
    fn v2_keys_out_of_order_are_sorted_and_duplicates_refused() {
        // Hand-written with keys out of order (BEP 52 forbids it; the
        // result is the sorted tree's, as with sorted keys).
        let tree = b"d1:bd0:d6:lengthi2eee1:ad1:yd0:d6:lengthi3eee1:xd0:d6:lengthi1eeeee";
        let mut info = b"d9:file tree".to_vec();
        info.extend_from_slice(tree);
        info.extend_from_slice(b"4:name2:v212:piece lengthi16384ee");
        let t = parse_info(&info).unwrap();
        let got: Vec<_> = t.files.iter().map(|f| (f.display_path(), f.size)).collect();
        assert_eq!(got, [("a/x".into(), 1), ("a/y".into(), 3), ("b".into(), 2)]);
        // The same key twice in one directory.
        let dup =
            b"d9:file treed1:ad0:d6:lengthi1eee1:ad0:d6:lengthi1eeee4:name2:v212:piece lengthi1ee";
        assert_eq!(
            parse_info(dup),
            Err(MetainfoError::BadFileTree("duplicate entry"))
        );
        // Empty directories hold no files and are not an error by themselves.
        let info = v2_info(B::D(vec![(b"empty", B::D(vec![])), (b"f", v2_leaf(4))]));
        let t = parse_info(&info).unwrap();
        assert_eq!(t.files.len(), 1);
        assert_eq!(t.files[0].display_path(), "f");
        // A file entry next to directory entries.
        let mixed = v2_info(B::D(vec![(
            b"d",
            B::D(vec![
                (b"", B::D(vec![(b"length", B::I(1))])),
                (b"x", v2_leaf(1)),
            ]),
        )]));
        assert_eq!(
            parse_info(&mixed),
            Err(MetainfoError::BadFileTree(
                "file entry mixed with directory"
            ))
        );
        for (tree, why) in [
            (B::I(1), "directory is not a dictionary"),
            (B::D(vec![(b"f", B::I(1))]), "entry is not a dictionary"),
            (
                B::D(vec![(b"f", B::D(vec![(b"", B::I(1))]))]),
                "file properties not a dictionary",
            ),
            (
                B::D(vec![(
                    b"f",
                    B::D(vec![(b"", B::D(vec![(b"length", B::S(b"1"))]))]),
                )]),
                "file without integer length",
            ),
            (
                B::D(vec![(b"", B::D(vec![(b"length", B::I(1))]))]),
                "file entry outside a file",
            ),
        ] {
            assert_eq!(
                parse_info(&v2_info(tree)),
                Err(MetainfoError::BadFileTree(why))
            );
        }
    }

    /// A v2 tree of `dirs` nested directories with one file at the bottom.
    fn v2_chain(dirs: usize) -> Vec<u8> {
        let mut node = B::D(vec![(b"f", v2_leaf(1))]);
        for _ in 0..dirs {
            node = B::D(vec![(b"d", node)]);
        }
        v2_info(node)
    }

    #[test]
    fn path_depth_is_capped() {
        // v1: MAX_PATH_DEPTH components are fine, one more is not.
        let ok: Vec<&[u8]> = vec![b"d"; MAX_PATH_DEPTH];
        let t = parse_info(&multi(b"x", vec![file(1, &ok)])).unwrap();
        assert_eq!(t.files[0].path.len(), MAX_PATH_DEPTH);
        let deep: Vec<&[u8]> = vec![b"d"; MAX_PATH_DEPTH + 1];
        assert_eq!(
            parse_info(&multi(b"x", vec![file(1, &deep)])),
            Err(MetainfoError::PathTooDeep)
        );
        // v2: a file under MAX_PATH_DEPTH - 1 directories is fine.
        let t = parse_info(&v2_chain(MAX_PATH_DEPTH - 1)).unwrap();
        assert_eq!(t.files[0].path.len(), MAX_PATH_DEPTH);
        assert_eq!(
            parse_info(&v2_chain(MAX_PATH_DEPTH)),
            Err(MetainfoError::PathTooDeep)
        );
    }

    #[test]
    fn component_length_is_capped() {
        let longest = vec![b'n'; MAX_COMPONENT_LEN];
        let t = parse_info(&multi(b"x", vec![file(1, &[&longest])])).unwrap();
        assert_eq!(t.files[0].path[0].as_bytes().len(), MAX_COMPONENT_LEN);
        let long = vec![b'n'; MAX_COMPONENT_LEN + 1];
        assert_eq!(
            parse_info(&multi(b"x", vec![file(1, &[&long])])),
            Err(MetainfoError::ComponentTooLong(MAX_COMPONENT_LEN + 1))
        );
        // The name is a component too.
        assert_eq!(
            parse_info(&multi(&long, vec![file(1, &[b"a"])])),
            Err(MetainfoError::ComponentTooLong(MAX_COMPONENT_LEN + 1))
        );
        let tree = B::D(vec![(&long[..], B::D(vec![(b"f", v2_leaf(1))]))]);
        assert_eq!(
            parse_info(&v2_info(tree)),
            Err(MetainfoError::ComponentTooLong(MAX_COMPONENT_LEN + 1))
        );
    }

    #[test]
    fn file_count_is_capped() {
        // MAX_FILES files of the tersest kind; one more is refused.
        let mut list = b"d5:filesl".to_vec();
        for _ in 0..MAX_FILES {
            list.extend_from_slice(b"d6:lengthi1e4:pathl1:fee");
        }
        let tail = b"e4:name1:x12:piece lengthi1ee";
        let mut at_cap = list.clone();
        at_cap.extend_from_slice(tail);
        let t = parse_info(&at_cap).unwrap();
        assert_eq!(t.files.len(), MAX_FILES);
        drop(t);
        list.extend_from_slice(b"d6:lengthi1e4:pathl1:fee");
        list.extend_from_slice(tail);
        assert_eq!(parse_info(&list), Err(MetainfoError::TooManyFiles));
    }

    #[test]
    fn v2_repeated_directories_are_bounded_by_the_input() {
        // 60 directories of 4 KiB names over a few hundred files: every
        // file's path repeats 240 KiB of names, far more than
        // MEMORY_PER_INPUT_BYTE allows.
        let name = vec![b'd'; MAX_COMPONENT_LEN];
        let files: Vec<String> = (0..300).map(|i| format!("{i:04}")).collect();
        let mut node = B::D(files.iter().map(|f| (f.as_bytes(), v2_leaf(1))).collect());
        for _ in 0..60 {
            node = B::D(vec![(&name[..], node)]);
        }
        let info = v2_info(node);
        let budget = info.len() * MEMORY_PER_INPUT_BYTE;
        assert_eq!(
            parse_info(&info),
            Err(MetainfoError::FileListTooLarge(budget))
        );
        // A handful of such files is within the budget.
        let mut node = B::D(vec![(b"f", v2_leaf(1))]);
        for _ in 0..60 {
            node = B::D(vec![(&name[..], node)]);
        }
        assert_eq!(parse_info(&v2_info(node)).unwrap().files[0].path.len(), 61);
    }

    #[test]
    fn pauses_while_parsing_large_dictionaries() {
        let n = 2 * PAUSE_EVERY;
        let files: Vec<B<'_>> = (0..n).map(|_| file(2, &[b"f"])).collect();
        let info = multi(b"many", files);
        let mut pauses = 0;
        let t = futures_lite::future::block_on(parse_info_pausing(&info, || {
            pauses += 1;
            std::future::ready(())
        }))
        .unwrap();
        assert_eq!(t, parse_info(&info).unwrap());
        // Files of 2 values each (the entry and its one component), one
        // pause per PAUSE_EVERY.
        assert_eq!(pauses, 2 * n / PAUSE_EVERY);
        // A v2 tree of empty directories pauses too (each entry counts).
        let mut tree = b"d9:file treed".to_vec();
        for i in 0..2 * PAUSE_EVERY {
            tree.extend_from_slice(format!("8:{i:08}de").as_bytes());
        }
        tree.extend_from_slice(b"e4:name1:x12:piece lengthi1ee");
        let mut pauses = 0;
        let r = futures_lite::future::block_on(parse_info_pausing(&tree, || {
            pauses += 1;
            std::future::ready(())
        }));
        assert_eq!(r, Err(MetainfoError::EmptyFileList));
        // Skipped once (three values an entry: 6 pauses), then walked to
        // count the files (one an entry: 2 more).
        assert_eq!(pauses, 8);
        // Unknown values are skipped in steps, with pauses too.
        let mut big = b"d1:xl".to_vec();
        big.extend(std::iter::repeat_n(&b"i1e"[..], 10 * PAUSE_EVERY).flatten());
        big.extend_from_slice(b"e6:lengthi1e4:name1:x12:piece lengthi1ee");
        let mut pauses = 0;
        futures_lite::future::block_on(parse_info_pausing(&big, || {
            pauses += 1;
            std::future::ready(())
        }))
        .unwrap();
        assert!(pauses >= 9, "{pauses}");
    }

    #[test]
    fn repeated_keys_are_layout_errors() {
        let info = b"d6:lengthi1e6:lengthi2e4:name1:x12:piece lengthi1ee";
        assert!(matches!(parse_info(info), Err(MetainfoError::Layout(_))));
        let info = multi(
            b"x",
            vec![B::D(vec![
                (b"length", B::I(1)),
                (b"path", B::L(vec![B::S(b"a")])),
                (b"path", B::L(vec![B::S(b"b")])),
            ])],
        );
        assert!(matches!(parse_info(&info), Err(MetainfoError::Layout(_))));
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
        let sha1 = Id(Sha1::digest(&info).into());
        let sha256 = Sha256::digest(&info);
        let mut truncated = Id([0u8; 20]);
        truncated.0.copy_from_slice(&sha256[..20]);
        assert_eq!(sha1_infohash(&info), sha1);
        assert_eq!(sha256_truncated_infohash(&info), truncated);
        assert_eq!(infohash_matches(&info, &sha1), Some(HashKind::Sha1));
        assert_eq!(
            infohash_matches(&info, &truncated),
            Some(HashKind::Sha256Truncated)
        );
        assert_eq!(infohash_matches(&info, &Id([0u8; 20])), None);
        // One flipped byte in the payload no longer matches.
        let mut tampered = info.clone();
        tampered[5] ^= 1;
        assert_eq!(infohash_matches(&tampered, &sha1), None);
        // Known answers: SHA-1 and SHA-256 of "de" (an empty dictionary).
        let empty = Id([
            0x60, 0x0c, 0xcd, 0x1b, 0x71, 0x56, 0x92, 0x32, 0xd0, 0x1d, 0x11, 0x0b, 0xc6, 0x3e,
            0x90, 0x6b, 0xea, 0xb0, 0x4d, 0x8c,
        ]);
        assert_eq!(infohash_matches(b"de", &empty), Some(HashKind::Sha1));
        let empty256 = Id([
            0x95, 0x9a, 0x45, 0xd4, 0x4e, 0x6f, 0xcf, 0x58, 0x36, 0x1e, 0xd0, 0x04, 0x68, 0x15,
            0x56, 0xfe, 0x50, 0x12, 0x9f, 0x21,
        ]);
        assert_eq!(
            infohash_matches(b"de", &empty256),
            Some(HashKind::Sha256Truncated)
        );
    }
}
