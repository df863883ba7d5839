//! `purgeq man`: the man page, generated from the command definitions.

use anyhow::Context as _;
use clap::CommandFactory;

use super::{Cli, ExitCode};

/// Print the purgeq(1) man page (roff) to stdout.
#[derive(Debug, clap::Args)]
#[command(after_help = "Install:\n  \
    purgeq man | sudo tee /usr/local/share/man/man1/purgeq.1 >/dev/null && sudo mandb -q\n  \
    purgeq man | man -l -      # read it without installing")]
pub struct Args {}

impl Args {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        clap_mangen::Man::new(Cli::command())
            .render(&mut std::io::stdout())
            .context("writing the man page")?;
        Ok(ExitCode::Success)
    }
}
