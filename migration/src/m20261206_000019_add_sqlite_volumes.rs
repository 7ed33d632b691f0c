//! `volumes.sqlite_databases`: for volumes of kind `sqlite`, the paths
//! (relative to the volume) of the SQLite databases taken through the
//! online backup API, as a JSON list.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Volumes {
    Table,
    SqliteDatabases,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Volumes::Table)
                    .add_column(json_null(Volumes::SqliteDatabases))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("ALTER TABLE volumes DROP COLUMN sqlite_databases")
            .await?;
        Ok(())
    }
}
