//! The crawl configuration: defaults right for a real server, a TOML file
//! (`--config FILE`) for every knob, and command-line flags on top.
//!
//! Precedence is flag > file > default. The file is parsed strictly: an
//! unknown key or a value of the wrong type is an error that names the key,
//! so a typo never silently falls back to a default.

use crate::fetch::{EncryptionPolicy, TransportPolicy};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::keyspace::Slice;
pub use crate::setting::{read_secret_file, ConfigError};

/// The well-known DHT routers, used when no `--bootstrap` is given.
/// Defaults of the crawl settings that have a fixed one: the single place
/// both [`CrawlConfig::resolve`] and the command line's `--help` read them.
pub mod defaults {
    /// `--max-pps`.
    pub const MAX_PPS: u32 = 20_000;
    /// `--per-ip-pps`.
    pub const PER_IP_PPS: u32 = 5;
    /// `--inbound-per-ip-pps`.
    pub const INBOUND_PER_IP_PPS: u32 = 5;
    /// `--fetch-concurrency`: when unset, this many, or fewer where the
    /// hard open-file limit allows fewer (see `engine::preflight`).
    pub const FETCH_CONCURRENCY: usize = crate::fetch::DEFAULT_CONCURRENCY;
    /// `--fetch-timeout`, seconds.
    pub const FETCH_TIMEOUT_S: u64 = 20;
    /// `--max-metadata-size`, bytes.
    pub const MAX_METADATA_SIZE: u64 = 10 * 1024 * 1024;
    /// `--keyspace`.
    pub const KEYSPACE: &str = "0/1";
    /// `--udp-rcvbuf` and `--udp-sndbuf`, bytes.
    pub const UDP_BUFFER: usize = 8 << 20;
    /// `--rx-coalesce-us`, microseconds.
    pub const RX_COALESCE_US: u64 = 1000;
    /// `--scrape-nodes`: nodes asked for a BEP 33 scrape of each stored
    /// torrent.
    pub const SCRAPE_NODES: usize = crate::dht::harvest::DEFAULT_SCRAPE_NODES;
    /// `--max-nodes`: routing-table entries per shard.
    pub const MAX_NODES: usize = crate::dht::DEFAULT_MAX_NODES;
}

/// A byte count in the config file: an integer, or a string with a unit
/// (`"50GiB"`, see [`crate::filter::parse_bytes`]).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum SizeValue {
    /// Bytes.
    Bytes(u64),
    /// A number with a unit.
    Text(String),
}

impl SizeValue {
    fn resolve(&self, key: &'static str) -> Result<u64, ConfigError> {
        match self {
            SizeValue::Bytes(n) => Ok(*n),
            SizeValue::Text(t) => crate::filter::parse_bytes(t)
                .map_err(|message| ConfigError::Invalid { key, message }),
        }
    }
}

pub const DEFAULT_BOOTSTRAP: [&str; 4] = [
    "router.bittorrent.com:6881",
    "router.utorrent.com:6881",
    "dht.transmissionbt.com:6881",
    "dht.libtorrent.org:25401",
];

/// How node ids are chosen (`--identity` lists the values, with their
/// help, from this type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum IdentityMode {
    /// One BEP 42-compliant id per bind address, shared by every shard.
    #[default]
    Bep42,
    /// One id per shard, inside that shard's slice, each on its own port.
    Spread,
}

/// The crawl settings as they may appear in a TOML file. Every field is
/// optional; absent fields keep their defaults.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    /// `bind = ["0.0.0.0:6881"]`.
    pub bind: Option<Vec<SocketAddr>>,
    /// `bootstrap = ["router.bittorrent.com:6881"]`.
    pub bootstrap: Option<Vec<String>>,
    /// `cores = "0-3,6"`.
    pub cores: Option<String>,
    /// `shards = 4`.
    pub shards: Option<usize>,
    /// `no-pin = true`.
    pub no_pin: Option<bool>,
    /// `oversubscribe = true`.
    pub oversubscribe: Option<bool>,
    /// `identity = "bep42"`.
    pub identity: Option<IdentityMode>,
    /// `state-dir = "/var/lib/dht-hunter"`.
    pub state_dir: Option<PathBuf>,
    /// `allow-private = true`.
    pub allow_private: Option<bool>,
    /// `allow-privileged-ports = true`.
    pub allow_privileged_ports: Option<bool>,
    /// `max-pps = 20000`.
    pub max_pps: Option<u32>,
    /// `per-ip-pps = 5`.
    pub per_ip_pps: Option<u32>,
    /// `inbound-per-ip-pps = 5`.
    pub inbound_per_ip_pps: Option<u32>,
    /// `duration = 3600` (seconds).
    pub duration: Option<u64>,
    /// `db = "sqlite:/var/lib/dht-hunter/db.sqlite"`.
    pub db: Option<String>,
    /// `db-url-file = "/etc/dht-hunter/db-url"`: the store URL is the
    /// file's first line (keeps a password out of `ps` and of this file).
    pub db_url_file: Option<PathBuf>,
    /// `fetch-concurrency = 1024`.
    pub fetch_concurrency: Option<usize>,
    /// `fetch-timeout = 20` (seconds).
    pub fetch_timeout: Option<u64>,
    /// `encryption = "plain-first"`.
    pub encryption: Option<EncryptionPolicy>,
    /// `transport = "tcp-first"`.
    pub transport: Option<TransportPolicy>,
    /// `max-metadata-size = 10485760`.
    pub max_metadata_size: Option<u64>,
    /// `metrics = "127.0.0.1:9100"`.
    pub metrics: Option<SocketAddr>,
    /// `keyspace = "0/4"`.
    pub keyspace: Option<String>,
    /// `udp-rcvbuf = 8388608`.
    pub udp_rcvbuf: Option<usize>,
    /// `udp-sndbuf = 8388608`.
    pub udp_sndbuf: Option<usize>,
    /// `rx-coalesce-us = 1000`.
    pub rx_coalesce_us: Option<u64>,
    /// `include = "(?i)\\.(mkv|mp4)$"`: store only torrents whose name or
    /// some file path matches.
    pub include: Option<String>,
    /// `exclude = "(?i)sample"`: store no torrent whose name or any file
    /// path matches.
    pub exclude: Option<String>,
    /// `min-size = "1MiB"`: store no torrent smaller.
    pub min_size: Option<SizeValue>,
    /// `max-size = "100GiB"`: store no torrent larger.
    pub max_size: Option<SizeValue>,
    /// `max-db-size = "50GiB"`: stop fetching and storing at this size.
    pub max_db_size: Option<SizeValue>,
    /// `scrape-nodes = 4`: BEP 33 scrape queries per stored torrent.
    pub scrape_nodes: Option<usize>,
    /// `max-nodes = 20000`: routing-table entries per shard.
    pub max_nodes: Option<usize>,
    /// `table-turnover = true`: when the table is full, nodes whose
    /// samples are in make room for newcomers.
    pub table_turnover: Option<bool>,
    /// `web = "127.0.0.1:8080"`: also serve the web UI, API and Torznab.
    pub web: Option<SocketAddr>,
    /// `web-api-key-file = "/etc/dht-hunter/web-api-key"`.
    pub web_api_key_file: Option<PathBuf>,
    /// `web-auth-file = "/etc/dht-hunter/web-auth"` (`USER:PASSWORD`).
    pub web_auth_file: Option<PathBuf>,
    /// `web-insecure-public = false`.
    pub web_insecure_public: Option<bool>,
    /// `web-readers = 2`.
    pub web_readers: Option<usize>,
}

impl FileConfig {
    /// A crawler on loopback for the demo, tests and benches: bound to
    /// 127.0.0.1 on an ephemeral port, private addresses allowed, shards
    /// unpinned and allowed to outnumber the cores (they share the machine
    /// with a simulated swarm or a load generator); everything else is the
    /// crawl command's default unless the caller sets it.
    pub fn loopback(shards: usize, bootstrap: Vec<String>, state_dir: PathBuf, db: String) -> Self {
        FileConfig {
            bind: Some(vec![SocketAddr::from(([127, 0, 0, 1], 0))]),
            bootstrap: Some(bootstrap),
            shards: Some(shards),
            no_pin: Some(true),
            oversubscribe: Some(true),
            allow_private: Some(true),
            state_dir: Some(state_dir),
            db: Some(db),
            ..FileConfig::default()
        }
    }

    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses config text (`path` is only for messages).
    pub fn parse(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })
    }

    /// The layer the environment gives: the store URL from
    /// [`DB_URL_ENV`], when set and not empty.
    pub fn from_env() -> FileConfig {
        FileConfig {
            db: std::env::var(DB_URL_ENV)
                .ok()
                .filter(|v| !v.trim().is_empty()),
            ..FileConfig::default()
        }
    }

    /// Fills every field that is unset here from `lower` (flags over file).
    /// `db` and `db-url-file` are one setting: a layer that sets either
    /// hides both of the lower layer's.
    pub fn or(self, lower: FileConfig) -> FileConfig {
        let (db, db_url_file) = if self.db.is_some() || self.db_url_file.is_some() {
            (self.db, self.db_url_file)
        } else {
            (lower.db, lower.db_url_file)
        };
        FileConfig {
            db,
            db_url_file,
            bind: self.bind.or(lower.bind),
            bootstrap: self.bootstrap.or(lower.bootstrap),
            cores: self.cores.or(lower.cores),
            shards: self.shards.or(lower.shards),
            no_pin: self.no_pin.or(lower.no_pin),
            oversubscribe: self.oversubscribe.or(lower.oversubscribe),
            identity: self.identity.or(lower.identity),
            state_dir: self.state_dir.or(lower.state_dir),
            allow_private: self.allow_private.or(lower.allow_private),
            allow_privileged_ports: self.allow_privileged_ports.or(lower.allow_privileged_ports),
            max_pps: self.max_pps.or(lower.max_pps),
            per_ip_pps: self.per_ip_pps.or(lower.per_ip_pps),
            inbound_per_ip_pps: self.inbound_per_ip_pps.or(lower.inbound_per_ip_pps),
            duration: self.duration.or(lower.duration),
            fetch_concurrency: self.fetch_concurrency.or(lower.fetch_concurrency),
            fetch_timeout: self.fetch_timeout.or(lower.fetch_timeout),
            encryption: self.encryption.or(lower.encryption),
            transport: self.transport.or(lower.transport),
            max_metadata_size: self.max_metadata_size.or(lower.max_metadata_size),
            metrics: self.metrics.or(lower.metrics),
            keyspace: self.keyspace.or(lower.keyspace),
            udp_rcvbuf: self.udp_rcvbuf.or(lower.udp_rcvbuf),
            udp_sndbuf: self.udp_sndbuf.or(lower.udp_sndbuf),
            rx_coalesce_us: self.rx_coalesce_us.or(lower.rx_coalesce_us),
            include: self.include.or(lower.include),
            exclude: self.exclude.or(lower.exclude),
            min_size: self.min_size.or(lower.min_size),
            max_size: self.max_size.or(lower.max_size),
            max_db_size: self.max_db_size.or(lower.max_db_size),
            scrape_nodes: self.scrape_nodes.or(lower.scrape_nodes),
            max_nodes: self.max_nodes.or(lower.max_nodes),
            table_turnover: self.table_turnover.or(lower.table_turnover),
            web: self.web.or(lower.web),
            web_api_key_file: self.web_api_key_file.or(lower.web_api_key_file),
            web_auth_file: self.web_auth_file.or(lower.web_auth_file),
            web_insecure_public: self.web_insecure_public.or(lower.web_insecure_public),
            web_readers: self.web_readers.or(lower.web_readers),
        }
    }
}

/// The resolved crawl settings.
#[derive(Debug, Clone, PartialEq)]
pub struct CrawlConfig {
    /// UDP bind addresses (IPv4 and IPv6).
    pub bind: Vec<SocketAddr>,
    /// Bootstrap nodes as `HOST:PORT`, resolved by DNS at start.
    pub bootstrap: Vec<String>,
    /// Core list (`0-3,6`), or all online cores.
    pub cores: Option<String>,
    /// Shard count, or one per core.
    pub shards: Option<usize>,
    /// Pin each shard to its core.
    pub pin: bool,
    /// Allow more shards than cores.
    pub oversubscribe: bool,
    /// Identity mode.
    pub identity: IdentityMode,
    /// Where ids, known nodes and the default database live.
    pub state_dir: PathBuf,
    /// Accept loopback and private addresses (tests and demos).
    pub allow_private: bool,
    /// Fetch metadata from peers on ports below 1024.
    pub allow_privileged_ports: bool,
    /// Global outbound packet budget per second, over all shards.
    pub max_pps: u32,
    /// Outbound packets per second to one remote IP, over all shards.
    pub per_ip_pps: u32,
    /// Queries per second accepted from one remote IP (per shard; the
    /// kernel sends one ip:port to one shard).
    pub inbound_per_ip_pps: u32,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Store URL (`sqlite:PATH` or `postgres://…`).
    pub db: String,
    /// Concurrent metadata fetches per shard.
    pub fetch_concurrency: usize,
    /// Whether `fetch_concurrency` is the default, which start-up lowers
    /// to what the hard open-file limit allows instead of refusing to
    /// start (a value the operator set is kept, or refused).
    pub fetch_concurrency_default: bool,
    /// Hard deadline of one metadata fetch.
    pub fetch_timeout: Duration,
    /// Plaintext or MSE to peers, and in which order.
    pub encryption: EncryptionPolicy,
    /// TCP or uTP to peers, and in which order.
    pub transport: TransportPolicy,
    /// Largest metadata accepted.
    pub max_metadata_size: u64,
    /// Prometheus listen address.
    pub metrics: Option<SocketAddr>,
    /// This instance's part of the keyspace.
    pub keyspace: Slice,
    /// The keyspace spec as given (for messages).
    pub keyspace_spec: String,
    /// SO_RCVBUF per shard socket.
    pub udp_rcvbuf: usize,
    /// SO_SNDBUF per shard socket.
    pub udp_sndbuf: usize,
    /// Receive coalescing window under dense traffic (zero: off).
    pub rx_coalesce: Duration,
    /// What is stored (validated: the patterns compile).
    pub filter: crate::filter::FilterSpec,
    /// Stop fetching and storing new torrents at this database size.
    pub max_db_size: Option<u64>,
    /// BEP 33 scrape queries per stored torrent (0: no scrapes).
    pub scrape_nodes: usize,
    /// Routing-table entries per shard.
    pub max_nodes: usize,
    /// Whether nodes whose samples are in make room in a full table.
    pub table_turnover: bool,
    /// The web server to run beside the crawler, as given (None: off).
    pub web: Option<WebSettings>,
}

/// The web server's settings as the operator gave them (`--web` and the
/// `--web-*` flags, for `crawl` and `serve` alike). The web module checks
/// them and loads the credentials when the server is about to start
/// (`crate::web::WebConfig::from_settings`), before anything is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSettings {
    /// Listen address.
    pub addr: SocketAddr,
    /// File holding the API key (else the environment variable).
    pub api_key_file: Option<PathBuf>,
    /// File holding `user:password` (else the environment variable).
    pub auth_file: Option<PathBuf>,
    /// Serve a non-loopback address without credentials.
    pub insecure_public: bool,
    /// Read connections to the store (None: the web module's default).
    pub readers: Option<usize>,
}

/// Bounds of `--max-nodes`: a table must hold a few buckets' worth, and
/// 16 M entries (about 1.4 KiB each at most, measured) is far past any one
/// shard's memory budget.
const MIN_MAX_NODES: usize = 64;
const MAX_MAX_NODES: usize = 16 << 20;

/// The environment variable a store URL may come from (below the flags,
/// above the config file), so that a password never shows in `ps`.
pub const DB_URL_ENV: &str = "DHT_HUNTER_DB_URL";

/// Reads a store URL from `path`: its first line, trimmed. Warns when the
/// file is readable by others than its owner. The contents never appear in
/// an error.
pub fn read_db_url_file(path: &Path) -> Result<String, ConfigError> {
    read_secret_file(path, "db-url-file", "the database URL")
}

/// The store URL from `db` or `db_url_file` (never both), else the SQLite
/// file in `state_dir`; the single place both the crawl and the other
/// commands resolve it.
pub fn resolve_db(
    db: Option<String>,
    db_url_file: Option<&Path>,
    state_dir: &Path,
) -> Result<String, ConfigError> {
    let db = match (db, db_url_file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::Invalid {
                key: "db",
                message: "set either db or db-url-file, not both".into(),
            })
        }
        (Some(url), None) => url,
        (None, Some(path)) => read_db_url_file(path)?,
        (None, None) => format!("sqlite:{}", state_dir.join("dht-hunter.sqlite").display()),
    };
    if !(db.starts_with("sqlite:")
        || db.starts_with("postgres://")
        || db.starts_with("postgresql://"))
    {
        return Err(ConfigError::Invalid {
            key: "db",
            message: format!(
                "{:?} is neither sqlite:PATH nor postgres://…",
                crate::store::redact_url(&db)
            ),
        });
    }
    Ok(db)
}

/// The default state directory: `$XDG_DATA_HOME/dht-hunter`, else
/// `$HOME/.local/share/dht-hunter`, else `./dht-hunter-state`.
pub fn default_state_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("dht-hunter");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h).join(".local/share/dht-hunter");
    }
    PathBuf::from("dht-hunter-state")
}

impl CrawlConfig {
    /// Resolves merged settings against the defaults and validates them.
    pub fn resolve(c: FileConfig) -> Result<CrawlConfig, ConfigError> {
        let bind = c.bind.unwrap_or_else(|| {
            vec![
                SocketAddr::from(([0, 0, 0, 0], 6881)),
                SocketAddr::from(([0u16; 8], 6881)),
            ]
        });
        if bind.is_empty() {
            return Err(ConfigError::Invalid {
                key: "bind",
                message: "at least one address is needed".into(),
            });
        }
        if bind.len() > 255 {
            return Err(ConfigError::Invalid {
                key: "bind",
                message: "at most 255 addresses".into(),
            });
        }
        let bootstrap = c
            .bootstrap
            .unwrap_or_else(|| DEFAULT_BOOTSTRAP.iter().map(|s| s.to_string()).collect());
        for b in &bootstrap {
            match b.rsplit_once(':') {
                Some((host, port))
                    if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {}
                _ => {
                    return Err(ConfigError::Invalid {
                        key: "bootstrap",
                        message: format!("{b:?} is not HOST:PORT"),
                    })
                }
            }
        }
        if let Some(0) = c.shards {
            return Err(ConfigError::Invalid {
                key: "shards",
                message: "must be at least 1".into(),
            });
        }
        if let Some(n) = c.shards.filter(|n| *n > 255) {
            return Err(ConfigError::Invalid {
                key: "shards",
                message: format!("{n} is more than the 255 shards a transaction id can name"),
            });
        }
        let max_pps = c.max_pps.unwrap_or(defaults::MAX_PPS);
        let per_ip_pps = c.per_ip_pps.unwrap_or(defaults::PER_IP_PPS);
        let fetch_concurrency = c.fetch_concurrency.unwrap_or(defaults::FETCH_CONCURRENCY);
        if fetch_concurrency == 0 {
            return Err(ConfigError::Invalid {
                key: "fetch-concurrency",
                message: "must be at least 1".into(),
            });
        }
        let fetch_timeout = c.fetch_timeout.unwrap_or(defaults::FETCH_TIMEOUT_S);
        if fetch_timeout == 0 || fetch_timeout > 3600 {
            return Err(ConfigError::Invalid {
                key: "fetch-timeout",
                message: format!("{fetch_timeout} s is outside 1..=3600"),
            });
        }
        let max_metadata_size = c.max_metadata_size.unwrap_or(defaults::MAX_METADATA_SIZE);
        if !(1..=1 << 30).contains(&max_metadata_size) {
            return Err(ConfigError::Invalid {
                key: "max-metadata-size",
                message: format!("{max_metadata_size} is outside 1..=1 GiB"),
            });
        }
        let rx_coalesce_us = c.rx_coalesce_us.unwrap_or(defaults::RX_COALESCE_US);
        if rx_coalesce_us > 10_000 {
            return Err(ConfigError::Invalid {
                key: "rx-coalesce-us",
                message: format!("{rx_coalesce_us} µs is outside 0..=10000"),
            });
        }
        let keyspace_spec = c.keyspace.unwrap_or_else(|| defaults::KEYSPACE.to_string());
        let keyspace = Slice::parse_spec(&keyspace_spec).map_err(|e| ConfigError::Invalid {
            key: "keyspace",
            message: e.to_string(),
        })?;
        let state_dir = c.state_dir.unwrap_or_else(default_state_dir);
        let db = resolve_db(c.db, c.db_url_file.as_deref(), &state_dir)?;
        let size = |v: &Option<SizeValue>, key| v.as_ref().map(|v| v.resolve(key)).transpose();
        let filter = crate::filter::FilterSpec {
            include: c.include,
            exclude: c.exclude,
            min_size: size(&c.min_size, "min-size")?,
            max_size: size(&c.max_size, "max-size")?,
        };
        if let Err(e) = crate::filter::ContentFilter::new(&filter) {
            let key = match &e {
                crate::filter::FilterError::Pattern { key, .. } => key,
                crate::filter::FilterError::Bounds { .. } => &"min-size",
            };
            return Err(ConfigError::Invalid {
                key,
                message: e.to_string(),
            });
        }
        let max_db_size = size(&c.max_db_size, "max-db-size")?;
        if max_db_size == Some(0) {
            return Err(ConfigError::Invalid {
                key: "max-db-size",
                message: "must be above 0 (leave it unset for no cap)".into(),
            });
        }
        let scrape_nodes = c.scrape_nodes.unwrap_or(defaults::SCRAPE_NODES);
        if scrape_nodes > 16 {
            return Err(ConfigError::Invalid {
                key: "scrape-nodes",
                message: format!("{scrape_nodes} is outside 0..=16"),
            });
        }
        let max_nodes = c.max_nodes.unwrap_or(defaults::MAX_NODES);
        if !(MIN_MAX_NODES..=MAX_MAX_NODES).contains(&max_nodes) {
            return Err(ConfigError::Invalid {
                key: "max-nodes",
                message: format!("{max_nodes} is outside {MIN_MAX_NODES}..={MAX_MAX_NODES}"),
            });
        }
        let web = c.web.map(|addr| WebSettings {
            addr,
            api_key_file: c.web_api_key_file.clone(),
            auth_file: c.web_auth_file.clone(),
            insecure_public: c.web_insecure_public.unwrap_or(false),
            readers: c.web_readers,
        });
        Ok(CrawlConfig {
            bind,
            bootstrap,
            cores: c.cores,
            shards: c.shards,
            pin: !c.no_pin.unwrap_or(false),
            oversubscribe: c.oversubscribe.unwrap_or(false),
            identity: c.identity.unwrap_or_default(),
            state_dir,
            allow_private: c.allow_private.unwrap_or(false),
            allow_privileged_ports: c.allow_privileged_ports.unwrap_or(false),
            max_pps,
            per_ip_pps,
            inbound_per_ip_pps: c.inbound_per_ip_pps.unwrap_or(defaults::INBOUND_PER_IP_PPS),
            duration: c.duration.map(Duration::from_secs),
            db,
            fetch_concurrency,
            fetch_concurrency_default: c.fetch_concurrency.is_none(),
            fetch_timeout: Duration::from_secs(fetch_timeout),
            encryption: c.encryption.unwrap_or_default(),
            transport: c.transport.unwrap_or_default(),
            max_metadata_size,
            metrics: c.metrics,
            keyspace,
            keyspace_spec,
            udp_rcvbuf: c.udp_rcvbuf.unwrap_or(defaults::UDP_BUFFER),
            udp_sndbuf: c.udp_sndbuf.unwrap_or(defaults::UDP_BUFFER),
            rx_coalesce: Duration::from_micros(rx_coalesce_us),
            filter,
            max_db_size,
            scrape_nodes,
            max_nodes,
            table_turnover: c.table_turnover.unwrap_or(true),
            web,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<FileConfig, ConfigError> {
        FileConfig::parse(s, Path::new("test.toml"))
    }

    /// `tuning/examples/reference.toml` states every default exactly, and
    /// with its commented keys uncommented names every key there is.
    #[test]
    fn reference_config_matches_the_defaults_and_names_every_key() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tuning/examples/reference.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let as_is = CrawlConfig::resolve(FileConfig::parse(&text, &path).unwrap()).unwrap();
        let none = CrawlConfig::resolve(FileConfig::default()).unwrap();
        assert_eq!(format!("{as_is:?}"), format!("{none:?}"));
        let all: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if rest.contains(" = ") && !rest.starts_with(' ') => rest,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let table: toml::Table = toml::from_str(&all).unwrap();
        let c = FileConfig::parse(&all, &path).unwrap();
        assert!(c.cores.is_some() && c.shards.is_some() && c.state_dir.is_some());
        assert!(c.duration.is_some() && c.db.is_some() && c.metrics.is_some());
        // Every key FileConfig knows, as serde lists them when refusing an
        // unknown one: the reference must name each.
        let e = toml::from_str::<FileConfig>("no-such-key = 1")
            .unwrap_err()
            .to_string();
        let known: Vec<&str> = e
            .split("expected one of")
            .nth(1)
            .unwrap()
            .split('`')
            .skip(1)
            .step_by(2)
            .collect();
        assert!(known.len() >= 20, "{e}");
        for k in &known {
            assert!(table.contains_key(*k), "reference.toml lacks `{k}`");
        }
        assert_eq!(table.len(), known.len());
    }

    #[test]
    fn defaults_are_for_a_real_server() {
        let c = CrawlConfig::resolve(FileConfig::default()).unwrap();
        assert_eq!(c.bind.len(), 2);
        assert!(c.bind.iter().all(|b| b.port() == 6881));
        assert_eq!(c.bootstrap.len(), 4);
        assert!(c.pin);
        assert!(!c.allow_private);
        assert!(!c.allow_privileged_ports);
        assert_eq!(c.identity, IdentityMode::Bep42);
        assert!(c.db.starts_with("sqlite:"));
        assert_eq!(c.keyspace, Slice::full());
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let e = parse("bnid = [\"127.0.0.1:1\"]").unwrap_err().to_string();
        assert!(e.contains("bnid"), "{e}");
        let e = parse("shards = \"two\"").unwrap_err().to_string();
        assert!(e.contains("shards"), "{e}");
        let e = parse("identity = \"sybil\"").unwrap_err().to_string();
        assert!(e.contains("identity") || e.contains("sybil"), "{e}");
        let e = parse("bind = [\"nonsense\"]").unwrap_err().to_string();
        assert!(e.contains("bind"), "{e}");
        let bad = parse("fetch-timeout = 0").unwrap();
        let e = CrawlConfig::resolve(bad).unwrap_err().to_string();
        assert!(e.contains("fetch-timeout"), "{e}");
        let bad = parse("keyspace = \"4/4\"").unwrap();
        let e = CrawlConfig::resolve(bad).unwrap_err().to_string();
        assert!(e.contains("keyspace"), "{e}");
        let bad = parse("bootstrap = [\"nohost\"]").unwrap();
        let e = CrawlConfig::resolve(bad).unwrap_err().to_string();
        assert!(e.contains("bootstrap"), "{e}");
        let bad = parse("db = \"mysql://x\"").unwrap();
        assert!(CrawlConfig::resolve(bad)
            .unwrap_err()
            .to_string()
            .contains("db"));
    }

    #[test]
    fn filters_size_cap_and_scrapes_resolve_or_name_the_key() {
        let c = CrawlConfig::resolve(
            parse("exclude = \"(?i)sample\"\nmin-size = 1024\nmax-size = \"2GiB\"\nmax-db-size = \"50 GB\"\nscrape-nodes = 0\nmax-nodes = 1000000\ntable-turnover = false\n")
                .unwrap(),
        )
        .unwrap();
        assert_eq!(c.filter.exclude.as_deref(), Some("(?i)sample"));
        assert_eq!(
            (c.filter.min_size, c.filter.max_size),
            (Some(1024), Some(2 << 30))
        );
        assert_eq!(c.max_db_size, Some(50_000_000_000));
        assert_eq!(c.scrape_nodes, 0);
        assert_eq!(c.max_nodes, 1_000_000);
        assert!(!c.table_turnover);
        let none = CrawlConfig::resolve(FileConfig::default()).unwrap();
        assert!(none.table_turnover);
        assert_eq!(none.filter, crate::filter::FilterSpec::default());
        assert_eq!(
            (none.max_db_size, none.scrape_nodes, none.max_nodes),
            (None, defaults::SCRAPE_NODES, 20_000)
        );
        for (text, key) in [
            ("include = \"(open\"", "include"),
            ("exclude = \"[z-a]\"", "exclude"),
            ("min-size = 10\nmax-size = 5", "min-size"),
            ("max-size = \"12 parsecs\"", "max-size"),
            ("max-db-size = 0", "max-db-size"),
            ("scrape-nodes = 17", "scrape-nodes"),
            ("max-nodes = 63", "max-nodes"),
            ("max-nodes = 99999999", "max-nodes"),
        ] {
            let e = CrawlConfig::resolve(parse(text).unwrap())
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn flags_override_file() {
        let file = parse(
            "bind = [\"127.0.0.1:7000\"]\nshards = 2\nallow-private = true\nper-ip-pps = 9\n",
        )
        .unwrap();
        let flags = FileConfig {
            shards: Some(1),
            ..FileConfig::default()
        };
        let c = CrawlConfig::resolve(flags.or(file)).unwrap();
        assert_eq!(c.shards, Some(1));
        assert_eq!(
            c.bind,
            vec!["127.0.0.1:7000".parse::<SocketAddr>().unwrap()]
        );
        assert!(c.allow_private);
        assert_eq!(c.per_ip_pps, 9);
    }

    #[test]
    fn the_db_url_comes_from_a_flag_the_environment_or_a_file() {
        let dir = std::env::temp_dir().join(format!("dht-hunter-dburl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("db-url");
        std::fs::write(&secret, "postgres://dht:s3cret@db/dht\n").unwrap();
        let file_layer = |text: &str| parse(text).unwrap();
        let url_file = |p: &Path| FileConfig {
            db_url_file: Some(p.to_path_buf()),
            ..FileConfig::default()
        };
        let url = |u: &str| FileConfig {
            db: Some(u.into()),
            ..FileConfig::default()
        };
        let resolve = |c: FileConfig| CrawlConfig::resolve(c).map(|c| c.db);

        // From a file named in the config file, or on the command line.
        let toml = format!("db-url-file = {:?}", secret.display().to_string());
        assert_eq!(
            resolve(file_layer(&toml)).unwrap(),
            "postgres://dht:s3cret@db/dht"
        );
        assert_eq!(
            resolve(url_file(&secret)).unwrap(),
            "postgres://dht:s3cret@db/dht"
        );
        // A higher layer's URL hides a lower layer's file, and the reverse.
        assert_eq!(
            resolve(url("sqlite:/x.db").or(file_layer(&toml))).unwrap(),
            "sqlite:/x.db"
        );
        assert_eq!(
            resolve(url_file(&secret).or(file_layer("db = \"sqlite:/y.db\""))).unwrap(),
            "postgres://dht:s3cret@db/dht"
        );
        // Flags > environment > file (the CLI stacks the layers this way).
        let env = url("postgres://env@db/dht");
        assert_eq!(
            resolve(FileConfig::default().or(env.clone()).or(file_layer(&toml))).unwrap(),
            "postgres://env@db/dht"
        );
        assert_eq!(
            resolve(url("sqlite:/flag.db").or(env).or(file_layer(&toml))).unwrap(),
            "sqlite:/flag.db"
        );
        // Both in one layer, a missing file, an empty file: clear errors
        // that never print the URL.
        let both = format!("{toml}\ndb = \"sqlite:/z.db\"");
        let e = resolve(file_layer(&both)).unwrap_err().to_string();
        assert!(e.contains("not both"), "{e}");
        let e = resolve(url_file(&dir.join("missing")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing"), "{e}");
        std::fs::write(dir.join("empty"), "\n").unwrap();
        let e = resolve(url_file(&dir.join("empty")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("empty"), "{e}");
        std::fs::write(&secret, "mysql://root:s3cret@db/x").unwrap();
        let e = resolve(url_file(&secret)).unwrap_err().to_string();
        assert!(e.contains("db") && !e.contains("s3cret"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn privileged_ports_are_off_unless_the_file_or_a_flag_says_so() {
        let off = CrawlConfig::resolve(FileConfig::default()).unwrap();
        assert!(!off.allow_privileged_ports);
        let file = parse("allow-privileged-ports = true\n").unwrap();
        assert!(
            CrawlConfig::resolve(file.clone())
                .unwrap()
                .allow_privileged_ports
        );
        // A switch can only turn it on: unset on the command line, the
        // file's value stands.
        let flags = FileConfig::default();
        assert!(
            CrawlConfig::resolve(flags.or(file))
                .unwrap()
                .allow_privileged_ports
        );
        let e = parse("allow-privileged-ports = 1").unwrap_err().to_string();
        assert!(e.contains("allow-privileged-ports"), "{e}");
    }

    #[test]
    fn shipped_example_configs_are_valid() {
        for (name, text) in [
            ("small", include_str!("../tuning/examples/small.toml")),
            ("medium", include_str!("../tuning/examples/medium.toml")),
            ("large", include_str!("../tuning/examples/large.toml")),
        ] {
            let c = parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            CrawlConfig::resolve(c).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
