//! Extracting a tar stream into a directory, entry by entry, refusing
//! anything that could reach outside it.
//!
//! Never `unpack()`: every entry is checked and written relative to a
//! directory descriptor of the destination (`openat`, `mkdirat`,
//! `symlinkat`, `linkat` with `O_NOFOLLOW`), so no path is resolved through
//! a symlink, whatever the archive or the destination holds. Refused, with
//! the entry named: absolute paths and `..`; symlinks whose target is
//! absolute or climbs above the destination (`..` may only lead a target,
//! and no further up than the link's own depth); hard links to anything
//! outside; writes through a symlink or into a non-directory; an entry that
//! replaces an earlier one; device files and FIFOs. The tar stream is cut
//! at a cap (from the manifest), so a decompression bomb stops there.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use tar::EntryType;

/// What an extraction wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extracted {
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    pub hard_links: u64,
    /// Bytes of file content written.
    pub bytes: u64,
}

/// Why an extraction stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// An entry that would reach outside the destination, or that Cairn
    /// does not restore.
    #[error("refused entry {entry:?}: {reason}")]
    Refused { entry: String, reason: String },
    #[error("the archive holds more than the {0} bytes its manifest allows: refused as a decompression bomb")]
    TooLarge(u64),
    #[error("{0}")]
    Io(String),
}

fn refused(entry: &str, reason: impl Into<String>) -> ExtractError {
    ExtractError::Refused {
        entry: entry.to_owned(),
        reason: reason.into(),
    }
}

/// Reads at most `cap` bytes; one more is an error that says so.
struct Capped<R> {
    inner: R,
    cap: Option<u64>,
    read: u64,
}

/// The marker of a read beyond the cap.
#[derive(Debug)]
struct OverCap;

impl std::fmt::Display for OverCap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the archive is larger than its cap")
    }
}

impl std::error::Error for OverCap {}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buffer)?;
        self.read += n as u64;
        match self.cap {
            Some(cap) if self.read > cap => Err(io::Error::other(OverCap)),
            _ => Ok(n),
        }
    }
}

fn is_over_cap(error: &io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.downcast_ref::<OverCap>().is_some())
}

/// The tar reader over `plain`, cut at `cap` bytes.
fn capped_archive<R: Read>(plain: R, cap: Option<u64>) -> tar::Archive<Capped<R>> {
    tar::Archive::new(Capped {
        inner: plain,
        cap,
        read: 0,
    })
}

/// What a read error of the tar stream means: past the cap, a bomb;
/// otherwise the archive could not be read.
fn read_error(cap: Option<u64>) -> impl Fn(io::Error) -> ExtractError {
    move |e: io::Error| {
        if is_over_cap(&e) {
            ExtractError::TooLarge(cap.unwrap_or(0))
        } else {
            ExtractError::Io(format!("reading the archive: {e}"))
        }
    }
}

fn c_name(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::other("a name holds a NUL byte"))
}

fn last_error() -> io::Error {
    io::Error::last_os_error()
}

/// Opens the directory `name` inside `parent`, never through a symlink.
fn open_dir_at(parent: &File, name: &OsStr) -> io::Result<File> {
    let name = c_name(name)?;
    // SAFETY: a valid directory descriptor and a NUL-terminated name; the
    // returned descriptor is owned by the File.
    let fd = unsafe {
        libc::openat(
            parent.as_raw_fd(),
            name.as_ptr(),
            libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(last_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// The checked parts of an entry's path: every component is a plain name.
fn plain_components<'a>(entry: &str, path: &'a Path) -> Result<Vec<&'a OsStr>, ExtractError> {
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => parts.push(name),
            Component::CurDir => {}
            Component::ParentDir => return Err(refused(entry, "the path holds '..'")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(refused(entry, "the path is absolute"))
            }
        }
    }
    if parts.is_empty() {
        return Err(refused(entry, "the path is empty"));
    }
    Ok(parts)
}

/// Walks from `root` through `directories`, creating missing ones; a
/// component that is a symlink or not a directory is refused.
fn walk(
    root: &File,
    entry: &str,
    directories: &[&OsStr],
    create: bool,
) -> Result<File, ExtractError> {
    let mut current = root
        .try_clone()
        .map_err(|e| ExtractError::Io(e.to_string()))?;
    for name in directories {
        let next = match open_dir_at(&current, name) {
            Ok(directory) => directory,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && create => {
                let c = c_name(name).map_err(|e| ExtractError::Io(e.to_string()))?;
                // SAFETY: valid descriptor and NUL-terminated name.
                if unsafe { libc::mkdirat(current.as_raw_fd(), c.as_ptr(), 0o755) } != 0 {
                    let error = last_error();
                    if error.raw_os_error() != Some(libc::EEXIST) {
                        return Err(ExtractError::Io(format!(
                            "creating a directory for {entry:?}: {error}"
                        )));
                    }
                }
                open_dir_at(&current, name).map_err(|e| through_link(entry, name, &e))?
            }
            Err(e) => return Err(through_link(entry, name, &e)),
        };
        current = next;
    }
    Ok(current)
}

fn through_link(entry: &str, name: &OsStr, error: &io::Error) -> ExtractError {
    match error.raw_os_error() {
        Some(libc::ELOOP) | Some(libc::ENOTDIR) => refused(
            entry,
            format!(
                "it would be written through {:?}, which is a symlink or not a directory",
                name
            ),
        ),
        Some(libc::ENOENT) => refused(entry, format!("{name:?} does not exist")),
        _ => ExtractError::Io(format!("{entry:?}: {error}")),
    }
}

/// Checks a symlink's target: relative, with `..` only as leading
/// components and no more of them than the link's depth, so that the link
/// resolves inside the destination (and every link does, so chains of
/// links do too).
fn check_link_target(entry: &str, depth: usize, target: &Path) -> Result<(), ExtractError> {
    let mut climbing = true;
    let mut up = 0usize;
    for component in target.components() {
        match component {
            Component::RootDir | Component::Prefix(_) => {
                return Err(refused(
                    entry,
                    format!(
                        "the symlink points to the absolute path {}",
                        target.display()
                    ),
                ))
            }
            Component::ParentDir if climbing => up += 1,
            Component::ParentDir => {
                return Err(refused(
                    entry,
                    format!(
                        "the symlink's target {} climbs with '..' after a name",
                        target.display()
                    ),
                ))
            }
            Component::CurDir => {}
            Component::Normal(_) => climbing = false,
        }
    }
    if up > depth {
        return Err(refused(
            entry,
            format!(
                "the symlink points outside the volume ({})",
                target.display()
            ),
        ));
    }
    Ok(())
}

/// Metadata applied to directories once everything is in place (adding
/// entries would change their mtimes).
struct DirectoryMeta {
    path: Vec<std::ffi::OsString>,
    mode: u32,
    owner: Option<(u32, u32)>,
    mtime: i64,
}

fn set_times(fd: &File, mtime: i64) -> io::Result<()> {
    let times = [
        libc::timespec {
            tv_sec: mtime as libc::time_t,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: mtime as libc::time_t,
            tv_nsec: 0,
        },
    ];
    // SAFETY: a valid descriptor and a two-element timespec array.
    if unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) } != 0 {
        return Err(last_error());
    }
    Ok(())
}

fn set_mode_owner(fd: &File, mode: u32, owner: Option<(u32, u32)>) -> io::Result<()> {
    if let Some((uid, gid)) = owner {
        // SAFETY: a valid descriptor.
        if unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) } != 0 {
            return Err(last_error());
        }
    }
    // SAFETY: a valid descriptor; the mode is masked to permission bits.
    if unsafe { libc::fchmod(fd.as_raw_fd(), (mode & 0o7777) as libc::mode_t) } != 0 {
        return Err(last_error());
    }
    Ok(())
}

/// The target of a link entry (`what`: "symlink" or "hard link").
fn link_target<R: Read>(
    entry: &tar::Entry<'_, R>,
    shown: &str,
    what: &str,
    io_error: impl Fn(io::Error) -> ExtractError,
) -> Result<std::path::PathBuf, ExtractError> {
    Ok(entry
        .link_name()
        .map_err(io_error)?
        .ok_or_else(|| refused(shown, format!("the {what} has no target")))?
        .into_owned())
}

/// The checked parts of a hard link's target: inside the destination.
fn hard_link_parts<'a>(shown: &str, target: &'a Path) -> Result<Vec<&'a OsStr>, ExtractError> {
    plain_components(shown, target).map_err(|_| {
        refused(
            shown,
            format!(
                "the hard link points outside the volume ({})",
                target.display()
            ),
        )
    })
}

/// Extracts the tar stream `plain` into `destination`, an existing
/// directory, reading at most `cap` bytes of it.
pub fn extract(
    plain: impl Read,
    destination: &Path,
    cap: Option<u64>,
) -> Result<Extracted, ExtractError> {
    let root = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(destination)
            .map_err(|e| ExtractError::Io(format!("opening {}: {e}", destination.display())))?
    };
    // SAFETY: geteuid has no preconditions.
    let as_root = unsafe { libc::geteuid() } == 0;
    let io_error = &read_error(cap);
    let mut archive = capped_archive(plain, cap);
    let mut done = Extracted::default();
    let mut directories: Vec<DirectoryMeta> = Vec::new();
    for entry in archive.entries().map_err(io_error)? {
        let mut entry = entry.map_err(io_error)?;
        let path = entry.path().map_err(io_error)?.into_owned();
        let shown = path.display().to_string();
        let parts = plain_components(&shown, &path)?;
        let (name, parents) = parts
            .split_last()
            .ok_or_else(|| refused(&shown, "the path is empty"))?;
        let header = entry.header();
        let mode = header.mode().unwrap_or(0o644);
        let mtime = header.mtime().unwrap_or(0) as i64;
        let owner = if as_root {
            match (header.uid(), header.gid()) {
                (Ok(uid), Ok(gid)) => Some((uid as u32, gid as u32)),
                _ => None,
            }
        } else {
            None
        };
        let entry_type = header.entry_type();
        let c = c_name(name).map_err(|e| ExtractError::Io(e.to_string()))?;
        match entry_type {
            EntryType::Directory => {
                let parent = walk(&root, &shown, parents, true)?;
                // SAFETY: valid descriptor and NUL-terminated name.
                if unsafe { libc::mkdirat(parent.as_raw_fd(), c.as_ptr(), 0o700) } != 0 {
                    let error = last_error();
                    if error.raw_os_error() != Some(libc::EEXIST) {
                        return Err(ExtractError::Io(format!("creating {shown:?}: {error}")));
                    }
                    // It exists: it must be a real directory (created for an
                    // earlier entry), not a symlink of the same name.
                    open_dir_at(&parent, name).map_err(|e| match e.raw_os_error() {
                        Some(libc::ELOOP) | Some(libc::ENOTDIR) => refused(
                            &shown,
                            "an earlier entry of the same name is a symlink or a file",
                        ),
                        _ => ExtractError::Io(format!("{shown:?}: {e}")),
                    })?;
                }
                directories.push(DirectoryMeta {
                    path: parts.iter().map(|p| p.to_os_string()).collect(),
                    mode,
                    owner,
                    mtime,
                });
                done.directories += 1;
            }
            EntryType::Regular | EntryType::Continuous => {
                let parent = walk(&root, &shown, parents, true)?;
                // SAFETY: valid descriptor, NUL-terminated name; the
                // returned descriptor is owned by the File below.
                let fd = unsafe {
                    libc::openat(
                        parent.as_raw_fd(),
                        c.as_ptr(),
                        libc::O_WRONLY
                            | libc::O_CREAT
                            | libc::O_EXCL
                            | libc::O_NOFOLLOW
                            | libc::O_CLOEXEC,
                        0o600 as libc::c_uint,
                    )
                };
                if fd < 0 {
                    let error = last_error();
                    return Err(if error.raw_os_error() == Some(libc::EEXIST) {
                        refused(&shown, "an earlier entry has the same name")
                    } else {
                        ExtractError::Io(format!("creating {shown:?}: {error}"))
                    });
                }
                // SAFETY: `fd` was just opened and is owned by nobody else.
                let mut file = unsafe { File::from_raw_fd(fd) };
                let written = io::copy(&mut entry, &mut file).map_err(io_error)?;
                set_mode_owner(&file, mode, owner)
                    .and_then(|()| set_times(&file, mtime))
                    .map_err(|e| ExtractError::Io(format!("{shown:?}: {e}")))?;
                done.files += 1;
                done.bytes += written;
            }
            EntryType::Symlink => {
                let target = link_target(&entry, &shown, "symlink", io_error)?;
                check_link_target(&shown, parents.len(), &target)?;
                let parent = walk(&root, &shown, parents, true)?;
                let target_c = CString::new(target.as_os_str().as_bytes())
                    .map_err(|_| refused(&shown, "the target holds a NUL byte"))?;
                // SAFETY: NUL-terminated strings and a valid descriptor.
                if unsafe { libc::symlinkat(target_c.as_ptr(), parent.as_raw_fd(), c.as_ptr()) }
                    != 0
                {
                    let error = last_error();
                    return Err(if error.raw_os_error() == Some(libc::EEXIST) {
                        refused(&shown, "an earlier entry has the same name")
                    } else {
                        ExtractError::Io(format!("creating {shown:?}: {error}"))
                    });
                }
                if let Some((uid, gid)) = owner {
                    // SAFETY: valid descriptor and name; the link itself
                    // (AT_SYMLINK_NOFOLLOW) changes owner.
                    unsafe {
                        libc::fchownat(
                            parent.as_raw_fd(),
                            c.as_ptr(),
                            uid,
                            gid,
                            libc::AT_SYMLINK_NOFOLLOW,
                        );
                    }
                }
                done.symlinks += 1;
            }
            EntryType::Link => {
                let target = link_target(&entry, &shown, "hard link", io_error)?;
                let target_shown = target.display().to_string();
                let target_parts = hard_link_parts(&shown, &target)?;
                let (target_name, target_parents) = target_parts
                    .split_last()
                    .ok_or_else(|| refused(&shown, "the hard link has no target"))?;
                let source = walk(&root, &shown, target_parents, false)?;
                let parent = walk(&root, &shown, parents, true)?;
                let target_c = c_name(target_name).map_err(|e| ExtractError::Io(e.to_string()))?;
                // SAFETY: valid descriptors and NUL-terminated names; flags
                // 0: a symlink is linked itself, never followed.
                if unsafe {
                    libc::linkat(
                        source.as_raw_fd(),
                        target_c.as_ptr(),
                        parent.as_raw_fd(),
                        c.as_ptr(),
                        0,
                    )
                } != 0
                {
                    let error = last_error();
                    return Err(match error.raw_os_error() {
                        Some(libc::EEXIST) => refused(&shown, "an earlier entry has the same name"),
                        Some(libc::ENOENT) => refused(
                            &shown,
                            format!("the hard link's target {target_shown} is not in the archive before it"),
                        ),
                        _ => ExtractError::Io(format!("linking {shown:?}: {error}")),
                    });
                }
                done.hard_links += 1;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                return Err(refused(&shown, "device files and FIFOs are not restored"));
            }
            other => {
                return Err(refused(&shown, format!("unsupported entry type {other:?}")));
            }
        }
    }
    // Deepest first: a parent's mode may forbid writing into it.
    for meta in directories.iter().rev() {
        let parts: Vec<&OsStr> = meta.path.iter().map(|p| p.as_os_str()).collect();
        let directory = walk(&root, "", &parts, false)?;
        set_mode_owner(&directory, meta.mode, meta.owner)
            .and_then(|()| set_times(&directory, meta.mtime))
            .map_err(|e| ExtractError::Io(format!("{:?}: {e}", meta.path)))?;
    }
    Ok(done)
}

/// Reads the tar stream `plain` to its end (at most `cap` bytes) and applies
/// the rules of [`extract`] that do not depend on a destination — paths,
/// link targets, entry types, names used twice, writes through a symlink
/// of the archive, the size cap — without writing anything. A dry run of a
/// restore; what it counts is what [`extract`] would write.
pub fn check(plain: impl Read, cap: Option<u64>) -> Result<Extracted, ExtractError> {
    use std::collections::HashMap;
    use std::path::PathBuf;
    #[derive(PartialEq)]
    enum Seen {
        Directory,
        Symlink,
        Other,
    }
    let io_error = &read_error(cap);
    let mut archive = capped_archive(plain, cap);
    let mut seen: HashMap<PathBuf, Seen> = HashMap::new();
    let mut done = Extracted::default();
    for entry in archive.entries().map_err(io_error)? {
        let mut entry = entry.map_err(io_error)?;
        let path = entry.path().map_err(io_error)?.into_owned();
        let shown = path.display().to_string();
        let parts = plain_components(&shown, &path)?;
        let (_, parents) = parts
            .split_last()
            .ok_or_else(|| refused(&shown, "the path is empty"))?;
        let mut prefix = PathBuf::new();
        for parent in parents {
            prefix.push(parent);
            match seen.get(&prefix) {
                Some(Seen::Symlink) => {
                    return Err(refused(&shown, "the path leads through a symlink"))
                }
                Some(Seen::Other) => {
                    return Err(refused(
                        &shown,
                        "an earlier entry of the same name is a symlink or a file",
                    ))
                }
                _ => {}
            }
        }
        let own: PathBuf = parts.iter().collect();
        let entry_type = entry.header().entry_type();
        let kind = match entry_type {
            EntryType::Directory => Seen::Directory,
            EntryType::Symlink => Seen::Symlink,
            _ => Seen::Other,
        };
        match seen.get(&own) {
            Some(Seen::Directory) if kind == Seen::Directory => {}
            Some(_) if kind == Seen::Directory => {
                return Err(refused(
                    &shown,
                    "an earlier entry of the same name is a symlink or a file",
                ))
            }
            Some(_) => return Err(refused(&shown, "an earlier entry has the same name")),
            None => {}
        }
        match entry_type {
            EntryType::Directory => done.directories += 1,
            EntryType::Regular | EntryType::Continuous => {
                done.bytes += io::copy(&mut entry, &mut io::sink()).map_err(io_error)?;
                done.files += 1;
            }
            EntryType::Symlink => {
                let target = link_target(&entry, &shown, "symlink", io_error)?;
                check_link_target(&shown, parents.len(), &target)?;
                done.symlinks += 1;
            }
            EntryType::Link => {
                let target = link_target(&entry, &shown, "hard link", io_error)?;
                let target_shown = target.display().to_string();
                let target_parts = hard_link_parts(&shown, &target)?;
                let target_path: PathBuf = target_parts.iter().collect();
                if seen.get(&target_path) != Some(&Seen::Other) {
                    return Err(refused(
                        &shown,
                        format!("the hard link's target {target_shown} is not a file in the archive before it"),
                    ));
                }
                done.hard_links += 1;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                return Err(refused(&shown, "device files and FIFOs are not restored"));
            }
            other => {
                return Err(refused(&shown, format!("unsupported entry type {other:?}")));
            }
        }
        seen.insert(own, kind);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_targets_stay_inside() {
        let ok = |depth, target: &str| check_link_target("l", depth, Path::new(target)).is_ok();
        assert!(ok(0, "file"));
        assert!(ok(0, "dir/file"));
        assert!(ok(1, "../file"));
        assert!(ok(2, "../../a/b"));
        assert!(!ok(0, ".."));
        assert!(!ok(1, "../.."));
        assert!(!ok(0, "/etc/passwd"));
        assert!(!ok(3, "s/.."));
        assert!(!ok(3, "a/../b"));
    }
}
