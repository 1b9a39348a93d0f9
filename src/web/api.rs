//! The JSON API: `/api/search`, `/api/torrent/{infohash}`, `/api/stats`,
//! and `/api/export` (the `dht-hunter export` JSONL, streamed).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{blocking, form_pairs, magnet, parse_infohash, App, SearchParams};
use crate::store::{rfc3339, unix_secs, SearchHit, SearchPage, Stats, TorrentDetail};

/// Default page size of `/api/search`.
const API_DEFAULT_LIMIT: usize = 50;
/// Most files `/api/torrent` lists (the metadata cap bounds them anyway).
pub(super) const FILES_MAX: usize = 100_000;

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

pub(super) fn store_error(e: &crate::store::StoreError) -> Response {
    log::warn!("web: store: {e}");
    error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}"))
}

fn time(t: std::time::SystemTime) -> String {
    rfc3339::format(unix_secs(t))
}

/// One hit as JSON: the `search --json` fields plus discovery time, swarm
/// counts (null until scraped) and the magnet link.
pub(super) fn hit_json(h: &SearchHit) -> Value {
    json!({
        "infohash": crate::id::Id(h.infohash).to_hex(),
        "name": h.name,
        "size": h.total_size,
        "files": h.file_count,
        "source": h.source.as_str(),
        "discovered_at": time(h.discovered_at),
        "fetched_at": time(h.fetched_at),
        "seeders": h.seeders,
        "leechers": h.leechers,
        "scraped_at": h.scraped_at.map(time),
        "category": h.category.slug(),
        "magnet": magnet(&h.infohash, &h.name),
    })
}

fn page_json(p: &SearchParams, page: &SearchPage) -> Value {
    json!({
        "q": p.q,
        "cat": p.categories.iter().map(|c| c.slug()).collect::<Vec<_>>(),
        "sort": p.sort.as_str(),
        "offset": p.offset,
        "limit": p.limit,
        "more": page.more,
        "counted": page.counted,
        "counted_capped": page.counted_capped,
        "hits": page.hits.iter().map(hit_json).collect::<Vec<_>>(),
    })
}

pub(super) fn detail_json(d: &TorrentDetail) -> Value {
    let mut v = hit_json(&d.hit);
    v["piece_length"] = d.piece_length.into();
    v["private"] = d.private.into();
    v["file_list"] = d
        .files
        .iter()
        .map(|(path, size)| json!({ "path": path, "size": size }))
        .collect();
    v
}

/// The store's counts as JSON (`/api/stats` and `dht-hunter stats --json`).
pub fn stats_json(s: &Stats) -> Value {
    let ts = |t: Option<std::time::SystemTime>| t.map(time);
    let by: serde_json::Map<String, Value> = s
        .by_source
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), (*v).into()))
        .collect();
    json!({
        "torrents": s.torrents,
        "files": s.files,
        "pending": s.pending,
        "db_bytes": s.db_bytes,
        "by_source": by,
        "first_fetched": ts(s.first_fetched),
        "last_fetched": ts(s.last_fetched),
        "fetched_last_hour": s.fetched_last_hour,
        "fetched_last_day": s.fetched_last_day,
        "rate_last_hour_per_s": s.rate_last_hour(),
    })
}

/// `GET /api/search?q=&cat=&sort=&offset=|page=&limit=`.
pub(super) async fn search(State(app): State<Arc<App>>, RawQuery(q): RawQuery) -> Response {
    let p = match SearchParams::parse(&form_pairs(q.as_deref().unwrap_or("")), API_DEFAULT_LIMIT) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let run = p.clone();
    let page = blocking(move || {
        app.reader
            .search_page(&run.q, &run.categories, run.sort, run.offset, run.limit)
    })
    .await;
    match page {
        Ok(page) => Json(page_json(&p, &page)).into_response(),
        Err(e) => store_error(&e),
    }
}

/// `GET /api/torrent/{infohash}`.
pub(super) async fn torrent(State(app): State<Arc<App>>, Path(infohash): Path<String>) -> Response {
    let Some(infohash) = parse_infohash(&infohash) else {
        return error(StatusCode::BAD_REQUEST, "an infohash is 40 hex digits");
    };
    match blocking(move || app.reader.torrent(&infohash, FILES_MAX)).await {
        Ok(Some(d)) => Json(detail_json(&d)).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "no such torrent"),
        Err(e) => store_error(&e),
    }
}

/// `GET /api/stats`: what `dht-hunter stats --json` prints.
pub(super) async fn stats(State(app): State<Arc<App>>) -> Response {
    match blocking(move || app.reader.stats()).await {
        Ok(s) => Json(stats_json(&s)).into_response(),
        Err(e) => store_error(&e),
    }
}

/// Bytes per chunk of the export stream.
const EXPORT_CHUNK: usize = 64 * 1024;

/// A `Write` that hands full chunks to the response body; a client that
/// went away ends the export with an error.
struct ChunkWriter {
    buf: Vec<u8>,
    tx: tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(EXPORT_CHUNK));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= EXPORT_CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// `GET /api/export`: every torrent as JSON lines, streamed as it is read
/// (one export at a time; a second gets 429).
pub(super) async fn export(State(app): State<Arc<App>>) -> Response {
    let Ok(permit) = app.export.clone().try_acquire_owned() else {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "an export is already running",
        );
    };
    // The permit lives as long as the export thread.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let app2 = app.clone();
    tokio::task::spawn_blocking(move || {
        let mut w = ChunkWriter {
            buf: Vec::with_capacity(EXPORT_CHUNK),
            tx: tx.clone(),
        };
        let r = app2.reader.export_jsonl(&mut w).and_then(|n| {
            std::io::Write::flush(&mut w)
                .map(|()| n)
                .map_err(Into::into)
        });
        match r {
            Ok(n) => log::info!("web: exported {n} torrents"),
            Err(e) => {
                log::warn!("web: export ended early: {e}");
                // The body ends with an error, so the client sees a broken
                // transfer, not a short file that looks complete.
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        }
        drop(permit);
    });
    let stream = futures_lite::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"dht-hunter.jsonl\"",
        )
        .body(Body::from_stream(stream))
        .unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}
