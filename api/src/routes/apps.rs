//! `/api/v1/organizations/{orgId}/apps`

use actix_web::{web, HttpRequest, HttpResponse};
use cairn_core::apps::{self, AppRequest, AppView};
use cairn_core::auth::Role;
use cairn_core::Cairn;
use chrono::Utc;

use super::{authorize, created as created_response, Items, OrgAppPath, OrgPath};
use crate::error::ApiError;
use crate::extract::{Auth, Body};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/api/v1/organizations/{orgId}/apps")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(
        web::resource("/api/v1/organizations/{orgId}/apps/{appId}")
            .route(web::get().to(get))
            .route(web::put().to(update))
            .route(web::delete().to(remove)),
    );
}

/// List the organization's apps with their volumes.
#[utoipa::path(get, path = "/api/v1/organizations/{orgId}/apps", tag = "apps", params(OrgPath), responses((status = 200, body = Items<AppView>)))]
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
        "reading apps",
    )
    .await?;
    let items = apps::list(&cairn, path.org_id).await?;
    Ok(HttpResponse::Ok().json(Items { items }))
}

/// Register an app and its volumes.
#[utoipa::path(
    post,
    path = "/api/v1/organizations/{orgId}/apps",
    tag = "apps",
    params(OrgPath),
    request_body = AppRequest,
    responses(
        (status = 201, body = AppView),
        (status = 409, description = "The name is taken", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn create(
    http: HttpRequest,
    Auth(principal): Auth,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgPath>,
    body: Body<AppRequest>,
) -> Result<HttpResponse, ApiError> {
    authorize(
        &principal,
        &cairn,
        path.org_id,
        Role::Admin,
        "creating apps",
    )
    .await?;
    let request = body.parse()?;
    let created = apps::create(&cairn, path.org_id, request, Utc::now()).await?;
    Ok(created_response(&http, created.id, &created))
}

/// Get an app with its volumes.
#[utoipa::path(get, path = "/api/v1/organizations/{orgId}/apps/{appId}", tag = "apps", params(OrgAppPath), responses((status = 200, body = AppView)))]
pub async fn get(
    Auth(principal): Auth,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgAppPath>,
) -> Result<HttpResponse, ApiError> {
    authorize(
        &principal,
        &cairn,
        path.org_id,
        Role::Viewer,
        "reading apps",
    )
    .await?;
    Ok(HttpResponse::Ok().json(apps::get(&cairn, path.org_id, path.app_id).await?))
}

/// Replace an app's name and volumes.
///
/// Volumes are matched by name; omitted PostgreSQL passwords keep their
/// stored values.
#[utoipa::path(
    put,
    path = "/api/v1/organizations/{orgId}/apps/{appId}",
    tag = "apps",
    params(OrgAppPath),
    request_body = AppRequest,
    responses(
        (status = 200, body = AppView),
        (status = 409, description = "The name is taken", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn update(
    Auth(principal): Auth,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgAppPath>,
    body: Body<AppRequest>,
) -> Result<HttpResponse, ApiError> {
    authorize(
        &principal,
        &cairn,
        path.org_id,
        Role::Admin,
        "changing apps",
    )
    .await?;
    let request = body.parse()?;
    let updated = apps::update(&cairn, path.org_id, path.app_id, request, Utc::now()).await?;
    Ok(HttpResponse::Ok().json(updated))
}

/// Delete an app; its backup history is kept.
#[utoipa::path(delete, path = "/api/v1/organizations/{orgId}/apps/{appId}", tag = "apps", params(OrgAppPath), responses((status = 204, description = "Deleted")))]
pub async fn remove(
    Auth(principal): Auth,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgAppPath>,
) -> Result<HttpResponse, ApiError> {
    authorize(
        &principal,
        &cairn,
        path.org_id,
        Role::Admin,
        "deleting apps",
    )
    .await?;
    apps::delete(&cairn, path.org_id, path.app_id).await?;
    Ok(HttpResponse::NoContent().finish())
}
