//! Free space before a backup: a local target too full for the volume's
//! previous archive fails the backup at once (`insufficient_space`)
//! instead of filling the disk; below `disk.warn_free_mb` the backup's log
//! warns, for the target and for Cairn's data directory (where the SQLite
//! database grows). Both figures go to the metrics.

use std::sync::Arc;

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use cairn_core::failure::FailureCode;
use cairn_core::notifications::{self, Subject};
use cairn_core::storage::Storage;
use cairn_core::Cairn;
use cairn_entity::backup;
use cairn_entity::enums::BackupStatus;

use super::Attempt;
use crate::failure::{internal, Failure};

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The size of the newest successful archive of the same volume (same
/// organization, app and volume), the estimate of what this one needs.
async fn previous_size(cairn: &Cairn, model: &backup::Model) -> Result<Option<u64>, Failure> {
    let previous = backup::Entity::find()
        .filter(backup::Column::OrganizationId.eq(model.organization_id))
        .filter(backup::Column::AppId.eq(model.app_id))
        .filter(backup::Column::VolumeName.eq(model.volume_name.clone()))
        .filter(backup::Column::Status.eq(BackupStatus::Success))
        .filter(backup::Column::Id.ne(model.id))
        .filter(backup::Column::ArchiveSize.is_not_null())
        .order_by_desc(backup::Column::Id)
        .limit(1)
        .one(&cairn.db)
        .await
        .map_err(internal)?;
    Ok(previous
        .and_then(|b| b.archive_size)
        .map(|s| s.max(0) as u64))
}

/// Checks the primary target's free space (targets that can tell: local
/// directories) and the data directory's, before anything is written.
pub(super) async fn check(
    cairn: &Cairn,
    attempt: &mut Attempt,
    target: &cairn_entity::backup_target::Model,
    storage: &Arc<dyn Storage>,
) -> Result<(), Failure> {
    let metrics = cairn_core::metrics::backup_metrics();
    let warn_below = cairn.config.disk.warn_free_bytes();
    let data_dir = cairn.config.data_dir.clone();
    match tokio::task::spawn_blocking(move || cairn_core::disk::free_bytes(&data_dir)).await {
        Ok(Ok(free)) => {
            metrics.data_dir_free.set(free as f64);
            if free < warn_below {
                attempt.note(
                    "warn",
                    format!(
                        "Cairn's data directory has {} free, below disk.warn_free_mb ({} MiB)",
                        mib(free),
                        cairn.config.disk.warn_free_mb
                    ),
                );
            }
        }
        Ok(Err(error)) => {
            tracing::warn!("measuring the data directory's free space failed: {error}");
        }
        Err(error) => tracing::warn!("measuring the data directory's free space failed: {error}"),
    }
    let free = match storage.free_space().await {
        Ok(Some(free)) => free,
        Ok(None) => return Ok(()),
        Err(error) => {
            attempt.note(
                "warn",
                format!(
                    "the free space of target '{}' could not be measured: {error}",
                    target.name
                ),
            );
            return Ok(());
        }
    };
    metrics
        .target_free
        .with_label_values(&[&target.id.to_string()])
        .set(free as f64);
    if let Some(needed) = previous_size(cairn, &attempt.model).await? {
        if free < needed {
            return Err(Failure::new(
                FailureCode::InsufficientSpace,
                format!(
                    "target '{}' has {} free and this volume's previous archive took {}; \
                     nothing was written (free space on the target, or prune older backups)",
                    target.name,
                    mib(free),
                    mib(needed)
                ),
            ));
        }
    }
    if free < warn_below {
        attempt.note(
            "warn",
            format!(
                "target '{}' has {} free, below disk.warn_free_mb ({} MiB)",
                target.name,
                mib(free),
                cairn.config.disk.warn_free_mb
            ),
        );
        // Once a day per target and organization (the delivery's key says
        // which day); a failure to enqueue never fails the backup.
        let subject = Subject::LowSpace {
            organization_id: attempt.model.organization_id,
            target_id: target.id,
            free_bytes: free,
            warn_free_bytes: warn_below,
        };
        if let Err(error) = notifications::enqueue(&cairn.db, subject, chrono::Utc::now()).await {
            tracing::warn!(
                target_id = %target.id,
                error = format!("{error:#}"),
                "notifying target.low_space failed"
            );
        }
    }
    Ok(())
}
