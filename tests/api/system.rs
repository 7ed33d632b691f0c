//! Cairn's own database: self-backups through the API and the scheduler,
//! and `cairn system restore` after the database is lost.

use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::TimeZone;
use sea_orm::ConnectionTrait;
use serde_json::{json, Value};

use crate::helpers::{
    database_url_of, env, fixture_with, s3_objects, s3_target_from_env, snapshot, tenant, unique,
    wipe_database, Backend, Fixture,
};

/// The `cairn` binary with `args`, on the fixture's data directory and
/// `database_url`, the PostgreSQL tools of `TEST_PG_BIN` and the test S3
/// server's credentials; returns its output.
fn cairn(f_data_dir: &Path, database_url: &str, args: &[&str]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cairn"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .env("CAIRN_DATA_DIR", f_data_dir)
        .env("CAIRN_DATABASE_URL", database_url)
        .env("AWS_ACCESS_KEY_ID", env("TEST_S3_ACCESS_KEY"))
        .env("AWS_SECRET_ACCESS_KEY", env("TEST_S3_SECRET_KEY"))
        .env("AWS_ENDPOINT_URL", env("TEST_S3_ENDPOINT"));
    if let Ok(bin) = std::env::var("TEST_PG_BIN") {
        command.env("CAIRN_PG_RESTORE", PathBuf::from(bin).join("pg_restore"));
    }
    command.output().unwrap()
}

fn succeeded(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs a self-backup through the API and a worker; returns its record.
async fn self_backup(f: &Fixture) -> Value {
    let admin = &f.app.admin_token;
    let requested = f
        .app
        .post("/api/v1/system/backups/run", admin, &json!({}))
        .await
        .expect(202)
        .clone();
    assert_eq!(requested["status"], "pending", "{requested}");
    f.drain().await;
    let page = f.app.get("/api/v1/system/backups", admin).await;
    let record = page.expect(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["id"] == requested["id"])
        .expect("the self-backup is listed")
        .clone();
    assert_eq!(record["status"], "success", "{record}");
    record
}

/// Asserts that two listings are equal, showing where they first differ.
fn same(before: &[String], after: &[String]) {
    assert_eq!(before.len(), after.len());
    for (b, a) in before.iter().zip(after) {
        if b != a {
            let at = b
                .bytes()
                .zip(a.bytes())
                .position(|(x, y)| x != y)
                .unwrap_or(b.len().min(a.len()));
            let from = at.saturating_sub(300);
            panic!(
                "the listings differ at byte {at}:\nbefore: …{}\nafter:  …{}",
                &b[from..(at + 200).min(b.len())],
                &a[from..(at + 200).min(a.len())]
            );
        }
    }
}

/// Everything two organizations and the system administrator can list.
async fn everything(f: &Fixture, orgs: &[crate::helpers::Org]) -> Vec<String> {
    let mut seen = Vec::new();
    let listed = f.app.get("/api/v1/organizations", &f.app.admin_token).await;
    seen.push(listed.expect(200).to_string());
    let targets = f
        .app
        .get("/api/v1/system/backups/targets", &f.app.admin_token)
        .await;
    let mut targets = targets.expect(200).clone();
    // Every start applies the `backup:` section to "System default" again.
    for item in targets["items"].as_array_mut().unwrap() {
        if item["name"] == "System default" {
            item.as_object_mut().unwrap().remove("updatedAt");
        }
    }
    seen.push(targets.to_string());
    for org in orgs {
        seen.extend(snapshot(f, org).await);
    }
    seen
}

/// Self-backup, wipe the database, `cairn system restore`, start: every
/// organization, target (its sealed secret included), job, token and
/// history record is back, and a backup runs on the S3 target whose
/// secret came back from the self-backup. On SQLite the archive is read
/// from the local system target; on PostgreSQL the self-backups go to a
/// system-level S3 target and the restore reads `s3://…`.
async fn database_lost_and_rebuilt(backend: Backend) {
    let s3_prefix = unique("self");
    let f = fixture_with(backend, "phoenix", |config| {
        config.system_backup.enabled = true;
        config.system_backup.retention.keep_last = 5;
        if backend == Backend::Postgres {
            config.system_backup.target = Some("self-backups".into());
        }
    })
    .await;
    if backend == Backend::Postgres {
        f.app
            .post(
                "/api/v1/system/backups/targets",
                &f.app.admin_token,
                &s3_target_from_env("self-backups", json!({ "prefix": s3_prefix })),
            )
            .await
            .expect(201);
    }
    let first = tenant(&f, f.org.clone(), "shop").await;
    let second = tenant(&f, f.app.org("other").await, "blog").await;
    // A target whose secret only the database holds, and a job on it.
    let offsite = f
        .create_target(s3_target_from_env(
            "offsite",
            json!({ "prefix": unique("t") }),
        ))
        .await;
    let offsite_job = f
        .create_job_for(
            &first.ids["appId"],
            json!({ "name": "offsite", "targetId": offsite, "keepLast": 3 }),
        )
        .await;
    let offsite_backup = f.run_to_end(&offsite_job).await;
    assert_eq!(offsite_backup["status"], "success", "{offsite_backup}");

    // Only a system administrator backs Cairn up; one at a time.
    let refused = f
        .app
        .post("/api/v1/system/backups/run", &f.org.admin, &json!({}))
        .await;
    assert_eq!(refused.status, 403);
    refused.assert_problem();
    let pending = f
        .app
        .post("/api/v1/system/backups/run", &f.app.admin_token, &json!({}))
        .await;
    pending.expect(202);
    let again = f
        .app
        .post("/api/v1/system/backups/run", &f.app.admin_token, &json!({}))
        .await;
    assert_eq!(again.status, 409, "{:?}", again.body);
    again.assert_problem();
    f.drain().await;

    let record = self_backup(&f).await;
    let path = record["path"].as_str().unwrap().to_owned();
    assert!(path.starts_with("_cairn/system/"), "{path}");
    assert!(path.ends_with(".tar.zst.age"), "{path}");
    let manifest = &record["manifest"];
    assert_eq!(manifest["kind"], "cairn_system");
    assert_eq!(
        manifest["engine"],
        match backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgresql",
        }
    );
    assert_eq!(manifest["cairnVersion"], env!("CARGO_PKG_VERSION"));
    assert!(
        manifest["migrationCount"].as_u64().unwrap() >= 17,
        "{manifest}"
    );
    assert_eq!(manifest["sha256"], record["sha256"]);
    let before = everything(&f, &[first.org.clone(), second.org.clone()]).await;

    // The archive, its checksum and its manifest are where the record says;
    // the master key is not in it.
    let data_dir = f.app.cairn.config.data_dir.clone();
    let database_url = database_url_of(&f.app);
    let source = match backend {
        Backend::Sqlite => {
            let file = f.stored(&path);
            for suffix in ["", ".sha256", ".manifest.json"] {
                assert!(
                    PathBuf::from(format!("{}{suffix}", file.display())).is_file(),
                    "{suffix}"
                );
            }
            file.display().to_string()
        }
        Backend::Postgres => {
            assert!(s3_objects(&s3_prefix).join(&path).is_file());
            format!("s3://{}/{s3_prefix}/{path}", env("TEST_S3_BUCKET"))
        }
    };
    let work = tempfile::tempdir().unwrap();
    let identity = work.path().join("system.key");
    let identity_arg = identity.display().to_string();
    succeeded(&cairn(
        &data_dir,
        &database_url,
        &["system", "key", "export", "--out", &identity_arg],
    ));
    let key_text = std::fs::read_to_string(&identity).unwrap();
    assert!(key_text.contains("AGE-SECRET-KEY-1"), "an identity");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&identity).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let master_key = std::fs::read_to_string(data_dir.join("master.key")).unwrap();
    let archive_bytes = match backend {
        Backend::Sqlite => std::fs::read(&source).unwrap(),
        Backend::Postgres => std::fs::read(s3_objects(&s3_prefix).join(&path)).unwrap(),
    };
    let needle = master_key.trim().as_bytes();
    assert!(
        !archive_bytes.windows(needle.len()).any(|w| w == needle),
        "the master key is not in the archive"
    );

    // A database that is not empty is not overwritten.
    let refused = cairn(
        &data_dir,
        &database_url,
        &["system", "restore", &source, "--identity", &identity_arg],
    );
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("not empty") || said.contains("table(s)"),
        "{said}"
    );

    // The database is lost.
    let stopped = f.app.shut_down().await;
    wipe_database(backend, &database_url).await;
    let restored = succeeded(&cairn(
        &data_dir,
        &database_url,
        &["system", "restore", &source, "--identity", &identity_arg],
    ));
    assert!(restored.contains("restored the"), "{restored}");
    let f = Fixture {
        app: stopped.start().await,
        volumes: f.volumes,
        org: f.org,
    };
    let after = everything(&f, &[first.org.clone(), second.org.clone()]).await;
    same(&before, &after);
    // The self-backup the database came from reads as the success it was.
    let listed = f
        .app
        .get("/api/v1/system/backups", &f.app.admin_token)
        .await;
    let restored_record = listed.expect(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["id"] == record["id"])
        .unwrap()
        .clone();
    assert_eq!(restored_record["status"], "success");
    assert_eq!(restored_record["sha256"], record["sha256"]);
    // A backup runs, writing with the target secret the restore brought back.
    let again = f.run_to_end(&offsite_job).await;
    assert_eq!(again["status"], "success", "{again}");
}

crate::both_backends!(database_lost_and_rebuilt);

/// A self-backup of a database that has a migration this binary does not
/// know (a newer Cairn made it) is refused before anything is touched.
#[tokio::test]
async fn a_newer_schema_is_refused() {
    let f = fixture_with(Backend::Sqlite, "future", |config| {
        config.system_backup.enabled = true;
    })
    .await;
    let data_dir = f.app.cairn.config.data_dir.clone();
    let work = tempfile::tempdir().unwrap();
    let identity = work.path().join("system.key");
    let database_url = database_url_of(&f.app);
    succeeded(&cairn(
        &data_dir,
        &database_url,
        &[
            "system",
            "key",
            "export",
            "--out",
            &identity.display().to_string(),
        ],
    ));
    f.app
        .cairn
        .db
        .execute_unprepared(
            "INSERT INTO seaql_migrations (version, applied_at) \
             VALUES ('m20991231_000099_from_the_future', 0)",
        )
        .await
        .unwrap();
    let record = self_backup(&f).await;
    let source = f.stored(record["path"].as_str().unwrap());
    let elsewhere = format!("sqlite://{}?mode=rwc", work.path().join("new.db").display());
    let output = cairn(
        &data_dir,
        &database_url,
        &[
            "system",
            "restore",
            &source.display().to_string(),
            "--identity",
            &identity.display().to_string(),
            "--database-url",
            &elsewhere,
        ],
    );
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("newer Cairn"), "{said}");
    assert!(said.contains("m20991231_000099_from_the_future"), "{said}");
    assert!(!work.path().join("new.db").exists());
}

/// The scheduler records a self-backup slot once, however many replicas
/// tick, and never when self-backups are off.
#[tokio::test]
async fn the_schedule_fires_a_slot_once() {
    let f = fixture_with(Backend::Sqlite, "clock", |config| {
        config.system_backup.enabled = true;
        config.system_backup.schedule = "30 1 * * *".into();
    })
    .await;
    let slot = chrono::Utc.with_ymd_and_hms(2026, 12, 7, 1, 30, 0).unwrap();
    let replicas: Vec<_> = (0..2)
        .map(|i| {
            cairn_scheduler::Scheduler::new(
                f.app.cairn.clone(),
                std::sync::Arc::new(cairn_scheduler::LocalLocks::default()),
                format!("replica-{i}"),
            )
        })
        .collect();
    let early = replicas[0]
        .tick(slot - chrono::Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(early.system_backups, 0);
    let mut fired = 0;
    for minute in [0, 1, 5] {
        for replica in &replicas {
            fired += replica
                .tick(slot + chrono::Duration::minutes(minute))
                .await
                .unwrap()
                .system_backups;
        }
    }
    assert_eq!(fired, 1);
    let listed = f
        .app
        .get("/api/v1/system/backups", &f.app.admin_token)
        .await;
    let items = listed.expect(200)["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["trigger"], "schedule");
    assert_eq!(
        items[0]["scheduledFor"].as_str().unwrap(),
        "2026-12-07T01:30:00Z"
    );
}
