//! One retry budget per opened storage, shared by every request of the
//! attempt that opened it (`storage.retry_budget_seconds`).
//!
//! The clock runs while the attempt is in trouble: from the start of a
//! request that failed transiently (a transport error, or an answer of 5xx,
//! 408 or 429) until the next request of the attempt that succeeds. The sum
//! of those spans is what the budget bounds. While it lasts, each adapter
//! retries as it always did; once it is spent, the next request (or the
//! next retry of one) fails at once with [`RetryBudget::exhausted_message`],
//! which names the setting. So an outage of storage costs one attempt at
//! most the budget, however many uploads, parts, sidecars and deletes it
//! spreads over, instead of a full retry cycle for each of them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A shared budget of time spent failing; cheap to clone (clones share it).
#[derive(Clone, Debug)]
pub struct RetryBudget {
    total: Duration,
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    /// Trouble spans that ended (a success followed them).
    spent: Duration,
    /// The start of the request that opened the current span, if any.
    failing_since: Option<Instant>,
    /// What the last failure was, in a few safe words (no body, no URL).
    last_failure: Option<String>,
}

impl RetryBudget {
    pub fn new(total: Duration) -> RetryBudget {
        RetryBudget {
            total,
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    /// The whole budget.
    pub fn total(&self) -> Duration {
        self.total
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent whatever panicked while holding it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A request that started at `started` failed transiently; `what` says
    /// how (a status or a kind of transport error).
    pub fn failed(&self, started: Instant, what: impl Into<String>) {
        let mut state = self.state();
        if state.failing_since.is_none_or(|since| started < since) {
            state.failing_since = Some(started);
        }
        state.last_failure = Some(what.into());
    }

    /// A request succeeded: the current span of trouble, if any, ends.
    pub fn succeeded(&self) {
        let mut state = self.state();
        if let Some(since) = state.failing_since.take() {
            state.spent += since.elapsed();
        }
    }

    /// Time spent failing so far.
    pub fn spent(&self) -> Duration {
        let state = self.state();
        state.spent + state.failing_since.map_or(Duration::ZERO, |s| s.elapsed())
    }

    /// Whether the budget is used up.
    pub fn is_exhausted(&self) -> bool {
        self.spent() >= self.total
    }

    /// The error of a request refused because the budget is spent.
    pub fn exhausted_message(&self) -> String {
        let last = self
            .state()
            .last_failure
            .clone()
            .unwrap_or_else(|| "unknown".into());
        format!(
            "storage retries of this attempt used up their budget of {} s \
             (storage.retry_budget_seconds); the last failure: {last}",
            self.total.as_secs()
        )
    }
}

/// The marker [`RetryBudget::exhausted_message`] carries, for classifying.
pub(crate) const EXHAUSTED_MARKER: &str = "storage.retry_budget_seconds";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_of_trouble_add_up_and_successes_end_them() {
        let budget = RetryBudget::new(Duration::from_secs(10));
        assert_eq!(budget.spent(), Duration::ZERO);
        let now = Instant::now();
        budget.failed(now - Duration::from_secs(4), "503");
        // A second failure inside the same span does not restart it.
        budget.failed(now - Duration::from_secs(1), "503");
        assert!(budget.spent() >= Duration::from_secs(4));
        assert!(!budget.is_exhausted());
        budget.succeeded();
        let after_first = budget.spent();
        assert!(after_first >= Duration::from_secs(4) && after_first < Duration::from_secs(5));
        // Success without trouble costs nothing.
        budget.succeeded();
        assert!(budget.spent() < Duration::from_secs(5));
        // A second outage adds to the first, and the budget runs out.
        budget.failed(Instant::now() - Duration::from_secs(7), "connect");
        assert!(budget.is_exhausted());
        let message = budget.exhausted_message();
        assert!(message.contains("budget of 10 s"), "{message}");
        assert!(message.contains(EXHAUSTED_MARKER), "{message}");
        assert!(message.ends_with("the last failure: connect"), "{message}");
    }

    #[test]
    fn clones_share_one_budget() {
        let budget = RetryBudget::new(Duration::from_secs(3));
        let other = budget.clone();
        other.failed(Instant::now() - Duration::from_secs(3), "timeout");
        assert!(budget.is_exhausted());
    }
}
