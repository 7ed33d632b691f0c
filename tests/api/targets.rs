use cairn_entity::backup_target;
use sea_orm::EntityTrait;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::both_backends;
use crate::helpers::{
    job, s3_target, spawn_app, spawn_app_with, Backend, TEST_ENCRYPTED_KEY, TEST_PRIVATE_KEY,
};

both_backends!(
    s3_targets_round_trip_without_revealing_the_secret,
    every_target_type_validates_its_config,
    at_most_one_default_target_per_organization,
    local_targets_stay_under_the_root_and_can_be_disabled,
    targets_in_use_cannot_be_deleted,
    targets_of_other_organizations_are_not_found,
    system_targets_are_for_administrators,
);

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY-0xC41RN";

async fn s3_targets_round_trip_without_revealing_the_secret(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.org("acme").await;
    let reply = app
        .post(
            &org.path("/backups/targets"),
            &org.admin,
            &s3_target("offsite", SECRET),
        )
        .await;
    let created = reply.expect(201).clone();
    assert!(!reply.text.contains(SECRET));
    assert_eq!(created["type"], "s3");
    assert_eq!(created["config"]["bucket"], "cairn-backups");
    assert_eq!(created["config"]["endpoint"], "http://127.0.0.1:9000");
    assert_eq!(created["config"]["secretAccessKeySet"], true);
    assert!(created["config"].get("secretAccessKey").is_none());
    let id = created["id"].as_str().unwrap();
    assert_eq!(
        reply.headers["location"].to_str().unwrap(),
        org.path(&format!("/backups/targets/{id}"))
    );

    // Stored sealed: neither column holds the plaintext, and it opens to it.
    let row = backup_target::Entity::find_by_id(Uuid::parse_str(id).unwrap())
        .one(&app.cairn.db)
        .await
        .unwrap()
        .unwrap();
    assert!(!row.config.to_string().contains(SECRET));
    let sealed = row.secrets_ciphertext.clone().unwrap();
    assert!(!sealed.contains(SECRET));
    let opened = app
        .cairn
        .master_key
        .open_fields(row.id, Some(&sealed))
        .unwrap();
    assert_eq!(opened["secretAccessKey"], SECRET);

    for path in [
        org.path(&format!("/backups/targets/{id}")),
        org.path("/backups/targets"),
    ] {
        let reply = app.get(&path, &org.viewer).await;
        reply.expect(200);
        assert!(!reply.text.contains(SECRET));
    }

    // An update that omits the secret keeps it.
    let mut changed = s3_target("offsite-2", SECRET);
    changed["config"]
        .as_object_mut()
        .unwrap()
        .remove("secretAccessKey");
    changed["config"]["bucket"] = json!("other-bucket");
    let reply = app
        .put(
            &org.path(&format!("/backups/targets/{id}")),
            &org.admin,
            &changed,
        )
        .await;
    assert_eq!(reply.expect(200)["config"]["bucket"], "other-bucket");
    assert_eq!(reply.body["name"], "offsite-2");
    assert_eq!(reply.body["config"]["secretAccessKeySet"], true);
    let row = backup_target::Entity::find_by_id(row.id)
        .one(&app.cairn.db)
        .await
        .unwrap()
        .unwrap();
    let opened = app
        .cairn
        .master_key
        .open_fields(row.id, row.secrets_ciphertext.as_deref())
        .unwrap();
    assert_eq!(opened["secretAccessKey"], SECRET);

    // A viewer reads but does not write.
    app.put(
        &org.path(&format!("/backups/targets/{id}")),
        &org.viewer,
        &changed,
    )
    .await
    .expect(403);
    app.post(
        &org.path("/backups/targets"),
        &org.operator,
        &s3_target("x", SECRET),
    )
    .await
    .expect(403);

    app.delete(&org.path(&format!("/backups/targets/{id}")), &org.admin)
        .await
        .expect(204);
    app.get(&org.path(&format!("/backups/targets/{id}")), &org.admin)
        .await
        .expect(404);
}

async fn every_target_type_validates_its_config(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.org("acme").await;
    let path = org.path("/backups/targets");
    let refuse = |body: Value, status: u16, field: &'static str| {
        let app = &app;
        let path = path.clone();
        let token = org.admin.clone();
        async move {
            app.post(&path, &token, &body)
                .await
                .expect_field_error(status, field);
        }
    };
    refuse(
        json!({ "name": "x", "type": "ftp", "config": {} }),
        422,
        "type",
    )
    .await;
    refuse(json!({ "name": "x", "type": "s3" }), 422, "config").await;
    let mut no_bucket = s3_target("x", SECRET);
    no_bucket["config"]
        .as_object_mut()
        .unwrap()
        .remove("bucket");
    refuse(no_bucket, 422, "config.bucket").await;
    let mut bad_bucket = s3_target("x", SECRET);
    bad_bucket["config"]["bucket"] = json!("Not_A_Bucket");
    refuse(bad_bucket, 422, "config.bucket").await;
    let mut no_secret = s3_target("x", SECRET);
    no_secret["config"]
        .as_object_mut()
        .unwrap()
        .remove("secretAccessKey");
    refuse(no_secret, 422, "config.secretAccessKey").await;
    for endpoint in [
        "not a url",
        "ftp://host",
        "https://user:pw@host",
        "https://host/path",
    ] {
        let mut bad = s3_target("x", SECRET);
        bad["config"]["endpoint"] = json!(endpoint);
        refuse(bad, 422, "config.endpoint").await;
    }
    let mut r2 = s3_target("x", SECRET);
    r2["type"] = json!("r2");
    r2["config"].as_object_mut().unwrap().remove("endpoint");
    refuse(r2, 422, "config.endpoint").await;
    let mut stray = s3_target("x", SECRET);
    stray["config"]["host"] = json!("example.com");
    refuse(stray, 422, "config.host").await;
    let mut unknown = s3_target("x", SECRET);
    unknown["config"]["bukket"] = json!("b");
    refuse(unknown, 422, "config.bukket").await;

    let ssh = |key: Value| {
        json!({ "name": "ssh", "type": "ssh", "config": {
            "host": "backup.example.com", "username": "cairn", "path": "/srv/backups", "privateKey": key
        }})
    };
    refuse(ssh(json!("not a key")), 422, "config.privateKey").await;
    refuse(ssh(json!(TEST_ENCRYPTED_KEY)), 422, "config.privateKey").await;
    refuse(
        json!({ "name": "ssh", "type": "ssh", "config": { "host": "h", "username": "u", "path": "relative" }}),
        422,
        "config.path",
    )
    .await;
    refuse(
        json!({ "name": "ssh", "type": "ssh", "config": { "host": "-oProxyCommand=x", "username": "u", "path": "/p" }}),
        422,
        "config.host",
    )
    .await;
    refuse(
        json!({ "name": "ssh", "type": "ssh", "config": { "host": "h", "username": "u", "path": "/p", "port": 70000 }}),
        422,
        "config.port",
    )
    .await;

    // Nothing was written by any refused request.
    let list = app.get(&path, &org.admin).await;
    assert!(list.expect(200)["items"].as_array().unwrap().is_empty());

    // Valid ones of every remote type.
    let reply = app
        .post(&path, &org.admin, &ssh(json!(TEST_PRIVATE_KEY)))
        .await;
    let created = reply.expect(201).clone();
    assert!(!reply.text.contains("OPENSSH PRIVATE KEY"));
    assert_eq!(created["config"]["port"], 22);
    assert_eq!(created["config"]["privateKeySet"], true);
    // An organization's target cannot fall back to the server's SSH agent:
    // removing its key is refused; omitting it keeps the stored one.
    let target_path = org.path(&format!(
        "/backups/targets/{}",
        created["id"].as_str().unwrap()
    ));
    let mut without_key = ssh(json!(""));
    without_key["config"]["port"] = json!(2222);
    app.put(&target_path, &org.admin, &without_key)
        .await
        .expect_field_error(422, "config.privateKey");
    without_key["config"]
        .as_object_mut()
        .unwrap()
        .remove("privateKey");
    let updated = app.put(&target_path, &org.admin, &without_key).await;
    assert_eq!(updated.expect(200)["config"]["privateKeySet"], true);
    assert_eq!(updated.body["config"]["port"], 2222);

    let mut b2 = s3_target("b2", SECRET);
    b2["type"] = json!("b2");
    b2["config"]["endpoint"] = json!("https://s3.us-west-004.backblazeb2.com");
    b2["config"].as_object_mut().unwrap().remove("region");
    let reply = app.post(&path, &org.admin, &b2).await;
    assert_eq!(reply.expect(201)["config"]["region"], "us-west-004");

    let mut r2 = s3_target("r2", SECRET);
    r2["type"] = json!("r2");
    r2["config"]["endpoint"] = json!("https://account.r2.cloudflarestorage.com");
    r2["config"].as_object_mut().unwrap().remove("region");
    let reply = app.post(&path, &org.admin, &r2).await;
    assert_eq!(reply.expect(201)["config"]["region"], "auto");

    // Names are unique within the organization.
    app.post(&path, &org.admin, &s3_target("b2", SECRET))
        .await
        .expect_field_error(409, "name");
}

async fn at_most_one_default_target_per_organization(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alpha, beta) = app.two_orgs().await;
    let mut ids = Vec::new();
    for (org, name) in [(&alpha, "a1"), (&alpha, "a2"), (&beta, "b1")] {
        let mut body = s3_target(name, SECRET);
        body["isDefault"] = json!(true);
        let reply = app
            .post(&org.path("/backups/targets"), &org.admin, &body)
            .await;
        ids.push(reply.expect(201)["id"].as_str().unwrap().to_owned());
    }
    let defaults = |items: &Value| -> Vec<String> {
        items["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["isDefault"] == true)
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let list = app
        .get(&alpha.path("/backups/targets"), &alpha.viewer)
        .await;
    assert_eq!(defaults(list.expect(200)), ["a2"]);
    let list = app.get(&beta.path("/backups/targets"), &beta.viewer).await;
    assert_eq!(defaults(list.expect(200)), ["b1"]);

    // Making a1 the default again moves the flag back.
    let mut body = s3_target("a1", SECRET);
    body["isDefault"] = json!(true);
    app.put(
        &alpha.path(&format!("/backups/targets/{}", ids[0])),
        &alpha.admin,
        &body,
    )
    .await
    .expect(200);
    let list = app
        .get(&alpha.path("/backups/targets"), &alpha.viewer)
        .await;
    assert_eq!(defaults(list.expect(200)), ["a1"]);
}

async fn local_targets_stay_under_the_root_and_can_be_disabled(backend: Backend) {
    let app = spawn_app(backend).await;
    let (acme, beta) = (app.org("acme").await, app.org("beta").await);
    let path = acme.path("/backups/targets");
    let root = app.cairn.config.local_backup_root();
    // Each organization writes under `<root>/<slug>/`.
    let own = root.join("acme");
    let local = |dir: &str| json!({ "name": format!("local {dir}"), "type": "local", "config": { "path": dir } });

    let reply = app.post(&path, &acme.admin, &local("daily")).await;
    assert_eq!(
        reply.expect(201)["config"]["path"],
        own.join("daily").to_string_lossy().as_ref()
    );
    let inside = own.join("nested/daily");
    app.post(&path, &acme.admin, &local(inside.to_str().unwrap()))
        .await
        .expect(201);
    let sibling = format!("{}-evil", own.display());
    let beta_dir = root.join("beta/x");
    for outside in [
        "/etc",
        "../escape",
        "daily/../../escape",
        root.to_str().unwrap(),
        sibling.as_str(),
        beta_dir.to_str().unwrap(),
    ] {
        app.post(&path, &acme.admin, &local(outside))
            .await
            .expect_field_error(422, "config.path");
    }
    // The other organization has a directory of its own.
    let reply = app
        .post(&beta.path("/backups/targets"), &beta.admin, &local("daily"))
        .await;
    assert_eq!(
        reply.expect(201)["config"]["path"],
        root.join("beta/daily").to_string_lossy().as_ref()
    );

    let app = spawn_app_with(backend, |config| config.allow_local_backups = false).await;
    let org = app.org("acme").await;
    app.post(&org.path("/backups/targets"), &org.admin, &local("acme"))
        .await
        .expect_field_error(422, "type");
}

async fn targets_in_use_cannot_be_deleted(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.org("acme").await;
    let reply = app
        .post(
            &org.path("/backups/targets"),
            &org.admin,
            &s3_target("t", SECRET),
        )
        .await;
    let target = reply.expect(201)["id"].as_str().unwrap().to_owned();
    let mut body = job("nightly", &[]);
    body["targetId"] = json!(target);
    app.post(&org.path("/backups/jobs"), &org.admin, &body)
        .await
        .expect(201);
    let reply = app
        .delete(&org.path(&format!("/backups/targets/{target}")), &org.admin)
        .await;
    reply.expect(409);
    assert!(
        reply.body["detail"].as_str().unwrap().contains("nightly"),
        "{}",
        reply.text
    );
    app.get(&org.path(&format!("/backups/targets/{target}")), &org.admin)
        .await
        .expect(200);

    // Without the job, the archives recorded on it still hold it.
    let jobs = app.get(&org.path("/backups/jobs"), &org.admin).await;
    let job_id = jobs.expect(200)["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.delete(&org.path(&format!("/backups/jobs/{job_id}")), &org.admin)
        .await
        .expect(204);
    crate::helpers::seed(
        &app,
        crate::helpers::Seed {
            org: &org.id,
            job: None,
            app: None,
            target: Some(&target),
            path: None,
            status: cairn_entity::enums::BackupStatus::Success,
            created_at: chrono::Utc::now(),
        },
    )
    .await;
    let reply = app
        .delete(&org.path(&format!("/backups/targets/{target}")), &org.admin)
        .await;
    reply.expect(409);
    assert!(
        reply.body["detail"]
            .as_str()
            .unwrap()
            .contains("1 backup record"),
        "{}",
        reply.text
    );
    app.get(&org.path(&format!("/backups/targets/{target}")), &org.admin)
        .await
        .expect(200);
}

async fn targets_of_other_organizations_are_not_found(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alpha, beta) = app.two_orgs().await;
    let reply = app
        .post(
            &beta.path("/backups/targets"),
            &beta.admin,
            &s3_target("t", SECRET),
        )
        .await;
    let id = reply.expect(201)["id"].as_str().unwrap().to_owned();
    let body = s3_target("stolen", SECRET);
    app.get(&beta.path("/backups/targets"), &alpha.admin)
        .await
        .expect(404);
    app.post(&beta.path("/backups/targets"), &alpha.admin, &body)
        .await
        .expect(404);
    for path in [
        beta.path(&format!("/backups/targets/{id}")),
        alpha.path(&format!("/backups/targets/{id}")),
    ] {
        app.get(&path, &alpha.admin).await.expect(404);
        app.put(&path, &alpha.admin, &body).await.expect(404);
        app.delete(&path, &alpha.admin).await.expect(404);
    }
    app.get(&alpha.path("/backups/targets/not-an-id"), &alpha.admin)
        .await
        .expect_field_error(404, "targetId");
    let reply = app
        .get(&beta.path(&format!("/backups/targets/{id}")), &beta.viewer)
        .await;
    assert_eq!(reply.expect(200)["name"], "t");
}

async fn system_targets_are_for_administrators(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.org("acme").await;
    let path = "/api/v1/system/backups/targets";
    let reply = app
        .post(path, &app.admin_token, &s3_target("shared", SECRET))
        .await;
    let created = reply.expect(201).clone();
    assert!(created["organizationId"].is_null());
    assert!(!reply.text.contains(SECRET));
    let id = created["id"].as_str().unwrap();
    let list = app.get(path, &app.admin_token).await;
    let names: Vec<&str> = list.expect(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    // "System default" is the embedded local target created at start-up.
    assert_eq!(names, ["System default", "shared"]);
    // System targets are not an organization's.
    let list = app.get(&org.path("/backups/targets"), &org.admin).await;
    assert!(list.expect(200)["items"].as_array().unwrap().is_empty());
    app.get(&org.path(&format!("/backups/targets/{id}")), &org.admin)
        .await
        .expect(404);

    let refused = app.get(path, &org.admin).await;
    assert_eq!(
        refused.expect(403)["detail"],
        "this token's role does not allow GET /api/v1/system/backups/targets \
         (it needs a system administrator token)"
    );
    app.post(path, &org.admin, &s3_target("x", SECRET))
        .await
        .expect(403);
    app.get(&format!("{path}/{id}"), &org.admin)
        .await
        .expect(403);
    app.delete(&format!("{path}/{id}"), &org.admin)
        .await
        .expect(403);

    let mut default = s3_target("y", SECRET);
    default["isDefault"] = json!(true);
    app.post(path, &app.admin_token, &default)
        .await
        .expect_field_error(422, "isDefault");
    app.put(
        &format!("{path}/{id}"),
        &app.admin_token,
        &s3_target("renamed", SECRET),
    )
    .await
    .expect(200);
    app.delete(&format!("{path}/{id}"), &app.admin_token)
        .await
        .expect(204);
    app.get(&format!("{path}/{id}"), &app.admin_token)
        .await
        .expect(404);
}
