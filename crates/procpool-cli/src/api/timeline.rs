//! The `repost_timeline` endpoint: a parsed request in, a JSON page or error object out.
//!
//! Checks run in the order the public service appears to run them: the path, the method, the
//! token, the token's rate limit, the parameters, and last whether the post exists.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;

use super::dataset::{self, Status};
use super::http::Request;
use super::{DEFAULT_COUNT, MAX_COUNT, REACHABLE, TIMELINE_PATH};

/// A status code and a JSON body, ready to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    /// The HTTP status.
    pub(crate) status: u16,
    /// The JSON body.
    pub(crate) body: Vec<u8>,
}

/// The errors the server answers with, each with its code, message and HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ApiError {
    /// 21332: the token is missing or not one the server accepts.
    InvalidToken,
    /// 10023: the token has used up its requests.
    RateLimited,
    /// 10008: a parameter is missing or is not a positive number.
    BadParameter,
    /// 20101: there is no post with that id.
    NoSuchPost,
    /// 10020: no endpoint at that path.
    NoSuchApi,
    /// 10021: a method other than `GET`.
    BadMethod,
    /// 10012: bytes that are not an HTTP request.
    IllegalRequest,
    /// 10009: the server has as many connections as it serves at once.
    Busy,
}

impl ApiError {
    /// The `error_code` the public API uses for this error.
    pub(crate) fn code(self) -> u32 {
        match self {
            ApiError::InvalidToken => 21332,
            ApiError::RateLimited => 10023,
            ApiError::BadParameter => 10008,
            ApiError::NoSuchPost => 20101,
            ApiError::NoSuchApi => 10020,
            ApiError::BadMethod => 10021,
            ApiError::IllegalRequest => 10012,
            ApiError::Busy => 10009,
        }
    }

    /// The `error` text the public API uses for this error.
    fn message(self) -> &'static str {
        match self {
            ApiError::InvalidToken => "invalid_access_token",
            ApiError::RateLimited => "User requests out of rate limit!",
            ApiError::BadParameter => "param error, see doc for more info.",
            ApiError::NoSuchPost => "target weibo does not exist!",
            ApiError::NoSuchApi => "request api not found!",
            ApiError::BadMethod => "HTTP method is not suported for this request!",
            ApiError::IllegalRequest => "illegal request!",
            ApiError::Busy => "Too many pending tasks, system is busy!",
        }
    }

    /// The HTTP status sent with this error.
    fn status(self) -> u16 {
        match self {
            ApiError::InvalidToken => 401,
            ApiError::RateLimited => 403,
            ApiError::NoSuchApi => 404,
            ApiError::BadMethod => 405,
            ApiError::Busy => 503,
            ApiError::BadParameter | ApiError::NoSuchPost | ApiError::IllegalRequest => 400,
        }
    }

    /// The error object for a request to `path`.
    pub(crate) fn reply(self, path: &str) -> Reply {
        Reply {
            status: self.status(),
            body: json(&ErrorBody {
                error: self.message(),
                error_code: self.code(),
                request: path,
            }),
        }
    }
}

/// How many requests each token has made, for the rate limit.
#[derive(Debug, Default)]
pub(crate) struct Usage(Mutex<HashMap<String, u64>>);

impl Usage {
    /// Counts one more request for `token` and returns its count so far.
    fn spend(&self, token: &str) -> u64 {
        // A poisoned lock only means another handler panicked mid-increment; the map is fine.
        let mut counts = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = counts.entry(token.to_owned()).or_default();
        *count += 1;
        *count
    }
}

/// The limits a request is checked against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy<'a> {
    /// The tokens the server accepts.
    pub(crate) tokens: &'a [String],
    /// The most requests one token may make over the server's life.
    pub(crate) rate_limit: Option<u32>,
}

/// Answers one request.
pub(crate) fn answer(request: &Request, policy: Policy<'_>, usage: &Usage) -> Reply {
    match timeline(request, policy, usage) {
        Ok(page) => Reply {
            status: 200,
            body: json(&page),
        },
        Err(error) => error.reply(&request.path),
    }
}

/// The JSON body of a page of the repost timeline.
#[derive(Serialize, Debug)]
struct Timeline {
    reposts: Vec<Status>,
    hasvisible: bool,
    previous_cursor: u64,
    next_cursor: u64,
    total_number: u64,
}

/// The JSON body of an error.
#[derive(Serialize, Debug)]
struct ErrorBody<'a> {
    error: &'a str,
    error_code: u32,
    request: &'a str,
}

fn timeline(request: &Request, policy: Policy<'_>, usage: &Usage) -> Result<Timeline, ApiError> {
    if request.path != TIMELINE_PATH {
        return Err(ApiError::NoSuchApi);
    }
    if request.method != "GET" {
        return Err(ApiError::BadMethod);
    }
    let token = request
        .token()
        .filter(|token| policy.tokens.iter().any(|valid| valid == token))
        .ok_or(ApiError::InvalidToken)?;
    if let Some(limit) = policy.rate_limit
        && usage.spend(token) > u64::from(limit)
    {
        return Err(ApiError::RateLimited);
    }
    let post = request
        .param("id")
        .and_then(|id| id.parse::<u64>().ok())
        .ok_or(ApiError::BadParameter)?;
    let count = positive(request.param("count"), DEFAULT_COUNT.into())?.min(MAX_COUNT.into());
    let page = positive(request.param("page"), 1)?;
    let bounds = Bounds {
        max_id: id_bound(request.param("max_id"))?,
        since_id: id_bound(request.param("since_id"))?,
    };
    let total = dataset::total_reposts(post).ok_or(ApiError::NoSuchPost)?;
    Ok(page_of(post, total, count, page, bounds))
}

/// The cursors of a request: 0 is no bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Bounds {
    /// Only reposts with an id at most this.
    max_id: u64,
    /// Only reposts with an id greater than this.
    since_id: u64,
}

/// An id parameter: absent is 0 (no bound); not a number is error 10008.
fn id_bound(value: Option<&str>) -> Result<u64, ApiError> {
    match value {
        None | Some("") => Ok(0),
        Some(text) => text.parse().map_err(|_| ApiError::BadParameter),
    }
}

/// The first index in `0..end` whose repost id is at most `id` (`end` when none is):
/// repost ids decrease as the index grows.
fn first_at_most(post: u64, end: u64, id: u64) -> u64 {
    let (mut low, mut high) = (0, end);
    while low < high {
        let middle = low + (high - low) / 2;
        if dataset::repost_id(post, middle).unwrap_or(0) <= id {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    low
}

/// A positive number parameter, or `default` when absent.
fn positive(value: Option<&str>, default: u64) -> Result<u64, ApiError> {
    match value {
        None => Ok(default),
        Some(text) => match text.parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(ApiError::BadParameter),
        },
    }
}

/// Page `page` (1-based) of `count` reposts of `post`, which has `total` in all, within
/// `bounds`.
fn page_of(post: u64, total: u64, count: u64, page: u64, bounds: Bounds) -> Timeline {
    let reachable = total.min(REACHABLE);
    // The reachable reposts within the bounds are the indices `first..reachable`.
    let first = match bounds.max_id {
        0 => 0,
        max_id => first_at_most(post, reachable, max_id),
    };
    let reachable = match bounds.since_id {
        0 => reachable,
        since_id => first_at_most(post, reachable, since_id).max(first),
    };
    let start = (page - 1).saturating_mul(count).saturating_add(first);
    if start >= reachable {
        return Timeline {
            reposts: Vec::new(),
            hasvisible: false,
            previous_cursor: 0,
            next_cursor: 0,
            total_number: total,
        };
    }
    let end = start.saturating_add(count).min(reachable);
    let reposts = match dataset::original(post) {
        Some(original) => (start..end)
            .filter_map(|index| dataset::repost_of(&original, index))
            .collect(),
        None => Vec::new(),
    };
    let cursor = |index: u64| dataset::repost_id(post, index).unwrap_or(0);
    Timeline {
        reposts,
        hasvisible: false,
        previous_cursor: if page > 1 { cursor(start - count) } else { 0 },
        next_cursor: if end < reachable { cursor(end) } else { 0 },
        total_number: total,
    }
}

/// Serializes a body.
fn json(value: &impl Serialize) -> Vec<u8> {
    // serde_json fails only on maps with non-string keys or on a failing `Serialize` impl;
    // these bodies are derived structs of strings, numbers and booleans.
    serde_json::to_vec(value).expect("a response body always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::dataset::{POST_201_REPOSTS, TUTORIAL_POST};

    #[test]
    fn pages_cover_the_reachable_reposts_once() {
        let total = 2_731;
        let mut ids = Vec::new();
        for page in 1..=11 {
            let timeline = page_of(TUTORIAL_POST, total, 200, page, Bounds::default());
            assert_eq!(timeline.total_number, total);
            ids.extend(timeline.reposts.iter().map(|status| status.id));
        }
        assert_eq!(ids.len(), 2_000);
        assert!(ids.windows(2).all(|w| w[0] > w[1]));
    }

    #[test]
    fn cursors_point_at_the_neighbouring_pages() {
        let first = page_of(POST_201_REPOSTS, 201, 200, 1, Bounds::default());
        let second = page_of(POST_201_REPOSTS, 201, 200, 2, Bounds::default());
        assert_eq!(first.previous_cursor, 0);
        assert_eq!(first.next_cursor, second.reposts[0].id);
        assert_eq!(second.previous_cursor, first.reposts[0].id);
        assert_eq!(second.next_cursor, 0);
        let past = page_of(POST_201_REPOSTS, 201, 200, 3, Bounds::default());
        assert!(past.reposts.is_empty());
        assert_eq!((past.previous_cursor, past.next_cursor), (0, 0));
    }

    #[test]
    fn paging_by_max_id_follows_next_cursor_to_the_end() {
        let mut ids = Vec::new();
        let mut bounds = Bounds::default();
        loop {
            let timeline = page_of(TUTORIAL_POST, 2_731, 200, 1, bounds);
            ids.extend(timeline.reposts.iter().map(|status| status.id));
            if timeline.next_cursor == 0 {
                break;
            }
            bounds.max_id = timeline.next_cursor;
            assert!(ids.len() <= 2_000, "cursors loop");
        }
        let by_page: Vec<u64> = (1..=10)
            .flat_map(|page| page_of(TUTORIAL_POST, 2_731, 200, page, Bounds::default()).reposts)
            .map(|status| status.id)
            .collect();
        assert_eq!(ids, by_page);
    }

    #[test]
    fn since_id_keeps_only_newer_reposts() {
        let newest = page_of(POST_201_REPOSTS, 201, 200, 1, Bounds::default());
        let since_id = newest.reposts[9].id;
        let newer = page_of(
            POST_201_REPOSTS,
            201,
            200,
            1,
            Bounds {
                since_id,
                max_id: 0,
            },
        );
        let ids: Vec<u64> = newer.reposts.iter().map(|status| status.id).collect();
        let expected: Vec<u64> = newest.reposts[..9].iter().map(|status| status.id).collect();
        assert_eq!(ids, expected);
        assert_eq!(newer.next_cursor, 0);
        assert_eq!(newer.total_number, 201);
        // Both bounds: the reposts strictly between.
        let max_id = newest.reposts[3].id;
        let between = page_of(POST_201_REPOSTS, 201, 2, 2, Bounds { since_id, max_id });
        let ids: Vec<u64> = between.reposts.iter().map(|status| status.id).collect();
        assert_eq!(ids, [newest.reposts[5].id, newest.reposts[6].id]);
        assert_eq!(id_bound(Some("x")), Err(ApiError::BadParameter));
        assert_eq!(id_bound(None), Ok(0));
    }

    #[test]
    fn huge_pages_do_not_overflow() {
        let timeline = page_of(TUTORIAL_POST, 2_731, 200, u64::MAX, Bounds::default());
        assert!(timeline.reposts.is_empty());
    }

    #[test]
    fn numbers_must_be_positive() {
        assert_eq!(positive(None, 20), Ok(20));
        assert_eq!(positive(Some("7"), 20), Ok(7));
        for bad in ["0", "-1", "", "abc", "1.5", "99999999999999999999"] {
            assert_eq!(
                positive(Some(bad), 20),
                Err(ApiError::BadParameter),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn usage_counts_per_token() {
        let usage = Usage::default();
        assert_eq!(usage.spend("a"), 1);
        assert_eq!(usage.spend("a"), 2);
        assert_eq!(usage.spend("b"), 1);
    }
}
