//! Reading a stored archive back: its checksum, decryption with an age
//! identity, decompression, and a full read that proves it is complete.

use std::io::{self, BufReader, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::names::{ArchiveName, Format};

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
        Format::TarZstd | Format::SqlZstd => Box::new(
            zstd::stream::read::Decoder::new(reader)
                .map_err(|e| ReadError::Damaged(e.to_string()))?,
        ),
        Format::TarGzip | Format::SqlGzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        Format::Tar | Format::Dump | Format::Sql => reader,
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
    if format.is_sql() {
        let (bytes, _) = crate::format::mysql::scan(plain).map_err(ReadError::Damaged)?;
        summary.bytes = bytes;
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
