//! `purgeq prune`: retention for the audit trail.

use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;

use super::{Context, ExitCode, duration_arg};
use crate::clock;
use crate::store::Durability;

/// Delete old finished jobs and their call records.
///
/// Deletes jobs that ended (succeeded, failed or cancelled) longer ago than --older-than, and the
/// call records no remaining job refers to. Queued and running jobs are never pruned.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  purgeq prune --older-than 30d")]
pub struct Args {
    /// Age past which finished jobs are deleted (e.g. 30d, 12h).
    #[arg(long, value_name = "DUR", value_parser = duration_arg)]
    older_than: Duration,

    /// Only jobs (and call records) of this provider account.
    #[arg(long, value_name = "NAME")]
    account: Option<String>,

    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

impl Args {
    pub async fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        let store = ctx.open(Durability::Full).await?;
        let before =
            clock::now_ms() - i64::try_from(self.older_than.as_millis()).unwrap_or(i64::MAX);
        let pruned = store
            .prune(before, self.account.as_deref())
            .await
            .context("pruning")?;
        if self.json {
            println!(
                "{}",
                json!({ "jobs": pruned.jobs, "calls": pruned.calls, "before": clock::rfc3339(before) })
            );
        } else {
            println!(
                "pruned {} finished job{} and {} call record{} from before {}",
                pruned.jobs,
                if pruned.jobs == 1 { "" } else { "s" },
                pruned.calls,
                if pruned.calls == 1 { "" } else { "s" },
                clock::short(before)
            );
        }
        Ok(ExitCode::Success)
    }
}
