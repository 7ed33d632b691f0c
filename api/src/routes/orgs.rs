//! `/api/v1/organizations`

use actix_web::{web, HttpRequest, HttpResponse};
use cairn_core::auth::Role;
use cairn_core::orgs::{self, CreateOrganizationRequest, OrganizationView};
use cairn_core::Cairn;
use chrono::Utc;

use super::{created as created_response, Items, OrgPath};
use crate::error::ApiError;
use crate::extract::{Auth, Body};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/api/v1/organizations")
            .route(web::post().to(create))
            .route(web::get().to(list)),
    )
    .service(
        web::resource("/api/v1/organizations/{orgId}")
            .route(web::get().to(get))
            .route(web::delete().to(remove)),
    );
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
#[utoipa::path(get, path = "/api/v1/organizations", tag = "organizations", responses((status = 200, body = Items<OrganizationView>)))]
pub async fn list(
    Auth(principal): Auth,
    cairn: web::Data<Cairn>,
) -> Result<HttpResponse, ApiError> {
    let items = orgs::list(&cairn.db, &principal).await?;
    Ok(HttpResponse::Ok().json(Items { items }))
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

/// Delete an organization and every record it owns.
///
/// System administrators only. Archives already written to storage targets
/// are not deleted.
#[utoipa::path(delete, path = "/api/v1/organizations/{orgId}", tag = "organizations", params(OrgPath), responses((status = 204, description = "Deleted")))]
pub async fn remove(
    Auth(principal): Auth,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgPath>,
) -> Result<HttpResponse, ApiError> {
    principal.require(path.org_id, Role::Admin, "deleting the organization")?;
    principal.require_system_admin("deleting organizations")?;
    orgs::delete(&cairn.db, path.org_id).await?;
    Ok(HttpResponse::NoContent().finish())
}
