//! Running one claimed backup: resolve what to read and where to write,
//! stream it, write the sidecars, record the outcome.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::FutureExt;
use sea_orm::{ActiveValue, ColumnTrait, EntityTrait, QueryFilter};
use secrecy::SecretString;
use serde_json::{json, Value};
use tokio::sync::watch;

use cairn_core::apps::{exclude_patterns_of, PostgresSettings, Slot};
use cairn_core::archive::{self, ArchiveError, Compression, TarOptions};
use cairn_core::directories::{self, Directory};
use cairn_core::dump::{self, DumpOptions};
use cairn_core::encryption::{self, Recipients};
use cairn_core::failure::FailureCode;
use cairn_core::history::BackupStatus;
use cairn_core::jobs::{extra_recipients_of, CompressionSetting, EncryptionSetting};
use cairn_core::runs::Trigger;
use cairn_core::storage::{self, ObjectKey, Purpose, Storage, StorageError};
use cairn_entity::{app, backup, backup_job, backup_target, organization, volume};

use crate::lease::{self, line};
use crate::Worker;

use cairn_core::stored::ARCHIVE_FORMAT_VERSION;

/// Manifests list at most this many excluded paths.
const MAX_EXCLUDED_LISTED: usize = 10_000;

/// Why a backup failed: a stable code and a message without secrets.
#[derive(Debug)]
pub(crate) struct Failure {
    pub code: FailureCode,
    pub message: String,
}

impl Failure {
    pub(crate) fn new(code: FailureCode, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl From<ArchiveError> for Failure {
    fn from(error: ArchiveError) -> Failure {
        Failure::new(error.code, error.message)
    }
}

pub(crate) fn internal(error: impl std::fmt::Display) -> Failure {
    Failure::new(FailureCode::Internal, format!("{error:#}"))
}

/// The failure of an upload that failed with a storage error.
fn storage_failure(step: &str, error: &StorageError) -> Failure {
    target_failure(step, error, FailureCode::UploadFailed)
}

/// The failure of a download that failed with a storage error.
pub(crate) fn download_failure(step: &str, error: &StorageError) -> Failure {
    match error {
        StorageError::NotFound(_) => {
            Failure::new(FailureCode::ArchiveMissing, format!("{step}: {error}"))
        }
        _ => target_failure(step, error, FailureCode::DownloadFailed),
    }
}

/// The failure code of a storage error; `fallback` for errors that are not
/// the target's access or reachability.
fn target_failure(step: &str, error: &StorageError, fallback: FailureCode) -> Failure {
    let code = match error {
        StorageError::Unreachable(_) => FailureCode::TargetUnreachable,
        StorageError::AuthenticationFailed(_) | StorageError::AccessDenied(_) => {
            FailureCode::TargetAccessDenied
        }
        StorageError::BucketMissing(_) => FailureCode::TargetBucketMissing,
        StorageError::HostKeyMismatch { .. } => FailureCode::TargetHostKeyMismatch,
        StorageError::AddressRefused(_) => FailureCode::TargetAddressRefused,
        _ => fallback,
    };
    Failure::new(code, format!("{step}: {error}"))
}

/// A successful backup, ready to record.
struct Stored {
    size: u64,
    sha256: String,
    manifest: Value,
}

type Attempt = lease::Attempt<backup::Model>;

/// Runs a claimed backup to its outcome.
pub(crate) async fn run_backup(
    worker: &Worker,
    model: backup::Model,
    mut stop: watch::Receiver<bool>,
) {
    let metrics = cairn_core::metrics::backup_metrics();
    metrics.running.inc();
    let started = Instant::now();
    let id = model.id;
    let attempt_no = model.attempt;
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
    // Nothing runs forever: past the job's maxDurationSeconds the work is
    // dropped, which kills its children and aborts its upload.
    let limit = max_duration(worker, attempt.model.job_id).await;
    let outcome = {
        let work = perform(worker, &mut attempt, &mut written).fuse();
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
    };
    let now = Utc::now();
    let kind = attempt
        .model
        .kind
        .clone()
        .unwrap_or_else(|| "generic".into());
    let recorded = match outcome {
        Ok(stored) => {
            attempt.note(
                "info",
                format!("stored {} bytes, sha256 {}", stored.size, stored.sha256),
            );
            // A sharp shrink (an exclude of everything, a volume emptied by
            // mistake or malice) still succeeds, but must not push the real
            // backups out of retention.
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
            let changes = backup::ActiveModel {
                suspicious: ActiveValue::Set(suspicious.is_some()),
                suspicious_reason: ActiveValue::Set(suspicious),
                status: ActiveValue::Set(BackupStatus::Success.as_str().to_owned()),
                archive_size: ActiveValue::Set(Some(stored.size as i64)),
                sha256: ActiveValue::Set(Some(stored.sha256.clone())),
                manifest: ActiveValue::Set(Some(stored.manifest)),
                log: ActiveValue::Set(attempt.log_value()),
                finished_at: ActiveValue::Set(Some(now)),
                lease_owner: ActiveValue::Set(None),
                lease_expires_at: ActiveValue::Set(None),
                ..Default::default()
            };
            let recorded =
                lease::fenced_update::<backup::Entity>(&worker.cairn.db, id, attempt_no, changes)
                    .await;
            if matches!(recorded, Ok(true)) {
                metrics.bytes_written.inc_by(stored.size);
                if let Some(job_id) = attempt.model.job_id {
                    metrics
                        .last_success
                        .with_label_values(&[&job_id.to_string()])
                        .set(now.timestamp() as f64);
                }
            }
            (recorded, "success")
        }
        Err(failure) => {
            tracing::warn!(backup_id = %id, code = %failure.code, "backup failed: {}", failure.message);
            attempt.note("error", format!("{}: {}", failure.code, failure.message));
            let changes = backup::ActiveModel {
                status: ActiveValue::Set(BackupStatus::Failed.as_str().to_owned()),
                error_code: ActiveValue::Set(Some(failure.code.as_str().to_owned())),
                error_message: ActiveValue::Set(Some(failure.message)),
                log: ActiveValue::Set(attempt.log_value()),
                finished_at: ActiveValue::Set(Some(now)),
                lease_owner: ActiveValue::Set(None),
                lease_expires_at: ActiveValue::Set(None),
                ..Default::default()
            };
            (
                lease::fenced_update::<backup::Entity>(&worker.cairn.db, id, attempt_no, changes)
                    .await,
                "failed",
            )
        }
    };
    metrics.running.dec();
    match recorded {
        (Ok(true), status) => {
            metrics.finished.with_label_values(&[status]).inc();
            metrics
                .duration
                .with_label_values(&[&kind, status])
                .observe(started.elapsed().as_secs_f64());
            if status == "failed" {
                remove_written(id, written).await;
            }
        }
        (Ok(false), _) => {
            // Another worker failed this attempt as lost: its record stands,
            // and what this attempt wrote must not outlive it.
            tracing::warn!(backup_id = %id, attempt = attempt_no, "the outcome was not recorded: this attempt no longer holds the backup");
            remove_written(id, written).await;
        }
        (Err(error), _) => {
            tracing::error!(backup_id = %id, error = format!("{error:#}"), "recording the outcome failed; the lease will expire and the backup will be failed as worker_lost");
        }
    }
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

/// Renews the lease every third of its length; returns when it is lost.
pub(crate) async fn keep_lease<E: lease::Leased>(worker: &Worker, id: uuid::Uuid, attempt: i32) {
    let lease = worker.options.lease;
    let period = lease / 3;
    let mut last_renewed = Instant::now();
    loop {
        tokio::time::sleep(period).await;
        match lease::renew::<E>(&worker.cairn.db, id, attempt, lease, Utc::now()).await {
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

/// The archive's name: `2024-01-15T02-00-00-000Z`.
pub fn timestamp_name(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H-%M-%S-%3fZ").to_string()
}

/// Where a volume's data is, among the directories recorded for it when it
/// was saved: the slot last deployed first, then the other one (blue first
/// when no deploy is on record). Only real directories count (a symlink is
/// not followed).
pub fn resolve_volume(
    root: &Path,
    directories: &[Directory],
    deployed_slot: Option<&str>,
) -> Result<(PathBuf, &'static str), Failure> {
    match directories::locate(root, directories, deployed_slot.and_then(Slot::parse)) {
        Some(found) if found.exists => Ok((found.data, found.slot.as_str())),
        _ => Err(Failure::new(
            FailureCode::VolumeNotFound,
            format!(
                "neither {} exists",
                directories::describe(root, directories)
            ),
        )),
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

/// The directories of a file volume (none for a database, which is
/// dumped, not read from disk); refuses a volume an upgrade found sharing
/// its directory with an earlier volume.
pub(crate) async fn volume_directories(
    db: &sea_orm::DatabaseConnection,
    volume: &volume::Model,
) -> Result<Vec<Directory>, Failure> {
    if volume.kind == "postgres" {
        return Ok(Vec::new());
    }
    if volume.conflict {
        return Err(Failure::new(
            FailureCode::VolumeConflict,
            "the volume's directory was also resolved by an earlier volume when Cairn was upgraded; \
             it is not read or written until a deploy or save gives it a directory of its own \
             (the operator's volume_name_template should include {org})",
        ));
    }
    let found = directories::of_volume(db, volume.id)
        .await
        .map_err(internal)?;
    if found.is_empty() {
        return Err(Failure::new(
            FailureCode::VolumeConflict,
            "the volume has no directory recorded; save the app or deploy it again",
        ));
    }
    Ok(found)
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
    /// `blue` or `green`: the slot of the app's last deploy.
    deployed_slot: Option<String>,
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
        None if model.trigger == Trigger::Safety.as_str() => Settings {
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

/// The source of an archive: its byte stream and, once it ended, what it
/// held (for the manifest).
enum Source {
    Tar {
        directory: PathBuf,
        slot: &'static str,
        compression: Compression,
        excludes: Vec<String>,
    },
    Dump {
        settings: PostgresSettings,
        password: SecretString,
    },
}

async fn perform(
    worker: &Worker,
    attempt: &mut Attempt,
    written: &mut Option<(Arc<dyn Storage>, String)>,
) -> Result<Stored, Failure> {
    let cairn = &worker.cairn;
    let context = context(worker, &attempt.model).await?;
    let started_at = attempt.model.started_at.unwrap_or_else(Utc::now);
    let kind = context.volume.kind.clone();
    let compression_setting = context.settings.compression;
    let encryption_setting = context.settings.encryption;

    let source = if kind == "postgres" {
        let settings: PostgresSettings = context
            .volume
            .postgres_config
            .clone()
            .and_then(|c| serde_json::from_value(c).ok())
            .ok_or_else(|| {
                Failure::new(
                    FailureCode::VolumeMisconfigured,
                    "the postgres volume has no connection settings",
                )
            })?;
        let sealed = context
            .volume
            .postgres_password_ciphertext
            .as_ref()
            .ok_or_else(|| {
                Failure::new(
                    FailureCode::VolumeMisconfigured,
                    "the postgres volume has no password",
                )
            })?;
        let password = cairn
            .master_key
            .open(context.volume.id, sealed)
            .map_err(internal)?;
        let password = String::from_utf8(password).map_err(internal)?;
        Source::Dump {
            settings,
            password: SecretString::from(password),
        }
    } else {
        let (directory, slot) = resolve_volume(
            &cairn.config.volume_root,
            &context.directories,
            context.deployed_slot.as_deref(),
        )?;
        Source::Tar {
            directory,
            slot,
            compression: match compression_setting {
                CompressionSetting::Zstd => Compression::Zstd {
                    level: 3,
                    threads: std::thread::available_parallelism()
                        .map(|n| n.get() as u32)
                        .unwrap_or(1),
                },
                CompressionSetting::Gzip => Compression::Gzip { level: 6 },
                CompressionSetting::None => Compression::None,
            },
            excludes: exclude_patterns_of(&context.volume.exclude_patterns),
        }
    };
    let recipients: Option<Recipients> = match encryption_setting {
        EncryptionSetting::None => None,
        EncryptionSetting::Age => Some(
            encryption::recipients(
                &cairn.db,
                &cairn.master_key,
                context.organization.id,
                &context.settings.extra_recipients,
            )
            .await
            .map_err(internal)?,
        ),
    };
    let extension = match &source {
        Source::Tar { compression, .. } => compression.extension(),
        Source::Dump { .. } => "dump",
    };
    let description = match &source {
        Source::Tar {
            directory, slot, ..
        } => {
            format!("archiving {} ({slot} slot)", directory.display())
        }
        Source::Dump { settings, .. } => format!(
            "dumping database {:?} at {}:{}",
            settings.database, settings.host, settings.port
        ),
    };
    // The path is on the record before anything is written, so whoever
    // fails this attempt later knows what to clean up. Paths are unique per
    // target (an index): two backups of one volume started in the same
    // millisecond (two jobs covering it) take the next free millisecond
    // instead of overwriting each other.
    let mut taken_at = started_at;
    let (file_name, path) = loop {
        let file_name = format!(
            "{}.{extension}{}",
            timestamp_name(taken_at),
            if recipients.is_some() { ".age" } else { "" }
        );
        let path = format!(
            "{}/{}/{}/{file_name}",
            context.organization.slug, attempt.model.app_name, attempt.model.volume_name
        );
        let mut log = attempt.log.clone();
        log.push(line(
            "info",
            format!(
                "{description} to target '{}' as {path}",
                context.target.name
            ),
        ));
        let recorded = lease::fenced_update::<backup::Entity>(
            &cairn.db,
            attempt.model.id,
            attempt.model.attempt,
            backup::ActiveModel {
                storage_path: ActiveValue::Set(Some(path.clone())),
                kind: ActiveValue::Set(Some(kind.clone())),
                log: ActiveValue::Set(serde_json::to_value(&log).unwrap_or_else(|_| json!([]))),
                ..Default::default()
            },
        )
        .await;
        match recorded {
            Ok(true) => {
                attempt.log = log;
                break (file_name, path);
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
    };
    tracing::info!(backup_id = %attempt.model.id, "{}", attempt.log.last().map(|l| l.message.as_str()).unwrap_or_default());
    let key = ObjectKey::parse(&path).map_err(internal)?;

    if let Some((code, message)) = storage::refusal(cairn, &context.target) {
        return Err(Failure::new(code, message));
    }
    let storage = storage::open(cairn, &context.target, Purpose::Transfer).map_err(internal)?;
    *written = Some((storage.clone(), path.clone()));
    let mut manifest = json!({
        "cairnVersion": env!("CARGO_PKG_VERSION"),
        "formatVersion": ARCHIVE_FORMAT_VERSION,
        "backupId": attempt.model.id,
        "organization": context.organization.slug,
        "app": attempt.model.app_name,
        "volume": attempt.model.volume_name,
        "archive": file_name,
        "encryption": match &recipients {
            Some(r) => json!({ "type": "age", "recipients": r.names }),
            None => Value::Null,
        },
        "startedAt": started_at,
    });

    let (size, sha256) = match source {
        Source::Tar {
            directory,
            slot,
            compression,
            excludes,
        } => {
            let (stream, summary) = archive::tar_stream(
                directory.clone(),
                TarOptions {
                    compression,
                    excludes: excludes.clone(),
                    encryption: recipients.clone(),
                },
            );
            let put = storage.put(&key, stream).await;
            let summary = summary.await.map_err(|_| {
                Failure::new(
                    FailureCode::Internal,
                    "the archiver stopped without a summary",
                )
            })?;
            let summary = match (put, summary) {
                (Ok(_), Ok(summary)) => summary,
                (_, Err(error)) if error.code != FailureCode::UploadFailed => {
                    return Err(error.into())
                }
                (Err(error), _) => return Err(storage_failure("uploading the archive", &error)),
                (Ok(_), Err(error)) => return Err(error.into()),
            };
            for note in &summary.notes {
                attempt.note(
                    if note.starts_with("warning") {
                        "warn"
                    } else {
                        "info"
                    },
                    note.clone(),
                );
            }
            attempt.note(
                "info",
                format!(
                    "{} files, {} directories, {} symlinks, {} hard links; {} bytes of content",
                    summary.files,
                    summary.directories,
                    summary.symlinks,
                    summary.hard_links,
                    summary.content_bytes
                ),
            );
            let listed: Vec<&String> = summary.excluded.iter().take(MAX_EXCLUDED_LISTED).collect();
            let object = manifest
                .as_object_mut()
                .ok_or_else(|| internal("manifest"))?;
            object.insert("kind".into(), json!("tar"));
            object.insert("slot".into(), json!(slot));
            object.insert("source".into(), json!(directory.display().to_string()));
            object.insert("compression".into(), json!(compression_setting.as_str()));
            object.insert("uncompressedBytes".into(), json!(summary.tar_bytes));
            object.insert("contentBytes".into(), json!(summary.content_bytes));
            object.insert("fileCount".into(), json!(summary.files));
            object.insert("directoryCount".into(), json!(summary.directories));
            object.insert("symlinkCount".into(), json!(summary.symlinks));
            object.insert("hardLinkCount".into(), json!(summary.hard_links));
            object.insert("excludePatterns".into(), json!(excludes));
            object.insert("excluded".into(), json!(listed));
            object.insert(
                "excludedTruncated".into(),
                json!(summary.excluded.len() > MAX_EXCLUDED_LISTED),
            );
            (summary.stored_bytes, summary.sha256)
        }
        Source::Dump { settings, password } => {
            let program = cairn.config.pg_dump.clone();
            let (pg_dump_line, pg_dump_major) = dump::pg_dump_version(&program).await?;
            let hostaddr = dump::resolve_host(&storage::address_policy(cairn), &settings).await?;
            let (server_version, server_major) =
                dump::server_version(&settings, hostaddr, &password).await?;
            if pg_dump_major < server_major {
                return Err(Failure::new(
                    FailureCode::PgDumpTooOld,
                    format!(
                        "the worker's pg_dump is version {pg_dump_major} but the server runs PostgreSQL {server_version}; \
                         pg_dump must be at least as new as the server: install pg_dump {server_major} or newer on the worker \
                         (or point CAIRN_PG_DUMP at it)"
                    ),
                ));
            }
            attempt.note(
                "info",
                format!("PostgreSQL {server_version}; using {pg_dump_line}"),
            );
            let (stream, summary) = dump::dump_stream(DumpOptions {
                program,
                settings: settings.clone(),
                hostaddr,
                password,
                encryption: recipients.clone(),
            });
            let put = storage.put(&key, stream).await;
            let summary = summary.await.map_err(|_| {
                Failure::new(
                    FailureCode::Internal,
                    "pg_dump's reader stopped without a summary",
                )
            })?;
            let summary = match (put, summary) {
                (Ok(_), Ok(summary)) => summary,
                (_, Err(error)) if error.code != FailureCode::UploadFailed => {
                    return Err(error.into())
                }
                (Err(error), _) => return Err(storage_failure("uploading the dump", &error)),
                (Ok(_), Err(error)) => return Err(error.into()),
            };
            let object = manifest
                .as_object_mut()
                .ok_or_else(|| internal("manifest"))?;
            object.insert("kind".into(), json!("pg_dump"));
            object.insert(
                "source".into(),
                json!({
                    "host": settings.host,
                    "port": settings.port,
                    "database": settings.database,
                    "username": settings.username,
                }),
            );
            object.insert("compression".into(), json!("pg_dump"));
            object.insert("uncompressedBytes".into(), json!(summary.dump_bytes));
            object.insert("postgresVersion".into(), json!(server_version));
            object.insert("pgDumpVersion".into(), json!(pg_dump_line));
            (summary.stored_bytes, summary.sha256)
        }
    };

    let finished_at = Utc::now();
    if let Some(object) = manifest.as_object_mut() {
        object.insert("storedBytes".into(), json!(size));
        object.insert("sha256".into(), json!(sha256));
        object.insert("finishedAt".into(), json!(finished_at));
    }
    let sidecars = [
        (
            format!("{path}.sha256"),
            format!("{sha256}  {file_name}\n").into_bytes(),
        ),
        (
            format!("{path}.manifest.json"),
            serde_json::to_vec_pretty(&manifest).map_err(internal)?,
        ),
    ];
    for (name, body) in sidecars {
        let sidecar = ObjectKey::parse(&name).map_err(internal)?;
        storage
            .put(&sidecar, storage::single_chunk(body.into()))
            .await
            .map_err(|e| storage_failure("uploading a sidecar", &e))?;
    }
    if let Some(fingerprint) = storage.observed_host_key() {
        cairn_core::targets::record_host_key(cairn, &context.target, &fingerprint)
            .await
            .map_err(internal)?;
    }
    Ok(Stored {
        size,
        sha256,
        manifest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_core::directories::VolumeNameTemplate;
    use chrono::TimeZone;

    #[test]
    fn archive_names_use_dashes() {
        let time = Utc.with_ymd_and_hms(2024, 1, 15, 2, 0, 0).unwrap();
        assert_eq!(timestamp_name(time), "2024-01-15T02-00-00-000Z");
    }

    #[test]
    fn volumes_resolve_blue_then_green() {
        let root = tempfile_dir();
        let directories = VolumeNameTemplate::default().resolve("acme", "shop", "data");
        let missing = resolve_volume(&root, &directories, None).unwrap_err();
        assert_eq!(missing.code, FailureCode::VolumeNotFound);
        assert!(missing.message.contains("shop-blue_data/_data"));
        assert!(missing.message.contains("shop-green_data/_data"));
        std::fs::create_dir_all(root.join("shop-green_data/_data")).unwrap();
        assert_eq!(
            resolve_volume(&root, &directories, None).unwrap().1,
            "green"
        );
        std::fs::create_dir_all(root.join("shop-blue_data/_data")).unwrap();
        assert_eq!(resolve_volume(&root, &directories, None).unwrap().1, "blue");
        // The slot last deployed goes first.
        let deployed = resolve_volume(&root, &directories, Some("green")).unwrap();
        assert_eq!(deployed.1, "green");
        assert!(deployed.0.ends_with("shop-green_data/_data"));
        assert_eq!(
            resolve_volume(&root, &directories, Some("blue")).unwrap().1,
            "blue"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cairn-resolve-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
