use sea_orm::entity::prelude::*;

use crate::enums::Slot;

/// A directory under the volume root that one volume resolves to.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "volume_directories")]
pub struct Model {
    /// The directory's name (`shop-blue_data`); unique: one volume each.
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    pub volume_id: Uuid,
    /// `blue` or `green`; `None` when the template has no `{slot}` and one
    /// directory serves both.
    pub slot: Option<Slot>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
