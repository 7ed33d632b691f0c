//! Apps and their volumes: what Cairn backs up. A volume is a Docker volume
//! of the app (`{app}-blue_{volume}` / `{app}-green_{volume}`); a `postgres`
//! volume is dumped with `pg_dump`, a `mysql` one with `mariadb-dump`, using
//! the connection settings stored with it (the password sealed under the
//! master key).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set,
    TransactionTrait,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use cairn_entity::enums::{Slot, VolumeKind};
use cairn_entity::{app, volume};

use crate::directories::{self, Naming};
use crate::error::{is_unique_violation, Error, Result, Validator};
use crate::secrets::MasterKey;
use crate::validate::{check_host, check_resource_name, check_username};
use crate::Cairn;

/// `POST`/`PUT` body of an app.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppRequest {
    /// Unique within the organization: `^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`.
    pub name: String,
    /// The app's volumes. On update, the list replaces the stored one
    /// (matched by name); backup history of removed volumes is kept.
    #[serde(default)]
    pub volumes: Vec<VolumeRequest>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeRequest {
    /// Unique within the app: `^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`.
    pub name: String,
    /// Only persistent volumes are backed up (default true).
    #[serde(default = "default_true")]
    pub persistent: bool,
    #[serde(default)]
    pub kind: VolumeKind,
    /// Required for `postgres` volumes, refused for other kinds.
    pub postgres: Option<ConnectionRequest>,
    /// Required for `mysql` volumes (MySQL or MariaDB; port 3306 by
    /// default), refused for other kinds. The database name is 1–64 of
    /// `[A-Za-z0-9_$-]`, not starting with `-`.
    pub mysql: Option<ConnectionRequest>,
    /// Globs relative to the volume root (`cache/**`, `*.tmp`) that are
    /// left out of its archives; each archive's manifest lists what was
    /// left out. Only for `generic` and `sqlite` volumes; at most 100.
    #[serde(default)]
    pub exclude_patterns: Vec<String>,
    /// For `sqlite` volumes (required, 1–20): the paths of SQLite database
    /// files inside the volume (`data/app.db`). Each is taken through
    /// SQLite's online backup API — a consistent snapshot while the app
    /// writes — and its live file, `-wal`, `-shm` and `-journal` are left
    /// out of the archive.
    #[serde(default)]
    pub databases: Vec<String>,
}

fn default_true() -> bool {
    true
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionRequest {
    pub host: String,
    /// Default 5432 (PostgreSQL) or 3306 (MySQL).
    pub port: Option<u16>,
    pub database: String,
    pub username: String,
    /// Required on create; on update, omit it to keep the stored one.
    /// Never returned.
    #[schema(value_type = Option<String>, write_only)]
    pub password: Option<SecretString>,
}

/// Stored (and returned) connection settings of a database volume
/// (PostgreSQL or MySQL), without the password.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionSettings {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub username: String,
}

impl ConnectionSettings {
    /// Splits a `scheme://user:password@host:port/database` URL (one of
    /// `schemes`) into settings and the password, percent-decoded; the
    /// database and user may come back empty. Messages name the URL `what`
    /// (`--dbname`, a key of the configuration), never its text.
    pub fn from_url(
        what: &str,
        text: &str,
        schemes: &[&str],
        default_port: u16,
    ) -> std::result::Result<(ConnectionSettings, Option<SecretString>), String> {
        let url = url::Url::parse(text).map_err(|_| format!("{what} is not a URL"))?;
        if !schemes.contains(&url.scheme()) {
            return Err(format!("{what} must be a {}:// URL", schemes[0]));
        }
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| format!("{what} holds invalid percent-encoding"))
        };
        let host = url
            .host_str()
            .ok_or_else(|| format!("{what} names no host"))?
            .to_owned();
        let password = url
            .password()
            .map(decode)
            .transpose()?
            .map(SecretString::from);
        Ok((
            ConnectionSettings {
                host,
                port: url.port().unwrap_or(default_port),
                database: decode(url.path().trim_start_matches('/'))?,
                username: decode(url.username())?,
            },
            password,
        ))
    }
}

#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionView {
    #[serde(flatten)]
    pub settings: ConnectionSettings,
    /// Whether a password is stored.
    pub password_set: bool,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeView {
    pub id: Uuid,
    pub name: String,
    pub persistent: bool,
    pub kind: VolumeKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres: Option<ConnectionView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mysql: Option<ConnectionView>,
    pub exclude_patterns: Vec<String>,
    /// The SQLite databases of a `sqlite` volume.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<String>,
    /// When a deploy stopped listing the volume: it is kept, with its
    /// history, but no longer backed up. Absent for attached volumes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detached_at: Option<DateTime<Utc>>,
    /// The directories under the volume root that hold the volume's data
    /// (one per slot, or one for both), as resolved when it was saved.
    pub directories: Vec<String>,
    /// True when an upgrade found the volume's directory already resolved
    /// by an earlier volume (of any organization): it is neither backed up
    /// nor restored into until a save gives it a directory of its own.
    pub conflict: bool,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppView {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub name: String,
    pub volumes: Vec<VolumeView>,
    /// The last deploy (`POST …/apps/{appName}/deployments`), if any.
    pub last_deployment: Option<LastDeploymentView>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastDeploymentView {
    /// Its volumes are looked for first.
    pub slot: Slot,
    pub deployed_at: DateTime<Utc>,
}

/// A validated volume, ready to store.
pub(crate) struct VolumeSpec {
    /// Its position in the request (`volumes[i]`).
    index: usize,
    name: String,
    persistent: bool,
    kind: VolumeKind,
    /// A database volume's connection settings and password.
    connection: Option<(ConnectionSettings, Option<String>)>,
    exclude_patterns: Vec<String>,
    databases: Vec<String>,
}

/// The most SQLite databases a volume lists.
const MAX_DATABASES: usize = 20;

/// A SQLite database's path inside a volume: relative, without `..`, not
/// a companion file SQLite writes beside a database.
fn check_database_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.len() > 512 {
        return Err("must be 1–512 characters".into());
    }
    if path.starts_with('/')
        || path.ends_with('/')
        || path
            .split('/')
            .any(|s| s == ".." || s == "." || s.is_empty())
    {
        return Err(
            "must be a file's path relative to the volume root, without '.', '..' or empty parts"
                .into(),
        );
    }
    if path.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    if ["-wal", "-shm", "-journal"]
        .iter()
        .any(|s| path.ends_with(s))
    {
        return Err("names the database, not its -wal, -shm or -journal file".into());
    }
    Ok(())
}

/// The most exclude patterns a volume takes.
const MAX_EXCLUDES: usize = 100;

fn check_exclude_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() || pattern.len() > 512 {
        return Err("must be 1–512 characters".into());
    }
    if pattern.starts_with('/') || pattern.split('/').any(|s| s == "..") {
        return Err("must be relative to the volume root, without '..'".into());
    }
    if pattern.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    globset::Glob::new(pattern)
        .map(|_| ())
        .map_err(|e| format!("is not a valid glob: {}", e.kind()))
}

fn validate(
    request: &AppRequest,
    stored_passwords: &HashMap<String, StoredConnection>,
    max_volumes: usize,
) -> Result<Vec<VolumeSpec>> {
    let mut v = Validator::new();
    v.check_result("name", check_resource_name(&request.name));
    let specs = validate_volumes(&mut v, &request.volumes, stored_passwords, max_volumes);
    v.finish()?;
    Ok(specs)
}

/// Checks a list of volumes (names unique, kinds and their settings); a
/// `postgres` volume without a password keeps the stored one, if any.
pub(crate) fn validate_volumes(
    v: &mut Validator,
    volumes: &[VolumeRequest],
    stored_passwords: &HashMap<String, StoredConnection>,
    max_volumes: usize,
) -> Vec<VolumeSpec> {
    // One request may not make a tenant's app claim the volume root wholesale.
    if volumes.len() > max_volumes {
        v.add(
            "volumes",
            format!("takes at most {max_volumes} volumes (max_volumes_per_app)"),
        );
    }
    let mut seen = HashSet::new();
    let mut specs = Vec::with_capacity(volumes.len());
    for (i, volume) in volumes.iter().enumerate() {
        let field = |name: &str| format!("volumes[{i}].{name}");
        v.check_result(field("name"), check_resource_name(&volume.name));
        if !seen.insert(volume.name.as_str()) {
            v.add(
                field("name"),
                format!("volume '{}' is listed twice", volume.name),
            );
        }
        match volume.kind {
            VolumeKind::Sqlite => {
                if volume.databases.is_empty() || volume.databases.len() > MAX_DATABASES {
                    v.add(
                        field("databases"),
                        format!(
                            "lists 1–{MAX_DATABASES} database paths for volumes of kind sqlite"
                        ),
                    );
                }
                let mut listed = HashSet::new();
                for (j, path) in volume.databases.iter().enumerate() {
                    v.check_result(
                        format!("volumes[{i}].databases[{j}]"),
                        check_database_path(path),
                    );
                    if !listed.insert(path.as_str()) {
                        v.add(format!("volumes[{i}].databases[{j}]"), "is listed twice");
                    }
                }
            }
            _ if !volume.databases.is_empty() => {
                v.add(field("databases"), "is only used by volumes of kind sqlite");
            }
            _ => {}
        }
        let connection = check_connection(v, i, volume, stored_passwords);
        if volume.exclude_patterns.len() > MAX_EXCLUDES {
            v.add(
                field("excludePatterns"),
                format!("takes at most {MAX_EXCLUDES} patterns"),
            );
        }
        if matches!(volume.kind, VolumeKind::Postgres | VolumeKind::Mysql)
            && !volume.exclude_patterns.is_empty()
        {
            v.add(
                field("excludePatterns"),
                "is only used by volumes of kind generic or sqlite",
            );
        }
        for (j, pattern) in volume.exclude_patterns.iter().enumerate() {
            v.check_result(
                format!("volumes[{i}].excludePatterns[{j}]"),
                check_exclude_pattern(pattern),
            );
        }
        if crate::format::tar::excludes_everything(&volume.exclude_patterns) {
            v.add(
                field("excludePatterns"),
                "excludes every entry of the volume: its backups would be empty archives",
            );
        }
        specs.push(VolumeSpec {
            index: i,
            name: volume.name.clone(),
            persistent: volume.persistent,
            kind: volume.kind,
            connection,
            exclude_patterns: volume.exclude_patterns.clone(),
            databases: volume.databases.clone(),
        });
    }
    specs
}

/// The field a database volume's connection settings are given in
/// (`postgres`, `mysql`), by its kind; `None` for file volumes.
fn connection_field(kind: VolumeKind) -> Option<&'static str> {
    match kind {
        VolumeKind::Postgres => Some("postgres"),
        VolumeKind::Mysql => Some("mysql"),
        VolumeKind::Generic | VolumeKind::Sqlite => None,
    }
}

/// Checks a volume's connection settings: given (in the field of its kind)
/// for a database volume, absent otherwise. A stored password is kept only
/// for the server and login it was given for.
fn check_connection(
    v: &mut Validator,
    i: usize,
    volume: &VolumeRequest,
    stored_passwords: &HashMap<String, StoredConnection>,
) -> Option<(ConnectionSettings, Option<String>)> {
    let field = |name: &str| format!("volumes[{i}].{name}");
    let wanted = connection_field(volume.kind);
    for (name, given) in [
        ("postgres", volume.postgres.is_some()),
        ("mysql", volume.mysql.is_some()),
    ] {
        if given && wanted != Some(name) {
            v.add(
                field(name),
                format!("is only used by volumes of kind {name}"),
            );
        }
    }
    let name = wanted?;
    let request = match volume.kind {
        VolumeKind::Mysql => volume.mysql.as_ref(),
        _ => volume.postgres.as_ref(),
    };
    let Some(request) = request else {
        v.add(
            field(name),
            format!("is required for volumes of kind {name}"),
        );
        return None;
    };
    v.check_result(field(&format!("{name}.host")), check_host(&request.host));
    v.check_result(
        field(&format!("{name}.username")),
        check_username(&request.username),
    );
    let database = field(&format!("{name}.database"));
    if volume.kind == VolumeKind::Mysql {
        v.check_result(
            database,
            crate::format::mysql::check_database_name(&request.database),
        );
    } else {
        let database_ok = !request.database.is_empty()
            && request.database.len() <= 63
            && !request.database.starts_with('-')
            && !request.database.contains('=')
            && !request.database.chars().any(char::is_control);
        v.check(
            database_ok,
            database,
            "must be 1–63 characters, not start with '-' and not contain '=' or control characters",
        );
    }
    v.check(
        request.port != Some(0),
        field(&format!("{name}.port")),
        "must be between 1 and 65535",
    );
    let settings = ConnectionSettings {
        host: request.host.clone(),
        port: request.port.unwrap_or(if volume.kind == VolumeKind::Mysql {
            crate::format::mysql::DEFAULT_PORT
        } else {
            5432
        }),
        database: request.database.clone(),
        username: request.username.clone(),
    };
    // Whoever points the volume elsewhere must know the password, or the
    // stored one would be sent to them.
    let password_field = field(&format!("{name}.password"));
    let password = match &request.password {
        Some(password) => Some(password.expose_secret().to_owned()),
        None => match stored_passwords.get(&volume.name) {
            Some(stored) if stored.settings == settings && stored.kind == volume.kind => {
                Some(stored.password.clone())
            }
            Some(_) => {
                v.add(
                    password_field,
                    "is required when the kind, host, port, database or username change",
                );
                None
            }
            None => {
                v.add(password_field, "is required");
                None
            }
        },
    };
    Some((settings, password))
}

/// Refuses (`422 volumes[i].postgres.host`, `….mysql.host`) database hosts that the
/// outbound address policy refuses, as targets' endpoints are refused: a
/// literal address must pass, a name must not resolve to a refused one.
/// Workers check again, on the address they connect to.
pub(crate) async fn check_database_hosts(cairn: &Cairn, specs: &[VolumeSpec]) -> Result<()> {
    let policy = crate::storage::address_policy(cairn);
    let mut v = Validator::new();
    for spec in specs {
        if let (Some((settings, _)), Some(field)) = (&spec.connection, connection_field(spec.kind))
        {
            if let Err(reason) = policy.check_host_on_save(&settings.host).await {
                v.add(format!("volumes[{}].{field}.host", spec.index), reason);
            }
        }
    }
    v.finish()
}

fn volume_view(model: volume::Model, directories: Vec<String>) -> Result<VolumeView> {
    let kind = model.kind;
    let connection = match model.connection_config {
        Some(config) => Some(ConnectionView {
            settings: serde_json::from_value(config).map_err(anyhow::Error::from)?,
            password_set: model.connection_password_ciphertext.is_some(),
        }),
        None => None,
    };
    let (postgres, mysql) = match kind {
        VolumeKind::Mysql => (None, connection),
        _ => (connection, None),
    };
    Ok(VolumeView {
        id: model.id,
        name: model.name,
        persistent: model.persistent,
        kind,
        postgres,
        mysql,
        exclude_patterns: exclude_patterns_of(&model.exclude_patterns),
        databases: exclude_patterns_of(&model.sqlite_databases),
        detached_at: model.detached_at,
        directories,
        conflict: model.conflict,
    })
}

/// The exclude patterns (or SQLite databases) stored with a volume: a
/// JSON list of strings.
pub fn exclude_patterns_of(stored: &Option<serde_json::Value>) -> Vec<String> {
    stored
        .as_ref()
        .and_then(|value| serde_json::from_value(value.clone()).ok())
        .unwrap_or_default()
}

fn patterns_value(patterns: &[String]) -> Option<serde_json::Value> {
    (!patterns.is_empty()).then(|| serde_json::json!(patterns))
}

fn app_view(
    model: app::Model,
    volumes: Vec<volume::Model>,
    directories: &mut HashMap<Uuid, Vec<String>>,
) -> Result<AppView> {
    Ok(AppView {
        id: model.id,
        organization_id: model.organization_id,
        name: model.name,
        volumes: volumes
            .into_iter()
            .map(|v| {
                let names = directories.remove(&v.id).unwrap_or_default();
                volume_view(v, names)
            })
            .collect::<Result<_>>()?,
        last_deployment: match (model.last_deploy_slot, model.last_deployed_at) {
            (Some(slot), Some(deployed_at)) => Some(LastDeploymentView { slot, deployed_at }),
            _ => None,
        },
        created_at: model.created_at,
        updated_at: model.updated_at,
    })
}

pub(crate) async fn find_model(
    db: &impl ConnectionTrait,
    organization_id: Uuid,
    id: Uuid,
) -> Result<app::Model> {
    app::Entity::find_by_id(id)
        .filter(app::Column::OrganizationId.eq(organization_id))
        .one(db)
        .await?
        .ok_or(Error::NotFound("app"))
}

pub(crate) async fn volumes_of(
    db: &impl ConnectionTrait,
    app_ids: &[Uuid],
) -> Result<Vec<volume::Model>> {
    Ok(volume::Entity::find()
        .filter(volume::Column::AppId.is_in(app_ids.iter().copied()))
        .order_by_asc(volume::Column::Name)
        .all(db)
        .await?)
}

/// The directory names of `volumes`, by volume id (blue before green).
async fn directories_of(
    db: &impl ConnectionTrait,
    volumes: &[volume::Model],
) -> Result<HashMap<Uuid, Vec<String>>> {
    use cairn_entity::volume_directory;
    let mut by_volume: HashMap<Uuid, Vec<String>> = HashMap::new();
    let rows = volume_directory::Entity::find()
        .filter(volume_directory::Column::VolumeId.is_in(volumes.iter().map(|v| v.id)))
        .order_by_asc(volume_directory::Column::Slot)
        .all(db)
        .await?;
    for row in rows {
        by_volume.entry(row.volume_id).or_default().push(row.name);
    }
    Ok(by_volume)
}

fn name_taken(name: &str) -> Error {
    Error::conflict("name", format!("an app named '{name}' already exists"))
}

pub async fn list(
    cairn: &Cairn,
    organization_id: Uuid,
    paging: &crate::pages::Paging,
) -> Result<(Vec<AppView>, Option<String>)> {
    let (apps, next) = crate::pages::page(
        &cairn.read,
        app::Entity::find().filter(app::Column::OrganizationId.eq(organization_id)),
        app::Column::Name,
        paging,
        |app| app.name.clone(),
        crate::pages::text,
    )
    .await?;
    let ids: Vec<Uuid> = apps.iter().map(|a| a.id).collect();
    let volumes = volumes_of(&cairn.read, &ids).await?;
    let mut directories = directories_of(&cairn.read, &volumes).await?;
    let mut by_app: HashMap<Uuid, Vec<volume::Model>> = HashMap::new();
    for volume in volumes {
        by_app.entry(volume.app_id).or_default().push(volume);
    }
    let views = apps
        .into_iter()
        .map(|a| {
            let volumes = by_app.remove(&a.id).unwrap_or_default();
            app_view(a, volumes, &mut directories)
        })
        .collect::<Result<_>>()?;
    Ok((views, next))
}

pub async fn get(cairn: &Cairn, organization_id: Uuid, id: Uuid) -> Result<AppView> {
    let model = find_model(&cairn.read, organization_id, id).await?;
    let volumes = volumes_of(&cairn.read, &[id]).await?;
    let mut directories = directories_of(&cairn.read, &volumes).await?;
    app_view(model, volumes, &mut directories)
}

pub async fn create(
    cairn: &Cairn,
    organization_id: Uuid,
    request: AppRequest,
    now: DateTime<Utc>,
) -> Result<AppView> {
    let specs = validate(&request, &HashMap::new(), cairn.config.max_volumes_per_app)?;
    check_database_hosts(cairn, &specs).await?;
    let txn = cairn.db.begin().await?;
    let id = Uuid::now_v7();
    let naming = Naming::of(
        &txn,
        &cairn.config.volume_name_template,
        organization_id,
        id,
        &request.name,
    )
    .await?;
    let inserted = new_app(id, organization_id, &request.name, now)
        .insert(&txn)
        .await;
    match inserted {
        Ok(_) => {}
        Err(error) if is_unique_violation(&error) => return Err(name_taken(&request.name)),
        Err(error) => return Err(error.into()),
    }
    for spec in specs {
        insert_volume(&txn, &cairn.master_key, &naming, spec, now).await?;
    }
    txn.commit().await?;
    get(cairn, organization_id, id).await
}

/// A new app row, never deployed.
pub(crate) fn new_app(
    id: Uuid,
    organization_id: Uuid,
    name: &str,
    now: DateTime<Utc>,
) -> app::ActiveModel {
    app::ActiveModel {
        id: Set(id),
        organization_id: Set(organization_id),
        name: Set(name.to_owned()),
        created_at: Set(now),
        updated_at: Set(now),
        last_deployed_at: Set(None),
        last_deploy_slot: Set(None),
        auto_job_created_at: Set(None),
        auto_job_removed_at: Set(None),
    }
}

pub(crate) async fn insert_volume(
    db: &impl ConnectionTrait,
    key: &MasterKey,
    naming: &Naming<'_>,
    spec: VolumeSpec,
    now: DateTime<Utc>,
) -> Result<()> {
    let id = Uuid::now_v7();
    let field = spec.field_name();
    let (config, password) = split_connection(key, id, spec.connection)?;
    volume::ActiveModel {
        id: Set(id),
        app_id: Set(naming.app_id),
        name: Set(spec.name.clone()),
        persistent: Set(spec.persistent),
        kind: Set(spec.kind),
        connection_config: Set(config),
        connection_password_ciphertext: Set(password),
        exclude_patterns: Set(patterns_value(&spec.exclude_patterns)),
        sqlite_databases: Set(patterns_value(&spec.databases)),
        created_at: Set(now),
        detached_at: Set(None),
        conflict: Set(false),
    }
    .insert(db)
    .await?;
    directories::claim(db, naming, id, &spec.name, spec.kind, field).await
}

impl VolumeSpec {
    fn field_name(&self) -> String {
        format!("volumes[{}].name", self.index)
    }
}

type SealedConnection = (Option<serde_json::Value>, Option<String>);

fn split_connection(
    key: &MasterKey,
    volume_id: Uuid,
    connection: Option<(ConnectionSettings, Option<String>)>,
) -> Result<SealedConnection> {
    Ok(match connection {
        None => (None, None),
        Some((settings, password)) => (
            Some(serde_json::to_value(settings).map_err(anyhow::Error::from)?),
            password.map(|p| key.seal(volume_id, p.as_bytes())),
        ),
    })
}

pub async fn update(
    cairn: &Cairn,
    organization_id: Uuid,
    id: Uuid,
    request: AppRequest,
    now: DateTime<Utc>,
) -> Result<AppView> {
    let txn = cairn.db.begin().await?;
    let existing = find_model(&txn, organization_id, id).await?;
    let stored = volumes_of(&txn, &[id]).await?;
    let stored_passwords = stored_passwords(&cairn.master_key, &stored)?;
    let specs = validate(
        &request,
        &stored_passwords,
        cairn.config.max_volumes_per_app,
    )?;
    check_database_hosts(cairn, &specs).await?;

    let naming = Naming::of(
        &txn,
        &cairn.config.volume_name_template,
        organization_id,
        id,
        &request.name,
    )
    .await?;
    let mut model: app::ActiveModel = existing.into();
    model.name = Set(request.name.clone());
    model.updated_at = Set(now);
    match model.update(&txn).await {
        Ok(_) => {}
        Err(error) if is_unique_violation(&error) => return Err(name_taken(&request.name)),
        Err(error) => return Err(error.into()),
    }
    apply_volumes(
        &txn,
        &cairn.master_key,
        &naming,
        stored,
        specs,
        Unlisted::Delete,
        now,
    )
    .await?;
    txn.commit().await?;
    get(cairn, organization_id, id).await
}

/// A database volume's stored kind, settings and password.
pub(crate) struct StoredConnection {
    kind: VolumeKind,
    settings: ConnectionSettings,
    password: String,
}

/// The stored connection settings and passwords of `volumes`, by volume
/// name.
pub(crate) fn stored_passwords(
    key: &MasterKey,
    volumes: &[volume::Model],
) -> Result<HashMap<String, StoredConnection>> {
    let mut passwords = HashMap::new();
    for volume in volumes {
        if let (Some(sealed), Some(config)) = (
            &volume.connection_password_ciphertext,
            &volume.connection_config,
        ) {
            let password = key.open(volume.id, sealed)?;
            let password = String::from_utf8(password).map_err(anyhow::Error::from)?;
            let settings = serde_json::from_value(config.clone()).map_err(anyhow::Error::from)?;
            passwords.insert(
                volume.name.clone(),
                StoredConnection {
                    kind: volume.kind,
                    settings,
                    password,
                },
            );
        }
    }
    Ok(passwords)
}

/// What becomes of a stored volume a request no longer lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unlisted {
    /// `PUT …/apps/{appId}`: the list replaces the stored one.
    Delete,
    /// A deploy: kept with its history, not backed up (`detachedAt`).
    Detach,
}

/// Writes `specs` over the app's `stored` volumes, matched by name: listed
/// ones are updated (and attached again), new ones inserted, the others
/// deleted or detached.
pub(crate) async fn apply_volumes(
    db: &impl ConnectionTrait,
    key: &MasterKey,
    naming: &Naming<'_>,
    stored: Vec<volume::Model>,
    specs: Vec<VolumeSpec>,
    unlisted: Unlisted,
    now: DateTime<Utc>,
) -> Result<()> {
    let mut stored_by_name: HashMap<String, volume::Model> =
        stored.into_iter().map(|v| (v.name.clone(), v)).collect();
    for spec in specs {
        match stored_by_name.remove(&spec.name) {
            Some(current) => {
                let (id, field) = (current.id, spec.field_name());
                let (config, password) = split_connection(key, current.id, spec.connection)?;
                let mut volume: volume::ActiveModel = current.into();
                volume.persistent = Set(spec.persistent);
                volume.kind = Set(spec.kind);
                volume.connection_config = Set(config);
                volume.connection_password_ciphertext = Set(password);
                volume.exclude_patterns = Set(patterns_value(&spec.exclude_patterns));
                volume.sqlite_databases = Set(patterns_value(&spec.databases));
                volume.detached_at = Set(None);
                volume.update(db).await?;
                directories::claim(db, naming, id, &spec.name, spec.kind, field).await?;
            }
            None => insert_volume(db, key, naming, spec, now).await?,
        }
    }
    let unlisted_ids: Vec<Uuid> = stored_by_name
        .values()
        .filter(|v| unlisted == Unlisted::Delete || v.detached_at.is_none())
        .map(|v| v.id)
        .collect();
    if unlisted_ids.is_empty() {
        return Ok(());
    }
    match unlisted {
        Unlisted::Delete => {
            volume::Entity::delete_many()
                .filter(volume::Column::Id.is_in(unlisted_ids))
                .exec(db)
                .await?;
        }
        Unlisted::Detach => {
            volume::Entity::update_many()
                .col_expr(
                    volume::Column::DetachedAt,
                    sea_orm::sea_query::Expr::value(now),
                )
                .filter(volume::Column::Id.is_in(unlisted_ids))
                .exec(db)
                .await?;
        }
    }
    Ok(())
}

/// Deletes an app and its volumes; jobs stop covering it, and its
/// automatic job goes with it unless a user made it cover other apps too.
/// Its backup history is kept (the records keep the app's name).
pub async fn delete(cairn: &Cairn, organization_id: Uuid, id: Uuid) -> Result<()> {
    use cairn_entity::{backup_job, backup_job_app};
    let txn = cairn.db.begin().await?;
    let result = app::Entity::delete_many()
        .filter(app::Column::Id.eq(id))
        .filter(app::Column::OrganizationId.eq(organization_id))
        .exec(&txn)
        .await?;
    if result.rows_affected == 0 {
        return Err(Error::NotFound("app"));
    }
    let automatic = backup_job::Entity::find()
        .filter(backup_job::Column::AutoAppId.eq(id))
        .all(&txn)
        .await?;
    for job in automatic {
        let still_covers = backup_job_app::Entity::find()
            .filter(backup_job_app::Column::JobId.eq(job.id))
            .one(&txn)
            .await?
            .is_some();
        if still_covers {
            backup_job::Entity::update_many()
                .col_expr(
                    backup_job::Column::AutoAppId,
                    sea_orm::sea_query::Expr::value(Option::<Uuid>::None),
                )
                .filter(backup_job::Column::Id.eq(job.id))
                .exec(&txn)
                .await?;
        } else {
            backup_job::Entity::delete_by_id(job.id).exec(&txn).await?;
        }
    }
    txn.commit().await?;
    Ok(())
}
