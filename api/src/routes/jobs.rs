//! `/api/v1/organizations/{orgId}/backups/jobs`

use actix_web::{web, HttpRequest, HttpResponse};
use cairn_core::format::age::{self, EncryptionKeyView, ExportedIdentityView};
use cairn_core::jobs::{self, JobRequest, JobView, RetentionView};
use cairn_core::runs::{self, RunView};
use cairn_core::Cairn;
use chrono::Utc;

use super::{created as created_response, OrgJobPath, OrgPath, Page};
use crate::access::{Admin, Operator, OrgAccess, Viewer};
use crate::error::ApiError;
use crate::extract::Body;

routes! {
    "/api/v1/organizations/{orgId}/backups/jobs/{jobId}/run" => { post: run },
    "/api/v1/organizations/{orgId}/backups/jobs/{jobId}/runs" => { get: runs_list },
    "/api/v1/organizations/{orgId}/backups/encryption-key" => { get: encryption_key },
    "/api/v1/organizations/{orgId}/backups/encryption-key/export" => { post: export_encryption_key },
    "/api/v1/organizations/{orgId}/backups/jobs/{jobId}/retention" => { get: retention },
    "/api/v1/organizations/{orgId}/backups/jobs" => { get: list, post: create },
    "/api/v1/organizations/{orgId}/backups/jobs/{jobId}" => { get: get, put: update, delete: remove },
}

/// List the organization's backup jobs.
#[utoipa::path(get, path = "/api/v1/organizations/{orgId}/backups/jobs", tag = "jobs", params(OrgPath, cairn_core::pages::PageQuery), responses((status = 200, body = Page<JobView>)))]
pub async fn list(
    _access: OrgAccess<Viewer>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgPath>,
    query: web::Query<cairn_core::pages::PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let paging = cairn_core::pages::Paging::of(&query)?;
    let page = jobs::list(&cairn, path.org_id, &paging, Utc::now()).await?;
    Ok(HttpResponse::Ok().json(Page::of(page)))
}

/// Create a backup job.
///
/// `nextRunAt` is computed from the schedule (UTC).
#[utoipa::path(
    post,
    path = "/api/v1/organizations/{orgId}/backups/jobs",
    tag = "jobs",
    params(OrgPath),
    request_body = JobRequest,
    responses(
        (status = 201, body = JobView),
        (status = 409, description = "The name is taken", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn create(
    http: HttpRequest,
    _access: OrgAccess<Admin>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgPath>,
    body: Body<JobRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = body.parse()?;
    let created = jobs::create(&cairn, path.org_id, request, Utc::now()).await?;
    Ok(created_response(&http, created.id, &created))
}

/// Get a backup job.
#[utoipa::path(get, path = "/api/v1/organizations/{orgId}/backups/jobs/{jobId}", tag = "jobs", params(OrgJobPath), responses((status = 200, body = JobView)))]
pub async fn get(
    _access: OrgAccess<Viewer>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgJobPath>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(jobs::get(&cairn, path.org_id, path.job_id, Utc::now()).await?))
}

/// Replace a backup job's settings.
///
/// `nextRunAt` is recomputed from the schedule.
#[utoipa::path(
    put,
    path = "/api/v1/organizations/{orgId}/backups/jobs/{jobId}",
    tag = "jobs",
    params(OrgJobPath),
    request_body = JobRequest,
    responses(
        (status = 200, body = JobView),
        (status = 409, description = "The name is taken", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn update(
    _access: OrgAccess<Admin>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgJobPath>,
    body: Body<JobRequest>,
) -> Result<HttpResponse, ApiError> {
    // Found before the body is read (404 whatever the body).
    jobs::get(&cairn, path.org_id, path.job_id, Utc::now()).await?;
    let request = body.parse()?;
    let updated = jobs::update(&cairn, path.org_id, path.job_id, request, Utc::now()).await?;
    Ok(HttpResponse::Ok().json(updated))
}

/// Delete a backup job; its backup history is kept.
#[utoipa::path(delete, path = "/api/v1/organizations/{orgId}/backups/jobs/{jobId}", tag = "jobs", params(OrgJobPath), responses((status = 204, description = "Deleted")))]
pub async fn remove(
    _access: OrgAccess<Admin>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgJobPath>,
) -> Result<HttpResponse, ApiError> {
    jobs::delete(&cairn, path.org_id, path.job_id, Utc::now()).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Show what the job's retention policy keeps and prunes.
///
/// Per series (app and volume), every successful backup, newest first, with
/// `keep` and the rules that keep it — or none, when the next prune would
/// remove it.
#[utoipa::path(
    get,
    path = "/api/v1/organizations/{orgId}/backups/jobs/{jobId}/retention",
    tag = "jobs",
    params(OrgJobPath),
    responses((status = 200, body = RetentionView))
)]
pub async fn retention(
    _access: OrgAccess<Viewer>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgJobPath>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(jobs::retention(&cairn, path.org_id, path.job_id).await?))
}

/// Run the job now.
///
/// Records a manual run with one `pending` backup per persistent volume of
/// every app the job covers; a worker runs them. When nothing can be
/// backed up (no target resolves, no persistent volume) the run is
/// recorded as `skipped` and the answer is `409` with the reason. A job
/// whose previous run is still active also answers `409`.
#[utoipa::path(
    post,
    path = "/api/v1/organizations/{orgId}/backups/jobs/{jobId}/run",
    tag = "jobs",
    params(OrgJobPath),
    responses(
        (status = 202, body = RunView),
        (status = 409, description = "A run is still active, or the run was skipped (the detail says why)", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn run(
    _access: OrgAccess<Operator>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgJobPath>,
) -> Result<HttpResponse, ApiError> {
    let view = runs::start_manual(&cairn, path.org_id, path.job_id, Utc::now()).await?;
    Ok(HttpResponse::Accepted().json(view))
}

/// List a job's runs, newest first.
///
/// Scheduled (`schedule`) and manual (`manual`) runs with their status and
/// backups; `skipped` slots (the previous run was still active) and
/// `missed` records (slots that passed while no scheduler ran: count and
/// range) are runs too.
#[utoipa::path(get, path = "/api/v1/organizations/{orgId}/backups/jobs/{jobId}/runs", tag = "jobs", params(OrgJobPath, runs::RunQuery), responses((status = 200, body = runs::RunPage)))]
pub async fn runs_list(
    _access: OrgAccess<Viewer>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgJobPath>,
    query: web::Query<runs::RunQuery>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(runs::list(&cairn, path.org_id, path.job_id, &query).await?))
}

/// The organization's age public key.
///
/// Archives of jobs with `encryption: age` are encrypted to it (and to the
/// job's `extraRecipients`). Reading never creates it: `404` until the
/// first encrypted backup or an admin's export creates the key pair.
#[utoipa::path(
    get,
    path = "/api/v1/organizations/{orgId}/backups/encryption-key",
    tag = "jobs",
    params(OrgPath),
    responses((status = 200, body = EncryptionKeyView), (status = 404, description = "No key pair yet, or no such organization"))
)]
pub async fn encryption_key(
    _access: OrgAccess<Viewer>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgPath>,
) -> Result<HttpResponse, ApiError> {
    let view = age::public_key(&cairn.db, path.org_id).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Export the organization's age identity (admin only).
///
/// The secret key that decrypts every encrypted archive of the
/// organization, for offline safekeeping: `age --decrypt -i key.txt`.
/// The answer is not cached.
#[utoipa::path(
    post,
    path = "/api/v1/organizations/{orgId}/backups/encryption-key/export",
    tag = "jobs",
    params(OrgPath),
    responses((status = 200, body = ExportedIdentityView))
)]
pub async fn export_encryption_key(
    _access: OrgAccess<Admin>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgPath>,
) -> Result<HttpResponse, ApiError> {
    let view = age::export_identity(&cairn.db, &cairn.master_key, path.org_id).await?;
    tracing::info!(org_id = %path.org_id, "the organization's age identity was exported");
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(view))
}
