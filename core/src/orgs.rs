//! Organizations: the tenants. Every other resource belongs to one (or, for
//! system-level targets and administrator tokens, to none).

use chrono::{DateTime, Utc};
use sea_orm::{ActiveModelTrait, ConnectionTrait, EntityTrait, QueryOrder, Set};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use cairn_entity::organization;

use crate::auth::Principal;
use crate::error::{is_unique_violation, Error, Result, Validator};
use crate::validate::{check_display_name, check_slug};

/// `POST /api/v1/organizations`
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateOrganizationRequest {
    /// Unique, used in storage paths: `^[a-z0-9][a-z0-9-]{0,62}$`.
    pub slug: String,
    /// Display name (1–200 characters).
    pub name: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationView {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

impl From<organization::Model> for OrganizationView {
    fn from(model: organization::Model) -> Self {
        OrganizationView {
            id: model.id,
            slug: model.slug,
            name: model.name,
            created_at: model.created_at,
        }
    }
}

pub async fn create(
    db: &impl ConnectionTrait,
    request: CreateOrganizationRequest,
    now: DateTime<Utc>,
) -> Result<OrganizationView> {
    let mut validator = Validator::new();
    validator.check_result("slug", check_slug(&request.slug));
    validator.check_result("name", check_display_name(&request.name));
    validator.finish()?;
    let inserted = organization::ActiveModel {
        id: Set(Uuid::now_v7()),
        slug: Set(request.slug.clone()),
        name: Set(request.name.trim().to_owned()),
        created_at: Set(now),
        age_recipient: Set(None),
        age_identity_ciphertext: Set(None),
    }
    .insert(db)
    .await;
    match inserted {
        Ok(model) => Ok(model.into()),
        Err(error) if is_unique_violation(&error) => Err(Error::conflict(
            "slug",
            format!(
                "an organization with slug '{}' already exists",
                request.slug
            ),
        )),
        Err(error) => Err(error.into()),
    }
}

/// The organizations the caller can see: all of them for a system
/// administrator, its own for an organization token.
pub async fn list(
    db: &impl ConnectionTrait,
    principal: &Principal,
) -> Result<Vec<OrganizationView>> {
    let models = match principal.organization_id {
        None => {
            organization::Entity::find()
                .order_by_asc(organization::Column::Slug)
                .all(db)
                .await?
        }
        Some(own) => organization::Entity::find_by_id(own).all(db).await?,
    };
    Ok(models.into_iter().map(Into::into).collect())
}

pub async fn get(db: &impl ConnectionTrait, id: Uuid) -> Result<OrganizationView> {
    organization::Entity::find_by_id(id)
        .one(db)
        .await?
        .map(Into::into)
        .ok_or(Error::NotFound("organization"))
}

/// Deletes an organization and, through the schema's cascades, every record
/// it owns. Archives already written to storage are left where they are.
pub async fn delete(db: &impl ConnectionTrait, id: Uuid) -> Result<()> {
    let result = organization::Entity::delete_by_id(id).exec(db).await?;
    if result.rows_affected == 0 {
        return Err(Error::NotFound("organization"));
    }
    Ok(())
}
