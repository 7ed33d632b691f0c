//! PostgreSQL dumps, streamed: `pg_dump --format=custom` → optional age
//! encryption → SHA-256 → a stream of chunks for a storage target's `put`.
//!
//! `pg_dump` runs without a shell. Its connection is one `--dbname`
//! argument holding a libpq connection string that Cairn builds with every
//! value quoted, so a database name that starts with `-` cannot become an
//! option and one holding `=` cannot become a connection string of its own.
//! The password goes through `PGPASSWORD`, never argv, and the worker's own
//! `PG*` variables are removed so they cannot redirect the dump. The dump is
//! compressed by `pg_dump` itself (custom format), so no second compressor
//! runs; `child` streams its output to the target.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;

use secrecy::{ExposeSecret, SecretString};
use tokio::sync::oneshot;

use crate::apps::ConnectionSettings;
use crate::failure::FailureCode;
use crate::format::age::Recipients;
use crate::format::child::{self, Program};
use crate::format::tar::{ArchiveError, Compression};
use crate::netpolicy::AddressPolicy;
use crate::storage::ByteStream;

/// How long pg_dump waits for a table lock before it fails, rather than
/// hanging behind a long transaction (milliseconds).
const LOCK_WAIT_TIMEOUT_MS: u32 = 300_000;

/// Settings of one dump.
#[derive(Clone, Debug)]
pub struct DumpOptions {
    /// The `pg_dump` program.
    pub program: PathBuf,
    pub settings: ConnectionSettings,
    /// The server's address, resolved once and checked by the address
    /// policy ([`resolve_host`]): libpq's `hostaddr`, so DNS cannot change
    /// between the check and the connection.
    pub hostaddr: IpAddr,
    pub password: SecretString,
    pub encryption: Option<Recipients>,
    /// A snapshot exported by Cairn's own transaction
    /// (`pg_tables::DumpSnapshot`), so pg_dump dumps the rows Cairn counts.
    pub snapshot: Option<String>,
}

pub use crate::format::child::DumpSummary;

/// Quotes a value for a libpq connection string.
fn conninfo_value(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The `PG*` variables of this process: removed from the environment of
/// every PostgreSQL client Cairn runs, so none can redirect it to another
/// server or database.
pub fn libpq_variables() -> Vec<std::ffi::OsString> {
    std::env::vars_os()
        .map(|(name, _)| name)
        .filter(|name| name.to_string_lossy().starts_with("PG"))
        .collect()
}

/// The connection string of a dump or restore (no password: that goes in
/// the environment). With `hostaddr`, libpq connects to that address and
/// uses `host` only for names (TLS, `.pgpass`), so no second DNS lookup
/// happens.
pub fn conninfo(settings: &ConnectionSettings, hostaddr: Option<IpAddr>) -> String {
    let mut conninfo = format!(
        "host={} port={} user={} dbname={} connect_timeout=15 application_name=cairn",
        conninfo_value(&settings.host),
        settings.port,
        conninfo_value(&settings.username),
        conninfo_value(&settings.database),
    );
    if let Some(address) = hostaddr {
        conninfo.push_str(&format!(
            " hostaddr={}",
            conninfo_value(&address.to_string())
        ));
    }
    conninfo
}

/// Resolves a PostgreSQL volume's host once and checks the address with
/// the outbound address policy, before any connection: a refused address
/// fails `postgres_address_refused` without a packet sent, so the answer
/// never tells whether something listens there.
pub async fn resolve_host(
    policy: &AddressPolicy,
    settings: &ConnectionSettings,
) -> Result<IpAddr, ArchiveError> {
    resolve_database_host(
        policy,
        settings,
        "PostgreSQL",
        FailureCode::PostgresAddressRefused,
        FailureCode::PostgresConnectionFailed,
    )
    .await
}

/// Resolves a database volume's host once and checks it with the address
/// policy: `refused` when the policy refuses it, `failed` when it does not
/// resolve. `engine` names the server in messages.
pub async fn resolve_database_host(
    policy: &AddressPolicy,
    settings: &ConnectionSettings,
    engine: &str,
    refused: FailureCode,
    failed: FailureCode,
) -> Result<IpAddr, ArchiveError> {
    let refuse = |reason: String| {
        ArchiveError::new(refused, format!("the {engine} host is refused: {reason}"))
    };
    let bare = settings.host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        policy.check(ip).map_err(refuse)?;
        return Ok(ip);
    }
    match policy.resolve(bare, settings.port).await {
        Ok(addresses) => addresses.first().map(|a| a.ip()).ok_or_else(|| {
            ArchiveError::new(failed, format!("{bare} does not resolve to any address"))
        }),
        Err(reason) if reason.contains(" resolves to ") => Err(refuse(reason)),
        Err(reason) => Err(ArchiveError::new(failed, reason)),
    }
}

/// The major version of a `pg_dump --version` line
/// (`pg_dump (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)` → 15).
pub fn pg_dump_major(version_line: &str) -> Option<u32> {
    let version = version_line.split_whitespace().nth(2)?;
    version.split(['.', 'b', 'r']).next()?.parse().ok()
}

/// `pg_dump --version`: its full line and major version.
pub async fn pg_dump_version(program: &std::path::Path) -> Result<(String, u32), ArchiveError> {
    let line = child::version_line(program, "pg_dump", FailureCode::PgDumpMissing).await?;
    let major = pg_dump_major(&line).ok_or_else(|| {
        ArchiveError::new(
            FailureCode::PgDumpMissing,
            format!("{} does not report a pg_dump version", program.display()),
        )
    })?;
    Ok((line, major))
}

/// Connects to the volume's server and returns the connection with the
/// server's version (`server_version`, and the major version from
/// `server_version_num`).
pub async fn server_version(
    settings: &ConnectionSettings,
    hostaddr: IpAddr,
    password: &SecretString,
) -> Result<(sea_orm::sqlx::PgConnection, String, u32), ArchiveError> {
    use crate::format::pg_tables::{connect, describe};
    let mut connection = connect(
        settings,
        Some(hostaddr),
        Some(password),
        FailureCode::PostgresConnectionFailed,
    )
    .await?;
    let (version, number): (String, String) = sea_orm::sqlx::query_as(
        "SELECT current_setting('server_version'), current_setting('server_version_num')",
    )
    .fetch_one(&mut connection)
    .await
    .map_err(|error| {
        ArchiveError::new(
            FailureCode::PostgresConnectionFailed,
            format!(
                "PostgreSQL at {}:{} did not report its version: {}",
                settings.host,
                settings.port,
                describe(&error)
            ),
        )
    })?;
    let major = number.parse::<u32>().map(|n| n / 10_000).unwrap_or(0);
    Ok((connection, version, major))
}

/// Runs `pg_dump`. The stream yields the stored bytes; the receiver gets
/// the summary (or the failure) once the stream has ended.
pub fn dump_stream(options: DumpOptions) -> (ByteStream, oneshot::Receiver<child::Outcome<()>>) {
    let mut command = Command::new(&options.program);
    command
        .arg("--format=custom")
        .arg("--no-password")
        .arg(format!("--lock-wait-timeout={LOCK_WAIT_TIMEOUT_MS}"))
        .args(
            options
                .snapshot
                .iter()
                .map(|name| format!("--snapshot={name}")),
        )
        .arg(format!(
            "--dbname={}",
            conninfo(&options.settings, Some(options.hostaddr))
        ));
    for name in libpq_variables() {
        command.env_remove(name);
    }
    command.env("PGPASSWORD", options.password.expose_secret());
    child::stream(
        Program {
            command,
            name: "pg_dump",
            missing: FailureCode::PgDumpMissing,
            failed: FailureCode::PgDumpFailed,
        },
        Compression::None,
        options.encryption,
        (),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_strings_quote_every_value() {
        let settings = ConnectionSettings {
            host: "db.internal".into(),
            port: 5433,
            database: "-x dbname=evil host='other'".into(),
            username: "o'brien\\".into(),
        };
        assert_eq!(
            conninfo(&settings, None),
            "host='db.internal' port=5433 user='o\\'brien\\\\' \
             dbname='-x dbname=evil host=\\'other\\'' connect_timeout=15 application_name=cairn"
        );
        assert!(conninfo(&settings, Some("10.0.0.7".parse().unwrap()))
            .ends_with(" hostaddr='10.0.0.7'"));
    }

    #[tokio::test]
    async fn refused_hosts_are_refused_before_connecting() {
        let policy = AddressPolicy {
            allow_private: false,
        };
        for host in [
            "169.254.169.254",
            "[::ffff:169.254.169.254]",
            "127.0.0.1",
            "localhost",
        ] {
            let settings = ConnectionSettings {
                host: host.into(),
                port: 5432,
                database: "d".into(),
                username: "u".into(),
            };
            let refused = resolve_host(&policy, &settings).await.unwrap_err();
            assert_eq!(refused.code, FailureCode::PostgresAddressRefused, "{host}");
        }
    }

    #[test]
    fn pg_dump_versions() {
        assert_eq!(
            pg_dump_major("pg_dump (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)"),
            Some(15)
        );
        assert_eq!(pg_dump_major("pg_dump (PostgreSQL) 17beta1"), Some(17));
        assert_eq!(pg_dump_major("pg_dump (PostgreSQL) 9.6.24"), Some(9));
        assert_eq!(pg_dump_major("something else"), None);
    }
}
