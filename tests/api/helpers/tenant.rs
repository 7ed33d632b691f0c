//! One organization with one resource of every kind an id can name, for
//! the tests that send one tenant's ids with another's token.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::{Fixture, Org};

/// The resources of one organization, by the name of the parameter or
/// field that names them.
pub struct Tenant {
    pub org: Org,
    pub ids: HashMap<&'static str, String>,
}

/// Gives `org` a local target, an app `app` with a volume (holding a
/// file), a job over it that has run (one backup), a dry-run restore of that
/// backup, a webhook channel and a spare token.
pub async fn tenant(f: &Fixture, org: Org, app: &str) -> Tenant {
    let admin = &org.admin;
    let data = f
        .volumes
        .path()
        .join(format!("{app}-blue_data"))
        .join("_data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("f.txt"), app.as_bytes()).unwrap();
    let post = |path: String, body: Value| {
        let app = &f.app;
        async move { app.post(&path, admin, &body).await.expect(201).clone() }
    };
    let target = post(
        org.path("/backups/targets"),
        json!({ "name": "local", "type": "local", "config": { "path": "backups" } }),
    )
    .await;
    let app_view = post(
        org.path("/apps"),
        json!({ "name": app, "volumes": [{ "name": "data" }] }),
    )
    .await;
    let job = post(
        org.path("/backups/jobs"),
        json!({ "name": "n", "schedule": "0 2 * * *", "appIds": [app_view["id"]],
                "targetId": target["id"], "keepLast": 5 }),
    )
    .await;
    let channel = post(
        org.path("/notifications/channels"),
        json!({ "name": "hook", "type": "webhook", "config": { "url": "http://127.0.0.1:9/hook" } }),
    )
    .await;
    let token = post(
        org.path("/tokens"),
        json!({ "name": "spare", "role": "viewer" }),
    )
    .await;
    let run = f
        .app
        .post(
            &org.path(&format!(
                "/backups/jobs/{}/run",
                job["id"].as_str().unwrap()
            )),
            &org.operator,
            &json!({}),
        )
        .await;
    let run = run.expect(202).clone();
    f.drain().await;
    let backup = run["backups"][0]["id"].as_str().unwrap().to_owned();
    let restore = f
        .app
        .post(
            &org.path(&format!("/backups/history/{backup}/restore")),
            &org.operator,
            &json!({ "confirm": backup, "dryRun": true }),
        )
        .await;
    let restore = restore.expect(202)["id"].as_str().unwrap().to_owned();
    let verification = f
        .app
        .post(
            &org.path(&format!("/backups/history/{backup}/verify")),
            &org.operator,
            &json!({ "mode": "read" }),
        )
        .await;
    let verification = verification.expect(202)["id"].as_str().unwrap().to_owned();
    f.drain().await;
    let id = |v: &Value| v["id"].as_str().unwrap().to_owned();
    let ids = HashMap::from([
        ("orgId", org.id.clone()),
        ("targetId", id(&target)),
        ("appId", id(&app_view)),
        ("appName", app.to_owned()),
        ("jobId", id(&job)),
        ("backupId", backup),
        ("restoreId", restore),
        ("verificationId", verification),
        ("channelId", id(&channel)),
        ("tokenId", id(&token)),
        ("runId", run["runId"].as_str().unwrap().to_owned()),
    ]);
    Tenant { org, ids }
}

/// What `org` can see of itself, to check that nothing was written.
pub async fn snapshot(f: &Fixture, org: &Org) -> Vec<String> {
    let mut seen = Vec::new();
    for path in [
        "/apps",
        "/backups/targets",
        "/backups/jobs",
        "/backups/history",
        "/backups/restores",
        "/backups/verifications",
        "/notifications/channels",
        "/tokens",
    ] {
        let reply = f.app.get(&org.path(path), &org.admin).await;
        let mut listed = reply.expect(200).clone();
        // Using a token is not a change of the organization's resources,
        // nor is time passing (a job's recovery point ages with the clock).
        for item in listed["items"].as_array_mut().into_iter().flatten() {
            if let Some(item) = item.as_object_mut() {
                item.remove("lastUsedAt");
                item.remove("rpoSeconds");
            }
        }
        seen.push(listed.to_string());
    }
    seen
}
