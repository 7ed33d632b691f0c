//! Authorization in the extractor's type: a handler that takes
//! `OrgAccess<Admin>` runs only for a caller that may act on the
//! organization in the path (`{orgId}`) with at least the admin role, and
//! only while that organization is not deleted; `SystemAdmin` only for a
//! system administrator. Another organization's id answers 404, exactly as
//! a missing one; a role too low answers 403 naming the route and the role
//! it needs. The extractors run before the body is looked at, so a bad body
//! sent to another organization still answers 404.

use std::marker::PhantomData;

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use cairn_core::auth::{self, Principal, Role};
use cairn_core::Cairn;
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::{Auth, LocalFuture};

/// The least role a route needs, as a type.
pub trait Required {
    const ROLE: Role;
}

/// Read everything in the organization.
pub struct Viewer;
/// Also trigger runs and restores.
pub struct Operator;
/// Everything in the organization.
pub struct Admin;

impl Required for Viewer {
    const ROLE: Role = Role::Viewer;
}
impl Required for Operator {
    const ROLE: Role = Role::Operator;
}
impl Required for Admin {
    const ROLE: Role = Role::Admin;
}

/// A caller allowed to act on the organization `org_id` (from the path)
/// with at least role `R`.
pub struct OrgAccess<R> {
    pub principal: Principal,
    pub org_id: Uuid,
    role: PhantomData<R>,
}

/// What a refusal names: the method and the route's pattern
/// (`POST /api/v1/organizations/{orgId}/backups/targets`), never the ids.
/// Formatted only when a refusal is written: finding the pattern matches
/// the path against the routes again.
struct Action(HttpRequest);

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}",
            self.0.method(),
            self.0
                .match_pattern()
                .unwrap_or_else(|| "this route".into())
        )
    }
}

impl<R: Required + 'static> FromRequest for OrgAccess<R> {
    type Error = ApiError;
    type Future = LocalFuture<Result<OrgAccess<R>, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let bearer = crate::extract::bearer_of(request);
        let cairn = request.app_data::<web::Data<Cairn>>().cloned();
        let org_id = request.match_info().get("orgId").map(Uuid::parse_str);
        let bad_ids = crate::extract::bad_ids(request);
        let action = Action(request.clone());
        Box::pin(async move {
            let cairn = cairn.ok_or_else(crate::extract::state_missing)?;
            let bearer = bearer?;
            let now = chrono::Utc::now();
            // The token and the organization's state in one statement when
            // the path names a valid id.
            let (principal, active) = match &org_id {
                Some(Ok(id)) => auth::authenticate_in(&cairn, &bearer, *id, now).await?,
                _ => auth::authenticate(&cairn, &bearer, now)
                    .await?
                    .map(|principal| (principal, None)),
            }
            .ok_or(crate::extract::INVALID_TOKEN)?;
            let org_id = match org_id {
                Some(Ok(id)) => id,
                Some(Err(_)) => return Err(ApiError::BadPathId(bad_ids)),
                None => {
                    return Err(ApiError::Core(cairn_core::Error::Unexpected(
                        anyhow::anyhow!("{action} has no {{orgId}} but asks for OrgAccess"),
                    )))
                }
            };
            principal.require(org_id, R::ROLE, &action)?;
            // A deleted organization's resources are out of reach for
            // everyone until it is undeleted.
            match active {
                Some(true) => {}
                Some(false) => return Err(cairn_core::Error::NotFound("organization").into()),
                None => cairn_core::orgs::require_active(&cairn.read, org_id).await?,
            }
            Ok(OrgAccess {
                principal,
                org_id,
                role: PhantomData,
            })
        })
    }
}

/// A system administrator.
pub struct SystemAdmin(pub Principal);

impl FromRequest for SystemAdmin {
    type Error = ApiError;
    type Future = LocalFuture<Result<SystemAdmin, ApiError>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let auth = Auth::from_request(request, payload);
        let action = Action(request.clone());
        Box::pin(async move {
            let Auth(principal) = auth.await?;
            principal.require_system_admin(&action)?;
            Ok(SystemAdmin(principal))
        })
    }
}
