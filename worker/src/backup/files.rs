//! The engine of a file volume: the deployed slot's directory, archived
//! with tar (`cairn_core::format::tar`), compressed as the job says. A
//! `sqlite` volume is one too: each of its databases is first copied
//! through SQLite's online backup API (`cairn_core::format::sqlite`) into
//! a private staging directory, and the archive stores that snapshot under
//! the database's name, leaving out the live file's `-wal`, `-shm` and
//! `-journal`.

use std::path::PathBuf;

use cairn_core::apps::exclude_patterns_of;
use cairn_core::failure::FailureCode;
use cairn_core::format::manifest::{ManifestContents, TarManifest};
use cairn_core::format::sqlite::{self, SqliteDatabase};
use cairn_core::format::tar::{self, Compression, Substitute, TarOptions};
use cairn_core::jobs::CompressionSetting;
use cairn_core::Cairn;

use super::{Attempt, Context, Upload, Written};
use crate::failure::{internal, storage_failure, Failure};
use crate::volumes::resolve_volume;
use cairn_entity::enums::Slot;

/// Manifests list at most this many excluded paths.
const MAX_EXCLUDED_LISTED: usize = 10_000;

/// A file volume about to be archived.
pub(super) struct Files {
    directory: PathBuf,
    slot: Slot,
    setting: CompressionSetting,
    compression: Compression,
    excludes: Vec<String>,
    /// A `sqlite` volume's databases (paths inside the volume).
    databases: Vec<String>,
    /// Where snapshots are staged: `<data_dir>/tmp`.
    staging_root: PathBuf,
}

impl Files {
    /// Finds the volume's directory (the deployed slot's first).
    pub(super) fn prepare(cairn: &Cairn, context: &Context) -> Result<Files, Failure> {
        let (directory, slot) = resolve_volume(
            &cairn.config.volume_root,
            &context.directories,
            context.deployed_slot,
        )?;
        let setting = context.settings.compression;
        Ok(Files {
            directory,
            slot,
            setting,
            compression: Compression::of_job(setting),
            excludes: exclude_patterns_of(&context.volume.exclude_patterns),
            databases: exclude_patterns_of(&context.volume.sqlite_databases),
            staging_root: cairn.config.data_dir.join("tmp"),
        })
    }

    /// Snapshots the volume's SQLite databases into a staging directory
    /// (removed when the returned handle is dropped).
    async fn snapshots(
        &self,
        attempt: &mut Attempt,
    ) -> Result<
        (
            Option<tempfile::TempDir>,
            Vec<Substitute>,
            Vec<SqliteDatabase>,
        ),
        Failure,
    > {
        if self.databases.is_empty() {
            return Ok((None, Vec::new(), Vec::new()));
        }
        cairn_core::db::create_private_dir(&self.staging_root).map_err(internal)?;
        let staging = tempfile::Builder::new()
            .prefix("sqlite-")
            .tempdir_in(&self.staging_root)
            .map_err(internal)?;
        let mut substitutes = Vec::new();
        let mut recorded = Vec::new();
        for (i, database) in self.databases.iter().enumerate() {
            let (root, relative) = (self.directory.clone(), PathBuf::from(database));
            let into = staging.path().join(format!("{i}.sqlite3"));
            let snapshot = into.clone();
            let taken =
                tokio::task::spawn_blocking(move || sqlite::snapshot(&root, &relative, &snapshot))
                    .await
                    .map_err(internal)?;
            let taken = taken.map_err(|why| {
                Failure::new(
                    FailureCode::VolumeUnreadable,
                    format!("the SQLite database {database}: {why}"),
                )
            })?;
            attempt.note(
                "info",
                format!(
                    "snapshot of the SQLite database {database}: {} bytes, integrity_check ok, {} table(s), {} row(s)",
                    taken.bytes,
                    taken.tables.len(),
                    taken.tables.iter().map(|t| t.rows).sum::<u64>()
                ),
            );
            substitutes.push(Substitute {
                path: PathBuf::from(database),
                snapshot: into,
            });
            recorded.push(taken);
        }
        Ok((Some(staging), substitutes, recorded))
    }

    pub(super) fn extension(&self) -> &'static str {
        self.compression.extension()
    }

    pub(super) fn describe(&self) -> String {
        format!(
            "archiving {} ({} slot)",
            self.directory.display(),
            self.slot.as_str()
        )
    }

    /// Streams the tar archive to the target; logs what it held.
    pub(super) async fn store(
        self,
        attempt: &mut Attempt,
        upload: Upload<'_>,
    ) -> Result<Written, Failure> {
        let (_staging, substitutes, databases) = self.snapshots(attempt).await?;
        let (stream, summary) = tar::tar_stream(
            self.directory.clone(),
            TarOptions {
                compression: self.compression,
                excludes: self.excludes.clone(),
                encryption: upload.recipients.cloned(),
                substitutes,
            },
        );
        let put = upload.storage.put(upload.key, stream).await;
        let summary = summary.await.map_err(|_| {
            Failure::new(
                FailureCode::Internal,
                "the archiver stopped without a summary",
            )
        })?;
        let summary = match (put, summary) {
            (Ok(_), Ok(summary)) => summary,
            // The archiver's own failure says more than the upload that it
            // cut short.
            (_, Err(error)) if error.code != FailureCode::UploadFailed => return Err(error.into()),
            (Err(error), _) => return Err(storage_failure("uploading the archive", &error)),
            (Ok(_), Err(error)) => return Err(error.into()),
        };
        for note in &summary.notes {
            let level = if note.starts_with("warning") {
                "warn"
            } else {
                "info"
            };
            attempt.note(level, note.clone());
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
        Ok(Written {
            stored_bytes: summary.stored_bytes,
            sha256: summary.sha256,
            contents: ManifestContents::Tar(TarManifest {
                slot: self.slot,
                source: self.directory.display().to_string(),
                compression: self.setting,
                uncompressed_bytes: summary.tar_bytes,
                content_bytes: summary.content_bytes,
                file_count: summary.files,
                directory_count: summary.directories,
                symlink_count: summary.symlinks,
                hard_link_count: summary.hard_links,
                exclude_patterns: self.excludes,
                excluded_truncated: summary.excluded.len() > MAX_EXCLUDED_LISTED,
                excluded: summary
                    .excluded
                    .into_iter()
                    .take(MAX_EXCLUDED_LISTED)
                    .collect(),
                sqlite: databases,
            }),
        })
    }
}
