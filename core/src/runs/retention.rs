//! GFS retention with restic's `forget --keep-*` semantics (restic ≥ 0.16).
//!
//! A pure function of the backups' times and the policy: no clock, no
//! database. The newest backups are walked first. `keepLast` keeps the N
//! newest; each calendar rule (hourly, daily, weekly, monthly, yearly; UTC,
//! ISO weeks starting on Monday) keeps the newest backup of each of the N
//! most recent periods that contain one; rules are OR'ed, and a backup kept
//! by several rules lists them all. When a rule still has count left at the
//! oldest backup, that backup is kept too, so a young series keeps its
//! whole history. `keepAll` keeps everything. Whatever the rules, the newest
//! backup is always kept.

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::Serialize;

/// How many backups of a series to keep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub keep_all: bool,
    pub last: u32,
    pub hourly: u32,
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
    pub yearly: u32,
}

/// Why a backup is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    All,
    Last,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
    /// The newest backup of a series is never pruned.
    Newest,
    /// A suspicious backup an admin has not accepted: kept, and not counted
    /// by the rules above (so it pushes no real backup out).
    Suspicious,
    /// A pending or running restore is about to read it: kept until it ends.
    Reading,
    /// The newest backup of its series that a verification proved
    /// restores ("last known good"): kept whatever the rules say.
    Verified,
}

/// The fate of one backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub keep: bool,
    pub reasons: Vec<Reason>,
}

/// A calendar period (year, then finer fields as the rule needs).
type Period = (i64, i64, i64, i64);

/// The calendar period a time falls in, for one rule.
fn period(reason: Reason, time: DateTime<Utc>, position: usize) -> Period {
    match reason {
        // Every backup is a period of its own.
        Reason::Last => (position as i64, 0, 0, 0),
        Reason::Hourly => (
            time.year().into(),
            time.ordinal().into(),
            time.hour().into(),
            0,
        ),
        Reason::Daily => (time.year().into(), time.ordinal().into(), 0, 0),
        Reason::Weekly => {
            let week = time.iso_week();
            (week.year().into(), week.week().into(), 0, 0)
        }
        Reason::Monthly => (time.year().into(), time.month().into(), 0, 0),
        Reason::Yearly => (time.year().into(), 0, 0, 0),
        Reason::All | Reason::Newest | Reason::Suspicious | Reason::Reading | Reason::Verified => {
            (0, 0, 0, 0)
        }
    }
}

/// Decides, for each time in `times` (any order), whether its backup is
/// kept and by which rules. The result is in the order of `times`.
pub fn apply(policy: &Policy, times: &[DateTime<Utc>]) -> Vec<Decision> {
    let mut order: Vec<usize> = (0..times.len()).collect();
    // Newest first; ties keep their input order.
    order.sort_by(|a, b| times[*b].cmp(&times[*a]));
    let mut decisions = vec![
        Decision {
            keep: false,
            reasons: Vec::new(),
        };
        times.len()
    ];
    if policy.keep_all {
        for decision in &mut decisions {
            decision.keep = true;
            decision.reasons.push(Reason::All);
        }
        return decisions;
    }
    // Each rule: its count left and the last period it kept a backup of.
    let mut rules: Vec<(Reason, u32, Option<Period>)> = [
        (Reason::Last, policy.last),
        (Reason::Hourly, policy.hourly),
        (Reason::Daily, policy.daily),
        (Reason::Weekly, policy.weekly),
        (Reason::Monthly, policy.monthly),
        (Reason::Yearly, policy.yearly),
    ]
    .into_iter()
    .filter(|(_, count)| *count > 0)
    .map(|(reason, count)| (reason, count, None))
    .collect();
    let oldest = order.len().saturating_sub(1);
    for (position, &index) in order.iter().enumerate() {
        let decision = &mut decisions[index];
        for (reason, count, last_period) in &mut rules {
            if *count == 0 {
                continue;
            }
            let current = period(*reason, times[index], position);
            if Some(current) != *last_period || position == oldest {
                *last_period = Some(current);
                *count -= 1;
                decision.keep = true;
                decision.reasons.push(*reason);
            }
        }
        if position == 0 && !decision.keep {
            decision.keep = true;
            decision.reasons.push(Reason::Newest);
        }
    }
    decisions
}

/// One line of `cairn retention plan`'s output.
#[derive(Serialize)]
struct PlanLine<'a> {
    time: &'a str,
    keep: bool,
    reasons: &'a [Reason],
}

/// `cairn retention plan`: reads RFC 3339 times, one per line (blank lines
/// are skipped), and writes one JSON line per time, in input order.
/// Nothing is written unless every line parses.
pub fn plan(
    policy: &Policy,
    input: impl std::io::BufRead,
    mut output: impl std::io::Write,
) -> anyhow::Result<()> {
    let mut texts = Vec::new();
    let mut times = Vec::new();
    for (number, line) in input.lines().enumerate() {
        let line = line?;
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let time = DateTime::parse_from_rfc3339(text).map_err(|_| {
            anyhow::anyhow!(
                "line {}: {text:?} is not an RFC 3339 timestamp (e.g. 2024-01-15T02:00:00Z)",
                number + 1
            )
        })?;
        texts.push(text.to_owned());
        times.push(time.with_timezone(&Utc));
    }
    for ((text, decision), _) in texts.iter().zip(apply(policy, &times)).zip(&times) {
        let line = PlanLine {
            time: text,
            keep: decision.keep,
            reasons: &decision.reasons,
        };
        serde_json::to_writer(&mut output, &line)?;
        output.write_all(b"\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_writes_one_json_line_per_input_in_order() {
        let input = "2024-01-02T00:00:00Z\n\n2024-01-03T00:00:00+01:00\n2024-01-01T00:00:00Z\n";
        let mut output = Vec::new();
        plan(
            &Policy {
                last: 2,
                ..Policy::default()
            },
            input.as_bytes(),
            &mut output,
        )
        .unwrap();
        let lines: Vec<serde_json::Value> = String::from_utf8(output)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[0],
            serde_json::json!({ "time": "2024-01-02T00:00:00Z", "keep": true, "reasons": ["last"] })
        );
        assert_eq!(lines[1]["keep"], true);
        assert_eq!(
            lines[2],
            serde_json::json!({ "time": "2024-01-01T00:00:00Z", "keep": false, "reasons": [] })
        );

        let mut output = Vec::new();
        let error = plan(
            &Policy::default(),
            "2024-01-01T00:00:00Z\nyesterday\n".as_bytes(),
            &mut output,
        )
        .unwrap_err();
        assert!(error.to_string().contains("line 2"), "{error}");
        assert!(output.is_empty());
    }

    fn t(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    /// The kept times, newest first, with their reasons.
    fn kept(policy: Policy, times: &[&str]) -> Vec<(String, Vec<Reason>)> {
        let parsed: Vec<DateTime<Utc>> = times.iter().map(|s| t(s)).collect();
        let decisions = apply(&policy, &parsed);
        let mut kept: Vec<(DateTime<Utc>, Vec<Reason>)> = parsed
            .iter()
            .zip(decisions)
            .filter(|(_, d)| d.keep)
            .map(|(time, d)| (*time, d.reasons))
            .collect();
        kept.sort_by_key(|(time, _)| std::cmp::Reverse(*time));
        kept.into_iter()
            .map(|(time, reasons)| (time.format("%Y-%m-%dT%H:%M").to_string(), reasons))
            .collect()
    }

    fn times_only(kept: &[(String, Vec<Reason>)]) -> Vec<&str> {
        kept.iter().map(|(time, _)| time.as_str()).collect()
    }

    #[test]
    fn keep_last_keeps_the_newest_in_any_input_order() {
        let policy = Policy {
            last: 3,
            ..Policy::default()
        };
        let times = [
            "2024-01-02T00:00:00Z",
            "2024-01-05T00:00:00Z",
            "2024-01-01T00:00:00Z",
            "2024-01-04T00:00:00Z",
            "2024-01-03T00:00:00Z",
        ];
        assert_eq!(
            times_only(&kept(policy, &times)),
            ["2024-01-05T00:00", "2024-01-04T00:00", "2024-01-03T00:00"]
        );
    }

    #[test]
    fn daily_keeps_the_newest_of_each_day() {
        let policy = Policy {
            daily: 2,
            ..Policy::default()
        };
        let times = [
            "2024-03-10T23:00:00Z",
            "2024-03-10T02:00:00Z",
            "2024-03-09T22:00:00Z",
            "2024-03-09T01:00:00Z",
            "2024-03-08T12:00:00Z",
        ];
        assert_eq!(
            times_only(&kept(policy, &times)),
            ["2024-03-10T23:00", "2024-03-09T22:00"]
        );
    }

    #[test]
    fn weekly_uses_iso_weeks_across_a_year_end() {
        // 2020-12-28 (Mon) … 2021-01-03 (Sun) is ISO week 2020-W53;
        // 2021-01-04 (Mon) starts 2021-W01.
        let policy = Policy {
            weekly: 2,
            ..Policy::default()
        };
        let times = [
            "2021-01-04T01:00:00Z",
            "2021-01-03T23:00:00Z",
            "2021-01-01T12:00:00Z",
            "2020-12-28T00:30:00Z",
            "2020-12-27T23:00:00Z",
        ];
        assert_eq!(
            times_only(&kept(policy, &times)),
            ["2021-01-04T01:00", "2021-01-03T23:00"]
        );
        let policy = Policy {
            weekly: 3,
            ..Policy::default()
        };
        assert_eq!(
            times_only(&kept(policy, &times)),
            ["2021-01-04T01:00", "2021-01-03T23:00", "2020-12-27T23:00"]
        );
    }

    #[test]
    fn rules_overlap_and_list_every_reason() {
        let policy = Policy {
            last: 1,
            daily: 2,
            monthly: 2,
            ..Policy::default()
        };
        let times = [
            "2024-02-02T10:00:00Z",
            "2024-02-02T09:00:00Z",
            "2024-02-01T10:00:00Z",
            "2024-01-31T10:00:00Z",
            "2024-01-15T10:00:00Z",
        ];
        assert_eq!(
            kept(policy, &times),
            [
                (
                    "2024-02-02T10:00".to_owned(),
                    vec![Reason::Last, Reason::Daily, Reason::Monthly]
                ),
                ("2024-02-01T10:00".to_owned(), vec![Reason::Daily]),
                ("2024-01-31T10:00".to_owned(), vec![Reason::Monthly]),
            ]
        );
    }

    #[test]
    fn a_rule_with_count_left_keeps_the_oldest() {
        // Three backups over two days, ten days asked for: the oldest is
        // kept as well, as restic >= 0.16 does.
        let policy = Policy {
            daily: 10,
            ..Policy::default()
        };
        let times = [
            "2024-05-02T09:00:00Z",
            "2024-05-01T10:00:00Z",
            "2024-05-01T08:00:00Z",
        ];
        assert_eq!(
            times_only(&kept(policy, &times)),
            ["2024-05-02T09:00", "2024-05-01T10:00", "2024-05-01T08:00"]
        );
        // With the count used up before the oldest, it goes.
        let policy = Policy {
            daily: 2,
            ..Policy::default()
        };
        assert_eq!(
            times_only(&kept(policy, &times)),
            ["2024-05-02T09:00", "2024-05-01T10:00"]
        );
    }

    #[test]
    fn hourly_yearly_and_keep_all() {
        let times = [
            "2024-06-01T10:59:00Z",
            "2024-06-01T10:01:00Z",
            "2024-06-01T09:30:00Z",
            "2023-12-31T23:59:00Z",
            "2022-01-01T00:00:00Z",
        ];
        let hourly = Policy {
            hourly: 2,
            ..Policy::default()
        };
        assert_eq!(
            times_only(&kept(hourly, &times)),
            ["2024-06-01T10:59", "2024-06-01T09:30"]
        );
        let yearly = Policy {
            yearly: 2,
            ..Policy::default()
        };
        assert_eq!(
            times_only(&kept(yearly, &times)),
            ["2024-06-01T10:59", "2023-12-31T23:59"]
        );
        let all = Policy {
            keep_all: true,
            last: 1,
            ..Policy::default()
        };
        let kept_all = kept(all, &times);
        assert_eq!(kept_all.len(), 5);
        assert!(kept_all
            .iter()
            .all(|(_, reasons)| reasons == &[Reason::All]));
    }

    #[test]
    fn the_newest_is_never_pruned_and_empty_series_are_fine() {
        assert!(apply(
            &Policy {
                daily: 3,
                ..Policy::default()
            },
            &[]
        )
        .is_empty());
        // No rule at all (not a valid job, but the function stays safe).
        let decisions = apply(
            &Policy::default(),
            &[t("2024-01-01T00:00:00Z"), t("2024-01-02T00:00:00Z")],
        );
        assert_eq!(
            decisions[1],
            Decision {
                keep: true,
                reasons: vec![Reason::Newest]
            }
        );
        assert!(!decisions[0].keep);
    }
}
