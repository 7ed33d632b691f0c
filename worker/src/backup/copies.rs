//! Copies written beside the backup: the job's copy targets get the same
//! stream as the primary, read once from the source and split by
//! [`fan_out`] (bounded queues: a slow copy slows the backup, never makes
//! it hold the archive). A copy that fails is left out from then on and
//! never fails the backup; it is retried later from the primary
//! (`crate::copy`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{ActiveModelTrait, ActiveValue, ColumnTrait, EntityTrait, QueryFilter};
use uuid::Uuid;

use cairn_core::failure::FailureCode;
use cairn_core::storage::fanout::fan_out;
use cairn_core::storage::{
    self, ByteStream, ObjectInfo, ObjectKey, Purpose, Storage, StorageResult,
};
use cairn_core::Cairn;
use cairn_entity::enums::CopyStatus;
use cairn_entity::{backup_copy, backup_target};

use super::Attempt;
use crate::failure::{internal, storage_failure, Failure};
use crate::lease::{append_log, line};
use cairn_core::history::LogLine;

/// The targets a backup writes: its primary and its copies.
pub(crate) struct Fanout {
    pub primary: Arc<CopySink>,
    pub copies: Vec<Arc<CopySink>>,
}

/// Chunks a copy may lag behind the fastest writer.
const COPY_QUEUE: usize = 8;

/// One copy being written beside the backup.
pub(crate) struct CopySink {
    /// The copy's row.
    pub id: Uuid,
    pub target: backup_target::Model,
    /// `None` when the target could not be opened.
    storage: Option<Arc<dyn Storage>>,
    /// The first failure; the copy is left out from then on.
    failure: Mutex<Option<Failure>>,
    /// Bytes of the archive the copy target stored.
    stored: Mutex<Option<u64>>,
}

impl CopySink {
    fn fail(&self, failure: Failure) {
        if let Ok(mut slot) = self.failure.lock() {
            if slot.is_none() {
                *slot = Some(failure);
            }
        }
    }

    fn failed(&self) -> bool {
        self.failure.lock().map(|f| f.is_some()).unwrap_or(true)
    }

    fn take_failure(&self) -> Option<Failure> {
        self.failure.lock().ok().and_then(|mut f| f.take())
    }
}

/// The job's copy targets for this backup, each with its row recorded
/// `running` (attempt 1) before anything is written, so that whoever fails
/// this attempt knows what to clean up. A copy target the settings refuse
/// (or the primary itself) is recorded `pending` with the reason, to be
/// retried, and gets nothing now.
pub(super) async fn prepare(
    cairn: &Cairn,
    attempt: &mut Attempt,
    primary: &backup_target::Model,
    path: &str,
) -> Result<Vec<Arc<CopySink>>, Failure> {
    let Some(job_id) = attempt.model.job_id else {
        return Ok(Vec::new());
    };
    let ids = cairn_core::jobs::copy_targets_of(&cairn.db, job_id)
        .await
        .map_err(internal)?;
    let mut sinks = Vec::new();
    let now = Utc::now();
    for target_id in ids {
        let Some(target) = backup_target::Entity::find_by_id(target_id)
            .one(&cairn.db)
            .await
            .map_err(internal)?
        else {
            continue;
        };
        if target_id == primary.id {
            // A job without a targetId writes to its default target, which
            // may be one of its copy targets: that place holds the primary.
            attempt.note(
                "warn",
                format!(
                    "copy target '{}' is this backup's own target (the job names no targetId and \
                     this is its default), so the backup is in one place fewer than the job asks; \
                     set the job's targetId",
                    target.name
                ),
            );
            continue;
        }
        let opened = match storage::refusal(cairn, &target) {
            Some((code, message)) => Err(Failure::new(code, message)),
            None => storage::open(cairn, &target, Purpose::Transfer).map_err(|e| {
                Failure::new(
                    FailureCode::TargetUnreachable,
                    format!("opening the copy target: {e}"),
                )
            }),
        };
        let id = Uuid::now_v7();
        let row = backup_copy::ActiveModel {
            id: ActiveValue::Set(id),
            backup_id: ActiveValue::Set(attempt.model.id),
            organization_id: ActiveValue::Set(attempt.model.organization_id),
            target_id: ActiveValue::Set(Some(target.id)),
            target_name: ActiveValue::Set(target.name.clone()),
            status: ActiveValue::Set(CopyStatus::Running),
            storage_path: ActiveValue::Set(Some(path.to_owned())),
            sha256: ActiveValue::Set(None),
            size: ActiveValue::Set(None),
            attempt: ActiveValue::Set(1),
            next_attempt_at: ActiveValue::Set(now),
            error_code: ActiveValue::Set(None),
            error_message: ActiveValue::Set(None),
            lease_owner: ActiveValue::Set(None),
            lease_expires_at: ActiveValue::Set(None),
            created_at: ActiveValue::Set(now),
            started_at: ActiveValue::Set(Some(now)),
            finished_at: ActiveValue::Set(None),
        };
        // A retried backup attempt (the same record) replaces the copies of
        // the attempt before.
        backup_copy::Entity::delete_many()
            .filter(backup_copy::Column::BackupId.eq(attempt.model.id))
            .filter(backup_copy::Column::TargetId.eq(target.id))
            .exec(&cairn.db)
            .await
            .map_err(internal)?;
        row.insert(&cairn.db).await.map_err(internal)?;
        let storage = match opened {
            Ok(storage) => storage,
            Err(failure) => {
                attempt.note(
                    "warn",
                    format!(
                        "copy to target '{}' skipped: {}",
                        target.name, failure.message
                    ),
                );
                let sink = CopySink {
                    id,
                    storage: None,
                    target,
                    failure: Mutex::new(Some(failure)),
                    stored: Mutex::new(None),
                };
                sinks.push(Arc::new(sink));
                continue;
            }
        };
        attempt.note(
            "info",
            format!("copying to target '{}' as {path}", target.name),
        );
        sinks.push(Arc::new(CopySink {
            id,
            target,
            storage: Some(storage),
            failure: Mutex::new(None),
            stored: Mutex::new(None),
        }));
    }
    Ok(sinks)
}

/// The primary target with its copies: a `put` writes the same bytes to
/// every target still going, reading the body once, and succeeds when one
/// of them stored it all — the primary, or, when the primary failed, a
/// copy (which then becomes the backup's target, see [`promotion`]). Reads
/// go to the primary; a delete (the clean-up of a failed attempt) reaches
/// every target.
pub(super) struct Replicated {
    pub primary: Arc<dyn Storage>,
    /// The primary as a sink (its row id is nil: it has no copy row).
    pub primary_sink: Arc<CopySink>,
    pub copies: Vec<Arc<CopySink>>,
}

impl CopySink {
    /// The primary, as the fan-out sees it.
    pub(super) fn primary(target: backup_target::Model, storage: Arc<dyn Storage>) -> CopySink {
        CopySink {
            id: Uuid::nil(),
            target,
            storage: Some(storage),
            failure: Mutex::new(None),
            stored: Mutex::new(None),
        }
    }
}

#[async_trait::async_trait]
impl Storage for Replicated {
    async fn connect(&self) -> StorageResult<()> {
        self.primary.connect().await
    }

    async fn put(&self, key: &ObjectKey, body: ByteStream) -> StorageResult<u64> {
        let live: Vec<(&Arc<CopySink>, &Arc<dyn Storage>)> = std::iter::once(&self.primary_sink)
            .chain(self.copies.iter())
            .filter(|c| !c.failed())
            .filter_map(|c| c.storage.as_ref().map(|s| (c, s)))
            .collect();
        if live.is_empty() {
            return Err(storage::StorageError::Io(
                "every target of this backup has failed".into(),
            ));
        }
        let readers = fan_out(body, live.len(), COPY_QUEUE);
        let puts = live
            .into_iter()
            .zip(readers)
            .map(|((sink, storage), reader)| async move {
                let put = storage.put(key, reader).await;
                (sink, put)
            });
        let mut primary_error = None;
        let mut written = None;
        for (sink, put) in futures::future::join_all(puts).await {
            let is_primary = Arc::ptr_eq(sink, &self.primary_sink);
            match put {
                Ok(bytes) => {
                    if let Ok(mut stored) = sink.stored.lock() {
                        // The archive is the first object put; sidecars after.
                        stored.get_or_insert(bytes);
                    }
                    if is_primary || written.is_none() {
                        written = Some(bytes);
                    }
                }
                Err(error) => {
                    sink.fail(storage_failure(
                        &format!("writing {key} to target '{}'", sink.target.name),
                        &error,
                    ));
                    if is_primary {
                        primary_error = Some(error);
                    }
                }
            }
        }
        match (written, primary_error) {
            (Some(bytes), _) => Ok(bytes),
            (None, Some(error)) => Err(error),
            (None, None) => Err(storage::StorageError::Io(
                "every target of this backup has failed".into(),
            )),
        }
    }

    async fn get(&self, key: &ObjectKey) -> StorageResult<(u64, ByteStream)> {
        self.primary.get(key).await
    }

    async fn head(&self, key: &ObjectKey) -> StorageResult<Option<u64>> {
        self.primary.head(key).await
    }

    async fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectInfo>> {
        self.primary.list(prefix).await
    }

    async fn delete(&self, key: &ObjectKey) -> StorageResult<()> {
        for copy in &self.copies {
            let Some(storage) = &copy.storage else {
                continue;
            };
            if let Err(error) = storage.delete(key).await {
                tracing::warn!(key = %key, target = %copy.target.name, "deleting a copy's object failed: {error}");
            }
        }
        self.primary.delete(key).await
    }

    async fn presigned_get(
        &self,
        key: &ObjectKey,
        expires_in: Duration,
    ) -> StorageResult<Option<url::Url>> {
        self.primary.presigned_get(key, expires_in).await
    }

    async fn remove_incomplete(&self, key: &ObjectKey) -> StorageResult<usize> {
        self.primary.remove_incomplete(key).await
    }

    fn observed_host_key(&self) -> Option<String> {
        self.primary.observed_host_key()
    }

    async fn free_space(&self) -> StorageResult<Option<u64>> {
        self.primary.free_space().await
    }
}

/// When the primary failed but a copy stored the whole archive: that copy
/// (the first such), which becomes the backup's target, and the primary's
/// failure. `None` while the primary holds it.
pub(super) fn promotion(
    primary: &CopySink,
    copies: &[Arc<CopySink>],
    size: u64,
) -> Option<(Arc<CopySink>, Failure)> {
    if !primary.failed() {
        return None;
    }
    let promoted = copies
        .iter()
        .find(|copy| !copy.failed() && copy.stored.lock().ok().and_then(|s| *s) == Some(size))?;
    let failure = primary.take_failure()?;
    Some((promoted.clone(), failure))
}

/// Records how each copy ended, once the backup's outcome is recorded:
/// - the backup succeeded: a copy that stored all of it (its size checked
///   against the primary's) is `success`; one that failed is `pending`,
///   to be retried from the primary after the first backoff (or `failed`
///   when `copies.max_attempts` is 1);
/// - the backup failed: every copy is `failed` (what it wrote was deleted
///   with the primary's).
pub(super) async fn settle(
    cairn: &Cairn,
    attempt: &mut Attempt,
    fanout: &Fanout,
    outcome: Option<(u64, &str)>,
    promoted: Option<(Arc<CopySink>, Failure)>,
) {
    let now = Utc::now();
    let mut lines = Vec::new();
    // A promoted copy's row now stands for the primary that failed: that
    // target gets its copy later, from the new primary.
    if let (Some((sink, failure)), Some(_)) = (&promoted, outcome) {
        let old = &fanout.primary.target;
        lines.push(line(
            "warn",
            format!(
                "the primary target '{}' failed ({}: {}); the archive is complete on copy target '{}', \
                 which is now the backup's target",
                old.name, failure.code, failure.message, sink.target.name
            ),
        ));
        let mut changes = retry_later(
            cairn,
            &mut lines,
            old,
            Failure::new(failure.code, failure.message.clone()),
            now,
        );
        changes.target_id = ActiveValue::Set(Some(old.id));
        changes.target_name = ActiveValue::Set(old.name.clone());
        if let Err(error) = backup_copy::Entity::update_many()
            .set(changes)
            .filter(backup_copy::Column::Id.eq(sink.id))
            .exec(&cairn.db)
            .await
        {
            tracing::error!(copy_id = %sink.id, "recording the promotion failed: {error}");
        }
    }
    for copy in &fanout.copies {
        if outcome.is_some()
            && promoted
                .as_ref()
                .is_some_and(|(sink, _)| Arc::ptr_eq(sink, copy))
        {
            continue;
        }
        let stored = copy.stored.lock().ok().and_then(|s| *s);
        let failure = copy.take_failure();
        let changes = match (outcome, failure) {
            (Some((size, sha256)), None) if stored == Some(size) => {
                lines.push(line(
                    "info",
                    format!("copied to target '{}' ({size} bytes)", copy.target.name),
                ));
                count(CopyStatus::Success);
                finished(CopyStatus::Success, now, Some((size, sha256)), None)
            }
            (Some((size, _)), failure) => {
                let failure = failure.unwrap_or_else(|| {
                    Failure::new(
                        FailureCode::UploadFailed,
                        format!(
                            "the copy target stored {} bytes of {size}",
                            stored.map_or("no".into(), |s| s.to_string())
                        ),
                    )
                });
                retry_later(cairn, &mut lines, &copy.target, failure, now)
            }
            (None, _) => finished(
                CopyStatus::Failed,
                now,
                None,
                Some(Failure::new(
                    FailureCode::UploadFailed,
                    "the backup failed; nothing of it is kept on this copy target",
                )),
            ),
        };
        if let Err(error) = backup_copy::Entity::update_many()
            .set(changes)
            .filter(backup_copy::Column::Id.eq(copy.id))
            .exec(&cairn.db)
            .await
        {
            tracing::error!(copy_id = %copy.id, "recording a copy's outcome failed: {error}");
        }
    }
    // The backup's outcome (and its log) is recorded already.
    attempt.log.extend(lines.iter().cloned());
    if let Err(error) = append_log(&cairn.db, attempt.model.id, lines).await {
        tracing::warn!(backup_id = %attempt.model.id, "logging the copies' outcome failed: {error:#}");
    }
}

/// A failed first attempt: `pending` again after the first backoff, or
/// `failed` when no attempt is left.
fn retry_later(
    cairn: &Cairn,
    lines: &mut Vec<LogLine>,
    target: &backup_target::Model,
    failure: Failure,
    now: DateTime<Utc>,
) -> backup_copy::ActiveModel {
    let config = &cairn.config.copies;
    if config.max_attempts <= 1 {
        lines.push(line(
            "warn",
            format!(
                "copy to target '{}' failed for good: {}",
                target.name, failure.message
            ),
        ));
        count(CopyStatus::Failed);
        return finished(CopyStatus::Failed, now, None, Some(failure));
    }
    let delay = config.retry_delay(1);
    lines.push(line(
        "warn",
        format!(
            "copy to target '{}' failed ({}: {}); it will be copied from the primary in {} s",
            target.name,
            failure.code,
            failure.message,
            delay.as_secs()
        ),
    ));
    pending_again(now, delay, failure)
}

/// The changes that put a copy back to `pending`, due after `delay`, with
/// the failure of the attempt that just ended.
pub(crate) fn pending_again(
    now: DateTime<Utc>,
    delay: Duration,
    failure: Failure,
) -> backup_copy::ActiveModel {
    backup_copy::ActiveModel {
        status: ActiveValue::Set(CopyStatus::Pending),
        next_attempt_at: ActiveValue::Set(
            now + chrono::Duration::from_std(delay).unwrap_or_default(),
        ),
        error_code: ActiveValue::Set(Some(failure.code.as_str().to_owned())),
        error_message: ActiveValue::Set(Some(failure.message)),
        lease_owner: ActiveValue::Set(None),
        lease_expires_at: ActiveValue::Set(None),
        ..Default::default()
    }
}

/// The changes that end a copy.
pub(crate) fn finished(
    status: CopyStatus,
    now: DateTime<Utc>,
    stored: Option<(u64, &str)>,
    failure: Option<Failure>,
) -> backup_copy::ActiveModel {
    backup_copy::ActiveModel {
        status: ActiveValue::Set(status),
        size: ActiveValue::Set(stored.map(|(size, _)| size as i64)),
        sha256: ActiveValue::Set(stored.map(|(_, sha)| sha.to_owned())),
        error_code: ActiveValue::Set(failure.as_ref().map(|f| f.code.as_str().to_owned())),
        error_message: ActiveValue::Set(failure.map(|f| f.message)),
        finished_at: ActiveValue::Set(Some(now)),
        lease_owner: ActiveValue::Set(None),
        lease_expires_at: ActiveValue::Set(None),
        ..Default::default()
    }
}

/// Counts a copy that ended in `cairn_backup_copies_total`.
pub(crate) fn count(status: CopyStatus) {
    cairn_core::metrics::backup_metrics()
        .copies
        .with_label_values(&[status.as_str()])
        .inc();
}
