use sea_orm::entity::prelude::*;

use crate::enums::CopyStatus;

/// One backup's copy on one of its job's copy targets.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "backup_copies")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub backup_id: Uuid,
    pub organization_id: Uuid,
    /// `None` once the target was deleted (only possible when no copy
    /// lives on it).
    pub target_id: Option<Uuid>,
    pub target_name: String,
    pub status: CopyStatus,
    /// The archive's path on the copy target (the primary's path).
    pub storage_path: Option<String>,
    /// SHA-256 of what the copy target stored.
    pub sha256: Option<String>,
    pub size: Option<i64>,
    /// Attempts made (the one beside the backup counts).
    pub attempt: i32,
    /// When a pending copy may be tried (again).
    pub next_attempt_at: DateTimeUtc,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub started_at: Option<DateTimeUtc>,
    pub finished_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
