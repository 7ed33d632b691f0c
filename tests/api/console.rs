//! The web console in a real browser: Debian's headless Chromium driven
//! through chromedriver (`TEST_WEBDRIVER_URL`, started by
//! `scripts/test.sh`), against a real Cairn with a real worker. The tests
//! click what a person clicks and check what a person sees; each page is
//! written as a screenshot under `target/screenshots/` (or
//! `CAIRN_SCREENSHOTS_DIR`).

use std::path::PathBuf;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::both_backends;
use crate::helpers::{describe, env, fixture, restorable_volume, worker, Backend, Fixture};

/// A browser session: headless Chromium at 1280 × 900.
async fn browser() -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,900", "--lang=en-US"],
        }),
    );
    // chromedriver speaks plain HTTP on loopback.
    ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities)
        .connect(&env("TEST_WEBDRIVER_URL"))
        .await
        .expect("a Chromium session through chromedriver")
}

/// Where screenshots go.
fn screenshots() -> PathBuf {
    let dir = std::env::var("CAIRN_SCREENSHOTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.expect("a screenshot");
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

/// Runs `script` (its last argument is the callback) and returns what it
/// passed to it.
async fn run_async(browser: &Client, script: &str, args: Vec<Value>) -> Value {
    browser
        .execute_async(script, args)
        .await
        .expect("a script in the page")
}

/// What a page must hold for everyone: every visible control has a name a
/// screen reader reads (a label, `aria-label`, or its text), and there is
/// no inline script or style (the CSP would refuse it anyway).
async fn assert_accessible_basics(browser: &Client, page: &str) {
    let unnamed = browser
        .execute(
            r#"
            const unnamed = [];
            for (const el of document.querySelectorAll("input, select, textarea, button")) {
              if (el.type === "hidden") continue;
              const named = (el.id && document.querySelector(`label[for="${el.id}"]`))
                || el.closest("label") || el.getAttribute("aria-label")
                || (el.tagName === "BUTTON" && el.textContent.trim());
              if (!named) unnamed.push(el.outerHTML);
            }
            const inline = [...document.scripts].filter(s => !s.src).length
              + document.querySelectorAll("[style]").length;
            return { unnamed, inline };
            "#,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        unnamed["unnamed"],
        json!([]),
        "controls without a name on {page}"
    );
    assert_eq!(
        unnamed["inline"],
        json!(0),
        "inline script or style on {page}"
    );
}

/// Signs in through the form, with the keyboard: the token field has the
/// focus, Enter submits.
async fn sign_in(browser: &Client, fixture: &Fixture, token: &str) {
    browser.goto(&fixture.app.url("/ui/sign-in")).await.unwrap();
    let field = element(browser, "#token").await;
    let focused = browser
        .execute("return document.activeElement.id", vec![])
        .await
        .unwrap();
    assert_eq!(focused, json!("token"), "the token field has the focus");
    field.send_keys(&format!("{token}\u{E007}")).await.unwrap();
    until(
        browser,
        "the organization's dashboard after signing in",
        "return location.pathname.startsWith('/ui/orgs/') && !!document.querySelector('#jobs, #main p')",
    )
    .await;
}

/// A worker of the fixture's app running until the returned sender is
/// dropped.
fn background_worker(fixture: &Fixture) -> watch::Sender<bool> {
    let worker = worker(&fixture.app, Duration::from_secs(30));
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move { worker.run(stopped).await });
    stop
}

/// The `id` of an element's `data-` attribute, or the text of an element.
async fn text_of(browser: &Client, css: &str) -> String {
    element(browser, css).await.text().await.unwrap()
}

/// The element `css`, waiting up to 20 s for it (a click that navigates
/// returns before the next page is there).
async fn element(browser: &Client, css: &str) -> fantoccini::elements::Element {
    browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css} on the page: {e}"))
}

/// Waits until `script` returns true, polling every 200 ms.
async fn until(browser: &Client, what: &str, script: &str) {
    for _ in 0..150 {
        if browser.execute(script, vec![]).await.unwrap() == json!(true) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let page = element(browser, "#main").await.text().await.unwrap();
    panic!("waited 30 s for {what}; the page reads:\n{page}");
}

/// A person on call: a job whose run failed is first on the dashboard and
/// marked; "Run now" on a healthy job shows its successful run without a
/// reload; a restore with the wrong confirmation is refused, with the right
/// one it gives the volume back, and links its safety backup.
async fn an_operator_finds_a_failure_runs_a_job_and_restores(backend: Backend) {
    let fixture = fixture(backend, "console").await;
    let shop = fixture.create_shop().await;
    let volume = fixture.volume_dir("shop", "blue", "data");
    restorable_volume(&volume, 1);
    let original = describe(&volume);
    let healthy = fixture
        .create_job_for(&shop, json!({ "name": "shop-nightly", "keepLast": 5 }))
        .await;
    // A job over an app whose volume does not exist on disk: its run fails.
    let ghost = fixture
        .create_app(json!({ "name": "ghost", "volumes": [{ "name": "data" }] }))
        .await;
    let failing = fixture
        .create_job_for(&ghost, json!({ "name": "ghost-nightly", "keepLast": 5 }))
        .await;
    let lost = fixture.run_to_end(&failing).await;
    assert_eq!(lost["status"], "failed", "{lost}");
    let first = fixture.run_to_end(&healthy).await;
    assert_eq!(first["status"], "success", "{first}");
    let _worker = background_worker(&fixture);

    let browser = browser().await;
    browser.goto(&fixture.app.url("/ui/sign-in")).await.unwrap();
    assert_accessible_basics(&browser, "sign-in").await;
    screenshot(&browser, "sign-in").await;
    sign_in(&browser, &fixture, &fixture.org.admin).await;
    // The dashboard: the failing job first, marked.
    let first_row = element(&browser, "#jobs tbody tr:first-child").await;
    assert_eq!(
        first_row.attr("data-job").await.unwrap().as_deref(),
        Some(failing.as_str())
    );
    assert!(first_row.text().await.unwrap().contains("ghost-nightly"));
    assert_eq!(
        text_of(&browser, "#jobs tbody tr:first-child [data-health]").await,
        "failing"
    );
    assert_eq!(text_of(&browser, "#failing-jobs").await, "1");
    assert_accessible_basics(&browser, "the dashboard").await;
    screenshot(&browser, "dashboard").await;

    // "Run now" on the healthy job, then its run turns `success` in place.
    browser
        .find(Locator::LinkText("shop-nightly"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    element(&browser, "#run-now button").await;
    browser
        .execute("window.cairnNotReloaded = true; return true", vec![])
        .await
        .unwrap();
    let runs_before = browser
        .execute(
            "return document.querySelectorAll('#runs tr[data-run]').length",
            vec![],
        )
        .await
        .unwrap();
    element(&browser, "#run-now button")
        .await
        .click()
        .await
        .unwrap();
    until(
        &browser,
        "the new run to show as success",
        &format!(
            "return document.querySelectorAll('#runs tr[data-run]').length === {runs_before} + 1 \
             && document.querySelector('#runs tr[data-run]').dataset.status === 'success'"
        ),
    )
    .await;
    assert_eq!(
        browser
            .execute("return window.cairnNotReloaded === true", vec![])
            .await
            .unwrap(),
        json!(true),
        "the page was not reloaded"
    );
    // Times read in the browser's zone and format, UTC on hover.
    let time = element(&browser, "#runs time").await;
    let shown = time.text().await.unwrap();
    let utc = time.attr("title").await.unwrap().unwrap_or_default();
    assert!(utc.ends_with(" UTC"), "{utc}");
    assert!(
        !shown.contains("UTC") && !shown.is_empty(),
        "shown as {shown}, UTC {utc}"
    );
    assert_accessible_basics(&browser, "the job").await;
    screenshot(&browser, "job").await;

    // The newest backup, from History.
    browser
        .find(Locator::LinkText("History"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_accessible_basics(&browser, "history").await;
    screenshot(&browser, "history").await;
    let newest = fixture
        .app
        .get(
            &fixture
                .org
                .path(&format!("/backups/history?jobId={healthy}&status=success")),
            &fixture.org.admin,
        )
        .await
        .expect(200)["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    element(&browser, &format!("#history tr[data-backup='{newest}'] a"))
        .await
        .click()
        .await
        .unwrap();
    assert!(text_of(&browser, "#backup-status")
        .await
        .contains("success"));
    assert_accessible_basics(&browser, "a backup").await;
    screenshot(&browser, "backup").await;

    // The volume changes; a restore must give the backup's tree back.
    std::fs::write(volume.join("added-later.txt"), b"new").unwrap();
    std::fs::remove_file(volume.join("secret.key")).unwrap();
    let changed = describe(&volume);
    element(&browser, "#restore-link")
        .await
        .click()
        .await
        .unwrap();
    element(&browser, "#preview").await;
    assert_accessible_basics(&browser, "the restore form").await;
    screenshot(&browser, "restore-form").await;
    let restore_url = browser.current_url().await.unwrap();

    // The wrong confirmation: refused, with the reason; nothing changed.
    element(&browser, "#confirm")
        .await
        .send_keys("shop/other")
        .await
        .unwrap();
    element(&browser, "#restore-form button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    let detail = text_of(&browser, ".problem-detail").await;
    assert!(
        detail.contains("type shop/data exactly"),
        "the refusal says what to type: {detail}"
    );
    let restores = fixture
        .app
        .get(&fixture.org.path("/backups/restores"), &fixture.org.admin)
        .await;
    assert_eq!(
        restores.expect(200)["items"],
        json!([]),
        "no restore was asked for"
    );
    assert_eq!(describe(&volume), changed);

    // The right one: the restore runs, the page follows it to `success`.
    browser.goto(restore_url.as_str()).await.unwrap();
    element(&browser, "#confirm")
        .await
        .send_keys("shop/data")
        .await
        .unwrap();
    element(&browser, "#restore-form button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    element(&browser, "#progress").await;
    until(
        &browser,
        "the restore to end",
        "const p = document.querySelector('#progress'); \
         return !!p && (p.dataset.status === 'success' || p.dataset.status === 'failed')",
    )
    .await;
    assert!(
        text_of(&browser, "#restore-status")
            .await
            .contains("success"),
        "{}",
        text_of(&browser, "#progress").await
    );
    assert_eq!(
        describe(&volume),
        original,
        "the volume is the backup's again"
    );
    let safety = element(&browser, "#safety-backup").await;
    assert_accessible_basics(&browser, "a restore").await;
    screenshot(&browser, "restore").await;
    safety.click().await.unwrap();
    until(
        &browser,
        "the safety backup's page",
        "return location.pathname.includes('/backups/')",
    )
    .await;
    assert!(text_of(&browser, "dl.settings").await.contains("safety"));

    // The other pages render, for the screenshots and the basics.
    for (link, name) in [
        ("Restores", "restores"),
        ("Verifications", "verifications"),
        ("Targets", "targets"),
        ("Notifications", "notifications"),
        ("Tokens", "tokens"),
    ] {
        browser
            .find(Locator::LinkText(link))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        until(
            &browser,
            link,
            &format!("return document.querySelector('#main h1')?.textContent === '{link}'"),
        )
        .await;
        assert_accessible_basics(&browser, name).await;
        screenshot(&browser, name).await;
    }

    // A phone-width screen: nothing wider than the screen but the tables,
    // which scroll in their own box.
    browser.set_window_size(390, 844).await.unwrap();
    browser
        .goto(&fixture.app.url(&format!("/ui/orgs/{}", fixture.org.id)))
        .await
        .unwrap();
    let overflow = browser
        .execute(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "the page is wider than a phone: {overflow}"
    );
    screenshot(&browser, "dashboard-phone").await;
    browser.close().await.unwrap();
}

both_backends!(an_operator_finds_a_failure_runs_a_job_and_restores);

/// POSTs a form from the page, as a script of the signed-in page would
/// (same origin, the session's cookie): returns the status.
async fn post_from_page(browser: &Client, path: &str, body: &str) -> u64 {
    let status = run_async(
        browser,
        r#"const [url, body, done] = arguments;
           fetch(url, { method: "POST", body, redirect: "manual",
                        headers: { "content-type": "application/x-www-form-urlencoded",
                                   "HX-Request": "true" } })
             .then(r => done(r.status), e => done("failed: " + e));"#,
        vec![json!(path), json!(body)],
    )
    .await;
    status
        .as_u64()
        .unwrap_or_else(|| panic!("the POST did not complete: {status}"))
}

/// The page's CSRF token (from its sign-out form).
async fn page_csrf(browser: &Client) -> String {
    browser
        .execute(
            "return document.querySelector('input[name=_csrf]').value",
            vec![],
        )
        .await
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_viewer_sees_no_buttons_and_a_forged_post_is_refused() {
    let fixture = fixture(Backend::Sqlite, "console-viewer").await;
    let shop = fixture.create_shop().await;
    restorable_volume(&fixture.volume_dir("shop", "blue", "data"), 1);
    let job = fixture
        .create_job_for(&shop, json!({ "name": "nightly", "keepLast": 5 }))
        .await;
    let backup = fixture.run_to_end(&job).await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let browser = browser().await;
    sign_in(&browser, &fixture, &fixture.org.viewer).await;
    assert!(
        browser.find(Locator::LinkText("Tokens")).await.is_err(),
        "a viewer has no Tokens page"
    );
    browser
        .goto(
            &fixture
                .app
                .url(&format!("/ui/orgs/{}/jobs/{job}", fixture.org.id)),
        )
        .await
        .unwrap();
    assert!(
        browser.find(Locator::Css("#run-now")).await.is_err(),
        "no Run now for a viewer"
    );
    browser
        .goto(
            &fixture
                .app
                .url(&format!("/ui/orgs/{}/backups/{backup}", fixture.org.id)),
        )
        .await
        .unwrap();
    assert!(
        browser.find(Locator::Css("#restore-link")).await.is_err(),
        "no Restore for a viewer"
    );
    let buttons = browser
        .execute(
            "return [...document.querySelectorAll('#main button')].map(b => b.textContent)",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(buttons, json!([]), "a viewer sees no button on a backup");

    // Forged: the viewer's own session and a valid CSRF token, posting
    // what an operator's page would. The server refuses, as the API does.
    let csrf = page_csrf(&browser).await;
    let org = &fixture.org.id;
    let status = post_from_page(
        &browser,
        &format!("/ui/orgs/{org}/jobs/{job}/run"),
        &format!("_csrf={csrf}"),
    )
    .await;
    assert_eq!(status, 403);
    let status = post_from_page(
        &browser,
        &format!("/ui/orgs/{org}/backups/{backup}/restore"),
        &format!("_csrf={csrf}&destination=own&confirm=shop%2Fdata"),
    )
    .await;
    assert_eq!(status, 403);
    let runs = fixture
        .app
        .get(
            &fixture.org.path(&format!("/backups/jobs/{job}/runs")),
            &fixture.org.admin,
        )
        .await;
    assert_eq!(
        runs.expect(200)["items"].as_array().unwrap().len(),
        1,
        "no run was made"
    );
    let restores = fixture
        .app
        .get(&fixture.org.path("/backups/restores"), &fixture.org.admin)
        .await;
    assert_eq!(
        restores.expect(200)["items"],
        json!([]),
        "no restore was made"
    );
    browser.close().await.unwrap();
}

#[tokio::test]
async fn forms_need_the_csrf_token_and_sign_out_ends_the_session() {
    let fixture = fixture(Backend::Sqlite, "console-csrf").await;
    let shop = fixture.create_shop().await;
    restorable_volume(&fixture.volume_dir("shop", "blue", "data"), 1);
    let job = fixture
        .create_job_for(&shop, json!({ "name": "nightly", "keepLast": 5 }))
        .await;
    let browser = browser().await;
    sign_in(&browser, &fixture, &fixture.org.operator).await;
    let org = &fixture.org.id;
    let run = format!("/ui/orgs/{org}/jobs/{job}/run");
    // Without the token, and with another session's: refused.
    assert_eq!(post_from_page(&browser, &run, "").await, 403);
    assert_eq!(
        post_from_page(&browser, &run, &format!("_csrf={}", "0".repeat(64))).await,
        403
    );
    async fn runs(fixture: &Fixture, job: &str) -> usize {
        let path = fixture.org.path(&format!("/backups/jobs/{job}/runs"));
        let reply = fixture.app.get(&path, &fixture.org.admin).await;
        reply.expect(200)["items"].as_array().unwrap().len()
    }
    assert_eq!(runs(&fixture, &job).await, 0, "no run was made");
    // With it: the run is made (an operator may).
    let csrf = page_csrf(&browser).await;
    assert_eq!(
        post_from_page(&browser, &run, &format!("_csrf={csrf}")).await,
        200
    );
    assert_eq!(runs(&fixture, &job).await, 1);

    // The session cookie is HttpOnly and SameSite=Strict.
    let cookie = browser
        .get_named_cookie("cairn_session")
        .await
        .expect("the session cookie");
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Strict)");
    let session = cookie.value().to_owned();

    // Sign out: back to the sign-in page; the old cookie opens nothing.
    element(&browser, "form.sign-out button")
        .await
        .click()
        .await
        .unwrap();
    element(&browser, "#token").await;
    browser
        .goto(&fixture.app.url(&format!("/ui/orgs/{org}")))
        .await
        .unwrap();
    assert_eq!(browser.current_url().await.unwrap().path(), "/ui/sign-in");
    let replayed = fixture
        .app
        .client
        .get(fixture.app.url(&format!("/ui/orgs/{org}")))
        .header("Cookie", format!("cairn_session={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status(), 303);
    assert_eq!(replayed.headers()["location"], "/ui/sign-in");
    browser.close().await.unwrap();
}

#[tokio::test]
async fn the_console_answers_with_strict_headers_and_refuses_unknown_tokens() {
    let fixture = fixture(Backend::Sqlite, "console-headers").await;
    let client = &fixture.app.client;
    let page = client
        .get(fixture.app.url("/ui/sign-in"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    let nonce = page.headers()["set-cookie"].to_str().unwrap().to_owned();
    let nonce = nonce
        .strip_prefix("cairn_sign_in=")
        .and_then(|rest| rest.split(';').next())
        .unwrap()
        .to_owned();
    let sign_in = |token: &str, form_nonce: &str, forwarded: Option<&str>| {
        let mut request = client
            .post(fixture.app.url("/ui/sign-in"))
            .header("Cookie", format!("cairn_sign_in={nonce}"))
            .form(&[("_csrf", form_nonce), ("token", token)]);
        if let Some(proto) = forwarded {
            request = request.header("X-Forwarded-Proto", proto);
        }
        request.send()
    };
    // An unknown token: 401 and the form again, no session.
    let refused = sign_in("cairn_not-a-token", &nonce, None).await.unwrap();
    assert_eq!(refused.status(), 401);
    assert!(refused.headers().get("set-cookie").is_none());
    assert!(refused.text().await.unwrap().contains("not known"));
    // A form without the cookie's nonce (another site's form): 403.
    let forged = sign_in(&fixture.org.admin, "another-nonce", None)
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert!(forged.headers().get("set-cookie").is_none());
    // Behind HTTPS the session cookie is Secure too.
    let signed_in = sign_in(&fixture.org.admin, &nonce, Some("https"))
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    let session = signed_in
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with("cairn_session="))
        .expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/ui"] {
        assert!(session.contains(attribute), "{attribute} in {session}");
    }
    // The database keeps no session id, only its hash.
    let id = session
        .strip_prefix("cairn_session=")
        .and_then(|rest| rest.split(';').next())
        .unwrap();
    use sea_orm::EntityTrait;
    let rows = cairn_entity::console_session::Entity::find()
        .all(&fixture.app.cairn.db)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_ne!(rows[0].session_hash, id);
    assert_eq!(rows[0].session_hash, cairn_core::auth::hash_token(id));
    // A revoked token ends its sessions.
    let tokens = fixture
        .app
        .get(&fixture.org.path("/tokens"), &fixture.app.admin_token)
        .await;
    let admin_id = tokens.expect(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["role"] == "admin")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let dashboard = format!("/ui/orgs/{}", fixture.org.id);
    let before = client
        .get(fixture.app.url(&dashboard))
        .header("Cookie", format!("cairn_session={id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(before.status(), 200);
    // Errors are pages with the problem's detail, not problem+json: another
    // organization is "not found", as in the API.
    let other = client
        .get(
            fixture
                .app
                .url(&format!("/ui/orgs/{}", uuid::Uuid::now_v7())),
        )
        .header("Cookie", format!("cairn_session={id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    assert!(other.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let text = other.text().await.unwrap();
    assert!(text.contains("organization not found"), "{text}");
    fixture
        .app
        .delete(
            &fixture.org.path(&format!("/tokens/{admin_id}")),
            &fixture.app.admin_token,
        )
        .await
        .expect(204);
    let after = client
        .get(fixture.app.url(&dashboard))
        .header("Cookie", format!("cairn_session={id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 303, "a revoked token's session is over");
}
