use cairn_entity::api_token;
use sea_orm::EntityTrait;
use serde_json::json;

use crate::both_backends;
use crate::helpers::{spawn_app, Backend};

both_backends!(
    tokens_are_shown_once_stored_hashed_and_revocable,
    roles_limit_what_a_token_may_do,
    tokens_of_other_organizations_are_not_found,
);

async fn tokens_are_shown_once_stored_hashed_and_revocable(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.create_org("acme").await;
    let path = format!("/api/v1/organizations/{org}/tokens");
    let reply = app
        .post(
            &path,
            &app.admin_token,
            &json!({ "name": "ci", "role": "operator" }),
        )
        .await;
    let created = reply.expect(201).clone();
    let token = created["token"].as_str().unwrap().to_owned();
    assert!(
        token.starts_with("cairn_") && token.len() >= 6 + 43,
        "{token}"
    );
    assert_eq!(created["role"], "operator");
    assert_eq!(created["organizationId"], org.as_str());

    // The token works, and nothing stores or lists it in the clear.
    app.get(&format!("/api/v1/organizations/{org}"), &token)
        .await
        .expect(200);
    let rows = api_token::Entity::find().all(&app.cairn.db).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert!(!format!("{rows:?}").contains(&token));
    assert_eq!(rows[0].token_hash, cairn_core::auth::hash_token(&token));
    let list = app.get(&path, &app.admin_token).await;
    assert!(!list.text.contains(&token));
    assert_eq!(list.expect(200)["items"][0]["name"], "ci");
    assert!(list.body["items"][0]["lastUsedAt"].is_string());

    let id = created["id"].as_str().unwrap();
    app.delete(&format!("{path}/{id}"), &app.admin_token)
        .await
        .expect(204);
    app.get(&format!("/api/v1/organizations/{org}"), &token)
        .await
        .expect(401);
    app.delete(&format!("{path}/{id}"), &app.admin_token)
        .await
        .expect(404);
}

async fn roles_limit_what_a_token_may_do(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.org("acme").await;
    let path = org.path("/tokens");
    let body = json!({ "name": "x", "role": "viewer" });
    let refused = app.post(&path, &org.viewer, &body).await;
    // The refusal names the route (not its ids) and the role it needs.
    assert_eq!(
        refused.expect(403)["detail"],
        "this token's role does not allow POST /api/v1/organizations/{orgId}/tokens \
         (it needs the admin role; this token is viewer)"
    );
    app.post(&path, &org.operator, &body).await.expect(403);
    app.get(&path, &org.operator).await.expect(403);
    app.post(&path, &org.admin, &body).await.expect(201);
    app.post(&path, &org.admin, &json!({ "name": "x", "role": "owner" }))
        .await
        .expect_field_error(422, "role");
    app.post(&path, &org.admin, &json!({ "name": "", "role": "viewer" }))
        .await
        .expect_field_error(422, "name");
}

async fn tokens_of_other_organizations_are_not_found(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alpha, beta) = app.two_orgs().await;
    let list = app.get(&beta.path("/tokens"), &app.admin_token).await;
    let beta_token_id = list.expect(200)["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.get(&beta.path("/tokens"), &alpha.admin)
        .await
        .expect(404);
    app.post(
        &beta.path("/tokens"),
        &alpha.admin,
        &json!({ "name": "x", "role": "admin" }),
    )
    .await
    .expect(404);
    app.delete(
        &beta.path(&format!("/tokens/{beta_token_id}")),
        &alpha.admin,
    )
    .await
    .expect(404);
    // Through alpha's own path, beta's token id is not found either.
    app.delete(
        &alpha.path(&format!("/tokens/{beta_token_id}")),
        &alpha.admin,
    )
    .await
    .expect(404);
    app.get(&beta.path(""), &beta.viewer).await.expect(200);
}
