//! The worker role: claims pending backups with a lease, runs them (`tar`
//! or `pg_dump`, streamed through compression, encryption and SHA-256 to
//! the storage target), records the outcome, closes runs and prunes by
//! retention; and claims restores the same way (see [`restore`]). It also
//! sends the notifications events queued (see `cairn_core::notifications`).
//!
//! # Tasks
//!
//! [`Worker::run`] drives `concurrency` loops; each repeats
//! [`Worker::process_one`] and sleeps for the poll interval when there is
//! nothing to do. A backup runs inside its loop's task, next to a lease
//! renewal that fires every third of the lease; the archiver and uploads
//! use blocking threads of their own (see `cairn_core::format::tar` and
//! `cairn_core::storage`). One more loop dispatches due notification
//! deliveries, so that a slow or failing receiver never holds a backup
//! slot.
//!
//! # Leases and fencing
//!
//! A claim sets the backup `running`, increments its `attempt` and sets
//! `lease_expires_at`. Every later write of that backup is conditional on
//! `(id, attempt, status = 'running')`, so a worker whose lease expired —
//! and whose backup another worker has since failed as `worker_lost` — can
//! no longer change the record: its late success is refused and the
//! objects it wrote are deleted. A worker that cannot renew its lease
//! stops the backup (which aborts the upload).

mod backup;
mod copy;
mod failure;
mod housekeeping;
pub mod lease;
mod prune;
mod restore;
mod system_backup;
mod verify;
mod volumes;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use uuid::Uuid;

use cairn_core::config::WorkerConfig;
use cairn_core::Cairn;

pub use housekeeping::{housekeeping, Housekept};

/// How often a worker runs [`housekeeping`].
const HOUSEKEEPING_EVERY: std::time::Duration = std::time::Duration::from_secs(600);
pub use lease::reap;
pub use prune::prune;

/// Settings of a worker.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// Backups run at once.
    pub concurrency: usize,
    /// How long a claim holds without renewal.
    pub lease: Duration,
    /// How long an idle loop waits before looking again.
    pub poll: Duration,
    /// Names this worker in the records it claims.
    pub owner: String,
}

impl WorkerOptions {
    pub fn from_config(config: &WorkerConfig) -> WorkerOptions {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
        WorkerOptions {
            concurrency: config.concurrency.max(1),
            lease: Duration::from_secs(config.lease_seconds.max(1)),
            poll: Duration::from_millis(config.poll_millis.max(10)),
            owner: format!(
                "{host}:{}:{}",
                std::process::id(),
                &Uuid::now_v7().simple().to_string()[24..]
            ),
        }
    }
}

/// A worker: the context and its settings. Cheap to clone.
#[derive(Clone)]
pub struct Worker {
    cairn: Cairn,
    options: Arc<WorkerOptions>,
}

impl Worker {
    pub fn new(cairn: Cairn, options: WorkerOptions) -> Worker {
        Worker {
            cairn,
            options: Arc::new(options),
        }
    }

    pub fn options(&self) -> &WorkerOptions {
        &self.options
    }

    /// Runs `concurrency` loops until `stop` turns true. A backup running
    /// when the worker is stopped is ended as `interrupted`.
    pub async fn run(&self, stop: watch::Receiver<bool>) {
        tracing::info!(
            owner = %self.options.owner,
            concurrency = self.options.concurrency,
            lease_seconds = self.options.lease.as_secs(),
            "worker started"
        );
        // Leases of workers that died while this one was down expire now,
        // and their leftovers are removed before new work starts.
        if let Err(error) = reap(&self.cairn, Utc::now()).await {
            tracing::warn!(
                error = format!("{error:#}"),
                "reaping expired leases failed"
            );
        }
        // Swaps of restores that died on this machine are settled before
        // any backup reads their volumes.
        match restore::recover_swaps(&self.cairn).await {
            Ok(0) => {}
            Ok(settled) => tracing::warn!(settled, "settled unfinished restore swaps"),
            Err(error) => tracing::warn!(
                error = format!("{error:#}"),
                "settling unfinished restore swaps failed"
            ),
        }
        let loops: Vec<_> = (0..self.options.concurrency)
            .map(|_| {
                let worker = self.clone();
                let stop = stop.clone();
                tokio::spawn(async move { worker.drive(stop).await })
            })
            .collect();
        let notifier = {
            let worker = self.clone();
            let stop = stop.clone();
            tokio::spawn(async move { worker.notify(stop).await })
        };
        let listener = tokio::spawn(cairn_core::wake::listen(self.cairn.clone(), stop.clone()));
        for handle in loops {
            let _ = handle.await;
        }
        let _ = notifier.await;
        let _ = listener.await;
        tracing::info!(owner = %self.options.owner, "worker stopped");
    }

    async fn drive(&self, mut stop: watch::Receiver<bool>) {
        let mut woken = self.cairn.wake.subscribe();
        while !*stop.borrow() {
            // Marked seen before looking, so work recorded while this loop
            // looks wakes it again at once.
            woken.borrow_and_update();
            match self.process_one(&stop, Utc::now()).await {
                Ok(Some(_)) => {
                    // What the unit queued (its notifications) goes out now.
                    self.cairn.wake.now();
                    continue;
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::error!(error = format!("{error:#}"), "worker tick failed");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.options.poll) => {}
                _ = woken.changed() => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// Sends due notification deliveries until `stop` turns true: a pass
    /// right after one that found work or a wake-up (`Cairn::wake`), else
    /// one per poll interval.
    async fn notify(&self, mut stop: watch::Receiver<bool>) {
        // Housekeeping rides on this loop, at most every ten minutes.
        let mut last_housekeeping: Option<std::time::Instant> = None;
        let mut woken = self.cairn.wake.subscribe();
        while !*stop.borrow() {
            woken.borrow_and_update();
            if last_housekeeping.is_none_or(|at| at.elapsed() >= HOUSEKEEPING_EVERY) {
                last_housekeeping = Some(std::time::Instant::now());
                match housekeeping(&self.cairn, Utc::now()).await {
                    Ok(done) if done != Housekept::default() => {
                        tracing::info!(?done, "housekeeping removed expired records")
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(error = format!("{error:#}"), "housekeeping failed")
                    }
                }
            }
            match cairn_core::notifications::dispatch_due(
                &self.cairn,
                &self.options.owner,
                Utc::now(),
            )
            .await
            {
                Ok(report) if !report.is_empty() => continue,
                Ok(_) => {}
                Err(error) => {
                    tracing::error!(error = format!("{error:#}"), "notification dispatch failed");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.options.poll) => {}
                _ = woken.changed() => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// One unit of work:
    /// 1. fail backups, restores and verifications whose lease expired
    ///    (`worker_lost`) and clean up after them;
    /// 2. claim the oldest pending restore — restores go first: someone is
    ///    waiting for them — else the oldest pending backup, else the
    ///    oldest pending verification;
    /// 3. run it, renewing the lease, and record the outcome (fenced);
    /// 4. for a backup, close its run when it was the last, and prune by
    ///    retention.
    ///
    /// Returns the id of the restore, backup or verification it ran.
    pub async fn process_one(
        &self,
        stop: &watch::Receiver<bool>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<Uuid>> {
        reap(&self.cairn, now).await?;
        restore::reap(&self.cairn, now).await?;
        verify::reap(&self.cairn, now).await?;
        copy::reap(&self.cairn, now).await?;
        system_backup::reap(&self.cairn, now).await?;
        if *stop.borrow() {
            return Ok(None);
        }
        // The lease starts now, not when the tick began: reaping may have
        // taken a while.
        let claimed_at = Utc::now().max(now);
        if let Some(claimed) = lease::claim::<cairn_entity::restore::Entity>(
            &self.cairn.db,
            &self.options.owner,
            self.options.lease,
            claimed_at,
        )
        .await?
        {
            let id = claimed.id;
            restore::run_restore(self, claimed, stop.clone()).await;
            return Ok(Some(id));
        }
        let Some(claimed) = lease::claim::<cairn_entity::backup::Entity>(
            &self.cairn.db,
            &self.options.owner,
            self.options.lease,
            claimed_at,
        )
        .await?
        else {
            // Then self-backups: Cairn's own database, small and rare.
            if let Some(claimed) = lease::claim::<cairn_entity::system_backup::Entity>(
                &self.cairn.db,
                &self.options.owner,
                self.options.lease,
                claimed_at,
            )
            .await?
            {
                let id = claimed.id;
                system_backup::run_system_backup(self, claimed, stop.clone()).await;
                return Ok(Some(id));
            }
            // Then copies due for another attempt: they read the primary.
            if let Some(claimed) = lease::claim::<cairn_entity::backup_copy::Entity>(
                &self.cairn.db,
                &self.options.owner,
                self.options.lease,
                claimed_at,
            )
            .await?
            {
                let id = claimed.id;
                copy::run_copy(self, claimed, stop.clone()).await;
                return Ok(Some(id));
            }
            // Verifications last: they prove backups that exist, and wait
            // for nothing but a restore of their volume.
            let claimed = lease::claim::<cairn_entity::verification::Entity>(
                &self.cairn.db,
                &self.options.owner,
                self.options.lease,
                claimed_at,
            )
            .await?;
            return Ok(match claimed {
                Some(claimed) => {
                    let id = claimed.id;
                    verify::run_verification(self, claimed, stop.clone()).await;
                    Some(id)
                }
                None => None,
            });
        };
        let id = claimed.id;
        let run_id = claimed.run_id;
        backup::run_backup(self, claimed, stop.clone()).await;
        if let Some(run_id) = run_id {
            prune::close_run(&self.cairn, run_id, Utc::now()).await?;
        }
        Ok(Some(id))
    }
}
