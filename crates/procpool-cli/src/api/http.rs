//! Just enough HTTP/1.1 for the embedded server: one request per connection, read up to the
//! end of its head, answered with a JSON body and `Connection: close`.
//!
//! The server only serves `GET` requests without a body, so nothing after the head is read.
//! It is written by hand rather than taken from an HTTP server crate so that the server owns
//! every thread and socket it uses and its `Drop` can close and join them all (`tiny_http`,
//! for one, leaves its accept and connection threads detached).

use std::io::{self, Read, Write};

/// The most bytes a request head (request line and headers) may take.
const MAX_HEAD: usize = 16 * 1024;

/// A request as the server sees it: the method, the path, and the decoded query pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    /// The method, as sent (`GET`).
    pub(crate) method: String,
    /// The path, without the query.
    pub(crate) path: String,
    /// The query's `name=value` pairs, percent-decoded, in the order sent.
    pub(crate) query: Vec<(String, String)>,
}

impl Request {
    /// The value of the first query parameter called `name`.
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// What came in on a connection.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// A well-formed request.
    Request(Request),
    /// Bytes that are not an HTTP/1.x request.
    Malformed,
    /// The peer closed the connection before sending anything.
    Closed,
}

/// Reads one request head from `stream`.
///
/// # Errors
///
/// Returns the stream's error, or `UnexpectedEof` if the peer closed the connection in the
/// middle of a head.
pub(crate) fn read_request(stream: &mut impl Read) -> io::Result<Incoming> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return if head.is_empty() {
                Ok(Incoming::Closed)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        // Look for the blank line from a little before the new bytes, in case it straddles
        // two reads.
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(&chunk[..n]);
        match find(&head[from..], b"\r\n\r\n") {
            Some(end) if from + end <= MAX_HEAD => return Ok(parse_head(&head[..from + end])),
            Some(_) => return Ok(Incoming::Malformed),
            None if head.len() > MAX_HEAD => return Ok(Incoming::Malformed),
            None => {}
        }
    }
}

/// Parses a request head without its final blank line.
fn parse_head(head: &[u8]) -> Incoming {
    let Ok(head) = std::str::from_utf8(head) else {
        return Incoming::Malformed;
    };
    let line = head.split("\r\n").next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        // request line is not `METHOD TARGET VERSION`
        return Incoming::Malformed;
    };
    if !version.starts_with("HTTP/1.") {
        return Incoming::Malformed;
    }
    if !target.starts_with('/') {
        // request target is not a path
        return Incoming::Malformed;
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Incoming::Request(Request {
        method: method.to_owned(),
        path: percent_decode(path),
        query: parse_query(query),
    })
}

/// Splits a query string into decoded `name=value` pairs; a name without `=` has an empty
/// value.
fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

/// Decodes `%XX` escapes and `+` (a space in a query); a `%` not followed by two hex digits is
/// kept as it is, and bytes that are not UTF-8 become U+FFFD.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let digit = |at: usize| bytes.get(at).copied().and_then(hex);
                match (digit(i + 1), digit(i + 2)) {
                    (Some(high), Some(low)) => {
                        out.push(high * 16 + low);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of one hex digit.
fn hex(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|d| d as u8)
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Writes a complete response with a JSON body, and says the connection will close.
///
/// # Errors
///
/// Returns the stream's error.
pub(crate) fn write_response(stream: &mut impl Write, status: u16, body: &[u8]) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\n\
         Content-Type: application/json;charset=UTF-8\r\n\
         Content-Length: {length}\r\n\
         Connection: close\r\n\
         \r\n",
        reason = reason(status),
        length = body.len(),
    );
    let mut response = head.into_bytes();
    response.extend_from_slice(body);
    stream.write_all(&response)?;
    stream.flush()
}

/// The reason phrase for the statuses the server sends.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Incoming {
        read_request(&mut raw.as_bytes()).unwrap()
    }

    #[test]
    fn parses_a_get_with_a_query() {
        let Incoming::Request(request) = parse(
            "GET /2/statuses/repost_timeline.json?id=42&count=200&access_token=a%2Bb+c&flag HTTP/1.1\r\n\
             Host: 127.0.0.1\r\n\r\n",
        ) else {
            panic!("not parsed");
        };
        assert_eq!(request.method, "GET");
        assert_eq!(request.path, "/2/statuses/repost_timeline.json");
        assert_eq!(request.param("id"), Some("42"));
        assert_eq!(request.param("count"), Some("200"));
        assert_eq!(request.param("access_token"), Some("a+b c"));
        assert_eq!(request.param("flag"), Some(""));
        assert_eq!(request.param("page"), None);
    }

    #[test]
    fn first_of_repeated_parameters_wins() {
        let Incoming::Request(request) = parse("GET /?page=2&page=3 HTTP/1.0\r\n\r\n") else {
            panic!("not parsed");
        };
        assert_eq!(request.param("page"), Some("2"));
    }

    #[test]
    fn decodes_percent_escapes_leniently() {
        assert_eq!(percent_decode("%E8%BD%AC%E5%8F%91"), "转发");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%41%42"), "AB");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
    }

    #[test]
    fn reads_a_head_split_across_reads() {
        let raw = b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n";
        // A reader that hands out one byte at a time.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let Some((&first, rest)) = self.0.split_first() else {
                    return Ok(0);
                };
                buf[0] = first;
                self.0 = rest;
                Ok(1)
            }
        }
        let Incoming::Request(request) = read_request(&mut Trickle(raw)).unwrap() else {
            panic!("not parsed");
        };
        assert_eq!(request.path, "/x");
    }

    #[test]
    fn rejects_what_is_not_http() {
        assert!(matches!(parse("hello\r\n\r\n"), Incoming::Malformed));
        assert!(matches!(
            parse("GET /x SPDY/3\r\n\r\n"),
            Incoming::Malformed
        ));
        assert!(matches!(
            parse("GET http://h/x HTTP/1.1\r\n\r\n"),
            Incoming::Malformed
        ));
        assert!(matches!(parse(""), Incoming::Closed));
        let huge = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_HEAD + 10));
        assert!(matches!(parse(&huge), Incoming::Malformed));
        let cut = read_request(&mut "GET / HTTP/1.1\r\n".as_bytes());
        assert_eq!(cut.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn writes_a_complete_response() {
        let mut out = Vec::new();
        write_response(&mut out, 404, b"{}").unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(text.contains("Content-Length: 2\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\n{}"));
    }
}
