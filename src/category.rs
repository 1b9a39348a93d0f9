//! What kind of content a torrent holds, inferred from its files.
//!
//! The DHT says nothing about what a torrent *is*; its info dictionary has
//! a name and a file list. So the category is an inference, made once when
//! a torrent is stored (and for older rows when the database is migrated):
//!
//! 1. Each file's bytes count for the kind of its extension: video, audio,
//!    book (e-books and comics) or software (installers and packages).
//! 2. The kind holding at least half of the torrent's bytes decides it.
//!    Otherwise (archives, disc images, mixed or unknown content) it is
//!    [`Category::Other`]: no guess is better than a wrong one.
//! 3. Video is [`Category::Tv`] when the torrent's name or a video file's
//!    path carries an episode or season mark (`S01E02`, `S01`, `1x02`,
//!    `Season 3`), [`Category::Movies`] otherwise.
//!
//! The categories are Newznab's top-level ones, so Torznab clients
//! (Prowlarr, Sonarr, Radarr) can ask for the ones they sync. There is no
//! "XXX" category: telling it apart would need word lists, and a crawler
//! that guessed would mislabel both ways. Costs: one pass over the file
//! list at store time; one small integer per row.

use std::sync::LazyLock;

use regex::Regex;

/// A torrent's inferred kind of content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    /// Video without an episode mark (Newznab 2000).
    Movies,
    /// Music and audio books (Newznab 3000).
    Audio,
    /// Software: installers, packages (Newznab 4000, "PC").
    Software,
    /// Video with an episode or season mark (Newznab 5000).
    Tv,
    /// E-books and comics (Newznab 7000).
    Books,
    /// Anything else, or no kind holding half the bytes (Newznab 8000).
    Other,
}

/// The kind of one file, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Video,
    Audio,
    Book,
    Software,
}

const VIDEO: &[&str] = &[
    "mkv", "mp4", "avi", "m4v", "mov", "wmv", "ts", "m2ts", "mts", "webm", "mpg", "mpeg", "flv",
    "vob", "ogv", "rmvb", "3gp",
];
const AUDIO: &[&str] = &[
    "mp3", "flac", "m4a", "m4b", "aac", "ogg", "oga", "opus", "wav", "ape", "wv", "alac", "aiff",
    "dsf", "wma",
];
const BOOK: &[&str] = &[
    "epub", "mobi", "azw", "azw3", "pdf", "djvu", "fb2", "cbz", "cbr", "cb7",
];
const SOFTWARE: &[&str] = &[
    "exe", "msi", "dmg", "apk", "deb", "rpm", "appimage", "pkg", "msix", "appx", "xapk",
];

/// An episode or season mark, as release names write them.
static EPISODE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r"(?i)(?:^|[^a-z0-9])(?:s\d{1,2}e\d{1,4}|s\d{1,2}(?:[^a-z0-9]|$)|\d{1,2}x\d{2,3}(?:[^0-9]|$)|season[ ._-]?\d{1,2})",
    )
    .ok()
});

fn kind_of(path: &str) -> Option<Kind> {
    let file = path.rsplit('/').next().unwrap_or(path);
    let (_, ext) = file.rsplit_once('.')?;
    let ext = ext.to_ascii_lowercase();
    let ext = ext.as_str();
    if VIDEO.contains(&ext) {
        Some(Kind::Video)
    } else if AUDIO.contains(&ext) {
        Some(Kind::Audio)
    } else if BOOK.contains(&ext) {
        Some(Kind::Book)
    } else if SOFTWARE.contains(&ext) {
        Some(Kind::Software)
    } else {
        None
    }
}

fn has_episode_mark(text: &str) -> bool {
    EPISODE.as_ref().is_some_and(|r| r.is_match(text))
}

impl Category {
    /// Every category, in Newznab id order.
    pub const ALL: [Category; 6] = [
        Category::Movies,
        Category::Audio,
        Category::Software,
        Category::Tv,
        Category::Books,
        Category::Other,
    ];

    /// The Newznab/Torznab top-level id.
    pub fn newznab_id(self) -> u32 {
        match self {
            Category::Movies => 2000,
            Category::Audio => 3000,
            Category::Software => 4000,
            Category::Tv => 5000,
            Category::Books => 7000,
            Category::Other => 8000,
        }
    }

    /// The Newznab name of the category.
    pub fn newznab_name(self) -> &'static str {
        match self {
            Category::Movies => "Movies",
            Category::Audio => "Audio",
            Category::Software => "PC",
            Category::Tv => "TV",
            Category::Books => "Books",
            Category::Other => "Other",
        }
    }

    /// What the web UI shows.
    pub fn label(self) -> &'static str {
        match self {
            Category::Software => "Software",
            c => c.newznab_name(),
        }
    }

    /// The word the web UI and the JSON API use.
    pub fn slug(self) -> &'static str {
        match self {
            Category::Movies => "movies",
            Category::Audio => "audio",
            Category::Software => "software",
            Category::Tv => "tv",
            Category::Books => "books",
            Category::Other => "other",
        }
    }

    /// The category a slug names.
    pub fn from_slug(s: &str) -> Option<Category> {
        Self::ALL.into_iter().find(|c| c.slug() == s)
    }

    /// The category a Newznab id (top-level or a subcategory, e.g. 5040
    /// "TV/HD") falls in; `None` for ids of categories nothing here has
    /// (6000 XXX, 1000 Console) or that Newznab does not define.
    pub fn from_newznab(id: u32) -> Option<Category> {
        Self::ALL
            .into_iter()
            .find(|c| id / 1000 == c.newznab_id() / 1000)
    }

    /// The category stored as `id` (what [`Self::newznab_id`] wrote); an
    /// unknown or missing value reads as [`Category::Other`].
    pub fn from_stored(id: Option<i64>) -> Category {
        id.and_then(|n| u32::try_from(n).ok())
            .and_then(Self::from_newznab)
            .unwrap_or(Category::Other)
    }

    /// Infers the category of a torrent named `name` with `files` (each a
    /// `/`-joined path and its size in bytes). See the module docs.
    pub fn classify<'a>(name: &str, files: impl IntoIterator<Item = (&'a str, u64)>) -> Category {
        let mut bytes = [0u64; 4];
        let mut total = 0u64;
        let mut episode_in_files = false;
        for (path, size) in files {
            // A zero-byte file still says something about a tiny torrent.
            let weight = size.max(1);
            total = total.saturating_add(weight);
            if let Some(k) = kind_of(path) {
                bytes[k as usize] = bytes[k as usize].saturating_add(weight);
                if k == Kind::Video && !episode_in_files {
                    episode_in_files = has_episode_mark(path);
                }
            }
        }
        let kinds = [Kind::Video, Kind::Audio, Kind::Book, Kind::Software];
        let top = kinds
            .into_iter()
            .max_by_key(|k| bytes[*k as usize])
            .unwrap_or(Kind::Video);
        // At least half of the bytes (and something at all).
        if total == 0 || bytes[top as usize].saturating_mul(2) < total {
            return Category::Other;
        }
        match top {
            Kind::Video if episode_in_files || has_episode_mark(name) => Category::Tv,
            Kind::Video => Category::Movies,
            Kind::Audio => Category::Audio,
            Kind::Book => Category::Books,
            Kind::Software => Category::Software,
        }
    }

    /// [`Self::classify`] for a parsed torrent.
    pub fn of_torrent(t: &crate::metainfo::Torrent) -> Category {
        let paths: Vec<(String, u64)> =
            t.files.iter().map(|f| (f.display_path(), f.size)).collect();
        Self::classify(
            &t.name.display(),
            paths.iter().map(|(p, s)| (p.as_str(), *s)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(name: &str, size: u64) -> Category {
        Category::classify(name, [(name, size)])
    }

    #[test]
    fn single_files_by_extension() {
        assert_eq!(
            one("Some.Film.2019.1080p.BluRay.x264.mkv", 8 << 30),
            Category::Movies
        );
        assert_eq!(
            one("Show.Name.S02E05.720p.HDTV.x264.mkv", 1 << 30),
            Category::Tv
        );
        assert_eq!(one("show.name.1x05.avi", 1 << 28), Category::Tv);
        assert_eq!(one("Artist - Song.FLAC", 30 << 20), Category::Audio);
        assert_eq!(one("A Novel.epub", 1 << 20), Category::Books);
        assert_eq!(one("setup-tool-2.3.exe", 80 << 20), Category::Software);
        assert_eq!(one("backup.rar", 1 << 30), Category::Other);
        assert_eq!(one("no extension", 100), Category::Other);
        // A resolution is not an episode mark.
        assert_eq!(one("Film.1920x1080.mp4", 1 << 30), Category::Movies);
        assert_eq!(
            one("Film.2160p.HDR.1x1.sample.mp4", 1 << 30),
            Category::Movies
        );
    }

    #[test]
    fn folders_by_the_kind_holding_most_bytes() {
        let season = [
            ("Show.S01.1080p/Show.S01E01.mkv", 2u64 << 30),
            ("Show.S01.1080p/Show.S01E02.mkv", 2 << 30),
            ("Show.S01.1080p/subs/en.srt", 50 << 10),
        ];
        assert_eq!(Category::classify("Show.S01.1080p", season), Category::Tv);
        // The season mark in the name alone is enough.
        let pack = [("Show/ep1.mkv", 1u64 << 30), ("Show/ep2.mkv", 1 << 30)];
        assert_eq!(
            Category::classify("Show Season 2 Complete", pack),
            Category::Tv
        );
        assert_eq!(Category::classify("Show Complete", pack), Category::Movies);
        let album = [
            ("Album/01.mp3", 8u64 << 20),
            ("Album/02.mp3", 9 << 20),
            ("Album/cover.jpg", 2 << 20),
        ];
        assert_eq!(Category::classify("Album (2001)", album), Category::Audio);
        // Half the bytes are needed: a video beside a bigger archive is not
        // a film.
        let mixed = [("x/sample.mkv", 100u64 << 20), ("x/data.rar", 4 << 30)];
        assert_eq!(Category::classify("x", mixed), Category::Other);
        assert_eq!(Category::classify("empty", []), Category::Other);
        // Zero-byte files count as one byte each.
        assert_eq!(Category::classify("b", [("b/a.pdf", 0)]), Category::Books);
    }

    #[test]
    fn newznab_ids_and_slugs_round_trip() {
        for c in Category::ALL {
            assert_eq!(Category::from_newznab(c.newznab_id()), Some(c));
            assert_eq!(Category::from_slug(c.slug()), Some(c));
            assert_eq!(Category::from_stored(Some(i64::from(c.newznab_id()))), c);
        }
        // Subcategories fall in their parent; unknown ones in none.
        assert_eq!(Category::from_newznab(5040), Some(Category::Tv));
        assert_eq!(Category::from_newznab(2045), Some(Category::Movies));
        assert_eq!(Category::from_newznab(6000), None);
        assert_eq!(Category::from_newznab(1000), None);
        assert_eq!(Category::from_newznab(100_040), None);
        assert_eq!(Category::from_stored(None), Category::Other);
        assert_eq!(Category::from_stored(Some(-5)), Category::Other);
        assert_eq!(Category::from_slug("xxx"), None);
    }
}
