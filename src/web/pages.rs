//! The HTML pages: search, torrent, status. Server-rendered with maud
//! (every value escaped), no script: plots are inline SVG drawn here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::live::{rate, rate_series, Sample, HISTORY};
use super::{blocking, form_pairs, magnet, parse_infohash, App, SearchParams};
use crate::category::Category;
use crate::filter::human_bytes;
use crate::store::{rfc3339, unix_secs, SearchHit, SortKey, Stats, TorrentDetail};

/// Hits per search page.
const PAGE_SIZE: usize = 50;
/// Most files a torrent page lists.
const FILES_SHOWN: usize = 5000;
/// Deepest directory level drawn as a level; deeper components are shown
/// joined in one name (hostile paths may nest thousands deep).
const TREE_DEPTH_MAX: usize = 24;

const STYLE: &str = r#"
:root{--bg:#f7f7f5;--fg:#1d1d1f;--mut:#6b6b70;--acc:#2f6fdf;--card:#fff;--line:#e3e3e0}
@media (prefers-color-scheme:dark){:root{--bg:#141416;--fg:#e8e8ea;--mut:#9a9aa2;--acc:#7aa7ff;--card:#1d1d21;--line:#2e2e34}}
*{box-sizing:border-box}body{margin:0;font:15px/1.45 system-ui,sans-serif;background:var(--bg);color:var(--fg)}
header{display:flex;gap:1em;align-items:center;flex-wrap:wrap;padding:.7em 1.2em;background:var(--card);border-bottom:1px solid var(--line)}
header .brand{font-weight:700;color:var(--fg);text-decoration:none;font-size:1.1em}
header form{display:flex;gap:.4em;flex:1;min-width:260px}header input[type=search]{flex:1;padding:.45em .6em;font-size:1em;border:1px solid var(--line);border-radius:6px;background:var(--bg);color:var(--fg)}
button,select{padding:.45em .7em;border:1px solid var(--line);border-radius:6px;background:var(--bg);color:var(--fg);font-size:.95em}
nav a{margin-left:.8em}a{color:var(--acc)}main{max-width:1100px;margin:1em auto;padding:0 1.2em}
table{width:100%;border-collapse:collapse;background:var(--card);border:1px solid var(--line);border-radius:8px;overflow:hidden}
th,td{padding:.45em .6em;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}th{font-size:.85em;color:var(--mut);font-weight:600}
td.num,th.num{text-align:right;white-space:nowrap}td.name{word-break:break-word}.mut{color:var(--mut)}
.pager{display:flex;gap:1em;justify-content:space-between;margin:1em 0}.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:1em;margin:1em 0}
.kv{display:grid;grid-template-columns:max-content 1fr;gap:.3em 1.2em}.kv dt{color:var(--mut)}.kv dd{margin:0;word-break:break-all}
.magnet{display:inline-block;margin:.6em 0;padding:.5em .9em;background:var(--acc);color:#fff;border-radius:6px;text-decoration:none;font-weight:600}
ul.tree{list-style:none;padding-left:1.1em;margin:.2em 0}ul.tree li{margin:.1em 0;word-break:break-word}summary{cursor:pointer}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:1em}svg text{fill:var(--mut);font-size:11px}
.big{font-size:1.6em;font-weight:700}h1{font-size:1.35em;word-break:break-word}
"#;

fn layout(
    title: &str,
    q: &str,
    cat: Option<Category>,
    sort: SortKey,
    refresh: bool,
    body: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if refresh { meta http-equiv="refresh" content="10"; }
                title { (title) " · dht-hunter" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    a.brand href="/" { "dht-hunter" }
                    form method="get" action="/" role="search" {
                        input type="search" name="q" value=(q) placeholder="Search names and file paths" aria-label="Search";
                        select name="cat" aria-label="Kind" {
                            option value="" selected[cat.is_none()] { "All kinds" }
                            @for c in Category::ALL {
                                option value=(c.slug()) selected[cat == Some(c)] { (c.label()) }
                            }
                        }
                        select name="sort" aria-label="Sort" {
                            @for k in SortKey::ALL {
                                option value=(k.as_str()) selected[k == sort] { (sort_label(k)) }
                            }
                        }
                        button type="submit" { "Search" }
                    }
                    nav { a href="/" { "Browse" } a href="/status" { "Status" } }
                }
                main { (body) }
            }
        }
    }
}

fn sort_label(k: SortKey) -> &'static str {
    match k {
        SortKey::Relevance => "Relevance",
        SortKey::Size => "Size",
        SortKey::Discovered => "Newest",
        SortKey::Seeders => "Seeders",
    }
}

fn page(status: StatusCode, m: Markup) -> Response {
    (status, Html(m.into_string())).into_response()
}

fn message(status: StatusCode, title: &str, text: &str) -> Response {
    page(
        status,
        layout(
            title,
            "",
            None,
            SortKey::Relevance,
            false,
            html! { div.card { h1 { (title) } p { (text) } } },
        ),
    )
}

fn time(t: SystemTime) -> String {
    rfc3339::format(unix_secs(t))
}

/// `/?q=…&cat=…&sort=…&page=…` with the given changes.
fn search_href(q: &str, cats: &[Category], sort: SortKey, page: usize) -> String {
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let cat: Vec<&str> = cats.iter().map(|c| c.slug()).collect();
    format!(
        "/?q={}&cat={}&sort={}&page={page}",
        enc(q),
        cat.join(","),
        sort.as_str()
    )
}

fn seeders_cell(h: &SearchHit) -> Markup {
    html! {
        @match (h.seeders, h.leechers) {
            (Some(s), Some(l)) => { (s) span.mut { " / " (l) } }
            (Some(s), None) => { (s) }
            _ => { span.mut title="not scraped yet" { "–" } }
        }
    }
}

/// `GET /`: search (or browse the newest when there is no query).
pub(super) async fn search(State(app): State<Arc<App>>, RawQuery(q): RawQuery) -> Response {
    let p = match SearchParams::parse(&form_pairs(q.as_deref().unwrap_or("")), PAGE_SIZE) {
        Ok(p) => p,
        Err(e) => return message(StatusCode::BAD_REQUEST, "Bad request", &e),
    };
    let run = p.clone();
    let result = blocking(move || {
        app.reader
            .search_page(&run.q, &run.categories, run.sort, run.offset, run.limit)
    })
    .await;
    let res = match result {
        Ok(r) => r,
        Err(e) => {
            log::warn!("web: store: {e}");
            return message(
                StatusCode::SERVICE_UNAVAILABLE,
                "The store is not answering",
                &e.to_string(),
            );
        }
    };
    let page_no = p.offset / p.limit + 1;
    let title = if p.q.trim().is_empty() {
        "Newest torrents".to_owned()
    } else {
        format!("“{}”", p.q.trim())
    };
    let count = if res.counted_capped {
        format!(
            "more than {} results: ordered among the {} most recently stored (add a word to narrow)",
            res.counted, res.counted
        )
    } else if res.counted == 1 {
        "1 result".to_owned()
    } else {
        format!("{} results", res.counted)
    };
    let body = html! {
        h1 { (title) }
        p.mut { (count) @if page_no > 1 { " · page " (page_no) } }
        @if res.hits.is_empty() {
            div.card { "Nothing found. Every word must appear, whole, in the name or a file path (case does not matter)." }
        } @else {
            table {
                thead { tr {
                    th { "Name" }
                    th.num { a href=(search_href(&p.q, &p.categories, SortKey::Size, 1)) { "Size" } }
                    th.num { "Files" }
                    th { "Kind" }
                    th.num { a href=(search_href(&p.q, &p.categories, SortKey::Seeders, 1)) { "Seeders" } }
                    th.num { a href=(search_href(&p.q, &p.categories, SortKey::Discovered, 1)) { "Discovered" } }
                    th { span.mut { "Magnet" } }
                } }
                tbody {
                    @for h in &res.hits {
                        @let hex = crate::id::Id(h.infohash).to_hex();
                        tr {
                            td.name { a href={"/t/" (hex)} { (h.name) } }
                            td.num { (human_bytes(h.total_size)) }
                            td.num { (h.file_count) }
                            td { (h.category.label()) }
                            td.num { (seeders_cell(h)) }
                            td.num { (time(h.discovered_at)) }
                            td { a href=(magnet(&h.infohash, &h.name)) title="magnet link" { "magnet" } }
                        }
                    }
                }
            }
        }
        div.pager {
            span { @if page_no > 1 { a rel="prev" href=(search_href(&p.q, &p.categories, p.sort, page_no - 1)) { "← Previous" } } }
            span { @if res.more { a rel="next" href=(search_href(&p.q, &p.categories, p.sort, page_no + 1)) { "Next →" } } }
        }
    };
    page(
        StatusCode::OK,
        layout(
            &title,
            &p.q,
            p.categories.first().copied(),
            p.sort,
            false,
            body,
        ),
    )
}

/// A directory of the file tree.
#[derive(Default)]
struct Dir {
    dirs: BTreeMap<String, Dir>,
    files: Vec<(String, u64)>,
    size: u64,
    count: u64,
}

fn file_tree(files: &[(String, u64)]) -> Dir {
    let mut root = Dir::default();
    for (path, size) in files {
        let parts: Vec<&str> = path.split('/').collect();
        let (dirs, name) = if parts.len() > TREE_DEPTH_MAX + 1 {
            (&parts[..TREE_DEPTH_MAX], parts[TREE_DEPTH_MAX..].join("/"))
        } else {
            let (last, dirs) = parts.split_last().map_or((&"", &[][..]), |(l, d)| (l, d));
            (dirs, (*last).to_owned())
        };
        let mut d = &mut root;
        d.size += size;
        d.count += 1;
        for part in dirs {
            d = d.dirs.entry((*part).to_owned()).or_default();
            d.size += size;
            d.count += 1;
        }
        d.files.push((name, *size));
    }
    root
}

fn render_dir(d: &Dir, depth: usize) -> Markup {
    html! {
        ul.tree {
            @for (name, sub) in &d.dirs {
                li { details open[depth < 2] {
                    summary { (name) "/ " span.mut { "(" (sub.count) " files, " (human_bytes(sub.size)) ")" } }
                    (render_dir(sub, depth + 1))
                } }
            }
            @for (name, size) in &d.files {
                li { (name) " " span.mut { (human_bytes(*size)) } }
            }
        }
    }
}

fn detail_page(d: &TorrentDetail) -> Markup {
    let h = &d.hit;
    let hex = crate::id::Id(h.infohash).to_hex();
    html! {
        h1 { (h.name) }
        a.magnet href=(magnet(&h.infohash, &h.name)) { "Magnet link" }
        div.card { dl.kv {
            dt { "Infohash" } dd { code { (hex) } }
            dt { "Size" } dd { (human_bytes(h.total_size)) " (" (h.total_size) " bytes)" }
            dt { "Files" } dd { (h.file_count) }
            dt { "Kind" } dd { (h.category.label()) span.mut { " (inferred from the files)" } }
            dt { "Seeders / leechers" } dd {
                @match (h.seeders, h.leechers, h.scraped_at) {
                    (Some(s), Some(l), Some(at)) => { (s) " / " (l) span.mut { " (scraped " (time(at)) ")" } }
                    (Some(s), Some(l), None) => { (s) " / " (l) }
                    _ => { span.mut { "not scraped yet" } }
                }
            }
            dt { "Discovered" } dd { (time(h.discovered_at)) " via " (h.source.as_str()) }
            dt { "Metadata fetched" } dd { (time(h.fetched_at)) }
            dt { "Piece length" } dd { @if d.piece_length > 0 { (human_bytes(d.piece_length)) } @else { span.mut { "unknown (imported)" } } }
            @if d.private { dt { "Private" } dd { "yes (the DHT is not meant for it)" } }
        } }
        div.card {
            h2 { "Files" }
            @if (d.files.len() as u64) < h.file_count {
                p.mut { "The first " (d.files.len()) " of " (h.file_count) " files." }
            }
            (render_dir(&file_tree(&d.files), 0))
        }
        p.mut { "JSON: " a href={"/api/torrent/" (hex)} { "/api/torrent/" (hex) } }
    }
}

/// `GET /t/{infohash}`.
pub(super) async fn torrent(State(app): State<Arc<App>>, Path(infohash): Path<String>) -> Response {
    let Some(infohash) = parse_infohash(&infohash) else {
        return message(
            StatusCode::BAD_REQUEST,
            "Bad infohash",
            "An infohash is 40 hex digits.",
        );
    };
    match blocking(move || app.reader.torrent(&infohash, FILES_SHOWN)).await {
        Ok(Some(d)) => page(
            StatusCode::OK,
            layout(
                &d.hit.name,
                "",
                None,
                SortKey::Relevance,
                false,
                detail_page(&d),
            ),
        ),
        Ok(None) => message(
            StatusCode::NOT_FOUND,
            "Not stored",
            "No torrent with this infohash is stored.",
        ),
        Err(e) => {
            log::warn!("web: store: {e}");
            message(
                StatusCode::SERVICE_UNAVAILABLE,
                "The store is not answering",
                &e.to_string(),
            )
        }
    }
}

/// A line plot of `points` (`x` seconds before now, in `-window..=0`).
fn plot(title: &str, unit: &str, points: &[(f64, f64)], window: f64) -> Markup {
    const W: f64 = 560.0;
    const H: f64 = 150.0;
    const L: f64 = 44.0;
    const B: f64 = 20.0;
    let ymax = points.iter().map(|p| p.1).fold(0.0_f64, f64::max);
    let top = if ymax > 0.0 { ymax * 1.1 } else { 1.0 };
    let x = |s: f64| L + (W - L - 6.0) * ((s + window) / window).clamp(0.0, 1.0);
    let y = |v: f64| (H - B) - (H - B - 8.0) * (v / top);
    let line: Vec<String> = points
        .iter()
        .map(|(s, v)| format!("{:.1},{:.1}", x(*s), y(*v)))
        .collect();
    let last = points.last().map_or(0.0, |p| p.1);
    html! {
        div.card {
            div { strong { (title) } " " span.mut { "now " (fmt_rate(last)) " " (unit) ", peak " (fmt_rate(ymax)) } }
            svg viewBox={"0 0 " (W) " " (H)} width="100%" role="img" aria-label=(title) {
                line x1=(L) y1=(H - B) x2=(W - 6.0) y2=(H - B) stroke="currentColor" stroke-opacity="0.3" {}
                line x1=(L) y1="8" x2=(L) y2=(H - B) stroke="currentColor" stroke-opacity="0.3" {}
                text x=(L - 4.0) y="14" text-anchor="end" { (fmt_rate(top)) }
                text x=(L - 4.0) y=(H - B) text-anchor="end" { "0" }
                text x=(L) y=(H - 4.0) { "−" (format!("{:.0}", window / 60.0)) " min" }
                text x=(W - 6.0) y=(H - 4.0) text-anchor="end" { "now" }
                @if points.is_empty() {
                    text x=(W / 2.0) y=(H / 2.0) text-anchor="middle" { "no data yet" }
                } @else {
                    polyline points=(line.join(" ")) fill="none" stroke="#2f6fdf" stroke-width="2" {}
                    // A line needs two points; the first ones get dots.
                    @if points.len() < 3 {
                        @for (s, v) in points {
                            circle cx=(format!("{:.1}", x(*s))) cy=(format!("{:.1}", y(*v))) r="3" fill="#2f6fdf" {}
                        }
                    }
                }
            }
        }
    }
}

fn fmt_rate(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn store_card(s: &Stats, backend: &str, db: &str) -> Markup {
    html! {
        div.card {
            h2 { "Store" }
            dl.kv {
                dt { "Torrents" } dd.big { (s.torrents) }
                dt { "Files" } dd { (s.files) }
                dt { "Waiting for metadata" } dd { (s.pending) }
                dt { "Database" } dd { (backend) " · " (human_bytes(s.db_bytes)) " · " code { (db) } }
                @for (src, n) in &s.by_source { dt { "From " (src.as_str()) } dd { (n) } }
                dt { "Last hour" } dd { (s.fetched_last_hour) " (" (fmt_rate(s.rate_last_hour())) "/s)" }
                dt { "Last day" } dd { (s.fetched_last_day) " (" (fmt_rate(s.rate_last_day())) "/s)" }
                @if let Some(t) = s.last_fetched { dt { "Newest" } dd { (time(t)) } }
            }
        }
    }
}

/// The live plots' time axis: what the samples span, from one minute (a
/// crawler just started fills its plots) up to [`HISTORY`].
fn live_window(samples: &[Sample]) -> f64 {
    let span = match (samples.first(), samples.last()) {
        (Some(a), Some(b)) => b.at_s - a.at_s,
        _ => 0.0,
    };
    span.clamp(60.0, HISTORY.as_secs_f64())
}

fn live_cards(samples: &[Sample]) -> Markup {
    let window = live_window(samples);
    let (Some(last), prev) = (
        samples.last(),
        samples.len().checked_sub(2).and_then(|i| samples.get(i)),
    ) else {
        return html! { div.card { "The crawler's first sample is not in yet." } };
    };
    let infohash = rate_series(samples, |s| s.total(|x| x.infohashes));
    let fetched = rate_series(samples, |s| s.total(|x| x.fetched));
    let pin = rate_series(samples, |s| s.total(|x| x.packets_in));
    html! {
        h2 { "Crawler (this process)" }
        div.grid {
            (plot("New infohashes", "/s", &infohash, window))
            (plot("Torrents fetched", "/s", &fetched, window))
            (plot("Packets in", "/s", &pin, window))
        }
        div.card {
            h2 { "Shards" }
            table {
                thead { tr {
                    th { "Shard" } th.num { "In /s" } th.num { "Out /s" } th.num { "Infohashes /s" }
                    th.num { "Fetched /s" } th.num { "Fetched" } th.num { "Failed jobs" } th.num { "Fetch queue" } th.num { "Nodes" }
                } }
                tbody {
                    @for (i, sh) in last.shards.iter().enumerate() {
                        @let r = |f: fn(&super::live::ShardSample) -> u64| prev.map_or(0.0, |p| rate(p, last, |s| s.shards.get(i).map_or(0, f)));
                        tr {
                            td { (i) }
                            td.num { (fmt_rate(r(|s| s.packets_in))) }
                            td.num { (fmt_rate(r(|s| s.packets_out))) }
                            td.num { (fmt_rate(r(|s| s.infohashes))) }
                            td.num { (fmt_rate(r(|s| s.fetched))) }
                            td.num { (sh.fetched) }
                            td.num { (sh.fetch_failed) }
                            td.num { (sh.queue) }
                            td.num { (sh.nodes) }
                        }
                    }
                }
            }
        }
        div.grid {
            div.card {
                h2 { "Harvest" }
                dl.kv {
                    dt { "New infohashes" } dd { (last.total(|s| s.infohashes)) }
                    dt { "Fetched" } dd { (last.total(|s| s.fetched)) }
                    dt { "Given up" } dd { (last.given_up) }
                    dt { "In progress" } dd { (last.in_progress) }
                    dt { "Seen again, already stored" } dd { (last.already_stored) }
                }
            }
            div.card {
                h2 { "Queues" }
                dl.kv {
                    dt { "Fetch queues (all shards)" } dd { (last.total(|s| s.queue)) }
                    dt { "Store write queue" } dd { (last.store_queue) }
                }
            }
            div.card {
                h2 { "Fetch attempt failures" }
                dl.kv {
                    @for (k, n) in last.failures.iter().filter(|(_, n)| *n > 0) {
                        dt { (k.as_str()) } dd { (n) }
                    }
                    @if last.failures.iter().all(|(_, n)| *n == 0) { dt { "none" } dd {} }
                }
            }
        }
    }
}

/// `GET /status`: store totals and harvest rate from the database, and
/// with a crawler in this process its live counters.
pub(super) async fn status(State(app): State<Arc<App>>) -> Response {
    let a = app.clone();
    let got = blocking(move || {
        let stats = a.reader.stats()?;
        let hist = a
            .reader
            .fetched_histogram(HISTORY, Duration::from_secs(60))?;
        Ok((stats, hist))
    })
    .await;
    let (stats, hist) = match got {
        Ok(x) => x,
        Err(e) => {
            log::warn!("web: store: {e}");
            return message(
                StatusCode::SERVICE_UNAVAILABLE,
                "The store is not answering",
                &e.to_string(),
            );
        }
    };
    // Per minute over the last hour, empty minutes included.
    let now = unix_secs(SystemTime::now());
    let first = (now - HISTORY.as_secs() as i64).div_euclid(60) * 60;
    let by: BTreeMap<i64, u64> = hist.into_iter().collect();
    let stored: Vec<(f64, f64)> = (0..=HISTORY.as_secs() as i64 / 60)
        .map(|i| first + i * 60)
        .filter(|b| *b <= now)
        .map(|b| {
            (
                (b + 60 - now).min(0) as f64,
                *by.get(&b).unwrap_or(&0) as f64,
            )
        })
        .collect();
    let live = app.live.as_ref().map(|l| l.samples());
    let body = html! {
        h1 { "Status" }
        div.grid {
            (store_card(&stats, app.reader.backend(), &app.db_label))
            (plot("Torrents stored per minute (database)", "/min", &stored, HISTORY.as_secs_f64()))
        }
        @match &live {
            Some(samples) => { (live_cards(samples)) }
            None => { p.mut { "No crawler runs in this process: rates come from the database. Run " code { "dht-hunter crawl --web ADDR" } " for live shard counters." } }
        }
        p.mut { "Refreshes every 10 s. JSON: " a href="/api/stats" { "/api/stats" } }
    };
    page(
        StatusCode::OK,
        layout("Status", "", None, SortKey::Relevance, true, body),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_tree_groups_directories_and_sums_sizes() {
        let files = vec![
            ("a/b/1.txt".to_owned(), 10),
            ("a/2.txt".to_owned(), 5),
            ("3.txt".to_owned(), 1),
        ];
        let t = file_tree(&files);
        assert_eq!((t.size, t.count), (16, 3));
        assert_eq!(t.files, [("3.txt".to_owned(), 1)]);
        let a = &t.dirs["a"];
        assert_eq!((a.size, a.count), (15, 2));
        assert_eq!(a.dirs["b"].files, [("1.txt".to_owned(), 10)]);
        // Deep nesting stops at the cap; the rest is one name.
        let deep = vec![(vec!["d"; 100].join("/"), 1)];
        let mut d = &file_tree(&deep);
        let mut depth = 0;
        while let Some(next) = d.dirs.get("d") {
            d = next;
            depth += 1;
        }
        assert_eq!(depth, TREE_DEPTH_MAX);
        assert_eq!(d.files[0].0.split('/').count(), 100 - TREE_DEPTH_MAX);
    }

    #[test]
    fn live_plots_span_what_the_samples_cover() {
        let at = |at_s: f64| Sample {
            at_s,
            ..Sample::default()
        };
        assert_eq!(live_window(&[]), 60.0);
        assert_eq!(live_window(&[at(0.0), at(20.0)]), 60.0);
        assert_eq!(live_window(&[at(0.0), at(900.0)]), 900.0);
        assert_eq!(live_window(&[at(0.0), at(7200.0)]), HISTORY.as_secs_f64());
        let dots = plot("t", "/s", &[(-10.0, 1.0)], 60.0).into_string();
        assert!(dots.contains("<circle"), "{dots}");
    }

    #[test]
    fn hostile_names_are_escaped() {
        let hit = SearchHit {
            infohash: [1; 20],
            name: "<script>alert(1)</script>\"'&".into(),
            total_size: 1,
            file_count: 1,
            source: crate::store::Source::Sample,
            discovered_at: std::time::UNIX_EPOCH,
            fetched_at: std::time::UNIX_EPOCH,
            seeders: None,
            leechers: None,
            scraped_at: None,
            category: Category::Other,
        };
        let d = TorrentDetail {
            files: vec![("<img src=x onerror=alert(1)>/x".into(), 1)],
            hit,
            piece_length: 0,
            private: false,
        };
        let html = layout(
            "t",
            "\"><script>",
            None,
            SortKey::Size,
            false,
            detail_page(&d),
        )
        .into_string();
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    }
}
