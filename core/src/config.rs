//! Configuration: built-in defaults < `cairn.yml` < `CAIRN_*` environment
//! variables, loaded once into [`Config`] and passed explicitly.
//!
//! Keys are snake_case in the file (`database_url`) and upper-case with the
//! `CAIRN_` prefix in the environment (`CAIRN_DATABASE_URL`); keys of the
//! `backup:` section take a double underscore (`CAIRN_BACKUP__BUCKET`).
//! Unknown keys — in the file or among `CAIRN_*` variables — are an error
//! that names the key, so a typo never silently falls back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Yaml};
use figment::Figment;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Environment variables that are read by the `cairn` binary itself rather
/// than by the configuration loader.
const NON_CONFIG_VARIABLES: &[&str] = &["CONFIG", "LOG"];

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal).
    #[default]
    Pretty,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Every setting of a Cairn process.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the API listens on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Where the embedded default keeps its database, master key and backups.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; defaults to `<data_dir>/cairn.db`.
    #[serde(default)]
    pub database_url: Option<SecretString>,
    /// `redis://…`: the scheduler's slot locks. Without it, the scheduler
    /// of `cairn serve` uses an in-process lock; either way the database
    /// keeps each slot to one run.
    #[serde(default)]
    pub redis_url: Option<SecretString>,
    /// Apply pending migrations when a process starts.
    #[serde(default = "default_true")]
    pub run_migrations: bool,
    /// 32 bytes, base64: the key that seals secrets at rest. Without it,
    /// `cairn serve` uses (or creates) `<data_dir>/master.key`.
    #[serde(default)]
    pub master_key: Option<SecretString>,
    /// Accepted as a system administrator token when set.
    #[serde(default)]
    pub admin_token: Option<SecretString>,
    /// When set, the API's `/metrics` answers only requests with
    /// `Authorization: Bearer <metrics_token>` (multi-tenant deployments:
    /// job ids are in its labels).
    #[serde(default)]
    pub metrics_token: Option<SecretString>,
    /// Whether targets of type `local` may be created.
    #[serde(default = "default_true")]
    pub allow_local_backups: bool,
    /// The directory under which organizations' local targets must lie;
    /// defaults to `<data_dir>/backups`.
    #[serde(default)]
    pub local_backup_root: Option<PathBuf>,
    /// Whether user-supplied endpoints (S3, SSH, PostgreSQL hosts, webhooks)
    /// may be loopback or private addresses. Unset, it follows the role:
    /// on for `cairn serve` (one host), off for the scaled-out roles
    /// (`cairn api`, `cairn worker`, `cairn scheduler`), which serve many
    /// tenants. Link-local and metadata addresses are refused either way.
    #[serde(default)]
    pub allow_private_endpoints: Option<bool>,
    #[serde(default)]
    pub log_format: LogFormat,
    /// Largest accepted request body, in bytes.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// The system-level target "System default", created or updated at
    /// start-up.
    #[serde(default)]
    pub backup: Option<SystemTargetConfig>,
    /// Where Docker keeps volumes: `<volume_root>/<name>/_data`.
    #[serde(default = "default_volume_root")]
    pub volume_root: PathBuf,
    /// How a volume's directory under `volume_root` is named:
    /// `{org}` (slug), `{app}`, `{slot}` (blue/green) and `{volume}`.
    /// The default is Docker compose's naming; platforms hosting several
    /// organizations use `{org}-{app}-{slot}_{volume}` so that apps of the
    /// same name never share a directory (a second claimant is refused
    /// either way). Resolved when an app or a deploy is saved.
    #[serde(default)]
    pub volume_name_template: crate::directories::VolumeNameTemplate,
    /// A backup whose file count or content bytes fall below this fraction
    /// of the previous backup of its series is flagged `suspicious`: it
    /// succeeds and is notified, but does not count toward retention until
    /// an admin accepts it. `0` turns the check off.
    #[serde(default = "default_suspicious_shrink_fraction")]
    pub suspicious_shrink_fraction: f64,
    /// Days a deleted organization keeps its records and key pair (and can
    /// be undeleted) before it is purged.
    #[serde(default = "default_org_deletion_grace_days")]
    pub org_deletion_grace_days: u32,
    /// Days a restore's safety backup is kept; then it is pruned like other
    /// backups (never when it is its volume's only successful backup).
    #[serde(default = "default_safety_backup_retention_days")]
    pub safety_backup_retention_days: u32,
    /// The most volumes one app (one deploy, one `PUT`) may list.
    #[serde(default = "default_max_volumes_per_app")]
    pub max_volumes_per_app: usize,
    /// The `pg_dump` program that dumps `postgres` volumes (a name looked
    /// up in `PATH`, or a path); it must be at least as new as the servers.
    #[serde(default = "default_pg_dump")]
    pub pg_dump: PathBuf,
    /// The `pg_restore` program that restores dumps and lists them for
    /// previews; it must be at least as new as the `pg_dump` that wrote them.
    #[serde(default = "default_pg_restore")]
    pub pg_restore: PathBuf,
    /// The dump client of `mysql` volumes (`mariadb-dump` or `mysqldump`,
    /// a name looked up in `PATH` or a path); it must be at least as new as
    /// the servers of its family.
    #[serde(default = "default_mysqldump")]
    pub mysqldump: PathBuf,
    /// The client that loads MySQL dumps back (`mariadb` or `mysql`).
    #[serde(default = "default_mysql")]
    pub mysql: PathBuf,
    /// The worker role: `worker:` in the file, `CAIRN_WORKER__…` in the
    /// environment.
    #[serde(default)]
    pub worker: WorkerConfig,
    /// Notification delivery: `notifications:` in the file,
    /// `CAIRN_NOTIFICATIONS__…` in the environment.
    #[serde(default)]
    pub notifications: NotificationsConfig,
    /// Storage transfers: `storage:` in the file, `CAIRN_STORAGE__…` in the
    /// environment.
    #[serde(default)]
    pub storage: StorageConfig,
    /// Verification of backups: `verification:` in the file,
    /// `CAIRN_VERIFICATION__…` in the environment.
    #[serde(default)]
    pub verification: VerificationConfig,
    /// Copies on further targets: `copies:` in the file, `CAIRN_COPIES__…`
    /// in the environment.
    #[serde(default)]
    pub copies: CopiesConfig,
    /// Free-space checks of local targets and the data directory: `disk:`
    /// in the file, `CAIRN_DISK__…` in the environment.
    #[serde(default)]
    pub disk: DiskConfig,
    /// Cairn's own database, backed up: `system_backup:` in the file,
    /// `CAIRN_SYSTEM_BACKUP__…` in the environment.
    #[serde(default)]
    pub system_backup: SystemBackupConfig,
    /// Sweeps of targets for orphans and missing archives: `orphans:` in
    /// the file, `CAIRN_ORPHANS__…` in the environment.
    #[serde(default)]
    pub orphans: OrphansConfig,
}

/// The `orphans:` section.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrphansConfig {
    /// Whether workers sweep targets on `schedule` (a sweep on request,
    /// `POST …/orphans/sweep`, works either way).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// When every target is swept: a cron expression, in UTC.
    #[serde(default = "default_orphans_schedule")]
    pub schedule: String,
    /// Unset: orphans are only listed. Set: an object that has been an
    /// orphan for this many days (counted from the first sweep that saw
    /// it) is deleted.
    #[serde(default)]
    pub delete_after_days: Option<u32>,
}

fn default_orphans_schedule() -> String {
    "0 4 * * *".into()
}

impl Default for OrphansConfig {
    fn default() -> OrphansConfig {
        OrphansConfig {
            enabled: true,
            schedule: default_orphans_schedule(),
            delete_after_days: None,
        }
    }
}

/// The `system_backup:` section: self-backups of Cairn's database.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemBackupConfig {
    /// Whether the scheduler fires self-backups (a manual run works
    /// either way).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// A cron expression, in UTC.
    #[serde(default = "default_system_backup_schedule")]
    pub schedule: String,
    /// The id or name of a system-level target; unset, "System default".
    #[serde(default)]
    pub target: Option<String>,
    /// How many self-backups are kept (GFS, as jobs' `retention`).
    #[serde(default)]
    pub retention: SystemRetentionConfig,
}

fn default_system_backup_schedule() -> String {
    "30 1 * * *".into()
}

impl Default for SystemBackupConfig {
    fn default() -> SystemBackupConfig {
        SystemBackupConfig {
            enabled: true,
            schedule: default_system_backup_schedule(),
            target: None,
            retention: SystemRetentionConfig::default(),
        }
    }
}

/// `system_backup.retention`.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemRetentionConfig {
    #[serde(default)]
    pub keep_last: u32,
    #[serde(default = "default_keep_daily")]
    pub keep_daily: u32,
    #[serde(default = "default_keep_weekly")]
    pub keep_weekly: u32,
    #[serde(default = "default_keep_monthly")]
    pub keep_monthly: u32,
}

fn default_keep_daily() -> u32 {
    7
}

fn default_keep_weekly() -> u32 {
    4
}

fn default_keep_monthly() -> u32 {
    6
}

impl Default for SystemRetentionConfig {
    fn default() -> SystemRetentionConfig {
        SystemRetentionConfig {
            keep_last: 0,
            keep_daily: default_keep_daily(),
            keep_weekly: default_keep_weekly(),
            keep_monthly: default_keep_monthly(),
        }
    }
}

impl SystemRetentionConfig {
    pub fn policy(&self) -> crate::runs::retention::Policy {
        crate::runs::retention::Policy {
            last: self.keep_last,
            daily: self.keep_daily,
            weekly: self.keep_weekly,
            monthly: self.keep_monthly,
            ..Default::default()
        }
    }
}

/// The `disk:` section.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// Below this many free MiB on a local target (or the data directory),
    /// a backup's log warns.
    #[serde(default = "default_warn_free_mb")]
    pub warn_free_mb: u64,
}

fn default_warn_free_mb() -> u64 {
    500
}

impl Default for DiskConfig {
    fn default() -> DiskConfig {
        DiskConfig {
            warn_free_mb: default_warn_free_mb(),
        }
    }
}

impl DiskConfig {
    /// The warning threshold in bytes.
    pub fn warn_free_bytes(&self) -> u64 {
        self.warn_free_mb.saturating_mul(1024 * 1024)
    }
}

/// The `copies:` section.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopiesConfig {
    /// Attempts a copy gets (the one written beside the backup counts)
    /// before it ends `failed`.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// The wait after the first failed attempt, doubled after each further
    /// one.
    #[serde(default = "default_retry_base_seconds")]
    pub retry_base_seconds: u64,
    /// The longest wait between attempts.
    #[serde(default = "default_retry_max_seconds")]
    pub retry_max_seconds: u64,
}

impl Default for CopiesConfig {
    fn default() -> CopiesConfig {
        CopiesConfig {
            max_attempts: default_max_attempts(),
            retry_base_seconds: default_retry_base_seconds(),
            retry_max_seconds: default_retry_max_seconds(),
        }
    }
}

impl CopiesConfig {
    /// The wait before attempt `attempts + 1`, after `attempts` failed
    /// ones.
    pub fn retry_delay(&self, attempts: u32) -> std::time::Duration {
        backoff(self.retry_base_seconds, self.retry_max_seconds, attempts)
    }
}

/// The wait before attempt `attempts + 1`, after `attempts` failed ones:
/// `base_seconds` doubled per further failure, at most `max_seconds`.
pub fn backoff(base_seconds: u64, max_seconds: u64, attempts: u32) -> std::time::Duration {
    let base = base_seconds.max(1);
    let doubled = base.saturating_mul(1u64 << attempts.saturating_sub(1).min(32));
    std::time::Duration::from_secs(doubled.min(max_seconds.max(base)))
}

/// The `verification:` section.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerificationConfig {
    /// Where `restore`-mode verifications of file backups extract, each
    /// into a directory of its own that is removed afterwards. Unset: file
    /// backups verify in `read` mode only.
    #[serde(default)]
    pub scratch_dir: Option<PathBuf>,
    /// A PostgreSQL server the operator provides for `restore`-mode
    /// verifications of database backups, as
    /// `postgres://user:password@host:port/database` (the database is the
    /// one Cairn connects to in order to create and drop scratch
    /// databases, usually `postgres`; the user needs `CREATEDB`). Each
    /// verification restores into a database `cairn_verify_{id}` of its
    /// own, dropped afterwards (and by the reaper after a worker died).
    /// Unset: database backups verify in `read` mode only.
    #[serde(default)]
    pub postgres_url: Option<SecretString>,
    /// A MySQL or MariaDB server for `restore`-mode verifications of
    /// `mysql` backups, as `mysql://user:password@host:port` (the user
    /// needs to create and drop databases). Each verification loads the
    /// dump into a database `cairn_verify_{id}` of its own, counts its
    /// rows and drops it. Unset: MySQL backups verify in `read` mode only.
    #[serde(default)]
    pub mysql_url: Option<SecretString>,
}

impl VerificationConfig {
    /// The scratch database server's connection settings and password.
    pub fn scratch_server(
        &self,
    ) -> Option<Result<(crate::apps::ConnectionSettings, Option<SecretString>), String>> {
        self.postgres_url.as_ref().map(|url| {
            crate::format::pg_restore::parse_database_url(
                "verification.postgres_url",
                url.expose_secret(),
            )
        })
    }

    /// The MySQL scratch server's connection settings and password.
    pub fn mysql_scratch_server(
        &self,
    ) -> Option<Result<(crate::apps::ConnectionSettings, Option<SecretString>), String>> {
        self.mysql_url.as_ref().map(|url| {
            crate::format::mysql::parse_server_url("verification.mysql_url", url.expose_secret())
        })
    }
}

/// The `storage:` section.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// How long the failed storage requests of one backup or restore
    /// attempt may be retried, all together (see `storage::budget`).
    #[serde(default = "default_retry_budget_seconds")]
    pub retry_budget_seconds: u64,
}

impl Default for StorageConfig {
    fn default() -> StorageConfig {
        StorageConfig {
            retry_budget_seconds: default_retry_budget_seconds(),
        }
    }
}

fn default_retry_budget_seconds() -> u64 {
    900
}

/// The `notifications:` section.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationsConfig {
    /// The SMTP server of `email` channels; without it, email channels
    /// cannot be created.
    #[serde(default)]
    pub smtp: Option<SmtpConfig>,
    /// Attempts per delivery before it is `failed` (at least 1).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Wait after the first failed attempt; doubled after each further
    /// one, up to `retry_max_seconds`.
    #[serde(default = "default_retry_base_seconds")]
    pub retry_base_seconds: u64,
    #[serde(default = "default_retry_max_seconds")]
    pub retry_max_seconds: u64,
    /// How long one attempt (connection, request, response) may take.
    #[serde(default = "default_notification_timeout_seconds")]
    pub timeout_seconds: u64,
    /// Days a delivery that ended (sent or failed) is kept.
    #[serde(default = "default_keep_days")]
    pub keep_days: u32,
}

impl Default for NotificationsConfig {
    fn default() -> NotificationsConfig {
        NotificationsConfig {
            smtp: None,
            max_attempts: default_max_attempts(),
            retry_base_seconds: default_retry_base_seconds(),
            retry_max_seconds: default_retry_max_seconds(),
            timeout_seconds: default_notification_timeout_seconds(),
            keep_days: default_keep_days(),
        }
    }
}

/// How the connection to the SMTP server is secured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (required; default port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (default port 465).
    Tls,
    /// No encryption (default port 25); for a relay on the same host.
    None,
}

/// `notifications.smtp`: the server email channels send through.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    /// Defaults to 587, 465 or 25 by `tls`.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: SmtpTls,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<SecretString>,
    /// The sender, `Cairn <cairn@example.com>` or a bare address.
    pub from: String,
    /// A PEM file of extra root certificates (a private CA of the relay).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl SmtpConfig {
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        })
    }
}

fn default_keep_days() -> u32 {
    30
}

fn default_max_attempts() -> u32 {
    8
}

fn default_retry_base_seconds() -> u64 {
    30
}

fn default_retry_max_seconds() -> u64 {
    3600
}

fn default_notification_timeout_seconds() -> u64 {
    10
}

/// The `worker:` section.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// Backups one worker process runs at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// How long a claim holds without renewal; a worker renews it every
    /// third of this, and a backup whose lease ran out (its worker died)
    /// is failed as `worker_lost`.
    #[serde(default = "default_lease_seconds")]
    pub lease_seconds: u64,
    /// How often an idle worker looks for pending backups, in milliseconds.
    #[serde(default = "default_poll_millis")]
    pub poll_millis: u64,
}

impl Default for WorkerConfig {
    fn default() -> WorkerConfig {
        WorkerConfig {
            concurrency: default_concurrency(),
            lease_seconds: default_lease_seconds(),
            poll_millis: default_poll_millis(),
        }
    }
}

fn default_org_deletion_grace_days() -> u32 {
    30
}

fn default_safety_backup_retention_days() -> u32 {
    7
}

fn default_max_volumes_per_app() -> usize {
    100
}

fn default_suspicious_shrink_fraction() -> f64 {
    0.1
}

fn default_volume_root() -> PathBuf {
    PathBuf::from("/var/lib/docker/volumes")
}

fn default_pg_dump() -> PathBuf {
    PathBuf::from("pg_dump")
}

fn default_pg_restore() -> PathBuf {
    PathBuf::from("pg_restore")
}

fn default_mysqldump() -> PathBuf {
    PathBuf::from("mariadb-dump")
}

fn default_mysql() -> PathBuf {
    PathBuf::from("mariadb")
}

fn default_concurrency() -> usize {
    2
}

fn default_lease_seconds() -> u64 {
    30
}

fn default_poll_millis() -> u64 {
    1000
}

/// The `backup:` section: the system-level target "System default".
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemTargetConfig {
    #[serde(rename = "type")]
    pub target_type: String,
    pub bucket: Option<String>,
    pub region: Option<String>,
    pub access_key: Option<String>,
    pub secret_key: Option<SecretString>,
    pub endpoint: Option<String>,
    pub prefix: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub username: Option<String>,
    pub path: Option<String>,
    pub private_key: Option<SecretString>,
    pub host_key_fingerprint: Option<String>,
}

impl SystemTargetConfig {
    /// A local target writing under `path`.
    pub fn local(path: &Path) -> SystemTargetConfig {
        SystemTargetConfig {
            target_type: "local".into(),
            bucket: None,
            region: None,
            access_key: None,
            secret_key: None,
            endpoint: None,
            prefix: None,
            host: None,
            port: None,
            username: None,
            path: Some(path.to_string_lossy().into_owned()),
            private_key: None,
            host_key_fingerprint: None,
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./cairn-data")
}

fn default_true() -> bool {
    true
}

fn default_max_body_bytes() -> usize {
    256 * 1024
}

/// A configuration that could not be loaded, with the offending key named.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl Config {
    /// Loads defaults, then the YAML file at `file` (when given; a missing
    /// file is an error), then `CAIRN_*` variables from the environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_from(file, Env::prefixed("CAIRN_"))
    }

    /// Loads defaults and the YAML file only, ignoring the environment; for
    /// tests and tools that build a configuration by hand.
    pub fn load_file(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_from(file, Env::prefixed("CAIRN_").filter(|_| false))
    }

    fn load_from(file: Option<&Path>, env: Env) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(serde_json::json!({})));
        if let Some(file) = file {
            if !file.is_file() {
                return Err(ConfigError(format!(
                    "configuration file {} does not exist",
                    file.display()
                )));
            }
            figment = figment.merge(Yaml::file_exact(file));
        }
        let env = env
            .filter(|key| {
                !NON_CONFIG_VARIABLES
                    .iter()
                    .any(|reserved| key.as_str().eq_ignore_ascii_case(reserved))
            })
            .split("__");
        figment = figment.merge(env);
        let config = figment.extract::<Config>().map_err(|error| {
            let messages: Vec<String> = error
                .into_iter()
                .map(|e| {
                    let key = e.path.join(".");
                    let source = e
                        .metadata
                        .as_ref()
                        .map(|m| m.name.to_string())
                        .unwrap_or_default();
                    let kind = describe_kind(&e.kind);
                    if key.is_empty() {
                        format!("{kind} ({source})")
                    } else {
                        format!("key `{key}`: {kind} ({source})")
                    }
                })
                .collect();
            ConfigError(messages.join("; "))
        })?;
        if config.storage.retry_budget_seconds == 0 {
            return Err(ConfigError(
                "key `storage.retry_budget_seconds`: must be at least 1".into(),
            ));
        }
        if let Some(Err(reason)) = config.verification.scratch_server() {
            return Err(ConfigError(format!(
                "key `verification.postgres_url`: {reason}"
            )));
        }
        if let Some(Err(reason)) = config.verification.mysql_scratch_server() {
            return Err(ConfigError(format!(
                "key `verification.mysql_url`: {reason}"
            )));
        }
        if let Err(error) =
            crate::runs::schedule::JobSchedule::parse(&config.orphans.schedule, "UTC")
        {
            return Err(ConfigError(format!("key `orphans.schedule`: {error}")));
        }
        if let Err(error) =
            crate::runs::schedule::JobSchedule::parse(&config.system_backup.schedule, "UTC")
        {
            return Err(ConfigError(format!(
                "key `system_backup.schedule`: {error}"
            )));
        }
        if !(0.0..=1.0).contains(&config.suspicious_shrink_fraction) {
            return Err(ConfigError(
                "key `suspicious_shrink_fraction`: must be between 0 and 1".into(),
            ));
        }
        Ok(config)
    }

    /// The database URL in effect.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.expose_secret().to_owned(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("cairn.db").display()
            ),
        }
    }

    /// Whether private endpoints are allowed (resolved for the role by
    /// `Cairn::open`; off when nothing resolved it).
    pub fn private_endpoints_allowed(&self) -> bool {
        self.allow_private_endpoints.unwrap_or(false)
    }

    /// The directory under which organizations' local targets must lie.
    pub fn local_backup_root(&self) -> PathBuf {
        let root = self
            .local_backup_root
            .clone()
            .unwrap_or_else(|| self.data_dir.join("backups"));
        absolute(&root)
    }

    /// A configuration with every default and nothing from file or
    /// environment, rooted at `data_dir`.
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> Config {
        // Nothing but the built-in defaults is read, and every field has one.
        let mut config = Self::load_file(None).expect("the built-in defaults are valid");
        config.data_dir = data_dir.into();
        config
    }
}

/// Describes a figment error kind without echoing the offending value, which
/// may be a secret.
fn describe_kind(kind: &figment::error::Kind) -> String {
    use figment::error::Kind;
    match kind {
        Kind::UnknownField(field, _) => format!("unknown key `{field}`"),
        Kind::MissingField(field) => format!("missing key `{field}`"),
        Kind::InvalidType(actual, expected) => {
            format!(
                "expected {expected}, found {}",
                actual.to_string().split(' ').next().unwrap_or("value")
            )
        }
        Kind::InvalidValue(_, expected) => format!("invalid value, expected {expected}"),
        Kind::UnknownVariant(variant, expected) => {
            format!(
                "unknown value `{variant}`, expected one of {}",
                expected.join(", ")
            )
        }
        Kind::InvalidLength(len, expected) => format!("invalid length {len}, expected {expected}"),
        Kind::DuplicateField(field) => format!("duplicate key `{field}`"),
        other => other.to_string(),
    }
}

/// Makes `path` absolute against the current directory without touching the
/// file system, and removes `.` components.
pub fn absolute(path: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    };
    joined
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect()
}

#[cfg(test)]
// figment's `Jail` dictates the closures' error type (`figment::Error`).
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("cairn.yml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn defaults_are_the_embedded_setup() {
        let config = Config::load_file(None).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.data_dir, PathBuf::from("./cairn-data"));
        assert!(config
            .database_url()
            .starts_with("sqlite://./cairn-data/cairn.db"));
        assert!(config.allow_local_backups);
        assert!(config.backup.is_none());
        assert_eq!(config.storage.retry_budget_seconds, 900);
    }

    #[test]
    fn the_retry_budget_comes_from_the_environment_and_is_never_zero() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("CAIRN_STORAGE__RETRY_BUDGET_SECONDS", "60");
            let config = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(config.storage.retry_budget_seconds, 60);
            jail.set_env("CAIRN_STORAGE__RETRY_BUDGET_SECONDS", "0");
            let error = Config::load(None).unwrap_err().to_string();
            assert!(error.contains("storage.retry_budget_seconds"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn file_values_override_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            "listen: 127.0.0.1:9999\nallow_local_backups: false\nbackup:\n  type: s3\n  bucket: b\n",
        );
        let config = Config::load_file(Some(&file)).unwrap();
        assert_eq!(config.listen.port(), 9999);
        assert!(!config.allow_local_backups);
        assert_eq!(config.backup.unwrap().bucket.as_deref(), Some("b"));
    }

    #[test]
    fn unknown_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "listen: 127.0.0.1:9999\ndatabse_url: x\n");
        let error = Config::load_file(Some(&file)).unwrap_err().to_string();
        assert!(error.contains("databse_url"), "{error}");

        let file = write(dir.path(), "backup:\n  type: s3\n  buckt: x\n");
        let error = Config::load_file(Some(&file)).unwrap_err().to_string();
        assert!(error.contains("buckt"), "{error}");
    }

    #[test]
    fn environment_overrides_file_and_unknown_variables_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "listen: 127.0.0.1:9999\nbackup:\n  type: s3\n");
        figment::Jail::expect_with(|jail| {
            jail.set_env("CAIRN_LISTEN", "127.0.0.1:7777");
            jail.set_env("CAIRN_BACKUP__BUCKET", "from-env");
            jail.set_env("CAIRN_CONFIG", "ignored.yml");
            let config = Config::load(Some(&file)).map_err(|e| e.to_string())?;
            assert_eq!(config.listen.port(), 7777);
            assert_eq!(config.backup.unwrap().bucket.as_deref(), Some("from-env"));

            jail.set_env("CAIRN_LISTNE", "127.0.0.1:1");
            let error = Config::load(Some(&file)).unwrap_err().to_string();
            assert!(error.contains("listne"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn notification_settings_come_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("CAIRN_NOTIFICATIONS__SMTP__HOST", "smtp.example.com");
            jail.set_env("CAIRN_NOTIFICATIONS__SMTP__TLS", "tls");
            jail.set_env(
                "CAIRN_NOTIFICATIONS__SMTP__FROM",
                "Cairn <cairn@example.com>",
            );
            jail.set_env("CAIRN_NOTIFICATIONS__SMTP__PASSWORD", "smtp-password-value");
            jail.set_env("CAIRN_NOTIFICATIONS__MAX_ATTEMPTS", "3");
            let config = Config::load(None).map_err(|e| e.to_string())?;
            let smtp = config.notifications.smtp.clone().expect("an SMTP section");
            assert_eq!(smtp.host, "smtp.example.com");
            assert_eq!(smtp.tls, SmtpTls::Tls);
            assert_eq!(smtp.port(), 465);
            assert_eq!(config.notifications.max_attempts, 3);
            assert_eq!(config.notifications.retry_base_seconds, 30);
            assert!(!format!("{config:?}").contains("smtp-password-value"));
            jail.set_env("CAIRN_NOTIFICATIONS__SMTP__TLS", "ssl");
            let error = Config::load(None).unwrap_err().to_string();
            assert!(error.contains("notifications.smtp.tls"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn secrets_do_not_print() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("CAIRN_ADMIN_TOKEN", "very-secret-admin-token");
            let config = Config::load(None).map_err(|e| e.to_string())?;
            assert!(!format!("{config:?}").contains("very-secret-admin-token"));
            Ok(())
        });
    }

    #[test]
    fn invalid_values_do_not_echo_the_value() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("CAIRN_MAX_BODY_BYTES", "secret-looking-value");
            let error = Config::load(None).unwrap_err().to_string();
            assert!(error.contains("max_body_bytes"), "{error}");
            assert!(!error.contains("secret-looking-value"), "{error}");
            Ok(())
        });
    }
}
