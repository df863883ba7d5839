//! `purgeq retry`: put failed or cancelled jobs back in the queue.

use super::verb::{Verb, VerbArgs};
use super::{Context, ExitCode};

/// Queue failed or cancelled jobs again, with their attempts reset.
///
/// Name job ids, or select with --all plus --provider/--tag. A listed job that succeeded, is
/// queued or is running is refused, and then nothing changes (exit code 4).
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  purgeq retry 17 18\n  purgeq retry --all --tag build-42")]
pub struct Args {
    #[command(flatten)]
    select: VerbArgs,
}

impl Args {
    pub async fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        self.select.run(ctx, Verb::Retry).await
    }
}
