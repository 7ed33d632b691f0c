//! Signing in and out of the console, the [`Session`] every page takes,
//! and [`Posted`], the only way a page reads a form: it refuses one
//! without the session's CSRF token before the handler runs.
//!
//! The sign-in form has no session yet; it is guarded by a nonce in a
//! short-lived `SameSite=Strict` cookie that the form must repeat, so
//! another site cannot sign a browser in under its own token.

use actix_web::cookie::{time, Cookie, SameSite};
use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cairn_core::auth::{Principal, Role};
use cairn_core::{sessions, Cairn};
use chrono::Utc;
use maud::html;
use rand::RngCore;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::layout;
use super::ConsoleError;
use crate::extract::LocalFuture;

/// The session cookie.
pub const SESSION_COOKIE: &str = "cairn_session";
/// The nonce of the sign-in form.
const SIGN_IN_COOKIE: &str = "cairn_sign_in";
/// The form field that carries the CSRF token.
pub const CSRF_FIELD: &str = "_csrf";
/// The largest form the console reads.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// A signed-in browser: who it is (read again from its token at each
/// request) and the CSRF token its forms carry.
pub struct Session {
    pub principal: Principal,
    pub csrf: String,
    id: String,
}

impl Session {
    /// Allows what the API allows: the organization must be the token's
    /// (another one is "not found", as a missing one) and still active, and
    /// the role at least `role`.
    pub async fn require(
        &self,
        cairn: &Cairn,
        organization_id: Uuid,
        role: Role,
        action: &str,
    ) -> Result<(), ConsoleError> {
        self.principal.require(organization_id, role, action)?;
        cairn_core::orgs::require_active(&cairn.read, organization_id).await?;
        Ok(())
    }

    /// Whether the session may do what needs `role` in the organization:
    /// a page shows a button only then.
    pub fn can(&self, organization_id: Uuid, role: Role) -> bool {
        self.principal.require(organization_id, role, "").is_ok()
    }
}

fn cookie_value(request: &HttpRequest, name: &str) -> Option<String> {
    request.cookie(name).map(|c| c.value().to_owned())
}

impl FromRequest for Session {
    type Error = ConsoleError;
    type Future = LocalFuture<Result<Session, ConsoleError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let cairn = request.app_data::<web::Data<Cairn>>().cloned();
        let id = cookie_value(request, SESSION_COOKIE);
        Box::pin(async move {
            let (Some(cairn), Some(id)) = (cairn, id) else {
                return Err(ConsoleError::SignIn);
            };
            let principal = sessions::principal(&cairn, &id, Utc::now())
                .await?
                .ok_or(ConsoleError::SignIn)?;
            Ok(Session {
                principal,
                csrf: sessions::csrf_token(&id),
                id,
            })
        })
    }
}

/// A form posted by a page of this session, its CSRF token checked.
pub struct Posted<T> {
    pub session: Session,
    pub form: T,
}

#[derive(Deserialize)]
struct CsrfOnly {
    #[serde(rename = "_csrf")]
    csrf: Option<String>,
}

impl<T: DeserializeOwned + 'static> FromRequest for Posted<T> {
    type Error = ConsoleError;
    type Future = LocalFuture<Result<Posted<T>, ConsoleError>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let session = Session::from_request(request, payload);
        let body = web::Bytes::from_request(request, payload);
        Box::pin(async move {
            let session = session.await?;
            let body = body
                .await
                .map_err(|_| ConsoleError::Form("form", "the form could not be read".to_owned()))?;
            if body.len() > MAX_FORM_BYTES {
                return Err(ConsoleError::Form(
                    "form",
                    format!("larger than {MAX_FORM_BYTES} bytes"),
                ));
            }
            let given = serde_urlencoded::from_bytes::<CsrfOnly>(&body)
                .ok()
                .and_then(|f| f.csrf)
                .unwrap_or_default();
            if !sessions::csrf_matches(&session.id, &given) {
                return Err(ConsoleError::Csrf);
            }
            let form = serde_urlencoded::from_bytes::<T>(&body)
                .map_err(|e| ConsoleError::Form("form", e.to_string()))?;
            Ok(Posted { session, form })
        })
    }
}

/// A form with nothing but its CSRF token.
#[derive(Deserialize)]
pub struct NoFields {}

fn secure(request: &HttpRequest) -> bool {
    request.connection_info().scheme() == "https"
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn sign_in_page(nonce: &str, refusal: Option<&str>) -> maud::Markup {
    layout::bare(
        "Sign in",
        html! {
            section.sign-in {
                h1 { "Sign in to Cairn" }
                @if let Some(refusal) = refusal {
                    p.problem-detail role="alert" { (refusal) }
                }
                form method="post" action="/ui/sign-in" {
                    input type="hidden" name=(CSRF_FIELD) value=(nonce);
                    label for="token" { "API token" }
                    input #token type="password" name="token" autocomplete="off" required
                        autofocus aria-describedby="token-help";
                    p #token-help .help {
                        "A system administrator token, or a token of your organization. "
                        "The browser keeps only a session cookie; the token is not stored."
                    }
                    button type="submit" { "Sign in" }
                }
            }
        },
    )
}

/// `GET /ui/sign-in`.
pub async fn sign_in_form(request: HttpRequest) -> HttpResponse {
    let nonce = random_token();
    let cookie = Cookie::build(SIGN_IN_COOKIE, nonce.clone())
        .path("/ui/sign-in")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure(&request))
        .max_age(time::Duration::hours(1))
        .finish();
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .cookie(cookie)
        .body(sign_in_page(&nonce, None).into_string())
}

#[derive(Deserialize)]
pub struct SignInForm {
    #[serde(rename = "_csrf", default)]
    csrf: String,
    #[serde(default)]
    token: String,
}

/// `POST /ui/sign-in`: a session for a known token.
pub async fn sign_in(
    request: HttpRequest,
    cairn: web::Data<Cairn>,
    form: web::Form<SignInForm>,
) -> Result<HttpResponse, ConsoleError> {
    let nonce = cookie_value(&request, SIGN_IN_COOKIE).unwrap_or_default();
    if nonce.is_empty() || !bool::from(nonce.as_bytes().ct_eq(form.csrf.as_bytes())) {
        return Err(ConsoleError::Csrf);
    }
    if form.token.trim().is_empty() {
        return Err(ConsoleError::Form("token", "enter an API token".to_owned()));
    }
    let Some(signed_in) = sessions::sign_in(&cairn, &form.token, Utc::now()).await? else {
        tracing::info!("a console sign-in with an unknown token was refused");
        return Ok(HttpResponse::Unauthorized()
            .content_type("text/html; charset=utf-8")
            .body(sign_in_page(&nonce, Some("This token is not known to Cairn.")).into_string()));
    };
    tracing::info!(
        token_id = ?signed_in.principal.token_id,
        organization_id = ?signed_in.principal.organization_id,
        "signed in to the console"
    );
    let lifetime = (signed_in.expires_at - Utc::now()).num_seconds().max(0);
    let session = Cookie::build(SESSION_COOKIE, signed_in.session)
        .path("/ui")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure(&request))
        .max_age(time::Duration::seconds(lifetime))
        .finish();
    let mut spent = Cookie::build(SIGN_IN_COOKIE, "")
        .path("/ui/sign-in")
        .finish();
    spent.make_removal();
    Ok(HttpResponse::SeeOther()
        .insert_header(("Location", "/ui/"))
        .cookie(session)
        .cookie(spent)
        .finish())
}

/// `POST /ui/sign-out`: ends the session (its row is deleted).
pub async fn sign_out(
    cairn: web::Data<Cairn>,
    posted: Posted<NoFields>,
) -> Result<HttpResponse, ConsoleError> {
    sessions::sign_out(&cairn, &posted.session.id).await?;
    let mut cleared = Cookie::build(SESSION_COOKIE, "").path("/ui").finish();
    cleared.make_removal();
    Ok(HttpResponse::SeeOther()
        .insert_header(("Location", "/ui/sign-in"))
        .cookie(cleared)
        .finish())
}
