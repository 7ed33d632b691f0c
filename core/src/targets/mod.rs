//! Storage targets: where archives are written. Organization targets belong
//! to one organization; system-level targets (organization `None`) are
//! managed by administrators and by the `backup:` section of `cairn.yml`.
//!
//! Secrets (`secretAccessKey`, `privateKey`) are sealed under the master key
//! in `secrets_ciphertext` and never leave this module in a view.

use std::path::{Component, Path, PathBuf};

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Set, TransactionTrait,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use cairn_entity::{backup, backup_job, backup_target};

use crate::config::{Config, SystemTargetConfig};
use crate::error::{is_unique_violation, Error, Result, Validator};
use crate::history::BackupStatus;
use crate::secrets::MasterKey;
use crate::validate::{
    check_absolute_path, check_bucket, check_display_name, check_endpoint, check_host,
    check_key_prefix, check_private_key_pem, check_username,
};
use crate::Cairn;

/// The name of the system-level target configured by `cairn.yml`.
pub const SYSTEM_DEFAULT_NAME: &str = "System default";

/// The kind of storage a target writes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TargetType {
    /// Amazon S3 or any S3-compatible endpoint.
    S3,
    /// Cloudflare R2 (S3-compatible; `endpoint` required).
    R2,
    /// Backblaze B2 (S3-compatible; `endpoint` required).
    B2,
    /// A directory on an SSH server, written over SFTP.
    Ssh,
    /// A directory on the Cairn server.
    Local,
}

impl TargetType {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetType::S3 => "s3",
            TargetType::R2 => "r2",
            TargetType::B2 => "b2",
            TargetType::Ssh => "ssh",
            TargetType::Local => "local",
        }
    }

    pub fn parse(text: &str) -> Option<TargetType> {
        Some(match text {
            "s3" => TargetType::S3,
            "r2" => TargetType::R2,
            "b2" => TargetType::B2,
            "ssh" => TargetType::Ssh,
            "local" => TargetType::Local,
            _ => return None,
        })
    }

    fn is_s3_family(self) -> bool {
        matches!(self, TargetType::S3 | TargetType::R2 | TargetType::B2)
    }
}

/// `POST`/`PUT` body of a target.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetRequest {
    /// Unique within the organization (1–200 characters).
    pub name: String,
    #[serde(rename = "type")]
    pub target_type: TargetType,
    /// Whether jobs without an explicit target use this one. At most one per
    /// organization: setting it clears it on the others.
    #[serde(default)]
    pub is_default: bool,
    pub config: TargetConfigRequest,
}

/// Settings of a target; which fields apply depends on `type`.
#[derive(Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetConfigRequest {
    /// s3/r2/b2: the bucket.
    pub bucket: Option<String>,
    /// s3/r2/b2: the region (default `us-east-1` for s3, `auto` for r2; for
    /// b2 taken from the endpoint when not given).
    pub region: Option<String>,
    /// s3/r2/b2: the access key id.
    pub access_key_id: Option<String>,
    /// s3/r2/b2: the secret key. Required on create; on update, omit it to
    /// keep the stored one. Never returned.
    #[schema(value_type = Option<String>, write_only)]
    pub secret_access_key: Option<SecretString>,
    /// s3/r2/b2: an `http(s)://host[:port]` endpoint (required for r2, b2);
    /// a custom endpoint uses path-style addressing.
    pub endpoint: Option<String>,
    /// s3/r2/b2: a key prefix under which every object lives.
    pub prefix: Option<String>,
    /// ssh: host name or IP address.
    pub host: Option<String>,
    /// ssh: port (default 22).
    pub port: Option<u16>,
    /// ssh: user name.
    pub username: Option<String>,
    /// ssh: absolute directory on the server; local: directory (relative
    /// paths are taken under the server's local backup root).
    pub path: Option<String>,
    /// ssh: an unencrypted private key in PEM form. Required for an
    /// organization's target; a system-level target may omit it to use the
    /// server's SSH agent. On update, omit it to keep the stored one (or, for
    /// a system-level target, send `""` to remove it). Never returned.
    #[schema(value_type = Option<String>, write_only)]
    pub private_key: Option<SecretString>,
    /// ssh: the server's host key, `SHA256:<base64>` as `ssh-keygen -lf`
    /// prints it. When absent, the key seen at the first connection is
    /// stored; a different key later fails loudly. Kept on update while the
    /// host and port stay the same.
    pub host_key_fingerprint: Option<String>,
}

/// The non-secret settings of a target, as stored and as returned.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// ssh: the trusted host key fingerprint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_key_fingerprint: Option<String>,
}

/// A target's settings as returned: secrets appear only as "is set".
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetConfigView {
    #[serde(flatten)]
    pub settings: TargetSettings,
    /// s3/r2/b2: whether a secret key is stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_access_key_set: Option<bool>,
    /// ssh: whether a private key is stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key_set: Option<bool>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetView {
    pub id: Uuid,
    /// `null` for a system-level target.
    pub organization_id: Option<Uuid>,
    pub name: String,
    #[serde(rename = "type")]
    pub target_type: TargetType,
    pub is_default: bool,
    pub config: TargetConfigView,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The secret settings of a target, sealed as one JSON object.
type Secrets = crate::secrets::SecretFields;
const SECRET_ACCESS_KEY: &str = "secretAccessKey";
const PRIVATE_KEY: &str = "privateKey";

fn view(key: &MasterKey, model: backup_target::Model) -> Result<TargetView> {
    let target_type = TargetType::parse(&model.target_type).ok_or_else(|| {
        anyhow::anyhow!("target {} has unknown type {}", model.id, model.target_type)
    })?;
    let secrets = key.open_fields(model.id, model.secrets_ciphertext.as_deref())?;
    let settings: TargetSettings =
        serde_json::from_value(model.config.clone()).map_err(anyhow::Error::from)?;
    Ok(TargetView {
        id: model.id,
        organization_id: model.organization_id,
        name: model.name,
        target_type,
        is_default: model.is_default,
        config: TargetConfigView {
            settings,
            secret_access_key_set: target_type
                .is_s3_family()
                .then(|| secrets.contains_key(SECRET_ACCESS_KEY)),
            private_key_set: (target_type == TargetType::Ssh)
                .then(|| secrets.contains_key(PRIVATE_KEY)),
        },
        created_at: model.created_at,
        updated_at: model.updated_at,
    })
}

/// Checks a request against the rules of its type and returns what to store.
/// `stored` is the target being updated: its secrets are kept when the
/// request omits them and the type still uses them, and so is its trusted
/// host key while the SSH host and port stay the same.
fn validate(
    config: &Config,
    organization_id: Option<Uuid>,
    local_root: Option<&LocalRoot>,
    request: &TargetRequest,
    stored: Option<Stored>,
) -> Result<(TargetSettings, Secrets)> {
    let mut v = Validator::new();
    v.check_result("name", check_display_name(&request.name));
    if organization_id.is_none() && request.is_default {
        v.add("isDefault", "applies to organization targets only");
    }
    let t = request.target_type;
    let c = &request.config;
    let mut settings = TargetSettings::default();
    let mut secrets = Secrets::new();
    let (stored_secrets, stored_settings) = match stored {
        Some(stored)
            if stored.target_type == t
                || (stored.target_type.is_s3_family() && t.is_s3_family()) =>
        {
            (stored.secrets, stored.settings)
        }
        _ => (Secrets::new(), TargetSettings::default()),
    };

    match t {
        TargetType::S3 | TargetType::R2 | TargetType::B2 => {
            match c.bucket.as_deref() {
                None => v.add("config.bucket", "is required"),
                Some(bucket) => {
                    v.check_result("config.bucket", check_bucket(bucket));
                    settings.bucket = Some(bucket.to_owned());
                }
            }
            match c.access_key_id.as_deref() {
                None | Some("") => v.add("config.accessKeyId", "is required"),
                Some(id)
                    if id.len() > 128
                        || id.chars().any(|c| c.is_whitespace() || c.is_control()) =>
                {
                    v.add(
                        "config.accessKeyId",
                        "must be at most 128 characters without whitespace",
                    )
                }
                Some(id) => settings.access_key_id = Some(id.to_owned()),
            }
            match &c.secret_access_key {
                Some(secret) if secret.expose_secret().is_empty() => {
                    v.add("config.secretAccessKey", "must not be empty")
                }
                Some(secret) => {
                    secrets.insert(SECRET_ACCESS_KEY.into(), secret.expose_secret().to_owned());
                }
                None => match stored_secrets.get(SECRET_ACCESS_KEY) {
                    Some(kept) => {
                        secrets.insert(SECRET_ACCESS_KEY.into(), kept.clone());
                    }
                    None => v.add("config.secretAccessKey", "is required"),
                },
            }
            match c.endpoint.as_deref() {
                None if matches!(t, TargetType::R2 | TargetType::B2) => v.add(
                    "config.endpoint",
                    format!("is required for {} targets", t.as_str()),
                ),
                None => {}
                Some(endpoint) => {
                    v.check_result("config.endpoint", check_endpoint(endpoint));
                    settings.endpoint = Some(endpoint.trim_end_matches('/').to_owned());
                }
            }
            let region = match (c.region.as_deref(), t) {
                (Some(region), _) => Some(region.to_owned()),
                (None, TargetType::S3) => Some("us-east-1".to_owned()),
                (None, TargetType::R2) => Some("auto".to_owned()),
                (None, _) => c.endpoint.as_deref().and_then(b2_region_of),
            };
            match region {
                None => v.add(
                    "config.region",
                    "is required (it could not be taken from the endpoint)",
                ),
                Some(region)
                    if region.is_empty()
                        || region.len() > 32
                        || !region
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') =>
                {
                    v.add(
                        "config.region",
                        "must be 1–32 lower-case letters, digits or dashes",
                    )
                }
                Some(region) => settings.region = Some(region),
            }
            if let Some(prefix) = c.prefix.as_deref().filter(|p| !p.is_empty()) {
                v.check_result("config.prefix", check_key_prefix(prefix));
                settings.prefix = Some(prefix.to_owned());
            }
        }
        TargetType::Ssh => {
            match c.host.as_deref() {
                None => v.add("config.host", "is required"),
                Some(host) => {
                    v.check_result("config.host", check_host(host));
                    settings.host = Some(host.to_owned());
                }
            }
            match c.port {
                Some(0) => v.add("config.port", "must be between 1 and 65535"),
                port => settings.port = Some(port.unwrap_or(22)),
            }
            match c.username.as_deref() {
                None => v.add("config.username", "is required"),
                Some(username) => {
                    v.check_result("config.username", check_username(username));
                    settings.username = Some(username.to_owned());
                }
            }
            match c.path.as_deref() {
                None => v.add("config.path", "is required"),
                Some(path) => {
                    v.check_result("config.path", check_absolute_path(path));
                    settings.path = Some(path.to_owned());
                }
            }
            match &c.private_key {
                // The SSH agent holds the operator's keys: an organization's
                // target must bring its own.
                Some(key) if key.expose_secret().is_empty() && organization_id.is_some() => v.add(
                    "config.privateKey",
                    "is required for an organization's SSH target (the server's SSH agent is for system-level targets only)",
                ),
                // An empty key removes the stored one: the SSH agent is used.
                Some(key) if key.expose_secret().is_empty() => {}
                Some(key) => {
                    v.check_result(
                        "config.privateKey",
                        check_private_key_pem(key.expose_secret()),
                    );
                    secrets.insert(
                        PRIVATE_KEY.into(),
                        key.expose_secret().trim().to_owned() + "\n",
                    );
                }
                None => match stored_secrets.get(PRIVATE_KEY) {
                    Some(kept) => {
                        secrets.insert(PRIVATE_KEY.into(), kept.clone());
                    }
                    None if organization_id.is_some() => v.add(
                        "config.privateKey",
                        "is required for an organization's SSH target (the server's SSH agent is for system-level targets only)",
                    ),
                    None => {}
                },
            }
            match c.host_key_fingerprint.as_deref() {
                Some(fingerprint) => {
                    v.check_result("config.hostKeyFingerprint", check_fingerprint(fingerprint));
                    // Stored as OpenSSH prints it: base64 without padding.
                    settings.host_key_fingerprint =
                        Some(fingerprint.trim_end_matches('=').to_owned());
                }
                None if stored_settings.host == settings.host
                    && stored_settings.port == settings.port =>
                {
                    settings.host_key_fingerprint = stored_settings.host_key_fingerprint.clone();
                }
                None => {}
            }
        }
        TargetType::Local => {
            if !config.allow_local_backups {
                v.add(
                    "type",
                    "local targets are disabled on this server (CAIRN_ALLOW_LOCAL_BACKUPS=false)",
                );
            }
            match (c.path.as_deref(), local_root) {
                (None | Some(""), _) => v.add("config.path", "is required"),
                (Some(path), Some(root)) => match root.resolve(path) {
                    Ok(resolved) => settings.path = Some(resolved.to_string_lossy().into_owned()),
                    Err(message) => v.add("config.path", message),
                },
                (Some(_), None) => {
                    return Err(
                        anyhow::anyhow!("no local root was resolved for a local target").into(),
                    )
                }
            }
        }
    }
    // A field another kind of target uses is a mistake worth naming.
    let allowed: &[&str] = match t {
        TargetType::S3 | TargetType::R2 | TargetType::B2 => &[
            "bucket",
            "region",
            "accessKeyId",
            "secretAccessKey",
            "endpoint",
            "prefix",
        ],
        TargetType::Ssh => &[
            "host",
            "port",
            "username",
            "path",
            "privateKey",
            "hostKeyFingerprint",
        ],
        TargetType::Local => &["path"],
    };
    let present = [
        ("bucket", c.bucket.is_some()),
        ("region", c.region.is_some()),
        ("accessKeyId", c.access_key_id.is_some()),
        ("secretAccessKey", c.secret_access_key.is_some()),
        ("endpoint", c.endpoint.is_some()),
        ("prefix", c.prefix.is_some()),
        ("host", c.host.is_some()),
        ("port", c.port.is_some()),
        ("username", c.username.is_some()),
        ("path", c.path.is_some()),
        ("privateKey", c.private_key.is_some()),
        ("hostKeyFingerprint", c.host_key_fingerprint.is_some()),
    ];
    for (field, given) in present {
        if given && !allowed.contains(&field) {
            v.add(
                format!("config.{field}"),
                format!("is not used by {} targets", t.as_str()),
            );
        }
    }
    v.finish()?;
    Ok((settings, secrets))
}

/// The target being updated, as stored.
struct Stored {
    target_type: TargetType,
    secrets: Secrets,
    settings: TargetSettings,
}

/// `SHA256:` and the base64 of 32 bytes, as OpenSSH prints fingerprints.
fn check_fingerprint(fingerprint: &str) -> Result<(), String> {
    use base64::Engine;
    let decoded = fingerprint.strip_prefix("SHA256:").and_then(|b64| {
        base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(b64.trim_end_matches('='))
            .ok()
    });
    match decoded {
        Some(bytes) if bytes.len() == 32 => Ok(()),
        _ => Err("must be a SHA-256 fingerprint as ssh-keygen -lf prints it (SHA256:…)".into()),
    }
}

/// The address check made when a target is saved (and made again at
/// every connection): an endpoint or SSH host must not be a link-local or
/// metadata address, nor a private one unless this server allows it.
async fn check_addresses(
    cairn: &Cairn,
    organization_id: Option<Uuid>,
    settings: &TargetSettings,
) -> Result<()> {
    let policy = crate::storage::target_policy(cairn, organization_id);
    if let Some(endpoint) = &settings.endpoint {
        if let Some(host) = url::Url::parse(endpoint)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
        {
            if let Err(reason) = policy.check_host_on_save(&host).await {
                return Err(Error::invalid("config.endpoint", reason));
            }
        }
    }
    if let Some(host) = &settings.host {
        if let Err(reason) = policy.check_host_on_save(host).await {
            return Err(Error::invalid("config.host", reason));
        }
    }
    Ok(())
}

/// Stores the host key fingerprint a connection to `tested` (the target as
/// it was when connecting) observed, unless one is stored already (the first
/// key seen is trusted; later ones are checked) or the target's host or
/// port changed meanwhile.
pub async fn record_host_key(
    cairn: &Cairn,
    tested: &backup_target::Model,
    fingerprint: &str,
) -> Result<()> {
    let tested_settings: TargetSettings =
        serde_json::from_value(tested.config.clone()).map_err(anyhow::Error::from)?;
    let txn = cairn.db.begin().await?;
    let Some(model) = backup_target::Entity::find_by_id(tested.id)
        .one(&txn)
        .await?
    else {
        return Ok(());
    };
    let mut settings: TargetSettings =
        serde_json::from_value(model.config.clone()).map_err(anyhow::Error::from)?;
    if settings.host_key_fingerprint.is_some()
        || settings.host != tested_settings.host
        || settings.port != tested_settings.port
    {
        return Ok(());
    }
    settings.host_key_fingerprint = Some(fingerprint.to_owned());
    let mut active: backup_target::ActiveModel = model.into();
    active.config = Set(serde_json::to_value(&settings).map_err(anyhow::Error::from)?);
    active.update(&txn).await?;
    txn.commit().await?;
    Ok(())
}

/// Backblaze endpoints name their region: `s3.<region>.backblazeb2.com`.
fn b2_region_of(endpoint: &str) -> Option<String> {
    let url = url::Url::parse(endpoint).ok()?;
    let host = url.host_str()?;
    let region = host.strip_prefix("s3.")?.strip_suffix(".backblazeb2.com")?;
    Some(region.to_owned())
}

/// Where the local targets of a scope may write: an organization's under
/// `<local backup root>/<org slug>/`, so that organizations never share a
/// directory; system-level ones anywhere (relative paths under the root).
struct LocalRoot {
    dir: PathBuf,
    confined: bool,
}

impl LocalRoot {
    async fn of(
        cairn: &Cairn,
        db: &impl ConnectionTrait,
        organization_id: Option<Uuid>,
    ) -> Result<LocalRoot> {
        let root = cairn.config.local_backup_root();
        Ok(match organization_id {
            Some(id) => LocalRoot {
                dir: root.join(crate::orgs::get(db, id).await?.slug),
                confined: true,
            },
            None => LocalRoot {
                dir: root,
                confined: false,
            },
        })
    }

    /// Resolves a target's directory: relative paths are taken under the
    /// root's directory; `..` is refused everywhere.
    fn resolve(&self, path: &str) -> Result<PathBuf, String> {
        let given = Path::new(path);
        if given
            .components()
            .any(|c| matches!(c, Component::ParentDir))
        {
            return Err("must not contain '..' segments".into());
        }
        if path.chars().any(char::is_control) {
            return Err("must not contain control characters".into());
        }
        let resolved = crate::config::absolute(&self.dir.join(given));
        if self.confined && !resolved.starts_with(&self.dir) {
            return Err(format!(
                "must lie under this organization's local backup directory {}",
                self.dir.display()
            ));
        }
        // A link below the backup root would let the target write anywhere
        // (checked again whenever the target is used).
        if self.confined {
            let base = self.dir.parent().unwrap_or(&self.dir);
            if let Some(link) = crate::storage::local::symlink_below(base, &resolved) {
                return Err(format!(
                    "passes through a symlink ({}); an organization's local target may not",
                    link.display()
                ));
            }
        }
        Ok(resolved)
    }
}

/// Loads the local root only for local targets.
async fn local_root_for(
    cairn: &Cairn,
    db: &impl ConnectionTrait,
    organization_id: Option<Uuid>,
    request: &TargetRequest,
) -> Result<Option<LocalRoot>> {
    if request.target_type == TargetType::Local {
        Ok(Some(LocalRoot::of(cairn, db, organization_id).await?))
    } else {
        Ok(None)
    }
}

fn scoped(organization_id: Option<Uuid>) -> sea_orm::sea_query::SimpleExpr {
    match organization_id {
        Some(id) => backup_target::Column::OrganizationId.eq(id),
        None => backup_target::Column::OrganizationId.is_null(),
    }
}

async fn find_model(
    db: &impl ConnectionTrait,
    organization_id: Option<Uuid>,
    id: Uuid,
) -> Result<backup_target::Model> {
    backup_target::Entity::find_by_id(id)
        .filter(scoped(organization_id))
        .one(db)
        .await?
        .ok_or(Error::NotFound("target"))
}

/// Maps a unique violation to what the caller did: a duplicate name, or a
/// concurrent change of the organization's default target.
fn unique_conflict(error: &sea_orm::DbErr, name: &str) -> Error {
    // Both databases name the violated index or its columns; only the name
    // indexes mention `name`.
    if error.to_string().contains("name") {
        Error::conflict(
            "name",
            format!("a target named '{}' already exists", name.trim()),
        )
    } else {
        Error::conflict(
            "isDefault",
            "another request changed the default target at the same time; retry",
        )
    }
}

/// The targets of an organization (`None`: the system-level targets), by name.
pub async fn list(cairn: &Cairn, organization_id: Option<Uuid>) -> Result<Vec<TargetView>> {
    backup_target::Entity::find()
        .filter(scoped(organization_id))
        .order_by_asc(backup_target::Column::Name)
        .all(&cairn.db)
        .await?
        .into_iter()
        .map(|model| view(&cairn.master_key, model))
        .collect()
}

pub async fn get(cairn: &Cairn, organization_id: Option<Uuid>, id: Uuid) -> Result<TargetView> {
    view(
        &cairn.master_key,
        find_model(&cairn.db, organization_id, id).await?,
    )
}

pub async fn create(
    cairn: &Cairn,
    organization_id: Option<Uuid>,
    request: TargetRequest,
    now: DateTime<Utc>,
) -> Result<TargetView> {
    let local_root = local_root_for(cairn, &cairn.db, organization_id, &request).await?;
    let (settings, secrets) = validate(
        &cairn.config,
        organization_id,
        local_root.as_ref(),
        &request,
        None,
    )?;
    check_addresses(cairn, organization_id, &settings).await?;
    let id = Uuid::now_v7();
    let model = backup_target::ActiveModel {
        id: Set(id),
        organization_id: Set(organization_id),
        name: Set(request.name.trim().to_owned()),
        target_type: Set(request.target_type.as_str().to_owned()),
        config: Set(serde_json::to_value(&settings).map_err(anyhow::Error::from)?),
        secrets_ciphertext: Set(cairn.master_key.seal_fields(id, &secrets)),
        is_default: Set(request.is_default),
        created_at: Set(now),
        updated_at: Set(now),
    };
    let txn = cairn.db.begin().await?;
    if request.is_default {
        clear_default(&txn, organization_id).await?;
    }
    let inserted = match model.insert(&txn).await {
        Ok(model) => model,
        Err(error) if is_unique_violation(&error) => {
            return Err(unique_conflict(&error, &request.name))
        }
        Err(error) => return Err(error.into()),
    };
    txn.commit().await?;
    view(&cairn.master_key, inserted)
}

pub async fn update(
    cairn: &Cairn,
    organization_id: Option<Uuid>,
    id: Uuid,
    request: TargetRequest,
    now: DateTime<Utc>,
) -> Result<TargetView> {
    let txn = cairn.db.begin().await?;
    let existing = find_model(&txn, organization_id, id).await?;
    let stored = match TargetType::parse(&existing.target_type) {
        Some(target_type) => Some(Stored {
            target_type,
            secrets: cairn
                .master_key
                .open_fields(existing.id, existing.secrets_ciphertext.as_deref())?,
            settings: serde_json::from_value(existing.config.clone())
                .map_err(anyhow::Error::from)?,
        }),
        None => None,
    };
    let local_root = local_root_for(cairn, &txn, organization_id, &request).await?;
    let (settings, secrets) = validate(
        &cairn.config,
        organization_id,
        local_root.as_ref(),
        &request,
        stored,
    )?;
    check_addresses(cairn, organization_id, &settings).await?;
    check_location_kept(&txn, &existing, request.target_type, &settings).await?;
    if request.is_default {
        clear_default(&txn, organization_id).await?;
    }
    let mut model: backup_target::ActiveModel = existing.into();
    model.name = Set(request.name.trim().to_owned());
    model.target_type = Set(request.target_type.as_str().to_owned());
    model.config = Set(serde_json::to_value(&settings).map_err(anyhow::Error::from)?);
    model.secrets_ciphertext = Set(cairn.master_key.seal_fields(id, &secrets));
    model.is_default = Set(request.is_default);
    model.updated_at = Set(now);
    let updated = match model.update(&txn).await {
        Ok(model) => model,
        Err(error) if is_unique_violation(&error) => {
            return Err(unique_conflict(&error, &request.name))
        }
        Err(error) => return Err(error.into()),
    };
    txn.commit().await?;
    view(&cairn.master_key, updated)
}

/// Refuses (409, naming the field) an update that moves a target holding
/// archives: its type, bucket, endpoint, prefix, host, port or path. The
/// records of its backups name objects at the old location, so a move
/// would leave every one of them unreadable (and retention deleting
/// nothing); credentials may change. Moving data is an explicit
/// operation, or a new target.
async fn check_location_kept(
    db: &impl ConnectionTrait,
    existing: &backup_target::Model,
    target_type: TargetType,
    settings: &TargetSettings,
) -> Result<()> {
    let holds_archives = backup::Entity::find()
        .filter(backup::Column::TargetId.eq(existing.id))
        .filter(backup::Column::Status.is_in([
            BackupStatus::Success.as_str(),
            BackupStatus::Running.as_str(),
        ]))
        .one(db)
        .await?
        .is_some();
    if !holds_archives {
        return Ok(());
    }
    let refuse = |field: &str| {
        Err(Error::conflict(
            field,
            "cannot change while the target holds archives (their records point at the current \
             location); create a new target for the new location",
        ))
    };
    if existing.target_type != target_type.as_str() {
        return refuse("type");
    }
    let stored: TargetSettings =
        serde_json::from_value(existing.config.clone()).map_err(anyhow::Error::from)?;
    let fields = [
        ("config.bucket", stored.bucket == settings.bucket),
        ("config.endpoint", stored.endpoint == settings.endpoint),
        ("config.prefix", stored.prefix == settings.prefix),
        ("config.host", stored.host == settings.host),
        ("config.port", stored.port == settings.port),
        ("config.path", stored.path == settings.path),
    ];
    match fields.into_iter().find(|(_, same)| !same) {
        Some((field, _)) => refuse(field),
        None => Ok(()),
    }
}

/// Deletes a target that no job uses and no backup record points at.
pub async fn delete(cairn: &Cairn, organization_id: Option<Uuid>, id: Uuid) -> Result<()> {
    let txn = cairn.db.begin().await?;
    find_model(&txn, organization_id, id).await?;
    let jobs: Vec<String> = backup_job::Entity::find()
        .select_only()
        .column(backup_job::Column::Name)
        .filter(backup_job::Column::TargetId.eq(id))
        .order_by_asc(backup_job::Column::Name)
        .into_tuple()
        .all(&txn)
        .await?;
    if !jobs.is_empty() {
        return Err(Error::Conflict {
            field: None,
            message: format!(
                "the target is used by {} job(s): {}; point them at another target first",
                jobs.len(),
                jobs.join(", ")
            ),
        });
    }
    let backups = backup::Entity::find()
        .filter(backup::Column::TargetId.eq(id))
        .count(&txn)
        .await?;
    if backups > 0 {
        return Err(Error::Conflict {
            field: None,
            message: format!(
                "the target holds {backups} backup record(s); deleting it would orphan them"
            ),
        });
    }
    match backup_target::Entity::delete_by_id(id).exec(&txn).await {
        Ok(_) => {}
        // A job or record that started pointing at the target meanwhile.
        Err(error)
            if matches!(
                error.sql_err(),
                Some(sea_orm::SqlErr::ForeignKeyConstraintViolation(_))
            ) =>
        {
            return Err(Error::Conflict {
                field: None,
                message: "the target came into use while it was being deleted".into(),
            })
        }
        Err(error) => return Err(error.into()),
    }
    txn.commit().await?;
    Ok(())
}

async fn clear_default(db: &impl ConnectionTrait, organization_id: Option<Uuid>) -> Result<()> {
    backup_target::Entity::update_many()
        .col_expr(backup_target::Column::IsDefault, Expr::value(false))
        .filter(scoped(organization_id))
        .filter(backup_target::Column::IsDefault.eq(true))
        .exec(db)
        .await?;
    Ok(())
}

/// Creates or updates the system-level target "System default" from the
/// `backup:` section of the configuration. Returns whether it was created.
pub async fn ensure_system_default(
    cairn: &Cairn,
    section: &SystemTargetConfig,
    now: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let Some(target_type) = TargetType::parse(&section.target_type) else {
        anyhow::bail!(
            "invalid configuration: key `backup.type`: unknown target type `{}`, expected one of s3, r2, b2, ssh, local",
            section.target_type
        );
    };
    let request = system_default_request(section, target_type);
    let existing = backup_target::Entity::find()
        .filter(backup_target::Column::OrganizationId.is_null())
        .filter(backup_target::Column::Name.eq(SYSTEM_DEFAULT_NAME))
        .one(&cairn.db)
        .await?;
    let outcome = match existing {
        Some(model) => update(cairn, None, model.id, request, now)
            .await
            .map(|_| false),
        None => match create(cairn, None, request, now).await {
            // Another replica created it at the same moment: update that one.
            Err(Error::Conflict {
                field: Some(field), ..
            }) if field == "name" => {
                let model = backup_target::Entity::find()
                    .filter(backup_target::Column::OrganizationId.is_null())
                    .filter(backup_target::Column::Name.eq(SYSTEM_DEFAULT_NAME))
                    .one(&cairn.db)
                    .await?
                    .ok_or_else(|| {
                        anyhow::anyhow!("\"{SYSTEM_DEFAULT_NAME}\" vanished during start-up")
                    })?;
                let retry = system_default_request(section, target_type);
                update(cairn, None, model.id, retry, now)
                    .await
                    .map(|_| false)
            }
            other => other.map(|_| true),
        },
    };
    outcome.map_err(|error| match error {
        Error::Validation(errors) => {
            let described: Vec<String> = errors
                .iter()
                .map(|e| format!("key `backup.{}`: {}", config_key_of(&e.field), e.message))
                .collect();
            anyhow::anyhow!("invalid configuration: {}", described.join("; "))
        }
        other => anyhow::Error::new(other),
    })
}

fn system_default_request(section: &SystemTargetConfig, target_type: TargetType) -> TargetRequest {
    TargetRequest {
        name: SYSTEM_DEFAULT_NAME.to_owned(),
        target_type,
        is_default: false,
        config: TargetConfigRequest {
            bucket: section.bucket.clone(),
            region: section.region.clone(),
            access_key_id: section.access_key.clone(),
            secret_access_key: section.secret_key.clone(),
            endpoint: section.endpoint.clone(),
            prefix: section.prefix.clone(),
            host: section.host.clone(),
            port: section.port,
            username: section.username.clone(),
            path: section.path.clone(),
            private_key: section.private_key.clone(),
            host_key_fingerprint: section.host_key_fingerprint.clone(),
        },
    }
}

/// The `cairn.yml` key of a target request field.
fn config_key_of(field: &str) -> &str {
    match field.strip_prefix("config.").unwrap_or(field) {
        "accessKeyId" => "access_key",
        "secretAccessKey" => "secret_key",
        "privateKey" => "private_key",
        other => other,
    }
}

/// Tests a target: connects, writes, reads back, lists and deletes a probe
/// object. A failing target is a report with `ok: false`, not an error. An
/// SSH target without a stored host key keeps the one this test saw.
pub async fn test(
    cairn: &Cairn,
    organization_id: Option<Uuid>,
    id: Uuid,
) -> Result<crate::storage::TestReport> {
    let model = find_model(&cairn.db, organization_id, id).await?;
    let storage = crate::storage::open(cairn, &model, crate::storage::Purpose::Probe)?;
    let report = crate::storage::test_connection(storage.as_ref()).await;
    if let Some(fingerprint) = storage.observed_host_key() {
        let host_key_failed = report.checks.iter().any(|c| {
            c.error
                .as_deref()
                .is_some_and(|e| e.contains("host key changed"))
        });
        if !host_key_failed {
            record_host_key(cairn, &model, &fingerprint).await?;
        }
    }
    Ok(report)
}
