//! Deleting an organization is deliberate and reversible for a while: it is
//! marked (`deleted_at`) and purged after a grace period; a purged
//! organization's slug is retired (`retired_slugs`), since its archives stay
//! in storage under that slug and a new organization must not write there.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Organizations {
    Table,
    DeletedAt,
}

#[derive(DeriveIden)]
enum RetiredSlugs {
    Table,
    Slug,
    RetiredAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Organizations::Table)
                    .add_column(timestamp_with_time_zone_null(Organizations::DeletedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RetiredSlugs::Table)
                    .col(string_len(RetiredSlugs::Slug, 63).primary_key())
                    .col(timestamp_with_time_zone(RetiredSlugs::RetiredAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(RetiredSlugs::Table).to_owned())
            .await?;
        manager
            .get_connection()
            .execute_unprepared("ALTER TABLE organizations DROP COLUMN deleted_at")
            .await?;
        Ok(())
    }
}
