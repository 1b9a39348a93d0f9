//! A minimal stderr logger: `LEVEL target: message`, with the level set by
//! `--log-level`. Small enough not to need a logging framework.

use std::io::Write;

struct Stderr {
    level: log::LevelFilter,
}

impl log::Log for Stderr {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= self.level
    }

    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            let mut e = std::io::stderr().lock();
            // Clear a status line that may be on screen.
            let clear = if std::io::IsTerminal::is_terminal(&e) {
                "\r\x1b[2K"
            } else {
                ""
            };
            let _ = writeln!(e, "{clear}{:<5} {}: {}", r.level(), r.target(), r.args());
        }
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// Installs the logger (once; later calls are ignored).
pub fn init(level: log::LevelFilter) {
    let logger = Box::leak(Box::new(Stderr { level }));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}
