//! Waking idle workers the moment work is recorded, instead of at their
//! next poll (`worker.poll_millis`).
//!
//! In one process (`cairn serve`, the tests) a [`Wake`] is a counter every
//! worker loop watches: recording work bumps it and every loop looks for
//! work at once. Across processes (PostgreSQL), recording work also sends
//! `NOTIFY cairn_work`, and each worker process [`listen`]s on that channel
//! and bumps its own counter. Polling stays as the fallback: a lost
//! notification (a listener reconnecting, SQLite's single process being
//! the only one) costs at most one poll interval.

use std::sync::Arc;
use std::time::Duration;

use sea_orm::{ConnectionTrait, DbBackend};
use tokio::sync::watch;

use crate::Cairn;

/// The PostgreSQL channel.
pub const CHANNEL: &str = "cairn_work";

/// The wake-up counter of one process.
#[derive(Clone, Debug)]
pub struct Wake(Arc<watch::Sender<u64>>);

impl Default for Wake {
    fn default() -> Wake {
        Wake(Arc::new(watch::channel(0).0))
    }
}

impl Wake {
    /// A loop's view of the counter: `changed()` resolves at the next wake.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }

    /// Wakes every loop of this process.
    pub fn now(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }
}

impl Cairn {
    /// Call once work is committed (a pending backup, restore,
    /// verification or self-backup): this process's loops wake, and on
    /// PostgreSQL every process listening on `cairn_work`.
    pub async fn work_recorded(&self) {
        self.wake.now();
        if self.db.get_database_backend() == DbBackend::Postgres {
            if let Err(error) = self
                .db
                .execute_unprepared(&format!("NOTIFY {CHANNEL}"))
                .await
            {
                tracing::debug!(%error, "NOTIFY {CHANNEL} failed; workers find the work at their next poll");
            }
        }
    }
}

/// On PostgreSQL, wakes this process's loops at every `NOTIFY cairn_work`
/// until `stop` turns true, reconnecting (after a pause) when the
/// connection drops. Returns at once on SQLite.
pub async fn listen(cairn: Cairn, mut stop: watch::Receiver<bool>) {
    use sea_orm::sqlx::postgres::PgListener;
    if cairn.db.get_database_backend() != DbBackend::Postgres {
        return;
    }
    let url = cairn.config.database_url();
    while !*stop.borrow() {
        let listener = async {
            let mut listener = PgListener::connect(&url).await?;
            listener.listen(CHANNEL).await?;
            // Work recorded while no one listened is looked for now.
            cairn.wake.now();
            loop {
                listener.recv().await?;
                cairn.wake.now();
            }
            #[allow(unreachable_code)]
            Ok::<(), sea_orm::sqlx::Error>(())
        };
        tokio::select! {
            outcome = listener => {
                if let Err(error) = outcome {
                    tracing::warn!(
                        error = crate::format::pg_tables::describe(&error),
                        "listening for work (LISTEN {CHANNEL}) failed; polling until it is back"
                    );
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = stop.changed() => {}
                }
            }
            _ = stop.changed() => {}
        }
    }
}
