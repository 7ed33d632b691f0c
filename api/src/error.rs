//! Every failure leaves the API as `application/problem+json` (RFC 9457):
//! `type`, `title`, `status`, `detail`, and `errors` per field for invalid
//! input. Unexpected errors are logged here, once, with their cause chain;
//! the caller sees only that one happened.

use actix_web::body::EitherBody;
use actix_web::dev::ServiceResponse;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{HttpResponse, ResponseError};
use cairn_core::{Error, FieldError};
use serde::Serialize;
use utoipa::ToSchema;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem (`urn:cairn:problem:…`).
    #[serde(rename = "type")]
    pub problem_type: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// For invalid input: each refused field and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// Why a request failed, as the API reports it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Core(#[from] Error),
    /// No or an unknown bearer token.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The body is not JSON at all.
    #[error("{0}")]
    MalformedBody(String),
    #[error("the body must be JSON: send Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("the body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    /// A path segment that must be an id is not one.
    #[error("the URL names an id that is not valid")]
    BadPathId(Vec<FieldError>),
    #[error("no route matches {0}")]
    RouteNotFound(String),
    #[error("the service is not ready: {0}")]
    Unavailable(String),
}

impl ApiError {
    fn kind(&self) -> (&'static str, &'static str) {
        match self {
            ApiError::Core(Error::Validation(_)) => ("validation", "Invalid request"),
            ApiError::Core(Error::NotFound(_) | Error::Absent(_)) => ("not-found", "Not found"),
            ApiError::Core(Error::Forbidden(_)) => ("forbidden", "Forbidden"),
            ApiError::Core(Error::Conflict { .. }) => ("conflict", "Conflict"),
            ApiError::Core(Error::Unexpected(_)) => ("internal", "Internal server error"),
            ApiError::Core(Error::Upstream(_)) => ("storage-unavailable", "Storage target failed"),
            ApiError::Core(Error::Busy(_)) => ("busy", "Too many requests"),
            ApiError::Unauthorized(_) => ("unauthorized", "Unauthorized"),
            ApiError::MalformedBody(_) => ("malformed-body", "Malformed request body"),
            ApiError::UnsupportedMediaType => ("unsupported-media-type", "Unsupported media type"),
            ApiError::PayloadTooLarge(_) => ("payload-too-large", "Request body too large"),
            ApiError::BadPathId(_) => ("not-found", "Not found"),
            ApiError::RouteNotFound(_) => ("not-found", "Not found"),
            ApiError::Unavailable(_) => ("unavailable", "Service unavailable"),
        }
    }

    pub fn problem(&self) -> Problem {
        let (kind, title) = self.kind();
        let detail = match self {
            ApiError::Core(Error::Unexpected(_)) => {
                "an unexpected error occurred; it has been logged with this request's id".to_owned()
            }
            ApiError::Core(Error::Validation(errors)) => match errors.as_slice() {
                [only] => format!("{}: {}", only.field, only.message),
                _ => format!("{} fields are invalid", errors.len()),
            },
            other => other.to_string(),
        };
        let errors = match self {
            ApiError::Core(Error::Validation(errors)) | ApiError::BadPathId(errors) => {
                errors.clone()
            }
            ApiError::Core(Error::Conflict {
                field: Some(field),
                message,
            }) => {
                vec![FieldError::new(field.clone(), message.clone())]
            }
            _ => Vec::new(),
        };
        Problem {
            problem_type: format!("urn:cairn:problem:{kind}"),
            title: title.to_owned(),
            status: self.status_code().as_u16(),
            detail,
            errors,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Core(Error::Validation(_)) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Core(Error::NotFound(_) | Error::Absent(_)) => StatusCode::NOT_FOUND,
            ApiError::Core(Error::Forbidden(_)) => StatusCode::FORBIDDEN,
            ApiError::Core(Error::Conflict { .. }) => StatusCode::CONFLICT,
            ApiError::Core(Error::Unexpected(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Core(Error::Upstream(_)) => StatusCode::BAD_GATEWAY,
            ApiError::Core(Error::Busy(_)) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::MalformedBody(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadPathId(_) | ApiError::RouteNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Core(Error::Unexpected(error)) = self {
            tracing::error!(error = ?error, "request failed unexpectedly");
        }
        let mut response = problem_response(&self.problem());
        if matches!(self, ApiError::Unauthorized(_)) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

fn problem_response(problem: &Problem) -> HttpResponse {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    HttpResponse::build(status)
        .content_type(PROBLEM_JSON)
        .json(problem)
}

/// Rewrites any error response that is not already a problem document (405
/// from the router, errors raised by actix itself) into one, so that every
/// failure has the same shape.
pub fn problem_for_plain_errors<B>(
    response: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with(PROBLEM_JSON) || value.starts_with("text/html"));
    // A problem already, or a page of the console that says the problem.
    if is_problem {
        return Ok(ErrorHandlerResponse::Response(
            response.map_into_left_body(),
        ));
    }
    let status = response.status();
    let (request, original) = response.into_parts();
    let problem = Problem {
        problem_type: format!(
            "urn:cairn:problem:{}",
            status
                .canonical_reason()
                .unwrap_or("error")
                .to_ascii_lowercase()
                .replace(' ', "-")
        ),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        detail: match status {
            StatusCode::METHOD_NOT_ALLOWED => {
                format!("{} is not allowed on {}", request.method(), request.path())
            }
            _ => status.canonical_reason().unwrap_or("error").to_owned(),
        },
        errors: Vec::new(),
    };
    let mut rewritten = problem_response(&problem);
    for (name, value) in original.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rewritten.headers_mut().insert(name.clone(), value.clone());
        }
    }
    let response: ServiceResponse<EitherBody<B>> =
        ServiceResponse::new(request, rewritten).map_into_right_body();
    Ok(ErrorHandlerResponse::Response(response))
}
