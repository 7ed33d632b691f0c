use sea_orm::entity::prelude::*;

use crate::enums::Slot;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "apps")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub organization_id: Uuid,
    pub name: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub last_deployed_at: Option<DateTimeUtc>,
    /// `blue` or `green`: the slot of the last deploy, whose volumes are
    /// backed up first.
    pub last_deploy_slot: Option<Slot>,
    /// When the automatic backup job was created (once per app).
    pub auto_job_created_at: Option<DateTimeUtc>,
    /// When a user deleted the automatic job (it is not created again).
    pub auto_job_removed_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
