//! Human renderings of a payload: the one-line title (email subject, Slack
//! fallback), the plain-text email body and the Slack Block Kit message.

use serde_json::{json, Value};

use super::payload::{Event, NotificationPayload};

/// Volumes listed by name in a message; the rest are counted.
const LISTED_VOLUMES: usize = 25;
/// Slack refuses section texts over 3 000 characters.
const SLACK_SECTION_CHARS: usize = 2_900;

/// `1.5 GiB`, `312 KiB`, `17 B`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The one-line summary of an event.
pub fn title(payload: &NotificationPayload) -> String {
    let org = &payload.organization.slug;
    let job = payload.job.as_ref().map(|j| j.name.as_str()).unwrap_or("");
    match payload.event {
        Event::RunFailed => {
            let (failed, total) = payload
                .summary
                .as_ref()
                .map(|s| (s.failed, s.total))
                .unwrap_or_default();
            format!("[Cairn] Backup failed: {job} ({org}) - {failed} of {total} volume(s) failed")
        }
        Event::RunSucceeded => {
            let (total, bytes) = payload
                .summary
                .as_ref()
                .map(|s| (s.total, s.archive_bytes))
                .unwrap_or_default();
            format!(
                "[Cairn] Backup succeeded: {job} ({org}) - {total} volume(s), {}",
                human_bytes(bytes)
            )
        }
        Event::RunSuspicious => {
            let count = payload.volumes.iter().filter(|v| v.suspicious).count();
            format!(
                "[Cairn] Backup suspicious: {job} ({org}) - {count} volume(s) shrank sharply; check before accepting"
            )
        }
        Event::RunMissed => {
            let count = payload
                .run
                .as_ref()
                .and_then(|r| r.missed_count)
                .unwrap_or(0);
            format!("[Cairn] Backups missed: {job} ({org}) - {count} scheduled slot(s) passed")
        }
        Event::RunSkipped => {
            format!("[Cairn] Backup skipped: {job} ({org}) - nothing was backed up")
        }
        Event::RestoreFailed => {
            let (target, dry) = payload
                .restore
                .as_ref()
                .map(|r| (format!("{}/{}", r.app_name, r.volume_name), r.dry_run))
                .unwrap_or_default();
            format!(
                "[Cairn] {} failed: {target} ({org})",
                if dry { "Restore dry run" } else { "Restore" }
            )
        }
        Event::VerificationFailed | Event::VerificationSucceeded => {
            let (series, mode) = payload
                .verification
                .as_ref()
                .map(|v| (format!("{}/{}", v.app_name, v.volume_name), v.mode.as_str()))
                .unwrap_or_default();
            let job = if job.is_empty() {
                String::new()
            } else {
                format!("{job}, ")
            };
            if payload.event == Event::VerificationFailed {
                format!("[Cairn] Verification failed: {series} ({job}{org}) - the backup did not {mode} back as recorded")
            } else {
                format!(
                    "[Cairn] Verification succeeded: {series} ({job}{org}) - {mode} check passed"
                )
            }
        }
        Event::CopyFailed => {
            let (series, target) = payload
                .copy
                .as_ref()
                .map(|c| {
                    (
                        format!("{}/{}", c.app_name, c.volume_name),
                        c.target_name.clone(),
                    )
                })
                .unwrap_or_default();
            format!(
                "[Cairn] Copy failed: {series} ({job}, {org}) - not copied to target '{target}'"
            )
        }
        Event::TargetLowSpace => {
            let (target, free) = payload
                .low_space
                .as_ref()
                .map(|l| (l.target_name.clone(), human_bytes(l.free_bytes)))
                .unwrap_or_default();
            format!("[Cairn] Low disk space: target '{target}' has {free} free ({org})")
        }
        Event::BackupMissing => {
            let (count, target) = payload
                .missing
                .as_ref()
                .map(|m| (m.backups.len(), m.target_name.clone()))
                .unwrap_or_default();
            format!(
                "[Cairn] Backups missing: {count} archive(s) gone from target '{target}' ({org})"
            )
        }
        Event::Test => format!("[Cairn] Test notification for {org}"),
    }
}

/// The lines that describe the event, without the title.
fn detail_lines(payload: &NotificationPayload) -> Vec<String> {
    let mut lines = Vec::new();
    lines.push(format!(
        "Organization: {} ({})",
        payload.organization.name, payload.organization.slug
    ));
    if let Some(job) = &payload.job {
        lines.push(format!("Job: {} ({})", job.name, job.id));
    }
    if let Some(run) = &payload.run {
        lines.push(format!(
            "Run: {} ({}, scheduled for {})",
            run.id,
            run.trigger,
            run.scheduled_for.to_rfc3339()
        ));
        if let (Some(count), Some(from), Some(to)) =
            (run.missed_count, run.missed_from, run.missed_to)
        {
            lines.push(format!(
                "Missed: {count} slot(s) from {} to {}",
                from.to_rfc3339(),
                to.to_rfc3339()
            ));
        }
        if let Some(reason) = &run.reason {
            lines.push(format!("Reason: {reason}"));
        }
    }
    if let Some(summary) = &payload.summary {
        lines.push(format!(
            "Backups: {} total, {} succeeded, {} failed; {} archived",
            summary.total,
            summary.succeeded,
            summary.failed,
            human_bytes(summary.archive_bytes)
        ));
        if summary.copies_failed > 0 {
            lines.push(format!(
                "Copies: {} did not reach their copy targets; they are retried from the primary",
                summary.copies_failed
            ));
        }
    }
    if let Some(restore) = &payload.restore {
        lines.push(format!(
            "Restore: {} of backup {} into {}/{}{}",
            restore.id,
            restore.backup_id,
            restore.app_name,
            restore.volume_name,
            if restore.dry_run { " (dry run)" } else { "" }
        ));
        if let Some(error) = &restore.error {
            lines.push(format!("Error: {}: {}", error.code, error.message));
        }
        if let Some(safety) = restore.safety_backup_id {
            lines.push(format!("Safety backup: {safety}"));
        }
    }
    if let Some(verification) = &payload.verification {
        lines.push(format!(
            "Verification: {} ({} mode, {}) of backup {} of {}/{}{}",
            verification.id,
            verification.mode,
            verification.trigger,
            verification.backup_id,
            verification.app_name,
            verification.volume_name,
            verification
                .total_ms
                .map(|ms| format!(", {:.1} s", ms as f64 / 1000.0))
                .unwrap_or_default()
        ));
        if let Some(error) = &verification.error {
            lines.push(format!("Error: {}: {}", error.code, error.message));
        }
        for check in verification.checks.iter().filter(|c| !c.ok) {
            lines.push(format!("Failed check {}: {}", check.name, check.detail));
        }
    }
    if let Some(copy) = &payload.copy {
        lines.push(format!(
            "Copy of backup {} of {}/{} to target '{}': failed after {} attempt(s); the backup itself is kept on its target",
            copy.backup_id, copy.app_name, copy.volume_name, copy.target_name, copy.attempts
        ));
        if let Some(error) = &copy.error {
            lines.push(format!("Error: {}: {}", error.code, error.message));
        }
    }
    if let Some(low) = &payload.low_space {
        lines.push(format!(
            "Target '{}' ({}) has {} free, below disk.warn_free_mb ({}). A backup whose \
             volume's previous archive does not fit fails with insufficient_space; free space \
             or prune older backups. Sent at most once a day per target.",
            low.target_name,
            low.target_id,
            human_bytes(low.free_bytes),
            human_bytes(low.warn_free_bytes)
        ));
    }
    if let Some(missing) = &payload.missing {
        lines.push(format!(
            "An orphan sweep of target '{}' ({}) found no archive for {} recorded backup(s); \
             they are `missing` and cannot be restored from this target. A later sweep that \
             finds an archive back makes its backup `success` again.",
            missing.target_name,
            missing.target_id,
            missing.backups.len()
        ));
        for backup in missing.backups.iter().take(LISTED_VOLUMES) {
            lines.push(format!(
                "- {}/{}: backup {} ({})",
                backup.app_name, backup.volume_name, backup.backup_id, backup.path
            ));
        }
        if missing.backups.len() > LISTED_VOLUMES {
            lines.push(format!(
                "- … and {} more",
                missing.backups.len() - LISTED_VOLUMES
            ));
        }
    }
    if payload.event == Event::Test {
        lines.push("This is a test message: the channel works.".into());
    }
    lines
}

/// One line per volume (failed ones first), at most [`LISTED_VOLUMES`].
fn volume_lines(payload: &NotificationPayload) -> Vec<String> {
    let mut volumes: Vec<_> = payload.volumes.iter().collect();
    volumes.sort_by_key(|v| v.error.is_none());
    let mut lines: Vec<String> = volumes
        .iter()
        .take(LISTED_VOLUMES)
        .map(|v| match &v.error {
            Some(error) => format!(
                "{}/{}: failed - {}: {}",
                v.app_name, v.volume_name, error.code, error.message
            ),
            None => format!(
                "{}/{}: {}{}{}",
                v.app_name,
                v.volume_name,
                v.status,
                v.archive_size
                    .map(|size| format!(", {}", human_bytes(size)))
                    .unwrap_or_default(),
                v.suspicious_reason
                    .as_ref()
                    .map(|reason| format!(" - suspicious: {reason}"))
                    .unwrap_or_default()
            ),
        })
        .collect();
    if volumes.len() > LISTED_VOLUMES {
        lines.push(format!(
            "… and {} more volume(s)",
            volumes.len() - LISTED_VOLUMES
        ));
    }
    lines
}

/// The plain-text body of an email.
pub fn text_body(payload: &NotificationPayload) -> String {
    let mut text = String::new();
    text.push_str(payload.title.trim_start_matches("[Cairn] "));
    text.push_str("\n\n");
    for line in detail_lines(payload) {
        text.push_str(&line);
        text.push('\n');
    }
    let volumes = volume_lines(payload);
    if !volumes.is_empty() {
        text.push_str("\nVolumes:\n");
        for line in volumes {
            text.push_str("  ");
            text.push_str(&line);
            text.push('\n');
        }
    }
    text.push_str(&format!(
        "\nEvent {} at {} (delivery {}).\n",
        payload.event.as_str(),
        payload.occurred_at.to_rfc3339(),
        payload.id
    ));
    text
}

/// Escapes the three characters Slack's mrkdwn reserves.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn clip(text: String, limit: usize) -> String {
    if text.chars().count() <= limit {
        return text;
    }
    let mut clipped: String = text.chars().take(limit - 1).collect();
    clipped.push('…');
    clipped
}

/// A Slack incoming-webhook message: Block Kit blocks with the title as the
/// plain-text fallback (`text`), which notifications and old clients show.
pub fn slack_message(payload: &NotificationPayload) -> Value {
    let mut blocks = vec![json!({
        "type": "header",
        "text": {
            "type": "plain_text",
            "text": clip(payload.title.trim_start_matches("[Cairn] ").to_owned(), 150),
        }
    })];
    let details = detail_lines(payload)
        .iter()
        .map(|line| slack_escape(line))
        .collect::<Vec<_>>()
        .join("\n");
    blocks.push(json!({
        "type": "section",
        "text": { "type": "mrkdwn", "text": clip(details, SLACK_SECTION_CHARS) }
    }));
    let volumes = volume_lines(payload);
    if !volumes.is_empty() {
        let listed = volumes
            .iter()
            .map(|line| format!("• {}", slack_escape(line)))
            .collect::<Vec<_>>()
            .join("\n");
        blocks.push(json!({
            "type": "section",
            "text": { "type": "mrkdwn", "text": clip(listed, SLACK_SECTION_CHARS) }
        }));
    }
    blocks.push(json!({
        "type": "context",
        "elements": [{
            "type": "mrkdwn",
            "text": slack_escape(&format!(
                "{} · {} · delivery {}",
                payload.event.as_str(),
                payload.occurred_at.to_rfc3339(),
                payload.id
            )),
        }]
    }));
    json!({ "text": payload.title, "blocks": blocks })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_human() {
        assert_eq!(human_bytes(17), "17 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }

    #[test]
    fn slack_texts_are_escaped_and_clipped() {
        assert_eq!(slack_escape("a <b> & c"), "a &lt;b&gt; &amp; c");
        let long = "x".repeat(5000);
        assert_eq!(clip(long, 10).chars().count(), 10);
    }
}
