//! Every route that takes a body refuses malformed JSON, a wrong content
//! type, an oversized body and unknown fields with a problem document, and
//! writes nothing.

use reqwest::Method;
use serde_json::json;

use crate::both_backends;
use crate::helpers::{job, s3_target, spawn_app, Backend, Reply};

both_backends!(every_body_route_refuses_bad_bodies);

async fn every_body_route_refuses_bad_bodies(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.org("acme").await;
    let created = |reply: Reply| reply.expect(201)["id"].as_str().unwrap().to_owned();
    let target = created(
        app.post(
            &org.path("/backups/targets"),
            &org.admin,
            &s3_target("t", "s"),
        )
        .await,
    );
    let system_target = created(
        app.post(
            "/api/v1/system/backups/targets",
            &app.admin_token,
            &s3_target("sys", "s"),
        )
        .await,
    );
    let shop = created(
        app.post(&org.path("/apps"), &org.admin, &json!({ "name": "shop" }))
            .await,
    );
    let nightly = created(
        app.post(&org.path("/backups/jobs"), &org.admin, &job("nightly", &[]))
            .await,
    );

    let routes = [
        (Method::POST, "/api/v1/organizations".to_owned()),
        (Method::POST, org.path("/tokens")),
        (Method::POST, org.path("/backups/targets")),
        (Method::PUT, org.path(&format!("/backups/targets/{target}"))),
        (Method::POST, "/api/v1/system/backups/targets".to_owned()),
        (
            Method::PUT,
            format!("/api/v1/system/backups/targets/{system_target}"),
        ),
        (Method::POST, org.path("/apps")),
        (Method::PUT, org.path(&format!("/apps/{shop}"))),
        (Method::POST, org.path("/backups/jobs")),
        (Method::PUT, org.path(&format!("/backups/jobs/{nightly}"))),
    ];
    let huge = format!("{{\"name\":\"{}\"}}", "x".repeat(300 * 1024));
    let cases: [(&str, Vec<u8>, u16); 5] = [
        ("application/json", b"{\"name\": ".to_vec(), 400),
        ("application/json", b"{\"name\": \"x\"} {}".to_vec(), 400),
        ("text/plain", b"{\"name\": \"x\"}".to_vec(), 415),
        ("application/json", huge.into_bytes(), 413),
        ("application/json", b"{\"nmae\": \"x\"}".to_vec(), 422),
    ];
    for (method, path) in &routes {
        for (content_type, body, status) in &cases {
            let response = app
                .client
                .request(method.clone(), app.url(path))
                .bearer_auth(&app.admin_token)
                .header("content-type", *content_type)
                .body(body.clone())
                .send()
                .await
                .unwrap();
            let reply = Reply::from(response).await;
            assert_eq!(
                reply.status.as_u16(),
                *status,
                "{method} {path} with {content_type}: {}",
                reply.text
            );
            reply.assert_problem();
        }
    }

    // The caller is checked before the body: no token answers 401, another
    // organization's path 404, whatever the body.
    let other = app.org("other").await;
    for (method, path) in routes.iter().skip(1) {
        for token in [None, Some(other.admin.as_str())] {
            let mut request = app
                .client
                .request(method.clone(), app.url(path))
                .header("content-type", "text/plain")
                .body("{not json");
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let reply = Reply::from(request.send().await.unwrap()).await;
            let expected = match (token, path.starts_with("/api/v1/system")) {
                (None, _) => 401,
                (Some(_), true) => 403,
                (Some(_), false) => 404,
            };
            assert_eq!(
                reply.status.as_u16(),
                expected,
                "{method} {path}: {}",
                reply.text
            );
            reply.assert_problem();
        }
    }

    // Nothing changed: the same resources, with their original names.
    let list = |path: String| {
        let app = &app;
        async move { app.get(&path, &app.admin_token).await.expect(200)["items"].clone() }
    };
    assert_eq!(
        list("/api/v1/organizations".into())
            .await
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let targets = list(org.path("/backups/targets")).await;
    assert_eq!(targets.as_array().unwrap().len(), 1);
    assert_eq!(targets[0]["name"], "t");
    assert_eq!(list(org.path("/apps")).await[0]["name"], "shop");
    assert_eq!(list(org.path("/backups/jobs")).await[0]["name"], "nightly");
    let system = list("/api/v1/system/backups/targets".into()).await;
    assert_eq!(system[0]["name"], "System default");
    assert_eq!(system[1]["name"], "sys");
    assert_eq!(list(org.path("/tokens")).await.as_array().unwrap().len(), 3);
}
