//! Volume trees: built with every kind of entry, described for before and
//! after comparisons, extracted from archives with GNU tar; and raw tar
//! streams holding what no well-behaved writer writes.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};

/// What a tree holds, comparable: per path, its kind, mode, content hash or
/// link target, and mtime.
pub fn describe(root: &Path) -> BTreeMap<String, String> {
    let mut tree = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
    {
        let entry = entry.unwrap();
        let relative = entry
            .path()
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if relative.is_empty() {
            continue;
        }
        let metadata = entry.path().symlink_metadata().unwrap();
        let kind = if metadata.file_type().is_symlink() {
            format!(
                "link -> {}",
                std::fs::read_link(entry.path()).unwrap().display()
            )
        } else if metadata.is_dir() {
            format!("dir {:o}", metadata.permissions().mode() & 0o7777)
        } else if metadata.is_file() {
            let digest = Sha256::digest(std::fs::read(entry.path()).unwrap());
            format!(
                "file {:o} {} bytes {:x} mtime {}",
                metadata.permissions().mode() & 0o7777,
                metadata.len(),
                digest,
                metadata.mtime()
            )
        } else {
            "special".to_owned()
        };
        tree.insert(relative, kind);
    }
    tree
}

pub fn build_volume(root: &Path, big: usize) {
    use std::os::unix::fs::symlink;
    std::fs::create_dir_all(root.join("nested/deeper/deepest")).unwrap();
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::create_dir_all(root.join("cache/tmp")).unwrap();
    std::fs::write(root.join("nested/deeper/deepest/note.txt"), b"deep\n").unwrap();
    std::fs::write(root.join("cache/tmp/drop.bin"), b"excluded").unwrap();
    std::fs::write(root.join("scratch.tmp"), b"excluded too").unwrap();
    std::fs::write(root.join("odd name with spaces & ünïcödé.txt"), b"odd").unwrap();
    std::fs::write(root.join("secret.key"), b"0600").unwrap();
    std::fs::set_permissions(
        root.join("secret.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::write(root.join("run.sh"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    symlink("nested/deeper/deepest/note.txt", root.join("relative-link")).unwrap();
    symlink("/etc/hostname", root.join("absolute-link")).unwrap();
    symlink("does-not-exist", root.join("dangling-link")).unwrap();
    std::fs::hard_link(root.join("run.sh"), root.join("run-hardlink.sh")).unwrap();
    let name = format!("{}.bin", "long-name-".repeat(15));
    std::fs::write(root.join(&name), b"a name longer than 100 bytes").unwrap();
    // A large file that compresses, but not to nothing.
    let block: Vec<u8> = (0..1024 * 1024)
        .map(|i: usize| ((i * 7919) % 251) as u8 ^ (i >> 12) as u8)
        .collect();
    let mut file = std::fs::File::create(root.join("large.bin")).unwrap();
    for _ in 0..big {
        std::io::Write::write_all(&mut file, &block).unwrap();
    }
    // A FIFO: skipped, with a note.
    let status = Command::new("mkfifo")
        .arg(root.join("pipe"))
        .status()
        .unwrap();
    assert!(status.success());
}

/// What a backup of [`build_volume`]'s tree leaves out when its job
/// excludes `cache` and `*.tmp`: those, and the FIFO (backups skip FIFOs).
pub const LEFT_OUT_BY_CACHE_AND_TMP: [&str; 5] = [
    "cache",
    "cache/tmp",
    "cache/tmp/drop.bin",
    "scratch.tmp",
    "pipe",
];

/// [`build_volume`]'s tree without what restores refuse (the absolute
/// symlink) or backups skip (the FIFO): every kind of entry a restore gives
/// back — files with modes, directories, relative and dangling symlinks, a
/// hard link, a long and an odd name.
pub fn restorable_volume(root: &Path, big: usize) {
    build_volume(root, big);
    std::fs::remove_file(root.join("pipe")).unwrap();
    std::fs::remove_file(root.join("absolute-link")).unwrap();
}

/// Extracts `archive` into `into` with GNU tar (`flag`: `--zstd`, …).
pub fn extract(archive: &Path, flag: Option<&str>, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    let mut command = Command::new("tar");
    if let Some(flag) = flag {
        command.arg(flag);
    }
    let output = command
        .arg("-xpf")
        .arg(archive)
        .arg("-C")
        .arg(into)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "tar: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A ustar header for `path` of `kind` (`b'0'` file, `b'1'` hard link,
/// `b'2'` symlink, `b'3'` character device, `b'5'` directory).
fn header(path: &[u8], kind: u8, link: &[u8], size: usize) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..path.len()].copy_from_slice(path);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"14000000000\0");
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

/// A tar stream written byte by byte, so that it can hold what the `tar`
/// crate's builder refuses to write (`..`, absolute paths).
pub fn raw_tar(entries: &[(&str, u8, &str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, kind, link, data) in entries {
        out.extend_from_slice(&header(path.as_bytes(), *kind, link.as_bytes(), data.len()));
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}
