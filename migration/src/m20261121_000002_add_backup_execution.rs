//! What running backups needs beyond the initial schema: a job's
//! compression, encryption and extra recipients; a volume's exclude
//! patterns; a backup's trigger, kind and manifest; an organization's age
//! key pair; the fence that keeps a job to one active run; and unique
//! archive paths per target.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum BackupJobs {
    Table,
    Compression,
    Encryption,
    ExtraRecipients,
}

#[derive(DeriveIden)]
enum Volumes {
    Table,
    ExcludePatterns,
}

#[derive(DeriveIden)]
enum Backups {
    Table,
    Trigger,
    Kind,
    Manifest,
}

#[derive(DeriveIden)]
enum Organizations {
    Table,
    AgeRecipient,
    AgeIdentityCiphertext,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite takes one column per ALTER TABLE.
        let columns: Vec<(DynIden, ColumnDef)> = vec![
            (
                BackupJobs::Table.into_iden(),
                string_len(BackupJobs::Compression, 8)
                    .default("zstd")
                    .to_owned(),
            ),
            (
                BackupJobs::Table.into_iden(),
                string_len(BackupJobs::Encryption, 8)
                    .default("none")
                    .to_owned(),
            ),
            (
                BackupJobs::Table.into_iden(),
                json_binary_null(BackupJobs::ExtraRecipients),
            ),
            (
                Volumes::Table.into_iden(),
                json_binary_null(Volumes::ExcludePatterns),
            ),
            (
                Backups::Table.into_iden(),
                string_len(Backups::Trigger, 16)
                    .default("manual")
                    .to_owned(),
            ),
            (
                Backups::Table.into_iden(),
                string_len_null(Backups::Kind, 16),
            ),
            (
                Backups::Table.into_iden(),
                json_binary_null(Backups::Manifest),
            ),
            (
                Organizations::Table.into_iden(),
                text_null(Organizations::AgeRecipient),
            ),
            (
                Organizations::Table.into_iden(),
                text_null(Organizations::AgeIdentityCiphertext),
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
        // A job has at most one active run: a second manual run, or a
        // scheduled firing while one runs, fails on this index instead of
        // racing a read-then-insert.
        let db = manager.get_connection();
        for statement in [
            "CREATE UNIQUE INDEX ux_backup_runs_job_active \
             ON backup_runs (job_id) WHERE status = 'running'",
            "CREATE INDEX ix_backups_lease ON backups (status, lease_expires_at)",
            // Two backups never share an archive on one target.
            "CREATE UNIQUE INDEX ux_backups_target_path \
             ON backups (target_id, storage_path) WHERE storage_path IS NOT NULL",
        ] {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for statement in [
            "DROP INDEX ux_backups_target_path",
            "DROP INDEX ix_backups_lease",
            "DROP INDEX ux_backup_runs_job_active",
        ] {
            db.execute_unprepared(statement).await?;
        }
        let columns: Vec<(DynIden, DynIden)> = vec![
            (
                BackupJobs::Table.into_iden(),
                BackupJobs::Compression.into_iden(),
            ),
            (
                BackupJobs::Table.into_iden(),
                BackupJobs::Encryption.into_iden(),
            ),
            (
                BackupJobs::Table.into_iden(),
                BackupJobs::ExtraRecipients.into_iden(),
            ),
            (
                Volumes::Table.into_iden(),
                Volumes::ExcludePatterns.into_iden(),
            ),
            (Backups::Table.into_iden(), Backups::Trigger.into_iden()),
            (Backups::Table.into_iden(), Backups::Kind.into_iden()),
            (Backups::Table.into_iden(), Backups::Manifest.into_iden()),
            (
                Organizations::Table.into_iden(),
                Organizations::AgeRecipient.into_iden(),
            ),
            (
                Organizations::Table.into_iden(),
                Organizations::AgeIdentityCiphertext.into_iden(),
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
