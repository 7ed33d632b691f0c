//! Orphan sweeps: `orphan_sweeps` records each sweep of a target (the
//! unique `(target_id, scheduled_for)` lets one worker take a scheduled
//! slot), and `orphans` every object in a target's layout that no live
//! record names, with when a sweep first saw it: an orphan is deleted only
//! once it has been one for `orphans.delete_after_days`, however old the
//! archive, so a database restored from an older self-backup never costs
//! the archives made since.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum OrphanSweeps {
    Table,
    Id,
    TargetId,
    ScheduledFor,
    StartedAt,
    FinishedAt,
    Orphans,
    Deleted,
    Missing,
    Found,
    Error,
}

#[derive(DeriveIden)]
enum Orphans {
    Table,
    Id,
    TargetId,
    Path,
    Size,
    FirstSeenAt,
    LastSeenAt,
}

#[derive(DeriveIden)]
enum BackupTargets {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(OrphanSweeps::Table)
                    .col(uuid(OrphanSweeps::Id).primary_key())
                    .col(uuid(OrphanSweeps::TargetId))
                    .col(timestamp_with_time_zone_null(OrphanSweeps::ScheduledFor))
                    .col(timestamp_with_time_zone(OrphanSweeps::StartedAt))
                    .col(timestamp_with_time_zone_null(OrphanSweeps::FinishedAt))
                    .col(integer(OrphanSweeps::Orphans).default(0))
                    .col(integer(OrphanSweeps::Deleted).default(0))
                    .col(integer(OrphanSweeps::Missing).default(0))
                    .col(integer(OrphanSweeps::Found).default(0))
                    .col(text_null(OrphanSweeps::Error))
                    .foreign_key(
                        ForeignKey::create()
                            .from(OrphanSweeps::Table, OrphanSweeps::TargetId)
                            .to(BackupTargets::Table, BackupTargets::Id)
                            .on_delete(ForeignKeyAction::Cascade)
                            .on_update(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Orphans::Table)
                    .col(uuid(Orphans::Id).primary_key())
                    .col(uuid(Orphans::TargetId))
                    .col(text(Orphans::Path))
                    .col(big_integer(Orphans::Size))
                    .col(timestamp_with_time_zone(Orphans::FirstSeenAt))
                    .col(timestamp_with_time_zone(Orphans::LastSeenAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Orphans::Table, Orphans::TargetId)
                            .to(BackupTargets::Table, BackupTargets::Id)
                            .on_delete(ForeignKeyAction::Cascade)
                            .on_update(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        db.execute_unprepared(
            "CREATE UNIQUE INDEX ux_orphan_sweeps_slot ON orphan_sweeps (target_id, scheduled_for)",
        )
        .await?;
        db.execute_unprepared("CREATE UNIQUE INDEX ux_orphans_path ON orphans (target_id, path)")
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Orphans::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(OrphanSweeps::Table).to_owned())
            .await?;
        Ok(())
    }
}
