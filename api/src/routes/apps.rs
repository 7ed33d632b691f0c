//! `/api/v1/organizations/{orgId}/apps`

use actix_web::{web, HttpRequest, HttpResponse};
use cairn_core::apps::{self, AppRequest, AppView};
use cairn_core::deployments::{self, BackupNowView, DeploymentRequest, DeploymentView};
use cairn_core::Cairn;
use chrono::Utc;

use super::{created as created_response, OrgAppPath, OrgPath, Page};
use crate::access::{Admin, Operator, OrgAccess, Viewer};
use crate::error::ApiError;
use crate::extract::Body;

routes! {
    "/api/v1/organizations/{orgId}/apps" => { get: list, post: create },
    "/api/v1/organizations/{orgId}/apps/{appId}" => { get: get, put: update, delete: remove },
    "/api/v1/organizations/{orgId}/apps/{appName}/deployments" => { post: deploy },
    "/api/v1/organizations/{orgId}/apps/{appId}/backup-now" => { post: backup_now },
}

/// `{orgId}/apps/{appName}`
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Path, rename_all = "camelCase")]
pub struct OrgAppNamePath {
    /// The organization's id.
    pub org_id: uuid::Uuid,
    /// The app's name: `^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`.
    pub app_name: String,
}

/// Record a deploy of an app.
///
/// Admins and operators (the deploying platform). Creates the app when it
/// is new (`201`, else `200`), upserts its volumes — volumes no longer
/// listed are detached, never deleted with their history — and records the
/// deploy's slot, whose volumes backups look at first. When the app has a
/// persistent volume, no job covers it, none was created for it before and
/// a target resolves, the automatic job `Auto: {appName}` is created
/// (nightly at 02:00 UTC; keepLast 1, keepDaily 7, keepWeekly 1,
/// keepMonthly 1; notifications on failure). `backup` says what happened.
#[utoipa::path(
    post,
    path = "/api/v1/organizations/{orgId}/apps/{appName}/deployments",
    tag = "apps",
    params(OrgAppNamePath),
    request_body = DeploymentRequest,
    responses(
        (status = 201, description = "The app was created", body = DeploymentView),
        (status = 200, description = "The app existed", body = DeploymentView),
    ))]
pub async fn deploy(
    _access: OrgAccess<Operator>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgAppNamePath>,
    body: Body<DeploymentRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = body.parse()?;
    let view =
        deployments::deploy(&cairn, path.org_id, &path.app_name, request, Utc::now()).await?;
    Ok(if view.app_created {
        HttpResponse::Created()
            .insert_header((
                "Location",
                format!("/api/v1/organizations/{}/apps/{}", path.org_id, view.app.id),
            ))
            .json(view)
    } else {
        HttpResponse::Ok().json(view)
    })
}

/// Back an app up now.
///
/// Admins and operators. Starts a manual run, limited to this app's
/// volumes, of every job that covers it; when none does, the automatic job
/// is created first (as on a deploy). `409` with the reason when a backup
/// of the app is pending or running, or when no job covers it and none can
/// be created (no target, or a user removed the automatic job).
#[utoipa::path(post, path = "/api/v1/organizations/{orgId}/apps/{appId}/backup-now", tag = "apps", params(OrgAppPath), responses((status = 202, body = BackupNowView), (status = 409, description = "Already running, or nothing to run", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn backup_now(
    _access: OrgAccess<Operator>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgAppPath>,
) -> Result<HttpResponse, ApiError> {
    let view = deployments::backup_now(&cairn, path.org_id, path.app_id, Utc::now()).await?;
    Ok(HttpResponse::Accepted().json(view))
}

/// List the organization's apps with their volumes.
#[utoipa::path(get, path = "/api/v1/organizations/{orgId}/apps", tag = "apps", params(OrgPath, cairn_core::pages::PageQuery), responses((status = 200, body = Page<AppView>)))]
pub async fn list(
    _access: OrgAccess<Viewer>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgPath>,
    query: web::Query<cairn_core::pages::PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let paging = cairn_core::pages::Paging::of(&query)?;
    let page = apps::list(&cairn, path.org_id, &paging).await?;
    Ok(HttpResponse::Ok().json(Page::of(page)))
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
    _access: OrgAccess<Admin>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgPath>,
    body: Body<AppRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = body.parse()?;
    let created = apps::create(&cairn, path.org_id, request, Utc::now()).await?;
    Ok(created_response(&http, created.id, &created))
}

/// Get an app with its volumes.
#[utoipa::path(get, path = "/api/v1/organizations/{orgId}/apps/{appId}", tag = "apps", params(OrgAppPath), responses((status = 200, body = AppView)))]
pub async fn get(
    _access: OrgAccess<Viewer>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgAppPath>,
) -> Result<HttpResponse, ApiError> {
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
    _access: OrgAccess<Admin>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgAppPath>,
    body: Body<AppRequest>,
) -> Result<HttpResponse, ApiError> {
    // The resource is found before the body is read: another
    // organization's id answers 404 whatever the body.
    apps::get(&cairn, path.org_id, path.app_id).await?;
    let request = body.parse()?;
    let updated = apps::update(&cairn, path.org_id, path.app_id, request, Utc::now()).await?;
    Ok(HttpResponse::Ok().json(updated))
}

/// Delete an app; its backup history is kept.
#[utoipa::path(delete, path = "/api/v1/organizations/{orgId}/apps/{appId}", tag = "apps", params(OrgAppPath), responses((status = 204, description = "Deleted")))]
pub async fn remove(
    _access: OrgAccess<Admin>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgAppPath>,
) -> Result<HttpResponse, ApiError> {
    apps::delete(&cairn, path.org_id, path.app_id).await?;
    Ok(HttpResponse::NoContent().finish())
}
