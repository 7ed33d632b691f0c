//! Backup execution end to end: a run started through the API, executed by
//! a real worker (in-process, or the `cairn worker` binary), checked the
//! way a user would check it — GNU tar extracts the archive, `sha256sum`
//! verifies it, `pg_restore` restores the dump, `age` decrypts it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cairn_entity::{backup, backup_run};
use cairn_worker::Worker;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{
    build_volume, cairn_process, create_orders, describe, drain, env, extract, fixture, free_port,
    postgres_volume, psql, run_ok, s3_objects, s3_target_from_env, spawn_app_with,
    ssh_target_from_env, unique, worker, Backend, Fixture, LEFT_OUT_BY_CACHE_AND_TMP,
};

async fn a_manual_run_archives_every_persistent_volume(backend: Backend) {
    let f = fixture(backend, "acme").await;
    let data = f.volume_dir("shop", "blue", "data");
    build_volume(&data, 200);
    // The green slot is only read when the blue one is missing.
    f.volume_dir("shop", "green", "uploads");
    std::fs::write(
        f.volume_dir("shop", "green", "uploads").join("a.txt"),
        b"green",
    )
    .unwrap();
    let app_id = f
        .create_app(json!({ "name": "shop", "volumes": [
            { "name": "data", "excludePatterns": ["cache", "*.tmp"] },
            { "name": "uploads" },
            { "name": "scratch", "persistent": false },
        ]}))
        .await;
    let job = f
        .create_job(json!({ "name": "nightly", "schedule": "0 2 * * *", "appIds": [app_id], "keepLast": 3 }))
        .await;

    let run = f.run(&job).await;
    let backups = run["backups"].as_array().unwrap();
    let volumes: Vec<&str> = backups
        .iter()
        .map(|b| b["volumeName"].as_str().unwrap())
        .collect();
    assert_eq!(volumes, ["data", "uploads"], "{run}");
    assert!(backups.iter().all(|b| b["status"] == "pending"));
    assert_eq!(run["status"], "running");
    // One active run per job.
    let again = f.start_run(&job, &f.org.operator).await;
    again.expect(409);
    assert!(again.body["detail"]
        .as_str()
        .unwrap()
        .contains("in progress"));
    // Viewers cannot start runs.
    f.start_run(&job, &f.org.viewer).await.expect(403);

    assert_eq!(f.drain().await, 2);

    let id = backups[0]["id"].as_str().unwrap();
    let record = f.backup(id).await;
    assert_eq!(record["status"], "success", "{record}");
    let path = record["storagePath"].as_str().unwrap();
    let name = path.rsplit('/').next().unwrap();
    assert!(path.starts_with("acme/shop/data/"), "{path}");
    assert!(name.ends_with(".tar.zst") && name.len() == "2024-01-15T02-00-00-000Z.tar.zst".len());
    let archive = f.stored(path);
    assert_eq!(
        std::fs::metadata(&archive).unwrap().len(),
        record["archiveSize"].as_u64().unwrap()
    );
    // The sidecar verifies with sha256sum, as an operator would check it.
    let sidecar = std::fs::read_to_string(f.stored(&format!("{path}.sha256"))).unwrap();
    assert_eq!(
        sidecar,
        format!("{}  {name}\n", record["sha256"].as_str().unwrap())
    );
    run_ok(
        Command::new("sha256sum")
            .arg("-c")
            .arg(format!("{name}.sha256"))
            .current_dir(archive.parent().unwrap()),
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(f.stored(&format!("{path}.manifest.json"))).unwrap())
            .unwrap();
    assert_eq!(manifest["formatVersion"], 1);
    assert_eq!(
        record["manifest"], manifest,
        "the API shows the stored manifest"
    );
    assert_eq!(record["kind"], "generic");
    assert_eq!(record["trigger"], "manual");
    assert_eq!(manifest["kind"], "tar");
    assert_eq!(manifest["slot"], "blue");
    assert_eq!(manifest["compression"], "zstd");
    assert_eq!(manifest["sha256"], record["sha256"]);
    assert_eq!(manifest["storedBytes"], record["archiveSize"]);
    assert_eq!(manifest["excluded"], json!(["cache", "scratch.tmp"]));
    assert_eq!(manifest["encryption"], Value::Null);
    assert!(manifest["uncompressedBytes"].as_u64().unwrap() > 200 * 1024 * 1024);
    assert_eq!(manifest["fileCount"], 6);
    assert_eq!(manifest["hardLinkCount"], 1);
    assert_eq!(manifest["symlinkCount"], 3);
    // The log says what happened, with times.
    let log = record["log"].as_array().unwrap();
    assert!(
        log.iter()
            .any(|l| l["message"].as_str().unwrap().contains("skipped pipe")),
        "{record}"
    );
    assert!(log.iter().all(|l| l["at"].is_string()));

    // GNU tar gives back the tree, without what was excluded.
    let mut expected = describe(&data);
    for left_out in LEFT_OUT_BY_CACHE_AND_TMP {
        expected.remove(left_out).unwrap();
    }
    let restored = tempfile::tempdir().unwrap();
    extract(&archive, Some("--zstd"), restored.path());
    assert_eq!(describe(restored.path()), expected);

    // The green slot was used for the volume that has no blue one.
    let uploads = f.backup(backups[1]["id"].as_str().unwrap()).await;
    assert_eq!(uploads["status"], "success", "{uploads}");
    let listing = run_ok(
        Command::new("tar")
            .arg("--zstd")
            .arg("-tf")
            .arg(f.stored(uploads["storagePath"].as_str().unwrap())),
    );
    assert_eq!(String::from_utf8_lossy(&listing), "a.txt\n");

    // The run closed once, as a success; a new run may start.
    let run_id = uuid::Uuid::parse_str(run["runId"].as_str().unwrap()).unwrap();
    let closed = backup_run::Entity::find_by_id(run_id)
        .one(&f.app.cairn.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(closed.status, cairn_entity::enums::RunStatus::Success);
    assert!(closed.finished_at.is_some());
    f.run(&job).await;
}

/// A volume missing from both slots, a refused pg_dump login and an
/// unreachable target each fail with their own code, without secrets.
async fn failures_have_their_own_codes(backend: Backend) {
    let f = fixture(backend, "acme").await;
    let server = url::Url::parse(&env("TEST_POSTGRES_URL")).unwrap();
    let app_id = f
        .create_app(json!({ "name": "shop", "volumes": [
            { "name": "gone" },
            { "name": "db", "kind": "postgres", "postgres": {
                "host": "127.0.0.1", "port": server.port().unwrap(), "database": "postgres",
                "username": server.username(), "password": "wrong-password-s3cr3t" } },
        ]}))
        .await;
    let job = f
        .create_job(json!({ "name": "nightly", "schedule": "0 2 * * *", "appIds": [app_id], "keepLast": 3 }))
        .await;
    let run = f.run(&job).await;
    f.drain().await;
    let by_volume = |name: &str| {
        run["backups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["volumeName"] == name)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let gone = f.backup(&by_volume("gone")).await;
    assert_eq!(gone["status"], "failed");
    assert_eq!(gone["errorCode"], "volume_not_found");
    let message = gone["errorMessage"].as_str().unwrap();
    assert!(
        message.contains("shop-blue_gone/_data") && message.contains("shop-green_gone/_data"),
        "{message}"
    );

    let db = f.backup(&by_volume("db")).await;
    assert_eq!(db["status"], "failed");
    assert_eq!(db["errorCode"], "postgres_connection_failed", "{db}");
    let message = db["errorMessage"].as_str().unwrap();
    assert!(
        message.contains("password authentication failed"),
        "{message}"
    );
    assert!(!db.to_string().contains("wrong-password-s3cr3t"));

    let run_id = uuid::Uuid::parse_str(run["runId"].as_str().unwrap()).unwrap();
    let closed = backup_run::Entity::find_by_id(run_id)
        .one(&f.app.cairn.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(closed.status, cairn_entity::enums::RunStatus::Failed);
    assert_eq!(closed.reason.as_deref(), Some("2 of 2 backups failed"));

    // A target that does not answer: an S3 endpoint on a closed port.
    let closed_port = free_port();
    let target = f
        .create_target(json!({ "name": "down", "type": "s3", "config": {
            "bucket": "cairn-down", "accessKeyId": "AKIADOWN", "secretAccessKey": "down-secret-key-s3cr3t",
            "endpoint": format!("http://127.0.0.1:{closed_port}") } }))
        .await;
    std::fs::write(
        f.volume_dir("web", "blue", "files").join("index.html"),
        b"<html>",
    )
    .unwrap();
    let web = f
        .create_app(json!({ "name": "web", "volumes": [{ "name": "files" }] }))
        .await;
    let job = f
        .create_job(json!({ "name": "web", "schedule": "0 2 * * *", "appIds": [web], "targetId": target, "keepLast": 3 }))
        .await;
    let record = f.run_to_end(&job).await;
    assert_eq!(record["status"], "failed");
    assert_eq!(record["errorCode"], "target_unreachable", "{record}");
    assert!(!record.to_string().contains("down-secret-key-s3cr3t"));
}

/// A run with nothing to back up is recorded as skipped, and the API says
/// why instead of accepting a no-op.
async fn a_run_with_nothing_to_back_up_is_skipped(backend: Backend) {
    let f = fixture(backend, "acme").await;
    let app_id = f
        .create_app(json!({ "name": "shop", "volumes": [{ "name": "tmp", "persistent": false }] }))
        .await;
    let job = f
        .create_job(json!({ "name": "nightly", "schedule": "0 2 * * *", "appIds": [app_id], "keepLast": 3 }))
        .await;
    let reply = f.start_run(&job, &f.org.operator).await;
    reply.expect(409);
    let detail = reply.body["detail"].as_str().unwrap();
    assert!(
        detail.contains("skipped") && detail.contains("no persistent volume"),
        "{detail}"
    );
    let runs = backup_run::Entity::find()
        .filter(backup_run::Column::JobId.eq(uuid::Uuid::parse_str(&job).unwrap()))
        .all(&f.app.cairn.db)
        .await
        .unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, cairn_entity::enums::RunStatus::Skipped);
    assert_eq!(
        runs[0].reason.as_deref(),
        Some("the job covers no persistent volume")
    );
}

/// Concurrent workers claim each backup exactly once.
async fn concurrent_workers_claim_each_backup_once(backend: Backend) {
    let f = fixture(backend, "acme").await;
    let mut volumes = Vec::new();
    for i in 0..6 {
        let name = format!("v{i}");
        std::fs::write(
            f.volume_dir("shop", "blue", &name).join("f"),
            name.as_bytes(),
        )
        .unwrap();
        volumes.push(json!({ "name": name }));
    }
    let app_id = f
        .create_app(json!({ "name": "shop", "volumes": volumes }))
        .await;
    let job = f
        .create_job(json!({ "name": "nightly", "schedule": "0 2 * * *", "appIds": [app_id], "keepAll": true }))
        .await;
    f.run(&job).await;
    let workers: Vec<Worker> = (0..3)
        .map(|_| worker(&f.app, Duration::from_secs(30)))
        .collect();
    let ran: usize = futures::future::join_all(workers.iter().map(drain))
        .await
        .into_iter()
        .sum();
    assert_eq!(ran, 6);
    let records = backup::Entity::find().all(&f.app.cairn.db).await.unwrap();
    assert_eq!(records.len(), 6);
    for record in records {
        assert_eq!(
            record.status,
            cairn_entity::enums::BackupStatus::Success,
            "{record:?}"
        );
        assert_eq!(record.attempt, 1, "claimed more than once: {record:?}");
    }
}

both_backends!(
    a_manual_run_archives_every_persistent_volume,
    failures_have_their_own_codes,
    a_run_with_nothing_to_back_up_is_skipped,
    concurrent_workers_claim_each_backup_once,
);

/// A PostgreSQL volume: `pg_restore` of the stored dump into a fresh
/// database gives back the rows.
#[tokio::test]
async fn a_postgres_volume_restores_with_pg_restore() {
    let f = fixture(Backend::Sqlite, "acme").await;
    let server = url::Url::parse(&env("TEST_POSTGRES_URL")).unwrap();
    let bin = PathBuf::from(env("TEST_PG_BIN"));
    // A database name that would split into several connection options if
    // it reached pg_dump unquoted.
    let source = format!("src {} 'q' host", unique("db").replace('-', "_"));
    psql("postgres", &format!("CREATE DATABASE \"{source}\""));
    create_orders(&source, 5000);
    let app_id = f
        .create_app(json!({ "name": "shop", "volumes": [postgres_volume("db", &source)] }))
        .await;
    let job = f
        .create_job(
            json!({ "name": "db", "schedule": "0 2 * * *", "appIds": [app_id], "keepLast": 3 }),
        )
        .await;
    let record = f.run_to_end(&job).await;
    assert_eq!(record["status"], "success", "{record}");
    let path = record["storagePath"].as_str().unwrap();
    assert!(path.ends_with(".dump"), "{path}");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(f.stored(&format!("{path}.manifest.json"))).unwrap())
            .unwrap();
    assert_eq!(manifest["kind"], "pg_dump");
    assert!(manifest["postgresVersion"]
        .as_str()
        .unwrap()
        .starts_with(|c: char| c.is_ascii_digit()));
    assert!(!manifest.to_string().contains(server.password().unwrap()));

    let restored = unique("restored").replace('-', "_");
    psql("postgres", &format!("CREATE DATABASE \"{restored}\""));
    let mut url = server.clone();
    url.set_path(&restored);
    run_ok(
        Command::new(bin.join("pg_restore"))
            .arg("--no-owner")
            .arg("--exit-on-error")
            .arg("-d")
            .arg(url.as_str())
            .arg(f.stored(path)),
    );
    assert_eq!(
        psql(&restored, "SELECT count(*), sum(id), max(item) FROM orders"),
        psql(&source, "SELECT count(*), sum(id), max(item) FROM orders")
    );
    assert_eq!(
        psql(&restored, "SELECT count(*) FROM orders").trim(),
        "5000"
    );

    // Offline, with the cairn binary: the password travels in PGPASSWORD,
    // the URL names the rest.
    let offline = unique("offline").replace('-', "_");
    psql("postgres", &format!("CREATE DATABASE \"{offline}\""));
    let mut target = server.clone();
    target.set_path(&offline);
    target.set_password(None).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["archive", "pg-restore"])
        .arg(f.stored(path))
        .arg("--dbname")
        .arg(target.as_str())
        .arg("--pg-restore")
        .arg(bin.join("pg_restore"))
        .env("PGPASSWORD", server.password().unwrap())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        psql(&offline, "SELECT count(*), sum(id), max(item) FROM orders"),
        psql(&source, "SELECT count(*), sum(id), max(item) FROM orders")
    );
}

/// An encrypted archive opens with the `age` CLI and the exported identity,
/// and with a job's extra recipient.
#[tokio::test]
async fn encrypted_archives_decrypt_with_the_age_cli() {
    let f = fixture(Backend::Sqlite, "acme").await;
    let keys = tempfile::tempdir().unwrap();
    let offline = keys.path().join("offline.txt");
    run_ok(Command::new("age-keygen").arg("-o").arg(&offline));
    let offline_public =
        String::from_utf8(run_ok(Command::new("age-keygen").arg("-y").arg(&offline)))
            .unwrap()
            .trim()
            .to_owned();

    let data = f.volume_dir("shop", "blue", "data");
    std::fs::write(data.join("ledger.csv"), b"id,amount\n1,100\n").unwrap();
    let app_id = f.create_shop().await;
    // Bad recipients are refused with the field.
    f.app
        .post(
            &f.org.path("/backups/jobs"),
            &f.org.admin,
            &json!({ "name": "bad", "schedule": "0 2 * * *", "appIds": [app_id], "keepLast": 1,
                     "encryption": "age", "extraRecipients": ["age1nope"] }),
        )
        .await
        .expect_field_error(422, "extraRecipients[0]");
    let job = f
        .create_job(
            json!({ "name": "sealed", "schedule": "0 2 * * *", "appIds": [app_id], "keepLast": 3,
                            "encryption": "age", "extraRecipients": [offline_public] }),
        )
        .await;
    let record = f.run_to_end(&job).await;
    assert_eq!(record["status"], "success", "{record}");
    let path = record["storagePath"].as_str().unwrap();
    assert!(path.ends_with(".tar.zst.age"), "{path}");

    let public = f
        .app
        .get(&f.org.path("/backups/encryption-key"), &f.org.viewer)
        .await;
    let recipient = public.expect(200)["recipient"].as_str().unwrap().to_owned();
    assert!(recipient.starts_with("age1"));
    // Only admins export the identity.
    f.app
        .post(
            &f.org.path("/backups/encryption-key/export"),
            &f.org.operator,
            &json!({}),
        )
        .await
        .expect(403);
    let exported = f.export_key().await;
    assert_eq!(exported["recipient"], recipient.as_str());
    let identity = keys.path().join("org.txt");
    std::fs::write(&identity, exported["identity"].as_str().unwrap()).unwrap();

    let manifest: Value =
        serde_json::from_slice(&std::fs::read(f.stored(&format!("{path}.manifest.json"))).unwrap())
            .unwrap();
    assert_eq!(manifest["encryption"]["type"], "age");
    assert_eq!(
        manifest["encryption"]["recipients"],
        json!([recipient, offline_public])
    );

    for key in [&identity, &offline] {
        let plain = keys.path().join("plain.tar.zst");
        run_ok(
            Command::new("age")
                .arg("--decrypt")
                .arg("-i")
                .arg(key)
                .arg("-o")
                .arg(&plain)
                .arg(f.stored(path)),
        );
        let listing = run_ok(
            Command::new("tar")
                .arg("--zstd")
                .arg("-xOf")
                .arg(&plain)
                .arg("ledger.csv"),
        );
        assert_eq!(listing, b"id,amount\n1,100\n");
    }
    // The stored checksum is of the encrypted bytes, as stored.
    run_ok(
        Command::new("sha256sum")
            .arg("-c")
            .arg(format!("{}.sha256", path.rsplit('/').next().unwrap()))
            .current_dir(f.stored(path).parent().unwrap()),
    );
}

/// Retention after each run: with keepLast 1 on an S3 target, the older
/// archive and its sidecars leave the bucket and the record is `pruned`.
#[tokio::test]
async fn retention_prunes_old_archives_from_the_bucket() {
    let f = fixture(Backend::Sqlite, "acme").await;
    let prefix = unique("prune");
    let target = f
        .create_target(s3_target_from_env("s3", json!({ "prefix": prefix })))
        .await;
    std::fs::write(f.volume_dir("shop", "blue", "data").join("f.txt"), b"v1").unwrap();
    let app_id = f.create_shop().await;
    let job = f
        .create_job_for(
            &app_id,
            json!({ "targetId": target, "keepLast": 1, "compression": "gzip" }),
        )
        .await;
    let worker = worker(&f.app, Duration::from_secs(30));
    let first = f.run(&job).await;
    drain(&worker).await;
    let first = f.backup(first["backups"][0]["id"].as_str().unwrap()).await;
    assert_eq!(first["status"], "success", "{first}");
    let first_path = first["storagePath"].as_str().unwrap().to_owned();
    assert!(first_path.ends_with(".tar.gz"));
    let bucket = s3_objects(&prefix);
    let objects = |bucket: &Path| -> Vec<String> {
        let mut names: Vec<String> = walkdir::WalkDir::new(bucket)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .map(|e| {
                e.path()
                    .strip_prefix(bucket)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    };
    let before = objects(&bucket);
    assert_eq!(before.len(), 3, "{before:?}");
    assert!(before.contains(&first_path));
    // The archive in the bucket is the one recorded.
    let listing = run_ok(
        Command::new("tar")
            .arg("-xzOf")
            .arg(bucket.join(&first_path))
            .arg("f.txt"),
    );
    assert_eq!(listing, b"v1");

    std::fs::write(f.volume_dir("shop", "blue", "data").join("f.txt"), b"v2").unwrap();
    // Archive names have millisecond precision.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = f.run(&job).await;
    drain(&worker).await;
    let second = f.backup(second["backups"][0]["id"].as_str().unwrap()).await;
    assert_eq!(second["status"], "success");
    let after = objects(&bucket);
    let second_path = second["storagePath"].as_str().unwrap();
    assert_eq!(
        after,
        vec![
            second_path.to_owned(),
            format!("{second_path}.manifest.json"),
            format!("{second_path}.sha256"),
        ]
    );
    let pruned = f.backup(first["id"].as_str().unwrap()).await;
    assert_eq!(pruned["status"], "pruned");
    assert!(pruned["log"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["message"].as_str().unwrap().starts_with("pruned")));
}

/// An SSH target: the archive lands on the server, and the worker pins the
/// host key it saw.
#[tokio::test]
async fn ssh_targets_receive_archives_and_pin_the_host_key() {
    let f = fixture(Backend::Sqlite, "acme").await;
    let remote = PathBuf::from(env("TEST_SSH_ROOT")).join(unique("worker"));
    let target = f
        .create_target(ssh_target_from_env("ssh", &remote.display().to_string()))
        .await;
    std::fs::write(
        f.volume_dir("shop", "blue", "data").join("f.txt"),
        b"over ssh",
    )
    .unwrap();
    let app_id = f.create_shop().await;
    let job = f
        .create_job_for(
            &app_id,
            json!({ "targetId": target, "keepLast": 2, "compression": "none" }),
        )
        .await;
    let record = f.run_to_end(&job).await;
    assert_eq!(record["status"], "success", "{record}");
    let path = record["storagePath"].as_str().unwrap();
    assert!(path.ends_with(".tar"));
    let stored = remote.join(path);
    let content = run_ok(Command::new("tar").arg("-xOf").arg(&stored).arg("f.txt"));
    assert_eq!(content, b"over ssh");
    run_ok(
        Command::new("sha256sum")
            .arg("-c")
            .arg(format!("{}.sha256", path.rsplit('/').next().unwrap()))
            .current_dir(stored.parent().unwrap()),
    );
    let target = f
        .app
        .get(
            &f.org.path(&format!("/backups/targets/{target}")),
            &f.org.viewer,
        )
        .await;
    assert_eq!(
        target.expect(200)["config"]["hostKeyFingerprint"],
        env("TEST_SSH_HOST_FINGERPRINT")
    );
}

/// A PostgreSQL-backed fixture with one pending backup of a large volume:
/// 3 GiB of zeros, sparse (cheap to make), archived uncompressed so that it
/// takes long enough for a signal to land mid-upload. Returns the fixture,
/// the volume's directory, the job and the backup's id.
async fn large_pending_backup() -> (Fixture, PathBuf, String, String) {
    let f = fixture(Backend::Postgres, "acme").await;
    let data = f.volume_dir("shop", "blue", "data");
    let big = std::fs::File::create(data.join("big.img")).unwrap();
    big.set_len(3 * 1024 * 1024 * 1024).unwrap();
    let app_id = f.create_shop().await;
    let job = f
        .create_job_for(&app_id, json!({ "keepLast": 3, "compression": "none" }))
        .await;
    let run = f.run(&job).await;
    let id = run["backups"][0]["id"].as_str().unwrap().to_owned();
    (f, data, job, id)
}

/// `cairn worker` on the fixture's database and volumes, quiet.
fn worker_process(f: &Fixture, args: &[String], envs: &[(&str, String)]) -> std::process::Child {
    cairn_process(f, "worker", args, envs)
}

/// A worker killed with SIGKILL in the middle of a large backup: within two
/// lease periods the record is `failed`/`worker_lost`, nothing is left at
/// the final key, a late write of the dead attempt changes nothing, and
/// another worker runs new backups normally.
#[tokio::test]
async fn a_killed_worker_is_detected_and_fenced() {
    let (f, data, job, id) = large_pending_backup().await;

    let lease_seconds = 2;
    let metrics_port = free_port();
    let mut child = worker_process(
        &f,
        &[
            "--metrics-listen".into(),
            format!("127.0.0.1:{metrics_port}"),
        ],
        &[("CAIRN_WORKER__LEASE_SECONDS", lease_seconds.to_string())],
    );

    // Wait until the upload is under way: running, and its temporary file
    // exists beside the final key.
    let started = Instant::now();
    let (path, attempt) = loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the worker never started the backup"
        );
        let record = f.backup_model(&id).await;
        if let (Some(path), "running") = (&record.storage_path, record.status.as_str()) {
            let dir = f.stored(path).parent().unwrap().to_path_buf();
            let writing = std::fs::read_dir(&dir)
                .map(|entries| {
                    entries
                        .filter_map(Result::ok)
                        .any(|e| e.file_name().to_string_lossy().contains(".cairn-tmp-"))
                })
                .unwrap_or(false);
            if writing {
                break (path.clone(), record.attempt);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The worker's own metrics listener shows the backup in flight.
    let metrics = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("cairn_backups_running 1"), "{metrics}");
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = Instant::now();

    // A second worker (in-process) notices within two lease periods.
    let second = worker(&f.app, Duration::from_secs(lease_seconds));
    loop {
        cairn_worker::reap(&f.app.cairn, chrono::Utc::now())
            .await
            .unwrap();
        let record = f.backup(&id).await;
        if record["status"] == "failed" {
            assert_eq!(record["errorCode"], "worker_lost", "{record}");
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(2 * lease_seconds),
            "not failed within two lease periods: {record}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Nothing at the final key, no temporary file left.
    let dir = f.stored(&path).parent().unwrap().to_path_buf();
    let left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "left on the target: {left:?}");

    // A late success of the dead attempt is refused by the fence.
    let late = cairn_worker::lease::fenced_update::<cairn_entity::backup::Entity>(
        &f.app.cairn.db,
        uuid::Uuid::parse_str(&id).unwrap(),
        attempt,
        backup::ActiveModel {
            status: sea_orm::ActiveValue::Set(cairn_entity::enums::BackupStatus::Success),
            sha256: sea_orm::ActiveValue::Set(Some("0".repeat(64))),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(!late);
    let record = f.backup(&id).await;
    assert_eq!(record["status"], "failed");
    assert_eq!(record["sha256"], Value::Null);

    // The run closed as failed; the next one runs normally.
    std::fs::remove_file(data.join("big.img")).unwrap();
    std::fs::write(data.join("small.txt"), b"fine").unwrap();
    let next = f.run(&job).await;
    drain(&second).await;
    let record = f.backup(next["backups"][0]["id"].as_str().unwrap()).await;
    assert_eq!(record["status"], "success", "{record}");
}

/// pg_dump's own failures: a login that may not read a table fails the
/// dump with pg_dump's message, and a pg_dump older than the server is
/// refused before it runs.
#[tokio::test]
async fn pg_dump_failures_say_why() {
    let f = fixture(Backend::Sqlite, "acme").await;
    let server = url::Url::parse(&env("TEST_POSTGRES_URL")).unwrap();
    let database = unique("locked").replace('-', "_");
    let role = unique("reader").replace('-', "_");
    let password = "reader-password-s3cr3t";
    psql("postgres", &format!("CREATE DATABASE {database}"));
    psql(
        &database,
        &format!(
            "CREATE TABLE payroll (id int); REVOKE ALL ON payroll FROM PUBLIC; \
             CREATE ROLE {role} LOGIN PASSWORD '{password}'"
        ),
    );
    let volume = |name: &str| {
        json!({ "name": name, "kind": "postgres", "postgres": {
            "host": "127.0.0.1", "port": server.port().unwrap(), "database": database,
            "username": role, "password": password } })
    };
    let app_id = f
        .create_app(json!({ "name": "shop", "volumes": [volume("db")] }))
        .await;
    let job = f
        .create_job(
            json!({ "name": "db", "schedule": "0 2 * * *", "appIds": [app_id], "keepLast": 3 }),
        )
        .await;
    let record = f.run_to_end(&job).await;
    assert_eq!(record["status"], "failed");
    assert_eq!(record["errorCode"], "pg_dump_failed", "{record}");
    let message = record["errorMessage"].as_str().unwrap();
    assert!(
        message.contains("permission denied for table payroll"),
        "{message}"
    );
    assert!(!record.to_string().contains(password));
    // Nothing of the failed dump stays on the target.
    let dir = f.stored("acme/shop/db");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name())
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");

    // A pg_dump that reports an older major version than the server's.
    let old = tempfile::tempdir().unwrap();
    let script = old.path().join("pg_dump");
    std::fs::write(&script, "#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let volumes = f.volumes.path().to_path_buf();
    let old_app = spawn_app_with(Backend::Sqlite, move |config| {
        config.volume_root = volumes;
        config.pg_dump = script;
    })
    .await;
    let g = Fixture {
        org: old_app.org("acme").await,
        app: old_app,
        volumes: tempfile::tempdir().unwrap(),
    };
    let app_id = g
        .create_app(json!({ "name": "shop", "volumes": [volume("db")] }))
        .await;
    let job = g
        .create_job(
            json!({ "name": "db", "schedule": "0 2 * * *", "appIds": [app_id], "keepLast": 3 }),
        )
        .await;
    let record = g.run_to_end(&job).await;
    assert_eq!(record["errorCode"], "pg_dump_too_old", "{record}");
    let message = record["errorMessage"].as_str().unwrap();
    assert!(
        message.contains("pg_dump is version 9") && message.contains("at least as new"),
        "{message}"
    );
}

/// SIGTERM stops a `cairn worker` cleanly: the running backup is ended as
/// `interrupted`, nothing is published, and the process exits with 0.
#[tokio::test]
async fn a_stopped_worker_interrupts_its_backup_cleanly() {
    let (f, _, _, id) = large_pending_backup().await;
    let mut child = worker_process(&f, &[], &[]);
    let started = Instant::now();
    let path = loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the worker never started the backup"
        );
        let record = f.backup(&id).await;
        if record["status"] == "running" {
            if let Some(path) = record["storagePath"].as_str() {
                break path.to_owned();
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let record = f.backup(&id).await;
    assert_eq!(record["status"], "failed", "{record}");
    assert_eq!(record["errorCode"], "interrupted");
    let dir = f.stored(&path).parent().unwrap().to_path_buf();
    let left: Vec<_> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name())
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "left on the target: {left:?}");
}

/// A run whose backups all ended but that nobody closed (its worker died
/// between recording the last outcome and closing the run) is closed by
/// the next worker tick, so the job can run again.
async fn runs_left_open_are_closed_by_the_next_tick(backend: Backend) {
    use sea_orm::{ActiveValue, QueryFilter};
    let f = fixture(backend, "acme").await;
    std::fs::write(f.volume_dir("shop", "blue", "data").join("f"), b"x").unwrap();
    let app_id = f.create_shop().await;
    let job = f.create_job_for(&app_id, json!({ "keepLast": 3 })).await;
    let run = f.run(&job).await;
    let run_id = uuid::Uuid::parse_str(run["runId"].as_str().unwrap()).unwrap();
    // What a worker that died right after recording the outcome leaves.
    backup::Entity::update_many()
        .set(backup::ActiveModel {
            status: ActiveValue::Set(cairn_entity::enums::BackupStatus::Failed),
            error_code: ActiveValue::Set(Some("internal".into())),
            ..Default::default()
        })
        .filter(backup::Column::RunId.eq(run_id))
        .exec(&f.app.cairn.db)
        .await
        .unwrap();
    let reply = f.start_run(&job, &f.org.operator).await;
    reply.expect(409);

    assert_eq!(f.drain().await, 0);
    let closed = backup_run::Entity::find_by_id(run_id)
        .one(&f.app.cairn.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(closed.status, cairn_entity::enums::RunStatus::Failed);
    f.run(&job).await;
}

both_backends!(runs_left_open_are_closed_by_the_next_tick);

fn cairn_archive(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("archive")
        .args(args)
        .env_remove("CAIRN_CONFIG")
        .output()
        .unwrap()
}

/// `cairn archive inspect` and `verify` work on downloaded files alone:
/// the manifest, the checksum, a full read, and a flipped byte caught.
#[tokio::test]
async fn offline_tools_inspect_and_verify_stored_archives() {
    let f = fixture(Backend::Sqlite, "acme").await;
    let data = f.volume_dir("shop", "blue", "data");
    build_volume(&data, 2);
    let app_id = f.create_shop().await;
    let plain_job = f
        .create_job(json!({ "name": "plain", "schedule": "0 2 * * *", "appIds": [app_id], "keepAll": true }))
        .await;
    let sealed_job = f
        .create_job(
            json!({ "name": "sealed", "schedule": "0 2 * * *", "appIds": [app_id], "keepAll": true,
                            "encryption": "age", "compression": "gzip" }),
        )
        .await;
    let plain = f.run(&plain_job).await;
    f.drain().await;
    let sealed = f.run(&sealed_job).await;
    f.drain().await;

    // Copies, as an operator downloads them: archive and sidecars.
    let downloads = tempfile::tempdir().unwrap();
    let fetch = |id: &Value| {
        let id = id.as_str().unwrap().to_owned();
        let f = &f;
        let downloads = downloads.path().to_path_buf();
        async move {
            let record = f.backup(&id).await;
            let path = record["storagePath"].as_str().unwrap().to_owned();
            let name = path.rsplit('/').next().unwrap().to_owned();
            for suffix in ["", ".sha256", ".manifest.json"] {
                std::fs::copy(
                    f.stored(&format!("{path}{suffix}")),
                    downloads.join(format!("{name}{suffix}")),
                )
                .unwrap();
            }
            downloads.join(name)
        }
    };
    let plain_file = fetch(&plain["backups"][0]["id"]).await;
    let sealed_file = fetch(&sealed["backups"][0]["id"]).await;

    let inspected = cairn_archive(&["inspect".as_ref(), plain_file.as_os_str()]);
    assert!(inspected.status.success());
    let manifest: Value = serde_json::from_slice(&inspected.stdout).unwrap();
    assert_eq!(manifest["kind"], "tar");
    assert_eq!(manifest["app"], "shop");

    let verified = cairn_archive(&["verify".as_ref(), plain_file.as_os_str()]);
    let out = String::from_utf8_lossy(&verified.stdout);
    assert!(
        verified.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    assert!(
        out.contains("checksum ok") && out.contains("archive ok"),
        "{out}"
    );

    // Encrypted: the checksum alone without the identity; all with it.
    let without = cairn_archive(&["verify".as_ref(), sealed_file.as_os_str()]);
    assert!(without.status.success());
    assert!(String::from_utf8_lossy(&without.stdout).contains("pass --identity"));
    let exported = f.export_key().await;
    let identity = downloads.path().join("identity.txt");
    std::fs::write(&identity, exported["identity"].as_str().unwrap()).unwrap();
    let with = cairn_archive(&[
        "verify".as_ref(),
        sealed_file.as_os_str(),
        "--identity".as_ref(),
        identity.as_os_str(),
    ]);
    assert!(
        with.status.success(),
        "{}",
        String::from_utf8_lossy(&with.stderr)
    );
    assert!(String::from_utf8_lossy(&with.stdout).contains("archive ok"));

    // One flipped byte is caught by the checksum.
    let mut bytes = std::fs::read(&plain_file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&plain_file, &bytes).unwrap();
    let flipped = cairn_archive(&["verify".as_ref(), plain_file.as_os_str()]);
    assert!(!flipped.status.success());
    assert!(String::from_utf8_lossy(&flipped.stderr).contains("checksum mismatch"));
    // A cut-short archive whose hash is given passes the checksum but not
    // the full read.
    bytes[middle] ^= 0x40;
    bytes.truncate(middle);
    std::fs::write(&plain_file, &bytes).unwrap();
    let (hash, _) = cairn_core::format::read::sha256_of(&plain_file).unwrap();
    let cut = cairn_archive(&[
        "verify".as_ref(),
        plain_file.as_os_str(),
        "--sha256".as_ref(),
        hash.as_ref(),
    ]);
    assert!(!cut.status.success());
    assert!(
        String::from_utf8_lossy(&cut.stderr).contains("damaged or cut short"),
        "{}",
        String::from_utf8_lossy(&cut.stderr)
    );
}
