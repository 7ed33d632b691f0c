//! The console's pages, one module per area. Each handler takes the
//! [`Session`](super::session::Session) (or a [`Posted`](super::session::Posted)
//! form), checks the role the API would ask for, calls `cairn-core`, and
//! renders.

mod dashboard;
mod history;
mod jobs;
mod restores;
mod settings;

use actix_web::web;
use cairn_core::Cairn;
use uuid::Uuid;

use cairn_core::auth::Role;

use super::layout::{self, OrgNav};
use super::session::Session;
use super::ConsoleError;

/// Wires every page under `/ui`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(dashboard::home))
        .route("/orgs/{orgId}", web::get().to(dashboard::dashboard))
        .route("/orgs/{orgId}/jobs/{jobId}", web::get().to(jobs::job))
        .route("/orgs/{orgId}/jobs/{jobId}/runs", web::get().to(jobs::runs))
        .route(
            "/orgs/{orgId}/jobs/{jobId}/run",
            web::post().to(jobs::run_now),
        )
        .route("/orgs/{orgId}/history", web::get().to(history::history))
        .route(
            "/orgs/{orgId}/backups/{backupId}",
            web::get().to(history::backup),
        )
        .route(
            "/orgs/{orgId}/backups/{backupId}/download",
            web::get().to(history::download),
        )
        .route(
            "/orgs/{orgId}/backups/{backupId}/restore",
            web::get().to(restores::restore_form),
        )
        .route(
            "/orgs/{orgId}/backups/{backupId}/restore",
            web::post().to(restores::restore),
        )
        .route(
            "/orgs/{orgId}/backups/{backupId}/verify",
            web::post().to(settings::verify),
        )
        .route("/orgs/{orgId}/restores", web::get().to(restores::list))
        .route(
            "/orgs/{orgId}/restores/{restoreId}",
            web::get().to(restores::restore_page),
        )
        .route(
            "/orgs/{orgId}/restores/{restoreId}/progress",
            web::get().to(restores::progress),
        )
        .route(
            "/orgs/{orgId}/verifications",
            web::get().to(settings::verifications),
        )
        .route("/orgs/{orgId}/targets", web::get().to(settings::targets))
        .route(
            "/orgs/{orgId}/targets/{targetId}/test",
            web::post().to(settings::test_target),
        )
        .route(
            "/orgs/{orgId}/notifications",
            web::get().to(settings::notifications),
        )
        .route("/orgs/{orgId}/tokens", web::get().to(settings::tokens))
        .route(
            "/orgs/{orgId}/tokens",
            web::post().to(settings::create_token),
        );
}

/// `{orgId}` and the id after it, read from the path by name.
fn path_id(request: &actix_web::HttpRequest, name: &str) -> Result<Uuid, ConsoleError> {
    request
        .match_info()
        .get(name)
        .and_then(|id| Uuid::parse_str(id).ok())
        .ok_or(ConsoleError::NotFound)
}

/// The organization a page is about (`{orgId}`), once the session may act
/// on it with `role`, with its name for the navigation.
struct OrgPage {
    id: Uuid,
    name: String,
}

async fn org_page(
    request: &actix_web::HttpRequest,
    session: &Session,
    cairn: &Cairn,
    role: Role,
    action: &str,
) -> Result<OrgPage, ConsoleError> {
    let id = path_id(request, "orgId")?;
    session.require(cairn, id, role, action).await?;
    let name = cairn_core::orgs::get(&cairn.db, id).await?.name;
    Ok(OrgPage { id, name })
}

impl OrgPage {
    /// A page of this organization.
    fn render(
        &self,
        title: &str,
        session: &Session,
        body: maud::Markup,
    ) -> actix_web::HttpResponse {
        html(layout::page(
            title,
            session,
            Some(OrgNav {
                id: self.id,
                name: &self.name,
            }),
            body,
        ))
    }
}

/// An HTML response.
fn html(markup: maud::Markup) -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(markup.into_string())
}
