//! A verification's `tables`: for a database backup restored into a
//! scratch database, every table with the rows restored and the rows the
//! backup recorded.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Verifications {
    Table,
    Tables,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Verifications::Table)
                    .add_column(json_binary_null(Verifications::Tables))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("ALTER TABLE verifications DROP COLUMN tables")
            .await?;
        Ok(())
    }
}
