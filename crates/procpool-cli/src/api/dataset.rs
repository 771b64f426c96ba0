//! The seeded, deterministic posts and reposts that the embedded server serves.
//!
//! Every post in [`POSTS`] has a fixed number of reposts. A repost is not stored: it is
//! generated on demand from the post id and its index, so the 5,000 reposts of
//! [`POST_5000_REPOSTS`] cost nothing until they are asked for, and every run of the
//! server (and every test) sees exactly the same data.
//!
//! Indices count from the newest repost: index 0 is the newest, the one that page 1 starts
//! with, and index `total - 1` is the oldest. Repost ids grow with time, so they decrease with
//! the index; they are unique across the whole data set and never equal a post id.

use serde::Serialize;

/// The post that the tutorial crawls: 2,731 reposts, of which only the newest 2,000 can be
/// reached.
pub const TUTORIAL_POST: u64 = 3_664_072_912_104_801;

/// A post that nobody reposted.
pub const POST_0_REPOSTS: u64 = 3_664_072_912_104_810;

/// A post with exactly one repost.
pub const POST_1_REPOST: u64 = 3_664_072_912_104_811;

/// A post with 199 reposts: one page of 200, one short of full.
pub const POST_199_REPOSTS: u64 = 3_664_072_912_104_812;

/// A post with 200 reposts: exactly one full page of 200.
pub const POST_200_REPOSTS: u64 = 3_664_072_912_104_813;

/// A post with 201 reposts: one full page of 200 and one repost on page 2.
pub const POST_201_REPOSTS: u64 = 3_664_072_912_104_814;

/// A post with 5,000 reposts, of which only the newest 2,000 can be reached.
pub const POST_5000_REPOSTS: u64 = 3_664_072_912_104_815;

/// Every post in the data set, as `(post id, total number of reposts)`.
pub const POSTS: &[(u64, u64)] = &[
    (TUTORIAL_POST, 2_731),
    (POST_0_REPOSTS, 0),
    (POST_1_REPOST, 1),
    (POST_199_REPOSTS, 199),
    (POST_200_REPOSTS, 200),
    (POST_201_REPOSTS, 201),
    (POST_5000_REPOSTS, 5_000),
];

/// A status (a post or a repost) in the shape the public API sends it.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// When it was posted, in the API's format: `"Tue May 31 17:46:55 +0800 2011"`.
    pub created_at: String,
    /// The status id.
    pub id: u64,
    /// The status id as a string.
    pub idstr: String,
    /// The message id, as a string (the API sends it as a string).
    pub mid: String,
    /// The text; a repost's text is the reposter's comment.
    pub text: String,
    /// The client it was posted from, as an HTML link.
    pub source: String,
    /// How many times it was reposted.
    pub reposts_count: u64,
    /// How many comments it has.
    pub comments_count: u64,
    /// Who posted it.
    pub user: User,
    /// The original post, for a repost; absent (not `null`) for an original post, as in the
    /// public API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retweeted_status: Option<Box<Status>>,
}

/// The author of a status, in the shape the public API sends it.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// The user id.
    pub id: u64,
    /// The user id as a string.
    pub idstr: String,
    /// The name shown on screen.
    pub screen_name: String,
    /// The user's name (the same as `screen_name`, as for most accounts).
    pub name: String,
}

/// What the data set knows about an original post beyond its id and total.
struct Original {
    /// Unix time of the post.
    created: i64,
    /// The author's user number (see [`user`]).
    author: u64,
    /// The post's text.
    text: &'static str,
}

/// Details of each post, in the order of [`POSTS`].
const ORIGINALS: [Original; POSTS.len()] = [
    Original {
        created: 1_388_715_554, // Fri Jan 03 10:19:14 +0800 2014
        author: 7,
        text: "Python 多进程教程：multiprocessing.Pool 的 apply、apply_async、map、map_async 一次讲清楚 http://t.cn/8kVhFwB",
    },
    Original {
        created: 1_388_801_954,
        author: 11,
        text: "这条微博没有人转发",
    },
    Original {
        created: 1_388_888_354,
        author: 12,
        text: "只被转发过一次的微博",
    },
    Original {
        created: 1_388_974_754,
        author: 13,
        text: "差一条就满一页：199 次转发",
    },
    Original {
        created: 1_389_061_154,
        author: 14,
        text: "正好一页：200 次转发",
    },
    Original {
        created: 1_389_147_554,
        author: 15,
        text: "一页零一条：201 次转发",
    },
    Original {
        created: 1_389_233_954,
        author: 16,
        text: "热门微博：5000 次转发，只能看到最新的 2000 条",
    },
];

/// Repost ids start here; a post's reposts use the block `REPOST_ID_BASE + slot * 10^8`.
const REPOST_ID_BASE: u64 = 3_664_100_000_000_000;

/// Repost ids of one post lie within a block of this size.
const REPOST_ID_BLOCK: u64 = 100_000_000;

/// Seconds between a post and its first repost, and the mean step between reposts.
const REPOST_STEP_SECS: i64 = 97;

/// How many distinct reposters the data set draws from.
const USERS: u64 = 50_000;

/// User ids are `USER_ID_BASE + user number * 13`.
const USER_ID_BASE: u64 = 1_700_000_000;

const NAME_PREFIXES: [&str; 8] = [
    "爱吃鱼的",
    "不睡觉的",
    "会飞的",
    "安静的",
    "快乐的",
    "迷路的",
    "python",
    "rustacean",
];

const NAME_NOUNS: [&str; 8] = [
    "猫",
    "程序员",
    "小熊",
    "蜗牛",
    "coder",
    "旅行者",
    "豆包",
    "兔子",
];

const REPOST_TEXTS: [&str; 6] = [
    "转发微博",
    "Repost",
    "好文，收藏了",
    "学习了 \"map\" & \"apply_async\" <3",
    "mark",
    "多进程果然快了 10 倍！",
];

const SOURCES: [&str; 3] = [
    "<a href=\"http://weibo.com/\" rel=\"nofollow\">微博 weibo.com</a>",
    "<a href=\"http://app.weibo.com/t/feed/5yiHuw\" rel=\"nofollow\">iPhone客户端</a>",
    "<a href=\"http://app.weibo.com/t/feed/6vtZb0\" rel=\"nofollow\">Android客户端</a>",
];

/// The total number of reposts of `post`, or `None` if the data set has no such post.
pub fn total_reposts(post: u64) -> Option<u64> {
    slot(post).map(|slot| POSTS[slot].1)
}

/// The original post `post`, or `None` if the data set has no such post.
pub fn original(post: u64) -> Option<Status> {
    let slot = slot(post)?;
    let (id, total) = POSTS[slot];
    let details = &ORIGINALS[slot];
    Some(Status {
        created_at: format_created_at(details.created),
        id,
        idstr: id.to_string(),
        mid: id.to_string(),
        text: details.text.to_owned(),
        source: SOURCES[0].to_owned(),
        reposts_count: total,
        comments_count: total / 7,
        user: user(details.author),
        retweeted_status: None,
    })
}

/// The repost of `post` at `index` (0 is the newest), with the original post attached, or
/// `None` if there is no such post or `index` is not below its total.
pub fn repost(post: u64, index: u64) -> Option<Status> {
    let original = original(post)?;
    repost_of(&original, index)
}

/// The repost of `original` at `index`, as [`repost`] but reusing an original already built.
pub(crate) fn repost_of(original: &Status, index: u64) -> Option<Status> {
    let slot = slot(original.id)?;
    let (post, total) = POSTS[slot];
    if index >= total {
        return None;
    }
    let seq = total - 1 - index;
    let noise = mix(post, seq);
    let id = repost_id_at(slot, seq, noise);
    let reposter = noise % USERS;
    let text = match (noise >> 20) % 8 {
        pick @ 0..=5 => REPOST_TEXTS[pick as usize].to_owned(),
        _ => format!("//@{}: 转发微博", user(mix(seq, post) % USERS).screen_name),
    };
    Some(Status {
        created_at: format_created_at(repost_created(slot, seq, noise)),
        id,
        idstr: id.to_string(),
        mid: id.to_string(),
        text,
        source: SOURCES[((noise >> 8) % SOURCES.len() as u64) as usize].to_owned(),
        reposts_count: (noise >> 12) % 3,
        comments_count: (noise >> 16) % 4,
        user: user(reposter),
        retweeted_status: Some(Box::new(original.clone())),
    })
}

/// The id of the repost of `post` at `index` (0 is the newest), without building it.
pub fn repost_id(post: u64, index: u64) -> Option<u64> {
    let slot = slot(post)?;
    let (post, total) = POSTS[slot];
    let seq = total.checked_sub(1)?.checked_sub(index)?;
    Some(repost_id_at(slot, seq, mix(post, seq)))
}

/// The id of the `seq`-th oldest repost of the post in `slot`: strictly increasing in `seq`,
/// and unique because each post has its own block and `seq * 1000 < REPOST_ID_BLOCK`.
fn repost_id_at(slot: usize, seq: u64, noise: u64) -> u64 {
    REPOST_ID_BASE + slot as u64 * REPOST_ID_BLOCK + seq * 1_000 + noise % 1_000
}

/// The Unix time of the `seq`-th oldest repost of the post in `slot`: strictly increasing in
/// `seq`, because the jitter (under 60 s) is smaller than the step.
fn repost_created(slot: usize, seq: u64, noise: u64) -> i64 {
    let jitter = ((noise >> 40) % 60) as i64;
    ORIGINALS[slot].created + REPOST_STEP_SECS * (seq as i64 + 1) + jitter
}

/// Where `post` is in [`POSTS`].
fn slot(post: u64) -> Option<usize> {
    POSTS.iter().position(|&(id, _)| id == post)
}

/// The user with number `number`.
fn user(number: u64) -> User {
    let prefix = NAME_PREFIXES[(number % 8) as usize];
    let noun = NAME_NOUNS[(number / 8 % 8) as usize];
    let screen_name = match number / 64 {
        0 => format!("{prefix}{noun}"),
        n => format!("{prefix}{noun}{n}"),
    };
    let id = USER_ID_BASE + number * 13;
    User {
        id,
        idstr: id.to_string(),
        name: screen_name.clone(),
        screen_name,
    }
}

/// A well-mixed 64-bit value from two inputs (the splitmix64 finaliser).
fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Formats Unix time `secs` the way the API does, in China Standard Time:
/// `"Tue May 31 17:46:55 +0800 2011"`.
pub fn format_created_at(secs: i64) -> String {
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let local = secs + 8 * 3600;
    let days = local.div_euclid(86_400);
    let of_day = local.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{} {} {:02} {:02}:{:02}:{:02} +0800 {}",
        WEEKDAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        day,
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        year
    )
}

/// The proleptic Gregorian date `(year, month 1..=12, day 1..=31)` of `days` since
/// 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn formats_dates_like_the_api() {
        // The example in the API documentation: 2011-05-31 09:46:55 UTC.
        assert_eq!(
            format_created_at(1_306_835_215),
            "Tue May 31 17:46:55 +0800 2011"
        );
        assert_eq!(format_created_at(0), "Thu Jan 01 08:00:00 +0800 1970");
        assert_eq!(
            format_created_at(1_388_715_554),
            "Fri Jan 03 10:19:14 +0800 2014"
        );
        // A leap day, and the last second of a year in +0800.
        assert_eq!(
            format_created_at(1_709_164_800),
            "Thu Feb 29 08:00:00 +0800 2024"
        );
        assert_eq!(
            format_created_at(1_704_038_399),
            "Sun Dec 31 23:59:59 +0800 2023"
        );
    }

    #[test]
    fn totals_match_the_table() {
        for &(post, total) in POSTS {
            assert_eq!(total_reposts(post), Some(total));
            assert_eq!(original(post).unwrap().reposts_count, total);
        }
        assert_eq!(total_reposts(1), None);
        assert_eq!(repost(1, 0), None);
    }

    #[test]
    fn reposts_exist_only_below_the_total() {
        assert_eq!(repost(POST_0_REPOSTS, 0), None);
        assert!(repost(POST_1_REPOST, 0).is_some());
        assert_eq!(repost(POST_1_REPOST, 1), None);
        assert_eq!(repost_id(POST_1_REPOST, 1), None);
        assert_eq!(repost_id(POST_0_REPOSTS, 0), None);
    }

    #[test]
    fn reposts_are_deterministic_and_point_at_their_post() {
        let a = repost(TUTORIAL_POST, 1_234).unwrap();
        let b = repost(TUTORIAL_POST, 1_234).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.idstr, a.id.to_string());
        assert_eq!(Some(a.id), repost_id(TUTORIAL_POST, 1_234));
        let original = a.retweeted_status.unwrap();
        assert_eq!(original.id, TUTORIAL_POST);
        assert!(original.retweeted_status.is_none());
    }

    #[test]
    fn ids_are_unique_and_newest_first() {
        let mut seen: HashSet<u64> = POSTS.iter().map(|&(id, _)| id).collect();
        for &(post, total) in POSTS {
            let mut previous = u64::MAX;
            for index in 0..total {
                let id = repost_id(post, index).unwrap();
                assert!(
                    id < previous,
                    "post {post} index {index}: {id} >= {previous}"
                );
                assert!(seen.insert(id), "duplicate id {id}");
                previous = id;
            }
        }
    }

    #[test]
    fn creation_times_grow_with_age() {
        let times: Vec<i64> = (0..POSTS[0].1)
            .map(|seq| repost_created(0, seq, mix(TUTORIAL_POST, seq)))
            .collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]));
    }
}
