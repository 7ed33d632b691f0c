//! Cairn's own state: self-backups of its database.
//!
//! A self-backup is a consistent snapshot of the database (`snapshot`: the
//! SQLite online backup API, or `pg_dump -Fc`) and a manifest, tarred,
//! zstd-compressed and encrypted to the system's age key (`key`), stored on
//! a system-level target under `_cairn/system/` with the usual `.sha256`
//! and `.manifest.json` sidecars. The scheduler records a slot of
//! `system_backup.schedule` once (the unique `scheduled_for`); a worker
//! claims it like a backup, writes it and prunes by
//! `system_backup.retention`. `restore` rebuilds a database from one,
//! offline. The master key is never in a self-backup.

pub mod key;
pub mod restore;
pub mod snapshot;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use cairn_entity::enums::{DatabaseEngine, SystemBackupStatus, Trigger};
use cairn_entity::{backup_target, system_backup};

use crate::error::{is_unique_violation, Error, Result, Validator};
use crate::runs::schedule::JobSchedule;
use crate::Cairn;

/// Where self-backups live on their target. Organization slugs never start
/// with `_`, so nothing of a tenant's is ever under it.
pub const PREFIX: &str = "_cairn/system/";

/// The format of the manifest of a self-backup.
pub const SYSTEM_FORMAT_VERSION: u32 = 1;

/// What a self-backup's manifest says its content is.
pub const MANIFEST_KIND: &str = "cairn_system";

/// The manifest's file name inside the archive.
pub const MANIFEST_FILE: &str = "system-manifest.json";

/// A scheduled slot fires while it is at most this old: a scheduler down
/// at 01:30 still backs up when it comes back within the hour.
const STARTING_DEADLINE: chrono::Duration = chrono::Duration::hours(1);

/// The manifest of a self-backup: inside the archive (without the stored
/// size and checksum) and beside it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SystemManifest {
    /// Always `cairn_system`.
    pub kind: String,
    pub format_version: u32,
    pub cairn_version: String,
    pub backup_id: Uuid,
    pub engine: DatabaseEngine,
    /// The database file inside the archive: `cairn.sqlite3` or
    /// `cairn.pgdump`.
    pub database_file: String,
    pub database_bytes: u64,
    /// How many migrations the database had applied.
    pub migration_count: usize,
    /// Their names, oldest first: a Cairn that does not know one of them
    /// refuses to restore the backup.
    pub migrations: Vec<String>,
    pub created_at: DateTime<Utc>,
    /// The age public key the archive is encrypted to.
    pub recipient: String,
    /// Beside the archive only: the archive as stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// `GET /api/v1/system/backups` items.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SystemBackupView {
    pub id: Uuid,
    pub status: SystemBackupStatus,
    pub trigger: Trigger,
    pub engine: DatabaseEngine,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub target_id: Option<Uuid>,
    pub target_name: String,
    /// The archive's key on the target.
    pub path: Option<String>,
    pub size: Option<i64>,
    pub sha256: Option<String>,
    #[schema(value_type = Option<SystemManifest>)]
    pub manifest: Option<serde_json::Value>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<system_backup::Model> for SystemBackupView {
    fn from(model: system_backup::Model) -> SystemBackupView {
        SystemBackupView {
            id: model.id,
            status: model.status,
            trigger: model.trigger,
            engine: model.engine,
            scheduled_for: model.scheduled_for,
            target_id: model.target_id,
            target_name: model.target_name,
            path: model.storage_path,
            size: model.size,
            sha256: model.sha256,
            manifest: model.manifest,
            error_code: model.error_code,
            error_message: model.error_message,
            attempts: model.attempt,
            created_at: model.created_at,
            started_at: model.started_at,
            finished_at: model.finished_at,
        }
    }
}

#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SystemBackupPage {
    pub items: Vec<SystemBackupView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// The engine of the configured database.
pub fn engine(cairn: &Cairn) -> DatabaseEngine {
    match cairn.db.get_database_backend() {
        sea_orm::DbBackend::Postgres => DatabaseEngine::Postgresql,
        _ => DatabaseEngine::Sqlite,
    }
}

/// Self-backups, newest first.
pub async fn list(cairn: &Cairn, query: &crate::pages::PageQuery) -> Result<SystemBackupPage> {
    let mut v = Validator::new();
    let limit = crate::history::page_limit(&mut v, query.limit.as_deref());
    let cursor = crate::history::parse_uuid(&mut v, "cursor", query.cursor.as_deref());
    v.finish()?;
    let (rows, next_cursor) = crate::history::newest_page(
        &cairn.read,
        system_backup::Entity::find(),
        system_backup::Column::Id,
        cursor,
        limit,
        |row| row.id,
    )
    .await?;
    Ok(SystemBackupPage {
        items: rows.into_iter().map(SystemBackupView::from).collect(),
        next_cursor,
    })
}

/// The system-level target self-backups go to: `system_backup.target` (an
/// id or a name), else "System default".
pub async fn target(cairn: &Cairn) -> Result<backup_target::Model> {
    let wanted = cairn
        .config
        .system_backup
        .target
        .clone()
        .unwrap_or_else(|| crate::targets::SYSTEM_DEFAULT_NAME.to_owned());
    let mut query =
        backup_target::Entity::find().filter(backup_target::Column::OrganizationId.is_null());
    query = match Uuid::parse_str(&wanted) {
        Ok(id) => query.filter(backup_target::Column::Id.eq(id)),
        Err(_) => query.filter(backup_target::Column::Name.eq(wanted.as_str())),
    };
    query.one(&cairn.db).await?.ok_or_else(|| Error::Conflict {
        field: None,
        message: format!(
            "no system-level target \"{wanted}\" for self-backups: configure `backup:` or set \
             `system_backup.target` to a system-level target"
        ),
    })
}

/// Records a pending self-backup; `409` while another is pending or
/// running.
pub async fn request(cairn: &Cairn, now: DateTime<Utc>) -> Result<SystemBackupView> {
    let target = target(cairn).await?;
    match insert(cairn, &target, Trigger::Manual, None, now).await {
        Ok(model) => {
            cairn.work_recorded().await;
            Ok(model.into())
        }
        Err(error) if is_unique_violation(&error) => Err(Error::Conflict {
            field: None,
            message: "a self-backup is already pending or running".into(),
        }),
        Err(error) => Err(error.into()),
    }
}

async fn insert(
    cairn: &Cairn,
    target: &backup_target::Model,
    trigger: Trigger,
    scheduled_for: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> std::result::Result<system_backup::Model, sea_orm::DbErr> {
    system_backup::ActiveModel {
        id: Set(Uuid::now_v7()),
        status: Set(SystemBackupStatus::Pending),
        trigger: Set(trigger),
        engine: Set(engine(cairn)),
        scheduled_for: Set(scheduled_for),
        target_id: Set(Some(target.id)),
        target_name: Set(target.name.clone()),
        storage_path: Set(None),
        size: Set(None),
        sha256: Set(None),
        manifest: Set(None),
        error_code: Set(None),
        error_message: Set(None),
        attempt: Set(0),
        lease_owner: Set(None),
        lease_expires_at: Set(None),
        created_at: Set(now),
        started_at: Set(None),
        finished_at: Set(None),
    }
    .insert(&cairn.db)
    .await
}

/// The slot of `system_backup.schedule` due at `now`: the newest one within
/// the starting deadline. `None` when self-backups are off.
pub fn due_slot(cairn: &Cairn, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let config = &cairn.config.system_backup;
    if !config.enabled {
        return None;
    }
    newest_slot(&config.schedule, now)
}

/// The newest slot of the UTC cron `expression` at most an hour before
/// `now` (a process down at the slot still does its work when it comes
/// back within the hour).
pub fn newest_slot(expression: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    // Validated when the configuration was loaded.
    let schedule = JobSchedule::parse(expression, "UTC").ok()?;
    schedule
        .between(now - STARTING_DEADLINE, now, usize::MAX)
        .pop()
}

/// Records the self-backup of `slot` unless it was recorded already (by
/// this or another replica) or one is still pending or running; returns the
/// new record's id.
pub async fn fire(cairn: &Cairn, slot: DateTime<Utc>, now: DateTime<Utc>) -> Result<Option<Uuid>> {
    let recorded = system_backup::Entity::find()
        .filter(system_backup::Column::ScheduledFor.eq(slot))
        .one(&cairn.db)
        .await?;
    if recorded.is_some() {
        return Ok(None);
    }
    let target = match target(cairn).await {
        Ok(target) => target,
        Err(Error::Conflict { message, .. }) => {
            tracing::warn!("self-backup slot {slot} not recorded: {message}");
            return Ok(None);
        }
        Err(error) => return Err(error),
    };
    match insert(cairn, &target, Trigger::Schedule, Some(slot), now).await {
        Ok(model) => Ok(Some(model.id)),
        // Another replica recorded the slot, or a self-backup is running
        // (the slot is tried again at the next tick, within its deadline).
        Err(error) if is_unique_violation(&error) => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// The successful self-backups retention prunes now, oldest first. The
/// newest is always kept.
pub async fn prunable(cairn: &Cairn) -> Result<Vec<system_backup::Model>> {
    let stored = system_backup::Entity::find()
        .filter(system_backup::Column::Status.eq(SystemBackupStatus::Success))
        .order_by_asc(system_backup::Column::Id)
        .all(&cairn.db)
        .await?;
    let times: Vec<DateTime<Utc>> = stored.iter().map(|b| b.created_at).collect();
    let policy = cairn.config.system_backup.retention.policy();
    let decisions = crate::runs::retention::apply(&policy, &times);
    Ok(stored
        .into_iter()
        .zip(decisions)
        .filter(|(_, decision)| !decision.keep)
        .map(|(model, _)| model)
        .collect())
}

/// The archive's key for a self-backup taken at `taken_at`.
pub fn archive_path(taken_at: DateTime<Utc>) -> String {
    format!(
        "{PREFIX}{}",
        crate::format::names::archive_file_name(taken_at, "tar.zst", true)
    )
}

/// The names of the migrations `db` has applied, oldest first.
pub async fn applied_migrations(db: &impl ConnectionTrait) -> Result<Vec<String>> {
    let rows = db
        .query_all(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT version FROM seaql_migrations ORDER BY version",
        ))
        .await?;
    rows.iter()
        .map(|row| row.try_get::<String>("", "version").map_err(Error::from))
        .collect()
}

/// Why this binary cannot restore a database with `applied` migrations
/// (written by Cairn `made_by`): one it does not know was made by a newer
/// Cairn.
pub fn newer_schema(applied: &[String], made_by: &str) -> Option<String> {
    use cairn_migration::MigratorTrait;
    let known: Vec<String> = cairn_migration::Migrator::migrations()
        .iter()
        .map(|m| m.name().to_owned())
        .collect();
    let unknown: Vec<&String> = applied.iter().filter(|m| !known.contains(m)).collect();
    if unknown.is_empty() {
        return None;
    }
    Some(format!(
        "the backup was made by a newer Cairn: its database has {} migration(s) this binary does \
         not know ({}); restore it with Cairn {made_by} or newer",
        unknown.len(),
        unknown
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    ))
}
