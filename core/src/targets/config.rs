//! A target's settings, parsed once: [`validate`] turns a request into
//! [`TargetSettings`] — one struct per kind of storage, every required field
//! present — which is stored as it is (the `config` column, beside
//! `target_type`) and read back with [`TargetSettings::of`]. Opening a target
//! matches on the kind and never re-checks a field.

use std::path::{Component, Path, PathBuf};

use sea_orm::ConnectionTrait;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use cairn_entity::backup_target;

use super::{TargetConfigRequest, TargetRequest, TargetType};
use crate::config::Config;
use crate::error::{Result, Validator};
use crate::validate::{
    check_absolute_path, check_bucket, check_display_name, check_endpoint, check_host,
    check_key_prefix, check_private_key_pem, check_username,
};
use crate::Cairn;

/// The secret settings of a target, sealed as one JSON object.
pub type Secrets = crate::secrets::SecretFields;
/// s3/r2/b2: the secret key, in [`Secrets`].
pub const SECRET_ACCESS_KEY: &str = "secretAccessKey";
/// ssh: the private key (PEM), in [`Secrets`].
pub const PRIVATE_KEY: &str = "privateKey";

/// The non-secret settings of a target, by kind of storage, as stored and
/// as returned (a flat object; `type` says which kind).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum TargetSettings {
    /// s3, r2, b2.
    S3(S3Settings),
    Ssh(SshSettings),
    Local(LocalSettings),
}

/// An S3-compatible bucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Settings {
    pub bucket: String,
    pub region: String,
    pub access_key_id: String,
    /// A custom endpoint (path-style addressing); none for AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The key prefix under which every object lives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// A directory on an SSH server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SshSettings {
    pub host: String,
    pub port: u16,
    pub username: String,
    /// An absolute directory on the server.
    pub path: String,
    /// The trusted host key fingerprint (`SHA256:…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key_fingerprint: Option<String>,
}

/// A directory on the Cairn server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalSettings {
    /// An absolute directory (resolved at save).
    pub path: String,
}

impl TargetSettings {
    /// The type and settings a target stores.
    pub fn of(model: &backup_target::Model) -> anyhow::Result<(TargetType, TargetSettings)> {
        let target_type = TargetType::parse(&model.target_type).ok_or_else(|| {
            anyhow::anyhow!("target {} has unknown type {}", model.id, model.target_type)
        })?;
        let config = model.config.clone();
        let settings = match target_type {
            TargetType::S3 | TargetType::R2 | TargetType::B2 => {
                TargetSettings::S3(serde_json::from_value(config)?)
            }
            TargetType::Ssh => TargetSettings::Ssh(serde_json::from_value(config)?),
            TargetType::Local => TargetSettings::Local(serde_json::from_value(config)?),
        };
        Ok((target_type, settings))
    }

    /// The JSON stored in the `config` column.
    pub fn to_value(&self) -> serde_json::Value {
        // Structs of strings and numbers always serialize.
        serde_json::to_value(self).expect("target settings serialize to JSON")
    }

    /// Where the target's objects are, field by field: what may not change
    /// while it holds archives.
    pub(super) fn location(&self) -> Vec<(&'static str, String)> {
        match self {
            TargetSettings::S3(s3) => vec![
                ("config.bucket", s3.bucket.clone()),
                ("config.endpoint", s3.endpoint.clone().unwrap_or_default()),
                ("config.prefix", s3.prefix.clone().unwrap_or_default()),
            ],
            TargetSettings::Ssh(ssh) => vec![
                ("config.host", ssh.host.clone()),
                ("config.port", ssh.port.to_string()),
                ("config.path", ssh.path.clone()),
            ],
            TargetSettings::Local(local) => vec![("config.path", local.path.clone())],
        }
    }
}

/// The target being updated, as stored.
pub(super) struct Stored {
    pub(super) target_type: TargetType,
    pub(super) secrets: Secrets,
    pub(super) settings: TargetSettings,
}

/// Checks a request against the rules of its type and returns what to
/// store. `stored` is the target being updated: its secrets are kept when
/// the request omits them and the type still uses them, and so is its
/// trusted host key while the SSH host and port stay the same.
///
/// 1. the name, and `isDefault` (organization targets only);
/// 2. what is kept of the stored target (same type, or both S3-family);
/// 3. the settings of the request's type, one function per kind;
/// 4. fields that another kind of target uses are named.
pub(super) fn validate(
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
    let target_type = request.target_type;
    let kept = stored.filter(|stored| {
        stored.target_type == target_type
            || (stored.target_type.is_s3_family() && target_type.is_s3_family())
    });
    let c = &request.config;
    let parsed = match target_type {
        TargetType::S3 | TargetType::R2 | TargetType::B2 => {
            s3_settings(&mut v, target_type, c, kept.as_ref())
        }
        TargetType::Ssh => ssh_settings(&mut v, organization_id, c, kept.as_ref()),
        TargetType::Local => local_settings(&mut v, config, c, local_root)?,
    };
    name_unused_fields(&mut v, target_type, c);
    v.finish()?;
    // Every kind's function adds an error when it returns nothing.
    parsed.ok_or_else(|| anyhow::anyhow!("a valid target request produced no settings").into())
}

/// The settings of an S3-family target (`None` when a required field is
/// missing; the validator says which).
fn s3_settings(
    v: &mut Validator,
    target_type: TargetType,
    c: &TargetConfigRequest,
    kept: Option<&Stored>,
) -> Option<(TargetSettings, Secrets)> {
    let mut secrets = Secrets::new();
    let bucket = match c.bucket.as_deref() {
        None => {
            v.add("config.bucket", "is required");
            None
        }
        Some(bucket) => {
            v.check_result("config.bucket", check_bucket(bucket));
            Some(bucket.to_owned())
        }
    };
    let access_key_id = match c.access_key_id.as_deref() {
        None | Some("") => {
            v.add("config.accessKeyId", "is required");
            None
        }
        Some(id) if id.len() > 128 || id.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            v.add(
                "config.accessKeyId",
                "must be at most 128 characters without whitespace",
            );
            None
        }
        Some(id) => Some(id.to_owned()),
    };
    match &c.secret_access_key {
        Some(secret) if secret.expose_secret().is_empty() => {
            v.add("config.secretAccessKey", "must not be empty")
        }
        Some(secret) => {
            secrets.insert(SECRET_ACCESS_KEY.into(), secret.expose_secret().to_owned());
        }
        None => match kept.and_then(|k| k.secrets.get(SECRET_ACCESS_KEY)) {
            Some(kept) => {
                secrets.insert(SECRET_ACCESS_KEY.into(), kept.clone());
            }
            None => v.add("config.secretAccessKey", "is required"),
        },
    }
    let endpoint = match c.endpoint.as_deref() {
        None if matches!(target_type, TargetType::R2 | TargetType::B2) => {
            v.add(
                "config.endpoint",
                format!("is required for {} targets", target_type.as_str()),
            );
            None
        }
        None => None,
        Some(endpoint) => {
            v.check_result("config.endpoint", check_endpoint(endpoint));
            Some(endpoint.trim_end_matches('/').to_owned())
        }
    };
    let region = match (c.region.as_deref(), target_type) {
        (Some(region), _) => Some(region.to_owned()),
        (None, TargetType::S3) => Some("us-east-1".to_owned()),
        (None, TargetType::R2) => Some("auto".to_owned()),
        (None, _) => c.endpoint.as_deref().and_then(b2_region_of),
    };
    let region = match region {
        None => {
            v.add(
                "config.region",
                "is required (it could not be taken from the endpoint)",
            );
            None
        }
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
            );
            None
        }
        Some(region) => Some(region),
    };
    let prefix = c.prefix.as_deref().filter(|p| !p.is_empty()).map(|prefix| {
        v.check_result("config.prefix", check_key_prefix(prefix));
        prefix.to_owned()
    });
    let settings = S3Settings {
        bucket: bucket?,
        region: region?,
        access_key_id: access_key_id?,
        endpoint,
        prefix,
    };
    Some((TargetSettings::S3(settings), secrets))
}

/// The settings of an SSH target; an organization's must carry its own key.
fn ssh_settings(
    v: &mut Validator,
    organization_id: Option<Uuid>,
    c: &TargetConfigRequest,
    kept: Option<&Stored>,
) -> Option<(TargetSettings, Secrets)> {
    let mut secrets = Secrets::new();
    let mut required =
        |field: &str, value: Option<&str>, check: fn(&str) -> Result<(), String>| match value {
            None => {
                v.add(format!("config.{field}"), "is required");
                None
            }
            Some(value) => {
                v.check_result(format!("config.{field}"), check(value));
                Some(value.to_owned())
            }
        };
    let host = required("host", c.host.as_deref(), check_host);
    let username = required("username", c.username.as_deref(), check_username);
    let path = required("path", c.path.as_deref(), check_absolute_path);
    let port = match c.port {
        Some(0) => {
            v.add("config.port", "must be between 1 and 65535");
            None
        }
        port => Some(port.unwrap_or(22)),
    };
    const OWN_KEY: &str = "is required for an organization's SSH target (the server's SSH agent is for system-level targets only)";
    match &c.private_key {
        // The SSH agent holds the operator's keys: an organization's
        // target must bring its own.
        Some(key) if key.expose_secret().is_empty() && organization_id.is_some() => {
            v.add("config.privateKey", OWN_KEY)
        }
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
        None => match kept.and_then(|k| k.secrets.get(PRIVATE_KEY)) {
            Some(kept) => {
                secrets.insert(PRIVATE_KEY.into(), kept.clone());
            }
            None if organization_id.is_some() => v.add("config.privateKey", OWN_KEY),
            None => {}
        },
    }
    let host_key_fingerprint = match c.host_key_fingerprint.as_deref() {
        Some(fingerprint) => {
            v.check_result("config.hostKeyFingerprint", check_fingerprint(fingerprint));
            // Stored as OpenSSH prints it: base64 without padding.
            Some(fingerprint.trim_end_matches('=').to_owned())
        }
        // The trusted key stays while the host and port do.
        None => match kept.map(|k| &k.settings) {
            Some(TargetSettings::Ssh(stored))
                if Some(&stored.host) == host.as_ref() && Some(stored.port) == port =>
            {
                stored.host_key_fingerprint.clone()
            }
            _ => None,
        },
    };
    let settings = SshSettings {
        host: host?,
        port: port?,
        username: username?,
        path: path?,
        host_key_fingerprint,
    };
    Some((TargetSettings::Ssh(settings), secrets))
}

/// The settings of a local target: its directory, resolved under the
/// scope's root.
fn local_settings(
    v: &mut Validator,
    config: &Config,
    c: &TargetConfigRequest,
    local_root: Option<&LocalRoot>,
) -> Result<Option<(TargetSettings, Secrets)>> {
    if !config.allow_local_backups {
        v.add(
            "type",
            "local targets are disabled on this server (CAIRN_ALLOW_LOCAL_BACKUPS=false)",
        );
    }
    let path = match (c.path.as_deref(), local_root) {
        (None | Some(""), _) => {
            v.add("config.path", "is required");
            None
        }
        (Some(path), Some(root)) => match root.resolve(path) {
            Ok(resolved) => Some(resolved.to_string_lossy().into_owned()),
            Err(message) => {
                v.add("config.path", message);
                None
            }
        },
        (Some(_), None) => {
            return Err(anyhow::anyhow!("no local root was resolved for a local target").into())
        }
    };
    Ok(path.map(|path| {
        (
            TargetSettings::Local(LocalSettings { path }),
            Secrets::new(),
        )
    }))
}

/// Names each field of the request that another kind of target uses: a
/// mistake worth pointing at.
fn name_unused_fields(v: &mut Validator, target_type: TargetType, c: &TargetConfigRequest) {
    let allowed: &[&str] = match target_type {
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
                format!("is not used by {} targets", target_type.as_str()),
            );
        }
    }
}

/// Where the local targets of a scope may write: an organization's under
/// `<local backup root>/<org slug>/`, so that organizations never share a
/// directory; system-level ones anywhere (relative paths under the root).
pub(super) struct LocalRoot {
    dir: PathBuf,
    confined: bool,
}

impl LocalRoot {
    pub(super) async fn of(
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

/// Backblaze endpoints name their region: `s3.<region>.backblazeb2.com`.
fn b2_region_of(endpoint: &str) -> Option<String> {
    let url = url::Url::parse(endpoint).ok()?;
    let host = url.host_str()?;
    let region = host.strip_prefix("s3.")?.strip_suffix(".backblazeb2.com")?;
    Some(region.to_owned())
}
