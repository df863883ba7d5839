//! The selection shared by the operator verbs `retry`, `cancel` and `prioritize`.

use anyhow::Context as _;
use serde_json::json;

use super::{Context, ExitCode};
use crate::clock;
use crate::model::{Priority, Provider};
use crate::store::{Durability, Selection, VerbResult};

/// Which jobs an operator verb applies to.
#[derive(Debug, clap::Args)]
pub struct VerbArgs {
    /// Job ids.
    #[arg(value_name = "JOB_ID", required_unless_present = "all")]
    ids: Vec<i64>,

    /// Every job in a state the verb applies to, narrowed by --provider, --tag and --account.
    #[arg(long, conflicts_with = "ids")]
    all: bool,

    /// With --all: only jobs of this provider.
    #[arg(long, value_enum, requires = "all")]
    provider: Option<Provider>,

    /// With --all: only jobs with this tag.
    #[arg(long, requires = "all")]
    tag: Option<String>,

    /// With --all: only jobs of this provider account (as the config file names it).
    #[arg(long, value_name = "NAME", requires = "all")]
    account: Option<String>,

    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// An operator verb.
#[derive(Debug, Clone, Copy)]
pub enum Verb {
    /// Failed or cancelled -> queued.
    Retry,
    /// Queued -> cancelled.
    Cancel,
    /// A queued job's priority set.
    Prioritize(Priority),
}

impl VerbArgs {
    pub async fn run(self, ctx: &Context, verb: Verb) -> anyhow::Result<ExitCode> {
        let store = ctx.open(Durability::Full).await?;
        let selection = Selection {
            ids: self.ids,
            provider: self.provider,
            tag: self.tag,
            account: self.account,
        };
        let now = clock::now_ms();
        let (name, done) = match verb {
            Verb::Retry => ("retry", "queued again"),
            Verb::Cancel => ("cancel", "cancelled"),
            Verb::Prioritize(_) => ("prioritize", "reprioritized"),
        };
        let result = match verb {
            Verb::Retry => store.retry(&selection, now).await,
            Verb::Cancel => store.cancel(&selection, now).await,
            Verb::Prioritize(p) => store.prioritize(&selection, p, now).await,
        }
        .with_context(|| format!("{name}: updating the jobs"))?;
        match result {
            VerbResult::Changed(ids) => {
                if self.json {
                    println!("{}", json!({ "changed": ids.len(), "ids": ids }));
                } else {
                    println!(
                        "{} {} job{}",
                        done,
                        ids.len(),
                        if ids.len() == 1 { "" } else { "s" }
                    );
                }
                Ok(ExitCode::Success)
            }
            VerbResult::Refused(refusals) => {
                if self.json {
                    println!("{}", json!({ "changed": 0, "refused": refusals }));
                }
                for r in &refusals {
                    eprintln!("error: cannot {name} job {}: {}", r.id, r.reason);
                }
                eprintln!("error: nothing was changed");
                Ok(ExitCode::Refused)
            }
        }
    }
}
