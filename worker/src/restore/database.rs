//! A dump into a PostgreSQL volume's database: spooled to an unnamed
//! temporary file while it is hashed, then fed to `pg_restore --clean
//! --if-exists --no-owner --single-transaction`, so the database ends up
//! restored or unchanged.

use super::*;

impl Restore<'_> {
    /// A dump into the volume's database.
    pub(super) async fn database(
        &self,
        attempt: &mut Attempt,
        input: Input,
    ) -> Result<Value, Failure> {
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
                cairn_core::format::pg_dump::resolve_host(
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
            let mut plain = read::open(file, name, identity.as_ref()).map_err(read_failure)?;
            let action = if dry_run {
                PgRestore::List
            } else {
                PgRestore::Into {
                    settings: &settings,
                    hostaddr,
                    password: password.as_ref(),
                }
            };
            pg_restore_with_output(&mut plain, action, &program, &pg_cancel)
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
}
