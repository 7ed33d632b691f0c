//! Extractors: authentication (`Auth`), JSON bodies with per-field errors
//! (`Body`), and the error handlers of actix's own extractors.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::error::{PayloadError, QueryPayloadError};
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use cairn_core::auth::{self, Principal};
use cairn_core::{Cairn, Error, FieldError};
use chrono::Utc;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::error::ApiError;

pub(crate) type LocalFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// The authenticated caller: a valid `Authorization: Bearer <token>`.
pub struct Auth(pub Principal);

impl FromRequest for Auth {
    type Error = ApiError;
    type Future = LocalFuture<Result<Auth, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let cairn = request.app_data::<web::Data<Cairn>>().cloned();
        let bearer = bearer_of(request);
        Box::pin(async move {
            let cairn = cairn.ok_or_else(state_missing)?;
            let principal = auth::authenticate(&cairn, &bearer?, Utc::now())
                .await?
                .ok_or(INVALID_TOKEN)?;
            Ok(Auth(principal))
        })
    }
}

/// The refusal of a token that signs no one in.
pub(crate) const INVALID_TOKEN: ApiError = ApiError::Unauthorized("the bearer token is not valid");

/// The token of `Authorization: Bearer <token>`, or the refusal of a
/// request without one.
pub(crate) fn bearer_of(request: &HttpRequest) -> Result<String, ApiError> {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_owned())
        })
        .filter(|token| !token.is_empty())
        .ok_or(ApiError::Unauthorized("send Authorization: Bearer <token>"))
}

/// The error of a request whose application state is missing.
pub(crate) fn state_missing() -> ApiError {
    ApiError::Core(Error::Unexpected(anyhow::anyhow!(
        "the application state is missing"
    )))
}

/// A JSON body, deserialized with the path of the offending field in every
/// error (`config.bucket`, `volumes[1].name`).
///
/// Extraction itself never fails: the outcome is kept until the handler asks
/// for it with [`Body::parse`] after checking the caller, so that a bad body
/// sent without a valid token, or to another organization, still answers
/// 401 or 404 rather than describing the body.
pub struct Body<T>(Result<T, ApiError>);

impl<T> Body<T> {
    /// The request, or why the body was refused.
    pub fn parse(self) -> Result<T, ApiError> {
        self.0
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for Body<T> {
    type Error = ApiError;
    type Future = LocalFuture<Result<Body<T>, ApiError>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let is_json = matches!(
            request.mime_type(),
            Ok(Some(mime)) if mime.essence_str() == "application/json"
                || mime.suffix().is_some_and(|suffix| suffix == "json")
        );
        let limit = request
            .app_data::<web::Data<Cairn>>()
            .map(|cairn| cairn.config.max_body_bytes)
            .unwrap_or_default();
        let bytes = web::Bytes::from_request(request, payload);
        Box::pin(async move {
            if !is_json {
                return Ok(Body(Err(ApiError::UnsupportedMediaType)));
            }
            let parsed = match bytes.await {
                Ok(bytes) => parse_json(&bytes),
                Err(error) => Err(match error.as_error::<PayloadError>() {
                    Some(PayloadError::Overflow) => ApiError::PayloadTooLarge(limit),
                    _ => ApiError::MalformedBody("the request body could not be read".into()),
                }),
            };
            Ok(Body(parsed))
        })
    }
}

/// Parses a body in two steps, so that the kind of failure is clear: first
/// JSON syntax over the whole body (400), then the shape of the request
/// (422, naming the field).
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|error| ApiError::MalformedBody(format!("the body is not valid JSON: {error}")))?;
    serde_path_to_error::deserialize::<_, T>(value).map_err(|error| {
        let path = error.path().to_string();
        let message = strip_position(&error.into_inner().to_string());
        let (field, message) = field_of(&path, &message);
        ApiError::Core(Error::Validation(vec![FieldError::new(field, message)]))
    })
}

/// Rewrites a serde data error for the caller: without serde_json's " at
/// line L column C" (the field path says more), and without the offending
/// value, which may be a secret sent with the wrong type ("invalid type:
/// integer `12345`" becomes "invalid type: integer").
fn strip_position(message: &str) -> String {
    let message = match message.rfind(" at line ") {
        Some(index) => &message[..index],
        None => message,
    };
    // "unknown variant `hunter2`, expected one of `a`, `b`": the value goes.
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        return match rest.split_once(", expected ") {
            Some((_, expected)) => format!("is not an accepted value; expected {expected}"),
            None => "is not an accepted value".to_owned(),
        };
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            let (unexpected, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
            let kind = unexpected
                .split(['`', '"'])
                .next()
                .unwrap_or(unexpected)
                .trim();
            return if expected.is_empty() {
                format!("{prefix}{kind}")
            } else {
                format!("{prefix}{kind}, expected {expected}")
            };
        }
    }
    message.to_owned()
}

/// Names the field of a data error: its path, plus the field named in a
/// "missing field"/"unknown field" message.
fn field_of(path: &str, message: &str) -> (String, String) {
    let named = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.split('`').next());
    let base = if path == "." { "" } else { path };
    match named {
        Some(name) if !base.ends_with(name) => {
            let field = if base.is_empty() {
                name.to_owned()
            } else {
                format!("{base}.{name}")
            };
            let message = if message.starts_with("missing") {
                "is required".to_owned()
            } else {
                message
                    .split_once(", expected")
                    .map(|(_, expected)| format!("is not a known field; expected{expected}"))
                    .unwrap_or_else(|| "is not a known field".to_owned())
            };
            (field, message)
        }
        _ => (
            if base.is_empty() {
                "body".to_owned()
            } else {
                base.to_owned()
            },
            message.to_owned(),
        ),
    }
}

/// Each `…Id` segment of the path that is not a UUID.
pub(crate) fn bad_ids(request: &HttpRequest) -> Vec<FieldError> {
    request
        .match_info()
        .iter()
        .filter(|(name, value)| name.ends_with("Id") && Uuid::parse_str(value).is_err())
        .map(|(name, _)| FieldError::new(name, "is not a valid id (a UUID)"))
        .collect()
}

/// Errors of `web::Path`: names each `…Id` segment that is not a UUID.
pub fn path_error(error: actix_web::error::PathError, request: &HttpRequest) -> actix_web::Error {
    let errors = bad_ids(request);
    if errors.is_empty() {
        return ApiError::MalformedBody(format!("the URL could not be parsed: {error}")).into();
    }
    ApiError::BadPathId(errors).into()
}

/// Errors of `web::Query`: an unknown or malformed parameter.
pub fn query_error(error: QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    let QueryPayloadError::Deserialize(inner) = &error else {
        return ApiError::MalformedBody(error.to_string()).into();
    };
    let message = strip_position(&inner.to_string());
    let (field, message) = field_of("", &message);
    ApiError::Core(Error::Validation(vec![FieldError::new(field, message)])).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        inner: Inner,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        port: u16,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "lowercase")]
    #[allow(dead_code)]
    enum Kind {
        Generic,
        Postgres,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct WithKind {
        kind: Kind,
    }

    #[test]
    fn enum_values_are_not_echoed() {
        match parse_json::<WithKind>(br#"{"kind": "s3cr3t-value"}"#) {
            Err(ApiError::Core(Error::Validation(errors))) => {
                assert_eq!(errors[0].field, "kind");
                assert!(
                    !errors[0].message.contains("s3cr3t"),
                    "{}",
                    errors[0].message
                );
                assert!(
                    errors[0].message.contains("`postgres`"),
                    "{}",
                    errors[0].message
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn messages_do_not_echo_values() {
        match parse_json::<Outer>(br#"{"name": 12345678, "inner": {"port": 1}}"#) {
            Err(ApiError::Core(Error::Validation(errors))) => {
                assert_eq!(
                    errors[0].message,
                    "invalid type: integer, expected a string"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        match parse_json::<Outer>(br#"{"name": "x", "inner": {"port": "hunter2"}}"#) {
            Err(ApiError::Core(Error::Validation(errors))) => {
                assert!(
                    !errors[0].message.contains("hunter2"),
                    "{}",
                    errors[0].message
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    fn field(body: &str) -> String {
        match parse_json::<Outer>(body.as_bytes()) {
            Err(ApiError::Core(Error::Validation(errors))) => errors[0].field.clone(),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field(r#"{"inner": {"port": 1}}"#), "name");
        assert_eq!(
            field(r#"{"name": "x", "inner": {"port": "x"}}"#),
            "inner.port"
        );
        assert_eq!(field(r#"{"name": "x", "inner": {}}"#), "inner.port");
        assert_eq!(
            field(r#"{"name": "x", "inner": {"port": 1, "porr": 2}}"#),
            "inner.porr"
        );
        assert_eq!(field(r#"{"name": 5, "inner": {"port": 1}}"#), "name");
        assert!(matches!(
            parse_json::<Outer>(b"{not json"),
            Err(ApiError::MalformedBody(_))
        ));
        assert!(matches!(
            parse_json::<Outer>(br#"{"name": "x", "inner": {"port": 1}} trailing"#),
            Err(ApiError::MalformedBody(_))
        ));
    }
}
