//! Restores: a request to write a successful backup back into a volume —
//! its own, or another volume of the same organization (a clone) — checked
//! here and carried out by a worker (`cairn-worker`'s `restore` module).
//!
//! A destination has at most one restore pending or running: a partial
//! unique index enforces it, so two requests racing cannot both be
//! accepted. Dry runs write nothing and are not held to it. `preview`
//! reads a backup back to show what a restore would write.

pub mod preview;

use std::io::Read;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::{ActiveModelTrait, ColumnTrait, Condition, EntityTrait, QueryFilter, Set};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use cairn_entity::enums::{ArchiveKind, BackupStatus, RestoreStatus, VolumeKind};
use cairn_entity::{app, backup, backup_target, restore, volume};

use crate::error::{is_unique_violation, Error, Result, Validator};
use crate::failure::FailureCode;
use crate::format::manifest::ManifestHeader;
use crate::format::names::{ArchiveName, Format};
use crate::history::LogLine;
use crate::storage::{self, ByteStream, ObjectKey, Purpose, Storage};
use crate::Cairn;

/// `POST …/history/{backupId}/restore`
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreRequest {
    /// The backup's id, typed again: a restore replaces what the
    /// destination holds.
    pub confirm: Option<String>,
    /// Restore into this volume instead of the backup's own (a clone). The
    /// volume must belong to an app of the same organization and be of the
    /// same kind (files or PostgreSQL).
    pub into: Option<RestoreInto>,
    /// Back up the destination's current contents first (default true);
    /// the restore links the safety backup.
    #[serde(default = "default_true")]
    pub safety_backup: bool,
    /// Download, verify, decrypt and read the whole archive (or list the
    /// dump) without writing the destination (default false).
    #[serde(default)]
    pub dry_run: bool,
    /// Read the archive from this target: the backup's own or one holding
    /// a successful copy. Without it the primary is read, then each
    /// successful copy when the primary is unreachable, missing the
    /// archive, or fails its checksum.
    #[serde(default)]
    pub target_id: Option<Uuid>,
}

fn default_true() -> bool {
    true
}

/// The destination of a clone.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreInto {
    pub app_id: Uuid,
    pub volume_name: String,
}

/// A restore.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreView {
    pub id: Uuid,
    pub organization_id: Uuid,
    /// The backup being restored.
    pub backup_id: Uuid,
    /// The destination app (`null` once that app is deleted).
    pub app_id: Option<Uuid>,
    pub app_name: String,
    pub volume_name: String,
    /// `tar` (files) or `pg_dump` (PostgreSQL).
    pub kind: Option<ArchiveKind>,
    pub status: RestoreStatus,
    pub dry_run: bool,
    /// Whether a safety backup of the destination was requested.
    pub safety_backup: bool,
    /// The safety backup (trigger `safety`), once it was started.
    pub safety_backup_id: Option<Uuid>,
    /// Why it failed (see the table of codes).
    pub error_code: Option<FailureCode>,
    pub error_message: Option<String>,
    /// What the restore read and wrote: destination, counts, bytes,
    /// SHA-256, and that the app was not restarted.
    #[schema(value_type = Option<Object>)]
    pub summary: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A restore with its timestamped log.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreDetailView {
    #[serde(flatten)]
    pub restore: RestoreView,
    pub log: Vec<LogLine>,
}

/// Query parameters of the restore listing.
#[derive(Clone, Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RestoreQuery {
    /// Only restores of this backup.
    #[param(value_type = Option<Uuid>)]
    pub backup_id: Option<String>,
    /// Page size, 1–200 (default 50).
    #[param(value_type = Option<u64>)]
    pub limit: Option<String>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestorePage {
    pub items: Vec<RestoreView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

pub fn view(model: &restore::Model) -> Result<RestoreView> {
    let status = model.status;
    Ok(RestoreView {
        id: model.id,
        organization_id: model.organization_id,
        backup_id: model.backup_id,
        app_id: model.app_id,
        app_name: model.app_name.clone(),
        volume_name: model.volume_name.clone(),
        kind: model.kind,
        status,
        dry_run: model.dry_run,
        safety_backup: model.safety_backup,
        safety_backup_id: model.safety_backup_id,
        error_code: model.error_code.as_deref().map(FailureCode::from_stored),
        error_message: model.error_message.clone(),
        summary: model.summary.clone(),
        created_at: model.created_at,
        started_at: model.started_at,
        finished_at: model.finished_at,
    })
}

/// The kind of archive (`tar`, `pg_dump`, `mysql_dump`) and the kind of
/// volume it restores into (`generic`, `postgres`, `mysql`).
pub fn kinds_of(name: ArchiveName) -> (ArchiveKind, VolumeKind) {
    match name.format {
        Format::Dump => (ArchiveKind::PgDump, VolumeKind::Postgres),
        Format::SqlZstd | Format::SqlGzip | Format::Sql => {
            (ArchiveKind::MysqlDump, VolumeKind::Mysql)
        }
        Format::TarZstd | Format::TarGzip | Format::Tar => (ArchiveKind::Tar, VolumeKind::Generic),
    }
}

/// The kind of archive a volume of `kind` is stored as.
pub fn archive_kind(kind: VolumeKind) -> ArchiveKind {
    match kind {
        VolumeKind::Generic | VolumeKind::Sqlite => ArchiveKind::Tar,
        VolumeKind::Postgres => ArchiveKind::PgDump,
        VolumeKind::Mysql => ArchiveKind::MysqlDump,
    }
}

/// Whether a volume of kind `volume` takes an archive that restores into a
/// `wanted` volume: a `sqlite` volume is a file volume too.
pub fn restores_into(volume: VolumeKind, wanted: VolumeKind) -> bool {
    volume == wanted || (volume == VolumeKind::Sqlite && wanted == VolumeKind::Generic)
}

/// A successful backup's stored archive, ready to read.
pub struct StoredArchive {
    pub backup: backup::Model,
    pub target: backup_target::Model,
    pub storage: Arc<dyn Storage>,
    pub key: ObjectKey,
    pub name: ArchiveName,
}

/// Opens what a successful backup stored, or says (409) why it cannot be
/// read: not successful, nothing stored, target gone. (Whether this Cairn
/// can restore it is [`restorable`]'s question: an archive of a newer
/// format can still be downloaded.)
pub async fn stored_archive(cairn: &Cairn, model: backup::Model) -> Result<StoredArchive> {
    let conflict = |message: String| Error::Conflict {
        field: None,
        message,
    };
    if model.status != BackupStatus::Success {
        return Err(conflict(format!(
            "only successful backups can be read (restored, previewed, downloaded); this one is {}",
            model.status
        )));
    }
    let (Some(path), Some(target_id)) = (model.storage_path.clone(), model.target_id) else {
        return Err(conflict("this backup has no stored archive".into()));
    };
    let file_name = path.rsplit('/').next().unwrap_or(&path).to_owned();
    let name = ArchiveName::parse(&file_name).ok_or_else(|| {
        conflict(format!(
            "the archive's name does not say what it is: {file_name}"
        ))
    })?;
    let target = backup_target::Entity::find_by_id(target_id)
        .filter(
            Condition::any()
                .add(backup_target::Column::OrganizationId.eq(model.organization_id))
                .add(backup_target::Column::OrganizationId.is_null()),
        )
        .one(&cairn.db)
        .await?
        .ok_or_else(|| conflict("the target that holds this backup no longer exists".into()))?;
    let key = ObjectKey::parse(&path)
        .map_err(|e| anyhow::anyhow!("backup {} has an invalid storage path: {e}", model.id))?;
    let storage = storage::open(cairn, &target, Purpose::Transfer)?;
    Ok(StoredArchive {
        backup: model,
        target,
        storage,
        key,
        name,
    })
}

/// A successful backup's archive where it can be read now: the primary's,
/// or — when the primary's target cannot be reached, is gone, or no longer
/// holds the object — the first successful copy that does (in the order
/// the copies were made). Returns the archive and, when it is a copy, why
/// the primary was passed over (for the reader's log). Without a copy that
/// answers, the primary's archive is returned and its read fails with its
/// own error.
pub async fn reachable_archive(
    cairn: &Cairn,
    model: backup::Model,
) -> Result<(StoredArchive, Option<String>)> {
    if model.status != BackupStatus::Success {
        return stored_archive(cairn, model).await.map(|a| (a, None));
    }
    let primary = stored_archive(cairn, model.clone()).await;
    let reason = match &primary {
        Ok(archive) => match archive.storage.head(&archive.key).await {
            Ok(Some(_)) => return primary.map(|a| (a, None)),
            Ok(None) => format!(
                "the primary target '{}' no longer holds the archive",
                archive.target.name
            ),
            Err(error) => format!(
                "the primary target '{}' cannot be read ({error})",
                archive.target.name
            ),
        },
        Err(error) => error.to_string(),
    };
    for copy in copy_archives(cairn, &model, None).await? {
        if let Ok(Some(_)) = copy.storage.head(&copy.key).await {
            let note = format!(
                "{reason}; reading the copy on target '{}'",
                copy.target.name
            );
            return Ok((copy, Some(note)));
        }
    }
    primary.map(|a| (a, None))
}

/// `?targetId=`: read a backup's archive from this target (the backup's
/// own or one holding a successful copy of it).
#[derive(Clone, Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SourceQuery {
    /// The target to read from; without it the primary is read, then each
    /// successful copy when the primary cannot serve the archive.
    #[param(value_type = Option<Uuid>)]
    pub target_id: Option<String>,
}

impl SourceQuery {
    /// The target asked for (`422 targetId` when it is not an id).
    pub fn target(&self) -> Result<Option<Uuid>> {
        let mut v = crate::error::Validator::new();
        let id = crate::history::parse_uuid(&mut v, "targetId", self.target_id.as_deref());
        v.finish()?;
        Ok(id)
    }
}

/// The archive to read: on `target_id` when given — the primary's target
/// or one holding a successful copy (`422 targetId` otherwise) — else where
/// it can be read now ([`reachable_archive`]).
pub async fn archive_for(
    cairn: &Cairn,
    model: backup::Model,
    target_id: Option<Uuid>,
) -> Result<(StoredArchive, Option<String>)> {
    let Some(target_id) = target_id else {
        return reachable_archive(cairn, model).await;
    };
    if model.target_id == Some(target_id) {
        return stored_archive(cairn, model).await.map(|a| (a, None));
    }
    if model.status != BackupStatus::Success {
        return stored_archive(cairn, model).await.map(|a| (a, None));
    }
    copy_archives(cairn, &model, None)
        .await?
        .into_iter()
        .find(|copy| copy.target.id == target_id)
        .map(|copy| (copy, None))
        .ok_or_else(|| {
            Error::invalid(
                "targetId",
                "holds neither this backup's archive nor a complete copy of it",
            )
        })
}

/// The successful copies of a backup, opened for reading, in the order
/// they were made (leaving out the one on `except`).
pub async fn copy_archives(
    cairn: &Cairn,
    model: &backup::Model,
    except: Option<Uuid>,
) -> Result<Vec<StoredArchive>> {
    use cairn_entity::backup_copy;
    use cairn_entity::enums::CopyStatus;
    use sea_orm::QueryOrder;
    let copies = backup_copy::Entity::find()
        .filter(backup_copy::Column::BackupId.eq(model.id))
        .filter(backup_copy::Column::Status.eq(CopyStatus::Success))
        .order_by_asc(backup_copy::Column::Id)
        .all(&cairn.db)
        .await?;
    let mut archives = Vec::new();
    for copy in copies {
        let (Some(target_id), Some(path)) = (copy.target_id, copy.storage_path.as_deref()) else {
            continue;
        };
        if Some(target_id) == except {
            continue;
        }
        let Some(target) = backup_target::Entity::find_by_id(target_id)
            .one(&cairn.db)
            .await?
        else {
            continue;
        };
        let (Ok(key), Some(name)) = (
            ObjectKey::parse(path),
            ArchiveName::parse(path.rsplit('/').next().unwrap_or(path)),
        ) else {
            continue;
        };
        let Ok(storage) = storage::open(cairn, &target, Purpose::Transfer) else {
            continue;
        };
        archives.push(StoredArchive {
            backup: model.clone(),
            target,
            storage,
            key,
            name,
        });
    }
    Ok(archives)
}

/// Refuses (409) a backup whose archive format is newer than this Cairn's.
pub fn restorable(model: &backup::Model) -> Result<()> {
    match model
        .manifest
        .as_ref()
        .and_then(|m| ManifestHeader::of(m).refusal())
    {
        Some(refusal) => Err(Error::Conflict {
            field: None,
            message: refusal,
        }),
        None => Ok(()),
    }
}

/// A blocking reader over a stream of chunks; create it on the runtime,
/// read it on a blocking thread.
pub fn blocking_reader(stream: ByteStream) -> impl Read + Send {
    tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream))
}

/// Checks a restore request and records it as `pending`; a worker picks
/// it up.
pub async fn request(
    cairn: &Cairn,
    organization_id: Uuid,
    backup_id: Uuid,
    body: &RestoreRequest,
    now: DateTime<Utc>,
) -> Result<RestoreView> {
    // 1. The backup, the organization's own.
    let model = backup::Entity::find_by_id(backup_id)
        .filter(backup::Column::OrganizationId.eq(organization_id))
        .one(&cairn.db)
        .await?
        .ok_or(Error::NotFound("backup"))?;
    // 2. The body: the confirmation and the destination's fields.
    check_request(backup_id, body)?;
    // 3. An archive this Cairn can read (on the target asked for).
    let (archive, _) = archive_for(cairn, model, body.target_id).await?;
    restorable(&archive.backup)?;
    let (archive_kind, volume_kind) = kinds_of(archive.name);
    // 4. The destination: the named volume, or the backup's own, of the
    //    kind the archive restores into and with a directory of its own.
    let (destination_app, destination_volume) = match &body.into {
        Some(into) => {
            named_destination(cairn, organization_id, into, archive_kind, volume_kind).await?
        }
        None => own_destination(cairn, &archive, archive_kind, volume_kind).await?,
    };
    if destination_volume.conflict {
        return Err(Error::Conflict {
            field: body.into.as_ref().map(|_| "into.volumeName".to_owned()),
            message: format!(
                "the volume {}/{} shares its directory with an earlier volume (found when Cairn \
                 was upgraded) and is not restored into until a deploy or save gives it one of its own",
                destination_app.name, destination_volume.name
            ),
        });
    }

    // 5. The request, unless one for the destination is pending or running.
    let created = restore::ActiveModel {
        id: Set(Uuid::now_v7()),
        organization_id: Set(organization_id),
        backup_id: Set(backup_id),
        app_id: Set(Some(destination_app.id)),
        app_name: Set(destination_app.name.clone()),
        volume_name: Set(destination_volume.name.clone()),
        kind: Set(Some(archive_kind)),
        status: Set(RestoreStatus::Pending),
        dry_run: Set(body.dry_run),
        safety_backup: Set(body.safety_backup && !body.dry_run),
        safety_backup_id: Set(None),
        source_target_id: Set(body.target_id),
        summary: Set(None),
        log: Set(serde_json::json!([{
            "at": now,
            "level": "info",
            "message": format!(
                "{} of backup {backup_id} ({}) into {}/{} requested{}",
                if body.dry_run { "dry run of a restore" } else { "restore" },
                archive.key,
                destination_app.name,
                destination_volume.name,
                if body.dry_run || !body.safety_backup { "" } else { "; a safety backup is taken first" }
            ),
        }])),
        error_code: Set(None),
        error_message: Set(None),
        attempt: Set(0),
        lease_owner: Set(None),
        lease_expires_at: Set(None),
        created_at: Set(now),
        started_at: Set(None),
        finished_at: Set(None),
    }
    .insert(&cairn.db)
    .await;
    match created {
        Ok(model) => {
            cairn.work_recorded().await;
            view(&model)
        }
        Err(error) if is_unique_violation(&error) => Err(Error::Conflict {
            field: None,
            message: format!(
                "a restore into {}/{} is already pending or running; wait for it to end",
                destination_app.name, destination_volume.name
            ),
        }),
        Err(error) => Err(error.into()),
    }
}

/// The confirmation (the backup's id, repeated) and the destination's
/// volume name.
fn check_request(backup_id: Uuid, body: &RestoreRequest) -> Result<()> {
    let mut v = Validator::new();
    match body.confirm.as_deref().map(str::trim) {
        None | Some("") => v.add(
            "confirm",
            "is required: repeat the backup's id to confirm that the destination's contents are replaced",
        ),
        Some(text) if text.eq_ignore_ascii_case(&backup_id.to_string()) => {}
        Some(_) => v.add("confirm", "does not match the backup's id"),
    }
    if let Some(into) = &body.into {
        v.check(
            !into.volume_name.trim().is_empty(),
            "into.volumeName",
            "is required",
        );
    }
    v.finish()
}

/// `into`: a volume of the organization's, of the kind the archive
/// restores into.
async fn named_destination(
    cairn: &Cairn,
    organization_id: Uuid,
    into: &RestoreInto,
    archive_kind: ArchiveKind,
    volume_kind: VolumeKind,
) -> Result<(app::Model, volume::Model)> {
    let app = app::Entity::find_by_id(into.app_id)
        .filter(app::Column::OrganizationId.eq(organization_id))
        .one(&cairn.db)
        .await?
        .ok_or_else(|| Error::invalid("into.appId", "no app with this id in the organization"))?;
    let volume = volume::Entity::find()
        .filter(volume::Column::AppId.eq(app.id))
        .filter(volume::Column::Name.eq(into.volume_name.trim()))
        .one(&cairn.db)
        .await?
        .ok_or_else(|| {
            Error::invalid(
                "into.volumeName",
                format!("app {} has no volume with this name", app.name),
            )
        })?;
    if !restores_into(volume.kind, volume_kind) {
        return Err(Error::invalid(
            "into.volumeName",
            format!(
                "is a {} volume; this backup is a {archive_kind} archive, which restores into a {volume_kind} volume",
                volume.kind
            ),
        ));
    }
    Ok((app, volume))
}

/// The backup's own volume, while it exists and is still of the kind the
/// archive restores into.
async fn own_destination(
    cairn: &Cairn,
    archive: &StoredArchive,
    archive_kind: ArchiveKind,
    volume_kind: VolumeKind,
) -> Result<(app::Model, volume::Model)> {
    let gone = || Error::Conflict {
        field: None,
        message: format!(
            "the backup's volume {}/{} no longer exists: restore into another volume with `into`",
            archive.backup.app_name, archive.backup.volume_name
        ),
    };
    let app = match archive.backup.app_id {
        Some(app_id) => app::Entity::find_by_id(app_id).one(&cairn.db).await?,
        None => None,
    }
    .ok_or_else(gone)?;
    let volume = volume::Entity::find()
        .filter(volume::Column::AppId.eq(app.id))
        .filter(volume::Column::Name.eq(&archive.backup.volume_name))
        .one(&cairn.db)
        .await?
        .ok_or_else(gone)?;
    if !restores_into(volume.kind, volume_kind) {
        return Err(Error::Conflict {
            field: None,
            message: format!(
                "the volume {}/{} is now a {} volume; this backup is a {archive_kind} archive",
                app.name, volume.name, volume.kind
            ),
        });
    }
    Ok((app, volume))
}

/// One page of an organization's restores, newest first.
pub async fn list(
    cairn: &Cairn,
    organization_id: Uuid,
    query: &RestoreQuery,
) -> Result<RestorePage> {
    use crate::history::{newest_page, page_limit, parse_uuid};
    let mut v = Validator::new();
    let backup_id = parse_uuid(&mut v, "backupId", query.backup_id.as_deref());
    let cursor = parse_uuid(&mut v, "cursor", query.cursor.as_deref());
    let limit = page_limit(&mut v, query.limit.as_deref());
    v.finish()?;
    let mut select =
        restore::Entity::find().filter(restore::Column::OrganizationId.eq(organization_id));
    if let Some(backup_id) = backup_id {
        select = select.filter(restore::Column::BackupId.eq(backup_id));
    }
    let (rows, next_cursor) = newest_page(
        &cairn.read,
        select,
        restore::Column::Id,
        cursor,
        limit,
        |row| row.id,
    )
    .await?;
    Ok(RestorePage {
        items: rows.iter().map(view).collect::<Result<_>>()?,
        next_cursor,
    })
}

pub async fn get(cairn: &Cairn, organization_id: Uuid, id: Uuid) -> Result<RestoreDetailView> {
    let model = restore::Entity::find_by_id(id)
        .filter(restore::Column::OrganizationId.eq(organization_id))
        .one(&cairn.read)
        .await?
        .ok_or(Error::NotFound("restore"))?;
    let log: Vec<LogLine> =
        serde_json::from_value(model.log.clone()).map_err(anyhow::Error::from)?;
    Ok(RestoreDetailView {
        restore: view(&model)?,
        log,
    })
}
