//! A consistent copy of Cairn's own database in a file: SQLite's online
//! backup API (never a copy of the live file, which a writer may be
//! changing), or `pg_dump -Fc` of the configured PostgreSQL database (the
//! password in `PGPASSWORD`, never in argv).

use std::path::{Path, PathBuf};

use anyhow::Context;
use cairn_entity::enums::DatabaseEngine;

use crate::Cairn;

/// The database's file name inside a self-backup.
pub fn file_name(engine: DatabaseEngine) -> &'static str {
    match engine {
        DatabaseEngine::Sqlite => "cairn.sqlite3",
        DatabaseEngine::Postgresql => "cairn.pgdump",
    }
}

/// The file of a `sqlite://PATH[?…]` URL.
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://")?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty()).then(|| PathBuf::from(path))
}

/// Writes the snapshot into `dir`; returns its path and size.
pub async fn take(cairn: &Cairn, dir: &Path) -> anyhow::Result<(PathBuf, u64)> {
    let engine = super::engine(cairn);
    let into = dir.join(file_name(engine));
    let url = cairn.config.database_url();
    match engine {
        DatabaseEngine::Sqlite => {
            let source = sqlite_path(&url).context("database_url names no SQLite file")?;
            let into = into.clone();
            tokio::task::spawn_blocking(move || sqlite_backup(&source, &into)).await??;
        }
        DatabaseEngine::Postgresql => pg_dump(cairn, &url, &into).await?,
    }
    let size = tokio::fs::metadata(&into).await?.len();
    Ok((into, size))
}

/// Copies the database with the online backup API (one read
/// transaction), then checks the copy.
fn sqlite_backup(source: &Path, into: &Path) -> anyhow::Result<()> {
    crate::format::sqlite::backup_to(source, into)
        .map_err(|e| anyhow::anyhow!("the SQLite online backup of Cairn's database: {e}"))
}

async fn pg_dump(cairn: &Cairn, url: &str, into: &Path) -> anyhow::Result<()> {
    use secrecy::ExposeSecret;
    let (settings, password) = crate::format::pg_restore::parse_database_url("database_url", url)
        .map_err(|e| anyhow::anyhow!(e))?;
    let mut command = tokio::process::Command::new(&cairn.config.pg_dump);
    command
        .arg("--format=custom")
        .arg("--no-password")
        .arg(format!("--file={}", into.display()))
        .arg(format!(
            "--dbname={}",
            crate::format::pg_dump::conninfo(&settings, None)
        ))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    for name in crate::format::pg_dump::libpq_variables() {
        command.env_remove(name);
    }
    if let Some(password) = &password {
        command.env("PGPASSWORD", password.expose_secret());
    }
    let output = command
        .output()
        .await
        .with_context(|| format!("pg_dump ({}) cannot be run", cairn.config.pg_dump.display()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        anyhow::bail!(
            "pg_dump of Cairn's database failed ({}): {}",
            output.status,
            stderr.trim()
        );
    }
    Ok(())
}
