//! The safety backup a restore takes of its destination before it writes
//! anything: an ordinary backup record with trigger `safety`, run by the
//! restore's own worker.

use super::*;
use cairn_entity::enums::{BackupStatus, RunStatus, Trigger};

impl Restore<'_> {
    /// Backs up the destination as it is now:
    /// 1. open a run of its own (trigger `safety`) in the restored backup's
    ///    job, when that job still exists;
    /// 2. insert the backup record, to the source backup's target, already
    ///    claimed by this worker;
    /// 3. link it to the restore (fenced on the restore's attempt);
    /// 4. run it here and close its run;
    /// 5. refuse to go on unless it succeeded.
    pub(super) async fn safety_backup(&self, attempt: &mut Attempt) -> Result<Uuid, Failure> {
        let cairn = &self.worker.cairn;
        let run_id = self.open_safety_run(attempt).await?;
        let model = self.claimed_safety_record(attempt, run_id).await?;
        let id = model.id;
        attempt.note("info", format!("taking safety backup {id}"));
        let linked = lease::fenced_update::<restore::Entity>(
            &cairn.db,
            attempt.model.id,
            attempt.model.attempt,
            restore::ActiveModel {
                safety_backup_id: ActiveValue::Set(Some(id)),
                log: ActiveValue::Set(attempt.log_value()),
                ..Default::default()
            },
        )
        .await
        .map_err(internal)?;
        if !linked {
            return Err(Failure::new(
                FailureCode::LeaseLost,
                "this attempt no longer holds the restore",
            ));
        }
        attempt.model.safety_backup_id = Some(id);
        crate::backup::run_backup(self.worker, model, self.stop.clone()).await;
        if let Some(run_id) = run_id {
            crate::prune::close_run(cairn, run_id, Utc::now())
                .await
                .map_err(internal)?;
        }
        let ended = backup::Entity::find_by_id(id)
            .one(&cairn.db)
            .await
            .map_err(internal)?
            .ok_or_else(|| internal("the safety backup's record disappeared"))?;
        if ended.status != BackupStatus::Success {
            return Err(Failure::new(
                FailureCode::SafetyBackupFailed,
                format!(
                    "the safety backup {id} failed ({}: {}); the destination was not changed. \
                     Fix the cause, or restore without a safety backup (\"safetyBackup\": false)",
                    ended.error_code.as_deref().unwrap_or("unknown"),
                    ended.error_message.as_deref().unwrap_or("no message")
                ),
            ));
        }
        attempt.note(
            "info",
            format!(
                "safety backup {id} stored ({} bytes at {})",
                ended.archive_size.unwrap_or(0),
                ended.storage_path.as_deref().unwrap_or("?")
            ),
        );
        Ok(id)
    }

    /// A run of trigger `safety` in the restored backup's job (`None` when
    /// the job is gone, or a safety run of it is already open).
    async fn open_safety_run(&self, attempt: &Attempt) -> Result<Option<Uuid>, Failure> {
        let Some(job_id) = self.source.job_id else {
            return Ok(None);
        };
        let now = Utc::now();
        let run = backup_run::ActiveModel {
            id: Set(Uuid::now_v7()),
            job_id: Set(job_id),
            trigger: Set(Trigger::Safety),
            scheduled_for: Set(now),
            status: Set(RunStatus::Running),
            reason: Set(Some(format!(
                "safety backup of {}/{} before restore {}",
                self.destination.app.name, self.destination.volume.name, attempt.model.id
            ))),
            created_at: Set(now),
            finished_at: Set(None),
            missed_count: Set(None),
            missed_from: Set(None),
            missed_to: Set(None),
            scope_app_id: Set(None),
        }
        .insert(&self.worker.cairn.db)
        .await;
        match run {
            Ok(run) => Ok(Some(run.id)),
            Err(error) if cairn_core::error::is_unique_violation(&error) => Ok(None),
            Err(error) => Err(internal(error)),
        }
    }

    /// The safety backup's record, `running` and leased to this worker from
    /// the start, so no other worker claims it.
    async fn claimed_safety_record(
        &self,
        attempt: &Attempt,
        run_id: Option<Uuid>,
    ) -> Result<backup::Model, Failure> {
        let now = Utc::now();
        let lease = chrono::Duration::from_std(self.worker.options.lease)
            .unwrap_or(chrono::Duration::seconds(30));
        backup::ActiveModel {
            id: Set(Uuid::now_v7()),
            organization_id: Set(attempt.model.organization_id),
            run_id: Set(run_id),
            job_id: Set(self.source.job_id),
            app_id: Set(Some(self.destination.app.id)),
            target_id: Set(self.source.target_id),
            app_name: Set(self.destination.app.name.clone()),
            volume_name: Set(self.destination.volume.name.clone()),
            status: Set(BackupStatus::Running),
            archive_size: Set(None),
            storage_path: Set(None),
            sha256: Set(None),
            log: Set(json!([{
                "at": now,
                "level": "info",
                "message": format!("safety backup before restore {}", attempt.model.id),
            }])),
            error_code: Set(None),
            error_message: Set(None),
            attempt: Set(1),
            lease_owner: Set(Some(self.worker.options.owner.clone())),
            lease_expires_at: Set(Some(now + lease)),
            created_at: Set(now),
            started_at: Set(Some(now)),
            finished_at: Set(None),
            trigger: Set(Trigger::Safety),
            kind: Set(None),
            manifest: Set(None),
            suspicious: Set(false),
            suspicious_reason: Set(None),
            accepted_at: Set(None),
            read_until: Set(None),
        }
        .insert(&self.worker.cairn.db)
        .await
        .map_err(internal)
    }
}
