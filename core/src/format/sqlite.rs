//! SQLite databases inside file volumes (`sqlite` volumes): a consistent
//! snapshot of each through SQLite's online backup API while the app
//! writes, never a copy of the live file; and the checks a restore and a
//! verification run on what comes back (`PRAGMA integrity_check`, rows per
//! table against the counts the backup recorded).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};

use crate::format::pg_tables::TableRows;

/// How long a snapshot waits for a writer that holds the database locked.
const LOCKED_FOR: Duration = Duration::from_secs(60);

/// One database of a backup, as its manifest records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SqliteDatabase {
    /// The path inside the volume.
    pub path: String,
    /// The snapshot's size.
    pub bytes: u64,
    /// Rows per table in the snapshot.
    pub tables: Vec<TableRows>,
}

/// Copies the database at `source` into `into` with the online backup
/// API in one step (one read transaction: every page from one moment),
/// then checks the copy. Busy or locked is waited out for a minute.
pub fn backup_to(source: &Path, into: &Path) -> Result<(), String> {
    use rusqlite::backup::{Backup, StepResult};
    let source = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("opening it: {e}"))?;
    source
        .busy_timeout(Duration::from_secs(30))
        .map_err(|e| e.to_string())?;
    let mut copy = Connection::open(into).map_err(|e| format!("creating the snapshot: {e}"))?;
    {
        let backup = Backup::new(&source, &mut copy).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + LOCKED_FOR;
        loop {
            match backup
                .step(-1)
                .map_err(|e| format!("the online backup failed: {e}"))?
            {
                StepResult::Done => break,
                StepResult::More => continue,
                _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                _ => return Err("it stayed locked for a minute".into()),
            }
        }
    }
    integrity(&copy)?;
    // One self-contained file: no -wal beside it.
    copy.pragma_update(None, "journal_mode", "DELETE")
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn integrity(db: &Connection) -> Result<(), String> {
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .map_err(|e| format!("integrity_check failed to run: {e}"))?;
    if check == "ok" {
        Ok(())
    } else {
        Err(format!("integrity_check says: {check}"))
    }
}

/// Rows per table (the schema's own tables, not SQLite's), by name.
fn table_rows(db: &Connection) -> Result<Vec<TableRows>, String> {
    let mut names: Vec<String> = {
        let mut statement = db
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
            )
            .map_err(|e| e.to_string())?;
        let rows = statement
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(|e| e.to_string())?;
        rows.collect::<Result<_, _>>().map_err(|e| e.to_string())?
    };
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let quoted = format!("\"{}\"", name.replace('"', "\"\""));
            let rows: i64 = db
                .query_row(&format!("SELECT count(*) FROM {quoted}"), [], |row| {
                    row.get(0)
                })
                .map_err(|e| format!("counting {quoted}: {e}"))?;
            Ok(TableRows {
                name,
                rows: rows.max(0) as u64,
            })
        })
        .collect()
}

/// `PRAGMA integrity_check` and rows per table of a database file (a
/// snapshot, or a database restored from one).
pub fn check(path: &Path) -> Result<Vec<TableRows>, String> {
    let db = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("opening it: {e}"))?;
    integrity(&db)?;
    table_rows(&db)
}

/// The volume's file at `relative`, reached without a symlink anywhere on
/// the way (the volume's content is the tenant's: a link could point at
/// anything on the host), and its identity.
fn plain_file(root: &Path, relative: &Path) -> Result<(PathBuf, (u64, u64)), String> {
    let mut path = root.to_path_buf();
    let parts: Vec<_> = relative.components().collect();
    for (i, part) in parts.iter().enumerate() {
        let std::path::Component::Normal(name) = part else {
            return Err("is not a plain relative path".into());
        };
        path.push(name);
        let metadata = std::fs::symlink_metadata(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => "does not exist".to_owned(),
            _ => e.to_string(),
        })?;
        if metadata.file_type().is_symlink() {
            return Err("is reached through a symlink, which is never followed".into());
        }
        if i + 1 == parts.len() {
            if !metadata.is_file() {
                return Err("is not a regular file".into());
            }
            return Ok((path, (metadata.dev(), metadata.ino())));
        }
    }
    Err("is empty".into())
}

/// Snapshots the database at `relative` in the volume `root` into `into`,
/// and counts its rows. A path reached through a symlink is refused, and
/// so is a file replaced while it was read.
pub fn snapshot(root: &Path, relative: &Path, into: &Path) -> Result<SqliteDatabase, String> {
    let (live, identity) = plain_file(root, relative)?;
    for suffix in crate::format::tar::SQLITE_COMPANIONS {
        let mut name = live.clone().into_os_string();
        name.push(suffix);
        if let Ok(metadata) = std::fs::symlink_metadata(PathBuf::from(name)) {
            if metadata.file_type().is_symlink() {
                return Err(format!(
                    "its {suffix} file is a symlink, which is never followed"
                ));
            }
        }
    }
    backup_to(&live, into)?;
    let (_, after) = plain_file(root, relative)?;
    if after != identity {
        return Err("was replaced while it was read".into());
    }
    let tables = check(into)?;
    let bytes = std::fs::metadata(into).map_err(|e| e.to_string())?.len();
    Ok(SqliteDatabase {
        path: relative.display().to_string(),
        bytes,
        tables,
    })
}
