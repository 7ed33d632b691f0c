//! `console_sessions`: a signed-in browser of the web console. The row
//! keeps the SHA-256 of the session's cookie (never the cookie), the
//! SHA-256 of the API token that signed in (the principal is read from
//! the token at every request, so a revoked token ends its sessions) and
//! when the session expires.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ConsoleSessions {
    Table,
    Id,
    SessionHash,
    TokenHash,
    CreatedAt,
    ExpiresAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ConsoleSessions::Table)
                    .col(uuid(ConsoleSessions::Id).primary_key())
                    .col(string_len_uniq(ConsoleSessions::SessionHash, 64))
                    .col(string_len(ConsoleSessions::TokenHash, 64))
                    .col(timestamp_with_time_zone(ConsoleSessions::CreatedAt))
                    .col(timestamp_with_time_zone(ConsoleSessions::ExpiresAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_console_sessions_expires_at")
                    .table(ConsoleSessions::Table)
                    .col(ConsoleSessions::ExpiresAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ConsoleSessions::Table).to_owned())
            .await
    }
}
