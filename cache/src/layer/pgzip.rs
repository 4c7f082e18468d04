//! Parallel gzip whose bytes do not depend on the thread count.
//!
//! pigz's scheme: the input is cut into fixed 1 MiB chunks; each chunk is
//! raw-deflated on its own, primed with the previous 32 KiB of input as a
//! preset dictionary, and ends with a sync flush (byte-aligned empty stored
//! block), so the compressed chunks concatenate into one valid deflate
//! stream. The trailing partial chunk ends the stream. Chunk borders and
//! dictionaries depend only on the input, so 1, 2 or 16 threads give the
//! same bytes, and the digest of a layer is stable.
//!
//! Why not `gzp`: it needs an owned `'static` writer (we write to a
//! borrowed `&mut dyn Write`), and without its `any_zlib` feature (which
//! drags in C `libz-sys`) it compresses chunks without a dictionary, which
//! costs ratio; flate2's zlib-rs backend does support preset dictionaries.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc;

use flate2::{Crc, FlushCompress, Status};

/// Input bytes per independently compressed chunk.
const CHUNK: usize = 1 << 20;
/// Deflate's window: the dictionary each chunk is primed with.
const DICT: usize = 32 * 1024;

/// A compressed chunk (or why it failed), by sequence number.
type Done = (u64, io::Result<(Vec<u8>, Crc)>);

/// A gzip writer compressing up to `threads` chunks at a time.
///
/// Compression is asynchronous (pigz's pipeline): a full chunk is handed to
/// the pool and `write` returns at once, so the caller's own work (walking
/// the tree, building tar headers, hashing the tar for the diff id) overlaps
/// the compression instead of alternating with it. Finished chunks are
/// written to `inner` in input order on the caller's thread. At most
/// `2 * threads` chunks are in flight, which bounds memory to a few MiB.
pub(crate) struct ParGzip<W: Write> {
    inner: W,
    level: u32,
    pool: rayon::ThreadPool,
    threads: usize,
    /// The chunk being filled.
    buf: Vec<u8>,
    /// Last `DICT` input bytes before `buf`.
    dict: Vec<u8>,
    /// Sequence number of the next chunk handed out / written.
    next_seq: u64,
    next_write: u64,
    tx: mpsc::Sender<Done>,
    rx: mpsc::Receiver<Done>,
    /// Chunks finished out of order, waiting for their predecessors.
    ready: BTreeMap<u64, (Vec<u8>, Crc)>,
    crc: Crc,
    header_written: bool,
}

impl<W: Write> ParGzip<W> {
    /// A writer with `threads` (>= 1) compression workers at `level` (0-9).
    pub(crate) fn new(inner: W, level: u32, threads: usize) -> Result<Self, rayon::ThreadPoolBuildError> {
        let threads = threads.max(1);
        // Even one compression thread is a worker of its own: the caller's
        // thread keeps producing input meanwhile.
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).thread_name(|i| format!("gzip-{i}")).build()?;
        let (tx, rx) = mpsc::channel();
        Ok(ParGzip {
            inner,
            level: level.min(9),
            pool,
            threads,
            buf: Vec::with_capacity(CHUNK),
            dict: Vec::new(),
            next_seq: 0,
            next_write: 0,
            tx,
            rx,
            ready: BTreeMap::new(),
            crc: Crc::new(),
            header_written: false,
        })
    }

    fn write_header(&mut self) -> io::Result<()> {
        if !self.header_written {
            // Same header as Go's compress/gzip: no name, mtime 0, OS unknown.
            let xfl = match self.level {
                9 => 2,
                1 => 4,
                _ => 0,
            };
            self.inner.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 0xff])?;
            self.header_written = true;
        }
        Ok(())
    }

    /// Hands `buf` to the pool as the next chunk (the final one when `last`).
    fn submit(&mut self, last: bool) {
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(if last { 0 } else { CHUNK }));
        let dict = std::mem::take(&mut self.dict);
        if !last {
            // Chunks are always full here, so the next dictionary is the
            // tail of this one.
            self.dict = chunk[chunk.len() - DICT..].to_vec();
        }
        let (seq, level, tx) = (self.next_seq, self.level, self.tx.clone());
        self.next_seq += 1;
        self.pool.spawn(move || {
            // The receiver only goes away with the writer (an error path).
            let _ = tx.send((seq, compress_chunk(&chunk, &dict, level, last)));
        });
    }

    /// Writes finished chunks in order; waits until at most `keep` remain in flight.
    fn drain(&mut self, keep: u64) -> io::Result<()> {
        loop {
            while let Some((bytes, crc)) = self.ready.remove(&self.next_write) {
                self.write_header()?;
                self.inner.write_all(&bytes)?;
                self.crc.combine(&crc);
                self.next_write += 1;
            }
            let in_flight = self.next_seq - self.next_write;
            let done = if in_flight > keep {
                // The sender half lives in `self`, so this never disconnects.
                self.rx.recv().map_err(io::Error::other)?
            } else {
                match self.rx.try_recv() {
                    Ok(done) => done,
                    Err(_) => return Ok(()),
                }
            };
            let (seq, result) = done;
            self.ready.insert(seq, result?);
        }
    }

    /// Ends the stream (last chunk, CRC and length trailer) and returns the
    /// inner writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.write_header()?;
        self.submit(true);
        self.drain(0)?;
        self.inner.write_all(&self.crc.sum().to_le_bytes())?;
        // ISIZE is the length modulo 2^32 (RFC 1952).
        self.inner.write_all(&self.crc.amount().to_le_bytes())?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for ParGzip<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.submit(false);
            self.drain(2 * self.threads as u64)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Only whole chunks can be emitted without changing the output.
        self.inner.flush()
    }
}

/// Raw-deflates `input` primed with `dict`; ends with a sync flush, or with
/// the final block when `last`.
fn compress_chunk(input: &[u8], dict: &[u8], level: u32, last: bool) -> io::Result<(Vec<u8>, Crc)> {
    let mut crc = Crc::new();
    crc.update(input);
    let mut c = flate2::Compress::new(flate2::Compression::new(level), false);
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    // total_in may or may not count the dictionary, depending on backend.
    let start = c.total_in();
    let flush = if last { FlushCompress::Finish } else { FlushCompress::Sync };
    let mut out = Vec::with_capacity(input.len() + input.len() / 8 + 1024);
    loop {
        let consumed = (c.total_in() - start) as usize;
        let status = c.compress_vec(&input[consumed..], &mut out, flush).map_err(io::Error::other)?;
        let all_in = (c.total_in() - start) as usize == input.len();
        let done = if last { status == Status::StreamEnd } else { all_in && out.len() < out.capacity() };
        if done {
            return Ok((out, crc));
        }
        out.reserve(out.capacity() / 4 + 1024);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn corpus(len: usize) -> Vec<u8> {
        // Mixed text and pseudo-random bytes (xorshift), deterministic.
        let mut v = Vec::with_capacity(len);
        let mut x: u64 = 0x9e3779b97f4a7c15;
        while v.len() < len {
            if (v.len() / 100_000) % 2 == 0 {
                v.extend_from_slice(format!("line {} of some text, repeated words words\n", v.len()).as_bytes());
            } else {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v.extend_from_slice(&x.to_le_bytes());
            }
        }
        v.truncate(len);
        v
    }

    fn gzip(data: &[u8], threads: usize, write_size: usize) -> Vec<u8> {
        let mut gz = ParGzip::new(Vec::new(), 6, threads).unwrap();
        for piece in data.chunks(write_size) {
            gz.write_all(piece).unwrap();
        }
        gz.finish().unwrap()
    }

    #[test]
    fn same_bytes_for_any_thread_count_and_round_trips() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK + 12345] {
            let data = corpus(len);
            let one = gzip(&data, 1, 4096);
            assert_eq!(one, gzip(&data, 2, 700_000), "len {len}");
            assert_eq!(one, gzip(&data, 4, 512), "len {len}");
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&one[..]).read_to_end(&mut back).unwrap();
            assert_eq!(back.len(), data.len());
            assert!(back == data, "round trip differs at len {len}");
        }
    }

    #[test]
    fn gzip_tool_accepts_the_stream() {
        let data = corpus(3 * CHUNK + 77);
        let gz = gzip(&data, 2, 65536);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.gz");
        std::fs::write(&f, &gz).unwrap();
        let st = std::process::Command::new("gzip").arg("-t").arg(&f).status().unwrap();
        assert!(st.success());
        let out = std::process::Command::new("gzip").arg("-dc").arg(&f).output().unwrap();
        assert!(out.stdout == data);
    }
}
