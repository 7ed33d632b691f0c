//! `/ui/orgs/{orgId}/jobs/{jobId}`: a job's settings, its runs with their
//! backups (refreshed while one is running), a chart of archive size and
//! duration per backup drawn by the server, the retention preview, and
//! "Run now".

use actix_web::{web, HttpRequest, HttpResponse};
use cairn_core::auth::Role;
use cairn_core::history::{BackupView, HistoryQuery};
use cairn_core::jobs::JobView;
use cairn_core::runs::{RunPage, RunQuery};
use cairn_core::Cairn;
use cairn_entity::enums::RunStatus;
use chrono::Utc;
use maud::{html, Markup};
use uuid::Uuid;

use super::{html, org_page, path_id};
use crate::console::layout;
use crate::console::session::{NoFields, Posted, Session};
use crate::console::ConsoleError;

/// Runs shown on a job's page.
const RUNS_SHOWN: &str = "20";
/// Backups drawn in the chart.
const CHART_BACKUPS: &str = "30";

/// The runs table; while a run is running it asks htmx to fetch itself
/// again every two seconds, and stops once none is.
fn runs_fragment(org_id: Uuid, job_id: Uuid, page: &RunPage) -> Markup {
    let running = page
        .items
        .iter()
        .any(|run| run.status == RunStatus::Running);
    let url = format!("/ui/orgs/{org_id}/jobs/{job_id}/runs");
    html! {
        div #runs hx-get=[running.then_some(url.as_str())] hx-trigger=[running.then_some("every 2s")] hx-swap="outerHTML" data-running=(running) {
            @if page.items.is_empty() {
                p { "No run yet." }
            } @else {
                div.table-wrap {
                    table {
                        thead { tr { th scope="col" { "Slot" } th scope="col" { "Trigger" } th scope="col" { "Status" } th scope="col" { "Backups" } th scope="col" { "Reason" } } }
                        tbody {
                            @for run in &page.items {
                                tr data-run=(run.id) data-status=(run.status.as_str()) {
                                    td { (layout::time(run.scheduled_for)) }
                                    td { (run.trigger.as_str()) }
                                    td { (layout::mark(run.status.as_str())) }
                                    td {
                                        @for backup in &run.backups {
                                            a href=(format!("/ui/orgs/{org_id}/backups/{}", backup.id)) {
                                                (backup.app_name) "/" (backup.volume_name)
                                            }
                                            " " (layout::mark(backup.status.as_str())) br;
                                        }
                                    }
                                    td { @if let Some(reason) = &run.reason { (reason) } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Bars of archive size and duration per backup, oldest left, as SVG
/// (no script, no inline style: the CSP allows neither).
/// A backup in the chart: its size and how long it took (seconds).
type Point<'a> = (&'a BackupView, i64, i64);

fn chart(backups: &[BackupView]) -> Markup {
    let points: Vec<Point<'_>> = backups
        .iter()
        .rev()
        .filter_map(|b| {
            let size = b.archive_size?;
            let seconds = (b.finished_at? - b.started_at?).num_seconds().max(0);
            Some((b, size, seconds))
        })
        .collect();
    if points.is_empty() {
        return html! { p { "No finished backup to chart yet." } };
    }
    let max_size = points.iter().map(|p| p.1).max().unwrap_or(1).max(1) as f64;
    let max_seconds = points.iter().map(|p| p.2).max().unwrap_or(1).max(1) as f64;
    // Bars at most 20 units wide, however few backups there are.
    let (width, height) = (600.0, 120.0);
    let bar = (width / points.len() as f64).min(20.0);
    let panel = |label: &str, value: &dyn Fn(&Point<'_>) -> (f64, String)| {
        html! {
            figure.chart {
                figcaption { (label) }
                svg viewBox=(format!("0 0 {width} {height}")) width="100%" height="120" role="img" aria-label=(label) {
                    @for (i, point) in points.iter().enumerate() {
                        @let (fraction, text) = value(point);
                        @let h = (fraction * (height - 4.0)).max(1.0);
                        rect class=(format!("bar bar-{}", point.0.status.as_str()))
                            x=(format!("{:.1}", i as f64 * bar + 1.0)) y=(format!("{:.1}", height - h))
                            width=(format!("{:.1}", (bar - 2.0).max(1.0))) height=(format!("{h:.1}")) {
                            title { (point.0.created_at.format("%Y-%m-%d %H:%M UTC")) ": " (text) }
                        }
                    }
                }
            }
        }
    };
    html! {
        (panel("Archive size per backup", &|p| (p.1 as f64 / max_size, layout::bytes(p.1))))
        (panel("Duration per backup", &|p| (p.2 as f64 / max_seconds, layout::span(p.2))))
    }
}

fn settings(job: &JobView) -> Markup {
    let retention = if job.keep_all {
        "keep everything".to_owned()
    } else {
        [
            ("last", job.keep_last),
            ("hourly", job.keep_hourly),
            ("daily", job.keep_daily),
            ("weekly", job.keep_weekly),
            ("monthly", job.keep_monthly),
            ("yearly", job.keep_yearly),
        ]
        .iter()
        .filter_map(|(name, n)| n.map(|n| format!("{n} {name}")))
        .collect::<Vec<_>>()
        .join(", ")
    };
    html! {
        dl.settings {
            dt { "Schedule" } dd { code { (job.schedule) } " (" (job.timezone) ")" @if !job.enabled { " — disabled" } }
            dt { "Target" } dd { @if let Some(t) = job.target_id { code { (t) } } @else { "the organization's default" } }
            dt { "Copies" } dd { @if job.copy_target_ids.is_empty() { "none" } @else { @for t in &job.copy_target_ids { code { (t) } " " } } }
            dt { "Retention" } dd { (retention) }
            dt { "Compression, encryption" } dd { (job.compression.as_str()) ", " (job.encryption.as_str()) }
            dt { "Verification" } dd {
                @if let Some(schedule) = &job.verify_schedule { code { (schedule) } " (" (job.verify_mode.as_str()) ")" } @else { "not scheduled" }
            }
            dt { "RPO / RTO targets" } dd {
                (job.rpo_target_seconds.map(|s| layout::span(i64::from(s))).unwrap_or_else(|| "—".into()))
                " / "
                (job.rto_target_seconds.map(|s| layout::span(i64::from(s))).unwrap_or_else(|| "—".into()))
            }
            dt { "Notifications" } dd {
                @if job.notify_on_failure { "on failure" } @if job.notify_on_failure && job.notify_on_success { ", " } @if job.notify_on_success { "on success" }
                @if !job.notify_on_failure && !job.notify_on_success { "none" }
            }
        }
    }
}

/// `GET /ui/orgs/{orgId}/jobs/{jobId}`.
pub async fn job(
    request: HttpRequest,
    session: Session,
    cairn: web::Data<Cairn>,
) -> Result<HttpResponse, ConsoleError> {
    let org = org_page(&request, &session, &cairn, Role::Viewer, "view a job").await?;
    let org_id = org.id;
    let job_id = path_id(&request, "jobId")?;
    let now = Utc::now();
    let job = cairn_core::jobs::get(&cairn, org_id, job_id, now).await?;
    let runs = cairn_core::runs::list(
        &cairn,
        org_id,
        job_id,
        &RunQuery {
            limit: Some(RUNS_SHOWN.into()),
            cursor: None,
        },
    )
    .await?;
    let backups = cairn_core::history::list(
        &cairn,
        org_id,
        &HistoryQuery {
            job_id: Some(job_id.to_string()),
            limit: Some(CHART_BACKUPS.into()),
            ..HistoryQuery::default()
        },
    )
    .await?;
    let retention = cairn_core::jobs::retention(&cairn, org_id, job_id).await?;
    let body = html! {
        section.actions {
            @if session.can(org_id, Role::Operator) {
                form #run-now method="post" action=(format!("/ui/orgs/{org_id}/jobs/{job_id}/run"))
                    hx-post=(format!("/ui/orgs/{org_id}/jobs/{job_id}/run")) hx-target="#runs" hx-swap="outerHTML" {
                    (layout::csrf(&session))
                    button type="submit" { "Run now" }
                }
            }
            a href=(format!("/ui/orgs/{org_id}/history?jobId={job_id}")) { "All backups of this job" }
        }
        h2 { "Settings" }
        (settings(&job))
        h2 { "Runs" }
        (runs_fragment(org_id, job_id, &runs))
        h2 { "Archive size and duration" }
        (chart(&backups.items))
        h2 { "Retention preview" }
        p.help { "What the policy keeps now and what the next prune would delete." }
        @for series in &retention.series {
            h3 { (series.app_name) "/" (series.volume_name) }
            div.table-wrap {
                table.retention {
                    thead { tr { th scope="col" { "Backup" } th scope="col" { "Taken" } th scope="col" { "Verdict" } th scope="col" { "Why" } } }
                    tbody {
                        @for kept in &series.backups {
                            tr {
                                td { a href=(format!("/ui/orgs/{org_id}/backups/{}", kept.backup_id)) { code { (kept.backup_id.to_string()[..8]) } } }
                                td { (layout::time(kept.taken_at)) }
                                td { @if kept.keep { span.ok { "keep" } } @else { span.bad { "prune" } } }
                                td { (kept.reasons.iter().map(|r| format!("{r:?}").to_lowercase()).collect::<Vec<_>>().join(", ")) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(org.render(&format!("Job {}", job.name), &session, body))
}

async fn runs_page(cairn: &Cairn, org_id: Uuid, job_id: Uuid) -> Result<RunPage, ConsoleError> {
    Ok(cairn_core::runs::list(
        cairn,
        org_id,
        job_id,
        &RunQuery {
            limit: Some(RUNS_SHOWN.into()),
            cursor: None,
        },
    )
    .await?)
}

/// `GET /ui/orgs/{orgId}/jobs/{jobId}/runs`: the runs fragment.
pub async fn runs(
    request: HttpRequest,
    session: Session,
    cairn: web::Data<Cairn>,
) -> Result<HttpResponse, ConsoleError> {
    let org_id = path_id(&request, "orgId")?;
    let job_id = path_id(&request, "jobId")?;
    session
        .require(&cairn, org_id, Role::Viewer, "view a job's runs")
        .await?;
    let page = runs_page(&cairn, org_id, job_id).await?;
    Ok(html(runs_fragment(org_id, job_id, &page)))
}

/// `POST /ui/orgs/{orgId}/jobs/{jobId}/run`: a manual run (operator), as
/// `POST …/jobs/{jobId}/run`. htmx gets the runs fragment; a plain form
/// post goes back to the job.
pub async fn run_now(
    request: HttpRequest,
    cairn: web::Data<Cairn>,
    posted: Posted<NoFields>,
) -> Result<HttpResponse, ConsoleError> {
    let org_id = path_id(&request, "orgId")?;
    let job_id = path_id(&request, "jobId")?;
    posted
        .session
        .require(&cairn, org_id, Role::Operator, "run a job")
        .await?;
    let run = cairn_core::runs::start_manual(&cairn, org_id, job_id, Utc::now()).await?;
    tracing::info!(job_id = %job_id, run_id = %run.run_id, "a run was asked for from the console");
    if request.headers().contains_key("HX-Request") {
        let page = runs_page(&cairn, org_id, job_id).await?;
        return Ok(html(runs_fragment(org_id, job_id, &page)));
    }
    Ok(HttpResponse::SeeOther()
        .insert_header(("Location", format!("/ui/orgs/{org_id}/jobs/{job_id}")))
        .finish())
}
