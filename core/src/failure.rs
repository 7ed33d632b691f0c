//! Every failure code a backup or restore record can carry, in one table:
//! the code stored in `error_code` and shown as `errorCode`, what it means,
//! which records it appears on, and whether running the same work again
//! later can succeed without anyone changing anything.
//!
//! The worker, the reapers, the views and the notifications all use
//! [`FailureCode`]; the OpenAPI document publishes it as a string enum whose
//! description is this table, and a test checks README's table against it.
//! A code is never renamed or removed (operators alert on them); new ones
//! are added at the end of their group.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

/// The records a code appears on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Backups,
    Restores,
    Verifications,
    /// Restores and verifications: reading a backup back.
    ReadBack,
    /// Backups and restores.
    Both,
    /// Backups, restores and verifications.
    Any,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Backups => "backups",
            Scope::Restores => "restores",
            Scope::Verifications => "verifications",
            Scope::ReadBack => "restores, verifications",
            Scope::Both => "backups, restores",
            Scope::Any => "any",
        }
    }
}

macro_rules! failure_codes {
    ($($variant:ident = $code:literal, $scope:ident, retry: $retry:literal, $meaning:literal;)+) => {
        /// Why a backup or restore failed; see the table in the schema's
        /// description (and README's "Failure codes").
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum FailureCode {
            $($variant,)+
        }

        impl FailureCode {
            /// Every code, in table order.
            pub const ALL: &'static [FailureCode] = &[$(FailureCode::$variant,)+];

            /// The code as stored and shown (`upload_failed`).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(FailureCode::$variant => $code,)+
                }
            }

            /// What the code means, in one sentence.
            pub const fn meaning(self) -> &'static str {
                match self {
                    $(FailureCode::$variant => $meaning,)+
                }
            }

            /// The records the code appears on.
            pub const fn scope(self) -> Scope {
                match self {
                    $(FailureCode::$variant => Scope::$scope,)+
                }
            }

            /// Whether the same work, run again later, can succeed without
            /// anyone changing a setting, the data or the installation.
            pub const fn retry_can_help(self) -> bool {
                match self {
                    $(FailureCode::$variant => $retry,)+
                }
            }

            /// The code of this text, if it is one.
            pub fn parse(text: &str) -> Option<FailureCode> {
                match text {
                    $($code => Some(FailureCode::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

failure_codes! {
    // Reaching the target.
    UploadFailed = "upload_failed", Backups, retry: true,
        "writing the archive or a sidecar to the target failed";
    TargetUnreachable = "target_unreachable", Any, retry: true,
        "the target could not be reached, or its retries used up storage.retry_budget_seconds";
    TargetAccessDenied = "target_access_denied", Any, retry: false,
        "the target refused the credentials or the access";
    TargetBucketMissing = "target_bucket_missing", Any, retry: false,
        "the target's bucket does not exist";
    TargetHostKeyMismatch = "target_host_key_mismatch", Any, retry: false,
        "the SSH server's host key is not the pinned one";
    TargetAddressRefused = "target_address_refused", Any, retry: false,
        "the outbound address policy refused the target's address";
    InsufficientSpace = "insufficient_space", Backups, retry: false,
        "the local target has less free space than the volume's previous archive took; nothing was written";
    TargetMissing = "target_missing", Backups, retry: false,
        "the job's target was deleted before the backup ran";
    LocalBackupsDisabled = "local_backups_disabled", Backups, retry: false,
        "the target is local and allow_local_backups is false";
    SshKeyRequired = "ssh_key_required", Backups, retry: false,
        "an organization's SSH target has no private key of its own";
    // The worker and its limits.
    DeadlineExceeded = "deadline_exceeded", Any, retry: true,
        "the work ran past the job's maxDurationSeconds and was cancelled";
    LeaseLost = "lease_lost", Any, retry: true,
        "the worker lost its claim on the work and stopped";
    Interrupted = "interrupted", Any, retry: true,
        "the worker was stopped while the work ran";
    WorkerLost = "worker_lost", Any, retry: true,
        "the worker stopped renewing its claim (it died); its leftovers were removed";
    Internal = "internal", Any, retry: true,
        "an unexpected error inside Cairn (the database, a key); the message says which";
    // What is backed up.
    VolumeNotFound = "volume_not_found", Backups, retry: false,
        "neither of the volume's directories exists";
    VolumeConflict = "volume_conflict", Both, retry: false,
        "the volume's directory belongs to another volume, or none was recorded";
    VolumeUnreadable = "volume_unreadable", Backups, retry: false,
        "a file of the volume could not be read; the message names it";
    VolumeMisconfigured = "volume_misconfigured", Both, retry: false,
        "a database volume has no connection settings or password";
    VolumeRemoved = "volume_removed", Backups, retry: false,
        "the app no longer has the volume";
    InvalidExclude = "invalid_exclude", Backups, retry: false,
        "an exclude pattern of the volume is not a valid glob";
    AppDeleted = "app_deleted", Backups, retry: false,
        "the app was deleted before the backup ran";
    JobDeleted = "job_deleted", Backups, retry: false,
        "the job was deleted before the backup ran";
    OrganizationDeleted = "organization_deleted", Any, retry: false,
        "the organization was deleted before the work ran";
    // PostgreSQL.
    PostgresAddressRefused = "postgres_address_refused", Both, retry: false,
        "the outbound address policy refused the database host";
    PostgresConnectionFailed = "postgres_connection_failed", Both, retry: true,
        "the database server could not be resolved, reached or logged in to";
    PgDumpMissing = "pg_dump_missing", Backups, retry: false,
        "the worker cannot run pg_dump";
    PgDumpFailed = "pg_dump_failed", Backups, retry: true,
        "pg_dump failed; the message has its last words";
    PgDumpTooOld = "pg_dump_too_old", Backups, retry: false,
        "the worker's pg_dump is older than the server's major version";
    PgRestoreFailed = "pg_restore_failed", ReadBack, retry: true,
        "pg_restore failed; the database is left as it was";
    // Reading a backup back.
    DownloadFailed = "download_failed", ReadBack, retry: true,
        "reading the archive from the target failed";
    ArchiveMissing = "archive_missing", ReadBack, retry: false,
        "the archive is not on the target any more";
    ChecksumMismatch = "checksum_mismatch", ReadBack, retry: false,
        "the archive's SHA-256 is not the one recorded: it changed or was damaged in storage";
    DecryptionFailed = "decryption_failed", ReadBack, retry: false,
        "the archive could not be decrypted with the organization's key";
    ArchiveDamaged = "archive_damaged", ReadBack, retry: false,
        "the archive could not be read to its end";
    ArchiveRefused = "archive_refused", ReadBack, retry: false,
        "the archive holds an entry the extraction rules refuse";
    ArchiveTooLarge = "archive_too_large", ReadBack, retry: false,
        "the archive expands past what its manifest allows";
    BackupUnavailable = "backup_unavailable", ReadBack, retry: false,
        "the backup was deleted or pruned, or cannot be restored";
    // The restore's destination.
    DestinationMissing = "destination_missing", Restores, retry: false,
        "the destination app or volume no longer exists";
    DestinationMismatch = "destination_mismatch", Restores, retry: false,
        "the destination volume's kind is not the archive's";
    SafetyBackupFailed = "safety_backup_failed", Restores, retry: true,
        "the safety backup taken before the restore failed; nothing was restored";
    RestoreFailed = "restore_failed", ReadBack, retry: true,
        "writing the restored data failed (staging, swap, spooling, scratch space)";
    // Verifications.
    VerificationMismatch = "verification_mismatch", Verifications, retry: false,
        "the archive read back does not hold what its manifest says; the failed check says where";
    // Self-backups.
    SnapshotFailed = "snapshot_failed", Backups, retry: true,
        "the snapshot of Cairn's own database failed (SQLite online backup or pg_dump); nothing was stored";
    // MySQL and MariaDB.
    MysqlAddressRefused = "mysql_address_refused", Both, retry: false,
        "the outbound address policy refused the MySQL host";
    MysqlConnectionFailed = "mysql_connection_failed", Both, retry: true,
        "the MySQL server could not be resolved or reached";
    MysqlAccessDenied = "mysql_access_denied", Both, retry: false,
        "the MySQL server refused the volume's username and password (or the database)";
    MysqldumpMissing = "mysqldump_missing", Backups, retry: false,
        "the worker cannot run mariadb-dump (or mysqldump)";
    MysqldumpFailed = "mysqldump_failed", Backups, retry: true,
        "mariadb-dump failed; the message has its last words";
    MysqldumpTooOld = "mysqldump_too_old", Backups, retry: false,
        "the worker's mariadb-dump is older than the server";
    MysqlRestoreFailed = "mysql_restore_failed", ReadBack, retry: true,
        "the mariadb client failed loading the dump; MySQL cannot roll back a dump's DDL, so the database may be partly restored and its safety backup holds it as it was";
}

impl FailureCode {
    /// A stored code. A code this build does not know (written by a newer
    /// one during a rolling upgrade) reads as `internal`; the record's
    /// message still says what happened.
    pub fn from_stored(text: &str) -> FailureCode {
        FailureCode::parse(text).unwrap_or_else(|| {
            tracing::warn!(
                code = text,
                "a record carries a failure code this build does not know"
            );
            FailureCode::Internal
        })
    }

    /// The table as Markdown rows: `| code | on | retry | meaning |`.
    pub fn table() -> String {
        let mut text =
            String::from("| code | on | retrying can help | meaning |\n|---|---|---|---|\n");
        for code in FailureCode::ALL {
            text.push_str(&format!(
                "| `{}` | {} | {} | {} |\n",
                code.as_str(),
                code.scope().as_str(),
                if code.retry_can_help() { "yes" } else { "no" },
                code.meaning()
            ));
        }
        text
    }
}

impl fmt::Display for FailureCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for FailureCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for FailureCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        FailureCode::parse(&text)
            .ok_or_else(|| serde::de::Error::custom("not a failure code Cairn knows"))
    }
}

impl PartialSchema for FailureCode {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::new(Type::String))
            .enum_values(Some(FailureCode::ALL.iter().map(|code| code.as_str())))
            .description(Some(format!(
                "Why a backup or restore failed.\n\n{}",
                FailureCode::table()
            )))
            .into()
    }
}

impl ToSchema for FailureCode {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_parse_back() {
        let mut seen = std::collections::HashSet::new();
        for code in FailureCode::ALL {
            assert!(seen.insert(code.as_str()), "{code} twice");
            assert_eq!(FailureCode::parse(code.as_str()), Some(*code));
            assert!(code
                .as_str()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_'));
            assert!(!code.meaning().is_empty());
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(json, format!("\"{code}\""));
            assert_eq!(serde_json::from_str::<FailureCode>(&json).unwrap(), *code);
        }
        assert_eq!(FailureCode::parse("no_such_code"), None);
        assert_eq!(
            FailureCode::from_stored("no_such_code"),
            FailureCode::Internal
        );
    }

    #[test]
    fn readme_lists_exactly_the_table() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
            .expect("README.md beside the workspace");
        let table = FailureCode::table();
        assert!(
            readme.contains("## Failure codes\n") && readme.contains(&table),
            "README's \"Failure codes\" section must hold exactly this table:\n\n{table}"
        );
        // And no other row that looks like a code.
        let listed = readme
            .split("## Failure codes\n")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .unwrap_or_default()
            .lines()
            .filter(|line| line.starts_with("| `"))
            .count();
        assert_eq!(listed, FailureCode::ALL.len());
    }
}
