//! Dumps written by a child process (`pg_dump`, `mariadb-dump`), streamed:
//! the child's output → an optional observer (which reads the plain dump,
//! such as MySQL's row counter) → the job's compression → optional age
//! encryption → SHA-256 → a stream of chunks for a storage target's `put`.
//!
//! The child runs without a shell; its stderr is drained on a thread of its
//! own (its last 4 KiB kept for the failure message) so it never blocks on a
//! full pipe. A blocking thread reads its output into chunks on a bounded
//! queue: memory stays bounded and nothing is written to disk. Dropping the
//! stream before the dump ended (a cancelled upload) kills the child.

use std::io::{self, Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::failure::FailureCode;
use crate::format::age::Recipients;
use crate::format::tar::{
    ArchiveError, ChunkSink, Compression, Compressor, FailUnlessDone, Sealed,
};
use crate::storage::{received, ByteStream};

/// How much of the child's stderr a failure message keeps.
const STDERR_KEPT: usize = 4 * 1024;

/// What a dump holds, known when it is complete.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DumpSummary {
    /// Bytes the dump program wrote.
    pub dump_bytes: u64,
    /// Bytes of the archive as stored.
    pub stored_bytes: u64,
    /// SHA-256 of the archive as stored, hex.
    pub sha256: String,
}

/// The dump program to run, with what its failures are called.
pub(crate) struct Program {
    /// Ready to spawn: arguments and environment set, stdio left to
    /// [`stream`].
    pub command: Command,
    /// Its name in messages (`pg_dump`).
    pub name: &'static str,
    /// The code when it cannot be started.
    pub missing: FailureCode,
    /// The code when it fails.
    pub failed: FailureCode,
}

/// Reads the plain dump as it passes.
pub(crate) trait Observer: Send + 'static {
    type Found: Send + 'static;
    fn see(&mut self, data: &[u8]);
    fn finish(self) -> Self::Found;
}

/// Nothing reads the dump on its way.
impl Observer for () {
    type Found = ();
    fn see(&mut self, _: &[u8]) {}
    fn finish(self) {}
}

/// The running child, so that dropping its stream kills it.
#[derive(Default)]
struct Process {
    pid: Option<u32>,
    /// Set (under the lock) before the child is reaped, so that a kill
    /// never reaches a reused pid.
    finished: bool,
}

/// Kills the child when the stream is dropped before the dump ended (the
/// upload was cancelled); otherwise it would run until its next write.
struct KillOnDrop(Arc<Mutex<Process>>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(process) = self.0.lock() {
            if let (Some(pid), false) = (process.pid, process.finished) {
                // SAFETY: kill(2) with a pid of our own child that has not
                // been reaped (`finished` is set before it is) and a valid
                // signal number; it touches no memory.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
            }
        }
    }
}

/// The outcome of a dump: its summary and what the observer found.
pub type Outcome<F> = Result<(DumpSummary, F), ArchiveError>;

/// Runs the program. The stream yields the stored bytes; the receiver gets
/// the outcome once the stream has ended.
pub(crate) fn stream<O: Observer>(
    program: Program,
    compression: Compression,
    encryption: Option<Recipients>,
    observer: O,
) -> (ByteStream, oneshot::Receiver<Outcome<O::Found>>) {
    let (sender, receiver) = mpsc::channel::<io::Result<Bytes>>(crate::format::tar::QUEUE);
    let (outcome_sender, outcome_receiver) = oneshot::channel();
    let process = Arc::new(Mutex::new(Process::default()));
    let kill_on_drop = KillOnDrop(process.clone());
    tokio::task::spawn_blocking(move || {
        let mut guard = FailUnlessDone::new(sender.clone());
        let outcome = run(
            program,
            compression,
            encryption.as_ref(),
            observer,
            ChunkSink::new(sender),
            &process,
        );
        if let (Err(error), Some(sender)) = (&outcome, guard.disarm()) {
            let _ = sender.blocking_send(Err(io::Error::other(error.message.clone())));
        }
        let _ = outcome_sender.send(outcome);
    });
    let stream: ByteStream = Box::pin(futures::StreamExt::map(received(receiver), move |chunk| {
        let _held = &kill_on_drop;
        chunk
    }));
    (stream, outcome_receiver)
}

/// Marks the child as about to be reaped.
fn finishing(process: &Mutex<Process>) {
    if let Ok(mut process) = process.lock() {
        process.finished = true;
    }
}

/// `program --version`'s first line (trimmed), or `missing` when it
/// cannot be run; `name` names it in the message.
pub async fn version_line(
    program: &std::path::Path,
    name: &str,
    missing: FailureCode,
) -> Result<String, ArchiveError> {
    let output = tokio::process::Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| {
            ArchiveError::new(
                missing,
                format!("{name} ({}) cannot be run: {e}", program.display()),
            )
        })?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Drains a child's stderr, keeping its last [`STDERR_KEPT`] bytes.
pub(crate) fn drain_stderr(
    mut stderr: impl Read + Send + 'static,
) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buffer = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buffer) {
            if n == 0 {
                break;
            }
            kept.extend_from_slice(&buffer[..n]);
            if kept.len() > STDERR_KEPT {
                kept.drain(..kept.len() - STDERR_KEPT);
            }
        }
        String::from_utf8_lossy(&kept).trim().to_owned()
    })
}

fn run<O: Observer>(
    program: Program,
    compression: Compression,
    encryption: Option<&Recipients>,
    mut observer: O,
    sink: ChunkSink,
    process: &Mutex<Process>,
) -> Outcome<O::Found> {
    let Program {
        mut command,
        name,
        missing,
        failed,
    } = program;
    let upload_stopped = |error: io::Error| {
        ArchiveError::new(
            FailureCode::UploadFailed,
            format!("the upload stopped: {error}"),
        )
    };
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|e| {
        ArchiveError::new(
            missing,
            format!(
                "{name} ({}) cannot be run: {e}",
                command.get_program().to_string_lossy()
            ),
        )
    })?;
    if let Ok(mut process) = process.lock() {
        process.pid = Some(child.id());
    }
    let (Some(mut stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        finishing(process);
        let _ = child.kill();
        let _ = child.wait();
        return Err(ArchiveError::new(
            failed,
            format!("{name}'s output is not readable"),
        ));
    };
    let errors = drain_stderr(stderr);
    let mut compressor = match Sealed::new(encryption, sink)
        .and_then(|sealed| Compressor::new(compression, sealed))
    {
        Ok(compressor) => compressor,
        Err(error) => {
            finishing(process);
            let _ = child.kill();
            let _ = child.wait();
            return Err(upload_stopped(error));
        }
    };
    let mut dump_bytes = 0u64;
    let mut buffer = vec![0u8; 256 * 1024];
    let copied: io::Result<()> = loop {
        match stdout.read(&mut buffer) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                dump_bytes += n as u64;
                observer.see(&buffer[..n]);
                if let Err(error) = compressor.write_all(&buffer[..n]) {
                    break Err(error);
                }
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => break Err(error),
        }
    };
    finishing(process);
    if let Err(error) = copied {
        let _ = child.kill();
        let _ = child.wait();
        return Err(upload_stopped(error));
    }
    let status = child
        .wait()
        .map_err(|e| ArchiveError::new(failed, format!("waiting for {name}: {e}")))?;
    let stderr_text = errors.join().unwrap_or_default();
    if !status.success() {
        let detail = if stderr_text.is_empty() {
            "no message".to_owned()
        } else {
            stderr_text
        };
        return Err(ArchiveError::new(
            failed,
            format!("{name} failed ({status}): {detail}"),
        ));
    }
    let sink = compressor.finish().map_err(upload_stopped)?;
    let (stored_bytes, sha256) = sink.close().map_err(upload_stopped)?;
    Ok((
        DumpSummary {
            dump_bytes,
            stored_bytes,
            sha256,
        },
        observer.finish(),
    ))
}
