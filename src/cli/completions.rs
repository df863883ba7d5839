//! `purgeq completions`: shell completion scripts generated from the command definitions.

use clap::CommandFactory;

use super::{Cli, ExitCode};

/// Print a shell completion script to stdout.
#[derive(Debug, clap::Args)]
#[command(after_help = "Install:\n  \
    purgeq completions bash > ~/.local/share/bash-completion/completions/purgeq\n  \
    purgeq completions zsh > ~/.zfunc/_purgeq      # with fpath+=~/.zfunc in ~/.zshrc\n  \
    purgeq completions fish > ~/.config/fish/completions/purgeq.fish")]
pub struct Args {
    /// The shell.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

impl Args {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        clap_complete::generate(
            self.shell,
            &mut Cli::command(),
            "purgeq",
            &mut std::io::stdout(),
        );
        Ok(ExitCode::Success)
    }
}
