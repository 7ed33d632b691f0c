use chrono::{DateTime, Timelike, Utc};
use serde_json::json;

use crate::both_backends;
use crate::helpers::{job, s3_target, spawn_app, Backend};

both_backends!(
    jobs_round_trip_with_their_next_run,
    invalid_jobs_are_refused_with_the_field,
    jobs_of_other_organizations_are_not_found,
);

async fn create_app(
    app: &crate::helpers::TestApp,
    org: &crate::helpers::Org,
    name: &str,
) -> String {
    let reply = app
        .post(
            &org.path("/apps"),
            &org.admin,
            &json!({ "name": name, "volumes": [{ "name": "data" }] }),
        )
        .await;
    reply.expect(201)["id"].as_str().unwrap().to_owned()
}

async fn jobs_round_trip_with_their_next_run(backend: Backend) {
    let app = spawn_app(backend).await;
    let org = app.org("acme").await;
    let shop = create_app(&app, &org, "shop").await;
    let blog = create_app(&app, &org, "blog").await;
    let target = app
        .post(
            &org.path("/backups/targets"),
            &org.admin,
            &s3_target("t", "s"),
        )
        .await;
    let target = target.expect(201)["id"].as_str().unwrap().to_owned();

    let before = Utc::now();
    let mut body = job("nightly", &[&shop, &blog]);
    body["targetId"] = json!(target);
    let reply = app
        .post(&org.path("/backups/jobs"), &org.admin, &body)
        .await;
    let created = reply.expect(201).clone();
    assert_eq!(created["schedule"], "0 2 * * *");
    assert_eq!(created["enabled"], true);
    assert_eq!(created["notifyOnFailure"], true);
    assert_eq!(created["notifyOnSuccess"], false);
    assert_eq!(created["keepAll"], false);
    assert_eq!(created["keepLast"], 1);
    assert_eq!(created["keepDaily"], 7);
    assert!(created["keepWeekly"].is_null());
    assert_eq!(created["autoCreated"], false);
    assert!(created["lastRunAt"].is_null());
    assert_eq!(created["targetId"], target.as_str());
    let mut app_ids: Vec<String> = created["appIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    app_ids.sort();
    let mut expected = vec![shop.clone(), blog.clone()];
    expected.sort();
    assert_eq!(app_ids, expected);
    let next: DateTime<Utc> = created["nextRunAt"].as_str().unwrap().parse().unwrap();
    assert!(next > before && next - before <= chrono::Duration::days(1));
    assert_eq!((next.hour(), next.minute(), next.second()), (2, 0, 0));

    let id = created["id"].as_str().unwrap();
    let path = org.path(&format!("/backups/jobs/{id}"));
    // Disabling clears the next run; the keep-all policy needs no rule.
    let update = json!({
        "name": "nightly", "schedule": "*/15 * * * *", "enabled": false, "appIds": [shop],
        "keepAll": true, "notifyOnSuccess": true, "notifyOnFailure": false
    });
    let reply = app.put(&path, &org.admin, &update).await;
    let updated = reply.expect(200);
    assert!(updated["nextRunAt"].is_null());
    assert!(updated["targetId"].is_null());
    assert_eq!(updated["appIds"], json!([shop]));
    assert_eq!(updated["notifyOnFailure"], false);
    let mut enabled = update.clone();
    enabled["enabled"] = json!(true);
    let reply = app.put(&path, &org.admin, &enabled).await;
    let next: DateTime<Utc> = reply.expect(200)["nextRunAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(next.minute() % 15, 0);
    assert!(next - Utc::now() <= chrono::Duration::minutes(15));

    let list = app.get(&org.path("/backups/jobs"), &org.viewer).await;
    assert_eq!(list.expect(200)["items"].as_array().unwrap().len(), 1);
    app.put(&path, &org.operator, &enabled).await.expect(403);

    // An app that is deleted drops out of the job.
    app.delete(&org.path(&format!("/apps/{shop}")), &org.admin)
        .await
        .expect(204);
    let reply = app.get(&path, &org.viewer).await;
    assert_eq!(reply.expect(200)["appIds"], json!([]));

    app.delete(&path, &org.admin).await.expect(204);
    app.get(&path, &org.admin).await.expect(404);
    // The target is free again.
    app.delete(&org.path(&format!("/backups/targets/{target}")), &org.admin)
        .await
        .expect(204);
}

async fn invalid_jobs_are_refused_with_the_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alpha, beta) = app.two_orgs().await;
    let beta_app = create_app(&app, &beta, "other").await;
    let beta_target = app
        .post(
            &beta.path("/backups/targets"),
            &beta.admin,
            &s3_target("t", "s"),
        )
        .await;
    let beta_target = beta_target.expect(201)["id"].as_str().unwrap().to_owned();
    let alpha_app = create_app(&app, &alpha, "shop").await;
    let path = alpha.path("/backups/jobs");

    let with = |key: &str, value: serde_json::Value| {
        let mut body = job("j", &[&alpha_app]);
        body[key] = value;
        body
    };
    // Valid cron, but longer than the 200 characters a schedule may have.
    let list = |n: u32| (0..n).map(|m| m.to_string()).collect::<Vec<_>>().join(",");
    let long = format!("{} {} * * *", list(60), list(24));
    assert!(long.len() > 200);
    for schedule in [
        "not cron",
        "61 * * * *",
        "* * * *",
        "0 0 31 2 *",
        "0 2 1 * 1",
        "",
        long.as_str(),
    ] {
        app.post(&path, &alpha.admin, &with("schedule", json!(schedule)))
            .await
            .expect_field_error(422, "schedule");
    }
    let no_rule = json!({ "name": "j", "schedule": "0 2 * * *" });
    app.post(&path, &alpha.admin, &no_rule)
        .await
        .expect_field_error(422, "keepLast");
    let zero_rules = json!({ "name": "j", "schedule": "0 2 * * *", "keepLast": 0, "keepDaily": 0 });
    app.post(&path, &alpha.admin, &zero_rules)
        .await
        .expect_field_error(422, "keepLast");
    app.post(&path, &alpha.admin, &with("keepDaily", json!(-1)))
        .await
        .expect_field_error(422, "keepDaily");
    app.post(&path, &alpha.admin, &with("targetId", json!(beta_target)))
        .await
        .expect_field_error(422, "targetId");
    app.post(&path, &alpha.admin, &with("targetId", json!("nope")))
        .await
        .expect_field_error(422, "targetId");
    app.post(
        &path,
        &alpha.admin,
        &with("appIds", json!([alpha_app, beta_app])),
    )
    .await
    .expect_field_error(422, "appIds[1]");
    app.post(&path, &alpha.admin, &with("name", json!("")))
        .await
        .expect_field_error(422, "name");
    let list = app.get(&path, &alpha.admin).await;
    assert!(list.expect(200)["items"].as_array().unwrap().is_empty());

    app.post(&path, &alpha.admin, &job("j", &[]))
        .await
        .expect(201);
    app.post(&path, &alpha.admin, &job("j", &[]))
        .await
        .expect_field_error(409, "name");
}

async fn jobs_of_other_organizations_are_not_found(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alpha, beta) = app.two_orgs().await;
    let reply = app
        .post(
            &beta.path("/backups/jobs"),
            &beta.admin,
            &job("nightly", &[]),
        )
        .await;
    let id = reply.expect(201)["id"].as_str().unwrap().to_owned();
    app.get(&beta.path("/backups/jobs"), &alpha.admin)
        .await
        .expect(404);
    app.post(&beta.path("/backups/jobs"), &alpha.admin, &job("x", &[]))
        .await
        .expect(404);
    for path in [
        beta.path(&format!("/backups/jobs/{id}")),
        alpha.path(&format!("/backups/jobs/{id}")),
    ] {
        app.get(&path, &alpha.admin).await.expect(404);
        app.put(&path, &alpha.admin, &job("x", &[]))
            .await
            .expect(404);
        app.delete(&path, &alpha.admin).await.expect(404);
    }
    app.get(&alpha.path("/backups/jobs/x"), &alpha.admin)
        .await
        .expect_field_error(404, "jobId");
    app.get(&beta.path(&format!("/backups/jobs/{id}")), &beta.viewer)
        .await
        .expect(200);
}
