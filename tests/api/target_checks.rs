//! The target test endpoint, archive downloads and the outbound address
//! policy, through the API, against the real S3 server and sshd.

use bytes::Bytes;
use cairn_core::storage::{self, ObjectKey, Purpose};
use cairn_entity::backup_target;
use chrono::Utc;
use sea_orm::EntityTrait;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::both_backends;
use crate::helpers::{
    env, free_port, seed, spawn_app, spawn_app_with, unique, Backend, Org, Seed, TestApp,
};

both_backends!(
    connection_tests_report_each_check,
    ssh_connection_tests_pin_the_host_key,
    archives_download_from_every_kind_of_target,
    endpoints_are_checked_against_the_address_policy,
);

fn s3_body(name: &str, bucket: &str, secret: &str, endpoint: &str) -> Value {
    json!({ "name": name, "type": "s3", "config": {
        "bucket": bucket, "accessKeyId": env("TEST_S3_ACCESS_KEY"), "secretAccessKey": secret,
        "endpoint": endpoint, "prefix": unique("api"),
    }})
}

fn ssh_body(name: &str, key_file: &str) -> Value {
    json!({ "name": name, "type": "ssh", "config": {
        "host": env("TEST_SSH_HOST"), "port": env("TEST_SSH_PORT").parse::<u16>().unwrap(),
        "username": env("TEST_SSH_USER"),
        "path": format!("{}/{}", env("TEST_SSH_ROOT"), unique("api")),
        "privateKey": std::fs::read_to_string(key_file).unwrap(),
    }})
}

async fn create(app: &TestApp, org: &Org, body: &Value) -> String {
    let reply = app
        .post(&org.path("/backups/targets"), &org.admin, body)
        .await;
    reply.expect(201)["id"].as_str().unwrap().to_owned()
}

async fn run_test(app: &TestApp, org: &Org, target: &str) -> Value {
    let reply = app
        .post(
            &org.path(&format!("/backups/targets/{target}/test")),
            &org.operator,
            &json!({}),
        )
        .await;
    reply.expect(200).clone()
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {report}"))
}

async fn connection_tests_report_each_check(backend: Backend) {
    let app = spawn_app(backend).await;
    let (org, other) = app.two_orgs().await;
    let endpoint = env("TEST_S3_ENDPOINT");
    let secret = env("TEST_S3_SECRET_KEY");

    let working = create(
        &app,
        &org,
        &s3_body("s3", &env("TEST_S3_BUCKET"), &secret, &endpoint),
    )
    .await;
    let report = run_test(&app, &org, &working).await;
    assert_eq!(report["ok"], true, "{report}");
    let names: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["connect", "write", "read", "list", "delete"]);

    let missing = create(
        &app,
        &org,
        &s3_body("missing", "no-such-bucket", &secret, &endpoint),
    )
    .await;
    let report = run_test(&app, &org, &missing).await;
    assert_eq!(report["ok"], false);
    let error = check(&report, "connect")["error"].as_str().unwrap();
    assert!(
        error.contains("bucket") && error.contains("no-such-bucket"),
        "{error}"
    );
    assert!(check(&report, "write")["error"]
        .as_str()
        .unwrap()
        .contains("not attempted"));

    let denied = create(
        &app,
        &org,
        &s3_body(
            "denied",
            &env("TEST_S3_BUCKET"),
            "wrong-secret-value",
            &endpoint,
        ),
    )
    .await;
    let report = run_test(&app, &org, &denied).await;
    assert_eq!(report["ok"], false);
    let error = check(&report, "connect")["error"].as_str().unwrap();
    assert!(
        error.contains("authentication failed") || error.contains("access denied"),
        "{error}"
    );
    assert!(!report.to_string().contains("wrong-secret-value"));
    assert!(!report.to_string().contains(&secret));

    let closed_port = free_port();
    let unreachable = create(
        &app,
        &org,
        &s3_body(
            "unreachable",
            &env("TEST_S3_BUCKET"),
            &secret,
            &format!("http://127.0.0.1:{closed_port}"),
        ),
    )
    .await;
    let report = run_test(&app, &org, &unreachable).await;
    assert_eq!(report["ok"], false);
    let error = check(&report, "connect")["error"].as_str().unwrap();
    assert!(error.contains("cannot be reached"), "{error}");

    let local = create(
        &app,
        &org,
        &json!({ "name": "local", "type": "local", "config": { "path": "archives" } }),
    )
    .await;
    let report = run_test(&app, &org, &local).await;
    assert_eq!(report["ok"], true, "{report}");

    // Roles and tenancy.
    let path = org.path(&format!("/backups/targets/{working}/test"));
    app.post(&path, &org.viewer, &json!({})).await.expect(403);
    app.post(&path, &other.admin, &json!({})).await.expect(404);
    app.post(
        &other.path(&format!("/backups/targets/{working}/test")),
        &other.admin,
        &json!({}),
    )
    .await
    .expect(404);
    let system = app
        .request(
            reqwest::Method::POST,
            "/api/v1/system/backups/targets",
            Some(&app.admin_token),
            Some(&s3_body(
                "shared",
                &env("TEST_S3_BUCKET"),
                &secret,
                &endpoint,
            )),
        )
        .await;
    let system = system.expect(201)["id"].as_str().unwrap().to_owned();
    let reply = app
        .post(
            &format!("/api/v1/system/backups/targets/{system}/test"),
            &app.admin_token,
            &json!({}),
        )
        .await;
    assert_eq!(reply.expect(200)["ok"], true);
    app.post(
        &format!("/api/v1/system/backups/targets/{system}/test"),
        &org.admin,
        &json!({}),
    )
    .await
    .expect(403);
}

async fn ssh_connection_tests_pin_the_host_key(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.org("acme").await;
    let target = create(&app, &org, &ssh_body("ssh", &env("TEST_SSH_KEY"))).await;
    let path = org.path(&format!("/backups/targets/{target}"));
    let before = app.get(&path, &org.viewer).await;
    assert!(before.expect(200)["config"]
        .get("hostKeyFingerprint")
        .is_none());

    let report = run_test(&app, &org, &target).await;
    assert_eq!(report["ok"], true, "{report}");
    // The key it was first tested with is kept, and shown.
    let after = app.get(&path, &org.viewer).await;
    assert_eq!(
        after.expect(200)["config"]["hostKeyFingerprint"],
        env("TEST_SSH_HOST_FINGERPRINT")
    );
    assert!(!after.text.contains("OPENSSH PRIVATE KEY"));

    // An update that keeps host and port keeps the pin; a different pin
    // (the server's key "changed") fails loudly and is not overwritten.
    let mut body = ssh_body("ssh", &env("TEST_SSH_KEY"));
    body["config"]["path"] = after.body["config"]["path"].clone();
    body["config"].as_object_mut().unwrap().remove("privateKey");
    let kept = app.put(&path, &org.admin, &body).await;
    assert_eq!(
        kept.expect(200)["config"]["hostKeyFingerprint"],
        env("TEST_SSH_HOST_FINGERPRINT")
    );
    assert_eq!(kept.body["config"]["privateKeySet"], true);
    let pinned_elsewhere = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    body["config"]["hostKeyFingerprint"] = json!(pinned_elsewhere);
    app.put(&path, &org.admin, &body).await.expect(200);
    let report = run_test(&app, &org, &target).await;
    assert_eq!(report["ok"], false);
    let error = check(&report, "connect")["error"].as_str().unwrap();
    assert!(error.contains("host key changed"), "{error}");
    let still = app.get(&path, &org.viewer).await;
    assert_eq!(
        still.expect(200)["config"]["hostKeyFingerprint"],
        pinned_elsewhere
    );
    body["config"]["hostKeyFingerprint"] = json!("MD5:aa:bb");
    app.put(&path, &org.admin, &body)
        .await
        .expect_field_error(422, "config.hostKeyFingerprint");

    // A key the server does not accept.
    let wrong = create(
        &app,
        &org,
        &ssh_body("wrong key", &env("TEST_SSH_OTHER_KEY")),
    )
    .await;
    let report = run_test(&app, &org, &wrong).await;
    assert_eq!(report["ok"], false);
    let error = check(&report, "connect")["error"].as_str().unwrap();
    assert!(error.contains("refused user"), "{error}");
}

/// Writes an archive to a target as a worker would, and records it.
async fn archive_on(
    app: &TestApp,
    org: &Org,
    target: &str,
    key: &str,
    bytes: &'static [u8],
    status: &str,
) -> Uuid {
    let model = backup_target::Entity::find_by_id(Uuid::parse_str(target).unwrap())
        .one(&app.cairn.db)
        .await
        .unwrap()
        .unwrap();
    let storage = storage::open(&app.cairn, &model, Purpose::Transfer).unwrap();
    storage
        .put(
            &ObjectKey::parse(key).unwrap(),
            storage::single_chunk(Bytes::from_static(bytes)),
        )
        .await
        .unwrap();
    seed(
        app,
        Seed {
            org: &org.id,
            job: None,
            app: None,
            target: Some(target),
            path: Some(key),
            status: cairn_entity::enums::BackupStatus::parse(status).unwrap(),
            created_at: Utc::now(),
        },
    )
    .await
}

async fn archives_download_from_every_kind_of_target(backend: Backend) {
    let app = spawn_app(backend).await;
    let (org, other) = app.two_orgs().await;
    let key = "acme/shop/data/2024-01-15T02-00-00-000Z.tar.zst";
    let content: &'static [u8] = b"an archive, byte for byte";

    // S3: a pre-signed URL, or a redirect to one.
    let s3 = create(
        &app,
        &org,
        &s3_body(
            "s3",
            &env("TEST_S3_BUCKET"),
            &env("TEST_S3_SECRET_KEY"),
            &env("TEST_S3_ENDPOINT"),
        ),
    )
    .await;
    let backup = archive_on(&app, &org, &s3, key, content, "success").await;
    let before = Utc::now();
    let path = org.path(&format!("/backups/history/{backup}/download"));
    let reply = app.get(&path, &org.viewer).await;
    let view = reply.expect(200).clone();
    let url = view["url"].as_str().unwrap();
    assert!(
        url.starts_with(&env("TEST_S3_ENDPOINT")) && url.contains("X-Amz-Signature="),
        "{url}"
    );
    let expires: chrono::DateTime<Utc> = view["expiresAt"].as_str().unwrap().parse().unwrap();
    let validity = expires - before;
    assert!(validity > chrono::Duration::minutes(59) && validity <= chrono::Duration::minutes(61));
    let fetched = reqwest::get(url).await.unwrap();
    assert_eq!(fetched.status(), 200);
    assert_eq!(&fetched.bytes().await.unwrap()[..], content);
    let redirect = app.get(&format!("{path}?redirect=true"), &org.viewer).await;
    assert_eq!(redirect.status, 302);
    let location = redirect.headers["location"].to_str().unwrap();
    assert_eq!(
        &reqwest::get(location).await.unwrap().bytes().await.unwrap()[..],
        content
    );

    // SSH and local: the bytes themselves, streamed with their length.
    let ssh = create(&app, &org, &ssh_body("ssh", &env("TEST_SSH_KEY"))).await;
    let local = create(
        &app,
        &org,
        &json!({ "name": "local", "type": "local", "config": { "path": "archives" } }),
    )
    .await;
    for target in [ssh, local] {
        let backup = archive_on(&app, &org, &target, key, content, "success").await;
        let response = app
            .client
            .get(app.url(&org.path(&format!("/backups/history/{backup}/download"))))
            .bearer_auth(&org.viewer)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let headers = response.headers().clone();
        assert_eq!(
            headers["content-length"],
            content.len().to_string().as_str()
        );
        assert_eq!(headers["content-type"], "application/zstd");
        let disposition = headers["content-disposition"].to_str().unwrap();
        assert!(
            disposition.starts_with("attachment")
                && disposition.contains("2024-01-15T02-00-00-000Z.tar.zst"),
            "{disposition}"
        );
        assert_eq!(&response.bytes().await.unwrap()[..], content);
    }

    // Only successful backups, and only one's own.
    let pending = archive_on(&app, &org, &s3, "acme/pending.tar.zst", content, "pending").await;
    let reply = app
        .get(
            &org.path(&format!("/backups/history/{pending}/download")),
            &org.viewer,
        )
        .await;
    reply.expect(409);
    assert!(
        reply.body["detail"].as_str().unwrap().contains("pending"),
        "{}",
        reply.text
    );
    app.get(
        &org.path(&format!("/backups/history/{backup}/download")),
        &other.admin,
    )
    .await
    .expect(404);
    app.get(
        &other.path(&format!("/backups/history/{backup}/download")),
        &other.admin,
    )
    .await
    .expect(404);
    // An archive that vanished from its target is the target's failure.
    let gone = seed(
        &app,
        Seed {
            org: &org.id,
            job: None,
            app: None,
            target: Some(&s3),
            path: Some("acme/never-written.tar.zst"),
            status: cairn_entity::enums::BackupStatus::Success,
            created_at: Utc::now(),
        },
    )
    .await;
    let local_target = create(
        &app,
        &org,
        &json!({ "name": "local-2", "type": "local", "config": { "path": "other" } }),
    )
    .await;
    let vanished = seed(
        &app,
        Seed {
            org: &org.id,
            job: None,
            app: None,
            target: Some(&local_target),
            path: Some("acme/never-written.tar.zst"),
            status: cairn_entity::enums::BackupStatus::Success,
            created_at: Utc::now(),
        },
    )
    .await;
    app.get(
        &org.path(&format!("/backups/history/{vanished}/download")),
        &org.viewer,
    )
    .await
    .expect(502);
    // (A pre-signed URL is issued without reading the object.)
    app.get(
        &org.path(&format!("/backups/history/{gone}/download")),
        &org.viewer,
    )
    .await
    .expect(200);
}

async fn endpoints_are_checked_against_the_address_policy(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.org("acme").await;
    let path = org.path("/backups/targets");
    let secret = env("TEST_S3_SECRET_KEY");
    for endpoint in [
        "http://169.254.169.254",
        "http://[fd00:ec2::254]",
        "http://[fe80::1]:9000",
    ] {
        app.post(
            &path,
            &org.admin,
            &s3_body("meta", "bucket", &secret, endpoint),
        )
        .await
        .expect_field_error(422, "config.endpoint");
    }
    let mut ssh = ssh_body("meta", &env("TEST_SSH_KEY"));
    ssh["config"]["host"] = json!("169.254.169.254");
    app.post(&path, &org.admin, &ssh)
        .await
        .expect_field_error(422, "config.host");
    // Private endpoints are fine here (the embedded default allows them).
    app.post(
        &path,
        &org.admin,
        &s3_body("private", "bucket", &secret, &env("TEST_S3_ENDPOINT")),
    )
    .await
    .expect(201);

    let app = spawn_app_with(backend, |config| {
        config.allow_private_endpoints = Some(false)
    })
    .await;
    let org = app.org("acme").await;
    let path = org.path("/backups/targets");
    app.post(
        &path,
        &org.admin,
        &s3_body("private", "bucket", &secret, &env("TEST_S3_ENDPOINT")),
    )
    .await
    .expect_field_error(422, "config.endpoint");
    let mut ssh = ssh_body("private", &env("TEST_SSH_KEY"));
    ssh["config"]["host"] = json!("localhost");
    let reply = app.post(&path, &org.admin, &ssh).await;
    reply.expect_field_error(422, "config.host");
    assert!(reply.text.contains("private"), "{}", reply.text);
    app.post(
        &path,
        &org.admin,
        &s3_body("public", "bucket", &secret, "https://s3.example.com"),
    )
    .await
    .expect(201);
}
