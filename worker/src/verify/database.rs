//! The scratch database server of `restore`-mode verifications of
//! PostgreSQL backups (`verification.postgres_url`, a server the operator
//! provides): one database `cairn_verify_{id}` per verification, created
//! empty from `template0`, restored into, counted, and dropped — by the
//! verification however it ends, or by the reaper after its worker died.
//!
//! A dump's own SQL (check constraints calling the tenant's functions, …)
//! runs as the scratch role while it is restored, so that role must not be
//! a superuser: a verification refuses to run on one.

use sea_orm::sqlx::{self, Connection, PgConnection};
use secrecy::SecretString;

use cairn_core::apps::ConnectionSettings;
use cairn_core::failure::FailureCode;
use cairn_core::format::pg_tables::{connect, count_tables, describe, TableRows};

use crate::failure::Failure;

/// The configured scratch database server.
pub(crate) struct ScratchServer {
    settings: ConnectionSettings,
    password: Option<SecretString>,
}

/// The database a verification restores into.
pub(crate) fn database_name(id: uuid::Uuid) -> String {
    format!("cairn_verify_{}", id.simple())
}

fn failed(message: String) -> Failure {
    Failure::new(FailureCode::RestoreFailed, message)
}

impl ScratchServer {
    /// The server of this worker's configuration, if it has one.
    pub(crate) fn configured(
        config: &cairn_core::Config,
    ) -> Option<Result<ScratchServer, Failure>> {
        config.verification.scratch_server().map(|parsed| {
            parsed
                .map(|(settings, password)| ScratchServer { settings, password })
                .map_err(failed)
        })
    }

    /// The server, or the failure of a verification that needs one.
    pub(crate) fn required(config: &cairn_core::Config) -> Result<ScratchServer, Failure> {
        ScratchServer::configured(config).unwrap_or_else(|| {
            Err(failed(
                "restore mode of a PostgreSQL backup needs verification.postgres_url, which is \
                 not set on this worker"
                    .into(),
            ))
        })
    }

    /// Where the server is, for logs (never the password).
    pub(crate) fn describe(&self) -> String {
        format!("{}:{}", self.settings.host, self.settings.port)
    }

    /// The connection settings of `database` on this server.
    pub(crate) fn settings_of(&self, database: &str) -> ConnectionSettings {
        ConnectionSettings {
            database: database.to_owned(),
            ..self.settings.clone()
        }
    }

    pub(crate) fn password(&self) -> Option<&SecretString> {
        self.password.as_ref()
    }

    async fn connect_to(&self, database: &str) -> Result<PgConnection, Failure> {
        connect(
            &self.settings_of(database),
            None,
            self.password.as_ref(),
            FailureCode::RestoreFailed,
        )
        .await
        .map_err(|error| {
            failed(format!(
                "the scratch database server (verification.postgres_url): {}",
                error.message
            ))
        })
    }

    /// Creates the empty database `name`, refusing a superuser role.
    pub(crate) async fn create(&self, name: &str) -> Result<(), Failure> {
        let mut connection = self.connect_to(&self.settings.database).await?;
        let sql_failed = |what: &str, error: sqlx::Error| {
            failed(format!(
                "{what} on the scratch database server {}: {}",
                self.describe(),
                describe(&error)
            ))
        };
        let superuser: bool = sqlx::query_scalar(
            "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user",
        )
        .fetch_one(&mut connection)
        .await
        .map_err(|e| sql_failed("reading the role", e))?;
        if superuser {
            let _ = connection.close().await;
            return Err(failed(format!(
                "verification.postgres_url logs in to {} as the superuser {:?}; a dump's own SQL runs \
                 as this role while it is restored, so it must be a role with CREATEDB and without \
                 SUPERUSER (CREATE ROLE cairn_verify LOGIN CREATEDB PASSWORD '…')",
                self.describe(),
                self.settings.username
            )));
        }
        // `name` is `cairn_verify_` and 32 hex digits: nothing to quote.
        let created = sqlx::query(&format!("CREATE DATABASE \"{name}\" TEMPLATE template0"))
            .execute(&mut connection)
            .await;
        let _ = connection.close().await;
        created
            .map(|_| ())
            .map_err(|e| sql_failed(&format!("creating the scratch database {name}"), e))
    }

    /// Every table of `name` with its rows (`None`: more than the manifest
    /// records).
    pub(crate) async fn count(&self, name: &str) -> Result<Option<Vec<TableRows>>, Failure> {
        let mut connection = self.connect_to(name).await?;
        let counted = count_tables(&mut connection).await;
        let _ = connection.close().await;
        counted.map_err(|error| {
            failed(format!(
                "counting the rows restored into {name}: {}",
                describe(&error)
            ))
        })
    }

    /// Drops `name` if it exists, ending the sessions still connected to
    /// it (a pg_restore of a worker that died).
    pub(crate) async fn drop_database(&self, name: &str) -> Result<(), Failure> {
        let mut connection = self.connect_to(&self.settings.database).await?;
        let dropped = async {
            let version: i32 =
                sqlx::query_scalar("SELECT current_setting('server_version_num')::int")
                    .fetch_one(&mut connection)
                    .await?;
            if version >= 130_000 {
                sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .execute(&mut connection)
                    .await?;
            } else {
                sqlx::query(
                    "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity \
                     WHERE datname = $1",
                )
                .bind(name)
                .execute(&mut connection)
                .await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\""))
                    .execute(&mut connection)
                    .await?;
            }
            Ok::<(), sqlx::Error>(())
        }
        .await;
        let _ = connection.close().await;
        dropped.map_err(|error| {
            failed(format!(
                "dropping the scratch database {name} on {}: {}",
                self.describe(),
                describe(&error)
            ))
        })
    }
}
