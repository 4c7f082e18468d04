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

use std::io::{self, Write};

use flate2::{Crc, FlushCompress, Status};
use rayon::prelude::*;

/// Input bytes per independently compressed chunk.
const CHUNK: usize = 1 << 20;
/// Deflate's window: the dictionary each chunk is primed with.
const DICT: usize = 32 * 1024;

/// A gzip writer compressing `threads` chunks at a time.
pub(crate) struct ParGzip<W: Write> {
    inner: W,
    level: u32,
    pool: Option<rayon::ThreadPool>,
    threads: usize,
    buf: Vec<u8>,
    /// Last `DICT` input bytes before `buf`.
    dict: Vec<u8>,
    crc: Crc,
    header_written: bool,
}

impl<W: Write> ParGzip<W> {
    /// A writer with `threads` (>= 1) compression workers at `level` (0-9).
    pub(crate) fn new(inner: W, level: u32, threads: usize) -> Result<Self, rayon::ThreadPoolBuildError> {
        let threads = threads.max(1);
        let pool = if threads > 1 {
            Some(rayon::ThreadPoolBuilder::new().num_threads(threads).thread_name(|i| format!("gzip-{i}")).build()?)
        } else {
            None
        };
        Ok(ParGzip {
            inner,
            level: level.min(9),
            pool,
            threads,
            buf: Vec::with_capacity(threads * CHUNK),
            dict: Vec::new(),
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

    /// Compresses and writes every complete chunk in `buf`.
    fn flush_chunks(&mut self) -> io::Result<()> {
        let n = self.buf.len() / CHUNK;
        if n == 0 {
            return Ok(());
        }
        self.write_header()?;
        let level = self.level;
        let (buf, dict) = (&self.buf, &self.dict);
        let job = |i: usize| {
            let chunk = &buf[i * CHUNK..(i + 1) * CHUNK];
            let d: &[u8] = if i == 0 { dict } else { &buf[i * CHUNK - DICT..i * CHUNK] };
            compress_chunk(chunk, d, level, false)
        };
        let results: Vec<io::Result<(Vec<u8>, Crc)>> = match &self.pool {
            Some(pool) => pool.install(|| (0..n).into_par_iter().map(job).collect()),
            None => (0..n).map(job).collect(),
        };
        for r in results {
            let (bytes, crc) = r?;
            self.inner.write_all(&bytes)?;
            self.crc.combine(&crc);
        }
        let end = n * CHUNK;
        self.dict.clear();
        self.dict.extend_from_slice(&self.buf[end - DICT..end]);
        self.buf.drain(..end);
        Ok(())
    }

    /// Ends the stream (last chunk, CRC and length trailer) and returns the
    /// inner writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.flush_chunks()?;
        self.write_header()?;
        let (bytes, crc) = compress_chunk(&self.buf, &self.dict, self.level, true)?;
        self.inner.write_all(&bytes)?;
        self.crc.combine(&crc);
        self.inner.write_all(&self.crc.sum().to_le_bytes())?;
        // ISIZE is the length modulo 2^32 (RFC 1952).
        self.inner.write_all(&self.crc.amount().to_le_bytes())?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for ParGzip<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = (self.threads * CHUNK).saturating_sub(self.buf.len()).max(1);
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= self.threads * CHUNK {
            self.flush_chunks()?;
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
