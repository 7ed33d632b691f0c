//! The `cairn` binary: argument parsing and role wiring only. Every role
//! lives in its own crate with a small entry point.

use std::io::IsTerminal;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use cairn_api::{Application, ApplicationOptions};
use cairn_core::auth::{self, CreateTokenRequest, Role};
use cairn_core::config::LogFormat;
use cairn_core::{Cairn, Config, StartMode};
use cairn_worker::{Worker, WorkerOptions};
use clap::{Parser, Subcommand, ValueEnum};
use uuid::Uuid;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Cairn: a multi-tenant backup service.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (YAML). Also `CAIRN_CONFIG`.
    #[arg(long, global = true, env = "CAIRN_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run Cairn on one machine: the embedded default (SQLite, local
    /// storage, a generated master key and administrator token on first start).
    Serve {
        /// Address to listen on (default 127.0.0.1:8080). Also `CAIRN_LISTEN`.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Run the stateless REST API only (scaled-out deployments: requires
    /// CAIRN_MASTER_KEY or an existing key file).
    Api {
        /// Address to listen on (default 127.0.0.1:8080). Also `CAIRN_LISTEN`.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Run a worker: claim pending backups and run them (scaled-out
    /// deployments: requires CAIRN_MASTER_KEY or an existing key file).
    Worker {
        /// Backups run at once (default 2). Also `CAIRN_WORKER__CONCURRENCY`.
        #[arg(long)]
        concurrency: Option<usize>,
        /// Serve `/healthz` and the backup metrics (`/metrics`) here.
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
    },
    /// Run a scheduler: fire due backup jobs at the start of every minute,
    /// each slot once across replicas (Redis slot locks with
    /// `CAIRN_REDIS_URL`, and the database's unique (job, slot)).
    Scheduler {
        /// Serve `/healthz` and `/metrics` here.
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Manage API tokens from the command line.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Retention tools (no server needed).
    Retention {
        #[command(subcommand)]
        command: RetentionCommand,
    },
    /// Offline recovery tools for stored archives (no server, no database).
    Archive {
        #[command(subcommand)]
        command: ArchiveCommand,
    },
    /// The history against what targets hold.
    Catalog {
        #[command(subcommand)]
        command: CatalogCommand,
    },
    /// Cairn's own state: its self-backups' key and restoring its database.
    System {
        #[command(subcommand)]
        command: SystemCommand,
    },
}

#[derive(Subcommand)]
enum SystemCommand {
    /// Rebuilds the configured database (`database_url`: a SQLite file or
    /// a PostgreSQL database) from a self-backup, offline: stop every Cairn
    /// process first. The next start runs the migrations this binary has
    /// and the backup had not. Start it with the master key the backup's
    /// secrets were sealed with.
    ///
    /// SOURCE is a local file or `s3://BUCKET/KEY` (downloaded with its
    /// sidecars; credentials and the endpoint from the environment:
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
    /// `AWS_ENDPOINT_URL`).
    Restore {
        source: PathBuf,
        /// The system identity file (`cairn system key export`).
        #[arg(long)]
        identity: PathBuf,
        /// The expected SHA-256 (hex), instead of the `.sha256` beside
        /// SOURCE.
        #[arg(long)]
        sha256: Option<String>,
        /// Replace a database that is not empty (a SQLite file is kept
        /// beside as `….replaced-{time}`).
        #[arg(long)]
        force: bool,
        /// The database to rebuild, instead of the configured
        /// `database_url`: `sqlite:///path/cairn.db` or
        /// `postgres://user@host:port/database`. Leave a password out and
        /// set PGPASSWORD: this command's arguments are visible to other
        /// users of the machine.
        #[arg(long)]
        database_url: Option<String>,
    },
    /// The age key pair self-backups are encrypted to.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
}

#[derive(Subcommand)]
enum CatalogCommand {
    /// Records the archives of a target that the history lacks (after the
    /// database was lost and its organizations and targets re-created):
    /// each archive in the `{orgSlug}/{app}/{volume}/` layout that no
    /// backup names, from its `.sha256` and manifest, for the
    /// organizations whose slug exists; the others are listed. Prints the
    /// report as JSON. Running it again adds nothing.
    Import {
        /// The target's id.
        #[arg(long)]
        target: uuid::Uuid,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Prints the system's age identity (made now when there is none), for
    /// offline safekeeping: without it no self-backup can be decrypted once
    /// the database is lost.
    Export {
        /// Write it to this file (created, mode 0600; it must not exist)
        /// instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ArchiveCommand {
    /// Prints the manifest stored beside FILE (`FILE.manifest.json`).
    ///
    /// Every FILE may be a local path or `s3://BUCKET/KEY`: the archive and
    /// its sidecars are then downloaded first, with credentials and the
    /// endpoint from the environment (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`).
    Inspect { file: PathBuf },
    /// Checks FILE's SHA-256 against its `.sha256` sidecar (or `--sha256`)
    /// and that it reads to its end (an encrypted archive needs
    /// `--identity` for the second check).
    Verify {
        file: PathBuf,
        /// The expected SHA-256 (hex), instead of the sidecar's.
        #[arg(long)]
        sha256: Option<String>,
        /// An age identity file that decrypts FILE.
        #[arg(long)]
        identity: Option<PathBuf>,
    },
    /// Extracts a tar archive into an empty directory, refusing entries
    /// that would reach outside it (absolute paths, `..`, escaping links,
    /// writes through symlinks, device files) and stopping at the size the
    /// manifest states (decompression bombs).
    Extract {
        file: PathBuf,
        /// The directory to extract into (created when missing; must be
        /// empty).
        #[arg(long)]
        into: PathBuf,
        /// An age identity file that decrypts FILE.
        #[arg(long)]
        identity: Option<PathBuf>,
        /// The most bytes of tar stream to read, when the manifest is not
        /// beside FILE.
        #[arg(long)]
        max_bytes: Option<u64>,
    },
    /// Restores a PostgreSQL dump (`.dump`, or `.dump.age` with
    /// `--identity`) with `pg_restore --clean --if-exists --no-owner`.
    PgRestore {
        file: PathBuf,
        /// `postgres://user@host:port/database`. Leave the password out and
        /// set PGPASSWORD: this command's own arguments are visible to
        /// other users of the machine (pg_restore gets the password only
        /// through its environment).
        #[arg(long)]
        dbname: String,
        /// An age identity file that decrypts FILE.
        #[arg(long)]
        identity: Option<PathBuf>,
        /// The pg_restore program (at least as new as the pg_dump that
        /// wrote FILE).
        #[arg(long, default_value = "pg_restore")]
        pg_restore: PathBuf,
    },
}

#[derive(Subcommand)]
enum RetentionCommand {
    /// Reads RFC 3339 backup times on stdin, one per line, and prints for
    /// each a JSON line `{"time", "keep", "reasons"}` under the given
    /// policy (restic's `forget --keep-*` semantics).
    Plan {
        #[arg(long, default_value_t = 0)]
        keep_last: u32,
        #[arg(long, default_value_t = 0)]
        keep_hourly: u32,
        #[arg(long, default_value_t = 0)]
        keep_daily: u32,
        #[arg(long, default_value_t = 0)]
        keep_weekly: u32,
        #[arg(long, default_value_t = 0)]
        keep_monthly: u32,
        #[arg(long, default_value_t = 0)]
        keep_yearly: u32,
        #[arg(long)]
        keep_all: bool,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it once. Without `--org`: a system
    /// administrator token.
    Create {
        /// The organization the token belongs to.
        #[arg(long)]
        org: Option<Uuid>,
        /// The token's role in the organization (with `--org`).
        #[arg(long, value_enum, default_value = "admin", requires = "org")]
        role: RoleArg,
        /// What the token is for.
        #[arg(long, default_value = "created by cairn token create")]
        name: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    Admin,
    Operator,
    Viewer,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Role {
        match role {
            RoleArg::Admin => Role::Admin,
            RoleArg::Operator => Role::Operator,
            RoleArg::Viewer => Role::Viewer,
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // SAFETY: nothing has opened a database yet, and no other thread runs
    // Cairn code.
    unsafe { cairn_core::db::configure_sqlite() };
    let cli = Cli::parse();
    // Offline tools need no configuration.
    if let Command::Retention {
        command:
            RetentionCommand::Plan {
                keep_last,
                keep_hourly,
                keep_daily,
                keep_weekly,
                keep_monthly,
                keep_yearly,
                keep_all,
            },
    } = &cli.command
    {
        let policy = cairn_core::runs::retention::Policy {
            keep_all: *keep_all,
            last: *keep_last,
            hourly: *keep_hourly,
            daily: *keep_daily,
            weekly: *keep_weekly,
            monthly: *keep_monthly,
            yearly: *keep_yearly,
        };
        return match cairn_core::runs::retention::plan(
            &policy,
            std::io::stdin().lock(),
            std::io::stdout().lock(),
        ) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("cairn: {error:#}");
                ExitCode::from(2)
            }
        };
    }
    if let Command::Archive { command } = &cli.command {
        return match archive_tool(command).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("cairn: {error}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("cairn: {error}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log_format);
    match run(cli.command, config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "cairn stopped with an error");
            eprintln!("cairn: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,sea_orm=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().with_current_span(true).init(),
        LogFormat::Pretty => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

/// Serves `/healthz` and `/metrics` of a `role` on `listen`, when given;
/// returns the handle that stops it.
fn serve_metrics(
    listen: Option<SocketAddr>,
    role: &str,
    cairn: &Cairn,
) -> anyhow::Result<Option<actix_web::dev::ServerHandle>> {
    let Some(address) = listen else {
        return Ok(None);
    };
    let listener = TcpListener::bind(address).with_context(|| format!("binding {address}"))?;
    tracing::info!(%address, "{role} metrics at /metrics");
    let server = cairn_api::metrics_server(listener, cairn.clone())?;
    let handle = server.handle();
    tokio::spawn(server);
    Ok(Some(handle))
}

/// A scheduler with Redis slot locks when `redis_url` is set, in-process
/// ones otherwise.
fn scheduler_of(cairn: &Cairn) -> cairn_scheduler::Scheduler {
    let locks: std::sync::Arc<dyn cairn_scheduler::SlotLocks> = match &cairn.redis {
        Some(redis) => redis.clone(),
        None => std::sync::Arc::new(cairn_scheduler::LocalLocks::default()),
    };
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "scheduler".into());
    cairn_scheduler::Scheduler::new(
        cairn.clone(),
        locks,
        format!("{host}:{}", std::process::id()),
    )
}

async fn run(command: Command, mut config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve { listen } => {
            if let Some(listen) = listen {
                config.listen = listen;
            }
            let cairn = Cairn::open(config, StartMode::Embedded).await?;
            if let Some(token) = cairn.bootstrap_admin_token().await? {
                // Printed, not logged: the token must not reach log storage.
                println!(
                    "Created a system administrator token. It is shown once; store it now:\n\n    {token}\n"
                );
            }
            // The embedded default runs a scheduler and a worker beside the
            // API; all stop on SIGTERM, the worker after its running backups
            // are ended.
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let worker = Worker::new(
                cairn.clone(),
                WorkerOptions::from_config(&cairn.config.worker),
            );
            let worker_stopped = stopped.clone();
            let worker = tokio::spawn(async move { worker.run(worker_stopped).await });
            let scheduler = scheduler_of(&cairn);
            let scheduler = tokio::spawn(async move { scheduler.run(stopped).await });
            let served = serve_api(cairn).await;
            let _ = stop.send(true);
            let _ = worker.await;
            let _ = scheduler.await;
            served
        }
        Command::Worker {
            concurrency,
            metrics_listen,
        } => {
            if let Some(concurrency) = concurrency {
                config.worker.concurrency = concurrency;
            }
            let cairn = Cairn::open(config, StartMode::Replica).await?;
            let metrics_handle = serve_metrics(metrics_listen, "worker", &cairn)?;
            let (stop, stopped) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                shutdown_signal().await;
                tracing::info!("stopping: running backups are ended as interrupted");
                let _ = stop.send(true);
            });
            Worker::new(
                cairn.clone(),
                WorkerOptions::from_config(&cairn.config.worker),
            )
            .run(stopped)
            .await;
            if let Some(handle) = metrics_handle {
                handle.stop(true).await;
            }
            Ok(())
        }
        Command::Scheduler { metrics_listen } => {
            let cairn = Cairn::open(config, StartMode::Replica).await?;
            if cairn.config.redis_url.is_none() {
                tracing::warn!("no CAIRN_REDIS_URL: slot locks are in-process; several schedulers still fire each slot once (the database fence) but do the work twice");
            }
            let metrics_handle = serve_metrics(metrics_listen, "scheduler", &cairn)?;
            let (stop, stopped) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                shutdown_signal().await;
                tracing::info!("stopping the scheduler");
                let _ = stop.send(true);
            });
            scheduler_of(&cairn).run(stopped).await;
            if let Some(handle) = metrics_handle {
                handle.stop(true).await;
            }
            Ok(())
        }
        Command::Api { listen } => {
            if let Some(listen) = listen {
                config.listen = listen;
            }
            let cairn = Cairn::open(config, StartMode::Replica).await?;
            serve_api(cairn).await
        }
        Command::Migrate => {
            let db = cairn_core::db::connect(&config).await?;
            cairn_core::db::migrate(&db).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        // Handled before the configuration is loaded.
        Command::Retention { .. } | Command::Archive { .. } => Ok(()),
        Command::Catalog {
            command: CatalogCommand::Import { target },
        } => {
            let cairn = Cairn::open(config, StartMode::Replica).await?;
            let report = cairn_core::catalog::import(&cairn, target, chrono::Utc::now())
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::System {
            command:
                SystemCommand::Key {
                    command: KeyCommand::Export { out },
                },
        } => {
            let db = cairn_core::db::connect(&config).await?;
            if config.run_migrations {
                cairn_core::db::migrate(&db).await?;
            }
            let (master_key, _) =
                cairn_core::MasterKey::load(config.master_key.as_ref(), &config.data_dir, false)?;
            let exported = cairn_core::system::key::export(&db, &master_key)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let text = format!(
                "# Cairn system identity: decrypts Cairn's self-backups\n# public key: {}\n{}\n",
                exported.recipient, exported.identity
            );
            match out {
                Some(path) => {
                    use std::io::Write;
                    use std::os::unix::fs::OpenOptionsExt;
                    let mut file = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&path)
                        .with_context(|| format!("creating {}", path.display()))?;
                    file.write_all(text.as_bytes())?;
                    file.sync_all()?;
                    eprintln!("wrote the system identity to {}", path.display());
                }
                None => print!("{text}"),
            }
            Ok(())
        }
        Command::System {
            command:
                SystemCommand::Restore {
                    source,
                    identity,
                    sha256,
                    force,
                    database_url,
                },
        } => {
            let database_url = database_url.unwrap_or_else(|| config.database_url());
            system_restore(
                &config,
                &source,
                &identity,
                sha256.as_deref(),
                force,
                &database_url,
            )
            .await
            .map_err(|e| anyhow::anyhow!(e))
        }
        Command::Token {
            command: TokenCommand::Create { org, role, name },
        } => {
            let db = cairn_core::db::connect(&config).await?;
            if config.run_migrations {
                cairn_core::db::migrate(&db).await?;
            }
            if let Some(org) = org {
                cairn_core::orgs::get(&db, org)
                    .await
                    .map_err(|_| anyhow::anyhow!("no organization with id {org}"))?;
            }
            let created = auth::create_token(
                &db,
                org,
                CreateTokenRequest {
                    name,
                    role: if org.is_some() {
                        role.into()
                    } else {
                        Role::Admin
                    },
                },
                chrono::Utc::now(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{}", created.token);
            Ok(())
        }
    }
}

/// `cairn system restore`.
async fn system_restore(
    config: &Config,
    source: &std::path::Path,
    identity: &std::path::Path,
    sha256: Option<&str>,
    force: bool,
    database_url: &str,
) -> Result<(), String> {
    use cairn_core::format::offline;
    use cairn_core::system::restore::{restore, RestoreOptions};
    let identity = offline::identity_from(Some(identity))?.ok_or("no identity")?;
    let download =
        tempfile::tempdir().map_err(|e| format!("creating a temporary directory: {e}"))?;
    let fetched = match source.to_str().filter(|s| s.starts_with("s3://")) {
        Some(location) => Some(offline::fetch_s3(location, download.path()).await?),
        None => None,
    };
    let archive = fetched.as_deref().unwrap_or(source);
    let restored = restore(RestoreOptions {
        archive,
        sha256,
        identity: &identity,
        database_url,
        force,
        pg_restore: &config.pg_restore,
    })
    .await?;
    let manifest = &restored.manifest;
    println!(
        "restored the {} database backed up at {} by Cairn {} ({} migrations; checksum checked against {})",
        manifest.engine.as_str(),
        manifest.created_at.to_rfc3339(),
        manifest.cairn_version,
        manifest.migration_count,
        restored.checked_against,
    );
    for kept in &restored.kept {
        println!("the replaced database file is kept as {}", kept.display());
    }
    println!(
        "start Cairn with the master key it was sealed with (CAIRN_MASTER_KEY or <data_dir>/master.key); \
         the start applies this binary's newer migrations"
    );
    Ok(())
}

/// `cairn archive …`: reads files only.
async fn archive_tool(command: &ArchiveCommand) -> Result<(), String> {
    use cairn_core::format::manifest::Manifest;
    use cairn_core::format::names::Sidecar;
    use cairn_core::format::offline;
    // An s3:// FILE is downloaded first, with its sidecars, into a
    // temporary directory that lives as long as the command.
    let download =
        tempfile::tempdir().map_err(|e| format!("creating a temporary directory: {e}"))?;
    let local = |file: &std::path::Path| -> Option<String> {
        file.to_str()
            .filter(|f| f.starts_with("s3://"))
            .map(str::to_owned)
    };
    let file = match command {
        ArchiveCommand::Inspect { file }
        | ArchiveCommand::Verify { file, .. }
        | ArchiveCommand::Extract { file, .. }
        | ArchiveCommand::PgRestore { file, .. } => file,
    };
    let fetched = match local(file) {
        Some(location) => Some(offline::fetch_s3(&location, download.path()).await?),
        None => None,
    };
    let file = fetched.as_deref().unwrap_or(file);
    match command {
        ArchiveCommand::Inspect { .. } => {
            let manifest = Sidecar::Manifest.beside(file);
            let text = std::fs::read(&manifest).map_err(|e| {
                format!(
                    "{}: {e} (the manifest is stored beside the archive; download it too)",
                    manifest.display()
                )
            })?;
            let value: serde_json::Value = serde_json::from_slice(&text)
                .map_err(|e| format!("{} is not JSON: {e}", manifest.display()))?;
            // Printed as stored, with any field a newer Cairn added; what
            // stops this Cairn from reading it is said on stderr.
            let pretty = serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?;
            println!("{pretty}");
            if let Err(error) = Manifest::from_value(&value) {
                eprintln!("cairn: {}: {error}", manifest.display());
            }
            Ok(())
        }
        ArchiveCommand::Extract {
            into,
            identity,
            max_bytes,
            ..
        } => {
            let identity = offline::identity_from(identity.as_deref())?;
            let (done, cap) = offline::extract_file(file, into, identity.as_ref(), *max_bytes)
                .map_err(|e| {
                    format!(
                        "{e}\nnothing outside {} was touched; what was extracted before the refusal is left there for inspection",
                        into.display()
                    )
                })?;
            if cap.is_none() {
                eprintln!(
                    "cairn: no manifest beside the archive and no --max-bytes: extracted without a size cap"
                );
            }
            println!(
                "extracted into {}: {} files, {} directories, {} symlinks, {} hard links, {} bytes",
                into.display(),
                done.files,
                done.directories,
                done.symlinks,
                done.hard_links,
                done.bytes
            );
            Ok(())
        }
        ArchiveCommand::PgRestore {
            dbname,
            identity,
            pg_restore,
            ..
        } => {
            let identity = offline::identity_from(identity.as_deref())?;
            let bytes = offline::pg_restore_file(file, dbname, identity.as_ref(), pg_restore)?;
            println!("restored {bytes} bytes of dump with pg_restore");
            Ok(())
        }
        ArchiveCommand::Verify {
            sha256, identity, ..
        } => {
            let identity = offline::identity_from(identity.as_deref())?;
            let verified = offline::verify_file(file, sha256.as_deref(), identity.as_ref())?;
            println!(
                "checksum ok: sha256 {} ({} bytes) matches {}",
                verified.sha256, verified.size, verified.checked_against
            );
            match verified.read {
                Some(read) if read.entries > 0 => println!(
                    "archive ok: read to its end, {} entries, {} bytes of content",
                    read.entries, read.bytes
                ),
                Some(read) => println!("archive ok: read to its end, {} bytes", read.bytes),
                None => println!(
                    "archive not read: it is encrypted; pass --identity to check that it decrypts and reads to its end"
                ),
            }
            Ok(())
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!("cannot listen for SIGTERM: {error}");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = terminate => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn serve_api(cairn: Cairn) -> anyhow::Result<()> {
    let listen = cairn.config.listen;
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    let app = Application::build(cairn, listener, ApplicationOptions { workers: None })?;
    tracing::info!(%listen, "Cairn API listening; OpenAPI at /api/v1/openapi.json, docs at /docs/");
    app.run_until_stopped().await?;
    tracing::info!("stopped");
    Ok(())
}
