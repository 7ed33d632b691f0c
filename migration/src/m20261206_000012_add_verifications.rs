//! Verifications: a successful backup read back — or restored into scratch
//! space — to prove that it restores, with the checks it passed or failed.
//! Claimed by workers under a lease like backups and restores; the index
//! serves the claim and the reaper. A job's verification schedule
//! (`verify_schedule`, `verify_mode`, `next_verify_at`): a scheduled
//! verification carries its slot (`scheduled_for`), and the unique
//! `(job_id, backup_id, scheduled_for)` keeps a slot to one verification of
//! each backup across scheduler replicas. And a job's recovery point
//! objective (`rpo_target_seconds`), held against its verified backups.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Verifications {
    Table,
    Id,
    OrganizationId,
    BackupId,
    JobId,
    AppId,
    AppName,
    VolumeName,
    Mode,
    Trigger,
    ScheduledFor,
    Status,
    Checks,
    DownloadMs,
    RestoreMs,
    TotalMs,
    Log,
    ErrorCode,
    ErrorMessage,
    Attempt,
    LeaseOwner,
    LeaseExpiresAt,
    CreatedAt,
    StartedAt,
    FinishedAt,
}

#[derive(DeriveIden)]
enum Organizations {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Backups {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum BackupJobs {
    Table,
    Id,
    RpoTargetSeconds,
    VerifySchedule,
    VerifyMode,
    NextVerifyAt,
}

#[derive(DeriveIden)]
enum Apps {
    Table,
    Id,
}

fn fk(
    column: Verifications,
    to_table: impl IntoIden + 'static,
    to_column: impl IntoIden,
    on_delete: ForeignKeyAction,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .from(Verifications::Table, column)
        .to(to_table, to_column)
        .on_delete(on_delete)
        .on_update(ForeignKeyAction::Cascade)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use ForeignKeyAction::{Cascade, SetNull};
        manager
            .create_table(
                Table::create()
                    .table(Verifications::Table)
                    .col(uuid(Verifications::Id).primary_key())
                    .col(uuid(Verifications::OrganizationId))
                    .col(uuid(Verifications::BackupId))
                    .col(uuid_null(Verifications::JobId))
                    .col(uuid_null(Verifications::AppId))
                    .col(string_len(Verifications::AppName, 63))
                    .col(string_len(Verifications::VolumeName, 63))
                    .col(string_len(Verifications::Mode, 16))
                    .col(string_len(Verifications::Trigger, 16))
                    .col(timestamp_with_time_zone_null(Verifications::ScheduledFor))
                    .col(string_len(Verifications::Status, 16))
                    .col(json_binary(Verifications::Checks))
                    .col(big_integer_null(Verifications::DownloadMs))
                    .col(big_integer_null(Verifications::RestoreMs))
                    .col(big_integer_null(Verifications::TotalMs))
                    .col(json_binary(Verifications::Log))
                    .col(string_len_null(Verifications::ErrorCode, 64))
                    .col(text_null(Verifications::ErrorMessage))
                    .col(integer(Verifications::Attempt).default(0))
                    .col(string_len_null(Verifications::LeaseOwner, 128))
                    .col(timestamp_with_time_zone_null(Verifications::LeaseExpiresAt))
                    .col(timestamp_with_time_zone(Verifications::CreatedAt))
                    .col(timestamp_with_time_zone_null(Verifications::StartedAt))
                    .col(timestamp_with_time_zone_null(Verifications::FinishedAt))
                    .foreign_key(&mut fk(
                        Verifications::OrganizationId,
                        Organizations::Table,
                        Organizations::Id,
                        Cascade,
                    ))
                    .foreign_key(&mut fk(
                        Verifications::BackupId,
                        Backups::Table,
                        Backups::Id,
                        Cascade,
                    ))
                    .foreign_key(&mut fk(
                        Verifications::JobId,
                        BackupJobs::Table,
                        BackupJobs::Id,
                        SetNull,
                    ))
                    .foreign_key(&mut fk(
                        Verifications::AppId,
                        Apps::Table,
                        Apps::Id,
                        SetNull,
                    ))
                    .to_owned(),
            )
            .await?;
        // SQLite takes one column per ALTER TABLE.
        let columns = [
            integer_null(BackupJobs::RpoTargetSeconds),
            string_len_null(BackupJobs::VerifySchedule, 128),
            string_len(BackupJobs::VerifyMode, 16)
                .default("read")
                .to_owned(),
            timestamp_with_time_zone_null(BackupJobs::NextVerifyAt),
        ];
        for mut column in columns {
            manager
                .alter_table(
                    Table::alter()
                        .table(BackupJobs::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        let db = manager.get_connection();
        for statement in [
            "CREATE INDEX ix_verifications_lease ON verifications (status, lease_expires_at)",
            "CREATE INDEX ix_verifications_backup ON verifications (backup_id)",
            "CREATE INDEX ix_verifications_organization ON verifications (organization_id, id)",
            "CREATE UNIQUE INDEX ux_verifications_slot ON verifications (job_id, backup_id, scheduled_for) \
             WHERE scheduled_for IS NOT NULL",
            "CREATE INDEX ix_backup_jobs_verify_due ON backup_jobs (next_verify_at)",
        ] {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP INDEX ix_backup_jobs_verify_due")
            .await?;
        for column in [
            BackupJobs::RpoTargetSeconds,
            BackupJobs::VerifySchedule,
            BackupJobs::VerifyMode,
            BackupJobs::NextVerifyAt,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(BackupJobs::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .drop_table(Table::drop().table(Verifications::Table).to_owned())
            .await
    }
}
