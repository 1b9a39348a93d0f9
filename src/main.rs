//! The `dht-hunter` binary; everything lives in the library's `cli` module.

fn main() -> std::process::ExitCode {
    dht_hunter::cli::main()
}
