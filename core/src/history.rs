//! Backup history: one record per volume per run, newest first, with
//! cursor pagination (the cursor is the id of the last record of a page;
//! ids are UUID v7, so id order is creation order).

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use cairn_entity::backup;
use cairn_entity::enums::{BackupStatus, Trigger, VolumeKind};

use crate::error::{Error, Result, Validator};
use crate::failure::FailureCode;
use crate::format::manifest::Manifest;
use crate::format::names::Sidecar;
use crate::Cairn;

pub const DEFAULT_PAGE: u64 = 50;
pub const MAX_PAGE: u64 = 200;

/// Query parameters of the history listing. Values arrive as text and are
/// checked here so that each bad one is named.
#[derive(Clone, Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Only backups of this job.
    #[param(value_type = Option<Uuid>)]
    pub job_id: Option<String>,
    /// Only backups of this app.
    #[param(value_type = Option<Uuid>)]
    pub app_id: Option<String>,
    /// Only backups in this state.
    #[param(value_type = Option<BackupStatus>)]
    pub status: Option<String>,
    /// Only backups created at or after this time (RFC 3339).
    #[param(value_type = Option<DateTime<Utc>>)]
    pub from: Option<String>,
    /// Only backups created before this time (RFC 3339).
    #[param(value_type = Option<DateTime<Utc>>)]
    pub to: Option<String>,
    /// Page size, 1–200 (default 50).
    #[param(value_type = Option<u64>)]
    pub limit: Option<String>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

/// One log line of a backup.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct LogLine {
    pub at: DateTime<Utc>,
    pub level: String,
    pub message: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupView {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub run_id: Option<Uuid>,
    pub job_id: Option<Uuid>,
    pub app_id: Option<Uuid>,
    pub target_id: Option<Uuid>,
    pub app_name: String,
    pub volume_name: String,
    pub status: BackupStatus,
    /// `manual`, `schedule` or `safety`.
    pub trigger: Trigger,
    /// `generic` (a tar archive) or `postgres` (a pg_dump).
    pub kind: Option<VolumeKind>,
    /// Bytes stored, once the archive is complete.
    pub archive_size: Option<i64>,
    pub storage_path: Option<String>,
    pub sha256: Option<String>,
    /// Why it failed (see the table of codes).
    pub error_code: Option<FailureCode>,
    pub error_message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Its content shrank sharply against the previous backup of its
    /// series (`suspiciousReason` says how): it does not count toward
    /// retention until an admin accepts it (`POST …/accept`).
    pub suspicious: bool,
    pub suspicious_reason: Option<String>,
    pub accepted_at: Option<DateTime<Utc>>,
    /// Its copies on the job's copy targets, in the order they were made.
    pub copies: Vec<CopyView>,
}

/// A backup's copy on a copy target.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CopyView {
    /// `null` once the target was deleted.
    pub target_id: Option<Uuid>,
    pub target_name: String,
    pub status: cairn_entity::enums::CopyStatus,
    /// The archive's path on the copy target.
    pub path: Option<String>,
    /// SHA-256 of what the copy target stored (once `success`).
    pub sha256: Option<String>,
    pub size: Option<i64>,
    /// Attempts made, the one beside the backup included.
    pub attempts: u32,
    /// Why the last attempt failed.
    pub error: Option<CopyError>,
    /// When a `pending` copy is tried next.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A copy's failure: its code and message.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CopyError {
    pub code: FailureCode,
    pub message: String,
}

fn copy_view(model: cairn_entity::backup_copy::Model) -> CopyView {
    use cairn_entity::enums::CopyStatus;
    CopyView {
        target_id: model.target_id,
        target_name: model.target_name,
        status: model.status,
        path: model.storage_path,
        sha256: model.sha256,
        size: model.size,
        attempts: model.attempt.max(0) as u32,
        error: model.error_code.map(|code| CopyError {
            code: FailureCode::from_stored(&code),
            message: model.error_message.unwrap_or_default(),
        }),
        next_attempt_at: (model.status == CopyStatus::Pending).then_some(model.next_attempt_at),
        finished_at: model.finished_at,
    }
}

/// The copies of `backup_ids`, by backup.
async fn copies_of(
    db: &impl ConnectionTrait,
    backup_ids: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, Vec<CopyView>>> {
    use cairn_entity::backup_copy;
    let mut by_backup: std::collections::HashMap<Uuid, Vec<CopyView>> = Default::default();
    if backup_ids.is_empty() {
        return Ok(by_backup);
    }
    let rows = backup_copy::Entity::find()
        .filter(backup_copy::Column::BackupId.is_in(backup_ids.iter().copied()))
        .order_by_asc(backup_copy::Column::Id)
        .all(db)
        .await?;
    for row in rows {
        by_backup
            .entry(row.backup_id)
            .or_default()
            .push(copy_view(row));
    }
    Ok(by_backup)
}

/// A backup with its timestamped log.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupDetailView {
    #[serde(flatten)]
    pub backup: BackupView,
    pub log: Vec<LogLine>,
    /// The manifest stored beside the archive (`….manifest.json`), once
    /// the backup succeeded: Cairn and format version, kind, source, slot,
    /// compression, encryption recipients, sizes, counts or PostgreSQL
    /// version, SHA-256, start and finish.
    #[schema(value_type = Option<Object>)]
    pub manifest: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryPage {
    pub items: Vec<BackupView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// The columns of a backup that its view shows: a page of history reads
/// these, never the log, the manifest or the lease.
#[derive(Clone, Debug, sea_orm::DerivePartialModel, sea_orm::FromQueryResult)]
#[sea_orm(entity = "backup::Entity")]
struct BackupRow {
    id: Uuid,
    organization_id: Uuid,
    run_id: Option<Uuid>,
    job_id: Option<Uuid>,
    app_id: Option<Uuid>,
    target_id: Option<Uuid>,
    app_name: String,
    volume_name: String,
    status: BackupStatus,
    trigger: cairn_entity::enums::Trigger,
    kind: Option<cairn_entity::enums::VolumeKind>,
    archive_size: Option<i64>,
    storage_path: Option<String>,
    sha256: Option<String>,
    error_code: Option<String>,
    error_message: Option<String>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    suspicious: bool,
    suspicious_reason: Option<String>,
    accepted_at: Option<DateTime<Utc>>,
}

fn view(row: BackupRow, copies: Vec<CopyView>) -> BackupView {
    BackupView {
        id: row.id,
        organization_id: row.organization_id,
        run_id: row.run_id,
        job_id: row.job_id,
        app_id: row.app_id,
        target_id: row.target_id,
        app_name: row.app_name,
        volume_name: row.volume_name,
        status: row.status,
        trigger: row.trigger,
        kind: row.kind,
        archive_size: row.archive_size,
        storage_path: row.storage_path,
        sha256: row.sha256,
        error_code: row.error_code.as_deref().map(FailureCode::from_stored),
        error_message: row.error_message,
        created_at: row.created_at,
        started_at: row.started_at,
        finished_at: row.finished_at,
        suspicious: row.suspicious,
        suspicious_reason: row.suspicious_reason,
        accepted_at: row.accepted_at,
        copies,
    }
}

/// What a backup's manifest says it holds: files (tar archives only) and
/// bytes of content (a dump's size).
fn content_of(manifest: &Manifest) -> (Option<u64>, Option<u64>) {
    (manifest.file_count(), Some(manifest.content_bytes()))
}

/// Why a backup about to succeed looks like it lost its volume's content:
/// its files or bytes fell below `fraction` of the previous counted backup
/// of its series (same job, app and volume; not a safety backup; not itself
/// suspicious unless accepted). `None` when it looks normal, when it is the
/// first of its series, or when the check is off (`fraction` 0).
pub async fn shrink_reason(
    db: &impl ConnectionTrait,
    model: &backup::Model,
    manifest: &Manifest,
    fraction: f64,
) -> Result<Option<String>> {
    if fraction <= 0.0 || model.trigger == cairn_entity::enums::Trigger::Safety {
        return Ok(None);
    }
    let Some(job_id) = model.job_id else {
        return Ok(None);
    };
    let previous = backup::Entity::find()
        .filter(backup::Column::JobId.eq(job_id))
        .filter(backup::Column::AppName.eq(&model.app_name))
        .filter(backup::Column::VolumeName.eq(&model.volume_name))
        .filter(backup::Column::Status.eq(BackupStatus::Success))
        .filter(backup::Column::Trigger.ne(cairn_entity::enums::Trigger::Safety))
        .filter(backup::Column::Id.lt(model.id))
        .filter(counted())
        .order_by_desc(backup::Column::Id)
        .one(db)
        .await?;
    let Some(previous) = previous else {
        return Ok(None);
    };
    // A previous backup without a manifest Cairn can read says nothing to
    // compare with.
    let Some(previous_manifest) = previous
        .manifest
        .as_ref()
        .and_then(|m| Manifest::from_value(m).ok())
    else {
        return Ok(None);
    };
    let (files, bytes) = content_of(manifest);
    let (previous_files, previous_bytes) = content_of(&previous_manifest);
    let shrank = |now: Option<u64>, before: Option<u64>| match (now, before) {
        (Some(now), Some(before)) if before > 0 => (now as f64) < fraction * before as f64,
        _ => false,
    };
    let percent = (fraction * 100.0).round();
    let reason = if shrank(files, previous_files) {
        format!(
            "{} files where the previous backup {} had {} (below {percent}%)",
            files.unwrap_or(0),
            previous.id,
            previous_files.unwrap_or(0)
        )
    } else if shrank(bytes, previous_bytes) {
        format!(
            "{} bytes of content where the previous backup {} had {} (below {percent}%)",
            bytes.unwrap_or(0),
            previous.id,
            previous_bytes.unwrap_or(0)
        )
    } else {
        return Ok(None);
    };
    Ok(Some(reason))
}

/// One of the organization's backups; another organization's is not found.
async fn find_model(
    db: &impl ConnectionTrait,
    organization_id: Uuid,
    id: Uuid,
) -> Result<backup::Model> {
    backup::Entity::find_by_id(id)
        .filter(backup::Column::OrganizationId.eq(organization_id))
        .one(db)
        .await?
        .ok_or(Error::NotFound("backup"))
}

/// An `info` line of a backup's log.
pub fn log_line(at: DateTime<Utc>, message: impl Into<String>) -> LogLine {
    LogLine {
        at,
        level: "info".into(),
        message: message.into(),
    }
}

/// Appends lines to a backup's log (one no worker holds any more: a
/// worker's attempt keeps its own log and writes it fenced).
pub async fn append_log(db: &impl ConnectionTrait, id: Uuid, lines: Vec<LogLine>) -> Result<()> {
    let Some(model) = backup::Entity::find_by_id(id).one(db).await? else {
        return Ok(());
    };
    let mut log: Vec<LogLine> = serde_json::from_value(model.log).unwrap_or_default();
    log.extend(lines);
    backup::Entity::update_many()
        .col_expr(
            backup::Column::Log,
            sea_orm::sea_query::Expr::value(
                serde_json::to_value(log).map_err(anyhow::Error::from)?,
            ),
        )
        .filter(backup::Column::Id.eq(id))
        .exec(db)
        .await?;
    Ok(())
}

/// The objects of a stored archive: the archive first, then its sidecars.
pub fn objects_of(archive: &str) -> Vec<String> {
    std::iter::once(archive.to_owned())
        .chain(Sidecar::ALL.map(|sidecar| sidecar.of(archive)))
        .collect()
}

/// Deletes what a backup stored: the archive first (when that fails,
/// nothing changed), then its sidecars (a failure there is logged: the
/// archive is gone either way).
pub async fn delete_stored(cairn: &Cairn, model: &backup::Model) -> Result<()> {
    use crate::storage::{ObjectKey, Purpose};
    use cairn_entity::backup_target;
    let (Some(path), Some(target_id)) = (&model.storage_path, model.target_id) else {
        return Ok(());
    };
    let target = backup_target::Entity::find_by_id(target_id)
        .one(&cairn.db)
        .await?
        .ok_or_else(|| Error::Upstream("the backup's target no longer exists".into()))?;
    delete_copies(cairn, model).await?;
    let storage = crate::storage::open(cairn, &target, Purpose::Transfer)?;
    let mut objects = objects_of(path).into_iter();
    if let Some(archive) = objects.next() {
        let key = ObjectKey::parse(&archive).map_err(anyhow::Error::from)?;
        storage
            .delete(&key)
            .await
            .map_err(|e| Error::Upstream(format!("deleting the archive: {e}")))?;
    }
    for sidecar in objects {
        let key = ObjectKey::parse(&sidecar).map_err(anyhow::Error::from)?;
        if let Err(error) = storage.delete(&key).await {
            tracing::warn!(backup_id = %model.id, key = %sidecar, "deleting a sidecar failed: {error}");
        }
    }
    Ok(())
}

/// Deletes a backup's copies on every copy target (archive first, then
/// sidecars) and marks them `pruned`. A copy whose archive cannot be
/// deleted stops it: nothing of the backup is marked, and the next prune
/// tries again.
async fn delete_copies(cairn: &Cairn, model: &backup::Model) -> Result<()> {
    use crate::storage::{ObjectKey, Purpose};
    use cairn_entity::enums::CopyStatus;
    use cairn_entity::{backup_copy, backup_target};
    let copies = backup_copy::Entity::find()
        .filter(backup_copy::Column::BackupId.eq(model.id))
        .filter(backup_copy::Column::Status.ne(CopyStatus::Pruned))
        .all(&cairn.db)
        .await?;
    for copy in copies {
        let (Some(path), Some(target_id)) = (&copy.storage_path, copy.target_id) else {
            continue;
        };
        if let Some(target) = backup_target::Entity::find_by_id(target_id)
            .one(&cairn.db)
            .await?
        {
            let storage = crate::storage::open(cairn, &target, Purpose::Transfer)?;
            for (i, object) in objects_of(path).into_iter().enumerate() {
                let key = ObjectKey::parse(&object).map_err(anyhow::Error::from)?;
                match storage.delete(&key).await {
                    Ok(()) => {}
                    Err(error) if i == 0 => {
                        return Err(Error::Upstream(format!(
                            "deleting the copy on target '{}': {error}",
                            copy.target_name
                        )))
                    }
                    Err(error) => {
                        tracing::warn!(backup_id = %model.id, key = %object, "deleting a sidecar of a copy failed: {error}");
                    }
                }
            }
        }
        backup_copy::Entity::update_many()
            .set(backup_copy::ActiveModel {
                status: sea_orm::ActiveValue::Set(CopyStatus::Pruned),
                lease_owner: sea_orm::ActiveValue::Set(None),
                lease_expires_at: sea_orm::ActiveValue::Set(None),
                ..Default::default()
            })
            .filter(backup_copy::Column::Id.eq(copy.id))
            .exec(&cairn.db)
            .await?;
    }
    Ok(())
}

/// The backups among `ids` that a pending or running restore (or dry run)
/// is about to read, or a download may still be reading at `now`.
pub async fn being_read(
    db: &impl ConnectionTrait,
    ids: Vec<Uuid>,
    now: DateTime<Utc>,
) -> Result<std::collections::HashSet<Uuid>> {
    use cairn_entity::restore;
    // Both sets are small (active restores, downloads of the last hour);
    // they are read whole and intersected here, so a long history never
    // turns into a huge `IN` list.
    let downloading: Vec<Uuid> = backup::Entity::find()
        .select_only()
        .column(backup::Column::Id)
        .filter(backup::Column::ReadUntil.gt(now))
        .into_tuple()
        .all(db)
        .await?;
    let restoring: Vec<Uuid> = restore::Entity::find()
        .select_only()
        .column(restore::Column::BackupId)
        .filter(restore::Column::Status.is_in([
            cairn_entity::enums::RestoreStatus::Pending,
            cairn_entity::enums::RestoreStatus::Running,
        ]))
        .into_tuple()
        .all(db)
        .await?;
    let wanted: std::collections::HashSet<Uuid> = ids.into_iter().collect();
    Ok(downloading
        .into_iter()
        .chain(restoring)
        .filter(|id| wanted.contains(id))
        .collect())
}

/// The condition of a backup that counts as a real copy: not suspicious,
/// or accepted by an admin.
pub fn counted() -> sea_orm::Condition {
    sea_orm::Condition::any()
        .add(backup::Column::Suspicious.eq(false))
        .add(backup::Column::AcceptedAt.is_not_null())
}

/// `DELETE …/history/{backupId}` (admin): deletes a successful backup's
/// archive and sidecars, then marks the record `deleted` (it stays in
/// history). Refused (409) while a restore reads it, and for the newest
/// successful backup of its series unless `force`: that may be the only
/// copy of the volume's data.
pub async fn delete(
    cairn: &Cairn,
    organization_id: Uuid,
    id: Uuid,
    force: bool,
    now: DateTime<Utc>,
) -> Result<BackupDetailView> {
    let model = find_model(&cairn.db, organization_id, id).await?;
    if model.status != BackupStatus::Success {
        return Err(Error::Conflict {
            field: None,
            message: format!(
                "only a successful backup's archive can be deleted; this one is {}",
                model.status
            ),
        });
    }
    if being_read(&cairn.db, vec![id], now).await?.contains(&id) {
        return Err(Error::Conflict {
            field: None,
            message: "a restore or a download of this backup may be reading it; wait for it to end"
                .into(),
        });
    }
    let newer = backup::Entity::find()
        .filter(backup::Column::OrganizationId.eq(organization_id))
        .filter(backup::Column::AppName.eq(&model.app_name))
        .filter(backup::Column::VolumeName.eq(&model.volume_name))
        .filter(match model.job_id {
            Some(job_id) => backup::Column::JobId.eq(job_id),
            None => backup::Column::JobId.is_null(),
        })
        .filter(backup::Column::Status.eq(BackupStatus::Success))
        .filter(backup::Column::Id.gt(id))
        .filter(counted())
        .one(&cairn.db)
        .await?;
    if newer.is_none() && !force {
        return Err(Error::conflict(
            "force",
            "this is the newest successful backup of its series; add ?force=true to delete it anyway",
        ));
    }
    delete_stored(cairn, &model).await?;
    let marked = backup::Entity::update_many()
        .col_expr(
            backup::Column::Status,
            sea_orm::sea_query::Expr::value(BackupStatus::Deleted),
        )
        .filter(backup::Column::Id.eq(id))
        .filter(backup::Column::Status.eq(BackupStatus::Success))
        .exec(&cairn.db)
        .await?;
    if marked.rows_affected == 1 {
        append_log(
            &cairn.db,
            id,
            vec![log_line(
                now,
                "deleted by an admin: the archive and its sidecars were removed",
            )],
        )
        .await?;
    }
    get(cairn, organization_id, id).await
}

/// Accepts a suspicious backup as real (admin): from now on it counts
/// toward retention like any other. `409` for a backup that is not
/// suspicious or was accepted already.
pub async fn accept(
    cairn: &Cairn,
    organization_id: Uuid,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<BackupDetailView> {
    let model = find_model(&cairn.db, organization_id, id).await?;
    if !model.suspicious || model.accepted_at.is_some() {
        return Err(Error::Conflict {
            field: None,
            message: if model.suspicious {
                "this backup was accepted already".into()
            } else {
                "this backup is not suspicious: there is nothing to accept".into()
            },
        });
    }
    let accepted = backup::Entity::update_many()
        .col_expr(
            backup::Column::AcceptedAt,
            sea_orm::sea_query::Expr::value(now),
        )
        .filter(backup::Column::Id.eq(id))
        .filter(backup::Column::AcceptedAt.is_null())
        .exec(&cairn.db)
        .await?;
    if accepted.rows_affected == 1 {
        append_log(
            &cairn.db,
            id,
            vec![log_line(
                now,
                "accepted by an admin: it counts toward retention from now on",
            )],
        )
        .await?;
    }
    get(cairn, organization_id, id).await
}

/// A page size from the query (`limit`): 1 to [`MAX_PAGE`], default
/// [`DEFAULT_PAGE`]; anything else is recorded as an error of `limit`.
pub(crate) fn page_limit(v: &mut Validator, text: Option<&str>) -> u64 {
    match text {
        None => DEFAULT_PAGE,
        Some(text) => match text.parse::<u64>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                v.add(
                    "limit",
                    format!("must be a whole number from 1 to {MAX_PAGE}"),
                );
                DEFAULT_PAGE
            }
        },
    }
}

/// One page of `select`, newest id first: the rows older than `cursor` (an
/// id), at most `limit` of them, and the cursor of the next page when there
/// is one.
pub(crate) async fn newest_page<E: sea_orm::EntityTrait>(
    db: &impl ConnectionTrait,
    select: sea_orm::Select<E>,
    id: E::Column,
    cursor: Option<Uuid>,
    limit: u64,
    id_of: impl Fn(&E::Model) -> Uuid,
) -> Result<(Vec<E::Model>, Option<String>)> {
    let rows = page_select(select, id, cursor, limit).all(db).await?;
    Ok(cut_page(rows, limit, id_of))
}

/// The query of [`newest_page`], for a caller that reads only some columns.
pub(crate) fn page_select<E: sea_orm::EntityTrait>(
    select: sea_orm::Select<E>,
    id: E::Column,
    cursor: Option<Uuid>,
    limit: u64,
) -> sea_orm::Select<E> {
    let select = match cursor {
        Some(cursor) => select.filter(id.lt(cursor)),
        None => select,
    };
    // One row more than the page tells whether another page follows.
    select.order_by_desc(id).limit(limit + 1)
}

/// The rows of [`page_select`] cut to the page, with the next page's cursor.
pub(crate) fn cut_page<M>(
    mut rows: Vec<M>,
    limit: u64,
    id_of: impl Fn(&M) -> Uuid,
) -> (Vec<M>, Option<String>) {
    let next_cursor = if rows.len() as u64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|last| id_of(last).to_string())
    } else {
        None
    };
    (rows, next_cursor)
}

pub(crate) fn parse_uuid(v: &mut Validator, field: &str, value: Option<&str>) -> Option<Uuid> {
    let value = value?;
    match Uuid::parse_str(value) {
        Ok(id) => Some(id),
        Err(_) => {
            v.add(field, "is not a valid id");
            None
        }
    }
}

fn parse_time(v: &mut Validator, field: &str, value: Option<&str>) -> Option<DateTime<Utc>> {
    let value = value?;
    match DateTime::parse_from_rfc3339(value) {
        Ok(time) => Some(time.with_timezone(&Utc)),
        Err(_) => {
            v.add(
                field,
                "is not an RFC 3339 timestamp (e.g. 2024-01-15T02:00:00Z)",
            );
            None
        }
    }
}

/// One page of an organization's backups, newest first.
pub async fn list(
    cairn: &Cairn,
    organization_id: Uuid,
    query: &HistoryQuery,
) -> Result<HistoryPage> {
    let mut v = Validator::new();
    let job_id = parse_uuid(&mut v, "jobId", query.job_id.as_deref());
    let app_id = parse_uuid(&mut v, "appId", query.app_id.as_deref());
    let cursor = parse_uuid(&mut v, "cursor", query.cursor.as_deref());
    let from = parse_time(&mut v, "from", query.from.as_deref());
    let to = parse_time(&mut v, "to", query.to.as_deref());
    let status = query.status.as_deref().and_then(|s| {
        let parsed = BackupStatus::parse(s);
        v.check(
            parsed.is_some(),
            "status",
            "must be one of pending, running, success, failed, pruned",
        );
        parsed
    });
    let limit = page_limit(&mut v, query.limit.as_deref());
    if let (Some(from), Some(to)) = (from, to) {
        v.check(from < to, "to", "must be later than from");
    }
    v.finish()?;

    let mut select =
        backup::Entity::find().filter(backup::Column::OrganizationId.eq(organization_id));
    if let Some(job_id) = job_id {
        select = select.filter(backup::Column::JobId.eq(job_id));
    }
    if let Some(app_id) = app_id {
        select = select.filter(backup::Column::AppId.eq(app_id));
    }
    if let Some(status) = status {
        select = select.filter(backup::Column::Status.eq(status.as_str()));
    }
    if let Some(from) = from {
        select = select.filter(backup::Column::CreatedAt.gte(from));
    }
    if let Some(to) = to {
        select = select.filter(backup::Column::CreatedAt.lt(to));
    }
    let page = page_select(select, backup::Column::Id, cursor, limit);
    // A date range is walked in `created_at` order and its ids sorted: the
    // page's ids are picked from the index alone (`(organization_id,
    // created_at, id)`), then only their rows are read. The other filters'
    // indexes are in id order already.
    let page = if from.is_some() || to.is_some() {
        let ids = page.select_only().column(backup::Column::Id).into_query();
        backup::Entity::find()
            .filter(backup::Column::Id.in_subquery(ids))
            .order_by_desc(backup::Column::Id)
    } else {
        page
    };
    let rows = page
        .into_partial_model::<BackupRow>()
        .all(&cairn.read)
        .await?;
    let (rows, next_cursor) = cut_page(rows, limit, |row| row.id);
    let ids: Vec<Uuid> = rows.iter().map(|row| row.id).collect();
    let mut copies = copies_of(&cairn.read, &ids).await?;
    Ok(HistoryPage {
        items: rows
            .into_iter()
            .map(|row| {
                let copies = copies.remove(&row.id).unwrap_or_default();
                view(row, copies)
            })
            .collect(),
        next_cursor,
    })
}

pub async fn get(cairn: &Cairn, organization_id: Uuid, id: Uuid) -> Result<BackupDetailView> {
    /// A backup's view with its log and manifest (not its lease).
    // `from_query_result`: the nested row is read back under the prefix
    // its columns were selected with (`backup_…`).
    #[derive(sea_orm::DerivePartialModel)]
    #[sea_orm(entity = "backup::Entity", from_query_result)]
    struct DetailRow {
        #[sea_orm(nested)]
        backup: BackupRow,
        log: serde_json::Value,
        manifest: Option<serde_json::Value>,
    }
    let row = backup::Entity::find_by_id(id)
        .filter(backup::Column::OrganizationId.eq(organization_id))
        .into_partial_model::<DetailRow>()
        .one(&cairn.read)
        .await?
        .ok_or(Error::NotFound("backup"))?;
    let log: Vec<LogLine> = serde_json::from_value(row.log).map_err(anyhow::Error::from)?;
    let copies = copies_of(&cairn.read, &[id])
        .await?
        .remove(&id)
        .unwrap_or_default();
    Ok(BackupDetailView {
        backup: view(row.backup, copies),
        log,
        manifest: row.manifest,
    })
}

/// How long a pre-signed download URL stays valid.
pub const DOWNLOAD_URL_VALIDITY: std::time::Duration = std::time::Duration::from_secs(3600);

/// A pre-signed URL that downloads an archive without credentials.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DownloadUrlView {
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

/// How an archive is downloaded.
pub enum Download {
    /// From the storage directly (S3-family targets).
    Presigned(DownloadUrlView),
    /// Through the API (SSH and local targets).
    Stream {
        size: u64,
        file_name: String,
        content_type: &'static str,
        body: crate::storage::ByteStream,
    },
}

/// The content type of an archive, by its name.
fn content_type_of(name: &str) -> &'static str {
    if name.ends_with(".zst") {
        "application/zstd"
    } else if name.ends_with(".gz") {
        "application/gzip"
    } else if name.ends_with(".tar") {
        "application/x-tar"
    } else {
        "application/octet-stream"
    }
}

/// Opens a successful backup's archive for download.
pub async fn download(
    cairn: &Cairn,
    organization_id: Uuid,
    id: Uuid,
    now: DateTime<Utc>,
    target_id: Option<Uuid>,
) -> Result<Download> {
    let model = find_model(&cairn.db, organization_id, id).await?;
    let crate::restores::StoredArchive {
        backup,
        target,
        storage,
        key,
        ..
    } = crate::restores::archive_for(cairn, model, target_id)
        .await?
        .0;
    // Retention keeps the backup while this download may read it: as long
    // as a pre-signed URL is valid (streams are marked the same).
    let read_until =
        now + chrono::Duration::from_std(DOWNLOAD_URL_VALIDITY).map_err(anyhow::Error::from)?;
    backup::Entity::update_many()
        .col_expr(
            backup::Column::ReadUntil,
            sea_orm::sea_query::Expr::value(read_until),
        )
        .filter(backup::Column::Id.eq(backup.id))
        .exec(&cairn.db)
        .await?;
    let path = backup.storage_path.unwrap_or_default();
    let storage_error = |e: crate::storage::StorageError| {
        Error::Upstream(format!("the archive cannot be read from its target: {e}"))
    };
    if let Some(url) = storage
        .presigned_get(&key, DOWNLOAD_URL_VALIDITY)
        .await
        .map_err(storage_error)?
    {
        return Ok(Download::Presigned(DownloadUrlView {
            url: url.to_string(),
            expires_at: now
                + chrono::Duration::from_std(DOWNLOAD_URL_VALIDITY).map_err(anyhow::Error::from)?,
        }));
    }
    // Each streamed download holds a blocking thread while the client
    // reads; a bounded number of them may run at once.
    let permit = cairn
        .download_slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| Error::Busy("too many downloads are in progress; retry shortly".into()))?;
    let (size, body) = storage.get(&key).await.map_err(storage_error)?;
    if let Some(fingerprint) = storage.observed_host_key() {
        crate::targets::record_host_key(cairn, &target, &fingerprint).await?;
    }
    let body: crate::storage::ByteStream = Box::pin(futures::StreamExt::map(body, move |chunk| {
        let _held = &permit;
        chunk
    }));
    let file_name = path.rsplit('/').next().unwrap_or(&path).to_owned();
    Ok(Download::Stream {
        size,
        content_type: content_type_of(&file_name),
        file_name,
        body,
    })
}
