use sea_orm::entity::prelude::*;

use crate::enums::{BackupStatus, Trigger, VolumeKind};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "backups")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub organization_id: Uuid,
    pub run_id: Option<Uuid>,
    pub job_id: Option<Uuid>,
    pub app_id: Option<Uuid>,
    pub target_id: Option<Uuid>,
    pub app_name: String,
    pub volume_name: String,
    pub status: BackupStatus,
    pub archive_size: Option<i64>,
    pub storage_path: Option<String>,
    pub sha256: Option<String>,
    /// Timestamped log lines: `[{ "at", "level", "message" }]`.
    pub log: Json,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    /// Claim counter; the fencing token of the current lease.
    pub attempt: i32,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub started_at: Option<DateTimeUtc>,
    pub finished_at: Option<DateTimeUtc>,
    pub trigger: Trigger,
    /// The volume's kind, once known.
    pub kind: Option<VolumeKind>,
    /// The manifest written beside the archive.
    pub manifest: Option<Json>,
    /// A successful backup whose content shrank sharply against the
    /// previous one of its series: it does not count for retention until
    /// accepted.
    pub suspicious: bool,
    pub suspicious_reason: Option<String>,
    /// When an admin accepted a suspicious backup as real.
    pub accepted_at: Option<DateTimeUtc>,
    /// A download may still be reading the archive until then.
    pub read_until: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
