//! Times: microsecond precision everywhere, because PostgreSQL stores microseconds. A value
//! the server returns is exactly the value it stored and will return again.

use time::OffsetDateTime;

/// Now, truncated to whole microseconds.
pub fn now() -> OffsetDateTime {
    truncate_to_micros(OffsetDateTime::now_utc())
}

pub fn truncate_to_micros(t: OffsetDateTime) -> OffsetDateTime {
    let nanos = t.nanosecond();
    t.replace_nanosecond(nanos - nanos % 1_000).unwrap_or(t)
}

/// Microseconds since the Unix epoch (how SQLite stores times).
pub fn to_unix_micros(t: OffsetDateTime) -> i64 {
    // Every time the services accept lies within years 1..=9999, far inside i64 microseconds.
    i64::try_from(t.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
}

pub fn from_unix_micros(micros: i64) -> Result<OffsetDateTime, time::error::ComponentRange> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
}

pub fn to_proto(t: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        // Always in 0..1_000_000_000, so it fits.
        nanos: i32::try_from(t.nanosecond()).unwrap_or(0),
    }
}

/// Why a client's timestamp was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    #[error("nanos must be between 0 and 999999999")]
    Nanos,
    #[error("must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z")]
    OutOfRange,
}

/// Smallest and largest seconds a `google.protobuf.Timestamp` may carry (its documented range).
const MIN_SECONDS: i64 = -62_135_596_800;
const MAX_SECONDS: i64 = 253_402_300_799;

/// Converts a client timestamp, truncating it to microseconds.
pub fn from_proto(ts: &prost_types::Timestamp) -> Result<OffsetDateTime, TimestampError> {
    let nanos = u32::try_from(ts.nanos).ok().filter(|n| *n < 1_000_000_000).ok_or(TimestampError::Nanos)?;
    if !(MIN_SECONDS..=MAX_SECONDS).contains(&ts.seconds) {
        return Err(TimestampError::OutOfRange);
    }
    let t = OffsetDateTime::from_unix_timestamp(ts.seconds)
        .and_then(|t| t.replace_nanosecond(nanos))
        .map_err(|_| TimestampError::OutOfRange)?;
    Ok(truncate_to_micros(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proto_round_trip_truncates_to_micros() {
        let ts = prost_types::Timestamp { seconds: 1_700_000_000, nanos: 123_456_789 };
        let t = from_proto(&ts).unwrap();
        assert_eq!(to_proto(t), prost_types::Timestamp { seconds: 1_700_000_000, nanos: 123_456_000 });
        assert_eq!(from_unix_micros(to_unix_micros(t)).unwrap(), t);
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let bad_nanos = prost_types::Timestamp { seconds: 0, nanos: -1 };
        assert_eq!(from_proto(&bad_nanos), Err(TimestampError::Nanos));
        let too_late = prost_types::Timestamp { seconds: MAX_SECONDS + 1, nanos: 0 };
        assert_eq!(from_proto(&too_late), Err(TimestampError::OutOfRange));
        let min = prost_types::Timestamp { seconds: MIN_SECONDS, nanos: 0 };
        assert!(from_proto(&min).is_ok());
    }
}
