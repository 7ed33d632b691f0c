//! Start-up: the `backup:` section of `cairn.yml`, the bootstrap
//! administrator token, and migrations on an existing database.

use base64::Engine;
use cairn_core::{Cairn, Config, StartMode};
use cairn_entity::backup_target;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use secrecy::SecretString;

use crate::both_backends;
use crate::helpers::{fresh_database, Backend};

both_backends!(
    the_embedded_default_has_a_local_system_target,
    a_wrong_master_key_stops_the_start,
    backup_section_creates_system_default_once_and_updates_it,
    invalid_backup_section_names_the_key,
    bootstrap_token_is_created_once,
);

fn config_from_file(dir: &std::path::Path, yaml: &str, database_url: &str) -> Config {
    let file = dir.join("cairn.yml");
    std::fs::write(&file, yaml).unwrap();
    let mut config = Config::load_file(Some(&file)).expect("a valid cairn.yml");
    config.data_dir = dir.to_path_buf();
    config.database_url = Some(SecretString::from(database_url.to_owned()));
    config
}

/// Opens the embedded default with `yaml` as its `cairn.yml`.
async fn open_from_file(dir: &std::path::Path, yaml: &str, database_url: &str) -> Cairn {
    Cairn::open(
        config_from_file(dir, yaml, database_url),
        StartMode::Embedded,
    )
    .await
    .expect("Cairn opens")
}

/// Every default, on `database_url`.
fn plain_config(dir: &std::path::Path, database_url: &str) -> Config {
    let mut config = Config::with_data_dir(dir);
    config.database_url = Some(SecretString::from(database_url.to_owned()));
    config
}

async fn system_targets(cairn: &Cairn) -> Vec<backup_target::Model> {
    backup_target::Entity::find()
        .filter(backup_target::Column::OrganizationId.is_null())
        .all(&cairn.db)
        .await
        .unwrap()
}

async fn backup_section_creates_system_default_once_and_updates_it(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database(backend, dir.path()).await;
    let yaml = "backup:\n  type: s3\n  bucket: system-backups\n  region: eu-central-1\n  access_key: AKIASYSTEM\n  secret_key: system-Secret-Value\n  endpoint: http://127.0.0.1:9000\n  prefix: cairn/\n";
    let first = open_from_file(dir.path(), yaml, &url).await;
    let targets = system_targets(&first).await;
    assert_eq!(targets.len(), 1);
    assert_eq!(targets[0].name, "System default");
    assert_eq!(targets[0].target_type, "s3");
    assert_eq!(targets[0].config["bucket"], "system-backups");
    assert_eq!(targets[0].config["accessKeyId"], "AKIASYSTEM");
    assert!(!targets[0]
        .config
        .to_string()
        .contains("system-Secret-Value"));
    let opened = first
        .master_key
        .open_fields(targets[0].id, targets[0].secrets_ciphertext.as_deref())
        .unwrap();
    assert_eq!(opened["secretAccessKey"], "system-Secret-Value");
    first.db.close().await.unwrap();

    // A second start with the same file: still one, same id.
    let second = open_from_file(dir.path(), yaml, &url).await;
    let again = system_targets(&second).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, targets[0].id);
    second.db.close().await.unwrap();

    // A changed section updates it in place.
    let changed = yaml.replace("system-backups", "moved-backups");
    let third = open_from_file(dir.path(), &changed, &url).await;
    let moved = system_targets(&third).await;
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0].id, targets[0].id);
    assert_eq!(moved[0].config["bucket"], "moved-backups");
}

async fn invalid_backup_section_names_the_key(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database(backend, dir.path()).await;
    let yaml = "backup:\n  type: s3\n  access_key: AKIA\n  secret_key: hunter2-secret\n";
    let error = Cairn::open(
        config_from_file(dir.path(), yaml, &url),
        StartMode::Embedded,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(error.contains("backup.bucket"), "{error}");
    assert!(!error.contains("hunter2-secret"), "{error}");

    let yaml = "backup:\n  type: ftp\n";
    let error = Cairn::open(
        config_from_file(dir.path(), yaml, &url),
        StartMode::Embedded,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(error.contains("backup.type"), "{error}");
}

async fn bootstrap_token_is_created_once(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database(backend, dir.path()).await;
    let config = plain_config(dir.path(), &url);
    let cairn = Cairn::open(config, StartMode::Embedded).await.unwrap();
    let token = cairn
        .bootstrap_admin_token()
        .await
        .unwrap()
        .expect("a first token");
    let principal = cairn_core::auth::authenticate(&cairn, &token, chrono::Utc::now())
        .await
        .unwrap()
        .expect("the token is valid");
    assert!(principal.is_system_admin());
    assert_eq!(cairn.bootstrap_admin_token().await.unwrap(), None);

    // With CAIRN_ADMIN_TOKEN set, none is created.
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database(backend, dir.path()).await;
    let mut config = plain_config(dir.path(), &url);
    config.admin_token = Some(SecretString::from("configured-admin".to_owned()));
    let cairn = Cairn::open(config, StartMode::Embedded).await.unwrap();
    assert_eq!(cairn.bootstrap_admin_token().await.unwrap(), None);
    assert!(
        cairn_core::auth::authenticate(&cairn, "configured-admin", chrono::Utc::now())
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn replicas_refuse_to_start_without_a_shared_master_key() {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database(Backend::Sqlite, dir.path()).await;
    let config = plain_config(dir.path(), &url);
    let error = Cairn::open(config, StartMode::Replica)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("CAIRN_MASTER_KEY"), "{error}");
}

async fn a_wrong_master_key_stops_the_start(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database(backend, dir.path()).await;
    let yaml = "backup:\n  type: s3\n  bucket: system-backups\n  access_key: AKIA\n  secret_key: sealed-secret\n";
    let cairn = open_from_file(dir.path(), yaml, &url).await;
    cairn.db.close().await.unwrap();
    let mut config = config_from_file(dir.path(), "listen: 127.0.0.1:0\n", &url);
    let other = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    config.master_key = Some(SecretString::from(other));
    let error = Cairn::open(config, StartMode::Replica)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("master key"), "{error}");
    // The right key (the generated file) still opens it.
    let config = config_from_file(dir.path(), "listen: 127.0.0.1:0\n", &url);
    let reopened = Cairn::open(config, StartMode::Replica).await.unwrap();
    let targets = system_targets(&reopened).await;
    let opened = reopened
        .master_key
        .open_fields(targets[0].id, targets[0].secrets_ciphertext.as_deref())
        .unwrap();
    assert_eq!(opened["secretAccessKey"], "sealed-secret");
    reopened.db.close().await.unwrap();

    // A lost key file is not silently replaced by a new key.
    std::fs::remove_file(dir.path().join("master.key")).unwrap();
    let config = config_from_file(dir.path(), "listen: 127.0.0.1:0\n", &url);
    let error = Cairn::open(config, StartMode::Embedded)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("master key"), "{error}");
    assert!(!dir.path().join("master.key").exists());
}

/// A Slack channel's sealed URL alone is enough for a lost key file to stop
/// the start (rather than a new key that opens nothing).
#[tokio::test]
async fn sealed_channel_secrets_guard_the_master_key() {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database(Backend::Sqlite, dir.path()).await;
    let mut config = plain_config(dir.path(), &url);
    config.allow_local_backups = false;
    let cairn = Cairn::open(config, StartMode::Embedded).await.unwrap();
    let org = cairn_core::orgs::create(
        &cairn.db,
        serde_json::from_value(serde_json::json!({ "slug": "acme", "name": "Acme" })).unwrap(),
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    let request = serde_json::from_value(serde_json::json!({
        "name": "slack", "type": "slack", "config": { "url": "https://hooks.example.test/T/B/secret" }
    }))
    .unwrap();
    cairn_core::notifications::channels::create(&cairn, org.id, request, chrono::Utc::now())
        .await
        .unwrap();
    cairn.db.close().await.unwrap();
    std::fs::remove_file(dir.path().join("master.key")).unwrap();
    let mut config = plain_config(dir.path(), &url);
    config.allow_local_backups = false;
    let error = Cairn::open(config, StartMode::Embedded)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("master key"), "{error}");
    assert!(!dir.path().join("master.key").exists());
}

async fn the_embedded_default_has_a_local_system_target(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database(backend, dir.path()).await;
    for _ in 0..2 {
        let config = plain_config(dir.path(), &url);
        let cairn = Cairn::open(config, StartMode::Embedded).await.unwrap();
        let targets = system_targets(&cairn).await;
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0].name, "System default");
        assert_eq!(targets[0].target_type, "local");
        assert_eq!(
            targets[0].config["path"],
            dir.path().join("backups").to_string_lossy().as_ref()
        );
        cairn.db.close().await.unwrap();
    }
    // A replica gets no implicit target, and without local backups neither
    // does the embedded default.
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database(backend, dir.path()).await;
    let mut config = plain_config(dir.path(), &url);
    config.allow_local_backups = false;
    let cairn = Cairn::open(config, StartMode::Embedded).await.unwrap();
    assert!(system_targets(&cairn).await.is_empty());
}
