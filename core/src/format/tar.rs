//! The tar archiving of a file volume, streamed: walk → tar → compression →
//! SHA-256 → a stream of chunks for a storage target's `put`.
//!
//! Everything runs on one blocking thread, which hands 1 MiB chunks to the
//! async side through a bounded queue, so memory stays bounded whatever the
//! volume's size and nothing is copied to disk. Symlinks are stored as
//! links and never followed; hard links are stored once and linked after;
//! modes, ownership and mtimes are kept; sockets, FIFOs and devices are
//! skipped with a log line; a file that changes while it is read is a
//! warning; a file that cannot be read fails the archive, naming the file.
//! Exclude patterns are globs relative to the volume root. Files are opened
//! with `O_NOFOLLOW` and checked against what was listed, so a file swapped
//! for a link while the volume is archived is skipped, not followed.

use std::collections::HashMap;
use std::fs::Metadata;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tar::{EntryType, Header, HeaderMode};
use tokio::sync::{mpsc, oneshot};

use crate::failure::FailureCode;
use crate::format::age::Recipients;
use crate::storage::{received, ByteStream};

/// Chunks handed to the uploader.
const CHUNK: usize = 1024 * 1024;
/// Chunks queued between the archiver and the uploader.
pub(crate) const QUEUE: usize = 8;

/// The input of one zstd job when compressing on several threads. zstd's
/// default is four windows (8 MiB at level 3), and it keeps about
/// `threads + 3` jobs' worth of input and output buffers: 40 MiB on two
/// cores, 150 on sixteen. At 2 MiB the compressor holds about 20 MiB on
/// up to [`MAX_ZSTD_THREADS`] threads, for an archive under 1% larger.
pub const ZSTD_JOB_SIZE: u32 = 2 * 1024 * 1024;

/// The most threads a compressor uses, however many cores there are: its
/// memory grows with each, and past eight the disk or the network sets the
/// pace of a backup anyway.
pub const MAX_ZSTD_THREADS: u32 = 8;

/// How the tar stream is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// zstd at `level`, on `threads` worker threads (0: single-threaded).
    Zstd {
        level: i32,
        threads: u32,
    },
    Gzip {
        level: u32,
    },
    None,
}

impl Compression {
    /// The archive's file name extension.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::Zstd { .. } => "tar.zst",
            Compression::Gzip { .. } => "tar.gz",
            Compression::None => "tar",
        }
    }

    /// The compression of a job's setting: zstd level 3 on up to
    /// [`MAX_ZSTD_THREADS`] threads, gzip level 6, or none.
    pub fn of_job(setting: crate::jobs::CompressionSetting) -> Compression {
        use crate::jobs::CompressionSetting;
        match setting {
            CompressionSetting::Zstd => Compression::Zstd {
                level: 3,
                threads: std::thread::available_parallelism()
                    .map(|n| (n.get() as u32).min(MAX_ZSTD_THREADS))
                    .unwrap_or(1),
            },
            CompressionSetting::Gzip => Compression::Gzip { level: 6 },
            CompressionSetting::None => Compression::None,
        }
    }

    /// A SQL dump's file name extension.
    pub fn sql_extension(self) -> &'static str {
        match self {
            Compression::Zstd { .. } => "sql.zst",
            Compression::Gzip { .. } => "sql.gz",
            Compression::None => "sql",
        }
    }
}

/// Settings of one archive.
#[derive(Clone, Debug)]
pub struct TarOptions {
    pub compression: Compression,
    /// Globs relative to the volume root (`cache/**`, `*.tmp`).
    pub excludes: Vec<String>,
    /// Encrypt with age to these recipients (after compression).
    pub encryption: Option<Recipients>,
    /// Files of the volume archived from a snapshot instead of as they are
    /// (SQLite databases): the snapshot's bytes under the live file's name
    /// and metadata, and the live file's `-wal`, `-shm` and `-journal` left
    /// out.
    pub substitutes: Vec<Substitute>,
}

/// A file of the volume stored from another file.
#[derive(Clone, Debug)]
pub struct Substitute {
    /// The path relative to the volume root.
    pub path: PathBuf,
    /// What is stored under it.
    pub snapshot: PathBuf,
}

/// What SQLite keeps beside a database, named after it.
pub const SQLITE_COMPANIONS: [&str; 3] = ["-wal", "-shm", "-journal"];

/// What an archive holds, known when it is complete.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveSummary {
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    pub hard_links: u64,
    /// Bytes of file content archived.
    pub content_bytes: u64,
    /// Bytes of the tar stream before compression.
    pub tar_bytes: u64,
    /// Bytes of the archive as stored.
    pub stored_bytes: u64,
    /// SHA-256 of the archive as stored, hex.
    pub sha256: String,
    /// Paths left out by the exclude patterns.
    pub excluded: Vec<String>,
    /// Log lines: skipped special files, files changed while read.
    pub notes: Vec<String>,
}

/// Why an archive failed.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ArchiveError {
    /// The backup record's code (`volume_unreadable`, …).
    pub code: FailureCode,
    pub message: String,
}

impl ArchiveError {
    pub fn new(code: FailureCode, message: impl Into<String>) -> ArchiveError {
        ArchiveError {
            code,
            message: message.into(),
        }
    }
}

/// Archives the directory `root`. The stream yields the stored bytes; the
/// receiver gets the summary (or the failure) once the stream has ended.
pub fn tar_stream(
    root: PathBuf,
    options: TarOptions,
) -> (
    ByteStream,
    oneshot::Receiver<Result<ArchiveSummary, ArchiveError>>,
) {
    let (sender, receiver) = mpsc::channel::<io::Result<Bytes>>(QUEUE);
    let (summary_sender, summary_receiver) = oneshot::channel();
    tokio::task::spawn_blocking(move || {
        // The uploader must never take a cut-off stream for a complete one:
        // unless the archive completes, the stream ends with an error, even
        // when the archiver panics.
        let mut guard = FailUnlessDone::new(sender.clone());
        let outcome = archive(&root, &options, ChunkSink::new(sender));
        if let (Err(error), Some(sender)) = (&outcome, guard.disarm()) {
            let _ = sender.blocking_send(Err(io::Error::other(error.message.clone())));
        }
        let _ = summary_sender.send(outcome);
    });
    (received(receiver), summary_receiver)
}

/// Ends the stream with an error when dropped armed (a panic).
pub(crate) struct FailUnlessDone {
    sender: Option<mpsc::Sender<io::Result<Bytes>>>,
}

impl FailUnlessDone {
    pub(crate) fn new(sender: mpsc::Sender<io::Result<Bytes>>) -> FailUnlessDone {
        FailUnlessDone {
            sender: Some(sender),
        }
    }

    /// The work ended (well or with a reported error): nothing to add.
    pub(crate) fn disarm(&mut self) -> Option<mpsc::Sender<io::Result<Bytes>>> {
        self.sender.take()
    }
}

impl Drop for FailUnlessDone {
    fn drop(&mut self) {
        if let Some(sender) = self.sender.take() {
            let _ =
                sender.blocking_send(Err(io::Error::other("the archiver stopped unexpectedly")));
        }
    }
}

/// Hashes, counts and queues the stored bytes in chunks.
pub(crate) struct ChunkSink {
    sender: mpsc::Sender<io::Result<Bytes>>,
    buffer: Vec<u8>,
    hasher: Sha256,
    stored: u64,
}

impl ChunkSink {
    pub(crate) fn new(sender: mpsc::Sender<io::Result<Bytes>>) -> ChunkSink {
        ChunkSink {
            sender,
            buffer: Vec::with_capacity(CHUNK),
            hasher: Sha256::new(),
            stored: 0,
        }
    }

    /// Sends what is buffered and returns the bytes stored and their
    /// SHA-256 (hex).
    pub(crate) fn close(mut self) -> io::Result<(u64, String)> {
        self.send_buffer()?;
        Ok((self.stored, format!("{:x}", self.hasher.finalize())))
    }

    fn send_buffer(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK));
        self.sender
            .blocking_send(Ok(Bytes::from(chunk)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped"))
    }
}

impl Write for ChunkSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.hasher.update(data);
        self.stored += data.len() as u64;
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= CHUNK {
            self.send_buffer()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The optional age encryption in front of the sink.
pub(crate) enum Sealed {
    Age(age::stream::StreamWriter<ChunkSink>),
    Plain(ChunkSink),
}

impl Sealed {
    pub(crate) fn new(encryption: Option<&Recipients>, sink: ChunkSink) -> io::Result<Sealed> {
        Ok(match encryption {
            None => Sealed::Plain(sink),
            Some(recipients) => {
                let encryptor = age::Encryptor::with_recipients(
                    recipients
                        .keys
                        .iter()
                        .map(|key| key.as_ref() as &dyn age::Recipient),
                )
                .map_err(io::Error::other)?;
                Sealed::Age(encryptor.wrap_output(sink)?)
            }
        })
    }

    pub(crate) fn finish(self) -> io::Result<ChunkSink> {
        match self {
            Sealed::Age(writer) => writer.finish(),
            Sealed::Plain(sink) => Ok(sink),
        }
    }
}

impl Write for Sealed {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Sealed::Age(writer) => writer.write(data),
            Sealed::Plain(sink) => sink.write(data),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The compressor in front of the (optionally encrypted) sink.
pub(crate) enum Compressor {
    Zstd(zstd::stream::write::Encoder<'static, Sealed>),
    Gzip(flate2::write::GzEncoder<Sealed>),
    Plain(Sealed),
}

impl Compressor {
    pub(crate) fn new(compression: Compression, sink: Sealed) -> io::Result<Compressor> {
        Ok(match compression {
            Compression::Zstd { level, threads } => {
                let mut encoder = zstd::stream::write::Encoder::new(sink, level)?;
                if threads > 0 {
                    encoder.multithread(threads)?;
                    encoder.set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_JOB_SIZE))?;
                }
                Compressor::Zstd(encoder)
            }
            Compression::Gzip { level } => Compressor::Gzip(flate2::write::GzEncoder::new(
                sink,
                flate2::Compression::new(level),
            )),
            Compression::None => Compressor::Plain(sink),
        })
    }

    pub(crate) fn finish(self) -> io::Result<ChunkSink> {
        match self {
            Compressor::Zstd(encoder) => encoder.finish()?.finish(),
            Compressor::Gzip(encoder) => encoder.finish()?.finish(),
            Compressor::Plain(sink) => sink.finish(),
        }
    }
}

impl Write for Compressor {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Zstd(encoder) => encoder.write(data),
            Compressor::Gzip(encoder) => encoder.write(data),
            Compressor::Plain(sink) => sink.write(data),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::Zstd(encoder) => encoder.flush(),
            Compressor::Gzip(encoder) => encoder.flush(),
            Compressor::Plain(sink) => sink.flush(),
        }
    }
}

/// Counts the tar stream's bytes.
struct Counted<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Reads exactly `remaining` bytes: a file that shrank while read is padded
/// with zeros (and reported), one that grew is cut at its archived size.
struct Exactly<R> {
    inner: R,
    remaining: u64,
    short: bool,
}

impl<R: Read> Read for Exactly<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buffer.len().min(self.remaining as usize);
        let mut n = if self.short {
            0
        } else {
            self.inner.read(&mut buffer[..want])?
        };
        if n == 0 {
            self.short = true;
            buffer[..want].fill(0);
            n = want;
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Whether `patterns` leave nothing of a volume: they exclude every name
/// an entry at its top level could have (probed with names of every shape:
/// plain, hidden, digits, upper case, punctuation, non-ASCII). Such a set
/// makes every backup an empty archive that looks successful.
pub fn excludes_everything(patterns: &[String]) -> bool {
    const PROBES: [&str; 9] = [
        "a",
        ".a",
        "0",
        "Z",
        "_",
        "-x",
        "lost+found",
        "Zz-9_.x.db",
        "é",
    ];
    match excludes(patterns) {
        Ok(set) => !patterns.is_empty() && PROBES.iter().all(|name| set.is_match(name)),
        Err(_) => false,
    }
}

fn excludes(patterns: &[String]) -> Result<GlobSet, ArchiveError> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        let glob = Glob::new(pattern.trim_start_matches('/')).map_err(|e| {
            ArchiveError::new(
                FailureCode::InvalidExclude,
                format!("exclude pattern {pattern:?}: {e}"),
            )
        })?;
        builder.add(glob);
    }
    builder
        .build()
        .map_err(|e| ArchiveError::new(FailureCode::InvalidExclude, e.to_string()))
}

fn header_for(metadata: &Metadata, entry_type: EntryType, size: u64) -> Header {
    let mut header = Header::new_gnu();
    header.set_metadata_in_mode(metadata, HeaderMode::Complete);
    header.set_entry_type(entry_type);
    header.set_size(size);
    header
}

fn archive(
    root: &Path,
    options: &TarOptions,
    sink: ChunkSink,
) -> Result<ArchiveSummary, ArchiveError> {
    let unreadable = |path: &Path, error: io::Error| {
        ArchiveError::new(
            FailureCode::VolumeUnreadable,
            format!("cannot read {}: {error}", path.display()),
        )
    };
    let upload_stopped = |error: io::Error| {
        ArchiveError::new(
            FailureCode::UploadFailed,
            format!("the upload stopped: {error}"),
        )
    };
    let excluded_set = excludes(&options.excludes)?;
    let sealed = Sealed::new(options.encryption.as_ref(), sink).map_err(upload_stopped)?;
    let compressor = Compressor::new(options.compression, sealed).map_err(upload_stopped)?;
    let mut builder = tar::Builder::new(Counted {
        inner: compressor,
        bytes: 0,
    });
    builder.mode(HeaderMode::Complete);
    builder.follow_symlinks(false);
    let mut summary = ArchiveSummary::default();
    let mut first_links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let substituted: HashMap<&Path, &Path> = options
        .substitutes
        .iter()
        .map(|s| (s.path.as_path(), s.snapshot.as_path()))
        .collect();
    let companions: HashMap<PathBuf, &Path> = options
        .substitutes
        .iter()
        .flat_map(|s| {
            SQLITE_COMPANIONS.iter().map(move |suffix| {
                let mut name = s.path.clone().into_os_string();
                name.push(suffix);
                (PathBuf::from(name), s.path.as_path())
            })
        })
        .collect();

    let mut walker = walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter();
    while let Some(entry) = walker.next() {
        let entry = entry.map_err(|e| {
            let path = e
                .path()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| root.to_path_buf());
            unreadable(&path, e.into())
        })?;
        let Ok(relative) = entry.path().strip_prefix(root) else {
            continue;
        };
        if relative.as_os_str().is_empty() {
            continue;
        }
        if excluded_set.is_match(relative) {
            summary.excluded.push(relative.display().to_string());
            if entry.file_type().is_dir() {
                walker.skip_current_dir();
            }
            continue;
        }
        let metadata = entry
            .metadata()
            .map_err(|e| unreadable(entry.path(), e.into()))?;
        let file_type = metadata.file_type();
        if let Some(database) = companions.get(relative) {
            summary.notes.push(format!(
                "left out {}: {} is archived from a consistent snapshot",
                relative.display(),
                database.display()
            ));
            continue;
        }
        if let (Some(snapshot), true) = (substituted.get(relative), file_type.is_file()) {
            let file = std::fs::File::open(snapshot).map_err(|e| unreadable(snapshot, e))?;
            let size = file.metadata().map_err(|e| unreadable(snapshot, e))?.len();
            // The live file's mode, owner and times; the snapshot's bytes.
            let mut header = header_for(&metadata, EntryType::Regular, size);
            builder
                .append_data(&mut header, relative, file)
                .map_err(upload_stopped)?;
            summary.notes.push(format!(
                "{} archived from a consistent snapshot (SQLite online backup)",
                relative.display()
            ));
            summary.files += 1;
            summary.content_bytes += size;
            continue;
        }
        if file_type.is_dir() {
            let mut header = header_for(&metadata, EntryType::Directory, 0);
            builder
                .append_data(&mut header, relative, io::empty())
                .map_err(upload_stopped)?;
            summary.directories += 1;
        } else if file_type.is_symlink() {
            let target =
                std::fs::read_link(entry.path()).map_err(|e| unreadable(entry.path(), e))?;
            let mut header = header_for(&metadata, EntryType::Symlink, 0);
            builder
                .append_link(&mut header, relative, &target)
                .map_err(upload_stopped)?;
            summary.symlinks += 1;
        } else if file_type.is_file() {
            let identity = (metadata.dev(), metadata.ino());
            if metadata.nlink() > 1 {
                if let Some(first) = first_links.get(&identity) {
                    let mut header = header_for(&metadata, EntryType::Link, 0);
                    builder
                        .append_link(&mut header, relative, first)
                        .map_err(upload_stopped)?;
                    summary.hard_links += 1;
                    continue;
                }
            }
            // Open without following a link and check that what was opened
            // is the file that was listed: a file swapped for a symlink (or a
            // FIFO) between listing and opening is skipped, never followed.
            let opened = {
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                    .open(entry.path())
            };
            let file = match opened {
                Ok(file) => file,
                Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                    summary.notes.push(format!(
                        "skipped {}: it became a symlink while being archived",
                        relative.display()
                    ));
                    continue;
                }
                Err(e) => return Err(unreadable(entry.path(), e)),
            };
            let same = file
                .metadata()
                .map(|now| {
                    now.is_file() && now.dev() == metadata.dev() && now.ino() == metadata.ino()
                })
                .unwrap_or(false);
            if !same {
                summary.notes.push(format!(
                    "skipped {}: it was replaced while being archived",
                    relative.display()
                ));
                continue;
            }
            if metadata.nlink() > 1 {
                first_links.insert(identity, relative.to_path_buf());
            }
            let size = metadata.len();
            let mut header = header_for(&metadata, EntryType::Regular, size);
            let mut reader = Exactly {
                inner: file,
                remaining: size,
                short: false,
            };
            builder
                .append_data(&mut header, relative, &mut reader)
                .map_err(|e| {
                    if e.kind() == io::ErrorKind::BrokenPipe {
                        upload_stopped(e)
                    } else {
                        unreadable(entry.path(), e)
                    }
                })?;
            let after = std::fs::symlink_metadata(entry.path()).ok();
            let changed = reader.short
                || after.is_none_or(|after| {
                    after.len() != size
                        || after.mtime() != metadata.mtime()
                        || after.mtime_nsec() != metadata.mtime_nsec()
                });
            if changed {
                summary.notes.push(format!(
                    "warning: {} changed while it was read",
                    relative.display()
                ));
            }
            summary.files += 1;
            summary.content_bytes += size;
        } else {
            summary.notes.push(format!(
                "skipped {}: sockets, FIFOs and devices are not archived",
                relative.display()
            ));
        }
    }
    let counted = builder.into_inner().map_err(upload_stopped)?;
    summary.tar_bytes = counted.bytes;
    let sink = counted.inner.finish().map_err(upload_stopped)?;
    let (stored, sha256) = sink.close().map_err(upload_stopped)?;
    summary.stored_bytes = stored;
    summary.sha256 = sha256;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclude_sets_that_leave_nothing_are_recognised() {
        let set =
            |patterns: &[&str]| -> Vec<String> { patterns.iter().map(|p| p.to_string()).collect() };
        for everything in [
            &["**"][..],
            &["*"],
            &["/**"],
            &["?*"],
            &["*", ".*"],
            &["**/*"],
        ] {
            assert!(excludes_everything(&set(everything)), "{everything:?}");
        }
        for something in [
            &[][..],
            &["cache/**"],
            &["*.tmp", ".*"],
            &["[a-z]*"],
            &["a*", "b*"],
        ] {
            assert!(!excludes_everything(&set(something)), "{something:?}");
        }
    }
}
