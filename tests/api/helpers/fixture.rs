//! `Fixture`: a test app whose volume root is a directory of the test's
//! own, with one organization, and the set-up steps the tests repeat on it —
//! apps, jobs and runs, targets, notification channels, restores; and
//! in-process workers that run what is pending.

use std::path::PathBuf;
use std::time::Duration;

use cairn_entity::backup;
use cairn_worker::{Worker, WorkerOptions};
use sea_orm::EntityTrait;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::{spawn_app_with, unique, Backend, Org, Reply, TestApp};

/// An app whose volume root is a directory of the test's own, and an
/// organization with a token for each role.
pub struct Fixture {
    pub app: TestApp,
    pub volumes: tempfile::TempDir,
    pub org: Org,
}

/// A [`Fixture`] on `backend` whose organization is `slug`; `pg_dump` and
/// `pg_restore` are those of `TEST_PG_BIN` when it is set.
pub async fn fixture(backend: Backend, slug: &str) -> Fixture {
    fixture_with(backend, slug, |_| {}).await
}

/// [`fixture`] with more configuration.
pub async fn fixture_with(
    backend: Backend,
    slug: &str,
    customize: impl FnOnce(&mut cairn_core::Config),
) -> Fixture {
    let volumes = tempfile::tempdir().unwrap();
    let root = volumes.path().to_path_buf();
    let app = spawn_app_with(backend, move |config| {
        config.volume_root = root;
        if let Ok(bin) = std::env::var("TEST_PG_BIN") {
            config.pg_dump = PathBuf::from(&bin).join("pg_dump");
            config.pg_restore = PathBuf::from(bin).join("pg_restore");
        }
        customize(config);
    })
    .await;
    let org = app.org(slug).await;
    Fixture { app, volumes, org }
}

/// An in-process worker of `app`, one job at a time, polling every 50 ms.
pub fn worker(app: &TestApp, lease: Duration) -> Worker {
    Worker::new(
        app.cairn.clone(),
        WorkerOptions {
            concurrency: 1,
            lease,
            poll: Duration::from_millis(50),
            owner: format!("test-{}", unique("w")),
        },
    )
}

/// Runs what is pending (restores, backups) with `worker` until nothing is
/// left; returns how many ran.
pub async fn drain(worker: &Worker) -> usize {
    let (_stop, stopped) = watch::channel(false);
    let mut ran = 0;
    while worker
        .process_one(&stopped, chrono::Utc::now())
        .await
        .expect("a worker tick")
        .is_some()
    {
        ran += 1;
    }
    ran
}

impl Fixture {
    /// The directory of `volume` of `app` in `slot`, created.
    pub fn volume_dir(&self, app: &str, slot: &str, volume: &str) -> PathBuf {
        let dir = self
            .volumes
            .path()
            .join(format!("{app}-{slot}_{volume}"))
            .join("_data");
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Creates an app as the organization's admin; returns its id.
    pub async fn create_app(&self, body: Value) -> String {
        let reply = self
            .app
            .post(&self.org.path("/apps"), &self.org.admin, &body)
            .await;
        reply.expect(201)["id"].as_str().unwrap().to_owned()
    }

    /// Creates the app `shop` with one volume, `data`; returns its id.
    pub async fn create_shop(&self) -> String {
        self.create_app(json!({ "name": "shop", "volumes": [{ "name": "data" }] }))
            .await
    }

    /// Creates a job as the organization's admin; returns its id.
    pub async fn create_job(&self, body: Value) -> String {
        let reply = self
            .app
            .post(&self.org.path("/backups/jobs"), &self.org.admin, &body)
            .await;
        reply.expect(201)["id"].as_str().unwrap().to_owned()
    }

    /// Creates the job `n` on `0 2 * * *` over `app_id`, with the fields of
    /// `settings` (retention, `targetId`, …; or another `name` or
    /// `schedule`) added to or over those; returns its id.
    pub async fn create_job_for(&self, app_id: &str, settings: Value) -> String {
        let mut body = json!({ "name": "n", "schedule": "0 2 * * *", "appIds": [app_id] });
        for (key, value) in settings.as_object().expect("settings are an object") {
            body[key] = value.clone();
        }
        self.create_job(body).await
    }

    /// `POST …/jobs/{job}/run` with `token`.
    pub async fn start_run(&self, job: &str, token: &str) -> Reply {
        self.app
            .post(
                &self.org.path(&format!("/backups/jobs/{job}/run")),
                token,
                &json!({}),
            )
            .await
    }

    /// Starts a run of the job as an operator; returns the run (202).
    pub async fn run(&self, job: &str) -> Value {
        self.start_run(job, &self.org.operator)
            .await
            .expect(202)
            .clone()
    }

    /// Runs the job, lets a worker run its backups, and returns the record
    /// of its first backup.
    pub async fn run_to_end(&self, job: &str) -> Value {
        let run = self.run(job).await;
        self.drain().await;
        self.backup(run["backups"][0]["id"].as_str().unwrap()).await
    }

    /// [`drain`] with a new in-process worker of the app (a 30 s lease).
    pub async fn drain(&self) -> usize {
        drain(&worker(&self.app, Duration::from_secs(30))).await
    }

    /// The backup record `id` as a viewer reads it.
    pub async fn backup(&self, id: &str) -> Value {
        self.app
            .get(
                &self.org.path(&format!("/backups/history/{id}")),
                &self.org.viewer,
            )
            .await
            .expect(200)
            .clone()
    }

    /// The backup record `id` as stored (for tests that tamper with it).
    pub async fn backup_model(&self, id: &str) -> backup::Model {
        backup::Entity::find_by_id(uuid::Uuid::parse_str(id).unwrap())
            .one(&self.app.cairn.db)
            .await
            .unwrap()
            .unwrap()
    }

    /// Where the system default (local) target keeps `path`.
    pub fn stored(&self, path: &str) -> PathBuf {
        self.app.cairn.config.local_backup_root().join(path)
    }

    /// Creates a target as the organization's admin; returns its id.
    pub async fn create_target(&self, body: Value) -> String {
        self.app
            .post(&self.org.path("/backups/targets"), &self.org.admin, &body)
            .await
            .expect(201)["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Exports the organization's encryption key as its admin; returns the
    /// answer (`recipient`, `identity`).
    pub async fn export_key(&self) -> Value {
        self.app
            .post(
                &self.org.path("/backups/encryption-key/export"),
                &self.org.admin,
                &json!({}),
            )
            .await
            .expect(200)
            .clone()
    }

    /// Creates a notification channel as the organization's admin; returns
    /// its id.
    pub async fn create_channel(&self, body: Value) -> String {
        self.app
            .post(
                &self.org.path("/notifications/channels"),
                &self.org.admin,
                &body,
            )
            .await
            .expect(201)["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// `POST …/channels/{id}/test` as an operator.
    pub async fn test_channel(&self, id: &str) -> Reply {
        self.app
            .post(
                &self.org.path(&format!("/notifications/channels/{id}/test")),
                &self.org.operator,
                &json!({}),
            )
            .await
    }

    /// `POST …/history/{backup}/restore` with `body`, as an operator.
    pub async fn request_restore(&self, backup: &str, body: Value) -> Reply {
        self.app
            .post(
                &self.org.path(&format!("/backups/history/{backup}/restore")),
                &self.org.operator,
                &body,
            )
            .await
    }

    /// The restore record `id` as a viewer reads it.
    pub async fn restore(&self, id: &str) -> Value {
        self.app
            .get(
                &self.org.path(&format!("/backups/restores/{id}")),
                &self.org.viewer,
            )
            .await
            .expect(200)
            .clone()
    }

    /// Requests a restore of `backup` (`body` with its `confirm` set),
    /// checks that it is pending, lets a worker run it, and returns its
    /// record.
    pub async fn restore_to_end(&self, backup: &str, mut body: Value) -> Value {
        body["confirm"] = json!(backup);
        let requested = self.request_restore(backup, body).await;
        let id = requested.expect(202)["id"].as_str().unwrap().to_owned();
        assert_eq!(requested.body["status"], "pending");
        self.drain().await;
        self.restore(&id).await
    }

    /// Verification `id` as a viewer reads it.
    pub async fn verification(&self, id: &str) -> Value {
        self.app
            .get(
                &self.org.path(&format!("/backups/verifications/{id}")),
                &self.org.viewer,
            )
            .await
            .expect(200)
            .clone()
    }

    /// The restore preview of `backup` as a viewer reads it.
    pub async fn preview(&self, backup: &str) -> Value {
        self.app
            .get(
                &self.org.path(&format!("/backups/history/{backup}/preview")),
                &self.org.viewer,
            )
            .await
            .expect(200)
            .clone()
    }
}
