//! The crawl client, over real HTTP on 127.0.0.1: against the embedded server, and against
//! tiny hand-rolled servers that fail on purpose.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use procpool_cli::api::dataset::{self, POST_5000_REPOSTS, POSTS, TUTORIAL_POST};
use procpool_cli::api::{DEFAULT_TOKEN, Server, ServerConfig};
use procpool_cli::crawl::{self, CrawlErrorKind, PageRequest};

/// A server that answers at once.
fn server_with(config: ServerConfig) -> Server {
    Server::start(ServerConfig {
        latency: Duration::ZERO,
        ..config
    })
    .expect("the server starts")
}

fn server() -> Server {
    server_with(ServerConfig::default())
}

/// Page 1 of `mid` at `api_base`, with a bounded timeout.
fn request(api_base: String, mid: u64) -> PageRequest {
    PageRequest {
        timeout_ms: 30_000,
        ..PageRequest::new(api_base, mid, DEFAULT_TOKEN)
    }
}

mod against_the_embedded_server {
    use super::*;

    #[test]
    fn every_post_is_crawled_completely_newest_first() {
        let server = server();
        let mut requests = 0;
        for &(post, total) in POSTS {
            let reposts = crawl::crawl_serial(&request(server.base_url(), post))
                .unwrap_or_else(|e| panic!("post {post}: {e}"));
            let reachable = total.min(2_000);
            let expected: Vec<u64> = (0..reachable)
                .map(|index| dataset::repost_id(post, index).unwrap())
                .collect();
            let ids: Vec<u64> = reposts.iter().map(|repost| repost.id).collect();
            assert_eq!(ids, expected, "post {post}: each repost once, newest first");
            for repost in &reposts {
                assert_eq!(repost.idstr, repost.id.to_string());
                assert!(
                    repost
                        .user
                        .as_ref()
                        .is_some_and(|u| !u.screen_name.is_empty())
                );
                let original = repost.retweeted_status.as_ref().expect("the original post");
                assert_eq!(original.id, post);
            }
            // Page 1 always, then the rest: page 1 is not fetched twice.
            requests += u64::from(crawl::page_count(total).max(1));
            assert_eq!(server.requests_served(), requests, "post {post}");
        }
    }

    #[test]
    fn pages_fetched_out_of_order_merge_like_a_serial_crawl() {
        let server = server();
        let template = request(server.base_url(), TUTORIAL_POST);
        let first = crawl::fetch_page(&template).unwrap();
        assert_eq!((first.page, first.total_number), (1, 2_731));
        let mut pages = vec![first.clone()];
        for request in crawl::remaining_pages(&template, first.total_number)
            .iter()
            .rev()
        {
            pages.push(crawl::fetch_page(request).unwrap());
        }
        // A page fetched twice adds nothing.
        pages.push(first);
        assert_eq!(pages.len(), 11);
        let merged = crawl::merge_pages(pages);
        assert_eq!(merged, crawl::crawl_serial(&template).unwrap());
        assert_eq!(merged.len(), 2_000);
    }

    #[test]
    fn a_smaller_page_size_reaches_the_same_reposts() {
        let server = server();
        let template = PageRequest {
            count: 150,
            ..request(server.base_url(), POST_5000_REPOSTS)
        };
        let reposts = crawl::crawl_serial(&template).unwrap();
        assert_eq!(reposts.len(), 2_000);
        // ceil(2,000 / 150) pages.
        assert_eq!(server.requests_served(), 14);
    }

    #[test]
    fn fetched_reposts_round_trip_through_json_lines() {
        let server = server();
        let page = crawl::fetch_page(&request(server.base_url(), TUTORIAL_POST)).unwrap();
        let mut out = Vec::new();
        crawl::write_json_lines(&page.reposts, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 200);
        let first: crawl::Repost = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first, page.reposts[0]);
    }

    #[test]
    fn a_bad_token_is_reported_without_retrying() {
        let server = server();
        let template = PageRequest {
            token: "expired".to_owned(),
            retries: 3,
            ..request(server.base_url(), TUTORIAL_POST)
        };
        let error = crawl::crawl_serial(&template).unwrap_err();
        assert_eq!(error.kind(), CrawlErrorKind::Api);
        assert_eq!(error.api_code(), Some(21332));
        assert_eq!(error.http_status(), Some(401));
        assert_eq!(error.attempts(), 1);
        assert!(!error.is_transient());
        assert_eq!(server.requests_served(), 1);
        assert_eq!(
            error.to_string(),
            "api error 21332 for page 1 of post 3664072912104801: invalid_access_token \
             (check --token)"
        );
        assert!(
            !error.to_string().contains("expired"),
            "the token stays secret"
        );
    }

    #[test]
    fn an_unknown_post_is_reported_without_retrying() {
        let server = server();
        let error = crawl::crawl_serial(&request(server.base_url(), 12_345)).unwrap_err();
        assert_eq!(error.api_code(), Some(20101));
        assert_eq!(
            (error.mid(), error.page(), error.attempts()),
            (12_345, 1, 1)
        );
        assert_eq!(server.requests_served(), 1);
        assert!(error.to_string().contains("12345"), "{error}");
    }

    #[test]
    fn a_parameter_error_is_reported_without_retrying() {
        let server = server();
        let bad = PageRequest {
            page: 0,
            ..request(server.base_url(), TUTORIAL_POST)
        };
        let error = crawl::fetch_page(&bad).unwrap_err();
        assert_eq!(error.api_code(), Some(10008));
        assert_eq!(error.attempts(), 1);
        assert_eq!(server.requests_served(), 1);
    }

    #[test]
    fn the_rate_limit_is_retried_then_stops_a_crawl_at_the_page_it_hits() {
        let server = server_with(ServerConfig {
            rate_limit: Some(3),
            ..ServerConfig::default()
        });
        let template = PageRequest {
            retries: 2,
            ..request(server.base_url(), TUTORIAL_POST)
        };
        let error = crawl::crawl_serial(&template).unwrap_err();
        assert_eq!(error.api_code(), Some(10023));
        assert!(error.is_rate_limited() && error.is_transient());
        assert_eq!(error.http_status(), Some(403));
        assert_eq!((error.page(), error.attempts()), (4, 3));
        assert_eq!(server.requests_served(), 6);
    }
}

mod failures {
    use super::*;

    /// What a [`Fake`] server does with a connection.
    #[derive(Clone, Copy, Debug)]
    enum Act {
        /// Answers with this status and an empty body.
        Status(u16),
        /// Answers 200 with this body.
        Body(&'static str),
        /// Reads the request and closes the connection without answering.
        HangUp,
        /// Passes the request to this server and its answer back.
        Proxy(SocketAddr),
    }

    /// A tiny HTTP server on 127.0.0.1 that serves its connections one at a time, the n-th
    /// (from 0) as `plan(n)` says.
    struct Fake {
        addr: SocketAddr,
        connections: Arc<AtomicUsize>,
        stopping: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
    }

    impl Fake {
        fn start(plan: impl Fn(usize) -> Act + Send + 'static) -> Fake {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let connections = Arc::new(AtomicUsize::new(0));
            let stopping = Arc::new(AtomicBool::new(false));
            let thread = thread::spawn({
                let connections = Arc::clone(&connections);
                let stopping = Arc::clone(&stopping);
                move || {
                    for stream in listener.incoming() {
                        if stopping.load(Ordering::SeqCst) {
                            return;
                        }
                        let n = connections.fetch_add(1, Ordering::SeqCst);
                        // A client that gave up is no failure of the fake.
                        let _ = serve(stream.unwrap(), plan(n));
                    }
                }
            });
            Fake {
                addr,
                connections,
                stopping,
                thread: Some(thread),
            }
        }

        fn base_url(&self) -> String {
            format!("http://{}", self.addr)
        }

        fn connections(&self) -> usize {
            self.connections.load(Ordering::SeqCst)
        }
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            self.stopping.store(true, Ordering::SeqCst);
            // Wakes the accept loop.
            let _ = TcpStream::connect(self.addr);
            if let Some(thread) = self.thread.take() {
                thread.join().unwrap();
            }
        }
    }

    /// Reads a request head, up to and including its blank line.
    fn read_head(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            head.push(byte[0]);
        }
        Ok(head)
    }

    fn serve(mut stream: TcpStream, act: Act) -> io::Result<()> {
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let head = read_head(&mut stream)?;
        let respond = |stream: &mut TcpStream, status: u16, body: &str| {
            write!(
                stream,
                "HTTP/1.1 {status} Whatever\r\nContent-Type: text/html; charset=utf-8\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        };
        match act {
            Act::Status(status) => respond(&mut stream, status, ""),
            Act::Body(body) => respond(&mut stream, 200, body),
            Act::HangUp => stream.shutdown(Shutdown::Both),
            Act::Proxy(upstream) => {
                let mut upstream = TcpStream::connect(upstream)?;
                upstream.write_all(&head)?;
                io::copy(&mut upstream, &mut stream).map(drop)
            }
        }
    }

    #[test]
    fn a_500_is_retried_and_the_retry_succeeds() {
        let server = server();
        let upstream = server.addr();
        let fake = Fake::start(move |n| match n {
            0 => Act::Status(500),
            _ => Act::Proxy(upstream),
        });
        let via_fake = PageRequest {
            retries: 2,
            ..request(fake.base_url(), TUTORIAL_POST)
        };
        let page = crawl::fetch_page(&via_fake).unwrap();
        let direct = crawl::fetch_page(&request(server.base_url(), TUTORIAL_POST)).unwrap();
        assert_eq!(page, direct);
        assert_eq!(fake.connections(), 2);
        assert_eq!(server.requests_served(), 2);
    }

    #[test]
    fn a_dropped_connection_is_retried_and_the_retry_succeeds() {
        let server = server();
        let upstream = server.addr();
        let fake = Fake::start(move |n| match n {
            0 => Act::HangUp,
            _ => Act::Proxy(upstream),
        });
        let template = PageRequest {
            retries: 1,
            ..request(fake.base_url(), POST_5000_REPOSTS)
        };
        let reposts = crawl::crawl_serial(&template).unwrap();
        assert_eq!(reposts.len(), 2_000);
        assert_eq!(fake.connections(), 11);
    }

    #[test]
    fn a_lasting_503_fails_after_the_configured_retries() {
        let fake = Fake::start(|_| Act::Status(503));
        let failing = PageRequest {
            retries: 2,
            ..request(fake.base_url(), TUTORIAL_POST)
        };
        let error = crawl::fetch_page(&failing).unwrap_err();
        assert_eq!(error.kind(), CrawlErrorKind::Http);
        assert_eq!(error.http_status(), Some(503));
        assert_eq!(error.attempts(), 3);
        assert!(error.is_transient());
        assert_eq!(fake.connections(), 3);
        assert!(error.to_string().ends_with("after 3 attempts"), "{error}");
    }

    #[test]
    fn a_4xx_without_an_error_object_is_not_retried() {
        let fake = Fake::start(|_| Act::Status(404));
        let error = crawl::fetch_page(&request(fake.base_url(), TUTORIAL_POST)).unwrap_err();
        assert_eq!(error.kind(), CrawlErrorKind::Http);
        assert_eq!(error.http_status(), Some(404));
        assert_eq!(error.attempts(), 1);
        assert_eq!(fake.connections(), 1);
    }

    #[test]
    fn a_body_that_is_not_a_page_is_a_decode_error() {
        let fake = Fake::start(|_| Act::Body("<html>maintenance</html>"));
        let error = crawl::fetch_page(&request(fake.base_url(), TUTORIAL_POST)).unwrap_err();
        assert_eq!(error.kind(), CrawlErrorKind::Decode);
        assert_eq!(error.attempts(), 1);
        assert!(
            error
                .to_string()
                .starts_with("unexpected response for page 1"),
            "{error}"
        );
        assert!(
            error.to_string().ends_with(": not JSON: got text/html"),
            "{error}"
        );
    }

    #[test]
    fn a_server_that_never_answers_times_out_without_retrying() {
        // Connections complete in the listen backlog; nobody accepts or answers them.
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let slow = PageRequest {
            timeout_ms: 200,
            retries: 2,
            ..request(
                format!("http://{}", silent.local_addr().unwrap()),
                TUTORIAL_POST,
            )
        };
        let begun = Instant::now();
        let error = crawl::fetch_page(&slow).unwrap_err();
        let took = begun.elapsed();
        assert_eq!(error.kind(), CrawlErrorKind::Timeout);
        assert_eq!(error.attempts(), 1, "a timeout is not retried");
        assert!(
            error.to_string().starts_with("no response within 200 ms"),
            "{error}"
        );
        // One attempt of 200 ms; the bound is generous.
        assert!(took < Duration::from_secs(20), "took {took:?}");
        silent.set_nonblocking(true).unwrap();
        let attempts = std::iter::from_fn(|| silent.accept().ok()).count();
        assert_eq!(attempts, 1);
    }

    #[test]
    fn a_refused_connection_fails_after_the_retries() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // The listener is gone: nothing listens on the port.
        let refused = PageRequest {
            retries: 1,
            ..request(format!("http://127.0.0.1:{port}"), TUTORIAL_POST)
        };
        let error = crawl::fetch_page(&refused).unwrap_err();
        assert_eq!(error.kind(), CrawlErrorKind::Io);
        assert_eq!(error.attempts(), 2);
    }

    #[test]
    fn an_api_base_that_is_not_a_url_fails_at_once() {
        let error = crawl::fetch_page(&request("not a url".to_owned(), TUTORIAL_POST)).unwrap_err();
        assert_eq!(error.kind(), CrawlErrorKind::InvalidUrl);
        assert_eq!(error.attempts(), 1);
        assert!(error.to_string().starts_with("invalid api base"), "{error}");
    }
}
