//! The lists that grow with an organization's history answer in a number
//! of SQL statements that does not grow with the page: a job list computes
//! every job's health (verifications, recovery point) for the whole page
//! at once, never job by job.

use serde_json::json;

use crate::helpers::{fixture, Backend, Fixture};

/// The statements the app's database ran for one GET (nothing else runs
/// in the test's app meanwhile: workers are drained by hand).
async fn statements_of(f: &Fixture, path: &str) -> (u64, serde_json::Value) {
    use std::sync::atomic::Ordering;
    let before = f.app.cairn.statements.load(Ordering::SeqCst);
    let page = f.app.get(path, &f.org.viewer).await.expect(200).clone();
    let after = f.app.cairn.statements.load(Ordering::SeqCst);
    let ran = after - before;
    // The token's lookup and the page itself, at the least.
    assert!(ran >= 2, "{path}: {ran} statements counted");
    (ran, page)
}

async fn statements_do_not_grow_with_the_page(backend: Backend) {
    let f = fixture(backend, "scale").await;
    let mut jobs = Vec::new();
    for name in ["a", "b", "c", "d"] {
        std::fs::write(f.volume_dir(name, "blue", "data").join("f.txt"), name).unwrap();
        let app = f
            .create_app(json!({ "name": name, "volumes": [{ "name": "data" }] }))
            .await;
        let job = f
            .create_job_for(
                &app,
                json!({ "name": format!("job {name}"), "keepLast": 10 }),
            )
            .await;
        // Three runs, the last one verified: every health field is set.
        let mut last = None;
        for _ in 0..3 {
            let record = f.run_to_end(&job).await;
            assert_eq!(record["status"], "success", "{record}");
            last = Some(record["id"].as_str().unwrap().to_owned());
        }
        f.app
            .post(
                &f.org
                    .path(&format!("/backups/history/{}/verify", last.unwrap())),
                &f.org.operator,
                &json!({ "mode": "read" }),
            )
            .await
            .expect(202);
        f.drain().await;
        jobs.push(job);
    }

    let (one, page) = statements_of(&f, &f.org.path("/backups/jobs?limit=1")).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let (all, page) = statements_of(&f, &f.org.path("/backups/jobs?limit=50")).await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    for job in items {
        assert_eq!(job["lastVerification"]["status"], "success", "{job}");
        assert!(job["rpoSeconds"].is_i64(), "{job}");
        assert!(job["lastVerifiedAt"].is_string(), "{job}");
        assert!(job["lastSuccessAt"].is_string(), "{job}");
    }
    assert_eq!(
        one, all,
        "a job list of 4 runs as many statements as one of 1"
    );
    assert!(all <= 8, "a job list in {all} statements");

    let history = |limit: u32| f.org.path(&format!("/backups/history?limit={limit}"));
    let (one, _) = statements_of(&f, &history(1)).await;
    let (all, page) = statements_of(&f, &history(50)).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 12);
    assert_eq!(one, all, "history: {one} statements for 1, {all} for 12");

    let filtered = |limit: u32| {
        f.org.path(&format!(
            "/backups/history?limit={limit}&jobId={}&status=success",
            jobs[0]
        ))
    };
    let (one, _) = statements_of(&f, &filtered(1)).await;
    let (all, page) = statements_of(&f, &filtered(50)).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 3);
    assert_eq!(one, all, "filtered history: {one} for 1, {all} for 3");

    let runs = |limit: u32| {
        f.org
            .path(&format!("/backups/jobs/{}/runs?limit={limit}", jobs[0]))
    };
    let (one, _) = statements_of(&f, &runs(1)).await;
    let (all, page) = statements_of(&f, &runs(50)).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 3, "{page}");
    assert_eq!(one, all, "runs: {one} for 1, {all} for 3");
}

#[tokio::test]
async fn statements_do_not_grow_with_the_page_sqlite() {
    statements_do_not_grow_with_the_page(Backend::Sqlite).await;
}

#[tokio::test]
async fn statements_do_not_grow_with_the_page_postgres() {
    statements_do_not_grow_with_the_page(Backend::Postgres).await;
}

/// On SQLite, the API's lists read on their own read-only connections:
/// they answer while the single writer is held by a transaction that has
/// written (a long write no longer stalls every page), and a page sees
/// what the writer committed just before.
#[tokio::test]
async fn lists_read_beside_a_busy_writer() {
    use sea_orm::{ConnectionTrait, TransactionTrait};
    let f = fixture(Backend::Sqlite, "busy").await;
    let history = f.org.path("/backups/history");
    // The token's first use records its time (a write); later ones read.
    f.app.get(&history, &f.org.viewer).await.expect(200);
    f.app
        .get(&f.org.path("/backups/jobs"), &f.org.viewer)
        .await
        .expect(200);

    let held = f.app.cairn.db.begin().await.unwrap();
    held.execute_unprepared("UPDATE organizations SET name = name || ''")
        .await
        .unwrap();
    for path in [history.clone(), f.org.path("/backups/jobs")] {
        let reply = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            f.app.get(&path, &f.org.viewer),
        )
        .await
        .unwrap_or_else(|_| panic!("{path} waited for the writer"));
        reply.expect(200);
    }
    held.rollback().await.unwrap();

    // A job created (and committed) through the writer is in the next page.
    std::fs::write(f.volume_dir("seen", "blue", "data").join("f.txt"), "x").unwrap();
    let app = f
        .create_app(json!({ "name": "seen", "volumes": [{ "name": "data" }] }))
        .await;
    let job = f
        .create_job_for(&app, json!({ "name": "seen now", "keepLast": 3 }))
        .await;
    let page = f
        .app
        .get(&f.org.path("/backups/jobs"), &f.org.viewer)
        .await
        .expect(200)
        .clone();
    assert!(
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|item| item["id"] == job.as_str()),
        "{page}"
    );
}
