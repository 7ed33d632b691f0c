//! A consistent copy of Cairn's own database in a file: SQLite's online
//! backup API (never a copy of the live file, which a writer may be
//! changing), or `pg_dump -Fc` of the configured PostgreSQL database (the
//! password in `PGPASSWORD`, never in argv).

use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// Copies the database with the online backup API in one step (a read
/// transaction: every page from one moment), then checks the copy.
fn sqlite_backup(source: &Path, into: &Path) -> anyhow::Result<()> {
    use rusqlite::{Connection, OpenFlags};
    let source = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .context("opening the database for its backup")?;
    source.busy_timeout(Duration::from_secs(30))?;
    let mut copy = Connection::open(into).context("creating the snapshot")?;
    {
        use rusqlite::backup::StepResult;
        let backup = rusqlite::backup::Backup::new(&source, &mut copy)?;
        // -1: every page in one step, so the copy is of one moment; busy
        // or locked (a writer holds the file) is waited out.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            match backup.step(-1).context("the SQLite online backup failed")? {
                StepResult::Done => break,
                StepResult::More => continue,
                _ if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => anyhow::bail!("the database stayed locked for a minute"),
            }
        }
    }
    let check: String = copy.query_row("PRAGMA integrity_check", [], |row| row.get(0))?;
    anyhow::ensure!(
        check == "ok",
        "the snapshot fails SQLite's integrity check: {check}"
    );
    // One self-contained file: no -wal beside it.
    copy.pragma_update(None, "journal_mode", "DELETE")?;
    Ok(())
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
