//! Restoring from the console: the backup's preview (entries or tables),
//! the destination (its own volume, or another volume of the same kind),
//! the safety-backup choice, and a typed confirmation — the destination's
//! `app/volume`, since that is what will be replaced. Then the restore's
//! page follows it live until it ends, with a link to its safety backup.

use actix_web::{web, HttpRequest, HttpResponse};
use cairn_core::auth::Role;
use cairn_core::restores::preview::Contents;
use cairn_core::restores::{RestoreDetailView, RestoreInto, RestoreQuery, RestoreRequest};
use cairn_core::Cairn;
use cairn_entity::enums::{RestoreStatus, VolumeKind};
use chrono::Utc;
use maud::{html, Markup};
use serde::Deserialize;
use uuid::Uuid;

use super::history::log_table;
use super::{html, org_page, path_id};
use crate::console::layout;
use crate::console::session::{Posted, Session};
use crate::console::ConsoleError;

/// Entries of the preview shown.
const PREVIEW_ROWS: usize = 200;

/// The destination field's value for the backup's own volume.
const OWN_VOLUME: &str = "own";

/// Another volume the backup could be restored into: `(value, app/volume)`.
async fn other_volumes(
    cairn: &Cairn,
    org_id: Uuid,
    kind: Option<VolumeKind>,
    own: (Option<Uuid>, &str),
) -> Result<Vec<(String, String)>, ConsoleError> {
    let (apps, _) =
        cairn_core::apps::list(cairn, org_id, &cairn_core::pages::Paging::everything()).await?;
    Ok(apps
        .iter()
        .flat_map(|app| {
            app.volumes
                .iter()
                .filter(|v| v.persistent && v.detached_at.is_none())
                .filter(move |v| kind.is_none_or(|k| k == v.kind))
                .filter(move |v| !(Some(app.id) == own.0 && v.name == own.1))
                .map(move |v| {
                    (
                        format!("{}:{}", app.id, v.name),
                        format!("{}/{}", app.name, v.name),
                    )
                })
        })
        .collect())
}

/// `GET /ui/orgs/{orgId}/backups/{backupId}/restore`.
pub async fn restore_form(
    request: HttpRequest,
    session: Session,
    cairn: web::Data<Cairn>,
) -> Result<HttpResponse, ConsoleError> {
    let org = org_page(
        &request,
        &session,
        &cairn,
        Role::Operator,
        "restore a backup",
    )
    .await?;
    let org_id = org.id;
    let backup_id = path_id(&request, "backupId")?;
    let detail = cairn_core::history::get(&cairn, org_id, backup_id).await?;
    let b = &detail.backup;
    let preview = cairn_core::restores::preview::preview(&cairn, org_id, backup_id, None).await?;
    let others = other_volumes(&cairn, org_id, b.kind, (b.app_id, &b.volume_name)).await?;
    let own = format!("{}/{}", b.app_name, b.volume_name);
    let body = html! {
        dl.settings {
            dt { "Backup" } dd { a href=(format!("/ui/orgs/{org_id}/backups/{backup_id}")) { code { (backup_id) } } }
            dt { "Of" } dd { (own) ", " (layout::time(b.created_at)) }
            dt { "Restorable" } dd {
                @if preview.restorable { span.ok { "yes" } } @else { span.bad { "no: " (preview.reason.clone().unwrap_or_default()) } }
            }
        }
        h2 { "What it holds" }
        (contents(preview.contents.as_ref()))
        @if preview.restorable {
            h2 { "Restore" }
            form #restore-form method="post" action=(format!("/ui/orgs/{org_id}/backups/{backup_id}/restore")) {
                (layout::csrf(&session))
                label for="destination" { "Destination" }
                select #destination name="destination" {
                    option value=(OWN_VOLUME) selected { (own) " (its own volume)" }
                    @for (value, label) in &others { option value=(value) { (label) } }
                }
                div.check {
                    input #safety type="checkbox" name="safetyBackup" value="on" checked;
                    label for="safety" { "Back up the destination's current contents first (a safety backup)" }
                }
                div.check {
                    input #dry-run type="checkbox" name="dryRun" value="on";
                    label for="dry-run" { "Dry run: read and check everything, change nothing" }
                }
                label for="confirm" { "Type the destination's " code { "app/volume" } " to confirm (" code { (own) } " for its own volume)" }
                input #confirm type="text" name="confirm" autocomplete="off" required;
                p.help.bad { "A restore replaces everything the destination holds." }
                button.danger type="submit" { "Restore" }
            }
        }
    };
    Ok(org.render(&format!("Restore {own}"), &session, body))
}

fn contents(contents: Option<&Contents>) -> Markup {
    match contents {
        None => html! { p { "The contents could not be listed." } },
        Some(Contents::Tar(tar)) => html! {
            p {
                (tar.totals.files) " files, " (tar.totals.directories) " directories, "
                (tar.totals.symlinks) " symlinks, " (layout::bytes(tar.totals.bytes as i64))
            }
            div.table-wrap {
                table #preview {
                    thead { tr { th scope="col" { "Path" } th scope="col" { "Type" } th scope="col" { "Size" } th scope="col" { "Mode" } } }
                    tbody {
                        @for entry in tar.entries.iter().take(PREVIEW_ROWS) {
                            tr { td { code { (entry.path) } } td { (entry.entry_type) } td.num { (entry.size) } td { code { (entry.mode) } } }
                        }
                    }
                }
            }
            @if tar.truncated || tar.entries.len() > PREVIEW_ROWS { p.help { "Only the first entries are shown." } }
        },
        Some(Contents::PgDump(dump)) => html! {
            p { (dump.tables.len()) " tables" }
            ul #preview { @for table in &dump.tables { li { code { (table) } } } }
        },
        Some(Contents::MysqlDump(dump)) => html! {
            p { (dump.tables.len()) " tables, " (dump.tables.iter().map(|t| t.rows).sum::<u64>()) " rows, " (layout::bytes(dump.bytes as i64)) " of SQL" }
            div.table-wrap {
                table #preview {
                    thead { tr { th scope="col" { "Table" } th scope="col" { "Rows" } } }
                    tbody {
                        @for table in dump.tables.iter().take(PREVIEW_ROWS) {
                            tr { td { code { (table.name) } } td.num { (table.rows) } }
                        }
                    }
                }
            }
            @if dump.tables.len() > PREVIEW_ROWS { p.help { "Only the first tables are shown." } }
        },
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreForm {
    #[serde(default)]
    destination: String,
    #[serde(default)]
    safety_backup: Option<String>,
    #[serde(default)]
    dry_run: Option<String>,
    #[serde(default)]
    confirm: String,
}

/// `POST /ui/orgs/{orgId}/backups/{backupId}/restore`: checks the typed
/// confirmation against the destination, then asks for the restore as the
/// API does (`confirm` is the backup's id there).
pub async fn restore(
    request: HttpRequest,
    cairn: web::Data<Cairn>,
    posted: Posted<RestoreForm>,
) -> Result<HttpResponse, ConsoleError> {
    let org_id = path_id(&request, "orgId")?;
    let backup_id = path_id(&request, "backupId")?;
    let session = &posted.session;
    session
        .require(&cairn, org_id, Role::Operator, "restore a backup")
        .await?;
    let form = &posted.form;
    let detail = cairn_core::history::get(&cairn, org_id, backup_id).await?;
    let b = &detail.backup;
    let (into, expected) = if form.destination.is_empty() || form.destination == OWN_VOLUME {
        (None, format!("{}/{}", b.app_name, b.volume_name))
    } else {
        let others = other_volumes(&cairn, org_id, b.kind, (b.app_id, &b.volume_name)).await?;
        let (_, label) = others
            .iter()
            .find(|(value, _)| *value == form.destination)
            .ok_or_else(|| {
                ConsoleError::Form(
                    "destination",
                    "not a volume of this organization".to_owned(),
                )
            })?;
        let (app, volume) = form
            .destination
            .split_once(':')
            .expect("values are app:volume");
        let app_id = Uuid::parse_str(app).map_err(|_| {
            ConsoleError::Form(
                "destination",
                "not a volume of this organization".to_owned(),
            )
        })?;
        (
            Some(RestoreInto {
                app_id,
                volume_name: volume.to_owned(),
            }),
            label.clone(),
        )
    };
    if form.confirm.trim() != expected {
        return Err(ConsoleError::Form(
            "confirm",
            format!("type {expected} exactly to confirm; nothing was restored"),
        ));
    }
    let restore = cairn_core::restores::request(
        &cairn,
        org_id,
        backup_id,
        &RestoreRequest {
            confirm: Some(backup_id.to_string()),
            into,
            safety_backup: form.safety_backup.is_some(),
            dry_run: form.dry_run.is_some(),
            target_id: None,
        },
        Utc::now(),
    )
    .await?;
    tracing::info!(restore_id = %restore.id, backup_id = %backup_id, "a restore was asked for from the console");
    Ok(HttpResponse::SeeOther()
        .insert_header((
            "Location",
            format!("/ui/orgs/{org_id}/restores/{}", restore.id),
        ))
        .finish())
}

/// The restore's state and log; polls itself every second until it ends.
fn progress_fragment(org_id: Uuid, detail: &RestoreDetailView) -> Markup {
    let r = &detail.restore;
    let live = matches!(r.status, RestoreStatus::Pending | RestoreStatus::Running);
    let url = format!("/ui/orgs/{org_id}/restores/{}/progress", r.id);
    html! {
        div #progress hx-get=[live.then_some(url.as_str())] hx-trigger=[live.then_some("every 1s")] hx-swap="outerHTML" data-status=(r.status.as_str()) {
            dl.settings {
                dt { "Status" } dd #restore-status { (layout::mark(r.status.as_str())) @if r.dry_run { " (dry run)" } }
                dt { "Into" } dd { (r.app_name) "/" (r.volume_name) }
                dt { "Safety backup" } dd {
                    @if let Some(safety) = r.safety_backup_id {
                        a #safety-backup href=(format!("/ui/orgs/{org_id}/backups/{safety}")) { "the safety backup" }
                    } @else if r.safety_backup { "being taken" } @else { "none asked for" }
                }
                @if let Some(code) = &r.error_code { dt { "Error" } dd.bad { code { (code.as_str()) } ": " (r.error_message.clone().unwrap_or_default()) } }
                dt { "Started / finished" } dd { (layout::maybe_time(r.started_at)) " / " (layout::maybe_time(r.finished_at)) }
            }
            h2 { "Log" }
            (log_table(&detail.log))
        }
    }
}

/// `GET /ui/orgs/{orgId}/restores/{restoreId}`.
pub async fn restore_page(
    request: HttpRequest,
    session: Session,
    cairn: web::Data<Cairn>,
) -> Result<HttpResponse, ConsoleError> {
    let org = org_page(&request, &session, &cairn, Role::Viewer, "view a restore").await?;
    let org_id = org.id;
    let restore_id = path_id(&request, "restoreId")?;
    let detail = cairn_core::restores::get(&cairn, org_id, restore_id).await?;
    let body = html! {
        p { "Of backup " a href=(format!("/ui/orgs/{org_id}/backups/{}", detail.restore.backup_id)) { code { (detail.restore.backup_id) } } }
        (progress_fragment(org_id, &detail))
    };
    Ok(org.render("Restore", &session, body))
}

/// `GET /ui/orgs/{orgId}/restores/{restoreId}/progress`: the fragment.
pub async fn progress(
    request: HttpRequest,
    session: Session,
    cairn: web::Data<Cairn>,
) -> Result<HttpResponse, ConsoleError> {
    let org_id = path_id(&request, "orgId")?;
    let restore_id = path_id(&request, "restoreId")?;
    session
        .require(&cairn, org_id, Role::Viewer, "view a restore")
        .await?;
    let detail = cairn_core::restores::get(&cairn, org_id, restore_id).await?;
    Ok(html(progress_fragment(org_id, &detail)))
}

/// `GET /ui/orgs/{orgId}/restores`.
pub async fn list(
    request: HttpRequest,
    session: Session,
    cairn: web::Data<Cairn>,
) -> Result<HttpResponse, ConsoleError> {
    let org = org_page(&request, &session, &cairn, Role::Viewer, "list restores").await?;
    let org_id = org.id;
    let page = cairn_core::restores::list(
        &cairn,
        org_id,
        &RestoreQuery {
            limit: Some("50".into()),
            ..RestoreQuery::default()
        },
    )
    .await?;
    let body = html! {
        @if page.items.is_empty() {
            p { "No restore yet. Restore from a backup's page (History)." }
        } @else {
            div.table-wrap {
                table {
                    thead { tr { th scope="col" { "Restore" } th scope="col" { "Into" } th scope="col" { "Status" } th scope="col" { "Asked for" } th scope="col" { "Finished" } } }
                    tbody {
                        @for r in &page.items {
                            tr {
                                td { a href=(format!("/ui/orgs/{org_id}/restores/{}", r.id)) { code { (r.id.to_string()[..8]) } } }
                                td { (r.app_name) "/" (r.volume_name) }
                                td { (layout::mark(r.status.as_str())) @if r.dry_run { " (dry run)" } }
                                td { (layout::time(r.created_at)) }
                                td { (layout::maybe_time(r.finished_at)) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(org.render("Restores", &session, body))
}
