//! `/api/v1/organizations/{orgId}/backups/jobs`

use actix_web::{web, HttpRequest, HttpResponse};
use cairn_core::auth::Role;
use cairn_core::jobs::{self, JobRequest, JobView, RetentionView};
use cairn_core::Cairn;
use chrono::Utc;

use super::{authorize, created as created_response, Items, OrgJobPath, OrgPath};
use crate::error::ApiError;
use crate::extract::{Auth, Body};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/api/v1/organizations/{orgId}/backups/jobs/{jobId}/retention")
            .route(web::get().to(retention)),
    )
    .service(
        web::resource("/api/v1/organizations/{orgId}/backups/jobs")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(
        web::resource("/api/v1/organizations/{orgId}/backups/jobs/{jobId}")
            .route(web::get().to(get))
            .route(web::put().to(update))
            .route(web::delete().to(remove)),
    );
}

/// List the organization's backup jobs.
#[utoipa::path(get, path = "/api/v1/organizations/{orgId}/backups/jobs", tag = "jobs", params(OrgPath), responses((status = 200, body = Items<JobView>)))]
pub async fn list(
    Auth(principal): Auth,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgPath>,
) -> Result<HttpResponse, ApiError> {
    authorize(
        &principal,
        &cairn,
        path.org_id,
        Role::Viewer,
        "reading jobs",
    )
    .await?;
    let items = jobs::list(&cairn, path.org_id).await?;
    Ok(HttpResponse::Ok().json(Items { items }))
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
    Auth(principal): Auth,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgPath>,
    body: Body<JobRequest>,
) -> Result<HttpResponse, ApiError> {
    authorize(
        &principal,
        &cairn,
        path.org_id,
        Role::Admin,
        "creating jobs",
    )
    .await?;
    let request = body.parse()?;
    let created = jobs::create(&cairn, path.org_id, request, Utc::now()).await?;
    Ok(created_response(&http, created.id, &created))
}

/// Get a backup job.
#[utoipa::path(get, path = "/api/v1/organizations/{orgId}/backups/jobs/{jobId}", tag = "jobs", params(OrgJobPath), responses((status = 200, body = JobView)))]
pub async fn get(
    Auth(principal): Auth,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgJobPath>,
) -> Result<HttpResponse, ApiError> {
    authorize(
        &principal,
        &cairn,
        path.org_id,
        Role::Viewer,
        "reading jobs",
    )
    .await?;
    Ok(HttpResponse::Ok().json(jobs::get(&cairn, path.org_id, path.job_id).await?))
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
    Auth(principal): Auth,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgJobPath>,
    body: Body<JobRequest>,
) -> Result<HttpResponse, ApiError> {
    authorize(
        &principal,
        &cairn,
        path.org_id,
        Role::Admin,
        "changing jobs",
    )
    .await?;
    let request = body.parse()?;
    let updated = jobs::update(&cairn, path.org_id, path.job_id, request, Utc::now()).await?;
    Ok(HttpResponse::Ok().json(updated))
}

/// Delete a backup job; its backup history is kept.
#[utoipa::path(delete, path = "/api/v1/organizations/{orgId}/backups/jobs/{jobId}", tag = "jobs", params(OrgJobPath), responses((status = 204, description = "Deleted")))]
pub async fn remove(
    Auth(principal): Auth,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgJobPath>,
) -> Result<HttpResponse, ApiError> {
    authorize(
        &principal,
        &cairn,
        path.org_id,
        Role::Admin,
        "deleting jobs",
    )
    .await?;
    jobs::delete(&cairn, path.org_id, path.job_id).await?;
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
    Auth(principal): Auth,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgJobPath>,
) -> Result<HttpResponse, ApiError> {
    authorize(
        &principal,
        &cairn,
        path.org_id,
        Role::Viewer,
        "reading jobs",
    )
    .await?;
    Ok(HttpResponse::Ok().json(jobs::retention(&cairn, path.org_id, path.job_id).await?))
}
