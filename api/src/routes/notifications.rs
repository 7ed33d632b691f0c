//! `/api/v1/organizations/{orgId}/notifications`: channels and deliveries.

use actix_web::{web, HttpRequest, HttpResponse};
use cairn_core::notifications::{
    self, channels, ChannelRequest, ChannelTestReport, ChannelView, DeliveryPage, DeliveryQuery,
};
use cairn_core::Cairn;
use chrono::Utc;

use super::{created as created_response, OrgChannelPath, OrgPath, Page};
use crate::access::{Admin, Operator, OrgAccess, Viewer};
use crate::error::ApiError;
use crate::extract::Body;

routes! {
    "/api/v1/organizations/{orgId}/notifications/channels" => { get: list, post: create },
    "/api/v1/organizations/{orgId}/notifications/channels/{channelId}" => { get: get, put: update, delete: remove },
    "/api/v1/organizations/{orgId}/notifications/channels/{channelId}/test" => { post: test },
    "/api/v1/organizations/{orgId}/notifications/deliveries" => { get: deliveries },
}

/// List the organization's notification channels.
///
/// Secrets are never returned: `urlSet` (Slack) and `secretSet` (webhook)
/// say whether they are stored.
#[utoipa::path(get, path = "/api/v1/organizations/{orgId}/notifications/channels", tag = "notifications", params(OrgPath, cairn_core::pages::PageQuery), responses((status = 200, body = Page<ChannelView>)))]
pub async fn list(
    _access: OrgAccess<Viewer>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgPath>,
    query: web::Query<cairn_core::pages::PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let paging = cairn_core::pages::Paging::of(&query)?;
    let page = channels::list(&cairn, path.org_id, &paging).await?;
    Ok(HttpResponse::Ok().json(Page::of(page)))
}

/// Create a notification channel.
///
/// Organization admins. Every enabled channel receives the organization's
/// events: a run that failed (`notifyOnFailure`, on by default) or succeeded
/// (`notifyOnSuccess`), slots missed while no scheduler ran, a scheduled run
/// with nothing to back up, and failed restores. Webhooks receive the
/// `NotificationPayload` schema as the JSON body, with `X-Cairn-Event`,
/// `X-Cairn-Delivery`, `X-Cairn-Timestamp` and, when a secret is set,
/// `X-Cairn-Signature: sha256=<hex HMAC-SHA256 of the body>`. A URL whose
/// address is link-local or a metadata service is refused, and so is a
/// private one unless the server allows private endpoints.
#[utoipa::path(
    post,
    path = "/api/v1/organizations/{orgId}/notifications/channels",
    tag = "notifications",
    params(OrgPath),
    request_body = ChannelRequest,
    responses(
        (status = 201, body = ChannelView),
        (status = 409, description = "The name is taken", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn create(
    http: HttpRequest,
    _access: OrgAccess<Admin>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgPath>,
    body: Body<ChannelRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = body.parse()?;
    let created = channels::create(&cairn, path.org_id, request, Utc::now()).await?;
    Ok(created_response(&http, created.id, &created))
}

/// Get a notification channel.
#[utoipa::path(get, path = "/api/v1/organizations/{orgId}/notifications/channels/{channelId}", tag = "notifications", params(OrgChannelPath), responses((status = 200, body = ChannelView)))]
pub async fn get(
    _access: OrgAccess<Viewer>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgChannelPath>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(channels::get(&cairn, path.org_id, path.channel_id).await?))
}

/// Replace a notification channel's settings.
///
/// Omitted secrets (the Slack URL, the webhook secret) keep their stored
/// values while the type stays the same.
#[utoipa::path(
    put,
    path = "/api/v1/organizations/{orgId}/notifications/channels/{channelId}",
    tag = "notifications",
    params(OrgChannelPath),
    request_body = ChannelRequest,
    responses(
        (status = 200, body = ChannelView),
        (status = 409, description = "The name is taken", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn update(
    _access: OrgAccess<Admin>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgChannelPath>,
    body: Body<ChannelRequest>,
) -> Result<HttpResponse, ApiError> {
    // Found before the body is read (404 whatever the body).
    channels::get(&cairn, path.org_id, path.channel_id).await?;
    let request = body.parse()?;
    let updated =
        channels::update(&cairn, path.org_id, path.channel_id, request, Utc::now()).await?;
    Ok(HttpResponse::Ok().json(updated))
}

/// Delete a notification channel.
///
/// Its deliveries stay listed; those still pending end as `failed`.
#[utoipa::path(delete, path = "/api/v1/organizations/{orgId}/notifications/channels/{channelId}", tag = "notifications", params(OrgChannelPath), responses((status = 204, description = "Deleted")))]
pub async fn remove(
    _access: OrgAccess<Admin>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgChannelPath>,
) -> Result<HttpResponse, ApiError> {
    channels::delete(&cairn, path.org_id, path.channel_id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Send a test message through a channel now.
///
/// Admins and operators. The answer says whether the receiver accepted it
/// (`ok`), with its response code or the error; a failing channel is a
/// report with `ok: false`, not an error. Nothing is recorded or retried.
#[utoipa::path(post, path = "/api/v1/organizations/{orgId}/notifications/channels/{channelId}/test", tag = "notifications", params(OrgChannelPath), responses((status = 200, body = ChannelTestReport)))]
pub async fn test(
    _access: OrgAccess<Operator>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgChannelPath>,
) -> Result<HttpResponse, ApiError> {
    let report =
        notifications::test_channel(&cairn, path.org_id, path.channel_id, Utc::now()).await?;
    Ok(HttpResponse::Ok().json(report))
}

/// List notification deliveries, newest first.
///
/// One delivery per channel and event: `pending` (with `nextAttemptAt`),
/// `sent`, or `failed` with the last error. Filters combine; pages are
/// linked by `nextCursor`.
#[utoipa::path(get, path = "/api/v1/organizations/{orgId}/notifications/deliveries", tag = "notifications", params(OrgPath, DeliveryQuery), responses((status = 200, body = DeliveryPage)))]
pub async fn deliveries(
    _access: OrgAccess<Viewer>,
    cairn: web::Data<Cairn>,
    path: web::Path<OrgPath>,
    query: web::Query<DeliveryQuery>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(notifications::list_deliveries(&cairn, path.org_id, &query).await?))
}
