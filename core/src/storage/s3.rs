//! S3, R2, B2 and any S3-compatible endpoint, through `object_store`.
//!
//! A custom endpoint uses path-style addressing (as MinIO and most
//! self-hosted servers need). Uploads go through `object_store`'s buffered
//! writer: small objects as one PUT, larger ones as a multipart upload of
//! [`PART_SIZE`] parts, at most [`PART_CONCURRENCY`] in flight — so memory
//! stays bounded — and a failed upload is aborted so that no partial object
//! or dangling multipart upload remains. Transient failures (timeouts,
//! resets, 5xx, throttling) are retried by `object_store` with jittered
//! exponential backoff while the attempt's [`RetryBudget`] lasts: one budget
//! shared by every request of the attempt (see [`super::budget`]), checked
//! by the HTTP service below on every request. Downloads are ranged GETs
//! of [`READ_PART`] bytes, [`READ_CONCURRENCY`] at once, in order. Every
//! connection resolves its host through the outbound address policy.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::buffered::BufWriter;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse, HttpService,
};
use object_store::path::Path;
use object_store::signer::{Method, Signer};
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, RetryConfig,
};
use secrecy::{ExposeSecret, SecretString};
use tokio::io::AsyncWriteExt;

use super::budget::{RetryBudget, EXHAUSTED_MARKER};
use super::{ByteStream, ObjectInfo, ObjectKey, Storage, StorageError, StorageResult};
use crate::netpolicy::{AddressPolicy, PolicyResolver};

/// Size of one part of a multipart upload (S3's minimum is 5 MiB).
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploaded at once.
pub const PART_CONCURRENCY: usize = 4;
/// Size of one ranged GET of a download.
pub const READ_PART: u64 = 4 * 1024 * 1024;
/// Ranged GETs in flight (and so buffered) at once.
pub const READ_CONCURRENCY: usize = 8;
/// The most retries of one request; the attempt's budget usually ends
/// them first.
const MAX_RETRIES: usize = 1000;

/// Settings of an S3-family target.
pub struct S3Options {
    pub bucket: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    pub endpoint: Option<String>,
    pub prefix: Option<String>,
    /// How long the attempt's failed requests are retried, all together.
    pub retry_budget: RetryBudget,
}

pub struct S3Storage {
    store: Arc<AmazonS3>,
    bucket: String,
    /// `prefix/` or empty.
    prefix: String,
    /// Why the endpoint's literal address is refused, if it is.
    refused: Option<String>,
}

/// The HTTP client of S3 targets: it follows no redirect (a redirect to a
/// literal address would bypass the resolver's check) and ignores proxy
/// settings of the environment (the policy must see the real host).
/// Every request it makes is counted against the attempt's retry budget.
#[derive(Debug)]
struct PolicyConnector {
    policy: AddressPolicy,
    budget: RetryBudget,
}

impl HttpConnector for PolicyConnector {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(PolicyResolver(self.policy)))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| object_store::Error::Generic {
                store: "S3",
                source: Box::new(e),
            })?;
        Ok(HttpClient::new(Budgeted {
            client,
            budget: self.budget.clone(),
        }))
    }
}

/// The HTTP service of S3 targets: reqwest, with each outcome reported to
/// the retry budget, and no request sent once the budget is spent. The
/// refusal is an error of kind `Unknown`, which `object_store` does not
/// retry, so the operation fails at once with the budget's message.
#[derive(Debug)]
struct Budgeted {
    client: reqwest::Client,
    budget: RetryBudget,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct BudgetSpent(String);

#[async_trait::async_trait]
impl HttpService for Budgeted {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        if self.budget.is_exhausted() {
            return Err(HttpError::new(
                HttpErrorKind::Unknown,
                BudgetSpent(self.budget.exhausted_message()),
            ));
        }
        let started = std::time::Instant::now();
        let outcome = self.client.call(request).await;
        match &outcome {
            Ok(response) => {
                let status = response.status().as_u16();
                if matches!(status, 500..=599 | 408 | 429) {
                    self.budget
                        .failed(started, format!("the server answered {status}"));
                } else {
                    self.budget.succeeded();
                }
            }
            Err(error) => match error.kind() {
                // Not retried by object_store: not trouble to wait out.
                HttpErrorKind::Unknown | HttpErrorKind::Decode => {}
                kind => self.budget.failed(
                    started,
                    format!("{} error", format!("{kind:?}").to_lowercase()),
                ),
            },
        }
        outcome
    }
}

impl S3Storage {
    pub fn new(options: S3Options, policy: AddressPolicy) -> crate::Result<S3Storage> {
        let client = ClientOptions::new()
            .with_connect_timeout(Duration::from_secs(10))
            .with_timeout(Duration::from_secs(120));
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(200),
                max_backoff: Duration::from_secs(15),
                base: 2.0,
            },
            max_retries: MAX_RETRIES,
            retry_timeout: options.retry_budget.total(),
        };
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&options.bucket)
            .with_region(&options.region)
            .with_access_key_id(&options.access_key_id)
            .with_secret_access_key(options.secret_access_key.expose_secret())
            .with_retry(retry)
            .with_client_options(client)
            .with_http_connector(PolicyConnector {
                policy,
                budget: options.retry_budget.clone(),
            });
        let mut refused = None;
        if let Some(endpoint) = &options.endpoint {
            // Literal addresses never reach the resolver: check them here.
            if let Some(host) = url::Url::parse(endpoint)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
            {
                let bare = host.trim_start_matches('[').trim_end_matches(']');
                if let Ok(ip) = bare.parse::<IpAddr>() {
                    refused = policy.check(ip).err();
                }
            }
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        let store = builder
            .build()
            .map_err(|e| anyhow::anyhow!("configuring the S3 client: {}", describe(&e)))?;
        let prefix = match options.prefix.as_deref().map(|p| p.trim_matches('/')) {
            Some(p) if !p.is_empty() => format!("{p}/"),
            _ => String::new(),
        };
        Ok(S3Storage {
            store: Arc::new(store),
            bucket: options.bucket,
            prefix,
            refused,
        })
    }

    fn path(&self, key: &ObjectKey) -> StorageResult<Path> {
        if let Some(reason) = &self.refused {
            return Err(StorageError::AddressRefused(reason.clone()));
        }
        Ok(Path::from(format!("{}{}", self.prefix, key.as_str())))
    }

    fn error(&self, what: &str, error: object_store::Error) -> StorageError {
        classify(&self.bucket, what, error)
    }
}

/// An error's message and the chain of its causes, which is where the
/// transport says what failed (connection refused, DNS, policy).
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The S3 error codes an answer's `<Code>` may be repeated with: known
/// words only, so that nothing else from the body comes through.
const S3_ERROR_CODES: &[&str] = &[
    "AccessDenied",
    "AllAccessDisabled",
    "BucketAlreadyExists",
    "EntityTooLarge",
    "ExpiredToken",
    "InternalError",
    "InvalidAccessKeyId",
    "InvalidBucketName",
    "InvalidRequest",
    "NoSuchBucket",
    "NoSuchKey",
    "NoSuchUpload",
    "NotImplemented",
    "PreconditionFailed",
    "QuotaExceeded",
    "RequestTimeTooSkewed",
    "ServiceUnavailable",
    "SignatureDoesNotMatch",
    "SlowDown",
];

/// An error's text without what the server sent: the HTTP status and, when
/// it is a plain S3 error code (`AccessDenied`), that code are kept; the
/// response body after them — an internal service's error page could carry
/// anything — is not. Errors without a status (transport, DNS, policy)
/// carry no body and stay as they are, up to any markup.
fn without_body(text: &str) -> String {
    let status = ["status code: ", "with status ", "status: "]
        .iter()
        .find_map(|marker| {
            let start = text.find(marker)? + marker.len();
            let digits: String = text[start..].chars().take(3).collect();
            (digits.len() == 3 && digits.chars().all(|c| c.is_ascii_digit())).then_some(digits)
        });
    let code = text
        .find("<Code>")
        .and_then(|start| {
            let rest = &text[start + "<Code>".len()..];
            rest.find("</Code>").map(|end| &rest[..end])
        })
        .filter(|code| S3_ERROR_CODES.contains(code));
    match status {
        Some(status) => {
            let reason = reqwest::StatusCode::from_bytes(status.as_bytes())
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("");
            match code {
                Some(code) => format!("the server answered {status} {reason} ({code})"),
                None => format!("the server answered {status} {reason}"),
            }
        }
        None => {
            let cut = text.find(['<', '{']).unwrap_or(text.len());
            text[..cut].trim_end_matches([' ', ':']).to_owned()
        }
    }
}

/// Sorts an `object_store` error into what the caller can act on.
pub(crate) fn classify(bucket: &str, what: &str, error: object_store::Error) -> StorageError {
    let text = describe(&error);
    let detail = format!("{what}: {}", without_body(&text));
    if text.contains("NoSuchBucket") || text.contains("bucket does not exist") {
        return StorageError::BucketMissing(format!("bucket '{bucket}' ({what})"));
    }
    if text.contains(EXHAUSTED_MARKER) {
        return StorageError::Unreachable(detail);
    }
    if text.contains("outbound address policy")
        || text.contains("which targets may not use")
        || text.contains("(allow_private_endpoints: false")
    {
        return StorageError::AddressRefused(detail);
    }
    // Transport failures first: their text can contain anything (ports,
    // timings), so the status patterns below must not see them.
    let transport = [
        "error sending request",
        "tcp connect error",
        "dns error",
        "Connection refused",
        "timed out",
    ];
    if transport.iter().any(|pattern| text.contains(pattern)) {
        return StorageError::Unreachable(detail);
    }
    match error {
        object_store::Error::NotFound { path, .. } => StorageError::NotFound(path),
        object_store::Error::Unauthenticated { .. } => StorageError::AuthenticationFailed(detail),
        object_store::Error::PermissionDenied { .. } => StorageError::AccessDenied(detail),
        _ if text.contains("InvalidAccessKeyId") || text.contains("SignatureDoesNotMatch") => {
            StorageError::AuthenticationFailed(detail)
        }
        _ if text.contains("AccessDenied") || text.contains("403 Forbidden") => {
            StorageError::AccessDenied(detail)
        }
        _ => StorageError::Io(detail),
    }
}

#[async_trait::async_trait]
impl Storage for S3Storage {
    async fn connect(&self) -> StorageResult<()> {
        if let Some(reason) = &self.refused {
            return Err(StorageError::AddressRefused(reason.clone()));
        }
        let prefix = (!self.prefix.is_empty()).then(|| Path::from(self.prefix.as_str()));
        self.store
            .list_with_delimiter(prefix.as_ref())
            .await
            .map(|_| ())
            .map_err(|e| self.error("listing the bucket", e))
    }

    async fn put(&self, key: &ObjectKey, mut body: ByteStream) -> StorageResult<u64> {
        let path = self.path(key)?;
        let store: Arc<dyn ObjectStore> = self.store.clone();
        let mut upload = AbortOnDrop {
            writer: Some(
                BufWriter::with_capacity(store, path, PART_SIZE)
                    .with_max_concurrency(PART_CONCURRENCY),
            ),
            finishing: false,
        };
        let mut written = 0u64;
        let outcome: StorageResult<()> = async {
            let writer = upload.writer();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| StorageError::SourceFailed(e.to_string()))?;
                writer.write_all(&chunk).await.map_err(|e| {
                    StorageError::Io(format!("uploading {key}: {}", without_body(&describe(&e))))
                })?;
                written += chunk.len() as u64;
            }
            upload.finishing = true;
            upload.writer().shutdown().await.map_err(|e| {
                StorageError::Io(format!("completing {key}: {}", without_body(&describe(&e))))
            })
        }
        .await;
        match outcome {
            Ok(()) => {
                upload.writer = None;
                Ok(written)
            }
            Err(error) => {
                // No partial object, no dangling multipart upload. A failed
                // completion has aborted its multipart upload itself (and a
                // single PUT leaves nothing); anything earlier is aborted here.
                let writer = upload.writer.take().filter(|_| !upload.finishing);
                if let Some(mut writer) = writer {
                    if let Err(abort) = writer.abort().await {
                        tracing::warn!(key = %key, error = %describe(&abort), "aborting a failed upload failed");
                    }
                }
                Err(match error {
                    StorageError::Io(text) => reclassify(&self.bucket, text),
                    other => other,
                })
            }
        }
    }

    async fn get(&self, key: &ObjectKey) -> StorageResult<(u64, ByteStream)> {
        let path = self.path(key)?;
        let meta = self
            .store
            .head(&path)
            .await
            .map_err(|e| self.error(&format!("reading {key}"), e))?;
        let size = meta.size;
        if meta.e_tag.is_none() {
            // Without an ETag, ranges could mix two versions: one GET.
            let result = self
                .store
                .get(&path)
                .await
                .map_err(|e| self.error(&format!("reading {key}"), e))?;
            let stream = result
                .into_stream()
                .map_err(|e| std::io::Error::other(without_body(&describe(&e))));
            return Ok((size, Box::pin(stream)));
        }
        // Ranged GETs, a few in flight, delivered in order; each is bound to
        // the version that was measured (If-Match), so an object replaced
        // midway fails the read instead of mixing two versions.
        let store = self.store.clone();
        let ranges = (0..size)
            .step_by(READ_PART as usize)
            .map(move |start| start..(start + READ_PART).min(size));
        let stream = futures::stream::iter(ranges)
            .map(move |range| {
                let store = store.clone();
                let path = path.clone();
                let options = GetOptions {
                    if_match: meta.e_tag.clone(),
                    range: Some(GetRange::Bounded(range)),
                    ..GetOptions::default()
                };
                async move { store.get_opts(&path, options).await?.bytes().await }
            })
            .buffered(READ_CONCURRENCY)
            .map_err(|e| std::io::Error::other(without_body(&describe(&e))));
        Ok((size, Box::pin(stream)))
    }

    async fn head(&self, key: &ObjectKey) -> StorageResult<Option<u64>> {
        let path = self.path(key)?;
        match self.store.head(&path).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(&format!("reading {key}"), e)),
        }
    }

    async fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectInfo>> {
        if let Some(reason) = &self.refused {
            return Err(StorageError::AddressRefused(reason.clone()));
        }
        let full = format!("{}{prefix}", self.prefix);
        // object_store lists whole path segments; narrow to the exact
        // string prefix afterwards.
        let directory = full.rfind('/').map(|i| Path::from(&full[..i]));
        let mut objects = Vec::new();
        let mut listing = self.store.list(directory.as_ref());
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| self.error("listing", e))?;
            let location = meta.location.to_string();
            if let Some(key) = location.strip_prefix(&self.prefix) {
                if location.starts_with(&full) {
                    objects.push(ObjectInfo {
                        key: key.to_owned(),
                        size: meta.size,
                    });
                }
            }
        }
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    async fn delete(&self, key: &ObjectKey) -> StorageResult<()> {
        let path = self.path(key)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(&format!("deleting {key}"), e)),
        }
    }

    async fn presigned_get(
        &self,
        key: &ObjectKey,
        expires_in: Duration,
    ) -> StorageResult<Option<url::Url>> {
        let path = self.path(key)?;
        let url = self
            .store
            .signed_url(Method::GET, &path, expires_in)
            .await
            .map_err(|e| self.error(&format!("signing a URL for {key}"), e))?;
        Ok(Some(url))
    }
}

/// An upload that is dropped before it completes or fails (its `put` was
/// cancelled) is aborted in the background, so that no multipart upload is
/// left open.
///
/// Once completion has started (`finishing`) the writer can no longer be
/// aborted: object_store's completion aborts a multipart upload that fails
/// to complete, but one cancelled in the middle of completing is left to the
/// bucket's `AbortIncompleteMultipartUpload` lifecycle rule.
struct AbortOnDrop {
    writer: Option<BufWriter>,
    finishing: bool,
}

impl AbortOnDrop {
    fn writer(&mut self) -> &mut BufWriter {
        // Present until `put` completes or aborts, after which it is unused.
        self.writer.as_mut().expect("the upload is in progress")
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        let writer = self.writer.take().filter(|_| !self.finishing);
        if let (Some(mut writer), Ok(runtime)) = (writer, tokio::runtime::Handle::try_current()) {
            runtime.spawn(async move {
                let _ = writer.abort().await;
            });
        }
    }
}

/// Errors that surfaced through the writer arrive as text; sort them the
/// same way.
fn reclassify(bucket: &str, text: String) -> StorageError {
    classify(
        bucket,
        "uploading",
        object_store::Error::Generic {
            store: "S3",
            source: text.into(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::without_body;

    #[test]
    fn answers_keep_the_status_and_code_but_not_the_body() {
        let text =
            "Error performing PUT http://10.0.0.5:9000/b/k in 10ms - Server returned non-2xx \
                    status code: 403 Forbidden: <Error><Code>AccessDenied</Code><Message>db \
                    password is hunter2</Message></Error>";
        assert_eq!(
            without_body(text),
            "the server answered 403 Forbidden (AccessDenied)"
        );
        let made_up = "status code: 403 Forbidden: <Error><Code>InternalSecretX</Code></Error>";
        assert_eq!(without_body(made_up), "the server answered 403 Forbidden");
        let html = "Client error with status 401 Unauthorized: <html>internal portal</html>";
        assert_eq!(without_body(html), "the server answered 401 Unauthorized");
        let transport = "error sending request: tcp connect error: Connection refused";
        assert_eq!(without_body(transport), transport);
    }
}
