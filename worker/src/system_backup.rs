//! Self-backups: a claimed `system_backups` row becomes a snapshot of
//! Cairn's database and a manifest in a staging directory under
//! `<data_dir>/tmp`, archived (tar, zstd, age to the system key, SHA-256)
//! straight into the target, sidecars after; recorded fenced on the
//! attempt, then retention prunes older self-backups. The staging directory
//! is removed on every ending.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, Set};
use tokio::sync::watch;

use cairn_core::failure::FailureCode;
use cairn_core::format::names::{sha256_line, Sidecar};
use cairn_core::format::tar::{tar_stream, Compression, TarOptions};
use cairn_core::storage::{self, Cancellation, ObjectKey, Purpose, Storage};
use cairn_core::system::{self, SystemManifest};
use cairn_entity::enums::SystemBackupStatus;
use cairn_entity::{backup_target, system_backup};

use crate::failure::{internal, storage_failure, Failure};
use crate::lease;
use crate::Worker;

/// The longest a self-backup may take.
const LIMIT: Duration = Duration::from_secs(4 * 3600);

/// Where this attempt's archive is being written, once it is.
type Written = Arc<std::sync::Mutex<Option<(Arc<dyn Storage>, String)>>>;

/// What a finished self-backup stored.
struct Stored {
    path: String,
    size: u64,
    sha256: String,
    manifest: SystemManifest,
}

/// Runs a claimed self-backup to its outcome and records it; prunes after
/// a success.
pub(crate) async fn run_system_backup(
    worker: &Worker,
    model: system_backup::Model,
    stop: watch::Receiver<bool>,
) {
    let (id, attempt) = (model.id, model.attempt);
    let cancel = Cancellation::default();
    let written: Written = Arc::new(std::sync::Mutex::new(None));
    let work = perform(worker, &model, written.clone());
    let outcome = lease::cancellable::<system_backup::Entity, _>(
        worker,
        (id, attempt),
        "self-backup",
        LIMIT,
        &cancel,
        stop,
        work,
    )
    .await;
    let now = Utc::now();
    let changes = match &outcome {
        Ok(stored) => system_backup::ActiveModel {
            status: Set(SystemBackupStatus::Success),
            size: Set(Some(stored.size as i64)),
            sha256: Set(Some(stored.sha256.clone())),
            manifest: Set(serde_json::to_value(&stored.manifest).ok()),
            lease_owner: Set(None),
            lease_expires_at: Set(None),
            finished_at: Set(Some(now)),
            ..Default::default()
        },
        Err(failure) => system_backup::ActiveModel {
            status: Set(SystemBackupStatus::Failed),
            error_code: Set(Some(failure.code.as_str().to_owned())),
            error_message: Set(Some(failure.message.clone())),
            lease_owner: Set(None),
            lease_expires_at: Set(None),
            finished_at: Set(Some(now)),
            ..Default::default()
        },
    };
    let recorded = lease::fenced_update::<system_backup::Entity>(
        &worker.cairn.db,
        id,
        attempt,
        changes,
    )
    .await
    .unwrap_or_else(|error| {
        tracing::error!(error = format!("{error:#}"), %id, "recording a self-backup failed");
        false
    });
    let written = written.lock().ok().and_then(|mut w| w.take());
    match (&outcome, recorded) {
        (Ok(stored), true) => {
            tracing::info!(%id, path = %stored.path, size = stored.size, "self-backup stored");
            if let Err(error) = prune(worker, now).await {
                tracing::warn!(error = format!("{error:#}"), "pruning self-backups failed");
            }
        }
        (Err(failure), _) => {
            tracing::warn!(%id, code = failure.code.as_str(), message = %failure.message, "self-backup failed");
            remove(written).await;
        }
        // Reaped meanwhile: what this attempt wrote is nobody's.
        (Ok(_), false) => remove(written).await,
    }
}

/// Deletes an archive and its sidecars, when something was written.
async fn remove(written: Option<(Arc<dyn Storage>, String)>) {
    let Some((storage, path)) = written else {
        return;
    };
    for key in cairn_core::history::objects_of(&path) {
        if let Ok(key) = ObjectKey::parse(&key) {
            if let Err(error) = storage.delete(&key).await {
                tracing::warn!(%error, "removing a failed self-backup's object failed");
            }
        }
    }
}

async fn perform(
    worker: &Worker,
    model: &system_backup::Model,
    written: Written,
) -> Result<Stored, Failure> {
    let cairn = &worker.cairn;
    let target = lease::target_or_missing(
        cairn,
        model.target_id,
        "the self-backup's target was deleted",
    )
    .await?;
    if let Some((code, message)) = storage::refusal(cairn, &target) {
        return Err(Failure::new(code, message));
    }
    let storage = storage::open(cairn, &target, Purpose::Transfer).map_err(internal)?;
    let recipients = system::key::recipients(&cairn.db, &cairn.master_key)
        .await
        .map_err(internal)?;
    let tmp = cairn.config.data_dir.join("tmp");
    cairn_core::db::create_private_dir(&tmp).map_err(internal)?;
    let staging = tempfile::Builder::new()
        .prefix("system-backup-")
        .tempdir_in(&tmp)
        .map_err(internal)?;
    let migrations = system::applied_migrations(&cairn.db)
        .await
        .map_err(internal)?;
    let (snapshot, database_bytes) = system::snapshot::take(cairn, staging.path())
        .await
        .map_err(|e| Failure::new(FailureCode::SnapshotFailed, format!("{e:#}")))?;
    let taken_at = Utc::now();
    let mut manifest = SystemManifest {
        kind: system::MANIFEST_KIND.into(),
        format_version: system::SYSTEM_FORMAT_VERSION,
        cairn_version: env!("CARGO_PKG_VERSION").into(),
        backup_id: model.id,
        engine: system::engine(cairn),
        database_file: snapshot
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        database_bytes,
        migration_count: migrations.len(),
        migrations,
        created_at: taken_at,
        recipient: recipients.names.join(" "),
        stored_bytes: None,
        sha256: None,
    };
    let inner = serde_json::to_vec_pretty(&manifest).map_err(internal)?;
    std::fs::write(staging.path().join(system::MANIFEST_FILE), inner).map_err(internal)?;
    let path = system::archive_path(taken_at);
    // The path is recorded before the upload, so a reaper knows what a
    // lost attempt may have left.
    let recorded = lease::fenced_update::<system_backup::Entity>(
        &cairn.db,
        model.id,
        model.attempt,
        system_backup::ActiveModel {
            storage_path: Set(Some(path.clone())),
            ..Default::default()
        },
    )
    .await
    .map_err(internal)?;
    if !recorded {
        return Err(Failure::new(
            FailureCode::LeaseLost,
            "the worker lost its lease on this self-backup",
        ));
    }
    if let Ok(mut slot) = written.lock() {
        *slot = Some((storage.clone(), path.clone()));
    }
    let (stream, summary) = tar_stream(
        staging.path().to_path_buf(),
        TarOptions {
            compression: Compression::Zstd {
                level: 3,
                threads: 0,
            },
            excludes: Vec::new(),
            encryption: Some(recipients),
            substitutes: Vec::new(),
        },
    );
    let key = ObjectKey::parse(&path).map_err(internal)?;
    let put = storage.put(&key, stream).await;
    let summary = summary
        .await
        .map_err(|_| internal("the archiver stopped"))?
        .map_err(|e| Failure::new(FailureCode::SnapshotFailed, e.message))?;
    put.map_err(|e| storage_failure("uploading the self-backup", &e))?;
    manifest.stored_bytes = Some(summary.stored_bytes);
    manifest.sha256 = Some(summary.sha256.clone());
    let file_name = path.rsplit('/').next().unwrap_or(&path).to_owned();
    for sidecar in Sidecar::ALL {
        let body = match sidecar {
            Sidecar::Sha256 => sha256_line(&summary.sha256, &file_name).into_bytes(),
            Sidecar::Manifest => serde_json::to_vec_pretty(&manifest).map_err(internal)?,
        };
        let key = ObjectKey::parse(&sidecar.of(&path)).map_err(internal)?;
        storage
            .put(&key, storage::single_chunk(body.into()))
            .await
            .map_err(|e| storage_failure("uploading a sidecar", &e))?;
    }
    Ok(Stored {
        path,
        size: summary.stored_bytes,
        sha256: summary.sha256,
        manifest,
    })
}

/// Deletes the self-backups retention no longer keeps: archive and
/// sidecars first, then the record (`pruned`).
async fn prune(worker: &Worker, now: DateTime<Utc>) -> anyhow::Result<usize> {
    let cairn = &worker.cairn;
    let mut pruned = 0;
    for model in system::prunable(cairn).await? {
        if let (Some(target_id), Some(path)) = (model.target_id, model.storage_path.as_deref()) {
            let Some(target) = backup_target::Entity::find_by_id(target_id)
                .one(&cairn.db)
                .await?
            else {
                continue;
            };
            let storage = storage::open(cairn, &target, Purpose::Transfer)?;
            for key in cairn_core::history::objects_of(path) {
                storage.delete(&ObjectKey::parse(&key)?).await?;
            }
        }
        system_backup::Entity::update_many()
            .set(system_backup::ActiveModel {
                status: Set(SystemBackupStatus::Pruned),
                finished_at: Set(Some(model.finished_at.unwrap_or(now))),
                ..Default::default()
            })
            .filter(system_backup::Column::Id.eq(model.id))
            .filter(system_backup::Column::Status.eq(SystemBackupStatus::Success))
            .exec(&cairn.db)
            .await?;
        pruned += 1;
    }
    Ok(pruned)
}

/// Fails the self-backups whose lease expired before `now`
/// (`worker_lost`) and removes what their attempt left on the target.
pub(crate) async fn reap(cairn: &cairn_core::Cairn, now: DateTime<Utc>) -> anyhow::Result<usize> {
    let expired = system_backup::Entity::find()
        .filter(system_backup::Column::Status.eq(SystemBackupStatus::Running))
        .filter(system_backup::Column::LeaseExpiresAt.lt(now))
        .all(&cairn.db)
        .await?;
    let mut reaped = 0;
    for model in expired {
        let updated = system_backup::Entity::update_many()
            .set(system_backup::ActiveModel {
                status: Set(SystemBackupStatus::Failed),
                error_code: Set(Some(FailureCode::WorkerLost.as_str().to_owned())),
                error_message: Set(Some(format!(
                    "the worker {} stopped renewing its lease; it is presumed dead",
                    model.lease_owner.as_deref().unwrap_or("unknown")
                ))),
                lease_owner: Set(None),
                lease_expires_at: Set(None),
                finished_at: Set(Some(now)),
                ..Default::default()
            })
            .filter(system_backup::Column::Id.eq(model.id))
            .filter(system_backup::Column::Attempt.eq(model.attempt))
            .filter(system_backup::Column::Status.eq(SystemBackupStatus::Running))
            .exec(&cairn.db)
            .await?;
        if updated.rows_affected != 1 {
            continue;
        }
        reaped += 1;
        if let (Some(target_id), Some(path)) = (model.target_id, model.storage_path) {
            if let Some(target) = backup_target::Entity::find_by_id(target_id)
                .one(&cairn.db)
                .await?
            {
                if let Ok(storage) = storage::open(cairn, &target, Purpose::Transfer) {
                    if let Ok(key) = ObjectKey::parse(&path) {
                        let _ = storage.remove_incomplete(&key).await;
                    }
                    remove(Some((storage, path))).await;
                }
            }
        }
    }
    Ok(reaped)
}
