//! Running one claimed backup, as a numbered outline ([`perform`]): load
//! what it needs, let its engine stream the volume to the target, write the
//! sidecars, record the outcome.
//!
//! An engine is one file here — `files` (a tar archive of a file volume),
//! `postgres` (a `pg_dump` of a PostgreSQL volume) — that takes the opened
//! target and the archive's key, stores the archive, and returns what it
//! stored with the kind-specific part of its manifest. The next engine is
//! one new file and one arm of [`Engine`].

pub(crate) mod copies;
mod files;
mod mysql;
mod postgres;
mod space;

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use sea_orm::{ActiveValue, ColumnTrait, EntityTrait, QueryFilter};
use serde_json::json;
use tokio::sync::watch;

use cairn_core::directories::Directory;
use cairn_core::failure::FailureCode;
use cairn_core::format::age::{self, Recipients};
use cairn_core::format::manifest::{
    Manifest, ManifestContents, ManifestEncryption, ARCHIVE_FORMAT_VERSION,
};
use cairn_core::format::names::{self, sha256_line, Sidecar};
use cairn_core::jobs::{extra_recipients_of, CompressionSetting, EncryptionSetting};
use cairn_core::storage::{self, ObjectKey, Purpose, Storage};
use cairn_core::Cairn;
use cairn_entity::enums::{BackupStatus, Slot, Trigger, VolumeKind};
use cairn_entity::{app, backup, backup_job, backup_target, organization, volume};

use crate::failure::{internal, storage_failure, Failure};
use crate::lease::{self, keep_lease, line, max_duration};
use crate::volumes::volume_directories;
use crate::Worker;

/// A successful backup, ready to record.
struct Stored {
    size: u64,
    sha256: String,
    manifest: Manifest,
}

/// What an engine stored: the object's size and SHA-256, and what it holds.
pub(super) struct Written {
    stored_bytes: u64,
    sha256: String,
    contents: ManifestContents,
}

type Attempt = lease::Attempt<backup::Model>;

/// Runs a claimed backup to its outcome:
/// 1. note the claim on the record's log;
/// 2. run [`perform`] under its limits: the job's `maxDurationSeconds`,
///    the lease (renewed meanwhile) and the worker's stop signal;
/// 3. record the outcome, fenced on this attempt: a success (flagged
///    suspicious when the volume shrank sharply) or the failure;
/// 4. count it, and delete what was written unless it was recorded as a
///    success.
pub(crate) async fn run_backup(worker: &Worker, model: backup::Model, stop: watch::Receiver<bool>) {
    let metrics = cairn_core::metrics::backup_metrics();
    metrics.running.inc();
    let started = Instant::now();
    let (id, attempt_no) = (model.id, model.attempt);
    let log = model.log.clone();
    let mut attempt = Attempt::new(model, "backup", id, &log);
    attempt.note(
        "info",
        format!(
            "claimed by worker {} (attempt {attempt_no})",
            worker.options.owner
        ),
    );
    let mut written: Option<(Arc<dyn Storage>, String)> = None;
    let mut fanout: Option<copies::Fanout> = None;
    let outcome =
        perform_within_limits(worker, &mut attempt, &mut written, &mut fanout, stop).await;
    let kind = attempt.model.kind.unwrap_or_default();
    let mut promoted = None;
    let (recorded, status, summary) = match outcome {
        Ok(stored) => {
            let summary = (stored.size, stored.sha256.clone());
            // The primary failed but a copy holds it all: that copy's
            // target becomes the backup's.
            promoted = fanout
                .as_ref()
                .and_then(|f| copies::promotion(&f.primary, &f.copies, stored.size));
            let target = promoted.as_ref().map(|(sink, _)| sink.target.id);
            (
                record_success(worker, &mut attempt, stored, target).await,
                BackupStatus::Success,
                Some(summary),
            )
        }
        Err(failure) => (
            record_failure(worker, &mut attempt, failure).await,
            BackupStatus::Failed,
            None,
        ),
    };
    // The copies follow the backup as recorded: kept (or to be retried)
    // only beside a success this attempt recorded.
    let kept = summary
        .as_ref()
        .filter(|_| matches!(recorded, Ok(true)))
        .map(|(size, sha256)| (*size, sha256.as_str()));
    if let Some(fanout) = &fanout {
        copies::settle(&worker.cairn, &mut attempt, fanout, kept, promoted).await;
    }
    metrics.running.dec();
    match recorded {
        Ok(true) => {
            metrics.finished.with_label_values(&[status.as_str()]).inc();
            metrics
                .duration
                .with_label_values(&[kind.as_str(), status.as_str()])
                .observe(started.elapsed().as_secs_f64());
            if status == BackupStatus::Failed {
                remove_written(id, written).await;
            }
        }
        Ok(false) => {
            // Another worker failed this attempt as lost: its record stands,
            // and what this attempt wrote must not outlive it.
            tracing::warn!(backup_id = %id, attempt = attempt_no, "the outcome was not recorded: this attempt no longer holds the backup");
            remove_written(id, written).await;
        }
        Err(error) => {
            tracing::error!(backup_id = %id, error = format!("{error:#}"), "recording the outcome failed; the lease will expire and the backup will be failed as worker_lost");
        }
    }
}

/// [`perform`], cancelled (its children killed, its upload aborted) when
/// the job's `maxDurationSeconds` passes, the lease is lost, or the worker
/// stops: nothing runs forever.
async fn perform_within_limits(
    worker: &Worker,
    attempt: &mut Attempt,
    written: &mut Option<(Arc<dyn Storage>, String)>,
    fanout: &mut Option<copies::Fanout>,
    mut stop: watch::Receiver<bool>,
) -> Result<Stored, Failure> {
    let (id, attempt_no) = (attempt.model.id, attempt.model.attempt);
    let limit = max_duration(worker, attempt.model.job_id).await;
    let work = perform(worker, attempt, written, fanout).fuse();
    let lease = keep_lease::<backup::Entity>(worker, id, attempt_no).fuse();
    tokio::pin!(work, lease);
    tokio::select! {
        outcome = &mut work => outcome,
        () = tokio::time::sleep(limit) => Err(Failure::new(
            FailureCode::DeadlineExceeded,
            format!(
                "the backup ran longer than the job's maxDurationSeconds ({} s) and was cancelled; \
                 nothing was stored",
                limit.as_secs()
            ),
        )),
        () = &mut lease => Err(Failure::new(
            FailureCode::LeaseLost,
            "the worker lost its lease on this backup and stopped",
        )),
        _ = stop.wait_for(|stopped| *stopped) => Err(Failure::new(
            FailureCode::Interrupted,
            "the worker was stopped while the backup ran; run the job again",
        )),
    }
}

/// Records a success, fenced on the attempt. A sharp shrink (an exclude of
/// everything, a volume emptied by mistake or malice) still succeeds, but
/// is flagged suspicious so it cannot push the real backups out of
/// retention. Returns whether this attempt still held the backup.
async fn record_success(
    worker: &Worker,
    attempt: &mut Attempt,
    stored: Stored,
    target: Option<uuid::Uuid>,
) -> anyhow::Result<bool> {
    let id = attempt.model.id;
    attempt.note(
        "info",
        format!("stored {} bytes, sha256 {}", stored.size, stored.sha256),
    );
    let suspicious = match cairn_core::history::shrink_reason(
        &worker.cairn.db,
        &attempt.model,
        &stored.manifest,
        worker.cairn.config.suspicious_shrink_fraction,
    )
    .await
    {
        Ok(reason) => reason,
        Err(error) => {
            tracing::warn!(backup_id = %id, error = format!("{error:#}"), "comparing with the previous backup failed");
            None
        }
    };
    if let Some(reason) = &suspicious {
        attempt.note(
            "warn",
            format!(
                "suspicious: {reason}; it does not count toward retention until an admin accepts it"
            ),
        );
    }
    let now = Utc::now();
    let changes = backup::ActiveModel {
        suspicious: ActiveValue::Set(suspicious.is_some()),
        suspicious_reason: ActiveValue::Set(suspicious),
        status: ActiveValue::Set(BackupStatus::Success),
        archive_size: ActiveValue::Set(Some(stored.size as i64)),
        sha256: ActiveValue::Set(Some(stored.sha256.clone())),
        manifest: ActiveValue::Set(Some(stored.manifest.to_value())),
        log: ActiveValue::Set(attempt.log_value()),
        finished_at: ActiveValue::Set(Some(now)),
        lease_owner: ActiveValue::Set(None),
        lease_expires_at: ActiveValue::Set(None),
        target_id: match target {
            Some(target) => ActiveValue::Set(Some(target)),
            None => ActiveValue::NotSet,
        },
        ..Default::default()
    };
    let recorded = lease::fenced_update::<backup::Entity>(
        &worker.cairn.db,
        id,
        attempt.model.attempt,
        changes,
    )
    .await;
    if matches!(recorded, Ok(true)) {
        cairn_core::metrics::backup_metrics()
            .bytes_written
            .inc_by(stored.size);
    }
    recorded
}

/// Records a failure with its code and message, fenced on the attempt.
async fn record_failure(
    worker: &Worker,
    attempt: &mut Attempt,
    failure: Failure,
) -> anyhow::Result<bool> {
    let id = attempt.model.id;
    tracing::warn!(backup_id = %id, code = %failure.code, "backup failed: {}", failure.message);
    attempt.note("error", format!("{}: {}", failure.code, failure.message));
    let changes = backup::ActiveModel {
        status: ActiveValue::Set(BackupStatus::Failed),
        error_code: ActiveValue::Set(Some(failure.code.as_str().to_owned())),
        error_message: ActiveValue::Set(Some(failure.message)),
        log: ActiveValue::Set(attempt.log_value()),
        finished_at: ActiveValue::Set(Some(Utc::now())),
        lease_owner: ActiveValue::Set(None),
        lease_expires_at: ActiveValue::Set(None),
        ..Default::default()
    };
    lease::fenced_update::<backup::Entity>(&worker.cairn.db, id, attempt.model.attempt, changes)
        .await
}

/// Deletes what an attempt that did not succeed wrote.
async fn remove_written(id: uuid::Uuid, written: Option<(Arc<dyn Storage>, String)>) {
    let Some((storage, path)) = written else {
        return;
    };
    for object in lease::objects_of(&path) {
        if let Ok(key) = ObjectKey::parse(&object) {
            if let Err(error) = storage.delete(&key).await {
                tracing::warn!(backup_id = %id, key = %object, "deleting an object of a failed attempt failed: {error}");
            }
        }
    }
}

/// How a backup is written: its job's settings.
struct Settings {
    compression: CompressionSetting,
    encryption: EncryptionSetting,
    extra_recipients: Vec<String>,
}

/// Everything a backup needs from the database.
struct Context {
    organization: organization::Model,
    settings: Settings,
    target: backup_target::Model,
    volume: volume::Model,
    /// The slot of the app's last deploy.
    deployed_slot: Option<Slot>,
    /// Where the volume's data may be (resolved when it was saved).
    directories: Vec<Directory>,
}

async fn context(worker: &Worker, model: &backup::Model) -> Result<Context, Failure> {
    let db = &worker.cairn.db;
    let organization = organization::Entity::find_by_id(model.organization_id)
        .one(db)
        .await
        .map_err(internal)?
        .ok_or_else(|| {
            Failure::new(
                FailureCode::OrganizationDeleted,
                "the organization no longer exists",
            )
        })?;
    if organization.deleted_at.is_some() {
        return Err(Failure::new(
            FailureCode::OrganizationDeleted,
            "the organization was deleted before the backup ran",
        ));
    }
    let job = match model.job_id {
        Some(job_id) => backup_job::Entity::find_by_id(job_id)
            .one(db)
            .await
            .map_err(internal)?,
        None => None,
    };
    let settings = match job {
        Some(job) => Settings {
            compression: CompressionSetting::parse(&job.compression).unwrap_or_default(),
            encryption: EncryptionSetting::parse(&job.encryption).unwrap_or_default(),
            extra_recipients: extra_recipients_of(&job.extra_recipients),
        },
        // A safety backup outlives its job: it is taken with the defaults,
        // encrypted when the organization has a key (it has encrypted
        // before).
        None if model.trigger == Trigger::Safety => Settings {
            compression: CompressionSetting::Zstd,
            encryption: if organization.age_recipient.is_some() {
                EncryptionSetting::Age
            } else {
                EncryptionSetting::None
            },
            extra_recipients: Vec::new(),
        },
        None => {
            return Err(Failure::new(
                FailureCode::JobDeleted,
                "the job was deleted before the backup ran",
            ))
        }
    };
    let target = match model.target_id {
        Some(target_id) => backup_target::Entity::find_by_id(target_id)
            .one(db)
            .await
            .map_err(internal)?,
        None => None,
    }
    .ok_or_else(|| {
        Failure::new(
            FailureCode::TargetMissing,
            "the backup's storage target no longer exists",
        )
    })?;
    let volume = match model.app_id {
        Some(app_id) => volume::Entity::find()
            .filter(volume::Column::AppId.eq(app_id))
            .filter(volume::Column::Name.eq(&model.volume_name))
            .one(db)
            .await
            .map_err(internal)?,
        None => None,
    }
    .ok_or_else(|| {
        Failure::new(
            FailureCode::VolumeRemoved,
            format!(
                "app {} no longer has a volume named {}",
                model.app_name, model.volume_name
            ),
        )
    })?;
    // The app must still exist (its name is on the record); its last
    // deploy's slot is looked at first.
    let mut deployed_slot = None;
    if let Some(app_id) = model.app_id {
        let app = app::Entity::find_by_id(app_id)
            .one(db)
            .await
            .map_err(internal)?
            .ok_or_else(|| {
                Failure::new(
                    FailureCode::AppDeleted,
                    "the app was deleted before the backup ran",
                )
            })?;
        deployed_slot = app.last_deploy_slot;
    }
    let directories = volume_directories(db, &volume).await?;
    Ok(Context {
        organization,
        settings,
        target,
        volume,
        deployed_slot,
        directories,
    })
}

/// The engine that stores a volume: what it reads, prepared from the
/// context before anything is named or written.
enum Engine {
    Files(files::Files),
    Postgres(postgres::Postgres),
    Mysql(mysql::Mysql),
}

impl Engine {
    fn of(cairn: &Cairn, context: &Context) -> Result<Engine, Failure> {
        Ok(match context.volume.kind {
            VolumeKind::Postgres => {
                Engine::Postgres(postgres::Postgres::prepare(cairn, &context.volume)?)
            }
            VolumeKind::Mysql => Engine::Mysql(mysql::Mysql::prepare(
                cairn,
                &context.volume,
                context.settings.compression,
            )?),
            VolumeKind::Generic | VolumeKind::Sqlite => {
                Engine::Files(files::Files::prepare(cairn, context)?)
            }
        })
    }

    /// The archive's extension, before `.age`.
    fn extension(&self) -> &'static str {
        match self {
            Engine::Files(files) => files.extension(),
            Engine::Postgres(_) => "dump",
            Engine::Mysql(mysql) => mysql.extension(),
        }
    }

    /// What the log says the backup reads.
    fn describe(&self) -> String {
        match self {
            Engine::Files(files) => files.describe(),
            Engine::Postgres(postgres) => postgres.describe(),
            Engine::Mysql(mysql) => mysql.describe(),
        }
    }

    async fn store(
        self,
        cairn: &Cairn,
        attempt: &mut Attempt,
        upload: Upload<'_>,
    ) -> Result<Written, Failure> {
        match self {
            Engine::Files(files) => files.store(attempt, upload).await,
            Engine::Postgres(postgres) => postgres.store(cairn, attempt, upload).await,
            Engine::Mysql(mysql) => mysql.store(cairn, attempt, upload).await,
        }
    }
}

/// Where an engine writes: the opened target, the archive's key, and the
/// recipients when the job encrypts.
pub(super) struct Upload<'a> {
    storage: &'a Arc<dyn Storage>,
    key: &'a ObjectKey,
    recipients: Option<&'a Recipients>,
}

/// Runs the backup:
/// 1. load what it needs (organization, job settings, target, volume);
/// 2. prepare its engine (a dump for a PostgreSQL volume, tar otherwise);
/// 3. collect the recipients when the job encrypts;
/// 4. name the archive and record its path before anything is written;
/// 5. open the target, refusing one the settings no longer allow, and the
///    job's copy targets beside it (their rows recorded `running`);
/// 6. let the engine store the archive, on every target at once;
/// 7. write the sidecars (checksum, manifest) beside it;
/// 8. pin the SSH host key the transfer saw.
async fn perform(
    worker: &Worker,
    attempt: &mut Attempt,
    written: &mut Option<(Arc<dyn Storage>, String)>,
    fanout: &mut Option<copies::Fanout>,
) -> Result<Stored, Failure> {
    let cairn = &worker.cairn;
    let started_at = attempt.model.started_at.unwrap_or_else(Utc::now);
    let context = context(worker, &attempt.model).await?;
    let engine = Engine::of(cairn, &context)?;
    let recipients = recipients(cairn, &context).await?;
    let (file_name, path) = record_path(
        cairn,
        attempt,
        &context,
        &engine,
        recipients.is_some(),
        started_at,
    )
    .await?;
    let key = ObjectKey::parse(&path).map_err(internal)?;
    if let Some((code, message)) = storage::refusal(cairn, &context.target) {
        return Err(Failure::new(code, message));
    }
    let primary = storage::open(cairn, &context.target, Purpose::Transfer).map_err(internal)?;
    space::check(cairn, attempt, &context.target, &primary).await?;
    let sinks = copies::prepare(cairn, attempt, &context.target, &path).await?;
    let storage: Arc<dyn Storage> = if sinks.is_empty() {
        primary
    } else {
        let primary_sink = Arc::new(copies::CopySink::primary(
            context.target.clone(),
            primary.clone(),
        ));
        *fanout = Some(copies::Fanout {
            primary: primary_sink.clone(),
            copies: sinks.clone(),
        });
        Arc::new(copies::Replicated {
            primary,
            primary_sink,
            copies: sinks,
        })
    };
    *written = Some((storage.clone(), path.clone()));
    let stored = engine
        .store(
            cairn,
            attempt,
            Upload {
                storage: &storage,
                key: &key,
                recipients: recipients.as_ref(),
            },
        )
        .await?;
    let manifest = Manifest {
        cairn_version: env!("CARGO_PKG_VERSION").into(),
        format_version: ARCHIVE_FORMAT_VERSION,
        backup_id: attempt.model.id,
        organization: context.organization.slug.clone(),
        app: attempt.model.app_name.clone(),
        volume: attempt.model.volume_name.clone(),
        archive: file_name.clone(),
        encryption: recipients.as_ref().map(|r| ManifestEncryption {
            kind: "age".into(),
            recipients: r.names.clone(),
        }),
        started_at,
        finished_at: Utc::now(),
        stored_bytes: stored.stored_bytes,
        sha256: stored.sha256.clone(),
        contents: stored.contents,
    };
    write_sidecars(&storage, &path, &file_name, &manifest).await?;
    if let Some(fingerprint) = storage.observed_host_key() {
        cairn_core::targets::record_host_key(cairn, &context.target, &fingerprint)
            .await
            .map_err(internal)?;
    }
    Ok(Stored {
        size: stored.stored_bytes,
        sha256: stored.sha256,
        manifest,
    })
}

/// The recipients of an encrypting job: the organization's key (made on
/// first use) and the job's extra public keys.
async fn recipients(cairn: &Cairn, context: &Context) -> Result<Option<Recipients>, Failure> {
    match context.settings.encryption {
        EncryptionSetting::None => Ok(None),
        EncryptionSetting::Age => age::recipients(
            &cairn.db,
            &cairn.master_key,
            context.organization.id,
            &context.settings.extra_recipients,
        )
        .await
        .map(Some)
        .map_err(internal),
    }
}

/// Names the archive and puts its path on the record before anything is
/// written, so whoever fails this attempt later knows what to clean up.
/// Paths are unique per target (an index): two backups of one volume
/// started in the same millisecond (two jobs covering it) take the next
/// free millisecond instead of overwriting each other. Returns the file
/// name and the path.
async fn record_path(
    cairn: &Cairn,
    attempt: &mut Attempt,
    context: &Context,
    engine: &Engine,
    encrypted: bool,
    started_at: DateTime<Utc>,
) -> Result<(String, String), Failure> {
    let mut taken_at = started_at;
    loop {
        let file_name = names::archive_file_name(taken_at, engine.extension(), encrypted);
        let path = names::storage_path(
            &context.organization.slug,
            &attempt.model.app_name,
            &attempt.model.volume_name,
            &file_name,
        );
        let mut log = attempt.log.clone();
        log.push(line(
            "info",
            format!(
                "{} to target '{}' as {path}",
                engine.describe(),
                context.target.name
            ),
        ));
        let recorded = lease::fenced_update::<backup::Entity>(
            &cairn.db,
            attempt.model.id,
            attempt.model.attempt,
            backup::ActiveModel {
                storage_path: ActiveValue::Set(Some(path.clone())),
                kind: ActiveValue::Set(Some(context.volume.kind)),
                log: ActiveValue::Set(serde_json::to_value(&log).unwrap_or_else(|_| json!([]))),
                ..Default::default()
            },
        )
        .await;
        match recorded {
            Ok(true) => {
                attempt.log = log;
                tracing::info!(backup_id = %attempt.model.id, "{}", attempt.log.last().map(|l| l.message.as_str()).unwrap_or_default());
                return Ok((file_name, path));
            }
            Ok(false) => {
                return Err(Failure::new(
                    FailureCode::LeaseLost,
                    "this attempt no longer holds the backup",
                ))
            }
            Err(error)
                if error
                    .downcast_ref::<sea_orm::DbErr>()
                    .is_some_and(cairn_core::error::is_unique_violation)
                    && taken_at < started_at + chrono::Duration::milliseconds(100) =>
            {
                taken_at += chrono::Duration::milliseconds(1);
            }
            Err(error) => return Err(internal(error)),
        }
    }
}

/// Writes the sidecars beside the archive: its checksum as `sha256sum`
/// writes it, then its manifest.
async fn write_sidecars(
    storage: &Arc<dyn Storage>,
    path: &str,
    file_name: &str,
    manifest: &Manifest,
) -> Result<(), Failure> {
    for sidecar in Sidecar::ALL {
        let body = match sidecar {
            Sidecar::Sha256 => sha256_line(&manifest.sha256, file_name).into_bytes(),
            Sidecar::Manifest => {
                serde_json::to_vec_pretty(&manifest.to_value()).map_err(internal)?
            }
        };
        let key = ObjectKey::parse(&sidecar.of(path)).map_err(internal)?;
        storage
            .put(&key, storage::single_chunk(body.into()))
            .await
            .map_err(|e| storage_failure("uploading a sidecar", &e))?;
    }
    Ok(())
}
