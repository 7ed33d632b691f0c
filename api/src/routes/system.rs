//! `/api/v1/system/backups`: Cairn's own self-backups (system
//! administrators).

use actix_web::{web, HttpResponse};
use cairn_core::catalog::{self, ImportReport, OrphanList, SweepView};
use cairn_core::pages::PageQuery;
use cairn_core::system::{self, SystemBackupPage, SystemBackupView};
use cairn_core::Cairn;
use chrono::Utc;

use super::SystemTargetPath;
use crate::access::SystemAdmin;
use crate::error::ApiError;

routes! {
    "/api/v1/system/backups" => { get: list },
    "/api/v1/system/backups/run" => { post: run },
    "/api/v1/system/backups/targets/{targetId}/import" => { post: import },
    "/api/v1/system/backups/targets/{targetId}/orphans" => { get: orphans },
    "/api/v1/system/backups/targets/{targetId}/orphans/sweep" => { post: sweep },
}

/// List Cairn's self-backups, newest first.
///
/// System administrators only. Each names its target and the archive's
/// path there; `cairn system restore` rebuilds the database from one.
#[utoipa::path(
    get,
    path = "/api/v1/system/backups",
    tag = "system",
    params(PageQuery),
    responses((status = 200, body = SystemBackupPage)))]
pub async fn list(
    _admin: SystemAdmin,
    cairn: web::Data<Cairn>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = system::list(&cairn, &query).await?;
    Ok(HttpResponse::Ok().json(page))
}

/// Back up Cairn's own database now.
///
/// System administrators only. The self-backup is recorded `pending` and a
/// worker writes it to `system_backup.target`.
#[utoipa::path(
    post,
    path = "/api/v1/system/backups/run",
    tag = "system",
    responses(
        (status = 202, body = SystemBackupView),
        (status = 409, description = "A self-backup is already pending or running, or there is no system-level target", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn run(_admin: SystemAdmin, cairn: web::Data<Cairn>) -> Result<HttpResponse, ApiError> {
    let requested = system::request(&cairn, Utc::now()).await?;
    Ok(HttpResponse::Accepted().json(requested))
}

/// Record the archives of a target that the history lacks.
///
/// System administrators only; any target (system-level or an
/// organization's). Scans the target's `{orgSlug}/{app}/{volume}/` layout
/// and records each archive no backup names, from its `.sha256` and
/// manifest: `success`, trigger `imported`. Archives of slugs no
/// organization has are listed, not imported. Running it again adds
/// nothing.
#[utoipa::path(
    post,
    path = "/api/v1/system/backups/targets/{targetId}/import",
    tag = "system",
    params(SystemTargetPath),
    responses(
        (status = 200, body = ImportReport),
        (status = 502, description = "The target could not be listed", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn import(
    _admin: SystemAdmin,
    cairn: web::Data<Cairn>,
    path: web::Path<SystemTargetPath>,
) -> Result<HttpResponse, ApiError> {
    let report = catalog::import(&cairn, path.target_id, Utc::now()).await?;
    Ok(HttpResponse::Ok().json(report))
}

/// List a target's orphans, as its last sweep found them.
///
/// System administrators only; any target. An orphan is an object in the
/// `{orgSlug}/{app}/{volume}/` layout that no live backup (pending,
/// running, successful or missing; primary or copy) names. With
/// `orphans.delete_after_days` set, a sweep deletes one that has been an
/// orphan that long (`deleteAfter`).
#[utoipa::path(
    get,
    path = "/api/v1/system/backups/targets/{targetId}/orphans",
    tag = "system",
    params(SystemTargetPath),
    responses((status = 200, body = OrphanList)))]
pub async fn orphans(
    _admin: SystemAdmin,
    cairn: web::Data<Cairn>,
    path: web::Path<SystemTargetPath>,
) -> Result<HttpResponse, ApiError> {
    let list = catalog::orphans(&cairn, path.target_id).await?;
    Ok(HttpResponse::Ok().json(list))
}

/// Sweep a target now.
///
/// System administrators only. Lists the target, records its orphans
/// (deleting those old enough as orphans when `orphans.delete_after_days`
/// is set), marks `missing` the successful backups whose archive is gone
/// (notified as `backup.missing`) and `success` again the missing ones
/// whose archive is back. A target that cannot be listed changes nothing:
/// the sweep's `error` says why.
#[utoipa::path(
    post,
    path = "/api/v1/system/backups/targets/{targetId}/orphans/sweep",
    tag = "system",
    params(SystemTargetPath),
    responses((status = 200, body = SweepView)))]
pub async fn sweep(
    _admin: SystemAdmin,
    cairn: web::Data<Cairn>,
    path: web::Path<SystemTargetPath>,
) -> Result<HttpResponse, ApiError> {
    let swept = catalog::sweep_now(&cairn, path.target_id, Utc::now()).await?;
    Ok(HttpResponse::Ok().json(swept))
}
