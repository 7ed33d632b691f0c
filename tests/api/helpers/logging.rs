//! `TEST_LOG`: with it set, the logs of the in-process server and workers,
//! and the stderr of the `cairn` processes tests start, are part of a
//! test's captured output, which `cargo test` prints when the test fails.
//! `TEST_LOG=1` (or `true`) logs at `info`; any other value is a tracing
//! filter (`TEST_LOG=debug`, `TEST_LOG=cairn_worker=debug,info`).

use std::io::IsTerminal;
use std::sync::Once;

/// The tracing filter `TEST_LOG` asks for; `None` when it is unset, empty,
/// `0` or `false`.
pub fn test_log_filter() -> Option<String> {
    let value = std::env::var("TEST_LOG").ok()?;
    match value.trim() {
        "" | "0" | "false" => None,
        "1" | "true" => Some("info".to_owned()),
        filter => Some(filter.to_owned()),
    }
}

/// Installs, once per process and only with `TEST_LOG` set, a subscriber
/// that writes through the test harness's capture (`with_test_writer`), so
/// that each event lands in the output of the test whose thread (or a
/// thread it spawned) emitted it.
pub(super) fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let Some(filter) = test_log_filter() else {
            return;
        };
        // Invalid directives are reported on stderr and ignored.
        let filter = tracing_subscriber::EnvFilter::new(filter);
        // Another subscriber may already be installed: it is kept.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::stdout().is_terminal())
            .with_test_writer()
            .try_init();
    });
}
