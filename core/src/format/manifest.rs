//! The manifest stored beside every archive (`….manifest.json`) and on its
//! record: one typed, versioned struct for the writer (the worker) and every
//! reader (history, preview, restores, the offline tools).
//!
//! Readers check the format version on the raw JSON first, so an archive
//! of a newer format is refused with "upgrade Cairn" rather than a parse
//! error. Fields a newer Cairn adds are ignored by the typed read; the
//! record and the sidecar keep the JSON as it was written, so the API and
//! `cairn archive inspect` still show them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::jobs::CompressionSetting;
use cairn_entity::enums::Slot;

/// The version of the archive layout (archive + `.sha256` +
/// `.manifest.json`) that this Cairn writes and reads; a restore refuses
/// archives of a newer format.
pub const ARCHIVE_FORMAT_VERSION: u32 = 1;

/// Room above the manifest's tar size that extraction allows (the tar
/// reader reads whole 512-byte blocks).
const CAP_SLACK: u64 = 64 * 1024;

/// What Cairn stored, where from, and how: written once, after the archive
/// and its checksum are complete.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// The Cairn that wrote the archive.
    pub cairn_version: String,
    pub format_version: u32,
    pub backup_id: Uuid,
    /// The organization's slug.
    pub organization: String,
    pub app: String,
    pub volume: String,
    /// The archive's file name (the last part of its storage path).
    pub archive: String,
    /// `None`: stored in the clear.
    pub encryption: Option<ManifestEncryption>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// Bytes of the stored object (compressed, encrypted).
    pub stored_bytes: u64,
    /// SHA-256 (hex) of the stored object.
    pub sha256: String,
    /// What the archive holds, by kind (`"kind": "tar" | "pg_dump" |
    /// "mysql_dump"`).
    #[serde(flatten)]
    pub contents: ManifestContents,
}

/// How an archive is encrypted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEncryption {
    /// Always `age`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The recipients' names (the organization's key, extra public keys).
    pub recipients: Vec<String>,
}

/// The kind-specific part of a manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum ManifestContents {
    /// A tar archive of a file volume.
    #[serde(rename = "tar")]
    Tar(TarManifest),
    /// A `pg_dump --format=custom` of a PostgreSQL volume.
    #[serde(rename = "pg_dump")]
    PgDump(DumpManifest),
    /// A `mariadb-dump` (SQL) of a MySQL or MariaDB volume.
    #[serde(rename = "mysql_dump")]
    MysqlDump(MysqlManifest),
}

/// What a tar archive holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TarManifest {
    /// The blue/green slot whose directory was archived.
    pub slot: Slot,
    /// The directory archived.
    pub source: String,
    pub compression: CompressionSetting,
    /// Bytes of the tar stream before compression (the extraction cap).
    pub uncompressed_bytes: u64,
    /// Bytes of file content.
    pub content_bytes: u64,
    pub file_count: u64,
    pub directory_count: u64,
    pub symlink_count: u64,
    pub hard_link_count: u64,
    /// The job's and the volume's exclude patterns.
    pub exclude_patterns: Vec<String>,
    /// Paths left out by those patterns (the first 10 000 at most).
    pub excluded: Vec<String>,
    /// More paths were left out than `excluded` lists.
    pub excluded_truncated: bool,
    /// The SQLite databases archived from snapshots (`sqlite` volumes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sqlite: Vec<crate::format::sqlite::SqliteDatabase>,
}

/// What a PostgreSQL dump holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DumpManifest {
    /// The database dumped (never its password).
    pub source: DumpSource,
    /// Always `pg_dump`: the custom format compresses itself.
    pub compression: String,
    /// Bytes pg_dump wrote.
    pub uncompressed_bytes: u64,
    /// The server's version as it reports it.
    pub postgres_version: String,
    /// `pg_dump --version` of the worker that dumped it.
    pub pg_dump_version: String,
    /// Every table the dump holds rows of, with its rows counted in the
    /// dump's own snapshot. Absent from dumps of older Cairns, of
    /// databases with more than 10 000 tables, and when the count failed
    /// (the backup's log says why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<Vec<crate::format::pg_tables::TableRows>>,
}

/// What a MySQL dump holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MysqlManifest {
    /// The database dumped (never its password).
    pub source: DumpSource,
    /// The job's compression of the SQL text.
    pub compression: CompressionSetting,
    /// Bytes of SQL the client wrote.
    pub uncompressed_bytes: u64,
    /// The server's `VERSION()`.
    pub server_version: String,
    /// `--version` of the dump client that wrote it.
    pub client_version: String,
    /// Every table the dump creates, with the rows its INSERTs hold
    /// (counted from the dump as it was written: one consistent snapshot).
    pub tables: Vec<crate::format::pg_tables::TableRows>,
}

/// Where a dump came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpSource {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub username: String,
}

/// Why a manifest cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{0}")]
    NewerFormat(String),
    #[error("the manifest is not one Cairn wrote: {0}")]
    Unreadable(String),
}

impl Manifest {
    /// Reads a manifest (a record's column, or a sidecar parsed as JSON),
    /// refusing a newer format before looking at its fields.
    pub fn from_value(value: &serde_json::Value) -> Result<Manifest, ManifestError> {
        if let Some(refusal) = ManifestHeader::of(value).refusal() {
            return Err(ManifestError::NewerFormat(refusal));
        }
        Manifest::deserialize(value).map_err(|e| ManifestError::Unreadable(e.to_string()))
    }

    /// Reads a `….manifest.json` sidecar.
    pub fn from_slice(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Unreadable(e.to_string()))?;
        Manifest::from_value(&value)
    }

    /// The JSON stored on the record and in the sidecar.
    pub fn to_value(&self) -> serde_json::Value {
        // Serializing plain structs, strings and numbers into a `Value`
        // cannot fail (no map has non-string keys).
        serde_json::to_value(self).expect("a manifest serializes to JSON")
    }

    /// Files archived (tar archives only).
    pub fn file_count(&self) -> Option<u64> {
        match &self.contents {
            ManifestContents::Tar(tar) => Some(tar.file_count),
            ManifestContents::PgDump(_) | ManifestContents::MysqlDump(_) => None,
        }
    }

    /// Bytes of content: file content of a tar archive, the dump's size.
    pub fn content_bytes(&self) -> u64 {
        match &self.contents {
            ManifestContents::Tar(tar) => tar.content_bytes,
            ManifestContents::PgDump(dump) => dump.uncompressed_bytes,
            ManifestContents::MysqlDump(dump) => dump.uncompressed_bytes,
        }
    }

    /// Bytes the archive may expand to when read back: its uncompressed
    /// size plus a little room; more is a decompression bomb.
    pub fn expansion_cap(&self) -> u64 {
        let uncompressed = match &self.contents {
            ManifestContents::Tar(tar) => tar.uncompressed_bytes,
            ManifestContents::PgDump(dump) => dump.uncompressed_bytes,
            ManifestContents::MysqlDump(dump) => dump.uncompressed_bytes,
        };
        uncompressed + CAP_SLACK
    }
}

/// The fields that every manifest of every format version has: what a
/// reader can say of an archive it may not be able to read.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestHeader {
    /// 1 when the manifest states none.
    #[serde(default = "first_format")]
    pub format_version: u64,
    pub cairn_version: Option<String>,
}

fn first_format() -> u64 {
    1
}

impl Default for ManifestHeader {
    fn default() -> ManifestHeader {
        ManifestHeader {
            format_version: first_format(),
            cairn_version: None,
        }
    }
}

impl ManifestHeader {
    /// The header of a stored manifest; a manifest without one reads as
    /// format 1 of an unknown Cairn.
    pub fn of(manifest: &serde_json::Value) -> ManifestHeader {
        ManifestHeader::deserialize(manifest).unwrap_or_default()
    }

    /// Why this Cairn cannot read the archive, if it cannot.
    pub fn refusal(&self) -> Option<String> {
        format_refusal(self.format_version)
    }
}

/// Why this Cairn cannot read an archive of `format_version`, if it cannot.
fn format_refusal(format_version: u64) -> Option<String> {
    (format_version > u64::from(ARCHIVE_FORMAT_VERSION)).then(|| {
        format!(
            "the archive was written by a newer Cairn (archive format {format_version}; this Cairn reads up to {ARCHIVE_FORMAT_VERSION}): upgrade Cairn to restore it"
        )
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A tar manifest as the worker writes it.
    pub(crate) fn tar_manifest() -> Manifest {
        Manifest {
            cairn_version: "1.2.3".into(),
            format_version: ARCHIVE_FORMAT_VERSION,
            backup_id: Uuid::nil(),
            organization: "acme".into(),
            app: "shop".into(),
            volume: "data".into(),
            archive: "2024-01-15T02-00-00-000Z.tar.zst".into(),
            encryption: None,
            started_at: DateTime::UNIX_EPOCH,
            finished_at: DateTime::UNIX_EPOCH,
            stored_bytes: 10,
            sha256: "a".repeat(64),
            contents: ManifestContents::Tar(TarManifest {
                slot: Slot::Blue,
                source: "/var/lib/docker/volumes/shop-blue_data/_data".into(),
                compression: CompressionSetting::Zstd,
                uncompressed_bytes: 4096,
                content_bytes: 100,
                file_count: 3,
                directory_count: 1,
                symlink_count: 0,
                hard_link_count: 0,
                exclude_patterns: vec!["cache".into()],
                excluded: vec!["cache".into()],
                excluded_truncated: false,
                sqlite: Vec::new(),
            }),
        }
    }

    #[test]
    fn a_manifest_keeps_the_layout_of_format_1() {
        let value = tar_manifest().to_value();
        assert_eq!(value["kind"], "tar");
        assert_eq!(value["formatVersion"], 1);
        assert_eq!(value["fileCount"], 3);
        assert_eq!(value["uncompressedBytes"], 4096);
        assert_eq!(value["slot"], "blue");
        assert_eq!(value["compression"], "zstd");
        assert_eq!(value["encryption"], serde_json::Value::Null);
        assert_eq!(Manifest::from_value(&value).unwrap(), tar_manifest());

        let dump = Manifest {
            contents: ManifestContents::PgDump(DumpManifest {
                source: DumpSource {
                    host: "db".into(),
                    port: 5432,
                    database: "shop".into(),
                    username: "app".into(),
                },
                compression: "pg_dump".into(),
                uncompressed_bytes: 77,
                postgres_version: "15.18".into(),
                pg_dump_version: "pg_dump (PostgreSQL) 15.18".into(),
                tables: None,
            }),
            ..tar_manifest()
        };
        let value = dump.to_value();
        assert_eq!(value["kind"], "pg_dump");
        assert_eq!(value["source"]["database"], "shop");
        assert_eq!(Manifest::from_value(&value).unwrap(), dump);
        assert_eq!(dump.content_bytes(), 77);
        assert_eq!(dump.file_count(), None);
    }

    #[test]
    fn fields_of_a_newer_cairn_are_ignored_and_newer_formats_refused() {
        let mut value = tar_manifest().to_value();
        value["chunkSize"] = json!(4_194_304);
        assert_eq!(Manifest::from_value(&value).unwrap(), tar_manifest());
        value["formatVersion"] = json!(2);
        let refused = Manifest::from_value(&value).unwrap_err();
        assert!(matches!(refused, ManifestError::NewerFormat(_)));
        assert!(refused.to_string().contains("upgrade Cairn"));
        let unreadable = Manifest::from_value(&json!({ "kind": "tar" })).unwrap_err();
        assert!(matches!(unreadable, ManifestError::Unreadable(_)));
    }

    #[test]
    fn the_expansion_cap_is_the_tar_size_with_room_for_whole_blocks() {
        assert_eq!(tar_manifest().expansion_cap(), 4096 + CAP_SLACK);
    }
}
