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

use std::fs::File;
use std::io::{self, Write};
use std::mem;
use std::sync::mpsc;
use std::thread;

use sha2::{Digest as _, Sha256};

use super::walk::{SinkError, TarSink, read_retrying};

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
    /// Inline: asked for, or no thread could be started.
    Inline(Sha256),
}

/// A writer that passes everything to `inner` and hashes and counts it.
///
/// Off-thread, written bytes are copied into chunks for the hashing thread
/// (a memcpy costs a tenth of hashing them); as a [`TarSink`] it has file
/// contents read straight into the chunk, and passes them on from there.
/// Inline, bytes are hashed where they are, while still in cache.
pub(crate) struct HashingWriter<W> {
    inner: W,
    /// Name of the hashing thread (in `top -H`, `perf`).
    name: &'static str,
    /// The chunk being filled, always `CHUNK` long: `filled` bytes are the
    /// stream's, the rest is room for a `read` (no zeroing per chunk).
    chunk: Vec<u8>,
    filled: usize,
    hasher: Hasher,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Hashes on a thread named `name` if `off_thread` (and the stream is
    /// longer than a chunk), else on the caller's.
    pub(crate) fn new(inner: W, name: &'static str, off_thread: bool) -> Self {
        let hasher = if off_thread { Hasher::Pending } else { Hasher::Inline(Sha256::new()) };
        HashingWriter { inner, name, chunk: vec![0; CHUNK], filled: 0, hasher, count: 0 }
    }

    /// The stream's `sha256:<hex>` digest and length, and the inner writer
    /// (not flushed).
    pub(crate) fn finish(mut self) -> (String, u64, W) {
        let mut chunk = mem::take(&mut self.chunk);
        chunk.truncate(self.filled);
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
            let take = (CHUNK - self.filled).min(data.len());
            self.chunk[self.filled..self.filled + take].copy_from_slice(&data[..take]);
            self.filled += take;
            data = &data[take..];
            if self.filled == CHUNK {
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
        self.filled = 0;
        if let Hasher::Inline(h) = &mut self.hasher {
            h.update(&self.chunk);
            return;
        }
        let Hasher::Thread(w) = &mut self.hasher else { return };
        // A buffer comes back only after it was hashed whole: still `CHUNK` long.
        let next = w.back.try_recv().unwrap_or_else(|_| vec![0; CHUNK]);
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

impl<W: Write> TarSink for HashingWriter<W> {
    fn read_from(&mut self, file: &mut File, max: usize) -> Result<usize, SinkError> {
        let room = (CHUNK - self.filled).min(max);
        let start = self.filled;
        let n = read_retrying(file, &mut self.chunk[start..start + room]).map_err(SinkError::Read)?;
        self.inner.write_all(&self.chunk[start..start + n]).map_err(SinkError::Write)?;
        self.count += n as u64;
        if let Hasher::Inline(h) = &mut self.hasher {
            // Inline the chunk is only a read buffer (`filled` stays 0).
            h.update(&self.chunk[start..start + n]);
        } else {
            self.filled += n;
            if self.filled == CHUNK {
                self.ship();
            }
        }
        Ok(n)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        match &mut self.hasher {
            Hasher::Inline(h) => h.update(&buf[..n]),
            _ => self.absorb(&buf[..n]),
        }
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
    fn run(data: &[u8], piece: usize, off_thread: bool) -> (String, u64, Vec<u8>) {
        let mut w = HashingWriter::new(Vec::new(), "sha256-test", off_thread);
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
            for (piece, off_thread) in [(1usize << 20, true), (CHUNK, true), (4096, true), (511, true), (4096, false)] {
                let (digest, count, inner) = run(&data[..len], piece, off_thread);
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
        let (digest, count, _) = run(&data, 100_000, true);
        assert_eq!(digest, sha(&data));
        assert_eq!(count, data.len() as u64);
    }

    #[test]
    fn file_contents_read_straight_in_interleave_with_writes() {
        for off_thread in [true, false] {
            file_contents_and_writes(off_thread);
        }
    }

    fn file_contents_and_writes(off_thread: bool) {
        let tmp = tempfile::tempdir().unwrap();
        let body: Vec<u8> = (0..(CHUNK * 2 + 999) as u32).map(|i| (i.wrapping_mul(40503) >> 7) as u8).collect();
        let path = tmp.path().join("f");
        std::fs::write(&path, &body).unwrap();
        let mut w = HashingWriter::new(Vec::new(), "sha256-test", off_thread);
        let mut expect = Vec::new();
        // A header-sized write, then the file in reads of at most 100,000
        // bytes (crossing chunk borders), twice.
        for _ in 0..2 {
            w.write_all(&[7u8; 512]).unwrap();
            expect.extend_from_slice(&[7u8; 512]);
            let mut f = File::open(&path).unwrap();
            loop {
                let n = match w.read_from(&mut f, 100_000) {
                    Ok(n) => n,
                    Err(SinkError::Read(e) | SinkError::Write(e)) => panic!("{e}"),
                };
                if n == 0 {
                    break;
                }
                assert!(n <= 100_000);
            }
            expect.extend_from_slice(&body);
        }
        let (digest, count, inner) = w.finish();
        assert!(inner == expect, "the inner writer got other bytes");
        assert_eq!(digest, sha(&expect));
        assert_eq!(count, expect.len() as u64);
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
        let mut w = HashingWriter::new(Short(Vec::new()), "sha256-test", true);
        let first = w.write(&data).unwrap();
        assert_eq!(first, 1000);
        w.write_all(&data[first..]).unwrap();
        let (digest, count, inner) = w.finish();
        assert!(inner.0 == data);
        assert_eq!(digest, sha(&data));
        assert_eq!(count, data.len() as u64);
    }
}
