//! `verifications.backup_finished_at`: when the verified backup finished
//! (a successful backup's `finished_at` never changes), copied in when the
//! verification is recorded and filled in here for the existing ones; with
//! the index `verifications (job_id, backup_finished_at)`, a job's recovery
//! point (its newest backup proven to restore) is one `LIMIT 1` walk back
//! from the newest verified backup, however many verifications the job has.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Verifications {
    Table,
    BackupFinishedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Verifications::Table)
                    .add_column(timestamp_with_time_zone_null(
                        Verifications::BackupFinishedAt,
                    ))
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        db.execute_unprepared(
            "UPDATE verifications SET backup_finished_at = \
             (SELECT b.finished_at FROM backups b WHERE b.id = verifications.backup_id)",
        )
        .await?;
        db.execute_unprepared(
            "CREATE INDEX ix_verifications_job_backup_finished \
             ON verifications (job_id, backup_finished_at)",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP INDEX ix_verifications_job_backup_finished")
            .await?;
        db.execute_unprepared("ALTER TABLE verifications DROP COLUMN backup_finished_at")
            .await?;
        Ok(())
    }
}
