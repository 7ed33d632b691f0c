//! The tar pipeline of file volumes, checked with GNU tar: what a user
//! restoring by hand would see.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use cairn_core::format::tar::{tar_stream, Compression, TarOptions};
use futures::StreamExt;
use sha2::{Digest, Sha256};

/// What a tree holds, comparable: per path, its kind, mode, content hash or
/// link target, and mtime.
pub(crate) fn describe(root: &Path) -> BTreeMap<String, String> {
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

pub(crate) fn build_volume(root: &Path, big: usize) {
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

async fn archive_to(
    root: &Path,
    compression: Compression,
    excludes: &[&str],
    out: &Path,
) -> cairn_core::format::tar::ArchiveSummary {
    let (mut stream, summary) = tar_stream(
        root.to_path_buf(),
        TarOptions {
            compression,
            excludes: excludes.iter().map(|s| s.to_string()).collect(),
            encryption: None,
        },
    );
    let mut file = std::fs::File::create(out).unwrap();
    let mut digest = Sha256::new();
    let mut stored = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        stored += chunk.len() as u64;
        digest.update(&chunk);
        std::io::Write::write_all(&mut file, &chunk).unwrap();
    }
    let summary = summary.await.unwrap().unwrap();
    assert_eq!(summary.stored_bytes, stored);
    assert_eq!(summary.sha256, format!("{:x}", digest.finalize()));
    summary
}

pub(crate) fn extract(archive: &Path, flag: Option<&str>, into: &Path) {
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

#[tokio::test]
async fn a_volume_round_trips_through_gnu_tar() {
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path().join("volume");
    build_volume(&volume, 200);
    let mut expected = describe(&volume);
    for left_out in [
        "cache",
        "cache/tmp",
        "cache/tmp/drop.bin",
        "scratch.tmp",
        "pipe",
    ] {
        expected.remove(left_out).unwrap();
    }

    let archive = dir.path().join("volume.tar.zst");
    let summary = archive_to(
        &volume,
        Compression::Zstd {
            level: 3,
            threads: 2,
        },
        &["cache", "*.tmp"],
        &archive,
    )
    .await;
    assert_eq!(summary.excluded, ["cache", "scratch.tmp"]);
    assert_eq!(summary.hard_links, 1);
    assert_eq!(summary.symlinks, 3);
    assert!(
        summary.notes.iter().any(|n| n.contains("skipped pipe")),
        "{:?}",
        summary.notes
    );
    assert!(summary.content_bytes >= 200 * 1024 * 1024);
    assert!(
        summary.stored_bytes < summary.tar_bytes,
        "zstd compressed nothing"
    );

    let restored = dir.path().join("restored");
    extract(&archive, Some("--zstd"), &restored);
    assert_eq!(describe(&restored), expected);
    // The hard link came back as a hard link.
    let a = std::fs::metadata(restored.join("run.sh")).unwrap();
    let b = std::fs::metadata(restored.join("run-hardlink.sh")).unwrap();
    assert_eq!(a.ino(), b.ino());
    // GNU tar lists it as a link to the name archived first.
    let listing = Command::new("tar")
        .args(["--zstd", "-tvf"])
        .arg(&archive)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        // Entries go in name order: run-hardlink.sh is archived first.
        listing.contains("run.sh link to run-hardlink.sh"),
        "{listing}"
    );
}

#[tokio::test]
async fn gzip_and_uncompressed_archives_round_trip_too() {
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path().join("volume");
    build_volume(&volume, 2);
    let mut expected = describe(&volume);
    expected.remove("pipe").unwrap();
    for (compression, flag, name) in [
        (Compression::Gzip { level: 6 }, Some("--gzip"), "v.tar.gz"),
        (Compression::None, None, "v.tar"),
    ] {
        let archive = dir.path().join(name);
        let summary = archive_to(&volume, compression, &[], &archive).await;
        if compression == Compression::None {
            assert_eq!(summary.stored_bytes, summary.tar_bytes);
        }
        let restored = dir.path().join(format!("restored-{name}"));
        extract(&archive, flag, &restored);
        assert_eq!(describe(&restored), expected, "{name}");
    }
}

#[tokio::test]
async fn a_missing_volume_fails_with_its_code() {
    let (mut stream, summary) = tar_stream(
        "/nonexistent/volume/_data".into(),
        TarOptions {
            compression: Compression::None,
            excludes: Vec::new(),
            encryption: None,
        },
    );
    let mut saw_error = false;
    while let Some(chunk) = stream.next().await {
        saw_error |= chunk.is_err();
    }
    assert!(
        saw_error,
        "the stream must end with an error, not look complete"
    );
    let error = summary.await.unwrap().unwrap_err();
    assert_eq!(
        error.code,
        cairn_core::failure::FailureCode::VolumeUnreadable
    );
    assert!(
        error.message.contains("/nonexistent/volume/_data"),
        "{}",
        error.message
    );
}
