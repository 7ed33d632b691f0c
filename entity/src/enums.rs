//! The vocabularies of the string columns: each column that holds one of a
//! fixed set of words (`status`, `trigger`, `kind`, `slot`) is typed by one
//! enum here, so no code compares it as a string. Each word is spelled once,
//! in [`column_enum!`], and serves the database (`string_value`), JSON
//! (`serde`), the OpenAPI document (`utoipa`) and logs (`as_str`).
//!
//! The columns stay `TEXT`: a word added here needs no migration, and a
//! word this build does not know fails the read of its row loudly.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Declares a column enum: its variants and the word each is stored as.
macro_rules! column_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$variant_meta:meta])* $variant:ident = $word:literal,)+ }) => {
        $(#[$meta])*
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize,
            Deserialize, ToSchema,
        )]
        #[sea_orm(rs_type = "String", db_type = "Text")]
        // Every word is its variant's name in snake_case (a test checks it):
        // utoipa reads `rename_all`, not a rename written by a macro.
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $(
                $(#[$variant_meta])*
                #[sea_orm(string_value = $word)]
                $variant,
            )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The word stored and shown.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word,)+
                }
            }

            /// The value a word names, if any.
            pub fn parse(word: &str) -> Option<$name> {
                match word {
                    $($word => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

column_enum! {
    /// The state of one backup.
    BackupStatus {
        Pending = "pending",
        Running = "running",
        Success = "success",
        Failed = "failed",
        Pruned = "pruned",
        /// An admin deleted its archive (`DELETE …/history/{backupId}`); the
        /// record stays.
        Deleted = "deleted",
        /// Recorded as stored, but an orphan sweep found its archive gone;
        /// `success` again if a later sweep finds it back.
        Missing = "missing",
    }
}

column_enum! {
    /// The state of a run.
    RunStatus {
        /// Some of its backups are pending or running.
        Running = "running",
        /// Every backup succeeded.
        Success = "success",
        /// Some backups failed, some succeeded.
        Partial = "partial",
        /// Every backup failed.
        Failed = "failed",
        /// Nothing was backed up; `reason` says why.
        Skipped = "skipped",
        /// Slots passed while no scheduler ran; one record stands for all of
        /// them (`missedCount`, `missedFrom`, `missedTo`).
        Missed = "missed",
    }
}

column_enum! {
    /// What made a run (and its backups).
    Trigger {
        Manual = "manual",
        Schedule = "schedule",
        /// Taken by a restore, of the destination, before it is replaced.
        Safety = "safety",
        /// Recorded by a catalog import from an archive found on a target.
        Imported = "imported",
    }
}

column_enum! {
    /// The state of a restore.
    RestoreStatus {
        Pending = "pending",
        Running = "running",
        Success = "success",
        Failed = "failed",
    }
}

column_enum! {
    /// The state of a verification.
    VerificationStatus {
        Pending = "pending",
        Running = "running",
        /// Every check passed.
        Success = "success",
        /// A check failed, or the archive could not be read; `errorCode`
        /// says why.
        Failed = "failed",
    }
}

column_enum! {
    /// The state of a backup's copy on a copy target.
    CopyStatus {
        /// Waiting for its (next) attempt.
        Pending = "pending",
        Running = "running",
        /// Complete and checked on the copy target.
        Success = "success",
        /// Every attempt failed (`copies.max_attempts`), or its backup
        /// failed.
        Failed = "failed",
        /// Deleted with its backup by retention.
        Pruned = "pruned",
    }
}

column_enum! {
    /// Where a self-backup stands.
    SystemBackupStatus {
        Pending = "pending",
        Running = "running",
        Success = "success",
        Failed = "failed",
        Pruned = "pruned",
    }
}

column_enum! {
    /// The engine of Cairn's own database.
    DatabaseEngine {
        Sqlite = "sqlite",
        Postgresql = "postgresql",
    }
}

column_enum! {
    /// How a backup is verified.
    VerifyMode {
        /// Download, checksum, decryption, decompression, and every tar
        /// entry checked by the extraction rules (or `pg_restore --list`);
        /// nothing is written.
        Read = "read",
        /// A real restore into scratch space, compared with the manifest,
        /// then removed.
        Restore = "restore",
    }
}

column_enum! {
    /// The state of a notification delivery.
    DeliveryStatus {
        /// Not sent yet, or waiting for its next attempt (`nextAttemptAt`).
        Pending = "pending",
        Sent = "sent",
        /// Every attempt failed, or the receiver refused it for good;
        /// `lastError` says why.
        Failed = "failed",
    }
}

column_enum! {
    /// How a volume is backed up.
    #[derive(Default)]
    VolumeKind {
        /// Files, archived with `tar`.
        #[default]
        Generic = "generic",
        /// A PostgreSQL database, dumped with `pg_dump`.
        Postgres = "postgres",
        /// A file volume holding SQLite databases (`databases`), each
        /// taken through SQLite's online backup API.
        Sqlite = "sqlite",
        /// A MySQL or MariaDB database, dumped with `mariadb-dump`.
        Mysql = "mysql",
    }
}

column_enum! {
    /// What an archive holds, by how it was made.
    ArchiveKind {
        /// A tar archive of a file volume.
        Tar = "tar",
        /// A `pg_dump --format=custom` of a PostgreSQL volume.
        PgDump = "pg_dump",
        /// A `mariadb-dump` (SQL) of a MySQL or MariaDB volume.
        MysqlDump = "mysql_dump",
    }
}

column_enum! {
    /// The blue/green slot a deploy went to.
    Slot {
        Blue = "blue",
        Green = "green",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_reads_back_as_its_value() {
        fn check<T: Copy + PartialEq + std::fmt::Debug + Serialize>(
            all: &[T],
            word: fn(T) -> &'static str,
            parse: fn(&str) -> Option<T>,
        ) {
            for &value in all {
                assert_eq!(parse(word(value)), Some(value));
                assert_eq!(
                    serde_json::to_value(value).unwrap(),
                    serde_json::Value::String(word(value).into())
                );
            }
            assert_eq!(parse("unknown"), None);
        }
        check(BackupStatus::ALL, BackupStatus::as_str, BackupStatus::parse);
        check(RunStatus::ALL, RunStatus::as_str, RunStatus::parse);
        check(Trigger::ALL, Trigger::as_str, Trigger::parse);
        check(
            RestoreStatus::ALL,
            RestoreStatus::as_str,
            RestoreStatus::parse,
        );
        check(
            DeliveryStatus::ALL,
            DeliveryStatus::as_str,
            DeliveryStatus::parse,
        );
        check(VolumeKind::ALL, VolumeKind::as_str, VolumeKind::parse);
        check(Slot::ALL, Slot::as_str, Slot::parse);
        check(ArchiveKind::ALL, ArchiveKind::as_str, ArchiveKind::parse);
        check(
            VerificationStatus::ALL,
            VerificationStatus::as_str,
            VerificationStatus::parse,
        );
        check(VerifyMode::ALL, VerifyMode::as_str, VerifyMode::parse);
        check(CopyStatus::ALL, CopyStatus::as_str, CopyStatus::parse);
        check(
            SystemBackupStatus::ALL,
            SystemBackupStatus::as_str,
            SystemBackupStatus::parse,
        );
        check(
            DatabaseEngine::ALL,
            DatabaseEngine::as_str,
            DatabaseEngine::parse,
        );
        assert_eq!(BackupStatus::Success.to_value(), "success");
    }
}
