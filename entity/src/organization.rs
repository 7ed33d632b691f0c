use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "organizations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    #[sea_orm(unique)]
    pub slug: String,
    pub name: String,
    pub created_at: DateTimeUtc,
    /// The organization's age public key (`age1…`), created on first use.
    pub age_recipient: Option<String>,
    /// The matching age identity, sealed under the master key.
    pub age_identity_ciphertext: Option<String>,
    /// When an administrator deleted it: its jobs stop and its tokens reach
    /// nothing; it is purged after the grace period unless undeleted.
    pub deleted_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
