//! Organizations: the tenants. Every other resource belongs to one (or, for
//! system-level targets and administrator tokens, to none).

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect, Set,
    TransactionTrait,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use cairn_entity::{organization, retired_slug};

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
    /// When it was deleted: its jobs have stopped and its tokens reach
    /// nothing; until it is purged, a system administrator may undelete it.
    pub deleted_at: Option<DateTime<Utc>>,
}

impl From<organization::Model> for OrganizationView {
    fn from(model: organization::Model) -> Self {
        OrganizationView {
            id: model.id,
            slug: model.slug,
            name: model.name,
            created_at: model.created_at,
            deleted_at: model.deleted_at,
        }
    }
}

/// `DELETE /api/v1/organizations/{orgId}?confirm=<slug>`.
#[derive(Clone, Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteOrganizationQuery {
    /// The organization's slug, typed again: deleting stops its jobs and,
    /// after the grace period, purges its records and key pair.
    pub confirm: Option<String>,
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
    // A purged organization's archives stay in storage under its slug.
    if retired_slug::Entity::find_by_id(request.slug.clone())
        .one(db)
        .await?
        .is_some()
    {
        return Err(Error::conflict(
            "slug",
            "this slug belonged to a purged organization whose archives may remain in storage \
             under it; choose another",
        ));
    }
    let inserted = organization::ActiveModel {
        id: Set(Uuid::now_v7()),
        slug: Set(request.slug.clone()),
        name: Set(request.name.trim().to_owned()),
        created_at: Set(now),
        age_recipient: Set(None),
        age_identity_ciphertext: Set(None),
        deleted_at: Set(None),
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
    paging: &crate::pages::Paging,
) -> Result<(Vec<OrganizationView>, Option<String>)> {
    let select = match principal.organization_id {
        None => organization::Entity::find(),
        Some(own) => organization::Entity::find().filter(organization::Column::Id.eq(own)),
    };
    let (models, next) = crate::pages::page(
        db,
        select,
        organization::Column::Slug,
        paging,
        |org| org.slug.clone(),
        crate::pages::text,
    )
    .await?;
    Ok((models.into_iter().map(Into::into).collect(), next))
}

pub async fn get(db: &impl ConnectionTrait, id: Uuid) -> Result<OrganizationView> {
    organization::Entity::find_by_id(id)
        .one(db)
        .await?
        .map(Into::into)
        .ok_or(Error::NotFound("organization"))
}

/// Refuses (404, as if it did not exist) an organization that was
/// deleted: its resources are out of reach until it is undeleted.
pub async fn require_active(db: &impl ConnectionTrait, id: Uuid) -> Result<()> {
    // Every request to an organization asks: only the one column (the row
    // also holds the organization's sealed key).
    let deleted_at: Option<Option<DateTime<Utc>>> = organization::Entity::find_by_id(id)
        .select_only()
        .column(organization::Column::DeletedAt)
        .into_tuple()
        .one(db)
        .await?;
    match deleted_at {
        Some(None) => Ok(()),
        _ => Err(Error::NotFound("organization")),
    }
}

/// Marks an organization deleted, once its slug is typed again: its jobs
/// stop, its tokens reach nothing, its records and key pair stay until
/// [`purge`] (after the grace period); [`undelete`] reverses it until then.
pub async fn delete(
    db: &impl ConnectionTrait,
    id: Uuid,
    query: &DeleteOrganizationQuery,
    now: DateTime<Utc>,
) -> Result<OrganizationView> {
    let model = organization::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or(Error::NotFound("organization"))?;
    if query.confirm.as_deref() != Some(model.slug.as_str()) {
        return Err(Error::invalid(
            "confirm",
            "must repeat the organization's slug: deleting stops its jobs and later purges its records",
        ));
    }
    if model.deleted_at.is_some() {
        return Err(Error::Conflict {
            field: None,
            message: "the organization is deleted already".into(),
        });
    }
    organization::Entity::update_many()
        .col_expr(
            organization::Column::DeletedAt,
            sea_orm::sea_query::Expr::value(now),
        )
        .filter(organization::Column::Id.eq(id))
        .exec(db)
        .await?;
    get(db, id).await
}

/// Reverses [`delete`] before the purge.
pub async fn undelete(db: &impl ConnectionTrait, id: Uuid) -> Result<OrganizationView> {
    let updated = organization::Entity::update_many()
        .col_expr(
            organization::Column::DeletedAt,
            sea_orm::sea_query::Expr::value(Option::<DateTime<Utc>>::None),
        )
        .filter(organization::Column::Id.eq(id))
        .filter(organization::Column::DeletedAt.is_not_null())
        .exec(db)
        .await?;
    if updated.rows_affected == 0 {
        get(db, id).await?;
        return Err(Error::Conflict {
            field: None,
            message: "the organization is not deleted".into(),
        });
    }
    get(db, id).await
}

/// Purges the organizations deleted before `deleted_before`: their records
/// go (the schema's cascades), their slugs are retired. Archives in storage
/// are left where they are. Returns how many were purged.
pub async fn purge(db: &impl TransactionTrait, deleted_before: DateTime<Utc>) -> Result<usize> {
    let txn = db.begin().await?;
    let expired = organization::Entity::find()
        .filter(organization::Column::DeletedAt.lt(deleted_before))
        .all(&txn)
        .await?;
    let mut purged = 0;
    for model in &expired {
        // Deleted only if still deleted long enough (an undelete may have
        // come in between), and the slug retired only then.
        let deleted = organization::Entity::delete_many()
            .filter(organization::Column::Id.eq(model.id))
            .filter(organization::Column::DeletedAt.lt(deleted_before))
            .exec(&txn)
            .await?;
        if deleted.rows_affected == 0 {
            continue;
        }
        purged += 1;
        retired_slug::Entity::insert(retired_slug::ActiveModel {
            slug: Set(model.slug.clone()),
            retired_at: Set(Utc::now()),
        })
        .on_conflict(
            sea_orm::sea_query::OnConflict::column(retired_slug::Column::Slug)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(&txn)
        .await?;
        tracing::warn!(organization_id = %model.id, slug = %model.slug, "purged a deleted organization (its archives stay in storage)");
    }
    txn.commit().await?;
    Ok(purged)
}
