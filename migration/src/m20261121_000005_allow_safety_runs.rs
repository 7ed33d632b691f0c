//! Safety backups get runs of their own (trigger `safety`), linked to the
//! restored backup's job. Such a run may be active beside the job's
//! scheduled or manual run: the index that keeps a job to one active run
//! leaves safety runs out.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for statement in [
            "DROP INDEX ux_backup_runs_job_active",
            "CREATE UNIQUE INDEX ux_backup_runs_job_active \
             ON backup_runs (job_id) WHERE status = 'running' AND trigger <> 'safety'",
        ] {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for statement in [
            "DROP INDEX ux_backup_runs_job_active",
            "CREATE UNIQUE INDEX ux_backup_runs_job_active \
             ON backup_runs (job_id) WHERE status = 'running'",
        ] {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }
}
