//! Work starts at once: an idle worker whose poll interval is a minute
//! claims a backup requested through the API within moments — woken in
//! process on SQLite, and through `NOTIFY cairn_work` on PostgreSQL by a
//! worker of another `Cairn` (another process, as far as it can tell).

use std::time::{Duration, Instant};

use cairn_core::{Cairn, StartMode};
use cairn_worker::{Worker, WorkerOptions};
use serde_json::json;
use tokio::sync::watch;

use crate::helpers::{fixture, restorable_volume, unique, Backend};

async fn requested_work_starts_at_once(backend: Backend) {
    let f = fixture(backend, "prompt").await;
    restorable_volume(&f.volume_dir("shop", "blue", "data"), 1);
    let app = f.create_shop().await;
    let job = f
        .create_job_for(&app, json!({ "name": "prompt", "keepLast": 3 }))
        .await;
    // On PostgreSQL the worker shares nothing with the API but the
    // database: only the notification can wake it.
    let cairn = match backend {
        Backend::Sqlite => f.app.cairn.clone(),
        Backend::Postgres => Cairn::open((*f.app.cairn.config).clone(), StartMode::Embedded)
            .await
            .expect("a second Cairn"),
    };
    let worker = Worker::new(
        cairn,
        WorkerOptions {
            concurrency: 1,
            lease: Duration::from_secs(30),
            poll: Duration::from_secs(60),
            owner: unique("idle"),
        },
    );
    let (stop, stopped) = watch::channel(false);
    let running = tokio::spawn(async move { worker.run(stopped).await });
    // The worker has looked once, found nothing, and sleeps its minute.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let requested = Instant::now();
    let run = f.run(&job).await;
    let backup = run["backups"][0]["id"].as_str().unwrap().to_owned();
    let claimed_after = loop {
        let record = f.backup(&backup).await;
        if record["status"] != "pending" {
            break requested.elapsed();
        }
        assert!(
            requested.elapsed() < Duration::from_secs(20),
            "still pending after 20 s: the worker was not woken"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    println!("claimed {} ms after the request", claimed_after.as_millis());
    assert!(
        claimed_after < Duration::from_secs(5),
        "claimed after {claimed_after:?}, not at once (the poll is a minute)"
    );
    stop.send(true).unwrap();
    running.await.unwrap();
}

crate::both_backends!(requested_work_starts_at_once);
