//! Liveness and readiness. (`/metrics` is served by the metrics middleware.)

use actix_web::{web, HttpResponse};
use cairn_core::Cairn;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;

routes! {
    "/healthz" => { get: healthz },
    "/readyz" => { get: readyz },
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok` (alive) or `ready`.
    pub status: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()), responses((status = 200, body = Health)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

/// Readiness: the database answers, and Redis when one is configured
/// (schedulers keep firing on the database alone while it is down, but the
/// outage should be seen).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    security(()),
    responses(
        (status = 200, body = Health),
        (status = 503, description = "A dependency does not answer", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn readyz(cairn: web::Data<Cairn>) -> Result<HttpResponse, ApiError> {
    cairn
        .ping()
        .await
        .map_err(|_| ApiError::Unavailable("the database does not answer".into()))?;
    if let Some(redis) = &cairn.redis {
        redis.ping().await.map_err(|_| {
            ApiError::Unavailable(
                "Redis (the schedulers' slot locks) does not answer; jobs still fire once, on the database's fence"
                    .into(),
            )
        })?;
    }
    Ok(HttpResponse::Ok().json(Health { status: "ready" }))
}
