//! SHA-256 and length of a byte stream, hashed on a thread of its own.
//!
//! The layer writer takes two digests, of the tar (diff id) and of the blob
//! (digest): for a 100 MB layer that is ~165 MB of SHA-256, at SHA-NI's
//! ~2 GB/s as much CPU as a third of zstd-3's. Hashed on the thread that
//! feeds the compressor, every chunk hashed is a chunk not yet handed to
//! the compression workers; on a thread of its own the hashing runs in the
//! time a core would otherwise wait between compression jobs, and the
//! writer's throughput stays the compressor's. A stream shorter than one
//! chunk is hashed inline: starting a thread costs more than hashing it.

use std::io::{self, Write};
use std::mem;
use std::sync::mpsc;
use std::thread;

use sha2::{Digest as _, Sha256};

/// Bytes handed to the hashing thread at a time: large enough that the
/// hand-over is rare, small enough to stay in a core's L2 cache.
const CHUNK: usize = 256 * 1024;
/// Chunks queued for the hashing thread before the writer waits for it;
/// bounds the memory held to `(QUEUED + 2) * CHUNK`.
const QUEUED: usize = 8;

/// The hashing thread and its channels.
struct Worker {
    /// Full chunks to hash, in stream order.
    tx: mpsc::SyncSender<Vec<u8>>,
    /// Hashed chunks, returned for reuse (no page faults for fresh buffers).
    back: mpsc::Receiver<Vec<u8>>,
    handle: thread::JoinHandle<Sha256>,
}

/// Where the bytes are hashed.
enum Hasher {
    /// Not yet one full chunk: no thread yet.
    Pending,
    /// On the worker thread.
    Thread(Worker),
    /// Inline, because no thread could be started.
    Inline(Sha256),
}

/// A writer that passes everything to `inner` and hashes and counts it.
///
/// The bytes are copied into chunks for the hashing thread (a memcpy costs
/// a tenth of hashing them).
pub(crate) struct HashingWriter<W> {
    inner: W,
    /// Name of the hashing thread (in `top -H`, `perf`).
    name: &'static str,
    /// The chunk being filled.
    chunk: Vec<u8>,
    hasher: Hasher,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W, name: &'static str) -> Self {
        HashingWriter { inner, name, chunk: Vec::with_capacity(CHUNK), hasher: Hasher::Pending, count: 0 }
    }

    /// The stream's `sha256:<hex>` digest and length, and the inner writer
    /// (not flushed).
    pub(crate) fn finish(mut self) -> (String, u64, W) {
        let chunk = mem::take(&mut self.chunk);
        let hash = match self.hasher {
            Hasher::Pending => Sha256::digest(&chunk),
            Hasher::Inline(mut h) => {
                h.update(&chunk);
                h.finalize()
            }
            Hasher::Thread(w) => {
                // A send fails only if the thread is gone, and then `join`
                // below says why.
                let _ = w.tx.send(chunk);
                drop(w.tx);
                join(w.handle).finalize()
            }
        };
        (format!("sha256:{}", hex::encode(hash)), self.count, self.inner)
    }

    /// Adds `data` to the hashed stream.
    fn absorb(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let take = (CHUNK - self.chunk.len()).min(data.len());
            self.chunk.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.chunk.len() == CHUNK {
                self.ship();
            }
        }
    }

    /// Hands the full chunk to the hashing thread (started on the first
    /// one), or hashes it inline.
    fn ship(&mut self) {
        if matches!(self.hasher, Hasher::Pending) {
            self.hasher = match spawn(self.name) {
                Ok(w) => Hasher::Thread(w),
                // Hashing inline is only slower; the layer is the same.
                Err(_) => Hasher::Inline(Sha256::new()),
            };
        }
        if let Hasher::Inline(h) = &mut self.hasher {
            h.update(&self.chunk);
            self.chunk.clear();
            return;
        }
        let Hasher::Thread(w) = &mut self.hasher else { return };
        let mut next = w.back.try_recv().unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        next.clear();
        let full = mem::replace(&mut self.chunk, next);
        if w.tx.send(full).is_err() {
            // The thread is gone: it panicked; so do we, with its payload.
            if let Hasher::Thread(w) = mem::replace(&mut self.hasher, Hasher::Pending) {
                drop(w.tx);
                join(w.handle);
            }
        }
    }
}

fn spawn(name: &'static str) -> io::Result<Worker> {
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(QUEUED);
    let (back_tx, back) = mpsc::channel();
    let handle = thread::Builder::new().name(name.to_string()).spawn(move || {
        let mut h = Sha256::new();
        for buf in rx {
            h.update(&buf);
            // The writer may have finished and dropped its end.
            let _ = back_tx.send(buf);
        }
        h
    })?;
    Ok(Worker { tx, back, handle })
}

/// The hashing thread's result; its panic, if it had one, goes on here.
fn join(handle: thread::JoinHandle<Sha256>) -> Sha256 {
    handle.join().unwrap_or_else(|payload| std::panic::resume_unwind(payload))
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.absorb(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(b: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(b)))
    }

    /// Writes `data` in pieces of `piece` bytes; returns (digest, count,
    /// what reached the inner writer).
    fn run(data: &[u8], piece: usize) -> (String, u64, Vec<u8>) {
        let mut w = HashingWriter::new(Vec::new(), "sha256-test");
        for p in data.chunks(piece.max(1)) {
            w.write_all(p).unwrap();
        }
        w.finish()
    }

    #[test]
    fn digest_and_count_match_for_every_length_and_piece_size() {
        let data: Vec<u8> = (0..(3 * CHUNK + 77) as u32).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
        // Empty, inline-only, exactly one chunk (the thread starts on the
        // last byte), chunk borders inside and on writes, many queued.
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, data.len()] {
            for piece in [1usize << 20, CHUNK, 4096, 511] {
                let (digest, count, inner) = run(&data[..len], piece);
                assert_eq!(digest, sha(&data[..len]), "len {len} piece {piece}");
                assert_eq!(count, len as u64);
                assert!(inner == data[..len], "len {len} piece {piece}: inner writer got other bytes");
            }
        }
    }

    #[test]
    fn more_chunks_than_the_queue_holds() {
        // Forces the writer to wait for the thread and reuse buffers.
        let data: Vec<u8> = (0..(QUEUED as u32 * 5 + 3) * CHUNK as u32).map(|i| (i % 251) as u8).collect();
        let (digest, count, _) = run(&data, 100_000);
        assert_eq!(digest, sha(&data));
        assert_eq!(count, data.len() as u64);
    }

    /// A writer that takes at most 1,000 bytes per call.
    struct Short(Vec<u8>);

    impl Write for Short {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(1000);
            self.0.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn short_writes_hash_only_what_the_inner_writer_took() {
        let data: Vec<u8> = (0..(CHUNK * 2 + 5) as u32).map(|i| (i % 253) as u8).collect();
        let mut w = HashingWriter::new(Short(Vec::new()), "sha256-test");
        let first = w.write(&data).unwrap();
        assert_eq!(first, 1000);
        w.write_all(&data[first..]).unwrap();
        let (digest, count, inner) = w.finish();
        assert!(inner.0 == data);
        assert_eq!(digest, sha(&data));
        assert_eq!(count, data.len() as u64);
    }
}
