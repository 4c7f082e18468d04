//! Seeing a background layer write's compressed bytes as they are written.
//!
//! A layer that a registry will receive can be sent while it is being
//! compressed instead of after (the upload of the last, biggest layer is
//! otherwise serial after the build). A [`LayerTee`] given to
//! [`Store::compress_in_background_teed`](super::Store::compress_in_background_teed)
//! gets every byte the blob writer gets, in order; it must never block the
//! compressor for long (it drops out instead: [`LayerTee::write`] returns
//! `false`). [`LayerTee::complete`] names the blob once all its bytes are
//! written and checked, just before the store tells readers the layer
//! exists; [`LayerTee::finish`] is called only once the blob is kept in
//! the store, with every byte seen; a tee dropped without it (a failed
//! write, a job another one already did) must treat what it saw as void.

use std::io::{self, Write};

/// A receiver of a layer blob's bytes as they are written.
pub trait LayerTee: Send {
    /// The next bytes of the blob. `false`: the tee gives up (it is not
    /// called again, nor finished).
    fn write(&mut self, bytes: &[u8]) -> bool;
    /// Every byte was written, and they are blob `digest`; readers of the
    /// store do not know the layer yet (so a tee can reserve what it will
    /// do with the blob before anyone else acts on it).
    fn complete(&mut self, _digest: &str) {}
    /// Every byte was written and the blob is in the store.
    fn finish(self: Box<Self>);
}

/// A writer passing what it writes to `inner` and then to each tee still
/// in.
pub(super) struct TeeWriter<'a> {
    pub inner: &'a mut dyn Write,
    pub tees: Vec<Box<dyn LayerTee>>,
}

impl Write for TeeWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        // Only the bytes the file took, so the tee sees the file's bytes.
        self.tees.retain_mut(|t| t.write(&buf[..n]));
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    struct Seen {
        bytes: Arc<Mutex<Vec<u8>>>,
        limit: usize,
    }

    impl LayerTee for Seen {
        fn write(&mut self, bytes: &[u8]) -> bool {
            let mut b = self.bytes.lock().unwrap();
            b.extend_from_slice(bytes);
            b.len() < self.limit
        }
        fn finish(self: Box<Self>) {}
    }

    /// Each tee sees the bytes in order; one that gives up is not called
    /// again while the others go on.
    #[test]
    fn tees_see_every_byte_until_they_give_up() {
        let (all, some) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
        let mut out = Vec::new();
        let mut w = TeeWriter {
            inner: &mut out,
            tees: vec![
                Box::new(Seen { bytes: all.clone(), limit: usize::MAX }),
                Box::new(Seen { bytes: some.clone(), limit: 3 }),
            ],
        };
        for chunk in [&b"ab"[..], b"cd", b"ef"] {
            w.write_all(chunk).unwrap();
        }
        assert_eq!(w.tees.len(), 1);
        drop(w);
        assert_eq!(out, b"abcdef");
        assert_eq!(*all.lock().unwrap(), b"abcdef");
        assert_eq!(*some.lock().unwrap(), b"abcd");
    }
}
