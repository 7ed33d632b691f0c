//! `/api/v1/organizations/{orgId}/backups/history/{backupId}/verify`,
//! `/api/v1/organizations/{orgId}/backups/verifications` and the report of
//! what they proved, `/api/v1/organizations/{orgId}/backups/report`

use actix_web::{web, HttpResponse};
use cairn_core::report::Report;
use cairn_core::verifications::{
    self, VerificationDetailView, VerificationPage, VerificationQuery, VerificationView,
    VerifyRequest,
};
use cairn_core::Cairn;
use chrono::Utc;

use super::{OrgBackupPath, OrgPath, OrgVerificationPath};
use crate::access::{Operator, OrgAccess, Viewer};
use crate::error::ApiError;
use crate::extract::Body;

routes! {
    "/api/v1/organizations/{orgId}/backups/history/{backupId}/verify" => { post: request },
    "/api/v1/organizations/{orgId}/backups/verifications" => { get: list },
    "/api/v1/organizations/{orgId}/backups/verifications/{verificationId}" => { get: get },
    "/api/v1/organizations/{orgId}/backups/report" => { get: report },
}

/// Verify a backup.
///
/// A worker downloads the archive and checks its SHA-256, decrypts and
/// decompresses it, then — `read` — checks every tar entry with the
/// extraction rules (or lists a dump with `pg_restore --list`), or —
/// `restore` — extracts it into scratch space (`verification.scratch_dir`)
/// or restores a dump into a scratch database of its own
/// (`verification.postgres_url`), and compares what came back with the
/// manifest, count by count and, for a dump, table by table. Nothing of the
/// organization's is written. `restore` is refused (422 `mode`) where the
/// server has no scratch space for the archive's kind.
#[utoipa::path(
    post,
    path = "/api/v1/organizations/{orgId}/backups/history/{backupId}/verify",
    tag = "verifications",
    params(OrgBackupPath),
    request_body = VerifyRequest,
    responses(
        (status = 202, body = VerificationView),
        (status = 409, description = "The backup is not a successful one, or was written by a newer archive format", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn request(
    _access: OrgAccess<Operator>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgBackupPath>,
    body: Body<VerifyRequest>,
) -> Result<HttpResponse, ApiError> {
    // Found before the body is read (404 whatever the body).
    cairn_core::history::get(&cairn, path.org_id, path.backup_id).await?;
    let body = body.parse()?;
    let view =
        verifications::request(&cairn, path.org_id, path.backup_id, &body, Utc::now()).await?;
    Ok(HttpResponse::Accepted().json(view))
}

/// List verifications, newest first.
#[utoipa::path(get, path = "/api/v1/organizations/{orgId}/backups/verifications", tag = "verifications", params(OrgPath, VerificationQuery), responses((status = 200, body = VerificationPage)))]
pub async fn list(
    _access: OrgAccess<Viewer>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgPath>,
    query: web::Query<VerificationQuery>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(verifications::list(&cairn, path.org_id, &query).await?))
}

/// Get one verification with its checks, timings and log.
#[utoipa::path(get, path = "/api/v1/organizations/{orgId}/backups/verifications/{verificationId}", tag = "verifications", params(OrgVerificationPath), responses((status = 200, body = VerificationDetailView)))]
pub async fn get(
    _access: OrgAccess<Viewer>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgVerificationPath>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok()
        .json(verifications::get(&cairn, path.org_id, path.verification_id).await?))
}

/// Recovery report: per job and series, the schedule's interval, the last
/// success, the last verification, the RPO now and the RTO measured, with
/// the job's targets and whether they are met.
///
/// RPO is the age of the newest backup whose latest verification succeeded
/// (and that is still stored); RTO is the total time of the latest
/// successful `restore`-mode verification. Both come from the records, so
/// they match the job view and every verification listed.
#[utoipa::path(get, path = "/api/v1/organizations/{orgId}/backups/report", tag = "verifications", params(OrgPath), responses((status = 200, body = Report)))]
pub async fn report(
    _access: OrgAccess<Viewer>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgPath>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(cairn_core::report::report(&cairn, path.org_id, Utc::now()).await?))
}
