//! Storage targets: one interface ([`Storage`]) with an adapter per kind of
//! target — S3-family ([`s3`], with `object_store`), SSH ([`ssh`], SFTP with
//! `ssh2`) and local directories ([`local`]).
//!
//! Every adapter streams: `put` takes a stream of chunks and `get` returns
//! one, so objects of any size pass with bounded memory and no temporary
//! copy of the whole object. An object becomes visible only when complete
//! (multipart completion, or a rename of a temporary file). Errors say which
//! step or permission failed and never carry credentials.

pub mod budget;
pub mod fanout;
pub mod hashing;
pub mod local;
pub mod s3;
pub mod ssh;

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::Serialize;
use utoipa::ToSchema;

use cairn_entity::backup_target;

use crate::failure::FailureCode;
use crate::netpolicy::AddressPolicy;
use crate::targets::config::{TargetSettings, PRIVATE_KEY, SECRET_ACCESS_KEY};
use crate::targets::TargetType;
use crate::Cairn;

/// A stream of chunks of an object.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// Why a storage operation failed. The message is safe to show: it never
/// holds credentials or key material.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("no object at {0}")]
    NotFound(String),
    #[error("access denied: {0}")]
    AccessDenied(String),
    #[error("the bucket does not exist: {0}")]
    BucketMissing(String),
    #[error("the server cannot be reached: {0}")]
    Unreachable(String),
    #[error("authentication failed: {0}")]
    AuthenticationFailed(String),
    #[error("the server's host key changed: expected {expected}, got {actual}; if the change is intended, update hostKeyFingerprint")]
    HostKeyMismatch { expected: String, actual: String },
    #[error("refused by the outbound address policy: {0}")]
    AddressRefused(String),
    #[error("invalid object key: {0}")]
    InvalidKey(String),
    #[error("the source of the upload failed: {0}")]
    SourceFailed(String),
    #[error("{0}")]
    Io(String),
}

impl StorageError {
    pub(crate) fn io(context: &str, error: &io::Error) -> StorageError {
        match error.kind() {
            io::ErrorKind::NotFound => StorageError::NotFound(context.to_owned()),
            io::ErrorKind::PermissionDenied => {
                StorageError::AccessDenied(format!("{context}: {error}"))
            }
            _ => StorageError::Io(format!("{context}: {error}")),
        }
    }
}

/// Result of storage operations.
pub type StorageResult<T> = Result<T, StorageError>;

/// A key inside a target: relative, `/`-separated, without empty, `.` or
/// `..` segments.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObjectKey(String);

impl ObjectKey {
    pub fn parse(key: &str) -> StorageResult<ObjectKey> {
        let invalid = |why: &str| StorageError::InvalidKey(format!("{key:?} {why}"));
        if key.is_empty() || key.len() > 1024 {
            return Err(invalid("must be 1–1024 characters"));
        }
        if key.starts_with('/') {
            return Err(invalid("must be relative"));
        }
        if key
            .split('/')
            .any(|segment| segment.is_empty() || segment == "." || segment == "..")
        {
            return Err(invalid("must not contain empty, '.' or '..' segments"));
        }
        if key.chars().any(|c| c.is_control() || c == '\\') {
            return Err(invalid(
                "must not contain control characters or backslashes",
            ));
        }
        Ok(ObjectKey(key.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An object as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
}

/// The interface every target kind implements.
#[async_trait::async_trait]
pub trait Storage: Send + Sync {
    /// Reaches the target and checks it exists (bucket, directory, server).
    async fn connect(&self) -> StorageResult<()>;

    /// Writes `body` to `key`, replacing what was there; the object becomes
    /// visible only when complete, and a failed write leaves nothing behind.
    /// Returns the number of bytes written.
    async fn put(&self, key: &ObjectKey, body: ByteStream) -> StorageResult<u64>;

    /// Reads `key`: its size and its bytes.
    async fn get(&self, key: &ObjectKey) -> StorageResult<(u64, ByteStream)>;

    /// The size of `key`, or `None` when it does not exist.
    async fn head(&self, key: &ObjectKey) -> StorageResult<Option<u64>>;

    /// Every object whose key starts with `prefix`.
    async fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectInfo>>;

    /// Deletes `key`; deleting a missing object is not an error.
    async fn delete(&self, key: &ObjectKey) -> StorageResult<()>;

    /// A URL that reads `key` without credentials until `expires_in` has
    /// passed, where the backend supports it.
    async fn presigned_get(
        &self,
        key: &ObjectKey,
        expires_in: Duration,
    ) -> StorageResult<Option<url::Url>>;

    /// Removes what an interrupted `put` of `key` left behind (temporary
    /// files of a writer that died before it could clean up) and returns
    /// how many were removed. S3-family targets have nothing to remove
    /// here: a multipart upload of a killed process is ended by the
    /// bucket's `AbortIncompleteMultipartUpload` lifecycle rule.
    async fn remove_incomplete(&self, _key: &ObjectKey) -> StorageResult<usize> {
        Ok(0)
    }

    /// The SSH host key fingerprint the last connection saw, for targets
    /// that have one.
    fn observed_host_key(&self) -> Option<String> {
        None
    }

    /// Bytes free for this target's archives, for targets that can tell
    /// (a local directory); `None` for the others.
    async fn free_space(&self) -> StorageResult<Option<u64>> {
        Ok(None)
    }
}

/// How long a connection test retries, all requests together.
pub const PROBE_RETRY_BUDGET: Duration = Duration::from_secs(5);

/// What a storage is opened for: a connection test gives up on an
/// unreachable target within seconds; a transfer retries for as long as its
/// attempt's budget (`storage.retry_budget_seconds`) lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    Probe,
    Transfer,
}

/// One step of a connection test.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Check {
    /// `connect`, `write`, `read`, `list` or `delete`.
    pub name: &'static str,
    pub ok: bool,
    /// What failed, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The outcome of a connection test: every step, in order.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct TestReport {
    pub ok: bool,
    pub checks: Vec<Check>,
}

/// The probe object of a connection test.
const PROBE_PREFIX: &str = ".cairn-probe/";

/// Writes, reads back, lists and deletes a probe object, reporting each
/// step; a failed step makes the later ones "not attempted".
pub async fn test_connection(storage: &dyn Storage) -> TestReport {
    let key = ObjectKey(format!("{PROBE_PREFIX}{}", uuid::Uuid::now_v7()));
    let payload = Bytes::from(format!("cairn connection test {key}\n"));

    let connect = storage.connect().await;
    let write = match &connect {
        Ok(()) => Some(
            storage
                .put(&key, single_chunk(payload.clone()))
                .await
                .map(|_| ()),
        ),
        Err(_) => None,
    };
    let wrote = matches!(write, Some(Ok(())));
    let (read, list, delete) = if wrote {
        let read = read_all(storage, &key, 1 << 20).await.and_then(|bytes| {
            if bytes == payload {
                Ok(())
            } else {
                Err(StorageError::Io(
                    "the probe read back differs from what was written".into(),
                ))
            }
        });
        let list = storage.list(PROBE_PREFIX).await.and_then(|objects| {
            if objects.iter().any(|o| o.key == key.as_str()) {
                Ok(())
            } else {
                Err(StorageError::Io(
                    "the probe is missing from the listing".into(),
                ))
            }
        });
        let delete = match storage.delete(&key).await {
            Ok(()) => match storage.head(&key).await {
                Ok(None) => Ok(()),
                Ok(Some(_)) => Err(StorageError::Io(
                    "the probe is still there after delete".into(),
                )),
                Err(error) => Err(error),
            },
            Err(error) => Err(error),
        };
        (Some(read), Some(list), Some(delete))
    } else {
        (None, None, None)
    };

    let checks: Vec<Check> = [
        ("connect", Some(connect)),
        ("write", write),
        ("read", read),
        ("list", list),
        ("delete", delete),
    ]
    .into_iter()
    .map(|(name, outcome)| match outcome {
        None => Check {
            name,
            ok: false,
            error: Some("not attempted: an earlier check failed".into()),
        },
        Some(Ok(())) => Check {
            name,
            ok: true,
            error: None,
        },
        Some(Err(error)) => Check {
            name,
            ok: false,
            error: Some(error.to_string()),
        },
    })
    .collect();
    TestReport {
        ok: checks.iter().all(|c| c.ok),
        checks,
    }
}

/// What the async side sends to a writer on a blocking thread.
pub(crate) enum Chunk {
    Data(Bytes),
    /// The source ended normally: the writer may make the object visible.
    /// A channel that closes without it (the upload was cancelled or the
    /// source failed) means discard.
    End,
    /// The source failed: the writer discards what it wrote.
    Abort,
}

/// Chunks queued between the async side and a blocking thread.
pub(crate) const QUEUE: usize = 8;

/// Tells a blocking task that the future which started it was dropped
/// (a `put`, or a restore the worker stopped).
/// A writer that already received [`Chunk::End`] keeps running after the
/// drop (fsync, close); it checks this just before it publishes, so a
/// cancelled upload publishes nothing even in its last moments.
#[derive(Clone, Default)]
pub struct Cancellation(Arc<std::sync::atomic::AtomicBool>);

impl Cancellation {
    pub fn is_cancelled(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn cancel(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Cancels when dropped; the `put` holds it until it returns.
    pub fn guard(&self) -> CancelOnDrop {
        CancelOnDrop(self.0.clone())
    }
}

pub struct CancelOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Sends `body` to a blocking writer; a failing source is reported as
/// [`StorageError::SourceFailed`] after telling the writer to abort. When
/// the writer stops early, feeding stops and the writer's result says why.
pub(crate) async fn feed(
    mut body: ByteStream,
    sender: tokio::sync::mpsc::Sender<Chunk>,
) -> StorageResult<()> {
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(bytes) => {
                if sender.send(Chunk::Data(bytes)).await.is_err() {
                    return Ok(());
                }
            }
            Err(error) => {
                let _ = sender.send(Chunk::Abort).await;
                return Err(StorageError::SourceFailed(error.to_string()));
            }
        }
    }
    let _ = sender.send(Chunk::End).await;
    Ok(())
}

/// The stream of chunks a blocking reader sends.
pub fn received(receiver: tokio::sync::mpsc::Receiver<io::Result<Bytes>>) -> ByteStream {
    Box::pin(futures::stream::unfold(
        receiver,
        |mut receiver| async move { receiver.recv().await.map(|item| (item, receiver)) },
    ))
}

/// A stream of one chunk.
pub fn single_chunk(bytes: Bytes) -> ByteStream {
    Box::pin(futures::stream::once(async move { Ok(bytes) }))
}

/// Reads a whole (small) object, refusing more than `limit` bytes.
pub async fn read_all(
    storage: &dyn Storage,
    key: &ObjectKey,
    limit: usize,
) -> StorageResult<Bytes> {
    let (_, mut stream) = storage.get(key).await?;
    let mut buffer = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| StorageError::Io(format!("reading {key}: {e}")))?;
        if buffer.len() + chunk.len() > limit {
            return Err(StorageError::Io(format!(
                "{key} is larger than {limit} bytes"
            )));
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buffer))
}

/// The address policy of this server.
pub fn address_policy(cairn: &Cairn) -> AddressPolicy {
    AddressPolicy {
        allow_private: cairn.config.private_endpoints_allowed(),
    }
}

/// Why a stored target may not be used now, whatever was allowed when it
/// was saved: `(failure code, message naming the setting)`. Local targets
/// while `allow_local_backups` is off; an organization's SSH target
/// without a key of its own (the SSH agent holds the operator's keys and
/// is for system-level targets only).
pub fn refusal(cairn: &Cairn, target: &backup_target::Model) -> Option<(FailureCode, String)> {
    match TargetType::parse(&target.target_type)? {
        TargetType::Local if !cairn.config.allow_local_backups => Some((
            FailureCode::LocalBackupsDisabled,
            "local targets are disabled on this server (allow_local_backups: false, \
             CAIRN_ALLOW_LOCAL_BACKUPS); use another target"
                .to_owned(),
        )),
        TargetType::Ssh if target.organization_id.is_some() => {
            let has_key = cairn
                .master_key
                .open_fields(target.id, target.secrets_ciphertext.as_deref())
                .is_ok_and(|secrets| secrets.contains_key(PRIVATE_KEY));
            (!has_key).then(|| {
                (
                    FailureCode::SshKeyRequired,
                    "the SSH target has no private key of its own; an organization's target \
                     never uses the server's SSH agent. Set config.privateKey"
                        .to_owned(),
                )
            })
        }
        _ => None,
    }
}

/// The address policy of a target's connections: an organization's
/// targets follow the server's; system-level targets are the operator's own
/// infrastructure (the compose file's S3 server on a private network) and
/// may use private addresses. Link-local and metadata addresses are refused
/// for both.
pub fn target_policy(cairn: &Cairn, organization_id: Option<uuid::Uuid>) -> AddressPolicy {
    match organization_id {
        Some(_) => address_policy(cairn),
        None => AddressPolicy {
            allow_private: true,
        },
    }
}

/// Opens the storage of a target, with its secrets; refuses (409) a target
/// that may not be used now ([`refusal`]).
pub fn open(
    cairn: &Cairn,
    target: &backup_target::Model,
    purpose: Purpose,
) -> crate::Result<Arc<dyn Storage>> {
    if let Some((_, message)) = refusal(cairn, target) {
        return Err(crate::Error::Conflict {
            field: None,
            message,
        });
    }
    let (_, settings) = TargetSettings::of(target)?;
    let secrets = cairn
        .master_key
        .open_fields(target.id, target.secrets_ciphertext.as_deref())?;
    let policy = target_policy(cairn, target.organization_id);
    // One budget for everything this opening does: an attempt opens its
    // target once.
    let budget = budget::RetryBudget::new(match purpose {
        Purpose::Probe => PROBE_RETRY_BUDGET,
        Purpose::Transfer => Duration::from_secs(cairn.config.storage.retry_budget_seconds),
    });
    Ok(match settings {
        TargetSettings::S3(settings) => {
            // Validation required it; without it the sealed secrets are
            // damaged, which no retry mends.
            let secret = secrets.get(SECRET_ACCESS_KEY).cloned().ok_or_else(|| {
                anyhow::anyhow!("target {} has no sealed {SECRET_ACCESS_KEY}", target.id)
            })?;
            Arc::new(s3::S3Storage::new(
                s3::S3Options {
                    bucket: settings.bucket,
                    region: settings.region,
                    access_key_id: settings.access_key_id,
                    secret_access_key: secrecy::SecretString::from(secret),
                    endpoint: settings.endpoint,
                    prefix: settings.prefix,
                    retry_budget: budget,
                },
                policy,
            )?)
        }
        TargetSettings::Ssh(settings) => Arc::new(ssh::SshStorage::new(
            ssh::SshOptions {
                host: settings.host,
                port: settings.port,
                username: settings.username,
                path: settings.path,
                private_key: secrets
                    .get(PRIVATE_KEY)
                    .cloned()
                    .map(secrecy::SecretString::from),
                host_key_fingerprint: settings.host_key_fingerprint,
                purpose,
                retry_budget: budget,
            },
            policy,
        )),
        TargetSettings::Local(settings) => {
            let storage = local::LocalStorage::new(settings.path);
            Arc::new(match target.organization_id {
                Some(_) => storage.refusing_links_below(cairn.config.local_backup_root()),
                None => storage,
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_relative_and_clean() {
        assert!(ObjectKey::parse("acme/shop/data/2024-01-15T02-00-00-000Z.tar.zst").is_ok());
        assert!(ObjectKey::parse(".cairn-probe/x").is_ok());
        for bad in [
            "",
            "/etc/passwd",
            "a/../b",
            "../a",
            "a//b",
            "a/./b",
            "a\\b",
            "a\0b",
        ] {
            assert!(ObjectKey::parse(bad).is_err(), "{bad:?}");
        }
    }
}
