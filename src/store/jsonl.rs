//! The JSON-lines format of `export` and `import`: one torrent a line.

use std::io::Write;

use serde::{Deserialize, Serialize};

use super::{
    from_unix_secs, rfc3339, Backend, ExportRow, ScrapeCounts, Source, StoreError, TorrentRecord,
};
use crate::metainfo::{check_component, Torrent, TorrentFile, TorrentName};

/// The JSONL export of everything `b` stores (see [`Store::export_jsonl`]).
pub(super) fn export_jsonl_from(
    b: &mut dyn Backend,
    out: &mut dyn Write,
) -> Result<u64, StoreError> {
    b.export(&mut |row: ExportRow| {
        let rec = JsonRecord {
            infohash: crate::id::Id(row.infohash).to_hex(),
            name: row.name,
            size: row.size,
            files: row
                .files
                .into_iter()
                .map(|(path, size)| JsonFile { path, size })
                .collect(),
            discovered_at: rfc3339::format(row.discovered_at),
            fetched_at: rfc3339::format(row.fetched_at),
            source: row.source.as_str().to_owned(),
            seeders: row.seeders,
            leechers: row.leechers,
            scraped_at: row.scraped_at.map(rfc3339::format),
        };
        serde_json::to_writer(&mut *out, &rec).map_err(std::io::Error::from)?;
        out.write_all(b"\n")?;
        Ok(())
    })
}

#[derive(Serialize)]
pub(super) struct JsonRecord {
    infohash: String,
    name: String,
    size: u64,
    files: Vec<JsonFile>,
    discovered_at: String,
    fetched_at: String,
    source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    seeders: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    leechers: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scraped_at: Option<String>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct JsonFile {
    path: String,
    size: u64,
}

#[derive(Deserialize)]
pub(super) struct JsonRecordIn {
    infohash: String,
    name: String,
    size: u64,
    files: Vec<JsonFile>,
    discovered_at: String,
    fetched_at: String,
    source: String,
    #[serde(default)]
    seeders: Option<u32>,
    #[serde(default)]
    leechers: Option<u32>,
    #[serde(default)]
    scraped_at: Option<String>,
}

/// Validates one JSONL line into a record and its BEP 33 estimate, if it
/// has one (`seeders`, `leechers` and `scraped_at` all three, or none).
/// The JSONL format does not carry piece length or the private flag;
/// imported torrents get 0 and false.
pub(super) fn parse_json_line(
    line: &[u8],
) -> Result<(TorrentRecord, Option<ScrapeCounts>), String> {
    let r: JsonRecordIn = serde_json::from_slice(line).map_err(|e| format!("bad JSON: {e}"))?;
    let infohash = r
        .infohash
        .parse::<crate::id::Id>()
        .map_err(|e| e.to_string())?
        .0;
    let discovered_at =
        rfc3339::parse(&r.discovered_at).map_err(|e| format!("discovered_at: {e}"))?;
    let fetched_at = rfc3339::parse(&r.fetched_at).map_err(|e| format!("fetched_at: {e}"))?;
    let source: Source = r
        .source
        .parse()
        .map_err(|e: crate::source::UnknownSource| e.to_string())?;
    let scrape = match (r.seeders, r.leechers, &r.scraped_at) {
        (None, None, None) => None,
        (Some(seeders), Some(leechers), Some(at)) => Some(ScrapeCounts {
            seeders,
            leechers,
            at: from_unix_secs(rfc3339::parse(at).map_err(|e| format!("scraped_at: {e}"))?),
        }),
        _ => return Err("seeders, leechers and scraped_at go together".into()),
    };
    if r.files.is_empty() {
        return Err("files is empty".into());
    }
    // The same rule as fetched metadata: no empty, `.` or `..` component.
    let name = TorrentName::Utf8(r.name);
    check_component(name.as_bytes()).map_err(|e| format!("name: {e}"))?;
    let mut total: i64 = 0;
    let mut files = Vec::with_capacity(r.files.len());
    for (i, f) in r.files.into_iter().enumerate() {
        let size = i64::try_from(f.size).map_err(|_| format!("file {i}: size too large"))?;
        total = total
            .checked_add(size)
            .ok_or_else(|| "total size overflows".to_owned())?;
        let path: Vec<TorrentName> = f.path.split('/').map(TorrentName::from).collect();
        for c in &path {
            check_component(c.as_bytes()).map_err(|e| format!("file {i}: {e} in {:?}", f.path))?;
        }
        files.push(TorrentFile { path, size: f.size });
    }
    if total as u64 != r.size {
        return Err(format!(
            "size {} is not the sum of file sizes {total}",
            r.size
        ));
    }
    Ok((
        TorrentRecord {
            infohash,
            torrent: Torrent {
                name,
                total_size: r.size,
                piece_length: 0,
                private: false,
                files,
            },
            source,
            discovered_at: from_unix_secs(discovered_at),
            fetched_at: from_unix_secs(fetched_at),
        },
        scrape,
    ))
}
