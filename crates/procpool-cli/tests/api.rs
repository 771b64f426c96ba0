//! The embedded repost-timeline server, over real HTTP on 127.0.0.1.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use procpool_cli::api::dataset::{
    self, POST_0_REPOSTS, POST_1_REPOST, POST_201_REPOSTS, POST_5000_REPOSTS, POSTS, TUTORIAL_POST,
};
use procpool_cli::api::{DEFAULT_TOKEN, Server, ServerConfig, TIMELINE_PATH};
use serde_json::Value;

/// A server that answers at once.
fn server() -> Server {
    server_with(ServerConfig {
        latency: Duration::ZERO,
        ..ServerConfig::default()
    })
}

fn server_with(config: ServerConfig) -> Server {
    Server::start(config).expect("the server starts")
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// `GET path?query`: the status and the JSON body.
fn get_path(server: &Server, path: &str, query: &str) -> (u16, Value) {
    let url = format!("{}{path}?{query}", server.base_url());
    let mut response = agent().get(&url).call().expect("the server answers");
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().expect("a body");
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status, json)
}

/// `GET` the timeline with `query` and the default token.
fn get(server: &Server, query: &str) -> (u16, Value) {
    get_path(
        server,
        TIMELINE_PATH,
        &format!("access_token={DEFAULT_TOKEN}&{query}"),
    )
}

/// A successful page's repost ids.
fn ids(response: &(u16, Value)) -> Vec<u64> {
    assert_eq!(response.0, 200, "{}", response.1);
    response.1["reposts"]
        .as_array()
        .expect("reposts is an array")
        .iter()
        .map(|repost| repost["id"].as_u64().expect("a numeric id"))
        .collect()
}

fn assert_error(response: (u16, Value), status: u16, code: u64, message: &str, path: &str) {
    let (actual_status, body) = response;
    assert_eq!(actual_status, status, "{body}");
    assert_eq!(body["error_code"], code, "{body}");
    assert_eq!(body["error"], message, "{body}");
    assert_eq!(body["request"], path, "{body}");
}

fn assert_param_error(response: (u16, Value)) {
    assert_error(
        response,
        400,
        10008,
        "param error, see doc for more info.",
        TIMELINE_PATH,
    );
}

/// `"Tue May 31 17:46:55 +0800 2011"`
fn looks_like_api_time(text: &str) -> bool {
    let parts: Vec<&str> = text.split(' ').collect();
    parts.len() == 6
        && parts[0].len() == 3
        && parts[1].len() == 3
        && parts[2].len() == 2
        && parts[3].len() == 8
        && parts[3].matches(':').count() == 2
        && parts[4] == "+0800"
        && parts[5].len() == 4
}

fn assert_status_shape(status: &Value) {
    let id = status["id"].as_u64().expect("id is a number");
    assert_eq!(status["idstr"], id.to_string());
    assert!(status["mid"].is_string());
    assert!(
        looks_like_api_time(status["created_at"].as_str().unwrap()),
        "{status}"
    );
    assert!(status["text"].is_string());
    assert!(status["source"].is_string());
    assert!(status["reposts_count"].is_u64());
    assert!(status["comments_count"].is_u64());
    let user = &status["user"];
    let user_id = user["id"].as_u64().expect("user id is a number");
    assert_eq!(user["idstr"], user_id.to_string());
    assert!(!user["screen_name"].as_str().unwrap().is_empty());
    assert!(user["name"].is_string());
}

mod pages {
    use super::*;

    #[test]
    fn a_page_has_the_public_shape() {
        let server = server();
        let (status, body) = get(&server, &format!("id={TUTORIAL_POST}&count=200&page=1"));
        assert_eq!(status, 200);
        assert_eq!(body["total_number"], 2_731);
        assert_eq!(body["hasvisible"], false);
        assert_eq!(body["previous_cursor"], 0);
        let reposts = body["reposts"].as_array().unwrap();
        assert_eq!(reposts.len(), 200);
        for repost in reposts {
            assert_status_shape(repost);
            let original = &repost["retweeted_status"];
            assert_status_shape(original);
            assert_eq!(original["id"], TUTORIAL_POST);
            assert_eq!(original["reposts_count"], 2_731);
            assert!(original.get("retweeted_status").is_none());
        }
        assert_eq!(
            body["next_cursor"].as_u64(),
            dataset::repost_id(TUTORIAL_POST, 200)
        );
    }

    #[test]
    fn count_defaults_to_20_and_page_to_1() {
        let server = server();
        let default = get(&server, &format!("id={TUTORIAL_POST}"));
        let explicit = get(&server, &format!("id={TUTORIAL_POST}&count=20&page=1"));
        assert_eq!(ids(&default).len(), 20);
        assert_eq!(ids(&default), ids(&explicit));
        assert_eq!(
            ids(&default)[0],
            dataset::repost_id(TUTORIAL_POST, 0).unwrap()
        );
    }

    #[test]
    fn count_above_200_is_clamped_to_200() {
        let server = server();
        let asked = get(&server, &format!("id={TUTORIAL_POST}&count=1000"));
        let capped = get(&server, &format!("id={TUTORIAL_POST}&count=200"));
        assert_eq!(ids(&asked).len(), 200);
        assert_eq!(ids(&asked), ids(&capped));
        let second = get(&server, &format!("id={TUTORIAL_POST}&count=201&page=2"));
        assert_eq!(
            ids(&second)[0],
            dataset::repost_id(TUTORIAL_POST, 200).unwrap()
        );
    }

    #[test]
    fn ten_pages_of_200_reach_the_newest_2000_once_each() {
        let server = server();
        for post in [TUTORIAL_POST, POST_5000_REPOSTS] {
            let mut all = Vec::new();
            for page in 1..=10 {
                let response = get(&server, &format!("id={post}&count=200&page={page}"));
                assert_eq!(ids(&response).len(), 200, "post {post} page {page}");
                all.extend(ids(&response));
            }
            let expected: Vec<u64> = (0..2_000)
                .map(|index| dataset::repost_id(post, index).unwrap())
                .collect();
            assert_eq!(all, expected);
            assert!(all.windows(2).all(|w| w[0] > w[1]), "newest first");
        }
    }

    #[test]
    fn pages_past_the_2000_cap_are_empty_with_the_same_total() {
        let server = server();
        for (count, last_full, last) in [(200, 10, 11), (50, 40, 41)] {
            let full = get(
                &server,
                &format!("id={TUTORIAL_POST}&count={count}&page={last_full}"),
            );
            assert_eq!(ids(&full).len(), count);
            assert_eq!(full.1["next_cursor"], 0);
            let past = get(
                &server,
                &format!("id={TUTORIAL_POST}&count={count}&page={last}"),
            );
            assert_eq!(ids(&past), Vec::<u64>::new());
            assert_eq!(past.1["total_number"], 2_731);
            assert_eq!(past.1["next_cursor"], 0);
        }
        // 2,000 = 285 pages of 7 + 5: the cap cuts the last page short.
        let cut = get(&server, &format!("id={TUTORIAL_POST}&count=7&page=286"));
        assert_eq!(ids(&cut).len(), 5);
        let huge = get(
            &server,
            &format!("id={TUTORIAL_POST}&page=18446744073709551615"),
        );
        assert!(ids(&huge).is_empty());
    }

    #[test]
    fn pages_past_the_total_are_empty_with_the_same_total() {
        let server = server();
        let second = get(&server, &format!("id={POST_201_REPOSTS}&count=200&page=2"));
        assert_eq!(ids(&second).len(), 1);
        assert_eq!(second.1["next_cursor"], 0);
        let third = get(&server, &format!("id={POST_201_REPOSTS}&count=200&page=3"));
        assert!(ids(&third).is_empty());
        assert_eq!(third.1["total_number"], 201);
        let none = get(&server, &format!("id={POST_0_REPOSTS}&count=200"));
        assert!(ids(&none).is_empty());
        assert_eq!(none.1["total_number"], 0);
        let one = get(&server, &format!("id={POST_1_REPOST}&count=200"));
        assert_eq!(ids(&one).len(), 1);
    }

    #[test]
    fn every_post_reports_its_total() {
        let server = server();
        for &(post, total) in POSTS {
            let (status, body) = get(&server, &format!("id={post}&count=200"));
            assert_eq!(status, 200);
            assert_eq!(body["total_number"], total);
            let expected = total.min(200) as usize;
            assert_eq!(body["reposts"].as_array().unwrap().len(), expected);
        }
    }

    #[test]
    fn repost_ids_are_unique_across_posts() {
        let server = server();
        let mut seen = HashSet::new();
        for &(post, _) in POSTS {
            for id in ids(&get(&server, &format!("id={post}&count=200"))) {
                assert!(seen.insert(id), "id {id} repeats");
            }
        }
    }

    #[test]
    fn filter_and_unknown_parameters_are_ignored() {
        let server = server();
        let plain = get(&server, &format!("id={TUTORIAL_POST}&count=30&page=2"));
        let extra = get(
            &server,
            &format!("id={TUTORIAL_POST}&count=30&page=2&since_id=0&filter_by_author=1&x=y"),
        );
        assert_eq!(plain, extra);
    }

    #[test]
    fn a_client_paging_by_max_id_reaches_the_end_without_looping() {
        let server = server();
        let mut seen = Vec::new();
        let mut max_id = 0;
        for _ in 0..20 {
            let response = get(
                &server,
                &format!("id={TUTORIAL_POST}&count=200&max_id={max_id}"),
            );
            seen.extend(ids(&response));
            max_id = response.1["next_cursor"].as_u64().unwrap();
            if max_id == 0 {
                break;
            }
        }
        assert_eq!(max_id, 0, "the cursor reaches 0");
        assert_eq!(seen.len(), 2_000);
        assert_eq!(
            seen.iter().collect::<HashSet<_>>().len(),
            2_000,
            "no page twice"
        );
        let newest = seen[0];
        let newer = get(&server, &format!("id={TUTORIAL_POST}&since_id={}", seen[5]));
        assert_eq!(ids(&newer), seen[..5]);
        assert_eq!(ids(&newer)[0], newest);
        assert_param_error(get(&server, &format!("id={TUTORIAL_POST}&max_id=x")));
    }

    #[test]
    fn answers_are_deterministic_across_servers() {
        let query = format!("id={POST_5000_REPOSTS}&count=200&page=7");
        assert_eq!(get(&server(), &query), get(&server(), &query));
    }
}

mod errors {
    use super::*;

    #[test]
    fn a_missing_or_unknown_token_is_21332() {
        let server = server();
        let query = format!("id={TUTORIAL_POST}");
        for response in [
            get_path(&server, TIMELINE_PATH, &query),
            get_path(&server, TIMELINE_PATH, &format!("{query}&access_token=")),
            get_path(
                &server,
                TIMELINE_PATH,
                &format!("{query}&access_token=nope"),
            ),
        ] {
            assert_error(response, 401, 21332, "invalid_access_token", TIMELINE_PATH);
        }
    }

    #[test]
    fn only_the_configured_tokens_are_accepted() {
        let server = server_with(ServerConfig {
            latency: Duration::ZERO,
            tokens: vec!["alpha".to_owned(), "beta".to_owned()],
            ..ServerConfig::default()
        });
        for token in ["alpha", "beta"] {
            let (status, _) = get_path(
                &server,
                TIMELINE_PATH,
                &format!("id={TUTORIAL_POST}&access_token={token}"),
            );
            assert_eq!(status, 200);
        }
        assert_error(
            get(&server, &format!("id={TUTORIAL_POST}")),
            401,
            21332,
            "invalid_access_token",
            TIMELINE_PATH,
        );
    }

    #[test]
    fn an_unknown_post_is_20101() {
        let server = server();
        assert_error(
            get(&server, "id=12345"),
            400,
            20101,
            "target weibo does not exist!",
            TIMELINE_PATH,
        );
    }

    #[test]
    fn a_bad_id_count_or_page_is_10008() {
        let server = server();
        assert_param_error(get(&server, ""));
        assert_param_error(get(&server, "id=abc"));
        assert_param_error(get(&server, "id=-1"));
        for bad in ["0", "-1", "abc", "", "2.5"] {
            assert_param_error(get(&server, &format!("id={TUTORIAL_POST}&count={bad}")));
            assert_param_error(get(&server, &format!("id={TUTORIAL_POST}&page={bad}")));
        }
        // Parameters are checked before the post is looked up.
        assert_param_error(get(&server, "id=12345&count=0"));
    }

    #[test]
    fn the_token_is_checked_before_the_parameters() {
        let server = server();
        assert_error(
            get_path(&server, TIMELINE_PATH, "id=abc&count=0"),
            401,
            21332,
            "invalid_access_token",
            TIMELINE_PATH,
        );
    }

    #[test]
    fn a_token_over_its_rate_limit_gets_10023() {
        let server = server_with(ServerConfig {
            latency: Duration::ZERO,
            tokens: vec![DEFAULT_TOKEN.to_owned(), "other".to_owned()],
            rate_limit: Some(3),
            ..ServerConfig::default()
        });
        let query = format!("id={TUTORIAL_POST}");
        // Every request with a valid token counts, a failed one too.
        assert_param_error(get(&server, "id=abc"));
        for _ in 0..2 {
            assert_eq!(get(&server, &query).0, 200);
        }
        for _ in 0..2 {
            assert_error(
                get(&server, &query),
                403,
                10023,
                "User requests out of rate limit!",
                TIMELINE_PATH,
            );
        }
        // The limit is per token.
        let other = get_path(
            &server,
            TIMELINE_PATH,
            &format!("{query}&access_token=other"),
        );
        assert_eq!(other.0, 200);
    }

    #[test]
    fn an_unknown_path_is_404_with_an_error_object() {
        let server = server();
        assert_error(
            get_path(&server, "/2/statuses/user_timeline.json", "id=1"),
            404,
            10020,
            "request api not found!",
            "/2/statuses/user_timeline.json",
        );
        assert_error(
            get_path(&server, "/", ""),
            404,
            10020,
            "request api not found!",
            "/",
        );
    }

    #[test]
    fn a_method_other_than_get_is_405() {
        let server = server();
        let url = format!(
            "{}{TIMELINE_PATH}?access_token={DEFAULT_TOKEN}",
            server.base_url()
        );
        let mut response = agent().post(&url).send_empty().unwrap();
        assert_eq!(response.status().as_u16(), 405);
        let body: Value =
            serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
        assert_eq!(body["error_code"], 10021);
    }

    #[test]
    fn bytes_that_are_not_http_get_an_error_object() {
        let server = server();
        let mut stream = TcpStream::connect(server.addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream.write_all(b"HELLO THERE\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 400 "), "{response}");
        let body: Value = serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body["error_code"], 10012);
    }
}

mod server {
    use super::*;

    #[test]
    fn counts_the_requests_it_serves() {
        let server = server();
        assert_eq!(server.requests_served(), 0);
        get(&server, &format!("id={TUTORIAL_POST}"));
        get(&server, "id=12345");
        get_path(&server, "/nowhere", "");
        assert_eq!(server.requests_served(), 3);
    }

    #[test]
    fn listens_on_loopback_and_reports_its_url() {
        let server = server();
        assert!(server.addr().ip().is_loopback());
        assert_ne!(server.addr().port(), 0);
        assert_eq!(
            server.base_url(),
            format!("http://127.0.0.1:{}", server.addr().port())
        );
        assert_eq!(server.config().latency, Duration::ZERO);
    }

    #[test]
    fn the_default_config_is_the_tutorial_s() {
        let config = ServerConfig::default();
        assert_eq!(config.port, 0);
        assert_eq!(config.latency, Duration::from_millis(800));
        assert_eq!(config.tokens, [DEFAULT_TOKEN]);
        assert_eq!(config.rate_limit, None);
    }

    #[test]
    fn a_taken_port_is_an_error() {
        let first = server();
        let second = Server::start(ServerConfig {
            port: first.addr().port(),
            ..ServerConfig::default()
        });
        assert!(second.is_err());
    }

    /// Checks concurrency, not speed: serving ten requests one after another would take ten
    /// latencies.
    #[test]
    fn concurrent_requests_overlap_their_latency() {
        const CLIENTS: usize = 10;
        let latency = Duration::from_millis(200);
        let server = server_with(ServerConfig {
            latency,
            ..ServerConfig::default()
        });
        let query = format!("id={TUTORIAL_POST}&count=200");
        let start = Arc::new(Barrier::new(CLIENTS + 1));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|page| {
                let start = Arc::clone(&start);
                let server_url = server.base_url();
                let query = format!("{query}&page={}&access_token={DEFAULT_TOKEN}", page + 1);
                thread::spawn(move || {
                    let url = format!("{server_url}{TIMELINE_PATH}?{query}");
                    start.wait();
                    let begun = Instant::now();
                    let response = agent().get(&url).call().unwrap();
                    assert_eq!(response.status().as_u16(), 200);
                    begun.elapsed()
                })
            })
            .collect();
        start.wait();
        let begun = Instant::now();
        for client in clients {
            let took = client.join().unwrap();
            assert!(
                took >= latency,
                "a request took {took:?}, under the latency"
            );
        }
        let took = begun.elapsed();
        assert!(
            took < latency * 5,
            "{CLIENTS} concurrent requests took {took:?}: they were not served concurrently"
        );
        assert_eq!(server.requests_served(), CLIENTS as u64);
    }

    #[test]
    fn drop_does_not_wait_for_the_latency() {
        let server = server_with(ServerConfig {
            latency: Duration::from_secs(120),
            ..ServerConfig::default()
        });
        let mut stream = TcpStream::connect(server.addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let request = format!(
            "GET {TIMELINE_PATH}?id={TUTORIAL_POST}&access_token={DEFAULT_TOKEN} HTTP/1.1\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).unwrap();
        let begun = Instant::now();
        drop(server);
        assert!(
            begun.elapsed() < Duration::from_secs(30),
            "drop took {:?}",
            begun.elapsed()
        );
        // The request in flight gets no response: the connection closes (or resets).
        let mut response = Vec::new();
        let read = stream.read_to_end(&mut response);
        assert!(read.is_err() || response.is_empty(), "got {response:?}");
    }

    #[test]
    fn drop_does_not_wait_for_an_idle_connection() {
        let server = server();
        let idle = TcpStream::connect(server.addr()).unwrap();
        let begun = Instant::now();
        drop(server);
        assert!(
            begun.elapsed() < Duration::from_secs(5),
            "drop took {:?}",
            begun.elapsed()
        );
        drop(idle);
    }
}

mod hardening {
    use super::*;

    /// A raw request on a new connection: the whole response as text.
    fn raw(server: &Server, request: &str) -> String {
        let mut stream = TcpStream::connect(server.addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    }

    fn body(response: &str) -> Value {
        serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap()).unwrap()
    }

    #[test]
    fn the_token_may_come_in_an_oauth2_authorization_header() {
        let server = server();
        let target = format!("{TIMELINE_PATH}?id={POST_1_REPOST}");
        let ok = raw(
            &server,
            &format!(
                "GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: OAuth2 {DEFAULT_TOKEN}\r\n\r\n"
            ),
        );
        assert!(ok.starts_with("HTTP/1.1 200 "), "{ok}");
        assert_eq!(body(&ok)["reposts"].as_array().unwrap().len(), 1);
        let bad = raw(
            &server,
            &format!("GET {target} HTTP/1.1\r\nAuthorization: OAuth2 nope\r\n\r\n"),
        );
        assert!(bad.starts_with("HTTP/1.1 401 "), "{bad}");
        assert_eq!(body(&bad)["error_code"], 21332);
    }

    /// With a latency of an hour, only an answer that skips it can come back at all.
    #[test]
    fn errors_are_answered_without_the_latency() {
        let server = server_with(ServerConfig {
            latency: Duration::from_secs(3_600),
            ..ServerConfig::default()
        });
        let response = get_path(
            &server,
            TIMELINE_PATH,
            &format!("access_token=wrong&id={TUTORIAL_POST}"),
        );
        assert_eq!(response.1["error_code"], 21332);
        let response = get(&server, "id=12345");
        assert_eq!(response.1["error_code"], 20101);
        assert_eq!(server.requests_served(), 2);
    }

    /// A client that sends a byte every 20 ms never lets a read time out, yet its connection
    /// is closed once the whole head's deadline passes.
    #[test]
    fn a_head_trickled_past_its_deadline_is_cut_off() {
        let server = server_with(ServerConfig {
            latency: Duration::ZERO,
            head_deadline: Duration::from_millis(300),
            ..ServerConfig::default()
        });
        let mut stream = TcpStream::connect(server.addr()).unwrap();
        let mut reader = stream.try_clone().unwrap();
        reader
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let trickler = thread::spawn(move || {
            let head = b"GET /2/statuses/repost_timeline.json?id=1&padding=";
            let begun = Instant::now();
            let mut sent = 0usize;
            // Behaviour, not synchronisation: the pauses are what makes the client slow.
            while begun.elapsed() < Duration::from_secs(30) {
                let byte = head.get(sent).copied().unwrap_or(b'a');
                if stream.write_all(&[byte]).is_err() {
                    return (sent, true);
                }
                sent += 1;
                thread::sleep(Duration::from_millis(20));
            }
            (sent, false)
        });
        let mut rest = Vec::new();
        let closed = match reader.read_to_end(&mut rest) {
            Ok(_) => true,
            Err(error) => error.kind() == std::io::ErrorKind::ConnectionReset,
        };
        assert!(closed, "the server closes the connection");
        assert!(rest.is_empty(), "no answer to half a head");
        let (sent, refused) = trickler.join().unwrap();
        assert!(refused, "the server stopped taking bytes after {sent}");
        assert_eq!(server.requests_served(), 0);
    }

    #[test]
    fn connections_past_the_bound_get_a_503_at_once() {
        let server = server_with(ServerConfig {
            latency: Duration::from_secs(3_600),
            max_connections: 2,
            ..ServerConfig::default()
        });
        let request = format!(
            "GET {TIMELINE_PATH}?id={TUTORIAL_POST}&access_token={DEFAULT_TOKEN} HTTP/1.1\r\n\r\n"
        );
        // Two requests for pages, held by the latency.
        let held: Vec<TcpStream> = (0..2)
            .map(|_| {
                let mut stream = TcpStream::connect(server.addr()).unwrap();
                stream.write_all(request.as_bytes()).unwrap();
                stream
            })
            .collect();
        let busy = raw(&server, &request);
        assert!(busy.starts_with("HTTP/1.1 503 "), "{busy}");
        assert_eq!(body(&busy)["error_code"], 10009);
        drop(held);
    }
}
