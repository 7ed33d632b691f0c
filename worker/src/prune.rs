//! After a run: close it (once, queueing its notifications), then prune the job's series by its
//! retention policy.

use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue, ColumnTrait, EntityTrait, QueryFilter};
use uuid::Uuid;

use cairn_core::Cairn;
use cairn_entity::enums::BackupStatus;
use cairn_entity::{backup, backup_job};

use crate::lease::{append_log, line};

/// Closes the run when its last backup has ended; the one caller that
/// closes it prunes the job's series.
pub(crate) async fn close_run(
    cairn: &Cairn,
    run_id: Uuid,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let Some(closed) = cairn_core::runs::close(&cairn.db, run_id, now).await? else {
        return Ok(());
    };
    tracing::info!(
        run_id = %run_id,
        job_id = %closed.job_id,
        status = closed.status.as_str(),
        succeeded = closed.succeeded,
        failed = closed.failed,
        "run closed"
    );
    if let Some(job) = backup_job::Entity::find_by_id(closed.job_id)
        .one(&cairn.db)
        .await?
    {
        prune(cairn, &job).await?;
    }
    Ok(())
}

/// Deletes the archives (and sidecars) that the job's retention policy no
/// longer keeps, then marks their records `pruned`. A delete that fails
/// leaves the record as it was, with a log line saying why. Returns how
/// many backups were pruned.
pub async fn prune(cairn: &Cairn, job: &backup_job::Model) -> anyhow::Result<usize> {
    let series = cairn_core::jobs::retention_series(&cairn.db, job, Utc::now()).await?;
    let mut pruned = 0;
    for series in series {
        for (model, decision) in series.backups {
            if decision.keep {
                continue;
            }
            let deleted = delete_objects(cairn, &model).await;
            match deleted {
                Ok(()) => {
                    let updated = backup::Entity::update_many()
                        .set(backup::ActiveModel {
                            status: ActiveValue::Set(BackupStatus::Pruned),
                            ..Default::default()
                        })
                        .filter(backup::Column::Id.eq(model.id))
                        .filter(backup::Column::Status.eq(BackupStatus::Success))
                        .exec(&cairn.db)
                        .await?;
                    if updated.rows_affected == 1 {
                        pruned += 1;
                        append_log(
                            &cairn.db,
                            model.id,
                            vec![line(
                                "info",
                                "pruned by the job's retention policy: the archive and its sidecars were deleted",
                            )],
                        )
                        .await?;
                    }
                }
                Err(error) => {
                    tracing::warn!(backup_id = %model.id, error = format!("{error:#}"), "pruning failed; the backup is kept");
                    append_log(
                        &cairn.db,
                        model.id,
                        vec![line(
                            "warn",
                            format!("retention would prune this backup, but deleting it failed: {error:#}"),
                        )],
                    )
                    .await?;
                }
            }
        }
    }
    if pruned > 0 {
        tracing::info!(job_id = %job.id, pruned, "pruned backups by retention");
    }
    Ok(pruned)
}

async fn delete_objects(cairn: &Cairn, model: &backup::Model) -> anyhow::Result<()> {
    cairn_core::history::delete_stored(cairn, model)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}
