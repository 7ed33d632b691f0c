use sea_orm::entity::prelude::*;

use crate::enums::{RunStatus, Trigger};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "backup_runs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub job_id: Uuid,
    /// `schedule`, `manual` or `safety`.
    pub trigger: Trigger,
    /// The minute this run was scheduled for; unique per job.
    pub scheduled_for: DateTimeUtc,
    pub status: RunStatus,
    pub reason: Option<String>,
    pub created_at: DateTimeUtc,
    pub finished_at: Option<DateTimeUtc>,
    /// For a `missed` run: how many slots passed unfired, first and last.
    pub missed_count: Option<i32>,
    pub missed_from: Option<DateTimeUtc>,
    pub missed_to: Option<DateTimeUtc>,
    /// Set for a run limited to one app's volumes ("back up now"): it says
    /// nothing of the job's health.
    pub scope_app_id: Option<Uuid>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
