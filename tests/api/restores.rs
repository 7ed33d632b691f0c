//! Restores end to end: requested through the API, carried out by a real
//! worker, checked the way a user would check them — the volume's tree
//! (content, modes, symlinks, hard links) compared before and after, rows
//! counted in PostgreSQL, a hostile archive refused with nothing touched.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn_entity::backup;
use sea_orm::{ActiveValue, EntityTrait};
use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{
    cairn_process, create_orders, describe, env, fixture, postgres_volume, psql, raw_tar,
    restorable_volume, s3_target_from_env, ssh_target_from_env, unique, Backend, Fixture,
};

/// Changes a volume: a file rewritten, one removed, one added.
fn change(dir: &Path) {
    std::fs::write(dir.join("run.sh"), b"#!/bin/sh\necho changed\n").unwrap();
    std::fs::remove_file(dir.join("secret.key")).unwrap();
    std::fs::write(dir.join("added-later.txt"), b"new").unwrap();
}

impl Fixture {
    /// A target of `kind` (`local`: the system default) for a new job.
    async fn target(&self, kind: &str) -> Value {
        let config = match kind {
            "local" => return Value::Null,
            "s3" => s3_target_from_env("s3", json!({ "prefix": unique("restore") })),
            "ssh" => ssh_target_from_env(
                "ssh",
                &PathBuf::from(env("TEST_SSH_ROOT"))
                    .join(unique("restore"))
                    .display()
                    .to_string(),
            ),
            other => panic!("no target kind {other}"),
        };
        json!(self.create_target(config).await)
    }
}

/// A file volume backed up to `target_kind`, changed afterwards, restored
/// through the API: the tree is the backed-up one again; the safety backup
/// (trigger `safety`) holds the changed tree and restores it in turn.
async fn file_round_trip(backend: Backend, target_kind: &str, compression: &str, encryption: &str) {
    let f = fixture(backend, "acme").await;
    let data = f.volume_dir("shop", "blue", "data");
    restorable_volume(&data, 3);
    let original = describe(&data);
    let app_id = f.create_shop().await;
    let target = f.target(target_kind).await;
    let job = f
        .create_job_for(
            &app_id,
            json!({ "targetId": target, "keepLast": 1,
                    "compression": compression, "encryption": encryption }),
        )
        .await;
    let record = f.run_to_end(&job).await;
    assert_eq!(record["status"], "success", "{record}");
    let backup_id = record["id"].as_str().unwrap().to_owned();

    let preview = f.preview(&backup_id).await;
    assert_eq!(preview["restorable"], true, "{preview}");
    assert_eq!(preview["kind"], "tar");
    assert_eq!(preview["formatVersion"], 1);
    assert_eq!(preview["cairnVersion"], env!("CARGO_PKG_VERSION"));
    assert_eq!(preview["encrypted"], encryption == "age");
    assert_eq!(preview["size"], record["archiveSize"]);
    assert_eq!(preview["manifest"], record["manifest"]);
    let contents = &preview["contents"];
    assert_eq!(contents["kind"], "tar");
    assert_eq!(contents["truncated"], false);
    assert_eq!(contents["totals"]["files"], record["manifest"]["fileCount"]);
    assert_eq!(
        contents["totals"]["bytes"],
        record["manifest"]["contentBytes"]
    );
    let listed: Vec<&str> = contents["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    let mut expected_paths: Vec<&str> = original.keys().map(String::as_str).collect();
    expected_paths.sort();
    let mut listed_sorted = listed.clone();
    listed_sorted.sort();
    assert_eq!(listed_sorted, expected_paths);
    let link = contents["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "relative-link")
        .unwrap();
    assert_eq!(link["type"], "symlink");
    assert_eq!(link["linkTarget"], "nested/deeper/deepest/note.txt");

    change(&data);
    let changed = describe(&data);
    assert_ne!(changed, original);
    let restored = f.restore_to_end(&backup_id, json!({})).await;
    assert_eq!(restored["status"], "success", "{restored}");
    assert_eq!(describe(&data), original, "the volume is the backed-up one");
    {
        use std::os::unix::fs::MetadataExt;
        let inode = |name: &str| std::fs::metadata(data.join(name)).unwrap().ino();
        assert_eq!(inode("run.sh"), inode("run-hardlink.sh"), "the hard link");
    }
    assert_eq!(restored["kind"], "tar");
    assert_eq!(restored["summary"]["appRestarted"], false);
    assert!(restored["log"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["message"].as_str().unwrap().contains("restart")));
    // Nothing is left beside the volume.
    let beside: Vec<String> = std::fs::read_dir(data.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(beside, ["_data"]);

    let safety_id = restored["safetyBackupId"].as_str().unwrap().to_owned();
    let safety = f.backup(&safety_id).await;
    assert_eq!(safety["status"], "success", "{safety}");
    assert_eq!(safety["trigger"], "safety");
    // It is a run of the job too, with trigger `safety`.
    let runs = f
        .app
        .get(
            &f.org.path(&format!("/backups/jobs/{job}/runs")),
            &f.org.viewer,
        )
        .await;
    let runs = runs.expect(200)["items"].as_array().unwrap().clone();
    let safety_run = runs
        .iter()
        .find(|r| r["trigger"] == "safety")
        .expect("a safety run");
    assert_eq!(safety_run["status"], "success", "{safety_run}");
    assert_eq!(safety_run["backups"][0]["id"], safety["id"]);
    let back = f
        .restore_to_end(&safety_id, json!({ "safetyBackup": false }))
        .await;
    assert_eq!(back["status"], "success", "{back}");
    assert_eq!(back["safetyBackupId"], Value::Null);
    assert_eq!(
        describe(&data),
        changed,
        "the safety backup holds the pre-restore state"
    );
}

async fn files_round_trip_on_a_local_target(backend: Backend) {
    file_round_trip(backend, "local", "zstd", "none").await;
}

both_backends!(files_round_trip_on_a_local_target);

#[tokio::test]
async fn encrypted_files_round_trip_on_a_local_target() {
    file_round_trip(Backend::Sqlite, "local", "gzip", "age").await;
}

#[tokio::test]
async fn encrypted_files_round_trip_on_s3() {
    file_round_trip(Backend::Sqlite, "s3", "zstd", "age").await;
}

#[tokio::test]
async fn files_round_trip_on_s3() {
    file_round_trip(Backend::Sqlite, "s3", "none", "none").await;
}

#[tokio::test]
async fn files_round_trip_over_ssh() {
    file_round_trip(Backend::Sqlite, "ssh", "zstd", "none").await;
}

#[tokio::test]
async fn encrypted_files_round_trip_over_ssh() {
    file_round_trip(Backend::Sqlite, "ssh", "none", "age").await;
}

/// Bad requests are refused before anything is recorded.
#[tokio::test]
async fn restore_requests_are_checked() {
    let f = fixture(Backend::Sqlite, "acme").await;
    std::fs::write(f.volume_dir("shop", "blue", "data").join("f.txt"), b"x").unwrap();
    let app_id = f
        .create_app(json!({ "name": "shop", "volumes": [
            { "name": "data" },
            { "name": "db", "kind": "postgres", "postgres": {
                "host": "127.0.0.1", "port": 5432, "database": "d", "username": "u", "password": "p" } },
        ]}))
        .await;
    let only_files = f
        .create_app(json!({ "name": "files", "volumes": [{ "name": "data" }] }))
        .await;
    std::fs::write(f.volume_dir("files", "blue", "data").join("f.txt"), b"x").unwrap();
    let job = f
        .create_job(json!({ "name": "files", "schedule": "0 2 * * *", "appIds": [only_files], "keepLast": 1 }))
        .await;
    let record = f.run_to_end(&job).await;
    assert_eq!(record["status"], "success", "{record}");
    let id = record["id"].as_str().unwrap().to_owned();

    f.request_restore(&id, json!({}))
        .await
        .expect_field_error(422, "confirm");
    f.request_restore(&id, json!({ "confirm": uuid::Uuid::now_v7() }))
        .await
        .expect_field_error(422, "confirm");
    f.request_restore(&id, json!({ "confirm": id, "dryrun": true }))
        .await
        .expect(422);
    f.app
        .post(
            &f.org.path(&format!("/backups/history/{id}/restore")),
            &f.org.viewer,
            &json!({ "confirm": id }),
        )
        .await
        .expect(403);
    // A clone into a volume of another kind, or one that does not exist.
    f.request_restore(
        &id,
        json!({ "confirm": id, "into": { "appId": app_id, "volumeName": "db" } }),
    )
    .await
    .expect_field_error(422, "into.volumeName");
    f.request_restore(
        &id,
        json!({ "confirm": id, "into": { "appId": app_id, "volumeName": "nope" } }),
    )
    .await
    .expect_field_error(422, "into.volumeName");
    f.request_restore(
        &id,
        json!({ "confirm": id, "into": { "appId": uuid::Uuid::now_v7(), "volumeName": "data" } }),
    )
    .await
    .expect_field_error(422, "into.appId");
    // One restore at a time per destination; dry runs are not held to it.
    let first = f.request_restore(&id, json!({ "confirm": id })).await;
    first.expect(202);
    let second = f.request_restore(&id, json!({ "confirm": id })).await;
    second.expect(409);
    assert!(second.body["detail"]
        .as_str()
        .unwrap()
        .contains("already pending or running"));
    f.request_restore(&id, json!({ "confirm": id, "dryRun": true }))
        .await
        .expect(202);
    let listed = f
        .app
        .get(&f.org.path("/backups/restores"), &f.org.viewer)
        .await;
    assert_eq!(listed.expect(200)["items"].as_array().unwrap().len(), 2);
    f.drain().await;

    // A backup written by a newer archive format: 409, upgrade.
    let mut manifest = record["manifest"].clone();
    manifest["formatVersion"] = json!(99);
    backup::Entity::update(backup::ActiveModel {
        id: ActiveValue::Unchanged(uuid::Uuid::parse_str(&id).unwrap()),
        manifest: ActiveValue::Set(Some(manifest)),
        ..Default::default()
    })
    .exec(&f.app.cairn.db)
    .await
    .unwrap();
    let newer = f.request_restore(&id, json!({ "confirm": id })).await;
    newer.expect(409);
    assert!(newer.body["detail"].as_str().unwrap().contains("upgrade"));
    let preview = f.preview(&id).await;
    assert_eq!(preview["restorable"], false);
    assert!(preview["reason"].as_str().unwrap().contains("upgrade"));

    // Only successful backups restore.
    backup::Entity::update(backup::ActiveModel {
        id: ActiveValue::Unchanged(uuid::Uuid::parse_str(&id).unwrap()),
        status: ActiveValue::Set(cairn_entity::enums::BackupStatus::Failed),
        ..Default::default()
    })
    .exec(&f.app.cairn.db)
    .await
    .unwrap();
    f.request_restore(&id, json!({ "confirm": id }))
        .await
        .expect(409);
}

/// Replaces the stored archive of `backup` with `bytes` under a name ending
/// in `suffix`, and records its checksum, as if Cairn had written it.
async fn plant(f: &Fixture, backup_id: &str, bytes: &[u8], suffix: &str) {
    use sha2::Digest;
    let model = f.backup_model(backup_id).await;
    let old = model.storage_path.clone().unwrap();
    let path = format!("{}.{suffix}", old.split('.').next().unwrap());
    let stored = f.stored(&path);
    std::fs::write(&stored, bytes).unwrap();
    backup::Entity::update(backup::ActiveModel {
        id: ActiveValue::Unchanged(model.id),
        storage_path: ActiveValue::Set(Some(path)),
        sha256: ActiveValue::Set(Some(format!("{:x}", sha2::Sha256::digest(bytes)))),
        ..Default::default()
    })
    .exec(&f.app.cairn.db)
    .await
    .unwrap();
}

/// Every path under `root`, with its description, for before/after checks.
fn snapshot(root: &Path) -> std::collections::BTreeMap<String, String> {
    describe(root)
}

/// The hostile corpus, through the API: each restore fails, names the
/// entry, and neither the volume nor a sentinel directory beside it
/// changes.
#[tokio::test]
async fn hostile_archives_are_refused_through_the_api() {
    let f = fixture(Backend::Sqlite, "acme").await;
    let data = f.volume_dir("shop", "blue", "data");
    std::fs::write(data.join("keep.txt"), b"volume").unwrap();
    let sentinel = f.volumes.path().join("shop-blue_data/sentinel");
    std::fs::create_dir_all(&sentinel).unwrap();
    std::fs::write(sentinel.join("keep.txt"), b"sentinel").unwrap();
    let app_id = f.create_shop().await;
    let job = f.create_job_for(&app_id, json!({ "keepLast": 1 })).await;
    let record = f.run_to_end(&job).await;
    assert_eq!(record["status"], "success", "{record}");
    let id = record["id"].as_str().unwrap().to_owned();
    let before = snapshot(f.volumes.path());

    let evil = PathBuf::from(format!("/tmp/cairn-evil-{}", uuid::Uuid::now_v7()));
    let evil_text = evil.display().to_string();
    let raw = raw_tar;
    // 64 MiB of zeros: a few KiB compressed, far beyond the manifest's size.
    let zeros = raw(&[("zeros", b'0', "", &vec![0u8; 64 * 1024 * 1024])]);
    let compress = |tool: &str, bytes: &[u8]| -> Vec<u8> {
        use std::io::Write;
        let mut child = std::process::Command::new(tool)
            .args(["-q", "-c"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let input = bytes.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&input).unwrap());
        let output = child.wait_with_output().unwrap();
        writer.join().unwrap();
        assert!(output.status.success());
        output.stdout
    };
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "dotdot",
            raw(&[("../x", b'0', "", b"x")]),
            "tar",
            "\"../x\"",
        ),
        (
            "absolute",
            raw(&[(&evil_text, b'0', "", b"x")]),
            "tar",
            &evil_text,
        ),
        (
            "symlink-to-root",
            raw(&[
                ("l", b'2', "/", b""),
                (&format!("l{evil_text}"), b'0', "", b"x"),
            ]),
            "tar",
            "\"l\"",
        ),
        (
            "symlink-to-parent",
            raw(&[("up", b'2', "..", b""), ("up/x", b'0', "", b"x")]),
            "tar",
            "\"up\"",
        ),
        (
            "hard-link-out",
            raw(&[("h", b'1', "../sentinel/keep.txt", b"")]),
            "tar",
            "\"h\"",
        ),
        (
            "symlink-then-directory",
            raw(&[
                ("a", b'2', ".", b""),
                ("a/", b'5', "", b""),
                ("a/x", b'0', "", b"x"),
            ]),
            "tar",
            "\"a/\"",
        ),
        (
            "zstd-bomb",
            compress("zstd", &zeros),
            "tar.zst",
            "decompression bomb",
        ),
        (
            "gzip-bomb",
            compress("gzip", &zeros),
            "tar.gz",
            "decompression bomb",
        ),
    ];
    for (name, bytes, suffix, named) in cases {
        plant(&f, &id, &bytes, suffix).await;
        // A dry run applies the same checks without writing.
        let dry = f.restore_to_end(&id, json!({ "dryRun": true })).await;
        assert_eq!(dry["status"], "failed", "{name}: {dry}");
        assert!(
            dry["errorMessage"].as_str().unwrap().contains(named),
            "{name}: {dry}"
        );
        let restored = f
            .restore_to_end(&id, json!({ "safetyBackup": false }))
            .await;
        assert_eq!(restored["status"], "failed", "{name}: {restored}");
        let message = restored["errorMessage"].as_str().unwrap();
        assert!(message.contains(named), "{name}: {message}");
        assert!(
            ["archive_refused", "archive_too_large"]
                .contains(&restored["errorCode"].as_str().unwrap()),
            "{name}: {restored}"
        );
        assert_eq!(
            snapshot(f.volumes.path()),
            before,
            "{name}: something changed"
        );
        assert!(!evil.exists(), "{name}: {evil_text} was written");
    }
}

/// A flipped byte in the stored object blocks the restore; the volume is
/// unchanged.
#[tokio::test]
async fn a_checksum_mismatch_blocks_the_restore() {
    let f = fixture(Backend::Sqlite, "acme").await;
    let data = f.volume_dir("shop", "blue", "data");
    restorable_volume(&data, 3);
    let app_id = f.create_shop().await;
    let job = f.create_job_for(&app_id, json!({ "keepLast": 1 })).await;
    let record = f.run_to_end(&job).await;
    let id = record["id"].as_str().unwrap().to_owned();
    change(&data);
    let before = describe(f.volumes.path());
    let stored = f.stored(record["storagePath"].as_str().unwrap());
    let mut bytes = std::fs::read(&stored).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&stored, bytes).unwrap();
    let restored = f.restore_to_end(&id, json!({})).await;
    assert_eq!(restored["status"], "failed", "{restored}");
    assert_eq!(restored["errorCode"], "checksum_mismatch", "{restored}");
    assert_eq!(restored["safetyBackupId"], Value::Null, "{restored}");
    assert_eq!(describe(f.volumes.path()), before);
}

/// A dry run reads everything and writes nothing; a clone into another
/// app's volume (whose directory does not exist yet) leaves the source
/// untouched.
#[tokio::test]
async fn dry_runs_write_nothing_and_clones_leave_the_source_alone() {
    let f = fixture(Backend::Sqlite, "acme").await;
    let data = f.volume_dir("shop", "blue", "data");
    restorable_volume(&data, 3);
    let original = describe(&data);
    let app_id = f.create_shop().await;
    let staging_app = f
        .create_app(json!({ "name": "staging", "volumes": [{ "name": "copy" }] }))
        .await;
    let job = f.create_job_for(&app_id, json!({ "keepLast": 1 })).await;
    let record = f.run_to_end(&job).await;
    let id = record["id"].as_str().unwrap().to_owned();
    change(&data);
    let changed = describe(f.volumes.path());

    let dry = f.restore_to_end(&id, json!({ "dryRun": true })).await;
    assert_eq!(dry["status"], "success", "{dry}");
    assert_eq!(dry["dryRun"], true);
    assert_eq!(dry["safetyBackupId"], Value::Null);
    assert_eq!(
        dry["summary"]["files"], record["manifest"]["fileCount"],
        "{dry}"
    );
    assert_eq!(describe(f.volumes.path()), changed);

    let clone = f
        .restore_to_end(
            &id,
            json!({ "into": { "appId": staging_app, "volumeName": "copy" } }),
        )
        .await;
    assert_eq!(clone["status"], "success", "{clone}");
    assert_eq!(clone["appName"], "staging");
    assert_eq!(clone["summary"]["created"], true, "{clone}");
    let copy = f.volumes.path().join("staging-blue_copy/_data");
    assert_eq!(describe(&copy), original);
    let mut after = describe(f.volumes.path());
    after.retain(|path, _| !path.starts_with("staging-blue_copy"));
    assert_eq!(after, changed, "the source volume changed");
}

/// A PostgreSQL volume backed up to `target_kind`: rows changed after the
/// backup are back after the restore; the safety dump restores the changed
/// rows; a clone fills another database and leaves the source alone.
async fn database_round_trip(target_kind: &str, encryption: &str) {
    let f = fixture(Backend::Sqlite, "acme").await;
    let source = unique("rsrc").replace('-', "_");
    let clone = unique("rclone").replace('-', "_");
    psql("postgres", &format!("CREATE DATABASE \"{source}\""));
    psql("postgres", &format!("CREATE DATABASE \"{clone}\""));
    create_orders(&source, 2000);
    let app_id = f
        .create_app(json!({ "name": "shop", "volumes": [postgres_volume("db", &source)] }))
        .await;
    let other = f
        .create_app(json!({ "name": "other", "volumes": [postgres_volume("db", &clone)] }))
        .await;
    let target = f.target(target_kind).await;
    let job = f
        .create_job_for(
            &app_id,
            json!({ "keepLast": 1, "targetId": target, "encryption": encryption }),
        )
        .await;
    let record = f.run_to_end(&job).await;
    assert_eq!(record["status"], "success", "{record}");
    let id = record["id"].as_str().unwrap().to_owned();
    let rows = "SELECT count(*), sum(id), max(item) FROM orders";
    let backed_up = psql(&source, rows);

    let preview = f.preview(&id).await;
    assert_eq!(preview["kind"], "pg_dump");
    assert_eq!(preview["restorable"], true, "{preview}");
    assert_eq!(preview["contents"]["tables"], json!(["public.orders"]));

    psql(
        &source,
        "DELETE FROM orders WHERE id > 1500; INSERT INTO orders VALUES (9999, 'late');",
    );
    let changed = psql(&source, rows);
    assert_ne!(changed, backed_up);

    let dry = f.restore_to_end(&id, json!({ "dryRun": true })).await;
    assert_eq!(dry["status"], "success", "{dry}");
    assert_eq!(psql(&source, rows), changed);

    let restored = f.restore_to_end(&id, json!({})).await;
    assert_eq!(restored["status"], "success", "{restored}");
    assert_eq!(restored["kind"], "pg_dump");
    assert_eq!(psql(&source, rows), backed_up);

    let safety = restored["safetyBackupId"].as_str().unwrap().to_owned();
    let back = f
        .restore_to_end(&safety, json!({ "safetyBackup": false }))
        .await;
    assert_eq!(back["status"], "success", "{back}");
    assert_eq!(psql(&source, rows), changed);

    let cloned = f
        .restore_to_end(
            &id,
            json!({ "into": { "appId": other, "volumeName": "db" }, "safetyBackup": false }),
        )
        .await;
    assert_eq!(cloned["status"], "success", "{cloned}");
    assert_eq!(psql(&clone, rows), backed_up);
    assert_eq!(psql(&source, rows), changed, "the source changed");
}

/// Disaster recovery with the `cairn` binary alone: an encrypted backup in
/// the bucket is verified and extracted straight from `s3://…` with the
/// exported identity and credentials from the environment — no server, no
/// database — and the tree is the volume's.
#[tokio::test]
async fn the_cli_recovers_a_volume_from_the_bucket() {
    let f = fixture(Backend::Sqlite, "acme").await;
    let data = f.volume_dir("shop", "blue", "data");
    restorable_volume(&data, 3);
    let original = describe(&data);
    let app_id = f.create_shop().await;
    let prefix = unique("dr");
    let target = f
        .create_target(s3_target_from_env("s3", json!({ "prefix": prefix })))
        .await;
    let job = f
        .create_job_for(
            &app_id,
            json!({ "targetId": target, "keepLast": 1, "encryption": "age" }),
        )
        .await;
    let record = f.run_to_end(&job).await;
    assert_eq!(record["status"], "success", "{record}");
    let exported = f.export_key().await;
    let work = tempfile::tempdir().unwrap();
    let identity = work.path().join("org.key");
    std::fs::write(&identity, exported["identity"].as_str().unwrap()).unwrap();
    let location = format!(
        "s3://{}/{prefix}/{}",
        env("TEST_S3_BUCKET"),
        record["storagePath"].as_str().unwrap()
    );
    let cairn = |args: &[&std::ffi::OsStr]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
            .arg("archive")
            .args(args)
            .env_remove("CAIRN_CONFIG")
            .env("AWS_ACCESS_KEY_ID", env("TEST_S3_ACCESS_KEY"))
            .env("AWS_SECRET_ACCESS_KEY", env("TEST_S3_SECRET_KEY"))
            .env("AWS_ENDPOINT_URL", env("TEST_S3_ENDPOINT"))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let inspected: Value =
        serde_json::from_str(&cairn(&["inspect".as_ref(), location.as_ref()])).unwrap();
    assert_eq!(inspected, record["manifest"]);
    let verified = cairn(&[
        "verify".as_ref(),
        location.as_ref(),
        "--identity".as_ref(),
        identity.as_os_str(),
    ]);
    assert!(verified.contains("checksum ok"), "{verified}");
    let into = work.path().join("recovered");
    cairn(&[
        "extract".as_ref(),
        location.as_ref(),
        "--into".as_ref(),
        into.as_os_str(),
        "--identity".as_ref(),
        identity.as_os_str(),
    ]);
    assert_eq!(describe(&into), original);
}

#[tokio::test]
async fn encrypted_databases_round_trip_on_a_local_target() {
    database_round_trip("local", "age").await;
}

#[tokio::test]
async fn databases_round_trip_on_s3() {
    database_round_trip("s3", "none").await;
}

#[tokio::test]
async fn encrypted_databases_round_trip_over_ssh() {
    database_round_trip("ssh", "age").await;
}

/// A restore whose worker died (its lease ran out) is failed as
/// `worker_lost` by the next worker tick, and the destination takes a new
/// restore.
#[tokio::test]
async fn a_lost_restore_is_reaped() {
    use cairn_entity::restore;
    let f = fixture(Backend::Sqlite, "acme").await;
    std::fs::write(f.volume_dir("shop", "blue", "data").join("f.txt"), b"x").unwrap();
    let app_id = f.create_shop().await;
    let job = f.create_job_for(&app_id, json!({ "keepLast": 1 })).await;
    let id = f.run_to_end(&job).await["id"].as_str().unwrap().to_owned();
    let requested = f.request_restore(&id, json!({ "confirm": id })).await;
    let restore_id = uuid::Uuid::parse_str(requested.expect(202)["id"].as_str().unwrap()).unwrap();
    // As a worker that claimed it and died would leave it.
    restore::Entity::update(restore::ActiveModel {
        id: ActiveValue::Unchanged(restore_id),
        status: ActiveValue::Set(cairn_entity::enums::RestoreStatus::Running),
        attempt: ActiveValue::Set(1),
        lease_owner: ActiveValue::Set(Some("dead-worker".into())),
        lease_expires_at: ActiveValue::Set(Some(chrono::Utc::now() - chrono::Duration::seconds(5))),
        ..Default::default()
    })
    .exec(&f.app.cairn.db)
    .await
    .unwrap();
    f.request_restore(&id, json!({ "confirm": id }))
        .await
        .expect(409);
    f.drain().await;
    let reaped = f.restore(&restore_id.to_string()).await;
    assert_eq!(reaped["status"], "failed", "{reaped}");
    assert_eq!(reaped["errorCode"], "worker_lost");
    assert!(reaped["errorMessage"]
        .as_str()
        .unwrap()
        .contains("dead-worker"));
    let again = f.restore_to_end(&id, json!({})).await;
    assert_eq!(again["status"], "success", "{again}");
}

/// Where the test kills the worker during a restore's swap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KillPoint {
    /// Old entries are being moved aside.
    MovingAside,
    /// Every old entry is aside; restored ones are moving in.
    MovingIn,
    /// Every restored entry is in; the old ones are being deleted.
    Deleting,
}

fn count_entries(dir: &Path) -> Option<usize> {
    std::fs::read_dir(dir).ok().map(|entries| entries.count())
}

/// The swap's journal and directories beside `_data`, for restore `id`.
struct SwapFiles {
    journal: PathBuf,
    aside: PathBuf,
    staging: PathBuf,
}

impl SwapFiles {
    fn of(data: &Path, id: &str) -> SwapFiles {
        let holder = data.parent().unwrap();
        SwapFiles {
            journal: holder.join(format!(".cairn-swap-{id}.json")),
            aside: holder.join(format!(".cairn-replaced-{id}")),
            staging: holder.join(format!(".cairn-restore-{id}")),
        }
    }

    fn phase(&self) -> Option<String> {
        let bytes = std::fs::read(&self.journal).ok()?;
        let journal: Value = serde_json::from_slice(&bytes).ok()?;
        journal["phase"].as_str().map(str::to_owned)
    }

    /// Whether the swap is at `point` now.
    fn at(&self, point: KillPoint, total: usize) -> bool {
        match (point, self.phase().as_deref()) {
            (KillPoint::MovingAside, Some("aside")) => {
                count_entries(&self.aside).is_some_and(|n| n > 1000 && n < total / 2)
            }
            (KillPoint::MovingIn, Some("in")) => {
                count_entries(&self.staging).is_some_and(|n| n > total / 2 && n < total - 1000)
            }
            (KillPoint::Deleting, Some("in")) => !self.staging.exists() && self.aside.exists(),
            _ => false,
        }
    }
}

/// The changed volume (1000 files removed, 1000 added), made once.
fn changed_volume(data: &Path) {
    if data.join("later-0000").exists() {
        return;
    }
    for i in 0..1000 {
        std::fs::remove_file(data.join(format!("f{i:06}"))).unwrap();
        std::fs::write(data.join(format!("later-{i:04}")), b"later").unwrap();
    }
}

/// A `cairn worker` killed with SIGKILL while it swaps a volume of 120 000
/// entries — moving the old ones aside, moving the restored ones in, and
/// deleting the old ones: after the reaper settles the swap from its
/// journal, the volume is exactly the old tree (rolled back) or exactly the
/// restored one (completed), the record says which, and nothing is left
/// beside `_data`.
async fn a_restore_killed_mid_swap_leaves_one_tree(backend: Backend) {
    const ENTRIES: usize = 120_000;
    let f = fixture(backend, "acme").await;
    let data = f.volume_dir("shop", "blue", "data");
    for i in 0..ENTRIES {
        std::fs::write(data.join(format!("f{i:06}")), i.to_string()).unwrap();
    }
    let app_id = f.create_shop().await;
    let job = f
        .create_job_for(&app_id, json!({ "keepLast": 1, "compression": "none" }))
        .await;
    let record = f.run_to_end(&job).await;
    assert_eq!(record["status"], "success", "{record}");
    let backup_id = record["id"].as_str().unwrap().to_owned();
    let backed_up = describe(&data);
    let lease_seconds = 2;

    for point in [
        KillPoint::MovingAside,
        KillPoint::MovingIn,
        KillPoint::Deleting,
    ] {
        changed_volume(&data);
        let before = describe(&data);
        assert_ne!(before, backed_up);
        let requested = f
            .request_restore(
                &backup_id,
                json!({ "confirm": backup_id, "safetyBackup": false }),
            )
            .await;
        let restore_id = requested.expect(202)["id"].as_str().unwrap().to_owned();
        let files = SwapFiles::of(&data, &restore_id);
        let mut child = cairn_process(
            &f,
            "worker",
            &[],
            &[("CAIRN_WORKER__LEASE_SECONDS", lease_seconds.to_string())],
        );
        let started = std::time::Instant::now();
        while !files.at(point, ENTRIES) {
            assert!(
                started.elapsed() < Duration::from_secs(180),
                "{point:?} was never reached: {}",
                f.restore(&restore_id).await
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(files.journal.exists(), "{point:?}: killed mid-swap");

        // The reaper (here, an in-process worker's) settles it once the
        // lease has expired.
        tokio::time::sleep(Duration::from_secs(lease_seconds + 1)).await;
        f.drain().await;
        let reaped = f.restore(&restore_id).await;
        assert_eq!(reaped["status"], "failed", "{reaped}");
        assert_eq!(reaped["errorCode"], "worker_lost", "{reaped}");
        let (swap, tree, says) = match point {
            KillPoint::MovingAside => ("rolled_back", &before, "rolled back"),
            _ => ("completed", &backed_up, "was completed"),
        };
        assert_eq!(reaped["summary"]["swap"], swap, "{point:?}: {reaped}");
        assert!(
            reaped["errorMessage"].as_str().unwrap().contains(says),
            "{reaped}"
        );
        assert!(
            &describe(&data) == tree,
            "{point:?}: the volume is not exactly the {} tree",
            if swap == "completed" {
                "restored"
            } else {
                "old"
            }
        );
        let beside: Vec<String> = std::fs::read_dir(data.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(beside, ["_data"], "{point:?}");
    }
}
both_backends!(a_restore_killed_mid_swap_leaves_one_tree);
