//! `/api/v1/organizations/{orgId}/backups/targets` and the system-level
//! twin `/api/v1/system/backups/targets` (administrators).

use actix_web::{web, HttpRequest, HttpResponse};
use cairn_core::storage::TestReport;
use cairn_core::targets::{self, TargetRequest, TargetView};
use cairn_core::Cairn;
use chrono::Utc;

use super::{created as created_response, OrgPath, OrgTargetPath, Page, SystemTargetPath};
use crate::access::{Admin, Operator, OrgAccess, SystemAdmin, Viewer};
use crate::error::ApiError;
use crate::extract::Body;

routes! {
    "/api/v1/organizations/{orgId}/backups/targets" => { get: list, post: create },
    "/api/v1/organizations/{orgId}/backups/targets/{targetId}" => { get: get, put: update, delete: remove },
    "/api/v1/organizations/{orgId}/backups/targets/{targetId}/test" => { post: test },
    "/api/v1/system/backups/targets/{targetId}/test" => { post: system_test },
    "/api/v1/system/backups/targets" => { get: system_list, post: system_create },
    "/api/v1/system/backups/targets/{targetId}" => { get: system_get, put: system_update, delete: system_remove },
}

/// List the organization's storage targets.
///
/// Secrets are never returned: `secretAccessKeySet` and `privateKeySet` say
/// whether they are stored.
#[utoipa::path(get, path = "/api/v1/organizations/{orgId}/backups/targets", tag = "targets", params(OrgPath, cairn_core::pages::PageQuery), responses((status = 200, body = Page<TargetView>)))]
pub async fn list(
    _access: OrgAccess<Viewer>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgPath>,
    query: web::Query<cairn_core::pages::PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let paging = cairn_core::pages::Paging::of(&query)?;
    let page = targets::list(&cairn, Some(path.org_id), &paging).await?;
    Ok(HttpResponse::Ok().json(Page::of(page)))
}

/// Create a storage target.
///
/// Organization admins. Local targets must lie under the server's local
/// backup root and can be disabled by the operator.
#[utoipa::path(
    post,
    path = "/api/v1/organizations/{orgId}/backups/targets",
    tag = "targets",
    params(OrgPath),
    request_body = TargetRequest,
    responses(
        (status = 201, body = TargetView),
        (status = 409, description = "The name is taken", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn create(
    http: HttpRequest,
    _access: OrgAccess<Admin>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgPath>,
    body: Body<TargetRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = body.parse()?;
    let created = targets::create(&cairn, Some(path.org_id), request, Utc::now()).await?;
    Ok(created_response(&http, created.id, &created))
}

/// Get a storage target.
#[utoipa::path(get, path = "/api/v1/organizations/{orgId}/backups/targets/{targetId}", tag = "targets", params(OrgTargetPath), responses((status = 200, body = TargetView)))]
pub async fn get(
    _access: OrgAccess<Viewer>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgTargetPath>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(targets::get(&cairn, Some(path.org_id), path.target_id).await?))
}

/// Replace a storage target's settings.
///
/// Omitted secrets keep their stored values.
#[utoipa::path(
    put,
    path = "/api/v1/organizations/{orgId}/backups/targets/{targetId}",
    tag = "targets",
    params(OrgTargetPath),
    request_body = TargetRequest,
    responses(
        (status = 200, body = TargetView),
        (status = 409, description = "The name is taken", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn update(
    _access: OrgAccess<Admin>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgTargetPath>,
    body: Body<TargetRequest>,
) -> Result<HttpResponse, ApiError> {
    // Found before the body is read (404 whatever the body).
    targets::get(&cairn, Some(path.org_id), path.target_id).await?;
    let request = body.parse()?;
    let updated = targets::update(
        &cairn,
        Some(path.org_id),
        path.target_id,
        request,
        Utc::now(),
    )
    .await?;
    Ok(HttpResponse::Ok().json(updated))
}

/// Delete a storage target.
///
/// Refused (409) while a job uses it or backup records point at it.
#[utoipa::path(
    delete,
    path = "/api/v1/organizations/{orgId}/backups/targets/{targetId}",
    tag = "targets",
    params(OrgTargetPath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 409, description = "The target is in use", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn remove(
    _access: OrgAccess<Admin>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgTargetPath>,
) -> Result<HttpResponse, ApiError> {
    targets::delete(&cairn, Some(path.org_id), path.target_id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// List the system-level targets.
///
/// System administrators only.
#[utoipa::path(get, path = "/api/v1/system/backups/targets", tag = "system", params(cairn_core::pages::PageQuery), responses((status = 200, body = Page<TargetView>)))]
pub async fn system_list(
    _admin: SystemAdmin,
    cairn: web::Data<Cairn>,
    query: web::Query<cairn_core::pages::PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let paging = cairn_core::pages::Paging::of(&query)?;
    let page = targets::list(&cairn, None, &paging).await?;
    Ok(HttpResponse::Ok().json(Page::of(page)))
}

/// Create a system-level target.
///
/// System administrators only. Used when an organization has no target of
/// its own.
#[utoipa::path(
    post,
    path = "/api/v1/system/backups/targets",
    tag = "system",
    request_body = TargetRequest,
    responses(
        (status = 201, body = TargetView),
        (status = 409, description = "The name is taken", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn system_create(
    http: HttpRequest,
    _admin: SystemAdmin,
    cairn: web::Data<Cairn>,
    body: Body<TargetRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = body.parse()?;
    let created = targets::create(&cairn, None, request, Utc::now()).await?;
    Ok(created_response(&http, created.id, &created))
}

/// Get a system-level target.
#[utoipa::path(get, path = "/api/v1/system/backups/targets/{targetId}", tag = "system", params(SystemTargetPath), responses((status = 200, body = TargetView)))]
pub async fn system_get(
    _admin: SystemAdmin,
    cairn: web::Data<Cairn>,
    path: web::Path<SystemTargetPath>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(targets::get(&cairn, None, path.target_id).await?))
}

/// Replace a system-level target's settings.
///
/// "System default" is rewritten from `cairn.yml` at every start when the
/// file has a `backup:` section.
#[utoipa::path(
    put,
    path = "/api/v1/system/backups/targets/{targetId}",
    tag = "system",
    params(SystemTargetPath),
    request_body = TargetRequest,
    responses(
        (status = 200, body = TargetView),
        (status = 409, description = "The name is taken", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn system_update(
    _admin: SystemAdmin,
    cairn: web::Data<Cairn>,
    path: web::Path<SystemTargetPath>,
    body: Body<TargetRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = body.parse()?;
    let updated = targets::update(&cairn, None, path.target_id, request, Utc::now()).await?;
    Ok(HttpResponse::Ok().json(updated))
}

/// Delete a system-level target.
#[utoipa::path(
    delete,
    path = "/api/v1/system/backups/targets/{targetId}",
    tag = "system",
    params(SystemTargetPath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 409, description = "The target is in use", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn system_remove(
    _admin: SystemAdmin,
    cairn: web::Data<Cairn>,
    path: web::Path<SystemTargetPath>,
) -> Result<HttpResponse, ApiError> {
    targets::delete(&cairn, None, path.target_id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Test a storage target.
///
/// Connects, writes a probe object, reads it back, lists and deletes it.
/// A target that fails is a `200` with `ok: false`; each failed check says
/// which step or permission failed. An SSH target without a stored host
/// key keeps the one this test saw. Admins and operators.
#[utoipa::path(
    post,
    path = "/api/v1/organizations/{orgId}/backups/targets/{targetId}/test",
    tag = "targets",
    params(OrgTargetPath),
    responses((status = 200, body = TestReport))
)]
pub async fn test(
    _access: OrgAccess<Operator>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgTargetPath>,
) -> Result<HttpResponse, ApiError> {
    let report = targets::test(&cairn, Some(path.org_id), path.target_id).await?;
    Ok(HttpResponse::Ok().json(report))
}

/// Test a system-level storage target.
///
/// As the organization route; system administrators only.
#[utoipa::path(
    post,
    path = "/api/v1/system/backups/targets/{targetId}/test",
    tag = "system",
    params(SystemTargetPath),
    responses((status = 200, body = TestReport))
)]
pub async fn system_test(
    _admin: SystemAdmin,
    cairn: web::Data<Cairn>,
    path: web::Path<SystemTargetPath>,
) -> Result<HttpResponse, ApiError> {
    let report = targets::test(&cairn, None, path.target_id).await?;
    Ok(HttpResponse::Ok().json(report))
}
