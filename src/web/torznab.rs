//! Torznab (`/torznab/api`), the Newznab dialect Prowlarr, Sonarr, Radarr
//! and Jackett speak: `t=caps`, `t=search`, `t=tvsearch` and `t=movie`,
//! answered as RSS 2.0 with the torznab namespace.
//!
//! What maps and what does not, honestly:
//! * Categories are inferred from each torrent's files when it is stored
//!   ([`crate::category`]): Movies 2000, Audio 3000, PC 4000, TV 5000,
//!   Books 7000, Other 8000, the top-level ids caps lists. `cat=` keeps the
//!   items of the categories its ids fall in (5040 "TV/HD" is TV); ids of
//!   categories nothing here has (6000 XXX, 1000 Console) keep nothing.
//!   Without `cat=`, every category answers. Prowlarr syncs an indexer to
//!   Sonarr or Radarr only when caps has one of the app's categories.
//! * `tvsearch` and `movie` are text searches on `q`, in TV and Movies
//!   when no `cat=` says otherwise. `tvsearch` adds the release naming's
//!   episode word: `SxxEyy` with `season` and `ep`, `Sxx` with `season`
//!   alone, and for daily shows (`season=2024&ep=03/15`) the date's words.
//!   Ids (imdbid, tvdbid, …) are not known and not advertised.
//! * Music and book searches are not offered (caps says `no`); asking for
//!   them answers error 203, "function not available".
//! * `seeders`, `leechers` and `peers` attributes appear only for torrents
//!   that were scraped; `pubDate` is when the infohash was discovered.
//! * No `q` lists the newest torrents (what Prowlarr's test and RSS sync
//!   ask for).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{blocking, form_pairs, magnet, App, LIMIT_MAX};
use crate::category::Category;
use crate::store::{unix_secs, SearchHit, SearchPage, SortKey};

/// Items per page when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 50;
/// The torznab XML namespace.
pub const NS: &str = "http://torznab.com/schemas/2015/feed";

/// `text` safe inside XML character data and double-quoted attributes.
/// Characters XML 1.0 cannot hold at all (most C0 controls, lone
/// surrogates cannot occur in a `str`, U+FFFE/U+FFFF) become U+FFFD, so
/// a hostile torrent name cannot make the whole feed unparseable.
pub fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

fn xml_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        body,
    )
        .into_response()
}

/// A Newznab error document: 100 bad credentials, 200 missing parameter,
/// 201 bad parameter, 202 no such function, 203 function not available,
/// 900 other. Sent with HTTP 200
/// as Newznab servers do: Sonarr and Prowlarr read the code from the
/// document (and tell the user "invalid API key") only on a 200.
pub fn error(code: u32, description: &str) -> Response {
    xml_response(
        StatusCode::OK,
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<error code=\"{code}\" description=\"{}\"/>\n",
            xml_escape(description)
        ),
    )
}

/// The caps document.
pub fn caps() -> String {
    let categories: String = Category::ALL
        .iter()
        .map(|c| {
            format!(
                "    <category id=\"{}\" name=\"{}\"/>\n",
                c.newznab_id(),
                c.newznab_name()
            )
        })
        .collect();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<caps>
  <server version="1.0" title="dht-hunter" strapline="torrents harvested from the BitTorrent DHT"/>
  <limits max="{LIMIT_MAX}" default="{DEFAULT_LIMIT}"/>
  <searching>
    <search available="yes" supportedParams="q"/>
    <tv-search available="yes" supportedParams="q,season,ep"/>
    <movie-search available="yes" supportedParams="q"/>
    <music-search available="no" supportedParams="q"/>
    <audio-search available="no" supportedParams="q"/>
    <book-search available="no" supportedParams="q"/>
  </searching>
  <categories>
{categories}  </categories>
</caps>
"#
    )
}

/// RFC 822 date, as RSS wants it.
fn rss_date(t: std::time::SystemTime) -> String {
    match jiff::Timestamp::from_second(unix_secs(t)) {
        Ok(ts) => ts.strftime("%a, %d %b %Y %H:%M:%S +0000").to_string(),
        Err(_) => "Thu, 01 Jan 1970 00:00:00 +0000".into(),
    }
}

/// The RSS feed of one page of hits. `base` is the server's own URL
/// (scheme and host), for item links; `offset` echoes the request.
pub fn feed(page: &SearchPage, offset: usize, base: &str) -> String {
    let mut x = String::with_capacity(1024 + page.hits.len() * 1024);
    let total = if page.counted_capped {
        // "More than N": the caller can page on while items come back.
        offset as u64 + page.hits.len() as u64 + u64::from(page.more)
    } else {
        page.counted
    }
    .max(page.counted);
    let _ = write!(
        x,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <rss version=\"2.0\" xmlns:atom=\"http://www.w3.org/2005/Atom\" xmlns:torznab=\"{NS}\">\n\
         <channel>\n\
         <atom:link href=\"{base}/torznab/api\" rel=\"self\" type=\"application/rss+xml\"/>\n\
         <title>dht-hunter</title>\n\
         <description>Torrents harvested from the BitTorrent DHT</description>\n\
         <link>{base}/</link>\n\
         <language>en-us</language>\n\
         <category>search</category>\n\
         <torznab:response offset=\"{offset}\" total=\"{total}\"/>\n"
    );
    for h in &page.hits {
        item(&mut x, h, base);
    }
    x.push_str("</channel>\n</rss>\n");
    x
}

fn item(x: &mut String, h: &SearchHit, base: &str) {
    let hex = crate::id::Id(h.infohash).to_hex();
    let name = xml_escape(&h.name);
    let magnet = xml_escape(&magnet(&h.infohash, &h.name));
    let date = rss_date(h.discovered_at);
    let size = h.total_size;
    let _ = write!(
        x,
        "<item>\n\
         <title>{name}</title>\n\
         <guid isPermaLink=\"false\">{hex}</guid>\n\
         <link>{magnet}</link>\n\
         <comments>{base}/t/{hex}</comments>\n\
         <pubDate>{date}</pubDate>\n\
         <size>{size}</size>\n\
         <description>{name}</description>\n\
         <enclosure url=\"{magnet}\" length=\"{size}\" type=\"application/x-bittorrent;x-scheme-handler/magnet\"/>\n\
         <category>{cat}</category>\n\
         <torznab:attr name=\"category\" value=\"{cat}\"/>\n\
         <torznab:attr name=\"size\" value=\"{size}\"/>\n\
         <torznab:attr name=\"files\" value=\"{files}\"/>\n\
         <torznab:attr name=\"infohash\" value=\"{hex}\"/>\n\
         <torznab:attr name=\"magneturl\" value=\"{magnet}\"/>\n",
        files = h.file_count,
        cat = h.category.newznab_id(),
    );
    if let Some(s) = h.seeders {
        let _ = writeln!(x, "<torznab:attr name=\"seeders\" value=\"{s}\"/>");
    }
    if let Some(l) = h.leechers {
        let _ = writeln!(x, "<torznab:attr name=\"leechers\" value=\"{l}\"/>");
    }
    if let (Some(s), Some(l)) = (h.seeders, h.leechers) {
        let _ = writeln!(
            x,
            "<torznab:attr name=\"peers\" value=\"{}\"/>",
            u64::from(s) + u64::from(l)
        );
    }
    x.push_str("</item>\n");
}

/// The request's own scheme and host, for links in the feed: the `Host`
/// header, and `https` when a reverse proxy says so
/// (`X-Forwarded-Proto: https`, as the README's set-up sends).
fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .unwrap_or("localhost");
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
    format!("{}://{host}", if https { "https" } else { "http" })
}

/// The categories a `cat=` list asks for: `None` without one (any
/// category), and an empty list when none of its ids is a category here.
fn parse_categories(v: Option<&str>) -> Result<Option<Vec<Category>>, ()> {
    let Some(v) = v else { return Ok(None) };
    let mut out = Vec::new();
    for id in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let id: u32 = id.parse().map_err(|_| ())?;
        if let Some(c) = Category::from_newznab(id) {
            if !out.contains(&c) {
                out.push(c);
            }
        }
    }
    Ok(Some(out))
}

/// The episode words `tvsearch` adds to `q`: `SxxEyy`, `Sxx`, or a daily
/// show's date (`season=2024&ep=03/15` gives `2024 03 15`, the words a
/// dated release name has). `Err` names the bad parameter.
fn episode_words(season: Option<&str>, ep: Option<&str>) -> Result<String, &'static str> {
    let season_num = season
        .map(str::parse::<u32>)
        .transpose()
        .map_err(|_| "season")?;
    match (season_num, ep) {
        (Some(s), Some(e)) => match e.parse::<u32>() {
            Ok(e) => Ok(format!("S{s:02}E{e:02}")),
            // A daily show: the year as season, the day as `MM/DD`.
            Err(_) => {
                let parts: Vec<&str> = e.split(['/', '-', '.']).collect();
                let ok = parts.len() == 2
                    && parts.iter().all(|p| {
                        !p.is_empty() && p.len() <= 2 && p.bytes().all(|b| b.is_ascii_digit())
                    });
                if !ok {
                    return Err("ep");
                }
                Ok(format!("{s} {:0>2} {:0>2}", parts[0], parts[1]))
            }
        },
        (Some(s), None) => Ok(format!("S{s:02}")),
        // An episode without a season names nothing in release names.
        (None, _) => Ok(String::new()),
    }
}

/// `GET /torznab/api?t=…` (the API key was checked by the guard).
pub(super) async fn api(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let pairs = form_pairs(q.as_deref().unwrap_or(""));
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    };
    let Some(t) = get("t") else {
        return error(200, "Missing parameter (t)");
    };
    // The parameter's value, or the name of the bad parameter.
    let num = |k: &'static str, default: usize| -> Result<usize, &'static str> {
        match get(k) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| k),
        }
    };
    let mut text = get("q").unwrap_or("").to_owned();
    let asked = match parse_categories(get("cat")) {
        Ok(c) => c,
        Err(()) => return error(201, "Incorrect parameter (cat)"),
    };
    // A `cat=` of categories nothing here has: an empty feed, not
    // everything.
    let nothing = asked.as_ref().is_some_and(Vec::is_empty);
    let categories = match t {
        "caps" => return xml_response(StatusCode::OK, caps()),
        "search" => asked.unwrap_or_default(),
        "movie" => asked.unwrap_or_else(|| vec![Category::Movies]),
        "tvsearch" | "tv" => {
            match episode_words(get("season"), get("ep")) {
                Ok(w) if w.is_empty() => {}
                Ok(w) => {
                    let _ = write!(text, " {w}");
                }
                Err(k) => return error(201, &format!("Incorrect parameter ({k})")),
            }
            asked.unwrap_or_else(|| vec![Category::Tv])
        }
        "music" | "audio" | "book" => return error(203, &format!("Function not available ({t})")),
        _ => return error(202, &format!("No such function ({t})")),
    };
    let offset = match num("offset", 0) {
        Ok(o) => o.min(super::OFFSET_MAX),
        Err(k) => return error(201, &format!("Incorrect parameter ({k})")),
    };
    let limit = match num("limit", DEFAULT_LIMIT) {
        Ok(l) => l.clamp(1, LIMIT_MAX),
        Err(k) => return error(201, &format!("Incorrect parameter ({k})")),
    };
    let base = base_url(&headers);
    if nothing {
        return xml_response(StatusCode::OK, feed(&SearchPage::empty(), offset, &base));
    }
    let page = blocking(move || {
        app.reader
            .search_page(&text, &categories, SortKey::Relevance, offset, limit)
    })
    .await;
    match page {
        Ok(page) => xml_response(StatusCode::OK, feed(&page, offset, &base)),
        Err(e) => {
            log::warn!("torznab: store: {e}");
            error(900, "The store is not answering")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_keeps_the_document_well_formed() {
        assert_eq!(
            xml_escape("a<b>&\"c'\u{1}\u{1b}\td"),
            "a&lt;b&gt;&amp;&quot;c&apos;\u{fffd}\u{fffd}\td"
        );
        assert_eq!(xml_escape("日本 ü"), "日本 ü");
    }

    #[test]
    fn categories_and_episode_words() {
        assert_eq!(parse_categories(None), Ok(None));
        assert_eq!(
            parse_categories(Some("5030,5040,2000")),
            Ok(Some(vec![Category::Tv, Category::Movies]))
        );
        assert_eq!(parse_categories(Some("6000")), Ok(Some(vec![])));
        assert_eq!(parse_categories(Some("tv")), Err(()));
        assert_eq!(episode_words(Some("3"), Some("7")), Ok("S03E07".into()));
        assert_eq!(episode_words(Some("3"), None), Ok("S03".into()));
        assert_eq!(
            episode_words(Some("2024"), Some("3/15")),
            Ok("2024 03 15".into())
        );
        assert_eq!(episode_words(None, None), Ok(String::new()));
        assert_eq!(episode_words(Some("x"), None), Err("season"));
        assert_eq!(episode_words(Some("1"), Some("a/b")), Err("ep"));
        assert_eq!(episode_words(None, Some("2")), Ok(String::new()));
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "example.org".parse().unwrap());
        assert_eq!(base_url(&h), "http://example.org");
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        assert_eq!(base_url(&h), "https://example.org");
    }

    #[test]
    fn caps_lists_every_category() {
        let c = caps();
        for cat in Category::ALL {
            assert!(
                c.contains(&format!(
                    "<category id=\"{}\" name=\"{}\"/>",
                    cat.newznab_id(),
                    cat.newznab_name()
                )),
                "{cat:?} missing from caps"
            );
        }
    }

    #[test]
    fn dates_are_rfc_822() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert_eq!(rss_date(t), "Tue, 14 Nov 2023 22:13:20 +0000");
    }
}
