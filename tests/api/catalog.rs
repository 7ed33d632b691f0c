//! Catalog import: the database is lost, the targets are not; after the
//! organizations and targets are created again, importing each target
//! rebuilds every organization's history, and a second import adds
//! nothing.

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::{json, Value};

use crate::helpers::{
    database_url_of, fixture, s3_target_from_env, unique, wipe_database, Backend, Fixture, Org,
    TestApp,
};

/// Creates app `name` (one volume, holding a file) in `org` and a job over
/// it writing to `target`; runs the job twice. Returns the job's id.
async fn two_backups(f: &Fixture, org: &Org, name: &str, target: &str) -> String {
    let data = f.volume_dir(name, "blue", "data");
    std::fs::write(data.join("page.txt"), format!("{name} {}", unique("v"))).unwrap();
    let app = f
        .app
        .post(
            &org.path("/apps"),
            &org.admin,
            &json!({ "name": name, "volumes": [{ "name": "data" }] }),
        )
        .await
        .expect(201)["id"]
        .clone();
    let job = f
        .app
        .post(
            &org.path("/backups/jobs"),
            &org.admin,
            &json!({ "name": name, "schedule": "0 2 * * *", "appIds": [app],
                     "targetId": target, "keepLast": 5 }),
        )
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..2 {
        f.app
            .post(
                &org.path(&format!("/backups/jobs/{job}/run")),
                &org.operator,
                &json!({}),
            )
            .await
            .expect(202);
        f.drain().await;
    }
    job
}

/// What an organization's history says of its stored archives.
async fn stored(app: &TestApp, org: &Org) -> BTreeSet<(String, String, String, String, i64)> {
    let page = app
        .get(&org.path("/backups/history?limit=200"), &org.admin)
        .await;
    page.expect(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|item| item["status"] == "success")
        .map(|item| {
            let text = |k: &str| item[k].as_str().unwrap().to_owned();
            (
                text("storagePath"),
                text("sha256"),
                text("appName"),
                text("volumeName"),
                item["archiveSize"].as_i64().unwrap(),
            )
        })
        .collect()
}

async fn import(app: &TestApp, target: &str) -> Value {
    app.post(
        &format!("/api/v1/system/backups/targets/{target}/import"),
        &app.admin_token,
        &json!({}),
    )
    .await
    .expect(200)
    .clone()
}

async fn history_comes_back(backend: Backend) {
    let f = fixture(backend, "atlas").await;
    let admin = f.app.admin_token.clone();
    // Every organization writes to its own target on one bucket and
    // prefix; atlas also to a local target.
    let prefix = unique("catalog");
    let offsite = s3_target_from_env("offsite", json!({ "prefix": prefix }));
    let keep_body = json!({ "name": "keep", "type": "local", "config": { "path": "keep" } });
    let keep = f.create_target(keep_body.clone()).await;
    let zenith = f.app.org("zenith").await;
    let ghost = f.app.org("ghost").await;
    let mut offsite_of = Vec::new();
    for org in [&f.org, &zenith, &ghost] {
        let id = f
            .app
            .post(&org.path("/backups/targets"), &org.admin, &offsite)
            .await
            .expect(201)["id"]
            .as_str()
            .unwrap()
            .to_owned();
        offsite_of.push(id);
    }
    two_backups(&f, &f.org, "shop", &keep).await;
    two_backups(&f, &f.org, "cart", &offsite_of[0]).await;
    two_backups(&f, &zenith, "blog", &offsite_of[1]).await;
    two_backups(&f, &ghost, "wiki", &offsite_of[2]).await;
    let atlas_before = stored(&f.app, &f.org).await;
    let zenith_before = stored(&f.app, &zenith).await;
    assert_eq!(atlas_before.len(), 4);
    assert_eq!(zenith_before.len(), 2);

    // The database is lost; the targets are not. The operator creates the
    // organizations and targets again (not "ghost"), and the app "shop"
    // with its job on "keep".
    let database_url = database_url_of(&f.app);
    let stopped = f.app.shut_down().await;
    wipe_database(backend, &database_url).await;
    let app = stopped.start().await;
    let atlas = app.org("atlas").await;
    let zenith = app.org("zenith").await;
    let f = Fixture {
        app,
        volumes: f.volumes,
        org: atlas.clone(),
    };
    assert!(stored(&f.app, &atlas).await.is_empty());
    // One system-level target over the bucket and prefix they shared.
    let mut recovery = offsite.clone();
    recovery["name"] = json!("recovery");
    let shared = f
        .app
        .post("/api/v1/system/backups/targets", &admin, &recovery)
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let keep = f.create_target(keep_body).await;
    let shop = f
        .create_app(json!({ "name": "shop", "volumes": [{ "name": "data" }] }))
        .await;
    let shop_job = f
        .create_job_for(&shop, json!({ "targetId": keep, "keepLast": 5 }))
        .await;

    // The S3 target through the API: atlas's "cart" and zenith's "blog";
    // ghost's archives are listed, not guessed.
    let report = import(&f.app, &shared).await;
    assert_eq!(report["archives"], 6, "{report}");
    assert_eq!(report["imported"].as_array().unwrap().len(), 4, "{report}");
    assert_eq!(report["alreadyRecorded"], 0);
    let unknown = report["unknownOrganizations"].as_array().unwrap();
    assert_eq!(unknown.len(), 2, "{report}");
    for skipped in unknown {
        assert!(skipped["path"]
            .as_str()
            .unwrap()
            .starts_with("ghost/wiki/data/"));
        assert!(skipped["reason"].as_str().unwrap().contains("ghost"));
    }
    assert!(
        report["unreadable"].as_array().unwrap().is_empty(),
        "{report}"
    );

    // The local target through the command line.
    let output = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["catalog", "import", "--target", &keep])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .env("CAIRN_DATA_DIR", &f.app.cairn.config.data_dir)
        .env("CAIRN_DATABASE_URL", database_url_of(&f.app))
        .env("CAIRN_RUN_MIGRATIONS", "false")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let cli: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(cli["imported"].as_array().unwrap().len(), 2, "{cli}");

    assert_eq!(stored(&f.app, &atlas).await, atlas_before);
    assert_eq!(stored(&f.app, &zenith).await, zenith_before);
    let history = f
        .app
        .get(&atlas.path("/backups/history?limit=200"), &atlas.admin)
        .await;
    let items = history.expect(200)["items"].as_array().unwrap().clone();
    for item in &items {
        assert_eq!(item["trigger"], "imported", "{item}");
    }
    // Retention goes on for "shop" (one job writes it to "keep"); "cart"
    // has no job any more.
    let shop_item = items.iter().find(|i| i["appName"] == "shop").unwrap();
    assert_eq!(shop_item["jobId"], json!(shop_job));
    assert_eq!(shop_item["appId"], json!(shop));
    let detail = f
        .app
        .get(
            &atlas.path(&format!(
                "/backups/history/{}",
                shop_item["id"].as_str().unwrap()
            )),
            &atlas.viewer,
        )
        .await;
    let detail = detail.expect(200);
    assert_eq!(
        detail["manifest"]["sha256"], shop_item["sha256"],
        "{detail}"
    );
    assert!(
        detail["log"].to_string().contains("catalog import"),
        "{detail}"
    );
    let cart_item = items.iter().find(|i| i["appName"] == "cart").unwrap();
    assert!(cart_item["jobId"].is_null());
    // History pages newest first, by when the archives were taken.
    let times: Vec<&str> = items
        .iter()
        .map(|i| i["createdAt"].as_str().unwrap())
        .collect();
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, sorted);

    // An imported backup is a backup: it verifies.
    let verification = f
        .app
        .post(
            &atlas.path(&format!(
                "/backups/history/{}/verify",
                shop_item["id"].as_str().unwrap()
            )),
            &atlas.operator,
            &json!({ "mode": "read" }),
        )
        .await
        .expect(202)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    f.drain().await;
    let verified = f.verification(&verification).await;
    assert_eq!(verified["status"], "success", "{verified}");

    // Again: nothing new.
    let again = import(&f.app, &shared).await;
    assert!(again["imported"].as_array().unwrap().is_empty(), "{again}");
    assert_eq!(again["alreadyRecorded"], 4);
    let again = import(&f.app, &keep).await;
    assert!(again["imported"].as_array().unwrap().is_empty(), "{again}");
    assert_eq!(again["alreadyRecorded"], 2);
    assert_eq!(stored(&f.app, &atlas).await, atlas_before);

    // Only a system administrator imports; an unknown target is 404.
    let refused = f
        .app
        .post(
            &format!("/api/v1/system/backups/targets/{keep}/import"),
            &atlas.admin,
            &json!({}),
        )
        .await;
    assert_eq!(refused.status, 403);
    let missing = f
        .app
        .post(
            &format!(
                "/api/v1/system/backups/targets/{}/import",
                uuid::Uuid::now_v7()
            ),
            &admin,
            &json!({}),
        )
        .await;
    assert_eq!(missing.status, 404);
    missing.assert_problem();
}

crate::both_backends!(history_comes_back);
