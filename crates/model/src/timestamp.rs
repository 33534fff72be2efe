use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::{
    OffsetDateTime, UtcOffset, format_description::well_known::Rfc3339, macros::format_description,
};
use utoipa::ToSchema;

/// A UTC instant with millisecond precision, the precision every store keeps.
/// Clients may send RFC 3339 strings or Unix epoch milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, ToSchema)]
#[schema(value_type = String, format = DateTime)]
pub struct Timestamp(i64);

impl Timestamp {
    /// 2000-01-01: anything earlier is a client clock bug, not a viewer's action.
    pub const MIN_MILLIS: i64 = 946_684_800_000;
    /// 2106-02-07 06:28:15 UTC: the end of ClickHouse's `DateTime` (u32 seconds).
    pub const MAX_MILLIS: i64 = 4_294_967_295_000;

    pub fn now() -> Self {
        let now = OffsetDateTime::now_utc();
        Self((now.unix_timestamp_nanos() / 1_000_000) as i64)
    }

    pub fn from_millis(ms: i64) -> Result<Self, &'static str> {
        if ms < Self::MIN_MILLIS {
            return Err("timestamp is before 2000-01-01");
        }
        // The latest instant every store keeps: ClickHouse's DateTime (18.16) ends at
        // 2106-02-07 06:28:15 UTC (DateTime64 on newer engines goes further). A later
        // time would be accepted here and then stored as something else.
        if ms > Self::MAX_MILLIS {
            return Err("timestamp is after 2106-02-07 06:28:15 UTC, the latest a store keeps");
        }
        Ok(Self(ms))
    }

    pub fn millis(&self) -> i64 {
        self.0
    }

    fn datetime(&self) -> OffsetDateTime {
        // In range by construction (from_millis bounds it).
        OffsetDateTime::from_unix_timestamp_nanos(self.0 as i128 * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    /// `YYYY-MM-DD hh:mm:ss.mmm` in UTC: the text form every ClickHouse version parses
    /// for DateTime and DateTime64(3) without best-effort parsing.
    pub fn to_sql_string(&self) -> String {
        let fmt = format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3]"
        );
        self.datetime().format(fmt).unwrap_or_default()
    }

    /// Parses what ClickHouse prints for DateTime64(3) or DateTime in UTC.
    pub fn parse_sql(s: &str) -> Result<Self, String> {
        let (whole, frac) = s.split_once('.').unwrap_or((s, "0"));
        let fmt = format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
        let dt = time::PrimitiveDateTime::parse(whole, fmt)
            .map_err(|e| format!("bad timestamp `{s}`: {e}"))?;
        let mut ms: i64 = frac
            .get(..3.min(frac.len()))
            .unwrap_or("0")
            .parse()
            .map_err(|_| format!("bad timestamp `{s}`"))?;
        for _ in frac.len()..3 {
            ms *= 10;
        }
        let secs = dt.assume_utc().unix_timestamp();
        Self::from_millis(secs * 1000 + ms).map_err(str::to_owned)
    }

    pub fn to_rfc3339(&self) -> String {
        self.datetime().format(&Rfc3339).unwrap_or_default()
    }

    /// RFC 3339, or an ISO 8601 date-time without an offset read as UTC — what Python's
    /// `datetime.isoformat()` prints for a naive datetime, as the seeds' clients send.
    pub fn parse_iso_utc(s: &str) -> Result<Self, String> {
        Self::parse_rfc3339(s).or_else(|e| {
            let naive = s.trim();
            if naive.len() >= 19 && matches!(naive.as_bytes()[10], b'T' | b' ') {
                let mut sql = naive.to_owned();
                sql.replace_range(10..11, " ");
                Self::parse_sql(&sql).map_err(|_| e)
            } else {
                Err(e)
            }
        })
    }

    pub fn parse_rfc3339(s: &str) -> Result<Self, String> {
        let dt = OffsetDateTime::parse(s, &Rfc3339)
            .map_err(|e| format!("not an RFC 3339 timestamp: {e}"))?;
        let dt = dt.to_offset(UtcOffset::UTC);
        Self::from_millis((dt.unix_timestamp_nanos() / 1_000_000) as i64).map_err(str::to_owned)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Millis(i64),
            Text(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected an RFC 3339 string or Unix epoch milliseconds")
        })? {
            Raw::Millis(ms) => Timestamp::from_millis(ms).map_err(serde::de::Error::custom),
            Raw::Text(s) => Timestamp::parse_rfc3339(&s).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_for_sql_and_round_trips_rfc3339() {
        let t = Timestamp::parse_rfc3339("2026-11-23T10:20:30.456+02:00").unwrap();
        assert_eq!(t.to_sql_string(), "2026-11-23 08:20:30.456");
        assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()).unwrap(), t);
        assert_eq!(Timestamp::parse_sql(&t.to_sql_string()).unwrap(), t);
        assert_eq!(
            Timestamp::parse_sql("2026-11-23 08:20:30.4")
                .unwrap()
                .millis()
                % 1000,
            400
        );
        assert_eq!(
            Timestamp::parse_sql("2026-11-23 08:20:30")
                .unwrap()
                .millis()
                % 1000,
            0
        );
    }

    #[test]
    fn rejects_epoch_zero_and_garbage() {
        assert!(Timestamp::from_millis(0).is_err());
        assert!(Timestamp::parse_rfc3339("yesterday").is_err());
    }
}
