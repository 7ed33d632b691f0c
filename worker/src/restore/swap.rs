//! The swap of a restored volume's entries, recoverable after a crash.
//!
//! A restore keeps `_data` itself (its owner, mode and any bind mount) and
//! replaces its entries: the old ones are renamed into a sibling directory
//! (`.cairn-replaced-{id}`), then the staged ones (`.cairn-restore-{id}`)
//! are renamed in. Renames are one at a time, so a process killed halfway
//! leaves a mix. A journal (`.cairn-swap-{id}.json` beside `_data`) is
//! written and flushed before the first rename and again when the second
//! half begins; whoever finds it later — the reaper of the dead restore,
//! the next restore of the same volume, or a worker starting — settles the
//! volume from it:
//!
//! 1. phase `aside` (old entries leaving `_data`): **rolled back** — every
//!    entry of the aside directory goes back into `_data`, the staged tree
//!    is deleted. `_data` holds exactly what it held before.
//! 2. phase `in` (every old entry is aside, flushed; staged ones arriving):
//!    **completed** — the rest of the staged entries go in, the old ones
//!    are deleted. `_data` holds exactly the restored backup, which was
//!    verified in full before the swap began.
//!
//! Each step is idempotent (an entry is in exactly one of the two
//! directories at any moment, since a rename is atomic), so recovery that
//! is itself killed is simply run again.

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

const JOURNAL_PREFIX: &str = ".cairn-swap-";
const STAGING_PREFIX: &str = ".cairn-restore-";
const ASIDE_PREFIX: &str = ".cairn-replaced-";

/// Where the swap is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Old entries are being moved aside: recovery rolls back.
    Aside,
    /// Every old entry is aside; staged ones are moving in: recovery
    /// completes.
    In,
}

/// The journal's content: enough to settle the volume without the
/// database.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Journal {
    restore_id: Uuid,
    phase: Phase,
}

/// How a swap found unfinished was settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Settled {
    /// `_data` holds its old entries again.
    RolledBack,
    /// `_data` holds the restored entries.
    Completed,
}

impl Settled {
    /// What it means for the volume, for a restore's record.
    pub fn describe(self, data: &Path) -> String {
        match self {
            Settled::RolledBack => format!(
                "the swap of {}'s entries had begun and was rolled back: the volume holds exactly what it held before the restore",
                data.display()
            ),
            Settled::Completed => format!(
                "the swap of {}'s entries had moved every old entry aside and was completed: the volume holds exactly the restored backup",
                data.display()
            ),
        }
    }
}

/// A swap found and settled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    pub restore_id: Uuid,
    pub data: PathBuf,
    pub settled: Settled,
}

fn journal_path(holder: &Path, id: Uuid) -> PathBuf {
    holder.join(format!("{JOURNAL_PREFIX}{id}.json"))
}

fn staging_path(holder: &Path, id: Uuid) -> PathBuf {
    holder.join(format!("{STAGING_PREFIX}{id}"))
}

fn aside_path(holder: &Path, id: Uuid) -> PathBuf {
    holder.join(format!("{ASIDE_PREFIX}{id}"))
}

/// The staging directory of restore `id` beside `data`.
pub fn staging_dir(data: &Path, id: Uuid) -> std::io::Result<PathBuf> {
    Ok(staging_path(holder_of(data)?, id))
}

fn holder_of(data: &Path) -> std::io::Result<&Path> {
    data.parent()
        .ok_or_else(|| std::io::Error::other("the volume directory has no parent"))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Writes the journal atomically (temporary file, flush, rename, flush of
/// the directory): a crash leaves the old journal or the new one.
fn write_journal(holder: &Path, journal: &Journal) -> std::io::Result<()> {
    let path = journal_path(holder, journal.restore_id);
    let temporary = holder.join(format!("{JOURNAL_PREFIX}{}.json.tmp", journal.restore_id));
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(&serde_json::to_vec(journal).map_err(std::io::Error::other)?)?;
    file.sync_all()?;
    std::fs::rename(&temporary, &path)?;
    sync_dir(holder)
}

fn names(dir: &Path) -> std::io::Result<Vec<OsString>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|entry| entry.map(|e| e.file_name())).collect(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(error) => Err(error),
    }
}

/// Moves every entry of `from` into `to` (both on one file system).
fn move_all(from: &Path, to: &Path) -> std::io::Result<usize> {
    let entries = names(from)?;
    for name in &entries {
        std::fs::rename(from.join(name), to.join(name)).map_err(|error| {
            std::io::Error::other(format!(
                "moving {:?} from {} to {}: {error}",
                name,
                from.display(),
                to.display()
            ))
        })?;
    }
    Ok(entries.len())
}

fn remove_tree(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// An exclusive `flock` on a volume's directory (the parent of `_data`),
/// held while a swap or a recovery touches it, so that a recovery never
/// settles a swap that is still running (on this machine: the volume's
/// directory is local). Released when dropped.
struct HolderLock(#[allow(dead_code)] std::fs::File);

/// Takes the lock, waiting for it (`wait`) or answering `None` when it is
/// held.
fn lock_holder(holder: &Path, wait: bool) -> std::io::Result<Option<HolderLock>> {
    let file = std::fs::File::open(holder)?;
    let flags = libc::LOCK_EX | if wait { 0 } else { libc::LOCK_NB };
    // SAFETY: a valid descriptor, owned by `file` for the lock's lifetime.
    if unsafe { libc::flock(file.as_raw_fd(), flags) } != 0 {
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Ok(None);
        }
        return Err(error);
    }
    Ok(Some(HolderLock(file)))
}

/// Whether restore `id` left a journal beside `data`: its swap is not
/// settled yet, so its staging directory must be left for the recovery.
pub fn unsettled(data: &Path, id: Uuid) -> bool {
    holder_of(data).is_ok_and(|holder| journal_path(holder, id).exists())
}

/// Replaces the entries of `data` (created when missing) with those of the
/// staging directory of restore `id`, journalled so that a crash at any
/// point is settled by [`recover`]. The staged data is flushed to disk
/// first. Returns how many old entries were replaced.
///
/// A failed rename while old entries move aside rolls back at once; once
/// the journal says `in`, nothing is moved back: a failure leaves the
/// journal for the recovery, which completes the swap ([`unsettled`] tells
/// the caller to keep the staging directory).
pub fn swap(data: &Path, id: Uuid) -> std::io::Result<usize> {
    let holder = holder_of(data)?;
    let _lock = lock_holder(holder, true)?;
    let staging = staging_path(holder, id);
    let aside = aside_path(holder, id);
    let staged = std::fs::File::open(&staging)?;
    // SAFETY: a valid descriptor; syncfs flushes the file system it is on.
    if unsafe { libc::syncfs(staged.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    match std::fs::DirBuilder::new().mode(0o755).create(data) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(error),
    }
    std::fs::DirBuilder::new().mode(0o700).create(&aside)?;
    sync_dir(holder)?;
    write_journal(
        holder,
        &Journal {
            restore_id: id,
            phase: Phase::Aside,
        },
    )?;
    let replaced = match move_all(data, &aside) {
        Ok(count) => count,
        Err(error) => {
            return Err(match roll_back(data, id) {
                Ok(()) => {
                    std::io::Error::other(format!("{error}; the old entries were moved back"))
                }
                Err(again) => std::io::Error::other(format!(
                    "{error}; moving the old entries back failed too ({again}): the swap's journal \
                     remains, and the recovery rolls it back"
                )),
            });
        }
    };
    // Every old entry is aside, durably, before the journal says so.
    sync_dir(data)?;
    sync_dir(&aside)?;
    write_journal(
        holder,
        &Journal {
            restore_id: id,
            phase: Phase::In,
        },
    )?;
    complete(data, id).map_err(|error| {
        std::io::Error::other(format!(
            "{error}; the swap's journal remains, and the recovery completes it"
        ))
    })?;
    Ok(replaced)
}

/// Puts the old entries back and discards the staged tree and journal.
fn roll_back(data: &Path, id: Uuid) -> std::io::Result<()> {
    let holder = holder_of(data)?;
    let aside = aside_path(holder, id);
    move_all(&aside, data)?;
    sync_dir(data)?;
    remove_tree(&aside)?;
    remove_tree(&staging_path(holder, id))?;
    remove_file(&journal_path(holder, id))?;
    sync_dir(holder)
}

/// Moves the rest of the staged entries in, deletes the old ones and the
/// journal.
fn complete(data: &Path, id: Uuid) -> std::io::Result<()> {
    let holder = holder_of(data)?;
    let staging = staging_path(holder, id);
    move_all(&staging, data)?;
    sync_dir(data)?;
    remove_tree(&staging)?;
    remove_tree(&aside_path(holder, id))?;
    remove_file(&journal_path(holder, id))?;
    sync_dir(holder)
}

fn remove_file(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// Settles the unfinished swap of restore `id` in `holder` (a volume's
/// directory, parent of `_data`), if its journal is there and no swap or
/// recovery holds the directory.
pub fn recover_one(holder: &Path, id: Uuid) -> std::io::Result<Option<Recovered>> {
    if !journal_path(holder, id).exists() {
        return Ok(None);
    }
    let Some(_lock) = lock_holder(holder, false)? else {
        return Ok(None);
    };
    settle(holder, id)
}

fn settle(holder: &Path, id: Uuid) -> std::io::Result<Option<Recovered>> {
    let path = journal_path(holder, id);
    let journal: Journal = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            std::io::Error::other(format!(
                "the swap journal {} is unreadable: {e}",
                path.display()
            ))
        })?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let data = holder.join("_data");
    let settled = match journal.phase {
        Phase::Aside => {
            roll_back(&data, id)?;
            Settled::RolledBack
        }
        Phase::In => {
            complete(&data, id)?;
            Settled::Completed
        }
    };
    Ok(Some(Recovered {
        restore_id: id,
        data,
        settled,
    }))
}

/// The restores whose swap journals are in `holder`.
pub fn journals_in(holder: &Path) -> std::io::Result<Vec<Uuid>> {
    Ok(names(holder)?
        .iter()
        .filter_map(|name| {
            name.to_str()?
                .strip_prefix(JOURNAL_PREFIX)?
                .strip_suffix(".json")
                .and_then(|id| Uuid::parse_str(id).ok())
        })
        .collect())
}

/// Settles every unfinished swap in `holder`, then removes what restores
/// that died before their swap left: staging directories and empty aside
/// directories. A non-empty aside directory without a journal (left by a
/// Cairn older than the journal) is left for a person, never deleted.
/// Call it only while no restore of this volume runs (a destination has at
/// most one active restore, and this is for the next one or a dead one).
pub fn recover(holder: &Path) -> std::io::Result<Vec<Recovered>> {
    let mut recovered = Vec::new();
    // A swap running on this machine holds the directory: nothing here is
    // left over then.
    let Some(_lock) = lock_holder(holder, false)? else {
        return Ok(recovered);
    };
    for id in journals_in(holder)? {
        if let Some(done) = settle(holder, id)? {
            recovered.push(done);
        }
    }
    for name in names(holder)? {
        let Some(text) = name.to_str() else { continue };
        let path = holder.join(&name);
        if text.starts_with(STAGING_PREFIX) && path.is_dir() {
            remove_tree(&path)?;
        } else if text.starts_with(ASIDE_PREFIX) && path.is_dir() {
            if let Err(error) = std::fs::remove_dir(&path) {
                tracing::warn!(
                    path = %path.display(),
                    "a directory of entries moved aside by an interrupted restore is left in place: {error}"
                );
            }
        } else if text.starts_with(JOURNAL_PREFIX) && text.ends_with(".tmp") {
            remove_file(&path)?;
        }
    }
    Ok(recovered)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(dir: &Path) -> Vec<(String, String)> {
        let mut found = Vec::new();
        for entry in walkdir(dir, dir) {
            found.push(entry);
        }
        found.sort();
        found
    }

    fn walkdir(root: &Path, dir: &Path) -> Vec<(String, String)> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(root).unwrap().display().to_string();
            if path.is_dir() {
                found.push((relative, "dir".into()));
                found.extend(walkdir(root, &path));
            } else {
                found.push((relative, std::fs::read_to_string(&path).unwrap()));
            }
        }
        found
    }

    fn volume(root: &Path, id: Uuid) -> PathBuf {
        let data = root.join("app-blue_data/_data");
        std::fs::create_dir_all(data.join("old")).unwrap();
        std::fs::write(data.join("old/a"), "old").unwrap();
        std::fs::write(data.join("same"), "old").unwrap();
        for i in 0..20 {
            std::fs::write(data.join(format!("o{i}")), "old").unwrap();
        }
        let staging = staging_dir(&data, id).unwrap();
        std::fs::create_dir_all(staging.join("new")).unwrap();
        std::fs::write(staging.join("new/b"), "new").unwrap();
        std::fs::write(staging.join("same"), "new").unwrap();
        for i in 0..20 {
            std::fs::write(staging.join(format!("n{i}")), "new").unwrap();
        }
        data
    }

    fn beside(data: &Path) -> Vec<String> {
        let mut left: Vec<String> = std::fs::read_dir(data.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        left
    }

    #[test]
    fn a_swap_replaces_the_entries_and_keeps_the_directory() {
        use std::os::unix::fs::MetadataExt;
        let root = tempfile::tempdir().unwrap();
        let id = Uuid::now_v7();
        let data = volume(root.path(), id);
        let expected = tree(&staging_dir(&data, id).unwrap());
        let inode = std::fs::metadata(&data).unwrap().ino();
        assert_eq!(swap(&data, id).unwrap(), 22);
        assert_eq!(tree(&data), expected);
        assert_eq!(std::fs::metadata(&data).unwrap().ino(), inode);
        assert_eq!(beside(&data), ["_data"]);
    }

    /// A crash is simulated by stopping after `moved` renames of a phase
    /// (the state a SIGKILL leaves); recovery gives exactly one tree.
    #[test]
    fn an_interrupted_swap_settles_to_one_tree() {
        for (phase, moved) in [
            (Phase::Aside, 0),
            (Phase::Aside, 7),
            (Phase::Aside, 22),
            (Phase::In, 0),
            (Phase::In, 9),
            (Phase::In, 22),
        ] {
            let root = tempfile::tempdir().unwrap();
            let id = Uuid::now_v7();
            let data = volume(root.path(), id);
            let holder = data.parent().unwrap().to_path_buf();
            let old = tree(&data);
            let staging = staging_dir(&data, id).unwrap();
            let new = tree(&staging);
            let aside = aside_path(&holder, id);
            std::fs::create_dir(&aside).unwrap();
            write_journal(
                &holder,
                &Journal {
                    restore_id: id,
                    phase: Phase::Aside,
                },
            )
            .unwrap();
            let partly = |from: &Path, to: &Path, count: usize| {
                let mut entries = names(from).unwrap();
                entries.sort();
                for name in entries.iter().take(count) {
                    std::fs::rename(from.join(name), to.join(name)).unwrap();
                }
            };
            match phase {
                Phase::Aside => partly(&data, &aside, moved),
                Phase::In => {
                    partly(&data, &aside, usize::MAX);
                    write_journal(
                        &holder,
                        &Journal {
                            restore_id: id,
                            phase: Phase::In,
                        },
                    )
                    .unwrap();
                    partly(&staging, &data, moved);
                }
            }
            let recovered = recover(&holder).unwrap();
            assert_eq!(recovered.len(), 1);
            let expected = match phase {
                Phase::Aside => (Settled::RolledBack, &old),
                Phase::In => (Settled::Completed, &new),
            };
            assert_eq!(recovered[0].settled, expected.0, "{phase:?} {moved}");
            assert_eq!(&tree(&data), expected.1, "{phase:?} {moved}");
            assert_eq!(beside(&data), ["_data"], "{phase:?} {moved}");
            // Settling again finds nothing to do.
            assert!(recover(&holder).unwrap().is_empty());
        }
    }

    #[test]
    fn leftovers_without_a_journal_are_cleaned_but_old_entries_are_kept() {
        let root = tempfile::tempdir().unwrap();
        let holder = root.path().join("app-blue_data");
        std::fs::create_dir_all(holder.join(".cairn-restore-dead/x")).unwrap();
        std::fs::create_dir_all(holder.join(".cairn-replaced-empty")).unwrap();
        std::fs::create_dir_all(holder.join(".cairn-replaced-full/kept")).unwrap();
        std::fs::create_dir_all(holder.join("_data")).unwrap();
        assert!(recover(&holder).unwrap().is_empty());
        let mut left: Vec<_> = std::fs::read_dir(&holder)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, vec![".cairn-replaced-full", "_data"]);
    }
}
