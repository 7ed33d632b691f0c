//! `notification_deliveries.low_space_key`: `{targetId}:{YYYY-MM-DD}` for
//! the deliveries of `target.low_space`, unique per channel, so a target
//! low on space reaches each channel once a day however many backups see
//! it.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum NotificationDeliveries {
    Table,
    LowSpaceKey,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(NotificationDeliveries::Table)
                    .add_column(string_len_null(NotificationDeliveries::LowSpaceKey, 80))
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX ux_notification_deliveries_low_space \
                 ON notification_deliveries (channel_id, low_space_key)",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP INDEX ux_notification_deliveries_low_space")
            .await?;
        db.execute_unprepared("ALTER TABLE notification_deliveries DROP COLUMN low_space_key")
            .await?;
        Ok(())
    }
}
