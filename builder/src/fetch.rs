//! Small I/O adapters for the builder: an `AsyncWrite` over a synchronous
//! writer (to stream registry blobs straight into the store) and HTTP(S)
//! downloads for `ADD <url>`.

use std::io::Write;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use anyhow::{Context as _, Result, bail};
use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};
use tokio::runtime::Handle;

/// Adapts a blocking `Write` (the store's blob writer, which hashes as it
/// writes) to `AsyncWrite`. Writes go to a local file, so blocking briefly
/// in `poll_write` is acceptable and avoids an intermediate buffer.
pub struct SyncWriteBridge<W: Write> {
    inner: W,
}

impl<W: Write> SyncWriteBridge<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        SyncWriteBridge { inner }
    }

    /// The wrapped writer.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write + Unpin> tokio::io::AsyncWrite for SyncWriteBridge<W> {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Poll::Ready(self.inner.write(buf))
    }

    fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(self.inner.flush())
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(self.inner.flush())
    }
}

/// Downloads `url` to `dest`, streaming, verifying `checksum` (`sha256:...`)
/// when given. The file gets mode 0600 as in BuildKit.
pub fn fetch_url(rt: &Handle, url: &str, checksum: Option<&str>, dest: &Path) -> Result<()> {
    let (url, checksum, dest) = (url.to_string(), checksum.map(str::to_string), dest.to_path_buf());
    let (tx, rx) = std::sync::mpsc::channel();
    rt.spawn(async move {
        let _ = tx.send(download(&url, checksum.as_deref(), &dest).await);
    });
    rx.recv().context("download task ended")?
}

async fn download(url: &str, checksum: Option<&str>, dest: &Path) -> Result<()> {
    let client = reqwest::Client::builder().build()?;
    let response = client.get(url).send().await.with_context(|| format!("GET {url}"))?;
    if !response.status().is_success() {
        bail!("GET {url}: {}", response.status());
    }
    let mut file = std::fs::File::create(dest)?;
    let mut hasher = Sha256::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.with_context(|| format!("reading {url}"))?;
        hasher.update(&chunk);
        file.write_all(&chunk)?;
    }
    file.sync_all()?;
    let got = format!("sha256:{}", hex::encode(hasher.finalize()));
    if let Some(want) = checksum
        && want != got
    {
        let _ = std::fs::remove_file(dest);
        bail!("checksum mismatch for {url}: expected {want}, got {got}");
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}
