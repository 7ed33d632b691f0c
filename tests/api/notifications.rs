//! Notifications against real receivers: the SMTP server aiosmtpd (started
//! by `scripts/test.sh`; messages read back from its Maildir), and HTTP
//! receivers on loopback standing in for Slack and for a webhook consumer,
//! which record every request and answer as each test tells them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use hmac::{Hmac, Mac};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::watch;

use cairn_core::config::{SmtpConfig, SmtpTls};
use cairn_core::notifications::{dispatch_due, DispatchReport};
use cairn_entity::notification_delivery;

use crate::both_backends;
use crate::helpers::{
    env, fixture_with, spawn_app, unique, worker, Backend, Fixture, Received, Receiver,
};

/// The SMTP server of `scripts/test.sh`, over STARTTLS with its user.
fn smtp_starttls() -> SmtpConfig {
    SmtpConfig {
        host: env("TEST_SMTP_HOST"),
        port: Some(env("TEST_SMTP_STARTTLS_PORT").parse().unwrap()),
        tls: SmtpTls::Starttls,
        username: Some(env("TEST_SMTP_USER")),
        password: Some(secrecy::SecretString::from(env("TEST_SMTP_PASSWORD"))),
        from: "Cairn <cairn@example.test>".into(),
        ca_file: Some(PathBuf::from(env("TEST_SMTP_CA"))),
    }
}

/// A message the SMTP server stored: its headers (lower-case names) and
/// body.
#[derive(Debug)]
struct Mail {
    headers: HashMap<String, String>,
    body: String,
}

/// The messages whose envelope includes `recipient`, parsed as MIME
/// (headers decoded, the text body decoded from its transfer encoding).
fn mails_to(recipient: &str) -> Vec<Mail> {
    let dir = PathBuf::from(env("TEST_SMTP_MAILDIR")).join("new");
    let mut mails = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let raw = std::fs::read(entry.path()).unwrap_or_default();
        let Some(message) = mail_parser::MessageParser::default().parse(&raw) else {
            continue;
        };
        let headers: HashMap<String, String> = message
            .headers()
            .iter()
            .map(|header| {
                let value = match header.value() {
                    mail_parser::HeaderValue::Text(text) => text.to_string(),
                    mail_parser::HeaderValue::Address(address) => address
                        .iter()
                        .filter_map(|a| a.address())
                        .collect::<Vec<_>>()
                        .join(", "),
                    other => format!("{other:?}"),
                };
                (header.name().to_lowercase(), value)
            })
            .collect();
        if headers
            .get("x-rcptto")
            .is_some_and(|to| to.contains(recipient))
        {
            let body = message
                .body_text(0)
                .map(|text| text.into_owned())
                .unwrap_or_default();
            mails.push(Mail { headers, body });
        }
    }
    mails
}

/// Waits up to 10 s for `count` messages to `recipient`.
async fn wait_for_mails(recipient: &str, count: usize) -> Vec<Mail> {
    for _ in 0..100 {
        let mails = mails_to(recipient);
        if mails.len() >= count {
            return mails;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    mails_to(recipient)
}

pub(crate) fn verify_signature(secret: &str, received: &Received) {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&received.body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(
        received.headers.get("x-cairn-signature"),
        Some(&expected),
        "the signature is the HMAC-SHA256 of the body"
    );
}

/// Checks a webhook body against `NotificationPayload` of the served
/// OpenAPI document, recursively: references resolved, every required
/// property present, no property the schema does not declare, `null` only
/// where allowed, types and enumerations respected.
pub(crate) fn check_against_schema(body: &Value) {
    let document = serde_json::to_value(cairn_api::openapi::document()).unwrap();
    let schemas = document["components"]["schemas"].clone();
    conforms(body, &schemas["NotificationPayload"], &schemas, "$");
    assert_eq!(body["version"], 1);
}

fn conforms(value: &Value, schema: &Value, schemas: &Value, at: &str) {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        return conforms(value, &schemas[name], schemas, at);
    }
    if let Some(alternatives) = schema["oneOf"].as_array() {
        if value.is_null() {
            assert!(
                alternatives.iter().any(|a| a["type"] == "null"),
                "{at} may not be null"
            );
            return;
        }
        let other = alternatives.iter().find(|a| a["type"] != "null").unwrap();
        return conforms(value, other, schemas, at);
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(kind) => vec![kind.as_str()],
        Value::Array(kinds) => kinds.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if value.is_null() {
        assert!(types.contains(&"null"), "{at} may not be null");
        return;
    }
    if let Some(allowed) = schema["enum"].as_array() {
        assert!(
            allowed.contains(value),
            "{at}: {value} is not one of {allowed:?}"
        );
    }
    let kind = types.iter().find(|t| **t != "null").copied().unwrap_or("");
    match kind {
        "object" => {
            let properties = schema["properties"].as_object().unwrap();
            for required in schema["required"].as_array().into_iter().flatten() {
                let name = required.as_str().unwrap();
                assert!(value.get(name).is_some(), "{at}.{name} is missing");
            }
            for (name, field) in value.as_object().expect("an object") {
                let declared = properties
                    .get(name)
                    .unwrap_or_else(|| panic!("{at}.{name} is not in the schema"));
                conforms(field, declared, schemas, &format!("{at}.{name}"));
            }
        }
        "array" => {
            for (i, item) in value.as_array().expect("an array").iter().enumerate() {
                conforms(item, &schema["items"], schemas, &format!("{at}[{i}]"));
            }
        }
        "string" => assert!(value.is_string(), "{at} is not a string: {value}"),
        "integer" => assert!(value.is_u64() || value.is_i64(), "{at} is not an integer"),
        "boolean" => assert!(value.is_boolean(), "{at} is not a boolean"),
        _ => {}
    }
}

/// A fixture whose organization has an email, a Slack and a signed webhook
/// channel; returns (fixture, recipients, slack receiver, webhook
/// receiver, webhook secret).
async fn three_channels(
    backend: Backend,
    slack_script: Vec<u16>,
    webhook_script: Vec<u16>,
) -> (Fixture, [String; 2], Receiver, Receiver, String) {
    let f = fixture_with(backend, "acme", |config| {
        config.notifications.smtp = Some(smtp_starttls());
    })
    .await;
    let recipients = [
        format!("{}@ops.example.test", unique("oncall")),
        format!("{}@example.test", unique("backup-admin")),
    ];
    let slack = Receiver::start(slack_script).await;
    let webhook = Receiver::start(webhook_script).await;
    let secret = format!("whsec-{}", unique("s"));
    for body in [
        json!({ "name": "ops mail", "type": "email", "config": { "recipients": recipients } }),
        json!({ "name": "slack", "type": "slack", "config": { "url": slack.url } }),
        json!({ "name": "hook", "type": "webhook", "config": { "url": webhook.url, "secret": secret } }),
    ] {
        f.create_channel(body).await;
    }
    (f, recipients, slack, webhook, secret)
}

pub(crate) async fn deliveries(f: &Fixture, query: &str) -> Vec<Value> {
    f.app
        .get(
            &f.org.path(&format!("/notifications/deliveries{query}")),
            &f.org.viewer,
        )
        .await
        .expect(200)["items"]
        .as_array()
        .unwrap()
        .clone()
}

pub(crate) async fn dispatch(f: &Fixture, at: chrono::DateTime<Utc>) -> DispatchReport {
    dispatch_due(&f.app.cairn, "test-dispatcher", at)
        .await
        .expect("a dispatch pass")
}

/// A failed, a succeeded and a missed run each reach the email, Slack and
/// webhook consumers once, with the facts of the run.
async fn runs_reach_email_slack_and_webhook(backend: Backend) {
    let (f, recipients, slack, webhook, secret) = three_channels(backend, vec![], vec![]).await;
    std::fs::write(f.volume_dir("shop", "blue", "data").join("a.txt"), b"hello").unwrap();
    let app_id = f
        .create_app(json!({ "name": "shop", "volumes": [{ "name": "data" }, { "name": "gone" }] }))
        .await;
    let job = f
        .create_job(json!({ "name": "nightly", "schedule": "0 2 * * *", "appIds": [app_id], "keepLast": 5, "notifyOnSuccess": true }))
        .await;

    // 1. A run with a missing volume: partial, so `backup.run.failed`.
    let run = f.run(&job).await;
    f.drain().await;
    let pending = deliveries(&f, "?status=pending").await;
    assert_eq!(pending.len(), 3, "{pending:?}");
    let report = dispatch(&f, Utc::now()).await;
    assert_eq!(report.sent, 3, "{report:?}");
    let mails = wait_for_mails(&recipients[0], 1).await;
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    let subject = &mail.headers["subject"];
    assert!(
        subject.contains("Backup failed: nightly (acme)"),
        "{subject}"
    );
    assert!(subject.contains("1 of 2 volume(s) failed"), "{subject}");
    for recipient in &recipients {
        assert!(mail.headers["x-rcptto"].contains(recipient.as_str()));
        assert!(mail.headers["to"].contains(recipient.as_str()));
    }
    assert!(mail.headers["from"].contains("cairn@example.test"));
    assert!(
        mail.body.contains("shop/gone: failed - volume_not_found"),
        "{}",
        mail.body
    );
    assert!(mail.body.contains("shop-blue_gone/_data"), "{}", mail.body);

    let slack_requests = slack.requests();
    assert_eq!(slack_requests.len(), 1);
    let message = slack_requests[0].json();
    assert!(message["text"].as_str().unwrap().contains("Backup failed"));
    assert_eq!(message["blocks"][0]["type"], "header");
    let blocks = message["blocks"].to_string();
    assert!(blocks.contains("volume_not_found"), "{blocks}");

    let hooks = webhook.requests();
    assert_eq!(hooks.len(), 1);
    verify_signature(&secret, &hooks[0]);
    let body = hooks[0].json();
    check_against_schema(&body);
    assert_eq!(body["event"], "backup.run.failed");
    assert_eq!(hooks[0].headers["x-cairn-event"], "backup.run.failed");
    assert_eq!(hooks[0].headers["x-cairn-delivery"], body["id"]);
    assert_eq!(hooks[0].headers["content-type"], "application/json");
    let sent_at = chrono::DateTime::parse_from_rfc3339(body["sentAt"].as_str().unwrap()).unwrap();
    assert_eq!(
        hooks[0].headers["x-cairn-timestamp"],
        sent_at.timestamp().to_string()
    );
    assert_eq!(body["organization"]["slug"], "acme");
    assert_eq!(body["organization"]["id"], f.org.id.as_str());
    assert_eq!(body["job"]["name"], "nightly");
    assert_eq!(body["job"]["id"], job.as_str());
    assert_eq!(body["run"]["id"], run["runId"]);
    assert_eq!(body["run"]["status"], "partial");
    assert_eq!(body["summary"]["total"], 2);
    assert_eq!(body["summary"]["failed"], 1);
    assert_eq!(body["summary"]["succeeded"], 1);
    let volumes = body["volumes"].as_array().unwrap();
    let gone = volumes.iter().find(|v| v["volumeName"] == "gone").unwrap();
    assert_eq!(gone["status"], "failed");
    assert_eq!(gone["error"]["code"], "volume_not_found");
    let data = volumes.iter().find(|v| v["volumeName"] == "data").unwrap();
    assert_eq!(data["status"], "success");
    assert_eq!(data["error"], Value::Null);

    let sent = deliveries(&f, &format!("?runId={}", run["runId"].as_str().unwrap())).await;
    assert_eq!(sent.len(), 3);
    for delivery in &sent {
        assert_eq!(delivery["status"], "sent", "{delivery}");
        assert_eq!(delivery["attempts"], 1);
        assert_eq!(delivery["event"], "backup.run.failed");
    }
    let codes: Vec<u64> = sent
        .iter()
        .map(|d| d["responseCode"].as_u64().unwrap())
        .collect();
    assert!(codes.contains(&250) && codes.contains(&200), "{codes:?}");
    // The Slack URL is a secret: never in a response.
    let listing = f
        .app
        .get(&f.org.path("/notifications/deliveries"), &f.org.admin)
        .await;
    assert!(!listing.text.contains(&slack.url));
    let channels = f
        .app
        .get(&f.org.path("/notifications/channels"), &f.org.admin)
        .await;
    assert!(!channels.text.contains(&slack.url), "{}", channels.text);
    assert!(!channels.text.contains(&secret), "{}", channels.text);

    // 2. Every volume present: `backup.run.succeeded`, with the size.
    std::fs::write(f.volume_dir("shop", "blue", "gone").join("b.txt"), b"back").unwrap();
    let run = f.run(&job).await;
    f.drain().await;
    assert_eq!(dispatch(&f, Utc::now()).await.sent, 3);
    let mut archived = 0;
    for backup in run["backups"].as_array().unwrap() {
        archived += f.backup(backup["id"].as_str().unwrap()).await["archiveSize"]
            .as_u64()
            .unwrap();
    }
    let body = webhook.requests()[1].json();
    check_against_schema(&body);
    assert_eq!(body["event"], "backup.run.succeeded");
    assert_eq!(body["summary"]["total"], 2);
    assert_eq!(body["summary"]["archiveBytes"], archived);
    verify_signature(&secret, &webhook.requests()[1]);
    let mails = wait_for_mails(&recipients[1], 2).await;
    let subjects: Vec<&String> = mails.iter().map(|m| &m.headers["subject"]).collect();
    assert!(
        subjects
            .iter()
            .any(|s| s.contains("Backup succeeded: nightly (acme) - 2 volume(s)")),
        "{subjects:?}"
    );
    assert!(slack.requests()[1].json()["text"]
        .as_str()
        .unwrap()
        .contains("Backup succeeded"));

    // 3. Three hours without a scheduler: `backup.run.missed`.
    let now = Utc::now();
    let hourly = f
        .create_job(json!({ "name": "hourly", "schedule": "0 * * * *", "appIds": [app_id], "keepLast": 5, "startingDeadlineSeconds": 60 }))
        .await;
    let three_hours_ago = now - chrono::Duration::hours(3);
    cairn_entity::backup_job::Entity::update_many()
        .col_expr(
            cairn_entity::backup_job::Column::NextRunAt,
            sea_orm::sea_query::Expr::value(three_hours_ago),
        )
        .filter(cairn_entity::backup_job::Column::Id.eq(uuid::Uuid::parse_str(&hourly).unwrap()))
        .exec(&f.app.cairn.db)
        .await
        .unwrap();
    let scheduler = cairn_scheduler::Scheduler::new(
        f.app.cairn.clone(),
        Arc::new(cairn_core::runs::locks::LocalLocks::default()),
        "test".into(),
    );
    let tick = scheduler.tick(now).await.unwrap();
    assert_eq!(tick.missed, 1, "{tick:?}");
    assert_eq!(dispatch(&f, Utc::now()).await.sent, 3);
    let body = webhook.requests()[2].json();
    check_against_schema(&body);
    assert_eq!(body["event"], "backup.run.missed");
    assert_eq!(body["job"]["name"], "hourly");
    assert!(body["run"]["missedCount"].as_u64().unwrap() >= 2, "{body}");
    assert_eq!(body["summary"], Value::Null);
    let mails = wait_for_mails(&recipients[0], 3).await;
    assert!(mails
        .iter()
        .any(|m| m.headers["subject"].contains("Backups missed: hourly (acme)")));
    assert!(slack.requests()[2].json()["text"]
        .as_str()
        .unwrap()
        .contains("Backups missed"));
    // Nothing more went out than one message per event and channel.
    assert_eq!(webhook.requests().len(), 3);
    assert_eq!(slack.requests().len(), 3);
    assert_eq!(mails_to(&recipients[0]).len(), 3);
}

both_backends!(runs_reach_email_slack_and_webhook);

/// A job that does not want success messages gets none; a failing channel
/// does not change the backup's outcome.
#[tokio::test]
async fn success_messages_follow_the_job_and_failures_stay_out_of_backups() {
    let (f, _, slack, webhook, _) = three_channels(Backend::Sqlite, vec![500; 10], vec![]).await;
    std::fs::write(f.volume_dir("shop", "blue", "data").join("a.txt"), b"x").unwrap();
    let app_id = f.create_shop().await;
    let quiet = f
        .create_job(
            json!({ "name": "quiet", "schedule": "0 2 * * *", "appIds": [app_id], "keepLast": 5 }),
        )
        .await;
    let record = f.run_to_end(&quiet).await;
    assert_eq!(record["status"], "success");
    assert!(deliveries(&f, "").await.is_empty());

    // A failed run with a Slack receiver answering 500: the backup record
    // is what the backup did, whatever the channel says.
    let failing = f
        .create_job(json!({ "name": "broken", "schedule": "0 2 * * *", "appIds": [f.create_app(json!({ "name": "other", "volumes": [{ "name": "gone" }] })).await], "keepLast": 5 }))
        .await;
    let record = f.run_to_end(&failing).await;
    assert_eq!(record["status"], "failed");
    let report = dispatch(&f, Utc::now()).await;
    assert_eq!(
        report,
        DispatchReport {
            sent: 2,
            retrying: 1,
            failed: 0
        }
    );
    assert_eq!(slack.requests().len(), 1);
    assert_eq!(webhook.requests().len(), 1);
    let record = f.backup(record["id"].as_str().unwrap()).await;
    assert_eq!(record["status"], "failed");
    assert_eq!(record["errorCode"], "volume_not_found");
}

/// A receiver answering 500 twice, then 200, gets exactly three attempts,
/// spaced by the backoff, and the delivery ends `sent`. Endless 500s end
/// `failed` after `max_attempts`; a 404 ends it at once.
#[tokio::test]
async fn retries_back_off_and_end() {
    let f = fixture_with(Backend::Sqlite, "acme", |config| {
        config.notifications.max_attempts = 4;
        config.notifications.retry_base_seconds = 30;
    })
    .await;
    let flaky = Receiver::start(vec![500, 500]).await;
    let broken = Receiver::start(vec![503; 10]).await;
    let gone = Receiver::start(vec![404]).await;
    let moved = Receiver::start(vec![302]).await;
    for (name, receiver) in [
        ("flaky", &flaky),
        ("broken", &broken),
        ("gone", &gone),
        ("moved", &moved),
    ] {
        f.create_channel(
            json!({ "name": name, "type": "webhook", "config": { "url": receiver.url } }),
        )
        .await;
    }
    let app_id = f
        .create_app(json!({ "name": "shop", "volumes": [{ "name": "gone" }] }))
        .await;
    let job = f
        .create_job(json!({ "name": "nightly", "schedule": "0 2 * * *", "appIds": [app_id], "keepLast": 5 }))
        .await;
    f.run_to_end(&job).await;
    let start = Utc::now();
    let at = |seconds: i64| start + chrono::Duration::seconds(seconds);

    let first = dispatch(&f, at(0)).await;
    assert_eq!((first.sent, first.retrying, first.failed), (0, 2, 2));
    let by_name = |items: &[Value], name: &str| {
        items
            .iter()
            .find(|d| d["channelName"] == name)
            .unwrap()
            .clone()
    };
    let items = deliveries(&f, "").await;
    let gone_delivery = by_name(&items, "gone");
    assert_eq!(gone_delivery["status"], "failed");
    assert_eq!(gone_delivery["responseCode"], 404);
    assert!(gone_delivery["lastError"]
        .as_str()
        .unwrap()
        .contains("404 Not Found"));
    // A redirect is not followed, and not retried.
    let moved_delivery = by_name(&items, "moved");
    assert_eq!(moved_delivery["status"], "failed");
    assert_eq!(moved_delivery["responseCode"], 302);
    assert!(moved_delivery["lastError"]
        .as_str()
        .unwrap()
        .contains("redirects are not followed"));
    let flaky_delivery = by_name(&items, "flaky");
    assert_eq!(flaky_delivery["status"], "pending");
    assert_eq!(flaky_delivery["attempts"], 1);
    assert_eq!(flaky_delivery["responseCode"], 500);
    // The status and a classified reason; never the receiver's body.
    let last_error = flaky_delivery["lastError"].as_str().unwrap();
    assert!(
        last_error.contains("500 Internal Server Error: the receiver failed on its side"),
        "{last_error}"
    );
    assert!(!last_error.contains("receiver says no"), "{last_error}");
    let next =
        chrono::DateTime::parse_from_rfc3339(flaky_delivery["nextAttemptAt"].as_str().unwrap())
            .unwrap();
    // 30 s after the attempt (which began a moment after the pass did).
    let wait = (next.with_timezone(&Utc) - at(0)).num_milliseconds();
    assert!((30_000..31_000).contains(&wait), "{wait} ms");

    // Not due yet: nothing is sent.
    assert!(dispatch(&f, at(29)).await.is_empty());
    assert_eq!(dispatch(&f, at(31)).await.retrying, 2);
    // The second retry waits twice as long.
    assert!(dispatch(&f, at(90)).await.is_empty());
    let third = dispatch(&f, at(92)).await;
    assert_eq!((third.sent, third.retrying), (1, 1));
    let items = deliveries(&f, "").await;
    let flaky_delivery = by_name(&items, "flaky");
    assert_eq!(flaky_delivery["status"], "sent");
    assert_eq!(flaky_delivery["attempts"], 3);
    assert_eq!(flaky_delivery["responseCode"], 200);
    assert_eq!(flaky_delivery["lastError"], Value::Null);
    let requests = flaky.requests();
    assert_eq!(requests.len(), 3);
    let ids: Vec<&String> = requests
        .iter()
        .map(|r| &r.headers["x-cairn-delivery"])
        .collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one delivery id: {ids:?}"
    );
    // No secret, no signature.
    assert!(!requests[0].headers.contains_key("x-cairn-signature"));

    // The fourth attempt of the broken one is its last.
    assert!(dispatch(&f, at(92 + 119)).await.is_empty());
    let last = dispatch(&f, at(92 + 121)).await;
    assert_eq!(last.failed, 1, "{last:?}");
    let broken_delivery = by_name(&deliveries(&f, "").await, "broken");
    assert_eq!(broken_delivery["status"], "failed");
    assert_eq!(broken_delivery["attempts"], 4);
    assert_eq!(broken.requests().len(), 4);
    assert!(dispatch(&f, at(100_000)).await.is_empty());
    assert_eq!(gone.requests().len(), 1);
    assert_eq!(moved.requests().len(), 1);
    let failed = deliveries(&f, "?status=failed").await;
    assert_eq!(failed.len(), 3);
}

/// Two workers closing one run at once queue one delivery per channel; a
/// delivery claimed by a worker that died is sent once its lease expires,
/// by a worker process's own loop.
async fn concurrent_closers_and_restarts(backend: Backend) {
    let f = fixture_with(backend, "acme", |_| {}).await;
    let receivers = [Receiver::start(vec![]).await, Receiver::start(vec![]).await];
    for (i, receiver) in receivers.iter().enumerate() {
        f.create_channel(
            json!({ "name": format!("hook {i}"), "type": "webhook", "config": { "url": receiver.url } }),
        )
        .await;
    }
    let app_id = f
        .create_app(json!({ "name": "shop", "volumes": [{ "name": "gone" }, { "name": "lost" }] }))
        .await;
    let job = f
        .create_job(json!({ "name": "nightly", "schedule": "0 2 * * *", "appIds": [app_id], "keepLast": 5 }))
        .await;
    let run = f.run(&job).await;
    f.drain().await;
    let run_id = uuid::Uuid::parse_str(run["runId"].as_str().unwrap()).unwrap();
    assert_eq!(deliveries(&f, "").await.len(), 2);

    // Reopen the run as if its last backup had just ended, without the
    // deliveries, and let eight closers race.
    let db = &f.app.cairn.db;
    notification_delivery::Entity::delete_many()
        .exec(db)
        .await
        .unwrap();
    cairn_entity::backup_run::Entity::update_many()
        .col_expr(
            cairn_entity::backup_run::Column::Status,
            sea_orm::sea_query::Expr::value("running"),
        )
        .filter(cairn_entity::backup_run::Column::Id.eq(run_id))
        .exec(db)
        .await
        .unwrap();
    let closers = (0..8).map(|_| cairn_core::runs::close(db, run_id, Utc::now()));
    let closed: Vec<_> = futures::future::join_all(closers)
        .await
        .into_iter()
        .map(|outcome| outcome.unwrap())
        .collect();
    assert_eq!(closed.iter().filter(|c| c.is_some()).count(), 1);
    let queued = deliveries(&f, "").await;
    assert_eq!(queued.len(), 2, "{queued:?}");

    // A worker claimed both and died: nothing is sent while its lease
    // holds; afterwards a worker process's loop sends them.
    let held_until = Utc::now() + chrono::Duration::seconds(3);
    notification_delivery::Entity::update_many()
        .col_expr(
            notification_delivery::Column::LeaseOwner,
            sea_orm::sea_query::Expr::value("dead-worker"),
        )
        .col_expr(
            notification_delivery::Column::LeaseExpiresAt,
            sea_orm::sea_query::Expr::value(held_until),
        )
        .col_expr(
            notification_delivery::Column::Attempts,
            sea_orm::sea_query::Expr::value(1),
        )
        .filter(notification_delivery::Column::Status.eq("pending"))
        .exec(db)
        .await
        .unwrap();
    assert!(dispatch(&f, Utc::now()).await.is_empty());
    let (stop, stopped) = watch::channel(false);
    let process = worker(&f.app, Duration::from_secs(30));
    let running = tokio::spawn(async move { process.run(stopped).await });
    for _ in 0..100 {
        if receivers.iter().all(|r| r.requests().len() == 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.send(true).unwrap();
    running.await.unwrap();
    for receiver in &receivers {
        assert_eq!(receiver.requests().len(), 1);
    }
    assert!(Utc::now() >= held_until);
    for delivery in deliveries(&f, "").await {
        assert_eq!(delivery["status"], "sent", "{delivery}");
        assert_eq!(delivery["attempts"], 2);
    }

    // Deliveries whose last attempt's sender died with no attempt left end
    // `failed` once the lease expires, without another send.
    let run = f.run(&job).await;
    f.drain().await;
    let run_id = run["runId"].as_str().unwrap();
    let held_until = Utc::now() - chrono::Duration::seconds(1);
    notification_delivery::Entity::update_many()
        .col_expr(
            notification_delivery::Column::LeaseOwner,
            sea_orm::sea_query::Expr::value("dead-worker"),
        )
        .col_expr(
            notification_delivery::Column::LeaseExpiresAt,
            sea_orm::sea_query::Expr::value(held_until),
        )
        .col_expr(
            notification_delivery::Column::Attempts,
            sea_orm::sea_query::Expr::value(8),
        )
        .filter(notification_delivery::Column::Status.eq("pending"))
        .exec(db)
        .await
        .unwrap();
    let report = dispatch(&f, Utc::now()).await;
    assert_eq!((report.sent, report.failed), (0, 2), "{report:?}");
    for delivery in deliveries(&f, &format!("?runId={run_id}")).await {
        assert_eq!(delivery["status"], "failed", "{delivery}");
        assert!(delivery["lastError"]
            .as_str()
            .unwrap()
            .contains("never recorded"));
    }
    for receiver in &receivers {
        assert_eq!(receiver.requests().len(), 1);
    }
}

both_backends!(concurrent_closers_and_restarts);

/// A restore that fails (a flipped byte in the archive) notifies
/// `restore.failed` with the error, whatever the job's settings.
#[tokio::test]
async fn failed_restores_notify() {
    let webhook = Receiver::start(vec![]).await;
    let f = fixture_with(Backend::Sqlite, "acme", |_| {}).await;
    f.create_channel(
        json!({ "name": "hook", "type": "webhook", "config": { "url": webhook.url, "secret": "0123456789abcdef" } }),
    )
    .await;
    std::fs::write(f.volume_dir("shop", "blue", "data").join("a.txt"), b"x").unwrap();
    let app_id = f.create_shop().await;
    let job = f
        .create_job_for(&app_id, json!({ "keepLast": 1, "notifyOnFailure": false }))
        .await;
    let record = f.run_to_end(&job).await;
    let stored = f.stored(record["storagePath"].as_str().unwrap());
    let mut bytes = std::fs::read(&stored).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&stored, bytes).unwrap();
    let restored = f
        .restore_to_end(record["id"].as_str().unwrap(), json!({}))
        .await;
    assert_eq!(restored["errorCode"], "checksum_mismatch");
    assert_eq!(dispatch(&f, Utc::now()).await.sent, 1);
    let requests = webhook.requests();
    assert_eq!(requests.len(), 1);
    verify_signature("0123456789abcdef", &requests[0]);
    let body = requests[0].json();
    check_against_schema(&body);
    assert_eq!(body["event"], "restore.failed");
    assert_eq!(body["restore"]["id"], restored["id"]);
    assert_eq!(body["restore"]["backupId"], record["id"]);
    assert_eq!(body["restore"]["appName"], "shop");
    assert_eq!(body["restore"]["volumeName"], "data");
    assert_eq!(body["restore"]["error"]["code"], "checksum_mismatch");
    assert_eq!(body["job"], Value::Null);
    let listed = deliveries(
        &f,
        &format!("?restoreId={}", restored["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["event"], "restore.failed");
}

/// Channels: create, read, update (secrets kept or removed), delete;
/// refused input names the field; the Slack URL and the webhook secret are
/// sealed and never returned.
#[tokio::test]
async fn channels_are_managed_and_checked() {
    let app = spawn_app(Backend::Sqlite).await;
    let (org, other) = app.two_orgs().await;
    let channels = org.path("/notifications/channels");
    let slack_url = "http://127.0.0.1:9/services/T000/B000/very-secret-token";
    let slack = app
        .post(
            &channels,
            &org.admin,
            &json!({ "name": "alerts", "type": "slack", "config": { "url": slack_url } }),
        )
        .await;
    let slack_id = slack.expect(201)["id"].as_str().unwrap().to_owned();
    assert_eq!(slack.body["config"], json!({ "urlSet": true }));
    assert!(!slack.text.contains("very-secret-token"));
    // Nothing listens there: the report names the host, never the URL.
    let report = app
        .post(
            &format!("{channels}/{slack_id}/test"),
            &org.operator,
            &json!({}),
        )
        .await;
    assert_eq!(report.expect(200)["ok"], false);
    assert!(report.body["error"].as_str().unwrap().contains("127.0.0.1"));
    assert!(
        !report.text.contains("very-secret-token"),
        "{}",
        report.text
    );
    let hook = app
        .post(
            &channels,
            &org.admin,
            &json!({ "name": "hook", "type": "webhook", "config": { "url": "https://hooks.example.test/cairn?x=1", "secret": "a-very-long-secret-value" } }),
        )
        .await;
    let hook_id = hook.expect(201)["id"].as_str().unwrap().to_owned();
    assert_eq!(
        hook.body["config"],
        json!({ "url": "https://hooks.example.test/cairn?x=1", "secretSet": true })
    );
    assert!(!hook.text.contains("a-very-long-secret-value"));
    let stored: Vec<String> = cairn_entity::notification_channel::Entity::find()
        .all(&app.cairn.db)
        .await
        .unwrap()
        .into_iter()
        .map(|c| format!("{} {:?}", c.config, c.secrets_ciphertext))
        .collect();
    assert!(!stored.iter().any(|s| s.contains("very-secret-token")));
    assert!(!stored
        .iter()
        .any(|s| s.contains("a-very-long-secret-value")));

    // Update without secrets keeps them; `""` removes the webhook's.
    let updated = app
        .put(
            &format!("{channels}/{slack_id}"),
            &org.admin,
            &json!({ "name": "alerts 2", "type": "slack", "enabled": false, "config": {} }),
        )
        .await;
    assert_eq!(updated.expect(200)["config"]["urlSet"], true);
    assert_eq!(updated.body["enabled"], false);
    let updated = app
        .put(
            &format!("{channels}/{hook_id}"),
            &org.admin,
            &json!({ "name": "hook", "type": "webhook", "config": { "url": "https://hooks.example.test/v2", "secret": "" } }),
        )
        .await;
    assert_eq!(updated.expect(200)["config"]["secretSet"], false);
    let listed = app.get(&channels, &org.viewer).await;
    assert_eq!(listed.expect(200)["items"].as_array().unwrap().len(), 2);
    assert!(!listed.text.contains("very-secret-token"));

    // Refusals, each naming its field; nothing is written.
    for (body, field) in [
        (
            json!({ "name": "meta", "type": "slack", "config": { "url": "http://169.254.169.254/latest/meta-data" } }),
            "config.url",
        ),
        (
            json!({ "name": "meta6", "type": "webhook", "config": { "url": "http://[::ffff:169.254.169.254]/x" } }),
            "config.url",
        ),
        (
            json!({ "name": "ftp", "type": "webhook", "config": { "url": "ftp://example.test/x" } }),
            "config.url",
        ),
        (
            json!({ "name": "creds", "type": "webhook", "config": { "url": "https://u:p@example.test/x" } }),
            "config.url",
        ),
        (
            json!({ "name": "short", "type": "webhook", "config": { "url": "https://example.test/x", "secret": "short" } }),
            "config.secret",
        ),
        (
            json!({ "name": "none", "type": "slack", "config": {} }),
            "config.url",
        ),
        (
            json!({ "name": "mixed", "type": "slack", "config": { "url": "https://example.test/x", "recipients": ["a@b.test"] } }),
            "config.recipients",
        ),
        (
            json!({ "name": "", "type": "webhook", "config": { "url": "https://example.test/x" } }),
            "name",
        ),
        (
            json!({ "name": "mail", "type": "email", "config": { "recipients": ["ops@example.test"] } }),
            "type",
        ),
        (
            json!({ "name": "pager", "type": "pager", "config": {} }),
            "type",
        ),
    ] {
        app.post(&channels, &org.admin, &body)
            .await
            .expect_field_error(422, field);
    }
    app.post(
        &channels,
        &org.admin,
        &json!({ "name": "hook", "type": "webhook", "config": { "url": "https://example.test/x" } }),
    )
    .await
    .expect_field_error(409, "name");
    assert_eq!(
        app.get(&channels, &org.viewer).await.body["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Roles and tenancy.
    app.post(
        &channels,
        &org.operator,
        &json!({ "name": "x", "type": "webhook", "config": { "url": "https://example.test/x" } }),
    )
    .await
    .expect(403);
    app.get(
        &other.path(&format!("/notifications/channels/{hook_id}")),
        &other.admin,
    )
    .await
    .expect(404);
    app.delete(&format!("{channels}/{hook_id}"), &org.viewer)
        .await
        .expect(403);
    app.delete(&format!("{channels}/{hook_id}"), &org.admin)
        .await
        .expect(204);
    app.get(&format!("{channels}/{hook_id}"), &org.admin)
        .await
        .expect(404);
    app.get(
        &org.path("/notifications/deliveries?status=lost"),
        &org.viewer,
    )
    .await
    .expect_field_error(422, "status");
}

/// Email channels: recipients are checked; the test endpoint sends through
/// STARTTLS, implicit TLS and a plain connection, and reports a refused
/// login without the password.
#[tokio::test]
async fn email_channels_send_over_every_tls_mode() {
    for (tls, port, username) in [
        (SmtpTls::Starttls, "TEST_SMTP_STARTTLS_PORT", true),
        (SmtpTls::Tls, "TEST_SMTPS_PORT", true),
        (SmtpTls::None, "TEST_SMTP_PORT", false),
    ] {
        let f = fixture_with(Backend::Sqlite, "acme", |config| {
            let mut smtp = smtp_starttls();
            smtp.tls = tls;
            smtp.port = Some(env(port).parse().unwrap());
            if !username {
                smtp.username = None;
                smtp.password = None;
            }
            config.notifications.smtp = Some(smtp);
        })
        .await;
        let channels = f.org.path("/notifications/channels");
        f.app
            .post(
                &channels,
                &f.org.admin,
                &json!({ "name": "mail", "type": "email", "config": { "recipients": ["ops@example.test", "not an address"] } }),
            )
            .await
            .expect_field_error(422, "config.recipients[1]");
        f.app
            .post(
                &channels,
                &f.org.admin,
                &json!({ "name": "mail", "type": "email", "config": { "recipients": ["a@example.test", "A@example.test"] } }),
            )
            .await
            .expect_field_error(422, "config.recipients[1]");
        let recipient = format!("{}@example.test", unique("tls"));
        let id = f
            .create_channel(
                json!({ "name": "mail", "type": "email", "config": { "recipients": [recipient] } }),
            )
            .await;
        let report = f.test_channel(&id).await;
        assert_eq!(report.expect(200)["ok"], true, "{tls:?}: {}", report.text);
        assert_eq!(report.body["responseCode"], 250);
        let mails = wait_for_mails(&recipient, 1).await;
        assert_eq!(mails.len(), 1, "{tls:?}");
        assert!(mails[0].headers["subject"].contains("Test notification for acme"));
    }

    // A wrong password: the report says the login failed, never the password.
    let f = fixture_with(Backend::Sqlite, "acme", |config| {
        let mut smtp = smtp_starttls();
        smtp.password = Some(secrecy::SecretString::from(
            "wrong-smtp-password".to_owned(),
        ));
        config.notifications.smtp = Some(smtp);
    })
    .await;
    let id = f
        .create_channel(
            json!({ "name": "mail", "type": "email", "config": { "recipients": ["ops@example.test"] } }),
        )
        .await;
    let report = f.test_channel(&id).await;
    assert_eq!(report.expect(200)["ok"], false);
    assert_eq!(report.body["responseCode"], 535, "{}", report.text);
    assert!(!report.text.contains("wrong-smtp-password"));
}

/// The test endpoint of a webhook sends a signed `notification.test`; an
/// endpoint that does not answer is reported, not an error.
#[tokio::test]
async fn webhook_tests_report_the_outcome() {
    let receiver = Receiver::start(vec![]).await;
    let f = fixture_with(Backend::Sqlite, "acme", |config| {
        config.notifications.timeout_seconds = 1;
    })
    .await;
    let channels = f.org.path("/notifications/channels");
    let id = f
        .create_channel(
            json!({ "name": "hook", "type": "webhook", "config": { "url": receiver.url, "secret": "0123456789abcdef" } }),
        )
        .await;
    let report = f
        .app
        .post(&format!("{channels}/{id}/test"), &f.org.viewer, &json!({}))
        .await;
    report.expect(403);
    let report = f.test_channel(&id).await;
    assert_eq!(report.expect(200)["ok"], true, "{}", report.text);
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    verify_signature("0123456789abcdef", &requests[0]);
    let body = requests[0].json();
    check_against_schema(&body);
    assert_eq!(body["event"], "notification.test");

    // A listener that never answers: the attempt times out.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!(
        "http://127.0.0.1:{}/never",
        silent.local_addr().unwrap().port()
    );
    let id = f
        .create_channel(
            json!({ "name": "silent", "type": "webhook", "config": { "url": silent_url } }),
        )
        .await;
    let report = f.test_channel(&id).await;
    assert_eq!(report.expect(200)["ok"], false);
    assert!(
        report.body["error"]
            .as_str()
            .unwrap()
            .contains("did not answer within 1 s"),
        "{}",
        report.text
    );
    drop(silent);
}

/// A verification's outcome reaches every channel once: a success (the job
/// notifies successes) as `backup.verification.succeeded`, a failure — the
/// stored archive damaged — as `backup.verification.failed`, with the
/// failed check and its code, in the versioned payload.
#[tokio::test]
async fn verifications_reach_email_and_webhook() {
    let (f, recipients, _slack, webhook, secret) =
        three_channels(Backend::Sqlite, vec![], vec![]).await;
    crate::helpers::restorable_volume(&f.volume_dir("shop", "blue", "data"), 1);
    let app_id = f.create_shop().await;
    let job = f
        .create_job(
            json!({ "name": "nightly", "schedule": "0 2 * * *", "appIds": [app_id],
                             "keepLast": 5, "notifyOnSuccess": true }),
        )
        .await;
    let record = f.run_to_end(&job).await;
    assert_eq!(record["status"], "success", "{record}");
    let backup_id = record["id"].as_str().unwrap().to_owned();
    // The run's own success, out of the way.
    assert_eq!(dispatch(&f, Utc::now()).await.sent, 3);
    wait_for_mails(&recipients[0], 1).await;

    let verify = || async {
        let requested = f
            .app
            .post(
                &f.org.path(&format!("/backups/history/{backup_id}/verify")),
                &f.org.operator,
                &json!({ "mode": "read" }),
            )
            .await
            .expect(202)
            .clone();
        f.drain().await;
        requested["id"].as_str().unwrap().to_owned()
    };

    let succeeded = verify().await;
    let queued = deliveries(&f, &format!("?verificationId={succeeded}")).await;
    assert_eq!(queued.len(), 3, "{queued:?}");
    assert!(queued
        .iter()
        .all(|d| d["event"] == "backup.verification.succeeded"
            && d["verificationId"] == succeeded.as_str()));
    assert_eq!(dispatch(&f, Utc::now()).await.sent, 3);
    let hooks = webhook.requests();
    let body = hooks.last().unwrap().json();
    verify_signature(&secret, hooks.last().unwrap());
    check_against_schema(&body);
    assert_eq!(body["event"], "backup.verification.succeeded");
    assert_eq!(body["job"]["id"], job.as_str());
    assert_eq!(body["verification"]["id"], succeeded.as_str());
    assert_eq!(body["verification"]["backupId"], backup_id.as_str());
    assert_eq!(body["verification"]["status"], "success");
    assert_eq!(body["verification"]["mode"], "read");
    assert_eq!(body["verification"]["error"], Value::Null);
    assert!(!body["verification"]["checks"]
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(body["run"], Value::Null);
    let mails = wait_for_mails(&recipients[0], 2).await;
    let subjects: Vec<&str> = mails
        .iter()
        .map(|m| m.headers["subject"].as_str())
        .collect();
    assert!(
        subjects
            .iter()
            .any(|s| s.contains("Verification succeeded: shop/data (nightly, acme)")),
        "{subjects:?}"
    );

    let stored = f.stored(record["storagePath"].as_str().unwrap());
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[10] ^= 0x01;
    std::fs::write(&stored, bytes).unwrap();
    let failed = verify().await;
    assert_eq!(
        deliveries(&f, &format!("?verificationId={failed}"))
            .await
            .len(),
        3
    );
    assert_eq!(dispatch(&f, Utc::now()).await.sent, 3);
    let body = webhook.requests().last().unwrap().json();
    check_against_schema(&body);
    assert_eq!(body["event"], "backup.verification.failed");
    assert_eq!(body["verification"]["id"], failed.as_str());
    assert_eq!(body["verification"]["status"], "failed");
    assert_eq!(body["verification"]["error"]["code"], "checksum_mismatch");
    let mails = wait_for_mails(&recipients[0], 3).await;
    let mail = mails
        .iter()
        .find(|m| m.headers["subject"].contains("Verification failed: shop/data (nightly, acme)"))
        .expect("the failure's mail");
    assert!(
        mail.body.contains("Error: checksum_mismatch"),
        "{}",
        mail.body
    );
    assert!(mail.body.contains("Failed check sha256"), "{}", mail.body);
}

/// A local target below `disk.warn_free_mb` (a threshold above the free
/// space: mounting a small file system needs privileges a test cannot count
/// on) is notified as `target.low_space`, by email and webhook, once a day
/// however many backups see it.
#[tokio::test]
async fn low_space_reaches_email_and_webhook_once_a_day() {
    let f = fixture_with(Backend::Sqlite, "acme", |config| {
        config.notifications.smtp = Some(smtp_starttls());
        config.disk.warn_free_mb = u64::MAX / (2 * 1024 * 1024);
    })
    .await;
    let recipient = format!("{}@ops.example.test", unique("disk"));
    let webhook = Receiver::start(vec![]).await;
    let secret = format!("whsec-{}", unique("s"));
    for body in [
        json!({ "name": "ops mail", "type": "email", "config": { "recipients": [recipient] } }),
        json!({ "name": "hook", "type": "webhook", "config": { "url": webhook.url, "secret": secret } }),
    ] {
        f.create_channel(body).await;
    }
    crate::helpers::restorable_volume(&f.volume_dir("shop", "blue", "data"), 1);
    let app_id = f.create_shop().await;
    let job = f
        .create_job_for(&app_id, json!({ "name": "nightly", "keepLast": 5 }))
        .await;
    let first = f.run_to_end(&job).await;
    let second = f.run_to_end(&job).await;
    assert_eq!(first["status"], "success", "{first}");
    assert_eq!(second["status"], "success", "{second}");
    let target = first["targetId"].as_str().unwrap();
    let queued = deliveries(&f, "").await;
    assert_eq!(
        queued.len(),
        2,
        "one per channel, not per backup: {queued:?}"
    );
    assert!(queued.iter().all(|d| d["event"] == "target.low_space"));
    assert_eq!(dispatch(&f, Utc::now()).await.sent, 2);
    let hooks = webhook.requests();
    assert_eq!(hooks.len(), 1);
    verify_signature(&secret, &hooks[0]);
    let body = hooks[0].json();
    check_against_schema(&body);
    assert_eq!(body["event"], "target.low_space");
    assert_eq!(body["lowSpace"]["targetId"], target);
    assert_eq!(body["lowSpace"]["targetName"], "System default");
    assert!(body["lowSpace"]["freeBytes"].as_u64().unwrap() > 0);
    assert_eq!(body["run"], Value::Null);
    let mails = wait_for_mails(&recipient, 1).await;
    let subject = &mails[0].headers["subject"];
    assert!(
        subject.starts_with("[Cairn] Low disk space: target 'System default' has"),
        "{subject}"
    );
    assert!(
        mails[0].body.contains("disk.warn_free_mb"),
        "{}",
        mails[0].body
    );
    // A third backup the same day adds nothing.
    f.run_to_end(&job).await;
    assert_eq!(deliveries(&f, "").await.len(), 2);
}
