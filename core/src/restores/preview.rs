//! What a backup holds, before anyone restores it: the manifest, the
//! versions that wrote it, whether this Cairn can restore it, and its first
//! entries (a tar archive) or its table of contents (a dump).
//!
//! Only the beginning of an archive is read: the first
//! [`MAX_PREVIEW_ENTRIES`] tar entries, or the dump's table of contents
//! (which `pg_restore --list` reads from the head of a custom-format dump).
//! Totals come from the manifest, which the archiver counted while writing.

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use cairn_entity::backup;
use cairn_entity::enums::ArchiveKind;

use crate::error::{Error, Result};
use crate::format::manifest::{Manifest, ManifestContents, ManifestHeader};
use crate::format::names::Format;
use crate::format::pg_restore::{pg_restore_with_output, PgRestore};
use crate::format::read;
use crate::restores::{blocking_reader, kinds_of};
use crate::storage::Cancellation;
use crate::Cairn;

/// Tar entries (or table-of-contents lines) a preview lists at most.
pub const MAX_PREVIEW_ENTRIES: usize = 1000;

/// `GET …/history/{backupId}/preview`
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreviewView {
    pub backup_id: Uuid,
    pub app_name: String,
    pub volume_name: String,
    /// `tar` (files) or `pg_dump` (PostgreSQL).
    pub kind: ArchiveKind,
    /// Bytes stored.
    pub size: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The Cairn version that wrote the archive.
    pub cairn_version: Option<String>,
    /// The archive layout version that wrote it.
    pub format_version: u64,
    /// Encrypted with age (decrypted here with the organization's key).
    pub encrypted: bool,
    /// Whether this Cairn can restore it; `reason` says why not.
    pub restorable: bool,
    pub reason: Option<String>,
    /// The manifest stored beside the archive.
    #[schema(value_type = Option<Object>)]
    pub manifest: Option<serde_json::Value>,
    /// What the archive holds; `null` when it cannot be read.
    pub contents: Option<Contents>,
}

/// What an archive holds.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Contents {
    Tar(TarContents),
    PgDump(DumpContents),
    MysqlDump(MysqlContents),
}

/// What a MySQL dump holds: every table it creates, with the rows its
/// INSERTs hold (the dump read through).
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MysqlContents {
    pub tables: Vec<crate::format::pg_tables::TableRows>,
    /// Bytes of SQL.
    pub bytes: u64,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TarContents {
    /// The first entries, in archive order.
    pub entries: Vec<EntryView>,
    /// More entries follow those listed.
    pub truncated: bool,
    pub totals: Totals,
}

/// Counts of the whole archive (from the manifest).
#[derive(Clone, Debug, Default, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    pub hard_links: u64,
    /// Bytes of file content.
    pub bytes: u64,
}

/// One tar entry.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EntryView {
    pub path: String,
    /// `file`, `directory`, `symlink`, `hardlink` or `other`.
    #[serde(rename = "type")]
    pub entry_type: String,
    pub size: u64,
    /// Permission bits, octal (`0644`).
    pub mode: String,
    pub modified_at: Option<DateTime<Utc>>,
    /// Where a symlink or hard link points.
    pub link_target: Option<String>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DumpContents {
    /// Tables (`schema.name`) the dump creates.
    pub tables: Vec<String>,
    /// The table of contents as `pg_restore --list` prints it.
    pub entries: Vec<String>,
    pub truncated: bool,
}

/// Previews a successful backup.
pub async fn preview(
    cairn: &Cairn,
    organization_id: Uuid,
    id: Uuid,
    target_id: Option<Uuid>,
) -> Result<PreviewView> {
    let model = backup::Entity::find_by_id(id)
        .filter(backup::Column::OrganizationId.eq(organization_id))
        .one(&cairn.db)
        .await?
        .ok_or(Error::NotFound("backup"))?;
    let manifest = model.manifest.clone();
    let header = manifest
        .as_ref()
        .map(ManifestHeader::of)
        .unwrap_or_default();
    let mut view = PreviewView {
        backup_id: model.id,
        app_name: model.app_name.clone(),
        volume_name: model.volume_name.clone(),
        kind: super::archive_kind(model.kind.unwrap_or_default()),
        size: model.archive_size,
        created_at: model.created_at,
        finished_at: model.finished_at,
        cairn_version: header.cairn_version.clone(),
        format_version: header.format_version,
        encrypted: model
            .storage_path
            .as_deref()
            .is_some_and(|p| p.ends_with(".age")),
        restorable: false,
        reason: None,
        manifest: manifest.clone(),
        contents: None,
    };
    if let Some(refusal) = header.refusal() {
        view.reason = Some(refusal);
        return Ok(view);
    }
    let (archive, _) = super::archive_for(cairn, model, target_id).await?;
    view.kind = kinds_of(archive.name).0;
    let identity = if archive.name.encrypted {
        Some(crate::format::age::identity(&cairn.db, &cairn.master_key, organization_id).await?)
    } else {
        None
    };
    let (_, stream) =
        archive.storage.get(&archive.key).await.map_err(|e| {
            Error::Upstream(format!("the archive cannot be read from its target: {e}"))
        })?;
    let reader = blocking_reader(stream);
    let name = archive.name;
    let pg_restore = cairn.config.pg_restore.clone();
    let totals = totals_of(manifest.as_ref().and_then(|m| Manifest::from_value(m).ok()));
    let contents = tokio::task::spawn_blocking(move || {
        let plain = read::open(reader, name, identity.as_ref()).map_err(|e| e.to_string())?;
        match name.format {
            Format::Dump => list_dump(plain, &pg_restore),
            Format::SqlZstd | Format::SqlGzip | Format::Sql => crate::format::mysql::scan(plain)
                .map(|(bytes, tables)| Contents::MysqlDump(MysqlContents { tables, bytes })),
            Format::TarZstd | Format::TarGzip | Format::Tar => list_tar(plain, totals),
        }
    })
    .await
    .map_err(anyhow::Error::from)?;
    match contents {
        Ok(contents) => {
            view.restorable = true;
            view.contents = Some(contents);
        }
        Err(reason) => view.reason = Some(reason),
    }
    Ok(view)
}

/// The totals the archiver counted, from the manifest (zeros when it has
/// none, or is not a tar archive's).
fn totals_of(manifest: Option<Manifest>) -> Totals {
    match manifest.map(|m| m.contents) {
        Some(ManifestContents::Tar(tar)) => Totals {
            files: tar.file_count,
            directories: tar.directory_count,
            symlinks: tar.symlink_count,
            hard_links: tar.hard_link_count,
            bytes: tar.content_bytes,
        },
        _ => Totals::default(),
    }
}

fn list_tar(plain: impl std::io::Read, totals: Totals) -> Result<Contents, String> {
    use tar::EntryType;
    let damaged = |e: std::io::Error| format!("the archive is damaged or cut short: {e}");
    let mut archive = tar::Archive::new(plain);
    let mut entries = Vec::new();
    let mut truncated = false;
    for entry in archive.entries().map_err(damaged)? {
        if entries.len() == MAX_PREVIEW_ENTRIES {
            truncated = true;
            break;
        }
        let entry = entry.map_err(damaged)?;
        let header = entry.header();
        let entry_type = match header.entry_type() {
            EntryType::Regular | EntryType::Continuous => "file",
            EntryType::Directory => "directory",
            EntryType::Symlink => "symlink",
            EntryType::Link => "hardlink",
            _ => "other",
        };
        entries.push(EntryView {
            path: String::from_utf8_lossy(&entry.path_bytes()).into_owned(),
            entry_type: entry_type.to_owned(),
            size: header.size().unwrap_or(0),
            mode: format!("{:04o}", header.mode().unwrap_or(0) & 0o7777),
            modified_at: header
                .mtime()
                .ok()
                .and_then(|t| DateTime::from_timestamp(t as i64, 0)),
            link_target: entry
                .link_name_bytes()
                .map(|target| String::from_utf8_lossy(&target).into_owned()),
        });
    }
    Ok(Contents::Tar(TarContents {
        entries,
        truncated,
        totals,
    }))
}

fn list_dump(
    mut plain: impl std::io::Read,
    pg_restore: &std::path::Path,
) -> Result<Contents, String> {
    let (_, listing) = pg_restore_with_output(
        &mut plain,
        PgRestore::List,
        pg_restore,
        &Cancellation::default(),
    )?;
    let lines: Vec<&str> = listing
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with(';'))
        .collect();
    let tables = lines.iter().filter_map(|line| table_of(line)).collect();
    Ok(Contents::PgDump(DumpContents {
        tables,
        truncated: lines.len() > MAX_PREVIEW_ENTRIES,
        entries: lines
            .into_iter()
            .take(MAX_PREVIEW_ENTRIES)
            .map(str::to_owned)
            .collect(),
    }))
}

/// `schema.name` of a `TABLE` line of `pg_restore --list`
/// (`215; 1259 16386 TABLE public accounts postgres`).
fn table_of(line: &str) -> Option<String> {
    let (_, rest) = line.split_once(';')?;
    let tokens: Vec<&str> = rest.split_whitespace().collect();
    match tokens.as_slice() {
        [_, _, "TABLE", schema, name, ..] if *schema != "DATA" => Some(format!("{schema}.{name}")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lines_of_pg_restore_list_name_tables() {
        assert_eq!(
            table_of("215; 1259 16386 TABLE public accounts postgres"),
            Some("public.accounts".into())
        );
        assert_eq!(
            table_of("3345; 0 16386 TABLE DATA public accounts postgres"),
            None
        );
        assert_eq!(
            table_of("5; 2615 2200 SCHEMA - public pg_database_owner"),
            None
        );
    }
}
