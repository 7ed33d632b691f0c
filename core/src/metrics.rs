//! Backup metrics, shared by every role in a process: the worker records,
//! the API's `/metrics` (or a worker's or scheduler's own metrics
//! listener) exposes.
//!
//! Counters and `cairn_backups_running` are this process's. The
//! per-job timestamps are read from the database on every scrape
//! ([`refresh`]): they survive restarts and every replica reports the
//! same.

use std::sync::OnceLock;

use prometheus::{
    Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};

/// The backup metrics of this process.
pub struct BackupMetrics {
    /// `cairn_backups_total{status}`: backups that ended, by outcome.
    pub finished: IntCounterVec,
    /// `cairn_backups_running`: backups this process runs now.
    pub running: Gauge,
    /// `cairn_backup_duration_seconds{kind,status}`.
    pub duration: HistogramVec,
    /// `cairn_backup_bytes_written_total`: archive bytes stored.
    pub bytes_written: IntCounter,
    /// `cairn_backup_last_success_timestamp_seconds{job_id}`: when the
    /// job's newest successful backup ended (from the database).
    pub last_success: GaugeVec,
    /// `cairn_verifications_total{mode,status}`: verifications this process
    /// ran to an outcome.
    pub verifications: IntCounterVec,
    /// `cairn_backup_last_verified_timestamp_seconds{job_id}`: when a
    /// verification of the job's backups last succeeded (from the
    /// database).
    pub last_verified: GaugeVec,
    /// `cairn_backup_copies_total{status}`: copies on copy targets that
    /// ended (`success`, `failed`), by this process.
    pub copies: IntCounterVec,
    pub target_free: GaugeVec,
    pub data_dir_free: Gauge,
}

/// The process's backup metrics.
pub fn backup_metrics() -> &'static BackupMetrics {
    static METRICS: OnceLock<BackupMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        // The names and labels are constants, valid by construction.
        BackupMetrics {
            finished: IntCounterVec::new(
                Opts::new("cairn_backups_total", "Backups that ended, by status"),
                &["status"],
            )
            .expect("valid metric"),
            running: Gauge::new("cairn_backups_running", "Backups running in this process")
                .expect("valid metric"),
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "cairn_backup_duration_seconds",
                    "Wall time of a backup, claim to outcome",
                )
                .buckets(vec![
                    1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0,
                ]),
                &["kind", "status"],
            )
            .expect("valid metric"),
            bytes_written: IntCounter::new(
                "cairn_backup_bytes_written_total",
                "Archive bytes written to storage targets",
            )
            .expect("valid metric"),
            last_success: GaugeVec::new(
                Opts::new(
                    "cairn_backup_last_success_timestamp_seconds",
                    "Unix time of the last successful backup, per job",
                ),
                &["job_id"],
            )
            .expect("valid metric"),
            verifications: IntCounterVec::new(
                Opts::new(
                    "cairn_verifications_total",
                    "Verifications that ended, by mode and status",
                ),
                &["mode", "status"],
            )
            .expect("valid metric"),
            last_verified: GaugeVec::new(
                Opts::new(
                    "cairn_backup_last_verified_timestamp_seconds",
                    "Unix time of the last successful verification of a job's backups, per job",
                ),
                &["job_id"],
            )
            .expect("valid metric"),
            copies: IntCounterVec::new(
                Opts::new(
                    "cairn_backup_copies_total",
                    "Copies of backups on copy targets that ended, by status",
                ),
                &["status"],
            )
            .expect("valid metric"),
            target_free: GaugeVec::new(
                Opts::new(
                    "cairn_target_free_bytes",
                    "Free bytes on a local target's file system, measured before each backup to it",
                ),
                &["target_id"],
            )
            .expect("valid metric"),
            data_dir_free: Gauge::new(
                "cairn_data_dir_free_bytes",
                "Free bytes on the file system of Cairn's data directory, measured before each backup",
            )
            .expect("valid metric"),
        }
    })
}

/// Adds the backup metrics to `registry`.
pub fn register(registry: &Registry) -> prometheus::Result<()> {
    let metrics = backup_metrics();
    registry.register(Box::new(metrics.finished.clone()))?;
    registry.register(Box::new(metrics.running.clone()))?;
    registry.register(Box::new(metrics.duration.clone()))?;
    registry.register(Box::new(metrics.bytes_written.clone()))?;
    registry.register(Box::new(metrics.last_success.clone()))?;
    registry.register(Box::new(metrics.verifications.clone()))?;
    registry.register(Box::new(metrics.last_verified.clone()))?;
    registry.register(Box::new(metrics.copies.clone()))?;
    registry.register(Box::new(metrics.target_free.clone()))?;
    registry.register(Box::new(metrics.data_dir_free.clone()))?;
    Ok(())
}

/// Reads the per-job timestamps from the database: the end of each job's
/// newest successful backup (safety backups aside) and of its latest
/// successful verification. A job with neither has no series.
pub async fn refresh(db: &sea_orm::DatabaseConnection) -> anyhow::Result<()> {
    use cairn_entity::enums::{BackupStatus, Trigger, VerificationStatus};
    use cairn_entity::{backup, verification};
    use chrono::{DateTime, Utc};
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
    type Row = (Option<uuid::Uuid>, Option<DateTime<Utc>>);
    let successes: Vec<Row> = backup::Entity::find()
        .select_only()
        .column(backup::Column::JobId)
        .column_as(backup::Column::FinishedAt.max(), "finished_at")
        .filter(backup::Column::Status.eq(BackupStatus::Success))
        .filter(backup::Column::Trigger.ne(Trigger::Safety))
        .filter(backup::Column::JobId.is_not_null())
        .group_by(backup::Column::JobId)
        .into_tuple()
        .all(db)
        .await?;
    let verified: Vec<Row> = verification::Entity::find()
        .select_only()
        .column(verification::Column::JobId)
        .column_as(verification::Column::FinishedAt.max(), "finished_at")
        .filter(verification::Column::Status.eq(VerificationStatus::Success))
        .filter(verification::Column::JobId.is_not_null())
        .group_by(verification::Column::JobId)
        .into_tuple()
        .all(db)
        .await?;
    let metrics = backup_metrics();
    for (gauge, rows) in [
        (&metrics.last_success, successes),
        (&metrics.last_verified, verified),
    ] {
        // Jobs deleted since the last scrape lose their series.
        gauge.reset();
        for (job_id, at) in rows {
            if let (Some(job_id), Some(at)) = (job_id, at) {
                gauge
                    .with_label_values(&[&job_id.to_string()])
                    .set(at.timestamp() as f64);
            }
        }
    }
    Ok(())
}
