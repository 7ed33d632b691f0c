//! Sessions of the web console. Signing in takes an API token (a system
//! administrator's or an organization's) and gives the browser a random
//! session id for an `HttpOnly` cookie; the row keeps the SHA-256 of that
//! id and of the token, and when it expires. Every request reads the
//! principal again from the token ([`auth::authenticate_hashed`]), so a
//! revoked token or a changed role takes effect at once, and roles are
//! those of the API exactly.
//!
//! The CSRF token of a session is an HMAC of the constant
//! [`CSRF_CONTEXT`] under the session id: only a page served to that
//! browser knows it, nothing more is stored, and it changes with each
//! session.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sea_orm::{ActiveModelTrait, ActiveValue, ColumnTrait, EntityTrait, QueryFilter};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use cairn_entity::console_session;

use crate::auth::{self, hash_token, Principal};
use crate::{Cairn, Result};

/// How long a session lasts from sign-in, whatever is done with it.
pub const SESSION_LIFETIME: Duration = Duration::hours(12);

/// What the CSRF token of a session signs.
pub const CSRF_CONTEXT: &[u8] = b"cairn console csrf v1";

/// A new session: the id for the cookie (shown once, never stored) and who
/// signed in.
pub struct SignedIn {
    pub session: String,
    pub principal: Principal,
    pub expires_at: DateTime<Utc>,
}

/// Signs in with an API token; `None` when the token is unknown. Expired
/// sessions are removed on the way.
pub async fn sign_in(cairn: &Cairn, token: &str, now: DateTime<Utc>) -> Result<Option<SignedIn>> {
    let token_hash = hash_token(token.trim());
    let Some(principal) = auth::authenticate_hashed(cairn, &token_hash, now).await? else {
        return Ok(None);
    };
    console_session::Entity::delete_many()
        .filter(console_session::Column::ExpiresAt.lte(now))
        .exec(&cairn.db)
        .await?;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let session = URL_SAFE_NO_PAD.encode(bytes);
    let expires_at = now + SESSION_LIFETIME;
    console_session::ActiveModel {
        id: ActiveValue::Set(Uuid::now_v7()),
        session_hash: ActiveValue::Set(hash_token(&session)),
        token_hash: ActiveValue::Set(token_hash),
        created_at: ActiveValue::Set(now),
        expires_at: ActiveValue::Set(expires_at),
    }
    .insert(&cairn.db)
    .await?;
    Ok(Some(SignedIn {
        session,
        principal,
        expires_at,
    }))
}

/// The principal of a live session; `None` when the session is unknown,
/// expired, or its token no longer signs anyone in.
pub async fn principal(
    cairn: &Cairn,
    session: &str,
    now: DateTime<Utc>,
) -> Result<Option<Principal>> {
    let Some(row) = console_session::Entity::find()
        .filter(console_session::Column::SessionHash.eq(hash_token(session)))
        .filter(console_session::Column::ExpiresAt.gt(now))
        .one(&cairn.read)
        .await?
    else {
        return Ok(None);
    };
    auth::authenticate_hashed(cairn, &row.token_hash, now).await
}

/// Ends a session (nothing happens for an unknown one).
pub async fn sign_out(cairn: &Cairn, session: &str) -> Result<()> {
    console_session::Entity::delete_many()
        .filter(console_session::Column::SessionHash.eq(hash_token(session)))
        .exec(&cairn.db)
        .await?;
    Ok(())
}

/// The CSRF token of `session`, for the forms of its pages.
pub fn csrf_token(session: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(session.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(CSRF_CONTEXT);
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `given` is the CSRF token of `session` (compared in constant
/// time).
pub fn csrf_matches(session: &str, given: &str) -> bool {
    bool::from(csrf_token(session).as_bytes().ct_eq(given.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csrf_token_belongs_to_its_session() {
        let token = csrf_token("session-a");
        assert_eq!(token.len(), 64);
        assert!(csrf_matches("session-a", &token));
        assert!(!csrf_matches("session-b", &token));
        assert!(!csrf_matches("session-a", ""));
        assert!(!csrf_matches("session-a", &token[..63]));
    }
}
