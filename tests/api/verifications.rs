//! Verifications end to end: requested through the API, carried out by a
//! real worker, and held to what a user would check — every count of the
//! manifest read back, a flipped byte in the stored archive caught, a
//! manifest that disagrees with its archive named by the failed check, and
//! nothing left in the scratch directory.

use cairn_entity::backup;
use sea_orm::{ActiveValue, EntityTrait};
use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{
    build_volume, create_orders, fixture, fixture_with, postgres_volume, psql, restorable_volume,
    unique, Backend, Fixture,
};

/// A file backup of `shop/data` (every kind of entry a restore gives
/// back), run to its end; returns the backup's record.
async fn file_backup(f: &Fixture) -> Value {
    restorable_volume(&f.volume_dir("shop", "blue", "data"), 1);
    let app = f.create_shop().await;
    let job = f.create_job_for(&app, json!({ "keepLast": 5 })).await;
    let record = f.run_to_end(&job).await;
    assert_eq!(record["status"], "success", "{record}");
    record
}

/// Requests a verification of `backup` as an operator.
async fn request_verification(f: &Fixture, backup: &str, mode: &str) -> Value {
    f.app
        .post(
            &f.org.path(&format!("/backups/history/{backup}/verify")),
            &f.org.operator,
            &json!({ "mode": mode }),
        )
        .await
        .expect(202)
        .clone()
}

/// Verifies `backup` in `mode` with a worker; returns the verification as
/// a viewer reads it.
async fn verify(f: &Fixture, backup: &str, mode: &str) -> Value {
    let requested = request_verification(f, backup, mode).await;
    assert_eq!(requested["status"], "pending", "{requested}");
    assert_eq!(requested["mode"], mode);
    f.drain().await;
    f.verification(requested["id"].as_str().unwrap()).await
}

/// The check named `name` of a verification.
fn check<'a>(verification: &'a Value, name: &str) -> &'a Value {
    verification["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {verification}"))
}

/// A good file backup verifies in both modes: every count equals the
/// manifest's, and the scratch directory is empty afterwards.
async fn a_good_file_backup_verifies_in_both_modes(backend: Backend) {
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path().join("verify");
    let configured = root.clone();
    let f = fixture_with(backend, "alpha", move |config| {
        config.verification.scratch_dir = Some(configured);
    })
    .await;
    let record = file_backup(&f).await;
    let backup = record["id"].as_str().unwrap();
    let manifest = &record["manifest"];
    for mode in ["read", "restore"] {
        let verified = verify(&f, backup, mode).await;
        assert_eq!(verified["status"], "success", "{mode}: {verified}");
        assert_eq!(verified["backupId"], backup);
        assert_eq!(verified["trigger"], "manual");
        assert_eq!(verified["errorCode"], Value::Null);
        for (name, field) in [
            ("files", "fileCount"),
            ("directories", "directoryCount"),
            ("symlinks", "symlinkCount"),
            ("hardLinks", "hardLinkCount"),
            ("bytes", "contentBytes"),
            ("storedBytes", "storedBytes"),
        ] {
            let found = check(&verified, name);
            assert_eq!(found["ok"], true, "{mode} {name}: {verified}");
            assert_eq!(
                found["detail"],
                manifest[field].to_string(),
                "{mode} {name}: {verified}"
            );
        }
        assert_eq!(check(&verified, "sha256")["ok"], true);
        assert!(manifest["fileCount"].as_u64().unwrap() > 3, "{manifest}");
        let timings = &verified["timings"];
        assert!(timings["totalMs"].as_i64().unwrap() >= timings["downloadMs"].as_i64().unwrap());
        assert!(verified["log"]
            .as_array()
            .unwrap()
            .iter()
            .any(|line| line["message"].as_str().unwrap().contains("checks passed")));
        // Restore mode extracted under the scratch root, and removed it.
        let left: Vec<_> = std::fs::read_dir(&root)
            .map(|entries| entries.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{mode}: left in scratch: {left:?}");
    }
    assert!(root.exists(), "restore mode created the scratch root");
    // The listing filters by backup and status.
    let page = f
        .app
        .get(
            &f.org.path(&format!(
                "/backups/verifications?backupId={backup}&status=success"
            )),
            &f.org.viewer,
        )
        .await
        .expect(200)
        .clone();
    assert_eq!(page["items"].as_array().unwrap().len(), 2, "{page}");
    let failed = f
        .app
        .get(
            &f.org.path("/backups/verifications?status=failed"),
            &f.org.viewer,
        )
        .await
        .expect(200)
        .clone();
    assert_eq!(failed["items"], json!([]));
}

both_backends!(a_good_file_backup_verifies_in_both_modes);

/// A flipped byte in the stored archive fails the verification with
/// `checksum_mismatch`, its sha256 check failed.
#[tokio::test]
async fn a_flipped_byte_fails_with_checksum_mismatch() {
    let f = fixture(Backend::Sqlite, "alpha").await;
    let record = file_backup(&f).await;
    let stored = f.stored(record["storagePath"].as_str().unwrap());
    let mut bytes = std::fs::read(&stored).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&stored, bytes).unwrap();
    let verified = verify(&f, record["id"].as_str().unwrap(), "read").await;
    assert_eq!(verified["status"], "failed", "{verified}");
    assert_eq!(verified["errorCode"], "checksum_mismatch", "{verified}");
    assert_eq!(check(&verified, "sha256")["ok"], false, "{verified}");
}

/// A backup that a restore would refuse (it holds an absolute symlink)
/// fails its verification in read mode too, with the entry named: the
/// operator learns it before the day of the restore.
#[tokio::test]
async fn an_archive_a_restore_would_refuse_fails_verification() {
    let f = fixture(Backend::Sqlite, "alpha").await;
    build_volume(&f.volume_dir("shop", "blue", "data"), 1);
    let app = f.create_shop().await;
    let job = f.create_job_for(&app, json!({ "keepLast": 5 })).await;
    let record = f.run_to_end(&job).await;
    assert_eq!(record["status"], "success", "{record}");
    let verified = verify(&f, record["id"].as_str().unwrap(), "read").await;
    assert_eq!(verified["status"], "failed", "{verified}");
    assert_eq!(verified["errorCode"], "archive_refused", "{verified}");
    assert!(
        verified["errorMessage"]
            .as_str()
            .unwrap()
            .contains("absolute-link"),
        "{verified}"
    );
}

/// A manifest whose counts disagree with its archive fails the
/// verification, naming the check.
#[tokio::test]
async fn a_manifest_that_disagrees_fails_the_named_check() {
    let f = fixture(Backend::Sqlite, "alpha").await;
    let record = file_backup(&f).await;
    let id = record["id"].as_str().unwrap();
    let mut manifest = record["manifest"].clone();
    let recorded = manifest["fileCount"].as_u64().unwrap();
    manifest["fileCount"] = json!(recorded + 1);
    backup::Entity::update(backup::ActiveModel {
        id: ActiveValue::Unchanged(uuid::Uuid::parse_str(id).unwrap()),
        manifest: ActiveValue::Set(Some(manifest)),
        ..Default::default()
    })
    .exec(&f.app.cairn.db)
    .await
    .unwrap();
    let verified = verify(&f, id, "read").await;
    assert_eq!(verified["status"], "failed", "{verified}");
    assert_eq!(verified["errorCode"], "verification_mismatch", "{verified}");
    let message = verified["errorMessage"].as_str().unwrap();
    assert!(message.contains("check files failed"), "{message}");
    let files = check(&verified, "files");
    assert_eq!(files["ok"], false);
    assert_eq!(
        files["detail"],
        format!("{recorded} read back, the manifest says {}", recorded + 1)
    );
    assert_eq!(check(&verified, "directories")["ok"], true, "{verified}");
}

/// Restore mode needs scratch space, and only successful backups verify.
#[tokio::test]
async fn requests_are_checked() {
    let f = fixture(Backend::Sqlite, "alpha").await;
    let record = file_backup(&f).await;
    let id = record["id"].as_str().unwrap();
    let path = f.org.path(&format!("/backups/history/{id}/verify"));
    f.app
        .post(&path, &f.org.operator, &json!({ "mode": "restore" }))
        .await
        .expect_field_error(422, "mode");
    f.app
        .post(&path, &f.org.operator, &json!({ "mode": "sometimes" }))
        .await
        .expect_field_error(422, "mode");
    f.app
        .post(&path, &f.org.viewer, &json!({ "mode": "read" }))
        .await
        .expect(403);
    // A job's verify settings are checked like its schedule.
    let app = record["appId"].as_str().unwrap();
    for (settings, field) in [
        (json!({ "verifyMode": "restore" }), "verifyMode"),
        (json!({ "verifySchedule": "every day" }), "verifySchedule"),
        (json!({ "verifySchedule": "0 2 1 * 1" }), "verifySchedule"),
    ] {
        let mut body =
            json!({ "name": "v", "schedule": "0 2 * * *", "appIds": [app], "keepLast": 1 });
        for (key, value) in settings.as_object().unwrap() {
            body[key] = value.clone();
        }
        f.app
            .post(&f.org.path("/backups/jobs"), &f.org.admin, &body)
            .await
            .expect_field_error(422, field);
    }
    // A failed backup is not verified.
    backup::Entity::update(backup::ActiveModel {
        id: ActiveValue::Unchanged(uuid::Uuid::parse_str(id).unwrap()),
        status: ActiveValue::Set(cairn_entity::enums::BackupStatus::Failed),
        ..Default::default()
    })
    .exec(&f.app.cairn.db)
    .await
    .unwrap();
    f.app
        .post(&path, &f.org.operator, &json!({ "mode": "read" }))
        .await
        .expect(409);
    // Nothing was recorded.
    let page = f
        .app
        .get(&f.org.path("/backups/verifications"), &f.org.viewer)
        .await
        .expect(200)
        .clone();
    assert_eq!(page["items"], json!([]));
}

/// A PostgreSQL backup, encrypted, verifies in read mode: its dump is
/// decrypted and listed by `pg_restore --list`; restore mode is refused
/// while this server has no scratch database server.
#[tokio::test]
async fn a_database_backup_verifies_in_read_mode() {
    let scratch = tempfile::tempdir().unwrap();
    let configured = scratch.path().to_path_buf();
    let f = fixture_with(Backend::Sqlite, "alpha", move |config| {
        config.verification.scratch_dir = Some(configured);
    })
    .await;
    let database = unique("vsrc").replace('-', "_");
    psql("postgres", &format!("CREATE DATABASE \"{database}\""));
    create_orders(&database, 50);
    let app = f
        .create_app(json!({ "name": "shop", "volumes": [postgres_volume("db", &database)] }))
        .await;
    let job = f
        .create_job_for(&app, json!({ "keepLast": 5, "encryption": "age" }))
        .await;
    let record = f.run_to_end(&job).await;
    assert_eq!(record["status"], "success", "{record}");
    let id = record["id"].as_str().unwrap();
    let verified = verify(&f, id, "read").await;
    assert_eq!(verified["status"], "success", "{verified}");
    let listed = check(&verified, "tableOfContents");
    assert_eq!(listed["ok"], true, "{verified}");
    assert_eq!(check(&verified, "storedBytes")["ok"], true, "{verified}");
    f.app
        .post(
            &f.org.path(&format!("/backups/history/{id}/verify")),
            &f.org.operator,
            &json!({ "mode": "restore" }),
        )
        .await
        .expect_field_error(422, "mode");
    // A job of this app cannot verify in restore mode either: the server
    // has scratch space for files only.
    let refused = f
        .app
        .post(
            &f.org.path("/backups/jobs"),
            &f.org.admin,
            &json!({ "name": "restore-drill", "schedule": "0 2 * * *", "appIds": [app],
                     "keepLast": 5, "verifyMode": "restore" }),
        )
        .await;
    refused.expect_field_error(422, "verifyMode");
    assert!(
        refused.text.contains("verification.postgres_url"),
        "{}",
        refused.text
    );
}

/// A verification whose worker died (its lease expired) is failed as
/// `worker_lost` by the next worker's reaper, which removes the scratch
/// directory it left.
#[tokio::test]
async fn a_lost_verification_is_reaped_and_its_scratch_removed() {
    use cairn_entity::enums::VerificationStatus;
    use cairn_entity::verification;
    let scratch = tempfile::tempdir().unwrap();
    let configured = scratch.path().to_path_buf();
    let f = fixture_with(Backend::Sqlite, "alpha", move |config| {
        config.verification.scratch_dir = Some(configured);
    })
    .await;
    let record = file_backup(&f).await;
    let requested = request_verification(&f, record["id"].as_str().unwrap(), "restore").await;
    let id = uuid::Uuid::parse_str(requested["id"].as_str().unwrap()).unwrap();
    // As a worker that claimed it, began extracting, and died.
    verification::Entity::update(verification::ActiveModel {
        id: ActiveValue::Unchanged(id),
        status: ActiveValue::Set(VerificationStatus::Running),
        attempt: ActiveValue::Set(1),
        lease_owner: ActiveValue::Set(Some("dead-worker".into())),
        lease_expires_at: ActiveValue::Set(Some(chrono::Utc::now() - chrono::Duration::seconds(5))),
        started_at: ActiveValue::Set(Some(chrono::Utc::now())),
        ..Default::default()
    })
    .exec(&f.app.cairn.db)
    .await
    .unwrap();
    let left = scratch.path().join(format!("cairn-verify-{id}"));
    std::fs::create_dir_all(left.join("nested")).unwrap();
    std::fs::write(left.join("nested/partial.bin"), b"half").unwrap();
    f.drain().await;
    let reaped = f.verification(&id.to_string()).await;
    assert_eq!(reaped["status"], "failed", "{reaped}");
    assert_eq!(reaped["errorCode"], "worker_lost", "{reaped}");
    assert!(reaped["errorMessage"]
        .as_str()
        .unwrap()
        .contains("dead-worker"));
    assert!(!left.exists(), "the scratch directory was removed");
}

/// Last known good: with keepLast 1, the newest backup a verification
/// proved restores is kept while newer ones come and go — here when the
/// newer backup's own verification failed.
#[tokio::test]
async fn retention_keeps_the_newest_verified_good_backup() {
    let f = fixture(Backend::Sqlite, "alpha").await;
    restorable_volume(&f.volume_dir("shop", "blue", "data"), 1);
    let app = f.create_shop().await;
    let job = f.create_job_for(&app, json!({ "keepLast": 1 })).await;
    let good = f.run_to_end(&job).await;
    let good_id = good["id"].as_str().unwrap();
    assert_eq!(verify(&f, good_id, "read").await["status"], "success");

    let second = f.run_to_end(&job).await;
    let second_id = second["id"].as_str().unwrap();
    assert_eq!(
        f.backup(good_id).await["status"],
        "success",
        "kept after the second run"
    );
    let stored = f.stored(second["storagePath"].as_str().unwrap());
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[10] ^= 0x01;
    std::fs::write(&stored, bytes).unwrap();
    let failed = verify(&f, second_id, "read").await;
    assert_eq!(failed["errorCode"], "checksum_mismatch", "{failed}");

    let third = f.run_to_end(&job).await;
    assert_eq!(third["status"], "success", "{third}");
    let kept = f.backup(good_id).await;
    assert_eq!(kept["status"], "success", "{kept}");
    assert!(f.stored(kept["storagePath"].as_str().unwrap()).exists());
    let pruned = f.backup(second_id).await;
    assert_eq!(pruned["status"], "pruned", "{pruned}");
    assert!(!stored.exists(), "the failed one was pruned from storage");
    let retention = f
        .app
        .get(
            &f.org.path(&format!("/backups/jobs/{job}/retention")),
            &f.org.viewer,
        )
        .await
        .expect(200)
        .clone();
    let series = &retention["series"][0]["backups"];
    let reasons_of = |id: &str| {
        series
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["backupId"] == id)
            .map(|b| b["reasons"].clone())
            .unwrap_or_else(|| panic!("{id} not in {retention}"))
    };
    assert_eq!(reasons_of(good_id), json!(["verified"]), "{retention}");
    assert_eq!(
        reasons_of(third["id"].as_str().unwrap()),
        json!(["last"]),
        "{retention}"
    );
}

/// The job at `path` as a viewer reads it.
async fn job_view(f: &Fixture, path: &str) -> Value {
    f.app.get(path, &f.org.viewer).await.expect(200).clone()
}

/// A job's view holds its recovery point against its target: none until a
/// backup passes a verification, then the age of that backup; the last
/// verification with the recovery time a restore-mode one measured.
#[tokio::test]
async fn the_job_view_measures_rpo_and_rto_from_verifications() {
    let scratch = tempfile::tempdir().unwrap();
    let configured = scratch.path().to_path_buf();
    let f = fixture_with(Backend::Sqlite, "alpha", move |config| {
        config.verification.scratch_dir = Some(configured);
    })
    .await;
    restorable_volume(&f.volume_dir("shop", "blue", "data"), 1);
    let app = f.create_shop().await;
    let path = f.org.path("/backups/jobs");
    f.app
        .post(
            &path,
            &f.org.admin,
            &json!({ "name": "n", "schedule": "0 2 * * *", "appIds": [app],
                     "keepLast": 5, "rpoTargetSeconds": 10 }),
        )
        .await
        .expect_field_error(422, "rpoTargetSeconds");
    let job = f
        .create_job_for(&app, json!({ "keepLast": 5, "rpoTargetSeconds": 3600 }))
        .await;
    let job_path = f.org.path(&format!("/backups/jobs/{job}"));
    let record = f.run_to_end(&job).await;
    let before = job_view(&f, &job_path).await;
    assert_eq!(before["rpoTargetSeconds"], 3600);
    assert_eq!(before["rpoSeconds"], Value::Null, "{before}");
    assert_eq!(before["rpoMet"], false, "{before}");
    assert_eq!(before["lastVerification"], Value::Null);

    let read = verify(&f, record["id"].as_str().unwrap(), "read").await;
    let after = job_view(&f, &job_path).await;
    let rpo = after["rpoSeconds"].as_i64().unwrap();
    let finished = chrono::DateTime::parse_from_rfc3339(record["finishedAt"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    let age = (chrono::Utc::now() - finished).num_seconds();
    assert!(rpo <= age && rpo >= age - 5, "rpo {rpo}, age {age}");
    assert_eq!(after["rpoMet"], true, "{after}");
    assert_eq!(after["lastVerifiedAt"], read["finishedAt"]);
    assert_eq!(after["lastVerification"]["id"], read["id"]);
    assert_eq!(after["lastVerification"]["status"], "success");
    assert_eq!(after["lastVerification"]["backupId"], record["id"]);
    assert_eq!(after["lastVerification"]["rtoSeconds"], Value::Null);

    let restored = verify(&f, record["id"].as_str().unwrap(), "restore").await;
    let measured = job_view(&f, &job_path).await;
    assert_eq!(measured["lastVerification"]["id"], restored["id"]);
    assert_eq!(
        measured["lastVerification"]["rtoSeconds"].as_f64().unwrap(),
        restored["timings"]["totalMs"].as_f64().unwrap() / 1000.0
    );
    // The listing shows the same figures.
    let listed = f
        .app
        .get(&f.org.path("/backups/jobs"), &f.org.viewer)
        .await
        .expect(200)
        .clone();
    assert_eq!(
        listed["items"][0]["lastVerification"],
        measured["lastVerification"]
    );
    assert_eq!(listed["items"][0]["rpoMet"], true);
}

/// A verify schedule: three scheduler replicas — each with a lock of its
/// own, so that only the database fence stands between them — tick at the
/// same verify slot; the newest backup of each series is verified once,
/// and the job's next verify slot moves on.
async fn verify_slots_fire_once_across_replicas(backend: Backend) {
    use cairn_entity::enums::Trigger;
    use cairn_entity::verification;
    use cairn_scheduler::{LocalLocks, Scheduler};
    use sea_orm::{ColumnTrait, QueryFilter};
    use std::sync::Arc;
    let f = fixture(backend, "alpha").await;
    for volume in ["data", "logs"] {
        let dir = f.volume_dir("shop", "blue", volume);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.txt"), volume).unwrap();
    }
    let app = f
        .create_app(json!({ "name": "shop", "volumes": [{ "name": "data" }, { "name": "logs" }] }))
        .await;
    let job = f
        .create_job_for(
            &app,
            json!({ "keepLast": 5, "schedule": "0 2 1 1 *", "verifySchedule": "*/5 * * * *" }),
        )
        .await;
    f.run_to_end(&job).await;
    let newest = f.run(&job).await;
    f.drain().await;
    let mut expected: Vec<String> = newest["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_owned())
        .collect();
    expected.sort();
    let view = f
        .app
        .get(&f.org.path(&format!("/backups/jobs/{job}")), &f.org.viewer)
        .await
        .expect(200)
        .clone();
    assert_eq!(view["verifySchedule"], "*/5 * * * *");
    assert_eq!(view["verifyMode"], "read");
    let slot = chrono::DateTime::parse_from_rfc3339(view["nextVerifyAt"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    assert!(slot > chrono::Utc::now() - chrono::Duration::seconds(1));
    let at = slot + chrono::Duration::seconds(1);
    let replicas: Vec<Scheduler> = (0..3)
        .map(|i| {
            Scheduler::new(
                f.app.cairn.clone(),
                Arc::new(LocalLocks::default()),
                format!("replica-{i}"),
            )
        })
        .collect();
    let reports = futures::future::join_all(replicas.iter().map(|r| r.tick(at))).await;
    let recorded: usize = reports.into_iter().map(|r| r.unwrap().verifications).sum();
    assert_eq!(recorded, 2, "one verification per series");
    let job_id = uuid::Uuid::parse_str(&job).unwrap();
    let scheduled = verification::Entity::find()
        .filter(verification::Column::JobId.eq(job_id))
        .all(&f.app.cairn.db)
        .await
        .unwrap();
    let mut verified: Vec<String> = scheduled.iter().map(|v| v.backup_id.to_string()).collect();
    verified.sort();
    assert_eq!(verified, expected, "the newest backup of each series");
    assert!(scheduled
        .iter()
        .all(|v| v.trigger == Trigger::Schedule && v.scheduled_for == Some(slot)));
    // The slot moved on; ticking again at the same time records nothing.
    let again = replicas[0].tick(at).await.unwrap();
    assert_eq!(again.verifications, 0);
    let moved = f
        .app
        .get(&f.org.path(&format!("/backups/jobs/{job}")), &f.org.viewer)
        .await
        .expect(200)
        .clone();
    let next = chrono::DateTime::parse_from_rfc3339(moved["nextVerifyAt"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    assert!(next > at, "{next} after {at}");
    f.drain().await;
    let done = f
        .app
        .get(
            &f.org.path("/backups/verifications?status=success"),
            &f.org.viewer,
        )
        .await
        .expect(200)
        .clone();
    assert_eq!(done["items"].as_array().unwrap().len(), 2, "{done}");
    assert!(done["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|v| v["trigger"] == "schedule"));
}

both_backends!(verify_slots_fire_once_across_replicas);

/// A role for scratch databases: it logs in and creates databases, and is
/// no superuser. Returns the URL of its `postgres` database on the test
/// server.
fn scratch_role() -> String {
    let role = unique("vscratch").replace('-', "_");
    psql(
        "postgres",
        &format!("CREATE ROLE \"{role}\" LOGIN CREATEDB PASSWORD 'scratch secret'"),
    );
    let mut url = url::Url::parse(&std::env::var("TEST_POSTGRES_URL").unwrap()).unwrap();
    url.set_username(&role).unwrap();
    url.set_password(Some("scratch secret")).unwrap();
    url.set_path("postgres");
    url.to_string()
}

/// Whether the test server has the database `name`.
fn database_exists(name: &str) -> bool {
    psql(
        "postgres",
        &format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'"),
    )
    .trim()
        == "1"
}

/// The scratch database of verification `id`.
fn scratch_database(id: &str) -> String {
    format!(
        "cairn_verify_{}",
        uuid::Uuid::parse_str(id).unwrap().simple()
    )
}

/// A source database with two tables — one in a schema and with a name
/// that need quoting — backed up by `f`; returns the backup's record.
async fn database_backup(f: &Fixture) -> Value {
    let database = unique("vsrc").replace('-', "_");
    psql("postgres", &format!("CREATE DATABASE \"{database}\""));
    create_orders(&database, 50);
    psql(
        &database,
        "CREATE SCHEMA \"Sales\"; \
         CREATE TABLE \"Sales\".\"line items\" (n int CHECK (n > 0)); \
         INSERT INTO \"Sales\".\"line items\" SELECT generate_series(1, 7);",
    );
    let app = f
        .create_app(json!({ "name": "shop", "volumes": [postgres_volume("db", &database)] }))
        .await;
    let job = f
        .create_job_for(&app, json!({ "keepLast": 5, "encryption": "age" }))
        .await;
    let record = f.run_to_end(&job).await;
    assert_eq!(record["status"], "success", "{record}");
    record
}

/// A PostgreSQL backup verified by a real restore into a scratch database
/// on the test server: the backup recorded every table's rows, the
/// restore brought back the same tables and rows, and the scratch database
/// is gone afterwards. A manifest whose counts disagree with the archive
/// fails the `rows` and `tables` checks, naming the tables.
#[tokio::test]
async fn a_database_backup_verifies_by_a_real_restore() {
    let url = scratch_role();
    let f = fixture_with(Backend::Sqlite, "alpha", move |config| {
        config.verification.postgres_url = Some(url.into());
    })
    .await;
    let record = database_backup(&f).await;
    let id = record["id"].as_str().unwrap().to_owned();
    // With a scratch database server, a job of a PostgreSQL app may verify
    // in restore mode (and one of a file app may not: no scratch_dir).
    let app = record["appId"].as_str().unwrap();
    f.create_job_for(
        app,
        json!({ "name": "db-drill", "keepLast": 5, "verifyMode": "restore" }),
    )
    .await;
    restorable_volume(&f.volume_dir("files", "blue", "data"), 1);
    let files = f
        .create_app(json!({ "name": "files", "volumes": [{ "name": "data" }] }))
        .await;
    f.app
        .post(
            &f.org.path("/backups/jobs"),
            &f.org.admin,
            &json!({ "name": "files-drill", "schedule": "0 2 * * *", "appIds": [files],
                     "keepLast": 5, "verifyMode": "restore" }),
        )
        .await
        .expect_field_error(422, "verifyMode");
    let recorded = json!([
        { "name": "\"Sales\".\"line items\"", "rows": 7 },
        { "name": "public.orders", "rows": 50 },
    ]);
    assert_eq!(record["manifest"]["tables"], recorded, "{record}");

    let verified = verify(&f, &id, "restore").await;
    assert_eq!(verified["status"], "success", "{verified}");
    assert_eq!(
        verified["tables"],
        json!([
            { "name": "\"Sales\".\"line items\"", "rows": 7, "expectedRows": 7 },
            { "name": "public.orders", "rows": 50, "expectedRows": 50 },
        ]),
        "{verified}"
    );
    for name in ["sha256", "storedBytes", "restore", "tables", "rows"] {
        assert_eq!(check(&verified, name)["ok"], true, "{name}: {verified}");
    }
    assert!(verified["timings"]["restoreMs"].as_i64().is_some());
    assert!(!database_exists(&scratch_database(
        verified["id"].as_str().unwrap()
    )));

    // The record's manifest now says one more order and a table that the
    // archive does not hold.
    let mut manifest = record["manifest"].clone();
    manifest["tables"] = json!([
        { "name": "\"Sales\".\"line items\"", "rows": 7 },
        { "name": "public.orders", "rows": 51 },
        { "name": "public.refunds", "rows": 3 },
    ]);
    backup::Entity::update(backup::ActiveModel {
        id: ActiveValue::Unchanged(uuid::Uuid::parse_str(&id).unwrap()),
        manifest: ActiveValue::Set(Some(manifest)),
        ..Default::default()
    })
    .exec(&f.app.cairn.db)
    .await
    .unwrap();
    let failed = verify(&f, &id, "restore").await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["errorCode"], "verification_mismatch", "{failed}");
    let tables = check(&failed, "tables");
    assert_eq!(tables["ok"], false, "{failed}");
    assert!(
        tables["detail"]
            .as_str()
            .unwrap()
            .contains("missing after the restore: public.refunds"),
        "{failed}"
    );
    let rows = check(&failed, "rows");
    assert_eq!(rows["ok"], false, "{failed}");
    assert_eq!(
        rows["detail"], "public.orders (50 restored, 51 recorded)",
        "{failed}"
    );
    assert!(failed["tables"]
        .as_array()
        .unwrap()
        .contains(&json!({ "name": "public.refunds", "rows": null, "expectedRows": 3 })));
    assert!(!database_exists(&scratch_database(
        failed["id"].as_str().unwrap()
    )));
}

/// The scratch role must not be a superuser (a dump's SQL runs as it): a
/// verification on one fails before it creates anything, saying why, and
/// the password of the URL is nowhere in what it says.
#[tokio::test]
async fn a_superuser_scratch_server_is_refused() {
    let url = std::env::var("TEST_POSTGRES_URL").unwrap();
    let password = url::Url::parse(&url)
        .unwrap()
        .password()
        .unwrap()
        .to_owned();
    let f = fixture_with(Backend::Sqlite, "alpha", move |config| {
        config.verification.postgres_url = Some(url.into());
    })
    .await;
    let record = database_backup(&f).await;
    let failed = verify(&f, record["id"].as_str().unwrap(), "restore").await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["errorCode"], "restore_failed", "{failed}");
    assert!(
        failed["errorMessage"]
            .as_str()
            .unwrap()
            .contains("without SUPERUSER"),
        "{failed}"
    );
    assert!(!failed.to_string().contains(&password), "{failed}");
    assert!(!database_exists(&scratch_database(
        failed["id"].as_str().unwrap()
    )));
}

/// A `cairn worker` killed with SIGKILL while it restores a dump into its
/// scratch database: the next worker's reaper fails the verification as
/// `worker_lost` and drops the database.
#[tokio::test]
async fn a_scratch_database_is_dropped_after_its_worker_was_killed() {
    let url = scratch_role();
    let configured = url.clone();
    let f = fixture_with(Backend::Sqlite, "alpha", move |config| {
        config.verification.postgres_url = Some(configured.into());
    })
    .await;
    let record = database_backup(&f).await;
    let requested = request_verification(&f, record["id"].as_str().unwrap(), "restore").await;
    let id = requested["id"].as_str().unwrap().to_owned();
    let database = scratch_database(&id);

    // A pg_restore that takes its time, so the worker dies mid-restore.
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("slow-pg_restore");
    let pid_file = dir.path().join("pid");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho $$ > '{}'\nsleep 120\nexec '{}' \"$@\"\n",
            pid_file.display(),
            f.app.cairn.config.pg_restore.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let lease_seconds = 2;
    let mut child = crate::helpers::cairn_process(
        &f,
        "worker",
        &[],
        &[
            ("CAIRN_WORKER__LEASE_SECONDS", lease_seconds.to_string()),
            ("CAIRN_VERIFICATION__POSTGRES_URL", url),
            ("CAIRN_PG_RESTORE", wrapper.display().to_string()),
        ],
    );
    let started = std::time::Instant::now();
    while !(database_exists(&database) && pid_file.exists()) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "the worker never began restoring"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    if let Ok(pid) = std::fs::read_to_string(&pid_file) {
        let _ = std::process::Command::new("kill").arg(pid.trim()).status();
    }
    assert!(database_exists(&database), "killed mid-restore");

    tokio::time::sleep(std::time::Duration::from_secs(lease_seconds + 1)).await;
    f.drain().await;
    let reaped = f.verification(&id).await;
    assert_eq!(reaped["status"], "failed", "{reaped}");
    assert_eq!(reaped["errorCode"], "worker_lost", "{reaped}");
    assert!(!database_exists(&database), "the reaper dropped {database}");
}

/// The report of a job with two series, one verified in `restore` mode and
/// one in `read` mode: per series the last success, the recovery point and
/// its age, the recovery time measured, each against the job's targets;
/// per job the same figures as its view. A failed verification takes its
/// backup's proof back.
async fn the_report_holds_rpo_and_rto_per_job_and_series(backend: Backend) {
    let scratch = tempfile::tempdir().unwrap();
    let configured = scratch.path().to_path_buf();
    let f = fixture_with(backend, "alpha", move |config| {
        config.verification.scratch_dir = Some(configured);
    })
    .await;
    for volume in ["data", "logs"] {
        restorable_volume(&f.volume_dir("shop", "blue", volume), 1);
    }
    let app = f
        .create_app(json!({ "name": "shop", "volumes": [{ "name": "data" }, { "name": "logs" }] }))
        .await;
    f.app
        .post(
            &f.org.path("/backups/jobs"),
            &f.org.admin,
            &json!({ "name": "n", "schedule": "0 */6 * * *", "appIds": [app],
                     "keepLast": 5, "rtoTargetSeconds": 0 }),
        )
        .await
        .expect_field_error(422, "rtoTargetSeconds");
    let job = f
        .create_job_for(
            &app,
            json!({ "keepLast": 5, "schedule": "0 */6 * * *",
                    "rpoTargetSeconds": 3600, "rtoTargetSeconds": 600 }),
        )
        .await;
    let run = f.run(&job).await;
    f.drain().await;
    let backups: Vec<Value> = {
        let mut backups = Vec::new();
        for b in run["backups"].as_array().unwrap() {
            backups.push(f.backup(b["id"].as_str().unwrap()).await);
        }
        backups.sort_by_key(|b| b["volumeName"].as_str().unwrap().to_owned());
        backups
    };
    let (data, logs) = (&backups[0], &backups[1]);
    assert_eq!(data["volumeName"], "data");
    let report = || async {
        f.app
            .get(&f.org.path("/backups/report"), &f.org.viewer)
            .await
            .expect(200)
            .clone()
    };

    let before = report().await;
    let entry = &before["jobs"][0];
    assert_eq!(entry["jobId"], job, "{before}");
    assert_eq!(entry["scheduleIntervalSeconds"], 21_600, "{before}");
    assert_eq!(entry["rpoTargetSeconds"], 3600);
    assert_eq!(entry["rtoTargetSeconds"], 600);
    assert_eq!(entry["rpoSeconds"], Value::Null);
    assert_eq!(entry["rpoMet"], false);
    assert_eq!(entry["rtoMet"], false);
    let series = entry["series"].as_array().unwrap();
    assert_eq!(series.len(), 2, "{before}");
    assert_eq!(series[0]["volumeName"], "data");
    assert_eq!(series[0]["appId"], app);
    assert_eq!(series[0]["lastSuccessAt"], data["finishedAt"], "{before}");
    assert_eq!(series[1]["lastSuccessAt"], logs["finishedAt"], "{before}");
    assert_eq!(series[0]["recoveryPointBackupId"], Value::Null);

    let restored = verify(&f, data["id"].as_str().unwrap(), "restore").await;
    assert_eq!(restored["status"], "success", "{restored}");
    let read = verify(&f, logs["id"].as_str().unwrap(), "read").await;
    assert_eq!(read["status"], "success", "{read}");
    let age_of = |backup: &Value| {
        let finished =
            chrono::DateTime::parse_from_rfc3339(backup["finishedAt"].as_str().unwrap()).unwrap();
        (chrono::Utc::now() - finished.with_timezone(&chrono::Utc)).num_seconds()
    };
    let after = report().await;
    let view = job_view(&f, &f.org.path(&format!("/backups/jobs/{job}"))).await;
    let entry = &after["jobs"][0];
    let series = entry["series"].as_array().unwrap();
    let (data_series, logs_series) = (&series[0], &series[1]);
    assert_eq!(data_series["recoveryPointBackupId"], data["id"], "{after}");
    assert_eq!(data_series["recoveryPointAt"], data["finishedAt"]);
    let rpo = data_series["rpoSeconds"].as_i64().unwrap();
    assert!((age_of(data) - 5..=age_of(data)).contains(&rpo), "{after}");
    assert_eq!(data_series["rpoMet"], true);
    assert_eq!(
        data_series["rtoSeconds"].as_f64().unwrap(),
        restored["timings"]["totalMs"].as_f64().unwrap() / 1000.0
    );
    assert_eq!(data_series["rtoMeasuredAt"], restored["finishedAt"]);
    assert_eq!(data_series["rtoMet"], true);
    assert_eq!(data_series["lastVerifiedAt"], restored["finishedAt"]);
    assert_eq!(data_series["lastVerificationStatus"], "success");
    assert_eq!(logs_series["recoveryPointBackupId"], logs["id"], "{after}");
    assert_eq!(logs_series["lastVerifiedAt"], read["finishedAt"]);
    assert_eq!(
        logs_series["rtoSeconds"],
        Value::Null,
        "read mode measures no RTO"
    );
    assert_eq!(logs_series["rtoMet"], false);
    // The job's figures are its view's.
    assert_eq!(entry["rtoSeconds"], view["rtoSeconds"], "{view}");
    assert_eq!(entry["rtoMet"], view["rtoMet"]);
    assert_eq!(entry["rtoMet"], true);
    assert_eq!(entry["rpoMet"], view["rpoMet"]);
    assert_eq!(entry["lastVerifiedAt"], view["lastVerifiedAt"]);
    assert_eq!(entry["lastVerifiedAt"], read["finishedAt"]);
    let (ours, theirs) = (
        entry["rpoSeconds"].as_i64().unwrap(),
        view["rpoSeconds"].as_i64().unwrap(),
    );
    assert!((ours - theirs).abs() <= 2, "report {ours}, view {theirs}");

    // The data backup's archive damaged: its next verification fails, and
    // the series has no recovery point any more.
    let stored = f.stored(data["storagePath"].as_str().unwrap());
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[10] ^= 0x01;
    std::fs::write(&stored, bytes).unwrap();
    let failed = verify(&f, data["id"].as_str().unwrap(), "read").await;
    assert_eq!(failed["errorCode"], "checksum_mismatch", "{failed}");
    let damaged = report().await;
    let data_series = &damaged["jobs"][0]["series"][0];
    assert_eq!(data_series["lastVerificationStatus"], "failed", "{damaged}");
    assert_eq!(data_series["recoveryPointBackupId"], Value::Null);
    assert_eq!(data_series["rpoSeconds"], Value::Null);
    assert_eq!(data_series["rpoMet"], false);
    assert_eq!(damaged["jobs"][0]["series"][1]["rpoMet"], true);
    // The job's recovery point is now the backup still proven (the logs'),
    // in its view and in the job list alike.
    let view = job_view(&f, &f.org.path(&format!("/backups/jobs/{job}"))).await;
    let rpo = view["rpoSeconds"].as_i64().unwrap();
    assert!((age_of(logs) - 5..=age_of(logs)).contains(&rpo), "{view}");
    let listed = f
        .app
        .get(&f.org.path("/backups/jobs"), &f.org.viewer)
        .await
        .expect(200)
        .clone();
    assert_eq!(listed["items"][0]["id"], view["id"], "{listed}");
    let listed_rpo = listed["items"][0]["rpoSeconds"].as_i64().unwrap();
    assert!(
        (listed_rpo - rpo).abs() <= 2,
        "list {listed_rpo}, view {rpo}"
    );
}
both_backends!(the_report_holds_rpo_and_rto_per_job_and_series);

/// The value of the metric line that starts with `series` in `text`.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

async fn scrape(port: u16) -> String {
    let started = std::time::Instant::now();
    loop {
        match reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await {
            Ok(response) => return response.text().await.unwrap(),
            Err(error) => {
                assert!(
                    started.elapsed() < std::time::Duration::from_secs(60),
                    "nothing answers on {port}: {error}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// A `cairn worker` runs a verification and counts it in
/// `cairn_verifications_total`; its `/metrics` and that of a scheduler
/// started afterwards — a process that ran nothing — both show the job's
/// last success and last verification, read from the database.
#[tokio::test]
async fn verification_metrics_come_from_the_database() {
    use crate::helpers::{cairn_process, free_port};
    let f = fixture(Backend::Sqlite, "alpha").await;
    let record = file_backup(&f).await;
    let job = record["jobId"].as_str().unwrap().to_owned();
    let requested = request_verification(&f, record["id"].as_str().unwrap(), "read").await;
    let id = requested["id"].as_str().unwrap().to_owned();
    let worker_port = free_port();
    let mut worker = cairn_process(
        &f,
        "worker",
        &[
            "--metrics-listen".into(),
            format!("127.0.0.1:{worker_port}"),
        ],
        &[],
    );
    let started = std::time::Instant::now();
    let verified = loop {
        let view = f.verification(&id).await;
        if view["status"] == "success" || view["status"] == "failed" {
            break view;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the worker never verified: {view}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(verified["status"], "success", "{verified}");
    let epoch = |value: &Value| {
        chrono::DateTime::parse_from_rfc3339(value.as_str().unwrap())
            .unwrap()
            .timestamp() as f64
    };
    let last_success = format!("cairn_backup_last_success_timestamp_seconds{{job_id=\"{job}\"}}");
    let last_verified = format!("cairn_backup_last_verified_timestamp_seconds{{job_id=\"{job}\"}}");
    let text = scrape(worker_port).await;
    assert_eq!(
        metric(
            &text,
            "cairn_verifications_total{mode=\"read\",status=\"success\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, &last_verified),
        Some(epoch(&verified["finishedAt"])),
        "{text}"
    );
    assert_eq!(
        metric(&text, &last_success),
        Some(epoch(&record["finishedAt"])),
        "{text}"
    );
    worker.kill().unwrap();
    worker.wait().unwrap();

    let scheduler_port = free_port();
    let mut scheduler = cairn_process(
        &f,
        "scheduler",
        &[
            "--metrics-listen".into(),
            format!("127.0.0.1:{scheduler_port}"),
        ],
        &[],
    );
    let text = scrape(scheduler_port).await;
    scheduler.kill().unwrap();
    scheduler.wait().unwrap();
    assert_eq!(
        metric(&text, &last_verified),
        Some(epoch(&verified["finishedAt"])),
        "{text}"
    );
    assert_eq!(
        metric(&text, &last_success),
        Some(epoch(&record["finishedAt"])),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "cairn_verifications_total{mode=\"read\",status=\"success\"}"
        ),
        None,
        "a process that verified nothing counted nothing: {text}"
    );
}
