//! Volume directories: the directory names under the volume root that a
//! volume resolves to (one per blue/green slot, or one for both when the
//! configured template has no `{slot}`), each claimed by one volume only —
//! a unique key, so two organizations' apps of the same name can never
//! share a directory. Existing volumes are resolved with the only naming
//! there was before (`{app}-{slot}_{volume}`); a volume whose directory an
//! earlier volume already resolves to is flagged `conflict` and gets no
//! directory, instead of a guess at whose data it is. Only file
//! (`generic`) volumes have directories; a `postgres` volume is a database.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Volumes {
    Table,
    Id,
    Conflict,
}

#[derive(DeriveIden)]
enum VolumeDirectories {
    Table,
    Name,
    VolumeId,
    Slot,
}

/// The directory names of a volume `v` of app `a` under the old naming,
/// as SQL both databases accept.
const BLUE: &str = "a.name || '-blue_' || v.name";
const GREEN: &str = "a.name || '-green_' || v.name";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Volumes::Table)
                    .add_column(boolean(Volumes::Conflict).default(false))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(VolumeDirectories::Table)
                    .col(string_len(VolumeDirectories::Name, 255).primary_key())
                    .col(uuid(VolumeDirectories::VolumeId))
                    .col(string_len_null(VolumeDirectories::Slot, 8))
                    .foreign_key(
                        ForeignKey::create()
                            .from(VolumeDirectories::Table, VolumeDirectories::VolumeId)
                            .to(Volumes::Table, Volumes::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        db.execute_unprepared(
            "CREATE INDEX ix_volume_directories_volume ON volume_directories (volume_id)",
        )
        .await?;
        // A volume is in conflict when an earlier one (creation order, then
        // id) resolves to one of its directories, whichever slot either
        // names. Earlier volumes keep their directories.
        let w_blue = "wa.name || '-blue_' || w.name";
        let w_green = "wa.name || '-green_' || w.name";
        db.execute_unprepared(&format!(
            "UPDATE volumes SET conflict = TRUE WHERE EXISTS (
               SELECT 1 FROM volumes w JOIN apps wa ON wa.id = w.app_id, apps a, volumes v
               WHERE v.id = volumes.id AND a.id = v.app_id AND w.id <> v.id
                 AND v.kind = 'generic' AND w.kind = 'generic'
                 AND (w.created_at < v.created_at OR (w.created_at = v.created_at AND w.id < v.id))
                 AND ({w_blue} IN ({BLUE}, {GREEN}) OR {w_green} IN ({BLUE}, {GREEN})))"
        ))
        .await?;
        for (slot, name) in [("blue", BLUE), ("green", GREEN)] {
            db.execute_unprepared(&format!(
                "INSERT INTO volume_directories (name, volume_id, slot)
                 SELECT {name}, v.id, '{slot}' FROM volumes v JOIN apps a ON a.id = v.app_id
                 WHERE v.conflict = FALSE AND v.kind = 'generic'"
            ))
            .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(VolumeDirectories::Table).to_owned())
            .await?;
        manager
            .get_connection()
            .execute_unprepared("ALTER TABLE volumes DROP COLUMN conflict")
            .await?;
        Ok(())
    }
}
