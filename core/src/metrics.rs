//! Backup metrics, shared by every role in a process: the worker records,
//! the API's `/metrics` (or the worker's own metrics listener) exposes.

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
    /// `cairn_backup_last_success_timestamp_seconds{job_id}`.
    pub last_success: GaugeVec,
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
    Ok(())
}
