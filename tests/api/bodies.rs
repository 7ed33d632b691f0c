//! Every operation that takes a body, as the served OpenAPI document lists
//! them (a new route is covered without editing this file), refuses
//! malformed JSON, a wrong content type, an oversized body and unknown
//! fields with a problem document, checks the caller before the body, and
//! writes nothing.

use reqwest::Method;
use serde_json::Value;

use crate::both_backends;
use crate::helpers::{fixture, s3_target, snapshot, tenant, Backend, Reply};

both_backends!(every_body_route_refuses_bad_bodies);

async fn every_body_route_refuses_bad_bodies(backend: Backend) {
    let f = fixture(backend, "acme").await;
    let app = &f.app;
    let acme = tenant(&f, f.org.clone(), "shop").await;
    let system_target = app
        .post(
            "/api/v1/system/backups/targets",
            &app.admin_token,
            &s3_target("sys", "s"),
        )
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let document = app
        .request(Method::GET, "/api/v1/openapi.json", None, None)
        .await
        .expect(200)
        .clone();
    let list = |path: String| async move {
        app.get(&path, &app.admin_token).await.expect(200)["items"].to_string()
    };
    let before = (
        snapshot(&f, &acme.org).await,
        list("/api/v1/organizations".into()).await,
        list("/api/v1/system/backups/targets".into()).await,
    );

    // Every operation with a request body, its path filled with real ids.
    let mut routes = Vec::new();
    for (path, operations) in document["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            if !operation["requestBody"].is_object() {
                continue;
            }
            let mut filled = path.clone();
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                if parameter["in"] != "path" {
                    continue;
                }
                let name = parameter["name"].as_str().unwrap();
                let value = if path.starts_with("/api/v1/system/") {
                    system_target.clone()
                } else {
                    acme.ids
                        .get(name)
                        .unwrap_or_else(|| panic!("{method} {path}: no fixture for {{{name}}}"))
                        .clone()
                };
                filled = filled.replace(&format!("{{{name}}}"), &value);
            }
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            routes.push((method, path.clone(), filled));
        }
    }
    // At least the ten of the hand-written list this test replaced.
    assert!(
        routes.len() >= 10,
        "{} operations take a body",
        routes.len()
    );

    let huge = format!("{{\"name\":\"{}\"}}", "x".repeat(300 * 1024));
    let cases: [(&str, Vec<u8>, u16); 5] = [
        ("application/json", b"{\"name\": ".to_vec(), 400),
        ("application/json", b"{\"name\": \"x\"} {}".to_vec(), 400),
        ("text/plain", b"{\"name\": \"x\"}".to_vec(), 415),
        ("application/json", huge.into_bytes(), 413),
        ("application/json", b"{\"nmae\": \"x\"}".to_vec(), 422),
    ];
    for (method, pattern, path) in &routes {
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
                "{method} {pattern} with {content_type}: {}",
                reply.text
            );
            reply.assert_problem();
        }
    }

    // The caller is checked before the body: no token answers 401, another
    // organization's admin 404 (403 on system routes), whatever the body.
    let other = app.org("other").await;
    for (method, pattern, path) in &routes {
        if pattern == "/api/v1/organizations" {
            continue;
        }
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
            let expected = match (token, pattern.starts_with("/api/v1/system")) {
                (None, _) => 401,
                (Some(_), true) => 403,
                (Some(_), false) => 404,
            };
            assert_eq!(
                reply.status.as_u16(),
                expected,
                "{method} {pattern}: {}",
                reply.text
            );
            reply.assert_problem();
        }
    }

    // Nothing changed.
    let after = (
        snapshot(&f, &acme.org).await,
        list("/api/v1/organizations".into()).await,
        list("/api/v1/system/backups/targets".into()).await,
    );
    assert_eq!(before.0, after.0);
    // `other` was created since; nothing else.
    let organizations: Vec<Value> = serde_json::from_str(&after.1).unwrap();
    assert_eq!(
        organizations.len(),
        serde_json::from_str::<Vec<Value>>(&before.1).unwrap().len() + 1
    );
    assert_eq!(before.2, after.2);
}
