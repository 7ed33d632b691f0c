//! The storage adapters against real servers on loopback: s3s-fs (an S3
//! server that checks signatures) and OpenSSH's sshd, both started by
//! `scripts/test.sh`; local directories on disk.

use std::time::Duration;

use bytes::Bytes;
use cairn_core::netpolicy::AddressPolicy;
use cairn_core::storage::budget::RetryBudget;
use cairn_core::storage::s3::{S3Options, S3Storage};
use cairn_core::storage::ssh::{SshOptions, SshStorage};
use cairn_core::storage::{self, ByteStream, ObjectKey, Purpose, Storage, StorageError};
use futures::StreamExt;
use secrecy::SecretString;
use sha2::{Digest, Sha256};

use crate::helpers::{env, s3_objects, unique, FaultProxy};

const OPEN: AddressPolicy = AddressPolicy {
    allow_private: true,
};

fn key(text: &str) -> ObjectKey {
    ObjectKey::parse(text).unwrap()
}

pub fn s3(prefix: Option<&str>, secret: Option<&str>, bucket: Option<&str>) -> S3Storage {
    s3_through(
        env("TEST_S3_ENDPOINT"),
        prefix,
        secret,
        bucket,
        Duration::from_secs(5),
    )
}

/// An S3 storage that reaches the server at `endpoint` (the test server, or
/// a fault-injecting proxy in front of it) with a budget of `budget`.
fn s3_through(
    endpoint: String,
    prefix: Option<&str>,
    secret: Option<&str>,
    bucket: Option<&str>,
    budget: Duration,
) -> S3Storage {
    S3Storage::new(
        S3Options {
            bucket: bucket
                .map(str::to_owned)
                .unwrap_or_else(|| env("TEST_S3_BUCKET")),
            region: "us-east-1".into(),
            access_key_id: env("TEST_S3_ACCESS_KEY"),
            secret_access_key: SecretString::from(
                secret
                    .map(str::to_owned)
                    .unwrap_or_else(|| env("TEST_S3_SECRET_KEY")),
            ),
            endpoint: Some(endpoint),
            prefix: prefix.map(str::to_owned),
            retry_budget: RetryBudget::new(budget),
        },
        OPEN,
    )
    .unwrap()
}

pub fn ssh(path: &str, key_file: Option<&str>, fingerprint: Option<&str>) -> SshStorage {
    let key_file = key_file
        .map(str::to_owned)
        .unwrap_or_else(|| env("TEST_SSH_KEY"));
    SshStorage::new(
        SshOptions {
            host: env("TEST_SSH_HOST"),
            port: env("TEST_SSH_PORT").parse().unwrap(),
            username: env("TEST_SSH_USER"),
            path: path.to_owned(),
            private_key: Some(SecretString::from(
                std::fs::read_to_string(key_file).unwrap(),
            )),
            host_key_fingerprint: fingerprint.map(str::to_owned),
            purpose: Purpose::Transfer,
            retry_budget: RetryBudget::new(Duration::from_secs(5)),
        },
        OPEN,
    )
}

/// `total` deterministic bytes in chunks of `chunk`, and their SHA-256.
pub fn pattern(total: usize, chunk: usize) -> (ByteStream, String) {
    let mut digest = Sha256::new();
    let mut chunks = Vec::new();
    let mut offset = 0;
    while offset < total {
        let n = chunk.min(total - offset);
        let bytes: Vec<u8> = (offset..offset + n)
            .map(|i| (i % 251) as u8 ^ (i / 4096) as u8)
            .collect();
        digest.update(&bytes);
        chunks.push(Bytes::from(bytes));
        offset += n;
    }
    let hex = format!("{:x}", digest.finalize());
    (
        Box::pin(futures::stream::iter(chunks.into_iter().map(Ok))),
        hex,
    )
}

/// Reads an object back: its size and SHA-256.
pub async fn digest_of(storage: &dyn Storage, key: &ObjectKey) -> (u64, u64, String) {
    let (announced, mut stream) = storage.get(key).await.unwrap();
    let mut digest = Sha256::new();
    let mut read = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        read += chunk.len() as u64;
        digest.update(&chunk);
    }
    (announced, read, format!("{:x}", digest.finalize()))
}

/// A stream that fails after `good` bytes, as an archiver dying midway.
fn failing_after(good: usize) -> ByteStream {
    let (head, _) = pattern(good, 1 << 20);
    Box::pin(head.chain(futures::stream::once(async {
        Err(std::io::Error::other("the archiver died"))
    })))
}

async fn exercise(storage: &dyn Storage, base: &str) {
    storage.connect().await.unwrap();
    let small = key(&format!("{base}/app/data/small.bin"));
    let other = key(&format!("{base}/other/x.bin"));
    let written = storage
        .put(
            &small,
            storage::single_chunk(Bytes::from_static(b"hello, cairn")),
        )
        .await
        .unwrap();
    assert_eq!(written, 12);
    storage
        .put(&other, storage::single_chunk(Bytes::from_static(b"x")))
        .await
        .unwrap();
    assert_eq!(storage.head(&small).await.unwrap(), Some(12));
    assert_eq!(
        storage
            .head(&key(&format!("{base}/missing")))
            .await
            .unwrap(),
        None
    );
    let bytes = storage::read_all(storage, &small, 1024).await.unwrap();
    assert_eq!(&bytes[..], b"hello, cairn");
    let listed = storage.list(&format!("{base}/app/")).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, small.as_str());
    assert_eq!(listed[0].size, 12);
    assert_eq!(storage.list(&format!("{base}/")).await.unwrap().len(), 2);
    // A string prefix, not only whole segments.
    assert_eq!(storage.list(&format!("{base}/ot")).await.unwrap().len(), 1);
    storage.delete(&small).await.unwrap();
    storage.delete(&small).await.unwrap();
    assert_eq!(storage.head(&small).await.unwrap(), None);
    assert!(matches!(
        storage.get(&small).await,
        Err(StorageError::NotFound(_))
    ));
    let report = storage::test_connection(storage).await;
    assert!(report.ok, "{report:?}");
    assert_eq!(report.checks.len(), 5);
}

#[tokio::test]
async fn s3_round_trip_small_and_multipart_objects() {
    let prefix = unique("prefix");
    let storage = s3(Some(&prefix), None, None);
    exercise(&storage, "a").await;

    // Larger than 100 MiB: a multipart upload of several parts.
    let big = key("a/big.bin");
    let total = 101 * 1024 * 1024 + 12345;
    let (stream, expected) = pattern(total, 1 << 20);
    assert_eq!(storage.put(&big, stream).await.unwrap(), total as u64);
    let (announced, read, digest) = digest_of(&storage, &big).await;
    assert_eq!((announced, read), (total as u64, total as u64));
    assert_eq!(digest, expected);
    // The object is in the bucket, under the prefix, whole.
    let on_disk = s3_objects(&prefix).join("a/big.bin");
    assert_eq!(std::fs::metadata(on_disk).unwrap().len(), total as u64);
    storage.delete(&big).await.unwrap();
}

#[tokio::test]
async fn s3_presigned_urls_work_and_wrong_signatures_are_refused() {
    let prefix = unique("presign");
    let storage = s3(Some(&prefix), None, None);
    let object = key("archive.tar.zst");
    storage
        .put(
            &object,
            storage::single_chunk(Bytes::from_static(b"presigned bytes")),
        )
        .await
        .unwrap();
    let url = storage
        .presigned_get(&object, Duration::from_secs(3600))
        .await
        .unwrap()
        .unwrap();
    assert!(url.as_str().contains("X-Amz-Signature="), "{url}");
    let response = reqwest::get(url.clone()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(&response.bytes().await.unwrap()[..], b"presigned bytes");

    let forged = s3(Some(&prefix), Some("not-the-secret"), None)
        .presigned_get(&object, Duration::from_secs(3600))
        .await
        .unwrap()
        .unwrap();
    let response = reqwest::get(forged).await.unwrap();
    assert_eq!(response.status(), 403);
    // Tampering with a signed URL breaks it too.
    let tampered = url.as_str().replace("archive.tar.zst", "other.tar.zst");
    assert_eq!(reqwest::get(tampered).await.unwrap().status(), 403);
}

#[tokio::test]
async fn s3_interrupted_upload_leaves_no_object_and_no_open_upload() {
    let prefix = unique("interrupted");
    let storage = s3(Some(&prefix), None, None);
    let object = key("half.bin");
    let error = storage
        .put(&object, failing_after(20 * 1024 * 1024))
        .await
        .unwrap_err();
    assert!(matches!(error, StorageError::SourceFailed(_)), "{error}");
    assert_eq!(storage.head(&object).await.unwrap(), None);
    // s3s-fs keeps multipart uploads as `.upload-*` files in its root (it
    // has no ListMultipartUploads); an aborted upload leaves none.
    let leftovers: Vec<String> = std::fs::read_dir(env("TEST_S3_ROOT"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".upload"))
        .collect();
    assert!(leftovers.is_empty(), "open uploads remain: {leftovers:?}");
}

#[tokio::test]
async fn s3_wrong_credentials_and_missing_buckets_say_so() {
    let error = s3(None, Some("wrong-secret"), None)
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            StorageError::AuthenticationFailed(_) | StorageError::AccessDenied(_)
        ),
        "{error}"
    );
    assert!(!error.to_string().contains("wrong-secret"));
    let error = s3(None, None, Some("no-such-bucket"))
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(error, StorageError::BucketMissing(_)), "{error}");
    assert!(error.to_string().contains("no-such-bucket"), "{error}");
}

#[tokio::test]
async fn ssh_round_trip_and_connection_test() {
    let root = format!("{}/{}", env("TEST_SSH_ROOT"), unique("ssh"));
    let storage = ssh(&root, None, Some(&env("TEST_SSH_HOST_FINGERPRINT")));
    exercise(&storage, "a").await;
    // A few MiB in many chunks, verified byte for byte.
    let object = key("a/medium.bin");
    let total = 5 * 1024 * 1024 + 7;
    let (stream, expected) = pattern(total, 64 * 1024);
    assert_eq!(storage.put(&object, stream).await.unwrap(), total as u64);
    let (announced, read, digest) = digest_of(&storage, &object).await;
    assert_eq!((announced, read), (total as u64, total as u64));
    assert_eq!(digest, expected);
    assert_eq!(
        std::fs::metadata(format!("{root}/a/medium.bin"))
            .unwrap()
            .len(),
        total as u64
    );
}

#[tokio::test]
async fn ssh_writes_appear_only_when_complete() {
    let root = format!("{}/{}", env("TEST_SSH_ROOT"), unique("atomic"));
    let storage = ssh(&root, None, Some(&env("TEST_SSH_HOST_FINGERPRINT")));
    let object = key("app/archive.bin");
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let (first, _) = pattern(1024 * 1024, 64 * 1024);
    let (second, _) = pattern(1024 * 1024, 64 * 1024);
    let paused: ByteStream = Box::pin(
        first
            .chain(futures::stream::once(async move {
                released.await.ok();
                Ok(Bytes::new())
            }))
            .chain(second),
    );
    let upload = tokio::spawn(async move {
        let storage = storage;
        let written = storage.put(&key("app/archive.bin"), paused).await;
        (storage, written)
    });
    // Midway: the bytes are on the server, under a temporary name only.
    let destination = std::path::PathBuf::from(format!("{root}/app/archive.bin"));
    let directory = destination.parent().unwrap().to_path_buf();
    let mut saw_temp = false;
    for _ in 0..100 {
        if let Ok(entries) = std::fs::read_dir(&directory) {
            let names: Vec<String> = entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            if names.iter().any(|n| n.contains(".cairn-tmp-")) {
                saw_temp = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(saw_temp, "the upload never started");
    assert!(
        !destination.exists(),
        "a reader must never see a partial file"
    );
    release.send(()).unwrap();
    let (storage, written) = upload.await.unwrap();
    assert_eq!(written.unwrap(), 2 * 1024 * 1024);
    assert_eq!(
        std::fs::metadata(&destination).unwrap().len(),
        2 * 1024 * 1024
    );
    assert_eq!(storage.head(&object).await.unwrap(), Some(2 * 1024 * 1024));
    let leftovers: Vec<_> = std::fs::read_dir(&directory)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".cairn-tmp-")
        })
        .collect();
    assert!(leftovers.is_empty());

    // A failed upload leaves nothing, not even its temporary file.
    let error = storage
        .put(&key("app/failed.bin"), failing_after(3 * 1024 * 1024))
        .await
        .unwrap_err();
    assert!(matches!(error, StorageError::SourceFailed(_)), "{error}");
    let names: Vec<String> = std::fs::read_dir(&directory)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["archive.bin"]);
}

#[tokio::test]
async fn ssh_cancelled_and_replacing_writes() {
    let root = format!("{}/{}", env("TEST_SSH_ROOT"), unique("cancel"));
    let storage = ssh(&root, None, Some(&env("TEST_SSH_HOST_FINGERPRINT")));
    let (head, _) = pattern(1024 * 1024, 64 * 1024);
    let stalled: ByteStream = Box::pin(head.chain(futures::stream::pending()));
    let cancelled = tokio::time::timeout(
        Duration::from_secs(2),
        storage.put(&key("app/x.bin"), stalled),
    )
    .await;
    assert!(cancelled.is_err());
    let directory = std::path::PathBuf::from(format!("{root}/app"));
    for _ in 0..100 {
        if std::fs::read_dir(&directory)
            .map(|d| d.count() == 0)
            .unwrap_or(true)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !directory.join("x.bin").exists(),
        "a cancelled upload must not be published"
    );
    assert_eq!(
        std::fs::read_dir(&directory)
            .map(|d| d.count())
            .unwrap_or(0),
        0
    );

    // Replacing an object keeps exactly one complete copy.
    storage
        .put(
            &key("app/x.bin"),
            storage::single_chunk(Bytes::from_static(b"first")),
        )
        .await
        .unwrap();
    storage
        .put(
            &key("app/x.bin"),
            storage::single_chunk(Bytes::from_static(b"second")),
        )
        .await
        .unwrap();
    assert_eq!(std::fs::read(directory.join("x.bin")).unwrap(), b"second");
    assert_eq!(std::fs::read_dir(&directory).unwrap().count(), 1);
}

#[tokio::test]
async fn ssh_refuses_a_changed_host_key_and_a_wrong_user_key() {
    let root = format!("{}/{}", env("TEST_SSH_ROOT"), unique("refused"));
    let wrong_fingerprint = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let storage = ssh(&root, None, Some(wrong_fingerprint));
    let error = storage.connect().await.unwrap_err();
    match &error {
        StorageError::HostKeyMismatch { expected, actual } => {
            assert_eq!(expected, wrong_fingerprint);
            assert_eq!(actual, &env("TEST_SSH_HOST_FINGERPRINT"));
        }
        other => panic!("expected a host key mismatch, got {other}"),
    }
    assert!(!std::path::Path::new(&root).exists(), "nothing was written");

    let other_key = env("TEST_SSH_OTHER_KEY");
    let storage = ssh(&root, Some(&other_key), None);
    let report = storage::test_connection(&storage).await;
    assert!(!report.ok);
    let connect = &report.checks[0];
    assert_eq!(connect.name, "connect");
    let message = connect.error.as_deref().unwrap();
    assert!(
        message.contains("authentication failed") && message.contains("refused user"),
        "{message}"
    );
    assert!(!message.contains("PRIVATE KEY"), "{message}");
    assert!(report.checks[1..].iter().all(|c| !c.ok));
    // Trust on first use: the key it saw is reported for storing.
    assert_eq!(
        storage.observed_fingerprint().as_deref(),
        Some(env("TEST_SSH_HOST_FINGERPRINT").as_str())
    );
}

#[tokio::test]
async fn unreachable_hosts_fail_the_connect_check() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let storage = SshStorage::new(
        SshOptions {
            host: "127.0.0.1".into(),
            port,
            username: "nobody".into(),
            path: "/tmp".into(),
            private_key: None,
            host_key_fingerprint: None,
            purpose: Purpose::Transfer,
            retry_budget: RetryBudget::new(Duration::from_secs(2)),
        },
        OPEN,
    );
    let error = storage.connect().await.unwrap_err();
    assert!(matches!(error, StorageError::Unreachable(_)), "{error}");
    let closed = SshStorage::new(
        SshOptions {
            host: "169.254.169.254".into(),
            port: 22,
            username: "nobody".into(),
            path: "/tmp".into(),
            private_key: None,
            host_key_fingerprint: None,
            purpose: Purpose::Transfer,
            retry_budget: RetryBudget::new(Duration::from_secs(2)),
        },
        OPEN,
    );
    assert!(matches!(
        closed.connect().await,
        Err(StorageError::AddressRefused(_))
    ));
}

#[tokio::test]
async fn s3_requests_of_one_attempt_share_one_retry_budget() {
    // The server answers 503 to everything: the first operation retries
    // until the budget is spent, and the operations after it do not retry
    // (nor send anything) at all.
    let proxy = FaultProxy::start(usize::MAX).await;
    let storage = s3_through(
        proxy.endpoint.clone(),
        None,
        None,
        None,
        Duration::from_secs(2),
    );
    let base = unique("budget");
    let first = storage
        .head(&key(&format!("{base}/a.bin")))
        .await
        .unwrap_err();
    let text = first.to_string();
    assert!(matches!(first, StorageError::Unreachable(_)), "{text}");
    assert!(text.contains("storage.retry_budget_seconds"), "{text}");
    assert!(text.contains("budget of 2 s"), "{text}");
    assert!(text.contains("the server answered 503"), "{text}");
    let tried = proxy.refused();
    assert!(
        tried > 1,
        "the first operation was retried: {tried} requests"
    );

    let second = storage
        .put(
            &key(&format!("{base}/b.bin")),
            storage::single_chunk(Bytes::from_static(b"x")),
        )
        .await
        .unwrap_err();
    assert!(
        second.to_string().contains("storage.retry_budget_seconds"),
        "{second}"
    );
    assert!(storage.list(&format!("{base}/")).await.is_err());
    assert_eq!(proxy.refused(), tried, "nothing more reached the server");
}

#[tokio::test]
async fn s3_failures_inside_the_budget_are_retried_to_success() {
    // Three refused requests, then the real server: the look-up retries
    // through them, the upload lands, and what is read back is what was
    // written.
    let proxy = FaultProxy::start(3).await;
    let storage = s3_through(
        proxy.endpoint.clone(),
        None,
        None,
        None,
        Duration::from_secs(60),
    );
    let object = key(&format!("{}/retried.bin", unique("budget")));
    assert_eq!(storage.head(&object).await.unwrap(), None);
    assert_eq!(proxy.refused(), 3);
    let (body, sha256) = pattern(3 << 20, 1 << 20);
    assert_eq!(storage.put(&object, body).await.unwrap(), 3 << 20);
    let (announced, read, digest) = digest_of(&storage, &object).await;
    assert_eq!((announced, read), (3 << 20, 3 << 20));
    assert_eq!(digest, sha256);
    storage.delete(&object).await.unwrap();
}

#[tokio::test]
async fn ssh_connections_of_one_attempt_share_one_retry_budget() {
    // A listener that hangs up on every connection (the handshake fails, a
    // transient failure) and counts them.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    std::thread::spawn(move || {
        for connection in listener.incoming() {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(connection);
        }
    });
    let count = || accepted.load(std::sync::atomic::Ordering::SeqCst);
    let storage = SshStorage::new(
        SshOptions {
            host: "127.0.0.1".into(),
            port,
            username: "nobody".into(),
            path: "/tmp".into(),
            private_key: None,
            host_key_fingerprint: None,
            purpose: Purpose::Transfer,
            retry_budget: RetryBudget::new(Duration::from_secs(1)),
        },
        OPEN,
    );
    let first = storage.connect().await.unwrap_err().to_string();
    assert!(
        first.contains("budget of 1 s (storage.retry_budget_seconds)"),
        "{first}"
    );
    // It ends with what failed.
    assert!(first.contains("SSH handshake with 127.0.0.1"), "{first}");
    let tried = count();
    assert!(tried > 1, "the connection was retried: {tried} connections");
    // The next operation of the attempt does not try again: it fails with
    // the same words at once.
    let second = storage
        .head(&key("budget/x.bin"))
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(second, first);
    assert_eq!(count(), tried, "no further connection");
}
