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
    no_transparent_huge_pages();
    commands::run(cli::Cli::parse())
}

/// Asks Linux not to back this process's memory with transparent huge pages, as mimalloc itself
/// does when `MIMALLOC_ALLOW_THP=0`; setting `MIMALLOC_ALLOW_THP` chooses otherwise. A 2 MiB
/// page is resident in full once any byte of it is touched, and the allocator's sparsely used
/// regions then cost whole huge pages: over a million cached tokens that was ~36 MiB more
/// resident memory (10 MiB of it in an empty server), with no measurable gain in verification
/// speed (BENCHMARKS.md §15). Best effort: a kernel without the switch keeps its own policy.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // Ignored on failure: only memory use depends on it.
        let _ = rustix::thread::disable_transparent_huge_pages(true);
    }
}
