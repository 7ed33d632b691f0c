//! The engine of a MySQL or MariaDB volume: `mariadb-dump
//! --single-transaction` of its database (`cairn_core::format::mysql`),
//! through the address policy, with a client at least as new as the
//! server, compressed as the job says; the rows of every table are counted
//! from the dump as it passes.

use secrecy::SecretString;

use cairn_core::apps::ConnectionSettings;
use cairn_core::failure::FailureCode;
use cairn_core::format::manifest::{DumpSource, ManifestContents, MysqlManifest};
use cairn_core::format::mysql::{self, DumpOptions};
use cairn_core::format::tar::Compression;
use cairn_core::jobs::CompressionSetting;
use cairn_core::storage;
use cairn_core::Cairn;
use cairn_entity::volume;

use super::{Attempt, Upload, Written};
use crate::failure::{storage_failure, Failure};
use crate::volumes::database_connection;

/// A database about to be dumped.
pub(super) struct Mysql {
    settings: ConnectionSettings,
    password: SecretString,
    setting: CompressionSetting,
}

impl Mysql {
    /// Reads the volume's connection settings and opens its password.
    pub(super) fn prepare(
        cairn: &Cairn,
        volume: &volume::Model,
        setting: CompressionSetting,
    ) -> Result<Mysql, Failure> {
        let (settings, password) = database_connection(cairn, volume)?;
        let password = password.ok_or_else(|| {
            Failure::new(
                FailureCode::VolumeMisconfigured,
                "the mysql volume has no password",
            )
        })?;
        Ok(Mysql {
            settings,
            password,
            setting,
        })
    }

    /// The archive's extension, before `.age`.
    pub(super) fn extension(&self) -> &'static str {
        Compression::of_job(self.setting).sql_extension()
    }

    pub(super) fn describe(&self) -> String {
        format!(
            "dumping MySQL database {:?} at {}:{}",
            self.settings.database, self.settings.host, self.settings.port
        )
    }

    /// Checks the address and the versions, then streams the dump to the
    /// target.
    pub(super) async fn store(
        self,
        cairn: &Cairn,
        attempt: &mut Attempt,
        upload: Upload<'_>,
    ) -> Result<Written, Failure> {
        let program = cairn.config.mysqldump.clone();
        let (client_line, client) = mysql::client_version(&program).await?;
        let hostaddr = mysql::resolve_host(&storage::address_policy(cairn), &self.settings).await?;
        let mut connection = mysql::connect(
            &self.settings,
            Some(hostaddr),
            Some(&self.password),
            FailureCode::MysqlConnectionFailed,
        )
        .await?;
        let (server_line, server) = mysql::server_version(&mut connection).await?;
        drop(connection);
        match mysql::client_fits(&client, &server) {
            Ok(None) => {}
            Ok(Some(warning)) => attempt.note("warn", warning),
            Err(reason) => return Err(Failure::new(FailureCode::MysqldumpTooOld, reason)),
        }
        attempt.note(
            "info",
            format!("{server} ({server_line}); using {client_line}"),
        );
        let (stream, outcome) = mysql::dump_stream(DumpOptions {
            program,
            settings: self.settings.clone(),
            hostaddr,
            password: self.password,
            compression: Compression::of_job(self.setting),
            encryption: upload.recipients.cloned(),
        })?;
        let put = upload.storage.put(upload.key, stream).await;
        let outcome = outcome.await.map_err(|_| {
            Failure::new(
                FailureCode::Internal,
                "the dump's reader stopped without a summary",
            )
        })?;
        let (summary, tables) = match (put, outcome) {
            (Ok(_), Ok(found)) => found,
            // The client's own failure says more than the upload it cut
            // short.
            (_, Err(error)) if error.code != FailureCode::UploadFailed => return Err(error.into()),
            (Err(error), _) => return Err(storage_failure("uploading the dump", &error)),
            (Ok(_), Err(error)) => return Err(error.into()),
        };
        attempt.note(
            "info",
            format!(
                "dumped {} bytes of SQL: {} tables, {} rows",
                summary.dump_bytes,
                tables.len(),
                tables.iter().map(|t| t.rows).sum::<u64>()
            ),
        );
        Ok(Written {
            stored_bytes: summary.stored_bytes,
            sha256: summary.sha256,
            contents: ManifestContents::MysqlDump(MysqlManifest {
                source: DumpSource {
                    host: self.settings.host,
                    port: self.settings.port,
                    database: self.settings.database,
                    username: self.settings.username,
                },
                compression: self.setting,
                uncompressed_bytes: summary.dump_bytes,
                server_version: server_line,
                client_version: client_line,
                tables,
            }),
        })
    }
}
