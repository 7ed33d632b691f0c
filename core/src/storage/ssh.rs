//! SSH targets: a directory on a server, written over SFTP with `ssh2`
//! (libssh2). Every libssh2 call is blocking, so each operation runs on a
//! blocking thread with its own session; chunks cross between that thread
//! and the async side through bounded channels, so memory stays bounded.
//!
//! The server's host key is checked on every connection against the
//! SHA-256 fingerprint stored with the target (`hostKeyFingerprint`); a
//! target without one trusts the key it first sees and reports it (see
//! [`SshStorage::observed_fingerprint`]) so that it can be stored. Writes go
//! to a temporary name in the destination directory and are renamed into
//! place when complete. Connection failures are retried with jittered
//! exponential backoff inside a short budget; authentication failures and
//! host key mismatches are not retried.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use secrecy::{ExposeSecret, SecretString};
use ssh2::{ErrorCode, HashType, MethodType, Session, Sftp};
use tokio::sync::{mpsc, oneshot};

use super::budget::RetryBudget;
use super::{
    feed, received, ByteStream, Cancellation, Chunk, ObjectInfo, ObjectKey, Purpose, Storage,
    StorageError, StorageResult, QUEUE,
};
use crate::netpolicy::AddressPolicy;

const TEMP_MARKER: &str = ".cairn-tmp-";
/// Marks an old object moved aside while it is being replaced.
const OLD_MARKER: &str = ".cairn-old-";
/// Read size: libssh2 keeps more SFTP read requests in flight for larger
/// reads, which is what makes SFTP fast.
const CHUNK: usize = 8 * 1024 * 1024;
/// Uploads are written to SFTP in batches of this size.
const WRITE_BATCH: usize = 4 * 1024 * 1024;
/// Chunks of a download queued for the reader: with 8 MiB reads, two.
const READ_QUEUE: usize = 2;
const PREFERRED_CIPHERS: &str = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr,aes256-ctr";
/// The most connection retries of one operation; the attempt's budget
/// usually ends them first.
const MAX_CONNECT_ATTEMPTS: usize = 1000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection test's limit for connecting and for any single call.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// libssh2's timeout for any single blocking call.
const SESSION_TIMEOUT_MS: u32 = 60_000;

// SFTP status codes (draft-ietf-secsh-filexfer-02).
const SFTP_NO_SUCH_FILE: i32 = 2;
const SFTP_PERMISSION_DENIED: i32 = 3;
const SFTP_FAILURE: i32 = 4;

/// Settings of an SSH target.
pub struct SshOptions {
    pub host: String,
    pub port: u16,
    pub username: String,
    /// Absolute directory on the server.
    pub path: String,
    /// An unencrypted PEM private key; without it, the SSH agent is used.
    pub private_key: Option<SecretString>,
    /// `SHA256:<base64>` of the server's host key, when known.
    pub host_key_fingerprint: Option<String>,
    /// A connection test gives up fast; a transfer waits and retries.
    pub purpose: Purpose,
    /// Connections are retried while the attempt's budget lasts.
    pub retry_budget: RetryBudget,
}

pub struct SshStorage {
    options: Arc<SshOptions>,
    policy: AddressPolicy,
    observed: Arc<Mutex<Option<String>>>,
}

impl SshStorage {
    pub fn new(options: SshOptions, policy: AddressPolicy) -> SshStorage {
        SshStorage {
            options: Arc::new(options),
            policy,
            observed: Arc::new(Mutex::new(None)),
        }
    }

    /// The host key fingerprint seen by the last connection.
    pub fn observed_fingerprint(&self) -> Option<String> {
        self.observed.lock().ok().and_then(|seen| seen.clone())
    }

    fn remote(&self, key: &ObjectKey) -> PathBuf {
        Path::new(&self.options.path).join(key.as_str())
    }

    /// Runs `work` on a blocking thread with a connected SFTP session,
    /// retrying the connection (not the work) when it fails transiently.
    /// The future owns what it needs, so it can outlive `self` (a download
    /// keeps reading after `get` returns).
    fn with_sftp<T, F>(
        &self,
        work: F,
    ) -> impl std::future::Future<Output = StorageResult<T>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(&Sftp) -> StorageResult<T> + Send + 'static,
    {
        let options = self.options.clone();
        let observed = self.observed.clone();
        let policy = self.policy;
        async move {
            let addresses =
                policy
                    .resolve(&options.host, options.port)
                    .await
                    .map_err(|reason| {
                        if reason.contains("cannot resolve") {
                            StorageError::Unreachable(reason)
                        } else {
                            StorageError::AddressRefused(reason)
                        }
                    })?;
            let budget = options.retry_budget.clone();
            let connected = (|| {
                let addresses = addresses.clone();
                let options = options.clone();
                let observed = observed.clone();
                let budget = budget.clone();
                async move {
                    if budget.is_exhausted() {
                        return Err(StorageError::Unreachable(budget.exhausted_message()));
                    }
                    let started = std::time::Instant::now();
                    let outcome = tokio::task::spawn_blocking(move || {
                        connect(&options, &addresses, &observed)
                    })
                    .await
                    .map_err(|e| StorageError::Io(format!("SSH worker thread: {e}")))?;
                    match &outcome {
                        Ok(_) => budget.succeeded(),
                        Err(StorageError::Unreachable(reason)) => budget.failed(started, reason),
                        Err(_) => {}
                    }
                    outcome
                }
            })
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_delay(Duration::from_secs(15))
                    .with_max_times(match options.purpose {
                        Purpose::Probe => 1,
                        Purpose::Transfer => MAX_CONNECT_ATTEMPTS,
                    })
                    .with_jitter(),
            )
            .when(|error| matches!(error, StorageError::Unreachable(_)) && !budget.is_exhausted())
            .await
            .map_err(|error| match error {
                // The budget's message ends with the last failure.
                StorageError::Unreachable(_) if budget.is_exhausted() => {
                    StorageError::Unreachable(budget.exhausted_message())
                }
                other => other,
            })?;
            tokio::task::spawn_blocking(move || {
                let (session, sftp) = connected;
                let outcome = work(&sftp);
                drop(sftp);
                let _ = session.disconnect(None, "done", None);
                outcome
            })
            .await
            .map_err(|e| StorageError::Io(format!("SSH worker thread: {e}")))?
        }
    }
}

/// The SHA-256 fingerprint of a session's host key, as OpenSSH prints it.
fn fingerprint(session: &Session) -> Option<String> {
    session
        .host_key_hash(HashType::Sha256)
        .map(|hash| format!("SHA256:{}", STANDARD_NO_PAD.encode(hash)))
}

/// Connects, checks the host key, authenticates and opens SFTP.
fn connect(
    options: &SshOptions,
    addresses: &[SocketAddr],
    observed: &Mutex<Option<String>>,
) -> StorageResult<(Session, Sftp)> {
    let host = &options.host;
    let mut last_error = None;
    let mut stream = None;
    for address in addresses {
        let timeout = match options.purpose {
            Purpose::Probe => PROBE_TIMEOUT,
            Purpose::Transfer => CONNECT_TIMEOUT,
        };
        match TcpStream::connect_timeout(address, timeout) {
            Ok(connected) => {
                stream = Some(connected);
                break;
            }
            Err(e) => last_error = Some(e),
        }
    }
    let stream = stream.ok_or_else(|| {
        StorageError::Unreachable(format!(
            "{host}:{}: {}",
            options.port,
            last_error.map(|e| e.to_string()).unwrap_or_default()
        ))
    })?;
    let mut session = Session::new().map_err(|e| StorageError::Io(format!("libssh2: {e}")))?;
    session.set_timeout(match options.purpose {
        Purpose::Probe => PROBE_TIMEOUT.as_millis() as u32,
        Purpose::Transfer => SESSION_TIMEOUT_MS,
    });
    // Prefer the AEAD ciphers (hardware AES, no separate MAC); libssh2
    // keeps its defaults for anything the server does not offer.
    for direction in [MethodType::CryptCs, MethodType::CryptSc] {
        let _ = session.method_pref(direction, PREFERRED_CIPHERS);
    }
    session.set_tcp_stream(stream);
    session.handshake().map_err(|e| {
        StorageError::Unreachable(format!("SSH handshake with {host}: {}", e.message()))
    })?;
    let actual = fingerprint(&session)
        .ok_or_else(|| StorageError::Io(format!("{host} presented no host key")))?;
    if let Ok(mut seen) = observed.lock() {
        *seen = Some(actual.clone());
    }
    if let Some(expected) = &options.host_key_fingerprint {
        if expected != &actual {
            return Err(StorageError::HostKeyMismatch {
                expected: expected.clone(),
                actual,
            });
        }
    }
    let user = &options.username;
    let authenticated = match &options.private_key {
        Some(key) => session.userauth_pubkey_memory(user, None, key.expose_secret(), None),
        None => session.userauth_agent(user),
    };
    if let Err(error) = authenticated {
        let how = if options.private_key.is_some() {
            "the private key"
        } else {
            "the SSH agent's keys"
        };
        return Err(StorageError::AuthenticationFailed(format!(
            "{host} refused user '{user}' with {how} ({})",
            error.message()
        )));
    }
    if !session.authenticated() {
        return Err(StorageError::AuthenticationFailed(format!(
            "{host} did not authenticate user '{user}'"
        )));
    }
    let sftp = session.sftp().map_err(|e| {
        StorageError::Io(format!("{host} offers no SFTP subsystem: {}", e.message()))
    })?;
    Ok((session, sftp))
}

fn sftp_error(what: &str, error: &ssh2::Error) -> StorageError {
    match error.code() {
        ErrorCode::SFTP(SFTP_NO_SUCH_FILE) => StorageError::NotFound(what.to_owned()),
        ErrorCode::SFTP(SFTP_PERMISSION_DENIED) => {
            StorageError::AccessDenied(format!("{what}: permission denied"))
        }
        _ => StorageError::Io(format!("{what}: {}", error.message())),
    }
}

fn is_missing(error: &ssh2::Error) -> bool {
    matches!(error.code(), ErrorCode::SFTP(SFTP_NO_SUCH_FILE))
}

/// `mkdir -p` over SFTP.
fn create_dirs(sftp: &Sftp, directory: &Path) -> StorageResult<()> {
    let mut current = PathBuf::new();
    for component in directory.components() {
        current.push(component);
        if current.as_os_str() == "/" {
            continue;
        }
        match sftp.stat(&current) {
            Ok(stat) if stat.is_dir() => continue,
            Ok(_) => {
                return Err(StorageError::Io(format!(
                    "{} is not a directory",
                    current.display()
                )))
            }
            Err(e) if is_missing(&e) => {}
            Err(e) => return Err(sftp_error(&current.display().to_string(), &e)),
        }
        if let Err(e) = sftp.mkdir(&current, 0o750) {
            // Another writer may have created it meanwhile.
            if !sftp.stat(&current).map(|s| s.is_dir()).unwrap_or(false) {
                return Err(sftp_error(&format!("creating {}", current.display()), &e));
            }
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl Storage for SshStorage {
    async fn connect(&self) -> StorageResult<()> {
        let directory = PathBuf::from(&self.options.path);
        self.with_sftp(move |sftp| create_dirs(sftp, &directory))
            .await
    }

    async fn put(&self, key: &ObjectKey, body: ByteStream) -> StorageResult<u64> {
        let destination = self.remote(key);
        let (sender, mut receiver) = mpsc::channel::<Chunk>(QUEUE);
        let what = key.to_string();
        let cancellation = Cancellation::default();
        let _cancel_on_drop = cancellation.guard();
        let writer = self.with_sftp(move |sftp| {
            let parent = destination
                .parent()
                .ok_or_else(|| StorageError::InvalidKey(what.clone()))?
                .to_path_buf();
            let name = destination
                .file_name()
                .ok_or_else(|| StorageError::InvalidKey(what.clone()))?
                .to_string_lossy()
                .into_owned();
            create_dirs(sftp, &parent)?;
            let temp = parent.join(format!(".{name}{TEMP_MARKER}{}", uuid::Uuid::now_v7()));
            let mut file = sftp
                .create(&temp)
                .map_err(|e| sftp_error(&format!("writing in {}", parent.display()), &e))?;
            let mut written = 0u64;
            // Small chunks are gathered into large writes: libssh2 keeps
            // more SFTP write requests in flight for a larger write.
            let mut pending: Vec<u8> = Vec::with_capacity(WRITE_BATCH);
            let mut write = |data: &[u8]| -> StorageResult<()> {
                file.write_all(data)
                    .map_err(|e| StorageError::Io(format!("writing {what}: {e}")))
            };
            let outcome = loop {
                match receiver.blocking_recv() {
                    Some(Chunk::Data(bytes)) => {
                        written += bytes.len() as u64;
                        let step = if pending.is_empty() && bytes.len() >= WRITE_BATCH {
                            write(&bytes)
                        } else {
                            pending.extend_from_slice(&bytes);
                            if pending.len() >= WRITE_BATCH {
                                let flushed = write(&pending);
                                pending.clear();
                                flushed
                            } else {
                                Ok(())
                            }
                        };
                        if let Err(error) = step {
                            break Err(error);
                        }
                    }
                    Some(Chunk::End) => break write(&pending),
                    Some(Chunk::Abort) => break Err(StorageError::SourceFailed("aborted".into())),
                    // Cancelled: the temporary file goes, nothing is published.
                    None => {
                        break Err(StorageError::SourceFailed(
                            "the upload was cancelled".into(),
                        ))
                    }
                }
            };
            let finished = outcome.and_then(|()| {
                // fsync@openssh.com, where the server offers it.
                let _ = file.fsync();
                file.close()
                    .map_err(|e| sftp_error(&format!("closing {what}"), &e))
            });
            drop(file);
            let finished = finished.and_then(|()| {
                if cancellation.is_cancelled() {
                    Err(StorageError::SourceFailed(
                        "the upload was cancelled".into(),
                    ))
                } else {
                    Ok(())
                }
            });
            if let Err(error) = finished {
                let _ = sftp.unlink(&temp);
                return Err(error);
            }
            // SFTP v3 renames never replace. To replace an object, move the
            // old one aside, move the new one in, then remove the old one;
            // if the second step fails, the old one is moved back. Neither
            // copy is ever deleted before the other is in place.
            if let Err(first) = sftp.rename(&temp, &destination, None) {
                let exists = matches!(first.code(), ErrorCode::SFTP(SFTP_FAILURE))
                    && sftp.stat(&destination).is_ok();
                if !exists {
                    let _ = sftp.unlink(&temp);
                    return Err(sftp_error(&format!("renaming {what} into place"), &first));
                }
                let aside = parent.join(format!(".{name}{OLD_MARKER}{}", uuid::Uuid::now_v7()));
                sftp.rename(&destination, &aside, None)
                    .map_err(|e| sftp_error(&format!("moving the old {what} aside"), &e))?;
                if let Err(error) = sftp.rename(&temp, &destination, None) {
                    let _ = sftp.rename(&aside, &destination, None);
                    let _ = sftp.unlink(&temp);
                    return Err(sftp_error(&format!("renaming {what} into place"), &error));
                }
                let _ = sftp.unlink(&aside);
            }
            Ok(written)
        });
        let feeder = feed(body, sender);
        let (written, fed) = tokio::join!(writer, feeder);
        fed?;
        written
    }

    async fn get(&self, key: &ObjectKey) -> StorageResult<(u64, ByteStream)> {
        let path = self.remote(key);
        let what = key.to_string();
        let (size_sender, size_receiver) = oneshot::channel::<StorageResult<u64>>();
        let (sender, receiver) = mpsc::channel::<std::io::Result<Bytes>>(READ_QUEUE);
        let reader = self.with_sftp(move |sftp| {
            let opened = sftp
                .open(&path)
                .map_err(|e| sftp_error(&what, &e))
                .and_then(|mut file| {
                    let size = file
                        .stat()
                        .map_err(|e| sftp_error(&what, &e))?
                        .size
                        .unwrap_or(0);
                    Ok((file, size))
                });
            let (mut file, size) = match opened {
                Ok(opened) => opened,
                Err(error) => {
                    let _ = size_sender.send(Err(error));
                    return Ok(());
                }
            };
            if size_sender.send(Ok(size)).is_err() {
                return Ok(());
            }
            loop {
                let mut buffer = vec![0u8; CHUNK];
                match file.read(&mut buffer) {
                    Ok(0) => return Ok(()),
                    Ok(n) => {
                        buffer.truncate(n);
                        if sender.blocking_send(Ok(Bytes::from(buffer))).is_err() {
                            return Ok(());
                        }
                    }
                    Err(e) => {
                        let _ = sender.blocking_send(Err(e));
                        return Ok(());
                    }
                }
            }
        });
        // The reader runs until the stream is dropped or drained.
        let reader = tokio::spawn(reader);
        let size = match size_receiver.await {
            Ok(result) => result?,
            // The connection failed before the file was opened.
            Err(_) => {
                return Err(match reader.await {
                    Ok(Err(error)) => error,
                    _ => StorageError::Io(format!("reading {key}: the SSH session ended")),
                })
            }
        };
        Ok((size, received(receiver)))
    }

    async fn head(&self, key: &ObjectKey) -> StorageResult<Option<u64>> {
        let path = self.remote(key);
        let what = key.to_string();
        self.with_sftp(move |sftp| match sftp.stat(&path) {
            Ok(stat) => Ok(Some(stat.size.unwrap_or(0))),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(sftp_error(&what, &e)),
        })
        .await
    }

    async fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectInfo>> {
        let root = PathBuf::from(&self.options.path);
        let prefix = prefix.to_owned();
        self.with_sftp(move |sftp| {
            let start = match prefix.rfind('/') {
                Some(index) => root.join(&prefix[..index]),
                None => root.clone(),
            };
            let mut objects = Vec::new();
            let mut pending = vec![start];
            while let Some(directory) = pending.pop() {
                let entries = match sftp.readdir(&directory) {
                    Ok(entries) => entries,
                    Err(e) if is_missing(&e) => continue,
                    Err(e) => {
                        return Err(sftp_error(&format!("listing {}", directory.display()), &e))
                    }
                };
                for (path, stat) in entries {
                    if stat.is_dir() {
                        pending.push(path);
                        continue;
                    }
                    if !stat.is_file() {
                        continue;
                    }
                    let Ok(relative) = path.strip_prefix(&root) else {
                        continue;
                    };
                    let key = relative.to_string_lossy().into_owned();
                    if key.starts_with(&prefix)
                        && !key.contains(TEMP_MARKER)
                        && !key.contains(OLD_MARKER)
                    {
                        objects.push(ObjectInfo {
                            key,
                            size: stat.size.unwrap_or(0),
                        });
                    }
                }
            }
            objects.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(objects)
        })
        .await
    }

    async fn delete(&self, key: &ObjectKey) -> StorageResult<()> {
        let path = self.remote(key);
        let what = key.to_string();
        self.with_sftp(move |sftp| match sftp.unlink(&path) {
            Ok(()) => Ok(()),
            Err(e) if is_missing(&e) => Ok(()),
            Err(e) => Err(sftp_error(&format!("deleting {what}"), &e)),
        })
        .await
    }

    async fn remove_incomplete(&self, key: &ObjectKey) -> StorageResult<usize> {
        let path = self.remote(key);
        let what = key.to_string();
        self.with_sftp(move |sftp| {
            let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
                return Ok(0);
            };
            let leftover = format!(".{}{TEMP_MARKER}", name.to_string_lossy());
            let entries = match sftp.readdir(parent) {
                Ok(entries) => entries,
                Err(e) if is_missing(&e) => return Ok(0),
                Err(e) => return Err(sftp_error(&format!("cleaning up {what}"), &e)),
            };
            let mut removed = 0;
            for (entry, _) in entries {
                let matches = entry
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&leftover));
                if matches {
                    match sftp.unlink(&entry) {
                        Ok(()) => removed += 1,
                        Err(e) if is_missing(&e) => {}
                        Err(e) => return Err(sftp_error(&format!("cleaning up {what}"), &e)),
                    }
                }
            }
            Ok(removed)
        })
        .await
    }

    async fn presigned_get(
        &self,
        _key: &ObjectKey,
        _expires_in: Duration,
    ) -> StorageResult<Option<url::Url>> {
        Ok(None)
    }

    fn observed_host_key(&self) -> Option<String> {
        self.observed_fingerprint()
    }
}
