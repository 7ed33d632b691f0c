//! Child processes: the `cairn` binary run against a fixture, and commands
//! that must succeed.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};

use super::logging::test_log_filter;
use super::{database_url_of, Fixture};

/// Runs `command`; asserts that it succeeded (its stderr in the message)
/// and returns its stdout.
pub fn run_ok(command: &mut Command) -> Vec<u8> {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// The `cairn` binary running `role` against the fixture's database, data
/// directory (master key, local target) and volume root. Quiet: its output
/// is discarded, unless `TEST_LOG` is set — then it logs with that filter
/// (`CAIRN_LOG`) and its stderr goes to the test's captured output.
pub fn cairn_process(f: &Fixture, role: &str, args: &[String], envs: &[(&str, String)]) -> Child {
    let log = test_log_filter();
    let mut command = Command::new(env!("CARGO_BIN_EXE_cairn"));
    command
        .arg(role)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .env("CAIRN_DATA_DIR", f.app.cairn.config.data_dir.as_os_str())
        .env("CAIRN_DATABASE_URL", database_url_of(&f.app))
        .env("CAIRN_VOLUME_ROOT", f.volumes.path())
        .env("CAIRN_WORKER__POLL_MILLIS", "100")
        .env("CAIRN_RUN_MIGRATIONS", "false");
    if let Some(filter) = &log {
        command.env("CAIRN_LOG", filter);
    }
    command
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(if log.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = command.spawn().unwrap();
    if log.is_some() {
        let label = format!("cairn {role} {}", child.id());
        forward_stderr(&mut child, label);
    }
    child
}

/// Copies the child's stderr, line by line and prefixed with `label`, into
/// the output of the current test. A thread spawned by a test's thread
/// writes into that test's capture, so the lines show when it fails.
fn forward_stderr(child: &mut Child, label: String) {
    let Some(stderr) = child.stderr.take() else {
        return;
    };
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).split(b'\n') {
            let Ok(line) = line else {
                break;
            };
            eprintln!("[{label}] {}", String::from_utf8_lossy(&line));
        }
    });
}
