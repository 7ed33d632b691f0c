//! The error type of `cairn-core`, split by what a caller does with it.

use serde::Serialize;
use utoipa::ToSchema;

/// One invalid field of a request: the JSON path of the field and why it
/// was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// The field, as a JSON path (`config.bucket`, `appIds[1]`).
    pub field: String,
    /// Why the value was refused.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// What went wrong in a core operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is invalid; each field says why. Nothing was written.
    #[error("the request is invalid")]
    Validation(Vec<FieldError>),
    /// The resource does not exist, or belongs to an organization the caller
    /// cannot see (both answer the same, so ids of other tenants leak nothing).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The resource does not exist yet; the message says what creates it.
    #[error("{0}")]
    Absent(String),
    /// The caller is known but its role does not allow the operation.
    #[error("this token's role does not allow {0}")]
    Forbidden(String),
    /// The request conflicts with the current state (a duplicate name, a
    /// target still in use). Nothing was written.
    #[error("{message}")]
    Conflict {
        field: Option<String>,
        message: String,
    },
    /// The server is at a limit for this kind of request; retry later.
    #[error("{0}")]
    Busy(String),
    /// A storage target failed to serve the request (unreachable, refused,
    /// missing archive). The message names the step, never credentials.
    #[error("{0}")]
    Upstream(String),
    /// Anything else: a bug or an unavailable database. Logged at the edge;
    /// callers see only that it happened.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<sea_orm::DbErr> for Error {
    fn from(error: sea_orm::DbErr) -> Error {
        Error::Unexpected(anyhow::Error::new(error))
    }
}

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Validation(vec![FieldError::new(field, message)])
    }

    pub fn conflict(field: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Conflict {
            field: Some(field.into()),
            message: message.into(),
        }
    }
}

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Collects every field error of a request before answering, so that a
/// caller fixes all of them in one round trip.
#[derive(Debug, Default)]
pub struct Validator {
    errors: Vec<FieldError>,
}

impl Validator {
    pub fn new() -> Validator {
        Validator::default()
    }

    /// Records `message` for `field` unless `ok`.
    pub fn check(&mut self, ok: bool, field: impl Into<String>, message: impl Into<String>) {
        if !ok {
            self.errors.push(FieldError::new(field, message));
        }
    }

    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    /// Records the error of a field-level check.
    pub fn check_result(&mut self, field: impl Into<String>, result: Result<(), String>) {
        if let Err(message) = result {
            self.errors.push(FieldError::new(field, message));
        }
    }

    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }

    /// `Ok` when no error was recorded, else [`Error::Validation`].
    pub fn finish(self) -> Result<()> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(Error::Validation(self.errors))
        }
    }
}

/// Whether a database error is a unique-constraint violation.
pub fn is_unique_violation(error: &sea_orm::DbErr) -> bool {
    matches!(
        error.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    )
}
