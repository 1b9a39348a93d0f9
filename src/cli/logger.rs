//! Logging: env_logger to stderr, with a timestamp on every line (a daemon
//! that runs for weeks is read by time), the level from `--log-level`, and
//! per-module filters from `RUST_LOG` on top (for example
//! `RUST_LOG=dht_hunter::store=debug`).

use std::io::Write;

/// Installs the logger (once; later calls are ignored).
pub fn init(level: log::LevelFilter) {
    let on_terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = env_logger::Builder::new()
        .filter_level(level)
        .parse_env(env_logger::Env::default().filter("RUST_LOG"))
        .format(move |buf, r| {
            // Clear a status line that may be on screen.
            let clear = if on_terminal { "\r\x1b[2K" } else { "" };
            writeln!(
                buf,
                "{clear}{} {:<5} {}: {}",
                buf.timestamp_millis(),
                r.level(),
                r.target(),
                r.args()
            )
        })
        .try_init();
}
