//! Indexes for the lists that grow with history, each matching a list's
//! filter and its order (newest id first), so a page reads about as many
//! index entries as it returns:
//! - `backups (job_id, id)`: history by job;
//! - `backups (organization_id, status, id)`: history by status;
//! - `backups (organization_id, created_at)`: history by date range;
//! - `backup_runs (job_id, id)`: a job's runs;
//! - `verifications (job_id, finished_at, id)`: a job list's health (the
//!   newest verification of each job, walked back from its end).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const INDEXES: [(&str, &str, &str); 5] = [
    ("ix_backups_job_id", "backups", "job_id, id"),
    (
        "ix_backups_organization_status",
        "backups",
        "organization_id, status, id",
    ),
    (
        "ix_backups_organization_created",
        "backups",
        "organization_id, created_at",
    ),
    ("ix_backup_runs_job_id", "backup_runs", "job_id, id"),
    (
        "ix_verifications_job",
        "verifications",
        "job_id, finished_at, id",
    ),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for (name, table, columns) in INDEXES {
            db.execute_unprepared(&format!("CREATE INDEX {name} ON {table} ({columns})"))
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for (name, _, _) in INDEXES {
            db.execute_unprepared(&format!("DROP INDEX {name}")).await?;
        }
        Ok(())
    }
}
