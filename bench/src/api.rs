//! The API at scale, for `bench/api.sh`:
//!
//! - `cairn-bench api seed`: on the database `BENCH_DATABASE_URL` (and the
//!   data directory `BENCH_DATA_DIR`), one organization with an admin
//!   token, one app, `BENCH_JOBS` jobs (1 000) and `BENCH_BACKUPS` backup
//!   records (100 000) spread over them and over the past year, one run
//!   each, one in ten of them verified (one in a hundred of those failed),
//!   3% of the backups failed. Written as a worker writes them (through
//!   the entities, in batches), then on PostgreSQL `ANALYZE` (the
//!   statistics autovacuum keeps; Cairn never analyzes SQLite). Prints
//!   `org=… token=… job=… cursor=…` (a job, and a backup half-way down
//!   the history for a deep cursor).
//! - `cairn-bench api load BASE_URL TOKEN ORG JOB CURSOR`: for each
//!   endpoint, `BENCH_CLIENTS` (50) concurrent clients send `BENCH_REQUESTS`
//!   (2 000) requests in all; prints requests per second, p50 and p99.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cairn_core::{Cairn, Config, StartMode};
use cairn_entity::enums::{
    BackupStatus, RunStatus, Trigger, VerificationStatus, VerifyMode, VolumeKind,
};
use cairn_entity::{app, backup, backup_run, verification};
use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, EntityTrait, Set, TransactionTrait};
use secrecy::SecretString;
use uuid::Uuid;

/// Rows per insert: well under SQLite's bound-value limit.
const BATCH: usize = 400;

fn number(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(text) => text.parse().with_context(|| format!("{name}={text}")),
        Err(_) => Ok(default),
    }
}

/// A UUID v7 of `at` (history is ordered by id, as the worker's are).
fn id_at(at: DateTime<Utc>) -> Uuid {
    let ts = uuid::Timestamp::from_unix(
        uuid::NoContext,
        at.timestamp() as u64,
        at.timestamp_subsec_nanos(),
    );
    Uuid::new_v7(ts)
}

pub async fn seed() -> anyhow::Result<()> {
    let jobs = number("BENCH_JOBS", 1_000)?;
    let backups = number("BENCH_BACKUPS", 100_000)?;
    let data_dir = std::path::PathBuf::from(super::env("BENCH_DATA_DIR")?);
    let mut config = Config::with_data_dir(&data_dir);
    config.database_url = Some(SecretString::from(super::env("BENCH_DATABASE_URL")?));
    let cairn = Cairn::open(config, StartMode::Embedded).await?;
    let now = Utc::now();
    let started = Instant::now();
    let org = cairn_core::orgs::create(
        &cairn.db,
        cairn_core::orgs::CreateOrganizationRequest {
            slug: "scale".into(),
            name: "Scale".into(),
        },
        now,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let token = cairn_core::auth::create_token(
        &cairn.db,
        Some(org.id),
        cairn_core::auth::CreateTokenRequest {
            name: "bench".into(),
            role: cairn_core::auth::Role::Admin,
        },
        now,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let app_id = Uuid::now_v7();
    app::Entity::insert(app::ActiveModel {
        id: Set(app_id),
        organization_id: Set(org.id),
        name: Set("shop".into()),
        created_at: Set(now),
        updated_at: Set(now),
        last_deploy_slot: Set(None),
        last_deployed_at: Set(None),
        auto_job_created_at: Set(None),
        auto_job_removed_at: Set(None),
    })
    .exec(&cairn.db)
    .await?;
    let job_ids = super::scheduler::create_jobs(
        &cairn,
        org.id,
        app_id,
        jobs,
        0,
        now + chrono::Duration::days(365),
    )
    .await?;
    let year = chrono::Duration::days(365);
    let step = year / backups.max(1) as i32;
    let first = now - year;
    let mut runs = Vec::with_capacity(BATCH);
    let mut records = Vec::with_capacity(BATCH);
    let mut checks = Vec::with_capacity(BATCH);
    let mut middle = None;
    for i in 0..backups {
        let at = first + step * i as i32;
        let job_id = job_ids[i % job_ids.len()];
        let run_id = id_at(at);
        let backup_id = id_at(at + chrono::Duration::milliseconds(1));
        if i == backups / 2 {
            middle = Some(backup_id);
        }
        let failed = i % 33 == 0;
        runs.push(backup_run::ActiveModel {
            id: Set(run_id),
            job_id: Set(job_id),
            trigger: Set(Trigger::Schedule),
            scheduled_for: Set(at),
            status: Set(if failed {
                RunStatus::Failed
            } else {
                RunStatus::Success
            }),
            reason: Set(None),
            created_at: Set(at),
            finished_at: Set(Some(at + chrono::Duration::seconds(30))),
            missed_count: Set(None),
            missed_from: Set(None),
            missed_to: Set(None),
            scope_app_id: Set(None),
        });
        records.push(backup::ActiveModel {
            id: Set(backup_id),
            organization_id: Set(org.id),
            run_id: Set(Some(run_id)),
            job_id: Set(Some(job_id)),
            app_id: Set(Some(app_id)),
            target_id: Set(None),
            app_name: Set("shop".into()),
            volume_name: Set("data".into()),
            status: Set(if failed {
                BackupStatus::Failed
            } else {
                BackupStatus::Success
            }),
            archive_size: Set((!failed).then_some(1 << 20)),
            storage_path: Set(Some(format!("scale/shop/data/{i}.tar.zst"))),
            sha256: Set(None),
            log: Set(serde_json::json!([
                { "at": at, "level": "info", "message": "archiving volume data" },
                { "at": at, "level": "info", "message": "uploaded 1048576 bytes" }
            ])),
            error_code: Set(failed.then(|| "volume_not_found".to_owned())),
            error_message: Set(failed.then(|| "neither directory exists".to_owned())),
            attempt: Set(1),
            lease_owner: Set(None),
            lease_expires_at: Set(None),
            created_at: Set(at),
            started_at: Set(Some(at)),
            finished_at: Set(Some(at + chrono::Duration::seconds(30))),
            trigger: Set(Trigger::Schedule),
            kind: Set(Some(VolumeKind::Generic)),
            manifest: Set(None),
            suspicious: Set(false),
            suspicious_reason: Set(None),
            accepted_at: Set(None),
            read_until: Set(None),
        });
        if !failed && i % 10 == 0 {
            let done = at + chrono::Duration::hours(1);
            checks.push(verification::ActiveModel {
                id: Set(id_at(done)),
                organization_id: Set(org.id),
                backup_id: Set(backup_id),
                backup_finished_at: Set(Some(at + chrono::Duration::seconds(30))),
                source_target_id: Set(None),
                job_id: Set(Some(job_id)),
                app_id: Set(Some(app_id)),
                app_name: Set("shop".into()),
                volume_name: Set("data".into()),
                mode: Set(if i % 20 == 0 {
                    VerifyMode::Restore
                } else {
                    VerifyMode::Read
                }),
                trigger: Set(Trigger::Schedule),
                scheduled_for: Set(Some(done)),
                status: Set(if i % 1000 == 0 {
                    VerificationStatus::Failed
                } else {
                    VerificationStatus::Success
                }),
                checks: Set(serde_json::json!([])),
                tables: Set(None),
                download_ms: Set(Some(800)),
                restore_ms: Set(Some(800)),
                total_ms: Set(Some(1_200)),
                log: Set(serde_json::json!([])),
                error_code: Set(None),
                error_message: Set(None),
                attempt: Set(1),
                lease_owner: Set(None),
                lease_expires_at: Set(None),
                created_at: Set(done),
                started_at: Set(Some(done)),
                finished_at: Set(Some(done)),
            });
        }
        if records.len() == BATCH || i + 1 == backups {
            let txn = cairn.db.begin().await?;
            backup_run::Entity::insert_many(std::mem::take(&mut runs))
                .exec(&txn)
                .await?;
            backup::Entity::insert_many(std::mem::take(&mut records))
                .exec(&txn)
                .await?;
            if !checks.is_empty() {
                verification::Entity::insert_many(std::mem::take(&mut checks))
                    .exec(&txn)
                    .await?;
            }
            txn.commit().await?;
        }
    }
    // The planner statistics a database in use has: PostgreSQL's
    // autovacuum gathers them on its own, later; Cairn never runs
    // `ANALYZE` on SQLite, whose statistics (with the STAT4 this build
    // compiles in) would make it re-prepare a statement each time its
    // bound values change: 10-30% more CPU per request (bench/README.md).
    if cairn.db.get_database_backend() == sea_orm::DbBackend::Postgres {
        cairn.db.execute_unprepared("ANALYZE").await?;
    }
    eprintln!(
        "[bench] seeded {jobs} jobs and {backups} backups in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!(
        "org={} token={} job={} cursor={}",
        org.id,
        token.token,
        job_ids[0],
        middle.unwrap_or_default()
    );
    Ok(())
}

/// The latencies of `requests` GETs of `path`, `clients` at a time.
async fn drive(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    clients: usize,
    requests: usize,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (client, url, token, next) = (
            client.clone(),
            url.to_owned(),
            token.to_owned(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < requests {
                let sent = Instant::now();
                let reply = client.get(&url).bearer_auth(&token).send().await?;
                let status = reply.status();
                let body = reply.bytes().await?;
                if !status.is_success() {
                    bail!("{url}: {status}: {}", String::from_utf8_lossy(&body));
                }
                latencies.push(sent.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut all = Vec::with_capacity(requests);
    for task in tasks {
        all.extend(task.await??);
    }
    Ok((all, started.elapsed()))
}

pub async fn load(
    base: &str,
    token: &str,
    org: &str,
    job: &str,
    cursor: &str,
) -> anyhow::Result<()> {
    let clients = number("BENCH_CLIENTS", 50)?;
    let requests = number("BENCH_REQUESTS", 2_000)?;
    let label = std::env::var("BENCH_LABEL").unwrap_or_default();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()?;
    let history = format!("{base}/api/v1/organizations/{org}/backups/history");
    let month_ago = (Utc::now() - chrono::Duration::days(60)).format("%Y-%m-%dT%H:%M:%SZ");
    let month = (Utc::now() - chrono::Duration::days(30)).format("%Y-%m-%dT%H:%M:%SZ");
    let endpoints = [
        ("history", history.clone()),
        ("history?jobId", format!("{history}?jobId={job}")),
        ("history?status=failed", format!("{history}?status=failed")),
        (
            "history?from&to",
            format!("{history}?from={month_ago}&to={month}"),
        ),
        ("history?cursor(deep)", format!("{history}?cursor={cursor}")),
        (
            "jobs",
            format!("{base}/api/v1/organizations/{org}/backups/jobs"),
        ),
        (
            "jobs/{id}/runs",
            format!("{base}/api/v1/organizations/{org}/backups/jobs/{job}/runs"),
        ),
    ];
    // BENCH_ONLY=history,jobs measures those endpoints alone.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let endpoints: Vec<_> = endpoints
        .into_iter()
        .filter(|(name, _)| only.is_empty() || only.split(',').any(|o| o == *name))
        .collect();
    // One warm-up pass over each, so that the first measured requests do
    // not pay for cold caches and connections.
    for (_, url) in &endpoints {
        drive(&client, url, token, clients, clients).await?;
    }
    // BENCH_SERVER_PID: the server's CPU time per request is printed too
    // (user + system, from /proc), the figure that bounds the throughput.
    let server = std::env::var("BENCH_SERVER_PID")
        .ok()
        .filter(|pid| !pid.is_empty());
    for (name, url) in &endpoints {
        let cpu_before = server.as_deref().map(cpu_seconds).transpose()?;
        let (mut latencies, elapsed) = drive(&client, url, token, clients, requests).await?;
        let cpu = match (cpu_before, server.as_deref()) {
            (Some(before), Some(pid)) => format!(
                "  server CPU {:>5.2} ms/request",
                (cpu_seconds(pid)? - before) * 1000.0 / latencies.len() as f64
            ),
            _ => String::new(),
        };
        latencies.sort();
        let at = |q: f64| {
            latencies[((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1)]
                .as_secs_f64()
                * 1000.0
        };
        println!(
            "{label:<10} {name:<22} {:>8.0} req/s  p50 {:>6.1} ms (target <= 10)  p99 {:>6.1} ms (target <= 50){cpu}",
            latencies.len() as f64 / elapsed.as_secs_f64(),
            at(0.50),
            at(0.99)
        );
    }
    Ok(())
}

/// The user + system CPU seconds process `pid` has used (`/proc/PID/stat`,
/// fields 14 and 15, in clock ticks of 1/100 s).
fn cpu_seconds(pid: &str) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces: count from its ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow::anyhow!("/proc/{pid}/stat: no command name"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i)
            .ok_or_else(|| anyhow::anyhow!("/proc/{pid}/stat: field missing"))?
            .parse::<f64>()?)
    };
    // After ')': state is field 3, so utime (14) and stime (15) are at 11, 12.
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}
