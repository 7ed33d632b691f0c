//! Tables and their row counts: recorded in a dump's manifest when it is
//! written, compared by a `restore`-mode verification with those of the
//! scratch database the dump was restored into.
//!
//! The backup counts in the dump's own snapshot: Cairn opens a
//! `REPEATABLE READ READ ONLY` transaction, exports its snapshot
//! (`pg_export_snapshot()`), hands it to `pg_dump --snapshot`, and counts
//! every table in that transaction while the dump runs. Dump and counts
//! therefore see the same rows, even while the application writes. The
//! transaction stays open until the dump has ended, so pg_dump can always
//! import the snapshot.
//!
//! The tables counted are those whose rows pg_dump dumps: ordinary tables
//! and partitions (`relkind = 'r'`) outside the system schemas, and not
//! members of an extension.

use std::net::IpAddr;
use std::time::Duration;

use sea_orm::sqlx::{self, Connection, PgConnection};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::apps::ConnectionSettings;
use crate::failure::FailureCode;
use crate::format::tar::ArchiveError;

/// More tables than this are not counted (the manifest would grow past
/// what a record should hold); the dump is still made.
pub const MAX_COUNTED_TABLES: usize = 10_000;

/// How long a count waits for a table lock before it fails, like pg_dump.
const LOCK_TIMEOUT: &str = "300s";

/// The tables whose rows pg_dump dumps, each named `schema.table` with the
/// parts quoted as SQL identifiers where they need it (so the name can be
/// put into a query as it is).
const TABLES: &str = "\
SELECT format('%I.%I', n.nspname, c.relname) \
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
WHERE c.relkind = 'r' \
  AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%' \
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d \
                  WHERE d.classid = 'pg_catalog.pg_class'::regclass \
                    AND d.objid = c.oid AND d.deptype = 'e') \
ORDER BY 1";

/// One table and its rows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TableRows {
    /// `schema.table`, quoted as SQL identifiers where needed.
    pub name: String,
    pub rows: u64,
}

/// A connection to a PostgreSQL server (`hostaddr`: the address the
/// policy allowed, connected to as it is). Fails with `code` and a message
/// naming the server, never the password.
pub async fn connect(
    settings: &ConnectionSettings,
    hostaddr: Option<IpAddr>,
    password: Option<&SecretString>,
    code: FailureCode,
) -> Result<PgConnection, ArchiveError> {
    let host = hostaddr
        .map(|a| a.to_string())
        .unwrap_or_else(|| settings.host.clone());
    let mut options = sqlx::postgres::PgConnectOptions::new()
        .host(&host)
        .port(settings.port)
        .username(&settings.username)
        .database(&settings.database)
        .application_name("cairn");
    if let Some(password) = password {
        options = options.password(password.expose_secret());
    }
    let connected = tokio::time::timeout(
        Duration::from_secs(15),
        PgConnection::connect_with(&options),
    )
    .await
    .map_err(|_| {
        ArchiveError::new(
            code,
            format!(
                "PostgreSQL at {}:{} did not answer within 15 s",
                settings.host, settings.port
            ),
        )
    })?;
    connected.map_err(|error| {
        ArchiveError::new(
            code,
            format!(
                "cannot connect to PostgreSQL at {}:{} (database {:?}, user {:?}): {}",
                settings.host,
                settings.port,
                settings.database,
                settings.username,
                describe(&error)
            ),
        )
    })
}

/// A database error's message without the connection options.
pub fn describe(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => db.message().to_owned(),
        sqlx::Error::Io(io) => io.to_string(),
        sqlx::Error::Tls(tls) => format!("TLS: {tls}"),
        other => other.to_string(),
    }
}

/// Every table pg_dump would dump, with its rows, counted on `connection`
/// (in its current transaction, if one is open). `None` when there are
/// more than [`MAX_COUNTED_TABLES`].
pub async fn count_tables(
    connection: &mut PgConnection,
) -> Result<Option<Vec<TableRows>>, sqlx::Error> {
    let names: Vec<String> = sqlx::query_scalar(TABLES)
        .fetch_all(&mut *connection)
        .await?;
    if names.len() > MAX_COUNTED_TABLES {
        return Ok(None);
    }
    let mut tables = Vec::with_capacity(names.len());
    for name in names {
        // `name` is the server's own quoting of the identifiers (`%I`).
        let sql = format!("SELECT count(*) FROM {name}");
        let rows: i64 = sqlx::query_scalar(&sql).fetch_one(&mut *connection).await?;
        tables.push(TableRows {
            name,
            rows: rows.max(0) as u64,
        });
    }
    Ok(Some(tables))
}

/// A read-only transaction whose snapshot pg_dump imports, so the rows it
/// counts are the rows the dump holds.
pub struct DumpSnapshot {
    connection: PgConnection,
    /// The exported snapshot's name (`pg_dump --snapshot=…`).
    pub name: String,
}

impl DumpSnapshot {
    /// Opens the transaction on `connection` and exports its snapshot.
    pub async fn export(mut connection: PgConnection) -> Result<DumpSnapshot, sqlx::Error> {
        sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut connection)
            .await?;
        // Counts, like pg_dump, must see every row or fail: with row
        // security on, a policy would silently hide rows.
        sqlx::query("SET LOCAL row_security = off")
            .execute(&mut connection)
            .await?;
        let lock_timeout = format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'");
        sqlx::query(&lock_timeout).execute(&mut connection).await?;
        let name: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
            .fetch_one(&mut connection)
            .await?;
        Ok(DumpSnapshot { connection, name })
    }

    /// Counts every table's rows in the snapshot. The counts run in a
    /// savepoint: an error (a table the role may not read) aborts only the
    /// savepoint, so the transaction — and the snapshot pg_dump may not
    /// have imported yet — lives on, and pg_dump reports its own error.
    pub async fn count(&mut self) -> Result<Option<Vec<TableRows>>, sqlx::Error> {
        sqlx::query("SAVEPOINT cairn_count")
            .execute(&mut self.connection)
            .await?;
        match count_tables(&mut self.connection).await {
            Ok(tables) => {
                sqlx::query("RELEASE SAVEPOINT cairn_count")
                    .execute(&mut self.connection)
                    .await?;
                Ok(tables)
            }
            Err(error) => {
                let _ = sqlx::query("ROLLBACK TO SAVEPOINT cairn_count")
                    .execute(&mut self.connection)
                    .await;
                Err(error)
            }
        }
    }

    /// Ends the transaction, once pg_dump has ended (it imported the
    /// snapshot when it started).
    pub async fn close(mut self) {
        let _ = sqlx::query("ROLLBACK").execute(&mut self.connection).await;
        let _ = self.connection.close().await;
    }
}
