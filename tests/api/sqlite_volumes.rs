//! `sqlite` volumes: each listed database is taken through SQLite's online
//! backup API while the app writes, and comes back whole.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::helpers::{fixture_with, Backend};

/// The app: a WAL-mode database that commits ten rows at a time, batch
/// after batch, until told to stop; returns how many batches it committed.
fn writer(path: std::path::PathBuf, stop: Arc<AtomicBool>, batches: Arc<AtomicU64>) -> u64 {
    let mut db = rusqlite::Connection::open(&path).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    let mut batch = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let tx = db.transaction().unwrap();
        for row in 0..10 {
            tx.execute(
                "INSERT INTO entries (batch, body) VALUES (?1, ?2)",
                rusqlite::params![
                    batch as i64,
                    format!("batch {batch} row {row} {}", "x".repeat(200))
                ],
            )
            .unwrap();
        }
        tx.commit().unwrap();
        batch += 1;
        batches.store(batch, Ordering::SeqCst);
    }
    batch
}

/// Rows, the highest batch, and `integrity_check` of a database file.
fn state(path: &std::path::Path) -> (i64, i64, String) {
    let db = rusqlite::Connection::open(path).unwrap();
    let integrity: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    let (rows, top): (i64, i64) = db
        .query_row(
            "SELECT count(*), coalesce(max(batch), -1) FROM entries",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    (rows, top, integrity)
}

#[tokio::test]
async fn a_database_written_during_the_backup_comes_back_at_one_committed_state() {
    let scratch = tempfile::tempdir().unwrap();
    let configured = scratch.path().join("verify");
    let f = fixture_with(Backend::Sqlite, "lite", move |config| {
        config.verification.scratch_dir = Some(configured);
    })
    .await;
    let data = f.volume_dir("notes", "blue", "data");
    std::fs::create_dir_all(data.join("db")).unwrap();
    std::fs::write(data.join("readme.txt"), b"notes").unwrap();
    let database = data.join("db/app.db");
    {
        let db = rusqlite::Connection::open(&database).unwrap();
        db.pragma_update(None, "journal_mode", "WAL").unwrap();
        db.execute_batch(
            "CREATE TABLE entries (id INTEGER PRIMARY KEY, batch INTEGER NOT NULL, body TEXT NOT NULL)",
        )
        .unwrap();
    }

    // Bad settings are refused, naming the field.
    for (volume, field) in [
        (
            json!({ "name": "data", "kind": "sqlite" }),
            "volumes[0].databases",
        ),
        (
            json!({ "name": "data", "kind": "sqlite", "databases": ["../escape.db"] }),
            "volumes[0].databases[0]",
        ),
        (
            json!({ "name": "data", "kind": "sqlite", "databases": ["db/app.db-wal"] }),
            "volumes[0].databases[0]",
        ),
        (
            json!({ "name": "data", "databases": ["db/app.db"] }),
            "volumes[0].databases",
        ),
    ] {
        let reply = f
            .app
            .post(
                &f.org.path("/apps"),
                &f.org.admin,
                &json!({ "name": "notes", "volumes": [volume] }),
            )
            .await;
        reply.expect_field_error(422, field);
    }
    let app = f
        .create_app(json!({ "name": "notes", "volumes": [
            { "name": "data", "kind": "sqlite", "databases": ["db/app.db"] }] }))
        .await;
    let job = f
        .create_job_for(&app, json!({ "name": "notes", "keepLast": 5 }))
        .await;

    // The app writes throughout the backup.
    let stop = Arc::new(AtomicBool::new(false));
    let batches = Arc::new(AtomicU64::new(0));
    let app_writer = {
        let (path, stop, batches) = (database.clone(), stop.clone(), batches.clone());
        std::thread::spawn(move || writer(path, stop, batches))
    };
    while batches.load(Ordering::SeqCst) < 50 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let record = f.run_to_end(&job).await;
    let during = batches.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    let committed = app_writer.join().unwrap();
    assert_eq!(record["status"], "success", "{record}");
    assert!(
        committed > 50,
        "the app kept writing during the backup ({during} batches when it ended)"
    );
    let sqlite = &record["manifest"]["sqlite"][0];
    assert_eq!(sqlite["path"], "db/app.db");
    assert_eq!(sqlite["tables"][0]["name"], "entries");
    let recorded_rows = sqlite["tables"][0]["rows"].as_i64().unwrap();
    assert!(recorded_rows >= 500 && recorded_rows % 10 == 0, "{sqlite}");

    // What the archive holds, as tar lists it: the snapshot under the
    // database's name, none of its live companions.
    let archive = f.stored(record["storagePath"].as_str().unwrap());
    let listed = std::process::Command::new("tar")
        .arg("--zstd")
        .arg("-tf")
        .arg(&archive)
        .output()
        .unwrap();
    assert!(listed.status.success());
    let listed = String::from_utf8(listed.stdout).unwrap();
    let names: Vec<&str> = listed.lines().collect();
    assert!(names.contains(&"db/app.db"), "{names:?}");
    assert!(names.contains(&"readme.txt"), "{names:?}");
    assert!(
        !names
            .iter()
            .any(|n| n.ends_with("-wal") || n.ends_with("-shm")),
        "{names:?}"
    );

    // Restored: sound, and exactly one committed state — whole batches,
    // the rows the backup counted.
    let restored = f
        .restore_to_end(record["id"].as_str().unwrap(), json!({}))
        .await;
    assert_eq!(restored["status"], "success", "{restored}");
    assert_eq!(restored["summary"]["sqliteDatabases"], 1, "{restored}");
    assert!(
        !std::path::Path::new(&format!("{}-wal", database.display())).exists(),
        "the live -wal went aside with the replaced entries"
    );
    let (rows, top, integrity) = state(&database);
    assert_eq!(integrity, "ok");
    assert_eq!(rows, recorded_rows);
    assert_eq!(rows, (top + 1) * 10, "whole batches only");

    // A restore-mode verification checks the database too.
    let verification = f
        .app
        .post(
            &f.org.path(&format!(
                "/backups/history/{}/verify",
                record["id"].as_str().unwrap()
            )),
            &f.org.operator,
            &json!({ "mode": "restore" }),
        )
        .await
        .expect(202)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    f.drain().await;
    let verified = f.verification(&verification).await;
    assert_eq!(verified["status"], "success", "{verified}");
    let check = verified["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "sqlite:db/app.db")
        .unwrap_or_else(|| panic!("{verified}"))
        .clone();
    assert_eq!(check["ok"], true, "{check}");

    // A database reached through a symlink is never read.
    std::fs::remove_file(&database).unwrap();
    std::os::unix::fs::symlink(f.app.cairn.config.data_dir.join("cairn.db"), &database).unwrap();
    let refused = f.run_to_end(&job).await;
    assert_eq!(refused["status"], "failed", "{refused}");
    assert_eq!(refused["errorCode"], "volume_unreadable", "{refused}");
    assert!(
        refused["errorMessage"]
            .as_str()
            .unwrap()
            .contains("symlink"),
        "{refused}"
    );
}
