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
//! runs. A blocking thread reads `pg_dump`'s output into 1 MiB chunks on a
//! bounded queue: memory stays bounded and nothing is written to disk.

use std::io::{self, Read};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use bytes::Bytes;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::apps::PostgresSettings;
use crate::failure::FailureCode;
use crate::format::age::Recipients;
use crate::format::tar::{ArchiveError, ChunkSink, FailUnlessDone, Sealed};
use crate::netpolicy::AddressPolicy;
use crate::storage::{received, ByteStream};

/// How much of `pg_dump`'s stderr a failure message keeps.
const STDERR_KEPT: usize = 4 * 1024;
/// How long pg_dump waits for a table lock before it fails, rather than
/// hanging behind a long transaction (milliseconds).
const LOCK_WAIT_TIMEOUT_MS: u32 = 300_000;

/// The running `pg_dump`, so that dropping its stream kills it.
#[derive(Default)]
struct Process {
    pid: Option<u32>,
    /// Set (under the lock) before the child is reaped, so that a kill
    /// never reaches a reused pid.
    finished: bool,
}

/// Kills `pg_dump` when the stream is dropped before the dump ended (the
/// upload was cancelled); otherwise it would run until its next write.
struct KillOnDrop(std::sync::Arc<std::sync::Mutex<Process>>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(process) = self.0.lock() {
            if let (Some(pid), false) = (process.pid, process.finished) {
                // SAFETY: kill(2) with a pid of our own child that has not
                // been reaped (`finished` is set before it is) and a valid
                // signal number; it touches no memory.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
            }
        }
    }
}

/// Settings of one dump.
#[derive(Clone, Debug)]
pub struct DumpOptions {
    /// The `pg_dump` program.
    pub program: PathBuf,
    pub settings: PostgresSettings,
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

/// What a dump holds, known when it is complete.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DumpSummary {
    /// Bytes `pg_dump` wrote.
    pub dump_bytes: u64,
    /// Bytes of the archive as stored.
    pub stored_bytes: u64,
    /// SHA-256 of the archive as stored, hex.
    pub sha256: String,
}

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
pub fn conninfo(settings: &PostgresSettings, hostaddr: Option<IpAddr>) -> String {
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
    settings: &PostgresSettings,
) -> Result<IpAddr, ArchiveError> {
    let refused = |reason: String| {
        ArchiveError::new(
            FailureCode::PostgresAddressRefused,
            format!("the PostgreSQL host is refused: {reason}"),
        )
    };
    let bare = settings.host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        policy.check(ip).map_err(refused)?;
        return Ok(ip);
    }
    match policy.resolve(bare, settings.port).await {
        Ok(addresses) => addresses.first().map(|a| a.ip()).ok_or_else(|| {
            ArchiveError::new(
                FailureCode::PostgresConnectionFailed,
                format!("{bare} does not resolve to any address"),
            )
        }),
        Err(reason) if reason.contains(" resolves to ") => Err(refused(reason)),
        Err(reason) => Err(ArchiveError::new(
            FailureCode::PostgresConnectionFailed,
            reason,
        )),
    }
}

/// The major version of a `pg_dump --version` line
/// (`pg_dump (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)` → 15).
pub fn pg_dump_major(version_line: &str) -> Option<u32> {
    let version = version_line.split_whitespace().nth(2)?;
    version.split(['.', 'b', 'r']).next()?.parse().ok()
}

/// `pg_dump --version`: its full line and major version.
pub async fn pg_dump_version(program: &PathBuf) -> Result<(String, u32), ArchiveError> {
    let output = tokio::process::Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| {
            ArchiveError::new(
                FailureCode::PgDumpMissing,
                format!("pg_dump ({}) cannot be run: {e}", program.display()),
            )
        })?;
    let line = String::from_utf8_lossy(&output.stdout).trim().to_owned();
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
    settings: &PostgresSettings,
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
pub fn dump_stream(
    options: DumpOptions,
) -> (
    ByteStream,
    oneshot::Receiver<Result<DumpSummary, ArchiveError>>,
) {
    let (sender, receiver) = mpsc::channel::<io::Result<Bytes>>(crate::format::tar::QUEUE);
    let (summary_sender, summary_receiver) = oneshot::channel();
    let process = std::sync::Arc::new(std::sync::Mutex::new(Process::default()));
    let kill_on_drop = KillOnDrop(process.clone());
    tokio::task::spawn_blocking(move || {
        let mut guard = FailUnlessDone::new(sender.clone());
        let outcome = dump(&options, ChunkSink::new(sender), &process);
        if let (Err(error), Some(sender)) = (&outcome, guard.disarm()) {
            let _ = sender.blocking_send(Err(io::Error::other(error.message.clone())));
        }
        let _ = summary_sender.send(outcome);
    });
    let stream: ByteStream = Box::pin(futures::StreamExt::map(received(receiver), move |chunk| {
        let _held = &kill_on_drop;
        chunk
    }));
    (stream, summary_receiver)
}

/// Marks the child as about to be reaped.
fn finishing(process: &std::sync::Mutex<Process>) {
    if let Ok(mut process) = process.lock() {
        process.finished = true;
    }
}

fn dump(
    options: &DumpOptions,
    sink: ChunkSink,
    process: &std::sync::Mutex<Process>,
) -> Result<DumpSummary, ArchiveError> {
    let upload_stopped = |error: io::Error| {
        ArchiveError::new(
            FailureCode::UploadFailed,
            format!("the upload stopped: {error}"),
        )
    };
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
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for name in libpq_variables() {
        command.env_remove(name);
    }
    command.env("PGPASSWORD", options.password.expose_secret());
    let mut child = command.spawn().map_err(|e| {
        ArchiveError::new(
            FailureCode::PgDumpMissing,
            format!("pg_dump ({}) cannot be run: {e}", options.program.display()),
        )
    })?;
    if let Ok(mut process) = process.lock() {
        process.pid = Some(child.id());
    }
    let mut stdout = child.stdout.take().ok_or_else(|| {
        ArchiveError::new(
            FailureCode::PgDumpFailed,
            "pg_dump's output is not readable",
        )
    })?;
    let mut stderr = child.stderr.take().ok_or_else(|| {
        ArchiveError::new(
            FailureCode::PgDumpFailed,
            "pg_dump's errors are not readable",
        )
    })?;
    // stderr is drained on its own thread so that a chatty pg_dump never
    // blocks on a full pipe while stdout is read.
    let errors = std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buffer = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buffer) {
            if n == 0 {
                break;
            }
            kept.extend_from_slice(&buffer[..n]);
            if kept.len() > STDERR_KEPT {
                kept.drain(..kept.len() - STDERR_KEPT);
            }
        }
        String::from_utf8_lossy(&kept).trim().to_owned()
    });

    let mut sealed = match Sealed::new(options.encryption.as_ref(), sink) {
        Ok(sealed) => sealed,
        Err(error) => {
            finishing(process);
            let _ = child.kill();
            let _ = child.wait();
            return Err(upload_stopped(error));
        }
    };
    let mut dump_bytes = 0u64;
    let mut buffer = vec![0u8; 256 * 1024];
    let copied: io::Result<()> = loop {
        match stdout.read(&mut buffer) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                dump_bytes += n as u64;
                if let Err(error) = io::Write::write_all(&mut sealed, &buffer[..n]) {
                    break Err(error);
                }
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => break Err(error),
        }
    };
    finishing(process);
    if let Err(error) = copied {
        let _ = child.kill();
        let _ = child.wait();
        return Err(upload_stopped(error));
    }
    let status = child.wait().map_err(|e| {
        ArchiveError::new(
            FailureCode::PgDumpFailed,
            format!("waiting for pg_dump: {e}"),
        )
    })?;
    let stderr_text = errors.join().unwrap_or_default();
    if !status.success() {
        let detail = if stderr_text.is_empty() {
            "no message".to_owned()
        } else {
            stderr_text
        };
        return Err(ArchiveError::new(
            FailureCode::PgDumpFailed,
            format!("pg_dump failed ({status}): {detail}"),
        ));
    }
    let sink = sealed.finish().map_err(upload_stopped)?;
    let (stored_bytes, sha256) = sink.close().map_err(upload_stopped)?;
    Ok(DumpSummary {
        dump_bytes,
        stored_bytes,
        sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_strings_quote_every_value() {
        let settings = PostgresSettings {
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
            let settings = PostgresSettings {
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
