//! Tenant isolation: what one organization's token can reach, and what a
//! tenant can make Cairn reach. Each test fails if its boundary reopens.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{
    describe, drain, env, extract, fixture_with, postgres_volume, psql, restorable_volume,
    s3_target_from_env, unique, worker, Backend, FaultProxy, Fixture, Org, Reply,
};

const ORG_TEMPLATE: &str = "{org}-{app}-{slot}_{volume}";

fn shop() -> Value {
    json!({ "slot": "blue", "volumes": [{ "name": "data" }] })
}

async fn deploy(f: &Fixture, org: &Org, body: &Value) -> Reply {
    f.app
        .post(&org.path("/apps/shop/deployments"), &org.operator, body)
        .await
}

/// With the default template, two organizations' apps named `shop` would
/// share `shop-blue_data`: the second claimant is refused, naming the
/// volume, and nothing of its deploy is written.
async fn the_second_claimant_of_a_directory_is_refused(backend: Backend) {
    let f = fixture_with(backend, "alpha", |_| {}).await;
    let beta = f.app.org("beta").await;
    let first = deploy(&f, &f.org, &shop()).await;
    let first = first.expect(201);
    assert_eq!(
        first["app"]["volumes"][0]["directories"],
        json!(["shop-blue_data", "shop-green_data"])
    );
    assert_eq!(first["app"]["volumes"][0]["conflict"], false);

    let second = deploy(&f, &beta, &shop()).await;
    second.expect_field_error(409, "volumes[0].name");
    assert!(
        !second.text.contains("alpha"),
        "the other organization stays unnamed: {}",
        second.text
    );
    let apps = f.app.get(&beta.path("/apps"), &beta.viewer).await;
    assert_eq!(apps.expect(200)["items"], json!([]), "nothing written");
    // Creating the app directly is refused the same way.
    let created = f
        .app
        .post(
            &beta.path("/apps"),
            &beta.admin,
            &json!({ "name": "shop", "volumes": [{ "name": "other" }, { "name": "data" }] }),
        )
        .await;
    created.expect_field_error(409, "volumes[1].name");
    // A database volume has no directory: the name is free for it.
    let database = f
        .app
        .post(
            &beta.path("/apps"),
            &beta.admin,
            &json!({ "name": "shop", "volumes": [{ "name": "data", "kind": "postgres",
                "postgres": { "host": "db.example.com", "database": "shop",
                              "username": "shop", "password": "pw" } }] }),
        )
        .await;
    assert_eq!(database.expect(201)["volumes"][0]["directories"], json!([]));
}
both_backends!(the_second_claimant_of_a_directory_is_refused);

/// With `{org}` in the template both organizations deploy `shop`; each one's
/// backups read only its own directory and each restore writes only its own.
async fn each_organization_backs_up_and_restores_its_own_directory(backend: Backend) {
    let f = fixture_with(backend, "alpha", |config| {
        config.volume_name_template =
            cairn_core::directories::VolumeNameTemplate::parse(ORG_TEMPLATE).unwrap();
    })
    .await;
    let beta = f.app.org("beta").await;
    let root = f.volumes.path();
    let alpha_data = root.join("alpha-shop-blue_data/_data");
    let beta_data = root.join("beta-shop-blue_data/_data");
    restorable_volume(&alpha_data, 2);
    std::fs::create_dir_all(&beta_data).unwrap();
    std::fs::write(beta_data.join("beta-only.txt"), b"beta's data").unwrap();
    // The default template's directory exists too and must never be read.
    let decoy = root.join("shop-blue_data/_data");
    std::fs::create_dir_all(&decoy).unwrap();
    std::fs::write(decoy.join("decoy.txt"), b"nobody's").unwrap();

    let mut backups = Vec::new();
    for (org, data) in [(&f.org, &alpha_data), (&beta, &beta_data)] {
        let deployed = deploy(&f, org, &shop()).await;
        let deployed = deployed.expect(201);
        let app_id = deployed["app"]["id"].as_str().unwrap().to_owned();
        let slug = if org.id == f.org.id { "alpha" } else { "beta" };
        assert_eq!(
            deployed["app"]["volumes"][0]["directories"],
            json!([
                format!("{slug}-shop-blue_data"),
                format!("{slug}-shop-green_data")
            ])
        );
        let now = f
            .app
            .post(
                &org.path(&format!("/apps/{app_id}/backup-now")),
                &org.operator,
                &json!({}),
            )
            .await;
        let backup_id = now.expect(202)["runs"][0]["backups"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        f.drain().await;
        let record = f
            .app
            .get(
                &org.path(&format!("/backups/history/{backup_id}")),
                &org.viewer,
            )
            .await;
        let record = record.expect(200).clone();
        assert_eq!(record["status"], "success", "{record}");
        backups.push((org, data.to_path_buf(), backup_id, describe(data)));
    }

    // Both volumes change; each organization restores its own backup.
    for (_, data, _, _) in &backups {
        std::fs::write(data.join("changed-later.txt"), b"x").unwrap();
    }
    let decoy_before = describe(&decoy);
    for (org, data, backup_id, original) in &backups {
        let other: &Path = if data == &alpha_data {
            &beta_data
        } else {
            &alpha_data
        };
        let other_before = describe(other);
        let requested = f
            .app
            .post(
                &org.path(&format!("/backups/history/{backup_id}/restore")),
                &org.operator,
                &json!({ "confirm": backup_id, "safetyBackup": false }),
            )
            .await;
        let restore_id = requested.expect(202)["id"].as_str().unwrap().to_owned();
        f.drain().await;
        let restored = f
            .app
            .get(
                &org.path(&format!("/backups/restores/{restore_id}")),
                &org.viewer,
            )
            .await;
        let restored = restored.expect(200).clone();
        assert_eq!(restored["status"], "success", "{restored}");
        assert_eq!(&describe(data), original, "its own tree is back");
        assert_eq!(
            describe(other),
            other_before,
            "the other tenant's is untouched"
        );
    }
    assert_eq!(describe(&decoy), decoy_before);
}
both_backends!(each_organization_backs_up_and_restores_its_own_directory);

/// An upgrade that finds two organizations' volumes resolving to the same
/// directory under the old naming keeps the earlier one's and flags the
/// later one `conflict`: visible on the volume, never backed up or restored
/// into, until a deploy under a template that tells them apart.
async fn an_upgrade_flags_volumes_that_shared_a_directory(backend: Backend) {
    use cairn_migration::{Migrator, MigratorTrait};
    use sea_orm::sea_query::{Alias, Query};
    use sea_orm::{ConnectionTrait, Database};

    let scratch = tempfile::tempdir().unwrap();
    let url = crate::helpers::fresh_database(backend, scratch.path()).await;
    let db = Database::connect(url.as_str()).await.unwrap();
    // The schema as it was before volume directories.
    Migrator::up(&db, Some(7)).await.unwrap();
    let now = chrono::Utc::now();
    let mut volume_ids = Vec::new();
    for (i, slug) in ["alpha", "beta"].into_iter().enumerate() {
        let (org, app, volume) = (
            uuid::Uuid::now_v7(),
            uuid::Uuid::now_v7(),
            uuid::Uuid::now_v7(),
        );
        let created = now + chrono::Duration::seconds(i as i64);
        let statements = [
            Query::insert()
                .into_table(Alias::new("organizations"))
                .columns(["id", "slug", "name", "created_at"].map(Alias::new))
                .values_panic([org.into(), slug.into(), slug.into(), created.into()])
                .to_owned(),
            Query::insert()
                .into_table(Alias::new("apps"))
                .columns(
                    ["id", "organization_id", "name", "created_at", "updated_at"].map(Alias::new),
                )
                .values_panic([
                    app.into(),
                    org.into(),
                    "shop".into(),
                    created.into(),
                    created.into(),
                ])
                .to_owned(),
            Query::insert()
                .into_table(Alias::new("volumes"))
                .columns(
                    ["id", "app_id", "name", "persistent", "kind", "created_at"].map(Alias::new),
                )
                .values_panic([
                    volume.into(),
                    app.into(),
                    "data".into(),
                    true.into(),
                    "generic".into(),
                    created.into(),
                ])
                .to_owned(),
        ];
        for statement in statements {
            db.execute(db.get_database_backend().build(&statement))
                .await
                .unwrap();
        }
        volume_ids.push((org, volume));
    }
    db.close().await.unwrap();

    // The upgrade: Cairn starts on the old database and migrates it.
    let f = fixture_with(backend, "gamma", |config| {
        config.database_url = Some(secrecy::SecretString::from(url.clone()));
    })
    .await;
    let volume_of = |org: uuid::Uuid| {
        let app = &f.app;
        async move {
            let apps = app
                .get(
                    &format!("/api/v1/organizations/{org}/apps"),
                    &app.admin_token,
                )
                .await;
            apps.expect(200)["items"][0]["volumes"][0].clone()
        }
    };
    let alpha = volume_of(volume_ids[0].0).await;
    assert_eq!(alpha["conflict"], false, "{alpha}");
    assert_eq!(
        alpha["directories"],
        json!(["shop-blue_data", "shop-green_data"])
    );
    let beta = volume_of(volume_ids[1].0).await;
    assert_eq!(beta["conflict"], true, "{beta}");
    assert_eq!(beta["directories"], json!([]));

    // Beta's backups fail without reading alpha's directory.
    std::fs::create_dir_all(f.volumes.path().join("shop-blue_data/_data")).unwrap();
    std::fs::write(
        f.volumes.path().join("shop-blue_data/_data/alpha.txt"),
        b"alpha",
    )
    .unwrap();
    let beta_path = |rest: &str| format!("/api/v1/organizations/{}{rest}", volume_ids[1].0);
    let apps = f.app.get(&beta_path("/apps"), &f.app.admin_token).await;
    let app_id = apps.expect(200)["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let job = f
        .app
        .post(
            &beta_path("/backups/jobs"),
            &f.app.admin_token,
            &json!({ "name": "n", "schedule": "0 2 * * *", "appIds": [app_id], "keepLast": 1 }),
        )
        .await;
    let job = job.expect(201)["id"].as_str().unwrap().to_owned();
    let run = f
        .app
        .post(
            &beta_path(&format!("/backups/jobs/{job}/run")),
            &f.app.admin_token,
            &json!({}),
        )
        .await;
    let backup_id = run.expect(202)["backups"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    f.drain().await;
    let record = f
        .app
        .get(
            &beta_path(&format!("/backups/history/{backup_id}")),
            &f.app.admin_token,
        )
        .await;
    let record = record.expect(200);
    assert_eq!(record["status"], "failed", "{record}");
    assert_eq!(record["errorCode"], "volume_conflict", "{record}");
    assert_eq!(record["archiveSize"], Value::Null);

    // A deploy under the old naming is still refused; nothing changes.
    let again = f
        .app
        .post(
            &beta_path("/apps/shop/deployments"),
            &f.app.admin_token,
            &shop(),
        )
        .await;
    again.expect_field_error(409, "volumes[0].name");
    assert_eq!(volume_of(volume_ids[1].0).await["conflict"], true);
}
both_backends!(an_upgrade_flags_volumes_that_shared_a_directory);

/// An organization's SSH target must carry its own key: the server's SSH
/// agent holds the operator's keys. Refused at save, and at run time for a
/// row that has none (one stored before the rule, or changed behind the
/// API's back).
async fn organization_ssh_targets_never_use_the_agent(backend: Backend) {
    use cairn_entity::backup_target;
    use sea_orm::{ActiveValue, EntityTrait};
    let f = fixture_with(backend, "alpha", |_| {}).await;
    let config = |key: Option<String>| {
        let mut config = json!({
            "host": env("TEST_SSH_HOST"), "port": env("TEST_SSH_PORT").parse::<u16>().unwrap(),
            "username": env("TEST_SSH_USER"), "path": "/srv/backups" });
        if let Some(key) = key {
            config["privateKey"] = json!(key);
        }
        json!({ "name": "ssh", "type": "ssh", "config": config })
    };
    let path = f.org.path("/backups/targets");
    f.app
        .post(&path, &f.org.admin, &config(None))
        .await
        .expect_field_error(422, "config.privateKey");
    f.app
        .post(&path, &f.org.admin, &config(Some(String::new())))
        .await
        .expect_field_error(422, "config.privateKey");
    let key = std::fs::read_to_string(env("TEST_SSH_KEY")).unwrap();
    let created = f.app.post(&path, &f.org.admin, &config(Some(key))).await;
    let target_id = created.expect(201)["id"].as_str().unwrap().to_owned();
    // Removing the key on update is refused too.
    f.app
        .put(
            &f.org.path(&format!("/backups/targets/{target_id}")),
            &f.org.admin,
            &config(Some(String::new())),
        )
        .await
        .expect_field_error(422, "config.privateKey");

    // A stored row without a key is refused when it is used.
    backup_target::Entity::update(backup_target::ActiveModel {
        id: ActiveValue::Unchanged(uuid::Uuid::parse_str(&target_id).unwrap()),
        secrets_ciphertext: ActiveValue::Set(None),
        ..Default::default()
    })
    .exec(&f.app.cairn.db)
    .await
    .unwrap();
    std::fs::write(f.volume_dir("shop", "blue", "data").join("f"), b"x").unwrap();
    let app_id = f.create_shop().await;
    let job = f
        .create_job_for(&app_id, json!({ "targetId": target_id, "keepLast": 1 }))
        .await;
    let record = f.run_to_end(&job).await;
    assert_eq!(record["status"], "failed", "{record}");
    assert_eq!(record["errorCode"], "ssh_key_required", "{record}");
    assert!(record["errorMessage"]
        .as_str()
        .unwrap()
        .contains("config.privateKey"));
}
both_backends!(organization_ssh_targets_never_use_the_agent);

/// `allow_local_backups` holds when a target is used, not only when it is
/// saved: a worker of a server where it is off fails the backup
/// `local_backups_disabled` and writes nothing.
async fn local_targets_are_refused_at_run_time_when_disabled(backend: Backend) {
    let f = fixture_with(backend, "alpha", |_| {}).await;
    let data = f.volume_dir("shop", "blue", "data");
    std::fs::write(data.join("f"), b"x").unwrap();
    let app_id = f.create_shop().await;
    // The system default target is a local one.
    let job = f.create_job_for(&app_id, json!({ "keepLast": 1 })).await;
    let run = f.run(&job).await;
    let backup_id = run["backups"][0]["id"].as_str().unwrap().to_owned();

    let mut config = crate::helpers::test_config(
        &f.app.cairn.config.data_dir,
        crate::helpers::database_url_of(&f.app),
        "unused-admin-token",
    );
    config.volume_root = f.volumes.path().to_path_buf();
    config.allow_local_backups = false;
    let strict = cairn_core::Cairn::open(config, cairn_core::StartMode::Embedded)
        .await
        .unwrap();
    let strict_worker = cairn_worker::Worker::new(
        strict,
        cairn_worker::WorkerOptions {
            concurrency: 1,
            lease: Duration::from_secs(30),
            poll: Duration::from_millis(50),
            owner: "strict".into(),
        },
    );
    drain(&strict_worker).await;
    let record = f.backup(&backup_id).await;
    assert_eq!(record["status"], "failed", "{record}");
    assert_eq!(record["errorCode"], "local_backups_disabled", "{record}");
    assert!(record["errorMessage"]
        .as_str()
        .unwrap()
        .contains("allow_local_backups"));
    let written: Vec<_> = walkdir::WalkDir::new(f.app.cairn.config.local_backup_root())
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .collect();
    assert!(written.is_empty(), "nothing written: {written:?}");
}
both_backends!(local_targets_are_refused_at_run_time_when_disabled);

/// A viewer reading the encryption key never creates the key pair.
async fn reading_the_encryption_key_writes_nothing(backend: Backend) {
    use cairn_entity::organization;
    use sea_orm::EntityTrait;
    let f = fixture_with(backend, "alpha", |_| {}).await;
    let path = f.org.path("/backups/encryption-key");
    let absent = f.app.get(&path, &f.org.viewer).await;
    absent.expect(404);
    assert!(absent.text.contains("export"), "{}", absent.text);
    let org = organization::Entity::find_by_id(uuid::Uuid::parse_str(&f.org.id).unwrap())
        .one(&f.app.cairn.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(org.age_recipient, None);
    assert_eq!(org.age_identity_ciphertext, None);
    let recipient = f.export_key().await["recipient"].clone();
    let read = f.app.get(&path, &f.org.viewer).await;
    assert_eq!(read.expect(200)["recipient"], recipient);
}
both_backends!(reading_the_encryption_key_writes_nothing);

/// A backup and a restore of one volume never overlap: requested together,
/// the restore goes first and the backup waits for it, so the archive holds
/// exactly the restored tree (never a mix); and a restore waits while a
/// backup of its destination runs. Enforced by the claims themselves.
async fn a_backup_and_a_restore_of_one_volume_never_overlap(backend: Backend) {
    use cairn_entity::backup;
    use sea_orm::{ActiveValue, EntityTrait};
    let f = fixture_with(backend, "alpha", |_| {}).await;
    let data = f.volume_dir("shop", "blue", "data");
    for i in 0..2000 {
        std::fs::write(data.join(format!("before-{i:04}")), i.to_string()).unwrap();
    }
    let before = describe(&data);
    let app_id = f.create_shop().await;
    let job = f
        .create_job_for(&app_id, json!({ "keepLast": 5, "compression": "none" }))
        .await;
    let first = f.run_to_end(&job).await;
    let first_id = first["id"].as_str().unwrap().to_owned();
    for i in 0..2000 {
        std::fs::remove_file(data.join(format!("before-{i:04}"))).unwrap();
        std::fs::write(data.join(format!("after-{i:04}")), i.to_string()).unwrap();
    }
    let after = describe(&data);

    // Requested together; two workers race for them.
    let requested = f
        .request_restore(
            &first_id,
            json!({ "confirm": first_id, "safetyBackup": false }),
        )
        .await;
    let restore_id = requested.expect(202)["id"].as_str().unwrap().to_owned();
    let run = f.run(&job).await;
    let backup_id = run["backups"][0]["id"].as_str().unwrap().to_owned();
    let (one, two) = (
        worker(&f.app, Duration::from_secs(30)),
        worker(&f.app, Duration::from_secs(30)),
    );
    tokio::join!(drain(&one), drain(&two));
    drain(&one).await;
    assert_eq!(f.restore(&restore_id).await["status"], "success");
    let record = f.backup(&backup_id).await;
    assert_eq!(record["status"], "success", "{record}");
    let archive = f.stored(record["storagePath"].as_str().unwrap());
    let unpacked = tempfile::tempdir().unwrap();
    extract(&archive, None, unpacked.path());
    let archived = describe(unpacked.path());
    assert!(
        archived == before || archived == after,
        "the archive is a mix of {} entries",
        archived.len()
    );
    assert_eq!(archived, before, "the restore went first");

    // A running backup of the destination holds a restore back.
    let held = f.run(&job).await;
    let held_id = uuid::Uuid::parse_str(held["backups"][0]["id"].as_str().unwrap()).unwrap();
    backup::Entity::update(backup::ActiveModel {
        id: ActiveValue::Unchanged(held_id),
        status: ActiveValue::Set(cairn_entity::enums::BackupStatus::Running),
        attempt: ActiveValue::Set(1),
        lease_owner: ActiveValue::Set(Some("a live worker".into())),
        lease_expires_at: ActiveValue::Set(Some(chrono::Utc::now() + chrono::Duration::minutes(5))),
        ..Default::default()
    })
    .exec(&f.app.cairn.db)
    .await
    .unwrap();
    let second = f
        .request_restore(
            &first_id,
            json!({ "confirm": first_id, "safetyBackup": false }),
        )
        .await;
    let second_id = second.expect(202)["id"].as_str().unwrap().to_owned();
    assert_eq!(drain(&one).await, 0, "nothing may be claimed");
    assert_eq!(f.restore(&second_id).await["status"], "pending");
    backup::Entity::update(backup::ActiveModel {
        id: ActiveValue::Unchanged(held_id),
        status: ActiveValue::Set(cairn_entity::enums::BackupStatus::Failed),
        ..Default::default()
    })
    .exec(&f.app.cairn.db)
    .await
    .unwrap();
    assert_eq!(drain(&one).await, 1);
}
both_backends!(a_backup_and_a_restore_of_one_volume_never_overlap);

/// PostgreSQL volume hosts pass the outbound address policy at save and at
/// every connection: with private endpoints off, metadata and loopback
/// addresses are refused when saved, and a stored row changed behind the
/// API's back fails `postgres_address_refused` — while a listener on that
/// address records that no connection ever arrived.
async fn postgres_hosts_pass_the_address_policy(backend: Backend) {
    use cairn_entity::volume;
    use sea_orm::{ActiveValue, ColumnTrait, EntityTrait, QueryFilter};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let f = fixture_with(backend, "alpha", |config| {
        config.allow_private_endpoints = Some(false);
    })
    .await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let arrived = Arc::new(AtomicUsize::new(0));
    let counter = arrived.clone();
    let listening = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if listener.accept().is_ok() {
                counter.fetch_add(1, Ordering::SeqCst);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let database = |host: &str| {
        json!({ "name": "shop", "volumes": [{ "name": "db", "kind": "postgres",
            "postgres": { "host": host, "port": port, "database": "shop",
                          "username": "shop", "password": "pw" } }] })
    };
    for host in [
        "169.254.169.254",
        "[::ffff:169.254.169.254]",
        "127.0.0.1",
        "localhost",
    ] {
        let refused = f
            .app
            .post(&f.org.path("/apps"), &f.org.admin, &database(host))
            .await;
        refused.expect_field_error(422, "volumes[0].postgres.host");
        // Neither the value sent nor what a name resolves to comes back.
        for address in ["127.0.0.1", "169.254", "::1", "localhost"] {
            assert!(!refused.text.contains(address), "{}", refused.text);
        }
        f.app
            .post(
                &f.org.path("/apps/shop/deployments"),
                &f.org.operator,
                &json!({ "slot": "blue", "volumes": database(host)["volumes"] }),
            )
            .await
            .expect_field_error(422, "volumes[0].postgres.host");
    }
    // A name that does not resolve now is accepted (every connection checks).
    let created = f
        .app
        .post(
            &f.org.path("/apps"),
            &f.org.admin,
            &database("db.cairn-test.invalid"),
        )
        .await;
    let app_id = created.expect(201)["id"].as_str().unwrap().to_owned();
    let job = f.create_job_for(&app_id, json!({ "keepLast": 1 })).await;
    for host in ["127.0.0.1", "169.254.169.254", "::ffff:127.0.0.1"] {
        let stored = volume::Entity::find()
            .filter(volume::Column::AppId.eq(uuid::Uuid::parse_str(&app_id).unwrap()))
            .one(&f.app.cairn.db)
            .await
            .unwrap()
            .unwrap();
        let mut config = stored.connection_config.clone().unwrap();
        config["host"] = json!(host);
        volume::Entity::update(volume::ActiveModel {
            id: ActiveValue::Unchanged(stored.id),
            connection_config: ActiveValue::Set(Some(config)),
            ..Default::default()
        })
        .exec(&f.app.cairn.db)
        .await
        .unwrap();
        let record = f.run_to_end(&job).await;
        assert_eq!(record["status"], "failed", "{record}");
        assert_eq!(record["errorCode"], "postgres_address_refused", "{record}");
        assert!(
            record["errorMessage"]
                .as_str()
                .unwrap()
                .contains("allow_private_endpoints")
                || host == "169.254.169.254",
            "{record}"
        );
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(arrived.load(Ordering::SeqCst), 0, "no connection arrived");
    drop(listening);
}
both_backends!(postgres_hosts_pass_the_address_policy);

/// With `metrics_token` set, the API's `/metrics` answers only that bearer
/// token; job ids (in the backup metrics' labels) are the only identifiers
/// it shows, never an organization's, app's or backup's.
async fn metrics_need_their_token_and_name_only_jobs(backend: Backend) {
    use reqwest::Method;
    let f = fixture_with(backend, "alpha", |config| {
        config.metrics_token = Some(secrecy::SecretString::from("metrics-secret".to_owned()));
    })
    .await;
    std::fs::write(f.volume_dir("shop", "blue", "data").join("f"), b"x").unwrap();
    let app_id = f.create_shop().await;
    let job = f.create_job_for(&app_id, json!({ "keepLast": 1 })).await;
    let record = f.run_to_end(&job).await;
    assert_eq!(record["status"], "success");
    for token in [None, Some("wrong"), Some(f.org.admin.as_str())] {
        let refused = f.app.request(Method::GET, "/metrics", token, None).await;
        refused.expect(401);
        assert!(refused.text.contains("metrics_token"), "{}", refused.text);
    }
    let metrics = f
        .app
        .request(Method::GET, "/metrics", Some("metrics-secret"), None)
        .await;
    metrics.expect(200);
    assert!(
        metrics.text.contains(&format!("job_id=\"{job}\"")),
        "{}",
        metrics.text
    );
    assert!(metrics.text.contains("cairn_http_requests_total"));
    for id in [
        f.org.id.as_str(),
        app_id.as_str(),
        record["id"].as_str().unwrap(),
    ] {
        assert!(!metrics.text.contains(id), "{id} is exposed");
    }
}
both_backends!(metrics_need_their_token_and_name_only_jobs);

/// Nothing runs forever: a `pg_dump` held by a lock past the job's
/// `maxDurationSeconds` is killed, the backup fails `deadline_exceeded`
/// with nothing stored, and the next run succeeds. The API keeps the field
/// within 60–604 800 seconds.
async fn a_backup_past_its_max_duration_is_cancelled(backend: Backend) {
    use cairn_entity::backup_job;
    use sea_orm::{ActiveValue, EntityTrait};
    let f = fixture_with(backend, "alpha", |_| {}).await;
    let server = url::Url::parse(&env("TEST_POSTGRES_URL")).unwrap();
    let database = unique("held").replace('-', "_");
    psql("postgres", &format!("CREATE DATABASE \"{database}\""));
    psql(
        &database,
        "CREATE TABLE orders (id int PRIMARY KEY); INSERT INTO orders VALUES (1);",
    );
    let app_id = f
        .create_app(json!({ "name": "shop", "volumes": [postgres_volume("db", &database)] }))
        .await;
    for bad in [59, 604_801] {
        f.app
            .post(
                &f.org.path("/backups/jobs"),
                &f.org.admin,
                &json!({ "name": "n", "schedule": "0 2 * * *", "appIds": [app_id],
                         "keepLast": 1, "maxDurationSeconds": bad }),
            )
            .await
            .expect_field_error(422, "maxDurationSeconds");
    }
    let job = f
        .create_job_for(&app_id, json!({ "keepLast": 1, "maxDurationSeconds": 60 }))
        .await;
    // Two seconds, set behind the API's back, keep the test short.
    backup_job::Entity::update(backup_job::ActiveModel {
        id: ActiveValue::Unchanged(uuid::Uuid::parse_str(&job).unwrap()),
        max_duration_seconds: ActiveValue::Set(2),
        ..Default::default()
    })
    .exec(&f.app.cairn.db)
    .await
    .unwrap();
    // A session holds an exclusive lock: pg_dump waits for it.
    let mut url = server.clone();
    url.set_path(&database);
    let mut holder =
        std::process::Command::new(std::path::PathBuf::from(env("TEST_PG_BIN")).join("psql"))
            .arg("-XAtq")
            .arg("-d")
            .arg(url.as_str())
            .arg("-c")
            .arg("BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(60);")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    let record = f.run_to_end(&job).await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "cancelled in time"
    );
    assert_eq!(record["status"], "failed", "{record}");
    assert_eq!(record["errorCode"], "deadline_exceeded", "{record}");
    let path = record["storagePath"].as_str().unwrap();
    assert!(!f.stored(path).exists(), "nothing at the key");
    // pg_dump was killed: no session of it waits on the lock any more.
    let waiting = psql(
        "postgres",
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}' \
             AND application_name = 'pg_dump'"
        ),
    );
    assert_eq!(waiting.trim(), "0");
    // The lock goes (the server ends the holder's session); the next run,
    // with the job's own limit, succeeds.
    psql(
        "postgres",
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}' \
             AND pid <> pg_backend_pid()"
        ),
    );
    holder.kill().ok();
    holder.wait().unwrap();
    backup_job::Entity::update(backup_job::ActiveModel {
        id: ActiveValue::Unchanged(uuid::Uuid::parse_str(&job).unwrap()),
        max_duration_seconds: ActiveValue::Set(60),
        ..Default::default()
    })
    .exec(&f.app.cairn.db)
    .await
    .unwrap();
    let next = f.run_to_end(&job).await;
    assert_eq!(next["status"], "success", "{next}");
}

both_backends!(a_backup_past_its_max_duration_is_cancelled);

/// The storage requests of one backup share one retry budget
/// (`storage.retry_budget_seconds`): against a bucket that answers 503 to
/// everything, the backup fails `target_unreachable` once the budget is spent,
/// saying so, instead of retrying each request for as long again.
async fn storage_retries_of_a_backup_share_one_budget(backend: Backend) {
    let f = fixture_with(backend, "alpha", |config| {
        config.storage.retry_budget_seconds = 2;
    })
    .await;
    let proxy = FaultProxy::start(usize::MAX).await;
    let target = f
        .create_target(s3_target_from_env(
            "unwell",
            json!({ "endpoint": proxy.endpoint }),
        ))
        .await;
    std::fs::write(f.volume_dir("shop", "blue", "data").join("f.txt"), b"v1").unwrap();
    let app_id = f.create_shop().await;
    let job = f
        .create_job_for(&app_id, json!({ "targetId": target, "keepLast": 1 }))
        .await;
    let record = f.run_to_end(&job).await;
    assert_eq!(record["status"], "failed", "{record}");
    assert_eq!(record["errorCode"], "target_unreachable", "{record}");
    let message = record["errorMessage"].as_str().unwrap();
    assert!(
        message.contains("budget of 2 s (storage.retry_budget_seconds)"),
        "{message}"
    );
    assert!(message.contains("the server answered 503"), "{message}");
    assert!(proxy.refused() > 1, "the upload was retried");
}
both_backends!(storage_retries_of_a_backup_share_one_budget);

/// Growth is bounded: safety backups expire after
/// `safety_backup_retention_days` (never the only successful backup of
/// their volume), ended deliveries after `notifications.keep_days`, and an
/// admin may delete a backup's archive (`deleted`), the newest of a series
/// only with `?force=true`.
async fn growth_is_bounded(backend: Backend) {
    use cairn_entity::notification_delivery;
    use sea_orm::{ActiveValue, EntityTrait};
    let f = fixture_with(backend, "alpha", |_| {}).await;
    let data = f.volume_dir("shop", "blue", "data");
    std::fs::write(data.join("f"), b"first").unwrap();
    let app_id = f.create_shop().await;
    let job = f.create_job_for(&app_id, json!({ "keepLast": 5 })).await;
    let first = f.run_to_end(&job).await;
    std::fs::write(data.join("f"), b"second").unwrap();
    let second = f.run_to_end(&job).await;
    let (first_id, second_id) = (
        first["id"].as_str().unwrap().to_owned(),
        second["id"].as_str().unwrap().to_owned(),
    );

    // Deleting: admins only; the newest needs force; the archive goes.
    let delete = |id: &str, query: &str| f.org.path(&format!("/backups/history/{id}{query}"));
    f.app
        .delete(&delete(&first_id, ""), &f.org.operator)
        .await
        .expect(403);
    f.app
        .delete(&delete(&second_id, ""), &f.org.admin)
        .await
        .expect_field_error(409, "force");
    let archive = f.stored(first["storagePath"].as_str().unwrap());
    assert!(archive.is_file());
    let deleted = f.app.delete(&delete(&first_id, ""), &f.org.admin).await;
    assert_eq!(deleted.expect(200)["status"], "deleted");
    assert!(!archive.exists(), "the archive is gone");
    assert!(!PathBuf::from(format!("{}.sha256", archive.display())).exists());
    f.app
        .delete(&delete(&first_id, ""), &f.org.admin)
        .await
        .expect(409);

    // A restore takes a safety backup; it expires after 7 days unless it
    // is the volume's only successful backup.
    let restored = f
        .request_restore(&second_id, json!({ "confirm": second_id }))
        .await;
    let restore_id = restored.expect(202)["id"].as_str().unwrap().to_owned();
    f.drain().await;
    let safety_id = f.restore(&restore_id).await["safetyBackupId"]
        .as_str()
        .unwrap()
        .to_owned();
    let safety = f.backup(&safety_id).await;
    let safety_archive = f.stored(safety["storagePath"].as_str().unwrap());
    let now = chrono::Utc::now();
    let kept = cairn_worker::housekeeping(&f.app.cairn, now + chrono::Duration::days(6))
        .await
        .unwrap();
    assert_eq!(kept.safety_backups_pruned, 0);
    // With the job's own backup deleted, the safety backup is the only one.
    f.app
        .delete(&delete(&second_id, "?force=true"), &f.org.admin)
        .await
        .expect(200);
    let only = cairn_worker::housekeeping(&f.app.cairn, now + chrono::Duration::days(8))
        .await
        .unwrap();
    assert_eq!(only.safety_backups_pruned, 0, "the only copy is kept");
    assert!(safety_archive.is_file());
    let newer = f.run_to_end(&job).await;
    assert_eq!(newer["status"], "success");
    let pruned = cairn_worker::housekeeping(&f.app.cairn, now + chrono::Duration::days(8))
        .await
        .unwrap();
    assert_eq!(pruned.safety_backups_pruned, 1);
    assert_eq!(f.backup(&safety_id).await["status"], "pruned");
    assert!(!safety_archive.exists());

    // Deliveries that ended are deleted after keep_days; pending ones stay.
    f.create_channel(
        json!({ "name": "hook", "type": "webhook", "config": { "url": "http://127.0.0.1:9/hook" } }),
    )
    .await;
    std::fs::remove_dir_all(f.volumes.path().join("shop-blue_data")).unwrap();
    f.run_to_end(&job).await;
    f.run_to_end(&job).await;
    let deliveries = notification_delivery::Entity::find()
        .all(&f.app.cairn.db)
        .await
        .unwrap();
    assert_eq!(deliveries.len(), 2);
    notification_delivery::Entity::update(notification_delivery::ActiveModel {
        id: ActiveValue::Unchanged(deliveries[0].id),
        status: ActiveValue::Set(cairn_entity::enums::DeliveryStatus::Sent),
        ..Default::default()
    })
    .exec(&f.app.cairn.db)
    .await
    .unwrap();
    let swept = cairn_worker::housekeeping(&f.app.cairn, now + chrono::Duration::days(29))
        .await
        .unwrap();
    assert_eq!(swept.deliveries_deleted, 0);
    let swept = cairn_worker::housekeeping(&f.app.cairn, now + chrono::Duration::days(31))
        .await
        .unwrap();
    assert_eq!(
        swept.deliveries_deleted, 1,
        "the sent one; the pending one stays"
    );
}
both_backends!(growth_is_bounded);
