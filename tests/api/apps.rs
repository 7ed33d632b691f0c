use cairn_entity::volume;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{spawn_app, Backend};

both_backends!(
    apps_and_volumes_round_trip_without_revealing_passwords,
    invalid_apps_are_refused_with_the_field,
    apps_of_other_organizations_are_not_found,
);

const PASSWORD: &str = "pg-Secret-Pa55word!";

fn app_body(name: &str) -> Value {
    json!({
        "name": name,
        "volumes": [
            { "name": "data" },
            { "name": "cache", "persistent": false },
            { "name": "db", "kind": "postgres", "postgres": {
                "host": "127.0.0.1", "database": "shop", "username": "shop", "password": PASSWORD
            }}
        ]
    })
}

async fn apps_and_volumes_round_trip_without_revealing_passwords(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.org("acme").await;
    let reply = app
        .post(&org.path("/apps"), &org.admin, &app_body("shop"))
        .await;
    let created = reply.expect(201).clone();
    assert!(!reply.text.contains(PASSWORD));
    let id = created["id"].as_str().unwrap().to_owned();
    let volumes = created["volumes"].as_array().unwrap();
    let names: Vec<&str> = volumes
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cache", "data", "db"]);
    assert_eq!(volumes[0]["persistent"], false);
    assert_eq!(volumes[1]["persistent"], true);
    assert_eq!(volumes[1]["kind"], "generic");
    assert_eq!(volumes[2]["postgres"]["port"], 5432);
    assert_eq!(volumes[2]["postgres"]["passwordSet"], true);

    let rows = volume::Entity::find()
        .filter(volume::Column::Name.eq("db"))
        .all(&app.cairn.db)
        .await
        .unwrap();
    assert!(!format!("{rows:?}").contains(PASSWORD));
    let sealed = rows[0].connection_password_ciphertext.as_ref().unwrap();
    assert_eq!(
        app.cairn.master_key.open(rows[0].id, sealed).unwrap(),
        PASSWORD.as_bytes()
    );

    // Pointing the volume at another server requires its password: the
    // stored one is never sent anywhere else.
    let elsewhere = json!({
        "name": "shop",
        "volumes": [
            { "name": "data" },
            { "name": "uploads" },
            { "name": "db", "kind": "postgres", "postgres": {
                "host": "db.internal", "database": "shop", "username": "shop"
            }}
        ]
    });
    app.put(&org.path(&format!("/apps/{id}")), &org.admin, &elsewhere)
        .await
        .expect_field_error(422, "volumes[2].postgres.password");

    // Update: drop `cache`, add `uploads`, keep the password by omitting it.
    let update = json!({
        "name": "shop",
        "volumes": [
            { "name": "data" },
            { "name": "uploads" },
            { "name": "db", "kind": "postgres", "postgres": {
                "host": "127.0.0.1", "port": 5432, "database": "shop", "username": "shop"
            }}
        ]
    });
    let reply = app
        .put(&org.path(&format!("/apps/{id}")), &org.admin, &update)
        .await;
    let names: Vec<String> = reply.expect(200)["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["data", "db", "uploads"]);
    assert_eq!(reply.body["volumes"][1]["postgres"]["host"], "127.0.0.1");
    assert_eq!(reply.body["volumes"][1]["postgres"]["passwordSet"], true);
    let row = volume::Entity::find_by_id(rows[0].id)
        .one(&app.cairn.db)
        .await
        .unwrap()
        .unwrap();
    let sealed = row.connection_password_ciphertext.as_ref().unwrap();
    assert_eq!(
        app.cairn.master_key.open(row.id, sealed).unwrap(),
        PASSWORD.as_bytes()
    );

    let list = app.get(&org.path("/apps"), &org.viewer).await;
    assert_eq!(
        list.expect(200)["items"][0]["volumes"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    app.post(&org.path("/apps"), &org.viewer, &app_body("x"))
        .await
        .expect(403);
    app.post(&org.path("/apps"), &org.admin, &app_body("shop"))
        .await
        .expect_field_error(409, "name");

    app.delete(&org.path(&format!("/apps/{id}")), &org.admin)
        .await
        .expect(204);
    app.get(&org.path(&format!("/apps/{id}")), &org.admin)
        .await
        .expect(404);
    let left = volume::Entity::find().all(&app.cairn.db).await.unwrap();
    assert!(left.is_empty(), "volumes go with their app");
}

async fn invalid_apps_are_refused_with_the_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.org("acme").await;
    let path = org.path("/apps");
    let cases = [
        (json!({ "name": "bad name" }), "name"),
        (json!({ "name": "-x" }), "name"),
        (
            json!({ "name": "ok", "volumes": [{ "name": "a" }, { "name": "a" }] }),
            "volumes[1].name",
        ),
        (
            json!({ "name": "ok", "volumes": [{ "name": "a/b" }] }),
            "volumes[0].name",
        ),
        (
            json!({ "name": "ok", "volumes": [{ "name": "db", "kind": "postgres" }] }),
            "volumes[0].postgres",
        ),
        (
            json!({ "name": "ok", "volumes": [{ "name": "v", "kind": "mongodb" }] }),
            "volumes[0].kind",
        ),
        (
            json!({ "name": "ok", "volumes": [{ "name": "v", "kind": "mysql" }] }),
            "volumes[0].mysql",
        ),
        (
            json!({ "name": "ok", "volumes": [{ "name": "v", "postgres": { "host": "h", "database": "d", "username": "u", "password": "p" } }] }),
            "volumes[0].postgres",
        ),
        (
            json!({ "name": "ok", "volumes": [{ "name": "db", "kind": "postgres", "postgres": { "host": "h", "database": "-d", "username": "u", "password": "p" } }] }),
            "volumes[0].postgres.database",
        ),
        (
            json!({ "name": "ok", "volumes": [{ "name": "db", "kind": "postgres", "postgres": { "host": "h", "database": "d", "username": "u" } }] }),
            "volumes[0].postgres.password",
        ),
    ];
    for (body, field) in cases {
        app.post(&path, &org.admin, &body)
            .await
            .expect_field_error(422, field);
    }
    let list = app.get(&path, &org.admin).await;
    assert!(list.expect(200)["items"].as_array().unwrap().is_empty());
}

async fn apps_of_other_organizations_are_not_found(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alpha, beta) = app.two_orgs().await;
    let reply = app
        .post(&beta.path("/apps"), &beta.admin, &app_body("shop"))
        .await;
    let id = reply.expect(201)["id"].as_str().unwrap().to_owned();
    app.get(&beta.path("/apps"), &alpha.admin).await.expect(404);
    app.post(&beta.path("/apps"), &alpha.admin, &app_body("x"))
        .await
        .expect(404);
    for path in [
        beta.path(&format!("/apps/{id}")),
        alpha.path(&format!("/apps/{id}")),
    ] {
        app.get(&path, &alpha.admin).await.expect(404);
        app.put(&path, &alpha.admin, &app_body("x"))
            .await
            .expect(404);
        app.delete(&path, &alpha.admin).await.expect(404);
    }
    app.get(&alpha.path("/apps/123"), &alpha.admin)
        .await
        .expect_field_error(404, "appId");
    app.get(&beta.path(&format!("/apps/{id}")), &beta.viewer)
        .await
        .expect(200);
    // The same app name is free in another organization (its file volumes'
    // directories are not, under the default template: see `tenancy`).
    app.post(
        &alpha.path("/apps"),
        &alpha.admin,
        &json!({ "name": "shop", "volumes": [{ "name": "alpha-data" }] }),
    )
    .await
    .expect(201);
}
