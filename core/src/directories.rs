//! Where a volume's data lives on disk: the directory names under the
//! volume root (`<volume_root>/<name>/_data`), resolved from the configured
//! `volume_name_template` when an app or a deploy is saved, and claimed by
//! exactly one volume.
//!
//! App names are unique only within an organization, so a template without
//! `{org}` (the Docker compose default `{app}-{slot}_{volume}`) lets two
//! organizations' apps named alike point at the same directory. The
//! `volume_directories` table's primary key is the resolved name: whoever
//! saves second gets `409` naming the volume, and a volume's backups and
//! restores only ever touch the directories recorded for it.

use std::path::{Path, PathBuf};

use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set};
use serde::Deserialize;
use uuid::Uuid;

use cairn_entity::enums::{Slot, VolumeKind};
use cairn_entity::{volume, volume_directory};

use crate::error::{is_unique_violation, Error, Result};

/// `volume_name_template`: how a volume's directory is named, with the
/// placeholders `{org}` (the organization's slug), `{app}`, `{slot}`
/// (`blue` or `green`) and `{volume}`. Parsed once at start-up; after that
/// it always resolves to one valid directory name.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct VolumeNameTemplate {
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    Org,
    App,
    Slot,
    Volume,
}

impl VolumeNameTemplate {
    /// Docker compose's naming of a blue/green project's volumes.
    pub const DEFAULT: &'static str = "{app}-{slot}_{volume}";

    /// Checks a template: only the four placeholders, `{app}` and
    /// `{volume}` present (else two volumes of one organization would
    /// always share a directory), and literal text from
    /// `[A-Za-z0-9_.-]` (a directory name, never a path).
    pub fn parse(text: &str) -> Result<VolumeNameTemplate, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('{') {
                let end = after
                    .find('}')
                    .ok_or("has a '{' without its '}'".to_owned())?;
                parts.push(match &after[..end] {
                    "org" => Part::Org,
                    "app" => Part::App,
                    "slot" => Part::Slot,
                    "volume" => Part::Volume,
                    _ => {
                        return Err(
                            "knows only the placeholders {org}, {app}, {slot} and {volume}".into(),
                        )
                    }
                });
                rest = &after[end + 1..];
            } else {
                let end = rest.find('{').unwrap_or(rest.len());
                let literal = &rest[..end];
                if !literal
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
                {
                    return Err(
                        "may contain only letters, digits, '_', '.', '-' besides placeholders"
                            .into(),
                    );
                }
                parts.push(Part::Literal(literal.to_owned()));
                rest = &rest[end..];
            }
        }
        if !parts.contains(&Part::App) || !parts.contains(&Part::Volume) {
            return Err("must contain {app} and {volume}".into());
        }
        // Names start with a letter or digit; a template must not put a dot
        // first (a hidden directory, and never `.`/`..`).
        if matches!(parts.first(), Some(Part::Literal(l)) if l.starts_with('.')) {
            return Err("must not start with '.'".into());
        }
        Ok(VolumeNameTemplate { parts })
    }

    /// Whether the blue and green slots get directories of their own.
    pub fn has_slot(&self) -> bool {
        self.parts.contains(&Part::Slot)
    }

    fn render(&self, org: &str, app: &str, slot: Option<Slot>, volume: &str) -> String {
        let mut name = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => name.push_str(text),
                Part::Org => name.push_str(org),
                Part::App => name.push_str(app),
                Part::Slot => name.push_str(slot.map(Slot::as_str).unwrap_or_default()),
                Part::Volume => name.push_str(volume),
            }
        }
        name
    }

    /// The directories of a volume: one per slot, or one for both.
    pub fn resolve(&self, org: &str, app: &str, volume: &str) -> Vec<Directory> {
        if self.has_slot() {
            [Slot::Blue, Slot::Green]
                .into_iter()
                .map(|slot| Directory {
                    slot: Some(slot),
                    name: self.render(org, app, Some(slot), volume),
                })
                .collect()
        } else {
            vec![Directory {
                slot: None,
                name: self.render(org, app, None, volume),
            }]
        }
    }
}

impl std::fmt::Display for VolumeNameTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for part in &self.parts {
            match part {
                Part::Literal(text) => f.write_str(text)?,
                Part::Org => f.write_str("{org}")?,
                Part::App => f.write_str("{app}")?,
                Part::Slot => f.write_str("{slot}")?,
                Part::Volume => f.write_str("{volume}")?,
            }
        }
        Ok(())
    }
}

impl Default for VolumeNameTemplate {
    fn default() -> VolumeNameTemplate {
        // The default is a valid template (a unit test parses it).
        VolumeNameTemplate::parse(Self::DEFAULT).expect("the default template is valid")
    }
}

impl TryFrom<String> for VolumeNameTemplate {
    type Error = String;

    fn try_from(text: String) -> Result<VolumeNameTemplate, String> {
        VolumeNameTemplate::parse(&text)
    }
}

/// One directory a volume resolves to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Directory {
    /// `None`: the template has no `{slot}`; the directory serves both.
    pub slot: Option<Slot>,
    pub name: String,
}

/// The app whose volumes are being saved, and what their directory names
/// are made from.
pub(crate) struct Naming<'a> {
    pub template: &'a VolumeNameTemplate,
    pub org_slug: String,
    pub app_id: Uuid,
    pub app_name: &'a str,
}

impl<'a> Naming<'a> {
    /// The naming of app `app_id` (`app_name`) of an organization, with the
    /// server's template.
    pub async fn of(
        db: &impl ConnectionTrait,
        template: &'a VolumeNameTemplate,
        organization_id: Uuid,
        app_id: Uuid,
        app_name: &'a str,
    ) -> Result<Naming<'a>> {
        Ok(Naming {
            template,
            org_slug: crate::orgs::get(db, organization_id).await?.slug,
            app_id,
            app_name,
        })
    }
}

/// Records `volume_id`'s directories, replacing those it had, and clears
/// its `conflict` flag. Another volume holding one of them — in any
/// organization — is a `409` on `field` (`volumes[i].name`); the caller's
/// transaction then rolls back. A `postgres` volume has no directory.
pub(crate) async fn claim(
    db: &impl ConnectionTrait,
    naming: &Naming<'_>,
    volume_id: Uuid,
    volume_name: &str,
    kind: VolumeKind,
    field: String,
) -> Result<()> {
    volume_directory::Entity::delete_many()
        .filter(volume_directory::Column::VolumeId.eq(volume_id))
        .exec(db)
        .await?;
    let directories = match kind {
        VolumeKind::Generic | VolumeKind::Sqlite => {
            naming
                .template
                .resolve(&naming.org_slug, naming.app_name, volume_name)
        }
        VolumeKind::Postgres | VolumeKind::Mysql => Vec::new(),
    };
    for directory in directories {
        let inserted = volume_directory::ActiveModel {
            name: Set(directory.name.clone()),
            volume_id: Set(volume_id),
            slot: Set(directory.slot),
        }
        .insert(db)
        .await;
        match inserted {
            Ok(_) => {}
            Err(error) if is_unique_violation(&error) => {
                return Err(Error::conflict(
                    field,
                    format!(
                        "the volume directory '{}' already belongs to another volume; \
                         the operator's volume_name_template must tell them apart \
                         (e.g. with {{org}})",
                        directory.name
                    ),
                ))
            }
            Err(error) => return Err(error.into()),
        }
    }
    volume::Entity::update_many()
        .col_expr(
            volume::Column::Conflict,
            sea_orm::sea_query::Expr::value(false),
        )
        .filter(volume::Column::Id.eq(volume_id))
        .filter(volume::Column::Conflict.eq(true))
        .exec(db)
        .await?;
    Ok(())
}

/// The directories recorded for a volume.
pub async fn of_volume(db: &impl ConnectionTrait, volume_id: Uuid) -> Result<Vec<Directory>> {
    Ok(volume_directory::Entity::find()
        .filter(volume_directory::Column::VolumeId.eq(volume_id))
        .all(db)
        .await?
        .into_iter()
        .map(|row| Directory {
            slot: row.slot,
            name: row.name,
        })
        .collect())
}

/// A volume's data directory (`<root>/<name>/_data`) on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    pub data: PathBuf,
    /// The slot it belongs to (the deployed one when one directory serves
    /// both).
    pub slot: Slot,
    /// Whether it exists (a real directory, not a symlink, and so is its
    /// parent).
    pub exists: bool,
}

/// Finds a volume's data among its `directories`: the deployed slot's
/// first, then the other's (blue first without a deploy). When none
/// exists, answers the one a restore would create (the deployed slot's),
/// with `exists: false`; `None` when the volume has no directory at all.
pub fn locate(
    root: &Path,
    directories: &[Directory],
    deployed_slot: Option<Slot>,
) -> Option<Located> {
    let first = deployed_slot.unwrap_or(Slot::Blue);
    let mut ordered: Vec<&Directory> = directories.iter().collect();
    ordered.sort_by_key(|d| d.slot.is_some_and(|slot| slot != first));
    let located = |directory: &Directory, exists| Located {
        data: root.join(&directory.name).join("_data"),
        slot: directory.slot.unwrap_or(first),
        exists,
    };
    for directory in &ordered {
        let candidate = located(directory, true);
        let parent_ok = candidate
            .data
            .parent()
            .and_then(|p| std::fs::symlink_metadata(p).ok())
            .is_some_and(|m| m.is_dir());
        let data_ok = std::fs::symlink_metadata(&candidate.data).is_ok_and(|m| m.is_dir());
        if parent_ok && data_ok {
            return Some(candidate);
        }
    }
    ordered.first().map(|directory| located(directory, false))
}

/// The data paths of `directories`, for messages.
pub fn describe(root: &Path, directories: &[Directory]) -> String {
    directories
        .iter()
        .map(|d| root.join(&d.name).join("_data").display().to_string())
        .collect::<Vec<_>>()
        .join(" nor ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_checked() {
        assert!(VolumeNameTemplate::parse(VolumeNameTemplate::DEFAULT).is_ok());
        assert!(VolumeNameTemplate::parse("{org}-{app}-{slot}_{volume}").is_ok());
        assert!(VolumeNameTemplate::parse("{org}_{app}_{volume}").is_ok());
        for bad in [
            "",
            "{app}",
            "{volume}",
            "{app}/{volume}",
            "{app}-{tenant}_{volume}",
            "{app}_{volume",
            ".{app}_{volume}",
            "{app} {volume}",
        ] {
            assert!(VolumeNameTemplate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn templates_resolve_per_slot() {
        let default = VolumeNameTemplate::default();
        assert_eq!(
            default.resolve("acme", "shop", "data"),
            vec![
                Directory {
                    slot: Some(Slot::Blue),
                    name: "shop-blue_data".into()
                },
                Directory {
                    slot: Some(Slot::Green),
                    name: "shop-green_data".into()
                },
            ]
        );
        let slotless = VolumeNameTemplate::parse("{org}.{app}.{volume}").unwrap();
        assert_eq!(
            slotless.resolve("acme", "shop", "data"),
            vec![Directory {
                slot: None,
                name: "acme.shop.data".into()
            }]
        );
    }

    #[test]
    fn volumes_are_located_by_slot() {
        let root = tempfile::tempdir().unwrap();
        let directories = VolumeNameTemplate::default().resolve("acme", "shop", "data");
        let none = locate(root.path(), &directories, None).unwrap();
        assert!(!none.exists);
        assert_eq!(none.slot, Slot::Blue);
        let none = locate(root.path(), &directories, Some(Slot::Green)).unwrap();
        assert_eq!(none.data, root.path().join("shop-green_data/_data"));
        std::fs::create_dir_all(root.path().join("shop-green_data/_data")).unwrap();
        let found = locate(root.path(), &directories, None).unwrap();
        assert_eq!((found.slot, found.exists), (Slot::Green, true));
        std::fs::create_dir_all(root.path().join("shop-blue_data/_data")).unwrap();
        assert_eq!(
            locate(root.path(), &directories, None).unwrap().slot,
            Slot::Blue
        );
        assert_eq!(
            locate(root.path(), &directories, Some(Slot::Green))
                .unwrap()
                .slot,
            Slot::Green
        );
        // A symlink is not a volume.
        std::os::unix::fs::symlink(
            root.path().join("shop-blue_data"),
            root.path().join("link-blue_data"),
        )
        .unwrap();
        let linked = VolumeNameTemplate::default().resolve("acme", "link", "data");
        assert!(!locate(root.path(), &linked, None).unwrap().exists);
        assert_eq!(locate(root.path(), &[], None), None);
    }
}
