//! Why a backup or restore failed, as the worker records it: a
//! [`FailureCode`] from the one table and a message without secrets; and
//! the codes of storage errors.

use cairn_core::failure::FailureCode;
use cairn_core::format::tar::ArchiveError;
use cairn_core::storage::StorageError;

/// Why a backup failed: a stable code and a message without secrets.
#[derive(Debug)]
pub(crate) struct Failure {
    pub code: FailureCode,
    pub message: String,
}

impl Failure {
    pub(crate) fn new(code: FailureCode, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl From<ArchiveError> for Failure {
    fn from(error: ArchiveError) -> Failure {
        Failure::new(error.code, error.message)
    }
}

pub(crate) fn internal(error: impl std::fmt::Display) -> Failure {
    Failure::new(FailureCode::Internal, format!("{error:#}"))
}

/// The failure of an upload that failed with a storage error.
pub(crate) fn storage_failure(step: &str, error: &StorageError) -> Failure {
    target_failure(step, error, FailureCode::UploadFailed)
}

/// The failure of a download that failed with a storage error.
pub(crate) fn download_failure(step: &str, error: &StorageError) -> Failure {
    match error {
        StorageError::NotFound(_) => {
            Failure::new(FailureCode::ArchiveMissing, format!("{step}: {error}"))
        }
        _ => target_failure(step, error, FailureCode::DownloadFailed),
    }
}

/// The failure code of a storage error; `fallback` for errors that are not
/// the target's access or reachability.
fn target_failure(step: &str, error: &StorageError, fallback: FailureCode) -> Failure {
    let code = match error {
        StorageError::Unreachable(_) => FailureCode::TargetUnreachable,
        StorageError::AuthenticationFailed(_) | StorageError::AccessDenied(_) => {
            FailureCode::TargetAccessDenied
        }
        StorageError::BucketMissing(_) => FailureCode::TargetBucketMissing,
        StorageError::HostKeyMismatch { .. } => FailureCode::TargetHostKeyMismatch,
        StorageError::AddressRefused(_) => FailureCode::TargetAddressRefused,
        _ => fallback,
    };
    Failure::new(code, format!("{step}: {error}"))
}
