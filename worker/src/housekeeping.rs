//! Bounded growth: what nobody asked to keep forever is removed on a
//! schedule, by one pass that tests call with a chosen `now`.
//!
//! 1. Safety backups (taken before restores) older than
//!    `safety_backup_retention_days` are pruned like other backups — archive
//!    first, then sidecars, then `pruned` — unless one is the only
//!    successful backup of its app and volume, or a restore reads it.
//! 2. Notification deliveries that ended (`sent`, `failed`) more than
//!    `notifications.keep_days` ago are deleted.
//! 3. Organizations deleted more than `org_deletion_grace_days` ago are
//!    purged (records and key pair; their slugs retired; archives stay).
//! 4. Every target is swept for orphans and missing archives once per
//!    `orphans.schedule` slot (`cairn_core::catalog::sweep_due`).

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use cairn_core::history::{self};
use cairn_core::Cairn;
use cairn_entity::enums::{BackupStatus, DeliveryStatus, Trigger};
use cairn_entity::{backup, notification_delivery};

use crate::lease::{append_log, line};

/// What one pass removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Housekept {
    pub safety_backups_pruned: usize,
    pub deliveries_deleted: u64,
    pub organizations_purged: usize,
    /// Targets swept for orphans and missing archives (their
    /// `orphans.schedule` slot was due and no other worker took it).
    pub targets_swept: usize,
}

/// One pass (see the module's steps).
pub async fn housekeeping(cairn: &Cairn, now: DateTime<Utc>) -> anyhow::Result<Housekept> {
    let mut done = Housekept::default();
    let cutoff = now - chrono::Duration::days(i64::from(cairn.config.safety_backup_retention_days));
    let expired = backup::Entity::find()
        .filter(backup::Column::Trigger.eq(Trigger::Safety))
        .filter(backup::Column::Status.eq(BackupStatus::Success))
        .filter(backup::Column::CreatedAt.lt(cutoff))
        .all(&cairn.db)
        .await?;
    let read = history::being_read(&cairn.db, expired.iter().map(|b| b.id).collect(), now).await?;
    for model in expired {
        if read.contains(&model.id) {
            continue;
        }
        let others = backup::Entity::find()
            .filter(backup::Column::OrganizationId.eq(model.organization_id))
            .filter(backup::Column::AppName.eq(&model.app_name))
            .filter(backup::Column::VolumeName.eq(&model.volume_name))
            .filter(backup::Column::Status.eq(BackupStatus::Success))
            .filter(backup::Column::Id.ne(model.id))
            .filter(history::counted())
            .one(&cairn.db)
            .await?;
        if others.is_none() {
            // The only copy of this volume's data: kept, whatever its age.
            continue;
        }
        if let Err(error) = history::delete_stored(cairn, &model).await {
            tracing::warn!(backup_id = %model.id, "pruning an expired safety backup failed: {error}");
            continue;
        }
        let updated = backup::Entity::update_many()
            .col_expr(
                backup::Column::Status,
                sea_orm::sea_query::Expr::value(BackupStatus::Pruned),
            )
            .filter(backup::Column::Id.eq(model.id))
            .filter(backup::Column::Status.eq(BackupStatus::Success))
            .exec(&cairn.db)
            .await?;
        if updated.rows_affected == 1 {
            done.safety_backups_pruned += 1;
            append_log(
                &cairn.db,
                model.id,
                vec![line(
                    "info",
                    format!(
                        "pruned: a safety backup older than safety_backup_retention_days ({})",
                        cairn.config.safety_backup_retention_days
                    ),
                )],
            )
            .await?;
        }
    }
    let kept_since = now - chrono::Duration::days(i64::from(cairn.config.notifications.keep_days));
    let deleted = notification_delivery::Entity::delete_many()
        .filter(
            notification_delivery::Column::Status
                .is_in([DeliveryStatus::Sent, DeliveryStatus::Failed]),
        )
        .filter(notification_delivery::Column::CreatedAt.lt(kept_since))
        .exec(&cairn.db)
        .await?;
    done.deliveries_deleted = deleted.rows_affected;
    let grace = chrono::Duration::days(i64::from(cairn.config.org_deletion_grace_days));
    done.organizations_purged = cairn_core::orgs::purge(&cairn.db, now - grace).await?;
    done.targets_swept = cairn_core::catalog::sweep_due(cairn, now).await?;
    Ok(done)
}
