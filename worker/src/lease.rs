//! Claims, lease renewal, fenced writes and the reaping of expired leases.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{
    Alias, Expr, LockBehavior, LockType, Query, SimpleExpr, SubQueryStatement,
};
use sea_orm::{
    ActiveValue, ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use uuid::Uuid;

use cairn_core::failure::FailureCode;
use cairn_core::history::LogLine;
use cairn_core::storage::{self, ObjectKey, Purpose};
use cairn_core::Cairn;
use cairn_entity::enums::BackupStatus;
use cairn_entity::{backup, backup_run, backup_target};

use crate::Worker;

/// How long the reaper spends on one lost attempt's leftovers.
const CLEAN_UP_TIMEOUT: Duration = Duration::from_secs(60);

fn lease_until(now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(30))
}

/// A table whose rows are claimed by workers under a lease: `backups`,
/// `restores` and `verifications` share the columns `id`, `status`, `attempt`, `lease_owner`,
/// `lease_expires_at`, `created_at` and `started_at`.
pub trait Leased: EntityTrait + Default {
    /// What else a pending row must satisfy to be claimed now (SQL on the
    /// row's own table, by name).
    fn claimable() -> Option<&'static str> {
        None
    }

    /// A column a pending row must have reached (`<= now`) to be claimed.
    fn due_column() -> Option<&'static str> {
        None
    }
}

/// A self-backup reads Cairn's own database, nothing of a tenant's.
impl Leased for cairn_entity::system_backup::Entity {}

/// A copy is claimed once its next attempt is due, whatever else runs: it
/// reads the primary, never a volume.
impl Leased for cairn_entity::backup_copy::Entity {
    fn due_column() -> Option<&'static str> {
        Some("next_attempt_at")
    }
}

/// A backup and a restore of one volume never overlap: a backup waits while
/// a restore (not a dry run) into its volume is pending or running...
impl Leased for backup::Entity {
    fn claimable() -> Option<&'static str> {
        Some(
            "NOT EXISTS (SELECT 1 FROM restores r WHERE r.status IN ('pending', 'running') \
             AND r.dry_run = FALSE AND r.app_id = backups.app_id \
             AND r.volume_name = backups.volume_name)",
        )
    }
}

/// ...and a restore waits for a running backup of its destination (its own
/// safety backup aside, which it takes itself). A dry run writes nothing
/// and waits for nothing.
impl Leased for cairn_entity::restore::Entity {
    fn claimable() -> Option<&'static str> {
        Some(
            "(restores.dry_run = TRUE OR NOT EXISTS (SELECT 1 FROM backups b \
             WHERE b.status = 'running' AND b.trigger <> 'safety' \
             AND b.app_id = restores.app_id AND b.volume_name = restores.volume_name))",
        )
    }
}

/// A verification reads a backup, never a volume; it waits only while a
/// restore (not a dry run) writes the backup's volume, so what it proves is
/// not mixed up with a restore in flight.
impl Leased for cairn_entity::verification::Entity {
    fn claimable() -> Option<&'static str> {
        Some(
            "NOT EXISTS (SELECT 1 FROM restores r WHERE r.status IN ('pending', 'running') \
             AND r.dry_run = FALSE AND r.app_id = verifications.app_id \
             AND r.volume_name = verifications.volume_name)",
        )
    }
}

/// The advisory lock every claim takes on PostgreSQL, so that claims of
/// backups and restores run one at a time and each sees the previous one
/// committed (two concurrent claims could otherwise each miss the other's
/// row: write skew).
const CLAIM_LOCK: i64 = 0x6361_6972_6e01;

fn column(name: &'static str) -> Alias {
    Alias::new(name)
}

/// Claims the oldest pending row that [`Leased::claimable`] allows:
/// `running`, next attempt, leased to `owner`. On PostgreSQL the candidate row is locked with `FOR UPDATE SKIP
/// LOCKED`, so concurrent claimers take different rows; on SQLite (one
/// writer at a time) the update's `status = 'pending'` condition is the
/// guard. Either way a row is claimed by one worker only.
///
/// The candidate is compared with `=` (a scalar subquery, evaluated once),
/// not `IN`: PostgreSQL may re-run an `IN` subquery per row, and with SKIP
/// LOCKED each run skips the row the previous one locked, so one claim
/// could take several rows.
pub(crate) async fn claim<E: Leased>(
    db: &sea_orm::DatabaseConnection,
    owner: &str,
    lease: Duration,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<E::Model>> {
    use sea_orm::TransactionTrait;
    let mut candidate = Query::select()
        .column(column("id"))
        .from(E::default())
        .and_where(Expr::col(column("status")).eq(BackupStatus::Pending))
        .to_owned();
    if let Some(condition) = E::claimable() {
        candidate.and_where(Expr::cust(condition));
    }
    if let Some(due) = E::due_column() {
        candidate.and_where(Expr::col(column(due)).lte(now));
    }
    let candidate = candidate
        .order_by(column("created_at"), sea_orm::Order::Asc)
        .order_by(column("id"), sea_orm::Order::Asc)
        .limit(1)
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
        .to_owned();
    let claimed = E::update_many()
        .col_expr(column("status"), Expr::value(BackupStatus::Running))
        .col_expr(column("attempt"), Expr::col(column("attempt")).add(1))
        .col_expr(column("lease_owner"), Expr::value(owner))
        .col_expr(
            column("lease_expires_at"),
            Expr::value(lease_until(now, lease)),
        )
        .col_expr(column("started_at"), Expr::value(now))
        .filter(Expr::col(column("id")).eq(SimpleExpr::SubQuery(
            None,
            Box::new(SubQueryStatement::SelectStatement(candidate)),
        )))
        .filter(Expr::col(column("status")).eq(BackupStatus::Pending));
    // SQLite has one writer at a time; PostgreSQL takes turns by the lock.
    let txn = db.begin().await?;
    if txn.get_database_backend() == sea_orm::DbBackend::Postgres {
        txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({CLAIM_LOCK})"))
            .await?;
    }
    let claimed = claimed.exec_with_returning(&txn).await?;
    txn.commit().await?;
    Ok(claimed.into_iter().next())
}

/// Extends the lease of attempt `attempt`; false when the attempt no longer
/// holds the row (it was reaped).
pub(crate) async fn renew<E: Leased>(
    db: &impl ConnectionTrait,
    id: Uuid,
    attempt: i32,
    lease: Duration,
    now: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let updated = E::update_many()
        .col_expr(
            column("lease_expires_at"),
            Expr::value(lease_until(now, lease)),
        )
        .filter(held(id, attempt))
        .exec(db)
        .await?;
    Ok(updated.rows_affected == 1)
}

/// The condition of a write by attempt `attempt`: it still holds the row.
fn held(id: Uuid, attempt: i32) -> Condition {
    Condition::all()
        .add(Expr::col(column("id")).eq(id))
        .add(Expr::col(column("attempt")).eq(attempt))
        .add(Expr::col(column("status")).eq(BackupStatus::Running))
}

/// Writes `changes` only while attempt `attempt` holds the row; false when
/// it no longer does (nothing was written).
pub async fn fenced_update<E: Leased>(
    db: &impl ConnectionTrait,
    id: Uuid,
    attempt: i32,
    changes: E::ActiveModel,
) -> anyhow::Result<bool> {
    let updated = E::update_many()
        .set(changes)
        .filter(held(id, attempt))
        .exec(db)
        .await?;
    Ok(updated.rows_affected == 1)
}

/// The target `id` names, or `target_missing` saying `gone` when it was
/// deleted (or never named).
pub(crate) async fn target_or_missing(
    cairn: &Cairn,
    id: Option<Uuid>,
    gone: &str,
) -> Result<backup_target::Model, crate::failure::Failure> {
    let target = match id {
        Some(id) => backup_target::Entity::find_by_id(id)
            .one(&cairn.db)
            .await
            .map_err(crate::failure::internal)?,
        None => None,
    };
    target.ok_or_else(|| crate::failure::Failure::new(FailureCode::TargetMissing, gone))
}

/// A log line at `now`.
pub(crate) fn line(level: &str, message: impl Into<String>) -> LogLine {
    LogLine {
        at: Utc::now(),
        level: level.to_owned(),
        message: message.into(),
    }
}

/// A claimed backup or restore as its running attempt knows it: the
/// record, and its log with the lines this attempt added.
pub(crate) struct Attempt<M> {
    pub(crate) model: M,
    pub(crate) log: Vec<LogLine>,
    /// `backup` or `restore`, and the record's id, for the process log.
    what: &'static str,
    id: Uuid,
}

impl<M> Attempt<M> {
    pub(crate) fn new(model: M, what: &'static str, id: Uuid, log: &serde_json::Value) -> Self {
        Attempt {
            model,
            log: serde_json::from_value(log.clone()).unwrap_or_default(),
            what,
            id,
        }
    }

    /// Adds a line to the record's log (written with the next fenced
    /// update) and to the process log.
    pub(crate) fn note(&mut self, level: &str, message: impl Into<String>) {
        let line = line(level, message);
        tracing::info!(what = self.what, id = %self.id, level, "{}", line.message);
        self.log.push(line);
    }

    pub(crate) fn log_value(&self) -> serde_json::Value {
        serde_json::to_value(&self.log).unwrap_or_else(|_| serde_json::json!([]))
    }
}

/// Appends lines to a backup's log (a backup no worker holds any more).
pub(crate) async fn append_log(
    db: &impl ConnectionTrait,
    id: Uuid,
    lines: Vec<LogLine>,
) -> anyhow::Result<()> {
    cairn_core::history::append_log(db, id, lines)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// The objects a backup writes: the archive and its two sidecars.
pub(crate) use cairn_core::history::objects_of;

/// Removes what a lost attempt left at `path` on target `target_id`:
/// temporary files, and any object it completed without recording.
/// Returns how many were removed; an unreachable target gives up after
/// [`CLEAN_UP_TIMEOUT`] rather than hold up the worker's own work.
async fn remove_leftovers(cairn: &Cairn, target_id: Uuid, path: &str) -> anyhow::Result<usize> {
    let outcome = async {
        let target = backup_target::Entity::find_by_id(target_id)
            .one(&cairn.db)
            .await?
            .ok_or_else(|| anyhow::anyhow!("the target no longer exists"))?;
        let storage = storage::open(cairn, &target, Purpose::Transfer)?;
        let mut removed = 0;
        for object in objects_of(path) {
            let key = ObjectKey::parse(&object)?;
            removed += storage.remove_incomplete(&key).await?;
            if storage.head(&key).await?.is_some() {
                storage.delete(&key).await?;
                removed += 1;
            }
        }
        anyhow::Ok(removed)
    };
    match tokio::time::timeout(CLEAN_UP_TIMEOUT, outcome).await {
        Ok(outcome) => outcome,
        Err(_) => Err(anyhow::anyhow!(
            "the target did not answer within {} s",
            CLEAN_UP_TIMEOUT.as_secs()
        )),
    }
}

/// Fails the copies a lost attempt was writing beside its backup, and
/// removes what it left on their targets.
async fn fail_copies(cairn: &Cairn, model: &backup::Model, now: DateTime<Utc>) -> Option<LogLine> {
    use cairn_entity::backup_copy;
    use cairn_entity::enums::CopyStatus;
    let copies = backup_copy::Entity::find()
        .filter(backup_copy::Column::BackupId.eq(model.id))
        .filter(backup_copy::Column::Status.eq(CopyStatus::Running))
        .filter(backup_copy::Column::LeaseOwner.is_null())
        .all(&cairn.db)
        .await
        .ok()?;
    if copies.is_empty() {
        return None;
    }
    let mut removed = 0;
    for copy in &copies {
        if let (Some(target_id), Some(path)) = (copy.target_id, copy.storage_path.as_deref()) {
            match remove_leftovers(cairn, target_id, path).await {
                Ok(count) => removed += count,
                Err(error) => {
                    tracing::warn!(copy_id = %copy.id, error = format!("{error:#}"), "cleaning up a lost copy failed");
                }
            }
        }
        let lost = crate::failure::Failure::new(
            FailureCode::WorkerLost,
            "the backup's worker died while it wrote this copy",
        );
        let _ = backup_copy::Entity::update_many()
            .set(crate::backup::copies::finished(
                CopyStatus::Failed,
                now,
                None,
                Some(lost),
            ))
            .filter(backup_copy::Column::Id.eq(copy.id))
            .filter(backup_copy::Column::Status.eq(CopyStatus::Running))
            .exec(&cairn.db)
            .await;
    }
    Some(line(
        "info",
        format!(
            "{} copy(ies) of the lost attempt failed; {removed} leftover object(s) removed from their targets",
            copies.len()
        ),
    ))
}

/// Fails every backup whose lease expired before `now` with `worker_lost`,
/// removes what its worker left on the target (temporary files, and any
/// object it completed without recording), and closes runs that this
/// finished. Returns how many backups it failed.
pub async fn reap(cairn: &Cairn, now: DateTime<Utc>) -> anyhow::Result<usize> {
    let expired = backup::Entity::find()
        .filter(backup::Column::Status.eq(BackupStatus::Running))
        .filter(backup::Column::LeaseExpiresAt.lt(now))
        .order_by_asc(backup::Column::Id)
        .limit(100)
        .all(&cairn.db)
        .await?;
    let mut reaped = 0;
    for model in expired {
        let message = format!(
            "the worker {} stopped renewing its lease (expired at {}); it is presumed dead",
            model.lease_owner.as_deref().unwrap_or("unknown"),
            model
                .lease_expires_at
                .map(|t| t.to_rfc3339())
                .unwrap_or_default()
        );
        let failed = backup::Entity::update_many()
            .set(backup::ActiveModel {
                status: ActiveValue::Set(BackupStatus::Failed),
                error_code: ActiveValue::Set(Some(FailureCode::WorkerLost.as_str().to_owned())),
                error_message: ActiveValue::Set(Some(message.clone())),
                finished_at: ActiveValue::Set(Some(now)),
                lease_owner: ActiveValue::Set(None),
                lease_expires_at: ActiveValue::Set(None),
                ..Default::default()
            })
            .filter(backup::Column::Id.eq(model.id))
            .filter(backup::Column::Attempt.eq(model.attempt))
            .filter(backup::Column::Status.eq(BackupStatus::Running))
            .filter(backup::Column::LeaseExpiresAt.lt(now))
            .exec(&cairn.db)
            .await?;
        if failed.rows_affected != 1 {
            continue;
        }
        reaped += 1;
        cairn_core::metrics::backup_metrics()
            .finished
            .with_label_values(&["failed"])
            .inc();
        tracing::warn!(backup_id = %model.id, attempt = model.attempt, "{message}");
        // The run closes first: whatever happens to the clean-up, the job
        // is not left with a run that never ends.
        if let Some(run_id) = model.run_id {
            crate::prune::close_run(cairn, run_id, now).await?;
        }
        let mut lines = vec![line(
            "error",
            format!("{}: {message}", FailureCode::WorkerLost),
        )];
        lines.push(clean_up(cairn, &model).await);
        lines.extend(fail_copies(cairn, &model, now).await);
        append_log(&cairn.db, model.id, lines).await?;
    }
    close_finished_runs(cairn, now).await?;
    Ok(reaped)
}

/// Closes runs whose backups have all ended but which nobody closed (the
/// worker that ended the last one died between recording it and closing
/// the run, or the database failed it then). Without this, the job could
/// never start another run.
async fn close_finished_runs(cairn: &Cairn, now: DateTime<Utc>) -> anyhow::Result<()> {
    let active = Query::select()
        .expr(Expr::val(1))
        .from(backup::Entity)
        .and_where(
            Expr::col((backup::Entity, backup::Column::RunId))
                .equals((backup_run::Entity, backup_run::Column::Id)),
        )
        .and_where(
            Expr::col((backup::Entity, backup::Column::Status))
                .is_in([BackupStatus::Pending, BackupStatus::Running]),
        )
        .to_owned();
    let stale = backup_run::Entity::find()
        .filter(backup_run::Column::Status.eq(cairn_entity::enums::RunStatus::Running))
        .filter(Condition::all().add(Expr::exists(active).not()))
        .limit(100)
        .all(&cairn.db)
        .await?;
    for run in stale {
        crate::prune::close_run(cairn, run.id, now).await?;
    }
    Ok(())
}

/// Removes the objects and temporary files of a failed attempt; the log
/// line says what happened.
async fn clean_up(cairn: &Cairn, model: &backup::Model) -> LogLine {
    let (Some(path), Some(target_id)) = (&model.storage_path, model.target_id) else {
        return line("info", "nothing was written to the target");
    };
    match remove_leftovers(cairn, target_id, path).await {
        Ok(removed) => line(
            "info",
            format!("removed {removed} leftover object(s) of the lost attempt from the target"),
        ),
        Err(error) => {
            tracing::warn!(backup_id = %model.id, error = format!("{error:#}"), "cleaning up a lost attempt failed");
            line(
                "warn",
                format!("the leftovers of the lost attempt could not be removed: {error:#}"),
            )
        }
    }
}

/// Renews the lease every third of its length; returns when it is lost.
pub(crate) async fn keep_lease<E: Leased>(worker: &Worker, id: uuid::Uuid, attempt: i32) {
    let lease = worker.options.lease;
    let period = lease / 3;
    let mut last_renewed = Instant::now();
    loop {
        tokio::time::sleep(period).await;
        match renew::<E>(&worker.cairn.db, id, attempt, lease, Utc::now()).await {
            Ok(true) => last_renewed = Instant::now(),
            Ok(false) => return,
            Err(error) => {
                tracing::warn!(id = %id, error = format!("{error:#}"), "renewing the lease failed");
                // The lease is gone once its length has passed unrenewed.
                if last_renewed.elapsed() >= lease {
                    return;
                }
            }
        }
    }
}

/// How long a backup or restore of `job_id`'s may run (the default when
/// the job is gone or cannot be read: a read error must not lift the bound).
pub(crate) async fn max_duration(worker: &Worker, job_id: Option<uuid::Uuid>) -> Duration {
    match cairn_core::jobs::max_duration(&worker.cairn.db, job_id).await {
        Ok(limit) => limit,
        Err(error) => {
            tracing::warn!(
                error = format!("{error:#}"),
                "reading the job's maxDurationSeconds failed; using the default"
            );
            Duration::from_secs(u64::from(cairn_core::jobs::DEFAULT_MAX_DURATION))
        }
    }
}

/// Runs `work` — whose blocking steps stop when `cancel` is set — under the
/// limits of an attempt of `what` (`restore`, `verification`): the worker's
/// stop signal and `limit` (the job's `maxDurationSeconds`) cancel it, and
/// the work then ends on its own (a restore's swap still ends whole); a lost
/// lease abandons it. Past the deadline the failure is `deadline_exceeded`,
/// with the cancelled step's own code and message.
pub(crate) async fn cancellable<E: Leased, T>(
    worker: &Worker,
    (id, attempt): (Uuid, i32),
    what: &str,
    limit: Duration,
    cancel: &cairn_core::storage::Cancellation,
    mut stop: tokio::sync::watch::Receiver<bool>,
    work: impl std::future::Future<Output = Result<T, crate::failure::Failure>>,
) -> Result<T, crate::failure::Failure> {
    use crate::failure::Failure;
    use futures::FutureExt;
    let mut overdue = false;
    let outcome = {
        let work = work.fuse();
        let lease = keep_lease::<E>(worker, id, attempt).fuse();
        let stopped = stop.wait_for(|stopped| *stopped).fuse();
        let deadline = tokio::time::sleep(limit).fuse();
        tokio::pin!(work, lease, stopped, deadline);
        loop {
            tokio::select! {
                outcome = &mut work => break outcome,
                () = &mut lease => break Err(Failure::new(
                    FailureCode::LeaseLost,
                    format!("the worker lost its lease on this {what} and stopped"),
                )),
                _ = &mut stopped => cancel.cancel(),
                () = &mut deadline => {
                    overdue = true;
                    cancel.cancel();
                }
            }
        }
    };
    match outcome {
        Err(failure) if overdue => Err(Failure::new(
            FailureCode::DeadlineExceeded,
            format!(
                "the {what} ran longer than the job's maxDurationSeconds ({} s) and was cancelled \
                 ({}: {})",
                limit.as_secs(),
                failure.code,
                failure.message
            ),
        )),
        other => other,
    }
}
