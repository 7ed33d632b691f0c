//! One stream read once, written to several places: [`fan_out`] splits a
//! stream of chunks into readers that each get every chunk, through
//! bounded queues, so memory stays bounded whatever the size and however
//! slow a reader is (the slowest live reader sets the pace).

use std::io;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::{received, ByteStream};

/// Splits `source` into `readers` streams that each yield every chunk of
/// it, `depth` chunks ahead at most:
/// - the source is read once, by a task of its own, at the pace of the
///   slowest reader still reading;
/// - a reader that is dropped (its upload failed) is left out from then
///   on, and the others go on;
/// - an error of the source reaches every reader, which then ends;
/// - once every reader is dropped, the source is dropped (its producer —
///   tar, pg_dump — stops).
pub fn fan_out(source: ByteStream, readers: usize, depth: usize) -> Vec<ByteStream> {
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..readers)
        .map(|_| mpsc::channel::<io::Result<Bytes>>(depth.max(1)))
        .unzip();
    tokio::spawn(pump(source, senders));
    receivers.into_iter().map(received).collect()
}

async fn pump(mut source: ByteStream, senders: Vec<mpsc::Sender<io::Result<Bytes>>>) {
    let mut live: Vec<Option<mpsc::Sender<io::Result<Bytes>>>> =
        senders.into_iter().map(Some).collect();
    while let Some(item) = source.next().await {
        match item {
            Ok(chunk) => {
                for slot in live.iter_mut() {
                    if let Some(sender) = slot {
                        if sender.send(Ok(chunk.clone())).await.is_err() {
                            *slot = None;
                        }
                    }
                }
                if live.iter().all(Option::is_none) {
                    return;
                }
            }
            Err(error) => {
                let message = error.to_string();
                for sender in live.iter().flatten() {
                    let _ = sender
                        .send(Err(io::Error::new(error.kind(), message.clone())))
                        .await;
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(n: usize) -> ByteStream {
        Box::pin(futures::stream::iter(
            (0..n).map(|i| Ok(Bytes::from(vec![i as u8; 1024]))),
        ))
    }

    async fn collect(stream: ByteStream) -> io::Result<Vec<u8>> {
        let mut stream = stream;
        let mut all = Vec::new();
        while let Some(chunk) = stream.next().await {
            all.extend_from_slice(&chunk?);
        }
        Ok(all)
    }

    #[tokio::test]
    async fn every_reader_gets_every_chunk() {
        let readers = fan_out(chunks(100), 3, 2);
        let all = futures::future::join_all(readers.into_iter().map(collect)).await;
        let expected = collect(chunks(100)).await.unwrap();
        for reader in all {
            assert_eq!(reader.unwrap(), expected);
        }
    }

    #[tokio::test]
    async fn a_dropped_reader_does_not_stop_the_others() {
        let mut readers = fan_out(chunks(100), 2, 2);
        let second = readers.pop().unwrap();
        let mut first = readers.pop().unwrap();
        // The first reader takes one chunk and gives up.
        assert!(first.next().await.is_some());
        drop(first);
        let expected = collect(chunks(100)).await.unwrap();
        assert_eq!(collect(second).await.unwrap(), expected);
    }

    #[tokio::test]
    async fn an_error_of_the_source_reaches_every_reader() {
        let failing: ByteStream = Box::pin(futures::stream::iter(vec![
            Ok(Bytes::from_static(b"a")),
            Err(io::Error::other("tar failed")),
        ]));
        for reader in fan_out(failing, 2, 1) {
            let error = collect(reader).await.unwrap_err();
            assert_eq!(error.to_string(), "tar failed");
        }
    }
}
