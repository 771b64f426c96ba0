//! Just enough HTTP/1.1 for the embedded server: one request per connection, its head read
//! within a deadline and parsed by `httparse`, answered with a JSON body and
//! `Connection: close`.
//!
//! The server only serves `GET` requests without a body, so nothing after the head is read.
//! The connection handling is the server's own rather than an HTTP server crate's so that the
//! server owns every thread and socket it uses and its `Drop` can close and join them all
//! (`tiny_http`, for one, leaves its accept and connection threads detached).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use percent_encoding::percent_decode_str;

/// The most bytes a request head (request line and headers) may take.
const MAX_HEAD: usize = 16 * 1024;

/// The most headers a request head may have.
const MAX_HEADERS: usize = 64;

/// A request as the server sees it: the method, the path, the decoded query pairs and the
/// token of an `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    /// The method, as sent (`GET`).
    pub(crate) method: String,
    /// The path, without the query.
    pub(crate) path: String,
    /// The query's `name=value` pairs, percent-decoded, in the order sent.
    pub(crate) query: Vec<(String, String)>,
    /// The token of an `Authorization: OAuth2 TOKEN` (or `Bearer TOKEN`) header.
    pub(crate) authorization: Option<String>,
}

impl Request {
    /// The value of the first query parameter called `name`.
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The access token: the `access_token` parameter, else the `Authorization` header's.
    pub(crate) fn token(&self) -> Option<&str> {
        self.param("access_token").or(self.authorization.as_deref())
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

/// A source of request bytes that can be given a time limit for its next read.
pub(crate) trait HeadSource: Read {
    /// Limits the next read to `timeout`.
    fn limit_next_read(&mut self, timeout: Duration) -> io::Result<()>;
}

impl HeadSource for TcpStream {
    fn limit_next_read(&mut self, timeout: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(timeout))
    }
}

impl HeadSource for &[u8] {
    fn limit_next_read(&mut self, _: Duration) -> io::Result<()> {
        Ok(())
    }
}

/// Reads one request head from `stream`, all of it within `deadline`: a client that
/// trickles its head is cut off when the deadline passes, however often it sends a byte.
///
/// # Errors
///
/// Returns the stream's error, `TimedOut` when the deadline passes, or `UnexpectedEof` if
/// the peer closed the connection in the middle of a head.
pub(crate) fn read_request(
    stream: &mut impl HeadSource,
    deadline: Duration,
) -> io::Result<Incoming> {
    let start = Instant::now();
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline
            .checked_sub(start.elapsed())
            .filter(|left| !left.is_zero())
            .ok_or(io::ErrorKind::TimedOut)?;
        stream.limit_next_read(left)?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::ErrorKind::TimedOut.into());
            }
            Err(error) => return Err(error),
        };
        if n == 0 {
            return if head.is_empty() {
                Ok(Incoming::Closed)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        head.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&head) {
            Ok(httparse::Status::Complete(length)) if length <= MAX_HEAD => {
                return Ok(to_request(&request));
            }
            Ok(httparse::Status::Partial) if head.len() <= MAX_HEAD => {}
            Ok(_) | Err(_) => return Ok(Incoming::Malformed),
        }
    }
}

/// The server's view of a parsed head: an origin-form target (`/path?query`) is required.
fn to_request(request: &httparse::Request<'_, '_>) -> Incoming {
    let (Some(method), Some(target)) = (request.method, request.path) else {
        return Incoming::Malformed;
    };
    if !target.starts_with('/') {
        // request target is not a path
        return Incoming::Malformed;
    }
    let authorization = request
        .headers
        .iter()
        .find(|header| header.name.eq_ignore_ascii_case("authorization"))
        .and_then(|header| std::str::from_utf8(header.value).ok())
        .and_then(bearer_token);
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Incoming::Request(Request {
        method: method.to_owned(),
        path: decode(path),
        query: parse_query(query),
        authorization,
    })
}

/// The token of an `Authorization` value `OAuth2 TOKEN` (the public API's scheme) or
/// `Bearer TOKEN`, the scheme in any case.
fn bearer_token(value: &str) -> Option<String> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let known = ["oauth2", "bearer"]
        .iter()
        .any(|name| scheme.eq_ignore_ascii_case(name));
    let token = token.trim();
    (known && !token.is_empty()).then(|| token.to_owned())
}

/// Splits a query string into decoded `name=value` pairs; a name without `=` has an empty
/// value.
fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_component(name), decode_component(value))
        })
        .collect()
}

/// Decodes a query component: `+` is a space, `%XX` a byte; a `%` not followed by two hex
/// digits is kept as it is, and bytes that are not UTF-8 become U+FFFD.
fn decode_component(text: &str) -> String {
    decode(&text.replace('+', " "))
}

/// Decodes `%XX` escapes, leniently (see [`decode_component`]).
fn decode(text: &str) -> String {
    percent_decode_str(text).decode_utf8_lossy().into_owned()
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
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Incoming {
        read_request(&mut raw.as_bytes(), Duration::from_secs(10)).unwrap()
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
        assert_eq!(decode_component("%E8%BD%AC%E5%8F%91"), "转发");
        assert_eq!(decode_component("100%"), "100%");
        assert_eq!(decode_component("%zz%4"), "%zz%4");
        assert_eq!(decode_component("%41%42+c"), "AB c");
        assert_eq!(decode_component("%ff"), "\u{fffd}");
    }

    #[test]
    fn reads_a_head_split_across_reads() {
        let raw = b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n";
        // A reader that hands out one byte at a time.
        struct Trickle<'a>(&'a [u8]);
        impl HeadSource for Trickle<'_> {
            fn limit_next_read(&mut self, _: Duration) -> io::Result<()> {
                Ok(())
            }
        }
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
        let Incoming::Request(request) =
            read_request(&mut Trickle(raw), Duration::from_secs(10)).unwrap()
        else {
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
        let cut = read_request(
            &mut "GET / HTTP/1.1\r\n".as_bytes(),
            Duration::from_secs(10),
        );
        assert_eq!(cut.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn the_token_may_come_in_an_authorization_header() {
        let Incoming::Request(request) =
            parse("GET /x?id=1 HTTP/1.1\r\nHost: h\r\nauthorization: OAuth2 2.00abc\r\n\r\n")
        else {
            panic!("not parsed");
        };
        assert_eq!(request.token(), Some("2.00abc"));
        let Incoming::Request(request) =
            parse("GET /x?access_token=q HTTP/1.1\r\nAuthorization: Bearer h\r\n\r\n")
        else {
            panic!("not parsed");
        };
        assert_eq!(request.token(), Some("q"), "the query's token comes first");
        assert_eq!(bearer_token("Basic dXNlcg=="), None);
        assert_eq!(bearer_token("OAuth2 "), None);
        assert_eq!(bearer_token("oauth2  t "), Some("t".to_owned()));
    }

    #[test]
    fn a_head_past_its_deadline_times_out() {
        let error = read_request(&mut "GET / HTTP/1.1\r\n".as_bytes(), Duration::ZERO).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
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
