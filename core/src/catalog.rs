//! What a target holds, against what the history records.
//!
//! - **Import** (`cairn catalog import`, `POST
//!   /api/v1/system/backups/targets/{targetId}/import`): after the database
//!   was lost and its organizations re-created, the archives in Cairn's
//!   layout `{orgSlug}/{app}/{volume}/{file}` that no record names are
//!   recorded from their sidecars: `success`, trigger `imported`, the
//!   checksum of the `.sha256`, the times and counts of the manifest. An
//!   archive is imported only for an organization whose slug exists (and,
//!   on an organization's own target, only for that organization); the
//!   others are listed, never guessed. A second import finds everything
//!   recorded and adds nothing.
//! - **Orphans** (`orphans`): archives no live record names, and records
//!   whose archive is gone (`missing`).
//!
//! Self-backups (`_cairn/`) are outside the layout and never touched here.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use cairn_entity::enums::{BackupStatus, Trigger, VolumeKind};
use cairn_entity::{
    app, backup, backup_copy, backup_job, backup_job_app, backup_target, organization, orphan,
    orphan_sweep,
};

use crate::error::{Error, Result};
use crate::format::manifest::{Manifest, ManifestContents};
use crate::format::names::{expected_sha256, ArchiveName, Sidecar};
use crate::storage::{self, ObjectInfo, ObjectKey, Purpose, Storage};
use crate::Cairn;

/// The largest sidecar read (a manifest lists at most a few thousand
/// excluded paths).
const SIDECAR_LIMIT: usize = 4 * 1024 * 1024;

/// An archive in Cairn's layout on a target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scanned {
    pub organization: String,
    pub app: String,
    pub volume: String,
    /// The key on the target.
    pub path: String,
    pub size: u64,
}

/// The archives of a listing in the layout `{org}/{app}/{volume}/{file}`
/// (a file name Cairn writes: `….tar.zst`, `….dump.age`, …), in key order.
/// Sidecars, self-backups and anything else are left out.
pub fn archives_in(listing: &[ObjectInfo]) -> Vec<Scanned> {
    let mut found: Vec<Scanned> = listing
        .iter()
        .filter_map(|object| {
            let parts: Vec<&str> = object.key.split('/').collect();
            let [organization, app, volume, file] = parts.as_slice() else {
                return None;
            };
            if organization.starts_with('_') || organization.is_empty() || app.is_empty() {
                return None;
            }
            ArchiveName::parse(file)?;
            Some(Scanned {
                organization: (*organization).to_owned(),
                app: (*app).to_owned(),
                volume: (*volume).to_owned(),
                path: object.key.clone(),
                size: object.size,
            })
        })
        .collect();
    found.sort_by(|a, b| a.path.cmp(&b.path));
    found
}

/// An archive recorded by an import.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportedArchive {
    pub backup_id: Uuid,
    pub organization_id: Uuid,
    pub path: String,
}

/// An archive an import left alone, and why.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SkippedArchive {
    pub path: String,
    pub reason: String,
}

/// What an import found and did.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportReport {
    pub target_id: Uuid,
    /// Archives in Cairn's layout on the target.
    pub archives: usize,
    /// Of those, archives a record already names (primary or copy).
    pub already_recorded: usize,
    pub imported: Vec<ImportedArchive>,
    /// Archives under a slug no organization has (or, on an organization's
    /// target, another organization's): listed, not imported.
    pub unknown_organizations: Vec<SkippedArchive>,
    /// Archives whose sidecars are missing, unreadable or disagree with
    /// the object.
    pub unreadable: Vec<SkippedArchive>,
}

/// The target `id`, whoever owns it (system administrators only reach this).
pub async fn target(cairn: &Cairn, id: Uuid) -> Result<backup_target::Model> {
    backup_target::Entity::find_by_id(id)
        .one(&cairn.db)
        .await?
        .ok_or(Error::NotFound("target"))
}

/// Every path a record names on `target_id`, as primary or copy, in the
/// given statuses.
async fn recorded_paths(
    db: &impl ConnectionTrait,
    target_id: Uuid,
    statuses: Option<&[BackupStatus]>,
) -> Result<HashSet<String>> {
    let mut query = backup::Entity::find()
        .select_only()
        .column(backup::Column::StoragePath)
        .filter(backup::Column::TargetId.eq(target_id))
        .filter(backup::Column::StoragePath.is_not_null());
    if let Some(statuses) = statuses {
        query = query.filter(backup::Column::Status.is_in(statuses.iter().copied()));
    }
    let mut paths: HashSet<String> = query
        .into_tuple::<Option<String>>()
        .all(db)
        .await?
        .into_iter()
        .flatten()
        .collect();
    let copies = backup_copy::Entity::find()
        .select_only()
        .column(backup_copy::Column::StoragePath)
        .filter(backup_copy::Column::TargetId.eq(target_id))
        .filter(backup_copy::Column::StoragePath.is_not_null());
    let copies = match statuses {
        // A live copy: not failed, not pruned.
        Some(_) => copies.filter(backup_copy::Column::Status.is_in([
            cairn_entity::enums::CopyStatus::Pending,
            cairn_entity::enums::CopyStatus::Running,
            cairn_entity::enums::CopyStatus::Success,
        ])),
        None => copies,
    };
    paths.extend(
        copies
            .into_tuple::<Option<String>>()
            .all(db)
            .await?
            .into_iter()
            .flatten(),
    );
    Ok(paths)
}

/// Lists the target whole (one request per page the backend needs).
async fn listing(storage: &dyn Storage) -> Result<Vec<ObjectInfo>> {
    storage
        .list("")
        .await
        .map_err(|e| Error::Upstream(format!("listing the target failed: {e}")))
}

/// Records the archives of the target that no record names; see the
/// module's documentation.
pub async fn import(cairn: &Cairn, target_id: Uuid, now: DateTime<Utc>) -> Result<ImportReport> {
    let target = target(cairn, target_id).await?;
    let storage = storage::open(cairn, &target, Purpose::Transfer)?;
    let archives = archives_in(&listing(storage.as_ref()).await?);
    let recorded = recorded_paths(&cairn.db, target.id, None).await?;
    let mut report = ImportReport {
        target_id: target.id,
        archives: archives.len(),
        already_recorded: 0,
        imported: Vec::new(),
        unknown_organizations: Vec::new(),
        unreadable: Vec::new(),
    };
    let mut organizations: HashMap<String, Option<organization::Model>> = HashMap::new();
    for archive in archives {
        if recorded.contains(&archive.path) {
            report.already_recorded += 1;
            continue;
        }
        if !organizations.contains_key(&archive.organization) {
            let found = organization::Entity::find()
                .filter(organization::Column::Slug.eq(archive.organization.as_str()))
                .filter(organization::Column::DeletedAt.is_null())
                .one(&cairn.db)
                .await?;
            organizations.insert(archive.organization.clone(), found);
        }
        let org = match organizations.get(&archive.organization).cloned().flatten() {
            Some(org) if target.organization_id.is_none_or(|owner| owner == org.id) => org,
            Some(_) => {
                report.unknown_organizations.push(SkippedArchive {
                    reason: format!(
                        "\"{}\" is another organization than the target's",
                        archive.organization
                    ),
                    path: archive.path,
                });
                continue;
            }
            None => {
                report.unknown_organizations.push(SkippedArchive {
                    reason: format!(
                        "no organization has the slug \"{}\": create it, then import again",
                        archive.organization
                    ),
                    path: archive.path,
                });
                continue;
            }
        };
        match read_sidecars(storage.as_ref(), &archive).await {
            Ok((sha256, manifest, manifest_value)) => {
                let backup_id = record(
                    cairn,
                    &target,
                    &org,
                    &archive,
                    sha256,
                    &manifest,
                    manifest_value,
                    now,
                )
                .await?;
                report.imported.push(ImportedArchive {
                    backup_id,
                    organization_id: org.id,
                    path: archive.path,
                });
            }
            Err(reason) => report.unreadable.push(SkippedArchive {
                path: archive.path,
                reason,
            }),
        }
    }
    tracing::info!(
        target_id = %target.id,
        archives = report.archives,
        imported = report.imported.len(),
        already_recorded = report.already_recorded,
        unknown_organizations = report.unknown_organizations.len(),
        unreadable = report.unreadable.len(),
        "catalog import"
    );
    Ok(report)
}

/// The archive's checksum (`.sha256`) and manifest (`.manifest.json`),
/// held to the object: the manifest must name the archive's place and
/// size, and agree with the checksum.
async fn read_sidecars(
    storage: &dyn Storage,
    archive: &Scanned,
) -> std::result::Result<(String, Manifest, serde_json::Value), String> {
    let read = |sidecar: Sidecar| {
        let key = sidecar.of(&archive.path);
        async move {
            let key = ObjectKey::parse(&key).map_err(|e| e.to_string())?;
            storage::read_all(storage, &key, SIDECAR_LIMIT)
                .await
                .map_err(|e| match e {
                    storage::StorageError::NotFound(_) => {
                        format!("no {} beside it", sidecar.suffix())
                    }
                    other => format!("reading its {}: {other}", sidecar.suffix()),
                })
        }
    };
    let file_name = archive.path.rsplit('/').next().unwrap_or(&archive.path);
    let checksum = read(Sidecar::Sha256).await?;
    let sha256 = expected_sha256(&String::from_utf8_lossy(&checksum), file_name)
        .ok_or_else(|| format!("its .sha256 has no line for {file_name}"))?;
    let bytes = read(Sidecar::Manifest).await?;
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("its manifest is not JSON: {e}"))?;
    let manifest = Manifest::from_value(&value).map_err(|e| e.to_string())?;
    if manifest.organization != archive.organization
        || manifest.app != archive.app
        || manifest.volume != archive.volume
    {
        return Err(format!(
            "its manifest names {}/{}/{}, not where it is stored",
            manifest.organization, manifest.app, manifest.volume
        ));
    }
    if manifest.sha256 != sha256 {
        return Err("its manifest and its .sha256 disagree on the checksum".into());
    }
    if manifest.stored_bytes != archive.size {
        return Err(format!(
            "it has {} bytes, its manifest says {}: it is incomplete or was changed",
            archive.size, manifest.stored_bytes
        ));
    }
    Ok((sha256, manifest, value))
}

/// A UUID v7 of `at`: imported records sort among the others by the time
/// their archive was taken (history pages by id).
fn id_at(at: DateTime<Utc>) -> Uuid {
    let seconds = at.timestamp().max(0) as u64;
    Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        seconds,
        at.timestamp_subsec_nanos(),
    ))
}

#[allow(clippy::too_many_arguments)]
async fn record(
    cairn: &Cairn,
    target: &backup_target::Model,
    org: &organization::Model,
    archive: &Scanned,
    sha256: String,
    manifest: &Manifest,
    manifest_value: serde_json::Value,
    now: DateTime<Utc>,
) -> Result<Uuid> {
    let app = app::Entity::find()
        .filter(app::Column::OrganizationId.eq(org.id))
        .filter(app::Column::Name.eq(archive.app.as_str()))
        .one(&cairn.db)
        .await?;
    // Retention goes on for the series when exactly one job of the app
    // writes to this target: the job that would have made it.
    let job_id = match &app {
        Some(app) => {
            let jobs: Vec<Uuid> = backup_job::Entity::find()
                .select_only()
                .column(backup_job::Column::Id)
                .filter(backup_job::Column::OrganizationId.eq(org.id))
                .filter(backup_job::Column::TargetId.eq(target.id))
                .filter(
                    backup_job::Column::Id.in_subquery(
                        sea_orm::sea_query::Query::select()
                            .column(backup_job_app::Column::JobId)
                            .from(backup_job_app::Entity)
                            .and_where(backup_job_app::Column::AppId.eq(app.id))
                            .to_owned(),
                    ),
                )
                .into_tuple()
                .all(&cairn.db)
                .await?;
            (jobs.len() == 1).then(|| jobs[0])
        }
        None => None,
    };
    let kind = match &manifest.contents {
        ManifestContents::Tar(tar) if !tar.sqlite.is_empty() => VolumeKind::Sqlite,
        ManifestContents::Tar(_) => VolumeKind::Generic,
        ManifestContents::PgDump(_) => VolumeKind::Postgres,
        ManifestContents::MysqlDump(_) => VolumeKind::Mysql,
    };
    let id = id_at(manifest.started_at);
    let log = serde_json::to_value(vec![crate::history::log_line(
        now,
        format!(
            "imported from target '{}' by a catalog import: the checksum is its .sha256 sidecar's, the rest its manifest's{}",
            target.name,
            match job_id {
                Some(_) => "; the job that writes this app to this target prunes it by its retention",
                None => "; no single job writes this app to this target, so no retention prunes it",
            }
        ),
    )])
    .map_err(anyhow::Error::from)?;
    backup::ActiveModel {
        id: Set(id),
        organization_id: Set(org.id),
        run_id: Set(None),
        job_id: Set(job_id),
        app_id: Set(app.as_ref().map(|a| a.id)),
        target_id: Set(Some(target.id)),
        app_name: Set(archive.app.clone()),
        volume_name: Set(archive.volume.clone()),
        status: Set(BackupStatus::Success),
        archive_size: Set(Some(archive.size as i64)),
        storage_path: Set(Some(archive.path.clone())),
        sha256: Set(Some(sha256)),
        log: Set(log),
        error_code: Set(None),
        error_message: Set(None),
        attempt: Set(0),
        lease_owner: Set(None),
        lease_expires_at: Set(None),
        created_at: Set(manifest.started_at),
        started_at: Set(Some(manifest.started_at)),
        finished_at: Set(Some(manifest.finished_at)),
        trigger: Set(Trigger::Imported),
        kind: Set(Some(kind)),
        manifest: Set(Some(manifest_value)),
        suspicious: Set(false),
        suspicious_reason: Set(None),
        accepted_at: Set(None),
        read_until: Set(None),
    }
    .insert(&cairn.db)
    .await?;
    Ok(id)
}

/// One orphan, as `GET …/targets/{targetId}/orphans` lists it.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrphanView {
    pub path: String,
    pub size: i64,
    /// The first sweep that saw it an orphan.
    pub first_seen_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    /// When a sweep deletes it (`orphans.delete_after_days` after it was
    /// first seen); `null` while orphans are only listed.
    pub delete_after: Option<DateTime<Utc>>,
}

/// One sweep of a target.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SweepView {
    pub id: Uuid,
    pub target_id: Uuid,
    /// The `orphans.schedule` slot; `null` for a sweep run on request.
    pub scheduled_for: Option<DateTime<Utc>>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Objects in the target's layout that no live record names.
    pub orphans: i32,
    /// Orphans deleted (`orphans.delete_after_days`).
    pub deleted: i32,
    /// Records whose archive was gone: now `missing`.
    pub missing: i32,
    /// `missing` records whose archive was back: `success` again.
    pub found: i32,
    /// Why the sweep stopped (the target could not be listed); nothing
    /// was changed then.
    pub error: Option<String>,
}

impl From<orphan_sweep::Model> for SweepView {
    fn from(model: orphan_sweep::Model) -> SweepView {
        SweepView {
            id: model.id,
            target_id: model.target_id,
            scheduled_for: model.scheduled_for,
            started_at: model.started_at,
            finished_at: model.finished_at,
            orphans: model.orphans,
            deleted: model.deleted,
            missing: model.missing,
            found: model.found,
            error: model.error,
        }
    }
}

/// `GET …/targets/{targetId}/orphans`: what the last sweep found.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrphanList {
    pub target_id: Uuid,
    /// The newest sweep of the target; `null` before the first.
    pub last_sweep: Option<SweepView>,
    pub items: Vec<OrphanView>,
}

/// The orphans of a target as the last sweep saw them.
pub async fn orphans(cairn: &Cairn, target_id: Uuid) -> Result<OrphanList> {
    let target = target(cairn, target_id).await?;
    let last_sweep = orphan_sweep::Entity::find()
        .filter(orphan_sweep::Column::TargetId.eq(target.id))
        .order_by_desc(orphan_sweep::Column::StartedAt)
        .order_by_desc(orphan_sweep::Column::Id)
        .one(&cairn.db)
        .await?;
    let after = cairn.config.orphans.delete_after_days;
    let items = orphan::Entity::find()
        .filter(orphan::Column::TargetId.eq(target.id))
        .order_by_asc(orphan::Column::Path)
        .all(&cairn.db)
        .await?
        .into_iter()
        .map(|row| OrphanView {
            delete_after: after.map(|days| row.first_seen_at + chrono::Duration::days(days.into())),
            path: row.path,
            size: row.size,
            first_seen_at: row.first_seen_at,
            last_seen_at: row.last_seen_at,
        })
        .collect();
    Ok(OrphanList {
        target_id: target.id,
        last_sweep: last_sweep.map(SweepView::from),
        items,
    })
}

/// Whether `key` can be an orphan: an archive Cairn names (or one of its
/// sidecars) in the layout `{org}/{app}/{volume}/{file}` of an
/// organization that exists. Anything else on the target — self-backups
/// (`_cairn/`), another program's files, the archives of a slug no
/// organization has (purged organizations keep theirs; after a lost
/// database they wait for an import) — is never an orphan.
fn may_be_orphan(key: &str, slugs: &HashSet<String>) -> bool {
    let parts: Vec<&str> = key.split('/').collect();
    let [organization, app, volume, _] = parts.as_slice() else {
        return false;
    };
    let file = archive_of(key).rsplit('/').next().unwrap_or_default();
    !app.is_empty()
        && !volume.is_empty()
        && slugs.contains(*organization)
        && ArchiveName::parse(file).is_some()
}

/// The archive a key belongs to: itself, or the archive a sidecar is
/// named after.
fn archive_of(key: &str) -> &str {
    Sidecar::ALL
        .iter()
        .find_map(|sidecar| key.strip_suffix(sidecar.suffix()))
        .unwrap_or(key)
}

/// Sweeps a target now, on request.
pub async fn sweep_now(cairn: &Cairn, target_id: Uuid, now: DateTime<Utc>) -> Result<SweepView> {
    let target = target(cairn, target_id).await?;
    let sweep = start_sweep(cairn, &target, None, now)
        .await?
        .ok_or_else(|| anyhow::anyhow!("an unscheduled sweep is never a duplicate"))?;
    run_sweep(cairn, &target, sweep, now).await
}

/// Sweeps every target whose `orphans.schedule` slot is due and not taken
/// by another worker; returns how many this call swept.
pub async fn sweep_due(cairn: &Cairn, now: DateTime<Utc>) -> Result<usize> {
    if !cairn.config.orphans.enabled {
        return Ok(0);
    }
    let Some(slot) = crate::system::newest_slot(&cairn.config.orphans.schedule, now) else {
        return Ok(0);
    };
    let targets = backup_target::Entity::find()
        .order_by_asc(backup_target::Column::Id)
        .all(&cairn.db)
        .await?;
    let mut swept = 0;
    for target in targets {
        if let Some(sweep) = start_sweep(cairn, &target, Some(slot), now).await? {
            let view = run_sweep(cairn, &target, sweep, now).await?;
            if let Some(error) = &view.error {
                tracing::warn!(target_id = %target.id, error, "orphan sweep could not list the target");
            }
            swept += 1;
        }
    }
    Ok(swept)
}

/// Records a sweep; `None` when another worker took the slot.
async fn start_sweep(
    cairn: &Cairn,
    target: &backup_target::Model,
    slot: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Option<orphan_sweep::Model>> {
    let inserted = orphan_sweep::ActiveModel {
        id: Set(Uuid::now_v7()),
        target_id: Set(target.id),
        scheduled_for: Set(slot),
        started_at: Set(now),
        finished_at: Set(None),
        orphans: Set(0),
        deleted: Set(0),
        missing: Set(0),
        found: Set(0),
        error: Set(None),
    }
    .insert(&cairn.db)
    .await;
    match inserted {
        Ok(model) => Ok(Some(model)),
        Err(error) if crate::error::is_unique_violation(&error) => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// Lists the target, then compares with the records (in that order: an
/// archive is uploaded only after its record names it, so whatever the
/// listing holds, a record read after it names if it is live). Orphans
/// are remembered, and deleted once old enough as orphans; `success`
/// records that finished before the listing began and whose archive it
/// lacks become `missing` (notified); `missing` ones whose archive is
/// back become `success`.
async fn run_sweep(
    cairn: &Cairn,
    target: &backup_target::Model,
    sweep: orphan_sweep::Model,
    now: DateTime<Utc>,
) -> Result<SweepView> {
    let listed_at = now;
    let listed = match storage::open(cairn, target, Purpose::Transfer) {
        Ok(storage) => match storage.list("").await {
            Ok(listing) => Ok((storage, listing)),
            Err(error) => Err(format!("listing the target failed: {error}")),
        },
        Err(error) => Err(error.to_string()),
    };
    let (storage, listing) = match listed {
        Ok(listed) => listed,
        Err(message) => {
            let model = orphan_sweep::ActiveModel {
                id: Set(sweep.id),
                finished_at: Set(Some(Utc::now())),
                error: Set(Some(message)),
                ..Default::default()
            }
            .update(&cairn.db)
            .await?;
            return Ok(model.into());
        }
    };
    let live = recorded_paths(
        &cairn.db,
        target.id,
        Some(&[
            BackupStatus::Pending,
            BackupStatus::Running,
            BackupStatus::Success,
            BackupStatus::Missing,
        ]),
    )
    .await?;
    let present: HashSet<&str> = listing.iter().map(|o| o.key.as_str()).collect();

    // Orphans: remembered with when they were first seen.
    let known: HashMap<String, orphan::Model> = orphan::Entity::find()
        .filter(orphan::Column::TargetId.eq(target.id))
        .all(&cairn.db)
        .await?
        .into_iter()
        .map(|row| (row.path.clone(), row))
        .collect();
    let mut orphan_paths = HashSet::new();
    let mut deleted = 0;
    let keep_days = cairn.config.orphans.delete_after_days;
    let slugs: HashSet<String> = organization::Entity::find()
        .select_only()
        .column(organization::Column::Slug)
        .into_tuple::<String>()
        .all(&cairn.db)
        .await?
        .into_iter()
        .collect();
    for object in listing.iter().filter(|o| may_be_orphan(&o.key, &slugs)) {
        if live.contains(archive_of(&object.key)) {
            continue;
        }
        orphan_paths.insert(object.key.clone());
        let first_seen = match known.get(&object.key) {
            Some(row) => {
                orphan::Entity::update_many()
                    .set(orphan::ActiveModel {
                        size: Set(object.size as i64),
                        last_seen_at: Set(now),
                        ..Default::default()
                    })
                    .filter(orphan::Column::Id.eq(row.id))
                    .exec(&cairn.db)
                    .await?;
                row.first_seen_at
            }
            None => {
                orphan::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    target_id: Set(target.id),
                    path: Set(object.key.clone()),
                    size: Set(object.size as i64),
                    first_seen_at: Set(now),
                    last_seen_at: Set(now),
                }
                .insert(&cairn.db)
                .await?;
                now
            }
        };
        let Some(days) = keep_days else { continue };
        if now - first_seen < chrono::Duration::days(days.into()) {
            continue;
        }
        let key = ObjectKey::parse(&object.key).map_err(anyhow::Error::from)?;
        match storage.delete(&key).await {
            Ok(()) => {
                orphan::Entity::delete_many()
                    .filter(orphan::Column::TargetId.eq(target.id))
                    .filter(orphan::Column::Path.eq(object.key.as_str()))
                    .exec(&cairn.db)
                    .await?;
                orphan_paths.remove(&object.key);
                deleted += 1;
                tracing::info!(target_id = %target.id, path = %object.key, "deleted an orphan");
            }
            Err(error) => {
                tracing::warn!(target_id = %target.id, path = %object.key, %error, "deleting an orphan failed");
            }
        }
    }
    // What is no orphan any more (recorded by an import, or gone).
    let stale: Vec<Uuid> = known
        .values()
        .filter(|row| !orphan_paths.contains(&row.path))
        .map(|row| row.id)
        .collect();
    if !stale.is_empty() {
        orphan::Entity::delete_many()
            .filter(orphan::Column::Id.is_in(stale))
            .exec(&cairn.db)
            .await?;
    }

    // Records against the listing.
    let records = backup::Entity::find()
        .filter(backup::Column::TargetId.eq(target.id))
        .filter(backup::Column::StoragePath.is_not_null())
        .filter(backup::Column::Status.is_in([BackupStatus::Success, BackupStatus::Missing]))
        .all(&cairn.db)
        .await?;
    let mut missing: HashMap<Uuid, Vec<backup::Model>> = HashMap::new();
    let mut found = 0;
    for record in records {
        let Some(path) = record.storage_path.as_deref() else {
            continue;
        };
        let there = present.contains(path);
        let (to, message) = match record.status {
            BackupStatus::Success
                if !there && record.finished_at.is_some_and(|at| at < listed_at) =>
            {
                (
                    BackupStatus::Missing,
                    format!(
                        "an orphan sweep of target '{}' found no archive at {path}: the backup \
                         is missing and cannot be restored from this target",
                        target.name
                    ),
                )
            }
            BackupStatus::Missing if there => (
                BackupStatus::Success,
                format!(
                    "an orphan sweep of target '{}' found the archive at {path} again",
                    target.name
                ),
            ),
            _ => continue,
        };
        if !set_status(cairn, &record, record.status, to, now, message).await? {
            continue;
        }
        if to == BackupStatus::Missing {
            missing
                .entry(record.organization_id)
                .or_default()
                .push(record);
        } else {
            found += 1;
        }
    }
    let missing_count: usize = missing.values().map(Vec::len).sum();
    for (organization_id, records) in missing {
        crate::notifications::enqueue(
            &cairn.db,
            crate::notifications::Subject::Missing {
                organization_id,
                target_id: target.id,
                backup_ids: records.iter().map(|r| r.id).collect(),
            },
            now,
        )
        .await
        .unwrap_or_else(|error| {
            tracing::error!(
                error = format!("{error:#}"),
                "queueing backup.missing failed"
            );
            0
        });
    }
    let model = orphan_sweep::ActiveModel {
        id: Set(sweep.id),
        finished_at: Set(Some(Utc::now())),
        orphans: Set(orphan_paths.len() as i32),
        deleted: Set(deleted),
        missing: Set(missing_count as i32),
        found: Set(found),
        ..Default::default()
    }
    .update(&cairn.db)
    .await?;
    if missing_count > 0 || deleted > 0 {
        tracing::warn!(
            target_id = %target.id,
            orphans = model.orphans,
            deleted,
            missing = missing_count,
            "orphan sweep"
        );
    }
    Ok(model.into())
}

/// Moves a record from `from` to `to` (conditionally), with a log line.
async fn set_status(
    cairn: &Cairn,
    record: &backup::Model,
    from: BackupStatus,
    to: BackupStatus,
    now: DateTime<Utc>,
    message: String,
) -> Result<bool> {
    let updated = backup::Entity::update_many()
        .set(backup::ActiveModel {
            status: Set(to),
            ..Default::default()
        })
        .filter(backup::Column::Id.eq(record.id))
        .filter(backup::Column::Status.eq(from))
        .exec(&cairn.db)
        .await?;
    if updated.rows_affected == 1 {
        crate::history::append_log(
            &cairn.db,
            record.id,
            vec![crate::history::log_line(now, message)],
        )
        .await?;
    }
    Ok(updated.rows_affected == 1)
}
