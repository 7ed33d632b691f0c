//! The web console under `/ui/`: server-rendered HTML (maud) on the API's
//! port, for a person on call with only a browser.
//!
//! - Sign-in takes an API token; the browser then holds only an
//!   `HttpOnly`, `SameSite=Strict` session cookie (`Secure` behind HTTPS)
//!   and every state-changing form carries the session's CSRF token
//!   ([`session`]).
//! - Pages call the same `cairn-core` operations as the API, after the
//!   same role check ([`session::Session::require`]); a page shows only the
//!   buttons the session's role may use, and the server refuses the rest.
//! - The only scripts are files served from `/ui/assets/` (htmx, vendored,
//!   and `console.js`); the Content-Security-Policy allows nothing else:
//!   no inline script or style, no other origin.
//! - Long work (runs, restores, verifications) is shown by fragments that
//!   htmx polls until it ends.

mod assets;
mod error;
mod layout;
mod pages;
pub mod session;

use actix_web::middleware::DefaultHeaders;
use actix_web::web;

pub use error::ConsoleError;

/// The Content-Security-Policy of every console response.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

/// Wires `/ui/…`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/ui",
        web::get().to(|| async {
            actix_web::HttpResponse::PermanentRedirect()
                .insert_header(("Location", "/ui/"))
                .finish()
        }),
    );
    cfg.service(
        web::scope("/ui")
            .wrap(
                DefaultHeaders::new()
                    .add(("Content-Security-Policy", CONTENT_SECURITY_POLICY))
                    .add(("X-Content-Type-Options", "nosniff"))
                    .add(("X-Frame-Options", "DENY"))
                    .add(("Referrer-Policy", "same-origin"))
                    .add(("Cache-Control", "no-store")),
            )
            .route("/assets/{name}", web::get().to(assets::serve))
            .route("/sign-in", web::get().to(session::sign_in_form))
            .route("/sign-in", web::post().to(session::sign_in))
            .route("/sign-out", web::post().to(session::sign_out))
            .configure(pages::configure),
    );
}
