//! A minimal HTTP/1.1 client: pre-built requests written to a keep-alive socket, answers
//! parsed with httparse. The load generator shares two cores with the server, so every
//! cycle it spends is taken from the server; this does little more than `wrk` does.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream as StdStream};
use std::ops::Range;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the head of an answer says.
struct Head {
    status: u16,
    header_len: usize,
    content_len: usize,
    close: bool,
}

/// Parses a response head; `None` while it is incomplete.
fn parse_head(buf: &[u8]) -> io::Result<Option<Head>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let header_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
    };
    let mut content_len = 0;
    let mut close = false;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            content_len = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad content-length"))?;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // The API always sends a length; a chunked answer would be a change worth seeing.
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "chunked answers are not supported",
            ));
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = h.value.eq_ignore_ascii_case(b"close");
        }
    }
    Ok(Some(Head {
        status: resp.code.unwrap_or(0),
        header_len,
        content_len,
        close,
    }))
}

/// One keep-alive connection, reconnecting after an error or a `Connection: close`.
pub struct Conn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    body: Range<usize>,
}

impl Conn {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            stream: None,
            buf: Vec::with_capacity(4096),
            body: 0..0,
        }
    }

    /// Sends one request and reads its whole answer; returns the status.
    pub async fn send(&mut self, request: &[u8]) -> io::Result<u16> {
        let r = self.exchange(request).await;
        if r.is_err() {
            self.stream = None;
        }
        r
    }

    /// The body of the last answer.
    pub fn body(&self) -> &[u8] {
        &self.buf[self.body.clone()]
    }

    async fn exchange(&mut self, request: &[u8]) -> io::Result<u16> {
        if self.stream.is_none() {
            let s = TcpStream::connect(self.addr).await?;
            s.set_nodelay(true)?;
            self.stream = Some(s);
        }
        let Some(stream) = self.stream.as_mut() else {
            unreachable!("connected above")
        };
        stream.write_all(request).await?;
        self.buf.clear();
        loop {
            if let Some(head) = parse_head(&self.buf)? {
                let total = head.header_len + head.content_len;
                while self.buf.len() < total {
                    self.buf.reserve(total - self.buf.len());
                    if stream.read_buf(&mut self.buf).await? == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                }
                self.body = head.header_len..total;
                if head.close {
                    self.stream = None;
                }
                return Ok(head.status);
            }
            self.buf.reserve(4096);
            if stream.read_buf(&mut self.buf).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

/// A one-off blocking request for control steps (readiness, counts): its own
/// connection, closed afterwards.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
) -> io::Result<(u16, Vec<u8>)> {
    let mut s = StdStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let req = crate::workload::http_request(method, path, &addr.to_string(), token, body);
    s.write_all(&req)?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(head) = parse_head(&buf)? {
            let total = head.header_len + head.content_len;
            while buf.len() < total {
                let n = s.read(&mut chunk)?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok((head.status, buf[head.header_len..total].to_vec()));
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
