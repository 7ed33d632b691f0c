//! `cairn archive extract`: a hostile-archive corpus, each case refused
//! with the entry named and nothing beside the destination touched; and a
//! real backup recovered offline, identical to its volume.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::helpers::{build_volume, describe, raw_tar};
use cairn_entity::enums::Slot;

/// The manifest of a tar archive whose tar stream is `tar_bytes` long, as
/// the worker writes it beside the archive.
fn tar_manifest(tar_bytes: u64) -> Vec<u8> {
    use cairn_core::format::manifest::{Manifest, ManifestContents, TarManifest};
    use cairn_core::jobs::CompressionSetting;
    let manifest = Manifest {
        cairn_version: env!("CARGO_PKG_VERSION").into(),
        format_version: cairn_core::format::manifest::ARCHIVE_FORMAT_VERSION,
        backup_id: uuid::Uuid::now_v7(),
        organization: "acme".into(),
        app: "shop".into(),
        volume: "data".into(),
        archive: "2024-01-15T02-00-00-000Z.tar.zst".into(),
        encryption: None,
        started_at: chrono::Utc::now(),
        finished_at: chrono::Utc::now(),
        stored_bytes: 0,
        sha256: "0".repeat(64),
        contents: ManifestContents::Tar(TarManifest {
            slot: Slot::Blue,
            source: "/var/lib/docker/volumes/shop-blue_data/_data".into(),
            compression: CompressionSetting::Zstd,
            uncompressed_bytes: tar_bytes,
            content_bytes: 0,
            file_count: 0,
            directory_count: 0,
            symlink_count: 0,
            hard_link_count: 0,
            exclude_patterns: Vec::new(),
            excluded: Vec::new(),
            excluded_truncated: false,
            sqlite: Vec::new(),
        }),
    };
    serde_json::to_vec(&manifest.to_value()).unwrap()
}

fn extract(file: &Path, into: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["archive", "extract"])
        .arg(file)
        .arg("--into")
        .arg(into)
        .args(extra)
        .env_remove("CAIRN_CONFIG")
        .output()
        .unwrap()
}

/// Everything under `root`, for before/after comparisons.
fn snapshot(root: &Path) -> Vec<String> {
    let mut all: Vec<String> = walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| e.path().strip_prefix(root).unwrap().display().to_string())
        .collect();
    all.sort();
    all
}

/// Runs one hostile case: the extraction fails, names `entry`, and nothing
/// beside the destination (nor `outside`) changed.
fn refused(name: &str, archive: Vec<u8>, entry: &str, outside: Option<&Path>) {
    let dir = tempfile::tempdir().unwrap();
    let sentinel = dir.path().join("sentinel");
    std::fs::create_dir_all(&sentinel).unwrap();
    std::fs::write(sentinel.join("keep.txt"), b"keep").unwrap();
    let file = dir.path().join(format!("{name}.tar"));
    std::fs::write(&file, archive).unwrap();
    let volume = dir.path().join("volume");
    let before = snapshot(dir.path());
    let output = extract(&file, &volume, &["--max-bytes", "10000000"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{name}: extracted: {stderr}");
    assert!(
        stderr.contains(&format!("refused entry {entry:?}")),
        "{name}: {stderr}"
    );
    let mut after = snapshot(dir.path());
    after.retain(|p| !p.starts_with("volume"));
    let mut expected = before;
    expected.retain(|p| !p.starts_with("volume"));
    assert_eq!(
        after, expected,
        "{name}: something beside the volume changed"
    );
    assert_eq!(std::fs::read(sentinel.join("keep.txt")).unwrap(), b"keep");
    if let Some(outside) = outside {
        assert!(
            !outside.exists(),
            "{name}: {} was written",
            outside.display()
        );
    }
}

#[test]
fn hostile_archives_are_refused_without_side_effects() {
    let evil = PathBuf::from(format!("/tmp/cairn-evil-{}", uuid::Uuid::now_v7()));
    let evil_text = evil.display().to_string();
    refused("dotdot", raw_tar(&[("../x", b'0', "", b"x")]), "../x", None);
    refused(
        "absolute",
        raw_tar(&[(&evil_text, b'0', "", b"x")]),
        &evil_text,
        Some(&evil),
    );
    refused(
        "symlink-to-root",
        raw_tar(&[
            ("l", b'2', "/", b""),
            (&format!("l{evil_text}"), b'0', "", b"x"),
        ]),
        "l",
        Some(&evil),
    );
    refused(
        "symlink-to-parent",
        raw_tar(&[("up", b'2', "..", b""), ("up/x", b'0', "", b"x")]),
        "up",
        None,
    );
    refused(
        "hard-link-out",
        raw_tar(&[("h", b'1', "../sentinel/keep.txt", b"")]),
        "h",
        None,
    );
    refused(
        "symlink-then-directory",
        raw_tar(&[
            ("a", b'2', ".", b""),
            ("a/", b'5', "", b""),
            ("a/x", b'0', "", b"x"),
        ]),
        "a/",
        None,
    );
    refused(
        "write-through-symlink",
        raw_tar(&[
            ("sub/", b'5', "", b""),
            ("s", b'2', "sub", b""),
            ("s/x", b'0', "", b"x"),
        ]),
        "s/x",
        None,
    );
    refused("device", raw_tar(&[("null", b'3', "", b"")]), "null", None);
}

/// A zstd and a gzip bomb: 256 MiB of zeros in a few hundred KiB; the
/// manifest beside them says the tar stream is 4 KiB.
#[test]
fn decompression_bombs_stop_at_the_manifest_size() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("zeros");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(256 * 1024 * 1024)
        .unwrap();
    let tar_file = dir.path().join("bomb.tar");
    let status = Command::new("tar")
        .arg("-cf")
        .arg(&tar_file)
        .arg("-C")
        .arg(dir.path())
        .arg("zeros")
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::remove_file(&big).unwrap();
    for (tool, suffix) in [("zstd", "tar.zst"), ("gzip", "tar.gz")] {
        let bomb = dir.path().join(format!("bomb.{suffix}"));
        let output = Command::new(tool)
            .args(["-q", "-c"])
            .arg(&tar_file)
            .output()
            .unwrap();
        assert!(output.status.success());
        assert!(output.stdout.len() < 2 * 1024 * 1024, "{tool}");
        std::fs::write(&bomb, &output.stdout).unwrap();
        std::fs::write(
            dir.path().join(format!("bomb.{suffix}.manifest.json")),
            tar_manifest(4096),
        )
        .unwrap();
        let into = dir.path().join(format!("into-{tool}"));
        let extracted = extract(&bomb, &into, &[]);
        let stderr = String::from_utf8_lossy(&extracted.stderr);
        assert!(!extracted.status.success(), "{tool}: {stderr}");
        assert!(stderr.contains("decompression bomb"), "{tool}: {stderr}");
        let written: u64 = walkdir::WalkDir::new(&into)
            .into_iter()
            .filter_map(Result::ok)
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum();
        assert!(written < 1024 * 1024, "{tool}: {written} bytes written");
    }
}

/// A tar archive as Cairn writes it extracts to the same tree, offline.
#[tokio::test]
async fn a_cairn_archive_extracts_offline_to_the_same_tree() {
    use cairn_core::format::tar::{tar_stream, Compression, TarOptions};
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path().join("volume");
    build_volume(&volume, 8);
    // Links that leave the volume are not restored; this tree has none.
    std::fs::remove_file(volume.join("absolute-link")).unwrap();
    let (mut stream, summary) = tar_stream(
        volume.clone(),
        TarOptions {
            compression: Compression::Zstd {
                level: 3,
                threads: 2,
            },
            excludes: Vec::new(),
            encryption: None,
            substitutes: Vec::new(),
        },
    );
    let archive = dir.path().join("2024-01-15T02-00-00-000Z.tar.zst");
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.unwrap());
    }
    std::fs::write(&archive, bytes).unwrap();
    let summary = summary.await.unwrap().unwrap();
    std::fs::write(
        dir.path()
            .join("2024-01-15T02-00-00-000Z.tar.zst.manifest.json"),
        tar_manifest(summary.tar_bytes),
    )
    .unwrap();
    let into = dir.path().join("restored");
    let output = extract(&archive, &into, &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut expected = describe(&volume);
    expected.remove("pipe").unwrap();
    assert_eq!(describe(&into), expected);
    // Extracting again into the same (now full) directory is refused.
    let again = extract(&archive, &into, &[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
}
