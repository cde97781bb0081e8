//! The `shallow` command line: a thin shell over the library's modules.
mod cli;
mod commands;

use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// glibc settings for training: keep freed blocks up to 256 MB in the heap instead of returning
/// them to the kernel. libtorch allocates every activation afresh, and glibc serves blocks above its
/// dynamic mmap ceiling (32 MB) with a new `mmap` each time, so a net with large activations
/// page-faults through every step: the CIFAR-shaped parallel bench net (a 67 MB `[64, 256, 32, 32]`
/// intermediate) ran at 131–154 img/s without these and 251–254 img/s with them.
const MALLOC_TUNABLES: &str =
    "glibc.malloc.mmap_threshold=268435456:glibc.malloc.trim_threshold=536870912";

/// Tunables are read only when a process starts, so the binary re-executes itself once with them
/// (same pid, same arguments). A `GLIBC_TUNABLES` already set — by the user, or by this re-exec —
/// is left alone.
fn reexec_with_malloc_tunables() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("GLIBC_TUNABLES").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let error = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("GLIBC_TUNABLES", MALLOC_TUNABLES)
        .exec();
    eprintln!("warning: running without malloc tuning: {error}");
}

fn main() -> std::process::ExitCode {
    reexec_with_malloc_tunables();
    let cli = cli::Cli::parse();
    let default_level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("SHALLOW_LOG")
                .unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match commands::run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
