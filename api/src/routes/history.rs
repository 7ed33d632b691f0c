//! `/api/v1/organizations/{orgId}/backups/history`

use actix_web::{web, HttpResponse};
use cairn_core::history::{
    self, BackupDetailView, Download, DownloadUrlView, HistoryPage, HistoryQuery,
};
use cairn_core::Cairn;

use super::{OrgBackupPath, OrgPath};
use crate::access::{Admin, OrgAccess, Viewer};
use crate::error::ApiError;

routes! {
    "/api/v1/organizations/{orgId}/backups/history/{backupId}/download" => { get: download },
    "/api/v1/organizations/{orgId}/backups/history/{backupId}/accept" => { post: accept },
    "/api/v1/organizations/{orgId}/backups/history" => { get: list },
    "/api/v1/organizations/{orgId}/backups/history/{backupId}" => { get: get, delete: remove },
}

/// List backups, newest first.
///
/// Filters combine; pages are linked by `nextCursor`.
#[utoipa::path(get, path = "/api/v1/organizations/{orgId}/backups/history", tag = "history", params(OrgPath, HistoryQuery), responses((status = 200, body = HistoryPage)))]
pub async fn list(
    _access: OrgAccess<Viewer>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgPath>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(history::list(&cairn, path.org_id, &query).await?))
}

/// Get one backup with its timestamped log.
#[utoipa::path(get, path = "/api/v1/organizations/{orgId}/backups/history/{backupId}", tag = "history", params(OrgBackupPath), responses((status = 200, body = BackupDetailView)))]
pub async fn get(
    _access: OrgAccess<Viewer>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgBackupPath>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(history::get(&cairn, path.org_id, path.backup_id).await?))
}

/// `?force=true` deletes the newest successful backup of a series too.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    #[serde(default)]
    pub force: bool,
}

/// Delete a backup's archive (admin).
///
/// Removes the archive and its sidecars from the target, then marks the
/// record `deleted` (it stays in history). `409` for a backup that is not
/// successful, one a restore is reading, and the newest successful backup
/// of its series unless `?force=true` (it may be the only copy); `502` when
/// the target cannot delete it (nothing changed).
#[utoipa::path(
    delete,
    path = "/api/v1/organizations/{orgId}/backups/history/{backupId}",
    tag = "history",
    params(OrgBackupPath, DeleteQuery),
    responses(
        (status = 200, body = BackupDetailView),
        (status = 409, description = "Not deletable now; the reason says why", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 502, description = "The target could not delete it", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn remove(
    _access: OrgAccess<Admin>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgBackupPath>,
    query: web::Query<DeleteQuery>,
) -> Result<HttpResponse, ApiError> {
    let view = history::delete(
        &cairn,
        path.org_id,
        path.backup_id,
        query.force,
        chrono::Utc::now(),
    )
    .await?;
    tracing::info!(backup_id = %path.backup_id, "a backup's archive was deleted by an admin");
    Ok(HttpResponse::Ok().json(view))
}

/// Accept a suspicious backup as real (admin).
///
/// A backup whose content shrank sharply against the previous one of its
/// series is `suspicious`: it is kept but does not count toward retention.
/// Accepting it (after checking that the volume really lost that content)
/// makes it count like any other backup. `409` when it is not suspicious or
/// was accepted already.
#[utoipa::path(post, path = "/api/v1/organizations/{orgId}/backups/history/{backupId}/accept", tag = "history", params(OrgBackupPath), responses((status = 200, body = BackupDetailView)))]
pub async fn accept(
    _access: OrgAccess<Admin>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgBackupPath>,
) -> Result<HttpResponse, ApiError> {
    let view = history::accept(&cairn, path.org_id, path.backup_id, chrono::Utc::now()).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// `?redirect=true` answers with a redirect instead of a URL.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct DownloadQuery {
    /// For S3-family targets: answer `302` to the pre-signed URL.
    #[serde(default)]
    pub redirect: bool,
    /// Download from this target: the backup's own or one holding a
    /// successful copy (default: the primary, else a copy).
    #[param(value_type = Option<uuid::Uuid>)]
    pub target_id: Option<String>,
}

/// Download a backup's archive.
///
/// For S3-family targets, a pre-signed URL valid for one hour (or, with
/// `?redirect=true`, a `302` to it). For SSH and local targets, the archive
/// itself, streamed through the API. Only successful backups can be
/// downloaded (409 otherwise).
#[utoipa::path(
    get,
    path = "/api/v1/organizations/{orgId}/backups/history/{backupId}/download",
    tag = "history",
    params(OrgBackupPath, DownloadQuery),
    responses(
        (status = 200, description = "A pre-signed URL (S3-family targets)", body = DownloadUrlView),
        (status = 200, description = "The archive (SSH and local targets)", content_type = "application/octet-stream"),
        (status = 302, description = "Redirect to the pre-signed URL (`?redirect=true`)"),
        (status = 409, description = "The backup is not a successful one", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 502, description = "The target cannot serve the archive", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn download(
    _access: OrgAccess<Viewer>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgBackupPath>,
    query: web::Query<DownloadQuery>,
) -> Result<HttpResponse, ApiError> {
    let target = cairn_core::restores::SourceQuery {
        target_id: query.target_id.clone(),
    }
    .target()?;
    let download = history::download(
        &cairn,
        path.org_id,
        path.backup_id,
        chrono::Utc::now(),
        target,
    )
    .await?;
    Ok(download_response(download, query.redirect))
}

/// The answer to a download: the archive streamed, or the pre-signed URL
/// (as JSON, or as a `302` to it when `redirect`). The console's download
/// answers the same way, always redirecting.
pub fn download_response(download: Download, redirect: bool) -> HttpResponse {
    match download {
        Download::Presigned(view) if redirect => HttpResponse::Found()
            .insert_header(("Location", view.url))
            .finish(),
        Download::Presigned(view) => HttpResponse::Ok().json(view),
        Download::Stream {
            size,
            file_name,
            content_type,
            body,
        } => {
            let disposition = actix_web::http::header::ContentDisposition::attachment(file_name);
            HttpResponse::Ok()
                .content_type(content_type)
                .insert_header(disposition)
                .no_chunking(size)
                .streaming(body)
        }
    }
}
