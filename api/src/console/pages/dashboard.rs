//! `/ui/` (the organizations of a system administrator, or straight to the
//! token's organization) and `/ui/orgs/{orgId}`: one row per job, failing
//! and overdue first, with a 30-day strip of its runs.

use std::collections::HashMap;

use actix_web::{web, HttpRequest, HttpResponse};
use cairn_core::auth::Role;
use cairn_core::jobs::JobView;
use cairn_core::runs::DayOutcome;
use cairn_core::Cairn;
use cairn_entity::enums::RunStatus;
use chrono::{Duration, Utc};
use maud::{html, Markup};

use super::{html, org_page};
use crate::console::layout;
use crate::console::session::Session;
use crate::console::ConsoleError;

/// Days in the strip of runs.
const STRIP_DAYS: i64 = 30;

/// `GET /ui/`.
pub async fn home(session: Session, cairn: web::Data<Cairn>) -> Result<HttpResponse, ConsoleError> {
    if let Some(org) = session.principal.organization_id {
        return Ok(HttpResponse::SeeOther()
            .insert_header(("Location", format!("/ui/orgs/{org}")))
            .finish());
    }
    let (orgs, _) = cairn_core::orgs::list(
        &cairn.db,
        &session.principal,
        &cairn_core::pages::Paging::everything(),
    )
    .await?;
    Ok(html(layout::page(
        "Organizations",
        &session,
        None,
        html! {
            @if orgs.is_empty() {
                p { "No organization yet: create one through the API (" code { "POST /api/v1/organizations" } ")." }
            } @else {
                table {
                    thead { tr { th scope="col" { "Organization" } th scope="col" { "Slug" } th scope="col" { "State" } } }
                    tbody {
                        @for org in &orgs {
                            tr {
                                td { a href=(format!("/ui/orgs/{}", org.id)) { (org.name) } }
                                td { code { (org.slug) } }
                                td { @if org.deleted_at.is_some() { "deleted" } @else { "active" } }
                            }
                        }
                    }
                }
            }
        },
    )))
}

/// How a job reads at a glance, worst first.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Health {
    Failing,
    Overdue,
    Unverified,
    Healthy,
    NeverRun,
    Disabled,
}

fn health_of(job: &JobView) -> Health {
    if !job.enabled {
        Health::Disabled
    } else if job.consecutive_failures > 0 {
        Health::Failing
    } else if job.overdue {
        Health::Overdue
    } else if job.last_success_at.is_none() {
        Health::NeverRun
    } else if job.rpo_met == Some(false) {
        Health::Unverified
    } else {
        Health::Healthy
    }
}

fn health_mark(health: Health) -> Markup {
    let (class, word) = match health {
        Health::Failing => ("failed", "failing"),
        Health::Overdue => ("missed", "overdue"),
        Health::Unverified => ("partial", "RPO missed"),
        Health::Healthy => ("success", "healthy"),
        Health::NeverRun => ("pending", "no backup yet"),
        Health::Disabled => ("skipped", "disabled"),
    };
    html! {
        span class=(format!("mark mark-{class}")) data-health=(word) { (word) }
    }
}

/// The worst state of a day's runs: what the strip's cell shows.
fn worst(statuses: &[(RunStatus, i64)]) -> Option<RunStatus> {
    const ORDER: [RunStatus; 6] = [
        RunStatus::Failed,
        RunStatus::Missed,
        RunStatus::Partial,
        RunStatus::Skipped,
        RunStatus::Running,
        RunStatus::Success,
    ];
    ORDER
        .into_iter()
        .find(|wanted| statuses.iter().any(|(s, n)| s == wanted && *n > 0))
}

fn strip(days: &[String], outcomes: Option<&HashMap<String, Vec<(RunStatus, i64)>>>) -> Markup {
    html! {
        span.strip role="img" aria-label="Runs of the last 30 days, oldest first" {
            @for day in days {
                @let statuses = outcomes.and_then(|o| o.get(day)).cloned().unwrap_or_default();
                @let class = worst(&statuses).map(|s| s.as_str()).unwrap_or("none");
                @let title = if statuses.is_empty() {
                    format!("{day}: no run")
                } else {
                    format!("{day}: {}", statuses.iter().map(|(s, n)| format!("{n} {}", s.as_str())).collect::<Vec<_>>().join(", "))
                };
                span class=(format!("day day-{class}")) title=(title) {}
            }
        }
    }
}

/// `GET /ui/orgs/{orgId}`.
pub async fn dashboard(
    request: HttpRequest,
    session: Session,
    cairn: web::Data<Cairn>,
) -> Result<HttpResponse, ConsoleError> {
    let org = org_page(
        &request,
        &session,
        &cairn,
        Role::Viewer,
        "view the dashboard",
    )
    .await?;
    let org_id = org.id;
    let now = Utc::now();
    let (mut jobs, _) = cairn_core::jobs::list(
        &cairn,
        org_id,
        &cairn_core::pages::Paging::everything(),
        now,
    )
    .await?;
    jobs.sort_by(|a, b| {
        health_of(a)
            .cmp(&health_of(b))
            .then(b.consecutive_failures.cmp(&a.consecutive_failures))
            .then(a.name.cmp(&b.name))
    });
    let since = (now - Duration::days(STRIP_DAYS - 1)).date_naive();
    let days: Vec<String> = (0..STRIP_DAYS)
        .map(|i| (since + Duration::days(i)).format("%Y-%m-%d").to_string())
        .collect();
    let start = since
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc();
    let mut by_job: HashMap<uuid::Uuid, HashMap<String, Vec<(RunStatus, i64)>>> = HashMap::new();
    let mut totals: HashMap<RunStatus, i64> = HashMap::new();
    for DayOutcome {
        job_id,
        day,
        status,
        count,
    } in cairn_core::runs::daily_outcomes(&cairn, org_id, start).await?
    {
        *totals.entry(status).or_default() += count;
        by_job
            .entry(job_id)
            .or_default()
            .entry(day)
            .or_default()
            .push((status, count));
    }
    let failing = jobs
        .iter()
        .filter(|j| health_of(j) == Health::Failing)
        .count();
    let overdue = jobs
        .iter()
        .filter(|j| health_of(j) == Health::Overdue)
        .count();
    let body = html! {
        section.totals aria-label="Totals" {
            div.total { span.figure { (jobs.len()) } " jobs" }
            div.total.bad[failing > 0] { span.figure #failing-jobs { (failing) } " failing" }
            div.total.bad[overdue > 0] { span.figure { (overdue) } " overdue" }
            @for status in [RunStatus::Success, RunStatus::Partial, RunStatus::Failed, RunStatus::Skipped, RunStatus::Missed] {
                div.total { span.figure { (totals.get(&status).copied().unwrap_or(0)) } " " (status.as_str()) " runs in 30 days" }
            }
        }
        @if jobs.is_empty() {
            p { "No backup job yet. Jobs are created when an app is deployed, or through the API." }
        } @else {
            div.table-wrap {
                table #jobs {
                    thead {
                        tr {
                            th scope="col" { "Health" }
                            th scope="col" { "Job" }
                            th scope="col" { "Last success" }
                            th scope="col" { "Next run" }
                            th scope="col" { "Failures in a row" }
                            th scope="col" { "RPO" }
                            th scope="col" { "Last verification" }
                            th scope="col" { "Last 30 days" }
                        }
                    }
                    tbody {
                        @for job in &jobs {
                            tr data-job=(job.id) {
                                td { (health_mark(health_of(job))) }
                                td { a href=(format!("/ui/orgs/{org_id}/jobs/{}", job.id)) { (job.name) } }
                                td { (layout::maybe_ago(job.last_success_at, now)) }
                                td {
                                    @if let Some(next) = job.next_run_at { (layout::ago(next, now)) } @else { span.none { "—" } }
                                    @if job.overdue { " " span.badge.bad { "overdue" } }
                                    @if let Some(error) = &job.schedule_error { " " span.badge.bad title=(error) { "schedule unreadable" } }
                                }
                                td.num { (job.consecutive_failures) }
                                td {
                                    @match (job.rpo_seconds, job.rpo_target_seconds) {
                                        (Some(rpo), Some(target)) => {
                                            span class=(if job.rpo_met == Some(true) { "ok" } else { "bad" }) { (layout::span(rpo)) " / " (layout::span(i64::from(target))) }
                                        }
                                        (Some(rpo), None) => { (layout::span(rpo)) }
                                        (None, Some(target)) => { span.bad { "none verified / " (layout::span(i64::from(target))) } }
                                        (None, None) => { span.none { "—" } }
                                    }
                                }
                                td {
                                    @if let Some(last) = &job.last_verification {
                                        (layout::mark(last.status.as_str())) " " span.detail { (last.mode.as_str()) } " " (layout::maybe_ago(job.last_verified_at, now))
                                    } @else { span.none { "never" } }
                                }
                                td { (strip(&days, by_job.get(&job.id))) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(org.render("Dashboard", &session, body))
}
