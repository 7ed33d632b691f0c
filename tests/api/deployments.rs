//! App deploys: apps and volumes upserted, the automatic job created once,
//! "back up now", bad input refused without writing anything.

use std::process::Command;

use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{fixture, fixture_with, run_ok, s3_target, Backend, Fixture, Reply};

impl Fixture {
    async fn deploy(&self, app: &str, body: Value) -> Reply {
        self.app
            .post(
                &self.org.path(&format!("/apps/{app}/deployments")),
                &self.org.operator,
                &body,
            )
            .await
    }

    async fn backup_now(&self, app_id: &str) -> Reply {
        self.app
            .post(
                &self.org.path(&format!("/apps/{app_id}/backup-now")),
                &self.org.operator,
                &json!({}),
            )
            .await
    }

    async fn jobs(&self) -> Vec<Value> {
        self.app
            .get(&self.org.path("/backups/jobs"), &self.org.viewer)
            .await
            .expect(200)["items"]
            .as_array()
            .unwrap()
            .clone()
    }

    async fn apps(&self) -> Vec<Value> {
        self.app
            .get(&self.org.path("/apps"), &self.org.viewer)
            .await
            .expect(200)["items"]
            .as_array()
            .unwrap()
            .clone()
    }
}

fn shop(slot: &str) -> Value {
    json!({ "slot": slot, "volumes": [
        { "name": "data", "persistent": true, "kind": "generic" },
        { "name": "uploads" },
        { "name": "tmp", "persistent": false },
    ]})
}

/// The first deploy with persistent volumes and a target creates one
/// automatic job with exactly the documented settings; "back up now" runs
/// it over the deployed slot's volumes; later deploys leave it alone.
async fn first_deploy_creates_the_automatic_job(backend: Backend) {
    let f = fixture(backend, "acme").await;
    for volume in ["data", "uploads"] {
        std::fs::write(
            f.volume_dir("shop", "green", volume).join("green-live.txt"),
            b"live",
        )
        .unwrap();
        std::fs::write(
            f.volume_dir("shop", "blue", volume).join("blue-old.txt"),
            b"old",
        )
        .unwrap();
    }
    let reply = f.deploy("shop", shop("green")).await;
    let body = reply.expect(201).clone();
    let app_id = body["app"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        reply.headers["location"],
        f.org.path(&format!("/apps/{app_id}")).as_str()
    );
    assert_eq!(body["app"]["name"], "shop");
    assert_eq!(body["app"]["volumes"].as_array().unwrap().len(), 3);
    assert_eq!(body["deployment"]["slot"], "green");
    assert_eq!(body["backup"]["status"], "created", "{body}");
    let job_ids = body["backup"]["jobIds"].as_array().unwrap().clone();
    assert_eq!(job_ids.len(), 1);
    let job_id = job_ids[0].as_str().unwrap();

    let jobs = f.jobs().await;
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!(job["id"], job_id);
    assert_eq!(job["name"], "Auto: shop");
    assert_eq!(job["schedule"], "0 2 * * *");
    assert_eq!(job["timezone"], "UTC");
    assert_eq!(job["enabled"], true);
    assert_eq!(job["autoCreated"], true);
    assert_eq!(job["appIds"], json!([app_id]));
    assert_eq!(job["targetId"], Value::Null);
    assert_eq!(job["keepAll"], false);
    assert_eq!(job["keepLast"], 1);
    assert_eq!(job["keepHourly"], Value::Null);
    assert_eq!(job["keepDaily"], 7);
    assert_eq!(job["keepWeekly"], 1);
    assert_eq!(job["keepMonthly"], 1);
    assert_eq!(job["keepYearly"], Value::Null);
    assert_eq!(job["notifyOnFailure"], true);
    assert_eq!(job["notifyOnSuccess"], false);
    assert!(
        job["nextRunAt"].as_str().unwrap().ends_with("T02:00:00Z"),
        "{job}"
    );

    let app = f
        .app
        .get(&f.org.path(&format!("/apps/{app_id}")), &f.org.viewer)
        .await
        .expect(200)
        .clone();
    assert_eq!(app["lastDeployment"]["slot"], "green");

    // Back up now: the persistent volumes, from the deployed (green) slot.
    let started = f.backup_now(&app_id).await.expect(202).clone();
    assert_eq!(started["autoJobCreated"], false);
    let runs = started["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    let mut volumes: Vec<&str> = runs[0]["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["volumeName"].as_str().unwrap())
        .collect();
    volumes.sort();
    assert_eq!(volumes, ["data", "uploads"]);
    f.backup_now(&app_id).await.expect(409);
    f.drain().await;
    for backup in runs[0]["backups"].as_array().unwrap() {
        let record = f.backup(backup["id"].as_str().unwrap()).await;
        assert_eq!(record["status"], "success", "{record}");
        let listing = run_ok(
            Command::new("tar")
                .arg("--zstd")
                .arg("-tf")
                .arg(f.stored(record["storagePath"].as_str().unwrap())),
        );
        let listing = String::from_utf8(listing).unwrap();
        assert!(listing.contains("green-live.txt"), "{listing}");
        assert!(!listing.contains("blue-old.txt"), "{listing}");
    }

    // A redeploy (to blue) leaves the job alone.
    let again = f.deploy("shop", shop("blue")).await;
    assert_eq!(again.expect(200)["backup"]["status"], "exists");
    assert_eq!(again.body["backup"]["jobIds"], json!([job_id]));
    assert_eq!(again.body["app"]["lastDeployment"]["slot"], "blue");
    assert_eq!(f.jobs().await.len(), 1);
    assert_eq!(f.apps().await.len(), 1);
}

both_backends!(first_deploy_creates_the_automatic_job);

/// Without a target no job is created and the answer says why; once a
/// target exists, the next deploy creates it.
#[tokio::test]
async fn without_a_target_no_job_until_one_is_added() {
    let f = fixture_with(Backend::Sqlite, "acme", |config| {
        // No local targets: no implicit system-level target either.
        config.allow_local_backups = false;
    })
    .await;
    let reply = f.deploy("shop", shop("blue")).await;
    let body = reply.expect(201).clone();
    assert_eq!(body["backup"]["status"], "noTarget");
    assert!(
        body["backup"]["reason"]
            .as_str()
            .unwrap()
            .contains("target"),
        "{body}"
    );
    assert!(f.jobs().await.is_empty());
    let app_id = body["app"]["id"].as_str().unwrap().to_owned();
    let refused = f.backup_now(&app_id).await;
    refused.expect(409);
    assert!(refused.body["detail"].as_str().unwrap().contains("target"));
    assert!(f.jobs().await.is_empty());

    f.app
        .post(
            &f.org.path("/backups/targets"),
            &f.org.admin,
            &s3_target("offsite", "secret-key-value"),
        )
        .await
        .expect(201);
    let reply = f.deploy("shop", shop("blue")).await;
    assert_eq!(reply.expect(200)["backup"]["status"], "created");
    assert_eq!(f.jobs().await.len(), 1);
}

/// Redeploys, an edited job and a deleted job: never a duplicate, never
/// re-created; a job a user made for the app is respected.
#[tokio::test]
async fn edited_and_deleted_automatic_jobs_are_left_alone() {
    let f = fixture(Backend::Sqlite, "acme").await;
    let first = f.deploy("shop", shop("blue")).await.expect(201).clone();
    let app_id = first["app"]["id"].as_str().unwrap().to_owned();
    let job_id = first["backup"]["jobIds"][0].as_str().unwrap().to_owned();
    let job_path = f.org.path(&format!("/backups/jobs/{job_id}"));
    let mut edited = f
        .app
        .get(&job_path, &f.org.viewer)
        .await
        .expect(200)
        .clone();
    edited["schedule"] = json!("30 4 * * *");
    edited["keepDaily"] = json!(30);
    let request = json!({
        "name": edited["name"], "schedule": edited["schedule"], "appIds": edited["appIds"],
        "keepLast": 1, "keepDaily": 30, "keepWeekly": 1, "keepMonthly": 1,
    });
    f.app
        .put(&job_path, &f.org.admin, &request)
        .await
        .expect(200);
    for slot in ["green", "blue"] {
        let reply = f.deploy("shop", shop(slot)).await;
        assert_eq!(reply.expect(200)["backup"]["status"], "exists");
    }
    let jobs = f.jobs().await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["schedule"], "30 4 * * *");
    assert_eq!(jobs[0]["keepDaily"], 30);

    f.app.delete(&job_path, &f.org.admin).await.expect(204);
    let reply = f.deploy("shop", shop("green")).await;
    assert_eq!(reply.expect(200)["backup"]["status"], "removed");
    assert!(reply.body["backup"]["reason"]
        .as_str()
        .unwrap()
        .contains("deleted"));
    assert!(f.jobs().await.is_empty());
    let refused = f.backup_now(&app_id).await;
    refused.expect(409);
    assert!(refused.body["detail"].as_str().unwrap().contains("deleted"));
    assert!(f.jobs().await.is_empty());

    // An app a user's job covers before its first deploy gets no job.
    let api_id = f
        .create_app(json!({ "name": "api", "volumes": [{ "name": "data" }] }))
        .await;
    let own = f
        .create_job(
            json!({ "name": "mine", "schedule": "0 3 * * *", "appIds": [api_id], "keepLast": 3 }),
        )
        .await;
    let reply = f
        .deploy(
            "api",
            json!({ "slot": "blue", "volumes": [{ "name": "data" }] }),
        )
        .await;
    assert_eq!(reply.expect(200)["backup"]["status"], "covered");
    assert_eq!(reply.body["backup"]["jobIds"], json!([own]));
    assert_eq!(f.jobs().await.len(), 1);

    // An app made through the apps API, covered by no job: "back up now"
    // creates its automatic job first.
    let admin_app = f
        .create_app(json!({ "name": "admin", "volumes": [{ "name": "files" }] }))
        .await;
    std::fs::write(f.volume_dir("admin", "blue", "files").join("x"), b"x").unwrap();
    let started = f.backup_now(&admin_app).await.expect(202).clone();
    assert_eq!(started["autoJobCreated"], true);
    assert_eq!(started["runs"][0]["backups"][0]["volumeName"], "files");
    let jobs = f.jobs().await;
    let auto = jobs.iter().find(|j| j["name"] == "Auto: admin").unwrap();
    assert_eq!(auto["autoCreated"], true);
    assert_eq!(auto["appIds"], json!([admin_app]));
    f.drain().await;
    let record = f
        .backup(started["runs"][0]["backups"][0]["id"].as_str().unwrap())
        .await;
    assert_eq!(record["status"], "success", "{record}");

    // An app without a persistent volume needs no job.
    let reply = f
        .deploy(
            "web",
            json!({ "slot": "blue", "volumes": [{ "name": "cache", "persistent": false }] }),
        )
        .await;
    assert_eq!(reply.expect(201)["backup"]["status"], "noPersistentVolume");
    assert_eq!(f.jobs().await.len(), 2);
}

/// Ten simultaneous first deploys: one app, one job, one `201`.
async fn concurrent_first_deploys_make_one_app_and_one_job(backend: Backend) {
    let f = fixture(backend, "acme").await;
    let calls = (0..10).map(|i| f.deploy("shop", shop(if i % 2 == 0 { "blue" } else { "green" })));
    let replies = futures::future::join_all(calls).await;
    let mut created = 0;
    let mut job_ids = std::collections::HashSet::new();
    for reply in &replies {
        match reply.status.as_u16() {
            201 => created += 1,
            200 => {}
            other => panic!("unexpected {other}: {}", reply.text),
        }
        for id in reply.body["backup"]["jobIds"].as_array().unwrap() {
            job_ids.insert(id.as_str().unwrap().to_owned());
        }
    }
    assert_eq!(created, 1);
    assert_eq!(job_ids.len(), 1, "{job_ids:?}");
    assert_eq!(f.apps().await.len(), 1);
    let jobs = f.jobs().await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["name"], "Auto: shop");
    let statuses: Vec<&str> = replies
        .iter()
        .map(|r| r.body["backup"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == "created").count(),
        1,
        "{statuses:?}"
    );
}

both_backends!(concurrent_first_deploys_make_one_app_and_one_job);

/// Bad input is refused with the field, and nothing is written.
#[tokio::test]
async fn bad_deploys_are_refused_without_writing() {
    let f = fixture(Backend::Sqlite, "acme").await;
    for (app, body, field) in [
        ("shop", json!({ "slot": "purple", "volumes": [] }), "slot"),
        ("shop", json!({ "volumes": [] }), "slot"),
        (
            "shop",
            json!({ "slot": "blue", "volumes": [{ "name": "data" }, { "name": "data" }] }),
            "volumes[1].name",
        ),
        (
            "shop",
            json!({ "slot": "blue", "volumes": [{ "name": "db", "kind": "postgres" }] }),
            "volumes[0].postgres",
        ),
        (
            "shop",
            json!({ "slot": "blue", "volumes": [{ "name": "db", "kind": "postgres", "postgres": { "host": "127.0.0.1", "database": "app", "username": "app" } }] }),
            "volumes[0].postgres.password",
        ),
        ("-shop", json!({ "slot": "blue", "volumes": [] }), "appName"),
        (
            "shop",
            json!({ "slot": "blue", "volumes": [{ "name": "data", "colour": "red" }] }),
            "volumes[0].colour",
        ),
    ] {
        f.deploy(app, body).await.expect_field_error(422, field);
    }
    f.app
        .post(
            &f.org.path("/apps/shop/deployments"),
            &f.org.viewer,
            &shop("blue"),
        )
        .await
        .expect(403);
    assert!(f.apps().await.is_empty());
    assert!(f.jobs().await.is_empty());
}

/// Volumes a deploy no longer lists are detached (kept, not backed up) and
/// attached again when listed; a postgres volume keeps its stored password.
#[tokio::test]
async fn unlisted_volumes_are_detached_not_deleted() {
    let f = fixture(Backend::Sqlite, "acme").await;
    for volume in ["data", "uploads"] {
        std::fs::write(f.volume_dir("shop", "blue", volume).join("a.txt"), b"a").unwrap();
    }
    let first = f.deploy("shop", shop("blue")).await.expect(201).clone();
    let app_id = first["app"]["id"].as_str().unwrap().to_owned();
    let reply = f
        .deploy(
            "shop",
            json!({ "slot": "blue", "volumes": [{ "name": "data" }] }),
        )
        .await;
    let volumes = reply.expect(200)["app"]["volumes"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(volumes.len(), 3, "kept: {volumes:?}");
    let by_name = |name: &str| volumes.iter().find(|v| v["name"] == name).unwrap().clone();
    assert_eq!(by_name("data")["detachedAt"], Value::Null);
    assert!(by_name("uploads")["detachedAt"].is_string());
    assert!(by_name("tmp")["detachedAt"].is_string());
    let started = f.backup_now(&app_id).await.expect(202).clone();
    let backups = started["runs"][0]["backups"].as_array().unwrap();
    assert_eq!(backups.len(), 1);
    assert_eq!(backups[0]["volumeName"], "data");
    f.drain().await;

    let reply = f.deploy("shop", shop("blue")).await;
    let volumes = reply.expect(200)["app"]["volumes"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        volumes.iter().all(|v| v["detachedAt"].is_null()),
        "{volumes:?}"
    );
    let started = f.backup_now(&app_id).await.expect(202).clone();
    assert_eq!(started["runs"][0]["backups"].as_array().unwrap().len(), 2);

    // A postgres volume deployed again without its password keeps it.
    let pg = json!({ "slot": "blue", "volumes": [{ "name": "db", "kind": "postgres", "postgres": {
        "host": "127.0.0.1", "database": "app", "username": "app", "password": "pg-secret" } }] });
    f.deploy("billing", pg).await.expect(201);
    let again = json!({ "slot": "green", "volumes": [{ "name": "db", "kind": "postgres", "postgres": {
        "host": "127.0.0.1", "database": "app", "username": "app" } }] });
    let reply = f.deploy("billing", again).await;
    assert_eq!(
        reply.expect(200)["app"]["volumes"][0]["postgres"]["passwordSet"],
        true
    );
    assert!(!reply.text.contains("pg-secret"));
    // An operator pointing it at another server must know the password.
    let moved = json!({ "slot": "green", "volumes": [{ "name": "db", "kind": "postgres", "postgres": {
        "host": "evil.example", "database": "app", "username": "app" } }] });
    f.deploy("billing", moved)
        .await
        .expect_field_error(422, "volumes[0].postgres.password");
}

/// "Back up now" of one app says nothing of the job's health (the job's
/// other apps were not backed up); deleting an app takes its automatic job
/// along.
#[tokio::test]
async fn scoped_runs_and_deleted_apps() {
    let f = fixture(Backend::Sqlite, "acme").await;
    std::fs::write(f.volume_dir("a", "blue", "data").join("x"), b"x").unwrap();
    let a = f
        .create_app(json!({ "name": "a", "volumes": [{ "name": "data" }] }))
        .await;
    let b = f
        .create_app(json!({ "name": "b", "volumes": [{ "name": "gone" }] }))
        .await;
    let job = f
        .create_job(
            json!({ "name": "both", "schedule": "0 2 * * *", "appIds": [a, b], "keepLast": 3 }),
        )
        .await;
    f.run(&job).await;
    f.drain().await;
    let job_path = f.org.path(&format!("/backups/jobs/{job}"));
    let health = f
        .app
        .get(&job_path, &f.org.viewer)
        .await
        .expect(200)
        .clone();
    assert_eq!(health["consecutiveFailures"], 1);
    let started = f.backup_now(&a).await.expect(202).clone();
    f.drain().await;
    let after = f
        .app
        .get(&job_path, &f.org.viewer)
        .await
        .expect(200)
        .clone();
    assert_eq!(after["consecutiveFailures"], 1, "{after}");
    assert_eq!(after["lastSuccessAt"], Value::Null);
    let runs = f
        .app
        .get(&format!("{job_path}/runs"), &f.org.viewer)
        .await
        .expect(200)["items"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(runs[0]["id"], started["runs"][0]["runId"]);
    assert_eq!(runs[0]["status"], "success");
    assert_eq!(runs[0]["scopeAppId"], a.as_str());
    assert_eq!(runs[1]["scopeAppId"], Value::Null);

    // Deleting an app deletes its automatic job; one the user made cover
    // another app too is kept.
    let first = f.deploy("shop", shop("blue")).await.expect(201).clone();
    let shop_id = first["app"]["id"].as_str().unwrap().to_owned();
    let web = f.deploy("web", shop("blue")).await.expect(201).clone();
    let web_id = web["app"]["id"].as_str().unwrap().to_owned();
    let web_job = web["backup"]["jobIds"][0].as_str().unwrap().to_owned();
    let web_job_path = f.org.path(&format!("/backups/jobs/{web_job}"));
    f.app
        .put(
            &web_job_path,
            &f.org.admin,
            &json!({ "name": "Auto: web", "schedule": "0 2 * * *", "appIds": [web_id, a], "keepLast": 1 }),
        )
        .await
        .expect(200);
    assert_eq!(f.jobs().await.len(), 3);
    for id in [&shop_id, &web_id] {
        f.app
            .delete(&f.org.path(&format!("/apps/{id}")), &f.org.admin)
            .await
            .expect(204);
    }
    let names: Vec<String> = f
        .jobs()
        .await
        .iter()
        .map(|j| j["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["Auto: web", "both"]);
    // A new app of the same name gets a fresh automatic job.
    let again = f.deploy("shop", shop("blue")).await;
    assert_eq!(again.expect(201)["backup"]["status"], "created");
    assert!(f.jobs().await.iter().any(|j| j["name"] == "Auto: shop"));
}
