//! A tar archive into a file volume: extracted into a staging directory
//! beside `_data` while it is hashed, then swapped in (see `swap`) once the
//! whole archive extracted, its hash matched and the safety backup
//! succeeded.

use cairn_core::format::manifest::ManifestContents;
use cairn_core::format::sqlite::{self, SqliteDatabase};
use cairn_entity::enums::Slot;

use super::*;

/// Where a file restore writes: the volume's `_data`, the slot's
/// directory holding it, and the staging directory beside it.
struct Place {
    data: PathBuf,
    slot: Slot,
    /// Whether `_data` existed (else this restore creates it).
    exists: bool,
    holder: PathBuf,
    staging: PathBuf,
}

impl Place {
    /// Removes the staging directory (and the slot's directory when this
    /// restore created it).
    fn discard(&self) {
        discard(&self.staging, &self.holder, self.exists);
    }
}

/// The SQLite databases a backup's manifest records.
fn sqlite_databases(backup: &backup::Model) -> Vec<SqliteDatabase> {
    match backup
        .manifest
        .as_ref()
        .and_then(|m| Manifest::from_value(m).ok())
        .map(|m| m.contents)
    {
        Some(ManifestContents::Tar(tar)) => tar.sqlite,
        _ => Vec::new(),
    }
}

/// Holds each staged SQLite database to `integrity_check` and to the rows
/// its backup counted, before anything is swapped in.
fn check_databases(staging: &Path, databases: &[SqliteDatabase]) -> Result<(), Failure> {
    for database in databases {
        let damaged = |why: String| {
            Failure::new(
                FailureCode::ArchiveDamaged,
                format!("the SQLite database {} as restored: {why}", database.path),
            )
        };
        let tables = sqlite::check(&staging.join(&database.path)).map_err(damaged)?;
        if tables != database.tables {
            return Err(damaged(
                "its tables or row counts differ from those its backup recorded".into(),
            ));
        }
    }
    Ok(())
}

impl Restore<'_> {
    /// A tar archive into the volume's directory:
    /// 1. locate the destination (the deployed slot's directory first; one
    ///    that does not exist yet is created in that slot);
    /// 2. prepare a staging directory beside `_data`, settling what restores
    ///    that died left there (skipped by a dry run);
    /// 3. extract into it — or, for a dry run, only check — while hashing,
    ///    and hold the hash to the record;
    /// 4. take the safety backup of what is about to be replaced;
    /// 5. swap the staged entries in (journalled, see `swap`).
    ///
    /// Any failure before the swap leaves `_data` as it was.
    pub(super) async fn files(
        &self,
        attempt: &mut Attempt,
        input: Input,
        cap: Option<u64>,
    ) -> Result<Value, Failure> {
        let dry_run = attempt.model.dry_run;
        let expected = input.expected.clone();
        let place = self.place(attempt)?;
        if dry_run {
            attempt.note(
                "info",
                format!(
                    "the destination would be {} ({} slot{})",
                    place.data.display(),
                    place.slot,
                    if place.exists { "" } else { ", created" }
                ),
            );
        } else {
            self.prepare(attempt, &place).await?;
        }
        let staging = place.staging.clone();
        let read = self
            .read_with_fallback(
                attempt,
                input,
                || {
                    if dry_run {
                        return Ok(());
                    }
                    empty_staging(&staging).map_err(|e| {
                        Failure::new(
                            FailureCode::RestoreFailed,
                            format!("emptying {}: {e}", staging.display()),
                        )
                    })
                },
                |input| extract_into(input, &place.staging, cap, dry_run),
            )
            .await;
        let (extracted, size) = match read {
            Ok(done) => done,
            Err(failure) => {
                if !dry_run {
                    place.discard();
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
            "destination": place.data.display().to_string(),
            "slot": place.slot,
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
        let databases = sqlite_databases(self.source);
        if !databases.is_empty() {
            let staging = place.staging.clone();
            let count = databases.len();
            let checked =
                tokio::task::spawn_blocking(move || check_databases(&staging, &databases))
                    .await
                    .map_err(internal)
                    .and_then(|checked| checked);
            if let Err(failure) = checked {
                place.discard();
                return Err(failure);
            }
            attempt.note(
                "info",
                format!(
                    "{count} SQLite database(s) pass integrity_check with the rows their backup recorded"
                ),
            );
            if let Some(object) = summary.as_object_mut() {
                object.insert("sqliteDatabases".into(), json!(count));
            }
        }
        if attempt.model.safety_backup && place.exists {
            if let Err(failure) = self.safety_backup(attempt).await {
                place.discard();
                return Err(failure);
            }
        } else if attempt.model.safety_backup {
            attempt.note(
                "info",
                "no safety backup: the volume did not exist, so nothing is replaced",
            );
        }
        let replaced = swap_in(attempt, &place).await?;
        if let Some(object) = summary.as_object_mut() {
            object.insert("created".into(), json!(!place.exists));
            object.insert("replacedEntries".into(), json!(replaced));
        }
        Ok(summary)
    }

    /// The destination's directories, from those recorded for the volume.
    fn place(&self, attempt: &Attempt) -> Result<Place, Failure> {
        let located = directories::locate(
            &self.worker.cairn.config.volume_root,
            &self.destination.directories,
            self.destination.app.last_deploy_slot,
        )
        .ok_or_else(|| internal("the destination has no directory recorded"))?;
        let holder = located
            .data
            .parent()
            .ok_or_else(|| internal("a volume directory has no parent"))?
            .to_path_buf();
        let staging = swap::staging_dir(&located.data, attempt.model.id).map_err(internal)?;
        Ok(Place {
            data: located.data,
            slot: located.slot,
            exists: located.exists,
            holder,
            staging,
        })
    }

    /// Creates the staging directory, after settling (and recording) the
    /// swaps that dead restores left in the slot's directory.
    async fn prepare(&self, attempt: &mut Attempt, place: &Place) -> Result<(), Failure> {
        attempt.note(
            "info",
            format!(
                "extracting into {} beside {} ({} slot{})",
                place.staging.display(),
                place.data.display(),
                place.slot,
                if place.exists {
                    ""
                } else {
                    "; no directory of the volume exists, so this one is created"
                }
            ),
        );
        let (holder, staging) = (place.holder.clone(), place.staging.clone());
        let recovered = tokio::task::spawn_blocking(move || prepare_staging(&holder, &staging))
            .await
            .map_err(internal)?
            .map_err(|e| {
                Failure::new(
                    FailureCode::RestoreFailed,
                    format!("preparing {}: {e}", place.staging.display()),
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
            record_settled(&self.worker.cairn, &settled, Utc::now())
                .await
                .map_err(internal)?;
        }
        Ok(())
    }
}

/// Reads the archive on a blocking thread: decrypts and decompresses it,
/// extracts it into `staging` (or only checks it, for a dry run) with the
/// extraction rules, and hashes every byte read. The hash must equal the
/// record's before anything counts as extracted.
async fn extract_into(
    input: Input,
    staging: &Path,
    cap: Option<u64>,
    dry_run: bool,
) -> Result<(extract::Extracted, u64), Failure> {
    let Input {
        reader,
        name,
        identity,
        expected,
        cancel,
    } = input;
    let staged = staging.to_path_buf();
    let blocking_cancel = cancel.clone();
    let (outcome, digest) = tokio::task::spawn_blocking(move || {
        let mut checked = Checked::new(reader, blocking_cancel);
        let outcome = (|| {
            let plain = read::open(&mut checked, name, identity.as_ref()).map_err(read_failure)?;
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
    verdict(outcome, digest, &expected, &cancel)
}

/// Moves the volume's entries aside and the staged ones in; returns how
/// many were replaced.
async fn swap_in(attempt: &mut Attempt, place: &Place) -> Result<usize, Failure> {
    let (data, restore_id) = (place.data.clone(), attempt.model.id);
    let swapped = tokio::task::spawn_blocking(move || swap::swap(&data, restore_id))
        .await
        .map_err(internal)?;
    match swapped {
        Ok(replaced) => {
            attempt.note(
                "info",
                format!(
                    "replaced {replaced} entr{} of {} with the restored ones",
                    if replaced == 1 { "y" } else { "ies" },
                    place.data.display()
                ),
            );
            Ok(replaced)
        }
        Err(error) => {
            // A journal left behind means the swap is half done: its
            // staging directory is the recovery's to finish with.
            if !swap::unsettled(&place.data, attempt.model.id) {
                place.discard();
            }
            Err(Failure::new(
                FailureCode::RestoreFailed,
                format!(
                    "moving the restored entries into {}: {error}",
                    place.data.display()
                ),
            ))
        }
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

/// Empties a staging directory for another read of the archive.
fn empty_staging(staging: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::remove_dir_all(staging)?;
    std::fs::DirBuilder::new().mode(0o700).create(staging)
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
