//! MySQL and MariaDB volumes: `mariadb-dump` (or `mysqldump`) of one
//! database, streamed through the job's compression and encryption
//! (`….sql.zst[.age]`), its rows counted from the dump itself as it passes,
//! and loaded back with the `mariadb` (or `mysql`) client.
//!
//! The clients run without a shell and read the connection from an option
//! file (`--defaults-file`, so no other option file applies) written with
//! mode 0600 in a private temporary directory and removed when they end:
//! the password is never in argv nor in the environment, and the worker's
//! own `MYSQL*`/`MARIADB*` variables are removed so none can redirect them.
//! The host is the address the policy allowed, so DNS cannot change between
//! the check and the connection. Cairn's own queries (versions, row counts,
//! scratch databases) go through sqlx with the same settings.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use secrecy::{ExposeSecret, SecretString};
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::{ConnectOptions, Connection, Row};
use tokio::sync::oneshot;

use crate::apps::ConnectionSettings;
use crate::failure::FailureCode;
use crate::format::age::Recipients;
use crate::format::child::{self, Observer, Program};
use crate::format::pg_tables::TableRows;
use crate::format::tar::{ArchiveError, Compression};
use crate::netpolicy::AddressPolicy;
use crate::storage::{ByteStream, Cancellation};

/// The port of a `mysql` volume that names none.
pub const DEFAULT_PORT: u16 = 3306;

/// How long a connection may take to open (seconds).
const CONNECT_TIMEOUT_SECS: u64 = 15;

/// Resolves a MySQL volume's host once and checks it with the address
/// policy (`mysql_address_refused`) before anything connects.
pub async fn resolve_host(
    policy: &AddressPolicy,
    settings: &ConnectionSettings,
) -> Result<IpAddr, ArchiveError> {
    crate::format::pg_dump::resolve_database_host(
        policy,
        settings,
        "MySQL",
        FailureCode::MysqlAddressRefused,
        FailureCode::MysqlConnectionFailed,
    )
    .await
}

/// Whether a database name is one Cairn passes to the clients: 1–64 of
/// `[A-Za-z0-9_$-]`, not starting with `-` (so it can never read as an
/// option).
pub fn check_database_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$' || c == '-');
    if valid {
        Ok(())
    } else {
        Err(
            "must be 1–64 characters of A–Z, a–z, 0–9, '_', '$' and '-', not starting with '-'"
                .into(),
        )
    }
}

/// A server or client version: its family and numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub mariadb: bool,
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    /// Reads `10.11.19-MariaDB-0+deb12u1` or `8.0.36`.
    pub fn parse(text: &str) -> Option<Version> {
        let numbers: Vec<u32> = text
            .split(|c: char| !c.is_ascii_digit() && c != '.')
            .find(|s| !s.is_empty())?
            .split('.')
            .filter_map(|n| n.parse().ok())
            .collect();
        Some(Version {
            mariadb: text.contains("MariaDB"),
            major: *numbers.first()?,
            minor: *numbers.get(1)?,
            patch: numbers.get(2).copied().unwrap_or(0),
        })
    }

    /// The version of a dump client's `--version` line:
    /// `mariadb-dump  Ver 10.19 Distrib 10.11.19-MariaDB, for …`,
    /// `mariadb-dump from 11.4.2-MariaDB, client 10.19 for …`,
    /// `mysqldump  Ver 8.0.36 for Linux on x86_64 (MySQL Community Server - GPL)`.
    pub fn of_client(line: &str) -> Option<Version> {
        let after = |marker: &str| line.split_once(marker).map(|(_, rest)| rest.trim_start());
        let text = after("Distrib ")
            .or_else(|| after(" from "))
            .or_else(|| after(" Ver "))?;
        let word = text.split([' ', ',']).next()?;
        let mut version = Version::parse(word)?;
        version.mariadb = word.contains("MariaDB") || line.contains("MariaDB");
        Some(version)
    }

    fn family(&self) -> &'static str {
        if self.mariadb {
            "MariaDB"
        } else {
            "MySQL"
        }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}.{}.{}",
            self.family(),
            self.major,
            self.minor,
            self.patch
        )
    }
}

/// Whether `client` may dump a server of version `server`: of the same
/// family, it must be at least as new (major.minor). `Err` says why not;
/// `Ok(Some)` is a warning (another family: it usually works).
pub fn client_fits(client: &Version, server: &Version) -> Result<Option<String>, String> {
    if client.mariadb != server.mariadb {
        return Ok(Some(format!(
            "the dump client is {client} and the server {server}: another family's client; \
             install the server's own client on the worker if the dump fails"
        )));
    }
    if (client.major, client.minor) < (server.major, server.minor) {
        return Err(format!(
            "the worker's dump client is {client} but the server runs {server}; the client must be \
             at least as new as the server: install a newer client on the worker (or point \
             CAIRN_MYSQLDUMP at one)"
        ));
    }
    Ok(None)
}

/// `mariadb-dump --version`: its line and version.
pub async fn client_version(program: &Path) -> Result<(String, Version), ArchiveError> {
    let line =
        child::version_line(program, "the dump client", FailureCode::MysqldumpMissing).await?;
    let version = Version::of_client(&line).ok_or_else(|| {
        ArchiveError::new(
            FailureCode::MysqldumpMissing,
            format!(
                "{} does not report a mariadb-dump or mysqldump version",
                program.display()
            ),
        )
    })?;
    Ok((line, version))
}

/// The options of a connection to `hostaddr` (or to the host by name).
fn connect_options(
    settings: &ConnectionSettings,
    hostaddr: Option<IpAddr>,
    password: Option<&SecretString>,
) -> MySqlConnectOptions {
    let host = hostaddr
        .map(|a| a.to_string())
        .unwrap_or_else(|| settings.host.clone());
    let mut options = MySqlConnectOptions::new()
        .host(&host)
        .port(settings.port)
        .username(&settings.username)
        .disable_statement_logging();
    // An empty name: no default database (the scratch server's own
    // connection).
    if !settings.database.is_empty() {
        options = options.database(&settings.database);
    }
    if let Some(password) = password {
        options = options.password(password.expose_secret());
    }
    options
}

/// Why a connection failed, without the password (sqlx never prints it).
pub fn describe(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => db.message().to_owned(),
        other => other.to_string(),
    }
}

/// Whether the server refused the login (MySQL error 1045, or 1044 for a
/// database the user may not use).
fn access_denied(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db)
        if matches!(db.code().as_deref(), Some("28000") | Some("42000"))
            && (db.message().contains("Access denied")))
}

/// A connection to a MySQL server: `mysql_access_denied` when the login is
/// refused, `failed` otherwise; messages name the server, never the
/// password.
pub async fn connect(
    settings: &ConnectionSettings,
    hostaddr: Option<IpAddr>,
    password: Option<&SecretString>,
    failed: FailureCode,
) -> Result<MySqlConnection, ArchiveError> {
    let options = connect_options(settings, hostaddr, password);
    let connected = tokio::time::timeout(
        std::time::Duration::from_secs(CONNECT_TIMEOUT_SECS),
        MySqlConnection::connect_with(&options),
    )
    .await;
    let server = format!("{}:{}", settings.host, settings.port);
    match connected {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(error)) if access_denied(&error) => Err(ArchiveError::new(
            FailureCode::MysqlAccessDenied,
            format!(
                "MySQL at {server} refused user {:?} on database {:?}: {}",
                settings.username,
                settings.database,
                describe(&error)
            ),
        )),
        Ok(Err(error)) => Err(ArchiveError::new(
            failed,
            format!("MySQL at {server}: {}", describe(&error)),
        )),
        Err(_) => Err(ArchiveError::new(
            failed,
            format!("MySQL at {server} did not answer within {CONNECT_TIMEOUT_SECS} s"),
        )),
    }
}

/// The server's `VERSION()`, as it reports it and parsed.
pub async fn server_version(
    connection: &mut MySqlConnection,
) -> Result<(String, Version), ArchiveError> {
    let text: String = sqlx::query_scalar("SELECT VERSION()")
        .fetch_one(&mut *connection)
        .await
        .map_err(|error| {
            ArchiveError::new(
                FailureCode::MysqlConnectionFailed,
                format!(
                    "the server did not report its version: {}",
                    describe(&error)
                ),
            )
        })?;
    let version = Version::parse(&text).ok_or_else(|| {
        ArchiveError::new(
            FailureCode::MysqlConnectionFailed,
            format!("the server's version {text:?} is not one Cairn reads"),
        )
    })?;
    Ok((text, version))
}

/// Quotes an identifier (`` `name` ``).
pub fn quote_identifier(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Counts the rows of every base table of the connection's database.
pub async fn count_tables(connection: &mut MySqlConnection) -> Result<Vec<TableRows>, sqlx::Error> {
    let names: Vec<String> = sqlx::query(
        "SELECT CAST(TABLE_NAME AS CHAR) FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
    )
    .fetch_all(&mut *connection)
    .await?
    .iter()
    .map(|row| row.try_get::<String, _>(0))
    .collect::<Result<_, _>>()?;
    let mut tables = Vec::with_capacity(names.len());
    for name in names {
        let rows: i64 =
            sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {}", quote_identifier(&name)))
                .fetch_one(&mut *connection)
                .await?;
        tables.push(TableRows {
            name,
            rows: rows.max(0) as u64,
        });
    }
    Ok(tables)
}

/// The `[client]` option file of one client run, in a private temporary
/// directory (mode 0700, the file 0600), removed when dropped.
pub struct OptionFile {
    dir: tempfile::TempDir,
}

/// Quotes an option file's value: in double quotes, with `\` and `"`
/// escaped and control characters written as the escapes the clients read.
fn option_value(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        match c {
            '\\' => quoted.push_str("\\\\"),
            '"' => quoted.push_str("\\\""),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            '\u{8}' => quoted.push_str("\\b"),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

impl OptionFile {
    /// Writes the connection to `hostaddr` (TCP, never a local socket), or
    /// to the settings' host when none is given (the operator's scratch
    /// server).
    pub fn write(
        settings: &ConnectionSettings,
        hostaddr: Option<IpAddr>,
        password: Option<&SecretString>,
    ) -> io::Result<OptionFile> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = tempfile::Builder::new().prefix("cairn-mysql-").tempdir()?;
        let mut text = format!(
            "[client]\nprotocol=TCP\nhost={}\nport={}\nuser={}\n",
            option_value(
                &hostaddr
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| settings.host.clone())
            ),
            settings.port,
            option_value(&settings.username),
        );
        if let Some(password) = password {
            text.push_str(&format!(
                "password={}\n",
                option_value(password.expose_secret())
            ));
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.path().join("client.cnf"))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        Ok(OptionFile { dir })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("client.cnf")
    }

    /// A command for `program` reading only this file, with the worker's
    /// `MYSQL*`/`MARIADB*` variables removed.
    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command.arg(format!("--defaults-file={}", self.path().display()));
        for (name, _) in std::env::vars_os() {
            let text = name.to_string_lossy();
            if text.starts_with("MYSQL") || text.starts_with("MARIADB") {
                command.env_remove(&name);
            }
        }
        command
    }
}

/// Settings of one dump.
pub struct DumpOptions {
    /// The `mariadb-dump` (or `mysqldump`) program.
    pub program: PathBuf,
    pub settings: ConnectionSettings,
    /// The address the policy allowed.
    pub hostaddr: IpAddr,
    pub password: SecretString,
    pub compression: Compression,
    pub encryption: Option<Recipients>,
}

/// What a dump found as it passed: its tables and their rows.
pub type Dumped = child::Outcome<Vec<TableRows>>;

/// Runs the dump: `--single-transaction` (one consistent snapshot of
/// InnoDB tables, no table locks), with routines, triggers and events,
/// binary columns in hex. The stream yields the stored bytes; the receiver
/// gets the summary and the tables counted once the stream has ended.
pub fn dump_stream(
    options: DumpOptions,
) -> Result<(ByteStream, oneshot::Receiver<Dumped>), ArchiveError> {
    let file = OptionFile::write(
        &options.settings,
        Some(options.hostaddr),
        Some(&options.password),
    )
    .map_err(|e| {
        ArchiveError::new(
            FailureCode::MysqldumpFailed,
            format!("writing the dump client's option file: {e}"),
        )
    })?;
    let mut command = file.command(&options.program);
    command
        .args([
            "--single-transaction",
            "--routines",
            "--triggers",
            "--events",
            "--hex-blob",
            "--quick",
            "--no-tablespaces",
            "--default-character-set=utf8mb4",
            "--",
        ])
        .arg(&options.settings.database);
    let (stream, outcome) = child::stream(
        Program {
            command,
            name: "mariadb-dump",
            missing: FailureCode::MysqldumpMissing,
            failed: FailureCode::MysqldumpFailed,
        },
        options.compression,
        options.encryption,
        Counter {
            tables: SqlTables::default(),
            _file: file,
        },
    );
    Ok((stream, outcome))
}

/// The row counter of a running dump; it holds the option file until the
/// dump has ended.
struct Counter {
    tables: SqlTables,
    _file: OptionFile,
}

impl Observer for Counter {
    type Found = Vec<TableRows>;
    fn see(&mut self, data: &[u8]) {
        self.tables.feed(data);
    }
    fn finish(self) -> Vec<TableRows> {
        self.tables.tables()
    }
}

/// Reads a `mariadb-dump`/`mysqldump` SQL stream and counts, per table,
/// the rows of its `INSERT INTO `t` VALUES (…),(…);` statements, and the
/// tables it creates (`CREATE TABLE `t``, so empty tables count as 0). Only
/// statements at the start of a line, outside `DELIMITER` blocks
/// (triggers, routines, events), are read; strings are skipped with their
/// escapes, so a value holding `(`, `)`, `'` or `;` does not count.
#[derive(Default)]
pub struct SqlTables {
    rows: BTreeMap<String, u64>,
    state: State,
    /// The start of the current line (up to [`PREFIX`] bytes).
    line: Vec<u8>,
    /// Inside `DELIMITER ;;` … `DELIMITER ;`.
    delimited: bool,
    /// The table an INSERT or CREATE TABLE names, as it is read.
    name: Vec<u8>,
    /// The table whose rows the current INSERT holds.
    current: Option<String>,
    /// Bytes read.
    pub bytes: u64,
}

/// How much of a line's start is looked at.
const PREFIX: usize = 32;
const INSERT: &[u8] = b"INSERT INTO `";
const CREATE: &[u8] = b"CREATE TABLE `";
const DELIMITER: &[u8] = b"DELIMITER ";
const VALUES: &[u8] = b"VALUES";

#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    /// At the start of a line, collecting its first bytes.
    #[default]
    LineStart,
    /// Skipping to the end of the line.
    Skip,
    /// In the backquoted name of `INSERT INTO ` or `CREATE TABLE `.
    Name { insert: bool },
    /// Just read a backquote inside the name: `` `` `` or its end.
    NameQuote { insert: bool },
    /// After an INSERT's table name, before `VALUES` (`matched` bytes of
    /// it read).
    BeforeValues { matched: usize },
    /// Between (or inside) the tuples of an INSERT.
    Values { depth: u32 },
    /// In a string of a tuple; `escaped` after a backslash.
    Str { depth: u32, escaped: bool },
}

impl SqlTables {
    pub fn feed(&mut self, data: &[u8]) {
        self.bytes += data.len() as u64;
        let mut at = 0;
        while at < data.len() {
            // Most of a dump is the inside of tuples, strings and lines
            // that are skipped: jump to the next byte that matters there
            // (memchr's SIMD search), and step byte by byte elsewhere.
            let rest = &data[at..];
            let next = match self.state {
                State::Skip => memchr::memchr(b'\n', rest),
                State::Str { escaped: false, .. } => memchr::memchr2(b'\\', b'\'', rest),
                State::Values { depth } if depth > 0 => memchr::memchr3(b'\'', b'(', b')', rest),
                _ => Some(0),
            };
            let Some(skip) = next else {
                return;
            };
            at += skip;
            self.state = self.step(data[at]);
            at += 1;
        }
    }

    /// The tables seen, by name, with their rows.
    pub fn tables(self) -> Vec<TableRows> {
        self.rows
            .into_iter()
            .map(|(name, rows)| TableRows { name, rows })
            .collect()
    }

    fn step(&mut self, byte: u8) -> State {
        match self.state {
            State::LineStart => {
                if byte == b'\n' {
                    self.line_ended();
                    State::LineStart
                } else {
                    self.line.push(byte);
                    self.line_started()
                }
            }
            State::Skip => {
                if byte == b'\n' {
                    self.line.clear();
                    State::LineStart
                } else {
                    State::Skip
                }
            }
            State::Name { insert } => match byte {
                b'`' => State::NameQuote { insert },
                b'\n' => {
                    self.name.clear();
                    self.line.clear();
                    State::LineStart
                }
                _ => {
                    self.name.push(byte);
                    State::Name { insert }
                }
            },
            State::NameQuote { insert } => {
                if byte == b'`' {
                    self.name.push(b'`');
                    return State::Name { insert };
                }
                let name = String::from_utf8_lossy(&self.name).into_owned();
                self.name.clear();
                self.rows.entry(name.clone()).or_insert(0);
                if insert {
                    self.current = Some(name);
                    return Self::before_values(byte, 0);
                }
                if byte == b'\n' {
                    self.line.clear();
                    State::LineStart
                } else {
                    State::Skip
                }
            }
            State::BeforeValues { matched } => Self::before_values(byte, matched),
            State::Values { depth } => match byte {
                b'\'' => State::Str {
                    depth,
                    escaped: false,
                },
                b'(' => {
                    if depth == 0 {
                        if let Some(rows) = self.current.as_ref().and_then(|t| self.rows.get_mut(t))
                        {
                            *rows += 1;
                        }
                    }
                    State::Values { depth: depth + 1 }
                }
                b')' => State::Values {
                    depth: depth.saturating_sub(1),
                },
                b';' if depth == 0 => {
                    self.current = None;
                    State::Skip
                }
                _ => State::Values { depth },
            },
            State::Str { depth, escaped } => match (escaped, byte) {
                (true, _) => State::Str {
                    depth,
                    escaped: false,
                },
                (false, b'\\') => State::Str {
                    depth,
                    escaped: true,
                },
                (false, b'\'') => State::Values { depth },
                (false, _) => State::Str {
                    depth,
                    escaped: false,
                },
            },
        }
    }

    fn before_values(byte: u8, matched: usize) -> State {
        if byte == VALUES[matched] {
            if matched + 1 == VALUES.len() {
                State::Values { depth: 0 }
            } else {
                State::BeforeValues {
                    matched: matched + 1,
                }
            }
        } else {
            State::BeforeValues {
                matched: usize::from(byte == VALUES[0]),
            }
        }
    }

    /// After a byte of a line's start: a statement read, or more to see.
    fn line_started(&mut self) -> State {
        let line = self.line.as_slice();
        if DELIMITER.starts_with(line) || line.starts_with(DELIMITER) {
            // `DELIMITER x` is read whole at the end of its line.
            return if line.len() > PREFIX {
                State::Skip
            } else {
                State::LineStart
            };
        }
        if self.delimited {
            return State::Skip;
        }
        if line == INSERT {
            self.line.clear();
            return State::Name { insert: true };
        }
        if line == CREATE {
            self.line.clear();
            return State::Name { insert: false };
        }
        if INSERT.starts_with(line) || CREATE.starts_with(line) {
            State::LineStart
        } else {
            State::Skip
        }
    }

    /// The end of a line read from its start.
    fn line_ended(&mut self) {
        if let Some(rest) = self.line.strip_prefix(DELIMITER) {
            self.delimited = rest.trim_ascii() != b";";
        }
        self.line.clear();
    }
}

/// Reads a plain dump to its end and returns its tables (the preview and a
/// dry run's listing); fails when it does not end like a complete dump.
pub fn scan(mut plain: impl Read) -> Result<(u64, Vec<TableRows>), String> {
    let mut tables = SqlTables::default();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut tail = Vec::new();
    loop {
        let n = plain
            .read(&mut buffer)
            .map_err(|e| format!("the dump is damaged or cut short: {e}"))?;
        if n == 0 {
            break;
        }
        tables.feed(&buffer[..n]);
        tail.extend_from_slice(&buffer[..n]);
        if tail.len() > 4096 {
            tail.drain(..tail.len() - 4096);
        }
    }
    check_complete(&tail)?;
    let bytes = tables.bytes;
    Ok((bytes, tables.tables()))
}

/// A dump the client completed ends with its `-- Dump completed` line.
fn check_complete(tail: &[u8]) -> Result<(), String> {
    if String::from_utf8_lossy(tail).contains("-- Dump completed") {
        Ok(())
    } else {
        Err(
            "the dump does not end with mariadb-dump's \"Dump completed\" line: it was cut short"
                .into(),
        )
    }
}

/// Feeds a plain dump to the `mariadb` client, into `database` on the
/// server at `hostaddr`; returns the bytes fed. The client stops at the
/// first failing statement. `cancel` kills it.
pub fn load(
    plain: &mut dyn Read,
    program: &Path,
    settings: &ConnectionSettings,
    hostaddr: Option<IpAddr>,
    password: Option<&SecretString>,
    cancel: &Cancellation,
) -> Result<u64, String> {
    let file = OptionFile::write(settings, hostaddr, password)
        .map_err(|e| format!("writing the client's option file: {e}"))?;
    let mut command = file.command(program);
    command
        .arg("--batch")
        .arg("--binary-mode")
        .arg("--default-character-set=utf8mb4")
        .arg(format!("--database={}", settings.database))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|e| format!("{} cannot be run: {e}", program.display()))?;
    let errors = child.stderr.take().map(child::drain_stderr);
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| "the client's input is not writable".to_owned())?;
    let mut fed = 0u64;
    let mut buffer = vec![0u8; 256 * 1024];
    let mut tail = Vec::new();
    let mut failure = None;
    loop {
        if cancel.is_cancelled() {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the restore was stopped; the client was killed".into());
        }
        let n = match plain.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(error) => {
                failure = Some(format!("reading the dump: {error}"));
                break;
            }
        };
        tail.extend_from_slice(&buffer[..n]);
        if tail.len() > 4096 {
            tail.drain(..tail.len() - 4096);
        }
        if stdin.write_all(&buffer[..n]).is_err() {
            // The client stopped reading: it failed, and says why below.
            break;
        }
        fed += n as u64;
    }
    if failure.is_none() {
        if let Err(reason) = check_complete(&tail) {
            failure = Some(reason);
        }
    }
    if failure.is_some() {
        // Whatever the client ran stays; it must not run a cut dump's end.
        let _ = child.kill();
    }
    drop(stdin);
    let status = child
        .wait()
        .map_err(|e| format!("waiting for the client: {e}"))?;
    let stderr = errors.and_then(|e| e.join().ok()).unwrap_or_default();
    if let Some(reason) = failure {
        return Err(reason);
    }
    if !status.success() {
        return Err(format!(
            "the client failed ({status}): {}",
            if stderr.is_empty() {
                "no message"
            } else {
                &stderr
            }
        ));
    }
    Ok(fed)
}

/// A `mysql://user:password@host:port` URL (the scratch server of
/// verifications) split into settings and password. Messages name the URL
/// `what`, never its text.
pub fn parse_server_url(
    what: &str,
    text: &str,
) -> Result<(ConnectionSettings, Option<SecretString>), String> {
    let (settings, password) =
        ConnectionSettings::from_url(what, text, &["mysql", "mariadb"], DEFAULT_PORT)?;
    if settings.username.is_empty() {
        return Err(format!("{what} names no user"));
    }
    // An empty database: connect without a default one.
    Ok((settings, password))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(dump: &str, pieces: usize) -> Vec<(String, u64)> {
        let mut tables = SqlTables::default();
        let bytes = dump.as_bytes();
        let step = bytes.len().div_ceil(pieces).max(1);
        for chunk in bytes.chunks(step) {
            tables.feed(chunk);
        }
        tables
            .tables()
            .into_iter()
            .map(|t| (t.name, t.rows))
            .collect()
    }

    #[test]
    fn rows_are_counted_from_the_dump() {
        let dump = "-- header\n\
            DROP TABLE IF EXISTS `a``b`;\n\
            CREATE TABLE `a``b` (\n  `id` int\n) ENGINE=InnoDB;\n\
            INSERT INTO `a``b` VALUES\n(1,'x(y)'),\n(2,'it\\'s; (not) a row'),\n(3,0x28);\n\
            INSERT INTO `a``b` VALUES (4,'('),(5,')');\n\
            CREATE TABLE `empty` (`id` int);\n\
            INSERT INTO `cols` (`id`, `v`) VALUES (1, 'a'), (2, 'b');\n\
            DELIMITER ;;\n\
            /*!50003 CREATE*/ /*!50003 TRIGGER t AFTER INSERT ON x FOR EACH ROW\n\
            INSERT INTO `audit` VALUES (new.id) */;;\n\
            DELIMITER ;\n\
            /*!50001 CREATE VIEW `v` AS SELECT 1 AS `x` */;\n\
            -- Dump completed on 2026-12-06\n";
        let expected = vec![
            ("a`b".to_owned(), 5),
            ("cols".to_owned(), 2),
            ("empty".to_owned(), 0),
        ];
        for pieces in [1, 3, 17, dump.len()] {
            assert_eq!(count(dump, pieces), expected, "{pieces} pieces");
        }
        assert!(scan(dump.as_bytes()).is_ok());
        assert!(scan(&dump.as_bytes()[..dump.len() - 40]).is_err());
    }

    #[test]
    fn client_versions() {
        let v = Version::of_client(
            "mariadb-dump  Ver 10.19 Distrib 10.11.19-MariaDB, for debian-linux-gnu (x86_64)",
        )
        .unwrap();
        assert_eq!((v.mariadb, v.major, v.minor, v.patch), (true, 10, 11, 19));
        let v =
            Version::of_client("mariadb-dump from 11.4.2-MariaDB, client 10.19 for Linux (x86_64)")
                .unwrap();
        assert_eq!((v.mariadb, v.major, v.minor), (true, 11, 4));
        let v = Version::of_client(
            "mysqldump  Ver 8.0.36 for Linux on x86_64 (MySQL Community Server - GPL)",
        )
        .unwrap();
        assert_eq!((v.mariadb, v.major, v.minor), (false, 8, 0));
        assert_eq!(Version::of_client("something else"), None);
        let server = Version::parse("10.11.19-MariaDB-0+deb12u1").unwrap();
        let old = Version::parse("10.5.2-MariaDB").unwrap();
        assert!(client_fits(&old, &server).is_err());
        assert_eq!(client_fits(&server, &server), Ok(None));
        let mysql = Version::parse("8.0.36").unwrap();
        assert!(client_fits(&server, &mysql).unwrap().is_some());
    }

    #[test]
    fn option_values_are_quoted() {
        assert_eq!(option_value(r#"a"b\c# d"#), r#""a\"b\\c# d""#);
        assert_eq!(option_value("x\ny"), r#""x\ny""#);
    }

    #[test]
    fn database_names() {
        assert!(check_database_name("shop_2$").is_ok());
        for bad in ["", "-x", "a b", "a;b", "a`b", &"x".repeat(65)] {
            assert!(check_database_name(bad).is_err(), "{bad}");
        }
    }
}
