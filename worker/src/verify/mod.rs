//! Running one claimed verification: the backup's archive downloaded and
//! hashed, decrypted and decompressed, then read back — every tar entry
//! checked by the extraction rules, or `pg_restore --list` — or, in
//! `restore` mode, extracted into a scratch directory of its own, or
//! restored into a scratch database of its own (`database` for PostgreSQL,
//! `mysql` for MySQL; a MySQL dump in `read` mode is read through and its
//! rows counted); what came
//! back is compared with the manifest, check by check, table by table.
//! Nothing of the organization's is written, and the scratch space is
//! removed however the verification ends (a worker that died leaves it to
//! the reaper, which removes it too: the directory when the reaper runs on
//! the same machine, the database always).

mod database;
mod mysql;

use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::Utc;
use sea_orm::{ActiveValue, ColumnTrait, EntityTrait, QueryFilter, TransactionTrait};
use tokio::sync::watch;

use cairn_core::failure::FailureCode;
use cairn_core::format::extract::{self, Extracted};
use cairn_core::format::manifest::{Manifest, ManifestContents};
use cairn_core::format::names::Format;
use cairn_core::format::pg_restore::{pg_restore_with_output, PgRestore};
use cairn_core::format::pg_tables::TableRows;
use cairn_core::format::read::{self, Checked};
use cairn_core::history::LogLine;
use cairn_core::notifications::{self, Subject};
use cairn_core::restores::{blocking_reader, StoredArchive};
use cairn_core::storage::Cancellation;
use cairn_core::verifications::{Check, TableCheck};
use cairn_entity::enums::{VerificationStatus, VerifyMode};
use cairn_entity::verification;

use crate::failure::{download_failure, internal, Failure};
use crate::lease::{self, line, max_duration};
use crate::restore::{extract_failure, read_failure, readable, verdict, Readable};
use crate::Worker;
use database::{database_name, ScratchServer};
use mysql::MysqlScratch;

type Attempt = lease::Attempt<verification::Model>;

/// What a verification found: its checks, its tables and how long its
/// steps took; and the scratch database it created, to drop.
#[derive(Default)]
struct Findings {
    checks: Vec<Check>,
    tables: Option<Vec<TableCheck>>,
    download_ms: Option<i64>,
    restore_ms: Option<i64>,
    /// Set before the database is created, so it is dropped even when
    /// the verification was abandoned halfway.
    scratch_database: Option<(Engine, String)>,
}

/// The server a scratch database is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Engine {
    /// `verification.postgres_url`.
    Postgres,
    /// `verification.mysql_url`.
    Mysql,
}

impl Findings {
    fn check(&mut self, name: &str, ok: bool, detail: impl Into<String>) {
        self.checks.push(Check {
            name: name.to_owned(),
            ok,
            detail: detail.into(),
        });
    }
}

/// Runs a claimed verification to its outcome:
/// 1. note the claim;
/// 2. run [`perform`] under the job's `maxDurationSeconds`, the lease and
///    the worker's stop signal (each cancels the blocking steps);
/// 3. record the checks, the timings and the outcome, fenced on this
///    attempt.
pub(crate) async fn run_verification(
    worker: &Worker,
    model: verification::Model,
    stop: watch::Receiver<bool>,
) {
    let started = Instant::now();
    let (id, attempt_no) = (model.id, model.attempt);
    let log = model.log.clone();
    let mut attempt = Attempt::new(model, "verification", id, &log);
    attempt.note(
        "info",
        format!(
            "claimed by worker {} (attempt {attempt_no})",
            worker.options.owner
        ),
    );
    let mut findings = Findings::default();
    let outcome = perform_within_limits(worker, &mut attempt, &mut findings, stop).await;
    if let Some((engine, name)) = findings.scratch_database.take() {
        drop_scratch_database(worker, &mut attempt, engine, &name).await;
    }
    let total_ms = started.elapsed().as_millis() as i64;
    let mut changes = verification::ActiveModel {
        checks: ActiveValue::Set(serde_json::to_value(&findings.checks).unwrap_or_default()),
        tables: ActiveValue::Set(
            findings
                .tables
                .as_ref()
                .map(|tables| serde_json::to_value(tables).unwrap_or_default()),
        ),
        download_ms: ActiveValue::Set(findings.download_ms),
        restore_ms: ActiveValue::Set(findings.restore_ms),
        total_ms: ActiveValue::Set(Some(total_ms)),
        finished_at: ActiveValue::Set(Some(Utc::now())),
        lease_owner: ActiveValue::Set(None),
        lease_expires_at: ActiveValue::Set(None),
        ..Default::default()
    };
    match outcome {
        Ok(()) => {
            attempt.note(
                "info",
                format!("verified: {} checks passed", findings.checks.len()),
            );
            changes.status = ActiveValue::Set(VerificationStatus::Success);
        }
        Err(failure) => {
            tracing::warn!(verification_id = %id, code = %failure.code, "verification failed: {}", failure.message);
            attempt.note("error", format!("{}: {}", failure.code, failure.message));
            changes.status = ActiveValue::Set(VerificationStatus::Failed);
            changes.error_code = ActiveValue::Set(Some(failure.code.as_str().to_owned()));
            changes.error_message = ActiveValue::Set(Some(failure.message));
        }
    }
    changes.log = ActiveValue::Set(attempt.log_value());
    let status = changes.status.clone().unwrap();
    // The outcome and its notifications are recorded together.
    let recorded = async {
        let txn = worker.cairn.db.begin().await?;
        let updated =
            lease::fenced_update::<verification::Entity>(&txn, id, attempt_no, changes).await?;
        if updated {
            notifications::enqueue_guarded(&txn, Subject::Verification(id), Utc::now()).await;
        }
        txn.commit().await?;
        anyhow::Ok(updated)
    }
    .await;
    if matches!(recorded, Ok(true)) {
        count(attempt.model.mode, status);
    }
    match recorded {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(verification_id = %id, attempt = attempt_no, "the outcome was not recorded: this attempt no longer holds the verification");
        }
        Err(error) => {
            tracing::error!(verification_id = %id, error = format!("{error:#}"), "recording the outcome failed; the lease will expire and the verification will be failed as worker_lost");
        }
    }
}

/// Counts a verification that ended in `cairn_verifications_total`.
fn count(mode: VerifyMode, status: VerificationStatus) {
    cairn_core::metrics::backup_metrics()
        .verifications
        .with_label_values(&[mode.as_str(), status.as_str()])
        .inc();
}

/// A scratch database server (`database.rs`, `mysql.rs`), as a
/// verification sets it up.
trait ScratchDatabases {
    fn describe(&self) -> String;
    async fn create(&self, name: &str) -> Result<(), Failure>;
    fn settings_of(&self, name: &str) -> cairn_core::apps::ConnectionSettings;
    fn password(&self) -> Option<&secrecy::SecretString>;
}

impl ScratchDatabases for ScratchServer {
    fn describe(&self) -> String {
        ScratchServer::describe(self)
    }
    async fn create(&self, name: &str) -> Result<(), Failure> {
        ScratchServer::create(self, name).await
    }
    fn settings_of(&self, name: &str) -> cairn_core::apps::ConnectionSettings {
        ScratchServer::settings_of(self, name)
    }
    fn password(&self) -> Option<&secrecy::SecretString> {
        ScratchServer::password(self)
    }
}

impl ScratchDatabases for MysqlScratch {
    fn describe(&self) -> String {
        MysqlScratch::describe(self)
    }
    async fn create(&self, name: &str) -> Result<(), Failure> {
        MysqlScratch::create(self, name).await
    }
    fn settings_of(&self, name: &str) -> cairn_core::apps::ConnectionSettings {
        MysqlScratch::settings_of(self, name)
    }
    fn password(&self) -> Option<&secrecy::SecretString> {
        MysqlScratch::password(self)
    }
}

/// Creates the verification's scratch database on `server`, its name
/// recorded first (so it is dropped however the verification ends);
/// returns the name and how to connect to it.
async fn scratch_database(
    server: &impl ScratchDatabases,
    engine: Engine,
    attempt: &mut Attempt,
    findings: &mut Findings,
) -> Result<
    (
        String,
        cairn_core::apps::ConnectionSettings,
        Option<secrecy::SecretString>,
    ),
    Failure,
> {
    let name = database_name(attempt.model.id);
    findings.scratch_database = Some((engine, name.clone()));
    server.create(&name).await?;
    attempt.note(
        "info",
        format!(
            "created the scratch database {name} on {}",
            server.describe()
        ),
    );
    Ok((
        name.clone(),
        server.settings_of(&name),
        server.password().cloned(),
    ))
}

/// Drops a verification's scratch database, noting the outcome.
async fn drop_scratch_database(worker: &Worker, attempt: &mut Attempt, engine: Engine, name: &str) {
    let config = &worker.cairn.config;
    let gone = |key: &str| {
        Err(Failure::new(
            FailureCode::RestoreFailed,
            format!("{key} is no longer set"),
        ))
    };
    let dropped = match engine {
        Engine::Postgres => match ScratchServer::configured(config) {
            Some(Ok(server)) => server.drop_database(name).await,
            Some(Err(failure)) => Err(failure),
            None => gone("verification.postgres_url"),
        },
        Engine::Mysql => match MysqlScratch::configured(config) {
            Some(Ok(server)) => server.drop_database(name).await,
            Some(Err(failure)) => Err(failure),
            None => gone("verification.mysql_url"),
        },
    };
    match dropped {
        Ok(()) => attempt.note("info", format!("dropped the scratch database {name}")),
        Err(failure) => {
            tracing::warn!(verification_id = %attempt.model.id, "{}", failure.message);
            attempt.note(
                "warn",
                format!(
                    "the scratch database {name} is left behind: {}",
                    failure.message
                ),
            );
        }
    }
}

/// [`perform`] under the attempt's limits (see [`lease::cancellable`]).
async fn perform_within_limits(
    worker: &Worker,
    attempt: &mut Attempt,
    findings: &mut Findings,
    stop: watch::Receiver<bool>,
) -> Result<(), Failure> {
    let id = (attempt.model.id, attempt.model.attempt);
    let cancel = Cancellation::default();
    let limit = max_duration(worker, attempt.model.job_id).await;
    let work = perform(worker, attempt, findings, cancel.clone());
    lease::cancellable::<verification::Entity, _>(
        worker,
        id,
        "verification",
        limit,
        &cancel,
        stop,
        work,
    )
    .await
}

/// Verifies the backup:
/// 1. the backup, still successful and of a format this Cairn reads, its
///    manifest, and the age identity when the archive is encrypted;
/// 2. the scratch directory, in `restore` mode;
/// 3. the download, hashed as it arrives, read back (or restored into
///    scratch space) on a blocking thread; the hash must equal the
///    record's;
/// 4. what came back compared with the manifest, one check per count.
async fn perform(
    worker: &Worker,
    attempt: &mut Attempt,
    findings: &mut Findings,
    cancel: Cancellation,
) -> Result<(), Failure> {
    let cairn = &worker.cairn;
    let mode = attempt.model.mode;
    let source = load(
        cairn,
        attempt.model.backup_id,
        attempt.model.source_target_id,
    )
    .await?;
    if let Some(fallback) = &source.fallback {
        attempt.note("warn", fallback.clone());
    }
    let mut scratch_dir = None;
    let mut scratch_db = None;
    let mut mysql_scratch = None;
    let into = match (mode, source.archive.name.format) {
        (VerifyMode::Read, _) => Scratchpad::Nothing,
        (VerifyMode::Restore, Format::Dump) => {
            let server = ScratchServer::required(&cairn.config)?;
            let (name, settings, password) =
                scratch_database(&server, Engine::Postgres, attempt, findings).await?;
            scratch_db = Some((server, name));
            Scratchpad::Database { settings, password }
        }
        (VerifyMode::Restore, format) if format.is_sql() => {
            let server = MysqlScratch::required(&cairn.config)?;
            let (name, settings, password) =
                scratch_database(&server, Engine::Mysql, attempt, findings).await?;
            mysql_scratch = Some((server, name));
            Scratchpad::Mysql { settings, password }
        }
        (VerifyMode::Restore, _) => {
            let dir = Scratch::create(
                cairn.config.verification.scratch_dir.as_deref(),
                attempt.model.id,
            )?;
            let into = Scratchpad::Directory(dir.path.clone());
            scratch_dir = Some(dir);
            into
        }
    };
    let archive = &source.archive;
    attempt.note(
        "info",
        format!(
            "{} {} ({} bytes, sha256 {}) from target '{}'{}",
            match mode {
                VerifyMode::Read => "reading back",
                VerifyMode::Restore => "restoring",
            },
            archive.key,
            archive.backup.archive_size.unwrap_or(0),
            source.expected,
            archive.target.name,
            match &into {
                Scratchpad::Nothing => String::new(),
                Scratchpad::Directory(path) => format!(" into {}", path.display()),
                Scratchpad::Database { settings, .. } | Scratchpad::Mysql { settings, .. } =>
                    format!(" into the scratch database {}", settings.database),
            }
        ),
    );
    let started = Instant::now();
    let (_, stream) = archive
        .storage
        .get(&archive.key)
        .await
        .map_err(|e| download_failure("downloading the archive", &e))?;
    let outcome = read_back(
        Box::new(blocking_reader(stream)),
        &source,
        into,
        Programs {
            pg_restore: cairn.config.pg_restore.clone(),
            mysql: cairn.config.mysql.clone(),
        },
        cancel.clone(),
    )
    .await?;
    // The download and the read run together; the time is theirs.
    let elapsed = started.elapsed().as_millis() as i64;
    findings.download_ms = Some(elapsed);
    findings.restore_ms = Some(elapsed);
    let (read, digest) = outcome;
    // The check is recorded only when the whole download was hashed: a
    // failed or interrupted download proves nothing either way.
    if let (Ok((actual, _)), false) = (&digest, cancel.is_cancelled()) {
        findings.check(
            "sha256",
            *actual == source.expected,
            if *actual == source.expected {
                actual.clone()
            } else {
                format!("{actual} read back, the record says {}", source.expected)
            },
        );
    }
    let (found, size) = verdict(read, digest, &source.expected, &cancel)?;
    let found = match (found, &scratch_db, &mysql_scratch) {
        (ReadBack::Restored { bytes }, _, Some((server, name))) => {
            findings.check(
                "restore",
                true,
                format!("the mariadb client loaded {bytes} bytes of SQL into {name}"),
            );
            let tables = server.count(name).await?;
            attempt.note(
                "info",
                format!(
                    "counted {} rows in {} tables loaded",
                    tables.iter().map(|t| t.rows).sum::<u64>(),
                    tables.len()
                ),
            );
            ReadBack::Counted(Some(tables))
        }
        (ReadBack::Restored { bytes }, Some((server, name)), _) => {
            findings.check(
                "restore",
                true,
                format!("pg_restore restored {bytes} bytes of dump into {name}"),
            );
            let tables = server.count(name).await?;
            attempt.note(
                "info",
                match &tables {
                    Some(tables) => format!(
                        "counted {} rows in {} tables restored",
                        tables.iter().map(|t| t.rows).sum::<u64>(),
                        tables.len()
                    ),
                    None => "too many tables restored to count".to_owned(),
                },
            );
            ReadBack::Counted(tables)
        }
        (found, _, _) => found,
    };
    compare(&source.manifest, &found, size, findings);
    if let (Some(dir), ManifestContents::Tar(tar)) = (&scratch_dir, &source.manifest.contents) {
        // A `sqlite` volume's databases, as extracted: sound, and holding
        // the rows their backup counted.
        let (root, databases) = (dir.path.clone(), tar.sqlite.clone());
        let checked = tokio::task::spawn_blocking(move || {
            databases
                .into_iter()
                .map(|db| {
                    let found = cairn_core::format::sqlite::check(&root.join(&db.path));
                    (db, found)
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(internal)?;
        for (database, found) in checked {
            let name = format!("sqlite:{}", database.path);
            match found {
                Ok(tables) if tables == database.tables => findings.check(
                    &name,
                    true,
                    format!(
                        "integrity_check ok; {} rows in {} tables, as recorded",
                        tables.iter().map(|t| t.rows).sum::<u64>(),
                        tables.len()
                    ),
                ),
                Ok(_) => findings.check(
                    &name,
                    false,
                    "integrity_check ok, but its tables or row counts differ from those recorded",
                ),
                Err(why) => findings.check(&name, false, why),
            }
        }
    }
    drop(scratch_dir);
    match findings.checks.iter().find(|check| !check.ok) {
        Some(failed) => Err(Failure::new(
            FailureCode::VerificationMismatch,
            format!("check {} failed: {}", failed.name, failed.detail),
        )),
        None => Ok(()),
    }
}

/// What a verification reads: the stored archive, the checksum and the
/// manifest it is held to, and the key that decrypts it.
struct Source {
    archive: StoredArchive,
    expected: String,
    manifest: Manifest,
    identity: Option<age::x25519::Identity>,
    /// Why a copy is read instead of the primary, when it is.
    fallback: Option<String>,
}

/// The backup, still successful and of a format this Cairn reads, with
/// its checksum, manifest and (when encrypted) the organization's
/// identity.
async fn load(
    cairn: &cairn_core::Cairn,
    backup_id: uuid::Uuid,
    source_target: Option<uuid::Uuid>,
) -> Result<Source, Failure> {
    let Readable {
        archive,
        expected,
        identity,
        fallback,
    } = readable(cairn, backup_id, source_target).await?;
    let unavailable = |message: String| Failure::new(FailureCode::BackupUnavailable, message);
    let manifest = archive
        .backup
        .manifest
        .as_ref()
        .map(Manifest::from_value)
        .transpose()
        .map_err(|e| unavailable(e.to_string()))?
        .ok_or_else(|| unavailable("the backup has no manifest to compare with".into()))?;
    Ok(Source {
        archive,
        expected,
        manifest,
        identity,
        fallback,
    })
}

/// Where a verification reads the archive back into.
enum Scratchpad {
    /// Nowhere: `read` mode.
    Nothing,
    /// A scratch directory (a tar archive in `restore` mode).
    Directory(PathBuf),
    /// A scratch database (a dump in `restore` mode).
    Database {
        settings: cairn_core::apps::ConnectionSettings,
        password: Option<secrecy::SecretString>,
    },
    /// A MySQL scratch database (a MySQL dump in `restore` mode).
    Mysql {
        settings: cairn_core::apps::ConnectionSettings,
        password: Option<secrecy::SecretString>,
    },
}

/// The clients that read dumps back.
struct Programs {
    pg_restore: PathBuf,
    mysql: PathBuf,
}

/// Reads the download back on a blocking thread — a dump listed by
/// `pg_restore --list` or restored into a scratch database, a tar archive
/// checked by the extraction rules or extracted into a scratch directory —
/// while hashing every byte; returns the read's outcome and the digest.
async fn read_back(
    reader: Box<dyn std::io::Read + Send>,
    source: &Source,
    into: Scratchpad,
    programs: Programs,
    cancel: Cancellation,
) -> Result<(Result<ReadBack, Failure>, std::io::Result<(String, u64)>), Failure> {
    let name = source.archive.name;
    let cap = source.manifest.expansion_cap();
    let identity = source.identity.clone();
    tokio::task::spawn_blocking(move || {
        let mut checked = Checked::new(reader, cancel.clone());
        let outcome = (|| {
            let mut plain =
                read::open(&mut checked, name, identity.as_ref()).map_err(read_failure)?;
            let program = &programs.pg_restore;
            match (name.format, into) {
                (format, Scratchpad::Mysql { settings, password }) if format.is_sql() => {
                    cairn_core::format::mysql::load(
                        &mut plain,
                        &programs.mysql,
                        &settings,
                        None,
                        password.as_ref(),
                        &cancel,
                    )
                    .map(|bytes| ReadBack::Restored { bytes })
                    .map_err(|message| Failure::new(FailureCode::MysqlRestoreFailed, message))
                }
                (format, _) if format.is_sql() => cairn_core::format::mysql::scan(plain)
                    .map(|(_, tables)| ReadBack::Counted(Some(tables)))
                    .map_err(|reason| Failure::new(FailureCode::ArchiveDamaged, reason)),
                (Format::Dump, Scratchpad::Database { settings, password }) => {
                    let action = PgRestore::Scratch {
                        settings: &settings,
                        password: password.as_ref(),
                    };
                    pg_restore_with_output(&mut plain, action, program, &cancel)
                        .map(|(bytes, _)| ReadBack::Restored { bytes })
                        .map_err(|message| Failure::new(FailureCode::PgRestoreFailed, message))
                }
                (Format::Dump, _) => {
                    let (_, listing) =
                        pg_restore_with_output(&mut plain, PgRestore::List, program, &cancel)
                            .map_err(|message| {
                                Failure::new(FailureCode::PgRestoreFailed, message)
                            })?;
                    Ok(ReadBack::Dump {
                        entries: listing
                            .lines()
                            .filter(|l| !l.trim().is_empty() && !l.starts_with(';'))
                            .count() as u64,
                    })
                }
                (_, Scratchpad::Directory(into)) => extract::extract(plain, &into, Some(cap))
                    .map(ReadBack::Tar)
                    .map_err(extract_failure),
                (_, _) => extract::check(plain, Some(cap))
                    .map(ReadBack::Tar)
                    .map_err(extract_failure),
            }
        })();
        (outcome, checked.finish())
    })
    .await
    .map_err(internal)
}

/// What reading the archive back found.
enum ReadBack {
    Tar(Extracted),
    /// `pg_restore --list`.
    Dump {
        entries: u64,
    },
    /// Restored into the scratch database; not counted yet.
    Restored {
        bytes: u64,
    },
    /// The tables restored, with their rows (`None`: too many to count).
    Counted(Option<Vec<TableRows>>),
}

/// One check per count the manifest recorded.
fn compare(manifest: &Manifest, read_back: &ReadBack, size: u64, findings: &mut Findings) {
    let mut count = |name: &str, found: u64, expected: u64| {
        findings.check(
            name,
            found == expected,
            if found == expected {
                format!("{found}")
            } else {
                format!("{found} read back, the manifest says {expected}")
            },
        );
    };
    count("storedBytes", size, manifest.stored_bytes);
    match (&manifest.contents, read_back) {
        (ManifestContents::Tar(tar), ReadBack::Tar(found)) => {
            count("files", found.files, tar.file_count);
            count("directories", found.directories, tar.directory_count);
            count("symlinks", found.symlinks, tar.symlink_count);
            count("hardLinks", found.hard_links, tar.hard_link_count);
            count("bytes", found.bytes, tar.content_bytes);
        }
        (ManifestContents::PgDump(_), ReadBack::Dump { entries }) => {
            findings.check(
                "tableOfContents",
                *entries > 0,
                format!("{entries} entries listed by pg_restore --list"),
            );
        }
        (ManifestContents::PgDump(dump), ReadBack::Counted(restored)) => {
            compare_tables(dump.tables.as_deref(), restored.as_deref(), findings);
        }
        (ManifestContents::MysqlDump(dump), ReadBack::Counted(found)) => {
            compare_tables(Some(&dump.tables), found.as_deref(), findings);
        }
        _ => findings.check(
            "kind",
            false,
            "the archive's name and its manifest disagree on what it holds",
        ),
    }
}

/// The tables restored against those the backup recorded: a `tables`
/// check (none missing, none unrecorded) and a `rows` check (every count
/// equal), with every table in `findings.tables`.
fn compare_tables(
    recorded: Option<&[TableRows]>,
    restored: Option<&[TableRows]>,
    findings: &mut Findings,
) {
    let (Some(recorded), Some(restored)) = (recorded, restored) else {
        let restored_count = restored.map(|t| t.len().to_string());
        findings.check(
            "tables",
            true,
            format!(
                "{} tables restored; {}",
                restored_count.as_deref().unwrap_or("more than 10 000"),
                if recorded.is_none() {
                    "the backup recorded no row counts to compare with (see its log)"
                } else {
                    "too many to compare"
                }
            ),
        );
        findings.tables = restored.map(|tables| {
            tables
                .iter()
                .map(|t| TableCheck {
                    name: t.name.clone(),
                    rows: Some(t.rows),
                    expected_rows: None,
                })
                .collect()
        });
        return;
    };
    let mut rows: std::collections::BTreeMap<&str, (Option<u64>, Option<u64>)> =
        std::collections::BTreeMap::new();
    for table in recorded {
        rows.entry(&table.name).or_default().1 = Some(table.rows);
    }
    for table in restored {
        rows.entry(&table.name).or_default().0 = Some(table.rows);
    }
    let tables: Vec<TableCheck> = rows
        .into_iter()
        .map(|(name, (rows, expected_rows))| TableCheck {
            name: name.to_owned(),
            rows,
            expected_rows,
        })
        .collect();
    let listed = |names: Vec<&str>| {
        let shown: Vec<&str> = names.iter().take(10).copied().collect();
        let more = names.len().saturating_sub(shown.len());
        format!(
            "{}{}",
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        )
    };
    let missing: Vec<&str> = tables
        .iter()
        .filter(|t| t.rows.is_none())
        .map(|t| t.name.as_str())
        .collect();
    let unrecorded: Vec<&str> = tables
        .iter()
        .filter(|t| t.expected_rows.is_none())
        .map(|t| t.name.as_str())
        .collect();
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!("missing after the restore: {}", listed(missing)));
    }
    if !unrecorded.is_empty() {
        problems.push(format!(
            "restored but not recorded by the backup: {}",
            listed(unrecorded)
        ));
    }
    findings.check(
        "tables",
        problems.is_empty(),
        if problems.is_empty() {
            format!("{} tables, as the backup recorded", tables.len())
        } else {
            problems.join("; ")
        },
    );
    let differing: Vec<String> = tables
        .iter()
        .filter_map(|t| match (t.rows, t.expected_rows) {
            (Some(rows), Some(expected)) if rows != expected => {
                Some(format!("{} ({rows} restored, {expected} recorded)", t.name))
            }
            _ => None,
        })
        .collect();
    findings.check(
        "rows",
        differing.is_empty(),
        if differing.is_empty() {
            format!(
                "{} rows, as the backup recorded",
                tables.iter().filter_map(|t| t.rows).sum::<u64>()
            )
        } else {
            listed(differing.iter().map(String::as_str).collect())
        },
    );
    findings.tables = Some(tables);
}

/// A verification's scratch directory, removed when dropped.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn create(root: Option<&Path>, id: uuid::Uuid) -> Result<Scratch, Failure> {
        let root = root.ok_or_else(|| {
            Failure::new(
                FailureCode::RestoreFailed,
                "restore mode needs verification.scratch_dir, which is not set on this worker",
            )
        })?;
        let path = scratch_path(root, id);
        let created =
            cairn_core::db::create_private_dir(root).and_then(|()| std::fs::create_dir(&path));
        created.map_err(|e| {
            Failure::new(
                FailureCode::RestoreFailed,
                format!("creating {}: {e}", path.display()),
            )
        })?;
        Ok(Scratch { path })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        remove_scratch(&self.path);
    }
}

/// Where verification `id` extracts, under `root`.
fn scratch_path(root: &Path, id: uuid::Uuid) -> PathBuf {
    root.join(format!("cairn-verify-{id}"))
}

fn remove_scratch(path: &Path) {
    if let Err(error) = std::fs::remove_dir_all(path) {
        if error.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), "removing a verification's scratch directory failed: {error}");
        }
    }
}

/// Fails verifications whose lease expired before `now` with
/// `worker_lost`, and removes their scratch directories when they are on
/// this machine.
pub(crate) async fn reap(
    cairn: &cairn_core::Cairn,
    now: chrono::DateTime<Utc>,
) -> anyhow::Result<usize> {
    let expired = verification::Entity::find()
        .filter(verification::Column::Status.eq(VerificationStatus::Running))
        .filter(verification::Column::LeaseExpiresAt.lt(now))
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
                .unwrap_or_default(),
        );
        let mut log: Vec<LogLine> = serde_json::from_value(model.log.clone()).unwrap_or_default();
        log.push(line(
            "error",
            format!("{}: {message}", FailureCode::WorkerLost),
        ));
        let txn = cairn.db.begin().await?;
        let failed = verification::Entity::update_many()
            .set(verification::ActiveModel {
                status: ActiveValue::Set(VerificationStatus::Failed),
                error_code: ActiveValue::Set(Some(FailureCode::WorkerLost.as_str().to_owned())),
                error_message: ActiveValue::Set(Some(message.clone())),
                log: ActiveValue::Set(serde_json::to_value(log)?),
                finished_at: ActiveValue::Set(Some(now)),
                lease_owner: ActiveValue::Set(None),
                lease_expires_at: ActiveValue::Set(None),
                ..Default::default()
            })
            .filter(verification::Column::Id.eq(model.id))
            .filter(verification::Column::Attempt.eq(model.attempt))
            .filter(verification::Column::Status.eq(VerificationStatus::Running))
            .filter(verification::Column::LeaseExpiresAt.lt(now))
            .exec(&txn)
            .await?;
        if failed.rows_affected == 1 {
            notifications::enqueue_guarded(&txn, Subject::Verification(model.id), now).await;
        }
        txn.commit().await?;
        if failed.rows_affected != 1 {
            continue;
        }
        reaped += 1;
        count(model.mode, VerificationStatus::Failed);
        tracing::warn!(verification_id = %model.id, "{message}");
        if model.mode != VerifyMode::Restore {
            continue;
        }
        if let Some(root) = &cairn.config.verification.scratch_dir {
            remove_scratch(&scratch_path(root, model.id));
        }
        let name = database_name(model.id);
        if let Some(Ok(server)) = ScratchServer::configured(&cairn.config) {
            if let Err(failure) = server.drop_database(&name).await {
                tracing::warn!(verification_id = %model.id, "{}", failure.message);
            }
        }
        if let Some(Ok(server)) = MysqlScratch::configured(&cairn.config) {
            if let Err(failure) = server.drop_database(&name).await {
                tracing::warn!(verification_id = %model.id, "{}", failure.message);
            }
        }
    }
    Ok(reaped)
}
