//! A tar archive into a file volume: extracted into a staging directory
//! beside `_data` while it is hashed, then swapped in (see `swap`) once the
//! whole archive extracted, its hash matched and the safety backup
//! succeeded.

use super::*;

impl Restore<'_> {
    /// A tar archive into the volume's directory.
    pub(super) async fn files(
        &self,
        attempt: &mut Attempt,
        input: Input,
        cap: Option<u64>,
    ) -> Result<Value, Failure> {
        let cairn = &self.worker.cairn;
        let dry_run = attempt.model.dry_run;
        let deployed_slot = self.destination.app.last_deploy_slot;
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
                    read::open(&mut checked, name, identity.as_ref()).map_err(read_failure)?;
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
