//! The `dht-hunter` command line: the binary's edge, where errors become
//! messages and exit codes.
//!
//! Exit codes: 0 success; 1 a runtime failure (store, sockets, a shard);
//! 2 bad usage or configuration (clap's own code for usage errors); 3 the
//! demo ran but its verification failed.

mod args;
mod logger;
mod metrics_http;
pub mod swarm;

use std::io::{BufReader, Write};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;

use crate::config::{ConfigError, CrawlConfig};
use crate::engine::{self, EngineParts, Telemetry};
use crate::filter::human_bytes;
use crate::store::{printable, redact_url, rfc3339, unsafe_on_terminal, SearchHit, Store};

use args::Command;
pub use args::{Cli, CrawlArgs, DbArgs, WebArgs};

/// Exit code for configuration and usage errors.
pub const EXIT_USAGE: u8 = 2;
/// Exit code for a failed demo verification.
pub use crate::demo::EXIT_VERIFY;

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    logger::init(cli.log_level);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            if e.downcast_ref::<ConfigError>().is_some() {
                eprintln!("dht-hunter: {e:#}");
                return ExitCode::from(EXIT_USAGE);
            }
            eprintln!("dht-hunter: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Crawl(args) => {
            let cfg = args.resolve()?;
            crawl(&cfg, args.status)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(args) => crate::demo::run(&args),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "dht-hunter", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(cmd)
                .render(&mut std::io::stdout())
                .context("writing the man page")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Search {
            text,
            limit,
            json,
            db,
        } => {
            let store = open_existing(&db)?;
            let hits = store.search(&text, limit)?;
            // Names are data from strangers, not terminal commands: both
            // formats escape what a terminal would act on.
            let mut out = std::io::stdout().lock();
            for h in hits {
                let infohash = crate::id::Id(h.infohash).to_hex();
                if json {
                    let v = serde_json::json!({
                        "infohash": infohash,
                        "name": h.name,
                        "size": h.total_size,
                        "files": h.file_count,
                        "source": h.source.as_str(),
                        "fetched_at": rfc3339::format(crate::store::unix_secs(h.fetched_at)),
                        "seeders": h.seeders,
                        "leechers": h.leechers,
                        "scraped_at": h.scraped_at.map(|t| rfc3339::format(crate::store::unix_secs(t))),
                    });
                    writeln!(out, "{}", json_printable(&v.to_string()))?;
                } else {
                    writeln!(out, "{}", hit_line(&h))?;
                }
            }
            store.close()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Export { out, db } => {
            let store = open_existing(&db)?;
            let n = match out {
                Some(path) => {
                    let f = std::fs::File::create(&path)
                        .with_context(|| format!("creating {}", path.display()))?;
                    let mut w = std::io::BufWriter::new(f);
                    let n = store.export_jsonl(&mut w)?;
                    w.flush()?;
                    n
                }
                None => {
                    let mut w = std::io::BufWriter::new(std::io::stdout().lock());
                    let n = store.export_jsonl(&mut w)?;
                    w.flush()?;
                    n
                }
            };
            log::info!("exported {n} torrents");
            store.close()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Import { file, db } => {
            let url = db.url()?;
            ensure_parent(&url)?;
            let store =
                Store::open(&url).with_context(|| format!("opening {}", redact_url(&url)))?;
            let f = std::fs::File::open(&file)
                .with_context(|| format!("opening {}", file.display()))?;
            let report = store.import_jsonl(&mut BufReader::new(f))?;
            store.close()?;
            eprintln!(
                "imported {}, duplicates {}, bad lines {}",
                report.imported,
                report.duplicates,
                report.errors.len()
            );
            for (line, msg) in report.errors.iter().take(20) {
                eprintln!("  line {line}: {}", printable(msg));
            }
            Ok(if report.errors.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Prune {
            include,
            exclude,
            min_size,
            max_size,
            older_than,
            dry_run,
            json,
            db,
        } => {
            let size = |v: Option<String>, flag: &str| {
                v.map(|t| crate::filter::parse_bytes(&t))
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("--{flag}: {e}"))
            };
            let spec = crate::filter::FilterSpec {
                include,
                exclude,
                min_size: size(min_size, "min-size")?,
                max_size: size(max_size, "max-size")?,
            };
            let filter = crate::filter::ContentFilter::new(&spec)?;
            let age = older_than
                .map(|a| crate::filter::parse_age(&a))
                .transpose()
                .map_err(|e| anyhow::anyhow!("--older-than: {e}"))?;
            anyhow::ensure!(
                !filter.is_empty() || age.is_some(),
                "nothing to prune by: give a filter (--include, --exclude, --min-size, \
                 --max-size) or --older-than"
            );
            let cutoff = age.map(|a| std::time::SystemTime::now() - a);
            let store = open_existing(&db)?;
            let r = store.prune(&filter, cutoff, dry_run)?;
            store.close()?;
            if json {
                let v = serde_json::json!({
                    "scanned": r.scanned,
                    "matched": r.matched,
                    "deleted": r.deleted,
                    "dry_run": dry_run,
                });
                println!("{v}");
            } else if dry_run {
                println!(
                    "dry run: {} of {} stored torrents would be deleted",
                    r.matched, r.scanned
                );
            } else {
                println!("deleted {} of {} stored torrents", r.deleted, r.scanned);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { web, web_opts, db } => {
            let url = db.url()?;
            // Refused before anything is opened.
            let cfg =
                crate::web::WebConfig::from_settings(&web_opts.settings(web), redact_url(&url))?;
            serve(&url, cfg)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Stats { json, db } => {
            let store = open_existing(&db)?;
            let s = store.stats()?;
            store.close()?;
            let ts = |t: Option<std::time::SystemTime>| {
                t.map(|t| rfc3339::format(crate::store::unix_secs(t)))
            };
            if json {
                // The same object as the web API's /api/stats.
                let v = crate::web::stats_json(&s);
                println!("{v}");
            } else {
                println!("torrents       {}", s.torrents);
                println!("files          {}", s.files);
                println!("pending        {}", s.pending);
                println!("database size  {}", human_bytes(s.db_bytes));
                for (src, n) in s.by_source {
                    println!("  from {:<10}{n}", src.as_str());
                }
                println!(
                    "last hour      {} ({:.3}/s)",
                    s.fetched_last_hour,
                    s.rate_last_hour()
                );
                println!("last day       {}", s.fetched_last_day);
                if let (Some(a), Some(b)) = (ts(s.first_fetched), ts(s.last_fetched)) {
                    println!("fetched        {a} .. {b}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Serialized JSON with the characters a terminal would act on written as
/// `\uXXXX` escapes: the same JSON value (they can only occur inside
/// strings), safe to print. serde_json escapes C0 itself, not DEL, C1 or
/// the bidi controls.
fn json_printable(json: &str) -> std::borrow::Cow<'_, str> {
    if !json.chars().any(unsafe_on_terminal) {
        return std::borrow::Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if unsafe_on_terminal(c) {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// One search hit for humans; the name is escaped ([`printable`]).
fn hit_line(h: &SearchHit) -> String {
    format!(
        "{}  {:>10}  {:>5} files  {}",
        crate::id::Id(h.infohash).to_hex(),
        human_bytes(h.total_size),
        h.file_count,
        printable(&h.name)
    )
}

fn ensure_parent(url: &str) -> anyhow::Result<()> {
    if let Some(path) = url.strip_prefix("sqlite:") {
        if let Some(parent) = std::path::Path::new(path).parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
        }
    }
    Ok(())
}

/// Opens a store that must already exist (search, export, stats never
/// create an empty database by accident).
fn open_existing(db: &DbArgs) -> anyhow::Result<Store> {
    let url = db.url()?;
    if let Some(path) = url.strip_prefix("sqlite:") {
        anyhow::ensure!(
            std::path::Path::new(path).exists(),
            "no database at {path} (use --db or --state-dir)"
        );
    }
    Store::open(&url).with_context(|| format!("opening {}", redact_url(&url)))
}

/// `dht-hunter serve`: the web server alone over an existing store, until
/// SIGINT or SIGTERM.
fn serve(url: &str, cfg: crate::web::WebConfig) -> anyhow::Result<()> {
    if let Some(path) = url.strip_prefix("sqlite:") {
        anyhow::ensure!(
            std::path::Path::new(path).exists(),
            "no database at {path} (use --db or --state-dir)"
        );
    }
    let reader = crate::store::StoreReader::open_url(url, cfg.readers)
        .with_context(|| format!("opening {}", redact_url(url)))?;
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])?;
    let server = crate::web::start(cfg, reader, None)?;
    eprintln!("serving {} on http://{}/", redact_url(url), server.addr());
    if let Some(sig) = signals.forever().next() {
        log::info!("signal {sig}: stopping the web server");
    }
    server.stop();
    Ok(())
}

/// How often `crawl --web` samples the shards' counters for the status
/// page's plots.
const WEB_SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Most unfetched infohashes resumed at start.
const PENDING_RESUME_MAX: usize = 1_000_000;

/// Runs a crawl until its duration ends or a signal arrives.
pub fn crawl(cfg: &CrawlConfig, status_mode: StatusMode) -> anyhow::Result<()> {
    // A file-size limit (RLIMIT_FSIZE) reached while writing must be an
    // error the store retries, not SIGXFSZ killing the crawler.
    // SAFETY: setting a signal's disposition to ignore, before any thread
    // that could race on it starts.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    // Credentials and exposure are checked before anything is opened.
    let web_cfg = cfg
        .web
        .as_ref()
        .map(|s| crate::web::WebConfig::from_settings(s, redact_url(&cfg.db)))
        .transpose()?;
    ensure_parent(&cfg.db)?;
    let opts = crate::store::StoreOptions {
        max_db_bytes: cfg.max_db_size,
        ..crate::store::StoreOptions::default()
    };
    let store = Store::open_with(&cfg.db, opts)
        .with_context(|| format!("opening {}", redact_url(&cfg.db)))?;
    if let Some(addr) = cfg.metrics {
        metrics_http::serve(addr).with_context(|| format!("metrics on {addr}"))?;
    }
    let known = engine::nodes_file::load(&cfg.state_dir).unwrap_or_else(|e| {
        log::warn!("known nodes not loaded: {e}");
        Vec::new()
    });
    log::info!("{} known nodes loaded", known.len());
    let pending: Vec<_> = store
        .pending(PENDING_RESUME_MAX)?
        .into_iter()
        .map(|p| (crate::id::Id(p.infohash), p.source))
        .collect();
    if !pending.is_empty() {
        log::info!("resuming {} unfetched infohashes", pending.len());
    }
    let stored: Vec<crate::id::Id> = store
        .stored_infohashes()?
        .into_iter()
        .map(crate::id::Id)
        .collect();
    if !stored.is_empty() {
        log::info!(
            "{} stored infohashes will not be fetched again",
            stored.len()
        );
    }
    let telemetry = Arc::new(Telemetry::default());
    // The web server reads through connections of its own, on threads of
    // its own: it never touches a shard or the writer's connection.
    let web = match web_cfg {
        Some(web_cfg) => {
            let reader = store.reader(web_cfg.readers)?;
            let live =
                crate::web::Live::start(telemetry.clone(), Some(store.writer()), WEB_SAMPLE_EVERY)?;
            Some((
                crate::web::start(web_cfg, reader, Some(live.clone()))?,
                live,
            ))
        }
        None => None,
    };
    let parts = EngineParts {
        store: store.writer(),
        telemetry: telemetry.clone(),
        tweak: None,
        known_nodes: Arc::new(known),
        pending: Arc::new(pending),
        stored: Arc::new(stored),
    };
    let eng = engine::start(cfg, parts)?;
    log::info!("listening on {:?}", eng.udp_addrs);
    let stop = eng.shutdown_handle();
    let signals = signals::install(stop.clone(), store.writer())?;
    if let Some(d) = cfg.duration {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("duration".into())
            .spawn(move || {
                std::thread::sleep(d);
                stop.trigger();
            })?;
    }
    let status = status_spawn(status_mode, telemetry.clone(), stop.clone());
    let reports = eng.join();
    status.stop();
    if let Some((server, live)) = web {
        live.stop();
        server.stop();
    }
    // The signal handler stays installed through the final flush: a second
    // signal still ends the process at once.
    let reports = reports?;
    let _watchdog = signals::watchdog(STORE_STOP_LIMIT)?;
    let nodes: Vec<_> = reports
        .iter()
        .flat_map(|r| r.known_nodes.iter().copied())
        .collect();
    if let Err(e) = engine::nodes_file::save(&cfg.state_dir, &nodes) {
        log::warn!("known nodes not saved: {e}");
    }
    store.flush()?;
    store.close()?;
    drop(signals);
    let t = telemetry.totals();
    log::info!(
        "stopped: {} infohashes, {} torrents fetched, {} given up, {} in progress, \
         {} sightings of stored torrents not fetched again, {} queries answered",
        t.infohashes,
        t.fetched,
        t.given_up,
        t.in_progress,
        t.already_stored,
        t.answered
    );
    Ok(())
}

/// How long the final store flush may take after the shards stopped (a
/// database that went away is retried until then; see tuning/README.md).
const STORE_STOP_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// SIGINT/SIGTERM: the first stops the engine gracefully, the second exits
/// at once (SQLite's WAL keeps the database consistent either way).
mod signals {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use crate::store::StoreWriter;
    use shards::ShutdownHandle;

    /// Ends the process if the final flush outlives `limit`.
    pub struct Watchdog {
        done: Arc<AtomicBool>,
    }

    impl Drop for Watchdog {
        fn drop(&mut self) {
            self.done.store(true, Ordering::Release);
        }
    }

    pub fn watchdog(limit: Duration) -> std::io::Result<Watchdog> {
        let done = Arc::new(AtomicBool::new(false));
        let seen = done.clone();
        std::thread::Builder::new()
            .name("stop-watchdog".into())
            .spawn(move || {
                std::thread::sleep(limit);
                if !seen.load(Ordering::Acquire) {
                    log::error!(
                        "the store did not finish writing within {} s of stopping: \
                         exiting; what it had not written is lost",
                        limit.as_secs()
                    );
                    std::process::exit(1);
                }
            })?;
        Ok(Watchdog { done })
    }
    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::iterator::{Handle, Signals};

    pub struct Installed {
        handle: Handle,
    }

    impl Drop for Installed {
        fn drop(&mut self) {
            self.handle.close();
        }
    }

    pub fn install(stop: ShutdownHandle, store: StoreWriter) -> std::io::Result<Installed> {
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        let handle = signals.handle();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let mut seen = 0;
                for sig in signals.forever() {
                    seen += 1;
                    if seen == 1 {
                        log::info!("signal {sig}: stopping (again to exit at once)");
                        stop.trigger();
                    } else {
                        // Nothing is lost silently: say what the queue held
                        // (a stalled database is what makes stopping slow).
                        let f = store.faults();
                        log::warn!(
                            "second signal: exiting now; {} queued store items are not written{}",
                            store.queue_len(),
                            if f.stalled {
                                " (the database is failing: see the retries above)"
                            } else {
                                ""
                            }
                        );
                        std::process::exit(130);
                    }
                }
            })?;
        Ok(Installed { handle })
    }
}

pub use crate::engine::status::{spawn as status_spawn, StatusMode};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_lines_escape_what_a_terminal_would_obey() {
        let hit = SearchHit {
            infohash: [0xab; 20],
            name: "movie\x1b]0;owned\x07\x1b[2J\x1b[31m.mkv\u{9b}\u{202e}".into(),
            total_size: 1 << 20,
            file_count: 2,
            source: crate::store::Source::Sample,
            discovered_at: std::time::UNIX_EPOCH,
            fetched_at: std::time::UNIX_EPOCH,
            seeders: None,
            leechers: None,
            scraped_at: None,
            category: crate::category::Category::Other,
        };
        let line = hit_line(&hit);
        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert!(
            line.ends_with(r"movie\x1b]0;owned\x07\x1b[2J\x1b[31m.mkv\u{9b}\u{202e}"),
            "{line}"
        );
        assert!(line.starts_with(&"ab".repeat(20)));
        assert!(line.contains("1.0 MiB"), "{line}");
    }

    #[test]
    fn search_json_escapes_them_too_and_stays_the_same_value() {
        let name = "a\x1b[2Jb\u{7f}c\u{9b}d\u{202e}e 日本";
        let v = serde_json::json!({ "name": name });
        let text = json_printable(&v.to_string()).into_owned();
        assert!(!text.chars().any(unsafe_on_terminal), "{text:?}");
        assert!(
            text.contains(r"\u001b") && text.contains(r"\u009b"),
            "{text}"
        );
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back["name"], name);
    }

    #[test]
    fn db_flags_conflict_and_fall_back_to_the_state_dir() {
        let args = DbArgs {
            db: None,
            db_url_file: None,
            state_dir: Some("/var/lib/x".into()),
        };
        // Unless DHT_HUNTER_DB_URL is set in this test's environment.
        if std::env::var_os(crate::config::DB_URL_ENV).is_none() {
            assert_eq!(args.url().unwrap(), "sqlite:/var/lib/x/dht-hunter.sqlite");
        }
        let r = Cli::try_parse_from([
            "dht-hunter",
            "stats",
            "--db",
            "sqlite:/a",
            "--db-url-file",
            "/b",
        ]);
        assert!(r.is_err());
        let r = Cli::try_parse_from([
            "dht-hunter",
            "crawl",
            "--db",
            "sqlite:/a",
            "--db-url-file",
            "/b",
        ]);
        assert!(r.is_err());
    }

    /// `--bootstrap a,b` is two nodes, as repeating the flag is.
    #[test]
    fn bootstrap_takes_a_comma_list() {
        let cli = Cli::try_parse_from([
            "dht-hunter",
            "crawl",
            "--bootstrap",
            "127.0.0.1:6881,[::1]:6882",
            "--bootstrap",
            "localhost:9",
        ])
        .unwrap();
        let Command::Crawl(args) = cli.command else {
            panic!("not a crawl");
        };
        assert_eq!(
            args.bootstrap,
            ["127.0.0.1:6881", "[::1]:6882", "localhost:9"]
        );
    }
}
