//! Copies on several targets. A job names up to three copy targets
//! (`backup_job_copy_targets`, in order); every backup of the job has one
//! `backup_copies` row per copy target: written with the primary in one
//! read of the source, or retried later from the primary. Copies are
//! claimed under a lease like backups (`attempt`, `lease_*`), once due
//! (`next_attempt_at`); the unique `(backup_id, target_id)` keeps one copy
//! of a backup per target.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum BackupJobCopyTargets {
    Table,
    JobId,
    TargetId,
    Position,
}

#[derive(DeriveIden)]
enum BackupCopies {
    Table,
    Id,
    BackupId,
    OrganizationId,
    TargetId,
    TargetName,
    Status,
    StoragePath,
    Sha256,
    Size,
    Attempt,
    NextAttemptAt,
    ErrorCode,
    ErrorMessage,
    LeaseOwner,
    LeaseExpiresAt,
    CreatedAt,
    StartedAt,
    FinishedAt,
}

#[derive(DeriveIden)]
enum Restores {
    Table,
    SourceTargetId,
}

#[derive(DeriveIden)]
enum Verifications {
    Table,
    SourceTargetId,
}

#[derive(DeriveIden)]
enum NotificationDeliveries {
    Table,
    CopyId,
}

#[derive(DeriveIden)]
enum BackupJobs {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum BackupTargets {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Backups {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Organizations {
    Table,
    Id,
}

fn fk(
    table: impl IntoIden + 'static,
    column: impl IntoIden + 'static,
    to_table: impl IntoIden + 'static,
    to_column: impl IntoIden,
    on_delete: ForeignKeyAction,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .from(table, column)
        .to(to_table, to_column)
        .on_delete(on_delete)
        .on_update(ForeignKeyAction::Cascade)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use ForeignKeyAction::{Cascade, Restrict, SetNull};
        manager
            .create_table(
                Table::create()
                    .table(BackupJobCopyTargets::Table)
                    .col(uuid(BackupJobCopyTargets::JobId))
                    .col(uuid(BackupJobCopyTargets::TargetId))
                    .col(integer(BackupJobCopyTargets::Position))
                    .primary_key(
                        Index::create()
                            .col(BackupJobCopyTargets::JobId)
                            .col(BackupJobCopyTargets::TargetId),
                    )
                    .foreign_key(&mut fk(
                        BackupJobCopyTargets::Table,
                        BackupJobCopyTargets::JobId,
                        BackupJobs::Table,
                        BackupJobs::Id,
                        Cascade,
                    ))
                    .foreign_key(&mut fk(
                        BackupJobCopyTargets::Table,
                        BackupJobCopyTargets::TargetId,
                        BackupTargets::Table,
                        BackupTargets::Id,
                        Restrict,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(BackupCopies::Table)
                    .col(uuid(BackupCopies::Id).primary_key())
                    .col(uuid(BackupCopies::BackupId))
                    .col(uuid(BackupCopies::OrganizationId))
                    .col(uuid_null(BackupCopies::TargetId))
                    .col(string_len(BackupCopies::TargetName, 200))
                    .col(string_len(BackupCopies::Status, 16))
                    .col(text_null(BackupCopies::StoragePath))
                    .col(string_len_null(BackupCopies::Sha256, 64))
                    .col(big_integer_null(BackupCopies::Size))
                    .col(integer(BackupCopies::Attempt).default(0))
                    .col(timestamp_with_time_zone(BackupCopies::NextAttemptAt))
                    .col(string_len_null(BackupCopies::ErrorCode, 64))
                    .col(text_null(BackupCopies::ErrorMessage))
                    .col(string_len_null(BackupCopies::LeaseOwner, 128))
                    .col(timestamp_with_time_zone_null(BackupCopies::LeaseExpiresAt))
                    .col(timestamp_with_time_zone(BackupCopies::CreatedAt))
                    .col(timestamp_with_time_zone_null(BackupCopies::StartedAt))
                    .col(timestamp_with_time_zone_null(BackupCopies::FinishedAt))
                    .foreign_key(&mut fk(
                        BackupCopies::Table,
                        BackupCopies::BackupId,
                        Backups::Table,
                        Backups::Id,
                        Cascade,
                    ))
                    .foreign_key(&mut fk(
                        BackupCopies::Table,
                        BackupCopies::OrganizationId,
                        Organizations::Table,
                        Organizations::Id,
                        Cascade,
                    ))
                    .foreign_key(&mut fk(
                        BackupCopies::Table,
                        BackupCopies::TargetId,
                        BackupTargets::Table,
                        BackupTargets::Id,
                        SetNull,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(NotificationDeliveries::Table)
                    .add_column(uuid_null(NotificationDeliveries::CopyId))
                    .to_owned(),
            )
            .await?;
        // A restore or verification asked to read one target's archive.
        manager
            .alter_table(
                Table::alter()
                    .table(Restores::Table)
                    .add_column(uuid_null(Restores::SourceTargetId))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Verifications::Table)
                    .add_column(uuid_null(Verifications::SourceTargetId))
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        for statement in [
            // A copy's final failure reaches a channel once.
            "CREATE UNIQUE INDEX ux_notification_deliveries_copy \
             ON notification_deliveries (channel_id, copy_id, event)",
            "CREATE UNIQUE INDEX ux_backup_copies_target ON backup_copies (backup_id, target_id)",
            "CREATE INDEX ix_backup_copies_due ON backup_copies (status, next_attempt_at)",
            "CREATE INDEX ix_backup_copies_lease ON backup_copies (status, lease_expires_at)",
            "CREATE INDEX ix_backup_copies_on_target ON backup_copies (target_id, status)",
            "CREATE INDEX ix_backup_job_copy_targets_target ON backup_job_copy_targets (target_id)",
        ] {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP INDEX ux_notification_deliveries_copy")
            .await?;
        db.execute_unprepared("ALTER TABLE notification_deliveries DROP COLUMN copy_id")
            .await?;
        db.execute_unprepared("ALTER TABLE restores DROP COLUMN source_target_id")
            .await?;
        db.execute_unprepared("ALTER TABLE verifications DROP COLUMN source_target_id")
            .await?;
        manager
            .drop_table(Table::drop().table(BackupCopies::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(BackupJobCopyTargets::Table).to_owned())
            .await
    }
}
