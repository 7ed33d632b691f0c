//! The services `scripts/test.sh` starts, as tests reach them: its `TEST_*`
//! variables, target and volume requests for its S3 server, sshd and
//! PostgreSQL, `psql` on that server, and a fault-injecting proxy in front
//! of the S3 server.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value};

use super::run_ok;

/// The variable `name`, which `scripts/test.sh` sets.
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with scripts/test.sh, which starts the S3 server and sshd")
    })
}

/// A unique prefix, so that tests sharing a bucket or directory never meet.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

/// A target request `name` for the test S3 server: its bucket, access key,
/// secret key and endpoint, then each field of `config` over them (a
/// `prefix`, another `endpoint`, a wrong `secretAccessKey`, …).
pub fn s3_target_from_env(name: &str, config: Value) -> Value {
    let mut body = json!({ "name": name, "type": "s3", "config": {
        "bucket": env("TEST_S3_BUCKET"), "accessKeyId": env("TEST_S3_ACCESS_KEY"),
        "secretAccessKey": env("TEST_S3_SECRET_KEY"), "endpoint": env("TEST_S3_ENDPOINT") } });
    for (key, value) in config.as_object().expect("config is an object") {
        body["config"][key] = value.clone();
    }
    body
}

/// Where the test S3 server keeps the objects of its bucket under `prefix`
/// (it stores them as files).
pub fn s3_objects(prefix: &str) -> PathBuf {
    PathBuf::from(env("TEST_S3_ROOT"))
        .join(env("TEST_S3_BUCKET"))
        .join(prefix)
}

/// A target request `name` for the test sshd, writing under `path`, with
/// the test user's key.
pub fn ssh_target_from_env(name: &str, path: &str) -> Value {
    json!({ "name": name, "type": "ssh", "config": {
        "host": env("TEST_SSH_HOST"), "port": env("TEST_SSH_PORT").parse::<u16>().unwrap(),
        "username": env("TEST_SSH_USER"), "path": path,
        "privateKey": std::fs::read_to_string(env("TEST_SSH_KEY")).unwrap() } })
}

/// A PostgreSQL volume request `name` for `database` on the test server,
/// reached as its superuser.
pub fn postgres_volume(name: &str, database: &str) -> Value {
    let server = url::Url::parse(&env("TEST_POSTGRES_URL")).unwrap();
    json!({ "name": name, "kind": "postgres", "postgres": {
        "host": "127.0.0.1", "port": server.port().unwrap(), "database": database,
        "username": server.username(), "password": server.password().unwrap() } })
}

/// Creates the table `orders` (`id`, `item`) in `database`, with `rows`
/// rows: `1, 'item 1'`, `2, 'item 2'`, ….
pub fn create_orders(database: &str, rows: u32) {
    psql(
        database,
        &format!(
            "CREATE TABLE orders (id int PRIMARY KEY, item text NOT NULL); \
             INSERT INTO orders SELECT n, 'item ' || n FROM generate_series(1, {rows}) n;"
        ),
    );
}

/// Runs `sql` with psql as the test server's superuser in `database`;
/// returns its unaligned output.
pub fn psql(database: &str, sql: &str) -> String {
    let mut url = url::Url::parse(&env("TEST_POSTGRES_URL")).unwrap();
    url.set_path(database);
    String::from_utf8(run_ok(
        Command::new(PathBuf::from(env("TEST_PG_BIN")).join("psql"))
            .arg("-XAtq")
            .arg("-v")
            .arg("ON_ERROR_STOP=1")
            .arg("-d")
            .arg(url.as_str())
            .arg("-c")
            .arg(sql),
    ))
    .unwrap()
}

/// The test MariaDB server's port and `root` password (`TEST_MYSQL_URL`).
pub fn mysql_server() -> (u16, String) {
    let url = url::Url::parse(&env("TEST_MYSQL_URL")).unwrap();
    (
        url.port().unwrap(),
        url.password().unwrap_or_default().to_owned(),
    )
}

/// A `mysql` volume request `name` for `database` on the test server,
/// logging in as `username` with `password`.
pub fn mysql_volume(name: &str, database: &str, username: &str, password: &str) -> Value {
    json!({ "name": name, "kind": "mysql", "mysql": {
        "host": "127.0.0.1", "port": mysql_server().0, "database": database,
        "username": username, "password": password } })
}

/// Runs `sql` with the `mariadb` client as the test server's `root` (in
/// `database`, when given); returns its tab-separated output without
/// column names.
pub fn mariadb(database: Option<&str>, sql: &str) -> String {
    let (_, password) = mysql_server();
    mariadb_as("root", &password, database, sql)
}

/// Runs `sql` with the `mariadb` client as `user` (see [`mariadb`]).
pub fn mariadb_as(user: &str, password: &str, database: Option<&str>, sql: &str) -> String {
    let (port, _) = mysql_server();
    let mut command = Command::new("mariadb");
    command
        .arg("--no-defaults")
        .arg("--protocol=TCP")
        .arg("-h127.0.0.1")
        .arg(format!("-P{port}"))
        .arg(format!("--user={user}"))
        .arg("--batch")
        .arg("--skip-column-names")
        .env("MYSQL_PWD", password);
    if let Some(database) = database {
        command.arg(format!("--database={database}"));
    }
    String::from_utf8(run_ok(command.arg("-e").arg(sql))).unwrap()
}

/// A TCP proxy in front of the test S3 server that answers its first
/// `failures` connections with `503 Service Unavailable` (one request each:
/// the answer closes the connection) and forwards the later ones. It counts
/// the connections it refused.
pub struct FaultProxy {
    pub endpoint: String,
    refused: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    failures: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl FaultProxy {
    pub async fn start(failures: usize) -> FaultProxy {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let upstream = env("TEST_S3_ENDPOINT")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let refused = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = refused.clone();
        let failures = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(failures));
        let allowed = failures.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let refuse = counter.load(Ordering::SeqCst) < allowed.load(Ordering::SeqCst);
                let upstream = upstream.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    if refuse {
                        counter.fetch_add(1, Ordering::SeqCst);
                        // Read the request head, then answer and close.
                        let mut buffer = vec![0u8; 64 * 1024];
                        let _ = client.read(&mut buffer).await;
                        let _ = client
                            .write_all(
                                b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\
                                  connection: close\r\n\r\n",
                            )
                            .await;
                        let _ = client.shutdown().await;
                    } else if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        FaultProxy {
            endpoint,
            refused,
            failures,
        }
    }

    /// Forwards every connection from now on: the server is back.
    pub fn heal(&self) {
        self.failures.store(0, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn refused(&self) -> usize {
        self.refused.load(std::sync::atomic::Ordering::SeqCst)
    }
}
