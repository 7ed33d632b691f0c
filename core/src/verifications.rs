//! Verifications: proof that a successful backup restores. A request (on
//! demand, `POST …/history/{backupId}/verify`) records a pending
//! verification; a worker claims it under a lease like a backup or a
//! restore, reads the archive back — or restores it into scratch space —
//! and records every check it ran, with its timings.
//!
//! `read` needs nothing but the target. `restore` needs scratch space for
//! the kind of archive (`verification.scratch_dir` for file backups,
//! `verification.postgres_url` for database backups) and is refused
//! without it, naming the key.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use cairn_entity::enums::{ArchiveKind, BackupStatus, Trigger, VerificationStatus, VerifyMode};
use cairn_entity::{backup, verification};

use crate::error::{Error, Result, Validator};
use crate::failure::FailureCode;
use crate::format::names::ArchiveName;
use crate::history::LogLine;
use crate::restores::{kinds_of, restorable};
use crate::Cairn;

/// `POST …/history/{backupId}/verify`
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerifyRequest {
    pub mode: VerifyMode,
    /// Read the archive from this target: the backup's own or one holding
    /// a successful copy (default: the primary, else a copy that answers).
    #[serde(default)]
    pub target_id: Option<Uuid>,
}

/// One check a verification ran.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Check {
    /// What was checked (`sha256`, `read`, `entries`, `files`, `bytes`, …).
    pub name: String,
    pub ok: bool,
    /// What was found, and what was expected when they differ.
    pub detail: String,
}

/// One table of a database backup restored into scratch: the rows
/// restored and the rows the backup recorded (`null` where the table is
/// missing on that side).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TableCheck {
    /// `schema.table`.
    pub name: String,
    pub rows: Option<u64>,
    pub expected_rows: Option<u64>,
}

/// How long each step took, in milliseconds.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Timings {
    /// Downloading and hashing the archive.
    pub download_ms: Option<i64>,
    /// Reading it back, or restoring it into scratch space.
    pub restore_ms: Option<i64>,
    pub total_ms: Option<i64>,
}

/// A verification.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerificationView {
    pub id: Uuid,
    pub organization_id: Uuid,
    /// The backup verified.
    pub backup_id: Uuid,
    /// The backup's job (`null` once it is deleted).
    pub job_id: Option<Uuid>,
    pub app_id: Option<Uuid>,
    pub app_name: String,
    pub volume_name: String,
    pub mode: VerifyMode,
    pub trigger: Trigger,
    pub status: VerificationStatus,
    /// Every check run, in order; the first that failed ends it.
    pub checks: Vec<Check>,
    /// A PostgreSQL backup verified in `restore` mode: every table
    /// restored or recorded, with both row counts (empty otherwise).
    pub tables: Vec<TableCheck>,
    pub timings: Timings,
    /// Why it failed (see the table of codes).
    pub error_code: Option<FailureCode>,
    pub error_message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A verification with its timestamped log.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerificationDetailView {
    #[serde(flatten)]
    pub verification: VerificationView,
    pub log: Vec<LogLine>,
}

/// Query parameters of the verification listing.
#[derive(Clone, Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct VerificationQuery {
    /// Only verifications of this job's backups.
    #[param(value_type = Option<Uuid>)]
    pub job_id: Option<String>,
    /// Only verifications of this backup.
    #[param(value_type = Option<Uuid>)]
    pub backup_id: Option<String>,
    /// Only verifications in this state.
    #[param(value_type = Option<VerificationStatus>)]
    pub status: Option<String>,
    /// Page size, 1–200 (default 50).
    #[param(value_type = Option<u64>)]
    pub limit: Option<String>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerificationPage {
    pub items: Vec<VerificationView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

pub fn view(model: &verification::Model) -> Result<VerificationView> {
    let checks: Vec<Check> =
        serde_json::from_value(model.checks.clone()).map_err(anyhow::Error::from)?;
    let tables: Vec<TableCheck> = match &model.tables {
        Some(tables) => serde_json::from_value(tables.clone()).map_err(anyhow::Error::from)?,
        None => Vec::new(),
    };
    Ok(VerificationView {
        id: model.id,
        organization_id: model.organization_id,
        backup_id: model.backup_id,
        job_id: model.job_id,
        app_id: model.app_id,
        app_name: model.app_name.clone(),
        volume_name: model.volume_name.clone(),
        mode: model.mode,
        trigger: model.trigger,
        status: model.status,
        checks,
        tables,
        timings: Timings {
            download_ms: model.download_ms,
            restore_ms: model.restore_ms,
            total_ms: model.total_ms,
        },
        error_code: model.error_code.as_deref().map(FailureCode::from_stored),
        error_message: model.error_message.clone(),
        created_at: model.created_at,
        started_at: model.started_at,
        finished_at: model.finished_at,
    })
}

/// Records a pending verification of one of the organization's successful
/// backups:
/// 1. the backup, the organization's own, successful and of an archive
///    format this Cairn reads;
/// 2. the mode: `restore` only where scratch space for its kind is set;
/// 3. the record, `pending`, for a worker to claim.
pub async fn request(
    cairn: &Cairn,
    organization_id: Uuid,
    backup_id: Uuid,
    body: &VerifyRequest,
    now: DateTime<Utc>,
) -> Result<VerificationView> {
    let model = backup::Entity::find_by_id(backup_id)
        .filter(backup::Column::OrganizationId.eq(organization_id))
        .one(&cairn.db)
        .await?
        .ok_or(Error::NotFound("backup"))?;
    if model.status != BackupStatus::Success {
        return Err(Error::Conflict {
            field: None,
            message: format!(
                "the backup is {}; only a successful backup can be verified",
                model.status
            ),
        });
    }
    restorable(&model)?;
    if body.target_id.is_some() {
        crate::restores::archive_for(cairn, model.clone(), body.target_id).await?;
    }
    let archive_kind = model
        .storage_path
        .as_deref()
        .and_then(|path| ArchiveName::parse(path.rsplit('/').next().unwrap_or(path)))
        .map(|name| kinds_of(name).0)
        .ok_or_else(|| anyhow::anyhow!("backup {backup_id} has no archive name Cairn reads"))?;
    let mut v = Validator::new();
    if let Some(reason) = restore_refusal(cairn, body.mode, archive_kind) {
        v.add("mode", reason);
    }
    v.finish()?;
    let mut created = pending(
        &model,
        model.job_id,
        body.mode,
        None,
        format!("{} verification of backup {backup_id} requested", body.mode),
        now,
    );
    created.source_target_id = Set(body.target_id);
    let created = created.insert(&cairn.db).await?;
    cairn.work_recorded().await;
    view(&created)
}

/// Why `mode` cannot verify an archive of `kind` on this server, if it
/// cannot: a restore needs scratch space of the archive's kind.
pub fn restore_refusal(cairn: &Cairn, mode: VerifyMode, kind: ArchiveKind) -> Option<String> {
    match mode {
        VerifyMode::Read => None,
        VerifyMode::Restore => scratch_missing(&cairn.config, kind),
    }
}

/// Why a `restore`-mode verification of an archive of `kind` has no
/// scratch space on this server, if it has none.
pub fn scratch_missing(config: &crate::Config, kind: ArchiveKind) -> Option<String> {
    match kind {
        ArchiveKind::Tar => config.verification.scratch_dir.is_none().then(|| {
            "restore of a file backup needs scratch space, and this server has none \
             (verification.scratch_dir); use read"
                .to_owned()
        }),
        ArchiveKind::PgDump => config.verification.postgres_url.is_none().then(|| {
            "restore of a PostgreSQL backup needs a scratch database server, and this server \
             has none (verification.postgres_url); use read (pg_restore --list)"
                .to_owned()
        }),
        ArchiveKind::MysqlDump => config.verification.mysql_url.is_none().then(|| {
            "restore of a MySQL backup needs a scratch database server, and this server has \
             none (verification.mysql_url); use read (the dump read through, its rows counted)"
                .to_owned()
        }),
    }
}

/// A job's latest finished verification, as its view shows it.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastVerificationView {
    pub id: Uuid,
    pub status: VerificationStatus,
    pub backup_id: Uuid,
    pub mode: VerifyMode,
    /// For a `restore`-mode verification, the time the whole restore took:
    /// the recovery time measured.
    pub rto_seconds: Option<f64>,
}

/// What a job's verifications say of it.
#[derive(Clone, Debug, Default)]
pub struct JobHealth {
    /// Seconds since the newest backup that passed a verification ended.
    pub rpo_seconds: Option<i64>,
    /// The total time of the latest successful `restore`-mode
    /// verification, in seconds.
    pub rto_seconds: Option<f64>,
    pub last_verified_at: Option<DateTime<Utc>>,
    pub last_verification: Option<LastVerificationView>,
}

/// The verification health of `job_id` at `now` (see [`jobs_health`]).
pub async fn job_health(
    db: &impl sea_orm::ConnectionTrait,
    job_id: Uuid,
    now: DateTime<Utc>,
) -> Result<JobHealth> {
    Ok(jobs_health(db, &[job_id], now)
        .await?
        .remove(&job_id)
        .unwrap_or_default())
}

/// `count` placeholders for the bound values `first`, `first + 1`, … of a
/// raw statement on `backend` (`$n` on PostgreSQL, `?` on SQLite).
fn placeholders(backend: sea_orm::DbBackend, first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| match backend {
            sea_orm::DbBackend::Postgres => format!("${n}"),
            _ => "?".to_owned(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The verification health of each of `job_ids` at `now`: its latest
/// finished verification, its latest success (and latest successful
/// `restore`), and the age of its newest backup that passed one (still
/// stored: a pruned backup restores nothing). Two statements whatever the
/// number of jobs: bounded `LIMIT 1` walks on the jobs' verification
/// indexes, then the picked verifications by primary key; backup history
/// is never scanned, and a job's older verifications are not read.
pub async fn jobs_health(
    db: &impl sea_orm::ConnectionTrait,
    job_ids: &[Uuid],
    now: DateTime<Utc>,
) -> Result<std::collections::HashMap<Uuid, JobHealth>> {
    use sea_orm::{Statement, Value};
    let mut health: std::collections::HashMap<Uuid, JobHealth> = job_ids
        .iter()
        .map(|id| (*id, JobHealth::default()))
        .collect();
    if job_ids.is_empty() {
        return Ok(health);
    }
    let backend = db.get_database_backend();
    let ids = || job_ids.iter().map(|id| Value::from(*id));
    let (success, failed, restore) = (
        VerificationStatus::Success.as_str(),
        VerificationStatus::Failed.as_str(),
        VerifyMode::Restore.as_str(),
    );
    // Per job, three correlated `LIMIT 1` lookups on the
    // `(job_id, finished_at, id)` index, each walking back from the job's
    // newest verification to the first that matches: its latest finished
    // one, latest success and latest successful restore. On SQLite, which
    // has no statistics, the status is tested through an expression
    // (`CASE … END = 1`) that no index serves, so that it never takes the
    // status index (every verification of that status) instead. PostgreSQL
    // gets the plain test: it knows most verifications match and walks the
    // job's index; behind the expression it would expect almost none to,
    // and read and sort all of the job's verifications instead (twice the
    // time for a page of jobs).
    let latest_of = |condition: &str| {
        let condition = match backend {
            sea_orm::DbBackend::Postgres => condition.to_owned(),
            _ => format!("CASE WHEN {condition} THEN 1 ELSE 0 END = 1"),
        };
        format!(
            "(SELECT x.id FROM verifications x WHERE x.job_id = j.id AND {condition} \
               ORDER BY x.finished_at DESC, x.id DESC LIMIT 1)"
        )
    };
    // Per job, too: its recovery point, the newest stored backup whose
    // latest finished verification succeeded: the job's successful
    // verifications in order of their backup's finish time (the
    // `(job_id, backup_finished_at)` index), tested one by one from the
    // newest until one qualifies, usually the first. On PostgreSQL the
    // inner query is kept apart (`OFFSET 0`) so that the tests run after
    // the ordering and stop at the first match, rather than on every
    // verification of the job first (SQLite walks the index in order
    // either way, and takes no `OFFSET` without `LIMIT`).
    let fence = match backend {
        sea_orm::DbBackend::Postgres => " OFFSET 0",
        _ => "",
    };
    let recovery = format!(
        "(SELECT c.backup_finished_at FROM \
           (SELECT v.id, v.backup_id, v.backup_finished_at FROM verifications v \
             WHERE v.job_id = j.id AND CASE WHEN v.status = '{success}' THEN 1 ELSE 0 END = 1 \
               AND v.backup_finished_at IS NOT NULL \
             ORDER BY v.backup_finished_at DESC{fence}) c \
         WHERE NOT EXISTS (SELECT 1 FROM verifications w WHERE w.backup_id = c.backup_id \
             AND w.status IN ('{success}', '{failed}') AND w.id > c.id) \
           AND EXISTS (SELECT 1 FROM backups b WHERE b.id = c.backup_id \
             AND CASE WHEN b.status = '{}' THEN 1 ELSE 0 END = 1) \
         ORDER BY c.backup_finished_at DESC LIMIT 1)",
        BackupStatus::Success.as_str(),
    );
    let latest = Statement::from_sql_and_values(
        backend,
        format!(
            "SELECT j.id AS job_id, {} AS last_id, {} AS success_id, {} AS restore_id, \
               {recovery} AS recovery_at \
             FROM backup_jobs j WHERE j.id IN ({})",
            latest_of(&format!("x.status IN ('{success}', '{failed}')")),
            latest_of(&format!("x.status = '{success}'")),
            latest_of(&format!("x.status = '{success}' AND x.mode = '{restore}'")),
            placeholders(backend, 1, job_ids.len())
        ),
        ids(),
    );
    // (job, [latest, latest success, latest successful restore])
    let mut picked: Vec<(Uuid, [Option<Uuid>; 3])> = Vec::new();
    for row in db.query_all(latest).await? {
        let job_id: Uuid = row.try_get("", "job_id")?;
        let recovery_at: Option<DateTime<Utc>> = row.try_get("", "recovery_at")?;
        if let (Some(entry), Some(at)) = (health.get_mut(&job_id), recovery_at) {
            entry.rpo_seconds = Some((now - at).num_seconds().max(0));
        }
        picked.push((
            job_id,
            [
                row.try_get("", "last_id")?,
                row.try_get("", "success_id")?,
                row.try_get("", "restore_id")?,
            ],
        ));
    }
    // The picked verifications themselves, by primary key (a second
    // statement rather than a join, which planners may turn inside out).
    let wanted: std::collections::HashSet<Uuid> =
        picked.iter().flat_map(|(_, ids)| *ids).flatten().collect();
    /// What health shows of a verification (not its checks, tables or log).
    #[derive(sea_orm::DerivePartialModel, sea_orm::FromQueryResult)]
    #[sea_orm(entity = "verification::Entity")]
    struct Picked {
        id: Uuid,
        backup_id: Uuid,
        mode: VerifyMode,
        status: VerificationStatus,
        total_ms: Option<i64>,
        finished_at: Option<DateTime<Utc>>,
    }
    let rows: std::collections::HashMap<Uuid, Picked> = if wanted.is_empty() {
        Default::default()
    } else {
        verification::Entity::find()
            .filter(verification::Column::Id.is_in(wanted))
            .into_partial_model::<Picked>()
            .all(db)
            .await?
            .into_iter()
            .map(|v| (v.id, v))
            .collect()
    };
    for (job_id, [last_id, success_id, restore_id]) in picked {
        let Some(entry) = health.get_mut(&job_id) else {
            continue;
        };
        let row = |id: Option<Uuid>| id.and_then(|id| rows.get(&id));
        if let Some(v) = row(last_id) {
            entry.last_verification = Some(LastVerificationView {
                id: v.id,
                status: v.status,
                backup_id: v.backup_id,
                mode: v.mode,
                rto_seconds: (v.mode == VerifyMode::Restore)
                    .then_some(v.total_ms)
                    .flatten()
                    .map(seconds),
            });
        }
        entry.last_verified_at = row(success_id).and_then(|v| v.finished_at);
        entry.rto_seconds = row(restore_id).and_then(|v| v.total_ms).map(seconds);
    }
    Ok(health)
}

/// Milliseconds as seconds.
pub fn seconds(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

/// The backups of `job_id` whose latest finished verification succeeded:
/// the ones proven to restore.
pub async fn verified_good(
    db: &impl sea_orm::ConnectionTrait,
    job_id: Uuid,
) -> Result<std::collections::HashSet<Uuid>> {
    let finished: Vec<(Uuid, VerificationStatus)> = verification::Entity::find()
        .select_only()
        .column(verification::Column::BackupId)
        .column(verification::Column::Status)
        .filter(verification::Column::JobId.eq(job_id))
        .filter(
            verification::Column::Status
                .is_in([VerificationStatus::Success, VerificationStatus::Failed]),
        )
        .order_by_asc(verification::Column::Id)
        .into_tuple()
        .all(db)
        .await?;
    let mut latest = std::collections::HashMap::new();
    for (backup_id, status) in finished {
        latest.insert(backup_id, status);
    }
    Ok(latest
        .into_iter()
        .filter(|(_, status)| *status == VerificationStatus::Success)
        .map(|(backup_id, _)| backup_id)
        .collect())
}

/// A new verification of `backup`, `pending`: on demand (`slot` `None`)
/// or for a verify slot of its job.
fn pending(
    backup: &backup::Model,
    job_id: Option<Uuid>,
    mode: VerifyMode,
    slot: Option<DateTime<Utc>>,
    message: String,
    now: DateTime<Utc>,
) -> verification::ActiveModel {
    verification::ActiveModel {
        id: Set(Uuid::now_v7()),
        organization_id: Set(backup.organization_id),
        backup_id: Set(backup.id),
        backup_finished_at: Set(backup.finished_at),
        job_id: Set(job_id),
        app_id: Set(backup.app_id),
        app_name: Set(backup.app_name.clone()),
        volume_name: Set(backup.volume_name.clone()),
        mode: Set(mode),
        trigger: Set(if slot.is_some() {
            Trigger::Schedule
        } else {
            Trigger::Manual
        }),
        scheduled_for: Set(slot),
        status: Set(VerificationStatus::Pending),
        source_target_id: Set(None),
        checks: Set(serde_json::json!([])),
        tables: Set(None),
        download_ms: Set(None),
        restore_ms: Set(None),
        total_ms: Set(None),
        log: Set(serde_json::json!([{ "at": now, "level": "info", "message": message }])),
        error_code: Set(None),
        error_message: Set(None),
        attempt: Set(0),
        lease_owner: Set(None),
        lease_expires_at: Set(None),
        created_at: Set(now),
        started_at: Set(None),
        finished_at: Set(None),
    }
}

/// Records the verifications of one verify slot of `job`: the newest
/// successful backup of every app and volume of the job (safety backups
/// aside), each `pending` in the job's mode — `read` for a PostgreSQL
/// backup, or where no scratch space fits. The unique `(job_id, backup_id,
/// scheduled_for)` is the fence: a slot another replica recorded adds
/// nothing. Returns how many this call recorded.
pub async fn fire_slot(
    cairn: &Cairn,
    job: &cairn_entity::backup_job::Model,
    slot: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<usize> {
    let newest = backup::Entity::find()
        .filter(backup::Column::JobId.eq(job.id))
        .filter(backup::Column::Status.eq(BackupStatus::Success))
        .filter(backup::Column::Trigger.ne(Trigger::Safety))
        .order_by_asc(backup::Column::AppName)
        .order_by_asc(backup::Column::VolumeName)
        .order_by_desc(backup::Column::Id)
        .all(&cairn.db)
        .await?;
    let mut recorded = 0;
    let mut previous: Option<(String, String)> = None;
    for model in newest {
        let series = (model.app_name.clone(), model.volume_name.clone());
        if previous.as_ref() == Some(&series) {
            continue;
        }
        previous = Some(series);
        let kind = model
            .storage_path
            .as_deref()
            .and_then(|path| ArchiveName::parse(path.rsplit('/').next().unwrap_or(path)))
            .map(|name| kinds_of(name).0);
        let mode = match kind {
            Some(kind) if restore_refusal(cairn, job.verify_mode, kind).is_none() => {
                job.verify_mode
            }
            _ => VerifyMode::Read,
        };
        let message = format!(
            "{mode} verification of backup {} for the verify slot {}{}",
            model.id,
            slot.to_rfc3339(),
            if mode == job.verify_mode {
                ""
            } else {
                " (read: no scratch space fits this archive)"
            }
        );
        let inserted = pending(&model, Some(job.id), mode, Some(slot), message, now)
            .insert(&cairn.db)
            .await;
        match inserted {
            Ok(_) => recorded += 1,
            Err(error) if crate::error::is_unique_violation(&error) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(recorded)
}

/// One page of the organization's verifications, newest first.
pub async fn list(
    cairn: &Cairn,
    organization_id: Uuid,
    query: &VerificationQuery,
) -> Result<VerificationPage> {
    use crate::history::{newest_page, page_limit, parse_uuid};
    let mut v = Validator::new();
    let job_id = parse_uuid(&mut v, "jobId", query.job_id.as_deref());
    let backup_id = parse_uuid(&mut v, "backupId", query.backup_id.as_deref());
    let cursor = parse_uuid(&mut v, "cursor", query.cursor.as_deref());
    let limit = page_limit(&mut v, query.limit.as_deref());
    let status = match query.status.as_deref() {
        None => None,
        Some(text) => {
            let status = VerificationStatus::parse(text);
            if status.is_none() {
                v.add("status", "must be one of pending, running, success, failed");
            }
            status
        }
    };
    v.finish()?;
    let mut select = verification::Entity::find()
        .filter(verification::Column::OrganizationId.eq(organization_id));
    if let Some(job_id) = job_id {
        select = select.filter(verification::Column::JobId.eq(job_id));
    }
    if let Some(backup_id) = backup_id {
        select = select.filter(verification::Column::BackupId.eq(backup_id));
    }
    if let Some(status) = status {
        select = select.filter(verification::Column::Status.eq(status));
    }
    let (rows, next_cursor) = newest_page(
        &cairn.read,
        select,
        verification::Column::Id,
        cursor,
        limit,
        |row| row.id,
    )
    .await?;
    Ok(VerificationPage {
        items: rows.iter().map(view).collect::<Result<_>>()?,
        next_cursor,
    })
}

/// One of the organization's verifications, with its log.
pub async fn get(cairn: &Cairn, organization_id: Uuid, id: Uuid) -> Result<VerificationDetailView> {
    let model = verification::Entity::find_by_id(id)
        .filter(verification::Column::OrganizationId.eq(organization_id))
        .one(&cairn.read)
        .await?
        .ok_or(Error::NotFound("verification"))?;
    let log: Vec<LogLine> =
        serde_json::from_value(model.log.clone()).map_err(anyhow::Error::from)?;
    Ok(VerificationDetailView {
        verification: view(&model)?,
        log,
    })
}
