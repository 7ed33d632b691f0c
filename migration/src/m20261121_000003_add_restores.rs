//! What restores need beyond the initial `restores` table: whether the
//! request was a dry run and asked for a safety backup, the kind of the
//! restore, what it found, the destination's app name; the fence that keeps
//! a destination to one active restore; and the index the claim and the
//! reaper use.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Restores {
    Table,
    DryRun,
    SafetyBackup,
    AppName,
    Kind,
    Summary,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite takes one column per ALTER TABLE.
        let columns = [
            boolean(Restores::DryRun).default(false).to_owned(),
            boolean(Restores::SafetyBackup).default(true).to_owned(),
            string_len(Restores::AppName, 63).default("").to_owned(),
            string_len_null(Restores::Kind, 16),
            json_binary_null(Restores::Summary),
        ];
        for mut column in columns {
            manager
                .alter_table(
                    Table::alter()
                        .table(Restores::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        // One restore at a time writes a destination: a second request
        // while one is pending or running fails on this index. Dry runs
        // write nothing and are not held to it.
        let db = manager.get_connection();
        for statement in [
            "CREATE UNIQUE INDEX ux_restores_destination_active \
             ON restores (app_id, volume_name) \
             WHERE status IN ('pending', 'running') AND dry_run = false",
            "CREATE INDEX ix_restores_lease ON restores (status, lease_expires_at)",
        ] {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for statement in [
            "DROP INDEX ix_restores_lease",
            "DROP INDEX ux_restores_destination_active",
        ] {
            db.execute_unprepared(statement).await?;
        }
        for column in [
            Restores::DryRun,
            Restores::SafetyBackup,
            Restores::AppName,
            Restores::Kind,
            Restores::Summary,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Restores::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
