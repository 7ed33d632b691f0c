//! `/api/v1/organizations`

use actix_web::{web, HttpRequest, HttpResponse};
use cairn_core::auth::Role;
use cairn_core::orgs::{
    self, CreateOrganizationRequest, DeleteOrganizationQuery, OrganizationView,
};
use cairn_core::Cairn;
use chrono::Utc;

use super::{created as created_response, OrgPath, Page};
use crate::error::ApiError;
use crate::extract::{Auth, Body};

routes! {
    "/api/v1/organizations" => { post: create, get: list },
    "/api/v1/organizations/{orgId}" => { get: get, delete: remove },
    "/api/v1/organizations/{orgId}/undelete" => { post: undelete },
}

/// Create an organization.
///
/// System administrators only.
#[utoipa::path(
    post,
    path = "/api/v1/organizations",
    tag = "organizations",
    request_body = CreateOrganizationRequest,
    responses(
        (status = 201, body = OrganizationView),
        (status = 409, description = "The slug is taken", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn create(
    http: HttpRequest,
    Auth(principal): Auth,
    cairn: web::Data<Cairn>,
    body: Body<CreateOrganizationRequest>,
) -> Result<HttpResponse, ApiError> {
    principal.require_system_admin("creating organizations")?;
    let request = body.parse()?;
    let created = orgs::create(&cairn.db, request, Utc::now()).await?;
    Ok(created_response(&http, created.id, &created))
}

/// List organizations.
///
/// A system administrator sees every organization; an organization token
/// sees its own.
#[utoipa::path(get, path = "/api/v1/organizations", tag = "organizations", params(cairn_core::pages::PageQuery), responses((status = 200, body = Page<OrganizationView>)))]
pub async fn list(
    Auth(principal): Auth,
    cairn: web::Data<Cairn>,
    query: web::Query<cairn_core::pages::PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let paging = cairn_core::pages::Paging::of(&query)?;
    let page = orgs::list(&cairn.db, &principal, &paging).await?;
    Ok(HttpResponse::Ok().json(Page::of(page)))
}

/// Get an organization.
#[utoipa::path(get, path = "/api/v1/organizations/{orgId}", tag = "organizations", params(OrgPath), responses((status = 200, body = OrganizationView)))]
pub async fn get(
    Auth(principal): Auth,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgPath>,
) -> Result<HttpResponse, ApiError> {
    principal.require(path.org_id, Role::Viewer, "reading the organization")?;
    Ok(HttpResponse::Ok().json(orgs::get(&cairn.db, path.org_id).await?))
}

/// Delete an organization (system administrators; `?confirm=<slug>`).
///
/// The organization is marked deleted: its jobs stop, its tokens reach
/// nothing, and its records and key pair are kept for
/// `org_deletion_grace_days` (30), during which `POST …/undelete` reverses
/// it; then they are purged. Archives in storage are never deleted, and the
/// slug is never given to another organization.
#[utoipa::path(delete, path = "/api/v1/organizations/{orgId}", tag = "organizations", params(OrgPath, DeleteOrganizationQuery), responses((status = 200, body = OrganizationView)))]
pub async fn remove(
    Auth(principal): Auth,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgPath>,
    query: web::Query<DeleteOrganizationQuery>,
) -> Result<HttpResponse, ApiError> {
    principal.require(path.org_id, Role::Admin, "deleting the organization")?;
    principal.require_system_admin("deleting organizations")?;
    let view = orgs::delete(&cairn.db, path.org_id, &query, Utc::now()).await?;
    tracing::warn!(org_id = %path.org_id, "organization deleted; purged after the grace period unless undeleted");
    Ok(HttpResponse::Ok().json(view))
}

/// Undelete an organization before it is purged (system administrators).
#[utoipa::path(post, path = "/api/v1/organizations/{orgId}/undelete", tag = "organizations", params(OrgPath), responses((status = 200, body = OrganizationView)))]
pub async fn undelete(
    Auth(principal): Auth,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgPath>,
) -> Result<HttpResponse, ApiError> {
    // Another organization's id is 404 before the role is looked at.
    principal.require(path.org_id, Role::Admin, "undeleting the organization")?;
    principal.require_system_admin("undeleting organizations")?;
    Ok(HttpResponse::Ok().json(orgs::undelete(&cairn.db, path.org_id).await?))
}
