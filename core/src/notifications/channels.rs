//! Notification channels of an organization: `email` (recipients; the SMTP
//! server is the system's), `slack` (an incoming-webhook URL, which is a
//! secret) and `webhook` (a URL and an optional signing secret).
//!
//! Secrets (the Slack URL, the webhook secret) are sealed under the master
//! key in `secrets_ciphertext` and never leave this module in a view.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use cairn_entity::notification_channel;

use crate::error::{is_unique_violation, Error, Result, Validator};
use crate::secrets::MasterKey;
use crate::validate::check_display_name;
use crate::Cairn;

/// Recipients an email channel may have.
pub const MAX_RECIPIENTS: usize = 50;
/// Longest accepted URL.
const MAX_URL_LEN: usize = 2048;
const SLACK_URL: &str = "url";
const WEBHOOK_SECRET: &str = "secret";

/// How a channel delivers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChannelType {
    /// An email to each recipient, through the system's SMTP server.
    Email,
    /// A Slack incoming webhook (Block Kit message with a text fallback).
    Slack,
    /// A JSON `POST` of the payload, signed when a secret is set.
    Webhook,
}

impl ChannelType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelType::Email => "email",
            ChannelType::Slack => "slack",
            ChannelType::Webhook => "webhook",
        }
    }

    pub fn parse(text: &str) -> Option<ChannelType> {
        Some(match text {
            "email" => ChannelType::Email,
            "slack" => ChannelType::Slack,
            "webhook" => ChannelType::Webhook,
            _ => return None,
        })
    }
}

fn default_true() -> bool {
    true
}

/// `POST`/`PUT` body of a channel.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChannelRequest {
    /// Unique within the organization (1–200 characters).
    pub name: String,
    #[serde(rename = "type")]
    pub channel_type: ChannelType,
    /// A disabled channel gets no new deliveries, and those still pending
    /// when it is disabled end `failed` (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
    pub config: ChannelConfigRequest,
}

/// Settings of a channel; which fields apply depends on `type`.
#[derive(Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChannelConfigRequest {
    /// email: 1–50 addresses.
    pub recipients: Option<Vec<String>>,
    /// slack: the incoming-webhook URL — a secret, sealed at rest and never
    /// returned; on update, omit it to keep the stored one. webhook: the
    /// URL the payload is posted to. `http(s)`, without credentials; its
    /// address must be allowed by the server's endpoint policy.
    #[schema(value_type = Option<String>)]
    pub url: Option<SecretString>,
    /// webhook: the HMAC-SHA256 key of `X-Cairn-Signature` (at least 16
    /// characters). Never returned; on update, omit it to keep the stored
    /// one, or send `""` to remove it.
    #[schema(value_type = Option<String>, write_only)]
    pub secret: Option<SecretString>,
}

/// A channel's settings as returned: secrets appear only as "is set".
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelConfigView {
    /// email: the recipients.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipients: Option<Vec<String>>,
    /// webhook: the URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// slack: whether the webhook URL is stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url_set: Option<bool>,
    /// webhook: whether a signing secret is stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_set: Option<bool>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelView {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub name: String,
    #[serde(rename = "type")]
    pub channel_type: ChannelType,
    pub enabled: bool,
    pub config: ChannelConfigView,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The non-secret settings as stored.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    recipients: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
}

type Secrets = crate::secrets::SecretFields;

/// A channel as a sender needs it: its type and every setting, secrets
/// opened.
pub enum Destination {
    Email {
        recipients: Vec<String>,
    },
    Slack {
        url: SecretString,
    },
    Webhook {
        url: String,
        secret: Option<SecretString>,
    },
}

fn type_of(model: &notification_channel::Model) -> Result<ChannelType> {
    ChannelType::parse(&model.channel_type).ok_or_else(|| {
        anyhow::anyhow!(
            "channel {} has unknown type {}",
            model.id,
            model.channel_type
        )
        .into()
    })
}

/// Opens a stored channel for sending.
pub fn destination(key: &MasterKey, model: &notification_channel::Model) -> Result<Destination> {
    let settings: StoredSettings =
        serde_json::from_value(model.config.clone()).map_err(anyhow::Error::from)?;
    let mut secrets = key.open_fields(model.id, model.secrets_ciphertext.as_deref())?;
    Ok(match type_of(model)? {
        ChannelType::Email => Destination::Email {
            recipients: settings.recipients.unwrap_or_default(),
        },
        ChannelType::Slack => {
            Destination::Slack {
                url: SecretString::from(secrets.remove(SLACK_URL).ok_or_else(|| {
                    anyhow::anyhow!("slack channel {} has no stored URL", model.id)
                })?),
            }
        }
        ChannelType::Webhook => Destination::Webhook {
            url: settings.url.unwrap_or_default(),
            secret: secrets.remove(WEBHOOK_SECRET).map(SecretString::from),
        },
    })
}

fn view(key: &MasterKey, model: notification_channel::Model) -> Result<ChannelView> {
    let channel_type = type_of(&model)?;
    let settings: StoredSettings =
        serde_json::from_value(model.config.clone()).map_err(anyhow::Error::from)?;
    let secrets = key.open_fields(model.id, model.secrets_ciphertext.as_deref())?;
    let config = match channel_type {
        ChannelType::Email => ChannelConfigView {
            recipients: settings.recipients,
            ..Default::default()
        },
        ChannelType::Slack => ChannelConfigView {
            url_set: Some(secrets.contains_key(SLACK_URL)),
            ..Default::default()
        },
        ChannelType::Webhook => ChannelConfigView {
            url: settings.url,
            secret_set: Some(secrets.contains_key(WEBHOOK_SECRET)),
            ..Default::default()
        },
    };
    Ok(ChannelView {
        id: model.id,
        organization_id: model.organization_id,
        name: model.name,
        channel_type,
        enabled: model.enabled,
        config,
        created_at: model.created_at,
        updated_at: model.updated_at,
    })
}

/// An `http(s)` URL with a host, without credentials or fragment.
fn check_url(text: &str) -> Result<url::Url, String> {
    if text.len() > MAX_URL_LEN {
        return Err(format!("must be at most {MAX_URL_LEN} characters"));
    }
    let url = url::Url::parse(text.trim()).map_err(|e| format!("is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http:// or https:// URL".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("must name a host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain credentials (use `secret` to sign requests)".into());
    }
    if url.fragment().is_some() {
        return Err("must not contain a fragment (#…)".into());
    }
    Ok(url)
}

/// Checks a request and returns what to store. `stored_secrets` are the
/// secrets of the channel being updated when its type stays the same.
fn validate(
    cairn: &Cairn,
    request: &ChannelRequest,
    stored_secrets: Secrets,
) -> Result<(StoredSettings, Secrets, Option<url::Url>)> {
    let mut v = Validator::new();
    v.check_result("name", check_display_name(&request.name));
    let c = &request.config;
    let mut settings = StoredSettings::default();
    let mut secrets = Secrets::new();
    let mut checked_url = None;
    let check_url_field =
        |v: &mut Validator, url: &SecretString| match check_url(url.expose_secret()) {
            Ok(parsed) => Some(parsed),
            Err(message) => {
                v.add("config.url", message);
                None
            }
        };
    match request.channel_type {
        ChannelType::Email => {
            if cairn.config.notifications.smtp.is_none() {
                v.add(
                    "type",
                    "email channels need an SMTP server: set notifications.smtp in the server's configuration",
                );
            }
            match &c.recipients {
                None => v.add("config.recipients", "is required"),
                Some(list) if list.is_empty() || list.len() > MAX_RECIPIENTS => v.add(
                    "config.recipients",
                    format!("must list 1 to {MAX_RECIPIENTS} addresses"),
                ),
                Some(list) => {
                    let mut seen = std::collections::HashSet::new();
                    let mut kept = Vec::new();
                    for (i, address) in list.iter().enumerate() {
                        let field = format!("config.recipients[{i}]");
                        match lettre::Address::from_str(address.trim()) {
                            Err(_) => v.add(field, "is not an email address (name@domain)"),
                            Ok(parsed) => {
                                if !seen.insert(parsed.to_string().to_lowercase()) {
                                    v.add(field, "is listed twice");
                                } else {
                                    kept.push(parsed.to_string());
                                }
                            }
                        }
                    }
                    settings.recipients = Some(kept);
                }
            }
        }
        ChannelType::Slack => match &c.url {
            Some(url) => {
                if let Some(parsed) = check_url_field(&mut v, url) {
                    secrets.insert(SLACK_URL.into(), parsed.to_string());
                    checked_url = Some(parsed);
                }
            }
            None => match stored_secrets.get(SLACK_URL) {
                Some(kept) => {
                    secrets.insert(SLACK_URL.into(), kept.clone());
                    checked_url = url::Url::parse(kept).ok();
                }
                None => v.add("config.url", "is required"),
            },
        },
        ChannelType::Webhook => {
            match &c.url {
                Some(url) => {
                    if let Some(parsed) = check_url_field(&mut v, url) {
                        settings.url = Some(parsed.to_string());
                        checked_url = Some(parsed);
                    }
                }
                None => v.add("config.url", "is required"),
            }
            match &c.secret {
                // An empty secret removes the stored one: requests go unsigned.
                Some(secret) if secret.expose_secret().is_empty() => {}
                Some(secret) if secret.expose_secret().chars().count() < 16 => {
                    v.add("config.secret", "must be at least 16 characters")
                }
                Some(secret) if secret.expose_secret().len() > 512 => {
                    v.add("config.secret", "must be at most 512 bytes")
                }
                Some(secret) => {
                    secrets.insert(WEBHOOK_SECRET.into(), secret.expose_secret().to_owned());
                }
                None => {
                    if let Some(kept) = stored_secrets.get(WEBHOOK_SECRET) {
                        secrets.insert(WEBHOOK_SECRET.into(), kept.clone());
                    }
                }
            }
        }
    }
    let allowed: &[&str] = match request.channel_type {
        ChannelType::Email => &["recipients"],
        ChannelType::Slack => &["url"],
        ChannelType::Webhook => &["url", "secret"],
    };
    for (field, given) in [
        ("recipients", c.recipients.is_some()),
        ("url", c.url.is_some()),
        ("secret", c.secret.is_some()),
    ] {
        if given && !allowed.contains(&field) {
            v.add(
                format!("config.{field}"),
                format!("is not used by {} channels", request.channel_type.as_str()),
            );
        }
    }
    v.finish()?;
    Ok((settings, secrets, checked_url))
}

/// The save-time address check of a channel's URL: link-local and metadata
/// addresses are refused, private ones unless the server allows them (and
/// every delivery checks the resolved address again).
async fn check_address(cairn: &Cairn, url: Option<&url::Url>) -> Result<()> {
    let Some(host) = url.and_then(|u| u.host_str()) else {
        return Ok(());
    };
    let policy = crate::storage::address_policy(cairn);
    policy
        .check_host_on_save(host)
        .await
        .map_err(|reason| Error::invalid("config.url", reason))
}

fn name_taken(name: &str) -> Error {
    Error::conflict(
        "name",
        format!("a channel named '{}' already exists", name.trim()),
    )
}

pub(crate) async fn find_model(
    db: &impl ConnectionTrait,
    organization_id: Uuid,
    id: Uuid,
) -> Result<notification_channel::Model> {
    notification_channel::Entity::find_by_id(id)
        .filter(notification_channel::Column::OrganizationId.eq(organization_id))
        .one(db)
        .await?
        .ok_or(Error::NotFound("channel"))
}

/// The organization's channels, by name.
pub async fn list(
    cairn: &Cairn,
    organization_id: Uuid,
    paging: &crate::pages::Paging,
) -> Result<(Vec<ChannelView>, Option<String>)> {
    let (models, next) = crate::pages::page(
        &cairn.read,
        notification_channel::Entity::find()
            .filter(notification_channel::Column::OrganizationId.eq(organization_id)),
        notification_channel::Column::Name,
        paging,
        |channel| channel.name.clone(),
        crate::pages::text,
    )
    .await?;
    let views = models
        .into_iter()
        .map(|model| view(&cairn.master_key, model))
        .collect::<Result<_>>()?;
    Ok((views, next))
}

pub async fn get(cairn: &Cairn, organization_id: Uuid, id: Uuid) -> Result<ChannelView> {
    view(
        &cairn.master_key,
        find_model(&cairn.read, organization_id, id).await?,
    )
}

pub async fn create(
    cairn: &Cairn,
    organization_id: Uuid,
    request: ChannelRequest,
    now: DateTime<Utc>,
) -> Result<ChannelView> {
    crate::orgs::get(&cairn.db, organization_id).await?;
    let (settings, secrets, url) = validate(cairn, &request, Secrets::new())?;
    check_address(cairn, url.as_ref()).await?;
    let id = Uuid::now_v7();
    let inserted = notification_channel::ActiveModel {
        id: Set(id),
        organization_id: Set(organization_id),
        name: Set(request.name.trim().to_owned()),
        channel_type: Set(request.channel_type.as_str().to_owned()),
        config: Set(serde_json::to_value(&settings).map_err(anyhow::Error::from)?),
        secrets_ciphertext: Set(cairn.master_key.seal_fields(id, &secrets)),
        enabled: Set(request.enabled),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(&cairn.db)
    .await;
    match inserted {
        Ok(model) => view(&cairn.master_key, model),
        Err(error) if is_unique_violation(&error) => Err(name_taken(&request.name)),
        Err(error) => Err(error.into()),
    }
}

/// Replaces a channel's settings; omitted secrets are kept while the type
/// stays the same.
pub async fn update(
    cairn: &Cairn,
    organization_id: Uuid,
    id: Uuid,
    request: ChannelRequest,
    now: DateTime<Utc>,
) -> Result<ChannelView> {
    let existing = find_model(&cairn.db, organization_id, id).await?;
    let stored_secrets = if type_of(&existing)? == request.channel_type {
        cairn
            .master_key
            .open_fields(existing.id, existing.secrets_ciphertext.as_deref())?
    } else {
        Secrets::new()
    };
    let (settings, secrets, url) = validate(cairn, &request, stored_secrets)?;
    check_address(cairn, url.as_ref()).await?;
    let mut model: notification_channel::ActiveModel = existing.into();
    model.name = Set(request.name.trim().to_owned());
    model.channel_type = Set(request.channel_type.as_str().to_owned());
    model.config = Set(serde_json::to_value(&settings).map_err(anyhow::Error::from)?);
    model.secrets_ciphertext = Set(cairn.master_key.seal_fields(id, &secrets));
    model.enabled = Set(request.enabled);
    model.updated_at = Set(now);
    match model.update(&cairn.db).await {
        Ok(model) => view(&cairn.master_key, model),
        Err(error) if is_unique_violation(&error) => Err(name_taken(&request.name)),
        Err(error) => Err(error.into()),
    }
}

/// Deletes a channel. Its deliveries stay listed (with the channel's name);
/// pending ones end as `failed` when their turn comes.
pub async fn delete(cairn: &Cairn, organization_id: Uuid, id: Uuid) -> Result<()> {
    find_model(&cairn.db, organization_id, id).await?;
    notification_channel::Entity::delete_by_id(id)
        .exec(&cairn.db)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(check_url("https://hooks.slack.com/services/T/B/x").is_ok());
        assert!(check_url("http://127.0.0.1:9000/hook?x=1").is_ok());
        for bad in [
            "ftp://example.com/x",
            "https://user:pw@example.com/",
            "https://example.com/#frag",
            "not a url",
            "file:///etc/passwd",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        assert!(check_url(&format!("https://e.com/{}", "a".repeat(3000))).is_err());
    }
}
