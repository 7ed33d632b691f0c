//! `mysql` volumes against the real MariaDB server `scripts/test.sh`
//! starts: a dump made while nothing of the password reaches argv, restored
//! into the same and into another database (rows, routines and triggers
//! equal), previewed, verified in both modes; and the failures a user
//! meets (wrong password, old client, bad settings) with their codes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::json;

use crate::helpers::{
    fixture_with, mariadb, mariadb_as, mysql_server, mysql_volume, spawn_app_with, unique, Backend,
    Fixture,
};

/// The app's login: a password that needs quoting in an option file.
const PASSWORD: &str = r#"p"a#s s\w'o;rd"#;

/// Creates, as the app's `user` (who owns them, as an app does), the
/// tables, trigger, routine, view and event of the test in `database`, and
/// `rows` orders (each with an audit row, by the trigger).
fn create_shop(user: &str, database: &str, rows: u32) {
    mariadb_as(
        user,
        PASSWORD,
        Some(database),
        &format!(
            "CREATE TABLE orders (id INT PRIMARY KEY, item TEXT NOT NULL, data BLOB) ENGINE=InnoDB;
             CREATE TABLE audit (order_id INT NOT NULL) ENGINE=InnoDB;
             CREATE TABLE empty_table (id INT) ENGINE=InnoDB;
             CREATE TRIGGER orders_audit AFTER INSERT ON orders FOR EACH ROW
               INSERT INTO audit (order_id) VALUES (NEW.id);
             CREATE PROCEDURE order_count(OUT n INT) SELECT COUNT(*) INTO n FROM orders;
             CREATE VIEW big_orders AS SELECT id FROM orders WHERE id > 10;
             CREATE EVENT purge_audit ON SCHEDULE EVERY 1 DAY DO DELETE FROM audit WHERE order_id < 0;
             INSERT INTO orders (id, item, data)
               WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
               SELECT i, CONCAT('item ', i, ' it''s (a) \"test\"; ok\\nnext line é'), UNHEX('00FF28293B27')
               FROM n;"
        ),
    );
}

/// What a user compares after a restore: every row's content, and the
/// routines, triggers, views and events with their definitions.
fn fingerprint(database: &str) -> String {
    mariadb(
        Some(database),
        &format!(
            "SELECT COUNT(*), SUM(CRC32(CONCAT(id, item, HEX(data)))) FROM orders;
             SELECT COUNT(*), SUM(order_id) FROM audit;
             SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES
               WHERE TABLE_SCHEMA = '{database}' ORDER BY 1;
             SELECT ROUTINE_NAME, ROUTINE_TYPE, ROUTINE_DEFINITION FROM information_schema.ROUTINES
               WHERE ROUTINE_SCHEMA = '{database}' ORDER BY 1;
             SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE, ACTION_STATEMENT FROM information_schema.TRIGGERS
               WHERE TRIGGER_SCHEMA = '{database}' ORDER BY 1;
             SELECT TABLE_NAME, VIEW_DEFINITION FROM information_schema.VIEWS
               WHERE TABLE_SCHEMA = '{database}' ORDER BY 1;
             SELECT EVENT_NAME, EVENT_DEFINITION FROM information_schema.EVENTS
               WHERE EVENT_SCHEMA = '{database}' ORDER BY 1;"
        ),
    )
    .replace(database, "DB")
}

/// Watches every process's command line (and, for the dump client, its
/// environment) until stopped: returns whether the password was seen
/// anywhere, and the dump client's command lines.
fn watch_processes(stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(bool, Vec<String>)> {
    std::thread::spawn(move || {
        let mut leaked = false;
        let mut dumps = Vec::new();
        let secret = PASSWORD.as_bytes();
        let contains = |hay: &[u8]| hay.windows(secret.len()).any(|w| w == secret);
        while !stop.load(Ordering::SeqCst) {
            for entry in std::fs::read_dir("/proc").unwrap().flatten() {
                let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                    continue;
                };
                if contains(&cmdline) {
                    leaked = true;
                }
                let line = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                if line.contains("mariadb-dump") && line.contains("--single-transaction") {
                    if let Ok(environ) = std::fs::read(entry.path().join("environ")) {
                        if contains(&environ) {
                            leaked = true;
                        }
                    }
                    if !dumps.contains(&line) {
                        dumps.push(line);
                    }
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        (leaked, dumps)
    })
}

/// A dump client that takes a second to start, so the watcher sees it.
fn slow_dump_client(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("mariadb-dump-slow");
    std::fs::write(&script, "#!/bin/sh\nsleep 1\nexec mariadb-dump \"$@\"\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// A console page as `token` sees it, signed in over plain HTTP (the
/// sign-in form's nonce, then the session cookie).
async fn console_page(f: &Fixture, token: &str, path: &str) -> String {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cookie = |reply: &reqwest::Response, name: &str| {
        reply
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| v.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.split(';').next())
            .unwrap_or_else(|| panic!("{name} is set"))
            .to_owned()
    };
    let form = client.get(f.app.url("/ui/sign-in")).send().await.unwrap();
    let nonce = cookie(&form, "cairn_sign_in");
    let signed = client
        .post(f.app.url("/ui/sign-in"))
        .header("cookie", format!("cairn_sign_in={nonce}"))
        .form(&[("token", token), ("_csrf", nonce.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 303);
    let session = cookie(&signed, "cairn_session");
    let page = client
        .get(f.app.url(path))
        .header("cookie", format!("cairn_session={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    page.text().await.unwrap()
}

async fn verify(f: &Fixture, backup: &str, mode: &str) -> serde_json::Value {
    let id = f
        .app
        .post(
            &f.org.path(&format!("/backups/history/{backup}/verify")),
            &f.org.operator,
            &json!({ "mode": mode }),
        )
        .await
        .expect(202)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    f.drain().await;
    f.verification(&id).await
}

#[tokio::test]
async fn mysql_volumes_back_up_restore_and_verify() {
    let tools = tempfile::tempdir().unwrap();
    let client = slow_dump_client(tools.path());
    // The scratch server's user: its own databases and SET USER, nothing
    // global beyond that.
    let (port, _) = mysql_server();
    let verifier = unique("cv");
    let verifier = format!("cv{}", &verifier[verifier.len() - 10..]);
    mariadb(
        None,
        &format!(
            "CREATE USER '{verifier}'@'127.0.0.1' IDENTIFIED BY 'scratch-pw';
             GRANT ALL PRIVILEGES ON `cairn\\_verify\\_%`.* TO '{verifier}'@'127.0.0.1';
             GRANT SET USER ON *.* TO '{verifier}'@'127.0.0.1';"
        ),
    );
    let scratch_url = format!("mysql://{verifier}:scratch-pw@127.0.0.1:{port}");
    let f = fixture_with(Backend::Sqlite, "mysql", move |config| {
        config.mysqldump = client;
        config.verification.mysql_url = Some(scratch_url.into());
    })
    .await;
    let database = unique("shop").replace('-', "_");
    let copy = format!("{database}_copy");
    let user = format!("app{}", &database[database.len() - 8..]);
    mariadb(
        None,
        &format!(
            "CREATE DATABASE `{database}`; CREATE DATABASE `{copy}`;
             CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{}';
             GRANT ALL PRIVILEGES ON `{database}`.* TO '{user}'@'127.0.0.1';
             GRANT ALL PRIVILEGES ON `{copy}`.* TO '{user}'@'127.0.0.1';",
            PASSWORD.replace('\\', "\\\\").replace('\'', "\\'")
        ),
    );
    create_shop(&user, &database, 1000);
    let original = fingerprint(&database);
    assert!(original.starts_with("1000\t"), "{original}");

    // Bad settings are refused, naming the field.
    let good = mysql_volume("db", &database, &user, PASSWORD);
    let mut on_generic = good.clone();
    on_generic["kind"] = json!("generic");
    let mut bad_database = good.clone();
    bad_database["mysql"]["database"] = json!("-x");
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("mysql");
    let mut postgres_field = good.clone();
    postgres_field["postgres"] = good["mysql"].clone();
    let mut no_password = good.clone();
    no_password["mysql"]
        .as_object_mut()
        .unwrap()
        .remove("password");
    for (volume, field) in [
        (on_generic, "volumes[0].mysql"),
        (bad_database, "volumes[0].mysql.database"),
        (missing, "volumes[0].mysql"),
        (postgres_field, "volumes[0].postgres"),
        (no_password, "volumes[0].mysql.password"),
    ] {
        f.app
            .post(
                &f.org.path("/apps"),
                &f.org.admin,
                &json!({ "name": "shop", "volumes": [volume] }),
            )
            .await
            .expect_field_error(422, field);
    }

    let app = f
        .create_app(json!({ "name": "shop", "volumes": [good] }))
        .await;
    let shown = f
        .app
        .get(&f.org.path(&format!("/apps/{app}")), &f.org.viewer)
        .await
        .expect(200)
        .clone();
    let volume = &shown["volumes"][0];
    assert_eq!(volume["kind"], "mysql", "{shown}");
    assert_eq!(volume["mysql"]["database"], database.as_str());
    assert_eq!(volume["mysql"]["passwordSet"], true);
    assert!(
        !shown.to_string().contains("s\\\\w"),
        "no password in {shown}"
    );
    let job = f
        .create_job_for(&app, json!({ "name": "shop", "keepLast": 5 }))
        .await;

    // The backup, watched: the password is in no process's argv or
    // environment while the dump runs.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_processes(stop.clone());
    let record = f.run_to_end(&job).await;
    stop.store(true, Ordering::SeqCst);
    let (leaked, dumps) = watcher.join().unwrap();
    assert_eq!(record["status"], "success", "{record}");
    assert!(!dumps.is_empty(), "the watcher saw the dump client run");
    assert!(
        !leaked,
        "the password appeared in a command line: {dumps:?}"
    );
    let option_file = dumps[0]
        .split_whitespace()
        .find_map(|arg| arg.strip_prefix("--defaults-file="))
        .expect("the client reads an option file")
        .to_owned();
    assert!(
        !std::path::Path::new(&option_file).exists(),
        "the option file is removed after the dump"
    );
    let path = record["storagePath"].as_str().unwrap();
    assert!(path.ends_with(".sql.zst"), "{path}");
    let manifest = &record["manifest"];
    assert_eq!(manifest["kind"], "mysql_dump", "{manifest}");
    assert!(
        manifest["serverVersion"]
            .as_str()
            .unwrap()
            .contains("MariaDB"),
        "{manifest}"
    );
    let tables = manifest["tables"].as_array().unwrap();
    let rows_of = |name: &str| {
        tables
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {manifest}"))["rows"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(rows_of("orders"), 1000);
    assert_eq!(rows_of("audit"), 1000);
    assert_eq!(rows_of("empty_table"), 0);
    assert!(
        !tables.iter().any(|t| t["name"] == "big_orders"),
        "a view is not a table"
    );
    // The archive, as zstd gives it back: SQL holding the schema and rows.
    let sql = crate::helpers::run_ok(
        std::process::Command::new("zstd")
            .arg("-dc")
            .arg(f.stored(path)),
    );
    let sql = String::from_utf8_lossy(&sql);
    assert!(sql.contains("CREATE TABLE `orders`"));
    assert!(sql.contains("INSERT INTO `orders`"));
    assert!(sql.contains("TRIGGER orders_audit") || sql.contains("TRIGGER `orders_audit`"));
    assert!(sql.contains("-- Dump completed"));
    assert!(!sql.contains(PASSWORD));

    // The preview lists the tables and their rows.
    let backup = record["id"].as_str().unwrap().to_owned();
    let preview = f.preview(&backup).await;
    assert_eq!(preview["restorable"], true, "{preview}");
    assert_eq!(preview["kind"], "mysql_dump");
    assert_eq!(preview["contents"]["kind"], "mysql_dump");
    assert_eq!(
        preview["contents"]["tables"], manifest["tables"],
        "{preview}"
    );
    // The console's restore page shows the same tables and rows.
    let page = console_page(
        &f,
        &f.org.operator,
        &format!("/ui/orgs/{}/backups/{backup}/restore", f.org.id),
    )
    .await;
    for expected in [
        "3 tables, 2000 rows",
        "<code>orders</code></td><td class=\"num\">1000",
        "<code>empty_table</code></td><td class=\"num\">0",
    ] {
        assert!(page.contains(expected), "{expected} in {page}");
    }

    // The database changes; a dry run reads the dump and changes nothing.
    mariadb(
        Some(&database),
        "DELETE FROM orders WHERE id > 500; DROP PROCEDURE order_count; DROP TRIGGER orders_audit;
         INSERT INTO orders (id, item) VALUES (5000, 'new'); DROP TABLE empty_table;",
    );
    let changed = fingerprint(&database);
    assert_ne!(changed, original);
    let dry = f.restore_to_end(&backup, json!({ "dryRun": true })).await;
    assert_eq!(dry["status"], "success", "{dry}");
    assert_eq!(dry["summary"]["tables"], manifest["tables"], "{dry}");
    assert_eq!(fingerprint(&database), changed, "a dry run changes nothing");

    // Restored into the same database: rows, routines, triggers as backed
    // up; the safety backup holds the changed state.
    let restored = f.restore_to_end(&backup, json!({})).await;
    assert_eq!(restored["status"], "success", "{restored}");
    assert_eq!(fingerprint(&database), original);
    let safety = restored["safetyBackupId"]
        .as_str()
        .expect("a safety backup");
    let safety = f.backup(safety).await;
    assert_eq!(safety["status"], "success", "{safety}");
    let safety_tables = safety["manifest"]["tables"].as_array().unwrap();
    assert!(
        safety_tables
            .iter()
            .any(|t| t["name"] == "orders" && t["rows"] == 501),
        "{safety}"
    );

    // Restored into another database (another app's volume).
    let other = f
        .create_app(
            json!({ "name": "copy", "volumes": [mysql_volume("db", &copy, &user, PASSWORD)] }),
        )
        .await;
    let cloned = f
        .restore_to_end(
            &backup,
            json!({ "into": { "appId": other, "volumeName": "db" }, "safetyBackup": false }),
        )
        .await;
    assert_eq!(cloned["status"], "success", "{cloned}");
    assert_eq!(fingerprint(&copy), original);

    // Verified: read through with its rows counted, and loaded into a
    // scratch database that is dropped afterwards.
    for mode in ["read", "restore"] {
        let verified = verify(&f, &backup, mode).await;
        assert_eq!(verified["status"], "success", "{mode}: {verified}");
        let checks = verified["checks"].as_array().unwrap();
        for name in ["sha256", "tables", "rows"] {
            assert!(
                checks.iter().any(|c| c["name"] == name && c["ok"] == true),
                "{mode}: {name} in {verified}"
            );
        }
    }
    let scratch = mariadb(None, "SHOW DATABASES LIKE 'cairn\\_verify\\_%'");
    assert_eq!(scratch.trim(), "", "scratch databases are dropped");

    // A wrong password fails with its code, before anything is dumped.
    let wrong = f
        .create_app(
            json!({ "name": "wrong", "volumes": [mysql_volume("db", &database, &user, "not-it")] }),
        )
        .await;
    let wrong_job = f
        .create_job_for(&wrong, json!({ "name": "wrong", "keepLast": 1 }))
        .await;
    let failed = f.run_to_end(&wrong_job).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["errorCode"], "mysql_access_denied", "{failed}");
    assert!(!failed.to_string().contains("not-it"), "{failed}");
}

#[tokio::test]
async fn an_old_dump_client_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let tools = tempfile::tempdir().unwrap();
    let script = tools.path().join("mariadb-dump");
    std::fs::write(
        &script,
        "#!/bin/sh\necho 'mariadb-dump  Ver 10.17 Distrib 10.1.48-MariaDB, for debian-linux-gnu (x86_64)'\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let app = spawn_app_with(Backend::Sqlite, move |config| {
        config.mysqldump = script;
    })
    .await;
    let f = Fixture {
        org: app.org("old").await,
        app,
        volumes: tempfile::tempdir().unwrap(),
    };
    let database = unique("old").replace('-', "_");
    mariadb(None, &format!("CREATE DATABASE `{database}`"));
    let (_, root_password) = mysql_server();
    let app_id = f
        .create_app(json!({ "name": "shop", "volumes": [mysql_volume("db", &database, "root", &root_password)] }))
        .await;
    let job = f
        .create_job_for(&app_id, json!({ "name": "shop", "keepLast": 1 }))
        .await;
    let record = f.run_to_end(&job).await;
    assert_eq!(record["status"], "failed", "{record}");
    assert_eq!(record["errorCode"], "mysqldump_too_old", "{record}");
    assert!(
        record["errorMessage"]
            .as_str()
            .unwrap()
            .contains("MariaDB 10.1.48"),
        "{record}"
    );
}
