use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "backup_targets")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// `None` for a system-level target.
    pub organization_id: Option<Uuid>,
    pub name: String,
    pub target_type: String,
    /// Non-secret settings as JSON.
    pub config: Json,
    /// Secret settings as JSON, sealed with AES-256-GCM under the master key.
    pub secrets_ciphertext: Option<String>,
    pub is_default: bool,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
