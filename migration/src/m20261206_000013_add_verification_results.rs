//! A verification's `tables` (for a database backup restored into a
//! scratch database, every table with the rows restored and the rows the
//! backup recorded), a job's `rto_target_seconds` (how long a restore of
//! one of its volumes may take, held to restore-mode verifications), and a
//! notification delivery's `verification_id` (the deliveries of
//! `backup.verification.*` events, once per channel and event).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Verifications {
    Table,
    Tables,
}

#[derive(DeriveIden)]
enum NotificationDeliveries {
    Table,
    VerificationId,
}

#[derive(DeriveIden)]
enum BackupJobs {
    Table,
    RtoTargetSeconds,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Verifications::Table)
                    .add_column(json_binary_null(Verifications::Tables))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(BackupJobs::Table)
                    .add_column(integer_null(BackupJobs::RtoTargetSeconds))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(NotificationDeliveries::Table)
                    .add_column(uuid_null(NotificationDeliveries::VerificationId))
                    .to_owned(),
            )
            .await?;
        // However many attempts record a verification's outcome, its event
        // reaches a channel once.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX ux_notification_deliveries_verification \
                 ON notification_deliveries (channel_id, verification_id, event)",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("ALTER TABLE verifications DROP COLUMN tables")
            .await?;
        manager
            .get_connection()
            .execute_unprepared("ALTER TABLE backup_jobs DROP COLUMN rto_target_seconds")
            .await?;
        manager
            .get_connection()
            .execute_unprepared("DROP INDEX ux_notification_deliveries_verification")
            .await?;
        manager
            .get_connection()
            .execute_unprepared("ALTER TABLE notification_deliveries DROP COLUMN verification_id")
            .await?;
        Ok(())
    }
}
