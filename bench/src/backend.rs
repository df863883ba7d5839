//! The two backends, and a fresh scratch database on either: a SQLite file in a temporary
//! directory, or a PostgreSQL database created on the server and dropped afterwards.

use std::ffi::OsString;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context as _;
use purgeq::store::{Durability, Location, OpenOptions, Store};
use sqlx::{Connection as _, Executor as _, PgConnection};
use tempfile::TempDir;

use crate::util;

/// Where a benchmark runs.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A SQLite file.
    Sqlite,
    /// A PostgreSQL server, reached through an administrator's URL.
    Postgres(PgAdmin),
}

impl Backend {
    /// The name printed in the report.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres(_) => "PostgreSQL",
        }
    }

    /// A new, empty database (no schema yet).
    pub fn scratch(&self) -> anyhow::Result<Scratch> {
        match self {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().context("creating a scratch directory")?;
                let path = dir.path().join("q.db");
                Ok(Scratch {
                    location: Location::Sqlite(path),
                    _dir: Some(dir),
                    database: None,
                })
            }
            Backend::Postgres(admin) => {
                let name = admin.create()?;
                Ok(Scratch {
                    location: Location::Postgres(admin.database_url(&name)?),
                    _dir: None,
                    database: Some((admin.clone(), name)),
                })
            }
        }
    }
}

/// A database that exists for one measurement and is removed when dropped.
#[derive(Debug)]
pub struct Scratch {
    location: Location,
    /// The SQLite file's directory, removed when dropped.
    _dir: Option<TempDir>,
    /// The PostgreSQL database, dropped in [`Scratch::drop`].
    database: Option<(PgAdmin, String)>,
}

impl Scratch {
    /// Where it is.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The value of `purgeq --db`.
    pub fn db_arg(&self) -> OsString {
        match &self.location {
            Location::Sqlite(path) => path.clone().into_os_string(),
            Location::Postgres(url) => url.into(),
        }
    }

    /// The PostgreSQL URL, if it is one.
    pub fn pg_url(&self) -> Option<&str> {
        match &self.location {
            Location::Postgres(url) => Some(url),
            Location::Sqlite(_) => None,
        }
    }

    /// Applies purgeq's schema through the library (its migrations), as the CLI would.
    pub fn create_schema(&self) -> anyhow::Result<()> {
        util::runtime()?.block_on(async {
            let store = open_store(&self.location).await?;
            drop(store);
            anyhow::Ok(())
        })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.database.take() {
            // A thread of its own: a Tokio runtime may not be started inside another.
            let dropped = std::thread::spawn(move || admin.drop_database(&name)).join();
            match dropped {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("warning: could not drop a scratch database: {e:#}"),
                Err(_) => eprintln!("warning: dropping a scratch database panicked"),
            }
        }
    }
}

/// Opens the store at `location` as a worker does (applying migrations if needed).
pub async fn open_store(location: &Location) -> anyhow::Result<Store> {
    Store::connect(location, &OpenOptions::new(Durability::Normal))
        .await
        .with_context(|| format!("opening {}", location.display()))
}

/// Scratch databases created by this process, for unique names.
static CREATED: AtomicUsize = AtomicUsize::new(0);

/// A PostgreSQL server, through a URL allowed to create and drop databases.
#[derive(Debug, Clone)]
pub struct PgAdmin {
    url: String,
}

impl PgAdmin {
    /// The server at `url` (e.g. `postgres://postgres@127.0.0.1:54329/postgres`).
    pub fn new(url: String) -> Self {
        PgAdmin { url }
    }

    /// The URL of database `name` on the same server, with the same credentials.
    pub fn database_url(&self, name: &str) -> anyhow::Result<String> {
        let mut url = url::Url::parse(&self.url).context("parsing the PostgreSQL URL")?;
        url.set_path(&format!("/{name}"));
        Ok(url.to_string())
    }

    /// Creates a new empty database and returns its name.
    fn create(&self) -> anyhow::Result<String> {
        let n = CREATED.fetch_add(1, Ordering::Relaxed);
        let name = format!("purgeq_bench_{}_{n}", std::process::id());
        self.admin(&format!("CREATE DATABASE {name}"))
            .with_context(|| format!("creating the database {name}"))?;
        Ok(name)
    }

    fn drop_database(&self, name: &str) -> anyhow::Result<()> {
        self.admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    }

    /// Runs one statement on the administrator's connection.
    fn admin(&self, sql: &str) -> anyhow::Result<()> {
        util::runtime()?.block_on(async {
            let mut conn = self.connect().await?;
            conn.execute(sqlx::AssertSqlSafe(sql.to_owned()))
                .await
                .with_context(|| sql.to_owned())?;
            conn.close().await.ok();
            anyhow::Ok(())
        })
    }

    async fn connect(&self) -> anyhow::Result<PgConnection> {
        PgConnection::connect(&self.url)
            .await
            .context("connecting to PostgreSQL (--pg / PURGEQ_BENCH_PG)")
    }

    /// The server's version, address and the settings that decide what a commit costs.
    pub fn describe(&self) -> anyhow::Result<String> {
        util::runtime()?.block_on(async {
            let mut conn = self.connect().await?;
            let version: String = sqlx::query_scalar("SHOW server_version")
                .fetch_one(&mut conn)
                .await?;
            let fsync: String = sqlx::query_scalar("SHOW fsync")
                .fetch_one(&mut conn)
                .await?;
            let sync: String = sqlx::query_scalar("SHOW synchronous_commit")
                .fetch_one(&mut conn)
                .await?;
            conn.close().await.ok();
            let url = url::Url::parse(&self.url)?;
            let at = format!(
                "{}:{}",
                url.host_str().unwrap_or("?"),
                url.port().unwrap_or(5432)
            );
            let version = version.split_whitespace().next().unwrap_or("?").to_owned();
            let mut text =
                format!("PostgreSQL {version} at {at} (fsync={fsync}, synchronous_commit={sync})");
            if fsync != "on" {
                text.push_str(
                    " -- fsync is off on this server: its commits are not flushed, so its write \
                     figures are optimistic",
                );
            }
            anyhow::Ok(text)
        })
    }
}
