//! Database volumes of more than one engine: `volumes.postgres_config` and
//! `volumes.postgres_password_ciphertext` become `connection_config` and
//! `connection_password_ciphertext`, the connection settings (and sealed
//! password) of a `postgres` or a `mysql` volume.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Volumes {
    Table,
    PostgresConfig,
    PostgresPasswordCiphertext,
    ConnectionConfig,
    ConnectionPasswordCiphertext,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (from, to) in [
            (Volumes::PostgresConfig, Volumes::ConnectionConfig),
            (
                Volumes::PostgresPasswordCiphertext,
                Volumes::ConnectionPasswordCiphertext,
            ),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Volumes::Table)
                        .rename_column(from, to)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (from, to) in [
            (Volumes::ConnectionConfig, Volumes::PostgresConfig),
            (
                Volumes::ConnectionPasswordCiphertext,
                Volumes::PostgresPasswordCiphertext,
            ),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Volumes::Table)
                        .rename_column(from, to)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
