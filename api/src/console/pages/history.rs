//! `/ui/orgs/{orgId}/history` (filters: job, app, status, dates; pages by
//! cursor) and a backup's page: summary, copies, manifest, log, and its
//! actions (download, restore, verify) for the roles that may use them.

use actix_web::{web, HttpRequest, HttpResponse};
use cairn_core::auth::Role;
use cairn_core::history::HistoryQuery;
use cairn_core::Cairn;
use cairn_entity::enums::BackupStatus;
use chrono::{NaiveDate, Utc};
use maud::html;
use serde::Deserialize;

use super::{org_page, path_id};
use crate::console::layout;
use crate::console::session::Session;
use crate::console::ConsoleError;

/// The filter form, as the browser sends it (empty fields are "any").
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Filters {
    #[serde(default)]
    job_id: String,
    #[serde(default)]
    app_id: String,
    #[serde(default)]
    status: String,
    /// `YYYY-MM-DD`, from the start of that day (UTC).
    #[serde(default)]
    from: String,
    /// `YYYY-MM-DD`, to the end of that day (UTC).
    #[serde(default)]
    to: String,
    #[serde(default)]
    cursor: String,
}

fn some(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// A date of the form as the API's RFC 3339 bound; `days` after it.
fn day_bound(field: &'static str, text: &str, days: i64) -> Result<Option<String>, ConsoleError> {
    let Some(text) = some(text) else {
        return Ok(None);
    };
    let day = NaiveDate::parse_from_str(&text, "%Y-%m-%d")
        .map_err(|_| ConsoleError::Form(field, "a date as YYYY-MM-DD".to_owned()))?;
    let at = (day + chrono::Duration::days(days))
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc();
    Ok(Some(at.to_rfc3339()))
}

/// `GET /ui/orgs/{orgId}/history`.
pub async fn history(
    request: HttpRequest,
    session: Session,
    cairn: web::Data<Cairn>,
    filters: web::Query<Filters>,
) -> Result<HttpResponse, ConsoleError> {
    let org = org_page(&request, &session, &cairn, Role::Viewer, "view history").await?;
    let org_id = org.id;
    let query = HistoryQuery {
        job_id: some(&filters.job_id),
        app_id: some(&filters.app_id),
        status: some(&filters.status),
        from: day_bound("from", &filters.from, 0)?,
        to: day_bound("to", &filters.to, 1)?,
        limit: Some("50".into()),
        cursor: some(&filters.cursor),
    };
    let page = cairn_core::history::list(&cairn, org_id, &query).await?;
    let everything = cairn_core::pages::Paging::everything();
    let (jobs, _) = cairn_core::jobs::list(&cairn, org_id, &everything, Utc::now()).await?;
    let (apps, _) = cairn_core::apps::list(&cairn, org_id, &everything).await?;
    let next = page.next_cursor.as_ref().map(|cursor| {
        let mut pairs = vec![
            ("jobId", filters.job_id.as_str()),
            ("appId", filters.app_id.as_str()),
            ("status", filters.status.as_str()),
            ("from", filters.from.as_str()),
            ("to", filters.to.as_str()),
        ];
        pairs.push(("cursor", cursor.as_str()));
        format!(
            "/ui/orgs/{org_id}/history?{}",
            serde_urlencoded::to_string(pairs).unwrap_or_default()
        )
    });
    let body = html! {
        form.filters method="get" action=(format!("/ui/orgs/{org_id}/history")) {
            label { "Job "
                select name="jobId" {
                    option value="" { "any" }
                    @for job in &jobs { option value=(job.id) selected[filters.job_id == job.id.to_string()] { (job.name) } }
                }
            }
            label { "App "
                select name="appId" {
                    option value="" { "any" }
                    @for app in &apps { option value=(app.id) selected[filters.app_id == app.id.to_string()] { (app.name) } }
                }
            }
            label { "Status "
                select name="status" {
                    option value="" { "any" }
                    @for status in BackupStatus::ALL { option value=(status.as_str()) selected[filters.status == status.as_str()] { (status.as_str()) } }
                }
            }
            label { "From " input type="date" name="from" value=(filters.from); }
            label { "To " input type="date" name="to" value=(filters.to); }
            button type="submit" { "Filter" }
        }
        @if page.items.is_empty() {
            p { "No backup matches." }
        } @else {
            div.table-wrap {
                table #history {
                    thead { tr { th scope="col" { "Backup" } th scope="col" { "App / volume" } th scope="col" { "Status" } th scope="col" { "Trigger" } th scope="col" { "Size" } th scope="col" { "Created" } th scope="col" { "Copies" } } }
                    tbody {
                        @for backup in &page.items {
                            tr data-backup=(backup.id) {
                                td { a href=(format!("/ui/orgs/{org_id}/backups/{}", backup.id)) { code { (backup.id.to_string()[..8]) } } }
                                td { (backup.app_name) "/" (backup.volume_name) }
                                td { (layout::mark(backup.status.as_str())) @if backup.suspicious { " " span.badge.bad { "suspicious" } } }
                                td { (backup.trigger.as_str()) }
                                td.num { @if let Some(size) = backup.archive_size { (layout::bytes(size)) } }
                                td { (layout::time(backup.created_at)) }
                                td { @for copy in &backup.copies { (copy.target_name) " " (layout::mark(copy.status.as_str())) " " } }
                            }
                        }
                    }
                }
            }
            @if let Some(next) = next { p { a href=(next) { "Next page" } } }
        }
    };
    Ok(org.render("History", &session, body))
}

/// `GET /ui/orgs/{orgId}/backups/{backupId}`.
pub async fn backup(
    request: HttpRequest,
    session: Session,
    cairn: web::Data<Cairn>,
) -> Result<HttpResponse, ConsoleError> {
    let org = org_page(&request, &session, &cairn, Role::Viewer, "view a backup").await?;
    let org_id = org.id;
    let backup_id = path_id(&request, "backupId")?;
    let detail = cairn_core::history::get(&cairn, org_id, backup_id).await?;
    let b = &detail.backup;
    let manifest = detail
        .manifest
        .as_ref()
        .and_then(|m| serde_json::to_string_pretty(m).ok());
    let restorable = b.status == BackupStatus::Success;
    let body = html! {
        section.actions {
            @if restorable {
                a.button href=(format!("/ui/orgs/{org_id}/backups/{backup_id}/download")) download { "Download" }
                @if session.can(org_id, Role::Operator) {
                    a.button #restore-link href=(format!("/ui/orgs/{org_id}/backups/{backup_id}/restore")) { "Restore…" }
                    form method="post" action=(format!("/ui/orgs/{org_id}/backups/{backup_id}/verify")) {
                        (layout::csrf(&session))
                        button type="submit" { "Verify now" }
                    }
                }
            }
        }
        dl.settings {
            dt { "App / volume" } dd { (b.app_name) "/" (b.volume_name) }
            dt { "Status" } dd #backup-status { (layout::mark(b.status.as_str())) }
            @if let Some(code) = &b.error_code { dt { "Error" } dd.bad { code { (code.as_str()) } ": " (b.error_message.clone().unwrap_or_default()) } }
            @if b.suspicious { dt { "Suspicious" } dd.bad { (b.suspicious_reason.clone().unwrap_or_default()) } }
            dt { "Trigger" } dd { (b.trigger.as_str()) }
            dt { "Created" } dd { (layout::time(b.created_at)) }
            dt { "Started / finished" } dd { (layout::maybe_time(b.started_at)) " / " (layout::maybe_time(b.finished_at)) }
            dt { "Size" } dd { @if let Some(size) = b.archive_size { (layout::bytes(size)) } }
            dt { "Path" } dd { @if let Some(path) = &b.storage_path { code { (path) } } }
            dt { "SHA-256" } dd { @if let Some(sha) = &b.sha256 { code.hash { (sha) } } }
            @if let Some(job) = b.job_id { dt { "Job" } dd { a href=(format!("/ui/orgs/{org_id}/jobs/{job}")) { "the job" } } }
        }
        h2 { "Copies" }
        @if b.copies.is_empty() {
            p { "This backup has no copy on another target." }
        } @else {
            div.table-wrap {
                table #copies {
                    thead { tr { th scope="col" { "Target" } th scope="col" { "Status" } th scope="col" { "Attempts" } th scope="col" { "Finished" } th scope="col" { "Error" } } }
                    tbody {
                        @for copy in &b.copies {
                            tr {
                                td { (copy.target_name) }
                                td { (layout::mark(copy.status.as_str())) }
                                td.num { (copy.attempts) }
                                td { (layout::maybe_time(copy.finished_at)) }
                                td { @if let Some(error) = &copy.error { code { (error.code.as_str()) } ": " (error.message) } }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Log" }
        (log_table(&detail.log))
        h2 { "Manifest" }
        @if let Some(manifest) = manifest { pre.manifest { (manifest) } } @else { p { "No manifest recorded." } }
    };
    Ok(org.render(
        &format!("Backup {}", &backup_id.to_string()[..8]),
        &session,
        body,
    ))
}

/// A timestamped log (backups, restores).
pub fn log_table(log: &[cairn_core::history::LogLine]) -> maud::Markup {
    html! {
        @if log.is_empty() {
            p { "Nothing logged yet." }
        } @else {
            div.table-wrap {
                table.log {
                    thead { tr { th scope="col" { "Time" } th scope="col" { "Level" } th scope="col" { "Message" } } }
                    tbody {
                        @for line in log {
                            tr class=(format!("level-{}", line.level)) {
                                td { (layout::time(line.at)) }
                                td { (line.level) }
                                td { (line.message) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /ui/orgs/{orgId}/backups/{backupId}/download`: the archive, from
/// the primary (else a copy), as the API's download; an S3-family target
/// answers with a redirect to a pre-signed URL.
pub async fn download(
    request: HttpRequest,
    session: Session,
    cairn: web::Data<Cairn>,
) -> Result<HttpResponse, ConsoleError> {
    let org_id = path_id(&request, "orgId")?;
    let backup_id = path_id(&request, "backupId")?;
    session
        .require(&cairn, org_id, Role::Viewer, "download a backup")
        .await?;
    let download =
        cairn_core::history::download(&cairn, org_id, backup_id, Utc::now(), None).await?;
    Ok(crate::routes::history::download_response(download, true))
}
