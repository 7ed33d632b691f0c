//! What the scheduler needs: a job's time zone and starting deadline, the
//! flag it sets on a job whose stored schedule cannot be read, the job's
//! health (last success, consecutive failures), and the range of slots a
//! `missed` run stands for.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum BackupJobs {
    Table,
    Timezone,
    StartingDeadlineSeconds,
    ScheduleError,
    LastSuccessAt,
    ConsecutiveFailures,
}

#[derive(DeriveIden)]
enum BackupRuns {
    Table,
    MissedCount,
    MissedFrom,
    MissedTo,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite takes one column per ALTER TABLE.
        let columns: Vec<(DynIden, ColumnDef)> = vec![
            (
                BackupJobs::Table.into_iden(),
                string_len(BackupJobs::Timezone, 64)
                    .default("UTC")
                    .to_owned(),
            ),
            (
                BackupJobs::Table.into_iden(),
                integer(BackupJobs::StartingDeadlineSeconds)
                    .default(3600)
                    .to_owned(),
            ),
            (
                BackupJobs::Table.into_iden(),
                text_null(BackupJobs::ScheduleError),
            ),
            (
                BackupJobs::Table.into_iden(),
                timestamp_with_time_zone_null(BackupJobs::LastSuccessAt),
            ),
            (
                BackupJobs::Table.into_iden(),
                integer(BackupJobs::ConsecutiveFailures)
                    .default(0)
                    .to_owned(),
            ),
            (
                BackupRuns::Table.into_iden(),
                integer_null(BackupRuns::MissedCount),
            ),
            (
                BackupRuns::Table.into_iden(),
                timestamp_with_time_zone_null(BackupRuns::MissedFrom),
            ),
            (
                BackupRuns::Table.into_iden(),
                timestamp_with_time_zone_null(BackupRuns::MissedTo),
            ),
        ];
        for (table, mut column) in columns {
            manager
                .alter_table(
                    Table::alter()
                        .table(table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let columns: Vec<(DynIden, DynIden)> = vec![
            (
                BackupJobs::Table.into_iden(),
                BackupJobs::Timezone.into_iden(),
            ),
            (
                BackupJobs::Table.into_iden(),
                BackupJobs::StartingDeadlineSeconds.into_iden(),
            ),
            (
                BackupJobs::Table.into_iden(),
                BackupJobs::ScheduleError.into_iden(),
            ),
            (
                BackupJobs::Table.into_iden(),
                BackupJobs::LastSuccessAt.into_iden(),
            ),
            (
                BackupJobs::Table.into_iden(),
                BackupJobs::ConsecutiveFailures.into_iden(),
            ),
            (
                BackupRuns::Table.into_iden(),
                BackupRuns::MissedCount.into_iden(),
            ),
            (
                BackupRuns::Table.into_iden(),
                BackupRuns::MissedFrom.into_iden(),
            ),
            (
                BackupRuns::Table.into_iden(),
                BackupRuns::MissedTo.into_iden(),
            ),
        ];
        for (table, column) in columns {
            manager
                .alter_table(Table::alter().table(table).drop_column(column).to_owned())
                .await?;
        }
        Ok(())
    }
}
