//! The `keyward` command: `serve`, `user`, `token`, `audit`. See `keyward --help`.

mod cli;
mod commands;

use clap::Parser as _;
use std::process::ExitCode;

/// mimalloc rather than the system allocator: the request path allocates and frees small
/// buffers on every request, and a cache of a million entries grows its tables by doubling;
/// glibc keeps the freed halves resident, mimalloc gives them back (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    commands::run(cli::Cli::parse())
}
