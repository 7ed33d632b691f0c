//! `cairn system restore`: rebuilds Cairn's database, offline, from a
//! self-backup. The archive is checked against its `.sha256` (or a given
//! hash) and read through before anything is touched; a backup made by a
//! newer schema is refused; a database that is not empty is refused unless
//! `--force` (a SQLite file is then kept beside as `….replaced-{time}`,
//! never deleted). The next start runs the migrations this binary has and
//! the backup had not.

use std::path::{Path, PathBuf};

use chrono::Utc;
use sea_orm::ConnectionTrait;

use cairn_entity::enums::DatabaseEngine;

use super::snapshot::{file_name, sqlite_path};
use super::{newer_schema, SystemManifest, MANIFEST_FILE, MANIFEST_KIND, SYSTEM_FORMAT_VERSION};
use crate::format::names::ArchiveName;
use crate::format::offline::verify_file;

/// What `cairn system restore` is asked to do.
pub struct RestoreOptions<'a> {
    /// The archive, on the local disk (fetched first when it was `s3://…`).
    pub archive: &'a Path,
    /// The expected SHA-256; `None`: the `.sha256` beside the archive.
    pub sha256: Option<&'a str>,
    pub identity: &'a age::x25519::Identity,
    /// The database to rebuild: `sqlite://…` or `postgres://…`.
    pub database_url: &'a str,
    /// Replace a database that is not empty.
    pub force: bool,
    pub pg_restore: &'a Path,
}

/// What was restored.
#[derive(Debug)]
pub struct Restored {
    pub manifest: SystemManifest,
    /// Where the checksum came from.
    pub checked_against: String,
    /// Files of the replaced SQLite database, kept under new names.
    pub kept: Vec<PathBuf>,
}

/// Restores `options.archive` into `options.database_url`.
pub async fn restore(options: RestoreOptions<'_>) -> Result<Restored, String> {
    let engine = match options.database_url.split("://").next() {
        Some("sqlite") => DatabaseEngine::Sqlite,
        Some("postgres" | "postgresql") => DatabaseEngine::Postgresql,
        _ => return Err("the database URL must be sqlite://… or postgres://…".into()),
    };
    let verified = verify_file(options.archive, options.sha256, Some(options.identity))?;
    // The work directory lies beside a SQLite file, so the snapshot is
    // renamed into place, never copied across file systems.
    let work_root = match engine {
        DatabaseEngine::Sqlite => {
            let path =
                sqlite_path(options.database_url).ok_or("the database URL names no SQLite file")?;
            let parent = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."));
            crate::db::create_private_dir(&parent)
                .map_err(|e| format!("creating {}: {e}", parent.display()))?;
            parent
        }
        DatabaseEngine::Postgresql => std::env::temp_dir(),
    };
    let work = tempfile::Builder::new()
        .prefix(".cairn-system-restore-")
        .tempdir_in(&work_root)
        .map_err(|e| format!("creating a work directory in {}: {e}", work_root.display()))?;
    extract(options.archive, options.identity, work.path())?;
    let manifest = read_manifest(work.path())?;
    if manifest.engine != engine {
        return Err(format!(
            "the backup is of a {} database; the database URL must be of the same engine",
            manifest.engine.as_str()
        ));
    }
    let snapshot = work.path().join(file_name(engine));
    if manifest.database_file != file_name(engine) || !snapshot.is_file() {
        return Err(format!(
            "the archive holds no {}: it is not a self-backup of this format",
            file_name(engine)
        ));
    }
    let kept = match engine {
        DatabaseEngine::Sqlite => install_sqlite(&options, &snapshot)?,
        DatabaseEngine::Postgresql => {
            install_postgres(&options, &snapshot).await?;
            Vec::new()
        }
    };
    record_itself(
        options.database_url,
        &manifest,
        &verified.sha256,
        verified.size,
    )
    .await?;
    Ok(Restored {
        manifest,
        checked_against: verified.checked_against,
        kept,
    })
}

/// The snapshot was taken while its own record was `running`: the restored
/// database records it as the success it became (the archive it was just
/// restored from), rather than leaving a reaper to call it lost.
async fn record_itself(
    url: &str,
    manifest: &SystemManifest,
    sha256: &str,
    size: u64,
) -> Result<(), String> {
    use cairn_entity::enums::SystemBackupStatus;
    use cairn_entity::system_backup;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, Set};
    let db = sea_orm::Database::connect(url)
        .await
        .map_err(|_| "cannot connect to the restored database".to_owned())?;
    let mut stored = manifest.clone();
    stored.stored_bytes = Some(size);
    stored.sha256 = Some(sha256.to_owned());
    let updated = system_backup::Entity::update_many()
        .set(system_backup::ActiveModel {
            status: Set(SystemBackupStatus::Success),
            size: Set(Some(size as i64)),
            sha256: Set(Some(sha256.to_owned())),
            manifest: Set(serde_json::to_value(&stored).ok()),
            lease_owner: Set(None),
            lease_expires_at: Set(None),
            finished_at: Set(Some(manifest.created_at)),
            ..Default::default()
        })
        .filter(system_backup::Column::Id.eq(manifest.backup_id))
        .filter(system_backup::Column::Status.eq(SystemBackupStatus::Running))
        .exec(&db)
        .await;
    db.close().await.ok();
    updated
        .map(|_| ())
        .map_err(|e| format!("recording the restored self-backup: {e}"))
}

fn extract(archive: &Path, identity: &age::x25519::Identity, into: &Path) -> Result<(), String> {
    let name = archive
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .and_then(|n| ArchiveName::parse(&n))
        .ok_or_else(|| format!("{} is not a Cairn archive", archive.display()))?;
    let file = std::fs::File::open(archive).map_err(|e| format!("{}: {e}", archive.display()))?;
    let plain = crate::format::read::open(file, name, Some(identity)).map_err(|e| e.to_string())?;
    crate::format::extract::extract(plain, into, None).map_err(|e| e.to_string())?;
    Ok(())
}

/// The manifest inside the archive, held to what this binary can restore.
fn read_manifest(dir: &Path) -> Result<SystemManifest, String> {
    let path = dir.join(MANIFEST_FILE);
    let bytes = std::fs::read(&path)
        .map_err(|_| format!("the archive holds no {MANIFEST_FILE}: it is not a self-backup"))?;
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("{MANIFEST_FILE} is not JSON: {e}"))?;
    if value.get("kind").and_then(|k| k.as_str()) != Some(MANIFEST_KIND) {
        return Err(format!(
            "{MANIFEST_FILE} is not a self-backup's manifest (kind {MANIFEST_KIND})"
        ));
    }
    let version = value
        .get("formatVersion")
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    if version > u64::from(SYSTEM_FORMAT_VERSION) {
        return Err(format!(
            "the self-backup has format version {version}; this Cairn reads up to \
             {SYSTEM_FORMAT_VERSION}: upgrade Cairn"
        ));
    }
    let manifest: SystemManifest = serde_json::from_value(value)
        .map_err(|e| format!("{MANIFEST_FILE} is not one Cairn wrote: {e}"))?;
    if let Some(refusal) = newer_schema(&manifest.migrations, &manifest.cairn_version) {
        return Err(refusal);
    }
    Ok(manifest)
}

/// Puts the snapshot at the database's path. What was there (the file and
/// any `-wal`, `-shm` or `-journal` beside it, which SQLite would otherwise
/// apply to the restored file) is renamed aside, never deleted; a database
/// with content is refused without `force`.
fn install_sqlite(options: &RestoreOptions<'_>, snapshot: &Path) -> Result<Vec<PathBuf>, String> {
    let path = sqlite_path(options.database_url).ok_or("the database URL names no SQLite file")?;
    let has_content = std::fs::metadata(&path)
        .map(|m| m.len() > 0)
        .unwrap_or(false);
    if has_content && !options.force {
        return Err(format!(
            "{} exists and is not empty: move it away, or pass --force to keep it beside as \
             {}.replaced-…",
            path.display(),
            path.display()
        ));
    }
    let stamp = Utc::now().format("%Y%m%dT%H%M%SZ");
    let mut kept = Vec::new();
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let existing = PathBuf::from(format!("{}{suffix}", path.display()));
        if existing.exists() {
            let aside = PathBuf::from(format!("{}.replaced-{stamp}{suffix}", path.display()));
            std::fs::rename(&existing, &aside)
                .map_err(|e| format!("moving {} aside: {e}", existing.display()))?;
            kept.push(aside);
        }
    }
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(snapshot, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("{}: {e}", snapshot.display()))?;
        std::fs::File::open(snapshot)
            .and_then(|f| f.sync_all())
            .map_err(|e| format!("{}: {e}", snapshot.display()))?;
    }
    std::fs::rename(snapshot, &path)
        .map_err(|e| format!("moving the restored database to {}: {e}", path.display()))?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    Ok(kept)
}

/// `pg_restore` of the dump into the database, in one transaction; a
/// database with tables is refused without `force` (with it, pg_restore
/// drops what the dump recreates).
async fn install_postgres(options: &RestoreOptions<'_>, dump: &Path) -> Result<(), String> {
    let (settings, password) =
        crate::format::pg_restore::parse_database_url("--database-url", options.database_url)?;
    // The password: the URL's, else the operator's PGPASSWORD (the other
    // PG* variables are not passed on: the URL says where to restore).
    let password = password.or_else(|| {
        std::env::var("PGPASSWORD")
            .ok()
            .map(secrecy::SecretString::from)
    });
    let db = sea_orm::Database::connect(options.database_url)
        .await
        .map_err(|_| {
            format!(
                "cannot connect to database \"{}\" on {}:{}",
                settings.database, settings.host, settings.port
            )
        })?;
    let row = db
        .query_one(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT count(*) AS tables FROM pg_tables \
             WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
        ))
        .await
        .map_err(|e| format!("counting the database's tables: {e}"))?;
    let tables: i64 = row
        .and_then(|row| row.try_get("", "tables").ok())
        .unwrap_or(0);
    db.close().await.ok();
    if tables > 0 && !options.force {
        return Err(format!(
            "database \"{}\" has {tables} table(s): restore into an empty database, or pass \
             --force to replace what the backup holds",
            settings.database
        ));
    }
    let dump = dump.to_path_buf();
    let program = options.pg_restore.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&dump).map_err(|e| format!("{}: {e}", dump.display()))?;
        crate::format::pg_restore::pg_restore(
            file,
            crate::format::pg_restore::PgRestore::Into {
                settings: &settings,
                hostaddr: None,
                password: password.as_ref(),
            },
            &program,
            &crate::storage::Cancellation::default(),
        )
    })
    .await
    .map_err(|e| format!("pg_restore did not finish: {e}"))??;
    Ok(())
}
