use reqwest::Method;
use serde_json::Value;

use crate::both_backends;
use crate::helpers::{spawn_app, Backend};

both_backends!(health_readiness_metrics_and_request_ids);

async fn health_readiness_metrics_and_request_ids(backend: Backend) {
    let app = spawn_app(backend).await;
    let reply = app.request(Method::GET, "/healthz", None, None).await;
    assert_eq!(reply.expect(200)["status"], "ok");
    let reply = app.request(Method::GET, "/readyz", None, None).await;
    assert_eq!(reply.expect(200)["status"], "ready");
    assert!(reply.headers.contains_key("x-request-id"));

    app.create_org("acme").await;
    app.get("/api/v1/organizations/not-an-id", &app.admin_token)
        .await
        .expect(404);
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"cairn_http_requests_total{endpoint="/api/v1/organizations",method="POST",status="201"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"endpoint="/api/v1/organizations/{orgId}",method="GET",status="404""#),
        "{metrics}"
    );
    assert!(
        metrics.contains("cairn_http_requests_duration_seconds_bucket"),
        "{metrics}"
    );

    // Once the database is gone, the process is alive but not ready.
    app.cairn.db.clone().close().await.unwrap();
    let reply = app.request(Method::GET, "/readyz", None, None).await;
    reply.expect(503);
    app.request(Method::GET, "/healthz", None, None)
        .await
        .expect(200);
}

#[tokio::test]
async fn openapi_document_is_served_complete_with_swagger_ui() {
    let app = spawn_app(Backend::Sqlite).await;
    let reply = app
        .request(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    let served = reply.expect(200).clone();
    let generated: Value =
        serde_json::from_str(&cairn_api::openapi::document().to_json().unwrap()).unwrap();
    assert_eq!(served, generated);

    // The checked-in document is the generated one.
    let stored: Value = serde_json::from_str(include_str!("../../openapi/openapi.json")).unwrap();
    assert_eq!(
        stored, generated,
        "run `cargo run -p cairn-openapi` and commit openapi/openapi.json"
    );

    let mut operations = 0;
    for (path, item) in served["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            operations += 1;
            let summary = operation["summary"].as_str().unwrap_or_default();
            assert!(!summary.is_empty(), "{method} {path} has no summary");
            let responses = operation["responses"].as_object().unwrap();
            assert!(responses.contains_key("500"), "{method} {path}");
            if path.starts_with("/api/v1/") {
                assert_eq!(
                    operation["security"][0]["bearer"],
                    serde_json::json!([]),
                    "{method} {path}"
                );
                for status in ["401", "403"] {
                    assert!(
                        responses.contains_key(status),
                        "{method} {path} lacks {status}"
                    );
                }
                if path.contains('{') {
                    assert!(responses.contains_key("404"), "{method} {path} lacks 404");
                }
                if operation.get("requestBody").is_some() {
                    for status in ["400", "413", "415", "422"] {
                        assert!(
                            responses.contains_key(status),
                            "{method} {path} lacks {status}"
                        );
                    }
                }
            }
        }
    }
    // The routes wired are exactly the operations published.
    let mut published: Vec<(String, String)> = served["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.clone(), path.clone()))
        })
        .collect();
    published.sort();
    let mut wired: Vec<(String, String)> = cairn_api::routes::wired()
        .into_iter()
        .map(|(method, path)| (method.to_owned(), path.to_owned()))
        .collect();
    wired.sort();
    let total = wired.len();
    wired.dedup();
    assert_eq!(wired.len(), total, "a route is wired twice");
    assert_eq!(
        wired, published,
        "wired routes and published operations differ"
    );
    assert_eq!(operations, published.len());
    assert!(served["components"]["securitySchemes"]["bearer"].is_object());

    // The failure codes are published as one enum, the one records,
    // views and notifications use.
    let codes = &served["components"]["schemas"]["FailureCode"];
    let published: Vec<&str> = codes["enum"]
        .as_array()
        .expect("FailureCode is an enum")
        .iter()
        .map(|code| code.as_str().unwrap())
        .collect();
    let table: Vec<&str> = cairn_core::failure::FailureCode::ALL
        .iter()
        .map(|code| code.as_str())
        .collect();
    assert_eq!(published, table);
    assert!(codes["description"]
        .as_str()
        .unwrap()
        .contains("| `worker_lost` | any | yes |"));
    for (schema, field) in [
        ("BackupView", "errorCode"),
        ("RestoreView", "errorCode"),
        ("VerificationView", "errorCode"),
        ("ErrorRef", "code"),
    ] {
        let property = served["components"]["schemas"][schema]["properties"][field].to_string();
        assert!(
            property.contains("#/components/schemas/FailureCode"),
            "{schema}.{field}: {property}"
        );
    }

    let redirect = app.client.get(app.url("/docs")).send().await.unwrap();
    assert!(redirect.status().is_redirection());
    assert_eq!(redirect.headers()["location"], "/docs/");
    let page = app.client.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    let initializer = app
        .client
        .get(app.url("/docs/swagger-initializer.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        initializer.contains("/api/v1/openapi.json"),
        "{initializer}"
    );
}

/// PostgreSQL connections the server dropped while they sat idle in the
/// pool (a restart, a proxy's or firewall's timeout) are tested before
/// use and replaced: no request fails on them.
#[tokio::test]
async fn postgres_connections_dropped_while_idle_are_replaced() {
    use sea_orm::{ConnectionTrait, Statement};
    let app = spawn_app(Backend::Postgres).await;
    let org = app.org("idle").await;
    let jobs = org.path("/backups/jobs");
    // Several at once, so that the pool holds several connections.
    let lists: Vec<_> = (0..6).map(|_| app.get(&jobs, &org.viewer)).collect();
    for reply in futures::future::join_all(lists).await {
        reply.expect(200);
    }
    let admin = sea_orm::Database::connect(crate::helpers::database_url_of(&app))
        .await
        .unwrap();
    let ended = admin
        .query_one(Statement::from_string(
            admin.get_database_backend(),
            "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap();
    admin.close().await.ok();
    assert!(ended >= 2, "{ended} of the app's connections ended");
    tokio::time::sleep(
        cairn_core::db::POSTGRES_IDLE_TEST_AFTER + std::time::Duration::from_millis(500),
    )
    .await;
    let lists: Vec<_> = (0..6).map(|_| app.get(&jobs, &org.viewer)).collect();
    for reply in futures::future::join_all(lists).await {
        reply.expect(200);
    }
}
