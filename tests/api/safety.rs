//! Paths that would lose data or make backups unreadable, tried as a
//! careless operator and as a hostile tenant would: each test reproduces
//! the loss and checks that it no longer happens.

use cairn_entity::backup_job;
use sea_orm::EntityTrait;
use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{
    env, fixture, fixture_with, s3_objects, s3_target_from_env, unique, Backend, Fixture, Receiver,
};

impl Fixture {
    async fn retention(&self, job: &str) -> Value {
        let reply = self
            .app
            .get(
                &self.org.path(&format!("/backups/jobs/{job}/retention")),
                &self.org.viewer,
            )
            .await;
        reply.expect(200).clone()
    }
}

/// The reasons retention gives for `backup` (empty: it would be pruned).
fn reasons_of(retention: &Value, backup: &str) -> Vec<String> {
    retention["series"][0]["backups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["backupId"] == backup)
        .unwrap_or_else(|| panic!("{backup} is not in {retention}"))["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect()
}

/// Excluding everything, or emptying the volume, then running the job
/// three times used to make three "successful" empty backups and prune the
/// real one. Now an exclude set that leaves nothing is refused, shrunken
/// backups are flagged `suspicious` (notified, not counted by retention)
/// until an admin accepts them, and a backup a pending restore reads is not
/// pruned.
async fn empty_backups_cannot_push_the_real_one_out(backend: Backend) {
    let f = fixture(backend, "acme").await;
    let data = f.volume_dir("shop", "blue", "data");
    for i in 0..20 {
        std::fs::write(data.join(format!("file-{i}")), vec![b'x'; 1000]).unwrap();
    }
    let hook = Receiver::start(Vec::new()).await;
    f.create_channel(json!({ "name": "hook", "type": "webhook", "config": { "url": hook.url } }))
        .await;
    let app_id = f.create_shop().await;
    // keepLast 1: a single newer counted backup would prune the real one.
    let job = f
        .create_job_for(&app_id, json!({ "keepLast": 1, "notifyOnSuccess": false }))
        .await;
    let real = f.run_to_end(&job).await;
    assert_eq!(real["status"], "success", "{real}");
    assert_eq!(real["suspicious"], false);
    let real_id = real["id"].as_str().unwrap().to_owned();
    let real_archive = f.stored(real["storagePath"].as_str().unwrap());

    // An exclude set that leaves nothing is refused, and writes nothing.
    for everything in [json!(["**"]), json!(["*", ".*"])] {
        f.app
            .put(
                &f.org.path(&format!("/apps/{app_id}")),
                &f.org.admin,
                &json!({ "name": "shop", "volumes": [{ "name": "data", "excludePatterns": everything }] }),
            )
            .await
            .expect_field_error(422, "volumes[0].excludePatterns");
    }
    f.app
        .post(
            &f.org.path("/apps/shop/deployments"),
            &f.org.operator,
            &json!({ "slot": "blue", "volumes": [{ "name": "data", "excludePatterns": ["**"] }] }),
        )
        .await
        .expect_field_error(422, "volumes[0].excludePatterns");

    // The volume is emptied all the same; three runs follow.
    for i in 0..20 {
        std::fs::remove_file(data.join(format!("file-{i}"))).unwrap();
    }
    let mut empties = Vec::new();
    for _ in 0..3 {
        let empty = f.run_to_end(&job).await;
        assert_eq!(empty["status"], "success", "{empty}");
        assert_eq!(empty["suspicious"], true, "{empty}");
        let reason = empty["suspiciousReason"].as_str().unwrap();
        assert!(
            reason.contains(&real_id),
            "compared with the real one: {reason}"
        );
        assert!(reason.starts_with("0 files"), "{reason}");
        empties.push(empty["id"].as_str().unwrap().to_owned());
    }
    let kept = f.backup(&real_id).await;
    assert_eq!(kept["status"], "success", "the real backup is kept: {kept}");
    assert!(real_archive.is_file(), "its archive is still stored");
    let retention = f.retention(&job).await;
    assert_eq!(reasons_of(&retention, &real_id), ["last"]);
    for empty in &empties {
        assert_eq!(reasons_of(&retention, empty), ["suspicious"]);
    }

    // Each run was notified as suspicious, though notifyOnSuccess is off.
    cairn_core::notifications::dispatch_due(&f.app.cairn, "test", chrono::Utc::now())
        .await
        .unwrap();
    let events: Vec<Value> = hook.requests().iter().map(|r| r.json()).collect();
    assert_eq!(events.len(), 3, "{events:?}");
    for event in &events {
        assert_eq!(event["event"], "backup.run.suspicious");
        assert_eq!(event["volumes"][0]["suspicious"], true);
        assert!(event["title"].as_str().unwrap().contains("suspicious"));
    }

    // Only an admin accepts; once accepted, a backup counts.
    let accept = |id: &str| f.org.path(&format!("/backups/history/{id}/accept"));
    f.app
        .post(&accept(&empties[2]), &f.org.operator, &json!({}))
        .await
        .expect(403);
    f.app
        .post(&accept(&real_id), &f.org.admin, &json!({}))
        .await
        .expect(409);
    let accepted = f
        .app
        .post(&accept(&empties[2]), &f.org.admin, &json!({}))
        .await;
    assert!(accepted.expect(200)["acceptedAt"].is_string());
    f.app
        .post(&accept(&empties[2]), &f.org.admin, &json!({}))
        .await
        .expect(409);
    let retention = f.retention(&job).await;
    assert_eq!(reasons_of(&retention, &empties[2]), ["last"]);
    assert!(reasons_of(&retention, &real_id).is_empty(), "now prunable");

    // A restore about to read the real backup keeps it from being pruned.
    let requested = f
        .request_restore(&real_id, json!({ "confirm": real_id }))
        .await;
    requested.expect(202);
    assert_eq!(reasons_of(&f.retention(&job).await, &real_id), ["reading"]);
    let job_model = backup_job::Entity::find_by_id(uuid::Uuid::parse_str(&job).unwrap())
        .one(&f.app.cairn.db)
        .await
        .unwrap()
        .unwrap();
    cairn_worker::prune(&f.app.cairn, &job_model).await.unwrap();
    assert_eq!(f.backup(&real_id).await["status"], "success");
    assert!(real_archive.is_file());
    // The restore runs and brings the files back.
    f.drain().await;
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 20);
    assert!(reasons_of(&f.retention(&job).await, &real_id).is_empty());

    // A download may still be reading it for as long as a pre-signed URL
    // would be valid: kept meanwhile.
    let downloaded = f
        .app
        .get(
            &f.org.path(&format!("/backups/history/{real_id}/download")),
            &f.org.viewer,
        )
        .await;
    assert_eq!(downloaded.status, 200);
    assert_eq!(reasons_of(&f.retention(&job).await, &real_id), ["reading"]);
    cairn_worker::prune(&f.app.cairn, &job_model).await.unwrap();
    assert_eq!(f.backup(&real_id).await["status"], "success");
    assert!(real_archive.is_file());
}
both_backends!(empty_backups_cannot_push_the_real_one_out);

/// A target that holds archives keeps its location: moving the bucket,
/// prefix, path or type would leave every record pointing at nothing.
/// Credentials may change; a target without archives may move freely.
async fn a_target_holding_archives_keeps_its_location(backend: Backend) {
    let f = fixture(backend, "acme").await;
    let prefix = unique("fixed");
    let s3 = |bucket: &str, prefix: &str, secret: &str| {
        s3_target_from_env(
            "s3",
            json!({ "bucket": bucket, "prefix": prefix, "secretAccessKey": secret }),
        )
    };
    let secret = env("TEST_S3_SECRET_KEY");
    let target = f
        .create_target(s3(&env("TEST_S3_BUCKET"), "elsewhere/", &secret))
        .await;
    let path = f.org.path(&format!("/backups/targets/{target}"));
    // No archive yet: it may move.
    f.app
        .put(
            &path,
            &f.org.admin,
            &s3(&env("TEST_S3_BUCKET"), &prefix, &secret),
        )
        .await
        .expect(200);

    std::fs::write(f.volume_dir("shop", "blue", "data").join("f"), b"kept").unwrap();
    let app_id = f.create_shop().await;
    let job = f
        .create_job_for(&app_id, json!({ "targetId": target, "keepLast": 3 }))
        .await;
    let record = f.run_to_end(&job).await;
    assert_eq!(record["status"], "success", "{record}");
    let object = s3_objects(&prefix).join(record["storagePath"].as_str().unwrap());
    assert!(object.is_file(), "{}", object.display());

    for (body, field) in [
        (s3("another-bucket", &prefix, &secret), "config.bucket"),
        (
            s3(&env("TEST_S3_BUCKET"), "moved/", &secret),
            "config.prefix",
        ),
        (
            json!({ "name": "s3", "type": "local", "config": { "path": "moved" } }),
            "type",
        ),
    ] {
        let refused = f.app.put(&path, &f.org.admin, &body).await;
        refused.expect_field_error(409, field);
    }
    // Credentials may change (here: a wrong secret, so the next backup
    // fails, and the right one back).
    f.app
        .put(
            &path,
            &f.org.admin,
            &s3(&env("TEST_S3_BUCKET"), &prefix, "rotated-secret"),
        )
        .await
        .expect(200);
    f.app
        .put(
            &path,
            &f.org.admin,
            &s3(&env("TEST_S3_BUCKET"), &prefix, &secret),
        )
        .await
        .expect(200);
    let again = f.run_to_end(&job).await;
    assert_eq!(again["status"], "success", "{again}");
    // The first archive still reads back through the API.
    let restored = f.preview(record["id"].as_str().unwrap()).await;
    assert_eq!(restored["restorable"], true);
}

both_backends!(a_target_holding_archives_keeps_its_location);

/// The smaller holes: a refused enum value is not echoed; an organization's
/// local target may not pass through a symlink (at save, and at use when a
/// link appears later); one deploy registers at most `max_volumes_per_app`
/// volumes.
async fn smaller_holes_are_closed(backend: Backend) {
    let f = fixture_with(backend, "acme", |config| {
        config.max_volumes_per_app = 5;
    })
    .await;
    let reply = f
        .app
        .post(
            &f.org.path("/apps"),
            &f.org.admin,
            &json!({ "name": "shop", "volumes": [{ "name": "data", "kind": "hunter2-password" }] }),
        )
        .await;
    reply.expect_field_error(422, "volumes[0].kind");
    assert!(!reply.text.contains("hunter2"), "{}", reply.text);

    // Symlinks under the organization's local backup directory.
    let org_dir = f.app.cairn.config.local_backup_root().join("acme");
    std::fs::create_dir_all(&org_dir).unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), org_dir.join("linked")).unwrap();
    let local = |path: &str| json!({ "name": path, "type": "local", "config": { "path": path } });
    for path in ["linked", "linked/deeper"] {
        f.app
            .post(&f.org.path("/backups/targets"), &f.org.admin, &local(path))
            .await
            .expect_field_error(422, "config.path");
    }
    let target = f.create_target(local("real")).await;
    std::fs::write(f.volume_dir("shop", "blue", "data").join("f"), b"x").unwrap();
    let app_id = f.create_shop().await;
    let job = f
        .create_job_for(&app_id, json!({ "targetId": target, "keepLast": 1 }))
        .await;
    // The directory becomes a link behind Cairn's back.
    std::os::unix::fs::symlink(outside.path(), org_dir.join("real")).unwrap();
    let record = f.run_to_end(&job).await;
    assert_eq!(record["status"], "failed", "{record}");
    assert!(
        record["errorMessage"].as_str().unwrap().contains("symlink"),
        "{record}"
    );
    assert_eq!(
        std::fs::read_dir(outside.path()).unwrap().count(),
        0,
        "nothing written through it"
    );

    // At most five volumes per app here.
    let volumes: Vec<Value> = (0..6).map(|i| json!({ "name": format!("v{i}") })).collect();
    f.app
        .post(
            &f.org.path("/apps/many/deployments"),
            &f.org.operator,
            &json!({ "slot": "blue", "volumes": volumes }),
        )
        .await
        .expect_field_error(422, "volumes");
    f.app
        .post(
            &f.org.path("/apps/many/deployments"),
            &f.org.operator,
            &json!({ "slot": "blue", "volumes": volumes[..5] }),
        )
        .await
        .expect(201);
}
both_backends!(smaller_holes_are_closed);

/// A target's or receiver's response body stays with them: connection
/// tests and deliveries report the status code and a reason of Cairn's
/// own, never what an internal service sent back.
async fn upstream_bodies_stay_upstream(backend: Backend) {
    let f = fixture(backend, "acme").await;
    // An "S3 endpoint" and a webhook receiver that answer 403 with a body.
    let upstream = Receiver::start(vec![403; 50]).await;
    let endpoint = upstream.url.split("/hooks/").next().unwrap().to_owned();
    let target = f
        .create_target(json!({ "name": "s3", "type": "s3", "config": {
            "bucket": "cairn-backups", "accessKeyId": "k", "secretAccessKey": "s",
            "endpoint": endpoint } }))
        .await;
    let report = f
        .app
        .post(
            &f.org.path(&format!("/backups/targets/{target}/test")),
            &f.org.operator,
            &json!({}),
        )
        .await;
    let report = report.expect(200).clone();
    assert_eq!(report["ok"], false, "{report}");
    assert!(!upstream.requests().is_empty(), "the endpoint was asked");
    let text = report.to_string();
    assert!(text.contains("403"), "{text}");
    assert!(
        !text.contains("receiver says no"),
        "the body came back: {text}"
    );

    let channel = f
        .create_channel(
            json!({ "name": "hook", "type": "webhook", "config": { "url": upstream.url } }),
        )
        .await;
    let tested = f.test_channel(&channel).await;
    let tested = tested.expect(200).clone();
    assert_eq!(tested["ok"], false);
    assert_eq!(tested["responseCode"], 403);
    let text = tested.to_string();
    assert!(text.contains("refused the request"), "{text}");
    assert!(
        !text.contains("receiver says no"),
        "the body came back: {text}"
    );
}
both_backends!(upstream_bodies_stay_upstream);

/// Deleting an organization is deliberate and reversible for a while: it
/// needs the slug typed again; its jobs stop and its tokens reach nothing;
/// it can be undeleted until the grace period ends; then its records are
/// purged, its archives stay, and its slug is never given out again.
async fn deleting_an_organization_is_deliberate_and_reversible(backend: Backend) {
    use cairn_scheduler::{LocalLocks, Scheduler};
    let f = fixture(backend, "acme").await;
    std::fs::write(f.volume_dir("shop", "blue", "data").join("f"), b"x").unwrap();
    let app_id = f.create_shop().await;
    let job = f
        .create_job_for(&app_id, json!({ "schedule": "* * * * *", "keepLast": 1 }))
        .await;
    let record = f.run_to_end(&job).await;
    let archive = f.stored(record["storagePath"].as_str().unwrap());
    let org = format!("/api/v1/organizations/{}", f.org.id);
    let admin = &f.app.admin_token;
    f.app
        .delete(&format!("{org}?confirm=wrong"), admin)
        .await
        .expect_field_error(422, "confirm");
    f.app
        .delete(&format!("{org}?confirm=acme"), &f.org.admin)
        .await
        .expect(403);
    let deleted = f.app.delete(&format!("{org}?confirm=acme"), admin).await;
    deleted.expect(200);

    // Its tokens reach nothing; its jobs do not fire.
    f.app
        .get(&f.org.path("/backups/jobs"), &f.org.admin)
        .await
        .expect(404);
    f.app
        .post(
            &f.org.path(&format!("/backups/jobs/{job}/run")),
            &f.org.operator,
            &json!({}),
        )
        .await
        .expect(404);
    let scheduler = Scheduler::new(
        f.app.cairn.clone(),
        std::sync::Arc::new(LocalLocks::default()),
        "test".into(),
    );
    let later = chrono::Utc::now() + chrono::Duration::minutes(2);
    let report = scheduler.tick(later).await.unwrap();
    assert_eq!(report.due, 0, "{report:?}");
    // The slug is still taken while the organization waits for its purge.
    f.app
        .post(
            "/api/v1/organizations",
            admin,
            &json!({ "slug": "acme", "name": "x" }),
        )
        .await
        .expect_field_error(409, "slug");

    // Undeleted within the grace period, everything is back.
    let undeleted = f
        .app
        .post(&format!("{org}/undelete"), admin, &json!({}))
        .await;
    assert_eq!(undeleted.expect(200)["deletedAt"], Value::Null);
    f.app
        .get(&f.org.path("/backups/jobs"), &f.org.admin)
        .await
        .expect(200);
    assert_eq!(
        f.backup(record["id"].as_str().unwrap()).await["status"],
        "success"
    );

    // Deleted again and left past the grace period: purged.
    f.app
        .delete(&format!("{org}?confirm=acme"), admin)
        .await
        .expect(200);
    let early = cairn_worker::housekeeping(
        &f.app.cairn,
        chrono::Utc::now() + chrono::Duration::days(29),
    )
    .await
    .unwrap();
    assert_eq!(early.organizations_purged, 0);
    let purged = cairn_worker::housekeeping(
        &f.app.cairn,
        chrono::Utc::now() + chrono::Duration::days(31),
    )
    .await
    .unwrap();
    assert_eq!(purged.organizations_purged, 1);
    f.app.get(&org, admin).await.expect(404);
    assert!(archive.is_file(), "archives in storage are never deleted");
    f.app
        .post(
            "/api/v1/organizations",
            admin,
            &json!({ "slug": "acme", "name": "x" }),
        )
        .await
        .expect_field_error(409, "slug");
}
both_backends!(deleting_an_organization_is_deliberate_and_reversible);
