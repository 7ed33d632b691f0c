//! App deployments: each deploy call is recorded (slot, time) and the app
//! keeps its last one; volumes a deploy no longer lists are detached, not
//! deleted; an app remembers when its automatic backup job was created (so
//! it is created once) and when a user removed it; an automatic job names
//! the app it was made for, once (a unique index); a run limited to one
//! app ("back up now") names that app.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Apps {
    Table,
    Id,
    LastDeployedAt,
    LastDeploySlot,
    AutoJobCreatedAt,
    AutoJobRemovedAt,
}

#[derive(DeriveIden)]
enum Volumes {
    Table,
    DetachedAt,
}

#[derive(DeriveIden)]
enum BackupJobs {
    Table,
    AutoAppId,
}

#[derive(DeriveIden)]
enum BackupRuns {
    Table,
    ScopeAppId,
}

#[derive(DeriveIden)]
enum Organizations {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Deployments {
    Table,
    Id,
    OrganizationId,
    AppId,
    Slot,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite takes one column per ALTER TABLE.
        let columns: [(DynIden, ColumnDef); 7] = [
            (
                Apps::Table.into_iden(),
                timestamp_with_time_zone_null(Apps::LastDeployedAt),
            ),
            (
                Apps::Table.into_iden(),
                string_len_null(Apps::LastDeploySlot, 8),
            ),
            (
                Apps::Table.into_iden(),
                timestamp_with_time_zone_null(Apps::AutoJobCreatedAt),
            ),
            (
                Apps::Table.into_iden(),
                timestamp_with_time_zone_null(Apps::AutoJobRemovedAt),
            ),
            (
                Volumes::Table.into_iden(),
                timestamp_with_time_zone_null(Volumes::DetachedAt),
            ),
            (
                BackupJobs::Table.into_iden(),
                uuid_null(BackupJobs::AutoAppId),
            ),
            (
                BackupRuns::Table.into_iden(),
                uuid_null(BackupRuns::ScopeAppId),
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
        manager
            .create_table(
                Table::create()
                    .table(Deployments::Table)
                    .col(uuid(Deployments::Id).primary_key())
                    .col(uuid(Deployments::OrganizationId))
                    .col(uuid(Deployments::AppId))
                    .col(string_len(Deployments::Slot, 8))
                    .col(timestamp_with_time_zone(Deployments::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Deployments::Table, Deployments::OrganizationId)
                            .to(Organizations::Table, Organizations::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Deployments::Table, Deployments::AppId)
                            .to(Apps::Table, Apps::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        for statement in [
            // One automatic job per app, however many deploys race.
            "CREATE UNIQUE INDEX ux_backup_jobs_auto_app ON backup_jobs (auto_app_id)",
            "CREATE INDEX ix_deployments_app ON deployments (app_id, id)",
        ] {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Deployments::Table).to_owned())
            .await?;
        let db = manager.get_connection();
        db.execute_unprepared("DROP INDEX ux_backup_jobs_auto_app")
            .await?;
        for (table, column) in [
            ("apps", "last_deployed_at"),
            ("apps", "last_deploy_slot"),
            ("apps", "auto_job_created_at"),
            ("apps", "auto_job_removed_at"),
            ("volumes", "detached_at"),
            ("backup_jobs", "auto_app_id"),
            ("backup_runs", "scope_app_id"),
        ] {
            db.execute_unprepared(&format!("ALTER TABLE {table} DROP COLUMN {column}"))
                .await?;
        }
        Ok(())
    }
}
