//! Cairn's schema migrations.
//!
//! Migrations are append-only: once one has shipped it is never edited, only
//! followed by a newer one. They name tables and columns through their own
//! `DeriveIden` enums instead of importing `cairn-entity`, so an old migration
//! still compiles after the entities change. The same migrations run on
//! SQLite and PostgreSQL; anything the schema builder cannot express portably
//! (partial unique indexes) is written as SQL that both accept.

pub use sea_orm_migration::prelude::*;

mod m20261121_000001_create_schema;
mod m20261121_000002_add_backup_execution;
mod m20261121_000003_add_restores;
mod m20261121_000004_add_scheduling;
mod m20261121_000005_allow_safety_runs;
mod m20261121_000006_rework_notification_deliveries;
mod m20261121_000007_add_deployments;
mod m20261204_000008_add_volume_directories;
mod m20261204_000009_add_suspicious_backups;
mod m20261204_000010_add_max_duration;
mod m20261204_000011_add_organization_deletion;
mod m20261206_000012_add_verifications;
mod m20261206_000013_add_verification_results;
mod m20261206_000014_add_backup_copies;
mod m20261206_000015_add_console_sessions;
mod m20261206_000016_add_low_space_deliveries;
mod m20261206_000017_add_system_backups;
mod m20261206_000018_add_orphans;
mod m20261206_000019_add_sqlite_volumes;
mod m20261206_000020_add_mysql_volumes;
mod m20261206_000021_add_history_indexes;
mod m20261206_000022_add_verification_backup_finished;
mod m20261207_000023_cover_history_by_date;

/// Every migration, oldest first.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261121_000001_create_schema::Migration),
            Box::new(m20261121_000002_add_backup_execution::Migration),
            Box::new(m20261121_000003_add_restores::Migration),
            Box::new(m20261121_000004_add_scheduling::Migration),
            Box::new(m20261121_000005_allow_safety_runs::Migration),
            Box::new(m20261121_000006_rework_notification_deliveries::Migration),
            Box::new(m20261121_000007_add_deployments::Migration),
            Box::new(m20261204_000008_add_volume_directories::Migration),
            Box::new(m20261204_000009_add_suspicious_backups::Migration),
            Box::new(m20261204_000010_add_max_duration::Migration),
            Box::new(m20261204_000011_add_organization_deletion::Migration),
            Box::new(m20261206_000012_add_verifications::Migration),
            Box::new(m20261206_000013_add_verification_results::Migration),
            Box::new(m20261206_000014_add_backup_copies::Migration),
            Box::new(m20261206_000015_add_console_sessions::Migration),
            Box::new(m20261206_000016_add_low_space_deliveries::Migration),
            Box::new(m20261206_000017_add_system_backups::Migration),
            Box::new(m20261206_000018_add_orphans::Migration),
            Box::new(m20261206_000019_add_sqlite_volumes::Migration),
            Box::new(m20261206_000020_add_mysql_volumes::Migration),
            Box::new(m20261206_000021_add_history_indexes::Migration),
            Box::new(m20261206_000022_add_verification_backup_finished::Migration),
            Box::new(m20261207_000023_cover_history_by_date::Migration),
        ]
    }
}
