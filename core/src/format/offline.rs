//! The offline disaster-recovery tools (`cairn archive verify / extract /
//! pg-restore`, and fetching an archive from S3 for them): they need no
//! server and no database, only the archive, its sidecars and, for
//! encrypted archives, the organization's exported age identity.

use std::path::{Path, PathBuf};

use super::manifest::Manifest;
use super::names::{expected_sha256, ArchiveName, Format, Sidecar};
use super::pg_restore::{parse_database_url, pg_restore, PgRestore};
use super::read::{open, read_through, sha256_of, ReadError, ReadSummary};

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

/// The age identity of `--identity FILE`, when one is given.
pub fn identity_from(path: Option<&Path>) -> Result<Option<age::x25519::Identity>, String> {
    path.map(super::read::read_identity)
        .transpose()
        .map_err(|e| e.to_string())
}

/// The file name of the archive at `path` and what it says the archive is.
fn archive_name_of(path: &Path) -> Result<(String, ArchiveName), String> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| format!("{} is not a file", path.display()))?;
    let name = ArchiveName::parse(&file_name)
        .ok_or_else(|| ReadError::UnknownFormat(file_name.clone()).to_string())?;
    Ok((file_name, name))
}

/// Checks a stored archive: its SHA-256 against `expected` (or its
/// `.sha256` sidecar), then — when it can be decrypted — that it reads to
/// its end.
pub fn verify_file(
    path: &Path,
    expected: Option<&str>,
    identity: Option<&age::x25519::Identity>,
) -> Result<Verified, String> {
    let (file_name, name) = archive_name_of(path)?;
    let (expected, checked_against) = match expected {
        Some(hash) => (hash.trim().to_ascii_lowercase(), "--sha256".to_owned()),
        None => {
            let sidecar = Sidecar::Sha256.beside(path);
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

/// `cairn archive extract`: decrypts, decompresses and extracts `path`
/// into `into` (created when missing; it must be empty) with the safety
/// rules of [`crate::format::extract`]. The size cap comes from `max_bytes`, else
/// from the manifest beside the archive; the second value says which (or
/// that there was none).
pub fn extract_file(
    path: &Path,
    into: &Path,
    identity: Option<&age::x25519::Identity>,
    max_bytes: Option<u64>,
) -> Result<(crate::format::extract::Extracted, Option<u64>), String> {
    let (file_name, name) = archive_name_of(path)?;
    if name.format == Format::Dump {
        return Err(format!(
            "{file_name} is a PostgreSQL dump: restore it with pg_restore (decrypt it first with age when it ends in .age)"
        ));
    }
    if name.format.is_sql() {
        return Err(format!(
            "{file_name} is a MySQL dump: decrypt it with age (when it ends in .age), decompress it with zstd or gzip, and load it with `mariadb DATABASE < file.sql`"
        ));
    }
    let cap = match max_bytes {
        Some(cap) => Some(cap),
        None => read_manifest(path)?.map(|manifest| manifest.expansion_cap()),
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
    let extracted = crate::format::extract::extract(plain, into, cap).map_err(|e| e.to_string())?;
    Ok((extracted, cap))
}

/// The manifest beside the archive file `path`, when there is one: read
/// as this Cairn reads manifests, so a damaged one or one of a newer format
/// is an error (which `--max-bytes` sidesteps), never silently ignored.
pub fn read_manifest(path: &Path) -> Result<Option<Manifest>, String> {
    let beside = Sidecar::Manifest.beside(path);
    let bytes = match std::fs::read(&beside) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(format!("reading {}: {error}", beside.display())),
    };
    Manifest::from_slice(&bytes).map(Some).map_err(|e| {
        format!(
            "{}: {e} (pass --max-bytes to extract without it)",
            beside.display()
        )
    })
}

/// `cairn archive pg-restore`: decrypts the dump when needed and streams it
/// into `pg_restore`.
pub fn pg_restore_file(
    path: &Path,
    database_url: &str,
    identity: Option<&age::x25519::Identity>,
    program: &Path,
) -> Result<u64, String> {
    let (file_name, name) = archive_name_of(path)?;
    if name.format.is_sql() {
        return Err(format!(
            "{file_name} is a MySQL dump, not a PostgreSQL one: load it with `mariadb DATABASE < file.sql` after decrypting and decompressing it"
        ));
    }
    if name.format != Format::Dump {
        return Err(format!(
            "{file_name} is a tar archive: use `cairn archive extract`"
        ));
    }
    let (settings, password) = parse_database_url("--dbname", database_url)?;
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
    let sidecars = Sidecar::ALL.map(|sidecar| (sidecar.suffix(), false));
    for (suffix, required) in std::iter::once(("", true)).chain(sidecars) {
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
