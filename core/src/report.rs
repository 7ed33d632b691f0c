//! `GET …/backups/report`: what an organization can count on, job by job
//! and series by series (an app's volume): how often it is backed up, when
//! it last was, when a backup of it last proved to restore, how much would
//! be lost now (RPO) and how long a restore took (RTO), against the job's
//! targets.
//!
//! The figures come from the records alone — backups and verifications —
//! so every API replica answers the same, and a job view's `rpoSeconds`,
//! `rtoSeconds` and `lastVerifiedAt` equal its report's.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use cairn_entity::enums::{BackupStatus, Trigger, VerificationStatus, VerifyMode};
use cairn_entity::{backup, backup_job, verification};

use crate::error::Result;
use crate::runs::schedule::JobSchedule;
use crate::verifications::seconds;
use crate::Cairn;

/// How many scheduled times the interval is measured over.
const INTERVAL_SAMPLE: usize = 32;

/// The report.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub generated_at: DateTime<Utc>,
    /// Every job of the organization, by name.
    pub jobs: Vec<JobReport>,
}

/// One job: its schedules, targets, figures, and its series.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobReport {
    pub job_id: Uuid,
    pub name: String,
    pub enabled: bool,
    pub schedule: String,
    pub timezone: String,
    /// The longest gap between consecutive scheduled backups (over the
    /// next 32): the most a schedule alone lets a recovery point age.
    /// `null` when the schedule cannot be read.
    pub schedule_interval_seconds: Option<i64>,
    pub verify_schedule: Option<String>,
    pub verify_mode: VerifyMode,
    /// When a backup of the job last succeeded.
    pub last_success_at: Option<DateTime<Utc>>,
    /// When a verification of the job's backups last succeeded.
    pub last_verified_at: Option<DateTime<Utc>>,
    /// Seconds since the newest backup of the job that passed a
    /// verification ended (as the job view says).
    pub rpo_seconds: Option<i64>,
    pub rpo_target_seconds: Option<u32>,
    /// `null` without a target; `false` while nothing was verified.
    pub rpo_met: Option<bool>,
    /// The total time of the job's latest successful `restore`-mode
    /// verification (as the job view says).
    pub rto_seconds: Option<f64>,
    pub rto_target_seconds: Option<u32>,
    /// `null` without a target; `false` while nothing was measured.
    pub rto_met: Option<bool>,
    /// Every app and volume the job has backed up, by app and volume.
    pub series: Vec<SeriesReport>,
}

/// One series: an app's volume, backed up by the job.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeriesReport {
    pub app_id: Option<Uuid>,
    pub app_name: String,
    pub volume_name: String,
    /// When its newest successful backup ended.
    pub last_success_at: Option<DateTime<Utc>>,
    /// When a verification of one of its backups last succeeded.
    pub last_verified_at: Option<DateTime<Utc>>,
    /// Its latest finished verification's outcome.
    pub last_verification_status: Option<VerificationStatus>,
    /// The newest backup that passed a verification and is still stored:
    /// the recovery point.
    pub recovery_point_backup_id: Option<Uuid>,
    /// When that backup ended.
    pub recovery_point_at: Option<DateTime<Utc>>,
    /// Seconds since the recovery point; `null` while there is none.
    pub rpo_seconds: Option<i64>,
    /// `null` without a target; `false` while there is no recovery point.
    pub rpo_met: Option<bool>,
    /// The total time of its latest successful `restore`-mode
    /// verification: the recovery time measured.
    pub rto_seconds: Option<f64>,
    /// When that verification ended.
    pub rto_measured_at: Option<DateTime<Utc>>,
    /// `null` without a target; `false` while nothing was measured.
    pub rto_met: Option<bool>,
}

/// A verification as the report reads it.
#[derive(Clone, Debug)]
struct Finished {
    id: Uuid,
    backup_id: Uuid,
    job_id: Uuid,
    series: (String, String),
    status: VerificationStatus,
    mode: VerifyMode,
    total_ms: Option<i64>,
    finished_at: Option<DateTime<Utc>>,
}

/// A series' newest successful backup and the app it belongs to.
struct Newest {
    app_id: Option<Uuid>,
    finished_at: Option<DateTime<Utc>>,
}

type SeriesKey = (Uuid, (String, String));

/// The organization's report at `now`.
pub async fn report(cairn: &Cairn, organization_id: Uuid, now: DateTime<Utc>) -> Result<Report> {
    let db = &cairn.db;
    let jobs = backup_job::Entity::find()
        .filter(backup_job::Column::OrganizationId.eq(organization_id))
        .order_by_asc(backup_job::Column::Name)
        .all(db)
        .await?;
    let newest = newest_backups(cairn, organization_id).await?;
    let finished = finished_verifications(cairn, organization_id).await?;
    // Each backup's latest finished verification decides whether it is
    // proven good (a later failure takes the proof back).
    let mut latest: HashMap<Uuid, &Finished> = HashMap::new();
    for verification in &finished {
        latest.insert(verification.backup_id, verification);
    }
    let good: Vec<Uuid> = latest
        .values()
        .filter(|v| v.status == VerificationStatus::Success)
        .map(|v| v.backup_id)
        .collect();
    let points = stored_backups(cairn, &good).await?;
    // The recovery point of every series: its newest good backup.
    let mut recovery: HashMap<SeriesKey, (Uuid, DateTime<Utc>)> = HashMap::new();
    for verification in latest.values() {
        let Some(at) = points.get(&verification.backup_id).copied().flatten() else {
            continue;
        };
        if verification.status != VerificationStatus::Success {
            continue;
        }
        let key = (verification.job_id, verification.series.clone());
        let entry = recovery.entry(key).or_insert((verification.backup_id, at));
        if at > entry.1 {
            *entry = (verification.backup_id, at);
        }
    }
    // The latest verification, latest success and latest restore-mode
    // success of every series, latest by when they ended (as the job view
    // orders them).
    let mut last: HashMap<SeriesKey, &Finished> = HashMap::new();
    let mut last_verified: HashMap<SeriesKey, DateTime<Utc>> = HashMap::new();
    let mut last_restore: HashMap<SeriesKey, &Finished> = HashMap::new();
    let later = |a: &Finished, b: &Finished| (a.finished_at, a.id) > (b.finished_at, b.id);
    for verification in &finished {
        let key = (verification.job_id, verification.series.clone());
        if last.get(&key).is_none_or(|seen| later(verification, seen)) {
            last.insert(key.clone(), verification);
        }
        if verification.status != VerificationStatus::Success {
            continue;
        }
        if let Some(at) = verification.finished_at {
            let seen = last_verified.entry(key.clone()).or_insert(at);
            *seen = (*seen).max(at);
        }
        if verification.mode == VerifyMode::Restore
            && verification.total_ms.is_some()
            && last_restore
                .get(&key)
                .is_none_or(|seen| later(verification, seen))
        {
            last_restore.insert(key, verification);
        }
    }
    let mut reports = Vec::with_capacity(jobs.len());
    for job in jobs {
        let mut names: BTreeMap<(String, String), Option<Uuid>> = BTreeMap::new();
        for ((job_id, series), newest) in &newest {
            if *job_id == job.id {
                names.insert(series.clone(), newest.app_id);
            }
        }
        for verification in &finished {
            if verification.job_id == job.id {
                names.entry(verification.series.clone()).or_insert(None);
            }
        }
        let rpo_target = job.rpo_target_seconds.map(|s| s.max(0) as u32);
        let rto_target = job.rto_target_seconds.map(|s| s.max(0) as u32);
        let rpo_met = |rpo: Option<i64>| rpo_target.map(|t| rpo.is_some_and(|r| r <= i64::from(t)));
        let rto_met = |rto: Option<f64>| rto_target.map(|t| rto.is_some_and(|r| r <= f64::from(t)));
        let series: Vec<SeriesReport> = names
            .into_iter()
            .map(|(series, app_id)| {
                let key = (job.id, series.clone());
                let point = recovery.get(&key).copied();
                let rpo_seconds = point.map(|(_, at)| (now - at).num_seconds().max(0));
                let restore = last_restore.get(&key);
                let rto_seconds = restore.and_then(|v| v.total_ms).map(seconds);
                SeriesReport {
                    app_id,
                    last_success_at: newest.get(&key).and_then(|n| n.finished_at),
                    last_verified_at: last_verified.get(&key).copied(),
                    last_verification_status: last.get(&key).map(|v| v.status),
                    recovery_point_backup_id: point.map(|(id, _)| id),
                    recovery_point_at: point.map(|(_, at)| at),
                    rpo_seconds,
                    rpo_met: rpo_met(rpo_seconds),
                    rto_seconds,
                    rto_measured_at: restore.and_then(|v| v.finished_at),
                    rto_met: rto_met(rto_seconds),
                    app_name: series.0,
                    volume_name: series.1,
                }
            })
            .collect();
        // The job's figures, as its view computes them: its newest
        // recovery point, its latest restore-mode success.
        let rpo_seconds = series.iter().filter_map(|s| s.rpo_seconds).min();
        let latest_restore = series
            .iter()
            .filter_map(|s| {
                let key = (job.id, (s.app_name.clone(), s.volume_name.clone()));
                last_restore.get(&key).copied()
            })
            .max_by_key(|v| (v.finished_at, v.id));
        let rto_seconds = latest_restore.and_then(|v| v.total_ms).map(seconds);
        reports.push(JobReport {
            job_id: job.id,
            schedule_interval_seconds: interval(&job.schedule, &job.timezone, now),
            last_success_at: series.iter().filter_map(|s| s.last_success_at).max(),
            last_verified_at: series.iter().filter_map(|s| s.last_verified_at).max(),
            rpo_seconds,
            rpo_target_seconds: rpo_target,
            rpo_met: rpo_met(rpo_seconds),
            rto_seconds,
            rto_target_seconds: rto_target,
            rto_met: rto_met(rto_seconds),
            series,
            name: job.name,
            enabled: job.enabled,
            schedule: job.schedule,
            timezone: job.timezone,
            verify_schedule: job.verify_schedule,
            verify_mode: job.verify_mode,
        });
    }
    Ok(Report {
        generated_at: now,
        jobs: reports,
    })
}

/// The longest gap between the next [`INTERVAL_SAMPLE`] firings of a
/// schedule, in seconds.
fn interval(schedule: &str, zone: &str, now: DateTime<Utc>) -> Option<i64> {
    let schedule = JobSchedule::parse(schedule, zone).ok()?;
    let mut at = schedule.next_after(now)?;
    let mut longest = None;
    for _ in 0..INTERVAL_SAMPLE {
        let next = schedule.next_after(at)?;
        let gap = (next - at).num_seconds();
        longest = Some(longest.map_or(gap, |l: i64| l.max(gap)));
        at = next;
    }
    longest
}

/// The newest successful backup of every series of the organization's
/// jobs (safety backups aside), one row per series.
async fn newest_backups(
    cairn: &Cairn,
    organization_id: Uuid,
) -> Result<HashMap<SeriesKey, Newest>> {
    type Row = (
        Option<Uuid>,
        String,
        String,
        Option<Uuid>,
        Option<DateTime<Utc>>,
    );
    let rows: Vec<Row> = backup::Entity::find()
        .select_only()
        .column(backup::Column::JobId)
        .column(backup::Column::AppName)
        .column(backup::Column::VolumeName)
        .column(backup::Column::AppId)
        .column_as(backup::Column::FinishedAt.max(), "finished_at")
        .filter(backup::Column::OrganizationId.eq(organization_id))
        .filter(backup::Column::Status.eq(BackupStatus::Success))
        .filter(backup::Column::Trigger.ne(Trigger::Safety))
        .filter(backup::Column::JobId.is_not_null())
        .group_by(backup::Column::JobId)
        .group_by(backup::Column::AppName)
        .group_by(backup::Column::VolumeName)
        .group_by(backup::Column::AppId)
        .into_tuple()
        .all(&cairn.db)
        .await?;
    // An app deleted and created again under its name is one series; its
    // newest backup names the app.
    let mut newest: HashMap<SeriesKey, Newest> = HashMap::new();
    for (job_id, app, volume, app_id, finished_at) in rows {
        let Some(job_id) = job_id else { continue };
        let entry = newest.entry((job_id, (app, volume))).or_insert(Newest {
            app_id,
            finished_at,
        });
        if finished_at > entry.finished_at {
            *entry = Newest {
                app_id,
                finished_at,
            };
        }
    }
    Ok(newest)
}

/// Every finished verification of the organization's jobs, oldest first.
async fn finished_verifications(cairn: &Cairn, organization_id: Uuid) -> Result<Vec<Finished>> {
    type Row = (
        Uuid,
        Uuid,
        Option<Uuid>,
        String,
        String,
        VerificationStatus,
        VerifyMode,
        Option<i64>,
        Option<DateTime<Utc>>,
    );
    let rows: Vec<Row> = verification::Entity::find()
        .select_only()
        .column(verification::Column::Id)
        .column(verification::Column::BackupId)
        .column(verification::Column::JobId)
        .column(verification::Column::AppName)
        .column(verification::Column::VolumeName)
        .column(verification::Column::Status)
        .column(verification::Column::Mode)
        .column(verification::Column::TotalMs)
        .column(verification::Column::FinishedAt)
        .filter(verification::Column::OrganizationId.eq(organization_id))
        .filter(verification::Column::JobId.is_not_null())
        .filter(
            verification::Column::Status
                .is_in([VerificationStatus::Success, VerificationStatus::Failed]),
        )
        .order_by_asc(verification::Column::Id)
        .into_tuple()
        .all(&cairn.db)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(
            |(id, backup_id, job_id, app, volume, status, mode, total_ms, finished_at)| {
                Some(Finished {
                    id,
                    backup_id,
                    job_id: job_id?,
                    series: (app, volume),
                    status,
                    mode,
                    total_ms,
                    finished_at,
                })
            },
        )
        .collect())
}

/// Of `ids`, the backups still stored (successful), with when they ended.
async fn stored_backups(
    cairn: &Cairn,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Option<DateTime<Utc>>>> {
    let mut stored = HashMap::new();
    let unique: Vec<Uuid> = ids
        .iter()
        .copied()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    for chunk in unique.chunks(500) {
        let rows: Vec<(Uuid, Option<DateTime<Utc>>)> = backup::Entity::find()
            .select_only()
            .column(backup::Column::Id)
            .column(backup::Column::FinishedAt)
            .filter(backup::Column::Id.is_in(chunk.to_vec()))
            .filter(backup::Column::Status.eq(BackupStatus::Success))
            .into_tuple()
            .all(&cairn.db)
            .await?;
        stored.extend(rows);
    }
    Ok(stored)
}
