//! `--load`: hands a built image to a local container engine.
//!
//! Docker: the Engine API's `POST /images/load` over the daemon's unix
//! socket (`DOCKER_HOST=unix://...`, else `/var/run/docker.sock`), the body
//! a docker-archive streamed with chunked transfer encoding as it is
//! written, so the image never sits whole in memory. Podman: `podman load`
//! with the same archive streamed into its standard input.
//!
//! Which engine: `RBUILD_LOAD=docker|podman` forces one; otherwise Docker
//! when its socket accepts a connection, else podman when it is on `PATH`.
//!
//! HTTP/1.1 is written by hand here: one request with a streamed body and a
//! small JSON answer, over a unix socket that `reqwest` cannot dial, from a
//! synchronous archive writer that an async client would need bridging for.

use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::export::{ExportError, ImageBundle, write_docker_archive};

/// The Docker socket when `DOCKER_HOST` is unset.
const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";
/// Largest engine answer read (it is a few JSON lines).
const MAX_ANSWER: u64 = 1 << 20;

/// A local container engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Engine {
    /// A Docker daemon's API socket.
    Docker {
        /// The unix socket.
        socket: PathBuf,
    },
    /// `podman load`.
    Podman,
}

/// Why an image could not be loaded into an engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// `RBUILD_LOAD` names no engine.
    #[error("`RBUILD_LOAD={0}` names no engine: use `docker` or `podman`")]
    UnknownEngine(String),
    /// `DOCKER_HOST` is not a unix socket.
    #[error("`DOCKER_HOST={0}` is not supported by `--load`: only `unix://` sockets are")]
    UnsupportedHost(String),
    /// Nothing to load into.
    #[error(
        "no container engine is reachable for `--load`: {docker}, and `podman` is not on PATH; start one, or write \
         a file with `-o type=docker,dest=FILE`"
    )]
    NoEngine {
        /// Why Docker was not reachable.
        docker: String,
    },
    /// Connecting to the Docker socket failed.
    #[error("cannot connect to the Docker daemon at `{}`", socket.display())]
    Connect {
        /// The socket.
        socket: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The conversation with the daemon failed.
    #[error("talking to the Docker daemon at `{}`", socket.display())]
    Io {
        /// The socket.
        socket: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The daemon refused the archive.
    #[error("the Docker daemon refused the image: {0}")]
    Refused(String),
    /// Starting or feeding `podman load` failed.
    #[error("running `podman load`")]
    Podman {
        /// The error.
        #[source]
        source: io::Error,
    },
    /// `podman load` failed.
    #[error("`podman load` failed: {0}")]
    PodmanFailed(String),
    /// Writing the archive failed.
    #[error("writing the image archive")]
    Archive(#[source] Box<ExportError>),
}

impl Engine {
    /// The engine `--load` uses (see the module docs).
    pub fn detect() -> Result<Engine, EngineError> {
        let forced = std::env::var("RBUILD_LOAD").ok().filter(|v| !v.is_empty());
        match forced.as_deref() {
            Some("podman") => return Ok(Engine::Podman),
            Some("docker") => return Ok(Engine::Docker { socket: docker_socket()? }),
            Some(other) => return Err(EngineError::UnknownEngine(other.to_string())),
            None => {}
        }
        let socket = docker_socket()?;
        let docker = match UnixStream::connect(&socket) {
            Ok(_) => return Ok(Engine::Docker { socket }),
            Err(e) => format!("the Docker socket `{}` is not reachable ({e})", socket.display()),
        };
        if on_path("podman") { Ok(Engine::Podman) } else { Err(EngineError::NoEngine { docker }) }
    }

    /// A short name for progress messages.
    pub fn describe(&self) -> String {
        match self {
            Engine::Docker { socket } => format!("docker (unix://{})", socket.display()),
            Engine::Podman => "podman".into(),
        }
    }

    /// Loads the bundle (one platform's image); returns the engine's own
    /// messages (`Loaded image: app:1.0`).
    pub fn load(&self, bundle: &ImageBundle) -> Result<Vec<String>, EngineError> {
        match self {
            Engine::Docker { socket } => docker_load(socket, bundle),
            Engine::Podman => podman_load(bundle),
        }
    }
}

fn docker_socket() -> Result<PathBuf, EngineError> {
    match std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()) {
        None => Ok(PathBuf::from(DEFAULT_DOCKER_SOCKET)),
        Some(h) => match h.strip_prefix("unix://") {
            Some(path) => Ok(PathBuf::from(path)),
            None => Err(EngineError::UnsupportedHost(h)),
        },
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|dir| dir.join(program).is_file())).unwrap_or(false)
}

/// Chunked transfer encoding over a writer; [`Chunked::finish`] writes the
/// last chunk.
struct Chunked<W: Write> {
    inner: W,
}

impl<W: Write> Write for Chunked<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        write!(self.inner, "{:x}\r\n", buf.len())?;
        self.inner.write_all(buf)?;
        self.inner.write_all(b"\r\n")?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> Chunked<W> {
    fn finish(mut self) -> io::Result<W> {
        self.inner.write_all(b"0\r\n\r\n")?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

fn docker_load(socket: &std::path::Path, bundle: &ImageBundle) -> Result<Vec<String>, EngineError> {
    let io_err = |source| EngineError::Io { socket: socket.to_path_buf(), source };
    let stream =
        UnixStream::connect(socket).map_err(|source| EngineError::Connect { socket: socket.to_path_buf(), source })?;
    let mut head = BufWriter::new(&stream);
    head.write_all(
        b"POST /images/load?quiet=1 HTTP/1.1\r\nHost: docker\r\nUser-Agent: rbuild\r\nContent-Type: application/x-tar\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    )
    .map_err(io_err)?;
    let head = head.into_inner().map_err(|e| io_err(e.into_error()))?;
    // Big chunks: the archive writer writes tar headers of 512 bytes.
    let mut body = BufWriter::with_capacity(1 << 20, Chunked { inner: head });
    let written = write_docker_archive(bundle, &mut body).and_then(|()| {
        let chunked = body.into_inner().map_err(|e| ExportError::Write { source: e.into_error() })?;
        chunked.finish().map_err(|source| ExportError::Write { source })?;
        Ok(())
    });
    // If the daemon gave up early (and closed), its answer says why.
    let answer = read_answer(&stream);
    match (written, answer) {
        (_, Ok((status, body))) if status != 200 => Err(EngineError::Refused(api_message(&body))),
        (Err(e), _) => Err(EngineError::Archive(Box::new(e))),
        (Ok(()), Err(e)) => Err(io_err(e)),
        (Ok(()), Ok((_, body))) => load_messages(&body),
    }
}

/// Reads the HTTP answer: status and (de-chunked) body.
fn read_answer(stream: &UnixStream) -> io::Result<(u16, Vec<u8>)> {
    let mut r = BufReader::new(stream.take(MAX_ANSWER));
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("not an HTTP answer: {line:?}")))?;
    let mut chunked = false;
    let mut length: Option<usize> = None;
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("transfer-encoding:") {
            chunked = v.trim() == "chunked";
        } else if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().ok();
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            if size == 0 {
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])?;
            line.clear();
            r.read_line(&mut line)?;
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok((status, body))
}

/// The `message` of an API error body, else the body.
fn api_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string())
}

/// The JSON message stream of `/images/load`: `stream` lines, or an `error`.
fn load_messages(body: &[u8]) -> Result<Vec<String>, EngineError> {
    let mut out = Vec::new();
    for v in serde_json::Deserializer::from_slice(body).into_iter::<serde_json::Value>() {
        let v = v.map_err(|e| EngineError::Refused(format!("unreadable answer: {e}")))?;
        if let Some(e) = v["error"].as_str() {
            return Err(EngineError::Refused(e.to_string()));
        }
        if let Some(s) = v["stream"].as_str() {
            out.extend(s.lines().filter(|l| !l.trim().is_empty()).map(str::to_string));
        }
    }
    Ok(out)
}

fn podman_load(bundle: &ImageBundle) -> Result<Vec<String>, EngineError> {
    let perr = |source| EngineError::Podman { source };
    let mut child = Command::new("podman")
        .arg("load")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(perr)?;
    let stdin = child.stdin.take().expect("stdin is piped");
    let mut w = BufWriter::with_capacity(1 << 20, stdin);
    let written = write_docker_archive(bundle, &mut w)
        .and_then(|()| w.into_inner().map(drop).map_err(|e| ExportError::Write { source: e.into_error() }));
    let out = child.wait_with_output().map_err(perr)?;
    if !out.status.success() {
        return Err(EngineError::PodmanFailed(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    written.map_err(|e| EngineError::Archive(Box::new(e)))?;
    Ok(String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_encoding_frames_each_write() {
        let mut c = Chunked { inner: Vec::new() };
        c.write_all(b"hello").unwrap();
        c.write_all(&[b'x'; 17]).unwrap();
        let out = c.finish().unwrap();
        assert_eq!(out, [b"5\r\nhello\r\n11\r\n".as_slice(), &[b'x'; 17], b"\r\n0\r\n\r\n"].concat());
    }

    #[test]
    fn load_answer_messages_and_errors() {
        let ok = br#"{"stream":"Loaded image: app:1.0\n"}"#;
        assert_eq!(load_messages(ok).unwrap(), ["Loaded image: app:1.0"]);
        let bad = br#"{"errorDetail":{"message":"bad layer"},"error":"bad layer"}"#;
        assert!(matches!(load_messages(bad), Err(EngineError::Refused(m)) if m == "bad layer"));
        assert_eq!(api_message(br#"{"message":"no such thing"}"#), "no such thing");
    }
}
