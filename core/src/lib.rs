//! Domain logic shared by every Cairn role: configuration, the database and
//! its migrations, secrets at rest, tokens and the tenancy rule, and the
//! resources of the API (organizations, targets, apps, jobs, history).
//!
//! Everything here is plain async functions over a [`Cairn`] context (the
//! database pool, the configuration and the master key). Nothing spawns
//! tasks or threads; the roles (`api`, and later `scheduler` and `worker`)
//! own their loops. Functions that depend on the time take `now`.

pub mod apps;
pub mod auth;
pub mod config;
pub mod error;
pub mod history;
pub mod jobs;
pub mod orgs;
pub mod secrets;
pub mod targets;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cairn_migration::{Migrator, MigratorTrait};
use chrono::Utc;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend};

pub use config::Config;
pub use error::{Error, FieldError, Result};
pub use secrets::{KeySource, MasterKey};

/// What every operation needs: the database, the configuration and the key
/// that seals secrets. Cheap to clone (the pool is shared).
#[derive(Clone, Debug)]
pub struct Cairn {
    pub db: DatabaseConnection,
    pub config: Arc<Config>,
    pub master_key: MasterKey,
}

/// How [`Cairn::open`] treats a missing master key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MasterKeyPolicy {
    /// Generate `<data_dir>/master.key` when none is configured or stored
    /// (the embedded default, `cairn serve`).
    GenerateIfMissing,
    /// Refuse to start without a key: replicas must share one.
    Require,
}

impl Cairn {
    /// Connects to the database, applies migrations (unless disabled), loads
    /// the master key and creates or updates the system-level target of the
    /// `backup:` section.
    pub async fn open(config: Config, key_policy: MasterKeyPolicy) -> anyhow::Result<Cairn> {
        let db = connect(&config).await?;
        if config.run_migrations {
            migrate(&db).await?;
        }
        let (master_key, source) = MasterKey::load(
            config.master_key.as_ref(),
            &config.data_dir,
            key_policy == MasterKeyPolicy::GenerateIfMissing,
        )?;
        if source == KeySource::Generated {
            tracing::warn!(
                path = %config.data_dir.join("master.key").display(),
                "generated a new master key; back it up, since secrets stored by Cairn cannot be read without it, \
                 and set CAIRN_MASTER_KEY when running more than one process"
            );
        }
        let cairn = Cairn {
            db,
            config: Arc::new(config),
            master_key,
        };
        cairn.check_master_key().await?;
        if let Some(section) = &cairn.config.backup {
            let created = targets::ensure_system_default(&cairn, section, Utc::now()).await?;
            tracing::info!(
                created,
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

    /// Refuses a master key that does not open the secrets already stored:
    /// better a loud start-up failure than every later read failing.
    async fn check_master_key(&self) -> anyhow::Result<()> {
        use cairn_entity::backup_target;
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
        let sealed = backup_target::Entity::find()
            .filter(backup_target::Column::SecretsCiphertext.is_not_null())
            .one(&self.db)
            .await?;
        if let Some(target) = sealed {
            let ciphertext = target.secrets_ciphertext.as_deref().unwrap_or_default();
            if self.master_key.open(target.id, ciphertext).is_err() {
                anyhow::bail!(
                    "the master key does not open the secrets stored in this database; \
                     start with the key they were sealed with (CAIRN_MASTER_KEY or <data_dir>/master.key)"
                );
            }
        }
        Ok(())
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> anyhow::Result<()> {
        self.db.ping().await.context("the database does not answer")
    }
}

/// Opens the database pool. A SQLite file's directory is created, and the
/// file is put in WAL mode so that readers do not block the writer.
pub async fn connect(config: &Config) -> anyhow::Result<DatabaseConnection> {
    let url = config.database_url();
    if let Some(path) = url.strip_prefix("sqlite://") {
        let path = path.split('?').next().unwrap_or(path);
        if let Some(parent) = std::path::Path::new(path).parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
        }
    }
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(10)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(10))
        // Statement logging would print bound values; keep it off.
        .sqlx_logging(false);
    // The URL may carry a password: never put it in the error.
    let db = Database::connect(options)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to the database: {}", redact_db_error(&e)))?;
    if db.get_database_backend() == DbBackend::Sqlite {
        db.execute_unprepared("PRAGMA journal_mode=WAL; PRAGMA busy_timeout=10000;")
            .await?;
    }
    Ok(db)
}

fn redact_db_error(error: &sea_orm::DbErr) -> String {
    match error {
        sea_orm::DbErr::Conn(inner) => format!("connection failed ({inner})"),
        other => other.to_string(),
    }
}

/// Applies every pending migration.
pub async fn migrate(db: &DatabaseConnection) -> anyhow::Result<()> {
    Migrator::up(db, None)
        .await
        .context("applying database migrations")
}
