use sea_orm::entity::prelude::*;

use crate::enums::{Trigger, VerificationStatus, VerifyMode};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "verifications")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub organization_id: Uuid,
    pub backup_id: Uuid,
    /// When the verified backup finished (copied in: it never changes).
    pub backup_finished_at: Option<DateTimeUtc>,
    /// The target to read the archive from, when the request named one;
    /// `None`: the primary, then its copies.
    pub source_target_id: Option<Uuid>,
    /// The backup's job, when it still exists.
    pub job_id: Option<Uuid>,
    /// The backup's app, when it still exists.
    pub app_id: Option<Uuid>,
    pub app_name: String,
    pub volume_name: String,
    pub mode: VerifyMode,
    /// `manual` (on demand) or `schedule`.
    pub trigger: Trigger,
    /// The verify slot of a scheduled verification.
    pub scheduled_for: Option<DateTimeUtc>,
    pub status: VerificationStatus,
    /// `[{ "name", "ok", "detail" }]`, in the order they ran.
    pub checks: Json,
    /// A database backup restored into scratch: `[{ "name", "rows",
    /// "expectedRows" }]`, one per table restored or recorded.
    pub tables: Option<Json>,
    /// Milliseconds spent downloading (and hashing) the archive.
    pub download_ms: Option<i64>,
    /// Milliseconds spent reading back or restoring it.
    pub restore_ms: Option<i64>,
    pub total_ms: Option<i64>,
    pub log: Json,
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
