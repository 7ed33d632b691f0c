//! Orphan sweeps, both ways: objects no record names are listed (and
//! deleted only after `orphans.delete_after_days` as orphans), and
//! records whose archive is gone become `missing` — notified — and
//! `success` again when it is back.

use chrono::{TimeZone, Utc};
use serde_json::{json, Value};

use crate::helpers::{fixture_with, unique, Backend, Fixture, Receiver};
use crate::notifications::{check_against_schema, deliveries, dispatch, verify_signature};

async fn sweep(f: &Fixture, target: &str) -> Value {
    f.app
        .post(
            &format!("/api/v1/system/backups/targets/{target}/orphans/sweep"),
            &f.app.admin_token,
            &json!({}),
        )
        .await
        .expect(200)
        .clone()
}

async fn listed(f: &Fixture, target: &str) -> Value {
    f.app
        .get(
            &format!("/api/v1/system/backups/targets/{target}/orphans"),
            &f.app.admin_token,
        )
        .await
        .expect(200)
        .clone()
}

fn with_suffix(path: &std::path::Path, suffix: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("{}{suffix}", path.display()))
}

async fn orphans_both_ways(backend: Backend) {
    let f = fixture_with(backend, "tidy", |config| {
        config.orphans.delete_after_days = Some(2);
    })
    .await;
    let webhook = Receiver::start(vec![]).await;
    let secret = format!("whsec-{}", unique("s"));
    f.create_channel(
        json!({ "name": "hook", "type": "webhook", "config": { "url": webhook.url, "secret": secret } }),
    )
    .await;
    crate::helpers::restorable_volume(&f.volume_dir("shop", "blue", "data"), 1);
    let app_id = f.create_shop().await;
    let job = f
        .create_job_for(&app_id, json!({ "name": "nightly", "keepLast": 5 }))
        .await;
    let first = f.run_to_end(&job).await;
    let second = f.run_to_end(&job).await;
    assert_eq!(second["status"], "success", "{second}");
    let target = first["targetId"].as_str().unwrap().to_owned();
    let first_file = f.stored(first["storagePath"].as_str().unwrap());
    let second_file = f.stored(second["storagePath"].as_str().unwrap());

    // Nothing is an orphan yet.
    let clean = sweep(&f, &target).await;
    assert_eq!(clean["orphans"], 0, "{clean}");
    assert_eq!(clean["missing"], 0, "{clean}");

    // A stray archive and its sidecars, as an interrupted delete or a
    // copy by hand would leave them.
    let stray = first_file
        .parent()
        .unwrap()
        .join("2020-01-01T00-00-00-000Z.tar.zst");
    for suffix in ["", ".sha256", ".manifest.json"] {
        std::fs::copy(
            with_suffix(&first_file, suffix),
            with_suffix(&stray, suffix),
        )
        .unwrap();
    }
    // Never orphans: another program's file beside the archives, and an
    // archive of a slug no organization has (a purged one's, or one
    // waiting for a catalog import).
    std::fs::write(first_file.parent().unwrap().join("notes.txt"), b"mine").unwrap();
    let foreign = f.stored("ghost/app/data");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::copy(
        &first_file,
        foreign.join("2020-01-01T00-00-00-000Z.tar.zst"),
    )
    .unwrap();
    let found = sweep(&f, &target).await;
    assert_eq!(found["orphans"], 3, "{found}");
    assert_eq!(found["deleted"], 0, "{found}");
    let list = listed(&f, &target).await;
    assert_eq!(list["lastSweep"]["id"], found["id"]);
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{list}");
    assert!(items.iter().all(|i| i["path"]
        .as_str()
        .unwrap()
        .starts_with("tidy/shop/data/2020-01-01")));
    assert!(items.iter().all(|i| !i["deleteAfter"].is_null()));

    // A recorded archive disappears: its backup is `missing`, notified,
    // and cannot be restored.
    let moved = with_suffix(&second_file, ".away");
    std::fs::rename(&second_file, &moved).unwrap();
    let gone = sweep(&f, &target).await;
    assert_eq!(gone["missing"], 1, "{gone}");
    let record = f.backup(second["id"].as_str().unwrap()).await;
    assert_eq!(record["status"], "missing", "{record}");
    assert!(
        record["log"].to_string().contains("found no archive"),
        "{record}"
    );
    let queued = deliveries(&f, "").await;
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0]["event"], "backup.missing");
    assert_eq!(dispatch(&f, Utc::now()).await.sent, 1);
    let hooks = webhook.requests();
    assert_eq!(hooks.len(), 1);
    verify_signature(&secret, &hooks[0]);
    let body = hooks[0].json();
    check_against_schema(&body);
    assert_eq!(body["missing"]["targetId"], json!(target));
    assert_eq!(body["missing"]["backups"][0]["backupId"], second["id"]);
    assert_eq!(body["missing"]["backups"][0]["path"], second["storagePath"]);
    let refused = f
        .request_restore(
            second["id"].as_str().unwrap(),
            json!({ "confirm": second["id"] }),
        )
        .await;
    assert_ne!(refused.status, 202, "{:?}", refused.body);
    refused.assert_problem();
    // A second sweep does not notify it again.
    let still = sweep(&f, &target).await;
    assert_eq!(still["missing"], 0, "{still}");
    assert_eq!(deliveries(&f, "").await.len(), 1);

    // It comes back: `success` again.
    std::fs::rename(&moved, &second_file).unwrap();
    let back = sweep(&f, &target).await;
    assert_eq!(back["found"], 1, "{back}");
    assert_eq!(
        f.backup(second["id"].as_str().unwrap()).await["status"],
        "success"
    );

    // Orphans go once they have been orphans for delete_after_days, and
    // nothing else goes with them.
    let target_id = uuid::Uuid::parse_str(&target).unwrap();
    let early = cairn_core::catalog::sweep_now(
        &f.app.cairn,
        target_id,
        Utc::now() + chrono::Duration::days(1),
    )
    .await
    .unwrap();
    assert_eq!(early.deleted, 0);
    assert!(stray.exists());
    let late = cairn_core::catalog::sweep_now(
        &f.app.cairn,
        target_id,
        Utc::now() + chrono::Duration::days(3),
    )
    .await
    .unwrap();
    assert_eq!(late.deleted, 3);
    assert!(first_file.parent().unwrap().join("notes.txt").exists());
    assert!(foreign.join("2020-01-01T00-00-00-000Z.tar.zst").exists());
    for suffix in ["", ".sha256", ".manifest.json"] {
        assert!(!with_suffix(&stray, suffix).exists(), "{suffix}");
        assert!(with_suffix(&first_file, suffix).exists(), "{suffix}");
        assert!(with_suffix(&second_file, suffix).exists(), "{suffix}");
    }
    assert!(listed(&f, &target).await["items"]
        .as_array()
        .unwrap()
        .is_empty());

    // Only a system administrator sweeps.
    let refused = f
        .app
        .post(
            &format!("/api/v1/system/backups/targets/{target}/orphans/sweep"),
            &f.org.admin,
            &json!({}),
        )
        .await;
    assert_eq!(refused.status, 403);
}

crate::both_backends!(orphans_both_ways);

/// A scheduled sweep of a target runs once per slot, however many workers
/// keep house.
#[tokio::test]
async fn a_slot_sweeps_each_target_once() {
    let f = fixture_with(Backend::Sqlite, "slots", |config| {
        config.orphans.enabled = true;
        config.orphans.schedule = "0 4 * * *".into();
    })
    .await;
    let slot = Utc.with_ymd_and_hms(2026, 12, 7, 4, 0, 0).unwrap();
    let cairn = &f.app.cairn;
    let before = cairn_core::catalog::sweep_due(cairn, slot - chrono::Duration::minutes(5))
        .await
        .unwrap();
    assert_eq!(before, 0);
    let first = cairn_core::catalog::sweep_due(cairn, slot + chrono::Duration::minutes(3))
        .await
        .unwrap();
    assert_eq!(first, 1, "the system default target");
    let again = cairn_core::catalog::sweep_due(cairn, slot + chrono::Duration::minutes(13))
        .await
        .unwrap();
    assert_eq!(again, 0);
}
