//! The organization's other pages: verifications (and "Verify now" on a
//! backup), targets with "Test connection" and each check's result,
//! notification channels and their deliveries, and tokens (admins; a new
//! token is shown once).

use actix_web::{web, HttpRequest, HttpResponse};
use cairn_core::auth::{CreateTokenRequest, Role};
use cairn_core::notifications::DeliveryQuery;
use cairn_core::verifications::{VerificationQuery, VerifyRequest};
use cairn_core::Cairn;
use cairn_entity::enums::VerifyMode;
use chrono::Utc;
use maud::{html, Markup};
use serde::Deserialize;
use uuid::Uuid;

use super::{html, org_page, path_id};
use crate::console::layout;
use crate::console::session::{NoFields, Posted, Session};
use crate::console::ConsoleError;

/// `GET /ui/orgs/{orgId}/verifications`.
pub async fn verifications(
    request: HttpRequest,
    session: Session,
    cairn: web::Data<Cairn>,
) -> Result<HttpResponse, ConsoleError> {
    let org = org_page(
        &request,
        &session,
        &cairn,
        Role::Viewer,
        "list verifications",
    )
    .await?;
    let org_id = org.id;
    let page_of = cairn_core::verifications::list(
        &cairn,
        org_id,
        &VerificationQuery {
            limit: Some("50".into()),
            ..VerificationQuery::default()
        },
    )
    .await?;
    let live = page_of.items.iter().any(|v| v.finished_at.is_none());
    let url = format!("/ui/orgs/{org_id}/verifications");
    let body = html! {
        div #verifications hx-get=[live.then_some(url.as_str())] hx-trigger=[live.then_some("every 2s")] hx-select="#verifications" hx-swap="outerHTML" {
            @if page_of.items.is_empty() {
                p { "No verification yet. Verify a backup from its page, or give a job a verify schedule." }
            } @else {
                div.table-wrap {
                    table {
                        thead { tr { th scope="col" { "Backup" } th scope="col" { "App / volume" } th scope="col" { "Mode" } th scope="col" { "Status" } th scope="col" { "Checks" } th scope="col" { "Finished" } } }
                        tbody {
                            @for v in &page_of.items {
                                tr {
                                    td { a href=(format!("/ui/orgs/{org_id}/backups/{}", v.backup_id)) { code { (v.backup_id.to_string()[..8]) } } }
                                    td { (v.app_name) "/" (v.volume_name) }
                                    td { (v.mode.as_str()) }
                                    td { (layout::mark(v.status.as_str()))
                                        @if let Some(code) = &v.error_code { " " code { (code.as_str()) } } }
                                    td {
                                        @for check in &v.checks {
                                            span class=(if check.ok { "ok" } else { "bad" }) title=(check.detail) { (check.name) } " "
                                        }
                                    }
                                    td { (layout::maybe_time(v.finished_at)) }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(org.render("Verifications", &session, body))
}

#[derive(Deserialize)]
pub struct VerifyForm {
    #[serde(default)]
    mode: Option<String>,
}

/// `POST /ui/orgs/{orgId}/backups/{backupId}/verify` (operator).
pub async fn verify(
    request: HttpRequest,
    cairn: web::Data<Cairn>,
    posted: Posted<VerifyForm>,
) -> Result<HttpResponse, ConsoleError> {
    let org_id = path_id(&request, "orgId")?;
    let backup_id = path_id(&request, "backupId")?;
    posted
        .session
        .require(&cairn, org_id, Role::Operator, "verify a backup")
        .await?;
    let mode = match posted.form.mode.as_deref() {
        None | Some("") | Some("read") => VerifyMode::Read,
        Some("restore") => VerifyMode::Restore,
        Some(_) => {
            return Err(ConsoleError::Form("mode", "read or restore".to_owned()));
        }
    };
    cairn_core::verifications::request(
        &cairn,
        org_id,
        backup_id,
        &VerifyRequest {
            mode,
            target_id: None,
        },
        Utc::now(),
    )
    .await?;
    Ok(HttpResponse::SeeOther()
        .insert_header(("Location", format!("/ui/orgs/{org_id}/verifications")))
        .finish())
}

/// `GET /ui/orgs/{orgId}/targets`.
pub async fn targets(
    request: HttpRequest,
    session: Session,
    cairn: web::Data<Cairn>,
) -> Result<HttpResponse, ConsoleError> {
    let org = org_page(&request, &session, &cairn, Role::Viewer, "list targets").await?;
    let org_id = org.id;
    let (targets, _) = cairn_core::targets::list(
        &cairn,
        Some(org_id),
        &cairn_core::pages::Paging::everything(),
    )
    .await?;
    let operator = session.can(org_id, Role::Operator);
    let body = html! {
        @if targets.is_empty() {
            p { "The organization has no target of its own: its jobs write to the system's default target." }
        } @else {
            div.table-wrap {
                table #targets {
                    thead { tr { th scope="col" { "Target" } th scope="col" { "Type" } th scope="col" { "Default" } th scope="col" { "Connection" } } }
                    tbody {
                        @for target in &targets {
                            tr {
                                td { (target.name) }
                                td { (target.target_type.as_str()) }
                                td { @if target.is_default { "yes" } }
                                td #(format!("test-{}", target.id)) {
                                    @if operator {
                                        form method="post" action=(format!("/ui/orgs/{org_id}/targets/{}/test", target.id))
                                            hx-post=(format!("/ui/orgs/{org_id}/targets/{}/test", target.id))
                                            hx-target=(format!("#test-{}", target.id)) {
                                            (layout::csrf(&session))
                                            button type="submit" { "Test connection" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(org.render("Targets", &session, body))
}

/// `POST /ui/orgs/{orgId}/targets/{targetId}/test` (operator): writes,
/// reads, lists and deletes a probe, and shows each check.
pub async fn test_target(
    request: HttpRequest,
    cairn: web::Data<Cairn>,
    posted: Posted<NoFields>,
) -> Result<HttpResponse, ConsoleError> {
    let org_id = path_id(&request, "orgId")?;
    let target_id = path_id(&request, "targetId")?;
    let session = &posted.session;
    session
        .require(&cairn, org_id, Role::Operator, "test a target")
        .await?;
    let report = cairn_core::targets::test(&cairn, Some(org_id), target_id).await?;
    let result = html! {
        ul.checks data-ok=(report.ok) {
            @for check in &report.checks {
                li class=(if check.ok { "ok" } else { "bad" }) {
                    (layout::mark(if check.ok { "success" } else { "failed" })) " " (check.name)
                    @if let Some(error) = &check.error { ": " (error) }
                }
            }
        }
    };
    if request.headers().contains_key("HX-Request") {
        return Ok(html(result));
    }
    let org = org_page(&request, session, &cairn, Role::Operator, "test a target").await?;
    Ok(org.render("Connection test", session, result))
}

/// `GET /ui/orgs/{orgId}/notifications`: channels and recent deliveries.
pub async fn notifications(
    request: HttpRequest,
    session: Session,
    cairn: web::Data<Cairn>,
) -> Result<HttpResponse, ConsoleError> {
    let org = org_page(
        &request,
        &session,
        &cairn,
        Role::Viewer,
        "list notification channels",
    )
    .await?;
    let org_id = org.id;
    let (channels, _) = cairn_core::notifications::channels::list(
        &cairn,
        org_id,
        &cairn_core::pages::Paging::everything(),
    )
    .await?;
    let deliveries = cairn_core::notifications::list_deliveries(
        &cairn,
        org_id,
        &DeliveryQuery {
            limit: Some("50".into()),
            ..DeliveryQuery::default()
        },
    )
    .await?;
    let body = html! {
        h2 { "Channels" }
        @if channels.is_empty() {
            p { "No channel: failures reach no one. Add one through the API." }
        } @else {
            div.table-wrap {
                table {
                    thead { tr { th scope="col" { "Channel" } th scope="col" { "Type" } th scope="col" { "Enabled" } } }
                    tbody {
                        @for channel in &channels {
                            tr { td { (channel.name) } td { (channel.channel_type.as_str()) } td { @if channel.enabled { "yes" } @else { span.bad { "no" } } } }
                        }
                    }
                }
            }
        }
        h2 { "Deliveries" }
        @if deliveries.items.is_empty() {
            p { "Nothing sent yet." }
        } @else {
            div.table-wrap {
                table {
                    thead { tr { th scope="col" { "Event" } th scope="col" { "Channel" } th scope="col" { "Status" } th scope="col" { "Attempts" } th scope="col" { "Last error" } th scope="col" { "Created" } } }
                    tbody {
                        @for d in &deliveries.items {
                            tr {
                                td { code { (d.event.as_str()) } }
                                td { (d.channel_name) }
                                td { (layout::mark(d.status.as_str())) }
                                td.num { (d.attempts) }
                                td { @if let Some(error) = &d.last_error { (error) } }
                                td { (layout::time(d.created_at)) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(org.render("Notifications", &session, body))
}

fn tokens_body(
    session: &Session,
    org_id: Uuid,
    tokens: &[cairn_core::auth::TokenView],
    created: Option<&str>,
) -> Markup {
    html! {
        @if let Some(token) = created {
            section.created role="status" {
                p { "The new token — copy it now, it is not shown again:" }
                input #new-token type="text" readonly value=(token) aria-label="The new token";
            }
        }
        h2 { "New token" }
        form #new-token-form method="post" action=(format!("/ui/orgs/{org_id}/tokens")) {
            (layout::csrf(session))
            label for="token-name" { "Name" }
            input #token-name type="text" name="name" required maxlength="200";
            label for="token-role" { "Role" }
            select #token-role name="role" {
                option value="viewer" { "viewer" }
                option value="operator" { "operator" }
                option value="admin" { "admin" }
            }
            button type="submit" { "Create token" }
        }
        h2 { "Tokens" }
        div.table-wrap {
            table {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Role" } th scope="col" { "Prefix" } th scope="col" { "Created" } th scope="col" { "Last used" } } }
                tbody {
                    @for token in tokens {
                        tr { td { (token.name) } td { (token.role.as_str()) } td { code { (token.token_prefix) "…" } } td { (layout::time(token.created_at)) } td { (layout::maybe_time(token.last_used_at)) } }
                    }
                }
            }
        }
    }
}

/// `GET /ui/orgs/{orgId}/tokens` (admin).
pub async fn tokens(
    request: HttpRequest,
    session: Session,
    cairn: web::Data<Cairn>,
) -> Result<HttpResponse, ConsoleError> {
    let org = org_page(&request, &session, &cairn, Role::Admin, "list tokens").await?;
    let org_id = org.id;
    let (tokens, _) =
        cairn_core::auth::list_tokens(&cairn.db, org_id, &cairn_core::pages::Paging::everything())
            .await?;
    let body = tokens_body(&session, org_id, &tokens, None);
    Ok(org.render("Tokens", &session, body))
}

#[derive(Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
}

/// `POST /ui/orgs/{orgId}/tokens` (admin): the page again, with the new
/// token shown this once.
pub async fn create_token(
    request: HttpRequest,
    cairn: web::Data<Cairn>,
    posted: Posted<TokenForm>,
) -> Result<HttpResponse, ConsoleError> {
    let org_id = path_id(&request, "orgId")?;
    let session = &posted.session;
    session
        .require(&cairn, org_id, Role::Admin, "create a token")
        .await?;
    let role = Role::parse(&posted.form.role)
        .ok_or_else(|| ConsoleError::Form("role", "viewer, operator or admin".to_owned()))?;
    let created = cairn_core::auth::create_token(
        &cairn.db,
        Some(org_id),
        CreateTokenRequest {
            name: posted.form.name.clone(),
            role,
        },
        Utc::now(),
    )
    .await?;
    let org = org_page(&request, session, &cairn, Role::Admin, "create a token").await?;
    let (tokens, _) =
        cairn_core::auth::list_tokens(&cairn.db, org_id, &cairn_core::pages::Paging::everything())
            .await?;
    let body = tokens_body(session, org_id, &tokens, Some(&created.token));
    Ok(org.render("Tokens", session, body))
}
