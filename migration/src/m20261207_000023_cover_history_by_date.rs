//! History by date range reads its ids from the index alone: `backups
//! (organization_id, created_at, id)` replaces `(organization_id,
//! created_at)`. A date range is in `created_at` order but a page is in id
//! order, so the range's ids are sorted; with the id in the index that sort
//! reads no table row, and only the page's rows are read afterwards
//! (`history::list`). `IF [NOT] EXISTS`: SQLite runs a migration outside a
//! transaction, so a retry after a failure half-way must pass.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(
            "CREATE INDEX IF NOT EXISTS ix_backups_organization_created_id \
             ON backups (organization_id, created_at, id)",
        )
        .await?;
        db.execute_unprepared("DROP INDEX IF EXISTS ix_backups_organization_created")
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(
            "CREATE INDEX IF NOT EXISTS ix_backups_organization_created \
             ON backups (organization_id, created_at)",
        )
        .await?;
        db.execute_unprepared("DROP INDEX IF EXISTS ix_backups_organization_created_id")
            .await?;
        Ok(())
    }
}
