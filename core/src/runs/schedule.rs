//! When a job fires: its cron expression read in its time zone, with the
//! daylight-saving rules of a backup schedule.
//!
//! The expression is evaluated on the wall clock (the zone's local time
//! without offsets), and each wall-clock time it names is then placed on
//! the time line:
//!
//! - a wall-clock time that happens twice (autumn: the clock goes back) is
//!   the first of the two — a job never fires twice for one scheduled time;
//! - a wall-clock time that does not happen (spring: the clock jumps
//!   forward) fires once, at the first instant after the gap. Several
//!   scheduled times inside one gap collapse into that one firing.

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// A job's schedule: a cron expression in a time zone.
#[derive(Clone, Debug)]
pub struct JobSchedule {
    cron: cron_parser::Schedule,
    zone: Tz,
}

/// The zone of a job: an IANA name (`Europe/Berlin`), `UTC` by default.
pub fn parse_zone(name: &str) -> Result<Tz, String> {
    name.trim()
        .parse::<Tz>()
        .map_err(|_| "is not an IANA time zone name (such as UTC or Europe/Berlin)".to_owned())
}

impl JobSchedule {
    /// Parses `expression` (see `jobs::parse_schedule` for the rules) in
    /// the zone named `zone`.
    pub fn parse(expression: &str, zone: &str) -> Result<JobSchedule, ScheduleError> {
        let cron = crate::jobs::parse_schedule(expression).map_err(ScheduleError::Cron)?;
        let zone = parse_zone(zone).map_err(ScheduleError::Zone)?;
        Ok(JobSchedule::new(cron, zone))
    }

    /// A schedule of parts already parsed.
    pub fn new(cron: cron_parser::Schedule, zone: Tz) -> JobSchedule {
        JobSchedule { cron, zone }
    }

    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// The first firing strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut wall = after.with_timezone(&self.zone).naive_local();
        // Bounded: each step moves the wall clock forward to the next time
        // the expression names; only a time that maps before `after` (the
        // first of a repeated hour, while the clock is in the second) is
        // passed over.
        for _ in 0..10_000 {
            let next_wall = self.next_wall_after(wall)?;
            if let Some(instant) = self.place(next_wall, after) {
                return Some(instant);
            }
            wall = next_wall;
        }
        None
    }

    /// Every firing in `(after, until]`, at most `limit` of them.
    pub fn between(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut found = Vec::new();
        let mut cursor = after;
        while found.len() < limit {
            match self.next_after(cursor) {
                Some(next) if next <= until => {
                    found.push(next);
                    cursor = next;
                }
                _ => break,
            }
        }
        found
    }

    /// The next wall-clock time the expression names after `wall`.
    fn next_wall_after(&self, wall: NaiveDateTime) -> Option<NaiveDateTime> {
        // Evaluated as if the wall clock were UTC: a zone without offsets.
        self.cron
            .next_after(&Utc.from_utc_datetime(&wall))
            .map(|t| t.naive_utc())
    }

    /// The instant of a wall-clock time, if it is after `after`: the first
    /// of a repeated time, or the end of the gap a skipped time falls in.
    fn place(&self, wall: NaiveDateTime, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let candidates: Vec<DateTime<Utc>> = match self.zone.from_local_datetime(&wall) {
            LocalResult::Single(t) => vec![t.with_timezone(&Utc)],
            LocalResult::Ambiguous(first, second) => {
                vec![first.with_timezone(&Utc), second.with_timezone(&Utc)]
            }
            LocalResult::None => {
                // In a gap: the first wall-clock minute that exists after it.
                let mut probe = wall;
                let mut found = None;
                for _ in 0..(48 * 60) {
                    probe += Duration::minutes(1);
                    if let Some(t) = self.zone.from_local_datetime(&probe).earliest() {
                        found = Some(t.with_timezone(&Utc));
                        break;
                    }
                }
                found.into_iter().collect()
            }
        };
        // The first of a repeated time is the scheduled one; when the clock
        // is already past it (in the repeated hour), this time has fired.
        match candidates.first() {
            Some(first) if *first > after => Some(*first),
            _ => None,
        }
    }
}

/// Why a stored schedule cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("the schedule {0}")]
    Cron(String),
    #[error("the timezone {0}")]
    Zone(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn firings(expression: &str, zone: &str, from: &str, to: &str) -> Vec<String> {
        JobSchedule::parse(expression, zone)
            .unwrap()
            .between(utc(from), utc(to), 1000)
            .into_iter()
            .map(|t| t.to_rfc3339())
            .collect()
    }

    #[test]
    fn utc_schedules_fire_on_the_minute() {
        assert_eq!(
            firings(
                "0 2 * * *",
                "UTC",
                "2026-01-01T00:00:00Z",
                "2026-01-03T00:00:00Z"
            ),
            ["2026-01-01T02:00:00+00:00", "2026-01-02T02:00:00+00:00"]
        );
        assert_eq!(
            firings(
                "*/20 * * * *",
                "UTC",
                "2026-01-01T00:00:00Z",
                "2026-01-01T01:00:00Z"
            ),
            [
                "2026-01-01T00:20:00+00:00",
                "2026-01-01T00:40:00+00:00",
                "2026-01-01T01:00:00+00:00"
            ]
        );
    }

    /// 2026-03-29: Berlin jumps from 02:00 to 03:00 (CET → CEST); 02:30 does
    /// not happen and fires once, at 03:00 CEST (01:00 UTC).
    #[test]
    fn a_time_skipped_by_spring_forward_fires_once_after_the_gap() {
        assert_eq!(
            firings(
                "30 2 * * *",
                "Europe/Berlin",
                "2026-03-27T12:00:00Z",
                "2026-03-30T12:00:00Z"
            ),
            [
                "2026-03-28T01:30:00+00:00",
                "2026-03-29T01:00:00+00:00",
                "2026-03-30T00:30:00+00:00"
            ]
        );
        // Every quarter hour: the four times of the missing hour collapse
        // into the one firing at 03:00 CEST.
        assert_eq!(
            firings(
                "*/15 * * * *",
                "Europe/Berlin",
                "2026-03-29T00:40:00Z",
                "2026-03-29T01:20:00Z"
            ),
            [
                "2026-03-29T00:45:00+00:00",
                "2026-03-29T01:00:00+00:00",
                "2026-03-29T01:15:00+00:00"
            ]
        );
    }

    /// 2026-10-25: Berlin goes back from 03:00 to 02:00 (CEST → CET); 02:30
    /// happens twice and fires once, the first time (00:30 UTC).
    #[test]
    fn a_time_repeated_by_fall_back_fires_once() {
        assert_eq!(
            firings(
                "30 2 * * *",
                "Europe/Berlin",
                "2026-10-23T12:00:00Z",
                "2026-10-26T12:00:00Z"
            ),
            [
                "2026-10-24T00:30:00+00:00",
                "2026-10-25T00:30:00+00:00",
                "2026-10-26T01:30:00+00:00"
            ]
        );
        // Asked during the repeated hour, after the first 02:30: the next
        // firing is the next day's, not the second 02:30.
        let schedule = JobSchedule::parse("30 2 * * *", "Europe/Berlin").unwrap();
        assert_eq!(
            schedule.next_after(utc("2026-10-25T01:10:00Z")).unwrap(),
            utc("2026-10-26T01:30:00Z")
        );
        // Hourly: every wall-clock time once, so the repeated hour is not
        // fired a second time.
        assert_eq!(
            firings(
                "30 * * * *",
                "Europe/Berlin",
                "2026-10-24T23:00:00Z",
                "2026-10-25T03:00:00Z"
            ),
            [
                "2026-10-24T23:30:00+00:00",
                "2026-10-25T00:30:00+00:00",
                "2026-10-25T02:30:00+00:00"
            ]
        );
    }

    #[test]
    fn bad_zones_and_expressions_are_named() {
        assert!(matches!(
            JobSchedule::parse("0 2 * * *", "Mars/Olympus"),
            Err(ScheduleError::Zone(_))
        ));
        assert!(matches!(
            JobSchedule::parse("0 25 * * *", "UTC"),
            Err(ScheduleError::Cron(_))
        ));
    }
}
