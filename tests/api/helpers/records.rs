//! Backup records written the way a worker writes them (through the
//! entities), for tests of what reads them.

use cairn_entity::backup;
use cairn_entity::enums::{BackupStatus, Trigger, VolumeKind};
use chrono::{DateTime, Duration, Utc};
use sea_orm::{ActiveModelTrait, Set};
use serde_json::json;
use uuid::Uuid;

use super::TestApp;

/// A backup record as a worker writes it.
pub struct Seed<'a> {
    pub org: &'a str,
    pub job: Option<&'a str>,
    pub app: Option<&'a str>,
    pub target: Option<&'a str>,
    /// The archive's key on the target.
    pub path: Option<&'a str>,
    pub status: BackupStatus,
    pub created_at: DateTime<Utc>,
}

pub async fn seed(app: &TestApp, seed: Seed<'_>) -> Uuid {
    let id = Uuid::now_v7();
    let log = json!([
        { "at": seed.created_at, "level": "info", "message": "archiving volume data" },
        { "at": seed.created_at + Duration::seconds(3), "level": "info", "message": "uploaded 1024 bytes" }
    ]);
    let id_of = |s: Option<&str>| s.map(|s| Uuid::parse_str(s).unwrap());
    backup::ActiveModel {
        id: Set(id),
        organization_id: Set(Uuid::parse_str(seed.org).unwrap()),
        run_id: Set(None),
        job_id: Set(id_of(seed.job)),
        app_id: Set(id_of(seed.app)),
        target_id: Set(id_of(seed.target)),
        app_name: Set("shop".into()),
        volume_name: Set("data".into()),
        status: Set(seed.status),
        archive_size: Set((seed.status == BackupStatus::Success).then_some(1024)),
        storage_path: Set(seed.path.map(str::to_owned)),
        sha256: Set(None),
        log: Set(log),
        error_code: Set(
            (seed.status == BackupStatus::Failed).then(|| "volume_not_found".to_owned())
        ),
        error_message: Set(None),
        attempt: Set(1),
        lease_owner: Set(None),
        lease_expires_at: Set(None),
        created_at: Set(seed.created_at),
        started_at: Set(Some(seed.created_at)),
        finished_at: Set(Some(seed.created_at + Duration::seconds(3))),
        trigger: Set(Trigger::Manual),
        kind: Set(Some(VolumeKind::Generic)),
        manifest: Set(None),
        suspicious: Set(false),
        suspicious_reason: Set(None),
        accepted_at: Set(None),
        read_until: Set(None),
    }
    .insert(&app.cairn.db)
    .await
    .unwrap();
    id
}
