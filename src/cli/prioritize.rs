//! `purgeq prioritize`: change how soon queued jobs go out.

use super::verb::{Verb, VerbArgs};
use super::{Context, ExitCode};
use crate::model::Priority;

/// Set the priority of queued jobs (urgent, high, normal, low).
///
/// Workers send higher priority first, then the oldest. Name job ids, or select with --all plus
/// --provider/--tag. A listed job that is not queued is refused, and then nothing changes (exit
/// code 4).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  purgeq prioritize --priority urgent 17 18\n  \
    purgeq prioritize --priority low --all --tag nightly"
)]
pub struct Args {
    /// The new priority.
    #[arg(long, value_enum, value_name = "PRIORITY")]
    priority: Priority,

    #[command(flatten)]
    select: VerbArgs,
}

impl Args {
    pub async fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        self.select.run(ctx, Verb::Prioritize(self.priority)).await
    }
}
