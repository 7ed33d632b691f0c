//! API tokens, roles and the tenancy rule.
//!
//! A token is `cairn_` followed by 32 random bytes (base64url). Only its
//! SHA-256 is stored; the token itself is shown once, when it is created.
//! A token either administers the whole system (no organization) or belongs
//! to one organization with a [`Role`]. A caller that names an organization
//! it does not belong to gets the same "not found" as for a missing one.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use rand::RngCore;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;
use uuid::Uuid;

use cairn_entity::api_token;

use crate::error::{Error, Result, Validator};
use crate::validate::check_display_name;

const TOKEN_PREFIX: &str = "cairn_";

/// What an organization token may do. Ordered: each role includes the ones
/// below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read everything in the organization.
    Viewer,
    /// Read, trigger runs and restores.
    Operator,
    /// Everything in the organization.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// The authenticated caller of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The stored token, or `None` for the configured `CAIRN_ADMIN_TOKEN`.
    pub token_id: Option<Uuid>,
    /// `None` for a system administrator.
    pub organization_id: Option<Uuid>,
    pub role: Role,
}

impl Principal {
    pub fn is_system_admin(&self) -> bool {
        self.organization_id.is_none()
    }

    /// Allows the call when the caller administers the system, or belongs
    /// to `organization_id` with at least `role`. Another organization's id
    /// answers "organization not found", exactly as a missing one does.
    /// `action` is formatted only for a refusal.
    pub fn require(
        &self,
        organization_id: Uuid,
        role: Role,
        action: impl std::fmt::Display,
    ) -> Result<()> {
        match self.organization_id {
            None => Ok(()),
            Some(own) if own != organization_id => Err(Error::NotFound("organization")),
            Some(_) if self.role < role => Err(Error::Forbidden(format!(
                "{action} (it needs the {} role; this token is {})",
                role.as_str(),
                self.role.as_str()
            ))),
            Some(_) => Ok(()),
        }
    }

    /// Allows the call only for a system administrator.
    pub fn require_system_admin(&self, action: impl std::fmt::Display) -> Result<()> {
        if self.is_system_admin() {
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "{action} (it needs a system administrator token)"
            )))
        }
    }
}

/// Hex SHA-256 of a token.
pub fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// A token as listed: never the token itself.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenView {
    pub id: Uuid,
    /// `null` for a system administrator token.
    pub organization_id: Option<Uuid>,
    pub name: String,
    pub role: Role,
    /// The first characters of the token, to tell tokens apart.
    pub token_prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A token just created: the only time the token itself is returned.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedTokenView {
    #[serde(flatten)]
    pub view: TokenView,
    /// The bearer token. Shown once; store it now.
    pub token: String,
}

/// `POST /api/v1/organizations/{orgId}/tokens`
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// What the token is for (1–200 characters).
    pub name: String,
    pub role: Role,
}

fn view(model: api_token::Model) -> TokenView {
    TokenView {
        id: model.id,
        organization_id: model.organization_id,
        name: model.name,
        role: Role::parse(&model.role).unwrap_or(Role::Viewer),
        token_prefix: model.token_prefix,
        created_at: model.created_at,
        last_used_at: model.last_used_at,
    }
}

/// Creates a token for `organization_id` (or a system administrator token
/// when `None`) and returns it once.
pub async fn create_token(
    db: &impl ConnectionTrait,
    organization_id: Option<Uuid>,
    request: CreateTokenRequest,
    now: DateTime<Utc>,
) -> Result<CreatedTokenView> {
    let mut validator = Validator::new();
    validator.check_result("name", check_display_name(&request.name));
    validator.finish()?;
    let token = generate_token();
    let model = api_token::ActiveModel {
        id: Set(Uuid::now_v7()),
        organization_id: Set(organization_id),
        name: Set(request.name.trim().to_owned()),
        role: Set(request.role.as_str().to_owned()),
        token_hash: Set(hash_token(&token)),
        token_prefix: Set(token[..TOKEN_PREFIX.len() + 6].to_owned()),
        created_at: Set(now),
        last_used_at: Set(None),
    }
    .insert(db)
    .await?;
    Ok(CreatedTokenView {
        view: view(model),
        token,
    })
}

/// The tokens of an organization, oldest first.
pub async fn list_tokens(
    db: &impl ConnectionTrait,
    organization_id: Uuid,
    paging: &crate::pages::Paging,
) -> Result<(Vec<TokenView>, Option<String>)> {
    let (models, next) = crate::pages::page(
        db,
        api_token::Entity::find().filter(api_token::Column::OrganizationId.eq(organization_id)),
        api_token::Column::Id,
        paging,
        |token| token.id.to_string(),
        crate::pages::uuid,
    )
    .await?;
    Ok((models.into_iter().map(view).collect(), next))
}

/// Revokes a token of an organization.
pub async fn delete_token(
    db: &impl ConnectionTrait,
    organization_id: Uuid,
    token_id: Uuid,
) -> Result<()> {
    let result = api_token::Entity::delete_many()
        .filter(api_token::Column::Id.eq(token_id))
        .filter(api_token::Column::OrganizationId.eq(organization_id))
        .exec(db)
        .await?;
    if result.rows_affected == 0 {
        return Err(Error::NotFound("token"));
    }
    Ok(())
}

/// Resolves a bearer token to its principal; `None` when it is unknown.
pub async fn authenticate(
    cairn: &crate::Cairn,
    bearer: &str,
    now: DateTime<Utc>,
) -> Result<Option<Principal>> {
    authenticate_hashed(cairn, &hash_token(bearer), now).await
}

/// [`authenticate`] for a token known by its hash (a console session keeps
/// the hash of the token that signed in, never the token).
pub async fn authenticate_hashed(
    cairn: &crate::Cairn,
    presented: &str,
    now: DateTime<Utc>,
) -> Result<Option<Principal>> {
    Ok(lookup(cairn, presented, None, now)
        .await?
        .map(|(principal, _)| principal))
}

/// [`authenticate`] for a request to `organization_id`, with whether that
/// organization exists and is not deleted, read in the same statement as
/// the token: `Some(true)` active, `Some(false)` deleted, `None` unknown
/// (no such organization, or the configured admin token, which has no row;
/// the caller asks [`crate::orgs::require_active`] then).
pub async fn authenticate_in(
    cairn: &crate::Cairn,
    bearer: &str,
    organization_id: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<(Principal, Option<bool>)>> {
    lookup(cairn, &hash_token(bearer), Some(organization_id), now).await
}

/// The principal of the token hashed `presented`, and, when asked, the
/// state of `organization_id` read in the same statement.
async fn lookup(
    cairn: &crate::Cairn,
    presented: &str,
    organization_id: Option<Uuid>,
    now: DateTime<Utc>,
) -> Result<Option<(Principal, Option<bool>)>> {
    use sea_orm::{FromQueryResult, Statement};
    if let Some(admin) = configured_admin(cairn, presented) {
        return Ok(Some((admin, None)));
    }
    #[derive(FromQueryResult)]
    struct TokenRow {
        id: Uuid,
        organization_id: Option<Uuid>,
        role: String,
        last_used_at: Option<DateTime<Utc>>,
        organization_active: Option<i32>,
    }
    let backend = cairn.read.get_database_backend();
    // Values in the order their placeholders appear (SQLite's `?` binds so).
    let mut values: Vec<sea_orm::Value> = Vec::new();
    let mut bind = |value: sea_orm::Value| {
        values.push(value);
        match backend {
            sea_orm::DbBackend::Postgres => format!("${}", values.len()),
            _ => "?".to_owned(),
        }
    };
    let organization_active = match organization_id {
        Some(id) => format!(
            "(SELECT CASE WHEN o.deleted_at IS NULL THEN 1 ELSE 0 END \
               FROM organizations o WHERE o.id = {})",
            bind(id.into())
        ),
        None => "CAST(NULL AS INTEGER)".to_owned(),
    };
    let token = bind(presented.into());
    let statement = Statement::from_sql_and_values(
        backend,
        format!(
            "SELECT t.id, t.organization_id, t.role, t.last_used_at, \
               {organization_active} AS organization_active \
             FROM api_tokens t WHERE t.token_hash = {token}"
        ),
        values,
    );
    let Some(row) = TokenRow::find_by_statement(statement)
        .one(&cairn.read)
        .await?
    else {
        return Ok(None);
    };
    let principal = principal_of(
        cairn,
        row.id,
        row.organization_id,
        &row.role,
        row.last_used_at,
        now,
    )
    .await?;
    Ok(Some((principal, row.organization_active.map(|a| a == 1))))
}

/// The system administrator, when `presented` is the hash of the
/// configured admin token (compared in constant time).
fn configured_admin(cairn: &crate::Cairn, presented: &str) -> Option<Principal> {
    let admin = cairn.config.admin_token.as_ref()?;
    let expected = hash_token(admin.expose_secret());
    bool::from(presented.as_bytes().ct_eq(expected.as_bytes())).then_some(Principal {
        token_id: None,
        organization_id: None,
        role: Role::Admin,
    })
}

/// The principal of a stored token, recording its use at most once a
/// minute, so reads do not turn into a write per request.
async fn principal_of(
    cairn: &crate::Cairn,
    token_id: Uuid,
    organization_id: Option<Uuid>,
    role: &str,
    last_used_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Principal> {
    if last_used_at.is_none_or(|last| now - last > Duration::minutes(1)) {
        api_token::Entity::update_many()
            .col_expr(
                api_token::Column::LastUsedAt,
                sea_orm::sea_query::Expr::value(now),
            )
            .filter(api_token::Column::Id.eq(token_id))
            .exec(&cairn.db)
            .await?;
    }
    Ok(Principal {
        token_id: Some(token_id),
        organization_id,
        role: Role::parse(role).unwrap_or(Role::Viewer),
    })
}

/// Whether any system administrator token is stored.
pub async fn system_admin_token_exists(db: &impl ConnectionTrait) -> Result<bool> {
    Ok(api_token::Entity::find()
        .filter(api_token::Column::OrganizationId.is_null())
        .one(db)
        .await?
        .is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_hashed() {
        let a = generate_token();
        let b = generate_token();
        assert_ne!(a, b);
        assert!(a.len() >= TOKEN_PREFIX.len() + 43, "{a}");
        assert_eq!(hash_token(&a).len(), 64);
        assert_ne!(hash_token(&a), hash_token(&b));
    }

    #[test]
    fn tenancy_rule() {
        let org = Uuid::now_v7();
        let other = Uuid::now_v7();
        let viewer = Principal {
            token_id: None,
            organization_id: Some(org),
            role: Role::Viewer,
        };
        assert!(viewer.require(org, Role::Viewer, "x").is_ok());
        assert!(matches!(
            viewer.require(org, Role::Admin, "x"),
            Err(Error::Forbidden(_))
        ));
        assert!(matches!(
            viewer.require(other, Role::Viewer, "x"),
            Err(Error::NotFound(_))
        ));
        let admin = Principal {
            token_id: None,
            organization_id: None,
            role: Role::Admin,
        };
        assert!(admin.require(other, Role::Admin, "x").is_ok());
    }
}
