//! The `keyward` command: `serve`, `user`, `token`, `audit`. See `keyward --help`.

mod cli;
mod commands;

use clap::Parser as _;
use std::process::ExitCode;

fn main() -> ExitCode {
    commands::run(cli::Cli::parse())
}
