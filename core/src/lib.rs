//! Domain logic shared by every Cairn role: configuration, the database and
//! its migrations, secrets at rest, tokens and the tenancy rule, the
//! resources of the API (organizations, targets, apps, jobs, runs, history),
//! the storage layer, and the pipelines that write and read archives (tar,
//! pg_dump, age, extraction).
//!
//! Everything here is plain async functions over a [`Cairn`] context (the
//! database pool, the configuration and the master key). Nothing here runs a
//! loop of its own: the roles (`api`, `worker` and `scheduler`) own
//! their loops. The pipelines and storage adapters do their blocking I/O on
//! `spawn_blocking` threads that hand bounded queues of chunks to the async
//! side. Functions that depend on the time take `now`.

pub mod apps;
pub mod auth;
pub mod catalog;
pub mod config;
pub mod db;
pub mod deployments;
pub mod directories;
pub mod disk;
pub mod error;
pub mod failure;
pub mod format;
pub mod history;
pub mod jobs;
pub mod metrics;
pub mod netpolicy;
pub mod notifications;
pub mod orgs;
pub mod pages;
pub mod report;
pub mod restores;
pub mod runs;
pub mod secrets;
pub mod sessions;
pub mod storage;
pub mod system;
pub mod targets;
pub mod validate;
pub mod verifications;
pub mod wake;

use std::sync::Arc;

use anyhow::Context;
use chrono::Utc;
use sea_orm::DatabaseConnection;

pub use config::Config;
pub use config::SystemTargetConfig;
pub use error::{Error, FieldError, Result};
pub use secrets::{KeySource, MasterKey};

/// What every operation needs: the database, the configuration and the key
/// that seals secrets. Cheap to clone (the pool is shared).
#[derive(Clone, Debug)]
pub struct Cairn {
    pub db: DatabaseConnection,
    /// Reads that need no transaction (the API's lists and pages): on
    /// SQLite, read-only connections beside the single writer `db`; on
    /// PostgreSQL, the same pool as `db`.
    pub read: DatabaseConnection,
    pub config: Arc<Config>,
    pub master_key: MasterKey,
    /// Streamed downloads that may run at once (each holds a blocking
    /// thread while its client reads).
    pub download_slots: Arc<tokio::sync::Semaphore>,
    /// The Redis of the schedulers' slot locks, when `redis_url` is set.
    pub redis: Option<Arc<runs::locks::RedisLocks>>,
    /// Wakes this process's idle worker loops when work is recorded.
    pub wake: wake::Wake,
    /// The SQL statements this process has run on `db` (the tests hold a
    /// request's count to a bound).
    pub statements: Arc<std::sync::atomic::AtomicU64>,
}

/// Streamed downloads that may run at once per process.
pub const DOWNLOAD_SLOTS: usize = 32;

/// How a process starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartMode {
    /// The embedded default (`cairn serve`): generate `<data_dir>/master.key`
    /// when no key is configured or stored (and no secret is stored yet), and
    /// without a `backup:` section make "System default" a local target
    /// under `<data_dir>/backups`.
    Embedded,
    /// One replica of many (`cairn api`): refuse to start without a key, so
    /// that every replica shares one; no implicit system target.
    Replica,
}

impl Cairn {
    /// Connects to the database, applies migrations (unless disabled), loads
    /// the master key and creates or updates the system-level target of the
    /// `backup:` section.
    pub async fn open(mut config: Config, mode: StartMode) -> anyhow::Result<Cairn> {
        // One host may reach its own services; a replica serves tenants.
        let allow_private = *config
            .allow_private_endpoints
            .get_or_insert(mode == StartMode::Embedded);
        tracing::info!(
            allow_private_endpoints = allow_private,
            allow_local_backups = config.allow_local_backups,
            volume_name_template = %config.volume_name_template,
            "outbound address policy: loopback and private addresses are {} (allow_private_endpoints)",
            if allow_private { "allowed" } else { "refused" }
        );
        let mut db = db::connect(&config).await?;
        if config.run_migrations {
            db::migrate(&db).await?;
        }
        // Opened after the migrations: a read-only connection cannot
        // create the file, nor switch it to WAL.
        let mut read = db::connect_reader(&config, &db).await?;
        let statements = Arc::new(std::sync::atomic::AtomicU64::new(0));
        for pool in [&mut db, &mut read] {
            let counter = statements.clone();
            pool.set_metric_callback(move |_| {
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            });
        }
        let sealed = one_sealed_secret(&db).await?;
        // A new key next to existing secrets would only hide the real
        // problem (a lost or wrong key) behind a second one.
        let may_generate = mode == StartMode::Embedded && sealed.is_none();
        let (master_key, source) =
            MasterKey::load(config.master_key.as_ref(), &config.data_dir, may_generate)?;
        if source == KeySource::Generated {
            tracing::warn!(
                path = %config.data_dir.join("master.key").display(),
                "generated a new master key; back it up, since secrets stored by Cairn cannot be read without it, \
                 and set CAIRN_MASTER_KEY when running more than one process"
            );
        }
        // Nothing connects until first use: a Redis that is down does not
        // stop a start (schedulers fall back to the database fence).
        let redis = match &config.redis_url {
            Some(url) => {
                use secrecy::ExposeSecret;
                Some(Arc::new(
                    runs::locks::RedisLocks::new(url.expose_secret())
                        .map_err(|e| anyhow::anyhow!("redis_url: {e}"))?,
                ))
            }
            None => None,
        };
        let cairn = Cairn {
            db,
            read,
            config: Arc::new(config),
            master_key,
            download_slots: Arc::new(tokio::sync::Semaphore::new(DOWNLOAD_SLOTS)),
            redis,
            wake: wake::Wake::default(),
            statements,
        };
        if let Some((row_id, ciphertext)) = sealed {
            if cairn.master_key.open(row_id, &ciphertext).is_err() {
                anyhow::bail!(
                    "the master key does not open the secrets stored in this database; start with the key \
                     they were sealed with (CAIRN_MASTER_KEY or <data_dir>/master.key)"
                );
            }
        }
        let section = match (&cairn.config.backup, mode) {
            (Some(section), _) => Some(section.clone()),
            (None, StartMode::Embedded) if cairn.config.allow_local_backups => Some(
                config::SystemTargetConfig::local(&cairn.config.local_backup_root()),
            ),
            (None, _) => None,
        };
        if let Some(section) = section {
            let created = targets::ensure_system_default(&cairn, &section, Utc::now()).await?;
            tracing::info!(
                created,
                target_type = %section.target_type,
                "system-level target \"{}\" is configured",
                targets::SYSTEM_DEFAULT_NAME
            );
        }
        Ok(cairn)
    }

    /// Creates a system administrator token when none is configured and none
    /// is stored, and returns it (to be shown once).
    pub async fn bootstrap_admin_token(&self) -> anyhow::Result<Option<String>> {
        if self.config.admin_token.is_some() || auth::system_admin_token_exists(&self.db).await? {
            return Ok(None);
        }
        let created = auth::create_token(
            &self.db,
            None,
            auth::CreateTokenRequest {
                name: "bootstrap administrator".into(),
                role: auth::Role::Admin,
            },
            Utc::now(),
        )
        .await?;
        Ok(Some(created.token))
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> anyhow::Result<()> {
        self.db.ping().await.context("the database does not answer")
    }
}

/// One sealed value stored in the database, if any: `(row id, ciphertext)`.
async fn one_sealed_secret(
    db: &DatabaseConnection,
) -> anyhow::Result<Option<(uuid::Uuid, String)>> {
    use cairn_entity::{backup_target, notification_channel, volume};
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let target = backup_target::Entity::find()
        .filter(backup_target::Column::SecretsCiphertext.is_not_null())
        .one(db)
        .await?;
    if let Some(target) = target {
        return Ok(target.secrets_ciphertext.map(|c| (target.id, c)));
    }
    let volume = volume::Entity::find()
        .filter(volume::Column::ConnectionPasswordCiphertext.is_not_null())
        .one(db)
        .await?;
    if let Some(volume) = volume {
        return Ok(volume
            .connection_password_ciphertext
            .map(|c| (volume.id, c)));
    }
    let channel = notification_channel::Entity::find()
        .filter(notification_channel::Column::SecretsCiphertext.is_not_null())
        .one(db)
        .await?;
    if let Some(sealed) = channel.and_then(|c| c.secrets_ciphertext.map(|sealed| (c.id, sealed))) {
        return Ok(Some(sealed));
    }
    Ok(system::key::sealed(db)
        .await?
        .map(|sealed| (system::key::SEAL_ID, sealed)))
}
