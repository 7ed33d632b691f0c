//! The OpenAPI document. Standard error responses and the bearer security
//! scheme are added to every operation by [`ErrorsAndSecurity`], so that no
//! handler can forget them.

use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as OpenApiDoc, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::error::{Problem, PROBLEM_JSON};
use crate::routes::{
    apps, history, jobs, notifications, ops, orgs, restores, system, targets, tokens, verifications,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Cairn",
        description = "Multi-tenant backup service: storage targets, backup jobs, apps and their volumes, backup history and restores.\n\nEvery error is `application/problem+json` (RFC 9457).",
        license(name = "Apache-2.0")
    ),
    paths(
        ops::healthz,
        ops::readyz,
        orgs::create,
        orgs::list,
        orgs::get,
        orgs::remove,
        orgs::undelete,
        tokens::create,
        tokens::list,
        tokens::remove,
        targets::list,
        targets::create,
        targets::get,
        targets::update,
        targets::remove,
        targets::test,
        targets::system_list,
        targets::system_create,
        targets::system_get,
        targets::system_update,
        targets::system_remove,
        targets::system_test,
        system::list,
        system::run,
        system::import,
        system::orphans,
        system::sweep,
        apps::list,
        apps::create,
        apps::get,
        apps::update,
        apps::remove,
        apps::deploy,
        apps::backup_now,
        jobs::list,
        jobs::create,
        jobs::get,
        jobs::update,
        jobs::remove,
        jobs::retention,
        jobs::run,
        jobs::runs_list,
        jobs::encryption_key,
        jobs::export_encryption_key,
        history::list,
        history::get,
        history::download,
        history::accept,
        history::remove,
        restores::preview,
        restores::request,
        restores::list,
        restores::get,
        verifications::request,
        verifications::list,
        verifications::get,
        verifications::report,
        notifications::list,
        notifications::create,
        notifications::get,
        notifications::update,
        notifications::remove,
        notifications::test,
        notifications::deliveries,
    ),
    components(schemas(Problem, cairn_core::notifications::NotificationPayload)),
    modifiers(&ErrorsAndSecurity),
    tags(
        (name = "organizations", description = "Tenants"),
        (name = "tokens", description = "API tokens of an organization"),
        (name = "targets", description = "Where an organization's archives are written"),
        (name = "system", description = "System-level targets and Cairn's self-backups (administrators)"),
        (name = "apps", description = "Apps and the volumes to back up"),
        (name = "jobs", description = "Backup jobs: schedule, target, retention, notifications"),
        (name = "history", description = "Every backup and its log"),
        (name = "restores", description = "Previews, restores and clones of backups"),
        (name = "verifications", description = "Proof that backups restore: read back or restored into scratch space, and compared with their manifests"),
        (name = "notifications", description = "Email, Slack and webhook channels, and every delivery. Webhook bodies follow the `NotificationPayload` schema (version 1)."),
        (name = "operations", description = "Liveness and readiness"),
    )
)]
pub struct ApiDoc;

/// The document as the running server serves it.
pub fn document() -> OpenApiDoc {
    ApiDoc::openapi()
}

struct ErrorsAndSecurity;

fn problem(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            PROBLEM_JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
}

fn add_response(operation: &mut Operation, status: &str, description: &str) {
    operation
        .responses
        .responses
        .entry(status.to_owned())
        .or_insert_with(|| problem(description).into());
}

impl Modify for ErrorsAndSecurity {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API token: `Authorization: Bearer cairn_…`"))
                    .build(),
            ),
        );
        for (path, item) in openapi.paths.paths.iter_mut() {
            let has_path_ids = path.contains('{');
            let operations = [
                item.get.as_mut(),
                item.post.as_mut(),
                item.put.as_mut(),
                item.delete.as_mut(),
            ];
            for operation in operations.into_iter().flatten() {
                add_response(
                    operation,
                    "500",
                    "An unexpected error; logged with the request id",
                );
                if !path.starts_with("/api/v1/") {
                    continue;
                }
                operation.security = Some(vec![SecurityRequirement::new(
                    "bearer",
                    Vec::<String>::new(),
                )]);
                add_response(operation, "401", "No valid bearer token");
                add_response(operation, "403", "The token's role does not allow this");
                if has_path_ids {
                    add_response(
                        operation,
                        "404",
                        "No such resource, or it belongs to another organization",
                    );
                }
                let has_query = operation.parameters.as_ref().is_some_and(|parameters| {
                    parameters.iter().any(|p| {
                        matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Query)
                    })
                });
                if operation.request_body.is_some() {
                    add_response(operation, "400", "The body is not valid JSON");
                    add_response(operation, "413", "The body is larger than the limit");
                    add_response(operation, "415", "The body is not application/json");
                }
                if operation.request_body.is_some() || has_query {
                    add_response(operation, "422", "Invalid input; `errors` names each field");
                }
            }
        }
    }
}
