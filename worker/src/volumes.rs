//! Where a volume's data is: the directories recorded for it when its app
//! was saved or deployed (`cairn_core::directories` resolves the naming
//! template, once), the deployed slot's first; and how a PostgreSQL volume
//! is reached.

use std::path::{Path, PathBuf};

use secrecy::SecretString;

use cairn_core::apps::ConnectionSettings;
use cairn_core::directories::{self, Directory};
use cairn_core::failure::FailureCode;
use cairn_core::Cairn;
use cairn_entity::enums::{Slot, VolumeKind};
use cairn_entity::volume;

use crate::failure::{internal, Failure};

/// Where a volume's data is, among the directories recorded for it when it
/// was saved: the slot last deployed first, then the other one (blue first
/// when no deploy is on record). Only real directories count (a symlink is
/// not followed).
pub fn resolve_volume(
    root: &Path,
    directories: &[Directory],
    deployed_slot: Option<Slot>,
) -> Result<(PathBuf, Slot), Failure> {
    match directories::locate(root, directories, deployed_slot) {
        Some(found) if found.exists => Ok((found.data, found.slot)),
        _ => Err(Failure::new(
            FailureCode::VolumeNotFound,
            format!(
                "neither {} exists",
                directories::describe(root, directories)
            ),
        )),
    }
}

/// A database volume's (`postgres`, `mysql`) connection settings and its
/// password (opened from the sealed column; `None` when none is stored).
pub(crate) fn database_connection(
    cairn: &Cairn,
    volume: &volume::Model,
) -> Result<(ConnectionSettings, Option<SecretString>), Failure> {
    let settings: ConnectionSettings = volume
        .connection_config
        .clone()
        .and_then(|c| serde_json::from_value(c).ok())
        .ok_or_else(|| {
            Failure::new(
                FailureCode::VolumeMisconfigured,
                format!("the {} volume has no connection settings", volume.kind),
            )
        })?;
    let password = match &volume.connection_password_ciphertext {
        Some(sealed) => {
            let password = cairn.master_key.open(volume.id, sealed).map_err(internal)?;
            Some(SecretString::from(
                String::from_utf8(password).map_err(internal)?,
            ))
        }
        None => None,
    };
    Ok((settings, password))
}

/// The directories of a file volume (none for a database, which is
/// dumped, not read from disk); refuses a volume an upgrade found sharing
/// its directory with an earlier volume.
pub(crate) async fn volume_directories(
    db: &sea_orm::DatabaseConnection,
    volume: &volume::Model,
) -> Result<Vec<Directory>, Failure> {
    if matches!(volume.kind, VolumeKind::Postgres | VolumeKind::Mysql) {
        return Ok(Vec::new());
    }
    if volume.conflict {
        return Err(Failure::new(
            FailureCode::VolumeConflict,
            "the volume's directory was also resolved by an earlier volume when Cairn was upgraded; \
             it is not read or written until a deploy or save gives it a directory of its own \
             (the operator's volume_name_template should include {org})",
        ));
    }
    let found = directories::of_volume(db, volume.id)
        .await
        .map_err(internal)?;
    if found.is_empty() {
        return Err(Failure::new(
            FailureCode::VolumeConflict,
            "the volume has no directory recorded; save the app or deploy it again",
        ));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_core::directories::VolumeNameTemplate;

    #[test]
    fn volumes_resolve_blue_then_green() {
        let root = std::env::temp_dir().join(format!("cairn-resolve-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&root).unwrap();
        let directories = VolumeNameTemplate::default().resolve("acme", "shop", "data");
        let missing = resolve_volume(&root, &directories, None).unwrap_err();
        assert_eq!(missing.code, FailureCode::VolumeNotFound);
        assert!(missing.message.contains("shop-blue_data/_data"));
        assert!(missing.message.contains("shop-green_data/_data"));
        std::fs::create_dir_all(root.join("shop-green_data/_data")).unwrap();
        assert_eq!(
            resolve_volume(&root, &directories, None).unwrap().1,
            Slot::Green
        );
        std::fs::create_dir_all(root.join("shop-blue_data/_data")).unwrap();
        assert_eq!(
            resolve_volume(&root, &directories, None).unwrap().1,
            Slot::Blue
        );
        // The slot last deployed goes first.
        let deployed = resolve_volume(&root, &directories, Some(Slot::Green)).unwrap();
        assert_eq!(deployed.1, Slot::Green);
        assert!(deployed.0.ends_with("shop-green_data/_data"));
        assert_eq!(
            resolve_volume(&root, &directories, Some(Slot::Blue))
                .unwrap()
                .1,
            Slot::Blue
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
