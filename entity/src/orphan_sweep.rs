use sea_orm::entity::prelude::*;

/// One sweep of a target for orphans and missing archives.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "orphan_sweeps")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub target_id: Uuid,
    /// The `orphans.schedule` slot it ran for; `None` for one run on
    /// request.
    pub scheduled_for: Option<DateTimeUtc>,
    pub started_at: DateTimeUtc,
    pub finished_at: Option<DateTimeUtc>,
    /// Orphans seen.
    pub orphans: i32,
    /// Orphans deleted (`orphans.delete_after_days`).
    pub deleted: i32,
    /// Records found without their archive (now `missing`).
    pub missing: i32,
    /// `missing` records whose archive was back (`success` again).
    pub found: i32,
    /// Why the sweep stopped (the target could not be listed).
    pub error: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
