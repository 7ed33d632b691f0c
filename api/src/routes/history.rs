//! `/api/v1/organizations/{orgId}/backups/history`

use actix_web::{get, web, HttpResponse};
use cairn_core::auth::Role;
use cairn_core::history::{self, BackupDetailView, HistoryPage, HistoryQuery};
use cairn_core::Cairn;

use super::{authorize, OrgBackupPath, OrgPath};
use crate::error::ApiError;
use crate::extract::Auth;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(list).service(get);
}

/// List backups, newest first.
///
/// Filters combine; pages are linked by `nextCursor`.
#[utoipa::path(tag = "history", params(OrgPath, HistoryQuery), responses((status = 200, body = HistoryPage)))]
#[get("/api/v1/organizations/{orgId}/backups/history")]
pub async fn list(
    Auth(principal): Auth,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgPath>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    authorize(&principal, &cairn, path.org_id, Role::Viewer, "reading history").await?;
    Ok(HttpResponse::Ok().json(history::list(&cairn, path.org_id, &query).await?))
}

/// Get one backup with its timestamped log.
#[utoipa::path(tag = "history", params(OrgBackupPath), responses((status = 200, body = BackupDetailView)))]
#[get("/api/v1/organizations/{orgId}/backups/history/{backupId}")]
pub async fn get(
    Auth(principal): Auth,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgBackupPath>,
) -> Result<HttpResponse, ApiError> {
    authorize(&principal, &cairn, path.org_id, Role::Viewer, "reading history").await?;
    Ok(HttpResponse::Ok().json(history::get(&cairn, path.org_id, path.backup_id).await?))
}
