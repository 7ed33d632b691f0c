//! The page shell and the small pieces every page uses: times (UTC in the
//! markup, turned into the browser's time zone by `console.js`, UTC kept
//! on hover), "3 h ago", sizes, durations, status marks and the CSRF field.

use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};
use uuid::Uuid;

use super::session::{Session, CSRF_FIELD};

/// htmx's settings: no inline styles (the CSP refuses them), no eval, no
/// scripts from swapped content.
const HTMX_CONFIG: &str = r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false,"historyCacheSize":0}"#;

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="htmx-config" content=(HTMX_CONFIG);
            title { (title) " · Cairn" }
            link rel="stylesheet" href="/ui/assets/console.css";
            script src="/ui/assets/htmx-2.0.2.min.js" defer {}
            script src="/ui/assets/console.js" defer {}
        }
    }
}

/// A page without navigation (sign-in, errors).
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                main #main { (body) }
            }
        }
    }
}

/// The organization a page belongs to, for its navigation.
pub struct OrgNav<'a> {
    pub id: Uuid,
    pub name: &'a str,
}

/// A page of the console: navigation for the session, the alert area
/// (where `console.js` shows the problem of a failed htmx request), then
/// `body`.
pub fn page(title: &str, session: &Session, org: Option<OrgNav<'_>>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header.top {
                    nav aria-label="Main" {
                        a.brand href="/ui/" { "Cairn" }
                        @if let Some(org) = &org {
                            span.org { (org.name) }
                            a href=(format!("/ui/orgs/{}", org.id)) { "Dashboard" }
                            a href=(format!("/ui/orgs/{}/history", org.id)) { "History" }
                            a href=(format!("/ui/orgs/{}/restores", org.id)) { "Restores" }
                            a href=(format!("/ui/orgs/{}/verifications", org.id)) { "Verifications" }
                            a href=(format!("/ui/orgs/{}/targets", org.id)) { "Targets" }
                            a href=(format!("/ui/orgs/{}/notifications", org.id)) { "Notifications" }
                            @if session.can(org.id, cairn_core::auth::Role::Admin) {
                                a href=(format!("/ui/orgs/{}/tokens", org.id)) { "Tokens" }
                            }
                        }
                        @if session.principal.is_system_admin() {
                            a href="/ui/" { "Organizations" }
                        }
                        form.sign-out method="post" action="/ui/sign-out" {
                            (csrf(session))
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                div #alerts role="alert" aria-live="assertive" {}
                main #main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// The hidden CSRF field of a state-changing form.
pub fn csrf(session: &Session) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(session.csrf); }
}

/// A time: UTC in the markup and on hover; `console.js` shows it in the
/// browser's time zone.
pub fn time(at: DateTime<Utc>) -> Markup {
    let utc = at.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    html! {
        time datetime=(at.to_rfc3339()) title=(utc) { (utc) }
    }
}

/// `time` or a dash.
pub fn maybe_time(at: Option<DateTime<Utc>>) -> Markup {
    match at {
        Some(at) => time(at),
        None => html! { span.none { "—" } },
    }
}

/// "3 h ago", "in 5 min", with the time on hover.
pub fn ago(at: DateTime<Utc>, now: DateTime<Utc>) -> Markup {
    let seconds = (now - at).num_seconds();
    let text = if seconds >= 0 {
        format!("{} ago", span(seconds))
    } else {
        format!("in {}", span(-seconds))
    };
    html! {
        time datetime=(at.to_rfc3339()) title=(at.format("%Y-%m-%d %H:%M:%S UTC").to_string()) data-relative { (text) }
    }
}

/// `ago` or "never".
pub fn maybe_ago(at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Markup {
    match at {
        Some(at) => ago(at, now),
        None => html! { span.none { "never" } },
    }
}

/// A span of seconds in the largest unit that fits: "42 s", "5 min",
/// "3 h", "2 d".
pub fn span(seconds: i64) -> String {
    match seconds {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86_400),
    }
}

/// A size in bytes, in binary units (as notifications write it).
pub fn bytes(size: i64) -> String {
    cairn_core::notifications::render::human_bytes(size.max(0) as u64)
}

/// A status word with its mark; the class colours it, the word says it
/// (colour is never the only sign).
pub fn mark(status: &str) -> Markup {
    let symbol = match status {
        "success" => "✓",
        "failed" => "✗",
        "partial" => "◐",
        "missed" | "overdue" => "!",
        "running" | "pending" => "…",
        "skipped" => "–",
        _ => "·",
    };
    html! {
        span class=(format!("mark mark-{status}")) {
            span aria-hidden="true" { (symbol) } " " (status)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_and_sizes_read_as_a_person_would_say_them() {
        assert_eq!(span(42), "42 s");
        assert_eq!(span(3 * 3600 + 5), "3 h");
        assert_eq!(span(5 * 86_400), "5 d");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(671_364_631), "640.3 MiB");
    }
}
