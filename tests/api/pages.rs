//! Every list pages as history does: `limit` (1–200) and `cursor` (the
//! previous page's `nextCursor`), `{items, nextCursor}`; following the
//! cursors yields the whole list once, in its order.

use serde_json::{json, Value};

use crate::helpers::{fixture, Backend, TestApp};

/// Every item of `path`, a page of `limit` at a time; checks each page's
/// size and that only the last one ends without a cursor.
pub(crate) async fn walk(app: &TestApp, path: &str, token: &str, limit: usize) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let separator = if path.contains('?') { '&' } else { '?' };
        let mut url = format!("{path}{separator}limit={limit}");
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={}", urlencode(cursor)));
        }
        let page = app.get(&url, token).await.expect(200).clone();
        let got = page["items"].as_array().unwrap();
        assert!(got.len() <= limit, "{url}: {page}");
        items.extend(got.iter().cloned());
        match page["nextCursor"].as_str() {
            Some(next) => {
                assert_eq!(got.len(), limit, "{url}: a page before the last is full");
                cursor = Some(next.to_owned());
            }
            None => return items,
        }
    }
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

async fn every_list_pages(backend: Backend) {
    let f = fixture(backend, "pager").await;
    let admin = f.app.admin_token.clone();
    for name in ["alpha", "beta", "gamma"] {
        let app = f
            .create_app(json!({ "name": name, "volumes": [{ "name": "data" }] }))
            .await;
        f.create_target(
            json!({ "name": format!("{name} disk"), "type": "local", "config": { "path": name } }),
        )
        .await;
        f.create_job_for(
            &app,
            json!({ "name": format!("{name} nightly"), "keepLast": 3 }),
        )
        .await;
        f.create_channel(json!({ "name": format!("{name} hook"), "type": "webhook", "config": { "url": "http://127.0.0.1:9/hook" } }))
            .await;
        f.app.org(&format!("pager-{name}")).await;
    }
    let org = &f.org;
    for (path, token, at_least) in [
        (org.path("/apps"), org.viewer.clone(), 3),
        (org.path("/backups/targets"), org.viewer.clone(), 3),
        (org.path("/backups/jobs"), org.viewer.clone(), 3),
        (org.path("/notifications/channels"), org.viewer.clone(), 3),
        (org.path("/tokens"), org.admin.clone(), 3),
        ("/api/v1/organizations".to_owned(), admin.clone(), 4),
        (
            "/api/v1/system/backups/targets".to_owned(),
            admin.clone(),
            1,
        ),
    ] {
        let whole = f
            .app
            .get(&format!("{path}?limit=200"), &token)
            .await
            .expect(200)
            .clone();
        assert!(whole["nextCursor"].is_null(), "{path}: {whole}");
        let whole = whole["items"].as_array().unwrap().clone();
        assert!(whole.len() >= at_least, "{path}: {whole:?}");
        for limit in [1, 2] {
            assert_eq!(
                walk(&f.app, &path, &token, limit).await,
                whole,
                "{path} by {limit}"
            );
        }
        for bad in ["limit=0", "limit=201", "limit=many"] {
            f.app
                .get(&format!("{path}?{bad}"), &token)
                .await
                .expect_field_error(422, "limit");
        }
    }
    // A cursor no page made is refused, not guessed.
    f.app
        .get(&org.path("/tokens?cursor=not-a-token-id"), &org.admin)
        .await
        .expect_field_error(422, "cursor");
}

crate::both_backends!(every_list_pages);
