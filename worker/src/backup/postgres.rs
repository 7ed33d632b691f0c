//! The engine of a PostgreSQL volume: `pg_dump --format=custom` of its
//! database (`cairn_core::format::pg_dump`), through the address policy,
//! with a pg_dump at least as new as the server, and every table's rows
//! counted in the dump's own snapshot (`cairn_core::format::pg_tables`).

use secrecy::SecretString;

use cairn_core::apps::ConnectionSettings;
use cairn_core::failure::FailureCode;
use cairn_core::format::manifest::{DumpManifest, DumpSource, ManifestContents};
use cairn_core::format::pg_dump::{self, DumpOptions};
use cairn_core::format::pg_tables::{describe, DumpSnapshot, MAX_COUNTED_TABLES};
use cairn_core::storage;
use cairn_core::Cairn;
use cairn_entity::volume;

use super::{Attempt, Upload, Written};
use crate::failure::{storage_failure, Failure};
use crate::volumes::database_connection;

/// A database about to be dumped.
pub(super) struct Postgres {
    settings: ConnectionSettings,
    password: SecretString,
}

impl Postgres {
    /// Reads the volume's connection settings and opens its password.
    pub(super) fn prepare(cairn: &Cairn, volume: &volume::Model) -> Result<Postgres, Failure> {
        let (settings, password) = database_connection(cairn, volume)?;
        let password = password.ok_or_else(|| {
            Failure::new(
                FailureCode::VolumeMisconfigured,
                "the postgres volume has no password",
            )
        })?;
        Ok(Postgres { settings, password })
    }

    pub(super) fn describe(&self) -> String {
        format!(
            "dumping database {:?} at {}:{}",
            self.settings.database, self.settings.host, self.settings.port
        )
    }

    /// Checks the versions, then streams the dump to the target.
    pub(super) async fn store(
        self,
        cairn: &Cairn,
        attempt: &mut Attempt,
        upload: Upload<'_>,
    ) -> Result<Written, Failure> {
        let program = cairn.config.pg_dump.clone();
        let (pg_dump_line, pg_dump_major) = pg_dump::pg_dump_version(&program).await?;
        let hostaddr =
            pg_dump::resolve_host(&storage::address_policy(cairn), &self.settings).await?;
        let (connection, server_version, server_major) =
            pg_dump::server_version(&self.settings, hostaddr, &self.password).await?;
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
        // The snapshot the dump and the row counts share; without it the
        // dump is made all the same, with no counts.
        let mut snapshot = match DumpSnapshot::export(connection).await {
            Ok(snapshot) => Some(snapshot),
            Err(error) => {
                attempt.note(
                    "warn",
                    format!(
                        "could not export a snapshot to count rows in ({}); the dump records no row counts",
                        describe(&error)
                    ),
                );
                None
            }
        };
        let (stream, summary) = pg_dump::dump_stream(DumpOptions {
            program,
            settings: self.settings.clone(),
            hostaddr,
            password: self.password,
            encryption: upload.recipients.cloned(),
            snapshot: snapshot.as_ref().map(|s| s.name.clone()),
        });
        let counting = async {
            match snapshot.as_mut() {
                Some(snapshot) => Some(snapshot.count().await),
                None => None,
            }
        };
        // Counting runs beside the upload; a failed upload does not wait
        // for it.
        let (put, counted) = {
            let put = upload.storage.put(upload.key, stream);
            tokio::pin!(put, counting);
            let mut counted = None;
            let put = loop {
                tokio::select! {
                    put = &mut put => break put,
                    done = &mut counting, if counted.is_none() => counted = Some(done),
                }
            };
            let counted = match (counted, &put) {
                (Some(done), _) => done,
                (None, Ok(_)) => counting.await,
                (None, Err(_)) => None,
            };
            (put, counted)
        };
        // Only now, with pg_dump ended, may the snapshot's transaction end.
        if let Some(snapshot) = snapshot {
            snapshot.close().await;
        }
        let tables = match counted {
            Some(Ok(Some(tables))) => {
                attempt.note(
                    "info",
                    format!(
                        "counted the rows of {} tables in the dump's snapshot ({} rows)",
                        tables.len(),
                        tables.iter().map(|t| t.rows).sum::<u64>()
                    ),
                );
                Some(tables)
            }
            Some(Ok(None)) => {
                attempt.note(
                    "info",
                    format!(
                        "more than {MAX_COUNTED_TABLES} tables: the dump records no row counts"
                    ),
                );
                None
            }
            Some(Err(error)) => {
                attempt.note(
                    "warn",
                    format!(
                        "counting rows failed ({}); the dump records no row counts",
                        describe(&error)
                    ),
                );
                None
            }
            None => None,
        };
        let summary = summary.await.map_err(|_| {
            Failure::new(
                FailureCode::Internal,
                "pg_dump's reader stopped without a summary",
            )
        })?;
        let summary = match (put, summary) {
            (Ok(_), Ok((summary, ()))) => summary,
            // pg_dump's own failure says more than the upload it cut short.
            (_, Err(error)) if error.code != FailureCode::UploadFailed => return Err(error.into()),
            (Err(error), _) => return Err(storage_failure("uploading the dump", &error)),
            (Ok(_), Err(error)) => return Err(error.into()),
        };
        Ok(Written {
            stored_bytes: summary.stored_bytes,
            sha256: summary.sha256,
            contents: ManifestContents::PgDump(DumpManifest {
                source: DumpSource {
                    host: self.settings.host,
                    port: self.settings.port,
                    database: self.settings.database,
                    username: self.settings.username,
                },
                compression: "pg_dump".into(),
                uncompressed_bytes: summary.dump_bytes,
                postgres_version: server_version,
                pg_dump_version: pg_dump_line,
                tables,
            }),
        })
    }
}
