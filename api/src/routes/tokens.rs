//! `/api/v1/organizations/{orgId}/tokens`

use actix_web::{web, HttpResponse};
use cairn_core::auth::{self, CreateTokenRequest, CreatedTokenView, TokenView};
use cairn_core::Cairn;
use chrono::Utc;

use super::{OrgPath, OrgTokenPath, Page};
use crate::access::{Admin, OrgAccess};
use crate::error::ApiError;
use crate::extract::Body;

routes! {
    "/api/v1/organizations/{orgId}/tokens" => { post: create, get: list },
    "/api/v1/organizations/{orgId}/tokens/{tokenId}" => { delete: remove },
}

/// Create an API token for the organization.
///
/// Organization admins and system administrators. The token is in the
/// response, once; only its hash is stored.
#[utoipa::path(
    post,
    path = "/api/v1/organizations/{orgId}/tokens",
    tag = "tokens",
    params(OrgPath),
    request_body = CreateTokenRequest,
    responses((status = 201, body = CreatedTokenView)))]
pub async fn create(
    _access: OrgAccess<Admin>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgPath>,
    body: Body<CreateTokenRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = body.parse()?;
    let created = auth::create_token(&cairn.db, Some(path.org_id), request, Utc::now()).await?;
    Ok(HttpResponse::Created().json(created))
}

/// List the organization's tokens (never the tokens themselves).
#[utoipa::path(get, path = "/api/v1/organizations/{orgId}/tokens", tag = "tokens", params(OrgPath, cairn_core::pages::PageQuery), responses((status = 200, body = Page<TokenView>)))]
pub async fn list(
    _access: OrgAccess<Admin>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgPath>,
    query: web::Query<cairn_core::pages::PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let paging = cairn_core::pages::Paging::of(&query)?;
    let page = auth::list_tokens(&cairn.db, path.org_id, &paging).await?;
    Ok(HttpResponse::Ok().json(Page::of(page)))
}

/// Revoke a token.
#[utoipa::path(delete, path = "/api/v1/organizations/{orgId}/tokens/{tokenId}", tag = "tokens", params(OrgTokenPath), responses((status = 204, description = "Revoked")))]
pub async fn remove(
    _access: OrgAccess<Admin>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgTokenPath>,
) -> Result<HttpResponse, ApiError> {
    auth::delete_token(&cairn.db, path.org_id, path.token_id).await?;
    Ok(HttpResponse::NoContent().finish())
}
