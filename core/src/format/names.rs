//! What an archive's name says it is, and the names of its sidecars.
//!
//! An archive is stored as `{orgSlug}/{app}/{volume}/{timestamp}.{ext}`
//! with two sidecars beside it: `….sha256` (as `sha256sum` writes it) and
//! `….manifest.json` (the [`super::manifest::Manifest`]).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

/// How an archive is compressed, from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    TarZstd,
    TarGzip,
    Tar,
    /// `pg_dump --format=custom`.
    Dump,
    /// A MySQL dump (SQL), zstd-compressed.
    SqlZstd,
    SqlGzip,
    Sql,
}

impl Format {
    /// A MySQL dump (SQL), however compressed.
    pub fn is_sql(self) -> bool {
        matches!(self, Format::SqlZstd | Format::SqlGzip | Format::Sql)
    }
}

/// What an archive's name says about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArchiveName {
    pub format: Format,
    /// `+.age`: encrypted with age.
    pub encrypted: bool,
}

impl ArchiveName {
    /// Reads `….tar.zst`, `….tar.gz`, `….tar`, `….dump`, `….sql.zst`,
    /// `….sql.gz`, `….sql`, each optionally
    /// followed by `.age`.
    pub fn parse(file_name: &str) -> Option<ArchiveName> {
        let (base, encrypted) = match file_name.strip_suffix(".age") {
            Some(base) => (base, true),
            None => (file_name, false),
        };
        let format = if base.ends_with(".tar.zst") {
            Format::TarZstd
        } else if base.ends_with(".tar.gz") {
            Format::TarGzip
        } else if base.ends_with(".tar") {
            Format::Tar
        } else if base.ends_with(".dump") {
            Format::Dump
        } else if base.ends_with(".sql.zst") {
            Format::SqlZstd
        } else if base.ends_with(".sql.gz") {
            Format::SqlGzip
        } else if base.ends_with(".sql") {
            Format::Sql
        } else {
            return None;
        };
        Some(ArchiveName { format, encrypted })
    }
}

/// The time an archive was taken, as its name starts:
/// `2024-01-15T02-00-00-000Z` (dashes for colons, which some targets and
/// tools refuse).
pub fn timestamp_name(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H-%M-%S-%3fZ").to_string()
}

/// An archive's file name: its time, its format's extension (`tar.zst`,
/// `dump`, …) and `.age` when encrypted.
pub fn archive_file_name(taken_at: DateTime<Utc>, extension: &str, encrypted: bool) -> String {
    format!(
        "{}.{extension}{}",
        timestamp_name(taken_at),
        if encrypted { ".age" } else { "" }
    )
}

/// Where an archive is stored on its target:
/// `{orgSlug}/{app}/{volume}/{file_name}`.
pub fn storage_path(organization: &str, app: &str, volume: &str, file_name: &str) -> String {
    format!("{organization}/{app}/{volume}/{file_name}")
}

/// A file stored beside an archive, named after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sidecar {
    /// `….sha256`: the archive's SHA-256 as `sha256sum` writes it.
    Sha256,
    /// `….manifest.json`: the [`super::manifest::Manifest`].
    Manifest,
}

impl Sidecar {
    /// Every sidecar, in the order they are written (after the archive).
    pub const ALL: [Sidecar; 2] = [Sidecar::Sha256, Sidecar::Manifest];

    pub fn suffix(self) -> &'static str {
        match self {
            Sidecar::Sha256 => ".sha256",
            Sidecar::Manifest => ".manifest.json",
        }
    }

    /// This sidecar's storage key (or file name) for the archive `archive`.
    pub fn of(self, archive: &str) -> String {
        format!("{archive}{}", self.suffix())
    }

    /// This sidecar's path beside the archive file `archive`.
    pub fn beside(self, archive: &Path) -> PathBuf {
        let mut name = archive.as_os_str().to_owned();
        name.push(self.suffix());
        PathBuf::from(name)
    }
}

/// The `.sha256` sidecar's text for the archive `file_name`.
pub fn sha256_line(sha256: &str, file_name: &str) -> String {
    format!("{sha256}  {file_name}\n")
}

/// The hash a `sha256sum`-format sidecar gives for `file_name`.
pub fn expected_sha256(sidecar_text: &str, file_name: &str) -> Option<String> {
    sidecar_text.lines().find_map(|line| {
        let (hash, name) = line.split_once(char::is_whitespace)?;
        let name = name.trim_start().trim_start_matches('*');
        (name == file_name && hash.len() == 64 && hash.chars().all(|c| c.is_ascii_hexdigit()))
            .then(|| hash.to_ascii_lowercase())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_say_what_an_archive_is() {
        let name = |n: &str| ArchiveName::parse(n);
        assert_eq!(
            name("2024-01-15T02-00-00-000Z.tar.zst"),
            Some(ArchiveName {
                format: Format::TarZstd,
                encrypted: false
            })
        );
        assert_eq!(
            name("x.tar.gz.age"),
            Some(ArchiveName {
                format: Format::TarGzip,
                encrypted: true
            })
        );
        assert_eq!(name("x.dump").unwrap().format, Format::Dump);
        assert_eq!(name("x.sql.zst.age").unwrap().format, Format::SqlZstd);
        assert!(name("x.sql.zst.age").unwrap().encrypted);
        assert_eq!(name("x.sql.gz").unwrap().format, Format::SqlGzip);
        assert_eq!(name("x.sql").unwrap().format, Format::Sql);
        assert_eq!(name("x.tar").unwrap().format, Format::Tar);
        assert_eq!(name("x.zip"), None);
        assert_eq!(name("x.age"), None);
    }

    #[test]
    fn archive_names_use_dashes() {
        use chrono::TimeZone;
        let time = Utc.with_ymd_and_hms(2024, 1, 15, 2, 0, 0).unwrap();
        assert_eq!(timestamp_name(time), "2024-01-15T02-00-00-000Z");
        let file = archive_file_name(time, "tar.zst", true);
        assert_eq!(file, "2024-01-15T02-00-00-000Z.tar.zst.age");
        assert_eq!(
            ArchiveName::parse(&file),
            Some(ArchiveName {
                format: Format::TarZstd,
                encrypted: true
            })
        );
        assert_eq!(
            storage_path("acme", "shop", "data", &file),
            "acme/shop/data/2024-01-15T02-00-00-000Z.tar.zst.age"
        );
        assert_eq!(
            Sidecar::Manifest.of("acme/shop/data/x.dump"),
            "acme/shop/data/x.dump.manifest.json"
        );
    }

    #[test]
    fn sidecars_are_read_as_sha256sum_writes_them() {
        let hash = "a".repeat(64);
        assert_eq!(
            expected_sha256(&sha256_line(&hash, "x.dump"), "x.dump"),
            Some(hash.clone())
        );
        let text = format!("{hash}  backup.tar.zst\n");
        assert_eq!(expected_sha256(&text, "backup.tar.zst"), Some(hash.clone()));
        assert_eq!(
            expected_sha256(&format!("{hash} *backup.tar.zst\n"), "backup.tar.zst"),
            Some(hash)
        );
        assert_eq!(expected_sha256(&text, "other.tar.zst"), None);
        assert_eq!(
            expected_sha256("xyz  backup.tar.zst\n", "backup.tar.zst"),
            None
        );
    }
}
