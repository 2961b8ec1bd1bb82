//! The HTTP/1.1 server loop: accepts connections, guards each with a [`FrontDoor`] and serves
//! it with hyper, then drains on shutdown.
//!
//! The front door sits between the socket and hyper. It holds each request head back until it
//! is complete and parses it first (with httparse, the parser hyper uses), so that
//!
//! - a head that does not arrive within the header timeout gets `408` (a head is timed from
//!   the moment the server waits for it: trickling bytes does not extend it);
//! - a URI longer than [`MAX_URI_BYTES`], a head longer than [`MAX_HEAD_BYTES`], too many
//!   header fields or a malformed head get `414`/`431`/`400` — as problem+json like every
//!   other error (hyper's own answers to these have an empty body);
//! - a connection that sends nothing between requests is closed after the idle timeout;
//! - a client that takes no response bytes for the send timeout is cut off (a slow or
//!   stalled reader costs the server one bounded buffer, and only for that long).
//!
//! To find where the next head starts it follows each request's framing (Content-Length or
//! chunked) as the bytes pass; anything it cannot follow is handed to hyper untouched for the
//! rest of the connection, and hyper refuses it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Sleep;
use tower::ServiceExt;

use crate::error::{ApiError, Code};

/// Longest request target (path and query) accepted, in bytes.
pub const MAX_URI_BYTES: usize = 16 * 1024;
/// Longest request head (request line and header fields) accepted, in bytes.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields in one request.
pub const MAX_HEADERS: usize = 100;
/// How long in-flight requests may take to finish after the shutdown signal.
const DRAIN: Duration = Duration::from_secs(30);
/// hyper's buffer bound (reads and writes of one connection): above the longest head, and
/// small, since a stalled reader holds up to this much of a response.
const HYPER_BUFFER: usize = MAX_HEAD_BYTES + 16 * 1024;

/// Timeouts of every connection (docs/security.md lists them).
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// From the moment the server waits for a request head until the head is complete.
    pub header_timeout: Duration,
    /// Longest wait for the next bytes of a request body while the handler reads it.
    pub body_timeout: Duration,
    /// A connection with no request in flight that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// A client that takes no response bytes for this long is cut off.
    pub send_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
        }
    }
}

/// Tells stream bodies (SSE, NDJSON) that the server is shutting down, so they end and the
/// drain does not wait for clients that would follow the log forever. In every request's
/// extensions.
#[derive(Clone, Debug)]
pub struct ShuttingDown(pub watch::Receiver<bool>);

impl ShuttingDown {
    /// Completes once shutdown has begun.
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|down| *down).await;
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then stops accepting, tells
/// streams to end and waits (at most [`DRAIN`]) for the connections to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let (down_tx, down_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let busy = Arc::new(AtomicUsize::new(0));
        let io = FrontDoor::new(stream, limits, busy.clone());
        let router = router.clone();
        let down = ShuttingDown(down_rx.clone());
        let service = hyper::service::service_fn(move |request: http::Request<_>| {
            let mut request = request.map(axum::body::Body::new);
            request.extensions_mut().insert(ConnectInfo(peer));
            request.extensions_mut().insert(down.clone());
            busy.fetch_add(1, Ordering::SeqCst);
            let guard = InFlight(busy.clone());
            let router = router.clone();
            async move {
                let response = router.oneshot(request).await?;
                // Counted as in flight until hyper drops the body.
                Ok::<_, std::convert::Infallible>(
                    response.map(|body| crate::streams::holding(body, guard)),
                )
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            // The front door times heads; hyper's own timer would also close idle
            // keep-alive connections, sooner than the idle timeout says.
            .header_read_timeout(None)
            .max_buf_size(HYPER_BUFFER)
            .max_headers(MAX_HEADERS);
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(io), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = down_tx.send(true);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "connections still open {}s after shutdown began; closing them",
            DRAIN.as_secs()
        );
    }
    Ok(())
}

/// Counts a request as in flight until its response body is dropped (sent or abandoned).
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Where the front door is in the request stream.
enum Phase {
    /// Collecting a request head (empty: between requests).
    Head,
    /// In a body of this many more bytes.
    Fixed(u64),
    /// In a chunked body.
    Chunked(Chunked),
    /// Lost track (or an upgrade): everything goes to hyper as it comes.
    Passthrough,
    /// A head was refused: the answer waits in `rejection`, hyper sees the end of input.
    Rejected,
}

/// The socket as hyper sees it; see the module documentation.
pub(crate) struct FrontDoor {
    io: TcpStream,
    limits: ConnectionLimits,
    /// Requests whose response hyper has not finished with.
    busy: Arc<AtomicUsize>,
    phase: Phase,
    /// The head being collected.
    head: Vec<u8>,
    /// Offset of the end of the head's first line, once seen.
    line_end: Option<usize>,
    /// Bytes cleared for hyper, from `pending_at` on.
    pending: Vec<u8>,
    pending_at: usize,
    /// Since when the server has been waiting for the client to send a head (or anything).
    waiting_since: Option<Instant>,
    read_timer: Option<Pin<Box<Sleep>>>,
    write_timer: Option<Pin<Box<Sleep>>>,
    /// The answer to a refused head, written before the connection closes.
    rejection: Option<(Vec<u8>, usize)>,
    /// The client closed its side, or the connection idled out.
    eof: bool,
}

impl FrontDoor {
    fn new(io: TcpStream, limits: ConnectionLimits, busy: Arc<AtomicUsize>) -> Self {
        Self {
            io,
            limits,
            busy,
            phase: Phase::Head,
            head: Vec::new(),
            line_end: None,
            pending: Vec::new(),
            pending_at: 0,
            waiting_since: None,
            read_timer: None,
            write_timer: None,
            rejection: None,
            eof: false,
        }
    }

    fn in_flight(&self) -> bool {
        self.busy.load(Ordering::SeqCst) > 0
    }

    /// Takes bytes from the client through the tracker: into `pending` (for hyper) or into
    /// the head being collected.
    fn feed(&mut self, data: &[u8]) {
        let mut at = 0;
        while at < data.len() {
            let rest = &data[at..];
            match &mut self.phase {
                Phase::Rejected => return,
                Phase::Passthrough => {
                    self.pending.extend_from_slice(rest);
                    return;
                }
                Phase::Fixed(left) => {
                    let n = (*left).min(rest.len() as u64) as usize;
                    self.pending.extend_from_slice(&rest[..n]);
                    *left -= n as u64;
                    if *left == 0 {
                        self.phase = Phase::Head;
                    }
                    at += n;
                }
                Phase::Chunked(chunked) => match chunked.consume(rest) {
                    Ok((n, done)) => {
                        self.pending.extend_from_slice(&rest[..n]);
                        if done {
                            self.phase = Phase::Head;
                        }
                        at += n;
                    }
                    Err(()) => {
                        // Malformed chunks: hyper refuses them and closes.
                        self.phase = Phase::Passthrough;
                    }
                },
                Phase::Head => {
                    if self.head.is_empty() {
                        // A head begins: it has the header timeout from now on.
                        self.waiting_since = Some(Instant::now());
                    }
                    let searched = self.head.len().saturating_sub(3);
                    self.head.extend_from_slice(rest);
                    at = data.len();
                    match self.parse_head(searched) {
                        HeadStatus::Partial => {}
                        HeadStatus::Refused(code, detail) => {
                            self.reject(code, &detail);
                            return;
                        }
                        HeadStatus::Complete { len, next } => {
                            let carry = self.head.split_off(len);
                            let head = std::mem::take(&mut self.head);
                            self.pending.extend_from_slice(&head);
                            self.line_end = None;
                            self.waiting_since = None;
                            self.phase = next;
                            // Whatever followed the head: its body, or the next request.
                            self.feed(&carry);
                        }
                    }
                }
            }
        }
    }

    /// Parses the head collected so far; `searched` is where a new head end may begin.
    fn parse_head(&mut self, searched: usize) -> HeadStatus {
        let window = &self.head[searched..];
        if self.line_end.is_none() {
            self.line_end = window
                .iter()
                .position(|&b| b == b'\n')
                .map(|i| searched + i);
        }
        let line_too_long = |n: usize| n > MAX_URI_BYTES + 32;
        let ended =
            window.windows(2).any(|w| w == b"\n\n") || window.windows(3).any(|w| w == b"\n\r\n");
        if !ended {
            return match self.line_end {
                None if line_too_long(self.head.len()) => uri_too_long(),
                _ if self.head.len() > MAX_HEAD_BYTES => {
                    if self.line_end.is_none_or(line_too_long) {
                        uri_too_long()
                    } else {
                        headers_too_large()
                    }
                }
                _ => HeadStatus::Partial,
            };
        }
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut fields);
        let len = match request.parse(&self.head) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return HeadStatus::Partial,
            Err(httparse::Error::TooManyHeaders) => return headers_too_large(),
            Err(e) => return malformed(&format!("the request head is malformed ({e})")),
        };
        let path = request.path.unwrap_or_default();
        if path.len() > MAX_URI_BYTES {
            return uri_too_long();
        }
        if len > MAX_HEAD_BYTES {
            return headers_too_large();
        }
        if http::Uri::try_from(path).is_err() {
            return malformed("the request target is not a valid URI");
        }
        if request.method == Some("CONNECT") {
            // Tunnels are not ours to follow (and no route accepts them).
            return HeadStatus::Complete {
                len,
                next: Phase::Passthrough,
            };
        }
        match framing(request.version == Some(0), request.headers) {
            Ok(next) => HeadStatus::Complete { len, next },
            Err(detail) => malformed(detail),
        }
    }

    fn reject(&mut self, code: Code, detail: &str) {
        tracing::info!(
            status = code.status().as_u16(),
            detail,
            "request head refused"
        );
        self.rejection = Some((ApiError::new(code, detail).raw_response(), 0));
        self.phase = Phase::Rejected;
        self.head = Vec::new();
    }

    /// When the server stops waiting for the client to send something, if it waits at all.
    fn read_deadline(&mut self) -> Option<Instant> {
        if self.in_flight() {
            // hyper is answering (or streaming); pipelined bytes wait for it, not for us.
            self.waiting_since = None;
            return None;
        }
        let timeout = match self.phase {
            Phase::Head if self.head.is_empty() => self.limits.idle_timeout,
            Phase::Head => self.limits.header_timeout,
            // Bodies are timed while a handler reads them (`middleware::BodyTimeout`).
            _ => return None,
        };
        Some(*self.waiting_since.get_or_insert_with(Instant::now) + timeout)
    }

    fn on_read_timeout(&mut self) {
        if self.head.is_empty() {
            tracing::debug!("closing an idle connection");
            self.eof = true;
        } else {
            let secs = self.limits.header_timeout.as_secs_f64();
            self.reject(
                Code::RequestTimeout,
                &format!("The request head did not arrive within {secs} s."),
            );
        }
    }

    /// Polls `timer` for `deadline` (re-armed if the deadline moved).
    fn poll_timer(
        timer: &mut Option<Pin<Box<Sleep>>>,
        deadline: Instant,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        let deadline = tokio::time::Instant::from_std(deadline);
        match timer {
            Some(t) if t.deadline() == deadline => {}
            _ => *timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        timer.as_mut().expect("armed above").as_mut().poll(cx)
    }

    /// A write that makes no progress for the send timeout fails, and hyper drops the
    /// connection.
    fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let deadline = match &self.write_timer {
            Some(t) => t.deadline().into_std(),
            None => Instant::now() + self.limits.send_timeout,
        };
        match Self::poll_timer(&mut self.write_timer, deadline, cx) {
            Poll::Ready(()) => {
                tracing::info!(
                    "cutting off a client that took no data for {} s",
                    self.limits.send_timeout.as_secs_f64()
                );
                Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client took no data within the send timeout",
                ))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_write_rejection(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.rejection {
            if *written == bytes.len() {
                break;
            }
            match Pin::new(&mut self.io).poll_write(cx, &bytes[*written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    *written += n;
                    self.write_timer = None;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    return match self.stalled(cx) {
                        Poll::Ready(e) => Poll::Ready(Err(e)),
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

enum HeadStatus {
    Partial,
    Complete { len: usize, next: Phase },
    Refused(Code, String),
}

fn uri_too_long() -> HeadStatus {
    HeadStatus::Refused(
        Code::UriTooLong,
        format!("The request target is longer than {MAX_URI_BYTES} bytes."),
    )
}

fn headers_too_large() -> HeadStatus {
    HeadStatus::Refused(
        Code::HeadersTooLarge,
        format!(
            "The request head is longer than {MAX_HEAD_BYTES} bytes or has more than \
             {MAX_HEADERS} header fields."
        ),
    )
}

fn malformed(detail: &str) -> HeadStatus {
    HeadStatus::Refused(Code::MalformedRequest, detail.to_owned())
}

/// How a request's body is framed (RFC 9112 §6.3, as hyper reads it).
fn framing(http10: bool, headers: &[httparse::Header<'_>]) -> Result<Phase, &'static str> {
    let mut chunked = None;
    let mut length: Option<u64> = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if http10 {
                return Err("HTTP/1.0 requests cannot have a Transfer-Encoding");
            }
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or_default();
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(h.value)
                .ok()
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or("Content-Length must be a number")?;
            if length.is_some_and(|l| l != value) {
                return Err("conflicting Content-Length header fields");
            }
            length = Some(value);
        }
    }
    Ok(match (chunked, length) {
        (Some(true), _) => Phase::Chunked(Chunked::default()),
        (Some(false), _) => return Err("a Transfer-Encoding must end with chunked"),
        (None, Some(0)) | (None, None) => Phase::Head,
        (None, Some(n)) => Phase::Fixed(n),
    })
}

/// Follows a chunked body byte by byte (sizes, extensions, data, trailers).
#[derive(Default)]
struct Chunked {
    state: ChunkState,
    size: u64,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    EndLf,
}

impl Chunked {
    /// Consumes bytes of the body: how many belong to it, and whether it ended there.
    fn consume(&mut self, data: &[u8]) -> Result<(usize, bool), ()> {
        let mut i = 0;
        while i < data.len() {
            let b = data[i];
            match self.state {
                ChunkState::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let digit = (b as char).to_digit(16).ok_or(())?;
                        self.size = self
                            .size
                            .checked_mul(16)
                            .and_then(|s| s.checked_add(u64::from(digit)))
                            .ok_or(())?;
                    }
                    b';' | b' ' | b'\t' => self.state = ChunkState::Extension,
                    b'\r' => self.state = ChunkState::SizeLf,
                    b'\n' => self.end_size_line(),
                    _ => return Err(()),
                },
                ChunkState::Extension => match b {
                    b'\r' => self.state = ChunkState::SizeLf,
                    b'\n' => self.end_size_line(),
                    _ => {}
                },
                ChunkState::SizeLf => {
                    if b != b'\n' {
                        return Err(());
                    }
                    self.end_size_line();
                }
                ChunkState::Data => {
                    let n = self.size.min((data.len() - i) as u64) as usize;
                    self.size -= n as u64;
                    i += n;
                    if self.size == 0 {
                        self.state = ChunkState::DataCr;
                    }
                    continue;
                }
                ChunkState::DataCr => match b {
                    b'\r' => self.state = ChunkState::DataLf,
                    b'\n' => self.state = ChunkState::Size,
                    _ => return Err(()),
                },
                ChunkState::DataLf => {
                    if b != b'\n' {
                        return Err(());
                    }
                    self.state = ChunkState::Size;
                }
                ChunkState::TrailerStart => match b {
                    b'\r' => self.state = ChunkState::EndLf,
                    b'\n' => return Ok((i + 1, true)),
                    _ => self.state = ChunkState::Trailer,
                },
                ChunkState::Trailer => {
                    if b == b'\n' {
                        self.state = ChunkState::TrailerStart;
                    }
                }
                ChunkState::EndLf => {
                    if b != b'\n' {
                        return Err(());
                    }
                    return Ok((i + 1, true));
                }
            }
            i += 1;
        }
        Ok((i, false))
    }

    fn end_size_line(&mut self) {
        self.state = if self.size == 0 {
            ChunkState::TrailerStart
        } else {
            ChunkState::Data
        };
    }
}

impl AsyncRead for FrontDoor {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.pending_at < this.pending.len() {
                let n = buf.remaining().min(this.pending.len() - this.pending_at);
                buf.put_slice(&this.pending[this.pending_at..this.pending_at + n]);
                this.pending_at += n;
                if this.pending_at == this.pending.len() {
                    this.pending.clear();
                    this.pending_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof || matches!(this.phase, Phase::Rejected) {
                // The end of input: hyper finishes what it is doing and closes.
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.io).poll_read(cx, &mut read) {
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if read.filled().is_empty() => {
                    // The client closed its side; a half-sent head is dropped.
                    this.eof = true;
                }
                Poll::Ready(Ok(())) => {
                    this.read_timer = None;
                    this.feed(read.filled());
                }
                Poll::Pending => {
                    let Some(deadline) = this.read_deadline() else {
                        this.read_timer = None;
                        return Poll::Pending;
                    };
                    match Self::poll_timer(&mut this.read_timer, deadline, cx) {
                        Poll::Ready(()) => {
                            this.read_timer = None;
                            this.on_read_timeout();
                        }
                        Poll::Pending => return Poll::Pending,
                    }
                }
            }
        }
    }
}

impl AsyncWrite for FrontDoor {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Ready(result) => {
                this.write_timer = None;
                Poll::Ready(result)
            }
            Poll::Pending => this.stalled(cx).map(Err),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write_vectored(cx, bufs) {
            Poll::Ready(result) => {
                this.write_timer = None;
                Poll::Ready(result)
            }
            Poll::Pending => this.stalled(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // A refused head's answer goes out last, once hyper has finished with the connection.
        if let Err(e) = std::task::ready!(this.poll_write_rejection(cx)) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// A peer address for requests served without [`serve`] (tests that call the router).
pub fn connect_info(addr: SocketAddr) -> ConnectInfo<SocketAddr> {
    ConnectInfo(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(input: &[u8]) -> Result<(usize, bool), ()> {
        Chunked::default().consume(input)
    }

    #[test]
    fn chunked_bodies_end_where_they_end() {
        let body = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
        let end = body.len() - b"GET / HTTP/1.1\r\n".len();
        assert_eq!(chunked(body), Ok((end, true)));
        let trailers = b"1\r\na\r\n0\r\nx-sum: 1\r\n\r\nrest";
        assert_eq!(chunked(trailers), Ok((trailers.len() - 4, true)));
        // Split anywhere, the same end.
        for split in 1..body.len() {
            let mut c = Chunked::default();
            let (a, done) = c.consume(&body[..split]).unwrap();
            assert_eq!(a, split.min(end));
            if !done {
                assert_eq!(c.consume(&body[split..]), Ok((end - split, true)));
            }
        }
        assert!(chunked(b"zz\r\n").is_err());
        assert!(chunked(b"ffffffffffffffffff\r\n").is_err());
    }

    #[test]
    fn framing_follows_hyper() {
        let h = |name: &'static str, value: &'static [u8]| httparse::Header { name, value };
        assert!(matches!(
            framing(false, &[h("Content-Length", b"12")]),
            Ok(Phase::Fixed(12))
        ));
        assert!(matches!(framing(false, &[]), Ok(Phase::Head)));
        assert!(matches!(
            framing(
                false,
                &[
                    h("transfer-encoding", b"gzip, chunked"),
                    h("content-length", b"3")
                ]
            ),
            Ok(Phase::Chunked(_))
        ));
        assert!(framing(false, &[h("transfer-encoding", b"chunked, gzip")]).is_err());
        assert!(framing(true, &[h("transfer-encoding", b"chunked")]).is_err());
        assert!(
            framing(
                false,
                &[h("content-length", b"1"), h("content-length", b"2")]
            )
            .is_err()
        );
        assert!(framing(false, &[h("content-length", b"-1")]).is_err());
    }
}
