//! Values of the content catalogue (ratings, reviews, bookmarks): newtypes, so a score of
//! 11 or an empty review cannot reach a database or the log.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// A viewer's rating of a film: 0 (a dislike) to 10 (a like).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(try_from = "i64", into = "u8")]
#[schema(value_type = u8, minimum = 0, maximum = 10, example = 8)]
pub struct Score(u8);

impl Score {
    pub const MAX: u8 = 10;
    pub const LIKE: Score = Score(10);
    pub const DISLIKE: Score = Score(0);
    pub fn value(&self) -> u8 {
        self.0
    }
}

impl TryFrom<i64> for Score {
    type Error = String;
    fn try_from(v: i64) -> Result<Self, String> {
        if (0..=Self::MAX as i64).contains(&v) {
            Ok(Self(v as u8))
        } else {
            Err(format!("must be an integer from 0 to 10, got {v}"))
        }
    }
}

impl From<Score> for u8 {
    fn from(s: Score) -> u8 {
        s.0
    }
}

/// Identity of a review. Server-made UUIDv7, so reviews sort by creation.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(transparent)]
#[schema(value_type = String, format = Uuid)]
pub struct ReviewId(Uuid);

impl ReviewId {
    pub fn new_v7() -> Self {
        Self(Uuid::now_v7())
    }
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl From<Uuid> for ReviewId {
    fn from(u: Uuid) -> Self {
        Self(u)
    }
}

impl fmt::Display for ReviewId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The text of a review: 1 to 10 000 characters, not only white space.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, min_length = 1, max_length = 10000)]
pub struct ReviewText(String);

impl ReviewText {
    pub const MAX_CHARS: usize = 10_000;
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ReviewText {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.trim().is_empty() {
            return Err("must not be empty".into());
        }
        let n = s.chars().count();
        if n > Self::MAX_CHARS {
            return Err(format!("must be at most 10000 characters, got {n}"));
        }
        // NUL cannot be stored in a PostgreSQL text column; refuse it on both backends alike.
        if s.contains('\0') {
            return Err("must not contain NUL characters".into());
        }
        Ok(Self(s))
    }
}

impl From<ReviewText> for String {
    fn from(t: ReviewText) -> String {
        t.0
    }
}

/// A like (1) or dislike (-1) of a review.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "i64", into = "i8")]
#[schema(value_type = i8, example = 1)]
pub struct Vote(i8);

impl Vote {
    pub const LIKE: Vote = Vote(1);
    pub const DISLIKE: Vote = Vote(-1);
    pub fn value(&self) -> i8 {
        self.0
    }
}

impl TryFrom<i64> for Vote {
    type Error = String;
    fn try_from(v: i64) -> Result<Self, String> {
        match v {
            1 => Ok(Vote::LIKE),
            -1 => Ok(Vote::DISLIKE),
            v => Err(format!("must be 1 (like) or -1 (dislike), got {v}")),
        }
    }
}

impl From<Vote> for i8 {
    fn from(v: Vote) -> i8 {
        v.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_outside_zero_to_ten_are_refused() {
        assert!(Score::try_from(-1).is_err());
        assert!(Score::try_from(11).is_err());
        assert_eq!(Score::try_from(10).unwrap(), Score::LIKE);
        assert!(serde_json::from_str::<Score>("7.5").is_err());
    }

    #[test]
    fn review_text_is_one_to_ten_thousand_characters() {
        assert!(ReviewText::try_from(" \n".to_owned()).is_err());
        assert!(ReviewText::try_from("я".repeat(10_000)).is_ok());
        assert!(ReviewText::try_from("я".repeat(10_001)).is_err());
    }
}
