//! Cairn's own database, backed up: `system_backups` records each
//! self-backup (claimed by workers under a lease like backups: `attempt`,
//! `lease_*`); the unique `scheduled_for` fires a slot once across
//! scheduler replicas, and a partial unique index on `engine` keeps one
//! pending or running self-backup at a time. `system_keys` holds the
//! system's age key pair (`name = 'age'`), the identity sealed under the
//! master key.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum SystemBackups {
    Table,
    Id,
    Status,
    Trigger,
    Engine,
    ScheduledFor,
    TargetId,
    TargetName,
    StoragePath,
    Size,
    Sha256,
    Manifest,
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
enum SystemKeys {
    Table,
    Name,
    Recipient,
    IdentityCiphertext,
    CreatedAt,
}

#[derive(DeriveIden)]
enum BackupTargets {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SystemBackups::Table)
                    .col(uuid(SystemBackups::Id).primary_key())
                    .col(string_len(SystemBackups::Status, 16))
                    .col(string_len(SystemBackups::Trigger, 16))
                    .col(string_len(SystemBackups::Engine, 16))
                    .col(timestamp_with_time_zone_null(SystemBackups::ScheduledFor))
                    .col(uuid_null(SystemBackups::TargetId))
                    .col(string_len(SystemBackups::TargetName, 200))
                    .col(text_null(SystemBackups::StoragePath))
                    .col(big_integer_null(SystemBackups::Size))
                    .col(string_len_null(SystemBackups::Sha256, 64))
                    .col(json_null(SystemBackups::Manifest))
                    .col(string_len_null(SystemBackups::ErrorCode, 64))
                    .col(text_null(SystemBackups::ErrorMessage))
                    .col(integer(SystemBackups::Attempt).default(0))
                    .col(string_len_null(SystemBackups::LeaseOwner, 128))
                    .col(timestamp_with_time_zone_null(SystemBackups::LeaseExpiresAt))
                    .col(timestamp_with_time_zone(SystemBackups::CreatedAt))
                    .col(timestamp_with_time_zone_null(SystemBackups::StartedAt))
                    .col(timestamp_with_time_zone_null(SystemBackups::FinishedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(SystemBackups::Table, SystemBackups::TargetId)
                            .to(BackupTargets::Table, BackupTargets::Id)
                            .on_delete(ForeignKeyAction::SetNull)
                            .on_update(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        db.execute_unprepared(
            "CREATE UNIQUE INDEX ux_system_backups_slot ON system_backups (scheduled_for)",
        )
        .await?;
        db.execute_unprepared(
            "CREATE UNIQUE INDEX ux_system_backups_active ON system_backups (engine) \
             WHERE status IN ('pending', 'running')",
        )
        .await?;
        manager
            .create_table(
                Table::create()
                    .table(SystemKeys::Table)
                    .col(string_len(SystemKeys::Name, 32).primary_key())
                    .col(text(SystemKeys::Recipient))
                    .col(text(SystemKeys::IdentityCiphertext))
                    .col(timestamp_with_time_zone(SystemKeys::CreatedAt))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(SystemKeys::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(SystemBackups::Table).to_owned())
            .await?;
        Ok(())
    }
}
