//! Reading a stored archive back: what its name says it is, its sidecars,
//! decryption with an age identity, decompression, and a full read that
//! proves it is complete. Used by the offline tools (`cairn archive …`),
//! which need no server and no database.

use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The version of the archive layout (archive + `.sha256` +
/// `.manifest.json`) that this Cairn writes and reads; a restore refuses
/// archives of a newer format.
pub const ARCHIVE_FORMAT_VERSION: u32 = 1;

/// The format version a manifest states (1 when it states none).
pub fn format_version_of(manifest: Option<&serde_json::Value>) -> u64 {
    manifest
        .and_then(|m| m.get("formatVersion"))
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(1)
}

/// Why this Cairn cannot read an archive of `format_version`, if it cannot.
pub fn format_refusal(format_version: u64) -> Option<String> {
    (format_version > u64::from(ARCHIVE_FORMAT_VERSION)).then(|| {
        format!(
            "the archive was written by a newer Cairn (archive format {format_version}; this Cairn reads up to {ARCHIVE_FORMAT_VERSION}): upgrade Cairn to restore it"
        )
    })
}

/// Reads the stored bytes of an archive as they arrive: hashes them
/// (SHA-256), counts them, and fails once `cancel` is set, so a blocking
/// reader stops when the restore that started it is stopped.
pub struct Checked<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
    cancel: crate::storage::Cancellation,
    /// The first error of the source itself (the download), as opposed to
    /// errors of whatever reads from this.
    source_error: Option<String>,
}

impl<R: Read> Checked<R> {
    pub fn new(inner: R, cancel: crate::storage::Cancellation) -> Checked<R> {
        Checked {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
            cancel,
            source_error: None,
        }
    }

    /// The error that stopped the download, if one did.
    pub fn source_error(&self) -> Option<&str> {
        self.source_error.as_deref()
    }

    /// Reads what is left (a reader may stop before the end: the tar
    /// reader after its end marker, the zstd decoder after its frame),
    /// then the SHA-256 (hex) and size of everything read.
    pub fn finish(mut self) -> io::Result<(String, u64)> {
        if let Some(error) = &self.source_error {
            return Err(io::Error::other(error.clone()));
        }
        io::copy(&mut self, &mut io::sink())?;
        Ok((format!("{:x}", self.hasher.finalize()), self.bytes))
    }
}

impl<R: Read> Read for Checked<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        if self.cancel.is_cancelled() {
            return Err(io::Error::other("the restore was stopped"));
        }
        let n = self.inner.read(buffer).inspect_err(|error| {
            self.source_error.get_or_insert_with(|| error.to_string());
        })?;
        self.hasher.update(&buffer[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// How an archive is compressed, from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    TarZstd,
    TarGzip,
    Tar,
    /// `pg_dump --format=custom`.
    Dump,
}

/// What an archive's name says about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArchiveName {
    pub format: Format,
    /// `+.age`: encrypted with age.
    pub encrypted: bool,
}

impl ArchiveName {
    /// Reads `….tar.zst`, `….tar.gz`, `….tar`, `….dump`, each optionally
    /// followed by `.age`.
    pub fn parse(file_name: &str) -> Option<ArchiveName> {
        let (base, encrypted) = match file_name.strip_suffix(".age") {
            Some(base) => (base, true),
            None => (file_name, false),
        };
        let format = if base.ends_with(".tar.zst") {
            Format::TarZstd
        } else if base.ends_with(".tar.gz") {
            Format::TarGzip
        } else if base.ends_with(".tar") {
            Format::Tar
        } else if base.ends_with(".dump") {
            Format::Dump
        } else {
            return None;
        };
        Some(ArchiveName { format, encrypted })
    }
}

/// Why reading an archive failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(String),
    #[error("the archive's name does not say what it is (expected .tar.zst, .tar.gz, .tar or .dump, optionally + .age): {0}")]
    UnknownFormat(String),
    #[error("the archive is encrypted: pass the age identity that opens it")]
    IdentityNeeded,
    #[error("the archive does not decrypt with this identity: {0}")]
    Decrypt(String),
    #[error("the archive is damaged or cut short: {0}")]
    Damaged(String),
}

/// The sidecar of `archive` with `suffix` (`.sha256`, `.manifest.json`).
pub fn sidecar(archive: &Path, suffix: &str) -> PathBuf {
    let mut name = archive.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// SHA-256 (hex) of a file, read in 1 MiB blocks.
pub fn sha256_of(path: &Path) -> io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1024 * 1024];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        total += n as u64;
    }
    Ok((format!("{:x}", hasher.finalize()), total))
}

/// The hash a `sha256sum`-format sidecar gives for `file_name`.
pub fn expected_sha256(sidecar_text: &str, file_name: &str) -> Option<String> {
    sidecar_text.lines().find_map(|line| {
        let (hash, name) = line.split_once(char::is_whitespace)?;
        let name = name.trim_start().trim_start_matches('*');
        (name == file_name && hash.len() == 64 && hash.chars().all(|c| c.is_ascii_hexdigit()))
            .then(|| hash.to_ascii_lowercase())
    })
}

/// Reads an age identity file (`AGE-SECRET-KEY-1…` lines; `#` comments).
pub fn read_identity(path: &Path) -> Result<age::x25519::Identity, ReadError> {
    use std::str::FromStr;
    let text = std::fs::read_to_string(path)
        .map_err(|e| ReadError::Io(format!("reading {}: {e}", path.display())))?;
    text.lines()
        .map(str::trim)
        .find(|line| line.starts_with("AGE-SECRET-KEY-"))
        .and_then(|line| age::x25519::Identity::from_str(line).ok())
        .ok_or_else(|| {
            ReadError::Io(format!(
                "{} holds no age identity (AGE-SECRET-KEY-1…)",
                path.display()
            ))
        })
}

/// The plain bytes of a stored archive: decrypted when it is encrypted,
/// then decompressed (a dump stays as pg_dump wrote it).
pub fn open<'a>(
    reader: impl Read + Send + 'a,
    name: ArchiveName,
    identity: Option<&age::x25519::Identity>,
) -> Result<Box<dyn Read + Send + 'a>, ReadError> {
    let reader: Box<dyn Read + Send + 'a> = if name.encrypted {
        let identity = identity.ok_or(ReadError::IdentityNeeded)?;
        let decryptor = age::Decryptor::new(BufReader::new(reader))
            .map_err(|e| ReadError::Decrypt(e.to_string()))?;
        if decryptor.is_scrypt() {
            return Err(ReadError::Decrypt(
                "it is passphrase-encrypted, not encrypted to a key".into(),
            ));
        }
        let decrypted = decryptor
            .decrypt(std::iter::once(identity as &dyn age::Identity))
            .map_err(|e| ReadError::Decrypt(e.to_string()))?;
        Box::new(decrypted)
    } else {
        Box::new(reader)
    };
    Ok(match name.format {
        Format::TarZstd => Box::new(
            zstd::stream::read::Decoder::new(reader)
                .map_err(|e| ReadError::Damaged(e.to_string()))?,
        ),
        Format::TarGzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        Format::Tar | Format::Dump => reader,
    })
}

/// What a full read of an archive found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadSummary {
    /// Tar entries (0 for a dump).
    pub entries: u64,
    /// Bytes of file content (tar) or of the dump.
    pub bytes: u64,
}

/// The first bytes of a custom-format dump.
const DUMP_MAGIC: &[u8] = b"PGDMP";

/// Reads the plain archive to its end: every tar entry and its content, or
/// the whole dump after checking its header. A truncated or corrupt archive
/// fails here.
pub fn read_through(mut plain: impl Read, format: Format) -> Result<ReadSummary, ReadError> {
    let damaged = |e: io::Error| ReadError::Damaged(e.to_string());
    let mut summary = ReadSummary::default();
    if format == Format::Dump {
        let mut magic = [0u8; 5];
        plain.read_exact(&mut magic).map_err(damaged)?;
        if magic != DUMP_MAGIC {
            return Err(ReadError::Damaged(
                "it does not start like a pg_dump custom-format archive".into(),
            ));
        }
        summary.bytes = 5 + io::copy(&mut plain, &mut io::sink()).map_err(damaged)?;
        return Ok(summary);
    }
    let mut archive = tar::Archive::new(plain);
    for entry in archive.entries().map_err(damaged)? {
        let mut entry = entry.map_err(damaged)?;
        summary.entries += 1;
        summary.bytes += io::copy(&mut entry, &mut io::sink()).map_err(damaged)?;
    }
    // The tar stream's end-of-archive marker was read; whatever compression
    // wrapped it was read to its end by the entries' iterator.
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_say_what_an_archive_is() {
        let name = |n: &str| ArchiveName::parse(n);
        assert_eq!(
            name("2024-01-15T02-00-00-000Z.tar.zst"),
            Some(ArchiveName {
                format: Format::TarZstd,
                encrypted: false
            })
        );
        assert_eq!(
            name("x.tar.gz.age"),
            Some(ArchiveName {
                format: Format::TarGzip,
                encrypted: true
            })
        );
        assert_eq!(name("x.dump").unwrap().format, Format::Dump);
        assert_eq!(name("x.tar").unwrap().format, Format::Tar);
        assert_eq!(name("x.zip"), None);
        assert_eq!(name("x.age"), None);
    }

    #[test]
    fn database_urls_split_into_settings_and_a_password() {
        use secrecy::ExposeSecret;
        let (settings, password) =
            parse_database_url("postgres://app%40x:p%3Ass@db.internal:5433/shop%20db").unwrap();
        assert_eq!(settings.host, "db.internal");
        assert_eq!(settings.port, 5433);
        assert_eq!(settings.username, "app@x");
        assert_eq!(settings.database, "shop db");
        assert_eq!(password.unwrap().expose_secret(), "p:ss");
        let (settings, password) = parse_database_url("postgresql://h/d").unwrap();
        assert_eq!(
            (settings.port, settings.username.as_str()),
            (5432, "postgres")
        );
        assert!(password.is_none());
        assert!(parse_database_url("mysql://h/d").is_err());
        assert!(parse_database_url("postgres://h/").is_err());
    }

    #[test]
    fn sidecars_are_read_as_sha256sum_writes_them() {
        let hash = "a".repeat(64);
        let text = format!("{hash}  backup.tar.zst\n");
        assert_eq!(expected_sha256(&text, "backup.tar.zst"), Some(hash.clone()));
        assert_eq!(
            expected_sha256(&format!("{hash} *backup.tar.zst\n"), "backup.tar.zst"),
            Some(hash)
        );
        assert_eq!(expected_sha256(&text, "other.tar.zst"), None);
        assert_eq!(
            expected_sha256("xyz  backup.tar.zst\n", "backup.tar.zst"),
            None
        );
    }
}

/// What `cairn archive verify` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub sha256: String,
    pub size: u64,
    /// Where the expected hash came from (`FILE.sha256` or `--sha256`).
    pub checked_against: String,
    /// `None` when the archive is encrypted and no identity was given: only
    /// the checksum was verified.
    pub read: Option<ReadSummary>,
}

/// Checks a stored archive: its SHA-256 against `expected` (or its
/// `.sha256` sidecar), then — when it can be decrypted — that it reads to
/// its end.
pub fn verify_file(
    path: &Path,
    expected: Option<&str>,
    identity: Option<&age::x25519::Identity>,
) -> Result<Verified, String> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| format!("{} is not a file", path.display()))?;
    let name = ArchiveName::parse(&file_name)
        .ok_or_else(|| ReadError::UnknownFormat(file_name.clone()).to_string())?;
    let (expected, checked_against) = match expected {
        Some(hash) => (hash.trim().to_ascii_lowercase(), "--sha256".to_owned()),
        None => {
            let sidecar = sidecar(path, ".sha256");
            let text = std::fs::read_to_string(&sidecar).map_err(|e| {
                format!(
                    "no checksum to verify against: {} ({e}); pass --sha256 HEX",
                    sidecar.display()
                )
            })?;
            let hash = expected_sha256(&text, &file_name)
                .ok_or_else(|| format!("{} has no line for {file_name}", sidecar.display()))?;
            (hash, sidecar.display().to_string())
        }
    };
    let (actual, size) = sha256_of(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    if actual != expected {
        return Err(format!(
            "checksum mismatch: {} has SHA-256 {actual}, {checked_against} says {expected}",
            path.display()
        ));
    }
    let read = if name.encrypted && identity.is_none() {
        None
    } else {
        let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let plain = open(file, name, identity).map_err(|e| e.to_string())?;
        Some(read_through(plain, name.format).map_err(|e| e.to_string())?)
    };
    Ok(Verified {
        sha256: actual,
        size,
        checked_against,
        read,
    })
}

/// Room above the manifest's tar size that extraction allows (the tar
/// reader reads whole 512-byte blocks).
const CAP_SLACK: u64 = 64 * 1024;

/// `cairn archive extract`: decrypts, decompresses and extracts `path`
/// into `into` (created when missing; it must be empty) with the safety
/// rules of [`crate::extract`]. The size cap comes from `max_bytes`, else
/// from the manifest beside the archive; the second value says which (or
/// that there was none).
pub fn extract_file(
    path: &Path,
    into: &Path,
    identity: Option<&age::x25519::Identity>,
    max_bytes: Option<u64>,
) -> Result<(crate::extract::Extracted, Option<u64>), String> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| format!("{} is not a file", path.display()))?;
    let name = ArchiveName::parse(&file_name)
        .ok_or_else(|| ReadError::UnknownFormat(file_name.clone()).to_string())?;
    if name.format == Format::Dump {
        return Err(format!(
            "{file_name} is a PostgreSQL dump: restore it with pg_restore (decrypt it first with age when it ends in .age)"
        ));
    }
    let cap = match max_bytes {
        Some(cap) => Some(cap),
        None => {
            let manifest = sidecar(path, ".manifest.json");
            match std::fs::read_to_string(&manifest) {
                Ok(text) => {
                    let value: serde_json::Value = serde_json::from_str(&text)
                        .map_err(|e| format!("{} is not JSON: {e}", manifest.display()))?;
                    value["uncompressedBytes"]
                        .as_u64()
                        .map(|bytes| bytes + CAP_SLACK)
                }
                Err(_) => None,
            }
        }
    };
    std::fs::create_dir_all(into).map_err(|e| format!("creating {}: {e}", into.display()))?;
    let mut entries =
        std::fs::read_dir(into).map_err(|e| format!("reading {}: {e}", into.display()))?;
    if entries.next().is_some() {
        return Err(format!(
            "{} is not empty: extract into an empty directory",
            into.display()
        ));
    }
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let plain = open(file, name, identity).map_err(|e| e.to_string())?;
    let extracted = crate::extract::extract(plain, into, cap).map_err(|e| e.to_string())?;
    Ok((extracted, cap))
}

/// A `postgres://user:password@host:port/database` URL split into the
/// connection settings and the password (which goes to the environment,
/// never to argv).
pub fn parse_database_url(
    text: &str,
) -> Result<(crate::apps::PostgresSettings, Option<secrecy::SecretString>), String> {
    let url = url::Url::parse(text).map_err(|_| "--dbname is not a URL".to_owned())?;
    if url.scheme() != "postgres" && url.scheme() != "postgresql" {
        return Err("--dbname must be a postgres:// URL".into());
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| "--dbname holds invalid percent-encoding".to_owned())
    };
    let host = url
        .host_str()
        .ok_or_else(|| "--dbname names no host".to_owned())?
        .to_owned();
    let database = decode(url.path().trim_start_matches('/'))?;
    if database.is_empty() {
        return Err("--dbname names no database".into());
    }
    let username = decode(url.username())?;
    let password = url
        .password()
        .map(decode)
        .transpose()?
        .map(secrecy::SecretString::from);
    Ok((
        crate::apps::PostgresSettings {
            host,
            port: url.port().unwrap_or(5432),
            database,
            username: if username.is_empty() {
                "postgres".into()
            } else {
                username
            },
        },
        password,
    ))
}

/// `cairn archive pg-restore`: decrypts the dump when needed and streams it
/// into `pg_restore`.
pub fn pg_restore_file(
    path: &Path,
    database_url: &str,
    identity: Option<&age::x25519::Identity>,
    program: &Path,
) -> Result<u64, String> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| format!("{} is not a file", path.display()))?;
    let name = ArchiveName::parse(&file_name)
        .ok_or_else(|| ReadError::UnknownFormat(file_name.clone()).to_string())?;
    if name.format != Format::Dump {
        return Err(format!(
            "{file_name} is a tar archive: use `cairn archive extract`"
        ));
    }
    let (settings, password) = parse_database_url(database_url)?;
    // The password: the URL's, else the operator's PGPASSWORD (the other
    // PG* variables are not passed on: the URL says where to restore).
    let password = password.or_else(|| {
        std::env::var("PGPASSWORD")
            .ok()
            .map(secrecy::SecretString::from)
    });
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let plain = open(file, name, identity).map_err(|e| e.to_string())?;
    pg_restore(
        plain,
        PgRestore::Into {
            settings: &settings,
            hostaddr: None,
            password: password.as_ref(),
        },
        program,
        &crate::storage::Cancellation::default(),
    )
}

/// What `pg_restore` does with a dump.
pub enum PgRestore<'a> {
    /// `--clean --if-exists --no-owner --single-transaction` into a
    /// database (restored whole or left unchanged), the connection given as
    /// one quoted string and the password through `PGPASSWORD` (never argv).
    Into {
        settings: &'a crate::apps::PostgresSettings,
        /// The checked address to connect to (`hostaddr`); `None` for the
        /// operator's offline tool, which connects where it is told.
        hostaddr: Option<std::net::IpAddr>,
        password: Option<&'a secrecy::SecretString>,
    },
    /// `--list`: the table of contents, printed; nothing is connected to.
    List,
}

/// Streams a plain (decrypted) dump into `pg_restore`; returns the bytes
/// fed, and for [`PgRestore::List`] the listing. `cancel` kills pg_restore.
pub fn pg_restore(
    mut plain: impl Read,
    action: PgRestore<'_>,
    program: &Path,
    cancel: &crate::storage::Cancellation,
) -> Result<u64, String> {
    pg_restore_with_output(&mut plain, action, program, cancel).map(|(bytes, _)| bytes)
}

/// [`pg_restore`], also returning what pg_restore printed.
pub fn pg_restore_with_output(
    plain: &mut dyn Read,
    action: PgRestore<'_>,
    program: &Path,
    cancel: &crate::storage::Cancellation,
) -> Result<(u64, String), String> {
    use secrecy::ExposeSecret;
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut command = Command::new(program);
    for name in crate::dump::libpq_variables() {
        command.env_remove(name);
    }
    let listing = matches!(action, PgRestore::List);
    match action {
        PgRestore::Into {
            settings,
            hostaddr,
            password,
        } => {
            command
                .args([
                    "--clean",
                    "--if-exists",
                    "--no-owner",
                    "--single-transaction",
                ])
                .arg(format!(
                    "--dbname={}",
                    crate::dump::conninfo(settings, hostaddr)
                ));
            if let Some(password) = password {
                command.env("PGPASSWORD", password.expose_secret());
            }
        }
        PgRestore::List => {
            command.arg("--list");
        }
    }
    command
        .stdin(Stdio::piped())
        .stdout(if listing {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|e| format!("{} cannot be run: {e}", program.display()))?;
    let collect = |stream: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut stream) = stream {
                let _ = stream.read_to_end(&mut text);
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let errors = collect(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let output = collect(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| "pg_restore's input is not writable".to_owned())?;
    let mut fed = 0u64;
    let mut buffer = vec![0u8; 256 * 1024];
    let mut read_error = None;
    loop {
        if cancel.is_cancelled() {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the restore was stopped; pg_restore was killed".into());
        }
        let n = match plain.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(error) => {
                read_error = Some(error);
                break;
            }
        };
        // pg_restore --list stops reading after the table of contents.
        if stdin.write_all(&buffer[..n]).is_err() {
            break;
        }
        fed += n as u64;
    }
    drop(stdin);
    if let Some(error) = read_error {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("reading the dump: {error}"));
    }
    let status = loop {
        if cancel.is_cancelled() {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the restore was stopped; pg_restore was killed".into());
        }
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(50)),
            Err(error) => return Err(format!("waiting for pg_restore: {error}")),
        }
    };
    let errors = errors.join().unwrap_or_default();
    let output = output.join().unwrap_or_default();
    if !status.success() {
        return Err(format!("pg_restore failed ({status}): {}", errors.trim()));
    }
    Ok((fed, output))
}

/// Downloads `s3://bucket/key` and its sidecars (`.sha256`,
/// `.manifest.json`, when present) into `into`, for the offline tools.
/// Credentials and the endpoint come from the environment as the AWS tools
/// read them (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL`); an `http://`
/// endpoint is allowed (a server on a private network). Returns the local
/// path of the archive.
pub async fn fetch_s3(location: &str, into: &Path) -> Result<PathBuf, String> {
    use futures::StreamExt;
    use object_store::ObjectStoreExt;
    use std::io::Write;
    let rest = location
        .strip_prefix("s3://")
        .ok_or_else(|| format!("{location} is not an s3:// location"))?;
    let (bucket, key) = rest
        .split_once('/')
        .filter(|(bucket, key)| !bucket.is_empty() && !key.is_empty())
        .ok_or_else(|| format!("{location} must be s3://BUCKET/KEY"))?;
    let file_name = key.rsplit('/').next().unwrap_or(key).to_owned();
    let mut builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .or_else(|_| std::env::var("AWS_ENDPOINT"))
        .ok();
    if let Some(endpoint) = endpoint {
        builder = builder
            .with_allow_http(endpoint.starts_with("http://"))
            .with_endpoint(endpoint);
    }
    if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err() {
        builder = builder.with_region("us-east-1");
    }
    let store = builder
        .build()
        .map_err(|e| format!("the S3 settings from the environment are incomplete: {e}"))?;
    let mut local = None;
    for (suffix, required) in [("", true), (".sha256", false), (".manifest.json", false)] {
        let object = object_store::path::Path::from(format!("{key}{suffix}"));
        let path = into.join(format!("{file_name}{suffix}"));
        let result = match store.get(&object).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) if !required => continue,
            Err(error) => {
                return Err(crate::storage::s3::classify(
                    bucket,
                    &format!("downloading {key}{suffix}"),
                    error,
                )
                .to_string())
            }
        };
        let mut file = std::fs::File::create(&path)
            .map_err(|e| format!("creating {}: {e}", path.display()))?;
        let mut stream = result.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                crate::storage::s3::classify(bucket, &format!("downloading {key}{suffix}"), e)
                    .to_string()
            })?;
            file.write_all(&chunk)
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
        }
        file.sync_all()
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        if suffix.is_empty() {
            local = Some(path);
        }
    }
    local.ok_or_else(|| format!("s3://{bucket}/{key} was not downloaded"))
}
