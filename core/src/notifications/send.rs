//! Sending one message: email through the system's SMTP server (lettre),
//! Slack incoming webhooks and signed webhooks over HTTP (reqwest).
//!
//! HTTP requests go through the address policy at every connection (the
//! resolver drops refused addresses; literal addresses are checked before
//! the request), follow no redirect, ignore proxy settings of the
//! environment (the policy must see the real destination), and time out.
//! Error messages name the step and the host, never the URL (a Slack URL is
//! a secret) or a credential.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use sha2::Sha256;

use super::channels::Destination;
use super::payload::NotificationPayload;
use super::render;
use crate::config::{SmtpConfig, SmtpTls};
use crate::netpolicy::{AddressPolicy, PolicyResolver};
use crate::Cairn;

/// How one attempt went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendOutcome {
    pub delivered: bool,
    /// The HTTP status, or the SMTP reply code of a refusal.
    pub response_code: Option<u16>,
    pub error: Option<String>,
    /// Retrying cannot help: the receiver refused the message (a 4xx other
    /// than 408/429, a redirect, a permanent SMTP error) or the destination
    /// is not allowed.
    pub permanent: bool,
}

impl SendOutcome {
    pub(crate) fn delivered(code: Option<u16>) -> SendOutcome {
        SendOutcome {
            delivered: true,
            response_code: code,
            error: None,
            permanent: false,
        }
    }

    pub(crate) fn failed(
        code: Option<u16>,
        error: impl Into<String>,
        permanent: bool,
    ) -> SendOutcome {
        SendOutcome {
            delivered: false,
            response_code: code,
            error: Some(error.into()),
            permanent,
        }
    }
}

/// `sha256=<hex HMAC-SHA256 of body under secret>`: `X-Cairn-Signature`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// What sends messages: one HTTP client and the SMTP settings, built once
/// per batch of deliveries.
pub struct Sender {
    http: reqwest::Client,
    policy: AddressPolicy,
    smtp: Option<SmtpConfig>,
    timeout: Duration,
}

impl Sender {
    pub fn new(cairn: &Cairn) -> crate::Result<Sender> {
        let timeout = Duration::from_secs(cairn.config.notifications.timeout_seconds.max(1));
        let policy = crate::storage::address_policy(cairn);
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(PolicyResolver(policy)))
            .connect_timeout(timeout)
            .timeout(timeout)
            .user_agent(concat!("Cairn/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| anyhow::anyhow!("building the notification HTTP client: {e}"))?;
        Ok(Sender {
            http,
            policy,
            smtp: cairn.config.notifications.smtp.clone(),
            timeout,
        })
    }

    /// Sends `payload` (its `sentAt` already set) to `destination`.
    pub async fn send(
        &self,
        destination: &Destination,
        payload: &NotificationPayload,
    ) -> SendOutcome {
        match destination {
            Destination::Email { recipients } => self.email(recipients, payload).await,
            Destination::Slack { url } => {
                let body = render::slack_message(payload).to_string().into_bytes();
                self.post(url.expose_secret(), body, Vec::new()).await
            }
            Destination::Webhook { url, secret } => {
                let body = match serde_json::to_vec(payload) {
                    Ok(body) => body,
                    Err(e) => return SendOutcome::failed(None, format!("encoding: {e}"), true),
                };
                let mut headers = vec![
                    ("X-Cairn-Event", payload.event.as_str().to_owned()),
                    ("X-Cairn-Delivery", payload.id.to_string()),
                    ("X-Cairn-Timestamp", payload.sent_at.timestamp().to_string()),
                ];
                if let Some(secret) = secret {
                    headers.push((
                        "X-Cairn-Signature",
                        signature(secret.expose_secret().as_bytes(), &body),
                    ));
                }
                self.post(url, body, headers).await
            }
        }
    }

    /// `POST`s a JSON body. The URL never appears in the outcome.
    async fn post(
        &self,
        url: &str,
        body: Vec<u8>,
        headers: Vec<(&'static str, String)>,
    ) -> SendOutcome {
        let Ok(parsed) = url::Url::parse(url) else {
            return SendOutcome::failed(None, "the channel's URL does not parse", true);
        };
        let host = parsed.host_str().unwrap_or_default().to_owned();
        if let Err(reason) = self.policy.check_url(&parsed) {
            return SendOutcome::failed(None, format!("{host} is not allowed: {reason}"), true);
        }
        let mut request = self
            .http
            .post(parsed)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                return SendOutcome::failed(None, describe(&error, &host, self.timeout), false)
            }
        };
        let status = response.status();
        let code = Some(status.as_u16());
        if status.is_success() {
            return SendOutcome::delivered(code);
        }
        // The receiver's body is never read into the outcome: it is the
        // receiver's (an internal service's error page could carry anything),
        // and the delivery's error is shown to the tenant.
        drop(response);
        if status.is_redirection() {
            return SendOutcome::failed(
                code,
                format!("{host} answered {status} (a redirect); redirects are not followed"),
                true,
            );
        }
        let permanent = status.is_client_error() && !matches!(status.as_u16(), 408 | 425 | 429);
        SendOutcome::failed(
            code,
            format!("{host} answered {status}: {}", http_reason(status)),
            permanent,
        )
    }

    async fn email(&self, recipients: &[String], payload: &NotificationPayload) -> SendOutcome {
        use lettre::message::header::ContentType;
        use lettre::message::Mailbox;
        use lettre::transport::smtp::authentication::Credentials;
        use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
        use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

        let Some(smtp) = &self.smtp else {
            return SendOutcome::failed(
                None,
                "no SMTP server is configured (notifications.smtp)",
                false,
            );
        };
        let message = (|| {
            let from: Mailbox = smtp
                .from
                .parse()
                .map_err(|e| format!("notifications.smtp.from is not an address: {e}"))?;
            let mut builder = Message::builder().from(from).subject(payload.title.clone());
            for recipient in recipients {
                let to: Mailbox = recipient
                    .parse()
                    .map_err(|e| format!("recipient {recipient} is not an address: {e}"))?;
                builder = builder.to(to);
            }
            builder
                .header(ContentType::TEXT_PLAIN)
                .body(render::text_body(payload))
                .map_err(|e| format!("building the message: {e}"))
        })();
        let message = match message {
            Ok(message) => message,
            Err(error) => return SendOutcome::failed(None, error, false),
        };
        let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)
            .port(smtp.port())
            .timeout(Some(self.timeout));
        if smtp.tls != SmtpTls::None {
            let parameters = (|| {
                let mut builder = TlsParameters::builder(smtp.host.clone());
                if let Some(ca_file) = &smtp.ca_file {
                    let pem = std::fs::read(ca_file).map_err(|e| {
                        format!(
                            "reading notifications.smtp.ca_file {}: {e}",
                            ca_file.display()
                        )
                    })?;
                    let certificate = Certificate::from_pem(&pem).map_err(|e| {
                        format!("notifications.smtp.ca_file {}: {e}", ca_file.display())
                    })?;
                    builder = builder.add_root_certificate(certificate);
                }
                builder
                    .build_rustls()
                    .map_err(|e| format!("setting up TLS for {}: {e}", smtp.host))
            })();
            let parameters = match parameters {
                Ok(parameters) => parameters,
                Err(error) => return SendOutcome::failed(None, error, false),
            };
            transport = transport.tls(match smtp.tls {
                SmtpTls::Tls => Tls::Wrapper(parameters),
                _ => Tls::Required(parameters),
            });
        }
        if let Some(username) = &smtp.username {
            let password = smtp
                .password
                .as_ref()
                .map(|p| p.expose_secret().to_owned())
                .unwrap_or_default();
            transport = transport.credentials(Credentials::new(username.clone(), password));
        }
        let sent = transport.build().send(message).await;
        match sent {
            Ok(response) => SendOutcome::delivered(Some(u16::from(response.code()))),
            Err(error) => {
                let code = error.status().map(u16::from);
                SendOutcome::failed(
                    code,
                    format!(
                        "SMTP server {}:{}: {}",
                        smtp.host,
                        smtp.port(),
                        error_chain(&error)
                    ),
                    error.is_permanent(),
                )
            }
        }
    }
}

/// What an HTTP error status means for a delivery, in words of our own.
pub(crate) fn http_reason(status: reqwest::StatusCode) -> &'static str {
    match status.as_u16() {
        401 | 403 => "the receiver refused the request (authentication or permission)",
        404 | 410 => "the receiver has no such endpoint",
        408 | 425 | 429 => "the receiver is busy or rate-limiting; retried later",
        413 => "the receiver refused the message's size",
        400..=499 => "the receiver refused the request",
        500..=599 => "the receiver failed on its side; retried later",
        _ => "unexpected status",
    }
}

/// Why an HTTP request failed, without its URL.
fn describe(error: &reqwest::Error, host: &str, timeout: Duration) -> String {
    if error.is_timeout() {
        return format!("{host} did not answer within {} s", timeout.as_secs());
    }
    let step = if error.is_connect() {
        "cannot connect to"
    } else {
        "request to"
    };
    let source = std::error::Error::source(error)
        .map(error_chain)
        .unwrap_or_else(|| "failed".into());
    format!("{step} {host}: {source}")
}

/// An error and its causes, `a: b: c`, without repeats.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(error);
    while let Some(error) = current {
        let text = error.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = error.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_ne!(signature(b"k", b"a"), signature(b"k", b"b"));
    }
}
