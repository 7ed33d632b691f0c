//! `cairn-bench scheduler JOBS DUE`: JOBS enabled jobs on PostgreSQL
//! (`BENCH_DATABASE_URL`, an empty database), DUE of them due in the same
//! minute, each covering one app with one persistent volume; Redis at
//! `BENCH_REDIS_URL`. Prints, one line each:
//!
//! - the tick time with nothing due (median of 20 ticks);
//! - for one replica, then for three (each with its own connection pool,
//!   ticking at once): the time from the minute boundary until every due
//!   job's run and backup exist, and the Redis round trips per tick.

use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;
use cairn_core::{Cairn, Config, StartMode};
use cairn_entity::{backup, backup_job, backup_job_app, backup_run};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, Set};
use secrecy::SecretString;
use uuid::Uuid;

async fn open(data_dir: &std::path::Path, migrate: bool) -> anyhow::Result<Cairn> {
    let mut config = Config::with_data_dir(data_dir);
    config.database_url = Some(SecretString::from(super::env("BENCH_DATABASE_URL")?));
    config.redis_url = Some(SecretString::from(super::env("BENCH_REDIS_URL")?));
    config.run_migrations = migrate;
    Cairn::open(config, StartMode::Embedded).await
}

/// Inserts `jobs` jobs covering `app_id`; the first `due` are due at `slot`,
/// the others a day later.
pub(crate) async fn create_jobs(
    cairn: &Cairn,
    organization_id: Uuid,
    app_id: Uuid,
    jobs: usize,
    due: usize,
    slot: DateTime<Utc>,
) -> anyhow::Result<Vec<Uuid>> {
    let mut ids = Vec::with_capacity(jobs);
    let mut batch = Vec::new();
    let mut links = Vec::new();
    for i in 0..jobs {
        let id = Uuid::now_v7();
        ids.push(id);
        batch.push(backup_job::ActiveModel {
            id: Set(id),
            organization_id: Set(organization_id),
            name: Set(format!("job {i}")),
            schedule: Set("* * * * *".into()),
            enabled: Set(true),
            target_id: Set(None),
            keep_all: Set(true),
            keep_last: Set(None),
            keep_hourly: Set(None),
            keep_daily: Set(None),
            keep_weekly: Set(None),
            keep_monthly: Set(None),
            keep_yearly: Set(None),
            notify_on_success: Set(false),
            notify_on_failure: Set(true),
            last_run_at: Set(None),
            next_run_at: Set(Some(if i < due {
                slot
            } else {
                slot + chrono::Duration::days(1)
            })),
            auto_created: Set(false),
            compression: Set("zstd".into()),
            encryption: Set("none".into()),
            extra_recipients: Set(None),
            created_at: Set(slot),
            updated_at: Set(slot),
            timezone: Set("UTC".into()),
            starting_deadline_seconds: Set(3600),
            max_duration_seconds: Set(21_600),
            rpo_target_seconds: Set(None),
            rto_target_seconds: Set(None),
            verify_schedule: Set(None),
            verify_mode: Set(cairn_entity::enums::VerifyMode::Read),
            next_verify_at: Set(None),
            schedule_error: Set(None),
            last_success_at: Set(None),
            consecutive_failures: Set(0),
            auto_app_id: Set(None),
        });
        links.push(backup_job_app::ActiveModel {
            job_id: Set(id),
            app_id: Set(app_id),
        });
        if batch.len() == 500 {
            backup_job::Entity::insert_many(std::mem::take(&mut batch))
                .exec(&cairn.db)
                .await?;
            backup_job_app::Entity::insert_many(std::mem::take(&mut links))
                .exec(&cairn.db)
                .await?;
        }
    }
    if !batch.is_empty() {
        backup_job::Entity::insert_many(batch)
            .exec(&cairn.db)
            .await?;
        backup_job_app::Entity::insert_many(links)
            .exec(&cairn.db)
            .await?;
    }
    Ok(ids)
}

/// Makes the due jobs due at `slot` again, without runs.
async fn reset(cairn: &Cairn, due: &[Uuid], slot: DateTime<Utc>) -> anyhow::Result<()> {
    backup::Entity::delete_many().exec(&cairn.db).await?;
    backup_run::Entity::delete_many().exec(&cairn.db).await?;
    for chunk in due.chunks(5000) {
        backup_job::Entity::update_many()
            .col_expr(backup_job::Column::NextRunAt, Expr::value(slot))
            .filter(backup_job::Column::Id.is_in(chunk.iter().copied()))
            .exec(&cairn.db)
            .await?;
    }
    Ok(())
}

fn scheduler(cairn: &Cairn, name: &str) -> cairn_scheduler::Scheduler {
    let locks: Arc<dyn cairn_scheduler::SlotLocks> =
        cairn.redis.clone().expect("BENCH_REDIS_URL sets a Redis");
    cairn_scheduler::Scheduler::new(cairn.clone(), locks, name.to_owned())
}

pub async fn run(jobs: usize, due: usize) -> anyhow::Result<()> {
    let data_dir = std::path::PathBuf::from(super::env("BENCH_DATA_DIR")?);
    let cairn = open(&data_dir, true).await?;
    let now = Utc::now();
    let (org, app) = super::bench_app(&cairn, serde_json::json!({ "name": "data" }), now).await?;
    // A slot in the future, so no real clock interferes.
    let slot = {
        let t = now + chrono::Duration::days(30);
        DateTime::from_timestamp(t.timestamp() - t.timestamp().rem_euclid(60), 0)
            .expect("a valid time")
    };
    eprintln!("[bench] creating {jobs} jobs, {due} due in the same minute");
    let ids = create_jobs(&cairn, org.id, app.id, jobs, due, slot).await?;
    let due_ids = &ids[..due];

    let idle = scheduler(&cairn, "idle");
    let mut idle_times = Vec::new();
    for i in 0..20 {
        let started = Instant::now();
        let report = idle.tick(slot - chrono::Duration::seconds(30 + i)).await?;
        idle_times.push(started.elapsed());
        if report.due != 0 {
            bail!("an idle tick found {} due jobs", report.due);
        }
    }
    idle_times.sort();
    println!(
        "idle tick: {jobs} jobs, nothing due: {:.1} ms (median of 20; target <= 50 ms)",
        idle_times[10].as_secs_f64() * 1000.0
    );

    for (round, replicas) in [1usize, 3].into_iter().enumerate() {
        // Each round its own minute: the previous round's locks still hold.
        let slot = slot + chrono::Duration::minutes(round as i64);
        reset(&cairn, due_ids, slot).await?;
        let mut instances = Vec::new();
        for i in 0..replicas {
            let own = open(&data_dir, false).await?;
            instances.push(scheduler(&own, &format!("replica-{i}")));
        }
        let trips_before: u64 = instances.iter().map(|s| s.lock_round_trips()).sum();
        let started = Instant::now();
        let reports = futures::future::join_all(
            instances
                .iter()
                .map(|s| s.tick(slot + chrono::Duration::milliseconds(500))),
        )
        .await;
        let elapsed = started.elapsed();
        let mut fired = 0;
        for report in reports {
            fired += report?.fired;
        }
        let runs = backup_run::Entity::find()
            .filter(backup_run::Column::ScheduledFor.eq(slot))
            .count(&cairn.db)
            .await?;
        let backups = backup::Entity::find().count(&cairn.db).await?;
        if fired != due || runs as usize != due || backups as usize != due {
            bail!("{replicas} replica(s): fired {fired}, {runs} runs, {backups} backups for {due} due jobs");
        }
        let trips: u64 = instances.iter().map(|s| s.lock_round_trips()).sum::<u64>() - trips_before;
        println!(
            "{replicas} replica(s): {due} runs (one backup each) exist {:.2} s after the minute (target <= 10 s with 3); Redis round trips per tick: {:.1}",
            elapsed.as_secs_f64(),
            trips as f64 / replicas as f64
        );
    }
    Ok(())
}
