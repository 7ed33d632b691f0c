//! Copies retried from the primary: a copy that failed beside its backup is
//! claimed once due (`next_attempt_at`), under the same lease and fencing
//! as backups, and written from the primary's archive — downloaded,
//! hashed as it passes and held to the recorded SHA-256 — never from the
//! volume again. Attempts back off (`copies.retry_*`) up to
//! `copies.max_attempts`; then the copy is `failed`.

use chrono::Utc;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, TransactionTrait};
use tokio::sync::watch;

use cairn_core::failure::FailureCode;
use cairn_core::format::names::{sha256_line, Sidecar};
use cairn_core::notifications::{self, Subject};
use cairn_core::storage::hashing::hashing;
use cairn_core::storage::{self, Cancellation, ObjectKey, Purpose};
use cairn_entity::enums::{BackupStatus, CopyStatus};
use cairn_entity::{backup, backup_copy};

use crate::backup::copies::{count, finished, pending_again};
use crate::failure::{download_failure, internal, storage_failure, Failure};
use crate::lease::{self, append_log, line, max_duration};
use crate::Worker;

/// Runs a claimed copy to its outcome and records it, fenced on this
/// attempt: `success`, `pending` again after the backoff, or `failed` once
/// no attempt is left.
pub(crate) async fn run_copy(
    worker: &Worker,
    model: backup_copy::Model,
    stop: watch::Receiver<bool>,
) {
    let (id, attempt_no) = (model.id, model.attempt);
    let cancel = Cancellation::default();
    let backup = backup::Entity::find_by_id(model.backup_id)
        .one(&worker.cairn.db)
        .await
        .ok()
        .flatten();
    let limit = max_duration(worker, backup.as_ref().and_then(|b| b.job_id)).await;
    let work = copy_from_primary(worker, &model, backup, cancel.clone());
    let outcome = lease::cancellable::<backup_copy::Entity, _>(
        worker,
        (id, attempt_no),
        "copy",
        limit,
        &cancel,
        stop,
        work,
    )
    .await;
    let now = Utc::now();
    let max_attempts = worker.cairn.config.copies.max_attempts as i32;
    let (changes, message, status) = match outcome {
        Ok((size, sha256)) => (
            finished(CopyStatus::Success, now, Some((size, &sha256)), None),
            line(
                "info",
                format!(
                    "copied to target '{}' from the primary ({size} bytes, sha256 checked; attempt {attempt_no})",
                    model.target_name
                ),
            ),
            Some(CopyStatus::Success),
        ),
        Err(failure) if failure.code == FailureCode::BackupUnavailable => (
            finished(CopyStatus::Pruned, now, None, Some(failure)),
            line(
                "info",
                format!(
                    "the copy to target '{}' was dropped: the backup is no longer stored",
                    model.target_name
                ),
            ),
            None,
        ),
        Err(failure) if attempt_no >= max_attempts => {
            let message = line(
                "error",
                format!(
                    "copy to target '{}' failed for good after {attempt_no} attempts ({}: {})",
                    model.target_name, failure.code, failure.message
                ),
            );
            (
                finished(CopyStatus::Failed, now, None, Some(failure)),
                message,
                Some(CopyStatus::Failed),
            )
        }
        Err(failure) => {
            let delay = worker
                .cairn
                .config
                .copies
                .retry_delay(attempt_no.max(1) as u32);
            let message = line(
                "warn",
                format!(
                    "copy to target '{}' failed (attempt {attempt_no}: {}: {}); next attempt in {} s",
                    model.target_name,
                    failure.code,
                    failure.message,
                    delay.as_secs()
                ),
            );
            (pending_again(now, delay, failure), message, None)
        }
    };
    // A final failure and its notifications are recorded together.
    let recorded = async {
        let txn = worker.cairn.db.begin().await?;
        let updated =
            lease::fenced_update::<backup_copy::Entity>(&txn, id, attempt_no, changes).await?;
        if updated && status == Some(CopyStatus::Failed) {
            notifications::enqueue_guarded(&txn, Subject::Copy(id), now).await;
        }
        txn.commit().await?;
        anyhow::Ok(updated)
    }
    .await;
    match recorded {
        Ok(true) => {
            if let Some(status) = status {
                count(status);
            }
            tracing::info!(copy_id = %id, backup_id = %model.backup_id, "{}", message.message);
            if let Err(error) = append_log(&worker.cairn.db, model.backup_id, vec![message]).await {
                tracing::warn!(copy_id = %id, "logging the copy's outcome failed: {error:#}");
            }
        }
        Ok(false) => {
            tracing::warn!(copy_id = %id, attempt = attempt_no, "the outcome was not recorded: this attempt no longer holds the copy");
        }
        Err(error) => {
            tracing::error!(copy_id = %id, error = format!("{error:#}"), "recording the copy's outcome failed; its lease will expire and it will be tried again");
        }
    }
}

/// Copies the backup's archive from the primary:
/// 1. the backup, still successful, and its archive on the primary;
/// 2. the copy target, opened unless the settings refuse it;
/// 3. the download streamed into the copy target, hashed as it passes;
///    a digest other than the record's deletes what was written and
///    fails `checksum_mismatch` (the primary is damaged);
/// 4. the sidecars (checksum, manifest) beside it.
///
/// Returns the size and SHA-256 the copy target stored.
async fn copy_from_primary(
    worker: &Worker,
    model: &backup_copy::Model,
    backup: Option<backup::Model>,
    cancel: Cancellation,
) -> Result<(u64, String), Failure> {
    let cairn = &worker.cairn;
    let unavailable = |message: String| Failure::new(FailureCode::BackupUnavailable, message);
    let backup = backup.ok_or_else(|| unavailable("the backup was deleted".into()))?;
    if backup.status != BackupStatus::Success {
        return Err(unavailable(format!("the backup is {}", backup.status)));
    }
    let expected = backup
        .sha256
        .clone()
        .ok_or_else(|| unavailable("the backup records no checksum".into()))?;
    let manifest = backup.manifest.clone();
    let archive = cairn_core::restores::stored_archive(cairn, backup)
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let target =
        lease::target_or_missing(cairn, model.target_id, "the copy target no longer exists")
            .await?;
    if let Some((code, message)) = storage::refusal(cairn, &target) {
        return Err(Failure::new(code, message));
    }
    let copy = storage::open(cairn, &target, Purpose::Transfer).map_err(internal)?;
    let (_, stream) = archive
        .storage
        .get(&archive.key)
        .await
        .map_err(|e| download_failure("downloading the primary's archive", &e))?;
    let (stream, hash) = hashing(stream, cancel);
    let size = copy
        .put(&archive.key, stream)
        .await
        .map_err(|e| storage_failure("uploading the copy", &e))?;
    let (digest, _) = hash.finish();
    let still_stored = backup::Entity::find_by_id(model.backup_id)
        .one(&cairn.db)
        .await
        .map_err(internal)?
        .is_some_and(|b| b.status == BackupStatus::Success);
    if !still_stored {
        // Retention pruned it while it was copied: what was written goes.
        let _ = copy.delete(&archive.key).await;
        return Err(unavailable(
            "the backup was pruned while it was copied".into(),
        ));
    }
    if digest != expected {
        let _ = copy.delete(&archive.key).await;
        return Err(Failure::new(
            FailureCode::ChecksumMismatch,
            format!(
                "the primary's archive read back with sha256 {digest}, the record says {expected}: \
                 the primary is damaged; nothing was copied"
            ),
        ));
    }
    let path = archive.key.to_string();
    let file_name = path.rsplit('/').next().unwrap_or(&path).to_owned();
    for sidecar in Sidecar::ALL {
        let body = match sidecar {
            Sidecar::Sha256 => sha256_line(&expected, &file_name).into_bytes(),
            Sidecar::Manifest => match &manifest {
                Some(manifest) => serde_json::to_vec_pretty(manifest).map_err(internal)?,
                None => continue,
            },
        };
        let key = ObjectKey::parse(&sidecar.of(&path)).map_err(internal)?;
        copy.put(&key, storage::single_chunk(body.into()))
            .await
            .map_err(|e| storage_failure("uploading a sidecar of the copy", &e))?;
    }
    Ok((size, digest))
}

/// Puts copies whose worker died (lease expired before `now`) back to
/// `pending` — their attempt counted — or ends them `failed` when it was
/// their last.
pub(crate) async fn reap(
    cairn: &cairn_core::Cairn,
    now: chrono::DateTime<Utc>,
) -> anyhow::Result<usize> {
    let expired = backup_copy::Entity::find()
        .filter(backup_copy::Column::Status.eq(CopyStatus::Running))
        .filter(backup_copy::Column::LeaseExpiresAt.lt(now))
        .all(&cairn.db)
        .await?;
    let max_attempts = cairn.config.copies.max_attempts as i32;
    let mut reaped = 0;
    for model in expired {
        let lost = Failure::new(
            FailureCode::WorkerLost,
            format!(
                "the worker {} stopped renewing its lease; it is presumed dead",
                model.lease_owner.as_deref().unwrap_or("unknown")
            ),
        );
        let last = model.attempt >= max_attempts;
        let changes = if last {
            finished(CopyStatus::Failed, now, None, Some(lost))
        } else {
            pending_again(now, std::time::Duration::ZERO, lost)
        };
        let txn = cairn.db.begin().await?;
        let updated = backup_copy::Entity::update_many()
            .set(changes)
            .filter(backup_copy::Column::Id.eq(model.id))
            .filter(backup_copy::Column::Attempt.eq(model.attempt))
            .filter(backup_copy::Column::Status.eq(CopyStatus::Running))
            .filter(backup_copy::Column::LeaseExpiresAt.lt(now))
            .exec(&txn)
            .await?;
        if updated.rows_affected == 1 && last {
            notifications::enqueue_guarded(&txn, Subject::Copy(model.id), now).await;
        }
        txn.commit().await?;
        if updated.rows_affected == 1 {
            reaped += 1;
            if last {
                count(CopyStatus::Failed);
            }
        }
    }
    Ok(reaped)
}
