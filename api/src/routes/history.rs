//! `/api/v1/organizations/{orgId}/backups/history`

use actix_web::{web, HttpResponse};
use cairn_core::auth::Role;
use cairn_core::history::{self, BackupDetailView, HistoryPage, HistoryQuery};
use cairn_core::Cairn;

use super::{authorize, OrgBackupPath, OrgPath};
use crate::error::ApiError;
use crate::extract::Auth;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/api/v1/organizations/{orgId}/backups/history").route(web::get().to(list)),
    )
    .service(
        web::resource("/api/v1/organizations/{orgId}/backups/history/{backupId}")
            .route(web::get().to(get)),
    );
}

/// List backups, newest first.
///
/// Filters combine; pages are linked by `nextCursor`.
#[utoipa::path(get, path = "/api/v1/organizations/{orgId}/backups/history", tag = "history", params(OrgPath, HistoryQuery), responses((status = 200, body = HistoryPage)))]
pub async fn list(
    Auth(principal): Auth,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgPath>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    authorize(
        &principal,
        &cairn,
        path.org_id,
        Role::Viewer,
        "reading history",
    )
    .await?;
    Ok(HttpResponse::Ok().json(history::list(&cairn, path.org_id, &query).await?))
}

/// Get one backup with its timestamped log.
#[utoipa::path(get, path = "/api/v1/organizations/{orgId}/backups/history/{backupId}", tag = "history", params(OrgBackupPath), responses((status = 200, body = BackupDetailView)))]
pub async fn get(
    Auth(principal): Auth,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgBackupPath>,
) -> Result<HttpResponse, ApiError> {
    authorize(
        &principal,
        &cairn,
        path.org_id,
        Role::Viewer,
        "reading history",
    )
    .await?;
    Ok(HttpResponse::Ok().json(history::get(&cairn, path.org_id, path.backup_id).await?))
}
