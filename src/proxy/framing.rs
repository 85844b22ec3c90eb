//! Request-smuggling defence for HTTP/1: inspects the raw bytes of a client
//! connection for ambiguous message framing that hyper would silently
//! normalise, so the service can answer such requests with 400 instead of
//! forwarding them.
//!
//! hyper drops `Content-Length` when `Transfer-Encoding` is also present and
//! folds duplicate identical `Content-Length` lines into one; after parsing,
//! the service cannot tell such a request from a clean one. [`Inspect`] sits
//! between the socket and hyper and feeds every byte it hands to hyper through
//! a [`Scanner`] first, so by the time hyper dispatches request `N`, a bad
//! head for `N` (or bad chunk framing seen so far) is already recorded in the
//! connection's [`Verdict`].
//!
//! The scanner follows message boundaries the way hyper does (httparse for
//! heads, Content-Length and chunked bodies), so its request indices match
//! the order in which hyper dispatches requests on the connection. Whenever
//! it cannot follow (a head httparse rejects, a head too large, an HTTP/2
//! connection) it stops for good: in the first two cases hyper rejects the
//! request itself and closes the connection. Upgrade and CONNECT requests do
//! not stop it: hyper goes on parsing HTTP/1 after a declined upgrade, and
//! once a tunnel opens hyper dispatches nothing more, so marks made from
//! tunnel bytes are never read.

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// No request on the connection has been found bad.
const NONE_BAD: u64 = u64::MAX;

/// Slack over hyper's own head limit: hyper answers oversized heads with 431,
/// so scanning beyond its limit would only spend memory.
const HEAD_SLACK: usize = 1024;

/// Heads with at most this many lines parse into a stack array; larger ones
/// (rare) allocate, so that httparse never stops at a header count that hyper
/// would still accept.
const INLINE_HEADERS: usize = 64;

/// The first line of the HTTP/2 prior-knowledge preface; hyper-util's auto
/// builder serves such connections as HTTP/2, whose framing is not ours to
/// check.
const H2_PREFACE_LINE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// The per-connection outcome of the scan, shared between the IO wrapper
/// (which writes it) and the service (which reads it for each request).
#[derive(Debug)]
pub struct Verdict {
    /// Index of the first bad request on the connection, [`NONE_BAD`] if none.
    /// Once one request is bad the connection's framing can no longer be
    /// trusted, so every later index is bad too.
    first_bad: AtomicU64,
}

impl Default for Verdict {
    fn default() -> Self {
        Self {
            first_bad: AtomicU64::new(NONE_BAD),
        }
    }
}

impl Verdict {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Whether request `request_index` (counted from 0 on this connection)
    /// must be rejected rather than forwarded.
    pub fn is_bad(&self, request_index: u64) -> bool {
        request_index >= self.first_bad.load(Ordering::Acquire)
    }

    /// The index of the first bad request, if any.
    pub fn first_bad(&self) -> Option<u64> {
        let first = self.first_bad.load(Ordering::Acquire);
        (first != NONE_BAD).then_some(first)
    }

    /// Records that request `request_index` is bad. An earlier mark wins.
    pub fn mark_bad(&self, request_index: u64) {
        self.first_bad.fetch_min(request_index, Ordering::AcqRel);
    }
}

pin_project_lite::pin_project! {
    /// A client connection whose incoming bytes are scanned for ambiguous
    /// HTTP/1 framing before hyper reads them. Writes pass straight through.
    #[derive(Debug)]
    pub struct Inspect<IO> {
        #[pin]
        io: IO,
        scanner: Scanner,
        verdict: Arc<Verdict>,
        // Until the protocol is known, the connection must deliver its first
        // bytes by this deadline: hyper-util's HTTP/1-or-2 detection has no
        // timer of its own, and hyper's header timeout starts only after it.
        opening: Option<Pin<Box<Sleep>>>,
        preface_seen: usize,
    }
}

/// The HTTP/2 connection preface. Protocol detection is over once the bytes
/// read either differ from it (HTTP/1) or complete it (HTTP/2).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Advances `seen` (preface bytes matched so far) over `fresh`; true once
/// the protocol is known.
fn protocol_known(seen: &mut usize, fresh: &[u8]) -> bool {
    for &b in fresh {
        match PREFACE.get(*seen) {
            Some(&p) if p == b => *seen += 1,
            Some(_) => return true,
            None => return true,
        }
    }
    *seen >= PREFACE.len()
}

impl<IO> Inspect<IO> {
    /// `max_head_bytes` should be the head limit hyper enforces on the same
    /// connection (its `max_buf_size`).
    /// `opening_timeout` bounds the wait for the bytes that tell HTTP/1
    /// from HTTP/2 (the listener's `header_timeout`).
    pub fn new(
        io: IO,
        verdict: Arc<Verdict>,
        max_head_bytes: usize,
        opening_timeout: Duration,
    ) -> Self {
        Self {
            io,
            scanner: Scanner::new(max_head_bytes),
            verdict,
            opening: Some(Box::pin(tokio::time::sleep(opening_timeout))),
            preface_seen: 0,
        }
    }

    pub fn get_ref(&self) -> &IO {
        &self.io
    }
}

impl<IO: AsyncRead> AsyncRead for Inspect<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        match this.io.poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {}
            Poll::Pending => {
                if let Some(opening) = this.opening.as_mut() {
                    if opening.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no request arrived within the header timeout",
                        )));
                    }
                }
                return Poll::Pending;
            }
            other => return other,
        }
        if this.opening.is_some() {
            let fresh = buf.filled().get(before..).unwrap_or_default();
            if protocol_known(this.preface_seen, fresh) {
                *this.opening = None;
            }
        }
        // Scan before returning: hyper may parse and dispatch these bytes as
        // soon as it gets them, and the verdict must be in place by then.
        if let Some(new) = buf.filled().get(before..) {
            if let Some(bad) = this.scanner.feed(new) {
                this.verdict.mark_bad(bad);
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite> AsyncWrite for Inspect<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

/// Where the scanner is in the byte stream of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Accumulating a request head.
    Head,
    /// Skipping the rest of a Content-Length body.
    Body { remaining: u64 },
    /// Reading chunk-size hex digits; `digits` is whether any were seen.
    ChunkSize { size: u64, digits: bool },
    /// Whitespace after the size, before `;` or CR (hyper tolerates it).
    ChunkSizeWs { size: u64 },
    /// Inside a chunk extension, up to the CR.
    ChunkExt { size: u64 },
    /// Saw the CR ending a size line.
    ChunkSizeLf { size: u64 },
    /// Skipping chunk data.
    ChunkData { remaining: u64 },
    /// Expecting the CR after chunk data.
    ChunkDataCr,
    /// Expecting the LF after chunk data.
    ChunkDataLf,
    /// At the start of a trailer line or of the final empty line.
    TrailerStart,
    /// Inside a trailer line, up to the CR.
    Trailer,
    /// Saw the CR ending a trailer line.
    TrailerLf,
    /// Saw the CR of the final empty line.
    EndLf,
    /// Request `index` has ambiguous framing; nothing after it is trusted.
    Bad { index: u64 },
    /// Not HTTP/1 we can follow; hyper decides (and rejects, if need be).
    Stopped,
}

/// How a parsed, unambiguous head frames its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
}

/// What a complete head turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Head {
    Framed(Framing),
    /// Framing headers that hyper would normalise rather than reject.
    Ambiguous,
    /// httparse rejects it, so hyper does too.
    Unparseable,
}

/// A pure state machine over the bytes a client sends on one HTTP/1
/// connection, fed slices split at arbitrary points. It records the index of
/// the first request whose framing is ambiguous.
#[derive(Debug, Clone)]
pub struct Scanner {
    state: State,
    /// Index of the request whose head or body is being scanned.
    index: u64,
    /// The head so far; reused between requests so the common case does not
    /// allocate per read.
    head: Vec<u8>,
    head_limit: usize,
    parser: httparse::ParserConfig,
}

impl Scanner {
    pub fn new(max_head_bytes: usize) -> Self {
        // Accept at least what hyper might be configured to accept: a head we
        // failed to parse while hyper accepted it would slip through unchecked.
        // Where these leniencies go beyond hyper's, hyper rejects the request.
        let mut parser = httparse::ParserConfig::default();
        parser
            .allow_multiple_spaces_in_request_line_delimiters(true)
            .ignore_invalid_headers_in_requests(true)
            .allow_space_before_first_header_name(true);
        Self {
            state: State::Head,
            index: 0,
            head: Vec::new(),
            head_limit: max_head_bytes.saturating_add(HEAD_SLACK),
            parser,
        }
    }

    /// Scans the next bytes of the connection. Returns the index of the
    /// request found bad, only on the call that finds it.
    pub fn feed(&mut self, mut input: &[u8]) -> Option<u64> {
        if !self.is_scanning() {
            return None;
        }
        while !input.is_empty() && self.is_scanning() {
            let used = self.step(input);
            input = input.get(used..).unwrap_or_default();
        }
        self.first_bad()
    }

    /// The index of the first bad request, if one was found.
    pub fn first_bad(&self) -> Option<u64> {
        match self.state {
            State::Bad { index } => Some(index),
            _ => None,
        }
    }

    /// Whether further bytes are still examined (not bad and not stopped).
    pub fn is_scanning(&self) -> bool {
        !matches!(self.state, State::Bad { .. } | State::Stopped)
    }

    /// Index of the request the scanner is in (or expects next): the number
    /// of requests completed so far.
    pub fn request_index(&self) -> u64 {
        self.index
    }

    /// Consumes a prefix of `input` (at least one byte) and returns its length.
    fn step(&mut self, input: &[u8]) -> usize {
        match self.state {
            State::Head => self.feed_head(input),
            State::Body { remaining } => {
                let n = skip_len(remaining, input.len());
                let remaining = remaining - n as u64;
                if remaining == 0 {
                    self.next_request();
                } else {
                    self.state = State::Body { remaining };
                }
                n
            }
            State::ChunkData { remaining } => {
                let n = skip_len(remaining, input.len());
                let remaining = remaining - n as u64;
                self.state = if remaining == 0 {
                    State::ChunkDataCr
                } else {
                    State::ChunkData { remaining }
                };
                n
            }
            State::ChunkExt { size } => self.skip_line(input, State::ChunkSizeLf { size }),
            State::Trailer => self.skip_line(input, State::TrailerLf),
            _ => {
                if let Some(&byte) = input.first() {
                    self.byte(byte);
                }
                1
            }
        }
    }

    /// Skips to the CR ending a chunk-extension or trailer line; a bare LF
    /// there is a framing ambiguity (some parsers end the line at it).
    fn skip_line(&mut self, input: &[u8], after_cr: State) -> usize {
        match input.iter().position(|&b| b == b'\r' || b == b'\n') {
            None => input.len(),
            Some(i) => {
                if input.get(i) == Some(&b'\r') {
                    self.state = after_cr;
                } else {
                    self.bad();
                }
                i + 1
            }
        }
    }

    /// One byte of chunk framing outside data, extensions and trailer lines.
    fn byte(&mut self, b: u8) {
        self.state = match (self.state, b) {
            (State::ChunkSize { size, .. }, _) if b.is_ascii_hexdigit() => {
                match size
                    .checked_mul(16)
                    .and_then(|s| s.checked_add(hex_value(b)))
                {
                    Some(size) => State::ChunkSize { size, digits: true },
                    None => return self.bad(),
                }
            }
            (State::ChunkSize { size, digits: true }, b' ' | b'\t')
            | (State::ChunkSizeWs { size }, b' ' | b'\t') => State::ChunkSizeWs { size },
            (State::ChunkSize { size, digits: true }, b';')
            | (State::ChunkSizeWs { size }, b';') => State::ChunkExt { size },
            (State::ChunkSize { size, digits: true }, b'\r')
            | (State::ChunkSizeWs { size }, b'\r') => State::ChunkSizeLf { size },
            (State::ChunkSizeLf { size: 0 }, b'\n') => State::TrailerStart,
            (State::ChunkSizeLf { size }, b'\n') => State::ChunkData { remaining: size },
            (State::ChunkDataCr, b'\r') => State::ChunkDataLf,
            (State::ChunkDataLf, b'\n') => State::ChunkSize {
                size: 0,
                digits: false,
            },
            (State::TrailerStart, b'\r') => State::EndLf,
            (State::TrailerStart, b'\n') => return self.bad(),
            (State::TrailerStart, _) => State::Trailer,
            (State::TrailerLf, b'\n') => State::TrailerStart,
            (State::EndLf, b'\n') => return self.next_request(),
            _ => return self.bad(),
        };
    }

    /// Accumulates head bytes up to the empty line that ends the head.
    fn feed_head(&mut self, input: &[u8]) -> usize {
        let mut pos = 0;
        if self.head.is_empty() {
            // RFC 9112 §2.2: empty lines before a request line are ignored
            // (httparse skips them too).
            pos = input
                .iter()
                .position(|&b| b != b'\r' && b != b'\n')
                .unwrap_or(input.len());
        }
        while let Some(rest) = input.get(pos..).filter(|r| !r.is_empty()) {
            let (chunk, ends_line) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (rest.get(..=i).unwrap_or(rest), true),
                None => (rest, false),
            };
            if self.head.len() + chunk.len() > self.head_limit {
                self.stop();
                return input.len();
            }
            self.head.extend_from_slice(chunk);
            pos += chunk.len();
            // httparse ends a line at LF with or without CR, so the head ends
            // at the first line that is empty either way.
            if ends_line && (self.head.ends_with(b"\n\n") || self.head.ends_with(b"\n\r\n")) {
                self.finish_head();
                break;
            }
        }
        pos
    }

    fn finish_head(&mut self) {
        if self.index == 0 && self.head.starts_with(H2_PREFACE_LINE) {
            return self.stop();
        }
        let lines = self.head.iter().filter(|&&b| b == b'\n').count();
        let head = if lines <= INLINE_HEADERS {
            let mut headers = [const { MaybeUninit::uninit() }; INLINE_HEADERS];
            classify(&self.parser, &self.head, &mut headers)
        } else {
            let mut headers = vec![MaybeUninit::uninit(); lines];
            classify(&self.parser, &self.head, &mut headers)
        };
        self.head.clear();
        // Upgrade and CONNECT requests are scanned on like any other: hyper
        // keeps parsing HTTP/1 after them unless the response switches
        // protocols, and stopping here would let a declined upgrade carry an
        // unchecked request behind it. If the tunnel does open, hyper
        // dispatches nothing more, so marks from tunnel bytes are never read.
        match head {
            Head::Unparseable => self.stop(),
            Head::Ambiguous => self.bad(),
            Head::Framed(Framing::Empty | Framing::Length(0)) => self.next_request(),
            Head::Framed(Framing::Length(remaining)) => self.state = State::Body { remaining },
            Head::Framed(Framing::Chunked) => {
                self.state = State::ChunkSize {
                    size: 0,
                    digits: false,
                }
            }
        }
    }

    fn next_request(&mut self) {
        self.index += 1;
        self.state = State::Head;
    }

    fn bad(&mut self) {
        self.state = State::Bad { index: self.index };
        self.release();
    }

    fn stop(&mut self) {
        self.state = State::Stopped;
        self.release();
    }

    /// The head buffer is never needed again; long-lived connections should
    /// not keep it.
    fn release(&mut self) {
        self.head = Vec::new();
    }
}

/// How many of `available` bytes belong to a body with `remaining` bytes left.
fn skip_len(remaining: u64, available: usize) -> usize {
    usize::try_from(remaining).map_or(available, |r| r.min(available))
}

fn hex_value(b: u8) -> u64 {
    let v = match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0,
    };
    u64::from(v)
}

/// Parses a complete head and decides how its body is framed.
fn classify<'b>(
    parser: &httparse::ParserConfig,
    buf: &'b [u8],
    headers: &mut [MaybeUninit<httparse::Header<'b>>],
) -> Head {
    let mut req = httparse::Request::new(&mut []);
    match parser.parse_request_with_uninit_headers(&mut req, buf, headers) {
        Ok(httparse::Status::Complete(len)) if len == buf.len() => {}
        // Partial or a shorter head cannot happen for a buffer ending in an
        // empty line; if it did, the boundaries are no longer ours to follow.
        _ => return Head::Unparseable,
    }
    match framing(&req) {
        Some(framing) => Head::Framed(framing),
        None => Head::Ambiguous,
    }
}

/// The body framing of a request, or `None` where the framing headers could
/// be read more than one way (RFC 9112 §6.1, §6.3).
fn framing(req: &httparse::Request<'_, '_>) -> Option<Framing> {
    let mut length = None;
    let mut chunked = false;
    for header in req.headers.iter() {
        let name = header.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            // A second line, even with the same value, is one hyper folds.
            if length.is_some() {
                return None;
            }
            length = Some(content_length(header.value)?);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // HTTP/1.0 has no chunked coding; a second line is one that a
            // recipient might take alone.
            if chunked || req.version != Some(1) || !ends_in_single_chunked(header.value) {
                return None;
            }
            chunked = true;
        }
    }
    match (length, chunked) {
        (Some(_), true) => None,
        (Some(n), false) => Some(Framing::Length(n)),
        (None, true) => Some(Framing::Chunked),
        (None, false) => Some(Framing::Empty),
    }
}

/// A Content-Length value of ASCII digits only: lists (`5, 5`), signs and
/// values past `u64` are rejected.
fn content_length(value: &[u8]) -> Option<u64> {
    let digits = trim_ows(value);
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// Whether a Transfer-Encoding list names `chunked` once, as its final
/// coding, with no empty elements.
fn ends_in_single_chunked(value: &[u8]) -> bool {
    let mut chunked = 0;
    let mut last_is_chunked = false;
    for coding in value.split(|&b| b == b',').map(trim_ows) {
        if coding.is_empty() {
            return false;
        }
        last_is_chunked = coding.eq_ignore_ascii_case(b"chunked");
        chunked += usize::from(last_is_chunked);
    }
    chunked == 1 && last_is_chunked
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const LIMIT: usize = 8192;

    /// A keep-alive sequence with every body framing: none, length, chunked
    /// with an extension and trailers.
    const CLEAN: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\
        POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
        POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
        5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\nY: 2\r\n\r\n";

    fn scan(bytes: &[u8]) -> Scanner {
        let mut s = Scanner::new(LIMIT);
        s.feed(bytes);
        s
    }

    fn first_bad(bytes: &[u8]) -> Option<u64> {
        scan(bytes).first_bad()
    }

    fn chunked(body: &str) -> Vec<u8> {
        let head = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        format!("{head}{body}").into_bytes()
    }

    #[test]
    fn clean_keep_alive_sequence_in_one_slice_is_never_bad() {
        let s = scan(CLEAN);
        assert_eq!(s.first_bad(), None);
        assert!(s.is_scanning());
        assert_eq!(s.request_index(), 3);
    }

    #[test]
    fn clean_keep_alive_sequence_fed_byte_by_byte_is_never_bad() {
        let mut s = Scanner::new(LIMIT);
        for b in CLEAN.chunks(1) {
            assert_eq!(s.feed(b), None);
        }
        assert!(s.is_scanning());
        assert_eq!(s.request_index(), 3);
    }

    #[test]
    fn clean_keep_alive_sequence_split_anywhere_is_never_bad() {
        for at in 0..=CLEAN.len() {
            let (a, b) = CLEAN.split_at(at);
            let mut s = Scanner::new(LIMIT);
            s.feed(a);
            s.feed(b);
            assert_eq!(
                (s.first_bad(), s.request_index()),
                (None, 3),
                "split at {at}"
            );
        }
    }

    #[test]
    fn content_length_with_transfer_encoding_is_bad_in_either_order() {
        let cl_first =
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        let te_first =
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(first_bad(cl_first), Some(0));
        assert_eq!(first_bad(te_first), Some(0));
    }

    #[test]
    fn bad_second_pipelined_request_marks_index_one_only() {
        let mut bytes = b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
        bytes.extend_from_slice(
            b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        );
        let mut s = Scanner::new(LIMIT);
        assert_eq!(s.feed(&bytes), Some(1));
        let verdict = Verdict::default();
        verdict.mark_bad(1);
        assert!(!verdict.is_bad(0));
        assert!(verdict.is_bad(1));
    }

    #[test]
    fn feed_reports_a_bad_request_once_and_ignores_later_bytes() {
        let mut s = Scanner::new(LIMIT);
        assert_eq!(
            s.feed(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n"),
            Some(0)
        );
        assert_eq!(s.feed(CLEAN), None);
        assert_eq!(s.first_bad(), Some(0));
        assert!(!s.is_scanning());
    }

    #[test]
    fn duplicate_identical_content_length_is_bad() {
        let bytes = b"POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\nhello";
        assert_eq!(first_bad(bytes), Some(0));
    }

    #[test]
    fn content_length_list_is_bad() {
        assert_eq!(
            first_bad(b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\nhello"),
            Some(0)
        );
    }

    #[test]
    fn content_length_that_is_not_plain_digits_is_bad() {
        for value in ["+5", "0x5", "5 5", "", "-1", "99999999999999999999999"] {
            let bytes = format!("POST / HTTP/1.1\r\nContent-Length: {value}\r\n\r\n");
            assert_eq!(first_bad(bytes.as_bytes()), Some(0), "{value:?}");
        }
    }

    #[test]
    fn content_length_body_is_skipped_without_being_parsed() {
        let body = b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n";
        let mut bytes =
            format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        bytes.extend_from_slice(body);
        let s = scan(&bytes);
        assert_eq!((s.first_bad(), s.request_index()), (None, 1));
    }

    #[test]
    fn transfer_encoding_not_ending_in_chunked_is_bad() {
        for value in [
            "gzip",
            "chunked, gzip",
            "chunked;q=1",
            "chunked,",
            "",
            "identity",
        ] {
            let bytes = format!("POST / HTTP/1.1\r\nTransfer-Encoding: {value}\r\n\r\n");
            assert_eq!(first_bad(bytes.as_bytes()), Some(0), "{value:?}");
        }
    }

    #[test]
    fn chunked_applied_twice_is_bad() {
        let one_line = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n";
        let two_lines = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\
            Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(first_bad(one_line), Some(0));
        assert_eq!(first_bad(two_lines), Some(0));
    }

    #[test]
    fn codings_before_a_final_chunked_are_accepted() {
        let bytes = b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, CHUNKED\r\n\r\n0\r\n\r\n";
        let s = scan(bytes);
        assert_eq!((s.first_bad(), s.request_index()), (None, 1));
    }

    #[test]
    fn transfer_encoding_on_http10_is_bad() {
        let bytes = b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(first_bad(bytes), Some(0));
    }

    #[test]
    fn bare_lf_after_chunk_size_is_bad() {
        assert_eq!(first_bad(&chunked("5\nhello\r\n0\r\n\r\n")), Some(0));
        assert_eq!(first_bad(&chunked("5;ext\nhello\r\n0\r\n\r\n")), Some(0));
    }

    #[test]
    fn bare_lf_after_chunk_data_is_bad() {
        assert_eq!(first_bad(&chunked("5\r\nhello\n0\r\n\r\n")), Some(0));
    }

    #[test]
    fn bare_lf_in_trailers_or_final_line_is_bad() {
        assert_eq!(first_bad(&chunked("0\r\nX: 1\n\r\n")), Some(0));
        assert_eq!(first_bad(&chunked("0\r\nX: 1\r\n\n")), Some(0));
        assert_eq!(first_bad(&chunked("0\r\n\n")), Some(0));
    }

    #[test]
    fn cr_not_followed_by_lf_in_chunk_framing_is_bad() {
        assert_eq!(first_bad(&chunked("5;a\rb\r\nhello\r\n0\r\n\r\n")), Some(0));
        assert_eq!(first_bad(&chunked("5\r\nhello\rX0\r\n\r\n")), Some(0));
        assert_eq!(first_bad(&chunked("0\r\nX: 1\rY\r\n\r\n")), Some(0));
    }

    #[test]
    fn non_hex_or_missing_chunk_size_is_bad() {
        assert_eq!(first_bad(&chunked("5g\r\nhello\r\n0\r\n\r\n")), Some(0));
        assert_eq!(first_bad(&chunked("0x5\r\nhello\r\n0\r\n\r\n")), Some(0));
        assert_eq!(first_bad(&chunked("\r\n")), Some(0));
        assert_eq!(first_bad(&chunked(";ext\r\n")), Some(0));
    }

    #[test]
    fn chunk_size_overflowing_u64_is_bad() {
        assert_eq!(first_bad(&chunked("10000000000000000\r\n")), Some(0));
        assert_eq!(first_bad(&chunked("ffffffffffffffff\r\n")), None);
    }

    #[test]
    fn whitespace_after_chunk_size_is_accepted_as_hyper_does() {
        let s = scan(&chunked("5 ;a=b\r\nhello\r\n0\t\r\n\r\n"));
        assert_eq!((s.first_bad(), s.request_index()), (None, 1));
    }

    #[test]
    fn heads_ending_in_bare_lf_are_followed() {
        let mut bytes = b"GET / HTTP/1.1\nHost: a\n\n".to_vec();
        bytes.extend_from_slice(
            b"POST / HTTP/1.1\nContent-Length: 1\nTransfer-Encoding: chunked\n\n",
        );
        assert_eq!(first_bad(&bytes), Some(1));
    }

    #[test]
    fn leading_empty_lines_are_tolerated() {
        let mut bytes = b"\r\n\r\nGET / HTTP/1.1\r\n\r\n\r\n".to_vec();
        bytes.extend_from_slice(
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
        );
        assert_eq!(first_bad(&bytes), Some(1));
    }

    #[test]
    fn heads_with_many_headers_are_still_checked() {
        let mut bytes = b"POST / HTTP/1.1\r\n".to_vec();
        for i in 0..(INLINE_HEADERS * 2) {
            bytes.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        bytes.extend_from_slice(b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(first_bad(&bytes), Some(0));
    }

    #[test]
    fn h2_preface_stops_and_never_marks_bad() {
        let mut s = Scanner::new(LIMIT);
        for b in b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".chunks(1) {
            s.feed(b);
        }
        s.feed(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n");
        assert_eq!(s.first_bad(), None);
        assert!(!s.is_scanning());
    }

    #[test]
    fn unparseable_head_stops_scanning() {
        let s = scan(b"GET / HTTP/9.9\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n");
        assert_eq!(s.first_bad(), None);
        assert!(!s.is_scanning());
    }

    #[test]
    fn oversized_head_stops_scanning() {
        let mut s = Scanner::new(16);
        s.feed(b"GET / HTTP/1.1\r\n");
        s.feed(&[b'a'; HEAD_SLACK + 16]);
        assert!(!s.is_scanning());
        assert_eq!(s.first_bad(), None);
    }

    #[test]
    fn declined_upgrade_does_not_hide_the_next_request() {
        let mut bytes = b"GET /ws HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n".to_vec();
        bytes.extend_from_slice(
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert_eq!(first_bad(&bytes), Some(1));
    }

    #[test]
    fn tunnel_bytes_after_upgrade_never_mark_the_upgrade_request() {
        let mut s = Scanner::new(LIMIT);
        s.feed(b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
        s.feed(&[0x81, 0x85, 0x37, 0xfa, b'\n', b'\n', 0x0d, 0x0a]);
        s.feed(b"CONNECT a:443 HTTP/1.1\r\n\r\n\x16\x03\x01\x02\x00\x01");
        let verdict = Verdict::default();
        if let Some(bad) = s.first_bad() {
            verdict.mark_bad(bad);
        }
        assert!(!verdict.is_bad(0));
    }

    #[test]
    fn verdict_marks_the_first_bad_index_and_everything_after() {
        let verdict = Verdict::new();
        assert_eq!(verdict.first_bad(), None);
        assert!(!verdict.is_bad(0));
        assert!(!verdict.is_bad(u64::MAX - 1));
        verdict.mark_bad(3);
        assert!(!verdict.is_bad(2));
        assert!(verdict.is_bad(3));
        assert!(verdict.is_bad(7));
        verdict.mark_bad(5);
        assert_eq!(verdict.first_bad(), Some(3));
        verdict.mark_bad(1);
        assert_eq!(verdict.first_bad(), Some(1));
    }

    #[tokio::test]
    async fn inspect_reads_bytes_unchanged_and_records_the_verdict() {
        // A tiny pipe forces many short reads, so heads arrive split.
        let (mut client, server) = tokio::io::duplex(7);
        let verdict = Verdict::new();
        let mut inspect = Inspect::new(server, verdict.clone(), LIMIT, Duration::from_secs(60));
        let mut sent = CLEAN.to_vec();
        sent.extend_from_slice(
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        );
        let to_send = sent.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&to_send).await?;
            client.shutdown().await?;
            Ok::<_, io::Error>(client)
        });
        let mut received = Vec::new();
        inspect.read_to_end(&mut received).await.expect("read");
        let mut client = writer.await.expect("writer task").expect("write");
        assert_eq!(received, sent);
        assert_eq!(verdict.first_bad(), Some(3));
        assert!(!verdict.is_bad(2));

        let reader = tokio::spawn(async move {
            let mut echoed = Vec::new();
            client.read_to_end(&mut echoed).await.map(|_| echoed)
        });
        inspect
            .write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            .await
            .expect("write");
        let parts = [io::IoSlice::new(b"ab"), io::IoSlice::new(b"cd")];
        let n = inspect
            .write_vectored(&parts)
            .await
            .expect("write vectored");
        inspect.flush().await.expect("flush");
        inspect.shutdown().await.expect("shutdown");
        let echoed = reader.await.expect("reader task").expect("read");
        let mut expected = b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec();
        expected.extend_from_slice(&b"abcd"[..n]);
        assert_eq!(echoed, expected);
        assert_eq!(
            inspect.is_write_vectored(),
            inspect.get_ref().is_write_vectored()
        );
    }

    #[test]
    fn protocol_is_known_once_bytes_leave_or_complete_the_h2_preface() {
        let mut seen = 0;
        assert!(
            protocol_known(&mut seen, b"G"),
            "HTTP/1 from the first byte"
        );
        let mut seen = 0;
        assert!(!protocol_known(&mut seen, b"PRI * HTTP/2.0\r\n"));
        assert!(!protocol_known(&mut seen, b"\r\nSM\r\n"));
        assert!(protocol_known(&mut seen, b"\r\n"), "the whole preface");
        let mut seen = 0;
        assert!(
            protocol_known(&mut seen, b"PRIX"),
            "diverges at the 4th byte"
        );
    }
}
