use serde::Serialize;
use ugc_model::{FilmId, ReviewId, Score, Timestamp, UserId};
use utoipa::ToSchema;

use crate::ContentError;

/// Items per page of a list: 1 to 100.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit(u32);

impl Limit {
    pub const DEFAULT: Limit = Limit(20);
    pub const MAX: u32 = 100;
    pub fn get(&self) -> u32 {
        self.0
    }
}

impl TryFrom<i64> for Limit {
    type Error = String;
    fn try_from(v: i64) -> Result<Self, String> {
        if (1..=Self::MAX as i64).contains(&v) {
            Ok(Limit(v as u32))
        } else {
            Err(format!("must be from 1 to {}, got {v}", Self::MAX))
        }
    }
}

/// Where a page ends: the sort key of its last item (a time in milliseconds, then the
/// item's id). The next page starts strictly after it, so rows written meanwhile never
/// make a page repeat or skip an item. Opaque to clients: hex of `time:id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// The first sort key where a list has one before the time (reviews by likes − dislikes).
    pub rank: Option<i64>,
    pub time: i64,
    pub id: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        let rank = self.rank.map(|r| format!("r{r}:")).unwrap_or_default();
        format!("{rank}{}:{}", self.time, self.id)
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    pub fn decode(s: &str) -> Result<Cursor, ContentError> {
        let bad = || ContentError::BadCursor("not a cursor this service handed out".into());
        if s.len() > 400 || !s.len().is_multiple_of(2) {
            return Err(bad());
        }
        let bytes = (0..s.len())
            .step_by(2)
            .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(bad)?;
        let text = String::from_utf8(bytes).map_err(|_| bad())?;
        let (rank, text) = match text.strip_prefix('r') {
            Some(rest) => {
                let (rank, rest) = rest.split_once(':').ok_or_else(bad)?;
                (Some(rank.parse::<i64>().map_err(|_| bad())?), rest)
            }
            None => (None, text.as_str()),
        };
        let (time, id) = text.split_once(':').ok_or_else(bad)?;
        let time = time.parse::<i64>().map_err(|_| bad())?;
        let id = uuid::Uuid::parse_str(id).map_err(|_| bad())?;
        Ok(Cursor {
            rank,
            time,
            id: id.to_string(),
        })
    }
}

/// One page of a list, newest first.
#[derive(Clone, Debug, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// `None` on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Rating {
    pub film_id: FilmId,
    pub score: Score,
    pub updated_at: Timestamp,
}

/// A film's ratings, from its aggregate row.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct RatingSummary {
    pub film_id: FilmId,
    pub count: i64,
    /// Sum of the scores (with `count`, the exact average).
    pub total: i64,
    /// `None` with no ratings.
    pub average: Option<f64>,
    /// Ratings of 10.
    pub likes: i64,
    /// Ratings of 0.
    pub dislikes: i64,
    /// How many ratings gave each score, 0 to 10.
    pub distribution: [i64; 11],
    pub my_score: Option<Score>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Bookmark {
    pub film_id: FilmId,
    pub created_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Review {
    pub review_id: ReviewId,
    pub film_id: FilmId,
    pub user_id: UserId,
    pub text: String,
    /// The author's current rating of the film, if any.
    pub score: Option<Score>,
    pub likes: i64,
    pub dislikes: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Seed 003's reviews have a title beside their text; the native API shows none.
    #[serde(skip)]
    pub title: Option<String>,
}

/// A film record as seed 003's clients register it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Film {
    pub film_id: FilmId,
    pub title: String,
    pub description: Option<String>,
    pub created_at: Timestamp,
}

/// A rating with its id and author, as seed 003's clients address ratings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UserRating {
    pub rating_id: uuid::Uuid,
    pub user_id: UserId,
    pub film_id: FilmId,
    pub score: Score,
    pub updated_at: Timestamp,
}

/// Namespace of rating ids: a rating's id is a UUIDv5 of its user and film, so the one
/// rating a user has of a film keeps one id through every change.
const RATING_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x3c1d_0b7e_52a4_4f0e_8d6b_7a90_1e2f_3a4b);

/// The id of `user`'s rating of `film`.
pub fn rating_id(user: &UserId, film: FilmId) -> uuid::Uuid {
    uuid::Uuid::new_v5(
        &RATING_NAMESPACE,
        format!("{}:{}", user.as_str(), film.as_uuid()).as_bytes(),
    )
}

/// Which reviews a whole-list read takes (seed 003's lists are not paged).
#[derive(Clone, Debug)]
pub enum ReviewsOf {
    All,
    Film(FilmId),
    User(UserId),
}

/// A review's votes after the caller's vote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct VoteSummary {
    pub review_id: ReviewId,
    pub likes: i64,
    pub dislikes: i64,
    /// 1, -1, or null.
    #[schema(value_type = Option<i8>)]
    pub my_vote: Option<ugc_model::Vote>,
}

/// Order of a film's reviews.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReviewSort {
    Newest,
    Oldest,
    /// Likes − dislikes, then newest.
    Top,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_and_garbage_is_refused() {
        let c = Cursor {
            rank: None,
            time: 1_700_000_000_123,
            id: uuid::Uuid::now_v7().to_string(),
        };
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        let ranked = Cursor {
            rank: Some(-3),
            ..c.clone()
        };
        assert_eq!(Cursor::decode(&ranked.encode()).unwrap(), ranked);
        for bad in ["", "zz", "3a", "abc", &"00".repeat(300)] {
            assert!(Cursor::decode(bad).is_err(), "{bad}");
        }
    }
}
