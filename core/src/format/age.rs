//! age encryption of archives: one X25519 key pair per organization, made on
//! first use, the identity sealed under the master key (bound to the
//! organization's id). Jobs may add extra recipients — age or
//! `ssh-ed25519` public keys — so an owner's offline key can decrypt too.
//! Archives are standard age files: `age --decrypt -i key.txt` reads them.

use std::str::FromStr;
use std::sync::Arc;

use age::secrecy::ExposeSecret;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use cairn_entity::organization;

use crate::error::{Error, Result};
use crate::secrets::MasterKey;

/// A public key an archive is encrypted to.
pub type Recipient = Box<dyn age::Recipient + Send + Sync>;

/// The recipients of one archive, shared with the archiving thread.
#[derive(Clone)]
pub struct Recipients {
    /// The public keys as text, for the manifest.
    pub names: Vec<String>,
    pub keys: Arc<Vec<Recipient>>,
}

impl std::fmt::Debug for Recipients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.names).finish()
    }
}

/// Parses an age (`age1…`) or `ssh-ed25519 AAAA… [comment]` public key.
pub fn parse_recipient(text: &str) -> Result<Recipient, String> {
    let text = text.trim();
    if text.starts_with("age1") {
        return age::x25519::Recipient::from_str(text)
            .map(|r| Box::new(r) as Recipient)
            .map_err(|_| "is not a valid age public key".to_owned());
    }
    if text.starts_with("ssh-ed25519 ") {
        return age::ssh::Recipient::from_str(text)
            .map(|r| Box::new(r) as Recipient)
            .map_err(|_| "is not a valid ssh-ed25519 public key".to_owned());
    }
    Err("must be an age public key (age1…) or an ssh-ed25519 public key".into())
}

/// `GET …/backups/encryption-key`
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionKeyView {
    /// The organization's age public key; archives of jobs with
    /// `encryption: age` are encrypted to it.
    pub recipient: String,
}

/// `POST …/backups/encryption-key/export`
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportedIdentityView {
    pub recipient: String,
    /// The age identity (`AGE-SECRET-KEY-1…`): keep it offline; with it,
    /// `age --decrypt -i` opens every encrypted archive of the organization.
    pub identity: String,
}

/// The organization's key pair, created (once, even when several callers
/// race) when it has none.
async fn key_pair(
    db: &impl ConnectionTrait,
    master_key: &MasterKey,
    organization_id: Uuid,
) -> Result<(String, String)> {
    for _ in 0..2 {
        let org = organization::Entity::find_by_id(organization_id)
            .one(db)
            .await?
            .ok_or(Error::NotFound("organization"))?;
        if let (Some(recipient), Some(sealed)) = (org.age_recipient, org.age_identity_ciphertext) {
            let identity = master_key.open(organization_id, &sealed)?;
            let identity = String::from_utf8(identity).map_err(anyhow::Error::from)?;
            return Ok((recipient, identity));
        }
        let identity = age::x25519::Identity::generate();
        let recipient = identity.to_public().to_string();
        let sealed = master_key.seal(
            organization_id,
            identity.to_string().expose_secret().as_bytes(),
        );
        // Only the first writer's key is kept; a loser reads the winner's.
        organization::Entity::update_many()
            .set(organization::ActiveModel {
                age_recipient: Set(Some(recipient)),
                age_identity_ciphertext: Set(Some(sealed)),
                ..Default::default()
            })
            .filter(organization::Column::Id.eq(organization_id))
            .filter(organization::Column::AgeRecipient.is_null())
            .exec(db)
            .await?;
    }
    Err(anyhow::anyhow!("the organization's age key could not be stored").into())
}

/// The organization's public key. Reading it never creates it (a viewer's
/// read must not write): until the first encrypted backup or an admin's
/// export makes the key pair, it is absent.
pub async fn public_key(
    db: &impl ConnectionTrait,
    organization_id: Uuid,
) -> Result<EncryptionKeyView> {
    let org = organization::Entity::find_by_id(organization_id)
        .one(db)
        .await?
        .ok_or(Error::NotFound("organization"))?;
    match org.age_recipient {
        Some(recipient) => Ok(EncryptionKeyView { recipient }),
        None => Err(Error::Absent(
            "the organization has no encryption key yet: the first backup of a job with \
             encryption \"age\" or an admin's POST …/backups/encryption-key/export creates it"
                .into(),
        )),
    }
}

/// The organization's identity, for offline safekeeping.
pub async fn export_identity(
    db: &impl ConnectionTrait,
    master_key: &MasterKey,
    organization_id: Uuid,
) -> Result<ExportedIdentityView> {
    let (recipient, identity) = key_pair(db, master_key, organization_id).await?;
    Ok(ExportedIdentityView {
        recipient,
        identity,
    })
}

/// The organization's identity, to decrypt its archives (previews,
/// restores).
pub async fn identity(
    db: &impl ConnectionTrait,
    master_key: &MasterKey,
    organization_id: Uuid,
) -> Result<age::x25519::Identity> {
    use std::str::FromStr;
    let (_, identity) = key_pair(db, master_key, organization_id).await?;
    age::x25519::Identity::from_str(&identity)
        .map_err(|e| anyhow::anyhow!("the organization's stored identity is invalid: {e}").into())
}

/// The recipients of an archive: the organization's key and the job's
/// extra keys.
pub async fn recipients(
    db: &impl ConnectionTrait,
    master_key: &MasterKey,
    organization_id: Uuid,
    extra: &[String],
) -> Result<Recipients> {
    let (own, _) = key_pair(db, master_key, organization_id).await?;
    let mut names = vec![own];
    names.extend(extra.iter().map(|r| r.trim().to_owned()));
    let keys = names
        .iter()
        .map(|name| parse_recipient(name))
        .collect::<Result<Vec<_>, String>>()
        .map_err(|why| anyhow::anyhow!("a stored recipient {why}"))?;
    Ok(Recipients {
        names,
        keys: Arc::new(keys),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_are_age_or_ssh_ed25519() {
        let identity = age::x25519::Identity::generate();
        assert!(parse_recipient(&identity.to_public().to_string()).is_ok());
        assert!(parse_recipient(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN alice@rust"
        )
        .is_ok());
        for bad in [
            "",
            "age1notakey",
            "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDE",
            "AGE-SECRET-KEY-1QQQ",
        ] {
            assert!(parse_recipient(bad).is_err(), "{bad:?}");
        }
    }
}
