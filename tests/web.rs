//! The web server through HTTP: JSON API, pages, Torznab and access
//! control, against SQLite and (with `DHT_HUNTER_TEST_PG`) PostgreSQL.
//! Without `DHT_HUNTER_TEST_PG` the PostgreSQL run prints a notice and
//! passes, unless `CI` is set.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/http.rs"]
mod http;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, UNIX_EPOCH};

use dht_hunter::metainfo::{Torrent, TorrentFile};
use dht_hunter::store::{Source, Store, TorrentRecord};
use dht_hunter::web::{self, Credentials, WebConfig};
use http::{enc, get};

const T0: u64 = 1_790_000_000;

fn record(n: u8, name: &str, files: &[(&str, u64)], discovered: u64) -> TorrentRecord {
    let mut infohash = [n; 20];
    infohash[0] = 0xd0;
    TorrentRecord {
        infohash,
        torrent: Torrent {
            name: name.into(),
            total_size: files.iter().map(|f| f.1).sum(),
            piece_length: 1 << 18,
            private: false,
            files: files
                .iter()
                .map(|(p, s)| TorrentFile {
                    path: p.split('/').map(Into::into).collect(),
                    size: *s,
                })
                .collect(),
        },
        source: Source::Sample,
        discovered_at: UNIX_EPOCH + Duration::from_secs(discovered),
        fetched_at: UNIX_EPOCH + Duration::from_secs(discovered + 5),
    }
}

fn hex(r: &TorrentRecord) -> String {
    r.infohash.iter().map(|b| format!("{b:02x}")).collect()
}

const HOSTILE: &str = "<script>alert('x')</script> ubuntu \u{1} evil";

/// The fixed part of the data set.
fn fixed() -> Vec<TorrentRecord> {
    vec![
        record(
            1,
            "Ubuntu 24.04 Desktop amd64",
            &[("ubuntu-24.04-desktop-amd64.iso", 6_000_000_000)],
            T0 + 10,
        ),
        record(
            2,
            "Ubuntu Server Collection",
            &[
                ("server/ubuntu-24.04-live-server-amd64.iso", 2_000_000_000),
                ("server/SHA256SUMS", 1000),
                ("notes/README.txt", 500),
            ],
            T0 + 20,
        ),
        record(
            3,
            "Debian 12 netinst",
            &[("debian-12.iso", 600_000_000)],
            T0 + 30,
        ),
        record(
            4,
            HOSTILE,
            &[("<img src=x onerror=alert(1)>.txt", 10)],
            T0 + 40,
        ),
        record(
            5,
            "Some Show S01E02 720p",
            &[("Some.Show.S01E02.720p.mkv", 700_000_000)],
            T0 + 50,
        ),
    ]
}

fn fillers() -> Vec<TorrentRecord> {
    (0..30u8)
        .map(|i| {
            record(
                100 + i,
                &format!("filler item {i}"),
                &[(&format!("f{i}.bin"), 1000 * (u64::from(i) + 1))],
                T0 + 100 + u64::from(i),
            )
        })
        .collect()
}

/// Seeders for the two Ubuntu torrents (what the scraper would write).
fn set_seeders(url: &str) {
    let (a, b) = (hex(&fixed()[0]), hex(&fixed()[1]));
    if let Some(path) = url.strip_prefix("sqlite:") {
        let c = rusqlite::Connection::open(path).unwrap();
        c.execute_batch(&format!(
            "UPDATE torrents SET seeders = 7, leechers = 1, scraped_at = {T0} WHERE infohash = x'{a}';
             UPDATE torrents SET seeders = 50, leechers = 3, scraped_at = {T0} WHERE infohash = x'{b}';"
        ))
        .unwrap();
    } else {
        let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
        c.batch_execute(&format!(
            "UPDATE torrents SET seeders = 7, leechers = 1, scraped_at = now() WHERE infohash = '\\x{a}';
             UPDATE torrents SET seeders = 50, leechers = 3, scraped_at = now() WHERE infohash = '\\x{b}';"
        ))
        .unwrap();
    }
}

fn server(store: &Store, credentials: Credentials) -> web::WebServer {
    let cfg = WebConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        credentials,
        insecure_public: false,
        readers: 2,
        db_label: "test".into(),
    };
    web::start(cfg, store.reader(2).unwrap(), None).unwrap()
}

fn hexes(v: &serde_json::Value) -> Vec<String> {
    v["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["infohash"].as_str().unwrap().to_owned())
        .collect()
}

fn api(addr: SocketAddr, query: &str) -> serde_json::Value {
    let r = get(addr, &format!("/api/search?{query}"), &[]);
    assert_eq!(r.status, 200, "{query}: {}", r.body);
    r.json()
}

/// Everything a client of the API, the pages and Torznab relies on.
fn exercise(url: &str) {
    let store = Store::open(url).unwrap();
    let w = store.writer();
    for r in fixed() {
        w.fetched(r).unwrap();
    }
    store.flush().unwrap();
    set_seeders(url);
    let server = server(&store, Credentials::default());
    let addr = server.addr();
    // Written after the server opened its connections: it sees them.
    for r in fillers() {
        w.fetched(r).unwrap();
    }
    store.flush().unwrap();
    let f = fixed();
    let [u1, u2, _deb, evil, show] = [0, 1, 2, 3, 4].map(|i| hex(&f[i]));

    // Search, each order.
    let v = api(addr, "q=ubuntu");
    let got: HashSet<String> = hexes(&v).into_iter().collect();
    assert_eq!(got, HashSet::from([u1.clone(), u2.clone(), evil.clone()]));
    assert_eq!(
        (v["counted"].as_u64(), v["more"].as_bool()),
        (Some(3), Some(false))
    );
    assert_eq!(
        hexes(&api(addr, "q=ubuntu&sort=size")),
        [u1.as_str(), &u2, &evil]
    );
    assert_eq!(
        hexes(&api(addr, "q=ubuntu&sort=discovered")),
        [evil.as_str(), &u2, &u1]
    );
    let v = api(addr, "q=Ubuntu&sort=seeders");
    assert_eq!(hexes(&v), [u2.as_str(), &u1, &evil], "never-scraped last");
    assert_eq!(v["hits"][0]["seeders"], 50);
    assert_eq!(v["hits"][0]["leechers"], 3);
    assert!(v["hits"][2]["seeders"].is_null());
    assert!(v["hits"][0]["scraped_at"].is_string());
    assert_eq!(
        v["hits"][0]["magnet"],
        format!("magnet:?xt=urn:btih:{u2}&dn=Ubuntu%20Server%20Collection")
    );
    // A word of a file path finds its torrent too.
    assert_eq!(hexes(&api(addr, "q=sha256sums")), [u2.as_str()]);
    assert_eq!(
        hexes(&api(addr, &format!("q={}", enc("トレント")))),
        Vec::<String>::new()
    );

    // Paging: the pages tile the whole ordered result, no overlap.
    let mut all = Vec::new();
    let mut offset = 0;
    loop {
        let v = api(addr, &format!("q=filler&sort=size&limit=7&offset={offset}"));
        assert_eq!(v["counted"], 30);
        let page = hexes(&v);
        assert!(page.len() <= 7);
        all.extend(page);
        offset += 7;
        if !v["more"].as_bool().unwrap() {
            break;
        }
    }
    let mut want: Vec<TorrentRecord> = fillers();
    want.sort_by_key(|r| std::cmp::Reverse(r.torrent.total_size));
    assert_eq!(all, want.iter().map(hex).collect::<Vec<_>>());
    // page= is offset by pages.
    assert_eq!(
        hexes(&api(addr, "q=filler&sort=size&limit=7&page=2")),
        all[7..14]
    );
    // No words: everything, newest first.
    let v = api(addr, "limit=3");
    assert_eq!(hexes(&v)[0], hex(fillers().last().unwrap()));
    assert_eq!(v["counted"], 35);
    assert!(v["more"].as_bool().unwrap());

    // Kinds: inferred from the files when stored, and a filter.
    let v = api(addr, "cat=tv");
    assert_eq!(hexes(&v), std::slice::from_ref(&show));
    assert_eq!(v["hits"][0]["category"], "tv");
    assert_eq!(v["counted"], 1);
    let v = api(addr, "q=ubuntu&cat=tv,other");
    assert_eq!(v["counted"], 3, "{v}");
    assert!(hexes(&api(addr, "q=ubuntu&cat=movies")).is_empty());
    assert_eq!(api(addr, "q=filler")["hits"][0]["category"], "other");

    // Bad parameters are refused with a reason.
    for bad in ["limit=1000", "sort=name", "page=0", "offset=-1", "cat=xxx"] {
        let r = get(addr, &format!("/api/search?{bad}"), &[]);
        assert_eq!(r.status, 400, "{bad}");
        assert!(r.json()["error"].is_string());
    }

    // Detail.
    let r = get(addr, &format!("/api/torrent/{u2}"), &[]);
    assert_eq!(r.status, 200);
    let d = r.json();
    assert_eq!(d["name"], "Ubuntu Server Collection");
    assert_eq!(d["size"], 2_000_001_500u64);
    assert_eq!(d["piece_length"], 1 << 18);
    let files: Vec<(String, u64)> = d["file_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().into(),
                f["size"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        files,
        [
            (
                "server/ubuntu-24.04-live-server-amd64.iso".into(),
                2_000_000_000
            ),
            ("server/SHA256SUMS".into(), 1000),
            ("notes/README.txt".into(), 500)
        ]
    );
    assert_eq!(
        get(addr, &format!("/api/torrent/{}", "0".repeat(40)), &[]).status,
        404
    );
    assert_eq!(get(addr, "/api/torrent/xyz", &[]).status, 400);

    // Stats and export.
    let s = get(addr, "/api/stats", &[]).json();
    assert_eq!(s["torrents"], 35);
    assert_eq!(s["files"], 30 + 1 + 3 + 1 + 1 + 1);
    let r = get(addr, "/api/export", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    let mut want = Vec::new();
    store.export_jsonl(&mut want).unwrap();
    assert_eq!(r.body.as_bytes(), &want[..]);
    assert_eq!(r.body.lines().count(), 35);

    // Pages: hostile names arrive escaped, never as markup.
    let r = get(addr, "/?q=ubuntu&sort=size", &[]);
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-security-policy")
        .unwrap()
        .contains("default-src 'none'"));
    for h in [&u1, &u2, &evil] {
        assert!(r.body.contains(&format!("href=\"/t/{h}\"")), "{h}");
    }
    assert!(!r.body.contains("<script>"), "{}", r.body);
    assert!(r
        .body
        .contains("&lt;script&gt;alert('x')&lt;/script&gt; ubuntu"));
    assert!(r.body.contains("3 results"));
    let r = get(addr, &format!("/t/{evil}"), &[]);
    assert!(!r.body.contains("<img") && !r.body.contains("<script>"));
    let r = get(addr, &format!("/t/{u2}"), &[]);
    assert!(r.body.contains("SHA256SUMS") && r.body.contains("README.txt"));
    assert!(r.body.contains(&format!(
        "href=\"magnet:?xt=urn:btih:{u2}&amp;dn=Ubuntu%20Server%20Collection\""
    )));
    assert!(r.body.contains("50 / 3"));
    let r = get(addr, "/status", &[]);
    assert_eq!(r.status, 200);
    assert!(
        r.body.contains("<svg") && r.body.contains(">35<"),
        "{}",
        r.body
    );
    assert_eq!(get(addr, "/nope", &[]).status, 404);

    torznab(addr, &[&u1, &u2, &evil], &show);
    server.stop();
    store.close().unwrap();
}

fn attr<'a>(item: roxmltree::Node<'a, 'a>, name: &str) -> Option<&'a str> {
    item.children()
        .find(|n| {
            n.tag_name().namespace() == Some(web::torznab::NS)
                && n.tag_name().name() == "attr"
                && n.attribute("name") == Some(name)
        })
        .and_then(|n| n.attribute("value"))
}

fn child<'a>(n: roxmltree::Node<'a, 'a>, name: &str) -> Option<roxmltree::Node<'a, 'a>> {
    n.children().find(|c| c.tag_name().name() == name)
}

/// The elements the Torznab specification requires, parsed as XML.
fn torznab(addr: SocketAddr, ubuntu: &[&String], show: &str) {
    let r = get(addr, "/torznab/api?t=caps", &[]);
    assert_eq!(r.status, 200);
    let doc = roxmltree::Document::parse(&r.body).unwrap();
    let caps = doc.root_element();
    assert_eq!(caps.tag_name().name(), "caps");
    let searching = child(caps, "searching").unwrap();
    for s in ["search", "tv-search", "movie-search"] {
        let n = child(searching, s).unwrap();
        assert_eq!(n.attribute("available"), Some("yes"), "{s}");
        assert!(n.attribute("supportedParams").unwrap().contains('q'));
    }
    let limits = child(caps, "limits").unwrap();
    assert_eq!(limits.attribute("max"), Some("100"));
    // Every kind, as Newznab top-level categories: Prowlarr syncs an
    // indexer to Sonarr or Radarr only if caps has TV or Movies.
    let cats: Vec<(&str, &str)> = child(caps, "categories")
        .unwrap()
        .children()
        .filter(|n| n.has_tag_name("category"))
        .map(|n| (n.attribute("id").unwrap(), n.attribute("name").unwrap()))
        .collect();
    assert_eq!(
        cats,
        [
            ("2000", "Movies"),
            ("3000", "Audio"),
            ("4000", "PC"),
            ("5000", "TV"),
            ("7000", "Books"),
            ("8000", "Other")
        ]
    );
    for s in ["music-search", "book-search"] {
        assert_eq!(
            child(searching, s).unwrap().attribute("available"),
            Some("no")
        );
    }
    assert!(child(caps, "server").unwrap().attribute("title").is_some());
    assert_eq!(limits.attribute("default"), Some("50"));

    let r = get(addr, "/torznab/api?t=search&q=ubuntu&extended=1", &[]);
    let doc = roxmltree::Document::parse(&r.body).unwrap();
    let rss = doc.root_element();
    assert_eq!(
        (rss.tag_name().name(), rss.attribute("version")),
        ("rss", Some("2.0"))
    );
    let channel = child(rss, "channel").unwrap();
    for el in ["title", "description", "link"] {
        assert!(child(channel, el).is_some(), "channel {el}");
    }
    let resp = channel
        .children()
        .find(|n| {
            n.tag_name().name() == "response" && n.tag_name().namespace() == Some(web::torznab::NS)
        })
        .unwrap();
    assert_eq!(
        (resp.attribute("offset"), resp.attribute("total")),
        (Some("0"), Some("3"))
    );
    let items: Vec<_> = channel
        .children()
        .filter(|n| n.has_tag_name("item"))
        .collect();
    let got: HashSet<&str> = items
        .iter()
        .map(|i| attr(*i, "infohash").unwrap())
        .collect();
    assert_eq!(got, ubuntu.iter().map(|s| s.as_str()).collect());
    for item in &items {
        let infohash = attr(*item, "infohash").unwrap();
        let title = child(*item, "title").unwrap().text().unwrap();
        assert!(!title.is_empty());
        assert_eq!(child(*item, "guid").unwrap().text(), Some(infohash));
        let enclosure = child(*item, "enclosure").unwrap();
        assert!(enclosure
            .attribute("url")
            .unwrap()
            .starts_with(&format!("magnet:?xt=urn:btih:{infohash}&dn=")));
        assert!(enclosure
            .attribute("type")
            .unwrap()
            .contains("x-bittorrent"));
        let size = attr(*item, "size").unwrap();
        assert_eq!(enclosure.attribute("length"), Some(size));
        assert_eq!(child(*item, "size").unwrap().text(), Some(size));
        assert_eq!(attr(*item, "magneturl"), enclosure.attribute("url"));
        // Disc images are no kind we infer.
        assert_eq!(attr(*item, "category"), Some("8000"));
        assert_eq!(child(*item, "category").unwrap().text(), Some("8000"));
        assert!(attr(*item, "files").is_some());
        assert!(child(*item, "pubDate")
            .unwrap()
            .text()
            .unwrap()
            .ends_with("+0000"));
        // Swarm counts only when known.
        let scraped = infohash == ubuntu[0] || infohash == ubuntu[1];
        assert_eq!(attr(*item, "seeders").is_some(), scraped, "{infohash}");
        assert_eq!(attr(*item, "peers").is_some(), scraped, "{infohash}");
        if infohash == ubuntu[1] {
            assert_eq!(
                (attr(*item, "seeders"), attr(*item, "peers")),
                (Some("50"), Some("53"))
            );
        }
        if infohash == ubuntu[2] {
            // The control character became U+FFFD; the document still parses.
            assert!(title.contains("<script>alert('x')</script> ubuntu \u{fffd} evil"));
        }
    }
    // offset and limit.
    let r = get(
        addr,
        "/torznab/api?t=search&q=filler&offset=28&limit=5",
        &[],
    );
    let doc = roxmltree::Document::parse(&r.body).unwrap();
    assert_eq!(
        doc.descendants().filter(|n| n.has_tag_name("item")).count(),
        2
    );
    // tvsearch: season and episode become the SxxEyy word.
    let tv = |q: &str| {
        let r = get(addr, &format!("/torznab/api?t=tvsearch&{q}"), &[]);
        let doc = roxmltree::Document::parse(&r.body).unwrap();
        doc.descendants()
            .filter(|n| n.has_tag_name("item"))
            .map(|i| attr(i, "infohash").unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(tv("q=some+show&season=1&ep=2"), [show]);
    assert!(tv("q=some+show&season=1&ep=3").is_empty());
    // A season alone is the Sxx word (the fixture's name has S01E02, one
    // token, so no season pack matches).
    assert!(tv("q=some+show&season=1").is_empty());
    assert_eq!(tv("q=some+show&cat=5040"), [show]);
    // tvsearch keeps TV unless `cat` says otherwise.
    assert!(tv("q=ubuntu").is_empty());
    assert_eq!(tv("q=ubuntu&cat=8000").len(), 3);
    let items = |q: &str| {
        get(addr, &format!("/torznab/api?{q}"), &[])
            .body
            .matches("<item>")
            .count()
    };
    // movie keeps Movies; an .iso is not one.
    assert_eq!(items("t=movie&q=debian"), 0);
    assert_eq!(items("t=movie&q=debian&cat=2000,8000"), 1);
    // A category nothing here has answers nothing, not everything.
    assert_eq!(items("t=search&q=ubuntu&cat=6000"), 0);
    assert_eq!(items("t=search&q=ubuntu&cat=5000"), 0);
    assert_eq!(items("t=search&cat=5000"), 1);
    // No q: the newest torrents (Prowlarr's test and RSS sync), with the
    // key sent as a parameter as Prowlarr does (ignored here: no key set).
    assert_eq!(items("t=search&apikey=anything"), 35);
    // https links behind a TLS proxy.
    let r = get(
        addr,
        "/torznab/api?t=search&q=debian",
        &[("X-Forwarded-Proto", "https")],
    );
    assert!(r.body.contains("<comments>https://"), "{}", r.body);
    // Errors are Newznab error documents.
    for (q, code) in [
        ("t=bogus", "202"),
        ("", "200"),
        ("t=search&limit=x", "201"),
        ("t=search&cat=tv", "201"),
        ("t=tvsearch&season=x", "201"),
        ("t=music&q=x", "203"),
        ("t=book&q=x", "203"),
    ] {
        let r = get(addr, &format!("/torznab/api?{q}"), &[]);
        let doc = roxmltree::Document::parse(&r.body).unwrap();
        let e = doc.root_element();
        assert_eq!(
            (e.tag_name().name(), e.attribute("code")),
            ("error", Some(code)),
            "{q}"
        );
        assert!(e.attribute("description").is_some());
    }
}

fn temp_db(name: &str) -> (std::path::PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("dht-hunter-web-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite:{}", dir.join("db.sqlite").display());
    (dir, url)
}

#[test]
fn api_pages_and_torznab_on_sqlite() {
    let (dir, url) = temp_db("api");
    exercise(&url);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn api_pages_and_torznab_on_postgres() {
    let base = match std::env::var("DHT_HUNTER_TEST_PG") {
        Ok(u) if !u.is_empty() => u,
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but DHT_HUNTER_TEST_PG is not: run `eval \"$(.ci/postgres.sh)\"` first"
            );
            eprintln!("notice: DHT_HUNTER_TEST_PG is unset; skipping the PostgreSQL web test");
            return;
        }
    };
    let schema = format!("web_{}", std::process::id());
    let mut admin = postgres::Client::connect(&base, postgres::NoTls).unwrap();
    admin
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};"
        ))
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    exercise(&format!("{base}{sep}options=-csearch_path%3D{schema}"));
    admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .unwrap();
}

#[test]
fn credentials_are_required_when_set() {
    let (dir, url) = temp_db("auth");
    let store = Store::open(&url).unwrap();
    store.writer().fetched(fixed().remove(0)).unwrap();
    store.flush().unwrap();
    let server = server(
        &store,
        Credentials {
            api_key: Some("s3cret-key".into()),
            basic: Some(("ann".into(), "pa:ss".into())),
        },
    );
    let addr = server.addr();
    let r = get(addr, "/api/stats", &[]);
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap().starts_with("Basic"));
    assert_eq!(get(addr, "/", &[]).status, 401);
    assert_eq!(get(addr, "/api/stats?apikey=wrong", &[]).status, 401);
    assert_eq!(get(addr, "/api/stats?apikey=s3cret-key", &[]).status, 200);
    assert_eq!(
        get(addr, "/api/stats", &[("X-Api-Key", "s3cret-key")]).status,
        200
    );
    // ann:pa:ss and ann:wrong
    assert_eq!(
        get(addr, "/", &[("Authorization", "Basic YW5uOnBhOnNz")]).status,
        200
    );
    assert_eq!(
        get(addr, "/", &[("Authorization", "Basic YW5uOndyb25n")]).status,
        401
    );
    // A page opened with the key keeps it in a cookie, so the UI's links
    // (which do not carry it) work; the API and Torznab set none.
    let r = get(addr, "/?apikey=s3cret-key", &[]);
    assert_eq!(r.status, 200);
    let cookie = r.header("set-cookie").expect("a key cookie").to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    assert_eq!(get(addr, "/status", &[("Cookie", &pair)]).status, 200);
    assert_eq!(
        get(addr, "/status", &[("Cookie", "dht_hunter_key=wrong")]).status,
        401
    );
    assert!(get(addr, "/api/stats?apikey=s3cret-key", &[])
        .header("set-cookie")
        .is_none());
    assert!(get(addr, "/?apikey=wrong", &[])
        .header("set-cookie")
        .is_none());
    // Torznab clients get a Newznab error document.
    let r = get(addr, "/torznab/api?t=caps", &[]);
    assert!(r.body.contains("<error code=\"100\""), "{}", r.body);
    let r = get(addr, "/torznab/api?t=caps&apikey=s3cret-key", &[]);
    assert!(r.body.contains("<caps>"));
    server.stop();
    store.close().unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_public_bind_without_credentials_is_refused() {
    let (dir, url) = temp_db("public");
    let store = Store::open(&url).unwrap();
    let cfg = WebConfig {
        addr: "0.0.0.0:0".parse().unwrap(),
        credentials: Credentials::default(),
        insecure_public: false,
        readers: 1,
        db_label: String::new(),
    };
    let err = web::start(cfg, store.reader(1).unwrap(), None).unwrap_err();
    assert!(err.to_string().contains("--web-insecure-public"), "{err}");
    store.close().unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

/// Past SEARCH_COUNT_CAP matches, the order applies to the newest
/// SEARCH_COUNT_CAP of them and pages end there; the count says so.
#[test]
fn many_matches_are_ordered_within_the_newest_window() {
    use dht_hunter::category::Category;
    use dht_hunter::store::{SortKey, SEARCH_COUNT_CAP};
    let (dir, url) = temp_db("window");
    let store = Store::open(&url).unwrap();
    let n = SEARCH_COUNT_CAP as u32 + 100;
    for i in 0..n {
        // Every tenth is a film (a video file, no episode mark).
        let file = if i % 10 == 0 { "x.mkv" } else { "x.bin" };
        let mut r = record(
            0,
            &format!("common word {i}"),
            &[(file, u64::from(i) + 1)],
            T0 + u64::from(i),
        );
        r.infohash[..4].copy_from_slice(&i.to_be_bytes());
        store.writer().fetched(r).unwrap();
    }
    store.flush().unwrap();
    let reader = store.reader(1).unwrap();
    let page = reader
        .search_page("common word", &[], SortKey::Size, 0, 10)
        .unwrap();
    assert!(page.counted_capped);
    assert_eq!(page.counted, SEARCH_COUNT_CAP);
    // The largest of all is the newest too here; sizes descend.
    let sizes: Vec<u64> = page.hits.iter().map(|h| h.total_size).collect();
    assert_eq!(sizes, (0..10).map(|k| u64::from(n) - k).collect::<Vec<_>>());
    // The window's last page: the oldest 100 are outside it.
    let last = reader
        .search_page(
            "common word",
            &[],
            SortKey::Size,
            SEARCH_COUNT_CAP as usize - 10,
            10,
        )
        .unwrap();
    assert!(!last.more);
    assert_eq!(last.hits.last().unwrap().total_size, 101);
    let relevance = reader
        .search_page("common word", &[], SortKey::Relevance, 0, 5)
        .unwrap();
    assert_eq!(relevance.hits.len(), 5);
    // Below the cap every order is exact.
    let few = reader
        .search_page("word 7", &[], SortKey::Size, 0, 50)
        .unwrap();
    assert!(!few.counted_capped);
    assert_eq!(few.hits[0].name, "common word 7");
    // A kind filters the window: the films among the newest 1000 matches
    // (i = 100..1100, every tenth), and "more than" since older matches
    // exist; without words, every film, counted exactly.
    let films = reader
        .search_page("common word", &[Category::Movies], SortKey::Size, 0, 200)
        .unwrap();
    assert_eq!(films.hits.len(), 100);
    assert!(films.hits.iter().all(|h| h.category == Category::Movies));
    assert_eq!((films.counted, films.counted_capped), (100, true));
    // A page past the end still says how many there are.
    let past = reader
        .search_page("common word", &[Category::Movies], SortKey::Size, 150, 10)
        .unwrap();
    assert!(past.hits.is_empty());
    assert_eq!((past.counted, past.counted_capped), (100, true));
    let second = reader
        .search_page("common word", &[Category::Movies], SortKey::Size, 90, 20)
        .unwrap();
    assert_eq!(
        (second.hits.len(), second.counted, second.more),
        (10, 100, false)
    );
    let all_films = reader
        .search_page("", &[Category::Movies], SortKey::Size, 0, 100)
        .unwrap();
    assert_eq!((all_films.counted, all_films.counted_capped), (110, false));
    assert!(all_films.more);
    drop(reader);
    store.close().unwrap();
    let _ = std::fs::remove_dir_all(dir);
}
