//! `purgeq enqueue`: validate every target, then insert all of them in one durable transaction.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use super::{Context, ExitCode, delay_arg};
use crate::clock;
use crate::model::{Action, DEFAULT_ACCOUNT, Priority, Provider};
use crate::settings::Settings;
use crate::store::{Durability, NewJobs, WaitSelection};
use crate::target::{self, Input};

/// The longest tag accepted, in bytes.
const MAX_TAG_LEN: usize = 200;

/// Queue purge jobs: one per target, all or none.
///
/// Targets come from the arguments, from stdin (`-`), or from --file (one per line; blank
/// lines and lines starting with # are skipped). Every target is checked first: if any is
/// invalid, each bad one is printed with its position and the reason, nothing is queued, and
/// the exit code is 3. Once this command exits 0 its jobs are on disk, even across a power cut.
///
/// One call reads at most 16 MiB from stdin or --file and queues at most 100000 targets; more
/// is refused whole (exit 3, nothing queued): split bigger lists into several calls. Tags may
/// not hold control, bidi or zero-width characters.
///
/// With accounts in the config file, each Qiniu URL goes to the account whose hosts serve it
/// (an exact host before a wildcard); a URL no account serves is refused (exit 3, nothing
/// queued) unless --account names the account.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    purgeq enqueue https://cdn.example.com/app.js https://cdn.example.com/app.css\n  \
    purgeq enqueue --dir https://cdn.example.com/assets/\n  \
    find dist -type f | sed 's|^dist|https://cdn.example.com|' | purgeq enqueue --tag build-42 -\n  \
    purgeq enqueue --priority urgent https://cdn.example.com/index.html\n  \
    purgeq enqueue --provider 123pan\n  \
    purgeq enqueue --tag deploy-7 --wait --timeout 20m https://cdn.example.com/app.js")]
pub struct Args {
    /// URLs (or directories with --dir) to purge; `-` reads them from stdin.
    #[arg(value_name = "TARGET")]
    targets: Vec<String>,

    /// Read targets from this file, one per line.
    #[arg(long, short, value_name = "FILE", conflicts_with = "targets")]
    file: Option<PathBuf>,

    /// The CDN provider.
    #[arg(long, short, value_enum, default_value_t = Provider::Qiniu)]
    provider: Provider,

    /// Targets are directories (each ends with `/`): refresh everything under them (qiniu).
    #[arg(long, conflicts_with = "prefetch")]
    dir: bool,

    /// Prefetch the URLs into the CDN cache instead of refreshing them (qiniu).
    #[arg(long)]
    prefetch: bool,

    /// The provider account to use, as the config file names it. Qiniu URLs otherwise go to
    /// the account whose `hosts` serve them; a 123pan enqueue otherwise uses the only
    /// [[pan123]] account. Without a config file the only account is `default`.
    #[arg(long, value_name = "NAME")]
    account: Option<String>,

    /// A label for the jobs (pipeline, build id), for `status --tag`.
    #[arg(long, short, value_name = "TAG")]
    tag: Option<String>,

    /// Do not send the jobs before this much time has passed (e.g. 30s, 5m; at most 30d).
    #[arg(long, value_name = "DUR", value_parser = delay_arg, allow_hyphen_values = true)]
    delay: Option<Duration>,

    /// How soon the jobs go out: urgent, high, normal or low. Workers send higher priority
    /// first, then the oldest; `purgeq prioritize` changes it while the jobs are queued.
    #[arg(long, value_enum, value_name = "PRIORITY", default_value_t = Priority::Normal)]
    priority: Priority,

    /// Print the result as JSON, with the new job ids.
    #[arg(long)]
    json: bool,

    /// Then wait until every job queued here has ended, as `purgeq wait` does (progress on
    /// stderr): exit 0 once all succeeded (for Qiniu: confirmed by the CDN), 5 if one failed
    /// or was cancelled, 6 on --timeout.
    #[arg(long)]
    wait: bool,

    /// With --wait: give up after this long (exit 6; the jobs stay queued).
    #[arg(long, value_name = "DUR", requires = "wait", value_parser = super::duration_arg)]
    timeout: Option<Duration>,
}

/// The most input bytes one `enqueue` reads from stdin or `--file`.
pub const MAX_INPUT_BYTES: u64 = 16 << 20;
/// The most targets one `enqueue` queues (all or none, in one transaction).
pub const MAX_TARGETS: usize = 100_000;

/// Reads at most [`MAX_INPUT_BYTES`]; `None` when there is more (memory stays bounded even
/// for an endless source such as /dev/zero).
fn read_capped(reader: impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::new();
    reader.take(MAX_INPUT_BYTES + 1).read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= MAX_INPUT_BYTES).then_some(bytes))
}

fn check_count(input: Input) -> Result<Input, String> {
    if input.items.len() > MAX_TARGETS {
        return Err(format!(
            "{} targets given; one enqueue takes at most {MAX_TARGETS}: split them into several calls",
            input.items.len()
        ));
    }
    Ok(input)
}

/// A tag is 1 to [`MAX_TAG_LEN`] bytes without control, bidi or zero-width characters.
fn check_tag(tag: &str) -> Result<(), String> {
    let shown = crate::text::display_safe(tag, 80);
    if tag.is_empty() || tag.len() > MAX_TAG_LEN {
        return Err(format!(
            "--tag \"{shown}\" must be 1 to {MAX_TAG_LEN} bytes"
        ));
    }
    if let Some(c) = tag.chars().find(|c| crate::text::is_unsafe(*c)) {
        return Err(format!(
            "--tag \"{shown}\" holds {}, a control, bidi or zero-width character; tags must show as they are",
            c.escape_unicode()
        ));
    }
    Ok(())
}

impl Args {
    fn action(&self) -> Action {
        match (self.provider, self.dir, self.prefetch) {
            (Provider::Pan123, _, _) if !self.dir && !self.prefetch => Action::RefreshAll,
            (_, true, _) => Action::RefreshDir,
            (_, _, true) => Action::PrefetchUrl,
            _ => Action::RefreshUrl,
        }
    }

    fn read_input(&self) -> anyhow::Result<Result<Input, String>> {
        let bytes = if let Some(path) = &self.file {
            let file =
                std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
            read_capped(file).with_context(|| format!("reading {}", path.display()))?
        } else if self.targets.iter().any(|t| t == "-") {
            anyhow::ensure!(
                self.targets.len() == 1,
                "`-` (read stdin) cannot be mixed with other targets"
            );
            read_capped(std::io::stdin().lock()).context("reading stdin")?
        } else {
            return Ok(check_count(Input::from_args(&self.targets)));
        };
        let Some(bytes) = bytes else {
            return Ok(Err(format!(
                "the input is larger than {MAX_INPUT_BYTES} bytes, the most one enqueue takes; split it into several calls"
            )));
        };
        Ok(check_count(Input::from_lines(&bytes)))
    }

    pub async fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        let action = self.action();
        if let Err(why) = target::check_action(self.provider, action) {
            eprintln!("error: {why}");
            return Ok(ExitCode::InvalidInput);
        }
        if let Some(Err(why)) = self.tag.as_deref().map(check_tag) {
            eprintln!("error: {why}");
            return Ok(ExitCode::InvalidInput);
        }
        let input = match self.read_input()? {
            Ok(input) => input,
            Err(why) => {
                eprintln!("error: {why}; nothing was queued");
                return Ok(ExitCode::InvalidInput);
            }
        };
        let targets: Vec<Option<String>> = match target::validate(&input, action) {
            Err(rejected) => {
                for r in &rejected {
                    eprintln!("error: {r}");
                }
                eprintln!(
                    "error: {} of {} targets rejected; nothing was queued",
                    rejected.len(),
                    input.items.len()
                );
                return Ok(ExitCode::InvalidInput);
            }
            Ok(good) if good.is_empty() && action == Action::RefreshAll => vec![None],
            Ok(good) if good.is_empty() => {
                eprintln!("error: no targets given (pass URLs, `-` for stdin, or --file)");
                return Ok(ExitCode::InvalidInput);
            }
            Ok(good) => good.into_iter().map(Some).collect(),
        };
        let settings = ctx.settings()?;
        let groups = match assign(
            self.provider,
            self.account.as_deref(),
            settings.as_ref(),
            targets,
        ) {
            Ok(groups) => groups,
            Err(errors) => {
                for e in &errors {
                    eprintln!("error: {e}");
                }
                eprintln!("error: nothing was queued");
                return Ok(ExitCode::InvalidInput);
            }
        };
        self.insert(ctx, action, groups).await
    }

    /// Inserts every account's jobs in one transaction and prints what was queued.
    async fn insert(
        &self,
        ctx: &Context,
        action: Action,
        groups: Groups,
    ) -> anyhow::Result<ExitCode> {
        let store = ctx.open_one(Durability::Full).await?;
        let now = clock::now_ms();
        let groups: Vec<NewJobs> = groups
            .into_iter()
            .map(|(account, targets)| NewJobs {
                provider: self.provider,
                account,
                action,
                tag: self.tag.clone(),
                not_before: clock::add(now, self.delay.unwrap_or_default()),
                priority: self.priority,
                targets,
            })
            .collect();
        let per_group = store
            .enqueue_groups(&groups, now)
            .await
            .context("queueing the jobs")?;
        let ids: Vec<i64> = per_group.iter().flatten().copied().collect();
        self.print_queued(action, &groups, &per_group, &ids);
        let code = if self.wait {
            let selection = WaitSelection {
                ids,
                ..WaitSelection::default()
            };
            super::wait::wait(&store, &selection, self.timeout, Duration::from_millis(500)).await
        } else {
            Ok(ExitCode::Success)
        };
        store.close().await;
        code
    }

    /// What was queued: a line, or with `--json` the counts per account and every id.
    fn print_queued(
        &self,
        action: Action,
        groups: &[NewJobs],
        per_group: &[Vec<i64>],
        ids: &[i64],
    ) {
        if self.json {
            let accounts: serde_json::Map<String, serde_json::Value> = groups
                .iter()
                .zip(per_group)
                .map(|(g, ids)| (g.account.clone(), ids.len().into()))
                .collect();
            let out = serde_json::json!({
                "queued": ids.len(),
                "provider": self.provider,
                "action": action,
                "accounts": accounts,
                "priority": self.priority,
                "ids": ids,
            });
            println!("{out}");
        } else {
            println!(
                "queued {} {} job{}",
                ids.len(),
                action,
                if ids.len() == 1 { "" } else { "s" }
            );
        }
    }
}

/// Targets by account name, in first-seen order.
type Groups = Vec<(String, Vec<Option<String>>)>;

/// The targets grouped by the account that serves them, in first-seen order; or every reason
/// some target has no account (then nothing is queued).
///
/// With accounts in the config file: `--account` names one of the provider's accounts and takes
/// every target; otherwise a Qiniu URL goes to the account whose hosts serve it, and a 123pan
/// enqueue uses the only `[[pan123]]` account. Without: the only account is `default`.
fn assign(
    provider: Provider,
    account: Option<&str>,
    settings: Option<&Settings>,
    targets: Vec<Option<String>>,
) -> Result<Groups, Vec<String>> {
    let Some(settings) = settings.filter(|s| s.has_accounts()) else {
        return match account {
            None | Some(DEFAULT_ACCOUNT) => Ok(vec![(DEFAULT_ACCOUNT.to_owned(), targets)]),
            Some(other) => Err(vec![format!(
                "--account {other}: no config file names accounts, so the only account is {DEFAULT_ACCOUNT}"
            )]),
        };
    };
    let names: Vec<&str> = match provider {
        Provider::Qiniu => settings.qiniu.iter().map(|q| q.name.as_str()).collect(),
        Provider::Pan123 => settings.pan123.iter().map(|p| p.name.as_str()).collect(),
    };
    let table = if provider == Provider::Qiniu {
        "[[qiniu]]"
    } else {
        "[[pan123]]"
    };
    let file = settings.path.display();
    match (account, provider, names.as_slice()) {
        (Some(name), _, _) if names.contains(&name) => Ok(vec![(name.to_owned(), targets)]),
        (Some(name), _, _) => Err(vec![format!(
            "--account {name}: {file} has no {table} account of that name (it has: {})",
            names.join(", ")
        )]),
        (None, Provider::Pan123, [only]) => Ok(vec![((*only).to_owned(), targets)]),
        (None, Provider::Pan123, []) => Err(vec![format!("{file} has no {table} account")]),
        (None, Provider::Pan123, _) => Err(vec![format!(
            "{file} has several {table} accounts: name one with --account ({})",
            names.join(", ")
        )]),
        (None, Provider::Qiniu, _) => route(settings, targets),
    }
}

/// Qiniu targets by the account whose hosts serve them.
fn route(settings: &Settings, targets: Vec<Option<String>>) -> Result<Groups, Vec<String>> {
    let mut groups: Groups = Vec::new();
    let mut errors = Vec::new();
    for (i, target) in targets.into_iter().enumerate() {
        let Some(url) = target else { continue };
        match settings.routing.account_for(&url) {
            Ok(account) => match groups.iter_mut().find(|(a, _)| a == account) {
                Some((_, list)) => list.push(Some(url)),
                None => groups.push((account.to_owned(), vec![Some(url)])),
            },
            Err(why) => errors.push(format!(
                "target {}: {} is not routable: {why} (in {})",
                i + 1,
                crate::text::display_safe(&url, 200),
                settings.path.display()
            )),
        }
    }
    if errors.is_empty() {
        Ok(groups)
    } else {
        Err(errors)
    }
}
