//! A stream hashed as it passes: a copy from one target to another is held
//! to the SHA-256 recorded for the archive without a second read.

use std::io;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::{ByteStream, Cancellation};

/// The SHA-256 of what passed through a [`hashing`] stream.
#[derive(Clone, Default)]
pub struct StreamHash(Arc<Mutex<(Sha256, u64)>>);

impl StreamHash {
    /// The hex digest and the byte count so far.
    pub fn finish(&self) -> (String, u64) {
        match self.0.lock() {
            Ok(state) => (hex::encode(state.0.clone().finalize()), state.1),
            Err(_) => (String::new(), 0),
        }
    }
}

/// `stream`, hashed as it is read; `cancel` ends it with an error (the
/// write it feeds then fails and leaves nothing).
pub fn hashing(stream: ByteStream, cancel: Cancellation) -> (ByteStream, StreamHash) {
    let hash = StreamHash::default();
    let state = hash.clone();
    let hashed = stream.map(move |chunk| {
        if cancel.is_cancelled() {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "cancelled"));
        }
        if let (Ok(bytes), Ok(mut state)) = (&chunk, state.0.lock()) {
            state.0.update(bytes);
            state.1 += bytes.len() as u64;
        }
        chunk
    });
    (Box::pin(hashed), hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[tokio::test]
    async fn the_hash_is_that_of_every_byte_that_passed() {
        let source: ByteStream = Box::pin(futures::stream::iter(vec![
            Ok(Bytes::from_static(b"hello ")),
            Ok(Bytes::from_static(b"world")),
        ]));
        let (mut stream, hash) = hashing(source, Cancellation::default());
        while stream.next().await.is_some() {}
        assert_eq!(
            hash.finish(),
            (
                "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9".to_owned(),
                11
            )
        );
    }
}
