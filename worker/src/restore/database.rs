//! A dump into a PostgreSQL volume's database: spooled to an unnamed
//! temporary file while it is hashed, then fed to `pg_restore --clean
//! --if-exists --no-owner --single-transaction`, so the database ends up
//! restored or unchanged.

use crate::volumes::database_connection;

use super::*;

impl Restore<'_> {
    /// A dump into the volume's database:
    /// 1. read the volume's connection settings and password;
    /// 2. spool the download to an unnamed temporary file while hashing it,
    ///    and hold the hash to the record (the database changes as
    ///    pg_restore reads, so the whole dump is verified first);
    /// 3. check the server's address against the policy, once (skipped by
    ///    a dry run, which connects to nothing);
    /// 4. take the safety backup of the database as it is;
    /// 5. feed the dump to `pg_restore` — or, for a dry run, to
    ///    `pg_restore --list`.
    pub(super) async fn database(
        &self,
        attempt: &mut Attempt,
        input: Input,
    ) -> Result<Value, Failure> {
        let cairn = &self.worker.cairn;
        let dry_run = attempt.model.dry_run;
        let (settings, password) = database_connection(cairn, &self.destination.volume)?;
        let (name, identity, expected, cancel) = (
            input.name,
            input.identity.clone(),
            input.expected.clone(),
            input.cancel.clone(),
        );
        // The whole dump is spooled and its hash held to the record before
        // the database is touched: a copy is read when the first is not.
        let (file, size) = self
            .read_with_fallback(
                attempt,
                input,
                || Ok(()),
                |input| {
                    let (expected, cancel) = (input.expected.clone(), input.cancel.clone());
                    async move { spool(input.reader, &expected, &cancel).await }
                },
            )
            .await?;
        attempt.note(
            "info",
            format!("checksum verified ({size} bytes, spooled to a temporary file)"),
        );
        let target = format!(
            "database {:?} at {}:{}",
            settings.database, settings.host, settings.port
        );
        let action = if dry_run {
            Action::List
        } else {
            let hostaddr = cairn_core::format::pg_dump::resolve_host(
                &cairn_core::storage::address_policy(cairn),
                &settings,
            )
            .await
            .map_err(Failure::from)?;
            if attempt.model.safety_backup {
                self.safety_backup(attempt).await?;
            }
            attempt.note(
                "info",
                format!(
                    "running pg_restore --clean --if-exists --no-owner --single-transaction into {target}"
                ),
            );
            Action::Into {
                settings,
                hostaddr,
                password,
            }
        };
        let program = cairn.config.pg_restore.clone();
        let pg_cancel = cancel.clone();
        let restored = tokio::task::spawn_blocking(move || {
            let mut plain = read::open(file, name, identity.as_ref()).map_err(read_failure)?;
            let action = match &action {
                Action::List => PgRestore::List,
                Action::Into {
                    settings,
                    hostaddr,
                    password,
                } => PgRestore::Into {
                    settings,
                    hostaddr: Some(*hostaddr),
                    password: password.as_ref(),
                },
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

/// What pg_restore is asked to do, owned so it can move to the blocking
/// thread.
enum Action {
    List,
    Into {
        settings: ConnectionSettings,
        /// The address the policy allowed, connected to as it is.
        hostaddr: std::net::IpAddr,
        password: Option<SecretString>,
    },
}

/// Spools the download to an unnamed temporary file while hashing it;
/// returns the file, rewound, once the hash equals the record's.
pub(super) async fn spool(
    reader: Box<dyn Read + Send>,
    expected: &str,
    cancel: &Cancellation,
) -> Result<(std::fs::File, u64), Failure> {
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
    verdict(spooled, digest, expected, cancel)
}
