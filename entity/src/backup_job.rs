use sea_orm::entity::prelude::*;

use crate::enums::VerifyMode;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "backup_jobs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub organization_id: Uuid,
    pub name: String,
    pub schedule: String,
    pub enabled: bool,
    pub target_id: Option<Uuid>,
    pub keep_all: bool,
    pub keep_last: Option<i32>,
    pub keep_hourly: Option<i32>,
    pub keep_daily: Option<i32>,
    pub keep_weekly: Option<i32>,
    pub keep_monthly: Option<i32>,
    pub keep_yearly: Option<i32>,
    pub notify_on_success: bool,
    pub notify_on_failure: bool,
    pub last_run_at: Option<DateTimeUtc>,
    pub next_run_at: Option<DateTimeUtc>,
    pub auto_created: bool,
    /// `zstd`, `gzip` or `none`.
    pub compression: String,
    /// `none` or `age`.
    pub encryption: String,
    /// age or ssh-ed25519 public keys that can decrypt too.
    pub extra_recipients: Option<Json>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// IANA name of the zone the schedule is read in.
    pub timezone: String,
    /// How late a missed slot may still fire (Kubernetes CronJob's
    /// `startingDeadlineSeconds`).
    pub starting_deadline_seconds: i32,
    /// A backup or restore running longer fails `deadline_exceeded`.
    pub max_duration_seconds: i32,
    /// The recovery point objective: how old the newest verified backup
    /// may be, in seconds.
    pub rpo_target_seconds: Option<i32>,
    /// The recovery time objective: how long a restore of one of the job's
    /// volumes may take, in seconds, as restore-mode verifications measure
    /// it.
    pub rto_target_seconds: Option<i32>,
    /// When the job's newest backups are verified (cron in `timezone`);
    /// `None`: only on demand.
    pub verify_schedule: Option<String>,
    pub verify_mode: VerifyMode,
    /// The next verification slot; `None` without a verify schedule.
    pub next_verify_at: Option<DateTimeUtc>,
    /// Why the scheduler could not read the stored schedule or zone; the
    /// job does not fire until it is corrected.
    pub schedule_error: Option<String>,
    pub last_success_at: Option<DateTimeUtc>,
    pub consecutive_failures: i32,
    /// The app an automatic job was created for.
    pub auto_app_id: Option<Uuid>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
