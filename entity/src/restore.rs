use sea_orm::entity::prelude::*;

use crate::enums::{ArchiveKind, RestoreStatus};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "restores")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub organization_id: Uuid,
    pub backup_id: Uuid,
    /// The destination app (the backup's own app unless restoring elsewhere).
    pub app_id: Option<Uuid>,
    pub volume_name: String,
    /// `pending`, `running`, `success` or `failed`.
    pub status: RestoreStatus,
    pub safety_backup_id: Option<Uuid>,
    /// The target to read the archive from, when the request named one (the
    /// primary's or a copy's); `None`: the primary, then its copies.
    pub source_target_id: Option<Uuid>,
    pub log: Json,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub attempt: i32,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub started_at: Option<DateTimeUtc>,
    pub finished_at: Option<DateTimeUtc>,
    /// Download, checksum, decryption and a full read; nothing written.
    pub dry_run: bool,
    /// Whether the request asked for a safety backup first.
    pub safety_backup: bool,
    /// The destination app's name when the restore was requested.
    pub app_name: String,
    /// From the backup's archive.
    pub kind: Option<ArchiveKind>,
    /// What the restore found and wrote (counts, bytes, destination).
    pub summary: Option<Json>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
