//! The scratch server of `restore`-mode verifications of MySQL backups
//! (`verification.mysql_url`, a MySQL or MariaDB server the operator
//! provides): one database `cairn_verify_{id}` per verification, created
//! empty, loaded with the dump, counted, and dropped — by the verification
//! however it ends, or by the reaper after its worker died.
//!
//! A dump's own SQL (view and trigger bodies, routines) runs as the
//! scratch user while it loads, so that user may hold no global `ALL
//! PRIVILEGES`, `SUPER` or `FILE` (which reach the server's files): a
//! verification refuses to run with one. It needs all privileges on
//! `` `cairn\_verify\_%`.* `` and `SET USER` (to create the dump's
//! objects with their recorded definers).

use secrecy::SecretString;
use sqlx::Connection;

use cairn_core::apps::ConnectionSettings;
use cairn_core::failure::FailureCode;
use cairn_core::format::mysql::{connect, count_tables, describe};
use cairn_core::format::pg_tables::TableRows;

use crate::failure::Failure;

/// The configured MySQL scratch server.
pub(crate) struct MysqlScratch {
    settings: ConnectionSettings,
    password: Option<SecretString>,
}

fn failed(message: String) -> Failure {
    Failure::new(FailureCode::RestoreFailed, message)
}

impl MysqlScratch {
    /// The server of this worker's configuration, if it has one.
    pub(crate) fn configured(config: &cairn_core::Config) -> Option<Result<MysqlScratch, Failure>> {
        config.verification.mysql_scratch_server().map(|parsed| {
            parsed
                .map(|(settings, password)| MysqlScratch { settings, password })
                .map_err(failed)
        })
    }

    /// The server, or the failure of a verification that needs one.
    pub(crate) fn required(config: &cairn_core::Config) -> Result<MysqlScratch, Failure> {
        MysqlScratch::configured(config).unwrap_or_else(|| {
            Err(failed(
                "restore mode of a MySQL backup needs verification.mysql_url, which is not set \
                 on this worker"
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

    async fn connection(&self, database: &str) -> Result<sqlx::MySqlConnection, Failure> {
        connect(
            &self.settings_of(database),
            None,
            self.password.as_ref(),
            FailureCode::RestoreFailed,
        )
        .await
        .map_err(|error| {
            failed(format!(
                "the scratch database server (verification.mysql_url): {}",
                error.message
            ))
        })
    }

    /// Runs `sql` on the server's own database.
    async fn execute(&self, what: &str, sql: &str) -> Result<(), Failure> {
        let mut connection = self.connection(&self.settings.database).await?;
        let done = sqlx::query(sql).execute(&mut connection).await;
        let _ = connection.close().await;
        done.map(|_| ()).map_err(|error| {
            failed(format!(
                "{what} on the scratch database server {}: {}",
                self.describe(),
                describe(&error)
            ))
        })
    }

    /// Creates the empty database `name` (`cairn_verify_` and 32 hex
    /// digits: nothing to quote), refusing a user with dangerous global
    /// privileges.
    pub(crate) async fn create(&self, name: &str) -> Result<(), Failure> {
        let mut connection = self.connection(&self.settings.database).await?;
        let grants: Result<Vec<String>, sqlx::Error> =
            sqlx::query_scalar("SHOW GRANTS FOR CURRENT_USER()")
                .fetch_all(&mut connection)
                .await;
        let _ = connection.close().await;
        let grants = grants.map_err(|error| {
            failed(format!(
                "reading the scratch user's grants on {}: {}",
                self.describe(),
                describe(&error)
            ))
        })?;
        if let Some(privilege) = grants.iter().find_map(|grant| dangerous(grant)) {
            return Err(failed(format!(
                "verification.mysql_url logs in to {} as {:?}, which holds {privilege} on *.*; a \
                 dump's own SQL runs as this user while it loads, so it must hold only ALL on \
                 `cairn\\_verify\\_%`.* and SET USER (GRANT ALL ON `cairn\\_verify\\_%`.* TO …; \
                 GRANT SET USER ON *.* TO …)",
                self.describe(),
                self.settings.username
            )));
        }
        self.execute(
            &format!("creating the scratch database {name}"),
            &format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4"),
        )
        .await
    }

    /// Every base table of `name` with its rows.
    pub(crate) async fn count(&self, name: &str) -> Result<Vec<TableRows>, Failure> {
        let mut connection = self.connection(name).await?;
        let counted = count_tables(&mut connection).await;
        let _ = connection.close().await;
        counted.map_err(|error| {
            failed(format!(
                "counting the rows loaded into {name}: {}",
                describe(&error)
            ))
        })
    }

    /// Drops `name` if it exists.
    pub(crate) async fn drop_database(&self, name: &str) -> Result<(), Failure> {
        self.execute(
            &format!("dropping the scratch database {name}"),
            &format!("DROP DATABASE IF EXISTS `{name}`"),
        )
        .await
    }
}

/// The first privilege of a `SHOW GRANTS` line on `*.*` that reaches past
/// the scratch databases (`ALL PRIVILEGES`, `SUPER`, `FILE`).
fn dangerous(grant: &str) -> Option<&'static str> {
    let privileges = grant.strip_prefix("GRANT ")?.split_once(" ON *.* ")?.0;
    privileges.split(',').map(str::trim).find_map(|p| {
        ["ALL PRIVILEGES", "SUPER", "FILE"]
            .into_iter()
            .find(|wanted| p.eq_ignore_ascii_case(wanted))
    })
}

#[cfg(test)]
mod tests {
    use super::dangerous;

    #[test]
    fn global_privileges_past_the_scratch_databases_are_found() {
        assert_eq!(
            dangerous("GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION"),
            Some("ALL PRIVILEGES")
        );
        assert_eq!(
            dangerous("GRANT SELECT, FILE ON *.* TO `u`@`%`"),
            Some("FILE")
        );
        assert_eq!(dangerous("GRANT SET USER ON *.* TO `cv`@`127.0.0.1`"), None);
        assert_eq!(
            dangerous("GRANT ALL PRIVILEGES ON `cairn\\_verify\\_%`.* TO `cv`@`127.0.0.1`"),
            None
        );
    }
}
