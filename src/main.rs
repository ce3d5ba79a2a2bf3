//! The `digits` command: a thin layer that parses arguments, calls the library and renders
//! what it returns.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    restore_default_sigpipe();
    keep_freed_memory_for_reuse();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) if err.is::<cli::Interrupted>() => ExitCode::from(130),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Rust ignores SIGPIPE, which turns `digits train | head` into a panic on the next print.
/// Command-line tools end quietly instead; runs are saved atomically, so nothing is lost.
#[cfg(unix)]
fn restore_default_sigpipe() {
    // SAFETY: restoring a signal's default disposition before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn restore_default_sigpipe() {}

/// Every tensor operation allocates its output, and the tutorial's weight-sized buffers
/// (400 KB) are over glibc's default threshold for giving memory straight back to the system:
/// each step then paid for fresh zeroed pages (page faults were 7% of training time, see
/// PERFORMANCE.md). Raising the thresholds lets freed buffers be reused instead.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory_for_reuse() {
    const MEGABYTE: libc::c_int = 1 << 20;
    // SAFETY: mallopt only changes allocator tuning, before any thread is started.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * MEGABYTE);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 * MEGABYTE);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory_for_reuse() {}
