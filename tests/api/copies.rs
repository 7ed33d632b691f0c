//! Copies on several targets, against the real S3 server and sshd: one
//! read of the volume lands on every target byte for byte, sidecars
//! included; a copy that fails leaves the backup a success and is copied
//! later from the primary (the volume untouched); retention prunes every
//! copy.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{
    describe, env, fixture, fixture_with, restorable_volume, s3_objects, s3_target_from_env,
    ssh_target_from_env, unique, Backend, FaultProxy, Fixture,
};

/// The archive at `path` under `root` and its two sidecars, as bytes.
fn stored_set(root: &Path, path: &str) -> Vec<(String, Vec<u8>)> {
    [
        path.to_owned(),
        format!("{path}.sha256"),
        format!("{path}.manifest.json"),
    ]
    .into_iter()
    .map(|name| {
        let bytes = std::fs::read(root.join(&name))
            .unwrap_or_else(|e| panic!("{} under {}: {e}", name, root.display()));
        (name, bytes)
    })
    .collect()
}

/// Whether anything of the archive at `path` is left under `root`.
fn any_left(root: &Path, path: &str) -> bool {
    [
        path.to_owned(),
        format!("{path}.sha256"),
        format!("{path}.manifest.json"),
    ]
    .iter()
    .any(|name| root.join(name).exists())
}

/// The primary: a local target under the fixture's backup root.
async fn local_primary(f: &Fixture) -> String {
    f.create_target(json!({ "name": "local", "type": "local", "config": { "path": "primary" } }))
        .await
}

/// Where the local primary keeps its archives.
fn primary_root(f: &Fixture) -> PathBuf {
    f.stored("acme/primary")
}

/// A fixture that gives up on storage quickly (2 s) and retries copies
/// after a second, with a local target and an S3 target behind a proxy
/// that refuses every connection until it is healed; returns the
/// fixture, the local target, the S3 target, its prefix and the proxy.
async fn with_s3_down(
    name: &str,
    max_attempts: u32,
) -> (Fixture, String, String, String, FaultProxy) {
    let f = fixture_with(Backend::Sqlite, "acme", move |config| {
        config.storage.retry_budget_seconds = 2;
        config.copies.retry_base_seconds = 1;
        config.copies.max_attempts = max_attempts;
    })
    .await;
    restorable_volume(&f.volume_dir("shop", "blue", "data"), 1);
    let local = local_primary(&f).await;
    let proxy = FaultProxy::start(usize::MAX).await;
    let prefix = unique(name);
    let s3 = f
        .create_target(s3_target_from_env(
            name,
            json!({ "prefix": prefix, "endpoint": proxy.endpoint }),
        ))
        .await;
    (f, local, s3, prefix, proxy)
}

fn copy_of<'a>(record: &'a Value, target: &str) -> &'a Value {
    record["copies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["targetId"] == target)
        .unwrap_or_else(|| panic!("no copy on {target}: {record}"))
}

/// A job on the local primary with copies on the S3 server and sshd: every
/// archive is on all three, byte-identical, with its sidecars; each copy
/// says so in the history. Retention (keepLast 1) then prunes the older
/// archive from all three, and a copy target cannot be deleted while the
/// job names it.
async fn copies_land_on_every_target(backend: Backend) {
    let f = fixture(backend, "acme").await;
    restorable_volume(&f.volume_dir("shop", "blue", "data"), 1);
    let local = local_primary(&f).await;
    let prefix = unique("copies");
    let s3 = f
        .create_target(s3_target_from_env("s3-copy", json!({ "prefix": prefix })))
        .await;
    let remote = PathBuf::from(env("TEST_SSH_ROOT")).join(unique("copies"));
    let ssh = f
        .create_target(ssh_target_from_env(
            "ssh-copy",
            &remote.display().to_string(),
        ))
        .await;
    let app = f.create_shop().await;
    let job = f
        .create_job_for(
            &app,
            json!({ "targetId": local, "keepLast": 1, "copyTargetIds": [s3, ssh] }),
        )
        .await;
    let view = f
        .app
        .get(&f.org.path(&format!("/backups/jobs/{job}")), &f.org.viewer)
        .await
        .expect(200)
        .clone();
    assert_eq!(view["copyTargetIds"], json!([s3, ssh]), "{view}");

    let first = f.run_to_end(&job).await;
    assert_eq!(first["status"], "success", "{first}");
    let path = first["storagePath"].as_str().unwrap().to_owned();
    for target in [&s3, &ssh] {
        let copy = copy_of(&first, target);
        assert_eq!(copy["status"], "success", "{first}");
        assert_eq!(copy["sha256"], first["sha256"]);
        assert_eq!(copy["size"], first["archiveSize"]);
        assert_eq!(copy["path"], path.as_str());
        assert_eq!(copy["attempts"], 1);
        assert_eq!(copy["error"], Value::Null);
    }
    let primary = stored_set(&primary_root(&f), &path);
    let bucket = s3_objects(&prefix);
    assert_eq!(stored_set(&bucket, &path), primary, "the S3 copy");
    assert_eq!(stored_set(&remote, &path), primary, "the SSH copy");

    // Each copy can be read on its own: a preview and a dry run of the SSH
    // copy say they read it; a target without a copy of this backup is
    // refused on the field.
    let id = first["id"].as_str().unwrap().to_owned();
    let preview = f
        .app
        .get(
            &f.org
                .path(&format!("/backups/history/{id}/preview?targetId={ssh}")),
            &f.org.viewer,
        )
        .await
        .expect(200)
        .clone();
    assert_eq!(preview["restorable"], true, "{preview}");
    let dry = f
        .restore_to_end(&id, json!({ "dryRun": true, "targetId": ssh }))
        .await;
    assert_eq!(dry["status"], "success", "{dry}");
    assert!(
        dry["log"].to_string().contains("from target 'ssh-copy'"),
        "{dry}"
    );
    let elsewhere = f
        .create_target(s3_target_from_env(
            "s3-other",
            json!({ "prefix": unique("other") }),
        ))
        .await;
    f.request_restore(
        &id,
        json!({ "confirm": id, "dryRun": true, "targetId": elsewhere }),
    )
    .await
    .expect_field_error(422, "targetId");
    f.app
        .get(
            &f.org
                .path(&format!("/backups/history/{id}/preview?targetId=nope")),
            &f.org.viewer,
        )
        .await
        .expect_field_error(422, "targetId");

    // A flipped byte in the primary's archive: the restore finds the
    // checksum wrong, reads the first copy instead, and says so.
    let volume = f.volume_dir("shop", "blue", "data");
    let backed_up = describe(&volume);
    let on_primary = primary_root(&f).join(&path);
    let mut bytes = std::fs::read(&on_primary).unwrap();
    bytes[100] ^= 0x01;
    std::fs::write(&on_primary, bytes).unwrap();
    std::fs::write(volume.join("changed.txt"), b"after the backup").unwrap();
    let restored = f
        .restore_to_end(
            first["id"].as_str().unwrap(),
            json!({ "safetyBackup": false }),
        )
        .await;
    assert_eq!(restored["status"], "success", "{restored}");
    assert!(
        restored["log"].as_array().unwrap().iter().any(|l| {
            let message = l["message"].as_str().unwrap();
            message.contains("from target 'local' failed (checksum_mismatch")
                && message.contains("reading the copy on target 's3-copy'")
        }),
        "{restored}"
    );
    assert!(describe(&volume) == backed_up, "the restored tree");

    // The primary's archive deleted by hand: a restore reads a copy, and
    // its log says which; the volume gets the backed-up tree back.
    std::fs::write(volume.join("changed.txt"), b"after the backup").unwrap();
    std::fs::remove_file(primary_root(&f).join(&path)).unwrap();
    let restored = f
        .restore_to_end(
            first["id"].as_str().unwrap(),
            json!({ "safetyBackup": false }),
        )
        .await;
    assert_eq!(restored["status"], "success", "{restored}");
    assert!(
        restored["log"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["message"]
                .as_str()
                .unwrap()
                .contains("no longer holds the archive; reading the copy on target 's3-copy'")),
        "{restored}"
    );
    assert!(describe(&volume) == backed_up, "the restored tree");

    let second = f.run_to_end(&job).await;
    assert_eq!(second["status"], "success", "{second}");
    let pruned = f.backup(first["id"].as_str().unwrap()).await;
    assert_eq!(pruned["status"], "pruned", "{pruned}");
    for target in [&s3, &ssh] {
        assert_eq!(copy_of(&pruned, target)["status"], "pruned", "{pruned}");
    }
    for root in [primary_root(&f), bucket.clone(), remote.clone()] {
        assert!(!any_left(&root, &path), "left on {}", root.display());
    }
    // A verification of the newest backup's SSH copy reads that copy.
    let id = second["id"].as_str().unwrap().to_owned();
    let verification = f
        .app
        .post(
            &f.org.path(&format!("/backups/history/{id}/verify")),
            &f.org.operator,
            &json!({ "mode": "read", "targetId": ssh }),
        )
        .await
        .expect(202)
        .clone();
    f.drain().await;
    let verified = f.verification(verification["id"].as_str().unwrap()).await;
    assert_eq!(verified["status"], "success", "{verified}");
    assert!(
        verified["log"]
            .to_string()
            .contains("from target 'ssh-copy'"),
        "{verified}"
    );
    let newest = second["storagePath"].as_str().unwrap();
    assert_eq!(
        stored_set(&bucket, newest),
        stored_set(&primary_root(&f), newest)
    );

    f.app
        .delete(&f.org.path(&format!("/backups/targets/{s3}")), &f.org.admin)
        .await
        .expect(409);
}
both_backends!(copies_land_on_every_target);

/// `copyTargetIds` is checked: at most three, distinct, not the job's own
/// target, and each a target this organization may use (404 otherwise).
#[tokio::test]
async fn copy_targets_are_checked() {
    let f = fixture(Backend::Sqlite, "acme").await;
    let app = f.create_shop().await;
    let mut targets = Vec::new();
    for i in 0..4 {
        targets.push(
            f.create_target(s3_target_from_env(
                &format!("s3-{i}"),
                json!({ "prefix": unique("checked") }),
            ))
            .await,
        );
    }
    let post = |body: Value| {
        let f = &f;
        async move {
            f.app
                .post(&f.org.path("/backups/jobs"), &f.org.admin, &body)
                .await
        }
    };
    let job = |extra: Value| {
        let mut body =
            json!({ "name": "n", "schedule": "0 2 * * *", "appIds": [app], "keepLast": 1 });
        for (key, value) in extra.as_object().unwrap() {
            body[key] = value.clone();
        }
        body
    };
    post(job(json!({ "copyTargetIds": targets })))
        .await
        .expect_field_error(422, "copyTargetIds");
    post(job(json!({ "copyTargetIds": [targets[0], targets[0]] })))
        .await
        .expect_field_error(422, "copyTargetIds");
    post(job(
        json!({ "targetId": targets[0], "copyTargetIds": [targets[1], targets[0]] }),
    ))
    .await
    .expect_field_error(422, "copyTargetIds[1]");
    post(job(json!({ "copyTargetIds": [uuid::Uuid::now_v7()] })))
        .await
        .expect(404);
    post(job(
        json!({ "copyTargetIds": [targets[0], targets[1], targets[2]] }),
    ))
    .await
    .expect(201);
}

/// The S3 server unreachable during the run: the backup succeeds, its S3
/// copy is `pending` with the cause. With the server back and the volume
/// gone, the retry copies from the primary: the copy ends `success` and
/// its bytes equal the primary's.
#[tokio::test]
async fn a_failed_copy_is_retried_from_the_primary() {
    let (f, local, s3, prefix, proxy) = with_s3_down("s3-copy", 8).await;
    let volume = f.volume_dir("shop", "blue", "data");
    let app = f.create_shop().await;
    let job = f
        .create_job_for(
            &app,
            json!({ "targetId": local, "keepLast": 3, "copyTargetIds": [s3] }),
        )
        .await;
    let record = f.run_to_end(&job).await;
    assert_eq!(record["status"], "success", "{record}");
    let copy = copy_of(&record, &s3);
    assert_eq!(copy["status"], "pending", "{record}");
    assert_eq!(copy["attempts"], 1);
    let code = copy["error"]["code"].as_str().unwrap();
    assert!(
        ["target_unreachable", "upload_failed"].contains(&code),
        "{record}"
    );
    assert!(proxy.refused() > 0);
    let path = record["storagePath"].as_str().unwrap().to_owned();
    let bucket = s3_objects(&prefix);
    assert!(!any_left(&bucket, &path));

    // The server is back; the volume is gone: the copy cannot read it.
    proxy.heal();
    std::fs::remove_dir_all(&volume).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    f.drain().await;
    let copied = f.backup(record["id"].as_str().unwrap()).await;
    let copy = copy_of(&copied, &s3);
    assert_eq!(copy["status"], "success", "{copied}");
    assert_eq!(copy["attempts"], 2);
    assert_eq!(copy["sha256"], record["sha256"]);
    assert_eq!(
        stored_set(&bucket, &path),
        stored_set(&primary_root(&f), &path)
    );
    assert!(copied["log"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["message"]
            .as_str()
            .unwrap()
            .contains("copied to target 's3-copy' from the primary")));
}

/// The primary unreachable during the run while its copy target works: the
/// backup is still a success, its target is now the copy's (where the whole
/// archive is), and the old primary gets its copy later, from there.
#[tokio::test]
async fn a_failed_primary_leaves_the_backup_on_its_copy() {
    let (f, local, s3, prefix, proxy) = with_s3_down("s3-primary", 8).await;
    let app = f.create_shop().await;
    let job = f
        .create_job_for(
            &app,
            json!({ "targetId": s3, "keepLast": 3, "copyTargetIds": [local] }),
        )
        .await;
    let record = f.run_to_end(&job).await;
    assert_eq!(record["status"], "success", "{record}");
    assert_eq!(record["targetId"], local.as_str(), "{record}");
    let path = record["storagePath"].as_str().unwrap().to_owned();
    assert_eq!(stored_set(&primary_root(&f), &path).len(), 3);
    let copy = copy_of(&record, &s3);
    assert_eq!(copy["status"], "pending", "{record}");
    assert!(
        copy["error"]["message"].as_str().unwrap().contains("503"),
        "{record}"
    );
    assert!(record["log"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["message"]
            .as_str()
            .unwrap()
            .contains("which is now the backup's target")));

    proxy.heal();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    f.drain().await;
    let healed = f.backup(record["id"].as_str().unwrap()).await;
    assert_eq!(copy_of(&healed, &s3)["status"], "success", "{healed}");
    assert_eq!(
        stored_set(&s3_objects(&prefix), &path),
        stored_set(&primary_root(&f), &path)
    );
}

/// A copy target that never comes back: the run's notification counts the
/// copy that did not land, and once its last attempt fails the copy is
/// `failed` and `backup.copy.failed` reaches the webhook.
#[tokio::test]
async fn a_copy_that_never_lands_is_notified() {
    use cairn_core::notifications::dispatch_due;
    let (f, local, s3, _, _proxy) = with_s3_down("s3-copy", 2).await;
    let hook = crate::helpers::Receiver::start(vec![]).await;
    f.create_channel(json!({ "name": "hook", "type": "webhook", "config": { "url": hook.url } }))
        .await;
    let app = f.create_shop().await;
    let job = f
        .create_job_for(
            &app,
            json!({ "targetId": local, "keepLast": 3, "copyTargetIds": [s3],
                    "notifyOnSuccess": true }),
        )
        .await;
    let record = f.run_to_end(&job).await;
    assert_eq!(record["status"], "success", "{record}");
    let dispatch = || async {
        dispatch_due(&f.app.cairn, "test-dispatcher", chrono::Utc::now())
            .await
            .unwrap()
    };
    assert_eq!(dispatch().await.sent, 1);
    let run = hook.requests()[0].json();
    assert_eq!(run["event"], "backup.run.succeeded", "{run}");
    assert_eq!(run["summary"]["copiesFailed"], 1, "{run}");

    tokio::time::sleep(Duration::from_millis(1500)).await;
    f.drain().await;
    let failed = f.backup(record["id"].as_str().unwrap()).await;
    let copy = copy_of(&failed, &s3);
    assert_eq!(copy["status"], "failed", "{failed}");
    assert_eq!(copy["attempts"], 2);
    assert_eq!(dispatch().await.sent, 1);
    let body = hook.requests()[1].json();
    assert_eq!(body["event"], "backup.copy.failed", "{body}");
    assert_eq!(body["copy"]["backupId"], record["id"]);
    assert_eq!(body["copy"]["targetName"], "s3-copy");
    assert_eq!(body["copy"]["attempts"], 2);
    assert!(body["copy"]["error"]["code"].is_string(), "{body}");
    assert_eq!(body["job"]["id"], job.as_str());
}

/// A backup whose worker died while it wrote the copies: the reaper fails
/// the backup (`worker_lost`) and its copies with it, so no copy stays
/// `running` for ever.
#[tokio::test]
async fn a_lost_backup_fails_its_copies() {
    use cairn_entity::enums::{BackupStatus, CopyStatus};
    use cairn_entity::{backup, backup_copy};
    use sea_orm::{ActiveModelTrait, ActiveValue, EntityTrait};
    let (f, local, s3, _, _proxy) = with_s3_down("s3-copy", 8).await;
    let app = f.create_shop().await;
    let job = f
        .create_job_for(
            &app,
            json!({ "targetId": local, "keepLast": 3, "copyTargetIds": [s3] }),
        )
        .await;
    let run = f.run(&job).await;
    let id = uuid::Uuid::parse_str(run["backups"][0]["id"].as_str().unwrap()).unwrap();
    let now = chrono::Utc::now();
    let path = "acme/shop/data/2026-01-01T00-00-00-000Z.tar.zst";
    // As a worker that claimed it, began writing primary and copy, and died.
    backup::Entity::update(backup::ActiveModel {
        id: ActiveValue::Unchanged(id),
        status: ActiveValue::Set(BackupStatus::Running),
        attempt: ActiveValue::Set(1),
        storage_path: ActiveValue::Set(Some(path.into())),
        lease_owner: ActiveValue::Set(Some("dead-worker".into())),
        lease_expires_at: ActiveValue::Set(Some(now - chrono::Duration::seconds(5))),
        started_at: ActiveValue::Set(Some(now)),
        ..Default::default()
    })
    .exec(&f.app.cairn.db)
    .await
    .unwrap();
    backup_copy::ActiveModel {
        id: ActiveValue::Set(uuid::Uuid::now_v7()),
        backup_id: ActiveValue::Set(id),
        organization_id: ActiveValue::Set(uuid::Uuid::parse_str(&f.org.id).unwrap()),
        target_id: ActiveValue::Set(Some(uuid::Uuid::parse_str(&s3).unwrap())),
        target_name: ActiveValue::Set("s3-copy".into()),
        status: ActiveValue::Set(CopyStatus::Running),
        storage_path: ActiveValue::Set(Some(path.into())),
        sha256: ActiveValue::Set(None),
        size: ActiveValue::Set(None),
        attempt: ActiveValue::Set(1),
        next_attempt_at: ActiveValue::Set(now),
        error_code: ActiveValue::Set(None),
        error_message: ActiveValue::Set(None),
        lease_owner: ActiveValue::Set(None),
        lease_expires_at: ActiveValue::Set(None),
        created_at: ActiveValue::Set(now),
        started_at: ActiveValue::Set(Some(now)),
        finished_at: ActiveValue::Set(None),
    }
    .insert(&f.app.cairn.db)
    .await
    .unwrap();
    f.drain().await;
    let reaped = f.backup(&id.to_string()).await;
    assert_eq!(reaped["status"], "failed", "{reaped}");
    assert_eq!(reaped["errorCode"], "worker_lost", "{reaped}");
    let copy = copy_of(&reaped, &s3);
    assert_eq!(copy["status"], "failed", "{reaped}");
    assert_eq!(copy["error"]["code"], "worker_lost", "{reaped}");
}
