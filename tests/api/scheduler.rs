//! The scheduler's tick as a function of `now`, with chosen clocks: several
//! replicas on one database and one Redis, daylight-saving changes, missed
//! slots, long backups and unreadable schedules.

use std::collections::BTreeMap;
use std::sync::Arc;

use cairn_entity::{backup_job, backup_run};
use cairn_scheduler::{LocalLocks, RedisLocks, Scheduler, SlotLocks};
use chrono::{DateTime, Duration, TimeZone, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{cairn_process, env, fixture, free_port, spawn_app_with, Backend, Fixture};

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

/// Creates a job through the API; returns its id.
async fn job(f: &Fixture, body: serde_json::Value) -> Uuid {
    let mut body = body;
    body["keepLast"] = json!(1);
    Uuid::parse_str(&f.create_job(body).await).unwrap()
}

/// Sets the next run of `jobs` to `at`, as if they had been created then.
async fn due_at(f: &Fixture, jobs: &[Uuid], at: DateTime<Utc>) {
    backup_job::Entity::update_many()
        .col_expr(backup_job::Column::NextRunAt, Expr::value(at))
        .filter(backup_job::Column::Id.is_in(jobs.iter().copied()))
        .exec(&f.app.cairn.db)
        .await
        .unwrap();
}

/// The job as the API shows it.
async fn job_view(f: &Fixture, id: Uuid) -> serde_json::Value {
    f.app
        .get(&f.org.path(&format!("/backups/jobs/{id}")), &f.org.viewer)
        .await
        .expect(200)
        .clone()
}

/// Every run of `job`, oldest slot first.
async fn runs_of(f: &Fixture, job: Uuid) -> Vec<backup_run::Model> {
    backup_run::Entity::find()
        .filter(backup_run::Column::JobId.eq(job))
        .order_by_asc(backup_run::Column::ScheduledFor)
        .all(&f.app.cairn.db)
        .await
        .unwrap()
}

fn scheduler(f: &Fixture, locks: Arc<dyn SlotLocks>, name: &str) -> Scheduler {
    Scheduler::new(f.app.cairn.clone(), locks, name.to_owned())
}

/// A small deterministic generator (the test must replay the same way).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound
    }
}

/// Five replicas on one PostgreSQL and one Redis, clocks off by 0, ±30 s
/// and ±70 s (beyond the lock's TTL), one of them stepping back an hour,
/// Redis flushed between replicas now and then: 10 jobs × 100 minutes —
/// 1 000 slots — each recorded exactly once, none missed.
#[tokio::test]
async fn replicas_with_skewed_clocks_fire_every_slot_once() {
    let f = fixture(Backend::Postgres, "acme").await;
    let mut jobs = Vec::new();
    for i in 0..10 {
        jobs.push(
            job(
                &f,
                json!({ "name": format!("j{i}"), "schedule": "* * * * *", "appIds": [] }),
            )
            .await,
        );
    }
    let start = {
        let now = Utc::now();
        Utc.timestamp_opt(now.timestamp() - now.timestamp().rem_euclid(60) + 60, 0)
            .unwrap()
    };
    due_at(&f, &jobs, start).await;
    let redis_url = env("TEST_REDIS_URL");
    let replicas: Vec<Scheduler> = (0..5)
        .map(|i| {
            scheduler(
                &f,
                Arc::new(RedisLocks::new(&redis_url).unwrap()),
                &format!("replica-{i}"),
            )
        })
        .collect();
    let offsets = [0i64, 30, -30, 70, -70];
    let flusher = redis::Client::open(redis_url.as_str()).unwrap();
    let mut flush = flusher.get_multiplexed_async_connection().await.unwrap();
    let mut rng = Lcg(7);
    let minutes = 100;
    let mut locked_elsewhere = 0;
    let mut already = 0;
    for minute in 0..minutes {
        let mut order: Vec<usize> = (0..5).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.next(i as u64 + 1) as usize);
        }
        let clocks: Vec<(usize, DateTime<Utc>)> = order
            .into_iter()
            .map(|replica| {
                let mut now = start
                    + Duration::minutes(minute)
                    + Duration::seconds(offsets[replica] + rng.next(20) as i64);
                if replica == 2 && minute >= 40 {
                    now -= Duration::hours(1);
                }
                (replica, now)
            })
            .collect();
        let reports = if minute % 2 == 0 {
            // The replicas tick at once and race for the same slots.
            futures::future::join_all(
                clocks
                    .iter()
                    .map(|(replica, now)| replicas[*replica].tick(*now)),
            )
            .await
        } else {
            // One after another, Redis flushed in between now and then.
            let mut reports = Vec::new();
            for (position, (replica, now)) in clocks.iter().enumerate() {
                if minute % 3 == 1 && position == 2 {
                    let _: () = redis::cmd("FLUSHALL")
                        .query_async(&mut flush)
                        .await
                        .unwrap();
                }
                reports.push(replicas[*replica].tick(*now).await);
            }
            reports
        };
        for report in reports {
            let report = report.unwrap();
            assert!(!report.lock_service_down, "{report:?}");
            assert_eq!(report.missed, 0, "minute {minute}: {report:?}");
            locked_elsewhere += report.locked_elsewhere;
            already += report.already_recorded;
        }
    }
    let last = start + Duration::minutes(minutes - 1);
    for job in &jobs {
        let runs = runs_of(&f, *job).await;
        let mut by_slot: BTreeMap<DateTime<Utc>, usize> = BTreeMap::new();
        for run in &runs {
            *by_slot.entry(run.scheduled_for).or_default() += 1;
            assert_ne!(
                run.status,
                cairn_entity::enums::RunStatus::Missed,
                "{run:?}"
            );
            assert_eq!(run.trigger, cairn_entity::enums::Trigger::Schedule);
        }
        assert!(by_slot.values().all(|n| *n == 1));
        let slots: Vec<DateTime<Utc>> = by_slot.into_keys().collect();
        assert_eq!(slots[0], start, "job {job}");
        for pair in slots.windows(2) {
            assert_eq!(
                pair[1] - pair[0],
                Duration::minutes(1),
                "a slot was skipped"
            );
        }
        assert!(*slots.last().unwrap() >= last, "job {job}: {slots:?}");
    }
    // The locks did their part: racing replicas found slots locked by
    // others. (Slots another replica recorded: {already}.)
    assert!(locked_elsewhere > 0, "{already}");
    let round_trips: u64 = replicas.iter().map(|r| r.lock_round_trips()).sum();
    assert!(
        round_trips <= 5 * minutes as u64,
        "one pipelined round trip per tick at most: {round_trips}"
    );
}

/// A daily 02:30 job in Europe/Berlin, ticked every minute across both
/// daylight-saving changes of 2026: once a day, at 03:00 CEST on the day
/// 02:30 does not exist, at the first 02:30 on the day it happens twice.
#[tokio::test]
async fn daylight_saving_changes_fire_once() {
    let f = fixture(Backend::Sqlite, "acme").await;
    let id = job(
        &f,
        json!({ "name": "berlin", "schedule": "30 2 * * *", "timezone": "Europe/Berlin", "appIds": [] }),
    )
    .await;
    let replica = scheduler(&f, Arc::new(LocalLocks::default()), "solo");
    for (from, to) in [
        ("2026-03-27T12:00:00Z", "2026-03-30T12:00:00Z"),
        ("2026-10-23T12:00:00Z", "2026-10-26T12:00:00Z"),
    ] {
        let (from, to) = (utc(from), utc(to));
        due_at(&f, &[id], from).await;
        // The job was created at `from`: its next slot is the one after.
        backup_job::Entity::update_many()
            .col_expr(
                backup_job::Column::NextRunAt,
                Expr::value(
                    cairn_core::runs::schedule::JobSchedule::parse("30 2 * * *", "Europe/Berlin")
                        .unwrap()
                        .next_after(from),
                ),
            )
            .filter(backup_job::Column::Id.eq(id))
            .exec(&f.app.cairn.db)
            .await
            .unwrap();
        let mut now = from;
        while now < to {
            replica.tick(now + Duration::seconds(2)).await.unwrap();
            now += Duration::minutes(1);
        }
    }
    let slots: Vec<String> = runs_of(&f, id)
        .await
        .into_iter()
        .map(|run| run.scheduled_for.to_rfc3339())
        .collect();
    assert_eq!(
        slots,
        [
            "2026-03-28T01:30:00+00:00",
            "2026-03-29T01:00:00+00:00",
            "2026-03-30T00:30:00+00:00",
            "2026-10-24T00:30:00+00:00",
            "2026-10-25T00:30:00+00:00",
            "2026-10-26T01:30:00+00:00",
        ]
    );
}

/// Every scheduler was down for three hours: the next tick fires the most
/// recent slot (within the starting deadline) and records the rest as one
/// `missed` run; with a short deadline nothing fires late.
#[tokio::test]
async fn missed_slots_become_one_record() {
    let f = fixture(Backend::Sqlite, "acme").await;
    let lenient = job(
        &f,
        json!({ "name": "lenient", "schedule": "*/5 * * * *", "appIds": [] }),
    )
    .await;
    let strict = job(
        &f,
        json!({ "name": "strict", "schedule": "*/5 * * * *", "startingDeadlineSeconds": 60, "appIds": [] }),
    )
    .await;
    let start = utc("2026-05-01T10:00:00Z");
    due_at(&f, &[lenient, strict], start).await;
    let replica = scheduler(&f, Arc::new(LocalLocks::default()), "solo");
    let first = replica.tick(start + Duration::seconds(1)).await.unwrap();
    assert_eq!(first.fired, 2, "{first:?}");
    // Down for three hours; back two minutes after a slot.
    let back = start + Duration::hours(3) + Duration::minutes(2);
    let report = replica.tick(back).await.unwrap();
    assert_eq!((report.fired, report.missed), (1, 2), "{report:?}");

    let runs = runs_of(&f, lenient).await;
    let statuses: Vec<(&str, String)> = runs
        .iter()
        .map(|r| (r.status.as_str(), r.scheduled_for.to_rfc3339()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("skipped", "2026-05-01T10:00:00+00:00".to_owned()),
            ("missed", "2026-05-01T10:05:00+00:00".to_owned()),
            ("skipped", "2026-05-01T13:00:00+00:00".to_owned()),
        ],
        "the first and the catch-up run (skipped: the job covers no volume), one missed record"
    );
    let missed = &runs[1];
    assert_eq!(missed.missed_count, Some(35));
    assert_eq!(missed.missed_from, Some(utc("2026-05-01T10:05:00Z")));
    assert_eq!(missed.missed_to, Some(utc("2026-05-01T12:55:00Z")));
    assert!(missed.reason.as_deref().unwrap().contains("fired late"));
    // The strict job's latest slot is two minutes old: past its deadline.
    let strict_runs = runs_of(&f, strict).await;
    assert_eq!(strict_runs.len(), 2);
    assert_eq!(
        strict_runs[1].status,
        cairn_entity::enums::RunStatus::Missed
    );
    assert_eq!(strict_runs[1].missed_count, Some(36));
    // Both are back on schedule.
    let next = replica
        .tick(start + Duration::hours(3) + Duration::minutes(5) + Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!((next.fired, next.missed), (2, 0), "{next:?}");
    // The API lists the runs, the missed record with its range.
    let listed = f
        .app
        .get(
            &f.org.path(&format!("/backups/jobs/{lenient}/runs")),
            &f.org.viewer,
        )
        .await;
    let items = listed.expect(200)["items"].as_array().unwrap().clone();
    let statuses: Vec<&str> = items
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["skipped", "skipped", "missed", "skipped"],
        "newest first"
    );
    assert_eq!(items[2]["missedCount"], 35);
    assert_eq!(items[2]["missedTo"], "2026-05-01T12:55:00Z");
    assert!(items.iter().all(|r| r["trigger"] == "schedule"));
    // The API shows the job's settings.
    let view = f
        .app
        .get(
            &f.org.path(&format!("/backups/jobs/{strict}")),
            &f.org.viewer,
        )
        .await;
    let view = view.expect(200);
    assert_eq!(view["startingDeadlineSeconds"], 60);
    assert_eq!(view["timezone"], "UTC");
}

/// A job whose backup outlasts its period keeps one active run; the slots
/// that come meanwhile are recorded as skipped, with the reason.
#[tokio::test]
async fn a_slow_backup_keeps_one_active_run() {
    let f = fixture(Backend::Sqlite, "acme").await;
    std::fs::write(f.volume_dir("shop", "blue", "data").join("f.txt"), b"x").unwrap();
    let app = f.create_shop().await;
    let id = job(
        &f,
        json!({ "name": "minutely", "schedule": "* * * * *", "appIds": [app] }),
    )
    .await;
    let start = utc("2026-05-01T10:00:00Z");
    due_at(&f, &[id], start).await;
    f.create_channel(
        json!({ "name": "hook", "type": "webhook", "config": { "url": "http://127.0.0.1:9/hook" } }),
    )
    .await;
    let replica = scheduler(&f, Arc::new(LocalLocks::default()), "solo");
    // No worker runs: the first run stays active.
    for minute in 0..4 {
        replica
            .tick(start + Duration::minutes(minute) + Duration::seconds(1))
            .await
            .unwrap();
    }
    let runs = runs_of(&f, id).await;
    let statuses: Vec<&str> = runs.iter().map(|r| r.status.as_str()).collect();
    assert_eq!(statuses, ["running", "skipped", "skipped", "skipped"]);
    assert!(runs[1]
        .reason
        .as_deref()
        .unwrap()
        .contains(&runs[0].id.to_string()));
    // Skipped slots count against the job's health, and are notified from
    // the second in a row (the first may be a run a little slow).
    assert_eq!(job_view(&f, id).await["consecutiveFailures"], 3);
    let deliveries = f
        .app
        .get(&f.org.path("/notifications/deliveries"), &f.org.viewer)
        .await;
    let notified: Vec<String> = deliveries.expect(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["event"] == "backup.run.skipped")
        .map(|d| d["runId"].as_str().unwrap().to_owned())
        .collect();
    let mut expected = vec![runs[2].id.to_string(), runs[3].id.to_string()];
    let mut notified_sorted = notified.clone();
    notified_sorted.sort();
    expected.sort();
    assert_eq!(notified_sorted, expected);

    // The job's health follows its runs: the volume is gone, the run fails.
    std::fs::remove_dir_all(f.volumes.path().join("shop-blue_data")).unwrap();
    f.drain().await;
    let failed = job_view(&f, id).await;
    assert_eq!(failed["consecutiveFailures"], 4, "{failed}");
    assert_eq!(failed["lastSuccessAt"], serde_json::Value::Null);
    // Its next slot passed long ago and nothing fired it: overdue.
    assert_eq!(failed["overdue"], true, "{failed}");
    std::fs::write(f.volume_dir("shop", "blue", "data").join("f.txt"), b"x").unwrap();
    replica
        .tick(start + Duration::minutes(4) + Duration::seconds(1))
        .await
        .unwrap();
    f.drain().await;
    let healthy = job_view(&f, id).await;
    assert_eq!(healthy["consecutiveFailures"], 0, "{healthy}");
    assert!(healthy["lastSuccessAt"].is_string(), "{healthy}");
    assert_eq!(healthy["lastRunAt"], "2026-05-01T10:04:00Z");
}

/// A schedule or zone that cannot be read (an older version wrote it) flags
/// its job and does not stop the tick for the others.
#[tokio::test]
async fn an_unreadable_schedule_flags_its_job_only() {
    let f = fixture(Backend::Sqlite, "acme").await;
    let broken = job(
        &f,
        json!({ "name": "broken", "schedule": "0 2 * * *", "appIds": [] }),
    )
    .await;
    let zone = job(
        &f,
        json!({ "name": "zone", "schedule": "0 2 * * *", "appIds": [] }),
    )
    .await;
    let fine = job(
        &f,
        json!({ "name": "fine", "schedule": "0 2 * * *", "appIds": [] }),
    )
    .await;
    let start = utc("2026-05-01T02:00:00Z");
    due_at(&f, &[broken, zone, fine], start).await;
    for (id, column, value) in [
        (broken, backup_job::Column::Schedule, "every night"),
        (zone, backup_job::Column::Timezone, "Mars/Olympus"),
    ] {
        backup_job::Entity::update_many()
            .col_expr(column, Expr::value(value))
            .filter(backup_job::Column::Id.eq(id))
            .exec(&f.app.cairn.db)
            .await
            .unwrap();
    }
    let replica = scheduler(&f, Arc::new(LocalLocks::default()), "solo");
    let report = replica.tick(start + Duration::seconds(1)).await.unwrap();
    assert_eq!((report.fired, report.flagged), (1, 2), "{report:?}");
    assert_eq!(runs_of(&f, fine).await.len(), 1);
    for id in [broken, zone] {
        assert!(runs_of(&f, id).await.is_empty());
        let view = f
            .app
            .get(&f.org.path(&format!("/backups/jobs/{id}")), &f.org.viewer)
            .await;
        let view = view.expect(200);
        assert!(view["scheduleError"].as_str().is_some(), "{view}");
        assert_eq!(view["nextRunAt"], serde_json::Value::Null);
    }
}

/// With Redis configured but unreachable, ticks go on with the database
/// fence alone and say so; `/readyz` reports the outage.
#[tokio::test]
async fn an_unreachable_redis_leaves_the_database_fence() {
    let volumes = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let port = free_port();
    let app = spawn_app_with(Backend::Sqlite, move |config| {
        config.redis_url = Some(secrecy::SecretString::from(format!(
            "redis://:not-the-password@127.0.0.1:{port}/0"
        )));
    })
    .await;
    let org = app.org("acme").await;
    let f = Fixture { app, volumes, org };
    let ready = f
        .app
        .request(reqwest::Method::GET, "/readyz", None, None)
        .await;
    ready.expect(503);
    assert!(ready.body["detail"].as_str().unwrap().contains("Redis"));
    assert!(!ready.text.contains("not-the-password"));

    let id = job(
        &f,
        json!({ "name": "n", "schedule": "* * * * *", "appIds": [] }),
    )
    .await;
    let start = utc("2026-05-01T10:00:00Z");
    due_at(&f, &[id], start).await;
    let redis = f.app.cairn.redis.clone().unwrap();
    let one = scheduler(&f, redis.clone(), "one");
    let two = scheduler(&f, redis, "two");
    for minute in 0..3 {
        let now = start + Duration::minutes(minute) + Duration::seconds(1);
        let (a, b) = futures::join!(one.tick(now), two.tick(now));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!(a.lock_service_down && b.lock_service_down);
        assert_eq!(a.fired + b.fired, 1, "minute {minute}: {a:?} {b:?}");
    }
    assert_eq!(runs_of(&f, id).await.len(), 3);
}

/// Real processes, real time: three `cairn scheduler`s and two `cairn
/// worker`s on PostgreSQL and Redis, 200 jobs on `* * * * *` backing up a
/// volume, for four slots. One scheduler is stopped (SIGSTOP) for 90 s
/// across a minute boundary and resumed. Every (job, minute) has exactly
/// one run, and none is missed.
#[tokio::test]
async fn scheduler_processes_fire_each_minute_once() {
    use std::process::Child;
    let f = fixture(Backend::Postgres, "acme").await;
    std::fs::write(f.volume_dir("shop", "blue", "data").join("f.txt"), b"x").unwrap();
    let app = f.create_shop().await;
    let mut jobs = Vec::new();
    for i in 0..200 {
        jobs.push(
            job(
                &f,
                json!({ "name": format!("j{i}"), "schedule": "* * * * *", "appIds": [app] }),
            )
            .await,
        );
    }
    // Every job's first slot is the next minute; start 20 s before it at
    // the latest, so that the processes are up when it comes.
    let mut first = backup_job::Entity::find_by_id(jobs[0])
        .one(&f.app.cairn.db)
        .await
        .unwrap()
        .unwrap()
        .next_run_at
        .unwrap();
    if first - Utc::now() < Duration::seconds(20) {
        first += Duration::minutes(1);
        due_at(&f, &jobs, first).await;
    }
    let redis = vec![("CAIRN_REDIS_URL", env("TEST_REDIS_URL"))];
    let mut schedulers: Vec<Child> = (0..3)
        .map(|_| cairn_process(&f, "scheduler", &[], &redis))
        .collect();
    let mut workers: Vec<Child> = (0..2)
        .map(|_| cairn_process(&f, "worker", &["--concurrency".into(), "2".into()], &redis))
        .collect();
    let sleep_until = |at: DateTime<Utc>| async move {
        let wait = (at - Utc::now()).to_std().unwrap_or_default();
        tokio::time::sleep(wait).await;
    };
    let signal = |child: &Child, signal: &str| {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    };
    // Stopped from 30 s after the first slot for 90 s: across the second
    // and third minute boundaries' neighbourhood.
    sleep_until(first + Duration::seconds(30)).await;
    signal(&schedulers[0], "STOP");
    sleep_until(first + Duration::seconds(120)).await;
    signal(&schedulers[0], "CONT");
    let last = first + Duration::minutes(3);
    sleep_until(last + Duration::seconds(15)).await;
    for child in schedulers.iter_mut().chain(workers.iter_mut()) {
        signal(child, "TERM");
    }
    for child in schedulers.iter_mut().chain(workers.iter_mut()) {
        let status = child.wait().unwrap();
        assert!(status.success(), "a process ended with {status}");
    }
    let mut fired = 0;
    for job in &jobs {
        let runs = runs_of(&f, *job).await;
        let slots: Vec<DateTime<Utc>> = runs.iter().map(|r| r.scheduled_for).collect();
        let expected: Vec<DateTime<Utc>> = (0..4).map(|m| first + Duration::minutes(m)).collect();
        assert_eq!(slots, expected, "job {job}: {runs:?}");
        assert!(
            runs.iter()
                .all(|r| r.status != cairn_entity::enums::RunStatus::Missed),
            "{runs:?}"
        );
        fired += runs
            .iter()
            .filter(|r| r.status != cairn_entity::enums::RunStatus::Skipped)
            .count();
    }
    // The workers ran the backups (a slot whose previous run was still
    // active is skipped, never doubled).
    assert!(fired >= jobs.len(), "{fired} runs with backups");
}
