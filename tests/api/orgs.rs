use reqwest::Method;
use serde_json::json;

use crate::both_backends;
use crate::helpers::{spawn_app, Backend};

both_backends!(
    organizations_are_created_listed_read_and_deleted,
    invalid_organizations_are_refused_with_the_field,
    malformed_requests_are_problems,
    organization_tokens_see_only_their_own_organization,
    requests_without_a_valid_token_are_unauthorized,
);

async fn organizations_are_created_listed_read_and_deleted(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = &app.admin_token;
    let reply = app
        .post(
            "/api/v1/organizations",
            admin,
            &json!({ "slug": "acme", "name": " Acme Inc. " }),
        )
        .await;
    let created = reply.expect(201).clone();
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["slug"], "acme");
    assert_eq!(created["name"], "Acme Inc.");
    assert_eq!(
        reply.headers["location"].to_str().unwrap(),
        format!("/api/v1/organizations/{id}")
    );
    // UUID v7 ids.
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 7);

    app.create_org("beta").await;
    let list = app.get("/api/v1/organizations", admin).await;
    let slugs: Vec<&str> = list.expect(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["acme", "beta"]);

    let got = app.get(&format!("/api/v1/organizations/{id}"), admin).await;
    assert_eq!(got.expect(200)["slug"], "acme");

    // Deleting is deliberate: the slug is typed again.
    for query in ["", "?confirm=beta"] {
        app.delete(&format!("/api/v1/organizations/{id}{query}"), admin)
            .await
            .expect_field_error(422, "confirm");
    }
    let deleted = app
        .delete(&format!("/api/v1/organizations/{id}?confirm=acme"), admin)
        .await;
    assert!(deleted.expect(200)["deletedAt"].is_string());
    let got = app.get(&format!("/api/v1/organizations/{id}"), admin).await;
    assert!(got.expect(200)["deletedAt"].is_string());
    app.delete(&format!("/api/v1/organizations/{id}?confirm=acme"), admin)
        .await
        .expect(409);
}

async fn invalid_organizations_are_refused_with_the_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = &app.admin_token;
    for slug in ["Acme", "-acme", "", "a_b", &"a".repeat(64)] {
        app.post(
            "/api/v1/organizations",
            admin,
            &json!({ "slug": slug, "name": "x" }),
        )
        .await
        .expect_field_error(422, "slug");
    }
    app.post(
        "/api/v1/organizations",
        admin,
        &json!({ "slug": "ok", "name": "  " }),
    )
    .await
    .expect_field_error(422, "name");
    app.post("/api/v1/organizations", admin, &json!({ "slug": "ok" }))
        .await
        .expect_field_error(422, "name");
    app.post(
        "/api/v1/organizations",
        admin,
        &json!({ "slug": "ok", "name": "x", "colour": "red" }),
    )
    .await
    .expect_field_error(422, "colour");
    app.post(
        "/api/v1/organizations",
        admin,
        &json!({ "slug": 5, "name": "x" }),
    )
    .await
    .expect_field_error(422, "slug");

    app.create_org("taken").await;
    app.post(
        "/api/v1/organizations",
        admin,
        &json!({ "slug": "taken", "name": "again" }),
    )
    .await
    .expect_field_error(409, "slug");
    // Nothing half-written: one organization with that slug.
    let list = app.get("/api/v1/organizations", admin).await;
    assert_eq!(list.expect(200)["items"].as_array().unwrap().len(), 1);
}

async fn malformed_requests_are_problems(backend: Backend) {
    let app = spawn_app(backend).await;
    let url = app.url("/api/v1/organizations");
    let send = |body: Vec<u8>, content_type: &'static str| {
        app.client
            .post(&url)
            .bearer_auth(&app.admin_token)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let reply = crate::helpers::Reply::from(
        send(b"{\"slug\": ".to_vec(), "application/json")
            .await
            .unwrap(),
    )
    .await;
    reply.expect(400);
    let reply = crate::helpers::Reply::from(
        send(b"slug=acme".to_vec(), "application/x-www-form-urlencoded")
            .await
            .unwrap(),
    )
    .await;
    reply.expect(415);
    let reply = crate::helpers::Reply::from(
        send(b"{\"slug\":\"acme\",\"name\":\"x\"}".to_vec(), "text/plain")
            .await
            .unwrap(),
    )
    .await;
    reply.expect(415);
    let huge = format!(
        "{{\"slug\":\"acme\",\"name\":\"{}\"}}",
        "x".repeat(400 * 1024)
    );
    let reply =
        crate::helpers::Reply::from(send(huge.into_bytes(), "application/json").await.unwrap())
            .await;
    reply.expect(413);
    // A JSON number where an object is expected names the body.
    let reply =
        crate::helpers::Reply::from(send(b"42".to_vec(), "application/json").await.unwrap()).await;
    reply.expect_field_error(422, "body");
    // Nothing was created by any of them.
    let list = app.get("/api/v1/organizations", &app.admin_token).await;
    assert!(list.expect(200)["items"].as_array().unwrap().is_empty());

    // Unknown routes, malformed path ids and methods a route lacks.
    app.get("/api/v1/nothing-here", &app.admin_token)
        .await
        .expect(404);
    app.get("/api/v1/organizations/not-a-uuid", &app.admin_token)
        .await
        .expect_field_error(404, "orgId");
    let reply = app
        .request(
            Method::PATCH,
            "/api/v1/organizations",
            Some(&app.admin_token),
            None,
        )
        .await;
    reply.expect(405);
    assert!(
        reply.body["detail"].as_str().unwrap().contains("PATCH"),
        "{}",
        reply.text
    );
}

async fn organization_tokens_see_only_their_own_organization(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alpha, beta) = app.two_orgs().await;
    let list = app.get("/api/v1/organizations", &alpha.viewer).await;
    let items = list.expect(200)["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], alpha.id.as_str());

    app.get(&alpha.path(""), &alpha.viewer).await.expect(200);
    // Another organization's id answers exactly as a missing one.
    let other = app.get(&beta.path(""), &alpha.admin).await;
    other.expect(404);
    let missing = app
        .get(
            &format!("/api/v1/organizations/{}", uuid::Uuid::now_v7()),
            &alpha.admin,
        )
        .await;
    missing.expect(404);
    assert_eq!(other.body["detail"], missing.body["detail"]);

    // Only system administrators create and delete organizations.
    app.post(
        "/api/v1/organizations",
        &alpha.admin,
        &json!({ "slug": "gamma", "name": "g" }),
    )
    .await
    .expect(403);
    app.delete(&alpha.path(""), &alpha.admin).await.expect(403);
    app.delete(&beta.path(""), &alpha.admin).await.expect(404);
    app.get(&beta.path(""), &app.admin_token).await.expect(200);
}

async fn requests_without_a_valid_token_are_unauthorized(backend: Backend) {
    let app = spawn_app(backend).await;
    let reply = app
        .request(Method::GET, "/api/v1/organizations", None, None)
        .await;
    reply.expect(401);
    assert_eq!(reply.headers["www-authenticate"], "Bearer");
    app.get("/api/v1/organizations", "cairn_not-a-real-token")
        .await
        .expect(401);
    let reply = app
        .client
        .get(app.url("/api/v1/organizations"))
        .basic_auth("admin", Some("password"))
        .send()
        .await
        .unwrap();
    crate::helpers::Reply::from(reply).await.expect(401);
}
