//! The real `cairn` binary, started as a user starts it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{free_port, fresh_database, s3_target, test_log_filter, Backend, Reply};

both_backends!(serve_prints_its_token_once_and_keeps_secrets_out_of_logs);

const S3_SECRET: &str = "S3-secret-that-must-never-be-logged-5b1f";
const PG_PASSWORD: &str = "pg-password-that-must-never-be-logged-77c2";
const NUMERIC_SECRET: u64 = 918_273_645_546_372;

/// `cairn` with a clean `CAIRN_*` environment, run in `dir`.
fn cairn(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cairn"));
    command.current_dir(dir);
    for (key, _) in std::env::vars() {
        if key.starts_with("CAIRN_") {
            command.env_remove(key);
        }
    }
    command
}

struct Server {
    child: Child,
    base: String,
    /// Where its stderr goes (`stderr.log` in its directory).
    stderr_log: PathBuf,
}

/// With `TEST_LOG` set, a test that fails shows the server's stderr.
impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() && test_log_filter().is_some() {
            let log = std::fs::read_to_string(&self.stderr_log).unwrap_or_default();
            eprintln!("[cairn {}] stderr:\n{log}", self.child.id());
        }
    }
}

impl Server {
    fn start(dir: &Path, envs: &[(&str, String)]) -> Server {
        Server::start_role(dir, "serve", envs)
    }

    /// `cairn <role>` (a role that serves the API).
    fn start_role(dir: &Path, role: &str, envs: &[(&str, String)]) -> Server {
        let port = free_port();
        let stdout = std::fs::File::create(dir.join("stdout.log")).unwrap();
        let stderr_log = dir.join("stderr.log");
        let stderr = std::fs::File::create(&stderr_log).unwrap();
        let child = cairn(dir)
            .arg(role)
            .env("CAIRN_LISTEN", format!("127.0.0.1:{port}"))
            .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("start cairn");
        Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            stderr_log,
        }
    }

    async fn wait_ready(&mut self, dir: &Path) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(response) = reqwest::get(format!("{}/readyz", self.base)).await {
                if response.status() == 200 {
                    return;
                }
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "cairn serve exited with {status}: {}",
                    std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("cairn serve did not become ready");
    }

    /// SIGTERM, then the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                self.child.kill().ok();
                panic!("cairn serve did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> Reply {
        let mut request = reqwest::Client::new()
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        Reply::from(request.send().await.unwrap()).await
    }
}

fn extract_token(stdout: &str) -> String {
    let start = stdout.find("cairn_").expect("a token on stdout");
    stdout[start..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

async fn serve_prints_its_token_once_and_keeps_secrets_out_of_logs(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut envs = vec![
        ("CAIRN_LOG_FORMAT", "json".to_owned()),
        ("CAIRN_LOG", "debug".to_owned()),
    ];
    if let Backend::Postgres = backend {
        envs.push((
            "CAIRN_DATABASE_URL",
            fresh_database(backend, dir.path()).await,
        ));
    }
    let mut server = Server::start(dir.path(), &envs);
    server.wait_ready(dir.path()).await;
    let stdout = std::fs::read_to_string(dir.path().join("stdout.log")).unwrap();
    let token = extract_token(&stdout);
    assert_eq!(stdout.matches(&token).count(), 1);
    if let Backend::Sqlite = backend {
        assert!(dir.path().join("cairn-data/cairn.db").exists());
    }
    let key = dir.path().join("cairn-data/master.key");
    assert!(key.exists());

    use reqwest::Method;
    let org = server
        .send(
            Method::POST,
            "/api/v1/organizations",
            &token,
            Some(&json!({ "slug": "acme", "name": "Acme" })),
        )
        .await;
    let org = org.expect(201)["id"].as_str().unwrap().to_owned();
    let targets = format!("/api/v1/organizations/{org}/backups/targets");
    let reply = server
        .send(
            Method::POST,
            &targets,
            &token,
            Some(&s3_target("t", S3_SECRET)),
        )
        .await;
    assert!(!reply.text.contains(S3_SECRET));
    reply.expect(201);
    // Refused requests that carry the secret, too.
    let mut bad = s3_target("t2", S3_SECRET);
    bad["config"]["endpoint"] = json!("not a url");
    let reply = server
        .send(Method::POST, &targets, &token, Some(&bad))
        .await;
    assert!(!reply.text.contains(S3_SECRET));
    reply.expect(422);
    let reply = server
        .send(
            Method::POST,
            &targets,
            &token,
            Some(&s3_target("t", S3_SECRET)),
        )
        .await;
    assert!(!reply.text.contains(S3_SECRET));
    reply.expect(409);
    // A secret of the wrong type is refused without being echoed.
    let mut numeric = s3_target("t3", S3_SECRET);
    numeric["config"]["secretAccessKey"] = json!(NUMERIC_SECRET);
    let reply = server
        .send(Method::POST, &targets, &token, Some(&numeric))
        .await;
    reply.expect(422);
    assert!(
        !reply.text.contains(&NUMERIC_SECRET.to_string()),
        "{}",
        reply.text
    );
    let app = json!({ "name": "shop", "volumes": [{ "name": "db", "kind": "postgres", "postgres": {
        "host": "127.0.0.1", "database": "shop", "username": "shop", "password": PG_PASSWORD }}]});
    let reply = server
        .send(
            Method::POST,
            &format!("/api/v1/organizations/{org}/apps"),
            &token,
            Some(&app),
        )
        .await;
    assert!(!reply.text.contains(PG_PASSWORD));
    reply.expect(201);
    let request_id = reply.headers["x-request-id"].to_str().unwrap().to_owned();

    let status = server.terminate();
    assert!(
        status.success(),
        "cairn serve exited with {status} on SIGTERM"
    );

    let logs = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    for secret in [
        S3_SECRET,
        PG_PASSWORD,
        token.as_str(),
        &NUMERIC_SECRET.to_string(),
    ] {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
    let key = std::fs::read_to_string(key).unwrap();
    assert!(
        !logs.contains(key.trim()),
        "the master key reached the logs"
    );
    // JSON lines, one per request at least, carrying the request id.
    let lines: Vec<Value> = logs
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    assert!(lines
        .iter()
        .any(|line| line["fields"]["message"] == "request finished"
            && line["span"]["request_id"] == request_id.as_str()
            && line["fields"]["status"] == 201));
    assert!(lines
        .iter()
        .any(|line| line["fields"]["message"] == "stopped"));
}

#[tokio::test]
async fn token_create_and_migrate_prepare_a_database_for_serve() {
    let dir = tempfile::tempdir().unwrap();
    let migrate = cairn(dir.path()).arg("migrate").output().unwrap();
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    let created = cairn(dir.path())
        .args(["token", "create"])
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let token = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("cairn_"), "{token}");

    let mut server = Server::start(dir.path(), &[]);
    server.wait_ready(dir.path()).await;
    let stdout = std::fs::read_to_string(dir.path().join("stdout.log")).unwrap();
    assert!(
        !stdout.contains("cairn_"),
        "no second administrator token: {stdout}"
    );
    let reply = server
        .send(reqwest::Method::GET, "/api/v1/organizations", &token, None)
        .await;
    reply.expect(200);
    let org = server
        .send(
            reqwest::Method::POST,
            "/api/v1/organizations",
            &token,
            Some(&json!({ "slug": "acme", "name": "A" })),
        )
        .await;
    let org = org.expect(201)["id"].as_str().unwrap().to_owned();
    assert!(server.terminate().success());

    // An organization token from the command line, with its role.
    let created = cairn(dir.path())
        .args(["token", "create", "--org", &org, "--role", "viewer"])
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let viewer = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    let mut server = Server::start(dir.path(), &[]);
    server.wait_ready(dir.path()).await;
    server
        .send(
            reqwest::Method::GET,
            &format!("/api/v1/organizations/{org}"),
            &viewer,
            None,
        )
        .await
        .expect(200);
    server
        .send(
            reqwest::Method::POST,
            "/api/v1/organizations",
            &viewer,
            Some(&json!({ "slug": "b", "name": "B" })),
        )
        .await
        .expect(403);
    assert!(server.terminate().success());
}

#[test]
fn unknown_configuration_keys_stop_the_start_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let output = cairn(dir.path())
        .arg("serve")
        .env("CAIRN_LISTNE", "127.0.0.1:1")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("listne"), "{stderr}");

    std::fs::write(
        dir.path().join("cairn.yml"),
        "listen: 127.0.0.1:0\nbackup:\n  type: s3\n  bukket: x\n",
    )
    .unwrap();
    let output = cairn(dir.path())
        .args(["--config", "cairn.yml", "serve"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bukket"), "{stderr}");
    assert!(
        !dir.path().join("cairn-data").exists(),
        "nothing is created on a bad start"
    );

    // A database that cannot be reached, or a URL that cannot be parsed:
    // the error says so without the password.
    for url in [
        "postgres://cairn:db-Password-9f3e@127.0.0.1:1/cairn",
        "postgres://cairn:db-Password-9f3e#@/cairn",
    ] {
        let output = cairn(dir.path())
            .arg("serve")
            .env("CAIRN_DATABASE_URL", url)
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("database"), "{stderr}");
        assert!(!stderr.contains("db-Password-9f3e"), "{stderr}");
    }
}

#[test]
fn retention_plan_reads_times_and_prints_decisions() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let mut child = cairn(dir.path())
        .args(["retention", "plan", "--keep-last", "1", "--keep-daily", "2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"2024-01-03T10:00:00Z\n2024-01-03T09:00:00Z\n2024-01-02T10:00:00Z\n2024-01-01T10:00:00Z\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let keep: Vec<bool> = lines.iter().map(|l| l["keep"].as_bool().unwrap()).collect();
    assert_eq!(keep, [true, false, true, false]);
    assert_eq!(lines[0]["reasons"], json!(["last", "daily"]));
    assert_eq!(lines[2]["reasons"], json!(["daily"]));

    let output = cairn(dir.path())
        .args(["retention", "plan", "--keep-last", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(b"not a time\n")?;
            child.wait_with_output()
        })
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("line 1"));
}

/// `cairn serve` runs a worker: a run started through the API completes,
/// and `/metrics` counts it.
#[tokio::test]
async fn serve_runs_backups_and_counts_them_in_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("volumes/shop-blue_data/_data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("orders.csv"), b"1,widget\n").unwrap();
    let envs = vec![
        (
            "CAIRN_VOLUME_ROOT",
            dir.path().join("volumes").display().to_string(),
        ),
        ("CAIRN_WORKER__POLL_MILLIS", "100".to_owned()),
    ];
    let mut server = Server::start(dir.path(), &envs);
    server.wait_ready(dir.path()).await;
    let stdout = std::fs::read_to_string(dir.path().join("stdout.log")).unwrap();
    let token = extract_token(&stdout);
    use reqwest::Method;
    let org = server
        .send(
            Method::POST,
            "/api/v1/organizations",
            &token,
            Some(&json!({ "slug": "acme", "name": "Acme" })),
        )
        .await;
    let org = org.expect(201)["id"].as_str().unwrap().to_owned();
    let app = server
        .send(
            Method::POST,
            &format!("/api/v1/organizations/{org}/apps"),
            &token,
            Some(&json!({ "name": "shop", "volumes": [{ "name": "data" }] })),
        )
        .await;
    let app = app.expect(201)["id"].as_str().unwrap().to_owned();
    let job = server
        .send(
            Method::POST,
            &format!("/api/v1/organizations/{org}/backups/jobs"),
            &token,
            Some(&json!({ "name": "n", "schedule": "0 2 * * *", "appIds": [app], "keepLast": 2 })),
        )
        .await;
    let job = job.expect(201)["id"].as_str().unwrap().to_owned();
    let run = server
        .send(
            Method::POST,
            &format!("/api/v1/organizations/{org}/backups/jobs/{job}/run"),
            &token,
            Some(&json!({})),
        )
        .await;
    let backup = run.expect(202)["backups"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    let record = loop {
        let record = server
            .send(
                Method::GET,
                &format!("/api/v1/organizations/{org}/backups/history/{backup}"),
                &token,
                None,
            )
            .await;
        let record = record.expect(200).clone();
        if record["status"] == "success" || record["status"] == "failed" {
            break record;
        }
        assert!(
            Instant::now() < deadline,
            "the backup never finished: {record}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(record["status"], "success", "{record}");
    let path = record["storagePath"].as_str().unwrap();
    assert!(dir.path().join("cairn-data/backups").join(path).is_file());
    let metrics = reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("cairn_backups_total{status=\"success\"} 1"),
        "{metrics}"
    );
    let written = format!(
        "cairn_backup_bytes_written_total {}",
        record["archiveSize"].as_u64().unwrap()
    );
    assert!(metrics.contains(&written), "{metrics}");
    assert!(metrics.contains(&format!(
        "cairn_backup_last_success_timestamp_seconds{{job_id=\"{job}\"}}"
    )));
    assert!(server.terminate().success());
}

/// `cairn api` serves many tenants: unless told otherwise it refuses
/// loopback and private endpoints, says so at start, and the refusal names
/// the setting; `cairn serve` (one host) allows them.
#[tokio::test]
async fn the_api_role_refuses_private_endpoints_by_default() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let admin = "api-role-admin-token".to_owned();
    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let envs = [
        ("CAIRN_ADMIN_TOKEN", admin.clone()),
        ("CAIRN_MASTER_KEY", key),
    ];
    let mut server = Server::start_role(dir.path(), "api", &envs);
    server.wait_ready(dir.path()).await;
    let org = server
        .send(
            reqwest::Method::POST,
            "/api/v1/organizations",
            &admin,
            Some(&json!({ "slug": "acme", "name": "A" })),
        )
        .await;
    let org = org.expect(201)["id"].as_str().unwrap().to_owned();
    let target = json!({ "name": "s3", "type": "s3", "config": {
        "bucket": "cairn-bucket", "accessKeyId": "k", "secretAccessKey": "s",
        "endpoint": "http://127.0.0.1:9000" } });
    let refused = server
        .send(
            reqwest::Method::POST,
            &format!("/api/v1/organizations/{org}/backups/targets"),
            &admin,
            Some(&target),
        )
        .await;
    refused.expect_field_error(422, "config.endpoint");
    assert!(
        refused.text.contains("allow_private_endpoints"),
        "the refusal names the setting: {}",
        refused.text
    );
    assert!(server.terminate().success());
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert!(log.contains("allow_private_endpoints=false"), "{log}");

    // The same request to `cairn serve` is accepted.
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[("CAIRN_ADMIN_TOKEN", admin.clone())]);
    server.wait_ready(dir.path()).await;
    let org = server
        .send(
            reqwest::Method::POST,
            "/api/v1/organizations",
            &admin,
            Some(&json!({ "slug": "acme", "name": "A" })),
        )
        .await;
    let org = org.expect(201)["id"].as_str().unwrap().to_owned();
    server
        .send(
            reqwest::Method::POST,
            &format!("/api/v1/organizations/{org}/backups/targets"),
            &admin,
            Some(&target),
        )
        .await
        .expect(201);
    assert!(server.terminate().success());
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert!(log.contains("allow_private_endpoints=true"), "{log}");

    // The embedded default's data directory is private: 0700, and the
    // database (with its WAL files) and the master key 0600.
    use std::os::unix::fs::PermissionsExt;
    let mode = |name: &str| {
        std::fs::metadata(dir.path().join("cairn-data").join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(""), 0o700);
    for file in ["cairn.db", "master.key", "cairn.db-wal", "cairn.db-shm"] {
        let optional = file.ends_with("-wal") || file.ends_with("-shm");
        if optional && !dir.path().join("cairn-data").join(file).exists() {
            continue;
        }
        assert_eq!(mode(file), 0o600, "{file}");
    }
}
