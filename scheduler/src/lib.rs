//! The scheduler role: a tick at the start of every minute that fires each
//! due backup job's slot exactly once across replicas.
//!
//! # A tick
//!
//! [`Scheduler::tick`] is a plain function of `now`:
//!
//! 1. load enabled jobs with `next_run_at <= now` (the `ix_backup_jobs_due`
//!    index), in pages;
//! 2. plan each: the slots that passed since `next_run_at`; the most recent
//!    fires if it is within the job's `startingDeadlineSeconds`, the older
//!    ones become one `missed` record;
//! 3. take the slot locks of the page in one pipelined round trip (`SET
//!    lock:backup:{jobId}:{minute} NX PX 61000`, the minute being the
//!    scheduled slot's, so replicas with skewed clocks agree); a job locked
//!    by another replica is left to it;
//! 4. record the slot: `skipped` when a backup of the job is still pending
//!    or running, else
//!    a run with its pending backups (as a manual run). The unique
//!    `(job_id, scheduled_for)` of `backup_runs` is the fence that keeps a
//!    slot to one record when a lock is lost (Redis failover or flush, a
//!    replica stalled past the TTL, a clock off by more than the TTL);
//! 5. advance `next_run_at` past `now` and set `last_run_at` — conditional
//!    on `next_run_at` being unchanged, so replicas cannot move it back.
//!
//! A job whose stored schedule or zone cannot be read (written by an older
//! version) is flagged (`schedule_error`, `next_run_at` cleared) and the
//! tick goes on with the others.
//!
//! Then the verify slots: jobs with a `verify_schedule` whose
//! `next_verify_at` passed, locked the same way (`lock:verify:{jobId}:
//! {minute}`), each recording one verification of the newest backup of
//! every series it covers (`cairn_core::verifications::fire_slot`, fenced
//! by the unique `(job_id, backup_id, scheduled_for)`), then
//! `next_verify_at` advanced past `now` conditionally. Verify slots that
//! passed while no scheduler ran are not made up: the next one verifies the
//! newest backups anyway.
//!
//! Last, the self-backup: the newest slot of `system_backup.schedule`
//! within the hour, locked as `lock:system-backup:{minute}` and recorded
//! once (`cairn_core::system::fire`, fenced by the unique `scheduled_for`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use tokio::sync::watch;
use uuid::Uuid;

use cairn_core::runs::schedule::JobSchedule;
use cairn_core::runs::{self, MissedSlots, Started};
use cairn_core::Cairn;
use cairn_entity::enums::{BackupStatus, RunStatus, Trigger};
use cairn_entity::{backup, backup_job};

pub use cairn_core::runs::locks::{self, LocalLocks, LockError, RedisLocks, SlotLocks, LOCK_TTL};

/// Due jobs loaded per page.
const PAGE: u64 = 2_000;
/// Jobs recorded at once within a page.
const PARALLEL: usize = 8;
/// Slots a `missed` record counts at most (a minutely job down for about
/// two months).
const MAX_MISSED_COUNTED: usize = 100_000;
/// Slots at most this old are due, not missed: a tick comes every minute,
/// a replica's tick may run late by up to a minute, and a replica whose
/// clock runs ahead sees slots earlier. Only slots older than this passed
/// while no scheduler ran.
const RECENT: chrono::Duration = chrono::Duration::seconds(150);

/// What one tick did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Jobs found due.
    pub due: usize,
    /// Runs created (with pending backups, or skipped for want of a target
    /// or volume).
    pub fired: usize,
    /// Slots recorded as `skipped`: the job's previous run was still active.
    pub skipped: usize,
    /// `missed` records written.
    pub missed: usize,
    /// Jobs whose slot lock another replica held.
    pub locked_elsewhere: usize,
    /// Slots another replica had already recorded (the database fence).
    pub already_recorded: usize,
    /// Jobs flagged for an unreadable schedule or zone.
    pub flagged: usize,
    /// The lock service failed: this tick relied on the database fence.
    pub lock_service_down: bool,
    /// Verify slots due.
    pub verify_due: usize,
    /// Verifications recorded for verify slots.
    pub verifications: usize,
    /// Self-backups recorded for their slot.
    pub system_backups: usize,
}

impl TickReport {
    fn merge(&mut self, other: TickReport) {
        self.due += other.due;
        self.fired += other.fired;
        self.skipped += other.skipped;
        self.missed += other.missed;
        self.locked_elsewhere += other.locked_elsewhere;
        self.already_recorded += other.already_recorded;
        self.flagged += other.flagged;
        self.lock_service_down |= other.lock_service_down;
        self.verify_due += other.verify_due;
        self.verifications += other.verifications;
        self.system_backups += other.system_backups;
    }
}

/// One due job's slots.
struct Plan {
    job: backup_job::Model,
    /// The slots that fire, oldest first: every due slot when all are
    /// recent, else only the most recent one if it is within the deadline.
    fire: Vec<DateTime<Utc>>,
    /// The older slots that passed unfired.
    missed: Option<MissedSlots>,
    /// The slot the lock is keyed on: the most recent one.
    latest: DateTime<Utc>,
    /// The job's next slot after `now`.
    next: Option<DateTime<Utc>>,
}

/// A scheduler: the context, its lock service and its name.
pub struct Scheduler {
    cairn: Cairn,
    locks: Arc<dyn SlotLocks>,
    instance: String,
    /// When the lock service's outage was last logged (once a minute).
    outage_logged: Mutex<Option<Instant>>,
    lock_service_up: AtomicBool,
}

impl Scheduler {
    pub fn new(cairn: Cairn, locks: Arc<dyn SlotLocks>, instance: String) -> Scheduler {
        Scheduler {
            cairn,
            locks,
            instance,
            outage_logged: Mutex::new(None),
            lock_service_up: AtomicBool::new(true),
        }
    }

    /// Whether the last tick reached the lock service.
    pub fn lock_service_up(&self) -> bool {
        self.lock_service_up.load(Ordering::Relaxed)
    }

    /// Round trips made to the lock service so far.
    pub fn lock_round_trips(&self) -> u64 {
        self.locks.round_trips()
    }

    /// Ticks now, then at the start of every minute, until `stop` turns
    /// true.
    pub async fn run(&self, mut stop: watch::Receiver<bool>) {
        tracing::info!(instance = %self.instance, "scheduler started");
        loop {
            match self.tick(Utc::now()).await {
                Ok(report) if report != TickReport::default() => {
                    tracing::info!(?report, "scheduler tick")
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::error!(error = format!("{error:#}"), "scheduler tick failed")
                }
            }
            let now = Utc::now();
            let into_minute = now.timestamp_subsec_millis() as u64
                + (now.timestamp().rem_euclid(60) as u64) * 1000;
            let wait = Duration::from_millis(60_000 - into_minute.min(59_999));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|stopped| *stopped) => break,
            }
        }
        tracing::info!(instance = %self.instance, "scheduler stopped");
    }

    /// One tick at `now`.
    pub async fn tick(&self, now: DateTime<Utc>) -> anyhow::Result<TickReport> {
        let mut report = TickReport::default();
        let mut after: Option<(DateTime<Utc>, Uuid)> = None;
        loop {
            let mut query = backup_job::Entity::find()
                .filter(backup_job::Column::Enabled.eq(true))
                .filter(backup_job::Column::NextRunAt.lte(now))
                // A deleted organization's jobs stop (until it is undeleted).
                .filter(sea_orm::sea_query::Expr::cust(
                    "backup_jobs.organization_id NOT IN \
                     (SELECT id FROM organizations WHERE deleted_at IS NOT NULL)",
                ));
            if let Some((at, id)) = after {
                query = query.filter(
                    Condition::any()
                        .add(backup_job::Column::NextRunAt.gt(at))
                        .add(
                            Condition::all()
                                .add(backup_job::Column::NextRunAt.eq(at))
                                .add(backup_job::Column::Id.gt(id)),
                        ),
                );
            }
            let page = query
                .order_by_asc(backup_job::Column::NextRunAt)
                .order_by_asc(backup_job::Column::Id)
                .limit(PAGE)
                .all(&self.cairn.db)
                .await?;
            let full = page.len() as u64 == PAGE;
            after = page
                .last()
                .and_then(|job| job.next_run_at.map(|at| (at, job.id)));
            report.due += page.len();
            self.page(page, now, &mut report).await?;
            if !full {
                break;
            }
        }
        self.tick_verifications(now, &mut report).await?;
        self.tick_system_backup(now, &mut report).await?;
        if report.fired
            + report.skipped
            + report.missed
            + report.verifications
            + report.system_backups
            > 0
        {
            self.cairn.work_recorded().await;
        }
        Ok(report)
    }

    /// The self-backup slot due at `now`, if any: locked like a job's
    /// slot, recorded once (the unique `scheduled_for`).
    async fn tick_system_backup(
        &self,
        now: DateTime<Utc>,
        report: &mut TickReport,
    ) -> anyhow::Result<()> {
        let Some(slot) = cairn_core::system::due_slot(&self.cairn, now) else {
            return Ok(());
        };
        let keys = [locks::system_backup_key(slot)];
        let taken = match self.locks.acquire(&keys, &self.instance, LOCK_TTL).await {
            Ok(taken) => taken.first().copied().unwrap_or(false),
            Err(error) => {
                report.lock_service_down = true;
                self.log_outage(&error);
                true
            }
        };
        if !taken {
            report.locked_elsewhere += 1;
            return Ok(());
        }
        if cairn_core::system::fire(&self.cairn, slot, now)
            .await?
            .is_some()
        {
            report.system_backups += 1;
        }
        Ok(())
    }

    /// The verify slots due at `now`, a page at a time: lock, record, and
    /// advance each job's `next_verify_at`.
    async fn tick_verifications(
        &self,
        now: DateTime<Utc>,
        report: &mut TickReport,
    ) -> anyhow::Result<()> {
        loop {
            let jobs = backup_job::Entity::find()
                .filter(backup_job::Column::Enabled.eq(true))
                .filter(backup_job::Column::NextVerifyAt.lte(now))
                .filter(sea_orm::sea_query::Expr::cust(
                    "backup_jobs.organization_id NOT IN \
                     (SELECT id FROM organizations WHERE deleted_at IS NOT NULL)",
                ))
                .order_by_asc(backup_job::Column::NextVerifyAt)
                .order_by_asc(backup_job::Column::Id)
                .limit(PAGE)
                .all(&self.cairn.db)
                .await?;
            let full = jobs.len() as u64 == PAGE;
            report.verify_due += jobs.len();
            let keys: Vec<String> = jobs
                .iter()
                .filter_map(|job| {
                    job.next_verify_at
                        .map(|slot| locks::verify_key(job.id, slot))
                })
                .collect();
            let taken = match self.locks.acquire(&keys, &self.instance, LOCK_TTL).await {
                Ok(taken) => taken,
                Err(error) => {
                    report.lock_service_down = true;
                    self.log_outage(&error);
                    vec![true; keys.len()]
                }
            };
            for (job, taken) in jobs.into_iter().zip(taken) {
                if !taken {
                    report.locked_elsewhere += 1;
                    continue;
                }
                report.verifications += self.fire_verify_slot(&job, now).await?;
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Records one job's verify slot, then moves `next_verify_at` past
    /// `now` (unless another replica moved it first). A schedule that no
    /// longer reads clears `next_verify_at`, with a warning.
    async fn fire_verify_slot(
        &self,
        job: &backup_job::Model,
        now: DateTime<Utc>,
    ) -> anyhow::Result<usize> {
        let Some(slot) = job.next_verify_at else {
            return Ok(0);
        };
        let schedule = job
            .verify_schedule
            .as_deref()
            .map(|expression| JobSchedule::parse(expression, &job.timezone));
        let (recorded, next) = match schedule {
            Some(Ok(schedule)) => (
                cairn_core::verifications::fire_slot(&self.cairn, job, slot, now).await?,
                schedule.next_after(now),
            ),
            Some(Err(error)) => {
                tracing::warn!(job_id = %job.id, "the verify schedule cannot be read ({error}); verifications stop until the job is updated");
                (0, None)
            }
            None => (0, None),
        };
        backup_job::Entity::update_many()
            .col_expr(backup_job::Column::NextVerifyAt, Expr::value(next))
            .filter(backup_job::Column::Id.eq(job.id))
            .filter(backup_job::Column::NextVerifyAt.eq(slot))
            .exec(&self.cairn.db)
            .await?;
        Ok(recorded)
    }

    async fn page(
        &self,
        jobs: Vec<backup_job::Model>,
        now: DateTime<Utc>,
        report: &mut TickReport,
    ) -> anyhow::Result<()> {
        let mut plans = Vec::with_capacity(jobs.len());
        for job in jobs {
            let (id, next_run_at) = (job.id, job.next_run_at);
            match plan(job, now) {
                Ok(plan) => plans.push(plan),
                Err(why) => {
                    self.flag(id, next_run_at, &why).await?;
                    report.flagged += 1;
                }
            }
        }
        let keys: Vec<String> = plans
            .iter()
            .map(|plan| locks::key(plan.job.id, plan.latest))
            .collect();
        let taken = match self.locks.acquire(&keys, &self.instance, LOCK_TTL).await {
            Ok(taken) => {
                self.lock_service_up.store(true, Ordering::Relaxed);
                taken
            }
            Err(error) => {
                self.lock_service_up.store(false, Ordering::Relaxed);
                report.lock_service_down = true;
                self.log_outage(&error);
                // The database fence alone keeps each slot to one record.
                vec![true; keys.len()]
            }
        };
        let outcomes: Vec<anyhow::Result<TickReport>> = futures::stream::iter(
            plans
                .into_iter()
                .zip(taken)
                .map(|(plan, taken)| async move {
                    if !taken {
                        return Ok(TickReport {
                            locked_elsewhere: 1,
                            ..TickReport::default()
                        });
                    }
                    self.record(plan, now).await
                }),
        )
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
        for outcome in outcomes {
            report.merge(outcome?);
        }
        Ok(())
    }

    fn log_outage(&self, error: &LockError) {
        let Ok(mut logged) = self.outage_logged.lock() else {
            return;
        };
        if logged.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
            tracing::warn!(
                error = %error,
                "the lock service is down; scheduling on the database fence alone"
            );
            *logged = Some(Instant::now());
        }
    }

    /// Records the plan of a job whose slot lock this replica holds.
    async fn record(&self, plan: Plan, now: DateTime<Utc>) -> anyhow::Result<TickReport> {
        let db = &self.cairn.db;
        let job = &plan.job;
        let mut report = TickReport::default();
        if let Some(missed) = plan.missed {
            let reason = format!(
                "{} slot(s) from {} to {} passed while no scheduler ran{}",
                missed.count,
                missed.from.to_rfc3339(),
                missed.to.to_rfc3339(),
                match plan.fire.last() {
                    Some(slot) =>
                        format!("; the most recent one ({}) fired late", slot.to_rfc3339()),
                    None => format!(
                        "; all older than the starting deadline ({} s), so none fired",
                        job.starting_deadline_seconds
                    ),
                }
            );
            if runs::record_unfired(
                db,
                job.id,
                missed.from,
                RunStatus::Missed,
                reason,
                Some(missed),
                now,
            )
            .await?
            {
                tracing::warn!(job_id = %job.id, count = missed.count, "missed slots recorded");
                report.missed += 1;
            } else {
                report.already_recorded += 1;
            }
        }
        for slot in &plan.fire {
            report.merge(self.fire(job, *slot, now).await?);
        }
        // Advance past now, only from the value this plan started from.
        backup_job::Entity::update_many()
            .col_expr(backup_job::Column::NextRunAt, Expr::value(plan.next))
            .col_expr(
                backup_job::Column::LastRunAt,
                Expr::value(plan.fire.last().copied().or(job.last_run_at)),
            )
            .filter(backup_job::Column::Id.eq(job.id))
            .filter(backup_job::Column::NextRunAt.eq(job.next_run_at))
            .exec(db)
            .await?;
        Ok(report)
    }

    /// Records the run of `slot`, or its skip when a run is still active.
    async fn fire(
        &self,
        job: &backup_job::Model,
        slot: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<TickReport> {
        let db = &self.cairn.db;
        // A backup of the job still pending or running (of any run).
        let active = backup::Entity::find()
            .filter(backup::Column::JobId.eq(job.id))
            .filter(backup::Column::Status.is_in([BackupStatus::Pending, BackupStatus::Running]))
            .one(db)
            .await?;
        let skip = |reason: String| async move {
            let recorded =
                runs::record_unfired(db, job.id, slot, RunStatus::Skipped, reason, None, now)
                    .await?;
            anyhow::Ok(if recorded {
                TickReport {
                    skipped: 1,
                    ..TickReport::default()
                }
            } else {
                TickReport {
                    already_recorded: 1,
                    ..TickReport::default()
                }
            })
        };
        if let Some(active) = active {
            return skip(format!(
                "backup {} of the previous run {} is still {}",
                active.id,
                active
                    .run_id
                    .map(|id| id.to_string())
                    .unwrap_or_else(|| "(none)".into()),
                active.status
            ))
            .await;
        }
        match runs::start(db, job, Trigger::Schedule, slot, now).await {
            Ok(Started::Run(_)) | Ok(Started::Skipped { .. }) => Ok(TickReport {
                fired: 1,
                ..TickReport::default()
            }),
            // The slot is taken, or a run became active since the check:
            // either way the slot gets one record, whoever wrote it.
            Err(cairn_core::Error::Conflict { .. }) => {
                skip("a run of the job was still active".to_owned()).await
            }
            Err(error) => Err(anyhow::anyhow!("{error:#}")),
        }
    }

    /// Flags a job whose stored schedule cannot be read.
    async fn flag(
        &self,
        id: Uuid,
        next_run_at: Option<DateTime<Utc>>,
        why: &str,
    ) -> anyhow::Result<()> {
        tracing::warn!(job_id = %id, "{why}; the job does not fire until it is corrected");
        backup_job::Entity::update_many()
            .col_expr(backup_job::Column::ScheduleError, Expr::value(why))
            .col_expr(
                backup_job::Column::NextRunAt,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .filter(backup_job::Column::Id.eq(id))
            .filter(backup_job::Column::NextRunAt.eq(next_run_at))
            .exec(&self.cairn.db)
            .await?;
        Ok(())
    }
}

/// The slots of a due job at `now`: every slot from `next_run_at` to now.
/// When all are recent, all fire (usually one); when some are older than
/// [`RECENT`] (no scheduler ran), the most recent fires if it is within the
/// starting deadline and the others are missed.
fn plan(job: backup_job::Model, now: DateTime<Utc>) -> Result<Plan, String> {
    let schedule = JobSchedule::parse(&job.schedule, &job.timezone)
        .map_err(|error| format!("{error} ({:?} in {:?})", job.schedule, job.timezone))?;
    let Some(first) = job.next_run_at else {
        return Err("the job is due but has no next run".into());
    };
    let slots: Vec<DateTime<Utc>> = std::iter::once(first)
        .chain(schedule.between(first, now, MAX_MISSED_COUNTED))
        .collect();
    let latest = *slots.last().unwrap_or(&first);
    let deadline = chrono::Duration::seconds(i64::from(job.starting_deadline_seconds.max(0)));
    let (fire, unfired): (Vec<_>, Vec<_>) = if now - first <= RECENT {
        (slots, Vec::new())
    } else {
        let fire: Vec<_> = (now - latest <= deadline)
            .then_some(latest)
            .into_iter()
            .collect();
        let unfired = slots.into_iter().filter(|s| !fire.contains(s)).collect();
        (fire, unfired)
    };
    let missed = match (unfired.first(), unfired.last()) {
        (Some(from), Some(to)) => Some(MissedSlots {
            count: unfired.len() as u32,
            from: *from,
            to: *to,
        }),
        _ => None,
    };
    let next = schedule.next_after(latest.max(now));
    Ok(Plan {
        job,
        fire,
        missed,
        latest,
        next,
    })
}
