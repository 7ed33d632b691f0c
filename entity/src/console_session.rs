use sea_orm::entity::prelude::*;

/// A signed-in browser of the web console.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "console_sessions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// Hex SHA-256 of the session cookie; the cookie itself is never stored.
    #[sea_orm(unique)]
    pub session_hash: String,
    /// Hex SHA-256 of the API token that signed in.
    pub token_hash: String,
    pub created_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
