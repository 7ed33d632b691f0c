//! Free space on local disks: the directories of local targets and Cairn's
//! data directory (where the SQLite database grows).

use std::io;
use std::path::Path;

/// Bytes an unprivileged writer may still use on the file system holding
/// `path`, or its nearest existing ancestor (a target's directory is
/// created by its first backup).
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    let mut at = path;
    loop {
        match rustix::fs::statvfs(at) {
            Ok(stats) => return Ok(stats.f_bavail.saturating_mul(stats.f_frsize)),
            Err(rustix::io::Errno::NOENT) => {
                at = at.parent().ok_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, "no existing ancestor")
                })?;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_directory_is_measured_on_its_nearest_ancestor() {
        let dir = tempfile::tempdir().unwrap();
        let existing = free_bytes(dir.path()).unwrap();
        let missing = free_bytes(&dir.path().join("not/yet/made")).unwrap();
        assert!(existing > 0);
        // The same file system; other writers may move it a little.
        assert!(missing.abs_diff(existing) < 64 * 1024 * 1024);
    }
}
