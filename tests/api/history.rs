//! History is written by workers; until they exist, the tests write the
//! records the way a worker will (through the entities) and read them back
//! through the API.

use cairn_entity::backup;
use chrono::{TimeZone, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::both_backends;
use crate::helpers::{job, seed, spawn_app, Backend, Seed};
use crate::pages::walk;

both_backends!(
    history_pages_filters_and_details,
    invalid_history_queries_are_refused_with_the_field,
    history_of_other_organizations_is_not_found,
);

fn ids(page: &Value) -> Vec<String> {
    ids_of(page["items"].as_array().unwrap())
}

fn ids_of<'a>(items: impl IntoIterator<Item = &'a Value>) -> Vec<String> {
    items
        .into_iter()
        .map(|b| b["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn history_pages_filters_and_details(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.org("acme").await;
    let job_reply = app
        .post(&org.path("/backups/jobs"), &org.admin, &job("nightly", &[]))
        .await;
    let job_id = job_reply.expect(201)["id"].as_str().unwrap().to_owned();
    let shop = app
        .post(&org.path("/apps"), &org.admin, &json!({ "name": "shop" }))
        .await;
    let shop = shop.expect(201)["id"].as_str().unwrap().to_owned();

    let day = |d: u32| Utc.with_ymd_and_hms(2024, 1, d, 2, 0, 0).unwrap();
    let statuses = ["success", "failed", "success", "pending", "success"];
    let mut seeded = Vec::new();
    for (i, status) in statuses.iter().enumerate() {
        let job = (i % 2 == 0).then_some(job_id.as_str());
        let app_id = (i < 3).then_some(shop.as_str());
        seeded.push(
            seed(
                &app,
                Seed {
                    org: &org.id,
                    job,
                    app: app_id,
                    target: None,
                    path: None,
                    status: cairn_entity::enums::BackupStatus::parse(status).unwrap(),
                    created_at: day(10 + i as u32),
                },
            )
            .await,
        );
    }
    let newest_first: Vec<String> = seeded.iter().rev().map(Uuid::to_string).collect();

    // Every record exactly once, newest first, across pages of two.
    let history = org.path("/backups/history");
    assert_eq!(
        ids_of(&walk(&app, &history, &org.viewer, 2).await),
        newest_first
    );

    let query = |q: &str| org.path(&format!("/backups/history?{q}"));
    let page = app.get(&query("status=success"), &org.viewer).await;
    assert_eq!(
        ids(page.expect(200)),
        [
            newest_first[0].clone(),
            newest_first[2].clone(),
            newest_first[4].clone()
        ]
    );
    let page = app
        .get(&query(&format!("jobId={job_id}")), &org.viewer)
        .await;
    assert_eq!(
        ids(page.expect(200)),
        [
            newest_first[0].clone(),
            newest_first[2].clone(),
            newest_first[4].clone()
        ]
    );
    let page = app
        .get(&query(&format!("appId={shop}&status=failed")), &org.viewer)
        .await;
    assert_eq!(ids(page.expect(200)), [newest_first[3].clone()]);
    let page = app
        .get(
            &query("from=2024-01-11T00:00:00Z&to=2024-01-13T00:00:00Z"),
            &org.viewer,
        )
        .await;
    assert_eq!(
        ids(page.expect(200)),
        [newest_first[2].clone(), newest_first[3].clone()]
    );
    // A date range's pages (its page's ids are picked in a subquery, apart
    // from its rows): every record of the range once, newest first, two
    // at a time, linked by the cursor.
    let range = query("from=2024-01-10T00:00:00Z&to=2024-01-15T00:00:00Z");
    assert_eq!(
        ids_of(&walk(&app, &range, &org.viewer, 2).await),
        newest_first
    );
    // With another filter too.
    let page = app
        .get(
            &query("from=2024-01-11T00:00:00Z&to=2024-01-13T00:00:00Z&status=failed"),
            &org.viewer,
        )
        .await;
    assert_eq!(ids(page.expect(200)), [newest_first[3].clone()]);
    let page = app.get(&query("status=pruned"), &org.viewer).await;
    assert!(ids(page.expect(200)).is_empty());
    assert!(page.body["nextCursor"].is_null());

    // One record with its log.
    let detail = app
        .get(
            &org.path(&format!("/backups/history/{}", seeded[1])),
            &org.viewer,
        )
        .await;
    let detail = detail.expect(200);
    assert_eq!(detail["status"], "failed");
    assert_eq!(detail["errorCode"], "volume_not_found");
    assert_eq!(detail["appName"], "shop");
    assert_eq!(detail["volumeName"], "data");
    assert_eq!(detail["log"].as_array().unwrap().len(), 2);
    assert_eq!(detail["log"][1]["message"], "uploaded 1024 bytes");
    assert_eq!(detail["log"][0]["at"], "2024-01-11T02:00:00Z");

    // Deleting the job keeps its history.
    app.delete(&org.path(&format!("/backups/jobs/{job_id}")), &org.admin)
        .await
        .expect(204);
    let page = app.get(&org.path("/backups/history"), &org.viewer).await;
    assert_eq!(ids(page.expect(200)).len(), 5);
    assert!(page.body["items"][0]["jobId"].is_null());
}

async fn invalid_history_queries_are_refused_with_the_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.org("acme").await;
    let cases = [
        ("status=done", "status"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=ten", "limit"),
        ("cursor=abc", "cursor"),
        ("jobId=abc", "jobId"),
        ("appId=1", "appId"),
        ("from=yesterday", "from"),
        ("from=2024-01-02T00:00:00Z&to=2024-01-01T00:00:00Z", "to"),
        ("sort=asc", "sort"),
    ];
    for (query, field) in cases {
        app.get(&org.path(&format!("/backups/history?{query}")), &org.viewer)
            .await
            .expect_field_error(422, field);
    }
}

async fn history_of_other_organizations_is_not_found(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alpha, beta) = app.two_orgs().await;
    let id = seed(
        &app,
        Seed {
            org: &beta.id,
            job: None,
            app: None,
            target: None,
            path: None,
            status: cairn_entity::enums::BackupStatus::Success,
            created_at: Utc::now(),
        },
    )
    .await;
    app.get(&beta.path("/backups/history"), &alpha.admin)
        .await
        .expect(404);
    app.get(&beta.path(&format!("/backups/history/{id}")), &alpha.admin)
        .await
        .expect(404);
    app.get(&alpha.path(&format!("/backups/history/{id}")), &alpha.admin)
        .await
        .expect(404);
    let own = app.get(&alpha.path("/backups/history"), &alpha.admin).await;
    assert!(ids(own.expect(200)).is_empty());
    app.get(&alpha.path("/backups/history/zzz"), &alpha.admin)
        .await
        .expect_field_error(404, "backupId");
    app.get(&beta.path(&format!("/backups/history/{id}")), &beta.viewer)
        .await
        .expect(200);
}

both_backends!(deleting_an_organization_removes_its_records_only);

async fn deleting_an_organization_removes_its_records_only(backend: Backend) {
    use cairn_entity::{backup_job, backup_target};
    use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
    let app = spawn_app(backend).await;
    let (alpha, beta) = app.two_orgs().await;
    for org in [&alpha, &beta] {
        let target = app
            .post(
                &org.path("/backups/targets"),
                &org.admin,
                &crate::helpers::s3_target("t", "s"),
            )
            .await;
        let target = target.expect(201)["id"].as_str().unwrap().to_owned();
        let mut body = job("nightly", &[]);
        body["targetId"] = json!(target);
        app.post(&org.path("/backups/jobs"), &org.admin, &body)
            .await
            .expect(201);
        // A record pointing at the target, as a worker's would.
        seed(
            &app,
            Seed {
                org: &org.id,
                job: None,
                app: None,
                target: Some(&target),
                path: None,
                status: cairn_entity::enums::BackupStatus::Success,
                created_at: Utc::now(),
            },
        )
        .await;
    }
    app.delete(&alpha.path("?confirm=alpha"), &app.admin_token)
        .await
        .expect(200);
    let db = &app.cairn.db;
    // Deleted, its records wait out the grace period; then they are purged.
    assert_eq!(backup::Entity::find().count(db).await.unwrap(), 2);
    app.get(&alpha.path("/backups/history"), &alpha.admin)
        .await
        .expect(404);
    cairn_worker::housekeeping(&app.cairn, Utc::now() + chrono::Duration::days(31))
        .await
        .unwrap();
    assert_eq!(backup::Entity::find().count(db).await.unwrap(), 1);
    assert_eq!(backup_job::Entity::find().count(db).await.unwrap(), 1);
    let organization_targets = backup_target::Entity::find()
        .filter(backup_target::Column::OrganizationId.is_not_null())
        .count(db)
        .await
        .unwrap();
    assert_eq!(organization_targets, 1);
    app.get(&alpha.path(""), &alpha.admin).await.expect(401);
    let page = app.get(&beta.path("/backups/history"), &beta.viewer).await;
    assert_eq!(ids(page.expect(200)).len(), 1);
}

both_backends!(job_retention_shows_what_would_be_kept_and_pruned);

async fn job_retention_shows_what_would_be_kept_and_pruned(backend: Backend) {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let app = spawn_app(backend).await;
    let (org, other) = app.two_orgs().await;
    let body = json!({ "name": "nightly", "schedule": "0 2 * * *", "keepLast": 1, "keepDaily": 2 });
    let job_id = app
        .post(&org.path("/backups/jobs"), &org.admin, &body)
        .await;
    let job_id = job_id.expect(201)["id"].as_str().unwrap().to_owned();
    let other_job = app
        .post(&org.path("/backups/jobs"), &org.admin, &job("other", &[]))
        .await;
    let other_job = other_job.expect(201)["id"].as_str().unwrap().to_owned();

    let at = |day: u32, hour: u32| Utc.with_ymd_and_hms(2024, 3, day, hour, 0, 0).unwrap();
    let mut ids = Vec::new();
    for (time, status, job_ref) in [
        (at(1, 10), "success", &job_id),
        (at(2, 9), "success", &job_id),
        (at(2, 10), "success", &job_id),
        (at(3, 10), "success", &job_id),
        (at(4, 10), "failed", &job_id),
        (at(5, 10), "success", &other_job),
        (at(3, 11), "success", &job_id),
    ] {
        ids.push(
            seed(
                &app,
                Seed {
                    org: &org.id,
                    job: Some(job_ref),
                    app: None,
                    target: None,
                    path: None,
                    status: cairn_entity::enums::BackupStatus::parse(status).unwrap(),
                    created_at: time,
                },
            )
            .await,
        );
    }
    // The last one belongs to another series of the same job.
    backup::Entity::update_many()
        .col_expr(
            backup::Column::VolumeName,
            sea_orm::sea_query::Expr::value("db"),
        )
        .filter(backup::Column::Id.eq(ids[6]))
        .exec(&app.cairn.db)
        .await
        .unwrap();

    let path = org.path(&format!("/backups/jobs/{job_id}/retention"));
    let reply = app.get(&path, &org.viewer).await;
    let view = reply.expect(200);
    let series = view["series"].as_array().unwrap();
    assert_eq!(series.len(), 2, "{view}");
    let data = series.iter().find(|s| s["volumeName"] == "data").unwrap();
    let decisions: Vec<(String, bool, Value)> = data["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["backupId"].as_str().unwrap().to_owned(),
                b["keep"].as_bool().unwrap(),
                b["reasons"].clone(),
            )
        })
        .collect();
    assert_eq!(
        decisions,
        [
            (ids[3].to_string(), true, json!(["last", "daily"])),
            (ids[2].to_string(), true, json!(["daily"])),
            (ids[1].to_string(), false, json!([])),
            (ids[0].to_string(), false, json!([])),
        ]
    );
    let db = series.iter().find(|s| s["volumeName"] == "db").unwrap();
    assert_eq!(db["backups"][0]["keep"], true);
    assert_eq!(db["backups"][0]["reasons"], json!(["last", "daily"]));

    app.get(&path, &other.admin).await.expect(404);
    app.get(
        &other.path(&format!("/backups/jobs/{job_id}/retention")),
        &other.admin,
    )
    .await
    .expect(404);
}
