//! The notification payload, version 1: what webhook consumers receive as
//! the request body, and what email and Slack messages are rendered from.
//!
//! The payload of a delivery is fixed when the event happens (a run closes,
//! slots are found missed, a restore fails) and stored with the delivery, so
//! every retry sends the same facts; only `sentAt` changes per attempt.

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use cairn_entity::{backup, backup_job, backup_run, restore, verification};

use crate::error::Result;
use crate::failure::FailureCode;
use cairn_entity::enums::{BackupStatus, RunStatus, Trigger, VerificationStatus, VerifyMode};

/// The schema version of [`NotificationPayload`].
pub const PAYLOAD_VERSION: u32 = 1;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum Event {
    /// A run ended with at least one failed backup (status `failed` or
    /// `partial`). Sent when the job's `notifyOnFailure` is on.
    #[serde(rename = "backup.run.failed")]
    RunFailed,
    /// Every backup of a run succeeded. Sent when `notifyOnSuccess` is on.
    #[serde(rename = "backup.run.succeeded")]
    RunSucceeded,
    /// Scheduled slots passed while no scheduler ran (`notifyOnFailure`).
    #[serde(rename = "backup.run.missed")]
    RunMissed,
    /// A scheduled run could not back anything up: no target resolves, or
    /// the job covers no persistent volume (`notifyOnFailure`).
    #[serde(rename = "backup.run.skipped")]
    RunSkipped,
    /// Every backup of a run succeeded, but at least one shrank sharply
    /// against the previous backup of its series (`volumes[].suspicious`):
    /// it does not count toward retention until an admin accepts it. Sent
    /// when `notifyOnFailure` is on, whatever `notifyOnSuccess` says.
    #[serde(rename = "backup.run.suspicious")]
    RunSuspicious,
    /// A restore (or a dry run) failed. Sent to every enabled channel of the
    /// organization, whatever the job's settings.
    #[serde(rename = "restore.failed")]
    RestoreFailed,
    /// A verification of a backup failed: the archive did not read back,
    /// or did not hold what its manifest says (`verification`). Sent when
    /// the job's `notifyOnFailure` is on (always, once the job is deleted).
    #[serde(rename = "backup.verification.failed")]
    VerificationFailed,
    /// A verification proved a backup restores. Sent when the job's
    /// `notifyOnSuccess` is on.
    #[serde(rename = "backup.verification.succeeded")]
    VerificationSucceeded,
    /// A backup's copy on a copy target failed for good (every attempt of
    /// `copies.max_attempts`; `copy`). Sent when the job's
    /// `notifyOnFailure` is on (always, once the job is deleted).
    #[serde(rename = "backup.copy.failed")]
    CopyFailed,
    /// A local target (or the data directory) had less free space than
    /// `disk.warn_free_mb` before a backup; once a day per target and
    /// organization.
    #[serde(rename = "target.low_space")]
    TargetLowSpace,
    /// An orphan sweep found the archives of recorded backups gone from
    /// their target (`missing`): they are `missing` now and cannot be
    /// restored from it. Sent to every enabled channel, once per sweep and
    /// organization.
    #[serde(rename = "backup.missing")]
    BackupMissing,
    /// `POST …/channels/{channelId}/test`.
    #[serde(rename = "notification.test")]
    Test,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::RunFailed => "backup.run.failed",
            Event::RunSucceeded => "backup.run.succeeded",
            Event::RunMissed => "backup.run.missed",
            Event::RunSkipped => "backup.run.skipped",
            Event::RunSuspicious => "backup.run.suspicious",
            Event::RestoreFailed => "restore.failed",
            Event::VerificationFailed => "backup.verification.failed",
            Event::VerificationSucceeded => "backup.verification.succeeded",
            Event::CopyFailed => "backup.copy.failed",
            Event::TargetLowSpace => "target.low_space",
            Event::BackupMissing => "backup.missing",
            Event::Test => "notification.test",
        }
    }

    pub fn parse(text: &str) -> Option<Event> {
        [
            Event::RunFailed,
            Event::RunSucceeded,
            Event::RunMissed,
            Event::RunSkipped,
            Event::RunSuspicious,
            Event::RestoreFailed,
            Event::VerificationFailed,
            Event::VerificationSucceeded,
            Event::CopyFailed,
            Event::TargetLowSpace,
            Event::BackupMissing,
            Event::Test,
        ]
        .into_iter()
        .find(|event| event.as_str() == text)
    }
}

/// A webhook request body (schema version 1). Every field is always
/// present; those that do not apply to the event are `null` (`job`, `run`,
/// `summary` for a restore; `restore` and `verification` for a run; `run`,
/// `summary` and `restore` for a verification) or empty (`volumes`).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationPayload {
    /// `1`. A change that could break a consumer comes with a new version.
    pub version: u32,
    /// The delivery's id: the same on every retry of one delivery, so a
    /// consumer can drop duplicates.
    pub id: Uuid,
    pub event: Event,
    /// When the event happened.
    pub occurred_at: DateTime<Utc>,
    /// When this attempt was sent; `X-Cairn-Timestamp` carries the same
    /// instant as Unix seconds, and the signature covers it (it is in the
    /// body).
    pub sent_at: DateTime<Utc>,
    /// One line for humans: the email subject and the Slack fallback text.
    pub title: String,
    pub organization: OrganizationRef,
    #[schema(required = true)]
    pub job: Option<JobRef>,
    #[schema(required = true)]
    pub run: Option<RunRef>,
    /// Counts over the run's backups.
    #[schema(required = true)]
    pub summary: Option<RunSummary>,
    /// One entry per volume the run backed up, with its error if it failed.
    pub volumes: Vec<VolumeResult>,
    #[schema(required = true)]
    pub restore: Option<RestoreRef>,
    /// For `backup.verification.*`: the verification and its outcome.
    /// (Absent from payloads stored before verifications notified.)
    #[serde(default)]
    #[schema(required = true)]
    pub verification: Option<VerificationRef>,
    /// For `backup.copy.failed`: the copy and why it failed. (Absent from
    /// payloads stored before copies notified.)
    #[serde(default)]
    #[schema(required = true)]
    pub copy: Option<CopyRef>,
    /// For `target.low_space`: the target and its free space. (Absent from
    /// payloads stored before targets notified.)
    #[serde(default)]
    #[schema(required = true)]
    pub low_space: Option<LowSpaceRef>,
    /// For `backup.missing`: the target and the backups whose archive is
    /// gone. (Absent from payloads stored before sweeps notified.)
    #[serde(default)]
    #[schema(required = true)]
    pub missing: Option<MissingRef>,
}

/// Backups whose archive an orphan sweep found gone.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MissingRef {
    pub target_id: Uuid,
    pub target_name: String,
    pub backups: Vec<MissingBackup>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MissingBackup {
    pub backup_id: Uuid,
    pub app_name: String,
    pub volume_name: String,
    /// Where the archive was.
    pub path: String,
}

/// A target low on space, as `target.low_space` reports it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LowSpaceRef {
    pub target_id: Uuid,
    pub target_name: String,
    /// Bytes free on the target's file system when it was measured.
    pub free_bytes: u64,
    /// `disk.warn_free_mb`, in bytes.
    pub warn_free_bytes: u64,
}

/// A backup's copy on a copy target, as its notification reports it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CopyRef {
    pub backup_id: Uuid,
    pub app_name: String,
    pub volume_name: String,
    #[schema(required = true)]
    pub target_id: Option<Uuid>,
    pub target_name: String,
    /// Attempts made.
    pub attempts: u32,
    #[schema(required = true)]
    pub error: Option<ErrorRef>,
}

/// The payload of `backup.copy.failed` (`id` is set per delivery).
pub async fn copy_payload(
    db: &impl ConnectionTrait,
    copy: &cairn_entity::backup_copy::Model,
    backup: &backup::Model,
    job: Option<&backup_job::Model>,
    now: DateTime<Utc>,
) -> Result<NotificationPayload> {
    let organization = organization_of(db, copy.organization_id).await?;
    let occurred_at = copy.finished_at.unwrap_or(now);
    Ok(NotificationPayload {
        copy: Some(CopyRef {
            backup_id: backup.id,
            app_name: backup.app_name.clone(),
            volume_name: backup.volume_name.clone(),
            target_id: copy.target_id,
            target_name: copy.target_name.clone(),
            attempts: copy.attempt.max(0) as u32,
            error: error_of(&copy.error_code, &copy.error_message),
        }),
        ..NotificationPayload::of(Event::CopyFailed, organization, job, occurred_at)
    }
    .titled())
}

/// The payload of `backup.missing` (`id` is set per delivery).
pub async fn missing_payload(
    db: &impl ConnectionTrait,
    organization_id: Uuid,
    missing: MissingRef,
    now: DateTime<Utc>,
) -> Result<NotificationPayload> {
    let organization = organization_of(db, organization_id).await?;
    Ok(NotificationPayload {
        missing: Some(missing),
        ..NotificationPayload::of(Event::BackupMissing, organization, None, now)
    }
    .titled())
}

/// The payload of `target.low_space` (`id` is set per delivery).
pub async fn low_space_payload(
    db: &impl ConnectionTrait,
    organization_id: Uuid,
    low_space: LowSpaceRef,
    now: DateTime<Utc>,
) -> Result<NotificationPayload> {
    let organization = organization_of(db, organization_id).await?;
    Ok(NotificationPayload {
        low_space: Some(low_space),
        ..NotificationPayload::of(Event::TargetLowSpace, organization, None, now)
    }
    .titled())
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationRef {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobRef {
    pub id: Uuid,
    pub name: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunRef {
    pub id: Uuid,
    /// `schedule` or `manual`.
    pub trigger: Trigger,
    /// `success`, `partial`, `failed`, `missed` or `skipped`.
    pub status: RunStatus,
    /// The slot (scheduled runs) or the time it was asked for.
    pub scheduled_for: DateTime<Utc>,
    #[schema(required = true)]
    pub finished_at: Option<DateTime<Utc>>,
    /// Why it was skipped, missed or partly failed.
    #[schema(required = true)]
    pub reason: Option<String>,
    /// For `backup.run.missed`: how many slots, the first and the last.
    #[schema(required = true)]
    pub missed_count: Option<u32>,
    #[schema(required = true)]
    pub missed_from: Option<DateTime<Utc>>,
    #[schema(required = true)]
    pub missed_to: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// Backups in the run (one per persistent volume).
    pub total: u32,
    pub succeeded: u32,
    pub failed: u32,
    /// Combined size of the successful archives, in bytes.
    pub archive_bytes: u64,
    /// Copies on copy targets that did not make it beside their backup
    /// (retried from the primary; `backup.copy.failed` if they never do).
    #[serde(default)]
    pub copies_failed: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeResult {
    pub backup_id: Uuid,
    pub app_name: String,
    pub volume_name: String,
    /// `success` or `failed` (`pruned` when retention removed it since).
    pub status: BackupStatus,
    #[schema(required = true)]
    pub archive_size: Option<u64>,
    #[schema(required = true)]
    pub error: Option<ErrorRef>,
    /// The backup shrank sharply against the previous one of its series.
    pub suspicious: bool,
    /// How it shrank.
    #[schema(required = true)]
    pub suspicious_reason: Option<String>,
}

/// A failure's machine-readable code and its message.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorRef {
    pub code: FailureCode,
    pub message: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreRef {
    pub id: Uuid,
    /// The backup being restored.
    pub backup_id: Uuid,
    /// The destination.
    pub app_name: String,
    pub volume_name: String,
    pub dry_run: bool,
    #[schema(required = true)]
    pub safety_backup_id: Option<Uuid>,
    #[schema(required = true)]
    pub error: Option<ErrorRef>,
}

/// A verification, as its notification reports it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerificationRef {
    pub id: Uuid,
    /// The backup verified.
    pub backup_id: Uuid,
    pub app_name: String,
    pub volume_name: String,
    pub mode: VerifyMode,
    /// `schedule` (a verify slot) or `manual`.
    pub trigger: Trigger,
    /// `success` or `failed`.
    pub status: VerificationStatus,
    /// Every check run; the failed one says what did not match.
    pub checks: Vec<crate::verifications::Check>,
    /// The whole verification's time, in milliseconds (for `restore` mode,
    /// the recovery time measured).
    #[schema(required = true)]
    pub total_ms: Option<i64>,
    #[schema(required = true)]
    pub error: Option<ErrorRef>,
}

/// The event a finished verification notifies, given its job's settings
/// (`None`: its job is deleted); `None` when it notifies nothing.
pub fn verification_event(
    verification: &verification::Model,
    job: Option<&backup_job::Model>,
) -> Option<Event> {
    match verification.status {
        VerificationStatus::Failed => job
            .is_none_or(|job| job.notify_on_failure)
            .then_some(Event::VerificationFailed),
        VerificationStatus::Success => job
            .is_some_and(|job| job.notify_on_success)
            .then_some(Event::VerificationSucceeded),
        VerificationStatus::Pending | VerificationStatus::Running => None,
    }
}

/// The payload of a verification's `event` (`id` is set per delivery).
pub async fn verification_payload(
    db: &impl ConnectionTrait,
    verification: &verification::Model,
    job: Option<&backup_job::Model>,
    event: Event,
    now: DateTime<Utc>,
) -> Result<NotificationPayload> {
    let organization = organization_of(db, verification.organization_id).await?;
    let occurred_at = verification.finished_at.unwrap_or(now);
    let checks = serde_json::from_value(verification.checks.clone()).unwrap_or_default();
    Ok(NotificationPayload {
        verification: Some(VerificationRef {
            id: verification.id,
            backup_id: verification.backup_id,
            app_name: verification.app_name.clone(),
            volume_name: verification.volume_name.clone(),
            mode: verification.mode,
            trigger: verification.trigger,
            status: verification.status,
            checks,
            total_ms: verification.total_ms,
            error: error_of(&verification.error_code, &verification.error_message),
        }),
        ..NotificationPayload::of(event, organization, job, occurred_at)
    }
    .titled())
}

/// The event a closed run (or an unfired slot) notifies, given the job's
/// settings and whether one of its backups is suspicious; `None` when it
/// notifies nothing.
pub fn run_event(
    run: &backup_run::Model,
    job: &backup_job::Model,
    suspicious: bool,
) -> Option<Event> {
    if run.trigger == Trigger::Safety {
        return None;
    }
    let status = run.status;
    let (event, wanted) = if status == RunStatus::Success && suspicious {
        (Event::RunSuspicious, job.notify_on_failure)
    } else if status == RunStatus::Success {
        (Event::RunSucceeded, job.notify_on_success)
    } else if status == RunStatus::Failed || status == RunStatus::Partial {
        (Event::RunFailed, job.notify_on_failure)
    } else if status == RunStatus::Missed {
        (Event::RunMissed, job.notify_on_failure)
    } else if status == RunStatus::Skipped && run.trigger == Trigger::Schedule {
        (Event::RunSkipped, job.notify_on_failure)
    } else {
        return None;
    };
    wanted.then_some(event)
}

impl NotificationPayload {
    /// A payload of `event` with nothing but the organization and the job
    /// set; the caller fills in what the event is about, then [`titled`].
    ///
    /// [`titled`]: NotificationPayload::titled
    fn of(
        event: Event,
        organization: OrganizationRef,
        job: Option<&backup_job::Model>,
        occurred_at: DateTime<Utc>,
    ) -> NotificationPayload {
        NotificationPayload {
            version: PAYLOAD_VERSION,
            id: Uuid::nil(),
            event,
            occurred_at,
            sent_at: occurred_at,
            title: String::new(),
            organization,
            job: job.map(|job| JobRef {
                id: job.id,
                name: job.name.clone(),
            }),
            run: None,
            summary: None,
            volumes: Vec::new(),
            restore: None,
            verification: None,
            copy: None,
            low_space: None,
            missing: None,
        }
    }

    /// The payload with its one-line title.
    fn titled(mut self) -> NotificationPayload {
        self.title = super::render::title(&self);
        self
    }
}

fn organization_ref(model: crate::orgs::OrganizationView) -> OrganizationRef {
    OrganizationRef {
        id: model.id,
        slug: model.slug,
        name: model.name,
    }
}

async fn organization_of(db: &impl ConnectionTrait, id: Uuid) -> Result<OrganizationRef> {
    Ok(organization_ref(crate::orgs::get(db, id).await.map_err(
        |_| anyhow::anyhow!("organization {id} vanished while notifying"),
    )?))
}

fn error_of(code: &Option<String>, message: &Option<String>) -> Option<ErrorRef> {
    match (code, message) {
        (None, None) => None,
        (code, message) => Some(ErrorRef {
            // Records always store a code with their message.
            code: code
                .as_deref()
                .map_or(FailureCode::Internal, FailureCode::from_stored),
            message: message.clone().unwrap_or_default(),
        }),
    }
}

/// The payload of `event` about a run (`id` is set per delivery).
pub async fn run_payload(
    db: &impl ConnectionTrait,
    run: &backup_run::Model,
    job: &backup_job::Model,
    event: Event,
) -> Result<NotificationPayload> {
    let organization = organization_of(db, job.organization_id).await?;
    let backups = backup::Entity::find()
        .filter(backup::Column::RunId.eq(run.id))
        .order_by_asc(backup::Column::AppName)
        .order_by_asc(backup::Column::VolumeName)
        .all(db)
        .await?;
    let failed = |b: &backup::Model| b.status == BackupStatus::Failed;
    let volumes: Vec<VolumeResult> = backups
        .iter()
        .map(|b| VolumeResult {
            backup_id: b.id,
            app_name: b.app_name.clone(),
            volume_name: b.volume_name.clone(),
            status: b.status,
            archive_size: b.archive_size.map(|size| size.max(0) as u64),
            error: if failed(b) {
                error_of(&b.error_code, &b.error_message)
            } else {
                None
            },
            suspicious: b.suspicious,
            suspicious_reason: b.suspicious_reason.clone(),
        })
        .collect();
    let failed_count = backups.iter().filter(|b| failed(b)).count() as u32;
    let copies_failed = if backups.is_empty() {
        0
    } else {
        use sea_orm::PaginatorTrait;
        cairn_entity::backup_copy::Entity::find()
            .filter(cairn_entity::backup_copy::Column::BackupId.is_in(backups.iter().map(|b| b.id)))
            .filter(cairn_entity::backup_copy::Column::Status.is_in([
                cairn_entity::enums::CopyStatus::Pending,
                cairn_entity::enums::CopyStatus::Failed,
            ]))
            .count(db)
            .await? as u32
    };
    let summary = (!backups.is_empty()).then(|| RunSummary {
        total: backups.len() as u32,
        succeeded: backups.len() as u32 - failed_count,
        failed: failed_count,
        archive_bytes: backups
            .iter()
            .filter(|b| !failed(b))
            .filter_map(|b| b.archive_size)
            .map(|size| size.max(0) as u64)
            .sum(),
        copies_failed,
    });
    let occurred_at = run.finished_at.unwrap_or(run.created_at);
    Ok(NotificationPayload {
        run: Some(RunRef {
            id: run.id,
            trigger: run.trigger,
            status: run.status,
            scheduled_for: run.scheduled_for,
            finished_at: run.finished_at,
            reason: run.reason.clone(),
            missed_count: run.missed_count.map(|n| n.max(0) as u32),
            missed_from: run.missed_from,
            missed_to: run.missed_to,
        }),
        summary,
        volumes,
        ..NotificationPayload::of(event, organization, Some(job), occurred_at)
    }
    .titled())
}

/// The payload of `restore.failed` (`id` is set per delivery).
pub async fn restore_payload(
    db: &impl ConnectionTrait,
    restore: &restore::Model,
    now: DateTime<Utc>,
) -> Result<NotificationPayload> {
    let organization = organization_of(db, restore.organization_id).await?;
    let occurred_at = restore.finished_at.unwrap_or(now);
    Ok(NotificationPayload {
        restore: Some(RestoreRef {
            id: restore.id,
            backup_id: restore.backup_id,
            app_name: restore.app_name.clone(),
            volume_name: restore.volume_name.clone(),
            dry_run: restore.dry_run,
            safety_backup_id: restore.safety_backup_id,
            error: error_of(&restore.error_code, &restore.error_message),
        }),
        ..NotificationPayload::of(Event::RestoreFailed, organization, None, occurred_at)
    }
    .titled())
}

/// The payload of a channel test.
pub fn test_payload(
    organization: crate::orgs::OrganizationView,
    now: DateTime<Utc>,
) -> NotificationPayload {
    NotificationPayload {
        id: Uuid::now_v7(),
        ..NotificationPayload::of(Event::Test, organization_ref(organization), None, now)
    }
    .titled()
}
