//! `procpool reposts` as a user runs it, against the embedded server (in this test process)
//! and against small hostile servers: silent, slow, HTML, 500, rate-limited, dropping
//! connections. Each test makes this process a child subreaper, so that a pool worker that
//! outlived its `procpool` would become a child of the test, and ends by checking that none
//! is left.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;
use procpool_cli::api::dataset::{
    POST_0_REPOSTS, POST_199_REPOSTS, POST_201_REPOSTS, TUTORIAL_POST,
};
use procpool_cli::api::{Server, ServerConfig};
use serde_json::Value;
use tests_integration::{assert_no_children, workers_of};

/// A generous bound on any one `procpool` run in these tests.
const RUN_BOUND: Duration = Duration::from_secs(120);

/// Makes this process the reaper of its orphaned descendants, so that a worker left behind
/// by a `procpool` run shows up in [`assert_no_children`].
fn adopt_orphans() {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer and touches no memory.
    let done = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(done, 0, "prctl(PR_SET_CHILD_SUBREAPER)");
}

fn procpool() -> Command {
    let mut command = Command::cargo_bin("procpool").expect("the procpool binary is built");
    command.env_remove("RUST_LOG");
    command
}

/// Runs `procpool args`, bounded by [`RUN_BOUND`], and checks that nothing is left behind.
fn run(args: &[&str]) -> Output {
    let mut child = procpool()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("procpool starts");
    let stdout = read_all(child.stdout.take().unwrap());
    let stderr = read_all(child.stderr.take().unwrap());
    let status = wait_within(&mut child, RUN_BOUND);
    let output = Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    };
    assert_no_children();
    output
}

fn read_all(mut from: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = from.read_to_end(&mut bytes);
        bytes
    })
}

fn wait_within(child: &mut std::process::Child, bound: Duration) -> std::process::ExitStatus {
    let begun = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if begun.elapsed() > bound {
            let _ = child.kill();
            let _ = child.wait();
            panic!("procpool ran past {bound:?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("procpool exited, not killed")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn json(output: &Output) -> Value {
    let text = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("procpool-reposts-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn file(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The ids of a JSON-lines file, checking that every line is a whole repost.
fn ids_in(path: impl AsRef<Path>) -> Vec<u64> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "whole lines only");
    text.lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            value["id"].as_u64().expect("a numeric id")
        })
        .collect()
}

/// Newest first, each once.
fn assert_in_order(ids: &[u64]) {
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first");
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());
}

fn server_with(config: ServerConfig) -> Server {
    Server::start(config).expect("the server starts")
}

fn server() -> Server {
    server_with(ServerConfig {
        latency: Duration::from_millis(2),
        ..ServerConfig::default()
    })
}

/// What a [`Fake`] does with one connection.
#[derive(Clone, Copy, Debug)]
enum Act {
    /// Passes the request to this server and its answer back.
    Proxy(SocketAddr),
    /// Answers with this status, no body.
    Status(u16),
    /// Answers 200 with an HTML page.
    Html,
    /// Reads the request and closes the connection without answering.
    HangUp,
    /// Reads the request and never answers (the connection is held until the fake is
    /// dropped).
    Silent,
    /// By the page asked for: page 1 as `Proxy`, page `html` as `Html`, any other as
    /// `Silent`.
    Paged { upstream: SocketAddr, html: u32 },
}

/// A small HTTP server on 127.0.0.1 that treats its n-th connection (from 0) as `plan(n)`
/// says, each on its own thread.
struct Fake {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    stopping: Arc<AtomicBool>,
    held: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<JoinHandle<()>>,
}

impl Fake {
    fn start(plan: impl Fn(usize) -> Act + Send + Sync + 'static) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let stopping = Arc::new(AtomicBool::new(false));
        let held = Arc::new(Mutex::new(Vec::new()));
        let accept = thread::spawn({
            let (connections, stopping, held) = (
                Arc::clone(&connections),
                Arc::clone(&stopping),
                Arc::clone(&held),
            );
            let plan = Arc::new(plan);
            move || {
                let mut served = Vec::new();
                for stream in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let act = plan(connections.fetch_add(1, Ordering::SeqCst));
                    let held = Arc::clone(&held);
                    served.push(thread::spawn(move || {
                        let _ = serve(stream, act, &held);
                    }));
                }
                for thread in served {
                    let _ = thread.join();
                }
            }
        });
        Fake {
            addr,
            connections,
            stopping,
            held,
            accept: Some(accept),
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
        self.held.lock().unwrap().clear();
        let _ = TcpStream::connect(self.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn read_head(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    Ok(head)
}

/// The `page` parameter of a request head.
fn page_asked(head: &[u8]) -> Option<u32> {
    let head = std::str::from_utf8(head).ok()?;
    let query = head.split_whitespace().nth(1)?.split_once('?')?.1;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("page="))?
        .parse()
        .ok()
}

fn serve(mut stream: TcpStream, act: Act, held: &Mutex<Vec<TcpStream>>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let head = read_head(&mut stream)?;
    let act = match act {
        Act::Paged { upstream, html } => match page_asked(&head) {
            Some(1) => Act::Proxy(upstream),
            Some(page) if page == html => Act::Html,
            _ => Act::Silent,
        },
        act => act,
    };
    let respond = |stream: &mut TcpStream, status: u16, kind: &str, body: &str| {
        write!(
            stream,
            "HTTP/1.1 {status} Whatever\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )
    };
    match act {
        Act::Proxy(upstream) => {
            let mut upstream = TcpStream::connect(upstream)?;
            upstream.write_all(&head)?;
            std::io::copy(&mut upstream, &mut stream).map(drop)
        }
        Act::Status(status) => respond(&mut stream, status, "text/plain", ""),
        Act::Html => respond(
            &mut stream,
            200,
            "text/html; charset=utf-8",
            "<html><body>down for maintenance</body></html>",
        ),
        Act::HangUp => stream.shutdown(std::net::Shutdown::Both),
        Act::Silent => {
            held.lock().unwrap().push(stream);
            Ok(())
        }
        Act::Paged { .. } => unreachable!("resolved by the page above"),
    }
}

mod fail_fast {
    use super::*;

    const PARALLEL: [&str; 5] = ["apply_async", "map", "map_async", "imap", "imap_unordered"];

    #[test]
    fn a_bad_token_fails_on_page_1_alone_with_every_method() {
        adopt_orphans();
        let server = server();
        let mut served = 0;
        for method in ["serial", "apply"].into_iter().chain(PARALLEL) {
            let output = run(&[
                "reposts",
                "--api-base",
                &server.base_url(),
                "--token",
                "expired",
                "--method",
                method,
                "--processes",
                "2",
            ]);
            assert_eq!(code(&output), 1, "{method}: {}", stderr(&output));
            let text = stderr(&output);
            assert!(
                text.contains("api error 21332 for page 1 of post 3664072912104801: invalid_access_token (check --token)"),
                "{method}: {text}"
            );
            assert!(!text.contains("expired"), "the token stays secret: {text}");
            served += 1;
            assert_eq!(server.requests_served(), served, "{method}: one request");
        }
    }

    /// Page 1 comes; then page 2 is not JSON while every other page is asked for and never
    /// answered, with no timeout: a map that waited for every page would never end. It ends
    /// at page 2's failure, the requests in flight cancelled, and page 1 stays written.
    #[test]
    fn a_map_stops_at_a_fatal_page_while_other_pages_stall() {
        adopt_orphans();
        let server = server();
        let upstream = server.addr();
        for method in ["map", "map_async"] {
            let fake = Fake::start(move |_| Act::Paged { upstream, html: 2 });
            let dir = TempDir::new(&format!("stall-{method}"));
            let out = dir.file("out.jsonl");
            let output = run(&[
                "reposts",
                "--api-base",
                &fake.base_url(),
                "--method",
                method,
                "--processes",
                "2",
                "--timeout",
                "0",
                "--out",
                &out,
            ]);
            assert_eq!(code(&output), 1, "{method}: {}", stderr(&output));
            let text = stderr(&output);
            assert!(
                text.contains("unexpected response for page 2 of post 3664072912104801")
                    && text.trim_end().ends_with("not JSON: got text/html"),
                "{method}: {text}"
            );
            assert!(
                text.contains("(wrote 200 reposts, pages 1-1 of 10, to"),
                "{method}: {text}"
            );
            let ids = ids_in(&out);
            assert_eq!(ids.len(), 200, "{method}: page 1 is kept");
            assert_in_order(&ids);
            assert!(
                fake.connections() >= 3,
                "{method}: other pages were asked for"
            );
        }
    }

    #[test]
    fn a_silent_server_fails_at_the_timeout_without_retrying() {
        adopt_orphans();
        let fake = Fake::start(|_| Act::Silent);
        let output = run(&[
            "reposts",
            "--api-base",
            &fake.base_url(),
            "--timeout",
            "300ms",
            "--retries",
            "3",
            "--method",
            "serial",
        ]);
        assert_eq!(code(&output), 1);
        let text = stderr(&output);
        assert!(
            text.contains("no response within 300 ms for page 1 of post"),
            "{text}"
        );
        assert_eq!(fake.connections(), 1, "a timeout is not retried");
    }

    #[test]
    fn an_html_page_is_named_for_what_it_is() {
        adopt_orphans();
        let fake = Fake::start(|_| Act::Html);
        let output = run(&[
            "reposts",
            "--api-base",
            &fake.base_url(),
            "--method",
            "apply_async",
            "--processes",
            "2",
        ]);
        assert_eq!(code(&output), 1);
        let text = stderr(&output);
        assert!(
            text.contains("unexpected response for page 1 of post 3664072912104801")
                && text.trim_end().ends_with("not JSON: got text/html"),
            "{text}"
        );
        assert_eq!(fake.connections(), 1, "not retried");
    }

    /// Page 1 comes, the next connection hangs up, the one after answers 500, then every
    /// request goes through: the crawl completes with the retries.
    #[test]
    fn dropped_connections_and_500s_are_retried() {
        adopt_orphans();
        let server = server();
        let upstream = server.addr();
        let fake = Fake::start(move |n| match n {
            1 => Act::HangUp,
            2 => Act::Status(500),
            _ => Act::Proxy(upstream),
        });
        let dir = TempDir::new("retried");
        let out = dir.file("out.jsonl");
        let output = run(&[
            "reposts",
            "--api-base",
            &fake.base_url(),
            "--mid",
            &POST_201_REPOSTS.to_string(),
            "--method",
            "serial",
            "--retries",
            "2",
            "--out",
            &out,
            "-v",
        ]);
        assert_eq!(code(&output), 0, "{}", stderr(&output));
        let ids = ids_in(&out);
        assert_eq!(ids.len(), 201);
        assert_in_order(&ids);
        assert_eq!(fake.connections(), 4, "page 1, then page 2 three times");
        let text = stderr(&output);
        assert_eq!(
            text.matches("transient failure, retrying").count(),
            2,
            "{text}"
        );
    }

    #[test]
    fn a_lasting_500_fails_after_the_retries() {
        adopt_orphans();
        let fake = Fake::start(|_| Act::Status(503));
        let output = run(&[
            "reposts",
            "--api-base",
            &fake.base_url(),
            "--method",
            "serial",
            "--retries",
            "2",
        ]);
        assert_eq!(code(&output), 1);
        assert!(
            stderr(&output).contains("http status 503 for page 1 of post 3664072912104801"),
            "{}",
            stderr(&output)
        );
        assert!(stderr(&output).trim_end().ends_with("after 3 attempts"));
        assert_eq!(fake.connections(), 3);
    }
}

mod output {
    use super::*;

    #[test]
    fn an_unwritable_out_fails_before_any_request() {
        adopt_orphans();
        let server = server();
        let output = run(&[
            "reposts",
            "--api-base",
            &server.base_url(),
            "--out",
            "/nonexistent-directory/reposts.jsonl",
        ]);
        assert_eq!(code(&output), 1);
        assert!(
            stderr(&output).starts_with(
                "procpool: cannot create --out /nonexistent-directory/reposts.jsonl: "
            ),
            "{}",
            stderr(&output)
        );
        assert_eq!(server.requests_served(), 0);
    }

    #[test]
    fn out_dash_is_standard_output_and_the_summary_goes_to_standard_error() {
        adopt_orphans();
        let server = server();
        let output = run(&[
            "reposts",
            "--api-base",
            &server.base_url(),
            "--mid",
            &POST_201_REPOSTS.to_string(),
            "--out",
            "-",
            "--json",
        ]);
        assert_eq!(code(&output), 0, "{}", stderr(&output));
        let text = String::from_utf8(output.stdout.clone()).unwrap();
        let ids: Vec<u64> = text
            .lines()
            .map(|line| {
                serde_json::from_str::<Value>(line).unwrap()["id"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(ids.len(), 201);
        assert_in_order(&ids);
        assert!(!Path::new("-").exists(), "no file called -");
        let summary: Value = serde_json::from_str(stderr(&output).trim()).unwrap();
        assert_eq!(summary["reposts_written"], 201);
        assert_eq!(summary["complete"], true);
    }

    /// A rate limit of 3 requests stops the crawl at page 4 (after its retries); the file
    /// keeps pages 1-3, and a rerun with --resume fetches pages 4-10 only.
    #[test]
    fn a_rate_limit_keeps_the_pages_fetched_and_resume_fetches_the_rest() {
        adopt_orphans();
        let limited = server_with(ServerConfig {
            latency: Duration::from_millis(2),
            rate_limit: Some(3),
            ..ServerConfig::default()
        });
        let dir = TempDir::new("resume");
        let out = dir.file("out.jsonl");
        let output = run(&[
            "reposts",
            "--api-base",
            &limited.base_url(),
            "--method",
            "apply",
            "--processes",
            "2",
            "--retries",
            "1",
            "--out",
            &out,
            "--json",
        ]);
        assert_eq!(code(&output), 1);
        let text = stderr(&output);
        assert!(
            text.contains("(wrote 600 reposts, pages 1-3 of 10, to ")
                && text.contains("--resume fetches the rest")
                && text.contains("api error 10023 for page 4 of post 3664072912104801"),
            "{text}"
        );
        assert!(text.contains("after 2 attempts"), "retried once: {text}");
        let summary = json(&output);
        assert_eq!(summary["complete"], false);
        assert_eq!(summary["stopped_by"], "error");
        assert_eq!(summary["reposts_written"], 600);
        assert_eq!(ids_in(&out).len(), 600);
        // A last line cut short (as by a crash mid-write) is dropped on resume.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&out)
            .unwrap()
            .write_all(b"{\"id\": 12")
            .unwrap();

        let server = server();
        let output = run(&[
            "reposts",
            "--api-base",
            &server.base_url(),
            "--out",
            &out,
            "--resume",
            "--json",
        ]);
        assert_eq!(code(&output), 0, "{}", stderr(&output));
        let summary = json(&output);
        assert_eq!(summary["first_page"], 4);
        assert_eq!(summary["resumed_reposts"], 600);
        assert_eq!(summary["reposts_written"], 1_400);
        assert_eq!(server.requests_served(), 7, "pages 4 to 10");
        let ids = ids_in(&out);
        assert_eq!(ids.len(), 2_000);
        assert_in_order(&ids);
    }

    #[test]
    fn resume_refuses_a_file_of_another_post() {
        adopt_orphans();
        let server = server();
        let dir = TempDir::new("other-post");
        let out = dir.file("out.jsonl");
        let first = run(&[
            "reposts",
            "--api-base",
            &server.base_url(),
            "--mid",
            &POST_201_REPOSTS.to_string(),
            "--out",
            &out,
        ]);
        assert_eq!(code(&first), 0, "{}", stderr(&first));
        let output = run(&[
            "reposts",
            "--api-base",
            &server.base_url(),
            "--out",
            &out,
            "--resume",
        ]);
        assert_eq!(code(&output), 1);
        assert!(
            stderr(&output).contains(&format!(
                "line 1 is a repost of post {POST_201_REPOSTS}, not of post {TUTORIAL_POST}"
            )),
            "{}",
            stderr(&output)
        );
        assert_eq!(ids_in(&out).len(), 201, "the file is left as it was");
    }
}

mod pages_asked_for {
    use super::*;

    fn requests(mid: u64, method: &str, extra: &[&str]) -> u64 {
        let server = server();
        let mid = mid.to_string();
        let base = server.base_url();
        let mut args = vec![
            "reposts",
            "--api-base",
            &base,
            "--mid",
            &mid,
            "--method",
            method,
            "--processes",
            "3",
            "--json",
        ];
        args.extend_from_slice(extra);
        let output = run(&args);
        assert_eq!(code(&output), 0, "{}", stderr(&output));
        server.requests_served()
    }

    #[test]
    fn no_request_past_the_total_once_it_is_known() {
        adopt_orphans();
        for method in ["apply_async", "map", "imap_unordered"] {
            assert_eq!(requests(POST_0_REPOSTS, method, &[]), 1, "{method}");
            assert_eq!(requests(POST_199_REPOSTS, method, &[]), 1, "{method}");
            assert_eq!(requests(POST_201_REPOSTS, method, &[]), 2, "{method}");
            assert_eq!(requests(TUTORIAL_POST, method, &[]), 10, "{method}");
        }
    }

    #[test]
    fn all_at_once_asks_for_ten_pages_as_the_tutorial_did() {
        adopt_orphans();
        assert_eq!(
            requests(POST_199_REPOSTS, "apply_async", &["--all-at-once"]),
            10
        );
    }
}

mod signals {
    use super::*;

    /// Page 1 and the next two connections are served; every later one hangs, so the crawl
    /// is mid-way, for certain, when the signal comes.
    fn interrupted(signal: i32, expected_code: i32, name: &str) {
        adopt_orphans();
        let server = server();
        let upstream = server.addr();
        let fake = Fake::start(move |n| {
            if n < 3 {
                Act::Proxy(upstream)
            } else {
                Act::Silent
            }
        });
        let dir = TempDir::new(name);
        let out = dir.file("out.jsonl");
        let mut child = procpool()
            .args([
                "reposts",
                "--api-base",
                &fake.base_url(),
                "--method",
                "apply_async",
                "--processes",
                "2",
                "--timeout",
                "600s",
                "--out",
                &out,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = read_all(child.stderr.take().unwrap());
        // Wait (observing, not synchronising) for page 1 to be in the file.
        let begun = Instant::now();
        while std::fs::read_to_string(&out).map_or(0, |t| t.lines().count()) < 200 {
            assert!(begun.elapsed() < RUN_BOUND, "page 1 is written");
            assert!(child.try_wait().unwrap().is_none(), "procpool still runs");
            thread::sleep(Duration::from_millis(10));
        }
        let workers = workers_of(child.id());
        assert_eq!(workers.len(), 2, "the pool's workers");
        // SAFETY: kill touches no memory; the child is ours and not yet reaped.
        assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
        let status = wait_within(&mut child, RUN_BOUND);
        let text = String::from_utf8(stderr.join().unwrap()).unwrap();
        assert_eq!(status.code(), Some(expected_code), "{text}");
        assert!(text.contains(&format!("interrupted by {name}")), "{text}");
        let ids = ids_in(&out);
        assert!(
            ids.len() >= 200 && ids.len().is_multiple_of(200),
            "whole pages: {}",
            ids.len()
        );
        assert_in_order(&ids);
        assert!(
            text.contains(&format!("(wrote {} reposts, pages 1-", ids.len())),
            "{text}"
        );
        assert_no_children();
    }

    #[test]
    fn sigint_mid_crawl_keeps_whole_pages_and_exits_130() {
        interrupted(libc::SIGINT, 130, "SIGINT");
    }

    #[test]
    fn sigterm_mid_crawl_keeps_whole_pages_and_exits_143() {
        interrupted(libc::SIGTERM, 143, "SIGTERM");
    }
}

mod pipes_and_logs {
    use super::*;

    /// A reader that reads one line and goes away.
    fn first_line_then_close(args: &[&str]) -> (i32, String, String) {
        let mut child = procpool()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = read_all(child.stderr.take().unwrap());
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // The pipe's reader is gone now.
        let status = wait_within(&mut child, RUN_BOUND);
        let text = String::from_utf8(stderr.join().unwrap()).unwrap();
        (status.code().expect("exited, not killed"), line, text)
    }

    #[test]
    fn a_closed_pipe_ends_the_program_quietly() {
        adopt_orphans();
        let (code, line, text) =
            first_line_then_close(&["seed", "--runs", "1", "--latency-ms", "2"]);
        assert!(line.starts_with("procpool seed:"), "{line}");
        assert_eq!(code, 0, "{text}");
        assert!(text.is_empty(), "nothing on stderr: {text}");
        let server = server();
        let base = server.base_url();
        let (code, line, text) = first_line_then_close(&[
            "reposts",
            "--api-base",
            &base,
            "--out",
            "-",
            "--method",
            "imap",
            "--processes",
            "2",
        ]);
        assert!(line.starts_with("{\"id\":"), "{line}");
        assert_eq!(code, 0, "{text}");
        assert!(
            !text.contains("panicked") && !text.contains("Broken pipe"),
            "{text}"
        );
        assert_no_children();
    }

    #[test]
    fn v_logs_requests_and_workers_and_rust_log_decides_instead() {
        adopt_orphans();
        let server = server();
        let base = server.base_url();
        let mid = POST_201_REPOSTS.to_string();
        let args = [
            "reposts",
            "--api-base",
            &base,
            "--mid",
            &mid,
            "--method",
            "apply_async",
            "--processes",
            "2",
        ];
        let quiet = run(&args);
        assert_eq!(code(&quiet), 0);
        assert!(stderr(&quiet).is_empty(), "{}", stderr(&quiet));
        let output = run(&[&["-v"][..], &args].concat());
        let text = stderr(&output);
        assert!(
            text.contains("started a pool of 2 workers: pids ["),
            "{text}"
        );
        assert!(text.contains("the pool's 2 workers ended"), "{text}");
        assert!(!text.contains("requesting a page"), "{text}");
        let output = run(&[&["-vv"][..], &args].concat());
        let text = stderr(&output);
        assert_eq!(text.matches("requesting a page").count(), 2, "{text}");
        // The pool's own event for each worker, and each worker's first line.
        assert_eq!(text.matches("worker started").count(), 2, "{text}");
        assert_eq!(text.matches("worker logging started").count(), 2, "{text}");
        let mut child = procpool()
            .args(args)
            .env("RUST_LOG", "procpool_cli=debug")
            .output()
            .unwrap();
        assert_eq!(child.status.code(), Some(0));
        let text = String::from_utf8(std::mem::take(&mut child.stderr)).unwrap();
        assert!(text.contains("requesting a page"), "{text}");
        assert_no_children();
    }
}

mod progress {
    use std::os::fd::{FromRawFd, OwnedFd};

    use super::*;

    /// Runs `procpool args` with standard error on a new terminal: what it drew there.
    fn on_a_terminal(args: &[&str]) -> (i32, String) {
        let (mut master, mut slave) = (-1, -1);
        // SAFETY: openpty writes two descriptors into the integers given; the name, termios
        // and window size pointers may be null.
        let opened = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(opened, 0, "openpty");
        // SAFETY: openpty succeeded, so both are open descriptors that nothing else owns.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let mut child = procpool()
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::from(slave))
            .spawn()
            .unwrap();
        // The terminal's reader ends with an error (EIO) once no process holds the slave.
        let drawn = read_all(std::fs::File::from(master));
        let status = wait_within(&mut child, RUN_BOUND);
        let text = String::from_utf8_lossy(&drawn.join().unwrap()).into_owned();
        (status.code().expect("exited, not killed"), text)
    }

    #[test]
    fn bars_with_rate_and_eta_are_drawn_on_a_terminal_unless_quiet_or_json() {
        adopt_orphans();
        let server = server();
        let base = server.base_url();
        let crawl = ["reposts", "--api-base", &base, "--method", "serial"];
        let (code, drawn) = on_a_terminal(&crawl);
        assert_eq!(code, 0, "{drawn}");
        assert!(drawn.contains("/10 pages ("), "{drawn}");
        assert!(drawn.contains("/s, ") && drawn.contains("eta "), "{drawn}");
        let (_, drawn) = on_a_terminal(&[&crawl[..], &["--quiet"]].concat());
        assert!(drawn.is_empty(), "{drawn}");
        let (_, drawn) = on_a_terminal(&[&crawl[..], &["--json"]].concat());
        assert!(drawn.is_empty(), "{drawn}");
        let (code, drawn) =
            on_a_terminal(&["factorial", "--n", "300", "--runs", "2", "--processes", "2"]);
        assert_eq!(code, 0, "{drawn}");
        assert!(drawn.contains("/600 items ("), "{drawn}");
        assert_no_children();
    }
}
