//! What a restore that died leaves behind, settled: swaps completed or
//! rolled back from their journals (at a worker's start, by the next restore
//! of the volume, or by the reaper), and restores whose lease expired failed
//! as `worker_lost`.

use super::*;
use cairn_entity::enums::{ArchiveKind, RestoreStatus};

/// Writes on the record of a restore that died mid-swap how its swap was
/// settled: a log line, the summary's `swap` (`rolled_back` or
/// `completed`), and, once it is failed, its message.
pub(crate) async fn record_settled(
    cairn: &cairn_core::Cairn,
    recovered: &swap::Recovered,
    now: chrono::DateTime<Utc>,
) -> anyhow::Result<()> {
    let Some(model) = restore::Entity::find_by_id(recovered.restore_id)
        .one(&cairn.db)
        .await?
    else {
        return Ok(());
    };
    let message = recovered.settled.describe(&recovered.data);
    let mut log: Vec<LogLine> = serde_json::from_value(model.log.clone()).unwrap_or_default();
    log.push(LogLine {
        at: now,
        ..line(
            "warn",
            format!("recovered after the worker died: {message}"),
        )
    });
    let mut summary = model.summary.clone().unwrap_or_else(|| json!({}));
    if let Some(object) = summary.as_object_mut() {
        object.insert("swap".into(), json!(recovered.settled));
    }
    let mut update = restore::ActiveModel {
        log: ActiveValue::Set(serde_json::to_value(log)?),
        summary: ActiveValue::Set(Some(summary)),
        ..Default::default()
    };
    if model.status == RestoreStatus::Failed {
        update.error_message = ActiveValue::Set(Some(format!(
            "{}; {message}",
            model.error_message.as_deref().unwrap_or("the worker died")
        )));
    }
    restore::Entity::update_many()
        .set(update)
        .filter(restore::Column::Id.eq(model.id))
        .exec(&cairn.db)
        .await?;
    Ok(())
}

/// Settles the swap a lost restore left on this machine, if any, and says
/// on its record how.
async fn settle_swap_of(cairn: &cairn_core::Cairn, model: &restore::Model) -> anyhow::Result<()> {
    for holder in destination_holders(cairn, model).await? {
        let id = model.id;
        if let Some(found) =
            tokio::task::spawn_blocking(move || swap::recover_one(&holder, id)).await??
        {
            record_settled(cairn, &found, Utc::now()).await?;
        }
    }
    Ok(())
}

/// The directories (parents of `_data`) a restore's destination may be in.
async fn destination_holders(
    cairn: &cairn_core::Cairn,
    model: &restore::Model,
) -> anyhow::Result<Vec<PathBuf>> {
    let Some(app_id) = model.app_id else {
        return Ok(Vec::new());
    };
    let Some(volume) = volume::Entity::find()
        .filter(volume::Column::AppId.eq(app_id))
        .filter(volume::Column::Name.eq(&model.volume_name))
        .one(&cairn.db)
        .await?
    else {
        return Ok(Vec::new());
    };
    Ok(directories::of_volume(&cairn.db, volume.id)
        .await?
        .into_iter()
        .map(|d| cairn.config.volume_root.join(d.name))
        .collect())
}

/// Settles, at a worker's start, the swaps that restores which died on
/// this machine left unfinished and that no reaper here has settled (one
/// on another machine may have failed the record without the files).
/// Restores still `running` are left to the reaper, which settles them once
/// their lease has expired.
pub(crate) async fn recover_swaps(cairn: &cairn_core::Cairn) -> anyhow::Result<usize> {
    let root = cairn.config.volume_root.clone();
    let found = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<(PathBuf, Uuid)>> {
        let mut found = Vec::new();
        let entries = match std::fs::read_dir(&root) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(found),
            Err(error) => return Err(error),
        };
        for entry in entries {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                for id in swap::journals_in(&entry.path())? {
                    found.push((entry.path(), id));
                }
            }
        }
        Ok(found)
    })
    .await??;
    let mut settled = 0;
    for (holder, id) in found {
        let running = restore::Entity::find_by_id(id)
            .one(&cairn.db)
            .await?
            .is_some_and(|r| r.status == RestoreStatus::Running);
        if running {
            continue;
        }
        let recovered =
            tokio::task::spawn_blocking(move || swap::recover_one(&holder, id)).await??;
        if let Some(recovered) = recovered {
            tracing::warn!(restore_id = %id, "{}", recovered.settled.describe(&recovered.data));
            record_settled(cairn, &recovered, Utc::now()).await?;
            settled += 1;
        }
    }
    Ok(settled)
}

/// Fails restores whose lease expired before `now` with `worker_lost`.
/// Their staging directories are removed by the next restore of the same
/// destination (they may be on another worker's disk).
pub(crate) async fn reap(
    cairn: &cairn_core::Cairn,
    now: chrono::DateTime<Utc>,
) -> anyhow::Result<usize> {
    let expired = restore::Entity::find()
        .filter(restore::Column::Status.eq(RestoreStatus::Running))
        .filter(restore::Column::LeaseExpiresAt.lt(now))
        .all(&cairn.db)
        .await?;
    let mut reaped = 0;
    for model in expired {
        let message = format!(
            "the worker {} stopped renewing its lease (expired at {}); it is presumed dead. {}{}",
            model.lease_owner.as_deref().unwrap_or("unknown"),
            model
                .lease_expires_at
                .map(|t| t.to_rfc3339())
                .unwrap_or_default(),
            if model.kind == Some(ArchiveKind::PgDump) {
                "pg_restore runs in one transaction, so the database is unchanged"
            } else if model.kind == Some(ArchiveKind::MysqlDump) {
                "MySQL cannot roll back a dump's DDL: if the load had begun, the database may be \
                 partly restored"
            } else {
                "A volume's entries are swapped only as the last step, journalled: a swap that had \
                 begun is completed or rolled back from its journal, and this record then says which"
            },
            match model.safety_backup_id {
                Some(id) => format!("; safety backup {id} holds what it held before"),
                None => String::new(),
            }
        );
        let mut log: Vec<LogLine> = serde_json::from_value(model.log.clone()).unwrap_or_default();
        log.push(line(
            "error",
            format!("{}: {message}", FailureCode::WorkerLost),
        ));
        let txn = cairn.db.begin().await?;
        let failed = restore::Entity::update_many()
            .set(restore::ActiveModel {
                status: ActiveValue::Set(RestoreStatus::Failed),
                error_code: ActiveValue::Set(Some(FailureCode::WorkerLost.as_str().to_owned())),
                error_message: ActiveValue::Set(Some(message.clone())),
                log: ActiveValue::Set(serde_json::to_value(log)?),
                finished_at: ActiveValue::Set(Some(now)),
                lease_owner: ActiveValue::Set(None),
                lease_expires_at: ActiveValue::Set(None),
                ..Default::default()
            })
            .filter(restore::Column::Id.eq(model.id))
            .filter(restore::Column::Attempt.eq(model.attempt))
            .filter(restore::Column::Status.eq(RestoreStatus::Running))
            .filter(restore::Column::LeaseExpiresAt.lt(now))
            .exec(&txn)
            .await?;
        if failed.rows_affected == 1 {
            notifications::enqueue_guarded(&txn, Subject::Restore(model.id), now).await;
        }
        txn.commit().await?;
        if failed.rows_affected != 1 {
            continue;
        }
        reaped += 1;
        tracing::warn!(restore_id = %model.id, "{message}");
        // Only now, with the record failed (the attempt fenced off), is a
        // swap the dead worker began settled; a swap still running on this
        // machine holds the volume's lock and is left alone. A failure here
        // is logged: other restores must still be reaped.
        if let Err(error) = settle_swap_of(cairn, &model).await {
            tracing::warn!(restore_id = %model.id, error = format!("{error:#}"), "settling the swap of a lost restore failed; the next restore of the volume or a worker start retries");
        }
    }
    Ok(reaped)
}
