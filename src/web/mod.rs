//! `dht-hunter serve` and `crawl --web`: the store over HTTP — a web UI
//! (search, torrent pages, live status), a JSON API, and a Torznab
//! endpoint for Prowlarr, Sonarr, Radarr and the like.
//!
//! # Crates, and why
//!
//! * **axum** on **hyper**, on a tokio runtime of its own threads. tokio was
//!   already in the tree (the PostgreSQL store drives tokio-postgres);
//!   axum is the tokio project's own router, small on top of hyper, and
//!   kept in step with both. The shards' glommio executors are untouched:
//!   the HTTP side lives on its own threads.
//! * **maud** for pages: templates are Rust expressions checked at compile
//!   time, and every interpolated value is HTML-escaped unless wrapped in
//!   `PreEscaped` (used here only for the fixed stylesheet). Torrent names
//!   and paths are hostile input; escaping by default is the point.
//! * The Torznab XML is written by hand with [`torznab::xml_escape`]
//!   (maud's void elements are HTML, not XML).
//!
//! # Store access
//!
//! Every request runs its queries on tokio's blocking pool against a
//! [`StoreReader`]: read connections of the web server's own (SQLite in
//! WAL mode lets them read beside the writer; PostgreSQL gets separate
//! sessions), so a slow page never delays the crawler's writes and the
//! crawler never waits for a page.
//!
//! # Access
//!
//! Binds 127.0.0.1 by default. An API key (query `apikey=` or header
//! `X-Api-Key`) and/or HTTP basic auth may be required; either one
//! admits a request to any route. A page opened with `?apikey=` keeps the
//! key in an HttpOnly, SameSite=Strict cookie, so the UI's links work. A
//! bind to a non-loopback address
//! without either is refused unless the operator says
//! `--web-insecure-public`. Credentials come from the environment or a
//! file, never from a flag's value (which `ps` shows).

mod api;
pub use api::stats_json;
pub mod live;
mod pages;
pub mod torznab;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::config::WebSettings;
use crate::setting::{read_secret_file, ConfigError};
use crate::store::{StoreError, StoreReader};

pub use live::Live;

/// Environment variable holding the API key.
pub const API_KEY_ENV: &str = "DHT_HUNTER_WEB_API_KEY";
/// Environment variable holding `user:password` for basic auth.
pub const AUTH_ENV: &str = "DHT_HUNTER_WEB_AUTH";
/// Default listen address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";
/// Read connections the web server opens by default.
pub const DEFAULT_READERS: usize = 2;

/// Errors starting the web server.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// Credentials could not be read, or the bind is unsafe.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Binding or starting threads failed.
    #[error("web server on {addr}: {source}")]
    Io {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Who may use the server.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The API key (`apikey=` or `X-Api-Key`).
    pub api_key: Option<String>,
    /// Basic auth user and password.
    pub basic: Option<(String, String)>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("basic_user", &self.basic.as_ref().map(|(u, _)| u))
            .finish()
    }
}

impl Credentials {
    /// From the files when given, else from [`API_KEY_ENV`] and
    /// [`AUTH_ENV`]. The basic-auth secret is `user:password`.
    pub fn load(
        api_key_file: Option<&std::path::Path>,
        auth_file: Option<&std::path::Path>,
    ) -> Result<Credentials, ConfigError> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let api_key = match api_key_file {
            Some(p) => Some(read_secret_file(p, "web-api-key-file", "the web API key")?),
            None => env(API_KEY_ENV).map(|v| v.trim().to_owned()),
        };
        let auth = match auth_file {
            Some(p) => Some(read_secret_file(
                p,
                "web-auth-file",
                "the web user and password",
            )?),
            None => env(AUTH_ENV).map(|v| v.trim().to_owned()),
        };
        let basic = match auth {
            None => None,
            Some(a) => match a.split_once(':') {
                Some((u, p)) if !u.is_empty() && !p.is_empty() => {
                    Some((u.to_owned(), p.to_owned()))
                }
                _ => {
                    return Err(ConfigError::Invalid {
                        key: "web-auth-file",
                        message: format!(
                        "basic auth must be USER:PASSWORD ({AUTH_ENV} or the file's first line)"
                    ),
                    })
                }
            },
        };
        Ok(Credentials { api_key, basic })
    }

    /// Whether anything is required.
    pub fn any(&self) -> bool {
        self.api_key.is_some() || self.basic.is_some()
    }

    /// Whether `headers` / `query_key` carry a valid credential (always
    /// true when none is configured).
    fn admits(&self, headers: &HeaderMap, query_key: Option<&str>) -> bool {
        if !self.any() {
            return true;
        }
        if let Some(key) = &self.api_key {
            let header_key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
            let cookie_key = key_cookie(headers);
            if [query_key, header_key, cookie_key.as_deref()]
                .into_iter()
                .flatten()
                .any(|k| same_secret(k, key))
            {
                return true;
            }
        }
        if let Some((user, pass)) = &self.basic {
            if let Some((u, p)) = basic_auth(headers) {
                // Both compared, so timing tells nothing of which was wrong.
                let ok_user = same_secret(&u, user);
                let ok_pass = same_secret(&p, pass);
                return ok_user && ok_pass;
            }
        }
        false
    }
}

/// The cookie a browser keeps the API key in: a page opened with
/// `?apikey=KEY` sets it, so that the links and the search form, which do
/// not carry the key, keep working.
const KEY_COOKIE: &str = "dht_hunter_key";
/// How long a browser keeps [`KEY_COOKIE`]: 30 days.
const KEY_COOKIE_SECS: u32 = 30 * 24 * 3600;

/// The API key from the request's [`KEY_COOKIE`], if any.
fn key_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == KEY_COOKIE)
        .map(|(_, v)| form_decode(v))
}

/// Compares two secrets in time independent of where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

/// `Authorization: Basic …` decoded into user and password.
fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    use base64::Engine;
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

/// Settings of the web server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfig {
    /// Listen address.
    pub addr: SocketAddr,
    /// Who may use it.
    pub credentials: Credentials,
    /// Serve a non-loopback address without credentials.
    pub insecure_public: bool,
    /// Read connections to the store.
    pub readers: usize,
    /// Where `serve` found the store, shown on the status page.
    pub db_label: String,
}

impl WebConfig {
    /// Checks the operator's settings and loads the credentials: refused
    /// (before anything is opened) when a non-loopback address would serve
    /// the store without credentials. `db_label` is the store as the
    /// status page shows it (password redacted).
    pub fn from_settings(s: &WebSettings, db_label: String) -> Result<WebConfig, ConfigError> {
        let web = WebConfig {
            addr: s.addr,
            credentials: Credentials::load(s.api_key_file.as_deref(), s.auth_file.as_deref())?,
            insecure_public: s.insecure_public,
            readers: s.readers.unwrap_or(DEFAULT_READERS).max(1),
            db_label,
        };
        web.check_exposure()?;
        Ok(web)
    }

    /// Refuses to expose the store to the network without credentials
    /// unless the operator said so explicitly.
    pub fn check_exposure(&self) -> Result<(), ConfigError> {
        if self.addr.ip().is_loopback() || self.credentials.any() || self.insecure_public {
            return Ok(());
        }
        Err(ConfigError::Invalid {
            key: "web",
            message: format!(
                "{} is not a loopback address and no credentials are set: set {API_KEY_ENV} \
                 or {AUTH_ENV} (or --web-api-key-file / --web-auth-file), or pass \
                 --web-insecure-public to serve the store to anyone who can reach it",
                self.addr
            ),
        })
    }
}

/// What the handlers share.
struct App {
    reader: StoreReader,
    live: Option<Arc<Live>>,
    credentials: Credentials,
    db_label: String,
    /// One export at a time: each holds a connection and a snapshot.
    export: Arc<tokio::sync::Semaphore>,
}

/// A running web server.
#[derive(Debug)]
pub struct WebServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WebServer {
    /// The address it listens on (the port chosen when 0 was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets requests in flight finish (for at most
    /// [`STOP_GRACE`]) and joins the server thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// Blocks until the server thread ends (it does not on its own).
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// How long requests in flight (an export, say) may run on after a stop.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Worker threads of the web runtime: requests are small and their queries
/// run on the blocking pool, so two keep the server responsive without
/// taking cores from the shards.
const WORKER_THREADS: usize = 2;

/// Binds `cfg.addr` and serves on threads of its own until stopped.
pub fn start(
    cfg: WebConfig,
    reader: StoreReader,
    live: Option<Arc<Live>>,
) -> Result<WebServer, WebError> {
    cfg.check_exposure()?;
    let io = |source| WebError::Io {
        addr: cfg.addr,
        source,
    };
    let listener = std::net::TcpListener::bind(cfg.addr).map_err(io)?;
    listener.set_nonblocking(true).map_err(io)?;
    let addr = listener.local_addr().map_err(io)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .max_blocking_threads(cfg.readers.max(1) + 2)
        .thread_name("web")
        .enable_all()
        .build()
        .map_err(io)?;
    let app = Arc::new(App {
        reader,
        live,
        credentials: cfg.credentials.clone(),
        db_label: cfg.db_label.clone(),
        export: Arc::new(tokio::sync::Semaphore::new(1)),
    });
    // The last reference to the app (its store reader) is dropped on the
    // thread after the runtime is gone: a PostgreSQL reader owns a runtime
    // of its own, which may not be dropped inside an async context.
    let keep = app.clone();
    let router = router(app);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("web-server".into())
        .spawn(move || {
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        log::error!("web server: {e}");
                        return;
                    }
                };
                let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
                let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                    let _ = stop_rx.await;
                    let _ = stopping_tx.send(());
                });
                let serve = std::pin::pin!(std::future::IntoFuture::into_future(serve));
                // Once a stop is asked, requests in flight get STOP_GRACE.
                let grace = async {
                    if stopping_rx.await.is_ok() {
                        tokio::time::sleep(STOP_GRACE).await;
                    } else {
                        std::future::pending::<()>().await;
                    }
                };
                tokio::select! {
                    r = serve => if let Err(e) = r { log::error!("web server: {e}") },
                    () = grace => log::warn!("web server: requests still running {STOP_GRACE:?} after the stop were cut"),
                }
            });
            rt.shutdown_timeout(Duration::from_secs(1));
            drop(keep);
        })
        .map_err(io)?;
    log::info!("web UI on http://{addr}/ (API /api, Torznab /torznab/api)");
    Ok(WebServer {
        addr,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(pages::search))
        .route("/t/{infohash}", get(pages::torrent))
        .route("/status", get(pages::status))
        .route("/api/search", get(api::search))
        .route("/api/torrent/{infohash}", get(api::torrent))
        .route("/api/stats", get(api::stats))
        .route("/api/export", get(api::export))
        .route("/torznab/api", get(torznab::api))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

/// Checks credentials and adds the security headers every answer carries.
async fn guard(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let query_key = req.uri().query().and_then(|q| {
        form_pairs(q)
            .into_iter()
            .find(|(k, _)| k == "apikey")
            .map(|(_, v)| v)
    });
    // A page (not the API or Torznab, whose clients send the key each
    // time) opened with a valid `apikey=` keeps it in a cookie.
    let page = !req.uri().path().starts_with("/api") && !req.uri().path().starts_with("/torznab");
    let remember = app
        .credentials
        .api_key
        .as_deref()
        .filter(|key| page && query_key.as_deref().is_some_and(|k| same_secret(k, key)));
    let mut resp = if app.credentials.admits(req.headers(), query_key.as_deref()) {
        let mut r = next.run(req).await;
        if let Some(key) = remember {
            let enc =
                percent_encoding::utf8_percent_encode(key, percent_encoding::NON_ALPHANUMERIC);
            if let Ok(v) = HeaderValue::from_str(&format!(
                "{KEY_COOKIE}={enc}; Path=/; Max-Age={KEY_COOKIE_SECS}; HttpOnly; SameSite=Strict"
            )) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
        }
        r
    } else if req.uri().path().starts_with("/torznab") {
        torznab::error(100, "Incorrect user credentials")
    } else {
        let mut r = (StatusCode::UNAUTHORIZED, "credentials required\n").into_response();
        if app.credentials.basic.is_some() {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"dht-hunter\", charset=\"UTF-8\""),
            );
        }
        r
    };
    let h = resp.headers_mut();
    // Inline style only: no script, nothing from elsewhere.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; \
             img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// `application/x-www-form-urlencoded` pairs of a query string.
fn form_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

fn form_decode(s: &str) -> String {
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8_lossy()
        .into_owned()
}

/// The parameters a search takes, from a query string.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SearchParams {
    q: String,
    /// `cat=movies,tv,…` ([`crate::category::Category::slug`]); empty for
    /// every category.
    categories: Vec<crate::category::Category>,
    sort: crate::store::SortKey,
    offset: usize,
    limit: usize,
}

/// Most hits one page or API call returns.
pub const LIMIT_MAX: usize = 100;
/// Deepest offset served: past it, paging costs grow with the offset and
/// nobody reads that far (narrow the query instead).
pub const OFFSET_MAX: usize = 10_000;

impl SearchParams {
    /// `q`, `cat`, `sort`, and `offset` (or 1-based `page`) and `limit`.
    fn parse(pairs: &[(String, String)], default_limit: usize) -> Result<SearchParams, String> {
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let num = |k: &str| -> Result<Option<usize>, String> {
            get(k)
                .filter(|v| !v.is_empty())
                .map(|v| {
                    v.parse::<usize>()
                        .map_err(|_| format!("{k} must be a whole number, not {v:?}"))
                })
                .transpose()
        };
        let sort = match get("sort").filter(|s| !s.is_empty()) {
            Some(s) => s.parse()?,
            None => crate::store::SortKey::Relevance,
        };
        let limit = num("limit")?.unwrap_or(default_limit);
        if limit == 0 || limit > LIMIT_MAX {
            return Err(format!("limit must be 1 to {LIMIT_MAX}"));
        }
        let offset = match (num("offset")?, num("page")?) {
            (Some(o), _) => o,
            (None, Some(0)) => return Err("page starts at 1".into()),
            (None, Some(p)) => (p - 1).saturating_mul(limit),
            (None, None) => 0,
        };
        if offset > OFFSET_MAX {
            return Err(format!(
                "offset past {OFFSET_MAX}: narrow the search instead"
            ));
        }
        let mut categories = Vec::new();
        for slug in get("cat")
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let c = crate::category::Category::from_slug(slug).ok_or_else(|| {
                let all: Vec<&str> = crate::category::Category::ALL
                    .iter()
                    .map(|c| c.slug())
                    .collect();
                format!("unknown category {slug:?} ({})", all.join(", "))
            })?;
            if !categories.contains(&c) {
                categories.push(c);
            }
        }
        Ok(SearchParams {
            q: get("q").unwrap_or("").to_owned(),
            categories,
            sort,
            offset,
            limit,
        })
    }
}

/// Runs a blocking store call on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(StoreError::Corrupt(format!("store task failed: {e}"))),
    }
}

/// `magnet:?xt=urn:btih:HEX&dn=NAME` (the name percent-encoded).
pub fn magnet(infohash: &[u8; 20], name: &str) -> String {
    format!(
        "magnet:?xt=urn:btih:{}&dn={}",
        crate::id::Id(*infohash).to_hex(),
        percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC)
    )
}

/// An infohash from 40 hex digits in a path.
fn parse_infohash(s: &str) -> Option<[u8; 20]> {
    if s.len() != 40 {
        return None;
    }
    s.parse::<crate::id::Id>().ok().map(|id| id.0)
}

/// Where the store is, for `serve`: a file name without a password.
pub fn db_label(url: &str) -> String {
    crate::store::redact_url(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &str) -> Vec<(String, String)> {
        form_pairs(q)
    }

    #[test]
    fn search_params() {
        let p = SearchParams::parse(&pairs("q=caf%C3%A9+au+lait&sort=size&page=3"), 20).unwrap();
        assert_eq!(p.q, "café au lait");
        assert_eq!(p.sort, crate::store::SortKey::Size);
        assert_eq!((p.offset, p.limit), (40, 20));
        let p = SearchParams::parse(&pairs("offset=7&limit=5"), 20).unwrap();
        assert_eq!((p.q.as_str(), p.offset, p.limit), ("", 7, 5));
        for bad in [
            "limit=0",
            "limit=101",
            "page=0",
            "offset=x",
            "sort=name",
            "offset=10001",
        ] {
            assert!(SearchParams::parse(&pairs(bad), 20).is_err(), "{bad}");
        }
    }

    #[test]
    fn secrets_and_basic_auth() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
        assert!(!same_secret("", "a"));
        let creds = Credentials {
            api_key: Some("k3y".into()),
            basic: Some(("ann".into(), "pw:with:colons".into())),
        };
        let mut h = HeaderMap::new();
        assert!(!creds.admits(&h, None));
        assert!(creds.admits(&h, Some("k3y")));
        assert!(!creds.admits(&h, Some("k3")));
        h.insert("x-api-key", HeaderValue::from_static("k3y"));
        assert!(creds.admits(&h, None));
        let mut h = HeaderMap::new();
        // ann:pw:with:colons
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic YW5uOnB3OndpdGg6Y29sb25z"),
        );
        assert!(creds.admits(&h, None));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic YW5uOnB3"),
        );
        assert!(!creds.admits(&h, None));
        assert!(Credentials::default().admits(&HeaderMap::new(), None));
    }

    #[test]
    fn public_binds_need_credentials_or_the_flag() {
        let mut cfg = WebConfig {
            addr: "0.0.0.0:8080".parse().unwrap(),
            credentials: Credentials::default(),
            insecure_public: false,
            readers: 1,
            db_label: String::new(),
        };
        let err = cfg.check_exposure().unwrap_err().to_string();
        assert!(err.contains("--web-insecure-public"), "{err}");
        cfg.insecure_public = true;
        assert!(cfg.check_exposure().is_ok());
        cfg.insecure_public = false;
        cfg.credentials.api_key = Some("x".into());
        assert!(cfg.check_exposure().is_ok());
        for lo in ["127.0.0.1:1", "[::1]:1", "127.3.4.5:1"] {
            cfg.addr = lo.parse().unwrap();
            cfg.credentials = Credentials::default();
            assert!(cfg.check_exposure().is_ok(), "{lo}");
        }
        assert!(format!(
            "{:?}",
            Credentials {
                api_key: Some("s3cret".into()),
                basic: None
            }
        )
        .contains("***"));
    }

    #[test]
    fn magnets_encode_the_name() {
        let m = magnet(&[0xab; 20], "a b&c=d/é");
        assert_eq!(
            m,
            format!(
                "magnet:?xt=urn:btih:{}&dn=a%20b%26c%3Dd%2F%C3%A9",
                "ab".repeat(20)
            )
        );
    }
}
