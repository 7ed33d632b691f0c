//! A job's `max_duration_seconds`: a backup or restore running longer is
//! cancelled and fails `deadline_exceeded` (nothing runs forever).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum BackupJobs {
    Table,
    MaxDurationSeconds,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(BackupJobs::Table)
                    .add_column(integer(BackupJobs::MaxDurationSeconds).default(21_600))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("ALTER TABLE backup_jobs DROP COLUMN max_duration_seconds")
            .await?;
        Ok(())
    }
}
