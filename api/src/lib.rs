//! Cairn's REST API: actix-web routes under `/api/v1`, bearer-token
//! authentication, `application/problem+json` errors, the OpenAPI document
//! (`/api/v1/openapi.json`, Swagger UI at `/docs/`), `/healthz`, `/readyz`
//! and Prometheus `/metrics`.
//!
//! The API is stateless: every request reads and writes the database through
//! `cairn-core`, so any number of replicas can run behind a load balancer.
//! It never runs a backup; work for a worker is recorded and answered with
//! `202 Accepted`. actix-web runs one single-threaded runtime per worker
//! thread (`ApplicationOptions::workers`); handlers never block.

pub mod access;
pub mod console;
pub mod error;
pub mod extract;
pub mod openapi;
pub mod routes;

use std::net::TcpListener;

use actix_web::dev::{Server, Service};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::ErrorHandlers;
use actix_web::{web, App, HttpMessage, HttpServer};
use actix_web_prom::PrometheusMetricsBuilder;
use anyhow::Context;
use cairn_core::Cairn;
use tracing_actix_web::{RequestId, TracingLogger};
use utoipa_swagger_ui::SwaggerUi;

use crate::error::{problem_for_plain_errors, ApiError};

/// Settings of the HTTP server.
#[derive(Clone, Debug)]
pub struct ApplicationOptions {
    /// actix worker threads; `None`: one per core.
    pub workers: Option<usize>,
}

/// A bound, not yet running API server.
pub struct Application {
    port: u16,
    server: Server,
}

impl Application {
    /// Binds the routes to `listener`. The server starts when
    /// [`Application::run_until_stopped`] is awaited and stops gracefully
    /// on SIGTERM or SIGINT.
    pub fn build(
        cairn: Cairn,
        listener: TcpListener,
        options: ApplicationOptions,
    ) -> anyhow::Result<Application> {
        let port = listener.local_addr()?.port();
        let max_body = cairn.config.max_body_bytes;
        let cairn = web::Data::new(cairn);
        let openapi = openapi::document();
        let registry = prometheus::Registry::new();
        cairn_core::metrics::register(&registry)
            .map_err(|e| anyhow::anyhow!("registering the backup metrics: {e}"))?;
        let metrics = PrometheusMetricsBuilder::new("cairn")
            .registry(registry)
            .endpoint("/metrics")
            .mask_unmatched_patterns("UNMATCHED")
            .build()
            .map_err(|e| anyhow::anyhow!("building the metrics middleware: {e}"))?;
        let request_id_header = HeaderName::from_static("x-request-id");
        let mut server = HttpServer::new(move || {
            let request_id_header = request_id_header.clone();
            App::new()
                .app_data(cairn.clone())
                .app_data(web::PayloadConfig::new(max_body))
                .app_data(web::PathConfig::default().error_handler(extract::path_error))
                .app_data(web::QueryConfig::default().error_handler(extract::query_error))
                .configure(routes::configure)
                .configure(console::configure)
                .service(
                    SwaggerUi::new("/docs/{_:.*}").url("/api/v1/openapi.json", openapi.clone()),
                )
                .default_service(web::to(|request: actix_web::HttpRequest| async move {
                    Err::<actix_web::HttpResponse, _>(ApiError::RouteNotFound(format!(
                        "{} {}",
                        request.method(),
                        request.path()
                    )))
                }))
                .wrap(ErrorHandlers::new().default_handler(problem_for_plain_errors))
                .wrap(metrics.clone())
                // Outside the metrics middleware, which answers /metrics.
                .wrap(actix_web::middleware::from_fn(metrics_guard))
                // Echo the request id that every log line of the request
                // carries, so a user can quote it, and log one line per
                // request (inside the request's span: method, route, id).
                .wrap_fn(move |request, service| {
                    let request_id = request
                        .extensions()
                        .get::<RequestId>()
                        .map(|id| id.to_string());
                    let header = request_id_header.clone();
                    let started = std::time::Instant::now();
                    let response = service.call(request);
                    async move {
                        let mut response = response.await?;
                        if let Some(id) = request_id.and_then(|id| HeaderValue::from_str(&id).ok())
                        {
                            response.headers_mut().insert(header, id);
                        }
                        tracing::info!(
                            status = response.status().as_u16(),
                            elapsed_ms = started.elapsed().as_millis() as u64,
                            "request finished"
                        );
                        Ok(response)
                    }
                })
                .wrap(TracingLogger::default())
        })
        .listen(listener)
        .context("listening")?;
        if let Some(workers) = options.workers {
            server = server.workers(workers);
        }
        Ok(Application {
            port,
            server: server.shutdown_timeout(30).run(),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle that stops the server.
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// Refuses `/metrics` without the bearer token `metrics_token`, when one is
/// configured. Compared as SHA-256 digests, so the time taken says nothing
/// about the token.
async fn metrics_guard(
    request: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    use secrecy::ExposeSecret;
    use sha2::{Digest, Sha256};
    if request.path() == "/metrics" {
        let expected = request
            .app_data::<web::Data<Cairn>>()
            .and_then(|cairn| cairn.config.metrics_token.clone());
        if let Some(expected) = expected {
            let given = request
                .headers()
                .get(actix_web::http::header::AUTHORIZATION)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.strip_prefix("Bearer "))
                .unwrap_or_default();
            if Sha256::digest(given.as_bytes())
                != Sha256::digest(expected.expose_secret().as_bytes())
            {
                return Err(ApiError::Unauthorized(
                    "/metrics needs the metrics token (metrics_token) as a bearer token",
                )
                .into());
            }
        }
        if let Some(cairn) = request.app_data::<web::Data<Cairn>>() {
            refresh_metrics(cairn).await;
        }
    }
    next.call(request).await
}

/// Reads the per-job metrics from the database before a scrape answers; a
/// failure is logged and the scrape answers with the last figures read.
async fn refresh_metrics(cairn: &Cairn) {
    if let Err(error) = cairn_core::metrics::refresh(&cairn.db).await {
        tracing::warn!(
            error = format!("{error:#}"),
            "reading the per-job metrics from the database failed"
        );
    }
}

/// The HTTP side of a process that serves no API (`cairn worker`, `cairn
/// scheduler`): `/healthz` and the backup metrics at `/metrics`, on
/// `listener`, the per-job ones read from the database on every scrape.
/// Stops gracefully on SIGTERM or SIGINT, like the API.
pub fn metrics_server(listener: TcpListener, cairn: Cairn) -> anyhow::Result<Server> {
    let registry = prometheus::Registry::new();
    cairn_core::metrics::register(&registry)
        .map_err(|e| anyhow::anyhow!("registering the backup metrics: {e}"))?;
    let registry = web::Data::new(registry);
    let cairn = web::Data::new(cairn);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(registry.clone())
            .app_data(cairn.clone())
            .route("/healthz", web::get().to(routes::ops::healthz))
            .route(
                "/metrics",
                web::get().to(|registry: web::Data<prometheus::Registry>,
                               cairn: web::Data<Cairn>| async move {
                    use prometheus::Encoder;
                    refresh_metrics(&cairn).await;
                    let mut body = Vec::new();
                    let encoder = prometheus::TextEncoder::new();
                    match encoder.encode(&registry.gather(), &mut body) {
                        Ok(()) => actix_web::HttpResponse::Ok()
                            .content_type(encoder.format_type())
                            .body(body),
                        Err(error) => {
                            tracing::error!("encoding metrics failed: {error}");
                            actix_web::HttpResponse::InternalServerError().finish()
                        }
                    }
                }),
            )
    })
    .workers(1)
    .listen(listener)
    .context("listening")?
    .shutdown_timeout(5)
    .run();
    Ok(server)
}
