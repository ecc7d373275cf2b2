//! Usage analytics: verification outcomes counted per minute, rolled up per hour and day.

use crate::Timestamp;

/// The width of a usage bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Granularity {
    Minute,
    Hour,
    Day,
}

/// The most buckets one usage query may span (30 days of minutes fit).
pub const MAX_BUCKETS: i64 = 50_000;

impl Granularity {
    pub const ALL: [Self; 3] = [Self::Minute, Self::Hour, Self::Day];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::Day => "day",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.as_str() == text)
    }

    pub const fn millis(self) -> i64 {
        match self {
            Self::Minute => 60_000,
            Self::Hour => 3_600_000,
            Self::Day => 86_400_000,
        }
    }

    /// The start of the bucket holding `at` (UTC; days start at midnight UTC).
    pub const fn bucket_start(self, at: Timestamp) -> Timestamp {
        let millis = at.as_millis();
        Timestamp::from_millis(millis - millis.rem_euclid(self.millis()))
    }

    /// How many buckets `[from, to)` touches.
    pub const fn buckets_between(self, from: Timestamp, to: Timestamp) -> i64 {
        let first = self.bucket_start(from).as_millis();
        let span = to.as_millis() - first;
        if span <= 0 {
            0
        } else {
            (span + self.millis() - 1) / self.millis()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_align_to_utc() {
        let at = Timestamp::from_millis(1_764_425_123_456); // 2025-11-29T14:05:23.456Z
        assert_eq!(
            Granularity::Minute.bucket_start(at).as_millis(),
            1_764_425_100_000
        );
        assert_eq!(
            Granularity::Hour.bucket_start(at).as_millis(),
            1_764_424_800_000
        );
        assert_eq!(
            Granularity::Day.bucket_start(at).as_millis(),
            1_764_374_400_000
        );
        let before_epoch = Timestamp::from_millis(-1);
        assert_eq!(
            Granularity::Minute.bucket_start(before_epoch).as_millis(),
            -60_000
        );
    }

    #[test]
    fn bucket_counts() {
        let day = Timestamp::from_millis(1_764_374_400_000);
        let g = Granularity::Minute;
        assert_eq!(
            g.buckets_between(day, day.plus_millis(30 * 86_400_000)),
            43_200
        );
        assert_eq!(g.buckets_between(day, day), 0);
        assert_eq!(
            g.buckets_between(day.plus_millis(59_000), day.plus_millis(61_000)),
            2
        );
        for g in Granularity::ALL {
            assert_eq!(Granularity::parse(g.as_str()), Some(g));
        }
        assert_eq!(Granularity::parse("week"), None);
    }
}
