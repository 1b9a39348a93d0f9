//! Text as the store indexes and shows it: search tokens (one rule for
//! both back ends, whatever the database locale) and the columns a name
//! or path is kept in.

use std::borrow::Cow;
use std::collections::HashSet;

use crate::metainfo::{Torrent, TorrentFile, TorrentName};

/// Longest search token, in bytes: longer words are cut (at a character
/// boundary) when indexed and when queried alike, so they still match.
/// A PostgreSQL lexeme must stay under 2 KiB; nobody searches for 200-byte
/// words.
pub const MAX_TOKEN_BYTES: usize = 200;
/// Most distinct tokens indexed for one torrent (name first, then paths).
pub const MAX_INDEXED_TOKENS: usize = 20_000;
/// Most bytes of tokens indexed for one torrent. With
/// [`MAX_INDEXED_TOKENS`] this keeps a PostgreSQL `tsvector` (lexemes under
/// 2 KiB, 1 MiB in all) far from its limits. `array_to_tsvector` does not
/// check them: on PostgreSQL 15 a longer lexeme or a larger vector is
/// stored corrupt (its offsets wrap) and nothing in it can be found, so
/// without these caps one torrent with many long file names would be
/// unsearchable, and could fail its batch on a version that checks.
pub const MAX_INDEXED_BYTES: usize = 256 * 1024;

/// Splits text into lowercase alphanumeric words: the shared tokenizer for
/// indexing and querying, so SQLite and PostgreSQL agree on what matches.
/// Duplicates are dropped (first occurrence kept); words are cut to
/// [`MAX_TOKEN_BYTES`].
pub fn search_tokens<'a>(texts: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    tokens_capped(texts, usize::MAX, usize::MAX)
}

/// [`search_tokens`], stopping before `max_tokens` tokens or `max_bytes`
/// bytes (each token counted with one separator byte).
pub(super) fn tokens_capped<'a>(
    texts: impl IntoIterator<Item = &'a str>,
    max_tokens: usize,
    max_bytes: usize,
) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut bytes = 0usize;
    // Returns false once a cap is reached.
    let mut push = |mut w: String| {
        if w.len() > MAX_TOKEN_BYTES {
            let mut end = MAX_TOKEN_BYTES;
            while !w.is_char_boundary(end) {
                end -= 1;
            }
            w.truncate(end);
        }
        if out.len() >= max_tokens || bytes.saturating_add(w.len() + 1) > max_bytes {
            return false;
        }
        if seen.insert(w.clone()) {
            bytes += w.len() + 1;
            out.push(w);
        }
        true
    };
    for text in texts {
        for word in text.split(|c: char| !c.is_alphanumeric()) {
            // Scripts written without spaces (Han, kana, Hangul) are indexed
            // as overlapping character bigrams, as CJK search engines do, so
            // any substring of two or more characters finds its name.
            let chars: Vec<char> = word.chars().collect();
            let mut i = 0;
            while i < chars.len() {
                let cjk = is_cjk(chars[i]);
                let start = i;
                while i < chars.len() && is_cjk(chars[i]) == cjk {
                    i += 1;
                }
                let run = &chars[start..i];
                let more = if !cjk {
                    push(run.iter().collect::<String>().to_lowercase())
                } else if run.len() == 1 {
                    push(run[0].to_string())
                } else {
                    run.windows(2).all(|pair| push(pair.iter().collect()))
                };
                if !more {
                    return out;
                }
            }
        }
    }
    out
}

/// Whether a terminal may act on `c` instead of showing it: control
/// characters (C0, ESC included, DEL, C1) and the Unicode bidirectional
/// overrides and isolates (which reorder what is displayed).
pub fn unsafe_on_terminal(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` made safe to print on a terminal: names and paths are data from
/// strangers, not terminal commands. What [`unsafe_on_terminal`] names is
/// written as `\x1b` / `\u{202e}` escapes; everything else is left as is.
pub fn printable(text: &str) -> Cow<'_, str> {
    let unsafe_char = unsafe_on_terminal;
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !unsafe_char(c) {
            out.push(c);
        } else if (c as u32) < 0x80 {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        }
    }
    Cow::Owned(out)
}

/// Han, Hiragana, Katakana and Hangul: scripts written without spaces.
pub(super) fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30ff      // Hiragana, Katakana
        | 0x3400..=0x4dbf    // CJK extension A
        | 0x4e00..=0x9fff    // CJK unified ideographs
        | 0xac00..=0xd7af    // Hangul syllables
        | 0xf900..=0xfaff    // CJK compatibility ideographs
        | 0xff66..=0xff9f    // half-width Katakana
        | 0x20000..=0x2fa1f) // CJK extensions B–F, compatibility supplement
}

/// The text to index for a torrent: name and file paths, tokenized, within
/// [`MAX_INDEXED_TOKENS`] and [`MAX_INDEXED_BYTES`].
pub(super) fn search_body(t: &Torrent) -> String {
    let name = t.name.display();
    let paths: Vec<String> = t.files.iter().map(TorrentFile::display_path).collect();
    tokens_capped(
        std::iter::once(name.as_ref()).chain(paths.iter().map(String::as_str)),
        MAX_INDEXED_TOKENS,
        MAX_INDEXED_BYTES,
    )
    .join(" ")
}

/// Text column value plus the raw bytes when the text is not exact.
/// NUL is replaced too: PostgreSQL `text` cannot hold it.
pub(super) fn text_and_raw(bytes: &[u8], lossy: String) -> (String, Option<Vec<u8>>) {
    let text = if lossy.contains('\0') {
        lossy.replace('\0', "\u{FFFD}")
    } else {
        lossy
    };
    let raw = (text.as_bytes() != bytes).then(|| bytes.to_vec());
    (text, raw)
}

pub(super) fn name_columns(name: &TorrentName) -> (String, Option<Vec<u8>>) {
    text_and_raw(name.as_bytes(), name.display().into_owned())
}

pub(super) fn path_columns(f: &TorrentFile) -> (String, Option<Vec<u8>>) {
    text_and_raw(&f.raw_path(), f.display_path())
}
