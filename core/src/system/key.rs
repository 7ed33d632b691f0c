//! The system's age key pair: what self-backups are encrypted to. Made on
//! first use (once, even when several processes race), the identity sealed
//! under the master key; `cairn system key export` prints it for offline
//! safekeeping, since a lost database takes the sealed copy with it.

use std::sync::Arc;

use age::secrecy::ExposeSecret;
use chrono::Utc;
use sea_orm::{ActiveModelTrait, ConnectionTrait, EntityTrait, Set};
use uuid::Uuid;

use cairn_entity::system_key;

use crate::error::{is_unique_violation, Result};
use crate::format::age::{parse_recipient, ExportedIdentityView, Recipients};
use crate::secrets::MasterKey;

/// The row's name.
const AGE: &str = "age";

/// The associated data the identity is sealed with: no row of any table
/// has the nil id, so the sealed value opens nowhere else.
pub const SEAL_ID: Uuid = Uuid::nil();

/// `(recipient, identity)`, created when there is none.
async fn key_pair(db: &impl ConnectionTrait, master_key: &MasterKey) -> Result<(String, String)> {
    for _ in 0..2 {
        if let Some(row) = system_key::Entity::find_by_id(AGE.to_owned())
            .one(db)
            .await?
        {
            let identity = master_key.open(SEAL_ID, &row.identity_ciphertext)?;
            let identity = String::from_utf8(identity).map_err(anyhow::Error::from)?;
            return Ok((row.recipient, identity));
        }
        let identity = age::x25519::Identity::generate();
        let inserted = system_key::ActiveModel {
            name: Set(AGE.to_owned()),
            recipient: Set(identity.to_public().to_string()),
            identity_ciphertext: Set(
                master_key.seal(SEAL_ID, identity.to_string().expose_secret().as_bytes())
            ),
            created_at: Set(Utc::now()),
        }
        .insert(db)
        .await;
        match inserted {
            Ok(row) => return Ok((row.recipient, identity.to_string().expose_secret().into())),
            // Only the first writer's key is kept; a loser reads the winner's.
            Err(error) if is_unique_violation(&error) => continue,
            Err(error) => return Err(error.into()),
        }
    }
    Err(anyhow::anyhow!("the system's age key could not be stored").into())
}

/// The identity, for `cairn system key export`.
pub async fn export(
    db: &impl ConnectionTrait,
    master_key: &MasterKey,
) -> Result<ExportedIdentityView> {
    let (recipient, identity) = key_pair(db, master_key).await?;
    Ok(ExportedIdentityView {
        recipient,
        identity,
    })
}

/// The recipient of a self-backup.
pub async fn recipients(db: &impl ConnectionTrait, master_key: &MasterKey) -> Result<Recipients> {
    let (recipient, _) = key_pair(db, master_key).await?;
    let key = parse_recipient(&recipient)
        .map_err(|why| anyhow::anyhow!("the stored system recipient {why}"))?;
    Ok(Recipients {
        names: vec![recipient],
        keys: Arc::new(vec![key]),
    })
}

/// The sealed identity, when there is one: `Cairn::open` checks that the
/// master key opens it.
pub async fn sealed(db: &impl ConnectionTrait) -> Result<Option<String>> {
    Ok(system_key::Entity::find_by_id(AGE.to_owned())
        .one(db)
        .await?
        .map(|row| row.identity_ciphertext))
}
