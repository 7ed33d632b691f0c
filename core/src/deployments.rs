//! App deploys and "back up now".
//!
//! The platform that deploys apps calls [`deploy`] on every deploy: the app
//! is created if it is new, its volumes are upserted (volumes no longer
//! listed are detached, never deleted), the deploy is recorded, and the app
//! gets its automatic backup job when it needs one ([`ensure_auto_job`]).
//!
//! Concurrent deploys of one app are serialized by the app's row: the app
//! is inserted with `ON CONFLICT DO NOTHING` (a concurrent insert waits for
//! the first and then does nothing), and the first write of the transaction
//! updates the app's row, which holds its lock until commit. The automatic
//! job is claimed by a conditional update of `apps.auto_job_created_at`
//! (from `NULL` only), and `backup_jobs.auto_app_id` is unique: one app,
//! one automatic job, whatever the timing.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set,
    TransactionTrait,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use cairn_entity::{app, backup, backup_job, backup_job_app, deployment, volume};

use crate::apps::{self, AppView, Unlisted, VolumeRequest};
use crate::error::{Error, Result, Validator};
use crate::runs::{self, RunView, Started};
use crate::validate::check_resource_name;
use crate::Cairn;
use cairn_entity::enums::{BackupStatus, Slot, Trigger};

/// `POST …/apps/{appName}/deployments`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentRequest {
    /// The slot the app was deployed to: its volumes are looked for first.
    pub slot: Slot,
    /// Every volume of the app as deployed. Volumes stored before and not
    /// listed are detached (kept with their history, not backed up); a
    /// detached volume listed again is attached again. A `postgres` volume
    /// may omit its password when one is stored.
    pub volumes: Vec<VolumeRequest>,
}

/// What the deploy meant for the app's backups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum CoverageStatus {
    /// The automatic job was created by this call.
    Created,
    /// The automatic job exists (created by an earlier deploy).
    Exists,
    /// Jobs a user made cover the app; none was created.
    Covered,
    /// A user deleted the automatic job; it is not created again.
    Removed,
    /// No target resolves for the organization: nothing was created.
    NoTarget,
    /// The app has no persistent volume: nothing to back up.
    NoPersistentVolume,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CoverageView {
    pub status: CoverageStatus,
    /// The jobs that cover the app now.
    pub job_ids: Vec<Uuid>,
    /// In words.
    pub reason: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentRecordView {
    pub id: Uuid,
    pub slot: Slot,
    pub deployed_at: DateTime<Utc>,
}

/// The answer of a deploy call.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentView {
    pub app: AppView,
    pub deployment: DeploymentRecordView,
    pub backup: CoverageView,
    /// Whether this call created the app (`201`; else `200`).
    #[serde(skip)]
    pub app_created: bool,
}

/// The schedule and retention of automatic jobs.
pub const AUTO_SCHEDULE: &str = "0 2 * * *";

/// Records a deploy of the app named `app_name` (created if new): upserts
/// its volumes, detaches those no longer listed, and creates the automatic
/// job when the app needs one. Bad input writes nothing.
pub async fn deploy(
    cairn: &Cairn,
    organization_id: Uuid,
    app_name: &str,
    request: DeploymentRequest,
    now: DateTime<Utc>,
) -> Result<DeploymentView> {
    crate::orgs::get(&cairn.db, organization_id).await?;
    // The name is the path's: checked before anything is written.
    check_resource_name(app_name).map_err(|message| Error::invalid("appName", message))?;
    // Everything below is one transaction: refused volumes roll back the
    // app's insert too.
    let txn = cairn.db.begin().await?;
    let inserted = app::Entity::insert(apps::new_app(
        Uuid::now_v7(),
        organization_id,
        app_name,
        now,
    ))
    .on_conflict(
        OnConflict::columns([app::Column::OrganizationId, app::Column::Name])
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(&txn)
    .await?;
    let app_created = inserted == 1;
    let model = app::Entity::find()
        .filter(app::Column::OrganizationId.eq(organization_id))
        .filter(app::Column::Name.eq(app_name))
        .one(&txn)
        .await?
        .ok_or_else(|| anyhow::anyhow!("app {app_name} vanished during its deploy"))?;
    // The app's row stays locked until commit: deploys of one app run in turn.
    app::Entity::update_many()
        .col_expr(app::Column::LastDeployedAt, Expr::value(now))
        .col_expr(
            app::Column::LastDeploySlot,
            Expr::value(request.slot.as_str()),
        )
        .col_expr(app::Column::UpdatedAt, Expr::value(now))
        .filter(app::Column::Id.eq(model.id))
        .exec(&txn)
        .await?;
    // Checked against the volumes as stored, under the app's lock.
    let stored = apps::volumes_of(&txn, &[model.id]).await?;
    let passwords = apps::stored_passwords(&cairn.master_key, &stored)?;
    let mut v = Validator::new();
    let specs = apps::validate_volumes(
        &mut v,
        &request.volumes,
        &passwords,
        cairn.config.max_volumes_per_app,
    );
    v.finish()?;
    apps::check_database_hosts(cairn, &specs).await?;
    let naming = crate::directories::Naming::of(
        &txn,
        &cairn.config.volume_name_template,
        organization_id,
        model.id,
        app_name,
    )
    .await?;
    apps::apply_volumes(
        &txn,
        &cairn.master_key,
        &naming,
        stored,
        specs,
        Unlisted::Detach,
        now,
    )
    .await?;
    let deployment_id = Uuid::now_v7();
    deployment::ActiveModel {
        id: Set(deployment_id),
        organization_id: Set(organization_id),
        app_id: Set(model.id),
        slot: Set(request.slot),
        created_at: Set(now),
    }
    .insert(&txn)
    .await?;
    let backup = ensure_auto_job(&txn, organization_id, model.id, now).await?;
    txn.commit().await?;
    Ok(DeploymentView {
        app: apps::get(cairn, organization_id, model.id).await?,
        deployment: DeploymentRecordView {
            id: deployment_id,
            slot: request.slot,
            deployed_at: now,
        },
        backup,
        app_created,
    })
}

/// The jobs that cover `app_id`.
async fn covering_jobs(db: &impl ConnectionTrait, app_id: Uuid) -> Result<Vec<backup_job::Model>> {
    let job_ids: Vec<Uuid> = backup_job_app::Entity::find()
        .filter(backup_job_app::Column::AppId.eq(app_id))
        .all(db)
        .await?
        .into_iter()
        .map(|row| row.job_id)
        .collect();
    Ok(backup_job::Entity::find()
        .filter(backup_job::Column::Id.is_in(job_ids))
        .order_by_asc(backup_job::Column::Id)
        .all(db)
        .await?)
}

/// Creates the app's automatic job when it has a persistent volume, no job
/// covers it, none was created before, and a target resolves; says what
/// it found otherwise. Call it in the transaction that locked the app's row.
pub async fn ensure_auto_job(
    db: &impl ConnectionTrait,
    organization_id: Uuid,
    app_id: Uuid,
    now: DateTime<Utc>,
) -> Result<CoverageView> {
    let model = apps::find_model(db, organization_id, app_id).await?;
    let persistent = volume::Entity::find()
        .filter(volume::Column::AppId.eq(app_id))
        .filter(volume::Column::Persistent.eq(true))
        .filter(volume::Column::DetachedAt.is_null())
        .one(db)
        .await?;
    let covering = covering_jobs(db, app_id).await?;
    let job_ids: Vec<Uuid> = covering.iter().map(|j| j.id).collect();
    let view = |status, reason: String| CoverageView {
        status,
        job_ids: job_ids.clone(),
        reason,
    };
    if persistent.is_none() {
        return Ok(view(
            CoverageStatus::NoPersistentVolume,
            "the app has no persistent volume: there is nothing to back up".into(),
        ));
    }
    if let Some(auto) = covering.iter().find(|j| j.auto_app_id == Some(app_id)) {
        return Ok(view(
            CoverageStatus::Exists,
            format!("the automatic job '{}' backs the app up", auto.name),
        ));
    }
    if !covering.is_empty() {
        let names: Vec<&str> = covering.iter().map(|j| j.name.as_str()).collect();
        return Ok(view(
            CoverageStatus::Covered,
            format!("the app is backed up by {}", names.join(", ")),
        ));
    }
    if let Some(removed_at) = model.auto_job_removed_at {
        return Ok(view(
            CoverageStatus::Removed,
            format!(
                "the automatic job was deleted on {}; it is not created again. Create a job covering the app to back it up",
                removed_at.to_rfc3339()
            ),
        ));
    }
    if model.auto_job_created_at.is_some() {
        return Ok(view(
            CoverageStatus::Removed,
            "the automatic job no longer covers the app; it is not created again".into(),
        ));
    }
    if runs::resolve_organization_target(db, organization_id)
        .await?
        .is_none()
    {
        return Ok(view(
            CoverageStatus::NoTarget,
            "no backup job was created: the organization has no storage target and there is no \
             system-level target. Add a target; the next deploy creates the job"
                .into(),
        ));
    }
    // The claim: only a call that moves auto_job_created_at from NULL creates
    // the job.
    let claimed = app::Entity::update_many()
        .col_expr(app::Column::AutoJobCreatedAt, Expr::value(now))
        .filter(app::Column::Id.eq(app_id))
        .filter(app::Column::AutoJobCreatedAt.is_null())
        .exec(db)
        .await?;
    if claimed.rows_affected != 1 {
        return Ok(view(
            CoverageStatus::Exists,
            "another call created the automatic job".into(),
        ));
    }
    let name = free_job_name(db, organization_id, &format!("Auto: {}", model.name)).await?;
    let request: crate::jobs::JobRequest = serde_json::from_value(serde_json::json!({
        "name": name,
        "schedule": AUTO_SCHEDULE,
        "appIds": [app_id],
        "keepLast": 1,
        "keepDaily": 7,
        "keepWeekly": 1,
        "keepMonthly": 1,
        "notifyOnFailure": true,
        "notifyOnSuccess": false,
    }))
    .map_err(anyhow::Error::from)?;
    let id = crate::jobs::create_in(db, organization_id, &request, Some(app_id), now).await?;
    Ok(CoverageView {
        status: CoverageStatus::Created,
        job_ids: vec![id],
        reason: format!("created the automatic job '{name}': nightly at 02:00 UTC"),
    })
}

/// `base`, or `base (2)`, `base (3)`, … when a job has that name already.
async fn free_job_name(
    db: &impl ConnectionTrait,
    organization_id: Uuid,
    base: &str,
) -> Result<String> {
    let taken: Vec<String> = backup_job::Entity::find()
        .filter(backup_job::Column::OrganizationId.eq(organization_id))
        .filter(backup_job::Column::Name.starts_with(base))
        .all(db)
        .await?
        .into_iter()
        .map(|job| job.name)
        .collect();
    let mut name = base.to_owned();
    let mut n = 2;
    while taken.contains(&name) {
        name = format!("{base} ({n})");
        n += 1;
    }
    Ok(name)
}

/// The answer of `POST …/apps/{appId}/backup-now`.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupNowView {
    /// One manual run per job covering the app, limited to its volumes.
    pub runs: Vec<RunView>,
    /// Whether the automatic job was created first.
    pub auto_job_created: bool,
}

/// Starts a manual run, limited to the app's volumes, of every job that
/// covers the app (creating the automatic job first when none does).
/// Conflicts: a backup of the app is pending or running; no job covers it
/// and none can be created; no target resolves. A conflict writes nothing.
pub async fn backup_now(
    cairn: &Cairn,
    organization_id: Uuid,
    app_id: Uuid,
    now: DateTime<Utc>,
) -> Result<BackupNowView> {
    let txn = cairn.db.begin().await?;
    apps::find_model(&txn, organization_id, app_id).await?;
    // Lock the app's row: deploys and other "back up now" calls wait.
    app::Entity::update_many()
        .col_expr(
            app::Column::UpdatedAt,
            Expr::col(app::Column::UpdatedAt).into(),
        )
        .filter(app::Column::Id.eq(app_id))
        .exec(&txn)
        .await?;
    let active = backup::Entity::find()
        .filter(backup::Column::AppId.eq(app_id))
        .filter(backup::Column::Status.is_in([BackupStatus::Pending, BackupStatus::Running]))
        .one(&txn)
        .await?;
    if let Some(active) = active {
        return Err(Error::Conflict {
            field: None,
            message: format!(
                "a backup of this app is already {} (backup {}, volume {}); wait for it to finish",
                active.status, active.id, active.volume_name
            ),
        });
    }
    let mut jobs = covering_jobs(&txn, app_id).await?;
    let mut auto_job_created = false;
    if jobs.is_empty() {
        let coverage = ensure_auto_job(&txn, organization_id, app_id, now).await?;
        if coverage.status != CoverageStatus::Created {
            return Err(Error::Conflict {
                field: None,
                message: format!("no job backs this app up: {}", coverage.reason),
            });
        }
        auto_job_created = true;
        jobs = covering_jobs(&txn, app_id).await?;
    }
    let mut started = Vec::new();
    let mut skipped = Vec::new();
    for job in &jobs {
        match runs::start_scoped(&txn, job, Trigger::Manual, now, Some(app_id), now).await? {
            Started::Run(run) => started.push(run),
            Started::Skipped { reason, .. } => skipped.push(format!("{}: {reason}", job.name)),
        }
    }
    if started.is_empty() {
        return Err(Error::Conflict {
            field: None,
            message: format!("nothing was started: {}", skipped.join("; ")),
        });
    }
    txn.commit().await?;
    cairn.work_recorded().await;
    Ok(BackupNowView {
        runs: started,
        auto_job_created,
    })
}
