use sea_orm::entity::prelude::*;

use crate::enums::VolumeKind;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "volumes")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub app_id: Uuid,
    pub name: String,
    pub persistent: bool,
    /// `generic`, `sqlite`, `postgres` or `mysql`.
    pub kind: VolumeKind,
    /// Connection settings of a `postgres` or `mysql` volume, without the
    /// password.
    pub connection_config: Option<Json>,
    /// The database's password, sealed with AES-256-GCM under the master key.
    pub connection_password_ciphertext: Option<String>,
    /// Globs relative to the volume root that are left out of archives.
    pub exclude_patterns: Option<Json>,
    /// For `sqlite` volumes: the databases' paths inside the volume.
    pub sqlite_databases: Option<Json>,
    pub created_at: DateTimeUtc,
    /// Set when a deploy no longer listed the volume: it is kept (with its
    /// history) but not backed up.
    pub detached_at: Option<DateTimeUtc>,
    /// Set when an upgrade found the volume's directory already resolved by
    /// an earlier volume: it is neither backed up nor restored into until a
    /// save resolves it to a directory of its own.
    pub conflict: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
