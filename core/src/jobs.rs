//! Backup jobs: which apps, when (cron), where (target) and how long to keep
//! the archives (GFS retention).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, Set, TransactionTrait,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use cairn_entity::enums::VerifyMode;
use cairn_entity::{app, backup_job, backup_job_app, backup_job_copy_target, backup_target};

use crate::error::{is_unique_violation, Error, Result, Validator};
use crate::validate::check_display_name;
use crate::Cairn;

/// The largest count a keep rule accepts.
const MAX_KEEP: u32 = 10_000;
/// The longest cron expression stored (the column's width).
const MAX_SCHEDULE_LEN: usize = 200;

/// `POST`/`PUT` body of a job.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobRequest {
    /// Unique within the organization (1–200 characters).
    pub name: String,
    /// Five-field cron expression (minute hour day-of-month month
    /// day-of-week), read in `timezone`.
    pub schedule: String,
    /// IANA time zone of the schedule (default `UTC`). On a daylight-saving
    /// change a scheduled time that happens twice fires once (the first
    /// time), and one that is skipped fires once, right after the gap.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// How late a slot that passed while no scheduler ran may still fire,
    /// in seconds (default 3600; 10 to 31 536 000). Older slots are
    /// recorded as one `missed` run.
    #[serde(default = "default_starting_deadline")]
    pub starting_deadline_seconds: u32,
    /// How long one backup or restore of the job may run, in seconds
    /// (default 21 600 = 6 h; 60 to 604 800). Past it the work is
    /// cancelled — child processes killed, the upload aborted, nothing left
    /// at the key — and fails `deadline_exceeded`, notified like any
    /// failure.
    #[serde(default = "default_max_duration")]
    pub max_duration_seconds: u32,
    /// The recovery point objective, in seconds (60 to 31 536 000;
    /// optional): how old the newest backup that passed a verification may
    /// be. The job view says whether it is met (`rpoMet`).
    pub rpo_target_seconds: Option<u32>,
    /// The recovery time objective, in seconds (1 to 604 800; optional):
    /// how long restoring one of the job's volumes may take, as the latest
    /// successful `restore`-mode verification measured it. The job view
    /// says whether it is met (`rtoMet`).
    pub rto_target_seconds: Option<u32>,
    /// When the job's newest backups are verified, as a five-field cron
    /// expression in `timezone` (optional; without it, verifications run
    /// only on demand). Each slot verifies the newest successful backup of
    /// every app and volume the job covers.
    pub verify_schedule: Option<String>,
    /// How scheduled verifications run (default `read`); `restore` needs
    /// scratch space for each kind of volume the job's apps have: the
    /// server's `verification.scratch_dir` for files,
    /// `verification.postgres_url` for PostgreSQL. A volume added later
    /// whose kind has none is verified in `read` mode, and its
    /// verification says so.
    #[serde(default = "default_verify_mode")]
    pub verify_mode: VerifyMode,
    /// Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The target to write to. When absent: the organization's default
    /// target, else any of its targets, else the system-level target.
    pub target_id: Option<Uuid>,
    /// The apps whose persistent volumes the job backs up.
    #[serde(default)]
    pub app_ids: Vec<Uuid>,
    /// Further targets every backup is also written to, in one read of the
    /// volume (0 to 3; the organization's or system-level targets, none of
    /// them the job's own target). A copy that fails is retried later from
    /// the primary and never fails the backup.
    #[serde(default)]
    pub copy_target_ids: Vec<Uuid>,
    /// Keep every archive (no pruning).
    #[serde(default)]
    pub keep_all: bool,
    /// Keep the newest N archives.
    pub keep_last: Option<u32>,
    /// Keep the newest archive of each of the last N hours.
    pub keep_hourly: Option<u32>,
    /// Keep the newest archive of each of the last N days.
    pub keep_daily: Option<u32>,
    /// Keep the newest archive of each of the last N weeks.
    pub keep_weekly: Option<u32>,
    /// Keep the newest archive of each of the last N months.
    pub keep_monthly: Option<u32>,
    /// Keep the newest archive of each of the last N years.
    pub keep_yearly: Option<u32>,
    /// Default false.
    #[serde(default)]
    pub notify_on_success: bool,
    /// Default true.
    #[serde(default = "default_true")]
    pub notify_on_failure: bool,
    /// How tar archives are compressed (default `zstd`). PostgreSQL dumps
    /// use pg_dump's own compression whatever this says.
    #[serde(default)]
    pub compression: CompressionSetting,
    /// `age` encrypts archives to the organization's key (see
    /// `GET …/backups/encryption-key`) and to `extraRecipients`.
    #[serde(default)]
    pub encryption: EncryptionSetting,
    /// Further age (`age1…`) or `ssh-ed25519` public keys that can decrypt
    /// this job's archives, such as the owner's offline key. At most 20;
    /// only with `encryption: age`.
    #[serde(default)]
    pub extra_recipients: Vec<String>,
}

/// How a job compresses tar archives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CompressionSetting {
    /// zstd level 3 on every core (`.tar.zst`).
    #[default]
    Zstd,
    /// gzip level 6 (`.tar.gz`).
    Gzip,
    /// Plain tar (`.tar`).
    None,
}

impl CompressionSetting {
    pub fn as_str(self) -> &'static str {
        match self {
            CompressionSetting::Zstd => "zstd",
            CompressionSetting::Gzip => "gzip",
            CompressionSetting::None => "none",
        }
    }

    pub fn parse(text: &str) -> Option<CompressionSetting> {
        Some(match text {
            "zstd" => CompressionSetting::Zstd,
            "gzip" => CompressionSetting::Gzip,
            "none" => CompressionSetting::None,
            _ => return None,
        })
    }
}

/// Whether a job encrypts its archives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EncryptionSetting {
    #[default]
    None,
    /// age (age-encryption.org/v1), `+.age` on the archive's name.
    Age,
}

impl EncryptionSetting {
    pub fn as_str(self) -> &'static str {
        match self {
            EncryptionSetting::None => "none",
            EncryptionSetting::Age => "age",
        }
    }

    pub fn parse(text: &str) -> Option<EncryptionSetting> {
        Some(match text {
            "none" => EncryptionSetting::None,
            "age" => EncryptionSetting::Age,
            _ => return None,
        })
    }
}

/// The most extra recipients a job takes.
const MAX_EXTRA_RECIPIENTS: usize = 20;

/// Copy targets a job may name: with its own target, four places.
const MAX_COPY_TARGETS: usize = 3;

/// The extra recipients stored with a job.
pub fn extra_recipients_of(stored: &Option<serde_json::Value>) -> Vec<String> {
    stored
        .as_ref()
        .and_then(|value| serde_json::from_value(value.clone()).ok())
        .unwrap_or_default()
}

fn default_true() -> bool {
    true
}

fn default_timezone() -> String {
    "UTC".into()
}

fn default_starting_deadline() -> u32 {
    3600
}

fn default_verify_mode() -> VerifyMode {
    VerifyMode::Read
}

fn default_max_duration() -> u32 {
    DEFAULT_MAX_DURATION
}

/// `maxDurationSeconds` when a job does not say (or is gone).
pub const DEFAULT_MAX_DURATION: u32 = 21_600;

/// The bounds of `maxDurationSeconds`.
const MAX_DURATION_RANGE: std::ops::RangeInclusive<u32> = 60..=604_800;

/// The range of `rpoTargetSeconds`: a minute to a year.
const RPO_TARGET_RANGE: std::ops::RangeInclusive<u32> = 60..=31_536_000;

/// The range of `rtoTargetSeconds`: a second to a week (the longest a job's
/// restore may run).
const RTO_TARGET_RANGE: std::ops::RangeInclusive<u32> = 1..=604_800;

/// How long a backup or restore of `job_id`'s may run.
pub async fn max_duration(
    db: &impl ConnectionTrait,
    job_id: Option<Uuid>,
) -> Result<std::time::Duration> {
    let seconds = match job_id {
        Some(id) => backup_job::Entity::find_by_id(id)
            .one(db)
            .await?
            .map(|job| job.max_duration_seconds.max(1) as u64),
        None => None,
    };
    Ok(std::time::Duration::from_secs(
        seconds.unwrap_or(u64::from(DEFAULT_MAX_DURATION)),
    ))
}

/// The bounds of `startingDeadlineSeconds`.
const DEADLINE_RANGE: std::ops::RangeInclusive<u32> = 10..=31_536_000;

/// A slot that passed this long ago without a run makes a job `overdue`
/// (a tick every minute, one late tick allowed).
const OVERDUE_AFTER: chrono::Duration = chrono::Duration::seconds(150);

#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub name: String,
    pub schedule: String,
    pub enabled: bool,
    pub target_id: Option<Uuid>,
    pub app_ids: Vec<Uuid>,
    /// The copy targets, in order.
    pub copy_target_ids: Vec<Uuid>,
    pub keep_all: bool,
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    pub notify_on_success: bool,
    pub notify_on_failure: bool,
    pub compression: CompressionSetting,
    pub encryption: EncryptionSetting,
    pub extra_recipients: Vec<String>,
    pub timezone: String,
    pub starting_deadline_seconds: u32,
    pub max_duration_seconds: u32,
    pub rpo_target_seconds: Option<u32>,
    pub rto_target_seconds: Option<u32>,
    pub verify_schedule: Option<String>,
    pub verify_mode: VerifyMode,
    /// When the next scheduled verification is due; `null` without a
    /// verify schedule or while the job is disabled.
    pub next_verify_at: Option<DateTime<Utc>>,
    /// Seconds since the newest backup that passed a verification ended
    /// (its recovery point); `null` while none has.
    pub rpo_seconds: Option<i64>,
    /// Whether `rpoSeconds` is within `rpoTargetSeconds` (`false` while no
    /// backup has passed a verification); `null` without a target.
    pub rpo_met: Option<bool>,
    /// The recovery time measured: the total time of the latest successful
    /// `restore`-mode verification, in seconds; `null` while none has run.
    pub rto_seconds: Option<f64>,
    /// Whether `rtoSeconds` is within `rtoTargetSeconds` (`false` while
    /// none was measured); `null` without a target.
    pub rto_met: Option<bool>,
    /// When a verification of the job's backups last succeeded.
    pub last_verified_at: Option<DateTime<Utc>>,
    /// The job's latest finished verification.
    pub last_verification: Option<crate::verifications::LastVerificationView>,
    /// The slot of the last scheduled run.
    pub last_run_at: Option<DateTime<Utc>>,
    /// When the last run that succeeded ended.
    pub last_success_at: Option<DateTime<Utc>>,
    /// Runs in a row that did not fully succeed.
    pub consecutive_failures: u32,
    /// When the job fires next; `null` while it is disabled, or while its
    /// stored schedule cannot be read (`scheduleError`).
    pub next_run_at: Option<DateTime<Utc>>,
    /// A slot passed and no scheduler fired it.
    pub overdue: bool,
    /// Why the scheduler could not read the stored schedule or time zone;
    /// the job does not fire until it is updated.
    pub schedule_error: Option<String>,
    pub auto_created: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Parses a five-field cron expression.
///
/// An expression that restricts both the day of the month and the day of
/// the week is refused: classic cron fires when *either* matches, the
/// parser only when both do, and a backup schedule must not be ambiguous.
pub fn parse_schedule(expression: &str) -> Result<cron_parser::Schedule, String> {
    let schedule = cron_parser::Schedule::parse(expression.trim())
        .map_err(|e| format!("is not a valid cron expression: {e}"))?;
    let fields: Vec<&str> = expression.split_whitespace().collect();
    let unrestricted = |field: &str| field == "*" || field == "?";
    if let [_, _, day_of_month, _, day_of_week] = fields.as_slice() {
        if !unrestricted(day_of_month) && !unrestricted(day_of_week) {
            return Err(
                "restricts both the day of the month and the day of the week, which cron \
                 implementations read differently (either or both); restrict only one of them"
                    .into(),
            );
        }
    }
    Ok(schedule)
}

fn view(
    model: backup_job::Model,
    links: Links,
    health: crate::verifications::JobHealth,
    now: DateTime<Utc>,
) -> JobView {
    let Links {
        app_ids,
        copy_target_ids,
    } = links;
    let overdue = model.enabled
        && model
            .next_run_at
            .is_some_and(|next| next + OVERDUE_AFTER < now);
    let count = |n: Option<i32>| n.map(|n| n.max(0) as u32);
    JobView {
        id: model.id,
        organization_id: model.organization_id,
        name: model.name,
        schedule: model.schedule,
        enabled: model.enabled,
        target_id: model.target_id,
        app_ids,
        copy_target_ids,
        keep_all: model.keep_all,
        keep_last: count(model.keep_last),
        keep_hourly: count(model.keep_hourly),
        keep_daily: count(model.keep_daily),
        keep_weekly: count(model.keep_weekly),
        keep_monthly: count(model.keep_monthly),
        keep_yearly: count(model.keep_yearly),
        notify_on_success: model.notify_on_success,
        notify_on_failure: model.notify_on_failure,
        compression: CompressionSetting::parse(&model.compression).unwrap_or_default(),
        encryption: EncryptionSetting::parse(&model.encryption).unwrap_or_default(),
        extra_recipients: extra_recipients_of(&model.extra_recipients),
        timezone: model.timezone,
        starting_deadline_seconds: model.starting_deadline_seconds.max(0) as u32,
        max_duration_seconds: model.max_duration_seconds.max(0) as u32,
        rpo_target_seconds: model.rpo_target_seconds.map(|s| s.max(0) as u32),
        verify_schedule: model.verify_schedule,
        verify_mode: model.verify_mode,
        next_verify_at: model.next_verify_at,
        rpo_met: model.rpo_target_seconds.map(|target| {
            health
                .rpo_seconds
                .is_some_and(|rpo| rpo <= i64::from(target))
        }),
        rpo_seconds: health.rpo_seconds,
        rto_target_seconds: model.rto_target_seconds.map(|s| s.max(0) as u32),
        rto_met: model.rto_target_seconds.map(|target| {
            health
                .rto_seconds
                .is_some_and(|rto| rto <= f64::from(target))
        }),
        rto_seconds: health.rto_seconds,
        last_verified_at: health.last_verified_at,
        last_verification: health.last_verification,
        last_run_at: model.last_run_at,
        last_success_at: model.last_success_at,
        consecutive_failures: model.consecutive_failures.max(0) as u32,
        next_run_at: model.next_run_at,
        overdue,
        schedule_error: model.schedule_error,
        auto_created: model.auto_created,
        created_at: model.created_at,
        updated_at: model.updated_at,
    }
}

/// Validates a request against the organization's targets and apps; returns
/// the parsed schedule.
async fn validate(
    db: &impl ConnectionTrait,
    organization_id: Uuid,
    request: &JobRequest,
) -> Result<Schedules> {
    let mut v = Validator::new();
    // 1. The name, the schedules and the zone they are read in.
    v.check_result("name", check_display_name(&request.name));
    let schedule = schedule_field(&mut v, "schedule", &request.schedule);
    let verify_schedule = request
        .verify_schedule
        .as_deref()
        .and_then(|expression| schedule_field(&mut v, "verifySchedule", expression));
    let zone = match crate::runs::schedule::parse_zone(&request.timezone) {
        Ok(zone) => Some(zone),
        Err(message) => {
            v.add("timezone", message);
            None
        }
    };
    // 2. At least one retention rule, each within bounds.
    check_retention(&mut v, request);
    // 3. The target and the apps: the organization's own.
    check_references(db, &mut v, organization_id, request).await?;
    // 4. The extra recipients, with encryption only.
    check_recipients(&mut v, request);
    // 5. The durations, each within its range.
    if let Some(target) = request.rpo_target_seconds {
        in_range(&mut v, "rpoTargetSeconds", target, RPO_TARGET_RANGE);
    }
    if let Some(target) = request.rto_target_seconds {
        in_range(&mut v, "rtoTargetSeconds", target, RTO_TARGET_RANGE);
    }
    in_range(
        &mut v,
        "maxDurationSeconds",
        request.max_duration_seconds,
        MAX_DURATION_RANGE,
    );
    in_range(
        &mut v,
        "startingDeadlineSeconds",
        request.starting_deadline_seconds,
        DEADLINE_RANGE,
    );
    v.finish()?;
    // The validator has accepted the schedules and the zone, so they parsed.
    match (schedule, zone) {
        (Some(schedule), Some(zone)) => Ok(Schedules {
            backups: crate::runs::schedule::JobSchedule::new(schedule, zone),
            verifications: verify_schedule
                .map(|schedule| crate::runs::schedule::JobSchedule::new(schedule, zone)),
        }),
        _ => Err(Error::invalid("schedule", "is not a valid cron expression")),
    }
}

/// A cron expression of the request, parsed (`None`, with the field's
/// error, when it is too long or does not parse).
fn schedule_field(
    v: &mut Validator,
    field: &str,
    expression: &str,
) -> Option<cron_parser::Schedule> {
    if expression.trim().len() > MAX_SCHEDULE_LEN {
        v.add(
            field,
            format!("must be at most {MAX_SCHEDULE_LEN} characters"),
        );
        return None;
    }
    match parse_schedule(expression) {
        Ok(schedule) => Some(schedule),
        Err(message) => {
            v.add(field, message);
            None
        }
    }
}

/// `value` of `field` within `range` (seconds).
fn in_range(v: &mut Validator, field: &str, value: u32, range: std::ops::RangeInclusive<u32>) {
    v.check(
        range.contains(&value),
        field,
        format!("must be from {} to {} seconds", range.start(), range.end()),
    );
}

/// At least one retention rule (or `keepAll`), each within bounds.
fn check_retention(v: &mut Validator, request: &JobRequest) {
    let rules = [
        ("keepLast", request.keep_last),
        ("keepHourly", request.keep_hourly),
        ("keepDaily", request.keep_daily),
        ("keepWeekly", request.keep_weekly),
        ("keepMonthly", request.keep_monthly),
        ("keepYearly", request.keep_yearly),
    ];
    for (field, value) in rules {
        if let Some(n) = value {
            v.check(n <= MAX_KEEP, field, format!("must be at most {MAX_KEEP}"));
        }
    }
    let any_rule = rules.iter().any(|(_, n)| n.is_some_and(|n| n > 0));
    if !request.keep_all && !any_rule {
        v.add(
            "keepLast",
            "a job needs a retention rule: set keepAll, or at least one of keepLast, keepHourly, keepDaily, keepWeekly, keepMonthly, keepYearly above 0",
        );
    }
}

/// The target and the apps a job names must be the organization's own.
async fn check_references(
    db: &impl ConnectionTrait,
    v: &mut Validator,
    organization_id: Uuid,
    request: &JobRequest,
) -> Result<()> {
    if let Some(target_id) = request.target_id {
        let found = backup_target::Entity::find_by_id(target_id)
            .filter(backup_target::Column::OrganizationId.eq(organization_id))
            .count(db)
            .await?;
        v.check(
            found == 1,
            "targetId",
            "no target with this id in the organization",
        );
    }
    let mut seen = HashSet::new();
    let wanted: Vec<Uuid> = request
        .app_ids
        .iter()
        .copied()
        .filter(|id| seen.insert(*id))
        .collect();
    if wanted.len() != request.app_ids.len() {
        v.add("appIds", "lists an app more than once");
    }
    check_copy_targets(db, v, organization_id, request).await?;
    if !wanted.is_empty() {
        let found: HashSet<Uuid> = app::Entity::find()
            .filter(app::Column::OrganizationId.eq(organization_id))
            .filter(app::Column::Id.is_in(wanted.clone()))
            .all(db)
            .await?
            .into_iter()
            .map(|a| a.id)
            .collect();
        for (i, id) in request.app_ids.iter().enumerate() {
            v.check(
                found.contains(id),
                format!("appIds[{i}]"),
                "no app with this id in the organization",
            );
        }
    }
    Ok(())
}

/// At most [`MAX_COPY_TARGETS`] copy targets, distinct, none the job's own
/// target; each the organization's or a system-level one (another
/// organization's, or none at all, is `404`).
async fn check_copy_targets(
    db: &impl ConnectionTrait,
    v: &mut Validator,
    organization_id: Uuid,
    request: &JobRequest,
) -> Result<()> {
    let ids = &request.copy_target_ids;
    if ids.is_empty() {
        return Ok(());
    }
    let distinct: HashSet<Uuid> = ids.iter().copied().collect();
    let found = backup_target::Entity::find()
        .filter(backup_target::Column::Id.is_in(distinct.iter().copied()))
        .filter(
            sea_orm::Condition::any()
                .add(backup_target::Column::OrganizationId.eq(organization_id))
                .add(backup_target::Column::OrganizationId.is_null()),
        )
        .count(db)
        .await?;
    if found as usize != distinct.len() {
        return Err(Error::NotFound("target"));
    }
    if ids.len() > MAX_COPY_TARGETS {
        v.add(
            "copyTargetIds",
            format!("at most {MAX_COPY_TARGETS} copy targets (four places in all)"),
        );
    }
    if distinct.len() != ids.len() {
        v.add("copyTargetIds", "lists a target more than once");
    }
    for (i, id) in ids.iter().enumerate() {
        if Some(*id) == request.target_id {
            v.add(
                format!("copyTargetIds[{i}]"),
                "is the job's own target; a copy goes to another one",
            );
        }
    }
    Ok(())
}

/// At most `MAX_EXTRA_RECIPIENTS` extra recipients, each a public key, and
/// only with encryption.
fn check_recipients(v: &mut Validator, request: &JobRequest) {
    if request.extra_recipients.len() > MAX_EXTRA_RECIPIENTS {
        v.add(
            "extraRecipients",
            format!("takes at most {MAX_EXTRA_RECIPIENTS} keys"),
        );
    }
    if request.encryption == EncryptionSetting::None && !request.extra_recipients.is_empty() {
        v.add("extraRecipients", "is only used with encryption: age");
    }
    for (i, recipient) in request.extra_recipients.iter().enumerate() {
        v.check_result(
            format!("extraRecipients[{i}]"),
            crate::format::age::parse_recipient(recipient).map(|_| ()),
        );
    }
}

/// Refuses `verifyMode: restore` on a server without scratch space for
/// the kinds of volume the job's apps have (without apps: for either
/// kind). The job's own fields are checked by [`validate`].
async fn check_verify_mode(
    db: &impl ConnectionTrait,
    config: &crate::Config,
    request: &JobRequest,
) -> Result<()> {
    use cairn_entity::enums::VolumeKind;
    use cairn_entity::volume;
    if request.verify_mode != VerifyMode::Restore {
        return Ok(());
    }
    let kinds: std::collections::HashSet<VolumeKind> = volume::Entity::find()
        .filter(volume::Column::AppId.is_in(request.app_ids.clone()))
        .filter(volume::Column::DetachedAt.is_null())
        .all(db)
        .await?
        .into_iter()
        .map(|v| v.kind)
        .collect();
    let missing: Vec<String> = kinds
        .iter()
        .filter_map(|kind| {
            crate::verifications::scratch_missing(config, crate::restores::archive_kind(*kind))
        })
        .collect();
    let none_at_all =
        config.verification.scratch_dir.is_none() && config.verification.postgres_url.is_none();
    let mut v = Validator::new();
    if none_at_all {
        v.add(
            "verifyMode",
            "restore needs scratch space, and this server has none \
             (verification.scratch_dir, verification.postgres_url); use read",
        );
    } else if let Some(reason) = missing.first() {
        v.add("verifyMode", reason.clone());
    }
    v.finish()
}

/// A valid job's schedules, parsed in its zone.
struct Schedules {
    backups: crate::runs::schedule::JobSchedule,
    verifications: Option<crate::runs::schedule::JobSchedule>,
}

fn apply(
    model: &mut backup_job::ActiveModel,
    request: &JobRequest,
    schedules: &Schedules,
    now: DateTime<Utc>,
) {
    let count = |n: Option<u32>| n.map(|n| n as i32);
    model.name = Set(request.name.trim().to_owned());
    model.schedule = Set(request.schedule.trim().to_owned());
    model.enabled = Set(request.enabled);
    model.target_id = Set(request.target_id);
    model.keep_all = Set(request.keep_all);
    model.keep_last = Set(count(request.keep_last));
    model.keep_hourly = Set(count(request.keep_hourly));
    model.keep_daily = Set(count(request.keep_daily));
    model.keep_weekly = Set(count(request.keep_weekly));
    model.keep_monthly = Set(count(request.keep_monthly));
    model.keep_yearly = Set(count(request.keep_yearly));
    model.notify_on_success = Set(request.notify_on_success);
    model.notify_on_failure = Set(request.notify_on_failure);
    model.compression = Set(request.compression.as_str().to_owned());
    model.encryption = Set(request.encryption.as_str().to_owned());
    model.extra_recipients = Set((!request.extra_recipients.is_empty()).then(|| {
        serde_json::json!(request
            .extra_recipients
            .iter()
            .map(|r| r.trim())
            .collect::<Vec<_>>())
    }));
    model.timezone = Set(request.timezone.trim().to_owned());
    model.starting_deadline_seconds = Set(request.starting_deadline_seconds as i32);
    model.max_duration_seconds = Set(request.max_duration_seconds as i32);
    model.rpo_target_seconds = Set(request.rpo_target_seconds.map(|s| s as i32));
    model.rto_target_seconds = Set(request.rto_target_seconds.map(|s| s as i32));
    model.schedule_error = Set(None);
    model.next_run_at = Set(if request.enabled {
        schedules.backups.next_after(now)
    } else {
        None
    });
    model.verify_schedule = Set(request
        .verify_schedule
        .as_deref()
        .map(|expression| expression.trim().to_owned()));
    model.verify_mode = Set(request.verify_mode);
    model.next_verify_at = Set(match &schedules.verifications {
        Some(schedule) if request.enabled => schedule.next_after(now),
        _ => None,
    });
    model.updated_at = Set(now);
}

async fn set_apps(db: &impl ConnectionTrait, job_id: Uuid, app_ids: &[Uuid]) -> Result<()> {
    backup_job_app::Entity::delete_many()
        .filter(backup_job_app::Column::JobId.eq(job_id))
        .exec(db)
        .await?;
    let mut seen = HashSet::new();
    let rows: Vec<backup_job_app::ActiveModel> = app_ids
        .iter()
        .filter(|id| seen.insert(**id))
        .map(|app_id| backup_job_app::ActiveModel {
            job_id: Set(job_id),
            app_id: Set(*app_id),
        })
        .collect();
    if !rows.is_empty() {
        backup_job_app::Entity::insert_many(rows).exec(db).await?;
    }
    Ok(())
}

/// Replaces the job's copy targets, in the request's order.
async fn set_copy_targets(db: &impl ConnectionTrait, job_id: Uuid, ids: &[Uuid]) -> Result<()> {
    backup_job_copy_target::Entity::delete_many()
        .filter(backup_job_copy_target::Column::JobId.eq(job_id))
        .exec(db)
        .await?;
    let rows: Vec<backup_job_copy_target::ActiveModel> = ids
        .iter()
        .enumerate()
        .map(
            |(position, target_id)| backup_job_copy_target::ActiveModel {
                job_id: Set(job_id),
                target_id: Set(*target_id),
                position: Set(position as i32),
            },
        )
        .collect();
    if !rows.is_empty() {
        backup_job_copy_target::Entity::insert_many(rows)
            .exec(db)
            .await?;
    }
    Ok(())
}

/// The copy targets of a job, in order.
pub async fn copy_targets_of(db: &impl ConnectionTrait, job_id: Uuid) -> Result<Vec<Uuid>> {
    Ok(links_of(db, &[job_id])
        .await?
        .remove(&job_id)
        .unwrap_or_default()
        .copy_target_ids)
}

/// What a job points at besides its own row.
#[derive(Default)]
struct Links {
    app_ids: Vec<Uuid>,
    copy_target_ids: Vec<Uuid>,
}

async fn links_of(db: &impl ConnectionTrait, job_ids: &[Uuid]) -> Result<HashMap<Uuid, Links>> {
    let mut links: HashMap<Uuid, Links> = HashMap::new();
    for (job_id, app_ids) in apps_of(db, job_ids).await? {
        links.entry(job_id).or_default().app_ids = app_ids;
    }
    let copies = backup_job_copy_target::Entity::find()
        .filter(backup_job_copy_target::Column::JobId.is_in(job_ids.iter().copied()))
        .order_by_asc(backup_job_copy_target::Column::Position)
        .all(db)
        .await?;
    for row in copies {
        links
            .entry(row.job_id)
            .or_default()
            .copy_target_ids
            .push(row.target_id);
    }
    Ok(links)
}

async fn apps_of(db: &impl ConnectionTrait, job_ids: &[Uuid]) -> Result<HashMap<Uuid, Vec<Uuid>>> {
    let mut by_job: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    let rows = backup_job_app::Entity::find()
        .filter(backup_job_app::Column::JobId.is_in(job_ids.iter().copied()))
        .order_by_asc(backup_job_app::Column::AppId)
        .all(db)
        .await?;
    for row in rows {
        by_job.entry(row.job_id).or_default().push(row.app_id);
    }
    Ok(by_job)
}

async fn find_model(
    db: &impl ConnectionTrait,
    organization_id: Uuid,
    id: Uuid,
) -> Result<backup_job::Model> {
    backup_job::Entity::find_by_id(id)
        .filter(backup_job::Column::OrganizationId.eq(organization_id))
        .one(db)
        .await?
        .ok_or(Error::NotFound("job"))
}

fn name_taken(name: &str) -> Error {
    Error::conflict(
        "name",
        format!("a job named '{}' already exists", name.trim()),
    )
}

pub async fn list(
    cairn: &Cairn,
    organization_id: Uuid,
    paging: &crate::pages::Paging,
    now: DateTime<Utc>,
) -> Result<(Vec<JobView>, Option<String>)> {
    let (jobs, next) = crate::pages::page(
        &cairn.read,
        backup_job::Entity::find().filter(backup_job::Column::OrganizationId.eq(organization_id)),
        backup_job::Column::Name,
        paging,
        |job| job.name.clone(),
        crate::pages::text,
    )
    .await?;
    let ids: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
    let mut links = links_of(&cairn.read, &ids).await?;
    let mut health = crate::verifications::jobs_health(&cairn.read, &ids, now).await?;
    let mut views = Vec::with_capacity(jobs.len());
    for job in jobs {
        let job_links = links.remove(&job.id).unwrap_or_default();
        let job_health = health.remove(&job.id).unwrap_or_default();
        views.push(view(job, job_links, job_health, now));
    }
    Ok((views, next))
}

pub async fn get(
    cairn: &Cairn,
    organization_id: Uuid,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<JobView> {
    let job = find_model(&cairn.read, organization_id, id).await?;
    let links = links_of(&cairn.read, &[id])
        .await?
        .remove(&id)
        .unwrap_or_default();
    let health = crate::verifications::job_health(&cairn.read, id, now).await?;
    Ok(view(job, links, health, now))
}

pub async fn create(
    cairn: &Cairn,
    organization_id: Uuid,
    request: JobRequest,
    now: DateTime<Utc>,
) -> Result<JobView> {
    check_verify_mode(&cairn.db, &cairn.config, &request).await?;
    let txn = cairn.db.begin().await?;
    let id = create_in(&txn, organization_id, &request, None, now).await?;
    txn.commit().await?;
    get(cairn, organization_id, id, now).await
}

/// Validates and inserts a job in `db` (a transaction of the caller);
/// `auto_app` marks a job created automatically for that app. Returns its
/// id.
pub(crate) async fn create_in(
    db: &impl ConnectionTrait,
    organization_id: Uuid,
    request: &JobRequest,
    auto_app: Option<Uuid>,
    now: DateTime<Utc>,
) -> Result<Uuid> {
    let schedules = validate(db, organization_id, request).await?;
    let id = Uuid::now_v7();
    let mut model = backup_job::ActiveModel {
        id: Set(id),
        organization_id: Set(organization_id),
        last_run_at: Set(None),
        auto_created: Set(auto_app.is_some()),
        auto_app_id: Set(auto_app),
        created_at: Set(now),
        ..Default::default()
    };
    apply(&mut model, request, &schedules, now);
    match model.insert(db).await {
        Ok(_) => {}
        Err(error) if is_unique_violation(&error) => return Err(name_taken(&request.name)),
        Err(error) => return Err(error.into()),
    }
    set_apps(db, id, &request.app_ids).await?;
    set_copy_targets(db, id, &request.copy_target_ids).await?;
    Ok(id)
}

pub async fn update(
    cairn: &Cairn,
    organization_id: Uuid,
    id: Uuid,
    request: JobRequest,
    now: DateTime<Utc>,
) -> Result<JobView> {
    let txn = cairn.db.begin().await?;
    let existing = find_model(&txn, organization_id, id).await?;
    check_verify_mode(&txn, &cairn.config, &request).await?;
    let schedules = validate(&txn, organization_id, &request).await?;
    let mut model: backup_job::ActiveModel = existing.into();
    apply(&mut model, &request, &schedules, now);
    match model.update(&txn).await {
        Ok(_) => {}
        Err(error) if is_unique_violation(&error) => return Err(name_taken(&request.name)),
        Err(error) => return Err(error.into()),
    }
    set_apps(&txn, id, &request.app_ids).await?;
    set_copy_targets(&txn, id, &request.copy_target_ids).await?;
    txn.commit().await?;
    get(cairn, organization_id, id, now).await
}

/// Deletes a job; its runs go with it, its backup records stay in history.
/// Deleting an automatic job records on its app that a user removed it, so
/// deploys do not create it again.
pub async fn delete(
    cairn: &Cairn,
    organization_id: Uuid,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<()> {
    let txn = cairn.db.begin().await?;
    let job = find_model(&txn, organization_id, id).await?;
    // The app's row first, the job's second: the order in which deploys and
    // "back up now" take them, so that neither waits on the other in turn.
    if let Some(app_id) = job.auto_app_id {
        cairn_entity::app::Entity::update_many()
            .col_expr(
                cairn_entity::app::Column::AutoJobRemovedAt,
                sea_orm::sea_query::Expr::value(now),
            )
            .filter(cairn_entity::app::Column::Id.eq(app_id))
            .exec(&txn)
            .await?;
    }
    backup_job::Entity::delete_by_id(id).exec(&txn).await?;
    txn.commit().await?;
    Ok(())
}

/// One backup of a series and what retention decides for it.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetainedBackupView {
    pub backup_id: Uuid,
    /// When the backup started (its creation time if it never did).
    pub taken_at: DateTime<Utc>,
    pub keep: bool,
    /// The rules that keep it (`last`, `hourly`, `daily`, `weekly`,
    /// `monthly`, `yearly`, `all`, `newest`), or why it is kept outside
    /// them (`suspicious`: not accepted yet; `reading`: a restore reads
    /// it); empty when it would be pruned.
    pub reasons: Vec<crate::runs::retention::Reason>,
}

/// The successful backups of one volume of one app, newest first.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionSeriesView {
    pub app_name: String,
    pub volume_name: String,
    pub backups: Vec<RetainedBackupView>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionView {
    pub job_id: Uuid,
    pub series: Vec<RetentionSeriesView>,
}

/// The job's retention policy as the pure policy function takes it.
fn policy_of(job: &backup_job::Model) -> crate::runs::retention::Policy {
    let count = |n: Option<i32>| n.unwrap_or(0).max(0) as u32;
    crate::runs::retention::Policy {
        keep_all: job.keep_all,
        last: count(job.keep_last),
        hourly: count(job.keep_hourly),
        daily: count(job.keep_daily),
        weekly: count(job.keep_weekly),
        monthly: count(job.keep_monthly),
        yearly: count(job.keep_yearly),
    }
}

/// One series (a volume of an app) of a job's successful backups, with
/// what the retention policy decides for each, newest first.
pub struct Series {
    pub app_name: String,
    pub volume_name: String,
    pub backups: Vec<(
        cairn_entity::backup::Model,
        crate::runs::retention::Decision,
    )>,
}

/// When a backup was taken, for retention: its start (its creation time
/// if it never started).
fn taken_at(model: &cairn_entity::backup::Model) -> DateTime<Utc> {
    model.started_at.unwrap_or(model.created_at)
}

/// The job's successful backups grouped by series, with the retention
/// decision for each. Only successful backups count and can be pruned.
pub async fn retention_series(
    db: &impl ConnectionTrait,
    job: &backup_job::Model,
    now: DateTime<Utc>,
) -> Result<Vec<Series>> {
    use cairn_entity::backup;
    let policy = policy_of(job);
    let backups = backup::Entity::find()
        .filter(backup::Column::OrganizationId.eq(job.organization_id))
        .filter(backup::Column::JobId.eq(job.id))
        .filter(backup::Column::Status.eq(cairn_entity::enums::BackupStatus::Success))
        // Safety backups (taken before a restore) are not the job's series:
        // retention never prunes them.
        .filter(backup::Column::Trigger.ne(cairn_entity::enums::Trigger::Safety))
        .order_by_asc(backup::Column::AppName)
        .order_by_asc(backup::Column::VolumeName)
        .order_by_desc(backup::Column::Id)
        .all(db)
        .await?;
    let mut grouped: Vec<((String, String), Vec<backup::Model>)> = Vec::new();
    for model in backups {
        let key = (model.app_name.clone(), model.volume_name.clone());
        match grouped.last_mut() {
            Some((last, members)) if *last == key => members.push(model),
            _ => grouped.push((key, vec![model])),
        }
    }
    // Backups that a pending or running restore (or its dry run) reads.
    let being_read = crate::history::being_read(
        db,
        grouped
            .iter()
            .flat_map(|(_, members)| members.iter().map(|m| m.id))
            .collect(),
        now,
    )
    .await?;
    let verified = crate::verifications::verified_good(db, job.id).await?;
    Ok(grouped
        .into_iter()
        .map(|((app_name, volume_name), members)| {
            // Unaccepted suspicious backups are not counted by the rules:
            // a run of empty archives cannot push the real ones out.
            let (counted, suspicious): (Vec<_>, Vec<_>) = members
                .into_iter()
                .partition(|m| !m.suspicious || m.accepted_at.is_some());
            let times: Vec<DateTime<Utc>> = counted.iter().map(taken_at).collect();
            let decisions = crate::runs::retention::apply(&policy, &times);
            let mut backups: Vec<_> = counted.into_iter().zip(decisions).collect();
            backups.extend(suspicious.into_iter().map(|model| {
                (
                    model,
                    crate::runs::retention::Decision {
                        keep: true,
                        reasons: vec![crate::runs::retention::Reason::Suspicious],
                    },
                )
            }));
            for (model, decision) in &mut backups {
                if !decision.keep && being_read.contains(&model.id) {
                    decision.keep = true;
                    decision
                        .reasons
                        .push(crate::runs::retention::Reason::Reading);
                }
            }
            backups.sort_by_key(|(model, _)| std::cmp::Reverse(taken_at(model)));
            // Last known good: the newest backup a verification proved
            // restores stays, even when the rules would let it go.
            if let Some((_, decision)) = backups
                .iter_mut()
                .find(|(model, _)| verified.contains(&model.id))
            {
                decision.keep = true;
                decision
                    .reasons
                    .push(crate::runs::retention::Reason::Verified);
            }
            Series {
                app_name,
                volume_name,
                backups,
            }
        })
        .collect())
}

/// What the job's retention policy keeps and prunes today, per series
/// (app and volume). Only successful backups count and can be pruned.
pub async fn retention(cairn: &Cairn, organization_id: Uuid, id: Uuid) -> Result<RetentionView> {
    let job = find_model(&cairn.db, organization_id, id).await?;
    let series = retention_series(&cairn.db, &job, Utc::now())
        .await?
        .into_iter()
        .map(|series| RetentionSeriesView {
            app_name: series.app_name,
            volume_name: series.volume_name,
            backups: series
                .backups
                .into_iter()
                .map(|(model, decision)| RetainedBackupView {
                    backup_id: model.id,
                    taken_at: taken_at(&model),
                    keep: decision.keep,
                    reasons: decision.reasons,
                })
                .collect(),
        })
        .collect();
    Ok(RetentionView { job_id: id, series })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn next_run_is_strictly_after_now() {
        let schedule = crate::runs::schedule::JobSchedule::parse("0 2 * * *", "UTC").unwrap();
        let now = Utc.with_ymd_and_hms(2024, 1, 15, 2, 0, 0).unwrap();
        let next = schedule.next_after(now).unwrap();
        assert_eq!(next, Utc.with_ymd_and_hms(2024, 1, 16, 2, 0, 0).unwrap());
        let month_end = Utc.with_ymd_and_hms(2024, 1, 31, 23, 59, 30).unwrap();
        let schedule = crate::runs::schedule::JobSchedule::parse("*/15 * * * *", "UTC").unwrap();
        assert_eq!(
            schedule.next_after(month_end).unwrap(),
            Utc.with_ymd_and_hms(2024, 2, 1, 0, 0, 0).unwrap()
        );
    }

    #[test]
    fn invalid_schedules_are_refused() {
        assert!(parse_schedule("not cron").is_err());
        assert!(parse_schedule("61 * * * *").is_err());
        assert!(parse_schedule("* * * *").is_err());
        assert!(parse_schedule("0 0 31 2 *").is_err());
        assert!(parse_schedule("0 2 1 * 1").is_err());
        assert!(parse_schedule("0 2 1 * *").is_ok());
        assert!(parse_schedule("0 2 * * 1-5").is_ok());
    }
}
