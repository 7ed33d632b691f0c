//! What the test files share; they import it as `crate::helpers::…`.
//!
//! This file: `spawn_app()`, the real API built by the same
//! `Application::build` that `cairn serve` uses, on port 0, against a fresh
//! database of its own — a new SQLite file, or a new database on the
//! PostgreSQL server that `scripts/test.sh` starts (`TEST_POSTGRES_URL`) —
//! with `TestApp`, `Reply`, `Org` and request bodies. Beside it:
//!
//! - `fixture.rs`: `Fixture` (an app with a volume root and an organization
//!   of its own, and the set-up steps tests repeat: apps, jobs, runs,
//!   targets, channels, restores), in-process `worker`s and `drain`;
//! - `services.rs`: the services `scripts/test.sh` starts (`TEST_*`): target
//!   requests for its S3 server and sshd, `psql`, a fault-injecting proxy;
//! - `process.rs`: the `cairn` binary as a child process, `run_ok`;
//! - `trees.rs`: volume trees built, described and extracted with GNU tar,
//!   and raw tar streams;
//! - `receiver.rs`: an HTTP receiver on loopback that records requests;
//! - `records.rs`: backup records written as a worker writes them;
//! - `tenant.rs`: one organization with one resource of every kind;
//! - `logging.rs`: `TEST_LOG`, the server's logs in a failing test's output.

mod fixture;
mod logging;
mod process;
mod receiver;
mod records;
mod services;
mod tenant;
mod trees;

pub use fixture::{drain, fixture, fixture_with, worker, Fixture};
pub use logging::test_log_filter;
pub use process::{cairn_process, run_ok};
pub use receiver::{Received, Receiver};
pub use records::{seed, Seed};
pub use services::{
    create_orders, env, mariadb, mariadb_as, mysql_server, mysql_volume, postgres_volume, psql,
    s3_objects, s3_target_from_env, ssh_target_from_env, unique, FaultProxy,
};
pub use tenant::{snapshot, tenant, Tenant};
pub use trees::{
    build_volume, describe, extract, raw_tar, restorable_volume, LEFT_OUT_BY_CACHE_AND_TMP,
};

use std::net::TcpListener;

use cairn_api::{Application, ApplicationOptions};
use cairn_core::{Cairn, Config, StartMode};
use reqwest::{Method, Response, StatusCode};
use sea_orm::{ConnectionTrait, Database};
use secrecy::SecretString;
use serde_json::{json, Value};
use tempfile::TempDir;
use uuid::Uuid;

/// The database a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs an async test body once on SQLite and once on PostgreSQL:
/// `both_backends!(name)` for `async fn name(backend: Backend)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
                #[tokio::test]
                async fn postgres() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            }
        )*
    };
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    /// A system administrator token (`CAIRN_ADMIN_TOKEN`).
    pub admin_token: String,
    pub cairn: Cairn,
    /// Holds the SQLite file and master key; removed when the app is
    /// dropped (`None` once handed to [`Stopped`]).
    data_dir: Option<TempDir>,
    handle: actix_web::dev::ServerHandle,
}

/// A test app that was shut down: its configuration and data directory,
/// to start it again (on a database a test wiped and restored meanwhile).
pub struct Stopped {
    pub config: Config,
    data_dir: TempDir,
    admin_token: String,
}

impl TestApp {
    /// Stops the server and closes the database pool, keeping the data
    /// directory.
    pub async fn shut_down(mut self) -> Stopped {
        self.handle.stop(true).await;
        let _ = self.cairn.db.clone().close().await;
        Stopped {
            config: (*self.cairn.config).clone(),
            data_dir: self
                .data_dir
                .take()
                .expect("a running app has its data directory"),
            admin_token: self.admin_token.clone(),
        }
    }
}

impl Stopped {
    /// Starts the app again: `Cairn::open` (migrations included) on the
    /// same configuration.
    pub async fn start(self) -> TestApp {
        let cairn = Cairn::open(self.config, StartMode::Embedded)
            .await
            .expect("open Cairn again");
        serve(cairn, self.data_dir, self.admin_token)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        // Stopping is asynchronous; the runtime of the test ends right after.
        drop(tokio::spawn(async move { handle.stop(false).await }));
    }
}

/// A fresh, empty database URL for `backend`.
pub async fn fresh_database(backend: Backend, data_dir: &std::path::Path) -> String {
    match backend {
        Backend::Sqlite => format!("sqlite://{}?mode=rwc", data_dir.join("cairn.db").display()),
        Backend::Postgres => {
            let server = std::env::var("TEST_POSTGRES_URL").expect(
                "TEST_POSTGRES_URL is not set: run the tests with scripts/test.sh, which starts PostgreSQL",
            );
            let name = format!("cairn_test_{}", Uuid::now_v7().simple());
            let admin = Database::connect(server.as_str())
                .await
                .expect("connect to the test PostgreSQL server");
            admin
                .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                .await
                .expect("create a test database");
            admin.close().await.ok();
            let mut url = url::Url::parse(&server).expect("TEST_POSTGRES_URL is a URL");
            url.set_path(&name);
            url.to_string()
        }
    }
}

/// Empties the database the way a lost disk or a dropped database would.
pub async fn wipe_database(backend: Backend, database_url: &str) {
    match backend {
        Backend::Sqlite => {
            let file = database_url
                .strip_prefix("sqlite://")
                .and_then(|rest| rest.split('?').next())
                .unwrap();
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{file}{suffix}"));
            }
        }
        Backend::Postgres => {
            let url = url::Url::parse(database_url).unwrap();
            let name = url.path().trim_start_matches('/').to_owned();
            let server = sea_orm::Database::connect(std::env::var("TEST_POSTGRES_URL").unwrap())
                .await
                .unwrap();
            server
                .execute_unprepared(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
                .await
                .unwrap();
            server
                .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                .await
                .unwrap();
            server.close().await.ok();
        }
    }
}

/// The configuration of a test app: every default, rooted in `data_dir`.
pub fn test_config(data_dir: &std::path::Path, database_url: String, admin_token: &str) -> Config {
    let mut config = Config::with_data_dir(data_dir);
    config.database_url = Some(SecretString::from(database_url));
    config.admin_token = Some(SecretString::from(admin_token.to_owned()));
    // Targets that tests make unreachable give up after seconds, not the
    // production quarter of an hour.
    config.storage.retry_budget_seconds = 10;
    // A tick near 01:30 UTC would otherwise queue a self-backup for the
    // next worker; the tests of self-backups turn them on.
    config.system_backup.enabled = false;
    // Likewise a worker's housekeeping near 04:00 UTC would sweep the
    // targets; the tests of sweeps run them themselves.
    config.orphans.enabled = false;
    config
}

/// The database URL a test app runs on (for a second process).
pub fn database_url_of(app: &TestApp) -> String {
    use secrecy::ExposeSecret;
    app.cairn
        .config
        .database_url
        .as_ref()
        .expect("test apps set a database URL")
        .expose_secret()
        .to_owned()
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

pub async fn spawn_app_with(backend: Backend, customize: impl FnOnce(&mut Config)) -> TestApp {
    logging::init();
    let data_dir = tempfile::tempdir().expect("a temporary directory");
    let database_url = fresh_database(backend, data_dir.path()).await;
    let admin_token = format!("test-admin-{}", Uuid::now_v7().simple());
    let mut config = test_config(data_dir.path(), database_url, &admin_token);
    customize(&mut config);
    let cairn = Cairn::open(config, StartMode::Embedded)
        .await
        .expect("open Cairn");
    serve(cairn, data_dir, admin_token)
}

/// Serves `cairn` on a free port.
fn serve(cairn: Cairn, data_dir: TempDir, admin_token: String) -> TestApp {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let app = Application::build(
        cairn.clone(),
        listener,
        ApplicationOptions { workers: Some(1) },
    )
    .expect("build the application");
    let address = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // Well under the server's keep-alive (5 s): a test that blocks
            // (extracting a large archive) must not reuse a connection the
            // server has closed meanwhile.
            .pool_idle_timeout(std::time::Duration::from_secs(1))
            .build()
            .expect("an HTTP client"),
        admin_token,
        cairn,
        data_dir: Some(data_dir),
        handle,
    }
}

/// A response read whole: status, headers and JSON body (`Value::Null`
/// when the body is empty).
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub async fn from(response: Response) -> Reply {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("a response body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::Null)
        };
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    /// Asserts the status, and that every error is a problem document.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text
        );
        if status >= 400 {
            self.assert_problem();
        }
        &self.body
    }

    #[track_caller]
    pub fn assert_problem(&self) {
        let content_type = self
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert_eq!(
            content_type, "application/problem+json",
            "body: {}",
            self.text
        );
        assert_eq!(
            self.body["status"].as_u64(),
            Some(u64::from(self.status.as_u16()))
        );
        assert!(
            self.body["type"].as_str().is_some_and(|t| !t.is_empty()),
            "{}",
            self.text
        );
        assert!(
            self.body["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{}",
            self.text
        );
        assert!(
            self.body["detail"].as_str().is_some_and(|t| !t.is_empty()),
            "{}",
            self.text
        );
    }

    /// Asserts a failure with `status` whose `errors` name `field`.
    #[track_caller]
    pub fn expect_field_error(&self, status: u16, field: &str) {
        self.expect(status);
        let fields: Vec<&str> = self.body["errors"]
            .as_array()
            .map(|errors| errors.iter().filter_map(|e| e["field"].as_str()).collect())
            .unwrap_or_default();
        assert!(
            fields.contains(&field),
            "expected an error for `{field}`, got {fields:?}: {}",
            self.text
        );
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        Reply::from(request.send().await.expect("the request is sent")).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.request(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> Reply {
        self.request(Method::POST, path, Some(token), Some(body))
            .await
    }

    pub async fn put(&self, path: &str, token: &str, body: &Value) -> Reply {
        self.request(Method::PUT, path, Some(token), Some(body))
            .await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Reply {
        self.request(Method::DELETE, path, Some(token), None).await
    }

    /// Creates an organization as the administrator; returns its id.
    pub async fn create_org(&self, slug: &str) -> String {
        let reply = self
            .post(
                "/api/v1/organizations",
                &self.admin_token,
                &json!({ "slug": slug, "name": format!("Org {slug}") }),
            )
            .await;
        reply.expect(201)["id"].as_str().expect("an id").to_owned()
    }

    /// Creates a token of `role` for the organization; returns the token.
    pub async fn org_token(&self, org_id: &str, role: &str) -> String {
        let reply = self
            .post(
                &format!("/api/v1/organizations/{org_id}/tokens"),
                &self.admin_token,
                &json!({ "name": format!("{role} token"), "role": role }),
            )
            .await;
        reply.expect(201)["token"]
            .as_str()
            .expect("a token")
            .to_owned()
    }

    /// Two organizations with an admin, operator and viewer token each.
    pub async fn two_orgs(&self) -> (Org, Org) {
        (self.org("alpha").await, self.org("beta").await)
    }

    pub async fn org(&self, slug: &str) -> Org {
        let id = self.create_org(slug).await;
        Org {
            admin: self.org_token(&id, "admin").await,
            operator: self.org_token(&id, "operator").await,
            viewer: self.org_token(&id, "viewer").await,
            id,
        }
    }
}

/// An organization and a token for each role.
#[derive(Clone)]
pub struct Org {
    pub id: String,
    pub admin: String,
    pub operator: String,
    pub viewer: String,
}

impl Org {
    pub fn path(&self, rest: &str) -> String {
        format!("/api/v1/organizations/{}{}", self.id, rest)
    }
}

/// A loopback port that nothing listens on (until someone binds it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a port")
        .local_addr()
        .expect("a local address")
        .port()
}

/// An S3 target request with `secret` as its secret key.
pub fn s3_target(name: &str, secret: &str) -> Value {
    json!({
        "name": name,
        "type": "s3",
        "config": {
            "bucket": "cairn-backups",
            "region": "eu-west-1",
            "accessKeyId": "AKIATESTKEY",
            "secretAccessKey": secret,
            "endpoint": "http://127.0.0.1:9000",
            "prefix": "prod/"
        }
    })
}

/// A job request covering `app_ids`.
pub fn job(name: &str, app_ids: &[&str]) -> Value {
    json!({
        "name": name,
        "schedule": "0 2 * * *",
        "appIds": app_ids,
        "keepLast": 1,
        "keepDaily": 7
    })
}

/// An unencrypted ed25519 key made for these tests only (it opens nothing).
pub const TEST_PRIVATE_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACC6K3Agg//YDp+QJ7IZRZitZQKU+ZIm/JDskMReA+lSbwAAAJCGXBU+hlwV
PgAAAAtzc2gtZWQyNTUxOQAAACC6K3Agg//YDp+QJ7IZRZitZQKU+ZIm/JDskMReA+lSbw
AAAECmIRigy3ZbcNpuVWbNoCPOjfzw+7su1zNMgVbFDOOq7borcCCD/9gOn5AnshlFmK1l
ApT5kib8kOyQxF4D6VJvAAAACmNhaXJuLXRlc3QBAgM=
-----END OPENSSH PRIVATE KEY-----
";

/// The same kind of key, encrypted with a passphrase.
pub const TEST_ENCRYPTED_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAACmFlczI1Ni1jdHIAAAAGYmNyeXB0AAAAGAAAABDR/DIXkW
Ega1BFoL5+VnVzAAAAEAAAAAEAAAAzAAAAC3NzaC1lZDI1NTE5AAAAIIdXPLGDMKciKbng
trgOw1QjhIyez6aH+NbiIQaKjw+gAAAAkDkbqp2rauhlghEOiWhNLiYzHQYeIq0nEPQEPb
rbQHCv+sGXa1u0YyM7K8e5LRLwiByyRv0QQp2YndAMPvEZuqCjitokm6fN1NLZ1j0qPf+0
GZq9cyA3Vk6O/LJ707QQiFgWtqZaL3z6J6XBf1iRYHjgsn3f2DFrSCMogGvPhY3xYzdGgS
b90ay6pDZGHHEybQ==
-----END OPENSSH PRIVATE KEY-----
";
