//! The database: opening the pool (SQLite or PostgreSQL, from
//! `database_url`), applying migrations, and creating the embedded default's
//! private files. Errors never carry the URL or its password.

use std::time::Duration;

use anyhow::Context;
use cairn_migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend};

use crate::Config;

/// Creates `path` and its missing parents with mode 0700 (directories
/// that exist keep theirs).
pub fn create_private_dir(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// Creates an empty file with mode 0600 unless it exists.
fn create_private_file(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(error),
    }
}

/// Opens the database pool.
///
/// SQLite (the embedded default) gets one connection: every statement and
/// transaction runs in turn, so concurrent requests never meet "database is
/// locked" errors, and the file is in WAL mode. PostgreSQL gets a pool.
pub async fn connect(config: &Config) -> anyhow::Result<DatabaseConnection> {
    let url = config.database_url();
    let parsed = url::Url::parse(&url).map_err(|e| {
        anyhow::anyhow!("invalid configuration: key `database_url`: not a URL ({e})")
    })?;
    if !matches!(parsed.scheme(), "sqlite" | "postgres" | "postgresql") {
        anyhow::bail!(
            "invalid configuration: key `database_url`: unsupported scheme `{}` (use sqlite:// or postgres://)",
            parsed.scheme()
        );
    }
    let is_sqlite = parsed.scheme() == "sqlite";
    if let Some(path) = url.strip_prefix("sqlite://") {
        let path = std::path::Path::new(path.split('?').next().unwrap_or(path));
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                create_private_dir(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
        }
        // The database holds every organization's settings and sealed
        // secrets: created readable by its owner only (SQLite gives its
        // -wal and -shm files the same mode).
        create_private_file(path).with_context(|| format!("creating {}", path.display()))?;
    }
    if !is_sqlite {
        return open_postgres(&url, &parsed, 10).await;
    }
    let mut options = pool_options(&url, 1);
    // A new SQLite file is created, whether or not the URL says `mode=rwc`.
    options.map_sqlx_sqlite_opts(|sqlite| sqlite.create_if_missing(true));
    let db = open(options, "connect to the database", &url, &parsed).await?;
    db.execute_unprepared("PRAGMA journal_mode=WAL; PRAGMA busy_timeout=10000;")
        .await?;
    Ok(db)
}

/// A pooled PostgreSQL connection idle for this long or longer is tested
/// (a round trip) before a statement uses it: a server restart, a proxy
/// or a firewall may have dropped it meanwhile. One in steady use is not:
/// the pool tests every connection as it comes back after each use
/// already, and testing it again on the way out would cost every
/// statement a second round trip. The price: when the server restarts
/// under load, statements on connections used within the last second
/// fail once (each such connection is then dropped), as the statements
/// in flight at that moment do anyway.
pub const POSTGRES_IDLE_TEST_AFTER: Duration = Duration::from_secs(1);

/// How long that test waits for the server's answer.
const POSTGRES_IDLE_TEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The PostgreSQL pool: `max` connections, bounded waits, no statement
/// logging (it would print bound values), and connections tested before
/// use only after [`POSTGRES_IDLE_TEST_AFTER`] idle.
async fn open_postgres(
    url: &str,
    parsed: &url::Url,
    max: u32,
) -> anyhow::Result<DatabaseConnection> {
    use sea_orm::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    use sea_orm::sqlx::{ConnectOptions as _, Connection as _};
    let refused = |e: sea_orm::sqlx::Error| {
        anyhow::anyhow!(
            "cannot connect to the database: {}",
            redact(&e.to_string(), url, parsed)
        )
    };
    let options = url
        .parse::<PgConnectOptions>()
        .map_err(refused)?
        .disable_statement_logging();
    let pool = PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(30))
        .test_before_acquire(false)
        .before_acquire(|connection, meta| {
            Box::pin(async move {
                // A connection that fails the test, or does not answer
                // within the bound (a firewall may drop packets without a
                // word), is closed; the pool opens another for the
                // statement.
                if meta.idle_for < POSTGRES_IDLE_TEST_AFTER {
                    return Ok(true);
                }
                let test = tokio::time::timeout(POSTGRES_IDLE_TEST_TIMEOUT, connection.ping());
                Ok(matches!(test.await, Ok(Ok(()))))
            })
        })
        .connect_with(options)
        .await
        .map_err(refused)?;
    Ok(sea_orm::SqlxPostgresConnector::from_sqlx_postgres_pool(
        pool,
    ))
}

/// Process-wide SQLite settings, for the binary to apply before the
/// first connection opens (SQLite accepts them only before it
/// initializes; a later call changes nothing). Memory statistics are
/// turned off: kept, they make every allocation of every connection take
/// one global mutex, which the readers' threads then queue on.
///
/// # Safety
///
/// No other thread may call into SQLite while this runs: call it first
/// thing in `main`, before anything opens a database.
pub unsafe fn configure_sqlite() {
    // SAFETY: the caller guarantees no concurrent SQLite call; the
    // option takes one int.
    unsafe {
        rusqlite::ffi::sqlite3_config(
            rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS,
            0 as std::os::raw::c_int,
        );
    }
}

/// Read-only SQLite connections that run beside the writer.
pub const SQLITE_READERS: u32 = 4;

/// The pool for reads that need no transaction (the API's lists and
/// pages). On SQLite, [`SQLITE_READERS`] read-only connections: in WAL
/// mode they read while the single writer writes, each statement seeing
/// the last commit, and they cannot take a write lock, so they never meet
/// "database is locked" with the writer. On PostgreSQL, `writer` itself.
pub async fn connect_reader(
    config: &Config,
    writer: &DatabaseConnection,
) -> anyhow::Result<DatabaseConnection> {
    if writer.get_database_backend() != DbBackend::Sqlite {
        return Ok(writer.clone());
    }
    let url = config.database_url();
    let parsed = url::Url::parse(&url)?;
    let mut options = pool_options(&url, SQLITE_READERS);
    options.map_sqlx_sqlite_opts(|sqlite| {
        sqlite
            .read_only(true)
            .create_if_missing(false)
            .busy_timeout(Duration::from_secs(10))
            // Pages come from the mapped file rather than a read()
            // each, and each connection keeps 16 MiB of them.
            .pragma("mmap_size", "268435456")
            .pragma("cache_size", "-16384")
            // A page (limit + 1 rows) passes to the request without
            // the connection's thread waiting for it to be read.
            .row_buffer_size(512)
    });
    open(
        options,
        "open read connections to the database",
        &url,
        &parsed,
    )
    .await
}

/// The settings both SQLite pools share: `max` connections, bounded
/// waits, no statement logging (it would print bound values), and no test
/// of a connection before each use (a connection to a local file does not
/// go stale; the test is a round trip to the connection's thread).
fn pool_options(url: &str, max: u32) -> ConnectOptions {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(max)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(30))
        .test_before_acquire(false)
        .sqlx_logging(false);
    options
}

/// Opens a pool; the error says what failed without the URL or password.
async fn open(
    options: ConnectOptions,
    what: &str,
    url: &str,
    parsed: &url::Url,
) -> anyhow::Result<DatabaseConnection> {
    Database::connect(options)
        .await
        .map_err(|e| anyhow::anyhow!("cannot {what}: {}", redact(&e.to_string(), url, parsed)))
}

/// Removes the password (and the whole URL) from a message about the
/// database, whatever the driver chose to put in it.
fn redact(message: &str, original: &str, url: &url::Url) -> String {
    let mut redacted = message
        .replace(original, "<database_url>")
        .replace(url.as_str(), "<database_url>");
    if let Some(password) = url.password().filter(|p| !p.is_empty()) {
        redacted = redacted.replace(password, "<password>");
        let decoded = percent_encoding::percent_decode_str(password).decode_utf8_lossy();
        redacted = redacted.replace(decoded.as_ref(), "<password>");
    }
    redacted
}

/// Applies every pending migration.
pub async fn migrate(db: &DatabaseConnection) -> anyhow::Result<()> {
    Migrator::up(db, None)
        .await
        .context("applying database migrations")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_errors_lose_the_password() {
        let original = "postgres://cairn:p%40ss%23word@db:5432/cairn";
        let url = url::Url::parse(original).unwrap();
        let message = format!("error with {original}: auth failed for p@ss#word and p%40ss%23word");
        let redacted = redact(&message, original, &url);
        assert!(!redacted.contains("p@ss#word"), "{redacted}");
        assert!(!redacted.contains("p%40ss%23word"), "{redacted}");
        assert!(redacted.contains("<database_url>"), "{redacted}");
    }

    #[tokio::test]
    async fn unparseable_database_urls_are_named_without_their_value() {
        let mut config = Config::with_data_dir("/nonexistent");
        config.database_url = Some(secrecy::SecretString::from(
            "postgres://u:pa ss#@/x".to_owned(),
        ));
        let error = connect(&config).await.unwrap_err().to_string();
        assert!(error.contains("database_url"), "{error}");
        assert!(!error.contains("pa ss"), "{error}");
        config.database_url = Some(secrecy::SecretString::from(
            "mysql://u:hunter2@db/x".to_owned(),
        ));
        let error = connect(&config).await.unwrap_err().to_string();
        assert!(error.contains("mysql"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }
}
