//! The tar pipeline of file volumes, checked with GNU tar: what a user
//! restoring by hand would see.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use cairn_core::format::tar::{tar_stream, Compression, TarOptions};
use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::helpers::{build_volume, describe, extract, LEFT_OUT_BY_CACHE_AND_TMP};

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
            substitutes: Vec::new(),
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

#[tokio::test]
async fn a_volume_round_trips_through_gnu_tar() {
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path().join("volume");
    build_volume(&volume, 200);
    let mut expected = describe(&volume);
    for left_out in LEFT_OUT_BY_CACHE_AND_TMP {
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
            substitutes: Vec::new(),
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
