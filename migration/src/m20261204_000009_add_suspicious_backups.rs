//! Suspicious backups: a successful backup whose content shrank sharply
//! against the previous one of its series is flagged (`suspicious`, with
//! the reason) and left out of retention's keep rules until an admin
//! accepts it (`accepted_at`), so a run of empty archives can never push
//! the real ones out. A download marks the backup as read
//! (`read_until`: its pre-signed URL's validity) so that retention keeps
//! it while the download may still run.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Backups {
    Table,
    Suspicious,
    SuspiciousReason,
    AcceptedAt,
    ReadUntil,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite takes one column per ALTER TABLE.
        for mut column in [
            boolean(Backups::Suspicious).default(false).to_owned(),
            text_null(Backups::SuspiciousReason),
            timestamp_with_time_zone_null(Backups::AcceptedAt),
            timestamp_with_time_zone_null(Backups::ReadUntil),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Backups::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for column in [
            "suspicious",
            "suspicious_reason",
            "accepted_at",
            "read_until",
        ] {
            db.execute_unprepared(&format!("ALTER TABLE backups DROP COLUMN {column}"))
                .await?;
        }
        Ok(())
    }
}
