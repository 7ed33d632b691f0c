use sea_orm::entity::prelude::*;

use crate::enums::{DatabaseEngine, SystemBackupStatus, Trigger};

/// One backup of Cairn's own database.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "system_backups")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub status: SystemBackupStatus,
    /// `schedule` (the `system_backup.schedule` slot) or `manual`.
    pub trigger: Trigger,
    /// The engine of the database backed up.
    pub engine: DatabaseEngine,
    /// The slot a scheduled backup fired for (unique: once across
    /// scheduler replicas).
    pub scheduled_for: Option<DateTimeUtc>,
    /// `None` once the target was deleted.
    pub target_id: Option<Uuid>,
    pub target_name: String,
    /// The archive's key on the target (under `_cairn/system/`).
    pub storage_path: Option<String>,
    pub size: Option<i64>,
    pub sha256: Option<String>,
    /// The manifest stored beside the archive.
    pub manifest: Option<Json>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub attempt: i32,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub started_at: Option<DateTimeUtc>,
    pub finished_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
