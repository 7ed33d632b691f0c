//! One module per resource. Each module's route table (`routes!`) wires its
//! handlers and lists them in `WIRED`, and a test holds the union of those
//! lists to the OpenAPI document's operations, exactly. A handler's
//! extractors authenticate and authorize the caller; the handler calls
//! `cairn-core` and returns a view.

/// A module's route table: `"path" => { method: handler, … }`, one row per
/// path, in the order actix should match them. It defines `configure`,
/// which wires the routes, and `WIRED`, the `(method, path)` of each.
macro_rules! routes {
    ($($path:literal => { $($method:ident: $handler:path),+ $(,)? }),+ $(,)?) => {
        /// Wires this module's routes.
        pub fn configure(cfg: &mut actix_web::web::ServiceConfig) {
            $(
                cfg.service(
                    actix_web::web::resource($path)
                        $(.route(actix_web::web::$method().to($handler)))+,
                );
            )+
        }

        /// The `(method, path)` of every route [`configure`] wires.
        pub const WIRED: &[(&str, &str)] = &[$($((stringify!($method), $path)),+),+];
    };
}

pub mod apps;
pub mod history;
pub mod jobs;
pub mod notifications;
pub mod ops;
pub mod orgs;
pub mod restores;
pub mod system;
pub mod targets;
pub mod tokens;
pub mod verifications;

use actix_web::web;
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    // The Swagger UI lives at `/docs/`; `/docs` leads there.
    cfg.service(web::resource("/docs").route(web::get().to(|| async {
        actix_web::HttpResponse::PermanentRedirect()
            .insert_header(("Location", "/docs/"))
            .finish()
    })));
    ops::configure(cfg);
    orgs::configure(cfg);
    tokens::configure(cfg);
    targets::configure(cfg);
    apps::configure(cfg);
    jobs::configure(cfg);
    history::configure(cfg);
    restores::configure(cfg);
    verifications::configure(cfg);
    notifications::configure(cfg);
    system::configure(cfg);
}

/// The `(method, path)` of every API route, from the modules' tables.
pub fn wired() -> Vec<(&'static str, &'static str)> {
    [
        ops::WIRED,
        orgs::WIRED,
        tokens::WIRED,
        targets::WIRED,
        apps::WIRED,
        jobs::WIRED,
        history::WIRED,
        restores::WIRED,
        verifications::WIRED,
        notifications::WIRED,
        system::WIRED,
    ]
    .concat()
}

/// `{orgId}`
#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Path, rename_all = "camelCase")]
pub struct OrgPath {
    /// The organization's id.
    pub org_id: Uuid,
}

/// `{orgId}/…/{id}` for a resource of an organization.
macro_rules! org_resource_path {
    ($name:ident, $field:ident, $what:literal) => {
        #[derive(serde::Deserialize, utoipa::IntoParams)]
        #[serde(rename_all = "camelCase")]
        #[into_params(parameter_in = Path, rename_all = "camelCase")]
        pub struct $name {
            /// The organization's id.
            pub org_id: uuid::Uuid,
            #[doc = concat!("The ", $what, "'s id.")]
            pub $field: uuid::Uuid,
        }
    };
}

org_resource_path!(OrgTokenPath, token_id, "token");
org_resource_path!(OrgTargetPath, target_id, "target");
org_resource_path!(OrgAppPath, app_id, "app");
org_resource_path!(OrgJobPath, job_id, "job");
org_resource_path!(OrgBackupPath, backup_id, "backup");
org_resource_path!(OrgRestorePath, restore_id, "restore");
org_resource_path!(OrgVerificationPath, verification_id, "verification");
org_resource_path!(OrgChannelPath, channel_id, "channel");

/// `{targetId}` of a system-level target.
#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Path, rename_all = "camelCase")]
pub struct SystemTargetPath {
    /// The target's id.
    pub target_id: Uuid,
}

/// `{ "items": [...], "nextCursor": … }`: one page of a list
/// (`?limit&cursor`, as history takes them).
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    pub fn of((items, next_cursor): (Vec<T>, Option<String>)) -> Page<T> {
        Page { items, next_cursor }
    }
}

/// `201 Created` with `Location`: a new resource lives at the collection's
/// path (the request's) followed by its id.
pub fn created(
    request: &actix_web::HttpRequest,
    id: Uuid,
    view: &impl serde::Serialize,
) -> actix_web::HttpResponse {
    actix_web::HttpResponse::Created()
        .insert_header((
            "Location",
            format!("{}/{id}", request.path().trim_end_matches('/')),
        ))
        .json(view)
}
