//! Paging of the lists that are not history (organizations, tokens,
//! targets, apps, jobs, channels): `limit` (1–200, default 50) and
//! `cursor`, the `nextCursor` of the previous page, exactly as history
//! takes them. These lists keep their order (by name, slug or id); the
//! cursor is the last item's key in that order, so a page never repeats or
//! skips an item that existed when the first page was read.

use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::{Result, Validator};

/// Cursors are keys: names and slugs are at most a few hundred bytes.
const MAX_CURSOR: usize = 1024;

/// What every list takes.
#[derive(Clone, Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size, 1–200 (default 50).
    #[param(value_type = Option<u64>)]
    pub limit: Option<String>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

/// A checked [`PageQuery`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paging {
    pub limit: u64,
    pub after: Option<String>,
}

impl Paging {
    /// Everything, for the console's pages, which show whole lists.
    pub fn everything() -> Paging {
        Paging {
            limit: 100_000,
            after: None,
        }
    }

    /// The query, checked: `422` on `limit` or `cursor`.
    pub fn of(query: &PageQuery) -> Result<Paging> {
        let mut v = Validator::new();
        let limit = crate::history::page_limit(&mut v, query.limit.as_deref());
        if let Some(cursor) = &query.cursor {
            v.check(
                !cursor.is_empty() && cursor.len() <= MAX_CURSOR,
                "cursor",
                "must be the nextCursor of a previous page",
            );
        }
        v.finish()?;
        Ok(Paging {
            limit,
            after: query.cursor.clone(),
        })
    }
}

/// One page of `select` in ascending order of the unique `column`, after
/// the cursor; the cursor of the next page when there is one. `key` is
/// the column's value of a row, as text; `value` turns a cursor back into
/// a value of the column (`None`: not a cursor this list made, `422`).
pub(crate) async fn page<E: EntityTrait>(
    db: &impl ConnectionTrait,
    select: sea_orm::Select<E>,
    column: E::Column,
    paging: &Paging,
    key: impl Fn(&E::Model) -> String,
    value: impl Fn(&str) -> Option<sea_orm::Value>,
) -> Result<(Vec<E::Model>, Option<String>)> {
    let select = match &paging.after {
        Some(after) => {
            let Some(after) = value(after) else {
                let mut v = Validator::new();
                v.add("cursor", "must be the nextCursor of a previous page");
                // An error was added: this is the `422`.
                return v.finish().map(|()| (Vec::new(), None));
            };
            select.filter(column.gt(after))
        }
        None => select,
    };
    let mut rows = select
        .order_by_asc(column)
        .limit(paging.limit + 1)
        .all(db)
        .await?;
    let next = if rows.len() as u64 > paging.limit {
        rows.truncate(paging.limit as usize);
        rows.last().map(&key)
    } else {
        None
    };
    Ok((rows, next))
}

/// A text key's cursor value.
pub(crate) fn text(cursor: &str) -> Option<sea_orm::Value> {
    Some(cursor.to_owned().into())
}

/// A UUID key's cursor value.
pub(crate) fn uuid(cursor: &str) -> Option<sea_orm::Value> {
    uuid::Uuid::parse_str(cursor).ok().map(Into::into)
}
