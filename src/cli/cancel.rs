//! `purgeq cancel`: withdraw queued jobs before a worker sends them.

use super::verb::{Verb, VerbArgs};
use super::{Context, ExitCode};

/// Cancel queued jobs.
///
/// Name job ids, or select with --all plus --provider/--tag. A listed job that is running (a
/// worker may already have sent it) or has ended is refused, and then nothing changes (exit
/// code 4).
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  purgeq cancel 17\n  purgeq cancel --all --provider 123pan")]
pub struct Args {
    #[command(flatten)]
    select: VerbArgs,
}

impl Args {
    pub async fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        self.select.run(ctx, Verb::Cancel).await
    }
}
