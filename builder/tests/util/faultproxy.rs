//! A fault-injecting HTTP/1.1 proxy for registry tests: a thread per
//! connection between `rbuild` and a plain-HTTP registry that, by rule,
//! drops connections, answers 503/429 (with `Retry-After`), cuts a request
//! body part-way, or truncates a response; everything else is forwarded.
//! Every request is logged (method, path+query, status or fault), so tests
//! can see what the client did (mount POSTs, upload-status GETs...) and
//! count the blobs it downloaded ([`FaultProxy::blob_gets`]).
//!
//! One request per connection: the proxy forces `Connection: close`, so
//! each request is seen whole and a fault never hits a reused socket.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// What to do to a matching request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Close the connection without answering.
    Drop,
    /// Answer this status with `Retry-After` seconds, if given.
    Status {
        /// HTTP status.
        code: u16,
        /// `Retry-After` value.
        retry_after: Option<u32>,
    },
    /// Forward only this many bytes of the request body, then close.
    CutRequestBody(usize),
    /// Forward only this many bytes of the response, then close.
    TruncateResponse(usize),
    /// Wait this many milliseconds, then forward normally; delayed requests
    /// in flight at once are counted ([`FaultProxy::max_delayed_in_flight`]).
    Delay(u64),
}

/// Which requests get a fault.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Method to match (`None`: any).
    pub method: Option<&'static str>,
    /// Substring of the request target to match.
    pub path_contains: &'static str,
    /// Fault every `every`-th matching request (1: all of them).
    pub every: usize,
    /// At most this many faults from this rule.
    pub limit: usize,
    /// The fault.
    pub fault: Fault,
}

impl Rule {
    /// Every matching request, without limit.
    pub fn always(method: Option<&'static str>, path_contains: &'static str, fault: Fault) -> Rule {
        Rule { method, path_contains, every: 1, limit: usize::MAX, fault }
    }
}

/// One proxied request.
#[derive(Clone, Debug)]
pub struct Logged {
    /// Method.
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Status the client got (`None`: no answer).
    pub status: Option<u16>,
    /// The fault injected, if any.
    pub fault: Option<Fault>,
}

struct RuleState {
    rule: Rule,
    seen: usize,
    injected: usize,
}

/// A running proxy; stops accepting when dropped.
pub struct FaultProxy {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    log: Arc<Mutex<Vec<Logged>>>,
    stop: Arc<AtomicBool>,
    delayed: Arc<InFlight>,
}

/// Delayed requests in flight now, and the most at once.
#[derive(Default)]
struct InFlight {
    now: AtomicUsize,
    max: AtomicUsize,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (`HOST:PORT`) applying `rules` (the
    /// first matching rule that is due decides).
    pub fn start(upstream: &str, rules: Vec<Rule>) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr").to_string();
        let log: Arc<Mutex<Vec<Logged>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let rules = Arc::new(Mutex::new(
            rules.into_iter().map(|rule| RuleState { rule, seen: 0, injected: 0 }).collect::<Vec<_>>(),
        ));
        let delayed: Arc<InFlight> = Arc::default();
        let (upstream, log2, stop2, delayed2) = (upstream.to_string(), log.clone(), stop.clone(), delayed.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (upstream, log, rules, delayed) = (upstream.clone(), log2.clone(), rules.clone(), delayed2.clone());
                thread::spawn(move || handle(conn, &upstream, &log, &rules, &delayed));
            }
        });
        FaultProxy { addr, log, stop, delayed }
    }

    /// The most requests with a [`Fault::Delay`] that were in flight at
    /// once (from the start of the delay to the end of the response).
    pub fn max_delayed_in_flight(&self) -> usize {
        self.delayed.max.load(Ordering::SeqCst)
    }

    /// The requests with a [`Fault::Delay`] in flight now.
    pub fn delayed_in_flight(&self) -> usize {
        self.delayed.now.load(Ordering::SeqCst)
    }

    /// Every request so far.
    pub fn log(&self) -> Vec<Logged> {
        self.log.lock().unwrap().clone()
    }

    /// The digests of the blobs downloaded through the proxy (answered GETs
    /// of `/v2/<name>/blobs/<digest>`, delayed ones included, a resumed one
    /// counted each time), in order.
    pub fn blob_gets(&self) -> Vec<String> {
        self.log()
            .iter()
            .filter(|l| l.method == "GET" && matches!(l.fault, None | Some(Fault::Delay(_))))
            .filter(|l| matches!(l.status, Some(200) | Some(206)))
            .filter_map(|l| {
                let (_, rest) = l.target.split_once("/blobs/")?;
                let digest = rest.split('?').next()?;
                digest.starts_with("sha256:").then(|| digest.to_string())
            })
            .collect()
    }

    /// How many faults were injected.
    pub fn faults(&self) -> usize {
        self.log().iter().filter(|l| l.fault.is_some()).count()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(&self.addr);
    }
}

fn handle(
    client: TcpStream,
    upstream: &str,
    log: &Mutex<Vec<Logged>>,
    rules: &Mutex<Vec<RuleState>>,
    delayed: &InFlight,
) {
    let mut reader = BufReader::new(client.try_clone().expect("clone client socket"));
    // A TLS ClientHello (a client probing for HTTPS first): not HTTP, so
    // hang up at once, as a plain-HTTP server would fail the handshake.
    if reader.fill_buf().map(|b| b.first() == Some(&0x16)).unwrap_or(true) {
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    let mut head_lines = Vec::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line == "\r\n" || line == "\n" {
            break;
        }
        head_lines.push(line.trim_end().to_string());
    }
    let Some(request_line) = head_lines.first().cloned() else { return };
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let content_length: usize = head_lines
        .iter()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);

    let fault = {
        let mut rules = rules.lock().unwrap();
        rules.iter_mut().find_map(|st| {
            let r = &st.rule;
            if r.method.is_some_and(|m| m != method) || !target.contains(r.path_contains) {
                return None;
            }
            st.seen += 1;
            (st.seen % r.every.max(1) == 0 && st.injected < r.limit).then(|| {
                st.injected += 1;
                r.fault
            })
        })
    };
    let record = |status: Option<u16>| {
        log.lock().unwrap().push(Logged { method: method.clone(), target: target.clone(), status, fault });
    };
    let mut client_w = client;
    match fault {
        Some(Fault::Drop) => {
            record(None);
            let _ = client_w.shutdown(Shutdown::Both);
            return;
        }
        Some(Fault::Status { code, retry_after }) => {
            // Read the body so the client sees a clean answer, not a reset.
            let _ = std::io::copy(&mut (&mut reader).take(content_length as u64), &mut std::io::sink());
            let retry = retry_after.map(|s| format!("Retry-After: {s}\r\n")).unwrap_or_default();
            let _ = write!(
                client_w,
                "HTTP/1.1 {code} Injected\r\n{retry}Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
            );
            record(Some(code));
            let _ = client_w.shutdown(Shutdown::Both);
            return;
        }
        Some(Fault::Delay(ms)) => {
            let now = delayed.now.fetch_add(1, Ordering::SeqCst) + 1;
            delayed.max.fetch_max(now, Ordering::SeqCst);
            thread::sleep(std::time::Duration::from_millis(ms));
        }
        _ => {}
    }
    // Leaves the in-flight count however the forwarding below ends.
    struct Leave<'a>(Option<&'a InFlight>);
    impl Drop for Leave<'_> {
        fn drop(&mut self) {
            if let Some(d) = self.0 {
                d.now.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
    let _leave = Leave(matches!(fault, Some(Fault::Delay(_))).then_some(delayed));
    let Ok(mut up) = TcpStream::connect(upstream) else {
        record(None);
        return;
    };
    let mut head: String = head_lines
        .iter()
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    head.push_str("Connection: close\r\n\r\n");
    if up.write_all(head.as_bytes()).is_err() {
        record(None);
        return;
    }
    let body_limit = match fault {
        Some(Fault::CutRequestBody(n)) => n.min(content_length),
        _ => content_length,
    };
    let copied = std::io::copy(&mut (&mut reader).take(body_limit as u64), &mut up).unwrap_or(0);
    if matches!(fault, Some(Fault::CutRequestBody(_))) || copied < body_limit as u64 {
        record(None);
        let _ = up.shutdown(Shutdown::Both);
        let _ = client_w.shutdown(Shutdown::Both);
        return;
    }
    let response_limit = match fault {
        Some(Fault::TruncateResponse(n)) => n,
        _ => usize::MAX,
    };
    let mut sent = 0usize;
    let mut status = None;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match up.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if status.is_none() {
            status = std::str::from_utf8(&buf[..n.min(16)])
                .ok()
                .and_then(|s| s.split_whitespace().nth(1))
                .and_then(|c| c.parse().ok());
        }
        let n = n.min(response_limit - sent);
        if n == 0 || client_w.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n;
    }
    record(status);
    let _ = client_w.shutdown(Shutdown::Both);
}
