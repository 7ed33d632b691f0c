use sea_orm::entity::prelude::*;

use crate::enums::DeliveryStatus;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "notification_deliveries")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub organization_id: Uuid,
    /// `None` once the channel was deleted.
    pub channel_id: Option<Uuid>,
    pub channel_name: String,
    /// `email`, `slack` or `webhook`.
    pub channel_type: String,
    pub run_id: Option<Uuid>,
    pub restore_id: Option<Uuid>,
    /// The verification whose outcome this delivery reports.
    pub verification_id: Option<Uuid>,
    /// The backup copy whose final failure this delivery reports.
    pub copy_id: Option<Uuid>,
    /// For `target.low_space`: `{targetId}:{YYYY-MM-DD}`, once a day per
    /// channel.
    pub low_space_key: Option<String>,
    /// `backup.run.failed`, `backup.run.succeeded`, …
    pub event: String,
    /// The event as it was when it happened (schema version 1).
    pub payload: Json,
    /// `pending`, `sent` or `failed`.
    pub status: DeliveryStatus,
    pub attempts: i32,
    pub next_attempt_at: DateTimeUtc,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTimeUtc>,
    pub response_code: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTimeUtc,
    pub last_attempt_at: Option<DateTimeUtc>,
    pub delivered_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
