//! A verification's `tables` (for a database backup restored into a
//! scratch database, every table with the rows restored and the rows the
//! backup recorded) and a job's `rto_target_seconds` (how long a restore
//! of one of its volumes may take, held to restore-mode verifications).

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
            .await
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
        Ok(())
    }
}
