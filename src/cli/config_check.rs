//! `purgeq config check`: validate the config file and show what it resolves to, never a secret.

use super::table::Table;
use super::{Context, ExitCode};
use crate::settings::{IdSource, Settings, SettingsError};
use crate::text::display_safe;

/// Work with the config file.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    Check(CheckArgs),
}

/// Validate the config file (--config, PURGEQ_CONFIG or the default) and print the resolved
/// accounts and the routing table.
///
/// Every account's identifier and secret is read, as the worker will read it, but a secret is
/// shown only by where it comes from. Exit 0: the file is valid and every secret readable; exit
/// 3: it is not, and the error names the file, the line and the key.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  purgeq config check --config /etc/purgeq/purgeq.toml")]
struct CheckArgs {}

impl Args {
    pub async fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        let Sub::Check(CheckArgs {}) = self.command;
        let settings = match ctx.settings() {
            Ok(Some(s)) => s,
            Ok(None) => {
                println!(
                    "no config file ({} does not exist): one account named `default` per provider comes from the environment",
                    crate::settings::SYSTEM_PATH
                );
                return Ok(ExitCode::Success);
            }
            Err(e) if e.downcast_ref::<SettingsError>().is_some() => {
                eprintln!("error: {e:#}");
                return Ok(ExitCode::InvalidInput);
            }
            Err(e) => return Err(e),
        };
        let checked = settings
            .check_secrets()
            .map_err(anyhow::Error::from)
            .and_then(|()| super::defaults::worker_defaults(&settings, None));
        if let Err(e) = checked {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::InvalidInput);
        }
        print!("{}", render(&settings));
        Ok(ExitCode::Success)
    }
}

/// The resolved accounts, the routing table and the worker defaults.
fn render(s: &Settings) -> String {
    let mut out = format!("{}: valid\n", s.path.display());
    if !s.has_accounts() {
        out.push_str("no account is named: one account named `default` per provider comes from the environment\n");
    }
    let id = |source: &IdSource| match source {
        IdSource::Inline(v) => display_safe(v, 80),
        other => format!("{other} (set)"),
    };
    if !s.qiniu.is_empty() {
        let mut t = Table::new(vec![
            "QINIU ACCOUNT",
            "ACCESS KEY",
            "SECRET KEY",
            "ENDPOINT",
            "LINE",
        ]);
        for q in &s.qiniu {
            t.row(vec![
                q.name.clone(),
                id(&q.access_key),
                format!("{} (readable)", q.secret_key),
                q.endpoint.clone().unwrap_or_else(|| "default".to_owned()),
                q.place.line.to_string(),
            ]);
        }
        out.push('\n');
        out.push_str(&t.render());
        let mut t = Table::new(vec!["HOST", "ACCOUNT"]);
        for (pattern, account) in s.routing.entries() {
            t.row(vec![pattern.to_string(), account.to_owned()]);
        }
        out.push_str(
            "\nRouting (an exact host wins over a wildcard, a longer wildcard over a shorter):\n",
        );
        out.push_str(&t.render());
    }
    if !s.pan123.is_empty() {
        let mut t = Table::new(vec![
            "123PAN ACCOUNT",
            "CLIENT ID",
            "CLIENT SECRET",
            "ENDPOINT",
            "LINE",
        ]);
        for p in &s.pan123 {
            t.row(vec![
                p.name.clone(),
                id(&p.client_id),
                format!("{} (readable)", p.client_secret),
                p.endpoint.clone().unwrap_or_else(|| "default".to_owned()),
                p.place.line.to_string(),
            ]);
        }
        out.push('\n');
        out.push_str(&t.render());
    }
    if !s.worker.is_empty() {
        out.push_str("\nWorker defaults (flags and environment override them):\n");
        for key in &s.worker {
            out.push_str(&format!("  {} = {}\n", key.key, key.value));
        }
    }
    out
}
