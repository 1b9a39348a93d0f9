//! The command line's words: every subcommand and flag, with the defaults
//! `--help` shows, and how the crawl flags layer over the config file and
//! the environment. What each command does is in `mod.rs`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{ConfigError, CrawlConfig, FileConfig, IdentityMode, SizeValue, WebSettings};
use crate::engine::status::StatusMode;
use crate::fetch::{EncryptionPolicy, TransportPolicy};

/// DHT-Hunter: a thread-per-core BitTorrent DHT crawler and metadata
/// harvester.
#[derive(Debug, Parser)]
#[command(name = "dht-hunter", version, about, long_about = None)]
pub struct Cli {
    /// Log level: error, warn, info, debug, trace.
    #[arg(long, global = true, default_value = "info", value_parser = parse_level)]
    pub log_level: log::LevelFilter,
    #[command(subcommand)]
    pub(super) command: Command,
}

#[derive(Debug, Subcommand)]
pub(super) enum Command {
    /// Join the DHT and crawl: harvest infohashes, fetch metadata, store it.
    Crawl(Box<CrawlArgs>),
    /// Run a simulated swarm and a crawler on loopback, then verify.
    Demo(crate::demo::DemoArgs),
    /// Search stored torrents by name and file path.
    Search {
        /// Words to look for.
        text: String,
        /// Most results.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Export every stored torrent as JSON lines.
    Export {
        /// Output file (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Import JSON lines (as written by export) into the store.
    Import {
        /// The JSONL file.
        file: PathBuf,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish,
    /// powershell) to standard output.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to standard output.
    Man,
    /// Delete stored torrents a content filter would not store, or older
    /// than an age; --dry-run only counts.
    Prune {
        /// Delete the torrents whose name and file paths all fail to match
        /// this regular expression (what `crawl --include` would refuse).
        #[arg(long)]
        include: Option<String>,
        /// Delete the torrents whose name or a file path matches this
        /// regular expression.
        #[arg(long)]
        exclude: Option<String>,
        /// Delete the torrents smaller than this, e.g. 1MiB.
        #[arg(long)]
        min_size: Option<String>,
        /// Delete the torrents larger than this, e.g. 100GiB.
        #[arg(long)]
        max_size: Option<String>,
        /// Delete the torrents first seen longer ago than this, e.g. 30d
        /// (s, m, h, d, w).
        #[arg(long)]
        older_than: Option<String>,
        /// Count what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// One JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Serve the store over HTTP: web UI, JSON API, Torznab.
    Serve {
        /// Address to listen on (loopback by default; another address needs
        /// credentials or --web-insecure-public).
        #[arg(long, default_value = crate::web::DEFAULT_ADDR)]
        web: SocketAddr,
        #[command(flatten)]
        web_opts: WebArgs,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Counts, rates, database size and sources.
    Stats {
        /// One JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
}

/// Web server settings shared by `serve` and `crawl --web`. Credentials
/// come from the environment or a file, never from a flag's value.
#[derive(Debug, Args, Default, Clone)]
pub struct WebArgs {
    /// Read the API key (query `apikey=` or header `X-Api-Key`) from the
    /// first line of this file (default: $DHT_HUNTER_WEB_API_KEY).
    #[arg(long)]
    pub web_api_key_file: Option<PathBuf>,
    /// Read USER:PASSWORD for HTTP basic auth from the first line of this
    /// file (default: $DHT_HUNTER_WEB_AUTH).
    #[arg(long)]
    pub web_auth_file: Option<PathBuf>,
    /// Serve a non-loopback address with no credentials at all (default:
    /// off: such a bind is refused).
    #[arg(long)]
    pub web_insecure_public: bool,
    /// Read connections the web server keeps open to the store.
    #[arg(long, help = with_default("Read connections the web server keeps open to the store", crate::web::DEFAULT_READERS))]
    pub web_readers: Option<usize>,
}

impl WebArgs {
    /// The server's settings for `addr` (`serve`).
    pub(super) fn settings(&self, addr: SocketAddr) -> WebSettings {
        WebSettings {
            addr,
            api_key_file: self.web_api_key_file.clone(),
            auth_file: self.web_auth_file.clone(),
            insecure_public: self.web_insecure_public,
            readers: self.web_readers,
        }
    }
}

/// Where the store is.
#[derive(Debug, Args)]
pub struct DbArgs {
    /// Store URL: sqlite:PATH or postgres://USER:PASS@HOST/DB (default:
    /// $DHT_HUNTER_DB_URL, else the SQLite file in the state directory).
    /// A password given here shows in `ps`: prefer the variable or
    /// --db-url-file.
    #[arg(long)]
    pub db: Option<String>,
    /// Read the store URL from the first line of this file.
    #[arg(long, conflicts_with = "db")]
    pub db_url_file: Option<PathBuf>,
    /// State directory (the default database lives there).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

impl DbArgs {
    /// Flags over the environment over the default, as for `crawl`.
    pub(super) fn url(&self) -> Result<String, ConfigError> {
        let layers = FileConfig {
            db: self.db.clone(),
            db_url_file: self.db_url_file.clone(),
            ..FileConfig::default()
        }
        .or(FileConfig::from_env());
        let dir = self
            .state_dir
            .clone()
            .unwrap_or_else(crate::config::default_state_dir);
        crate::config::resolve_db(layers.db, layers.db_url_file.as_deref(), &dir)
    }
}

use crate::config::defaults as D;

/// `help` with the default the config layer applies when neither the flag
/// nor the file sets the value (clap cannot show it: the flag is an
/// `Option` so that the file can fill it).
fn with_default(help: &str, default: impl std::fmt::Display) -> String {
    format!("{help} [default: {default}]")
}

/// Flags of `crawl`. Every one can also be set in the config file.
#[derive(Debug, Args, Default)]
pub struct CrawlArgs {
    /// TOML config file; flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// UDP address to bind (repeatable; IPv4 and IPv6). Default: `0.0.0.0:6881` and `[::]:6881`.
    #[arg(long)]
    pub bind: Vec<SocketAddr>,
    /// Bootstrap node HOST:PORT (repeatable or comma-separated; replaces
    /// the well-known routers). Default: router.bittorrent.com,
    /// router.utorrent.com, dht.transmissionbt.com, dht.libtorrent.org.
    #[arg(long, value_delimiter = ',')]
    pub bootstrap: Vec<String>,
    /// Cores to run on, e.g. 0-3,6 (default: all online cores).
    #[arg(long)]
    pub cores: Option<String>,
    /// Number of shards (default: one per core).
    #[arg(long)]
    pub shards: Option<usize>,
    /// Do not pin shards to cores.
    #[arg(long)]
    pub no_pin: bool,
    /// Allow more shards than cores.
    #[arg(long)]
    pub oversubscribe: bool,
    /// Node identity mode: bep42 (one id per bind address, shared by all
    /// shards) or spread (one id and one port, port + shard, per shard).
    /// Default: bep42.
    #[arg(long)]
    pub identity: Option<IdentityMode>,
    /// State directory: ids, known nodes, the default database (default:
    /// $XDG_DATA_HOME/dht-hunter, else ~/.local/share/dht-hunter).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Accept loopback and private addresses (tests and demos only).
    #[arg(long)]
    pub allow_private: bool,
    /// Fetch metadata from peers on ports below 1024 (default: off, as
    /// libtorrent's no_connect_privileged_ports: peers come from DHT
    /// values anyone can write, and must not aim the crawler at a third
    /// party's SSH, HTTP or mail server).
    #[arg(long)]
    pub allow_privileged_ports: bool,
    /// Outbound packets per second, all shards together.
    #[arg(long, help = with_default("Outbound packets per second, all shards together", D::MAX_PPS))]
    pub max_pps: Option<u32>,
    /// Outbound packets per second to one remote IP, all shards together.
    #[arg(long, help = with_default("Outbound packets per second to one remote IP, all shards together", D::PER_IP_PPS))]
    pub per_ip_pps: Option<u32>,
    /// Queries per second accepted from one remote IP (libtorrent's
    /// dos_blocker allows 5); the burst is ten times this.
    #[arg(long, help = with_default("Queries per second accepted from one remote IP (libtorrent's dos_blocker allows 5); the burst is ten times this", D::INBOUND_PER_IP_PPS))]
    pub inbound_per_ip_pps: Option<u32>,
    /// Stop after this many seconds (default: run until a signal).
    #[arg(long)]
    pub duration: Option<u64>,
    /// Store URL: sqlite:PATH or postgres://… (default: $DHT_HUNTER_DB_URL,
    /// else sqlite:STATE_DIR/dht-hunter.sqlite). A password given here
    /// shows in `ps`: prefer the variable or --db-url-file.
    #[arg(long)]
    pub db: Option<String>,
    /// Read the store URL from the first line of this file (mode 600), so
    /// the password shows neither in `ps` nor in the config file (default:
    /// unset).
    #[arg(long, conflicts_with = "db")]
    pub db_url_file: Option<PathBuf>,
    /// Concurrent metadata fetches per shard.
    #[arg(long, help = with_default("Concurrent metadata fetches per shard (unset: fewer where the open-file hard limit cannot hold them)", D::FETCH_CONCURRENCY))]
    pub fetch_concurrency: Option<usize>,
    /// Hard deadline of one metadata fetch, seconds.
    #[arg(long, help = with_default("Hard deadline of one metadata fetch, seconds", D::FETCH_TIMEOUT_S))]
    pub fetch_timeout: Option<u64>,
    /// Plaintext or MSE/PE encryption to peers, and in which order
    /// (default: plain-first; see tuning/README.md).
    #[arg(long, value_enum)]
    pub encryption: Option<EncryptionPolicy>,
    /// TCP or uTP (BEP 29, on the DHT's UDP socket) to peers, and in which
    /// order (see tuning/README.md).
    #[arg(long, value_enum, help = with_default(
        "TCP or uTP to peers, and in which order",
        TransportPolicy::default().as_str()
    ))]
    pub transport: Option<TransportPolicy>,
    /// Largest metadata accepted, bytes.
    #[arg(long, help = with_default("Largest metadata accepted, bytes", D::MAX_METADATA_SIZE))]
    pub max_metadata_size: Option<u64>,
    /// Serve Prometheus metrics on this address (default: off).
    #[arg(long)]
    pub metrics: Option<SocketAddr>,
    /// Crawl only part I of N of the keyspace (scale-out), e.g. 0/4.
    #[arg(long, help = with_default("Crawl only part I of N of the keyspace (scale-out), e.g. 0/4", D::KEYSPACE))]
    pub keyspace: Option<String>,
    /// SO_RCVBUF per shard socket, bytes.
    #[arg(long, help = with_default("SO_RCVBUF per shard socket, bytes", D::UDP_BUFFER))]
    pub udp_rcvbuf: Option<usize>,
    /// SO_SNDBUF per shard socket, bytes.
    #[arg(long, help = with_default("SO_SNDBUF per shard socket, bytes", D::UDP_BUFFER))]
    pub udp_sndbuf: Option<usize>,
    /// Receive coalescing window, µs (0: off).
    #[arg(long, help = with_default("Receive coalescing window under dense traffic, µs (0: off)", D::RX_COALESCE_US))]
    pub rx_coalesce_us: Option<u64>,
    /// Store only torrents whose name or some file path matches this
    /// regular expression (default: all).
    #[arg(long)]
    pub include: Option<String>,
    /// Store no torrent whose name or any file path matches this regular
    /// expression, e.g. '(?i)sample' (default: none).
    #[arg(long)]
    pub exclude: Option<String>,
    /// Store no torrent smaller than this, e.g. 1MiB (default: no bound).
    #[arg(long)]
    pub min_size: Option<String>,
    /// Store no torrent larger than this, e.g. 100GiB (default: no bound).
    #[arg(long)]
    pub max_size: Option<String>,
    /// Stop fetching and storing new torrents while the database is this
    /// large or larger, e.g. 50GiB; discovery goes on (default: no cap).
    #[arg(long)]
    pub max_db_size: Option<String>,
    /// BEP 33 scrape queries per stored torrent, to nodes that hold its
    /// peers; 0: no scrapes.
    #[arg(long, help = with_default("BEP 33 scrape queries per stored torrent, to nodes that hold its peers; 0: no scrapes", D::SCRAPE_NODES))]
    pub scrape_nodes: Option<usize>,
    /// Routing-table entries per shard: the nodes its BEP 51 sweep can
    /// sample. Raise it to cover a larger share of a large DHT.
    #[arg(long, help = with_default("Routing-table entries per shard: the nodes its BEP 51 sweep can sample; raise it to cover more of a large DHT (about 1.4 KiB each at most)", D::MAX_NODES))]
    pub max_nodes: Option<usize>,
    /// Keep the routing table fixed when full: no turnover of nodes whose
    /// samples are in (see tuning/README.md).
    #[arg(long)]
    pub no_table_turnover: bool,
    /// Status line: auto (when stderr is a terminal), always, never.
    #[arg(long, default_value = "auto")]
    pub status: StatusMode,
    /// Also serve the web UI, JSON API and Torznab on this address, with
    /// live shard counters on the status page (default: off).
    #[arg(long)]
    pub web: Option<SocketAddr>,
    #[command(flatten)]
    pub web_opts: WebArgs,
}

impl CrawlArgs {
    /// The flags as a config layer (unset flags are `None`).
    pub fn as_file_config(&self) -> FileConfig {
        let flag = |b: bool| b.then_some(true);
        FileConfig {
            bind: (!self.bind.is_empty()).then(|| self.bind.clone()),
            bootstrap: (!self.bootstrap.is_empty()).then(|| self.bootstrap.clone()),
            cores: self.cores.clone(),
            shards: self.shards,
            no_pin: flag(self.no_pin),
            oversubscribe: flag(self.oversubscribe),
            identity: self.identity,
            state_dir: self.state_dir.clone(),
            allow_private: flag(self.allow_private),
            allow_privileged_ports: flag(self.allow_privileged_ports),
            max_pps: self.max_pps,
            per_ip_pps: self.per_ip_pps,
            inbound_per_ip_pps: self.inbound_per_ip_pps,
            duration: self.duration,
            db: self.db.clone(),
            db_url_file: self.db_url_file.clone(),
            fetch_concurrency: self.fetch_concurrency,
            fetch_timeout: self.fetch_timeout,
            encryption: self.encryption,
            transport: self.transport,
            max_metadata_size: self.max_metadata_size,
            metrics: self.metrics,
            keyspace: self.keyspace.clone(),
            udp_rcvbuf: self.udp_rcvbuf,
            udp_sndbuf: self.udp_sndbuf,
            rx_coalesce_us: self.rx_coalesce_us,
            include: self.include.clone(),
            exclude: self.exclude.clone(),
            min_size: self.min_size.clone().map(SizeValue::Text),
            max_size: self.max_size.clone().map(SizeValue::Text),
            max_db_size: self.max_db_size.clone().map(SizeValue::Text),
            scrape_nodes: self.scrape_nodes,
            max_nodes: self.max_nodes,
            table_turnover: self.no_table_turnover.then_some(false),
            web: self.web,
            web_api_key_file: self.web_opts.web_api_key_file.clone(),
            web_auth_file: self.web_opts.web_auth_file.clone(),
            web_insecure_public: flag(self.web_opts.web_insecure_public),
            web_readers: self.web_opts.web_readers,
        }
    }

    /// Flags over the environment (the store URL) over the config file
    /// over the defaults.
    pub fn resolve(&self) -> Result<CrawlConfig, ConfigError> {
        let file = match &self.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        CrawlConfig::resolve(self.as_file_config().or(FileConfig::from_env()).or(file))
    }
}

fn parse_level(s: &str) -> Result<log::LevelFilter, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not one of off, error, warn, info, debug, trace"))
}
