//! Small I/O adapters for the builder: an `AsyncWrite` over a synchronous
//! writer (to stream registry blobs straight into the store) and HTTP(S)
//! downloads for `ADD <url>`.

use std::io::Write;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

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

/// Why an `ADD <url>` download failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The HTTP client could not be built.
    #[error("cannot start the HTTP client")]
    Client(#[source] reqwest::Error),
    /// The request failed.
    #[error("GET {url}")]
    Request {
        /// The URL.
        url: String,
        /// The HTTP error.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error status.
    #[error("GET {url}: {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: reqwest::StatusCode,
    },
    /// Writing the download failed.
    #[error("cannot write `{}`", path.display())]
    Write {
        /// The destination.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The content does not match `--checksum`.
    #[error("checksum mismatch for {url}: expected {want}, got {got}")]
    Checksum {
        /// The URL.
        url: String,
        /// The checksum asked for.
        want: String,
        /// The checksum of what arrived.
        got: String,
    },
    /// The download task ended without an answer.
    #[error("the download task ended")]
    Task,
}

/// Downloads `url` to `dest`, streaming, verifying `checksum` (`sha256:...`)
/// when given. The file gets mode 0600 as in BuildKit.
pub fn fetch_url(rt: &Handle, url: &str, checksum: Option<&str>, dest: &Path) -> Result<(), FetchError> {
    let (url, checksum, dest) = (url.to_string(), checksum.map(str::to_string), dest.to_path_buf());
    let (tx, rx) = std::sync::mpsc::channel();
    rt.spawn(async move {
        let _ = tx.send(download(&url, checksum.as_deref(), &dest).await);
    });
    rx.recv().map_err(|_| FetchError::Task)?
}

async fn download(url: &str, checksum: Option<&str>, dest: &Path) -> Result<(), FetchError> {
    let client = reqwest::Client::builder().build().map_err(FetchError::Client)?;
    let request_err = |source| FetchError::Request { url: url.to_string(), source };
    let write_err = |source| FetchError::Write { path: dest.to_path_buf(), source };
    let response = client.get(url).send().await.map_err(request_err)?;
    if !response.status().is_success() {
        return Err(FetchError::Status { url: url.to_string(), status: response.status() });
    }
    // BuildKit's HTTP source dates the file by `Last-Modified` (in any
    // format Go's `http.ParseTime` reads), or the Unix epoch without one.
    let mtime = response
        .headers()
        .get(reqwest::header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_time)
        .unwrap_or(std::time::UNIX_EPOCH);
    let mut file = std::fs::File::create(dest).map_err(write_err)?;
    let mut hasher = Sha256::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(request_err)?;
        hasher.update(&chunk);
        file.write_all(&chunk).map_err(write_err)?;
    }
    file.sync_all().map_err(write_err)?;
    let got = format!("sha256:{}", hex::encode(hasher.finalize()));
    if let Some(want) = checksum
        && want != got
    {
        let _ = std::fs::remove_file(dest);
        return Err(FetchError::Checksum { url: url.to_string(), want: want.to_string(), got });
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o600)).map_err(write_err)?;
    file.set_times(std::fs::FileTimes::new().set_accessed(mtime).set_modified(mtime)).map_err(write_err)?;
    Ok(())
}

/// Go's `http.ParseTime`: RFC 1123 with `GMT`, RFC 850, or ANSI C
/// `asctime` (always UTC).
fn parse_http_time(v: &str) -> Option<std::time::SystemTime> {
    let v = v.trim();
    let formats = ["%a, %d %b %Y %H:%M:%S GMT", "%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"];
    let t = formats.iter().find_map(|f| chrono::NaiveDateTime::parse_from_str(v, f).ok())?;
    let secs = t.and_utc().timestamp();
    let secs = u64::try_from(secs).ok()?;
    Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::parse_http_time;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn last_modified_formats_of_go_http_parse_time() {
        let want = Some(UNIX_EPOCH + Duration::from_secs(784111777));
        assert_eq!(parse_http_time("Sun, 06 Nov 1994 08:49:37 GMT"), want);
        assert_eq!(parse_http_time("Sunday, 06-Nov-94 08:49:37 GMT"), want);
        assert_eq!(parse_http_time("Sun Nov  6 08:49:37 1994"), want);
        assert_eq!(parse_http_time("yesterday"), None);
        // Go's `TimeFormat` demands the literal `GMT`.
        assert_eq!(parse_http_time("Sun, 06 Nov 1994 08:49:37 +0200"), None);
    }
}
