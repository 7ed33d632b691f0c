//! Running one claimed restore: download the archive (streamed), verify its
//! SHA-256 against the backup's record before the destination changes,
//! take a safety backup of the destination, then write it; record the
//! outcome.
//!
//! # Files
//!
//! The archive is extracted into a staging directory beside the volume's
//! `_data` (`.cairn-restore-{restoreId}`, on the same file system), with
//! the rules of `cairn_core::extract`, while its bytes are hashed. Only
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
use futures::FutureExt;
use sea_orm::{
    ActiveModelTrait, ActiveValue, ColumnTrait, EntityTrait, QueryFilter, Set, TransactionTrait,
};
use secrecy::SecretString;
use serde_json::{json, Value};
use tokio::sync::watch;
use uuid::Uuid;

use cairn_core::apps::{PostgresSettings, Slot};
use cairn_core::directories;
use cairn_core::extract::{self, ExtractError};
use cairn_core::failure::FailureCode;
use cairn_core::history::{BackupStatus, LogLine};
use cairn_core::notifications::{self, Subject};
use cairn_core::restores::{blocking_reader, kinds_of, restorable, stored_archive, RestoreStatus};
use cairn_core::runs::{RunStatus, Trigger};
use cairn_core::storage::Cancellation;
use cairn_core::stored::{self, Checked, PgRestore, ReadError};
use cairn_entity::{app, backup, backup_run, restore, volume};

use crate::execute::{self, download_failure, internal, Failure};
use crate::lease::{self, line};
use crate::swap;
use crate::Worker;

/// Room above the manifest's tar size that extraction allows (the tar
/// reader reads whole 512-byte blocks).
const CAP_SLACK: u64 = 64 * 1024;

/// What the record says about restarting.
const NOT_RESTARTED: &str =
    "the app was not restarted: restart it so that it picks up the restored data";

type Attempt = lease::Attempt<restore::Model>;

/// Runs a claimed restore to its outcome.
pub(crate) async fn run_restore(
    worker: &Worker,
    model: restore::Model,
    mut stop: watch::Receiver<bool>,
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
    let limit = execute::max_duration(worker, source_job).await;
    let mut overdue = false;
    let outcome = {
        let work = perform(worker, &mut attempt, cancel.clone(), stop.clone()).fuse();
        let lease = execute::keep_lease::<restore::Entity>(worker, id, attempt_no).fuse();
        let stopped = stop.wait_for(|stopped| *stopped).fuse();
        let deadline = tokio::time::sleep(limit).fuse();
        tokio::pin!(work, lease, stopped, deadline);
        loop {
            tokio::select! {
                outcome = &mut work => break outcome,
                () = &mut lease => break Err(Failure::new(
                    FailureCode::LeaseLost,
                    "the worker lost its lease on this restore and stopped",
                )),
                _ = &mut stopped => cancel.cancel(),
                () = &mut deadline => {
                    overdue = true;
                    cancel.cancel();
                }
            }
        }
    };
    let outcome = match outcome {
        Err(failure) if overdue => Err(Failure::new(
            FailureCode::DeadlineExceeded,
            format!(
                "the restore ran longer than the job's maxDurationSeconds ({} s) and was cancelled \
                 ({}: {})",
                limit.as_secs(),
                failure.code,
                failure.message
            ),
        )),
        other => other,
    };
    let now = Utc::now();
    let failed = outcome.is_err();
    let changes = match outcome {
        Ok(summary) => {
            attempt.note("info", "restore finished");
            restore::ActiveModel {
                status: ActiveValue::Set(RestoreStatus::Success.as_str().to_owned()),
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
                status: ActiveValue::Set(RestoreStatus::Failed.as_str().to_owned()),
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
    let directories = execute::volume_directories(db, &volume).await?;
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
    let source = backup::Entity::find_by_id(model.backup_id)
        .one(&cairn.db)
        .await
        .map_err(internal)?
        .ok_or_else(|| Failure::new(FailureCode::BackupUnavailable, "the backup was deleted"))?;
    let archive = async {
        let archive = stored_archive(cairn, source).await?;
        restorable(&archive.backup)?;
        Ok(archive)
    }
    .await
    .map_err(|error| match error {
        cairn_core::Error::Conflict { message, .. } => {
            Failure::new(FailureCode::BackupUnavailable, message)
        }
        other => internal(other),
    })?;
    let expected = archive.backup.sha256.clone().ok_or_else(|| {
        Failure::new(
            FailureCode::BackupUnavailable,
            "the backup has no recorded checksum to verify against",
        )
    })?;
    let destination = destination(worker, &model).await?;
    let (kind, volume_kind) = kinds_of(archive.name);
    if destination.volume.kind != volume_kind {
        return Err(Failure::new(
            FailureCode::DestinationMismatch,
            format!(
                "{}/{} is a {} volume; a {kind} archive restores into a {volume_kind} volume",
                destination.app.name, destination.volume.name, destination.volume.kind
            ),
        ));
    }
    let identity = if archive.name.encrypted {
        Some(
            cairn_core::encryption::identity(
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
    let restore = Restore {
        worker,
        source: &archive.backup,
        destination: &destination,
        stop,
    };
    let mut summary = if kind == "pg_dump" {
        restore.database(attempt, input).await?
    } else {
        let cap = archive
            .backup
            .manifest
            .as_ref()
            .and_then(|m| m.get("uncompressedBytes"))
            .and_then(Value::as_u64)
            .map(|bytes| bytes + CAP_SLACK);
        restore.files(attempt, input, cap).await?
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
    name: stored::ArchiveName,
    identity: Option<age::x25519::Identity>,
    expected: String,
    cancel: Cancellation,
}

/// How reading the archive ended: the step's own outcome, and the digest of
/// everything downloaded.
fn verdict<T>(
    outcome: Result<T, Failure>,
    digest: std::io::Result<(String, u64)>,
    expected: &str,
    cancel: &Cancellation,
) -> Result<(T, u64), Failure> {
    if cancel.is_cancelled() {
        return Err(Failure::new(
            FailureCode::Interrupted,
            "the worker was stopped while the restore ran; nothing was changed",
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

fn read_failure(error: ReadError) -> Failure {
    match error {
        ReadError::Decrypt(_) | ReadError::IdentityNeeded => {
            Failure::new(FailureCode::DecryptionFailed, error.to_string())
        }
        _ => Failure::new(FailureCode::ArchiveDamaged, error.to_string()),
    }
}

fn extract_failure(error: ExtractError) -> Failure {
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
}

impl Restore<'_> {
    /// A tar archive into the volume's directory.
    async fn files(
        &self,
        attempt: &mut Attempt,
        input: Input,
        cap: Option<u64>,
    ) -> Result<Value, Failure> {
        let cairn = &self.worker.cairn;
        let dry_run = attempt.model.dry_run;
        let deployed_slot = self
            .destination
            .app
            .last_deploy_slot
            .as_deref()
            .and_then(Slot::parse);
        // A volume that does not exist yet is created in the slot last
        // deployed (blue without a deploy on record).
        let located = directories::locate(
            &cairn.config.volume_root,
            &self.destination.directories,
            deployed_slot,
        )
        .ok_or_else(|| internal("the destination has no directory recorded"))?;
        let (data, slot, exists) = (located.data, located.slot.as_str(), located.exists);
        let holder = data
            .parent()
            .ok_or_else(|| internal("a volume directory has no parent"))?
            .to_path_buf();
        let staging = swap::staging_dir(&data, attempt.model.id).map_err(internal)?;
        if dry_run {
            attempt.note(
                "info",
                format!(
                    "the destination would be {} ({slot} slot{})",
                    data.display(),
                    if exists { "" } else { ", created" }
                ),
            );
        } else {
            attempt.note(
                "info",
                format!(
                    "extracting into {} beside {} ({slot} slot{})",
                    staging.display(),
                    data.display(),
                    if exists {
                        ""
                    } else {
                        "; no directory of the volume exists, so this one is created"
                    }
                ),
            );
            let (prepared_holder, prepared_staging) = (holder.clone(), staging.clone());
            let recovered = tokio::task::spawn_blocking(move || {
                prepare_staging(&prepared_holder, &prepared_staging)
            })
            .await
            .map_err(internal)?
            .map_err(|e| {
                Failure::new(
                    FailureCode::RestoreFailed,
                    format!("preparing {}: {e}", staging.display()),
                )
            })?;
            for settled in recovered {
                attempt.note(
                    "warn",
                    format!(
                        "restore {} had died mid-swap: {}",
                        settled.restore_id,
                        settled.settled.describe(&settled.data)
                    ),
                );
                record_settled(cairn, &settled, Utc::now())
                    .await
                    .map_err(internal)?;
            }
        }

        let Input {
            reader,
            name,
            identity,
            expected,
            cancel,
        } = input;
        let staged = staging.clone();
        let blocking_cancel = cancel.clone();
        let (outcome, digest) = tokio::task::spawn_blocking(move || {
            let mut checked = Checked::new(reader, blocking_cancel);
            let outcome = (|| {
                let plain =
                    stored::open(&mut checked, name, identity.as_ref()).map_err(read_failure)?;
                if dry_run {
                    extract::check(plain, cap).map_err(extract_failure)
                } else {
                    extract::extract(plain, &staged, cap).map_err(extract_failure)
                }
            })();
            (outcome, checked.finish())
        })
        .await
        .map_err(internal)?;
        let verified = verdict(outcome, digest, &expected, &cancel);
        let (extracted, size) = match verified {
            Ok(done) => done,
            Err(failure) => {
                if !dry_run {
                    discard(&staging, &holder, exists);
                }
                return Err(failure);
            }
        };
        attempt.note(
            "info",
            format!(
                "checksum verified ({size} bytes); {} files, {} directories, {} symlinks, {} hard links, {} bytes of content",
                extracted.files,
                extracted.directories,
                extracted.symlinks,
                extracted.hard_links,
                extracted.bytes
            ),
        );
        let mut summary = json!({
            "destination": data.display().to_string(),
            "slot": slot,
            "sha256": expected,
            "storedBytes": size,
            "files": extracted.files,
            "directories": extracted.directories,
            "symlinks": extracted.symlinks,
            "hardLinks": extracted.hard_links,
            "bytes": extracted.bytes,
        });
        if dry_run {
            return Ok(summary);
        }

        if attempt.model.safety_backup && exists {
            if let Err(failure) = self.safety_backup(attempt).await {
                discard(&staging, &holder, exists);
                return Err(failure);
            }
        } else if attempt.model.safety_backup {
            attempt.note(
                "info",
                "no safety backup: the volume did not exist, so nothing is replaced",
            );
        }

        let (swap_data, restore_id) = (data.clone(), attempt.model.id);
        let swapped = tokio::task::spawn_blocking(move || swap::swap(&swap_data, restore_id))
            .await
            .map_err(internal)?;
        match swapped {
            Ok(replaced) => {
                attempt.note(
                    "info",
                    format!(
                        "replaced {replaced} entr{} of {} with the restored ones",
                        if replaced == 1 { "y" } else { "ies" },
                        data.display()
                    ),
                );
                if let Some(object) = summary.as_object_mut() {
                    object.insert("created".into(), json!(!exists));
                    object.insert("replacedEntries".into(), json!(replaced));
                }
                Ok(summary)
            }
            Err(error) => {
                // A journal left behind means the swap is half done: its
                // staging directory is the recovery's to finish with.
                if !swap::unsettled(&data, attempt.model.id) {
                    discard(&staging, &holder, exists);
                }
                Err(Failure::new(
                    FailureCode::RestoreFailed,
                    format!(
                        "moving the restored entries into {}: {error}",
                        data.display()
                    ),
                ))
            }
        }
    }

    /// A dump into the volume's database.
    async fn database(&self, attempt: &mut Attempt, input: Input) -> Result<Value, Failure> {
        let cairn = &self.worker.cairn;
        let volume = &self.destination.volume;
        let dry_run = attempt.model.dry_run;
        let settings: PostgresSettings = volume
            .postgres_config
            .clone()
            .and_then(|c| serde_json::from_value(c).ok())
            .ok_or_else(|| {
                Failure::new(
                    FailureCode::VolumeMisconfigured,
                    "the postgres volume has no connection settings",
                )
            })?;
        let password = match &volume.postgres_password_ciphertext {
            Some(sealed) => {
                let password = cairn.master_key.open(volume.id, sealed).map_err(internal)?;
                Some(SecretString::from(
                    String::from_utf8(password).map_err(internal)?,
                ))
            }
            None => None,
        };
        let Input {
            reader,
            name,
            identity,
            expected,
            cancel,
        } = input;
        // The dump is spooled: the database changes as pg_restore reads it,
        // so the whole archive is verified before pg_restore starts.
        let spool_cancel = cancel.clone();
        let (spooled, digest) = tokio::task::spawn_blocking(move || {
            let mut checked = Checked::new(reader, spool_cancel);
            let spooled = tempfile::tempfile()
                .and_then(|mut file| {
                    std::io::copy(&mut checked, &mut file)?;
                    file.rewind()?;
                    Ok(file)
                })
                .map_err(|e| {
                    Failure::new(
                        FailureCode::RestoreFailed,
                        format!("spooling the dump to a temporary file: {e}"),
                    )
                });
            (spooled, checked.finish())
        })
        .await
        .map_err(internal)?;
        let (file, size) = verdict(spooled, digest, &expected, &cancel)?;
        attempt.note(
            "info",
            format!("checksum verified ({size} bytes, spooled to a temporary file)"),
        );
        let target = format!(
            "database {:?} at {}:{}",
            settings.database, settings.host, settings.port
        );
        let program = cairn.config.pg_restore.clone();
        // Checked once, before the safety backup and pg_restore: the address
        // connected to is the one the policy allowed.
        let hostaddr = if dry_run {
            None
        } else {
            Some(
                cairn_core::dump::resolve_host(
                    &cairn_core::storage::address_policy(cairn),
                    &settings,
                )
                .await
                .map_err(Failure::from)?,
            )
        };
        if !dry_run && attempt.model.safety_backup {
            self.safety_backup(attempt).await?;
        }
        if !dry_run {
            attempt.note(
                "info",
                format!(
                    "running pg_restore --clean --if-exists --no-owner --single-transaction into {target}"
                ),
            );
        }
        let pg_cancel = cancel.clone();
        let restored = tokio::task::spawn_blocking(move || {
            let mut plain = stored::open(file, name, identity.as_ref()).map_err(read_failure)?;
            let action = if dry_run {
                PgRestore::List
            } else {
                PgRestore::Into {
                    settings: &settings,
                    hostaddr,
                    password: password.as_ref(),
                }
            };
            stored::pg_restore_with_output(&mut plain, action, &program, &pg_cancel)
                .map_err(|message| Failure::new(FailureCode::PgRestoreFailed, message))
        })
        .await
        .map_err(internal)?;
        if cancel.is_cancelled() {
            return Err(Failure::new(
                FailureCode::Interrupted,
                "the worker was stopped while pg_restore ran; its transaction was rolled back and the database is unchanged",
            ));
        }
        let (bytes, listing) = restored?;
        let entries = listing
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with(';'))
            .count();
        attempt.note(
            "info",
            if dry_run {
                format!("pg_restore --list read the dump: {entries} entries")
            } else {
                format!("pg_restore restored {bytes} bytes of dump into {target}")
            },
        );
        let mut summary = json!({
            "destination": target,
            "sha256": expected,
            "storedBytes": size,
            "dumpBytes": bytes,
        });
        if dry_run {
            if let Some(object) = summary.as_object_mut() {
                object.insert("tocEntries".into(), json!(entries));
            }
        }
        Ok(summary)
    }

    /// Backs up the destination as it is now: a backup record with trigger
    /// `safety`, to the source backup's target, claimed by this worker and
    /// run here. The restore links it before it runs.
    async fn safety_backup(&self, attempt: &mut Attempt) -> Result<Uuid, Failure> {
        let cairn = &self.worker.cairn;
        let now = Utc::now();
        let lease = chrono::Duration::from_std(self.worker.options.lease)
            .unwrap_or(chrono::Duration::seconds(30));
        // A run of its own (trigger `safety`) in the restored backup's job,
        // when that job still exists.
        let run_id = match self.source.job_id {
            Some(job_id) => {
                let run = backup_run::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    job_id: Set(job_id),
                    trigger: Set(Trigger::Safety.as_str().to_owned()),
                    scheduled_for: Set(now),
                    status: Set(RunStatus::Running.as_str().to_owned()),
                    reason: Set(Some(format!(
                        "safety backup of {}/{} before restore {}",
                        self.destination.app.name, self.destination.volume.name, attempt.model.id
                    ))),
                    created_at: Set(now),
                    finished_at: Set(None),
                    missed_count: Set(None),
                    missed_from: Set(None),
                    missed_to: Set(None),
                    scope_app_id: Set(None),
                }
                .insert(&cairn.db)
                .await;
                match run {
                    Ok(run) => Some(run.id),
                    Err(error) if cairn_core::error::is_unique_violation(&error) => None,
                    Err(error) => return Err(internal(error)),
                }
            }
            None => None,
        };
        let model = backup::ActiveModel {
            id: Set(Uuid::now_v7()),
            organization_id: Set(attempt.model.organization_id),
            run_id: Set(run_id),
            job_id: Set(self.source.job_id),
            app_id: Set(Some(self.destination.app.id)),
            target_id: Set(self.source.target_id),
            app_name: Set(self.destination.app.name.clone()),
            volume_name: Set(self.destination.volume.name.clone()),
            status: Set(BackupStatus::Running.as_str().to_owned()),
            archive_size: Set(None),
            storage_path: Set(None),
            sha256: Set(None),
            log: Set(json!([{
                "at": now,
                "level": "info",
                "message": format!("safety backup before restore {}", attempt.model.id),
            }])),
            error_code: Set(None),
            error_message: Set(None),
            attempt: Set(1),
            lease_owner: Set(Some(self.worker.options.owner.clone())),
            lease_expires_at: Set(Some(now + lease)),
            created_at: Set(now),
            started_at: Set(Some(now)),
            finished_at: Set(None),
            trigger: Set(Trigger::Safety.as_str().to_owned()),
            kind: Set(None),
            manifest: Set(None),
            suspicious: Set(false),
            suspicious_reason: Set(None),
            accepted_at: Set(None),
            read_until: Set(None),
        }
        .insert(&cairn.db)
        .await
        .map_err(internal)?;
        let id = model.id;
        attempt.note("info", format!("taking safety backup {id}"));
        let linked = lease::fenced_update::<restore::Entity>(
            &cairn.db,
            attempt.model.id,
            attempt.model.attempt,
            restore::ActiveModel {
                safety_backup_id: ActiveValue::Set(Some(id)),
                log: ActiveValue::Set(attempt.log_value()),
                ..Default::default()
            },
        )
        .await
        .map_err(internal)?;
        if !linked {
            return Err(Failure::new(
                FailureCode::LeaseLost,
                "this attempt no longer holds the restore",
            ));
        }
        attempt.model.safety_backup_id = Some(id);
        execute::run_backup(self.worker, model, self.stop.clone()).await;
        if let Some(run_id) = run_id {
            crate::prune::close_run(cairn, run_id, Utc::now())
                .await
                .map_err(internal)?;
        }
        let ended = backup::Entity::find_by_id(id)
            .one(&cairn.db)
            .await
            .map_err(internal)?
            .ok_or_else(|| internal("the safety backup's record disappeared"))?;
        if ended.status != BackupStatus::Success.as_str() {
            return Err(Failure::new(
                FailureCode::SafetyBackupFailed,
                format!(
                    "the safety backup {id} failed ({}: {}); the destination was not changed. \
                     Fix the cause, or restore without a safety backup (\"safetyBackup\": false)",
                    ended.error_code.as_deref().unwrap_or("unknown"),
                    ended.error_message.as_deref().unwrap_or("no message")
                ),
            ));
        }
        attempt.note(
            "info",
            format!(
                "safety backup {id} stored ({} bytes at {})",
                ended.archive_size.unwrap_or(0),
                ended.storage_path.as_deref().unwrap_or("?")
            ),
        );
        Ok(id)
    }
}

/// Creates `holder` (the slot's directory) when missing and an empty
/// staging directory in it, first settling what restores that died left
/// behind (an unfinished swap is completed or rolled back from its
/// journal; staging directories are removed). One restore at a time writes
/// a destination (a partial unique index), so anything found here belongs
/// to a restore that is no longer running.
fn prepare_staging(holder: &Path, staging: &Path) -> std::io::Result<Vec<swap::Recovered>> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::create_dir_all(holder)?;
    let recovered = swap::recover(holder)?;
    std::fs::DirBuilder::new().mode(0o700).create(staging)?;
    Ok(recovered)
}

/// Writes on the record of a restore that died mid-swap how its swap was
/// settled: a log line, the summary's `swap` (`rolled_back` or
/// `completed`), and, once it is failed, its message.
pub(crate) async fn record_settled(
    cairn: &cairn_core::Cairn,
    recovered: &swap::Recovered,
    now: chrono::DateTime<Utc>,
) -> anyhow::Result<()> {
    let Some(model) = restore::Entity::find_by_id(recovered.restore_id)
        .one(&cairn.db)
        .await?
    else {
        return Ok(());
    };
    let message = recovered.settled.describe(&recovered.data);
    let mut log: Vec<LogLine> = serde_json::from_value(model.log.clone()).unwrap_or_default();
    log.push(LogLine {
        at: now,
        ..line(
            "warn",
            format!("recovered after the worker died: {message}"),
        )
    });
    let mut summary = model.summary.clone().unwrap_or_else(|| json!({}));
    if let Some(object) = summary.as_object_mut() {
        object.insert("swap".into(), json!(recovered.settled));
    }
    let mut update = restore::ActiveModel {
        log: ActiveValue::Set(serde_json::to_value(log)?),
        summary: ActiveValue::Set(Some(summary)),
        ..Default::default()
    };
    if model.status == RestoreStatus::Failed.as_str() {
        update.error_message = ActiveValue::Set(Some(format!(
            "{}; {message}",
            model.error_message.as_deref().unwrap_or("the worker died")
        )));
    }
    restore::Entity::update_many()
        .set(update)
        .filter(restore::Column::Id.eq(model.id))
        .exec(&cairn.db)
        .await?;
    Ok(())
}

/// Settles the swap a lost restore left on this machine, if any, and says
/// on its record how.
async fn settle_swap_of(cairn: &cairn_core::Cairn, model: &restore::Model) -> anyhow::Result<()> {
    for holder in destination_holders(cairn, model).await? {
        let id = model.id;
        if let Some(found) =
            tokio::task::spawn_blocking(move || swap::recover_one(&holder, id)).await??
        {
            record_settled(cairn, &found, Utc::now()).await?;
        }
    }
    Ok(())
}

/// The directories (parents of `_data`) a restore's destination may be in.
async fn destination_holders(
    cairn: &cairn_core::Cairn,
    model: &restore::Model,
) -> anyhow::Result<Vec<PathBuf>> {
    let Some(app_id) = model.app_id else {
        return Ok(Vec::new());
    };
    let Some(volume) = volume::Entity::find()
        .filter(volume::Column::AppId.eq(app_id))
        .filter(volume::Column::Name.eq(&model.volume_name))
        .one(&cairn.db)
        .await?
    else {
        return Ok(Vec::new());
    };
    Ok(directories::of_volume(&cairn.db, volume.id)
        .await?
        .into_iter()
        .map(|d| cairn.config.volume_root.join(d.name))
        .collect())
}

/// Settles, at a worker's start, the swaps that restores which died on
/// this machine left unfinished and that no reaper here has settled (one
/// on another machine may have failed the record without the files).
/// Restores still `running` are left to the reaper, which settles them once
/// their lease has expired.
pub(crate) async fn recover_swaps(cairn: &cairn_core::Cairn) -> anyhow::Result<usize> {
    let root = cairn.config.volume_root.clone();
    let found = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<(PathBuf, Uuid)>> {
        let mut found = Vec::new();
        let entries = match std::fs::read_dir(&root) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(found),
            Err(error) => return Err(error),
        };
        for entry in entries {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                for id in swap::journals_in(&entry.path())? {
                    found.push((entry.path(), id));
                }
            }
        }
        Ok(found)
    })
    .await??;
    let mut settled = 0;
    for (holder, id) in found {
        let running = restore::Entity::find_by_id(id)
            .one(&cairn.db)
            .await?
            .is_some_and(|r| r.status == RestoreStatus::Running.as_str());
        if running {
            continue;
        }
        let recovered =
            tokio::task::spawn_blocking(move || swap::recover_one(&holder, id)).await??;
        if let Some(recovered) = recovered {
            tracing::warn!(restore_id = %id, "{}", recovered.settled.describe(&recovered.data));
            record_settled(cairn, &recovered, Utc::now()).await?;
            settled += 1;
        }
    }
    Ok(settled)
}

/// Removes the staging directory, and the slot's directory when this
/// restore created it and it is empty again.
fn discard(staging: &Path, holder: &Path, existed: bool) {
    if let Err(error) = std::fs::remove_dir_all(staging) {
        if error.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %staging.display(), "removing a staging directory failed: {error}");
        }
    }
    if !existed {
        let _ = std::fs::remove_dir(holder);
    }
}

/// Fails restores whose lease expired before `now` with `worker_lost`.
/// Their staging directories are removed by the next restore of the same
/// destination (they may be on another worker's disk).
pub(crate) async fn reap(
    cairn: &cairn_core::Cairn,
    now: chrono::DateTime<Utc>,
) -> anyhow::Result<usize> {
    let expired = restore::Entity::find()
        .filter(restore::Column::Status.eq(RestoreStatus::Running.as_str()))
        .filter(restore::Column::LeaseExpiresAt.lt(now))
        .all(&cairn.db)
        .await?;
    let mut reaped = 0;
    for model in expired {
        let message = format!(
            "the worker {} stopped renewing its lease (expired at {}); it is presumed dead. {}{}",
            model.lease_owner.as_deref().unwrap_or("unknown"),
            model
                .lease_expires_at
                .map(|t| t.to_rfc3339())
                .unwrap_or_default(),
            if model.kind.as_deref() == Some("dump") {
                "pg_restore runs in one transaction, so the database is unchanged"
            } else {
                "A volume's entries are swapped only as the last step, journalled: a swap that had \
                 begun is completed or rolled back from its journal, and this record then says which"
            },
            match model.safety_backup_id {
                Some(id) => format!("; safety backup {id} holds what it held before"),
                None => String::new(),
            }
        );
        let mut log: Vec<LogLine> = serde_json::from_value(model.log.clone()).unwrap_or_default();
        log.push(line(
            "error",
            format!("{}: {message}", FailureCode::WorkerLost),
        ));
        let txn = cairn.db.begin().await?;
        let failed = restore::Entity::update_many()
            .set(restore::ActiveModel {
                status: ActiveValue::Set(RestoreStatus::Failed.as_str().to_owned()),
                error_code: ActiveValue::Set(Some(FailureCode::WorkerLost.as_str().to_owned())),
                error_message: ActiveValue::Set(Some(message.clone())),
                log: ActiveValue::Set(serde_json::to_value(log)?),
                finished_at: ActiveValue::Set(Some(now)),
                lease_owner: ActiveValue::Set(None),
                lease_expires_at: ActiveValue::Set(None),
                ..Default::default()
            })
            .filter(restore::Column::Id.eq(model.id))
            .filter(restore::Column::Attempt.eq(model.attempt))
            .filter(restore::Column::Status.eq(RestoreStatus::Running.as_str()))
            .filter(restore::Column::LeaseExpiresAt.lt(now))
            .exec(&txn)
            .await?;
        if failed.rows_affected == 1 {
            notifications::enqueue_guarded(&txn, Subject::Restore(model.id), now).await;
        }
        txn.commit().await?;
        if failed.rows_affected != 1 {
            continue;
        }
        reaped += 1;
        tracing::warn!(restore_id = %model.id, "{message}");
        // Only now, with the record failed (the attempt fenced off), is a
        // swap the dead worker began settled; a swap still running on this
        // machine holds the volume's lock and is left alone. A failure here
        // is logged: other restores must still be reaped.
        if let Err(error) = settle_swap_of(cairn, &model).await {
            tracing::warn!(restore_id = %model.id, error = format!("{error:#}"), "settling the swap of a lost restore failed; the next restore of the volume or a worker start retries");
        }
    }
    Ok(reaped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftover_staging_directories_are_removed() {
        let root = std::env::temp_dir().join(format!("cairn-staging-{}", Uuid::now_v7()));
        let holder = root.join("app-blue_data");
        std::fs::create_dir_all(holder.join(".cairn-restore-dead/x")).unwrap();
        std::fs::create_dir_all(holder.join("_data")).unwrap();
        let staging = holder.join(".cairn-restore-new");
        prepare_staging(&holder, &staging).unwrap();
        let mut left: Vec<_> = std::fs::read_dir(&holder)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, vec![".cairn-restore-new", "_data"]);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
