//! Free space before a backup: a local target without room for the
//! volume's previous archive fails the backup at once, writing nothing;
//! below `disk.warn_free_mb` the backup's log warns for the target and the
//! data directory, and the metrics carry the figures.

use sea_orm::{ActiveValue, EntityTrait};
use serde_json::{json, Value};

use crate::helpers::{fixture, fixture_with, restorable_volume, Backend};

/// The archives (`*.tar.zst`) under the app's data directory, where the
/// system default local target keeps them.
fn archives(root: &std::path::Path) -> usize {
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tar.zst"))
        .count()
}

fn log_text(backup: &Value) -> String {
    backup["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|line| format!("{} {}", line["level"], line["message"]))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn a_backup_that_would_not_fit_fails_before_writing() {
    let f = fixture(Backend::Sqlite, "disk-full").await;
    let shop = f.create_shop().await;
    restorable_volume(&f.volume_dir("shop", "blue", "data"), 1);
    let job = f
        .create_job_for(&shop, json!({ "name": "nightly", "keepLast": 5 }))
        .await;
    let first = f.run_to_end(&job).await;
    assert_eq!(first["status"], "success", "{first}");
    let data_dir = f.app.cairn.config.data_dir.clone();
    assert_eq!(archives(&data_dir), 1);
    // The estimate of the next archive is the previous one's size: make it
    // larger than the disk can hold.
    let id = first["id"].as_str().unwrap();
    cairn_entity::backup::Entity::update(cairn_entity::backup::ActiveModel {
        id: ActiveValue::Unchanged(id.parse().unwrap()),
        archive_size: ActiveValue::Set(Some(i64::MAX / 2)),
        ..Default::default()
    })
    .exec(&f.app.cairn.db)
    .await
    .unwrap();
    let second = f.run_to_end(&job).await;
    assert_eq!(second["status"], "failed", "{second}");
    assert_eq!(second["errorCode"], "insufficient_space");
    let message = second["errorMessage"].as_str().unwrap();
    assert!(
        message.contains("free") && message.contains("previous archive took"),
        "{message}"
    );
    assert_eq!(archives(&data_dir), 1, "nothing was written");
}

/// Mounting a small file system needs privileges a test cannot count on, so
/// the low-space warning is triggered by a threshold above the free space.
#[tokio::test]
async fn low_space_warns_in_the_log_and_the_metrics_measure_it() {
    let f = fixture_with(Backend::Sqlite, "disk-low", |config| {
        config.disk.warn_free_mb = u64::MAX / (2 * 1024 * 1024);
    })
    .await;
    let shop = f.create_shop().await;
    restorable_volume(&f.volume_dir("shop", "blue", "data"), 1);
    let job = f
        .create_job_for(&shop, json!({ "name": "nightly", "keepLast": 5 }))
        .await;
    let backup = f.run_to_end(&job).await;
    assert_eq!(backup["status"], "success", "{backup}");
    let log = log_text(&backup);
    assert!(
        log.contains("\"warn\" \"target 'System default' has")
            && log.contains("below disk.warn_free_mb"),
        "{log}"
    );
    assert!(
        log.contains("\"warn\" \"Cairn's data directory has"),
        "{log}"
    );
    let target = backup["targetId"].as_str().unwrap();
    let metrics = f
        .app
        .client
        .get(f.app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with(&format!(
                "cairn_target_free_bytes{{target_id=\"{target}\"}}"
            ))
        })
        .unwrap_or_else(|| panic!("no free-space figure for the target in:\n{metrics}"));
    let free: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    let measured = cairn_core::disk::free_bytes(&f.app.cairn.config.data_dir).unwrap() as f64;
    assert!(
        free > 0.0 && (free - measured).abs() < 256.0 * 1024.0 * 1024.0,
        "{free} vs {measured}"
    );
    assert!(metrics.contains("cairn_data_dir_free_bytes "), "{metrics}");
}
