//! `keyward generate-man DIR` (hidden): the manual pages, generated from the command line's own
//! definition so they can never disagree with `--help`. The Debian package ships them.

use anyhow::Context as _;
use clap::CommandFactory as _;
use std::path::Path;
use std::process::ExitCode;

use crate::cli::Cli;

/// Writes `keyward.1` and one page per subcommand (`keyward-token-create.1`, …) into `dir`.
pub(super) fn generate(dir: &Path) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = 0;
    write_pages(&Cli::command(), dir, &mut written)?;
    eprintln!("wrote {written} manual pages to {}", dir.display());
    Ok(ExitCode::SUCCESS)
}

/// The page of `command` (named after its full path, e.g. `keyward-token-create`) and those of
/// its visible subcommands.
fn write_pages(command: &clap::Command, dir: &Path, written: &mut usize) -> anyhow::Result<()> {
    let command = command.clone().disable_help_subcommand(true);
    let name = command
        .get_display_name()
        .unwrap_or_else(|| command.get_name())
        .to_owned();
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone())
        .render(&mut page)
        .with_context(|| format!("cannot render the page of {name}"))?;
    std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
    *written += 1;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let sub = sub
            .clone()
            .display_name(format!("{name}-{}", sub.get_name()))
            .bin_name(format!("{} {}", name.replace('-', " "), sub.get_name()));
        write_pages(&sub, dir, written)?;
    }
    Ok(())
}
