//! The initial schema: every table of the design, with its foreign keys and
//! unique constraints.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Organizations {
    Table,
    Id,
    Slug,
    Name,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ApiTokens {
    Table,
    Id,
    OrganizationId,
    Name,
    Role,
    TokenHash,
    TokenPrefix,
    CreatedAt,
    LastUsedAt,
}

#[derive(DeriveIden)]
enum BackupTargets {
    Table,
    Id,
    OrganizationId,
    Name,
    TargetType,
    Config,
    SecretsCiphertext,
    IsDefault,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Apps {
    Table,
    Id,
    OrganizationId,
    Name,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Volumes {
    Table,
    Id,
    AppId,
    Name,
    Persistent,
    Kind,
    PostgresConfig,
    PostgresPasswordCiphertext,
    CreatedAt,
}

#[derive(DeriveIden)]
enum BackupJobs {
    Table,
    Id,
    OrganizationId,
    Name,
    Schedule,
    Enabled,
    TargetId,
    KeepAll,
    KeepLast,
    KeepHourly,
    KeepDaily,
    KeepWeekly,
    KeepMonthly,
    KeepYearly,
    NotifyOnSuccess,
    NotifyOnFailure,
    LastRunAt,
    NextRunAt,
    AutoCreated,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum BackupJobApps {
    Table,
    JobId,
    AppId,
}

#[derive(DeriveIden)]
enum BackupRuns {
    Table,
    Id,
    JobId,
    Trigger,
    ScheduledFor,
    Status,
    Reason,
    CreatedAt,
    FinishedAt,
}

#[derive(DeriveIden)]
enum Backups {
    Table,
    Id,
    OrganizationId,
    RunId,
    JobId,
    AppId,
    TargetId,
    AppName,
    VolumeName,
    Status,
    ArchiveSize,
    StoragePath,
    Sha256,
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
enum Restores {
    Table,
    Id,
    OrganizationId,
    BackupId,
    AppId,
    VolumeName,
    Status,
    SafetyBackupId,
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
enum NotificationChannels {
    Table,
    Id,
    OrganizationId,
    Name,
    ChannelType,
    Config,
    SecretsCiphertext,
    Enabled,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum NotificationDeliveries {
    Table,
    Id,
    ChannelId,
    RunId,
    RestoreId,
    Event,
    Status,
    Attempt,
    ResponseCode,
    Error,
    CreatedAt,
    DeliveredAt,
}

fn fk(
    from_table: impl IntoIden + 'static,
    from_col: impl IntoIden,
    to_table: impl IntoIden + 'static,
    to_col: impl IntoIden,
    on_delete: ForeignKeyAction,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .from(from_table, from_col)
        .to(to_table, to_col)
        .on_delete(on_delete)
        .on_update(ForeignKeyAction::Cascade)
        .to_owned()
}

fn created_at<T: IntoIden>(col: T) -> ColumnDef {
    timestamp_with_time_zone(col)
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use ForeignKeyAction::{Cascade, NoAction, SetNull};

        manager
            .create_table(
                Table::create()
                    .table(Organizations::Table)
                    .col(uuid(Organizations::Id).primary_key())
                    .col(string_len_uniq(Organizations::Slug, 63))
                    .col(string_len(Organizations::Name, 200))
                    .col(created_at(Organizations::CreatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ApiTokens::Table)
                    .col(uuid(ApiTokens::Id).primary_key())
                    .col(uuid_null(ApiTokens::OrganizationId))
                    .col(string_len(ApiTokens::Name, 200))
                    .col(string_len(ApiTokens::Role, 16))
                    .col(string_len_uniq(ApiTokens::TokenHash, 64))
                    .col(string_len(ApiTokens::TokenPrefix, 16))
                    .col(created_at(ApiTokens::CreatedAt))
                    .col(timestamp_with_time_zone_null(ApiTokens::LastUsedAt))
                    .foreign_key(&mut fk(
                        ApiTokens::Table,
                        ApiTokens::OrganizationId,
                        Organizations::Table,
                        Organizations::Id,
                        Cascade,
                    ))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(BackupTargets::Table)
                    .col(uuid(BackupTargets::Id).primary_key())
                    .col(uuid_null(BackupTargets::OrganizationId))
                    .col(string_len(BackupTargets::Name, 200))
                    .col(string_len(BackupTargets::TargetType, 16))
                    .col(json_binary(BackupTargets::Config))
                    .col(text_null(BackupTargets::SecretsCiphertext))
                    .col(boolean(BackupTargets::IsDefault).default(false))
                    .col(created_at(BackupTargets::CreatedAt))
                    .col(timestamp_with_time_zone(BackupTargets::UpdatedAt))
                    .foreign_key(&mut fk(
                        BackupTargets::Table,
                        BackupTargets::OrganizationId,
                        Organizations::Table,
                        Organizations::Id,
                        Cascade,
                    ))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Apps::Table)
                    .col(uuid(Apps::Id).primary_key())
                    .col(uuid(Apps::OrganizationId))
                    .col(string_len(Apps::Name, 63))
                    .col(created_at(Apps::CreatedAt))
                    .col(timestamp_with_time_zone(Apps::UpdatedAt))
                    .foreign_key(&mut fk(
                        Apps::Table,
                        Apps::OrganizationId,
                        Organizations::Table,
                        Organizations::Id,
                        Cascade,
                    ))
                    .index(
                        Index::create()
                            .name("ux_apps_organization_name")
                            .col(Apps::OrganizationId)
                            .col(Apps::Name)
                            .unique(),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Volumes::Table)
                    .col(uuid(Volumes::Id).primary_key())
                    .col(uuid(Volumes::AppId))
                    .col(string_len(Volumes::Name, 63))
                    .col(boolean(Volumes::Persistent))
                    .col(string_len(Volumes::Kind, 16))
                    .col(json_binary_null(Volumes::PostgresConfig))
                    .col(text_null(Volumes::PostgresPasswordCiphertext))
                    .col(created_at(Volumes::CreatedAt))
                    .foreign_key(&mut fk(
                        Volumes::Table,
                        Volumes::AppId,
                        Apps::Table,
                        Apps::Id,
                        Cascade,
                    ))
                    .index(
                        Index::create()
                            .name("ux_volumes_app_name")
                            .col(Volumes::AppId)
                            .col(Volumes::Name)
                            .unique(),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(BackupJobs::Table)
                    .col(uuid(BackupJobs::Id).primary_key())
                    .col(uuid(BackupJobs::OrganizationId))
                    .col(string_len(BackupJobs::Name, 200))
                    .col(string_len(BackupJobs::Schedule, 200))
                    .col(boolean(BackupJobs::Enabled))
                    .col(uuid_null(BackupJobs::TargetId))
                    .col(boolean(BackupJobs::KeepAll))
                    .col(integer_null(BackupJobs::KeepLast))
                    .col(integer_null(BackupJobs::KeepHourly))
                    .col(integer_null(BackupJobs::KeepDaily))
                    .col(integer_null(BackupJobs::KeepWeekly))
                    .col(integer_null(BackupJobs::KeepMonthly))
                    .col(integer_null(BackupJobs::KeepYearly))
                    .col(boolean(BackupJobs::NotifyOnSuccess))
                    .col(boolean(BackupJobs::NotifyOnFailure))
                    .col(timestamp_with_time_zone_null(BackupJobs::LastRunAt))
                    .col(timestamp_with_time_zone_null(BackupJobs::NextRunAt))
                    .col(boolean(BackupJobs::AutoCreated))
                    .col(created_at(BackupJobs::CreatedAt))
                    .col(timestamp_with_time_zone(BackupJobs::UpdatedAt))
                    .foreign_key(&mut fk(
                        BackupJobs::Table,
                        BackupJobs::OrganizationId,
                        Organizations::Table,
                        Organizations::Id,
                        Cascade,
                    ))
                    // A target that a job writes to cannot disappear under it.
                    // NO ACTION rather than RESTRICT: it is checked at the end
                    // of the statement, so deleting a whole organization, which
                    // cascades to both sides, still succeeds.
                    .foreign_key(&mut fk(
                        BackupJobs::Table,
                        BackupJobs::TargetId,
                        BackupTargets::Table,
                        BackupTargets::Id,
                        NoAction,
                    ))
                    .index(
                        Index::create()
                            .name("ux_backup_jobs_organization_name")
                            .col(BackupJobs::OrganizationId)
                            .col(BackupJobs::Name)
                            .unique(),
                    )
                    .to_owned(),
            )
            .await?;
        // The scheduler's query: enabled jobs whose next run is due.
        manager
            .create_index(
                Index::create()
                    .name("ix_backup_jobs_due")
                    .table(BackupJobs::Table)
                    .col(BackupJobs::Enabled)
                    .col(BackupJobs::NextRunAt)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(BackupJobApps::Table)
                    .col(uuid(BackupJobApps::JobId))
                    .col(uuid(BackupJobApps::AppId))
                    .primary_key(
                        Index::create()
                            .col(BackupJobApps::JobId)
                            .col(BackupJobApps::AppId),
                    )
                    .foreign_key(&mut fk(
                        BackupJobApps::Table,
                        BackupJobApps::JobId,
                        BackupJobs::Table,
                        BackupJobs::Id,
                        Cascade,
                    ))
                    .foreign_key(&mut fk(
                        BackupJobApps::Table,
                        BackupJobApps::AppId,
                        Apps::Table,
                        Apps::Id,
                        Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_backup_job_apps_app")
                    .table(BackupJobApps::Table)
                    .col(BackupJobApps::AppId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(BackupRuns::Table)
                    .col(uuid(BackupRuns::Id).primary_key())
                    .col(uuid(BackupRuns::JobId))
                    .col(string_len(BackupRuns::Trigger, 16))
                    .col(timestamp_with_time_zone(BackupRuns::ScheduledFor))
                    .col(string_len(BackupRuns::Status, 16))
                    .col(text_null(BackupRuns::Reason))
                    .col(created_at(BackupRuns::CreatedAt))
                    .col(timestamp_with_time_zone_null(BackupRuns::FinishedAt))
                    .foreign_key(&mut fk(
                        BackupRuns::Table,
                        BackupRuns::JobId,
                        BackupJobs::Table,
                        BackupJobs::Id,
                        Cascade,
                    ))
                    // The fence of exactly-once firing: one run per job and slot.
                    .index(
                        Index::create()
                            .name("ux_backup_runs_job_slot")
                            .col(BackupRuns::JobId)
                            .col(BackupRuns::ScheduledFor)
                            .unique(),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Backups::Table)
                    .col(uuid(Backups::Id).primary_key())
                    .col(uuid(Backups::OrganizationId))
                    .col(uuid_null(Backups::RunId))
                    .col(uuid_null(Backups::JobId))
                    .col(uuid_null(Backups::AppId))
                    .col(uuid_null(Backups::TargetId))
                    .col(string_len(Backups::AppName, 63))
                    .col(string_len(Backups::VolumeName, 63))
                    .col(string_len(Backups::Status, 16))
                    .col(big_integer_null(Backups::ArchiveSize))
                    .col(text_null(Backups::StoragePath))
                    .col(string_len_null(Backups::Sha256, 64))
                    .col(json_binary(Backups::Log))
                    .col(string_len_null(Backups::ErrorCode, 64))
                    .col(text_null(Backups::ErrorMessage))
                    .col(integer(Backups::Attempt).default(0))
                    .col(string_len_null(Backups::LeaseOwner, 128))
                    .col(timestamp_with_time_zone_null(Backups::LeaseExpiresAt))
                    .col(created_at(Backups::CreatedAt))
                    .col(timestamp_with_time_zone_null(Backups::StartedAt))
                    .col(timestamp_with_time_zone_null(Backups::FinishedAt))
                    .foreign_key(&mut fk(
                        Backups::Table,
                        Backups::OrganizationId,
                        Organizations::Table,
                        Organizations::Id,
                        Cascade,
                    ))
                    // History outlives the run, job and app that produced it.
                    .foreign_key(&mut fk(
                        Backups::Table,
                        Backups::RunId,
                        BackupRuns::Table,
                        BackupRuns::Id,
                        SetNull,
                    ))
                    .foreign_key(&mut fk(
                        Backups::Table,
                        Backups::JobId,
                        BackupJobs::Table,
                        BackupJobs::Id,
                        SetNull,
                    ))
                    .foreign_key(&mut fk(
                        Backups::Table,
                        Backups::AppId,
                        Apps::Table,
                        Apps::Id,
                        SetNull,
                    ))
                    // Archives live on the target: it cannot be deleted while
                    // history points at it.
                    .foreign_key(&mut fk(
                        Backups::Table,
                        Backups::TargetId,
                        BackupTargets::Table,
                        BackupTargets::Id,
                        NoAction,
                    ))
                    .to_owned(),
            )
            .await?;
        for (name, cols) in [
            (
                "ix_backups_organization_id",
                vec![Backups::OrganizationId, Backups::Id],
            ),
            ("ix_backups_status", vec![Backups::Status]),
            ("ix_backups_job", vec![Backups::JobId]),
            ("ix_backups_run", vec![Backups::RunId]),
        ] {
            let mut index = Index::create();
            index.name(name).table(Backups::Table);
            for col in cols {
                index.col(col);
            }
            manager.create_index(index.to_owned()).await?;
        }

        manager
            .create_table(
                Table::create()
                    .table(Restores::Table)
                    .col(uuid(Restores::Id).primary_key())
                    .col(uuid(Restores::OrganizationId))
                    .col(uuid(Restores::BackupId))
                    .col(uuid_null(Restores::AppId))
                    .col(string_len(Restores::VolumeName, 63))
                    .col(string_len(Restores::Status, 16))
                    .col(uuid_null(Restores::SafetyBackupId))
                    .col(json_binary(Restores::Log))
                    .col(string_len_null(Restores::ErrorCode, 64))
                    .col(text_null(Restores::ErrorMessage))
                    .col(integer(Restores::Attempt).default(0))
                    .col(string_len_null(Restores::LeaseOwner, 128))
                    .col(timestamp_with_time_zone_null(Restores::LeaseExpiresAt))
                    .col(created_at(Restores::CreatedAt))
                    .col(timestamp_with_time_zone_null(Restores::StartedAt))
                    .col(timestamp_with_time_zone_null(Restores::FinishedAt))
                    .foreign_key(&mut fk(
                        Restores::Table,
                        Restores::OrganizationId,
                        Organizations::Table,
                        Organizations::Id,
                        Cascade,
                    ))
                    .foreign_key(&mut fk(
                        Restores::Table,
                        Restores::BackupId,
                        Backups::Table,
                        Backups::Id,
                        Cascade,
                    ))
                    .foreign_key(&mut fk(
                        Restores::Table,
                        Restores::AppId,
                        Apps::Table,
                        Apps::Id,
                        SetNull,
                    ))
                    .foreign_key(&mut fk(
                        Restores::Table,
                        Restores::SafetyBackupId,
                        Backups::Table,
                        Backups::Id,
                        SetNull,
                    ))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(NotificationChannels::Table)
                    .col(uuid(NotificationChannels::Id).primary_key())
                    .col(uuid(NotificationChannels::OrganizationId))
                    .col(string_len(NotificationChannels::Name, 200))
                    .col(string_len(NotificationChannels::ChannelType, 16))
                    .col(json_binary(NotificationChannels::Config))
                    .col(text_null(NotificationChannels::SecretsCiphertext))
                    .col(boolean(NotificationChannels::Enabled))
                    .col(created_at(NotificationChannels::CreatedAt))
                    .col(timestamp_with_time_zone(NotificationChannels::UpdatedAt))
                    .foreign_key(&mut fk(
                        NotificationChannels::Table,
                        NotificationChannels::OrganizationId,
                        Organizations::Table,
                        Organizations::Id,
                        Cascade,
                    ))
                    .index(
                        Index::create()
                            .name("ux_notification_channels_organization_name")
                            .col(NotificationChannels::OrganizationId)
                            .col(NotificationChannels::Name)
                            .unique(),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(NotificationDeliveries::Table)
                    .col(uuid(NotificationDeliveries::Id).primary_key())
                    .col(uuid(NotificationDeliveries::ChannelId))
                    .col(uuid_null(NotificationDeliveries::RunId))
                    .col(uuid_null(NotificationDeliveries::RestoreId))
                    .col(string_len(NotificationDeliveries::Event, 64))
                    .col(string_len(NotificationDeliveries::Status, 16))
                    .col(integer(NotificationDeliveries::Attempt).default(0))
                    .col(integer_null(NotificationDeliveries::ResponseCode))
                    .col(text_null(NotificationDeliveries::Error))
                    .col(created_at(NotificationDeliveries::CreatedAt))
                    .col(timestamp_with_time_zone_null(
                        NotificationDeliveries::DeliveredAt,
                    ))
                    .foreign_key(&mut fk(
                        NotificationDeliveries::Table,
                        NotificationDeliveries::ChannelId,
                        NotificationChannels::Table,
                        NotificationChannels::Id,
                        Cascade,
                    ))
                    .foreign_key(&mut fk(
                        NotificationDeliveries::Table,
                        NotificationDeliveries::RunId,
                        BackupRuns::Table,
                        BackupRuns::Id,
                        SetNull,
                    ))
                    .foreign_key(&mut fk(
                        NotificationDeliveries::Table,
                        NotificationDeliveries::RestoreId,
                        Restores::Table,
                        Restores::Id,
                        SetNull,
                    ))
                    .to_owned(),
            )
            .await?;

        // Partial unique indexes, in the SQL that SQLite and PostgreSQL share:
        // target names are unique per organization and among system-level
        // targets, and an organization has at most one default target.
        let db = manager.get_connection();
        for statement in [
            "CREATE UNIQUE INDEX ux_backup_targets_organization_name \
             ON backup_targets (organization_id, name) WHERE organization_id IS NOT NULL",
            "CREATE UNIQUE INDEX ux_backup_targets_system_name \
             ON backup_targets (name) WHERE organization_id IS NULL",
            "CREATE UNIQUE INDEX ux_backup_targets_organization_default \
             ON backup_targets (organization_id) WHERE is_default",
            "CREATE INDEX ix_api_tokens_organization ON api_tokens (organization_id)",
        ] {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            NotificationDeliveries::Table.into_iden(),
            NotificationChannels::Table.into_iden(),
            Restores::Table.into_iden(),
            Backups::Table.into_iden(),
            BackupRuns::Table.into_iden(),
            BackupJobApps::Table.into_iden(),
            BackupJobs::Table.into_iden(),
            Volumes::Table.into_iden(),
            Apps::Table.into_iden(),
            BackupTargets::Table.into_iden(),
            ApiTokens::Table.into_iden(),
            Organizations::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
