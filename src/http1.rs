//! A small HTTP/1.1 client for the lean path's requests: `GET`s with an empty body
//! whose whole answer is wanted in memory (a log file, a page of a listing).
//!
//! Why not the SDK's HTTP client (hyper): a hyper connection keeps state that grows
//! with the requests it has carried — its dispatch queue takes a second block of 32
//! slots (~12 KB) at its 33rd request, its read buffer grows past 8 KiB and stays —
//! and a day keeps ~150 connections busy, so the process grew by ~4 MiB between a
//! 20 MB day and a 2 GB day (BENCHMARKS.md, "The flatness step"). Here a connection
//! is the socket (and its TLS session) and nothing else: each request writes its head,
//! reads the answer's head into a buffer of its own, and reads the body into one
//! allocation of the size the answer announces, which is handed out as it is.
//!
//! What it does, and no more: keep-alive connections in a LIFO pool (at most
//! [`MAX_IDLE`], each idle at most [`IDLE_FOR`]); `Content-Length`, `chunked` and
//! read-to-close bodies; `http://` over TCP (`TCP_NODELAY`) and `https://` over rustls
//! with the platform's root certificates and the aws-lc-rs provider, as the SDK's
//! default client uses them. A request that fails on a pooled connection before any
//! of its answer arrived (the server closed the idle connection) is sent once more on
//! a new one; every other failure is the caller's: the lean path then sends the
//! request through the SDK (see [`crate::fetch`]). No proxies (the SDK's default
//! client uses none either), no redirects, no compression.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Idle connections kept for reuse: more than the GETs and LISTs the configuration lets
/// run at once (1,024 + 256), so that a connection is closed for being idle too long,
/// not for being one too many.
pub const MAX_IDLE: usize = 2048;
/// How long an idle connection is kept (S3 closes idle ones after a while; an older
/// one is dropped rather than tried).
pub const IDLE_FOR: Duration = Duration::from_secs(20);
/// The longest answer head read.
pub const MAX_HEAD: usize = 64 * 1024;
/// The most header lines an answer may have.
const MAX_HEADERS: usize = 100;
/// The head buffer's first size: an S3 answer's head is ~0.5 KB.
const HEAD_BUF: usize = 2048;

/// One answer: status and whole body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Bytes,
}

/// Why a request failed, in words for the log.
#[derive(Debug, PartialEq, Eq)]
pub struct Failed(pub String);

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn failed(what: &str, e: impl fmt::Display) -> Failed {
    Failed(format!("{what}: {e}"))
}

/// A connection: plain TCP or TLS over TCP.
enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The TLS settings of the SDK's default client: the platform's roots, aws-lc-rs,
/// TLS 1.2 and 1.3; loaded once per process.
fn platform_tls() -> Result<Arc<rustls::ClientConfig>, Failed> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(format!(
                    "no root certificates found on this system ({} errors)",
                    found.errors.len()
                ));
            }
            tls_config(roots).map_err(|e| e.0)
        })
        .clone()
        .map_err(Failed)
}

/// A TLS client configuration trusting `roots`.
pub fn tls_config(roots: rustls::RootCertStore) -> Result<Arc<rustls::ClientConfig>, Failed> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| failed("TLS configuration", e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Where the client connects, and how.
enum Scheme {
    Http,
    Https(TlsConnector, ServerName<'static>),
}

/// Requests to one origin (`http://host[:port]` or `https://host[:port]`).
pub struct Client {
    scheme: Scheme,
    /// `host:port` to connect to (brackets kept around an IPv6 address).
    address: String,
    connect_timeout: Option<Duration>,
    idle: Mutex<Vec<(Conn, Instant)>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https(..) => "https",
        };
        f.debug_struct("Client")
            .field("scheme", &scheme)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `scheme` (`http` or `https`) and `authority` (`host[:port]`); TLS
    /// with the platform's roots.
    pub fn new(
        scheme: &str,
        authority: &str,
        connect_timeout: Option<Duration>,
    ) -> Result<Client, Failed> {
        let tls = match scheme {
            "http" => None,
            "https" => Some(platform_tls()?),
            other => return Err(Failed(format!("scheme {other:?}"))),
        };
        Client::with_tls(authority, tls, connect_timeout)
    }

    /// A client for `authority`, over TLS with `tls` when given, else plain TCP.
    pub fn with_tls(
        authority: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
        connect_timeout: Option<Duration>,
    ) -> Result<Client, Failed> {
        let (host, port) = split_authority(authority, tls.is_some())?;
        let scheme = match tls {
            None => Scheme::Http,
            Some(config) => {
                let name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']'))
                    .map_err(|e| failed("TLS server name", e))?
                    .to_owned();
                Scheme::Https(TlsConnector::from(config), name)
            }
        };
        Ok(Client {
            scheme,
            address: format!("{host}:{port}"),
            connect_timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// `GET target` (path and query, as sent) with `headers` (which must include
    /// `host`); the answer, whatever its status, with a body of at most `max_body`
    /// bytes.
    pub async fn get(
        &self,
        target: &str,
        headers: &[(&str, String)],
        max_body: usize,
    ) -> Result<Response, Failed> {
        let head = request_head(target, headers);
        if let Some(conn) = self.pooled() {
            match exchange(conn, head.as_bytes(), max_body).await {
                Ok((response, conn)) => return Ok(self.keep(response, conn)),
                // The server closed the idle connection before answering: a new one.
                Err(Exchange::Unanswered(_)) => {}
                Err(Exchange::Broken(why)) => return Err(why),
            }
        }
        let conn = self.connect().await?;
        match exchange(conn, head.as_bytes(), max_body).await {
            Ok((response, conn)) => Ok(self.keep(response, conn)),
            Err(Exchange::Unanswered(why) | Exchange::Broken(why)) => Err(why),
        }
    }

    /// How many connections are idle in the pool.
    pub fn idle(&self) -> usize {
        self.idle.lock().expect("not poisoned").len()
    }

    fn pooled(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().expect("not poisoned");
        while let Some((conn, since)) = idle.pop() {
            if since.elapsed() < IDLE_FOR {
                return Some(conn);
            }
        }
        None
    }

    fn keep(&self, response: Response, conn: Option<Conn>) -> Response {
        if let Some(conn) = conn {
            let mut idle = self.idle.lock().expect("not poisoned");
            if idle.len() < MAX_IDLE {
                idle.push((conn, Instant::now()));
            }
        }
        response
    }

    async fn connect(&self) -> Result<Conn, Failed> {
        let connect = async {
            let tcp = TcpStream::connect(&self.address)
                .await
                .map_err(|e| failed(&format!("connecting to {}", self.address), e))?;
            tcp.set_nodelay(true)
                .map_err(|e| failed("setting TCP_NODELAY", e))?;
            match &self.scheme {
                Scheme::Http => Ok(Conn::Plain(tcp)),
                Scheme::Https(tls, name) => tls
                    .connect(name.clone(), tcp)
                    .await
                    .map(|s| Conn::Tls(Box::new(s)))
                    .map_err(|e| failed(&format!("TLS with {}", self.address), e)),
            }
        };
        match self.connect_timeout {
            Some(limit) => tokio::time::timeout(limit, connect)
                .await
                .unwrap_or_else(|_| {
                    Err(Failed(format!("connecting to {}: timed out", self.address)))
                }),
            None => connect.await,
        }
    }
}

/// `host` and port of `authority`, the port defaulting to the scheme's.
fn split_authority(authority: &str, tls: bool) -> Result<(&str, u16), Failed> {
    let default = if tls { 443 } else { 80 };
    let bad = || Failed(format!("authority {authority:?}"));
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']').ok_or_else(bad)?;
        let (host, rest) = authority.split_at(end + 1);
        match rest.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if rest.is_empty() => (host, None),
            None => return Err(bad()),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() || host.contains(['/', '@', ' ']) {
        return Err(bad());
    }
    let port = match port {
        Some(p) => p.parse().map_err(|_| bad())?,
        None => default,
    };
    Ok((host, port))
}

/// The request's head: request line, headers, blank line.
fn request_head(target: &str, headers: &[(&str, String)]) -> String {
    let mut head = String::with_capacity(
        32 + target.len()
            + headers
                .iter()
                .map(|(n, v)| n.len() + v.len() + 4)
                .sum::<usize>(),
    );
    head.push_str("GET ");
    head.push_str(target);
    head.push_str(" HTTP/1.1\r\n");
    for (name, value) in headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head
}

/// How one exchange failed.
enum Exchange {
    /// Before a byte of the answer arrived: the request may be sent again.
    Unanswered(Failed),
    /// After.
    Broken(Failed),
}

/// How the answer's body is delimited.
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// The parts of an answer's head that matter here.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    status: u16,
    framing: Framing,
    /// The connection can carry another request after this answer.
    reusable: bool,
    /// The head's length in bytes.
    len: usize,
}

/// Reads an answer's head from `buf`: `None` while it is incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, Failed> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf).map_err(|e| failed("answer head", e))? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return Ok(None),
    };
    let status = response.code.unwrap_or(0);
    let mut reusable = response.version == Some(1);
    let mut length = None;
    let mut chunked = false;
    for h in response.headers.iter() {
        let value = std::str::from_utf8(h.value)
            .map_err(|_| Failed(format!("header {} is not UTF-8", h.name)))?
            .trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse::<usize>()
                .map_err(|_| Failed(format!("Content-Length {value:?}")))?;
            if length.is_some_and(|l| l != n) {
                return Err(Failed("two different Content-Lengths".into()));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = value.rsplit(',').next().unwrap_or("").trim();
            if !last.eq_ignore_ascii_case("chunked") {
                return Err(Failed(format!("Transfer-Encoding {value:?}")));
            }
            chunked = true;
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',') {
                if token.trim().eq_ignore_ascii_case("close") {
                    reusable = false;
                } else if token.trim().eq_ignore_ascii_case("keep-alive") {
                    reusable = true;
                }
            }
        }
    }
    let framing = if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        reusable = false;
        Framing::UntilClose
    };
    Ok(Some(Head {
        status,
        framing,
        reusable: reusable && (200..300).contains(&status),
        len,
    }))
}

/// Sends one request on `conn` and reads its answer; the connection back when it can
/// carry another request.
async fn exchange(
    mut conn: Conn,
    head: &[u8],
    max_body: usize,
) -> Result<(Response, Option<Conn>), Exchange> {
    let unanswered = |what: &str, e: io::Error| Exchange::Unanswered(failed(what, e));
    conn.write_all(head)
        .await
        .map_err(|e| unanswered("sending the request", e))?;
    conn.flush()
        .await
        .map_err(|e| unanswered("sending the request", e))?;
    let mut buf: Vec<u8> = Vec::with_capacity(HEAD_BUF);
    let head = loop {
        if buf.len() == buf.capacity() {
            if buf.len() >= MAX_HEAD {
                return Err(Exchange::Broken(Failed(format!(
                    "answer head over {MAX_HEAD} bytes"
                ))));
            }
            buf.reserve(buf.len());
        }
        let n = match conn.read_buf(&mut buf).await {
            Ok(n) => n,
            Err(e) if buf.is_empty() => return Err(unanswered("reading the answer", e)),
            Err(e) => return Err(Exchange::Broken(failed("reading the answer", e))),
        };
        if n == 0 {
            let why = Failed("the connection closed before the answer's head ended".into());
            return Err(if buf.is_empty() {
                Exchange::Unanswered(why)
            } else {
                Exchange::Broken(why)
            });
        }
        if let Some(head) = parse_head(&buf).map_err(Exchange::Broken)? {
            break head;
        }
    };
    let status = head.status;
    if !(200..300).contains(&status) {
        // The body (an error document) is not read; nor is the connection kept.
        return Ok((
            Response {
                status,
                body: Bytes::new(),
            },
            None,
        ));
    }
    let early = &buf[head.len..];
    let body = read_body(&mut conn, early, &head.framing, max_body)
        .await
        .map_err(Exchange::Broken)?;
    Ok((
        Response {
            status,
            body: Bytes::from(body),
        },
        head.reusable.then_some(conn),
    ))
}

/// Reads a body framed as `framing`, `early` being its bytes read with the head.
async fn read_body<R: AsyncRead + Unpin>(
    conn: &mut R,
    early: &[u8],
    framing: &Framing,
    max_body: usize,
) -> Result<Vec<u8>, Failed> {
    let too_long = || Failed(format!("a body over {max_body} bytes"));
    match *framing {
        Framing::Length(len) => {
            if len > max_body {
                return Err(too_long());
            }
            if early.len() > len {
                return Err(Failed("more bytes than the Content-Length".into()));
            }
            let mut body = vec![0u8; len];
            body[..early.len()].copy_from_slice(early);
            conn.read_exact(&mut body[early.len()..])
                .await
                .map_err(|e| failed("reading the body", e))?;
            Ok(body)
        }
        Framing::UntilClose => {
            let mut body = early.to_vec();
            let mut limited = conn.take(max_body as u64 + 1 - body.len().min(max_body) as u64);
            limited
                .read_to_end(&mut body)
                .await
                .map_err(|e| failed("reading the body", e))?;
            if body.len() > max_body {
                return Err(too_long());
            }
            Ok(body)
        }
        Framing::Chunked => {
            let mut reader = Dechunk {
                conn,
                buf: early.to_vec(),
                pos: 0,
            };
            reader.body(max_body).await
        }
    }
}

/// Decodes a `chunked` body.
struct Dechunk<'a, R> {
    conn: &'a mut R,
    buf: Vec<u8>,
    pos: usize,
}

impl<R: AsyncRead + Unpin> Dechunk<'_, R> {
    /// Reads more from the connection; an error at its end.
    async fn fill(&mut self) -> Result<(), Failed> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.reserve(8192);
        let n = self
            .conn
            .read_buf(&mut self.buf)
            .await
            .map_err(|e| failed("reading the body", e))?;
        if n == 0 {
            return Err(Failed("the connection closed inside a chunked body".into()));
        }
        Ok(())
    }

    /// One line (without its CRLF), at most 4 KiB.
    async fn line(&mut self) -> Result<String, Failed> {
        loop {
            if let Some(at) = self.buf[self.pos..].windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[self.pos..self.pos + at]).into_owned();
                self.pos += at + 2;
                return Ok(line);
            }
            if self.buf.len() - self.pos > 4096 {
                return Err(Failed("a chunk line over 4 KiB".into()));
            }
            self.fill().await?;
        }
    }

    async fn body(&mut self, max_body: usize) -> Result<Vec<u8>, Failed> {
        let mut body = Vec::new();
        loop {
            let line = self.line().await?;
            let size = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| Failed(format!("chunk size {size:?}")))?;
            if size == 0 {
                // Trailers, up to the blank line.
                while !self.line().await?.is_empty() {}
                return Ok(body);
            }
            if body.len() + size > max_body {
                return Err(Failed(format!("a body over {max_body} bytes")));
            }
            body.reserve_exact(size);
            let mut left = size;
            while left > 0 {
                if self.pos == self.buf.len() {
                    self.fill().await?;
                }
                let take = left.min(self.buf.len() - self.pos);
                body.extend_from_slice(&self.buf[self.pos..self.pos + take]);
                self.pos += take;
                left -= take;
            }
            if !self.line().await?.is_empty() {
                return Err(Failed("no CRLF after a chunk".into()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicUsize, Ordering};

    /// What the test server does on each connection: answers in turn, then closes it.
    #[derive(Clone)]
    struct Script(Vec<&'static [u8]>);

    /// A server on loopback that reads a request head and writes the next answer of
    /// its script, on every connection it accepts; closes a connection after its
    /// script. Returns `host:port` and the count of connections accepted.
    async fn server(script: Script) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let script = script.clone();
                tokio::spawn(async move {
                    for answer in script.0 {
                        let mut head = Vec::new();
                        while !head.ends_with(b"\r\n\r\n") {
                            let mut byte = [0u8; 1];
                            if socket.read_exact(&mut byte).await.is_err() {
                                return;
                            }
                            head.push(byte[0]);
                        }
                        assert!(head.starts_with(b"GET /k HTTP/1.1\r\nhost: "));
                        socket.write_all(answer).await.unwrap();
                    }
                });
            }
        });
        (address, accepted)
    }

    async fn get(client: &Client) -> Result<Response, Failed> {
        let host = vec![("host", client.address.clone())];
        client.get("/k", &host, 1 << 20).await
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

    /// A connection carries request after request; the pool keeps it in between.
    #[tokio::test]
    async fn connections_are_kept_and_reused() {
        let (address, accepted) = server(Script(vec![OK; 5])).await;
        let client = Client::with_tls(&address, None, None).unwrap();
        for _ in 0..5 {
            let r = get(&client).await.unwrap();
            assert_eq!((r.status, &r.body[..]), (200, &b"hello"[..]));
            assert_eq!(client.idle(), 1);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    /// A pooled connection the server closed while it was idle is replaced: the request
    /// is sent again on a new connection, once.
    #[tokio::test]
    async fn a_connection_closed_while_idle_is_replaced() {
        let (address, accepted) = server(Script(vec![OK])).await;
        let client = Client::with_tls(&address, None, None).unwrap();
        for n in 1..=3 {
            let r = get(&client).await.unwrap();
            assert_eq!(&r.body[..], b"hello");
            assert_eq!(accepted.load(Ordering::SeqCst), n);
        }
    }

    /// An answer that breaks off is an error, not sent again; answers that end the
    /// connection (`Connection: close`, an error status) are read and not pooled.
    #[tokio::test]
    async fn broken_and_closing_answers() {
        let cut: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhel";
        let (address, accepted) = server(Script(vec![cut])).await;
        let client = Client::with_tls(&address, None, None).unwrap();
        let e = get(&client).await.unwrap_err();
        assert!(e.0.starts_with("reading the body"), "{e}");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);

        let closing: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi";
        let (address, _) = server(Script(vec![closing, closing])).await;
        let client = Client::with_tls(&address, None, None).unwrap();
        assert_eq!(&get(&client).await.unwrap().body[..], b"hi");
        assert_eq!(client.idle(), 0);

        let slow: &[u8] = b"HTTP/1.1 503 Slow Down\r\nContent-Length: 4\r\n\r\nslow";
        let (address, _) = server(Script(vec![slow, OK])).await;
        let client = Client::with_tls(&address, None, None).unwrap();
        let r = get(&client).await.unwrap();
        assert_eq!((r.status, r.body.len()), (503, 0));
        assert_eq!(client.idle(), 0);
    }

    /// Nothing listening: the error names the address.
    #[tokio::test]
    async fn connection_refused_names_the_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        drop(listener);
        let client = Client::with_tls(&address, None, Some(Duration::from_secs(2))).unwrap();
        let e = get(&client).await.unwrap_err();
        assert!(
            e.0.starts_with(&format!("connecting to {address}: ")),
            "{e}"
        );
    }

    /// Authorities are split into host and port, with the scheme's default port.
    #[test]
    fn authorities() {
        let cases = [
            ("s3.amazonaws.com", true, Ok(("s3.amazonaws.com", 443))),
            ("s3.amazonaws.com", false, Ok(("s3.amazonaws.com", 80))),
            ("127.0.0.1:9000", false, Ok(("127.0.0.1", 9000))),
            ("[::1]:9000", true, Ok(("[::1]", 9000))),
            ("[::1]", true, Ok(("[::1]", 443))),
            ("host:port", false, Err(())),
            ("", false, Err(())),
            ("[::1]x", false, Err(())),
        ];
        for (authority, tls, want) in cases {
            let got = split_authority(authority, tls).map_err(|_| ());
            assert_eq!(got, want, "{authority}");
        }
    }

    /// The head is parsed for status, framing and whether the connection is kept.
    #[test]
    fn heads() {
        let head = |s: &str| parse_head(s.as_bytes()).unwrap().unwrap();
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 12\r\nETag: \"x\"\r\n\r\nbody");
        assert_eq!(
            h,
            Head {
                status: 200,
                framing: Framing::Length(12),
                reusable: true,
                len: 50
            }
        );
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!((h.framing, h.reusable), (Framing::Chunked, true));
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\n");
        assert!(!h.reusable);
        let h = head("HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n");
        assert!(!h.reusable);
        let h = head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!((h.framing, h.reusable), (Framing::UntilClose, false));
        let h = head("HTTP/1.1 503 Slow Down\r\nContent-Length: 3\r\n\r\n");
        assert_eq!((h.status, h.reusable), (503, false));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le")
            .unwrap()
            .is_none());
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            "XTTP/1.1 200 OK\r\n\r\n",
        ] {
            assert!(parse_head(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    /// Bodies are read exactly as framed, split across reads anywhere.
    #[tokio::test]
    async fn bodies() {
        let chunked = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\n";
        for split in 0..chunked.len() {
            let (early, rest) = chunked.split_at(split);
            let mut conn = rest;
            let body = read_body(&mut conn, early, &Framing::Chunked, 100)
                .await
                .unwrap();
            assert_eq!(body, b"hello, world", "split at {split}");
            assert!(conn.is_empty(), "the whole body is read");
        }
        let mut conn: &[u8] = b"lo, world";
        let body = read_body(&mut conn, b"hel", &Framing::Length(12), 100)
            .await
            .unwrap();
        assert_eq!(body, b"hello, world");
        let mut conn: &[u8] = b"lo";
        let body = read_body(&mut conn, b"hel", &Framing::UntilClose, 100)
            .await
            .unwrap();
        assert_eq!(body, b"hello");

        let fails = [
            (&b"lo"[..], Framing::Length(12), 100),      // cut short
            (&b"lo, world"[..], Framing::Length(12), 5), // over the limit
            (&b"lo, world"[..], Framing::UntilClose, 5),
            (&b"5\r\nhello\r\n"[..], Framing::Chunked, 100), // no last chunk
            (&b"5\r\nhelloXX0\r\n\r\n"[..], Framing::Chunked, 100),
            (&b"zz\r\n"[..], Framing::Chunked, 100),
            (&b"5\r\nhello\r\n0\r\n\r\n"[..], Framing::Chunked, 4),
        ];
        for (rest, framing, max) in fails {
            let mut conn = rest;
            let early: &[u8] = if framing == Framing::Chunked {
                b""
            } else {
                b"hel"
            };
            let got = read_body(&mut conn, early, &framing, max).await;
            assert!(got.is_err(), "{rest:?} {framing:?} {max}: {got:?}");
        }
    }
}
