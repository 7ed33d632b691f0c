//! `/api/v1/organizations/{orgId}/backups/history/{backupId}/preview`,
//! `…/history/{backupId}/restore` and `/api/v1/organizations/{orgId}/backups/restores`

use actix_web::{web, HttpResponse};
use cairn_core::restores::preview::{self, PreviewView};
use cairn_core::restores::SourceQuery;
use cairn_core::restores::{
    self, RestoreDetailView, RestorePage, RestoreQuery, RestoreRequest, RestoreView,
};
use cairn_core::Cairn;
use chrono::Utc;

use super::{OrgBackupPath, OrgPath, OrgRestorePath};
use crate::access::{Operator, OrgAccess, Viewer};
use crate::error::ApiError;
use crate::extract::Body;

routes! {
    "/api/v1/organizations/{orgId}/backups/history/{backupId}/preview" => { get: preview },
    "/api/v1/organizations/{orgId}/backups/history/{backupId}/restore" => { post: request },
    "/api/v1/organizations/{orgId}/backups/restores" => { get: list },
    "/api/v1/organizations/{orgId}/backups/restores/{restoreId}" => { get: get },
}

/// Preview a backup before restoring it.
///
/// The manifest, size, creation time, the Cairn and archive format versions
/// that wrote it, whether this Cairn can restore it, and what it holds: the
/// first 1 000 entries of a tar archive with the totals of its manifest, or
/// the table of contents of a dump (`pg_restore --list`). Only the head of
/// the archive is read. Only successful backups (409 otherwise).
#[utoipa::path(
    get,
    path = "/api/v1/organizations/{orgId}/backups/history/{backupId}/preview",
    tag = "restores",
    params(OrgBackupPath, SourceQuery),
    responses(
        (status = 200, body = PreviewView),
        (status = 409, description = "The backup is not a successful one", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 502, description = "The target cannot serve the archive", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn preview(
    _access: OrgAccess<Viewer>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgBackupPath>,
    query: web::Query<SourceQuery>,
) -> Result<HttpResponse, ApiError> {
    let target = query.target()?;
    Ok(HttpResponse::Ok()
        .json(preview::preview(&cairn, path.org_id, path.backup_id, target).await?))
}

/// Restore a backup.
///
/// Into the backup's own volume, or with `into` into another volume of the
/// organization (a clone). `confirm` must repeat the backup's id. A worker
/// downloads the archive, verifies its SHA-256 before changing anything,
/// takes a safety backup of the destination (unless `safetyBackup` is
/// false), then replaces the volume's contents (tar) or runs `pg_restore
/// --clean --if-exists --no-owner --single-transaction` (dump). The app is
/// not restarted. `dryRun` reads and checks everything without writing.
#[utoipa::path(
    post,
    path = "/api/v1/organizations/{orgId}/backups/history/{backupId}/restore",
    tag = "restores",
    params(OrgBackupPath),
    request_body = RestoreRequest,
    responses(
        (status = 202, body = RestoreView),
        (status = 409, description = "The backup is not a successful one, was written by a newer archive format, its volume is gone, or a restore into the destination is already pending or running", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn request(
    _access: OrgAccess<Operator>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgBackupPath>,
    body: Body<RestoreRequest>,
) -> Result<HttpResponse, ApiError> {
    // Found before the body is read (404 whatever the body).
    cairn_core::history::get(&cairn, path.org_id, path.backup_id).await?;
    let body = body.parse()?;
    let view = restores::request(&cairn, path.org_id, path.backup_id, &body, Utc::now()).await?;
    Ok(HttpResponse::Accepted().json(view))
}

/// List restores, newest first.
#[utoipa::path(get, path = "/api/v1/organizations/{orgId}/backups/restores", tag = "restores", params(OrgPath, RestoreQuery), responses((status = 200, body = RestorePage)))]
pub async fn list(
    _access: OrgAccess<Viewer>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgPath>,
    query: web::Query<RestoreQuery>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(restores::list(&cairn, path.org_id, &query).await?))
}

/// Get one restore with its timestamped log.
#[utoipa::path(get, path = "/api/v1/organizations/{orgId}/backups/restores/{restoreId}", tag = "restores", params(OrgRestorePath), responses((status = 200, body = RestoreDetailView)))]
pub async fn get(
    _access: OrgAccess<Viewer>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgRestorePath>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(restores::get(&cairn, path.org_id, path.restore_id).await?))
}
