//! Runs: one firing of a job, made of one backup per persistent volume of
//! every app the job covers. This module creates runs (manual ones here;
//! the scheduler makes scheduled ones the same way), resolves the target a
//! run writes to, and closes a run exactly once when its last backup ends.
//!
//! A job has at most one run with status `running`: a partial unique index
//! enforces it, so two requests racing to start a run cannot both win.
//!
//! Beside it: `schedule` (when a job is due), `locks` (the schedulers'
//! slot locks) and `retention` (which backups of a series are kept).

pub mod locks;
pub mod retention;
pub mod schedule;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, Query};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder, Set, TransactionTrait,
};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use cairn_entity::{app, backup, backup_job, backup_job_app, backup_run, backup_target, volume};

use crate::error::{is_unique_violation, Error, Result};
use crate::notifications::Subject;
use crate::Cairn;
use cairn_entity::enums::{BackupStatus, RunStatus, Trigger};

/// One backup a run created.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunBackupView {
    pub id: Uuid,
    pub app_name: String,
    pub volume_name: String,
    pub status: BackupStatus,
}

/// `202` answer of `POST …/jobs/{jobId}/run`.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunView {
    pub run_id: Uuid,
    pub status: RunStatus,
    /// The target the run writes to.
    pub target_id: Uuid,
    pub backups: Vec<RunBackupView>,
}

/// The target a job writes to: its own, else the organization's default,
/// else any target of the organization (the oldest), else the system-level
/// default, else any system-level target.
pub async fn resolve_target(
    db: &impl ConnectionTrait,
    job: &backup_job::Model,
) -> Result<Option<backup_target::Model>> {
    if let Some(target_id) = job.target_id {
        return Ok(backup_target::Entity::find_by_id(target_id)
            .filter(backup_target::Column::OrganizationId.eq(job.organization_id))
            .one(db)
            .await?);
    }
    resolve_organization_target(db, job.organization_id).await
}

/// The target a job without one of its own writes to: the organization's
/// default, else any of its targets (the oldest), else the system-level
/// default, else any system-level target.
pub async fn resolve_organization_target(
    db: &impl ConnectionTrait,
    organization_id: Uuid,
) -> Result<Option<backup_target::Model>> {
    let organization = backup_target::Entity::find()
        .filter(backup_target::Column::OrganizationId.eq(organization_id))
        .order_by_desc(backup_target::Column::IsDefault)
        .order_by_asc(backup_target::Column::Id)
        .one(db)
        .await?;
    if organization.is_some() {
        return Ok(organization);
    }
    Ok(backup_target::Entity::find()
        .filter(backup_target::Column::OrganizationId.is_null())
        .order_by_desc(backup_target::Column::IsDefault)
        .order_by_asc(backup_target::Column::Id)
        .one(db)
        .await?)
}

/// A persistent volume a run backs up.
struct Planned {
    app: app::Model,
    volume: volume::Model,
}

/// The attached persistent volumes of the job's apps (of `only_app` alone
/// when given).
async fn planned_volumes(
    db: &impl ConnectionTrait,
    job_id: Uuid,
    only_app: Option<Uuid>,
) -> Result<Vec<Planned>> {
    let app_ids: Vec<Uuid> = backup_job_app::Entity::find()
        .filter(backup_job_app::Column::JobId.eq(job_id))
        .all(db)
        .await?
        .into_iter()
        .map(|row| row.app_id)
        .filter(|id| only_app.is_none_or(|only| only == *id))
        .collect();
    if app_ids.is_empty() {
        return Ok(Vec::new());
    }
    let apps = app::Entity::find()
        .filter(app::Column::Id.is_in(app_ids.clone()))
        .order_by_asc(app::Column::Name)
        .all(db)
        .await?;
    let volumes = volume::Entity::find()
        .filter(volume::Column::AppId.is_in(app_ids))
        .filter(volume::Column::Persistent.eq(true))
        .filter(volume::Column::DetachedAt.is_null())
        .order_by_asc(volume::Column::Name)
        .all(db)
        .await?;
    let mut planned = Vec::new();
    for app in apps {
        for volume in volumes.iter().filter(|v| v.app_id == app.id) {
            planned.push(Planned {
                app: app.clone(),
                volume: volume.clone(),
            });
        }
    }
    Ok(planned)
}

/// What starting a run came to.
pub enum Started {
    Run(RunView),
    /// The run was recorded as skipped, for this reason.
    Skipped {
        run_id: Uuid,
        reason: String,
    },
}

/// Records a run of `job` for the slot `scheduled_for` with one pending
/// backup per persistent volume of its apps. A run that cannot back
/// anything up (no target, no persistent volume) is recorded as skipped
/// with the reason. A job with a run still active gets a conflict.
pub async fn start(
    db: &impl TransactionTrait,
    job: &backup_job::Model,
    trigger: Trigger,
    scheduled_for: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Started> {
    start_scoped(db, job, trigger, scheduled_for, None, now).await
}

/// [`start`], backing up the volumes of `only_app` alone when given (an
/// app's "back up now").
pub async fn start_scoped(
    db: &impl TransactionTrait,
    job: &backup_job::Model,
    trigger: Trigger,
    scheduled_for: DateTime<Utc>,
    only_app: Option<Uuid>,
    now: DateTime<Utc>,
) -> Result<Started> {
    let txn = db.begin().await?;
    let target = resolve_target(&txn, job).await?;
    let planned = planned_volumes(&txn, job.id, only_app).await?;
    let skip_reason = match (&target, planned.is_empty()) {
        (None, _) => Some(
            "no storage target resolves for this job: the organization has no target and \
             there is no system-level target"
                .to_owned(),
        ),
        (Some(_), true) => Some("the job covers no persistent volume".to_owned()),
        (Some(_), false) => None,
    };
    let run_id = Uuid::now_v7();
    let inserted = backup_run::ActiveModel {
        id: Set(run_id),
        job_id: Set(job.id),
        trigger: Set(trigger),
        scheduled_for: Set(scheduled_for),
        status: Set(match skip_reason {
            Some(_) => RunStatus::Skipped,
            None => RunStatus::Running,
        }
        .to_owned()),
        reason: Set(skip_reason.clone()),
        created_at: Set(now),
        finished_at: Set(skip_reason.as_ref().map(|_| now)),
        missed_count: Set(None),
        missed_from: Set(None),
        missed_to: Set(None),
        scope_app_id: Set(only_app),
    }
    .insert(&txn)
    .await;
    match inserted {
        Ok(_) => {}
        Err(error) if is_unique_violation(&error) => {
            return Err(Error::Conflict {
                field: None,
                message: format!(
                    "job '{}' already has a run in progress; wait for it to finish",
                    job.name
                ),
            })
        }
        Err(error) => return Err(error.into()),
    }
    let (Some(target), None) = (target, &skip_reason) else {
        // A scheduled run that backs nothing up is a failure to report.
        crate::notifications::enqueue_guarded(&txn, Subject::Run(run_id), now).await;
        txn.commit().await?;
        return Ok(Started::Skipped {
            run_id,
            reason: skip_reason.unwrap_or_default(),
        });
    };
    let mut backups = Vec::with_capacity(planned.len());
    for Planned { app, volume } in planned {
        let id = Uuid::now_v7();
        backup::ActiveModel {
            id: Set(id),
            organization_id: Set(job.organization_id),
            run_id: Set(Some(run_id)),
            job_id: Set(Some(job.id)),
            app_id: Set(Some(app.id)),
            target_id: Set(Some(target.id)),
            app_name: Set(app.name.clone()),
            volume_name: Set(volume.name.clone()),
            status: Set(BackupStatus::Pending),
            archive_size: Set(None),
            storage_path: Set(None),
            sha256: Set(None),
            log: Set(serde_json::json!([])),
            error_code: Set(None),
            error_message: Set(None),
            attempt: Set(0),
            lease_owner: Set(None),
            lease_expires_at: Set(None),
            created_at: Set(now),
            started_at: Set(None),
            finished_at: Set(None),
            trigger: Set(trigger),
            kind: Set(Some(volume.kind)),
            manifest: Set(None),
            suspicious: Set(false),
            suspicious_reason: Set(None),
            accepted_at: Set(None),
            read_until: Set(None),
        }
        .insert(&txn)
        .await?;
        backups.push(RunBackupView {
            id,
            app_name: app.name,
            volume_name: volume.name,
            status: BackupStatus::Pending,
        });
    }
    txn.commit().await?;
    Ok(Started::Run(RunView {
        run_id,
        status: RunStatus::Running,
        target_id: target.id,
        backups,
    }))
}

/// What an unfired slot record stands for.
#[derive(Clone, Copy, Debug)]
pub struct MissedSlots {
    pub count: u32,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// Records a slot of `job_id` that did not fire: `skipped` (a run was still
/// active) or `missed` (no scheduler ran in time; `missed` says which slots).
/// False when the slot already has a run (another replica recorded it).
/// A `missed` record queues its notifications in the same transaction.
pub async fn record_unfired(
    db: &impl TransactionTrait,
    job_id: Uuid,
    scheduled_for: DateTime<Utc>,
    status: RunStatus,
    reason: String,
    missed: Option<MissedSlots>,
    now: DateTime<Utc>,
) -> Result<bool> {
    let txn = db.begin().await?;
    let run_id = Uuid::now_v7();
    let inserted = backup_run::ActiveModel {
        id: Set(run_id),
        job_id: Set(job_id),
        trigger: Set(Trigger::Schedule),
        scheduled_for: Set(scheduled_for),
        status: Set(status),
        reason: Set(Some(reason)),
        created_at: Set(now),
        finished_at: Set(Some(now)),
        missed_count: Set(missed.map(|m| m.count as i32)),
        missed_from: Set(missed.map(|m| m.from)),
        missed_to: Set(missed.map(|m| m.to)),
        scope_app_id: Set(None),
    }
    .insert(&txn)
    .await;
    match inserted {
        Ok(_) => {}
        Err(error) if is_unique_violation(&error) => return Ok(false),
        Err(error) => return Err(error.into()),
    }
    if status == RunStatus::Missed {
        crate::notifications::enqueue_guarded(&txn, Subject::Run(run_id), now).await;
    }
    if status == RunStatus::Skipped {
        // A slot skipped because the last run is still going counts against
        // the job's health; once is a slow run, twice in a row is worth a
        // message (a stuck run, a schedule tighter than the backup).
        backup_job::Entity::update_many()
            .col_expr(
                backup_job::Column::ConsecutiveFailures,
                Expr::col(backup_job::Column::ConsecutiveFailures).add(1),
            )
            .filter(backup_job::Column::Id.eq(job_id))
            .exec(&txn)
            .await?;
        let previous = backup_run::Entity::find()
            .filter(backup_run::Column::JobId.eq(job_id))
            .filter(backup_run::Column::Trigger.eq(Trigger::Schedule))
            .filter(backup_run::Column::ScheduledFor.lt(scheduled_for))
            .order_by_desc(backup_run::Column::ScheduledFor)
            .one(&txn)
            .await?;
        if previous.is_some_and(|run| run.status == RunStatus::Skipped) {
            crate::notifications::enqueue_guarded(&txn, Subject::Run(run_id), now).await;
        }
    }
    txn.commit().await?;
    Ok(true)
}

/// `POST …/jobs/{jobId}/run`: a manual run, now.
pub async fn start_manual(
    cairn: &Cairn,
    organization_id: Uuid,
    job_id: Uuid,
    now: DateTime<Utc>,
) -> Result<RunView> {
    let job = backup_job::Entity::find_by_id(job_id)
        .filter(backup_job::Column::OrganizationId.eq(organization_id))
        .one(&cairn.db)
        .await?
        .ok_or(Error::NotFound("job"))?;
    match start(&cairn.db, &job, Trigger::Manual, now, now).await? {
        Started::Run(view) => {
            cairn.work_recorded().await;
            Ok(view)
        }
        Started::Skipped { run_id, reason } => Err(Error::Conflict {
            field: None,
            message: format!(
                "nothing to back up, the run {run_id} was recorded as skipped: {reason}"
            ),
        }),
    }
}

/// How a closed run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Closed {
    pub run_id: Uuid,
    pub job_id: Uuid,
    pub status: RunStatus,
    pub succeeded: u64,
    pub failed: u64,
}

/// [`close_if_done`] and the notifications of the closed run, in one
/// transaction: a run that closes has its deliveries queued, once.
pub async fn close(
    db: &impl TransactionTrait,
    run_id: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<Closed>> {
    let txn = db.begin().await?;
    let closed = close_if_done(&txn, run_id, now).await?;
    if closed.is_some() {
        crate::notifications::enqueue_guarded(&txn, Subject::Run(run_id), now).await;
    }
    txn.commit().await?;
    Ok(closed)
}

/// Closes the run when none of its backups is pending or running any
/// more. Exactly one caller gets `Some` for a run, however many race: the
/// update is conditional on the run still being open and on no active
/// backup remaining.
pub async fn close_if_done(
    db: &impl ConnectionTrait,
    run_id: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<Closed>> {
    let backups = backup::Entity::find()
        .filter(backup::Column::RunId.eq(run_id))
        .all(db)
        .await?;
    let active =
        |status: BackupStatus| status == BackupStatus::Pending || status == BackupStatus::Running;
    if backups.iter().any(|b| active(b.status)) {
        return Ok(None);
    }
    let failed = backups
        .iter()
        .filter(|b| b.status == BackupStatus::Failed)
        .count() as u64;
    let succeeded = backups.len() as u64 - failed;
    let status = match (succeeded, failed) {
        (_, 0) => RunStatus::Success,
        (0, _) => RunStatus::Failed,
        _ => RunStatus::Partial,
    };
    let reason = (failed > 0).then(|| format!("{failed} of {} backups failed", backups.len()));
    let still_active = Query::select()
        .expr(Expr::val(1))
        .from(backup::Entity)
        .and_where(Expr::col((backup::Entity, backup::Column::RunId)).eq(run_id))
        .and_where(
            Expr::col((backup::Entity, backup::Column::Status))
                .is_in([BackupStatus::Pending, BackupStatus::Running]),
        )
        .to_owned();
    let updated = backup_run::Entity::update_many()
        .set(backup_run::ActiveModel {
            status: Set(status),
            reason: Set(reason),
            finished_at: Set(Some(now)),
            ..Default::default()
        })
        .filter(backup_run::Column::Id.eq(run_id))
        .filter(backup_run::Column::Status.eq(RunStatus::Running))
        .filter(Condition::all().add(Expr::exists(still_active).not()))
        .exec(db)
        .await?;
    if updated.rows_affected != 1 {
        return Ok(None);
    }
    let run = backup_run::Entity::find_by_id(run_id)
        .one(db)
        .await?
        .ok_or_else(|| anyhow::anyhow!("run {run_id} vanished while closing"))?;
    // The job's health: a success resets the failure count, anything less
    // adds one. Only the closer gets here, so each run counts once. A
    // safety backup (before a restore) says nothing of the job's schedule,
    // and a run of one app's volumes says nothing of the others'.
    if run.trigger != Trigger::Safety && run.scope_app_id.is_none() {
        let health =
            backup_job::Entity::update_many().filter(backup_job::Column::Id.eq(run.job_id));
        if status == RunStatus::Success {
            health
                .col_expr(backup_job::Column::LastSuccessAt, Expr::value(now))
                .col_expr(backup_job::Column::ConsecutiveFailures, Expr::value(0))
                .exec(db)
                .await?;
        } else {
            health
                .col_expr(
                    backup_job::Column::ConsecutiveFailures,
                    Expr::col(backup_job::Column::ConsecutiveFailures).add(1),
                )
                .exec(db)
                .await?;
        }
    }
    Ok(Some(Closed {
        run_id,
        job_id: run.job_id,
        status,
        succeeded,
        failed,
    }))
}

/// A run as `GET …/jobs/{jobId}/runs` lists it.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunRecordView {
    pub id: Uuid,
    pub job_id: Uuid,
    /// `schedule`, `manual` or `safety` (the safety backup of a restore).
    pub trigger: Trigger,
    /// The slot (scheduled runs) or the time it was asked for.
    pub scheduled_for: DateTime<Utc>,
    pub status: RunStatus,
    /// Why it was skipped, missed or partly failed.
    pub reason: Option<String>,
    /// For a `missed` run: how many slots, the first and the last.
    pub missed_count: Option<u32>,
    pub missed_from: Option<DateTime<Utc>>,
    pub missed_to: Option<DateTime<Utc>>,
    /// For a run limited to one app's volumes ("back up now"): that app.
    pub scope_app_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub backups: Vec<RunBackupView>,
}

/// Query parameters of the run listing.
#[derive(Clone, Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RunQuery {
    /// Page size, 1–200 (default 50).
    #[param(value_type = Option<u64>)]
    pub limit: Option<String>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunPage {
    pub items: Vec<RunRecordView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// One page of a job's runs, newest first, with their backups.
pub async fn list(
    cairn: &Cairn,
    organization_id: Uuid,
    job_id: Uuid,
    query: &RunQuery,
) -> Result<RunPage> {
    use crate::history::{newest_page, page_limit, parse_uuid};
    let mut v = crate::error::Validator::new();
    let cursor = parse_uuid(&mut v, "cursor", query.cursor.as_deref());
    let limit = page_limit(&mut v, query.limit.as_deref());
    v.finish()?;
    backup_job::Entity::find_by_id(job_id)
        .filter(backup_job::Column::OrganizationId.eq(organization_id))
        .one(&cairn.read)
        .await?
        .ok_or(Error::NotFound("job"))?;
    let select = backup_run::Entity::find().filter(backup_run::Column::JobId.eq(job_id));
    let (rows, next_cursor) = newest_page(
        &cairn.read,
        select,
        backup_run::Column::Id,
        cursor,
        limit,
        |row| row.id,
    )
    .await?;
    /// What a run's record shows of each of its backups.
    #[derive(sea_orm::DerivePartialModel, sea_orm::FromQueryResult)]
    #[sea_orm(entity = "backup::Entity")]
    struct RunBackupRow {
        id: Uuid,
        run_id: Option<Uuid>,
        app_name: String,
        volume_name: String,
        status: cairn_entity::enums::BackupStatus,
    }
    let backups = backup::Entity::find()
        .filter(backup::Column::RunId.is_in(rows.iter().map(|r| r.id)))
        .order_by_asc(backup::Column::Id)
        .into_partial_model::<RunBackupRow>()
        .all(&cairn.read)
        .await?;
    let items = rows
        .into_iter()
        .map(|run| {
            let status = run.status;
            Ok(RunRecordView {
                backups: backups
                    .iter()
                    .filter(|b| b.run_id == Some(run.id))
                    .map(|b| RunBackupView {
                        id: b.id,
                        app_name: b.app_name.clone(),
                        volume_name: b.volume_name.clone(),
                        status: b.status,
                    })
                    .collect(),
                id: run.id,
                job_id: run.job_id,
                trigger: run.trigger,
                scheduled_for: run.scheduled_for,
                status,
                reason: run.reason,
                missed_count: run.missed_count.map(|n| n.max(0) as u32),
                missed_from: run.missed_from,
                missed_to: run.missed_to,
                scope_app_id: run.scope_app_id,
                created_at: run.created_at,
                finished_at: run.finished_at,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RunPage { items, next_cursor })
}

/// How many runs of a job ended in one state on one day (UTC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DayOutcome {
    pub job_id: Uuid,
    /// `YYYY-MM-DD`, the day of the run's slot in UTC.
    pub day: String,
    pub status: RunStatus,
    pub count: i64,
}

/// The runs of the organization's jobs whose slot is at or after `since`
/// (safety runs of restores left out), counted per job, day and state by
/// the database: one row per combination, however many runs.
pub async fn daily_outcomes(
    cairn: &Cairn,
    organization_id: Uuid,
    since: DateTime<Utc>,
) -> Result<Vec<DayOutcome>> {
    use sea_orm::{DbBackend, FromQueryResult, Statement};
    #[derive(FromQueryResult)]
    struct Row {
        job_id: Uuid,
        day: String,
        status: RunStatus,
        count: i64,
    }
    let backend = cairn.db.get_database_backend();
    let day = match backend {
        DbBackend::Postgres => "to_char(r.scheduled_for AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
        _ => "substr(r.scheduled_for, 1, 10)",
    };
    let (org, from, safety) = match backend {
        DbBackend::Postgres => ("$1", "$2", "$3"),
        _ => ("?", "?", "?"),
    };
    let sql = format!(
        "SELECT r.job_id AS job_id, {day} AS day, r.status AS status, COUNT(*) AS count \
         FROM backup_runs r JOIN backup_jobs j ON j.id = r.job_id \
         WHERE j.organization_id = {org} AND r.scheduled_for >= {from} AND r.trigger <> {safety} \
         GROUP BY r.job_id, {day}, r.status"
    );
    let rows = Row::find_by_statement(Statement::from_sql_and_values(
        backend,
        sql,
        [
            organization_id.into(),
            since.into(),
            Trigger::Safety.as_str().into(),
        ],
    ))
    .all(&cairn.db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| DayOutcome {
            job_id: row.job_id,
            day: row.day,
            status: row.status,
            count: row.count,
        })
        .collect())
}
