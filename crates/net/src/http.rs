//! A minimal HTTP/1.1 client for one `GET` over any byte stream (a unix socket, a named pipe,
//! a localhost TCP connection).
//!
//! Written by hand because tailscaled's LocalAPI is plain HTTP/1.1 on a local transport and a
//! full client (hyper) would be a large dependency for one request. It sends `Connection:
//! close`, reads the status line and headers, and reads the body by `Content-Length`, by
//! `Transfer-Encoding: chunked`, or to the end of the stream. Sizes are bounded so that a
//! confused peer cannot make it allocate without end. Time limits are the caller's.

use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};

/// The longest status line, header line or chunk-size line accepted.
const MAX_LINE: usize = 16 * 1024;
/// The most header bytes accepted.
const MAX_HEADERS: usize = 64 * 1024;
/// The largest body accepted (a status of a tailnet with thousands of peers fits easily).
pub(crate) const MAX_BODY: usize = 64 * 1024 * 1024;

/// An answer: its status code and body.
#[derive(Debug)]
pub(crate) struct Response {
    pub status: u16,
    pub reason: String,
    pub body: Vec<u8>,
}

/// What went wrong in the exchange.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    #[error("could not send the request: {0}")]
    Write(std::io::Error),
    #[error("could not read the answer: {0}")]
    Read(std::io::Error),
    #[error("the connection closed {0}")]
    Closed(String),
    #[error("the answer is not valid HTTP/1.1: {0}")]
    Malformed(String),
    #[error("the answer is larger than {MAX_BODY} bytes")]
    TooLarge,
}

/// Sends `GET path` with `Host: host` (and HTTP Basic authentication with an empty user name
/// and `password`, when given) and reads the whole answer.
pub(crate) async fn get<S>(
    stream: S,
    host: &str,
    path: &str,
    password: Option<&str>,
) -> Result<Response, HttpError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut stream = BufReader::new(stream);
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: flotilla-net/{}\r\n\
         Accept: application/json\r\nConnection: close\r\n",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(password) = password {
        let credentials = base64(format!(":{password}").as_bytes());
        request.push_str(&format!("Authorization: Basic {credentials}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(HttpError::Write)?;
    stream.flush().await.map_err(HttpError::Write)?;
    read_response(&mut stream).await
}

/// Reads one response (skipping any `1xx` interim ones) from `r`.
pub(crate) async fn read_response<R>(r: &mut R) -> Result<Response, HttpError>
where
    R: AsyncBufRead + Unpin,
{
    loop {
        let Some(line) = read_line(r).await? else {
            return Err(HttpError::Closed("before answering".into()));
        };
        let (status, reason) = parse_status_line(&line)?;
        let head = read_headers(r).await?;
        if (100..200).contains(&status) {
            continue;
        }
        let body = if status == 204 || status == 304 {
            Vec::new()
        } else if head.chunked {
            read_chunked(r).await?
        } else if let Some(len) = head.content_length {
            read_exact_body(r, len).await?
        } else {
            read_to_end(r).await?
        };
        return Ok(Response {
            status,
            reason,
            body,
        });
    }
}

fn parse_status_line(line: &str) -> Result<(u16, String), HttpError> {
    let bad = || HttpError::Malformed(format!("status line {:?}", truncate(line)));
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(bad());
    }
    let code = parts.next().unwrap_or_default();
    if code.len() != 3 {
        return Err(bad());
    }
    let status: u16 = code.parse().map_err(|_| bad())?;
    if !(100..600).contains(&status) {
        return Err(bad());
    }
    Ok((status, parts.next().unwrap_or_default().trim().to_owned()))
}

#[derive(Debug, Default)]
struct Head {
    content_length: Option<usize>,
    chunked: bool,
}

async fn read_headers<R: AsyncBufRead + Unpin>(r: &mut R) -> Result<Head, HttpError> {
    let mut head = Head::default();
    let mut total = 0usize;
    loop {
        let Some(line) = read_line(r).await? else {
            return Err(HttpError::Closed("in the middle of the headers".into()));
        };
        if line.is_empty() {
            return Ok(head);
        }
        total += line.len();
        if total > MAX_HEADERS {
            return Err(HttpError::Malformed("the headers are too long".into()));
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(HttpError::Malformed(format!(
                "header line {:?}",
                truncate(&line)
            )));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let len: usize = value.parse().map_err(|_| {
                HttpError::Malformed(format!("Content-Length {:?}", truncate(value)))
            })?;
            if head.content_length.is_some_and(|l| l != len) {
                return Err(HttpError::Malformed("two different Content-Lengths".into()));
            }
            if len > MAX_BODY {
                return Err(HttpError::TooLarge);
            }
            head.content_length = Some(len);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // The last coding decides how the body is framed.
            let last = value.rsplit(',').next().unwrap_or_default().trim();
            head.chunked = last.eq_ignore_ascii_case("chunked");
        }
    }
}

async fn read_exact_body<R: AsyncRead + Unpin>(
    r: &mut R,
    len: usize,
) -> Result<Vec<u8>, HttpError> {
    let mut body = vec![0u8; len];
    let mut got = 0;
    while got < len {
        let n = r.read(&mut body[got..]).await.map_err(HttpError::Read)?;
        if n == 0 {
            return Err(HttpError::Closed(format!(
                "after {got} of the {len} bytes of the body"
            )));
        }
        got += n;
    }
    Ok(body)
}

async fn read_to_end<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    let mut limited = r.take(MAX_BODY as u64 + 1);
    limited
        .read_to_end(&mut body)
        .await
        .map_err(HttpError::Read)?;
    if body.len() > MAX_BODY {
        return Err(HttpError::TooLarge);
    }
    Ok(body)
}

async fn read_chunked<R: AsyncBufRead + Unpin>(r: &mut R) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    loop {
        let Some(line) = read_line(r).await? else {
            return Err(HttpError::Closed(format!(
                "after {} bytes of a chunked body, before its last chunk",
                body.len()
            )));
        };
        // A chunk size may carry extensions after ';'.
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| HttpError::Malformed(format!("chunk size {:?}", truncate(&line))))?;
        if size == 0 {
            // Trailers, up to an empty line; a peer that closes instead has still sent it all.
            while let Some(trailer) = read_line(r).await? {
                if trailer.is_empty() {
                    break;
                }
            }
            return Ok(body);
        }
        if body.len().saturating_add(size) > MAX_BODY {
            return Err(HttpError::TooLarge);
        }
        let chunk = read_exact_body(r, size).await.map_err(|e| match e {
            HttpError::Closed(_) => HttpError::Closed("in the middle of a chunk".into()),
            other => other,
        })?;
        body.extend_from_slice(&chunk);
        match read_line(r).await? {
            Some(end) if end.is_empty() => {}
            Some(_) => {
                return Err(HttpError::Malformed(
                    "a chunk is longer than its size".into(),
                ));
            }
            None => return Err(HttpError::Closed("in the middle of a chunk".into())),
        }
    }
}

/// One line without its `\r\n` (or `\n`), or `None` at the end of the stream before any byte.
async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R) -> Result<Option<String>, HttpError> {
    let mut line = Vec::new();
    loop {
        let buf = r.fill_buf().await.map_err(HttpError::Read)?;
        if buf.is_empty() {
            if line.is_empty() {
                return Ok(None);
            }
            return Err(HttpError::Closed("in the middle of a line".into()));
        }
        let (used, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                line.extend_from_slice(&buf[..i]);
                (i + 1, true)
            }
            None => {
                line.extend_from_slice(buf);
                (buf.len(), false)
            }
        };
        r.consume(used);
        if line.len() > MAX_LINE {
            return Err(HttpError::Malformed("a line is too long".into()));
        }
        if done {
            break;
        }
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| HttpError::Malformed("a line is not text".into()))
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(80) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Standard base64 with padding (RFC 4648), for the Basic authentication header.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for group in input.chunks(3) {
        let b = [
            group[0],
            group.get(1).copied().unwrap_or(0),
            group.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= group.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(raw: &[u8]) -> Result<Response, HttpError> {
        let mut r = BufReader::new(raw);
        read_response(&mut r).await
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            (":tok3n", "OnRvazNu"),
        ] {
            assert_eq!(base64(plain.as_bytes()), coded, "{plain}");
        }
    }

    #[tokio::test]
    async fn content_length_bodies_are_read_exactly() {
        let r = parse(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}trailing")
            .await
            .unwrap();
        assert_eq!(
            (r.status, r.reason.as_str(), r.body.as_slice()),
            (200, "OK", &b"{}"[..])
        );
    }

    #[tokio::test]
    async fn chunked_bodies_are_joined_with_extensions_and_trailers() {
        let r = parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Trailer: 1\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(r.body, b"Wikipedia in\r\n\r\nchunks.");
    }

    #[tokio::test]
    async fn bodies_without_framing_run_to_the_end() {
        let r = parse(b"HTTP/1.0 200 OK\n\nhello").await.unwrap();
        assert_eq!(r.body, b"hello");
    }

    #[tokio::test]
    async fn interim_answers_are_skipped() {
        let r = parse(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 403 Forbidden\r\nContent-Length: 3\r\n\r\nno\n",
        )
        .await
        .unwrap();
        assert_eq!(r.status, 403);
    }

    #[tokio::test]
    async fn broken_answers_are_errors() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "closed before answering"),
            (b"SSH-2.0-OpenSSH\r\n\r\n", "status line"),
            (b"HTTP/1.1 2000 OK\r\n\r\n", "status line"),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n",
                "middle of the headers",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
                "Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                "two different",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
                "larger than",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{\"a\"",
                "after 4 of the 10 bytes",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                "chunk size",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc",
                "middle of a chunk",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n",
                "longer than its size",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
                "before its last chunk",
            ),
            (b"HTTP/1.1 200 OK\r\nBad header\r\n\r\n", "header line"),
        ];
        for (raw, expected) in cases {
            let err = parse(raw).await.unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "{:?}: {err}",
                String::from_utf8_lossy(raw)
            );
        }
    }
}
