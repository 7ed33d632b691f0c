//! How the console fails: a page (or, for htmx, the same page that
//! `console.js` shows in the alert area) with the problem's title and
//! detail and each refused field — the same words as the API's
//! problem+json, never a stack trace. Not signed in: a redirect to the
//! sign-in page.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use maud::html;

use crate::error::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error(transparent)]
    Api(#[from] ApiError),
    /// No live session: sign in first.
    #[error("sign in first")]
    SignIn,
    /// A state-changing form without its session's CSRF token.
    #[error(
        "the form's CSRF token is missing or is not this session's; reload the page and try again"
    )]
    Csrf,
    #[error("no such page")]
    NotFound,
    /// A form the console refuses before calling Cairn (field, reason).
    #[error("{0}: {1}")]
    Form(&'static str, String),
}

impl From<cairn_core::Error> for ConsoleError {
    fn from(error: cairn_core::Error) -> Self {
        ConsoleError::Api(ApiError::Core(error))
    }
}

impl ResponseError for ConsoleError {
    fn status_code(&self) -> StatusCode {
        match self {
            ConsoleError::Api(error) => error.status_code(),
            ConsoleError::SignIn => StatusCode::SEE_OTHER,
            ConsoleError::Csrf => StatusCode::FORBIDDEN,
            ConsoleError::NotFound => StatusCode::NOT_FOUND,
            ConsoleError::Form(..) => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ConsoleError::SignIn = self {
            // htmx follows HX-Redirect; a plain request the Location.
            return HttpResponse::SeeOther()
                .insert_header(("Location", "/ui/sign-in"))
                .insert_header(("HX-Redirect", "/ui/sign-in"))
                .finish();
        }
        let (title, detail, fields) = match self {
            ConsoleError::Api(error) => {
                if let ApiError::Core(cairn_core::Error::Unexpected(cause)) = error {
                    tracing::error!(error = ?cause, "a console request failed unexpectedly");
                }
                let problem = error.problem();
                let fields = problem
                    .errors
                    .iter()
                    .map(|e| (e.field.clone(), e.message.clone()))
                    .collect();
                (problem.title, problem.detail, fields)
            }
            ConsoleError::Csrf => ("Forbidden".to_owned(), self.to_string(), Vec::new()),
            ConsoleError::NotFound => ("Not found".to_owned(), self.to_string(), Vec::new()),
            ConsoleError::Form(field, reason) => (
                "Invalid request".to_owned(),
                self.to_string(),
                vec![((*field).to_owned(), reason.clone())],
            ),
            ConsoleError::SignIn => unreachable!("answered above"),
        };
        let status = self.status_code();
        let page = super::layout::bare(
            &title,
            html! {
                section.problem role="alert" {
                    h1 { (title) }
                    p.problem-detail { (detail) }
                    @if !fields.is_empty() {
                        ul.problem-fields {
                            @for (field, message) in &fields {
                                li { code { (field) } ": " (message) }
                            }
                        }
                    }
                    p { a href="/ui/" { "Back to the dashboard" } }
                }
            },
        );
        HttpResponse::build(status)
            .content_type("text/html; charset=utf-8")
            .body(page.into_string())
    }
}
