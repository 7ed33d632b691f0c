//! Running one claimed restore: download the archive (streamed), verify its
//! SHA-256 against the backup's record before the destination changes,
//! take a safety backup of the destination, then write it; record the
//! outcome.
//!
//! # Files
//!
//! The archive is extracted into a staging directory beside the volume's
//! `_data` (`.cairn-restore-{restoreId}`, on the same file system), with
//! the rules of `cairn_core::format::extract`, while its bytes are hashed. Only
//! when the whole archive extracted and its hash matches — and the safety
//! backup succeeded — are the volume's old entries moved aside and the
//! staged ones moved in (renames), after which the old ones are deleted.
//! A refused entry, a bomb, a mismatch or a failed safety backup leaves
//! `_data` as it was. `_data` itself (its inode, owner and mode) stays, so
//! a bind mount of it keeps working.
//!
//! # Databases
//!
//! A dump is spooled to an unnamed temporary file while it is hashed (the
//! database changes as pg_restore reads, so the check must come first),
//! then fed to `pg_restore --clean --if-exists --no-owner
//! --single-transaction`: the database ends up restored, or unchanged.

use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ActiveValue, ColumnTrait, EntityTrait, QueryFilter, Set, TransactionTrait,
};
use secrecy::SecretString;
use serde_json::{json, Value};
use tokio::sync::watch;
use uuid::Uuid;

use cairn_core::apps::ConnectionSettings;
use cairn_core::directories;
use cairn_core::failure::FailureCode;
use cairn_core::format::extract::{self, ExtractError};
use cairn_core::format::manifest::Manifest;
use cairn_core::format::names::ArchiveName;
use cairn_core::format::pg_restore::{pg_restore_with_output, PgRestore};
use cairn_core::format::read::{self, Checked, ReadError};
use cairn_core::history::LogLine;
use cairn_core::notifications::{self, Subject};
use cairn_core::restores::{archive_for, blocking_reader, kinds_of, restorable, StoredArchive};
use cairn_core::storage::Cancellation;
use cairn_entity::enums::{ArchiveKind, RestoreStatus};
use cairn_entity::{app, backup, backup_run, restore, volume};

use crate::failure::{download_failure, internal, Failure};
use crate::lease::{self, line, max_duration};
use crate::volumes::volume_directories;
use crate::Worker;

mod database;
mod files;
mod mysql;
mod recovery;
mod safety;
mod swap;

pub(crate) use recovery::{reap, record_settled, recover_swaps};

/// What the record says about restarting.
const NOT_RESTARTED: &str =
    "the app was not restarted: restart it so that it picks up the restored data";

type Attempt = lease::Attempt<restore::Model>;

/// Runs a claimed restore to its outcome.
pub(crate) async fn run_restore(
    worker: &Worker,
    model: restore::Model,
    stop: watch::Receiver<bool>,
) {
    let id = model.id;
    let attempt_no = model.attempt;
    let log = model.log.clone();
    let mut attempt = Attempt::new(model, "restore", id, &log);
    attempt.note(
        "info",
        format!(
            "claimed by worker {} (attempt {attempt_no})",
            worker.options.owner
        ),
    );
    // Stopping the worker cancels the blocking steps (download, extraction,
    // pg_restore) through `cancel`, but never the final swap of a volume's
    // entries: the restore ends as a whole or not at all.
    let cancel = Cancellation::default();
    // The job of the restored backup bounds how long the restore may run;
    // past it the blocking steps are cancelled like a stop (never the swap
    // itself, which ends whole).
    let source_job = backup::Entity::find_by_id(attempt.model.backup_id)
        .one(&worker.cairn.db)
        .await
        .ok()
        .flatten()
        .and_then(|b| b.job_id);
    let limit = max_duration(worker, source_job).await;
    let work = perform(worker, &mut attempt, cancel.clone(), stop.clone());
    let outcome = lease::cancellable::<restore::Entity, _>(
        worker,
        (id, attempt_no),
        "restore",
        limit,
        &cancel,
        stop,
        work,
    )
    .await;
    let now = Utc::now();
    let failed = outcome.is_err();
    let changes = match outcome {
        Ok(summary) => {
            attempt.note("info", "restore finished");
            restore::ActiveModel {
                status: ActiveValue::Set(RestoreStatus::Success),
                summary: ActiveValue::Set(Some(summary)),
                log: ActiveValue::Set(attempt.log_value()),
                finished_at: ActiveValue::Set(Some(now)),
                lease_owner: ActiveValue::Set(None),
                lease_expires_at: ActiveValue::Set(None),
                ..Default::default()
            }
        }
        Err(failure) => {
            tracing::warn!(restore_id = %id, code = %failure.code, "restore failed: {}", failure.message);
            attempt.note("error", format!("{}: {}", failure.code, failure.message));
            restore::ActiveModel {
                status: ActiveValue::Set(RestoreStatus::Failed),
                error_code: ActiveValue::Set(Some(failure.code.as_str().to_owned())),
                error_message: ActiveValue::Set(Some(failure.message)),
                log: ActiveValue::Set(attempt.log_value()),
                finished_at: ActiveValue::Set(Some(now)),
                lease_owner: ActiveValue::Set(None),
                lease_expires_at: ActiveValue::Set(None),
                ..Default::default()
            }
        }
    };
    // A failure and its notifications are recorded together.
    let recorded = async {
        let txn = worker.cairn.db.begin().await?;
        let updated =
            lease::fenced_update::<restore::Entity>(&txn, id, attempt_no, changes).await?;
        if updated && failed {
            notifications::enqueue_guarded(&txn, Subject::Restore(id), now).await;
        }
        txn.commit().await?;
        anyhow::Ok(updated)
    }
    .await;
    match recorded {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(restore_id = %id, attempt = attempt_no, "the outcome was not recorded: this attempt no longer holds the restore");
        }
        Err(error) => {
            tracing::error!(restore_id = %id, error = format!("{error:#}"), "recording the outcome failed; the lease will expire and the restore will be failed as worker_lost");
        }
    }
}

/// A backup to read back: its stored archive (of a successful backup, in a
/// format this Cairn reads), the checksum recorded for it, and the
/// organization's age identity when the archive is encrypted.
pub(crate) struct Readable {
    pub(crate) archive: StoredArchive,
    pub(crate) expected: String,
    pub(crate) identity: Option<age::x25519::Identity>,
    /// Why a copy is read instead of the primary, when it is.
    pub(crate) fallback: Option<String>,
}

/// Opens backup `backup_id` for reading back; a backup that is gone, no
/// longer successful, of a newer format, or without a checksum is
/// `backup_unavailable`.
pub(crate) async fn readable(
    cairn: &cairn_core::Cairn,
    backup_id: Uuid,
    source_target: Option<Uuid>,
) -> Result<Readable, Failure> {
    let unavailable = |message: String| Failure::new(FailureCode::BackupUnavailable, message);
    let model = backup::Entity::find_by_id(backup_id)
        .one(&cairn.db)
        .await
        .map_err(internal)?
        .ok_or_else(|| unavailable("the backup was deleted".into()))?;
    let (archive, fallback) = async {
        let (archive, fallback) = archive_for(cairn, model, source_target).await?;
        restorable(&archive.backup)?;
        Ok((archive, fallback))
    }
    .await
    .map_err(|error| match error {
        cairn_core::Error::Conflict { message, .. } => unavailable(message),
        cairn_core::Error::Validation(errors) => unavailable(
            errors
                .into_iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; "),
        ),
        other => internal(other),
    })?;
    let expected = archive.backup.sha256.clone().ok_or_else(|| {
        unavailable("the backup has no recorded checksum to verify against".into())
    })?;
    let identity = if archive.name.encrypted {
        Some(
            cairn_core::format::age::identity(
                &cairn.db,
                &cairn.master_key,
                archive.backup.organization_id,
            )
            .await
            .map_err(internal)?,
        )
    } else {
        None
    };
    Ok(Readable {
        archive,
        expected,
        identity,
        fallback,
    })
}

/// The destination as the worker finds it.
struct Destination {
    app: app::Model,
    volume: volume::Model,
    /// Where a file volume's data may be (empty for a database).
    directories: Vec<cairn_core::directories::Directory>,
}

async fn destination(worker: &Worker, model: &restore::Model) -> Result<Destination, Failure> {
    let db = &worker.cairn.db;
    let missing = || {
        Failure::new(
            FailureCode::DestinationMissing,
            format!(
                "the destination {}/{} no longer exists",
                model.app_name, model.volume_name
            ),
        )
    };
    let app = match model.app_id {
        Some(app_id) => app::Entity::find_by_id(app_id)
            .one(db)
            .await
            .map_err(internal)?,
        None => None,
    }
    .ok_or_else(missing)?;
    let deleted = cairn_entity::organization::Entity::find_by_id(model.organization_id)
        .one(db)
        .await
        .map_err(internal)?
        .is_none_or(|org| org.deleted_at.is_some());
    if deleted {
        return Err(Failure::new(
            FailureCode::OrganizationDeleted,
            "the organization was deleted before the restore ran",
        ));
    }
    let volume = volume::Entity::find()
        .filter(volume::Column::AppId.eq(app.id))
        .filter(volume::Column::Name.eq(&model.volume_name))
        .one(db)
        .await
        .map_err(internal)?
        .ok_or_else(missing)?;
    let directories = volume_directories(db, &volume).await?;
    Ok(Destination {
        app,
        volume,
        directories,
    })
}

async fn perform(
    worker: &Worker,
    attempt: &mut Attempt,
    cancel: Cancellation,
    stop: watch::Receiver<bool>,
) -> Result<Value, Failure> {
    let cairn = &worker.cairn;
    let model = attempt.model.clone();
    let Readable {
        archive,
        expected,
        identity,
        fallback,
    } = readable(cairn, model.backup_id, model.source_target_id).await?;
    if let Some(fallback) = fallback {
        attempt.note("warn", fallback);
    }
    let destination = destination(worker, &model).await?;
    let (kind, volume_kind) = kinds_of(archive.name);
    if !cairn_core::restores::restores_into(destination.volume.kind, volume_kind) {
        return Err(Failure::new(
            FailureCode::DestinationMismatch,
            format!(
                "{}/{} is a {} volume; a {kind} archive restores into a {volume_kind} volume",
                destination.app.name, destination.volume.name, destination.volume.kind
            ),
        ));
    }
    attempt.note(
        "info",
        format!(
            "{} {} ({} bytes, sha256 {expected}) from target '{}' into {}/{}",
            if model.dry_run {
                "dry run: reading"
            } else {
                "restoring"
            },
            archive.key,
            archive.backup.archive_size.unwrap_or(0),
            archive.target.name,
            destination.app.name,
            destination.volume.name
        ),
    );
    let (_, stream) = archive
        .storage
        .get(&archive.key)
        .await
        .map_err(|e| download_failure("downloading the archive", &e))?;
    let reader = blocking_reader(stream);
    let input = Input {
        reader: Box::new(reader),
        name: archive.name,
        identity,
        expected,
        cancel,
    };
    // Copies to read instead, should this archive turn out unreadable or
    // not the one recorded (none when the request named the target).
    let alternates = match model.source_target_id {
        Some(_) => Vec::new(),
        None => {
            cairn_core::restores::copy_archives(cairn, &archive.backup, Some(archive.target.id))
                .await
                .map_err(internal)?
        }
    };
    let restore = Restore {
        worker,
        source: &archive.backup,
        destination: &destination,
        stop,
        reading: archive.target.name.clone(),
        alternates: &alternates,
    };
    let mut summary = match kind {
        ArchiveKind::PgDump => restore.database(attempt, input).await?,
        ArchiveKind::MysqlDump => restore.mysql(attempt, input).await?,
        ArchiveKind::Tar => {
            let cap = archive
                .backup
                .manifest
                .as_ref()
                .and_then(|m| Manifest::from_value(m).ok())
                .map(|m| m.expansion_cap());
            restore.files(attempt, input, cap).await?
        }
    };
    if let Some(object) = summary.as_object_mut() {
        object.insert("kind".into(), json!(kind));
        object.insert("dryRun".into(), json!(model.dry_run));
        if !model.dry_run {
            object.insert("appRestarted".into(), json!(false));
            object.insert("note".into(), json!(NOT_RESTARTED));
        }
    }
    if !model.dry_run {
        attempt.note("warn", NOT_RESTARTED);
    }
    Ok(summary)
}

/// The archive as it is read.
struct Input {
    reader: Box<dyn Read + Send>,
    name: ArchiveName,
    identity: Option<age::x25519::Identity>,
    expected: String,
    cancel: Cancellation,
}

/// How reading the archive ended: the step's own outcome, and the digest of
/// everything downloaded.
pub(crate) fn verdict<T>(
    outcome: Result<T, Failure>,
    digest: std::io::Result<(String, u64)>,
    expected: &str,
    cancel: &Cancellation,
) -> Result<(T, u64), Failure> {
    if cancel.is_cancelled() {
        return Err(Failure::new(
            FailureCode::Interrupted,
            "the worker was stopped while the archive was read; nothing was changed",
        ));
    }
    // A mismatch explains any other failure (a flipped byte also breaks
    // decompression), so it is reported first.
    let (actual, size) = digest.map_err(|e| {
        Failure::new(
            FailureCode::DownloadFailed,
            format!("reading the archive from the target: {e}"),
        )
    })?;
    if actual != expected {
        return Err(Failure::new(
            FailureCode::ChecksumMismatch,
            format!(
                "the archive read from the target ({size} bytes) has SHA-256 {actual}, but the backup recorded {expected}: \
                 it was changed or damaged in storage; nothing was restored"
            ),
        ));
    }
    outcome.map(|value| (value, size))
}

pub(crate) fn read_failure(error: ReadError) -> Failure {
    match error {
        ReadError::Decrypt(_) | ReadError::IdentityNeeded => {
            Failure::new(FailureCode::DecryptionFailed, error.to_string())
        }
        _ => Failure::new(FailureCode::ArchiveDamaged, error.to_string()),
    }
}

pub(crate) fn extract_failure(error: ExtractError) -> Failure {
    match error {
        ExtractError::Refused { .. } => {
            Failure::new(FailureCode::ArchiveRefused, error.to_string())
        }
        ExtractError::TooLarge(_) => Failure::new(FailureCode::ArchiveTooLarge, error.to_string()),
        ExtractError::Io(_) => Failure::new(FailureCode::RestoreFailed, error.to_string()),
    }
}

/// One restore's parts.
struct Restore<'a> {
    worker: &'a Worker,
    source: &'a backup::Model,
    destination: &'a Destination,
    stop: watch::Receiver<bool>,
    /// The target the archive is read from first.
    reading: String,
    /// Successful copies on other targets, read in turn when a read fails
    /// in a way a copy may not ([`copy_may_help`]).
    alternates: &'a [StoredArchive],
}

/// Whether a read that failed with `code` may succeed from a copy: the
/// archive was unreachable, gone, damaged or not the one recorded.
fn copy_may_help(code: FailureCode) -> bool {
    matches!(
        code,
        FailureCode::ChecksumMismatch
            | FailureCode::ArchiveMissing
            | FailureCode::ArchiveDamaged
            | FailureCode::DecryptionFailed
            | FailureCode::DownloadFailed
            | FailureCode::TargetUnreachable
    )
}

impl Restore<'_> {
    /// Reads the archive with `read`, from the first source and then —
    /// while a read fails in a way a copy may not — from each successful
    /// copy in turn, saying so in the log; `reset` runs before each new
    /// attempt (a staging directory emptied). Returns what the first
    /// read that succeeded returned, or the last failure.
    async fn read_with_fallback<T, R, Fut>(
        &self,
        attempt: &mut Attempt,
        first: Input,
        mut reset: impl FnMut() -> Result<(), Failure>,
        mut read: R,
    ) -> Result<T, Failure>
    where
        R: FnMut(Input) -> Fut,
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        let (name, identity, expected, cancel) = (
            first.name,
            first.identity.clone(),
            first.expected.clone(),
            first.cancel.clone(),
        );
        let mut reading = self.reading.clone();
        let mut outcome = read(first).await;
        for copy in self.alternates {
            let failure = match &outcome {
                Err(failure) if copy_may_help(failure.code) && !cancel.is_cancelled() => failure,
                _ => break,
            };
            attempt.note(
                "warn",
                format!(
                    "reading the archive from target '{reading}' failed ({}: {}); reading the copy on target '{}'",
                    failure.code, failure.message, copy.target.name
                ),
            );
            reading = copy.target.name.clone();
            reset()?;
            let input = match copy.storage.get(&copy.key).await {
                Ok((_, stream)) => Input {
                    reader: Box::new(blocking_reader(stream)),
                    name,
                    identity: identity.clone(),
                    expected: expected.clone(),
                    cancel: cancel.clone(),
                },
                Err(error) => {
                    outcome = Err(download_failure("downloading the copy", &error));
                    continue;
                }
            };
            outcome = read(input).await;
        }
        outcome
    }
}
