//! Local directories: a temporary file in the destination directory,
//! fsync, rename into place, fsync of the directory. Keys are confined to
//! the target's directory: `..` and absolute keys are refused by
//! [`ObjectKey`], and a symlink that leads outside is refused here.

use std::path::{Path, PathBuf};

use std::io::{Read, Write};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{
    feed, received, ByteStream, Cancellation, Chunk, ObjectInfo, ObjectKey, Storage, StorageError,
    StorageResult, QUEUE,
};

/// Marks a file that is still being written; never listed, never read.
const TEMP_MARKER: &str = ".cairn-tmp-";
const READ_CHUNK: usize = 4 * 1024 * 1024;
/// Chunks of a download queued for the reader.
const READ_QUEUE: usize = 2;

pub struct LocalStorage {
    root: PathBuf,
    /// For an organization's target: the directory (the local backup root)
    /// below which no component of `root` may be a symlink.
    links_refused_below: Option<PathBuf>,
}

/// The first component of `path` below `base` that is a symlink, if any
/// (components that do not exist yet are not links).
pub fn symlink_below(base: &Path, path: &Path) -> Option<PathBuf> {
    let relative = path.strip_prefix(base).ok()?;
    let mut current = base.to_path_buf();
    for component in relative.components() {
        current.push(component);
        match std::fs::symlink_metadata(&current) {
            Ok(metadata) if metadata.file_type().is_symlink() => return Some(current),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

impl LocalStorage {
    pub fn new(root: impl Into<PathBuf>) -> LocalStorage {
        LocalStorage {
            root: root.into(),
            links_refused_below: None,
        }
    }

    /// An organization's target: its directory is refused when a component
    /// below `base` is a symlink (a link would let it write anywhere).
    pub fn refusing_links_below(mut self, base: PathBuf) -> LocalStorage {
        self.links_refused_below = Some(base);
        self
    }

    /// The canonical root, created when missing.
    async fn root(&self, create: bool) -> StorageResult<PathBuf> {
        if let Some(base) = &self.links_refused_below {
            if let Some(link) = symlink_below(base, &self.root) {
                return Err(StorageError::InvalidKey(format!(
                    "{} is a symlink; an organization's local target may not pass through links",
                    link.display()
                )));
            }
        }
        if create {
            tokio::fs::create_dir_all(&self.root)
                .await
                .map_err(|e| StorageError::io(&format!("creating {}", self.root.display()), &e))?;
        }
        tokio::fs::canonicalize(&self.root)
            .await
            .map_err(|e| StorageError::io(&format!("the directory {}", self.root.display()), &e))
    }

    /// Resolves an existing path and refuses it when a symlink leads
    /// outside the root.
    async fn confined(&self, root: &Path, path: &Path) -> StorageResult<PathBuf> {
        let real = tokio::fs::canonicalize(path)
            .await
            .map_err(|e| StorageError::io(&path.display().to_string(), &e))?;
        if !real.starts_with(root) {
            return Err(StorageError::InvalidKey(format!(
                "{} leads outside the target's directory",
                path.display()
            )));
        }
        Ok(real)
    }
}

/// Creates `directory` under `root` one component at a time, refusing any
/// component that is a symlink, so that nothing is ever created outside the
/// root (not even an empty directory).
async fn create_confined_dirs(root: &Path, directory: &Path) -> StorageResult<PathBuf> {
    let relative = directory
        .strip_prefix(root)
        .map_err(|_| StorageError::InvalidKey(directory.display().to_string()))?;
    let mut current = root.to_path_buf();
    for component in relative.components() {
        current.push(component);
        match tokio::fs::symlink_metadata(&current).await {
            Ok(metadata) if metadata.file_type().is_symlink() => {
                return Err(StorageError::InvalidKey(format!(
                    "{} is a symlink; keys may not pass through links",
                    current.display()
                )))
            }
            Ok(metadata) if metadata.is_dir() => {}
            Ok(_) => {
                return Err(StorageError::Io(format!(
                    "{} is not a directory",
                    current.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match tokio::fs::create_dir(&current).await {
                    Ok(()) => {}
                    // Created by a concurrent writer: checked on the next pass.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        let metadata = tokio::fs::symlink_metadata(&current)
                            .await
                            .map_err(|e| StorageError::io(&current.display().to_string(), &e))?;
                        if !metadata.is_dir() {
                            return Err(StorageError::Io(format!(
                                "{} is not a directory",
                                current.display()
                            )));
                        }
                    }
                    Err(e) => {
                        return Err(StorageError::io(
                            &format!("creating {}", current.display()),
                            &e,
                        ))
                    }
                }
            }
            Err(e) => return Err(StorageError::io(&current.display().to_string(), &e)),
        }
    }
    Ok(current)
}

/// Removes a temporary file unless the write completed.
struct TempFile {
    path: Option<PathBuf>,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[async_trait::async_trait]
impl Storage for LocalStorage {
    async fn free_space(&self) -> StorageResult<Option<u64>> {
        let root = self.root.clone();
        let free = tokio::task::spawn_blocking(move || crate::disk::free_bytes(&root))
            .await
            .map_err(|e| StorageError::Io(format!("measuring free space: {e}")))?
            .map_err(|e| {
                StorageError::io(&format!("the free space of {}", self.root.display()), &e)
            })?;
        Ok(Some(free))
    }

    async fn connect(&self) -> StorageResult<()> {
        let root = self.root(true).await?;
        let metadata = tokio::fs::metadata(&root)
            .await
            .map_err(|e| StorageError::io(&root.display().to_string(), &e))?;
        if !metadata.is_dir() {
            return Err(StorageError::Io(format!(
                "{} is not a directory",
                root.display()
            )));
        }
        Ok(())
    }

    async fn put(&self, key: &ObjectKey, body: ByteStream) -> StorageResult<u64> {
        let root = self.root(true).await?;
        let destination = root.join(key.as_str());
        let parent = destination
            .parent()
            .ok_or_else(|| StorageError::InvalidKey(key.to_string()))?;
        let parent = create_confined_dirs(&root, parent).await?;
        let name = destination
            .file_name()
            .ok_or_else(|| StorageError::InvalidKey(key.to_string()))?
            .to_string_lossy()
            .into_owned();
        let what = key.to_string();
        // The file is written on one blocking thread, chunks arriving
        // through a bounded queue: no per-chunk task, no extra copy.
        let (sender, mut receiver) = mpsc::channel::<Chunk>(QUEUE);
        let cancellation = Cancellation::default();
        let _cancel_on_drop = cancellation.guard();
        let writer = tokio::task::spawn_blocking(move || -> StorageResult<u64> {
            let temp_path = parent.join(format!(".{name}{TEMP_MARKER}{}", uuid::Uuid::now_v7()));
            let mut temp = TempFile {
                path: Some(temp_path.clone()),
            };
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temp_path)
                .map_err(|e| StorageError::io(&format!("writing in {}", parent.display()), &e))?;
            let mut written = 0u64;
            loop {
                match receiver.blocking_recv() {
                    Some(Chunk::Data(bytes)) => {
                        file.write_all(&bytes)
                            .map_err(|e| StorageError::io(&format!("writing {what}"), &e))?;
                        written += bytes.len() as u64;
                    }
                    Some(Chunk::End) => break,
                    Some(Chunk::Abort) => return Err(StorageError::SourceFailed("aborted".into())),
                    // Cancelled: the temporary file goes, nothing is published.
                    None => {
                        return Err(StorageError::SourceFailed(
                            "the upload was cancelled".into(),
                        ))
                    }
                }
            }
            file.sync_all()
                .map_err(|e| StorageError::io(&format!("syncing {what}"), &e))?;
            drop(file);
            if cancellation.is_cancelled() {
                return Err(StorageError::SourceFailed(
                    "the upload was cancelled".into(),
                ));
            }
            let final_path = parent.join(&name);
            std::fs::rename(&temp_path, &final_path).map_err(|e| {
                StorageError::io(&format!("renaming into {}", final_path.display()), &e)
            })?;
            temp.path = None;
            // The rename is durable once the directory is.
            std::fs::File::open(&parent)
                .and_then(|directory| directory.sync_all())
                .map_err(|e| StorageError::io(&format!("syncing {}", parent.display()), &e))?;
            Ok(written)
        });
        let (written, fed) = tokio::join!(writer, feed(body, sender));
        fed?;
        written.map_err(|e| StorageError::Io(format!("writer thread: {e}")))?
    }

    async fn get(&self, key: &ObjectKey) -> StorageResult<(u64, ByteStream)> {
        let root = self.root(false).await?;
        let path = self.confined(&root, &root.join(key.as_str())).await?;
        // O_NOFOLLOW: the file checked above cannot be swapped for a link
        // before it is opened; O_NONBLOCK: a FIFO cannot hang the open.
        let mut file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(&path)
                .map_err(|e| StorageError::io(key.as_str(), &e))?
        };
        let metadata = file
            .metadata()
            .map_err(|e| StorageError::io(key.as_str(), &e))?;
        if !metadata.is_file() {
            return Err(StorageError::InvalidKey(format!(
                "{key} is not a regular file"
            )));
        }
        let size = metadata.len();
        let (sender, receiver) = mpsc::channel::<std::io::Result<Bytes>>(READ_QUEUE);
        tokio::task::spawn_blocking(move || loop {
            // `read_to_end` fills the spare capacity without zeroing it first.
            let mut buffer = Vec::with_capacity(READ_CHUNK);
            match (&mut file).take(READ_CHUNK as u64).read_to_end(&mut buffer) {
                Ok(0) => return,
                Ok(_) => {
                    if sender.blocking_send(Ok(Bytes::from(buffer))).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = sender.blocking_send(Err(e));
                    return;
                }
            }
        });
        Ok((size, received(receiver)))
    }

    async fn head(&self, key: &ObjectKey) -> StorageResult<Option<u64>> {
        let root = match self.root(false).await {
            Ok(root) => root,
            Err(StorageError::NotFound(_)) => return Ok(None),
            Err(error) => return Err(error),
        };
        let path = root.join(key.as_str());
        match tokio::fs::symlink_metadata(&path).await {
            Ok(_) => {
                let real = self.confined(&root, &path).await?;
                let metadata = tokio::fs::metadata(&real)
                    .await
                    .map_err(|e| StorageError::io(key.as_str(), &e))?;
                Ok(Some(metadata.len()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::io(key.as_str(), &e)),
        }
    }

    async fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectInfo>> {
        let root = match self.root(false).await {
            Ok(root) => root,
            Err(StorageError::NotFound(_)) => return Ok(Vec::new()),
            Err(error) => return Err(error),
        };
        // Walk only the deepest directory the prefix names.
        let start = match prefix.rfind('/') {
            Some(index) => root.join(&prefix[..index]),
            None => root.clone(),
        };
        let prefix = prefix.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut objects = Vec::new();
            // The prefix's directory itself must not lead outside.
            match std::fs::canonicalize(&start) {
                Ok(real) if real.starts_with(&root) && real.is_dir() => {}
                _ => return Ok(objects),
            }
            // Symlinks are not followed: a link cannot lead the listing
            // outside the target's directory.
            for entry in walkdir::WalkDir::new(&start)
                .follow_links(false)
                .follow_root_links(false)
            {
                let entry = entry.map_err(|e| StorageError::Io(format!("listing: {e}")))?;
                if !entry.file_type().is_file() {
                    continue;
                }
                let Ok(relative) = entry.path().strip_prefix(&root) else {
                    continue;
                };
                let key = relative.to_string_lossy().replace('\\', "/");
                if key.contains(TEMP_MARKER) || !key.starts_with(&prefix) {
                    continue;
                }
                let size = entry
                    .metadata()
                    .map_err(|e| StorageError::Io(format!("listing: {e}")))?
                    .len();
                objects.push(ObjectInfo { key, size });
            }
            objects.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(objects)
        })
        .await
        .map_err(|e| StorageError::Io(format!("listing: {e}")))?
    }

    async fn delete(&self, key: &ObjectKey) -> StorageResult<()> {
        let root = match self.root(false).await {
            Ok(root) => root,
            Err(StorageError::NotFound(_)) => return Ok(()),
            Err(error) => return Err(error),
        };
        let path = root.join(key.as_str());
        let parent = match path.parent() {
            Some(parent) if tokio::fs::metadata(parent).await.is_ok() => parent.to_path_buf(),
            _ => return Ok(()),
        };
        // The file itself is removed, not what a symlink points to; its
        // directory must be inside the root.
        let parent = self.confined(&root, &parent).await?;
        let name = path.file_name().unwrap_or_default();
        match tokio::fs::remove_file(parent.join(name)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::io(&format!("deleting {key}"), &e)),
        }
    }

    async fn remove_incomplete(&self, key: &ObjectKey) -> StorageResult<usize> {
        let root = match self.root(false).await {
            Ok(root) => root,
            Err(StorageError::NotFound(_)) => return Ok(0),
            Err(error) => return Err(error),
        };
        let path = root.join(key.as_str());
        let parent = match path.parent() {
            Some(parent) if tokio::fs::metadata(parent).await.is_ok() => parent.to_path_buf(),
            _ => return Ok(0),
        };
        let parent = self.confined(&root, &parent).await?;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let leftover = format!(".{name}{TEMP_MARKER}");
        let mut removed = 0;
        let mut entries = tokio::fs::read_dir(&parent)
            .await
            .map_err(|e| StorageError::io(&parent.display().to_string(), &e))?;
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| StorageError::io(&parent.display().to_string(), &e))?
        {
            if entry.file_name().to_string_lossy().starts_with(&leftover) {
                match tokio::fs::remove_file(entry.path()).await {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StorageError::io(&format!("cleaning up {key}"), &e)),
                }
            }
        }
        Ok(removed)
    }

    async fn presigned_get(
        &self,
        _key: &ObjectKey,
        _expires_in: std::time::Duration,
    ) -> StorageResult<Option<url::Url>> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::single_chunk;
    use bytes::Bytes;
    use futures::StreamExt;

    fn key(text: &str) -> ObjectKey {
        ObjectKey::parse(text).unwrap()
    }

    #[tokio::test]
    async fn round_trip_list_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path().join("target"));
        storage.connect().await.unwrap();
        let written = storage
            .put(
                &key("acme/shop/data/1.tar.zst"),
                single_chunk(Bytes::from_static(b"archive")),
            )
            .await
            .unwrap();
        assert_eq!(written, 7);
        let bytes = crate::storage::read_all(&storage, &key("acme/shop/data/1.tar.zst"), 100)
            .await
            .unwrap();
        assert_eq!(&bytes[..], b"archive");
        assert_eq!(
            storage
                .head(&key("acme/shop/data/1.tar.zst"))
                .await
                .unwrap(),
            Some(7)
        );
        assert_eq!(storage.head(&key("acme/none")).await.unwrap(), None);
        let listed = storage.list("acme/shop/").await.unwrap();
        assert_eq!(
            listed,
            [ObjectInfo {
                key: "acme/shop/data/1.tar.zst".into(),
                size: 7
            }]
        );
        assert!(storage.list("other/").await.unwrap().is_empty());
        storage
            .delete(&key("acme/shop/data/1.tar.zst"))
            .await
            .unwrap();
        storage
            .delete(&key("acme/shop/data/1.tar.zst"))
            .await
            .unwrap();
        assert_eq!(
            storage
                .head(&key("acme/shop/data/1.tar.zst"))
                .await
                .unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn a_failed_write_leaves_nothing_and_keeps_the_old_object() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path());
        storage
            .put(&key("a/b"), single_chunk(Bytes::from_static(b"old")))
            .await
            .unwrap();
        let failing: ByteStream = Box::pin(futures::stream::iter(vec![
            Ok(Bytes::from_static(b"partial new content")),
            Err(std::io::Error::other("the archiver died")),
        ]));
        let error = storage.put(&key("a/b"), failing).await.unwrap_err();
        assert!(matches!(error, StorageError::SourceFailed(_)), "{error}");
        let bytes = crate::storage::read_all(&storage, &key("a/b"), 100)
            .await
            .unwrap();
        assert_eq!(&bytes[..], b"old");
        let entries: Vec<_> = std::fs::read_dir(dir.path().join("a")).unwrap().collect();
        assert_eq!(entries.len(), 1, "no temporary file is left");
    }

    #[tokio::test]
    async fn a_cancelled_write_publishes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path());
        // One chunk, then a source that never ends: the put is cancelled.
        let stalled: ByteStream = Box::pin(
            futures::stream::iter(vec![Ok(Bytes::from_static(b"half of an archive"))])
                .chain(futures::stream::pending()),
        );
        let cancelled = tokio::time::timeout(
            std::time::Duration::from_millis(300),
            storage.put(&key("a/b"), stalled),
        )
        .await;
        assert!(cancelled.is_err());
        // The writer notices the closed queue and removes its file.
        for _ in 0..50 {
            if std::fs::read_dir(dir.path().join("a"))
                .unwrap()
                .next()
                .is_none()
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(
            !dir.path().join("a/b").exists(),
            "a cancelled upload must not be published"
        );
        assert_eq!(std::fs::read_dir(dir.path().join("a")).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn symlinks_cannot_lead_outside() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"outside").unwrap();
        let root = dir.path().join("target");
        std::fs::create_dir_all(&root).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("escape")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root.join("file")).unwrap();
        let storage = LocalStorage::new(&root);
        assert!(storage.get(&key("escape/secret")).await.is_err());
        assert!(storage.get(&key("file")).await.is_err());
        let written = storage
            .put(&key("escape/new"), single_chunk(Bytes::from_static(b"x")))
            .await;
        assert!(written.is_err());
        assert!(!outside.path().join("new").exists());
        // Not even a directory is created through the link.
        let deeper = storage
            .put(
                &key("escape/deeper/new"),
                single_chunk(Bytes::from_static(b"x")),
            )
            .await;
        assert!(deeper.is_err());
        assert!(!outside.path().join("deeper").exists());
        assert!(storage.list("escape/").await.unwrap().is_empty());
        assert!(storage.list("").await.unwrap().is_empty());
        storage.delete(&key("escape/secret")).await.unwrap_err();
        assert!(outside.path().join("secret").exists());
    }
}
