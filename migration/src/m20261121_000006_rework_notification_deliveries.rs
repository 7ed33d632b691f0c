//! Notification deliveries as the dispatcher needs them. The first schema's
//! table was never written by any release, so it is replaced rather than
//! altered: a delivery now carries its organization, the channel's name and
//! type (kept when the channel is deleted), the payload fixed when the event
//! happened, its retry schedule and the lease of the worker sending it. One
//! delivery per channel per run (or restore) and event, enforced by unique
//! indexes.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum NotificationDeliveries {
    Table,
    Id,
    OrganizationId,
    ChannelId,
    ChannelName,
    ChannelType,
    RunId,
    RestoreId,
    Event,
    Payload,
    Status,
    Attempts,
    NextAttemptAt,
    LeaseOwner,
    LeaseExpiresAt,
    ResponseCode,
    LastError,
    CreatedAt,
    LastAttemptAt,
    DeliveredAt,
}

#[derive(DeriveIden)]
enum Organizations {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum NotificationChannels {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum BackupRuns {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Restores {
    Table,
    Id,
}

fn fk(
    from_col: NotificationDeliveries,
    to_table: impl IntoIden + 'static,
    to_col: impl IntoIden,
    on_delete: ForeignKeyAction,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .from(NotificationDeliveries::Table, from_col)
        .to(to_table, to_col)
        .on_delete(on_delete)
        .on_update(ForeignKeyAction::Cascade)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use ForeignKeyAction::{Cascade, SetNull};
        use NotificationDeliveries as D;
        manager
            .drop_table(Table::drop().table(D::Table).to_owned())
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(D::Table)
                    .col(uuid(D::Id).primary_key())
                    .col(uuid(D::OrganizationId))
                    .col(uuid_null(D::ChannelId))
                    .col(string_len(D::ChannelName, 200))
                    .col(string_len(D::ChannelType, 16))
                    .col(uuid_null(D::RunId))
                    .col(uuid_null(D::RestoreId))
                    .col(string_len(D::Event, 64))
                    .col(json_binary(D::Payload))
                    .col(string_len(D::Status, 16))
                    .col(integer(D::Attempts).default(0))
                    .col(timestamp_with_time_zone(D::NextAttemptAt))
                    .col(string_len_null(D::LeaseOwner, 200))
                    .col(timestamp_with_time_zone_null(D::LeaseExpiresAt))
                    .col(integer_null(D::ResponseCode))
                    .col(text_null(D::LastError))
                    .col(timestamp_with_time_zone(D::CreatedAt))
                    .col(timestamp_with_time_zone_null(D::LastAttemptAt))
                    .col(timestamp_with_time_zone_null(D::DeliveredAt))
                    .foreign_key(&mut fk(
                        D::OrganizationId,
                        Organizations::Table,
                        Organizations::Id,
                        Cascade,
                    ))
                    .foreign_key(&mut fk(
                        D::ChannelId,
                        NotificationChannels::Table,
                        NotificationChannels::Id,
                        SetNull,
                    ))
                    .foreign_key(&mut fk(
                        D::RunId,
                        BackupRuns::Table,
                        BackupRuns::Id,
                        SetNull,
                    ))
                    .foreign_key(&mut fk(
                        D::RestoreId,
                        Restores::Table,
                        Restores::Id,
                        SetNull,
                    ))
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        for statement in [
            // However many closers race, a run's event reaches a channel once.
            "CREATE UNIQUE INDEX ux_notification_deliveries_run \
             ON notification_deliveries (channel_id, run_id, event)",
            "CREATE UNIQUE INDEX ux_notification_deliveries_restore \
             ON notification_deliveries (channel_id, restore_id, event)",
            // The dispatcher's scan: pending deliveries by due time.
            "CREATE INDEX ix_notification_deliveries_due \
             ON notification_deliveries (status, next_attempt_at)",
            "CREATE INDEX ix_notification_deliveries_organization \
             ON notification_deliveries (organization_id, id)",
        ] {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        Err(DbErr::Migration(
            "the notification deliveries table of the first schema cannot be restored".into(),
        ))
    }
}
