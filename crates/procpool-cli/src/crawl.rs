//! The client side of the repost crawl: fetch a page, count the pages, merge them.
//!
//! A crawl of a post's repost timeline asks for page 1 (200 reposts, newest first), learns the
//! post's `total_number` from it, asks for the other pages (at most 10 in all: only the newest
//! 2,000 reposts can be reached) and merges the pages in page order, dropping any repost seen
//! twice (a repost made during the crawl shifts the pages by one).
//!
//! [`fetch_page`] is a plain function of serializable values, so that pool workers in other
//! processes can run it: [`PageRequest`] in, [`Page`] or [`CrawlError`] out. [`crawl_serial`]
//! is the whole crawl on the calling thread.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use procpool_cli::api::{self, dataset, Server, ServerConfig};
//! use procpool_cli::crawl::{self, PageRequest};
//!
//! let server = Server::start(ServerConfig { latency: Duration::ZERO, ..ServerConfig::default() })?;
//! let template = PageRequest::new(server.base_url(), dataset::TUTORIAL_POST, api::DEFAULT_TOKEN);
//!
//! // Serially:
//! let reposts = crawl::crawl_serial(&template)?;
//! assert_eq!(reposts.len(), 2_000);
//!
//! // Or page 1 first, then the rest in any order (in a pool, say), then merge:
//! let first = crawl::fetch_page(&template)?;
//! let mut pages = vec![first.clone()];
//! for request in crawl::remaining_pages(&template, first.total_number) {
//!     pages.push(crawl::fetch_page(&request)?);
//! }
//! assert_eq!(crawl::merge_pages(pages), reposts);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Retries
//!
//! Transient failures are retried, up to [`PageRequest::retries`] times, after 50 ms, 100 ms,
//! 200 ms and so on (doubling, at most 1.6 s): a connection that fails or breaks, an HTTP 5xx,
//! 408 or 429 status, and the API's rate limit (10023). Other errors the API reports are
//! fatal and not retried: an invalid token (21332), an unknown post (20101), a parameter error
//! (10008). Neither is a response that is not the API's JSON, nor one that does not come
//! within [`PageRequest::timeout_ms`]: the timeout bounds how long a page may take, and a
//! server that did not answer in time is not asked again.
//!
//! Each attempt is logged at `debug` level and each retry at `info` level under the target
//! `procpool_cli::crawl`, through `tracing`.

use std::collections::HashSet;
use std::fmt;
use std::io::{self, Write};
use std::sync::OnceLock;
use std::thread;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Reposts per page in a crawl: the most the API gives.
pub const PAGE_SIZE: u32 = 200;

/// The most pages a crawl fetches: 10 pages of 200 reach the newest 2,000 reposts, which is
/// all the API serves.
pub const MAX_PAGES: u32 = 10;

/// How many of a post's newest reposts the API serves.
const REACHABLE: u64 = 2_000;

/// The default [`PageRequest::timeout_ms`]: 10 s, about 12 times the tutorial's page time.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;

/// The default [`PageRequest::retries`].
pub const DEFAULT_RETRIES: u32 = 3;

/// The API's `error_code` for a token over its rate limit.
const RATE_LIMITED: u32 = 10023;

/// The endpoint, after the API base.
const TIMELINE_PATH: &str = "/2/statuses/repost_timeline.json";

/// The wait before the first retry; each later one waits twice as long as the one before.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_millis(1_600);

/// One page to fetch: everything [`fetch_page`] needs, serializable so that it can be sent to
/// a worker process.
///
/// # Example
///
/// ```
/// use procpool_cli::crawl::PageRequest;
///
/// let request = PageRequest::new("http://127.0.0.1:8080", 3_664_072_912_104_801, "token");
/// assert_eq!((request.page, request.count), (1, 200));
/// assert_eq!(request.with_page(3).page, 3);
/// ```
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PageRequest {
    /// Scheme, host and port (and any path prefix) before
    /// `/2/statuses/repost_timeline.json`, such as `http://127.0.0.1:8080` or
    /// `https://api.weibo.com`; a trailing slash is ignored.
    pub api_base: String,
    /// The post whose reposts to fetch.
    pub mid: u64,
    /// The OAuth2 access token.
    pub token: String,
    /// The 1-based page number.
    pub page: u32,
    /// Reposts per page; the API gives at most 200.
    pub count: u32,
    /// How long one attempt may take, from connecting to the end of the body, in
    /// milliseconds; 0 means no limit.
    pub timeout_ms: u64,
    /// How many times a transient failure is retried (so at most `retries + 1` attempts).
    pub retries: u32,
}

impl PageRequest {
    /// A request for page 1 of 200 reposts of `mid`, with a timeout of
    /// [`DEFAULT_TIMEOUT_MS`] and [`DEFAULT_RETRIES`] retries.
    pub fn new(api_base: impl Into<String>, mid: u64, token: impl Into<String>) -> PageRequest {
        PageRequest {
            api_base: api_base.into(),
            mid,
            token: token.into(),
            page: 1,
            count: PAGE_SIZE,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            retries: DEFAULT_RETRIES,
        }
    }

    /// The same request for page `page`.
    pub fn with_page(&self, page: u32) -> PageRequest {
        PageRequest {
            page,
            ..self.clone()
        }
    }

    /// The endpoint's URL, without the query (and so without the token).
    fn url(&self) -> String {
        format!("{}{TIMELINE_PATH}", self.api_base.trim_end_matches('/'))
    }
}

/// One page of a post's repost timeline.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// The page number it was fetched as.
    pub page: u32,
    /// How many reposts the post has in all (may be more than can be fetched).
    pub total_number: u64,
    /// The reposts on this page, newest first.
    pub reposts: Vec<Repost>,
    /// The host agent that fetched it, for a crawl through `--redis`.
    #[serde(default)]
    pub fetched_by: Option<String>,
}

/// A status as the crawl keeps it: a repost, or the original post inside one.
///
/// Fields the API may leave out (on a deleted status, say) default to empty; fields this type
/// does not name are dropped. It serializes to one JSON object with every field, `null` for
/// an absent user or original.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Repost {
    /// The status id.
    pub id: u64,
    /// The status id as a string.
    #[serde(default)]
    pub idstr: String,
    /// The message id, a string in the API's JSON.
    #[serde(default)]
    pub mid: String,
    /// When it was posted, as the API writes it: `"Tue May 31 17:46:55 +0800 2011"`.
    #[serde(default)]
    pub created_at: String,
    /// The text: for a repost, the reposter's comment.
    #[serde(default)]
    pub text: String,
    /// The client it was posted from, as an HTML link.
    #[serde(default)]
    pub source: String,
    /// How many times it was reposted.
    #[serde(default)]
    pub reposts_count: u64,
    /// How many comments it has.
    #[serde(default)]
    pub comments_count: u64,
    /// Who posted it; `None` for a deleted status.
    #[serde(default)]
    pub user: Option<User>,
    /// The original post, for a repost.
    #[serde(default)]
    pub retweeted_status: Option<Box<Repost>>,
}

/// The author of a status.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// The user id.
    pub id: u64,
    /// The user id as a string.
    #[serde(default)]
    pub idstr: String,
    /// The name shown on screen.
    #[serde(default)]
    pub screen_name: String,
    /// The user's name.
    #[serde(default)]
    pub name: String,
}

/// Why a page could not be fetched.
///
/// It is serializable, so that a worker process can send it back as it is. Its `Display`
/// names the page, the post and the endpoint (never the token), and what to check.
///
/// # Example
///
/// ```
/// use procpool_cli::crawl::{self, CrawlErrorKind, PageRequest};
///
/// // Nothing listens on port 1.
/// let mut request = PageRequest::new("http://127.0.0.1:1", 42, "token");
/// request.retries = 0;
/// let error = crawl::fetch_page(&request).unwrap_err();
/// assert_eq!(error.kind(), CrawlErrorKind::Io);
/// assert!(error.is_transient());
/// assert_eq!(error.attempts(), 1);
/// ```
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CrawlError {
    kind: Kind,
    url: String,
    mid: u64,
    page: u32,
    attempts: u32,
}

/// What kind of failure a [`CrawlError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CrawlErrorKind {
    /// The API answered with an error object (`error_code`).
    Api,
    /// The server answered with an error status and no error object.
    Http,
    /// No complete response within the timeout.
    Timeout,
    /// The connection could not be made, or broke.
    Io,
    /// The response was not the JSON of a page.
    Decode,
    /// The API base is not a usable URL.
    InvalidUrl,
}

/// The details of a [`CrawlError`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
enum Kind {
    Api {
        code: u32,
        message: String,
        status: u16,
    },
    Http {
        status: u16,
    },
    Timeout {
        timeout_ms: u64,
    },
    Io {
        message: String,
    },
    Decode {
        message: String,
    },
    InvalidUrl {
        message: String,
    },
}

impl Kind {
    fn is_transient(&self) -> bool {
        match *self {
            Kind::Io { .. } => true,
            Kind::Api {
                code: RATE_LIMITED, ..
            } => true,
            Kind::Http { status } | Kind::Api { status, .. } => {
                status >= 500 || status == 408 || status == 429
            }
            Kind::Timeout { .. } | Kind::Decode { .. } | Kind::InvalidUrl { .. } => false,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::Api {
                code,
                message,
                status,
            } => {
                write!(f, "api error {code}: {message} (http status {status})")
            }
            Kind::Http { status } => write!(f, "http status {status}"),
            Kind::Timeout { timeout_ms } => write!(f, "no response within {timeout_ms} ms"),
            Kind::Io { message } | Kind::Decode { message } | Kind::InvalidUrl { message } => {
                f.write_str(message)
            }
        }
    }
}

impl CrawlError {
    /// What kind of failure this is.
    pub fn kind(&self) -> CrawlErrorKind {
        match self.kind {
            Kind::Api { .. } => CrawlErrorKind::Api,
            Kind::Http { .. } => CrawlErrorKind::Http,
            Kind::Timeout { .. } => CrawlErrorKind::Timeout,
            Kind::Io { .. } => CrawlErrorKind::Io,
            Kind::Decode { .. } => CrawlErrorKind::Decode,
            Kind::InvalidUrl { .. } => CrawlErrorKind::InvalidUrl,
        }
    }

    /// The API's `error_code`, for an API error.
    pub fn api_code(&self) -> Option<u32> {
        match self.kind {
            Kind::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The API's `error` text, for an API error.
    pub fn api_message(&self) -> Option<&str> {
        match &self.kind {
            Kind::Api { message, .. } => Some(message),
            _ => None,
        }
    }

    /// The HTTP status of the response, for an API or HTTP error.
    pub fn http_status(&self) -> Option<u16> {
        match self.kind {
            Kind::Api { status, .. } | Kind::Http { status } => Some(status),
            _ => None,
        }
    }

    /// The post whose page failed.
    pub fn mid(&self) -> u64 {
        self.mid
    }

    /// The page that failed.
    pub fn page(&self) -> u32 {
        self.page
    }

    /// How many attempts were made: 1, plus the retries.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Whether the failure may go away if the page is asked for again (it was retried, if
    /// retries were left).
    pub fn is_transient(&self) -> bool {
        self.kind.is_transient()
    }

    /// Whether the failure is the API's rate limit (error 10023).
    pub fn is_rate_limited(&self) -> bool {
        self.api_code() == Some(RATE_LIMITED)
    }
}

impl fmt::Display for CrawlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let CrawlError {
            url,
            mid,
            page,
            attempts,
            ..
        } = self;
        let after = match attempts {
            0 | 1 => String::new(),
            n => format!(" after {n} attempts"),
        };
        match &self.kind {
            Kind::Api {
                code,
                message,
                status,
            } => {
                write!(
                    f,
                    "api error {code} for page {page} of post {mid}: {message} ("
                )?;
                match code {
                    21332 => write!(f, "check --token")?,
                    20101 => write!(f, "check the post id {mid}")?,
                    10023 => write!(
                        f,
                        "the token's rate limit is used up: wait, or use another --token"
                    )?,
                    10008 => write!(f, "check --mid and the page size")?,
                    _ => write!(f, "http status {status} from {url}")?,
                }
                write!(f, "){after}")
            }
            Kind::Http { status } => write!(
                f,
                "http status {status} for page {page} of post {mid} from {url}{after}"
            ),
            Kind::Timeout { timeout_ms } => write!(
                f,
                "no response within {timeout_ms} ms for page {page} of post {mid} from {url}{after}"
            ),
            Kind::Io { message } => write!(
                f,
                "cannot fetch page {page} of post {mid} from {url}{after}: {message}"
            ),
            Kind::Decode { message } => write!(
                f,
                "unexpected response for page {page} of post {mid} from {url}: {message}"
            ),
            Kind::InvalidUrl { message } => write!(f, "invalid api base in `{url}`: {message}"),
        }
    }
}

impl std::error::Error for CrawlError {}

/// Fetches one page, retrying transient failures (see the [module docs](self#retries)).
///
/// # Errors
///
/// Returns a [`CrawlError`] when the API reports an error, the server answers with an error
/// status, or the page cannot be fetched or decoded within the retries.
pub fn fetch_page(request: &PageRequest) -> Result<Page, CrawlError> {
    let mut attempts = 1;
    loop {
        tracing::debug!(page = request.page, mid = request.mid, attempt = attempts, url = %request.url(), "requesting a page");
        match fetch_once(request) {
            Ok(page) => {
                tracing::debug!(
                    page = request.page,
                    reposts = page.reposts.len(),
                    total_number = page.total_number,
                    "page received"
                );
                return Ok(page);
            }
            Err(kind) if kind.is_transient() && attempts <= request.retries => {
                let wait = backoff(attempts);
                tracing::info!(
                    page = request.page,
                    attempt = attempts,
                    retry_in_ms = wait.as_millis() as u64,
                    "transient failure, retrying: {kind}"
                );
                thread::sleep(wait);
                attempts += 1;
            }
            Err(kind) => {
                return Err(CrawlError {
                    kind,
                    url: request.url(),
                    mid: request.mid,
                    page: request.page,
                    attempts,
                });
            }
        }
    }
}

/// How many pages of 200 a crawl fetches for a post with `total_number` reposts:
/// `min(ceil(total_number / 200), 10)`.
///
/// # Example
///
/// ```
/// use procpool_cli::crawl::page_count;
///
/// assert_eq!(page_count(0), 0);
/// assert_eq!(page_count(201), 2);
/// assert_eq!(page_count(2_731), 10);
/// ```
pub fn page_count(total_number: u64) -> u32 {
    pages_for(total_number, PAGE_SIZE)
}

/// The requests for the pages after `first`'s page 1, given the `total_number` page 1 told:
/// pages 2 to the last reachable one, for `first.count` reposts a page (clamped to 1..=200).
pub fn remaining_pages(first: &PageRequest, total_number: u64) -> Vec<PageRequest> {
    (2..=pages_for(total_number, first.count))
        .map(|page| first.with_page(page))
        .collect()
}

/// Pages of `count` reposts (clamped to 1..=200, as the API does) needed for the reachable
/// reposts out of `total_number`.
fn pages_for(total_number: u64, count: u32) -> u32 {
    let count = u64::from(count.clamp(1, PAGE_SIZE));
    let pages = total_number.min(REACHABLE).div_ceil(count);
    u32::try_from(pages).unwrap_or(u32::MAX)
}

/// Merges pages into one list: in page order (whatever order `pages` is in), each repost once,
/// where it first appears.
pub fn merge_pages(mut pages: Vec<Page>) -> Vec<Repost> {
    pages.sort_by_key(|page| page.page);
    let mut seen = HashSet::new();
    pages
        .into_iter()
        .flat_map(|page| page.reposts)
        .filter(|repost| seen.insert(repost.id))
        .collect()
}

/// Crawls a post's reposts on the calling thread: page 1, then pages 2 to the last one that
/// `total_number` calls for, merged.
///
/// `template` gives the endpoint, post, token, page size, timeout and retries; its `page` is
/// ignored.
///
/// # Errors
///
/// Returns the first page's [`CrawlError`]; the pages after it are not fetched.
pub fn crawl_serial(template: &PageRequest) -> Result<Vec<Repost>, CrawlError> {
    let first = fetch_page(&template.with_page(1))?;
    let rest = remaining_pages(template, first.total_number);
    let mut pages = Vec::with_capacity(rest.len() + 1);
    pages.push(first);
    for request in &rest {
        pages.push(fetch_page(request)?);
    }
    Ok(merge_pages(pages))
}

/// Writes `reposts` as JSON lines: one JSON object per repost, each followed by `\n`.
///
/// # Errors
///
/// Returns the writer's error.
pub fn write_json_lines(reposts: &[Repost], mut out: impl Write) -> io::Result<()> {
    for repost in reposts {
        serde_json::to_writer(&mut out, repost)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// The wait before retry number `retry` (1-based).
fn backoff(retry: u32) -> Duration {
    let factor = 1u32 << retry.saturating_sub(1).min(16);
    FIRST_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

/// The HTTP agent every fetch in this process shares, so connections to a keep-alive server
/// are reused.
fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(concat!("procpool/", env!("CARGO_PKG_VERSION")))
            .build()
            .into()
    })
}

/// One attempt at a page.
fn fetch_once(request: &PageRequest) -> Result<Page, Kind> {
    let timeout = (request.timeout_ms > 0).then(|| Duration::from_millis(request.timeout_ms));
    let failed = |error| classify(error, request.timeout_ms);
    let mut response = agent()
        .get(request.url())
        .query("id", request.mid.to_string())
        .query("count", request.count.to_string())
        .query("page", request.page.to_string())
        .query("access_token", &request.token)
        .config()
        .timeout_global(timeout)
        .build()
        .call()
        .map_err(failed)?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = response.body_mut().read_to_vec().map_err(failed)?;
    decode(status, content_type.as_deref(), &body).map(|(total_number, reposts)| Page {
        page: request.page,
        total_number,
        reposts,
        fetched_by: None,
    })
}

/// The body of a page, as far as the crawl reads it.
#[derive(Deserialize)]
struct PageBody {
    total_number: u64,
    reposts: Vec<Repost>,
}

/// The body of an API error.
#[derive(Deserialize)]
struct ErrorBody {
    error_code: u32,
    #[serde(default)]
    error: String,
}

/// Reads a response: a page (`total_number` and reposts), or what went wrong.
///
/// A body that is not JSON at all is reported by what it is (its content type, or that it is
/// empty) rather than by where a JSON parser gave up on it.
fn decode(
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<(u64, Vec<Repost>), Kind> {
    let api_error = || {
        serde_json::from_slice::<ErrorBody>(body)
            .ok()
            .map(|error| Kind::Api {
                code: error.error_code,
                message: error.error,
                status,
            })
    };
    if (200..300).contains(&status) {
        match serde_json::from_slice::<PageBody>(body) {
            Ok(page) => Ok((page.total_number, page.reposts)),
            Err(error) => Err(api_error().unwrap_or_else(|| Kind::Decode {
                message: not_a_page(content_type, body, &error),
            })),
        }
    } else {
        Err(api_error().unwrap_or(Kind::Http { status }))
    }
}

/// Why a successful response's body is not a page: not JSON (and then what it is), or JSON
/// of another shape.
fn not_a_page(content_type: Option<&str>, body: &[u8], error: &serde_json::Error) -> String {
    let is_json = serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok();
    if is_json {
        return format!("not a page of reposts: {error}");
    }
    let got = match content_type {
        _ if body.iter().all(u8::is_ascii_whitespace) => "an empty body".to_owned(),
        Some(content_type) => {
            let media_type = content_type.split(';').next().unwrap_or_default().trim();
            if media_type.eq_ignore_ascii_case("application/json") {
                format!("{media_type} that does not parse ({error})")
            } else {
                media_type.to_owned()
            }
        }
        None => "a body without a content type".to_owned(),
    };
    format!("not JSON: got {got}")
}

/// What a failed call means for the crawl.
fn classify(error: ureq::Error, timeout_ms: u64) -> Kind {
    match error {
        ureq::Error::Timeout(_) => Kind::Timeout { timeout_ms },
        ureq::Error::Io(error)
            if matches!(
                error.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) =>
        {
            Kind::Timeout { timeout_ms }
        }
        ureq::Error::Io(error) => Kind::Io {
            message: error.to_string(),
        },
        ureq::Error::BadUri(message) | ureq::Error::RequireHttpsOnly(message) => {
            Kind::InvalidUrl { message }
        }
        ureq::Error::Http(error) => Kind::InvalidUrl {
            message: error.to_string(),
        },
        other => Kind::Io {
            message: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repost(id: u64) -> Repost {
        Repost {
            id,
            idstr: id.to_string(),
            mid: id.to_string(),
            created_at: "Tue May 31 17:46:55 +0800 2011".to_owned(),
            text: "转发微博".to_owned(),
            source: String::new(),
            reposts_count: 0,
            comments_count: 0,
            user: Some(User {
                id: 7,
                idstr: "7".to_owned(),
                screen_name: "猫".to_owned(),
                name: "猫".to_owned(),
            }),
            retweeted_status: Some(Box::new(repost_leaf(1))),
        }
    }

    fn repost_leaf(id: u64) -> Repost {
        Repost {
            id,
            idstr: String::new(),
            mid: String::new(),
            created_at: String::new(),
            text: String::new(),
            source: String::new(),
            reposts_count: 0,
            comments_count: 0,
            user: None,
            retweeted_status: None,
        }
    }

    fn page(page: u32, ids: &[u64]) -> Page {
        Page {
            page,
            total_number: 99,
            reposts: ids.iter().map(|&id| repost(id)).collect(),
            fetched_by: None,
        }
    }

    fn error(kind: Kind, attempts: u32) -> CrawlError {
        CrawlError {
            kind,
            url: format!("http://127.0.0.1:9{TIMELINE_PATH}"),
            mid: 42,
            page: 3,
            attempts,
        }
    }

    #[test]
    fn page_count_caps_at_ten() {
        let cases = [
            (0, 0),
            (1, 1),
            (199, 1),
            (200, 1),
            (201, 2),
            (2_000, 10),
            (2_001, 10),
            (2_731, 10),
            (5_000, 10),
            (u64::MAX, 10),
        ];
        for (total, pages) in cases {
            assert_eq!(page_count(total), pages, "total {total}");
        }
    }

    #[test]
    fn remaining_pages_follow_the_page_size() {
        let first = PageRequest::new("http://x", 1, "t");
        let pages: Vec<u32> = remaining_pages(&first, 401)
            .iter()
            .map(|r| r.page)
            .collect();
        assert_eq!(pages, [2, 3]);
        assert!(remaining_pages(&first, 200).is_empty());
        assert!(remaining_pages(&first, 0).is_empty());
        let small = PageRequest { count: 20, ..first };
        assert_eq!(remaining_pages(&small, 5_000).len(), 99);
    }

    #[test]
    fn merge_keeps_page_order_and_first_copies() {
        let merged = merge_pages(vec![page(2, &[5, 4, 3]), page(1, &[9, 8, 5])]);
        let ids: Vec<u64> = merged.iter().map(|r| r.id).collect();
        assert_eq!(ids, [9, 8, 5, 4, 3]);
        assert!(merge_pages(Vec::new()).is_empty());
    }

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        let waits: Vec<u64> = (1..=8).map(|n| backoff(n).as_millis() as u64).collect();
        assert_eq!(waits, [50, 100, 200, 400, 800, 1_600, 1_600, 1_600]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn urls_ignore_a_trailing_slash() {
        let request = PageRequest::new("http://127.0.0.1:9/", 1, "t");
        assert_eq!(
            request.url(),
            "http://127.0.0.1:9/2/statuses/repost_timeline.json"
        );
    }

    #[test]
    fn decodes_pages_and_errors() {
        let json = Some("application/json;charset=UTF-8");
        let body = br#"{"reposts":[],"total_number":5,"hasvisible":false,"next_cursor":0}"#;
        assert_eq!(decode(200, json, body), Ok((5, Vec::new())));
        let error = br#"{"error":"invalid_access_token","error_code":21332,"request":"/x"}"#;
        assert_eq!(
            decode(401, json, error),
            Err(Kind::Api {
                code: 21332,
                message: "invalid_access_token".to_owned(),
                status: 401
            })
        );
        assert!(matches!(
            decode(200, json, error),
            Err(Kind::Api { code: 21332, .. })
        ));
        assert_eq!(
            decode(502, Some("text/html"), b"<html>"),
            Err(Kind::Http { status: 502 })
        );
        assert!(matches!(
            decode(200, json, b"{\"reposts\":[]}"),
            Err(Kind::Decode { .. })
        ));
    }

    #[test]
    fn a_body_that_is_not_json_is_named_by_its_content_type() {
        let message = |content_type, body: &[u8]| match decode(200, content_type, body) {
            Err(Kind::Decode { message }) => message,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            message(Some("text/html; charset=utf-8"), b"<html>busy</html>"),
            "not JSON: got text/html"
        );
        assert_eq!(
            message(Some("text/html"), b""),
            "not JSON: got an empty body"
        );
        assert_eq!(
            message(None, b"hello"),
            "not JSON: got a body without a content type"
        );
        assert!(
            message(Some("application/json"), b"{\"total_number\": ")
                .starts_with("not JSON: got application/json that does not parse ("),
        );
        assert!(
            message(Some("application/json"), b"[1, 2]").starts_with("not a page of reposts: "),
        );
    }

    #[test]
    fn transient_failures_are_the_retryable_ones() {
        assert!(
            Kind::Io {
                message: String::new()
            }
            .is_transient()
        );
        assert!(Kind::Http { status: 503 }.is_transient());
        assert!(Kind::Http { status: 429 }.is_transient());
        assert!(!Kind::Http { status: 404 }.is_transient());
        assert!(!Kind::Timeout { timeout_ms: 1 }.is_transient());
        let api = |code, status| Kind::Api {
            code,
            message: String::new(),
            status,
        };
        assert!(api(10001, 500).is_transient());
        assert!(api(10023, 403).is_transient());
        for code in [21332, 20101, 10008] {
            assert!(!api(code, 400).is_transient(), "{code}");
        }
        assert!(
            !Kind::Decode {
                message: String::new()
            }
            .is_transient()
        );
    }

    #[test]
    fn messages_name_the_values() {
        let api = |code: u32, message: &str| {
            error(
                Kind::Api {
                    code,
                    message: message.to_owned(),
                    status: 400,
                },
                1,
            )
            .to_string()
        };
        assert_eq!(
            api(21332, "invalid_access_token"),
            "api error 21332 for page 3 of post 42: invalid_access_token (check --token)"
        );
        assert_eq!(
            api(20101, "target weibo does not exist!"),
            "api error 20101 for page 3 of post 42: target weibo does not exist! \
             (check the post id 42)"
        );
        assert_eq!(
            error(Kind::Http { status: 503 }, 4).to_string(),
            "http status 503 for page 3 of post 42 from \
             http://127.0.0.1:9/2/statuses/repost_timeline.json after 4 attempts"
        );
        assert_eq!(
            error(Kind::Timeout { timeout_ms: 200 }, 1).to_string(),
            "no response within 200 ms for page 3 of post 42 from \
             http://127.0.0.1:9/2/statuses/repost_timeline.json"
        );
        let io = error(
            Kind::Io {
                message: "connection refused".to_owned(),
            },
            2,
        );
        assert!(
            io.to_string()
                .starts_with("cannot fetch page 3 of post 42 from http://")
        );
        assert!(
            io.to_string()
                .ends_with("after 2 attempts: connection refused")
        );
        for message in [io.to_string(), api(10008, "param error")] {
            assert!(!message.ends_with('.'));
            assert!(message.starts_with(|c: char| c.is_lowercase()));
        }
    }

    #[test]
    fn accessors_expose_the_details() {
        let api = error(
            Kind::Api {
                code: 20101,
                message: "target weibo does not exist!".to_owned(),
                status: 400,
            },
            1,
        );
        assert_eq!(api.kind(), CrawlErrorKind::Api);
        assert_eq!(api.api_code(), Some(20101));
        assert_eq!(api.api_message(), Some("target weibo does not exist!"));
        assert_eq!(api.http_status(), Some(400));
        assert_eq!((api.mid(), api.page(), api.attempts()), (42, 3, 1));
        let timeout = error(Kind::Timeout { timeout_ms: 5 }, 3);
        assert_eq!(timeout.kind(), CrawlErrorKind::Timeout);
        assert_eq!((timeout.api_code(), timeout.http_status()), (None, None));
    }

    /// Workers send these values across processes with bincode, which cannot skip fields or
    /// read self-describing data.
    #[test]
    fn values_cross_a_process_boundary_with_bincode() {
        let request = PageRequest::new("http://127.0.0.1:9", 42, "t");
        let back: PageRequest =
            bincode::deserialize(&bincode::serialize(&request).unwrap()).unwrap();
        assert_eq!(back, request);
        let page = page(2, &[5, 4]);
        let back: Page = bincode::deserialize(&bincode::serialize(&page).unwrap()).unwrap();
        assert_eq!(back, page);
        let failure = error(
            Kind::Decode {
                message: "eof".to_owned(),
            },
            1,
        );
        let back: CrawlError =
            bincode::deserialize(&bincode::serialize(&failure).unwrap()).unwrap();
        assert_eq!(back, failure);
    }

    #[test]
    fn json_lines_round_trip() {
        let reposts = vec![repost(3), repost(2)];
        let mut out = Vec::new();
        write_json_lines(&reposts, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 2);
        let back: Vec<Repost> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(back, reposts);
        assert!(text.contains("\"retweeted_status\":{"));
        assert!(text.contains("\"user\":null"));
    }
}
