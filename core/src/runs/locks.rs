//! The schedulers' slot locks: `SET lock:backup:{jobId}:{minuteTimestamp}
//! <instance> NX PX 61000`, for every due job of a tick in one pipelined round trip. A lock
//! only saves work — the database's unique `(job_id, scheduled_for)` is the
//! fence that keeps a slot to one run — so a lock service that is down
//! degrades the scheduler to the fence alone instead of stopping it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// How long a slot lock holds: a minute and a second, so a lock outlives
/// the tick that took it but not the next minute's.
pub const LOCK_TTL: Duration = Duration::from_millis(61_000);

/// The key of a job's scheduled slot: the slot's minute (Unix seconds), not
/// the replica's clock, so replicas whose clocks differ agree on it.
pub fn key(job_id: Uuid, slot: DateTime<Utc>) -> String {
    let minute = slot.timestamp() - slot.timestamp().rem_euclid(60);
    format!("lock:backup:{job_id}:{minute}")
}

/// The key of a job's verify slot, minute-keyed like [`key`].
pub fn verify_key(job_id: Uuid, slot: DateTime<Utc>) -> String {
    let minute = slot.timestamp() - slot.timestamp().rem_euclid(60);
    format!("lock:verify:{job_id}:{minute}")
}

/// The key of a self-backup slot, minute-keyed like [`key`].
pub fn system_backup_key(slot: DateTime<Utc>) -> String {
    let minute = slot.timestamp() - slot.timestamp().rem_euclid(60);
    format!("lock:system-backup:{minute}")
}

/// Why the lock service could not answer.
#[derive(Debug, thiserror::Error)]
#[error("the lock service is unreachable: {0}")]
pub struct LockError(pub String);

/// A lock service.
#[async_trait::async_trait]
pub trait SlotLocks: Send + Sync {
    /// Tries to take each key for `ttl`, as `owner`; says which were taken.
    async fn acquire(
        &self,
        keys: &[String],
        owner: &str,
        ttl: Duration,
    ) -> Result<Vec<bool>, LockError>;

    /// Round trips made to the lock service so far (for the benchmark).
    fn round_trips(&self) -> u64 {
        0
    }
}

/// In-process locks: the single scheduler of `cairn serve` without Redis.
#[derive(Default)]
pub struct LocalLocks {
    held: Mutex<HashMap<String, Instant>>,
}

#[async_trait::async_trait]
impl SlotLocks for LocalLocks {
    async fn acquire(
        &self,
        keys: &[String],
        _owner: &str,
        ttl: Duration,
    ) -> Result<Vec<bool>, LockError> {
        let now = Instant::now();
        let mut held = self
            .held
            .lock()
            .map_err(|_| LockError("the in-process lock table is poisoned".into()))?;
        held.retain(|_, until| *until > now);
        Ok(keys
            .iter()
            .map(|key| {
                if held.contains_key(key) {
                    false
                } else {
                    held.insert(key.clone(), now + ttl);
                    true
                }
            })
            .collect())
    }
}

/// Redis locks through a `deadpool-redis` pool: one pipeline per tick.
pub struct RedisLocks {
    pool: deadpool_redis::Pool,
    trips: std::sync::atomic::AtomicU64,
}

/// Says nothing of the pool's settings: the URL may hold a password.
impl std::fmt::Debug for RedisLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisLocks")
    }
}

impl RedisLocks {
    /// A pool for `url` (`redis://…`); nothing is connected until the first
    /// tick. Errors never repeat the URL (it may hold a password).
    pub fn new(url: &str) -> Result<RedisLocks, LockError> {
        let pool = deadpool_redis::Config::from_url(url)
            .builder()
            .map_err(|_| {
                LockError(
                    "the Redis URL is not valid (redis://[:password@]host[:port][/db])".into(),
                )
            })?
            .max_size(4)
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .runtime(deadpool_redis::Runtime::Tokio1)
            .build()
            .map_err(|_| LockError("the Redis settings are not valid".into()))?;
        Ok(RedisLocks {
            pool,
            trips: Default::default(),
        })
    }

    /// Checks that Redis answers (for readiness).
    pub async fn ping(&self) -> Result<(), LockError> {
        let mut connection = self
            .pool
            .get()
            .await
            .map_err(|e| LockError(e.to_string()))?;
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .map(|_| ())
            .map_err(|e| LockError(e.to_string()))
    }
}

#[async_trait::async_trait]
impl SlotLocks for RedisLocks {
    async fn acquire(
        &self,
        keys: &[String],
        owner: &str,
        ttl: Duration,
    ) -> Result<Vec<bool>, LockError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut connection = self
            .pool
            .get()
            .await
            .map_err(|e| LockError(e.to_string()))?;
        let mut pipeline = redis::pipe();
        for key in keys {
            pipeline
                .cmd("SET")
                .arg(key)
                .arg(owner)
                .arg("NX")
                .arg("PX")
                .arg(ttl.as_millis() as u64);
        }
        self.trips
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // `SET … NX` answers OK when it set the key and nil when it exists.
        let answers: Vec<Option<String>> = tokio::time::timeout(
            Duration::from_secs(10),
            pipeline.query_async(&mut connection),
        )
        .await
        .map_err(|_| LockError("Redis did not answer within 10 s".into()))?
        .map_err(|e| LockError(e.to_string()))?;
        Ok(answers.into_iter().map(|a| a.is_some()).collect())
    }

    fn round_trips(&self) -> u64 {
        self.trips.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_the_slot_minute() {
        let job = Uuid::nil();
        let slot = DateTime::parse_from_rfc3339("2024-01-15T02:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            key(job, slot),
            format!("lock:backup:{job}:{}", slot.timestamp())
        );
        assert_eq!(
            key(job, slot + chrono::Duration::seconds(59)),
            key(job, slot)
        );
    }

    #[tokio::test]
    async fn local_locks_are_taken_once_until_they_expire() {
        let locks = LocalLocks::default();
        let keys = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(
            locks
                .acquire(&keys, "x", Duration::from_millis(50))
                .await
                .unwrap(),
            [true, true]
        );
        assert_eq!(
            locks
                .acquire(&keys[..1], "y", Duration::from_millis(50))
                .await
                .unwrap(),
            [false]
        );
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(
            locks
                .acquire(&keys[..1], "y", Duration::from_millis(50))
                .await
                .unwrap(),
            [true]
        );
    }
}
