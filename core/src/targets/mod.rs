//! Storage targets: where archives are written. Organization targets belong
//! to one organization; system-level targets (organization `None`) are
//! managed by administrators and by the `backup:` section of `cairn.yml`.
//!
//! Secrets (`secretAccessKey`, `privateKey`) are sealed under the master key
//! in `secrets_ciphertext` and never leave this module in a view.

pub mod config;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Set, TransactionTrait,
};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use cairn_entity::{backup, backup_job, backup_target};

use crate::config::SystemTargetConfig;
use crate::error::{is_unique_violation, Error, Result};
use crate::secrets::MasterKey;
use crate::Cairn;
use cairn_entity::enums::{BackupStatus, CopyStatus};
use config::{validate, LocalRoot, Stored, TargetSettings, PRIVATE_KEY, SECRET_ACCESS_KEY};

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

    pub fn is_s3_family(self) -> bool {
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

fn view(key: &MasterKey, model: backup_target::Model) -> Result<TargetView> {
    let (target_type, settings) = TargetSettings::of(&model)?;
    let secrets = key.open_fields(model.id, model.secrets_ciphertext.as_deref())?;
    Ok(TargetView {
        id: model.id,
        organization_id: model.organization_id,
        name: model.name,
        target_type,
        is_default: model.is_default,
        config: TargetConfigView {
            secret_access_key_set: matches!(settings, TargetSettings::S3(_))
                .then(|| secrets.contains_key(SECRET_ACCESS_KEY)),
            private_key_set: matches!(settings, TargetSettings::Ssh(_))
                .then(|| secrets.contains_key(PRIVATE_KEY)),
            settings,
        },
        created_at: model.created_at,
        updated_at: model.updated_at,
    })
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
    let (field, host) = match settings {
        TargetSettings::S3(s3) => (
            "config.endpoint",
            s3.endpoint
                .as_deref()
                .and_then(|endpoint| url::Url::parse(endpoint).ok())
                .and_then(|url| url.host_str().map(str::to_owned)),
        ),
        TargetSettings::Ssh(ssh) => ("config.host", Some(ssh.host.clone())),
        TargetSettings::Local(_) => return Ok(()),
    };
    if let Some(host) = host {
        if let Err(reason) = policy.check_host_on_save(&host).await {
            return Err(Error::invalid(field, reason));
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
    let (_, tested_settings) = TargetSettings::of(tested)?;
    let txn = cairn.db.begin().await?;
    let Some(model) = backup_target::Entity::find_by_id(tested.id)
        .one(&txn)
        .await?
    else {
        return Ok(());
    };
    let (_, settings) = TargetSettings::of(&model)?;
    let (TargetSettings::Ssh(tested), TargetSettings::Ssh(mut settings)) =
        (tested_settings, settings)
    else {
        return Ok(());
    };
    if settings.host_key_fingerprint.is_some()
        || settings.host != tested.host
        || settings.port != tested.port
    {
        return Ok(());
    }
    settings.host_key_fingerprint = Some(fingerprint.to_owned());
    let mut active: backup_target::ActiveModel = model.into();
    active.config = Set(TargetSettings::Ssh(settings).to_value());
    active.update(&txn).await?;
    txn.commit().await?;
    Ok(())
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
pub async fn list(
    cairn: &Cairn,
    organization_id: Option<Uuid>,
    paging: &crate::pages::Paging,
) -> Result<(Vec<TargetView>, Option<String>)> {
    let (models, next) = crate::pages::page(
        &cairn.read,
        backup_target::Entity::find().filter(scoped(organization_id)),
        backup_target::Column::Name,
        paging,
        |target| target.name.clone(),
        crate::pages::text,
    )
    .await?;
    let views = models
        .into_iter()
        .map(|model| view(&cairn.master_key, model))
        .collect::<Result<_>>()?;
    Ok((views, next))
}

pub async fn get(cairn: &Cairn, organization_id: Option<Uuid>, id: Uuid) -> Result<TargetView> {
    view(
        &cairn.master_key,
        find_model(&cairn.read, organization_id, id).await?,
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
        config: Set(settings.to_value()),
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
    let (target_type, settings) = TargetSettings::of(&existing)?;
    let stored = Some(Stored {
        target_type,
        secrets: cairn
            .master_key
            .open_fields(existing.id, existing.secrets_ciphertext.as_deref())?,
        settings,
    });
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
    model.config = Set(settings.to_value());
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
        .filter(backup::Column::Status.is_in([BackupStatus::Success, BackupStatus::Running]))
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
    let (_, stored) = TargetSettings::of(existing)?;
    let changed = stored
        .location()
        .into_iter()
        .zip(settings.location())
        .find(|((_, before), (_, after))| before != after);
    match changed {
        Some(((field, _), _)) => refuse(field),
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
    let copying_jobs: Vec<Uuid> = cairn_entity::backup_job_copy_target::Entity::find()
        .select_only()
        .column(cairn_entity::backup_job_copy_target::Column::JobId)
        .filter(cairn_entity::backup_job_copy_target::Column::TargetId.eq(id))
        .into_tuple()
        .all(&txn)
        .await?;
    let copying: Vec<String> = backup_job::Entity::find()
        .select_only()
        .column(backup_job::Column::Name)
        .filter(backup_job::Column::Id.is_in(copying_jobs))
        .order_by_asc(backup_job::Column::Name)
        .into_tuple()
        .all(&txn)
        .await?;
    if !copying.is_empty() {
        return Err(Error::Conflict {
            field: None,
            message: format!(
                "the target is a copy target of {} job(s): {}; remove it from their copyTargetIds first",
                copying.len(),
                copying.join(", ")
            ),
        });
    }
    let copies = cairn_entity::backup_copy::Entity::find()
        .filter(cairn_entity::backup_copy::Column::TargetId.eq(id))
        .filter(cairn_entity::backup_copy::Column::Status.is_in([
            CopyStatus::Pending,
            CopyStatus::Running,
            CopyStatus::Success,
        ]))
        .count(&txn)
        .await?;
    if copies > 0 {
        return Err(Error::Conflict {
            field: None,
            message: format!(
                "the target holds {copies} copy(ies) of backups; deleting it would lose them \
                 (they go when retention prunes their backups)"
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
