//! Notifications: channels per organization (email, Slack, webhook), the
//! deliveries an event produces, and their dispatch with retries.
//!
//! # From event to message
//!
//! 1. **Enqueue.** In the same transaction that records the event — the
//!    conditional update that closes a run, the insert of a `missed` slot
//!    record, the fenced update that fails a restore — one `pending`
//!    delivery per enabled channel of the organization is inserted, with the
//!    payload fixed then ([`payload`]). The event is recorded once, so its
//!    deliveries are too (and unique indexes on (channel, run, event) and
//!    (channel, restore, event) and (channel, verification, event) say so in
//!    the schema). Enqueueing runs in a
//!    savepoint: if it fails, the error is logged and the event itself is
//!    still recorded — a notification problem never fails a backup.
//! 2. **Dispatch** ([`dispatch_due`], driven by every worker process): due
//!    pending deliveries are claimed with a lease (attempt count + 1, fenced
//!    on the previous count), sent concurrently ([`send`]), and recorded:
//!    `sent`, or back to `pending` with the next attempt after an
//!    exponential backoff, or `failed` after `max_attempts` or a permanent
//!    refusal. A worker that dies mid-send leaves a lease that expires; the
//!    delivery is then sent again (consumers drop duplicates by the payload's
//!    `id`, the delivery's id).

pub mod channels;
pub mod payload;
pub mod render;
pub mod send;

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use cairn_entity::enums::DeliveryStatus;
use cairn_entity::{backup_job, backup_run, notification_channel, notification_delivery, restore};

use crate::config::NotificationsConfig;
use crate::error::{Error, Result};
use crate::Cairn;

pub use channels::{ChannelRequest, ChannelType, ChannelView};
pub use payload::{Event, NotificationPayload};

/// Deliveries one dispatch pass claims.
const BATCH: u64 = 32;
/// Deliveries sent at once by one pass.
const PARALLEL: usize = 8;

/// What an event is about.
#[derive(Clone, Debug)]
pub enum Subject {
    Run(Uuid),
    Restore(Uuid),
    Verification(Uuid),
    /// A backup's copy that failed for good.
    Copy(Uuid),
    /// A local target low on space, seen by a backup of the organization:
    /// sent once a day per target and organization.
    LowSpace {
        organization_id: Uuid,
        target_id: Uuid,
        free_bytes: u64,
        warn_free_bytes: u64,
    },
    /// Backups of one organization whose archive a sweep of a target found
    /// gone (now `missing`).
    Missing {
        organization_id: Uuid,
        target_id: Uuid,
        backup_ids: Vec<Uuid>,
    },
}

/// Inserts the deliveries of the event `subject` is in now (a closed or
/// unfired run, a failed restore); returns how many. Call it in the
/// transaction that recorded the event.
pub async fn enqueue(
    db: &impl ConnectionTrait,
    subject: Subject,
    now: DateTime<Utc>,
) -> Result<usize> {
    let mut verification_id = None;
    let mut copy_id = None;
    let mut low_space_key = None;
    let (organization_id, payload, run_id, restore_id) = match subject {
        Subject::Run(run_id) => {
            let run = backup_run::Entity::find_by_id(run_id)
                .one(db)
                .await?
                .ok_or_else(|| anyhow::anyhow!("run {run_id} vanished while notifying"))?;
            let job = backup_job::Entity::find_by_id(run.job_id)
                .one(db)
                .await?
                .ok_or_else(|| anyhow::anyhow!("job {} vanished while notifying", run.job_id))?;
            let suspicious = cairn_entity::backup::Entity::find()
                .filter(cairn_entity::backup::Column::RunId.eq(run_id))
                .filter(cairn_entity::backup::Column::Suspicious.eq(true))
                .one(db)
                .await?
                .is_some();
            let Some(event) = payload::run_event(&run, &job, suspicious) else {
                return Ok(0);
            };
            let payload = payload::run_payload(db, &run, &job, event).await?;
            (job.organization_id, payload, Some(run_id), None)
        }
        Subject::Restore(restore_id) => {
            let restore = restore::Entity::find_by_id(restore_id)
                .one(db)
                .await?
                .ok_or_else(|| anyhow::anyhow!("restore {restore_id} vanished while notifying"))?;
            let payload = payload::restore_payload(db, &restore, now).await?;
            (restore.organization_id, payload, None, Some(restore_id))
        }
        Subject::Verification(id) => {
            let verification = cairn_entity::verification::Entity::find_by_id(id)
                .one(db)
                .await?
                .ok_or_else(|| anyhow::anyhow!("verification {id} vanished while notifying"))?;
            let job = match verification.job_id {
                Some(job_id) => backup_job::Entity::find_by_id(job_id).one(db).await?,
                None => None,
            };
            let Some(event) = payload::verification_event(&verification, job.as_ref()) else {
                return Ok(0);
            };
            let payload =
                payload::verification_payload(db, &verification, job.as_ref(), event, now).await?;
            verification_id = Some(id);
            (verification.organization_id, payload, None, None)
        }
        Subject::Copy(id) => {
            let copy = cairn_entity::backup_copy::Entity::find_by_id(id)
                .one(db)
                .await?
                .ok_or_else(|| anyhow::anyhow!("copy {id} vanished while notifying"))?;
            let backup = cairn_entity::backup::Entity::find_by_id(copy.backup_id)
                .one(db)
                .await?
                .ok_or_else(|| {
                    anyhow::anyhow!("backup {} vanished while notifying", copy.backup_id)
                })?;
            let job = match backup.job_id {
                Some(job_id) => backup_job::Entity::find_by_id(job_id).one(db).await?,
                None => None,
            };
            if job.as_ref().is_some_and(|job| !job.notify_on_failure) {
                return Ok(0);
            }
            let payload = payload::copy_payload(db, &copy, &backup, job.as_ref(), now).await?;
            copy_id = Some(id);
            (copy.organization_id, payload, None, None)
        }
        Subject::LowSpace {
            organization_id,
            target_id,
            free_bytes,
            warn_free_bytes,
        } => {
            let key = format!("{target_id}:{}", now.format("%Y-%m-%d"));
            let sent_today = notification_delivery::Entity::find()
                .filter(notification_delivery::Column::OrganizationId.eq(organization_id))
                .filter(notification_delivery::Column::LowSpaceKey.eq(key.clone()))
                .one(db)
                .await?
                .is_some();
            if sent_today {
                return Ok(0);
            }
            let target = cairn_entity::backup_target::Entity::find_by_id(target_id)
                .one(db)
                .await?
                .ok_or_else(|| anyhow::anyhow!("target {target_id} vanished while notifying"))?;
            let low_space = payload::LowSpaceRef {
                target_id,
                target_name: target.name,
                free_bytes,
                warn_free_bytes,
            };
            let payload = payload::low_space_payload(db, organization_id, low_space, now).await?;
            low_space_key = Some(key);
            (organization_id, payload, None, None)
        }
        Subject::Missing {
            organization_id,
            target_id,
            backup_ids,
        } => {
            let target = cairn_entity::backup_target::Entity::find_by_id(target_id)
                .one(db)
                .await?
                .ok_or_else(|| anyhow::anyhow!("target {target_id} vanished while notifying"))?;
            let backups = cairn_entity::backup::Entity::find()
                .filter(cairn_entity::backup::Column::Id.is_in(backup_ids))
                .order_by_asc(cairn_entity::backup::Column::Id)
                .all(db)
                .await?
                .into_iter()
                .map(|b| payload::MissingBackup {
                    backup_id: b.id,
                    app_name: b.app_name,
                    volume_name: b.volume_name,
                    path: b.storage_path.unwrap_or_default(),
                })
                .collect();
            let missing = payload::MissingRef {
                target_id,
                target_name: target.name,
                backups,
            };
            let payload = payload::missing_payload(db, organization_id, missing, now).await?;
            (organization_id, payload, None, None)
        }
    };
    let channels = notification_channel::Entity::find()
        .filter(notification_channel::Column::OrganizationId.eq(organization_id))
        .filter(notification_channel::Column::Enabled.eq(true))
        .order_by_asc(notification_channel::Column::Id)
        .all(db)
        .await?;
    for channel in &channels {
        let id = Uuid::now_v7();
        let mut payload = payload.clone();
        payload.id = id;
        notification_delivery::ActiveModel {
            id: Set(id),
            organization_id: Set(organization_id),
            channel_id: Set(Some(channel.id)),
            channel_name: Set(channel.name.clone()),
            channel_type: Set(channel.channel_type.clone()),
            run_id: Set(run_id),
            restore_id: Set(restore_id),
            verification_id: Set(verification_id),
            copy_id: Set(copy_id),
            low_space_key: Set(low_space_key.clone()),
            event: Set(payload.event.as_str().to_owned()),
            payload: Set(serde_json::to_value(&payload).map_err(anyhow::Error::from)?),
            status: Set(DeliveryStatus::Pending),
            attempts: Set(0),
            next_attempt_at: Set(now),
            lease_owner: Set(None),
            lease_expires_at: Set(None),
            response_code: Set(None),
            last_error: Set(None),
            created_at: Set(now),
            last_attempt_at: Set(None),
            delivered_at: Set(None),
        }
        .insert(db)
        .await?;
    }
    Ok(channels.len())
}

/// [`enqueue`] in a savepoint of `txn`: when it fails, the failure is logged
/// and rolled back alone, and the caller's event is still committed.
pub async fn enqueue_guarded(txn: &DatabaseTransaction, subject: Subject, now: DateTime<Utc>) {
    let outcome = async {
        let savepoint = txn.begin().await?;
        match enqueue(&savepoint, subject.clone(), now).await {
            Ok(count) => {
                savepoint.commit().await?;
                Ok(count)
            }
            Err(error) => {
                savepoint.rollback().await?;
                Err(error)
            }
        }
    }
    .await;
    match outcome {
        Ok(0) => {}
        Ok(count) => tracing::debug!(?subject, count, "notifications queued"),
        Err(error) => tracing::error!(
            ?subject,
            error = format!("{error:#}"),
            "queueing notifications failed; the event itself is recorded"
        ),
    }
}

/// The wait before attempt `attempts + 1`, after `attempts` failed ones:
/// `retry_base_seconds` doubled per further failure, at most
/// `retry_max_seconds`.
pub fn retry_delay(config: &NotificationsConfig, attempts: u32) -> Duration {
    crate::config::backoff(
        config.retry_base_seconds,
        config.retry_max_seconds,
        attempts,
    )
}

/// What one dispatch pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DispatchReport {
    pub sent: usize,
    /// Failed attempts that will be retried.
    pub retrying: usize,
    /// Deliveries that ended `failed`.
    pub failed: usize,
}

impl DispatchReport {
    pub fn is_empty(&self) -> bool {
        *self == DispatchReport::default()
    }
}

/// One dispatch pass at `now`:
/// 1. load up to 32 pending deliveries due by `now` whose lease is free;
/// 2. for each, 8 at a time: end it `failed` if its attempts ran out
///    without a recorded outcome (a sender died mid-send); else claim it
///    (attempts + 1, a lease for `owner`, fenced on the attempt count read,
///    so two workers never both claim an attempt) just before sending;
/// 3. send it to its channel as it is now, within a time cap shorter than
///    the lease;
/// 4. record the outcome, fenced on the claim: `sent`; `failed` when the
///    attempts are used up, the receiver refused for good, or the channel
///    was deleted or disabled; else `pending` again after [`retry_delay`].
///
/// A delivery whose bookkeeping fails is logged and left to its lease; the
/// pass goes on with the others.
pub async fn dispatch_due(
    cairn: &Cairn,
    owner: &str,
    now: DateTime<Utc>,
) -> Result<DispatchReport> {
    use notification_delivery::Column as D;
    let due = notification_delivery::Entity::find()
        .filter(D::Status.eq(DeliveryStatus::Pending))
        .filter(D::NextAttemptAt.lte(now))
        .filter(
            Condition::any()
                .add(D::LeaseExpiresAt.is_null())
                .add(D::LeaseExpiresAt.lt(now)),
        )
        .order_by_asc(D::NextAttemptAt)
        .order_by_asc(D::Id)
        .limit(BATCH)
        .all(&cairn.db)
        .await?;
    if due.is_empty() {
        return Ok(DispatchReport::default());
    }
    let sender = send::Sender::new(cairn)?;
    let started = std::time::Instant::now();
    let outcomes: Vec<(Uuid, Result<Option<DeliveryStatus>>)> = futures::stream::iter(due)
        .map(|delivery| async {
            let id = delivery.id;
            (
                id,
                attempt(cairn, &sender, owner, delivery, now, started).await,
            )
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let mut report = DispatchReport::default();
    for (id, outcome) in outcomes {
        match outcome {
            Ok(Some(DeliveryStatus::Sent)) => report.sent += 1,
            Ok(Some(DeliveryStatus::Pending)) => report.retrying += 1,
            Ok(Some(DeliveryStatus::Failed)) => report.failed += 1,
            Ok(None) => {}
            Err(error) => tracing::error!(
                delivery_id = %id,
                error = format!("{error:#}"),
                "recording a notification attempt failed; its lease will expire"
            ),
        }
    }
    Ok(report)
}

/// Claims, sends and records one delivery; `None` when another worker
/// claimed it first.
async fn attempt(
    cairn: &Cairn,
    sender: &send::Sender,
    owner: &str,
    delivery: notification_delivery::Model,
    now: DateTime<Utc>,
    started: std::time::Instant,
) -> Result<Option<DeliveryStatus>> {
    use notification_delivery::Column as D;
    let settings = &cairn.config.notifications;
    let timeout = settings.timeout_seconds.max(1);
    // The pass's clock, moved on by the time the pass has taken so far.
    let at = now + chrono::Duration::from_std(started.elapsed()).unwrap_or_default();
    let max_attempts = settings.max_attempts.max(1) as i32;
    if delivery.attempts >= max_attempts {
        let ended = notification_delivery::Entity::update_many()
            .set(notification_delivery::ActiveModel {
                status: Set(DeliveryStatus::Failed),
                lease_owner: Set(None),
                lease_expires_at: Set(None),
                last_error: Set(Some(format!(
                    "{} attempt(s) made; the outcome of the last one was never recorded (its worker stopped)",
                    delivery.attempts
                ))),
                ..Default::default()
            })
            .filter(D::Id.eq(delivery.id))
            .filter(D::Attempts.eq(delivery.attempts))
            .filter(D::Status.eq(DeliveryStatus::Pending))
            .exec(&cairn.db)
            .await?;
        return Ok((ended.rows_affected == 1).then_some(DeliveryStatus::Failed));
    }
    let attempts = delivery.attempts + 1;
    // Longer than the cap on the send below, so a live sender keeps it.
    let lease = chrono::Duration::seconds((timeout * 5 + 60).min(86_400) as i64);
    let claimed = notification_delivery::Entity::update_many()
        .col_expr(D::Attempts, Expr::value(attempts))
        .col_expr(D::LeaseOwner, Expr::value(owner))
        .col_expr(D::LeaseExpiresAt, Expr::value(at + lease))
        .col_expr(D::LastAttemptAt, Expr::value(at))
        .filter(D::Id.eq(delivery.id))
        .filter(D::Status.eq(DeliveryStatus::Pending))
        .filter(D::Attempts.eq(delivery.attempts))
        .filter(
            Condition::any()
                .add(D::LeaseExpiresAt.is_null())
                .add(D::LeaseExpiresAt.lt(at)),
        )
        .exec(&cairn.db)
        .await?;
    if claimed.rows_affected != 1 {
        return Ok(None);
    }
    let cap = std::time::Duration::from_secs(timeout * 4);
    let outcome = tokio::time::timeout(cap, deliver(cairn, sender, &delivery, at))
        .await
        .unwrap_or_else(|_| {
            send::SendOutcome::failed(
                None,
                format!("the attempt did not finish within {} s", cap.as_secs()),
                false,
            )
        });
    let status = if outcome.delivered {
        DeliveryStatus::Sent
    } else if outcome.permanent || attempts >= max_attempts {
        DeliveryStatus::Failed
    } else {
        DeliveryStatus::Pending
    };
    let next_attempt_at = match status {
        DeliveryStatus::Pending => {
            at + chrono::Duration::from_std(retry_delay(settings, attempts as u32))
                .unwrap_or(chrono::Duration::hours(1))
        }
        _ => delivery.next_attempt_at,
    };
    match status {
        DeliveryStatus::Sent => {
            tracing::info!(delivery_id = %delivery.id, channel = %delivery.channel_name, event = %delivery.event, attempts, "notification sent")
        }
        DeliveryStatus::Pending => {
            tracing::warn!(delivery_id = %delivery.id, channel = %delivery.channel_name, attempts, error = outcome.error.as_deref().unwrap_or(""), "notification attempt failed; will retry")
        }
        DeliveryStatus::Failed => {
            tracing::warn!(delivery_id = %delivery.id, channel = %delivery.channel_name, attempts, error = outcome.error.as_deref().unwrap_or(""), "notification failed")
        }
    }
    notification_delivery::Entity::update_many()
        .set(notification_delivery::ActiveModel {
            status: Set(status),
            next_attempt_at: Set(next_attempt_at),
            lease_owner: Set(None),
            lease_expires_at: Set(None),
            response_code: Set(outcome.response_code.map(i32::from)),
            last_error: Set(outcome.error),
            delivered_at: Set(outcome.delivered.then(Utc::now)),
            ..Default::default()
        })
        .filter(D::Id.eq(delivery.id))
        .filter(D::Attempts.eq(attempts))
        .filter(D::LeaseOwner.eq(owner))
        .filter(D::Status.eq(DeliveryStatus::Pending))
        .exec(&cairn.db)
        .await?;
    Ok(Some(status))
}

/// Sends a claimed delivery to its channel as the channel is now. Every
/// failure is an outcome to record, never an error.
async fn deliver(
    cairn: &Cairn,
    sender: &send::Sender,
    delivery: &notification_delivery::Model,
    at: DateTime<Utc>,
) -> send::SendOutcome {
    use send::SendOutcome;
    let channel = match delivery.channel_id {
        Some(id) => match notification_channel::Entity::find_by_id(id)
            .one(&cairn.db)
            .await
        {
            Ok(channel) => channel,
            Err(error) => {
                return SendOutcome::failed(None, format!("reading the channel: {error}"), false)
            }
        },
        None => None,
    };
    let Some(channel) = channel else {
        return SendOutcome::failed(
            None,
            "the channel was deleted before the delivery was sent",
            true,
        );
    };
    if !channel.enabled {
        return SendOutcome::failed(
            None,
            "the channel was disabled before the delivery was sent",
            true,
        );
    }
    let mut payload: NotificationPayload = match serde_json::from_value(delivery.payload.clone()) {
        Ok(payload) => payload,
        Err(error) => {
            return SendOutcome::failed(
                None,
                format!("the stored payload cannot be read: {error}"),
                true,
            )
        }
    };
    payload.sent_at = Utc::now().max(at);
    match channels::destination(&cairn.master_key, &channel) {
        Ok(destination) => sender.send(&destination, &payload).await,
        Err(error) => SendOutcome::failed(
            None,
            format!("the channel's settings cannot be read: {error}"),
            false,
        ),
    }
}

/// The answer of `POST …/channels/{channelId}/test`.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelTestReport {
    /// Whether the receiver accepted the message.
    pub ok: bool,
    /// The HTTP status or SMTP reply code, when there was one.
    pub response_code: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// Sends a test message (event `notification.test`) through a channel now,
/// whether or not it is enabled, and reports how it went. Nothing is
/// recorded or retried.
pub async fn test_channel(
    cairn: &Cairn,
    organization_id: Uuid,
    channel_id: Uuid,
    now: DateTime<Utc>,
) -> Result<ChannelTestReport> {
    let channel = channels::find_model(&cairn.db, organization_id, channel_id).await?;
    let organization = crate::orgs::get(&cairn.db, organization_id).await?;
    let destination = channels::destination(&cairn.master_key, &channel)?;
    let payload = payload::test_payload(organization, now);
    let started = std::time::Instant::now();
    let outcome = send::Sender::new(cairn)?.send(&destination, &payload).await;
    Ok(ChannelTestReport {
        ok: outcome.delivered,
        response_code: outcome.response_code,
        error: outcome.error,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

/// A delivery as `GET …/notifications/deliveries` lists it.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryView {
    pub id: Uuid,
    /// `null` once the channel was deleted.
    pub channel_id: Option<Uuid>,
    pub channel_name: String,
    pub channel_type: String,
    pub event: Event,
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due (pending deliveries).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The HTTP status or SMTP reply code of the last attempt.
    pub response_code: Option<u16>,
    pub last_error: Option<String>,
    pub run_id: Option<Uuid>,
    pub restore_id: Option<Uuid>,
    pub verification_id: Option<Uuid>,
    pub copy_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// The payload as sent (`sentAt` is set per attempt).
    pub payload: NotificationPayload,
}

/// Query parameters of the delivery listing.
#[derive(Clone, Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// `pending`, `sent` or `failed`.
    pub status: Option<String>,
    pub channel_id: Option<String>,
    pub run_id: Option<String>,
    pub restore_id: Option<String>,
    pub verification_id: Option<String>,
    /// Page size, 1–200 (default 50).
    #[param(value_type = Option<u64>)]
    pub limit: Option<String>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryPage {
    pub items: Vec<DeliveryView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// One page of the organization's deliveries, newest first.
pub async fn list_deliveries(
    cairn: &Cairn,
    organization_id: Uuid,
    query: &DeliveryQuery,
) -> Result<DeliveryPage> {
    use crate::history::{newest_page, page_limit, parse_uuid};
    use notification_delivery::Column as D;
    let mut v = crate::error::Validator::new();
    let status = match query.status.as_deref() {
        None => None,
        Some(text) => match DeliveryStatus::parse(text) {
            Some(status) => Some(status),
            None => {
                v.add("status", "must be pending, sent or failed");
                None
            }
        },
    };
    let channel_id = parse_uuid(&mut v, "channelId", query.channel_id.as_deref());
    let run_id = parse_uuid(&mut v, "runId", query.run_id.as_deref());
    let restore_id = parse_uuid(&mut v, "restoreId", query.restore_id.as_deref());
    let verification_id = parse_uuid(&mut v, "verificationId", query.verification_id.as_deref());
    let cursor = parse_uuid(&mut v, "cursor", query.cursor.as_deref());
    let limit = page_limit(&mut v, query.limit.as_deref());
    v.finish()?;
    let mut select =
        notification_delivery::Entity::find().filter(D::OrganizationId.eq(organization_id));
    if let Some(status) = status {
        select = select.filter(D::Status.eq(status.as_str()));
    }
    if let Some(id) = channel_id {
        select = select.filter(D::ChannelId.eq(id));
    }
    if let Some(id) = run_id {
        select = select.filter(D::RunId.eq(id));
    }
    if let Some(id) = restore_id {
        select = select.filter(D::RestoreId.eq(id));
    }
    if let Some(id) = verification_id {
        select = select.filter(D::VerificationId.eq(id));
    }
    let (rows, next_cursor) =
        newest_page(&cairn.read, select, D::Id, cursor, limit, |row| row.id).await?;
    let items = rows
        .into_iter()
        .map(delivery_view)
        .collect::<Result<Vec<_>>>()?;
    Ok(DeliveryPage { items, next_cursor })
}

fn delivery_view(model: notification_delivery::Model) -> Result<DeliveryView> {
    let unknown = |what: &str, value: &str| -> Error {
        anyhow::anyhow!("delivery {} has unknown {what} {value}", model.id).into()
    };
    let status = model.status;
    let event = Event::parse(&model.event).ok_or_else(|| unknown("event", &model.event))?;
    let payload: NotificationPayload =
        serde_json::from_value(model.payload.clone()).map_err(anyhow::Error::from)?;
    Ok(DeliveryView {
        id: model.id,
        channel_id: model.channel_id,
        channel_name: model.channel_name,
        channel_type: model.channel_type,
        event,
        next_attempt_at: (status == DeliveryStatus::Pending).then_some(model.next_attempt_at),
        status,
        attempts: model.attempts.max(0) as u32,
        response_code: model
            .response_code
            .map(|c| c.clamp(0, u16::MAX as i32) as u16),
        last_error: model.last_error,
        run_id: model.run_id,
        restore_id: model.restore_id,
        verification_id: model.verification_id,
        copy_id: model.copy_id,
        created_at: model.created_at,
        last_attempt_at: model.last_attempt_at,
        delivered_at: model.delivered_at,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_up_to_the_cap() {
        let config = NotificationsConfig {
            retry_base_seconds: 30,
            retry_max_seconds: 600,
            ..NotificationsConfig::default()
        };
        let delays: Vec<u64> = (1..=7).map(|n| retry_delay(&config, n).as_secs()).collect();
        assert_eq!(delays, [30, 60, 120, 240, 480, 600, 600]);
        assert_eq!(retry_delay(&config, 200).as_secs(), 600);
    }
}
